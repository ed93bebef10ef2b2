package nft

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"outcall.dev/outcall/pkg/api"
)

func testConfig(bridges []string, ports []int) Config {
	return Config{Bridges: bridges, Ports: ports, Mark: api.AllowMark, MarkMask: api.AllowMarkMask}
}

func withCap(cfg Config, n uint32) Config {
	cfg.MaxConnsPerAgent = n
	return cfg
}

// wantRules is the floor as nft renders it, per "family chain". nft prints
// `meta mark & 0xffff0000 == 0x4f430000` as the prefix 0x4f430000/16; the
// bytecode is the same. The conn_limit rules exist only with a cap.
func wantRules(cfg Config) map[string][]string {
	var fwdCap, inCap []string
	if n := cfg.MaxConnsPerAgent; n > 0 {
		limit := fmt.Sprintf("iifname == @bridges, mark 0x4f430000/16, ct state new, add @conns_per_agent { ip saddr ct count over %d }, counter, drop", n)
		fwdCap = []string{limit + " #forward_conn_limit_drop"}
		inCap = []string{limit + " #input_conn_limit_drop"}
	}
	return map[string][]string{
		"inet forward": slices.Concat([]string{
			"iifname != @bridges, oifname != @bridges, accept",
			"ct state established,related, counter, accept #forward_established",
		}, fwdCap, []string{
			"iifname == @bridges, mark 0x4f430000/16, counter, accept #forward_allow",
			"iifname == @bridges, counter, drop #forward_drop_in",
			"oifname == @bridges, counter, drop #forward_drop_out",
		}),
		"inet input": slices.Concat([]string{
			"iifname != @bridges, accept",
			"ct state established,related, counter, accept #input_established",
		}, inCap, []string{
			"mark 0x4f430000/16, counter, accept #input_allow",
			"counter, drop #input_drop",
		}),
		"inet prerouting": {
			"mark 0x4f430000/16, ip daddr . meta l4proto . th dport == @services, notrack, counter, continue #prerouting_service_notrack",
		},
		"inet output": {
			"oifname == @bridges, ip saddr . meta l4proto . th sport == @services, notrack, counter, continue #output_service_notrack",
		},
		"bridge forward": {
			"iif == @ports, counter, drop #bridge_forward_drop",
			"oif == @ports, counter, drop #bridge_forward_to_port",
		},
		"bridge input": {
			"iif == @ports, mark 0x4f430000/16, counter, accept #bridge_input_allow",
			"iif == @ports, counter, drop #bridge_input_drop",
		},
		"arp input": {
			"iifname == @bridges, mark 0x4f430000/16, counter, accept #arp_input_allow",
			"iifname == @bridges, counter, drop #arp_input_drop",
		},
	}
}

var wantChains = map[string]chainInfo{
	"inet forward":    {Type: "filter", Hook: "forward", Prio: 0, Policy: "drop"},
	"inet input":      {Type: "filter", Hook: "input", Prio: 0, Policy: "accept"},
	"inet prerouting": {Type: "filter", Hook: "prerouting", Prio: -300, Policy: "accept"},
	"inet output":     {Type: "filter", Hook: "output", Prio: -300, Policy: "accept"},
	"bridge forward":  {Type: "filter", Hook: "forward", Prio: -200, Policy: "accept"},
	"bridge input":    {Type: "filter", Hook: "input", Prio: -200, Policy: "accept"},
	"arp input":       {Type: "filter", Hook: "input", Prio: 0, Policy: "accept"},
}

func TestApply(t *testing.T) {
	f, ns := newTestFloor(t)
	cfg := testConfig([]string{"oc-test-br0"}, []int{1002, 1001})
	cfg.MaxConnsPerAgent = 512
	cfg.Services = []Service{{netip.MustParseAddr("10.200.0.1"), 17, 53}, {netip.MustParseAddr("10.200.0.1"), 6, 53}, {netip.MustParseAddr("10.200.1.1"), 6, 8080}}
	if err := f.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	rs := listRuleset(t, ns)
	checkFloor(t, rs, cfg)

	// SetServices replaces the set alone; the rest stays as applied.
	cfg.Services = []Service{{netip.MustParseAddr("10.200.1.1"), 17, 5353}}
	if err := f.SetServices(cfg.Services); err != nil {
		t.Fatal(err)
	}
	checkFloor(t, listRuleset(t, ns), cfg)
	for _, bad := range []Service{{netip.MustParseAddr("2001:db8::1"), 17, 53}, {netip.MustParseAddr("10.200.0.1"), 1, 53}, {netip.MustParseAddr("10.200.0.1"), 6, 0}} {
		if err := f.SetServices([]Service{{netip.MustParseAddr("10.200.0.1"), 17, 53}, bad}); err == nil {
			t.Errorf("SetServices accepted %+v", bad)
		}
	}
	checkFloor(t, listRuleset(t, ns), cfg)
}

