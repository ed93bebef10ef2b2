package datapath

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outcall.dev/outcall/internal/packet"
	"outcall.dev/outcall/internal/privtest"
	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/ruletable"
)

// Names flows_test.go uses for the table types, which live in package
// ruletable since the rule engine became kernel-free.
type (
	RuleTables = ruletable.Tables
	RuleRef    = ruletable.Rule
	RulePrefix = ruletable.Prefix
	RuleEntry  = ruletable.Entry
	RuleAction = ruletable.Action
)

const (
	RuleAllow = ruletable.Allow
	RuleBlock = ruletable.Block
)

const (
	tcp6  = packet.ProtoTCP
	udp17 = packet.ProtoUDP
	icmp1 = packet.ProtoICMP
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// otherProto is a packet of IP protocol proto with no layer-4 header.
func otherProto(dst netip.Addr, proto uint8) packet.Frame {
	return packet.Frame{SrcMAC: agentMAC, DstMAC: gwMAC, EtherType: packet.EtherTypeIPv4, Src: agentIP, Dst: dst, Proto: proto}
}

// otherTCP is a TCP SYN from the other endpoint, which has no agent class.
func otherTCP(dst netip.Addr, dport uint16) packet.Frame {
	return packet.TCP(otherMAC, gwMAC, otherIP, dst, 40000, dport)
}

// Destination classes and rules of the table-driven test. The prefixes
// overlap (/8, /16, /32), agent class 1 is agentID's, otherID has none.
const (
	dst10     = 1 // 10.0.0.0/8
	dst10_1   = 2 // 10.1.0.0/16
	dstHost   = 3 // 10.1.2.3/32
	dstNet    = 4 // 203.0.113.0/24
	dstBridge = 5 // 10.200.0.0/16, the bridge subnet with the gateway
	agentA    = 1
)

var testRules = []ruletable.Rule{
	{ID: "allow-10-https", Action: ruletable.Allow},       // 0
	{ID: "block-10-1-tcp", Action: ruletable.Block},       // 1
	{ID: "allow-host", Action: ruletable.Allow},           // 2
	{ID: "allow-agent-ssh", Action: ruletable.Allow},      // 3
	{ID: "block-udp", Action: ruletable.Block},            // 4
	{ID: "allow-icmp", Action: ruletable.Allow},           // 5
	{ID: "block-tcp-granted", Action: ruletable.Block},    // 6
	{ID: "block-bridge", Action: ruletable.Block},         // 7
	{ID: "allow-10-udp", Action: ruletable.Allow},         // 8
	{ID: "allow-web", Action: ruletable.Allow},            // 9
	{ID: "allow-agent-10-1-tcp", Action: ruletable.Allow}, // 10
}

func testTables() *ruletable.Tables {
	return &ruletable.Tables{
		Rules: testRules,
		Prefixes: []ruletable.Prefix{
			{Prefix: pfx("10.0.0.0/8"), Class: dst10}, {Prefix: pfx("10.1.0.0/16"), Class: dst10_1}, {Prefix: pfx("10.1.2.3/32"), Class: dstHost},
			{Prefix: pfx("203.0.113.0/24"), Class: dstNet}, {Prefix: pfx("10.200.0.0/16"), Class: dstBridge},
		},
		Agents: map[uint32]uint32{agentID: agentA},
		Entries: []ruletable.Entry{
			{DstClass: dst10, Proto: tcp6, Port: 443, Action: ruletable.Allow, Rule: 0, License: 8},
			{DstClass: dst10_1, Proto: tcp6, AnyPort: true, Action: ruletable.Block, Rule: 1},
			{DstClass: dstHost, Proto: tcp6, AnyPort: true, Action: ruletable.Allow, Rule: 2, License: 32},
			{AgentClass: agentA, DstClass: dst10, Proto: tcp6, Port: 22, Action: ruletable.Allow, Rule: 3, License: 8},
			{Proto: udp17, AnyPort: true, Action: ruletable.Block, Rule: 4},
			{DstClass: dstNet, Proto: icmp1, Action: ruletable.Allow, Rule: 5},
			{Proto: tcp6, AnyPort: true, Action: ruletable.Block, Grants: true, Rule: 6},
			{DstClass: dstBridge, Proto: tcp6, AnyPort: true, Action: ruletable.Block, Rule: 7},
			{DstClass: dstBridge, Proto: udp17, AnyPort: true, Action: ruletable.Block, Rule: 7},
			{DstClass: dst10, Proto: udp17, AnyPort: true, Action: ruletable.Allow, Rule: 8, License: 8},
			{DstClass: dstNet, Proto: tcp6, AnyPort: true, Action: ruletable.Allow, Rule: 9},
			{DstClass: dstNet, Proto: tcp6, Port: 80, Action: ruletable.None},
			{AgentClass: agentA, DstClass: dstNet, Proto: tcp6, Port: 8000, Action: ruletable.None},
			{AgentClass: agentA, DstClass: dst10_1, Proto: tcp6, AnyPort: true, Action: ruletable.Allow, Rule: 10, License: 16},
			{DstClass: dst10_1, Proto: tcp6, Port: 7, Action: ruletable.Allow, Rule: 0, License: 0},
			{DstClass: dst10_1, Proto: tcp6, Port: 9, Action: ruletable.Allow, Rule: 0, License: 0},
			{AgentClass: agentA, DstClass: dst10_1, Proto: tcp6, Port: 9, Action: ruletable.Allow, Rule: 10, License: 0},
			{Proto: 0, AnyPort: true, Action: ruletable.Block, Rule: 4},
			{AgentClass: agentA, DstClass: dst10_1, Proto: tcp6, Port: 25, Action: ruletable.None},
		},
	}
}

func TestRuleVerdicts(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	must(t, d.InstallRules(testTables()))

	tests := []struct {
		name   string
		port   uint32
		frame  packet.Frame
		reason Reason
		rule   string // the rule that counts a hit, if any
	}{
		{"/8 exact port", agentPort, tcp(agentIP, addr("10.9.9.9"), 443), AllowRule, "allow-10-https"},
		{"/16 wildcard beats /8 exact port", otherPort, otherTCP(addr("10.1.9.9"), 443), DropRule, "block-10-1-tcp"},
		{"/32 beats /16", otherPort, otherTCP(addr("10.1.2.3"), 8080), AllowRule, "allow-host"},
		{"agent exact port", agentPort, tcp(agentIP, addr("10.9.9.9"), 22), AllowRule, "allow-agent-ssh"},
		{"agent entry is not another agent's", otherPort, otherTCP(addr("10.9.9.9"), 22), DropRestricted, ""},
		{"unlicensed allow of a restricted destination", otherPort, otherTCP(addr("10.1.9.9"), 7), DropRestricted, ""},
		{"other protocol, block of every protocol", agentPort, otherProto(addr("198.51.100.99"), 47), DropRule, "block-udp"},
		{"other protocol, block beats an any-protocol grant", agentPort, otherProto(upstream2, 132), DropRule, "block-udp"},
		{"agent wildcard beats any-agent wildcard", agentPort, tcp(agentIP, addr("10.1.9.9"), 443), AllowRule, "allow-agent-10-1-tcp"},
		{"agent none shadows agent wildcard and any-agent entries", agentPort, tcp(agentIP, addr("10.1.9.9"), 25), DropRestricted, ""},
		{"unmatched destination, udp wildcard", agentPort, udp(addr("192.0.2.1"), 5000), DropRule, "block-udp"},
		{"udp /8 wildcard", agentPort, udp(addr("10.9.9.9"), 5000), AllowRule, "allow-10-udp"},
		{"icmp exact", agentPort, packet.ICMP(agentMAC, gwMAC, agentIP, addr("203.0.113.7")), AllowRule, "allow-icmp"},
		{"icmp without entry", agentPort, packet.ICMP(agentMAC, gwMAC, agentIP, addr("10.9.9.9")), DropRestricted, ""},
		{"tcp unmatched destination, block with grants, no grant", agentPort, tcp(agentIP, addr("192.0.2.1"), 80), DropRule, "block-tcp-granted"},
		{"none shadows wildcard", otherPort, otherTCP(addr("203.0.113.7"), 80), DropNoRule, ""},
		{"wildcard next to none", otherPort, otherTCP(addr("203.0.113.7"), 81), AllowRule, "allow-web"},
		{"agent none shadows any-agent wildcard", agentPort, tcp(agentIP, addr("203.0.113.7"), 8000), DropNoRule, ""},
		{"any-agent wildcard for another agent", otherPort, otherTCP(addr("203.0.113.7"), 8000), AllowRule, "allow-web"},
		// What happens before rules still does.
		{"gateway service despite block", agentPort, udp(gatewayIP, 53), AllowGateway, ""},
		{"gateway proxy despite block", agentPort, tcp(agentIP, gatewayIP, 8080), AllowGateway, ""},
		{"gateway port", agentPort, tcp(agentIP, gatewayIP, 22), DropGatewayPort, ""},
		{"dns bypass despite allow", agentPort, udp(addr("10.9.9.9"), 53), DropDNSBypass, ""},
		{"spoofed source despite allow", agentPort, tcp(otherIP, addr("10.9.9.9"), 443), DropSpoofedIP, ""},
		{"unknown port despite allow", unknownPort, tcp(agentIP, addr("10.9.9.9"), 443), DropUnknownPort, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectVerdict(t, d, tt.port, tt.frame.Bytes(), tt.reason, tt.rule)
		})
	}
}

