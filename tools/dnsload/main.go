// Command dnsload is a closed-loop DNS load generator for the lab
// benchmarks (test/lab/names_bench_test.go): -c workers, each with its own
// UDP socket, send one A query, wait for its reply (or -timeout), and send
// the next, for -d. With -name every query asks that name (a cache hit
// after the first); with -suffix each query asks a name never asked before,
// q<n>-<run>.<suffix> (a cache miss). It prints one line of key=value:
//
//	qps=... p50_ms=... p99_ms=... ok=... timeouts=... errors=... rcode_other=...
//
// It only sends to -server, and it stops after -d (at most 5 minutes).
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"outcall.dev/outcall/tools/internal/latency"
)

func main() {
	server := flag.String("server", "", "DNS server ip:port (required)")
	conc := flag.Int("c", 16, "concurrent workers")
	dur := flag.Duration("d", 5*time.Second, "duration (at most 5m)")
	name := flag.String("name", "", "ask this one name on every query (cache hit)")
	suffix := flag.String("suffix", "", "ask a distinct name under this suffix on every query (cache miss)")
	timeout := flag.Duration("timeout", time.Second, "reply timeout of one query")
	flag.Parse()
	if *server == "" || (*name == "") == (*suffix == "") || *conc < 1 || *dur <= 0 || *dur > 5*time.Minute {
		fmt.Fprintln(os.Stderr, "usage: dnsload -server ip:port (-name N | -suffix S) [-c 16] [-d 5s]")
		os.Exit(2)
	}
	run := rand.Uint32()
	var counter atomic.Uint64
	var ok, timeouts, errs, other atomic.Uint64
	lat := make([][]time.Duration, *conc)
	start := time.Now()
	end := start.Add(*dur)
	var wg sync.WaitGroup
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c, err := net.Dial("udp", *server)
			if err != nil {
				errs.Add(1)
				return
			}
			defer c.Close()
			buf := make([]byte, 4096)
			m := new(dns.Msg)
			for time.Now().Before(end) {
				q := *name
				if q == "" {
					q = fmt.Sprintf("q%d-%08x.%s", counter.Add(1), run, *suffix)
				}
				m.SetQuestion(dns.Fqdn(q), dns.TypeA)
				m.Id = dns.Id()
				out, err := m.Pack()
				if err != nil {
					errs.Add(1)
					return
				}
				t0 := time.Now()
				if _, err := c.Write(out); err != nil {
					errs.Add(1)
					time.Sleep(time.Millisecond)
					continue
				}
				_ = c.SetReadDeadline(t0.Add(*timeout))
				for {
					n, err := c.Read(buf)
					if err != nil {
						if ne, isNet := err.(net.Error); isNet && ne.Timeout() {
							timeouts.Add(1)
						} else {
							errs.Add(1)
						}
						break
					}
					r := new(dns.Msg)
					if r.Unpack(buf[:n]) != nil || r.Id != m.Id {
						continue // a late reply to an earlier query
					}
					lat[w] = append(lat[w], time.Since(t0))
					if r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
						ok.Add(1)
					} else {
						other.Add(1)
					}
					break
				}
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	p50, p99 := latency.Quantiles(lat)
	fmt.Printf("qps=%.1f p50_ms=%.3f p99_ms=%.3f ok=%d timeouts=%d errors=%d rcode_other=%d\n",
		float64(ok.Load())/elapsed.Seconds(), p50, p99, ok.Load(), timeouts.Load(), errs.Load(), other.Load())
}
