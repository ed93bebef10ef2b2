package dns

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/rules"
)

// engineFixture is a fixture deciding with a real rule engine over a
// rules directory the test rewrites.
func engineFixture(t *testing.T, ruleFile string, mod func(*Options)) (*fixture, *rules.Engine, func(string)) {
	t.Helper()
	dir := t.TempDir()
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "10-dns.yaml"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(ruleFile)
	eng, err := rules.NewEngine(rules.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	fx := newFixture(t, func(o *Options) {
		o.Rules = eng
		if mod != nil {
			mod(o)
		}
	})
	return fx, eng, write
}

const allowWWW = `version: "1"
rules:
  - id: allow-www
    condition: 'dns.query == "www.example.test" && agent.name == "agent-a"'
    action: allow
`

const blockWWW = `version: "1"
rules:
  - id: block-www
    condition: 'dns.query == "www.example.test"'
    action: block
`

// TestDecisionCacheReload: a remembered decision is never served once a
// reload replaced the set that made it, whether or not the cache was
// flushed: an allow turned into a block is NXDOMAIN at once (from the
// answer cache's name too), and a block turned into an allow answers. The
// positive controls: before each reload the decision is the cache's (the
// engine was not asked again).
func TestDecisionCacheReload(t *testing.T) {
	var obs countingObserver
	fx, eng, write := engineFixture(t, allowWWW, func(o *Options) { o.Observer = &obs })
	ask := func() int {
		t.Helper()
		r := fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
		if r == nil {
			t.Fatal("no reply")
		}
		return r.Rcode
	}
	for range 3 {
		if rc := ask(); rc != mdns.RcodeSuccess {
			t.Fatalf("rcode %s under allow-www; want NOERROR", mdns.RcodeToString[rc])
		}
	}
	if n := fx.f.decisions.len(); n != 1 {
		t.Fatalf("%d decisions remembered; want 1", n)
	}
	if n := obs.count("allow-www"); n != 2 {
		t.Fatalf("observer told of %d cached decisions; want 2 (the second and third query)", n)
	}

	// The reload, and no Flush: the set changed, the decision is stale.
	write(blockWWW)
	if _, err := eng.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rc := ask(); rc != mdns.RcodeNameError {
		t.Fatalf("rcode %s after the reload to block-www; want NXDOMAIN (a stale allow was served)", mdns.RcodeToString[rc])
	}
	if rc := ask(); rc != mdns.RcodeNameError {
		t.Fatalf("rcode %s on the repeat; want NXDOMAIN", mdns.RcodeToString[rc])
	}
	if n := obs.count("block-www"); n != 1 {
		t.Fatalf("observer told of %d cached block-www decisions; want 1", n)
	}

	write(allowWWW)
	if _, err := eng.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rc := ask(); rc != mdns.RcodeSuccess {
		t.Fatalf("rcode %s after the reload back to allow-www; want NOERROR (a stale block was served)", mdns.RcodeToString[rc])
	}

	// Flush, as the daemon calls it after every reload, forgets them all.
	fx.f.Flush()
	if n := fx.f.decisions.len(); n != 0 {
		t.Fatalf("%d decisions remembered after Flush; want 0", n)
	}
}

// TestDecisionCacheRace: queries racing reloads. Once Reload has returned,
// no query may be decided by an earlier set.
func TestDecisionCacheRace(t *testing.T) {
	fx, eng, write := engineFixture(t, allowWWW, nil)
	raw, _ := question("www.example.test.", mdns.TypeA).Pack()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					fx.f.handle(context.Background(), fx.gw, agentIP, raw, true)
				}
			}
		}()
	}
	for i := range 20 {
		want := mdns.RcodeSuccess
		content := allowWWW
		if i%2 == 0 {
			want, content = mdns.RcodeNameError, blockWWW
		}
		write(content)
		if _, err := eng.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			if r := fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true); r == nil || r.Rcode != want {
				close(stop)
				wg.Wait()
				t.Fatalf("reload %d: reply %v; want %s", i, r, mdns.RcodeToString[want])
			}
		}
	}
	close(stop)
	wg.Wait()
}

