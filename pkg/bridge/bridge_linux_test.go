package bridge

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const testBridge = "octbr0"

var testGateway = netip.MustParsePrefix("10.201.0.1/24")

func TestManagerRejectsInvalidInput(t *testing.T) {
	m := NewManager(nil, nil) // every call below must fail before touching the kernel
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"ensure bad name", func() error { _, _, err := m.Ensure("a b", testGateway); return err }, `invalid bridge name "a b"`},
		{"ensure no gateway", func() error { _, _, err := m.Ensure(testBridge, netip.Prefix{}); return err }, "invalid gateway address"},
		{"status bad name", func() error { _, err := m.Status(""); return err }, "empty"},
		{"delete bad name", func() error { return m.Delete("..") }, "reserved"},
		{"ports of index 0", func() error { _, err := m.Ports(0); return err }, "invalid bridge ifindex 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestEnsureCreates(t *testing.T) {
	n := newTestNS(t)
	m := newTestManager(t, n.h)
	idx, created, err := m.Ensure(testBridge, testGateway)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if !created || idx <= 0 {
		t.Fatalf("Ensure = (%d, %v), want a new ifindex and created=true", idx, created)
	}
	link := mustLink(t, n.h, testBridge)
	br, ok := link.(*netlink.Bridge)
	if !ok {
		t.Fatalf("link type %q, want bridge", link.Type())
	}
	if br.Index != idx || br.Flags&net.FlagUp == 0 {
		t.Fatalf("bridge index %d flags %v, want index %d and up", br.Index, br.Flags, idx)
	}
	addrs := v4Addrs(t, n.h, br)
	if len(addrs) != 1 || addrs[0].IPNet.String() != testGateway.String() {
		t.Fatalf("addresses %v, want only %s", addrs, testGateway)
	}
}

func TestEnsureIdempotent(t *testing.T) {
	n := newTestNS(t)
	m := newTestManager(t, n.h)
	first, _, err := m.Ensure(testBridge, testGateway)
	if err != nil {
		t.Fatalf("first Ensure: %v", err)
	}
	again, created, err := m.Ensure(testBridge, testGateway)
	if err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if again != first || created {
		t.Fatalf("second Ensure = (%d, %v), want (%d, false)", again, created, first)
	}
	if addrs := v4Addrs(t, n.h, mustLink(t, n.h, testBridge)); len(addrs) != 1 {
		t.Fatalf("addresses after two Ensure calls: %v, want exactly one", addrs)
	}
}

func TestEnsureConcurrent(t *testing.T) {
	n := newTestNS(t)
	m := newTestManager(t, n.h)
	const callers = 8
	type result struct {
		idx     int
		created bool
		err     error
	}
	results := make([]result, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			idx, created, err := m.Ensure(testBridge, testGateway)
			results[i] = result{idx, created, err}
		})
	}
	wg.Wait()
	createdCount := 0
	for _, r := range results {
		if r.err != nil || r.idx != results[0].idx {
			t.Fatalf("results %+v: want no errors and one ifindex", results)
		}
		if r.created {
			createdCount++
		}
	}
	if createdCount != 1 {
		t.Fatalf("%d callers saw created=true, want 1", createdCount)
	}
	if addrs := v4Addrs(t, n.h, mustLink(t, n.h, testBridge)); len(addrs) != 1 {
		t.Fatalf("addresses %v, want exactly one", addrs)
	}
}

func TestEnsureAttachesExisting(t *testing.T) {
	n := newTestNS(t)
	runCmd(t, "ip", "-n", n.name, "link", "add", testBridge, "type", "bridge")
	pre := mustLink(t, n.h, testBridge)
	port := addVeth(t, n, "octv0", "octv1", nil)
	enslave(t, n.h, port, pre.Attrs().Index)

	m := newTestManager(t, n.h)
	idx, created, err := m.Ensure(testBridge, testGateway)
	if err != nil {
		t.Fatalf("Ensure on existing bridge: %v", err)
	}
	if idx != pre.Attrs().Index || created {
		t.Fatalf("Ensure = (%d, %v), want (%d, false)", idx, created, pre.Attrs().Index)
	}
	st, err := m.Status(testBridge)
	if err != nil || !st.Up || st.Index != idx {
		t.Fatalf("Status = %+v, %v; want up with index %d", st, err, idx)
	}
	if addrs := v4Addrs(t, n.h, pre); len(addrs) != 1 || addrs[0].IPNet.String() != testGateway.String() {
		t.Fatalf("addresses %v, want only %s", addrs, testGateway)
	}
	if master := mustLink(t, n.h, "octv0").Attrs().MasterIndex; master != idx {
		t.Fatalf("existing port has master %d after attach, want %d", master, idx)
	}
}

