package network

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
	"time"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/bridge"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/events"
	"outcall.dev/outcall/pkg/grants"
	"outcall.dev/outcall/pkg/network/networktest"
	"outcall.dev/outcall/pkg/rules"
	"outcall.dev/outcall/pkg/ruletable"
)

func ptr[T any](v T) *T { return &v }

// testController is a Controller over fakes, with the default network's
// bridge outcall0 (ifindex 10) holding ports 11 and 12, no endpoints yet.
type testController struct {
	*Controller
	c  *networktest.Calls
	dp *networktest.Datapath
	fl *networktest.Floor
	br *networktest.Bridges
}

var (
	testBridgeMAC = net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 1}
	testPortMAC   = net.HardwareAddr{0x02, 0xcc, 0, 0, 0, 11}
)

func newTestController(t *testing.T) *testController {
	t.Helper()
	dir := t.TempDir()
	c := &networktest.Calls{}
	td := &testController{c: c, dp: networktest.NewDatapath(c), fl: networktest.NewFloor(c), br: networktest.NewBridges(c)}
	td.br.Bridges["outcall0"] = &networktest.Bridge{Index: 10, MAC: testBridgeMAC, Ports: []bridge.Port{
		{Index: 11, Name: "veth-a1", Bridge: 10, HardwareAddr: testPortMAC},
		{Index: 12, Name: "veth-a2", Bridge: 10},
	}}
	td.Controller = newController(t, dir, td)
	return td
}

