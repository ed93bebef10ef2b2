package rulefile

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

// errWant is an expected *Error: every location field is compared exactly,
// msg is a substring of the wrapped error's text.
type errWant struct {
	file  string
	line  int
	rule  string
	field string
	msg   string
}

func checkError(t *testing.T, err error, want *errWant) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want %q", want.msg)
	}
	e, ok := err.(*Error)
	if !ok {
		t.Fatalf("error %v is a %T, want *Error", err, err)
	}
	got := errWant{e.File, e.Line, e.Rule, e.Field, ""}
	exp := *want
	exp.msg = ""
	if got != exp {
		t.Errorf("error location = %+v, want %+v (error: %v)", got, exp, err)
	}
	if e.Err == nil || !strings.Contains(e.Err.Error(), want.msg) {
		t.Errorf("error %q does not contain %q", err, want.msg)
	}
}

func ids(rules []Rule) []string {
	out := []string{}
	for _, r := range rules {
		out = append(out, r.ID)
	}
	return out
}

const custom = "50-custom.yaml"

// parseCase is one file for Parse. Error cases are named after what they
// break; check looks at the result of the good ones.
type parseCase struct {
	name  string
	src   string
	want  *errWant
	check func(t *testing.T, rules []Rule, warnings []string)
}

func wantRuleErr(line int, rule, field, msg string) *errWant {
	return &errWant{file: custom, line: line, rule: rule, field: field, msg: msg}
}

// rule1 builds a file with one rule whose lines after "- id: r" are given;
// the id is on line 3, the extra lines start at line 4.
func rule1(lines ...string) string {
	return "version: \"1\"\nrules:\n  - id: r\n" + indent(lines...)
}