// TestDecisionCacheKeys: a decision is the asker's: another agent is
// evaluated for itself, and another type too.
func TestDecisionCacheKeys(t *testing.T) {
	fx, _, _ := engineFixture(t, allowWWW, nil)
	if r := fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true); r == nil || r.Rcode != mdns.RcodeSuccess {
		t.Fatalf("agent-a: %v; want NOERROR", r)
	}
	if r := fx.ask(t, agent6IP, question("www.example.test.", mdns.TypeA), true); r == nil || r.Rcode != mdns.RcodeNameError {
		t.Fatalf("agent-six after agent-a's allow: %v; want NXDOMAIN", r)
	}
	fx.gw.mu.Lock()
	fx.gw.ids[agentIP] = fx.gw.ids[agent6IP] // the address now belongs to agent-six
	fx.gw.mu.Unlock()
	if r := fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true); r == nil || r.Rcode != mdns.RcodeNameError {
		t.Fatalf("agent-six on agent-a's old address: %v; want NXDOMAIN", r)
	}
	if n := fx.f.decisions.len(); n != 2 {
		t.Errorf("%d decisions remembered; want 2", n)
	}
}

// TestDecisionCachePlainOnly: the outcomes the engine must see every time
// (a rule that logs its matches, a condition that errors) are not
// remembered; an evaluator without RuleSets is asked every time
// (TestCacheHit).
func TestDecisionCachePlainOnly(t *testing.T) {
	fx, _, _ := engineFixture(t, `version: "1"
rules:
  - id: logged
    condition: 'dns.query == "www.example.test"'
    action: allow
    log: true
  - id: erroring
    condition: 'dns.query == "mail.example.test" && agent.name.size() / 0 == 1'
    action: allow
`, nil)
	for range 2 {
		if r := fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true); r == nil || r.Rcode != mdns.RcodeSuccess {
			t.Fatalf("logged rule: %v; want NOERROR", r)
		}
		if r := fx.ask(t, agentIP, question("mail.example.test.", mdns.TypeMX), true); r == nil || r.Rcode != mdns.RcodeNameError {
			t.Fatalf("erroring rule: %v; want NXDOMAIN", r)
		}
	}
	if n := fx.f.decisions.len(); n != 0 {
		t.Errorf("%d decisions remembered; want 0", n)
	}
}

type countingObserver struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *countingObserver) ObserveDecision(layer, ruleID string, d api.Decision) {
	if layer != string(rules.LayerDNS) {
		panic("layer " + layer)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[ruleID]++
}

func (o *countingObserver) ObserveReload(error) {}

func (o *countingObserver) count(rule string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[rule]
}

// TestPackedReplyReuse: a hit's reply reused from the last one carries its
// own ID, spelling, flags and EDNS size, and is not reused once the
// restricted-address filter keeps other records.
func TestPackedReplyReuse(t *testing.T) {
	var restrictMixed bool
	var mu sync.Mutex
	fx := newFixture(t, func(o *Options) {
		o.Restricted = func(ip netip.Addr) bool {
			mu.Lock()
			defer mu.Unlock()
			return restrictMixed && ip == netip.MustParseAddr("198.51.100.20")
		}
	})
	fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
	for i, m := range []*mdns.Msg{
		question("www.example.test.", mdns.TypeA),
		question("wWw.Example.TEST.", mdns.TypeA),
		func() *mdns.Msg { m := question("www.example.test.", mdns.TypeA); m.RecursionDesired = false; return m }(),
		func() *mdns.Msg { m := question("www.example.test.", mdns.TypeA); m.SetEdns0(1232, true); return m }(),
		func() *mdns.Msg { m := question("www.example.test.", mdns.TypeA); m.SetEdns0(4096, false); return m }(),
		question("www.example.test.", mdns.TypeA),
	} {
		m.Id = uint16(1000 + i)
		r := fx.ask(t, agentIP, m, true)
		if r == nil || r.Id != m.Id || r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 ||
			r.Answer[0].Header().Name != m.Question[0].Name || r.RecursionDesired != m.RecursionDesired {
			t.Fatalf("query %d (%v): reply %v", i, m, r)
		}
		ropt, mopt := r.IsEdns0(), m.IsEdns0()
		if (ropt == nil) != (mopt == nil) || (mopt != nil && (ropt.UDPSize() != mopt.UDPSize() || ropt.Do() != mopt.Do())) {
			t.Fatalf("query %d: reply OPT %v for query OPT %v", i, ropt, mopt)
		}
	}

	// The same shape, other kept records.
	fx.rules.set(func(*api.EvaluationContext) rules.Outcome {
		return allow("p", &api.Egress{Mode: api.EgressProxy})
	})
	fx.ask(t, agentIP, question("mixed.example.test.", mdns.TypeA), true)
	if r := fx.ask(t, agentIP, question("mixed.example.test.", mdns.TypeA), true); r == nil || len(r.Answer) != 1 {
		t.Fatalf("mixed: %v; want the one public record", r)
	}
	mu.Lock()
	restrictMixed = true
	mu.Unlock()
	if r := fx.ask(t, agentIP, question("mixed.example.test.", mdns.TypeA), true); r == nil || r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("mixed with its public address now restricted: %v; want SERVFAIL", r)
	}
}

