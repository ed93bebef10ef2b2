package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/network/networktest"
)

// fakeEngine is a container engine's networks, recording into the
// Controller's call log.
type fakeEngine struct {
	c        *networktest.Calls
	used     []netip.Prefix
	failList error
	failMake error
	failRm   error
	made     map[string]Network
}

func (e *fakeEngine) UsedSubnets(context.Context) ([]netip.Prefix, error) {
	e.c.Add("engine.UsedSubnets")
	return e.used, e.failList
}

func (e *fakeEngine) EnsureNetwork(_ context.Context, n Network) (string, error) {
	e.c.Add("engine.EnsureNetwork %s", n.Name)
	if e.failMake != nil {
		return "", e.failMake
	}
	e.made[n.Name] = n
	return "docker-" + n.Name, nil
}

func (e *fakeEngine) RemoveNetwork(_ context.Context, name string) error {
	e.c.Add("engine.RemoveNetwork %s", name)
	if e.failRm != nil {
		return e.failRm
	}
	delete(e.made, name)
	return nil
}

// TestEngineNetworks: with a container engine, a network's subnet avoids
// the engine's networks, the engine's network is made after the bridge
// and removed before it, and when the engine fails nothing is left
// half-made.
func TestEngineNetworks(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	eng := &fakeEngine{c: td.c, made: map[string]Network{}, used: []netip.Prefix{netip.MustParsePrefix("10.200.1.0/24")}}
	td.SetEngine(eng)

	res, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("staging")})
	if err != nil {
		t.Fatal(err)
	}
	bridgeName := BridgeName("outcall-staging")
	if res.Subnet != "10.200.2.0/24" || res.NetworkID != "docker-outcall-staging" || eng.made["outcall-staging"].Bridge != bridgeName {
		t.Errorf("create = %+v, engine made %+v; want 10.200.2.0/24 (10.200.1.0/24 is Docker's) naming %s", res, eng.made, bridgeName)
	}
	if err := td.c.InOrder("engine.UsedSubnets", "bridges.Ensure "+bridgeName, "engine.EnsureNetwork outcall-staging"); err != nil {
		t.Fatal(err)
	}
	if st, _ := td.Network(ctx, ptr("staging")); st.NetworkID == nil || *st.NetworkID != "docker-outcall-staging" {
		t.Errorf("status id %v, want the Docker network's", st.NetworkID)
	}
	if _, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("clash"), Subnet: ptr("10.200.1.0/24")}); !errors.Is(err, apikit.ErrConflict) {
		t.Errorf("create on a Docker network's subnet: %v, want a conflict", err)
	}

	// The engine cannot list: 503, nothing made.
	eng.failList = errors.New("docker down")
	if _, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("later")}); !errors.Is(err, apikit.ErrUnavailable) {
		t.Errorf("create with the engine down: %v, want unavailable", err)
	}
	eng.failList = nil
	// The engine cannot make its network: the bridge goes again.
	eng.failMake = errors.New("docker refused")
	td.c.Reset()
	if _, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("broken")}); err == nil {
		t.Fatal("create succeeded without its Docker network")
	}
	if _, ok := td.NetworkByName("outcall-broken"); ok || td.br.Bridges[BridgeName("outcall-broken")].Exists {
		t.Error("a network whose Docker network failed is still there")
	}
	eng.failMake = nil

	// Destroy: the engine refuses (containers connected): the network stays.
	eng.failRm = apikit.Errorf(apikit.ErrConflict, "containers connected")
	if _, err := td.DestroyNetwork(ctx, api.NetworkDestroyRequest{Name: ptr("staging")}); !errors.Is(err, apikit.ErrConflict) {
		t.Errorf("destroy refused by the engine: %v", err)
	}
	if _, ok := td.NetworkByName("outcall-staging"); !ok {
		t.Fatal("the engine refused, but the network is gone")
	}
	eng.failRm = nil
	td.c.Reset()
	if res, err := td.DestroyNetwork(ctx, api.NetworkDestroyRequest{Name: ptr("staging")}); err != nil || !res.Destroyed {
		t.Fatalf("destroy = %+v, %v", res, err)
	}
	if err := td.c.InOrder("engine.RemoveNetwork outcall-staging", "bridges.Delete "+bridgeName); err != nil {
		t.Fatal(err)
	}
	// A network with an identity on it is refused before the engine is asked.
	if _, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("busy")}); err != nil {
		t.Fatal(err)
	}
	if _, err := td.ReserveContainer(ctx, ContainerReservation{Network: "outcall-busy", Name: "c1"}); err != nil {
		t.Fatal(err)
	}
	td.c.Reset()
	if _, err := td.DestroyNetwork(ctx, api.NetworkDestroyRequest{Name: ptr("busy")}); !errors.Is(err, apikit.ErrConflict) || td.c.Index("engine.RemoveNetwork outcall-busy") >= 0 {
		t.Errorf("destroy with a container: %v, calls %v", err, td.c.Log())
	}
}

// TestHostRoutesAvoided: a new subnet overlaps no route of the host (the
// fake host routes 10.200.9.0/24 elsewhere): asked for, it is refused;
// allocated, it is skipped.
func TestHostRoutesAvoided(t *testing.T) {
	td := newTestController(t)
	td.open(t)
	ctx := context.Background()
	if _, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("routed"), Subnet: ptr("10.200.9.0/24")}); !errors.Is(err, apikit.ErrConflict) {
		t.Errorf("create on a routed subnet: %v, want a conflict", err)
	}
	for i := 1; i <= 9; i++ {
		res, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr(fmt.Sprintf("n%d", i))})
		if err != nil {
			t.Fatal(err)
		}
		if res.Subnet == "10.200.9.0/24" {
			t.Fatalf("network n%d got the routed subnet", i)
		}
	}
	if _, err := td.CreateNetwork(ctx, api.NetworkCreateRequest{Name: ptr("free"), Subnet: ptr("10.200.77.0/24")}); err != nil {
		t.Errorf("control: a free subnet: %v", err)
	}
}
