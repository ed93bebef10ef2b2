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
	// DefaultShimHostPath is where the outcall-agent shim is on the host
	// (--shim-host-path), for containers created with helper mounts.
	DefaultShimHostPath = "/usr/local/bin/outcall-agent"
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
	// Ports is how many ports the bridge has; PortsEnforced how many of
	// them the kernel says carry Outcall's program right now. They differ
	// while a detached program is being re-attached.
	Ports         int `json:"ports,omitempty"`
	PortsEnforced int `json:"ports_enforced,omitempty"`
	// Docker is set while the Docker manager cannot reach Docker
	// (degraded, or starting): enforcement goes on, containers cannot be
	// created or followed. Absent while Docker answers, or with
	// --no-docker.
	Docker *DockerStatus `json:"docker,omitempty"`
}

// DockerStatus is the Docker manager's view of the engine.
type DockerStatus struct {
	// State is "starting" or "degraded".
	State string `json:"state"`
	// Reason says why, e.g. the failed ping.
	Reason string `json:"reason,omitempty"`
}

// BridgeDownRequest is the optional body of POST /api/v1/bridge/down; the
// query parameter remove_ports=true means the same, so the spec's bodiless
// request keeps working.
type BridgeDownRequest struct {
	// RemovePorts deletes every port of the bridge (the host-side links, and
	// with a veth its peer) before the teardown. Without it the teardown is
	// refused while the bridge has ports: a former port outside the bridge
	// is matched by no floor rule and would be open.
	RemovePorts bool `json:"remove_ports"`
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
	// Network is the endpoint's Outcall network ("outcall-default").
	Network string `json:"network,omitempty"`
	// Origin is where the identity came from: "operator" or "docker".
	Origin string `json:"origin,omitempty"`
	// ContainerID is the Docker container of a "docker" endpoint.
	ContainerID string `json:"container_id,omitempty"`
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
// (S009-IF-003 shape; Container names the endpoint). Destination is an IPv4
// address, a canonical IPv4 CIDR or a host name (ParseGrantDestination).
type AllowRequest struct {
	Container     string  `json:"container"`
	SrcIP         string  `json:"src_ip,omitempty"`
	Destination   string  `json:"destination"`
	Protocol      *string `json:"protocol,omitempty"`
	Port          *uint16 `json:"port,omitempty"`
	ExpiresInSecs *uint32 `json:"expires_in_secs,omitempty"`
	// AllowPrivate lets the grant open a restricted destination (private,
	// loopback, link-local and metadata, CGNAT, multicast, broadcast,
	// unspecified, or one of the host's own addresses). Outcall subnets
	// stay closed whatever it says.
	AllowPrivate bool `json:"allow_private_ips,omitempty"`
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
	// NftHandle names the rule as S009-IF-001/003 do: a number the daemon
	// gives each dynamic rule when it is first made (a renewal keeps it),
	// unique until the daemon restarts. There is no nftables rule behind
	// it: grants live in the datapath map.
	NftHandle uint64 `json:"nft_handle"`
	// Source, an addition to the spec's type, is who opened the grant:
	// "operator" (grant add, the host API) or "dns" (a direct_ip rule's
	// answer, Rule naming the rule).
	Source string `json:"source,omitempty"`
	Rule   string `json:"rule,omitempty"`
	// InsertedAt is when the rule was first made (a renewal keeps it),
	// UTC "2006-01-02T15:04:05Z" (S009-IF-001).
	InsertedAt string `json:"inserted_at,omitempty"`
	// Addresses, an addition, are the IPv4 addresses a host name
	// destination opened (at most 16), left out for an address or CIDR.
	Addresses []string `json:"addresses,omitempty"`
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

// Decision is the outcome of a rule evaluation.
type Decision string

// Decisions. There is no third: no match is a block (S003-FR-009).
const (
	DecisionAllow Decision = "allow"
	DecisionBlock Decision = "block"
)

// Rule engine defaults (S003).
const (
	// DefaultRulesDir is where outcalld reads rule files.
	DefaultRulesDir = "/etc/outcall/rules.d"
	// RuleVersion is the only supported rule file version.
	RuleVersion = "1"
	// DefaultRulePriority is the priority of a rule that names none.
	DefaultRulePriority = 100
	// EvaluationBudgetMS is the evaluation time above which a warning is logged.
	EvaluationBudgetMS = 50
	// MaxRejectReason bounds a rule request's reject reason, in bytes.
	MaxRejectReason = 1024
)

// Rule levels: where a rule can take effect. Packet rules are lowered into
// the datapath; request rules decide only where names and requests are seen
// (DNS filter, proxy, agent API).
const (
	LevelPacket  = "packet"
	LevelRequest = "request"
)

// EvaluationContext is what an enforcement point knows about a request. Only
// the populated namespaces need to be sent; absent ones are zero values.
type EvaluationContext struct {
	Network *NetworkContext `json:"network,omitempty"`
	HTTP    *HTTPContext    `json:"http,omitempty"`
	DNS     *DNSContext     `json:"dns,omitempty"`
	Docker  *DockerContext  `json:"docker,omitempty"`
	Run     *RunContext     `json:"run,omitempty"`
	Agent   *AgentContext   `json:"agent,omitempty"`
}

// NetworkContext is connection metadata.
type NetworkContext struct {
	Hostname *string `json:"hostname"`
	IP       string  `json:"ip"`
	Port     uint16  `json:"port"`
	Protocol string  `json:"protocol"`
}

// HTTPContext is what the proxy saw of a request.
type HTTPContext struct {
	Method   string            `json:"method"`
	Path     string            `json:"path"`
	Host     string            `json:"host"`
	Headers  map[string]string `json:"headers"`
	BodySize uint64            `json:"body_size"`
}

// DNSContext is a DNS question.
type DNSContext struct {
	Query      string `json:"query"`
	RecordType string `json:"record_type"`
}

// DockerContext is a Docker API request.
type DockerContext struct {
	Image        string   `json:"image"`
	Command      []string `json:"command"`
	Volumes      []string `json:"volumes"`
	EnvKeys      []string `json:"env_keys"`
	Capabilities []string `json:"capabilities"`
}

// RunContext is what the shim or host broker reports of a tool run.
type RunContext struct {
	Tool    string         `json:"tool"`
	Args    []string       `json:"args"`
	Flags   []string       `json:"flags"`
	Cwd     string         `json:"cwd"`
	Context map[string]any `json:"context"`
}

// AgentContext is the host-verified identity of the requesting agent.
type AgentContext struct {
	Name string `json:"name"`
}

// EvaluateRequest is the body of POST /api/v1/rule/evaluate.
type EvaluateRequest struct {
	Context EvaluationContext `json:"context"`
}

// EvaluateResult is a rule engine decision. MatchedRule and File are null for
// the default block.
type EvaluateResult struct {
	Decision    Decision `json:"decision"`
	MatchedRule *string  `json:"matched_rule"`
	File        *string  `json:"file"`
	Logged      bool     `json:"logged"`
}

// RuleSummary is one rule of GET /api/v1/rules, in evaluation order.
type RuleSummary struct {
	ID               string     `json:"id"`
	File             string     `json:"file"`
	Action           RuleAction `json:"action"`
	ConditionPreview string     `json:"condition_preview"`
	Description      *string    `json:"description"`
	Priority         int        `json:"priority"`
	Level            string     `json:"level"`
}

// RuleDetail is one rule with its fully expanded condition.
type RuleDetail struct {
	ID          string     `json:"id"`
	Condition   string     `json:"condition"`
	Action      RuleAction `json:"action"`
	Log         bool       `json:"log"`
	Description *string    `json:"description"`
	Priority    int        `json:"priority"`
	File        string     `json:"file"`
	Line        int        `json:"line"`
	Level       string     `json:"level"`
	Egress      *Egress    `json:"egress"`
}

// Egress says how an allow rule's traffic may leave (S003-IF-012).
type Egress struct {
	Mode            string   `json:"mode"`
	Ports           []uint16 `json:"ports"`
	AllowPrivateIPs bool     `json:"allow_private_ips"`
}

// Egress modes.
const (
	EgressProxy    = "proxy"
	EgressDirectIP = "direct_ip"
)

// ReloadResult reports a successful reload.
type ReloadResult struct {
	FilesLoaded int      `json:"files_loaded"`
	RulesLoaded int      `json:"rules_loaded"`
	PacketRules int      `json:"packet_rules"`
	Warnings    []string `json:"warnings"`
}

// TestExpressionRequest is the body of POST /api/v1/rule/test.
type TestExpressionRequest struct {
	Expression string            `json:"expression"`
	Context    EvaluationContext `json:"context"`
}

// TestExpressionResult is the value of a test expression, or why it has none.
type TestExpressionResult struct {
	Result bool    `json:"result"`
	Error  *string `json:"error"`
}

// RuleRequestSubmission is an agent's request for a rule file (S003-IF-006).
type RuleRequestSubmission struct {
	RuleFile string `json:"rule_file"`
}

// RuleRequestResponse is the state of one rule request as its agent sees it.
type RuleRequestResponse struct {
	ID     string            `json:"id"`
	Status RuleRequestStatus `json:"status"`
	Reason *string           `json:"reason"`
}

// PendingRuleRequest is a rule request as the operator sees it.
type PendingRuleRequest struct {
	ID          string            `json:"id"`
	ContainerID string            `json:"container_id"`
	RuleFile    string            `json:"rule_file"`
	Status      RuleRequestStatus `json:"status"`
	Reason      *string           `json:"reason"`
	SubmittedAt string            `json:"submitted_at"`
}

// ApproveResult reports an approved rule request.
type ApproveResult struct {
	ID          string `json:"id"`
	RulesLoaded int    `json:"rules_loaded"`
}

// RejectRequest is the optional body of a reject.
type RejectRequest struct {
	Reason *string `json:"reason,omitempty"`
}

// RejectResult reports a rejected rule request.
type RejectResult struct {
	ID string `json:"id"`
}

// Networks (S002). Names on the wire are full names ("outcall-staging");
// requests carry the suffix ("staging"), and the daemon adds NetworkPrefix.
const (
	// NetworkPrefix starts the name of every Outcall network.
	NetworkPrefix = "outcall-"
	// DefaultNetworkName is the network on the daemon's --bridge.
	DefaultNetworkName = "outcall-default"
	// DefaultSubnetBlock is --subnet-block's default.
	DefaultSubnetBlock = "10.200.0.0/16"
)

// NetworkCreateRequest is the body of POST /api/v1/network/create (S002-IF-001).
// Every field is optional: no name is the default network, no subnet is the
// first free /24 of the subnet block, no gateway is the subnet's first address.
type NetworkCreateRequest struct {
	Name    *string `json:"name"`
	Subnet  *string `json:"subnet"`
	Gateway *string `json:"gateway"`
}

// NetworkCreateResult answers a create. Subnet is an addition to the spec's
// type (its CLI prints the subnet of a named network, S002 conflict 4).
type NetworkCreateResult struct {
	NetworkID string `json:"network_id"`
	Name      string `json:"name"`
	Created   bool   `json:"created"`
	Subnet    string `json:"subnet,omitempty"`
}

// NetworkStatus is one network (S002-IF-002). For a network that does not
// exist, Exists is false, the pointers are nil and Containers is empty.
// Bridge, an addition to the spec's type, names the network's Linux bridge.
type NetworkStatus struct {
	Exists     bool               `json:"exists"`
	NetworkID  *string            `json:"network_id"`
	Name       string             `json:"name"`
	Subnet     *string            `json:"subnet"`
	Gateway    *string            `json:"gateway"`
	Bridge     string             `json:"bridge,omitempty"`
	Containers []NetworkContainer `json:"containers"`
}

// NetworkContainer is an identity on a network: its name and address.
type NetworkContainer struct {
	Name        string `json:"name"`
	IPv4Address string `json:"ipv4_address"`
}

// NetworkDestroyRequest is the body of POST /api/v1/network/destroy.
type NetworkDestroyRequest struct {
	Name *string `json:"name"`
}

// NetworkDestroyResult answers a destroy; Destroyed is false when there was
// nothing to destroy.
type NetworkDestroyResult struct {
	Name      string `json:"name"`
	Destroyed bool   `json:"destroyed"`
}

// NetworkConfig is the daemon's network configuration, GET
// /api/v1/network/config (S002-FR-031; the spec leaves its shape open).
type NetworkConfig struct {
	// SubnetBlock is the active --subnet-block ("10.200.0.0/16"), from which
	// every network without an explicit subnet gets its /24.
	SubnetBlock string `json:"subnet_block"`
}
