package shim

import (
	"os/exec"
	"slices"
	"testing"
	"time"
)

// BenchmarkShimExec is the shim's start-to-exec overhead: the built binary
// running `true` through a check-in and an allow against the fake agent API,
// against running `true` directly. Both go through the same namespace
// helper (a re-executed test binary that mounts the fake's socket at
// /run/outcall), so its cost is in both and cancels out of the overhead.
// Each iteration runs one of each, alternating, and the figures are
// wall-clock times per run: p50 and p99 of each, and the p50 and p99
// overhead.
func BenchmarkShimExec(b *testing.B) {
	fa := newFakeAgent(b)
	bin := shimBinary(b)
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Skip("no true on PATH")
	}
	run := func(program string, args ...string) time.Duration {
		cmd := inNamespace(b, fa.dir, program, args...)
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s %q: %v\n%s", program, args, err, out)
		}
		return time.Since(start)
	}
	run(bin, "exec", "true") // warm the page cache
	var shim, direct []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		shim = append(shim, run(bin, "exec", "true"))
		direct = append(direct, run(truePath))
	}
	b.StopTimer()
	slices.Sort(shim)
	slices.Sort(direct)
	pct := func(d []time.Duration, p float64) float64 {
		return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(shim, 0.50), "shim-p50-ms")
	b.ReportMetric(pct(shim, 0.99), "shim-p99-ms")
	b.ReportMetric(pct(direct, 0.50), "direct-p50-ms")
	b.ReportMetric(pct(direct, 0.99), "direct-p99-ms")
	b.ReportMetric(pct(shim, 0.50)-pct(direct, 0.50), "overhead-p50-ms")
	b.ReportMetric(pct(shim, 0.99)-pct(direct, 0.99), "overhead-p99-ms")
	b.ReportMetric(0, "ns/op")
}
