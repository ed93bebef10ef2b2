package api

// The DNS filter's host API types (S007-IF-001..003).

// DNSFilterStatus is GET /api/v1/dns. ListenAddress and ListenPort are
// the default network's listener; Listeners, an addition to the spec's
// type, names every network's ("10.200.1.1:53"). When the filter is not
// running, Running is false and the counters are zero.
type DNSFilterStatus struct {
	Running        bool     `json:"running"`
	ListenAddress  string   `json:"listen_address"`
	ListenPort     uint16   `json:"listen_port"`
	Listeners      []string `json:"listeners,omitempty"`
	Upstreams      []string `json:"upstreams"`
	CacheEntries   int      `json:"cache_entries"`
	QueriesTotal   uint64   `json:"queries_total"`
	QueriesAllowed uint64   `json:"queries_allowed"`
	QueriesBlocked uint64   `json:"queries_blocked"`
}

// DNSCacheStats is GET /api/v1/dns/cache.
type DNSCacheStats struct {
	Entries    int    `json:"entries"`
	MaxEntries int    `json:"max_entries"`
	Hits       uint64 `json:"hits"`
	Misses     uint64 `json:"misses"`
	Evictions  uint64 `json:"evictions"`
}

// DNSCacheEntry is one cached answer.
type DNSCacheEntry struct {
	Hostname         string `json:"hostname"`
	RecordType       string `json:"record_type"`
	TTLRemainingSecs uint32 `json:"ttl_remaining_secs"`
	CachedAt         string `json:"cached_at"` // RFC 3339, UTC
}

// DNSCacheDetail is GET /api/v1/dns/cache?entries=true.
type DNSCacheDetail struct {
	Stats   DNSCacheStats   `json:"stats"`
	Entries []DNSCacheEntry `json:"entries"`
}

// DNSCacheFlushResult is POST /api/v1/dns/cache/flush.
type DNSCacheFlushResult struct {
	EntriesFlushed int `json:"entries_flushed"`
}
