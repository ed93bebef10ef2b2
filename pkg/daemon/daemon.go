package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/bridge"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/events"
	"outcall.dev/outcall/pkg/grants"
	"outcall.dev/outcall/pkg/hostapi"
	"outcall.dev/outcall/pkg/metrics"
	"outcall.dev/outcall/pkg/nft"
	"outcall.dev/outcall/pkg/rulereq"
	"outcall.dev/outcall/pkg/rules"
)

// rulesDebounce is how long the rules directory must be quiet before a
// change is reloaded: editors and `cp` write in several steps.
const rulesDebounce = 250 * time.Millisecond

// Daemon is a running outcalld.
type Daemon struct {
	cfg       Config
	log       *slog.Logger
	bridges   bridgeOps
	floor     floorOps
	endpoints *endpoint.Registry
	collector *metrics.Collector
	rules     *rules.Engine
	requests  *rulereq.Store

	// mu serialises everything that changes enforcement: bridge up/down,
	// ports joining and leaving, endpoints and grants.
	mu          sync.Mutex
	dp          datapathOps // nil while the bridge is down
	stopEvents  func()      // stops dp's drop event reader and waits for it
	bridgeIndex int
	bridgeMAC   net.HardwareAddr // every frame a port sends goes here
	fencedHosts []netip.Addr     // the host addresses the datapath fences now
	// services counts the listeners holding each gateway service; only
	// held services are open to containers (services.go).
	services map[datapath.Service]int
	// events is the feed metrics and logs read (and the dashboard will).
	events *events.Bus
	// openDatapath and hostAddrs reach the kernel; tests replace them.
	openDatapath func(datapath.Options) (datapathOps, error)
	hostAddrs    func() ([]netip.Addr, error)
	// grants indexes the datapath's allow entries by owner and identity;
	// nil while the bridge is down, like dp.
	grants *grants.Manager
	ports  map[int]string // ports of the bridge by ifindex
	// packetRules are the packet tables of the active rule set, kept for
	// installing into a datapath opened later.
	packetRules *rules.PacketTables
}

// New checks privileges and opens the persisted state. It changes nothing
// on the host.
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
	reg, err := endpoint.OpenWithOptions(endpoint.Options{Path: filepath.Join(cfg.StateDir, "endpoints.json"), DefaultNetwork: cfg.Bridge})
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	d := &Daemon{
		cfg:          cfg,
		log:          cfg.Logger,
		bridges:      bridge.NewManager(h, cfg.Logger.With("target", "bridge")),
		floor:        nft.New(0),
		endpoints:    reg,
		ports:        map[int]string{},
		services:     map[datapath.Service]int{},
		events:       events.New(),
		openDatapath: openDatapath,
		hostAddrs:    listHostAddrs,
	}
	d.collector = metrics.NewCollector(d)
	d.events.Handle(d.collector.Handle)
	d.events.Handle(logEvents(cfg.Logger))
	d.rules, err = rules.NewEngine(rules.Options{Dir: cfg.RulesDir, Logger: cfg.Logger.With("target", "rules"),
		Observer: ruleEvents{d.events}, Packet: d})
	if err != nil {
		return nil, err
	}
	d.requests, err = rulereq.Open(filepath.Join(cfg.StateDir, "rule-requests.json"), cfg.Logger.With("target", "rule_requests"))
	if err != nil {
		return nil, err
	}
	return d, nil
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

