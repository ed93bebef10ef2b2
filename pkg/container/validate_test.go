package container

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/endpoint"

	"outcall.dev/outcall/pkg/api"
)

// host is a fake host layout in a temporary directory: the Outcall
// sockets (real Unix sockets), the shim, and a few paths around them.
type host struct {
	dir, hostSock, agentSock, shim string
}

func newHost(t *testing.T) host {
	t.Helper()
	dir := t.TempDir()
	h := host{
		dir:       dir,
		hostSock:  filepath.Join(dir, "run/outcall/host.sock"),
		agentSock: filepath.Join(dir, "run/outcall/agent.sock"),
		shim:      filepath.Join(dir, "bin/outcall-agent"),
	}
	for _, d := range []string{"run/outcall", "bin", "work", "links", "other"} {
		must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	listen(t, h.hostSock)
	listen(t, h.agentSock)
	_, err := LinkAgentSocket(h.agentSock)
	must(t, err)
	must(t, os.WriteFile(h.shim, []byte("#!/bin/true\n"), 0o755))
	return h
}

func listen(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen %s: %v", path, err)
	}
	t.Cleanup(func() { _ = l.Close() })
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (h host) validator(t *testing.T) *Validator {
	t.Helper()
	v, err := NewValidator(Policy{HostSocket: h.hostSock, AgentSocket: h.agentSock, ShimPath: h.shim})
	must(t, err)
	return v
}

func (h host) path(rel string) string { return filepath.Join(h.dir, rel) }

func ptr[T any](v T) *T { return &v }

// fieldError asserts that err is a *FieldError for field, of kind, whose
// message contains want.
func fieldError(t *testing.T, err error, field string, kind *apikit.Kind, want string) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error = %v (%T), want a *FieldError", err, err)
	}
	if fe.Field != field {
		t.Errorf("field = %q, want %q (error %q)", fe.Field, field, fe.Msg)
	}
	if !errors.Is(err, kind) {
		t.Errorf("kind of %q = %v, want %v", fe.Msg, fe.Kind, kind)
	}
	if !strings.Contains(fe.Msg, want) {
		t.Errorf("error = %q, want it to contain %q", fe.Msg, want)
	}
}

func TestValidateDefaults(t *testing.T) {
	v := newHost(t).validator(t)
	c, err := v.Validate(api.ContainerCreateRequest{Image: "my-agent"})
	must(t, err)
	if !regexp.MustCompile(`^outcall-[0-9a-f]{8}$`).MatchString(c.Name) {
		t.Errorf("generated name %q, want outcall-<8 hex> (S008-FR-010)", c.Name)
	}
	if c.AgentName != c.Name {
		t.Errorf("agent name %q, want %q", c.AgentName, c.Name)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"image", c.Image.Ref, "my-agent:latest"},
		{"network", c.Network, "outcall-default"},
		{"user", c.User, "65532:65532"},
		{"memory", c.MemoryLimit, int64(536870912)},
		{"cpu shares", c.CPUShares, int64(1024)},
		{"pids", c.PidsLimit, int64(256)},
		{"mounts (helpers off unless asked, S008-FR-004)", len(c.Mounts), 0},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v, want %v", ck.what, ck.got, ck.want)
		}
	}
}

// TestNewNameUnique is S008-EC-009: rapid creates get distinct names.
func TestNewNameUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 2000 {
		n := NewName()
		if seen[n] {
			t.Fatalf("name %s generated twice", n)
		}
		if endpoint.AgentName(n) != n {
			t.Fatalf("generated name %s has agent name %s", n, endpoint.AgentName(n))
		}
		seen[n] = true
	}
}

