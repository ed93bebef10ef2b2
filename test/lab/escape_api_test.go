package lab

import (
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Escapes through the host API and the daemon's setup (issue 7, defects 1,
// 6, 7): `bridge down` with ports, endpoint MACs, foreign gateway listeners.

// Ports in the upstream namespace that no test grants: anything that
// arrives there from an agent is a leak.
const (
	leakTCPPort = "9099"
	leakUDPPort = "9098"
)

// leakCounter counts TCP connections and UDP datagrams that reach the
// upstream namespace on the leak ports, whoever sent them.
type leakCounter struct{ n atomic.Int64 }

func countLeaks(t *testing.T, l *Lab) *leakCounter {
	t.Helper()
	lc := &leakCounter{}
	var tl net.Listener
	var ul net.PacketConn
	if err := Do(l.Up, func() (err error) {
		if tl, err = net.Listen("tcp4", Upstream+":"+leakTCPPort); err != nil {
			return err
		}
		ul, err = net.ListenPacket("udp4", Upstream+":"+leakUDPPort)
		return err
	}); err != nil {
		t.Fatalf("leak listeners: %v", err)
	}
	t.Cleanup(func() { tl.Close(); ul.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			lc.n.Add(1)
			_, _ = c.Write([]byte("ok\n"))
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			lc.n.Add(1)
			_, _ = ul.WriteTo(buf[:n], from)
		}
	}()
	return lc
}

// prober sends TCP and UDP to the leak ports from each agent, without
// pause, until stop; it is bounded in time by the test.
type prober struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	tries atomic.Int64
}

func startProber(t *testing.T, agents ...Agent) *prober {
	p := &prober{stop: make(chan struct{})}
	deadline := time.Now().Add(2 * time.Minute)
	for _, a := range agents {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for time.Now().Before(deadline) {
				select {
				case <-p.stop:
					return
				default:
				}
				quickTCP(a.NS, Upstream+":"+leakTCPPort)
				quickUDP(a.NS, Upstream+":"+leakUDPPort)
				p.tries.Add(1)
			}
		}()
	}
	t.Cleanup(p.halt)
	return p
}

func (p *prober) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
}

// quickTCP and quickUDP fire one attempt with a short timeout; the answer
// does not matter, the leak counter upstream decides.
func quickTCP(ns, addr string) {
	_ = Do(ns, func() error {
		if c, err := net.DialTimeout("tcp4", addr, 100*time.Millisecond); err == nil {
			c.Close()
		}
		return nil
	})
}

func quickUDP(ns, addr string) {
	_ = Do(ns, func() error {
		if c, err := net.Dial("udp4", addr); err == nil {
			_, _ = c.Write([]byte("leak?"))
			c.Close()
		}
		time.Sleep(5 * time.Millisecond)
		return nil
	})
}

func linkExists(l *Lab, ns, name string) bool {
	return exec.Command("nsenter", "--net=/run/netns/"+ns, "ip", "link", "show", "dev", name).Run() == nil
}

