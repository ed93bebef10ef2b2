package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/test/lab"
)

// agentRules are the rules of the agent tests, %[1]s being the session
// prefix: tools for every agent, a tool, a name and a packet destination
// only for the agents called <prefix>-foo (S013), and blocks.
const agentRules = `version: "1"
rules:
  - id: tools
    condition: 'run.tool in ["true", "echo", "sleep"]'
    action: allow
  - id: touch-allowed
    condition: 'run.tool == "touch" && run.args == ["/tmp/allowed"]'
    action: allow
  - id: no-rm
    condition: 'run.tool == "rm"'
    action: block
  - id: fetch-web
    condition: 'run.tool == "network_call" && network.hostname == "web.test"'
    action: allow
  - id: foo-id
    condition: 'agent.name == "%[1]s-foo" && run.tool == "id"'
    action: allow
  - id: foo-name
    condition: 'agent.name == "%[1]s-foo" && (dns.query == "foo.test" || network.hostname == "foo.test")'
    action: allow
    egress:
      mode: proxy
      allow_private_ips: true
  - id: foo-packet
    condition: 'agent.name == "%[1]s-foo" && network.ip == "198.51.100.10" && network.port == 81 && network.protocol == "tcp"'
    action: allow
    egress:
      mode: direct_ip
      ports: [81]
      allow_private_ips: true
`

// Limits small enough to reach and to recover from within a test.
const (
	agentPermRate = "20/4"
	agentRuleRate = "3/4"
)

// fooAddr is a responder only <prefix>-foo agents may reach (foo-packet).
var fooAddr = netip.AddrPortFrom(netip.MustParseAddr(lab.Upstream), 81)

// TestAgents is issue 11's "How it is shown" on the real engine: the agent
// API over the mounted socket, the shim inside containers, rule requests
// decided by the operator, tokens bound to their container, rate limits,
// a TTL grant, agent.name at every layer, and the shim with the daemon
// gone. Every response body is checked against its route's fields (g).
func TestAgents(t *testing.T) {
	metricsAddr := freeLoopbackPort(t)
	w := setUpWith(t, "--agent-perm-rate", agentPermRate, "--agent-rule-rate", agentRuleRate, "--metrics-addr", metricsAddr)
	p := w.u.Prefix
	lab.ServeTCP(t, w.u.NS, fooAddr.String())
	w.dns.Set("foo.test.", lab.RR(t, "foo.test. 60 IN A "+webAddr.Addr().String()))
	mustReachRoot(t, w.u, fooAddr, deniedAddr)
	writeFile(t, filepath.Join(w.dir, "rules.d", "20-agents.yaml"), fmt.Sprintf(agentRules, p))
	w.mustCLI(t, "rules", "reload")

	helpers := []string{"--helper-mounts"}
	foo1 := w.create(t, p+"-foo-1", helpers, "sleep", "3600")
	foo2 := w.create(t, p+"-foo-2", helpers, "sleep", "3600")
	bar1 := w.create(t, p+"-bar-1", helpers, "sleep", "3600")
	plain := w.create(t, p+"-plain-1", nil, "sleep", "3600")
	for _, c := range []managed{foo1, foo2, bar1} {
		w.aim(t, c.IP, c.Bridge, fooAddr.Addr(), deniedAddr.Addr(), webAddr.Addr())
	}

	t.Run("verdicts", func(t *testing.T) { testVerdicts(t, w, foo1, foo2) })
	t.Run("mounts", func(t *testing.T) { testAgentMounts(t, w, foo1, plain) })
	t.Run("agent name", func(t *testing.T) { testAgentName(t, w, foo1, foo2, bar1) })
	t.Run("rule requests", func(t *testing.T) { testRuleRequests(t, w, foo1, foo2) })
	t.Run("tokens", func(t *testing.T) { testTokens(t, w, foo1, bar1) })
	t.Run("rate limits", func(t *testing.T) { testRateLimits(t, w) })
	t.Run("ttl grant", func(t *testing.T) { testTTLGrant(t, w, foo1, foo2) })
	t.Run("grant destinations", func(t *testing.T) { testGrantDestinations(t, w, foo2) })
	t.Run("metrics", func(t *testing.T) { testAgentMetrics(t, metricsAddr) })
	t.Run("daemon gone", func(t *testing.T) { testDaemonGone(t, w, foo1) })
}

// agentReply is one agent API answer as a process in a container got it.
type agentReply struct {
	status     int
	raw        string
	body       map[string]any
	retryAfter string
}

// data is the reply's data object (nil when absent).
func (r agentReply) data() map[string]any {
	d, _ := r.body["data"].(map[string]any)
	return d
}

