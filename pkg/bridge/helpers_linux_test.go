package bridge

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// skipPrivileged skips a test that cannot run here, except under
// OUTCALL_REQUIRE_PRIVILEGED=1 (CI), where not running is a failure.
func skipPrivileged(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("OUTCALL_REQUIRE_PRIVILEGED") == "1" {
		t.Fatalf("cannot run (OUTCALL_REQUIRE_PRIVILEGED=1): %s", reason)
	}
	t.Skip(reason)
}

// testNS is a network namespace owned by one test and deleted with it.
type testNS struct {
	name string
	ns   netns.NsHandle
	h    *netlink.Handle
}

func newTestNS(t *testing.T) *testNS {
	t.Helper()
	if os.Geteuid() != 0 {
		skipPrivileged(t, "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces and bridges")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skipPrivileged(t, "needs iproute2 'ip' to create named network namespaces")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "oc-test-br-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Logf("cleanup: ip netns del %s: %v: %s", name, err, out)
		}
	})
	runCmd(t, "ip", "netns", "add", name)
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	t.Cleanup(h.Close)
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("set lo up in %s: %v", name, err)
	}
	return &testNS{name: name, ns: ns, h: h}
}

func runCmd(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

func newTestManager(t *testing.T, h *netlink.Handle) *Manager {
	return NewManager(h, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})))
}

func mustLink(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

// addVeth creates a veth pair in n; the peer goes to peerNS when given.
func addVeth(t *testing.T, n *testNS, name, peer string, peerNS *testNS) netlink.Link {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = name
	v := &netlink.Veth{LinkAttrs: la, PeerName: peer}
	if peerNS != nil {
		v.PeerNamespace = netlink.NsFd(int(peerNS.ns))
	}
	if err := n.h.LinkAdd(v); err != nil {
		t.Fatalf("add veth %s/%s: %v", name, peer, err)
	}
	return mustLink(t, n.h, name)
}

func enslave(t *testing.T, h *netlink.Handle, port netlink.Link, bridgeIndex int) {
	t.Helper()
	if err := h.LinkSetMasterByIndex(port, bridgeIndex); err != nil {
		t.Fatalf("set master of %s: %v", port.Attrs().Name, err)
	}
	if err := h.LinkSetUp(port); err != nil {
		t.Fatalf("set %s up: %v", port.Attrs().Name, err)
	}
}

func v4Addrs(t *testing.T, h *netlink.Handle, l netlink.Link) []netlink.Addr {
	t.Helper()
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("addresses of %s: %v", l.Attrs().Name, err)
	}
	return addrs
}

// inNS runs fn on an OS thread switched into ns. The thread stays locked
// and dies with the goroutine, so the switched namespace can never leak to
// other goroutines.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// listenTCP serves accept-and-close on addr inside n until the test ends.
func listenTCP(t *testing.T, n *testNS, addr netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	err := inNS(n.ns, func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, n.name, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// dialTCP connects from inside n to addr once, with a bounded timeout.
func dialTCP(n *testNS, addr netip.AddrPort, timeout time.Duration) error {
	return inNS(n.ns, func() error {
		c, err := net.DialTimeout("tcp", addr.String(), timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// dialTCPEventually retries until a connect succeeds or total elapses, so
// the test does not race the freshly enslaved port coming up.
func dialTCPEventually(n *testNS, addr netip.AddrPort, total time.Duration) error {
	deadline := time.Now().Add(total)
	for {
		err := dialTCP(n, addr, time.Second)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