// TestLabBridgeDownWithPorts (defect 1): `bridge down` with agents attached
// is refused, naming the ports, and changes nothing; `bridge down
// --remove-ports` deletes the ports first, so no former port survives as a
// plain routed interface. A prober running from the agents throughout counts
// zero leaks upstream. Against the old code the first `bridge down`
// succeeds and the prober counts hundreds of leaks.
func TestLabBridgeDownWithPorts(t *testing.T) {
	w := setUp(t)
	l, d, a1, a2 := w.lab, w.d, w.a1, w.a2
	leaks := countLeaks(t, l)

	// Positive control: the leak counter sees what an agent gets through,
	// on both of the prober's ports.
	for _, c := range []struct {
		proto, port string
		probe       func(ns, dst string) bool
	}{{"tcp", leakTCPPort, TCP}, {"udp", leakUDPPort, UDP}} {
		leaks.n.Store(0)
		mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", c.proto, "--port", c.port)
		if !c.probe(a1.NS, Upstream+":"+c.port) || leaks.n.Load() == 0 {
			t.Fatalf("granted %s probe did not reach the leak counter (%d)\n%s", c.proto, leaks.n.Load(), d.Log)
		}
		mustCLI(t, d, "grant", "remove", "--endpoint", "a1", "--dst", Upstream, "--proto", c.proto, "--port", c.port)
	}
	leaks.n.Store(0)

	p := startProber(t, a1, a2)
	time.Sleep(300 * time.Millisecond)

	// Refused, naming the ports, and nothing changed.
	_, errOut, code := cli(t, d, "bridge", "down")
	want := "Error: bridge " + l.Bridge + " has ports: " + a1.Port + ", " + a2.Port + " — remove them first or use --remove-ports\n"
	if code != 1 || errOut != want {
		t.Errorf("bridge down with ports: exit %d, %q; want 1, %q", code, errOut, want)
	}
	if out := mustCLI(t, d, "bridge", "status"); !strings.Contains(out, "Status:    up") || !strings.Contains(out, "nftables:  active") {
		t.Errorf("bridge status after a refused bridge down:\n%s", out)
	}
	if out := mustCLI(t, d, "endpoint", "list"); strings.Count(out, " yes") < 2 {
		t.Errorf("endpoints not attached after a refused bridge down:\n%s", out)
	}
	tcxLinkID(t, l, a1.Port) // still pinned and attached
	// Enforcement intact: the gateway still answers ARP (a neighbour entry
	// resolves) and a grant still opens exactly its flow.
	// Any packet routed through the gateway makes a1 resolve it; its fate
	// does not matter (a responder listens there all the same).
	_ = exec.Command("nsenter", "--net=/run/netns/"+a1.NS, "ip", "neigh", "flush", "dev", "eth0").Run()
	quickTCP(a1.NS, Upstream+":80")
	if out, _ := exec.Command("nsenter", "--net=/run/netns/"+a1.NS, "ip", "neigh", "show", Gateway, "dev", "eth0").CombinedOutput(); !strings.Contains(string(out), "lladdr") {
		t.Errorf("gateway does not answer ARP after a refused bridge down: %q", out)
	}
	mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
	if !TCP(a1.NS, Upstream+":80") {
		t.Error("grant does not work after a refused bridge down")
	}
	mustCLI(t, d, "grant", "remove", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")

	// With --remove-ports the ports go first, then the bridge.
	if out := mustCLI(t, d, "bridge", "down", "--remove-ports"); out != "Bridge is down.\n" {
		t.Errorf("bridge down --remove-ports printed %q", out)
	}
	for _, a := range []Agent{a1, a2} {
		if linkExists(l, l.Host, a.Port) {
			t.Errorf("former port %s still exists after bridge down --remove-ports", a.Port)
		}
		if linkExists(l, a.NS, "eth0") {
			t.Errorf("the peer of %s still exists in %s", a.Port, a.NS)
		}
	}
	if linkExists(l, l.Host, l.Bridge) {
		t.Error("bridge still exists after bridge down --remove-ports")
	}
	time.Sleep(500 * time.Millisecond) // the prober keeps trying
	p.halt()
	if n := leaks.n.Load(); n != 0 {
		t.Errorf("%d probes leaked upstream through bridge down (of %d rounds)", n, p.tries.Load())
	}
	if p.tries.Load() < 4 {
		t.Errorf("prober ran only %d rounds", p.tries.Load())
	}
	// The bridge comes back empty and enforcing.
	mustCLI(t, d, "bridge", "up")
	if out := mustCLI(t, d, "bridge", "status"); !strings.Contains(out, "Status:    up") || !strings.Contains(out, "nftables:  active") {
		t.Errorf("bridge status after bridge up:\n%s", out)
	}
}

// labBridgeMAC reads the bridge's own MAC in the host namespace.
func labBridgeMAC(t *testing.T, l *Lab) string {
	t.Helper()
	var links []struct {
		Address string `json:"address"`
	}
	out := l.InNS(l.Host, "ip", "-j", "link", "show", "dev", l.Bridge)
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("parse ip link: %v\n%s", err, out)
	}
	return links[0].Address
}

