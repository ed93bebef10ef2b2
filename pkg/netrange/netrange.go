// Package netrange names the IPv4 destinations no broad rule may open: the
// restricted ranges of DESIGN.md section 4 (private, loopback, link-local and
// metadata, CGNAT, multicast, broadcast, unspecified, reserved). It is pure
// data with no kernel import, so the rule engine, the datapath, the DNS filter
// and the proxy share one list, and the operator CLI builds anywhere.
//
// The host's own addresses and every Outcall subnet are restricted too; they
// are known only at run time, so the daemon adds them to the datapath itself.
package netrange

import "net/netip"

// restricted is sorted by address; no prefix contains another.
var restricted = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // unspecified, "this network"
	netip.MustParsePrefix("10.0.0.0/8"),     // private
	netip.MustParsePrefix("100.64.0.0/10"),  // CGNAT
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("169.254.0.0/16"), // link-local, cloud metadata
	netip.MustParsePrefix("172.16.0.0/12"),  // private
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("192.168.0.0/16"), // private
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and 255.255.255.255 broadcast
}

// Restricted returns the restricted IPv4 ranges, a fresh copy each call.
func Restricted() []netip.Prefix {
	return append([]netip.Prefix(nil), restricted...)
}

// RangeOf returns the restricted range that contains addr, if any.
func RangeOf(addr netip.Addr) (netip.Prefix, bool) {
	addr = addr.Unmap()
	for _, p := range restricted {
		if p.Contains(addr) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// IsRestricted reports whether addr lies in a restricted range.
func IsRestricted(addr netip.Addr) bool {
	_, ok := RangeOf(addr)
	return ok
}

// Licenses reports whether a rule that names named (and sets
// egress.allow_private_ips) may open addr: named must contain addr and lie
// inside addr's restricted range, so that a broad prefix such as 0.0.0.0/0
// never opens one. An unrestricted addr needs no license.
func Licenses(named netip.Prefix, addr netip.Addr) bool {
	r, ok := RangeOf(addr)
	if !ok {
		return true
	}
	return named.Contains(addr) && named.Bits() >= r.Bits() && r.Contains(named.Addr())
}

// restricted6 are the IPv6 ranges restricted outright (spec S007 §0.4).
// They are listed most specific first, so that RangeOfAddr names ::1 as
// ::1/128 rather than as the IPv4-compatible ::/96 around it.
var restricted6 = []netip.Prefix{
	netip.MustParsePrefix("::/128"),        // unspecified
	netip.MustParsePrefix("::1/128"),       // loopback
	netip.MustParsePrefix("::ffff:0:0/96"), // IPv4-mapped: an IPv4 destination in disguise
	netip.MustParsePrefix("::/96"),         // IPv4-compatible (deprecated), same reason
	netip.MustParsePrefix("fe80::/10"),     // link-local
	netip.MustParsePrefix("fc00::/7"),      // unique local (private)
	netip.MustParsePrefix("fec0::/10"),     // site-local (deprecated)
	netip.MustParsePrefix("ff00::/8"),      // multicast
	netip.MustParsePrefix("2001:db8::/32"), // documentation
	netip.MustParsePrefix("2001::/32"),     // Teredo: tunnels to an IPv4 address
}

// Embedded-IPv4 prefixes: restricted only when the IPv4 address they carry
// is, so a NAT64 or 6to4 address cannot smuggle a private IPv4 target.
var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixto4 = netip.MustParsePrefix("2002::/16")
)

// RangeOfAddr is RangeOf for both families: an IPv4 address is looked up
// in the IPv4 list; an IPv6 address in the IPv6 list of S007 §0.4, where
// every IPv4-mapped address (::ffff:a.b.c.d, unlike RangeOf, which unmaps
// it) is restricted as an IPv4 target in an AAAA record, and NAT64
// (64:ff9b::/96) and 6to4 (2002::/16) addresses are restricted when the
// IPv4 address they embed is. The DNS filter applies it to AAAA answers;
// RangeOf keeps its IPv4-only meaning for the datapath, which drops IPv6.
func RangeOfAddr(addr netip.Addr) (netip.Prefix, bool) {
	if addr.Is4() {
		return RangeOf(addr)
	}
	if !addr.Is6() {
		return netip.Prefix{}, false
	}
	addr = addr.WithZone("")
	for _, p := range restricted6 {
		if p.Contains(addr) {
			return p, true
		}
	}
	b := addr.As16()
	if nat64.Contains(addr) {
		if _, ok := RangeOf(netip.AddrFrom4([4]byte(b[12:16]))); ok {
			return nat64, true
		}
	}
	if sixto4.Contains(addr) {
		if _, ok := RangeOf(netip.AddrFrom4([4]byte(b[2:6]))); ok {
			return sixto4, true
		}
	}
	return netip.Prefix{}, false
}
