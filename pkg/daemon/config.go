// Package daemon wires outcalld's subsystems: the bridge, the nftables floor,
// the datapath, the rule engine, the endpoint registry, rule requests, the
// host API and metrics. It owns the
// order in which they start and stop, which is where fail-closed is decided:
// the floor exists before the bridge, a port's program is attached before the
// port can pass a frame, and shutdown leaves the strict policy in place.
package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"outcall.dev/outcall/pkg/agentapi"
	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/bridge"
)

// Config is outcalld's configuration, from flags.
type Config struct {
	Bridge  string
	Gateway netip.Prefix // the bridge's address, e.g. 10.200.0.1/24
	// SubnetBlock holds every Outcall subnet (--subnet-block): no rule or
	// grant opens an address inside it but the own gateway's services.
	SubnetBlock netip.Prefix
	Socket      string
	StateDir    string
	PinDir      string
	MetricsAddr string // empty disables metrics
	DNSPort     uint16
	ProxyPort   uint16
	// DNSUpstreams are the resolvers the DNS filter forwards to and the
	// proxy resolves with, in order (--dns-upstream, else the host's
	// /etc/resolv.conf).
	DNSUpstreams []netip.AddrPort
	// NoProxy disables the proxy (--no-proxy); startup fails if a rule
	// needs it (egress.mode: proxy).
	NoProxy bool
	// Docker runs the Docker manager: Docker networks for the Outcall
	// networks and managed containers. cmd/outcalld sets it unless
	// --no-docker; off (every container call 503) is the zero value, so a
	// Config built in a test never reaches the machine's Docker.
	Docker bool
	// AgentSocket and ShimHostPath are the host paths of the agent socket
	// and the shim that managed containers may have mounted
	// (--agent-socket-host-path, --shim-host-path).
	AgentSocket  string
	ShimHostPath string
	// AgentPermRate and AgentRuleRate limit each container's permission
	// checks and rule submissions (--agent-perm-rate, --agent-rule-rate;
	// zero: the defaults, 100/10 and 10/60). AgentTimeout bounds one
	// permission check's evaluation (--agent-timeout-secs; zero: 5 s).
	AgentPermRate agentapi.Rate
	AgentRuleRate agentapi.Rate
	AgentTimeout  time.Duration
	// RulesDir holds the rule files; a missing directory is an empty set.
	RulesDir string
	// WatchRules reloads the rules when a file in RulesDir changes.
	WatchRules bool
	// AllowPrivatePins starts even when PinDir's bpffs would not outlive
	// the daemon (see datapath.PrivatePinsError), with a loud warning.
	AllowPrivatePins bool
	// RepairInterval is how often detached programs and deleted floor
	// tables are looked for and restored (DefaultRepairInterval if 0).
	RepairInterval time.Duration
	// MaxConnsPerAgent caps the conntrack entries each agent address may
	// hold to or through the gateway (0: no cap), so one agent cannot fill
	// the host-wide conntrack table.
	MaxConnsPerAgent uint
	Logger           *slog.Logger
	// Services run on every network's gateway (GatewayService): the DNS
	// filter and the proxy. Not a flag: cmd/outcalld builds them.
	Services []GatewayService
}

// Validate rejects a bad configuration before anything on the host changes.
// Each error names the flag.
func (c Config) Validate() error {
	var errs []error
	if err := bridge.ValidateName(c.Bridge); err != nil {
		errs = append(errs, fmt.Errorf("--bridge: %w", err))
	}
	if !c.Gateway.IsValid() || !c.Gateway.Addr().Is4() || c.Gateway.Bits() > 30 || c.Gateway.Bits() < 8 {
		errs = append(errs, fmt.Errorf("--gateway: %q is not an IPv4 address with a prefix length of 8 to 30", c.Gateway))
	} else if a := c.Gateway.Addr(); a == c.Gateway.Masked().Addr() {
		errs = append(errs, fmt.Errorf("--gateway: %s is the network address of its subnet", c.Gateway))
	}
	if !c.SubnetBlock.IsValid() || !c.SubnetBlock.Contains(c.Gateway.Addr()) || c.SubnetBlock.Bits() > c.Gateway.Bits() {
		errs = append(errs, fmt.Errorf("--subnet-block: %q must contain the gateway subnet %s", c.SubnetBlock, c.Gateway.Masked()))
	}
	for flag, p := range map[string]string{"--socket": c.Socket, "--state-dir": c.StateDir, "--pin-dir": c.PinDir, "--rules-dir": c.RulesDir} {
		if p == "" || !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s: %q must be an absolute path", flag, p))
		}
	}
	if fi, err := os.Stat(c.Socket); err == nil && fi.IsDir() {
		errs = append(errs, fmt.Errorf("--socket: %s is a directory", c.Socket))
	}
	if c.RepairInterval != 0 && (c.RepairInterval < 10*time.Millisecond || c.RepairInterval > 10*time.Second) {
		errs = append(errs, fmt.Errorf("--repair-interval: %v is outside 10ms-10s", c.RepairInterval))
	}
	errs = append(errs, c.validateAgent()...)
	if c.DNSPort == 0 {
		errs = append(errs, errors.New("--dns-port: must be 1-65535"))
	}
	if c.ProxyPort == 0 {
		errs = append(errs, errors.New("--proxy-addr: port must be 1-65535"))
	}
	return errors.Join(errs...)
}

// validateAgent checks the agent API's settings: an absolute socket path
// that is not the host socket's (compared with their parent directories'
// symlinks resolved), rates within their bounds, a timeout of 1-300 s.
func (c Config) validateAgent() []error {
	var errs []error
	if c.AgentSocket != "" {
		switch {
		case !filepath.IsAbs(c.AgentSocket):
			errs = append(errs, fmt.Errorf("--agent-socket: %q must be an absolute path", c.AgentSocket))
		case canonicalSocket(c.AgentSocket) == canonicalSocket(c.Socket):
			errs = append(errs, fmt.Errorf("--agent-socket: %s is the host API socket (--socket); they must differ", c.AgentSocket))
		}
	}
	if c.AgentPermRate != (agentapi.Rate{}) {
		if err := c.AgentPermRate.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--agent-perm-rate: %w", err))
		}
	}
	if c.AgentRuleRate != (agentapi.Rate{}) {
		if err := c.AgentRuleRate.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--agent-rule-rate: %w", err))
		}
	}
	if c.AgentTimeout != 0 && (c.AgentTimeout < time.Second || c.AgentTimeout > api.MaxAgentTimeoutSecs*time.Second || c.AgentTimeout%time.Second != 0) {
		errs = append(errs, fmt.Errorf("--agent-timeout-secs: %v is not a whole number of seconds in 1-%d", c.AgentTimeout, api.MaxAgentTimeoutSecs))
	}
	return errs
}

// canonicalSocket is path with its parent directory's symlinks resolved
// (as far as the directory exists), so that two spellings of one socket
// compare equal.
func canonicalSocket(path string) string {
	dir, base := filepath.Split(filepath.Clean(path))
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	return filepath.Join(dir, base)
}
