package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/bridge"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/events"
	"outcall.dev/outcall/pkg/grants"
	"outcall.dev/outcall/pkg/network/networktest"
)

// failingDP is the fake datapath whose grant deletes fail on demand.
type failingDP struct {
	*networktest.Datapath
	mu sync.Mutex
	// failures is how many grant deletes fail from now on (negative:
	// all of them).
	failures int
}

func (f *failingDP) DeleteGrant(k datapath.GrantKey) (bool, error) {
	f.mu.Lock()
	fail := f.failures != 0
	if f.failures > 0 {
		f.failures--
	}
	f.mu.Unlock()
	if fail {
		return false, errors.New("fake: kernel refuses the delete")
	}
	return f.Datapath.DeleteGrant(k)
}

func (f *failingDP) setFailures(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures = n
}

// grantWorld is a Controller over fakes whose datapath can refuse grant
// deletes, with endpoint a1 on port 11 and a2 on port 12.
type grantWorld struct {
	*testController
	fdp *failingDP
}

func newGrantWorld(t *testing.T) *grantWorld {
	t.Helper()
	c := &networktest.Calls{}
	td := &testController{c: c, dp: networktest.NewDatapath(c), fl: networktest.NewFloor(c), br: networktest.NewBridges(c)}
	td.br.Bridges["outcall0"] = &networktest.Bridge{Index: 10, MAC: testBridgeMAC, Ports: []bridge.Port{
		{Index: 11, Name: "veth-a1", Bridge: 10, HardwareAddr: testPortMAC},
		{Index: 12, Name: "veth-a2", Bridge: 10},
	}}
	w := &grantWorld{testController: td, fdp: &failingDP{Datapath: td.dp}}
	dir := t.TempDir()
	reg, err := endpoint.OpenWithOptions(endpoint.Options{Path: filepath.Join(dir, "endpoints.json"), DefaultNetwork: api.DefaultNetworkName})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := New(Options{
		Default:      Network{Name: api.DefaultNetworkName, Bridge: "outcall0", Gateway: netip.MustParsePrefix("10.200.0.1/24")},
		SubnetBlock:  netip.MustParsePrefix("10.200.0.0/16"),
		StatePath:    filepath.Join(dir, "networks.json"),
		OpenDatapath: func(datapath.Options) (Datapath, error) { return w.fdp, nil },
		Floor:        td.fl, Bridges: td.br, Endpoints: reg, Events: events.New(),
		HostAddrs:  func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("192.0.2.1")}, nil },
		HostRoutes: func() ([]netip.Prefix, error) { return nil, nil },
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	td.Controller = ctl
	td.open(t)
	for _, e := range []api.EndpointAddRequest{
		{Name: "a1", Interface: "veth-a1", IP: "10.200.0.10", MAC: "02:00:0a:c8:00:0a"},
		{Name: "a2", Interface: "veth-a2", IP: "10.200.0.11", MAC: "02:00:0a:c8:00:0b"},
	} {
		if _, err := td.AddEndpoint(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

func (w *grantWorld) allow(t *testing.T, req api.AllowRequest) api.ActiveRule {
	t.Helper()
	r, err := w.Allow(context.Background(), req)
	if err != nil {
		t.Fatalf("Allow(%+v) = %v", req, err)
	}
	return r
}

func (w *grantWorld) kernel() []datapath.GrantKey {
	gs, _ := w.dp.Grants()
	ks := make([]datapath.GrantKey, 0, len(gs))
	for _, g := range gs {
		ks = append(ks, g.GrantKey)
	}
	return ks
}

// TestAllowCIDR: a canonical CIDR becomes one prefix entry (a /32 an
// exact one), listed as given; a prefix inside an Outcall subnet is
// refused always, one inside a restricted range without the flag; a
// broader one is accepted (the fences keep the restricted parts closed);
// revoking it deletes its entry and ends its flows.
func TestAllowCIDR(t *testing.T) {
	w := newGrantWorld(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  api.AllowRequest
		want string
	}{
		{"not canonical", api.AllowRequest{Container: "a1", Destination: "192.168.0.1/24"}, "canonical form (192.168.0.0/24)"},
		{"inside the subnet block", api.AllowRequest{Container: "a1", Destination: "10.200.7.0/24", AllowPrivate: true}, "Outcall subnet"},
		{"the subnet block itself", api.AllowRequest{Container: "a1", Destination: "10.200.0.0/16", AllowPrivate: true}, "Outcall subnet"},
		{"inside a private range", api.AllowRequest{Container: "a1", Destination: "10.1.0.0/16"}, "restricted (inside 10.0.0.0/8)"},
		{"the metadata range", api.AllowRequest{Container: "a1", Destination: "169.254.0.0/16"}, "--allow-private"},
		{"ipv6", api.AllowRequest{Container: "a1", Destination: "2001:db8::/32"}, "only IPv4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := w.Allow(ctx, tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Allow = %v, want an error containing %q", err, tc.want)
			}
			if len(w.kernel()) != 0 {
				t.Fatalf("a refused grant reached the datapath: %v", w.kernel())
			}
		})
	}
	// Positive controls.
	w.allow(t, api.AllowRequest{Container: "a1", Destination: "203.0.113.0/24", Protocol: ptr("tcp"), Port: ptr(uint16(443))})
	w.allow(t, api.AllowRequest{Container: "a1", Destination: "0.0.0.0/0", Protocol: ptr("udp")})
	w.allow(t, api.AllowRequest{Container: "a1", Destination: "10.1.0.0/16", AllowPrivate: true})
	w.allow(t, api.AllowRequest{Container: "a1", Destination: "10.0.0.0/8", AllowPrivate: true}) // holds the subnet block: the fence keeps it closed
	w.allow(t, api.AllowRequest{Container: "a1", Destination: "198.51.100.7/32"})
	want := []datapath.GrantKey{
		{Identity: 1, Dst: netip.MustParseAddr("203.0.113.0"), HostBits: 8, Proto: 6, Port: 443},
		{Identity: 1, Dst: netip.MustParseAddr("0.0.0.0"), HostBits: 32, Proto: 17},
		{Identity: 1, Dst: netip.MustParseAddr("10.1.0.0"), HostBits: 16},
		{Identity: 1, Dst: netip.MustParseAddr("10.0.0.0"), HostBits: 24},
		{Identity: 1, Dst: netip.MustParseAddr("198.51.100.7")},
	}
	for _, k := range want {
		if !slices.Contains(w.kernel(), k) {
			t.Errorf("kernel %v lacks %v", w.kernel(), k)
		}
	}
	rules, _ := w.ActiveRules(ctx)
	var dsts []string
	for _, r := range rules {
		dsts = append(dsts, r.Destination)
	}
	if !slices.Equal(dsts, []string{"0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "198.51.100.7/32", "203.0.113.0/24"}) {
		t.Fatalf("listed %v", dsts)
	}
	w.c.Reset()
	if err := w.Revoke(ctx, api.RevokeRequest{Container: "a1", Destination: "203.0.113.0/24", Protocol: ptr("tcp"), Port: ptr(uint16(443))}); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(w.kernel(), want[0]) || w.c.Index("dp.EndGrantFlows 1") < 0 {
		t.Fatalf("revoke left %v; calls %v", w.kernel(), w.c.Log())
	}
	if err := w.Revoke(ctx, api.RevokeRequest{Container: "a1", Destination: "203.0.113.0/24", Protocol: ptr("tcp"), Port: ptr(uint16(443))}); err == nil || !strings.Contains(err.Error(), "no grant") {
		t.Fatalf("second revoke = %v", err)
	}
}

// fakeResolver answers names from a map and records what it was asked.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
	err     error
	asked   []string
	check   func(ctx context.Context)
}

