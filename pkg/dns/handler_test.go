package dns

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/network"
	"outcall.dev/outcall/pkg/rules"
)

// TestPipeline walks queries through the handler: identity, normalisation,
// evaluation, the answer and its wire format (S007 §2.4, §2.5).
func TestPipeline(t *testing.T) {
	byName := func(c *api.EvaluationContext) rules.Outcome {
		switch {
		case strings.HasSuffix(c.DNS.Query, ".evil.test"):
			return block("block-evil")
		case c.DNS.Query == "nobody.test":
			return block("")
		case strings.HasPrefix(c.DNS.Query, "private.") && c.DNS.RecordType == "A":
			return allow("allow-private", &api.Egress{Mode: api.EgressProxy, AllowPrivateIPs: true})
		}
		return allow("allow-test", nil)
	}
	for _, tc := range []struct {
		name      string
		src       netip.Addr
		q         *mdns.Msg
		rcode     int
		aa, ra    bool
		answer    []string // the answer's records, as strings
		soa       string   // the authority's only record, if any
		evaluated string   // "" = the rules must not be asked; else "query TYPE agent"
	}{
		{name: "unknown sender refused", src: strangerIP, q: question("www.example.test.", mdns.TypeA),
			rcode: mdns.RcodeRefused, ra: true},
		{name: "unknown sender refused before .local", src: strangerIP, q: question("printer.local.", mdns.TypeA),
			rcode: mdns.RcodeRefused, ra: true},
		{name: "allowed A", src: agentIP, q: question("www.example.test.", mdns.TypeA),
			rcode: mdns.RcodeSuccess, ra: true, answer: []string{"www.example.test.\t120\tIN\tA\t198.51.100.10"},
			evaluated: "www.example.test A agent-a"},
		{name: "uppercase and 0x20 echoed, evaluated lowercase", src: agentIP, q: question("WwW.ExAmple.TEST.", mdns.TypeA),
			rcode: mdns.RcodeSuccess, ra: true, answer: []string{"WwW.ExAmple.TEST.\t120\tIN\tA\t198.51.100.10"},
			evaluated: "www.example.test A agent-a"},
		{name: "IDN A-labels lowercased", src: agentIP, q: question("XN--BCHER-KVA.example.test.", mdns.TypeA),
			rcode: mdns.RcodeNameError, ra: true, soa: zoneSOA().String(), evaluated: "xn--bcher-kva.example.test A agent-a"},
		{name: "raw UTF-8 name is FORMERR, not evaluated", src: agentIP, q: question("b\\195\\188cher.example.test.", mdns.TypeA),
			rcode: mdns.RcodeFormatError, ra: true},
		{name: "escaped dot in a label is FORMERR", src: agentIP, q: question("a\\.b.example.test.", mdns.TypeA),
			rcode: mdns.RcodeFormatError, ra: true},
		{name: "name of 253 characters is evaluated", src: agentIP, q: question(name253()+".", mdns.TypeA),
			rcode: mdns.RcodeNameError, ra: true, soa: zoneSOA().String(), evaluated: name253() + " A agent-a"},
		{name: "AAAA", src: agentIP, q: question("www.example.test.", mdns.TypeAAAA),
			rcode: mdns.RcodeSuccess, ra: true, answer: []string{"www.example.test.\t120\tIN\tAAAA\t2606:4700::10"},
			evaluated: "www.example.test AAAA agent-a"},
		{name: "CNAME chain returned whole", src: agentIP, q: question("alias.example.test.", mdns.TypeA),
			rcode: mdns.RcodeSuccess, ra: true, answer: []string{
				"alias.example.test.\t200\tIN\tCNAME\tmid.example.test.",
				"mid.example.test.\t30\tIN\tCNAME\twww.example.test.",
				"www.example.test.\t120\tIN\tA\t198.51.100.10"},
			evaluated: "alias.example.test A agent-a"},
		{name: "MX", src: agentIP, q: question("mail.example.test.", mdns.TypeMX),
			rcode: mdns.RcodeSuccess, ra: true, answer: []string{"mail.example.test.\t100\tIN\tMX\t10 mx.example.test."},
			evaluated: "mail.example.test MX agent-a"},
		{name: "PTR evaluated with the reverse name", src: agentIP, q: question("10.100.51.198.in-addr.arpa.", mdns.TypePTR),
			rcode: mdns.RcodeSuccess, ra: true, answer: []string{"10.100.51.198.in-addr.arpa.\t100\tIN\tPTR\twww.example.test."},
			evaluated: "10.100.51.198.in-addr.arpa PTR agent-a"},
		{name: "unknown type mnemonic", src: agentIP, q: question("www.example.test.", 65280),
			rcode: mdns.RcodeSuccess, ra: true, soa: zoneSOA().String(), evaluated: "www.example.test TYPE65280 agent-a"},
		{name: "blocked name", src: agentIP, q: question("x.evil.test.", mdns.TypeA),
			rcode: mdns.RcodeNameError, aa: true, ra: true,
			soa:       "outcall.invalid.\t60\tIN\tSOA\tns.outcall.invalid. hostmaster.outcall.invalid. 1 3600 600 86400 60",
			evaluated: "x.evil.test A agent-a"},
		{name: "default block", src: agentIP, q: question("nobody.test.", mdns.TypeA),
			rcode: mdns.RcodeNameError, aa: true, ra: true,
			soa:       "outcall.invalid.\t60\tIN\tSOA\tns.outcall.invalid. hostmaster.outcall.invalid. 1 3600 600 86400 60",
			evaluated: "nobody.test A agent-a"},
		{name: ".local not evaluated", src: agentIP, q: question("Printer.LOCAL.", mdns.TypeA),
			rcode: mdns.RcodeNameError, aa: true, ra: true,
			soa: "outcall.invalid.\t60\tIN\tSOA\tns.outcall.invalid. hostmaster.outcall.invalid. 1 3600 600 86400 60"},
		{name: "upstream NXDOMAIN passed through", src: agentIP, q: question("nx.example.test.", mdns.TypeA),
			rcode: mdns.RcodeNameError, ra: true, soa: zoneSOA().String(), evaluated: "nx.example.test A agent-a"},
		{name: "upstream NODATA passed through", src: agentIP, q: question("v4only.example.test.", mdns.TypeAAAA),
			rcode: mdns.RcodeSuccess, ra: true, soa: zoneSOA().String(), evaluated: "v4only.example.test AAAA agent-a"},
		{name: "restricted-only answer is SERVFAIL", src: agentIP, q: question("private.example.test.", mdns.TypeAAAA),
			rcode: mdns.RcodeServerFailure, ra: true, evaluated: "private.example.test AAAA agent-a"},
		{name: "allow_private_ips keeps restricted answers", src: agentIP, q: question("private.example.test.", mdns.TypeA),
			rcode: mdns.RcodeSuccess, ra: true, answer: []string{"private.example.test.\t100\tIN\tA\t10.0.0.5"},
			evaluated: "private.example.test A agent-a"},
		{name: "mixed answer keeps the public records", src: agentIP, q: question("mixed.example.test.", mdns.TypeA),
			rcode: mdns.RcodeSuccess, ra: true, answer: []string{"mixed.example.test.\t100\tIN\tA\t198.51.100.20"},
			evaluated: "mixed.example.test A agent-a"},
		{name: "upstream SERVFAIL is SERVFAIL", src: agentIP, q: question("fail.example.test.", mdns.TypeA),
			rcode: mdns.RcodeServerFailure, ra: true, evaluated: "fail.example.test A agent-a"},
		{name: "not a QUERY", src: agentIP, q: func() *mdns.Msg {
			m := question("www.example.test.", mdns.TypeA)
			m.Opcode = mdns.OpcodeStatus
			return m
		}(),
			rcode: mdns.RcodeNotImplemented, ra: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t, nil)
			fx.rules.set(byName)
			tc.q.RecursionDesired = true
			r := fx.ask(t, tc.src, tc.q, true)
			if r == nil {
				t.Fatal("no reply")
			}
			if r.Rcode != tc.rcode || r.Authoritative != tc.aa || r.RecursionAvailable != tc.ra {
				t.Errorf("rcode %s AA %v RA %v; want %s AA %v RA %v", mdns.RcodeToString[r.Rcode], r.Authoritative, r.RecursionAvailable,
					mdns.RcodeToString[tc.rcode], tc.aa, tc.ra)
			}
			if !r.Response || r.Id != tc.q.Id || !r.RecursionDesired || r.Opcode != tc.q.Opcode {
				t.Errorf("header QR %v id %d RD %v opcode %d; want the query's echoed with QR", r.Response, r.Id, r.RecursionDesired, r.Opcode)
			}
			if len(r.Question) != 1 || r.Question[0] != tc.q.Question[0] {
				t.Errorf("question %v; want %v echoed as received", r.Question, tc.q.Question)
			}
			if got := rrStrings(r.Answer); !slices.Equal(got, tc.answer) {
				t.Errorf("answer\n%q\nwant\n%q", got, tc.answer)
			}
			var wantNs []string
			if tc.soa != "" {
				wantNs = []string{tc.soa}
			}
			if got := rrStrings(r.Ns); !slices.Equal(got, wantNs) {
				t.Errorf("authority %q; want %q", got, wantNs)
			}
			if len(r.Extra) != 0 {
				t.Errorf("additional %v; want none", r.Extra)
			}
			seen := fx.rules.contexts()
			switch {
			case tc.evaluated == "" && len(seen) != 0:
				t.Errorf("rules asked about %+v; want not evaluated", *seen[0].DNS)
			case tc.evaluated != "":
				if len(seen) != 1 {
					t.Fatalf("rules asked %d times; want once", len(seen))
				}
				if got := seen[0].DNS.Query + " " + seen[0].DNS.RecordType + " " + seen[0].Agent.Name; got != tc.evaluated {
					t.Errorf("evaluated %q; want %q", got, tc.evaluated)
				}
			}
		})
	}
}

