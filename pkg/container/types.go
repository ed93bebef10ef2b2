package container

// This file holds the S008 wire types and constants. It imports nothing
// from Docker on purpose: the CLI must not link the Docker client, so these
// belong in pkg/api, and moving them there is a cut and paste.

import "time"

// Constants of the shared API (S008-FR-024, §1.5).
const (
	// NamePrefix starts a generated container name: "outcall-" and 8
	// lowercase hex digits (S008-FR-010).
	NamePrefix = "outcall-"
	// ShimContainerPath is where the shim is mounted, read-only, when the
	// helper mounts are on (S008-FR-005).
	ShimContainerPath = "/usr/local/bin/outcall"
	// AgentSocketContainerPath is where the agent socket is mounted,
	// read-only, when the helper mounts are on (S008-FR-002.b).
	AgentSocketContainerPath = "/run/outcall/agent.sock"
	// ResolvConfPath is the resolver file Docker writes from the daemon's
	// DNS settings; no caller mount may shadow it (S008-FR-033).
	ResolvConfPath = "/etc/resolv.conf"
	// TmpPath is the writable tmpfs of the read-only root (S008-FR-025).
	TmpPath = "/tmp"
	// TmpfsOptions are the mount options of the /tmp tmpfs. The size is
	// our choice; the spec names none.
	TmpfsOptions = "rw,nosuid,nodev,size=64m"
	// DefaultShimHostPath is --shim-host-path's default.
	DefaultShimHostPath = "/usr/local/bin/outcall-agent"

	// DefaultStopTimeout is the wait between SIGTERM and SIGKILL
	// (S008-FR-012, FR-028).
	DefaultStopTimeout = 10 * time.Second
	// DefaultMemoryLimit is a container's memory limit in bytes when the
	// request names none (S008-FR-016.a).
	DefaultMemoryLimit int64 = 512 * 1024 * 1024
	// MinMemoryLimit is the smallest memory limit a request may ask for
	// (S008-FR-016.e; Docker's own floor).
	MinMemoryLimit int64 = 6 * 1024 * 1024
	// DefaultCPUShares is a container's CPU weight when the request names
	// none (S008-FR-016.b).
	DefaultCPUShares int64 = 1024
	// MinCPUShares and MaxCPUShares bound a requested CPU weight
	// (S008-FR-016.e; the kernel's cpu.shares range).
	MinCPUShares int64 = 2
	MaxCPUShares int64 = 262144
	// DefaultPidsLimit caps the processes of a container (S008-FR-016.c).
	DefaultPidsLimit int64 = 256
	// DefaultUser is the numeric non-root user of a container whose
	// request names none (S008-FR-027.b, IF-001).
	DefaultUser = "65532:65532"
	// MaxNameLen bounds a container name. It is the endpoint registry's
	// bound, so every container Outcall creates can be registered as an
	// identity under its own name.
	MaxNameLen = 64

	// Redacted replaces every environment value in inspect output
	// (S008-FR-015).
	Redacted = "<redacted>"
	// NoProxy is the NO_PROXY (and no_proxy) value of every managed
	// container (S008-FR-002.e).
	NoProxy = "localhost,127.0.0.1"
)

// Labels Outcall puts on every container it creates (S008-FR-002.g,
// FR-029). Discovery and every lifecycle check use LabelManagedBy, never
// the name.
const (
	// LabelManagedBy marks a managed container; its value is ManagedBy.
	LabelManagedBy = "managed-by"
	// ManagedBy is LabelManagedBy's value.
	ManagedBy = "outcalld"
	// LabelNetwork names the container's Outcall network; only addresses
	// on that network are trusted as the container's (S013 [impl]).
	LabelNetwork = "outcall.network"
	// LabelCreatedAt is the creation time, RFC 3339 in UTC.
	LabelCreatedAt = "outcall.created-at"
	// LabelAgentName is the agent.name rules see (S013-FR-004). The spec
	// names no label for it; this is ours, for operators filtering
	// `docker ps`. The identity registry, not this label, is what
	// enforcement trusts.
	LabelAgentName = "outcall.agent-name"
	// LabelIdentity is the numeric identity the network controller gave
	// the container before it was created. Informational, like
	// LabelAgentName: anyone with the Docker socket can forge a label.
	LabelIdentity = "outcall.identity"
)

