package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
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
const MaxGrantTTL = api.MaxDynamicRuleTTLSecs * time.Second

// ResolveTimeout bounds the lookup of a host name destination (S009).
const ResolveTimeout = 10 * time.Second

// SetResolver sets how host name destinations of operator grants are
// resolved: the DNS filter's LookupIPv4, which asks --dns-upstream, never
// the machine's resolver. Without one, a host name grant is refused.
func (c *Controller) SetResolver(r func(ctx context.Context, host string) ([]netip.Addr, error)) {
	c.resolverMu.Lock()
	defer c.resolverMu.Unlock()
	c.resolver = r
}

// operatorRule is a validated allow or revoke request: one operator rule.
type operatorRule struct {
	e     endpoint.Endpoint
	dst   api.GrantDestination
	proto uint8
	port  uint16
}

// holder names the rule in the grant index: identity, destination as
// listed, protocol and port (the spec's duplicate check).
func (r operatorRule) holder() grants.Holder {
	return grants.Holder{Owner: grants.Operator, Name: fmt.Sprintf("%d %s %d/%d", r.e.Identity, r.dst, r.proto, r.port)}
}

// parseRule validates an allow or revoke request with S009's messages.
// Nothing is resolved here.
func (c *Controller) parseRule(container, destination string, protocol *string, port *uint16) (operatorRule, error) {
	var r operatorRule
	e, err := c.endpoints.Get(container)
	if err != nil {
		return r, apikit.Wrap(apikit.ErrNotFound, err)
	}
	r.e = e
	if protocol != nil {
		if *protocol != "tcp" && *protocol != "udp" {
			return r, badRequest("invalid protocol '%s': must be 'tcp' or 'udp'", *protocol)
		}
		r.proto, _ = datapath.ProtoNumber(*protocol)
	}
	if port != nil {
		if protocol == nil {
			return r, badRequest("a destination port requires protocol 'tcp' or 'udp'")
		}
		if *port == 0 {
			return r, badRequest("invalid port 0: must be 1-65535")
		}
		r.port = *port
	}
	if r.dst, err = api.ParseGrantDestination(destination); err != nil {
		return r, apikit.Wrap(apikit.ErrInvalid, err)
	}
	return r, nil
}

