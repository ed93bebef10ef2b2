package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/rulereq"
	"outcall.dev/outcall/pkg/rules"
)

var (
	cidA = strings.Repeat("a1", 32)
	cidB = strings.Repeat("b2", 32)
	cidC = strings.Repeat("c3", 32) // never registered
)

// fakeIDs is the identity registry: container id to endpoint. block, when
// set, holds every lookup until it is closed.
type fakeIDs struct {
	mu    sync.Mutex
	m     map[string]endpoint.Endpoint
	block chan struct{}
}

func (f *fakeIDs) ContainerIdentity(id string) (endpoint.Endpoint, bool) {
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.m[id]
	return e, ok
}

func (f *fakeIDs) set(id, name string, identity uint32, ifindex int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[id] = endpoint.Endpoint{Name: name, ContainerID: id, Identity: identity, Ifindex: ifindex, Origin: endpoint.OriginDocker}
}

func (f *fakeIDs) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, id)
}

// fakeClock is the rate limits' clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const testRules = `version: "1"
rules:
  - {id: allow-ls, condition: 'run.tool == "ls"', action: allow}
  - {id: block-rm, condition: 'run.tool == "rm"', action: block}
  - {id: foobar-db, condition: 'agent.name == "foobar" && network.port == 5432', action: allow}
  - {id: ctx-meta, condition: 'run.tool == "meta" && run.context["mode"] == "read" && run.context.metadata["mode"] == "read"', action: allow}
  - {id: slow, condition: 'run.tool == "slow" && run.args.all(a, run.args.all(b, run.args.all(c, a + b + c != "x")))', action: allow}
