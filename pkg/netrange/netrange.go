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
