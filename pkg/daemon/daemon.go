package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"outcall.dev/outcall/pkg/agentapi"
	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/bridge"
	"outcall.dev/outcall/pkg/container"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/dns"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/events"
	"outcall.dev/outcall/pkg/hostapi"
	"outcall.dev/outcall/pkg/metrics"
	"outcall.dev/outcall/pkg/network"
	"outcall.dev/outcall/pkg/nft"
	"outcall.dev/outcall/pkg/proxy"
	"outcall.dev/outcall/pkg/rulereq"
	"outcall.dev/outcall/pkg/rules"
)

// rulesDebounce is how long the rules directory must be quiet before a
// change is reloaded: editors and `cp` write in several steps.
const rulesDebounce = 250 * time.Millisecond

// DefaultRepairInterval is how often the daemon checks that every port's
// program and every floor table is in place.
const DefaultRepairInterval = network.DefaultRepairInterval

// Daemon is a running outcalld: its parts, built by New and run by Run.
type Daemon struct {
	cfg       Config
	log       *slog.Logger
	events    *events.Bus
	rules     *rules.Engine
	networks  *network.Controller
	requests  *rulereq.Store
	collector *metrics.Collector
	// gatewaysChanged is kicked when a network comes or goes.
	gatewaysChanged chan struct{}
	// dns and proxy serve on every gateway; proxy is nil with --no-proxy.
	dns   NameFilter
	proxy Proxy
	// docker is the Docker manager, containers the same as the host API
	// sees it; both nil with --no-docker.
	docker     *container.Manager
	containers ContainerManager
	// agent is the agent API on agent.sock; nil without an agent socket.
	agent *agentapi.Server
}

// New checks privileges and the configuration and builds the parts. It
// changes nothing on the host.
func New(cfg Config) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := checkCapabilities(); err != nil {
		return nil, err
	}
	if err := checkBridgeName(cfg.Bridge); err != nil {
		return nil, err
	}
	reg, err := endpoint.OpenWithOptions(endpoint.Options{Path: filepath.Join(cfg.StateDir, "endpoints.json"), DefaultNetwork: api.DefaultNetworkName})
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	bus := events.New()
	nets, err := network.New(network.Options{
		Default:          network.Network{Name: api.DefaultNetworkName, Bridge: cfg.Bridge, Gateway: cfg.Gateway},
		SubnetBlock:      cfg.SubnetBlock,
		StatePath:        filepath.Join(cfg.StateDir, "networks.json"),
		OpenDatapath:     network.OpenDatapath,
		DatapathOptions:  datapath.Options{PinDir: cfg.PinDir, AllowPrivatePins: cfg.AllowPrivatePins},
		Floor:            nft.New(0),
		Bridges:          bridge.NewManager(h, cfg.Logger.With("target", "bridge")),
		Endpoints:        reg,
		Events:           bus,
		RepairInterval:   cfg.RepairInterval,
		MaxConnsPerAgent: cfg.MaxConnsPerAgent,
		SandboxDir:       sandboxDir(cfg),
		Logger:           cfg.Logger.With("target", "network"),
	})
	if err != nil {
		return nil, err
	}
	return assemble(cfg, bus, nets)
}

// sandboxDir is where Docker pins its containers' network namespaces (its
// default exec root's), watched for the far ends of new ports; none
// without Docker.
func sandboxDir(cfg Config) string {
	if !cfg.Docker {
		return ""
	}
	return "/var/run/docker/netns"
}

// assemble builds the parts above the networks: the rule engine (whose
// packet layer is the networks' datapath), rule requests, metrics and the
// event consumers.
func assemble(cfg Config, bus *events.Bus, nets *network.Controller) (*Daemon, error) {
	d := &Daemon{cfg: cfg, log: cfg.Logger, events: bus, networks: nets, gatewaysChanged: make(chan struct{}, 1)}
	d.collector = metrics.NewCollector(nets)
	bus.Handle(d.collector.Handle)
	bus.Handle(logEvents(cfg.Logger))
	// Inline handlers must not block or call back: a kick, a cache flush.
	bus.Handle(func(e events.Event) {
		switch e := e.(type) {
		case events.Network:
			select {
			case d.gatewaysChanged <- struct{}{}:
			default:
			}
		case events.Reload:
			// A new rule set decides every name again (S007-FR-018).
			if e.Err == nil && d.dns != nil {
				if n := d.dns.Flush(); n > 0 {
					d.log.Info("DNS cache flushed after a rule reload", "target", "dns", "entries", n)
				}
			}
		}
	})
	var err error
	d.rules, err = rules.NewEngine(rules.Options{Dir: cfg.RulesDir, Logger: cfg.Logger.With("target", "rules"),
		Observer: ruleEvents{bus}, Packet: nets})
	if err != nil {
		return nil, err
	}
	d.requests, err = rulereq.Open(filepath.Join(cfg.StateDir, "rule-requests.json"), cfg.Logger.With("target", "rule_requests"))
	if err != nil {
		return nil, err
	}
	if err := d.buildNames(); err != nil {
		return nil, err
	}
	if err := d.buildDocker(); err != nil {
		return nil, err
	}
	if err := d.buildAgent(); err != nil {
		return nil, err
	}
	return d, nil
}

