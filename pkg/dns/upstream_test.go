package dns

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/rules"
)

func TestParseUpstreams(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "192.0.2.53:53,198.51.100.53:53", want: []string{"192.0.2.53:53", "198.51.100.53:53"}},
		{in: "203.0.113.9", want: []string{"203.0.113.9:53"}},
		{in: " 203.0.113.53 , 198.51.100.1:5353 ", want: []string{"203.0.113.53:53", "198.51.100.1:5353"}},
		{in: "[2001:4860:4860::8888]:53,2606:4700::1111", want: []string{"[2001:4860:4860::8888]:53", "[2606:4700::1111]:53"}},
		{in: "[2606:4700::1111]", want: []string{"[2606:4700::1111]:53"}},
		{in: "192.0.2.53,dns.google", wantErr: `"dns.google"`},
		{in: "192.0.2.53:0", wantErr: `"192.0.2.53:0"`},
		{in: "192.0.2.53:99999", wantErr: `"192.0.2.53:99999"`},
		{in: "fe80::1%eth0", wantErr: `"fe80::1%eth0"`},
		{in: "", wantErr: "names no upstream"},
		{in: ",", wantErr: "names no upstream"},
	} {
		got, err := ParseUpstreams(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseUpstreams(%q) = %v, %v; want an error naming %s", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		var s []string
		for _, ap := range got {
			s = append(s, ap.String())
		}
		if err != nil || !slices.Equal(s, tc.want) {
			t.Errorf("ParseUpstreams(%q) = %v, %v; want %v", tc.in, s, err, tc.want)
		}
	}
}

func TestResolvConfUpstreams(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := write("resolv.conf", "# comment\nsearch example.com\nnameserver 127.0.0.53\nnameserver  2001:db8::53\nnameserver fe80::1%eth0\nnameserver bogus\noptions edns0\nnameserver 127.0.0.53\n")
	got, err := ResolvConfUpstreams(p)
	want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.53:53"), netip.MustParseAddrPort("[2001:db8::53]:53")}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("ResolvConfUpstreams = %v, %v; want %v", got, err, want)
	}
	if got, err := ResolvConfUpstreams(write("empty.conf", "search x\n")); err == nil {
		t.Errorf("no nameserver: %v; want an error", got)
	}
	if _, err := ResolvConfUpstreams(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: want an error")
	}
}

func TestNewValidates(t *testing.T) {
	up := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}
	if _, err := New(Options{Rules: &fakeRules{}}); err == nil {
		t.Error("New without upstreams succeeded")
	}
	if _, err := New(Options{Upstreams: up}); err == nil {
		t.Error("New without rules succeeded")
	}
	f, err := New(Options{Upstreams: up, Rules: &fakeRules{}})
	if err != nil || f.opts.Port != DefaultPort || f.opts.UpstreamTimeout != DefaultUpstreamTimeout ||
		f.opts.TCPIdleTimeout != DefaultTCPIdleTimeout || f.opts.CacheEntries != DefaultCacheEntries || f.Name() != "dns" {
		t.Errorf("defaults %+v, %v", f.opts, err)
	}
}

// TestLookupIPv4 resolves through the filter's upstreams only.
func TestLookupIPv4(t *testing.T) {
	fx := newFixture(t, nil)
	ctx := context.Background()
	got, err := fx.f.LookupIPv4(ctx, "multi.example.test")
	if want := addrs("198.51.100.12", "198.51.100.11"); err != nil || !slices.Equal(got, want) {
		t.Errorf("LookupIPv4(multi) = %v, %v; want %v", got, err, want)
	}
	got, err = fx.f.LookupIPv4(ctx, "alias.example.test.")
	if want := addrs("198.51.100.10"); err != nil || !slices.Equal(got, want) {
		t.Errorf("LookupIPv4(alias) = %v, %v; want %v", got, err, want)
	}
	if got, err := fx.f.LookupIPv4(ctx, "198.51.100.7"); err != nil || !slices.Equal(got, addrs("198.51.100.7")) {
		t.Errorf("literal: %v, %v", got, err)
	}
	for _, bad := range []string{"nx.example.test", "mail.example.test", "fail.example.test", "", "a b.test", "::1"} {
		if got, err := fx.f.LookupIPv4(ctx, bad); err == nil {
			t.Errorf("LookupIPv4(%q) = %v; want an error", bad, got)
		}
	}
	if len(fx.rules.contexts()) != 0 {
		t.Error("LookupIPv4 evaluated rules; the proxy evaluates its own request")
	}
}