// TestRulePrecedence pins down how rule entries and grants combine, with
// seed's grants: agentID may reach upstream on tcp/443 and any udp port, and
// has an expired grant for upstream tcp/8443.
func TestRulePrecedence(t *testing.T) {
	rules := []ruletable.Rule{{ID: "allow", Action: ruletable.Allow}, {ID: "block", Action: ruletable.Block}, {ID: "block-granted", Action: ruletable.Block}}
	up := []ruletable.Prefix{{Prefix: netip.PrefixFrom(upstream, 32), Class: 1}}
	tests := []struct {
		name    string
		entries []ruletable.Entry
		frame   packet.Frame
		reason  Reason
		rule    string
	}{
		{"no entry: grant", nil, tcp(agentIP, upstream, 443), AllowGrant, ""},
		{"no entry: expired grant", nil, tcp(agentIP, upstream, 8443), DropExpired, ""},
		{"no entry: no rule", nil, tcp(agentIP, upstream, 444), DropNoRule, ""},
		{"allow beats grant", []ruletable.Entry{{DstClass: 1, Proto: tcp6, Port: 443, Action: ruletable.Allow, Rule: 0}},
			tcp(agentIP, upstream, 443), AllowRule, "allow"},
		{"block without grants beats a live grant", []ruletable.Entry{{DstClass: 1, Proto: udp17, AnyPort: true, Action: ruletable.Block, Rule: 1}},
			udp(upstream, 9999), DropRule, "block"},
		{"block with grants lets a grant allow", []ruletable.Entry{{DstClass: 1, Proto: tcp6, AnyPort: true, Action: ruletable.Block, Grants: true, Rule: 2}},
			tcp(agentIP, upstream, 443), AllowGrant, ""},
		{"block with grants and only an expired grant", []ruletable.Entry{{DstClass: 1, Proto: tcp6, AnyPort: true, Action: ruletable.Block, Grants: true, Rule: 2}},
			tcp(agentIP, upstream, 8443), DropRule, "block-granted"},
		{"block entry of an allow rule counts on that rule", []ruletable.Entry{{DstClass: 1, Proto: tcp6, Port: 444, Action: ruletable.Block, Rule: 0}},
			tcp(agentIP, upstream, 444), DropRule, "allow"},
		{"none entry: grant", []ruletable.Entry{{DstClass: 1, Proto: tcp6, Port: 443, Action: ruletable.None}, {DstClass: 1, Proto: tcp6, AnyPort: true, Action: ruletable.Block, Rule: 1}},
			tcp(agentIP, upstream, 443), AllowGrant, ""},
		{"none entry: no rule", []ruletable.Entry{{DstClass: 1, Proto: tcp6, Port: 444, Action: ruletable.None}, {DstClass: 1, Proto: tcp6, AnyPort: true, Action: ruletable.Block, Rule: 1}},
			tcp(agentIP, upstream, 444), DropNoRule, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := openTest(t)
			seed(t, d)
			must(t, d.InstallRules(&ruletable.Tables{Rules: rules, Prefixes: up, Entries: tt.entries}))
			expectVerdict(t, d, agentPort, tt.frame.Bytes(), tt.reason, tt.rule)
		})
	}
}

