package lab

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"outcall.dev/outcall/internal/packet"
)

// TestLabRevocationClosesTuple: a revoked grant ends its flows. Before the
// flow table, conntrack's memory of a closed connection let a new SYN from
// the same source port through after `grant remove`, and a UDP tuple lived
// on as long as it kept sending.
func TestLabRevocationClosesTuple(t *testing.T) {
	w := setUp(t)
	a1, d := w.a1, w.d

	mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
	// Positive control: the tuple connects, closes and connects again.
	for i := range 2 {
		if !TCPFrom(a1.NS, 45001, Upstream+":80") {
			t.Fatalf("granted connection %d from port 45001 failed\n%s", i, d.Log)
		}
	}
	mustCLI(t, d, "grant", "remove", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
	if TCPFrom(a1.NS, 45001, Upstream+":80") {
		t.Error("a new connection from the source port of a closed granted connection passed after grant remove")
	}

	mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "udp", "--port", "9000")
	for i := range 3 {
		if !UDPFrom(a1.NS, 45002, Upstream+":9000") {
			t.Fatalf("granted datagram %d failed", i)
		}
	}
	before := counters(t, d)["allow/established"]
	mustCLI(t, d, "grant", "remove", "--endpoint", "a1", "--dst", Upstream, "--proto", "udp", "--port", "9000")
	for i := range 3 {
		if UDPFrom(a1.NS, 45002, Upstream+":9000") {
			t.Errorf("datagram %d on the revoked UDP tuple passed", i)
		}
	}
	if before == 0 {
		t.Error("allow/established never moved: the granted datagrams after the first did not take the flow table")
	}

	// Expiry is not revocation: a flow outlives its grant's TTL, a new
	// tuple does not.
	mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "udp", "--port", "9000", "--ttl", "1")
	if !UDPFrom(a1.NS, 45003, Upstream+":9000") {
		t.Fatal("granted datagram failed")
	}
	time.Sleep(1500 * time.Millisecond)
	if !UDPFrom(a1.NS, 45003, Upstream+":9000") {
		t.Error("a flow did not outlive its grant's expiry")
	}
	if UDPFrom(a1.NS, 45004, Upstream+":9000") {
		t.Error("a new UDP tuple passed after the grant expired")
	}
}

// TestLabReloadRedecidesFlows: a reload that keeps an allow keeps its flows
// without a lost packet; one that removes it stops them at their next
// packet. Before, conntrack kept every flow alive across any reload.
func TestLabReloadRedecidesFlows(t *testing.T) {
	allow := `version: "1"
rules:
  - id: echo
    condition: cidr("198.51.100.10/32").containsIP(network.ip) && network.port == 9000 && network.protocol == "udp"
    action: allow
`
	other := `version: "1"
rules:
  - id: other
    condition: cidr("203.0.113.10/32").containsIP(network.ip) && network.port == 80
    action: allow
`
	w := setUpWithRules(t, map[string]string{"10-echo.yaml": allow}, "--watch-rules=false")
	a1, d := w.a1, w.d
	if !UDPFrom(a1.NS, 45010, Upstream+":9000") {
		t.Fatalf("allowed datagram failed\n%s", d.Log)
	}
	writeRule(t, w.lab, "20-other.yaml", other)
	mustCLI(t, d, "rules", "reload")
	for i := range 5 {
		if !UDPFrom(a1.NS, 45010, Upstream+":9000") {
			t.Errorf("datagram %d lost after a reload that keeps its rule", i)
		}
	}
	removeRule(t, w.lab, "10-echo.yaml")
	mustCLI(t, d, "rules", "reload")
	if UDPFrom(a1.NS, 45010, Upstream+":9000") {
		t.Error("a flow outlived the reload that removed its rule")
	}
	if !TCP(a1.NS, Upstream2+":80") {
		t.Error("the new rule set does not allow what it names")
	}
}

