package container_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dcontainer "github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
	"github.com/prometheus/client_golang/prometheus"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/container"
)

// eventually polls cond until it holds or 5 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// run starts Run and returns a stop function that cancels it and waits
// for it to return.
func (h *harness) run(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.m.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return")
		}
	}
	t.Cleanup(stop)
	return stop
}

// following waits until Run has swept and follows the stream.
func (h *harness) following(t *testing.T) {
	t.Helper()
	eventually(t, "the event stream", func() bool {
		return h.e.Subscribers() > 0 && h.m.Status().State == container.DockerAvailable
	})
	// The sweep runs after the subscription; a sweep's list is its end.
	eventually(t, "the sweep", func() bool { return sweptAfterLastEvents(h.e.Calls()) })
}

func sweptAfterLastEvents(calls []string) bool {
	last := -1
	for i, c := range calls {
		if strings.HasPrefix(c, "Events") {
			last = i
		}
	}
	if last < 0 {
		return false
	}
	for _, c := range calls[last:] {
		if strings.HasPrefix(c, "ContainerList") {
			return true
		}
	}
	return false
}

func bound(h *harness, name, id string) func() bool {
	return func() bool {
		r, ok := h.nets.Identity(name)
		return ok && r.Bound && r.ContainerID == id
	}
}

func released(h *harness, name string) func() bool {
	return func() bool { _, ok := h.nets.Identity(name); return !ok }
}

