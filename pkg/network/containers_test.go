package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/bridge"
	"outcall.dev/outcall/pkg/endpoint"
)

const sandbox = "/run/docker/netns/0123456789ab"

// TestReserveContainer: a container's identity is registered before it
// runs, on a free address and a fresh MAC, its addresses held at once; an
// address that is not a free host address of its network is refused.
func TestReserveContainer(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	c1, err := td.ReserveContainer(ctx, ContainerReservation{Network: api.DefaultNetworkName, Name: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if c1.IP != netip.MustParseAddr("10.200.0.2") || c1.MAC[0]&0x03 != 0x02 || c1.Origin != endpoint.OriginDocker || c1.Ifindex != 0 {
		t.Errorf("c1 = %+v, want 10.200.0.2, a local unicast MAC, docker, no port", c1)
	}
	if err := td.c.InOrder("dp.SetEndpointAddrs 1"); err != nil {
		t.Error(err)
	}
	if len(td.dp.Endpoints) != 0 {
		t.Errorf("a reservation gave a port an identity: %v", td.dp.Endpoints)
	}
	if _, ok := td.Gateways()[0].Identify(c1.IP); ok {
		t.Error("a reserved container is identified before it has a port")
	}
	c2, err := td.ReserveContainer(ctx, ContainerReservation{Network: api.DefaultNetworkName, Name: "c2"})
	if err != nil || c2.IP != netip.MustParseAddr("10.200.0.3") || c2.MAC.String() == c1.MAC.String() {
		t.Errorf("c2 = %+v, %v; want 10.200.0.3 with a MAC of its own", c2, err)
	}
	again, err := td.ReserveContainer(ctx, ContainerReservation{Network: api.DefaultNetworkName, Name: "c3",
		IP: netip.MustParseAddr("10.200.0.77"), MAC: net.HardwareAddr{2, 0x42, 10, 200, 0, 77}})
	if err != nil || again.IP != netip.MustParseAddr("10.200.0.77") || again.MAC.String() != "02:42:0a:c8:00:4d" {
		t.Errorf("c3 with its own address = %+v, %v", again, err)
	}
	for _, tt := range []struct {
		name string
		r    ContainerReservation
		kind *apikit.Kind
	}{
		{"taken address", ContainerReservation{Network: api.DefaultNetworkName, Name: "x", IP: c1.IP}, apikit.ErrInvalid},
		{"gateway", ContainerReservation{Network: api.DefaultNetworkName, Name: "x", IP: netip.MustParseAddr("10.200.0.1")}, apikit.ErrInvalid},
		{"network address", ContainerReservation{Network: api.DefaultNetworkName, Name: "x", IP: netip.MustParseAddr("10.200.0.0")}, apikit.ErrInvalid},
		{"broadcast", ContainerReservation{Network: api.DefaultNetworkName, Name: "x", IP: netip.MustParseAddr("10.200.0.255")}, apikit.ErrInvalid},
		{"other subnet", ContainerReservation{Network: api.DefaultNetworkName, Name: "x", IP: netip.MustParseAddr("10.200.1.2")}, apikit.ErrInvalid},
		{"multicast MAC", ContainerReservation{Network: api.DefaultNetworkName, Name: "x", MAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}}, apikit.ErrInvalid},
		{"taken MAC", ContainerReservation{Network: api.DefaultNetworkName, Name: "x", MAC: c1.MAC}, apikit.ErrConflict},
		{"taken name", ContainerReservation{Network: api.DefaultNetworkName, Name: "c1"}, apikit.ErrConflict},
		{"no such network", ContainerReservation{Network: "outcall-nope", Name: "x"}, apikit.ErrNotFound},
	} {
		if _, err := td.ReserveContainer(ctx, tt.r); !errors.Is(err, tt.kind) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.kind)
		}
	}
	if n := len(td.ContainerEndpoints()); n != 3 {
		t.Errorf("%d container endpoints, want 3", n)
	}
}

