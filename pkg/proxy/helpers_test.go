package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/network"
	"outcall.dev/outcall/pkg/rules"
)

// Test traffic stays on loopback (TESTING.md). Names resolve through
// testResolver only, and testDialer connects only to 127.0.0.0/8 or, for
// publicAddr, to the loopback listener the test mapped it to: a broken proxy
// still cannot send a packet off this machine.
//
// publicAddr stands for "an upstream on the internet": the path where the
// restricted-address filter lets the address through without
// allow_private_ips. It has to be a global unicast address outside every
// restricted range (the documentation ranges 192.0.2/24, 198.51.100/24 and
// 203.0.113/24 and the benchmark range 198.18/15 are restricted by the
// spec's list), so it is an ordinary public address. It is never dialled:
// testDialer rewrites it to 127.0.0.1 and the port to a test listener.
var publicAddr = netip.MustParseAddr("11.1.1.1")

// fakeGateway is a network.Gateway over loopback.
type fakeGateway struct {
	name  string
	ids   map[netip.Addr]endpoint.Endpoint
	addrs chan string
	mu    sync.Mutex
	open  int // listeners held
}

func newGateway(ids map[netip.Addr]endpoint.Endpoint) *fakeGateway {
	return &fakeGateway{name: api.DefaultNetworkName, ids: ids, addrs: make(chan string, 1)}
}

// agentGateway knows 127.0.0.1 as the agent "agent-a".
func agentGateway() *fakeGateway {
	return newGateway(map[netip.Addr]endpoint.Endpoint{
		netip.MustParseAddr("127.0.0.1"): {Name: "agent-a", Identity: 7, IP: netip.MustParseAddr("127.0.0.1")},
	})
}

func (g *fakeGateway) Network() network.Network {
	return network.Network{Name: g.name, Bridge: "outcall0", Gateway: netip.MustParsePrefix("10.200.0.1/24")}
}

func (g *fakeGateway) ListenTCP(ctx context.Context, port uint16) (net.Listener, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.open++
	g.mu.Unlock()
	g.addrs <- ln.Addr().String()
	return &countedListener{Listener: ln, g: g}, nil
}

type countedListener struct {
	net.Listener
	g    *fakeGateway
	once sync.Once
}

func (l *countedListener) Close() error {
	l.once.Do(func() {
		l.g.mu.Lock()
		l.g.open--
		l.g.mu.Unlock()
	})
	return l.Listener.Close()
}

func (g *fakeGateway) ListenUDP(context.Context, uint16) (net.PacketConn, error) {
	return nil, errors.New("not used by the proxy")
}

func (g *fakeGateway) Identify(src netip.Addr) (endpoint.Endpoint, bool) {
	e, ok := g.ids[src]
	return e, ok
}

func (g *fakeGateway) Learn(uint32, network.Learned) error {
	return errors.New("not used by the proxy")
}

// testResolver resolves test names from a map; "nxdomain.test" fails and
// "slowdns.test" waits for the deadline.
type testResolver struct {
	mu    sync.Mutex
	names map[string][]netip.Addr
	calls []string
}

func (r *testResolver) Resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	r.calls = append(r.calls, host)
	addrs, ok := r.names[host]
	r.mu.Unlock()
	switch {
	case host == "slowdns.test":
		<-ctx.Done()
		return nil, ctx.Err()
	case !ok:
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return addrs, nil
}

func (r *testResolver) set(host string, addrs ...netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names[host] = addrs
}

// testDialer dials loopback only. public maps publicAddr-style addresses
// ("11.1.1.1:80") to a loopback address; "blackhole" addresses wait for the
// deadline (a connect timeout).
type testDialer struct {
	mu        sync.Mutex
	public    map[string]string
	blackhole map[string]bool
	dialed    []string
}

func (d *testDialer) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.dialed = append(d.dialed, addr)
	to, mapped := d.public[addr]
	hole := d.blackhole[addr]
	d.mu.Unlock()
	if network != "tcp4" {
		return nil, fmt.Errorf("test dialer: network %q is not tcp4", network)
	}
	if hole {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if !mapped {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || !ap.Addr().IsLoopback() {
			return nil, fmt.Errorf("test dialer: %s is not loopback and not mapped", addr)
		}
		to = addr
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp4", to)
}

func (d *testDialer) mapPublic(addr netip.Addr, port uint16, to string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.public[netip.AddrPortFrom(addr, port).String()] = to
}

func (d *testDialer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.dialed)
}

// recordingEvaluator passes evaluations to an engine and keeps the contexts.
type recordingEvaluator struct {
	inner Evaluator
	mu    sync.Mutex
	seen  []api.EvaluationContext
}

func (r *recordingEvaluator) Evaluate(ctx context.Context, l rules.Layer, c *api.EvaluationContext) rules.Outcome {
	r.mu.Lock()
	r.seen = append(r.seen, *c)
	r.mu.Unlock()
	if l != rules.LayerProxy {
		panic("proxy evaluated for layer " + string(l))
	}
	return r.inner.Evaluate(ctx, l, c)
}

func (r *recordingEvaluator) contexts() []api.EvaluationContext {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]api.EvaluationContext(nil), r.seen...)
}

