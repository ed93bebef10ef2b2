package main

import (
	"testing"

	"outcall.dev/outcall/pkg/api"
)

const (
	dnsRunning = `{"success":true,"data":{"running":true,"listen_address":"10.200.0.1","listen_port":53,` +
		`"upstreams":["192.0.2.53:53","198.51.100.53:53"],"cache_entries":142,"queries_total":5823,"queries_allowed":4901,"queries_blocked":922}}`
	dnsRunningOut = "" +
		"DNS Filter:     active\n" +
		"Listen:         10.200.0.1:53\n" +
		"Upstreams:      192.0.2.53:53, 198.51.100.53:53\n" +
		"Cache:          142 entries\n" +
		"Queries:        5823 total (4901 allowed, 922 blocked)\n"
	cacheStats    = `{"entries":142,"max_entries":10000,"hits":3201,"misses":1700,"evictions":12}`
	cacheStatsOut = "" +
		"Entries:        142 / 10000\n" +
		"Hits:           3201\n" +
		"Misses:         1700\n" +
		"Evictions:      12\n" +
		"Hit rate:       65.3%\n"
	githubA   = `POST /api/v1/rule/evaluate {"context":{"dns":{"query":"api.github.com","record_type":"A"}}}`
	bridgeErr = `{"success":false,"error":"rule evaluation unavailable: bridge is not up"}`
)