// newController builds a Controller over td's fakes with its state in dir.
func newController(t *testing.T, dir string, td *testController) *Controller {
	t.Helper()
	reg, err := endpoint.OpenWithOptions(endpoint.Options{Path: filepath.Join(dir, "endpoints.json"), DefaultNetwork: api.DefaultNetworkName})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := New(Options{
		Default:     Network{Name: api.DefaultNetworkName, Bridge: "outcall0", Gateway: netip.MustParsePrefix("10.200.0.1/24")},
		SubnetBlock: netip.MustParsePrefix("10.200.0.0/16"),
		StatePath:   filepath.Join(dir, "networks.json"),
		OpenDatapath: func(datapath.Options) (Datapath, error) {
			td.c.Add("openDatapath")
			return td.dp, nil
		},
		Floor: td.fl, Bridges: td.br, Endpoints: reg, Events: events.New(),
		HostAddrs: func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.200.0.1")}, nil
		},
		SandboxDir: "/run/docker/netns",
		HostRoutes: func() ([]netip.Prefix, error) {
			return []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("10.200.0.0/24"), netip.MustParsePrefix("10.200.9.0/24")}, nil
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return ctl
}

// open brings the fake bridges up through the Controller's own path.
func (td *testController) open(t *testing.T) {
	t.Helper()
	if err := td.Up(); err != nil {
		t.Fatalf("up: %v", err)
	}
	if td.grants == nil {
		t.Fatal("up left no grant manager")
	}
	td.c.Reset()
}

// TestUpOrder: the floor is in place, naming the bridge's existing ports,
// before anything is attached; programs go on before identities.
func TestUpOrder(t *testing.T) {
	td := newTestController(t)
	td.br.Bridges["outcall0"].Exists = true // a restart: the bridge and its ports are there
	if err := td.Up(); err != nil {
		t.Fatal(err)
	}
	if len(td.fl.Applied) == 0 || len(td.fl.Applied[0].Ports) != 2 {
		t.Fatalf("first floor = %+v, want it to name both existing ports", td.fl.Applied)
	}
	if err := td.c.InOrder("openDatapath", "floor.Apply", "bridges.Ensure", "dp.SetFences", "dp.Attach 11"); err != nil {
		t.Fatal(err)
	}
	if len(td.dp.Endpoints) != 0 {
		t.Fatalf("ports without endpoints got identities: %v", td.dp.Endpoints)
	}
}

// TestUnknownPortsAndEndpointAddrs: every port taken over gets its
// network, identity or not; the registered endpoints' addresses are held
// before the first port is taken over and before an added endpoint's
// identity, and released only after its removal.
func TestUnknownPortsAndEndpointAddrs(t *testing.T) {
	td := newTestController(t)
	if err := td.Up(); err != nil {
		t.Fatal(err)
	}
	if err := td.c.InOrder("dp.SetEndpointAddrs 0", "dp.Attach 11", "dp.SetPortNetwork 11 10.200.0.1/24"); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{11, 12} {
		if pn, ok := td.dp.PortNetworks[i]; !ok || pn.Gateway != netip.MustParsePrefix("10.200.0.1/24") || pn.GatewayMAC.String() != testBridgeMAC.String() {
			t.Errorf("port %d without endpoint: network %+v (set %v), want gateway 10.200.0.1/24 at %s", i, pn, ok, testBridgeMAC)
		}
	}
	td.c.Reset()
	if _, err := td.AddEndpoint(context.Background(), api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	if err := td.c.InOrder("dp.SetEndpointAddrs 1", "dp.SetEndpoint 11"); err != nil {
		t.Fatal(err)
	}
	if a := td.dp.EndpointAddrs; len(a) != 1 || a[0].IP != netip.MustParseAddr("10.200.0.10") || a[0].MAC.String() != "02:00:0a:c8:00:0a" {
		t.Errorf("held addresses %+v, want a1's", a)
	}
	// The port leaves: a1 stays registered, and its addresses held.
	td.mu.Lock()
	err := td.portLeftLocked(11)
	td.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := td.dp.PortNetworks[11]; ok {
		t.Error("a port that left keeps its network")
	}
	if len(td.dp.EndpointAddrs) != 1 {
		t.Errorf("a1's addresses were released when its port left: %+v", td.dp.EndpointAddrs)
	}
	td.c.Reset()
	if err := td.RemoveEndpoint(context.Background(), "a1"); err != nil {
		t.Fatal(err)
	}
	if len(td.dp.EndpointAddrs) != 0 {
		t.Errorf("a removed endpoint's addresses stay held: %+v", td.dp.EndpointAddrs)
	}

	// A failing SetPortNetwork fails the takeover, before the identity.
	td.dp.FailAt = "SetPortNetwork"
	td.c.Reset()
	td.mu.Lock()
	err = td.portJoinedLocked(11, "veth-a1", td.nets[0])
	td.mu.Unlock()
	if err == nil || td.c.Index("dp.SetEndpoint") >= 0 {
		t.Errorf("takeover with a failing SetPortNetwork: %v, calls %v", err, td.c.Log())
	}
}

// TestPortJoinOrder: program, floor, identity, then the pinned addresses:
// a port is never identified before its program is on.
func TestPortJoinOrder(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	if _, err := td.AddEndpoint(context.Background(), api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	// The port leaves and comes back (same ifindex): taken over again.
	td.mu.Lock()
	if err := td.portLeftLocked(11); err != nil {
		t.Fatal(err)
	}
	td.c.Reset()
	err := td.portJoinedLocked(11, "veth-a1", td.nets[0])
	td.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"dp.Attach 11", "dp.SetPortNetwork 11 10.200.0.1/24", "floor.AddPort 11", "dp.SetEndpoint 11", "bridges.PinEndpoint 11"}
	if strings.Join(td.c.Log(), "; ") != strings.Join(want, "; ") {
		t.Fatalf("calls %v, want %v", td.c.Log(), want)
	}

	// A new port under the old name is another port: no identity.
	td.mu.Lock()
	_ = td.portLeftLocked(11)
	td.c.Reset()
	err = td.portJoinedLocked(99, "veth-a1", td.nets[0])
	td.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if td.c.Index("dp.SetEndpoint") >= 0 {
		t.Fatalf("a recreated port inherited the endpoint: %v", td.c.Log())
	}
}

// TestAttachFailureKeepsPortClosed: when the program cannot be attached the
// port gets no identity (it stays dead behind the floor).
func TestAttachFailureKeepsPortClosed(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	if _, err := td.AddEndpoint(context.Background(), api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	td.mu.Lock()
	_ = td.portLeftLocked(11)
	td.dp.FailAt = "Attach"
	err := td.portJoinedLocked(11, "veth-a1", td.nets[0])
	td.mu.Unlock()
	if err == nil {
		t.Fatal("a failed attach was not reported")
	}
	if _, ok := td.dp.Endpoints[11]; ok {
		t.Fatal("a port without its program got an identity")
	}
}

func TestAddEndpointChecks(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	good := api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}
	for _, tc := range []struct {
		name string
		edit func(*api.EndpointAddRequest)
		want string
	}{
		{"not a port", func(r *api.EndpointAddRequest) { r.Interface = "veth-zz" }, "is not a port of an Outcall bridge (outcall0)"},
		{"outside the subnet", func(r *api.EndpointAddRequest) { r.IP = "10.200.1.10" }, "not a host address in the subnet 10.200.0.0/24 of network outcall-default"},
		{"the gateway", func(r *api.EndpointAddRequest) { r.IP = "10.200.0.1" }, "not a host address"},
		{"the bridge's MAC", func(r *api.EndpointAddRequest) { r.MAC = testBridgeMAC.String() }, "address of bridge outcall0 itself"},
		{"a port's MAC", func(r *api.EndpointAddRequest) { r.MAC = testPortMAC.String() }, "host-side address of bridge port veth-a1"},
		{"multicast MAC", func(r *api.EndpointAddRequest) { r.MAC = "01:00:5e:00:00:01" }, "multicast"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := good
			tc.edit(&req)
			_, err := td.AddEndpoint(ctx, req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AddEndpoint = %v, want an error containing %q", err, tc.want)
			}
			if len(td.dp.Endpoints) != 0 || len(td.endpoints.List()) != 0 {
				t.Fatal("a refused endpoint changed something")
			}
		})
	}
	// Positive control, then a second endpoint with the first one's MAC.
	if _, err := td.AddEndpoint(ctx, good); err != nil {
		t.Fatal(err)
	}
	dup := api.EndpointAddRequest{Name: "a2", Interface: "veth-a2", IP: "10.200.0.11", MAC: good.MAC}
	if _, err := td.AddEndpoint(ctx, dup); err == nil || !strings.Contains(err.Error(), `already belongs to endpoint "a1"`) {
		t.Fatalf("duplicate MAC: %v", err)
	}
}

func TestAllowValidation(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	if _, err := td.AddEndpoint(ctx, api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		req  api.AllowRequest
		want string
	}{
		{"unknown endpoint", api.AllowRequest{Container: "zz", Destination: "198.51.100.10"}, "not found"},
		{"a host name without a resolver", api.AllowRequest{Container: "a1", Destination: "example.com"}, "no resolver"},
		{"not an address", api.AllowRequest{Container: "a1", Destination: "10.0.0"}, "not an IPv4 address, CIDR or host name"},
		{"ipv6", api.AllowRequest{Container: "a1", Destination: "2001:db8::1"}, "only IPv4"},
		{"bad protocol", api.AllowRequest{Container: "a1", Destination: "198.51.100.10", Protocol: ptr("gre")}, "must be 'tcp' or 'udp'"},
		{"port without protocol", api.AllowRequest{Container: "a1", Destination: "198.51.100.10", Port: ptr(uint16(443))}, "requires protocol"},
		{"port 0", api.AllowRequest{Container: "a1", Destination: "198.51.100.10", Protocol: ptr("tcp"), Port: ptr(uint16(0))}, "invalid port 0"},
		{"ttl too long", api.AllowRequest{Container: "a1", Destination: "198.51.100.10", ExpiresInSecs: ptr(uint32(86401))}, "between 1 and 86400"},
		{"foreign src_ip", api.AllowRequest{Container: "a1", Destination: "198.51.100.10", SrcIP: "10.200.0.99"}, "does not belong"},
		{"metadata without the flag", api.AllowRequest{Container: "a1", Destination: "169.254.169.254"}, "--allow-private"},
		{"host address without the flag", api.AllowRequest{Container: "a1", Destination: "192.0.2.1"}, "host's own addresses"},
		{"another agent, even with the flag", api.AllowRequest{Container: "a1", Destination: "10.200.0.11", AllowPrivate: true}, "Outcall subnet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := td.Allow(ctx, tc.req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Allow = %v, want an error containing %q", err, tc.want)
			}
			if len(td.dp.GrantMap) != 0 {
				t.Fatalf("a refused grant reached the datapath: %v", td.dp.GrantMap)
			}
		})
	}
	// Positive controls: a public destination, and a restricted one with
	// the flag, reach the datapath and are listed.
	for _, req := range []api.AllowRequest{
		{Container: "a1", Destination: "198.51.100.10", Protocol: ptr("tcp"), Port: ptr(uint16(443))},
		{Container: "a1", Destination: "169.254.169.254", AllowPrivate: true},
	} {
		if _, err := td.Allow(ctx, req); err != nil {
			t.Fatalf("Allow(%+v) = %v", req, err)
		}
	}
	if rules, _ := td.ActiveRules(ctx); len(rules) != 2 || len(td.dp.GrantMap) != 2 {
		t.Fatalf("active rules %v, kernel %v; want 2 and 2", rules, td.dp.GrantMap)
	}
}

