package ruletable

import (
	"net/netip"

	"outcall.dev/outcall/pkg/netrange"
)

// This file is the reference model of the datapath program's decision for a
// packet that opens a connection (a TCP SYN, a UDP datagram of no known
// flow, an ICMP or other-protocol packet) from a known endpoint, correctly
// framed, to somewhere other than its gateway and other than a DNS port: the
// part of bpf/port_ingress.c from the fences on. It states what the C code
// means, and the differential tests hold the program and lowering to it.
// What it leaves out is decided before the rules (gateway services, DNS
// bypass, spoofing, framing), by flows the program allowed before, or by
// conntrack (replies of connections opened towards the container).

// Packet is what the program's rule lookup reads of a packet.
type Packet struct {
	// Identity is the sender's endpoint identity, known by its port.
	Identity uint32
	Dst      netip.Addr
	// Proto is the IP protocol number, Port the destination port (0 for
	// protocols without ports).
	Proto uint8
	Port  uint16
}

// Fence is a fenced destination prefix: the datapath fences the restricted
// ranges of package netrange and the extra prefixes the daemon sets.
type Fence struct {
	Prefix netip.Prefix
	// Never: no rule or grant opens it (an Outcall subnet).
	Never bool
}

// Grant is a grant as the program reads it: Port 0 is every port of Proto,
// Proto 0 every protocol and port.
type Grant struct {
	Identity uint32
	Dst      netip.Addr
	Proto    uint8
	Port     uint16
	// AllowPrivate lets the grant open a fenced (restricted) destination.
	AllowPrivate bool
	// Expired: the grant's expiry has passed; it opens nothing, and a drop
	// it would have prevented is counted as expired.
	Expired bool
}

// Reason is why the model decided, named as the datapath names its reasons.
type Reason string

// The reasons the model decides with.
const (
	AllowRule      Reason = "rule"
	AllowGrant     Reason = "grant"
	DropRule       Reason = "rule"
	DropNoRule     Reason = "no_rule"
	DropRestricted Reason = "restricted"
	DropExpired    Reason = "expired"
	DropEastWest   Reason = "east_west"
)

// Verdict is the model's decision for one packet.
type Verdict struct {
	Allowed bool
	Reason  Reason
	// Rule indexes Tables.Rules: the rule that counts a hit (AllowRule and
	// DropRule); -1 when none does.
	Rule int
}

// Model is a Tables with fences and grants, indexed for lookups the way the
// program's maps are.
type Model struct {
	tables  *Tables
	dsts    map[netip.Prefix]uint32
	entries map[key]Entry
	fences  map[netip.Prefix]Fence
	grants  map[grantKey]Grant
}

type grantKey struct {
	identity uint32
	dst      netip.Addr
	proto    uint8
	port     uint16
}

// NewModel indexes t, the static restricted ranges plus extra fences (as
// the datapath's SetFences sets them; a Never fence wins over a restricted
// one of the same prefix) and grants (a later grant with the same key
// replaces an earlier one, as PutGrant does). t should be valid.
func NewModel(t *Tables, extra []Fence, grants []Grant) *Model {
	m := &Model{
		tables:  t,
		dsts:    make(map[netip.Prefix]uint32, len(t.Prefixes)),
		entries: make(map[key]Entry, len(t.Entries)),
		fences:  map[netip.Prefix]Fence{},
		grants:  make(map[grantKey]Grant, len(grants)),
	}
	for _, p := range t.Prefixes {
		m.dsts[p.Prefix.Masked()] = p.Class
	}
	for _, e := range t.Entries {
		m.entries[e.key()] = e
	}
	for _, p := range netrange.Restricted() {
		m.fences[p.Masked()] = Fence{Prefix: p.Masked()}
	}
	for _, f := range extra {
		p := f.Prefix.Masked()
		if old, ok := m.fences[p]; ok && old.Never {
			continue
		}
		m.fences[p] = Fence{Prefix: p, Never: f.Never}
	}
	for _, g := range grants {
		m.grants[grantKey{g.Identity, g.Dst, g.Proto, g.Port}] = g
	}
	return m
}

// longest returns the value of the longest prefix of m that contains a.
func longest[V any](m map[netip.Prefix]V, a netip.Addr) (V, int, bool) {
	for bits := 32; bits >= 0; bits-- {
		p, _ := a.Prefix(bits)
		if v, ok := m[p]; ok {
			return v, bits, true
		}
	}
	var zero V
	return zero, -1, false
}

