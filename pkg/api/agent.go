package api

// The agent API (S004) on agent.sock, and the outcall-agent shim (S005) that
// speaks it. Routes are served on the agent socket only, never on the host
// socket (S004-FR-019).
const (
	AgentRouteCheckin      = "/v1/checkin"
	AgentRoutePermission   = "/v1/permissions/check"
	AgentRouteRuleRequests = "/v1/requests/rules"
)

// Bounds and defaults of the agent API and the shim.
const (
	// AgentBodyLimit bounds every agent API request and response body, in
	// bytes (S004-EC-010, S005-FR-011).
	AgentBodyLimit = 65536
	// DefaultAgentTimeoutSecs is --agent-timeout-secs: the server-side
	// evaluation budget of one permission check (S004-FR-015).
	DefaultAgentTimeoutSecs = 5
	// MaxAgentTimeoutSecs bounds --agent-timeout-secs.
	MaxAgentTimeoutSecs = 300
	// DefaultAgentPermRate and DefaultAgentRuleRate are --agent-perm-rate
	// and --agent-rule-rate: permission checks and rule submissions per
	// container in a sliding window (S004-FR-014).
	DefaultAgentPermRate = "100/10"
	DefaultAgentRuleRate = "10/60"
	// DefaultShimTimeoutSecs is the shim's per-request timeout when
	// OUTCALL_TIMEOUT_SECS is unset; MaxShimTimeoutSecs its upper bound.
	DefaultShimTimeoutSecs = 30
	MaxShimTimeoutSecs     = 300
	// ShimHeartbeatSecs is how often the shim checks that the agent socket
	// still answers while it waits for a verdict or a child.
	ShimHeartbeatSecs = 10
	// ShimTimeoutEnv names the shim's only setting.
	ShimTimeoutEnv = "OUTCALL_TIMEOUT_SECS"
)

// ActionType is what an agent asks permission for (S004-FR-013).
type ActionType string

// Action types.
const (
	ActionToolExec    ActionType = "tool_exec"
	ActionNetworkCall ActionType = "network_call"
	ActionFileAccess  ActionType = "file_access"
	ActionShellExec   ActionType = "shell_exec"
)

// CheckinData answers POST /v1/checkin (S004-IF-001). ContainerID is the
// full Docker id the daemon found for the peer; the agent states nothing.
type CheckinData struct {
	ContainerID  string   `json:"container_id"`
	SessionToken string   `json:"session_token"`
	ContextKeys  []string `json:"context_keys"`
}

// CheckinContextKeys is CheckinData.ContextKeys, always.
var CheckinContextKeys = []string{"action_type", "target", "metadata"}

// PermissionRequest is the body of POST /v1/permissions/check
// (S004-IF-002). Metadata values are strings; the shim leaves Metadata out
// when it has none.
type PermissionRequest struct {
	ActionType ActionType        `json:"action_type"`
	Target     string            `json:"target"`
	Metadata   map[string]string `json:"metadata,omitempty"`
}

// Verdict reasons the agent API gives (S004-IF-002). An allow has none.
const (
	ReasonBlocked         = "blocked by policy"
	ReasonEvalTimeout     = "evaluation timeout"
	ReasonEvalUnavailable = "policy evaluation unavailable"
)
