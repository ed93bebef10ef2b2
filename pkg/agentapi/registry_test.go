package agentapi

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/bridge"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/events"
	"outcall.dev/outcall/pkg/network"
	"outcall.dev/outcall/pkg/network/networktest"
)

// TestRealRegistry: the agent API over the daemon's own identity registry
// (a network.Controller on fake kernel parts), not a fake of it: a
// container reserved and bound as the Docker manager does it checks in
// under its Docker id, its agent.name comes from its container name, its
// release refuses it, and a restart on a new port needs a new check-in.
func TestRealRegistry(t *testing.T) {
	dir := t.TempDir()
	calls := &networktest.Calls{}
	br := networktest.NewBridges(calls)
	br.Bridges["outcall0"] = &networktest.Bridge{Index: 10, MAC: net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 10}}
	reg, err := endpoint.OpenWithOptions(endpoint.Options{Path: filepath.Join(dir, "endpoints.json"), DefaultNetwork: api.DefaultNetworkName})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := network.New(network.Options{
		Default:     network.Network{Name: api.DefaultNetworkName, Bridge: "outcall0", Gateway: netip.MustParsePrefix("10.200.0.1/24")},
		SubnetBlock: netip.MustParsePrefix("10.200.0.0/16"),
		StatePath:   filepath.Join(dir, "networks.json"),
		OpenDatapath: func(datapath.Options) (network.Datapath, error) {
			return networktest.NewDatapath(calls), nil
		},
		Floor: networktest.NewFloor(calls), Bridges: br, Endpoints: reg, Events: events.New(),
		HostAddrs:  func() ([]netip.Addr, error) { return nil, nil },
		HostRoutes: func() ([]netip.Prefix, error) { return nil, nil },
		SandboxDir: "/run/docker/netns",
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Up(); err != nil {
		t.Fatal(err)
	}
	defer ctl.Shutdown()
	ctx := context.Background()
	bind := func(port int) {
		t.Helper()
		e, err := ctl.ReserveContainer(ctx, network.ContainerReservation{Network: api.DefaultNetworkName, Name: "foobar-1"})
		if err != nil {
			t.Fatal(err)
		}
		b := br.Bridges["outcall0"]
		b.Ports = append(b.Ports, bridge.Port{Index: port, Name: "veth" + string(rune('a'+port%26)), Bridge: 10})
		sandbox := "/run/docker/netns/" + string(rune('a'+port%26))
		br.Peers[sandbox+" "+e.MAC.String()] = port
		if _, err := ctl.BindContainer(ctx, "foobar-1", cidA, sandbox); err != nil {
			t.Fatal(err)
		}
	}
	bind(13)

	h := newHarness(t, func(o *Options) { o.Identities = ctl })
	h.becomeContainer(cidA)
	r := h.do("POST", api.AgentRouteCheckin, "", "{}")
	if r.status != 200 || r.data()["container_id"] != cidA {
		t.Fatalf("check-in of a bound container: %d %s", r.status, r.raw)
	}
	tok := r.data()["session_token"].(string)
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"network_call","target":"db:5432"}`), true, "foobar-db", nil)

	// A container the registry never bound (another id) is refused.
	h.becomeContainer(cidB)
	wantError(t, h.do("POST", api.AgentRouteCheckin, "", "{}"), 403, "check-in rejected: peer is not a managed container")

	// Stopped: the identity is released and the container refused.
	h.becomeContainer(cidA)
	if err := ctl.ReleaseContainer(ctx, "foobar-1"); err != nil {
		t.Fatal(err)
	}
	wantError(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"tool_exec","target":"ls"}`), 403, "check-in rejected: peer is not a managed container")
	// Started again on a new port: the old token belongs to the old
	// lifetime.
	bind(14)
	wantError(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"tool_exec","target":"ls"}`), 401, "invalid or missing session token")
	tok2 := h.checkin()
	if tok2 == tok {
		t.Fatal("the restarted container got its old token")
	}
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok2, `{"action_type":"tool_exec","target":"ls"}`), true, "allow-ls", nil)
}
