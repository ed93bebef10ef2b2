package nft

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"outcall.dev/outcall/pkg/api"
)

func testConfig(bridges, ports []string) Config {
	return Config{Bridges: bridges, Ports: ports, Mark: api.AllowMark, MarkMask: api.AllowMarkMask}
}

// wantRules is the floor as nft renders it, per "family chain". nft prints
// `meta mark & 0xffff0000 == 0x4f430000` as the prefix 0x4f430000/16; the
// bytecode is the same.
var wantRules = map[string][]string{
	"inet forward": {
		"iifname != @bridges, oifname != @bridges, accept",
		"ct state established,related, counter, accept #forward_established",
		"iifname == @bridges, mark 0x4f430000/16, counter, accept #forward_allow",
		"iifname == @bridges, counter, drop #forward_drop_in",
		"oifname == @bridges, counter, drop #forward_drop_out",
	},
	"inet input": {
		"iifname != @bridges, accept",
		"ct state established,related, counter, accept #input_established",
		"mark 0x4f430000/16, counter, accept #input_allow",
		"counter, drop #input_drop",
	},
	"bridge forward": {
		"iifname == @ports, mark 0x4f430000/16, counter, accept #bridge_forward_allow",
		"iifname == @ports, counter, drop #bridge_forward_drop",
	},
	"bridge input": {
		"iifname == @ports, mark 0x4f430000/16, counter, accept #bridge_input_allow",
		"iifname == @ports, counter, drop #bridge_input_drop",
	},
}

var wantChains = map[string]chainInfo{
	"inet forward":   {Type: "filter", Hook: "forward", Prio: 0, Policy: "drop"},
	"inet input":     {Type: "filter", Hook: "input", Prio: 0, Policy: "accept"},
	"bridge forward": {Type: "filter", Hook: "forward", Prio: -200, Policy: "accept"},
	"bridge input":   {Type: "filter", Hook: "input", Prio: -200, Policy: "accept"},
}

func TestApply(t *testing.T) {
	f, ns := newTestFloor(t)
	cfg := testConfig([]string{"oc-test-br0"}, []string{"oc-test-p2", "oc-test-p1"})
	if err := f.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	rs := listRuleset(t, ns)
	checkFloor(t, rs, cfg)
}

