package api

// Agent containers (S008). outcalld creates them hardened, on an Outcall
// network, through the Docker Engine API; operators drive it through the
// host API (never the agent API, S008-FR-019). Names on the wire are full
// names: a container's name is used exactly as given, and a network is
// its full name ("outcall-staging"), the CLI adding ContainerPrefix to the
// suffix an operator types (S008 conflicts 4 and 5).

// Constants of the Docker manager (S008-FR-024, §1.5).
const (
	// ContainerPrefix starts a generated container name: "outcall-" and 8
	// random lowercase hex digits (S008-FR-010). It is NetworkPrefix too.
	ContainerPrefix = "outcall-"
	// ShimContainerPath is where the outcall-agent shim is mounted,
	// read-only, when the helper mounts are on (S008-FR-005).
	ShimContainerPath = "/usr/local/bin/outcall"
	// AgentSocketContainerPath is where the agent socket is mounted,
	// read-only, when the helper mounts are on (S008-FR-002.b).
	AgentSocketContainerPath = "/run/outcall/agent.sock"
	// DefaultStopTimeoutSecs is the wait between SIGTERM and SIGKILL of a
	// stop that names none (S008-FR-012, FR-028).
	DefaultStopTimeoutSecs int64 = 10
	// DefaultMemoryLimit is a container's memory limit in bytes when the
	// create request names none (S008-FR-016.a).
	DefaultMemoryLimit int64 = 512 * 1024 * 1024
	// MinMemoryLimit is the smallest memory limit, in bytes, a create
	// request may ask for (S008-FR-016.e).
	MinMemoryLimit int64 = 6 * 1024 * 1024
	// DefaultCPUShares is a container's CPU weight when the create request
	// names none (S008-FR-016.b).
	DefaultCPUShares int64 = 1024
	// MinCPUShares is the smallest CPU weight a create request may ask for
	// (S008-FR-016.e).
	MinCPUShares int64 = 2
	// DefaultPidsLimit caps the processes of every managed container
	// (S008-FR-016.c).
	DefaultPidsLimit int64 = 256
	// DefaultContainerUser is the numeric non-root UID:GID of a container
	// whose create request names no user (S008-FR-027.b, IF-001).
	DefaultContainerUser = "65532:65532"
	// RedactedValue replaces every environment value in an inspect result:
	// values may be tokens, names are what diagnostics need (S008-FR-015).
	RedactedValue = "<redacted>"
)

// Labels outcalld puts on every container it creates (S008-FR-002.g,
// FR-029). Discovery and every lifecycle check go by LabelManagedBy, never
// by the name.
const (
	// LabelManagedBy marks a managed container; its value is
	// LabelManagedByValue.
	LabelManagedBy = "managed-by"
	// LabelManagedByValue is LabelManagedBy's value.
	LabelManagedByValue = "outcalld"
	// LabelNetwork names the container's Outcall network.
	LabelNetwork = "outcall.network"
	// LabelCreatedAt is the creation time, RFC 3339 (ISO 8601) in UTC.
	LabelCreatedAt = "outcall.created-at"
)

