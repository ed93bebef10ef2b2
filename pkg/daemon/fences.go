package daemon

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"

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

// hostAddresses lists the host's own IPv4 addresses outside the Outcall
// subnets: a rule or grant opens one only when it names it and allows
// private destinations.
func (d *Daemon) hostAddresses() ([]netip.Addr, error) {
	addrs, err := d.hostAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ip := range addrs {
		if !d.cfg.SubnetBlock.Contains(ip) {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

func (d *Daemon) isHostAddress(ip netip.Addr) bool {
	addrs, err := d.hostAddresses()
	// Unsure means restricted.
	return err != nil || slices.Contains(addrs, ip)
}

// syncFencesLocked fences the Outcall subnet block (never opened) and the
// host's own addresses (opened only with a license), beside the static
// restricted ranges the datapath always fences. It rewrites the map only
// when the host's addresses changed since the last call.
func (d *Daemon) syncFencesLocked() error {
	addrs, err := d.hostAddresses()
	if err != nil {
		return err
	}
	if d.fencedHosts != nil && slices.Equal(addrs, d.fencedHosts) {
		return nil
	}
	fences := []datapath.Fence{{Prefix: d.cfg.SubnetBlock, Never: true}}
	for _, a := range addrs {
		fences = append(fences, datapath.Fence{Prefix: netip.PrefixFrom(a, 32)})
	}
	if err := d.dp.SetFences(fences); err != nil {
		return err
	}
	d.fencedHosts = addrs
	return nil
}