`

type harness struct {
	t        *testing.T
	s        *Server
	sock     string
	procRoot string
	rulesDir string
	ids      *fakeIDs
	clock    *fakeClock
	engine   *rules.Engine
	store    *rulereq.Store
	logs     *syncBuffer
	client   *http.Client
}

// newHarness runs a Server on a real unix socket in a temp dir, with a
// real rule engine and rule request store, a fake registry holding cidA
// ("foobar-1") and cidB ("bar-1"), and the test process (the peer of
// every request) in cidA's cgroup.
func newHarness(t *testing.T, tweak func(*Options)) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, sock: filepath.Join(dir, "run", "agent.sock"), procRoot: filepath.Join(dir, "proc"),
		rulesDir: filepath.Join(dir, "rules.d"), ids: &fakeIDs{m: map[string]endpoint.Endpoint{}},
		clock: &fakeClock{t: time.Unix(1_700_000_000, 0)}, logs: &syncBuffer{}}
	if err := os.MkdirAll(h.rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.rulesDir, "10-test.yaml"), []byte(testRules), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if h.engine, err = rules.NewEngine(rules.Options{Dir: h.rulesDir, Logger: log}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.engine.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h.store, err = rulereq.Open(filepath.Join(dir, "rule-requests.json"), log); err != nil {
		t.Fatal(err)
	}
	h.ids.set(cidA, "foobar-1", 7, 101)
	h.ids.set(cidB, "bar-1", 8, 102)
	h.becomeContainer(cidA)
	opts := Options{Identities: h.ids, Policy: h.engine, Requests: h.store, Logger: log, ProcRoot: h.procRoot,
		Now: h.clock.Now, PermRate: Rate{100, 10 * time.Second}, RuleRate: Rate{10, time.Minute}}
	if tweak != nil {
		tweak(&opts)
	}
	if h.s, err = New(opts); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Lstat(h.sock); !os.IsNotExist(err) {
			t.Errorf("socket left after Serve: %v", err)
		}
	})
	h.client = h.newClient()
	return h
}

func (h *harness) newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", h.sock)
		},
		MaxConnsPerHost: 1,
	}, Timeout: 30 * time.Second}
}

// becomeContainer makes the test process's /proc/<pid>/cgroup name cid
// (systemd layout); "" makes it a process of no container.
func (h *harness) becomeContainer(cid string) {
	h.t.Helper()
	content := "0::/user.slice/user-0.slice/session-1.scope\n"
	if cid != "" {
		content = "0::/system.slice/docker-" + cid + ".scope\n"
	}
	h.writeCgroup(os.Getpid(), content)
}

func (h *harness) writeCgroup(pid int, content string) {
	h.t.Helper()
	d := filepath.Join(h.procRoot, strconv.Itoa(pid))
	if err := os.MkdirAll(d, 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "cgroup"), []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// reply is one answer, decoded.
type reply struct {
	status int
	header http.Header
	raw    string
	env    map[string]any
}

func (r reply) data() map[string]any {
	d, _ := r.env["data"].(map[string]any)
	return d
}

func (r reply) errMsg() string {
	s, _ := r.env["error"].(string)
	return s
}

func (h *harness) do(method, path, token, body string) reply {
	h.t.Helper()
	return h.doWith(h.client, method, path, token, body)
}

func (h *harness) doWith(c *http.Client, method, path, token, body string) reply {
	h.t.Helper()
	req, err := http.NewRequest(method, "http://agent"+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	if err := json.Unmarshal(b, &r.env); err != nil {
		h.t.Fatalf("%s %s: %d answer is not JSON: %q", method, path, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		h.t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return r
}

// checkin checks in as the current container and returns the token.
func (h *harness) checkin() string {
	h.t.Helper()
	r := h.do("POST", api.AgentRouteCheckin, "", "{}")
	if r.status != 200 {
		h.t.Fatalf("check-in: %d %s", r.status, r.raw)
	}
	return r.data()["session_token"].(string)
}

// wantError asserts the envelope of an error exactly.
func wantError(t *testing.T, r reply, status int, msg string) {
	t.Helper()
	if r.status != status || r.errMsg() != msg {
		t.Errorf("got %d %s, want %d %q", r.status, r.raw, status, msg)
	}
	assertKeys(t, r.env, "success", "error")
	if r.env["success"] != false {
		t.Errorf("success = %v in an error", r.env["success"])
	}
}

// assertKeys: m has exactly the keys given (S004-SC-004's allowlist).
func assertKeys(t *testing.T, m map[string]any, keys ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(keys)
	if !slices.Equal(got, keys) {
		t.Errorf("keys %v, want exactly %v", got, keys)
	}
}

func assertVerdict(t *testing.T, r reply, allowed bool, rule any, reason any) {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("permission: %d %s", r.status, r.raw)
	}
	assertKeys(t, r.env, "success", "data")
	d := r.data()
	assertKeys(t, d, "allowed", "matched_rule", "reason")
	if d["allowed"] != allowed || d["matched_rule"] != rule || d["reason"] != reason {
		t.Errorf("verdict %s, want allowed=%v matched_rule=%v reason=%v", r.raw, allowed, rule, reason)
	}
}

func TestCheckin(t *testing.T) {
	h := newHarness(t, nil)
	r := h.do("POST", api.AgentRouteCheckin, "", "{}")
	if r.status != 200 || r.env["success"] != true {
		t.Fatalf("check-in: %d %s", r.status, r.raw)
	}
	assertKeys(t, r.env, "success", "data")
	d := r.data()
	assertKeys(t, d, "container_id", "session_token", "context_keys")
	tok, _ := d["session_token"].(string)
	if d["container_id"] != cidA || !validToken(tok) {
		t.Errorf("check-in data %v", d)
	}
	if fmt.Sprint(d["context_keys"]) != "[action_type target metadata]" {
		t.Errorf("context_keys %v", d["context_keys"])
	}
	// Idempotent (S004-EC-004): same token, same id, one session; an
	// empty body is a check-in too.
	for _, body := range []string{"{}", "", " { } "} {
		r2 := h.do("POST", api.AgentRouteCheckin, "", body)
		if r2.status != 200 || r2.data()["session_token"] != tok || r2.data()["container_id"] != cidA {
			t.Errorf("check-in again with %q: %d %s", body, r2.status, r2.raw)
		}
	}
	if n := h.s.sessions.len(); n != 1 {
		t.Errorf("%d sessions, want 1", n)
	}
	// Another container gets its own.
	h.becomeContainer(cidB)
	rb := h.do("POST", api.AgentRouteCheckin, "", "{}")
	if rb.status != 200 || rb.data()["container_id"] != cidB || rb.data()["session_token"] == tok {
		t.Errorf("container B: %d %s", rb.status, rb.raw)
	}
	if !strings.Contains(h.logs.String(), "agent checked in") || !strings.Contains(h.logs.String(), "peer_pid="+strconv.Itoa(os.Getpid())) {
		t.Errorf("check-in not logged with its peer pid:\n%s", h.logs.String())
	}
	if n := testutil.ToFloat64(h.s.m.sessions); n != 2 {
		t.Errorf("sessions gauge %v, want 2", n)
	}
}

func TestCheckinBodies(t *testing.T) {
	h := newHarness(t, nil)
	for _, body := range []string{`{"container_id":"x"}`, `null`, `[]`, `{} {}`, `{`, `"x"`} {
		wantError(t, h.do("POST", api.AgentRouteCheckin, "", body), 400, "invalid request: malformed JSON body")
	}
	req, _ := http.NewRequest("POST", "http://agent"+api.AgentRouteCheckin, strings.NewReader("{}"))
	req.Header.Set("Content-Type", "text/plain")
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("text/plain check-in: %d, want 400", resp.StatusCode)
	}
	if h.s.sessions.len() != 0 {
		t.Errorf("a refused check-in made a session")
	}
}

// TestPeerRejections: every way the peer can fail to be a managed
// container, on check-in and on an authenticated route.
func TestPeerRejections(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.checkin() // positive control as cidA
	perm := `{"action_type":"tool_exec","target":"ls"}`
	tests := []struct {
		name   string
		setup  func()
		status int
		msg    string
	}{
		{"no container in the cgroup", func() { h.becomeContainer("") }, 403, "check-in rejected: peer is not a managed container"},
		{"a container the registry does not know", func() { h.becomeContainer(cidC) }, 403, "check-in rejected: peer is not a managed container"},
		{"two ids in the cgroup", func() {
			h.writeCgroup(os.Getpid(), "0::/system.slice/docker-"+cidA+".scope/"+cidB+"\n")
		}, 403, "check-in rejected: peer is not a managed container"},
		{"no cgroup file", func() { os.Remove(filepath.Join(h.procRoot, strconv.Itoa(os.Getpid()), "cgroup")) }, 403, "peer identity could not be verified"},
		{"identity released", func() { h.becomeContainer(cidA); h.ids.remove(cidA) }, 403, "check-in rejected: peer is not a managed container"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.setup()
			wantError(t, h.do("POST", api.AgentRouteCheckin, "", "{}"), tt.status, tt.msg)
			wantError(t, h.do("POST", api.AgentRoutePermission, tok, perm), tt.status, tt.msg)
		})
	}
}

// TestLookupBounds: a full lookup semaphore is 503 at once, a lookup past
// its timeout 503; both fail closed, and the same request works once the
// registry answers again.
func TestLookupBounds(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.LookupTimeout = 100 * time.Millisecond })
	tok := h.checkin()
	for range LookupConcurrency {
		h.s.lookups <- struct{}{}
	}
	wantError(t, h.do("POST", api.AgentRouteCheckin, "", "{}"), 503, "peer identity lookup capacity exhausted")
	wantError(t, h.do("GET", api.AgentRouteRuleRequests+"/rr-000000000000", tok, ""), 503, "peer identity lookup capacity exhausted")
	for range LookupConcurrency {
		<-h.s.lookups
	}
	block := make(chan struct{})
	h.ids.mu.Lock()
	h.ids.block = block
	h.ids.mu.Unlock()
	start := time.Now()
	wantError(t, h.do("POST", api.AgentRouteCheckin, "", "{}"), 503, "peer identity lookup timed out")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("timed out after %v", took)
	}
	h.ids.mu.Lock()
	h.ids.block = nil
	h.ids.mu.Unlock()
	close(block)
	if r := h.do("POST", api.AgentRouteCheckin, "", "{}"); r.status != 200 || r.data()["session_token"] != tok {
		t.Errorf("after the registry answers again: %d %s", r.status, r.raw)
	}
}

func TestAuthentication(t *testing.T) {
	h := newHarness(t, nil)
	perm := `{"action_type":"tool_exec","target":"ls"}`
	tokA := h.checkin()
	h.becomeContainer(cidB)
	tokB := h.checkin()
	h.becomeContainer(cidA)
	for _, hdr := range []string{"", "Bearer", "Bearer ", "Basic " + tokA, "Bearer tok-123", "Bearer " + strings.ToUpper(tokA),
		"Bearer  " + tokA, "Bearer tok-" + strings.Repeat("0", 32)} {
		req, _ := http.NewRequest("POST", "http://agent"+api.AgentRoutePermission, strings.NewReader(perm))
		if hdr != "" {
			req.Header.Set("Authorization", hdr)
		}
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.Contains(string(b), `"invalid or missing session token"`) {
			t.Errorf("Authorization %q: %d %s", hdr, resp.StatusCode, b)
		}
	}
	// The scheme in any case.
	for _, scheme := range []string{"bearer", "BEARER", "Bearer"} {
		req, _ := http.NewRequest("POST", "http://agent"+api.AgentRoutePermission, strings.NewReader(perm))
		req.Header.Set("Authorization", scheme+" "+tokA)
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("scheme %q: %d", scheme, resp.StatusCode)
		}
	}
	// B's token from A: 403 (and A's own works).
	wantError(t, h.do("POST", api.AgentRoutePermission, tokB, perm), 403, "session is not valid for this container")
	wantError(t, h.do("POST", api.AgentRouteRuleRequests, tokB, `{"rule_file":"x"}`), 403, "session is not valid for this container")
	wantError(t, h.do("GET", api.AgentRouteRuleRequests+"/rr-000000000000", tokB, ""), 403, "session is not valid for this container")
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tokA, perm), true, "allow-ls", nil)
}

// TestSessionLifetime: a session belongs to one lifetime of the
// container's identity. Bound again (a restart: a new port), the old token
// is refused and its rate state is gone; check-in gives a new token.
func TestSessionLifetime(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.PermRate = Rate{2, time.Minute} })
	perm := `{"action_type":"tool_exec","target":"ls"}`
	tok := h.checkin()
	for range 2 {
		assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, perm), true, "allow-ls", nil)
	}
	if r := h.do("POST", api.AgentRoutePermission, tok, perm); r.status != 429 {
		t.Fatalf("third check: %d, want 429", r.status)
	}
	h.ids.set(cidA, "foobar-1", 7, 201) // same identity, new port
	wantError(t, h.do("POST", api.AgentRoutePermission, tok, perm), 401, "invalid or missing session token")
	tok2 := h.checkin()
	if tok2 == tok {
		t.Fatal("check-in after a rebind returned the old token")
	}
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok2, perm), true, "allow-ls", nil)
	// Released: refused; the sweep drops the session.
	h.ids.remove(cidA)
	wantError(t, h.do("POST", api.AgentRoutePermission, tok2, perm), 403, "check-in rejected: peer is not a managed container")
	h.s.sweep()
	if n := h.s.sessions.len(); n != 0 {
		t.Errorf("%d sessions after the sweep, want 0", n)
	}
	h.ids.set(cidA, "foobar-1", 7, 201)
	wantError(t, h.do("POST", api.AgentRoutePermission, tok2, perm), 401, "invalid or missing session token")
}

func TestSessionCapacity(t *testing.T) {
	h := newHarness(t, nil)
	for i := range MaxSessions {
		id := identity{ContainerID: fmt.Sprintf("%064x", i+1)}
		id.binding = binding{containerID: id.ContainerID, identity: uint32(i + 1000), ifindex: i + 1000}
		h.ids.set(id.ContainerID, fmt.Sprintf("c%d", i), id.binding.identity, id.binding.ifindex)
		if _, _, err := h.s.sessions.checkin(id, h.s.stale); err != nil {
			t.Fatal(err)
		}
	}
	wantError(t, h.do("POST", api.AgentRouteCheckin, "", "{}"), 503, "agent session capacity reached")
	// A session whose container is gone makes room.
	h.ids.remove(fmt.Sprintf("%064x", 1))
	if r := h.do("POST", api.AgentRouteCheckin, "", "{}"); r.status != 200 {
		t.Errorf("check-in after a container went: %d %s", r.status, r.raw)
	}
}

func TestPermissionVerdicts(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.checkin()
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"tool_exec","target":"ls","metadata":{"args":"-la"}}`), true, "allow-ls", nil)
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"shell_exec","target":"rm"}`), false, "block-rm", "blocked by policy")
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"file_access","target":"/etc/shadow"}`), false, nil, "blocked by policy")
	// agent.name from the registry's container name: foobar-1 is foobar.
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"network_call","target":"db.internal:5432"}`), true, "foobar-db", nil)
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"network_call","target":"db.internal:8080"}`), false, nil, "blocked by policy")
	// Metadata under run.context, flattened and whole (S004-AS-009).
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"tool_exec","target":"meta","metadata":{"mode":"read","secret":"hunter2-value"}}`), true, "ctx-meta", nil)
	// bar-1 is bar: the same request is denied.
	h.becomeContainer(cidB)
	tokB := h.checkin()
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tokB, `{"action_type":"network_call","target":"db.internal:5432"}`), false, nil, "blocked by policy")
	// An agent cannot claim a name: unknown fields are refused.
	wantError(t, h.do("POST", api.AgentRoutePermission, tokB, `{"action_type":"network_call","target":"db.internal:5432","agent":{"name":"foobar"}}`), 400, "invalid request: malformed JSON body")

	logs := h.logs.String()
	if strings.Contains(logs, "hunter2-value") {
		t.Errorf("a metadata value was logged:\n%s", logs)
	}
	if !strings.Contains(logs, "agent permission check") || !strings.Contains(logs, "container_id="+cidA) ||
		!strings.Contains(logs, "action_type=network_call") || !strings.Contains(logs, "allowed=true") || !strings.Contains(logs, "rule=foobar-db") {
		t.Errorf("permission checks not logged with their fields:\n%s", logs)
	}
	if n := testutil.ToFloat64(h.s.m.decisions.WithLabelValues("foobar-db", "allow")); n != 1 {
		t.Errorf("decisions{foobar-db,allow} = %v, want 1", n)
	}
	if n := testutil.ToFloat64(h.s.m.decisions.WithLabelValues("default-block", "block")); n != 3 {
		t.Errorf("decisions{default-block,block} = %v, want 3", n)
	}
	if n := testutil.ToFloat64(h.s.m.requests.WithLabelValues(routePermission, outcomeOK)); n != 7 {
		t.Errorf("requests{permission_check,ok} = %v, want 7", n)
	}
}

// TestPermissionErrors: the processing order of S004 §2.5, each step's
// status and message.
func TestPermissionErrors(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.checkin()
	malformed := []string{``, `{}`, `{"target":"ls"}`, `{"action_type":"tool_exec"}`, `{"action_type":"exec","target":"ls"}`,
		`{"action_type":"tool_exec","target":"ls","metadata":{"n":1}}`, `{"action_type":"tool_exec","target":"ls","extra":1}`,
		`{"action_type":"tool_exec","target":"ls"} x`, `{"action_type":"tool_exec","target":7}`, `[]`, `null`}
	for _, body := range malformed {
		wantError(t, h.do("POST", api.AgentRoutePermission, tok, body), 400, "invalid request: malformed JSON body")
	}
	// The body is checked before the session: a malformed body without a
	// token is 400, a good one 401.
	wantError(t, h.do("POST", api.AgentRoutePermission, "", `{}`), 400, "invalid request: malformed JSON body")
	wantError(t, h.do("POST", api.AgentRoutePermission, "", `{"action_type":"tool_exec","target":"ls"}`), 401, "invalid or missing session token")
	invalid := map[string]string{
		`{"action_type":"tool_exec","target":"  "}`:                                          "invalid request: target is empty",
		`{"action_type":"tool_exec","target":"ls","metadata":{"args_json":"[1]"}}`:           "invalid request: metadata.args_json must be a JSON array of strings",
		`{"action_type":"network_call","target":"ftp://example.com/"}`:                       "invalid request: network target is not an http or https URL",
		`{"action_type":"network_call","target":"https://u:p@example.com/"}`:                 "invalid request: network target URL must not contain credentials",
		`{"action_type":"network_call","target":"example.com:0"}`:                            `invalid request: network target port "0" is not 1-65535`,
		`{"action_type":"network_call","target":"a b"}`:                                      "invalid request: network target contains whitespace",
		`{"action_type":"network_call","target":"x","metadata":{"protocol":"icmp"}}`:         "invalid request: metadata.protocol must be tcp or udp",
		`{"action_type":"network_call","target":"https://x/","metadata":{"method":"G3T"}}`:   "invalid request: metadata.method must be 1-32 ASCII letters",
		`{"action_type":"network_call","target":"https://x/","metadata":{"protocol":"udp"}}`: "invalid request: an http or https URL needs protocol tcp",
	}
	for body, msg := range invalid {
		wantError(t, h.do("POST", api.AgentRoutePermission, tok, body), 422, msg)
	}
	wantError(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"tool_exec","target":"ls","metadata":{"pad":"`+strings.Repeat("x", maxBody)+`"}}`), 413, "request body exceeds 65536 bytes")
}

