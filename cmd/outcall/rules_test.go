package main

import (
	"errors"
	"os"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

const (
	rulesList = `{"success":true,"data":[` +
		`{"id":"allow-github-api","file":"00-base.yaml","action":"allow","condition_preview":"network.hostname == \"github.com\" &&\n  http.method in [\"GET\", \"POST\"] && http.path.startsWith(\"/api/v3\")","description":"Allow GitHub API access","priority":100,"level":"request"},` +
		`{"id":"block-force-push","file":"10-run.yaml","action":"block","condition_preview":"run.tool == \"git\" && \"-f\" in run.flags","description":null,"priority":100,"level":"request"},` +
		`{"id":"zz-all","file":"99-last.yml","action":"block","condition_preview":"true\u001b[2J","description":null,"priority":100,"level":"packet"}]}`
	ruleDetail = `{"success":true,"data":{"id":"allow-github-api","condition":"(network.hostname == \"github.com\") &&\nhttp.method in [\"GET\", \"POST\"]\n",` +
		`"action":"allow","log":true,"description":"Allow GitHub API access","priority":100,"file":"00-base.yaml","line":7,"level":"request",` +
		`"egress":{"mode":"direct_ip","ports":[80,443],"allow_private_ips":false}}}`
	ruleMinimal = `{"success":true,"data":{"id":"a/b","condition":"true","action":"block","log":false,"description":null,"priority":-5,` +
		`"file":"f.yaml","line":0,"level":"packet","egress":null}}`
	pendingList = `{"success":true,"data":[` +
		`{"id":"rr-aabbcc112233","container_id":"c0ffee","rule_file":"version: \"1\"\nrules:\n  - id: allow-pypi\n    condition: 'network.hostname == \"pypi.org\"'\n    action: allow\n","status":"pending","reason":null,"submitted_at":"2026-04-21T10:00:00Z"},` +
		`{"id":"rr-000000000001","container_id":"deadbeef0123","rule_file":"version: \"1\"\n# \u001b]0;pwned\u0007\u202e\n","status":"pending","reason":null,"submitted_at":"2026-04-21T10:05:00Z"}]}`
	evalAllow  = `{"success":true,"data":{"decision":"allow","matched_rule":"allow-github-api","file":"00-base.yaml","logged":false}}`
	evalBlock  = `{"success":true,"data":{"decision":"block","matched_rule":null,"file":null,"logged":false}}`
	githubCtx  = `{"network":{"hostname":"github.com","ip":"140.82.121.4","port":443,"protocol":"tcp"}}`
	daemonDown = "Error: cannot connect to outcalld at $MISSING -- is it running?\n"
)

// countingValidator reports one rule per file in the directory it is given,
// so a test sees that the command passed the right directory on.
func countingValidator(dir string) (api.ReloadResult, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return api.ReloadResult{}, err
	}
	return api.ReloadResult{FilesLoaded: len(entries), RulesLoaded: len(entries), PacketRules: 1,
		Warnings: []string{`unused definition "legacy_var" in 50-custom.yaml`}}, nil
}

