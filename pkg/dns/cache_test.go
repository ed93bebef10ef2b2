package dns

import (
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/rules"
)

// TestCacheHit: a repeat is served from the cache with its TTL counted
// down, the rules still evaluated every time (AS-008), and the current
// policy applied to the cached records (EC-016).
func TestCacheHit(t *testing.T) {
	fx := newFixture(t, nil)
	q := func(name string) *mdns.Msg { return fx.ask(t, agentIP, question(name, mdns.TypeA), true) }
	if r := q("www.example.test."); r == nil || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 120 {
		t.Fatalf("first reply %v; want the A record, TTL 120", r)
	}
	fx.clock.advance(50*time.Second + 300*time.Millisecond)
	r := q("WWW.example.test.")
	if r == nil || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 70 || r.Answer[0].Header().Name != "WWW.example.test." {
		t.Fatalf("cached reply %v; want the A record with TTL 70", r)
	}
	if n := fx.up.count("www.example.test."); n != 1 {
		t.Errorf("upstream asked %d times; want once (the repeat from cache)", n)
	}
	if n := len(fx.rules.contexts()); n != 2 {
		t.Errorf("rules evaluated %d times; want 2 (cache hits are evaluated)", n)
	}
	st := fx.f.CacheStats()
	if st.Entries != 1 || st.Hits != 1 || st.Misses != 1 || st.MaxEntries != DefaultCacheEntries {
		t.Errorf("cache stats %+v; want 1 entry, 1 hit, 1 miss", st)
	}
	es := fx.f.CacheEntries()
	if len(es) != 1 || es[0].Hostname != "www.example.test" || es[0].RecordType != "A" || es[0].TTLRemainingSecs != 70 ||
		es[0].CachedAt != "2026-04-21T14:32:01Z" {
		t.Errorf("cache entries %+v", es)
	}

	// The policy changes: the cached answer is not served to a block.
	fx.rules.set(func(*api.EvaluationContext) rules.Outcome { return block("now-blocked") })
	if r := q("www.example.test."); r == nil || r.Rcode != mdns.RcodeNameError || len(r.Answer) != 0 {
		t.Fatalf("reply %v after the rules changed; want NXDOMAIN", r)
	}

	// A private answer cached under allow_private_ips is stripped under a
	// rule without it.
	fx.rules.set(func(*api.EvaluationContext) rules.Outcome {
		return allow("p", &api.Egress{Mode: api.EgressProxy, AllowPrivateIPs: true})
	})
	if r := q("private.example.test."); r == nil || r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("reply %v; want the private record under allow_private_ips", r)
	}
	fx.rules.set(allowAll)
	if r := q("private.example.test."); r == nil || r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("cached private answer under a rule without allow_private_ips: %v; want SERVFAIL", r)
	}
	if n := fx.up.count("private.example.test."); n != 1 {
		t.Errorf("upstream asked %d times for private; want once", n)
	}

	// Expiry: after the TTL, the upstream is asked again.
	fx.clock.advance(71 * time.Second)
	q("www.example.test.")
	if n := fx.up.count("www.example.test."); n != 2 {
		t.Errorf("upstream asked %d times after expiry; want 2", n)
	}
}

// TestCacheSkips: zero-TTL, negative and failed answers are not cached.
func TestCacheSkips(t *testing.T) {
	fx := newFixture(t, nil)
	for _, name := range []string{"zero.example.test.", "nx.example.test.", "fail.example.test."} {
		for range 2 {
			fx.ask(t, agentIP, question(name, mdns.TypeA), true)
		}
		if n := fx.up.count(name); n != 2 {
			t.Errorf("%s: upstream asked %d times; want 2 (not cached)", name, n)
		}
	}
	fx.ask(t, agentIP, question("v4only.example.test.", mdns.TypeAAAA), true)
	if n := fx.f.cache.len(); n != 0 {
		t.Errorf("cache holds %d entries; want none", n)
	}
}

// TestCacheTTLCap: a cached answer lives at most DNS_CACHE_MAX_TTL_SECS.
func TestCacheTTLCap(t *testing.T) {
	u := startUpstream(t, mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		rr, _ := mdns.NewRR(r.Question[0].Name + " 86400 IN A 198.51.100.50")
		m.Answer = []mdns.RR{rr}
		_ = w.WriteMsg(m)
	}))
	fx := newFixture(t, func(o *Options) { o.Upstreams = []netip.AddrPort{u.addr} })
	fx.ask(t, agentIP, question("long.example.test.", mdns.TypeA), true)
	fx.clock.advance(time.Second)
	r := fx.ask(t, agentIP, question("long.example.test.", mdns.TypeA), true)
	if r == nil || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 299 {
		t.Fatalf("cached reply %v; want TTL 299 (300 capped, 1 s later)", r)
	}
}

// TestFlush empties the cache; the next query goes upstream (AS-009).
func TestFlush(t *testing.T) {
	fx := newFixture(t, nil)
	fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
	fx.ask(t, agentIP, question("www.example.test.", mdns.TypeAAAA), true)
	if n := fx.f.Flush(); n != 2 {
		t.Fatalf("Flush = %d; want 2", n)
	}
	if n := fx.f.Flush(); n != 0 {
		t.Fatalf("second Flush = %d; want 0", n)
	}
	fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
	if n := fx.up.count("www.example.test."); n != 3 {
		t.Errorf("upstream asked %d times; want 3 (the last after the flush)", n)
	}
}

// TestCacheLRU: a full cache evicts the least recently used answer and
// counts it (EC-007).
func TestCacheLRU(t *testing.T) {
	fx := newFixture(t, func(o *Options) { o.CacheEntries = 2 })
	a := func(name string) { fx.ask(t, agentIP, question(name, mdns.TypeA), true) }
	a("www.example.test.")
	a("multi.example.test.")
	a("www.example.test.") // www is now the most recent
	a("mixed.example.test.")
	st := fx.f.CacheStats()
	if st.Entries != 2 || st.Evictions != 1 {
		t.Fatalf("stats %+v; want 2 entries, 1 eviction", st)
	}
	a("www.example.test.")
	a("multi.example.test.")
	if w, m := fx.up.count("www.example.test."), fx.up.count("multi.example.test."); w != 1 || m != 2 {
		t.Errorf("upstream asked www %d, multi %d times; want 1 and 2 (multi was evicted)", w, m)
	}
}

// TestCacheHitLearns: a direct_ip answer served from the cache writes its
// grants again, for the time the cached records have left.
func TestCacheHitLearns(t *testing.T) {
	fx := newFixture(t, nil)
	fx.rules.set(func(*api.EvaluationContext) rules.Outcome {
		return allow("r", &api.Egress{Mode: api.EgressDirectIP, Ports: []uint16{443}})
	})
	fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
	fx.clock.advance(20 * time.Second)
	fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
	calls := fx.gw.calls()
	if len(calls) != 2 || calls[0].lg.TTL != 120*time.Second || calls[1].lg.TTL != 100*time.Second {
		t.Fatalf("Learn calls %+v; want TTL 120 s, then 100 s from the cache", calls)
	}
	if n := fx.up.count("www.example.test."); n != 1 {
		t.Errorf("upstream asked %d times; want once", n)
	}
}
