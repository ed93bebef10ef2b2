// Command dnsload is a closed-loop DNS load generator for the lab
// benchmarks (test/lab/names_bench_test.go): -c workers, each with its own
// connected UDP socket, send one A query, wait for its reply (or -timeout),
// and send the next, for -d. With -name every query asks that name (a
// cache hit after the first); with -suffix each query asks a name never
// asked before, q<n>-<run>.<suffix> (a cache miss). It prints one line of
// key=value:
//
//	qps=... p50_ms=... p99_ms=... ok=... timeouts=... errors=... rcode_other=...
//
// It only sends to -server, and it stops after -d (at most 5 minutes).
//
// The generator shares a CPU budget with the server it loads, so it is
// kept cheap: each query is packed once by miekg/dns and then only its ID
// (and, for -suffix, its first label) is rewritten in place; a reply is
// matched by its ID and question and judged by its header (rcode, answer
// count) without unpacking its records; the read deadline is moved only
// when less than a tenth of -timeout is left of it.
package main

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"outcall.dev/outcall/tools/internal/latency"
)

// maxLabel is the longest first label -suffix writes: "q" and 20 digits,
// "-", 8 hex digits.
const maxLabel = 1 + 20 + 1 + 8

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
	runTag := fmt.Appendf(nil, "-%08x", rand.Uint32())
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
			q, err := newQuery(*name, *suffix)
			if err != nil {
				fmt.Fprintln(os.Stderr, "dnsload:", err)
				errs.Add(1)
				return
			}
			c, err := net.Dial("udp", *server)
			if err != nil {
				errs.Add(1)
				return
			}
			defer c.Close()
			buf := make([]byte, 4096)
			lat[w] = make([]time.Duration, 0, 1<<16)
			id := uint16(rand.Uint32())
			var deadline time.Time
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				id++
				var label []byte
				if *suffix != "" {
					label = strconv.AppendUint(append(q.scratch[:0], 'q'), counter.Add(1), 10)
					label = append(label, runTag...)
				}
				out := q.next(id, label)
				if _, err := c.Write(out); err != nil {
					errs.Add(1)
					time.Sleep(time.Millisecond)
					continue
				}
				// The deadline moves rarely: a query times out between
				// 0.9 and 1 times -timeout after it was sent.
				if deadline.Sub(t0) < *timeout/10 {
					deadline = t0.Add(*timeout)
					_ = c.SetReadDeadline(deadline)
				}
				for {
					n, err := c.Read(buf)
					if err != nil {
						if ne, isNet := err.(net.Error); isNet && ne.Timeout() {
							timeouts.Add(1)
							deadline = time.Time{}
						} else {
							errs.Add(1)
						}
						break
					}
					rcode, answers, mine := q.reply(buf[:n], id)
					if !mine {
						continue // a late reply to an earlier query
					}
					lat[w] = append(lat[w], time.Since(t0))
					if rcode == dns.RcodeSuccess && answers > 0 {
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

// query is one worker's query in wire form, packed by miekg/dns: the
// header, the question, and, for -suffix, room for a first label of up to
// maxLabel bytes in front of the suffix.
type query struct {
	wire    []byte // header and question; wire[:n] is the current query
	n       int
	tail    []byte // the suffix's labels, the type and the class
	qname   []byte // the current query's question, from offset 12
	scratch [maxLabel]byte
}

// newQuery packs the question for name, or for a placeholder label under
// suffix, once.
func newQuery(name, suffix string) (*query, error) {
	m := new(dns.Msg)
	qn := name
	if qn == "" {
		qn = "q." + suffix
	}
	m.SetQuestion(dns.Fqdn(qn), dns.TypeA)
	wire, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("pack the query for %q: %w", qn, err)
	}
	q := &query{wire: wire, n: len(wire)}
	if name == "" {
		// wire[12] is the placeholder's length (1), wire[13] the "q".
		q.tail = bytes.Clone(wire[14:])
		q.wire = make([]byte, 12+1+maxLabel+len(q.tail))
		copy(q.wire, wire[:12])
	}
	q.qname = q.wire[12:q.n]
	return q, nil
}

// next returns the query with ID id and, if label is set, that first label.
func (q *query) next(id uint16, label []byte) []byte {
	binary.BigEndian.PutUint16(q.wire, id)
	if label != nil {
		q.wire[12] = byte(len(label))
		copy(q.wire[13:], label)
		q.n = 13 + len(label) + copy(q.wire[13+len(label):], q.tail)
		q.qname = q.wire[12:q.n]
	}
	return q.wire[:q.n]
}

// reply reports a reply's rcode and answer count, and whether it answers
// the current query: a response with its ID and, case aside (0x20), its
// question.
func (q *query) reply(b []byte, id uint16) (rcode, answers int, mine bool) {
	if len(b) < 12+len(q.qname) || binary.BigEndian.Uint16(b) != id || b[2]&0x80 == 0 ||
		binary.BigEndian.Uint16(b[4:]) != 1 || !bytes.EqualFold(b[12:12+len(q.qname)], q.qname) {
		return 0, 0, false
	}
	return int(b[3] & 0x0f), int(binary.BigEndian.Uint16(b[6:])), true
}
