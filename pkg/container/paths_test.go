package container

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/apikit"

	"outcall.dev/outcall/pkg/api"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	mkdir := func(rel string) { must(t, os.MkdirAll(filepath.Join(dir, rel), 0o755)) }
	link := func(target, rel string) { must(t, os.Symlink(target, filepath.Join(dir, rel))) }
	mkdir("real/sub")
	must(t, os.WriteFile(filepath.Join(dir, "real/file"), nil, 0o644))
	link(filepath.Join(dir, "real"), "abs")         // absolute link to a directory
	link("real/sub", "rel")                         // relative link
	link("../../real", "real/sub/up")               // relative link with ..
	link(filepath.Join(dir, "missing/x"), "dangle") // dangling
	link("loop2", "loop1")
	link("loop1", "loop2")
	tests := []struct {
		in, want string
		err      bool
	}{
		{in: "/", want: "/"},
		{in: dir + "/real/sub", want: dir + "/real/sub"},
		{in: dir + "/abs/sub", want: dir + "/real/sub"},
		{in: dir + "/rel", want: dir + "/real/sub"},
		// ".." after a symlink is taken from where the link led, as the
		// kernel does; a lexical clean would give dir/real.
		{in: dir + "/rel/..", want: dir + "/real"},
		{in: dir + "/real/sub/up/sub/up", want: dir + "/real"},
		{in: dir + "/dangle", want: dir + "/missing/x"},
		{in: dir + "/dangle/deeper", want: dir + "/missing/x/deeper"},
		{in: dir + "/nothing/here", want: dir + "/nothing/here"},
		{in: dir + "/real/file/below", want: dir + "/real/file/below"},
		{in: dir + "/loop1", err: true},
	}
	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.in, dir), func(t *testing.T) {
			got, err := resolve(tt.in)
			if tt.err {
				if err == nil {
					t.Fatalf("resolve(%s) = %s, want an error", tt.in, got)
				}
				return
			}
			must(t, err)
			if got != tt.want {
				t.Errorf("resolve(%s) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

// TestVolumeSources is the bind-source deny list (S008-FR-008, FR-009,
// AS-002, EC-001, EC-012, SC-002): the Outcall sockets, the Docker and
// containerd sockets and their directories, whether named, reached
// through a symlink, a symlinked parent, a hard link, or exposed by an
// ancestor. Each refusal names the source and the protected path.
func TestVolumeSources(t *testing.T) {
	h := newHost(t)
	must(t, os.Symlink(h.hostSock, h.path("links/host.sock")))
	must(t, os.Symlink("../run/outcall/host.sock", h.path("links/rel.sock")))
	must(t, os.Symlink(h.path("run/outcall"), h.path("links/outcall-dir")))
	must(t, os.Symlink(h.path("run"), h.path("links/run")))
	must(t, os.Symlink(h.path("links/run"), h.path("links/chain")))
	must(t, os.Symlink("/var/run/docker.sock", h.path("links/docker.sock")))
	must(t, os.Symlink("/run", h.path("links/hostrun")))
	must(t, os.Symlink("/var/run", h.path("links/varrun")))
	must(t, os.Symlink("/var/lib/docker/volumes", h.path("links/volumes")))
	must(t, os.Symlink(h.path("work"), h.path("links/work")))
	must(t, os.Link(h.hostSock, h.path("other/hardlink.sock")))
	v := h.validator(t)

	// Where /var/run is a symlink to /run (most hosts) the path named is
	// the canonical one; elsewhere the lexical one. Both are right.
	run := []string{"/run/docker.sock", "/var/run/docker.sock"}
	containerd := []string{"/run/containerd", "/var/run/containerd"}
	tests := []struct {
		name, src string
		// protected are the paths the refusal may name; nil is allowed,
		// anyPath is any protected path (the source exposes several).
		protected []string
	}{
		{"plain directory", h.path("work"), nil},
		{"symlink to a plain directory", h.path("links/work"), nil},
		{"host socket", h.hostSock, []string{h.hostSock}},
		{"host socket unclean", h.path("run/./outcall//host.sock"), []string{h.hostSock}},
		{"agent socket as a caller bind", h.agentSock, []string{h.agentSock}},
		{"socket directory", h.path("run/outcall"), []string{h.hostSock}},
		{"socket directory trailing slash", h.path("run/outcall") + "/", []string{h.hostSock}},
		{"grandparent", h.path("run"), []string{h.hostSock}},
		{"temp root", h.dir, []string{h.hostSock}},
		{"root", "/", anyPath},
		{"symlink to the host socket", h.path("links/host.sock"), []string{h.hostSock}},
		{"relative symlink to the host socket", h.path("links/rel.sock"), []string{h.hostSock}},
		{"symlink to the socket directory", h.path("links/outcall-dir"), []string{h.hostSock}},
		{"path through a symlinked parent", h.path("links/run/outcall"), []string{h.hostSock}},
		{"chain of symlinks", h.path("links/chain"), []string{h.hostSock}},
		{"hard link to the host socket", h.path("other/hardlink.sock"), []string{h.hostSock}},
		{"docker socket", "/var/run/docker.sock", run},
		{"docker socket in /run", "/run/docker.sock", []string{"/run/docker.sock"}},
		{"/var/run", "/var/run", run},
		{"/run", "/run", []string{"/run/docker.sock"}},
		{"/var", "/var", []string{"/var/run/docker.sock"}},
		{"symlink to docker.sock", h.path("links/docker.sock"), run},
		{"symlink to /run", h.path("links/hostrun"), []string{"/run/docker.sock"}},
		{"symlink to /var/run", h.path("links/varrun"), run},
		{"containerd socket", "/run/containerd/containerd.sock", []string{"/run/containerd"}},
		{"containerd directory", "/var/run/containerd", containerd},
		{"docker state", "/var/lib/docker", []string{"/var/lib/docker"}},
		{"inside docker state via symlink", h.path("links/volumes"), []string{"/var/lib/docker"}},
		{"proc root of pid 1", "/proc/1/root", anyPath},
		{"proc", "/proc/self/fd/3", anyPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Validate(api.ContainerCreateRequest{Image: "a", Volumes: []string{"data:/data", tt.src + ":/mnt:ro"}})
			if tt.protected == nil {
				must(t, err)
				m := c.Mounts[1]
				if m.Type != MountBind || m.Source != filepath.Clean(tt.src) || m.Target != "/mnt" || !m.ReadOnly {
					t.Errorf("mount %+v", m)
				}
				return
			}
			prefix := fmt.Sprintf("bind mount denied - %q exposes protected host path ", tt.src)
			fieldError(t, err, "volumes[1]", apikit.ErrForbidden, prefix)
			if err == nil {
				return
			}
			named, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), prefix))
			if len(tt.protected) == 0 {
				return // anyPath: fieldError checked the shape
			}
			if !slices.Contains(tt.protected, named) {
				t.Errorf("error = %q, want it to name one of %q", err, tt.protected)
			}
		})
	}
}

