package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"outcall.dev/outcall/pkg/netrange"
)

// upstreamError is a failed resolution or dial with the answer it gets
// (S006 forward path step 7).
type upstreamError struct {
	code    int
	body    string
	outcome string
	err     error
}

// resolve returns the addresses to dial for t: the literal itself, or what
// Options.Resolve returns, IPv4 only, without restricted addresses unless
// private is set (S006-FR-026), without repeats, at most 64. Addresses of
// this host are restricted too (DESIGN section 4): the proxy dials from the
// host, so a name resolving to one of them would reach the host's own
// services. The network's own subnet is never dialled, whatever the rule
// says: agents never reach each other, and through the proxy they would.
func (h *handler) resolve(t target, private bool) ([]netip.Addr, *upstreamError) {
	o := h.s.p.opts
	var found []netip.Addr
	if t.IP.IsValid() {
		found = []netip.Addr{t.IP}
	} else {
		ctx, cancel := context.WithTimeout(h.s.ctx, o.ConnectTimeout)
		var err error
		found, err = o.Resolve(ctx, t.Host)
		timedOut := ctx.Err() != nil
		cancel()
		if err != nil {
			if timedOut || isTimeout(err) {
				return nil, &upstreamError{504, bodyUpstreamTimeout, outcomeUpstreamTimeout, err}
			}
			return nil, &upstreamError{502, bodyUpstreamFailed, outcomeUpstreamFailed, err}
		}
	}
	addrs, restricted, err := filterAddrs(found, private, h.s.subnet, h.s.p.opts.Restricted)
	switch {
	case err != nil:
		return nil, &upstreamError{502, bodyUpstreamFailed, outcomeUpstreamFailed, err}
	case len(addrs) == 0 && restricted:
		return nil, &upstreamError{403, bodyRestricted, outcomeRestricted, errors.New("only restricted addresses")}
	case len(addrs) == 0:
		return nil, &upstreamError{502, bodyUpstreamFailed, outcomeUpstreamFailed, errors.New("no IPv4 address")}
	}
	return addrs, nil
}

// filterAddrs keeps the IPv4 addresses that may be dialled; restricted
// reports whether any were dropped as restricted. isHost names the
// addresses restricted beyond netrange's (Options.Restricted); nil means
// the host's interface addresses, read now.
func filterAddrs(found []netip.Addr, private bool, subnet netip.Prefix, isHost func(netip.Addr) bool) (addrs []netip.Addr, restricted bool, err error) {
	if !private && isHost == nil {
		own, err := hostAddrs()
		if err != nil {
			return nil, false, err
		}
		isHost = func(a netip.Addr) bool { return slices.Contains(own, a) }
	}
	for _, a := range found {
		a = a.Unmap()
		if !a.Is4() || slices.Contains(addrs, a) {
			continue
		}
		if subnet.Contains(a) || !private && (netrange.IsRestricted(a) || isHost(a)) {
			restricted = true
			continue
		}
		addrs = append(addrs, a)
		if len(addrs) == maxUpstreamAddrs {
			break
		}
	}
	return addrs, restricted, nil
}

// hostAddrs returns this host's IPv4 addresses. Failing to read them fails
// the request: without them the proxy cannot tell the host from the web.
func hostAddrs() ([]netip.Addr, error) {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ifa := range ifas {
		if p, err := netip.ParsePrefix(ifa.String()); err == nil && p.Addr().Is4() {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}

// dial connects to the addresses in order under one ConnectTimeout and
// returns the first connection, tracked for shutdown. It dials exactly the
// resolved addresses: no name reaches the dialer, so nothing can resolve
// the name again to something the checks never saw.
func (h *handler) dial(addrs []netip.Addr, port uint16) (net.Conn, *upstreamError) {
	o := h.s.p.opts
	ctx, cancel := context.WithTimeout(h.s.ctx, o.ConnectTimeout)
	defer cancel()
	var last error
	for _, a := range addrs {
		c, err := o.Dial(ctx, "tcp4", netip.AddrPortFrom(a, port).String())
		if err == nil {
			if !h.s.track(c) {
				return nil, &upstreamError{502, bodyUpstreamFailed, outcomeUpstreamFailed, errors.New("proxy is shutting down")}
			}
			return c, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil || isTimeout(last) {
		return nil, &upstreamError{504, bodyUpstreamTimeout, outcomeUpstreamTimeout, last}
	}
	return nil, &upstreamError{502, bodyUpstreamFailed, outcomeUpstreamFailed, last}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// idleWatch calls onIdle once when nothing has been relayed in either
// direction for timeout (S006-FR-011). Relays touch it on every transfer;
// one timer serves both directions, so a long download with a silent
// client is not idle.
type idleWatch struct {
	last    atomic.Int64 // unix nanoseconds of the last transfer
	timeout time.Duration
	mu      sync.Mutex
	timer   *time.Timer
	done    bool
}

func newIdleWatch(timeout time.Duration, onIdle func()) *idleWatch {
	w := &idleWatch{timeout: timeout}
	w.touch()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer = time.AfterFunc(timeout, func() { w.check(onIdle) })
	return w
}

func (w *idleWatch) check(onIdle func()) {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	if rest := w.timeout - time.Since(time.Unix(0, w.last.Load())); rest > 0 {
		w.timer.Reset(rest)
		w.mu.Unlock()
		return
	}
	w.done = true
	w.mu.Unlock()
	onIdle()
}

func (w *idleWatch) touch() { w.last.Store(time.Now().UnixNano()) }

func (w *idleWatch) stop() {
	w.mu.Lock()
	w.done = true
	w.timer.Stop()
	w.mu.Unlock()
}

// copyIdle copies from src to dst, at most limit bytes (limit < 0: until
// EOF), touching idle on every read and write and counting bytes into
// counter if given. Reaching limit or EOF is success.
func copyIdle(dst io.Writer, src io.Reader, limit int64, idle *idleWatch, counter prometheus.Counter) (int64, error) {
	buf := make([]byte, relayBufferSize)
	var total int64
	for limit < 0 || total < limit {
		b := buf
		if limit >= 0 && int64(len(b)) > limit-total {
			b = b[:limit-total]
		}
		n, rerr := src.Read(b)
		if n > 0 {
			idle.touch()
			if err := writeFull(dst, b[:n], idle); err != nil {
				return total, err
			}
			total += int64(n)
			if counter != nil {
				counter.Add(float64(n))
			}
		}
		if rerr == io.EOF {
			if limit >= 0 && total < limit {
				return total, io.ErrUnexpectedEOF
			}
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
	return total, nil
}

func writeFull(dst io.Writer, b []byte, idle *idleWatch) error {
	if len(b) == 0 {
		return nil
	}
	_, err := dst.Write(b)
	idle.touch()
	return err
}
