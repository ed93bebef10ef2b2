//go:build linux

package bridge

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Status is what `GET /api/v1/bridge` reports, read fresh from the kernel on
// every call (S001-FR-011) so it never disagrees with `ip link`.
type Status struct {
	Name   string
	Exists bool
	// Up is the administrative UP flag: a bridge without ports is UP but has
	// no carrier, and operators mean the former.
	Up bool
	// Index is the ifindex, 0 when the bridge does not exist.
	Index int
}

// Port is a link enslaved to a bridge, as the datapath needs it to key its
// per-port state.
type Port struct {
	Index        int
	Name         string
	Bridge       int
	HardwareAddr net.HardwareAddr
}

// Manager creates, inspects and removes Outcall bridges. Handlers and the
// daemon's main task share one Manager; its mutex serialises operations so a
// status read never sees a half-made bridge (S001-FR-017).
type Manager struct {
	mu  sync.Mutex
	h   *netlink.Handle
	log *slog.Logger
}

// NewManager returns a Manager working through h, so it acts in whichever
// network namespace h was opened in (tests and the lab use their own). A nil
// h means the calling thread's namespace; a nil log means slog.Default().
func NewManager(h *netlink.Handle, log *slog.Logger) *Manager {
	if h == nil {
		h = &netlink.Handle{}
	}
	if log == nil {
		log = slog.Default()
	}
	return &Manager{h: h, log: log.With("component", "bridge")}
}