// plainPair is two namespaces on a plain Linux bridge of the lab's host
// namespace, without Outcall: the positive control for frames that
// Outcall's bridge must not deliver.
func plainPair(t *testing.T, l *Lab) (src, dst Agent) {
	t.Helper()
	br := l.Prefix + "pb"
	l.InNS(l.Host, "ip", "link", "add", br, "type", "bridge")
	l.InNS(l.Host, "ip", "link", "set", br, "up")
	mk := func(name, ip, mac string) Agent {
		a := Agent{NS: l.Prefix + "-" + name, Port: l.Prefix + name, IP: ip, MAC: mac}
		l.Run("ip", "netns", "add", a.NS)
		l.Run("ip", "link", "add", a.Port, "netns", l.Host, "type", "veth", "peer", "name", "eth0", "netns", a.NS)
		l.InNS(a.NS, "ip", "link", "set", "eth0", "address", mac)
		l.InNS(a.NS, "ip", "addr", "add", ip+"/24", "dev", "eth0")
		l.InNS(a.NS, "ip", "link", "set", "eth0", "up")
		l.InNS(l.Host, "ip", "link", "set", a.Port, "master", br)
		l.InNS(l.Host, "ip", "link", "set", a.Port, "up")
		return a
	}
	return mk("p1", "10.201.0.10", "02:00:0a:c9:00:0a"), mk("p2", "10.201.0.11", "02:00:0a:c9:00:0b")
}

// TestLabEastWest: agents are kept apart by the frame's destination, not by
// ARP. Each frame below reaches the other namespace on a plain bridge, and
// none reaches the other agent on Outcall's.
func TestLabEastWest(t *testing.T) {
	w := setUp(t)
	a1, a2, d := w.a1, w.a2, w.d
	gw := bridgeMAC(t, w.lab)

	if _, errOut, code := cli(t, d, "grant", "add", "--endpoint", "a1", "--dst", a2.IP); code == 0 || !strings.Contains(errOut, "Outcall subnet") {
		t.Errorf("grant add to another agent: exit %d, %q; want a refusal naming the Outcall subnet", code, errOut)
	}
	// A static neighbour entry: a1 addresses a2 directly. Positive
	// control: a2's responders answer the host namespace.
	mustReach(t, UDP, w.lab.Host, a2.IP+":7000")
	mustReach(t, TCP, w.lab.Host, a2.IP+":7000")
	w.lab.InNS(a1.NS, "ip", "neigh", "replace", a2.IP, "lladdr", a2.MAC, "dev", "eth0", "nud", "permanent")
	if UDP(a1.NS, a2.IP+":7000") || TCP(a1.NS, a2.IP+":7000") {
		t.Error("a1 reached a2 through a static neighbour entry")
	}

	marker := []byte("outcall-east-west-marker")
	trailer := append(bytes.Repeat([]byte{0}, 1400), marker...)
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	frames := func(src, dst Agent, gateway net.HardwareAddr) map[string][]byte {
		sIP, dIP, gIP := net.ParseIP(src.IP), net.ParseIP(dst.IP), net.ParseIP(Gateway)
		arpReply := packet.ARPMessage(packet.ARPReply, mac(dst.MAC), mac(src.MAC), addrOf(src.IP), mac(dst.MAC), addrOf(Gateway))
		arpReq := packet.ARPMessage(packet.ARPRequest, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac(src.MAC), addrOf(src.IP), make(net.HardwareAddr, 6), addrOf(Gateway))
		return map[string][]byte{
			"udp to the other's mac":                 udpPayloadFrame(mac(src.MAC), mac(dst.MAC), sIP, dIP, 5000, 7000, marker),
			"udp to the gateway's mac, other's ip":   udpPayloadFrame(mac(src.MAC), gateway, sIP, dIP, 5000, 7000, marker),
			"dns to the gateway, sent to the other":  udpPayloadFrame(mac(src.MAC), mac(dst.MAC), sIP, gIP, 5000, 53, marker),
			"broadcast udp":                          udpPayloadFrame(mac(src.MAC), net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, sIP, dIP, 5000, 7000, marker),
			"arp reply claiming the gateway":         append(arpReply[:42:42], trailer...),
			"arp request for the gateway, trailered": append(arpReq[:42:42], trailer...),
		}
	}

	probe := func(src, dst Agent, gateway net.HardwareAddr) map[string]int {
		got := map[string]int{}
		for name, f := range frames(src, dst, gateway) {
			c, err := CatchFrames(dst.NS, "eth0", marker)
			if err != nil {
				t.Fatal(err)
			}
			for range 5 {
				if err := SendFrame(src.NS, "eth0", f); err != nil {
					t.Fatalf("send %s: %v", name, err)
				}
			}
			got[name] = c.Count(300 * time.Millisecond)
			c.Close()
		}
		return got
	}
	// On the plain bridge the host is the gateway too (an address and IP
	// forwarding), so a frame to the gateway's MAC for the other's address
	// is routed back to it: every frame has its positive control.
	p1, p2 := plainPair(t, w.lab)
	plain := w.lab.Prefix + "pb"
	w.lab.InNS(w.lab.Host, "ip", "addr", "add", "10.201.0.1/24", "dev", plain)
	for name, n := range probe(p1, p2, linkMAC(t, w.lab, plain)) {
		if n == 0 {
			t.Errorf("positive control: %q did not cross a plain bridge", name)
		}
	}
	before := counters(t, d)
	for name, n := range probe(a1, a2, gw) {
		if n != 0 {
			t.Errorf("%q: %d frames reached a2", name, n)
		}
	}
	after := counters(t, d)
	if after["drop/east_west"] == before["drop/east_west"] {
		t.Error("drop/east_west did not move")
	}
}

