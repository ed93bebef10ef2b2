package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/network"
	"outcall.dev/outcall/pkg/rules"
)

// The spec's constants (S007 §2.2).
const (
	// DefaultPort is DNS_DEFAULT_PORT, --dns-port's default.
	DefaultPort = 53
	// DefaultUpstreamTimeout is DNS_UPSTREAM_TIMEOUT_MS: the wait for one
	// upstream before the next is tried.
	DefaultUpstreamTimeout = 5 * time.Second
	// DefaultCacheEntries is DNS_CACHE_MAX_ENTRIES, the LRU's capacity.
	DefaultCacheEntries = 10000
	// MaxTTL is DNS_CACHE_MAX_TTL_SECS: the cap on a cached answer's life
	// and on a direct_ip grant's.
	MaxTTL = 300 * time.Second
	// DefaultTCPIdleTimeout is DNS_TCP_TIMEOUT_MS, the spec's 10 s rather
	// than the Rust build's 5 s.
	DefaultTCPIdleTimeout = 10 * time.Second
	// ShutdownGrace is how long in-flight queries may finish once Serve's
	// context is done (S007-FR-005).
	ShutdownGrace = 5 * time.Second
	// EvaluationBudget is DNS_QUERY_LATENCY_BUDGET_MS: evaluation and
	// response construction above it log a warning (S007-FR-023).
	EvaluationBudget = 10 * time.Millisecond
)

const (
	// maxNameLen is EC-009's limit, in presentation form without the
	// trailing dot.
	maxNameLen = 253
	// maxInflightUDP bounds the UDP queries handled at once per network;
	// past it a query is dropped (the client retries), so a flood cannot
	// grow goroutines without bound.
	maxInflightUDP = 1024
	// maxTCPConns bounds the TCP connections served at once per network.
	maxTCPConns = 256
	// maxUDPReaders bounds the goroutines reading one network's UDP
	// socket.
	maxUDPReaders = 4
)

// ErrBind is wrapped by Serve's error when a socket cannot be bound
// (S007-FR-026 DnsBindError): the daemon must not run containers without
// DNS enforcement (EC-008).
var ErrBind = errors.New("dns filter: bind")

// Evaluator is the rule engine as the filter uses it; *rules.Engine
// implements it.
type Evaluator interface {
	Evaluate(context.Context, rules.Layer, *api.EvaluationContext) rules.Outcome
}

// Options configure a Filter. Zero values take the spec's defaults.
type Options struct {
	// Port is --dns-port; 0 means DefaultPort.
	Port uint16
	// Upstreams are tried in order (S007-FR-014); at least one is required.
	Upstreams []netip.AddrPort
	// Rules decides every query. Required.
	Rules Evaluator
	// Logger may be nil (discard).
	Logger *slog.Logger
	// UpstreamTimeout bounds one upstream exchange; 0 means
	// DefaultUpstreamTimeout.
	UpstreamTimeout time.Duration
	// TCPIdleTimeout closes a TCP connection that sends nothing for this
	// long; 0 means DefaultTCPIdleTimeout.
	TCPIdleTimeout time.Duration
	// CacheEntries is the LRU's capacity; 0 means DefaultCacheEntries.
	CacheEntries int
	// Restricted, if set, names addresses restricted besides the ranges of
	// package netrange, such as the host's own addresses and the Outcall
	// subnets, which only the daemon knows.
	Restricted func(netip.Addr) bool
	// Now is the clock of the cache; nil means time.Now. Tests move it to
	// count TTLs down without sleeping.
	Now func() time.Time
	// Observer, if set, is told about every decision the filter takes
	// from its decision cache instead of asking Rules (which reports the
	// decisions it makes to its own observer), so that rule hit counters
	// count every query. The daemon passes the engine's observer.
	Observer rules.Observer
}