// buildNames builds the DNS filter and, unless --no-proxy, the proxy,
// which resolves through the filter's upstreams. A configuration without
// upstreams (tests of the daemon's own order) runs neither: every gateway
// port stays closed.
func (d *Daemon) buildNames() error {
	if len(d.cfg.DNSUpstreams) == 0 {
		return nil
	}
	// The observer counts the decisions the filter remembers as rule hits
	// too: the engine sees only the ones it makes.
	f, err := dns.New(dns.Options{Port: d.cfg.DNSPort, Upstreams: d.cfg.DNSUpstreams, Rules: d.rules,
		Logger: d.log.With("target", "dns"), Restricted: d.networks.Restricted, Observer: ruleEvents{d.events}})
	if err != nil {
		return err
	}
	d.dns = f
	// Operator grants to a host name resolve the way the proxy does:
	// through --dns-upstream, never the machine's resolver.
	d.networks.SetResolver(f.LookupIPv4)
	if d.cfg.NoProxy {
		return nil
	}
	p, err := proxy.New(proxy.Options{Port: d.cfg.ProxyPort, Rules: d.rules, Logger: d.log.With("target", "proxy"),
		Restricted: d.networks.Restricted,
		// An agent or a gateway is never dialled for a container, whatever
		// a rule or a DNS answer says.
		Resolve: func(ctx context.Context, host string) ([]netip.Addr, error) {
			addrs, err := f.LookupIPv4(ctx, host)
			return slices.DeleteFunc(addrs, d.networks.Never), err
		},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil || d.networks.Never(ap.Addr()) {
				return nil, fmt.Errorf("proxy: %s is not a destination a container may reach", addr)
			}
			var dialer net.Dialer
			return dialer.DialContext(ctx, network, addr)
		},
	})
	if err != nil {
		return err
	}
	d.proxy = p
	return nil
}

// checkCapabilities fails early, with the missing capability named, instead
// of half-way through bringing the bridge up.
func checkCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	var missing []string
	if !has(unix.CAP_NET_ADMIN) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if !has(unix.CAP_BPF) && !has(unix.CAP_SYS_ADMIN) {
		missing = append(missing, "CAP_BPF")
	}
	if len(missing) > 0 {
		return fmt.Errorf("outcalld needs root, or CAP_NET_ADMIN and CAP_BPF (missing %v): run it with sudo", missing)
	}
	return nil
}

// checkBridgeName refuses an existing link of the bridge's name that is not a
// bridge, before the floor or anything else is touched.
func checkBridgeName(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil // absent: it will be created
	}
	if l.Type() != "bridge" {
		return fmt.Errorf("--bridge: link %q exists and is a %s, not a bridge; choose another name", name, l.Type())
	}
	return nil
}

