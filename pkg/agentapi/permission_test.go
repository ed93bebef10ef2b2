package agentapi

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

func strp(s string) *string { return &s }

// TestBuildContext: S004 §2.6's mapping, one case per form.
func TestBuildContext(t *testing.T) {
	tests := []struct {
		name string
		req  api.PermissionRequest
		run  api.RunContext // Context is checked separately
		net  *api.NetworkContext
		http *api.HTTPContext
	}{
		{"tool with args_json", api.PermissionRequest{ActionType: api.ActionToolExec, Target: "git",
			Metadata: map[string]string{"args_json": `["commit","-m","x","-","--amend"]`, "cwd": "/w"}},
			api.RunContext{Tool: "git", Args: []string{"commit", "-m", "x", "-", "--amend"}, Flags: []string{"-m", "--amend"}, Cwd: "/w"}, nil, nil},
		{"shell with args", api.PermissionRequest{ActionType: api.ActionShellExec, Target: "ls", Metadata: map[string]string{"args": "-la"}},
			api.RunContext{Tool: "ls", Args: []string{"-la"}, Flags: []string{"-la"}}, nil, nil},
		{"args_json wins over args", api.PermissionRequest{ActionType: api.ActionToolExec, Target: "t", Metadata: map[string]string{"args": "a", "args_json": `["b"]`}},
			api.RunContext{Tool: "t", Args: []string{"b"}, Flags: []string{}}, nil, nil},
		{"no args", api.PermissionRequest{ActionType: api.ActionToolExec, Target: "t"},
			api.RunContext{Tool: "t", Args: []string{}, Flags: []string{}}, nil, nil},
		{"file", api.PermissionRequest{ActionType: api.ActionFileAccess, Target: "/etc/passwd", Metadata: map[string]string{"cwd": "/"}},
			api.RunContext{Tool: "file", Args: []string{"/etc/passwd"}, Flags: []string{}, Cwd: "/"}, nil, nil},
		{"https URL", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "https://API.Example.com/v1/x?q=1", Metadata: map[string]string{"method": "post"}},
			api.RunContext{Tool: "network_call", Args: []string{"https://API.Example.com/v1/x?q=1"}, Flags: []string{}},
			&api.NetworkContext{Hostname: strp("api.example.com"), Port: 443, Protocol: "tcp"},
			&api.HTTPContext{Method: "POST", Path: "/v1/x?q=1", Host: "api.example.com", Headers: map[string]string{}}},
		{"http URL with port", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "http://example.com:8080"},
			api.RunContext{Tool: "network_call", Args: []string{"http://example.com:8080"}, Flags: []string{}},
			&api.NetworkContext{Hostname: strp("example.com"), Port: 8080, Protocol: "tcp"},
			&api.HTTPContext{Method: "GET", Path: "/", Host: "example.com", Headers: map[string]string{}}},
		{"host:port", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "DB.internal.:5432"},
			api.RunContext{Tool: "network_call", Args: []string{"DB.internal.:5432"}, Flags: []string{}},
			&api.NetworkContext{Hostname: strp("db.internal"), Port: 5432, Protocol: "tcp"}, nil},
		{"bare host, udp", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "ntp.example", Metadata: map[string]string{"protocol": "UDP"}},
			api.RunContext{Tool: "network_call", Args: []string{"ntp.example"}, Flags: []string{}},
			&api.NetworkContext{Hostname: strp("ntp.example"), Port: 443, Protocol: "udp"}, nil},
		{"ip:port sets network.ip", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "192.0.2.7:22"},
			api.RunContext{Tool: "network_call", Args: []string{"192.0.2.7:22"}, Flags: []string{}},
			&api.NetworkContext{Hostname: strp("192.0.2.7"), IP: "192.0.2.7", Port: 22, Protocol: "tcp"}, nil},
		{"[v6]:port", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "[2001:DB8::1]:80"},
			api.RunContext{Tool: "network_call", Args: []string{"[2001:DB8::1]:80"}, Flags: []string{}},
			&api.NetworkContext{Hostname: strp("2001:db8::1"), IP: "2001:db8::1", Port: 80, Protocol: "tcp"}, nil},
		{"bare v6", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "2001:db8::1"},
			api.RunContext{Tool: "network_call", Args: []string{"2001:db8::1"}, Flags: []string{}},
			&api.NetworkContext{Hostname: strp("2001:db8::1"), IP: "2001:db8::1", Port: 443, Protocol: "tcp"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, apiErr := buildContext(tt.req, "agent-x")
			if apiErr != nil {
				t.Fatalf("buildContext: %v", apiErr)
			}
			got := *c.Run
			ctx := got.Context
			got.Context = nil
			if !reflect.DeepEqual(got, tt.run) {
				t.Errorf("run %+v, want %+v", got, tt.run)
			}
			if !reflect.DeepEqual(c.Network, tt.net) {
				t.Errorf("network %s, want %s", js(c.Network), js(tt.net))
			}
			if !reflect.DeepEqual(c.HTTP, tt.http) {
				t.Errorf("http %s, want %s", js(c.HTTP), js(tt.http))
			}
			if c.Agent == nil || c.Agent.Name != "agent-x" {
				t.Errorf("agent %+v", c.Agent)
			}
			if ctx["action_type"] != string(tt.req.ActionType) || ctx["target"] != tt.req.Target {
				t.Errorf("run.context %v", ctx)
			}
			md, _ := ctx["metadata"].(map[string]any)
			for k, v := range tt.req.Metadata {
				if md[k] != v || (k != "action_type" && k != "target" && k != "metadata" && ctx[k] != v) {
					t.Errorf("metadata %q not in run.context: %v", k, ctx)
				}
			}
		})
	}
}

