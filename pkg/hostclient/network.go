package hostclient

import (
	"context"
	"net/url"

	"outcall.dev/outcall/pkg/api"
)

// The network calls (S002-IF-001..004, FR-031). Names are suffixes
// ("staging"); the daemon adds api.NetworkPrefix and answers with full
// names. The name of a status goes in the query, escaped here with
// net/url, so that a name holding "&" or "#" is that name and never
// another parameter.

// CreateNetwork creates a network, or finds it already there with Created
// false (S002-IF-001). A nil field is absent: the default network, a /24
// allocated from the subnet block, the subnet's first address as gateway.
func (c *Client) CreateNetwork(ctx context.Context, req api.NetworkCreateRequest) (api.NetworkCreateResult, error) {
	return do[api.NetworkCreateResult](ctx, c, "POST", "/api/v1/network/create", req)
}

// Network reports one network (S002-IF-002); "" is the default network
// and sends no name at all. A network that does not exist is no error but
// Exists false.
func (c *Client) Network(ctx context.Context, name string) (api.NetworkStatus, error) {
	path := "/api/v1/network"
	if name != "" {
		path += "?" + url.Values{"name": {name}}.Encode()
	}
	return do[api.NetworkStatus](ctx, c, "GET", path, nil)
}

// Networks lists every Outcall network (S002-IF-003), in no particular
// order.
func (c *Client) Networks(ctx context.Context) ([]api.NetworkStatus, error) {
	return do[[]api.NetworkStatus](ctx, c, "GET", "/api/v1/networks", nil)
}

// DestroyNetwork removes a network, refused while containers are connected
// (S002-IF-004); a nil name is the default network. A network that does
// not exist is no error but Destroyed false.
func (c *Client) DestroyNetwork(ctx context.Context, req api.NetworkDestroyRequest) (api.NetworkDestroyResult, error) {
	return do[api.NetworkDestroyResult](ctx, c, "POST", "/api/v1/network/destroy", req)
}

// NetworkConfig returns the daemon's network configuration, its active
// subnet block (S002-FR-031).
func (c *Client) NetworkConfig(ctx context.Context) (api.NetworkConfig, error) {
	return do[api.NetworkConfig](ctx, c, "GET", "/api/v1/network/config", nil)
}
