package dockerlab

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// Session is one test's set of Docker objects, all named with Prefix and
// labelled LabelSession=Prefix, and removed when the test ends.
type Session struct {
	Prefix string
	Docker *Docker
	// DNS is the resolver of the session's containers unless RunOptions
	// says otherwise. NewSession leaves it zero: a plain session knows no
	// resolver that stays on this machine, so its networked containers
	// must name one. An Upstream's is the upstream namespace's.
	DNS netip.Addr

	t    testing.TB
	lock *os.File

	mu       sync.Mutex
	networks int
}

// NewSession registers a fresh prefix and the removal of everything named
// with it (containers, then networks) at the end of t. For containers that
// send nothing, or only to each other: traffic to the upstream needs
// NewUpstream.
func NewSession(t testing.TB) *Session {
	t.Helper()
	s := &Session{Docker: RequireDocker(t), t: t}
	t.Cleanup(s.close)
	s.register(newPrefix())
	return s
}

func (s *Session) register(prefix string) {
	s.t.Helper()
	f, err := register(prefix)
	if err != nil {
		s.t.Fatal(err)
	}
	s.Prefix, s.lock = prefix, f
}

// close removes what is left of the session (what the daemon under test
// made with its names too) and then releases its lock.
func (s *Session) close() {
	if s.lock == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	if err := s.Docker.RemovePrefixed(ctx, s.Prefix); err != nil {
		s.t.Errorf("remove session %s: %v", s.Prefix, err)
	}
	release(s.lock)
}

// Name is name with the session's prefix: "oct1a2b3c-name".
func (s *Session) Name(name string) string { return s.Prefix + "-" + name }

// Network is a Docker bridge network of a session.
type Network struct {
	Name    string
	ID      string
	Bridge  string // its Linux bridge in the root namespace
	Subnet  netip.Prefix
	Gateway netip.Addr // the bridge's address

	mu   sync.Mutex
	next netip.Addr
}

// NextIP is a fresh address of n for a container (from .10 on).
func (n *Network) NextIP() netip.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.next.IsValid() {
		n.next = n.Subnet.Addr()
		for range 9 {
			n.next = n.next.Next()
		}
	}
	n.next = n.next.Next()
	return n.next
}

// DockerBlock holds the subnets of the Docker networks the harness
// creates: the half of the benchmark range that is not routed into the
// upstream namespace, routed back to the root namespace from there.
var DockerBlock = netip.MustParsePrefix("198.19.0.0/16")

// Network creates a bridge network named s.Name(name) on subnet, with its
// Linux bridge named after the session, and registers its removal first.
// A zero subnet is a free /24 of DockerBlock (FreeSubnet). Docker's
// defaults stay: it masquerades the subnet and adds its iptables rules.
func (s *Session) Network(t testing.TB, name string, subnet netip.Prefix, opts ...string) *Network {
	t.Helper()
	s.mu.Lock()
	bridge := s.Prefix + "b" + strconv.Itoa(s.networks)
	s.networks++
	s.mu.Unlock()
	n := &Network{Name: s.Name(name), Bridge: bridge}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		attached, err := s.Docker.Output(ctx, nil, "network", "inspect", "--format", "{{range .Containers}}{{.Name}} {{end}}", n.Name)
		if err != nil {
			return // never created, or already gone
		}
		// Containers of the session still on it (the daemon's, named by
		// the test) go first; anything else on it is a leak to report.
		for _, c := range strings.Fields(attached) {
			if strings.HasPrefix(c, s.Prefix) {
				_, _ = s.Docker.Output(ctx, nil, "rm", "--force", "--volumes", c)
			}
		}
		if _, err := s.Docker.Output(ctx, nil, "network", "rm", n.Name); err != nil {
			t.Errorf("remove network: %v", err)
		}
	})
	auto := !subnet.IsValid()
	for attempt := 0; ; attempt++ {
		if auto {
			subnet = FreeSubnet(t)
		}
		n.Subnet, n.Gateway = subnet.Masked(), subnet.Masked().Addr().Next()
		args := append([]string{"network", "create", "--driver", "bridge",
			"--subnet", n.Subnet.String(), "--gateway", n.Gateway.String(),
			"--opt", "com.docker.network.bridge.name=" + bridge,
			"--label", LabelSession + "=" + s.Prefix}, opts...)
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		id, err := s.Docker.Output(ctx, nil, append(args, n.Name)...)
		cancel()
		if err == nil {
			n.ID = id
			return n
		}
		// Another test's network may have taken the subnet since it
		// looked free.
		if !auto || attempt == 8 || !strings.Contains(err.Error(), "overlap") {
			t.Fatal(err)
		}
	}
}