// TestRateLimits: a sliding log per container and operation (S004-EC-006,
// AS-010): the 4th check in a window of 3 is 429 with Retry-After until the
// oldest leaves; refused checks are not recorded; rule submissions have
// their own window; check-in and status have none; another container has
// its own budget.
func TestRateLimits(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.PermRate = Rate{3, 10 * time.Second}; o.RuleRate = Rate{1, time.Minute} })
	perm := `{"action_type":"tool_exec","target":"ls"}`
	tok := h.checkin()
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, perm), true, "allow-ls", nil) // t0
	h.clock.Advance(4 * time.Second)
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, perm), true, "allow-ls", nil) // t0+4
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, perm), true, "allow-ls", nil) // t0+4
	for _, want := range []string{"6", "6"} {
		r := h.do("POST", api.AgentRoutePermission, tok, perm)
		wantError(t, r, 429, "rate limit exceeded for container "+cidA)
		if got := r.header.Get("Retry-After"); got != want {
			t.Errorf("Retry-After %q, want %q", got, want)
		}
	}
	h.clock.Advance(5*time.Second + 500*time.Millisecond) // t0+9.5: the oldest leaves in 0.5 s
	r := h.do("POST", api.AgentRoutePermission, tok, perm)
	if r.status != 429 || r.header.Get("Retry-After") != "1" {
		t.Errorf("half a second before room: %d Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	h.clock.Advance(500 * time.Millisecond) // t0+10: t0 has left
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, perm), true, "allow-ls", nil)
	wantError(t, h.do("POST", api.AgentRoutePermission, tok, perm), 429, "rate limit exceeded for container "+cidA)
	// Not limited: check-in, status; a separate window: rule submissions.
	for range 5 {
		h.checkin()
		wantError(t, h.do("GET", api.AgentRouteRuleRequests+"/rr-000000000000", tok, ""), 404, "rule request not found")
	}
	if r := h.do("POST", api.AgentRouteRuleRequests, tok, `{"rule_file":"not yaml: ["}`); r.status != 422 {
		t.Errorf("first submission: %d %s", r.status, r.raw)
	}
	r = h.do("POST", api.AgentRouteRuleRequests, tok, `{"rule_file":"x"}`)
	wantError(t, r, 429, "rate limit exceeded for container "+cidA)
	if r.header.Get("Retry-After") != "60" {
		t.Errorf("rule Retry-After %q", r.header.Get("Retry-After"))
	}
	// Container B has its own budget.
	h.becomeContainer(cidB)
	tokB := h.checkin()
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tokB, perm), true, "allow-ls", nil)
	if n := testutil.ToFloat64(h.s.m.rateLimited.WithLabelValues(opPermission)); n != 4 {
		t.Errorf("rate_limited{permission_check} = %v, want 4", n)
	}
	if !strings.Contains(h.logs.String(), "operation=permission_check") {
		t.Error("rate limiting not logged with its operation")
	}
}

