package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/rulefile"
)

// compile builds a set from in-memory files given as name, content pairs.
func compile(t testing.TB, files ...string) (*Set, error) {
	t.Helper()
	var srcs []rulefile.Source
	for i := 0; i < len(files); i += 2 {
		srcs = append(srcs, rulefile.Source{Name: files[i], Data: []byte(files[i+1])})
	}
	loaded, err := rulefile.Build(srcs)
	if err != nil {
		return nil, err
	}
	c, err := NewCompiler()
	if err != nil {
		t.Fatal(err)
	}
	return c.Compile(loaded)
}

func mustCompile(t testing.TB, files ...string) *Set {
	t.Helper()
	s, err := compile(t, files...)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return s
}

func str(s string) *string { return &s }

func github(method, path string) *api.EvaluationContext {
	return &api.EvaluationContext{
		Network: &api.NetworkContext{Hostname: str("github.com"), IP: "140.82.121.4", Port: 443, Protocol: "tcp"},
		HTTP:    &api.HTTPContext{Method: method, Path: path, Host: "github.com"},
	}
}

func TestEvaluate(t *testing.T) {
	base := `version: "1"
definitions:
  is_github: network.hostname == "github.com"
rules:
  - id: allow-github-api
    condition: |
      $is_github &&
      http.method in ["GET", "POST"] &&
      http.path.startsWith("/api/v3")
    action: allow
  - id: block-force-push
    condition: run.tool == "git" && "-f" in run.flags
    action: block
    log: true
  - id: allow-all-github
    condition: $is_github
    action: allow
`
	restrictions := `version: "1"
rules:
  - id: block-github-admin
    condition: network.hostname == "github.com" && http.path.startsWith("/admin")
    action: block
  - id: allow-agent
    condition: agent.name == "review-agent" && docker.image.startsWith("python:") && dns.query == "" && run.context.size() == 0
    action: allow
`
	set := mustCompile(t, "00-base.yaml", base, "10-restrictions.yaml", restrictions)
	tests := []struct {
		name     string
		ctx      *api.EvaluationContext
		decision api.Decision
		rule     string // "" for the default block
		logged   bool
	}{
		{"AS-001/005 definition expanded, allow", github("GET", "/api/v3/repos"), api.DecisionAllow, "allow-github-api", false},
		{"AS-002 block logged", &api.EvaluationContext{Run: &api.RunContext{Tool: "git", Flags: []string{"-f"}}}, api.DecisionBlock, "block-force-push", true},
		{"AS-003 no match blocks", &api.EvaluationContext{Network: &api.NetworkContext{Hostname: str("evil.example.com"), IP: "203.0.113.9", Port: 443, Protocol: "tcp"}}, api.DecisionBlock, "", false},
		{"AS-004 file order, first match", github("GET", "/admin/settings"), api.DecisionAllow, "allow-all-github", false},
		{"EC-002 absent namespaces are zero values", &api.EvaluationContext{}, api.DecisionBlock, "", false},
		{"SC-014 agent, docker, dns and run namespaces", &api.EvaluationContext{Agent: &api.AgentContext{Name: "review-agent"}, Docker: &api.DockerContext{Image: "python:3.12"}}, api.DecisionAllow, "allow-agent", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := set.Evaluate(tt.ctx)
			if out.Err != nil {
				t.Fatalf("evaluation error: %v", out.Err)
			}
			got := ""
			if out.Rule != nil {
				got = out.Rule.ID
			}
			if out.Decision != tt.decision || got != tt.rule {
				t.Fatalf("got %s by %q, want %s by %q", out.Decision, got, tt.decision, tt.rule)
			}
			if out.Rule != nil && out.Rule.Log != tt.logged {
				t.Fatalf("logged = %v, want %v", out.Rule.Log, tt.logged)
			}
		})
	}
}