func TestApplyReplaces(t *testing.T) {
	tests := []struct {
		name          string
		first, second Config
	}{
		{
			name:   "same config twice",
			first:  testConfig([]string{"oc-test-br0"}, []string{"oc-test-p1"}),
			second: testConfig([]string{"oc-test-br0"}, []string{"oc-test-p1"}),
		},
		{
			name:   "stale ports removed",
			first:  testConfig([]string{"oc-test-br0"}, []string{"oc-test-p1", "oc-test-p2"}),
			second: testConfig([]string{"oc-test-br0"}, []string{"oc-test-p2", "oc-test-p3"}),
		},
		{
			name:   "bridges replaced",
			first:  testConfig([]string{"oc-test-br0", "oc-test-br1"}, nil),
			second: testConfig([]string{"oc-test-br2"}, []string{"oc-test-p1"}),
		},
		{
			name:   "emptied",
			first:  testConfig([]string{"oc-test-br0"}, []string{"oc-test-p1"}),
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
	f, _ := newTestFloor(t)
	steps := []struct {
		name string
		do   func() error
		want bool
	}{
		{"fresh namespace", func() error { return nil }, false},
		{"after Apply", func() error { return f.Apply(testConfig([]string{"oc-test-br0"}, nil)) }, true},
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
	if err := f.Apply(testConfig([]string{"oc-test-br0"}, []string{"oc-test-p1"})); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		op   string // "add" or "remove"
		port string
		want []string
	}{
		{"add", "oc-test-p2", []string{"oc-test-p1", "oc-test-p2"}},
		{"add", "oc-test-p2", []string{"oc-test-p1", "oc-test-p2"}},
		{"remove", "oc-test-p1", []string{"oc-test-p2"}},
		{"remove", "oc-test-p1", []string{"oc-test-p2"}},
		{"remove", "oc-test-never", []string{"oc-test-p2"}},
		{"remove", "oc-test-p2", nil},
	}
	for _, s := range steps {
		var err error
		if s.op == "add" {
			err = f.AddPort(s.port)
		} else {
			err = f.RemovePort(s.port)
		}
		if err != nil {
			t.Fatalf("%s %s: %v", s.op, s.port, err)
		}
		rs := listRuleset(t, ns)
		for _, set := range []string{"inet ports", "bridge ports"} {
			if got := rs.sets[set].Elem; !slices.Equal(got, s.want) {
				t.Errorf("%s %s: %s = %q, want %q", s.op, s.port, set, got, s.want)
			}
		}
		// Port changes must not rewrite the tables.
		if got := rs.sets["inet bridges"].Elem; !slices.Equal(got, []string{"oc-test-br0"}) {
			t.Errorf("%s %s: inet bridges = %q", s.op, s.port, got)
		}
	}

	if _, err := f.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := f.AddPort("oc-test-p1"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("AddPort without tables = %v, want ENOENT", err)
	}
}

func TestDelete(t *testing.T) {
	f, ns := newTestFloor(t)
	existed, err := f.Delete()
	if err != nil || existed {
		t.Fatalf("Delete of absent tables = %v, %v; want false, nil", existed, err)
	}
	if err := f.Apply(testConfig([]string{"oc-test-br0"}, []string{"oc-test-p1"})); err != nil {
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
	if err := f.Apply(testConfig([]string{"oc-test-br0"}, []string{"oc-test-p1"})); err != nil {
		t.Fatal(err)
	}
	got, err := f.Counters()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"bridge_forward_allow", "bridge_forward_drop", "bridge_input_allow", "bridge_input_drop",
		"forward_allow", "forward_drop_in", "forward_drop_out", "forward_established",
		"input_allow", "input_drop", "input_established",
	}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want) {
		t.Errorf("Counters keys = %q, want %q", keys, want)
	}
}

// TestBridgeTraffic shows the bridge table at work: a frame switched between
// two container ports is dropped unless something marked it.
func TestBridgeTraffic(t *testing.T) {
	f, host := newTestFloor(t)
	peerA, peerB := host+"-a", host+"-b"
	newNamedNS(t, peerA)
	newNamedNS(t, peerB)
	for _, ns := range []string{host, peerA, peerB} {
		// No IPv6 chatter (router solicitations, MLD) in the counters.
		run(t, "ip", "netns", "exec", ns, "sysctl", "-qw",
			"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	// With br_netfilter off the inet table never sees bridged frames, so only
	// the bridge table can drop them; this is the case it exists for.
	run(t, "ip", "netns", "exec", host, "sysctl", "-qw",
		"net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0")
	run(t, "ip", "-n", host, "link", "add", "oc-test-br", "type", "bridge")
	peers := []struct{ ns, port, mac, ip string }{
		{peerA, "oc-test-pa", "02:00:5e:00:00:0a", "198.51.100.1"},
		{peerB, "oc-test-pb", "02:00:5e:00:00:0b", "198.51.100.2"},
	}
	for i, p := range peers {
		other := peers[1-i]
		run(t, "ip", "-n", host, "link", "add", p.port, "type", "veth",
			"peer", "name", "eth0", "address", p.mac, "netns", p.ns)
		run(t, "ip", "-n", host, "link", "set", p.port, "master", "oc-test-br", "up")
		run(t, "ip", "-n", p.ns, "addr", "add", p.ip+"/24", "dev", "eth0")
		run(t, "ip", "-n", p.ns, "link", "set", "eth0", "up")
		// Static neighbours: only the UDP datagram crosses the bridge, no ARP.
		run(t, "ip", "-n", p.ns, "neigh", "replace", other.ip, "lladdr", other.mac, "dev", "eth0", "nud", "permanent")
	}
	run(t, "ip", "-n", host, "link", "set", "oc-test-br", "up")

	rxB := listenUDP(t, peerB, "198.51.100.2:9")
	txA := dialUDP(t, peerA, "198.51.100.2:9")
	rxA := listenUDP(t, peerA, "198.51.100.1:9")
	txB := dialUDP(t, peerB, "198.51.100.1:9")

	// Without the floor the setup must deliver, or a drop below proves nothing.
	if !delivered(t, txA, rxB, 5*time.Second) {
		t.Fatal("no delivery across the bridge before Apply; test setup is broken")
	}
	drain(t, rxB)

	if err := f.Apply(testConfig([]string{"oc-test-br"}, []string{"oc-test-pa", "oc-test-pb"})); err != nil {
		t.Fatal(err)
	}
	if delivered(t, txA, rxB, time.Second) {
		t.Error("unmarked datagram crossed the bridge")
	}
	if c := counters(t, f); c["bridge_forward_drop"] == 0 || c["forward_drop_in"] != 0 {
		t.Errorf("want the drop counted by bridge_forward_drop alone: %v", c)
	}

	// Mark everything entering port a, as the datapath does for allowed
	// packets. The low bits belong to others and must not matter.
	nftScript(t, host, fmt.Sprintf(`table netdev oc-test {
	chain ingress {
		type filter hook ingress device "oc-test-pa" priority filter;
		meta mark set %#x
	}
}`, api.AllowMark|0x1234))
	if !delivered(t, txA, rxB, 5*time.Second) {
		t.Errorf("marked datagram did not cross the bridge: %v", counters(t, f))
	}
	if c := counters(t, f); c["bridge_forward_allow"] == 0 {
		t.Errorf("bridge_forward_allow did not move: %v", c)
	}
	// Port b is not marked, so the way back stays shut.
	if delivered(t, txB, rxA, time.Second) {
		t.Error("unmarked datagram from port b crossed the bridge")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"default", testConfig([]string{"outcall0"}, []string{"veth1234567890a"}), true},
		{"empty sets", testConfig(nil, nil), true},
		{"zero mark opens the floor", Config{MarkMask: api.AllowMarkMask}, false},
		{"mark outside mask", Config{Mark: api.AllowMark | 1, MarkMask: api.AllowMarkMask}, false},
		{"zero mask", Config{Mark: api.AllowMark}, false},
		{"name too long", testConfig([]string{"outcall-too-long"}, nil), false},
		{"empty name", testConfig(nil, []string{""}), false},
		{"NUL in name", testConfig(nil, []string{"oc\x00x"}), false},
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
	if want := []string{"bridge outcall", "inet outcall"}; !slices.Equal(rs.tables, want) {
		t.Errorf("tables = %q, want %q", rs.tables, want)
	}
	for key, want := range wantChains {
		if got := rs.chains[key]; got != want {
			t.Errorf("chain %s = %+v, want %+v", key, got, want)
		}
	}
	for key, want := range wantRules {
		if got := rs.rules[key]; !slices.Equal(got, want) {
			t.Errorf("rules of %s:\n got  %q\n want %q", key, got, want)
		}
	}
	sets := map[string][]string{"inet bridges": cfg.Bridges, "inet ports": cfg.Ports, "bridge ports": cfg.Ports}
	if len(rs.sets) != len(sets) {
		t.Errorf("sets = %v, want %d", rs.sets, len(sets))
	}
	for key, names := range sets {
		want := slices.Sorted(slices.Values(names))
		got := rs.sets[key]
		if got.Type != "ifname" || !slices.Equal(got.Elem, want) {
			t.Errorf("set %s = %s %q, want ifname %q", key, got.Type, got.Elem, want)
		}
	}
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
				var s setInfo
				unmarshal(t, raw, &s)
				rs.sets[o.Family+" "+o.Name] = s
			case kind == "rule":
				rs.rules[o.Family+" "+o.Chain] = append(rs.rules[o.Family+" "+o.Chain], describe(t, o.Expr, o.Comment))
			}
		}
	}
	slices.Sort(rs.tables)
	return rs
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
			if kind != "match" {
				parts = append(parts, kind)
				continue
			}
			var m struct {
				Op   string
				Left struct {
					Meta, Ct struct{ Key string }
				}
				Right json.RawMessage
			}
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatalf("parse match: %v", err)
			}
			switch {
			case m.Left.Meta.Key == "mark":
				var p struct{ Prefix struct{ Addr, Len uint32 } }
				if err := json.Unmarshal(m.Right, &p); err != nil {
					parts = append(parts, "mark "+m.Op+" "+string(m.Right))
					continue
				}
				parts = append(parts, fmt.Sprintf("mark %#x/%d", p.Prefix.Addr, p.Prefix.Len))
			case m.Left.Ct.Key == "state":
				var states []string
				if err := json.Unmarshal(m.Right, &states); err != nil {
					t.Fatalf("parse ct state: %v", err)
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
