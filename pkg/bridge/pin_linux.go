//go:build linux

package bridge

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// PinEndpoint ties an endpoint's addresses to its port where no frame can
// move them: a sticky forwarding entry, so the bridge delivers frames for
// mac only to port even after another port sent from mac (a port the daemon
// has not taken over yet can send anything), and a permanent neighbour entry
// on the bridge, so the host sends to ip only at mac whatever ARP says.
func (m *Manager) PinEndpoint(bridgeIndex, port int, ip netip.Addr, mac net.HardwareAddr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.h.NeighSet(fdbEntry(port, mac)); err != nil {
		return &Error{Op: "pin forwarding entry", Err: fmt.Errorf("%s on ifindex %d: %w", mac, port, err)}
	}
	if err := m.h.NeighSet(neighEntry(bridgeIndex, ip, mac)); err != nil {
		return &Error{Op: "pin neighbour entry", Err: fmt.Errorf("%s at %s: %w", ip, mac, err)}
	}
	return nil
}

// UnpinEndpoint removes what PinEndpoint added; entries already gone (the
// port was deleted) are not an error.
func (m *Manager) UnpinEndpoint(bridgeIndex, port int, ip netip.Addr, mac net.HardwareAddr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, n := range []*netlink.Neigh{fdbEntry(port, mac), neighEntry(bridgeIndex, ip, mac)} {
		if err := m.h.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return &Error{Op: "unpin endpoint", Err: err}
	}
	return nil
}

func fdbEntry(port int, mac net.HardwareAddr) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: port, Family: unix.AF_BRIDGE, State: netlink.NUD_NOARP,
		Flags: netlink.NTF_MASTER | netlink.NTF_STICKY, HardwareAddr: mac}
}

func neighEntry(bridgeIndex int, ip netip.Addr, mac net.HardwareAddr) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: bridgeIndex, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: ip.AsSlice(), HardwareAddr: mac}
}
