package network

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/events"
)

// BridgeStatus reports the default network's bridge (S001-IF-001; DESIGN
// §5), asking the kernel every time. Ports and PortsEnforced count the
// ports of every Outcall bridge.
func (c *Controller) BridgeStatus(ctx context.Context) (api.BridgeStatus, error) {
	name := c.opts.Default.Bridge
	st, err := c.bridges.Status(name)
	if err != nil {
		return api.BridgeStatus{}, err
	}
	active, err := c.floor.Active()
	if err != nil {
		return api.BridgeStatus{}, err
	}
	out := api.BridgeStatus{Name: name, Up: st.Exists && st.Up, NftablesActive: active}
	if st.Exists {
		idx := uint32(st.Index)
		out.Index = &idx
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out.Ports = len(c.ports)
	for ifindex := range c.ports {
		if c.dp != nil && c.dp.LinkAlive(ifindex) {
			out.PortsEnforced++
		}
	}
	return out, nil
}

// BridgeUp is `bridge up`: the same idempotent path as startup.
func (c *Controller) BridgeUp(ctx context.Context) error { return c.Up() }

// BridgeDown is the only teardown (S001-FR-009): programs are detached and
// unpinned, the tables deleted and every Outcall bridge removed, the default
// one and those of the other networks, which are recreated by the next
// `bridge up`.
//
// A port that outlives its bridge is a plain routed interface that no floor
// rule matches, so the teardown is refused (409, naming the ports) while a
// bridge has any, unless req.RemovePorts asks for them to be deleted first.
// Both happen before anything is torn down.
func (c *Controller) BridgeDown(ctx context.Context, req api.BridgeDownRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nets {
		if err := c.clearPortsLocked(n, req.RemovePorts); err != nil {
			return err
		}
	}
	if c.dp != nil {
		if err := c.dp.Unpin(); err != nil {
			c.log.Warn("unpin datapath", "err", err)
		}
		c.closeDatapathLocked()
	}
	c.ports = map[int]port{}
	if _, err := c.floor.Delete(); err != nil {
		c.log.Warn("delete nftables tables", "err", err) // FR-009.a: warn and go on
	}
	for _, n := range c.nets {
		if err := c.bridges.Delete(n.Bridge); err != nil {
			return err
		}
		n.index, n.mac = 0, nil
		c.events.Publish(events.Network{Name: n.Name, Bridge: n.Bridge, Gateway: n.Gateway})
		c.log.Info("bridge torn down", "bridge", n.Bridge, "network", n.Name)
	}
	return nil
}

// clearPortsLocked refuses a teardown while n's bridge has ports, or with
// remove deletes them (a veth's peer goes with it) and checks that none is
// left, so that no port can leave the bridge and stay alive.
func (c *Controller) clearPortsLocked(n *netState, remove bool) error {
	st, err := c.bridges.Status(n.Bridge)
	if err != nil || !st.Exists {
		return err
	}
	// A port can join while the others are deleted; a few rounds catch it.
	for range 3 {
		ports, err := c.bridges.Ports(st.Index)
		if err != nil || len(ports) == 0 {
			return err
		}
		names := make([]string, 0, len(ports))
		for _, p := range ports {
			names = append(names, p.Name)
		}
		sort.Strings(names)
		if !remove {
			return apikit.Errorf(apikit.ErrConflict,
				"bridge %s has ports: %s — remove them first or use --remove-ports", n.Bridge, strings.Join(names, ", "))
		}
		if err := c.bridges.DeletePorts(st.Index, ports); err != nil {
			return err
		}
		c.log.Info("bridge teardown: ports removed", "bridge", n.Bridge, "ports", names)
	}
	ports, err := c.bridges.Ports(st.Index)
	if err != nil {
		return err
	}
	if len(ports) > 0 {
		return apikit.Errorf(apikit.ErrConflict,
			"bridge %s still has ports after removing them (%d joined meanwhile); nothing was torn down, try again", n.Bridge, len(ports))
	}
	return nil
}

// Networks lists every network (S002-IF-003), the default one first.
func (c *Controller) Networks(ctx context.Context) ([]api.NetworkStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]api.NetworkStatus, 0, len(c.nets))
	for _, n := range c.nets {
		out = append(out, c.statusLocked(n))
	}
	return out, nil
}