// agentCall sends one request over the container's agent socket with
// agentcall and checks the envelope's fields (g): success and exactly one
// of data (on success) or error.
func (w *world) agentCall(t *testing.T, c managed, token, method, path, body string) agentReply {
	t.Helper()
	args := []string{"exec", c.Name, "agentcall"}
	if token != "" {
		args = append(args, "-token", token)
	}
	args = append(args, method, path)
	if body != "" {
		args = append(args, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, errOut, code, err := w.docker.Run(ctx, args...)
	if err != nil || code != 0 {
		t.Fatalf("agentcall %s %s in %s: exit %d %v\n%s%s", method, path, c.Name, code, err, out, errOut)
	}
	lines := strings.SplitN(out, "\n", 3)
	if len(lines) < 2 {
		t.Fatalf("agentcall printed %q", out)
	}
	r := agentReply{raw: lines[1]}
	r.status, _ = strconv.Atoi(lines[0])
	if len(lines) == 3 {
		r.retryAfter = strings.TrimSpace(strings.TrimPrefix(lines[2], "Retry-After:"))
	}
	if err := json.Unmarshal([]byte(r.raw), &r.body); err != nil {
		t.Fatalf("%s %s: status %d, body is not JSON: %q", method, path, r.status, r.raw)
	}
	checkFields(t, method+" "+path+" envelope", r.body, "success", "data", "error")
	ok, _ := r.body["success"].(bool)
	_, hasData := r.body["data"]
	_, hasErr := r.body["error"]
	if ok != (r.status < 300) || ok != hasData || ok == hasErr {
		t.Errorf("%s %s: status %d with envelope %s", method, path, r.status, r.raw)
	}
	// Nothing about the host, the rules or other containers, whatever the
	// answer (S004-FR-010).
	for _, secret := range []string{w.socket, w.dir, w.bridge, w.gw.String(), "run.tool in", "agent.name ==", "network.ip ==", "egress"} {
		if strings.Contains(r.raw, secret) {
			t.Errorf("%s %s: the answer mentions %q: %s", method, path, secret, r.raw)
		}
	}
	return r
}

// checkFields fails t when obj has a key outside allowed (S004-SC-004:
// every field of every answer is on an allowlist).
func checkFields(t *testing.T, what string, obj map[string]any, allowed ...string) {
	t.Helper()
	for k := range obj {
		if !slices.Contains(allowed, k) {
			t.Errorf("%s: field %q is not one an agent may see (allowed: %v)", what, k, allowed)
		}
	}
}

// checkin checks c in and returns its token, checking the answer's fields.
func (w *world) checkin(t *testing.T, c managed) string {
	t.Helper()
	r := w.agentCall(t, c, "", "POST", api.AgentRouteCheckin, "{}")
	if r.status != http.StatusOK {
		t.Fatalf("check-in of %s: %d %s", c.Name, r.status, r.raw)
	}
	d := r.data()
	checkFields(t, "check-in data", d, "container_id", "session_token", "context_keys")
	id := w.docker.Must(t, "inspect", "--format", "{{.Id}}", c.Name)
	if d["container_id"] != id {
		t.Errorf("check-in of %s: container_id %v, want its Docker id %s", c.Name, d["container_id"], id)
	}
	tok, _ := d["session_token"].(string)
	if !regexp.MustCompile(`^tok-[0-9a-f]{32}$`).MatchString(tok) {
		t.Errorf("check-in of %s: token %q is not tok- and 32 lowercase hex digits", c.Name, tok)
	}
	if keys := fmt.Sprint(d["context_keys"]); keys != "[action_type target metadata]" {
		t.Errorf("check-in of %s: context_keys %s", c.Name, keys)
	}
	return tok
}

// permission asks for a verdict with token and returns the reply,
// checking the verdict's fields.
func (w *world) permission(t *testing.T, c managed, token string, req api.PermissionRequest) agentReply {
	t.Helper()
	b, _ := json.Marshal(req)
	r := w.agentCall(t, c, token, "POST", api.AgentRoutePermission, string(b))
	if r.status == http.StatusOK {
		checkFields(t, "verdict", r.data(), "allowed", "matched_rule", "reason")
	}
	return r
}

// shim runs the mounted shim in c as `outcall args...`.
func (w *world) shim(t *testing.T, c managed, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stdout, stderr, code, err := w.docker.Run(ctx, append([]string{"exec", c.Name, "outcall"}, args...)...)
	if err != nil {
		t.Fatalf("outcall %v in %s: %v", args, c.Name, err)
	}
	return stdout, stderr, code
}

// exists reports whether path exists in c.
func (w *world) exists(t *testing.T, c managed, path string) bool {
	t.Helper()
	_, err := w.exec(t, c.Name, "test", "-e", path)
	return err == nil
}

// testVerdicts is (a): check-in, an allowed tool runs with its argv
// untouched, a blocked one never runs; the probes; the verdict's fields.
func testVerdicts(t *testing.T, w *world, c, other managed) {
	tok := w.checkin(t, c)
	if again := w.checkin(t, c); again != tok {
		t.Errorf("a second check-in gave another token (%s, then %s), want the same session", tok, again)
	}
	if tok2 := w.checkin(t, other); tok2 == tok {
		t.Errorf("two containers got the same token %s", tok)
	}

	// Positive control, then the same tool with the argument no rule
	// allows: it must not run.
	if _, errOut, code := w.shim(t, c, "exec", "touch", "/tmp/allowed"); code != 0 || !w.exists(t, c, "/tmp/allowed") {
		t.Fatalf("allowed `outcall exec touch /tmp/allowed`: exit %d, file there: %v\n%s", code, w.exists(t, c, "/tmp/allowed"), errOut)
	}
	_, errOut, code := w.shim(t, c, "exec", "touch", "/tmp/denied")
	if code != 1 || w.exists(t, c, "/tmp/denied") || !strings.Contains(errOut, "outcall-agent: action blocked — blocked by policy") {
		t.Errorf("blocked `outcall exec touch /tmp/denied`: exit %d (want 1), file there: %v, stderr %q", code, w.exists(t, c, "/tmp/denied"), errOut)
	}
	if _, _, code := w.shim(t, c, "rm", "/tmp/allowed"); code != 1 || !w.exists(t, c, "/tmp/allowed") {
		t.Errorf("blocked `outcall rm /tmp/allowed`: exit %d, file still there: %v", code, w.exists(t, c, "/tmp/allowed"))
	}
	// The argv reaches the program as given, with no shell between.
	args := []string{"$HOME", "a;b", "*", `"q"`, "x y", "-n"}
	out, errOut, code := w.shim(t, c, append([]string{"exec", "echo"}, args...)...)
	if want := strings.Join(args, " ") + "\n"; code != 0 || out != want {
		t.Errorf("`outcall exec echo %q`: exit %d, printed %q, want %q (stderr %q)", args, code, out, want, errOut)
	}
	// The shell form runs the program itself, not through a shell.
	if out, _, code := w.shim(t, c, "bash", "echo", "$HOME"); code != 0 || out != "$HOME\n" {
		t.Errorf("`outcall bash echo $HOME`: exit %d, printed %q", code, out)
	}
	// A failing child is exit 1, never its own code (which could be 5).
	if _, _, code := w.shim(t, c, "sleep", "x"); code != 1 {
		t.Errorf("allowed tool that fails: exit %d, want 1", code)
	}
	// Probes decide and do nothing.
	if _, _, code := w.shim(t, c, "fetch", "http://web.test/"); code != 0 {
		t.Errorf("`outcall fetch http://web.test/`: exit %d, want 0", code)
	}
	if _, _, code := w.shim(t, c, "fetch", "http://evil.test/"); code != 1 {
		t.Errorf("`outcall fetch http://evil.test/`: exit %d, want 1", code)
	}

	r := w.permission(t, c, tok, api.PermissionRequest{ActionType: api.ActionToolExec, Target: "echo"})
	if d := r.data(); r.status != 200 || d["allowed"] != true || d["matched_rule"] != "tools" || d["reason"] != nil {
		t.Errorf("allowed check: %d %s", r.status, r.raw)
	}
	r = w.permission(t, c, tok, api.PermissionRequest{ActionType: api.ActionShellExec, Target: "rm", Metadata: map[string]string{"args": "-rf /"}})
	if d := r.data(); r.status != 200 || d["allowed"] != false || d["matched_rule"] != "no-rm" || d["reason"] != api.ReasonBlocked {
		t.Errorf("blocked check: %d %s", r.status, r.raw)
	}
	r = w.permission(t, c, tok, api.PermissionRequest{ActionType: api.ActionToolExec, Target: "make"})
	if d := r.data(); r.status != 200 || d["allowed"] != false || d["matched_rule"] != nil {
		t.Errorf("default block: %d %s", r.status, r.raw)
	}
	for _, bad := range []struct {
		body   string
		status int
	}{
		{`{"action_type":"tool_exec"`, 400},
		{`{"action_type":"tool_exec","target":"x","extra":1}`, 400},
		{`{"action_type":"teleport","target":"x"}`, 400},
		{`{"action_type":"tool_exec","target":"  "}`, 422},
		{`{"action_type":"network_call","target":"ftp://web.test/"}`, 422},
	} {
		if r := w.agentCall(t, c, tok, "POST", api.AgentRoutePermission, bad.body); r.status != bad.status && !(bad.status == 400 && r.status == 422) {
			t.Errorf("permission body %s: %d %s, want %d", bad.body, r.status, r.raw, bad.status)
		}
	}
	if r := w.agentCall(t, c, tok, "GET", "/api/v1/bridge", ""); r.status != 404 {
		t.Errorf("a host API route on the agent socket: %d %s, want 404", r.status, r.raw)
	}
}

// testAgentMounts is S005-AS-010: the shim and the agent socket are
// there read-only with helper mounts, no host socket ever, and nothing
// without helper mounts.
func testAgentMounts(t *testing.T, w *world, c, plain managed) {
	if !w.exists(t, c, api.AgentSocketContainerPath) || !w.exists(t, c, api.ShimContainerPath) {
		t.Fatalf("helper mounts: socket there %v, shim there %v", w.exists(t, c, api.AgentSocketContainerPath), w.exists(t, c, api.ShimContainerPath))
	}
	if out, err := w.exec(t, c.Name, "sh", "-c", "echo x > "+api.ShimContainerPath); err == nil {
		t.Errorf("the shim is writable in the container: %s", out)
	}
	if w.exists(t, c, "/run/outcall/host.sock") || w.exists(t, c, w.socket) {
		t.Errorf("a host socket is in the container")
	}
	if out, err := w.exec(t, c.Name, "ls", "-A", "/run/outcall"); err != nil || out != "agent.sock" {
		t.Errorf("the container's /run/outcall holds %q (%v), want only agent.sock", out, err)
	}
	if out, err := w.exec(t, c.Name, "sh", "-c", "echo x > /run/outcall/other"); err == nil {
		t.Errorf("the agent socket's directory is writable in the container: %s", out)
	}
	if w.exists(t, plain, api.AgentSocketContainerPath) || w.exists(t, plain, api.ShimContainerPath) {
		t.Errorf("a container without helper mounts has the agent socket or the shim")
	}
}

// testAgentName is S013 across layers: the agents <prefix>-foo-1 and -2
// are both "<prefix>-foo" for the agent API, the DNS filter, the proxy and
// the datapath; <prefix>-bar-1 is not, and gets nothing the foo rules open.
func testAgentName(t *testing.T, w *world, foo1, foo2, bar managed) {
	gwDNS := netip.AddrPortFrom(w.gw, api.DefaultDNSPort)
	for _, c := range []managed{foo1, foo2, bar} {
		foo := c.Name != bar.Name
		_, _, code := w.shim(t, c, "exec", "id")
		if want := map[bool]int{true: 0, false: 1}[foo]; code != want {
			t.Errorf("agent API: `outcall exec id` in %s: exit %d, want %d", c.Name, code, want)
		}
		got := w.dnsFrom(t, c.Name, gwDNS, "foo.test")
		if foo != strings.HasPrefix(got, "NOERROR") {
			t.Errorf("DNS: foo.test from %s: %q", c.Name, got)
		}
		out, err := w.exec(t, c.Name, "timeout", "10", "wget", "-q", "-O", "-", "http://foo.test:8088/name")
		if foo != (err == nil && strings.Contains(out, "hello foo.test:8088 /name")) {
			t.Errorf("proxy: http://foo.test:8088/name from %s: %q %v", c.Name, out, err)
		}
		ok, greet := w.tcpFrom(t, c.Name, fooAddr)
		if foo != ok {
			t.Errorf("datapath: %s from %s: reached %v (%q)", fooAddr, c.Name, ok, greet)
		}
	}
}

// testRuleRequests is (b): a request waits for the operator; approved,
// the agent sees it and its rule decides; rejected, its rule stays out;
// another container never sees the request.
func testRuleRequests(t *testing.T, w *world, c, other managed) {
	tok := w.checkin(t, c)
	submit := func(id, tool string) string {
		t.Helper()
		file := fmt.Sprintf("version: \"1\"\nrules:\n  - id: %s\n    condition: 'run.tool == \"%s\"'\n    action: allow\n", id, tool)
		b, _ := json.Marshal(api.RuleRequestSubmission{RuleFile: file})
		r := w.agentCall(t, c, tok, "POST", api.AgentRouteRuleRequests, string(b))
		d := r.data()
		checkFields(t, "rule request", d, "id", "status", "reason")
		if r.status != http.StatusCreated || d["status"] != "pending" || d["reason"] != nil {
			t.Fatalf("submit: %d %s", r.status, r.raw)
		}
		return d["id"].(string)
	}
	status := func(tk, id string, from managed) agentReply {
		t.Helper()
		r := w.agentCall(t, from, tk, "GET", api.AgentRouteRuleRequests+"/"+id, "")
		if r.status == http.StatusOK {
			checkFields(t, "rule request status", r.data(), "id", "status", "reason")
		}
		return r
	}
	prefix := w.u.Prefix
	yes := submit(prefix+"-uname", "uname")
	no := submit(prefix+"-hostname", "hostname")
	if _, _, code := w.shim(t, c, "exec", "uname"); code != 1 {
		t.Errorf("`outcall exec uname` before approval: exit %d, want 1", code)
	}
	list := w.mustCLI(t, "requests", "list")
	if !strings.Contains(list, yes) || !strings.Contains(list, no) {
		t.Errorf("requests list lacks %s or %s:\n%s", yes, no, list)
	}
	if out := w.mustCLI(t, "requests", "approve", yes); !strings.HasPrefix(out, fmt.Sprintf("Rule request %q approved; ", yes)) {
		t.Errorf("approve printed %q", out)
	}
	if out := w.mustCLI(t, "requests", "reject", no, "--reason", "not for agents"); out != fmt.Sprintf("Rule request %q rejected.\n", no) {
		t.Errorf("reject printed %q", out)
	}
	if r := status(tok, yes, c); r.data()["status"] != "approved" {
		t.Errorf("status of the approved request: %d %s", r.status, r.raw)
	}
	if r := status(tok, no, c); r.data()["status"] != "rejected" || r.data()["reason"] != "not for agents" {
		t.Errorf("status of the rejected request: %d %s", r.status, r.raw)
	}
	if _, errOut, code := w.shim(t, c, "exec", "uname"); code != 0 {
		t.Errorf("`outcall exec uname` after approval: exit %d, want 0 (%s)", code, errOut)
	}
	if _, _, code := w.shim(t, c, "exec", "hostname"); code != 1 {
		t.Errorf("`outcall exec hostname` after rejection: exit %d, want 1", code)
	}
	// Another container, with its own valid session, asks for c's
	// request: not found, exactly as for an unknown id.
	otherTok := w.checkin(t, other)
	for _, id := range []string{yes, "rr-000000000000", "rr-../../etc"} {
		if r := status(otherTok, id, other); r.status != 404 || r.body["error"] != "rule request not found" {
			t.Errorf("status of %s from %s: %d %s, want 404 rule request not found", id, other.Name, r.status, r.raw)
		}
	}
	b, _ := json.Marshal(api.RuleRequestSubmission{RuleFile: "version: \"1\"\nrules:\n  - id: x\n    condition: 'run.tool =='\n    action: allow\n"})
	if r := w.agentCall(t, c, tok, "POST", api.AgentRouteRuleRequests, string(b)); r.status != 422 || !strings.HasPrefix(fmt.Sprint(r.body["error"]), "invalid request: ") {
		t.Errorf("invalid rule file: %d %s, want 422", r.status, r.raw)
	}
}

// testTokens is (c): a token works only from its own container; the host
// is no container at all.
func testTokens(t *testing.T, w *world, c, other managed) {
	tok := w.checkin(t, c)
	echo := api.PermissionRequest{ActionType: api.ActionToolExec, Target: "echo"}
	if r := w.permission(t, c, tok, echo); r.status != 200 {
		t.Fatalf("positive control: %s's own token: %d %s", c.Name, r.status, r.raw)
	}
	if r := w.permission(t, other, tok, echo); r.status != 403 || r.body["error"] != "session is not valid for this container" {
		t.Errorf("%s's token from %s: %d %s, want 403", c.Name, other.Name, r.status, r.raw)
	}
	if r := w.permission(t, other, "tok-"+strings.Repeat("0", 32), echo); r.status != 401 {
		t.Errorf("an unknown token: %d %s, want 401", r.status, r.raw)
	}
	if r := w.permission(t, other, "", echo); r.status != 401 || r.body["error"] != "invalid or missing session token" {
		t.Errorf("no token: %d %s, want 401", r.status, r.raw)
	}
	// The host: the test process itself, on the same socket file.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", w.agentSocket)
	}}}
	host := func(path, token, body string) (int, string) {
		req, _ := http.NewRequest("POST", "http://localhost"+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("host request: %v", err)
		}
		defer resp.Body.Close()
		var env api.Response[json.RawMessage]
		_ = json.NewDecoder(resp.Body).Decode(&env)
		return resp.StatusCode, env.Error
	}
	if code, msg := host(api.AgentRouteCheckin, "", "{}"); code != 403 || msg != "check-in rejected: peer is not a managed container" {
		t.Errorf("check-in from the host: %d %q, want 403", code, msg)
	}
	b, _ := json.Marshal(echo)
	if code, msg := host(api.AgentRoutePermission, tok, string(b)); code != 403 {
		t.Errorf("%s's token from the host: %d %q, want 403", c.Name, code, msg)
	}
}