// TestRemoveEndpointEndsEverything: the identity goes from the datapath, its
// grants and flows end, its addresses are unpinned.
func TestRemoveEndpointEndsEverything(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	if _, err := td.AddEndpoint(ctx, api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := td.Allow(ctx, api.AllowRequest{Container: "a1", Destination: "198.51.100.10"}); err != nil {
		t.Fatal(err)
	}
	td.c.Reset()
	if err := td.RemoveEndpoint(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dp.DeleteEndpoint 11", "bridges.UnpinEndpoint 11", "dp.DeleteGrant", "dp.EndGrantFlows 1", "dp.EndFlows 1"} {
		if td.c.Index(want) < 0 {
			t.Errorf("%q not called; calls: %v", want, td.c.Log())
		}
	}
	if td.c.Index("dp.DeleteEndpoint") > td.c.Index("dp.DeleteGrant") {
		t.Error("grants were revoked before the identity was gone")
	}
	if len(td.dp.GrantMap) != 0 || len(td.endpoints.List()) != 0 {
		t.Fatal("grants or the endpoint survived")
	}
}

// TestShutdownOrder: grants go, the rule tables are emptied and the strict
// floor is written before the handles are released.
func TestShutdownOrder(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	if _, err := td.AddEndpoint(context.Background(), api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := td.Allow(context.Background(), api.AllowRequest{Container: "a1", Destination: "198.51.100.10"}); err != nil {
		t.Fatal(err)
	}
	td.c.Reset()
	td.Shutdown()
	if err := td.c.InOrder("dp.DeleteGrant", "dp.ClearRules", "floor.Apply 2", "dp.Close"); err != nil {
		t.Fatal(err)
	}
	if td.c.Index("dp.Unpin") >= 0 || td.c.Index("bridges.Delete") >= 0 {
		t.Fatalf("shutdown tore something down: %v", td.c.Log())
	}
}

// TestBridgeDownRefusesWithPorts: nothing is torn down while ports exist.
func TestBridgeDownRefusesWithPorts(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	err := td.BridgeDown(context.Background(), api.BridgeDownRequest{})
	if err == nil || !strings.Contains(err.Error(), "has ports: veth-a1, veth-a2") {
		t.Fatalf("BridgeDown = %v", err)
	}
	if td.c.Index("dp.Unpin") >= 0 || td.c.Index("floor.Delete") >= 0 || td.c.Index("bridges.Delete") >= 0 {
		t.Fatalf("a refused bridge down changed something: %v", td.c.Log())
	}
	if err := td.BridgeDown(context.Background(), api.BridgeDownRequest{RemovePorts: true}); err != nil {
		t.Fatal(err)
	}
	if td.c.Index("bridges.DeletePorts") > td.c.Index("dp.Unpin") {
		t.Fatalf("ports removed after the datapath went: %v", td.c.Log())
	}
}

// TestReloadRevokesGrantsOfGoneRules: a reload keeps the grants of rules
// that still allow and the operator's, and revokes the others.
func TestReloadRevokesGrantsOfGoneRules(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	if _, err := td.AddEndpoint(ctx, api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	put := func(dst string, owner grants.Owner) {
		t.Helper()
		g := grants.Grant{Grant: datapath.Grant{GrantKey: datapath.GrantKey{Identity: 1, Dst: netip.MustParseAddr(dst)}}, Owner: owner}
		if err := td.grants.Put(g); err != nil {
			t.Fatal(err)
		}
	}
	put("198.51.100.1", grants.Owner{Rule: "pypi"})
	put("198.51.100.2", grants.Owner{Rule: "gone"})
	put("198.51.100.3", grants.Operator)
	tables := &rules.PacketTables{Tables: ruletable.Tables{Rules: []ruletable.Rule{
		{ID: "pypi", Action: ruletable.Allow}, {ID: "gone", Action: ruletable.Block},
	}}}
	if err := td.InstallRules(tables); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, g := range td.grants.List() {
		left = append(left, g.Dst.String()+" "+g.Owner.String())
	}
	want := "198.51.100.1 rule:pypi, 198.51.100.3 operator"
	if got := strings.Join(left, ", "); got != want {
		t.Fatalf("grants after the reload: %s; want %s", got, want)
	}
}

// TestCreateNetworkOrder: the floor names the new bridge before the bridge
// exists, the fences cover its subnet, and a restarted Controller finds the
// network again and brings its bridge back under the floor.
func TestCreateNetworkOrder(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	res, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("staging")})
	if err != nil {
		t.Fatal(err)
	}
	bridgeName := BridgeName("outcall-staging")
	if !res.Created || res.Name != "outcall-staging" || res.Subnet != "10.200.1.0/24" {
		t.Fatalf("create = %+v", res)
	}
	if err := td.c.InOrder("floor.Apply 2 outcall0,"+bridgeName, "bridges.Ensure "+bridgeName); err != nil {
		t.Fatal(err)
	}
	// Another network's subnet (inside the block) and gateway are never
	// opened: the block's fence covers them.
	if len(td.dp.Fences) == 0 || td.dp.Fences[0].Prefix.String() != "10.200.0.0/16" || !td.dp.Fences[0].Never {
		t.Fatalf("fences %+v", td.dp.Fences)
	}
	again, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("staging")})
	if err != nil || again.Created {
		t.Fatalf("second create = %+v, %v; want created false", again, err)
	}

	// A network outside the block gets a fence of its own.
	if _, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("lab"), Subnet: ptr("192.168.77.0/24")}); err != nil {
		t.Fatal(err)
	}
	if !slicesContainsFence(td.dp.Fences, "192.168.77.0/24") {
		t.Fatalf("fences %+v miss the subnet outside the block", td.dp.Fences)
	}

	// A restart: the stored networks come back, their bridges in the
	// first floor.
	td.Shutdown()
	td.c.Reset()
	td.fl.Applied = nil
	td.Controller = newController(t, filepath.Dir(td.store.path), td)
	if err := td.Up(); err != nil {
		t.Fatal(err)
	}
	first := td.fl.Applied[0]
	if strings.Join(first.Bridges, ",") != "outcall0,"+bridgeName+","+BridgeName("outcall-lab") {
		t.Fatalf("first floor after a restart names %v", first.Bridges)
	}
	list, _ := td.Networks(ctx)
	if len(list) != 3 || list[1].Name != "outcall-staging" || *list[1].Subnet != "10.200.1.0/24" {
		t.Fatalf("networks after a restart: %+v", list)
	}
}

