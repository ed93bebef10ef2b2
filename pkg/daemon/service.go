package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/grants"
	"outcall.dev/outcall/pkg/netrange"
)

// MaxGrantTTL bounds expires_in_secs (S009-FR-015).
const MaxGrantTTL = 86400 * time.Second

// The daemon's errors carry an apikit kind; apikit.StatusOf picks the status.
var errBridgeDown = apikit.Wrap(apikit.ErrBridgeDown, errors.New(`bridge is not up — run "outcall bridge up" first`))

func badRequest(format string, args ...any) error {
	return apikit.Errorf(apikit.ErrInvalid, format, args...)
}

func notFound(err error) error {
	return apikit.Wrap(apikit.ErrNotFound, err)
}

// BridgeStatus implements hostapi.Service. It asks the kernel every time.
func (d *Daemon) BridgeStatus(ctx context.Context) (api.BridgeStatus, error) {
	st, err := d.bridges.Status(d.cfg.Bridge)
	if err != nil {
		return api.BridgeStatus{}, err
	}
	active, err := d.floor.Active()
	if err != nil {
		return api.BridgeStatus{}, err
	}
	out := api.BridgeStatus{Name: d.cfg.Bridge, Up: st.Exists && st.Up, NftablesActive: active}
	if st.Exists {
		idx := uint32(st.Index)
		out.Index = &idx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out.Ports = len(d.ports)
	for ifindex := range d.ports {
		if d.dp != nil && d.dp.LinkAlive(ifindex) {
			out.PortsEnforced++
		}
	}
	return out, nil
}

// BridgeUp implements hostapi.Service: the same idempotent path as startup.
func (d *Daemon) BridgeUp(ctx context.Context) error { return d.up() }

// BridgeDown implements hostapi.Service: the only teardown. Programs are
// detached and unpinned, the tables deleted, the bridge removed (S001-FR-009).
//
// A port that outlives its bridge is a plain routed interface that no floor
// rule matches, so the teardown is refused (409, naming the ports) while the
// bridge has any, unless req.RemovePorts asks for them to be deleted first.
// Both happen before anything is torn down.
func (d *Daemon) BridgeDown(ctx context.Context, req api.BridgeDownRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.clearPortsLocked(req.RemovePorts); err != nil {
		return err
	}
	if d.dp != nil {
		if err := d.dp.Unpin(); err != nil {
			d.log.Warn("unpin datapath", "err", err)
		}
		d.closeDatapathLocked()
	}
	d.ports = map[int]string{}
	d.bridgeIndex = 0
	if _, err := d.floor.Delete(); err != nil {
		d.log.Warn("delete nftables tables", "err", err) // FR-009.a: warn and go on
	}
	if err := d.bridges.Delete(d.cfg.Bridge); err != nil {
		return err
	}
	d.log.Info("bridge torn down", "bridge", d.cfg.Bridge)
	return nil
}

// clearPortsLocked refuses a teardown while the bridge has ports, or with
// remove deletes them (a veth's peer goes with it) and checks that none is
// left, so that no port can leave the bridge and stay alive.
func (d *Daemon) clearPortsLocked(remove bool) error {
	st, err := d.bridges.Status(d.cfg.Bridge)
	if err != nil || !st.Exists {
		return err
	}
	// A port can join while the others are deleted; a few rounds catch it.
	for range 3 {
		ports, err := d.bridges.Ports(st.Index)
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
				"bridge %s has ports: %s — remove them first or use --remove-ports", d.cfg.Bridge, strings.Join(names, ", "))
		}
		if err := d.bridges.DeletePorts(st.Index, ports); err != nil {
			return err
		}
		d.log.Info("bridge teardown: ports removed", "bridge", d.cfg.Bridge, "ports", names)
	}
	ports, err := d.bridges.Ports(st.Index)
	if err != nil {
		return err
	}
	if len(ports) > 0 {
		return apikit.Errorf(apikit.ErrConflict,
			"bridge %s still has ports after removing them (%d joined meanwhile); nothing was torn down, try again", d.cfg.Bridge, len(ports))
	}
	return nil
}

