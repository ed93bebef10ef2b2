package agentapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/rulereq"
	"outcall.dev/outcall/pkg/rules"
)

// BenchmarkPermissionCheck: permission checks through a real server on a
// real unix socket, from parallel clients (keep-alive connections), with
// a real engine holding 1,000 rules whose allowing one is 990th; half of
// the rules cannot be skipped by the engine's index. The peer is looked up
// every request: a real cgroup file read, the pidfd liveness check and a
// map-backed registry. Reports checks/s and the p99 latency.
func BenchmarkPermissionCheck(b *testing.B) {
	dir := b.TempDir()
	rulesDir := filepath.Join(dir, "rules.d")
	if err := os.MkdirAll(rulesDir, 0o755); err != nil {
		b.Fatal(err)
	}
	var sb strings.Builder
	sb.WriteString("version: \"1\"\nrules:\n")
	for i := range 1000 {
		switch {
		case i == 989:
			sb.WriteString("  - {id: allow-ls, condition: 'run.tool == \"ls\" && agent.name == \"foobar\"', action: allow}\n")
		case i%2 == 0:
			fmt.Fprintf(&sb, "  - {id: r%d, condition: 'run.tool.startsWith(\"t%d-\") && \"-rf\" in run.flags', action: block}\n", i, i)
		default:
			fmt.Fprintf(&sb, "  - {id: r%d, condition: 'network.hostname == \"h%d.example\"', action: allow}\n", i, i)
		}
	}
	if err := os.WriteFile(filepath.Join(rulesDir, "10-bench.yaml"), []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	engine, err := rules.NewEngine(rules.Options{Dir: rulesDir})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := engine.Reload(context.Background()); err != nil {
		b.Fatal(err)
	}
	store, err := rulereq.Open(filepath.Join(dir, "rule-requests.json"), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	procRoot := filepath.Join(dir, "proc")
	pd := filepath.Join(procRoot, strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(pd, 0o755); err != nil {
		b.Fatal(err)
	}
	// A cgroup file as long as a real one on a systemd host.
	cg := "0::/system.slice/docker-" + cidA + ".scope\n"
	if err := os.WriteFile(filepath.Join(pd, "cgroup"), []byte(cg), 0o644); err != nil {
		b.Fatal(err)
	}
	ids := &fakeIDs{m: map[string]endpoint.Endpoint{}}
	ids.set(cidA, "foobar-1", 7, 101)
	s, err := New(Options{Identities: ids, Policy: engine, Requests: store, ProcRoot: procRoot,
		PermRate: Rate{MaxRateCount, time.Second}})
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	l, err := Listen(sock)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	defer func() { cancel(); <-done }()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}, MaxIdleConnsPerHost: 256}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	post := func(path, tok, body string) (int, string) {
		req, _ := http.NewRequest("POST", "http://agent"+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	status, out := post(api.AgentRouteCheckin, "", "{}")
	if status != 200 {
		b.Fatalf("check-in: %d %s", status, out)
	}
	tok := out[strings.Index(out, "tok-") : strings.Index(out, "tok-")+36]
	body := `{"action_type":"tool_exec","target":"ls","metadata":{"args_json":"[\"-la\",\"/workspace\"]","cwd":"/workspace"}}`
	if status, out := post(api.AgentRoutePermission, tok, body); status != 200 || !strings.Contains(out, `"allowed":true`) {
		b.Fatalf("control: %d %s", status, out)
	}
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			t0 := time.Now()
			status, out := post(api.AgentRoutePermission, tok, body)
			mine = append(mine, time.Since(t0))
			if status != 200 || !strings.Contains(out, `"allowed":true`) {
				b.Errorf("check: %d %s", status, out)
				return
			}
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "checks/s")
	b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "p99-ms")
}
