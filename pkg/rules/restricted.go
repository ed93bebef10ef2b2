package rules

import (
	"net/netip"
	"slices"
	"strconv"

	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/netrange"
)

// Restricted destinations (DESIGN §4, package netrange: private, loopback,
// link-local and metadata, CGNAT, multicast, broadcast, unspecified,
// reserved) are opened only by a rule that names them and sets
// egress.allow_private_ips, at every layer:
//
// When network.ip is in a restricted range, an allow rule whose condition
// holds counts as a match only if the rule sets egress.allow_private_ips and
// its condition names a prefix P inside that range containing the address
// (netrange.Licenses). Otherwise the rule is skipped and evaluation goes on
// with the next rule (first match, default block). A rule names P with a
// literal destination atom anywhere in its condition:
// cidr("P").containsIP(network.ip) (or ip(network.ip)), network.ip ==
// "addr" or != "addr", network.ip in ["addr", ...]. So `true`,
// cidr("0.0.0.0/0") or a rule about hostnames never opens 169.254.169.254,
// 10.0.0.0/8 or 255.255.255.255, and even with the flag 0.0.0.0/0 is too
// broad to license anything.
//
// Set.Evaluate and lowering apply the same rule: lowering adds the
// restricted ranges as destination prefixes, so that each destination class
// is wholly inside one range or outside all, and decides each class with the
// skip. Entries allowing a class carry the license (the longest prefix the
// allowing rule names around the class, when it sets the flag), which the
// datapath checks again against its fences (the static ranges, the host's
// own addresses and the Outcall subnets that only the daemon knows).

// Protocols other than TCP, UDP and ICMP: for such a packet network.protocol
// is the protocol's decimal number ("47" for GRE, "132" for SCTP) and
// network.port is 0. The datapath gives them all one row (protocol 0), so a
// comparison of network.protocol with a string that names one of them is
// unknown there: a block rule with one blocks every such protocol (fail
// closed), an allow rule with one allows none of them.

// ProtocolName is network.protocol for IP protocol number proto: "tcp",
// "udp", "icmp", or the decimal number.
func ProtocolName(proto uint8) string {
	for _, p := range packetProtocols {
		if !p.other && p.number == proto {
			return p.name
		}
	}
	return strconv.Itoa(int(proto))
}

// otherProtocol reports whether s is network.protocol of some protocol in
// the datapath's protocol 0 row: the canonical decimal of 0-255 other than
// 1, 6 and 17.
func otherProtocol(s string) bool {
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || strconv.FormatUint(n, 10) != s {
		return false
	}
	return n != 1 && n != 6 && n != 17
}