func (r *fakeResolver) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, host)
	if r.check != nil {
		r.check(ctx)
	}
	if r.err != nil {
		return nil, r.err
	}
	return r.answers[host], nil
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// TestAllowHostname: a host name is resolved before the Controller's lock
// is taken, within 10 s, through the resolver set; every IPv4 address of
// the answer is opened (at most 16), the rule is listed under the name;
// a renewal replaces the address set; revoking the name closes exactly
// what it opened. No resolver, a failed or empty answer, or a bad TTL
// change nothing (the TTL is checked before resolving).
func TestAllowHostname(t *testing.T) {
	w := newGrantWorld(t)
	ctx := context.Background()
	req := api.AllowRequest{Container: "a1", Destination: "Pypi.Test.", Protocol: ptr("tcp"), Port: ptr(uint16(443))}
	if _, err := w.Allow(ctx, req); err == nil || !strings.Contains(err.Error(), "no resolver") {
		t.Fatalf("Allow without a resolver = %v", err)
	}
	var many []netip.Addr
	for i := range 20 {
		many = append(many, netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i)}))
	}
	res := &fakeResolver{answers: map[string][]netip.Addr{
		"pypi.test":  append(addrs("203.0.113.1", "2001:db8::1", "203.0.113.2", "203.0.113.1"), netip.MustParseAddr("::ffff:203.0.113.3")),
		"many.test":  many,
		"empty.test": nil,
		"meta.test":  addrs("203.0.113.1", "169.254.169.254"),
		"agent.test": addrs("10.200.0.11"),
	}}
	res.check = func(ctx context.Context) {
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > ResolveTimeout {
			t.Errorf("resolver context deadline %v (%v), want at most %v", dl, ok, ResolveTimeout)
		}
		if !w.mu.TryLock() {
			t.Error("the Controller's lock is held while resolving")
		} else {
			w.mu.Unlock()
		}
	}
	w.SetResolver(res.lookup)

	r := w.allow(t, req)
	if r.Destination != "pypi.test" || !slices.Equal(r.Addresses, []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"}) {
		t.Fatalf("rule %+v, want pypi.test on its three IPv4 addresses", r)
	}
	if got := w.kernel(); len(got) != 3 {
		t.Fatalf("kernel %v, want three exact entries", got)
	}
	w.allow(t, api.AllowRequest{Container: "a1", Destination: "many.test"})
	if rules, _ := w.ActiveRules(ctx); len(rules) != 2 || len(rules[0].Addresses) != api.MaxGrantHostAddrs {
		t.Fatalf("rules %+v, want many.test on %d addresses", rules, api.MaxGrantHostAddrs)
	}
	// A literal rule on one of pypi.test's addresses outlives the name's
	// revoke; the name's renewal drops an address and adds one.
	w.allow(t, api.AllowRequest{Container: "a1", Destination: "203.0.113.2", Protocol: ptr("tcp"), Port: ptr(uint16(443))})
	res.answers["pypi.test"] = addrs("203.0.113.2", "203.0.113.4")
	w.allow(t, req)
	k := func(a string) datapath.GrantKey {
		return datapath.GrantKey{Identity: 1, Dst: netip.MustParseAddr(a), Proto: 6, Port: 443}
	}
	if got := w.kernel(); slices.Contains(got, k("203.0.113.1")) || !slices.Contains(got, k("203.0.113.4")) {
		t.Fatalf("kernel %v after the renewal", got)
	}
	if err := w.Revoke(ctx, api.RevokeRequest{Container: "a1", Destination: "pypi.test", Protocol: ptr("tcp"), Port: ptr(uint16(443))}); err != nil {
		t.Fatal(err)
	}
	if got := w.kernel(); slices.Contains(got, k("203.0.113.4")) || !slices.Contains(got, k("203.0.113.2")) {
		t.Fatalf("kernel %v after revoking the name: want only the literal's 203.0.113.2 left of it", got)
	}

	before := w.kernel()
	asked := len(res.asked)
	for _, tc := range []struct {
		name string
		req  api.AllowRequest
		want string
	}{
		{"empty answer", api.AllowRequest{Container: "a1", Destination: "empty.test"}, "has no IPv4 address"},
		{"a restricted address", api.AllowRequest{Container: "a1", Destination: "meta.test"}, "169.254.169.254 (an address of meta.test) is restricted"},
		{"an agent's address", api.AllowRequest{Container: "a1", Destination: "agent.test", AllowPrivate: true}, "Outcall subnet"},
		{"ttl before resolving", api.AllowRequest{Container: "a1", Destination: "never.test", ExpiresInSecs: ptr(uint32(0))}, "between 1 and 86400"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := w.Allow(ctx, tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Allow = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	res.err = errors.New("upstream timed out")
	if _, err := w.Allow(ctx, api.AllowRequest{Container: "a1", Destination: "pypi.test"}); err == nil || !strings.Contains(err.Error(), "upstream timed out") {
		t.Fatalf("Allow with a failing resolver = %v", err)
	}
	if slices.Contains(res.asked[asked:], "never.test") {
		t.Error("a request with a bad TTL was resolved")
	}
	if got := w.kernel(); !slices.Equal(got, before) && len(got) != len(before) {
		t.Fatalf("refused requests changed the kernel: %v, was %v", got, before)
	}
}

// TestDynamicRuleCap: 256 operator rules per container; a renewal does not
// count twice, another container has its own 256, and DNS-learned grants
// are not operator rules.
func TestDynamicRuleCap(t *testing.T) {
	w := newGrantWorld(t)
	ctx := context.Background()
	for i := range api.MaxDynamicRulesPerContainer {
		w.allow(t, api.AllowRequest{Container: "a1", Destination: fmt.Sprintf("198.51.100.%d", i%250+1), Protocol: ptr("tcp"), Port: ptr(uint16(1000 + i))})
	}
	_, err := w.Allow(ctx, api.AllowRequest{Container: "a1", Destination: "203.0.113.0/24"})
	if err == nil || err.Error() != "dynamic rule cap exceeded for container 'a1' (max 256)" {
		t.Fatalf("rule 257 = %v", err)
	}
	// Renewing rule 1 (temporary now) is not a new rule.
	w.allow(t, api.AllowRequest{Container: "a1", Destination: "198.51.100.1", Protocol: ptr("tcp"), Port: ptr(uint16(1000)), ExpiresInSecs: ptr(uint32(60))})
	w.allow(t, api.AllowRequest{Container: "a2", Destination: "203.0.113.0/24"})
	if n := w.grants.CountOwned(1, grants.Operator); n != api.MaxDynamicRulesPerContainer {
		t.Fatalf("a1 holds %d rules", n)
	}
}

// TestOperatorRenewalIsAuthoritative: the operator switches a rule
// between temporary and persistent (S009-FR-016).
func TestOperatorRenewalIsAuthoritative(t *testing.T) {
	w := newGrantWorld(t)
	req := api.AllowRequest{Container: "a1", Destination: "203.0.113.0/24", ExpiresInSecs: ptr(uint32(60))}
	if r := w.allow(t, req); r.ExpiresInSecs == nil || *r.ExpiresInSecs != 60 || r.InsertedAt == "" {
		t.Fatalf("temporary rule %+v", r)
	}
	req.ExpiresInSecs = nil
	if r := w.allow(t, req); r.ExpiresInSecs != nil {
		t.Fatalf("renewed persistent: %+v", r)
	}
	req.ExpiresInSecs = ptr(uint32(5))
	if r := w.allow(t, req); r.ExpiresInSecs == nil || *r.ExpiresInSecs != 5 {
		t.Fatalf("renewed temporary: %+v", r)
	}
	if g, _ := w.dp.Grants(); len(g) != 1 || g[0].Expires.IsZero() || time.Until(g[0].Expires) > 5*time.Second {
		t.Fatalf("kernel %+v, want one entry expiring within 5 s", g)
	}
}

// TestFailedGrantDeleteClosesContainer (S009-FR-014, AS-006, EC-002,
// EC-008): a delete the kernel refuses on a revoke, a flush, the sweep or a
// container's removal removes every grant; if that fails too, the
// container is closed (its endpoint entry goes: its port reaches only the
// gateway services), the error says so, the grants stay listed, and once
// the kernel agrees the sweep removes them and reopens the container.
func TestFailedGrantDeleteClosesContainer(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T) *grantWorld {
		w := newGrantWorld(t)
		w.allow(t, api.AllowRequest{Container: "a1", Destination: "203.0.113.0/24"})
		w.allow(t, api.AllowRequest{Container: "a1", Destination: "198.51.100.7", ExpiresInSecs: ptr(uint32(1))})
		w.allow(t, api.AllowRequest{Container: "a2", Destination: "198.51.100.8"})
		return w
	}
	for _, tc := range []struct {
		name string
		call func(w *grantWorld) error
	}{
		{"revoke", func(w *grantWorld) error {
			return w.Revoke(ctx, api.RevokeRequest{Container: "a1", Destination: "203.0.113.0/24"})
		}},
		{"flush", func(w *grantWorld) error { _, err := w.FlushRules(ctx); return err }},
		{"container removal", func(w *grantWorld) error { return w.ReleaseContainer(ctx, "a1") }},
		{"expiry sweep", func(w *grantWorld) error {
			time.Sleep(1100 * time.Millisecond)
			_, err := w.grants.Sweep()
			return w.grantFailure("expiry sweep", err)
		}},
	} {
		t.Run(tc.name+", the reset works", func(t *testing.T) {
			w := setup(t)
			w.fdp.setFailures(1)
			if err := tc.call(w); err != nil {
				t.Fatalf("%s = %v, want success after the reset", tc.name, err)
			}
			if got := w.kernel(); len(got) != 0 {
				t.Fatalf("kernel %v after the reset, want no grant at all", got)
			}
			if rules, _ := w.ActiveRules(ctx); len(rules) != 0 {
				t.Fatalf("listed %v after the reset", rules)
			}
			if _, ok := w.dp.Endpoints[12]; !ok {
				t.Fatal("a2 was closed although the reset worked")
			}
		})
		t.Run(tc.name+", the reset fails too", func(t *testing.T) {
			w := setup(t)
			w.fdp.setFailures(-1)
			err := tc.call(w)
			if err == nil || !strings.Contains(err.Error(), "closed identities [1 2] in the datapath") {
				t.Fatalf("%s = %v, want an error naming the closed identities", tc.name, err)
			}
			for _, port := range []int{11, 12} {
				if _, ok := w.dp.Endpoints[port]; ok {
					t.Errorf("port %d still has its endpoint entry", port)
				}
			}
			if rules, _ := w.ActiveRules(ctx); len(rules) == 0 {
				t.Fatal("grants the kernel still holds are no longer listed")
			}
			if _, err := w.Allow(ctx, api.AllowRequest{Container: "a2", Destination: "198.51.100.9"}); !errors.Is(err, grants.ErrStuck) {
				t.Fatalf("a new grant while stuck: %v", err)
			}
			// The kernel agrees again: the next sweep clears it all and
			// gives both ports their identities back.
			w.fdp.setFailures(0)
			w.sweepGrants()
			if got := w.kernel(); len(got) != 0 {
				t.Fatalf("kernel %v after the kernel agreed", got)
			}
			if _, ok := w.dp.Endpoints[12]; !ok {
				t.Fatal("a2 was not reopened")
			}
			if tc.name != "container removal" {
				if _, ok := w.dp.Endpoints[11]; !ok {
					t.Fatal("a1 was not reopened")
				}
			}
		})
	}
}

// TestContainerGoesGrantsGo: releasing a container's identity revokes
// every grant it had (exact, prefix and host name) and ends its flows;
// another container's stay. Shutdown revokes all.
func TestContainerGoesGrantsGo(t *testing.T) {
	w := newGrantWorld(t)
	ctx := context.Background()
	w.SetResolver((&fakeResolver{answers: map[string][]netip.Addr{"pypi.test": addrs("203.0.113.1", "203.0.113.2")}}).lookup)
	w.allow(t, api.AllowRequest{Container: "a1", Destination: "203.0.113.0/24"})
	w.allow(t, api.AllowRequest{Container: "a1", Destination: "pypi.test"})
	w.allow(t, api.AllowRequest{Container: "a1", Destination: "198.51.100.7"})
	w.allow(t, api.AllowRequest{Container: "a2", Destination: "198.51.100.8"})
	w.c.Reset()
	if err := w.ReleaseContainer(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	if got := w.kernel(); len(got) != 1 || got[0].Identity != 2 {
		t.Fatalf("kernel %v, want a2's grant only", got)
	}
	if err := w.c.InOrder("dp.DeleteEndpoint 11", "dp.DeleteGrant", "dp.EndGrantFlows 4", "dp.EndFlows 1"); err != nil {
		t.Fatal(err)
	}
	w.Shutdown()
	if got := w.kernel(); len(got) != 0 {
		t.Fatalf("kernel %v after shutdown", got)
	}
}