// Network reports one network by suffix; nil is the default network
// (S002-IF-002). A network that does not exist is not an error.
func (c *Controller) Network(ctx context.Context, suffix *string) (api.NetworkStatus, error) {
	name, err := FullName(suffix)
	if err != nil {
		return api.NetworkStatus{}, badRequest("%w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.netByNameLocked(name); n != nil {
		return c.statusLocked(n), nil
	}
	return api.NetworkStatus{Name: name, Containers: []api.NetworkContainer{}}, nil
}

// NetworkConfig reports the subnet block networks are allocated from
// (S002-FR-031).
func (c *Controller) NetworkConfig(ctx context.Context) (api.NetworkConfig, error) {
	return api.NetworkConfig{SubnetBlock: c.opts.SubnetBlock.String()}, nil
}

// statusLocked describes n with the identities registered on it. The
// network id is the bridge's name until Docker networks name it.
func (c *Controller) statusLocked(n *netState) api.NetworkStatus {
	subnet, gateway := n.Subnet().String(), n.Gateway.Addr().String()
	id := n.id()
	out := api.NetworkStatus{Exists: true, NetworkID: &id, Name: n.Name, Subnet: &subnet, Gateway: &gateway, Bridge: n.Bridge,
		Containers: []api.NetworkContainer{}}
	for _, e := range c.endpoints.List() {
		if e.Network == n.Name {
			out.Containers = append(out.Containers, api.NetworkContainer{Name: e.Name, IPv4Address: e.IP.String()})
		}
	}
	return out
}

// CreateNetwork creates a network (S002-IF-001): its bridge, covered by the
// floor before it exists and by the datapath from its first port, with the
// requested subnet or the first free /24 of the subnet block. Creating a
// network that exists succeeds with Created false.
func (c *Controller) CreateNetwork(ctx context.Context, req api.NetworkCreateRequest) (api.NetworkCreateResult, error) {
	engine := c.engineOf()
	var engineUsed []netip.Prefix
	if engine != nil {
		// The engine's networks are asked first: nothing changes if it
		// cannot answer (S002: overlap with every Docker network).
		var err error
		if engineUsed, err = engine.UsedSubnets(ctx); err != nil {
			return api.NetworkCreateResult{}, apikit.Wrap(apikit.ErrUnavailable, fmt.Errorf("list the container engine's networks: %w", err))
		}
	}
	res, n, err := c.createNetwork(req, engineUsed)
	if err != nil || engine == nil {
		return res, err
	}
	// The bridge is there, under the floor, before the engine's network
	// names it.
	id, err := engine.EnsureNetwork(ctx, n)
	if err != nil {
		if res.Created {
			c.undoCreate(n.Name)
		}
		return api.NetworkCreateResult{}, fmt.Errorf("create the Docker network of %q: %w", n.Name, err)
	}
	c.setEngineID(n.Name, id)
	res.NetworkID = id
	return res, nil
}

// createNetwork is CreateNetwork's own part, with the subnets the engine
// uses besides.
func (c *Controller) createNetwork(req api.NetworkCreateRequest, engineUsed []netip.Prefix) (api.NetworkCreateResult, Network, error) {
	name, err := FullName(req.Name)
	if err != nil {
		return api.NetworkCreateResult{}, Network{}, badRequest("%w", err)
	}
	var gateway netip.Prefix
	if req.Subnet != nil {
		if gateway, err = CheckSubnet(*req.Subnet, req.Gateway); err != nil {
			return api.NetworkCreateResult{}, Network{}, badRequest("%w", err)
		}
	} else if req.Gateway != nil {
		return api.NetworkCreateResult{}, Network{}, badRequest("a gateway needs a subnet: pass --subnet with --gateway")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp == nil {
		return api.NetworkCreateResult{}, Network{}, errBridgeDown // S002-FR-004
	}
	if n := c.netByNameLocked(name); n != nil {
		if gateway.IsValid() && gateway != n.Gateway {
			return api.NetworkCreateResult{}, Network{}, apikit.Errorf(apikit.ErrConflict,
				"network %q exists with subnet %s and gateway %s, not %s and %s", name, n.Subnet(), n.Gateway.Addr(), gateway.Masked(), gateway.Addr())
		}
		return api.NetworkCreateResult{NetworkID: n.id(), Name: name, Subnet: n.Subnet().String()}, n.Network, nil
	}
	if !gateway.IsValid() {
		used, err := c.usedSubnetsLocked()
		if err != nil {
			return api.NetworkCreateResult{}, Network{}, err
		}
		if gateway, err = Allocate(c.opts.SubnetBlock, append(used, engineUsed...)); err != nil {
			return api.NetworkCreateResult{}, Network{}, apikit.Wrap(apikit.ErrConflict, err)
		}
	}
	n := &netState{Network: Network{Name: name, Bridge: BridgeName(name), Gateway: gateway}}
	if err := c.checkNewLocked(n.Network); err != nil {
		return api.NetworkCreateResult{}, Network{}, err
	}
	if i := slices.IndexFunc(engineUsed, n.Subnet().Overlaps); i >= 0 {
		return api.NetworkCreateResult{}, Network{}, apikit.Errorf(apikit.ErrConflict, "subnet %s overlaps %s of a Docker network", n.Subnet(), engineUsed[i])
	}
	if err := c.addNetworkLocked(n); err != nil {
		return api.NetworkCreateResult{}, Network{}, err
	}
	c.log.Info("network created", "network", name, "bridge", n.Bridge, "subnet", n.Subnet(), "target", "network")
	return api.NetworkCreateResult{NetworkID: n.Bridge, Name: name, Created: true, Subnet: n.Subnet().String()}, n.Network, nil
}

// usedSubnetsLocked is what a new subnet must not overlap: the networks'
// subnets, the host's own addresses and the destinations of its routes.
func (c *Controller) usedSubnetsLocked() ([]netip.Prefix, error) {
	var used []netip.Prefix
	for _, n := range c.nets {
		used = append(used, n.Subnet())
	}
	addrs, err := c.opts.HostAddrs()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		used = append(used, netip.PrefixFrom(a, 32))
	}
	routes, err := c.opts.HostRoutes()
	if err != nil {
		return nil, err
	}
	return append(used, routes...), nil
}

// checkNewLocked refuses a network whose name, bridge or subnet another
// network has, or whose subnet holds an address of the host.
func (c *Controller) checkNewLocked(n Network) error {
	for _, o := range c.nets {
		switch {
		case o.Name == n.Name:
			return badRequest("network %q is defined twice", n.Name)
		case o.Bridge == n.Bridge:
			return badRequest("network %q: bridge %s is the bridge of network %q", n.Name, n.Bridge, o.Name)
		case o.Subnet().Overlaps(n.Subnet()):
			return apikit.Errorf(apikit.ErrConflict, "subnet %s overlaps %s of network %q", n.Subnet(), o.Subnet(), o.Name)
		}
	}
	if c.dp == nil {
		return nil // at startup: the stored network's bridge holds its own gateway
	}
	addrs, err := c.opts.HostAddrs()
	if err != nil {
		return err
	}
	if i := slices.IndexFunc(addrs, n.Subnet().Contains); i >= 0 {
		return apikit.Errorf(apikit.ErrConflict, "subnet %s holds %s, an address of this host", n.Subnet(), addrs[i])
	}
	routes, err := c.opts.HostRoutes()
	if err != nil {
		return err
	}
	if i := slices.IndexFunc(routes, n.Subnet().Overlaps); i >= 0 {
		return apikit.Errorf(apikit.ErrConflict, "subnet %s overlaps %s, a route of this host", n.Subnet(), routes[i])
	}
	return nil
}

// addNetworkLocked brings n's bridge up in the fail-closed order (floor
// naming the bridge, bridge, fences, then the record) and undoes what it
// did if a step fails.
func (c *Controller) addNetworkLocked(n *netState) (err error) {
	c.nets = append(c.nets, n)
	defer func() {
		if err == nil {
			return
		}
		c.nets = c.nets[:len(c.nets)-1]
		// Ensure may have made the bridge before it failed.
		if st, serr := c.bridges.Status(n.Bridge); serr != nil || st.Exists {
			if derr := c.bridges.Delete(n.Bridge); derr != nil {
				c.log.Error("remove the bridge of a network that failed to come up", "bridge", n.Bridge, "err", derr)
			}
		}
		if ferr := c.floor.Apply(c.floorConfigLocked()); ferr != nil {
			c.log.Error("restore the floor after a failed network create", "err", ferr)
		}
	}()
	if err := c.floor.Apply(c.floorConfigLocked()); err != nil {
		return err
	}
	if err := c.ensureBridgeLocked(n); err != nil {
		return err
	}
	if err := c.syncFencesLocked(); err != nil {
		return err
	}
	if err := c.store.save(c.storedLocked()); err != nil {
		return err
	}
	c.events.Publish(events.Network{Name: n.Name, Bridge: n.Bridge, Gateway: n.Gateway, Up: true})
	return nil
}

// storedLocked are the networks the store keeps: all but the default one.
func (c *Controller) storedLocked() []Network {
	out := []Network{}
	for _, n := range c.nets[1:] {
		out = append(out, n.Network)
	}
	return out
}

// DestroyNetwork removes a network and its bridge (S002-IF-004). It refuses
// while identities are registered on the network or ports are on its
// bridge, naming them; a network that does not exist is not an error.
func (c *Controller) DestroyNetwork(ctx context.Context, req api.NetworkDestroyRequest) (api.NetworkDestroyResult, error) {
	name, err := FullName(req.Name)
	if err != nil {
		return api.NetworkDestroyResult{}, badRequest("%w", err)
	}
	// Refused before the engine is asked anything, if it would be here.
	if res, err := c.destroyNetwork(name, true); err != nil || !res.Destroyed {
		return res, err
	}
	if engine := c.engineOf(); engine != nil {
		// The engine's network goes first: it refuses while containers
		// are connected, and the bridge must outlive anything naming it.
		if err := engine.RemoveNetwork(ctx, name); err != nil {
			return api.NetworkDestroyResult{}, fmt.Errorf("remove the Docker network of %q: %w", name, err)
		}
	}
	return c.destroyNetwork(name, false)
}

// destroyNetwork is DestroyNetwork's own part; with dryRun it only checks
// and reports Destroyed for a network it would destroy.
func (c *Controller) destroyNetwork(name string, dryRun bool) (api.NetworkDestroyResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.nets, func(n *netState) bool { return n.Name == name })
	if i < 0 {
		return api.NetworkDestroyResult{Name: name}, nil
	}
	if i == 0 {
		return api.NetworkDestroyResult{}, apikit.Errorf(apikit.ErrConflict,
			"cannot destroy network %q: it is the daemon's own bridge %s (--bridge); `outcall bridge down` removes it", name, c.opts.Default.Bridge)
	}
	n := c.nets[i]
	// Each container once: by its identity's name, or, for a port
	// without one, by the port's.
	var users []string
	for _, e := range c.endpoints.List() {
		if e.Network == name {
			users = append(users, e.Name)
		}
	}
	for ifindex, p := range c.ports {
		if _, identified := c.endpoints.ByIfindex(ifindex); p.net == n && !identified {
			users = append(users, p.name)
		}
	}
	slices.Sort(users)
	if users = slices.Compact(users); len(users) > 0 {
		return api.NetworkDestroyResult{}, apikit.Errorf(apikit.ErrConflict,
			"cannot destroy network %q: %d containers still connected: %s", name, len(users), strings.Join(users, ", "))
	}
	if dryRun {
		return api.NetworkDestroyResult{Name: name, Destroyed: true}, nil
	}
	if err := c.clearPortsLocked(n, false); err != nil {
		return api.NetworkDestroyResult{}, err
	}
	rest := slices.Delete(slices.Clone(c.nets), i, i+1)
	if err := c.bridges.Delete(n.Bridge); err != nil {
		return api.NetworkDestroyResult{}, fmt.Errorf("destroy network %q: %w", name, err)
	}
	c.nets = rest
	if err := c.store.save(c.storedLocked()); err != nil {
		c.log.Error("network destroyed but not forgotten: it comes back at the next start", "network", name, "err", err)
	}
	if err := c.floor.Apply(c.floorConfigLocked()); err != nil {
		c.log.Error("floor after a network destroy", "err", err)
	}
	if err := c.syncFencesLocked(); err != nil {
		c.log.Warn("fences after a network destroy", "err", err)
	}
	c.events.Publish(events.Network{Name: n.Name, Bridge: n.Bridge, Gateway: n.Gateway})
	c.log.Info("network destroyed", "network", name, "bridge", n.Bridge, "target", "network")
	return api.NetworkDestroyResult{Name: name, Destroyed: true}, nil
}
