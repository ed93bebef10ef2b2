package dns

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/network"
	"outcall.dev/outcall/pkg/rulefile"
	"outcall.dev/outcall/pkg/rules"
)

// Test addresses. Everything is on loopback: agentIP is where the test's
// clients send from, strangerIP is a loopback address no identity has.
var (
	agentIP    = netip.MustParseAddr("127.0.0.1")
	strangerIP = netip.MustParseAddr("127.0.0.2")
	agent6IP   = netip.MustParseAddr("::1")
)

// fakeGateway is a network.Gateway over loopback: it binds 127.0.0.1:0,
// identifies from a map and records (or fails, or holds) Learn calls.
type fakeGateway struct {
	mu       sync.Mutex
	ids      map[netip.Addr]endpoint.Endpoint
	learned  []learnCall
	learnErr error
	// onLearn, if set, runs inside Learn before it returns.
	onLearn func(network.Learned)
	udp     net.PacketConn
	tcp     net.Listener
	bound   chan struct{}
	bindErr error
}

type learnCall struct {
	identity uint32
	lg       network.Learned
}

func newFakeGateway() *fakeGateway {
	return &fakeGateway{
		ids: map[netip.Addr]endpoint.Endpoint{
			agentIP:  {Name: "agent-a", Identity: 7, IP: agentIP, Network: api.DefaultNetworkName},
			agent6IP: {Name: "agent-six", Identity: 8, IP: agent6IP, Network: api.DefaultNetworkName},
		},
		bound: make(chan struct{}),
	}
}

func (g *fakeGateway) Network() network.Network {
	return network.Network{Name: api.DefaultNetworkName, Bridge: "outcall0", Gateway: netip.MustParsePrefix("127.0.0.1/8")}
}

func (g *fakeGateway) ListenUDP(ctx context.Context, port uint16) (net.PacketConn, error) {
	if g.bindErr != nil {
		return nil, g.bindErr
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	g.mu.Lock()
	g.udp = pc
	g.mu.Unlock()
	return pc, err
}

func (g *fakeGateway) ListenTCP(ctx context.Context, port uint16) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err == nil {
		g.mu.Lock()
		g.tcp = ln
		g.mu.Unlock()
		close(g.bound)
	}
	return ln, err
}

func (g *fakeGateway) Identify(src netip.Addr) (endpoint.Endpoint, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.ids[src]
	return e, ok
}

func (g *fakeGateway) Learn(identity uint32, lg network.Learned) error {
	g.mu.Lock()
	hook, err := g.onLearn, g.learnErr
	g.learned = append(g.learned, learnCall{identity, lg})
	g.mu.Unlock()
	if hook != nil {
		hook(lg)
	}
	return err
}

func (g *fakeGateway) calls() []learnCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]learnCall(nil), g.learned...)
}

func (g *fakeGateway) addrs() (udp, tcp string) {
	<-g.bound
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.udp.LocalAddr().String(), g.tcp.Addr().String()
}

// fakeRules is an Evaluator whose answer the test chooses; it records the
// contexts it was asked about.
type fakeRules struct {
	mu     sync.Mutex
	decide func(*api.EvaluationContext) rules.Outcome
	seen   []api.EvaluationContext
}

func (r *fakeRules) Evaluate(_ context.Context, layer rules.Layer, c *api.EvaluationContext) rules.Outcome {
	r.mu.Lock()
	r.seen = append(r.seen, api.EvaluationContext{DNS: ptr(*c.DNS), Agent: ptr(*c.Agent)})
	decide := r.decide
	r.mu.Unlock()
	if layer != rules.LayerDNS {
		panic("layer " + layer)
	}
	return decide(c)
}

func (r *fakeRules) set(d func(*api.EvaluationContext) rules.Outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.decide = d
}

func (r *fakeRules) contexts() []api.EvaluationContext {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]api.EvaluationContext(nil), r.seen...)
}

func ptr[T any](v T) *T { return &v }

