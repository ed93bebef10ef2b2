package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"

	"outcall.dev/outcall/internal/privtest"
	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/network"
	"outcall.dev/outcall/test/dockerlab"
	"outcall.dev/outcall/test/lab"
)

// The upstream namespace's services every test has (lab.Upstream is
// 198.51.100.10, lab.Upstream2 203.0.113.10, both addresses of it).
var (
	upstreamDNS = netip.AddrPortFrom(netip.MustParseAddr(lab.Upstream), 53)
	// webAddr serves HTTP for web.test, which rules allow through the
	// proxy only.
	webAddr = netip.AddrPortFrom(netip.MustParseAddr(lab.Upstream2), 8088)
	// directAddr is direct.test's address, which a direct_ip rule opens
	// on port 80 for whoever resolves the name.
	directAddr = netip.MustParseAddr("203.0.113.20")
	// deniedAddr answers TCP on port 80 but no rule opens it.
	deniedAddr = netip.AddrPortFrom(netip.MustParseAddr(lab.Upstream), 80)
	// metadataAddr is the cloud metadata address, made an address of the
	// upstream namespace (Upstream.RouteAddress) so that a probe of it
	// ends there.
	metadataAddr = netip.MustParseAddr("169.254.169.254")
)

// rules: web.test resolves and is fetched through the proxy; direct.test
// opens its address on port 80 (direct_ip); evil.test is blocked, and
// anything else is blocked by default. The upstream addresses are
// documentation addresses, so every allow says allow_private_ips.
const rules = `version: "1"
rules:
  - id: web-name
    condition: 'dns.query == "web.test"'
    action: allow
    egress:
      mode: proxy
      allow_private_ips: true
  - id: web-proxy
    condition: 'network.hostname == "web.test"'
    action: allow
    egress:
      mode: proxy
      allow_private_ips: true
  - id: direct
    condition: 'dns.query == "direct.test"'
    action: allow
    egress:
      mode: direct_ip
      ports: [80]
      allow_private_ips: true
  - id: block-evil
    condition: 'dns.query == "evil.test" || network.hostname == "evil.test"'
    action: block
`

// world is one outcalld in the root namespace with Docker, its upstream
// namespace and the responders there.
type world struct {
	u      *dockerlab.Upstream
	docker *dockerlab.Docker
	image  string // busybox with the probe

	dir, socket, pinDir string
	agentSocket         string       // --agent-socket-host-path
	extraArgs           []string     // more outcalld flags, for every start
	bridge              string       // the default network's bridge
	block               netip.Prefix // --subnet-block
	subnet              netip.Prefix // the default network's
	gw                  netip.Addr   // its gateway: DNS filter and proxy

	dns *lab.DNSServer
	web *dockerlab.HTTPServer

	d *daemonProc
}

// daemonProc is one run of outcalld.
type daemonProc struct {
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   *sync.Mutex
	done chan error
}

// setUp builds a world: the upstream namespace with the test zone, an
// HTTP server for web.test, TCP responders, then outcalld, and waits for
// the default network's Docker network.
func setUp(t *testing.T) *world { return setUpWith(t) }

// setUpWith is setUp with more outcalld flags.
func setUpWith(t *testing.T, extraArgs ...string) *world {
	t.Helper()
	u := dockerlab.NewUpstream(t)
	for _, tool := range []string{"nft", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			privtest.Skip(t, tool+" not installed")
		}
	}
	w := &world{u: u, docker: u.Docker, dir: t.TempDir(), extraArgs: extraArgs}
	w.socket = filepath.Join(w.dir, "host.sock")
	w.agentSocket = filepath.Join(w.dir, "agent.sock")
	w.bridge = u.Prefix + "o"
	w.pinDir = "/sys/fs/bpf/" + u.Prefix + "-od"
	dockerlab.PreflightRoot(t, w.docker)
	w.block = dockerlab.FreeBlock(t, w.docker)
	w.subnet = netip.PrefixFrom(w.block.Addr(), 24)
	w.gw = w.subnet.Addr().Next()
	t.Logf("session %s: bridge %s, subnet block %s (default network %s, gateway %s)", u.Prefix, w.bridge, w.block, w.subnet, w.gw)

	w.image = dockerlab.Image(t, dockerlab.WithBinary("probe", filepath.Join(bins, "probe")), dockerlab.WithBinary("agentcall", filepath.Join(bins, "agentcall")))
	u.AddAddress(t, directAddr)
	u.RouteAddress(t, metadataAddr)
	w.dns = lab.ServeDNSZone(t, u.NS, upstreamDNS, lab.Zone{
		"web.test.":    {lab.RR(t, "web.test. 60 IN A "+webAddr.Addr().String())},
		"direct.test.": {lab.RR(t, "direct.test. 60 IN A "+directAddr.String())},
		"evil.test.":   {lab.RR(t, "evil.test. 60 IN A "+lab.Upstream2)},
	})
	w.web = u.ServeHTTP(t, webAddr, http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(rw, "hello %s %s\n", r.Host, r.URL.Path)
	}))
	for _, a := range []netip.AddrPort{deniedAddr, netip.AddrPortFrom(directAddr, 80), netip.AddrPortFrom(directAddr, 443), netip.AddrPortFrom(metadataAddr, 80)} {
		lab.ServeTCP(t, u.NS, a.String())
	}
	// Positive controls of the whole upstream, from the root namespace:
	// the resolver answers and the responders greet.
	if r := rootDNS(upstreamDNS, "web.test"); r == nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("positive control: the upstream resolver does not answer the root namespace: %v", r)
	}
	mustReachRoot(t, u, deniedAddr, netip.AddrPortFrom(directAddr, 80), netip.AddrPortFrom(metadataAddr, 80))

	writeFile(t, filepath.Join(w.dir, "rules.d", "10-test.yaml"), rules)
	t.Cleanup(func() { w.teardown(t) })
	w.start(t)
	return w
}

