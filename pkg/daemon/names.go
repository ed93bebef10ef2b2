package daemon

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"outcall.dev/outcall/pkg/api"
)

// NameFilter is the DNS filter (pkg/dns) as the daemon runs and reads it.
type NameFilter interface {
	GatewayService
	Status() api.DNSFilterStatus
	CacheStats() api.DNSCacheStats
	CacheEntries() []api.DNSCacheEntry
	// Flush empties the cache; the daemon calls it after every successful
	// rule reload (S007-FR-018).
	Flush() int
	Collectors() []prometheus.Collector
}

// Proxy is the HTTP/CONNECT proxy (pkg/proxy) as the daemon runs and reads
// it.
type Proxy interface {
	GatewayService
	Status() api.ProxyStatus
	Collectors() []prometheus.Collector
}

// nameService serves the DNS filter's and the proxy's host API routes;
// either may be nil (not built, or --no-proxy), which reads as not running.
type nameService struct {
	dns   NameFilter
	proxy Proxy
}

// DNSStatus serves GET /api/v1/dns (S007-IF-001).
func (s nameService) DNSStatus(ctx context.Context) (api.DNSFilterStatus, error) {
	if s.dns == nil {
		return api.DNSFilterStatus{Upstreams: []string{}}, nil
	}
	return s.dns.Status(), nil
}

// DNSCache serves GET /api/v1/dns/cache (S007-IF-002).
func (s nameService) DNSCache(ctx context.Context, entries bool) (api.DNSCacheDetail, error) {
	out := api.DNSCacheDetail{Entries: []api.DNSCacheEntry{}}
	if s.dns == nil {
		return out, nil
	}
	out.Stats = s.dns.CacheStats()
	if entries {
		out.Entries = append(out.Entries, s.dns.CacheEntries()...)
	}
	return out, nil
}

// FlushDNSCache serves POST /api/v1/dns/cache/flush (S007-IF-003).
func (s nameService) FlushDNSCache(ctx context.Context) (api.DNSCacheFlushResult, error) {
	if s.dns == nil {
		return api.DNSCacheFlushResult{}, nil
	}
	return api.DNSCacheFlushResult{EntriesFlushed: s.dns.Flush()}, nil
}

// ProxyStatus serves GET /api/v1/proxy.
func (s nameService) ProxyStatus(ctx context.Context) (api.ProxyStatus, error) {
	if s.proxy == nil {
		return api.ProxyStatus{}, nil
	}
	return s.proxy.Status(), nil
}