// Run brings the bridge up, serves the APIs and blocks until ctx is done;
// then it leaves the strict policy in place and returns.
func (d *Daemon) Run(ctx context.Context) error {
	// Every rule file is checked before anything on the host changes
	// (S003-FR-014): a bad rule set aborts startup.
	if _, err := d.rules.Reload(ctx); err != nil {
		return err
	}
	if err := d.up(); err != nil {
		return err
	}
	var metricsListener net.Listener
	if d.cfg.MetricsAddr != "" {
		l, err := metrics.Listen(d.cfg.MetricsAddr)
		if err != nil {
			d.shutdown()
			return err
		}
		metricsListener = l
	}
	listener, err := hostapi.Listen(d.cfg.Socket)
	if err != nil {
		if metricsListener != nil {
			metricsListener.Close()
		}
		d.shutdown()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	run := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	run("port watcher", d.watchPorts)
	run("grant sweeper", d.sweepGrants)
	run("repair", d.repair)
	if d.cfg.WatchRules {
		run("rules watcher", func(ctx context.Context) error { return d.rules.Watch(ctx, rulesDebounce) })
	}
	if metricsListener != nil {
		run("metrics", func(ctx context.Context) error {
			return metrics.Serve(ctx, metricsListener, d.collector, d.log.With("target", "metrics"))
		})
	}
	run("host api", func(ctx context.Context) error {
		return hostapi.Serve(ctx, listener, hostapi.Handler(d, d.log.With("target", "host_api")))
	})
	d.log.Info("outcalld ready", "bridge", d.cfg.Bridge, "socket", d.cfg.Socket)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		d.log.Error("subsystem failed; shutting down with the strict policy in place", "err", runErr)
	}
	cancel()
	wg.Wait()
	d.shutdown()
	return runErr
}

// up creates or attaches everything, in an order that never opens a port:
// the program is loaded (so BPF trouble fails before anything changes), the
// floor goes in (so the bridge is covered the moment it exists), then the
// bridge, then the program on each port, and only then the identities.
func (d *Daemon) up() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp == nil {
		dp, err := d.openDatapath(datapath.Options{PinDir: d.cfg.PinDir, AllowPrivatePins: d.cfg.AllowPrivatePins, Logger: d.log.With("target", "datapath")})
		if err != nil {
			return fmt.Errorf("BPF datapath unavailable: %w", err)
		}
		d.dp = dp
		d.fencedHosts = nil // a new datapath may have new maps
		// The reader lives as long as this datapath: closing it (at
		// shutdown or bridge down) cancels the reader and waits for it.
		evCtx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			d.readDropEvents(evCtx, dp)
		}()
		d.stopEvents = func() { cancel(); <-done }
		// Grants do not survive a restart (S009-FR-010): containers ask again.
		d.grants = grants.New(dp, grants.Options{OnChange: func(g grants.Grant, added bool) { d.events.Publish(grantEvent(g, added)) }})
		if n, err := d.grants.ClearKernel(); err != nil {
			return err
		} else if n > 0 {
			d.log.Info("revoked grants left by an earlier daemon", "count", n)
		}
		if err := d.installRulesLocked(d.packetRules); err != nil {
			return fmt.Errorf("install packet-layer rules: %w", err)
		}
	}
	// Loading the program changes nothing a packet sees; the floor is the
	// first thing that does, and it goes in before the bridge exists. On a
	// restart the bridge and its ports are already there: the new floor
	// names them from its first instant, or it would replace the old
	// floor's port set with an empty one until each port is taken over.
	if err := d.knowExistingPortsLocked(); err != nil {
		return err
	}
	if err := d.floor.Apply(d.floorConfigLocked()); err != nil {
		return err
	}
	// Only the service ports an Outcall listener holds are open (see
	// services.go): none until the DNS filter and the proxy open theirs, and
	// whatever a previous daemon left in the pinned map is removed.
	if err := d.dp.SetServices(d.servicesLocked()); err != nil {
		return err
	}
	index, _, err := d.bridges.Ensure(d.cfg.Bridge, d.cfg.Gateway)
	if err != nil {
		return err
	}
	d.bridgeIndex = index
	if d.bridgeMAC, err = d.bridges.HardwareAddr(index); err != nil {
		return err
	}
	if err := d.syncFencesLocked(); err != nil {
		return err
	}
	ports, err := d.bridges.Ports(index)
	if err != nil {
		return err
	}
	present := map[int]bool{}
	for _, p := range ports {
		present[p.Index] = true
		if err := d.portJoinedLocked(p.Index, p.Name); err != nil {
			return err
		}
	}
	for _, ifindex := range d.dp.AttachedPorts() {
		if !present[ifindex] {
			if err := d.portLeftLocked(ifindex); err != nil {
				return err
			}
		}
	}
	return d.floor.Apply(d.floorConfigLocked())
}

