package containertest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"outcall.dev/outcall/pkg/apikit"
	outcallcontainer "outcall.dev/outcall/pkg/container"
)

// Networks is a fake of the network controller's side of the manager
// (container.Networks): Outcall networks, and identities reserved, bound
// to a port and released. It records every call in order and checks what
// the controller would: an address inside the network and free, a MAC not
// taken, a bind only of a reserved identity and only to one container.
type Networks struct {
	mu     sync.Mutex
	nets   map[string]outcallcontainer.NetworkInfo
	ids    map[string]*outcallcontainer.Reservation // by container name
	next   uint32
	calls  []string
	fail   map[string]error
	sboxes map[string]string // name → sandbox key of the last bind
}

var _ outcallcontainer.Networks = (*Networks)(nil)

// NewNetworks returns a fake controller holding nets.
func NewNetworks(nets ...outcallcontainer.NetworkInfo) *Networks {
	n := &Networks{nets: map[string]outcallcontainer.NetworkInfo{}, ids: map[string]*outcallcontainer.Reservation{},
		next: 100, fail: map[string]error{}, sboxes: map[string]string{}}
	for _, i := range nets {
		n.nets[i.Name] = i
	}
	return n
}

// Default is outcall-default on outcall0, 10.200.0.0/24, the proxy on
// 10.200.0.1:8080.
func Default() outcallcontainer.NetworkInfo {
	return outcallcontainer.NetworkInfo{Name: "outcall-default", Bridge: "outcall0",
		Subnet: netip.MustParsePrefix("10.200.0.0/24"), Gateway: netip.MustParseAddr("10.200.0.1"),
		Proxy: netip.MustParseAddrPort("10.200.0.1:8080")}
}

// AddNetwork adds (or replaces) an Outcall network.
func (n *Networks) AddNetwork(i outcallcontainer.NetworkInfo) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nets[i.Name] = i
}

// Fail makes every later call of method ("Reserve", "Bind", "Release",
// "Containers") return err; nil clears it.
func (n *Networks) Fail(method string, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err == nil {
		delete(n.fail, method)
		return
	}
	n.fail[method] = err
}

// Calls returns the calls so far, "Method name".
func (n *Networks) Calls() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.calls)
}

// Identity returns the identity held under a container name.
func (n *Networks) Identity(name string) (outcallcontainer.Reservation, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.ids[name]
	if !ok {
		return outcallcontainer.Reservation{}, false
	}
	return *r, true
}

// SandboxKey returns the network namespace of the last bind of name.
func (n *Networks) SandboxKey(name string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sboxes[name]
}

// Put stores an identity as a controller restored from its state would
// hold it (no call is recorded).
func (n *Networks) Put(r outcallcontainer.Reservation) {
	n.mu.Lock()
	defer n.mu.Unlock()
	rr := r
	rr.MAC = slices.Clone(r.MAC)
	if rr.Identity == 0 {
		n.next++
		rr.Identity = n.next
	}
	n.ids[r.Name] = &rr
}

func (n *Networks) enter(method, arg string) error {
	n.calls = append(n.calls, method+" "+arg)
	return n.fail[method]
}

// Network implements container.Networks.
func (n *Networks) Network(name string) (outcallcontainer.NetworkInfo, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	i, ok := n.nets[name]
	return i, ok
}

// Networks implements container.Networks, sorted by name.
func (n *Networks) Networks() []outcallcontainer.NetworkInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]outcallcontainer.NetworkInfo, 0, len(n.nets))
	for _, i := range n.nets {
		out = append(out, i)
	}
	slices.SortFunc(out, func(a, b outcallcontainer.NetworkInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// MACFor is the MAC the fake gives an address: 02:42 and the address's
// bytes, as Docker does.
func MACFor(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}

// Reserve implements container.Networks.
func (n *Networks) Reserve(_ context.Context, req outcallcontainer.Reservation) (outcallcontainer.Reservation, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.enter("Reserve", req.Name); err != nil {
		return outcallcontainer.Reservation{}, err
	}
	info, ok := n.nets[req.Network]
	if !ok {
		return outcallcontainer.Reservation{}, apikit.Errorf(apikit.ErrNotFound, "network %q does not exist", req.Network)
	}
	if _, dup := n.ids[req.Name]; dup {
		return outcallcontainer.Reservation{}, apikit.Errorf(apikit.ErrConflict, "identity %q is already registered", req.Name)
	}
	used := map[netip.Addr]bool{info.Gateway: true}
	macs := map[string]bool{}
	for _, r := range n.ids {
		used[r.IPv4] = true
		macs[r.MAC.String()] = true
	}
	ip := req.IPv4
	if ip.IsValid() {
		if !info.Subnet.Contains(ip) || ip == info.Subnet.Addr() {
			return outcallcontainer.Reservation{}, apikit.Errorf(apikit.ErrInvalid, "address %v is not a host address of %s", ip, info.Subnet)
		}
		if used[ip] {
			return outcallcontainer.Reservation{}, apikit.Errorf(apikit.ErrConflict, "address %v is in use", ip)
		}
	} else {
		for a := info.Subnet.Addr().Next(); info.Subnet.Contains(a); a = a.Next() {
			if !used[a] {
				ip = a
				break
			}
		}
		if !ip.IsValid() {
			return outcallcontainer.Reservation{}, apikit.Errorf(apikit.ErrConflict, "network %q is full", req.Network)
		}
	}
	mac := slices.Clone(req.MAC)
	if mac == nil {
		mac = MACFor(ip)
	}
	if macs[mac.String()] {
		return outcallcontainer.Reservation{}, apikit.Errorf(apikit.ErrConflict, "MAC %v is in use", mac)
	}
	n.next++
	r := &outcallcontainer.Reservation{Network: req.Network, Name: req.Name, IPv4: ip, MAC: mac, Identity: n.next}
	n.ids[req.Name] = r
	return *r, nil
}

// Bind implements container.Networks. A sandbox key is required, and an
// identity bound to one container is never bound to another.
func (n *Networks) Bind(_ context.Context, name, containerID, sandboxKey string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.enter("Bind", name); err != nil {
		return err
	}
	r, ok := n.ids[name]
	switch {
	case !ok:
		return apikit.Errorf(apikit.ErrNotFound, "identity %q is not reserved", name)
	case containerID == "" || sandboxKey == "":
		return fmt.Errorf("bind %q: container id and sandbox key are required", name)
	case r.ContainerID != "" && r.ContainerID != containerID:
		return apikit.Errorf(apikit.ErrConflict, "identity %q is bound to another container", name)
	}
	r.ContainerID, r.Bound = containerID, true
	n.sboxes[name] = sandboxKey
	return nil
}

// Release implements container.Networks.
func (n *Networks) Release(_ context.Context, name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.enter("Release", name); err != nil {
		return err
	}
	delete(n.ids, name)
	delete(n.sboxes, name)
	return nil
}

// Containers implements container.Networks, sorted by name.
func (n *Networks) Containers(context.Context) ([]outcallcontainer.Reservation, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.fail["Containers"]; err != nil {
		return nil, err
	}
	out := make([]outcallcontainer.Reservation, 0, len(n.ids))
	for _, r := range n.ids {
		rr := *r
		rr.MAC = slices.Clone(r.MAC)
		out = append(out, rr)
	}
	slices.SortFunc(out, func(a, b outcallcontainer.Reservation) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