// expectVerdict runs one frame and checks the verdict, the mark, the reason
// counter and that exactly rule (none when empty) counted the packet.
func expectVerdict(t *testing.T, d *Datapath, port uint32, data []byte, reason Reason, rule string) {
	t.Helper()
	before := counterOf(t, d, reason)
	hitsBefore := hitsByID(t, d)
	verdict, mark := run(t, d, port, data)
	want, wantMark := uint32(tcActShot), uint32(0x1234)
	if reason.Allowed() {
		want, wantMark = tcActOK, api.AllowMark|0x1234
	}
	if verdict != want || mark != wantMark {
		t.Errorf("verdict %d mark %#x, want %d mark %#x (%s/%s)", verdict, mark, want, wantMark, reason.Verdict(), reason)
	}
	if got := counterOf(t, d, reason); got.Packets != before.Packets+1 || got.Bytes != before.Bytes+uint64(len(data)) {
		t.Errorf("counter %s/%s moved from %+v to %+v, want +1 packet, +%d bytes", reason.Verdict(), reason, before, got, len(data))
	}
	for id, h := range hitsByID(t, d) {
		wantP, wantB := hitsBefore[id].Packets, hitsBefore[id].Bytes
		if id == rule {
			wantP, wantB = wantP+1, wantB+uint64(len(data))
		}
		if h.Packets != wantP || h.Bytes != wantB {
			t.Errorf("rule %s hits %d packets %d bytes, want %d, %d", id, h.Packets, h.Bytes, wantP, wantB)
		}
	}
	if _, ok := hitsBefore[rule]; rule != "" && !ok {
		t.Errorf("RuleHits does not list rule %s", rule)
	}
}

