package rules

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
)

func writeFile(t testing.TB, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

const allowPort443 = `version: "1"
rules:
  - {id: web, condition: 'network.port == 443', action: allow}
`

// recordingPacketLayer stands in for the datapath: it records what it was
// given and can be told to fail.
type recordingPacketLayer struct {
	mu        sync.Mutex
	installed []*PacketTables
	fail      error
}

func (p *recordingPacketLayer) InstallRules(t *PacketTables) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	p.installed = append(p.installed, t)
	return nil
}

func webContext(port uint16) *api.EvaluationContext {
	return &api.EvaluationContext{Network: &api.NetworkContext{IP: "192.0.2.1", Port: port, Protocol: "tcp"}}
}

func TestEngineStartsEmptyAndBlocks(t *testing.T) {
	for _, dir := range []string{filepath.Join(t.TempDir(), "missing"), t.TempDir()} {
		e, err := NewEngine(Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.Reload(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		if res.RulesLoaded != 0 || res.FilesLoaded != 0 {
			t.Fatalf("%s: %+v", dir, res)
		}
		if got := e.Evaluate(context.Background(), LayerHostAPI, webContext(443)); got.Decision != api.DecisionBlock || got.Rule != nil || got.Layer != LayerHostAPI {
			t.Fatalf("%s: empty set must block with no rule, got %+v", dir, got)
		}
	}
}

func TestReloadIsAtomic(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "00-base.yaml", allowPort443)
	writeFile(t, dir, "notes.json", `{"ignored": true}`)
	packet := &recordingPacketLayer{}
	e, err := NewEngine(Options{Dir: dir, Packet: packet})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := e.Reload(ctx)
	if err != nil || res.FilesLoaded != 1 || res.RulesLoaded != 1 || res.PacketRules != 1 {
		t.Fatalf("reload: %+v, %v", res, err)
	}
	before := e.Active()

	// EC-015: an invalid file fails the reload, names the problem, and
	// leaves the old set (and its packet tables) in force.
	writeFile(t, dir, "50-custom.yaml", "version: \"1\"\nrules:\n  - {id: bad-rule, condition: 'network.port ==', action: allow}\n")
	_, err = e.Reload(ctx)
	if err == nil || !strings.Contains(err.Error(), "50-custom.yaml") || !strings.Contains(err.Error(), "bad-rule") ||
		!strings.Contains(err.Error(), "previous rules remain active") {
		t.Fatalf("want a reload error naming file and rule, got %v", err)
	}
	if e.Active() != before || len(packet.installed) != 1 {
		t.Fatal("a failed reload must keep the previous set and tables")
	}

	// A datapath that refuses the tables fails the reload the same way.
	writeFile(t, dir, "50-custom.yaml", "version: \"1\"\nrules:\n  - {id: ssh, condition: 'network.port == 22', action: allow}\n")
	packet.fail = errors.New("map full")
	if _, err := e.Reload(ctx); err == nil || !strings.Contains(err.Error(), "map full") {
		t.Fatalf("want the datapath error, got %v", err)
	}
	if e.Active() != before {
		t.Fatal("the set must not change when the packet layer refuses it")
	}
	packet.fail = nil
	if res, err := e.Reload(ctx); err != nil || res.RulesLoaded != 2 {
		t.Fatalf("reload: %+v, %v", res, err)
	}
	if got := e.Evaluate(ctx, LayerHostAPI, webContext(22)); got.Decision != api.DecisionAllow || got.RuleID() != "ssh" || got.Rule.File != "50-custom.yaml" {
		t.Fatalf("new rule not in force: %+v", got)
	}
}

// TestEvaluateDuringReload runs evaluations while the set is swapped back
// and forth (run with -race): every evaluation sees one whole set, old or
// new, never a mix (S003-EC-016).
func TestEvaluateDuringReload(t *testing.T) {
	dir := t.TempDir()
	// Set A allows 443 by rule a-web and blocks 22 by a-ssh; set B the
	// reverse. A mix would show as a decision with the other set's rule.
	setA := "version: \"1\"\nrules:\n  - {id: a-web, condition: 'network.port == 443', action: allow}\n  - {id: a-ssh, condition: 'network.port == 22', action: block}\n"
	setB := "version: \"1\"\nrules:\n  - {id: b-ssh, condition: 'network.port == 22', action: allow}\n  - {id: b-web, condition: 'network.port == 443', action: block}\n"
	writeFile(t, dir, "00.yaml", setA)
	e, err := NewEngine(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var evaluations atomic.Int64
	errc := make(chan error, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				set := e.Active()
				web, ssh := set.Evaluate(webContext(443)), set.Evaluate(webContext(22))
				evaluations.Add(2)
				if web.Rule == nil || ssh.Rule == nil || web.Rule.ID[0] != ssh.Rule.ID[0] {
					errc <- errors.New("an evaluation saw a mix of two rule sets")
					return
				}
			}
		}()
	}
	for i := range 40 {
		writeFile(t, dir, "00.yaml", map[bool]string{true: setA, false: setB}[i%2 == 1])
		if _, err := e.Reload(ctx); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if evaluations.Load() == 0 {
		t.Fatal("no evaluation ran during the reloads")
	}
}

func TestWatchReloads(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "rules.d")
	e, err := NewEngine(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Watch(ctx, 50*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("watcher did not reload: %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond) // let the watcher subscribe
	// The directory appears with a file in it.
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "00-base.yaml", allowPort443)
	waitFor("directory created", func() bool { return len(e.Active().Rules()) == 1 })
	// A broken edit keeps the set; the fix is picked up.
	writeFile(t, dir, "10-more.yml", "version: \"2\"\n")
	time.Sleep(300 * time.Millisecond)
	if len(e.Active().Rules()) != 1 {
		t.Fatal("a broken file must not change the set")
	}
	writeFile(t, dir, "10-more.yml", "version: \"1\"\nrules:\n  - {id: ssh, condition: 'network.port == 22', action: allow}\n")
	waitFor("file fixed", func() bool { return len(e.Active().Rules()) == 2 })
	if err := os.Remove(filepath.Join(dir, "00-base.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor("file removed", func() bool { return len(e.Active().Rules()) == 1 })
}

// TestDecisionLogging: a log: true rule writes one info entry with rule,
// file and decision (S003-AS-017); secrets in the context never reach the
// log; other decisions are debug entries.
func TestDecisionLogging(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "00-audit.yaml", `version: "1"
rules:
  - {id: audited, condition: 'http.host == "api.example.com"', action: block, log: true}
  - {id: quiet, condition: 'http.host == "ok.example.com"', action: allow}
`)
	var buf strings.Builder
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e, err := NewEngine(Options{Dir: dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	secret := "Bearer s3cr3t-token"
	res := e.Evaluate(ctx, LayerProxy, &api.EvaluationContext{HTTP: &api.HTTPContext{
		Method: "POST", Host: "api.example.com", Path: "/v1/charge?key=s3cr3t-token",
		Headers: map[string]string{"authorization": secret}}})
	if res.Decision != api.DecisionBlock || !res.Logged() {
		t.Fatalf("got %+v", res)
	}
	entry := buf.String()
	for _, want := range []string{`"level":"INFO"`, `"rule_id":"audited"`, `"file":"00-audit.yaml"`, `"decision":"block"`, `"layer":"proxy"`} {
		if !strings.Contains(entry, want) {
			t.Errorf("log entry lacks %s: %s", want, entry)
		}
	}
	if strings.Contains(entry, "s3cr3t") {
		t.Fatalf("the log holds a secret from the context: %s", entry)
	}
	buf.Reset()
	e.Evaluate(ctx, LayerProxy, &api.EvaluationContext{HTTP: &api.HTTPContext{Host: "ok.example.com"}})
	if !strings.Contains(buf.String(), `"level":"DEBUG"`) || !strings.Contains(buf.String(), `"rule_id":"quiet"`) {
		t.Errorf("a rule without log: true should log at debug: %s", buf.String())
	}
}

// TestBudgetWarning: an evaluation slower than the budget is logged as a
// warning and still decides (S003-FR-031: the budget is not a cut-off).
func TestBudgetWarning(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "00.yaml", allowPort443)
	var buf strings.Builder
	for _, tt := range []struct {
		budget time.Duration
		warned bool
	}{{time.Nanosecond, true}, {time.Minute, false}} {
		buf.Reset()
		e, err := NewEngine(Options{Dir: dir, Budget: tt.budget, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		if res := e.Evaluate(context.Background(), LayerHostAPI, webContext(443)); res.Decision != api.DecisionAllow {
			t.Fatalf("budget %v: decision %s", tt.budget, res.Decision)
		}
		if got := strings.Contains(buf.String(), "rule evaluation exceeded its budget"); got != tt.warned {
			t.Errorf("budget %v: warned %v, want %v\n%s", tt.budget, got, tt.warned, buf.String())
		}
	}
}

func TestCheckRequest(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "00-base.yaml", allowPort443)
	e, err := NewEngine(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file, err string
	}{
		{"version: \"1\"\nrules:\n  - {id: allow-pypi, condition: 'dns.query == \"pypi.org\"', action: allow}\n", ""},
		{"version: \"1\"\nrules:\n  - {id: web, condition: 'true', action: allow}\n", `"web"`}, // clashes with 00-base.yaml
		{"version: \"1\"\nrules:\n  - {id: bad, condition: 'dns.query ==', action: allow}\n", RequestFileName + `:3: rule "bad": condition: CEL error`},
		{"version: \"1\"\nrules:\n  - {id: x, condition: 'true', action: enrich}\n", "enrich"},
		{"version: \"2\"\n", "version"},
	}
	for _, tt := range tests {
		err := e.CheckRequest([]byte(tt.file))
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%q: %v", tt.file, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: error %v, want one containing %s", tt.file, err, tt.err)
		}
	}
	if len(e.Active().Rules()) != 0 {
		t.Fatal("checking a request must not change the active set")
	}
}

// TestOutcomeResult: the host API's view of an outcome is the wire format of
// S003-IF-001, whatever the outcome carries besides.
func TestOutcomeResult(t *testing.T) {
	set := mustCompile(t, "00-base.yaml", `version: "1"
rules:
  - {id: pypi, condition: 'dns.query == "pypi.org"', action: allow, log: true, egress: {mode: direct_ip, ports: [443]}}
`)
	out := set.Evaluate(&api.EvaluationContext{DNS: &api.DNSContext{Query: "pypi.org"}})
	if out.Rule == nil || out.Rule.Egress == nil || out.Rule.Egress.Mode != api.EgressDirectIP || out.Rule.AllowPrivateIPs() {
		t.Fatalf("outcome %+v: want rule pypi with egress direct_ip", out)
	}
	for _, tt := range []struct {
		out  Outcome
		want string
	}{
		{out, `{"decision":"allow","matched_rule":"pypi","file":"00-base.yaml","logged":true}`},
		{set.Evaluate(&api.EvaluationContext{}), `{"decision":"block","matched_rule":null,"file":null,"logged":false}`},
	} {
		got, err := json.Marshal(tt.out.Result())
		if err != nil || string(got) != tt.want {
			t.Errorf("Result() = %s, %v; want %s", got, err, tt.want)
		}
	}
}