// TestBindContainer: the port Docker made is found from the container's
// namespace and MAC, taken over (program, floor) if the port watcher has
// not seen it yet, and only then given the identity; a container that
// starts again moves to its new port; the release takes everything away.
func TestBindContainer(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	c1, err := td.ReserveContainer(ctx, ContainerReservation{Network: api.DefaultNetworkName, Name: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	br := td.br.Bridges["outcall0"]
	br.Ports = append(br.Ports, bridge.Port{Index: 13, Name: "veth1a2b3c", Bridge: 10})
	td.br.Peers[sandbox+" "+c1.MAC.String()] = 13

	// Positive control first for the refusals below: nothing is bound by
	// a namespace without the MAC, or to a port of no Outcall bridge.
	if _, err := td.BindContainer(ctx, "c1", "cid1", "/run/docker/netns/other"); err == nil {
		t.Fatal("bound through a namespace without the container's MAC")
	}
	td.br.Peers["/run/docker/netns/stray "+c1.MAC.String()] = 99
	if _, err := td.BindContainer(ctx, "c1", "cid1", "/run/docker/netns/stray"); err == nil {
		t.Fatal("bound to a port of no Outcall bridge")
	}
	if len(td.dp.Endpoints) != 0 {
		t.Fatalf("a failed bind left an identity: %v", td.dp.Endpoints)
	}
	td.c.Reset()
	e, err := td.BindContainer(ctx, "c1", "cid1", sandbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := td.c.InOrder("bridges.PeerPort "+sandbox, "dp.Attach 13", "dp.SetPortNetwork 13 10.200.0.1/24", "floor.AddPort 13", "dp.SetEndpoint 13", "bridges.PinEndpoint 13"); err != nil {
		t.Fatal(err)
	}
	if e.Ifindex != 13 || e.Interface != "veth1a2b3c" || e.ContainerID != "cid1" || td.dp.Endpoints[13].Identity != c1.Identity {
		t.Errorf("bound %+v, datapath %+v", e, td.dp.Endpoints[13])
	}
	if got, ok := td.Gateways()[0].Identify(c1.IP); !ok || got.Name != "c1" {
		t.Errorf("Identify(%s) = %q, %v after bind", c1.IP, got.Name, ok)
	}
	if got, ok := td.ContainerIdentity("cid1"); !ok || got.Identity != c1.Identity {
		t.Errorf("ContainerIdentity(cid1) = %+v, %v", got, ok)
	}
	// Binding again is a no-op that keeps the identity.
	if _, err := td.BindContainer(ctx, "c1", "cid1", sandbox); err != nil {
		t.Errorf("bind again: %v", err)
	}
	// Another container id under the same name is refused.
	if _, err := td.BindContainer(ctx, "c1", "cid-other", sandbox); err == nil {
		t.Error("a reservation went to another container")
	}

	// Started again: a new veth, the old one gone from the bridge.
	br.Ports = []bridge.Port{{Index: 14, Name: "veth4d5e6f", Bridge: 10}}
	td.br.Peers[sandbox+" "+c1.MAC.String()] = 14
	if _, err := td.BindContainer(ctx, "c1", "cid1", sandbox); err != nil {
		t.Fatal(err)
	}
	if _, ok := td.dp.Endpoints[13]; ok {
		t.Error("the old port keeps the identity")
	}
	if td.dp.Endpoints[14].Identity != c1.Identity {
		t.Errorf("new port: %+v", td.dp.Endpoints[14])
	}

	if err := td.ReleaseContainer(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := td.dp.Endpoints[14]; ok || len(td.dp.EndpointAddrs) != 0 || len(td.ContainerEndpoints()) != 0 {
		t.Errorf("after release: datapath %v, held %v, endpoints %v", td.dp.Endpoints, td.dp.EndpointAddrs, td.ContainerEndpoints())
	}
	if err := td.ReleaseContainer(ctx, "c1"); err != nil {
		t.Errorf("release twice: %v", err)
	}
}

// TestBindOnArrival: a port joining a network with a reserved container is
// watched, and gets the identity whose MAC its far end carries as soon as
// Docker has put it in place, before the manager's bind; the manager's bind
// then only records the container id. A far end with another MAC gets
// nothing.
func TestBindOnArrival(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	c1, err := td.ReserveContainer(ctx, ContainerReservation{Network: api.DefaultNetworkName, Name: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	br := td.br.Bridges["outcall0"]
	for _, i := range []int{13, 14} {
		p := bridge.Port{Index: i, Name: fmt.Sprintf("veth%d", i), Bridge: 10}
		br.Ports = append(br.Ports, p)
		td.handlePortEvent(bridge.PortEvent{Port: p, Joined: true})
	}
	// Not moved yet: nothing happens.
	td.bindArrivedOnce()
	if len(td.dp.Endpoints) != 0 {
		t.Fatalf("bound before the far end was in place: %v", td.dp.Endpoints)
	}
	td.br.FarEnds[13] = c1.MAC
	td.br.FarEnds[14] = net.HardwareAddr{2, 0x42, 0, 0, 0, 0x99} // a stranger's
	td.c.Reset()
	td.bindArrivedOnce()
	if err := td.c.InOrder("dp.SetEndpoint 13", "bridges.PinEndpoint 13"); err != nil {
		t.Fatal(err)
	}
	if _, ok := td.dp.Endpoints[14]; ok {
		t.Error("a port whose far end carries no reserved MAC got an identity")
	}
	if got, ok := td.Gateways()[0].Identify(c1.IP); !ok || got.Name != "c1" {
		t.Errorf("Identify(%s) after arrival = %q, %v", c1.IP, got.Name, ok)
	}
	if _, ok := td.ContainerIdentity("cid1"); ok {
		t.Error("a container id known before the manager said it")
	}
	// The manager's bind records the id on the same port.
	td.br.Peers[sandbox+" "+c1.MAC.String()] = 13
	if e, err := td.BindContainer(ctx, "c1", "cid1", sandbox); err != nil || e.Ifindex != 13 || e.ContainerID != "cid1" {
		t.Fatalf("manager's bind after arrival = %+v, %v", e, err)
	}
	if got, ok := td.ContainerIdentity("cid1"); !ok || got.Name != "c1" {
		t.Errorf("ContainerIdentity(cid1) = %+v, %v", got, ok)
	}
	td.mu.Lock()
	awaiting := len(td.awaiting)
	td.mu.Unlock()
	if awaiting != 1 { // port 14, until its window ends
		t.Errorf("%d ports watched, want 1 (the stranger's)", awaiting)
	}
}
