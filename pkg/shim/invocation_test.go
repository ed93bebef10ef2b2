package shim

import (
	"errors"
	"reflect"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

func TestParse(t *testing.T) {
	md := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	req := func(a api.ActionType, target string, m map[string]string) api.PermissionRequest {
		return api.PermissionRequest{ActionType: a, Target: target, Metadata: m}
	}
	tests := []struct {
		name string
		args []string
		want Invocation
	}{
		{"help", []string{"--help"}, Invocation{Kind: KindHelp}},
		{"help short", []string{"-h"}, Invocation{Kind: KindHelp}},
		{"help with more", []string{"-h", "exec", "x"}, Invocation{Kind: KindHelp}},
		{"version", []string{"--version"}, Invocation{Kind: KindVersion}},
		{"version short", []string{"-V"}, Invocation{Kind: KindVersion}},
		{"exec with args", []string{"exec", "git", "status", "-s"},
			Invocation{Request: req(api.ActionToolExec, "git", md("args", "status -s", "args_json", `["status","-s"]`)), Argv: []string{"git", "status", "-s"}}},
		{"exec without args: no metadata", []string{"exec", "true"},
			Invocation{Request: req(api.ActionToolExec, "true", nil), Argv: []string{"true"}}},
		{"exec grep -h is a mediated grep", []string{"exec", "grep", "-h", "x"},
			Invocation{Request: req(api.ActionToolExec, "grep", md("args", "-h x", "args_json", `["-h","x"]`)), Argv: []string{"grep", "-h", "x"}}},
		{"implicit --version later is an argument", []string{"git", "--version"},
			Invocation{Request: req(api.ActionToolExec, "git", md("args", "--version", "args_json", `["--version"]`)), Argv: []string{"git", "--version"}}},
		{"exec missing program", []string{"exec"},
			Invocation{Request: req(api.ActionToolExec, "", nil), Argv: []string{""}}},
		{"exec --help is a program", []string{"exec", "--help"},
			Invocation{Request: req(api.ActionToolExec, "--help", nil), Argv: []string{"--help"}}},
		{"implicit", []string{"git", "status"},
			Invocation{Request: req(api.ActionToolExec, "git", md("args", "status", "args_json", `["status"]`)), Argv: []string{"git", "status"}}},
		{"implicit unknown flag is a program", []string{"--frobnicate"},
			Invocation{Request: req(api.ActionToolExec, "--frobnicate", nil), Argv: []string{"--frobnicate"}}},
		{"implicit program named like a path", []string{"/usr/bin/env", "A=1"},
			Invocation{Request: req(api.ActionToolExec, "/usr/bin/env", md("args", "A=1", "args_json", `["A=1"]`)), Argv: []string{"/usr/bin/env", "A=1"}}},
		{"bash runs the program, not bash", []string{"bash", "make", "test"},
			Invocation{Request: req(api.ActionShellExec, "make", md("args", "test", "args_json", `["test"]`)), Argv: []string{"make", "test"}}},
		{"sh", []string{"sh", "ls"}, Invocation{Request: req(api.ActionShellExec, "ls", nil), Argv: []string{"ls"}}},
		{"shell", []string{"shell", "ls", "-la"},
			Invocation{Request: req(api.ActionShellExec, "ls", md("args", "-la", "args_json", `["-la"]`)), Argv: []string{"ls", "-la"}}},
		{"bash missing program", []string{"bash"}, Invocation{Request: req(api.ActionShellExec, "", nil), Argv: []string{""}}},
		{"empty and special args are kept", []string{"exec", "echo", "", "a b", `"q"`, "<&>", "$HOME"},
			Invocation{Request: req(api.ActionToolExec, "echo", md("args", ` a b "q" <&> $HOME`, "args_json", `["","a b","\"q\"","<&>","$HOME"]`)),
				Argv: []string{"echo", "", "a b", `"q"`, "<&>", "$HOME"}}},
		{"fetch", []string{"fetch", "https://api.example.com/v1"}, Invocation{Request: req(api.ActionNetworkCall, "https://api.example.com/v1", md("method", "GET"))}},
		{"fetch with method", []string{"fetch", "https://x.example", "POST"}, Invocation{Request: req(api.ActionNetworkCall, "https://x.example", md("method", "POST"))}},
		{"fetch extra args ignored", []string{"http", "x.example:80", "PUT", "extra", "more"}, Invocation{Request: req(api.ActionNetworkCall, "x.example:80", md("method", "PUT"))}},
		{"fetch missing url", []string{"fetch"}, Invocation{Request: req(api.ActionNetworkCall, "", md("method", "GET"))}},
		{"https", []string{"https", "a.example"}, Invocation{Request: req(api.ActionNetworkCall, "a.example", md("method", "GET"))}},
		{"curl is a probe", []string{"curl", "https://a.example", "-X"}, Invocation{Request: req(api.ActionNetworkCall, "https://a.example", md("method", "-X"))}},
		{"wget is a probe", []string{"wget", "https://a.example"}, Invocation{Request: req(api.ActionNetworkCall, "https://a.example", md("method", "GET"))}},
		{"file", []string{"file", "/workspace/c.yaml"}, Invocation{Request: req(api.ActionFileAccess, "/workspace/c.yaml", md("mode", "read"))}},
		{"read", []string{"read", "/etc/passwd", "ignored"}, Invocation{Request: req(api.ActionFileAccess, "/etc/passwd", md("mode", "read"))}},
		{"write", []string{"write", "/workspace/out"}, Invocation{Request: req(api.ActionFileAccess, "/workspace/out", md("mode", "write"))}},
		{"file missing path", []string{"file"}, Invocation{Request: req(api.ActionFileAccess, "", md("mode", "read"))}},
		{"verbs are case-sensitive", []string{"EXEC", "x"},
			Invocation{Request: req(api.ActionToolExec, "EXEC", md("args", "x", "args_json", `["x"]`)), Argv: []string{"EXEC", "x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.args)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.args, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q)\n got %#v\nwant %#v", tt.args, got, tt.want)
			}
			if got.Executes() != (tt.want.Argv != nil) {
				t.Errorf("Executes() = %v", got.Executes())
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want error
	}{
		{"no arguments", nil, ErrUsage},
		{"empty slice", []string{}, ErrUsage},
		{"program not UTF-8", []string{"exec", "\xff"}, ErrNotUTF8},
		{"argument not UTF-8", []string{"git", "log", "a\xc3"}, ErrNotUTF8},
		{"probe target not UTF-8", []string{"fetch", "http://\xfe"}, ErrNotUTF8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.args)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse(%q) = %#v, %v; want %v", tt.args, got, err, tt.want)
			}
		})
	}
	// Control: the same words in valid UTF-8 parse.
	if _, err := Parse([]string{"git", "log", "a\u00e9"}); err != nil {
		t.Fatalf("control: %v", err)
	}
}
