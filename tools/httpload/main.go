// Command httpload is a closed-loop load generator for an HTTP forward
// proxy, for the lab benchmarks (test/lab/names_bench_test.go). -c workers
// run for -d:
//
//   - -mode connect: each operation dials the proxy, sends CONNECT
//     -target, reads the 200, completes a TLS handshake with -sni through
//     the tunnel (the server's certificate is not checked: the lab's TLS
//     server is self-signed) and closes: a new tunnel per operation.
//   - -mode http: each operation is a GET of -url (absolute-form) through
//     the proxy, reading the whole body; connections to the proxy are kept
//     alive where the proxy allows it.
//
// It prints one line of key=value:
//
//	rate=... p50_ms=... p99_ms=... ok=... errors=...
//
// It only dials -proxy, and it stops after -d (at most 5 minutes).
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"outcall.dev/outcall/tools/internal/latency"
)

func main() {
	proxy := flag.String("proxy", "", "proxy ip:port (required)")
	mode := flag.String("mode", "connect", "connect or http")
	target := flag.String("target", "", "CONNECT authority host:port (connect mode)")
	sni := flag.String("sni", "", "TLS server name (connect mode; default the target's host)")
	rawURL := flag.String("url", "", "URL to GET through the proxy (http mode)")
	conc := flag.Int("c", 16, "concurrent workers")
	dur := flag.Duration("d", 5*time.Second, "duration (at most 5m)")
	timeout := flag.Duration("timeout", 5*time.Second, "timeout of one operation")
	flag.Parse()
	if *proxy == "" || *conc < 1 || *dur <= 0 || *dur > 5*time.Minute ||
		(*mode == "connect" && *target == "") || (*mode == "http" && *rawURL == "") ||
		(*mode != "connect" && *mode != "http") {
		fmt.Fprintln(os.Stderr, "usage: httpload -proxy ip:port (-mode connect -target host:port | -mode http -url U) [-c 16] [-d 5s]")
		os.Exit(2)
	}
	if *sni == "" {
		if h, _, err := net.SplitHostPort(*target); err == nil {
			*sni = h
		}
	}
	var op func(tr *http.Transport) error
	switch *mode {
	case "connect":
		op = func(*http.Transport) error { return connectOnce(*proxy, *target, *sni, *timeout) }
	case "http":
		op = func(tr *http.Transport) error {
			c := &http.Client{Transport: tr, Timeout: *timeout}
			resp, err := c.Get(*rawURL)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}
	}
	proxyURL := &url.URL{Scheme: "http", Host: *proxy}
	var ok, errs atomic.Uint64
	var firstErr atomic.Value
	lat := make([][]time.Duration, *conc)
	start := time.Now()
	end := start.Add(*dur)
	var wg sync.WaitGroup
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), MaxIdleConnsPerHost: 1, DisableCompression: true}
			defer tr.CloseIdleConnections()
			for time.Now().Before(end) {
				t0 := time.Now()
				if err := op(tr); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					time.Sleep(time.Millisecond)
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
				ok.Add(1)
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	p50, p99 := latency.Quantiles(lat)
	fmt.Printf("rate=%.1f p50_ms=%.3f p99_ms=%.3f ok=%d errors=%d\n",
		float64(ok.Load())/elapsed.Seconds(), p50, p99, ok.Load(), errs.Load())
	if e, _ := firstErr.Load().(string); e != "" {
		fmt.Fprintln(os.Stderr, "first error:", e)
	}
}

// connectOnce opens one tunnel through the proxy and completes a TLS
// handshake through it.
func connectOnce(proxy, target, sni string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", proxy, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("CONNECT: status %d", resp.StatusCode)
	}
	if br.Buffered() > 0 {
		return fmt.Errorf("CONNECT: %d bytes after the response head", br.Buffered())
	}
	tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS through the tunnel: %w", err)
	}
	return tc.Close()
}
