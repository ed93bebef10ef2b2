package container

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/endpoint"
)

// Policy is the host configuration every create request is checked
// against: the daemon's flags and the engine it talks to.
type Policy struct {
	// HostSocket is the operator API socket (--socket). Required; no bind
	// may expose it (S008-FR-008).
	HostSocket string
	// AgentSocket is the agent API socket on the host
	// (--agent-socket-host-path). Required: it is the agent-socket helper
	// mount's source, and no caller bind may expose it (only the helper
	// mount puts it in a container, at api.AgentSocketContainerPath, through
	// AgentSocketDir).
	AgentSocket string
	// ShimPath is the shim binary on the host (--shim-host-path);
	// DefaultShimHostPath if empty.
	ShimPath string
	// EngineSocket is the Unix socket of the Docker endpoint the daemon
	// uses (SocketPath of the client's DaemonHost), protected like the
	// static EngineProtectedPaths: a rootless engine's socket is in no
	// static list.
	EngineSocket string
	// Protected are more host paths no bind may expose: the daemon passes
	// its rules directory, state directory and bpffs pin directory, whose
	// content is policy.
	Protected []string
}

// Validator checks create requests against a Policy. It keeps no state
// between calls: the deny list's canonical forms are read on every
// validation, so a socket that appears later is protected too.
type Validator struct {
	p Policy
}

// NewValidator checks the policy: every path must be absolute and clean.
func NewValidator(p Policy) (*Validator, error) {
	if p.ShimPath == "" {
		p.ShimPath = DefaultShimHostPath
	}
	check := func(field, v string, required bool) error {
		switch {
		case v == "" && !required:
			return nil
		case v == "" || !filepath.IsAbs(v) || filepath.Clean(v) != v:
			return fmt.Errorf("container policy: %s %q must be an absolute, clean path", field, v)
		}
		return nil
	}
	if err := check("HostSocket", p.HostSocket, true); err != nil {
		return nil, err
	}
	if err := check("AgentSocket", p.AgentSocket, true); err != nil {
		return nil, err
	}
	if err := check("ShimPath", p.ShimPath, true); err != nil {
		return nil, err
	}
	if err := check("EngineSocket", p.EngineSocket, false); err != nil {
		return nil, err
	}
	for i, v := range p.Protected {
		if err := check(fmt.Sprintf("Protected[%d]", i), v, true); err != nil {
			return nil, err
		}
	}
	p.Protected = slices.Clone(p.Protected)
	return &Validator{p: p}, nil
}

// MountType is how a mount's source is found.
type MountType string

// Mount types: a host path, or a Docker named volume.
const (
	MountBind   MountType = "bind"
	MountVolume MountType = "volume"
)

// Mount is one validated mount of a container.
type Mount struct {
	Type MountType
	// Source is the clean absolute host path of a bind, or the name of a
	// volume.
	Source string
	// Target is the clean absolute path in the container.
	Target   string
	ReadOnly bool
}

// Create is a validated create request: every default filled in, every
// field checked, the proxy variables of the caller dropped. Build turns it
// into Docker's configuration.
type Create struct {
	// Name is the container's name: the caller's, exactly, or a generated
	// api.ContainerPrefix name.
	Name string
	// AgentName is agent.name for the container (endpoint.AgentName(Name)).
	AgentName string
	Image     ImageRef
	// Network is the full Outcall network name.
	Network     string
	User        string
	MemoryLimit int64
	CPUShares   int64
	PidsLimit   int64
	// Env is the caller's environment without any proxy variable; Build
	// appends the daemon's.
	Env        []string
	Cmd        []string
	Entrypoint []string
	WorkingDir string
	// Mounts are the caller's volumes, then the helper mounts if asked.
	Mounts      []Mount
	Interactive bool
	TTY         bool
}

var (
	// namePattern is Docker's container name rule, bounded by MaxNameLen.
	namePattern    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)
	networkPattern = regexp.MustCompile(`^` + regexp.QuoteMeta(api.NetworkPrefix) + `[A-Za-z0-9_-]{1,64}$`)
	userPattern    = regexp.MustCompile(`^[1-9][0-9]*:[1-9][0-9]*$`)
	// volumePattern is Docker's volume name rule.
	volumePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)
)

