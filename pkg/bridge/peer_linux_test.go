package bridge

import (
	"errors"
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestPeerPort ties the bridge side of a veth to the MAC of its other end
// in another namespace, as Docker leaves a container's interface, and
// refuses what only looks like it.
func TestPeerPort(t *testing.T) {
	host, container, other := newTestNS(t), newTestNS(t), newTestNS(t)
	m := newTestManager(t, host.h)
	idx, _, err := m.Ensure(testBridge, testGateway)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	mac := net.HardwareAddr{0x02, 0x42, 0x0a, 0xc8, 0x00, 0x07}
	port := addVeth(t, host, "octv0", "octp0", container)
	enslave(t, host.h, port, idx)
	setMAC(t, container.h, "octp0", mac)
	// A second container whose port's interface carries another MAC, and
	// in it a veth pair of its own with the same MAC: its peer is no port
	// of ours, whatever ifindex it has.
	enslave(t, host.h, addVeth(t, host, "octv1", "octp1", other), idx)
	addVeth(t, other, "octq0", "octq1", nil)
	setMAC(t, other.h, "octq0", mac)

	got, err := m.PeerPort(nsPath(container), mac)
	if err != nil || got != port.Attrs().Index {
		t.Fatalf("PeerPort(container, %s) = %d, %v; want %d (octv0)", mac, got, err, port.Attrs().Index)
	}
	if got, err := m.PeerPort(nsPath(other), mac); err == nil {
		t.Errorf("PeerPort(other, %s) = %d; want an error (only a veth inside that namespace carries the MAC)", mac, got)
	}
	wrong := net.HardwareAddr{0x02, 0x42, 0x0a, 0xc8, 0x00, 0x08}
	if got, err := m.PeerPort(nsPath(container), wrong); !errors.Is(err, ErrNoPeer) {
		t.Errorf("PeerPort(container, %s) = %d, %v; want ErrNoPeer", wrong, got, err)
	}
	if _, err := m.PeerPort("/nonexistent/netns", mac); err == nil {
		t.Error("PeerPort of a missing namespace succeeded")
	}
}

func nsPath(n *testNS) string { return "/var/run/netns/" + n.name }

func setMAC(t *testing.T, h *netlink.Handle, name string, mac net.HardwareAddr) {
	t.Helper()
	if err := h.LinkSetHardwareAddr(mustLink(t, h, name), mac); err != nil {
		t.Fatalf("set MAC of %s: %v", name, err)
	}
}

// TestPortPeer reads the far end's MAC of a port whose far end is in a
// namespace of the directory, and nothing while it is still here.
func TestPortPeer(t *testing.T) {
	host, container := newTestNS(t), newTestNS(t)
	m := newTestManager(t, host.h)
	mac := net.HardwareAddr{0x02, 0x42, 0x0a, 0xc8, 0x00, 0x09}
	moved := addVeth(t, host, "octv0", "octp0", container)
	setMAC(t, container.h, "octp0", mac)
	here := addVeth(t, host, "octv1", "octp1", nil)
	got, ok, err := m.PortPeer(moved.Attrs().Index, "/var/run/netns")
	if err != nil || !ok || got.String() != mac.String() {
		t.Fatalf("PortPeer(moved) = %s, %v, %v; want %s", got, ok, err, mac)
	}
	if got, ok, err := m.PortPeer(here.Attrs().Index, "/var/run/netns"); err != nil || ok {
		t.Errorf("PortPeer(far end still here) = %s, %v, %v; want not yet", got, ok, err)
	}
	if _, ok, _ := m.PortPeer(moved.Attrs().Index, t.TempDir()); ok {
		t.Error("PortPeer found the far end in an empty directory")
	}
}
