package network

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
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

// grantKey validates an allow or revoke request with S009's messages.
func (c *Controller) grantKey(container, destination string, protocol *string, port *uint16) (endpoint.Endpoint, datapath.GrantKey, error) {
	var key datapath.GrantKey
	e, err := c.endpoints.Get(container)
	if err != nil {
		return e, key, apikit.Wrap(apikit.ErrNotFound, err)
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

// Allow inserts or renews an operator grant (S009-IF-003).
func (c *Controller) Allow(ctx context.Context, req api.AllowRequest) (api.ActiveRule, error) {
	e, key, err := c.grantKey(req.Container, req.Destination, req.Protocol, req.Port)
	if err != nil {
		return api.ActiveRule{}, err
	}
	if req.SrcIP != "" && req.SrcIP != e.IP.String() {
		return api.ActiveRule{}, badRequest("src_ip %s does not belong to container '%s' (its address is %s)", req.SrcIP, e.Name, e.IP)
	}
	g := datapath.Grant{GrantKey: key, AllowPrivate: req.AllowPrivate}
	if req.ExpiresInSecs != nil {
		ttl := time.Duration(*req.ExpiresInSecs) * time.Second
		if ttl < time.Second || ttl > MaxGrantTTL {
			return api.ActiveRule{}, badRequest("expires_in_secs must be between 1 and 86400 seconds")
		}
		g.Expires = time.Now().Add(ttl)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkGrantDestinationLocked(key.Dst, req.AllowPrivate); err != nil {
		return api.ActiveRule{}, err
	}
	if c.dp == nil {
		return api.ActiveRule{}, errBridgeDown
	}
	if err := c.grants.Put(grants.Grant{Grant: g, Owner: grants.Operator}); err != nil {
		return api.ActiveRule{}, err
	}
	return activeRule(e, grants.Grant{Grant: g, Owner: grants.Operator}, time.Now()), nil
}

// Revoke removes an operator grant and ends its flows.
func (c *Controller) Revoke(ctx context.Context, req api.RevokeRequest) error {
	e, key, err := c.grantKey(req.Container, req.Destination, req.Protocol, req.Port)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp == nil {
		return errBridgeDown
	}
	// The grant's flows end with it: an operator's revoke closes the
	// tuple, where an expiry does not.
	ok, err := c.grants.Revoke(key)
	if err != nil {
		return err
	}
	if !ok {
		return apikit.Wrap(apikit.ErrNotFound, fmt.Errorf("no grant for container '%s' to %s", e.Name, req.Destination))
	}
	return nil
}

func activeRule(e endpoint.Endpoint, g grants.Grant, now time.Time) api.ActiveRule {
	r := api.ActiveRule{Container: e.Name, SrcIP: e.IP.String(), Destination: g.Dst.String(), Source: GrantSource(g.Owner), Rule: g.Owner.Rule}
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

// ActiveRules lists the live grants, expired ones left
// out, from the grant index (the kernel map is not walked).
func (c *Controller) ActiveRules(ctx context.Context) ([]api.ActiveRule, error) {
	c.mu.Lock()
	gm := c.grants
	c.mu.Unlock()
	out := []api.ActiveRule{}
	if gm == nil {
		return out, nil
	}
	now := time.Now()
	for _, g := range gm.List() {
		e, ok := c.endpoints.ByIdentity(g.Identity)
		if !ok {
			e = endpoint.Endpoint{Name: fmt.Sprintf("identity-%d", g.Identity)}
		}
		out = append(out, activeRule(e, g, now))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Container != out[j].Container {
			return out[i].Container < out[j].Container
		}
		return out[i].Destination < out[j].Destination
	})
	return out, nil
}

// FlushRules revokes every grant.
func (c *Controller) FlushRules(ctx context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.grants == nil {
		return 0, nil
	}
	return c.grants.Flush()
}

// checkGrantDestinationLocked refuses what a grant may never open (an Outcall
// subnet: agents never reach each other) and what it opens only when the
// operator says so (a restricted destination), with a message that names
// the range and the flag.
func (c *Controller) checkGrantDestinationLocked(dst netip.Addr, allowPrivate bool) error {
	if p := c.outcallSubnetLocked(dst); p.IsValid() {
		return badRequest("destination %s is inside the Outcall subnet block %s: agents and gateways are never reachable through a grant", dst, p)
	}
	if allowPrivate {
		return nil
	}
	if r, ok := netrange.RangeOf(dst); ok {
		return badRequest("destination %s is restricted (inside %s): pass --allow-private (allow_private_ips) to open it", dst, r)
	}
	if c.isHostAddressLocked(dst) {
		return badRequest("destination %s is one of this host's own addresses: pass --allow-private (allow_private_ips) to open it", dst)
	}
	return nil
}

// DatapathCounters reads the datapath's verdict counters.
func (c *Controller) DatapathCounters(ctx context.Context) ([]api.DatapathCounter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp == nil {
		return []api.DatapathCounter{}, nil
	}
	cs, err := c.dp.Counters()
	if err != nil {
		return nil, err
	}
	out := make([]api.DatapathCounter, 0, len(cs))
	for _, c := range cs {
		out = append(out, api.DatapathCounter{Verdict: c.Reason.Verdict(), Reason: c.Reason.String(), Packets: c.Packets, Bytes: c.Bytes})
	}
	return out, nil
}

// GrantCounts is how many grants are live by source, "operator" or "dns"
// (metrics.Source), from the index: the kernel map is not walked.
func (c *Controller) GrantCounts(ctx context.Context) (map[string]int, error) {
	c.mu.Lock()
	gm := c.grants
	c.mu.Unlock()
	out := map[string]int{"operator": 0, "dns": 0}
	if gm == nil {
		return out, nil
	}
	for _, g := range gm.List() {
		out[GrantSource(g.Owner)]++
	}
	return out, nil
}

// GrantSource is the source a grant is listed and counted under:
// "operator", or "dns" for a rule's (DNS-learned) grant.
func GrantSource(o grants.Owner) string {
	if o.Rule != "" {
		return "dns"
	}
	return "operator"
}

// FloorCounters reads the floor's named counters (metrics.Source).
func (c *Controller) FloorCounters(ctx context.Context) (map[string]uint64, error) {
	return c.floor.Counters()
}