func indent(lines ...string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

// withID builds a file with one valid rule whose id is written as given.
func withID(id string) string {
	return "version: \"1\"\nrules:\n  - id: " + id + "\n" + indent("condition: network.port == 443", "action: allow")
}

// okRule1 is rule1 with a valid condition and action first.
func okRule1(lines ...string) string {
	return rule1(append([]string{"condition: network.port == 443", "action: allow"}, lines...)...)
}

var parseCases = []parseCase{
	// Top level.
	{name: "version quoted", src: "version: \"1\"\n", check: func(t *testing.T, rules []Rule, w []string) {
		if rules == nil || len(rules) != 0 || w == nil || len(w) != 0 {
			t.Errorf("rules %v warnings %v, want empty non-nil", rules, w)
		}
	}},
	{name: "version unquoted", src: "version: 1\nrules: []\n"},
	{name: "version 2", src: "version: \"2\"\nrules: []\n", want: &errWant{custom, 1, "", "version", `unsupported version "2" (only "1" is supported)`}},
	{name: "version 1.0", src: "version: 1.0\n", want: &errWant{custom, 1, "", "version", `unsupported version "1.0"`}},
	{name: "version list", src: "version: [1]\n", want: &errWant{custom, 1, "", "version", `must be the string "1", got a list`}},
	{name: "version null", src: "version:\nrules: []\n", want: &errWant{custom, 1, "", "version", `got null`}},
	{name: "version missing", src: "# x\nrules: []\n", want: &errWant{custom, 2, "", "version", "missing version"}},
	{name: "version checked before other fields", src: "version: \"2\"\nfuture: {}\n", want: &errWant{custom, 1, "", "version", "unsupported version"}},
	{name: "empty file", src: "", want: &errWant{custom, 0, "", "version", "missing version"}},
	{name: "comments only", src: "# nothing here\n\n# still nothing\n", want: &errWant{custom, 0, "", "version", "missing version"}},
	{name: "null document", src: "~\n", want: &errWant{custom, 0, "", "version", "missing version"}},
	{name: "unknown top-level field", src: "version: \"1\"\nrule: []\n", want: &errWant{custom, 2, "", "", `unknown field "rule"`}},
	{name: "top-level enrich", src: "version: \"1\"\nenrich:\n  script: x.sh\n", want: &errWant{custom, 2, "", "", `"enrich" is reserved and not supported`}},
	{name: "rules mapping", src: "version: \"1\"\nrules: {}\n", want: &errWant{custom, 2, "", "rules", "must be a list, got a mapping"}},
	{name: "rules string", src: "version: \"1\"\nrules: none\n", want: &errWant{custom, 2, "", "rules", `must be a list, got string "none"`}},
	{name: "rules null", src: "version: \"1\"\nrules:\n"},
	{name: "top level list", src: "- version: \"1\"\n", want: &errWant{custom, 1, "", "", "top level must be a mapping"}},
	{name: "malformed YAML", src: "version: \"1\"\nrules:\n  - id: a\n   action: allow\n", want: &errWant{custom, 0, "", "", "malformed YAML: yaml: line"}},
	{name: "tab indentation", src: "version: \"1\"\nrules:\n\t- id: a\n", want: &errWant{custom, 0, "", "", "malformed YAML"}},
	{name: "duplicate top-level key", src: "version: \"1\"\nrules: []\nrules: []\n", want: &errWant{custom, 3, "", "", `duplicate field "rules" (first at line 2)`}},
	{name: "two documents", src: "version: \"1\"\n---\nversion: \"1\"\n", want: &errWant{custom, 0, "", "", "more than one YAML document"}},
	{name: "alias", src: "version: \"1\"\ndefinitions:\n  a: &x network.port == 1\n  b: *x\n", want: &errWant{custom, 4, "", "", "YAML aliases (*x) are not supported"}},
	{name: "merge key", src: "version: \"1\"\nrules:\n  - &base {id: a, condition: \"true\", action: allow}\n  - <<: *base\n    id: b\n", want: &errWant{custom, 4, "", "", "YAML aliases"}},
	{name: "file too large", src: "version: \"1\"\n#" + strings.Repeat("x", MaxFileSize) + "\n", want: &errWant{custom, 0, "", "", "larger than the limit of 1048576 bytes"}},
	{name: "file just under limit", src: "version: \"1\"\n#" + strings.Repeat("x", MaxFileSize-15) + "\n"},

	// Rule fields.
	{name: "full rule", src: rule1(
		"condition: |",
		"  network.hostname == \"github.com\" &&",
		"  network.port == 443",
		"action: allow",
		"priority: -5",
		"log: true",
		"description: GitHub over HTTPS",
	) + "  - id: second\n    condition: 'true'\n    action: block\n", check: func(t *testing.T, rules []Rule, _ []string) {
		desc := "GitHub over HTTPS"
		want := []Rule{{
			ID: "r", File: custom, Line: 3, ConditionLine: 5,
			Condition:    "network.hostname == \"github.com\" &&\nnetwork.port == 443\n",
			RawCondition: "network.hostname == \"github.com\" &&\nnetwork.port == 443\n",
			Action:       api.ActionAllow, Priority: -5, Log: true, Description: &desc,
		}, {
			ID: "second", File: custom, Line: 11, ConditionLine: 12, Condition: "true", RawCondition: "true",
			Action: api.ActionBlock, Priority: api.DefaultRulePriority, Position: 1,
		}}
		if !reflect.DeepEqual(rules, want) {
			t.Errorf("rules =\n%+v\nwant\n%+v", rules, want)
		}
	}},
	{name: "flow-style rule", src: "version: \"1\"\nrules: [{id: a, condition: \"true\", action: allow}]\n", check: func(t *testing.T, rules []Rule, _ []string) {
		if len(rules) != 1 || rules[0].Line != 2 || rules[0].ConditionLine != 2 {
			t.Errorf("rules %+v", rules)
		}
	}},
	{name: "missing id", src: "version: \"1\"\nrules:\n  - condition: \"true\"\n    action: allow\n", want: &errWant{custom, 3, "", "", `missing required field "id"`}},
	{name: "empty id", src: withID(`""`), want: &errWant{custom, 3, "", "id", `"" is not a valid rule ID`}},
	{name: "null id", src: withID(""), want: &errWant{custom, 3, "", "id", "must not be empty"}},
	{name: "id with space", src: withID("my rule"), want: &errWant{custom, 3, "", "id", `"my rule" is not a valid rule ID`}},
	{name: "id starting with dash", src: withID("-x"), want: &errWant{custom, 3, "", "id", "not a valid rule ID"}},
	{name: "id list", src: withID("[a]"), want: &errWant{custom, 3, "", "id", "must be a string, got a list"}},
	{name: "id too long", src: withID(strings.Repeat("a", MaxIDLength+1)), want: &errWant{custom, 3, "", "id", "not a valid rule ID"}},
	{name: "id longest and all characters", src: withID(strings.Repeat("a", MaxIDLength-7) + "Z9._:-x")},
	{name: "id number", src: withID("42"), check: func(t *testing.T, rules []Rule, _ []string) {
		if rules[0].ID != "42" {
			t.Errorf("id %q", rules[0].ID)
		}
	}},
	{name: "id written last names the rule", src: "version: \"1\"\nrules:\n  - action: allow\n    conditon: x\n    id: late\n", want: &errWant{custom, 4, "late", "", `unknown field "conditon"`}},
	{name: "missing condition", src: rule1("action: allow"), want: wantRuleErr(3, "r", "", `missing required field "condition"`)},
	{name: "empty condition", src: rule1("condition: \"  \"", "action: allow"), want: wantRuleErr(4, "r", "condition", "must not be empty")},
	{name: "null condition", src: rule1("condition:", "action: allow"), want: wantRuleErr(4, "r", "condition", "must not be empty")},
	{name: "condition list", src: rule1("condition: [a]", "action: allow"), want: wantRuleErr(4, "r", "condition", "must be a CEL expression (a string), got a list")},
	{name: "condition plain true", src: rule1("condition: true", "action: allow"), check: func(t *testing.T, rules []Rule, _ []string) {
		if rules[0].Condition != "true" {
			t.Errorf("condition %q", rules[0].Condition)
		}
	}},
	{name: "condition too long", src: rule1("condition: \""+strings.Repeat("x", MaxConditionSize+1)+"\"", "action: allow"), want: wantRuleErr(4, "r", "condition", "more than the limit of 65536 bytes")},
	{name: "missing action", src: rule1("condition: \"true\""), want: wantRuleErr(3, "r", "", `missing required field "action"`)},
	{name: "action enrich", src: rule1("condition: \"true\"", "action: enrich", "enrich:", "  script: hooks/check-repo.sh"), want: wantRuleErr(5, "r", "action", `"enrich" is reserved and not supported`)},
	{name: "enrich key", src: rule1("condition: \"true\"", "action: allow", "enrich:", "  script: hooks/check-repo.sh"), want: wantRuleErr(6, "r", "enrich", `"enrich" is reserved and not supported`)},
	{name: "enrich key null", src: rule1("enrich:", "condition: \"true\"", "action: allow"), want: wantRuleErr(4, "r", "enrich", "reserved")},
	{name: "action unknown", src: rule1("condition: \"true\"", "action: deny"), want: wantRuleErr(5, "r", "action", `"deny" is not a valid action (valid: allow, block)`)},
	{name: "action case", src: rule1("condition: \"true\"", "action: Allow"), want: wantRuleErr(5, "r", "action", `"Allow" is not a valid action`)},
	{name: "action bool", src: rule1("condition: \"true\"", "action: true"), want: wantRuleErr(5, "r", "action", "must be allow or block, got boolean true")},
	{name: "unknown rule field", src: rule1("conditon: \"true\"", "action: allow"), want: wantRuleErr(4, "r", "", `unknown field "conditon"`)},
	{name: "duplicate rule field", src: rule1("condition: \"true\"", "action: allow", "action: block"), want: wantRuleErr(6, "r", "", `duplicate field "action" (first at line 5)`)},
	{name: "rule not a mapping", src: "version: \"1\"\nrules:\n  - allow-all\n", want: &errWant{custom, 3, "", "rules", `each rule must be a mapping, got string "allow-all"`}},
	{name: "priority string", src: okRule1("priority: high"), want: wantRuleErr(6, "r", "priority", `must be an integer, got string "high"`)},
	{name: "priority float", src: okRule1("priority: 1.5"), want: wantRuleErr(6, "r", "priority", "must be an integer, got number 1.5")},
	{name: "priority huge", src: okRule1("priority: 99999999999999999999"), want: wantRuleErr(6, "r", "priority", "must be an integer")},
	{name: "priority too high", src: okRule1("priority: 1000001"), want: wantRuleErr(6, "r", "priority", "1000001 is out of range (-1000000 to 1000000)")},
	{name: "priority too low", src: okRule1("priority: -1000001"), want: wantRuleErr(6, "r", "priority", "out of range")},
	{name: "priority bounds and hex", src: "version: \"1\"\nrules:\n" +
		"  - {id: a, condition: \"true\", action: allow, priority: -1000000}\n" +
		"  - {id: b, condition: \"true\", action: allow, priority: 1000000}\n" +
		"  - {id: c, condition: \"true\", action: allow, priority: 0x10}\n" +
		"  - {id: d, condition: \"true\", action: allow, priority: null}\n", check: func(t *testing.T, rules []Rule, _ []string) {
		got := []int{rules[0].Priority, rules[1].Priority, rules[2].Priority, rules[3].Priority}
		if !reflect.DeepEqual(got, []int{-1000000, 1000000, 16, 100}) {
			t.Errorf("priorities %v", got)
		}
	}},
	{name: "log quoted yes", src: okRule1("log: \"yes\""), want: wantRuleErr(6, "r", "log", `must be true or false, got string "yes"`)},
	{name: "log plain yes", src: okRule1("log: yes"), want: wantRuleErr(6, "r", "log", `got string "yes"`)},
	{name: "log number", src: okRule1("log: 1"), want: wantRuleErr(6, "r", "log", "got integer 1")},
	{name: "log null", src: okRule1("log:"), check: func(t *testing.T, rules []Rule, _ []string) {
		if rules[0].Log {
			t.Error("log null is true")
		}
	}},
	{name: "description number", src: okRule1("description: 42"), want: wantRuleErr(6, "r", "description", "must be a string, got integer 42")},
	{name: "description control", src: okRule1("description: \"red \\e[31m\""), want: wantRuleErr(6, "r", "description", "control characters")},
	{name: "description too long", src: okRule1("description: " + strings.Repeat("d", MaxDescriptionSize+1)), want: wantRuleErr(6, "r", "description", "more than the limit of 4096 bytes")},
	{name: "description null", src: okRule1("description: ~"), check: func(t *testing.T, rules []Rule, _ []string) {
		if rules[0].Description != nil {
			t.Error("description set")
		}
	}},
	{name: "duplicate id in file", src: "version: \"1\"\nrules:\n  - {id: a, condition: \"true\", action: allow}\n  - {id: b, condition: \"true\", action: allow}\n  - {id: a, condition: \"true\", action: block}\n",
		want: &errWant{custom, 5, "a", "id", `duplicate rule ID "a" (also at 50-custom.yaml:3)`}},

	// Egress.
	{name: "egress proxy", src: okRule1("egress:", "  mode: proxy"), check: func(t *testing.T, rules []Rule, _ []string) {
		if want := (&api.Egress{Mode: api.EgressProxy}); !reflect.DeepEqual(rules[0].Egress, want) {
			t.Errorf("egress %+v", rules[0].Egress)
		}
	}},
	{name: "egress direct_ip default ports", src: okRule1("egress:", "  mode: direct_ip"), check: func(t *testing.T, rules []Rule, _ []string) {
		if want := (&api.Egress{Mode: api.EgressDirectIP, Ports: []uint16{80, 443}}); !reflect.DeepEqual(rules[0].Egress, want) {
			t.Errorf("egress %+v", rules[0].Egress)
		}
	}},
	{name: "egress direct_ip empty ports", src: okRule1("egress:", "  mode: direct_ip", "  ports: []", "  allow_private_ips: true"), check: func(t *testing.T, rules []Rule, _ []string) {
		if want := (&api.Egress{Mode: api.EgressDirectIP, Ports: []uint16{80, 443}, AllowPrivateIPs: true}); !reflect.DeepEqual(rules[0].Egress, want) {
			t.Errorf("egress %+v", rules[0].Egress)
		}
	}},
	{name: "egress direct_ip ports", src: okRule1("egress:", "  ports: [22, 65535, 1]", "  mode: direct_ip"), check: func(t *testing.T, rules []Rule, _ []string) {
		if want := (&api.Egress{Mode: api.EgressDirectIP, Ports: []uint16{22, 65535, 1}}); !reflect.DeepEqual(rules[0].Egress, want) {
			t.Errorf("egress %+v", rules[0].Egress)
		}
	}},
	{name: "egress null", src: okRule1("egress:"), check: func(t *testing.T, rules []Rule, _ []string) {
		if rules[0].Egress != nil {
			t.Errorf("egress %+v", rules[0].Egress)
		}
	}},
	{name: "egress on block", src: rule1("condition: \"true\"", "action: block", "egress:", "  mode: proxy"), want: wantRuleErr(7, "r", "egress", "only valid on allow rules")},
	{name: "egress intercept", src: okRule1("egress:", "  mode: intercept"), want: wantRuleErr(7, "r", "egress.mode", `"intercept" (TLS interception) is not implemented`)},
	{name: "egress bad mode", src: okRule1("egress:", "  mode: tunnel"), want: wantRuleErr(7, "r", "egress.mode", `"tunnel" is not a valid mode (valid: proxy, direct_ip)`)},
	{name: "egress no mode", src: okRule1("egress:", "  ports: [443]"), want: wantRuleErr(7, "r", "egress", `missing required field "mode"`)},
	{name: "egress string", src: okRule1("egress: proxy"), want: wantRuleErr(6, "r", "egress", `must be a mapping with a mode, got string "proxy"`)},
	{name: "egress ports with proxy", src: okRule1("egress:", "  mode: proxy", "  ports: [443]"), want: wantRuleErr(8, "r", "egress.ports", "only valid with mode direct_ip")},
	{name: "egress port zero", src: okRule1("egress:", "  mode: direct_ip", "  ports: [443, 0]"), want: wantRuleErr(8, "r", "egress.ports", "0 is not a port (1 to 65535)")},
	{name: "egress port too high", src: okRule1("egress:", "  mode: direct_ip", "  ports:", "    - 65536"), want: wantRuleErr(9, "r", "egress.ports", "65536 is not a port")},
	{name: "egress port string", src: okRule1("egress:", "  mode: direct_ip", "  ports: [\"443\"]"), want: wantRuleErr(8, "r", "egress.ports", `must be an integer, got string "443"`)},
	{name: "egress duplicate port", src: okRule1("egress:", "  mode: direct_ip", "  ports: [443, 80, 443]"), want: wantRuleErr(8, "r", "egress.ports", "duplicate port 443")},
	{name: "egress ports mapping", src: okRule1("egress:", "  mode: direct_ip", "  ports: {a: 1}"), want: wantRuleErr(8, "r", "egress.ports", "must be a list of ports, got a mapping")},
	{name: "egress private string", src: okRule1("egress:", "  mode: proxy", "  allow_private_ips: \"true\""), want: wantRuleErr(8, "r", "egress.allow_private_ips", `must be true or false, got string "true"`)},
	{name: "egress unknown field", src: okRule1("egress:", "  mode: proxy", "  port: 443"), want: wantRuleErr(8, "r", "egress", `unknown field "port"`)},
	{name: "egress enrich", src: okRule1("egress:", "  mode: proxy", "  enrich: {}"), want: wantRuleErr(8, "r", "egress.enrich", "reserved")},
	{name: "egress duplicate key", src: okRule1("egress:", "  mode: proxy", "  mode: direct_ip"), want: wantRuleErr(8, "r", "egress", `duplicate field "mode" (first at line 7)`)},

	// Definitions.
	{name: "definition expanded (AS-005)", src: "version: \"1\"\ndefinitions:\n  is_github: |\n    network.hostname == \"github.com\"\nrules:\n  - id: gh\n    condition: $is_github && http.path.startsWith(\"/api/v3\")\n    action: allow\n",
		check: func(t *testing.T, rules []Rule, w []string) {
			if want := `(network.hostname == "github.com") && http.path.startsWith("/api/v3")`; rules[0].Condition != want {
				t.Errorf("condition %q, want %q", rules[0].Condition, want)
			}
			if want := `$is_github && http.path.startsWith("/api/v3")`; rules[0].RawCondition != want {
				t.Errorf("raw condition %q", rules[0].RawCondition)
			}
			if len(w) != 0 {
				t.Errorf("warnings %v", w)
			}
		}},
	{name: "definitions nested and longest name", src: "version: \"1\"\ndefinitions:\n  a: x == 1\n  ab: $a || $a_b\n  a_b: y\nrules:\n  - id: r\n    condition: $ab.size() > 0 && $a\n    action: allow\n",
		check: func(t *testing.T, rules []Rule, w []string) {
			if want := `((x == 1) || (y)).size() > 0 && (x == 1)`; rules[0].Condition != want {
				t.Errorf("condition %q, want %q", rules[0].Condition, want)
			}
			if len(w) != 0 {
				t.Errorf("warnings %v", w)
			}
		}},
	{name: "no substitution in strings or comments", src: "version: \"1\"\ndefinitions:\n  d: z\nrules:\n  - id: r\n    condition: |\n" + indent(
		`  "$a" + '$b' + """$c""" + '''$d'''`,
		`  + r"$e" + R'$f' + b"$g" + br'$h' + rb"$i"`,
		`  + "esc \" $j" + 'esc \' $k' + r'raw \' + $d // $m "`,
		`  + """multi`,
		`  $n \""" still $o""" + '''x\''' $p'''`,
		`  + "" + $d + '' + $d + x.y$z`,
	) + "    action: allow\n",
		want: wantRuleErr(7, "r", "condition", `undefined variable "$z"`)},
	{name: "strings keep dollar text", src: "version: \"1\"\ndefinitions:\n  d: z\nrules:\n  - id: r\n    condition: '\"$HOME\" == run.cwd && r\"\\$x\" != $d // $y costs ''$''\n\n      && $ && $1'\n    action: allow\n",
		check: func(t *testing.T, rules []Rule, _ []string) {
			want := "\"$HOME\" == run.cwd && r\"\\$x\" != (z) // $y costs '$'\n&& $ && $1"
			if rules[0].Condition != want {
				t.Errorf("condition %q, want %q", rules[0].Condition, want)
			}
		}},
	{name: "definition ending in comment", src: "version: \"1\"\ndefinitions:\n  d: \"x == 1 // note\"\n  e: |\n    $d // outer\nrules:\n  - id: r\n    condition: $e && y\n    action: allow\n",
		check: func(t *testing.T, rules []Rule, _ []string) {
			if want := "((x == 1 // note\n) // outer\n) && y"; rules[0].Condition != want {
				t.Errorf("condition %q, want %q", rules[0].Condition, want)
			}
		}},
	{name: "definition number", src: "version: \"1\"\ndefinitions:\n  https: 443\nrules:\n  - id: r\n    condition: network.port == $https\n    action: allow\n",
		check: func(t *testing.T, rules []Rule, _ []string) {
			if rules[0].Condition != "network.port == (443)" {
				t.Errorf("condition %q", rules[0].Condition)
			}
		}},
	{name: "undefined in rule (EC-009)", src: "version: \"1\"\nrules:\n  - id: r\n    action: allow\n    condition: |\n      x &&\n      $nope\n", want: wantRuleErr(6, "r", "condition", `undefined variable "$nope"`)},
	{name: "undefined in definition", src: "version: \"1\"\ndefinitions:\n  a: x\n  b: $a && $missing\nrules: []\n", want: &errWant{custom, 4, "", "definitions.b", `undefined variable "$missing"`}},
	{name: "undefined in unused definition", src: "version: \"1\"\ndefinitions:\n  a: $missing\nrules:\n  - {id: r, condition: \"true\", action: allow}\n", want: &errWant{custom, 3, "", "definitions.a", `undefined variable "$missing"`}},
	{name: "cycle (EC-010)", src: "version: \"1\"\ndefinitions:\n  a: $b\n  b: $a\nrules:\n  - {id: r, condition: $a, action: allow}\n", want: &errWant{custom, 3, "", "definitions", "cycle in definitions: a -> b -> a"}},
	{name: "self cycle", src: "version: \"1\"\ndefinitions:\n  a: x || $a\nrules: []\n", want: &errWant{custom, 3, "", "definitions", "cycle in definitions: a -> a"}},
	{name: "cycle behind a chain", src: "version: \"1\"\ndefinitions:\n  x: $a\n  a: $b\n  b: $c\n  c: $a\nrules: []\n", want: &errWant{custom, 4, "", "definitions", "cycle in definitions: a -> b -> c -> a"}},
	{name: "invalid definition name", src: "version: \"1\"\ndefinitions:\n  is-github: x\n", want: &errWant{custom, 3, "", "definitions", `invalid definition name "is-github"`}},
	{name: "definition name digit", src: "version: \"1\"\ndefinitions:\n  1a: x\n", want: &errWant{custom, 3, "", "definitions", `invalid definition name "1a"`}},
	{name: "definition list", src: "version: \"1\"\ndefinitions:\n  a: [x]\n", want: &errWant{custom, 3, "", "definitions.a", "must be a CEL expression"}},
	{name: "definition empty", src: "version: \"1\"\ndefinitions:\n  a: \"\"\n", want: &errWant{custom, 3, "", "definitions.a", "must not be empty"}},
	{name: "definitions list", src: "version: \"1\"\ndefinitions: [a]\n", want: &errWant{custom, 2, "", "definitions", "must be a mapping of name to CEL expression, got a list"}},
	{name: "duplicate definition", src: "version: \"1\"\ndefinitions:\n  a: x\n  a: y\n", want: &errWant{custom, 4, "", "definitions", `duplicate definition "a" (first at line 3)`}},
	{name: "unused definition (AS-008)", src: "version: \"1\"\ndefinitions:\n  is_github: network.hostname == \"github.com\"\n  legacy_var: x\n  helper: y\n  only_by_unused: z\n  unused_top: $only_by_unused\n  used_top: $helper\nrules:\n  - {id: r, condition: $is_github || $used_top, action: allow}\n",
		check: func(t *testing.T, _ []Rule, w []string) {
			want := []string{
				`unused definition "legacy_var" in 50-custom.yaml`,
				`unused definition "only_by_unused" in 50-custom.yaml`,
				`unused definition "unused_top" in 50-custom.yaml`,
			}
			if !reflect.DeepEqual(w, want) {
				t.Errorf("warnings %q, want %q", w, want)
			}
		}},
	{name: "definitions without rules (EC-011)", src: "version: \"1\"\ndefinitions:\n  a: x\n  b: y\n", check: func(t *testing.T, rules []Rule, w []string) {
		if want := []string{"50-custom.yaml has definitions but no rules"}; len(rules) != 0 || !reflect.DeepEqual(w, want) {
			t.Errorf("rules %v warnings %q, want %q", rules, w, want)
		}
	}},
	{name: "exponential expansion", src: expFile(20), want: &errWant{custom, 18, "", "definitions.d15", "expands to more than 262144 bytes"}},
	{name: "expansion within limit", src: expFile(10), check: func(t *testing.T, rules []Rule, _ []string) {
		if n := len(rules[0].Condition); n < 1024 || n > MaxExpandedSize {
			t.Errorf("expanded length %d", n)
		}
	}},
	{name: "expansion total per file", src: bigFile(50), want: wantRuleErr(45, "r39", "condition", "more than 8388608 bytes (8 MiB) in total")},
	{name: "expansion total just fits", src: bigFile(39)},
}

// expFile nests n definitions that each use the previous one twice, so the
// condition on line n+4 doubles n times.
func expFile(n int) string {
	var b strings.Builder
	b.WriteString("version: \"1\"\ndefinitions:\n  d0: x\n")
	for i := 1; i <= n; i++ {
		b.WriteString("  d" + strconv.Itoa(i) + ": $d" + strconv.Itoa(i-1) + " || $d" + strconv.Itoa(i-1) + "\n")
	}
	b.WriteString("rules:\n  - id: r\n    condition: $d" + strconv.Itoa(n) + "\n    action: allow\n")
	return b.String()
}

// bigFile has n rules that each expand to about 200 KiB.
func bigFile(n int) string {
	var b strings.Builder
	b.WriteString("version: \"1\"\ndefinitions:\n  x: \"" + strings.Repeat("a", 50<<10) + "\"\n  y: $x + $x + $x + $x\nrules:\n")
	for i := 0; i < n; i++ {
		b.WriteString("  - {id: r" + strconv.Itoa(i) + ", condition: $y, action: allow}\n")
	}
	return b.String()
}

func TestParse(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			rules, warnings, err := Parse(custom, []byte(tc.src))
			checkError(t, err, tc.want)
			if err != nil {
				if rules != nil || warnings != nil {
					t.Errorf("partial result on error: %v %v", rules, warnings)
				}
				return
			}
			if tc.check != nil {
				tc.check(t, rules, warnings)
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	inner := errors.New("boom")
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{"50-custom.yaml", 7, "bad", "action", inner}, `50-custom.yaml:7: rule "bad": action: boom`},
		{Error{"00-base.yaml", 5, "x", "", inner}, `00-base.yaml:5: rule "x": boom`},
		{Error{"a.yaml", 0, "", "version", inner}, `a.yaml: version: boom`},
		{Error{"", 3, "", "", inner}, `line 3: boom`},
		{Error{"a.yaml", 0, "", "", inner}, `a.yaml: boom`},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
		if !errors.Is(&tc.e, inner) {
			t.Errorf("%q does not unwrap to its cause", tc.want)
		}
	}
	// The message a rule author sees for the spec's two main mistakes.
	_, _, err := Parse("50-custom.yaml", []byte("version: \"1\"\nrules:\n  - id: ok\n    condition: \"true\"\n    action: allow\n  - id: bad\n    condition: \"true\"\n    action: enrich\n"))
	if want := `50-custom.yaml:8: rule "bad": action: "enrich" is reserved and not supported`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("enrich error %q, want prefix %q", err, want)
	}
	_, _, err = Parse("00-base.yaml", []byte("version: \"1\"\nrules:\n  - id: x\n    action: allow\n    conditon: \"true\"\n"))
	if want := `00-base.yaml:5: rule "x": unknown field "conditon"`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("unknown field error %q, want prefix %q", err, want)
	}
}

