//go:build linux

package bridge

import (
	"testing"
)

// TestDeletePorts: the ports of the bridge are deleted with their peers;
// a link that is not a port of the bridge is left alone even when listed.
func TestDeletePorts(t *testing.T) {
	n := newTestNS(t)
	m := newTestManager(t, n.h)
	idx, _, err := m.Ensure(testBridge, testGateway)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	for _, name := range []string{"octv0", "octv2"} {
		enslave(t, n.h, addVeth(t, n, name, name+"p", nil), idx)
	}
	other := addVeth(t, n, "octv4", "octv4p", nil) // not on the bridge
	ports, err := m.Ports(idx)
	if err != nil || len(ports) != 2 {
		t.Fatalf("Ports = %v, %v; want 2", ports, err)
	}
	stray := portOf(other.Attrs(), idx)
	if err := m.DeletePorts(idx, append(ports, stray)); err != nil {
		t.Fatalf("DeletePorts: %v", err)
	}
	if left, err := m.Ports(idx); err != nil || len(left) != 0 {
		t.Errorf("Ports after DeletePorts = %v, %v; want none", left, err)
	}
	for _, name := range []string{"octv0", "octv0p", "octv2", "octv2p"} {
		if _, err := n.h.LinkByName(name); err == nil {
			t.Errorf("link %s still exists", name)
		}
	}
	if _, err := n.h.LinkByName("octv4"); err != nil {
		t.Errorf("a link that is not a port was deleted: %v", err)
	}
	// Deleting what is gone succeeds.
	if err := m.DeletePorts(idx, ports); err != nil {
		t.Errorf("second DeletePorts: %v", err)
	}
}
