package hostapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

// DNSStatus answers a filter that is not running when empty, its upstreams
// left nil as a Service may leave them.
func (f *fakeService) DNSStatus(context.Context) (api.DNSFilterStatus, error) {
	f.record("DNSStatus")
	if f.empty {
		return api.DNSFilterStatus{}, f.err
	}
	return api.DNSFilterStatus{Running: true, ListenAddress: "10.200.0.1", ListenPort: 53, Listeners: []string{"10.200.0.1:53", "10.200.1.1:53"},
		Upstreams: []string{"192.0.2.53:53", "198.51.100.53:53"}, CacheEntries: 142, QueriesTotal: 5823, QueriesAllowed: 4901, QueriesBlocked: 922}, f.err
}

// DNSCache answers an empty cache with nil entries when empty, and its
// entries only when asked for them.
func (f *fakeService) DNSCache(_ context.Context, entries bool) (api.DNSCacheDetail, error) {
	f.record("DNSCache", entries)
	if f.empty {
		return api.DNSCacheDetail{Stats: api.DNSCacheStats{MaxEntries: 10000}}, f.err
	}
	d := api.DNSCacheDetail{Stats: api.DNSCacheStats{Entries: 142, MaxEntries: 10000, Hits: 3201, Misses: 1700, Evictions: 12}}
	if entries {
		d.Entries = []api.DNSCacheEntry{{Hostname: "api.github.com", RecordType: "A", TTLRemainingSecs: 187, CachedAt: "2026-04-21T14:32:01Z"}}
	}
	return d, f.err
}

func (f *fakeService) FlushDNSCache(context.Context) (api.DNSCacheFlushResult, error) {
	f.record("FlushDNSCache")
	if f.empty {
		return api.DNSCacheFlushResult{}, f.err
	}
	return api.DNSCacheFlushResult{EntriesFlushed: 142}, f.err
}

func (f *fakeService) ProxyStatus(context.Context) (api.ProxyStatus, error) {
	f.record("ProxyStatus")
	if f.empty {
		return api.ProxyStatus{}, f.err
	}
	return api.ProxyStatus{Listening: true, ListenAddr: "10.200.0.1:8080", ActiveConnections: 3, TotalRequests: 120, TotalBlocked: 7}, f.err
}