func addrOf(s string) netip.Addr { return netip.MustParseAddr(s) }

// removeRule deletes a rule file of the lab's rules directory.
func removeRule(t *testing.T, l *Lab, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(l.RulesDir(), name)); err != nil {
		t.Fatal(err)
	}
}

// execIn runs a command in namespace ns and returns its output and error,
// for commands that are expected to fail sometimes.
func execIn(ns string, name string, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns, name}, args...)...).CombinedOutput()
	return string(out), err
}

// bridgeMAC is the Outcall bridge's (the gateway's) MAC address.
func bridgeMAC(t *testing.T, l *Lab) net.HardwareAddr {
	t.Helper()
	var links []struct {
		Address string `json:"address"`
	}
	out := l.InNS(l.Host, "ip", "-j", "link", "show", "dev", l.Bridge)
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("parse ip link: %v\n%s", err, out)
	}
	m, err := net.ParseMAC(links[0].Address)
	if err != nil {
		t.Fatalf("bridge address %q: %v", links[0].Address, err)
	}
	return m
}

// TestLabSelfRepair: a detached program and deleted floor tables are
// noticed and restored within a second, the state is reported as it is,
// repairs are counted, and nothing leaks meanwhile.
func TestLabSelfRepair(t *testing.T) {
	w := setUp(t)
	a1, d := w.a1, w.d
	mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
	if !TCP(a1.NS, Upstream+":80") {
		t.Fatal("granted flow blocked before the attack")
	}
	// Positive control of the prober's probes: their responders answer
	// the host namespace.
	mustReach(t, TCP, w.lab.Host, Upstream2+":80")
	mustReach(t, UDP, w.lab.Host, Upstream+":9000")
	prober := StartProber(3000, func() bool { return TCP(a1.NS, Upstream2+":80") || UDP(a1.NS, Upstream+":9000") })

	// restored waits until the kernel says the port has its program and
	// the floor's tables exist again, then checks the port works.
	restored := func(what string, start time.Time) {
		t.Helper()
		for {
			_, err := execIn(w.lab.Host, "nft", "list", "table", "inet", "outcall")
			if err == nil && strings.Contains(lineOf(mustCLI(t, d, "endpoint", "list"), "a1"), "yes") {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("%s: not restored after 5 s\n%s", what, d.Log)
			}
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(start)
		t.Logf("%s: restored in %v", what, took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("%s: restored after %v, want within a second", what, took)
		}
		if !TCP(a1.NS, Upstream+":80") {
			t.Errorf("%s: the granted flow does not pass after the repair", what)
		}
	}

	id := tcxLinkID(t, w.lab, a1.Port)
	start := time.Now()
	w.lab.Run("bpftool", "link", "detach", "id", id)
	restored("detached program", start)

	id = tcxLinkID(t, w.lab, a1.Port)
	start = time.Now()
	w.lab.InNS(w.lab.Host, "nft", "delete", "table", "inet", "outcall")
	w.lab.InNS(w.lab.Host, "nft", "delete", "table", "bridge", "outcall")
	w.lab.Run("bpftool", "link", "detach", "id", id)
	restored("detached program and deleted tables", start)
	if leaks, probes := prober.Stop(); leaks != 0 || probes == 0 {
		t.Errorf("%d of %d probes leaked during detach and table deletion", leaks, probes)
	}
	body := scrape(t, w.lab)
	for _, want := range []string{`outcall_repairs_total{what="tcx_link"}`, `outcall_repairs_total{what="nftables"}`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestLabDetachedStateReported: with a slow repair loop, the moment after a
// detach is visible: `endpoint list` says the port is not attached, and the
// port reaches nothing (the floor holds it).
func TestLabDetachedStateReported(t *testing.T) {
	w := setUpWithRules(t, nil, "--repair-interval", "10s")
	a1, d := w.a1, w.d
	mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream)
	if !TCP(a1.NS, Upstream+":80") || !UDP(a1.NS, Upstream+":9000") {
		t.Fatal("granted destination blocked before detaching")
	}
	if out := mustCLI(t, d, "endpoint", "list"); !strings.Contains(lineOf(out, "a1"), "yes") {
		t.Fatalf("endpoint list before detach:\n%s", out)
	}
	w.lab.Run("bpftool", "link", "detach", "id", tcxLinkID(t, w.lab, a1.Port))
	if TCP(a1.NS, Upstream+":80") || UDP(a1.NS, Upstream+":9000") {
		t.Error("port without its program reached upstream")
	}
	if out := mustCLI(t, d, "endpoint", "list"); !strings.Contains(lineOf(out, "a1"), "no") {
		t.Errorf("endpoint list after detach still says attached:\n%s", out)
	}
	if out := mustCLI(t, d, "bridge", "status"); !strings.Contains(out, "Datapath:  1 of 2 ports enforced") {
		t.Errorf("bridge status after detach:\n%s", out)
	}
}

func lineOf(out, prefix string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix+" ") || strings.HasPrefix(l, prefix+"\t") {
			return l
		}
	}
	return ""
}