func TestScanCEL(t *testing.T) {
	for _, tc := range []struct {
		text    string
		names   []string
		comment bool
	}{
		{"$a && $b_1.x", []string{"a", "b_1"}, false},
		{"'$a' + \"$b\" + $c", []string{"c"}, false},
		{`"\\" + $a`, []string{"a"}, false},
		{`"\"$a" + $b`, []string{"b"}, false},
		{`r"\" + $a`, []string{"a"}, false},
		{`'''it's $a''' + $b`, []string{"b"}, false},
		{`"""a "" $a """ + $b`, []string{"b"}, false},
		{`"""a \""" $a """ + $b`, []string{"b"}, false},
		{`r'''\''' + $b`, []string{"b"}, false},
		{`Br'$a' + bar'$b' + $c`, []string{"c"}, false}, // bar' is no prefix: '$b' still a string
		{`rr'$a' + $b`, []string{"b"}, false},
		{"'unterminated $a\n + $b", []string{"b"}, false},
		{"\"open $a", nil, false},
		{"$a // $b", []string{"a"}, true},
		{"$a // $b\n$c", []string{"a", "c"}, false},
		{"x / $a / 2", []string{"a"}, false},
		{"$ $1 $$a a$b", []string{"a", "b"}, false},
		{"$", nil, false},
	} {
		refs, comment := scanCEL(tc.text)
		var names []string
		for _, r := range refs {
			if tc.text[r.start:r.end] != "$"+r.name {
				t.Errorf("%q: ref %+v does not span $%s", tc.text, r, r.name)
			}
			names = append(names, r.name)
		}
		if !reflect.DeepEqual(names, tc.names) || comment != tc.comment {
			t.Errorf("scanCEL(%q) = %q, %v; want %q, %v", tc.text, names, comment, tc.names, tc.comment)
		}
	}
}