// TestEvaluationTimeout: a rule that would run for minutes is cut off at
// the timeout with a deny (S004-EC-007); the positive control is the same
// rule on a small input. Waiting for an evaluation slot counts too.
func TestEvaluationTimeout(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.EvalTimeout = 200 * time.Millisecond })
	tok := h.checkin()
	args := make([]string, 1000)
	for i := range args {
		args[i] = strconv.Itoa(i)
	}
	argsJSON, _ := json.Marshal(args)
	body, _ := json.Marshal(map[string]any{"action_type": "tool_exec", "target": "slow", "metadata": map[string]string{"args_json": string(argsJSON)}})
	start := time.Now()
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, string(body)), false, nil, "evaluation timeout")
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the timed-out check took %v", took)
	}
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"tool_exec","target":"slow","metadata":{"args":"1"}}`), true, "slow", nil)
	// The slot is given back once the interrupted evaluation ends.
	waitFor(t, "the evaluation slots to be free", func() bool { return len(h.s.evals) == 0 })
	for range EvalConcurrency {
		h.s.evals <- struct{}{}
	}
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"tool_exec","target":"ls"}`), false, nil, "evaluation timeout")
	for range EvalConcurrency {
		<-h.s.evals
	}
	if n := testutil.ToFloat64(h.s.m.decisions.WithLabelValues(ruleTimeout, "block")); n != 2 {
		t.Errorf("decisions{evaluation-timeout} = %v, want 2", n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// brokenPolicy fails or panics on every evaluation.
type brokenPolicy struct{ panics bool }

func (p *brokenPolicy) EvaluateContext(context.Context, rules.Layer, *api.EvaluationContext) (rules.Outcome, error) {
	if p.panics {
		panic("evaluator bug")
	}
	return rules.Outcome{}, errors.New("engine gone")
}
func (p *brokenPolicy) CheckRequest([]byte) error { return nil }

func TestEvaluationUnavailable(t *testing.T) {
	for _, panics := range []bool{false, true} {
		t.Run(fmt.Sprintf("panics=%v", panics), func(t *testing.T) {
			h := newHarness(t, func(o *Options) { o.Policy = &brokenPolicy{panics: panics} })
			tok := h.checkin()
			assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"tool_exec","target":"ls"}`), false, nil, "policy evaluation unavailable")
		})
	}
}

func TestRuleRequests(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.checkin()
	file := "version: \"1\"\nrules:\n  - {id: agent-wants-git, condition: 'run.tool == \"git\"', action: allow}\n"
	body, _ := json.Marshal(api.RuleRequestSubmission{RuleFile: file})
	r := h.do("POST", api.AgentRouteRuleRequests, tok, string(body))
	if r.status != 201 {
		t.Fatalf("submit: %d %s", r.status, r.raw)
	}
	assertKeys(t, r.data(), "id", "status", "reason")
	id, _ := r.data()["id"].(string)
	if !requestIDPattern.MatchString(id) || r.data()["status"] != "pending" || r.data()["reason"] != nil {
		t.Fatalf("submit data %v", r.data())
	}
	// The operator's side sees it, with the verified container id.
	pending := h.store.Pending(context.Background())
	if len(pending) != 1 || pending[0].ID != id || pending[0].ContainerID != cidA || pending[0].RuleFile != file {
		t.Fatalf("pending %+v", pending)
	}
	st := h.do("GET", api.AgentRouteRuleRequests+"/"+id, tok, "")
	if st.status != 200 || st.data()["status"] != "pending" {
		t.Fatalf("status: %d %s", st.status, st.raw)
	}
	assertKeys(t, st.data(), "id", "status", "reason")
	if _, err := h.store.Approve(context.Background(), id, h.rulesDir, func(ctx context.Context) (int, error) {
		res, err := h.engine.Reload(ctx)
		return res.RulesLoaded, err
	}); err != nil {
		t.Fatal(err)
	}
	st = h.do("GET", api.AgentRouteRuleRequests+"/"+id, tok, "")
	if st.status != 200 || st.data()["status"] != "approved" || st.data()["reason"] != nil {
		t.Fatalf("status after approval: %d %s", st.status, st.raw)
	}
	// The approved rule is in force for the agent.
	assertVerdict(t, h.do("POST", api.AgentRoutePermission, tok, `{"action_type":"tool_exec","target":"git"}`), true, "agent-wants-git", nil)

	// Another container, a malformed id and an unknown one: the same 404.
	h.becomeContainer(cidB)
	tokB := h.checkin()
	for _, p := range []string{id, "rr-../../escape", strings.ToUpper(id), "rr-ffffffffffff"} {
		wantError(t, h.do("GET", api.AgentRouteRuleRequests+"/"+p, tokB, ""), 404, "rule request not found")
	}
	// Invalid files are 422 with the validator's words; a clash with a
	// rule in force too.
	for _, f := range []string{"", "version: \"1\"\nrules:\n  - {id: x, condition: 'nope.field == 1', action: allow}\n",
		"version: \"1\"\nrules:\n  - {id: allow-ls, condition: 'true', action: allow}\n"} {
		b, _ := json.Marshal(api.RuleRequestSubmission{RuleFile: f})
		r := h.do("POST", api.AgentRouteRuleRequests, tokB, string(b))
		if r.status != 422 || !strings.HasPrefix(r.errMsg(), "invalid request: rule file: ") {
			t.Errorf("file %q: %d %s", f, r.status, r.raw)
		}
		// Nothing of the rules in force: not their file, not a line.
		if strings.Contains(r.raw, "10-test.yaml") || strings.Contains(r.raw, "also at") {
			t.Errorf("file %q: the answer names the host's rules: %s", f, r.raw)
		}
	}
	clash, _ := json.Marshal(api.RuleRequestSubmission{RuleFile: "version: \"1\"\nrules:\n  - {id: allow-ls, condition: 'true', action: allow}\n"})
	wantError(t, h.do("POST", api.AgentRouteRuleRequests, tokB, string(clash)), 422,
		`invalid request: rule file: rule "allow-ls": id: the id is already used by a rule in force or in this file`)
	bad, _ := json.Marshal(api.RuleRequestSubmission{RuleFile: "version: \"1\"\nrules:\n  - {id: x, condition: 'nope.field == 1', action: allow}\n"})
	if r := h.do("POST", api.AgentRouteRuleRequests, tokB, string(bad)); !strings.Contains(r.errMsg(), "agent-request.yaml:3") {
		t.Errorf("an error in the agent's own file lost its location: %s", r.raw)
	}
	wantError(t, h.do("POST", api.AgentRouteRuleRequests, tokB, `{}`), 400, "invalid request: malformed JSON body")
	wantError(t, h.do("POST", api.AgentRouteRuleRequests, tokB, `{"rule_file":1}`), 400, "invalid request: malformed JSON body")
	if !strings.Contains(h.logs.String(), "agent rule request submitted") || !strings.Contains(h.logs.String(), "request_id="+id) {
		t.Error("submission not logged with its request id")
	}
}

// TestTooLargeKeepsConnection: S004-EC-010, on one connection: a body over
// the limit is 413, and the next well-formed request on the same
// connection succeeds.
func TestTooLargeKeepsConnection(t *testing.T) {
	h := newHarness(t, nil)
	var reused []bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }}
	send := func(body string) reply {
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "POST", "http://agent"+api.AgentRouteCheckin, strings.NewReader(body))
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		r := reply{status: resp.StatusCode, raw: string(b)}
		_ = json.Unmarshal(b, &r.env)
		return r
	}
	big := `{"x":"` + strings.Repeat("a", 70_000) + `"}`
	wantError(t, send(big), 413, "request body exceeds 65536 bytes")
	if r := send("{}"); r.status != 200 {
		t.Fatalf("after the 413: %d %s", r.status, r.raw)
	}
	if len(reused) != 2 || !reused[1] {
		t.Errorf("connection reuse %v, want the second request on the first connection", reused)
	}
}

func TestUnknownRoutes(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.checkin()
	tests := []struct {
		method, path string
		status       int
		msg          string
	}{
		{"GET", "/v1/checkin", 405, "method GET is not allowed for /v1/checkin"},
		{"PUT", "/v1/permissions/check", 405, "method PUT is not allowed for /v1/permissions/check"},
		{"DELETE", "/v1/requests/rules/rr-000000000000", 405, "method DELETE is not allowed for /v1/requests/rules/rr-000000000000"},
		{"GET", "/v1/requests/rules/", 404, "no route for GET /v1/requests/rules/"},
		{"GET", "/v1/requests/rules/a/b", 404, "rule request not found"},
		{"GET", "/api/v1/bridge", 404, "no route for GET /api/v1/bridge"},
		{"POST", "/api/v1/rules/reload", 404, "no route for POST /api/v1/rules/reload"},
		{"GET", "/api/v1/requests/rules", 404, "no route for GET /api/v1/requests/rules"},
		{"GET", "/", 404, "no route for GET /"},
		{"GET", "/metrics", 404, "no route for GET /metrics"},
	}
	for _, tt := range tests {
		wantError(t, h.do(tt.method, tt.path, tok, ""), tt.status, tt.msg)
	}
}

// TestHelperConnector is not a test: it is the connecting process of
// TestPeerPIDReuse, started as a child. It connects to the socket, hands
// the connection to its parent (fd 3 is a unix socket pair) and either
// exits at once or waits for its stdin to close.
func TestHelperConnector(t *testing.T) {
	sock := os.Getenv("AGENTAPI_HELPER_SOCK")
	if sock == "" {
		t.Skip("helper process only")
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		os.Exit(3)
	}
	f, _ := c.(*net.UnixConn).File()
	pair := os.NewFile(3, "pair")
	pc, err := net.FileConn(pair)
	if err != nil {
		os.Exit(4)
	}
	rights := unixRights(int(f.Fd()))
	if _, _, err := pc.(*net.UnixConn).WriteMsgUnix([]byte{1}, rights, nil); err != nil {
		os.Exit(5)
	}
	if os.Getenv("AGENTAPI_HELPER_STAY") == "1" {
		io.Copy(io.Discard, os.Stdin)
	}
	os.Exit(0)
}
