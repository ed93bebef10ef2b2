// Package lab builds a network of namespaces for end-to-end tests of outcalld
// (../../../shared/TESTING.md): a host namespace running the daemon, whose
// only route leads into an upstream namespace that plays the internet on
// documentation addresses, and agent namespaces plugged into the daemon's
// bridge. No packet of a lab can leave the machine: every address it uses
// exists only inside namespaces the lab created, and everything is removed on
// cleanup, also when a test fails.
package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Addresses of the lab. The agent subnet exists only in the host namespace;
// upstream addresses only in the upstream namespace.
const (
	HostUplink     = "192.0.2.1"
	UpstreamUplink = "192.0.2.2"
	Upstream       = "198.51.100.10" // TCP, UDP and ICMP responders
	Upstream2      = "203.0.113.10"
	Gateway        = "10.200.0.1"
)

// Lab is one set of namespaces.
type Lab struct {
	t      testing.TB
	Prefix string // short, so that interface names fit in 15 bytes
	Host   string // namespace names
	Up     string
	Bridge string
	Dir    string // temp dir for sockets and state
	PinDir string
}

// New creates the host and upstream namespaces and registers their removal.
func New(t testing.TB) *Lab {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	p := "oct" + hex.EncodeToString(b)
	l := &Lab{t: t, Prefix: p, Host: p + "-host", Up: p + "-up", Bridge: p + "br",
		Dir: t.TempDir(), PinDir: "/sys/fs/bpf/" + p}
	t.Cleanup(l.cleanup)
	l.Run("ip", "netns", "add", l.Host)
	l.Run("ip", "netns", "add", l.Up)
	l.InNS(l.Host, "ip", "link", "set", "lo", "up")
	l.InNS(l.Up, "ip", "link", "set", "lo", "up")
	l.Run("ip", "link", "add", p+"h", "netns", l.Host, "type", "veth", "peer", "name", p+"u", "netns", l.Up)
	l.InNS(l.Host, "ip", "addr", "add", HostUplink+"/24", "dev", p+"h")
	l.InNS(l.Host, "ip", "link", "set", p+"h", "up")
	l.InNS(l.Host, "ip", "route", "add", "default", "via", UpstreamUplink)
	l.InNS(l.Host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.InNS(l.Up, "ip", "addr", "add", UpstreamUplink+"/24", "dev", p+"u")
	l.InNS(l.Up, "ip", "link", "set", p+"u", "up")
	l.InNS(l.Up, "ip", "addr", "add", Upstream+"/32", "dev", "lo")
	l.InNS(l.Up, "ip", "addr", "add", Upstream2+"/32", "dev", "lo")
	l.InNS(l.Up, "ip", "route", "add", "10.200.0.0/16", "via", HostUplink)
	return l
}

func (l *Lab) cleanup() {
	for _, ns := range l.namespaces() {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
	_ = os.RemoveAll(l.PinDir)
}

func (l *Lab) namespaces() []string {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], l.Prefix+"-") {
			names = append(names, f[0])
		}
	}
	return names
}

