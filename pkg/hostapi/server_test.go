package hostapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
)

// fakeService records calls; the real Service is the daemon, exercised end
// to end in test/lab. The rule engine methods answer with fixed data, or with
// zero values and nil slices when empty is set, or with err.
type fakeService struct {
	Service
	added api.EndpointAddRequest
	calls []string
	empty bool
	// egress is what Rule returns when empty: the Service's own, which the
	// handler must not write to.
	egress *api.Egress
	// networks is what Networks returned last: the Service's own, which
	// the handler must not write to either.
	networks []api.NetworkStatus
	err      error
}

func (f *fakeService) BridgeStatus(context.Context) (api.BridgeStatus, error) {
	return api.BridgeStatus{Name: "outcall0"}, f.err
}

func (f *fakeService) AddEndpoint(_ context.Context, req api.EndpointAddRequest) (api.Endpoint, error) {
	f.added = req
	return api.Endpoint{Name: req.Name, Identity: 3}, f.err
}

func (f *fakeService) BridgeDown(_ context.Context, req api.BridgeDownRequest) error {
	f.record("BridgeDown", req)
	return f.err
}

func (f *fakeService) RemoveEndpoint(_ context.Context, name string) error {
	if name != "a b" {
		return errors.New("wrong name " + name)
	}
	return apikit.Wrap(apikit.ErrNotFound, errors.New("endpoint not found"))
}

func TestHandler(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		err                      error
		status                   int
		want                     string
	}{
		{"status down keeps null index", "GET", "/api/v1/bridge", "", nil, 200,
			`{"success":true,"data":{"name":"outcall0","up":false,"index":null,"nftables_active":false}}`},
		{"service error", "GET", "/api/v1/bridge", "", errors.New("netlink: boom"), 500, `{"success":false,"error":"netlink: boom"}`},
		{"add endpoint", "POST", "/api/v1/endpoints", `{"name":"a","interface":"v","ip":"10.200.0.2","mac":"02:00:00:00:00:02"}`, nil, 200,
			`{"success":true,"data":{"name":"a","interface":"","ip":"","mac":"","identity":3,"ifindex":0,"attached":false}}`},
		{"unknown field", "POST", "/api/v1/endpoints", `{"name":"a","nmae":"b"}`, nil, 400, `unknown field \"nmae\"`},
		{"trailing data", "POST", "/api/v1/endpoints", `{"name":"a"} {}`, nil, 400, "trailing data"},
		{"not json", "POST", "/api/v1/endpoints", `name=a`, nil, 400, "invalid request body"},
		{"status error", "DELETE", "/api/v1/endpoints/a%20b", "", nil, 404, `{"success":false,"error":"endpoint not found"}`},
		{"unknown route", "GET", "/api/v1/nope", "", nil, 404, `no route for GET /api/v1/nope`},
		{"wrong method", "DELETE", "/api/v1/bridge", "", nil, 404, `no route for DELETE /api/v1/bridge`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &fakeService{err: tt.err}
			rec := httptest.NewRecorder()
			Handler(svc, slog.New(slog.NewTextHandler(io.Discard, nil))).ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
			if rec.Code != tt.status {
				t.Errorf("status %d, want %d (%s)", rec.Code, tt.status, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("body %s, want it to contain %s", rec.Body, tt.want)
			}
		})
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "outcall", "host.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	l.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	l.Close()
	// A stale socket from a dead daemon is replaced.
	l2, err := Listen(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	// A regular file at the path is not ours to delete.
	file := filepath.Join(dir, "file.sock")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("regular file was touched")
	}
}

// record notes a rule engine or grant call with its arguments as JSON.
func (f *fakeService) record(method string, args ...any) {
	call := method
	for _, a := range args {
		b, _ := json.Marshal(a)
		call += " " + string(b)
	}
	f.calls = append(f.calls, call)
}

func ptr[T any](v T) *T { return &v }

func (f *fakeService) Evaluate(_ context.Context, c api.EvaluationContext) (api.EvaluateResult, error) {
	f.record("Evaluate", c)
	if f.empty {
		return api.EvaluateResult{Decision: api.DecisionBlock}, f.err
	}
	return api.EvaluateResult{Decision: api.DecisionAllow, MatchedRule: ptr("allow-github-api"), File: ptr("00-base.yaml")}, f.err
}

