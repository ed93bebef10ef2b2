package rules

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
)

// decisionLog is an Observer that records decisions.
type decisionLog struct {
	mu  sync.Mutex
	got []string
}

func (d *decisionLog) ObserveDecision(layer, rule string, dec api.Decision) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, layer+"/"+rule+"/"+string(dec))
}
func (d *decisionLog) ObserveReload(error) {}

const evalCtxRules = `version: "1"
rules:
  - {id: tool-ls, condition: 'run.tool == "ls"', action: allow}
  - {id: flags, condition: '"-rf" in run.flags', action: block}
  - {id: err, condition: 'run.context["x"] == "y"', action: allow}
  - {id: agent, condition: 'agent.name == "foobar" && run.tool.startsWith("git")', action: allow}
  - {id: db, condition: 'agent.name == "foobar" && network.port == 5432', action: allow}
  - {id: meta, condition: 'cidr("169.254.0.0/16").containsIP(network.ip)', action: allow}
  - {id: nonbool, condition: 'run.context["n"]', action: allow}
`

// TestEvaluateContextAgreesWithEvaluate: under a live context the walk
// decides exactly as Set.Evaluate does, errors, skips and non-bools
// included.
func TestEvaluateContextAgreesWithEvaluate(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "10.yaml", evalCtxRules)
	set, err := Validate(dir)
	if err != nil {
		t.Fatal(err)
	}
	host := "x"
	contexts := []*api.EvaluationContext{
		{},
		{Run: &api.RunContext{Tool: "ls"}},
		{Run: &api.RunContext{Tool: "rm", Flags: []string{"-rf"}}},
		{Run: &api.RunContext{Tool: "cat", Context: map[string]any{"x": "y"}}},
		{Run: &api.RunContext{Tool: "cat", Context: map[string]any{"x": 1}}},
		{Run: &api.RunContext{Tool: "git-log"}, Agent: &api.AgentContext{Name: "foobar"}},
		{Run: &api.RunContext{Tool: "git-log"}, Agent: &api.AgentContext{Name: "bar"}},
		{Network: &api.NetworkContext{Hostname: &host, Port: 5432, Protocol: "tcp"}, Agent: &api.AgentContext{Name: "foobar"}},
		{Network: &api.NetworkContext{Hostname: &host, Port: 8080, Protocol: "tcp"}, Agent: &api.AgentContext{Name: "foobar"}},
		{Network: &api.NetworkContext{IP: "169.254.169.254", Port: 80, Protocol: "tcp"}},
		{Run: &api.RunContext{Context: map[string]any{"n": "not a bool"}}},
	}
	for i, c := range contexts {
		want := set.Evaluate(c)
		got, err := set.EvaluateContext(context.Background(), c)
		if err != nil {
			t.Fatalf("context %d: %v", i, err)
		}
		if got.Decision != want.Decision || got.RuleID() != want.RuleID() || (got.Err == nil) != (want.Err == nil) ||
			len(got.Skipped) != len(want.Skipped) {
			t.Errorf("context %d: EvaluateContext = %s %s err=%v skipped=%d, Evaluate = %s %s err=%v skipped=%d",
				i, got.Decision, got.RuleID(), got.Err, len(got.Skipped), want.Decision, want.RuleID(), want.Err, len(want.Skipped))
		}
	}
}

// slowRules holds a rule whose condition runs len(run.args)^3 iterations:
// with 1,000 arguments about a billion, minutes of CPU.
const slowRules = `version: "1"
rules:
  - {id: slow, condition: 'run.args.all(a, run.args.all(b, run.args.all(c, a + b + c != "x")))', action: allow}
`

func slowContext(n int) *api.EvaluationContext {
	args := make([]string, n)
	for i := range args {
		args[i] = fmt.Sprint(i)
	}
	return &api.EvaluationContext{Run: &api.RunContext{Tool: "t", Args: args}}
}

// TestEvaluateContextInterrupts: a runaway comprehension stops soon after
// its deadline, with the context's error and no decision; the Observer
// hears of finished evaluations only. The positive control is the same rule
// on a small input, which finishes and allows.
func TestEvaluateContextInterrupts(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "10.yaml", slowRules)
	obs := &decisionLog{}
	e, err := NewEngine(Options{Dir: dir, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	out, err := e.EvaluateContext(context.Background(), LayerAgent, slowContext(3))
	if err != nil || out.Decision != api.DecisionAllow || out.RuleID() != "slow" || out.Layer != LayerAgent {
		t.Fatalf("small input: %+v, %v", out, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	out, err = e.EvaluateContext(ctx, LayerAgent, slowContext(1000))
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || out.Rule != nil {
		t.Fatalf("large input: %+v, %v, want the deadline's error", out, err)
	}
	if took > 2*time.Second {
		t.Errorf("the interrupted evaluation took %v", took)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if strings.Join(obs.got, ",") != "agent/slow/allow" {
		t.Errorf("observed %v, want only the finished evaluation", obs.got)
	}
}

// TestEvaluateContextStopsBetweenRules: an already expired context
// evaluates nothing.
func TestEvaluateContextStopsBetweenRules(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "10.yaml", evalCtxRules)
	set, err := Validate(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := set.EvaluateContext(ctx, &api.EvaluationContext{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if out, err := set.EvaluateContext(context.Background(), &api.EvaluationContext{Run: &api.RunContext{Tool: "ls"}}); err != nil || out.RuleID() != "tool-ls" {
		t.Fatalf("positive control: %+v, %v", out, err)
	}
}

// TestLoopsFlag: only conditions with a comprehension are evaluated
// interruptibly.
func TestLoopsFlag(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "10.yaml", evalCtxRules+
		"  - {id: loop, condition: 'run.args.exists(a, a == \"x\")', action: allow}\n"+
		"  - {id: loop2, condition: 'run.tool == \"y\" || run.flags.map(f, f + \"!\").size() > 3', action: allow}\n")
	set, err := Validate(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range set.Rules() {
		if want := strings.HasPrefix(r.ID, "loop"); r.loops != want {
			t.Errorf("rule %s: loops = %v, want %v", r.ID, r.loops, want)
		}
	}
}