// proxyVariables are the environment names the daemon owns, compared
// without case: a caller's HTTP_PROXY, Http_Proxy or no_proxy is dropped.
var proxyVariables = []string{"http_proxy", "https_proxy", "no_proxy"}

func isProxyVariable(name string) bool {
	return slices.Contains(proxyVariables, strings.ToLower(name))
}

// Validate checks req and fills in the defaults. It changes nothing on the
// host and asks Docker nothing, so a refused request leaves no trace; it
// reads the file system to resolve bind sources and to check the helper
// sources. The first problem found is returned as a *FieldError.
func (v *Validator) Validate(req api.ContainerCreateRequest) (Create, error) {
	var c Create
	var err error
	if c.Name, err = validateName(req.Name); err != nil {
		return Create{}, err
	}
	c.AgentName = endpoint.AgentName(c.Name)
	if c.Image, err = ParseImage("image", req.Image); err != nil {
		return Create{}, err
	}
	c.Network = api.DefaultNetworkName
	if req.Network != nil {
		if !networkPattern.MatchString(*req.Network) {
			return Create{}, invalid("network", "invalid network %q: need the full name of an Outcall network (%s and 1-64 letters, digits, '-', '_')", *req.Network, api.NetworkPrefix)
		}
		c.Network = *req.Network
	}
	c.User = api.DefaultContainerUser
	if req.User != nil {
		if err := validateUser(*req.User); err != nil {
			return Create{}, err
		}
		c.User = *req.User
	}
	c.MemoryLimit = api.DefaultMemoryLimit
	if req.MemoryLimit != nil {
		if *req.MemoryLimit < api.MinMemoryLimit {
			return Create{}, invalid("memory_limit", "invalid memory_limit %d: must be at least %d bytes (6 MiB)", *req.MemoryLimit, api.MinMemoryLimit)
		}
		c.MemoryLimit = *req.MemoryLimit
	}
	c.CPUShares = api.DefaultCPUShares
	if req.CPUShares != nil {
		if s := *req.CPUShares; s < api.MinCPUShares || s > MaxCPUShares {
			return Create{}, invalid("cpu_shares", "invalid cpu_shares %d: must be between %d and %d", s, api.MinCPUShares, MaxCPUShares)
		}
		c.CPUShares = *req.CPUShares
	}
	c.PidsLimit = api.DefaultPidsLimit
	if c.Env, err = validateEnv(req.Env); err != nil {
		return Create{}, err
	}
	if c.Cmd, err = validateArgs("cmd", req.Cmd); err != nil {
		return Create{}, err
	}
	if c.Entrypoint, err = validateArgs("entrypoint", req.Entrypoint); err != nil {
		return Create{}, err
	}
	if req.WorkingDir != "" {
		if !path.IsAbs(req.WorkingDir) || strings.ContainsRune(req.WorkingDir, 0) {
			return Create{}, invalid("working_dir", "invalid working_dir %q: need an absolute path in the container", req.WorkingDir)
		}
		c.WorkingDir = path.Clean(req.WorkingDir)
	}
	if c.Mounts, err = v.validateVolumes(req.Volumes); err != nil {
		return Create{}, err
	}
	if req.IncludeHelperMounts {
		helpers, err := v.helperMounts()
		if err != nil {
			return Create{}, err
		}
		c.Mounts = append(c.Mounts, helpers...)
	}
	c.Interactive, c.TTY = req.Interactive, req.TTY
	return c, nil
}

// NewName returns a generated container name: api.ContainerPrefix and 8 lowercase
// hex digits from the system's secure random source (S008-FR-010, EC-009).
// The digits always hold a letter: an all-decimal suffix would read as a
// replica number, and every such container would have the agent name
// "outcall" (AgentName).
func NewName() string {
	for {
		var b [4]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24)
		name := api.ContainerPrefix + hex.EncodeToString(b[:])
		if endpoint.AgentName(name) == name {
			return name
		}
	}
}

func validateName(name *string) (string, error) {
	if name == nil {
		return NewName(), nil
	}
	n := *name
	if len(n) > MaxNameLen || !namePattern.MatchString(n) {
		return "", invalid("name", "invalid name %q: need 2-%d letters, digits, '_', '.', '-', starting with a letter or digit", n, MaxNameLen)
	}
	return n, nil
}

