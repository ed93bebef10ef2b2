package dockerbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"outcall.dev/outcall/test/dockerlab"
	"outcall.dev/outcall/test/lab"
)

// daemon is an outcalld in the root namespace, where Docker is.
type daemon struct {
	Cmd     *exec.Cmd
	Socket  string
	Bridge  string
	Block   netip.Prefix // --subnet-block
	Gateway netip.Addr   // the default network's gateway
	PinDir  string

	log  *syncBuffer
	done chan error
	once sync.Once
}

// syncBuffer is the daemon's log, written by its output copier and read
// by a failing benchmark.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// tail is the log's last n bytes.
func (s *syncBuffer) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buf.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Log is the end of the daemon's log, for a failure message.
func (d *daemon) Log() string { return d.log.tail(8 << 10) }

// PID is the daemon's process id.
func (d *daemon) PID() int { return d.Cmd.Process.Pid }

// lockRoot takes the machine lock test/docker holds for its whole run,
// root-outcalld, until the end of t: one outcalld runs in the root
// namespace at a time (its nftables tables are the namespace's). It is
// taken before NewUpstream's routes lock, in test/docker's order.
func lockRoot(t testing.TB) {
	t.Helper()
	f, err := dockerlab.LockMachine(dockerlab.RootLock, dockerlab.RootLockWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}

// buildDaemon builds cmd/outcalld into a directory of t.
func buildDaemon(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "outcalld")
	cmd := exec.Command("go", "build", "-o", out, "outcall.dev/outcall/cmd/outcalld")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build outcalld: %v\n%s", err, b)
	}
	return out
}

// startDaemon starts outcalld in the root namespace with bridge, block and
// rules, everything of its own under a temp dir and the pins under
// /sys/fs/bpf, and waits for its socket and its bridge. Its
// removal and that of everything it makes (the Docker networks on its
// bridge, the bridge, its nftables tables, the pins) is registered first.
// The bridge is <prefix>o and the pins /sys/fs/bpf/<prefix>-od, as
// test/docker names them, so that each package's preflight knows the
// other's crashed runs.
func startDaemon(t testing.TB, docker *dockerlab.Docker, bin, prefix string, block netip.Prefix, rules string, extraArgs ...string) *daemon {
	t.Helper()
	dir := t.TempDir()
	gw := block.Addr().Next()
	d := &daemon{Socket: filepath.Join(dir, "host.sock"), Bridge: prefix + "o", Block: block,
		Gateway: gw, PinDir: "/sys/fs/bpf/" + prefix + "-od", log: &syncBuffer{}, done: make(chan error, 1)}
	rulesDir := filepath.Join(dir, "rules.d")
	if err := os.MkdirAll(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rulesDir, "50-bench.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.removeAll(t, docker) })
	d.Cmd = exec.Command(bin,
		"--bridge", d.Bridge, "--subnet-block", block.String(),
		"--socket", d.Socket, "--state-dir", filepath.Join(dir, "state"), "--rules-dir", rulesDir,
		"--pin-dir", d.PinDir, "--allow-private-pins", "--metrics-addr", "",
		// Every name it resolves goes to the upstream namespace.
		"--dns-upstream", lab.Upstream+":53",
		"--max-conns-per-agent", "0", "--log-level", "info",
		// Nothing of the machine's: the helper mounts' host paths are
		// the benchmark's (no container here asks for them).
		"--agent-socket-host-path", filepath.Join(dir, "agent.sock"),
		"--shim-host-path", filepath.Join(dir, "outcall-agent"))
	d.Cmd.Args = append(d.Cmd.Args, extraArgs...)
	// The local engine only, whatever the environment says.
	d.Cmd.Env = append(os.Environ(), "DOCKER_HOST="+dockerlab.LocalSocket)
	d.Cmd.Stdout, d.Cmd.Stderr = d.log, d.log
	if err := d.Cmd.Start(); err != nil {
		t.Fatalf("start outcalld: %v", err)
	}
	go func() { d.done <- d.Cmd.Wait() }()
	t.Cleanup(d.stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("unix", d.Socket)
		if err == nil {
			c.Close()
			if _, err := netlink.LinkByName(d.Bridge); err == nil {
				return d
			}
		}
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("outcalld exited: %v\n%s", err, d.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("outcalld's socket or bridge did not appear within 20 s\n%s", d.Log())
		}
	}
}

// stop ends the daemon: SIGTERM, and SIGKILL after 15 s.
func (d *daemon) stop() {
	d.once.Do(func() {
		_ = d.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-d.done:
			d.done <- err
		case <-time.After(15 * time.Second):
			_ = d.Cmd.Process.Kill()
			d.done <- <-d.done
		}
	})
}

// removeAll removes what the daemon made, after it stopped: the Docker
// networks on its bridge (their containers first: only the benchmark's
// can be there), the bridge, the nftables tables (preflight made sure
// they were not someone else's) and the pins.
func (d *daemon) removeAll(t testing.TB, docker *dockerlab.Docker) {
	if d.Cmd != nil && d.Cmd.Process != nil {
		d.stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	out, err := docker.Output(ctx, nil, "network", "ls", "--quiet", "--no-trunc", "--filter", "driver=bridge")
	errs = append(errs, err)
	for _, id := range strings.Fields(out) {
		br, err := docker.Output(ctx, nil, "network", "inspect", "--format", `{{index .Options "com.docker.network.bridge.name"}}`, id)
		if err != nil || br != d.Bridge {
			continue
		}
		attached, _ := docker.Output(ctx, nil, "network", "inspect", "--format", "{{range $id, $c := .Containers}}{{$id}} {{end}}", id)
		if ids := strings.Fields(attached); len(ids) > 0 {
			_, err := docker.Output(ctx, nil, append([]string{"rm", "--force", "--volumes"}, ids...)...)
			errs = append(errs, err)
		}
		_, err = docker.Output(ctx, nil, "network", "rm", id)
		errs = append(errs, err)
	}
	if _, err := netlink.LinkByName(d.Bridge); err == nil {
		if out, err := exec.Command("ip", "link", "del", d.Bridge).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link del %s: %w: %s", d.Bridge, err, out))
		}
	}
	for _, tb := range dockerlab.NFTTables {
		if exec.Command("nft", "list", "table", tb[0], tb[1]).Run() != nil {
			continue
		}
		if out, err := exec.Command("nft", "delete", "table", tb[0], tb[1]).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("nft delete table %s %s: %w: %s", tb[0], tb[1], err, out))
		}
	}
	if err := os.RemoveAll(d.PinDir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		t.Errorf("remove what outcalld made: %v", err)
	}
}

// rssKiB reads a VmRSS-like field ("VmRSS", "VmHWM") of pid, in KiB.
func rssKiB(t testing.TB, pid int, field string) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				n, err := strconv.ParseFloat(f[0], 64)
				if err == nil {
					return n
				}
			}
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
