// Command outcalld is Outcall's daemon: it owns the bridge, enforces
// default-block with eBPF and nftables, and serves the host API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"outcall.dev/outcall/pkg/agentapi"
	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/daemon"
	"outcall.dev/outcall/pkg/dns"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("outcalld", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg         daemon.Config
		subnetBlock = fs.String("subnet-block", "10.200.0.0/16", "RFC 1918 block for Outcall networks; the default bridge gets its first /24 and the .1 address")
		proxyAddr   = fs.String("proxy-addr", "", "HTTP proxy address host:port on the gateway (default <gateway>:8080); its port is reachable from every endpoint")
		dnsPort     = fs.Uint("dns-port", api.DefaultDNSPort, "DNS filter port on each network's gateway")
		dnsListen   = fs.String("dns-listen", "", "DNS filter address: the default network's gateway (the default) or 0.0.0.0, both meaning each network's gateway")
		dnsUpstream = fs.String("dns-upstream", "", "comma-separated upstream resolvers IP[:port], tried in order (default: the nameservers of /etc/resolv.conf)")
		logLevel    = fs.String("log-level", "info", "log level: debug, info, warn or error")
		showVersion = fs.Bool("version", false, "print the version and exit")
		noDocker    = fs.Bool("no-docker", false, "run without the Docker manager: no Docker networks or managed containers (container commands answer 503)")
	)
	fs.StringVar(&cfg.Bridge, "bridge", api.DefaultBridgeName, "Linux bridge name (created if missing)")
	fs.StringVar(&cfg.Socket, "socket", api.DefaultHostSocket, "host API Unix socket")
	fs.StringVar(&cfg.StateDir, "state-dir", api.DefaultStateDir, "directory for persisted state")
	fs.StringVar(&cfg.PinDir, "pin-dir", api.DefaultPinDir, "bpffs directory for pinned maps and links")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", api.DefaultMetricsAddr, "Prometheus metrics listen address (empty disables)")
	fs.StringVar(&cfg.RulesDir, "rules-dir", api.DefaultRulesDir, "directory of rule files (*.yaml, *.yml); missing or empty means everything is blocked")
	fs.BoolVar(&cfg.WatchRules, "watch-rules", true, "reload the rules when a file in --rules-dir changes (the host API reload works either way)")
	fs.BoolVar(&cfg.AllowPrivatePins, "allow-private-pins", false, "start even if --pin-dir's bpffs is private to this mount namespace (e.g. under \"ip netns exec\"); the pins vanish at exit and every port loses its program: for experiments only")
	fs.DurationVar(&cfg.RepairInterval, "repair-interval", daemon.DefaultRepairInterval, "how often to check that every port's program and every floor table is in place, and restore what is missing (10ms-10s)")
	fs.BoolVar(&cfg.NoProxy, "no-proxy", false, "disable the HTTP/CONNECT proxy; refused while a rule needs it (egress.mode: proxy)")
	fs.StringVar(&cfg.AgentSocket, "agent-socket", api.DefaultAgentSocket, "agent API Unix socket (mode 0666), mounted into containers created with helper mounts")
	fs.StringVar(&cfg.AgentSocket, "agent-socket-host-path", api.DefaultAgentSocket, "alias of --agent-socket")
	agentTimeout := fs.String("agent-timeout-secs", strconv.Itoa(api.DefaultAgentTimeoutSecs), "agent API evaluation timeout per permission check, in seconds (1-300)")
	fs.Var(aliasOf{agentTimeout}, "agent-timeout", "alias of --agent-timeout-secs")
	agentPermRate := fs.String("agent-perm-rate", api.DefaultAgentPermRate, "agent permission checks per container: <count>/<seconds>, a sliding window")
	agentRuleRate := fs.String("agent-rule-rate", api.DefaultAgentRuleRate, "agent rule request submissions per container: <count>/<seconds>, a sliding window")
	fs.StringVar(&cfg.ShimHostPath, "shim-host-path", api.DefaultShimHostPath, "outcall-agent shim binary on the host, mounted into containers created with helper mounts")
	fs.UintVar(&cfg.MaxConnsPerAgent, "max-conns-per-agent", 512, "most connections (conntrack entries) one agent may hold to or through the gateway; new ones beyond it are dropped and counted (0: no cap)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: outcalld [flags]\n\noutcalld decides in the kernel what each agent container may reach.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintf(os.Stdout, "outcalld %s\n", version)
		return 0
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "outcalld: --log-level: %q is not one of debug, info, warn, error\n", *logLevel)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.Logger = log
	cfg.Docker = !*noDocker

	gw, err := defaultGateway(*subnetBlock)
	if err != nil {
		fmt.Fprintf(stderr, "outcalld: --subnet-block: %v\n", err)
		return 2
	}
	cfg.Gateway = gw
	cfg.SubnetBlock = netip.MustParsePrefix(*subnetBlock) // checked by defaultGateway
	if *dnsPort == 0 || *dnsPort > 65535 {
		fmt.Fprintf(stderr, "outcalld: --dns-port: %d is not a port (1-65535)\n", *dnsPort)
		return 2
	}
	cfg.DNSPort = uint16(*dnsPort)
	if err := checkDNSListen(*dnsListen, gw.Addr()); err != nil {
		fmt.Fprintf(stderr, "outcalld: --dns-listen: %v\n", err)
		return 2
	}
	if cfg.DNSUpstreams, err = upstreams(*dnsUpstream); err != nil {
		fmt.Fprintf(stderr, "outcalld: --dns-upstream: %v\n", err)
		return 2
	}
	if *proxyAddr == "" {
		*proxyAddr = net.JoinHostPort(gw.Addr().String(), "8080")
	}
	port, err := proxyPort(*proxyAddr)
	if err != nil {
		fmt.Fprintf(stderr, "outcalld: --proxy-addr: %v\n", err)
		return 2
	}
	cfg.ProxyPort = port
	if err := agentFlags(&cfg, fs, *agentTimeout, *agentPermRate, *agentRuleRate); err != nil {
		fmt.Fprintf(stderr, "outcalld: %v\n", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "outcalld: %v\n", err)
		return 2
	}

	d, err := daemon.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "outcalld: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := d.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "outcalld: %v\n", err)
		return 1
	}
	return 0
}