// Filter is the DNS filter. One Filter serves every network: Serve runs
// once per gateway, and the cache, counters and metrics are shared.
type Filter struct {
	opts      Options
	log       *slog.Logger
	cache     *cache
	decisions *decisionCache
	metrics   *metrics
	flight    singleflight.Group
	upstreams []*udpPool // by Options.Upstreams
	// realClock says Options.Now is time.Now: a hit reads the clock once
	// for the cache's TTLs and its own hold time.
	realClock bool

	total, allowed, blocked atomic.Uint64
	refusedLog              logLimiter

	mu        sync.Mutex
	listeners map[string]listener // by network name
	serves    uint64              // numbers the Serve calls, for listener
}

// listener is the address one Serve call bound for a network; serve tells
// a later Serve of the same network from an earlier one ending.
type listener struct {
	addr  netip.AddrPort
	serve uint64
}

// New checks opts and returns a Filter that serves nothing until Serve.
func New(opts Options) (*Filter, error) {
	if len(opts.Upstreams) == 0 {
		return nil, errors.New("dns filter: no upstream resolver")
	}
	for _, up := range opts.Upstreams {
		if !up.IsValid() || up.Port() == 0 {
			return nil, fmt.Errorf("dns filter: invalid upstream %s", up)
		}
	}
	if opts.Rules == nil {
		return nil, errors.New("dns filter: no rule engine")
	}
	opts.Upstreams = slices.Clone(opts.Upstreams)
	if opts.Port == 0 {
		opts.Port = DefaultPort
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.UpstreamTimeout <= 0 {
		opts.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if opts.TCPIdleTimeout <= 0 {
		opts.TCPIdleTimeout = DefaultTCPIdleTimeout
	}
	if opts.CacheEntries <= 0 {
		opts.CacheEntries = DefaultCacheEntries
	}
	realClock := opts.Now == nil
	if realClock {
		opts.Now = time.Now
	}
	f := &Filter{
		opts:      opts,
		log:       opts.Logger.With("target", "dns"),
		cache:     newCache(opts.CacheEntries, opts.Now),
		decisions: newDecisionCache(opts.CacheEntries),
		listeners: map[string]listener{},
		realClock: realClock,
	}
	for _, up := range opts.Upstreams {
		f.upstreams = append(f.upstreams, newUDPPool(up))
	}
	f.metrics = newMetrics(f.cache)
	return f, nil
}

// Name names the service in the daemon's logs.
func (f *Filter) Name() string { return "dns" }

// Collectors returns the filter's Prometheus collectors, for the daemon's
// registry.
func (f *Filter) Collectors() []prometheus.Collector { return f.metrics.collectors() }

// Serve answers DNS on gw's address, UDP and TCP on Options.Port, until ctx
// is done. Both sockets come from gw, so the port is open to the network's
// containers exactly while they are held. A bind failure is returned at
// once (EC-008: the daemon must not run containers without DNS). At the
// end it stops reading and accepting, gives queries in flight up to
// ShutdownGrace, closes every socket and returns nil.
func (f *Filter) Serve(ctx context.Context, gw network.Gateway) error {
	n := gw.Network()
	pc, err := gw.ListenUDP(ctx, f.opts.Port)
	if err != nil {
		f.log.ErrorContext(ctx, "DNS bind failed", "network", n.Name, "proto", "udp", "port", f.opts.Port, "err", err)
		return fmt.Errorf("%w: network %s, udp port %d: %w", ErrBind, n.Name, f.opts.Port, err)
	}
	ln, err := gw.ListenTCP(ctx, f.opts.Port)
	if err != nil {
		pc.Close()
		f.log.ErrorContext(ctx, "DNS bind failed", "network", n.Name, "proto", "tcp", "port", f.opts.Port, "err", err)
		return fmt.Errorf("%w: network %s, tcp port %d: %w", ErrBind, n.Name, f.opts.Port, err)
	}
	addr := netip.AddrPortFrom(n.Gateway.Addr(), f.opts.Port)
	if ua, ok := pc.LocalAddr().(*net.UDPAddr); ok {
		addr = ua.AddrPort()
	}
	f.mu.Lock()
	f.serves++
	mine := listener{addr: addr, serve: f.serves}
	f.listeners[n.Name] = mine
	f.mu.Unlock()
	f.log.InfoContext(ctx, "DNS filter listening", "network", n.Name, "address", addr.String())

	// work outlives ctx by the grace, so that queries in flight can finish.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var wg sync.WaitGroup
	conns := &connSet{m: map[net.Conn]struct{}{}}
	wg.Add(2)
	go func() { defer wg.Done(); f.serveUDP(work, gw, pc, &wg) }()
	go func() { defer wg.Done(); f.serveTCP(work, gw, ln, conns, &wg) }()

	<-ctx.Done()
	// Stop accepting and reading; replies in flight may still be written.
	ln.Close()
	_ = pc.SetReadDeadline(time.Unix(1, 0))
	conns.stopReading()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(ShutdownGrace):
		f.log.Warn("DNS queries still in flight after the shutdown grace; dropped", "network", n.Name, "grace", ShutdownGrace)
		cancelWork()
	}
	pc.Close()
	conns.closeAll()
	<-done
	f.mu.Lock()
	if f.listeners[n.Name] == mine {
		delete(f.listeners, n.Name)
	}
	f.mu.Unlock()
	f.log.Info("DNS filter stopped", "network", n.Name, "address", addr.String())
	return nil
}

// serveUDP reads queries with a few readers, one per CPU the runtime
// uses (at most maxUDPReaders). A reader answers what needs no upstream
// (refused, blocked, a cache hit: microseconds of work) itself and reads
// on, with no goroutine or copy per packet; a query for the upstreams
// goes to a goroutine of its own, at most maxInflightUDP at once. Where
// the socket gives raw access (the gateway's does), a reader takes up to
// udpBatch datagrams per system call and sends the answers it decided
// itself together (readUDPBatch).
func (f *Filter) serveUDP(ctx context.Context, gw network.Gateway, pc net.PacketConn, wg *sync.WaitGroup) {
	sem := make(chan struct{}, maxInflightUDP)
	bc, batched := newBatchConn(pc)
	var readers sync.WaitGroup
	for range min(max(runtime.GOMAXPROCS(0), 1), maxUDPReaders) {
		readers.Add(1)
		go func() {
			defer readers.Done()
			if batched {
				f.readUDPBatch(ctx, gw, pc, bc, sem, wg)
				return
			}
			f.readUDP(ctx, gw, pc, sem, wg)
		}()
	}
	readers.Wait()
}

func (f *Filter) readUDP(ctx context.Context, gw network.Gateway, pc net.PacketConn, sem chan struct{}, wg *sync.WaitGroup) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return // the shutdown's deadline
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		src, ok := addrOf(from)
		if !ok {
			continue
		}
		res, p := f.decide(ctx, gw, src, buf[:n], true)
		if p == nil {
			if res.reply != nil {
				_, _ = pc.WriteTo(res.reply, from)
			}
			res.observeHold(f)
			continue
		}
		f.goUpstream(ctx, gw, pc, from, p, sem, wg)
	}
}

