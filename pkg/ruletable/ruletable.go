// Package ruletable is the packet-layer form of a rule set: the tables the
// rule engine lowers its rules into (package rules) and the datapath writes
// into its BPF maps (package datapath), and a Go reference model of how the
// datapath's program looks a packet up in them and decides (model.go).
//
// It imports no kernel package, so lowering, `outcall rules validate` and the
// differential tests' reference build on every OS; the datapath converts
// these types to the program's layout and checks at compile time that
// Action's values are the program's.
package ruletable

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
)

// Action is what a table entry decides.
type Action uint8

// Actions, numbered as the program's enum rule_action numbers them.
const (
	// None decides nothing: grants, then conntrack, then no_rule, as for a
	// packet no entry matches. It shadows less specific entries.
	None Action = 0
	// Allow allows and counts a hit on the entry's rule.
	Allow Action = 1
	// Block drops and counts a hit on the entry's rule, unless conntrack
	// knows the flow or, with Entry.Grants, a grant allows it.
	Block Action = 2
)

// String is "none", "allow" or "block".
func (a Action) String() string {
	switch a {
	case None:
		return "none"
	case Allow:
		return "allow"
	case Block:
		return "block"
	}
	return fmt.Sprintf("action_%d", uint8(a))
}

// The destination ports of DNS. The datapath drops TCP and UDP to either
// anywhere but the gateway's DNS filter, whatever a rule or grant says (its
// enum dns_port has the same values, checked at compile time), so lowering
// warns about allow rules that name them.
const (
	DNSPort uint16 = 53  // DNS over UDP and TCP
	DoTPort uint16 = 853 // DNS over TLS
)

// IP protocols the tables have rows of their own for; every other protocol
// shares the rows of protocol 0.
const (
	ProtoICMP uint8 = 1
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
)

// Entry is one row of the packet-layer rule table. For a packet, the
// program tries {agent class, dst class, proto, port}, then the same with
// AnyPort, then both again with agent class 0; the first row found decides
// (see Model.Lookup).
type Entry struct {
	// AgentClass is the sender's class (Tables.Agents); 0 matches every
	// sender, after the rows of its own class.
	AgentClass uint32
	// DstClass is the class of the destination's longest matching prefix
	// (Tables.Prefixes); 0 stands for destinations no prefix matches.
	DstClass uint32
	// Proto is 6, 17 or 1, or 0 for every other IP protocol (GRE, SCTP,
	// ...), whose packets have no ports: a proto 0 entry is AnyPort.
	Proto uint8
	// AnyPort covers every port not listed for the same agent class, dst
	// class and proto; Port must then be 0. ICMP packets have port 0, so
	// an ICMP entry with another port never matches.
	AnyPort bool
	// Port is the destination port the row is for, unless AnyPort.
	Port uint16
	// Action is what the row decides.
	Action Action
	// Grants lets a grant still allow what a Block entry blocks. The other
	// actions ignore it: Allow allows anyway, and None always leaves the
	// decision to grants.
	Grants bool
	// Rule indexes Tables.Rules: the hit counter of Allow and Block
	// entries, whatever the rule's own action (a block entry may stand for
	// an allow rule whose condition cannot be decided). None entries count
	// nothing and may leave it 0.
	Rule uint32
	// License is, for an Allow entry, the length of the longest prefix the
	// allowing rule names around DstClass when the rule sets
	// egress.allow_private_ips, else 0. The program opens a fenced
	// destination (see Fence) only when License is at least the fence's
	// prefix length, so a broad rule never opens one.
	License uint8
}

// String names the entry's key, for error messages.
func (e Entry) String() string {
	port := "any"
	if !e.AnyPort {
		port = strconv.Itoa(int(e.Port))
	}
	return fmt.Sprintf("{agent class %d, dst class %d, %s/%s}", e.AgentClass, e.DstClass, protoName(e.Proto), port)
}

func protoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	}
	return strconv.Itoa(int(p))
}

// Prefix maps an IPv4 prefix to a destination class (>0). Host bits are
// ignored. An address belongs to the class of its longest matching prefix.
type Prefix struct {
	Prefix netip.Prefix
	Class  uint32
}

