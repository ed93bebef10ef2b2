package container

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"outcall.dev/outcall/pkg/api"
)

func testFacts() Facts {
	mac, _ := net.ParseMAC("02:42:0a:c8:00:07")
	return Facts{
		Network:    "outcall-default",
		NetworkID:  "4f2b0c1d9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c",
		IPv4:       netip.MustParseAddr("10.200.0.7"),
		MAC:        mac,
		Gateway:    netip.MustParsePrefix("10.200.0.1/24"),
		DNS:        netip.MustParseAddr("10.200.0.1"),
		Proxy:      netip.MustParseAddrPort("10.200.0.1:8080"),
		Identity:   42,
		APIVersion: "1.51",
		CreatedAt:  time.Date(2026, 4, 21, 14, 30, 0, 0, time.FixedZone("CEST", 2*3600)),
	}
}

// TestBuildHardening asserts every property of the S008 security profile
// (§1.4) one by one, on a request that tries to ask for more.
func TestBuildHardening(t *testing.T) {
	h := newHost(t)
	c, err := h.validator(t).Validate(api.ContainerCreateRequest{
		Image:       "registry.example:5000/team/agent",
		Name:        ptr("review-1"),
		MemoryLimit: ptr(int64(256 << 20)),
		CPUShares:   ptr(int64(512)),
		Env:         []string{"MY_VAR=value", "HTTP_PROXY=http://evil.example:1", "no_proxy=*"},
		Cmd:         []string{"run-agent"},
		Entrypoint:  []string{"/bin/sh", "-c"},
		WorkingDir:  "/workspace",
		Volumes:     []string{h.path("work") + ":/workspace", "cache:/cache:ro"},
		Interactive: true,
		TTY:         true,

		IncludeHelperMounts: true,
	})
	must(t, err)
	f := testFacts()
	s, err := Build(c, f)
	must(t, err)
	cfg, hc, nc := s.Config, s.HostConfig, s.Networking
	proxy := "http://10.200.0.1:8080"

	type prop struct {
		name string
		ok   bool
		got  any
	}
	props := []prop{
		{"name exact (FR-010)", s.Name == "review-1", s.Name},
		{"image parsed, tag defaulted (FR-037)", cfg.Image == "registry.example:5000/team/agent:latest", cfg.Image},
		{"numeric non-root user (FR-027.b)", cfg.User == "65532:65532", cfg.User},
		{"cmd", slices.Equal(cfg.Cmd, []string{"run-agent"}), cfg.Cmd},
		{"entrypoint", slices.Equal(cfg.Entrypoint, []string{"/bin/sh", "-c"}), cfg.Entrypoint},
		{"working dir", cfg.WorkingDir == "/workspace", cfg.WorkingDir},
		{"interactive", cfg.OpenStdin && cfg.AttachStdin, cfg.OpenStdin},
		{"tty", cfg.Tty, cfg.Tty},
		{"no exposed ports", len(cfg.ExposedPorts) == 0, cfg.ExposedPorts},
		{"networking not disabled", !cfg.NetworkDisabled, cfg.NetworkDisabled},

		{"label managed-by (FR-002.g)", cfg.Labels["managed-by"] == "outcalld", cfg.Labels},
		{"label outcall.network (FR-002.g)", cfg.Labels["outcall.network"] == "outcall-default", cfg.Labels},
		{"label outcall.created-at, RFC 3339 UTC (FR-029)", cfg.Labels["outcall.created-at"] == "2026-04-21T12:30:00Z", cfg.Labels},
		{"label outcall.agent-name (S013)", cfg.Labels["outcall.agent-name"] == "review", cfg.Labels},
		{"label outcall.identity", cfg.Labels["outcall.identity"] == "42", cfg.Labels},
		{"exactly those labels", len(cfg.Labels) == 5, cfg.Labels},

		{"caller env kept", slices.Contains(cfg.Env, "MY_VAR=value"), cfg.Env},
		{"caller proxy env dropped", !slices.Contains(cfg.Env, "HTTP_PROXY=http://evil.example:1") && !slices.Contains(cfg.Env, "no_proxy=*"), cfg.Env},
		{"HTTP_PROXY (FR-002.d)", slices.Contains(cfg.Env, "HTTP_PROXY="+proxy), cfg.Env},
		{"http_proxy", slices.Contains(cfg.Env, "http_proxy="+proxy), cfg.Env},
		{"HTTPS_PROXY (FR-002.d)", slices.Contains(cfg.Env, "HTTPS_PROXY="+proxy), cfg.Env},
		{"https_proxy", slices.Contains(cfg.Env, "https_proxy="+proxy), cfg.Env},
		{"NO_PROXY (FR-002.e)", slices.Contains(cfg.Env, "NO_PROXY=localhost,127.0.0.1"), cfg.Env},
		{"no_proxy", slices.Contains(cfg.Env, "no_proxy=localhost,127.0.0.1"), cfg.Env},
		{"each proxy variable once", countPrefix(cfg.Env, "HTTP_PROXY=") == 1 && countPrefix(cfg.Env, "no_proxy=") == 1, cfg.Env},
		{"env is caller's then daemon's", len(cfg.Env) == 7 && cfg.Env[0] == "MY_VAR=value", cfg.Env},

		{"network mode is the managed network (FR-038)", hc.NetworkMode == "outcall-default", hc.NetworkMode},
		{"DNS only the filter (FR-007)", slices.Equal(hc.DNS, []string{"10.200.0.1"}), hc.DNS},
		{"DNS option ndots:0 (FR-038)", slices.Equal(hc.DNSOptions, []string{"ndots:0"}), hc.DNSOptions},
		{"no search domain", slices.Equal(hc.DNSSearch, []string{"."}), hc.DNSSearch},
		{"no extra hosts", len(hc.ExtraHosts) == 0, hc.ExtraHosts},
		{"init (FR-038)", hc.Init != nil && *hc.Init, hc.Init},
		{"read-only root (FR-025)", hc.ReadonlyRootfs, hc.ReadonlyRootfs},
		{"tmpfs at /tmp (FR-025)", len(hc.Tmpfs) == 1 && hc.Tmpfs["/tmp"] == "rw,nosuid,nodev,size=64m", hc.Tmpfs},
		{"not privileged (FR-026)", !hc.Privileged, hc.Privileged},
		{"all capabilities dropped (FR-027)", slices.Equal(hc.CapDrop, []string{"ALL"}), hc.CapDrop},
		{"no capability added (FR-027.a)", len(hc.CapAdd) == 0, hc.CapAdd},
		{"no-new-privileges (FR-027.a)", slices.Equal(hc.SecurityOpt, []string{"no-new-privileges:true"}), hc.SecurityOpt},
		{"private IPC", hc.IpcMode == container.IPCModePrivate, hc.IpcMode},
		{"host PID namespace not shared", hc.PidMode == "", hc.PidMode},
		{"host user namespace not shared", hc.UsernsMode == "", hc.UsernsMode},
		{"no devices", len(hc.Devices) == 0, hc.Devices},
		{"no published ports", len(hc.PortBindings) == 0 && !hc.PublishAllPorts, hc.PortBindings},
		{"no legacy binds", len(hc.Binds) == 0, hc.Binds},
		{"no volumes-from", len(hc.VolumesFrom) == 0, hc.VolumesFrom},
		{"memory limit (FR-016.a/d, AS-012)", hc.Memory == 268435456, hc.Memory},
		{"cpu shares (FR-016.b/d, AS-012)", hc.CPUShares == 512, hc.CPUShares},
		{"pids limit (FR-016.c)", hc.PidsLimit != nil && *hc.PidsLimit == 256, hc.PidsLimit},
		{"not removed on exit (inspect must find it)", !hc.AutoRemove, hc.AutoRemove},

		{"mounts: caller's then helpers", len(hc.Mounts) == 4, hc.Mounts},
		{"bind mount rw", hc.Mounts[0] == mount.Mount{Type: mount.TypeBind, Source: h.path("work"), Target: "/workspace"}, hc.Mounts[0]},
		{"named volume ro", hc.Mounts[1] == mount.Mount{Type: mount.TypeVolume, Source: "cache", Target: "/cache", ReadOnly: true}, hc.Mounts[1]},
		{"agent socket ro (FR-002.b)", hc.Mounts[2] == mount.Mount{Type: mount.TypeBind, Source: AgentSocketDir(h.agentSock), Target: "/run/outcall", ReadOnly: true}, hc.Mounts[2]},
		{"shim ro (FR-002.c, FR-005)", hc.Mounts[3] == mount.Mount{Type: mount.TypeBind, Source: h.shim, Target: "/usr/local/bin/outcall", ReadOnly: true}, hc.Mounts[3]},
		{"no host socket mounted (FR-008)", !slices.ContainsFunc(hc.Mounts, func(m mount.Mount) bool { return strings.HasSuffix(m.Source, "host.sock") }), hc.Mounts},

		{"exactly one network (FR-038)", len(nc.EndpointsConfig) == 1, nc.EndpointsConfig},
	}
	ep := nc.EndpointsConfig["outcall-default"]
	props = append(props,
		prop{"the endpoint is the network mode's", ep != nil, nc.EndpointsConfig},
	)
	if ep != nil {
		props = append(props,
			prop{"endpoint pins the inspected network id", ep.NetworkID == f.NetworkID, ep.NetworkID},
			prop{"fixed IPv4", ep.IPAMConfig != nil && ep.IPAMConfig.IPv4Address == "10.200.0.7", ep.IPAMConfig},
			prop{"no IPv6 address", ep.IPAMConfig != nil && ep.IPAMConfig.IPv6Address == "", ep.IPAMConfig},
			prop{"fixed MAC on the endpoint (API >= 1.44)", ep.MacAddress == "02:42:0a:c8:00:07", ep.MacAddress},
			//lint:ignore SA1019 the deprecated field must stay empty from API 1.44 on
			prop{"no container-wide MAC (API >= 1.44)", cfg.MacAddress == "", cfg.MacAddress},
			prop{"no aliases or links", len(ep.Aliases) == 0 && len(ep.Links) == 0, ep.Aliases},
		)
	}
	for _, p := range props {
		if !p.ok {
			t.Errorf("%s: got %v", p.name, p.got)
		}
	}
}