func slicesContainsFence(fs []datapath.Fence, prefix string) bool {
	for _, f := range fs {
		if f.Prefix.String() == prefix && f.Never {
			return true
		}
	}
	return false
}

func TestCreateNetworkRefusals(t *testing.T) {
	td := newTestController(t)
	ctx := context.Background()
	if _, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("staging")}); err == nil || !strings.Contains(err.Error(), "bridge is not up") {
		t.Fatalf("create with the bridge down: %v", err)
	}
	td.open(t)
	for _, tc := range []struct {
		name string
		req  api.NetworkCreateRequest
		want string
	}{
		{"bad name", api.NetworkCreateRequest{Name: ptr("a b")}, "not allowed"},
		{"bad subnet", api.NetworkCreateRequest{Name: ptr("x"), Subnet: ptr("10.200.9.1/24")}, "host bits"},
		{"overlaps the default network", api.NetworkCreateRequest{Name: ptr("x"), Subnet: ptr("10.200.0.0/23")}, `overlaps 10.200.0.0/24 of network "outcall-default"`},
		{"holds a host address", api.NetworkCreateRequest{Name: ptr("x"), Subnet: ptr("192.0.2.0/24")}, "must lie inside one of"},
		{"gateway without subnet", api.NetworkCreateRequest{Name: ptr("x"), Gateway: ptr("10.200.9.1")}, "needs a subnet"},
		{"default with another subnet", api.NetworkCreateRequest{Subnet: ptr("10.200.9.0/24")}, "exists with subnet 10.200.0.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			td.c.Reset()
			_, err := td.CreateNetwork(ctx, tc.req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create = %v, want an error containing %q", err, tc.want)
			}
			if n := len(td.c.Log()); n != 0 {
				t.Fatalf("a refused create changed something: %v", td.c.Log())
			}
		})
	}
	// Positive control: the default network exists and says so.
	if res, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{}); err != nil || res.Created || res.Name != "outcall-default" {
		t.Fatalf("create of the default = %+v, %v", res, err)
	}
}