// TestRealEngine decides with the rule engine over a rules directory:
// dns.query, dns.record_type and agent.name reach CEL.
func TestRealEngine(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "10-dns.yaml"), []byte(`version: "1"
rules:
  - id: allow-www-a
    condition: 'dns.query == "www.example.test" && dns.record_type == "A" && agent.name == "agent-a"'
    action: allow
    egress:
      mode: direct_ip
  - id: block-evil
    condition: 'dns.query.endsWith(".evil.test")'
    action: block
`), 0o600); err != nil {
		t.Fatal(err)
	}
	eng, err := rules.NewEngine(rules.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	fx := newFixture(t, func(o *Options) { o.Rules = eng })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(fx.f.Collectors()...)

	for _, tc := range []struct {
		src   netip.Addr
		name  string
		qtype uint16
		rcode int
	}{
		{agentIP, "WWW.example.test.", mdns.TypeA, mdns.RcodeSuccess},
		{agentIP, "www.example.test.", mdns.TypeAAAA, mdns.RcodeNameError}, // default block
		{agent6IP, "www.example.test.", mdns.TypeA, mdns.RcodeNameError},   // agent-six
		{agentIP, "a.evil.test.", mdns.TypeA, mdns.RcodeNameError},
	} {
		r := fx.ask(t, tc.src, question(tc.name, tc.qtype), true)
		if r == nil || r.Rcode != tc.rcode {
			t.Errorf("%s %s from %s: %v; want %s", tc.name, typeString(tc.qtype), tc.src, r, mdns.RcodeToString[tc.rcode])
		}
	}
	calls := fx.gw.calls()
	if len(calls) != 1 || calls[0].lg.Rule != "allow-www-a" || !slices.Equal(calls[0].lg.Ports, []uint16{80, 443}) ||
		calls[0].lg.TTL != 120*time.Second {
		t.Errorf("Learn calls %+v; want one for allow-www-a on 80 and 443 for 120 s", calls)
	}

	// Metrics: bounded labels, the right counts.
	for _, tc := range []struct {
		outcome, rule string
		want          float64
	}{
		{outcomeAllowed, "allow-www-a", 1},
		{outcomeBlocked, rules.DefaultRuleLabel, 2},
		{outcomeBlocked, "block-evil", 1},
	} {
		if got := testutil.ToFloat64(fx.f.metrics.queries.WithLabelValues(tc.outcome, tc.rule)); got != tc.want {
			t.Errorf("queries{%s,%s} = %v; want %v", tc.outcome, tc.rule, got, tc.want)
		}
	}
	if got := testutil.ToFloat64(fx.f.metrics.grants.WithLabelValues("allow-www-a")); got != 2 {
		t.Errorf("grants learned %v; want 2 (one address, two ports)", got)
	}
	if n, err := testutil.GatherAndCount(reg, "outcall_dns_answer_hold_seconds", "outcall_dns_upstream_duration_seconds"); err != nil || n != 2 {
		t.Errorf("histograms: %d, %v", n, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "example.test") || strings.Contains(l.GetValue(), "198.51.100") {
					t.Errorf("%s has label %s=%q: a name or address", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
}

// TestCoalescing: concurrent queries for one (name, type) share one
// upstream exchange (EC-010). The upstream holds every query until all
// twenty have been evaluated; without coalescing each would have sent its
// own.
func TestCoalescing(t *testing.T) {
	const n = 20
	release := make(chan struct{})
	var asked atomic.Int64
	u := startUpstream(t, mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		asked.Add(1)
		<-release
		m := new(mdns.Msg)
		m.SetReply(r)
		rr, _ := mdns.NewRR(r.Question[0].Name + " 60 IN A 198.51.100.70")
		m.Answer = []mdns.RR{rr}
		_ = w.WriteMsg(m)
	}))
	fx := newFixture(t, func(o *Options) { o.Upstreams = []netip.AddrPort{u.addr} })
	evaluated := make(chan struct{}, n)
	fx.rules.set(func(*api.EvaluationContext) rules.Outcome {
		evaluated <- struct{}{}
		return allow("r", nil)
	})
	var wg sync.WaitGroup
	replies := make(chan *mdns.Msg, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw, _ := question("same.example.test.", mdns.TypeA).Pack()
			res := fx.f.handle(context.Background(), fx.gw, agentIP, raw, true)
			r := new(mdns.Msg)
			if res.reply != nil && r.Unpack(res.reply) == nil {
				replies <- r
			}
		}()
	}
	for range n {
		<-evaluated
	}
	close(release)
	wg.Wait()
	close(replies)
	got := 0
	for r := range replies {
		if r.Rcode == mdns.RcodeSuccess && len(r.Answer) == 1 {
			got++
		}
	}
	if got != n {
		t.Errorf("%d of %d queries answered", got, n)
	}
	if a := asked.Load(); a >= 5 {
		t.Errorf("upstream asked %d times for %d concurrent queries; want them coalesced", a, n)
	}
}