func TestEnsureRefusesNonBridge(t *testing.T) {
	tests := []struct {
		kind string
		add  []string // ip arguments after "-n <ns>"
	}{
		{"veth", []string{"link", "add", testBridge, "type", "veth", "peer", "name", "octpeer0"}},
		{"ifb", []string{"link", "add", testBridge, "type", "ifb"}},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			n := newTestNS(t)
			runCmd(t, "ip", append([]string{"-n", n.name}, tt.add...)...)
			before := mustLink(t, n.h, testBridge)
			m := newTestManager(t, n.h)

			_, _, err := m.Ensure(testBridge, testGateway)
			want := `bridge operation failed: attach bridge: link "` + testBridge + `" exists and is a ` + tt.kind + `, not a bridge`
			var be *Error
			if err == nil || err.Error() != want || !errors.As(err, &be) || be.Op != "attach bridge" || !errors.Is(err, ErrNotBridge) {
				t.Fatalf("Ensure error = %v, want %q", err, want)
			}
			if _, err := m.Status(testBridge); !errors.Is(err, ErrNotBridge) {
				t.Errorf("Status error = %v, want ErrNotBridge", err)
			}
			if err := m.Delete(testBridge); !errors.Is(err, ErrNotBridge) {
				t.Errorf("Delete error = %v, want ErrNotBridge", err)
			}

			after := mustLink(t, n.h, testBridge)
			if after.Attrs().Index != before.Attrs().Index || after.Type() != tt.kind ||
				after.Attrs().Flags&net.FlagUp != 0 || after.Attrs().MasterIndex != 0 {
				t.Fatalf("link changed: before %+v, after %+v", before.Attrs(), after.Attrs())
			}
			if addrs := v4Addrs(t, n.h, after); len(addrs) != 0 {
				t.Fatalf("link got addresses %v, want none", addrs)
			}
		})
	}
}

func TestStatusAndDelete(t *testing.T) {
	n := newTestNS(t)
	m := newTestManager(t, n.h)

	absent := Status{Name: testBridge}
	if st, err := m.Status(testBridge); err != nil || st != absent {
		t.Fatalf("Status of absent bridge = %+v, %v; want %+v", st, err, absent)
	}
	if err := m.Delete(testBridge); err != nil {
		t.Fatalf("Delete of absent bridge: %v", err)
	}

	idx, _, err := m.Ensure(testBridge, testGateway)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	st, err := m.Status(testBridge)
	if err != nil || !st.Exists || !st.Up || st.Index != idx || st.Name != testBridge {
		t.Fatalf("Status = %+v, %v; want existing, up, index %d", st, err, idx)
	}
	if err := n.h.LinkSetDown(mustLink(t, n.h, testBridge)); err != nil {
		t.Fatalf("set down: %v", err)
	}
	if st, err := m.Status(testBridge); err != nil || !st.Exists || st.Up {
		t.Fatalf("Status after set down = %+v, %v; want existing and not up", st, err)
	}

	if err := m.Delete(testBridge); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := n.h.LinkByName(testBridge); err == nil {
		t.Fatal("bridge still exists after Delete")
	}
	if st, err := m.Status(testBridge); err != nil || st != absent {
		t.Fatalf("Status after Delete = %+v, %v; want %+v", st, err, absent)
	}
	if err := m.Delete(testBridge); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

func TestPorts(t *testing.T) {
	n := newTestNS(t)
	m := newTestManager(t, n.h)
	idx, _, err := m.Ensure(testBridge, testGateway)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if ports, err := m.Ports(idx); err != nil || len(ports) != 0 {
		t.Fatalf("Ports of empty bridge = %v, %v; want none", ports, err)
	}
	want := map[string]Port{}
	for _, name := range []string{"octv0", "octv2"} {
		l := addVeth(t, n, name, name+"p", nil)
		enslave(t, n.h, l, idx)
		want[name] = Port{Index: l.Attrs().Index, Name: name, Bridge: idx, HardwareAddr: l.Attrs().HardwareAddr}
	}
	addVeth(t, n, "octv4", "octv4p", nil) // not on the bridge

	ports, err := m.Ports(idx)
	if err != nil {
		t.Fatalf("Ports: %v", err)
	}
	if len(ports) != len(want) {
		t.Fatalf("Ports = %+v, want %d ports", ports, len(want))
	}
	for _, p := range ports {
		w, ok := want[p.Name]
		if !ok || p.Index != w.Index || p.Bridge != w.Bridge || p.HardwareAddr.String() != w.HardwareAddr.String() {
			t.Errorf("port %+v, want %+v", p, w)
		}
	}
}

// TestPortReachesGateway checks with real frames that a port of the bridge
// forwards: a peer namespace on a veth port connects to the gateway address.
func TestPortReachesGateway(t *testing.T) {
	br, peer := newTestNS(t), newTestNS(t)
	m := newTestManager(t, br.h)
	idx, _, err := m.Ensure(testBridge, testGateway)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	port := addVeth(t, br, "octv0", "octp0", peer)
	enslave(t, br.h, port, idx)
	peerLink := mustLink(t, peer.h, "octp0")
	if err := peer.h.AddrAdd(peerLink, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("10.201.0.2/24"))}); err != nil {
		t.Fatalf("peer address: %v", err)
	}
	if err := peer.h.LinkSetUp(peerLink); err != nil {
		t.Fatalf("peer up: %v", err)
	}
	target := netip.AddrPortFrom(testGateway.Addr(), 7777)
	listenTCP(t, br, target)
	if err := dialTCPEventually(peer, target, 5*time.Second); err != nil {
		t.Fatalf("peer cannot reach the gateway through the bridge: %v", err)
	}
}

