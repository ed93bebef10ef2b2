package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/bridge"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/events"
	"outcall.dev/outcall/pkg/nft"
	"outcall.dev/outcall/pkg/ruletable"
)

// calls records, in order, what the fakes were asked to do, as
// "part.Method arg": the ordering the daemon promises is asserted on it.
type calls struct{ log []string }

func (c *calls) add(format string, args ...any) { c.log = append(c.log, fmt.Sprintf(format, args...)) }

// index returns the position of the first call starting with prefix, or -1.
func (c *calls) index(prefix string) int {
	for i, l := range c.log {
		if strings.HasPrefix(l, prefix) {
			return i
		}
	}
	return -1
}

// fakeDatapath stands in for *datapath.Datapath: BPF needs root, the
// daemon's logic does not.
type fakeDatapath struct {
	c         *calls
	grants    map[datapath.GrantKey]datapath.Grant
	endpoints map[int]datapath.Endpoint
	attached  map[int]bool
	failAt    string // a method name that fails
}

func newFakeDatapath(c *calls) *fakeDatapath {
	return &fakeDatapath{c: c, grants: map[datapath.GrantKey]datapath.Grant{}, endpoints: map[int]datapath.Endpoint{}, attached: map[int]bool{}}
}

func (f *fakeDatapath) fail(method string) error {
	if f.failAt == method {
		return fmt.Errorf("fake %s failed", method)
	}
	return nil
}

func (f *fakeDatapath) PutGrant(g datapath.Grant) error {
	f.c.add("dp.PutGrant %v", g.Dst)
	if err := f.fail("PutGrant"); err != nil {
		return err
	}
	f.grants[g.GrantKey] = g
	return nil
}
func (f *fakeDatapath) DeleteGrant(k datapath.GrantKey) (bool, error) {
	f.c.add("dp.DeleteGrant %v", k.Dst)
	_, ok := f.grants[k]
	delete(f.grants, k)
	return ok, nil
}
func (f *fakeDatapath) EndGrantFlows(ks []datapath.GrantKey) (int, error) {
	f.c.add("dp.EndGrantFlows %d", len(ks))
	return 0, nil
}
func (f *fakeDatapath) Grants() ([]datapath.Grant, error) {
	out := []datapath.Grant{}
	for _, g := range f.grants {
		out = append(out, g)
	}
	return out, nil
}
func (f *fakeDatapath) Attach(i int) error {
	f.c.add("dp.Attach %d", i)
	if err := f.fail("Attach"); err != nil {
		return err
	}
	f.attached[i] = true
	return nil
}
func (f *fakeDatapath) Detach(i int) error {
	f.c.add("dp.Detach %d", i)
	delete(f.attached, i)
	return nil
}
func (f *fakeDatapath) AttachedPorts() []int {
	var out []int
	for i := range f.attached {
		out = append(out, i)
	}
	return out
}
func (f *fakeDatapath) LinkAlive(i int) bool { return f.attached[i] }
func (f *fakeDatapath) Reattach(i int) error {
	f.c.add("dp.Reattach %d", i)
	f.attached[i] = true
	return nil
}
func (f *fakeDatapath) SetEndpoint(i int, ep datapath.Endpoint) error {
	f.c.add("dp.SetEndpoint %d", i)
	if err := f.fail("SetEndpoint"); err != nil {
		return err
	}
	f.endpoints[i] = ep
	return nil
}
func (f *fakeDatapath) DeleteEndpoint(i int) error {
	f.c.add("dp.DeleteEndpoint %d", i)
	delete(f.endpoints, i)
	return nil
}
func (f *fakeDatapath) SetServices(s []datapath.Service) error {
	f.c.add("dp.SetServices %d", len(s))
	return nil
}
func (f *fakeDatapath) SetFences(fs []datapath.Fence) error {
	f.c.add("dp.SetFences %d", len(fs))
	return nil
}
func (f *fakeDatapath) EndFlows(m datapath.FlowMatch) (int, error) {
	f.c.add("dp.EndFlows %d", m.Identity)
	return 0, nil
}
func (f *fakeDatapath) Counters() ([]datapath.Counter, error) { return nil, nil }
func (f *fakeDatapath) RuleHits() ([]datapath.RuleHit, error) { return nil, nil }
func (f *fakeDatapath) InstallRules(*ruletable.Tables) error  { f.c.add("dp.InstallRules"); return nil }
func (f *fakeDatapath) ClearRules() error                     { f.c.add("dp.ClearRules"); return nil }
func (f *fakeDatapath) SetRuleAgents(map[uint32]uint32) error { return nil }
func (f *fakeDatapath) ReadDropEvents(ctx context.Context, _ func(datapath.DropEvent)) error {
	<-ctx.Done()
	return nil
}
func (f *fakeDatapath) Unpin() error { f.c.add("dp.Unpin"); return nil }
func (f *fakeDatapath) Close() error { f.c.add("dp.Close"); return nil }