func name253() string {
	return strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
}

// TestCounters checks the status counters: REFUSED and restricted-only
// answers count as blocked, an upstream failure as neither.
func TestCounters(t *testing.T) {
	fx := newFixture(t, nil)
	fx.ask(t, strangerIP, question("www.example.test.", mdns.TypeA), true)
	fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
	fx.ask(t, agentIP, question("private.example.test.", mdns.TypeA), true)
	fx.ask(t, agentIP, question("fail.example.test.", mdns.TypeA), true)
	fx.rules.set(func(*api.EvaluationContext) rules.Outcome { return block("") })
	fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
	total, allowed, blocked := fx.f.total.Load(), fx.f.allowed.Load(), fx.f.blocked.Load()
	if total != 5 || allowed != 1 || blocked != 3 {
		t.Errorf("total %d allowed %d blocked %d; want 5, 1, 3", total, allowed, blocked)
	}
	if st := fx.f.Status(); st.Running || st.QueriesTotal != 0 {
		t.Errorf("status %+v while not serving; want not running, zero counters", st)
	}
}

// TestEngineTrouble: an engine that fails is SERVFAIL, never an answer
// (S007-FR-032); an erroring rule is its block (DESIGN §7).
func TestEngineTrouble(t *testing.T) {
	for _, tc := range []struct {
		name  string
		out   func(*api.EvaluationContext) rules.Outcome
		rcode int
	}{
		{"panic", func(*api.EvaluationContext) rules.Outcome { panic("engine down") }, mdns.RcodeServerFailure},
		{"no decision", func(*api.EvaluationContext) rules.Outcome { return rules.Outcome{} }, mdns.RcodeServerFailure},
		{"allow without a rule", func(*api.EvaluationContext) rules.Outcome { return rules.Outcome{Decision: api.DecisionAllow} }, mdns.RcodeServerFailure},
		{"rule error blocks", func(*api.EvaluationContext) rules.Outcome {
			o := block("bad-rule")
			o.Err = errors.New("no such key")
			return o
		}, mdns.RcodeNameError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t, nil)
			fx.rules.set(tc.out)
			r := fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
			if r == nil || r.Rcode != tc.rcode || len(r.Answer) != 0 {
				t.Fatalf("reply %v; want %s with no answer", r, mdns.RcodeToString[tc.rcode])
			}
			if n := fx.up.count("www.example.test."); n != 0 {
				t.Errorf("forwarded %d times; want never", n)
			}
		})
	}
}

