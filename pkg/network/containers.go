package network

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/endpoint"
)

// The identities of Docker containers (issue 10). A container's identity
// is reserved before the container exists, with its address and MAC, so
// both are held (no port without identity may send from them) and the rule
// agents know its name before its first packet; once Docker has started it,
// BindContainer finds its port from the container's namespace and the MAC
// and takes the port over with the identity. Until then the port is a port
// without identity: it reaches only its gateway's services, which refuse
// it. The Docker manager (pkg/container) drives this through the daemon.

// ContainerReservation asks for a container's identity.
type ContainerReservation struct {
	// Network is the network's full name; Name the container's name.
	Network, Name string
	// IP and MAC are the container's address: zero to allocate, or the
	// ones a container that starts again was created with.
	IP  netip.Addr
	MAC net.HardwareAddr
}

// NetworkByName returns the Outcall network called name (its full name).
func (c *Controller) NetworkByName(name string) (Network, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.netByNameLocked(name); n != nil {
		return n.Network, true
	}
	return Network{}, false
}

// NetworkList returns every Outcall network.
func (c *Controller) NetworkList() []Network {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Network, 0, len(c.nets))
	for _, n := range c.nets {
		out = append(out, n.Network)
	}
	return out
}

// ReserveContainer registers the identity of a container that does not
// run yet: an address of its network (the first free one) and a random
// locally administered MAC unless the request names them. Its addresses
// are held and its agent name is known to the rules before it returns.
func (c *Controller) ReserveContainer(ctx context.Context, r ContainerReservation) (endpoint.Endpoint, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.netByNameLocked(r.Network)
	if n == nil {
		return endpoint.Endpoint{}, apikit.Errorf(apikit.ErrNotFound, "network %q does not exist", r.Network)
	}
	e := endpoint.Endpoint{Name: r.Name, IP: r.IP, MAC: r.MAC, Network: n.Name, Origin: endpoint.OriginDocker}
	var err error
	if !e.IP.IsValid() {
		if e.IP, err = c.freeAddrLocked(n); err != nil {
			return endpoint.Endpoint{}, err
		}
	} else if !c.usableAddrLocked(n, e.IP) {
		return endpoint.Endpoint{}, badRequest("address %s is not a free host address of network %s (%s)", e.IP, n.Name, n.Subnet())
	}
	if e.MAC == nil {
		if e.MAC, err = randomMAC(); err != nil {
			return endpoint.Endpoint{}, err
		}
	} else if _, err := endpoint.ValidateMAC(e.MAC.String()); err != nil {
		return endpoint.Endpoint{}, badRequest("%w", err)
	}
	if e, err = c.endpoints.Add(e); err != nil {
		return endpoint.Endpoint{}, apikit.Wrap(apikit.ErrConflict, fmt.Errorf("reserve an identity for container %q: %w", r.Name, err))
	}
	if err := errors.Join(c.syncRuleAgentsLocked(), c.syncEndpointAddrsLocked()); err != nil {
		_, _ = c.endpoints.Remove(e.Name)
		return endpoint.Endpoint{}, errors.Join(err, c.syncRuleAgentsLocked(), c.syncEndpointAddrsLocked())
	}
	c.log.Info("container identity reserved", "container", e.Name, "identity", e.Identity, "network", n.Name, "ip", e.IP.String())
	return e, nil
}