// Allow inserts or renews an operator rule (S009-IF-003). Everything is
// validated before a host name is resolved, and it is resolved before the
// Controller's lock is taken; a rule that exists already is renewed with
// exactly the requested expiry (the operator is authoritative) and its
// address set replaced, and counts once towards the cap.
func (c *Controller) Allow(ctx context.Context, req api.AllowRequest) (api.ActiveRule, error) {
	r, err := c.parseRule(req.Container, req.Destination, req.Protocol, req.Port)
	if err != nil {
		return api.ActiveRule{}, err
	}
	if req.SrcIP != "" && req.SrcIP != r.e.IP.String() {
		return api.ActiveRule{}, badRequest("src_ip %s does not belong to container '%s' (its address is %s)", req.SrcIP, r.e.Name, r.e.IP)
	}
	var expires time.Time
	if req.ExpiresInSecs != nil {
		ttl := time.Duration(*req.ExpiresInSecs) * time.Second
		if ttl < time.Second || ttl > MaxGrantTTL {
			return api.ActiveRule{}, badRequest("expires_in_secs must be between 1 and 86400 seconds")
		}
		expires = time.Now().Add(ttl)
	}
	prefixes := []netip.Prefix{r.dst.Prefix}
	if r.dst.Host != "" {
		if prefixes, err = c.resolve(ctx, r.dst.Host); err != nil {
			return api.ActiveRule{}, err
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp == nil {
		return api.ActiveRule{}, errBridgeDown
	}
	for _, p := range prefixes {
		if err := c.checkGrantPrefixLocked(p, req.AllowPrivate, r.dst); err != nil {
			return api.ActiveRule{}, err
		}
	}
	h := r.holder()
	if _, renewal := c.grants.ClaimOf(h); !renewal && c.grants.CountOwned(r.e.Identity, grants.Operator) >= api.MaxDynamicRulesPerContainer {
		return api.ActiveRule{}, badRequest("dynamic rule cap exceeded for container '%s' (max %d)", r.e.Name, api.MaxDynamicRulesPerContainer)
	}
	claim := grants.Claim{Holder: h, Identity: r.e.Identity, Destination: r.dst.String(), Proto: r.proto, Port: r.port,
		Expires: expires, AllowPrivate: req.AllowPrivate}
	for _, p := range prefixes {
		claim.Keys = append(claim.Keys, datapath.PrefixKey(r.e.Identity, p, r.proto, r.port))
	}
	if err := c.grants.Claim(claim); err != nil {
		return api.ActiveRule{}, c.grantFailure("grant "+claim.Destination, err)
	}
	claim, _ = c.grants.ClaimOf(h)
	return activeRule(r.e, claim, time.Now()), nil
}

// resolve looks a host name up through the resolver SetResolver set, with
// ResolveTimeout, and returns its first MaxGrantHostAddrs IPv4 addresses
// as /32s. An empty answer is an error: a grant that opens nothing would
// look like one that works.
func (c *Controller) resolve(ctx context.Context, host string) ([]netip.Prefix, error) {
	c.resolverMu.Lock()
	lookup := c.resolver
	c.resolverMu.Unlock()
	if lookup == nil {
		return nil, apikit.Errorf(apikit.ErrUnavailable, "cannot resolve destination '%s': this daemon has no resolver for host names (the DNS filter's upstreams)", host)
	}
	ctx, cancel := context.WithTimeout(ctx, ResolveTimeout)
	defer cancel()
	addrs, err := lookup(ctx, host)
	if err != nil {
		return nil, apikit.Errorf(apikit.ErrUnavailable, "resolve destination '%s': %v", host, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			continue
		}
		p := netip.PrefixFrom(a, 32)
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
		if len(out) == api.MaxGrantHostAddrs {
			break
		}
	}
	if len(out) == 0 {
		return nil, badRequest("destination '%s' has no IPv4 address", host)
	}
	return out, nil
}

// Revoke removes an operator rule, found by the fields Allow had (a host
// name is not resolved again: exactly what it opened closes), and ends the
// flows of what no other grant still holds.
func (c *Controller) Revoke(ctx context.Context, req api.RevokeRequest) error {
	r, err := c.parseRule(req.Container, req.Destination, req.Protocol, req.Port)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp == nil {
		return errBridgeDown
	}
	ok, err := c.grants.Unclaim(r.holder())
	if err != nil {
		if err = c.grantFailure("revoke "+r.dst.String(), err); err != nil {
			return err
		}
		return nil
	}
	if !ok {
		return apikit.Wrap(apikit.ErrNotFound, fmt.Errorf("no grant for container '%s' to %s", r.e.Name, r.dst))
	}
	return nil
}

// grantFailure logs a reset the grant index had to make (a delete the
// kernel refused) and decides what the caller sees: nothing more when the
// reset left no grant anywhere (the request is done, and the log says why
// every other grant went too), the error otherwise.
func (c *Controller) grantFailure(what string, err error) error {
	var re *grants.ResetError
	if !errors.As(err, &re) {
		return err
	}
	if !re.Stuck {
		c.log.Error("a grant delete failed: every grant was removed (base policy)", "during", what, "removed", re.Removed, "err", re.Cause)
		return nil
	}
	c.log.Error("a grant delete failed and removing every grant failed too: identities closed", "during", what, "closed", re.Closed, "err", err)
	return err
}

func activeRule(e endpoint.Endpoint, cl grants.Claim, now time.Time) api.ActiveRule {
	r := api.ActiveRule{Container: e.Name, SrcIP: e.IP.String(), Destination: cl.Destination, NftHandle: cl.Handle,
		Source: GrantSource(cl.Owner), Rule: cl.Owner.Rule}
	if !cl.Inserted.IsZero() {
		r.InsertedAt = cl.Inserted.UTC().Format("2006-01-02T15:04:05Z")
	}
	if cl.Proto != 0 {
		p := datapath.ProtoName(cl.Proto)
		r.Protocol = &p
	}
	if cl.Port != 0 {
		port := cl.Port
		r.Port = &port
	}
	if !cl.Expires.IsZero() {
		secs := uint64((cl.Expires.Sub(now) + time.Second - 1) / time.Second) // rounded up (S009-IF-001)
		r.ExpiresInSecs = &secs
	}
	if _, err := netip.ParseAddr(cl.Destination); err != nil && !strings.Contains(cl.Destination, "/") {
		for _, k := range cl.Keys {
			r.Addresses = append(r.Addresses, k.Dst.String())
		}
	}
	return r
}

// ActiveRules lists the live operator rules and DNS-learned grants,
// expired ones left out, from the grant index (the kernel map is not
// walked): an operator rule once, with its destination as given.
func (c *Controller) ActiveRules(ctx context.Context) ([]api.ActiveRule, error) {
	c.mu.Lock()
	gm := c.grants
	c.mu.Unlock()
	out := []api.ActiveRule{}
	if gm == nil {
		return out, nil
	}
	now := time.Now()
	for _, cl := range gm.Claims() {
		e, ok := c.endpoints.ByIdentity(cl.Identity)
		if !ok {
			e = endpoint.Endpoint{Name: fmt.Sprintf("identity-%d", cl.Identity)}
		}
		out = append(out, activeRule(e, cl, now))
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Container != out[j].Container {
			return out[i].Container < out[j].Container
		}
		return out[i].Destination < out[j].Destination
	})
	return out, nil
}

// FlushRules revokes every grant. A delete the kernel refuses removes
// every grant anyway and reports them all (S009-IF-002); only when that
// fails too is it an error, and the grants stay listed.
func (c *Controller) FlushRules(ctx context.Context) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.grants == nil {
		return 0, nil
	}
	n, err := c.grants.Flush()
	if err != nil {
		if err = c.grantFailure("flush", err); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// checkGrantPrefixLocked refuses what a grant may never open (a prefix
// inside an Outcall subnet: agents never reach each other) and what it
// opens only when the operator says so (a prefix inside a restricted
// range, or one of the host's own addresses), with a message that names
// the range and the flag. A broader prefix is accepted: the datapath's
// fences keep the restricted parts of it closed.
func (c *Controller) checkGrantPrefixLocked(p netip.Prefix, allowPrivate bool, asked api.GrantDestination) error {
	what := p.String()
	if p.Bits() == 32 {
		what = p.Addr().String()
	}
	if asked.Host != "" {
		what = fmt.Sprintf("%s (an address of %s)", what, asked.Host)
	}
	if q := c.outcallSubnetLocked(p.Addr()); q.IsValid() && q.Bits() <= p.Bits() {
		return badRequest("destination %s is inside the Outcall subnet block %s: agents and gateways are never reachable through a grant", what, q)
	}
	if allowPrivate {
		return nil
	}
	if r, ok := netrange.RangeOf(p.Addr()); ok && r.Bits() <= p.Bits() {
		return badRequest("destination %s is restricted (inside %s): pass --allow-private (allow_private_ips) to open it", what, r)
	}
	if p.Bits() == 32 && c.isHostAddressLocked(p.Addr()) {
		return badRequest("destination %s is one of this host's own addresses: pass --allow-private (allow_private_ips) to open it", what)
	}
	return nil
}

// closeIdentitiesLocked is the grant index's last resort (grants.Options
// Close): the kernel refused to delete grants, and to remove them all, so
// the identities that may keep one lose their endpoint entry: their ports
// become unknown senders that reach only the gateway services, which
// answer them REFUSED and 403. Called with c.mu held (every grant change
// is made under it).
func (c *Controller) closeIdentitiesLocked(ids []uint32) error {
	var errs []error
	for _, id := range ids {
		e, ok := c.endpoints.ByIdentity(id)
		if !ok {
			continue
		}
		if ifindex, ok := c.endpointPortLocked(e); ok && c.dp != nil {
			if err := c.dp.DeleteEndpoint(ifindex); err != nil {
				errs = append(errs, fmt.Errorf("close %s (port %d): %w", e.Name, ifindex, err))
				continue
			}
			c.log.Error("closed an endpoint whose grants the kernel would not delete", "endpoint", e.Name, "identity", id, "port", ifindex)
		}
	}
	return errors.Join(errs...)
}

// reopenIdentitiesLocked gives the identities closeIdentitiesLocked closed
// their endpoint entries back once the kernel removed every grant.
func (c *Controller) reopenIdentitiesLocked(ids []uint32) {
	for _, id := range ids {
		e, ok := c.endpoints.ByIdentity(id)
		if !ok {
			continue
		}
		ifindex, ok := c.endpointPortLocked(e)
		if !ok || c.dp == nil {
			continue
		}
		if err := c.activateLocked(ifindex, e, c.ports[ifindex].net); err != nil {
			c.log.Error("reopen an endpoint after its grants were removed", "endpoint", e.Name, "err", err)
			continue
		}
		c.log.Warn("reopened an endpoint: the kernel removed every grant after all", "endpoint", e.Name, "identity", id)
	}
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

// GrantCounts is how many grants are live by source, "operator" (one per
// operator rule) or "dns" (one per learned key) (metrics.Source), from the
// index: the kernel map is not walked.
func (c *Controller) GrantCounts(ctx context.Context) (map[string]int, error) {
	c.mu.Lock()
	gm := c.grants
	c.mu.Unlock()
	out := map[string]int{"operator": 0, "dns": 0}
	if gm == nil {
		return out, nil
	}
	for _, cl := range gm.Claims() {
		out[GrantSource(cl.Owner)]++
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
