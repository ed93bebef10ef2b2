package lab

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"outcall.dev/outcall/internal/privtest"
)

var bins string // directory holding the built outcalld and outcall

func TestMain(m *testing.M) {
	if cfg := os.Getenv(labDaemonEnv); cfg != "" {
		os.Exit(runLabDaemon(cfg))
	}
	dir, err := os.MkdirTemp("", "outcall-lab-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Readable by all: one test runs outcalld as nobody.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, b := range []string{"outcalld", "outcall"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b), "outcall.dev/outcall/cmd/"+b)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", b, err)
			os.Exit(1)
		}
	}
	bins = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireLab(t *testing.T) {
	t.Helper()
	privtest.Root(t)
	for _, tool := range []string{"ip", "nsenter", "nft", "bpftool"} {
		if _, err := exec.LookPath(tool); err != nil {
			privtest.Skip(t, tool+" not installed")
		}
	}
}

// cli runs the outcall CLI against the daemon's socket.
func cli(t *testing.T, d *Daemon, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bins, "outcall"), append([]string{"--socket", d.Socket}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func mustCLI(t *testing.T, d *Daemon, args ...string) string {
	t.Helper()
	out, errOut, code := cli(t, d, args...)
	if code != 0 {
		t.Fatalf("outcall %s: exit %d\n%s%s\ndaemon log:\n%s", strings.Join(args, " "), code, out, errOut, d.Log)
	}
	return out
}

// counters reads the datapath counters through the CLI's API path.
func counters(t *testing.T, d *Daemon) map[string]uint64 {
	t.Helper()
	out := mustCLI(t, d, "datapath", "counters")
	m := map[string]uint64{}
	for _, line := range strings.Split(out, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) == 4 {
			var n uint64
			fmt.Sscan(f[2], &n)
			m[f[0]+"/"+f[1]] = n
		}
	}
	return m
}

type world struct {
	lab    *Lab
	d      *Daemon
	a1, a2 Agent
}

// setUp starts a daemon, two registered agents and the responders: TCP on
// Upstream:80 and :443 and on Upstream2:80 and :443, UDP echo on
// Upstream:9000, TCP and UDP on a2's port 7000; the upstream namespace's
// kernel answers ICMP echo on Upstream and Upstream2. Every probe of a test
// aims at one of them (or at a responder the test adds), so a probe that
// gets no answer was blocked, not sent to a closed port.
func setUp(t *testing.T) *world { return setUpWithRules(t, nil) }

