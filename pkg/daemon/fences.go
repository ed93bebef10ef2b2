package daemon

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"

	"outcall.dev/outcall/pkg/datapath"
)

// hostAddresses lists the host's own IPv4 addresses outside the Outcall
// subnets, asked afresh from the kernel: a rule or grant opens one only when
// it names it and allows private destinations.
func (d *Daemon) hostAddresses() ([]netip.Addr, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if ok && !d.cfg.SubnetBlock.Contains(ip) {
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
