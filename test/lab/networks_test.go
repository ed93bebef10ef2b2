package lab

import (
	"strings"
	"syscall"
	"testing"

	"outcall.dev/outcall/pkg/network"
)

// echoPort is the lab daemon's gateway echo service (the stand-in for the
// DNS filter and the proxy).
const echoPort = 7070

// TestLabTwoNetworks: two Outcall networks, each on its own bridge, each
// enforced, each with its own gateway services, and agents on one unable to
// reach the other network's agents or gateway. Every negative probe has its
// positive control here.
func TestLabTwoNetworks(t *testing.T) {
	requireLab(t)
	l := New(t)
	d := l.StartLabDaemon(echoPort)

	if out := mustCLI(t, d, "network", "create", "--name", "second"); out != "Network \"outcall-second\" created (10.200.1.0/24).\n" {
		t.Fatalf("network create printed %q", out)
	}
	list := mustCLI(t, d, "network", "list")
	for _, row := range []string{"outcall-default    10.200.0.0/24    0", "outcall-second     10.200.1.0/24    0"} {
		if !strings.Contains(list, row) {
			t.Fatalf("network list lacks %q:\n%s", row, list)
		}
	}
	second := network.BridgeName("outcall-second")
	a1 := l.AddAgent("a1", "10.200.0.10", "02:00:0a:c8:00:0a")
	b1 := l.AddAgentOn(second, "10.200.1.1", "b1", "10.200.1.10", "02:00:0a:c8:01:0a")
	for _, a := range []Agent{a1, b1} {
		name := strings.TrimPrefix(a.NS, l.Prefix+"-")
		waitFor(t, "port "+a.Port+" taken over", func() bool {
			_, _, code := cli(t, d, "endpoint", "add", "--name", name, "--interface", a.Port, "--ip", a.IP, "--mac", a.MAC)
			return code == 0
		})
	}
	status := mustCLI(t, d, "network", "status", "--name", "second")
	if !strings.Contains(status, "Gateway:      10.200.1.1") || !strings.Contains(status, "  b1               10.200.1.10") {
		t.Fatalf("network status:\n%s", status)
	}

	// Each gateway's own service answers with its network's name: from
	// the host (the listeners are up), and from each network's own agent.
	gwA, gwB := Gateway+":7070", "10.200.1.1:7070"
	waitFor(t, "the echo service on both gateways", func() bool {
		return echoFrom(l.Host, "tcp4", gwA) == "outcall-default" && echoFrom(l.Host, "tcp4", gwB) == "outcall-second"
	})
	for _, proto := range []string{"tcp4", "udp4"} {
		if got := echoFrom(a1.NS, proto, gwA); got != "outcall-default" {
			t.Errorf("a1 %s to its gateway's service: %q", proto, got)
		}
		if got := echoFrom(b1.NS, proto, gwB); got != "outcall-second" {
			t.Errorf("b1 %s to its gateway's service: %q", proto, got)
		}
		if got := echoFrom(l.Host, proto, gwB); got != "outcall-second" {
			t.Errorf("positive control: the host's %s to the second gateway's service: %q", proto, got)
		}
	}
	before := counters(t, d)
	// Another network's gateway service is out of reach.
	for _, proto := range []string{"tcp4", "udp4"} {
		if got := echoFrom(a1.NS, proto, gwB); got != "" {
			t.Errorf("a1 reached the second network's gateway service over %s: %q", proto, got)
		}
		if got := echoFrom(b1.NS, proto, gwA); got != "" {
			t.Errorf("b1 reached the default network's gateway service over %s: %q", proto, got)
		}
	}

	// Agents across networks: positive control from the host first.
	for _, a := range []Agent{a1, b1} {
		ServeTCP(t, a.NS, "0.0.0.0:7000")
		ServeUDP(t, a.NS, "0.0.0.0:7000")
		mustReach(t, TCP, l.Host, a.IP+":7000")
		mustReach(t, UDP, l.Host, a.IP+":7000")
	}
	for _, p := range []struct{ from, to Agent }{{a1, b1}, {b1, a1}} {
		if TCP(p.from.NS, p.to.IP+":7000") || UDP(p.from.NS, p.to.IP+":7000") {
			t.Errorf("%s reached %s on the other network", p.from.NS, p.to.NS)
		}
	}

	// Each network is enforced: upstream is closed to both until a grant
	// opens it for one agent, and only for that one.
	ServeTCP(t, l.Up, Upstream+":80")
	mustReach(t, TCP, l.Host, Upstream+":80")
	if TCP(a1.NS, Upstream+":80") || TCP(b1.NS, Upstream+":80") {
		t.Fatal("an agent reached upstream without a grant")
	}
	mustCLI(t, d, "grant", "add", "--endpoint", "b1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
	mustReach(t, TCP, b1.NS, Upstream+":80")
	if TCP(a1.NS, Upstream+":80") {
		t.Error("b1's grant opened upstream for a1 on the other network")
	}
	mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
	mustReach(t, TCP, a1.NS, Upstream+":80")
	after := counters(t, d)
	var dropped uint64
	for k, v := range after {
		if strings.HasPrefix(k, "drop/") {
			dropped += v - before[k]
		}
	}
	if dropped == 0 {
		t.Error("no drop was counted for the blocked probes")
	}

	// A network with an identity on it is not destroyed.
	if _, errOut, code := cli(t, d, "network", "destroy", "--name", "second"); code != 1 ||
		!strings.Contains(errOut, `cannot destroy network "outcall-second": `) {
		t.Fatalf("destroy with b1 on it: exit %d, %q", code, errOut)
	}

	// A restart (SIGKILL: nothing cleaned up) brings the second network
	// back under the same policy, with no window for b1: a destination it
	// was never granted does not answer once meanwhile (its responder
	// answers the host: the positive control).
	ServeTCP(t, l.Up, Upstream2+":80")
	mustReach(t, TCP, l.Host, Upstream2+":80")
	prober := StartProber(2000, func() bool { return TCP(b1.NS, Upstream2+":80") })
	if err := d.Signal(syscall.SIGKILL); err == nil {
		t.Log("the lab daemon exited cleanly on SIGKILL?")
	}
	d2 := l.StartLabDaemon(echoPort)
	if list := mustCLI(t, d2, "network", "list"); !strings.Contains(list, "outcall-second     10.200.1.0/24    1") {
		t.Fatalf("network list after a restart:\n%s", list)
	}
	waitFor(t, "the echo service on the second gateway again", func() bool { return echoFrom(b1.NS, "tcp4", gwB) == "outcall-second" })
	if TCP(b1.NS, Upstream+":80") {
		t.Error("b1's grant survived a restart (S009-FR-010)")
	}
	mustCLI(t, d2, "grant", "add", "--endpoint", "b1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
	mustReach(t, TCP, b1.NS, Upstream+":80")
	if leaks, probes := prober.Stop(); leaks != 0 || probes < 2 {
		t.Errorf("%d of %d probes from b1 to an ungranted destination passed across the restart", leaks, probes)
	}
}