// Run starts the parts in the spec's order (rules; bridges, floor and
// networks; the gateway services; then the host API), serves until ctx is
// done or a part fails, and stops them in reverse, every goroutine ended
// before it returns: the host API stops accepting, the gateway services
// close their ports, the networks' loops end, and the strict policy stays
// in place.
func (d *Daemon) Run(ctx context.Context) error {
	// Every rule file is checked before anything on the host changes
	// (S003-FR-014): a bad rule set aborts startup.
	if _, err := d.rules.Reload(ctx); err != nil {
		return err
	}
	if err := d.checkNoProxy(); err != nil {
		return err
	}
	if err := d.networks.Up(); err != nil {
		return err
	}
	// From here on every return goes through stop.
	errc := make(chan error, 8)
	var stages []*stage
	start := func(name string, fns ...func(context.Context) error) *stage {
		s := newStage(ctx, name, errc, fns...)
		stages = append(stages, s)
		return s
	}
	stop := func() {
		for i := len(stages) - 1; i >= 0; i-- {
			stages[i].stop()
		}
		d.networks.Shutdown()
		d.log.Info("outcalld stopped; bridges and strict policy remain", "bridge", d.cfg.Bridge)
	}
	loops := []func(context.Context) error{d.networks.Run}
	if d.cfg.WatchRules {
		loops = append(loops, func(ctx context.Context) error { return d.rules.Watch(ctx, rulesDebounce) })
	}
	start("networks", loops...)
	failed := make(chan error, 1)
	start("gateway services", func(ctx context.Context) error { return d.runGateways(ctx, failed) })
	// A gateway service that cannot bind (its port taken, S007-EC-008)
	// fails at once: startup aborts rather than run containers without
	// DNS enforcement.
	if len(d.services()) > 0 {
		select {
		case err := <-failed:
			stop()
			return err
		case <-time.After(gatewayStartGrace):
		}
	}
	if d.docker != nil {
		// After the gateway services: a container it picks up has its
		// DNS and proxy from its first packet.
		start("docker", d.docker.Run)
	}
	var serve []func(context.Context) error
	if d.cfg.MetricsAddr != "" {
		ml, err := metrics.Listen(d.cfg.MetricsAddr)
		if err != nil {
			stop()
			return err
		}
		defer ml.Close() // if the host API cannot listen; Serve closes it too
		var extra []prometheus.Collector
		if d.dns != nil {
			extra = append(extra, d.dns.Collectors()...)
		}
		if d.proxy != nil {
			extra = append(extra, d.proxy.Collectors()...)
		}
		if d.docker != nil {
			extra = append(extra, d.docker.Collectors()...)
		}
		if d.agent != nil {
			extra = append(extra, d.agent.Collectors()...)
		}
		serve = append(serve, func(ctx context.Context) error {
			return metrics.Serve(ctx, ml, d.collector, d.log.With("target", "metrics"), extra...)
		})
	}
	// The agent socket exists before the host API answers, so a container
	// created with helper mounts finds it (S008-FR-039); it is served
	// only from the last stage on, connections waiting in its backlog.
	serveAgent, closeAgent := func(context.Context) error { return nil }, func() {}
	if d.agent != nil {
		var err error
		if serveAgent, closeAgent, err = d.listenAgent(); err != nil {
			stop()
			return err
		}
	}
	l, err := hostapi.Listen(d.cfg.Socket)
	if err != nil {
		closeAgent()
		stop()
		return err
	}
	serve = append(serve, func(ctx context.Context) error {
		return hostapi.Serve(ctx, l, hostapi.Handler(d.hostService(), d.log.With("target", "host_api")))
	})
	start("apis", serve...)
	if d.agent != nil {
		// Last to start, first to stop (S004 §1.5): an agent is answered
		// only while everything its answers depend on runs.
		start("agent api", serveAgent)
	}
	d.log.Info("outcalld ready", "bridge", d.cfg.Bridge, "socket", d.cfg.Socket, "agent_socket", d.cfg.AgentSocket)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		d.log.Error("subsystem failed; shutting down with the strict policy in place", "err", runErr)
	}
	stop()
	return runErr
}

// checkNoProxy refuses --no-proxy while an allow rule sends its traffic
// through the proxy (egress.mode: proxy).
func (d *Daemon) checkNoProxy() error {
	if !d.cfg.NoProxy {
		return nil
	}
	for _, r := range d.rules.Active().Rules() {
		if r.Action == api.ActionAllow && r.Egress != nil && r.Egress.Mode == api.EgressProxy {
			return fmt.Errorf("--no-proxy: rule %q (%s:%d) needs the proxy (egress.mode: proxy); remove the rule or the flag", r.ID, r.File, r.Line)
		}
	}
	return nil
}

// stage is a group of goroutines started and stopped together.
type stage struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// newStage runs each fn until its context, derived from parent, ends; a
// failure is sent on errc, named.
func newStage(parent context.Context, name string, errc chan<- error, fns ...func(context.Context) error) *stage {
	ctx, cancel := context.WithCancel(parent)
	s := &stage{cancel: cancel}
	for _, fn := range fns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				select {
				case errc <- fmt.Errorf("%s: %w", name, err):
				default:
				}
			}
		}()
	}
	return s
}

// stop ends the stage's goroutines and waits for them.
func (s *stage) stop() {
	s.cancel()
	s.wg.Wait()
}
