// Command probe is a small static client that Docker tests copy into their
// busybox image (dockerlab.WithBinary): it does one thing, bounded in time,
// and says what came back.
//
//	probe http URL   prints the status code and the body
//	probe tcp ADDR   prints the first line the server sends
//	probe id         prints the uid and gid it runs as
//	probe dns SERVER NAME [udp|tcp]
//	                 asks SERVER (host:port) for NAME's A records and prints
//	                 the reply's rcode and its addresses ("NOERROR 192.0.2.1")
//
// It exits 1 when the probe fails, 2 on bad usage.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

const timeout = 5 * time.Second

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "http":
		if len(os.Args) != 3 {
			usage()
		}
		err = probeHTTP(os.Args[2])
	case "tcp":
		if len(os.Args) != 3 {
			usage()
		}
		err = probeTCP(os.Args[2])
	case "dns":
		if len(os.Args) != 4 && len(os.Args) != 5 {
			usage()
		}
		network := "udp"
		if len(os.Args) == 5 {
			network = os.Args[4]
		}
		err = probeDNS(os.Args[2], os.Args[3], network)
	case "id":
		fmt.Printf("uid=%d gid=%d\n", os.Getuid(), os.Getgid())
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: probe http URL | probe tcp ADDR | probe dns SERVER NAME [udp|tcp] | probe id")
	os.Exit(2)
}

func probeHTTP(url string) error {
	// No proxy from the environment: a probe goes where it is told.
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return err
	}
	fmt.Printf("%d\n%s", resp.StatusCode, body)
	return nil
}

func probeTCP(addr string) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && line == "" {
		return err
	}
	fmt.Print(line)
	return nil
}

func probeDNS(server, name, network string) error {
	if network != "udp" && network != "tcp" {
		usage()
	}
	c := &dns.Client{Net: network, Timeout: timeout}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := c.Exchange(m, server)
	if err != nil {
		return err
	}
	var addrs []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			addrs = append(addrs, a.A.String())
		}
	}
	fmt.Println(strings.TrimSpace(dns.RcodeToString[r.Rcode] + " " + strings.Join(addrs, ",")))
	return nil
}