func (f *fakeService) Rules(context.Context) ([]api.RuleSummary, error) {
	f.record("Rules")
	if f.empty {
		return nil, f.err
	}
	return []api.RuleSummary{
		{ID: "allow-github-api", File: "00-base.yaml", Action: api.ActionAllow, ConditionPreview: `network.hostname == "github.com"`,
			Description: ptr("Allow GitHub API access"), Priority: 100, Level: api.LevelRequest},
		{ID: "block-all", File: "99-last.yaml", Action: api.ActionBlock, ConditionPreview: "true", Priority: 100, Level: api.LevelPacket},
	}, f.err
}

func (f *fakeService) Rule(_ context.Context, id string) (api.RuleDetail, error) {
	f.record("Rule", id)
	if f.empty {
		return api.RuleDetail{ID: id, Egress: f.egress}, f.err
	}
	return api.RuleDetail{ID: id, Condition: "true", Action: api.ActionAllow, Priority: 5, File: "00-base.yaml", Line: 4,
		Level: api.LevelPacket, Egress: &api.Egress{Mode: api.EgressDirectIP, Ports: []uint16{80, 443}}}, f.err
}

func (f *fakeService) ReloadRules(context.Context) (api.ReloadResult, error) {
	f.record("ReloadRules")
	if f.empty {
		return api.ReloadResult{}, f.err
	}
	return api.ReloadResult{FilesLoaded: 3, RulesLoaded: 12, PacketRules: 4, Warnings: []string{`unused definition "legacy_var" in 50-custom.yaml`}}, f.err
}

func (f *fakeService) TestExpression(_ context.Context, req api.TestExpressionRequest) (api.TestExpressionResult, error) {
	f.record("TestExpression", req)
	if f.empty {
		return api.TestExpressionResult{Error: ptr("CEL parse error: unexpected token at position 10")}, f.err
	}
	return api.TestExpressionResult{Result: true}, f.err
}

func (f *fakeService) RuleRequests(context.Context) ([]api.PendingRuleRequest, error) {
	f.record("RuleRequests")
	if f.empty {
		return nil, f.err
	}
	return []api.PendingRuleRequest{{ID: "rr-aabbcc112233", ContainerID: "c0ffee", RuleFile: "version: \"1\"\n",
		Status: api.RequestPending, SubmittedAt: "2026-04-21T10:00:00Z"}}, f.err
}

func (f *fakeService) ApproveRuleRequest(_ context.Context, id string) (api.ApproveResult, error) {
	f.record("ApproveRuleRequest", id)
	return api.ApproveResult{ID: id, RulesLoaded: 12}, f.err
}

func (f *fakeService) RejectRuleRequest(_ context.Context, id string, reason *string) (api.RejectResult, error) {
	f.record("RejectRuleRequest", id, reason)
	return api.RejectResult{ID: id}, f.err
}

// The grant routes share prefixes with the rule routes; the fake records
// them to show each request still reaches its own handler.
func (f *fakeService) ActiveRules(context.Context) ([]api.ActiveRule, error) {
	f.record("ActiveRules")
	return nil, f.err
}

func (f *fakeService) FlushRules(context.Context) (int, error) {
	f.record("FlushRules")
	return 2, f.err
}

func (f *fakeService) Allow(_ context.Context, req api.AllowRequest) (api.ActiveRule, error) {
	f.record("Allow", req)
	return api.ActiveRule{Container: req.Container, Destination: req.Destination}, f.err
}

func (f *fakeService) Revoke(_ context.Context, req api.RevokeRequest) error {
	f.record("Revoke", req)
	return f.err
}

// statusErr is an error of the kind the host API answers with status.
func statusErr(status int, msg string) error {
	kinds := map[int]*apikit.Kind{400: apikit.ErrInvalid, 404: apikit.ErrNotFound, 409: apikit.ErrConflict, 422: apikit.ErrUnprocessable}
	if k, ok := kinds[status]; ok {
		return apikit.Wrap(k, errors.New(msg))
	}
	return errors.New(msg) // 500
}