func hitsByID(t testing.TB, d *Datapath) map[string]RuleHit {
	t.Helper()
	hits, err := d.RuleHits()
	must(t, err)
	out := map[string]RuleHit{}
	for _, h := range hits {
		if _, dup := out[h.RuleID]; dup {
			t.Fatalf("RuleHits lists %s twice", h.RuleID)
		}
		out[h.RuleID] = h
	}
	return out
}

func TestRuleGenerations(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	net := []ruletable.Prefix{{Prefix: pfx("203.0.113.0/24"), Class: 1}}
	a := &ruletable.Tables{
		Rules:    []ruletable.Rule{{ID: "shared", Action: ruletable.Allow}, {ID: "a-block", Action: ruletable.Block}},
		Prefixes: net,
		Entries: []ruletable.Entry{
			{DstClass: 1, Proto: tcp6, Port: 443, Action: ruletable.Allow, Rule: 0},
			{DstClass: 1, Proto: tcp6, AnyPort: true, Action: ruletable.Block, Rule: 1},
		},
	}
	// B moves "shared" to another index and blocks what A allowed on 80.
	b := &ruletable.Tables{
		Rules:    []ruletable.Rule{{ID: "b-allow", Action: ruletable.Allow}, {ID: "shared", Action: ruletable.Allow}},
		Prefixes: net,
		Entries: []ruletable.Entry{
			{DstClass: 1, Proto: tcp6, Port: 443, Action: ruletable.Allow, Rule: 1},
			{DstClass: 1, Proto: tcp6, Port: 80, Action: ruletable.Allow, Rule: 0},
		},
	}
	https := tcp(agentIP, addr("203.0.113.5"), 443).Bytes()
	web := tcp(agentIP, addr("203.0.113.5"), 80).Bytes()
	n := uint64(len(https))

	var last map[string]RuleHit
	step := func(name string, frames [][]byte, reasons []Reason, want map[string]uint64) {
		t.Helper()
		for i, f := range frames {
			if v, mark, _, err := d.TestRun(f, agentPort, 1); err != nil {
				t.Fatal(err)
			} else if ok := v == tcActOK && mark == api.AllowMark; ok != reasons[i].Allowed() {
				t.Errorf("%s: frame %d: verdict %d mark %#x, want %s", name, i, v, mark, reasons[i])
			}
		}
		hits := hitsByID(t, d)
		for id, h := range hits {
			if prev := last[id]; h.Packets < prev.Packets || h.Bytes < prev.Bytes {
				t.Errorf("%s: hits of %s went down from %+v to %+v", name, id, prev, h)
			}
		}
		for id, p := range want {
			if h := hits[id]; h.Packets != p || h.Bytes != p*n {
				t.Errorf("%s: rule %s hit %d packets, %d bytes, want %d, %d", name, id, h.Packets, h.Bytes, p, p*n)
			}
		}
		last = hits
	}

	must(t, d.InstallRules(a))
	step("A", [][]byte{https, https, web}, []Reason{AllowRule, AllowRule, DropRule}, map[string]uint64{"shared": 2, "a-block": 1})
	must(t, d.InstallRules(b))
	step("B", [][]byte{https, web}, []Reason{AllowRule, AllowRule}, map[string]uint64{"shared": 3, "a-block": 1, "b-allow": 1})
	must(t, d.InstallRules(a))
	step("A again", [][]byte{https, web}, []Reason{AllowRule, DropRule}, map[string]uint64{"shared": 4, "a-block": 2, "b-allow": 1})
	must(t, d.InstallRules(b))
	step("B again", [][]byte{web}, []Reason{AllowRule}, map[string]uint64{"shared": 4, "a-block": 2, "b-allow": 2})

	must(t, d.ClearRules())
	before := counterOf(t, d, DropNoRule)
	step("cleared", [][]byte{https, web}, []Reason{DropNoRule, DropNoRule}, map[string]uint64{"shared": 4, "a-block": 2, "b-allow": 2})
	if got := counterOf(t, d, DropNoRule); got.Packets != before.Packets+2 {
		t.Errorf("after ClearRules no_rule counted %d packets, want 2", got.Packets-before.Packets)
	}
	// Grants still work without rules.
	if v, _, _, err := d.TestRun(tcp(agentIP, upstream, 443).Bytes(), agentPort, 1); err != nil || v != tcActOK {
		t.Errorf("granted packet after ClearRules: verdict %d, %v", v, err)
	}
}