// TestFailover: a dead upstream (timeout) and a SERVFAIL one are passed
// over for the next; when all fail, SERVFAIL (S007-FR-015, EC-002/003/013).
func TestFailover(t *testing.T) {
	dead := deadUpstream(t)
	sf := servfailUpstream(t)
	good := startUpstream(t, nil)
	fx := newFixture(t, func(o *Options) {
		o.Upstreams = []netip.AddrPort{dead, sf.addr, good.addr}
		o.UpstreamTimeout = 200 * time.Millisecond
	})
	r := fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
	if r == nil || r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("reply %v; want the third upstream's answer", r)
	}
	if sf.served.Load() != 1 || good.count("www.example.test.") != 1 {
		t.Errorf("servfail upstream asked %d times, good %d; want 1 and 1", sf.served.Load(), good.count("www.example.test."))
	}

	fx2 := newFixture(t, func(o *Options) {
		o.Upstreams = []netip.AddrPort{dead, sf.addr}
		o.UpstreamTimeout = 200 * time.Millisecond
	})
	r = fx2.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
	if r == nil || r.Rcode != mdns.RcodeServerFailure || !r.RecursionAvailable || len(r.Answer)+len(r.Ns) != 0 {
		t.Fatalf("reply %v; want SERVFAIL, RA, question only", r)
	}
	if n := fx2.f.cache.len(); n != 0 {
		t.Errorf("cache holds %d entries after a failure; want none", n)
	}
}