// Run runs a command and fails the test if it fails.
func (l *Lab) Run(name string, args ...string) string {
	l.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// InNS runs a command in a namespace, without remounting /sys (nsenter, not
// ip netns exec) so that bpffs pins stay visible.
func (l *Lab) InNS(ns, name string, args ...string) string {
	l.t.Helper()
	return l.Run("nsenter", append([]string{"--net=/run/netns/" + ns, name}, args...)...)
}

// Agent is a namespace plugged into the bridge through a veth.
type Agent struct {
	NS   string
	Port string // host-side veth, the bridge port
	IP   string
	MAC  string
}

// AddAgent creates an agent namespace with address ip and plugs it into the
// daemon's bridge, which must exist.
func (l *Lab) AddAgent(name, ip, mac string) Agent {
	l.t.Helper()
	return l.AddAgentOn(l.Bridge, Gateway, name, ip, mac)
}

// AddAgentOn is AddAgent on another Outcall bridge, whose gateway is gw.
func (l *Lab) AddAgentOn(bridge, gw, name, ip, mac string) Agent {
	l.t.Helper()
	a := Agent{NS: l.Prefix + "-" + name, Port: l.Prefix + name, IP: ip, MAC: mac}
	l.Run("ip", "netns", "add", a.NS)
	l.InNS(a.NS, "ip", "link", "set", "lo", "up")
	l.Run("ip", "link", "add", a.Port, "netns", l.Host, "type", "veth", "peer", "name", "eth0", "netns", a.NS)
	l.InNS(a.NS, "ip", "link", "set", "eth0", "address", mac)
	l.InNS(a.NS, "ip", "addr", "add", ip+"/24", "dev", "eth0")
	l.InNS(a.NS, "ip", "link", "set", "eth0", "up")
	l.InNS(a.NS, "ip", "route", "add", "default", "via", gw)
	l.InNS(l.Host, "ip", "link", "set", a.Port, "master", bridge)
	l.InNS(l.Host, "ip", "link", "set", a.Port, "up")
	return a
}

// Do runs fn on a thread that is in namespace ns; sockets fn opens stay in ns.
func Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is left locked and so discarded when the goroutine
		// ends: it never returns to the pool in a foreign namespace.
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Daemon is a running outcalld in the host namespace.
type Daemon struct {
	Cmd    *exec.Cmd
	Socket string
	Log    *bytes.Buffer
	done   chan error
}

// StartDaemon runs bin in the host namespace and waits for its socket.
func (l *Lab) StartDaemon(bin string, extra ...string) *Daemon {
	l.t.Helper()
	args := append([]string{
		"--bridge", l.Bridge, "--socket", l.Socket(),
		// Never the machine's agent socket either.
		"--agent-socket", filepath.Join(l.Dir, "agent.sock"),
		"--state-dir", filepath.Join(l.Dir, "state"), "--pin-dir", l.PinDir,
		"--metrics-addr", "127.0.0.1:9469", "--log-level", "debug",
		// Every name the daemon resolves goes to the upstream namespace
		// (TESTING.md), where a test that needs DNS serves it.
		"--dns-upstream", Upstream + ":53",
		// Never the host's rules: the lab's own directory (absent unless a
		// test writes it).
		"--rules-dir", l.RulesDir(),
		// A lab is namespaces only: the machine's Docker is not its
		// business (test/dockerlab runs the daemon with Docker).
		"--no-docker"}, extra...)
	return l.start(exec.Command("nsenter", append([]string{"--net=/run/netns/" + l.Host, bin}, args...)...))
}

// Socket is the host API socket of the lab's daemon.
func (l *Lab) Socket() string { return filepath.Join(l.Dir, "host.sock") }

// start runs a daemon's command and waits for its socket.
func (l *Lab) start(cmd *exec.Cmd) *Daemon {
	l.t.Helper()
	d := &Daemon{Cmd: cmd, Socket: l.Socket(), Log: &bytes.Buffer{}, done: make(chan error, 1)}
	d.Cmd.Stdout, d.Cmd.Stderr = d.Log, d.Log
	if err := d.Cmd.Start(); err != nil {
		l.t.Fatalf("start outcalld: %v", err)
	}
	go func() { d.done <- d.Cmd.Wait() }()
	l.t.Cleanup(func() { d.Stop() })
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", d.Socket); err == nil {
			c.Close()
			return d
		}
		select {
		case err := <-d.done:
			d.done <- err
			l.t.Fatalf("outcalld exited: %v\n%s", err, d.Log)
		case <-time.After(50 * time.Millisecond):
		}
	}
	l.t.Fatalf("outcalld socket did not appear\n%s", d.Log)
	return nil
}

// RulesDir is the rules directory the lab's daemons read.
func (l *Lab) RulesDir() string { return filepath.Join(l.Dir, "rules.d") }

// Signal sends sig and waits up to 10 s for the daemon to exit.
func (d *Daemon) Signal(sig os.Signal) error {
	_ = d.Cmd.Process.Signal(sig)
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(10 * time.Second):
		return fmt.Errorf("outcalld did not exit after %v", sig)
	}
}

// Stop terminates the daemon if it still runs.
func (d *Daemon) Stop() {
	if d.Cmd.ProcessState == nil {
		_ = d.Signal(os.Interrupt)
		_ = d.Cmd.Process.Kill()
	}
}

// Context returns a context bounded by d.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