func TestSetRuleAgents(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	if err := d.SetRuleAgents(map[uint32]uint32{agentID: 1}); err == nil {
		t.Fatal("SetRuleAgents before any InstallRules succeeded")
	}
	ssh := tcp(agentIP, addr("203.0.113.5"), 22).Bytes()
	must(t, d.InstallRules(&ruletable.Tables{
		Rules:    []ruletable.Rule{{ID: "ssh", Action: ruletable.Allow}, {ID: "web", Action: ruletable.Allow}},
		Prefixes: []ruletable.Prefix{{Prefix: pfx("203.0.113.0/24"), Class: 1}},
		Entries: []ruletable.Entry{
			{AgentClass: 1, DstClass: 1, Proto: tcp6, Port: 22, Action: ruletable.Allow, Rule: 0},
			{AgentClass: 2, DstClass: 1, Proto: tcp6, Port: 22, Action: ruletable.Allow, Rule: 1},
		},
	}))
	for _, step := range []struct {
		agents map[uint32]uint32
		reason Reason
		rule   string
	}{
		{nil, DropNoRule, ""},
		{map[uint32]uint32{agentID: 1}, AllowRule, "ssh"},
		{map[uint32]uint32{agentID: 2, otherID: 1}, AllowRule, "web"},
		{map[uint32]uint32{otherID: 1}, DropNoRule, ""},
	} {
		must(t, d.SetRuleAgents(step.agents))
		expectVerdict(t, d, agentPort, ssh, step.reason, step.rule)
	}
	if err := d.SetRuleAgents(map[uint32]uint32{agentID: 0}); err == nil || !strings.Contains(err.Error(), fmt.Sprint(agentID)) {
		t.Errorf("class 0 for identity %d: error %v, want one naming the identity", agentID, err)
	}
}

