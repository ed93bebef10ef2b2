package dockerlab

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"outcall.dev/outcall/internal/privtest"
	"outcall.dev/outcall/test/lab"
)

// The link between the root namespace and the upstream namespace: a /30
// of the benchmark range.
var (
	LinkRoot = netip.MustParseAddr("198.18.255.253") // the root namespace's end
	LinkUp   = netip.MustParseAddr("198.18.255.254") // the upstream namespace's end
	linkNet  = netip.MustParsePrefix("198.18.255.252/30")
)

// TestPrefixes are routed from the root namespace into the upstream
// namespace: the documentation ranges and the half of the benchmark range
// that DockerBlock does not hold. One that the host routes itself (part of
// it or more: on some machines 192.0.2.0/24 is the real uplink) is never
// routed, and Check refuses its addresses.
var TestPrefixes = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("198.18.0.0/16"),
}

// routesWait bounds the wait for another Upstream, of this or another test
// binary, to give up the root namespace's test routes: `go test ./...`
// runs the Docker packages side by side, and each holds the routes for as
// long as its daemon runs in the root namespace.
const routesWait = 15 * time.Minute

// Upstream is the internet of a Docker test: test/lab's upstream namespace
// (its DNS, HTTP and echo servers on documentation addresses) connected to
// the root namespace, where Docker and the daemon under test run, by the
// veth Link, with routes for exactly Routed through it. Its containers
// resolve names at the upstream namespace's lab.Upstream.
type Upstream struct {
	*Session
	Lab      *lab.Lab       // the namespaces; Lab.Host is not used
	NS       string         // the upstream namespace (Lab.Up)
	Link     string         // the root namespace's end of the link
	Routed   []netip.Prefix // test prefixes routed into NS
	Unrouted []netip.Prefix // test prefixes the host routes itself

	linkIndex int
}

// NewUpstream builds the upstream namespace and its link and routes, and
// checks that lab.Upstream and lab.Upstream2 route into it; everything is
// removed at the end of t, also on failure (each removal registered before
// the creation). It skips (fails under OUTCALL_REQUIRE_PRIVILEGED=1) where
// it cannot run: no Docker, no iproute2, or a host that already routes
// 198.51.100.0/24 or the link's /30 itself. The routes are the machine's:
// one Upstream exists at a time, and NewUpstream waits (at most 5 minutes)
// for another one, of this or another test binary, to end.
func NewUpstream(t testing.TB) *Upstream {
	t.Helper()
	d := RequireDocker(t)
	for _, tool := range []string{"ip", "nsenter", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			privtest.Skip(t, tool+" not installed")
		}
	}
	s := &Session{Docker: d, t: t}
	t.Cleanup(s.close) // last: Docker objects left, then the session lock
	routesLock, err := lockRoutes(routesWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { routesLock.Close() }) // after the link and its routes are gone
	l := lab.New(t)
	s.register(l.Prefix)
	u := &Upstream{Session: s, Lab: l, NS: l.Up, Link: l.Prefix + "r"}

	used, err := hostPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	if overlapsAny(linkNet, used) {
		privtest.Skip(t, fmt.Sprintf("the host routes part of %s itself: no room for the link to the upstream namespace", linkNet))
	}
	for _, p := range TestPrefixes {
		if overlapsAny(p, used) {
			u.Unrouted = append(u.Unrouted, p)
			t.Logf("not routing %s into the upstream namespace: the host routes it itself", p)
		} else {
			u.Routed = append(u.Routed, p)
		}
	}
	if !u.routed(netip.MustParseAddr(lab.Upstream)) {
		privtest.Skip(t, "the host routes "+lab.Upstream+" itself: the lab's upstream cannot be reached safely")
	}

	t.Cleanup(u.removeLink)
	peer := l.Prefix + "d"
	l.Run("ip", "link", "add", u.Link, "type", "veth", "peer", "name", peer, "netns", l.Up)
	l.Run("ip", "addr", "add", netip.PrefixFrom(LinkRoot, linkNet.Bits()).String(), "dev", u.Link)
	l.Run("ip", "link", "set", u.Link, "up")
	l.InNS(l.Up, "ip", "addr", "add", netip.PrefixFrom(LinkUp, linkNet.Bits()).String(), "dev", peer)
	l.InNS(l.Up, "ip", "link", "set", peer, "up")
	// The upstream namespace never forwards: what reaches it ends there.
	l.InNS(l.Up, "sysctl", "-qw", "net.ipv4.ip_forward=0")
	l.InNS(l.Up, "ip", "route", "add", DockerBlock.String(), "via", LinkRoot.String())
	for _, p := range u.Routed {
		l.Run("ip", "route", "add", p.String(), "via", LinkUp.String(), "dev", u.Link)
	}
	link, err := netlink.LinkByName(u.Link)
	if err != nil {
		t.Fatalf("link %s: %v", u.Link, err)
	}
	u.linkIndex = link.Attrs().Index
	u.DNS = netip.MustParseAddr(lab.Upstream)
	u.RequireRoutes(t, netip.MustParseAddr(lab.Upstream), netip.MustParseAddr(lab.Upstream2))
	return u
}