func TestApplyReplaces(t *testing.T) {
	tests := []struct {
		name          string
		first, second Config
	}{
		{
			name:   "same config twice",
			first:  testConfig([]string{"oc-test-br0"}, []int{1001}),
			second: testConfig([]string{"oc-test-br0"}, []int{1001}),
		},
		{
			name:   "stale ports removed",
			first:  testConfig([]string{"oc-test-br0"}, []int{1001, 1002}),
			second: testConfig([]string{"oc-test-br0"}, []int{1002, 1003}),
		},
		{
			name:   "bridges replaced",
			first:  testConfig([]string{"oc-test-br0", "oc-test-br1"}, nil),
			second: testConfig([]string{"oc-test-br2"}, []int{1001}),
		},
		{
			name:   "cap added",
			first:  testConfig([]string{"oc-test-br0"}, []int{1001}),
			second: withCap(testConfig([]string{"oc-test-br0"}, []int{1001}), 7),
		},
		{
			name:   "cap removed",
			first:  withCap(testConfig([]string{"oc-test-br0"}, []int{1001}), 7),
			second: testConfig([]string{"oc-test-br0"}, []int{1001}),
		},
		{
			name:   "emptied",
			first:  testConfig([]string{"oc-test-br0"}, []int{1001}),
			second: testConfig(nil, nil),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, ns := newTestFloor(t)
			if err := f.Apply(tt.first); err != nil {
				t.Fatal(err)
			}
			// A rule added behind the floor's back, like a dynamic grant,
			// must not survive a replace (S001-FR-010).
			nft(t, ns, "add", "rule", "inet", "outcall", "forward", "accept", "comment", `"oc-test-stray"`)
			if err := f.Apply(tt.second); err != nil {
				t.Fatal(err)
			}
			checkFloor(t, listRuleset(t, ns), tt.second)
		})
	}
}

func TestActive(t *testing.T) {
	f, ns := newTestFloor(t)
	steps := []struct {
		name string
		do   func() error
		want bool
	}{
		{"fresh namespace", func() error { return nil }, false},
		{"after Apply", func() error { return f.Apply(testConfig([]string{"oc-test-br0"}, nil)) }, true},
		// A floor without its arp table lets unknown ports poison the
		// host's neighbour cache, so it is not reported active.
		{"arp table deleted by hand", func() error { nft(t, ns, "delete", "table", "arp", "outcall"); return nil }, false},
		{"Apply restores", func() error { return f.Apply(testConfig([]string{"oc-test-br0"}, nil)) }, true},
		{"bridge table deleted by hand", func() error { nft(t, ns, "delete", "table", "bridge", "outcall"); return nil }, false},
		{"Apply restores again", func() error { return f.Apply(testConfig([]string{"oc-test-br0"}, nil)) }, true},
		{"after Delete", func() error { _, err := f.Delete(); return err }, false},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got, err := f.Active()
		if err != nil {
			t.Fatalf("%s: Active: %v", s.name, err)
		}
		if got != s.want {
			t.Errorf("%s: Active = %v, want %v", s.name, got, s.want)
		}
	}
}

func TestPorts(t *testing.T) {
	f, ns := newTestFloor(t)
	if err := f.Apply(testConfig([]string{"oc-test-br0"}, []int{1001})); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		op   string // "add" or "remove"
		port int
		want []int
	}{
		{"add", 1002, []int{1001, 1002}},
		{"add", 1002, []int{1001, 1002}},
		{"remove", 1001, []int{1002}},
		{"remove", 1001, []int{1002}},
		{"remove", 1999, []int{1002}},
		{"remove", 1002, nil},
	}
	for _, s := range steps {
		var err error
		if s.op == "add" {
			err = f.AddPort(s.port)
		} else {
			err = f.RemovePort(s.port)
		}
		if err != nil {
			t.Fatalf("%s %d: %v", s.op, s.port, err)
		}
		rs := listRuleset(t, ns)
		for _, set := range []string{"inet ports", "bridge ports"} {
			if got, want := rs.sets[set].Elem, indexNames(s.want); !slices.Equal(got, want) {
				t.Errorf("%s %d: %s = %q, want %q", s.op, s.port, set, got, want)
			}
		}
		// Port changes must not rewrite the tables.
		if got := rs.sets["inet bridges"].Elem; !slices.Equal(got, []string{"oc-test-br0"}) {
			t.Errorf("%s %d: inet bridges = %q", s.op, s.port, got)
		}
	}

	if _, err := f.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := f.AddPort(1001); !errors.Is(err, unix.ENOENT) {
		t.Errorf("AddPort without tables = %v, want ENOENT", err)
	}
}

func TestDelete(t *testing.T) {
	f, ns := newTestFloor(t)
	existed, err := f.Delete()
	if err != nil || existed {
		t.Fatalf("Delete of absent tables = %v, %v; want false, nil", existed, err)
	}
	if err := f.Apply(testConfig([]string{"oc-test-br0"}, []int{1001})); err != nil {
		t.Fatal(err)
	}
	existed, err = f.Delete()
	if err != nil || !existed {
		t.Fatalf("Delete = %v, %v; want true, nil", existed, err)
	}
	if rs := listRuleset(t, ns); len(rs.tables) != 0 {
		t.Errorf("tables left after Delete: %v", rs.tables)
	}
	existed, err = f.Delete()
	if err != nil || existed {
		t.Fatalf("second Delete = %v, %v; want false, nil", existed, err)
	}
}

func TestCounters(t *testing.T) {
	f, _ := newTestFloor(t)
	if _, err := f.Counters(); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Counters without tables = %v, want ENOENT", err)
	}
	if err := f.Apply(withCap(testConfig([]string{"oc-test-br0"}, []int{1001}), 3)); err != nil {
		t.Fatal(err)
	}
	got, err := f.Counters()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"arp_input_allow", "arp_input_drop",
		"bridge_forward_drop", "bridge_forward_to_port", "bridge_input_allow", "bridge_input_drop",
		"forward_allow", "forward_conn_limit_drop", "forward_drop_in", "forward_drop_out", "forward_established",
		"input_allow", "input_conn_limit_drop", "input_drop", "input_established",
		"output_service_notrack", "prerouting_service_notrack",
	}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want) {
		t.Errorf("Counters keys = %q, want %q", keys, want)
	}
}