// TestRunFollowsDeaths is S008-FR-031: death from any cause (stop, OOM
// kill, crash, docker rm -f) releases the identity; a start of a
// container Outcall created binds it again at its address.
func TestRunFollowsDeaths(t *testing.T) {
	tests := []struct {
		name string
		kill func(h *harness, id string)
	}{
		{name: "docker stop", kill: func(h *harness, id string) { h.e.ContainerStop(context.Background(), id, dcontainer.StopOptions{}) }},
		{name: "crash", kill: func(h *harness, id string) { h.e.Die(id, false) }},
		{name: "OOM kill", kill: func(h *harness, id string) { h.e.Die(id, true) }},
		{name: "docker rm -f", kill: func(h *harness, id string) {
			h.e.ContainerRemove(context.Background(), id, dcontainer.RemoveOptions{Force: true})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			res := h.create(t, "agent-1")
			before, _ := h.nets.Identity("agent-1")
			h.run(t)
			h.following(t)
			tt.kill(h, res.ContainerID)
			eventually(t, "the identity released", released(h, "agent-1"))
			if _, ok := h.e.Container(res.ContainerID); !ok {
				return // removed: nothing to start again
			}
			if err := h.e.ContainerStart(context.Background(), res.ContainerID, dcontainer.StartOptions{}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the identity bound again", bound(h, "agent-1", res.ContainerID))
			after, _ := h.nets.Identity("agent-1")
			c, _ := h.e.Container(res.ContainerID)
			if after.IPv4 != before.IPv4 || after.MAC.String() != before.MAC.String() {
				t.Errorf("restarted with %v %v, was %v %v", after.IPv4, after.MAC, before.IPv4, before.MAC)
			}
			if h.nets.SandboxKey("agent-1") != c.SandboxKey {
				t.Errorf("bound in %q, the container runs in %q", h.nets.SandboxKey("agent-1"), c.SandboxKey)
			}
		})
	}
}

// TestRunNeverStops is S008-FR-020, AS-011, EC-010: the daemon's shutdown
// leaves every managed container running; a new manager finds them by
// label and keeps their identities.
func TestRunNeverStops(t *testing.T) {
	h := newHarness(t)
	var ids []string
	for _, n := range []string{"a-1", "a-2", "a-3"} {
		ids = append(ids, h.create(t, n).ContainerID)
	}
	stop := h.run(t)
	h.following(t)
	stop()
	for _, c := range h.e.Calls() {
		if strings.HasPrefix(c, "ContainerStop") || strings.HasPrefix(c, "ContainerRemove") || strings.HasPrefix(c, "ContainerKill") {
			t.Errorf("shutdown called %s", c)
		}
	}
	// A restarted daemon: a new manager, the registry as restored.
	v, _ := container.NewValidator(container.Policy{HostSocket: "/run/outcall/host.sock", AgentSocket: "/run/outcall/agent.sock"})
	m2, err := container.NewManager(container.ManagerOptions{Engine: h.e, Networks: h.nets, Validator: v, Logger: h.m2logger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	list, _ := m2.Containers(context.Background())
	if len(list) != 3 {
		t.Errorf("rediscovered %v", list)
	}
	for i, n := range []string{"a-1", "a-2", "a-3"} {
		if c, _ := h.e.Container(ids[i]); !c.Running || !bound(h, n, ids[i])() {
			t.Errorf("%s: running %v, identity bound %v", n, c.Running, bound(h, n, ids[i])())
		}
	}
}

func (h *harness) m2logger() *slog.Logger { return newTestLogger(h.logs) }

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// metricValue is the sum of a metric's samples.
func metricValue(t *testing.T, m *container.Manager, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			switch {
			case s.Gauge != nil:
				sum += s.Gauge.GetValue()
			case s.Counter != nil:
				sum += s.Counter.GetValue()
			}
		}
	}
	return sum
}

// TestRunSweepAfterReconnect: events missed while the stream was down are
// made up by the sweep after the reconnect.
func TestRunSweepAfterReconnect(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dead := h.create(t, "died-unseen")
	moved := h.create(t, "restarted-unseen")
	gone := h.create(t, "removed-unseen")
	stopped := h.create(t, "started-unseen")
	h.m.StopContainer(ctx, api.ContainerStopRequest{Name: "started-unseen"})
	oldKey := h.nets.SandboxKey("restarted-unseen")
	h.run(t)
	h.following(t)

	h.e.SetDown(true) // dockerd goes away; what happens meanwhile sends no event
	h.e.SetRunning(dead.ContainerID, false)
	h.e.SetRunning(moved.ContainerID, false)
	h.e.SetRunning(moved.ContainerID, true)
	h.e.Delete(gone.ContainerID)
	h.e.SetRunning(stopped.ContainerID, true)
	eventually(t, "degraded", func() bool { return h.m.Status().State == container.DockerDegraded })
	h.e.SetDown(false)
	h.following(t)

	eventually(t, "the dead container's identity released", released(h, "died-unseen"))
	eventually(t, "the removed container's identity released", released(h, "removed-unseen"))
	eventually(t, "the started container's identity bound", bound(h, "started-unseen", stopped.ContainerID))
	eventually(t, "the restarted container bound on its new port", func() bool {
		c, _ := h.e.Container(moved.ContainerID)
		return bound(h, "restarted-unseen", moved.ContainerID)() && h.nets.SandboxKey("restarted-unseen") == c.SandboxKey && c.SandboxKey != oldKey
	})
	if r, _ := h.nets.Identity("started-unseen"); r.IPv4 != netip.MustParseAddr("10.200.0.5") {
		t.Errorf("started again at %v, created at 10.200.0.5", r.IPv4)
	}
	if s := h.m.Status(); s.State != container.DockerAvailable {
		t.Errorf("status %+v", s)
	}
	if got := metricValue(t, h.m, "outcall_docker_event_stream_reconnects_total"); got < 1 {
		t.Errorf("reconnects %v", got)
	}
}

// TestRunStreamBreaks: a stream that ends with Docker still up is
// reopened, and followed again.
func TestRunStreamBreaks(t *testing.T) {
	h := newHarness(t)
	res := h.create(t, "agent-1")
	h.run(t)
	h.following(t)
	h.e.BreakEvents(errors.New("unexpected EOF"))
	eventually(t, "a second stream", func() bool { return len(callsWith(h.e.Calls(), "Events")) >= 2 && h.e.Subscribers() > 0 })
	h.following(t)
	h.e.Die(res.ContainerID, false)
	eventually(t, "the identity released on the new stream", released(h, "agent-1"))
	if !strings.Contains(h.logs.String(), "unexpected EOF") {
		t.Errorf("the break was not reported: %s", h.logs.String())
	}
}

// TestRunDockerDownAtStart is S008-AS-017, EC-020, FR-036: a hung ping is
// degraded within the bound, never "available"; when Docker answers, the
// sweep makes the Docker network of a network created meanwhile.
func TestRunDockerDownAtStart(t *testing.T) {
	h := newHarness(t)
	h.e.HangPing(true)
	start := time.Now()
	h.run(t)
	eventually(t, "degraded", func() bool { return h.m.Status().State == container.DockerDegraded })
	if d := time.Since(start); d > time.Second {
		t.Errorf("degraded after %v, the bound is 200ms", d)
	}
	if s := h.m.Status(); !strings.Contains(s.Reason, "docker unavailable") {
		t.Errorf("status %+v", s)
	}
	if got := metricValue(t, h.m, "outcall_docker_available"); got != 0 {
		t.Errorf("available gauge %v", got)
	}
	staging := container.NetworkInfo{Name: "outcall-staging", Bridge: "outcall1", Subnet: netip.MustParsePrefix("10.200.1.0/24"),
		Gateway: netip.MustParseAddr("10.200.1.1"), Proxy: netip.MustParseAddrPort("10.200.1.1:8080")}
	h.nets.AddNetwork(staging)
	h.e.HangPing(false)
	h.following(t)
	n, err := h.e.NetworkInspect(context.Background(), "outcall-staging", network.InspectOptions{})
	if err != nil || container.CheckNetwork(n, staging) != nil {
		t.Fatalf("staging's Docker network %+v, %v", n, err)
	}
	if got := metricValue(t, h.m, "outcall_docker_available"); got != 1 {
		t.Errorf("available gauge %v", got)
	}
}

// TestSweepTrustsTheBoundID: a container that takes the name of one whose
// identity was bound, labelled like it and at its address, does not get
// that identity; nor does a labelled container outcalld never created.
func TestSweepTrustsTheBoundID(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	orig := h.create(t, "agent-1")
	was, _ := h.nets.Identity("agent-1")
	c, _ := h.e.Container(orig.ContainerID)

	// While nobody looks: the original goes, a lookalike takes its name.
	h.e.Delete(orig.ContainerID)
	look := c
	look.ID = strings.Repeat("f", 64)
	look.SandboxKey = ""
	h.e.AddContainer(look)
	// And a labelled container that never was Outcall's, at a free address.
	stranger := c
	stranger.ID, stranger.Name, stranger.SandboxKey = strings.Repeat("e", 64), "stranger", ""
	stranger.Networking = network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{"outcall-default": {
		NetworkID: "net-default", MacAddress: "02:42:0a:c8:00:09", IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: "10.200.0.9"}}}}
	h.e.AddContainer(stranger)

	if err := h.m.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if r, ok := h.nets.Identity("agent-1"); ok {
		t.Errorf("the lookalike holds identity %+v (was %+v)", r, was)
	}
	if _, ok := h.nets.Identity("stranger"); ok {
		t.Error("a labelled stranger got an identity")
	}
	// Its start event does not give it one either.
	h.run(t)
	h.following(t)
	h.e.Emit(h.e.ContainerEvent("stranger", events.ActionStart))
	h.e.Emit(h.e.ContainerEvent("agent-1", events.ActionStart))
	time.Sleep(50 * time.Millisecond)
	if _, ok := h.nets.Identity("stranger"); ok {
		t.Error("a start event gave a labelled stranger an identity")
	}
	if _, ok := h.nets.Identity("agent-1"); ok {
		t.Error("a start event gave the lookalike an identity")
	}
	if !strings.Contains(h.logs.String(), "not created by outcalld") {
		t.Errorf("the strangers were not reported: %s", h.logs.String())
	}
}

