package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/bridge"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/events"
	"outcall.dev/outcall/pkg/grants"
	"outcall.dev/outcall/pkg/nft"
	"outcall.dev/outcall/pkg/rules"
)

// DefaultRepairInterval is how often the Controller checks that what
// enforces is still in place: a repair is due within a second of a detach
// or a deleted table.
const DefaultRepairInterval = 250 * time.Millisecond

// Options configure a Controller. The kernel parts are required; tests pass
// fakes.
type Options struct {
	// Default is the default network: the daemon's --bridge and --gateway.
	Default Network
	// SubnetBlock holds every Outcall subnet (--subnet-block): no rule or
	// grant opens an address inside it but the own gateway's services.
	SubnetBlock netip.Prefix
	// StatePath is the file that keeps the other networks across restarts.
	StatePath string
	// Datapath is how the datapath is opened, with DatapathOptions.
	OpenDatapath    func(datapath.Options) (Datapath, error)
	DatapathOptions datapath.Options
	Floor           Floor
	Bridges         Bridges
	// HostAddrs lists the host's IPv4 addresses (listHostAddrs if nil).
	HostAddrs func() ([]netip.Addr, error)
	// HostRoutes lists the destinations of the host's routes, the default
	// route left out (listHostRoutes if nil): no new subnet overlaps one.
	HostRoutes func() ([]netip.Prefix, error)
	// SandboxDir is where Docker pins its containers' network namespaces
	// (/var/run/docker/netns). With it, a port joining a network that has
	// a container reserved but not yet bound is watched until Docker has
	// moved and addressed its far end, and gets the identity whose MAC it
	// carries then: before the container's process runs. Empty: only
	// BindContainer binds.
	SandboxDir string
	Endpoints  *endpoint.Registry
	Events     *events.Bus
	// RepairInterval is how often detached programs and deleted floor
	// tables are looked for (DefaultRepairInterval if 0).
	RepairInterval time.Duration
	// MaxConnsPerAgent caps each agent's conntrack entries (0: no cap).
	MaxConnsPerAgent uint
	Logger           *slog.Logger
}

// Controller owns the networks, their ports and the datapath they share.
type Controller struct {
	opts      Options
	log       *slog.Logger
	bridges   Bridges
	floor     Floor
	endpoints *endpoint.Registry
	events    *events.Bus
	store     store

	// mu serialises everything that changes enforcement: networks up and
	// down, ports joining and leaving, endpoints, grants, services.
	mu sync.Mutex
	// nets are the networks, the default one first. A network's bridge
	// index is 0 while the bridges are down.
	nets       []*netState
	dp         Datapath // nil while the bridges are down
	stopEvents func()   // stops dp's drop event reader and waits for it
	// grants indexes the datapath's allow entries by owner and identity;
	// nil while the bridges are down, like dp.
	grants *grants.Manager
	ports  map[int]port // ports of the Outcall bridges, by ifindex
	// detached are the ports whose program the last repair found
	// detached and could not re-attach. The gateway services ask per
	// packet whether a peer's port is enforced; a syscall per answer
	// would cost more than the answer. Between a detach and the next
	// repair the floor drops everything the port sends (it is unmarked),
	// so nothing from it reaches a service meanwhile.
	detached map[int]bool
	// awaiting are ports without identity on a network with a container
	// reserved and not bound, by when they joined (containers.go).
	awaiting  map[int]time.Time
	awaitKick chan struct{}
	// services counts the listeners holding each gateway service; only
	// held services are open to containers (services.go).
	services map[datapath.Service]int
	fences   []datapath.Fence // what the datapath fences now
	// hostAddrs are the host's own addresses outside the Outcall subnets
	// as the last fence sync saw them (hostAddrsKnown): the DNS filter,
	// the proxy and Learn ask per answer record and destination, and the
	// datapath's fences, which enforce, are exactly as fresh.
	hostAddrs      []netip.Addr
	hostAddrsKnown bool
	// packetRules are the packet tables of the active rule set, kept for
	// installing into a datapath opened later.
	packetRules *rules.PacketTables

	// engineMu guards engine, the container engine's side of the
	// networks (SetEngine); nil without one. Engine calls are made
	// without mu: they are slow, and the engine may ask the Controller.
	engineMu sync.Mutex
	engine   Engine

	// resolverMu guards resolver, which resolves host name destinations
	// of operator grants (SetResolver, grants.go).
	resolverMu sync.Mutex
	resolver   func(ctx context.Context, host string) ([]netip.Addr, error)
}

