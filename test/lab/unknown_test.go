package lab

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A container nobody registered, on the lab's network: its port is taken
// over (program, floor) but has no endpoint.
const (
	strangerIP  = "10.200.0.60"
	strangerMAC = "02:00:0a:c8:00:3c"
)

// dnsQueryFrame is a raw UDP DNS query for name from srcMAC/src to the
// gateway, as a root container can write it with any source.
func dnsQueryFrame(t *testing.T, srcMAC, gwMAC net.HardwareAddr, src string, sport uint16, name string) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	payload, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return udpPayloadFrame(srcMAC, gwMAC, net.ParseIP(src), net.ParseIP(Gateway), sport, 53, payload)
}

// TestLabUnknownSender (issue 10): a container on an Outcall network without
// an endpoint reaches the gateway's DNS filter (REFUSED) and proxy (403)
// and nothing else; it cannot make the DNS filter take it for a registered
// agent by sending from the agent's address; its traffic is counted; and
// without its program the floor still drops all of it. Each refused probe
// has a positive control.
func TestLabUnknownSender(t *testing.T) {
	w := setUpNames(t, "--repair-interval", "10s")
	l, a1, d := w.lab, w.a1, w.d
	u := l.AddAgent("u1", strangerIP, strangerMAC)
	gw := Gateway + ":53"
	// The port is taken over once the DNS filter answers it.
	waitFor(t, "the stranger's port taken over", func() bool { return Resolve(u.NS, "udp", gw, "direct.test", dns.TypeA) != nil })

	t.Run("gateway services refuse it", func(t *testing.T) {
		before := counters(t, d)
		for _, network := range []string{"udp", "tcp"} {
			r := Resolve(u.NS, network, gw, "direct.test", dns.TypeA)
			if r == nil || r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
				t.Errorf("DNS over %s from the stranger: %v, want REFUSED", network, r)
			}
			// Positive control: the agent's query for the same name is
			// answered.
			if r := Resolve(a1.NS, network, gw, "direct.test", dns.TypeA); r == nil || len(answerAddrs(r)) != 1 {
				t.Errorf("DNS over %s from the agent: %v", network, r)
			}
		}
		if code, _ := proxyHealth(u.NS, Gateway+":8080"); code != http.StatusForbidden {
			t.Errorf("proxy from the stranger: status %d, want 403", code)
		}
		if code, _ := proxyHealth(a1.NS, Gateway+":8080"); code != http.StatusOK {
			t.Errorf("positive control: proxy health from the agent: status %d", code)
		}
		if moved := counters(t, d)["allow/unknown_gateway"] - before["allow/unknown_gateway"]; moved < 3 {
			t.Errorf("allow/unknown_gateway moved by %d, want at least 3 (udp, tcp, proxy)", moved)
		}
		if list := mustCLI(t, d, "grant", "list"); strings.Contains(list, "10.200.0.60") {
			t.Errorf("the stranger's queries wrote grants:\n%s", list)
		}
	})

	t.Run("nothing else", func(t *testing.T) {
		// Positive controls: every target answers the host namespace; a
		// grant-less agent is refused the same way, so the targets are
		// reachable only for whom they are meant.
		ServeTCP(t, l.Host, Gateway+":22")
		ServeTCP(t, l.Host, HostUplink+":22")
		ServeTCP(t, a1.NS, "0.0.0.0:7001")
		mustReach(t, TCP, l.Host, Upstream+":80", Gateway+":22", HostUplink+":22", a1.IP+":7001")
		mustReach(t, UDP, l.Host, Upstream+":9000")
		mustReach(t, ICMP, l.Host, Upstream)
		before := counters(t, d)
		for _, p := range []struct {
			what string
			ok   bool
		}{
			{"TCP upstream", TCP(u.NS, Upstream+":80")},
			{"UDP upstream", UDP(u.NS, Upstream+":9000")},
			{"ICMP upstream", ICMP(u.NS, Upstream)},
			{"the upstream resolver", Resolve(u.NS, "udp", Upstream+":53", "direct.test", dns.TypeA) != nil},
			{"another agent", TCP(u.NS, a1.IP+":7001")},
			{"a gateway port no service holds", TCP(u.NS, Gateway+":22")},
			{"the host's uplink address", TCP(u.NS, HostUplink+":22")},
		} {
			if p.ok {
				t.Errorf("the stranger reached %s", p.what)
			}
		}
		if moved := counters(t, d)["drop/unknown_port"] - before["drop/unknown_port"]; moved < 7 {
			t.Errorf("drop/unknown_port moved by %d, want at least 7", moved)
		}
		// Positive control of the agent probe: with a grant a1 reaches
		// upstream, the stranger still does not (grants are identities').
		mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")
		defer cli(t, d, "grant", "flush")
		mustReach(t, TCP, a1.NS, Upstream+":80")
		if TCP(u.NS, Upstream+":80") {
			t.Error("the stranger reached what a1's grant opens")
		}
	})

	t.Run("spoofing an agent's address", func(t *testing.T) {
		gwMAC := bridgeMAC(t, l)
		uMAC, aMAC := mustParseMAC(t, strangerMAC), mustParseMAC(t, a1.MAC)
		// short.test is allowed for every agent: a query the filter takes
		// for a1's writes a DNS-learned grant for a1 and asks upstream.
		const name = "short.test"
		replies := func(ns, marker string, send func()) int {
			t.Helper()
			c, err := CatchFrames(ns, "eth0", []byte(marker))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			return c.CountDuring(send)
		}
		wire := "\x05short\x04test" // the name as the reply repeats it

		// Positive control: the same raw query from a1's namespace, with
		// a1's addresses, is answered to a1 and grants for a1.
		queries := w.upstreamDNS.Queries()
		if n := replies(a1.NS, wire, func() {
			if err := SendFrame(a1.NS, "eth0", dnsQueryFrame(t, aMAC, gwMAC, a1.IP, 41000, name)); err != nil {
				t.Fatal(err)
			}
		}); n == 0 {
			t.Fatal("positive control: a1's raw query got no answer")
		}
		if w.upstreamDNS.Queries() == queries {
			t.Error("positive control: a1's raw query did not reach upstream")
		}
		// And from the stranger's own address it is refused, to the
		// stranger.
		if n := replies(u.NS, wire, func() {
			if err := SendFrame(u.NS, "eth0", dnsQueryFrame(t, uMAC, gwMAC, strangerIP, 41001, name)); err != nil {
				t.Fatal(err)
			}
		}); n == 0 {
			t.Fatal("positive control: the stranger's raw query from its own address got no answer")
		}
		mustCLI(t, d, "grant", "flush")

		before := counters(t, d)
		queries = w.upstreamDNS.Queries()
		for i, f := range []struct {
			what string
			mac  net.HardwareAddr
			ip   string
		}{
			{"a1's address", uMAC, a1.IP},
			{"a1's address and MAC", aMAC, a1.IP},
			{"a1's MAC", aMAC, strangerIP},
			{"a2's address", uMAC, w.a2.IP},
			{"the gateway's address", uMAC, Gateway},
		} {
			n := replies(a1.NS, wire, func() {
				for range 5 {
					if err := SendFrame(u.NS, "eth0", dnsQueryFrame(t, f.mac, gwMAC, f.ip, uint16(42000+i), name)); err != nil {
						t.Fatal(err)
					}
				}
			})
			if n != 0 {
				t.Errorf("a query from the stranger with %s was answered to a1 (%d frames)", f.what, n)
			}
		}
		if q := w.upstreamDNS.Queries(); q != queries {
			t.Errorf("spoofed queries reached upstream (%d)", q-queries)
		}
		if list := mustCLI(t, d, "grant", "list"); strings.Contains(list, "short-") || strings.Contains(list, "direct-short") {
			t.Errorf("a spoofed query wrote a grant:\n%s", list)
		}
		if moved := counters(t, d)["drop/unknown_spoofed"] - before["drop/unknown_spoofed"]; moved < 25 {
			t.Errorf("drop/unknown_spoofed moved by %d, want 25", moved)
		}
		// Nor can it ARP for a1's address.
		ab := counters(t, d)["drop/unknown_spoofed"]
		if err := SendFrame(u.NS, "eth0", arpFrame(1, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uMAC, net.ParseIP(a1.IP), make(net.HardwareAddr, 6), net.ParseIP(Gateway))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if counters(t, d)["drop/unknown_spoofed"] == ab {
			t.Error("an ARP request from a1's address was not dropped as unknown_spoofed")
		}
		if got := hostNeigh(t, l, l.Bridge, a1.IP); got != a1.MAC {
			t.Errorf("the host's entry for a1 is %q, want %q", got, a1.MAC)
		}
	})

	t.Run("an absent agent's address stays its own", func(t *testing.T) {
		// a2's port goes away; a2 stays registered. Its address is not
		// free for the stranger meanwhile.
		gwMAC := bridgeMAC(t, l)
		uMAC := mustParseMAC(t, strangerMAC)
		l.InNS(l.Host, "ip", "link", "set", w.a2.Port, "nomaster")
		waitFor(t, "a2 detached", func() bool {
			return strings.Contains(lineOf(mustCLI(t, d, "endpoint", "list"), "a2"), "no")
		})
		before := counters(t, d)["drop/unknown_spoofed"]
		queries := w.upstreamDNS.Queries()
		for range 3 {
			if err := SendFrame(u.NS, "eth0", dnsQueryFrame(t, uMAC, gwMAC, w.a2.IP, 43000, "short.test")); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		if moved := counters(t, d)["drop/unknown_spoofed"] - before; moved != 3 {
			t.Errorf("queries from an absent agent's address: drop/unknown_spoofed moved by %d, want 3", moved)
		}
		if w.upstreamDNS.Queries() != queries {
			t.Error("a query from an absent agent's address reached upstream")
		}
		l.InNS(l.Host, "ip", "link", "set", w.a2.Port, "master", l.Bridge)
	})

	t.Run("without its program the floor drops it", func(t *testing.T) {
		if r := Resolve(u.NS, "udp", gw, "direct.test", dns.TypeA); r == nil {
			t.Fatal("positive control: the stranger got no REFUSED")
		}
		l.Run("bpftool", "link", "detach", "id", tcxLinkID(t, l, u.Port))
		if r := Resolve(u.NS, "udp", gw, "direct.test", dns.TypeA); r != nil {
			t.Errorf("without its program the stranger still got an answer: %v", r)
		}
		if TCP(u.NS, Gateway+":8080") {
			t.Error("without its program the stranger reached the proxy")
		}
	})
}

// TestLabDNSQueriesOutsideConnCap: queries to the gateway's DNS filter
// leave no conntrack entry, so an agent making many more of them than
// --max-conns-per-agent still opens connections; the cap still bounds
// its real connections upstream.
func TestLabDNSQueriesOutsideConnCap(t *testing.T) {
	const limit = 20
	w := setUpNames(t, "--max-conns-per-agent", fmt.Sprint(limit))
	a1, d, l := w.a1, w.d, w.lab
	mustReach(t, TCP, l.Host, Upstream+":80")
	mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", Upstream, "--proto", "tcp", "--port", "80")

	// 10 times the cap in queries, each from its own source port (a new
	// socket per query), over UDP and some over TCP, within the 30 s an
	// unreplied UDP entry would live.
	failed := 0
	for i := range 10 * limit {
		network := "udp"
		if i%10 == 0 {
			network = "tcp"
		}
		if r := Resolve(a1.NS, network, Gateway+":53", "direct.test", dns.TypeA); r == nil || len(answerAddrs(r)) != 1 {
			failed++
		}
	}
	if failed != 0 {
		t.Errorf("%d of %d queries failed under a cap of %d", failed, 10*limit, limit)
	}
	if n := floorCounter(t, l, "inet", "input_conn_limit_drop"); n != 0 {
		t.Errorf("the cap dropped %d packets to the gateway's services", n)
	}
	if n := floorCounter(t, l, "inet", "prerouting_service_notrack"); n < 10*limit {
		t.Errorf("prerouting_service_notrack counted %d, want at least %d", n, 10*limit)
	}

	// Real connections: up to the cap they open, held open together,
	// right after the queries; beyond it they fail.
	var conns []net.Conn
	var mu sync.Mutex
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	dial := func() bool {
		var c net.Conn
		_ = Do(a1.NS, func() error {
			c, _ = net.DialTimeout("tcp4", Upstream+":80", probeTimeout)
			return nil
		})
		if c == nil {
			return false
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		return true
	}
	for i := range limit {
		if !dial() {
			t.Fatalf("connection %d of %d failed after %d DNS queries", i+1, limit, 10*limit)
		}
	}
	// The queries still work at the cap.
	if r := Resolve(a1.NS, "udp", Gateway+":53", "direct.test", dns.TypeA); r == nil {
		t.Error("a query at the connection cap failed")
	}
	if dial() {
		t.Errorf("connection %d passed a cap of %d", limit+1, limit)
	}
	if n := floorCounter(t, l, "inet", "forward_conn_limit_drop"); n == 0 {
		t.Error("the connection over the cap was not counted")
	}
}