// TestUpstreamSockets: exchanges share connected sockets, each for at most
// upstreamSocketUses exchanges; a late reply with another ID is skipped;
// a socket whose exchange timed out is not used again.
func TestUpstreamSockets(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var mu sync.Mutex
	ports := map[int]int{}
	var order []int
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(mdns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			port := from.(*net.UDPAddr).Port
			mu.Lock()
			ports[port]++
			order = append(order, port)
			mu.Unlock()
			if q.Question[0].Name == "silent.example.test." {
				continue // a timeout
			}
			// A stale reply first, then the answer.
			m := new(mdns.Msg)
			m.SetReply(q)
			m.Id = q.Id + 1
			stale, _ := m.Pack()
			_, _ = pc.WriteTo(stale, from)
			m.Id = q.Id
			rr, _ := mdns.NewRR(q.Question[0].Name + " 60 IN A 198.51.100.80")
			m.Answer = []mdns.RR{rr}
			out, _ := m.Pack()
			_, _ = pc.WriteTo(out, from)
		}
	}()
	fx := newFixture(t, func(o *Options) {
		o.Upstreams = []netip.AddrPort{pc.LocalAddr().(*net.UDPAddr).AddrPort()}
		o.UpstreamTimeout = 200 * time.Millisecond
	})
	const n = 3*upstreamSocketUses + 5
	for i := range n {
		name := "q" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ".example.test."
		r := fx.ask(t, agentIP, question(name, mdns.TypeA), true)
		if r == nil || r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("query %d: %v; want the answer past the stale reply", i, r)
		}
	}
	mu.Lock()
	if len(ports) < 4 {
		t.Errorf("%d exchanges from %d source ports; want at least 4", n, len(ports))
	}
	for p, k := range ports {
		if k > upstreamSocketUses {
			t.Errorf("source port %d used %d times; want at most %d", p, k, upstreamSocketUses)
		}
	}
	before := len(order)
	mu.Unlock()

	if r := fx.ask(t, agentIP, question("silent.example.test.", mdns.TypeA), true); r == nil || r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("silent upstream: %v; want SERVFAIL", r)
	}
	if r := fx.ask(t, agentIP, question("after.example.test.", mdns.TypeA), true); r == nil || r.Rcode != mdns.RcodeSuccess {
		t.Fatalf("after the timeout: %v; want the answer", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(order) != before+2 || order[before] == order[before+1] {
		t.Errorf("ports of the timed-out exchange and the next: %v; want two different ones", order[before:])
	}
}
