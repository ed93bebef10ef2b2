package dockerbench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/hostclient"
	"outcall.dev/outcall/test/dockerlab"
)

// agentLoadPackage runs in the agent benchmark's container.
const agentLoadPackage = "outcall.dev/outcall/test/dockerbench/agentload"

// agentBenchRules are 1,000 agent-layer rules; the allowed tool is the
// last one, so every check walks the whole list (the engine's index may
// skip some: what it skips is what an operator's list would let it skip).
func agentBenchRules() string {
	var b strings.Builder
	b.WriteString("version: \"1\"\nrules:\n")
	for i := range 999 {
		fmt.Fprintf(&b, "  - id: tool-%03d\n    condition: 'run.tool == \"tool-%03d\" && \"--force\" in run.flags'\n    action: allow\n", i, i)
	}
	b.WriteString("  - id: bench-echo\n    condition: 'run.tool in [\"echo\", \"true\"]'\n    action: allow\n")
	return b.String()
}

// BenchmarkAgentAPI: permission checks over agent.sock from a real
// container with helper mounts, identified for real (SO_PEERCRED, its
// cgroup, the identity registry), against 1,000 rules; and the shim's
// start-to-exit overhead for `outcall exec true` against `true`, both
// inside the container (BENCHMARKS.md "Agents (issue 11)").
func BenchmarkAgentAPI(b *testing.B) {
	lockRoot(b)
	u := dockerlab.NewUpstream(b)
	docker := u.Docker
	dockerlab.PreflightRoot(b, docker)
	image := dockerlab.Image(b, dockerlab.WithBinary("agentload", dockerlab.StaticBinary(b, agentLoadPackage)))
	block := dockerlab.FreeBlock(b, docker)
	bin := buildDaemon(b)
	// No rate limit: the figure is what the API can do, not what the
	// limit lets one container do.
	d := startDaemon(b, docker, bin, u.Prefix, block, agentBenchRules(), "--agent-perm-rate", "1000000/1")
	// The shim the helper mounts take: startDaemon names it beside the
	// host socket.
	shim, err := os.ReadFile(dockerlab.StaticBinary(b, "outcall.dev/outcall/cmd/outcall-agent"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(d.Socket), "outcall-agent"), shim, 0o755); err != nil {
		b.Fatal(err)
	}
	hc := &hostclient.Client{SocketPath: d.Socket, Timeout: time.Minute}
	ctx := context.Background()
	name := u.Name("agent-1")
	if _, err := hc.CreateContainer(ctx, api.ContainerCreateRequest{Image: image, Name: &name, Cmd: []string{"sleep", "3600"}, IncludeHelperMounts: true}); err != nil {
		b.Fatalf("create %s: %v\n%s", name, err, d.Log())
	}
	run := func(args ...string) map[string]float64 {
		out := docker.Must(b, append([]string{"exec", name, "agentload"}, args...)...)
		m := map[string]float64{}
		for _, f := range strings.Fields(out) {
			k, v, _ := strings.Cut(f, "=")
			var x float64
			fmt.Sscan(v, &x)
			m[k] = x
		}
		return m
	}
	for _, workers := range []int{1, 4} {
		m := run("checks", "-workers", fmt.Sprint(workers), "-duration", "3s")
		if m["errors"] != 0 || m["checks"] == 0 {
			b.Fatalf("permission checks with %d workers: %v\n%s", workers, m, d.Log())
		}
		rate := m["checks"] / m["secs"]
		b.Run(fmt.Sprintf("checks-%dworkers", workers), func(b *testing.B) {
			b.ReportMetric(rate, "checks/s")
			b.ReportMetric(m["p50_us"], "p50-us")
			b.ReportMetric(m["p99_us"], "p99-us")
		})
		fmt.Printf("    permission checks, 1,000 rules, %d worker(s): %.0f/s, p50 %.0f µs, p99 %.0f µs\n", workers, rate, m["p50_us"], m["p99_us"])
	}
	m := run("exec", "-n", "100", "true")
	b.Run("shim-exec", func(b *testing.B) {
		b.ReportMetric(m["direct_p50_us"], "direct-p50-us")
		b.ReportMetric(m["direct_p99_us"], "direct-p99-us")
		b.ReportMetric(m["shim_p50_us"], "shim-p50-us")
		b.ReportMetric(m["shim_p99_us"], "shim-p99-us")
		b.ReportMetric((m["shim_p50_us"]-m["direct_p50_us"])/1000, "overhead-p50-ms")
	})
	fmt.Printf("    `true` direct p50 %.0f µs p99 %.0f µs; `outcall exec true` p50 %.0f µs p99 %.0f µs (overhead p50 %.2f ms)\n",
		m["direct_p50_us"], m["direct_p99_us"], m["shim_p50_us"], m["shim_p99_us"], (m["shim_p50_us"]-m["direct_p50_us"])/1000)
}
