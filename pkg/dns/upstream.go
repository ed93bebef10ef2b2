package dns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// ErrUpstream is wrapped by every failure to get an answer from the
// upstreams (S007-FR-026 DnsUpstreamError): the client gets SERVFAIL.
var ErrUpstream = errors.New("dns upstream")

// ParseUpstreams parses --dns-upstream: comma-separated "IP[:port]"
// entries, IPv6 written "[addr]:port" or bare; a bare address means port 53
// (S007-FR-012). Unlike the Rust build, an entry that does not parse is an
// error naming it: a typo must not silently leave fewer resolvers.
func ParseUpstreams(s string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		ap, err := parseUpstream(f)
		if err != nil {
			return nil, fmt.Errorf("--dns-upstream entry %q: %w", f, err)
		}
		out = append(out, ap)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--dns-upstream %q names no upstream", s)
	}
	return out, nil
}

func parseUpstream(f string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(f); err == nil {
		if a.Zone() != "" {
			return netip.AddrPort{}, errors.New("zoned addresses are not supported")
		}
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	if strings.HasPrefix(f, "[") && strings.HasSuffix(f, "]") {
		a, err := netip.ParseAddr(f[1 : len(f)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return netip.AddrPort{}, errors.New("not an IPv6 address in brackets")
		}
		return netip.AddrPortFrom(a, 53), nil
	}
	ap, err := netip.ParseAddrPort(f)
	if err != nil {
		return netip.AddrPort{}, errors.New("not IP, IP:port or [IPv6]:port")
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, errors.New("port 0")
	}
	if ap.Addr().Zone() != "" {
		return netip.AddrPort{}, errors.New("zoned addresses are not supported")
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// ResolvConfUpstreams returns the nameserver lines of a resolv.conf
// (S007-FR-013), port 53, in order. A file with no usable nameserver is an
// error rather than the Rust build's silent 8.8.8.8: in a test or an
// air-gapped host a public resolver is never a safe guess.
func ResolvConfUpstreams(path string) ([]netip.AddrPort, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read DNS upstreams: %w", err)
	}
	defer fh.Close()
	var out []netip.AddrPort
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(fields[1])
		if err != nil || a.Zone() != "" {
			continue // a zoned link-local server cannot be dialled from here
		}
		ap := netip.AddrPortFrom(a.Unmap(), 53)
		if !slices.Contains(out, ap) {
			out = append(out, ap)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read DNS upstreams from %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("read DNS upstreams: %s has no nameserver line; set --dns-upstream", path)
	}
	return out, nil
}

// resolve sends q to the upstreams in order (S007-FR-014/015): UDP first,
// TCP again when the UDP reply is truncated (FR-020); a timeout, an error,
// or an answer other than NOERROR or NXDOMAIN (SERVFAIL, REFUSED, ...:
// EC-013) moves on to the next. The reply is shared between the callers
// singleflight joins: it must not be modified.
func (f *Filter) resolve(ctx context.Context, q *mdns.Msg) (*mdns.Msg, error) {
	var errs []error
	for i, up := range f.opts.Upstreams {
		start := time.Now()
		r, err := f.exchangeOne(ctx, q, f.upstreams[i])
		f.metrics.upstreamSeconds.Observe(time.Since(start).Seconds())
		if err == nil {
			return r, nil
		}
		f.log.WarnContext(ctx, "DNS upstream failed; trying the next", "upstream", up.String(), "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%w: every upstream failed: %w", ErrUpstream, errors.Join(errs...))
}

func (f *Filter) exchangeOne(ctx context.Context, q *mdns.Msg, up *udpPool) (*mdns.Msg, error) {
	m := q.Copy()
	m.Id = mdns.Id()
	r, err := f.exchangeUDP(ctx, m, up)
	if err == nil && r.Truncated {
		r, err = f.exchangeTCP(ctx, m, up.addr)
	}
	if err != nil {
		return nil, err
	}
	if r.Truncated {
		return nil, errors.New("truncated reply over TCP")
	}
	if len(r.Question) != 1 || !sameQuestion(r.Question[0], q.Question[0]) {
		return nil, errors.New("reply is for another question")
	}
	if r.Rcode != mdns.RcodeSuccess && r.Rcode != mdns.RcodeNameError {
		return nil, fmt.Errorf("answered %s", mdns.RcodeToString[r.Rcode])
	}
	return r, nil
}

// exchangeUDP sends m over one of up's sockets and returns the first reply
// with m's ID, as mdns.Client does: a reply with another ID is a late one
// to an earlier query, and is skipped. Only a socket whose exchange ended
// with its reply goes back to the pool.
func (f *Filter) exchangeUDP(ctx context.Context, m *mdns.Msg, up *udpPool) (*mdns.Msg, error) {
	wire, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("udp exchange: pack: %w", err)
	}
	c, err := up.get()
	if err != nil {
		return nil, fmt.Errorf("udp exchange: %w", err)
	}
	deadline := time.Now().Add(f.opts.UpstreamTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.conn.SetDeadline(deadline)
	// The context's end (the shutdown's, after the grace) ends the wait.
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	r, err := readReply(c.conn, wire, m.Id)
	if clean := stop(); err != nil || !clean {
		up.discard(c) // its deadline may be the context's
	} else {
		up.put(c)
	}
	if err != nil {
		return nil, fmt.Errorf("udp exchange: %w", err)
	}
	return r, nil
}

// readReply writes wire on c and reads until the reply with ID id.
func readReply(c *net.UDPConn, wire []byte, id uint16) (*mdns.Msg, error) {
	if _, err := c.Write(wire); err != nil {
		return nil, err
	}
	bp := replyBufs.Get().(*[]byte)
	defer replyBufs.Put(bp)
	for {
		n, err := c.Read(*bp)
		if err != nil {
			return nil, err
		}
		r := new(mdns.Msg)
		if err := r.Unpack((*bp)[:n]); err != nil {
			return nil, err
		}
		if r.Id == id {
			return r, nil
		}
	}
}

// replyBufs are the upstream read buffers: a UDP reply may be as large as
// the client's EDNS size allows, up to 64 KiB.
var replyBufs = sync.Pool{New: func() any { b := make([]byte, mdns.MaxMsgSize); return &b }}

func (f *Filter) exchangeTCP(ctx context.Context, m *mdns.Msg, up netip.AddrPort) (*mdns.Msg, error) {
	c := &mdns.Client{Net: "tcp", Timeout: f.opts.UpstreamTimeout}
	ctx, cancel := context.WithTimeout(ctx, f.opts.UpstreamTimeout)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, up.String())
	if err != nil {
		return nil, fmt.Errorf("tcp exchange: %w", err)
	}
	return r, nil
}

// Upstream sockets. Each exchange used to open and close a UDP socket of
// its own; a pool keeps connected ones for reuse, and keeps what made the
// per-exchange socket safe: the kernel accepts replies from the upstream's
// address only (connected), every query has a random ID, a reply must
// carry it and the question, and the source port still changes often,
// for an off-path attacker must guess it with the ID: a socket serves at
// most upstreamSocketUses exchanges and lives at most upstreamSocketAge,
// on a port the kernel picks at random. A socket whose exchange failed or
// timed out is closed, never reused, so that a late reply cannot be taken
// for the next query's (IDs are checked all the same).
const (
	upstreamSocketUses = 16
	upstreamSocketAge  = 5 * time.Second
	// upstreamIdleSockets bounds the sockets kept open between exchanges,
	// per upstream; more may be open while exchanges are in flight.
	upstreamIdleSockets = 64
)

// udpPool holds the idle connected sockets to one upstream. A socket is
// the pool's while idle and an exchange's while in use; the pool's are
// closed when they are taken past their age, and otherwise live as long as
// the Filter (at most upstreamIdleSockets of them).
type udpPool struct {
	addr netip.AddrPort
	mu   sync.Mutex
	idle []*upstreamConn
}

type upstreamConn struct {
	conn *net.UDPConn
	uses int
	born time.Time
}

func newUDPPool(addr netip.AddrPort) *udpPool { return &udpPool{addr: addr} }

// get returns an idle socket young enough, or a new one.
func (p *udpPool) get() (*upstreamConn, error) {
	now := time.Now()
	p.mu.Lock()
	for len(p.idle) > 0 {
		c := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if now.Sub(c.born) < upstreamSocketAge {
			p.mu.Unlock()
			c.uses++
			return c, nil
		}
		c.conn.Close()
	}
	p.mu.Unlock()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(p.addr))
	if err != nil {
		return nil, err
	}
	return &upstreamConn{conn: conn, uses: 1, born: now}, nil
}

// put returns c after an exchange that got its reply.
func (p *udpPool) put(c *upstreamConn) {
	if c.uses >= upstreamSocketUses || time.Since(c.born) >= upstreamSocketAge {
		c.conn.Close()
		return
	}
	p.mu.Lock()
	if len(p.idle) < upstreamIdleSockets {
		p.idle = append(p.idle, c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		c.conn.Close()
	}
}

// discard closes c after an exchange that failed.
func (p *udpPool) discard(c *upstreamConn) { c.conn.Close() }

func sameQuestion(a, b mdns.Question) bool {
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

// LookupIPv4 resolves host's A records through the filter's upstreams, the
// proxy's resolver: never the machine's resolver, so that a test's names
// go only to the test's own upstream. No rule is evaluated (the proxy
// evaluates the request) and no address is filtered (the proxy applies the
// restricted-address policy of the rule that allowed it). An IPv4 literal
// is returned as it is.
func (f *Filter) LookupIPv4(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Is4() || a.Is4In6() {
			return []netip.Addr{a.Unmap()}, nil
		}
		return nil, fmt.Errorf("lookup %s: not an IPv4 address", host)
	}
	name := strings.TrimSuffix(host, ".")
	if name == "" || len(name) > maxNameLen {
		return nil, fmt.Errorf("lookup %q: not a host name", host)
	}
	if _, ok := mdns.IsDomainName(name); !ok {
		return nil, fmt.Errorf("lookup %q: not a host name", host)
	}
	q := new(mdns.Msg)
	q.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
	v, err, _ := f.flight.Do("lookup|"+strings.ToLower(name), func() (any, error) { return f.resolve(ctx, q) })
	if err != nil {
		return nil, fmt.Errorf("lookup %s: %w", name, err)
	}
	r := v.(*mdns.Msg)
	if r.Rcode == mdns.RcodeNameError {
		return nil, fmt.Errorf("lookup %s: no such host", name)
	}
	var out []netip.Addr
	for _, rr := range r.Answer {
		if a, ok := rr.(*mdns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A); ok && !slices.Contains(out, ip.Unmap()) {
				out = append(out, ip.Unmap())
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("lookup %s: no IPv4 address", name)
	}
	return out, nil
}
