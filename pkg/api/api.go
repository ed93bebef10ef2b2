// Package api holds the types and constants shared by outcalld, the outcall CLI
// and the outcall-agent shim: the host API response envelope, request and
// response bodies, and the defaults every binary agrees on. It has no logic and
// does no I/O (S000-FR-002).
package api

// Defaults shared by every binary (S000-FR-004).
const (
	// UnreachableExitCode is the shim's exit code when outcalld cannot be reached
	// or answers with something malformed.
	UnreachableExitCode = 5
	// DefaultHostSocket is the operator API socket.
	DefaultHostSocket = "/run/outcall/host.sock"
	// DefaultAgentSocket is the agent API socket.
	DefaultAgentSocket = "/run/outcall/agent.sock"
	// DefaultBridgeName is the Linux bridge of the default network.
	DefaultBridgeName = "outcall0"
	// DefaultStateDir holds the daemon's persisted state (endpoints, requests).
	DefaultStateDir = "/var/lib/outcall"
	// DefaultPinDir is where the datapath pins its maps and links in bpffs.
	DefaultPinDir = "/sys/fs/bpf/outcall"
	// DefaultMetricsAddr serves Prometheus metrics on loopback only.
	DefaultMetricsAddr = "127.0.0.1:9469"
	// DefaultGatewayCIDR is the default bridge's gateway address and subnet.
	DefaultGatewayCIDR = "10.200.0.1/24"
	// DefaultDNSPort and DefaultProxyPort are the gateway services a container
	// may reach without any rule.
	DefaultDNSPort   = 53
	DefaultProxyPort = 8080
	// NFTableName is the name of Outcall's nftables tables (inet and bridge family).
	NFTableName = "outcall"
)

// The datapath marks every packet it allows; the nftables floor drops every
// packet from a container port that lacks the mark. Only the bits in
// AllowMarkMask belong to Outcall, so other users of the mark keep theirs.
const (
	AllowMark     uint32 = 0x4f430000 // "OC"
	AllowMarkMask uint32 = 0xffff0000
)

// Response is the envelope of every host API response (S000-FR-005). Data and
// Error are omitted when absent.
type Response[T any] struct {
	Success bool   `json:"success"`
	Data    *T     `json:"data,omitempty"`
	Error   string `json:"error,omitempty"`
}

// RuleAction is the action of a rule.
type RuleAction string

// Rule actions. Enrich survives in the shared types only; rule files reject it.
const (
	ActionAllow  RuleAction = "allow"
	ActionBlock  RuleAction = "block"
	ActionEnrich RuleAction = "enrich"
)

// Verdict is the result of evaluating a request against the rules.
type Verdict struct {
	Allowed     bool    `json:"allowed"`
	MatchedRule *string `json:"matched_rule"`
	Reason      *string `json:"reason"`
}

// RuleRequestStatus is the state of an agent's rule request.
type RuleRequestStatus string

// Rule request states.
const (
	RequestPending  RuleRequestStatus = "pending"
	RequestApproved RuleRequestStatus = "approved"
	RequestRejected RuleRequestStatus = "rejected"
)

// BridgeStatus is the state of a bridge, recomputed on every call (S000-FR-007).
type BridgeStatus struct {
	Name           string  `json:"name"`
	Up             bool    `json:"up"`
	Index          *uint32 `json:"index"`
	NftablesActive bool    `json:"nftables_active"`
}

// Endpoint is a port on an Outcall bridge with an identity: a namespace's veth,
// a microVM's tap, later a Docker container's veth.
type Endpoint struct {
	Name      string `json:"name"`
	Interface string `json:"interface"`
	IP        string `json:"ip"`
	MAC       string `json:"mac"`
	Identity  uint32 `json:"identity"`
	Ifindex   int    `json:"ifindex"`
	// Attached reports whether the datapath program is attached to the port.
	Attached bool `json:"attached"`
}

// EndpointAddRequest registers a port. MAC is read from the peer when empty
// is not possible, so it is required.
type EndpointAddRequest struct {
	Name      string `json:"name"`
	Interface string `json:"interface"`
	IP        string `json:"ip"`
	MAC       string `json:"mac"`
}

// EndpointRemoveRequest removes a registered endpoint by name.
type EndpointRemoveRequest struct {
	Name string `json:"name"`
}

// AllowRequest opens one destination for one endpoint in the datapath
// (S009-IF-003 shape; Container names the endpoint).
type AllowRequest struct {
	Container     string  `json:"container"`
	SrcIP         string  `json:"src_ip,omitempty"`
	Destination   string  `json:"destination"`
	Protocol      *string `json:"protocol,omitempty"`
	Port          *uint16 `json:"port,omitempty"`
	ExpiresInSecs *uint32 `json:"expires_in_secs,omitempty"`
}

// RevokeRequest closes what an AllowRequest with the same fields opened.
type RevokeRequest struct {
	Container   string  `json:"container"`
	Destination string  `json:"destination"`
	Protocol    *string `json:"protocol,omitempty"`
	Port        *uint16 `json:"port,omitempty"`
}

// ActiveRule is one allow entry in the datapath (S009-IF-001).
type ActiveRule struct {
	Container     string  `json:"container"`
	SrcIP         string  `json:"src_ip"`
	Destination   string  `json:"destination"`
	Port          *uint16 `json:"port"`
	Protocol      *string `json:"protocol"`
	ExpiresInSecs *uint64 `json:"expires_in_secs,omitempty"`
}

// FlushResult counts the allow entries a flush removed.
type FlushResult struct {
	Removed int `json:"removed"`
}

// DatapathCounter is the packets and bytes the datapath counted for one
// verdict and reason.
type DatapathCounter struct {
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}
