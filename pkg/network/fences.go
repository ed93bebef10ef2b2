package network

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"outcall.dev/outcall/pkg/datapath"
)

// listHostAddrs lists the host's IPv4 addresses, asked afresh from the
// kernel.
func listHostAddrs() ([]netip.Addr, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			out = append(out, ip)
		}
	}
	return out, nil
}

// listHostRoutes lists the destinations of the host's IPv4 routes in
// every table, the default route left out: a new network's subnet must
// not take addresses the host already reaches some other way.
func listHostRoutes() ([]netip.Prefix, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Dst == nil || r.Type != unix.RTN_UNICAST {
			continue // the default route; local, broadcast and the like
		}
		ones, _ := r.Dst.Mask.Size()
		if ip, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok && ones > 0 {
			out = append(out, netip.PrefixFrom(ip, ones).Masked())
		}
	}
	return out, nil
}

// hostAddresses lists the host's own IPv4 addresses outside the Outcall
// networks: a rule or grant opens one only when it names it and allows
// private destinations.
func (c *Controller) hostAddressesLocked() ([]netip.Addr, error) {
	addrs, err := c.opts.HostAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ip := range addrs {
		if !c.inOutcallSubnetLocked(ip) {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// inOutcallSubnetLocked reports whether ip is inside the subnet block or
// the subnet of a network: agents and gateways, never opened by a grant.
func (c *Controller) inOutcallSubnetLocked(ip netip.Addr) bool {
	return c.outcallSubnetLocked(ip).IsValid()
}

// outcallSubnetLocked returns the subnet block or network subnet holding
// ip, or the zero Prefix.
func (c *Controller) outcallSubnetLocked(ip netip.Addr) netip.Prefix {
	if c.opts.SubnetBlock.Contains(ip) {
		return c.opts.SubnetBlock
	}
	for _, n := range c.nets {
		if n.Subnet().Contains(ip) {
			return n.Subnet()
		}
	}
	return netip.Prefix{}
}

// isHostAddressLocked reports whether ip is one of the host's own
// addresses, as the fences have them; before the first sync it asks the
// kernel.
func (c *Controller) isHostAddressLocked(ip netip.Addr) bool {
	if c.hostAddrsKnown {
		return slices.Contains(c.hostAddrs, ip)
	}
	addrs, err := c.hostAddressesLocked()
	// Unsure means restricted.
	return err != nil || slices.Contains(addrs, ip)
}

// syncFencesLocked fences the subnet block and every network's subnet
// (never opened: agents do not reach each other or another network's
// gateway) and the host's own addresses (opened only with a license),
// beside the static restricted ranges the datapath always fences. It
// rewrites the map only when something changed since the last call.
func (c *Controller) syncFencesLocked() error {
	addrs, err := c.hostAddressesLocked()
	if err != nil {
		return err
	}
	c.hostAddrs, c.hostAddrsKnown = addrs, true
	fences := []datapath.Fence{{Prefix: c.opts.SubnetBlock, Never: true}}
	for _, n := range c.nets {
		if !c.opts.SubnetBlock.Contains(n.Subnet().Addr()) {
			fences = append(fences, datapath.Fence{Prefix: n.Subnet(), Never: true})
		}
	}
	for _, a := range addrs {
		fences = append(fences, datapath.Fence{Prefix: netip.PrefixFrom(a, 32)})
	}
	if c.fences != nil && slices.Equal(fences, c.fences) {
		return nil
	}
	if err := c.dp.SetFences(fences); err != nil {
		return err
	}
	c.fences = fences
	return nil
}

// Restricted reports whether ip is an address only the daemon knows to be
// off limits: inside the subnet block or a network's subnet (agents and
// gateways), or one of the host's own addresses. The DNS filter strips
// such answers and the proxy refuses to dial them, as they do the static
// restricted ranges, unless the deciding rule allows private addresses.
func (c *Controller) Restricted(ip netip.Addr) bool {
	ip = ip.Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inOutcallSubnetLocked(ip) || c.isHostAddressLocked(ip)
}

// Never reports whether ip is inside the subnet block or a network's
// subnet: an agent or a gateway, which no rule, grant or proxied
// connection ever reaches, allow_private_ips or not.
func (c *Controller) Never(ip netip.Addr) bool {
	ip = ip.Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inOutcallSubnetLocked(ip)
}
