package lab

import (
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"outcall.dev/outcall/internal/packet"
)

// TestLabRestrictedDestinations: a broad rule opens public destinations and
// none of the restricted ones (metadata, private, the host's own address,
// another agent); a rule that names one and sets allow_private_ips opens
// exactly it; grants need --allow-private, and never open an agent. Every
// probe aims at a namespace this test made.
func TestLabRestrictedDestinations(t *testing.T) {
	broad := `version: "1"
rules:
  - id: broad-web
    condition: cidr("0.0.0.0/0").containsIP(network.ip) && network.port == 80 && network.protocol == "tcp"
    action: allow
  - id: everything-else
    condition: "true"
    action: allow
`
	w := setUpWithRules(t, map[string]string{"50-broad.yaml": broad}, "--watch-rules=false")
	a1, d, l := w.a1, w.d, w.lab
	const metadata, private = "169.254.169.254", "10.20.0.5"
	for _, a := range []string{metadata, private} {
		l.InNS(l.Up, "ip", "addr", "add", a+"/32", "dev", "lo")
		ServeTCP(t, l.Up, a+":80")
	}
	ServeTCP(t, l.Host, HostUplink+":80")
	ServeTCP(t, w.a2.NS, "0.0.0.0:80")
	// Positive controls: the broad rules open public destinations, and
	// each restricted responder answers from its own side.
	if !TCP(a1.NS, Upstream+":80") || !UDP(a1.NS, Upstream+":9000") {
		t.Fatalf("the broad rules do not open a public destination\n%s", d.Log)
	}
	if !TCP(l.Host, metadata+":80") || !TCP(l.Host, private+":80") || !TCP(l.Host, HostUplink+":80") || !TCP(w.a2.NS, "127.0.0.1:80") {
		t.Fatal("positive control: a restricted responder does not answer")
	}
	mustReach(t, TCP, l.Host, w.a2.IP+":80") // a2's responder, on a2's address
	before := counters(t, d)
	for _, dst := range []string{metadata, private, HostUplink, w.a2.IP} {
		if TCP(a1.NS, dst+":80") {
			t.Errorf("a broad rule opened the restricted destination %s", dst)
		}
	}
	if counters(t, d)["drop/restricted"] == before["drop/restricted"] {
		t.Error("drop/restricted did not move")
	}

	// A rule that names the metadata address and sets allow_private_ips
	// opens it, and only it.
	writeRule(t, l, "10-metadata.yaml", `version: "1"
rules:
  - id: metadata
    condition: cidr("169.254.169.254/32").containsIP(network.ip) && network.port == 80
    action: allow
    egress: {mode: direct_ip, ports: [80], allow_private_ips: true}
`)
	mustCLI(t, d, "rules", "reload")
	if !TCP(a1.NS, metadata+":80") {
		t.Errorf("a licensed rule does not open the address it names\n%s", d.Log)
	}
	if TCP(a1.NS, private+":80") || TCP(a1.NS, HostUplink+":80") {
		t.Error("a licensed rule opened more than it names")
	}

	// Grants: refused without the flag, with a message naming it.
	for _, dst := range []string{private, HostUplink} {
		_, errOut, code := cli(t, d, "grant", "add", "--endpoint", "a1", "--dst", dst, "--proto", "tcp", "--port", "80")
		if code == 0 || !strings.Contains(errOut, "--allow-private") {
			t.Errorf("grant add to %s without --allow-private: exit %d, %q", dst, code, errOut)
		}
		mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", dst, "--proto", "tcp", "--port", "80", "--allow-private")
		if !TCP(a1.NS, dst+":80") {
			t.Errorf("a grant with --allow-private does not open %s", dst)
		}
	}
	if _, errOut, code := cli(t, d, "grant", "add", "--endpoint", "a1", "--dst", w.a2.IP, "--allow-private"); code == 0 || !strings.Contains(errOut, "Outcall subnet") {
		t.Errorf("grant add to another agent with --allow-private: exit %d, %q", code, errOut)
	}
	if TCP(a1.NS, w.a2.IP+":80") {
		t.Error("a1 reached a2")
	}
}

