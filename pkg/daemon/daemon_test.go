package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/events"
	"outcall.dev/outcall/pkg/hostclient"
	"outcall.dev/outcall/pkg/network"
	"outcall.dev/outcall/pkg/network/networktest"
)

// testDaemon is a Daemon whose networks run over fakes of the kernel parts,
// so its startup and shutdown order can be checked without root.
type testDaemon struct {
	*Daemon
	calls *networktest.Calls
	dp    *networktest.Datapath
}

func newTestDaemon(t *testing.T) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{Bridge: "outcall0", Gateway: netip.MustParsePrefix("10.200.0.1/24"), SubnetBlock: netip.MustParsePrefix("10.200.0.0/16"),
		Socket: filepath.Join(dir, "host.sock"), StateDir: dir, PinDir: filepath.Join(dir, "pins"), RulesDir: filepath.Join(dir, "rules.d"),
		DNSPort: 53, ProxyPort: 8080, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := os.Mkdir(cfg.RulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	calls := &networktest.Calls{}
	dp := networktest.NewDatapath(calls)
	reg, err := endpoint.OpenWithOptions(endpoint.Options{Path: filepath.Join(dir, "endpoints.json"), DefaultNetwork: api.DefaultNetworkName})
	if err != nil {
		t.Fatal(err)
	}
	bus := events.New()
	nets, err := network.New(network.Options{
		Default:     network.Network{Name: api.DefaultNetworkName, Bridge: cfg.Bridge, Gateway: cfg.Gateway},
		SubnetBlock: cfg.SubnetBlock, StatePath: filepath.Join(dir, "networks.json"),
		OpenDatapath: func(datapath.Options) (network.Datapath, error) {
			calls.Add("openDatapath")
			return dp, nil
		},
		Floor: networktest.NewFloor(calls), Bridges: networktest.NewBridges(calls), Endpoints: reg, Events: bus,
		HostAddrs: func() ([]netip.Addr, error) { return nil, nil },
		Logger:    cfg.Logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := assemble(cfg, bus, nets)
	if err != nil {
		t.Fatal(err)
	}
	return &testDaemon{Daemon: d, calls: calls, dp: dp}
}

// TestRunOrder: rules, then the networks (datapath, floor, bridge), then
// the host API; at shutdown the host API is gone before the networks leave
// their strict policy, and Run returns only when every goroutine is done.
func TestRunOrder(t *testing.T) {
	td := newTestDaemon(t)
	apiOpenAtShutdown := make(chan bool, 1)
	td.dp.OnClearRules = func() {
		c, err := net.Dial("unix", td.cfg.Socket)
		if err == nil {
			c.Close()
		}
		apiOpenAtShutdown <- err == nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- td.Run(ctx) }()

	client := hostclient.New(td.cfg.Socket)
	var st api.BridgeStatus
	var err error
	for range 200 {
		if st, err = client.BridgeStatus(ctx); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || !st.Up {
		t.Fatalf("host API while running: %+v, %v", st, err)
	}
	if err := td.calls.InOrder("openDatapath", "floor.Apply", "bridges.Ensure outcall0", "floor.Apply"); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if <-apiOpenAtShutdown {
		t.Fatal("the host API still accepted connections while the networks shut down")
	}
	if err := td.calls.InOrder("bridges.Ensure outcall0", "dp.ClearRules", "floor.Apply", "dp.Close"); err != nil {
		t.Fatal(err)
	}
	if td.calls.Index("bridges.Delete") >= 0 || td.calls.Index("dp.Unpin") >= 0 {
		t.Fatalf("shutdown tore something down: %v", td.calls.Log())
	}
}

// TestRunBadRulesChangeNothing: a bad rule set stops startup before the
// datapath, the floor or a bridge is touched (S003-FR-014).
func TestRunBadRulesChangeNothing(t *testing.T) {
	td := newTestDaemon(t)
	bad := "version: \"1\"\nrules:\n  - id: bad\n    action: allow\n    condition: 'network.port =='\n"
	if err := os.WriteFile(filepath.Join(td.cfg.RulesDir, "50-bad.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	err := td.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "50-bad.yaml") {
		t.Fatalf("Run with a bad rule = %v, want an error naming the file", err)
	}
	if log := td.calls.Log(); len(log) != 0 {
		t.Fatalf("a refused startup changed something: %v", log)
	}
	if _, err := os.Stat(td.cfg.Socket); !os.IsNotExist(err) {
		t.Fatalf("a refused startup left the socket: %v", err)
	}
	// Positive control: with the file gone the same daemon starts.
	if err := os.Remove(filepath.Join(td.cfg.RulesDir, "50-bad.yaml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := td.Run(ctx); err != nil {
		t.Fatalf("Run without the bad rule = %v", err)
	}
	if td.calls.Index("openDatapath") < 0 {
		t.Fatal("the positive control never opened the datapath")
	}
}

// recordingService is a GatewayService that records where it runs.
type recordingService struct {
	mu      sync.Mutex
	running map[string]bool
}

func (s *recordingService) Name() string { return "rec" }

func (s *recordingService) Serve(ctx context.Context, gw network.Gateway) error {
	s.set(gw.Network().Name, true)
	<-ctx.Done()
	s.set(gw.Network().Name, false)
	return nil
}

func (s *recordingService) set(name string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.running[name] = true
	} else {
		delete(s.running, name)
	}
}

func (s *recordingService) names() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.running {
		out = append(out, n)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// TestGatewayServicesFollowNetworks: a gateway service runs on every
// network that is up, starts on a network created later, ends on a
// destroyed one, and has ended everywhere before the networks shut down.
func TestGatewayServicesFollowNetworks(t *testing.T) {
	td := newTestDaemon(t)
	svc := &recordingService{running: map[string]bool{}}
	td.cfg.Services = []GatewayService{svc}
	atShutdown := make(chan string, 1)
	td.dp.OnClearRules = func() { atShutdown <- svc.names() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- td.Run(ctx) }()
	waitUntil(t, "the service on the default network", func() bool { return svc.names() == "outcall-default" })
	client := hostclient.New(td.cfg.Socket)
	waitUntil(t, "the host API", func() bool { _, err := client.BridgeStatus(ctx); return err == nil })

	staging := "staging"
	if _, err := client.CreateNetwork(ctx, api.NetworkCreateRequest{Name: &staging}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the service on the new network", func() bool { return svc.names() == "outcall-default,outcall-staging" })
	if _, err := client.DestroyNetwork(ctx, api.NetworkDestroyRequest{Name: &staging}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the service gone with its network", func() bool { return svc.names() == "outcall-default" })

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if left := <-atShutdown; left != "" {
		t.Fatalf("gateway services still running while the networks shut down: %s", left)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// failingService cannot bind, as a DNS filter whose port is taken.
type failingService struct{}

func (failingService) Name() string { return "dns" }
func (failingService) Serve(context.Context, network.Gateway) error {
	return errors.New("listen udp 10.200.0.1:53: bind: address already in use")
}

// TestRunAbortsWhenAGatewayServiceCannotBind: S007-EC-008, no daemon
// without its DNS filter; the strict policy stays and no socket is left.
func TestRunAbortsWhenAGatewayServiceCannotBind(t *testing.T) {
	td := newTestDaemon(t)
	td.cfg.Services = []GatewayService{failingService{}}
	err := td.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "dns on network outcall-default: listen udp") {
		t.Fatalf("Run = %v, want the bind failure", err)
	}
	if _, serr := os.Stat(td.cfg.Socket); !os.IsNotExist(serr) {
		t.Fatalf("the host socket exists after an aborted start: %v", serr)
	}
	if err := td.calls.InOrder("bridges.Ensure outcall0", "dp.ClearRules", "dp.Close"); err != nil {
		t.Fatal(err)
	}
}

// TestNoProxyRefusesProxyRules: --no-proxy with a rule that needs the
// proxy stops startup before anything changes, naming the rule.
func TestNoProxyRefusesProxyRules(t *testing.T) {
	td := newTestDaemon(t)
	td.cfg.NoProxy = true
	rule := "version: \"1\"\nrules:\n  - id: via-proxy\n    action: allow\n    condition: 'network.hostname == \"pypi.org\"'\n    egress:\n      mode: proxy\n"
	if err := os.WriteFile(filepath.Join(td.cfg.RulesDir, "10-pypi.yaml"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	err := td.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), `--no-proxy: rule "via-proxy" (10-pypi.yaml:3) needs the proxy`) {
		t.Fatalf("Run = %v", err)
	}
	if log := td.calls.Log(); len(log) != 0 {
		t.Fatalf("a refused startup changed something: %v", log)
	}
	// Positive control: without the flag the same rules start.
	td.cfg.NoProxy = false
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := td.Run(ctx); err != nil {
		t.Fatalf("Run without --no-proxy = %v", err)
	}
}
