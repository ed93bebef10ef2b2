package dns

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	mdns "github.com/miekg/dns"

	"outcall.dev/outcall/pkg/rules"
)

// benchRules are the lab benchmark's rules (test/lab/names_bench_test.go).
const benchRules = `version: "1"
rules:
  - id: bench-hold
    condition: 'dns.query.endsWith(".hold.bench.test")'
    action: allow
    egress:
      mode: direct_ip
      ports: [443]
      allow_private_ips: true
  - id: bench-names
    condition: 'dns.query.endsWith(".example.test") || network.hostname == "web.bench.test"'
    action: allow
    egress:
      mode: proxy
      allow_private_ips: true
`

// benchEngine is a rule engine over benchRules.
func benchEngine(b *testing.B) *rules.Engine {
	b.Helper()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "10-bench.yaml"), []byte(benchRules), 0o600); err != nil {
		b.Fatal(err)
	}
	eng, err := rules.NewEngine(rules.Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := eng.Reload(context.Background()); err != nil {
		b.Fatal(err)
	}
	return eng
}

// BenchmarkHandleHit: one cached name asked again and again through the
// whole pipeline but the sockets, with the real rule engine.
func BenchmarkHandleHit(b *testing.B) {
	eng := benchEngine(b)
	fx := newFixture(b, func(o *Options) { o.Rules = eng })
	raw, err := question("www.example.test.", mdns.TypeA).Pack()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if res := fx.f.handle(ctx, fx.gw, agentIP, raw, true); res.reply == nil {
		b.Fatal("no reply")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res := fx.f.handle(ctx, fx.gw, agentIP, raw, true)
		if res.reply == nil {
			b.Fatal("no reply")
		}
		res.observeHold(fx.f)
	}
}