// testNet is a bridge in a floor's namespace with peers plugged into it, each
// a namespace of its own behind a veth.
type testNet struct {
	host   string // the floor's namespace
	bridge string
	peers  map[string]testPeer
}

type testPeer struct{ ns, port, mac, ip string }

// newTestNet builds bridge oc-test-br in host with the given peers (name to
// last address byte). Every peer knows every other peer's MAC statically,
// so only the datagrams under test cross the bridge, no ARP. The bridge
// itself has 198.51.100.254/24 when gateway is set.
func newTestNet(t *testing.T, host string, gateway bool, names ...string) *testNet {
	t.Helper()
	n := &testNet{host: host, bridge: "oc-test-br", peers: map[string]testPeer{}}
	for i, name := range names {
		n.peers[name] = testPeer{
			ns: host + "-" + name, port: "oc-test-p" + name,
			mac: fmt.Sprintf("02:00:5e:00:00:%02x", i+1), ip: fmt.Sprintf("198.51.100.%d", i+1),
		}
	}
	quiet(t, host)
	// With br_netfilter off the inet table never sees bridged frames, so only
	// the bridge table can drop them; this is the case it exists for.
	if _, err := os.Stat("/proc/sys/net/bridge"); err == nil {
		run(t, "ip", "netns", "exec", host, "sysctl", "-qw",
			"net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0")
	}
	run(t, "ip", "-n", host, "link", "add", n.bridge, "type", "bridge")
	for _, name := range names {
		p := n.peers[name]
		newNamedNS(t, p.ns)
		quiet(t, p.ns)
		run(t, "ip", "-n", host, "link", "add", p.port, "type", "veth",
			"peer", "name", "eth0", "address", p.mac, "netns", p.ns)
		run(t, "ip", "-n", host, "link", "set", p.port, "master", n.bridge, "up")
		run(t, "ip", "-n", p.ns, "addr", "add", p.ip+"/24", "dev", "eth0")
		run(t, "ip", "-n", p.ns, "link", "set", "eth0", "up")
		for _, other := range n.peers {
			if other != p {
				run(t, "ip", "-n", p.ns, "neigh", "replace", other.ip, "lladdr", other.mac, "dev", "eth0", "nud", "permanent")
			}
		}
	}
	if gateway {
		run(t, "ip", "-n", host, "addr", "add", "198.51.100.254/24", "dev", n.bridge)
	}
	run(t, "ip", "-n", host, "link", "set", n.bridge, "up")
	return n
}