// CreateRequest is the body of POST /api/v1/container/create
// (ContainerCreateRequest, S008 §1.5). Only Image is required; every other
// field has the default the spec gives it. Validator.Validate checks it
// before anything is asked of Docker.
type CreateRequest struct {
	// Image is the image reference; it must exist locally (S008-FR-017).
	Image string `json:"image"`
	// Network is the full network name; nil is DefaultNetwork.
	Network *string `json:"network,omitempty"`
	// Name is used exactly; nil is NamePrefix and 8 random hex digits.
	Name *string `json:"name,omitempty"`
	// User is "UID:GID", both numeric and non-zero; nil is DefaultUser.
	User *string `json:"user,omitempty"`
	// MemoryLimit is in bytes; nil is DefaultMemoryLimit.
	MemoryLimit *int64 `json:"memory_limit,omitempty"`
	// CPUShares is the CPU weight; nil is DefaultCPUShares.
	CPUShares *int64 `json:"cpu_shares,omitempty"`
	// Env entries are "NAME=value". The proxy variables are the daemon's:
	// a caller's own are dropped.
	Env []string `json:"env,omitempty"`
	// Cmd and Entrypoint override the image's.
	Cmd        []string `json:"cmd,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	// WorkingDir is an absolute path inside the container.
	WorkingDir string `json:"working_dir,omitempty"`
	// Volumes are "source:destination[:ro|rw]": an absolute host path (a
	// bind) or a single-segment volume name (a named volume).
	Volumes []string `json:"volumes,omitempty"`
	// IncludeHelperMounts mounts the agent socket and the shim, read-only
	// (S008-FR-004, FR-005). Off unless set.
	IncludeHelperMounts bool `json:"include_outcall_helper_mounts,omitempty"`
	// Interactive keeps stdin open; TTY allocates a terminal.
	Interactive bool `json:"interactive,omitempty"`
	TTY         bool `json:"tty,omitempty"`
}

// CreateResult answers a create (ContainerCreateResult). ContainerID is
// Docker's 64-hex id (S008 conflict 7).
type CreateResult struct {
	ContainerID string `json:"container_id"`
	Name        string `json:"name"`
	Created     bool   `json:"created"`
}

// Info is one managed container of GET /api/v1/containers (ContainerInfo).
type Info struct {
	ContainerID string `json:"container_id"`
	Name        string `json:"name"`
	Image       string `json:"image"`
	State       string `json:"state"`
	Network     string `json:"network"`
	CreatedAt   string `json:"created_at"`
}

// InspectResult is GET /api/v1/container?name= (ContainerInspectResult).
// Env holds names only, every value Redacted (S008-FR-015).
type InspectResult struct {
	ContainerID string   `json:"container_id"`
	Name        string   `json:"name"`
	Image       string   `json:"image"`
	State       string   `json:"state"`
	Network     string   `json:"network"`
	IPAddress   *string  `json:"ip_address"`
	Mounts      []string `json:"mounts"`
	Env         []string `json:"env"`
	CreatedAt   string   `json:"created_at"`
}

// StopRequest is the body of POST /api/v1/container/stop. Timeout is in
// seconds; nil is DefaultStopTimeout.
type StopRequest struct {
	Name    string `json:"name"`
	Timeout *int64 `json:"timeout,omitempty"`
}

// StopResult answers a stop; Stopped is false for a container that was not
// running (S008-FR-034, EC-007).
type StopResult struct {
	Name    string `json:"name"`
	Stopped bool   `json:"stopped"`
}

// RemoveRequest is the body of POST /api/v1/container/remove. Force stops
// a running container first.
type RemoveRequest struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// RemoveResult answers a remove; Removed is false for a container that did
// not exist (S008-FR-034, EC-008).
type RemoveResult struct {
	Name    string `json:"name"`
	Removed bool   `json:"removed"`
}

// PullRequest is the body of POST /api/v1/container/pull.
type PullRequest struct {
	Image string `json:"image"`
}

// PullResult answers a pull; Pulled is false when the image was already
// present and current.
type PullResult struct {
	Image  string `json:"image"`
	Pulled bool   `json:"pulled"`
}
