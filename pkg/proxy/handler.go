package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/rules"
)

// Response bodies (S006 sections 1.4-1.6); clients and tests match them
// exactly.
const (
	bodyIdentity         = "Managed container identity required"
	bodyHeaderTimeout    = "Request headers timed out"
	bodyHeadersTooLarge  = "Request header fields too large"
	bodyMalformed        = "Malformed HTTP request"
	bodyHealthBody       = "Unexpected health-check body"
	bodyBadURI           = "Invalid absolute-form URI"
	bodyHostMismatch     = "Host header does not match request URI authority"
	bodyFraming          = "Unsupported HTTP body framing"
	bodyContentLength    = "Invalid Content-Length"
	bodyTooLarge         = "Payload too large"
	bodyTrailing         = "HTTP request contains trailing data"
	bodyBadConnect       = "Invalid CONNECT target"
	bodyConnectFraming   = "Invalid CONNECT headers or body framing"
	bodyPortDenied       = "CONNECT port is not allowed"
	bodyRestricted       = "Upstream resolved to a restricted address"
	bodyUpstreamFailed   = "Upstream connection failed"
	bodyUpstreamTimeout  = "Upstream operation timed out"
	bodyUpstreamWrite    = "Failed to write request to upstream"
	bodyHealth           = `{"status":"ok"}`
	healthPath           = "/outcall-health"
	blockReasonHeader    = "X-Outcall-Block-Reason"
	reasonDefaultPolicy  = "default policy"
	reasonEngineFailed   = "rule engine unavailable"
	connectEstablished   = "HTTP/1.1 200 Connection Established\r\n\r\n"
	lingerTimeout        = 500 * time.Millisecond
	lingerMaxBytes       = 256 << 10
	relayBufferSize      = 32 << 10
	protocolTCP          = "tcp"
	methodConnect        = "CONNECT"
	defaultHTTPPort      = 80
	defaultConnectPort   = 443
	headerHost           = "Host"
	headerContentLength  = "Content-Length"
	headerConnection     = "Connection"
	headerTransferEncode = "Transfer-Encoding"
)

// hopByHop are the headers never forwarded (S006-FR-020): they describe
// the client's connection to the proxy, and Proxy-Authorization would hand
// the client's proxy credentials to the upstream (S006-FR-014).
var hopByHop = map[string]bool{
	"connection": true, "proxy-connection": true, "keep-alive": true,
	"transfer-encoding": true, "te": true, "trailer": true, "upgrade": true,
	"proxy-authorization": true, "proxy-authenticate": true,
}

// deniedConnectPorts are the well-known non-HTTPS service ports a CONNECT
// may not reach whatever the rules say (S006-EC-009, the original
// implementation's list): a tunnel to SMTP, SSH or a database is not web
// traffic, and a broad hostname rule must not open one.
var deniedConnectPorts = map[uint16]bool{
	20: true, 21: true, 22: true, 23: true, 25: true, 53: true, 110: true,
	119: true, 143: true, 389: true, 445: true, 465: true, 587: true,
	636: true, 993: true, 995: true, 1433: true, 1521: true, 3306: true,
	3389: true, 5432: true, 5672: true, 5900: true, 6379: true, 9200: true,
	9300: true, 11211: true, 27017: true,
}

var (
	errHeaderTimeout = errors.New("request headers timed out")
	errHeadTooLarge  = errors.New("request head too large")
	errKeptIdle      = errors.New("kept-alive connection idle or closed")
)

// handler serves one client connection: requests one after another while
// the client keeps the connection alive (HTTP/1.1 without `Connection:
// close`), each read, evaluated and answered on its own, so no request ever
// rides on an earlier one's decision. Any refusal, a CONNECT or a response
// without framing ends the connection.
type handler struct {
	s   *server
	c   net.Conn
	ep  endpoint.Endpoint
	src netip.Addr
	log *slog.Logger
	// start is when the current request head was complete.
	start time.Time
	// buf holds the request head being read; bytes after one request are
	// the start of the next.
	buf []byte
	// up is the upstream connection the previous request left open, kept
	// for the next request to the same target on this client connection
	// only: never shared between clients, so never between identities.
	up *upstreamConn
}