func TestNameRoutes(t *testing.T) {
	const (
		stats  = `{"entries":142,"max_entries":10000,"hits":3201,"misses":1700,"evictions":12}`
		detail = `{"stats":` + stats + `,"entries":[{"hostname":"api.github.com","record_type":"A","ttl_remaining_secs":187,"cached_at":"2026-04-21T14:32:01Z"}]}`
	)
	tests := []struct {
		name, method, path, body string
		empty                    bool
		err                      error
		status                   int
		want                     string // the exact response body
		wantCall                 string // the exact Service call; "" means none
	}{
		// status (S007-IF-001)
		{name: "dns status", method: "GET", path: "/api/v1/dns", status: 200,
			want: `{"success":true,"data":{"running":true,"listen_address":"10.200.0.1","listen_port":53,"listeners":["10.200.0.1:53","10.200.1.1:53"],` +
				`"upstreams":["192.0.2.53:53","198.51.100.53:53"],"cache_entries":142,"queries_total":5823,"queries_allowed":4901,"queries_blocked":922}}`,
			wantCall: "DNSStatus"},
		{name: "dns status not running lists no upstreams", method: "GET", path: "/api/v1/dns", empty: true, status: 200,
			want: `{"success":true,"data":{"running":false,"listen_address":"","listen_port":0,"upstreams":[],"cache_entries":0,` +
				`"queries_total":0,"queries_allowed":0,"queries_blocked":0}}`,
			wantCall: "DNSStatus"},
		{name: "dns status failure", method: "GET", path: "/api/v1/dns", err: errors.New("dns: boom"), status: 500,
			want: `{"success":false,"error":"dns: boom"}`, wantCall: "DNSStatus"},
		{name: "dns status is GET only", method: "POST", path: "/api/v1/dns", status: 404,
			want: `{"success":false,"error":"no route for POST /api/v1/dns"}`},

		// cache (S007-IF-002)
		{name: "cache is the stats alone", method: "GET", path: "/api/v1/dns/cache", status: 200,
			want: `{"success":true,"data":` + stats + `}`, wantCall: "DNSCache false"},
		{name: "cache entries=false is the stats alone", method: "GET", path: "/api/v1/dns/cache?entries=false", status: 200,
			want: `{"success":true,"data":` + stats + `}`, wantCall: "DNSCache false"},
		{name: "cache with entries is the detail", method: "GET", path: "/api/v1/dns/cache?entries=true", status: 200,
			want: `{"success":true,"data":` + detail + `}`, wantCall: "DNSCache true"},
		{name: "empty cache lists no entries", method: "GET", path: "/api/v1/dns/cache?entries=true", empty: true, status: 200,
			want:     `{"success":true,"data":{"stats":{"entries":0,"max_entries":10000,"hits":0,"misses":0,"evictions":0},"entries":[]}}`,
			wantCall: "DNSCache true"},
		{name: "cache other parameters are ignored", method: "GET", path: "/api/v1/dns/cache?verbose=1", status: 200,
			want: `{"success":true,"data":` + stats + `}`, wantCall: "DNSCache false"},
		{name: "cache entries=1 is refused", method: "GET", path: "/api/v1/dns/cache?entries=1", status: 400,
			want: `{"success":false,"error":"invalid query parameter entries=\"1\": want true or false"}`},
		{name: "cache entries=TRUE is refused", method: "GET", path: "/api/v1/dns/cache?entries=TRUE", status: 400,
			want: `{"success":false,"error":"invalid query parameter entries=\"TRUE\": want true or false"}`},
		{name: "cache entries without value is refused", method: "GET", path: "/api/v1/dns/cache?entries", status: 400,
			want: `{"success":false,"error":"invalid query parameter entries=\"\": want true or false"}`},
		{name: "cache entries twice is refused", method: "GET", path: "/api/v1/dns/cache?entries=true&entries=true", status: 400,
			want: `{"success":false,"error":"invalid query parameter entries: given 2 times, want at most once"}`},
		{name: "cache malformed query", method: "GET", path: "/api/v1/dns/cache?entries=%zz", status: 400,
			want: `{"success":false,"error":"invalid query: invalid URL escape \"%zz\""}`},
		{name: "cache failure", method: "GET", path: "/api/v1/dns/cache", err: errors.New("dns: boom"), status: 500,
			want: `{"success":false,"error":"dns: boom"}`, wantCall: "DNSCache false"},
		{name: "cache is GET only", method: "POST", path: "/api/v1/dns/cache", status: 404,
			want: `{"success":false,"error":"no route for POST /api/v1/dns/cache"}`},

		// flush (S007-IF-003)
		{name: "flush without body", method: "POST", path: "/api/v1/dns/cache/flush", status: 200,
			want: `{"success":true,"data":{"entries_flushed":142}}`, wantCall: "FlushDNSCache"},
		{name: "flush with empty object", method: "POST", path: "/api/v1/dns/cache/flush", body: `{}`, status: 200,
			want: `{"success":true,"data":{"entries_flushed":142}}`, wantCall: "FlushDNSCache"},
		{name: "flush of an empty cache", method: "POST", path: "/api/v1/dns/cache/flush", empty: true, status: 200,
			want: `{"success":true,"data":{"entries_flushed":0}}`, wantCall: "FlushDNSCache"},
		{name: "flush refuses a payload", method: "POST", path: "/api/v1/dns/cache/flush", body: `{"all":true}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: unknown field \"all\""}`},
		{name: "flush not JSON", method: "POST", path: "/api/v1/dns/cache/flush", body: `all`, status: 400,
			want: `{"success":false,"error":"invalid request body: invalid character 'a' looking for beginning of value"}`},
		{name: "flush is POST only", method: "GET", path: "/api/v1/dns/cache/flush", status: 404,
			want: `{"success":false,"error":"no route for GET /api/v1/dns/cache/flush"}`},
		{name: "no other route under dns", method: "GET", path: "/api/v1/dns/upstreams", status: 404,
			want: `{"success":false,"error":"no route for GET /api/v1/dns/upstreams"}`},

		// proxy (S006)
		{name: "proxy status", method: "GET", path: "/api/v1/proxy", status: 200,
			want:     `{"success":true,"data":{"listening":true,"listen_addr":"10.200.0.1:8080","active_connections":3,"total_requests":120,"total_blocked":7}}`,
			wantCall: "ProxyStatus"},
		{name: "proxy disabled", method: "GET", path: "/api/v1/proxy", empty: true, status: 200,
			want:     `{"success":true,"data":{"listening":false,"listen_addr":"","active_connections":0,"total_requests":0,"total_blocked":0}}`,
			wantCall: "ProxyStatus"},
		{name: "proxy failure", method: "GET", path: "/api/v1/proxy", err: errors.New("proxy: boom"), status: 500,
			want: `{"success":false,"error":"proxy: boom"}`, wantCall: "ProxyStatus"},
		{name: "proxy is GET only", method: "POST", path: "/api/v1/proxy", status: 404,
			want: `{"success":false,"error":"no route for POST /api/v1/proxy"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &fakeService{empty: tt.empty, err: tt.err}
			rec := httptest.NewRecorder()
			Handler(svc, slog.New(slog.NewTextHandler(io.Discard, nil))).ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
			if rec.Code != tt.status {
				t.Errorf("status %d, want %d", rec.Code, tt.status)
			}
			if got := strings.TrimSuffix(rec.Body.String(), "\n"); got != tt.want {
				t.Errorf("body:\n got %s\nwant %s", got, tt.want)
			}
			if got := strings.Join(svc.calls, "\n"); got != tt.wantCall {
				t.Errorf("service saw %q, want %q", got, tt.wantCall)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}