// ContainerCreateRequest is the body of POST /api/v1/container/create
// (S008-IF-001). Only Image is required. A nil pointer, like an omitted
// list or a false flag, is an absent field and gets the daemon's default;
// a given value is checked as it is, never read as absent.
type ContainerCreateRequest struct {
	// Image is the image reference; it must exist locally: create never
	// pulls (S008-FR-017).
	Image string `json:"image"`
	// Network is the full network name; nil is DefaultNetworkName.
	Network *string `json:"network,omitempty"`
	// Name is used exactly; nil is ContainerPrefix and 8 random hex
	// digits (S008-FR-010).
	Name *string `json:"name,omitempty"`
	// User is "UID:GID", both numeric and non-zero; nil is
	// DefaultContainerUser (S008-FR-027.b).
	User *string `json:"user,omitempty"`
	// MemoryLimit is in bytes, at least MinMemoryLimit; nil is
	// DefaultMemoryLimit.
	MemoryLimit *int64 `json:"memory_limit,omitempty"`
	// CPUShares is the CPU weight, at least MinCPUShares; nil is
	// DefaultCPUShares.
	CPUShares *int64 `json:"cpu_shares,omitempty"`
	// Env entries are "NAME=value", merged with the daemon's proxy
	// variables (S008-FR-002.d/e).
	Env []string `json:"env,omitempty"`
	// Cmd and Entrypoint replace the image's.
	Cmd        []string `json:"cmd,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	// WorkingDir is an absolute path inside the container; empty is the
	// image's.
	WorkingDir string `json:"working_dir,omitempty"`
	// Volumes are bind specs "source:destination[:options]", the
	// destination absolute (S008-FR-033). Sources on the deny list and
	// destinations covering the helper paths or /etc/resolv.conf are
	// refused before Docker is asked (S008-FR-009).
	Volumes []string `json:"volumes,omitempty"`
	// IncludeHelperMounts mounts the agent socket at
	// AgentSocketContainerPath and the shim at ShimContainerPath, both
	// read-only; off unless set (S008-FR-004, FR-005).
	IncludeHelperMounts bool `json:"include_outcall_helper_mounts,omitempty"`
	// Interactive keeps the container's stdin open; TTY allocates it a
	// terminal.
	Interactive bool `json:"interactive,omitempty"`
	TTY         bool `json:"tty,omitempty"`
}

// ContainerCreateResult answers a create: the container exists, was
// started and has its identity (S008-FR-011). ContainerID is Docker's id
// (S008 conflict 7).
type ContainerCreateResult struct {
	ContainerID string `json:"container_id"`
	Name        string `json:"name"`
	Created     bool   `json:"created"`
}

// ContainerInfo is one managed container of GET /api/v1/containers
// (S008-IF-004, FR-014). State is Docker's ("running", "exited", ...);
// CreatedAt is RFC 3339.
type ContainerInfo struct {
	ContainerID string `json:"container_id"`
	Name        string `json:"name"`
	Image       string `json:"image"`
	State       string `json:"state"`
	Network     string `json:"network"`
	CreatedAt   string `json:"created_at"`
}

// ContainerStopRequest is the body of POST /api/v1/container/stop
// (S008-IF-002). Timeout is the seconds between SIGTERM and SIGKILL; nil
// is DefaultStopTimeoutSecs.
type ContainerStopRequest struct {
	Name    string `json:"name"`
	Timeout *int64 `json:"timeout,omitempty"`
}

// ContainerStopResult answers a stop; Stopped is false, and no error, for
// a container that was not running (S008-FR-034, EC-007).
type ContainerStopResult struct {
	Name    string `json:"name"`
	Stopped bool   `json:"stopped"`
}

// ContainerRemoveRequest is the body of POST /api/v1/container/remove
// (S008-IF-003). Force stops a running container first; without it a
// running container is refused.
type ContainerRemoveRequest struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// ContainerRemoveResult answers a remove; Removed is false, and no error,
// for a container that did not exist (S008-FR-034, EC-008).
type ContainerRemoveResult struct {
	Name    string `json:"name"`
	Removed bool   `json:"removed"`
}

// ContainerInspectResult is one managed container in detail, GET
// /api/v1/container?name= (S008-IF-005, FR-015). IPAddress is null when
// the container has none (it is not running). Mounts are
// "source:destination[:ro]"; Env holds names only, each "NAME=" and
// RedactedValue. Both are lists on the wire, [] when empty.
type ContainerInspectResult struct {
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

// ImagePullRequest is the body of POST /api/v1/container/pull
// (S008-IF-006).
type ImagePullRequest struct {
	Image string `json:"image"`
}

// ImagePullResult answers a pull; Pulled is false when the image was
// already present and current.
type ImagePullResult struct {
	Image  string `json:"image"`
	Pulled bool   `json:"pulled"`
}