// BindContainer ties the reserved identity of the container called name to
// its port: the bridge port whose veth peer, in the container's namespace
// (sandboxKey), carries the reserved MAC. The port must be a port of the
// reservation's network; if the Controller has not seen it join yet, it
// takes it over now (program, floor), then gives it the identity.
func (c *Controller) BindContainer(ctx context.Context, name, containerID, sandboxKey string) (endpoint.Endpoint, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp == nil {
		return endpoint.Endpoint{}, errBridgeDown
	}
	e, err := c.endpoints.Get(name)
	if err != nil {
		return endpoint.Endpoint{}, apikit.Wrap(apikit.ErrNotFound, err)
	}
	if e.Origin != endpoint.OriginDocker {
		return endpoint.Endpoint{}, badRequest("endpoint %q is not a container's", name)
	}
	n := c.netByNameLocked(e.Network)
	if n == nil || n.index == 0 {
		return endpoint.Endpoint{}, fmt.Errorf("bind container %q: network %s is not up", name, e.Network)
	}
	ifindex, err := c.bridges.PeerPort(sandboxKey, e.MAC)
	if err != nil {
		return endpoint.Endpoint{}, fmt.Errorf("bind container %q: find its port: %w", name, err)
	}
	portName, err := c.takeOverLocked(ifindex, n)
	if err != nil {
		return endpoint.Endpoint{}, fmt.Errorf("bind container %q: %w", name, err)
	}
	old := e.Ifindex
	if e.Ifindex == ifindex && e.ContainerID == containerID {
		return e, c.activateLocked(ifindex, e, n)
	}
	if e, err = c.endpoints.BindContainer(name, ifindex, portName, containerID); err != nil {
		return endpoint.Endpoint{}, apikit.Wrap(apikit.ErrConflict, err)
	}
	if old != 0 && old != ifindex {
		// The container's old port, if it is still there, is nobody's.
		if _, ok := c.ports[old]; ok {
			if err := c.dp.DeleteEndpoint(old); err != nil {
				return endpoint.Endpoint{}, err
			}
		}
	}
	if err := c.activateLocked(ifindex, e, n); err != nil {
		// The port stays without identity: closed but for the refusing
		// gateway services.
		_ = c.dp.DeleteEndpoint(ifindex)
		return endpoint.Endpoint{}, err
	}
	return e, nil
}

// takeOverLocked makes sure ifindex is a port of n's bridge under the
// program and the floor, taking it over now if the port watcher has not,
// and returns its name.
func (c *Controller) takeOverLocked(ifindex int, n *netState) (string, error) {
	if p, ok := c.ports[ifindex]; ok {
		if p.net != n {
			return "", fmt.Errorf("port %s (ifindex %d) is on network %s, not %s", p.name, ifindex, p.net.Name, n.Name)
		}
		return p.name, nil
	}
	ports, err := c.bridges.Ports(n.index)
	if err != nil {
		return "", fmt.Errorf("list ports of %s: %w", n.Bridge, err)
	}
	for _, p := range ports {
		if p.Index == ifindex {
			return p.Name, c.portJoinedLocked(ifindex, p.Name, n)
		}
	}
	return "", fmt.Errorf("ifindex %d is not a port of bridge %s", ifindex, n.Bridge)
}

// ReleaseContainer takes a container's identity away (RemoveEndpoint):
// its grants are revoked and its flows end. One that is not registered is
// no error.
func (c *Controller) ReleaseContainer(ctx context.Context, name string) error {
	err := c.RemoveEndpoint(ctx, name)
	if errors.Is(err, endpoint.ErrNotFound) {
		return nil
	}
	return err
}

// ContainerEndpoints lists the identities of containers, reserved or bound.
func (c *Controller) ContainerEndpoints() []endpoint.Endpoint {
	var out []endpoint.Endpoint
	for _, e := range c.endpoints.List() {
		if e.Origin == endpoint.OriginDocker {
			out = append(out, e)
		}
	}
	return out
}

// freeAddrLocked returns the first host address of n that is not the
// gateway and no endpoint holds.
func (c *Controller) freeAddrLocked(n *netState) (netip.Addr, error) {
	p := n.Subnet()
	for a := p.Addr().Next(); p.Contains(a); a = a.Next() {
		if c.usableAddrLocked(n, a) {
			return a, nil
		}
	}
	return netip.Addr{}, apikit.Errorf(apikit.ErrConflict, "network %s has no free address left (%s)", n.Name, p)
}

