package rules

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"outcall.dev/outcall/internal/packet"
	"outcall.dev/outcall/internal/privtest"
	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/ruletable"
)

// The tests in this file run the real BPF program (BPF_PROG_TEST_RUN) on
// the tables lowering produced.

var (
	gatewayIP  = netip.MustParseAddr("10.200.0.1")
	gatewayMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
)

// testPort is the port, address and MAC of one agent in the datapath.
type testPort struct {
	ifindex uint32
	ip      netip.Addr
	mac     net.HardwareAddr
}

// openDatapath loads the program unpinned with one endpoint per agent name.
func openDatapath(tb testing.TB) (*datapath.Datapath, map[string]testPort) {
	tb.Helper()
	privtest.Root(tb)
	dp, err := datapath.Open(datapath.Options{})
	if err != nil {
		privtest.Skip(tb, "cannot load BPF: "+err.Error())
	}
	tb.Cleanup(func() { dp.Close() })
	ports := map[string]testPort{}
	for name, id := range agentIdentities {
		p := testPort{ifindex: 1000 + id, ip: netip.AddrFrom4([4]byte{10, 200, 0, byte(id - 90)}), mac: net.HardwareAddr{0x02, 0, 0, 0, 1, byte(id)}}
		if err := dp.SetEndpoint(int(p.ifindex), datapath.Endpoint{Identity: id, IP: p.ip, Gateway: gatewayIP, MAC: p.mac, GatewayMAC: gatewayMAC}); err != nil {
			tb.Fatal(err)
		}
		ports[name] = p
	}
	return dp, ports
}

// tcAllowed is TC_ACT_OK; the program answers TC_ACT_SHOT (2) for drops.
const tcAllowed = 0

func (p probe) frame(port testPort) []byte {
	sport := p.sport
	if sport == 0 {
		sport = 40000
	}
	switch p.proto {
	case 6: // a SYN: never a known flow
		return packet.TCP(port.mac, gatewayMAC, port.ip, p.dst, sport, p.port).Bytes()
	case 17:
		return packet.UDP(port.mac, gatewayMAC, port.ip, p.dst, sport, p.port).Bytes()
	case 1:
		return packet.ICMP(port.mac, gatewayMAC, port.ip, p.dst).Bytes()
	}
	return packet.Other(port.mac, gatewayMAC, port.ip, p.dst, p.proto)
}

// TestDatapathAgreesWithCEL is the differential test of DESIGN §4: for
// random rule sets (packet-level, request-level and mixed), random grants
// and random packets, the BPF program decides as the reference (CEL and the
// grants) does — verdict, reason and the rule that counts the packet — and
// exactly as the reference model of the program (ruletable.Model) does.
func TestDatapathAgreesWithCEL(t *testing.T) {
	dp, ports := openDatapath(t)
	seed := testSeed(t)
	sets, packets := 120, 50
	if testing.Short() {
		sets = 20
	}
	g := ruleGen{r: rand.New(rand.NewPCG(seed, 1))}
	var st diffStats
	var sport uint16
	var installed []datapath.GrantKey
	for i := range sets {
		files := g.ruleFiles(8)
		set, err := compile(t, files...)
		if err != nil {
			t.Fatalf("seed %d set %d: %v", seed, i, err)
		}
		for _, r := range set.Rules() {
			if r.Level == api.LevelRequest {
				st.requestRules++
			}
		}
		tables := set.PacketTables().WithAgents(identityNames())
		if err := dp.InstallRules(tables); err != nil {
			t.Fatalf("seed %d set %d: install: %v", seed, i, err)
		}
		grants := g.grants(6)
		st.grants += len(grants)
		ctx := setContext(seed, i, files, grants)
		installed = putGrants(t, dp, installed, grants)
		model := ruletable.NewModel(tables, nil, grants)
		ref := newReference(set, grants)
		for range packets {
			p := g.grantProbe(grants)
			if p.dst == gatewayIP {
				continue // the gateway's services are decided before the rules
			}
			// A fresh source port for every packet, so no packet belongs
			// to a flow an earlier one opened.
			sport = 1024 + (sport+1)%60000
			p.sport = sport
			got := runVerdict(t, dp, ports[p.agent], p, set)
			exact := model.Decide(p.packet(agentIdentities[p.agent]))
			if got != exact {
				t.Fatalf("%s: packet %s: BPF %s, reference model %s", ctx, p, verdictString(set, got), verdictString(set, exact))
			}
			want := ref.decide(p)
			st.add(p, want, checkVerdict(t, ctx, set, p, got, want))
		}
	}
	t.Logf("seed %d: %s; all %d as the reference model decides", seed, &st, st.cases)
}