// TestLabBlockCoversEveryProtocol: an early block of 169.254.0.0/16 stops
// GRE, SCTP and protocol 255 to the metadata address although a
// protocol-less grant covers it; before the block the grant opens them (the
// positive control). Before, the block covered only TCP, UDP and ICMP.
func TestLabBlockCoversEveryProtocol(t *testing.T) {
	w := setUpWithRules(t, nil, "--watch-rules=false")
	a1, d, l := w.a1, w.d, w.lab
	const metadata = "169.254.169.254"
	l.InNS(l.Up, "ip", "addr", "add", metadata+"/32", "dev", "lo")
	mustCLI(t, d, "grant", "add", "--endpoint", "a1", "--dst", metadata, "--allow-private")
	marker := []byte("outcall-other-protocol-marker")
	gw := bridgeMAC(t, l)
	reached := func(proto uint8) int {
		f := packet.Frame{SrcMAC: mustMAC(a1.MAC), DstMAC: gw, EtherType: packet.EtherTypeIPv4,
			Src: netip.MustParseAddr(a1.IP), Dst: netip.MustParseAddr(metadata), Proto: proto, Payload: marker}
		return sentUpstream(t, l, a1, f.Bytes(), marker)
	}
	protos := []uint8{packet.ProtoGRE, packet.ProtoSCTP, packet.ProtoRaw}
	for _, p := range protos {
		if reached(p) == 0 {
			t.Fatalf("positive control: protocol %d did not reach the granted metadata address\n%s", p, d.Log)
		}
	}
	writeRule(t, l, "00-metadata.yaml", `version: "1"
rules:
  - id: no-metadata
    priority: 1
    condition: cidr("169.254.0.0/16").containsIP(network.ip)
    action: block
`)
	mustCLI(t, d, "rules", "reload")
	for _, p := range protos {
		if n := reached(p); n != 0 {
			t.Errorf("protocol %d: %d packets reached the metadata address past an early block", p, n)
		}
	}
}

// sentUpstream sends frame three times from the agent's eth0 and counts the
// copies carrying marker that arrive on the upstream namespace's uplink.
func sentUpstream(t *testing.T, l *Lab, a Agent, frame, marker []byte) int {
	t.Helper()
	c, err := CatchFrames(l.Up, l.Prefix+"u", marker)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		if err := SendFrame(a.NS, "eth0", frame); err != nil {
			t.Fatal(err)
		}
	}
	return c.Count(300 * time.Millisecond)
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// TestLabSourceRouteDropped: with the host accepting source routes, a
// datagram carrying a loose or strict source route option is dropped where
// the same datagram without it reaches upstream.
func TestLabSourceRouteDropped(t *testing.T) {
	w := setUpWithRules(t, map[string]string{"50-echo.yaml": `version: "1"
rules:
  - id: echo
    condition: cidr("198.51.100.10/32").containsIP(network.ip) && network.port == 9000 && network.protocol == "udp"
    action: allow
`})
	a1, d, l := w.a1, w.d, w.lab
	l.InNS(l.Host, "sysctl", "-qw", "net.ipv4.conf.all.accept_source_route=1")
	marker := []byte("outcall-source-route-marker")
	frame := func(options []byte) []byte {
		f := packet.UDP(mustMAC(a1.MAC), bridgeMAC(t, l), netip.MustParseAddr(a1.IP), netip.MustParseAddr(Upstream), 5000, 9000)
		f.IPOptions, f.Payload = options, marker
		return f.Bytes()
	}
	if sentUpstream(t, l, a1, frame(nil), marker) == 0 {
		t.Fatalf("positive control: the allowed datagram without options did not reach upstream\n%s", d.Log)
	}
	before := counters(t, d)["drop/ip_options"]
	for name, opt := range map[string][]byte{
		"lsrr": {0x83, 7, 4, 203, 0, 113, 10, 0},
		"ssrr": {0x89, 7, 4, 203, 0, 113, 10, 0},
	} {
		if n := sentUpstream(t, l, a1, frame(opt), marker); n != 0 {
			t.Errorf("%d datagrams with %s reached upstream", n, name)
		}
	}
	if counters(t, d)["drop/ip_options"] < before+6 {
		t.Error("drop/ip_options did not count every datagram with options")
	}
}

// TestLabConnectionCap: one agent holds at most --max-conns-per-agent
// conntrack entries through the gateway; the first connections pass (the
// positive control), the ones beyond the cap are dropped, and another agent
// is not affected.
func TestLabConnectionCap(t *testing.T) {
	w := setUpWithRules(t, map[string]string{"50-echo.yaml": `version: "1"
rules:
  - id: echo
    condition: cidr("198.51.100.10/32").containsIP(network.ip) && network.port == 9000 && network.protocol == "udp"
    action: allow
`}, "--max-conns-per-agent", "5")
	a1, a2 := w.a1, w.a2
	passed := 0
	for i := range 10 {
		if UDPFrom(a1.NS, 46000+i, Upstream+":9000") {
			passed++
		}
	}
	if passed != 5 {
		t.Errorf("%d of 10 new UDP flows of one agent passed, want exactly the cap of 5", passed)
	}
	if !UDPFrom(a2.NS, 46000, Upstream+":9000") {
		t.Error("another agent was held back by the first agent's cap")
	}
	if !UDPFrom(a1.NS, 46000, Upstream+":9000") {
		t.Error("a flow within the cap stopped passing")
	}
	if body := scrape(t, w.lab); !regexp.MustCompile(`outcall_floor_packets_total\{rule="forward_conn_limit_drop"\} [1-9]`).MatchString(body) {
		t.Error("the cap's drops are not counted in outcall_floor_packets_total")
	}
}
