// Package networktest provides fakes of the kernel parts a network.Controller
// drives (the datapath, the nftables floor, the bridges), so the
// Controller's logic and the daemon's startup and shutdown order can be
// tested without root. Each fake records what it was asked in a shared
// Calls log, in order: the orderings the Controller promises are asserted
// on it.
package networktest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"outcall.dev/outcall/pkg/bridge"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/nft"
	"outcall.dev/outcall/pkg/ruletable"
)

// Calls is the ordered record of calls, as "part.Method arg".
type Calls struct {
	mu  sync.Mutex
	log []string
}

// Add records a call.
func (c *Calls) Add(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, fmt.Sprintf(format, args...))
}

// Log returns the calls so far.
func (c *Calls) Log() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.log)
}

// Reset forgets the calls so far.
func (c *Calls) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = nil
}

// Index returns the position of the first call starting with prefix, or -1.
func (c *Calls) Index(prefix string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.IndexFunc(c.log, func(l string) bool { return strings.HasPrefix(l, prefix) })
}

// InOrder reports whether calls starting with each prefix happened in this
// order, each after the one matched for the prefix before it, and if not,
// which one is missing.
func (c *Calls) InOrder(prefixes ...string) error {
	log := c.Log()
	at := 0
	for _, p := range prefixes {
		i := slices.IndexFunc(log[at:], func(l string) bool { return strings.HasPrefix(l, p) })
		if i < 0 {
			return fmt.Errorf("no %q after call %d; calls: %v", p, at, log)
		}
		at += i + 1
	}
	return nil
}

// Datapath is a fake *datapath.Datapath.
type Datapath struct {
	c         *Calls
	mu        sync.Mutex
	GrantMap  map[datapath.GrantKey]datapath.Grant
	Endpoints map[int]datapath.Endpoint
	Attached  map[int]bool
	Services  []datapath.Service
	Fences    []datapath.Fence
	// PortNetworks are the ports' networks (SetPortNetwork), by ifindex.
	PortNetworks map[int]datapath.PortNetwork
	// EndpointAddrs are the addresses last held for endpoints
	// (SetEndpointAddrs).
	EndpointAddrs []datapath.EndpointAddrs
	// FailAt names a method that fails.
	FailAt string
	// OnClearRules, if set, runs when ClearRules is called.
	OnClearRules func()
}

// NewDatapath returns an empty fake datapath recording into c.
func NewDatapath(c *Calls) *Datapath {
	return &Datapath{c: c, GrantMap: map[datapath.GrantKey]datapath.Grant{}, Endpoints: map[int]datapath.Endpoint{}, Attached: map[int]bool{},
		PortNetworks: map[int]datapath.PortNetwork{}}
}

func (f *Datapath) fail(method string) error {
	if f.FailAt == method {
		return fmt.Errorf("fake %s failed", method)
	}
	return nil
}