func allow(id string, egress *api.Egress) rules.Outcome {
	return rules.Outcome{Decision: api.DecisionAllow, Rule: &rules.Rule{Rule: rulefile.Rule{ID: id, File: "10-test.yaml", Action: api.ActionAllow, Egress: egress}}}
}

func block(id string) rules.Outcome {
	if id == "" {
		return rules.Outcome{Decision: api.DecisionBlock}
	}
	return rules.Outcome{Decision: api.DecisionBlock, Rule: &rules.Rule{Rule: rulefile.Rule{ID: id, File: "10-test.yaml", Action: api.ActionBlock}}}
}

func allowAll(c *api.EvaluationContext) rules.Outcome { return allow("allow-all", nil) }

// upstream is an authoritative test server on 127.0.0.1, UDP and TCP on
// one port, serving zone and counting the queries it answers.
type upstream struct {
	addr    netip.AddrPort
	udp     atomic.Int64
	tcp     atomic.Int64
	mu      sync.Mutex
	lastOPT *mdns.OPT
	byName  map[string]int
	// served counts the queries of a custom handler.
	served *atomic.Int64
}

// zone is the test zone. Its addresses are data only: no test connects to
// them.
var zone = map[string][]string{
	"www.example.test.":           {"www.example.test. 120 IN A 198.51.100.10", "www.example.test. 120 IN AAAA 2606:4700::10"},
	"multi.example.test.":         {"multi.example.test. 90 IN A 198.51.100.12", "multi.example.test. 60 IN A 198.51.100.11", "multi.example.test. 90 IN A 198.51.100.12"},
	"alias.example.test.":         {"alias.example.test. 200 IN CNAME mid.example.test.", "mid.example.test. 30 IN CNAME www.example.test.", "www.example.test. 120 IN A 198.51.100.10"},
	"mail.example.test.":          {"mail.example.test. 100 IN MX 10 mx.example.test."},
	"private.example.test.":       {"private.example.test. 100 IN A 10.0.0.5", "private.example.test. 100 IN AAAA fd00::5"},
	"mixed.example.test.":         {"mixed.example.test. 100 IN A 10.0.0.6", "mixed.example.test. 100 IN A 198.51.100.20", "mixed.example.test. 100 IN A 169.254.169.254"},
	"zero.example.test.":          {"zero.example.test. 0 IN A 198.51.100.30"},
	"v4only.example.test.":        {"v4only.example.test. 100 IN A 198.51.100.40"},
	"10.100.51.198.in-addr.arpa.": {"10.100.51.198.in-addr.arpa. 100 IN PTR www.example.test."},
}

func bigTXT() []mdns.RR {
	var out []mdns.RR
	for i := range 12 {
		rr, _ := mdns.NewRR("big.example.test. 100 IN TXT \"" + strings.Repeat(string(rune('a'+i)), 200) + "\"")
		out = append(out, rr)
	}
	return out
}

func zoneSOA() mdns.RR {
	rr, _ := mdns.NewRR("example.test. 50 IN SOA ns.example.test. admin.example.test. 7 3600 600 86400 50")
	return rr
}