func TestRuleValidation(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	good := func() *ruletable.Tables {
		return &ruletable.Tables{
			Rules:    []ruletable.Rule{{ID: "allow", Action: ruletable.Allow}, {ID: "block", Action: ruletable.Block}},
			Prefixes: []ruletable.Prefix{{Prefix: pfx("203.0.113.0/24"), Class: 1}},
			Agents:   map[uint32]uint32{agentID: 1},
			Entries: []ruletable.Entry{
				{DstClass: 1, Proto: tcp6, Port: 443, Action: ruletable.Allow, Rule: 0},
				{DstClass: 1, Proto: tcp6, AnyPort: true, Action: ruletable.Block, Rule: 1},
			},
		}
	}
	must(t, d.InstallRules(good()))
	allowed := tcp(agentIP, addr("203.0.113.5"), 443).Bytes()
	blocked := tcp(agentIP, addr("203.0.113.5"), 80).Bytes()

	tests := []struct {
		name   string
		mutate func(*ruletable.Tables)
		want   string
	}{
		{"empty rule id", func(t *ruletable.Tables) { t.Rules[1].ID = "" }, "rule 1: empty ID"},
		{"rule action none", func(t *ruletable.Tables) { t.Rules[1].Action = ruletable.None }, "rule 1 (block): action none"},
		{"prefix class 0", func(t *ruletable.Tables) { t.Prefixes[0].Class = 0 }, "prefix 0 (203.0.113.0/24): class 0"},
		{"ipv6 prefix", func(t *ruletable.Tables) {
			t.Prefixes = append(t.Prefixes, ruletable.Prefix{Prefix: pfx("2001:db8::/32"), Class: 2})
		}, "prefix 1 (2001:db8::/32): not an IPv4 prefix"},
		{"invalid prefix", func(t *ruletable.Tables) { t.Prefixes = append(t.Prefixes, ruletable.Prefix{Class: 2}) }, "prefix 1 (invalid Prefix): not an IPv4 prefix"},
		{"duplicate prefix after masking", func(t *ruletable.Tables) {
			t.Prefixes = append(t.Prefixes, ruletable.Prefix{Prefix: pfx("203.0.113.9/24"), Class: 2})
		}, "prefix 1 (203.0.113.9/24): duplicates prefix 0"},
		{"agent class 0", func(t *ruletable.Tables) { t.Agents[otherID] = 0 }, "agent identity 8: class 0"},
		{"protocol", func(t *ruletable.Tables) { t.Entries[1].Proto = 47 }, "entry 1 {agent class 0, dst class 1, 47/any}: protocol 47"},
		{"protocol 0 with a port", func(t *ruletable.Tables) { t.Entries[0].Proto = 0 }, "entry 0 {agent class 0, dst class 1, 0/443}: protocol 0 (every other protocol) without AnyPort"},
		{"license beyond 32", func(t *ruletable.Tables) { t.Entries[0].License = 33 }, "entry 0 {agent class 0, dst class 1, tcp/443}: license prefix length 33"},
		{"port with any port", func(t *ruletable.Tables) { t.Entries[1].Port = 80 }, "entry 1 {agent class 0, dst class 1, tcp/any}: port 80 with AnyPort"},
		{"unknown dst class", func(t *ruletable.Tables) { t.Entries[0].DstClass = 9 }, "entry 0 {agent class 0, dst class 9, tcp/443}: dst class 9 has no prefix"},
		{"rule out of range", func(t *ruletable.Tables) { t.Entries[1].Rule = 2 }, "entry 1 {agent class 0, dst class 1, tcp/any}: rule 2 out of range (2 rules)"},
		{"unknown action", func(t *ruletable.Tables) { t.Entries[1].Action = 3 }, "entry 1 {agent class 0, dst class 1, tcp/any}: unknown action 3"},
		{"duplicate key", func(t *ruletable.Tables) {
			t.Entries = append(t.Entries, ruletable.Entry{DstClass: 1, Proto: tcp6, AnyPort: true, Action: ruletable.None})
		}, "entry 2 {agent class 0, dst class 1, tcp/any}: duplicates entry 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := good()
			tt.mutate(bad)
			slot, err := d.activeSlot()
			must(t, err)
			hits := hitsByID(t, d)
			err = d.InstallRules(bad)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("InstallRules error %v, want one containing %q", err, tt.want)
			}
			if now, err := d.activeSlot(); err != nil || now != slot {
				t.Errorf("active slot moved from %d to %d (%v)", slot, now, err)
			}
			if got := hitsByID(t, d); len(got) != len(hits) {
				t.Errorf("RuleHits changed from %v to %v", hits, got)
			}
			expectVerdict(t, d, agentPort, allowed, AllowRule, "allow")
			expectVerdict(t, d, agentPort, blocked, DropRule, "block")
		})
	}
}

// TestRulesAcrossRestart plays a daemon restart on pinned maps: the rules of
// the first process keep deciding, the second one installs over them and
// counts only its own hits.
func TestRulesAcrossRestart(t *testing.T) {
	dir := testPinDir(t)
	open := func() *Datapath {
		d, err := Open(Options{PinDir: dir})
		if err != nil {
			privtest.Skip(t, "cannot load pinned BPF: "+err.Error())
		}
		seed(t, d)
		return d
	}
	web := tcp(agentIP, addr("203.0.113.5"), 80).Bytes()
	tables := func(action ruletable.Action, id string) *ruletable.Tables {
		return &ruletable.Tables{
			Rules:    []ruletable.Rule{{ID: id, Action: action}},
			Prefixes: []ruletable.Prefix{{Prefix: pfx("203.0.113.0/24"), Class: 1}},
			Entries:  []ruletable.Entry{{DstClass: 1, Proto: tcp6, AnyPort: true, Action: action, Rule: 0}},
		}
	}

	first := open()
	must(t, first.InstallRules(tables(ruletable.Allow, "first")))
	must(t, first.InstallRules(tables(ruletable.Allow, "first")))
	expectVerdict(t, first, agentPort, web, AllowRule, "first")
	must(t, first.Close())

	second := open()
	defer second.Close()
	if hits := hitsByID(t, second); len(hits) != 0 {
		t.Errorf("RuleHits of a fresh process = %v, want none", hits)
	}
	if err := second.SetRuleAgents(map[uint32]uint32{agentID: 1}); err == nil {
		t.Error("SetRuleAgents on tables of another process succeeded")
	}
	// The first process's tables still decide, counted in no total here.
	expectVerdict(t, second, agentPort, web, AllowRule, "")
	for _, step := range []struct {
		action ruletable.Action
		id     string
		reason Reason
	}{{ruletable.Block, "second-block", DropRule}, {ruletable.Allow, "second-allow", AllowRule}, {ruletable.Block, "second-block", DropRule}} {
		must(t, second.InstallRules(tables(step.action, step.id)))
		expectVerdict(t, second, agentPort, web, step.reason, step.id)
	}
	hits := hitsByID(t, second)
	if _, ok := hits["first"]; ok || hits["second-block"].Packets != 2 || hits["second-allow"].Packets != 1 {
		t.Errorf("RuleHits after restart = %v, want second-block 2 and second-allow 1 packets only", hits)
	}
	must(t, second.Unpin())
	for _, name := range []string{"rule_active", "rule_dsts", "rule_table", "rule_agents", "rule_hits"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s still pinned after Unpin (%v)", name, err)
		}
	}
}