// Lookup is the program's rule_lookup: the destination's class by longest
// prefix, the sender's agent class by identity, then the most specific row,
// first for the agent class ({port}, then any port), then for every agent.
// Protocols other than TCP, UDP and ICMP are looked up as protocol 0, port
// 0. No row, or a None row, is {Action: None, Grants: true}: as if there
// were no rule tables.
func (m *Model) Lookup(p Packet) Entry {
	if p.Proto != ProtoTCP && p.Proto != ProtoUDP && p.Proto != ProtoICMP {
		p.Proto, p.Port = 0, 0
	}
	var dst uint32
	if p.Dst.Is4() {
		dst, _, _ = longest(m.dsts, p.Dst)
	}
	keys := []key{{0, dst, p.Proto, false, p.Port}, {0, dst, p.Proto, true, 0}}
	if agent := m.tables.Agents[p.Identity]; agent != 0 {
		keys = append([]key{{agent, dst, p.Proto, false, p.Port}, {agent, dst, p.Proto, true, 0}}, keys...)
	}
	for _, k := range keys {
		if e, ok := m.entries[k]; ok {
			if e.Action == None {
				break
			}
			return e
		}
	}
	return Entry{Action: None, Grants: true}
}

// Fenced returns the longest fence around dst.
func (m *Model) Fenced(dst netip.Addr) (Fence, bool) {
	if !dst.Is4() {
		return Fence{}, false
	}
	f, _, ok := longest(m.fences, dst)
	return f, ok
}

// Entry is Lookup after the fences: an Allow entry whose License is shorter
// than the fence around the destination decides nothing (None, grants
// allowed), so a rule opens a restricted destination only if it names a
// prefix inside the fence and sets egress.allow_private_ips.
func (m *Model) Entry(p Packet) Entry {
	e := m.Lookup(p)
	if f, ok := m.Fenced(p.Dst); ok && e.Action == Allow && (e.License == 0 || int(e.License) < f.Prefix.Bits()) {
		return Entry{Action: None, Grants: true}
	}
	return e
}

// grant is the program's grant_verdict: the grant of the packet's protocol
// and port, then of every port of the protocol, then of every protocol; 1
// for a live one that may open the destination, -1 when only expired ones
// matched, 0 for none. On a restricted destination a grant without
// AllowPrivate counts as none.
func (m *Model) grant(p Packet, restricted bool) int {
	expired := false
	for _, k := range []grantKey{
		{p.Identity, p.Dst, p.Proto, p.Port},
		{p.Identity, p.Dst, p.Proto, 0},
		{p.Identity, p.Dst, 0, 0},
	} {
		g, ok := m.grants[k]
		if !ok || (restricted && !g.AllowPrivate) {
			continue
		}
		if !g.Expired {
			return 1
		}
		expired = true
	}
	if expired {
		return -1
	}
	return 0
}

// Decide is the program's decision for p: a Never fence drops it (east-west);
// an allow entry (that the fences let stand) allows it; otherwise, unless a
// block entry forbids grants, a live grant allows it; otherwise a block
// entry drops it on its rule, a fenced destination is restricted, an
// expired grant is expired, and anything else is no_rule.
func (m *Model) Decide(p Packet) Verdict {
	f, fenced := m.Fenced(p.Dst)
	if fenced && f.Never {
		return Verdict{Reason: DropEastWest, Rule: -1}
	}
	e := m.Entry(p)
	if e.Action == Allow {
		return Verdict{Allowed: true, Reason: AllowRule, Rule: int(e.Rule)}
	}
	g := 0
	if e.Action != Block || e.Grants {
		if g = m.grant(p, fenced); g > 0 {
			return Verdict{Allowed: true, Reason: AllowGrant, Rule: -1}
		}
	}
	switch {
	case e.Action == Block:
		return Verdict{Reason: DropRule, Rule: int(e.Rule)}
	case fenced && g == 0:
		return Verdict{Reason: DropRestricted, Rule: -1}
	case g < 0:
		return Verdict{Reason: DropExpired, Rule: -1}
	}
	return Verdict{Reason: DropNoRule, Rule: -1}
}