// quiet turns IPv6 off in ns: no router solicitations or MLD in the counters.
func quiet(t *testing.T, ns string) {
	t.Helper()
	run(t, "ip", "netns", "exec", ns, "sysctl", "-qw",
		"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
}

// index is the ifindex of the host side of peer name.
func (n *testNet) index(t *testing.T, name string) int {
	t.Helper()
	return linkIndex(t, n.host, n.peers[name].port)
}

func linkIndex(t *testing.T, ns, dev string) int {
	t.Helper()
	var links []struct{ Ifindex int }
	unmarshal(t, []byte(run(t, "ip", "-n", ns, "-j", "link", "show", "dev", dev)), &links)
	if len(links) != 1 || links[0].Ifindex == 0 {
		t.Fatalf("no ifindex for %s in %s", dev, ns)
	}
	return links[0].Ifindex
}

// mark marks every frame entering the host side of peer name, as the
// datapath does for what it allows. The low bits belong to others and must
// not matter.
func (n *testNet) mark(t *testing.T, name string) {
	t.Helper()
	nftScript(t, n.host, fmt.Sprintf(`table netdev oc-test-%[1]s {
	chain ingress {
		type filter hook ingress device %[2]q priority filter;
		meta mark set %#[3]x
	}
}`, name, n.peers[name].port, api.AllowMark|0x1234))
}

// pair is a UDP sender in one peer and a receiver in another.
type pair struct{ tx, rx *net.UDPConn }

func (n *testNet) pair(t *testing.T, from, to string, port int) pair {
	t.Helper()
	addr := fmt.Sprintf("%s:%d", n.peers[to].ip, port)
	return pair{rx: listenUDP(t, n.peers[to].ns, addr), tx: dialUDP(t, n.peers[from].ns, addr)}
}

func (p pair) delivered(t *testing.T, within time.Duration) bool {
	t.Helper()
	ok := delivered(t, p.tx, p.rx, within)
	drain(t, p.rx)
	return ok
}

// TestBridgeForward shows the bridge table's forward chain: no frame is
// switched between two taken-over ports, marked or not, and a port the
// daemon has not taken over reaches no taken-over port. Ports are matched
// by ifindex, so a rename keeps a port covered.
func TestBridgeForward(t *testing.T) {
	f, host := newTestFloor(t)
	// a and b are taken over (in @ports), c and d are not.
	n := newTestNet(t, host, false, "a", "b", "c", "d")
	aToB, bToA := n.pair(t, "a", "b", 9), n.pair(t, "b", "a", 9)
	cToB, cToD := n.pair(t, "c", "b", 10), n.pair(t, "c", "d", 10)
	// a's frames carry the allow mark: even allowed frames go only to the
	// gateway, so the mark must not open port to port.
	n.mark(t, "a")

	// Without the floor the setup must deliver, or a drop below proves nothing.
	for name, p := range map[string]pair{"a to b": aToB, "b to a": bToA, "c to b": cToB, "c to d": cToD} {
		if !p.delivered(t, 5*time.Second) {
			t.Fatalf("%s: no delivery across the bridge before Apply; test setup is broken", name)
		}
	}

	if err := f.Apply(testConfig([]string{n.bridge}, []int{n.index(t, "a"), n.index(t, "b")})); err != nil {
		t.Fatal(err)
	}
	if aToB.delivered(t, time.Second) {
		t.Error("marked datagram crossed the bridge from one taken-over port to another")
	}
	if bToA.delivered(t, time.Second) {
		t.Error("unmarked datagram crossed the bridge from one taken-over port to another")
	}
	if c := counters(t, f); c["bridge_forward_drop"] == 0 || c["forward_drop_in"] != 0 {
		t.Errorf("want the drops counted by bridge_forward_drop alone: %v", c)
	}
	before := counters(t, f)["bridge_forward_to_port"]
	if cToB.delivered(t, time.Second) {
		t.Error("a port not taken over reached a taken-over port")
	}
	if counters(t, f)["bridge_forward_to_port"] == before {
		t.Error("bridge_forward_to_port did not move")
	}
	// Between two ports the daemon has not taken over, only meta ibrname
	// can tell an Outcall bridge; without it this is the window DECISIONS.md
	// records.
	meta, err := f.hasBridgeMeta()
	if err != nil {
		t.Fatal(err)
	}
	if got := cToD.delivered(t, time.Second); got == meta {
		t.Errorf("between two ports not taken over: delivered = %v with meta ibrname = %v", got, meta)
	}

	// A renamed port is the same port and stays covered.
	b := n.index(t, "b")
	run(t, "ip", "-n", host, "link", "set", n.peers["b"].port, "down")
	run(t, "ip", "-n", host, "link", "set", n.peers["b"].port, "name", "oc-test-renamed")
	run(t, "ip", "-n", host, "link", "set", "oc-test-renamed", "up")
	if aToB.delivered(t, time.Second) || cToB.delivered(t, time.Second) {
		t.Error("renamed port lost its cover")
	}
	// Positive control: once b leaves the set, c reaches it again, so the
	// set by ifindex is what dropped.
	if err := f.RemovePort(b); err != nil {
		t.Fatal(err)
	}
	if !cToB.delivered(t, 5*time.Second) {
		t.Error("port removed from @ports still unreachable")
	}
}

// TestARPInput shows the arp table: ARP from a port the daemon has not taken
// over (no program, so no mark) never reaches the host's neighbour cache,
// neither as a new entry nor overriding an agent's, while marked ARP does.
func TestARPInput(t *testing.T) {
	f, host := newTestFloor(t)
	n := newTestNet(t, host, true, "rogue")
	rogue := n.peers["rogue"]
	// Without locktime an unsolicited reply may override an entry at once,
	// so the poisoning below works on the first try when nothing stops it.
	run(t, "ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.neigh."+n.bridge+".locktime=0")
	brMAC := macOf(t, host, n.bridge)
	const victimMAC = "02:00:5e:00:00:aa"

	// learn asks the host, from the rogue, for the gateway's MAC with
	// sender address ip, which makes the host learn ip at the rogue's MAC.
	learn := func(ip string) {
		sendARP(t, rogue.ns, arpRequest, "ff:ff:ff:ff:ff:ff", rogue.mac, ip, "00:00:00:00:00:00", "198.51.100.254")
	}
	// poison claims, in an unsolicited reply to the host, that ip (an
	// agent's entry in the host's cache) is at the rogue's MAC.
	poison := func(ip string) {
		run(t, "ip", "-n", host, "neigh", "replace", ip, "lladdr", victimMAC, "dev", n.bridge, "nud", "stale")
		// The override needs a jiffy since the entry's last update.
		time.Sleep(100 * time.Millisecond)
		sendARP(t, rogue.ns, arpReply, brMAC, rogue.mac, ip, brMAC, "198.51.100.254")
	}
	// Positive control: with no floor both work.
	learn("198.51.100.21")
	poison("198.51.100.22")
	if got := waitNeigh(t, host, n.bridge, "198.51.100.21", rogue.mac); got != rogue.mac {
		t.Fatalf("without the floor the host did not learn from the rogue's ARP (%q); test setup is broken", got)
	}
	if got := waitNeigh(t, host, n.bridge, "198.51.100.22", rogue.mac); got != rogue.mac {
		t.Fatalf("without the floor the rogue's ARP reply did not override an entry (%q); test setup is broken", got)
	}

	// The rogue's port is not in @ports: the bridge table lets its frames
	// up to the host, and only the arp table stands in the way.
	if err := f.Apply(testConfig([]string{n.bridge}, nil)); err != nil {
		t.Fatal(err)
	}
	learn("198.51.100.23")
	poison("198.51.100.24")
	if got := waitNeigh(t, host, n.bridge, "198.51.100.23", rogue.mac); got != "" {
		t.Errorf("host learned an address from unmarked ARP: %q", got)
	}
	if got := waitNeigh(t, host, n.bridge, "198.51.100.24", rogue.mac); got != victimMAC {
		t.Errorf("unmarked ARP reply poisoned the host's entry: %q, want %q", got, victimMAC)
	}
	if c := counters(t, f); c["arp_input_drop"] < 2 || c["arp_input_allow"] != 0 {
		t.Errorf("want both ARP frames counted by arp_input_drop: %v", c)
	}

	// Marked ARP, as the datapath marks what it allows, passes.
	n.mark(t, "rogue")
	learn("198.51.100.25")
	if got := waitNeigh(t, host, n.bridge, "198.51.100.25", rogue.mac); got != rogue.mac {
		t.Errorf("marked ARP did not reach the host: %q", got)
	}
	if c := counters(t, f); c["arp_input_allow"] == 0 {
		t.Errorf("arp_input_allow did not move: %v", c)
	}
}

// TestConnLimit shows the per-agent cap: with a cap of 3, an agent's first 3
// connections pass (to the gateway and through it, counted together), the
// next ones are dropped and counted in the chain that saw them, and a
// connection that ends makes room again.
func TestConnLimit(t *testing.T) {
	f, host := newTestFloor(t)
	n := newTestNet(t, host, true, "a")
	a := n.peers["a"]
	n.mark(t, "a")
	gwMAC := macOf(t, host, n.bridge)
	run(t, "ip", "-n", a.ns, "neigh", "replace", "198.51.100.254", "lladdr", gwMAC, "dev", "eth0", "nud", "permanent")
	run(t, "ip", "-n", host, "neigh", "replace", a.ip, "lladdr", a.mac, "dev", n.bridge, "nud", "permanent")
	run(t, "ip", "-n", a.ns, "route", "add", "default", "via", "198.51.100.254")
	// An upstream namespace on a documentation address, so forwarded
	// connections stay on this machine.
	up := host + "-up"
	newNamedNS(t, up)
	quiet(t, up)
	run(t, "ip", "-n", host, "link", "add", "oc-test-up", "type", "veth", "peer", "name", "eth0", "netns", up)
	run(t, "ip", "-n", host, "addr", "add", "203.0.113.1/24", "dev", "oc-test-up")
	run(t, "ip", "-n", host, "link", "set", "oc-test-up", "up")
	run(t, "ip", "-n", up, "addr", "add", "203.0.113.2/24", "dev", "eth0")
	run(t, "ip", "-n", up, "link", "set", "eth0", "up")
	run(t, "ip", "-n", up, "route", "add", "198.51.100.0/24", "via", "203.0.113.1")
	run(t, "ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	gateway := holdTCP(t, host, "198.51.100.254:7")
	upstream := holdTCP(t, up, "203.0.113.2:7")

	if err := f.Apply(withCap(testConfig([]string{n.bridge}, []int{n.index(t, "a")}), 3)); err != nil {
		t.Fatal(err)
	}
	// The first 3 pass: two to the gateway, one through it.
	var open []net.Conn
	for _, addr := range []string{gateway, gateway, upstream} {
		c := dialTCP(t, a.ns, addr)
		if c == nil {
			t.Fatalf("connection %d to %s blocked under the cap: %v", len(open)+1, addr, counters(t, f))
		}
		open = append(open, c)
	}
	if c := dialTCP(t, a.ns, gateway); c != nil {
		c.Close()
		t.Error("4th connection (to the gateway) passed a cap of 3")
	}
	if c := dialTCP(t, a.ns, upstream); c != nil {
		c.Close()
		t.Error("5th connection (through the gateway) passed a cap of 3")
	}
	if c := counters(t, f); c["input_conn_limit_drop"] == 0 || c["forward_conn_limit_drop"] == 0 {
		t.Errorf("drops over the cap not counted in both chains: %v", c)
	}
	// A closed connection no longer counts.
	open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dialTCP(t, a.ns, gateway)
		if c != nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Error("no new connection after one of the 3 closed")
			break
		}
	}
	for _, c := range open[1:] {
		c.Close()
	}
}