// fakeFloor stands in for *nft.Floor.
type fakeFloor struct {
	c       *calls
	applied []nft.Config
	ports   map[int]bool
}

func (f *fakeFloor) Apply(cfg nft.Config) error {
	f.c.add("floor.Apply %d", len(cfg.Ports))
	f.applied = append(f.applied, cfg)
	f.ports = map[int]bool{}
	for _, p := range cfg.Ports {
		f.ports[p] = true
	}
	return nil
}
func (f *fakeFloor) AddPort(i int) error {
	f.c.add("floor.AddPort %d", i)
	f.ports[i] = true
	return nil
}
func (f *fakeFloor) RemovePort(i int) error {
	f.c.add("floor.RemovePort %d", i)
	delete(f.ports, i)
	return nil
}
func (f *fakeFloor) Delete() (bool, error) { f.c.add("floor.Delete"); return true, nil }
func (f *fakeFloor) Active() (bool, error) { return true, nil }
func (f *fakeFloor) Intact() bool          { return true }
func (f *fakeFloor) Counters() (map[string]uint64, error) {
	return map[string]uint64{}, nil
}

// fakeBridges stands in for *bridge.Manager: one bridge, its ports.
type fakeBridges struct {
	c      *calls
	exists bool
	index  int
	mac    net.HardwareAddr
	ports  []bridge.Port
}

func (f *fakeBridges) Ensure(string, netip.Prefix) (int, bool, error) {
	f.c.add("bridges.Ensure")
	created := !f.exists
	f.exists = true
	return f.index, created, nil
}
func (f *fakeBridges) Status(name string) (bridge.Status, error) {
	return bridge.Status{Name: name, Exists: f.exists, Up: f.exists, Index: f.index}, nil
}
func (f *fakeBridges) Ports(int) ([]bridge.Port, error)           { return f.ports, nil }
func (f *fakeBridges) HardwareAddr(int) (net.HardwareAddr, error) { return f.mac, nil }
func (f *fakeBridges) Delete(string) error                        { f.c.add("bridges.Delete"); f.exists = false; return nil }
func (f *fakeBridges) DeletePorts(int, []bridge.Port) error {
	f.c.add("bridges.DeletePorts")
	f.ports = nil
	return nil
}
func (f *fakeBridges) PinEndpoint(_, port int, _ netip.Addr, _ net.HardwareAddr) error {
	f.c.add("bridges.PinEndpoint %d", port)
	return nil
}
func (f *fakeBridges) UnpinEndpoint(_, port int, _ netip.Addr, _ net.HardwareAddr) error {
	f.c.add("bridges.UnpinEndpoint %d", port)
	return nil
}

// testDaemon is a Daemon over fakes, with a bridge (ifindex 10) holding
// ports 11 and 12, no endpoints yet, and the datapath open.
type testDaemon struct {
	*Daemon
	c  *calls
	dp *fakeDatapath
	fl *fakeFloor
	br *fakeBridges
}

var (
	testBridgeMAC = net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 1}
	testPortMAC   = net.HardwareAddr{0x02, 0xcc, 0, 0, 0, 11}
)

func newTestDaemon(t *testing.T) *testDaemon {
	t.Helper()
	c := &calls{}
	reg, err := endpoint.Open(filepath.Join(t.TempDir(), "endpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	td := &testDaemon{c: c, dp: newFakeDatapath(c), fl: &fakeFloor{c: c, ports: map[int]bool{}},
		br: &fakeBridges{c: c, index: 10, mac: testBridgeMAC, ports: []bridge.Port{
			{Index: 11, Name: "veth-a1", Bridge: 10, HardwareAddr: testPortMAC},
			{Index: 12, Name: "veth-a2", Bridge: 10},
		}}}
	d := &Daemon{
		cfg: Config{Bridge: "outcall0", Gateway: netip.MustParsePrefix("10.200.0.1/24"),
			SubnetBlock: netip.MustParsePrefix("10.200.0.0/16"), DNSPort: 53, ProxyPort: 8080},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), bridges: td.br, floor: td.fl, endpoints: reg,
		ports: map[int]string{}, services: map[datapath.Service]int{}, events: events.New(),
		openDatapath: func(datapath.Options) (datapathOps, error) { c.add("openDatapath"); return td.dp, nil },
		hostAddrs: func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.200.0.1")}, nil
		},
		stopEvents: func() {},
	}
	td.Daemon = d
	return td
}

// open brings the fake bridge up through the daemon's own path.
func (td *testDaemon) open(t *testing.T) {
	t.Helper()
	if err := td.up(); err != nil {
		t.Fatalf("up: %v", err)
	}
	if td.grants == nil {
		t.Fatal("up left no grant manager")
	}
	td.c.log = nil
}