// TestLabPortJoinWindow: a port that is up and sending before it joins the
// bridge gets nothing to another agent, from its first frame, while the
// daemon takes it over; the same frames do cross a plain bridge.
func TestLabPortJoinWindow(t *testing.T) {
	w := setUp(t)
	a2, l := w.a2, w.lab
	marker := []byte("outcall-join-window-marker")
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }

	// join sends frames from a fresh namespace whose veth is up before it
	// is plugged into bridge, plugs it in mid-stream, and counts what
	// reached dst.
	join := func(name, bridge string, dst Agent) int {
		src := Agent{NS: l.Prefix + "-" + name, Port: l.Prefix + name, IP: "10.200.0.66", MAC: "02:00:0a:c8:00:42"}
		l.Run("ip", "netns", "add", src.NS)
		l.Run("ip", "link", "add", src.Port, "netns", l.Host, "type", "veth", "peer", "name", "eth0", "netns", src.NS)
		l.InNS(src.NS, "ip", "link", "set", "eth0", "address", src.MAC)
		l.InNS(src.NS, "ip", "link", "set", "eth0", "up")
		l.InNS(l.Host, "ip", "link", "set", src.Port, "up")
		frame := udpPayloadFrame(mac(src.MAC), mac(dst.MAC), net.ParseIP(src.IP), net.ParseIP(dst.IP), 5000, 7000, marker)
		c, err := CatchFrames(dst.NS, "eth0", marker)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		stop := make(chan struct{})
		sent := make(chan int)
		go func() {
			n := 0
			for {
				select {
				case <-stop:
					sent <- n
					return
				default:
				}
				if SendFrame(src.NS, "eth0", frame) == nil {
					n++
				}
				time.Sleep(200 * time.Microsecond)
			}
		}()
		time.Sleep(50 * time.Millisecond)
		for range 3 { // churn: join, leave, join again
			l.InNS(l.Host, "ip", "link", "set", src.Port, "master", bridge)
			time.Sleep(100 * time.Millisecond)
			l.InNS(l.Host, "ip", "link", "set", src.Port, "nomaster")
			time.Sleep(20 * time.Millisecond)
		}
		l.InNS(l.Host, "ip", "link", "set", src.Port, "master", bridge)
		got := c.Count(400 * time.Millisecond)
		close(stop)
		t.Logf("%s: %d frames sent, %d reached %s", bridge, <-sent, got, dst.NS)
		return got
	}

	_, p2 := plainPair(t, l)
	if n := join("j1", l.Prefix+"pb", p2); n == 0 {
		t.Fatal("positive control: no frame crossed a plain bridge")
	}
	if n := join("j2", l.Bridge, a2); n != 0 {
		t.Errorf("%d frames of a joining port reached another agent", n)
	}
}