// holdTCP listens on addr in ns and keeps every accepted connection open
// until the peer closes it, so each one holds its conntrack entry. It
// returns addr.
func holdTCP(t *testing.T, ns, addr string) string {
	t.Helper()
	var l net.Listener
	inNetns(t, ns, func() (err error) {
		l, err = net.Listen("tcp4", addr)
		return err
	})
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(time.Minute))
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return addr
}

// dialTCP connects from ns to addr, or returns nil when the handshake does
// not complete within a second.
func dialTCP(t *testing.T, ns, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	inNetns(t, ns, func() error {
		c, _ = net.DialTimeout("tcp4", addr, time.Second)
		return nil
	})
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c
}

// TestBridgeMetaProbe checks the meta ibrname probe against what nft itself
// says, that it leaves nothing behind, and that the rules it guards are what
// the kernel needs it for.
func TestBridgeMetaProbe(t *testing.T) {
	f, ns := newTestFloor(t)
	got, err := f.hasBridgeMeta()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader("table bridge oc-test-probe {\n chain c {\n meta ibrname \"x\"\n }\n}\n")
	out, err := cmd.CombinedOutput()
	if want := err == nil; got != want {
		t.Errorf("probe = %v, nft accepts meta ibrname = %v (%s)", got, want, out)
	}
	if err == nil {
		nft(t, ns, "delete", "table", "bridge", "oc-test-probe")
	}
	if rs := listRuleset(t, ns); len(rs.tables) != 0 {
		t.Errorf("probe left tables: %v", rs.tables)
	}
	cfg := testConfig([]string{"oc-test-br0"}, []int{1001})
	if err := f.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if got {
		rs := listRuleset(t, ns)
		want := []string{"meta ibrname == @bridges, iif != @ports, counter, drop #bridge_prerouting_unknown"}
		if r := rs.rules["bridge prerouting"]; !slices.Equal(r, want) {
			t.Errorf("bridge prerouting = %q, want %q", r, want)
		}
		return
	}
	checkFloor(t, listRuleset(t, ns), cfg)
	// Pretend the kernel has it: the floor then needs it, so the Apply
	// fails as a whole and the floor in place stays.
	f.bridgeMeta = probeYes
	if err := f.Apply(testConfig([]string{"oc-test-br1"}, nil)); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("Apply with meta ibrname on a kernel without it = %v, want EOPNOTSUPP", err)
	}
	checkFloor(t, listRuleset(t, ns), cfg)
}