// anyPath marks a source that exposes many protected paths: which one the
// refusal names is not fixed.
var anyPath = []string{}

// TestVolumeSourceMessage pins the spec's exact message (S008-IF-001).
func TestVolumeSourceMessage(t *testing.T) {
	v, err := NewValidator(Policy{HostSocket: "/run/outcall/host.sock", AgentSocket: "/run/outcall/agent.sock"})
	must(t, err)
	_, err = v.Validate(api.ContainerCreateRequest{Image: "a", Volumes: []string{"/run/outcall:/x"}})
	const want = `bind mount denied - "/run/outcall" exposes protected host path "/run/outcall/host.sock"`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
	status, _ := apikit.StatusOf(err)
	if status != 403 {
		t.Errorf("status %d, want 403", status)
	}
}

// TestVolumeProtectedExtra: the policy's extra paths (rules, state) and
// the engine's own socket are protected like the static list.
func TestVolumeProtectedExtra(t *testing.T) {
	h := newHost(t)
	rules := h.path("etc/outcall/rules.d")
	must(t, os.MkdirAll(rules, 0o755))
	engine := h.path("user/docker.sock")
	v, err := NewValidator(Policy{HostSocket: h.hostSock, AgentSocket: h.agentSock, EngineSocket: engine, Protected: []string{rules}})
	must(t, err)
	for src, protected := range map[string]string{
		rules:                      rules,
		rules + "/agent-1.yaml":    rules,
		h.path("etc"):              rules,
		h.path("user"):             engine,
		h.path("user/docker.sock"): engine,
	} {
		_, err := v.Validate(api.ContainerCreateRequest{Image: "a", Volumes: []string{src + ":/x"}})
		want := fmt.Sprintf("bind mount denied - %q exposes protected host path %q", src, protected)
		if err == nil || err.Error() != want {
			t.Errorf("bind %s: error = %v, want %s", src, err, want)
		}
	}
}

