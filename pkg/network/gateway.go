package network

import (
	"context"
	"net"
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