// TestDirectIP checks the grants an allowed direct_ip answer writes
// (S007-FR-037..040).
func TestDirectIP(t *testing.T) {
	direct := &api.Egress{Mode: api.EgressDirectIP, Ports: []uint16{443, 8443}}
	for _, tc := range []struct {
		name   string
		src    netip.Addr
		q      string
		qtype  uint16
		egress *api.Egress
		want   *network.Learned // nil: no Learn
	}{
		{"sorted distinct A values, min TTL", agentIP, "multi.example.test.", mdns.TypeA, direct,
			&network.Learned{Rule: "r", Dsts: addrs("198.51.100.11", "198.51.100.12"), Ports: []uint16{443, 8443}, TTL: 60 * time.Second}},
		{"CNAME chain: TTL over every record", agentIP, "alias.example.test.", mdns.TypeA, direct,
			&network.Learned{Rule: "r", Dsts: addrs("198.51.100.10"), Ports: []uint16{443, 8443}, TTL: 30 * time.Second}},
		{"restricted records removed first", agentIP, "mixed.example.test.", mdns.TypeA, direct,
			&network.Learned{Rule: "r", Dsts: addrs("198.51.100.20"), Ports: []uint16{443, 8443}, TTL: 100 * time.Second}},
		{"allow_private_ips passed on", agentIP, "private.example.test.", mdns.TypeA,
			&api.Egress{Mode: api.EgressDirectIP, Ports: []uint16{80, 443}, AllowPrivateIPs: true},
			&network.Learned{Rule: "r", Dsts: addrs("10.0.0.5"), Ports: []uint16{80, 443}, TTL: 100 * time.Second, AllowPrivate: true}},
		{"zero TTL: no grant", agentIP, "zero.example.test.", mdns.TypeA, direct, nil},
		{"AAAA: no grant on the IPv4 bridge", agentIP, "www.example.test.", mdns.TypeAAAA, direct, nil},
		{"IPv6 source: no grant", agent6IP, "www.example.test.", mdns.TypeA, direct, nil},
		{"no address: no grant", agentIP, "mail.example.test.", mdns.TypeMX, direct, nil},
		{"NXDOMAIN: no grant", agentIP, "nx.example.test.", mdns.TypeA, direct, nil},
		{"proxy mode: no grant", agentIP, "www.example.test.", mdns.TypeA, &api.Egress{Mode: api.EgressProxy}, nil},
		{"no egress: no grant", agentIP, "www.example.test.", mdns.TypeA, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t, nil)
			fx.rules.set(func(*api.EvaluationContext) rules.Outcome { return allow("r", tc.egress) })
			r := fx.ask(t, tc.src, question(tc.q, tc.qtype), true)
			if r == nil || r.Rcode == mdns.RcodeServerFailure {
				t.Fatalf("reply %v; want an answer", r)
			}
			calls := fx.gw.calls()
			if tc.want == nil {
				if len(calls) != 0 {
					t.Fatalf("Learn(%+v); want no grant", calls[0].lg)
				}
				return
			}
			if len(calls) != 1 {
				t.Fatalf("%d Learn calls; want 1", len(calls))
			}
			got := calls[0]
			if got.identity != 7 || got.lg.Rule != tc.want.Rule || !slices.Equal(got.lg.Dsts, tc.want.Dsts) ||
				!slices.Equal(got.lg.Ports, tc.want.Ports) || got.lg.TTL != tc.want.TTL || got.lg.AllowPrivate != tc.want.AllowPrivate {
				t.Errorf("Learn(%d, %+v); want Learn(7, %+v)", got.identity, got.lg, *tc.want)
			}
		})
	}
}

