package dockerlab

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeTypes names the kernel's route types that a lookup can return.
var routeTypes = map[int]string{
	unix.RTN_UNICAST: "unicast", unix.RTN_LOCAL: "local", unix.RTN_BROADCAST: "broadcast",
	unix.RTN_ANYCAST: "anycast", unix.RTN_MULTICAST: "multicast", unix.RTN_BLACKHOLE: "blackhole",
	unix.RTN_UNREACHABLE: "unreachable", unix.RTN_PROHIBIT: "prohibit", unix.RTN_THROW: "throw",
	unix.RTN_NAT: "nat",
}

func routeType(t int) string {
	if s, ok := routeTypes[t]; ok {
		return s
	}
	return fmt.Sprintf("type %d", t)
}

// judgeRoot decides a root-namespace lookup of dst: it must be one unicast
// route out of the link to the upstream namespace (index link), through
// the upstream's end of it (via). names resolves an interface index for
// the message.
func judgeRoot(dst netip.Addr, routes []netlink.Route, link int, via netip.Addr, names func(int) string) error {
	if len(routes) != 1 {
		return fmt.Errorf("%s: the root namespace answers %d routes, want one into the upstream namespace", dst, len(routes))
	}
	r := routes[0]
	if r.Type != unix.RTN_UNICAST {
		return fmt.Errorf("%s is a %s destination in the root namespace, not routed into the upstream namespace", dst, routeType(r.Type))
	}
	if r.LinkIndex != link {
		return fmt.Errorf("%s leaves the root namespace by %s, not by the link to the upstream namespace (%s)", dst, names(r.LinkIndex), names(link))
	}
	if gw := addrOf(r.Gw); gw != via {
		return fmt.Errorf("%s is routed via %v, not via the upstream namespace's %s", dst, gw, via)
	}
	return nil
}

// judgeUpstream decides an upstream-namespace lookup of dst: dst must be
// an address of that namespace, so that a packet to it ends there.
func judgeUpstream(dst netip.Addr, routes []netlink.Route) error {
	if len(routes) != 1 || routes[0].Type != unix.RTN_LOCAL {
		t := "no route"
		if len(routes) > 0 {
			t = routeType(routes[0].Type)
		}
		return fmt.Errorf("%s is not an address of the upstream namespace (%s there); add it with AddAddress", dst, t)
	}
	return nil
}

// addrOf converts a netlink IP; invalid for nil.
func addrOf(ip net.IP) netip.Addr {
	if ip4 := ip.To4(); ip4 != nil {
		return netip.AddrFrom4([4]byte(ip4))
	}
	a, _ := netip.AddrFromSlice(ip)
	return a
}
