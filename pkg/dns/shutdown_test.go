package dns

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/rules"
)

// TestShutdownFinishesInFlight: a query in flight when Serve's context
// ends is still answered, new ones are not read, and Serve returns
// (S007-FR-005, AS-005).
func TestShutdownFinishesInFlight(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	u := startUpstream(t, mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		once.Do(func() { close(arrived) })
		<-release
		m := new(mdns.Msg)
		m.SetReply(r)
		rr, _ := mdns.NewRR(r.Question[0].Name + " 60 IN A 198.51.100.60")
		m.Answer = []mdns.RR{rr}
		_ = w.WriteMsg(m)
	}))
	fx := newFixture(t, func(o *Options) { o.Upstreams = []netip.AddrPort{u.addr} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fx.f.Serve(ctx, fx.gw) }()
	udp, _ := fx.gw.addrs()
	c, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, _ := question("slow.example.test.", mdns.TypeA).Pack()
	if _, err := c.Write(raw); err != nil {
		t.Fatal(err)
	}
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the query never reached the upstream")
	}
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) with a query in flight", err)
	default:
	}
	close(release)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("the in-flight query got no answer: %v", err)
	}
	r := new(mdns.Msg)
	if err := r.Unpack(buf[:n]); err != nil || r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("reply %v, %v; want the answer", r, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(ShutdownGrace + 5*time.Second):
		t.Fatal("Serve did not return")
	}
}

// TestLogs: a query's decision is logged at debug with its rule and agent;
// a refused sender at warn; the message itself never.
func TestLogs(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&lockedWriter{mu: &mu, w: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug})
	fx := newFixture(t, func(o *Options) { o.Logger = slog.New(h) })
	fx.rules.set(func(c *api.EvaluationContext) rules.Outcome {
		if c.DNS.Query == "www.example.test" {
			return allow("allow-www", nil)
		}
		return block("")
	})
	fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
	fx.ask(t, agentIP, question("nope.example.test.", mdns.TypeA), true)
	fx.ask(t, strangerIP, question("www.example.test.", mdns.TypeA), true)
	mu.Lock()
	defer mu.Unlock()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	find := func(level, msg, rule string) bool {
		for _, m := range lines {
			if m["level"] == level && m["msg"] == msg && (rule == "" || m["rule"] == rule) {
				return true
			}
		}
		return false
	}
	if !find("DEBUG", "DNS query", "allow-www") || !find("DEBUG", "DNS query", rules.DefaultRuleLabel) {
		t.Errorf("no debug decision lines for allow-www and default-block in %s", buf.String())
	}
	if !find("WARN", "DNS query from an unknown sender refused", "") {
		t.Errorf("no warning for the unknown sender in %s", buf.String())
	}
	for _, m := range lines {
		if m["msg"] == "DNS query" && (m["agent"] != "agent-a" || m["identity"] != float64(7) || m["record_type"] != "A") {
			t.Errorf("decision line %v lacks the agent, identity or type", m)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