// engine returns a rule engine over a temporary rules directory holding
// the given rules (YAML list items).
func engine(t testing.TB, ruleItems string) *rules.Engine {
	t.Helper()
	dir := t.TempDir()
	body := "version: \"1\"\nrules:\n" + ruleItems
	if strings.TrimSpace(ruleItems) == "" {
		body = "version: \"1\"\nrules: []\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "10-test.yaml"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := rules.NewEngine(rules.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e
}

// env is one proxy under test with its fakes.
type env struct {
	t      *testing.T
	p      *Proxy
	gw     *fakeGateway
	addr   string
	res    *testResolver
	dial   *testDialer
	eval   *recordingEvaluator
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs a proxy with the given rules on agentGateway (or gw), letting
// tune adjust the options.
func start(t *testing.T, ruleItems string, tune func(*Options), gw ...*fakeGateway) *env {
	t.Helper()
	e := &env{
		t:    t,
		res:  &testResolver{names: map[string][]netip.Addr{}},
		dial: &testDialer{public: map[string]string{}, blackhole: map[string]bool{}},
		eval: &recordingEvaluator{inner: engine(t, ruleItems)},
		logs: &syncBuffer{},
		done: make(chan error, 1),
	}
	e.gw = agentGateway()
	if len(gw) > 0 {
		e.gw = gw[0]
	}
	opts := Options{
		Rules:   e.eval,
		Resolve: e.res.Resolve,
		Dial:    e.dial.Dial,
		Logger:  slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if tune != nil {
		tune(&opts)
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.p = p
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.done <- p.Serve(ctx, e.gw) }()
	select {
	case e.addr = <-e.gw.addrs:
	case err := <-e.done:
		t.Fatalf("Serve returned before listening: %v", err)
	}
	t.Cleanup(func() { e.stop() })
	// ListenTCP hands out the address just before Serve records it.
	waitFor(t, "the status to show the listener", func() bool { return p.Status().Listening })
	return e
}

// stop ends Serve and waits for it (idempotent).
func (e *env) stop() error {
	e.cancel()
	select {
	case err, ok := <-e.done:
		if ok {
			close(e.done)
		}
		return err
	case <-time.After(15 * time.Second):
		e.t.Fatal("Serve did not return within 15 s of its context ending")
		return nil
	}
}

// connect opens a client connection to the proxy with a bounded lifetime.
func (e *env) connect() net.Conn {
	e.t.Helper()
	c, err := net.DialTimeout("tcp4", e.addr, 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	e.t.Cleanup(func() { c.Close() })
	return c
}

// response is what came back on a connection.
type response struct {
	Status int
	Header http.Header
	Body   string
	// Close is what the response says: the connection ends after it.
	Close bool
	br    *bufio.Reader
	c     net.Conn
}

// closed reports whether the proxy closed the connection after the
// response, waiting for it at most 2 s.
func (r response) closed() bool {
	_ = r.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := r.br.ReadByte()
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

// roundTrip writes raw to a new connection and reads one response.
func (e *env) roundTrip(raw string) response {
	e.t.Helper()
	c := e.connect()
	if _, err := io.WriteString(c, raw); err != nil {
		e.t.Fatal(err)
	}
	return readResponse(e.t, c)
}

// readResponse reads one response from c. Its reader may read ahead, so
// pipelined responses are read with one reader (readResponses).
func readResponse(t *testing.T, c net.Conn) response {
	t.Helper()
	return readResponses(t, c, 1)[0]
}

// readResponses reads n responses from c with one reader.
func readResponses(t *testing.T, c net.Conn, n int) []response {
	t.Helper()
	br := bufio.NewReader(c)
	var out []response
	for range n {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read response %d: %v", len(out)+1, err)
		}
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatalf("read body: %v", err)
		}
		out = append(out, response{Status: res.StatusCode, Header: res.Header, Body: string(body), Close: res.Close, br: br, c: c})
	}
	return out
}

// rawUpstream is a plain TCP server that records each connection's bytes
// up to the end of the request head plus Content-Length, and answers with
// reply.
type rawUpstream struct {
	ln    net.Listener
	mu    sync.Mutex
	reqs  []string
	reply string
	conns int
}

func newRawUpstream(t *testing.T, reply string) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln, reply: reply}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c)
		}
	}()
	return u
}

func (u *rawUpstream) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	u.mu.Lock()
	u.conns++
	u.mu.Unlock()
	br := bufio.NewReader(c)
	var head strings.Builder
	cl := 0
	for {
		line, err := br.ReadString('\n')
		head.WriteString(line)
		if err != nil {
			return
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "content-length") {
			cl, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if line == "\r\n" {
			break
		}
	}
	body := make([]byte, cl)
	if _, err := io.ReadFull(br, body); err != nil {
		return
	}
	u.mu.Lock()
	u.reqs = append(u.reqs, head.String()+string(body))
	u.mu.Unlock()
	_, _ = io.WriteString(c, u.reply)
}

func (u *rawUpstream) addr() string { return u.ln.Addr().String() }

func (u *rawUpstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.reqs...)
}

const okReply = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"

// clientHello returns the first TLS record a crypto/tls client with cfg
// sends: a real ClientHello.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() { _ = tls.Client(a, cfg).Handshake() }()
	rec, err := readClientHelloRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// waitFor polls cond for a bounded time: it synchronises with the proxy's
// goroutines, it asserts nothing by itself.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