func (h *handler) serve() {
	p := h.s.p
	defer h.c.Close()
	defer h.dropUpstream()
	ap, err := netip.ParseAddrPort(h.c.RemoteAddr().String())
	var ok bool
	if err == nil {
		h.src = ap.Addr().Unmap()
		h.ep, ok = h.s.gw.Identify(h.src)
	}
	h.log = h.s.log.With("src", h.src.String())
	h.start = time.Now()
	if !ok {
		// Before reading anything: an unknown peer learns nothing, not even
		// whether its request would parse (S006-FR-025, EC-015).
		p.totalBlocked.Add(1)
		h.log.Warn("proxy refused a peer that is not a managed container")
		h.fail(403, bodyIdentity, outcomeIdentity)
		return
	}
	h.log = h.log.With("agent", h.ep.Name, "identity", h.ep.Identity)
	h.buf = make([]byte, p.opts.MaxHeaderBytes)
	var pending []byte
	for first := true; ; first = false {
		head, rest, err := h.readHead(pending, first)
		h.start = time.Now()
		switch {
		case errors.Is(err, errKeptIdle):
			return
		case errors.Is(err, errHeaderTimeout):
			h.fail(408, bodyHeaderTimeout, outcomeHeaderTimeout)
			return
		case errors.Is(err, errHeadTooLarge):
			h.fail(431, bodyHeadersTooLarge, outcomeHeadersTooLarge)
			return
		case err != nil:
			p.m.request(outcomeClientGone, metricsRuleLabelNoMatch)
			return
		}
		req, err := parseRequest(head)
		if err != nil {
			h.log.Debug("proxy refused a malformed request", "err", err)
			h.fail(400, bodyMalformed, outcomeBadRequest)
			return
		}
		method := strings.ToUpper(req.Method)
		if method == http.MethodGet && req.Target == healthPath {
			if len(rest) > 0 {
				h.fail(400, bodyHealthBody, outcomeBadRequest)
				return
			}
			p.m.observe(outcomeHealth, metricsRuleLabelNoMatch, h.start)
			writeRaw(h.c, 200, "application/json", bodyHealth, nil)
			closeLingering(h.c)
			return
		}
		if method == methodConnect {
			h.dropUpstream()
			h.connect(req, rest)
			return
		}
		var again bool
		if pending, again = h.forward(req, method, rest); !again {
			return
		}
	}
}

// readHead reads until the blank line that ends a request head, starting
// with pending (bytes the client sent after the previous request). The
// whole head must arrive within HeaderTimeout of its first byte
// (slow-loris clients get 408) and fit MaxHeaderBytes (431). Before a later
// request's first byte the client may wait KeepAliveTimeout, or until the
// proxy shuts down: then errKeptIdle, and the connection just closes. It
// returns the head and whatever body bytes came with it.
func (h *handler) readHead(pending []byte, first bool) (head, rest []byte, err error) {
	o := h.s.p.opts
	buf := h.buf
	n := copy(buf, pending)
	if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
		return buf[:i+4], buf[i+4 : n], nil
	}
	defer h.c.SetReadDeadline(time.Time{})
	waiting := !first && n == 0
	if waiting {
		_ = h.c.SetReadDeadline(time.Now().Add(o.KeepAliveTimeout))
		// Shutdown need not wait out a client that keeps a connection
		// open with nothing to send.
		stop := context.AfterFunc(h.s.stopping, func() { _ = h.c.SetReadDeadline(time.Unix(1, 0)) })
		defer stop()
	} else {
		_ = h.c.SetReadDeadline(time.Now().Add(o.HeaderTimeout))
	}
	for {
		m, err := h.c.Read(buf[n:])
		if m > 0 && waiting {
			waiting = false
			_ = h.c.SetReadDeadline(time.Now().Add(o.HeaderTimeout))
		}
		from := max(0, n-3)
		n += m
		if i := bytes.Index(buf[from:n], []byte("\r\n\r\n")); i >= 0 {
			end := from + i + 4
			return buf[:end], buf[end:n], nil
		}
		if err != nil {
			switch {
			case waiting && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, io.EOF)):
				return nil, nil, errKeptIdle
			case errors.Is(err, os.ErrDeadlineExceeded):
				return nil, nil, errHeaderTimeout
			}
			return nil, nil, err
		}
		if n == len(buf) {
			return nil, nil, errHeadTooLarge
		}
	}
}

// fail answers with a generic error response and closes.
func (h *handler) fail(code int, body, outcome string) {
	h.s.p.m.observe(outcome, metricsRuleLabelNoMatch, h.start)
	writeResponse(h.c, code, body, nil)
	closeLingering(h.c)
}

// evaluate asks the rules, failing closed: a panic in the engine blocks
// like an engine error does (S006-FR-023, EC-008).
func (h *handler) evaluate(ec *api.EvaluationContext) (out rules.Outcome) {
	defer func() {
		if r := recover(); r != nil {
			h.log.Error("rule engine failed; blocking", "panic", fmt.Sprint(r))
			out = rules.Outcome{Layer: rules.LayerProxy, Decision: api.DecisionBlock, Err: fmt.Errorf("rule engine panic: %v", r)}
		}
	}()
	ec.Agent = &api.AgentContext{Name: h.ep.AgentName()}
	return h.s.p.opts.Rules.Evaluate(h.s.ctx, rules.LayerProxy, ec)
}