// bigTables lowers nPrefixes /32 destinations in 198.18.0.0/15, each with six
// entries of two rules (allow and block), and gives agentID class 1.
func bigTables(nPrefixes int) *ruletable.Tables {
	t := &ruletable.Tables{Agents: map[uint32]uint32{agentID: 1, otherID: 2}}
	for i := range nPrefixes {
		class := uint32(i + 1)
		a := netip.AddrFrom4([4]byte{198, 18 | byte(i>>16), byte(i >> 8), byte(i)})
		allow, block := uint32(len(t.Rules)), uint32(len(t.Rules)+1)
		t.Rules = append(t.Rules, ruletable.Rule{ID: fmt.Sprintf("allow-%d", i), Action: ruletable.Allow}, ruletable.Rule{ID: fmt.Sprintf("block-%d", i), Action: ruletable.Block})
		t.Prefixes = append(t.Prefixes, ruletable.Prefix{Prefix: netip.PrefixFrom(a, 32), Class: class})
		t.Entries = append(t.Entries,
			ruletable.Entry{DstClass: class, Proto: tcp6, Port: 443, Action: ruletable.Allow, Rule: allow},
			ruletable.Entry{AgentClass: 1, DstClass: class, Proto: tcp6, Port: 22, Action: ruletable.Allow, Rule: allow},
			ruletable.Entry{DstClass: class, Proto: tcp6, AnyPort: true, Action: ruletable.Block, Rule: block},
			ruletable.Entry{DstClass: class, Proto: udp17, Port: 443, Action: ruletable.Allow, Rule: allow},
			ruletable.Entry{DstClass: class, Proto: udp17, AnyPort: true, Action: ruletable.Block, Grants: true, Rule: block},
			ruletable.Entry{DstClass: class, Proto: icmp1, Action: ruletable.Allow, Rule: allow},
		)
	}
	return t
}

func TestInstallManyRules(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	big := bigTables(10_000)
	start := time.Now()
	must(t, d.InstallRules(big))
	t.Logf("installed %d prefixes, %d entries, %d rules in %v", len(big.Prefixes), len(big.Entries), len(big.Rules), time.Since(start))
	last := netip.AddrFrom4([4]byte{198, 18, 0x27, 0x0f}) // prefix 9999
	expectVerdict(t, d, agentPort, tcp(agentIP, last, 443).Bytes(), AllowRule, "allow-9999")
	expectVerdict(t, d, agentPort, tcp(agentIP, last, 22).Bytes(), AllowRule, "allow-9999")
	expectVerdict(t, d, otherPort, otherTCP(last, 22).Bytes(), DropRule, "block-9999")
	expectVerdict(t, d, agentPort, packet.ICMP(agentMAC, gwMAC, agentIP, last).Bytes(), AllowRule, "allow-9999")
	expectVerdict(t, d, agentPort, tcp(agentIP, addr("198.19.255.1"), 443).Bytes(), DropNoRule, "")
}

// swapSet is one of the two generations the swap tests alternate: the
// destination 203.0.113.0/24 has a class only this set has, so a packet that
// mixed one set's prefixes with the other's table finds no entry.
func swapSet(class uint32, action ruletable.Action, id string) *ruletable.Tables {
	return &ruletable.Tables{
		Rules:    []ruletable.Rule{{ID: id, Action: action}},
		Prefixes: []ruletable.Prefix{{Prefix: pfx("203.0.113.0/24"), Class: class}},
		Agents:   map[uint32]uint32{agentID: class},
		Entries:  []ruletable.Entry{{AgentClass: class, DstClass: class, Proto: tcp6, AnyPort: true, Action: action, Rule: 0}},
	}
}