// PutGrant implements network.Datapath.
func (f *Datapath) PutGrant(g datapath.Grant) error {
	f.c.Add("dp.PutGrant %v", g.Dst)
	if err := f.fail("PutGrant"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.GrantMap[g.GrantKey] = g
	return nil
}

// DeleteGrant implements network.Datapath.
func (f *Datapath) DeleteGrant(k datapath.GrantKey) (bool, error) {
	f.c.Add("dp.DeleteGrant %v", k.Dst)
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.GrantMap[k]
	delete(f.GrantMap, k)
	return ok, nil
}

// EndGrantFlows implements network.Datapath.
func (f *Datapath) EndGrantFlows(ks []datapath.GrantKey) (int, error) {
	f.c.Add("dp.EndGrantFlows %d", len(ks))
	return 0, nil
}

// Grants implements network.Datapath.
func (f *Datapath) Grants() ([]datapath.Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []datapath.Grant{}
	for _, g := range f.GrantMap {
		out = append(out, g)
	}
	return out, nil
}

// Attach implements network.Datapath.
func (f *Datapath) Attach(i int) error {
	f.c.Add("dp.Attach %d", i)
	if err := f.fail("Attach"); err != nil {
		return err
	}
	f.Attached[i] = true
	return nil
}

// Detach implements network.Datapath.
func (f *Datapath) Detach(i int) error {
	f.c.Add("dp.Detach %d", i)
	delete(f.Attached, i)
	delete(f.PortNetworks, i)
	return nil
}

// SetPortNetwork implements network.Datapath.
func (f *Datapath) SetPortNetwork(i int, pn datapath.PortNetwork) error {
	f.c.Add("dp.SetPortNetwork %d %s", i, pn.Gateway)
	if err := f.fail("SetPortNetwork"); err != nil {
		return err
	}
	f.PortNetworks[i] = pn
	return nil
}

// SetEndpointAddrs implements network.Datapath.
func (f *Datapath) SetEndpointAddrs(a []datapath.EndpointAddrs) error {
	f.c.Add("dp.SetEndpointAddrs %d", len(a))
	if err := f.fail("SetEndpointAddrs"); err != nil {
		return err
	}
	f.EndpointAddrs = slices.Clone(a)
	return nil
}

// AttachedPorts implements network.Datapath.
func (f *Datapath) AttachedPorts() []int {
	var out []int
	for i := range f.Attached {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

// LinkAlive implements network.Datapath.
func (f *Datapath) LinkAlive(i int) bool { return f.Attached[i] }

// Reattach implements network.Datapath.
func (f *Datapath) Reattach(i int) error {
	f.c.Add("dp.Reattach %d", i)
	if err := f.fail("Reattach"); err != nil {
		return err
	}
	f.Attached[i] = true
	return nil
}

// SetEndpoint implements network.Datapath.
func (f *Datapath) SetEndpoint(i int, ep datapath.Endpoint) error {
	f.c.Add("dp.SetEndpoint %d", i)
	if err := f.fail("SetEndpoint"); err != nil {
		return err
	}
	f.Endpoints[i] = ep
	return nil
}

// DeleteEndpoint implements network.Datapath.
func (f *Datapath) DeleteEndpoint(i int) error {
	f.c.Add("dp.DeleteEndpoint %d", i)
	delete(f.Endpoints, i)
	return nil
}

// SetServices implements network.Datapath.
func (f *Datapath) SetServices(s []datapath.Service) error {
	f.c.Add("dp.SetServices %d", len(s))
	f.Services = slices.Clone(s)
	return nil
}

// SetFences implements network.Datapath.
func (f *Datapath) SetFences(fs []datapath.Fence) error {
	f.c.Add("dp.SetFences %d", len(fs))
	f.Fences = slices.Clone(fs)
	return nil
}

// EndFlows implements network.Datapath.
func (f *Datapath) EndFlows(m datapath.FlowMatch) (int, error) {
	f.c.Add("dp.EndFlows %d", m.Identity)
	return 0, nil
}

// Counters implements network.Datapath.
func (f *Datapath) Counters() ([]datapath.Counter, error) { return nil, nil }

// RuleHits implements network.Datapath.
func (f *Datapath) RuleHits() ([]datapath.RuleHit, error) { return nil, nil }

// InstallRules implements network.Datapath.
func (f *Datapath) InstallRules(*ruletable.Tables) error { f.c.Add("dp.InstallRules"); return nil }

// ClearRules implements network.Datapath.
func (f *Datapath) ClearRules() error {
	f.c.Add("dp.ClearRules")
	if f.OnClearRules != nil {
		f.OnClearRules()
	}
	return nil
}

// SetRuleAgents implements network.Datapath.
func (f *Datapath) SetRuleAgents(map[uint32]uint32) error { return nil }

// ReadDropEvents implements network.Datapath: no drops, until ctx is done.
func (f *Datapath) ReadDropEvents(ctx context.Context, _ func(datapath.DropEvent)) error {
	<-ctx.Done()
	return nil
}

// Unpin implements network.Datapath.
func (f *Datapath) Unpin() error { f.c.Add("dp.Unpin"); return nil }

// Close implements network.Datapath.
func (f *Datapath) Close() error { f.c.Add("dp.Close"); return nil }

// Floor is a fake *nft.Floor.
type Floor struct {
	c *Calls
	// Applied are the configurations applied, in order.
	Applied []nft.Config
	Ports   map[int]bool
	// Services are the services last set (SetServices).
	Services []nft.Service
}

// NewFloor returns a fake floor recording into c.
func NewFloor(c *Calls) *Floor { return &Floor{c: c, Ports: map[int]bool{}} }

// Apply implements network.Floor.
func (f *Floor) Apply(cfg nft.Config) error {
	f.c.Add("floor.Apply %d %s", len(cfg.Ports), strings.Join(cfg.Bridges, ","))
	f.Applied = append(f.Applied, cfg)
	f.Ports = map[int]bool{}
	for _, p := range cfg.Ports {
		f.Ports[p] = true
	}
	return nil
}

// Last is the configuration applied last.
func (f *Floor) Last() nft.Config {
	if len(f.Applied) == 0 {
		return nft.Config{}
	}
	return f.Applied[len(f.Applied)-1]
}

// AddPort implements network.Floor.
func (f *Floor) AddPort(i int) error {
	f.c.Add("floor.AddPort %d", i)
	f.Ports[i] = true
	return nil
}

// RemovePort implements network.Floor.
func (f *Floor) RemovePort(i int) error {
	f.c.Add("floor.RemovePort %d", i)
	delete(f.Ports, i)
	return nil
}

// SetServices implements network.Floor.
func (f *Floor) SetServices(s []nft.Service) error {
	f.c.Add("floor.SetServices %d", len(s))
	f.Services = slices.Clone(s)
	return nil
}

// Delete implements network.Floor.
func (f *Floor) Delete() (bool, error) { f.c.Add("floor.Delete"); return true, nil }

// Active implements network.Floor.
func (f *Floor) Active() (bool, error) { return true, nil }

// Intact implements network.Floor.
func (f *Floor) Intact() bool { return true }

// Counters implements network.Floor.
func (f *Floor) Counters() (map[string]uint64, error) { return map[string]uint64{}, nil }

// Bridge is one fake bridge: its ifindex, MAC and ports.
type Bridge struct {
	Index  int
	MAC    net.HardwareAddr
	Ports  []bridge.Port
	Exists bool
}

// Bridges is a fake *bridge.Manager over named bridges. A bridge that is
// not in Bridges when Ensure is called gets the next free ifindex from 100.
type Bridges struct {
	c       *Calls
	Bridges map[string]*Bridge
	// FailEnsure names a bridge whose Ensure creates it and then fails.
	FailEnsure string
	// Peers maps a namespace path and a MAC ("path mac") to the port
	// PeerPort finds.
	Peers map[string]int
	// FarEnds are the MACs PortPeer finds, by port.
	FarEnds map[int]net.HardwareAddr
	next    int
}

// NewBridges returns fake bridges recording into c.
func NewBridges(c *Calls) *Bridges {
	return &Bridges{c: c, Bridges: map[string]*Bridge{}, Peers: map[string]int{}, FarEnds: map[int]net.HardwareAddr{}, next: 100}
}

func (f *Bridges) byIndex(i int) *Bridge {
	for _, b := range f.Bridges {
		if b.Index == i && b.Exists {
			return b
		}
	}
	return &Bridge{}
}

// Ensure implements network.Bridges.
func (f *Bridges) Ensure(name string, _ netip.Prefix) (int, bool, error) {
	f.c.Add("bridges.Ensure %s", name)
	b, ok := f.Bridges[name]
	if !ok {
		b = &Bridge{Index: f.next, MAC: net.HardwareAddr{0x02, 0xbb, 0, 0, 0, byte(f.next)}}
		f.next++
		f.Bridges[name] = b
	}
	created := !b.Exists
	b.Exists = true
	if name == f.FailEnsure {
		return 0, false, fmt.Errorf("fake Ensure %s failed", name)
	}
	return b.Index, created, nil
}

// Status implements network.Bridges.
func (f *Bridges) Status(name string) (bridge.Status, error) {
	b, ok := f.Bridges[name]
	if !ok || !b.Exists {
		return bridge.Status{Name: name}, nil
	}
	return bridge.Status{Name: name, Exists: true, Up: true, Index: b.Index}, nil
}

// Ports implements network.Bridges.
func (f *Bridges) Ports(i int) ([]bridge.Port, error) { return slices.Clone(f.byIndex(i).Ports), nil }

// HardwareAddr implements network.Bridges.
func (f *Bridges) HardwareAddr(i int) (net.HardwareAddr, error) { return f.byIndex(i).MAC, nil }

// Delete implements network.Bridges.
func (f *Bridges) Delete(name string) error {
	f.c.Add("bridges.Delete %s", name)
	if b, ok := f.Bridges[name]; ok {
		b.Exists = false
	}
	return nil
}

// DeletePorts implements network.Bridges.
func (f *Bridges) DeletePorts(i int, _ []bridge.Port) error {
	f.c.Add("bridges.DeletePorts")
	f.byIndex(i).Ports = nil
	return nil
}

// PinEndpoint implements network.Bridges.
func (f *Bridges) PinEndpoint(_, port int, _ netip.Addr, _ net.HardwareAddr) error {
	f.c.Add("bridges.PinEndpoint %d", port)
	return nil
}

// UnpinEndpoint implements network.Bridges.
func (f *Bridges) UnpinEndpoint(_, port int, _ netip.Addr, _ net.HardwareAddr) error {
	f.c.Add("bridges.UnpinEndpoint %d", port)
	return nil
}

// PeerPort implements network.Bridges from Peers.
func (f *Bridges) PeerPort(nsPath string, mac net.HardwareAddr) (int, error) {
	f.c.Add("bridges.PeerPort %s", nsPath)
	if i, ok := f.Peers[nsPath+" "+mac.String()]; ok {
		return i, nil
	}
	return 0, fmt.Errorf("fake PeerPort: no veth with %s in %s", mac, nsPath)
}

// PortPeer implements network.Bridges from FarEnds.
func (f *Bridges) PortPeer(ifindex int, _ string) (net.HardwareAddr, bool, error) {
	mac, ok := f.FarEnds[ifindex]
	return mac, ok, nil
}
