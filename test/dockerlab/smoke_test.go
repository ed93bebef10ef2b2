package dockerlab

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"outcall.dev/outcall/test/lab"
)

// The harness's positive control: a container on a plain Docker bridge
// network (Docker's defaults: masquerade, iptables rules) reaches an HTTP
// server in the upstream namespace through the harness's routes, and the
// server sees the request arrive over the link from the root namespace.
func TestSmoke(t *testing.T) {
	u := NewUpstream(t)
	token := make([]byte, 8)
	_, _ = rand.Read(token)
	body := "hello from the upstream namespace " + hex.EncodeToString(token)
	target := netip.AddrPortFrom(netip.MustParseAddr(lab.Upstream), 8080)
	srv := u.ServeHTTP(t, target, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, body)
	}))
	n := u.Network(t, "smoke", netip.Prefix{})
	t.Logf("network %s (%s) on %s, bridge %s; upstream link %s (%s → %s); routed %v, not routed %v",
		n.Name, n.ID[:12], n.Subnet, n.Bridge, u.Link, LinkRoot, LinkUp, u.Routed, u.Unrouted)

	ip := n.NextIP()
	// What Run checks before the container starts, shown: from the root
	// namespace, and forwarded from the container's address on the bridge.
	for _, err := range []error{u.Check(target.Addr()), u.CheckFrom(target.Addr(), ip, n.Bridge)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	out, err := u.Run(t, "wget", RunOptions{Network: n, IP: ip, Targets: []netip.Addr{target.Addr()},
		// Not wget -T: busybox 1.35's crashes with it.
		Cmd: []string{"timeout", "10", "wget", "-q", "-O", "-", "http://" + target.String() + "/smoke"}})
	if err != nil {
		t.Fatalf("wget from the container: %v\n%s", err, out)
	}
	if strings.TrimSpace(out) != body {
		t.Fatalf("container got %q, want %q", out, body)
	}
	reqs := srv.Requests()
	if len(reqs) != 1 || reqs[0].Path != "/smoke" {
		t.Fatalf("upstream server saw %+v, want one GET /smoke", reqs)
	}
	// Docker masqueraded the container's address to the root
	// namespace's end of the link: the request crossed the harness's
	// veth, and came from nowhere else.
	if reqs[0].Remote.Addr() != LinkRoot {
		t.Fatalf("request came from %s, want %s (the root namespace's end of the link)", reqs[0].Remote, LinkRoot)
	}
	t.Logf("container %s at %s fetched %q from %s; the server saw %s %s from %s",
		u.Name("wget"), ip, strings.TrimSpace(out), target, reqs[0].Method, reqs[0].Path, reqs[0].Remote)
}

// The checker refuses, without sending anything, every address that would
// not go into the upstream namespace and end there; the lab's responders
// are the positive controls.
func TestCheckRefuses(t *testing.T) {
	u := NewUpstream(t)
	n := u.Network(t, "check", netip.Prefix{})
	src := n.NextIP()
	for _, a := range []string{lab.Upstream, lab.Upstream2} {
		dst := netip.MustParseAddr(a)
		if err := u.Check(dst); err != nil {
			t.Errorf("positive control %s refused: %v", dst, err)
		}
		if err := u.CheckFrom(dst, src, n.Bridge); err != nil {
			t.Errorf("positive control %s from %s on %s refused: %v", dst, src, n.Bridge, err)
		}
	}
	refused := []string{
		"9.9.9.9",          // a public address: the host's default route
		"10.1.2.3",         // someone else's private network
		"127.0.0.1",        // loopback of the root namespace
		LinkRoot.String(),  // the root namespace's own end of the link
		n.Gateway.String(), // the Docker bridge's address
		"203.0.113.77",     // routed into the upstream namespace, but no address there
		"198.19.0.1",       // DockerBlock: the host side
	}
	for _, p := range u.Unrouted { // the host's own networks (on some machines 192.0.2.0/24)
		refused = append(refused, p.Addr().Next().String())
	}
	for _, a := range refused {
		dst := netip.MustParseAddr(a)
		err := u.Check(dst)
		if err == nil {
			t.Errorf("%s accepted", dst)
			continue
		}
		t.Logf("refused %s: %v", dst, err)
		if err := u.CheckFrom(dst, src, n.Bridge); err == nil {
			t.Errorf("%s from %s on %s accepted", dst, src, n.Bridge)
		}
		// The kernel's verdict alone, without the prefix list, refuses
		// it too.
		if err := u.kernelCheck(dst, nil); err == nil {
			t.Errorf("%s: the kernel lookups accept it", dst)
		} else {
			t.Logf("  kernel: %v", err)
		}
	}
	for _, a := range []string{lab.Upstream, lab.Upstream2} {
		if err := u.kernelCheck(netip.MustParseAddr(a), nil); err != nil {
			t.Errorf("positive control %s: the kernel lookups refuse it: %v", a, err)
		}
	}
	// An address added to the upstream namespace passes.
	extra := netip.MustParseAddr("203.0.113.77")
	u.AddAddress(t, extra)
	if err := u.Check(extra); err != nil {
		t.Errorf("%s after AddAddress: %v", extra, err)
	}
	// The kernel decides, not the prefix list: a more specific route
	// that takes the address elsewhere (here onto the Docker bridge, a
	// local dead end) makes it refused.
	hijack := netip.PrefixFrom(extra, 32).String()
	t.Cleanup(func() { _ = exec.Command("ip", "route", "del", hijack, "dev", n.Bridge).Run() })
	u.Lab.Run("ip", "route", "add", hijack, "dev", n.Bridge)
	if err := u.Check(extra); err == nil || !strings.Contains(err.Error(), n.Bridge) {
		t.Errorf("%s routed onto %s: Check says %v", extra, n.Bridge, err)
	} else {
		t.Logf("hijacked %s refused: %v", extra, err)
	}
}