// setUpWithRules is setUp with rule files (name to content) in the
// daemon's rules directory and extra daemon flags.
func setUpWithRules(t *testing.T, files map[string]string, daemonArgs ...string) *world {
	requireLab(t)
	l := New(t)
	for name, content := range files {
		writeRule(t, l, name, content)
	}
	d := l.StartDaemon(filepath.Join(bins, "outcalld"), daemonArgs...)
	w := &world{lab: l, d: d}
	w.a1 = l.AddAgent("a1", "10.200.0.10", "02:00:0a:c8:00:0a")
	w.a2 = l.AddAgent("a2", "10.200.0.11", "02:00:0a:c8:00:0b")
	for _, a := range []Agent{w.a1, w.a2} {
		name := strings.TrimPrefix(a.NS, l.Prefix+"-")
		waitFor(t, "port "+a.Port+" attached", func() bool {
			_, _, code := cli(t, d, "endpoint", "add", "--name", name, "--interface", a.Port, "--ip", a.IP, "--mac", a.MAC)
			return code == 0
		})
	}
	for _, addr := range []string{Upstream + ":80", Upstream + ":443", Upstream2 + ":80", Upstream2 + ":443"} {
		ServeTCP(t, l.Up, addr)
	}
	ServeUDP(t, l.Up, Upstream+":9000")
	ServeTCP(t, w.a2.NS, "0.0.0.0:7000")
	ServeUDP(t, w.a2.NS, "0.0.0.0:7000")
	return w
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestLabEnforcement(t *testing.T) {
	w := setUp(t)
	a1, a2, d := w.a1, w.a2, w.d

	t.Run("upstream blocked and counted", func(t *testing.T) {
		before := counters(t, d)
		if TCP(a1.NS, Upstream+":80") {
			t.Error("TCP to upstream passed without a grant")
		}
		if UDP(a1.NS, Upstream+":9000") {
			t.Error("UDP to upstream passed without a grant")
		}
		if ICMP(a1.NS, Upstream) {
			t.Error("ICMP to upstream passed without a grant")
		}
		after := counters(t, d)
		// TCP retries its SYN, so at least one drop per probe.
		if moved := after["drop/no_rule"] - before["drop/no_rule"]; moved < 3 {
			t.Errorf("drop/no_rule moved by %d, want >= 3 (TCP, UDP, ICMP)", moved)
		}
		// Positive control: the same three probes from the same agent are
		// answered once a grant of every protocol opens upstream.
		mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream)
		defer cli(t, d, "grant", "flush")
		mustReach(t, TCP, a1.NS, Upstream+":80")
		mustReach(t, UDP, a1.NS, Upstream+":9000")
		mustReach(t, ICMP, a1.NS, Upstream)
	})

	t.Run("gateway services only", func(t *testing.T) {
		// Outcall's own DNS filter and proxy answer on the gateway (a
		// name no rule allows gets NXDOMAIN; the proxy's health check
		// answers); another host listener there does not, though it
		// answers inside the host (the positive control). Foreign
		// listeners on the service ports themselves:
		// TestLabForeignServiceUnreachable.
		ServeTCP(t, w.lab.Host, Gateway+":22")
		mustReach(t, TCP, w.lab.Host, Gateway+":22")
		for _, network := range []string{"udp", "tcp"} {
			if r := Resolve(a1.NS, network, Gateway+":53", "unlisted.test", dns.TypeA); r == nil || r.Rcode != dns.RcodeNameError {
				t.Errorf("DNS over %s to the gateway: %v, want NXDOMAIN from the filter", network, r)
			}
		}
		if code, got := proxyHealth(a1.NS, Gateway+":8080"); code != 200 || got != `{"status":"ok"}` {
			t.Errorf("proxy health from the agent: %d %q", code, got)
		}
		before := counters(t, d)
		if TCP(a1.NS, Gateway+":22") {
			t.Error("gateway port 22 reachable")
		}
		if moved := counters(t, d)["drop/gateway_port"] - before["drop/gateway_port"]; moved < 1 {
			t.Errorf("drop/gateway_port moved by %d, want >= 1", moved)
		}
	})

	t.Run("agent to agent blocked", func(t *testing.T) {
		// Positive control: a2's responders answer the host namespace.
		mustReach(t, TCP, w.lab.Host, a2.IP+":7000")
		mustReach(t, UDP, w.lab.Host, a2.IP+":7000")
		if TCP(a1.NS, a2.IP+":7000") || UDP(a1.NS, a2.IP+":7000") {
			t.Error("agent reached another agent on the bridge")
		}
	})

	t.Run("grant opens exactly one flow for one agent", func(t *testing.T) {
		out := mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
		if !strings.Contains(out, "Granted a1 -> "+Upstream) {
			t.Errorf("grant add printed %q", out)
		}
		if !TCP(a1.NS, Upstream+":80") {
			t.Fatalf("granted TCP blocked\n%s", d.Log)
		}
		// Positive control of the probes below: their responders answer
		// the host namespace, which routes to upstream.
		mustReach(t, TCP, w.lab.Host, Upstream+":443", Upstream2+":80")
		mustReach(t, UDP, w.lab.Host, Upstream+":9000")
		if TCP(a1.NS, Upstream+":443") {
			t.Error("other port of granted destination reachable")
		}
		if UDP(a1.NS, Upstream+":9000") {
			t.Error("UDP reachable with a TCP grant")
		}
		if TCP(a1.NS, Upstream2+":80") {
			t.Error("other destination reachable")
		}
		if TCP(a2.NS, Upstream+":80") {
			t.Error("grant of a1 opened the flow for a2")
		}
		if list := mustCLI(t, d, "grant", "list"); !strings.Contains(list, "a1") || !strings.Contains(list, Upstream) {
			t.Errorf("grant list = %q", list)
		}
		mustCLI(t, d, "grant", "remove", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
		if TCP(a1.NS, Upstream+":80") {
			t.Error("new connection passed after the grant was removed")
		}
	})

	t.Run("detached program is re-attached", func(t *testing.T) {
		// The port while detached is TestLabDetachedStateReported's; here
		// the repair loop puts the program back within a second.
		mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream)
		if !TCP(a1.NS, Upstream+":80") {
			t.Fatal("granted destination blocked before detaching")
		}
		mustReach(t, TCP, w.lab.Host, Upstream2+":80") // positive control of the probe below
		w.lab.Run("bpftool", "link", "detach", "id", tcxLinkID(t, w.lab, a1.Port))
		if TCP(a1.NS, Upstream2+":80") {
			t.Error("an ungranted destination answered around the detach")
		}
		waitFor(t, "program re-attached", func() bool { return TCP(a1.NS, Upstream+":80") })
		mustCLI(t, d, "grant", "flush")
	})

	t.Run("pinned maps readable with bpftool", func(t *testing.T) {
		var entries []struct {
			Formatted struct {
				Values []struct {
					Value struct {
						Packets uint64 `json:"packets"`
					} `json:"value"`
				} `json:"values"`
			} `json:"formatted"`
		}
		out := w.lab.Run("bpftool", "-j", "map", "dump", "pinned", filepath.Join(w.lab.PinDir, "counters"))
		if err := json.Unmarshal([]byte(out), &entries); err != nil {
			t.Fatalf("parse bpftool dump: %v\n%s", err, out)
		}
		var total uint64
		for _, e := range entries {
			for _, v := range e.Formatted.Values {
				total += v.Value.Packets
			}
		}
		if total == 0 {
			t.Errorf("bpftool shows no counted packets:\n%s", out)
		}
		grantsDump := w.lab.Run("bpftool", "map", "dump", "pinned", filepath.Join(w.lab.PinDir, "endpoints"))
		if !strings.Contains(grantsDump, "identity") {
			t.Errorf("endpoints dump has no BTF field names:\n%s", grantsDump)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		body := scrape(t, w.lab)
		for _, want := range []string{`outcall_datapath_packets_total{reason="no_rule",verdict="drop"}`, `outcall_bridge_up{bridge="` + w.lab.Bridge + `"} 1`, "outcall_nftables_active 1"} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

// tcxLinkID finds the BPF link of the port's TCX program through its pin.
func tcxLinkID(t *testing.T, l *Lab, port string) string {
	t.Helper()
	var links []struct {
		Ifindex int `json:"ifindex"`
	}
	out := l.InNS(l.Host, "ip", "-j", "link", "show", "dev", port)
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("parse ip link: %v\n%s", err, out)
	}
	var info struct {
		ID int `json:"id"`
	}
	out = l.Run("bpftool", "-j", "link", "show", "pinned", fmt.Sprintf("%s/links/port-%d", l.PinDir, links[0].Ifindex))
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.ID == 0 {
		t.Fatalf("parse bpftool link: %v\n%s", err, out)
	}
	return fmt.Sprint(info.ID)
}

func TestLabShutdownAndRestart(t *testing.T) {
	w := setUp(t)
	a1, d := w.a1, w.d
	mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
	if !TCP(a1.NS, Upstream+":80") {
		t.Fatal("granted flow blocked")
	}

	// Probe continuously during the restart: a destination that was never
	// granted must not answer once. Positive control: the responders of
	// this test's negative probes answer the host namespace.
	mustReach(t, TCP, w.lab.Host, Upstream2+":80", Upstream2+":443")
	mustReach(t, UDP, w.lab.Host, Upstream+":9000")
	prober := StartProber(2000, func() bool { return TCP(a1.NS, Upstream2+":80") })

	if err := d.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, d.Log)
	}
	if _, err := os.Stat(d.Socket); !os.IsNotExist(err) {
		t.Errorf("host socket still exists after SIGTERM: %v", err)
	}
	if TCP(a1.NS, Upstream+":80") {
		t.Error("grant survived SIGTERM")
	}
	if !strings.Contains(w.lab.InNS(w.lab.Host, "ip", "link", "show", w.lab.Bridge), w.lab.Bridge) {
		t.Error("bridge removed at SIGTERM")
	}
	ruleset := w.lab.InNS(w.lab.Host, "nft", "list", "table", "inet", "outcall")
	if !strings.Contains(ruleset, "policy drop") {
		t.Errorf("strict policy missing after SIGTERM:\n%s", ruleset)
	}

	d2 := w.lab.StartDaemon(filepath.Join(bins, "outcalld"))
	mustCLI(t, d2, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
	if !TCP(a1.NS, Upstream+":80") {
		t.Fatalf("grant after restart blocked\n%s", d2.Log)
	}
	if err := d2.Signal(syscall.SIGKILL); err == nil {
		t.Log("outcalld exited cleanly on SIGKILL?")
	}
	if TCP(a1.NS, Upstream2+":443") || UDP(a1.NS, Upstream+":9000") {
		t.Error("ungranted traffic passed after SIGKILL")
	}
	d3 := w.lab.StartDaemon(filepath.Join(bins, "outcalld"))
	if TCP(a1.NS, Upstream+":80") {
		t.Error("grant survived a restart (S009-FR-010: containers must ask again)")
	}
	leaks, probes := prober.Stop()
	if leaks != 0 {
		t.Errorf("%d of %d probes to an ungranted destination passed during SIGTERM/SIGKILL/restart", leaks, probes)
	}
	if probes < 3 {
		t.Errorf("only %d probes ran during the restarts", probes)
	}
	if out := mustCLI(t, d3, "endpoint", "list"); !listsEndpoint(out, "a1") {
		t.Errorf("endpoints lost across restarts:\n%s", out)
	}
}

func TestLabBridgeCLI(t *testing.T) {
	requireLab(t)
	l := New(t)
	d := l.StartDaemon(filepath.Join(bins, "outcalld"))
	out := mustCLI(t, d, "bridge", "status")
	if !strings.HasPrefix(out, "Bridge:    "+l.Bridge+"\nStatus:    up\nIndex:     ") || !strings.HasSuffix(out, "nftables:  active\n") {
		t.Errorf("bridge status =\n%s", out)
	}
	if out := mustCLI(t, d, "bridge", "up"); out != "Bridge is up.\n" {
		t.Errorf("bridge up printed %q", out)
	}
	if out := mustCLI(t, d, "bridge", "down"); out != "Bridge is down.\n" {
		t.Errorf("bridge down printed %q", out)
	}
	if _, err := exec.Command("nsenter", "--net=/run/netns/"+l.Host, "ip", "link", "show", l.Bridge).CombinedOutput(); err == nil {
		t.Error("bridge still exists after bridge down")
	}
	if _, err := exec.Command("nsenter", "--net=/run/netns/"+l.Host, "nft", "list", "table", "inet", "outcall").CombinedOutput(); err == nil {
		t.Error("table inet outcall still exists after bridge down")
	}
	want := "Bridge:    " + l.Bridge + "\nStatus:    down\nnftables:  inactive\n"
	if out := mustCLI(t, d, "bridge", "status"); out != want {
		t.Errorf("bridge status after down =\n%s\nwant\n%s", out, want)
	}
	if _, errOut, code := cli(t, d, "endpoint", "add", "--name", "x", "--interface", "veth0", "--ip", "10.200.0.5", "--mac", "02:00:00:00:00:05"); code != 1 || !strings.Contains(errOut, "bridge is not up") {
		t.Errorf("endpoint add with bridge down: exit %d, %q", code, errOut)
	}
	// S003-FR-033: no rule evaluation while the base policy is not in place.
	for _, args := range [][]string{
		{"rules", "evaluate", "--context", `{"network":{"ip":"192.0.2.1","port":443,"protocol":"tcp"}}`},
		{"rules", "test", "--expr", "true"},
	} {
		if _, errOut, code := cli(t, d, args...); code != 1 || !strings.Contains(errOut, "rule evaluation unavailable: bridge is not up") {
			t.Errorf("%v with bridge down: exit %d, %q", args, code, errOut)
		}
	}
	mustCLI(t, d, "bridge", "up")
	if out := mustCLI(t, d, "rules", "test", "--expr", "true"); out != "Result: true\n" {
		t.Errorf("rules test after bridge up printed %q", out)
	}
	if out := mustCLI(t, d, "bridge", "status"); !strings.Contains(out, "Status:    up") {
		t.Errorf("bridge status after up =\n%s", out)
	}
}

// TestLabBadInput: each bad start fails with a clear error and changes nothing.
func TestLabBadInput(t *testing.T) {
	requireLab(t)
	l := New(t)
	l.InNS(l.Host, "ip", "link", "add", l.Prefix+"v0", "type", "veth", "peer", "name", l.Prefix+"v1")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"name too long", []string{"--bridge", "outcall-bridge-too-long"}, "longer than 15"},
		{"bad characters", []string{"--bridge", "out call"}, "not allowed"},
		{"existing non-bridge link", []string{"--bridge", l.Prefix + "v0"}, "not a bridge"},
		{"pin dir not on bpffs", []string{"--pin-dir", l.Dir + "/pins"}, "not on a bpf filesystem"},
		{"bad subnet block", []string{"--subnet-block", "8.8.0.0/16"}, "RFC 1918"},
		// S003-AS-007: a rule that does not compile stops startup, naming
		// file, line, rule and field, before anything on the host changes.
		{"bad rule", []string{"--rules-dir", filepath.Join(l.Dir, "bad-rules")}, `50-custom.yaml:4: rule "bad-rule": condition: CEL error`},
	}
	if err := os.MkdirAll(filepath.Join(l.Dir, "bad-rules"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.Dir, "bad-rules", "50-custom.yaml"),
		[]byte("version: \"1\"\nrules:\n  - id: bad-rule\n    condition: network.hostname ==\n    action: allow\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--net=/run/netns/" + l.Host, filepath.Join(bins, "outcalld"),
				"--socket", filepath.Join(l.Dir, "bad.sock"), "--agent-socket", filepath.Join(l.Dir, "bad-agent.sock"), "--state-dir", filepath.Join(l.Dir, "state"),
				"--pin-dir", l.PinDir, "--bridge", l.Bridge, "--metrics-addr", "", "--rules-dir", l.RulesDir()}, tt.args...)
			out, err := exec.Command("nsenter", args...).CombinedOutput()
			if err == nil || !strings.Contains(string(out), tt.want) {
				t.Errorf("outcalld %v: err %v, output %q, want it to mention %q", tt.args, err, out, tt.want)
			}
			if _, err := exec.Command("nsenter", "--net=/run/netns/"+l.Host, "nft", "list", "table", "inet", "outcall").CombinedOutput(); err == nil {
				t.Error("a failed start left table inet outcall behind")
			}
			if _, err := os.Stat(filepath.Join(l.Dir, "bad.sock")); err == nil {
				t.Error("a failed start left a socket behind")
			}
			if _, err := exec.Command("nsenter", "--net=/run/netns/"+l.Host, "ip", "link", "show", l.Bridge).CombinedOutput(); err == nil {
				t.Error("a failed start created the bridge")
			}
		})
	}

	t.Run("not root", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(bins, "outcalld"), "--socket", filepath.Join(l.Dir, "nr.sock"), "--agent-socket", filepath.Join(l.Dir, "nr-agent.sock"), "--state-dir", filepath.Join(l.Dir, "nr"), "--bridge", l.Bridge, "--rules-dir", l.RulesDir())
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "CAP_NET_ADMIN") {
			t.Errorf("outcalld as nobody: err %v, output %q", err, out)
		}
	})
}
