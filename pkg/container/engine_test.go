package container_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dcontainer "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"outcall.dev/outcall/pkg/container"
	"outcall.dev/outcall/pkg/container/containertest"

	"outcall.dev/outcall/pkg/api"
)

func TestSocketPath(t *testing.T) {
	for in, want := range map[string]string{
		"unix:///var/run/docker.sock":       "/var/run/docker.sock",
		"unix:///run/user/1000/docker.sock": "/run/user/1000/docker.sock",
		"tcp://127.0.0.1:2375":              "",
		"npipe:////./pipe/docker_engine":    "",
		"unix://relative.sock":              "",
		"":                                  "",
	} {
		if got := container.SocketPath(in); got != want {
			t.Errorf("SocketPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNewEngineNoConnection: building the client is not availability
// (S008-FR-036); the ping to an absent engine fails, well within the bound
// (AS-010, EC-003).
func TestNewEngineNoConnection(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	t.Setenv("DOCKER_API_VERSION", "")
	e, err := container.NewEngine()
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	defer e.Close()
	if container.SocketPath(e.DaemonHost()) != sock {
		t.Errorf("daemon host %s", e.DaemonHost())
	}
	_, err = container.Available(context.Background(), e, 0)
	if err == nil || !strings.Contains(err.Error(), "docker unavailable at unix://"+sock) {
		t.Errorf("Available = %v, want docker unavailable", err)
	}
}

// TestAvailable is S008-FR-036, AS-017, EC-020, SC-014: a hung engine is
// degraded within the bound; an old engine is spoken to in its version.
func TestAvailable(t *testing.T) {
	ctx := context.Background()
	t.Run("negotiates down to 1.41", func(t *testing.T) {
		e := containertest.New()
		e.PingAPIVersion = "1.41"
		p, err := container.Available(ctx, e, 0)
		if err != nil || p.APIVersion != "1.41" || e.ClientVersion() != "1.41" {
			t.Errorf("Available = %+v, %v; client version %s", p, err, e.ClientVersion())
		}
	})
	t.Run("hung ping is bounded", func(t *testing.T) {
		e := containertest.New()
		e.HangPing(true)
		start := time.Now()
		_, err := container.Available(ctx, e, 200*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Available = %v, want a deadline error", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Available took %v", d)
		}
	})
	t.Run("engine too old", func(t *testing.T) {
		e := containertest.New()
		e.PingAPIVersion = "1.40"
		if _, err := container.Available(ctx, e, 0); err == nil || !strings.Contains(err.Error(), "older than 1.41") {
			t.Errorf("Available = %v", err)
		}
		if e.ClientVersion() == "1.40" {
			t.Error("negotiated with a refused engine")
		}
	})
	t.Run("ping error", func(t *testing.T) {
		e := containertest.New()
		e.Fail("Ping", errors.New("connection refused"))
		if _, err := container.Available(ctx, e, 0); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("Available = %v", err)
		}
	})
}

// TestFlowOnFake runs the seam end to end on the fake engine: a refused
// request makes no call (SC-002); an accepted one is created on one
// network with its fixed address, found by label, and inspected without
// its env values.
func TestFlowOnFake(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	hostSock := filepath.Join(dir, "host.sock")
	l, err := net.Listen("unix", hostSock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	v, err := container.NewValidator(container.Policy{HostSocket: hostSock, AgentSocket: filepath.Join(dir, "agent.sock")})
	if err != nil {
		t.Fatal(err)
	}
	e := containertest.New()
	e.AddImage("my-agent:latest")
	e.AddNetwork(network.Inspect{ID: "net1", Name: "outcall-default", Driver: "bridge", Options: map[string]string{"com.docker.network.bridge.name": "outcall0"}})

	if _, err := v.Validate(api.ContainerCreateRequest{Image: "my-agent:latest", Volumes: []string{dir + ":/x"}}); err == nil {
		t.Fatal("bind of the socket directory accepted")
	}
	if calls := e.Calls(); len(calls) != 0 {
		t.Fatalf("a refused request made Docker calls: %v", calls)
	}

	c, err := v.Validate(api.ContainerCreateRequest{Image: "my-agent", Name: new("foobar-1"), Env: []string{"TOKEN=secret"}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := e.NetworkInspect(ctx, c.Network, network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("02:42:0a:c8:00:02")
	if _, err := container.Available(ctx, e, 0); err != nil {
		t.Fatal(err)
	}
	s, err := container.Build(c, container.Facts{
		Network: n.Name, NetworkID: n.ID, IPv4: netip.MustParseAddr("10.200.0.2"), MAC: mac,
		Gateway: netip.MustParsePrefix("10.200.0.1/24"), DNS: netip.MustParseAddr("10.200.0.1"),
		Proxy: netip.MustParseAddrPort("10.200.0.1:8080"), Identity: 7, APIVersion: e.ClientVersion(), CreatedAt: time.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
	created, err := e.ContainerCreate(ctx, s.Config, s.HostConfig, s.Networking, nil, s.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ContainerStart(ctx, created.ID, dcontainer.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	list, err := e.ContainerList(ctx, dcontainer.ListOptions{All: true, Filters: container.ManagedFilter()})
	if err != nil || len(list) != 1 {
		t.Fatalf("managed list = %v, %v", list, err)
	}
	if info := container.Summarize(list[0]); info.Name != "foobar-1" || info.State != "running" || info.Network != "outcall-default" {
		t.Errorf("info %+v", info)
	}
	in, err := e.ContainerInspect(ctx, "foobar-1")
	if err != nil || !container.IsManaged(in.Config.Labels) {
		t.Fatalf("inspect %v, managed %v", err, in.Config != nil && container.IsManaged(in.Config.Labels))
	}
	res := container.Inspect(in)
	if res.ContainerID != created.ID || res.IPAddress == nil || *res.IPAddress != "10.200.0.2" {
		t.Errorf("inspect %+v", res)
	}
	for _, env := range res.Env {
		if !strings.HasSuffix(env, "=<redacted>") {
			t.Errorf("env %q not redacted", env)
		}
	}
	if in.Config.Labels[container.LabelAgentName] != "foobar" {
		t.Errorf("agent name label %q", in.Config.Labels[container.LabelAgentName])
	}

	// An unmanaged container is not managed (S008-FR-034, AS-016).
	e.AddContainer(containertest.Container{ID: "u1", Name: "other", Config: dcontainer.Config{Image: "x"}})
	u, _ := e.ContainerInspect(ctx, "other")
	if container.IsManaged(u.Config.Labels) {
		t.Error("unlabelled container counted as managed")
	}
	if list, _ := e.ContainerList(ctx, dcontainer.ListOptions{All: true, Filters: container.ManagedFilter()}); len(list) != 1 {
		t.Errorf("managed list holds the unmanaged container: %v", list)
	}
	if f := container.ManagedEventsFilter(); !f.ExactMatch("type", "container") || !f.ExactMatch("label", "managed-by=outcalld") {
		t.Errorf("events filter %v", f)
	}
}