// TestVolumeSpecs is the bind syntax and the protected destinations
// (S008-FR-033, AS-015, EC-018, SC-012).
func TestVolumeSpecs(t *testing.T) {
	h := newHost(t)
	v := h.validator(t)
	work := h.path("work")
	inv, forb := apikit.ErrInvalid, apikit.ErrForbidden
	tests := []struct {
		name  string
		specs []string
		field string
		kind  *apikit.Kind
		want  string
		mount *Mount // the last mount, when accepted
	}{
		{name: "bind rw default", specs: []string{work + ":/workspace"}, mount: &Mount{Type: MountBind, Source: work, Target: "/workspace"}},
		{name: "bind rw", specs: []string{work + ":/workspace:rw"}, mount: &Mount{Type: MountBind, Source: work, Target: "/workspace"}},
		{name: "bind ro, destination cleaned", specs: []string{work + "/:/workspace/.outcall/:ro"}, mount: &Mount{Type: MountBind, Source: work, Target: "/workspace/.outcall", ReadOnly: true}},
		{name: "named volume", specs: []string{"cache_1.v:/cache"}, mount: &Mount{Type: MountVolume, Source: "cache_1.v", Target: "/cache"}},
		{name: "sibling of the shim", specs: []string{work + ":/usr/local/bin/outcall2"}, mount: &Mount{Type: MountBind, Source: work, Target: "/usr/local/bin/outcall2"}},
		{name: "below /tmp", specs: []string{work + ":/tmp/work"}, mount: &Mount{Type: MountBind, Source: work, Target: "/tmp/work"}},

		{name: "one part", specs: []string{work}, field: "volumes[0]", kind: inv, want: "need source:destination[:ro|rw]"},
		{name: "four parts", specs: []string{work + ":/a:ro:z"}, field: "volumes[0]", kind: inv, want: "need source:destination"},
		{name: "empty source", specs: []string{":/a"}, field: "volumes[0]", kind: inv, want: "need source:destination"},
		{name: "empty destination", specs: []string{work + ":"}, field: "volumes[0]", kind: inv, want: "need source:destination"},
		{name: "bad option", specs: []string{work + ":/a:z"}, field: "volumes[0]", kind: inv, want: `option "z" is not ro or rw`},
		{name: "relative destination", specs: []string{work + ":data"}, field: "volumes[0]", kind: inv, want: `destination "data" is not an absolute path`},
		{name: "relative source", specs: []string{"./work:/a"}, field: "volumes[0]", kind: inv, want: `source "./work" is neither an absolute host path nor a volume name`},
		{name: "multi-segment source", specs: []string{"a/b:/a"}, field: "volumes[0]", kind: inv, want: "neither an absolute host path nor a volume name"},
		{name: "home source", specs: []string{"~:/a"}, field: "volumes[0]", kind: inv, want: "neither"},
		{name: "tmpfs destination", specs: []string{work + ":/tmp"}, field: "volumes[0]", kind: inv, want: `destination "/tmp" is the container's tmpfs`},
		{name: "duplicate destination", specs: []string{work + ":/a", "v1:/a/"}, field: "volumes[1]", kind: inv, want: `destination "/a" is already mounted by volumes[0]`},

		{name: "agent socket destination", specs: []string{work + ":/run/outcall/agent.sock"}, field: "volumes[0]", kind: forb, want: `would cover "/run/outcall/agent.sock"`},
		{name: "agent socket parent", specs: []string{work + ":/run/outcall"}, field: "volumes[0]", kind: forb, want: `would cover "/run/outcall/agent.sock"`},
		{name: "run", specs: []string{work + ":/run"}, field: "volumes[0]", kind: forb, want: `would cover "/run/outcall/agent.sock"`},
		{name: "shim destination", specs: []string{work + ":/usr/local/bin/outcall"}, field: "volumes[0]", kind: forb, want: `would cover "/usr/local/bin/outcall"`},
		{name: "shim parent", specs: []string{work + ":/usr/local/bin/"}, field: "volumes[0]", kind: forb, want: `would cover "/usr/local/bin/outcall"`},
		{name: "usr", specs: []string{work + ":/usr"}, field: "volumes[0]", kind: forb, want: `would cover "/usr/local/bin/outcall"`},
		{name: "resolv.conf", specs: []string{work + ":/etc/resolv.conf:ro"}, field: "volumes[0]", kind: forb, want: `would cover "/etc/resolv.conf"`},
		{name: "etc", specs: []string{work + ":/etc"}, field: "volumes[0]", kind: forb, want: `would cover "/etc/resolv.conf"`},
		{name: "root", specs: []string{work + ":/"}, field: "volumes[0]", kind: forb, want: `destination "/" would cover`},
		{name: "root via dots", specs: []string{work + ":/etc/.."}, field: "volumes[0]", kind: forb, want: `destination "/" would cover`},
		{name: "named volume on etc", specs: []string{"vol:/etc"}, field: "volumes[0]", kind: forb, want: `would cover "/etc/resolv.conf"`},
		{name: "named volume at root", specs: []string{"vol:/"}, field: "volumes[0]", kind: forb, want: "would cover"},
		{name: "second entry named", specs: []string{"vol:/data", work + ":/etc"}, field: "volumes[1]", kind: forb, want: "would cover"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Validate(api.ContainerCreateRequest{Image: "a", Volumes: tt.specs})
			if tt.field == "" {
				must(t, err)
				if got := c.Mounts[len(c.Mounts)-1]; got != *tt.mount {
					t.Errorf("mount %+v, want %+v", got, *tt.mount)
				}
				return
			}
			fieldError(t, err, tt.field, tt.kind, tt.want)
		})
	}
}

