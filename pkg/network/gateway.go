package network

import (
	"context"
	"net"
	"net/netip"

	"outcall.dev/outcall/pkg/endpoint"
)

// Gateway is one network's gateway as the services on it see it: the DNS
// filter and the proxy open their sockets here, and a gateway port is open
// to the network's containers exactly while such a socket holds it.
type Gateway struct {
	Network
	c *Controller
}

// ListenTCP binds a TCP listener on the gateway (ListenTCPService).
func (g Gateway) ListenTCP(ctx context.Context, port uint16) (net.Listener, error) {
	return g.c.ListenTCPService(ctx, g.Name, port)
}

// ListenUDP binds a UDP socket on the gateway (ListenUDPService).
func (g Gateway) ListenUDP(ctx context.Context, port uint16) (net.PacketConn, error) {
	return g.c.ListenUDPService(ctx, g.Name, port)
}

// Gateways returns the gateways of the networks whose bridge is up.
func (c *Controller) Gateways() []Gateway {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Gateway
	for _, n := range c.nets {
		if n.index != 0 {
			out = append(out, Gateway{Network: n.Network, c: c})
		}
	}
	return out
}

// Identify returns the identity that sent from src on this gateway's
// network: the peer of a DNS query or a proxy connection. Only an identity
// whose port is on the network's bridge now, with its program attached, is
// found; anyone else is unknown (REFUSED, 403), never defaulted into an
// identity.
func (g Gateway) Identify(src netip.Addr) (endpoint.Endpoint, bool) {
	e, ok := g.c.endpoints.BySource(g.Name, src.Unmap())
	if !ok {
		return endpoint.Endpoint{}, false
	}
	g.c.mu.Lock()
	defer g.c.mu.Unlock()
	p, onPort := g.c.ports[e.Ifindex]
	if e.Ifindex == 0 || !onPort || p.net.Name != g.Name || g.c.dp == nil || !g.c.dp.LinkAlive(e.Ifindex) {
		return endpoint.Endpoint{}, false
	}
	return e, true
}

// ContainerIdentity returns the identity of a Docker container, for the
// agent API (SO_PEERCRED, cgroup, container id): only while the
// container's port is enforced.
func (c *Controller) ContainerIdentity(containerID string) (endpoint.Endpoint, bool) {
	e, ok := c.endpoints.ByContainer(containerID)
	if !ok {
		return endpoint.Endpoint{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, onPort := c.ports[e.Ifindex]; e.Ifindex == 0 || !onPort || c.dp == nil || !c.dp.LinkAlive(e.Ifindex) {
		return endpoint.Endpoint{}, false
	}
	return e, true
}