// TestLabIdentityIsThePort: a new port given an old port's name inherits
// neither its identity nor its grants, and a renamed port keeps both and
// stays covered by the floor.
func TestLabIdentityIsThePort(t *testing.T) {
	w := setUpWithRules(t, nil, "--repair-interval", "10s")
	a1, a2, d, l := w.a1, w.a2, w.d, w.lab
	mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
	mustCLI(t, d, "grant", "add", "--endpoint", "a2", "--dst", Upstream, "--proto", "tcp", "--port", "80")
	if !TCP(a1.NS, Upstream+":80") || !TCP(a2.NS, Upstream+":80") {
		t.Fatal("positive control: granted agents blocked")
	}

	// Recreate a1's port under its name, with a1's addresses.
	l.InNS(l.Host, "ip", "link", "del", a1.Port)
	l.Run("ip", "netns", "del", a1.NS)
	imp := l.AddAgent("a1", a1.IP, a1.MAC)
	time.Sleep(300 * time.Millisecond) // the daemon takes the new port over
	if TCP(imp.NS, Upstream+":80") {
		t.Error("a new port with an old port's name inherited its grant")
	}
	if out := mustCLI(t, d, "endpoint", "list"); !strings.Contains(lineOf(out, "a1"), "no") {
		t.Errorf("endpoint a1 reads as attached on a port that is not its own:\n%s", out)
	}

	// Rename a2's port: the endpoint follows the port, not the name.
	renamed := l.Prefix + "ren"
	l.InNS(l.Host, "ip", "link", "set", a2.Port, "down")
	l.InNS(l.Host, "ip", "link", "set", a2.Port, "name", renamed)
	l.InNS(l.Host, "ip", "link", "set", renamed, "up")
	waitFor(t, "renamed port forwarding", func() bool { return TCP(a2.NS, Upstream+":80") })
	if out := mustCLI(t, d, "endpoint", "list"); !strings.Contains(lineOf(out, "a2"), renamed) {
		t.Errorf("endpoint list does not show the renamed port:\n%s", out)
	}
	// The floor still names it: without its program it reaches nothing.
	mustReach(t, TCP, l.Host, Upstream2+":80") // positive control of the probe below
	l.Run("bpftool", "link", "detach", "id", tcxLinkID(t, l, renamed))
	if TCP(a2.NS, Upstream+":80") || TCP(a2.NS, Upstream2+":80") {
		t.Error("a renamed port without its program reached upstream: the floor lost it")
	}
}