// allowed reports whether out allows; anything but an explicit allow
// blocks.
func allowed(out rules.Outcome) bool {
	return out.Decision == api.DecisionAllow && out.Err == nil
}

// blockReason is X-Outcall-Block-Reason: the deciding rule, or "default
// policy" when none matched.
func blockReason(out rules.Outcome) string {
	switch {
	case out.Rule != nil:
		return out.Rule.ID
	case out.Err != nil:
		return reasonEngineFailed
	}
	return reasonDefaultPolicy
}

// metricRule is the rule label of an evaluated outcome.
func metricRule(out rules.Outcome) string {
	if out.Rule == nil && out.Err != nil {
		return metricsRuleLabelNoMatch
	}
	return out.RuleID()
}

// allowPrivate reports whether the deciding rule opts into restricted
// upstream addresses.
func allowPrivate(out rules.Outcome) bool {
	return out.Rule != nil && out.Rule.Egress != nil && out.Rule.Egress.AllowPrivateIPs
}

// block answers a rule's block with the block format (S006-IF-004).
func (h *handler) block(out rules.Outcome, method string, t target) {
	p := h.s.p
	p.totalBlocked.Add(1)
	reason := blockReason(out)
	h.log.Warn("proxy blocked a request", "host", t.Host, "port", t.Port, "method", method, "reason", reason)
	p.m.observe(outcomeBlocked, metricRule(out), h.start)
	writeResponse(h.c, 403, "Blocked by outcall: "+reason, []header{{blockReasonHeader, reason}})
	closeLingering(h.c)
}

// context builds the rule context of a request to t.
func requestContext(t target, method, path, host string, headers map[string]string, bodySize int64) *api.EvaluationContext {
	ip := ""
	if t.IP.IsValid() {
		ip = t.IP.String()
	}
	return &api.EvaluationContext{
		Network: &api.NetworkContext{Hostname: &host, IP: ip, Port: t.Port, Protocol: protocolTCP},
		HTTP:    &api.HTTPContext{Method: method, Path: path, Host: host, Headers: headers, BodySize: uint64(bodySize)},
	}
}

// upstreamFailed answers a failed resolution or dial before any response.
func (h *handler) upstreamFailed(log *slog.Logger, e *upstreamError, out rules.Outcome) {
	p := h.s.p
	if e.outcome == outcomeRestricted {
		p.totalBlocked.Add(1)
		log.Warn("proxy refused an upstream that resolved only to restricted addresses")
	} else {
		log.Warn("proxy could not reach the upstream", "err", e.err)
	}
	p.m.observe(e.outcome, metricRule(out), h.start)
	writeResponse(h.c, e.code, e.body, nil)
	closeLingering(h.c)
}

// sameAuthority reports whether a Host header names t, after the same
// normalization and with the same default port.
func sameAuthority(host string, defPort uint16, t target) bool {
	ht, err := parseAuthority(host, defPort)
	return err == nil && ht.Host == t.Host && ht.Port == t.Port
}

// contentLength returns the declared body size: 0 without a header; code
// 400 for a repeated or non-decimal value, 413 above limit.
func contentLength(req *request, limit int64) (int64, int) {
	vs := req.values(headerContentLength)
	switch len(vs) {
	case 0:
		return 0, 0
	case 1:
	default:
		return 0, 400
	}
	v := vs[0]
	if v == "" {
		return 0, 400
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, 400
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n > limit {
		return 0, 413 // all digits: only too large to parse is left
	}
	return n, 0
}

// writeResponse writes a generic text/plain response (S006-IF-004 generic
// format).
func writeResponse(w io.Writer, code int, body string, extra []header) {
	writeRaw(w, code, "text/plain", body, extra)
}

func writeRaw(w io.Writer, code int, ctype, body string, extra []header) {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n", code, http.StatusText(code), ctype, len(body))
	for _, hd := range extra {
		b.WriteString(hd.Name + ": " + hd.Value + "\r\n")
	}
	// The proxy closes after every response; saying so lets a client
	// tell a complete answer from a dropped connection.
	b.WriteString("Connection: close\r\n\r\n")
	b.WriteString(body)
	_, _ = io.WriteString(w, b.String())
}

// closeLingering closes a connection after a response so that the response
// arrives: closing a socket with unread request bytes makes the kernel send
// a reset, which can destroy the response before the client reads it. So it
// shuts the write side, reads and discards what the client still sends
// (bounded in time and bytes), then closes.
func closeLingering(c net.Conn) {
	closeWrite(c)
	_ = c.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.CopyN(io.Discard, c, lingerMaxBytes)
	c.Close()
}

// closeWrite half-closes c's write side where the connection can.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