// namedPrefixes returns the IPv4 prefixes the destination atoms of a's
// condition name, wherever they are.
func namedPrefixes(a *celast.AST) []netip.Prefix {
	var out []netip.Prefix
	celast.PreOrderVisit(a.Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() != celast.CallKind {
			return
		}
		if pfxs, ok := dstAtom(a, e.AsCall()); ok {
			out = append(out, pfxs...)
		}
	}))
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// dstAtom returns the prefixes a destination atom compares network.ip with
// (IPv4 only: an IPv6 prefix or a non-canonical address never matches what
// the datapath sees), or false when call is not a destination atom.
func dstAtom(a *celast.AST, call celast.CallExpr) ([]netip.Prefix, bool) {
	args := call.Args()
	var lits []celast.Expr
	switch call.FunctionName() {
	case operators.Equals, operators.NotEquals:
		switch {
		case fieldOf(a, args[0]) == fieldIP:
			lits = args[1:]
		case fieldOf(a, args[1]) == fieldIP:
			lits = args[:1]
		default:
			return nil, false
		}
	case operators.In:
		if fieldOf(a, args[0]) != fieldIP || args[1].Kind() != celast.ListKind {
			return nil, false
		}
		lits = args[1].AsList().Elements()
	case "containsIP":
		// cidr('<literal>').containsIP(network.ip | ip(network.ip))
		t := call.Target()
		if !call.IsMemberFunction() || t.Kind() != celast.CallKind || t.AsCall().FunctionName() != "cidr" {
			return nil, false
		}
		lit, ok := stringLiteral(t.AsCall().Args()[0])
		arg := args[0]
		if arg.Kind() == celast.CallKind && arg.AsCall().FunctionName() == "ip" && len(arg.AsCall().Args()) == 1 {
			arg = arg.AsCall().Args()[0]
		}
		if !ok || fieldOf(a, arg) != fieldIP {
			return nil, false
		}
		// cel-go's validator already refused malformed literals.
		if pfx, err := netip.ParsePrefix(lit); err == nil && pfx.Addr().Is4() {
			return []netip.Prefix{pfx.Masked()}, true
		}
		return []netip.Prefix{}, true
	default:
		return nil, false
	}
	out := []netip.Prefix{}
	for _, v := range lits {
		s, ok := stringLiteral(v)
		if !ok {
			return nil, false
		}
		// network.ip is compared as a string: only the canonical text of an
		// IPv4 address ever equals what the datapath sees.
		if addr, err := netip.ParseAddr(s); err == nil && addr.Is4() && addr.String() == s {
			out = append(out, netip.PrefixFrom(addr, 32))
		}
	}
	return out, true
}

// allowsPrivate reports whether r sets egress.allow_private_ips.
func (r *Rule) allowsPrivate() bool {
	return r.Egress != nil && r.Egress.AllowPrivateIPs
}

// AllowPrivateIPs reports whether r sets egress.allow_private_ips: an allow
// rule opens a restricted destination only with it, and only one the
// condition names (see licenses).
func (r *Rule) AllowPrivateIPs() bool { return r.allowsPrivate() }

// licenses reports whether r, an allow rule whose condition holds, may open
// addr: always for an unrestricted address, else only with the flag and a
// named prefix inside addr's range that contains it.
func (r *Rule) licenses(addr netip.Addr, restricted bool) bool {
	if !restricted {
		return true
	}
	if !r.allowsPrivate() {
		return false
	}
	return slices.ContainsFunc(r.named, func(p netip.Prefix) bool { return netrange.Licenses(p, addr) })
}

// license is the datapath's form of the same: the length of the longest
// prefix r names that contains the whole of class (0 for none, or without
// the flag). The datapath opens a fence of length n only if license >= n.
func (r *Rule) license(class netip.Prefix) uint8 {
	if !r.allowsPrivate() || !class.IsValid() {
		return 0
	}
	best := 0
	for _, p := range r.named {
		if p.Bits() <= class.Bits() && p.Contains(class.Addr()) {
			best = max(best, p.Bits())
		}
	}
	return uint8(best)
}

// restrictedDst returns the context's destination and whether it is
// restricted. A missing or unparsable network.ip (a request with no
// destination) is not.
func restrictedDst(c *api.EvaluationContext) (netip.Addr, bool) {
	if c == nil || c.Network == nil || c.Network.IP == "" {
		return netip.Addr{}, false
	}
	addr, err := netip.ParseAddr(c.Network.IP)
	if err != nil {
		return netip.Addr{}, false
	}
	addr = addr.Unmap()
	return addr, netrange.IsRestricted(addr)
}

// Texts of the restricted-destination warnings.
const (
	warnBroad = "allows broad destinations; restricted destinations (private, loopback, link-local/metadata, " +
		"CGNAT, multicast, broadcast) stay closed unless a rule names them and sets egress.allow_private_ips"
	warnNoFlag  = "names restricted destinations (%s) but does not set egress.allow_private_ips; they stay closed"
	warnNoNamed = "sets egress.allow_private_ips but names no prefix inside a restricted range " +
		"(with cidr(\"...\").containsIP(network.ip) or network.ip == \"...\"); it opens no restricted destination"
)