// knowExistingPortsLocked adds the ports the bridge has now to d.ports, so
// the floor covers them before their programs are (re)attached.
func (d *Daemon) knowExistingPortsLocked() error {
	st, err := d.bridges.Status(d.cfg.Bridge)
	if err != nil || !st.Exists {
		return err
	}
	ports, err := d.bridges.Ports(st.Index)
	if err != nil {
		return err
	}
	for _, p := range ports {
		if _, ok := d.ports[p.Index]; !ok {
			d.ports[p.Index] = p.Name
		}
	}
	return nil
}

func (d *Daemon) floorConfigLocked() nft.Config {
	cfg := nft.Config{Bridges: []string{d.cfg.Bridge}, Mark: api.AllowMark, MarkMask: api.AllowMarkMask,
		// A cap above what nft counts (2^32-1) is no cap in practice.
		MaxConnsPerAgent: uint32(min(d.cfg.MaxConnsPerAgent, 1<<32-1))}
	// By ifindex: a renamed port stays covered, a new port with an old name
	// is not covered until it is taken over.
	for ifindex := range d.ports {
		cfg.Ports = append(cfg.Ports, ifindex)
	}
	return cfg
}

// portJoinedLocked takes over a port: program first, then the floor's port
// set, then the identity.
func (d *Daemon) portJoinedLocked(ifindex int, name string) error {
	if err := d.dp.Attach(ifindex); err != nil {
		return err
	}
	// The floor keys ports by ifindex, so a rename needs no floor change;
	// only the name the endpoint lookup below uses is updated.
	if _, ok := d.ports[ifindex]; !ok {
		if err := d.floor.AddPort(ifindex); err != nil {
			return err
		}
	}
	d.ports[ifindex] = name
	ep, ok := d.endpointOfPortLocked(ifindex, name)
	if !ok {
		d.log.Info("port has no endpoint; it reaches nothing", "port", name, "ifindex", ifindex)
		return nil
	}
	return d.activateLocked(ifindex, ep)
}

// endpointOfPortLocked finds the endpoint registered on this port: by
// ifindex, since identity is the port itself. A port that only carries the
// name of an endpoint's port is another port (recreated with that name) and
// gets nothing; an endpoint from a registry without ports is bound to the
// port it is found on by name, once.
func (d *Daemon) endpointOfPortLocked(ifindex int, name string) (endpoint.Endpoint, bool) {
	if ep, ok := d.endpoints.ByIfindex(ifindex); ok {
		return ep, true
	}
	ep, ok := d.endpoints.ByInterface(name)
	if !ok {
		return endpoint.Endpoint{}, false
	}
	if ep.Ifindex != 0 {
		d.log.Warn("port has the name of an endpoint's port but is another port; it reaches nothing until the endpoint is added again",
			"port", name, "ifindex", ifindex, "endpoint", ep.Name, "endpoint_ifindex", ep.Ifindex)
		return endpoint.Endpoint{}, false
	}
	ep, err := d.endpoints.Bind(ep.Name, ifindex)
	if err != nil {
		d.log.Error("bind endpoint to its port", "endpoint", ep.Name, "ifindex", ifindex, "err", err)
		return endpoint.Endpoint{}, false
	}
	return ep, true
}

func (d *Daemon) activateLocked(ifindex int, ep endpoint.Endpoint) error {
	err := d.dp.SetEndpoint(ifindex, datapath.Endpoint{Identity: ep.Identity, IP: ep.IP, Gateway: d.cfg.Gateway.Addr(), MAC: ep.MAC, GatewayMAC: d.bridgeMAC})
	if err != nil {
		return err
	}
	// Whatever a port sent before it was taken over (or while the daemon
	// was down) cannot redirect the endpoint's frames from now on.
	if err := d.bridges.PinEndpoint(d.bridgeIndex, ifindex, ep.IP, ep.MAC); err != nil {
		return err
	}
	d.log.Info("endpoint active", "endpoint", ep.Name, "port", ep.Interface, "identity", ep.Identity)
	return nil
}

func (d *Daemon) portLeftLocked(ifindex int) error {
	var errs []error
	errs = append(errs, d.dp.DeleteEndpoint(ifindex), d.dp.Detach(ifindex))
	if _, ok := d.ports[ifindex]; ok {
		errs = append(errs, d.floor.RemovePort(ifindex))
		delete(d.ports, ifindex)
	}
	return errors.Join(errs...)
}