// netState is a network and, while its bridge is up, the bridge's ifindex
// and MAC: every frame a port sends goes to that MAC.
type netState struct {
	Network
	index int
	mac   net.HardwareAddr
	// engineID is the engine network's id once EnsureNetwork made or
	// found it.
	engineID string
}

// port is a port of an Outcall bridge: its name now and its network.
type port struct {
	name string
	net  *netState
}

var errBridgeDown = apikit.Wrap(apikit.ErrBridgeDown, errors.New(`bridge is not up — run "outcall bridge up" first`))

func badRequest(format string, args ...any) error {
	return apikit.Errorf(apikit.ErrInvalid, format, args...)
}

// New checks the options and reads the stored networks. It changes nothing
// on the host.
func New(opts Options) (*Controller, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.HostAddrs == nil {
		opts.HostAddrs = listHostAddrs
	}
	if opts.HostRoutes == nil {
		opts.HostRoutes = listHostRoutes
	}
	if opts.OpenDatapath == nil || opts.Floor == nil || opts.Bridges == nil || opts.Endpoints == nil || opts.Events == nil {
		return nil, errors.New("network: Options need OpenDatapath, Floor, Bridges, Endpoints and Events")
	}
	c := &Controller{
		opts: opts, log: opts.Logger, bridges: opts.Bridges, floor: opts.Floor,
		endpoints: opts.Endpoints, events: opts.Events, store: store{path: opts.StatePath},
		nets:  []*netState{{Network: opts.Default}},
		ports: map[int]port{}, services: map[datapath.Service]int{}, awaiting: map[int]time.Time{}, awaitKick: make(chan struct{}, 1),
	}
	stored, err := c.store.load()
	if err != nil {
		return nil, err
	}
	for _, n := range stored {
		if err := c.checkNewLocked(n); err != nil {
			return nil, fmt.Errorf("%s: %w", c.store.path, err)
		}
		c.nets = append(c.nets, &netState{Network: n})
	}
	return c, nil
}

// Run follows ports joining and leaving, reclaims expired grants and repairs
// what was removed behind the Controller's back, until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	interval := c.opts.RepairInterval
	if interval == 0 {
		interval = DefaultRepairInterval
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for _, fn := range []func(context.Context) error{
		c.watchPorts,
		c.bindArrivals,
		func(ctx context.Context) error { return every(ctx, time.Second, c.sweepGrants) },
		func(ctx context.Context) error { return every(ctx, interval, c.repairOnce) },
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// Up creates or attaches everything, in an order that never opens a port:
// the program is loaded (so BPF trouble fails before anything changes), the
// floor goes in (so every bridge is covered the moment it exists), then the
// bridges, then the program on each port, and only then the identities.
// It is idempotent: startup and `bridge up` both take this path.
func (c *Controller) Up() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp == nil {
		if err := c.openDatapathLocked(); err != nil {
			return err
		}
	}
	// Loading the program changes nothing a packet sees; the floor is the
	// first thing that does, and it goes in before the bridges exist. On a
	// restart the bridges and their ports are already there: the new floor
	// names them from its first instant, or it would replace the old
	// floor's port set with an empty one until each port is taken over.
	for _, n := range c.nets {
		if err := c.knowExistingPortsLocked(n); err != nil {
			return err
		}
	}
	if err := c.floor.Apply(c.floorConfigLocked()); err != nil {
		return err
	}
	// Only the service ports an Outcall listener holds are open (see
	// services.go); whatever a previous daemon left in the pinned map is
	// removed.
	if err := c.dp.SetServices(c.servicesLocked()); err != nil {
		return err
	}
	// Every registered endpoint's addresses are its own before any port
	// without identity may reach a service.
	if err := c.syncEndpointAddrsLocked(); err != nil {
		return err
	}
	for _, n := range c.nets {
		if err := c.ensureBridgeLocked(n); err != nil {
			return err
		}
	}
	if err := c.syncFencesLocked(); err != nil {
		return err
	}
	present := map[int]bool{}
	for _, n := range c.nets {
		ports, err := c.bridges.Ports(n.index)
		if err != nil {
			return err
		}
		for _, p := range ports {
			present[p.Index] = true
			if err := c.portJoinedLocked(p.Index, p.Name, n); err != nil {
				return err
			}
		}
	}
	for _, ifindex := range c.dp.AttachedPorts() {
		if !present[ifindex] {
			if err := c.portLeftLocked(ifindex); err != nil {
				return err
			}
		}
	}
	if err := c.floor.Apply(c.floorConfigLocked()); err != nil {
		return err
	}
	for _, n := range c.nets {
		c.events.Publish(events.Network{Name: n.Name, Bridge: n.Bridge, Gateway: n.Gateway, Up: true})
	}
	return nil
}

func (c *Controller) openDatapathLocked() error {
	opts := c.opts.DatapathOptions
	opts.Logger = c.log.With("target", "datapath")
	dp, err := c.opts.OpenDatapath(opts)
	if err != nil {
		return fmt.Errorf("BPF datapath unavailable: %w", err)
	}
	c.dp = dp
	c.fences = nil // a new datapath may have new maps
	// The reader lives as long as this datapath: closing it (at shutdown
	// or bridge down) cancels the reader and waits for it.
	evCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.readDropEvents(evCtx, dp)
	}()
	c.stopEvents = func() { cancel(); <-done }
	// Grants do not survive a restart (S009-FR-010): containers ask again.
	// Every grant change runs under c.mu, so the last resorts of a
	// failed delete may use the *Locked helpers (grants.go).
	c.grants = grants.New(dp, grants.Options{
		OnChange: func(g grants.Grant, ch grants.Change) { c.events.Publish(grantEvent(g, ch)) },
		Close:    c.closeIdentitiesLocked,
		Reopen:   c.reopenIdentitiesLocked,
	})
	if n, err := c.grants.ClearKernel(); err != nil {
		return err
	} else if n > 0 {
		c.log.Info("revoked grants left by an earlier daemon", "count", n)
	}
	if err := c.installRulesLocked(c.packetRules); err != nil {
		return fmt.Errorf("install packet-layer rules: %w", err)
	}
	return nil
}

