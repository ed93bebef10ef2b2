package hostclient

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

func TestNameCalls(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		call     func(*Client) (any, error)
		response string // the envelope's data
		want     any
		wantReq  string
	}{
		{
			name: "dns status",
			call: func(c *Client) (any, error) { return c.DNSStatus(ctx) },
			response: `{"running":true,"listen_address":"10.200.0.1","listen_port":53,"listeners":["10.200.0.1:53","10.200.1.1:53"],` +
				`"upstreams":["192.0.2.53:53","198.51.100.53:53"],"cache_entries":142,"queries_total":5823,"queries_allowed":4901,"queries_blocked":922}`,
			want: api.DNSFilterStatus{Running: true, ListenAddress: "10.200.0.1", ListenPort: 53, Listeners: []string{"10.200.0.1:53", "10.200.1.1:53"},
				Upstreams: []string{"192.0.2.53:53", "198.51.100.53:53"}, CacheEntries: 142, QueriesTotal: 5823, QueriesAllowed: 4901, QueriesBlocked: 922},
			wantReq: "GET /api/v1/dns HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name: "dns status not running",
			call: func(c *Client) (any, error) { return c.DNSStatus(ctx) },
			response: `{"running":false,"listen_address":"","listen_port":0,"upstreams":[],"cache_entries":0,` +
				`"queries_total":0,"queries_allowed":0,"queries_blocked":0}`,
			want:    api.DNSFilterStatus{Upstreams: []string{}},
			wantReq: "GET /api/v1/dns HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name:     "dns cache",
			call:     func(c *Client) (any, error) { return c.DNSCache(ctx) },
			response: `{"entries":142,"max_entries":10000,"hits":3201,"misses":1700,"evictions":12}`,
			want:     api.DNSCacheStats{Entries: 142, MaxEntries: 10000, Hits: 3201, Misses: 1700, Evictions: 12},
			wantReq:  "GET /api/v1/dns/cache HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name: "dns cache entries",
			call: func(c *Client) (any, error) { return c.DNSCacheEntries(ctx) },
			response: `{"stats":{"entries":2,"max_entries":10000,"hits":3,"misses":2,"evictions":0},"entries":[` +
				`{"hostname":"api.github.com","record_type":"A","ttl_remaining_secs":187,"cached_at":"2026-04-21T14:32:01Z"},` +
				`{"hostname":"pypi.org","record_type":"AAAA","ttl_remaining_secs":291}]}`,
			want: api.DNSCacheDetail{Stats: api.DNSCacheStats{Entries: 2, MaxEntries: 10000, Hits: 3, Misses: 2},
				Entries: []api.DNSCacheEntry{
					{Hostname: "api.github.com", RecordType: "A", TTLRemainingSecs: 187, CachedAt: "2026-04-21T14:32:01Z"},
					{Hostname: "pypi.org", RecordType: "AAAA", TTLRemainingSecs: 291},
				}},
			wantReq: "GET /api/v1/dns/cache?entries=true HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name:     "dns cache flush sends no body",
			call:     func(c *Client) (any, error) { return c.FlushDNSCache(ctx) },
			response: `{"entries_flushed":142}`,
			want:     api.DNSCacheFlushResult{EntriesFlushed: 142},
			wantReq:  "POST /api/v1/dns/cache/flush HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
		},
		{
			name:     "proxy status",
			call:     func(c *Client) (any, error) { return c.ProxyStatus(ctx) },
			response: `{"listening":true,"listen_addr":"10.200.0.1:8080","active_connections":3,"total_requests":120,"total_blocked":7}`,
			want:     api.ProxyStatus{Listening: true, ListenAddr: "10.200.0.1:8080", ActiveConnections: 3, TotalRequests: 120, TotalBlocked: 7},
			wantReq:  "GET /api/v1/proxy HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name:     "proxy disabled",
			call:     func(c *Client) (any, error) { return c.ProxyStatus(ctx) },
			response: `{"listening":false,"listen_addr":"","active_connections":0,"total_requests":0,"total_blocked":0}`,
			want:     api.ProxyStatus{},
			wantReq:  "GET /api/v1/proxy HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, reply(`{"success":true,"data":`+tt.response+`}`))
			got, err := tt.call(New(f.path))
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if req := f.received(t); req != tt.wantReq {
				t.Errorf("request bytes:\n got %q\nwant %q", req, tt.wantReq)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

// TestNameErrors: a refusal reaches the caller as the daemon's message,
// unchanged, and a daemon that is not there as an *UnreachableError.
func TestNameErrors(t *testing.T) {
	const msg = `invalid query parameter entries="1": want true or false`
	f := startFake(t, reply(`{"success":false,"error":"invalid query parameter entries=\"1\": want true or false"}`))
	_, err := New(f.path).DNSCacheEntries(context.Background())
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Message != msg {
		t.Fatalf("err = %v (%T), want *APIError %q", err, err, msg)
	}

	missing := filepath.Join(t.TempDir(), "missing.sock")
	_, err = New(missing).FlushDNSCache(context.Background())
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.SocketPath != missing {
		t.Fatalf("err = %v (%T), want *UnreachableError for %s", err, err, missing)
	}
}