func TestValidateFields(t *testing.T) {
	v := newHost(t).validator(t)
	inv := apikit.ErrInvalid
	long := strings.Repeat("a", MaxNameLen)
	tests := []struct {
		name  string
		req   api.ContainerCreateRequest
		field string // "" means accepted
		kind  *apikit.Kind
		want  string
		check func(t *testing.T, c Create)
	}{
		// Names: exact (S008-FR-010), Docker's rule, the registry's bound.
		{name: "name exact", req: api.ContainerCreateRequest{Image: "a", Name: ptr("my-task")}, check: func(t *testing.T, c Create) {
			if c.Name != "my-task" {
				t.Errorf("name %q", c.Name)
			}
		}},
		{name: "name replica suffix", req: api.ContainerCreateRequest{Image: "a", Name: ptr("foobar-2")}, check: func(t *testing.T, c Create) {
			if c.AgentName != "foobar" {
				t.Errorf("agent name %q, want foobar", c.AgentName)
			}
		}},
		{name: "name max length", req: api.ContainerCreateRequest{Image: "a", Name: ptr(long)}},
		{name: "name too long", req: api.ContainerCreateRequest{Image: "a", Name: ptr(long + "a")}, field: "name", kind: inv, want: "invalid name"},
		{name: "name empty", req: api.ContainerCreateRequest{Image: "a", Name: ptr("")}, field: "name", kind: inv, want: `invalid name ""`},
		{name: "name one char", req: api.ContainerCreateRequest{Image: "a", Name: ptr("a")}, field: "name", kind: inv, want: "invalid name"},
		{name: "name slash", req: api.ContainerCreateRequest{Image: "a", Name: ptr("a/b")}, field: "name", kind: inv, want: "invalid name"},
		{name: "name leading dash", req: api.ContainerCreateRequest{Image: "a", Name: ptr("-ab")}, field: "name", kind: inv, want: "invalid name"},
		// Image (details in TestParseImage).
		{name: "image missing", req: api.ContainerCreateRequest{}, field: "image", kind: inv, want: "an image reference is required"},
		{name: "image empty tag", req: api.ContainerCreateRequest{Image: "agent:"}, field: "image", kind: inv, want: "empty tag"},
		// Network.
		{name: "network full name", req: api.ContainerCreateRequest{Image: "a", Network: ptr("outcall-staging")}, check: func(t *testing.T, c Create) {
			if c.Network != "outcall-staging" {
				t.Errorf("network %q", c.Network)
			}
		}},
		{name: "network bridge", req: api.ContainerCreateRequest{Image: "a", Network: ptr("bridge")}, field: "network", kind: inv, want: `invalid network "bridge"`},
		{name: "network host", req: api.ContainerCreateRequest{Image: "a", Network: ptr("host")}, field: "network", kind: inv, want: `invalid network "host"`},
		{name: "network prefix only", req: api.ContainerCreateRequest{Image: "a", Network: ptr("outcall-")}, field: "network", kind: inv, want: "invalid network"},
		{name: "network container mode", req: api.ContainerCreateRequest{Image: "a", Network: ptr("container:abc")}, field: "network", kind: inv, want: "invalid network"},
		// User (S008-FR-027.b).
		{name: "user numeric", req: api.ContainerCreateRequest{Image: "a", User: ptr("1000:1000")}},
		{name: "user root", req: api.ContainerCreateRequest{Image: "a", User: ptr("0:0")}, field: "user", kind: inv, want: `invalid user "0:0"`},
		{name: "user root gid", req: api.ContainerCreateRequest{Image: "a", User: ptr("1000:0")}, field: "user", kind: inv, want: "invalid user"},
		{name: "user name", req: api.ContainerCreateRequest{Image: "a", User: ptr("agent")}, field: "user", kind: inv, want: "invalid user"},
		{name: "user uid only", req: api.ContainerCreateRequest{Image: "a", User: ptr("1000")}, field: "user", kind: inv, want: "invalid user"},
		{name: "user leading zero", req: api.ContainerCreateRequest{Image: "a", User: ptr("01000:1000")}, field: "user", kind: inv, want: "invalid user"},
		{name: "user three parts", req: api.ContainerCreateRequest{Image: "a", User: ptr("1:2:3")}, field: "user", kind: inv, want: "invalid user"},
		{name: "user -1", req: api.ContainerCreateRequest{Image: "a", User: ptr("4294967295:1")}, field: "user", kind: inv, want: "not a valid id"},
		{name: "user overflow", req: api.ContainerCreateRequest{Image: "a", User: ptr("1:99999999999")}, field: "user", kind: inv, want: "not a valid id"},
		{name: "user max", req: api.ContainerCreateRequest{Image: "a", User: ptr("4294967294:4294967294")}},
		// Limits (S008-FR-016, AS-012).
		{name: "memory 256m", req: api.ContainerCreateRequest{Image: "a", MemoryLimit: ptr(int64(256 << 20)), CPUShares: ptr(int64(512))}, check: func(t *testing.T, c Create) {
			if c.MemoryLimit != 268435456 || c.CPUShares != 512 {
				t.Errorf("limits %d %d", c.MemoryLimit, c.CPUShares)
			}
		}},
		{name: "memory minimum", req: api.ContainerCreateRequest{Image: "a", MemoryLimit: ptr(api.MinMemoryLimit)}},
		{name: "memory below minimum", req: api.ContainerCreateRequest{Image: "a", MemoryLimit: ptr(api.MinMemoryLimit - 1)}, field: "memory_limit", kind: inv, want: "invalid memory_limit 6291455: must be at least 6291456"},
		{name: "memory zero", req: api.ContainerCreateRequest{Image: "a", MemoryLimit: ptr(int64(0))}, field: "memory_limit", kind: inv, want: "invalid memory_limit 0"},
		{name: "memory negative", req: api.ContainerCreateRequest{Image: "a", MemoryLimit: ptr(int64(-1))}, field: "memory_limit", kind: inv, want: "invalid memory_limit -1"},
		{name: "cpu minimum", req: api.ContainerCreateRequest{Image: "a", CPUShares: ptr(int64(2))}},
		{name: "cpu below minimum", req: api.ContainerCreateRequest{Image: "a", CPUShares: ptr(int64(1))}, field: "cpu_shares", kind: inv, want: "invalid cpu_shares 1: must be between 2 and 262144"},
		{name: "cpu maximum", req: api.ContainerCreateRequest{Image: "a", CPUShares: ptr(int64(262144))}},
		{name: "cpu above maximum", req: api.ContainerCreateRequest{Image: "a", CPUShares: ptr(int64(262145))}, field: "cpu_shares", kind: inv, want: "invalid cpu_shares 262145"},
		// Env.
		{name: "env kept", req: api.ContainerCreateRequest{Image: "a", Env: []string{"MY_VAR=value", "EMPTY=", "npm_config_//r/:_authToken=x"}}, check: func(t *testing.T, c Create) {
			if strings.Join(c.Env, " ") != "MY_VAR=value EMPTY= npm_config_//r/:_authToken=x" {
				t.Errorf("env %q", c.Env)
			}
		}},
		{name: "env proxy dropped", req: api.ContainerCreateRequest{Image: "a", Env: []string{"HTTP_PROXY=http://evil:1", "A=1", "https_proxy=x", "No_Proxy=*", "HTTPS_PROXY=y", "http_proxy=z", "NO_PROXY=*"}}, check: func(t *testing.T, c Create) {
			if strings.Join(c.Env, " ") != "A=1" {
				t.Errorf("env %q, want the caller's proxy variables dropped", c.Env)
			}
		}},
		{name: "env no equals", req: api.ContainerCreateRequest{Image: "a", Env: []string{"A=1", "SECRETTOKEN"}}, field: "env[1]", kind: inv, want: "invalid env[1]: need NAME=value"},
		{name: "env empty name", req: api.ContainerCreateRequest{Image: "a", Env: []string{"=value"}}, field: "env[0]", kind: inv, want: "need NAME=value"},
		{name: "env NUL", req: api.ContainerCreateRequest{Image: "a", Env: []string{"A=b\x00c"}}, field: "env[0]", kind: inv, want: "NUL"},
		{name: "env duplicate", req: api.ContainerCreateRequest{Image: "a", Env: []string{"A=1", "B=2", "A=3"}}, field: "env[2]", kind: inv, want: `"A" is already set by env[0]`},
		// Command, working directory.
		{name: "cmd NUL", req: api.ContainerCreateRequest{Image: "a", Cmd: []string{"run", "a\x00"}}, field: "cmd", kind: inv, want: "invalid cmd[1]"},
		{name: "entrypoint NUL", req: api.ContainerCreateRequest{Image: "a", Entrypoint: []string{"\x00"}}, field: "entrypoint", kind: inv, want: "invalid entrypoint[0]"},
		{name: "working dir", req: api.ContainerCreateRequest{Image: "a", WorkingDir: "/workspace/"}, check: func(t *testing.T, c Create) {
			if c.WorkingDir != "/workspace" {
				t.Errorf("working dir %q", c.WorkingDir)
			}
		}},
		{name: "working dir relative", req: api.ContainerCreateRequest{Image: "a", WorkingDir: "workspace"}, field: "working_dir", kind: inv, want: `invalid working_dir "workspace"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Validate(tt.req)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if tt.check != nil {
					tt.check(t, c)
				}
				return
			}
			fieldError(t, err, tt.field, tt.kind, tt.want)
		})
	}
}

// TestNamesRegistrable: every name Validate accepts is an endpoint name the
// registry accepts, so no created container can fail to get an identity
// under its own name.
func TestNamesRegistrable(t *testing.T) {
	v := newHost(t).validator(t)
	for _, n := range []string{"ab", "my-task", "foobar-1", "a.b_c-d", strings.Repeat("x", MaxNameLen), NewName()} {
		c, err := v.Validate(api.ContainerCreateRequest{Image: "a", Name: ptr(n)})
		must(t, err)
		if _, err := endpoint.Validate(c.Name, "veth0", "10.200.0.2", "02:00:00:00:00:01"); err != nil {
			t.Errorf("name %q is valid for a container but not for the endpoint registry: %v", n, err)
		}
	}
}

// TestEnvSecretsNeverInErrors: an env value never reaches an error message
// or a log line.
func TestEnvSecretsNeverInErrors(t *testing.T) {
	v := newHost(t).validator(t)
	const secret = "sk-live-0123456789abcdef"
	for _, env := range [][]string{
		{secret},
		{"TOKEN=" + secret + "\x00"},
		{"TOKEN=" + secret, "TOKEN=" + secret},
	} {
		_, err := v.Validate(api.ContainerCreateRequest{Image: "a", Env: env})
		if err == nil {
			t.Fatalf("env %d entries accepted", len(env))
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q holds the env value", err)
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("create", "req", LogRequest(api.ContainerCreateRequest{Image: "a", Env: []string{"TOKEN=" + secret}, Cmd: []string{"--key", secret}}))
	if strings.Contains(buf.String(), secret) {
		t.Errorf("log line %s holds a secret", buf.String())
	}
	if !strings.Contains(buf.String(), "TOKEN=<redacted>") {
		t.Errorf("log line %s lacks the env name", buf.String())
	}
}

func TestNewValidatorPolicy(t *testing.T) {
	ok := Policy{HostSocket: "/run/outcall/host.sock", AgentSocket: "/run/outcall/agent.sock"}
	tests := []struct {
		name string
		edit func(*Policy)
		want string // "" accepted
	}{
		{"defaults", func(*Policy) {}, ""},
		{"no host socket", func(p *Policy) { p.HostSocket = "" }, "HostSocket"},
		{"relative agent socket", func(p *Policy) { p.AgentSocket = "agent.sock" }, "AgentSocket"},
		{"unclean shim", func(p *Policy) { p.ShimPath = "/usr/local/bin/../bin/outcall-agent" }, "ShimPath"},
		{"relative engine socket", func(p *Policy) { p.EngineSocket = "docker.sock" }, "EngineSocket"},
		{"relative protected", func(p *Policy) { p.Protected = []string{"/etc/outcall", "rules"} }, "Protected[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ok
			tt.edit(&p)
			v, err := NewValidator(p)
			if tt.want == "" {
				must(t, err)
				if v.p.ShimPath != DefaultShimHostPath {
					t.Errorf("shim path %q, want the default", v.p.ShimPath)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewValidator = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
