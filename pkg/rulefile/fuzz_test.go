package rulefile

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

// FuzzParse feeds Parse arbitrary bytes: it must never panic, must return
// either valid rules or an *Error (never both), and must be deterministic.
func FuzzParse(f *testing.F) {
	for _, tc := range parseCases {
		// The size-limit cases are tested in TestParse; as seeds they make
		// every mutation and minimization slow.
		if len(tc.src) <= 4<<10 {
			f.Add([]byte(tc.src))
		}
	}
	for _, tc := range dirCases {
		for _, data := range tc.files {
			f.Add([]byte(data))
		}
	}
	for _, pattern := range []string{"../../rules/*.yaml", "../../rules/examples/*.yaml"} {
		paths, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, warnings, err := Parse("fuzz.yaml", data)
		if err != nil {
			e, ok := err.(*Error)
			if !ok {
				t.Fatalf("error %v is a %T, want *Error", err, err)
			}
			if e.File != "fuzz.yaml" || e.Err == nil || e.Line < 0 {
				t.Fatalf("error without location or cause: %#v", e)
			}
			if rules != nil || warnings != nil {
				t.Fatalf("partial result with error %v", err)
			}
			return
		}
		if rules == nil || warnings == nil {
			t.Fatal("nil rules or warnings without an error")
		}
		checkRules(t, rules)
		again, warnings2, err := Parse("fuzz.yaml", data)
		if err != nil || !reflect.DeepEqual(again, rules) || !reflect.DeepEqual(warnings2, warnings) {
			t.Fatalf("second parse differs: %v", err)
		}
	})
}

// checkRules asserts what every validated rule guarantees to package rules.
func checkRules(t *testing.T, rules []Rule) {
	t.Helper()
	seen := map[string]bool{}
	for i, r := range rules {
		switch {
		case !idPattern.MatchString(r.ID) || seen[r.ID]:
			t.Fatalf("rule %d: bad or duplicate id %q", i, r.ID)
		case r.Action != api.ActionAllow && r.Action != api.ActionBlock:
			t.Fatalf("rule %s: action %q", r.ID, r.Action)
		case strings.TrimSpace(r.Condition) == "" || len(r.Condition) > MaxExpandedSize || len(r.RawCondition) > MaxConditionSize:
			t.Fatalf("rule %s: condition size %d (raw %d)", r.ID, len(r.Condition), len(r.RawCondition))
		case r.Priority < MinPriority || r.Priority > MaxPriority:
			t.Fatalf("rule %s: priority %d", r.ID, r.Priority)
		case r.Position != i || r.FileIndex != 0 || r.File != "fuzz.yaml" || r.Line < 1 || r.ConditionLine < 1:
			t.Fatalf("rule %s: location %+v", r.ID, r)
		}
		seen[r.ID] = true
		if e := r.Egress; e != nil {
			if r.Action != api.ActionAllow {
				t.Fatalf("rule %s: egress on %s", r.ID, r.Action)
			}
			switch {
			case e.Mode == api.EgressProxy && len(e.Ports) == 0:
			case e.Mode == api.EgressDirectIP && len(e.Ports) > 0:
				for _, p := range e.Ports {
					if p == 0 {
						t.Fatalf("rule %s: port 0", r.ID)
					}
				}
			default:
				t.Fatalf("rule %s: egress %+v", r.ID, e)
			}
		}
	}
}