const (
	arpRequest = 1
	arpReply   = 2
)

// sendARP sends one Ethernet ARP frame from eth0 of ns through a packet
// socket, so the test chooses every field.
func sendARP(t *testing.T, ns string, op uint16, dst, sha, spa, tha, tpa string) {
	t.Helper()
	frame := slices.Concat(mustMAC(t, dst), mustMAC(t, sha), []byte{0x08, 0x06,
		0, 1, 0x08, 0x00, 6, 4, byte(op >> 8), byte(op)},
		mustMAC(t, sha), mustIP4(t, spa), mustMAC(t, tha), mustIP4(t, tpa))
	inNetns(t, ns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_ARP)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(proto))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], mustMAC(t, dst))
		return unix.Sendto(fd, frame, 0, sa)
	})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func mustMAC(t *testing.T, s string) []byte {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustIP4(t *testing.T, s string) []byte {
	t.Helper()
	ip := net.ParseIP(s).To4()
	if ip == nil {
		t.Fatalf("not an IPv4 address: %q", s)
	}
	return ip
}

func macOf(t *testing.T, ns, dev string) string {
	t.Helper()
	var links []struct{ Address string }
	unmarshal(t, []byte(run(t, "ip", "-n", ns, "-j", "link", "show", "dev", dev)), &links)
	if len(links) != 1 {
		t.Fatalf("no MAC for %s in %s", dev, ns)
	}
	return links[0].Address
}

// waitNeigh returns the host's MAC for ip on dev once it is want, or what
// it is after a second ("" for no entry): long enough for an ARP frame on
// a veth, short enough for a negative probe.
func waitNeigh(t *testing.T, ns, dev, ip, want string) string {
	t.Helper()
	var got string
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var entries []struct{ Lladdr string }
		unmarshal(t, []byte(run(t, "ip", "-n", ns, "-j", "neigh", "show", ip, "dev", dev)), &entries)
		got = ""
		if len(entries) == 1 {
			got = entries[0].Lladdr
		}
		if got == want {
			break
		}
	}
	return got
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"default", testConfig([]string{"outcall0"}, []int{7, 1 << 20}), true},
		{"empty sets", testConfig(nil, nil), true},
		{"zero mark opens the floor", Config{MarkMask: api.AllowMarkMask}, false},
		{"mark outside mask", Config{Mark: api.AllowMark | 1, MarkMask: api.AllowMarkMask}, false},
		{"zero mask", Config{Mark: api.AllowMark}, false},
		{"name too long", testConfig([]string{"outcall-too-long"}, nil), false},
		{"empty name", testConfig([]string{""}, nil), false},
		{"NUL in name", testConfig([]string{"oc\x00x"}, nil), false},
		{"zero ifindex", testConfig(nil, []int{0}), false},
		{"negative ifindex", testConfig(nil, []int{-3}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.validate(); (err == nil) != tt.ok {
				t.Errorf("validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"EPERM", unix.EPERM, permissionMessage},
		{"wrapped EACCES", fmt.Errorf("netlink receive: %w", unix.EACCES), permissionMessage},
		{"joined EPERM", errors.Join(errors.New("first"), unix.EPERM), permissionMessage},
		{"other errno", unix.ENOENT, "nftables operation failed: apply floor: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error = &Error{Op: "apply floor", Err: tt.err}
			if got := err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("errors.Is(err, %v) = false", tt.err)
			}
			var e *Error
			if !errors.As(fmt.Errorf("bridge up: %w", err), &e) {
				t.Error("errors.As(*Error) = false")
			}
		})
	}
	if permissionMessage != "permission denied running nft — are you root or have CAP_NET_ADMIN?" {
		t.Error("the S001-EC-003 message changed")
	}
}

// checkFloor compares the listed ruleset with what cfg must produce.
func checkFloor(t *testing.T, rs ruleset, cfg Config) {
	t.Helper()
	if want := []string{"arp outcall", "bridge outcall", "inet outcall"}; !slices.Equal(rs.tables, want) {
		t.Errorf("tables = %q, want %q", rs.tables, want)
	}
	for key, want := range wantChains {
		if got := rs.chains[key]; got != want {
			t.Errorf("chain %s = %+v, want %+v", key, got, want)
		}
	}
	if len(rs.chains) != len(wantChains) {
		t.Errorf("chains = %v, want %d", rs.chains, len(wantChains))
	}
	want := wantRules(cfg)
	if len(rs.rules) != len(want) {
		t.Errorf("rules in %d chains, want %d", len(rs.rules), len(want))
	}
	for key, want := range want {
		if got := rs.rules[key]; !slices.Equal(got, want) {
			t.Errorf("rules of %s:\n got  %q\n want %q", key, got, want)
		}
	}
	sets := map[string]setInfo{
		"inet bridges":  {"ifname", slices.Sorted(slices.Values(cfg.Bridges))},
		"inet ports":    {"iface_index", indexNames(cfg.Ports)},
		"bridge ports":  {"iface_index", indexNames(cfg.Ports)},
		"arp bridges":   {"ifname", slices.Sorted(slices.Values(cfg.Bridges))},
		"inet services": {"ipv4_addr . inet_proto . inet_service", serviceNames(cfg.Services)},
	}
	if cfg.MaxConnsPerAgent > 0 {
		sets["inet conns_per_agent"] = setInfo{Type: "ipv4_addr"}
	}
	if len(rs.sets) != len(sets) {
		t.Errorf("sets = %v, want %d", rs.sets, len(sets))
	}
	for key, want := range sets {
		if got := rs.sets[key]; got.Type != want.Type || !slices.Equal(got.Elem, want.Elem) {
			t.Errorf("set %s = %s %q, want %s %q", key, got.Type, got.Elem, want.Type, want.Elem)
		}
	}
}