func validateUser(u string) error {
	if !userPattern.MatchString(u) {
		return invalid("user", "invalid user %q: need numeric UID:GID, both non-zero (root is refused)", u)
	}
	uid, gid, _ := strings.Cut(u, ":")
	for _, id := range []string{uid, gid} {
		// 4294967295 is (uid_t)-1, "no id", to the kernel.
		if n, err := strconv.ParseUint(id, 10, 32); err != nil || n == 1<<32-1 {
			return invalid("user", "invalid user %q: %s is not a valid id (at most 4294967294)", u, id)
		}
	}
	return nil
}

// validateEnv checks "NAME=value" entries and drops the proxy variables.
// Its errors name the entry's index and at most its name: a value may be a
// token.
func validateEnv(env []string) ([]string, error) {
	var out []string
	seen := map[string]int{}
	for i, e := range env {
		field := fmt.Sprintf("env[%d]", i)
		name, value, ok := strings.Cut(e, "=")
		if !ok || name == "" {
			return nil, invalid(field, "invalid %s: need NAME=value", field)
		}
		if strings.ContainsRune(name, 0) || strings.ContainsRune(value, 0) {
			return nil, invalid(field, "invalid %s: contains a NUL byte", field)
		}
		if j, dup := seen[name]; dup {
			return nil, invalid(field, "invalid %s: %q is already set by env[%d]", field, name, j)
		}
		seen[name] = i
		if isProxyVariable(name) {
			continue // the daemon's own value is set by Build
		}
		out = append(out, e)
	}
	return out, nil
}

func validateArgs(field string, args []string) ([]string, error) {
	for i, a := range args {
		if strings.ContainsRune(a, 0) {
			return nil, invalid(field, "invalid %s[%d]: contains a NUL byte", field, i)
		}
	}
	return slices.Clone(args), nil
}

// protected is the bind-source deny list: the engines' paths, the host
// socket, the engine's socket, the policy's extra paths and, for caller
// binds, the agent socket (which only its helper mount may expose).
func (v *Validator) protected(withAgentSocket bool) []protectedPath {
	paths := slices.Concat(EngineProtectedPaths, []string{v.p.HostSocket, v.p.EngineSocket}, v.p.Protected)
	if withAgentSocket {
		paths = append(paths, v.p.AgentSocket, AgentSocketDir(v.p.AgentSocket))
	}
	return newProtected(paths)
}

// validateVolumes parses the caller's "source:destination[:ro|rw]" specs
// (S008-FR-033) and checks each source against the deny list (FR-009) and
// each destination against the protected destinations.
func (v *Validator) validateVolumes(specs []string) ([]Mount, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	protected := v.protected(true)
	var out []Mount
	targets := map[string]int{}
	for i, spec := range specs {
		field := fmt.Sprintf("volumes[%d]", i)
		parts := strings.Split(spec, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
			return nil, invalid(field, "invalid %s %q: need source:destination[:ro|rw]", field, spec)
		}
		src, dst := parts[0], parts[1]
		m := Mount{}
		if len(parts) == 3 {
			switch parts[2] {
			case "ro":
				m.ReadOnly = true
			case "rw":
			default:
				return nil, invalid(field, "invalid %s %q: option %q is not ro or rw", field, spec, parts[2])
			}
		}
		if !path.IsAbs(dst) {
			return nil, invalid(field, "invalid %s %q: destination %q is not an absolute path", field, spec, dst)
		}
		m.Target = path.Clean(dst)
		for _, pd := range ProtectedDestinations {
			if within(pd, m.Target) {
				return nil, forbidden(field, "invalid %s %q: destination %q would cover %q, which Outcall owns", field, spec, m.Target, pd)
			}
		}
		if m.Target == TmpPath {
			return nil, invalid(field, "invalid %s %q: destination %q is the container's tmpfs", field, spec, m.Target)
		}
		if j, dup := targets[m.Target]; dup {
			return nil, invalid(field, "invalid %s %q: destination %q is already mounted by volumes[%d]", field, spec, m.Target, j)
		}
		targets[m.Target] = i
		switch {
		case filepath.IsAbs(src):
			m.Type, m.Source = MountBind, filepath.Clean(src)
			p, err := exposes(m.Source, protected)
			if err != nil {
				return nil, invalid(field, "invalid %s: cannot check bind source %q: %v", field, src, err)
			}
			if p != "" {
				return nil, forbidden(field, "bind mount denied - %q exposes protected host path %q", src, p)
			}
		case volumePattern.MatchString(src):
			m.Type, m.Source = MountVolume, src
		default:
			return nil, invalid(field, "invalid %s %q: source %q is neither an absolute host path nor a volume name", field, spec, src)
		}
		out = append(out, m)
	}
	return out, nil
}