func TestRuleRoutes(t *testing.T) {
	const evalBody = `{"context":{"network":{"hostname":"github.com","ip":"140.82.121.4","port":443,"protocol":"tcp"},"agent":{"name":"review-agent"}}}`
	tests := []struct {
		name, method, path, body string
		empty                    bool
		err                      error
		status                   int
		want                     string // the exact response body
		wantCall                 string // the exact Service call; "" means none
	}{
		// evaluate
		{name: "evaluate allow", method: "POST", path: "/api/v1/rule/evaluate", body: evalBody, status: 200,
			want:     `{"success":true,"data":{"decision":"allow","matched_rule":"allow-github-api","file":"00-base.yaml","logged":false}}`,
			wantCall: `Evaluate {"network":{"hostname":"github.com","ip":"140.82.121.4","port":443,"protocol":"tcp"},"agent":{"name":"review-agent"}}`},
		{name: "evaluate default block keeps nulls", method: "POST", path: "/api/v1/rule/evaluate", body: `{"context":{}}`, empty: true, status: 200,
			want:     `{"success":true,"data":{"decision":"block","matched_rule":null,"file":null,"logged":false}}`,
			wantCall: `Evaluate {}`},
		{name: "evaluate bridge down", method: "POST", path: "/api/v1/rule/evaluate", body: evalBody,
			err: statusErr(409, "rule evaluation unavailable: bridge is not up"), status: 409,
			want:     `{"success":false,"error":"rule evaluation unavailable: bridge is not up"}`,
			wantCall: `Evaluate {"network":{"hostname":"github.com","ip":"140.82.121.4","port":443,"protocol":"tcp"},"agent":{"name":"review-agent"}}`},
		{name: "evaluate unknown field in context", method: "POST", path: "/api/v1/rule/evaluate", body: `{"context":{"network":{"hostnme":"github.com"}}}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: unknown field \"hostnme\""}`},
		{name: "evaluate unknown namespace", method: "POST", path: "/api/v1/rule/evaluate", body: `{"context":{"net":{}}}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: unknown field \"net\""}`},
		{name: "evaluate wrong type", method: "POST", path: "/api/v1/rule/evaluate", body: `{"context":{"network":{"port":"443"}}}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: cannot unmarshal string into Go struct field NetworkContext.context.network.port of type uint16"}`},

		// list and show
		{name: "rules", method: "GET", path: "/api/v1/rules", status: 200,
			want: `{"success":true,"data":[` +
				`{"id":"allow-github-api","file":"00-base.yaml","action":"allow","condition_preview":"network.hostname == \"github.com\"","description":"Allow GitHub API access","priority":100,"level":"request"},` +
				`{"id":"block-all","file":"99-last.yaml","action":"block","condition_preview":"true","description":null,"priority":100,"level":"packet"}]}`,
			wantCall: "Rules"},
		{name: "no rules is an empty list", method: "GET", path: "/api/v1/rules", empty: true, status: 200,
			want: `{"success":true,"data":[]}`, wantCall: "Rules"},
		{name: "rule", method: "GET", path: "/api/v1/rule/allow-github-api", status: 200,
			want: `{"success":true,"data":{"id":"allow-github-api","condition":"true","action":"allow","log":false,"description":null,"priority":5,` +
				`"file":"00-base.yaml","line":4,"level":"packet","egress":{"mode":"direct_ip","ports":[80,443],"allow_private_ips":false}}}`,
			wantCall: `Rule "allow-github-api"`},
		{name: "rule without ports lists none", method: "GET", path: "/api/v1/rule/r", empty: true, status: 200,
			want: `{"success":true,"data":{"id":"r","condition":"","action":"","log":false,"description":null,"priority":0,` +
				`"file":"","line":0,"level":"","egress":{"mode":"proxy","ports":[],"allow_private_ips":false}}}`,
			wantCall: `Rule "r"`},
		{name: "rule id is unescaped", method: "GET", path: "/api/v1/rule/a%2Fb%20c", err: statusErr(404, `rule not found: "a/b c"`), status: 404,
			want: `{"success":false,"error":"rule not found: \"a/b c\""}`, wantCall: `Rule "a/b c"`},
		{name: "rule without id", method: "GET", path: "/api/v1/rule/", status: 404,
			want: `{"success":false,"error":"no route for GET /api/v1/rule/"}`},

		// reload
		{name: "reload", method: "POST", path: "/api/v1/rules/reload", status: 200,
			want:     `{"success":true,"data":{"files_loaded":3,"rules_loaded":12,"packet_rules":4,"warnings":["unused definition \"legacy_var\" in 50-custom.yaml"]}}`,
			wantCall: "ReloadRules"},
		{name: "reload without warnings", method: "POST", path: "/api/v1/rules/reload", body: `{}`, empty: true, status: 200,
			want:     `{"success":true,"data":{"files_loaded":0,"rules_loaded":0,"packet_rules":0,"warnings":[]}}`,
			wantCall: "ReloadRules"},
		{name: "reload refuses a payload", method: "POST", path: "/api/v1/rules/reload", body: `{"force":true}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: unknown field \"force\""}`},
		{name: "reload failure", method: "POST", path: "/api/v1/rules/reload",
			err:    statusErr(500, `reload failed: CEL parse error in 50-custom.yaml rule "bad-rule": unexpected token at position 15. Previous rules remain active.`),
			status: 500, wantCall: "ReloadRules",
			want: `{"success":false,"error":"reload failed: CEL parse error in 50-custom.yaml rule \"bad-rule\": unexpected token at position 15. Previous rules remain active."}`},
		{name: "reload is POST only", method: "GET", path: "/api/v1/rules/reload", status: 404,
			want: `{"success":false,"error":"no route for GET /api/v1/rules/reload"}`},

		// test
		{name: "test expression", method: "POST", path: "/api/v1/rule/test",
			body: `{"expression":"network.port == 443","context":{"network":{"hostname":null,"ip":"1.2.3.4","port":443,"protocol":"tcp"}}}`, status: 200,
			want:     `{"success":true,"data":{"result":true,"error":null}}`,
			wantCall: `TestExpression {"expression":"network.port == 443","context":{"network":{"hostname":null,"ip":"1.2.3.4","port":443,"protocol":"tcp"}}}`},
		{name: "test expression error stays a success", method: "POST", path: "/api/v1/rule/test", body: `{"expression":"network.port =="}`, empty: true, status: 200,
			want:     `{"success":true,"data":{"result":false,"error":"CEL parse error: unexpected token at position 10"}}`,
			wantCall: `TestExpression {"expression":"network.port ==","context":{}}`},
		{name: "test expression unknown field", method: "POST", path: "/api/v1/rule/test", body: `{"expr":"true"}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: unknown field \"expr\""}`},

		// requests
		{name: "requests", method: "GET", path: "/api/v1/requests/rules", status: 200,
			want: `{"success":true,"data":[{"id":"rr-aabbcc112233","container_id":"c0ffee","rule_file":"version: \"1\"\n","status":"pending",` +
				`"reason":null,"submitted_at":"2026-04-21T10:00:00Z"}]}`,
			wantCall: "RuleRequests"},
		{name: "no requests is an empty list", method: "GET", path: "/api/v1/requests/rules", empty: true, status: 200,
			want: `{"success":true,"data":[]}`, wantCall: "RuleRequests"},
		{name: "approve", method: "POST", path: "/api/v1/requests/rules/rr-aabbcc112233/approve", status: 200,
			want: `{"success":true,"data":{"id":"rr-aabbcc112233","rules_loaded":12}}`, wantCall: `ApproveRuleRequest "rr-aabbcc112233"`},
		{name: "approve unknown", method: "POST", path: "/api/v1/requests/rules/rr-0/approve", err: statusErr(404, `rule request "rr-0" not found`), status: 404,
			want: `{"success":false,"error":"rule request \"rr-0\" not found"}`, wantCall: `ApproveRuleRequest "rr-0"`},
		{name: "approve completed", method: "POST", path: "/api/v1/requests/rules/rr-1/approve", err: statusErr(409, `rule request "rr-1" is not pending`), status: 409,
			want: `{"success":false,"error":"rule request \"rr-1\" is not pending"}`, wantCall: `ApproveRuleRequest "rr-1"`},
		{name: "approve refuses a payload", method: "POST", path: "/api/v1/requests/rules/rr-1/approve", body: `{"rule_id":"x"}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: unknown field \"rule_id\""}`},
		{name: "reject with reason", method: "POST", path: "/api/v1/requests/rules/rr-1/reject", body: `{"reason":"Use the existing package mirror rule."}`, status: 200,
			want: `{"success":true,"data":{"id":"rr-1"}}`, wantCall: `RejectRuleRequest "rr-1" "Use the existing package mirror rule."`},
		{name: "reject without body", method: "POST", path: "/api/v1/requests/rules/rr-1/reject", status: 200,
			want: `{"success":true,"data":{"id":"rr-1"}}`, wantCall: `RejectRuleRequest "rr-1" null`},
		{name: "reject with empty object", method: "POST", path: "/api/v1/requests/rules/rr-1/reject", body: `{}`, status: 200,
			want: `{"success":true,"data":{"id":"rr-1"}}`, wantCall: `RejectRuleRequest "rr-1" null`},
		{name: "reject bad reason", method: "POST", path: "/api/v1/requests/rules/rr-1/reject", body: `{"reason":""}`,
			err: statusErr(400, "reason must not be empty"), status: 400,
			want: `{"success":false,"error":"reason must not be empty"}`, wantCall: `RejectRuleRequest "rr-1" ""`},
		{name: "reject unknown field", method: "POST", path: "/api/v1/requests/rules/rr-1/reject", body: `{"reasn":"x"}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: unknown field \"reasn\""}`},
		{name: "request action unknown", method: "POST", path: "/api/v1/requests/rules/rr-1/deny", status: 404,
			want: `{"success":false,"error":"no route for POST /api/v1/requests/rules/rr-1/deny"}`},

		// the grant routes next to them
		{name: "active grants next to rules", method: "GET", path: "/api/v1/rules/active", status: 200,
			want: `{"success":true,"data":null}`, wantCall: "ActiveRules"},
		{name: "flush next to reload", method: "POST", path: "/api/v1/rules/flush", status: 200,
			want: `{"success":true,"data":{"removed":2}}`, wantCall: "FlushRules"},
		{name: "allow next to evaluate", method: "POST", path: "/api/v1/rule/allow", body: `{"container":"web","destination":"203.0.113.10"}`, status: 200,
			want:     `{"success":true,"data":{"container":"web","src_ip":"","destination":"203.0.113.10","port":null,"protocol":null,"nft_handle":0}}`,
			wantCall: `Allow {"container":"web","destination":"203.0.113.10"}`},
		{name: "revoke next to test", method: "POST", path: "/api/v1/rule/revoke", body: `{"container":"web","destination":"203.0.113.10"}`, status: 200,
			want: `{"success":true}`, wantCall: `Revoke {"container":"web","destination":"203.0.113.10"}`},
		{name: "GET of a grant verb is a rule lookup", method: "GET", path: "/api/v1/rule/allow", status: 200,
			want: `{"success":true,"data":{"id":"allow","condition":"true","action":"allow","log":false,"description":null,"priority":5,` +
				`"file":"00-base.yaml","line":4,"level":"packet","egress":{"mode":"direct_ip","ports":[80,443],"allow_private_ips":false}}}`,
			wantCall: `Rule "allow"`},
		{name: "POST to a rule id", method: "POST", path: "/api/v1/rule/allow-github-api", status: 404,
			want: `{"success":false,"error":"no route for POST /api/v1/rule/allow-github-api"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &fakeService{empty: tt.empty, err: tt.err, egress: &api.Egress{Mode: api.EgressProxy}}
			rec := httptest.NewRecorder()
			Handler(svc, slog.New(slog.NewTextHandler(io.Discard, nil))).ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
			if rec.Code != tt.status {
				t.Errorf("status %d, want %d", rec.Code, tt.status)
			}
			if svc.egress.Ports != nil {
				t.Error("handler wrote into the Service's Egress")
			}
			if got := strings.TrimSuffix(rec.Body.String(), "\n"); got != tt.want {
				t.Errorf("body:\n got %s\nwant %s", got, tt.want)
			}
			if got := strings.Join(svc.calls, "\n"); got != tt.wantCall {
				t.Errorf("service saw %q, want %q", got, tt.wantCall)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}
