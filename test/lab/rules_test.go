package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"outcall.dev/outcall/internal/atomicfile"
	"outcall.dev/outcall/pkg/rulereq"
)

func writeRule(t *testing.T, l *Lab, name, content string) {
	t.Helper()
	if err := os.MkdirAll(l.RulesDir(), 0o750); err != nil {
		t.Fatal(err)
	}
	// Written atomically, as a deployment tool would, so the watcher never
	// reads half a file.
	if err := atomicfile.WriteFile(filepath.Join(l.RulesDir(), name), []byte(content)); err != nil {
		t.Fatal(err)
	}
}

// ruleSet allows a1 one steady destination (Upstream:80, in every set) and
// one moving destination.
func ruleSet(moving string) string {
	return fmt.Sprintf(`version: "1"
definitions:
  a1_tcp: agent.name == "a1" && network.protocol == "tcp"
rules:
  - id: steady
    condition: $a1_tcp && network.ip == "%s" && network.port == 80
    action: allow
  - id: moving
    condition: $a1_tcp && %s
    action: allow
  - id: block-upstream2
    condition: cidr("203.0.113.0/24").containsIP(network.ip)
    action: block
    priority: 200
`, Upstream, moving)
}

var (
	movingA = fmt.Sprintf(`network.ip == "%s" && network.port == 80`, Upstream2)
	movingB = fmt.Sprintf(`network.ip == "%s" && network.port in [443]`, Upstream)
)