// removeLink deletes the routes and the link; the upstream namespace goes
// with the lab.
func (u *Upstream) removeLink() {
	for _, p := range u.Routed {
		_ = exec.Command("ip", "route", "del", p.String(), "via", LinkUp.String(), "dev", u.Link).Run()
	}
	if _, err := netlink.LinkByName(u.Link); err == nil {
		if out, err := exec.Command("ip", "link", "del", u.Link).CombinedOutput(); err != nil {
			u.t.Errorf("ip link del %s: %v: %s", u.Link, err, out)
		}
	}
}

func (u *Upstream) routed(a netip.Addr) bool {
	return slices.ContainsFunc(u.Routed, func(p netip.Prefix) bool { return p.Contains(a) })
}

// Check asks the kernel, sending nothing, whether a packet from the root
// namespace to dst would go into the upstream namespace and end there: dst
// is in a routed test prefix, the root namespace routes it out of Link via
// LinkUp (policy rules and all tables considered, as `ip route get`), and
// it is an address of the upstream namespace.
func (u *Upstream) Check(dst netip.Addr) error {
	return u.check(dst, nil)
}

// CheckFrom is Check for a packet the root namespace forwards: one from
// src arriving on the interface iif, such as a container's on its
// network's bridge.
func (u *Upstream) CheckFrom(dst, src netip.Addr, iif string) error {
	if !src.Is4() || iif == "" {
		return fmt.Errorf("check %s from %v on %q: need an IPv4 source and an interface", dst, src, iif)
	}
	return u.check(dst, &netlink.RouteGetOptions{Iif: iif, SrcAddr: net.IP(src.AsSlice())})
}

func (u *Upstream) check(dst netip.Addr, opts *netlink.RouteGetOptions) error {
	if !dst.Is4() {
		return fmt.Errorf("%v: the upstream namespace has IPv4 addresses only", dst)
	}
	if !u.routed(dst) {
		return fmt.Errorf("%s is in no test prefix routed into the upstream namespace (%v)", dst, u.Routed)
	}
	return u.kernelCheck(dst, opts)
}