// defaultGateway is the .1 address of the first /24 in an RFC 1918 block.
func defaultGateway(block string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(block)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR block", block)
	}
	if !p.Addr().Is4() || p != p.Masked() || p.Bits() > 24 {
		return netip.Prefix{}, fmt.Errorf("%q must be a canonical IPv4 block of /24 or larger", block)
	}
	private := 0
	for _, r := range []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} {
		rp := netip.MustParsePrefix(r)
		if rp.Contains(p.Addr()) && rp.Bits() <= p.Bits() {
			private++
		}
	}
	if private != 1 {
		return netip.Prefix{}, fmt.Errorf("%q is not inside one RFC 1918 range", block)
	}
	return netip.PrefixFrom(p.Addr().Next(), 24), nil
}

// checkDNSListen accepts what --dns-listen may say: the DNS filter listens
// on each network's gateway, never on another address, where the
// datapath would not let containers reach it and hosts outside might.
func checkDNSListen(s string, gateway netip.Addr) error {
	if s == "" {
		return nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return fmt.Errorf("%q is not an IP address", s)
	}
	if ip != gateway && ip != netip.IPv4Unspecified() {
		return fmt.Errorf("%s is not the default network's gateway %s: the DNS filter listens on each network's gateway (give %s, 0.0.0.0 or nothing)", ip, gateway, gateway)
	}
	return nil
}

// upstreams parses --dns-upstream, or reads /etc/resolv.conf without it.
func upstreams(flagValue string) ([]netip.AddrPort, error) {
	if flagValue != "" {
		return dns.ParseUpstreams(flagValue)
	}
	ups, err := dns.ResolvConfUpstreams("/etc/resolv.conf")
	if err != nil {
		return nil, err
	}
	if len(ups) == 0 {
		return nil, errors.New("/etc/resolv.conf lists no nameserver: give --dns-upstream")
	}
	return ups, nil
}

func proxyPort(addr string) (uint16, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("%q is not host:port", addr)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q has no valid port", addr)
	}
	return uint16(n), nil
}

// aliasOf is a flag that sets another string flag's value.
type aliasOf struct{ v *string }

func (a aliasOf) String() string {
	if a.v == nil {
		return ""
	}
	return *a.v
}

func (a aliasOf) Set(s string) error { *a.v = s; return nil }

// agentFlags parses the agent API's flags strictly; an error names the
// flag as it was given.
func agentFlags(cfg *daemon.Config, fs *flag.FlagSet, timeout, permRate, ruleRate string) error {
	timeoutName := "--agent-timeout-secs"
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "agent-timeout" {
			timeoutName = "--agent-timeout"
		}
	})
	var err error
	if cfg.AgentTimeout, err = agentapi.ParseTimeoutSecs(timeout); err != nil {
		return fmt.Errorf("%s: %w", timeoutName, err)
	}
	if cfg.AgentPermRate, err = agentapi.ParseRate(permRate); err != nil {
		return fmt.Errorf("--agent-perm-rate: %w", err)
	}
	if cfg.AgentRuleRate, err = agentapi.ParseRate(ruleRate); err != nil {
		return fmt.Errorf("--agent-rule-rate: %w", err)
	}
	return nil
}