// Endpoints implements hostapi.Service.
func (d *Daemon) Endpoints(ctx context.Context) ([]api.Endpoint, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []api.Endpoint{}
	for _, e := range d.endpoints.List() {
		out = append(out, d.apiEndpointLocked(e))
	}
	return out, nil
}

// portIndexLocked returns the ifindex of the bridge port with this name.
func (d *Daemon) portIndexLocked(iface string) (int, bool) {
	for ifindex, name := range d.ports {
		if name == iface {
			return ifindex, true
		}
	}
	return 0, false
}

// endpointPortLocked returns the ifindex of the endpoint's port while it is
// a port of the bridge: the port it was registered on, whatever its name is
// now.
func (d *Daemon) endpointPortLocked(e endpoint.Endpoint) (int, bool) {
	if e.Ifindex == 0 {
		return d.portIndexLocked(e.Interface) // not bound yet (older registry)
	}
	_, ok := d.ports[e.Ifindex]
	return e.Ifindex, ok
}

func (d *Daemon) apiEndpointLocked(e endpoint.Endpoint) api.Endpoint {
	out := api.Endpoint{Name: e.Name, Interface: e.Interface, IP: e.IP.String(), MAC: e.MACText, Identity: e.Identity,
		Network: e.Network, Origin: string(e.Origin), ContainerID: e.ContainerID}
	if ifindex, ok := d.endpointPortLocked(e); ok {
		out.Ifindex = ifindex
		out.Interface = d.ports[ifindex] // its name now, if it was renamed
		// The kernel's word, not the daemon's memory: a link detached
		// behind its back reads as detached until the repair loop
		// re-attaches it.
		out.Attached = d.dp != nil && d.dp.LinkAlive(ifindex)
	}
	return out
}