// usableAddrLocked reports whether a is a host address of n's subnet that
// is neither the gateway nor any endpoint's.
func (c *Controller) usableAddrLocked(n *netState, a netip.Addr) bool {
	p := n.Subnet()
	if !a.Is4() || !p.Contains(a) || a == p.Addr() || a == n.Gateway.Addr() || a == lastAddr(p) {
		return false
	}
	_, taken := c.endpoints.BySource(n.Name, a)
	return !taken
}

// randomMAC is a random unicast, locally administered MAC: no agent can
// guess another's before it runs.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("random MAC: %w", err)
	}
	mac[0] = mac[0]&0xfc | 0x02
	return mac, nil
}

// arrivalWindow bounds how long a port is watched for its far end; Docker
// moves and addresses it within milliseconds of attaching the port.
const arrivalWindow = 3 * time.Second

// awaitLocked watches port ifindex of n if n has a container reserved and
// not bound, so that bindArrivals can give it its identity.
func (c *Controller) awaitLocked(ifindex int, n *netState) {
	if c.opts.SandboxDir == "" {
		return
	}
	for _, e := range c.endpoints.List() {
		if e.Origin == endpoint.OriginDocker && e.Network == n.Name && e.Ifindex == 0 {
			c.awaiting[ifindex] = time.Now()
			select {
			case c.awaitKick <- struct{}{}:
			default:
			}
			return
		}
	}
}

// bindArrivals gives ports that joined a network with a reserved container
// the identity whose MAC their far end carries, as soon as Docker has put
// it in place: a container's first packet then meets its identity, not a
// port without one (whose ARP from a held address is dropped, and retried
// only a second later). A port whose far end carries no reserved MAC stays
// as it is; after arrivalWindow it is no longer watched.
func (c *Controller) bindArrivals(ctx context.Context) error {
	for {
		c.mu.Lock()
		n := len(c.awaiting)
		c.mu.Unlock()
		if n == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-c.awaitKick:
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Millisecond):
		}
		c.bindArrivedOnce()
	}
}

func (c *Controller) bindArrivedOnce() {
	c.mu.Lock()
	ports := make(map[int]time.Time, len(c.awaiting))
	for i, t := range c.awaiting {
		ports[i] = t
	}
	c.mu.Unlock()
	for ifindex, joined := range ports {
		// Outside the lock: it opens namespaces.
		mac, ok, err := c.bridges.PortPeer(ifindex, c.opts.SandboxDir)
		c.mu.Lock()
		switch {
		case err != nil || time.Since(joined) > arrivalWindow:
			delete(c.awaiting, ifindex)
		case ok && c.bindArrivalLocked(ifindex, mac):
			delete(c.awaiting, ifindex)
		}
		c.mu.Unlock()
	}
}

// bindArrivalLocked binds port ifindex to the reserved, unbound container
// identity of its network with this MAC, if there is one, and reports
// whether the port needs no more watching. Docker may move the far end
// before it sets its address, so a MAC that matches nothing is looked at
// again until the window ends.
func (c *Controller) bindArrivalLocked(ifindex int, mac net.HardwareAddr) bool {
	p, ok := c.ports[ifindex]
	if !ok || c.dp == nil {
		return true // it left meanwhile
	}
	if _, bound := c.endpoints.ByIfindex(ifindex); bound {
		return true
	}
	for _, e := range c.endpoints.List() {
		if e.Origin != endpoint.OriginDocker || e.Network != p.net.Name || e.Ifindex != 0 || !bytes.Equal(e.MAC, mac) {
			continue
		}
		bound, err := c.endpoints.BindContainer(e.Name, ifindex, p.name, "")
		if err == nil {
			err = c.activateLocked(ifindex, bound, p.net)
		}
		if err != nil {
			// The manager's bind after the start tries again.
			_ = c.dp.DeleteEndpoint(ifindex)
			c.log.Error("bind a container's port on its arrival", "container", e.Name, "port", p.name, "err", err)
			return true
		}
		c.log.Info("container port bound on its arrival", "container", e.Name, "port", p.name, "ifindex", ifindex)
		return true
	}
	return false
}