// start runs outcalld and waits for its socket and the default network's
// Docker network on its bridge.
func (w *world) start(t *testing.T) {
	t.Helper()
	args := []string{
		"--bridge", w.bridge, "--subnet-block", w.block.String(),
		"--socket", w.socket, "--state-dir", filepath.Join(w.dir, "state"),
		"--rules-dir", filepath.Join(w.dir, "rules.d"), "--pin-dir", w.pinDir,
		// This machine's mount namespace cannot be proven to keep the
		// bpffs; /sys/fs/bpf is the host's all the same.
		"--allow-private-pins",
		"--metrics-addr", "", "--log-level", "debug",
		"--dns-upstream", upstreamDNS.String(),
		"--agent-socket-host-path", w.agentSocket,
		"--shim-host-path", filepath.Join(bins, "outcall-agent"),
	}
	args = append(args, w.extraArgs...)
	d := &daemonProc{log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	d.cmd = exec.Command(filepath.Join(bins, "outcalld"), args...)
	lw := &lockedWriter{mu: d.mu, b: d.log}
	d.cmd.Stdout, d.cmd.Stderr = lw, lw
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start outcalld: %v", err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	w.d = d
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", w.socket); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("outcalld exited: %v\n%s", err, d.Log())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("outcalld's socket did not appear\n%s", d.Log())
		}
	}
	waitFor(t, 20*time.Second, "the Docker network "+api.DefaultNetworkName+" on "+w.bridge, func() bool {
		out, err := w.docker.Output(t.Context(), nil, "network", "inspect", "--format",
			`{{index .Options "com.docker.network.bridge.name"}}`, api.DefaultNetworkName)
		return err == nil && out == w.bridge
	})
}