func TestPriorityOrder(t *testing.T) {
	set := mustCompile(t,
		"00-base.yaml", `version: "1"
rules:
  - {id: base-block, condition: 'network.port == 443', action: block, priority: 50}
  - {id: base-default, condition: 'network.port == 443', action: block}
`,
		"25-team.yaml", `version: "1"
rules:
  - {id: team, condition: 'network.port == 443', action: allow}
`,
		"99-custom.yaml", `version: "1"
rules:
  - {id: custom-first, condition: 'network.port == 443', action: allow, priority: 1}
`)
	var ids []string
	for _, r := range set.Rules() {
		ids = append(ids, r.ID)
	}
	if got, want := strings.Join(ids, ","), "custom-first,base-block,base-default,team"; got != want {
		t.Fatalf("order %s, want %s", got, want)
	}
	out := set.Evaluate(&api.EvaluationContext{Network: &api.NetworkContext{IP: "192.0.2.1", Port: 443, Protocol: "tcp"}})
	if out.Decision != api.DecisionAllow || out.Rule.ID != "custom-first" {
		t.Fatalf("priority 1 in 99-custom.yaml must decide first, got %s by %v", out.Decision, out.Rule)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name, file string
		want       []string // substrings of the error
	}{
		{"AS-007 parse error names file, rule and detail", `version: "1"
rules:
  - id: bad-rule
    condition: network.hostname ==
    action: allow
`, []string{"50-custom.yaml", `rule "bad-rule"`, "condition", "CEL error", "Syntax error"}},
		{"undeclared field from the outcall.dev guide", `version: "1"
rules:
  - id: guide-names
    condition: dns.type == "A"
    action: allow
`, []string{`rule "guide-names"`, "undeclared reference to 'dns'", "dns.query, dns.record_type"}},
		{"type error", `version: "1"
rules:
  - id: port-string
    condition: network.port == "443"
    action: allow
`, []string{`rule "port-string"`, "no matching overload"}},
		{"malformed cidr literal", `version: "1"
rules:
  - id: bad-cidr
    condition: cidr('10.0.0.0/33').containsIP(network.ip)
    action: block
`, []string{`rule "bad-cidr"`, "cidr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compile(t, "50-custom.yaml", tt.file)
			if err == nil {
				t.Fatal("compiled, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestNonBoolConditionNeverMatches(t *testing.T) {
	set := mustCompile(t, "00.yaml", `version: "1"
rules:
  - {id: yields-string, condition: 'network.protocol', action: block}
  - {id: yields-dyn, condition: 'run.context["mode"]', action: block}
  - {id: allow-all, condition: 'true', action: allow}
`)
	if w := strings.Join(set.Warnings(), "\n"); !strings.Contains(w, `rule "yields-string"`) || !strings.Contains(w, "string") {
		t.Fatalf("want a load warning naming the rule and its type, got %q", w)
	}
	ctx := &api.EvaluationContext{Network: &api.NetworkContext{Protocol: "tcp"}, Run: &api.RunContext{Context: map[string]any{"mode": "fast"}}}
	out := set.Evaluate(ctx)
	if out.Decision != api.DecisionAllow || out.Rule.ID != "allow-all" {
		t.Fatalf("non-bool conditions must not match: got %s by %v", out.Decision, out.Rule)
	}
	if len(out.NonBool) != 1 || out.NonBool[0].ID != "yields-dyn" {
		t.Fatalf("want the dyn rule reported once as non-bool, got %v", out.NonBool)
	}
	if again := set.Evaluate(ctx); len(again.NonBool) != 0 {
		t.Fatal("the non-bool warning must be reported once per rule set")
	}
}

func TestRuntimeErrorBlocksNamingTheRule(t *testing.T) {
	set := mustCompile(t, "00.yaml", `version: "1"
rules:
  - {id: needs-key, condition: 'run.context["branch"] == "main"', action: allow}
  - {id: allow-all, condition: 'true', action: allow}
`)
	out := set.Evaluate(&api.EvaluationContext{})
	if out.Decision != api.DecisionBlock || out.Rule == nil || out.Rule.ID != "needs-key" || out.Err == nil {
		t.Fatalf("a runtime error must block naming the rule, got %s by %v (err %v)", out.Decision, out.Rule, out.Err)
	}
}

func TestTestExpression(t *testing.T) {
	c, err := NewCompiler()
	if err != nil {
		t.Fatal(err)
	}
	ctx := &api.EvaluationContext{Network: &api.NetworkContext{Hostname: str("github.com"), IP: "1.2.3.4", Port: 443, Protocol: "tcp"}}
	tests := []struct {
		expr    string
		result  bool
		errLike string
	}{
		{`network.hostname == "github.com"`, true, ""},
		{`cidr('1.2.0.0/16').containsIP(network.ip) && network.port in [80, 443]`, true, ""},
		{`http.method == "GET"`, false, ""},
		{`network.hostname ==`, false, "Syntax error"},
		{`network.hostname`, false, "not bool"},
		{`run.context.missing`, false, "no such key"},
	}
	for _, tt := range tests {
		res := c.TestExpression(tt.expr, ctx)
		if res.Result != tt.result {
			t.Errorf("%s: result %v, want %v", tt.expr, res.Result, tt.result)
		}
		switch {
		case tt.errLike == "" && res.Error != nil:
			t.Errorf("%s: unexpected error %s", tt.expr, *res.Error)
		case tt.errLike != "" && (res.Error == nil || !strings.Contains(*res.Error, tt.errLike)):
			t.Errorf("%s: error %v, want one containing %q", tt.expr, res.Error, tt.errLike)
		}
	}
}

// TestShippedRulesLoad compiles every rule file the repository ships, so an
// example an operator copies is never broken.
func TestShippedRulesLoad(t *testing.T) {
	for _, dir := range []string{"../../rules", "../../rules/examples"} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range entries {
			if !e.Type().IsRegular() || !rulefile.IsRuleFile(e.Name()) {
				continue
			}
			n++
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := compile(t, e.Name(), string(data)); err != nil {
				t.Errorf("%s/%s: %v", dir, e.Name(), err)
			}
		}
		if n == 0 {
			t.Errorf("no rule files in %s", dir)
		}
		if _, err := Validate(dir); err != nil {
			t.Errorf("validate %s: %v", dir, err)
		}
	}
}