// watchPorts follows ports joining and leaving the bridge. If the netlink
// subscription breaks it resubscribes; the subscription lists existing links
// again, so nothing that happened in between is missed.
func (d *Daemon) watchPorts(ctx context.Context) error {
	self, err := netns.Get()
	if err != nil {
		return fmt.Errorf("open own netns: %w", err)
	}
	defer self.Close()
	isBridge := func(ifindex int) bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return ifindex != 0 && ifindex == d.bridgeIndex
	}
	for ctx.Err() == nil {
		events := make(chan bridge.PortEvent, 64)
		errc := make(chan error, 1)
		wctx, cancel := context.WithCancel(ctx)
		go func() { errc <- bridge.WatchPorts(wctx, self, isBridge, events) }()
	loop:
		for {
			select {
			case ev := <-events:
				d.handlePortEvent(ev)
			case err := <-errc:
				if ctx.Err() == nil {
					d.log.Warn("port subscription ended; resubscribing", "err", err)
				}
				break loop
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (d *Daemon) handlePortEvent(ev bridge.PortEvent) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp == nil {
		return
	}
	var err error
	if ev.Joined {
		err = d.portJoinedLocked(ev.Port.Index, ev.Port.Name)
	} else if _, ours := d.ports[ev.Port.Index]; ours {
		err = d.portLeftLocked(ev.Port.Index)
	}
	if err != nil {
		// The port stays closed: without its program the floor and
		// the datapath drop what it sends.
		d.log.Error("port update failed", "port", ev.Port.Name, "ifindex", ev.Port.Index, "joined", ev.Joined, "err", err)
		return
	}
	d.events.Publish(events.Port{Ifindex: ev.Port.Index, Name: ev.Port.Name, Joined: ev.Joined})
}

// sweepGrants reclaims expired grants once a second. Expiry itself is
// enforced per packet in the datapath.
func (d *Daemon) sweepGrants(ctx context.Context) error {
	return every(ctx, time.Second, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.dp != nil {
			if _, err := d.grants.Sweep(); err != nil {
				d.log.Warn("sweep expired grants", "err", err)
			}
		}
	})
}

// every runs fn once per interval until ctx is done.
func every(ctx context.Context, interval time.Duration, fn func()) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		fn()
	}
}

// readDropEvents counts and logs sampled drops of dp until ctx is done.
func (d *Daemon) readDropEvents(ctx context.Context, dp datapathOps) {
	err := dp.ReadDropEvents(ctx, func(ev datapath.DropEvent) {
		d.events.Publish(events.Drop{Reason: ev.Reason.String(), Identity: ev.Identity, Ifindex: int(ev.Ifindex),
			Src: ev.Src, Dst: ev.Dst, Proto: ev.Proto, SrcPort: ev.SrcPort, DstPort: ev.DstPort})
	})
	if err != nil && ctx.Err() == nil {
		d.log.Warn("drop events stopped", "target", "datapath", "err", err)
	}
}

// shutdown keeps the bridge, revokes every grant, empties the packet-layer
// rule tables and rewrites the floor in one transaction (S001-FR-010): containers that outlive the daemon stay
// fail-closed. The pinned programs keep enforcing.
func (d *Daemon) shutdown() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp == nil {
		return
	}
	if n, err := d.grants.Flush(); err != nil {
		d.log.Error("revoke grants at shutdown", "err", err)
	} else {
		d.log.Info("revoked grants at shutdown", "count", n)
	}
	if err := d.dp.ClearRules(); err != nil {
		d.log.Error("clear packet-layer rules at shutdown", "err", err)
	}
	if err := d.floor.Apply(d.floorConfigLocked()); err != nil {
		d.log.Error("install strict base policy at shutdown", "err", err)
	}
	d.closeDatapathLocked()
	d.log.Info("outcalld stopped; bridge and strict policy remain", "bridge", d.cfg.Bridge)
}

// closeDatapathLocked releases the datapath handles; pinned state stays.
func (d *Daemon) closeDatapathLocked() {
	d.stopEvents()
	d.dp.Close()
	d.dp = nil
	d.grants = nil
}
