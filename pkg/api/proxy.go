package api

// ProxyStatus is GET /api/v1/proxy (S006). ListenAddr is the default
// network's listener; Listeners, an addition to the spec's type, names
// every network's. With --no-proxy, Listening is false.
type ProxyStatus struct {
	Listening         bool     `json:"listening"`
	ListenAddr        string   `json:"listen_addr"`
	Listeners         []string `json:"listeners,omitempty"`
	ActiveConnections int64    `json:"active_connections"`
	TotalRequests     uint64   `json:"total_requests"`
	TotalBlocked      uint64   `json:"total_blocked"`
}
