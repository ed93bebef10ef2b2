package hostclient

import (
	"context"

	"outcall.dev/outcall/pkg/api"
)

// The DNS filter calls (S007-IF-001..003) and the proxy's (S006).

// DNSStatus reports the DNS filter: whether it runs, where it listens, its
// upstreams and counters (S007-IF-001). A filter that is not running is no
// error but Running false.
func (c *Client) DNSStatus(ctx context.Context) (api.DNSFilterStatus, error) {
	return do[api.DNSFilterStatus](ctx, c, "GET", "/api/v1/dns", nil)
}

// DNSCache reports the DNS cache's size and counters (S007-IF-002).
func (c *Client) DNSCache(ctx context.Context) (api.DNSCacheStats, error) {
	return do[api.DNSCacheStats](ctx, c, "GET", "/api/v1/dns/cache", nil)
}

// DNSCacheEntries reports the DNS cache's size and counters with every
// cached answer (S007-IF-002, ?entries=true).
func (c *Client) DNSCacheEntries(ctx context.Context) (api.DNSCacheDetail, error) {
	return do[api.DNSCacheDetail](ctx, c, "GET", "/api/v1/dns/cache?entries=true", nil)
}

// FlushDNSCache empties the DNS cache and says how many entries it held
// (S007-IF-003). The request has no body.
func (c *Client) FlushDNSCache(ctx context.Context) (api.DNSCacheFlushResult, error) {
	return do[api.DNSCacheFlushResult](ctx, c, "POST", "/api/v1/dns/cache/flush", nil)
}

// ProxyStatus reports the proxy: its listener, active connections and
// request counters (S006). With --no-proxy, Listening is false.
func (c *Client) ProxyStatus(ctx context.Context) (api.ProxyStatus, error) {
	return do[api.ProxyStatus](ctx, c, "GET", "/api/v1/proxy", nil)
}