// AddEndpoint implements hostapi.Service. The interface must already be a
// port of the bridge, so a typo is an error rather than a silent no-op.
func (d *Daemon) AddEndpoint(ctx context.Context, req api.EndpointAddRequest) (api.Endpoint, error) {
	e, err := endpoint.Validate(req.Name, req.Interface, req.IP, req.MAC)
	if err != nil {
		return api.Endpoint{}, badRequest("%w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp == nil {
		return api.Endpoint{}, errBridgeDown
	}
	ifindex, ok := d.portIndexLocked(e.Interface)
	if !ok {
		return api.Endpoint{}, badRequest("interface %s is not a port of bridge %s", e.Interface, d.cfg.Bridge)
	}
	if !d.cfg.Gateway.Contains(e.IP) || e.IP == d.cfg.Gateway.Addr() {
		return api.Endpoint{}, badRequest("ip %s is not a host address in the bridge subnet %s", e.IP, d.cfg.Gateway.Masked())
	}
	// The bridge delivers frames for its own MAC, and for its ports'
	// host-side MACs, to the host: an endpoint claiming one would be judged
	// by the wrong address, or answered as the gateway.
	if bytes.Equal(d.bridgeMAC, e.MAC) {
		return api.Endpoint{}, badRequest("invalid mac %q: it is the address of bridge %s itself", e.MACText, d.cfg.Bridge)
	}
	ports, err := d.bridges.Ports(d.bridgeIndex)
	if err != nil {
		return api.Endpoint{}, err
	}
	for _, p := range ports {
		if bytes.Equal(p.HardwareAddr, e.MAC) {
			return api.Endpoint{}, badRequest("invalid mac %q: it is the host-side address of bridge port %s; use the MAC inside the endpoint", e.MACText, p.Name)
		}
	}
	if other, taken := d.endpoints.ByIfindex(ifindex); taken {
		return api.Endpoint{}, badRequest("interface %s already belongs to endpoint %q", e.Interface, other.Name)
	}
	e.Ifindex = ifindex
	e, err = d.endpoints.Add(e)
	if err != nil {
		return api.Endpoint{}, badRequest("%w", err)
	}
	// The agent class goes in before the identity, so the port's first
	// packet is judged by the rows for its agent name.
	err = d.syncRuleAgentsLocked()
	if err == nil {
		err = d.activateLocked(ifindex, e)
	}
	if err != nil {
		_ = d.dp.DeleteEndpoint(ifindex)
		_, _ = d.endpoints.Remove(e.Name)
		return api.Endpoint{}, err
	}
	return d.apiEndpointLocked(e), nil
}

// RemoveEndpoint implements hostapi.Service: the port loses its identity and
// its grants, so it reaches nothing again.
func (d *Daemon) RemoveEndpoint(ctx context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, err := d.endpoints.Get(name)
	if err != nil {
		return notFound(err)
	}
	if d.dp != nil {
		if ifindex, ok := d.endpointPortLocked(e); ok {
			if err := d.dp.DeleteEndpoint(ifindex); err != nil {
				return err
			}
			if err := d.bridges.UnpinEndpoint(d.bridgeIndex, ifindex, e.IP, e.MAC); err != nil {
				d.log.Warn("unpin a removed endpoint's addresses", "endpoint", e.Name, "err", err)
			}
		}
		if _, err := d.grants.RevokeIdentity(e.Identity); err != nil {
			return err
		}
		// Every flow the endpoint opened ends, the rules' too.
		if _, err := d.dp.EndFlows(datapath.FlowMatch{Identity: e.Identity}); err != nil {
			return err
		}
	}
	if _, err = d.endpoints.Remove(name); err != nil {
		return err
	}
	return d.syncRuleAgentsLocked()
}

// grantKey validates an allow or revoke request with S009's messages.
func (d *Daemon) grantKey(container, destination string, protocol *string, port *uint16) (endpoint.Endpoint, datapath.GrantKey, error) {
	var key datapath.GrantKey
	e, err := d.endpoints.Get(container)
	if err != nil {
		return e, key, notFound(err)
	}
	dst, err := netip.ParseAddr(destination)
	if err != nil || !dst.Is4() {
		return e, key, badRequest("invalid destination %q: need an IPv4 address", destination)
	}
	key = datapath.GrantKey{Identity: e.Identity, Dst: dst}
	if protocol != nil {
		if *protocol != "tcp" && *protocol != "udp" {
			return e, key, badRequest("invalid protocol '%s': must be 'tcp' or 'udp'", *protocol)
		}
		key.Proto, _ = datapath.ProtoNumber(*protocol)
	}
	if port != nil {
		if protocol == nil {
			return e, key, badRequest("a destination port requires protocol 'tcp' or 'udp'")
		}
		if *port == 0 {
			return e, key, badRequest("invalid port 0: must be 1-65535")
		}
		key.Port = *port
	}
	return e, key, nil
}

// Allow implements hostapi.Service (S009-IF-003): insert or renew a grant.
func (d *Daemon) Allow(ctx context.Context, req api.AllowRequest) (api.ActiveRule, error) {
	e, key, err := d.grantKey(req.Container, req.Destination, req.Protocol, req.Port)
	if err != nil {
		return api.ActiveRule{}, err
	}
	if req.SrcIP != "" && req.SrcIP != e.IP.String() {
		return api.ActiveRule{}, badRequest("src_ip %s does not belong to container '%s' (its address is %s)", req.SrcIP, e.Name, e.IP)
	}
	if err := d.checkGrantDestination(key.Dst, req.AllowPrivate); err != nil {
		return api.ActiveRule{}, err
	}
	g := datapath.Grant{GrantKey: key, AllowPrivate: req.AllowPrivate}
	if req.ExpiresInSecs != nil {
		ttl := time.Duration(*req.ExpiresInSecs) * time.Second
		if ttl < time.Second || ttl > MaxGrantTTL {
			return api.ActiveRule{}, badRequest("expires_in_secs must be between 1 and 86400 seconds")
		}
		g.Expires = time.Now().Add(ttl)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp == nil {
		return api.ActiveRule{}, errBridgeDown
	}
	if err := d.grants.Put(grants.Grant{Grant: g, Owner: grants.Operator}); err != nil {
		return api.ActiveRule{}, err
	}
	return activeRule(e, g, time.Now()), nil
}

// Revoke implements hostapi.Service.
func (d *Daemon) Revoke(ctx context.Context, req api.RevokeRequest) error {
	e, key, err := d.grantKey(req.Container, req.Destination, req.Protocol, req.Port)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp == nil {
		return errBridgeDown
	}
	// The grant's flows end with it: an operator's revoke closes the
	// tuple, where an expiry does not.
	ok, err := d.grants.Revoke(key)
	if err != nil {
		return err
	}
	if !ok {
		return notFound(fmt.Errorf("no grant for container '%s' to %s", e.Name, req.Destination))
	}
	return nil
}

func activeRule(e endpoint.Endpoint, g datapath.Grant, now time.Time) api.ActiveRule {
	r := api.ActiveRule{Container: e.Name, SrcIP: e.IP.String(), Destination: g.Dst.String()}
	if g.Proto != 0 {
		p := datapath.ProtoName(g.Proto)
		r.Protocol = &p
	}
	if g.Port != 0 {
		port := g.Port
		r.Port = &port
	}
	if !g.Expires.IsZero() {
		secs := uint64((g.Expires.Sub(now) + time.Second - 1) / time.Second) // rounded up (S009-IF-001)
		r.ExpiresInSecs = &secs
	}
	return r
}

// ActiveRules implements hostapi.Service: live grants, expired ones left
// out, from the grant index (the kernel map is not walked).
func (d *Daemon) ActiveRules(ctx context.Context) ([]api.ActiveRule, error) {
	d.mu.Lock()
	gm := d.grants
	d.mu.Unlock()
	out := []api.ActiveRule{}
	if gm == nil {
		return out, nil
	}
	now := time.Now()
	for _, g := range gm.List() {
		e, ok := d.endpoints.ByIdentity(g.Identity)
		if !ok {
			e = endpoint.Endpoint{Name: fmt.Sprintf("identity-%d", g.Identity)}
		}
		out = append(out, activeRule(e, g.Grant, now))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Container != out[j].Container {
			return out[i].Container < out[j].Container
		}
		return out[i].Destination < out[j].Destination
	})
	return out, nil
}

// FlushRules implements hostapi.Service.
func (d *Daemon) FlushRules(ctx context.Context) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.grants == nil {
		return 0, nil
	}
	return d.grants.Flush()
}