// putGrants replaces the grants of the last set with grants; expired ones
// are put with an expiry just ahead and waited for.
func putGrants(t *testing.T, dp *datapath.Datapath, old []datapath.GrantKey, grants []ruletable.Grant) []datapath.GrantKey {
	t.Helper()
	for _, k := range old {
		if _, err := dp.DeleteGrant(k); err != nil {
			t.Fatal(err)
		}
	}
	var keys []datapath.GrantKey
	var expiry time.Time
	for _, gr := range grants {
		dg := datapath.Grant{GrantKey: datapath.GrantKey{Identity: gr.Identity, Dst: gr.Dst, Proto: gr.Proto, Port: gr.Port}, AllowPrivate: gr.AllowPrivate}
		if gr.Expired {
			if expiry.IsZero() {
				expiry = time.Now().Add(5 * time.Millisecond)
			}
			dg.Expires = expiry
		}
		if err := dp.PutGrant(dg); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, dg.GrantKey)
	}
	if !expiry.IsZero() {
		time.Sleep(time.Until(expiry) + time.Millisecond)
	}
	return keys
}

// runVerdict runs one packet through the program and reads what it did from
// the counters: the reason whose counter moved and the rule whose hits did.
func runVerdict(t *testing.T, dp *datapath.Datapath, port testPort, p probe, set *Set) ruletable.Verdict {
	t.Helper()
	before, hitsBefore := reasonCounts(t, dp), hitsByRule(t, dp)
	verdict, _, _, err := dp.TestRun(p.frame(port), port.ifindex, 1)
	if err != nil {
		t.Fatal(err)
	}
	after, hitsAfter := reasonCounts(t, dp), hitsByRule(t, dp)
	v := ruletable.Verdict{Allowed: verdict == tcAllowed, Rule: -1}
	for r, n := range after {
		if n != before[r] {
			if v.Reason != "" {
				t.Fatalf("packet %s moved the counters of %s and %s", p, v.Reason, r)
			}
			v.Reason = ruletable.Reason(r.String())
			if r.Allowed() != v.Allowed {
				t.Fatalf("packet %s: verdict %d, counted as %s/%s", p, verdict, r.Verdict(), r)
			}
		}
	}
	for id, n := range hitsAfter {
		if n == hitsBefore[id] {
			continue
		}
		if v.Rule >= 0 {
			t.Fatalf("packet %s counted on rules %s and %s", p, set.rules[v.Rule].ID, id)
		}
		r, ok := set.Rule(id)
		if !ok {
			t.Fatalf("packet %s counted on rule %s, which the set does not have", p, id)
		}
		v.Rule = slices.Index(set.rules, r)
	}
	return v
}

// reasonCounts is the packets counted per reason.
func reasonCounts(t *testing.T, dp *datapath.Datapath) map[datapath.Reason]uint64 {
	t.Helper()
	cs, err := dp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[datapath.Reason]uint64, len(cs))
	for _, c := range cs {
		out[c.Reason] = c.Packets
	}
	return out
}

func ruleID(r *Rule) string {
	if r == nil {
		return "none"
	}
	return r.ID
}