// TestDestroyNetwork: refused while an identity or a port is on the
// network, and for the daemon's own bridge; then the bridge goes, and the
// floor forgets it.
func TestDestroyNetwork(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	if _, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("staging")}); err != nil {
		t.Fatal(err)
	}
	br := td.br.Bridges[BridgeName("outcall-staging")]
	br.Ports = []bridge.Port{{Index: 21, Name: "veth-s1", Bridge: br.Index, HardwareAddr: net.HardwareAddr{2, 0xcc, 0, 0, 0, 21}}}
	td.handlePortEvent(bridge.PortEvent{Port: br.Ports[0], Joined: true})
	if _, err := td.AddEndpoint(ctx, api.EndpointAddRequest{Name: "s1", Interface: "veth-s1", IP: "10.200.1.10", MAC: "02:00:0a:c8:01:0a"}); err != nil {
		t.Fatal(err)
	}
	// The endpoint and its port are one container; a port without
	// identity is one more.
	br.Ports = append(br.Ports, bridge.Port{Index: 22, Name: "veth-x", Bridge: br.Index, HardwareAddr: net.HardwareAddr{2, 0xcc, 0, 0, 0, 22}})
	td.handlePortEvent(bridge.PortEvent{Port: br.Ports[1], Joined: true})
	if _, err := td.DestroyNetwork(ctx, api.NetworkDestroyRequest{Name: ptr("staging")}); err == nil ||
		err.Error() != `cannot destroy network "outcall-staging": 2 containers still connected: s1, veth-x` {
		t.Fatalf("destroy with an endpoint on its port and a port without one: %v", err)
	}
	br.Ports = br.Ports[:1]
	td.handlePortEvent(bridge.PortEvent{Port: bridge.Port{Index: 22, Name: "veth-x", Bridge: br.Index}})
	if _, err := td.DestroyNetwork(ctx, api.NetworkDestroyRequest{}); err == nil || !strings.Contains(err.Error(), "daemon's own bridge outcall0") {
		t.Fatalf("destroy of the default network: %v", err)
	}
	if res, err := td.DestroyNetwork(ctx, api.NetworkDestroyRequest{Name: ptr("nope")}); err != nil || res.Destroyed || res.Name != "outcall-nope" {
		t.Fatalf("destroy of a missing network = %+v, %v", res, err)
	}
	if err := td.RemoveEndpoint(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	br.Ports = nil
	td.handlePortEvent(bridge.PortEvent{Port: bridge.Port{Index: 21, Name: "veth-s1", Bridge: br.Index}})
	td.c.Reset()
	res, err := td.DestroyNetwork(ctx, api.NetworkDestroyRequest{Name: ptr("staging")})
	if err != nil || !res.Destroyed {
		t.Fatalf("destroy = %+v, %v", res, err)
	}
	if err := td.c.InOrder("bridges.Delete "+BridgeName("outcall-staging"), "floor.Apply 2 outcall0"); err != nil {
		t.Fatal(err)
	}
	if st, _ := td.Network(ctx, ptr("staging")); st.Exists {
		t.Fatal("a destroyed network still exists")
	}
}