// TestLateEventKeepsNewIdentity: the die of a container removed long ago
// does not release the identity of the new container of that name.
func TestLateEventKeepsNewIdentity(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	old := h.create(t, "agent-1")
	oldDie := h.e.ContainerEvent(old.ContainerID, events.ActionDie)
	if _, err := h.m.RemoveContainer(ctx, api.ContainerRemoveRequest{Name: "agent-1", Force: true}); err != nil {
		t.Fatal(err)
	}
	cur := h.create(t, "agent-1")
	h.run(t)
	h.following(t)
	h.e.Emit(oldDie)
	h.e.Emit(h.e.ContainerEvent(cur.ContainerID, events.ActionKill)) // a signal that did not kill
	time.Sleep(50 * time.Millisecond)
	if !bound(h, "agent-1", cur.ContainerID)() {
		r, ok := h.nets.Identity("agent-1")
		t.Errorf("identity %+v, %v; want bound to %s", r, ok, cur.ContainerID)
	}
}

// TestStateFileAcrossRestart: a managed container stopped while the
// daemon was down gets its identity back when started after the restart,
// from the state file; without it, it is not trusted.
func TestStateFileAcrossRestart(t *testing.T) {
	for _, withFile := range []bool{true, false} {
		name := "without state file"
		if withFile {
			name = "with state file"
		}
		t.Run(name, func(t *testing.T) {
			file := ""
			if withFile {
				file = filepath.Join(t.TempDir(), "containers.json")
			}
			h := newHarness(t, func(o *container.ManagerOptions) { o.StateFile = file })
			res := h.create(t, "agent-1")
			h.e.SetRunning(res.ContainerID, false)
			h.nets.Release(context.Background(), "agent-1") // the die, seen by the old daemon

			v, _ := container.NewValidator(container.Policy{HostSocket: "/run/outcall/host.sock", AgentSocket: "/run/outcall/agent.sock"})
			m2, err := container.NewManager(container.ManagerOptions{Engine: h.e, Networks: h.nets, Validator: v, StateFile: file, Logger: newTestLogger(h.logs)})
			if err != nil {
				t.Fatal(err)
			}
			h.e.SetRunning(res.ContainerID, true)
			if err := m2.Sweep(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := bound(h, "agent-1", res.ContainerID)(); got != withFile {
				t.Errorf("identity bound %v, want %v", got, withFile)
			}
		})
	}
}

// TestCreateDuringEvents: the start event of a container being created
// waits for the create and changes nothing.
func TestCreateDuringEvents(t *testing.T) {
	h := newHarness(t)
	h.run(t)
	h.following(t)
	for i := range 10 {
		res := h.create(t, "agent-"+string(rune('a'+i)))
		if !bound(h, res.Name, res.ContainerID)() {
			t.Fatalf("%s not bound after create", res.Name)
		}
	}
	time.Sleep(50 * time.Millisecond)
	for _, c := range h.nets.Calls() {
		if strings.HasPrefix(c, "Release") {
			t.Errorf("an identity was released: %v", h.nets.Calls())
		}
	}
	if n := len(callsWith(h.nets.Calls(), "Bind")); n != 10 {
		t.Errorf("%d binds for 10 creates: %v", n, h.nets.Calls())
	}
}