func TestRulesCLI(t *testing.T) {
	runCases(t, []cliCase{
		// reload
		{
			name:     "reload",
			args:     []string{"rules", "reload"},
			routes:   map[string]string{"POST /api/v1/rules/reload": `{"success":true,"data":{"files_loaded":3,"rules_loaded":12,"packet_rules":4,"warnings":["unused definition \"legacy_var\" in 50-custom.yaml","file 60-x.yaml has definitions but no rules"]}}`},
			wantOut:  "Reloaded 12 rule(s) from 3 file(s).\nWarnings:\n  - unused definition \"legacy_var\" in 50-custom.yaml\n  - file 60-x.yaml has definitions but no rules\n",
			wantReqs: []string{"POST /api/v1/rules/reload"},
		},
		{
			name:     "reload without warnings",
			args:     []string{"rules", "reload"},
			routes:   map[string]string{"POST /api/v1/rules/reload": `{"success":true,"data":{"files_loaded":0,"rules_loaded":0,"packet_rules":0,"warnings":[]}}`},
			wantOut:  "Reloaded 0 rule(s) from 0 file(s).\n",
			wantReqs: []string{"POST /api/v1/rules/reload"},
		},
		{
			name:     "reload failure",
			args:     []string{"rules", "reload"},
			routes:   map[string]string{"POST /api/v1/rules/reload": `{"success":false,"error":"reload failed: CEL parse error in 50-custom.yaml rule \"bad-rule\": unexpected token at position 15. Previous rules remain active."}`},
			wantErr:  "Error: reload failed: CEL parse error in 50-custom.yaml rule \"bad-rule\": unexpected token at position 15. Previous rules remain active.\n",
			wantCode: 1,
			wantReqs: []string{"POST /api/v1/rules/reload"},
		},
		{
			name:     "reload with the daemon down",
			args:     []string{"rules", "reload", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},
		{
			name:     "reload with an argument",
			args:     []string{"rules", "reload", "now"},
			wantErr:  "Error: unknown command \"now\" for \"outcall rules reload\"\n",
			wantCode: 2,
		},
		{
			name:     "unknown rules subcommand",
			args:     []string{"rules", "frob"},
			wantErr:  "Error: unknown command \"frob\" for \"outcall rules\"\n",
			wantCode: 2,
		},

		// list
		{
			name:   "list",
			args:   []string{"rules", "list"},
			routes: map[string]string{"GET /api/v1/rules": rulesList},
			wantOut: "" +
				"ID                FILE          ACTION  LEVEL    CONDITION\n" +
				"allow-github-api  00-base.yaml  allow   request  network.hostname == \"github.com\" && http.method in [\"GET\"...\n" +
				"block-force-push  10-run.yaml   block   request  run.tool == \"git\" && \"-f\" in run.flags\n" +
				"zz-all            99-last.yml   block   packet   true\\x1b[2J\n",
			wantReqs: []string{"GET /api/v1/rules"},
		},
		{
			name:     "list empty",
			args:     []string{"rules", "list"},
			routes:   map[string]string{"GET /api/v1/rules": `{"success":true,"data":[]}`},
			wantOut:  "No rules loaded.\nEverything is blocked by default.\n",
			wantReqs: []string{"GET /api/v1/rules"},
		},
		{
			name:     "list null",
			args:     []string{"rules", "list"},
			routes:   map[string]string{"GET /api/v1/rules": `{"success":true,"data":null}`},
			wantOut:  "No rules loaded.\nEverything is blocked by default.\n",
			wantReqs: []string{"GET /api/v1/rules"},
		},
		{
			name:     "list with the daemon down",
			args:     []string{"rules", "list", "--socket=$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},

		// show
		{
			name:   "show",
			args:   []string{"rules", "show", "allow-github-api"},
			routes: map[string]string{"GET /api/v1/rule/allow-github-api": ruleDetail},
			wantOut: "" +
				"Rule:        allow-github-api\n" +
				"File:        00-base.yaml:7\n" +
				"Action:      allow\n" +
				"Priority:    100\n" +
				"Level:       request\n" +
				"Log:         yes\n" +
				"Description: Allow GitHub API access\n" +
				"Egress:      direct_ip ports 80,443 private ips no\n" +
				"Condition:\n" +
				"  (network.hostname == \"github.com\") &&\n" +
				"  http.method in [\"GET\", \"POST\"]\n",
			wantReqs: []string{"GET /api/v1/rule/allow-github-api"},
		},
		{
			name:   "show escapes the id and dashes what is absent",
			args:   []string{"rules", "show", "a/b"},
			routes: map[string]string{"GET /api/v1/rule/a%2Fb": ruleMinimal},
			wantOut: "" +
				"Rule:        a/b\n" +
				"File:        f.yaml\n" +
				"Action:      block\n" +
				"Priority:    -5\n" +
				"Level:       packet\n" +
				"Log:         no\n" +
				"Description: -\n" +
				"Egress:      -\n" +
				"Condition:\n" +
				"  true\n",
			wantReqs: []string{"GET /api/v1/rule/a%2Fb"},
		},
		{
			name:     "show unknown rule",
			args:     []string{"rules", "show", "nope"},
			routes:   map[string]string{"GET /api/v1/rule/nope": `{"success":false,"error":"rule not found: \"nope\""}`},
			wantErr:  "Error: rule not found: \"nope\"\n",
			wantCode: 1,
			wantReqs: []string{"GET /api/v1/rule/nope"},
		},
		{
			name:     "show without id",
			args:     []string{"rules", "show"},
			wantErr:  "Error: accepts 1 arg(s), received 0\n",
			wantCode: 2,
		},
		{
			name:     "show with two ids",
			args:     []string{"rules", "show", "a", "b"},
			wantErr:  "Error: accepts 1 arg(s), received 2\n",
			wantCode: 2,
		},
		{
			name:     "show with empty id",
			args:     []string{"rules", "show", ""},
			wantErr:  "Error: rule ID must not be empty\n",
			wantCode: 2,
		},

		// evaluate
		{
			name:     "evaluate allow",
			args:     []string{"rules", "evaluate", "--context", githubCtx},
			routes:   map[string]string{"POST /api/v1/rule/evaluate": evalAllow},
			wantOut:  "Decision: allow\nRule: allow-github-api (00-base.yaml)\n",
			wantReqs: []string{`POST /api/v1/rule/evaluate {"context":` + githubCtx + `}`},
		},
		{
			name:     "evaluate default block succeeds",
			args:     []string{"rules", "evaluate", "--context", ` {"dns":{"query":"evil.example.com","record_type":"A"}} `},
			routes:   map[string]string{"POST /api/v1/rule/evaluate": evalBlock},
			wantOut:  "Decision: block\nRule: none (default block)\n",
			wantReqs: []string{`POST /api/v1/rule/evaluate {"context":{"dns":{"query":"evil.example.com","record_type":"A"}}}`},
		},
		{
			name:     "evaluate context from a file",
			args:     []string{"rules", "evaluate", "--context-file", "$DIR/ctx.json"},
			files:    map[string]string{"ctx.json": "{\n  \"agent\": {\"name\": \"review-agent\"}\n}\n"},
			routes:   map[string]string{"POST /api/v1/rule/evaluate": evalBlock},
			wantOut:  "Decision: block\nRule: none (default block)\n",
			wantReqs: []string{`POST /api/v1/rule/evaluate {"context":{"agent":{"name":"review-agent"}}}`},
		},
		{
			name:     "evaluate context from stdin keeps numbers exact",
			args:     []string{"rules", "evaluate", "--context-file", "-"},
			stdin:    `{"run":{"tool":"git","args":[],"flags":["-f"],"cwd":"/w","context":{"pr":12345678901234567890,"ratio":0.5}}}`,
			routes:   map[string]string{"POST /api/v1/rule/evaluate": evalBlock},
			wantOut:  "Decision: block\nRule: none (default block)\n",
			wantReqs: []string{`POST /api/v1/rule/evaluate {"context":{"run":{"tool":"git","args":[],"flags":["-f"],"cwd":"/w","context":{"pr":12345678901234567890,"ratio":0.5}}}}`},
		},
		{
			name:     "evaluate with the bridge down",
			args:     []string{"rules", "evaluate", "--context", "{}"},
			routes:   map[string]string{"POST /api/v1/rule/evaluate": `{"success":false,"error":"rule evaluation unavailable: bridge is not up"}`},
			wantErr:  "Error: rule evaluation unavailable: bridge is not up\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/rule/evaluate {"context":{}}`},
		},
		{
			name:     "evaluate with the daemon down",
			args:     []string{"rules", "evaluate", "--context", "{}", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},
		{
			name:     "evaluate without context",
			args:     []string{"rules", "evaluate"},
			wantErr:  "Error: missing required flag --context or --context-file\n",
			wantCode: 2,
		},
		{
			name:     "evaluate with both contexts",
			args:     []string{"rules", "evaluate", "--context", "{}", "--context-file", "-"},
			wantErr:  "Error: --context and --context-file are mutually exclusive\n",
			wantCode: 2,
		},
		{
			name:     "evaluate with a syntax error",
			args:     []string{"rules", "evaluate", "--context", `{"network":{"port":443,}}`},
			wantErr:  "Error: invalid --context: invalid character '}' looking for beginning of object key string at byte offset 24\n",
			wantCode: 2,
		},
		{
			name:     "evaluate with an unknown field",
			args:     []string{"rules", "evaluate", "--context", `{"network":{"hostnme":"github.com"}}`},
			wantErr:  "Error: invalid --context: unknown field \"hostnme\"\n",
			wantCode: 2,
		},
		{
			name:     "evaluate with a wrong type",
			args:     []string{"rules", "evaluate", "--context", `{"network":{"port":"443"}}`},
			wantErr:  "Error: invalid --context: field network.port: cannot use JSON string as uint16 at byte offset 24\n",
			wantCode: 2,
		},
		{
			name:     "evaluate with a port out of range",
			args:     []string{"rules", "evaluate", "--context", `{"network":{"port":70000}}`},
			wantErr:  "Error: invalid --context: field network.port: cannot use JSON number 70000 as uint16 at byte offset 24\n",
			wantCode: 2,
		},
		{
			name:     "evaluate with trailing data",
			args:     []string{"rules", "evaluate", "--context", `{}  {}`},
			wantErr:  "Error: invalid --context: trailing data after the JSON object at byte offset 4\n",
			wantCode: 2,
		},
		{
			name:     "evaluate with truncated JSON",
			args:     []string{"rules", "evaluate", "--context", `{"network":`},
			wantErr:  "Error: invalid --context: unexpected end of JSON input at byte offset 11\n",
			wantCode: 2,
		},
		{
			name:     "evaluate with a non-object",
			args:     []string{"rules", "evaluate", "--context", `null`},
			wantErr:  "Error: invalid --context: must be a JSON object like {\"network\":{\"hostname\":\"github.com\"}}\n",
			wantCode: 2,
		},
		{
			name:     "evaluate with an empty stdin",
			args:     []string{"rules", "evaluate", "--context-file", "-"},
			wantErr:  "Error: invalid --context-file \"-\": must be a JSON object like {\"network\":{\"hostname\":\"github.com\"}}\n",
			wantCode: 2,
		},
		{
			name:     "evaluate with a missing file",
			args:     []string{"rules", "evaluate", "--context-file", "$DIR/nope.json"},
			wantErr:  "Error: invalid --context-file \"$DIR/nope.json\": no such file or directory\n",
			wantCode: 2,
		},
		{
			name:     "evaluate with a directory as file",
			args:     []string{"rules", "evaluate", "--context-file", "$DIR"},
			wantErr:  "Error: invalid --context-file \"$DIR\": is a directory\n",
			wantCode: 2,
		},
		{
			name:     "evaluate with an oversized context",
			args:     []string{"rules", "evaluate", "--context-file", "-"},
			stdin:    `{"agent":{"name":"` + strings.Repeat("a", maxContextBytes) + `"}}`,
			wantErr:  "Error: invalid --context-file \"-\": larger than 1048576 bytes\n",
			wantCode: 2,
		},

		// test
		{
			name: "test true",
			args: []string{"rules", "test", "--expr", `network.hostname == "github.com"`, "--context",
				`{"network":{"hostname":"github.com","ip":"1.2.3.4","port":443,"protocol":"tcp"}}`},
			routes:  map[string]string{"POST /api/v1/rule/test": `{"success":true,"data":{"result":true,"error":null}}`},
			wantOut: "Result: true\n",
			wantReqs: []string{`POST /api/v1/rule/test {"expression":"network.hostname == \"github.com\"",` +
				`"context":{"network":{"hostname":"github.com","ip":"1.2.3.4","port":443,"protocol":"tcp"}}}`},
		},
		{
			name:     "test false with the empty context",
			args:     []string{"rules", "test", "--expr", `dns.query == "x"`},
			routes:   map[string]string{"POST /api/v1/rule/test": `{"success":true,"data":{"result":false,"error":null}}`},
			wantOut:  "Result: false\n",
			wantReqs: []string{`POST /api/v1/rule/test {"expression":"dns.query == \"x\"","context":{}}`},
		},
		{
			name:     "test expression error",
			args:     []string{"rules", "test", "--expr", "network.port =="},
			routes:   map[string]string{"POST /api/v1/rule/test": `{"success":true,"data":{"result":false,"error":"CEL parse error: unexpected token at position 10"}}`},
			wantOut:  "Result: false\n",
			wantErr:  "Error: CEL parse error: unexpected token at position 10\n",
			wantCode: 1,
			wantReqs: []string{`POST /api/v1/rule/test {"expression":"network.port ==","context":{}}`},
		},
		{
			name:     "test without expression",
			args:     []string{"rules", "test", "--context", "{}"},
			wantErr:  "Error: missing required flag --expr\n",
			wantCode: 2,
		},
		{
			name:     "test with a bad context",
			args:     []string{"rules", "test", "--expr", "true", "--context", `{"htttp":{}}`},
			wantErr:  "Error: invalid --context: unknown field \"htttp\"\n",
			wantCode: 2,
		},
		{
			name:     "test with the daemon down",
			args:     []string{"rules", "test", "--expr", "true", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},

		// validate
		{
			name:     "validate",
			args:     []string{"rules", "validate", "$DIR"},
			files:    map[string]string{"00-base.yaml": "", "50-custom.yaml": ""},
			validate: countingValidator,
			wantOut:  "OK: 2 rule(s) from 2 file(s), 1 packet-level.\nWarnings:\n  - unused definition \"legacy_var\" in 50-custom.yaml\n",
		},
		{
			name: "validate failure",
			args: []string{"rules", "validate", "$DIR"},
			validate: func(string) (api.ReloadResult, error) {
				return api.ReloadResult{}, errors.New(`50-custom.yaml:4: rule "bad-rule": condition: Syntax error: mismatched input '<EOF>'`)
			},
			wantErr:  "Error: 50-custom.yaml:4: rule \"bad-rule\": condition: Syntax error: mismatched input '<EOF>'\n",
			wantCode: 1,
		},
		{
			name:     "validate needs no daemon",
			args:     []string{"rules", "validate", "$DIR", "--socket", "$MISSING"},
			validate: countingValidator,
			wantOut:  "OK: 0 rule(s) from 0 file(s), 1 packet-level.\nWarnings:\n  - unused definition \"legacy_var\" in 50-custom.yaml\n",
		},
		{
			name: "validate with the real loader",
			args: []string{"rules", "validate", "$DIR"},
			files: map[string]string{
				"00-base.yaml": "version: \"1\"\nrules:\n  - {id: db, condition: 'network.ip == \"192.0.2.5\" && network.port == 5432', action: allow}\n",
				"10-web.yml":   "version: \"1\"\nrules:\n  - {id: web, condition: 'http.host == \"example.com\"', action: allow}\n",
				"notes.json":   "{}",
			},
			wantOut: "OK: 2 rule(s) from 2 file(s), 1 packet-level.\n",
		},
		{
			name:     "validate with the real loader finds a bad rule",
			args:     []string{"rules", "validate", "$DIR"},
			files:    map[string]string{"50-custom.yaml": "version: \"1\"\nrules:\n  - id: bad-rule\n    condition: network.hostname ==\n    action: allow\n"},
			wantErr:  "Error: 50-custom.yaml:4: rule \"bad-rule\": condition: CEL error: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER} (condition line 1, column 20)\n",
			wantCode: 1,
		},
		{
			name:     "validate a missing directory",
			args:     []string{"rules", "validate", "$DIR/rulse.d"},
			validate: countingValidator,
			wantErr:  "Error: invalid rules directory \"$DIR/rulse.d\": no such file or directory\n",
			wantCode: 2,
		},
		{
			name:     "validate a file",
			args:     []string{"rules", "validate", "$DIR/00-base.yaml"},
			files:    map[string]string{"00-base.yaml": ""},
			validate: countingValidator,
			wantErr:  "Error: invalid rules directory \"$DIR/00-base.yaml\": not a directory\n",
			wantCode: 2,
		},
		{
			name:     "validate without directory",
			args:     []string{"rules", "validate"},
			wantErr:  "Error: accepts 1 arg(s), received 0\n",
			wantCode: 2,
		},
	})
}

func TestRequestsCLI(t *testing.T) {
	runCases(t, []cliCase{
		{
			name:   "list",
			args:   []string{"requests", "list"},
			routes: map[string]string{"GET /api/v1/requests/rules": pendingList},
			wantOut: "" +
				"ID               CONTAINER     STATUS\n" +
				"rr-aabbcc112233  c0ffee        pending\n" +
				"rr-000000000001  deadbeef0123  pending\n",
			wantReqs: []string{"GET /api/v1/requests/rules"},
		},
		{
			name:     "list empty",
			args:     []string{"requests", "list"},
			routes:   map[string]string{"GET /api/v1/requests/rules": `{"success":true,"data":[]}`},
			wantOut:  "No pending rule requests.\n",
			wantReqs: []string{"GET /api/v1/requests/rules"},
		},
		{
			name:     "list with the daemon down",
			args:     []string{"requests", "list", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},
		{
			name:   "show",
			args:   []string{"requests", "show", "rr-aabbcc112233"},
			routes: map[string]string{"GET /api/v1/requests/rules": pendingList},
			wantOut: "" +
				"Request:   rr-aabbcc112233\n" +
				"Container: c0ffee\n" +
				"Status:    pending\n" +
				"Submitted: 2026-04-21T10:00:00Z\n" +
				"Rule file:\n" +
				"  version: \"1\"\n" +
				"  rules:\n" +
				"    - id: allow-pypi\n" +
				"      condition: 'network.hostname == \"pypi.org\"'\n" +
				"      action: allow\n",
			wantReqs: []string{"GET /api/v1/requests/rules"},
		},
		{
			name:   "show escapes what a terminal would act on",
			args:   []string{"requests", "show", "rr-000000000001"},
			routes: map[string]string{"GET /api/v1/requests/rules": pendingList},
			wantOut: "" +
				"Request:   rr-000000000001\n" +
				"Container: deadbeef0123\n" +
				"Status:    pending\n" +
				"Submitted: 2026-04-21T10:05:00Z\n" +
				"Rule file:\n" +
				"  version: \"1\"\n" +
				"  # \\x1b]0;pwned\\a\\u202e\n",
			wantReqs: []string{"GET /api/v1/requests/rules"},
		},
		{
			name:     "show unknown",
			args:     []string{"requests", "show", "rr-x"},
			routes:   map[string]string{"GET /api/v1/requests/rules": pendingList},
			wantErr:  "Error: no pending rule request \"rr-x\"\n",
			wantCode: 1,
			wantReqs: []string{"GET /api/v1/requests/rules"},
		},
		{
			name:     "approve",
			args:     []string{"requests", "approve", "rr-aabbcc112233"},
			routes:   map[string]string{"POST /api/v1/requests/rules/rr-aabbcc112233/approve": `{"success":true,"data":{"id":"rr-aabbcc112233","rules_loaded":12}}`},
			wantOut:  "Rule request \"rr-aabbcc112233\" approved; 12 rule(s) loaded.\n",
			wantReqs: []string{"POST /api/v1/requests/rules/rr-aabbcc112233/approve"},
		},
		{
			name:     "approve unknown",
			args:     []string{"requests", "approve", "rr 0"},
			routes:   map[string]string{"POST /api/v1/requests/rules/rr%200/approve": `{"success":false,"error":"rule request \"rr 0\" not found"}`},
			wantErr:  "Error: rule request \"rr 0\" not found\n",
			wantCode: 1,
			wantReqs: []string{"POST /api/v1/requests/rules/rr%200/approve"},
		},
		{
			name:     "approve failure escapes control characters",
			args:     []string{"requests", "approve", "rr-1"},
			routes:   map[string]string{"POST /api/v1/requests/rules/rr-1/approve": `{"success":false,"error":"reload failed:\nagent-rr-1.yaml: bad \u001b[2J"}`},
			wantErr:  "Error: reload failed:\nagent-rr-1.yaml: bad \\x1b[2J\n",
			wantCode: 1,
			wantReqs: []string{"POST /api/v1/requests/rules/rr-1/approve"},
		},
		{
			name:     "approve without id",
			args:     []string{"requests", "approve"},
			wantErr:  "Error: accepts 1 arg(s), received 0\n",
			wantCode: 2,
		},
		{
			name:     "approve with empty id",
			args:     []string{"requests", "approve", ""},
			wantErr:  "Error: rule request ID must not be empty\n",
			wantCode: 2,
		},
		{
			name:     "approve with the daemon down",
			args:     []string{"requests", "approve", "rr-1", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},
		{
			name:     "reject",
			args:     []string{"requests", "reject", "rr-aabbcc112233"},
			routes:   map[string]string{"POST /api/v1/requests/rules/rr-aabbcc112233/reject": `{"success":true,"data":{"id":"rr-aabbcc112233"}}`},
			wantOut:  "Rule request \"rr-aabbcc112233\" rejected.\n",
			wantReqs: []string{"POST /api/v1/requests/rules/rr-aabbcc112233/reject"},
		},
		{
			name:     "reject with reason",
			args:     []string{"requests", "reject", "rr-1", "--reason", "Use the existing package mirror rule."},
			routes:   map[string]string{"POST /api/v1/requests/rules/rr-1/reject": `{"success":true,"data":{"id":"rr-1"}}`},
			wantOut:  "Rule request \"rr-1\" rejected.\n",
			wantReqs: []string{`POST /api/v1/requests/rules/rr-1/reject {"reason":"Use the existing package mirror rule."}`},
		},
		{
			name:     "reject with the longest reason",
			args:     []string{"requests", "reject", "rr-1", "--reason", strings.Repeat("é", api.MaxRejectReason/2)},
			routes:   map[string]string{"POST /api/v1/requests/rules/rr-1/reject": `{"success":true,"data":{"id":"rr-1"}}`},
			wantOut:  "Rule request \"rr-1\" rejected.\n",
			wantReqs: []string{`POST /api/v1/requests/rules/rr-1/reject {"reason":"` + strings.Repeat("é", api.MaxRejectReason/2) + `"}`},
		},
		{
			name:     "reject already completed",
			args:     []string{"requests", "reject", "rr-1"},
			routes:   map[string]string{"POST /api/v1/requests/rules/rr-1/reject": `{"success":false,"error":"rule request \"rr-1\" is not pending"}`},
			wantErr:  "Error: rule request \"rr-1\" is not pending\n",
			wantCode: 1,
			wantReqs: []string{"POST /api/v1/requests/rules/rr-1/reject"},
		},
		{
			name:     "reject with empty reason",
			args:     []string{"requests", "reject", "rr-1", "--reason", ""},
			wantErr:  "Error: invalid --reason: must not be empty\n",
			wantCode: 2,
		},
		{
			name:     "reject with a reason too long",
			args:     []string{"requests", "reject", "rr-1", "--reason", strings.Repeat("x", api.MaxRejectReason+1)},
			wantErr:  "Error: invalid --reason: 1025 bytes, at most 1024 allowed\n",
			wantCode: 2,
		},
		{
			name:     "reject with a control character",
			args:     []string{"requests", "reject", "rr-1", "--reason", "two\nlines"},
			wantErr:  "Error: invalid --reason: control character U+000A at byte 3 is not allowed\n",
			wantCode: 2,
		},
		{
			name:     "reject with invalid UTF-8",
			args:     []string{"requests", "reject", "rr-1", "--reason", "bad \xff"},
			wantErr:  "Error: invalid --reason: not valid UTF-8\n",
			wantCode: 2,
		},
		{
			name:     "reject with two ids",
			args:     []string{"requests", "reject", "rr-1", "rr-2"},
			wantErr:  "Error: accepts 1 arg(s), received 2\n",
			wantCode: 2,
		},
		{
			name:     "reject with the daemon down",
			args:     []string{"requests", "reject", "rr-1", "--socket", "$MISSING"},
			wantErr:  daemonDown,
			wantCode: 1,
		},
	})
}

func TestPrintable(t *testing.T) {
	tests := []struct {
		in           string
		keepNewlines bool
		want         string
	}{
		{"plain text é", false, "plain text é"},
		{"clear\x1b[2J", false, `clear\x1b[2J`},
		{"two\nlines\ttab", false, `two\nlines\ttab`},
		{"two\nlines\ttab", true, "two\nlines\\ttab"},
		{"\u202eevil", true, `\u202eevil`},
		{"c1 \u009b csi", false, `c1 \u009b csi`},
		{"raw \x9b byte", false, `raw \x9b byte`},
		{"replacement \uFFFD kept", false, "replacement \uFFFD kept"},
	}
	for _, tt := range tests {
		if got := printable(tt.in, tt.keepNewlines); got != tt.want {
			t.Errorf("printable(%q, %v) = %q, want %q", tt.in, tt.keepNewlines, got, tt.want)
		}
	}
}