// TestEndpointStaysOnItsNetwork: an identity belongs to its network's
// bridge. A port that moves to another Outcall bridge loses its identity,
// and an endpoint takes the gateway and MAC of its own network.
func TestEndpointStaysOnItsNetwork(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	if _, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("staging")}); err != nil {
		t.Fatal(err)
	}
	staging := td.br.Bridges[BridgeName("outcall-staging")]
	if _, err := td.AddEndpoint(ctx, api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	if ep := td.dp.Endpoints[11]; ep.Gateway.String() != "10.200.0.1" || ep.GatewayMAC.String() != testBridgeMAC.String() {
		t.Fatalf("endpoint on the default network: %+v", ep)
	}
	// An address of the other network is refused on this one.
	if _, err := td.AddEndpoint(ctx, api.EndpointAddRequest{Name: "a2", Interface: "veth-a2", IP: "10.200.1.10", MAC: "02:00:0a:c8:01:0a"}); err == nil ||
		!strings.Contains(err.Error(), "not a host address in the subnet 10.200.0.0/24 of network outcall-default") {
		t.Fatalf("an address of another network: %v", err)
	}
	// veth-a1 moves to the staging bridge: its identity stays behind.
	td.handlePortEvent(bridge.PortEvent{Port: bridge.Port{Index: 11, Name: "veth-a1", Bridge: staging.Index}, Joined: true})
	if _, ok := td.dp.Endpoints[11]; ok {
		t.Fatal("a port kept its identity on another network")
	}
	if !td.dp.Attached[11] || !td.fl.Ports[11] {
		t.Fatal("the moved port is not enforced on its new bridge")
	}
	eps, _ := td.Endpoints(ctx)
	if len(eps) != 1 || eps[0].Network != "outcall-default" || eps[0].Attached {
		t.Fatalf("endpoints %+v: want a1 on outcall-default, not attached", eps)
	}
}

