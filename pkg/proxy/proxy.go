// Package proxy is Outcall's HTTP and CONNECT forward proxy (S006): the way
// agent containers reach the web by name. It listens on each network's
// gateway, refuses any peer that is not a managed container, parses every
// request head itself under strict framing rules, asks the rule engine about
// each request (the CONNECT host and then the TLS SNI for tunnels), resolves
// names only through Outcall's own upstreams, refuses restricted upstream
// addresses unless the deciding rule opts in, and dials exactly the
// addresses it resolved. It never decrypts: after a CONNECT it reads one
// ClientHello record, forwards it unchanged and relays opaque bytes.
//
// Everything fails closed: an unknown peer, a malformed head, an engine
// error, a ClientHello it cannot read all end the request before anything
// reaches an upstream. The proxy dials from the host, so its traffic needs
// no datapath grant; that is why its own checks must be complete.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/network"
	"outcall.dev/outcall/pkg/rules"
)

// Evaluator decides a request against the rules in force;
// (*rules.Engine).Evaluate implements it. The proxy always asks for
// rules.LayerProxy.
type Evaluator interface {
	Evaluate(context.Context, rules.Layer, *api.EvaluationContext) rules.Outcome
}

// Defaults of S006 (section 1.2 of the spec digest). The spec fixes them;
// Options lets tests shorten them.
const (
	DefaultConnectTimeout     = 10 * time.Second
	DefaultHeaderTimeout      = 10 * time.Second
	DefaultClientHelloTimeout = 10 * time.Second
	DefaultIdleTimeout        = 300 * time.Second
	DefaultKeepAliveTimeout   = 60 * time.Second
	DefaultMaxConnections     = 1024
	DefaultMaxHeaderBytes     = 8192
	DefaultMaxBodyBytes       = 16 << 20
	DefaultShutdownGrace      = 5 * time.Second
	// maxUpstreamAddrs caps how many resolved addresses are tried.
	maxUpstreamAddrs = 64
	// overCapacityWrite bounds the write of the 503 to a connection over
	// the limit, so a flood cannot hold the goroutines that refuse it.
	overCapacityWrite = time.Second
)

// Options configure a Proxy.
type Options struct {
	// Port is the TCP port on each gateway (--proxy-addr); 0 means
	// api.DefaultProxyPort (8080).
	Port uint16
	// Rules decides every request. Required.
	Rules Evaluator
	// Resolve returns the IPv4 addresses of host through Outcall's
	// upstreams (the DNS filter's configured upstreams), never the
	// machine's resolver: a container must not learn, through the proxy,
	// names the host's own resolver knows. Required.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// Dial dials the upstream: always network "tcp4" and a literal
	// address:port the proxy resolved and checked. nil is a net.Dialer;
	// tests pass one that reaches loopback servers only.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Restricted, if set, names the addresses restricted besides the ranges
	// of package netrange that only the daemon knows (the host's own
	// addresses, the Outcall subnets), as the DNS filter's option of that
	// name does. nil reads the host's interface addresses on every request.
	Restricted func(netip.Addr) bool
	// Logger receives the proxy's logs; nil discards them.
	Logger *slog.Logger

	// ConnectTimeout bounds the upstream resolution and, separately, the
	// connect to the resolved addresses (S006-FR-010); 0 is 10 s.
	ConnectTimeout time.Duration
	// HeaderTimeout bounds reading a whole request head; 0 is 10 s.
	HeaderTimeout time.Duration
	// ClientHelloTimeout bounds reading the ClientHello after a CONNECT's
	// 200; 0 is 10 s.
	ClientHelloTimeout time.Duration
	// IdleTimeout closes a tunnel or relay after no data in either
	// direction for this long (S006-FR-011); 0 is 300 s.
	IdleTimeout time.Duration
	// KeepAliveTimeout is how long a client connection may wait between
	// requests before the proxy closes it; 0 is 60 s.
	KeepAliveTimeout time.Duration
	// MaxConnections is the limit of concurrent client connections over
	// all networks (S006-FR-012); 0 is 1024.
	MaxConnections int
	// MaxHeaderBytes bounds a request head (S006-FR-024); 0 is 8192.
	MaxHeaderBytes int
	// MaxBodyBytes bounds a request body's Content-Length; 0 is 16 MiB.
	MaxBodyBytes int64
	// ShutdownGrace is how long connections may finish once Serve's
	// context is done (S006-FR-015); 0 is 5 s.
	ShutdownGrace time.Duration
}