// checkGrantDestination refuses what a grant may never open (an Outcall
// subnet: agents never reach each other) and what it opens only when the
// operator says so (a restricted destination), with a message that names
// the range and the flag.
func (d *Daemon) checkGrantDestination(dst netip.Addr, allowPrivate bool) error {
	if d.cfg.SubnetBlock.Contains(dst) {
		return badRequest("destination %s is inside the Outcall subnet block %s: agents and gateways are never reachable through a grant", dst, d.cfg.SubnetBlock)
	}
	if allowPrivate {
		return nil
	}
	if r, ok := netrange.RangeOf(dst); ok {
		return badRequest("destination %s is restricted (inside %s): pass --allow-private (allow_private_ips) to open it", dst, r)
	}
	if d.isHostAddress(dst) {
		return badRequest("destination %s is one of this host's own addresses: pass --allow-private (allow_private_ips) to open it", dst)
	}
	return nil
}

// DatapathCounters implements hostapi.Service and metrics.Source.
func (d *Daemon) DatapathCounters(ctx context.Context) ([]api.DatapathCounter, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp == nil {
		return []api.DatapathCounter{}, nil
	}
	cs, err := d.dp.Counters()
	if err != nil {
		return nil, err
	}
	out := make([]api.DatapathCounter, 0, len(cs))
	for _, c := range cs {
		out = append(out, api.DatapathCounter{Verdict: c.Reason.Verdict(), Reason: c.Reason.String(), Packets: c.Packets, Bytes: c.Bytes})
	}
	return out, nil
}

// GrantCount implements metrics.Source.
func (d *Daemon) GrantCount(ctx context.Context) (int, error) {
	d.mu.Lock()
	gm := d.grants
	d.mu.Unlock()
	if gm == nil {
		return 0, nil
	}
	return gm.Count(), nil
}

// FloorCounters implements metrics.Source.
func (d *Daemon) FloorCounters(ctx context.Context) (map[string]uint64, error) {
	return d.floor.Counters()
}

// EndpointCount implements metrics.Source.
func (d *Daemon) EndpointCount() int { return len(d.endpoints.List()) }
