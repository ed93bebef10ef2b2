package daemon

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/grants"
	"outcall.dev/outcall/pkg/rules"
	"outcall.dev/outcall/pkg/ruletable"
)

func ptr[T any](v T) *T { return &v }

// TestUpOrder: the floor is in place, naming the bridge's existing ports,
// before anything is attached; programs go on before identities.
func TestUpOrder(t *testing.T) {
	td := newTestDaemon(t)
	td.br.exists = true // a restart: the bridge and its ports are there
	if err := td.up(); err != nil {
		t.Fatal(err)
	}
	if len(td.fl.applied) == 0 || len(td.fl.applied[0].Ports) != 2 {
		t.Fatalf("first floor = %+v, want it to name both existing ports", td.fl.applied)
	}
	order := []string{"openDatapath", "floor.Apply", "bridges.Ensure", "dp.SetFences", "dp.Attach 11"}
	last := -1
	for _, step := range order {
		i := td.c.index(step)
		if i < 0 || i < last {
			t.Fatalf("%q at %d after %d; calls: %v", step, i, last, td.c.log)
		}
		last = i
	}
	if len(td.dp.endpoints) != 0 {
		t.Fatalf("ports without endpoints got identities: %v", td.dp.endpoints)
	}
}

// TestPortJoinOrder: program, floor, identity, then the pinned addresses:
// a port is never identified before its program is on.
func TestPortJoinOrder(t *testing.T) {
	td := newTestDaemon(t)
	td.open(t)
	if _, err := td.AddEndpoint(context.Background(), api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	// The port leaves and comes back (same ifindex): taken over again.
	td.mu.Lock()
	if err := td.portLeftLocked(11); err != nil {
		t.Fatal(err)
	}
	td.c.log = nil
	err := td.portJoinedLocked(11, "veth-a1")
	td.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"dp.Attach 11", "floor.AddPort 11", "dp.SetEndpoint 11", "bridges.PinEndpoint 11"}
	if strings.Join(td.c.log, "; ") != strings.Join(want, "; ") {
		t.Fatalf("calls %v, want %v", td.c.log, want)
	}

	// A new port under the old name is another port: no identity.
	td.mu.Lock()
	_ = td.portLeftLocked(11)
	td.c.log = nil
	err = td.portJoinedLocked(99, "veth-a1")
	td.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if td.c.index("dp.SetEndpoint") >= 0 {
		t.Fatalf("a recreated port inherited the endpoint: %v", td.c.log)
	}
}

