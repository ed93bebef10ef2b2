package network

import (
	"bytes"
	"context"
	"errors"
	"strings"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/endpoint"
)

// Endpoints lists the registered identities.
func (c *Controller) Endpoints(ctx context.Context) ([]api.Endpoint, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []api.Endpoint{}
	for _, e := range c.endpoints.List() {
		out = append(out, c.apiEndpointLocked(e))
	}
	return out, nil
}

// portIndexLocked returns the ifindex of the Outcall bridge port with this
// name.
func (c *Controller) portIndexLocked(iface string) (int, bool) {
	for ifindex, p := range c.ports {
		if p.name == iface {
			return ifindex, true
		}
	}
	return 0, false
}

// endpointPortLocked returns the ifindex of the endpoint's port while it is
// a port of its network's bridge: the port it was registered on, whatever
// its name is now.
func (c *Controller) endpointPortLocked(e endpoint.Endpoint) (int, bool) {
	ifindex, ok := e.Ifindex, false
	if ifindex == 0 {
		ifindex, ok = c.portIndexLocked(e.Interface) // not bound yet (older registry)
	} else {
		_, ok = c.ports[ifindex]
	}
	return ifindex, ok && c.ports[ifindex].net.Name == e.Network
}

func (c *Controller) apiEndpointLocked(e endpoint.Endpoint) api.Endpoint {
	out := api.Endpoint{Name: e.Name, Interface: e.Interface, IP: e.IP.String(), MAC: e.MACText, Identity: e.Identity,
		Network: e.Network, Origin: string(e.Origin), ContainerID: e.ContainerID}
	if ifindex, ok := c.endpointPortLocked(e); ok {
		out.Ifindex = ifindex
		out.Interface = c.ports[ifindex].name // its name now, if it was renamed
		// The kernel's word, not the Controller's memory: a link detached
		// behind its back reads as detached until the repair loop
		// re-attaches it.
		out.Attached = c.dp != nil && c.dp.LinkAlive(ifindex)
	}
	return out
}

// AddEndpoint gives a port of an Outcall bridge an identity on that
// bridge's network. The interface must already be a port, so a typo is an
// error rather than a silent no-op.
func (c *Controller) AddEndpoint(ctx context.Context, req api.EndpointAddRequest) (api.Endpoint, error) {
	e, err := endpoint.Validate(req.Name, req.Interface, req.IP, req.MAC)
	if err != nil {
		return api.Endpoint{}, badRequest("%w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp == nil {
		return api.Endpoint{}, errBridgeDown
	}
	ifindex, ok := c.portIndexLocked(e.Interface)
	if !ok {
		return api.Endpoint{}, badRequest("interface %s is not a port of an Outcall bridge (%s)", e.Interface, c.bridgeNamesLocked())
	}
	n := c.ports[ifindex].net
	if !n.Gateway.Contains(e.IP) || e.IP == n.Gateway.Addr() {
		return api.Endpoint{}, badRequest("ip %s is not a host address in the subnet %s of network %s (bridge %s)", e.IP, n.Subnet(), n.Name, n.Bridge)
	}
	// The bridge delivers frames for its own MAC, and for its ports'
	// host-side MACs, to the host: an endpoint claiming one would be judged
	// by the wrong address, or answered as the gateway.
	if bytes.Equal(n.mac, e.MAC) {
		return api.Endpoint{}, badRequest("invalid mac %q: it is the address of bridge %s itself", e.MACText, n.Bridge)
	}
	ports, err := c.bridges.Ports(n.index)
	if err != nil {
		return api.Endpoint{}, err
	}
	for _, p := range ports {
		if bytes.Equal(p.HardwareAddr, e.MAC) {
			return api.Endpoint{}, badRequest("invalid mac %q: it is the host-side address of bridge port %s; use the MAC inside the endpoint", e.MACText, p.Name)
		}
	}
	if other, taken := c.endpoints.ByIfindex(ifindex); taken {
		return api.Endpoint{}, badRequest("interface %s already belongs to endpoint %q", e.Interface, other.Name)
	}
	e.Ifindex, e.Network = ifindex, n.Name
	e, err = c.endpoints.Add(e)
	if err != nil {
		return api.Endpoint{}, badRequest("%w", err)
	}
	// The agent class goes in before the identity, so the port's first
	// packet is judged by the rows for its agent name; the addresses are
	// the endpoint's before a gateway service can identify it by them.
	err = c.syncRuleAgentsLocked()
	if err == nil {
		err = c.syncEndpointAddrsLocked()
	}
	if err == nil {
		err = c.activateLocked(ifindex, e, n)
	}
	if err != nil {
		_ = c.dp.DeleteEndpoint(ifindex)
		_, _ = c.endpoints.Remove(e.Name)
		_ = c.syncEndpointAddrsLocked()
		return api.Endpoint{}, err
	}
	return c.apiEndpointLocked(e), nil
}

func (c *Controller) bridgeNamesLocked() string {
	names := make([]string, 0, len(c.nets))
	for _, n := range c.nets {
		names = append(names, n.Bridge)
	}
	return strings.Join(names, ", ")
}

// RemoveEndpoint takes an identity away: its port reaches nothing again,
// its grants are revoked and its flows end.
func (c *Controller) RemoveEndpoint(ctx context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, err := c.endpoints.Get(name)
	if err != nil {
		return apikit.Wrap(apikit.ErrNotFound, err)
	}
	if c.dp != nil {
		if ifindex, ok := c.endpointPortLocked(e); ok {
			if err := c.dp.DeleteEndpoint(ifindex); err != nil {
				return err
			}
			if err := c.bridges.UnpinEndpoint(c.ports[ifindex].net.index, ifindex, e.IP, e.MAC); err != nil {
				c.log.Warn("unpin a removed endpoint's addresses", "endpoint", e.Name, "err", err)
			}
		}
		if _, err := c.grants.RevokeIdentity(e.Identity); err != nil {
			if err = c.grantFailure("remove endpoint "+e.Name, err); err != nil {
				return err
			}
		}
		// Every flow the endpoint opened ends, the rules' too.
		if _, err := c.dp.EndFlows(datapath.FlowMatch{Identity: e.Identity}); err != nil {
			return err
		}
	}
	if _, err = c.endpoints.Remove(name); err != nil {
		return err
	}
	// Its addresses are free for other senders only once no gateway
	// service can identify it any more.
	return errors.Join(c.syncRuleAgentsLocked(), c.syncEndpointAddrsLocked())
}

// syncEndpointAddrsLocked holds the addresses of every registered endpoint,
// its port there or not, in the datapath: a port without identity sending
// from one of them is dropped, so the gateway services, which know a
// sender by its address, never take it for the endpoint.
func (c *Controller) syncEndpointAddrsLocked() error {
	if c.dp == nil {
		return nil
	}
	var addrs []datapath.EndpointAddrs
	for _, e := range c.endpoints.List() {
		addrs = append(addrs, datapath.EndpointAddrs{Identity: e.Identity, IP: e.IP, MAC: e.MAC})
	}
	return c.dp.SetEndpointAddrs(addrs)
}

// EndpointCount is how many identities are registered (metrics.Source).
func (c *Controller) EndpointCount() int { return len(c.endpoints.List()) }