// TestDirectIPCapsTTL: a grant never outlives DNS_CACHE_MAX_TTL_SECS.
func TestDirectIPCapsTTL(t *testing.T) {
	u := startUpstream(t, mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		rr, _ := mdns.NewRR(r.Question[0].Name + " 86400 IN A 198.51.100.50")
		m.Answer = []mdns.RR{rr}
		_ = w.WriteMsg(m)
	}))
	fx := newFixture(t, func(o *Options) { o.Upstreams = []netip.AddrPort{u.addr} })
	fx.rules.set(func(*api.EvaluationContext) rules.Outcome {
		return allow("r", &api.Egress{Mode: api.EgressDirectIP, Ports: []uint16{443}})
	})
	fx.ask(t, agentIP, question("long.example.test.", mdns.TypeA), true)
	if calls := fx.gw.calls(); len(calls) != 1 || calls[0].lg.TTL != MaxTTL {
		t.Fatalf("Learn calls %+v; want one with TTL %v", calls, MaxTTL)
	}
}

// TestLearnFailure: a grant that cannot be written is SERVFAIL, never an
// answer the client cannot use.
func TestLearnFailure(t *testing.T) {
	fx := newFixture(t, nil)
	fx.gw.learnErr = errors.New("grant map full")
	fx.rules.set(func(*api.EvaluationContext) rules.Outcome {
		return allow("r", &api.Egress{Mode: api.EgressDirectIP, Ports: []uint16{443}})
	})
	r := fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true)
	if r == nil || r.Rcode != mdns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Fatalf("reply %v; want SERVFAIL without records", r)
	}
	if len(fx.gw.calls()) != 1 {
		t.Fatal("Learn was not called")
	}
	// Positive control: the same query with Learn working is answered.
	fx.gw.learnErr = nil
	if r := fx.ask(t, agentIP, question("www.example.test.", mdns.TypeA), true); r == nil || r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("reply %v; want the answer once Learn works", r)
	}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestTypeString(t *testing.T) {
	for qtype, want := range map[uint16]string{
		mdns.TypeA: "A", mdns.TypeAAAA: "AAAA", mdns.TypePTR: "PTR", mdns.TypeNSEC3PARAM: "NSEC3PARAM",
		0: "NONE", 65535: "RESERVED", 65280: "TYPE65280",
	} {
		if got := typeString(qtype); got != want {
			t.Errorf("typeString(%d) = %q; want %q", qtype, got, want)
		}
	}
}

// TestNegativeAuthority: an upstream NXDOMAIN passes on its SOA, never an
// address record smuggled into its authority section.
func TestNegativeAuthority(t *testing.T) {
	u := startUpstream(t, mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetRcode(r, mdns.RcodeNameError)
		a, _ := mdns.NewRR("sneaky.example.test. 100 IN A 10.0.0.9")
		m.Ns = []mdns.RR{zoneSOA(), a}
		_ = w.WriteMsg(m)
	}))
	fx := newFixture(t, func(o *Options) { o.Upstreams = []netip.AddrPort{u.addr} })
	r := fx.ask(t, agentIP, question("gone.example.test.", mdns.TypeA), true)
	if r == nil || r.Rcode != mdns.RcodeNameError || !slices.Equal(rrStrings(r.Ns), []string{zoneSOA().String()}) {
		t.Fatalf("reply %v; want NXDOMAIN with only the upstream's SOA", r)
	}
}

func TestLogLimiter(t *testing.T) {
	var l logLimiter
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, tc := range []struct {
		at     time.Duration
		ok     bool
		before uint64
	}{
		{0, true, 0}, {100 * time.Millisecond, false, 0}, {900 * time.Millisecond, false, 0},
		{time.Second, true, 2}, {1500 * time.Millisecond, false, 0}, {3 * time.Second, true, 1},
	} {
		n, ok := l.allow(t0.Add(tc.at))
		if ok != tc.ok || n != tc.before {
			t.Errorf("%d: allow at %v = %d, %v; want %d, %v", i, tc.at, n, ok, tc.before, tc.ok)
		}
	}
}

// TestEDNSVersion: an EDNS version other than 0 is BADVERS, not evaluated.
func TestEDNSVersion(t *testing.T) {
	fx := newFixture(t, nil)
	q := question("www.example.test.", mdns.TypeA)
	q.SetEdns0(1232, false)
	q.IsEdns0().SetVersion(1)
	r := fx.ask(t, agentIP, q, true)
	if r == nil || r.Rcode != mdns.RcodeBadVers || r.IsEdns0() == nil || r.IsEdns0().Version() != 0 {
		t.Fatalf("reply %v; want BADVERS with an OPT of version 0", r)
	}
	if len(fx.rules.contexts()) != 0 {
		t.Error("evaluated")
	}
}
