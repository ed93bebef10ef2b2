package container_test

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	dcontainer "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/container"
	"outcall.dev/outcall/pkg/container/containertest"
)

func staging() container.NetworkInfo {
	return container.NetworkInfo{Name: "outcall-staging", Bridge: "outcall1", Subnet: netip.MustParsePrefix("10.200.1.0/24"),
		Gateway: netip.MustParseAddr("10.200.1.1"), Proxy: netip.MustParseAddrPort("10.200.1.1:8080")}
}

// TestEnsureNetwork is S002-FR-002: the Docker network names the
// network's own bridge, with its subnet and gateway, ICC off, labelled;
// made once; a lookalike is reported and left alone (S002-AS-014).
func TestEnsureNetwork(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	id, err := h.m.EnsureNetwork(ctx, staging())
	if err != nil {
		t.Fatal(err)
	}
	n, err := h.e.NetworkInspect(ctx, "outcall-staging", network.InspectOptions{})
	if err != nil || n.ID != id {
		t.Fatalf("inspect %+v, %v; id %s", n, err, id)
	}
	if n.Driver != "bridge" || n.Options["com.docker.network.bridge.name"] != "outcall1" || n.Options["com.docker.network.bridge.enable_icc"] != "false" ||
		n.Labels["managed-by"] != "outcalld" || len(n.IPAM.Config) != 1 || n.IPAM.Config[0].Subnet != "10.200.1.0/24" || n.IPAM.Config[0].Gateway != "10.200.1.1" {
		t.Errorf("network %+v", n)
	}
	again, err := h.m.EnsureNetwork(ctx, staging())
	if err != nil || again != id || len(callsWith(h.e.Calls(), "NetworkCreate")) != 1 {
		t.Errorf("second ensure = %s, %v; creates %v", again, err, callsWith(h.e.Calls(), "NetworkCreate"))
	}

	for _, tt := range []struct {
		name string
		n    network.Inspect
		msg  string
	}{
		{name: "another bridge", n: network.Inspect{ID: "x1", Name: "outcall-lab", Driver: "bridge", Options: map[string]string{"com.docker.network.bridge.name": "br-0"},
			IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.200.2.0/24"}}}}, msg: `bridge "br-0"`},
		{name: "another subnet", n: network.Inspect{ID: "x1", Name: "outcall-lab", Driver: "bridge", Options: map[string]string{"com.docker.network.bridge.name": "outcall2"},
			IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: "172.30.0.0/16"}}}}, msg: `subnets [172.30.0.0/16]`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.e.AddNetwork(tt.n)
			lab := container.NetworkInfo{Name: "outcall-lab", Bridge: "outcall2", Subnet: netip.MustParsePrefix("10.200.2.0/24"),
				Gateway: netip.MustParseAddr("10.200.2.1"), Proxy: netip.MustParseAddrPort("10.200.2.1:8080")}
			_, err := h.m.EnsureNetwork(ctx, lab)
			if !errorsIs(err, apikit.ErrConflict) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("ensure over a lookalike = %v", err)
			}
			if c := append(callsWith(h.e.Calls(), "NetworkCreate"), callsWith(h.e.Calls(), "NetworkRemove")...); len(c) != 0 {
				t.Errorf("the lookalike was touched: %v", c)
			}
			if err := h.m.RemoveNetwork(ctx, "outcall-lab"); !errorsIs(err, apikit.ErrConflict) {
				t.Errorf("remove of a lookalike = %v", err)
			}
			if _, err := h.e.NetworkInspect(ctx, "outcall-lab", network.InspectOptions{}); err != nil {
				t.Error("the lookalike was removed")
			}
		})
	}
}

func errorsIs(err error, k *apikit.Kind) bool { return kindOf(err) == k }

// TestRemoveNetwork: refused while containers are connected (S002), done
// when none is, no error when there is nothing to remove.
func TestRemoveNetwork(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	h.create(t, "agent-1")
	err := h.m.RemoveNetwork(ctx, "outcall-default")
	if !errorsIs(err, apikit.ErrConflict) || err.Error() != `network "outcall-default" has 1 connected container(s): remove them first` {
		t.Errorf("remove with a container connected = %v", err)
	}
	if _, err := h.m.RemoveContainer(ctx, apiRemove("agent-1")); err != nil {
		t.Fatal(err)
	}
	if err := h.m.RemoveNetwork(ctx, "outcall-default"); err != nil {
		t.Errorf("remove = %v", err)
	}
	if _, err := h.e.NetworkInspect(ctx, "outcall-default", network.InspectOptions{}); err == nil {
		t.Error("still there")
	}
	if err := h.m.RemoveNetwork(ctx, "outcall-default"); err != nil {
		t.Errorf("remove of nothing = %v", err)
	}
	// Docker's own networks are never Outcall's to remove.
	h.e.AddNetwork(network.Inspect{ID: "b0", Name: "bridge", Driver: "bridge", Options: map[string]string{"com.docker.network.bridge.name": "docker0"}})
	if err := h.m.RemoveNetwork(ctx, "bridge"); !errorsIs(err, apikit.ErrConflict) {
		t.Errorf("remove of Docker's bridge = %v", err)
	}
}

// TestUsedSubnetsAndContainers: every Docker network's IPv4 subnets count
// for overlap (S002-FR-013, SC-009); a network's containers are listed
// with their bare addresses.
func TestUsedSubnetsAndContainers(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	h.e.AddNetwork(network.Inspect{ID: "b0", Name: "bridge", Driver: "bridge", IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: "172.17.0.0/16"}, {Subnet: "fd00::/64"}}}})
	h.e.AddNetwork(network.Inspect{ID: "o1", Name: "other", Driver: "bridge", IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.200.8.0/23"}}}})
	got, err := h.m.UsedSubnets(ctx)
	want := []netip.Prefix{netip.MustParsePrefix("10.200.0.0/24"), netip.MustParsePrefix("10.200.8.0/23"), netip.MustParsePrefix("172.17.0.0/16")}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("used subnets %v, %v; want %v", got, err, want)
	}
	h.create(t, "b-agent")
	h.create(t, "a-agent")
	h.e.AddContainer(containertest.Container{ID: "u1", Name: "stopped", Config: dcontainer.Config{Image: "x"}})
	cs, err := h.m.NetworkContainers(ctx, "outcall-default")
	wantCs := []container.NetworkContainer{{Name: "a-agent", IPv4: netip.MustParseAddr("10.200.0.3")}, {Name: "b-agent", IPv4: netip.MustParseAddr("10.200.0.2")}}
	if err != nil || !slices.Equal(cs, wantCs) {
		t.Errorf("containers %v, %v; want %v", cs, err, wantCs)
	}
	if _, err := h.m.NetworkContainers(ctx, "outcall-ghost"); !errorsIs(err, apikit.ErrNotFound) {
		t.Errorf("containers of a missing network = %v", err)
	}
	h.e.SetDown(true)
	if _, err := h.m.UsedSubnets(ctx); !errorsIs(err, apikit.ErrUnavailable) {
		t.Errorf("used subnets with Docker down = %v", err)
	}
}

func apiRemove(name string) api.ContainerRemoveRequest {
	return api.ContainerRemoveRequest{Name: name, Force: true}
}
