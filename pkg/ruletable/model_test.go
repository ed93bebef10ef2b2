package ruletable

import (
	"net/netip"
	"strings"
	"testing"
)

// TestModelDecide pins down the reference model on hand-made tables: how
// entries, fences and grants combine into a reason, as the program's
// comments state it.
func TestModelDecide(t *testing.T) {
	const agent, other = 7, 8
	tables := &Tables{
		Rules: []Rule{{ID: "allow-web", Action: Allow}, {ID: "block-smtp", Action: Block},
			{ID: "allow-meta", Action: Allow}, {ID: "block-granted", Action: Block}},
		Prefixes: []Prefix{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Class: 1},
			{Prefix: netip.MustParsePrefix("169.254.169.254/32"), Class: 2},
			{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Class: 3}},
		Agents: map[uint32]uint32{agent: 1},
		Entries: []Entry{
			{DstClass: 1, Proto: ProtoTCP, Port: 443, Action: Allow, Rule: 0},
			{DstClass: 1, Proto: ProtoTCP, AnyPort: true, Action: Block, Rule: 1},
			{AgentClass: 1, DstClass: 1, Proto: ProtoTCP, Port: 25, Action: None},
			{DstClass: 2, Proto: ProtoTCP, Port: 80, Action: Allow, Rule: 2, License: 32},
			{DstClass: 3, Proto: ProtoTCP, AnyPort: true, Action: Allow, Rule: 0, License: 0},
			{Proto: 0, AnyPort: true, Action: Block, Grants: true, Rule: 3},
		},
	}
	if err := tables.Validate(); err != nil {
		t.Fatal(err)
	}
	web, meta, private := netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("10.1.2.3")
	public := netip.MustParseAddr("192.0.2.9")
	grants := []Grant{
		{Identity: agent, Dst: web, Proto: ProtoTCP, Port: 25},
		{Identity: other, Dst: web},
		{Identity: agent, Dst: private, Proto: ProtoTCP},                              // no AllowPrivate: opens nothing there
		{Identity: agent, Dst: public, Proto: ProtoUDP, Expired: true},                // expired
		{Identity: agent, Dst: public, Proto: 47},                                     // GRE of every port
		{Identity: other, Dst: meta, AllowPrivate: true},                              // restricted, but licensed
		{Identity: other, Dst: netip.MustParseAddr("10.200.0.5"), AllowPrivate: true}, // never
	}
	m := NewModel(tables, []Fence{{Prefix: netip.MustParsePrefix("10.200.0.0/16"), Never: true}}, grants)
	tests := []struct {
		name string
		p    Packet
		want Verdict
	}{
		{"exact allow", Packet{agent, web, ProtoTCP, 443}, Verdict{true, AllowRule, 0}},
		{"block beats a grant of every protocol", Packet{other, web, ProtoTCP, 22}, Verdict{false, DropRule, 1}},
		{"agent none shadows the block; its grant opens", Packet{agent, web, ProtoTCP, 25}, Verdict{true, AllowGrant, -1}},
		{"licensed allow opens the metadata address", Packet{agent, meta, ProtoTCP, 80}, Verdict{true, AllowRule, 2}},
		{"unlicensed allow does not open a restricted range", Packet{other, private, ProtoTCP, 22}, Verdict{false, DropRestricted, -1}},
		{"grant without AllowPrivate is none on a restricted range", Packet{agent, private, ProtoTCP, 22}, Verdict{false, DropRestricted, -1}},
		{"grant with AllowPrivate opens a restricted one", Packet{other, meta, ProtoUDP, 53}, Verdict{true, AllowGrant, -1}},
		{"never fence", Packet{other, netip.MustParseAddr("10.200.0.5"), ProtoTCP, 443}, Verdict{false, DropEastWest, -1}},
		{"expired grant", Packet{agent, public, ProtoUDP, 9}, Verdict{false, DropExpired, -1}},
		{"no rule", Packet{agent, public, ProtoTCP, 9}, Verdict{false, DropNoRule, -1}},
		{"other protocol: block with grants, grant of the protocol", Packet{agent, public, 47, 0}, Verdict{true, AllowGrant, -1}},
		{"other protocol: block with grants, no grant", Packet{agent, public, 132, 0}, Verdict{false, DropRule, 3}},
	}
	for _, tt := range tests {
		if got := m.Decide(tt.p); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	bad := &Tables{Rules: []Rule{{ID: "a", Action: Allow}},
		Entries: []Entry{{Proto: ProtoTCP, Port: 80, Action: Allow, Rule: 0}, {Proto: ProtoTCP, Port: 80, Action: None}}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "entry 1 {agent class 0, dst class 0, tcp/80}: duplicates entry 0") {
		t.Fatalf("Validate() = %v, want a duplicate entry", err)
	}
}