// serviceNames is how nft lists the services set's elements, sorted as
// listRuleset sorts them.
func serviceNames(services []Service) []string {
	var names []string
	for _, sv := range services {
		proto := map[uint8]string{6: "tcp", 17: "udp"}[sv.Proto]
		if n := fmt.Sprintf("%s . %s . %d", sv.Addr, proto, sv.Port); !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// indexNames is how nft lists ifindexes that name no interface of the
// namespace (the tests' are made up): as numbers, here sorted as strings
// the way listRuleset sorts what it reads.
func indexNames(ifindexes []int) []string {
	names := make([]string, 0, len(ifindexes))
	for _, i := range slices.Compact(slices.Sorted(slices.Values(ifindexes))) {
		names = append(names, strconv.Itoa(i))
	}
	slices.Sort(names)
	return names
}

// ruleset is the part of `nft -j list ruleset` that belongs to Outcall, keyed
// by "family name".
type ruleset struct {
	tables []string
	chains map[string]chainInfo
	sets   map[string]setInfo
	rules  map[string][]string
}

type chainInfo struct {
	Type, Hook, Policy string
	Prio               int
}

type setInfo struct {
	Type string
	Elem []string
}

func listRuleset(t *testing.T, ns string) ruleset {
	t.Helper()
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	unmarshal(t, []byte(nft(t, ns, "-j", "list", "ruleset")), &doc)
	rs := ruleset{chains: map[string]chainInfo{}, sets: map[string]setInfo{}, rules: map[string][]string{}}
	for _, obj := range doc.Nftables {
		for kind, raw := range obj {
			var o struct {
				Family, Table, Name, Chain, Comment string
				Expr                                []map[string]json.RawMessage
			}
			unmarshal(t, raw, &o)
			switch {
			case kind == "table" && o.Name == api.NFTableName:
				rs.tables = append(rs.tables, o.Family+" "+o.Name)
			case o.Table != api.NFTableName:
			case kind == "chain":
				var c chainInfo
				unmarshal(t, raw, &c)
				rs.chains[o.Family+" "+o.Name] = c
			case kind == "set":
				var s struct {
					Type json.RawMessage
					Elem []json.RawMessage
				}
				unmarshal(t, raw, &s)
				// A concatenation's type is a list, shown as nft writes it.
				var typ string
				if json.Unmarshal(s.Type, &typ) != nil {
					var types []string
					unmarshal(t, s.Type, &types)
					typ = strings.Join(types, " . ")
				}
				info := setInfo{Type: typ}
				for _, e := range s.Elem {
					// Names are strings; nft may print an ifindex as a number.
					var name string
					if json.Unmarshal(e, &name) != nil {
						name = concatElem(e)
					}
					info.Elem = append(info.Elem, name)
				}
				// The kernel's order is the hash's, not ours.
				slices.Sort(info.Elem)
				rs.sets[o.Family+" "+o.Name] = info
			case kind == "rule":
				rs.rules[o.Family+" "+o.Chain] = append(rs.rules[o.Family+" "+o.Chain], describe(t, o.Expr, o.Comment))
			}
		}
	}
	slices.Sort(rs.tables)
	return rs
}

// concatElem renders a concatenated element ({"concat": [...]}) as nft
// writes it, "10.200.0.1 . udp . 53"; anything else as its JSON.
func concatElem(raw json.RawMessage) string {
	var c struct{ Concat []json.RawMessage }
	if json.Unmarshal(raw, &c) != nil || len(c.Concat) == 0 {
		return string(raw)
	}
	parts := make([]string, len(c.Concat))
	for i, p := range c.Concat {
		var s string
		if json.Unmarshal(p, &s) != nil {
			s = string(p)
		}
		parts[i] = s
	}
	return strings.Join(parts, " . ")
}

func unmarshal(t *testing.T, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("parse nft -j output: %v", err)
	}
}

// describe renders a rule's JSON expressions compactly, e.g.
// "iifname == @ports, counter, drop #bridge_forward_drop".
func describe(t *testing.T, exprs []map[string]json.RawMessage, comment string) string {
	t.Helper()
	var parts []string
	for _, e := range exprs {
		for kind, raw := range e {
			if kind == "set" {
				parts = append(parts, describeSet(t, raw))
				continue
			}
			if kind != "match" {
				parts = append(parts, kind)
				continue
			}
			var m struct {
				Op   string
				Left struct {
					Meta, Ct struct{ Key string }
					Concat   []struct {
						Meta    struct{ Key string }
						Payload struct{ Protocol, Field string }
					}
				}
				Right json.RawMessage
			}
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatalf("parse match: %v", err)
			}
			switch {
			case len(m.Left.Concat) > 0:
				var fields []string
				for _, c := range m.Left.Concat {
					if c.Meta.Key != "" {
						fields = append(fields, "meta "+c.Meta.Key)
					} else {
						fields = append(fields, c.Payload.Protocol+" "+c.Payload.Field)
					}
				}
				var set string
				_ = json.Unmarshal(m.Right, &set)
				parts = append(parts, strings.Join(fields, " . ")+" "+m.Op+" "+set)
			case m.Left.Meta.Key == "mark":
				var p struct{ Prefix struct{ Addr, Len uint32 } }
				if err := json.Unmarshal(m.Right, &p); err != nil {
					parts = append(parts, "mark "+m.Op+" "+string(m.Right))
					continue
				}
				parts = append(parts, fmt.Sprintf("mark %#x/%d", p.Prefix.Addr, p.Prefix.Len))
			case m.Left.Ct.Key == "state":
				// One state is a string, several a list.
				var states []string
				if err := json.Unmarshal(m.Right, &states); err != nil {
					var one string
					if err := json.Unmarshal(m.Right, &one); err != nil {
						t.Fatalf("parse ct state: %v", err)
					}
					states = []string{one}
				}
				parts = append(parts, "ct state "+strings.Join(states, ","))
			default:
				var set string
				if err := json.Unmarshal(m.Right, &set); err != nil {
					set = string(m.Right)
				}
				parts = append(parts, m.Left.Meta.Key+" "+m.Op+" "+set)
			}
		}
	}
	s := strings.Join(parts, ", ")
	if comment != "" {
		s += " #" + comment
	}
	return s
}