// Rule names a rule of a table set: the datapath keeps one hit counter per
// Rule, and reports the counts under ID and Action.
type Rule struct {
	ID string
	// Action is the rule's own action, Allow or Block; an entry that
	// stands for the rule may have another (see Entry.Rule).
	Action Action
}

// Tables is one complete packet-layer rule set: the datapath swaps it in
// as a whole.
type Tables struct {
	// Rules are the rules entries count hits on, by index.
	Rules []Rule
	// Prefixes classify destinations.
	Prefixes []Prefix
	// Agents maps an endpoint identity to its agent class (>0); an
	// identity it does not list has only the rows of agent class 0.
	Agents map[uint32]uint32
	// Entries are the rows, in no particular order; no two have the same
	// key (agent class, dst class, proto, AnyPort, port).
	Entries []Entry
}

// Validate checks everything the program relies on and the kernel would not:
// rule IDs and actions, IPv4 prefixes with classes above 0 and no duplicate
// after masking, agent classes above 0, and entries with a known protocol
// and action, a prefix for their destination class, a rule in range, and no
// duplicate key. The error names the first bad element.
func (t *Tables) Validate() error {
	for i, ref := range t.Rules {
		if ref.ID == "" {
			return fmt.Errorf("rule %d: empty ID", i)
		}
		if ref.Action != Allow && ref.Action != Block {
			return fmt.Errorf("rule %d (%s): action %s, want allow or block", i, ref.ID, ref.Action)
		}
	}
	dstClasses := make(map[uint32]bool, len(t.Prefixes))
	seenPrefix := make(map[netip.Prefix]int, len(t.Prefixes))
	for i, p := range t.Prefixes {
		if !p.Prefix.IsValid() || !p.Prefix.Addr().Is4() {
			return fmt.Errorf("prefix %d (%s): not an IPv4 prefix", i, p.Prefix)
		}
		if p.Class == 0 {
			return fmt.Errorf("prefix %d (%s): class 0, want > 0", i, p.Prefix)
		}
		masked := p.Prefix.Masked()
		if j, dup := seenPrefix[masked]; dup {
			return fmt.Errorf("prefix %d (%s): duplicates prefix %d (%s)", i, p.Prefix, j, t.Prefixes[j].Prefix)
		}
		seenPrefix[masked] = i
		dstClasses[p.Class] = true
	}
	for _, id := range slices.Sorted(maps.Keys(t.Agents)) {
		if t.Agents[id] == 0 {
			return fmt.Errorf("agent identity %d: class 0, want > 0", id)
		}
	}
	seenKey := make(map[key]int, len(t.Entries))
	for i, e := range t.Entries {
		if err := e.check(len(t.Rules), dstClasses); err != nil {
			return fmt.Errorf("entry %d %s: %w", i, e, err)
		}
		k := e.key()
		if j, dup := seenKey[k]; dup {
			return fmt.Errorf("entry %d %s: duplicates entry %d", i, e, j)
		}
		seenKey[k] = i
	}
	return nil
}

func (e Entry) check(rules int, dstClasses map[uint32]bool) error {
	switch e.Proto {
	case ProtoTCP, ProtoUDP, ProtoICMP:
	case 0:
		if !e.AnyPort {
			return errors.New("protocol 0 (every other protocol) without AnyPort")
		}
	default:
		return fmt.Errorf("protocol %d, want 0 (other), 1 (icmp), 6 (tcp) or 17 (udp)", e.Proto)
	}
	if e.License > 32 {
		return fmt.Errorf("license prefix length %d, want 0-32", e.License)
	}
	if e.AnyPort && e.Port != 0 {
		return fmt.Errorf("port %d with AnyPort", e.Port)
	}
	if e.DstClass != 0 && !dstClasses[e.DstClass] {
		return fmt.Errorf("dst class %d has no prefix", e.DstClass)
	}
	switch e.Action {
	case None:
	case Allow, Block:
		if int64(e.Rule) >= int64(rules) {
			return fmt.Errorf("rule %d out of range (%d rules)", e.Rule, rules)
		}
	default:
		return fmt.Errorf("unknown action %d", uint8(e.Action))
	}
	return nil
}

// key is an entry's key in the program's table.
type key struct {
	agent, dst uint32
	proto      uint8
	anyPort    bool
	port       uint16
}

func (e Entry) key() key {
	return key{e.AgentClass, e.DstClass, e.Proto, e.AnyPort, e.Port}
}