// goUpstream completes a query that needs an upstream in a goroutine of
// its own, at most cap(sem) at once, and writes its answer to from; over
// that, the query is dropped (the client retries).
func (f *Filter) goUpstream(ctx context.Context, gw network.Gateway, pc net.PacketConn, from net.Addr, p *pendingQuery, sem chan struct{}, wg *sync.WaitGroup) {
	select {
	case sem <- struct{}{}:
	default:
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() { <-sem }()
		res := f.complete(ctx, gw, p)
		if res.reply != nil {
			_, _ = pc.WriteTo(res.reply, from)
		}
		res.observeHold(f)
	}()
}

func (f *Filter) serveTCP(ctx context.Context, gw network.Gateway, ln net.Listener, conns *connSet, wg *sync.WaitGroup) {
	sem := make(chan struct{}, maxTCPConns)
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		select {
		case sem <- struct{}{}:
		default:
			c.Close()
			continue
		}
		if !conns.add(c) {
			c.Close()
			<-sem
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer conns.remove(c)
			f.serveConn(ctx, gw, c, conns)
		}()
	}
}

// serveConn answers the queries of one TCP connection, one after the
// other, until the client closes, stays idle for TCPIdleTimeout, or sends
// something that is not a query (EC-004: the connection is closed).
func (f *Filter) serveConn(ctx context.Context, gw network.Gateway, c net.Conn, conns *connSet) {
	defer c.Close()
	src, ok := addrOf(c.RemoteAddr())
	if !ok {
		return
	}
	var lenBuf [2]byte
	for {
		if ctx.Err() != nil {
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(f.opts.TCPIdleTimeout))
		if conns.isStopped() {
			return // after the deadline: shutdown's cannot be overwritten
		}
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint16(lenBuf[:])
		if n == 0 {
			return
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		res := f.handle(ctx, gw, src, msg, false)
		if res.reply == nil {
			return
		}
		out := make([]byte, 2+len(res.reply))
		binary.BigEndian.PutUint16(out, uint16(len(res.reply)))
		copy(out[2:], res.reply)
		_ = c.SetWriteDeadline(time.Now().Add(f.opts.TCPIdleTimeout))
		_, err := c.Write(out)
		res.observeHold(f)
		if err != nil {
			return
		}
	}
}

// connSet tracks a network's TCP connections, so that shutdown can stop
// their reads and, after the grace, close them.
type connSet struct {
	mu      sync.Mutex
	m       map[net.Conn]struct{}
	stopped bool
}

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.m[c] = struct{}{}
	return true
}