// Log is what the daemon wrote so far.
func (d *daemonProc) Log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// signal sends sig and waits (10 s at most) for the daemon to exit.
func (d *daemonProc) signal(sig syscall.Signal) error {
	if d.cmd.ProcessState != nil {
		return nil
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(10 * time.Second):
		return fmt.Errorf("outcalld did not exit within 10 s of %v", sig)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// teardown stops the daemon and removes everything it made in the root
// namespace: the managed containers of the session, the Docker networks,
// the nftables tables, the bridges and the pins.
func (w *world) teardown(t *testing.T) {
	if w.d != nil {
		if err := w.d.signal(syscall.SIGTERM); err != nil {
			_ = w.d.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("outcalld's log:\n%s", w.d.Log())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := w.docker.Output(ctx, nil, "ps", "-aq", "--filter", "name=^"+w.u.Prefix); err == nil && out != "" {
		_, _ = w.docker.Output(ctx, nil, append([]string{"rm", "--force", "--volumes"}, strings.Fields(out)...)...)
	}
	out, _ := w.docker.Output(ctx, nil, "network", "ls", "--format", "{{.Name}}")
	for _, name := range strings.Fields(out) {
		if name == api.DefaultNetworkName || strings.HasPrefix(name, api.NetworkPrefix+w.u.Prefix) {
			bridge, _ := w.docker.Output(ctx, nil, "network", "inspect", "--format", `{{index .Options "com.docker.network.bridge.name"}}`, name)
			if name == api.DefaultNetworkName && bridge != w.bridge {
				continue // not ours (preflight refused to run beside it)
			}
			if _, err := w.docker.Output(ctx, nil, "network", "rm", name); err != nil {
				t.Errorf("remove Docker network %s: %v", name, err)
			}
			if name != api.DefaultNetworkName {
				_ = exec.Command("ip", "link", "del", network.BridgeName(name)).Run()
			}
		}
	}
	for _, fam := range []string{"inet", "bridge", "arp"} {
		if exec.Command("nft", "list", "table", fam, "outcall").Run() == nil {
			if out, err := exec.Command("nft", "delete", "table", fam, "outcall").CombinedOutput(); err != nil {
				t.Errorf("nft delete table %s outcall: %v: %s", fam, err, out)
			}
		}
	}
	if _, err := netlink.LinkByName(w.bridge); err == nil {
		if out, err := exec.Command("ip", "link", "del", w.bridge).CombinedOutput(); err != nil {
			t.Errorf("ip link del %s: %v: %s", w.bridge, err, out)
		}
	}
	if err := os.RemoveAll(w.pinDir); err != nil {
		t.Errorf("remove pins: %v", err)
	}
}

// cli runs the outcall CLI against the world's daemon.
func (w *world) cli(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bins, "outcall"), append([]string{"--socket", w.socket}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// mustCLI is cli that fails the test unless the command succeeds.
func (w *world) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := w.cli(t, args...)
	if code != 0 {
		t.Fatalf("outcall %s: exit %d\n%s%s\ndaemon log:\n%s", strings.Join(args, " "), code, out, errOut, w.d.Log())
	}
	return out
}

// managed is a container outcalld created.
type managed struct {
	Name    string
	IP      netip.Addr
	Network string
	Bridge  string
}

// create makes a managed container with `outcall container create`,
// checks the CLI's line, and returns it with its address.
func (w *world) create(t *testing.T, name string, extra []string, cmd ...string) managed {
	t.Helper()
	args := append([]string{"container", "create", "--image", w.image, "--name", name}, extra...)
	if len(cmd) > 0 {
		args = append(append(args, "--"), cmd...)
	}
	out := w.mustCLI(t, args...)
	if want := fmt.Sprintf("Container %q created and started.\n", name); out != want {
		t.Fatalf("create printed %q, want %q", out, want)
	}
	var info struct {
		NetworkSettings struct {
			Networks map[string]struct{ IPAddress string }
		}
	}
	raw := w.docker.Must(t, "inspect", "--format", "{{json .}}", name)
	if err := json.Unmarshal([]byte(raw), &info); err != nil || len(info.NetworkSettings.Networks) != 1 {
		t.Fatalf("inspect %s: %v %s", name, err, raw)
	}
	c := managed{Name: name}
	for n, s := range info.NetworkSettings.Networks {
		c.Network = n
		c.IP, _ = netip.ParseAddr(s.IPAddress)
	}
	c.Bridge = w.bridge
	if c.Network != api.DefaultNetworkName {
		c.Bridge = network.BridgeName(c.Network)
	}
	return c
}

// exec runs a command in a container (as its user, with its environment),
// bounded in time, and returns its output.
func (w *world) exec(t *testing.T, container string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return w.docker.Output(ctx, nil, append([]string{"exec", container}, args...)...)
}

// aim checks, sending nothing, that packets of container c to dst end in
// the upstream namespace (TESTING.md rule 4); it fails t otherwise.
func (w *world) aim(t *testing.T, c netip.Addr, bridge string, dsts ...netip.Addr) {
	t.Helper()
	for _, dst := range dsts {
		if err := errors.Join(w.u.Check(dst), w.u.CheckFrom(dst, c, bridge)); err != nil {
			t.Fatalf("refusing to probe %s from %s: %v", dst, c, err)
		}
	}
}

// tcpFrom reports whether `probe tcp addr` from the container got the
// responder's greeting (within 2 s).
func (w *world) tcpFrom(t *testing.T, container string, addr netip.AddrPort) (bool, string) {
	t.Helper()
	out, err := w.exec(t, container, "timeout", "2", "probe", "tcp", addr.String())
	return err == nil && strings.TrimSpace(out) != "", out
}

// dnsFrom asks server for name's A records from the container and returns
// "RCODE addrs", or "" when no reply came within 2 s.
func (w *world) dnsFrom(t *testing.T, container string, server netip.AddrPort, name string) string {
	t.Helper()
	out, err := w.exec(t, container, "timeout", "2", "probe", "dns", server.String(), name)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// rootDNS asks server for name's A records from the root namespace.
func rootDNS(server netip.AddrPort, name string) *dns.Msg {
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := c.Exchange(m, server.String())
	if err != nil {
		return nil
	}
	return r
}

// rootTCP reports whether a connection from the root namespace to addr
// completes and its greeting arrives.
func rootTCP(addr netip.AddrPort) bool {
	c, err := net.DialTimeout("tcp4", addr.String(), 2*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	n, _ := c.Read(make([]byte, 16))
	return n > 0
}

// mustReachRoot is the positive control of negative probes: each
// responder in the upstream namespace greets the root namespace.
func mustReachRoot(t *testing.T, u *dockerlab.Upstream, addrs ...netip.AddrPort) {
	t.Helper()
	for _, a := range addrs {
		u.RequireRoutes(t, a.Addr())
		if !rootTCP(a) {
			t.Fatalf("positive control: %s does not greet the root namespace: a blocked probe of it would prove nothing", a)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out (%v) waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