// FreeSubnet returns a /24 of DockerBlock that no route or address of the
// root namespace overlaps.
func FreeSubnet(t testing.TB) netip.Prefix {
	t.Helper()
	used, err := hostPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	for range 64 {
		a := DockerBlock.Addr().As4()
		a[2] = byte(rand.IntN(256))
		p := netip.PrefixFrom(netip.AddrFrom4(a), 24)
		if !overlapsAny(p, used) {
			return p
		}
	}
	t.Fatalf("no free /24 in %s", DockerBlock)
	return netip.Prefix{}
}

// hostPrefixes lists the destinations of every IPv4 route of the root
// namespace, in every table (local addresses included), except default
// routes.
func hostPrefixes() ([]netip.Prefix, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		a, ok := netip.AddrFromSlice(r.Dst.IP.To4())
		if ok && ones > 0 {
			out = append(out, netip.PrefixFrom(a, ones).Masked())
		}
	}
	return out, nil
}

func overlapsAny(p netip.Prefix, set []netip.Prefix) bool {
	for _, q := range set {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}

// RunOptions describe a container of a session. By default it runs
// hardened: as NonRoot, all capabilities dropped, no-new-privileges, a
// read-only root with a tmpfs /tmp, never pulling.
type RunOptions struct {
	Image   string       // "": Image(t)
	Network *Network     // nil: --network none
	IP      netip.Addr   // zero: Network.NextIP()
	DNS     netip.Addr   // zero: Session.DNS
	Targets []netip.Addr // what it will contact; an Upstream checks each first
	Flags   []string     // more docker run flags, after the defaults
	Cmd     []string
	Timeout time.Duration // Run's bound; zero: 30 s
}

// Container is a started container of a session.
type Container struct {
	Name string
	ID   string
	IP   netip.Addr
}

// args are the docker run flags of o for container name.
func (s *Session) args(t testing.TB, name string, o *RunOptions) []string {
	t.Helper()
	if o.Image == "" {
		o.Image = Image(t)
	}
	args := []string{"--name", name, "--pull", "never",
		"--label", LabelSession + "=" + s.Prefix,
		"--user", strconv.Itoa(NonRoot) + ":" + strconv.Itoa(NonRoot),
		"--cap-drop", "ALL", "--security-opt", "no-new-privileges",
		"--read-only", "--tmpfs", "/tmp"}
	if o.Network == nil {
		if len(o.Targets) > 0 {
			t.Fatalf("container %s has targets but no network", name)
		}
		args = append(args, "--network", "none")
	} else {
		if !o.IP.IsValid() {
			o.IP = o.Network.NextIP()
		}
		if !o.DNS.IsValid() {
			o.DNS = s.DNS
		}
		// Every name a container resolves goes to a resolver the test
		// chose (TESTING.md rule 5), never the host's.
		if !o.DNS.IsValid() {
			t.Fatalf("container %s on a network needs RunOptions.DNS (a plain session has no resolver of its own)", name)
		}
		args = append(args, "--network", o.Network.Name, "--ip", o.IP.String(), "--dns", o.DNS.String())
	}
	args = append(args, o.Flags...)
	return append(append(args, o.Image), o.Cmd...)
}

// Run runs a container named s.Name(name) to its end, bounded by
// o.Timeout, and returns its output (stdout and stderr); err is its exit
// status or Docker's error. Its removal is registered first. A plain
// session refuses targets: only an Upstream can check them.
func (s *Session) Run(t testing.TB, name string, o RunOptions) (string, error) {
	t.Helper()
	if len(o.Targets) > 0 {
		t.Fatalf("container %s: a Session cannot check targets; use an Upstream", name)
	}
	return s.run(t, name, o)
}

func (s *Session) run(t testing.TB, name string, o RunOptions) (string, error) {
	t.Helper()
	full := s.Name(name)
	s.removeOnCleanup(t, full)
	args := s.args(t, full, &o)
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	cmd := s.Docker.command(ctx, append([]string{"run"}, args...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("container %s: no end within %v: %w", full, o.Timeout, ctx.Err())
	}
	return string(out), err
}

// Start starts a container named s.Name(name) in the background and
// registers its removal first.
func (s *Session) Start(t testing.TB, name string, o RunOptions) *Container {
	t.Helper()
	if len(o.Targets) > 0 {
		t.Fatalf("container %s: a Session cannot check targets; use an Upstream", name)
	}
	return s.start(t, name, o)
}

func (s *Session) start(t testing.TB, name string, o RunOptions) *Container {
	t.Helper()
	full := s.Name(name)
	s.removeOnCleanup(t, full)
	args := s.args(t, full, &o)
	id := s.Docker.Must(t, append([]string{"run", "--detach"}, args...)...)
	return &Container{Name: full, ID: id, IP: o.IP}
}

func (s *Session) removeOnCleanup(t testing.TB, name string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		if _, err := s.Docker.Output(ctx, nil, "rm", "--force", "--volumes", name); err != nil && !isNoSuch(err) {
			t.Errorf("remove container: %v", err)
		}
	})
}

func isNoSuch(err error) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "no such")
}