// TestAttachFailureKeepsPortClosed: when the program cannot be attached the
// port gets no identity (it stays dead behind the floor).
func TestAttachFailureKeepsPortClosed(t *testing.T) {
	td := newTestDaemon(t)
	td.open(t)
	if _, err := td.AddEndpoint(context.Background(), api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	td.mu.Lock()
	_ = td.portLeftLocked(11)
	td.dp.failAt = "Attach"
	err := td.portJoinedLocked(11, "veth-a1")
	td.mu.Unlock()
	if err == nil {
		t.Fatal("a failed attach was not reported")
	}
	if _, ok := td.dp.endpoints[11]; ok {
		t.Fatal("a port without its program got an identity")
	}
}

func TestAddEndpointChecks(t *testing.T) {
	td := newTestDaemon(t)
	td.open(t)
	ctx := context.Background()
	good := api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}
	for _, tc := range []struct {
		name string
		edit func(*api.EndpointAddRequest)
		want string
	}{
		{"not a port", func(r *api.EndpointAddRequest) { r.Interface = "veth-zz" }, "is not a port of bridge outcall0"},
		{"outside the subnet", func(r *api.EndpointAddRequest) { r.IP = "10.200.1.10" }, "not a host address in the bridge subnet"},
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
			if len(td.dp.endpoints) != 0 || len(td.endpoints.List()) != 0 {
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
	td := newTestDaemon(t)
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
		{"not an address", api.AllowRequest{Container: "a1", Destination: "example.com"}, "need an IPv4 address"},
		{"ipv6", api.AllowRequest{Container: "a1", Destination: "2001:db8::1"}, "need an IPv4 address"},
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
			if len(td.dp.grants) != 0 {
				t.Fatalf("a refused grant reached the datapath: %v", td.dp.grants)
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
	if rules, _ := td.ActiveRules(ctx); len(rules) != 2 || len(td.dp.grants) != 2 {
		t.Fatalf("active rules %v, kernel %v; want 2 and 2", rules, td.dp.grants)
	}
}

// TestRemoveEndpointEndsEverything: the identity goes from the datapath, its
// grants and flows end, its addresses are unpinned.
func TestRemoveEndpointEndsEverything(t *testing.T) {
	td := newTestDaemon(t)
	td.open(t)
	ctx := context.Background()
	if _, err := td.AddEndpoint(ctx, api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := td.Allow(ctx, api.AllowRequest{Container: "a1", Destination: "198.51.100.10"}); err != nil {
		t.Fatal(err)
	}
	td.c.log = nil
	if err := td.RemoveEndpoint(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dp.DeleteEndpoint 11", "bridges.UnpinEndpoint 11", "dp.DeleteGrant", "dp.EndGrantFlows 1", "dp.EndFlows 1"} {
		if td.c.index(want) < 0 {
			t.Errorf("%q not called; calls: %v", want, td.c.log)
		}
	}
	if td.c.index("dp.DeleteEndpoint") > td.c.index("dp.DeleteGrant") {
		t.Error("grants were revoked before the identity was gone")
	}
	if len(td.dp.grants) != 0 || len(td.endpoints.List()) != 0 {
		t.Fatal("grants or the endpoint survived")
	}
}

// TestShutdownOrder: grants go, the rule tables are emptied and the strict
// floor is written before the handles are released.
func TestShutdownOrder(t *testing.T) {
	td := newTestDaemon(t)
	td.open(t)
	if _, err := td.AddEndpoint(context.Background(), api.EndpointAddRequest{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := td.Allow(context.Background(), api.AllowRequest{Container: "a1", Destination: "198.51.100.10"}); err != nil {
		t.Fatal(err)
	}
	td.c.log = nil
	td.shutdown()
	last := -1
	for _, step := range []string{"dp.DeleteGrant", "dp.ClearRules", "floor.Apply 2", "dp.Close"} {
		i := td.c.index(step)
		if i < 0 || i < last {
			t.Fatalf("%q at %d after %d; calls: %v", step, i, last, td.c.log)
		}
		last = i
	}
	if td.c.index("dp.Unpin") >= 0 || td.c.index("bridges.Delete") >= 0 {
		t.Fatalf("shutdown tore something down: %v", td.c.log)
	}
}

// TestBridgeDownRefusesWithPorts: nothing is torn down while ports exist.
func TestBridgeDownRefusesWithPorts(t *testing.T) {
	td := newTestDaemon(t)
	td.open(t)
	err := td.BridgeDown(context.Background(), api.BridgeDownRequest{})
	if err == nil || !strings.Contains(err.Error(), "has ports: veth-a1, veth-a2") {
		t.Fatalf("BridgeDown = %v", err)
	}
	if td.c.index("dp.Unpin") >= 0 || td.c.index("floor.Delete") >= 0 || td.c.index("bridges.Delete") >= 0 {
		t.Fatalf("a refused bridge down changed something: %v", td.c.log)
	}
	if err := td.BridgeDown(context.Background(), api.BridgeDownRequest{RemovePorts: true}); err != nil {
		t.Fatal(err)
	}
	if td.c.index("bridges.DeletePorts") > td.c.index("dp.Unpin") {
		t.Fatalf("ports removed after the datapath went: %v", td.c.log)
	}
}

// TestReloadRevokesGrantsOfGoneRules: a reload keeps the grants of rules
// that still allow and the operator's, and revokes the others.
func TestReloadRevokesGrantsOfGoneRules(t *testing.T) {
	td := newTestDaemon(t)
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