// Ensure creates the bridge or attaches to an existing one (S001-FR-002),
// sets it UP and adds the gateway address if missing; calling it again is
// harmless. A link of that name that is not a bridge is refused before
// anything changes, since it belongs to someone else.
func (m *Manager) Ensure(name string, gateway netip.Prefix) (ifindex int, created bool, err error) {
	if err := ValidateName(name); err != nil {
		return 0, false, err
	}
	if !gateway.IsValid() || gateway.Addr().Is4In6() {
		return 0, false, fmt.Errorf("invalid gateway address %q for bridge %q", gateway.String(), name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	br, created, err := m.createOrAttach(name)
	if err != nil {
		return 0, false, err
	}
	// A bridge whose address was never set takes the lowest address of
	// its ports, so the gateway's MAC would change as containers come and
	// go; setting it (to what it is) pins it.
	if err := m.h.LinkSetHardwareAddr(br, br.HardwareAddr); err != nil {
		return 0, false, &Error{Op: "pin bridge address", Err: err}
	}
	if err := m.h.LinkSetUp(br); err != nil {
		return 0, false, &Error{Op: "set bridge up", Err: err}
	}
	m.log.Info("bridge up", "bridge", name, "ifindex", br.Index)
	if err := m.ensureAddr(br, gateway); err != nil {
		return 0, false, err
	}
	return br.Index, created, nil
}

func (m *Manager) createOrAttach(name string) (*netlink.Bridge, bool, error) {
	link, err := m.h.LinkByName(name)
	if err == nil {
		br, err := m.attach(name, link)
		return br, false, err
	}
	if !isNotFound(err) {
		return nil, false, &Error{Op: "attach bridge", Err: err}
	}
	la := netlink.NewLinkAttrs() // TxQLen -1: the kernel picks the queue length
	la.Name = name
	err = m.h.LinkAdd(&netlink.Bridge{LinkAttrs: la})
	if errors.Is(err, unix.EEXIST) {
		// Another process made it between our lookup and create: attach.
		if link, err = m.h.LinkByName(name); err != nil {
			return nil, false, &Error{Op: "attach bridge", Err: err}
		}
		br, err := m.attach(name, link)
		return br, false, err
	}
	if err != nil {
		return nil, false, &Error{Op: "create bridge", Err: err}
	}
	br, err := m.lookup(name, "create bridge")
	if err != nil {
		return nil, false, err
	}
	m.log.Info("bridge created", "bridge", name, "ifindex", br.Index)
	return br, true, nil
}

func (m *Manager) attach(name string, link netlink.Link) (*netlink.Bridge, error) {
	br, ok := link.(*netlink.Bridge)
	if !ok {
		return nil, &Error{Op: "attach bridge", Err: notBridgeError{name, link.Type()}}
	}
	m.log.Info("bridge attached", "bridge", name, "ifindex", br.Index)
	return br, nil
}

func (m *Manager) ensureAddr(br *netlink.Bridge, gateway netip.Prefix) error {
	want := ipNet(gateway)
	addrs, err := m.h.AddrList(br, netlink.FAMILY_ALL)
	if err != nil {
		return &Error{Op: "add gateway address", Err: err}
	}
	for _, a := range addrs {
		if a.IPNet != nil && a.IP.Equal(want.IP) && sameMask(a.Mask, want.Mask) {
			return nil
		}
	}
	if err := m.h.AddrAdd(br, &netlink.Addr{IPNet: want}); err != nil && !errors.Is(err, unix.EEXIST) {
		return &Error{Op: "add gateway address", Err: err}
	}
	m.log.Info("bridge gateway address added", "bridge", br.Name, "address", gateway.String())
	return nil
}

// Status reads the bridge from the kernel; an absent bridge is a normal
// answer, not an error.
func (m *Manager) Status(name string) (Status, error) {
	if err := ValidateName(name); err != nil {
		return Status{Name: name}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{Name: name}
	link, err := m.h.LinkByName(name)
	if isNotFound(err) {
		return st, nil
	}
	if err != nil {
		return st, &Error{Op: "inspect bridge", Err: err}
	}
	br, ok := link.(*netlink.Bridge)
	if !ok {
		return st, &Error{Op: "inspect bridge", Err: notBridgeError{name, link.Type()}}
	}
	st.Exists = true
	st.Up = br.Flags&net.FlagUp != 0
	st.Index = br.Index
	return st, nil
}

// Delete sets the bridge down and deletes it (S001-FR-009 b, c). Tearing
// down what is already gone succeeds (S001-EC-005); a link of that name that
// is not a bridge is left alone and reported.
func (m *Manager) Delete(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	link, err := m.h.LinkByName(name)
	if isNotFound(err) {
		m.log.Info("bridge teardown: bridge absent, nothing to delete", "bridge", name)
		return nil
	}
	if err != nil {
		return &Error{Op: "delete bridge", Err: err}
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return &Error{Op: "delete bridge", Err: notBridgeError{name, link.Type()}}
	}
	if err := m.h.LinkSetDown(link); err != nil {
		return &Error{Op: "set bridge down", Err: err}
	}
	if err := m.h.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return &Error{Op: "delete bridge", Err: err}
	}
	m.log.Info("bridge teardown: bridge deleted", "bridge", name, "ifindex", link.Attrs().Index)
	return nil
}

// HardwareAddr returns the MAC address of the link with this ifindex (the
// gateway's, for a bridge that Ensure made).
func (m *Manager) HardwareAddr(ifindex int) (net.HardwareAddr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, err := m.h.LinkByIndex(ifindex)
	if err != nil {
		return nil, &Error{Op: "read bridge address", Err: err}
	}
	if len(l.Attrs().HardwareAddr) != 6 {
		return nil, &Error{Op: "read bridge address", Err: fmt.Errorf("link %d has no Ethernet address", ifindex)}
	}
	return l.Attrs().HardwareAddr, nil
}

// Ports lists the links enslaved to the bridge with this ifindex, so the
// daemon can take over ports that joined while it was not watching.
func (m *Manager) Ports(bridgeIndex int) ([]Port, error) {
	if bridgeIndex <= 0 {
		return nil, &Error{Op: "list ports", Err: fmt.Errorf("invalid bridge ifindex %d", bridgeIndex)}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	links, err := m.h.LinkList()
	if err != nil {
		return nil, &Error{Op: "list ports", Err: err}
	}
	var ports []Port
	for _, l := range links {
		if l.Attrs().MasterIndex == bridgeIndex {
			ports = append(ports, portOf(l.Attrs(), bridgeIndex))
		}
	}
	return ports, nil
}

func (m *Manager) lookup(name, op string) (*netlink.Bridge, error) {
	link, err := m.h.LinkByName(name)
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	br, ok := link.(*netlink.Bridge)
	if !ok {
		return nil, &Error{Op: op, Err: notBridgeError{name, link.Type()}}
	}
	return br, nil
}

func portOf(a *netlink.LinkAttrs, bridge int) Port {
	return Port{Index: a.Index, Name: a.Name, Bridge: bridge, HardwareAddr: a.HardwareAddr}
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

func ipNet(p netip.Prefix) *net.IPNet {
	addr := p.Addr()
	return &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(p.Bits(), addr.BitLen())}
}

func sameMask(a, b net.IPMask) bool {
	ao, ab := a.Size()
	bo, bb := b.Size()
	return ao == bo && ab == bb
}
