package proxy

import (
	"io"
	"net"
	"sync"
	"time"
)

// connect serves a CONNECT (S006-FR-004/005/008/009/017/018, the tunnel
// path of section 1.4). Everything that can be refused with an HTTP answer
// is decided before the 200: the target, framing, port, the rules on the
// CONNECT host, the resolution. After the 200 a failure only closes.
func (h *handler) connect(req *request, prefix []byte) {
	p := h.s.p
	t, err := parseAuthority(req.Target, defaultConnectPort)
	if err != nil {
		h.fail(400, bodyBadConnect, outcomeBadRequest)
		return
	}
	if !connectFramingOK(req, t, prefix) {
		h.fail(400, bodyConnectFraming, outcomeBadRequest)
		return
	}
	if deniedConnectPorts[t.Port] {
		p.totalBlocked.Add(1)
		h.log.Warn("proxy refused a CONNECT to a non-HTTPS service port", "host", t.Host, "port", t.Port, "method", methodConnect)
		h.fail(403, bodyPortDenied, outcomePortDenied)
		return
	}
	// The CONNECT request's own headers are in the context, as S006-FR-007
	// says (the original passed none); nothing from inside TLS ever is.
	headers := req.headerMap()
	out := h.evaluate(requestContext(t, methodConnect, "/", t.Host, headers, 0))
	if !allowed(out) {
		h.block(out, methodConnect, t)
		return
	}
	log := h.log.With("host", t.Host, "port", t.Port, "method", methodConnect, "rule", out.RuleID())
	private := allowPrivate(out)
	addrs, uerr := h.resolve(t, private)
	if uerr != nil {
		h.upstreamFailed(log, uerr, out)
		return
	}
	_ = h.c.SetWriteDeadline(time.Now().Add(p.opts.ClientHelloTimeout))
	if _, err := io.WriteString(h.c, connectEstablished); err != nil {
		p.m.request(outcomeClientGone, metricRule(out))
		return
	}
	_ = h.c.SetWriteDeadline(time.Time{})

	// From here on there is no HTTP answer, only a close (S006-FR-021).
	_ = h.c.SetReadDeadline(time.Now().Add(p.opts.ClientHelloTimeout))
	rec, err := readClientHelloRecord(h.c)
	_ = h.c.SetReadDeadline(time.Time{})
	var sni string
	if err == nil {
		sni, err = ParseClientHello(rec)
	}
	if err != nil {
		p.totalBlocked.Add(1)
		log.Warn("security: proxy closed a tunnel without a readable TLS ClientHello", "err", err)
		p.m.observe(outcomeBadClientHello, metricRule(out), h.start)
		return
	}
	if sni != "" && sni != t.Host {
		// Both names must be allowed: the CONNECT host is where the bytes
		// go, the SNI is what the server will serve.
		out2 := h.evaluate(requestContext(t, methodConnect, "/", sni, headers, 0))
		if !allowed(out2) {
			p.totalBlocked.Add(1)
			log.Error("security: proxy closed a tunnel whose TLS server name is blocked", "sni", sni, "reason", blockReason(out2))
			p.m.observe(outcomeSNIBlocked, metricRule(out2), h.start)
			return
		}
		if private && !allowPrivate(out2) {
			// Restricted addresses the CONNECT host's rule opened stay
			// closed unless the SNI's rule opens them too.
			if addrs, _, err = filterAddrs(addrs, false, h.s.subnet, h.s.p.opts.Restricted); err != nil || len(addrs) == 0 {
				p.totalBlocked.Add(1)
				log.Warn("proxy closed a tunnel: the server name's rule does not allow the restricted upstream", "sni", sni)
				p.m.observe(outcomeRestricted, metricRule(out2), h.start)
				return
			}
		}
	}
	up, uerr := h.dial(addrs, t.Port)
	if uerr != nil {
		p.totalBlocked.Add(1)
		log.Warn("proxy closed a tunnel: upstream unreachable", "err", uerr.err)
		p.m.observe(uerr.outcome, metricRule(out), h.start)
		return
	}
	defer h.s.untrack(up)
	defer up.Close()
	log.Debug("proxy opened a tunnel", "sni", sni)
	p.m.observe(outcomeAllowed, metricRule(out), h.start)
	h.tunnel(up, rec)
}

// connectFramingOK checks a CONNECT's headers: exactly one Host naming the
// CONNECT authority, no body framing, and no bytes after the head (the
// client must wait for the 200; bytes sent early would be bytes the proxy
// never looked at).
func connectFramingOK(req *request, t target, prefix []byte) bool {
	hosts := req.values(headerHost)
	if len(hosts) != 1 || !sameAuthority(hosts[0], defaultConnectPort, t) {
		return false
	}
	if req.has(headerTransferEncode) || req.has("Expect") || req.has("Upgrade") {
		return false
	}
	if cl, code := contentLength(req, 0); code != 0 || cl != 0 {
		return false
	}
	return len(prefix) == 0
}

// tunnel writes the ClientHello upstream unchanged and relays both ways
// until both sides are done or the tunnel is idle. An EOF from one side
// half-closes the other; an error closes both.
func (h *handler) tunnel(up net.Conn, rec []byte) {
	m := h.s.p.m
	closeBoth := sync.OnceFunc(func() { h.c.Close(); up.Close() })
	idle := newIdleWatch(h.s.p.opts.IdleTimeout, closeBoth)
	defer idle.stop()
	defer closeBoth()
	toUp, toClient := m.bytes.WithLabelValues(directionUpstream), m.bytes.WithLabelValues(directionDownstream)
	if err := writeFull(up, rec, idle); err != nil {
		return
	}
	toUp.Add(float64(len(rec)))
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := copyIdle(up, h.c, -1, idle, toUp); err != nil {
			closeBoth()
			return
		}
		closeWrite(up)
	})
	if _, err := copyIdle(h.c, up, -1, idle, toClient); err != nil {
		closeBoth()
	} else {
		closeWrite(h.c)
	}
	wg.Wait()
}
