package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestNewChecksOptions(t *testing.T) {
	resolve := func(context.Context, string) ([]netip.Addr, error) { return nil, nil }
	if _, err := New(Options{Resolve: resolve}); err == nil {
		t.Error("New without Rules succeeded")
	}
	if _, err := New(Options{Rules: panicEvaluator{}}); err == nil {
		t.Error("New without Resolve succeeded: it would fall back to the machine's resolver")
	}
	p, err := New(Options{Rules: panicEvaluator{}, Resolve: resolve})
	if err != nil {
		t.Fatal(err)
	}
	o := p.opts
	if o.Port != 8080 || o.ConnectTimeout != DefaultConnectTimeout || o.HeaderTimeout != DefaultHeaderTimeout ||
		o.ClientHelloTimeout != DefaultClientHelloTimeout || o.IdleTimeout != DefaultIdleTimeout ||
		o.MaxConnections != 1024 || o.MaxHeaderBytes != 8192 || o.MaxBodyBytes != 16<<20 || o.ShutdownGrace != DefaultShutdownGrace {
		t.Errorf("defaults %+v", o)
	}
	if p.Name() != "proxy" {
		t.Errorf("Name() = %q", p.Name())
	}
}

func TestStatus(t *testing.T) {
	e, _ := publicAPI(t, okReply, nil)
	st := e.p.Status()
	if !st.Listening || st.ListenAddr != e.addr || len(st.Listeners) != 1 || st.Listeners[0] != e.addr {
		t.Errorf("status %+v, want listening on %s", st, e.addr)
	}
	e.roundTrip("GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
	e.roundTrip("GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n")
	waitFor(t, "connections to end", func() bool { return e.p.Status().ActiveConnections == 0 })
	if st := e.p.Status(); st.TotalRequests != 2 || st.TotalBlocked != 1 {
		t.Errorf("status %+v, want 2 requests, 1 blocked", st)
	}
}

// TestMetrics: outcomes by rule, latency and tunnel bytes are counted, and
// no label carries a host, address or path.
func TestMetrics(t *testing.T) {
	srv, _ := tlsUpstream(t)
	e := start(t, ruleExample, nil)
	e.res.set("example.com", publicAddr)
	e.dial.mapPublic(publicAddr, 443, srv.Listener.Addr().String())
	reg := prometheus.NewRegistry()
	for _, c := range e.p.Collectors() {
		reg.MustRegister(c)
	}
	e.roundTrip("GET http://evil.test/secret-path HTTP/1.1\r\nHost: evil.test\r\n\r\n")
	rc, body, err := connectTLS(t, e, "example.com:443", &tls.Config{RootCAs: rootsOf(srv), ServerName: "example.com"}, 0)
	if err != nil || body == "" {
		t.Fatalf("tunnel: %v", err)
	}
	rc.Close()
	waitFor(t, "connections to end", func() bool { return e.p.Status().ActiveConnections == 0 })
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName() + labels(m)
			for _, l := range m.GetLabel() {
				for _, bad := range []string{"evil", "example.com", "11.1.1.1", "127.0.0.1", "secret-path", "agent-a"} {
					if strings.Contains(l.GetValue(), bad) {
						t.Errorf("%s has label %s=%q", mf.GetName(), l.GetName(), l.GetValue())
					}
				}
			}
			switch {
			case m.Counter != nil:
				got[key] = m.Counter.GetValue()
			case m.Histogram != nil:
				got[key] = float64(m.Histogram.GetSampleCount())
			case m.Gauge != nil:
				got[key] = m.Gauge.GetValue()
			}
		}
	}
	for key, want := range map[string]float64{
		`outcall_proxy_requests_total{outcome="blocked",rule_id="default-block"}`: 1,
		`outcall_proxy_requests_total{outcome="allowed",rule_id="example"}`:       1,
		`outcall_proxy_request_duration_seconds{outcome="blocked"}`:               1,
		`outcall_proxy_request_duration_seconds{outcome="allowed"}`:               1,
		`outcall_proxy_active_connections`:                                        0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v\nall: %v", key, v, ok, want, got)
		}
	}
	for _, dir := range []string{"upstream", "downstream"} {
		if v := got[`outcall_proxy_tunnel_bytes_total{direction="`+dir+`"}`]; v < 100 {
			t.Errorf("tunnel bytes %s = %v, want a TLS handshake's worth", dir, v)
		}
	}
}