// TestLabRuleReload: packet-level rules reach the kernel, a reload changes
// what new connections may reach, and a destination allowed by both sets
// never loses a probe while the sets are swapped back and forth.
func TestLabRuleReload(t *testing.T) {
	w := setUpWithRules(t, map[string]string{"00-base.yaml": ruleSet(movingA)})
	a1, a2, d := w.a1, w.a2, w.d
	expect := func(what string, ns, addr string, want bool) {
		t.Helper()
		if got := TCP(ns, addr); got != want {
			t.Fatalf("%s: TCP to %s passed=%v, want %v\n%s", what, addr, got, want, d.Log)
		}
	}
	// Positive control of the first blocked probe (the swaps below open
	// and close both moving destinations from a1 itself).
	mustReach(t, TCP, w.lab.Host, Upstream+":443")
	expect("set A steady", a1.NS, Upstream+":80", true)
	expect("set A moving", a1.NS, Upstream2+":80", true)
	expect("set A other port", a1.NS, Upstream+":443", false)
	expect("rules are per agent", a2.NS, Upstream+":80", false)

	out := mustCLI(t, d, "rules", "list")
	for _, want := range []string{"steady", "moving", "block-upstream2", "packet"} {
		if !strings.Contains(out, want) {
			t.Errorf("rules list lacks %q:\n%s", want, out)
		}
	}

	// A prober opens new connections to the steady destination for the
	// whole of the swaps.
	var probes, failures atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	proberDone := make(chan struct{})
	go func() {
		defer close(proberDone)
		for ctx.Err() == nil {
			probes.Add(1)
			if !TCP(a1.NS, Upstream+":80") {
				failures.Add(1)
			}
		}
	}()
	const swaps = 10
	start := time.Now()
	for i := range swaps {
		moving, on, off := movingB, Upstream+":443", Upstream2+":80"
		if i%2 == 1 {
			moving, on, off = movingA, Upstream2+":80", Upstream+":443"
		}
		writeRule(t, w.lab, "00-base.yaml", ruleSet(moving))
		if out := mustCLI(t, d, "rules", "reload"); !strings.Contains(out, "Reloaded 3 rule(s) from 1 file(s).") {
			t.Fatalf("rules reload printed %q", out)
		}
		expect(fmt.Sprintf("swap %d newly allowed", i), a1.NS, on, true)
		expect(fmt.Sprintf("swap %d no longer allowed", i), a1.NS, off, false)
	}
	cancel()
	<-proberDone
	t.Logf("%d swaps in %v; steady destination: %d probes, %d failed", swaps, time.Since(start).Round(time.Millisecond), probes.Load(), failures.Load())
	if failures.Load() != 0 || probes.Load() < swaps {
		t.Fatalf("steady destination: %d of %d probes failed during the swaps", failures.Load(), probes.Load())
	}

	// A bad file fails the reload, names itself, and changes nothing.
	writeRule(t, w.lab, "50-custom.yaml", "version: \"1\"\nrules:\n  - {id: bad-rule, condition: 'network.port ==', action: allow}\n")
	_, errOut, code := cli(t, d, "rules", "reload")
	if code != 1 || !strings.Contains(errOut, "50-custom.yaml") || !strings.Contains(errOut, "bad-rule") {
		t.Fatalf("bad reload: exit %d, %q", code, errOut)
	}
	expect("after a failed reload", a1.NS, Upstream2+":80", true) // set A is still in force

	// The watcher picks up a fixed file without an explicit reload.
	writeRule(t, w.lab, "50-custom.yaml", fmt.Sprintf("version: \"1\"\nrules:\n  - {id: a2-web, condition: 'agent.name == \"a2\" && network.ip == \"%s\" && network.port == 80', action: allow}\n", Upstream))
	waitFor(t, "the watcher to load a2-web", func() bool { return TCP(a2.NS, Upstream+":80") })

	// Host API evaluation agrees with the kernel, and per-rule hits are
	// exported for the datapath layer.
	ctxJSON := fmt.Sprintf(`{"network":{"ip":"%s","port":80,"protocol":"tcp"},"agent":{"name":"a1"}}`, Upstream)
	if out := mustCLI(t, d, "rules", "evaluate", "--context", ctxJSON); !strings.Contains(out, "Decision: allow") || !strings.Contains(out, "steady") {
		t.Errorf("rules evaluate printed %q", out)
	}
	metrics := scrape(t, w.lab)
	for _, want := range []string{
		`outcall_rule_hits_total{decision="allow",layer="datapath",rule_id="steady"}`,
		`outcall_rule_hits_total{decision="block",layer="datapath",rule_id="block-upstream2"}`,
		`outcall_rule_hits_total{decision="allow",layer="host_api",rule_id="steady"} 1`,
		// The CLI's reload failed, and the watcher may have seen the bad
		// file too: at least one failure, whatever the count.
		`outcall_rule_reloads_total{result="failure"} `,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// scrape reads the daemon's metrics from inside the lab's host namespace.
func scrape(t testing.TB, l *Lab) string {
	t.Helper()
	var body string
	err := Do(l.Host, func() error {
		// Dial here: an http.Client would dial from another thread,
		// outside the namespace.
		c, err := net.DialTimeout("tcp4", "127.0.0.1:9469", 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// TestLabRuleRequests: requests an agent left pending survive a kill -9 of
// the daemon; approving one writes agent-<id>.yaml (0600) and its rule opens
// the datapath; rejecting one writes nothing.
func TestLabRuleRequests(t *testing.T) {
	w := setUp(t)
	d, l := w.d, w.lab
	// Queue two requests in the daemon's store as the agent API would
	// (it arrives with S004), while the daemon runs.
	store, err := rulereq.Open(filepath.Join(l.Dir, "state", "rule-requests.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	approveMe, err := store.Submit(ctx, "a1", fmt.Sprintf("version: \"1\"\nrules:\n  - id: a1-upstream2\n    condition: 'agent.name == \"a1\" && network.ip == \"%s\" && network.port == 80'\n    action: allow\n", Upstream2))
	if err != nil {
		t.Fatal(err)
	}
	rejectMe, err := store.Submit(ctx, "a1", "version: \"1\"\nrules:\n  - {id: everything, condition: 'true', action: allow}\n")
	if err != nil {
		t.Fatal(err)
	}
	// kill -9 and restart: the requests are still pending.
	if err := d.Signal(syscall.SIGKILL); err == nil {
		t.Fatal("outcalld exited cleanly on SIGKILL")
	}
	d = l.StartDaemon(filepath.Join(bins, "outcalld"))
	out := mustCLI(t, d, "requests", "list")
	for _, id := range []string{approveMe.ID, rejectMe.ID} {
		if !strings.Contains(out, id) || !strings.Contains(out, "pending") {
			t.Fatalf("requests list after kill -9 lacks %s:\n%s", id, out)
		}
	}
	if TCP(w.a1.NS, Upstream2+":80") {
		t.Fatal("a pending request must not open anything")
	}

	if out := mustCLI(t, d, "requests", "approve", approveMe.ID); !strings.Contains(out, fmt.Sprintf("Rule request %q approved; 1 rule(s) loaded.", approveMe.ID)) {
		t.Errorf("approve printed %q", out)
	}
	fi, err := os.Stat(filepath.Join(l.RulesDir(), "agent-"+approveMe.ID+".yaml"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("approved rule file: %v, mode %v", err, fi.Mode())
	}
	if !TCP(w.a1.NS, Upstream2+":80") {
		t.Fatalf("approved rule did not open the datapath\n%s", d.Log)
	}
	if out := mustCLI(t, d, "requests", "reject", rejectMe.ID, "--reason", "Too broad."); !strings.Contains(out, fmt.Sprintf("Rule request %q rejected.", rejectMe.ID)) {
		t.Errorf("reject printed %q", out)
	}
	if _, err := os.Stat(filepath.Join(l.RulesDir(), "agent-"+rejectMe.ID+".yaml")); !os.IsNotExist(err) {
		t.Errorf("a rejected request left a file: %v", err)
	}
	if _, errOut, code := cli(t, d, "requests", "approve", rejectMe.ID); code != 1 || !strings.Contains(errOut, "already rejected") {
		t.Errorf("approving a rejected request: exit %d, %q", code, errOut)
	}
	if out := mustCLI(t, d, "requests", "list"); !strings.Contains(out, "No pending rule requests.") {
		t.Errorf("requests list after decisions: %q", out)
	}
}
