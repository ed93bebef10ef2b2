package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/grants"
	"outcall.dev/outcall/pkg/netrange"
	"outcall.dev/outcall/pkg/ruletable"
)

// Gateway is one network's gateway as the services on it (the DNS filter,
// the proxy) see it. The Controller's gateways implement it; a service's
// own tests implement it over loopback.
type Gateway interface {
	// Network is the gateway's network: its name, bridge and address.
	Network() Network
	// ListenTCP binds a TCP listener on the gateway address and only then
	// opens the port to the network's containers; closing the listener
	// closes the port first.
	ListenTCP(ctx context.Context, port uint16) (net.Listener, error)
	// ListenUDP is ListenTCP for a UDP socket.
	ListenUDP(ctx context.Context, port uint16) (net.PacketConn, error)
	// Identify returns the identity that sent from src on this network:
	// the peer of a DNS query or a proxy connection. Only an identity
	// whose port is on the network's bridge now, with its program
	// attached, is found; anyone else is unknown (REFUSED, 403), never
	// defaulted into an identity.
	Identify(src netip.Addr) (endpoint.Endpoint, bool)
	// Learn writes the grants an allowed DNS answer opens for identity
	// (egress.mode direct_ip) into the datapath, and returns only when
	// they are there: the answer is released after it, so the first SYN
	// never races the map. An error means the grants may be incomplete:
	// the client must get SERVFAIL, never an answer it cannot use.
	Learn(identity uint32, lg Learned) error
}

// Learned is what one allowed DNS answer opens for the identity that asked
// (S007-FR-037..040).
type Learned struct {
	// Rule is the id of the rule that allowed the answer: the grants'
	// owner, so a reload that drops the rule revokes them.
	Rule string
	// Dsts are the answer's IPv4 addresses, after the restricted-address
	// filter.
	Dsts []netip.Addr
	// Ports are the rule's egress.ports (TCP); empty is [80, 443].
	Ports []uint16
	// TTL is the grants' lifetime: the answer's minimum positive TTL,
	// capped by the caller (DNS_CACHE_MAX_TTL_SECS). It must be positive.
	TTL time.Duration
	// AllowPrivate is the rule's egress.allow_private_ips: restricted
	// destinations may be granted.
	AllowPrivate bool
}

// DefaultDirectPorts are the ports of a direct_ip rule without
// egress.ports (S007-FR-038).
var DefaultDirectPorts = []uint16{80, 443}

// gateway is a network's gateway on the Controller.
type gateway struct {
	net Network
	c   *Controller
}

func (g gateway) Network() Network { return g.net }

func (g gateway) ListenTCP(ctx context.Context, port uint16) (net.Listener, error) {
	return g.c.ListenTCPService(ctx, g.net.Name, port)
}

func (g gateway) ListenUDP(ctx context.Context, port uint16) (net.PacketConn, error) {
	return g.c.ListenUDPService(ctx, g.net.Name, port)
}

func (g gateway) Identify(src netip.Addr) (endpoint.Endpoint, bool) {
	e, ok := g.c.endpoints.BySource(g.net.Name, src.Unmap())
	if !ok {
		return endpoint.Endpoint{}, false
	}
	g.c.mu.Lock()
	defer g.c.mu.Unlock()
	if !g.c.enforcedLocked(e) || g.c.ports[e.Ifindex].net.Name != g.net.Name {
		return endpoint.Endpoint{}, false
	}
	return e, true
}

// enforcedLocked reports whether e's port is an Outcall port now with its
// program attached: taken over (attached then) and not found detached by
// the repair loop since.
func (c *Controller) enforcedLocked(e endpoint.Endpoint) bool {
	_, onPort := c.ports[e.Ifindex]
	return e.Ifindex != 0 && onPort && c.dp != nil && !c.detached[e.Ifindex]
}

// Learn implements Gateway. It writes nothing unless all of it may be
// written: the identity must be on this network, the rule must still be an
// allow rule of the set in force (a query decided under the set a reload
// just replaced cannot re-open what the reload revoked: both run under the
// Controller's lock), and no destination may be an Outcall address, or a
// restricted one without AllowPrivate. A key the operator holds is left as
// the operator made it (S007-FR-040: a DNS answer never turns a persistent
// grant into a temporary one): the rule's grant is a claim of its own
// beside the operator's, and the kernel entry their union; a rule's own
// grant is renewed, never shortened. DNS-learned grants do not count
// towards the operator's per-container cap.
func (g gateway) Learn(identity uint32, lg Learned) error {
	if lg.TTL <= 0 {
		return fmt.Errorf("learn grants for rule %q: TTL %v is not positive", lg.Rule, lg.TTL)
	}
	ports := lg.Ports
	if len(ports) == 0 {
		ports = DefaultDirectPorts
	}
	c := g.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp == nil {
		return errBridgeDown
	}
	e, ok := c.endpoints.ByIdentity(identity)
	if !ok || e.Network != g.net.Name || !c.enforcedLocked(e) {
		return fmt.Errorf("learn grants for rule %q: identity %d is not enforced on network %s", lg.Rule, identity, g.net.Name)
	}
	if !c.allowRuleLocked(lg.Rule) {
		return fmt.Errorf("learn grants: rule %q is not an allow rule of the rules in force", lg.Rule)
	}
	for _, dst := range lg.Dsts {
		if !dst.Is4() {
			return fmt.Errorf("learn grants for rule %q: %s is not an IPv4 address", lg.Rule, dst)
		}
		if p := c.outcallSubnetLocked(dst); p.IsValid() {
			return fmt.Errorf("learn grants for rule %q: %s is inside the Outcall subnet %s", lg.Rule, dst, p)
		}
		if _, restricted := netrange.RangeOf(dst); (restricted || c.isHostAddressLocked(dst)) && !lg.AllowPrivate {
			return fmt.Errorf("learn grants for rule %q: %s is restricted and the rule does not allow private addresses", lg.Rule, dst)
		}
	}
	owner := grants.Owner{Rule: lg.Rule}
	expires := time.Now().Add(lg.TTL)
	var errs []error
	for _, dst := range lg.Dsts {
		for _, port := range ports {
			key := datapath.GrantKey{Identity: identity, Dst: dst, Proto: unix.IPPROTO_TCP, Port: port}
			// The rule's own grant on the key is renewed, never
			// shortened; an operator's claim on the same key stays as
			// the operator made it (the kernel entry is the union).
			if old, held := c.grants.ClaimOf(grants.Holder{Owner: owner, Name: grants.KeyName(key)}); held && old.Expires.After(expires) {
				continue
			}
			ng := grants.Grant{Grant: datapath.Grant{GrantKey: key, Expires: expires, AllowPrivate: lg.AllowPrivate}, Owner: owner}
			if err := c.grants.Put(ng); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// allowRuleLocked reports whether id is an allow rule of the rules in force.
func (c *Controller) allowRuleLocked(id string) bool {
	if c.packetRules == nil {
		return false
	}
	return slices.ContainsFunc(c.packetRules.Tables.Rules, func(r ruletable.Rule) bool {
		return r.ID == id && r.Action == ruletable.Allow
	})
}

// Gateways returns the gateways of the networks whose bridge is up.
func (c *Controller) Gateways() []Gateway {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Gateway
	for _, n := range c.nets {
		if n.index != 0 {
			out = append(out, gateway{net: n.Network, c: c})
		}
	}
	return out
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
	if !c.enforcedLocked(e) {
		return endpoint.Endpoint{}, false
	}
	return e, true
}
