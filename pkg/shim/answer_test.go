package shim

import (
	"strings"
	"testing"
)

func TestParseVerdict(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		allowed bool
		ok      bool
	}{
		{"allow", verdictAllow, true, true},
		{"deny", verdictDeny, false, true},
		{"nulls left out", `{"success":true,"data":{"allowed":false}}`, false, true},
		{"whitespace around", " \n" + verdictAllow + "\n\t ", true, true},
		{"success false", `{"success":false,"error":"rate limit exceeded for container x"}`, false, false},
		{"success false with an allow", `{"success":false,"data":{"allowed":true,"matched_rule":null,"reason":null}}`, false, false},
		{"success with an error", `{"success":true,"data":{"allowed":true,"matched_rule":null,"reason":null},"error":"x"}`, false, false},
		{"success null", `{"success":null,"data":{"allowed":true}}`, false, false},
		{"no success", `{"data":{"allowed":true}}`, false, false},
		{"success a string", `{"success":"true","data":{"allowed":true}}`, false, false},
		{"data missing", `{"success":true}`, false, false},
		{"data null", `{"success":true,"data":null}`, false, false},
		{"data empty", `{"success":true,"data":{}}`, false, false},
		{"data an array", `{"success":true,"data":[true]}`, false, false},
		{"allowed null", `{"success":true,"data":{"allowed":null}}`, false, false},
		{"allowed a string", `{"success":true,"data":{"allowed":"true"}}`, false, false},
		{"allowed a number", `{"success":true,"data":{"allowed":1}}`, false, false},
		{"unknown field in data", `{"success":true,"data":{"allowed":true,"matched_rule":null,"reason":null,"rule":"true"}}`, false, false},
		{"unknown field in envelope", `{"success":true,"data":{"allowed":true},"extra":1}`, false, false},
		{"key in another case", `{"success":true,"data":{"allowed":false,"ALLOWED":true}}`, false, false},
		{"key repeated", `{"success":true,"data":{"allowed":false,"allowed":true}}`, false, false},
		{"success repeated", `{"success":false,"success":true,"data":{"allowed":true}}`, false, false},
		{"trailing garbage", verdictAllow + "x", false, false},
		{"second object", verdictAllow + "{}", false, false},
		{"truncated", verdictAllow[:len(verdictAllow)-2], false, false},
		{"matched_rule a number", `{"success":true,"data":{"allowed":true,"matched_rule":7}}`, false, false},
		{"empty", ``, false, false},
		{"null", `null`, false, false},
		{"html", `<html>502</html>`, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := ParseVerdict([]byte(tt.body))
			if tt.ok != (err == nil) {
				t.Fatalf("ParseVerdict(%s) = %+v, %v; want ok=%v", tt.body, v, err, tt.ok)
			}
			if tt.ok && v.Allowed != tt.allowed {
				t.Errorf("allowed = %v, want %v", v.Allowed, tt.allowed)
			}
			if !tt.ok && v.Allowed {
				t.Errorf("a refused answer returned an allow")
			}
		})
	}
	v, _ := ParseVerdict([]byte(verdictAllow))
	if v.MatchedRule == nil || *v.MatchedRule != "allow-tools" || v.Reason != nil {
		t.Errorf("allow fields: %+v", v)
	}
}

func TestParseCheckin(t *testing.T) {
	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{"ok", checkinOK, true},
		{"no keys is refused", `{"success":true,"data":{"container_id":"c","session_token":"tok-1"}}`, false},
		{"empty keys", `{"success":true,"data":{"container_id":"c","session_token":"tok-1","context_keys":[]}}`, true},
		{"keys null", `{"success":true,"data":{"container_id":"c","session_token":"tok-1","context_keys":null}}`, false},
		{"a key null", `{"success":true,"data":{"container_id":"c","session_token":"tok-1","context_keys":[null]}}`, false},
		{"empty container id", `{"success":true,"data":{"container_id":"","session_token":"tok-1","context_keys":[]}}`, false},
		{"no container id", `{"success":true,"data":{"session_token":"tok-1","context_keys":[]}}`, false},
		{"empty token", `{"success":true,"data":{"container_id":"c","session_token":"","context_keys":[]}}`, false},
		{"token with a space", `{"success":true,"data":{"container_id":"c","session_token":"tok 1","context_keys":[]}}`, false},
		{"token with a newline", `{"success":true,"data":{"container_id":"c","session_token":"tok\r\nX-A: b","context_keys":[]}}`, false},
		{"token not ASCII", `{"success":true,"data":{"container_id":"c","session_token":"tök","context_keys":[]}}`, false},
		{"unknown field", `{"success":true,"data":{"container_id":"c","session_token":"tok-1","context_keys":[],"hostname":"h"}}`, false},
		{"a verdict", verdictAllow, false},
		{"success false", `{"success":false,"error":"check-in rejected: peer is not a managed container"}`, false},
		{"trailing", checkinOK + "]", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCheckin([]byte(tt.body))
			if tt.ok != (err == nil) {
				t.Fatalf("ParseCheckin(%s) = %+v, %v; want ok=%v", tt.body, c, err, tt.ok)
			}
		})
	}
	c, _ := ParseCheckin([]byte(checkinOK))
	if c.ContainerID != testContainerID || c.SessionToken != testToken || strings.Join(c.ContextKeys, ",") != "action_type,target,metadata" {
		t.Errorf("check-in data: %+v", c)
	}
}

// FuzzParseVerdict: no input panics, and an accepted answer is the
// envelope's success with a decoded verdict whose allow the bytes state.
func FuzzParseVerdict(f *testing.F) {
	for _, s := range []string{verdictAllow, verdictDeny, `{"success":true,"data":{"allowed":true}}`, `{"success":false,"error":"x"}`, `{"success":true,"data":{"allowed":false,"ALLOWED":true}}`, `{}`, `[]`, `null`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := ParseVerdict(body)
		if err != nil {
			if v.Allowed || v.MatchedRule != nil || v.Reason != nil {
				t.Fatalf("refused answer returned %+v", v)
			}
			return
		}
		// An accepted allow must say "allowed":true somewhere, spelled so.
		if v.Allowed && !strings.Contains(string(body), `"allowed"`) {
			t.Fatalf("allow from %q", body)
		}
		if !strings.Contains(string(body), `"success"`) || !strings.Contains(string(body), `"data"`) {
			t.Fatalf("accepted %q without success and data", body)
		}
	})
}

// FuzzParseCheckin: no input panics, and accepted data is well formed.
func FuzzParseCheckin(f *testing.F) {
	for _, s := range []string{checkinOK, `{"success":true,"data":{"container_id":"c","session_token":"t","context_keys":[]}}`, `{"success":true,"data":{"container_id":"c","session_token":"a b","context_keys":[]}}`, `{"success":false}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := ParseCheckin(body)
		if err != nil {
			if c.ContainerID != "" || c.SessionToken != "" || c.ContextKeys != nil {
				t.Fatalf("refused answer returned %+v", c)
			}
			return
		}
		if c.ContainerID == "" || !headerSafe(c.SessionToken) || c.ContextKeys == nil {
			t.Fatalf("accepted malformed data %+v from %q", c, body)
		}
	})
}