func TestWatchPorts(t *testing.T) {
	n := newTestNS(t)
	m := newTestManager(t, n.h)
	idx, _, err := m.Ensure(testBridge, testGateway)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	early := addVeth(t, n, "octv0", "octv0p", nil)
	enslave(t, n.h, early, idx)
	runCmd(t, "ip", "-n", n.name, "link", "add", "octbr9", "type", "bridge") // not ours

	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan PortEvent, 16)
	watchErr := make(chan error, 1)
	go func() { watchErr <- WatchPorts(ctx, n.ns, func(i int) bool { return i == idx }, events) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-watchErr:
			if err != nil {
				t.Errorf("WatchPorts returned %v after cancel, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("WatchPorts did not return within 5s of cancel")
		}
	})

	expect := func(name string, joined bool) {
		t.Helper()
		select {
		case ev := <-events:
			if ev.Port.Name != name || ev.Joined != joined || (joined && ev.Port.Bridge != idx) || ev.Port.Index <= 0 {
				t.Fatalf("event %+v, want port %s joined=%v on bridge %d", ev, name, joined, idx)
			}
		case err := <-watchErr:
			t.Fatalf("WatchPorts ended early: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatalf("no event for %s joined=%v within 5s", name, joined)
		}
	}

	expect("octv0", true) // existing port, from the initial dump

	other := mustLink(t, n.h, "octbr9")
	late := addVeth(t, n, "octv1", "octv1p", nil)
	enslave(t, n.h, late, other.Attrs().Index) // foreign bridge: no event
	if err := n.h.LinkSetMasterByIndex(late, idx); err != nil {
		t.Fatalf("move to bridge: %v", err)
	}
	expect("octv1", true)

	if err := n.h.LinkSetNoMaster(late); err != nil {
		t.Fatalf("nomaster: %v", err)
	}
	expect("octv1", false)

	if err := n.h.LinkSetMasterByIndex(late, idx); err != nil {
		t.Fatalf("re-enslave: %v", err)
	}
	expect("octv1", true)

	if err := n.h.LinkDel(late); err != nil {
		t.Fatalf("delete: %v", err)
	}
	expect("octv1", false)

	select {
	case ev := <-events:
		t.Fatalf("unexpected extra event %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestWatchPortsSubscriptionError(t *testing.T) {
	// An fd that is not a namespace: the subscription cannot start, and the
	// caller must hear about it instead of watching nothing.
	err := WatchPorts(context.Background(), netns.NsHandle(1<<20), func(int) bool { return true }, make(chan PortEvent))
	if err == nil || !strings.Contains(err.Error(), "subscribe to link updates") {
		t.Fatalf("WatchPorts with a bad namespace = %v, want a subscribe error", err)
	}
}
