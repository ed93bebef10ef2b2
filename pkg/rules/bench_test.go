package rules

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
)

// writeRuleDir writes n rules over files of 500 rules each: a mix an
// operator fleet might have — hostnames and HTTP paths (request level) and
// destinations with ports (packet level, lowered).
func writeRuleDir(tb testing.TB, n int) string {
	tb.Helper()
	dir := tb.TempDir()
	for f := 0; f*500 < n; f++ {
		var b strings.Builder
		b.WriteString("version: \"1\"\ndefinitions:\n  api_call: http.method in [\"GET\", \"POST\"] && http.path.startsWith(\"/api/\")\nrules:\n")
		for i := f * 500; i < min(n, (f+1)*500); i++ {
			switch i % 5 {
			case 0:
				fmt.Fprintf(&b, "  - id: dns-%d\n    condition: dns.query == \"host%d.example.com\" || dns.query.endsWith(\".svc%d.example.com\")\n    action: allow\n", i, i, i)
			case 1:
				fmt.Fprintf(&b, "  - id: http-%d\n    condition: http.host == \"api%d.example.com\" && $api_call\n    action: allow\n", i, i)
			case 2:
				fmt.Fprintf(&b, "  - id: block-%d\n    condition: http.host == \"api%d.example.com\" && http.path.startsWith(\"/admin\")\n    action: block\n", i, i)
			default:
				fmt.Fprintf(&b, "  - id: net-%d\n    condition: network.ip == \"10.%d.%d.%d\" && network.port in [443, %d] && network.protocol == \"tcp\"\n    action: allow\n    egress: {mode: proxy, allow_private_ips: true}\n",
					i, i>>16&255, i>>8&255, i&255, 1024+i%60000)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%03d-rules.yaml", f)), []byte(b.String()), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// BenchmarkReload measures read + validate + compile + lower + swap of a
// whole directory; with a datapath (root) the swap includes installing the
// packet tables into the kernel. "cold" is a daemon's first load (nothing
// compiled yet), "warm" a reload after an edit that left most conditions
// as they were. Target: 10k rules under 1 s.
func BenchmarkReload(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		dir := writeRuleDir(b, n)
		packet := benchDatapath(b)
		for _, mode := range []string{"cold", "warm"} {
			b.Run(fmt.Sprintf("rules=%d/%s", n, mode), func(b *testing.B) {
				ctx := context.Background()
				e := newBenchEngine(b, dir, packet)
				if mode == "warm" {
					if _, err := e.Reload(ctx); err != nil {
						b.Fatal(err)
					}
				}
				for b.Loop() {
					if mode == "cold" {
						b.StopTimer()
						e = newBenchEngine(b, dir, packet)
						b.StartTimer()
					}
					if _, err := e.Reload(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/reload")
				b.ReportMetric(float64(len(e.Active().PacketTables().Tables.Entries)), "entries")
			})
		}
	}
}

func newBenchEngine(b *testing.B, dir string, packet PacketLayer) *Engine {
	e, err := NewEngine(Options{Dir: dir, Packet: packet})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkEvaluate measures one evaluation against 1k rules for DNS- and
// HTTP-shaped contexts that match late in the list, and reports the 50th
// and 99th percentiles. Target: p99 under 1 ms.
func BenchmarkEvaluate(b *testing.B) {
	e, err := NewEngine(Options{Dir: writeRuleDir(b, 1000)})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := e.Reload(context.Background()); err != nil {
		b.Fatal(err)
	}
	set := e.Active()
	contexts := map[string]*api.EvaluationContext{
		"dns": {DNS: &api.DNSContext{Query: "host995.example.com", RecordType: "A"}},
		"http": {
			Network: &api.NetworkContext{Hostname: str("api996.example.com"), IP: "192.0.2.10", Port: 443, Protocol: "tcp"},
			HTTP:    &api.HTTPContext{Method: "GET", Path: "/api/v1/x", Host: "api996.example.com", Headers: map[string]string{"accept": "*/*"}},
		},
		"nomatch": {DNS: &api.DNSContext{Query: "evil.example.net", RecordType: "A"}},
	}
	for _, name := range []string{"dns", "http", "nomatch"} {
		c := contexts[name]
		b.Run(name, func(b *testing.B) {
			if out := set.Evaluate(c); name != "nomatch" && out.Decision != api.DecisionAllow {
				b.Fatalf("%s context should be allowed late in the list, got %s", name, out.Decision)
			}
			var samples []time.Duration
			for b.Loop() {
				start := time.Now()
				set.Evaluate(c)
				samples = append(samples, time.Since(start))
			}
			slices.Sort(samples)
			b.ReportMetric(float64(samples[len(samples)/2])/1e3, "p50-µs")
			b.ReportMetric(float64(samples[len(samples)*99/100])/1e3, "p99-µs")
		})
	}
}