// testRateLimits is (e): the limits answer 429 with Retry-After, refuse
// without counting, and let requests through again once the window
// slides.
func testRateLimits(t *testing.T, w *world) {
	c := w.create(t, w.u.Name("rate-1"), []string{"--helper-mounts"}, "sleep", "3600")
	tok := w.checkin(t, c)
	perm, _ := strconv.Atoi(strings.Split(agentPermRate, "/")[0])
	body, _ := json.Marshal(api.PermissionRequest{ActionType: api.ActionToolExec, Target: "echo"})
	// All in one exec, so the window cannot slide in between.
	script := fmt.Sprintf(`for i in $(seq %d); do agentcall -token %s POST %s '%s' | head -1; done`, perm+2, tok, api.AgentRoutePermission, body)
	out, err := w.exec(t, c.Name, "sh", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	codes := strings.Fields(out)
	want := append(slices.Repeat([]string{"200"}, perm), "429", "429")
	if !slices.Equal(codes, want) {
		t.Fatalf("%d permission checks in a burst: %v, want %v", perm+2, codes, want)
	}
	r := w.permission(t, c, tok, api.PermissionRequest{ActionType: api.ActionToolExec, Target: "echo"})
	secs, err := strconv.Atoi(r.retryAfter)
	if r.status != 429 || err != nil || secs < 1 || r.body["error"] != "rate limit exceeded for container "+w.docker.Must(t, "inspect", "--format", "{{.Id}}", c.Name) {
		t.Fatalf("over the limit: %d %s Retry-After %q", r.status, r.raw, r.retryAfter)
	}
	// Another container's budget is its own.
	other := w.create(t, w.u.Name("rate-2"), []string{"--helper-mounts"}, "sleep", "3600")
	if r := w.permission(t, other, w.checkin(t, other), api.PermissionRequest{ActionType: api.ActionToolExec, Target: "echo"}); r.status != 200 {
		t.Errorf("another container while the first is limited: %d %s", r.status, r.raw)
	}
	time.Sleep(time.Duration(secs)*time.Second + 200*time.Millisecond)
	if r := w.permission(t, c, tok, api.PermissionRequest{ActionType: api.ActionToolExec, Target: "echo"}); r.status != 200 {
		t.Errorf("after Retry-After (%ds): %d %s, want 200", secs, r.status, r.raw)
	}

	ruleN, _ := strconv.Atoi(strings.Split(agentRuleRate, "/")[0])
	var got []int
	for i := 0; i <= ruleN; i++ {
		b, _ := json.Marshal(api.RuleRequestSubmission{RuleFile: fmt.Sprintf("version: \"1\"\nrules:\n  - id: %s-rate-%d\n    condition: 'run.tool == \"w\"'\n    action: allow\n", w.u.Prefix, i)})
		got = append(got, w.agentCall(t, c, tok, "POST", api.AgentRouteRuleRequests, string(b)).status)
	}
	if want := append(slices.Repeat([]int{201}, ruleN), 429); !slices.Equal(got, want) {
		t.Errorf("%d rule submissions: %v, want %v", ruleN+1, got, want)
	}
}

// testTTLGrant is (f): an operator grant with a TTL opens exactly its
// destination, for exactly its container, and closes on time.
func testTTLGrant(t *testing.T, w *world, c, other managed) {
	// Long enough for the negative probes below (2 s each) to end
	// before it does.
	const ttl = 8 * time.Second
	other2 := netip.AddrPortFrom(directAddr, 443)
	w.aim(t, c.IP, c.Bridge, other2.Addr())
	mustReachRoot(t, w.u, other2)
	if ok, _ := w.tcpFrom(t, c.Name, deniedAddr); ok {
		t.Fatalf("%s reaches %s before any grant", c.Name, deniedAddr)
	}
	added := time.Now()
	w.mustCLI(t, "grant", "add", "--endpoint", c.Name, "--dst", deniedAddr.Addr().String(), "--proto", "tcp", "--port", "80", "--ttl", strconv.Itoa(int(ttl/time.Second)))
	// The daemon fixed the expiry somewhere in the call: between added+ttl
	// and added+addTook+ttl.
	addTook := time.Since(added)
	list := w.mustCLI(t, "grant", "list")
	if !strings.Contains(list, c.Name) || !strings.Contains(list, deniedAddr.Addr().String()) {
		t.Errorf("grant list lacks the grant:\n%s", list)
	}
	if ok, _ := w.tcpFrom(t, other.Name, deniedAddr); ok {
		t.Errorf("the grant of %s opened %s for %s", c.Name, deniedAddr, other.Name)
	}
	if ok, _ := w.tcpFrom(t, c.Name, other2); ok {
		t.Errorf("the grant to %s:80 opened %s", deniedAddr.Addr(), other2)
	}
	// Probe until it closes; a probe that started well before the expiry
	// must pass, one that started well after it must not.
	type probe struct {
		at time.Duration
		ok bool
	}
	var probes []probe
	for time.Since(added) < ttl+2*time.Second {
		at := time.Since(added)
		ok, _ := w.tcpFrom(t, c.Name, deniedAddr)
		probes = append(probes, probe{at, ok})
		time.Sleep(100 * time.Millisecond)
	}
	sort.Slice(probes, func(i, j int) bool { return probes[i].at < probes[j].at })
	sawOpen := false
	for _, p := range probes {
		switch {
		case p.ok && p.at > ttl+addTook+500*time.Millisecond:
			t.Errorf("a probe %v after the grant (TTL %v) got through", p.at.Round(time.Millisecond), ttl)
		case !p.ok && p.at < ttl-time.Second:
			t.Errorf("a probe %v after the grant (TTL %v) was refused", p.at.Round(time.Millisecond), ttl)
		case p.ok:
			sawOpen = true
		}
	}
	if !sawOpen {
		t.Errorf("no probe got through while the grant lived (%d probes)", len(probes))
	}
	var seen []string
	for _, p := range probes {
		seen = append(seen, fmt.Sprintf("%v:%v", p.at.Round(10*time.Millisecond), map[bool]string{true: "open", false: "closed"}[p.ok]))
	}
	t.Logf("TTL %v grant, probes from its add: %s", ttl, strings.Join(seen, " "))
	waitFor(t, 3*time.Second, "the expired grant to leave the list", func() bool {
		return !strings.Contains(w.mustCLI(t, "grant", "list"), deniedAddr.Addr().String())
	})
}

// testDaemonGone is (d): with outcalld stopped the shim exits 5 within a
// second and runs nothing; started again, the same container's shim works.
func testDaemonGone(t *testing.T, w *world, c managed) {
	// Positive control: the same command ran with the daemon up (in
	// testVerdicts); remove its file and try again without the daemon.
	if _, err := w.exec(t, c.Name, "rm", "-f", "/tmp/allowed"); err != nil {
		t.Fatal(err)
	}
	// A long allowed child runs under the shim when the daemon goes
	// (S005-AS-007): the shim must kill and reap it and exit 5 within a
	// heartbeat interval plus its timeout.
	const shimTimeout = 2
	w.docker.Must(t, "exec", "-d", "-e", fmt.Sprintf("%s=%d", api.ShimTimeoutEnv, shimTimeout), c.Name,
		"sh", "-c", "outcall exec sleep 3601 2>/dev/null; echo $? > /tmp/long-exit")
	waitFor(t, 10*time.Second, "the shim's child to run", func() bool { return w.sleeping(t, c) })
	if err := w.d.signal(syscall.SIGTERM); err != nil {
		t.Logf("outcalld after SIGTERM: %v", err)
	}
	stopped := time.Now()
	bound := (api.ShimHeartbeatSecs+shimTimeout)*time.Second + 2*time.Second
	waitFor(t, bound, "the shim of the long child to exit", func() bool { return w.exists(t, c, "/tmp/long-exit") })
	if out, _ := w.exec(t, c.Name, "cat", "/tmp/long-exit"); out != "5" {
		t.Errorf("the shim of a long child exited %q when the daemon went, want 5", out)
	}
	if w.sleeping(t, c) {
		t.Errorf("the shim's child still runs after the shim gave up")
	}
	t.Logf("the shim killed its child and exited %v after outcalld stopped", time.Since(stopped).Round(100*time.Millisecond))
	out, err := w.exec(t, c.Name, "agentcall", "-time", "outcall", "exec", "touch", "/tmp/allowed")
	if err != nil {
		t.Fatal(err)
	}
	var code, ms int
	if _, err := fmt.Sscanf(out[strings.LastIndex(out, "exit="):], "exit=%d ms=%d", &code, &ms); err != nil {
		t.Fatalf("agentcall -time printed %q", out)
	}
	t.Logf("shim with the daemon down: exit %d after %d ms", code, ms)
	if code != api.UnreachableExitCode || ms >= 1000 {
		t.Errorf("shim with the daemon down: exit %d after %d ms, want %d within 1 s", code, ms, api.UnreachableExitCode)
	}
	if w.exists(t, c, "/tmp/allowed") {
		t.Errorf("the shim ran its command with the daemon down")
	}

	// Back up, the same container's shim works again: it reaches the
	// new socket through its mounted directory (a socket bind-mounted as
	// a file would be the old, dead inode until the container is
	// recreated).
	w.start(t)
	restarted := time.Now()
	waitFor(t, 15*time.Second, "the shim in "+c.Name+" to work after outcalld's restart", func() bool {
		_, _, code := w.shim(t, c, "exec", "touch", "/tmp/allowed")
		return code == 0
	})
	t.Logf("shim works again %v after outcalld restarted", time.Since(restarted).Round(10*time.Millisecond))
	if !w.exists(t, c, "/tmp/allowed") {
		t.Errorf("the shim reported success after the restart but its command did not run")
	}
}

// testGrantDestinations: an operator grant to a CIDR and one to a host
// name (resolved through the daemon's upstream, the test's resolver) open
// their destinations for their container, and every grant of a container
// goes with it.
func testGrantDestinations(t *testing.T, w *world, c managed) {
	direct443 := netip.AddrPortFrom(directAddr, 443)
	w.aim(t, c.IP, c.Bridge, directAddr, deniedAddr.Addr())
	mustReachRoot(t, w.u, direct443, deniedAddr)
	if ok, _ := w.tcpFrom(t, c.Name, direct443); ok {
		t.Fatalf("%s reaches %s before any grant", c.Name, direct443)
	}
	w.mustCLI(t, "grant", "add", "--endpoint", c.Name, "--dst", "direct.test", "--proto", "tcp", "--port", "443")
	if ok, _ := w.tcpFrom(t, c.Name, direct443); !ok {
		t.Errorf("a grant to direct.test:443 does not open %s", direct443)
	}

	gone := w.create(t, w.u.Name("gone-1"), nil, "sleep", "3600")
	w.aim(t, gone.IP, gone.Bridge, deniedAddr.Addr())
	cidr := netip.PrefixFrom(deniedAddr.Addr(), 28).Masked().String()
	w.mustCLI(t, "grant", "add", "--endpoint", gone.Name, "--dst", cidr, "--proto", "tcp", "--port", "80")
	if ok, _ := w.tcpFrom(t, gone.Name, deniedAddr); !ok {
		t.Fatalf("a grant to %s does not open %s", cidr, deniedAddr)
	}
	if list := w.mustCLI(t, "grant", "list"); !strings.Contains(list, cidr) || !strings.Contains(list, "direct.test") {
		t.Errorf("grant list lacks %s or direct.test:\n%s", cidr, list)
	}
	w.mustCLI(t, "container", "remove", "--name", gone.Name, "--force")
	waitFor(t, 5*time.Second, "the removed container's grant to leave the list", func() bool {
		return !strings.Contains(w.mustCLI(t, "grant", "list"), cidr)
	})
	if list := w.mustCLI(t, "grant", "list"); !strings.Contains(list, "direct.test") {
		t.Errorf("removing %s took %s's grant too:\n%s", gone.Name, c.Name, list)
	}
}

// freeLoopbackPort returns a loopback address no one listens on now.
func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// testAgentMetrics: what the subtests before did shows in the daemon's
// metrics (issue 11 item 5): requests by route and outcome, decisions by
// rule, rate-limit rejections, live sessions, grants by source.
func testAgentMetrics(t *testing.T, addr string) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, resp.Body); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	value := func(series string) float64 {
		for _, l := range strings.Split(text, "\n") {
			if v, ok := strings.CutPrefix(l, series+" "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return -1
	}
	for _, series := range []string{
		`outcall_agent_requests_total{outcome="ok",route="checkin"}`,
		`outcall_agent_requests_total{outcome="created",route="rule_submit"}`,
		`outcall_agent_requests_total{outcome="not_found",route="rule_status"}`,
		`outcall_agent_requests_total{outcome="session_mismatch",route="permission_check"}`,
		`outcall_agent_requests_total{outcome="rate_limited",route="permission_check"}`,
		`outcall_agent_permission_decisions_total{decision="allow",rule_id="tools"}`,
		`outcall_agent_permission_decisions_total{decision="block",rule_id="no-rm"}`,
		`outcall_agent_permission_decisions_total{decision="block",rule_id="default-block"}`,
		`outcall_agent_rate_limited_total{operation="permission_check"}`,
		`outcall_agent_rate_limited_total{operation="rule_submit"}`,
		`outcall_agent_sessions`,
		`outcall_rule_hits_total{decision="allow",layer="agent",rule_id="tools"}`,
		`outcall_grants{source="operator"}`,
	} {
		if v := value(series); v < 1 {
			t.Errorf("%s = %v, want at least 1", series, v)
		}
	}
}

// sleeping reports whether the shim's long child, `sleep 3601` (the
// container itself runs `sleep 3600`), runs in c.
func (w *world) sleeping(t *testing.T, c managed) bool {
	t.Helper()
	out, _ := w.exec(t, c.Name, "ps", "-o", "args")
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == "sleep 3601" {
			return true
		}
	}
	return false
}