// TestIdentifyBySource: a gateway service finds the identity that sent from
// an address on its own network, only while that identity's port is
// enforced; a container's identity is found by its id the same way.
func TestIdentifyBySource(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	if _, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("staging")}); err != nil {
		t.Fatal(err)
	}
	if _, err := td.AddEndpoint(ctx, api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	c1 := endpoint.Endpoint{Name: "c1", Interface: "veth-a2", IP: netip.MustParseAddr("10.200.0.11"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0x0b},
		Ifindex: 12, Network: api.DefaultNetworkName, Origin: endpoint.OriginDocker, ContainerID: "c0ffee"}
	if _, err := td.endpoints.Add(c1); err != nil {
		t.Fatal(err)
	}
	gws := td.Gateways()
	if len(gws) != 2 || gws[0].Network().Name != api.DefaultNetworkName || gws[1].Network().Name != "outcall-staging" {
		t.Fatalf("gateways %+v", gws)
	}
	def, staging := gws[0], gws[1]
	for _, tc := range []struct {
		gw   Gateway
		src  string
		want string
	}{
		{def, "10.200.0.10", "a1"},
		{def, "::ffff:10.200.0.10", "a1"},
		{def, "10.200.0.11", "c1"},
		{def, "10.200.0.99", ""},
		{staging, "10.200.0.10", ""}, // the same address on another network is nobody
	} {
		e, ok := tc.gw.Identify(netip.MustParseAddr(tc.src))
		if got := map[bool]string{true: e.Name}[ok]; got != tc.want {
			t.Errorf("%s.Identify(%s) = %q, want %q", tc.gw.Network().Name, tc.src, got, tc.want)
		}
	}
	if e, ok := td.ContainerIdentity("c0ffee"); !ok || e.Name != "c1" {
		t.Fatalf("ContainerIdentity = %+v, %v", e, ok)
	}
	// A port whose program is gone, and cannot be put back, identifies
	// nobody from the repair that finds it so (until then the floor drops
	// what the port sends, so nothing of it reaches a service).
	delete(td.dp.Attached, 11)
	delete(td.dp.Attached, 12)
	td.dp.FailAt = "Reattach"
	td.repairOnce()
	if _, ok := def.Identify(netip.MustParseAddr("10.200.0.10")); ok {
		t.Error("an identity whose port lost its program was found")
	}
	if _, ok := td.ContainerIdentity("c0ffee"); ok {
		t.Error("a container whose port lost its program was found")
	}
}

// TestCreateNetworkFailureUndoes: a create that fails half-way removes the
// bridge it made, takes the bridge out of the floor again and records
// nothing.
func TestCreateNetworkFailureUndoes(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	name := BridgeName("outcall-staging")
	td.br.FailEnsure = name
	if _, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("staging")}); err == nil || !strings.Contains(err.Error(), "fake Ensure") {
		t.Fatalf("create = %v, want the Ensure failure", err)
	}
	if b := td.br.Bridges[name]; b == nil || b.Exists {
		t.Fatalf("the half-made bridge is left: %+v", b)
	}
	if got := td.fl.Last().Bridges; strings.Join(got, ",") != "outcall0" {
		t.Fatalf("floor after the failed create names %v", got)
	}
	if list, _ := td.Networks(ctx); len(list) != 1 {
		t.Fatalf("networks after a failed create: %+v", list)
	}
	// Positive control: the same create succeeds once Ensure does.
	td.br.FailEnsure = ""
	if res, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("staging")}); err != nil || !res.Created {
		t.Fatalf("create = %+v, %v", res, err)
	}
}