func (s *connSet) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, c)
}

// stopReading ends every idle wait: a connection finishes the query it is
// answering, if any, and closes.
func (s *connSet) stopReading() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	for c := range s.m {
		_ = c.SetReadDeadline(time.Unix(1, 0))
	}
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.m {
		c.Close()
	}
}

func addrOf(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	}
	return netip.Addr{}, false
}

// Status is GET /api/v1/dns (S007-IF-001). Running means at least one
// network is served; ListenAddress is the default network's gateway, or
// the first listener's when the default network is not served.
func (f *Filter) Status() api.DNSFilterStatus {
	st := api.DNSFilterStatus{Upstreams: []string{}}
	for _, up := range f.opts.Upstreams {
		st.Upstreams = append(st.Upstreams, up.String())
	}
	f.mu.Lock()
	names := make([]string, 0, len(f.listeners))
	for name := range f.listeners {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		st.Listeners = append(st.Listeners, f.listeners[name].addr.String())
	}
	if len(names) > 0 {
		l, ok := f.listeners[api.DefaultNetworkName]
		if !ok {
			l = f.listeners[names[0]]
		}
		first := l.addr
		st.Running = true
		st.ListenAddress = first.Addr().String()
		st.ListenPort = first.Port()
	}
	f.mu.Unlock()
	if !st.Running {
		return st
	}
	st.CacheEntries = f.cache.len()
	st.QueriesTotal = f.total.Load()
	st.QueriesAllowed = f.allowed.Load()
	st.QueriesBlocked = f.blocked.Load()
	return st
}

// CacheStats is GET /api/v1/dns/cache (S007-IF-002).
func (f *Filter) CacheStats() api.DNSCacheStats {
	h, m, e := f.cache.stats()
	return api.DNSCacheStats{Entries: f.cache.len(), MaxEntries: f.opts.CacheEntries, Hits: h, Misses: m, Evictions: e}
}

// CacheEntries lists the live cache entries, most recently used first,
// for GET /api/v1/dns/cache?entries=true.
func (f *Filter) CacheEntries() []api.DNSCacheEntry {
	out := []api.DNSCacheEntry{}
	for _, v := range f.cache.snapshot() {
		out = append(out, api.DNSCacheEntry{
			Hostname:         v.key.name,
			RecordType:       typeString(v.key.qtype),
			TTLRemainingSecs: v.left,
			CachedAt:         v.stored.UTC().Format(time.RFC3339),
		})
	}
	return out
}

// Flush empties the cache and returns how many entries it held: POST
// /api/v1/dns/cache/flush, and what the daemon calls after every
// successful rule reload (S007-FR-018), so no answer fetched under the old
// rules is served again.
//
// It also forgets every remembered decision, although a decision is only
// ever used under the rule set that made it (decisionCache).
func (f *Filter) Flush() int {
	f.decisions.flush()
	n := f.cache.flush()
	f.log.Info("DNS cache flushed", "entries", n)
	return n
}