// ensureBridgeLocked creates or attaches n's bridge; the floor must already
// name it.
func (c *Controller) ensureBridgeLocked(n *netState) error {
	index, _, err := c.bridges.Ensure(n.Bridge, n.Gateway)
	if err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	mac, err := c.bridges.HardwareAddr(index)
	if err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	n.index, n.mac = index, mac
	return nil
}

// knowExistingPortsLocked adds the ports n's bridge has now to c.ports, so
// the floor covers them before their programs are (re)attached.
func (c *Controller) knowExistingPortsLocked(n *netState) error {
	st, err := c.bridges.Status(n.Bridge)
	if err != nil || !st.Exists {
		return err
	}
	ports, err := c.bridges.Ports(st.Index)
	if err != nil {
		return err
	}
	for _, p := range ports {
		if _, ok := c.ports[p.Index]; !ok {
			c.ports[p.Index] = port{name: p.Name, net: n}
		}
	}
	return nil
}

func (c *Controller) floorConfigLocked() nft.Config {
	cfg := nft.Config{Mark: api.AllowMark, MarkMask: api.AllowMarkMask,
		// A cap above what nft counts (2^32-1) is no cap in practice.
		MaxConnsPerAgent: uint32(min(c.opts.MaxConnsPerAgent, 1<<32-1))}
	for _, n := range c.nets {
		cfg.Bridges = append(cfg.Bridges, n.Bridge)
	}
	// By ifindex: a renamed port stays covered, a new port with an old name
	// is not covered until it is taken over.
	for ifindex := range c.ports {
		cfg.Ports = append(cfg.Ports, ifindex)
	}
	slices.Sort(cfg.Ports)
	cfg.Services = c.floorServicesLocked()
	return cfg
}

// netOfBridgeLocked returns the network whose bridge has this ifindex.
func (c *Controller) netOfBridgeLocked(ifindex int) *netState {
	for _, n := range c.nets {
		if ifindex != 0 && n.index == ifindex {
			return n
		}
	}
	return nil
}