// TestDatapathRuleHitsAndGrants checks what the differential test does not:
// per-rule hit counters, and how grants meet explicit block rules.
func TestDatapathRuleHitsAndGrants(t *testing.T) {
	dp, ports := openDatapath(t)
	set := mustCompile(t, "00.yaml", `version: "1"
rules:
  - {id: block-meta, condition: 'cidr("169.254.0.0/16").containsIP(network.ip)', action: block, priority: 1}
  - {id: allow-db, condition: 'network.ip == "192.0.2.5" && network.port == 5432 && agent.name == "a1"', action: allow}
  - {id: pypi, condition: 'dns.query == "pypi.org"', action: allow}
  - {id: block-smtp, condition: 'network.port == 25', action: block}
`)
	if err := dp.InstallRules(set.PacketTables().WithAgents(identityNames())); err != nil {
		t.Fatal(err)
	}
	a1, a2 := ports["a1"], ports["a2"]
	send := func(port testPort, dst string, dport uint16) int {
		t.Helper()
		p := probe{dst: netip.MustParseAddr(dst), proto: 6, port: dport}
		v, _, _, err := dp.TestRun(p.frame(port), port.ifindex, 1)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for range 3 {
		if v := send(a1, "192.0.2.5", 5432); v != tcAllowed {
			t.Fatalf("a1 to the database: verdict %d, want allowed", v)
		}
	}
	if v := send(a2, "192.0.2.5", 5432); v == tcAllowed {
		t.Fatal("a2 must not reach a1's database")
	}
	// Grants: a block rule before every request-level allow beats a grant;
	// one after a request-level allow (pypi) does not, since the grant may
	// be that rule's DNS answer.
	for _, dst := range []string{"169.254.169.254", "198.51.100.7"} {
		for _, port := range []uint16{80, 25} {
			g := datapath.Grant{GrantKey: datapath.GrantKey{Identity: agentIdentities["a2"], Dst: netip.MustParseAddr(dst), Proto: 6, Port: port}}
			if err := dp.PutGrant(g); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		dst     string
		port    uint16
		allowed bool
	}{
		{"169.254.169.254", 80, false}, // block-meta precedes every request-level allow
		{"198.51.100.7", 80, true},     // no rule: the grant opens it
		{"198.51.100.7", 25, true},     // block-smtp comes after pypi
	}
	for _, tt := range tests {
		if got := send(a2, tt.dst, tt.port) == tcAllowed; got != tt.allowed {
			t.Errorf("a2 with a grant to %s:%d: allowed %v, want %v", tt.dst, tt.port, got, tt.allowed)
		}
	}
	got := hitsByRule(t, dp)
	if got["allow-db"] != 3 || got["block-meta"] != 1 {
		t.Fatalf("rule hits %v, want allow-db 3 and block-meta 1", got)
	}
}

// benchDatapath opens a datapath for benchmarks, or returns nil when BPF is
// not available (the benchmark then measures userspace only).
func benchDatapath(b *testing.B) PacketLayer {
	dp, err := datapath.Open(datapath.Options{})
	if err != nil {
		b.Logf("no datapath (%v): measuring without the kernel install", err)
		return nil
	}
	b.Cleanup(func() { dp.Close() })
	return datapathLayer{dp}
}

// datapathLayer installs packet tables the way the daemon does.
type datapathLayer struct{ dp *datapath.Datapath }

func (l datapathLayer) InstallRules(t *PacketTables) error {
	return l.dp.InstallRules(t.WithAgents(identityNames()))
}

// BenchmarkPacketVerdict measures the program's cost per packet with 10k
// lowered rules installed, for a packet that a rule allows and one that
// falls through to the default block.
func BenchmarkPacketVerdict(b *testing.B) {
	dp, ports := openDatapath(b)
	set, err := Validate(writeRuleDir(b, 10000))
	if err != nil {
		b.Fatal(err)
	}
	if err := dp.InstallRules(set.PacketTables().WithAgents(identityNames())); err != nil {
		b.Fatal(err)
	}
	port := ports["a1"]
	for _, c := range []struct {
		name    string
		p       probe
		allowed bool
	}{
		{"allowed", probe{dst: netip.MustParseAddr("10.0.39.15"), proto: 6, port: 443}, true}, // net-9999
		{"default-block", probe{dst: netip.MustParseAddr("192.0.2.99"), proto: 6, port: 443}, false},
	} {
		b.Run(fmt.Sprintf("rules=10000/%s", c.name), func(b *testing.B) {
			frame := c.p.frame(port)
			const repeat = 100000
			var total float64
			for b.Loop() {
				v, _, per, err := dp.TestRun(frame, port.ifindex, repeat)
				if err != nil {
					b.Fatal(err)
				}
				if (v == tcAllowed) != c.allowed {
					b.Fatalf("verdict %d, want allowed=%v", v, c.allowed)
				}
				total += float64(per.Nanoseconds())
			}
			b.ReportMetric(total/float64(b.N), "ns/packet")
			b.ReportMetric(float64(len(set.PacketTables().Tables.Entries)), "entries")
		})
	}
}

// TestDatapathRestricted runs the restricted-destination cases on the real
// program, whose fences check each allowing entry's license again.
func TestDatapathRestricted(t *testing.T) {
	dp, ports := openDatapath(t)
	a1 := ports["a1"]
	for _, c := range restrictedCases {
		t.Run(c.name, func(t *testing.T) {
			set := compileCase(t, c)
			if err := dp.InstallRules(set.PacketTables().WithAgents(identityNames())); err != nil {
				t.Fatal(err)
			}
			for _, p := range c.packets {
				v, _, _, err := dp.TestRun(p.probe().frame(a1), a1.ifindex, 1)
				if err != nil {
					t.Fatal(err)
				}
				if (v == tcAllowed) != p.allow {
					t.Errorf("%s: BPF verdict %d, want allowed=%v", p, v, p.allow)
				}
			}
		})
	}
}

// TestDatapathBlockCoversEveryProtocol is defect 8 of issue 7: a priority 1
// block of 169.254.0.0/16 beats a protocol-less grant to the metadata
// address for GRE, SCTP, IP-in-IP and protocol 255 as for TCP, while the
// same grant to a public address opens them (the control).
func TestDatapathBlockCoversEveryProtocol(t *testing.T) {
	dp, ports := openDatapath(t)
	set := mustCompile(t, "00.yaml", `version: "1"
rules:
  - {id: no-meta, condition: 'cidr("169.254.0.0/16").containsIP(network.ip)', action: block, priority: 1}
  - {id: no-doc, condition: 'cidr("203.0.113.0/24").containsIP(network.ip)', action: block, priority: 1}
  - {id: pypi, condition: 'dns.query == "pypi.org"', action: allow}
`)
	if err := dp.InstallRules(set.PacketTables().WithAgents(identityNames())); err != nil {
		t.Fatal(err)
	}
	a1 := ports["a1"]
	for _, dst := range []string{"169.254.169.254", "203.0.113.7", "93.184.216.34"} {
		g := datapath.Grant{GrantKey: datapath.GrantKey{Identity: agentIdentities["a1"], Dst: netip.MustParseAddr(dst)}, AllowPrivate: true}
		if err := dp.PutGrant(g); err != nil {
			t.Fatal(err)
		}
	}
	for _, proto := range []uint8{packet.ProtoGRE, packet.ProtoSCTP, packet.ProtoIPIP, packet.ProtoRaw, packet.ProtoTCP, 0} {
		for _, tt := range []struct {
			dst     string
			allowed bool
		}{
			{"93.184.216.34", true}, // control: the grant opens it
			{"169.254.169.254", false},
			{"203.0.113.7", false},
		} {
			p := probe{dst: netip.MustParseAddr(tt.dst), proto: proto}
			if proto == packet.ProtoTCP {
				p.port = 80
			}
			v, _, _, err := dp.TestRun(p.frame(a1), a1.ifindex, 1)
			if err != nil {
				t.Fatal(err)
			}
			if (v == tcAllowed) != tt.allowed {
				t.Errorf("protocol %d to %s with a protocol-less grant: verdict %d, want allowed=%v", proto, tt.dst, v, tt.allowed)
			}
		}
	}
	got := hitsByRule(t, dp)
	if got["no-meta"] != 6 || got["no-doc"] != 6 {
		t.Errorf("rule hits %v, want no-meta 6 and no-doc 6", got)
	}
}

// hitsByRule sums the datapath's rule hits per rule ID, over decisions.
func hitsByRule(t *testing.T, dp *datapath.Datapath) map[string]uint64 {
	t.Helper()
	hits, err := dp.RuleHits()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, h := range hits {
		got[h.RuleID] += h.Packets
	}
	return got
}
