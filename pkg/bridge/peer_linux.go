package bridge

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// PeerPort returns the ifindex, in the Manager's namespace, of the
// bridge-side end of the veth whose other end is in the network namespace
// at nsPath with hardware address mac. It is how a container that Docker
// started is tied to its port: Docker names the container's namespace (its
// sandbox key), and the MAC is the one Outcall fixed when it created the
// container. Both ends are checked to point at each other, across exactly
// these two namespaces, so an interface that merely carries the MAC, or
// an ifindex that happens to exist on both sides, never matches.
func (m *Manager) PeerPort(nsPath string, mac net.HardwareAddr) (int, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return 0, &Error{Op: "open namespace " + nsPath, Err: err}
	}
	defer ns.Close()
	ch, err := netlink.NewHandleAt(ns)
	if err != nil {
		return 0, &Error{Op: "netlink in namespace " + nsPath, Err: err}
	}
	defer ch.Close()
	links, err := ch.LinkList()
	if err != nil {
		return 0, &Error{Op: "list links in " + nsPath, Err: err}
	}
	// The id our namespace has for the container's: the host end must
	// name exactly that namespace as its peer's.
	nsid, err := m.h.GetNetNsIdByFd(int(ns))
	if err != nil {
		return 0, &Error{Op: "namespace id of " + nsPath, Err: err}
	}
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "veth" || !bytes.Equal(a.HardwareAddr, mac) {
			continue
		}
		host, err := m.h.LinkByIndex(a.ParentIndex)
		if err != nil {
			return 0, &Error{Op: fmt.Sprintf("peer %d of %s in %s", a.ParentIndex, a.Name, nsPath), Err: err}
		}
		ha := host.Attrs()
		if host.Type() != "veth" || ha.ParentIndex != a.Index || ha.NetNsID != nsid {
			return 0, &Error{Op: "peer of " + a.Name + " in " + nsPath, Err: fmt.Errorf("interface %d (%s) in this namespace is not its veth peer", a.ParentIndex, ha.Name)}
		}
		return ha.Index, nil
	}
	return 0, &Error{Op: "find " + mac.String() + " in " + nsPath, Err: ErrNoPeer}
}

// PortPeer returns the hardware address of the far end of the veth port
// ifindex once that end is in one of the network namespaces pinned under
// nsDir (Docker's sandboxes, /var/run/docker/netns), and whether it is. A
// container's port joins the bridge before Docker moves and addresses its
// far end, so a caller asks again until it is there. The far end must name
// the port as its peer, across exactly these two namespaces.
func (m *Manager) PortPeer(ifindex int, nsDir string) (net.HardwareAddr, bool, error) {
	l, err := m.h.LinkByIndex(ifindex)
	if err != nil {
		return nil, false, &Error{Op: fmt.Sprintf("port %d", ifindex), Err: err}
	}
	a := l.Attrs()
	if l.Type() != "veth" || a.NetNsID < 0 {
		return nil, false, nil // not a veth, or its far end is still here
	}
	entries, err := os.ReadDir(nsDir)
	if err != nil {
		return nil, false, &Error{Op: "list namespaces in " + nsDir, Err: err}
	}
	for _, ent := range entries {
		mac, ok := m.peerIn(filepath.Join(nsDir, ent.Name()), a)
		if ok {
			return mac, true, nil
		}
	}
	return nil, false, nil
}

// peerIn returns the address of port a's far end if it is in the
// namespace at path.
func (m *Manager) peerIn(path string, a *netlink.LinkAttrs) (net.HardwareAddr, bool) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, false
	}
	defer ns.Close()
	if id, err := m.h.GetNetNsIdByFd(int(ns)); err != nil || id != a.NetNsID {
		return nil, false
	}
	ch, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, false
	}
	defer ch.Close()
	peer, err := ch.LinkByIndex(a.ParentIndex)
	if err != nil || peer.Type() != "veth" || peer.Attrs().ParentIndex != a.Index {
		return nil, false
	}
	return peer.Attrs().HardwareAddr, true
}