// TestHelperMounts is S008-FR-004, FR-005, FR-039, EC-015..017, SC-004.
func TestHelperMounts(t *testing.T) {
	h := newHost(t)
	c, err := h.validator(t).Validate(api.ContainerCreateRequest{Image: "a", IncludeHelperMounts: true})
	must(t, err)
	want := []Mount{
		{Type: MountBind, Source: AgentSocketDir(h.agentSock), Target: "/run/outcall", ReadOnly: true},
		{Type: MountBind, Source: h.shim, Target: "/usr/local/bin/outcall", ReadOnly: true},
	}
	if len(c.Mounts) != 2 || c.Mounts[0] != want[0] || c.Mounts[1] != want[1] {
		t.Errorf("helper mounts %+v, want %+v", c.Mounts, want)
	}

	// Bad sources, each in a layout of its own.
	const field = "include_outcall_helper_mounts"
	tests := []struct {
		name  string
		setup func(t *testing.T, h host, p *Policy)
		kind  *apikit.Kind
		want  func(p Policy) string
	}{
		{"agent socket missing", func(t *testing.T, h host, p *Policy) { p.AgentSocket = h.path("run/outcall/none.sock") },
			apikit.ErrInvalid, func(p Policy) string { return fmt.Sprintf("agent socket not found at %q", p.AgentSocket) }},
		{"shim missing", func(t *testing.T, h host, p *Policy) { p.ShimPath = h.path("bin/none") },
			apikit.ErrInvalid, func(p Policy) string { return fmt.Sprintf("shim binary not found at %q", p.ShimPath) }},
		{"agent socket is a symlink", func(t *testing.T, h host, p *Policy) {
			p.AgentSocket = h.path("links/agent.sock")
			must(t, os.Symlink(h.agentSock, p.AgentSocket))
		}, apikit.ErrInvalid, func(p Policy) string { return fmt.Sprintf("agent socket at %q is a symlink", p.AgentSocket) }},
		{"agent socket is a file", func(t *testing.T, h host, p *Policy) {
			p.AgentSocket = h.path("run/outcall/file.sock")
			must(t, os.WriteFile(p.AgentSocket, nil, 0o644))
		}, apikit.ErrInvalid, func(p Policy) string { return fmt.Sprintf("agent socket at %q is not a Unix socket", p.AgentSocket) }},
		{"agent socket is a directory", func(t *testing.T, h host, p *Policy) { p.AgentSocket = h.path("run/outcall") },
			apikit.ErrInvalid, func(p Policy) string { return "is not a Unix socket" }},
		{"shim is a symlink", func(t *testing.T, h host, p *Policy) {
			p.ShimPath = h.path("links/shim")
			must(t, os.Symlink(h.shim, p.ShimPath))
		}, apikit.ErrInvalid, func(p Policy) string { return fmt.Sprintf("shim binary at %q is a symlink", p.ShimPath) }},
		{"shim is a directory", func(t *testing.T, h host, p *Policy) { p.ShimPath = h.path("bin") },
			apikit.ErrInvalid, func(p Policy) string { return "is not a regular file" }},
		{"shim is a socket", func(t *testing.T, h host, p *Policy) { p.ShimPath = h.hostSock },
			apikit.ErrInvalid, func(p Policy) string { return "is not a regular file" }},
		{"shim not executable", func(t *testing.T, h host, p *Policy) {
			p.ShimPath = h.path("bin/plain")
			must(t, os.WriteFile(p.ShimPath, nil, 0o644))
		}, apikit.ErrInvalid, func(p Policy) string { return fmt.Sprintf("shim binary at %q is not executable", p.ShimPath) }},
		{"agent socket configured as the host socket", func(t *testing.T, h host, p *Policy) { p.AgentSocket = h.hostSock },
			apikit.ErrForbidden, func(p Policy) string {
				return fmt.Sprintf("bind mount denied - %q exposes protected host path %q", p.HostSocket, p.HostSocket)
			}},
		{"agent socket a hard link of the host socket", func(t *testing.T, h host, p *Policy) {
			p.AgentSocket = h.path("other/agent.sock")
			must(t, os.Link(h.hostSock, p.AgentSocket))
		}, apikit.ErrForbidden, func(p Policy) string { return fmt.Sprintf("exposes protected host path %q", p.HostSocket) }},
		{"shim inside a protected directory", func(t *testing.T, h host, p *Policy) {
			dir := h.path("rules")
			must(t, os.MkdirAll(dir, 0o755))
			p.ShimPath = filepath.Join(dir, "outcall-agent")
			must(t, os.WriteFile(p.ShimPath, nil, 0o755))
			p.Protected = []string{dir}
		}, apikit.ErrForbidden, func(p Policy) string { return fmt.Sprintf("exposes protected host path %q", p.Protected[0]) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			p := Policy{HostSocket: h.hostSock, AgentSocket: h.agentSock, ShimPath: h.shim}
			tt.setup(t, h, &p)
			v, err := NewValidator(p)
			must(t, err)
			// Off: the sources are not looked at (S008-FR-004).
			if _, err := v.Validate(api.ContainerCreateRequest{Image: "a"}); err != nil {
				t.Fatalf("helper mounts off: %v", err)
			}
			_, err = v.Validate(api.ContainerCreateRequest{Image: "a", IncludeHelperMounts: true})
			fieldError(t, err, field, tt.kind, tt.want(p))
		})
	}
}