// dirCase is one rules directory for LoadDir.
type dirCase struct {
	name  string
	files map[string]string
	setup func(t *testing.T, dir string) // extra entries (symlinks, FIFOs...)
	want  *errWant
	// Expected result when want is nil.
	files2   []string // Set.Files
	ids      []string // Set.Rules IDs in evaluation order
	warnings []string // substrings, in order
}

func ruleFile(rules ...string) string {
	return "version: \"1\"\nrules:\n" + strings.Join(rules, "")
}

func r(id string, extra ...string) string {
	s := "  - id: " + id + "\n    condition: \"true\"\n    action: allow\n"
	for _, e := range extra {
		s += "    " + e + "\n"
	}
	return s
}

var dirCases = []dirCase{
	{name: "extensions", files: map[string]string{
		"a.yaml": ruleFile(r("a")), "b.yml": ruleFile(r("b")),
		"c.json": "{", "d.txt": "junk", "E.YAML": "junk", "f.yaml.bak": "junk", "g.yaml~": "junk", "README": "junk",
	}, files2: []string{"a.yaml", "b.yml"}, ids: []string{"a", "b"}},
	{name: "dotfiles skipped", files: map[string]string{
		"00-base.yaml": ruleFile(r("a")), ".00-base.yaml.swp": "junk", ".hidden.yaml": "junk", ".#00-base.yaml": "junk",
	}, files2: []string{"00-base.yaml"}, ids: []string{"a"}},
	{name: "subdirectories skipped", files: map[string]string{"a.yaml": ruleFile(r("a"))}, setup: func(t *testing.T, dir string) {
		mkdir(t, filepath.Join(dir, "sub.yaml"))
		write(t, filepath.Join(dir, "sub.yaml", "b.yaml"), ruleFile(r("b")))
		mkdir(t, filepath.Join(dir, "nested"))
		write(t, filepath.Join(dir, "nested", "c.yaml"), "junk")
	}, files2: []string{"a.yaml"}, ids: []string{"a"}},
	{name: "symlinks followed", files: map[string]string{"a.yaml": ruleFile(r("a"))}, setup: func(t *testing.T, dir string) {
		other := t.TempDir()
		write(t, filepath.Join(other, "target.txt"), ruleFile(r("linked")))
		symlink(t, filepath.Join(other, "target.txt"), filepath.Join(dir, "b.yaml"))
		symlink(t, other, filepath.Join(dir, "c.yaml"))
	}, files2: []string{"a.yaml", "b.yaml"}, ids: []string{"a", "linked"}},
	{name: "dangling symlink", files: map[string]string{"a.yaml": ruleFile(r("a"))}, setup: func(t *testing.T, dir string) {
		symlink(t, filepath.Join(dir, "gone"), filepath.Join(dir, "b.yaml"))
	}, want: &errWant{"b.yaml", 0, "", "", "no such file or directory"}},
	{name: "FIFO", setup: func(t *testing.T, dir string) {
		if err := syscall.Mkfifo(filepath.Join(dir, "a.yaml"), 0o600); err != nil {
			t.Fatal(err)
		}
	}, want: &errWant{"a.yaml", 0, "", "", "is not a regular file"}},
	{name: "read error", setup: func(t *testing.T, dir string) {
		// Reading one's own memory at address 0 fails with EIO, even as root.
		symlink(t, "/proc/self/mem", filepath.Join(dir, "a.yaml"))
	}, want: &errWant{"a.yaml", 0, "", "", "read rule file"}},
	{name: "too large on disk", files: map[string]string{"a.yaml": "version: \"1\"\n#" + strings.Repeat("x", 2*MaxFileSize)},
		want: &errWant{"a.yaml", 0, "", "", "larger than the limit"}},
	{name: "empty directory (EC-006)", files2: []string{}, ids: []string{}, warnings: []string{"no rule files (*.yaml, *.yml) in "}},
	{name: "only other files (EC-020)", files: map[string]string{"rules.json": "{}", "notes.txt": "x"}, files2: []string{}, ids: []string{}, warnings: []string{"no rule files"}},
	{name: "files without rules", files: map[string]string{"00-default.yaml": "version: \"1\"\nrules: []\n"}, files2: []string{"00-default.yaml"}, ids: []string{}},
	{name: "load order (AS-011)", files: map[string]string{
		"50-custom.yaml": ruleFile(r("custom-1"), r("custom-2")),
		"00-base.yaml":   ruleFile(r("base-1"), r("base-2")),
		"25-team.yml":    ruleFile(r("team-1")),
	}, files2: []string{"00-base.yaml", "25-team.yml", "50-custom.yaml"}, ids: []string{"base-1", "base-2", "team-1", "custom-1", "custom-2"}},
	{name: "byte-wise order", files: map[string]string{
		"a.yaml": ruleFile(r("lower")), "B.yaml": ruleFile(r("upper")), "10.yaml": ruleFile(r("ten")), "9.yaml": ruleFile(r("nine")),
	}, files2: []string{"10.yaml", "9.yaml", "B.yaml", "a.yaml"}, ids: []string{"ten", "nine", "upper", "lower"}},
	{name: "priority (FR-032)", files: map[string]string{
		"00-base.yaml":   ruleFile(r("base-default"), r("base-50", "priority: 50"), r("base-default-2")),
		"99-custom.yaml": ruleFile(r("custom-default"), r("custom-1", "priority: 1"), r("custom-50", "priority: 50"), r("custom-neg", "priority: -3")),
	}, files2: []string{"00-base.yaml", "99-custom.yaml"},
		ids: []string{"custom-neg", "custom-1", "base-50", "custom-50", "base-default", "base-default-2", "custom-default"}},
	{name: "duplicate ID across files (EC-007)", files: map[string]string{
		"00-a.yaml": ruleFile(r("one"), r("shared")),
		"10-b.yaml": ruleFile(r("two"), r("three"), r("shared")),
	}, want: &errWant{"10-b.yaml", 9, "shared", "id", `duplicate rule ID "shared" (also at 00-a.yaml:6)`}},
	{name: "definitions are file-scoped", files: map[string]string{
		"00-a.yaml": "version: \"1\"\ndefinitions:\n  x: \"true\"\nrules:\n  - {id: a, condition: $x, action: allow}\n",
		"10-b.yaml": "version: \"1\"\nrules:\n  - {id: b, condition: $x, action: allow}\n",
	}, want: &errWant{"10-b.yaml", 3, "b", "condition", `undefined variable "$x"`}},
	{name: "error in later file", files: map[string]string{
		"00-a.yaml": ruleFile(r("a")),
		"10-b.yaml": "version: \"2\"\n",
	}, want: &errWant{"10-b.yaml", 1, "", "version", `unsupported version "2"`}},
	{name: "first error wins", files: map[string]string{
		"00-a.yaml": "version: \"1\"\nrules: {}\n",
		"10-b.yaml": "version: \"2\"\n",
	}, want: &errWant{"00-a.yaml", 2, "", "rules", "must be a list"}},
	{name: "warnings in file order", files: map[string]string{
		"20-b.yaml": "version: \"1\"\ndefinitions:\n  old: x\nrules:\n  - {id: b, condition: \"true\", action: allow}\n",
		"10-a.yaml": "version: \"1\"\ndefinitions:\n  lonely: x\n",
	}, files2: []string{"10-a.yaml", "20-b.yaml"}, ids: []string{"b"},
		warnings: []string{"10-a.yaml has definitions but no rules", `unused definition "old" in 20-b.yaml`}},
}

