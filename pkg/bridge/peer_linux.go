package bridge

import (
	"bytes"
	"fmt"
	"net"

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