// TestBuildContextReservedKeys: metadata cannot overwrite action_type,
// target or metadata in run.context.
func TestBuildContextReservedKeys(t *testing.T) {
	c, apiErr := buildContext(api.PermissionRequest{ActionType: api.ActionToolExec, Target: "ls",
		Metadata: map[string]string{"action_type": "x", "target": "y", "metadata": "z", "k": "v"}}, "a")
	if apiErr != nil {
		t.Fatal(apiErr)
	}
	ctx := c.Run.Context
	if ctx["action_type"] != "tool_exec" || ctx["target"] != "ls" || ctx["k"] != "v" {
		t.Errorf("run.context %v", ctx)
	}
	if md, ok := ctx["metadata"].(map[string]any); !ok || md["target"] != "y" {
		t.Errorf("run.context.metadata %v", ctx["metadata"])
	}
}

func TestBuildContextRejects(t *testing.T) {
	long := strings.Repeat("a", 254)
	tests := []struct {
		name string
		req  api.PermissionRequest
		msg  string
	}{
		{"empty target", api.PermissionRequest{ActionType: api.ActionFileAccess, Target: ""}, "target is empty"},
		{"args_json not an array", api.PermissionRequest{ActionType: api.ActionToolExec, Target: "t", Metadata: map[string]string{"args_json": `{"a":1}`}}, "metadata.args_json must be a JSON array of strings"},
		{"args_json null", api.PermissionRequest{ActionType: api.ActionToolExec, Target: "t", Metadata: map[string]string{"args_json": `null`}}, "metadata.args_json must be a JSON array of strings"},
		{"args_json trailing", api.PermissionRequest{ActionType: api.ActionToolExec, Target: "t", Metadata: map[string]string{"args_json": `[] []`}}, "metadata.args_json must be a JSON array of strings"},
		{"too many args", api.PermissionRequest{ActionType: api.ActionToolExec, Target: "t", Metadata: map[string]string{"args_json": "[" + strings.Repeat(`"",`, 1024) + `""]`}}, "1025 arguments; at most 1024 allowed"},
		{"NUL in an arg", api.PermissionRequest{ActionType: api.ActionToolExec, Target: "t", Metadata: map[string]string{"args": "a\x00b"}}, "argument 0 contains a NUL byte"},
		{"arg too long", api.PermissionRequest{ActionType: api.ActionToolExec, Target: "t", Metadata: map[string]string{"args": strings.Repeat("a", 32769)}}, "argument 0 is 32769 bytes; at most 32768 allowed"},
		{"host too long", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: long}, `network target host "` + long + `" must be 1-253 characters`},
		{"v6 with port, no brackets", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "2001:db8::1:80x"}, `network target "2001:db8::1:80x": an IPv6 address with a port must use brackets`},
		{"brackets around a name", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "[host]:80"}, `network target "[host]:80": only an IPv6 address goes in brackets`},
		{"slash in a host", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "a/b:80"}, `network target host "a/b" is not a valid host name`},
		{"port out of range", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "a:65536"}, `network target port "65536" is not 1-65535`},
		{"URL port 0", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "http://a:0/"}, `network target port "0" is not 1-65535`},
		{"URL without host", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "http:///x"}, "network target is not an http or https URL"},
		{"label with a leading dash", api.PermissionRequest{ActionType: api.ActionNetworkCall, Target: "-a.example"}, `network target host "-a.example" has a label starting or ending with '-'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, apiErr := buildContext(tt.req, "a")
			if apiErr == nil || apiErr.status != http.StatusUnprocessableEntity || apiErr.msg != "invalid request: "+tt.msg {
				t.Errorf("got %v, want 422 %q", apiErr, "invalid request: "+tt.msg)
			}
		})
	}
}

func js(v any) string { b, _ := json.Marshal(v); return string(b) }

// FuzzPermissionRequest: decoding and mapping any body never panics and
// answers only 400, 422 or a context.
func FuzzPermissionRequest(f *testing.F) {
	for _, s := range []string{
		`{"action_type":"tool_exec","target":"read_file","metadata":{"path":"/workspace/config.yaml","mode":"read"}}`,
		`{"action_type":"network_call","target":"https://u@x:99999/?a=b","metadata":{"method":"get","protocol":"TCP"}}`,
		`{"action_type":"network_call","target":"[::ffff:10.0.0.1]:443"}`,
		`{"action_type":"shell_exec","target":"sh","metadata":{"args_json":"[\"-c\",\"\\u0000\"]"}}`,
		`{"action_type":"file_access","target":" "}`,
		`{"action_type":"network_call","target":"http://[fe80::1%25eth0]/"}`,
		`{}`, `[]`, `null`, `{"action_type":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, apiErr := parsePermission(body)
		if apiErr != nil {
			if apiErr.status != http.StatusBadRequest {
				t.Fatalf("parse: %d %s", apiErr.status, apiErr.msg)
			}
			return
		}
		c, apiErr := buildContext(req, "agent")
		switch {
		case apiErr != nil && apiErr.status != http.StatusUnprocessableEntity:
			t.Fatalf("build: %d %s", apiErr.status, apiErr.msg)
		case apiErr == nil && (c == nil || c.Run == nil || c.Agent == nil || c.Agent.Name != "agent"):
			t.Fatalf("build returned an incomplete context %+v", c)
		case apiErr == nil && req.ActionType == api.ActionNetworkCall && (c.Network == nil || c.Network.Port == 0 || c.Network.Hostname == nil):
			t.Fatalf("network_call without a network context: %+v", c.Network)
		}
	})
}