// Proxy is the S006 proxy. One Proxy serves every network: the daemon runs
// Serve once per gateway, and the connection limit and counters are shared.
type Proxy struct {
	opts  Options
	log   *slog.Logger
	slots chan struct{}
	m     *metrics

	active        atomic.Int64
	totalRequests atomic.Uint64
	totalBlocked  atomic.Uint64

	mu        sync.Mutex
	listeners map[string]string // network name → listen address
}

// New returns a proxy, checking that the required options are there and
// filling in the spec's defaults.
func New(opts Options) (*Proxy, error) {
	if opts.Rules == nil {
		return nil, errors.New("proxy: no rule evaluator")
	}
	if opts.Resolve == nil {
		return nil, errors.New("proxy: no resolver (the proxy never falls back to the machine's resolver)")
	}
	if opts.Port == 0 {
		opts.Port = api.DefaultProxyPort
	}
	if opts.Dial == nil {
		// The proxy hands the dialer literal IPv4 addresses only; checking
		// before dialling keeps it so if a future caller passes a name,
		// which net.Dialer would look up with the machine's resolver.
		var d net.Dialer
		opts.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
			if ap, err := netip.ParseAddrPort(address); err != nil || !ap.Addr().Is4() || network != "tcp4" {
				return nil, fmt.Errorf("proxy: refusing to dial %s %s: only resolved IPv4 addresses are dialled", network, address)
			}
			return d.DialContext(ctx, network, address)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	setDefault(&opts.ConnectTimeout, DefaultConnectTimeout)
	setDefault(&opts.HeaderTimeout, DefaultHeaderTimeout)
	setDefault(&opts.ClientHelloTimeout, DefaultClientHelloTimeout)
	setDefault(&opts.IdleTimeout, DefaultIdleTimeout)
	setDefault(&opts.KeepAliveTimeout, DefaultKeepAliveTimeout)
	setDefault(&opts.MaxConnections, DefaultMaxConnections)
	setDefault(&opts.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&opts.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&opts.ShutdownGrace, DefaultShutdownGrace)
	p := &Proxy{
		opts:      opts,
		log:       opts.Logger.With("target", "proxy"),
		slots:     make(chan struct{}, opts.MaxConnections),
		listeners: map[string]string{},
	}
	p.m = newMetrics(p)
	return p, nil
}

func setDefault[T int | int64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// Name implements daemon.GatewayService.
func (p *Proxy) Name() string { return "proxy" }

// Status is GET /api/v1/proxy: whether any network has a listener, the
// default network's address (or, without a default network, the first by
// name), every listener, and the counters. TotalRequests counts accepted
// connections, not HTTP requests, as the original implementation did.
func (p *Proxy) Status() api.ProxyStatus {
	p.mu.Lock()
	names := make([]string, 0, len(p.listeners))
	for n := range p.listeners {
		names = append(names, n)
	}
	slices.Sort(names)
	st := api.ProxyStatus{Listening: len(names) > 0}
	for _, n := range names {
		st.Listeners = append(st.Listeners, p.listeners[n])
	}
	if a, ok := p.listeners[api.DefaultNetworkName]; ok {
		st.ListenAddr = a
	} else if len(names) > 0 {
		st.ListenAddr = p.listeners[names[0]]
	}
	p.mu.Unlock()
	st.ActiveConnections = p.active.Load()
	st.TotalRequests = p.totalRequests.Load()
	st.TotalBlocked = p.totalBlocked.Load()
	return st
}

// Collectors returns the proxy's Prometheus metrics for the daemon to
// register.
func (p *Proxy) Collectors() []prometheus.Collector { return p.m.collectors() }

// Serve implements daemon.GatewayService: it listens on gw's proxy port and
// serves until ctx is done; then it stops accepting, lets the connections
// finish for ShutdownGrace, closes the rest and returns once every
// goroutine it started has ended. It returns an error only when it cannot
// listen or the listener fails under it.
func (p *Proxy) Serve(ctx context.Context, gw network.Gateway) error {
	n := gw.Network()
	ln, err := gw.ListenTCP(ctx, p.opts.Port)
	if err != nil {
		return fmt.Errorf("proxy: listen on network %s port %d: %w", n.Name, p.opts.Port, err)
	}
	s := &server{
		p:        p,
		gw:       gw,
		log:      p.log.With("network", n.Name),
		subnet:   n.Subnet(),
		stopping: ctx,
		conns:    map[net.Conn]struct{}{},
	}
	// Connections outlive ctx by the grace period: their context is
	// cancelled only when the grace is over.
	var cancel context.CancelFunc
	s.ctx, cancel = context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	p.setListener(n.Name, ln.Addr().String())
	defer p.setListener(n.Name, "")
	s.log.Info("proxy listening", "addr", ln.Addr().String())
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	err = s.accept(ctx, ln)
	ln.Close()
	s.drain(cancel)
	s.log.Info("proxy stopped", "addr", ln.Addr().String())
	return err
}

func (p *Proxy) setListener(network, addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if addr == "" {
		delete(p.listeners, network)
	} else {
		p.listeners[network] = addr
	}
}

// server is one Serve: one network's listener and its connections.
type server struct {
	p   *Proxy
	gw  network.Gateway
	log *slog.Logger
	// subnet is the network's subnet: never an upstream.
	subnet netip.Prefix
	// ctx is the connections' context, cancelled when the grace is over.
	ctx context.Context
	// stopping is Serve's context: once it is done, a kept-alive
	// connection waiting for its next request closes at once.
	stopping context.Context

	wg      sync.WaitGroup
	mu      sync.Mutex
	closing bool
	conns   map[net.Conn]struct{}
}

// accept runs the accept loop until the listener is closed.
func (s *server) accept(ctx context.Context, ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("proxy: accept: %w", err)
			}
			// Out of descriptors and the like: wait, as net/http does,
			// rather than spin or give up on the network.
			backoff = min(max(5*time.Millisecond, 2*backoff), time.Second)
			s.log.Warn("proxy accept failed; retrying", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		s.wg.Add(1)
		go s.serveConn(c)
	}
}

// drain waits for the connections for the grace period, then closes what
// remains and waits for their goroutines.
func (s *server) drain(cancel context.CancelFunc) {
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(s.p.opts.ShutdownGrace)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	s.mu.Lock()
	s.closing = true
	n := len(s.conns)
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	cancel()
	s.log.Info("proxy grace period over; connections dropped", "dropped", n)
	<-done
}

// track registers a connection to be closed when the grace is over; it
// returns false (and closes c) if that time has come.
func (s *server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// serveConn takes a slot for c, or refuses it with 503, and serves it.
func (s *server) serveConn(c net.Conn) {
	defer s.wg.Done()
	p := s.p
	select {
	case p.slots <- struct{}{}:
	default:
		p.m.request(outcomeOverCapacity, "")
		_ = c.SetWriteDeadline(time.Now().Add(overCapacityWrite))
		writeResponse(c, 503, "Too many connections", nil)
		closeLingering(c)
		return
	}
	defer func() { <-p.slots }()
	if !s.track(c) {
		return
	}
	defer s.untrack(c)
	p.active.Add(1)
	defer p.active.Add(-1)
	p.totalRequests.Add(1)
	h := &handler{s: s, c: c}
	h.serve()
}