func countPrefix(env []string, prefix string) int {
	n := 0
	for _, e := range env {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

// TestBuildDefaults: a request naming nothing gets the spec's defaults,
// and no helper mount (S008-FR-004, SC-004).
func TestBuildDefaults(t *testing.T) {
	c, err := newHost(t).validator(t).Validate(api.ContainerCreateRequest{Image: "my-agent:latest"})
	must(t, err)
	s, err := Build(c, testFacts())
	must(t, err)
	hc := s.HostConfig
	if hc.Memory != 536870912 || hc.CPUShares != 1024 || *hc.PidsLimit != 256 {
		t.Errorf("limits %d %d %d, want 536870912 1024 256", hc.Memory, hc.CPUShares, *hc.PidsLimit)
	}
	if len(hc.Mounts) != 0 {
		t.Errorf("mounts %v, want none", hc.Mounts)
	}
	if s.Config.User != api.DefaultContainerUser {
		t.Errorf("user %q", s.Config.User)
	}
	if got := s.Config.Env; !slices.Equal(got, ProxyEnv(netip.MustParseAddrPort("10.200.0.1:8080"))) {
		t.Errorf("env %q, want the proxy variables only", got)
	}
}

// TestBuildOldEngineMAC: below API 1.44 (Debian's docker.io 20.10 speaks
// 1.41) the MAC goes in the container-wide field, since the client refuses
// a per-endpoint one.
func TestBuildOldEngineMAC(t *testing.T) {
	c, err := newHost(t).validator(t).Validate(api.ContainerCreateRequest{Image: "a"})
	must(t, err)
	for _, tt := range []struct {
		version            string
		configMAC, endpMAC string
	}{
		{"1.41", "02:42:0a:c8:00:07", ""},
		{"1.43", "02:42:0a:c8:00:07", ""},
		{"1.44", "", "02:42:0a:c8:00:07"},
		{"1.51", "", "02:42:0a:c8:00:07"},
	} {
		f := testFacts()
		f.APIVersion = tt.version
		s, err := Build(c, f)
		must(t, err)
		//lint:ignore SA1019 the field under test
		got := s.Config.MacAddress
		if ep := s.Networking.EndpointsConfig[f.Network]; got != tt.configMAC || ep.MacAddress != tt.endpMAC {
			t.Errorf("API %s: config MAC %q, endpoint MAC %q; want %q, %q", tt.version, got, ep.MacAddress, tt.configMAC, tt.endpMAC)
		}
	}
}

// TestBuildFacts: facts Outcall could not enforce are refused.
func TestBuildFacts(t *testing.T) {
	c, err := newHost(t).validator(t).Validate(api.ContainerCreateRequest{Image: "a"})
	must(t, err)
	tests := []struct {
		name string
		edit func(*Facts)
		want string
	}{
		{"no network id", func(f *Facts) { f.NetworkID = "" }, "inspected id"},
		{"other network", func(f *Facts) { f.Network = "outcall-staging" }, `the request names "outcall-default"`},
		{"address outside the subnet", func(f *Facts) { f.IPv4 = netip.MustParseAddr("10.200.1.7") }, "not a host address of 10.200.0.0/24"},
		{"address is the gateway", func(f *Facts) { f.IPv4 = netip.MustParseAddr("10.200.0.1") }, "not a host address"},
		{"address is the subnet", func(f *Facts) { f.IPv4 = netip.MustParseAddr("10.200.0.0") }, "not a host address"},
		{"IPv6 address", func(f *Facts) { f.IPv4 = netip.MustParseAddr("fd00::7") }, "not a host address"},
		{"no MAC", func(f *Facts) { f.MAC = nil }, "MAC"},
		{"IPv6 DNS", func(f *Facts) { f.DNS = netip.MustParseAddr("fd00::1") }, "DNS"},
		{"no proxy port", func(f *Facts) { f.Proxy = netip.AddrPortFrom(f.DNS, 0) }, "proxy"},
		{"no identity", func(f *Facts) { f.Identity = 0 }, "identity"},
		{"no API version", func(f *Facts) { f.APIVersion = "" }, "API version"},
		{"no time", func(f *Facts) { f.CreatedAt = time.Time{} }, "creation time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := testFacts()
			tt.edit(&f)
			if _, err := Build(c, f); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Build = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := Build(Create{Network: "outcall-default"}, testFacts()); err == nil {
		t.Error("Build of an unvalidated request succeeded")
	}
}