// TestDNSCLI runs S007-IF-004/005 and AS-011..013 against a fake daemon:
// the requests the CLI sends, its output and exit code.
func TestDNSCLI(t *testing.T) {
	runCases(t, []cliCase{
		// status
		{
			name:     "status",
			args:     []string{"dns", "status"},
			routes:   map[string]string{"GET /api/v1/dns": dnsRunning},
			wantOut:  dnsRunningOut,
			wantReqs: []string{"GET /api/v1/dns"},
		},
		{
			name: "status with one listener shows no listeners",
			args: []string{"dns", "status"},
			routes: map[string]string{"GET /api/v1/dns": `{"success":true,"data":{"running":true,"listen_address":"10.200.0.1","listen_port":53,` +
				`"listeners":["10.200.0.1:53"],"upstreams":["192.0.2.53:53","198.51.100.53:53"],"cache_entries":142,"queries_total":5823,"queries_allowed":4901,"queries_blocked":922}}`},
			wantOut:  dnsRunningOut,
			wantReqs: []string{"GET /api/v1/dns"},
		},
		{
			name: "status with every network's listener",
			args: []string{"dns", "status"},
			routes: map[string]string{"GET /api/v1/dns": `{"success":true,"data":{"running":true,"listen_address":"10.200.0.1","listen_port":5353,` +
				`"listeners":["10.200.0.1:5353","10.200.1.1:5353"],"upstreams":["203.0.113.53:53"],"cache_entries":1,"queries_total":0,"queries_allowed":0,"queries_blocked":0}}`},
			wantOut: "" +
				"DNS Filter:     active\n" +
				"Listen:         10.200.0.1:5353\n" +
				"Listeners:      10.200.0.1:5353, 10.200.1.1:5353\n" +
				"Upstreams:      203.0.113.53:53\n" +
				"Cache:          1 entry\n" +
				"Queries:        0 total (0 allowed, 0 blocked)\n",
			wantReqs: []string{"GET /api/v1/dns"},
		},
		{
			name: "status without upstreams",
			args: []string{"dns", "status"},
			routes: map[string]string{"GET /api/v1/dns": `{"success":true,"data":{"running":true,"listen_address":"10.200.0.1","listen_port":53,` +
				`"upstreams":[],"cache_entries":0,"queries_total":3,"queries_allowed":0,"queries_blocked":3}}`},
			wantOut: "" +
				"DNS Filter:     active\n" +
				"Listen:         10.200.0.1:53\n" +
				"Upstreams:      -\n" +
				"Cache:          0 entries\n" +
				"Queries:        3 total (0 allowed, 3 blocked)\n",
			wantReqs: []string{"GET /api/v1/dns"},
		},
		{
			name: "status inactive",
			args: []string{"dns", "status"},
			routes: map[string]string{"GET /api/v1/dns": `{"success":true,"data":{"running":false,"listen_address":"","listen_port":0,` +
				`"upstreams":[],"cache_entries":0,"queries_total":0,"queries_allowed":0,"queries_blocked":0}}`},
			wantOut:  "DNS Filter:     inactive (bridge not up)\n",
			wantReqs: []string{"GET /api/v1/dns"},
		},
		{
			name:     "status API error",
			args:     []string{"dns", "status"},
			routes:   map[string]string{"GET /api/v1/dns": `{"success":false,"error":"dns: boom"}`},
			wantErr:  "Error: dns: boom\n",
			wantCode: 1,
			wantReqs: []string{"GET /api/v1/dns"},
		},
		{
			name:     "status with the daemon down",
			args:     []string{"dns", "status", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},
		{
			name:     "status takes no argument",
			args:     []string{"dns", "status", "now"},
			wantErr:  "Error: unknown command \"now\" for \"outcall dns status\"\n",
			wantCode: 2,
		},

		// test (AS-012: rules only, no DNS query)
		{
			name:   "test allow",
			args:   []string{"dns", "test", "api.github.com"},
			routes: map[string]string{"POST /api/v1/rule/evaluate": `{"success":true,"data":{"decision":"allow","matched_rule":"allow-github-api","file":"10-github.yaml","logged":false}}`},
			wantOut: "" +
				"Hostname:       api.github.com\n" +
				"Record type:    A\n" +
				"Decision:       ALLOW\n" +
				"Matched rule:   allow-github-api (10-github.yaml)\n",
			wantReqs: []string{githubA},
		},
		{
			name:   "test default block",
			args:   []string{"dns", "test", "evil.com"},
			routes: map[string]string{"POST /api/v1/rule/evaluate": evalBlock},
			wantOut: "" +
				"Hostname:       evil.com\n" +
				"Record type:    A\n" +
				"Decision:       BLOCK\n" +
				"Matched rule:   (default policy)\n",
			wantReqs: []string{`POST /api/v1/rule/evaluate {"context":{"dns":{"query":"evil.com","record_type":"A"}}}`},
		},
		{
			name:   "test block by a rule",
			args:   []string{"dns", "test", "x.evil.com"},
			routes: map[string]string{"POST /api/v1/rule/evaluate": `{"success":true,"data":{"decision":"block","matched_rule":"block-evil","file":"20-evil.yaml","logged":true}}`},
			wantOut: "" +
				"Hostname:       x.evil.com\n" +
				"Record type:    A\n" +
				"Decision:       BLOCK\n" +
				"Matched rule:   block-evil (20-evil.yaml)\n",
			wantReqs: []string{`POST /api/v1/rule/evaluate {"context":{"dns":{"query":"x.evil.com","record_type":"A"}}}`},
		},
		{
			name:   "test with a type, name and type normalised",
			args:   []string{"dns", "test", "Mail.Example.COM.", "--type", "mx"},
			routes: map[string]string{"POST /api/v1/rule/evaluate": `{"success":true,"data":{"decision":"allow","matched_rule":"allow-mail","file":"30-mail.yaml","logged":false}}`},
			wantOut: "" +
				"Hostname:       mail.example.com\n" +
				"Record type:    MX\n" +
				"Decision:       ALLOW\n" +
				"Matched rule:   allow-mail (30-mail.yaml)\n",
			wantReqs: []string{`POST /api/v1/rule/evaluate {"context":{"dns":{"query":"mail.example.com","record_type":"MX"}}}`},
		},
		{
			name:   "test a rule without a file",
			args:   []string{"dns", "test", "api.github.com"},
			routes: map[string]string{"POST /api/v1/rule/evaluate": `{"success":true,"data":{"decision":"allow","matched_rule":"allow-github-api","file":null,"logged":false}}`},
			wantOut: "" +
				"Hostname:       api.github.com\n" +
				"Record type:    A\n" +
				"Decision:       ALLOW\n" +
				"Matched rule:   allow-github-api\n",
			wantReqs: []string{githubA},
		},
		{
			name:     "test with the bridge down",
			args:     []string{"dns", "test", "api.github.com"},
			routes:   map[string]string{"POST /api/v1/rule/evaluate": bridgeErr},
			wantErr:  "Error: rule evaluation unavailable: bridge is not up\n",
			wantCode: 1,
			wantReqs: []string{githubA},
		},
		{
			name:     "test with the daemon down",
			args:     []string{"dns", "test", "api.github.com", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},
		{
			name:     "test without hostname",
			args:     []string{"dns", "test"},
			wantErr:  "Error: accepts 1 arg(s), received 0\n",
			wantCode: 2,
		},
		{
			name:     "test with two hostnames",
			args:     []string{"dns", "test", "a.com", "b.com"},
			wantErr:  "Error: accepts 1 arg(s), received 2\n",
			wantCode: 2,
		},
		{
			name:     "test with empty hostname",
			args:     []string{"dns", "test", ""},
			wantErr:  "Error: hostname must not be empty\n",
			wantCode: 2,
		},
		{
			name:     "test with the root",
			args:     []string{"dns", "test", "."},
			wantErr:  "Error: hostname must not be empty\n",
			wantCode: 2,
		},
		{
			name:     "test with empty type",
			args:     []string{"dns", "test", "api.github.com", "--type", ""},
			wantErr:  "Error: invalid --type \"\": must be a record type like A, AAAA or MX\n",
			wantCode: 2,
		},
		{
			name:     "test with a bad type",
			args:     []string{"dns", "test", "api.github.com", "--type", "A AAAA"},
			wantErr:  "Error: invalid --type \"A AAAA\": must be a record type like A, AAAA or MX\n",
			wantCode: 2,
		},

		// cache
		{
			name:     "cache",
			args:     []string{"dns", "cache"},
			routes:   map[string]string{"GET /api/v1/dns/cache": `{"success":true,"data":` + cacheStats + `}`},
			wantOut:  cacheStatsOut,
			wantReqs: []string{"GET /api/v1/dns/cache"},
		},
		{
			name:   "cache before any lookup",
			args:   []string{"dns", "cache"},
			routes: map[string]string{"GET /api/v1/dns/cache": `{"success":true,"data":{"entries":0,"max_entries":10000,"hits":0,"misses":0,"evictions":0}}`},
			wantOut: "" +
				"Entries:        0 / 10000\n" +
				"Hits:           0\n" +
				"Misses:         0\n" +
				"Evictions:      0\n" +
				"Hit rate:       0.0%\n",
			wantReqs: []string{"GET /api/v1/dns/cache"},
		},
		{
			name: "cache --entries",
			args: []string{"dns", "cache", "--entries"},
			routes: map[string]string{"GET /api/v1/dns/cache?entries=true": `{"success":true,"data":{"stats":` + cacheStats + `,"entries":[` +
				`{"hostname":"api.github.com","record_type":"A","ttl_remaining_secs":187,"cached_at":"2026-04-21T14:32:01Z"},` +
				`{"hostname":"registry.npmjs.org","record_type":"A","ttl_remaining_secs":42},` +
				`{"hostname":"pypi.org","record_type":"AAAA","ttl_remaining_secs":291}]}}`},
			wantOut: cacheStatsOut + "\n" +
				"HOSTNAME                     TYPE  TTL\n" +
				"api.github.com               A     187s\n" +
				"registry.npmjs.org           A     42s\n" +
				"pypi.org                     AAAA  291s\n",
			wantReqs: []string{"GET /api/v1/dns/cache?entries=true"},
		},
		{
			name: "cache --entries of an empty cache",
			args: []string{"dns", "cache", "--entries"},
			routes: map[string]string{"GET /api/v1/dns/cache?entries=true": `{"success":true,"data":{"stats":` +
				`{"entries":0,"max_entries":500,"hits":0,"misses":4,"evictions":0},"entries":[]}}`},
			wantOut: "" +
				"Entries:        0 / 500\n" +
				"Hits:           0\n" +
				"Misses:         4\n" +
				"Evictions:      0\n" +
				"Hit rate:       0.0%\n" +
				"\n" +
				"No cached entries.\n",
			wantReqs: []string{"GET /api/v1/dns/cache?entries=true"},
		},
		{
			name:     "cache API error",
			args:     []string{"dns", "cache", "--entries"},
			routes:   map[string]string{"GET /api/v1/dns/cache?entries=true": `{"success":false,"error":"dns: boom"}`},
			wantErr:  "Error: dns: boom\n",
			wantCode: 1,
			wantReqs: []string{"GET /api/v1/dns/cache?entries=true"},
		},
		{
			name:     "cache with the daemon down",
			args:     []string{"dns", "cache", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},
		{
			name:     "cache with a bad flag value",
			args:     []string{"dns", "cache", "--entries=maybe"},
			wantErr:  "Error: invalid argument \"maybe\" for \"--entries\" flag: strconv.ParseBool: parsing \"maybe\": invalid syntax\n",
			wantCode: 2,
		},

		// flush
		{
			name:     "flush",
			args:     []string{"dns", "flush"},
			routes:   map[string]string{"POST /api/v1/dns/cache/flush": `{"success":true,"data":{"entries_flushed":142}}`},
			wantOut:  "DNS cache flushed (142 entries cleared).\n",
			wantReqs: []string{"POST /api/v1/dns/cache/flush"},
		},
		{
			name:     "flush of one entry",
			args:     []string{"dns", "flush"},
			routes:   map[string]string{"POST /api/v1/dns/cache/flush": `{"success":true,"data":{"entries_flushed":1}}`},
			wantOut:  "DNS cache flushed (1 entry cleared).\n",
			wantReqs: []string{"POST /api/v1/dns/cache/flush"},
		},
		{
			name:     "flush of an empty cache",
			args:     []string{"dns", "flush"},
			routes:   map[string]string{"POST /api/v1/dns/cache/flush": `{"success":true,"data":{"entries_flushed":0}}`},
			wantOut:  "DNS cache flushed (0 entries cleared).\n",
			wantReqs: []string{"POST /api/v1/dns/cache/flush"},
		},
		{
			name:     "flush API error",
			args:     []string{"dns", "flush"},
			routes:   map[string]string{"POST /api/v1/dns/cache/flush": `{"success":false,"error":"dns: boom"}`},
			wantErr:  "Error: dns: boom\n",
			wantCode: 1,
			wantReqs: []string{"POST /api/v1/dns/cache/flush"},
		},
		{
			name:     "flush with the daemon down",
			args:     []string{"dns", "flush", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},

		// the group
		{
			name:     "unknown dns subcommand",
			args:     []string{"dns", "resolve"},
			wantErr:  "Error: unknown command \"resolve\" for \"outcall dns\"\n",
			wantCode: 2,
		},
	})
}

// TestProxyCLI runs `outcall proxy status` against a fake daemon.
func TestProxyCLI(t *testing.T) {
	runCases(t, []cliCase{
		{
			name:   "status",
			args:   []string{"proxy", "status"},
			routes: map[string]string{"GET /api/v1/proxy": `{"success":true,"data":{"listening":true,"listen_addr":"10.200.0.1:8080","active_connections":3,"total_requests":120,"total_blocked":7}}`},
			wantOut: "" +
				"Proxy:          active\n" +
				"Listen:         10.200.0.1:8080\n" +
				"Connections:    3 active\n" +
				"Requests:       120 total (7 blocked)\n",
			wantReqs: []string{"GET /api/v1/proxy"},
		},
		{
			name: "status with every network's listener",
			args: []string{"proxy", "status"},
			routes: map[string]string{"GET /api/v1/proxy": `{"success":true,"data":{"listening":true,"listen_addr":"10.200.0.1:9090",` +
				`"listeners":["10.200.0.1:9090","10.200.1.1:9090"],"active_connections":0,"total_requests":0,"total_blocked":0}}`},
			wantOut: "" +
				"Proxy:          active\n" +
				"Listen:         10.200.0.1:9090\n" +
				"Listeners:      10.200.0.1:9090, 10.200.1.1:9090\n" +
				"Connections:    0 active\n" +
				"Requests:       0 total (0 blocked)\n",
			wantReqs: []string{"GET /api/v1/proxy"},
		},
		{
			name:     "status disabled",
			args:     []string{"proxy", "status"},
			routes:   map[string]string{"GET /api/v1/proxy": `{"success":true,"data":{"listening":false,"listen_addr":"","active_connections":0,"total_requests":0,"total_blocked":0}}`},
			wantOut:  "Proxy:          disabled\n",
			wantReqs: []string{"GET /api/v1/proxy"},
		},
		{
			name:     "status inactive",
			args:     []string{"proxy", "status"},
			routes:   map[string]string{"GET /api/v1/proxy": `{"success":true,"data":{"listening":false,"listen_addr":"10.200.0.1:8080","active_connections":0,"total_requests":0,"total_blocked":0}}`},
			wantOut:  "Proxy:          inactive (bridge not up)\n",
			wantReqs: []string{"GET /api/v1/proxy"},
		},
		{
			name:     "status API error",
			args:     []string{"proxy", "status"},
			routes:   map[string]string{"GET /api/v1/proxy": `{"success":false,"error":"proxy: boom"}`},
			wantErr:  "Error: proxy: boom\n",
			wantCode: 1,
			wantReqs: []string{"GET /api/v1/proxy"},
		},
		{
			name:     "status malformed response",
			args:     []string{"proxy", "status"},
			routes:   map[string]string{"GET /api/v1/proxy": `{"success":true}`},
			wantErr:  "Error: malformed response from outcalld: success response without \"data\"\n",
			wantCode: 1,
			wantReqs: []string{"GET /api/v1/proxy"},
		},
		{
			name:     "status with the daemon down",
			args:     []string{"proxy", "status", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},
		{
			name:     "unknown proxy subcommand",
			args:     []string{"proxy", "stats"},
			wantErr:  "Error: unknown command \"stats\" for \"outcall proxy\"\n",
			wantCode: 2,
		},
	})
}

func TestHitRate(t *testing.T) {
	tests := []struct {
		hits, misses uint64
		want         string
	}{
		{0, 0, "0.0%"},
		{0, 5, "0.0%"},
		{5, 0, "100.0%"},
		{3201, 1700, "65.3%"},
		{1, 2, "33.3%"},
		{2, 1, "66.7%"},
		{1<<64 - 1, 1<<64 - 1, "50.0%"},
	}
	for _, tt := range tests {
		if got := hitRate(tt.hits, tt.misses); got != tt.want {
			t.Errorf("hitRate(%d, %d) = %q, want %q", tt.hits, tt.misses, got, tt.want)
		}
	}
}

// TestDNSFormatsEscape: names from the cache and the rules cannot drive the
// operator's terminal, and a hostname longer than its column still leaves
// a space before the type.
func TestDNSFormatsEscape(t *testing.T) {
	got := formatDNSCacheEntries([]api.DNSCacheEntry{
		{Hostname: "a\x1b[2J.example.com", RecordType: "A", TTLRemainingSecs: 5},
		{Hostname: "a-very-long-hostname-of-forty.example.com", RecordType: "TYPE65", TTLRemainingSecs: 0},
	})
	want := "" +
		"HOSTNAME                     TYPE  TTL\n" +
		`a\x1b[2J.example.com` + "         A     5s\n" +
		"a-very-long-hostname-of-forty.example.com TYPE65 0s"
	if got != want {
		t.Errorf("entries:\n%s\nwant:\n%s", got, want)
	}
	got = formatDNSTest(api.DNSContext{Query: "x.com", RecordType: "A"},
		api.EvaluateResult{Decision: api.DecisionAllow, MatchedRule: new("r\u202e1"), File: new("f\n.yaml")})
	want = "" +
		"Hostname:       x.com\n" +
		"Record type:    A\n" +
		"Decision:       ALLOW\n" +
		`Matched rule:   r\u202e1 (f\n.yaml)`
	if got != want {
		t.Errorf("test:\n%s\nwant:\n%s", got, want)
	}
}