func mkdir(t *testing.T, path string) {
	t.Helper()
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func TestLoadDir(t *testing.T) {
	for _, tc := range dirCases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range tc.files {
				write(t, filepath.Join(dir, name), data)
			}
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			set, err := LoadDir(dir)
			checkError(t, err, tc.want)
			if err != nil {
				if set != nil {
					t.Errorf("partial set on error: %+v", set)
				}
				return
			}
			checkSet(t, set, tc.files2, tc.ids, tc.warnings)
		})
	}
}

func checkSet(t *testing.T, set *Set, files, wantIDs, warnings []string) {
	t.Helper()
	if !reflect.DeepEqual(set.Files, files) {
		t.Errorf("files %q, want %q", set.Files, files)
	}
	if got := ids(set.Rules); !reflect.DeepEqual(got, wantIDs) {
		t.Errorf("rule order %q, want %q", got, wantIDs)
	}
	if set.Rules == nil || set.Warnings == nil {
		t.Errorf("nil slices in set: %+v", set)
	}
	if len(set.Warnings) != len(warnings) {
		t.Fatalf("warnings %q, want %d matching %q", set.Warnings, len(warnings), warnings)
	}
	for i, w := range warnings {
		if !strings.Contains(set.Warnings[i], w) {
			t.Errorf("warning %d %q does not contain %q", i, set.Warnings[i], w)
		}
	}
	for _, r := range set.Rules {
		if set.Files[r.FileIndex] != r.File {
			t.Errorf("rule %s: FileIndex %d is %s, not %s", r.ID, r.FileIndex, set.Files[r.FileIndex], r.File)
		}
	}
}

func TestLoadDirMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rules.d")
	set, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkSet(t, set, []string{}, []string{}, []string{"rules directory " + dir + " does not exist"})
}

func TestLoadDirNotADirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.yaml")
	write(t, path, ruleFile(r("a")))
	_, err := LoadDir(path)
	checkError(t, err, &errWant{path, 0, "", "", "not a directory"})
}

func TestLoadDirPermission(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads files whatever their mode; the FIFO, read error and dangling symlink cases cover unreadable files")
	}
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), ruleFile(r("a")))
	if err := os.Chmod(filepath.Join(dir, "a.yaml"), 0); err != nil {
		t.Fatal(err)
	}
	_, err := LoadDir(dir)
	checkError(t, err, &errWant{"a.yaml", 0, "", "", "permission denied"})
}

func TestBuild(t *testing.T) {
	base := Source{"00-base.yaml", []byte(ruleFile(r("a"), r("b", "priority: 5")))}
	for _, tc := range []struct {
		name  string
		files []Source
		want  *errWant
		ids   []string
	}{
		{name: "none", files: nil, ids: []string{}},
		{name: "approve flow", files: []Source{base, {"agent-rr-aabbcc112233.yaml", []byte(ruleFile(r("pypi")))}}, ids: []string{"b", "a", "pypi"}},
		{name: "approve flow duplicate", files: []Source{base, {"agent-rr-1.yaml", []byte(ruleFile(r("a")))}},
			want: &errWant{"agent-rr-1.yaml", 3, "a", "id", `duplicate rule ID "a" (also at 00-base.yaml:3)`}},
		{name: "out of order", files: []Source{{"b.yaml", base.Data}, {"a.yaml", nil}}, want: &errWant{"a.yaml", 0, "", "", "out of load order"}},
		{name: "same name twice", files: []Source{base, base}, want: &errWant{"00-base.yaml", 0, "", "", "out of load order"}},
		{name: "bad name", files: []Source{{"rules.json", base.Data}}, want: &errWant{"rules.json", 0, "", "", "not a rule file name"}},
		{name: "path as name", files: []Source{{"x/a.yaml", base.Data}}, want: &errWant{"x/a.yaml", 0, "", "", "not a rule file name"}},
		{name: "hidden name", files: []Source{{".a.yaml", base.Data}}, want: &errWant{".a.yaml", 0, "", "", "not a rule file name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := Build(tc.files)
			checkError(t, err, tc.want)
			if err != nil {
				if set != nil {
					t.Errorf("partial set on error")
				}
				return
			}
			if got := ids(set.Rules); !reflect.DeepEqual(got, tc.ids) {
				t.Errorf("ids %q, want %q", got, tc.ids)
			}
		})
	}
}

// TestExamples loads the shipped rule files: they must stay valid and
// warning-free, since operators copy them.
func TestExamples(t *testing.T) {
	set, err := LoadDir(filepath.Join("..", "..", "rules", "examples"))
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Files) < 4 || len(set.Rules) < 10 || len(set.Warnings) != 0 {
		t.Errorf("examples: %d files, %d rules, warnings %q", len(set.Files), len(set.Rules), set.Warnings)
	}
	for _, rule := range set.Rules {
		if strings.Contains(rule.Condition, "$") {
			t.Errorf("%s %s: $ left in expanded condition %q", rule.File, rule.ID, rule.Condition)
		}
	}
	def, err := LoadDir(filepath.Join("..", "..", "rules"))
	if err != nil || !reflect.DeepEqual(def.Files, []string{"00-default.yaml"}) || len(def.Rules) != 0 {
		t.Errorf("rules/00-default.yaml: %v, %+v", err, def)
	}
}