func labels(m *dto.Metric) string {
	if len(m.GetLabel()) == 0 {
		return ""
	}
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// TestConcurrentAgents (AS-011, SC-008): agents on several source
// addresses, each with its own allowed host, are served independently.
func TestConcurrentAgents(t *testing.T) {
	gw := agentGateway()
	var ruleItems strings.Builder
	for i := 1; i <= 10; i++ {
		a := netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i)})
		gw.ids[a] = gw.ids[netip.MustParseAddr("127.0.0.1")]
		ep := gw.ids[a]
		ep.Name, ep.IP = fmt.Sprintf("agent-%d", i), a
		gw.ids[a] = ep
		fmt.Fprintf(&ruleItems, "  - {id: r%d, condition: 'agent.name == \"agent-%d\" && network.hostname == \"h%d.test\"', action: allow}\n", i, i, i)
	}
	e := start(t, ruleItems.String(), nil, gw)
	up := newRawUpstream(t, okReply)
	e.res.set("h1.test", publicAddr) // every name maps to the one upstream
	for i := 2; i <= 10; i++ {
		e.res.set(fmt.Sprintf("h%d.test", i), publicAddr)
	}
	e.dial.mapPublic(publicAddr, 80, up.addr())
	errs := make(chan error, 20)
	for i := 1; i <= 10; i++ {
		go func() {
			src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+i))}
			d := net.Dialer{LocalAddr: src}
			c, err := d.Dial("tcp4", e.addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			// Each agent asks for its own host (allowed) and, on a second
			// connection below, for its neighbour's (blocked).
			fmt.Fprintf(c, "GET http://h%d.test/ HTTP/1.1\r\nHost: h%d.test\r\nConnection: close\r\n\r\n", i, i)
			b, _ := io.ReadAll(c)
			if !strings.HasPrefix(string(b), "HTTP/1.1 200 ") {
				errs <- fmt.Errorf("agent-%d own host: %q", i, b)
				return
			}
			c2, err := d.Dial("tcp4", e.addr)
			if err != nil {
				errs <- err
				return
			}
			defer c2.Close()
			n := i%10 + 1
			fmt.Fprintf(c2, "GET http://h%d.test/ HTTP/1.1\r\nHost: h%d.test\r\n\r\n", n, n)
			b, _ = io.ReadAll(c2)
			if !strings.HasPrefix(string(b), "HTTP/1.1 403 ") {
				errs <- fmt.Errorf("agent-%d neighbour's host: %q", i, b)
				return
			}
			errs <- nil
		}()
	}
	for i := 0; i < 10; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := len(up.requests()); n != 10 {
		t.Errorf("upstream got %d requests, want 10", n)
	}
}

// TestDefaultDialIPv4Only: the default dialer refuses anything but an IPv4
// literal over tcp4, before any socket connects.
func TestDefaultDialIPv4Only(t *testing.T) {
	p, err := New(Options{Rules: panicEvaluator{}, Resolve: func(context.Context, string) ([]netip.Addr, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := p.opts.Dial(context.Background(), "tcp4", ln.Addr().String())
	if err != nil {
		t.Fatalf("control: dial %s: %v", ln.Addr(), err)
	}
	c.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, tt := range [][2]string{{"tcp4", fmt.Sprintf("localhost:%d", port)}, {"tcp6", fmt.Sprintf("[::1]:%d", port)}, {"tcp", fmt.Sprintf("127.0.0.1:%d", port)}} {
		if c, err := p.opts.Dial(context.Background(), tt[0], tt[1]); err == nil {
			c.Close()
			t.Errorf("default dialer dialled %s %s", tt[0], tt[1])
		}
	}
}