// kernelCheck is the kernel's half of check: the lookups in the root and
// the upstream namespaces.
func (u *Upstream) kernelCheck(dst netip.Addr, opts *netlink.RouteGetOptions) error {
	routes, err := netlink.RouteGetWithOptions(net.IP(dst.AsSlice()), opts)
	if err != nil {
		return fmt.Errorf("route get %s in the root namespace: %w", dst, err)
	}
	if err := judgeRoot(dst, routes, u.linkIndex, LinkUp, linkName); err != nil {
		return err
	}
	h, err := netns.GetFromName(u.NS)
	if err != nil {
		return fmt.Errorf("upstream namespace %s: %w", u.NS, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return fmt.Errorf("upstream namespace %s: %w", u.NS, err)
	}
	defer nh.Close()
	routes, err = nh.RouteGet(net.IP(dst.AsSlice()))
	if err != nil && !errors.Is(err, unix.ENETUNREACH) {
		return fmt.Errorf("route get %s in the upstream namespace: %w", dst, err)
	}
	// Unreachable there is no route: judged as such.
	return judgeUpstream(dst, routes)
}

// linkName names an interface of the root namespace for a message.
func linkName(index int) string {
	if l, err := netlink.LinkByIndex(index); err == nil {
		return l.Attrs().Name
	}
	return "ifindex " + strconv.Itoa(index)
}

// RequireRoutes fails t unless every dst passes Check.
func (u *Upstream) RequireRoutes(t testing.TB, dsts ...netip.Addr) {
	t.Helper()
	var errs []error
	for _, dst := range dsts {
		errs = append(errs, u.Check(dst))
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("refusing to send: %v", err)
	}
}

// AddAddress makes a, of a routed test prefix, an address of the upstream
// namespace (on its loopback), so that a test can serve on it or aim at it.
func (u *Upstream) AddAddress(t testing.TB, a netip.Addr) {
	t.Helper()
	if !u.routed(a) {
		t.Fatalf("AddAddress %s: not in a routed test prefix (%v)", a, u.Routed)
	}
	if a == LinkUp || linkNet.Contains(a) {
		t.Fatalf("AddAddress %s: the link's own", a)
	}
	u.Lab.InNS(u.NS, "ip", "addr", "add", netip.PrefixFrom(a, 32).String(), "dev", "lo")
}

// RouteBack routes p from the upstream namespace to the root namespace, for
// sources that reach the upstream without Docker's masquerade (DockerBlock
// is routed back already). p must not overlap a routed test prefix.
func (u *Upstream) RouteBack(t testing.TB, p netip.Prefix) {
	t.Helper()
	if overlapsAny(p, u.Routed) || p.Bits() == 0 {
		t.Fatalf("RouteBack %s: overlaps the prefixes routed into the upstream namespace", p)
	}
	u.Lab.InNS(u.NS, "ip", "route", "replace", p.Masked().String(), "via", LinkRoot.String())
}

// Run is Session.Run after the checks: the container's resolver and every
// target must pass Check, and CheckFrom from the container's address on
// its network's bridge, before it starts.
func (u *Upstream) Run(t testing.TB, name string, o RunOptions) (string, error) {
	t.Helper()
	u.prepare(t, &o)
	return u.run(t, name, o)
}

// Start is Session.Start after the checks of Run.
func (u *Upstream) Start(t testing.TB, name string, o RunOptions) *Container {
	t.Helper()
	u.prepare(t, &o)
	return u.start(t, name, o)
}

func (u *Upstream) prepare(t testing.TB, o *RunOptions) {
	t.Helper()
	if o.Network == nil {
		if len(o.Targets) > 0 {
			t.Fatal("targets without a network")
		}
		return
	}
	if !o.IP.IsValid() {
		o.IP = o.Network.NextIP()
	}
	if !o.DNS.IsValid() {
		o.DNS = u.DNS
	}
	var errs []error
	for _, dst := range append([]netip.Addr{o.DNS}, o.Targets...) {
		errs = append(errs, u.Check(dst), u.CheckFrom(dst, o.IP, o.Network.Bridge))
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("refusing to start a container that would send elsewhere: %v", err)
	}
}

// HTTPServer is an HTTP server in the upstream namespace. It records every
// request it answers.
type HTTPServer struct {
	Addr netip.AddrPort

	mu       sync.Mutex
	requests []Request
}

// Request is what an HTTPServer saw of one request.
type Request struct {
	Remote netip.AddrPort
	Method string
	Host   string
	Path   string
}

// Requests returns the requests answered so far.
func (s *HTTPServer) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// ServeHTTP serves h on addr in the upstream namespace until the test ends
// (adding the address there if need be) and records each request.
func (u *Upstream) ServeHTTP(t testing.TB, addr netip.AddrPort, h http.Handler) *HTTPServer {
	t.Helper()
	if u.Check(addr.Addr()) != nil {
		u.AddAddress(t, addr.Addr())
		u.RequireRoutes(t, addr.Addr())
	}
	s := &HTTPServer{Addr: addr}
	var ln net.Listener
	if err := lab.Do(u.NS, func() (err error) { ln, err = net.Listen("tcp4", addr.String()); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, u.NS, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			remote, _ := netip.ParseAddrPort(r.RemoteAddr)
			s.mu.Lock()
			s.requests = append(s.requests, Request{Remote: remote, Method: r.Method, Host: r.Host, Path: r.URL.Path})
			s.mu.Unlock()
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: 10 * time.Second,
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return s
}
