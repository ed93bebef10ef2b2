package container_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	dcontainer "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/prometheus/client_golang/prometheus"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/container"
	"outcall.dev/outcall/pkg/container/containertest"
)

// harness is a manager on a fake engine and a fake network controller,
// with outcall-default on both sides and my-agent:latest local.
type harness struct {
	e    *containertest.Engine
	nets *containertest.Networks
	m    *container.Manager
	logs *syncBuffer
	dir  string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// dockerDefault is outcall-default as Docker has it when outcalld made it.
func dockerDefault() network.Inspect {
	return network.Inspect{ID: "net-default", Name: "outcall-default", Driver: "bridge",
		Options: map[string]string{"com.docker.network.bridge.name": "outcall0", "com.docker.network.bridge.enable_icc": "false"},
		IPAM:    network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.200.0.0/24", Gateway: "10.200.0.1"}}},
		Labels:  map[string]string{"managed-by": "outcalld"}}
}

func newHarness(t *testing.T, tweak ...func(*container.ManagerOptions)) *harness {
	t.Helper()
	h := &harness{e: containertest.New(), nets: containertest.NewNetworks(containertest.Default()), logs: &syncBuffer{}, dir: t.TempDir()}
	h.e.AddImage("my-agent:latest")
	h.e.AddNetwork(dockerDefault())
	v, err := container.NewValidator(container.Policy{HostSocket: filepath.Join(h.dir, "host.sock"), AgentSocket: filepath.Join(h.dir, "agent.sock")})
	if err != nil {
		t.Fatal(err)
	}
	o := container.ManagerOptions{
		Engine: h.e, Networks: h.nets, Validator: v,
		Logger:      slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		PingTimeout: 200 * time.Millisecond, MinBackoff: 5 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
	}
	for _, f := range tweak {
		f(&o)
	}
	h.m, err = container.NewManager(o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// create creates a container called name and fails the test otherwise.
func (h *harness) create(t *testing.T, name string) api.ContainerCreateResult {
	t.Helper()
	res, err := h.m.CreateContainer(context.Background(), api.ContainerCreateRequest{Image: "my-agent:latest", Name: &name})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return res
}

func kindOf(err error) *apikit.Kind {
	for _, k := range []*apikit.Kind{apikit.ErrInvalid, apikit.ErrForbidden, apikit.ErrNotFound, apikit.ErrConflict, apikit.ErrUnavailable} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}

func callsWith(calls []string, prefix string) []string {
	var out []string
	for _, c := range calls {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// The manager is what pkg/daemon's ContainerManager asks for.
var _ interface {
	CreateContainer(context.Context, api.ContainerCreateRequest) (api.ContainerCreateResult, error)
	Containers(context.Context) ([]api.ContainerInfo, error)
	Container(context.Context, string) (api.ContainerInspectResult, error)
	StopContainer(context.Context, api.ContainerStopRequest) (api.ContainerStopResult, error)
	RemoveContainer(context.Context, api.ContainerRemoveRequest) (api.ContainerRemoveResult, error)
	PullImage(context.Context, api.ImagePullRequest) (api.ImagePullResult, error)
} = (*container.Manager)(nil)

func TestNewManagerOptions(t *testing.T) {
	v, _ := container.NewValidator(container.Policy{HostSocket: "/run/outcall/host.sock", AgentSocket: "/run/outcall/agent.sock"})
	for _, o := range []container.ManagerOptions{
		{Networks: containertest.NewNetworks(), Validator: v},
		{Engine: containertest.New(), Validator: v},
		{Engine: containertest.New(), Networks: containertest.NewNetworks()},
	} {
		if _, err := container.NewManager(o); err == nil {
			t.Errorf("NewManager(%+v) accepted", o)
		}
	}
	m, err := container.NewManager(container.ManagerOptions{Engine: containertest.New(), Networks: containertest.NewNetworks(), Validator: v})
	if err != nil {
		t.Fatal(err)
	}
	if s := m.Status(); s.State != container.DockerStarting || s.Host != "unix:///var/run/docker.sock" {
		t.Errorf("status before any ping %+v", s)
	}
}

// TestCreate is S008-AS-001 and FR-011: the container is created, started
// and bound to the identity reserved for it before it existed, in that
// order, on the inspected network, from a local image, never pulled.
func TestCreate(t *testing.T) {
	h := newHarness(t)
	res, err := h.m.CreateContainer(context.Background(), api.ContainerCreateRequest{Image: "my-agent:latest", Env: []string{"TOKEN=s3cr3t-value"}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || !strings.HasPrefix(res.Name, "outcall-") || len(res.Name) != len("outcall-")+8 || len(res.ContainerID) != 64 {
		t.Fatalf("result %+v", res)
	}
	c, ok := h.e.Container(res.ContainerID)
	if !ok || !c.Running || c.Name != res.Name {
		t.Fatalf("container %+v, %v", c, ok)
	}
	if c.HostConfig.NetworkMode != "outcall-default" || c.Networking.EndpointsConfig["outcall-default"].NetworkID != "net-default" ||
		!slices.Equal(c.HostConfig.DNS, []string{"10.200.0.1"}) || c.HostConfig.Init == nil || !*c.HostConfig.Init {
		t.Errorf("host config %+v", c.HostConfig)
	}
	if !slices.Contains(c.Config.Env, "HTTP_PROXY=http://10.200.0.1:8080") || !slices.Contains(c.Config.Env, "HTTPS_PROXY=http://10.200.0.1:8080") {
		t.Errorf("env %v", c.Config.Env)
	}
	if c.Config.Labels["managed-by"] != "outcalld" || c.Config.Labels["outcall.network"] != "outcall-default" {
		t.Errorf("labels %v", c.Config.Labels)
	}
	if len(c.HostConfig.Mounts) != 0 {
		t.Errorf("helper mounts without asking: %v", c.HostConfig.Mounts) // S008 conflict 1: off unless asked
	}
	id, ok := h.nets.Identity(res.Name)
	if !ok || !id.Bound || id.ContainerID != res.ContainerID || id.IPv4 != netip.MustParseAddr("10.200.0.2") {
		t.Fatalf("identity %+v, %v", id, ok)
	}
	if ep := c.Networking.EndpointsConfig["outcall-default"]; ep.IPAMConfig.IPv4Address != "10.200.0.2" || ep.MacAddress != id.MAC.String() {
		t.Errorf("endpoint %+v, identity MAC %v", ep, id.MAC)
	}
	if c.Config.Labels["outcall.identity"] != fmt.Sprint(id.Identity) {
		t.Errorf("identity label %q, identity %d", c.Config.Labels["outcall.identity"], id.Identity)
	}
	if got := h.nets.Calls(); !slices.Equal(got, []string{"Reserve " + res.Name, "Bind " + res.Name}) {
		t.Errorf("network controller calls %v", got)
	}
	if h.nets.SandboxKey(res.Name) != c.SandboxKey || c.SandboxKey == "" {
		t.Errorf("bound in %q, container's sandbox %q", h.nets.SandboxKey(res.Name), c.SandboxKey)
	}
	want := []string{"Ping", "NetworkInspect outcall-default", "ImageInspect my-agent:latest", "ContainerInspect " + res.Name,
		"ContainerCreate " + res.Name, "ContainerStart " + res.ContainerID, "ContainerInspect " + res.ContainerID}
	if got := h.e.Calls(); !slices.Equal(got, want) {
		t.Errorf("engine calls\n got %v\nwant %v", got, want)
	}
	if strings.Contains(h.logs.String(), "s3cr3t-value") {
		t.Errorf("an env value was logged: %s", h.logs.String())
	}
	if s := h.m.Status(); s.State != container.DockerAvailable || s.APIVersion != "1.51" {
		t.Errorf("status %+v", s)
	}
}

// TestCreateRefused: every refusal before the identity was reserved
// leaves nothing: no identity, no container (S008-SC-002, AS-006, AS-010,
// EC-002, EC-003, EC-005, EC-013, EC-020, FR-003, FR-030, FR-032).
func TestCreateRefused(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(h *harness)
		req     api.ContainerCreateRequest
		kind    *apikit.Kind
		msg     string // the whole message when exact, else a part
		exact   bool
		noCalls bool // not even a ping: refused by validation
	}{
		{name: "validation before Docker", req: api.ContainerCreateRequest{Image: "my-agent:latest", Volumes: []string{"/var/run/docker.sock:/s"}},
			kind: apikit.ErrForbidden, msg: `bind mount denied - "/var/run/docker.sock" exposes protected host path`, noCalls: true},
		{name: "invalid user", req: api.ContainerCreateRequest{Image: "my-agent:latest", User: new("0:0")}, kind: apikit.ErrInvalid, msg: "root is refused", noCalls: true},
		{name: "AS-006 no such Outcall network", req: api.ContainerCreateRequest{Image: "my-agent:latest", Network: new("outcall-staging")},
			kind: apikit.ErrNotFound, msg: `network "outcall-staging" does not exist`, exact: true},
		{name: "FR-032 lookalike on another bridge", setup: func(h *harness) {
			h.nets.AddNetwork(container.NetworkInfo{Name: "outcall-staging", Bridge: "outcall1", Subnet: netip.MustParsePrefix("10.200.1.0/24"),
				Gateway: netip.MustParseAddr("10.200.1.1"), Proxy: netip.MustParseAddrPort("10.200.1.1:8080")})
			h.e.AddNetwork(network.Inspect{ID: "forged", Name: "outcall-staging", Driver: "bridge", Options: map[string]string{"com.docker.network.bridge.name": "docker0"},
				IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.200.1.0/24"}}}})
		}, req: api.ContainerCreateRequest{Image: "my-agent:latest", Network: new("outcall-staging")}, kind: apikit.ErrConflict,
			msg: `network "outcall-staging" is not an Outcall network: Docker's has bridge "docker0"`},
		{name: "FR-030 lookalike of another driver", setup: func(h *harness) {
			h.nets.AddNetwork(container.NetworkInfo{Name: "outcall-staging", Bridge: "outcall1", Subnet: netip.MustParsePrefix("10.200.1.0/24"),
				Gateway: netip.MustParseAddr("10.200.1.1"), Proxy: netip.MustParseAddrPort("10.200.1.1:8080")})
			h.e.AddNetwork(network.Inspect{ID: "forged", Name: "outcall-staging", Driver: "macvlan", Options: map[string]string{"com.docker.network.bridge.name": "outcall1"},
				IPAM: network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.200.1.0/24"}}}})
		}, req: api.ContainerCreateRequest{Image: "my-agent:latest", Network: new("outcall-staging")}, kind: apikit.ErrConflict, msg: `driver "macvlan"`},
		{name: "lookalike on another subnet", setup: func(h *harness) {
			h.e.NetworkRemove(context.Background(), "net-default")
			n := dockerDefault()
			n.IPAM.Config[0].Subnet = "10.99.0.0/24"
			h.e.AddNetwork(n)
		}, req: api.ContainerCreateRequest{Image: "my-agent:latest"}, kind: apikit.ErrConflict, msg: `subnets [10.99.0.0/24]`},
		{name: "EC-005 image not local", req: api.ContainerCreateRequest{Image: "ghost:latest"}, kind: apikit.ErrNotFound,
			msg: `image "ghost:latest" not found locally — pull it first`, exact: true},
		{name: "EC-013 duplicate name", setup: func(h *harness) {
			h.e.AddContainer(containertest.Container{ID: "other1", Name: "my-task", Config: dcontainer.Config{Image: "x"}, Running: true})
		}, req: api.ContainerCreateRequest{Image: "my-agent:latest", Name: new("my-task")}, kind: apikit.ErrConflict,
			msg: `container name "my-task" is already in use`, exact: true},
		{name: "AS-010 Docker unreachable", setup: func(h *harness) { h.e.SetDown(true) },
			req: api.ContainerCreateRequest{Image: "my-agent:latest"}, kind: apikit.ErrUnavailable, msg: "docker unavailable at unix:///var/run/docker.sock"},
		{name: "EC-020 ping hangs", setup: func(h *harness) { h.e.HangPing(true) },
			req: api.ContainerCreateRequest{Image: "my-agent:latest"}, kind: apikit.ErrUnavailable, msg: "context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.setup != nil {
				tt.setup(h)
			}
			before := len(h.e.Calls())
			start := time.Now()
			_, err := h.m.CreateContainer(context.Background(), tt.req)
			if err == nil {
				t.Fatal("create accepted")
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("refusal took %v", d)
			}
			if kindOf(err) != tt.kind {
				t.Errorf("error %q is of kind %v, want %v", err, kindOf(err), tt.kind)
			}
			if tt.exact && err.Error() != tt.msg || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q, want %q", err, tt.msg)
			}
			calls := h.e.Calls()[before:]
			if tt.noCalls && len(calls) != 0 {
				t.Errorf("a refused request asked Docker: %v", calls)
			}
			if c := callsWith(calls, "ContainerCreate"); len(c) != 0 {
				t.Errorf("container created: %v", c)
			}
			if c := callsWith(calls, "ImagePull"); len(c) != 0 {
				t.Errorf("implicit pull: %v", c)
			}
			if c := callsWith(calls, "NetworkRemove"); len(c) != 0 {
				t.Errorf("a lookalike network was touched: %v", c)
			}
			if got := h.nets.Calls(); len(got) != 0 {
				t.Errorf("identity calls %v", got)
			}
			if tt.name == "EC-013 duplicate name" {
				if c, _ := h.e.Container("other1"); !c.Running {
					t.Error("the container holding the name was touched")
				}
			}
			if tt.kind == apikit.ErrUnavailable {
				if s := h.m.Status(); s.State != container.DockerDegraded || s.Reason == "" {
					t.Errorf("status %+v, want degraded with its reason", s)
				}
			}
		})
	}
}

// TestCreateMakesMissingDockerNetwork: an Outcall network whose Docker
// network is gone (removed behind outcalld's back, or made while Docker
// was down) gets it at create, with the exact options.
func TestCreateMakesMissingDockerNetwork(t *testing.T) {
	h := newHarness(t)
	if err := h.e.NetworkRemove(context.Background(), "net-default"); err != nil {
		t.Fatal(err)
	}
	res := h.create(t, "agent-1")
	n, err := h.e.NetworkInspect(context.Background(), "outcall-default", network.InspectOptions{})
	if err != nil || n.Options["com.docker.network.bridge.name"] != "outcall0" {
		t.Fatalf("network %+v, %v", n, err)
	}
	c, _ := h.e.Container(res.ContainerID)
	if c.Networking.EndpointsConfig["outcall-default"].NetworkID != n.ID {
		t.Errorf("container joined %q, network is %q", c.Networking.EndpointsConfig["outcall-default"].NetworkID, n.ID)
	}
}

// TestCreateRollback is S008-FR-035, AS-018, SC-015: after Docker created
// the container, a failed start or binding removes it with its anonymous
// volumes and releases its identity; a failed rollback is in the error
// beside the failure.
func TestCreateRollback(t *testing.T) {
	startErr := errors.New("OCI runtime create failed")
	bindErr := errors.New("port of the container not found")
	removeErr := errors.New("driver failed removing the container")
	releaseErr := errors.New("registry unreachable")
	tests := []struct {
		name      string
		setup     func(h *harness)
		want      []error
		removed   bool // the container is gone
		released  bool // the identity is gone
		createErr bool // the failure was the create: nothing to remove
	}{
		{name: "start fails", setup: func(h *harness) { h.e.Fail("ContainerStart", startErr) }, want: []error{startErr}, removed: true, released: true},
		{name: "bind fails", setup: func(h *harness) { h.nets.Fail("Bind", bindErr) }, want: []error{bindErr}, removed: true, released: true},
		{name: "inspect after start fails", setup: func(h *harness) {
			h.e.FailOnce("ContainerInspect", errdefs.ErrNotFound.WithMessage("No such container")) // the name check
			h.e.FailOnce("ContainerInspect", errors.New("inspect broke"))
		}, want: []error{errors.New("inspect broke")}, removed: true, released: true},
		{name: "start fails, remove fails too", setup: func(h *harness) {
			h.e.Fail("ContainerStart", startErr)
			h.e.Fail("ContainerRemove", removeErr)
		}, want: []error{startErr, removeErr}, removed: false, released: true},
		{name: "bind fails, release fails too", setup: func(h *harness) {
			h.nets.Fail("Bind", bindErr)
			h.nets.Fail("Release", releaseErr)
		}, want: []error{bindErr, releaseErr}, removed: true, released: false},
		{name: "create fails: the identity only", setup: func(h *harness) {
			h.e.Fail("ContainerCreate", errdefs.ErrInvalidArgument.WithMessage("invalid mount config"))
		}, want: nil, removed: true, released: true, createErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.setup(h)
			_, err := h.m.CreateContainer(context.Background(), api.ContainerCreateRequest{Image: "my-agent:latest", Name: new("agent-1")})
			if err == nil {
				t.Fatal("create succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w.Error()) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, ok := h.e.Container("agent-1"); ok == tt.removed {
				t.Errorf("container exists: %v, want removed %v", ok, tt.removed)
			}
			if _, ok := h.nets.Identity("agent-1"); ok == tt.released {
				t.Errorf("identity held: %v, want released %v", ok, tt.released)
			}
			rm := callsWith(h.e.Calls(), "ContainerRemove")
			if tt.createErr {
				if len(rm) != 0 {
					t.Errorf("removed a container that was never created: %v", rm)
				}
				if kindOf(err) != apikit.ErrInvalid {
					t.Errorf("kind %v of %q", kindOf(err), err)
				}
				return
			}
			if len(rm) != 1 || !strings.HasSuffix(rm[0], "force=true volumes=true") {
				t.Errorf("rollback removes %v, want one forced removal with volumes", rm)
			}
		})
	}
}

// TestCreateOneShot is S008-FR-011: a container that exits at once after
// a successful start is created; it has no port, so no identity.
func TestCreateOneShot(t *testing.T) {
	h := newHarness(t)
	h.e.AddImage("one-shot:latest")
	h.e.OneShot("one-shot:latest")
	res, err := h.m.CreateContainer(context.Background(), api.ContainerCreateRequest{Image: "one-shot:latest", Name: new("job-1")})
	if err != nil || !res.Created {
		t.Fatalf("create = %+v, %v", res, err)
	}
	if c, ok := h.e.Container("job-1"); !ok || c.Running {
		t.Errorf("container %+v, %v", c, ok)
	}
	if _, ok := h.nets.Identity("job-1"); ok {
		t.Error("an exited container keeps an identity")
	}
}

// TestCreateMany is S008-EC-009: rapid creates get unique names and
// addresses.
func TestCreateMany(t *testing.T) {
	h := newHarness(t)
	const n = 40
	var wg sync.WaitGroup
	results := make([]api.ContainerCreateResult, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = h.m.CreateContainer(context.Background(), api.ContainerCreateRequest{Image: "my-agent:latest"})
		})
	}
	wg.Wait()
	names, ips := map[string]bool{}, map[netip.Addr]bool{}
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		id, ok := h.nets.Identity(r.Name)
		if names[r.Name] || !ok || ips[id.IPv4] {
			t.Fatalf("create %d: name %s (seen %v), identity %+v", i, r.Name, names[r.Name], id)
		}
		names[r.Name], ips[id.IPv4] = true, true
	}
}

// TestStop is S008-AS-004, FR-012, FR-028, FR-034, EC-004, EC-007,
// AS-016, EC-019.
func TestStop(t *testing.T) {
	tests := []struct {
		name     string
		req      api.ContainerStopRequest
		setup    func(h *harness)
		want     api.ContainerStopResult
		kind     *apikit.Kind
		msg      string
		stopCall string // the exact ContainerStop call; "" none
	}{
		{name: "AS-004 running", req: api.ContainerStopRequest{Name: "agent-1"}, want: api.ContainerStopResult{Name: "agent-1", Stopped: true}, stopCall: "timeout=10"},
		{name: "FR-028 timeout", req: api.ContainerStopRequest{Name: "agent-1", Timeout: new(int64(15))}, want: api.ContainerStopResult{Name: "agent-1", Stopped: true}, stopCall: "timeout=15"},
		{name: "EC-007 already stopped", setup: func(h *harness) { h.e.SetRunning("agent-1", false) }, req: api.ContainerStopRequest{Name: "agent-1"},
			want: api.ContainerStopResult{Name: "agent-1", Stopped: false}},
		{name: "EC-004 missing", req: api.ContainerStopRequest{Name: "ghost"}, want: api.ContainerStopResult{Name: "ghost"},
			kind: apikit.ErrNotFound, msg: `container "ghost" does not exist`},
		{name: "AS-016 unmanaged", req: api.ContainerStopRequest{Name: "theirs"}, want: api.ContainerStopResult{Name: "theirs"},
			kind: apikit.ErrForbidden, msg: `container "theirs" is not managed by outcalld`},
		{name: "id instead of name", req: api.ContainerStopRequest{Name: "theirs-id"}, want: api.ContainerStopResult{Name: "theirs-id"},
			kind: apikit.ErrForbidden, msg: `container "theirs-id" is not managed by outcalld`},
		{name: "negative timeout", req: api.ContainerStopRequest{Name: "agent-1", Timeout: new(int64(-1))}, want: api.ContainerStopResult{Name: "agent-1"},
			kind: apikit.ErrInvalid, msg: "invalid timeout -1"},
		{name: "empty name", req: api.ContainerStopRequest{}, kind: apikit.ErrInvalid, msg: "a container name is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			res := h.create(t, "agent-1")
			h.e.AddContainer(containertest.Container{ID: "theirs-id", Name: "theirs", Config: dcontainer.Config{Image: "secret-image:1", Env: []string{"K=v"}}, Running: true})
			if tt.setup != nil {
				tt.setup(h)
			}
			got, err := h.m.StopContainer(context.Background(), tt.req)
			if kindOf(err) != tt.kind || tt.kind != nil && err.Error() != tt.msg && !strings.HasPrefix(err.Error(), tt.msg) {
				t.Fatalf("stop = %v, want %q of kind %v", err, tt.msg, tt.kind)
			}
			if got != tt.want {
				t.Errorf("stop = %+v, want %+v", got, tt.want)
			}
			if err != nil && (strings.Contains(err.Error(), "secret-image") || strings.Contains(err.Error(), "theirs-id\" (")) {
				t.Errorf("the refusal tells of the container: %v", err)
			}
			stops := callsWith(h.e.Calls(), "ContainerStop")
			if tt.stopCall == "" && len(stops) != 0 || tt.stopCall != "" && !slices.Equal(stops, []string{"ContainerStop " + res.ContainerID + " " + tt.stopCall}) {
				t.Errorf("stop calls %v, want on the id with %q", stops, tt.stopCall)
			}
			if c, _ := h.e.Container("theirs"); !c.Running {
				t.Error("the unmanaged container was stopped")
			}
			if c, _ := h.e.Container("agent-1"); !c.Running {
				if _, ok := h.nets.Identity("agent-1"); ok {
					t.Error("a stopped container keeps its identity")
				}
			}
		})
	}
}

// TestRemove is S008-AS-005, FR-013, FR-034, EC-008, AS-016.
func TestRemove(t *testing.T) {
	tests := []struct {
		name   string
		req    api.ContainerRemoveRequest
		setup  func(h *harness)
		want   api.ContainerRemoveResult
		kind   *apikit.Kind
		msg    string
		remain bool // agent-1 still exists
	}{
		{name: "AS-005 stopped", setup: func(h *harness) {
			h.m.StopContainer(context.Background(), api.ContainerStopRequest{Name: "agent-1"})
		}, req: api.ContainerRemoveRequest{Name: "agent-1"}, want: api.ContainerRemoveResult{Name: "agent-1", Removed: true}},
		{name: "FR-013 running without force", req: api.ContainerRemoveRequest{Name: "agent-1"}, want: api.ContainerRemoveResult{Name: "agent-1"},
			kind: apikit.ErrConflict, msg: `container "agent-1" is still running — stop it first or use force`, remain: true},
		{name: "running with force", req: api.ContainerRemoveRequest{Name: "agent-1", Force: true}, want: api.ContainerRemoveResult{Name: "agent-1", Removed: true}},
		{name: "EC-008 already removed", req: api.ContainerRemoveRequest{Name: "ghost"}, want: api.ContainerRemoveResult{Name: "ghost"}, remain: true},
		{name: "AS-016 unmanaged", req: api.ContainerRemoveRequest{Name: "theirs", Force: true}, want: api.ContainerRemoveResult{Name: "theirs"},
			kind: apikit.ErrForbidden, msg: `container "theirs" is not managed by outcalld`, remain: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			res := h.create(t, "agent-1")
			h.e.AddContainer(containertest.Container{ID: "theirs-id", Name: "theirs", Config: dcontainer.Config{Image: "x"}})
			if tt.setup != nil {
				tt.setup(h)
			}
			got, err := h.m.RemoveContainer(context.Background(), tt.req)
			if kindOf(err) != tt.kind || tt.kind != nil && err.Error() != tt.msg {
				t.Fatalf("remove = %v, want %q of kind %v", err, tt.msg, tt.kind)
			}
			if got != tt.want {
				t.Errorf("remove = %+v, want %+v", got, tt.want)
			}
			if _, ok := h.e.Container("agent-1"); ok != tt.remain {
				t.Errorf("agent-1 exists %v, want %v", ok, tt.remain)
			}
			if _, ok := h.e.Container("theirs"); !ok {
				t.Error("the unmanaged container was removed")
			}
			if !tt.remain {
				if rm := callsWith(h.e.Calls(), "ContainerRemove"); len(rm) != 1 || !strings.HasPrefix(rm[0], "ContainerRemove "+res.ContainerID) || !strings.HasSuffix(rm[0], "volumes=true") {
					t.Errorf("remove calls %v, want the id with its volumes", rm)
				}
				if _, ok := h.nets.Identity("agent-1"); ok {
					t.Error("a removed container keeps its identity")
				}
			}
			if tt.req.Force && !tt.remain {
				if st := callsWith(h.e.Calls(), "ContainerStop"); len(st) != 1 {
					t.Errorf("force did not stop first: %v", st)
				}
			}
		})
	}
}

// TestListAndInspect is S008-FR-014, FR-015, AS-007, AS-016, EC-019: the
// label decides, never the name; values never leave.
func TestListAndInspect(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if _, err := h.m.CreateContainer(ctx, api.ContainerCreateRequest{Image: "my-agent:latest", Name: new("review-1"), Env: []string{"TOKEN=sk-live-1"}}); err != nil {
		t.Fatal(err)
	}
	h.create(t, "another")
	h.m.StopContainer(ctx, api.ContainerStopRequest{Name: "another"})
	h.e.AddContainer(containertest.Container{ID: "u1", Name: "outcall-deadbeef", Config: dcontainer.Config{Image: "x"}, Running: true})
	list, err := h.m.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range list {
		got = append(got, c.Name+" "+c.State+" "+c.Network+" "+c.Image)
	}
	if want := []string{"another exited outcall-default my-agent:latest", "review-1 running outcall-default my-agent:latest"}; !slices.Equal(got, want) {
		t.Errorf("list %v, want %v", got, want)
	}
	in, err := h.m.Container(ctx, "review-1")
	if err != nil {
		t.Fatal(err)
	}
	if in.IPAddress == nil || *in.IPAddress != "10.200.0.2" || in.Network != "outcall-default" || in.State != "running" {
		t.Errorf("inspect %+v", in)
	}
	if !slices.Contains(in.Env, "TOKEN=<redacted>") || strings.Contains(fmt.Sprint(in), "sk-live-1") {
		t.Errorf("env %v", in.Env)
	}
	if _, err := h.m.Container(ctx, "outcall-deadbeef"); kindOf(err) != apikit.ErrForbidden || err.Error() != `container "outcall-deadbeef" is not managed by outcalld` {
		t.Errorf("inspect of an unmanaged container = %v", err)
	}
	if _, err := h.m.Container(ctx, "ghost"); kindOf(err) != apikit.ErrNotFound || err.Error() != `container "ghost" does not exist` {
		t.Errorf("inspect of a missing container = %v", err)
	}
}

// TestPull is S008-FR-017, IF-006, AS-008, EC-006.
func TestPull(t *testing.T) {
	tests := []struct {
		name  string
		image string
		setup func(h *harness)
		want  api.ImagePullResult
		kind  *apikit.Kind
		msg   string
	}{
		{name: "AS-008 absent", image: "alpine:3.20", want: api.ImagePullResult{Image: "alpine:3.20", Pulled: true}},
		{name: "present and current", image: "my-agent:latest", want: api.ImagePullResult{Image: "my-agent:latest"}},
		{name: "EC-006 refused in the stream", image: "my-agent:latest", setup: func(h *harness) {
			h.e.PullFails("my-agent:latest", "pull access denied for my-agent, repository does not exist or may require 'docker login'")
		}, want: api.ImagePullResult{Image: "my-agent:latest"}, kind: apikit.ErrForbidden,
			msg: `failed to pull image "my-agent:latest": pull access denied for my-agent, repository does not exist or may require 'docker login'`},
		{name: "IF-006 not found", image: "my-agent:latest", setup: func(h *harness) { h.e.PullFails("my-agent:latest", "not found") },
			want: api.ImagePullResult{Image: "my-agent:latest"}, kind: apikit.ErrNotFound, msg: `failed to pull image "my-agent:latest": not found`},
		{name: "call fails", image: "my-agent:latest", setup: func(h *harness) {
			h.e.Fail("ImagePull", errdefs.ErrNotFound.WithMessage("manifest for my-agent:latest not found"))
		}, want: api.ImagePullResult{Image: "my-agent:latest"}, kind: apikit.ErrNotFound, msg: `failed to pull image "my-agent:latest": manifest for my-agent:latest not found`},
		{name: "bad reference", image: "agent:", want: api.ImagePullResult{Image: "agent:"}, kind: apikit.ErrInvalid, msg: `invalid image "agent:": empty tag`},
		{name: "Docker down", image: "alpine", setup: func(h *harness) { h.e.SetDown(true) }, want: api.ImagePullResult{Image: "alpine"}, kind: apikit.ErrUnavailable, msg: "docker unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.setup != nil {
				tt.setup(h)
			}
			got, err := h.m.PullImage(context.Background(), api.ImagePullRequest{Image: tt.image})
			if kindOf(err) != tt.kind || tt.kind != nil && !strings.HasPrefix(err.Error(), tt.msg) {
				t.Fatalf("pull = %v (kind %v), want %q of kind %v", err, kindOf(err), tt.msg, tt.kind)
			}
			if got != tt.want {
				t.Errorf("pull = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestDockerGoneAfterStart is S008-EC-011: calls fail as unavailable and
// the manager says degraded; when Docker is back, the next call works.
func TestDockerGoneAfterStart(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.create(t, "agent-1")
	h.e.SetDown(true)
	if _, err := h.m.Containers(ctx); kindOf(err) != apikit.ErrUnavailable || !strings.Contains(err.Error(), "Cannot connect to the Docker daemon") {
		t.Errorf("list with Docker gone = %v", err)
	}
	if s := h.m.Status(); s.State != container.DockerDegraded {
		t.Errorf("status %+v", s)
	}
	if _, err := h.m.StopContainer(ctx, api.ContainerStopRequest{Name: "agent-1"}); kindOf(err) != apikit.ErrUnavailable {
		t.Errorf("stop with Docker gone = %v", err)
	}
	h.e.SetDown(false)
	if list, err := h.m.Containers(ctx); err != nil || len(list) != 1 {
		t.Errorf("list with Docker back = %v, %v", list, err)
	}
	if s := h.m.Status(); s.State != container.DockerAvailable {
		t.Errorf("status %+v", s)
	}
}

func TestCollectors(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewPedanticRegistry()
	for _, c := range h.m.Collectors() {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	h.create(t, "agent-1")
	h.m.Containers(context.Background())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range []string{"outcall_docker_available", "outcall_managed_containers", "outcall_docker_event_stream_reconnects_total", "outcall_container_create_duration_seconds"} {
		if !got[name] {
			t.Errorf("metric %s not gathered (have %v)", name, got)
		}
	}
}

// TestCreateResolvConf: with a ResolvDir, every managed container gets the
// daemon's resolver file over /etc/resolv.conf, read-only, naming only its
// network's DNS filter, readable by the container's non-root user; without
// one, Docker's own.
func TestCreateResolvConf(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "resolv")
	h := newHarness(t, func(o *container.ManagerOptions) { o.ResolvDir = dir })
	for _, name := range []string{"r1", "r2"} {
		res := h.create(t, name)
		c, _ := h.e.Container(res.ContainerID)
		want := mount.Mount{Type: mount.TypeBind, Source: filepath.Join(dir, "outcall-default.conf"), Target: "/etc/resolv.conf", ReadOnly: true}
		if !slices.Contains(c.HostConfig.Mounts, want) {
			t.Errorf("%s: mounts %+v, want %+v", name, c.HostConfig.Mounts, want)
		}
	}
	path := filepath.Join(dir, "outcall-default.conf")
	b, err := os.ReadFile(path)
	if err != nil || string(b) != container.ResolvConfContent(netip.MustParseAddr("10.200.0.1")) ||
		!strings.Contains(string(b), "nameserver 10.200.0.1\n") || strings.Count(string(b), "nameserver") != 1 {
		t.Errorf("resolver file %q, %v", b, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("resolver file mode %v, %v; want 0644", fi.Mode(), err)
	}
	plain := newHarness(t)
	res := plain.create(t, "r3")
	if c, _ := plain.e.Container(res.ContainerID); len(c.HostConfig.Mounts) != 0 {
		t.Errorf("without a ResolvDir: mounts %+v", c.HostConfig.Mounts)
	}
}