func (c *Controller) netByNameLocked(name string) *netState {
	for _, n := range c.nets {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// portJoinedLocked takes over a port of n's bridge: program first, then the
// floor's port set, then the identity.
func (c *Controller) portJoinedLocked(ifindex int, name string, n *netState) error {
	// A port that moved from one Outcall bridge to another keeps nothing:
	// its identity belonged to the other network.
	if old, ok := c.ports[ifindex]; ok && old.net != n {
		if err := c.dp.DeleteEndpoint(ifindex); err != nil {
			return err
		}
	}
	if err := c.dp.Attach(ifindex); err != nil {
		return err
	}
	// Without an identity the port reaches this network's gateway
	// services and nothing else.
	if err := c.dp.SetPortNetwork(ifindex, datapath.PortNetwork{Gateway: n.Gateway, GatewayMAC: n.mac}); err != nil {
		return err
	}
	// The floor keys ports by ifindex, so a rename needs no floor change;
	// only the name the endpoint lookup below uses is updated.
	if _, ok := c.ports[ifindex]; !ok {
		if err := c.floor.AddPort(ifindex); err != nil {
			return err
		}
	}
	c.ports[ifindex] = port{name: name, net: n}
	ep, ok := c.endpointOfPortLocked(ifindex, name, n)
	if !ok {
		c.log.Info("port has no endpoint; it reaches only the gateway's services, which refuse it", "port", name, "ifindex", ifindex, "network", n.Name)
		c.awaitLocked(ifindex, n)
		return nil
	}
	return c.activateLocked(ifindex, ep, n)
}

// endpointOfPortLocked finds the endpoint registered on this port: by
// ifindex, since identity is the port itself, and only if the endpoint is
// on the port's network. A port that only carries the name of an endpoint's
// port is another port (recreated with that name) and gets nothing; an
// endpoint from a registry without ports is bound to the port it is found
// on by name, once.
func (c *Controller) endpointOfPortLocked(ifindex int, name string, n *netState) (endpoint.Endpoint, bool) {
	ep, ok := c.endpoints.ByIfindex(ifindex)
	if !ok {
		if ep, ok = c.endpoints.ByInterface(name); !ok {
			return endpoint.Endpoint{}, false
		}
		if ep.Ifindex != 0 {
			c.log.Warn("port has the name of an endpoint's port but is another port; it reaches nothing until the endpoint is added again",
				"port", name, "ifindex", ifindex, "endpoint", ep.Name, "endpoint_ifindex", ep.Ifindex)
			return endpoint.Endpoint{}, false
		}
	}
	if ep.Network != n.Name {
		c.log.Warn("port's endpoint belongs to another network; it reaches nothing",
			"port", name, "ifindex", ifindex, "endpoint", ep.Name, "endpoint_network", ep.Network, "network", n.Name)
		return endpoint.Endpoint{}, false
	}
	if ep.Ifindex == 0 {
		bound, err := c.endpoints.Bind(ep.Name, ifindex)
		if err != nil {
			c.log.Error("bind endpoint to its port", "endpoint", ep.Name, "ifindex", ifindex, "err", err)
			return endpoint.Endpoint{}, false
		}
		ep = bound
	}
	return ep, true
}

func (c *Controller) activateLocked(ifindex int, ep endpoint.Endpoint, n *netState) error {
	if c.grants != nil && c.grants.Closed(ep.Identity) {
		// The kernel holds grants of it that it refused to delete: it
		// stays an unknown sender until they are gone (grants.go).
		c.log.Error("endpoint stays closed until its grants are removed", "endpoint", ep.Name, "identity", ep.Identity)
		return nil
	}
	err := c.dp.SetEndpoint(ifindex, datapath.Endpoint{Identity: ep.Identity, IP: ep.IP, Gateway: n.Gateway.Addr(), MAC: ep.MAC, GatewayMAC: n.mac})
	if err != nil {
		return err
	}
	// Whatever a port sent before it was taken over (or while the daemon
	// was down) cannot redirect the endpoint's frames from now on.
	if err := c.bridges.PinEndpoint(n.index, ifindex, ep.IP, ep.MAC); err != nil {
		return err
	}
	c.log.Info("endpoint active", "endpoint", ep.Name, "port", ep.Interface, "identity", ep.Identity, "network", n.Name)
	return nil
}

func (c *Controller) portLeftLocked(ifindex int) error {
	var errs []error
	errs = append(errs, c.dp.DeleteEndpoint(ifindex), c.dp.Detach(ifindex))
	if _, ok := c.ports[ifindex]; ok {
		errs = append(errs, c.floor.RemovePort(ifindex))
		delete(c.ports, ifindex)
	}
	delete(c.awaiting, ifindex)
	return errors.Join(errs...)
}

// watchPorts follows ports joining and leaving the Outcall bridges. If the
// netlink subscription breaks it resubscribes; the subscription lists
// existing links again, so nothing that happened in between is missed.
func (c *Controller) watchPorts(ctx context.Context) error {
	self, err := netns.Get()
	if err != nil {
		return fmt.Errorf("open own netns: %w", err)
	}
	defer self.Close()
	isBridge := func(ifindex int) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.netOfBridgeLocked(ifindex) != nil
	}
	for ctx.Err() == nil {
		evs := make(chan bridge.PortEvent, 64)
		errc := make(chan error, 1)
		wctx, cancel := context.WithCancel(ctx)
		go func() { errc <- bridge.WatchPorts(wctx, self, isBridge, evs) }()
	loop:
		for {
			select {
			case ev := <-evs:
				c.handlePortEvent(ev)
			case err := <-errc:
				if ctx.Err() == nil {
					c.log.Warn("port subscription ended; resubscribing", "err", err)
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

func (c *Controller) handlePortEvent(ev bridge.PortEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp == nil {
		return
	}
	var err error
	var n *netState
	if ev.Joined {
		if n = c.netOfBridgeLocked(ev.Port.Bridge); n == nil {
			return // its bridge went away meanwhile
		}
		err = c.portJoinedLocked(ev.Port.Index, ev.Port.Name, n)
	} else if p, ours := c.ports[ev.Port.Index]; ours {
		n = p.net
		err = c.portLeftLocked(ev.Port.Index)
	} else {
		return
	}
	if err != nil {
		// The port stays closed: without its program the floor and
		// the datapath drop what it sends.
		c.log.Error("port update failed", "port", ev.Port.Name, "ifindex", ev.Port.Index, "joined", ev.Joined, "network", n.Name, "err", err)
		return
	}
	c.events.Publish(events.Port{Ifindex: ev.Port.Index, Name: ev.Port.Name, Network: n.Name, Joined: ev.Joined})
}

// sweepGrants reclaims expired grants. Expiry itself is enforced per packet
// in the datapath.
func (c *Controller) sweepGrants() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp != nil {
		if _, err := c.grants.Sweep(); err != nil {
			if err = c.grantFailure("expiry sweep", err); err != nil {
				c.log.Warn("sweep expired grants", "err", err)
			}
		}
	}
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

// readDropEvents publishes the sampled drops of dp until ctx is done.
func (c *Controller) readDropEvents(ctx context.Context, dp Datapath) {
	err := dp.ReadDropEvents(ctx, func(ev datapath.DropEvent) {
		c.events.Publish(events.Drop{Reason: ev.Reason.String(), Identity: ev.Identity, Ifindex: int(ev.Ifindex),
			Src: ev.Src, Dst: ev.Dst, Proto: ev.Proto, SrcPort: ev.SrcPort, DstPort: ev.DstPort})
	})
	if err != nil && ctx.Err() == nil {
		c.log.Warn("drop events stopped", "target", "datapath", "err", err)
	}
}

// Shutdown keeps the bridges, revokes every grant, empties the packet-layer
// rule tables and rewrites the floor in one transaction (S001-FR-010):
// containers that outlive the daemon stay fail-closed. The pinned programs
// keep enforcing.
func (c *Controller) Shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp == nil {
		return
	}
	if n, err := c.grants.Flush(); err != nil && c.grantFailure("shutdown", err) != nil {
		c.log.Error("revoke grants at shutdown", "err", err)
	} else {
		c.log.Info("revoked grants at shutdown", "count", n)
	}
	if err := c.dp.ClearRules(); err != nil {
		c.log.Error("clear packet-layer rules at shutdown", "err", err)
	}
	if err := c.floor.Apply(c.floorConfigLocked()); err != nil {
		c.log.Error("install strict base policy at shutdown", "err", err)
	}
	c.closeDatapathLocked()
}

// closeDatapathLocked releases the datapath handles; pinned state stays.
func (c *Controller) closeDatapathLocked() {
	c.stopEvents()
	c.dp.Close()
	c.dp = nil
	c.grants = nil
}

// grantEvent is the event of a grant the manager added, removed or let
// expire.
func grantEvent(g grants.Grant, ch grants.Change) events.Event {
	return events.Grant{Identity: g.Identity, Dst: g.Dst, Proto: g.Proto, Port: g.Port, Owner: g.Owner.String(),
		Added: ch == grants.Added, Expired: ch == grants.Expired}
}