// TestRuleSwapIsAtomic sends packets while generations alternate. The two
// sets give the destination different classes, so a packet that mixed one
// set's prefixes with the other's table would find no entry and count as
// no_rule.
func TestRuleSwapIsAtomic(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	a, b := swapSet(1, ruletable.Allow, "a"), swapSet(2, ruletable.Block, "b")
	must(t, d.InstallRules(a))
	data := tcp(agentIP, addr("203.0.113.5"), 80).Bytes()
	before := map[Reason]Counter{}
	for _, r := range []Reason{AllowRule, DropRule, DropNoRule} {
		before[r] = counterOf(t, d, r)
	}

	const repeat = 2000
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		runs := 0
		for {
			select {
			case <-stop:
				done <- runs
				return
			default:
			}
			if _, _, _, err := d.TestRun(data, agentPort, repeat); err != nil {
				t.Error(err)
			}
			runs++
		}
	}()
	for i := range 20 {
		must(t, d.InstallRules([]*ruletable.Tables{b, a}[i%2]))
	}
	close(stop)
	// At least: a run that a signal interrupts is started over.
	packets := uint64(<-done * repeat)

	delta := func(r Reason) uint64 { return counterOf(t, d, r).Packets - before[r].Packets }
	if n := delta(DropNoRule); n != 0 {
		t.Errorf("%d of %d packets saw a mix of two generations", n, packets)
	}
	allowed, blocked := delta(AllowRule), delta(DropRule)
	if allowed+blocked < packets || allowed == 0 || blocked == 0 {
		t.Errorf("%d packets: %d allowed by a, %d blocked by b, want both and no others", packets, allowed, blocked)
	}
	hits := hitsByID(t, d)
	if hits["a"].Packets != allowed || hits["b"].Packets != blocked {
		t.Errorf("hits a %d, b %d, want %d, %d", hits["a"].Packets, hits["b"].Packets, allowed, blocked)
	}
}

// TestRuleSlotFlipStress flips the active generation between two installed
// generations as fast as a syscall allows while packets run. A program that
// read the active slot more than once per packet (the four rule lookups
// each reading the map value) would see one generation's prefixes with the
// other's table: the destination's class in each set exists only in that
// set, so a mix finds no entry and counts as no_rule. Against such a
// program this fails within the first few thousand packets; the program
// reads the generation once.
func TestRuleSlotFlipStress(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	must(t, d.InstallRules(swapSet(1, ruletable.Allow, "a")))
	must(t, d.InstallRules(swapSet(2, ruletable.Block, "b")))
	gen, err := d.Generation()
	must(t, err)
	before := map[Reason]uint64{}
	for _, r := range []Reason{AllowRule, DropRule, DropNoRule} {
		before[r] = counterOf(t, d, r).Packets
	}

	stop := make(chan struct{})
	flips := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				flips <- n
				return
			default:
			}
			// gen and gen-1 are the two slots, both filled.
			if err := d.objs.RuleActive.Put(uint32(0), gen-uint32(n%2)); err != nil {
				t.Error(err)
			}
			n++
		}
	}()
	data := tcp(agentIP, addr("203.0.113.5"), 80).Bytes()
	const runs, repeat = 1000, 1000
	for range runs {
		if _, _, _, err := d.TestRun(data, agentPort, repeat); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	n := <-flips
	must(t, d.objs.RuleActive.Put(uint32(0), gen))

	delta := func(r Reason) uint64 { return counterOf(t, d, r).Packets - before[r] }
	allowed, blocked, mixed := delta(AllowRule), delta(DropRule), delta(DropNoRule)
	t.Logf("%d flips, %d packets: %d allowed by a, %d blocked by b, %d mixed", n, allowed+blocked+mixed, allowed, blocked, mixed)
	if mixed != 0 {
		t.Errorf("%d packets saw a mix of two generations", mixed)
	}
	if allowed == 0 || blocked == 0 || n < 1000 {
		t.Errorf("the stress did not stress: %d flips, %d allowed, %d blocked; want both generations seen", n, allowed, blocked)
	}
}

// TestReasonsOfTheModel: the reference model (ruletable.Model) names its
// reasons as the program's counters do.
func TestReasonsOfTheModel(t *testing.T) {
	for _, c := range []struct {
		model ruletable.Reason
		want  Reason
	}{
		{ruletable.AllowRule, AllowRule}, {ruletable.AllowGrant, AllowGrant}, {ruletable.DropRule, DropRule},
		{ruletable.DropNoRule, DropNoRule}, {ruletable.DropRestricted, DropRestricted},
		{ruletable.DropExpired, DropExpired}, {ruletable.DropEastWest, DropEastWest},
	} {
		model, want := c.model, c.want
		if want.String() != string(model) {
			t.Errorf("model reason %q, datapath %s names it %q", model, want.Verdict(), want)
		}
	}
}
