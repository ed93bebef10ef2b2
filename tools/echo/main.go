// Command echo is the upstream namespace's responder in the hand-run lab
// (tools/lab): it sends back whatever it receives, on every TCP and UDP
// address it is given, and stops by itself after -for.
//
//	echo -tcp 198.51.100.10:80,198.51.100.10:443 -udp 198.51.100.10:9000 -for 8h
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	tcp := flag.String("tcp", "", "comma-separated TCP addresses host:port to echo on")
	udp := flag.String("udp", "", "comma-separated UDP addresses host:port to echo on")
	life := flag.Duration("for", 8*time.Hour, "exit after this long")
	flag.Parse()
	if err := run(split(*tcp), split(*udp), *life); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// run listens on every address before it answers on any, so that a failed
// bind is reported at start and not found later by a probe.
func run(tcpAddrs, udpAddrs []string, life time.Duration) error {
	if len(tcpAddrs)+len(udpAddrs) == 0 {
		return errors.New("no address: give -tcp or -udp")
	}
	var lns []net.Listener
	var pcs []net.PacketConn
	for _, a := range tcpAddrs {
		ln, err := net.Listen("tcp4", a)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	for _, a := range udpAddrs {
		pc, err := net.ListenPacket("udp4", a)
		if err != nil {
			return err
		}
		pcs = append(pcs, pc)
	}
	for _, ln := range lns {
		go serveTCP(ln)
	}
	for _, pc := range pcs {
		go serveUDP(pc)
	}
	log.Printf("echo on tcp %v udp %v for %v", tcpAddrs, udpAddrs, life)
	time.Sleep(life)
	return nil
}

func serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Printf("accept on %s: %v", ln.Addr(), err)
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			_, _ = io.Copy(c, c)
		}()
	}
}

func serveUDP(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			log.Printf("read on %s: %v", pc.LocalAddr(), err)
			return
		}
		_, _ = pc.WriteTo(buf[:n], from)
	}
}