// helperMounts checks the helper sources (S008-FR-039, EC-015..017) and
// returns their read-only mounts. A source must be what it claims to be
// itself: a symlink is refused, never followed, and neither source may be
// a protected path (an agent socket configured as the host socket would
// hand the host API to every agent).
func (v *Validator) helperMounts() ([]Mount, error) {
	const field = "include_outcall_helper_mounts"
	sock, shim := v.p.AgentSocket, v.p.ShimPath
	fi, err := os.Lstat(sock)
	switch {
	case err != nil && os.IsNotExist(err):
		return nil, invalid(field, "agent socket not found at %q", sock)
	case err != nil:
		return nil, invalid(field, "agent socket at %q cannot be checked: %v", sock, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, invalid(field, "agent socket at %q is a symlink; configure the socket's own path", sock)
	case fi.Mode()&fs.ModeSocket == 0:
		return nil, invalid(field, "agent socket at %q is not a Unix socket", sock)
	}
	sockInfo := fi
	fi, err = os.Lstat(shim)
	switch {
	case err != nil && os.IsNotExist(err):
		return nil, invalid(field, "shim binary not found at %q", shim)
	case err != nil:
		return nil, invalid(field, "shim binary at %q cannot be checked: %v", shim, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, invalid(field, "shim binary at %q is a symlink; configure the binary's own path", shim)
	case !fi.Mode().IsRegular():
		return nil, invalid(field, "shim binary at %q is not a regular file", shim)
	case fi.Mode().Perm()&0o111 == 0:
		return nil, invalid(field, "shim binary at %q is not executable", shim)
	}
	protected := v.protected(false)
	deny := func(src string) error {
		p, err := exposes(src, protected)
		if err != nil {
			return invalid(field, "cannot check helper source %q: %v", src, err)
		}
		if p != "" {
			return forbidden(field, "bind mount denied - %q exposes protected host path %q", src, p)
		}
		return nil
	}
	for _, src := range []string{sock, shim} {
		if err := deny(src); err != nil {
			return nil, err
		}
	}
	// The socket is no protected path; the directory the container gets
	// must hold it, and nothing else.
	if err := checkAgentSocketDir(sock, sockInfo); err != nil {
		return nil, invalid(field, "%v", err)
	}
	sockDir := AgentSocketDir(sock)
	if err := deny(sockDir); err != nil {
		return nil, err
	}
	return []Mount{
		{Type: MountBind, Source: sockDir, Target: path.Dir(api.AgentSocketContainerPath), ReadOnly: true},
		{Type: MountBind, Source: shim, Target: api.ShimContainerPath, ReadOnly: true},
	}, nil
}

// LogRequest is a create request as it may be logged: slog.Any("request",
// LogRequest(req)) logs it without its environment values, names only, as
// inspect shows them. Command arguments are left out too; they may carry
// tokens as well.
func LogRequest(r api.ContainerCreateRequest) slog.LogValuer { return loggedRequest(r) }

type loggedRequest api.ContainerCreateRequest

// LogValue implements slog.LogValuer.
func (r loggedRequest) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("image", r.Image)}
	if r.Network != nil {
		attrs = append(attrs, slog.String("network", *r.Network))
	}
	if r.Name != nil {
		attrs = append(attrs, slog.String("name", *r.Name))
	}
	attrs = append(attrs,
		slog.Any("env", RedactEnv(r.Env)),
		slog.Any("volumes", r.Volumes),
		slog.Bool("helper_mounts", r.IncludeHelperMounts),
		slog.Int("cmd_args", len(r.Cmd)),
		slog.Int("entrypoint_args", len(r.Entrypoint)),
	)
	return slog.GroupValue(attrs...)
}