func (u *upstream) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	_, isUDP := w.LocalAddr().(*net.UDPAddr)
	if isUDP {
		u.udp.Add(1)
	} else {
		u.tcp.Add(1)
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	u.mu.Lock()
	u.byName[name]++
	if opt := r.IsEdns0(); opt != nil {
		u.lastOPT = opt
	}
	u.mu.Unlock()
	m := new(mdns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	switch {
	case name == "fail.example.test.":
		m.Rcode = mdns.RcodeServerFailure
	case name == "big.example.test." && q.Qtype == mdns.TypeTXT:
		m.Answer = bigTXT()
	case zone[name] != nil:
		for _, s := range zone[name] {
			rr, err := mdns.NewRR(s)
			if err != nil {
				panic(err)
			}
			if rr.Header().Rrtype == q.Qtype || rr.Header().Rrtype == mdns.TypeCNAME {
				rr.Header().Name = strings.Replace(rr.Header().Name, name, q.Name, 1) // echo 0x20 case
				m.Answer = append(m.Answer, rr)
			}
		}
		if len(m.Answer) == 0 {
			m.Ns = []mdns.RR{zoneSOA()} // NODATA
		}
	default:
		m.Rcode = mdns.RcodeNameError
		m.Ns = []mdns.RR{zoneSOA()}
	}
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), opt.Do())
	}
	if isUDP {
		size := mdns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

func (u *upstream) count(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.byName[name]
}

// startUpstream runs an upstream with handler h (nil: the zone) until the
// test ends.
func startUpstream(t testing.TB, h mdns.Handler) *upstream {
	t.Helper()
	u := &upstream{byName: map[string]int{}}
	if h == nil {
		h = u
	}
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ; try++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if try == 20 {
			t.Fatalf("no free port for the upstream: %v", err)
		}
	}
	u.addr = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	us := &mdns.Server{PacketConn: pc, Handler: h}
	ts := &mdns.Server{Listener: ln, Handler: h}
	for _, s := range []*mdns.Server{us, ts} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return u
}

// deadUpstream is a UDP and TCP port that never answers.
func deadUpstream(t testing.TB) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// servfailUpstream answers SERVFAIL to everything.
func servfailUpstream(t testing.TB) *upstream {
	var n atomic.Int64
	u := startUpstream(t, mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		n.Add(1)
		m := new(mdns.Msg)
		m.SetRcode(r, mdns.RcodeServerFailure)
		_ = w.WriteMsg(m)
	}))
	u.served = &n
	return u
}

type fixture struct {
	f     *Filter
	gw    *fakeGateway
	rules *fakeRules
	up    *upstream
	clock *fakeClock
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newFixture(t testing.TB, mod func(*Options)) *fixture {
	t.Helper()
	up := startUpstream(t, nil)
	fx := &fixture{gw: newFakeGateway(), rules: &fakeRules{decide: allowAll}, up: up,
		clock: &fakeClock{now: time.Date(2026, 4, 21, 14, 32, 1, 0, time.UTC)}}
	opts := Options{
		Upstreams:       []netip.AddrPort{up.addr},
		Rules:           fx.rules,
		Logger:          slog.New(slog.DiscardHandler),
		UpstreamTimeout: 2 * time.Second,
		Now:             fx.clock.Now,
	}
	if mod != nil {
		mod(&opts)
	}
	f, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	fx.f = f
	return fx
}

// ask runs m from src through the handler and returns the reply, or nil
// when there is none.
func (fx *fixture) ask(t testing.TB, src netip.Addr, m *mdns.Msg, udp bool) *mdns.Msg {
	t.Helper()
	raw, err := m.Pack()
	if err != nil {
		t.Fatalf("pack query: %v", err)
	}
	res := fx.f.handle(context.Background(), fx.gw, src, raw, udp)
	if res.reply == nil {
		return nil
	}
	r := new(mdns.Msg)
	if err := r.Unpack(res.reply); err != nil {
		t.Fatalf("unpack reply: %v", err)
	}
	return r
}

func question(name string, qtype uint16) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// serve runs fx.f.Serve on fx.gw until the test ends, and returns the
// UDP and TCP addresses it bound.
func (fx *fixture) serve(t *testing.T) (udp, tcp string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fx.f.Serve(ctx, fx.gw) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return fx.gw.addrs()
}

// exchange sends m over net ("udp" or "tcp") from agentIP to addr.
func exchange(t *testing.T, netw, addr string, m *mdns.Msg) *mdns.Msg {
	t.Helper()
	c := &mdns.Client{Net: netw, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange with %s: %v", netw, addr, err)
	}
	return r
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset")
}

func rrStrings(rrs []mdns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, rr.String())
	}
	return out
}