// TestLearnGrants: a direct_ip answer's grants are written for the asking
// identity on the rule's ports, owned by the rule; nothing is written
// unless all may be (a destination inside an Outcall subnet, an unlicensed
// restricted one, a rule no longer in force, an identity of another
// network); an operator's grant is never replaced; a rule's grant is
// renewed, never shortened.
func TestLearnGrants(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	if _, err := td.AddEndpoint(ctx, api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	tables := &rules.PacketTables{Tables: ruletable.Tables{Rules: []ruletable.Rule{
		{ID: "pypi", Action: ruletable.Allow}, {ID: "deny", Action: ruletable.Block},
	}}}
	if err := td.InstallRules(tables); err != nil {
		t.Fatal(err)
	}
	gw := td.Gateways()[0]
	pub, pub2 := netip.MustParseAddr("151.101.0.223"), netip.MustParseAddr("151.101.64.223")
	for _, tc := range []struct {
		name string
		id   uint32
		lg   Learned
		want string
	}{
		{"unknown identity", 99, Learned{Rule: "pypi", Dsts: []netip.Addr{pub}, TTL: time.Minute}, "identity 99 is not enforced"},
		{"a block rule", 1, Learned{Rule: "deny", Dsts: []netip.Addr{pub}, TTL: time.Minute}, `rule "deny" is not an allow rule`},
		{"a rule not in force", 1, Learned{Rule: "gone", Dsts: []netip.Addr{pub}, TTL: time.Minute}, `rule "gone" is not an allow rule`},
		{"an agent's address", 1, Learned{Rule: "pypi", Dsts: []netip.Addr{pub, netip.MustParseAddr("10.200.0.11")}, TTL: time.Minute}, "inside the Outcall subnet"},
		{"restricted without the flag", 1, Learned{Rule: "pypi", Dsts: []netip.Addr{netip.MustParseAddr("169.254.169.254")}, TTL: time.Minute}, "is restricted"},
		{"no TTL", 1, Learned{Rule: "pypi", Dsts: []netip.Addr{pub}}, "not positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := gw.Learn(tc.id, tc.lg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Learn = %v, want an error containing %q", err, tc.want)
			}
			if len(td.dp.GrantMap) != 0 {
				t.Fatalf("a refused Learn wrote %v", td.dp.GrantMap)
			}
		})
	}

	// The operator holds pub:443 for good; the answer opens pub:80, pub2:80
	// and pub2:443 for a minute, owned by the rule.
	if _, err := td.Allow(ctx, api.AllowRequest{Container: "a1", Destination: pub.String(), Protocol: ptr("tcp"), Port: ptr(uint16(443))}); err != nil {
		t.Fatal(err)
	}
	if err := gw.Learn(1, Learned{Rule: "pypi", Dsts: []netip.Addr{pub, pub2}, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	// The rule's grant on pub:443 is a claim beside the operator's; the
	// kernel entry, their union, stays persistent.
	byKey := map[string]grants.Grant{}
	for _, g := range td.grants.List() {
		byKey[fmt.Sprintf("%s:%d %s", g.Dst, g.Port, g.Owner)] = g
	}
	if len(byKey) != 5 {
		t.Fatalf("grants %v, want 5", byKey)
	}
	if g := byKey[pub.String()+":443 operator"]; !g.Expires.IsZero() {
		t.Fatalf("the operator's grant became %+v", g)
	}
	if g, _ := td.grants.Get(byKey[pub.String()+":443 operator"].GrantKey); !g.Expires.IsZero() || !td.dp.GrantMap[g.GrantKey].Expires.IsZero() {
		t.Fatalf("a DNS answer made the operator's persistent grant temporary: %+v", g)
	}
	byKey[pub2.String()+":80"] = byKey[pub2.String()+":80 rule:pypi"]
	first := byKey[pub2.String()+":80"]
	if first.Owner != (grants.Owner{Rule: "pypi"}) || first.Proto != 6 || time.Until(first.Expires) > time.Minute {
		t.Fatalf("learned grant %+v", first)
	}
	// A shorter answer does not shorten it; a longer one renews it.
	if err := gw.Learn(1, Learned{Rule: "pypi", Dsts: []netip.Addr{pub2}, TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	if g, _ := td.grants.Get(first.GrantKey); !g.Expires.Equal(first.Expires) {
		t.Fatalf("a shorter answer moved the expiry from %v to %v", first.Expires, g.Expires)
	}
	if err := gw.Learn(1, Learned{Rule: "pypi", Dsts: []netip.Addr{pub2}, TTL: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if g, _ := td.grants.Get(first.GrantKey); !g.Expires.After(first.Expires) {
		t.Fatal("a longer answer did not renew the grant")
	}
	// The rule leaves the set: its grants go, the operator's stays.
	if err := td.InstallRules(&rules.PacketTables{}); err != nil {
		t.Fatal(err)
	}
	if left := td.grants.List(); len(left) != 1 || left[0].Owner != grants.Operator {
		t.Fatalf("grants after the rule left: %+v", left)
	}
	if err := gw.Learn(1, Learned{Rule: "pypi", Dsts: []netip.Addr{pub2}, TTL: time.Minute}); err == nil {
		t.Fatal("a rule the reload removed learned a grant")
	}
}