// TestLabMACTheftWhileDown: a port plugged in while outcalld is killed
// sends from a registered agent's MAC, which moves an ordinary forwarding
// entry to it; the agent's entry is pinned, so the host's frames for the
// agent still go to the agent and none to the thief. Positive control: the
// same theft on a plain bridge diverts the host's frames.
func TestLabMACTheftWhileDown(t *testing.T) {
	w := setUp(t)
	a2, d, l := w.a2, w.d, w.lab
	marker := []byte("outcall-mac-theft-marker")
	p1, p2 := plainPair(t, l)
	l.InNS(l.Host, "ip", "addr", "add", "10.201.0.1/24", "dev", l.Prefix+"pb")

	// hostSend sends marked datagrams from the host to ip:7000.
	hostSend := func(ip string) {
		t.Helper()
		err := Do(l.Host, func() error {
			c, err := net.Dial("udp4", ip+":7000")
			if err != nil {
				return err
			}
			defer c.Close()
			for range 5 {
				_, _ = c.Write(marker)
				time.Sleep(10 * time.Millisecond)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// steal has thief send frames from victim's MAC, then counts how many
	// of the host's datagrams for the victim reach the thief.
	steal := func(thief, victim Agent) int {
		t.Helper()
		hostSend(victim.IP) // the host learns the victim's MAC first
		vmac := mustMAC(victim.MAC)
		for range 3 {
			f := udpPayloadFrame(vmac, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, net.ParseIP(victim.IP), net.ParseIP("10.201.0.1"), 1, 9, nil)
			if err := SendFrame(thief.NS, "eth0", f); err != nil {
				t.Fatal(err)
			}
		}
		c, err := CatchFrames(thief.NS, "eth0", marker)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		hostSend(victim.IP)
		return c.Count(300 * time.Millisecond)
	}
	if n := steal(p1, p2); n == 0 {
		t.Fatal("positive control: stealing a MAC on a plain bridge diverted nothing")
	}

	if !UDP(l.Host, a2.IP+":7000") {
		t.Fatalf("the host does not reach a2 before the theft\n%s", d.Log)
	}
	if err := d.Signal(syscall.SIGKILL); err == nil {
		t.Log("outcalld exited cleanly on SIGKILL?")
	}
	thief := l.AddAgent("th", "10.200.0.77", "02:00:0a:c8:00:4d")
	if n := steal(thief, a2); n != 0 {
		t.Errorf("%d of the host's datagrams for a2 reached a port that sent from a2's MAC", n)
	}
	if !UDP(l.Host, a2.IP+":7000") {
		t.Error("the host no longer reaches a2 after the theft")
	}
}

// TestLabRestartWindow: a port plugged in while the daemon was killed has
// no program until the restarted daemon takes it over, and streams frames at
// an agent's MAC meanwhile; none gets through, because the new floor names
// the bridge's existing ports from its first instant (it used to start with
// an empty port set, leaving the agent's port uncovered until it was taken
// over again). Positive control: the same stream crosses a plain bridge.
func TestLabRestartWindow(t *testing.T) {
	w := setUp(t)
	a1, l := w.a1, w.lab
	marker := []byte("outcall-restart-window-marker")
	stream := func(src, dst Agent, during func()) int {
		t.Helper()
		frame := udpPayloadFrame(mustMAC(src.MAC), mustMAC(dst.MAC), net.ParseIP(src.IP), net.ParseIP(dst.IP), 5000, 7000, marker)
		c, err := CatchFrames(dst.NS, "eth0", marker)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		stop, sent := make(chan struct{}), make(chan int)
		go func() {
			n, err := StreamFrames(src.NS, "eth0", frame, 100*time.Microsecond, stop)
			if err != nil {
				t.Error(err)
			}
			sent <- n
		}()
		got := c.CountDuring(func() {
			during()
			close(stop)
		})
		t.Logf("%d frames sent, %d reached %s", <-sent, got, dst.NS)
		return got
	}
	p1, p2 := plainPair(t, l)
	if stream(p1, p2, func() { time.Sleep(200 * time.Millisecond) }) == 0 {
		t.Fatal("positive control: no frame crossed a plain bridge")
	}
	if err := w.d.Signal(syscall.SIGKILL); err == nil {
		t.Log("outcalld exited cleanly on SIGKILL?")
	}
	rogue := l.AddAgent("rg", "10.200.0.78", "02:00:0a:c8:00:4e")
	var d *Daemon
	got := stream(rogue, a1, func() {
		// The first start meets the rogue without a program; the later
		// ones restart over a floor and programs already in place.
		for range 3 {
			if d != nil {
				_ = d.Signal(syscall.SIGTERM)
			}
			d = l.StartDaemon(filepath.Join(bins, "outcalld"))
		}
	})
	if got != 0 {
		t.Errorf("%d frames crossed from a port without a program to a1 during restarts", got)
	}
}