// TestLabEndpointMACRefused (defect 7): `endpoint add` refuses another
// endpoint's MAC, the all-zero, broadcast and multicast addresses and the
// bridge's own MAC, each naming the field; the owner keeps its traffic. A
// fresh MAC is accepted (positive control). Against the old code every one
// of them but multicast was accepted.
func TestLabEndpointMACRefused(t *testing.T) {
	w := setUp(t)
	l, d, a1 := w.lab, w.d, w.a1
	a3 := l.AddAgent("a3", "10.200.0.12", "02:00:0a:c8:00:0c")
	brMAC := labBridgeMAC(t, l)
	portMAC := func() string {
		var links []struct {
			Address string `json:"address"`
		}
		out := l.InNS(l.Host, "ip", "-j", "link", "show", "dev", a1.Port)
		if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
			t.Fatalf("parse ip link: %v\n%s", err, out)
		}
		return links[0].Address
	}()
	tests := []struct{ mac, want string }{
		{a1.MAC, `invalid mac "` + a1.MAC + `": already belongs to endpoint "a1"`},
		{strings.ToUpper(a1.MAC), `invalid mac "` + a1.MAC + `": already belongs to endpoint "a1"`},
		{"00:00:00:00:00:00", `invalid mac "00:00:00:00:00:00": all-zero address`},
		{"ff:ff:ff:ff:ff:ff", `invalid mac "ff:ff:ff:ff:ff:ff": broadcast address`},
		{"01:00:5e:00:00:01", `invalid mac "01:00:5e:00:00:01": multicast address`},
		{brMAC, `invalid mac "` + brMAC + `": it is the address of bridge ` + l.Bridge + ` itself`},
		{portMAC, `invalid mac "` + portMAC + `": it is the host-side address of bridge port ` + a1.Port},
	}
	for _, tt := range tests {
		_, errOut, code := cli(t, d, "endpoint", "add", "--name", "a3", "--interface", a3.Port, "--ip", a3.IP, "--mac", tt.mac)
		if code != 1 || !strings.Contains(errOut, tt.want) {
			t.Errorf("endpoint add --mac %s: exit %d, %q; want 1 and %q", tt.mac, code, errOut, tt.want)
		}
	}
	if out := mustCLI(t, d, "endpoint", "list"); listsEndpoint(out, "a3") {
		t.Errorf("a refused endpoint was registered:\n%s", out)
	}
	// The owner of the MAC keeps its traffic.
	mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
	if !TCP(a1.NS, Upstream+":80") {
		t.Error("a1 lost its granted flow")
	}
	// Positive control: a MAC of its own is accepted.
	waitFor(t, "a3 registered", func() bool {
		_, _, code := cli(t, d, "endpoint", "add", "--name", "a3", "--interface", a3.Port, "--ip", a3.IP, "--mac", a3.MAC)
		return code == 0
	})
}

// TestLabForeignServiceUnreachable (defect 6): host processes listening on
// the wildcard address at ports 53 and 8080 are not reachable from an agent
// through the gateway while no Outcall listener holds those ports (the DNS
// filter and the proxy are moved to 5353 and 18080 here). Positive
// control: they answer inside the host namespace. Against the old code
// (services open from startup) the agent reached both.
func TestLabForeignServiceUnreachable(t *testing.T) {
	w := setUpWithRules(t, nil, "--dns-port", "5353", "--proxy-addr", Gateway+":18080")
	l, d, a1 := w.lab, w.d, w.a1
	ServeTCP(t, l.Host, "0.0.0.0:53")
	ServeUDP(t, l.Host, "0.0.0.0:53")
	ServeTCP(t, l.Host, "0.0.0.0:8080")
	for _, addr := range []string{Gateway + ":53", Gateway + ":8080"} {
		if !TCP(l.Host, addr) {
			t.Fatalf("positive control: foreign listener on %s does not answer in the host namespace", addr)
		}
	}
	if !UDP(l.Host, Gateway+":53") {
		t.Fatal("positive control: foreign UDP listener on :53 does not answer in the host namespace")
	}
	before := counters(t, d)
	if TCP(a1.NS, Gateway+":53") {
		t.Error("agent reached a foreign TCP listener on the gateway's DNS port")
	}
	if UDP(a1.NS, Gateway+":53") {
		t.Error("agent reached a foreign UDP listener on the gateway's DNS port")
	}
	if TCP(a1.NS, Gateway+":8080") {
		t.Error("agent reached a foreign listener on the gateway's proxy port")
	}
	if moved := counters(t, d)["drop/gateway_port"] - before["drop/gateway_port"]; moved < 3 {
		t.Errorf("drop/gateway_port moved by %d, want >= 3", moved)
	}
}

// listsEndpoint reports whether `outcall endpoint list` output has a row
// for the endpoint name (its first column): the lab's random prefix is in
// every interface name and may contain the name too.
func listsEndpoint(out, name string) bool {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}
