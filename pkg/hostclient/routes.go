package hostclient

import (
	"context"
	"net/url"

	"outcall.dev/outcall/pkg/api"
)

// The bridge, endpoint, grant and datapath calls (S001, S009). Names are
// path-escaped here, once, so that a name holding "/" or "?" names that
// object and never another route.

// BridgeStatus reports the bridge and the nftables floor (S001-IF-001).
func (c *Client) BridgeStatus(ctx context.Context) (api.BridgeStatus, error) {
	return do[api.BridgeStatus](ctx, c, "GET", "/api/v1/bridge", nil)
}

// BridgeUp creates or attaches the bridge and applies the base ruleset
// (S001-IF-002).
func (c *Client) BridgeUp(ctx context.Context) error {
	return c.exec(ctx, "POST", "/api/v1/bridge/up", nil)
}

// BridgeDown tears the bridge down (S001-IF-003). The request stays
// bodiless as the spec has it; req.RemovePorts goes as the remove_ports
// query parameter.
func (c *Client) BridgeDown(ctx context.Context, req api.BridgeDownRequest) error {
	path := "/api/v1/bridge/down"
	if req.RemovePorts {
		path += "?remove_ports=true"
	}
	return c.exec(ctx, "POST", path, nil)
}

// Endpoints lists the registered endpoints.
func (c *Client) Endpoints(ctx context.Context) ([]api.Endpoint, error) {
	return do[[]api.Endpoint](ctx, c, "GET", "/api/v1/endpoints", nil)
}

// AddEndpoint registers a bridge port with an identity.
func (c *Client) AddEndpoint(ctx context.Context, req api.EndpointAddRequest) (api.Endpoint, error) {
	return do[api.Endpoint](ctx, c, "POST", "/api/v1/endpoints", req)
}

// RemoveEndpoint removes a registered endpoint by name.
func (c *Client) RemoveEndpoint(ctx context.Context, name string) error {
	return c.exec(ctx, "DELETE", "/api/v1/endpoints/"+url.PathEscape(name), nil)
}

// Allow inserts or renews an operator grant (S009-IF-003) and returns it as
// the daemon holds it.
func (c *Client) Allow(ctx context.Context, req api.AllowRequest) (api.ActiveRule, error) {
	return do[api.ActiveRule](ctx, c, "POST", "/api/v1/rule/allow", req)
}

// Revoke removes the grant that Allow with the same fields made.
func (c *Client) Revoke(ctx context.Context, req api.RevokeRequest) error {
	return c.exec(ctx, "POST", "/api/v1/rule/revoke", req)
}

// ActiveRules lists the live grants.
func (c *Client) ActiveRules(ctx context.Context) ([]api.ActiveRule, error) {
	return do[[]api.ActiveRule](ctx, c, "GET", "/api/v1/rules/active", nil)
}

// FlushRules removes every grant and says how many there were.
func (c *Client) FlushRules(ctx context.Context) (api.FlushResult, error) {
	return do[api.FlushResult](ctx, c, "POST", "/api/v1/rules/flush", nil)
}

// DatapathCounters returns the datapath's packet and byte counters per
// verdict and reason.
func (c *Client) DatapathCounters(ctx context.Context) ([]api.DatapathCounter, error) {
	return do[[]api.DatapathCounter](ctx, c, "GET", "/api/v1/datapath/counters", nil)
}