// describeSet renders a set statement such as the per-agent connection cap:
// "add @conns_per_agent { ip saddr ct count over 3 }".
func describeSet(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var st struct {
		Op, Set string
		Elem    struct {
			Payload struct{ Protocol, Field string }
		}
		Stmt []map[string]struct {
			Val int
			Inv bool
		}
	}
	unmarshal(t, raw, &st)
	var stmts []string
	for _, s := range st.Stmt {
		for kind, v := range s {
			over := ""
			if v.Inv {
				over = "over "
			}
			stmts = append(stmts, fmt.Sprintf("%s %s%d", kind, over, v.Val))
		}
	}
	return fmt.Sprintf("%s %s { %s %s %s }", st.Op, st.Set, st.Elem.Payload.Protocol, st.Elem.Payload.Field, strings.Join(stmts, " "))
}

func counters(t *testing.T, f *Floor) map[string]uint64 {
	t.Helper()
	c, err := f.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// skipUnprivileged skips a test that cannot run here, or fails it where CI
// demands that privileged tests run (TESTING.md).
func skipUnprivileged(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("OUTCALL_REQUIRE_PRIVILEGED") == "1" {
		t.Fatalf("OUTCALL_REQUIRE_PRIVILEGED=1, cannot skip: "+format, args...)
	}
	t.Skipf(format, args...)
}

// newTestFloor returns a Floor in a fresh network namespace, so the host's
// ruleset is never touched, and the namespace's name for nft and ip.
func newTestFloor(t *testing.T) (*Floor, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipUnprivileged(t, "needs root to create network namespaces and nftables tables")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			skipUnprivileged(t, "needs the %s binary to inspect the test namespace: %v", bin, err)
		}
	}
	b := make([]byte, 4)
	rand.Read(b)
	name := "oc-test-nft-" + hex.EncodeToString(b)
	f := New(int(newNamedNS(t, name)))
	if _, err := f.Active(); err != nil {
		skipUnprivileged(t, "nf_tables unavailable: %v", err)
	}
	return f, name
}

// newNamedNS creates a named network namespace, removed when the test ends.
func newNamedNS(t *testing.T, name string) netns.NsHandle {
	t.Helper()
	t.Cleanup(func() {
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		}
	})
	run(t, "ip", "netns", "add", name)
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func nft(t *testing.T, ns string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", ns, "nft"}, args...)...)
}

func nftScript(t *testing.T, ns, script string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
}

// inNetns runs fn on a thread switched into namespace ns. Sockets fn opens
// stay in ns after the thread switches back.
func inNetns(t *testing.T, ns string, fn func() error) {
	t.Helper()
	target, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()

	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread stays locked, so Go retires it rather than reuse it
		// in the wrong namespace.
		t.Fatalf("restore network namespace: %v", err)
	}
	runtime.UnlockOSThread()
	if fnErr != nil {
		t.Fatal(fnErr)
	}
}

func listenUDP(t *testing.T, ns, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	inNetns(t, ns, func() (err error) {
		a, err := net.ResolveUDPAddr("udp4", addr)
		if err != nil {
			return err
		}
		c, err = net.ListenUDP("udp4", a)
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}

func dialUDP(t *testing.T, ns, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	inNetns(t, ns, func() (err error) {
		a, err := net.ResolveUDPAddr("udp4", addr)
		if err != nil {
			return err
		}
		c, err = net.DialUDP("udp4", nil, a)
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// delivered sends a datagram on tx every 100ms until rx receives one or
// within has passed.
func delivered(t *testing.T, tx, rx *net.UDPConn, within time.Duration) bool {
	t.Helper()
	buf := make([]byte, 64)
	for deadline := time.Now().Add(within); time.Now().Before(deadline); {
		if _, err := tx.Write([]byte("oc-test")); err != nil {
			t.Fatalf("send: %v", err)
		}
		rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := rx.Read(buf)
		if err == nil && string(buf[:n]) == "oc-test" {
			return true
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("receive: %v", err)
		}
	}
	return false
}

// drain discards datagrams still queued from an earlier phase.
func drain(t *testing.T, rx *net.UDPConn) {
	t.Helper()
	buf := make([]byte, 64)
	for range 100 {
		rx.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := rx.Read(buf); err != nil {
			return
		}
	}
	t.Fatal("receiver never went quiet")
}
