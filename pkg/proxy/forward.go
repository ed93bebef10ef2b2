package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"syscall"
	"time"

	"outcall.dev/outcall/pkg/rules"
)

// maxResponseHeadBytes bounds an upstream's response head, and separately
// the trailer section of a chunked body: an upstream cannot make the proxy
// buffer without end.
const maxResponseHeadBytes = 64 << 10

// bodyGrace is how long a response that is complete waits for the
// request body's copy to finish before the exchange is ended.
const bodyGrace = 50 * time.Millisecond

// errUpstreamSilent is a kept upstream connection that ended before
// answering: the upstream closed it while it was idle.
var errUpstreamSilent = errors.New("upstream closed the connection before answering")

// upstreamConn is an upstream connection with its read buffer and what it
// was dialled for.
type upstreamConn struct {
	net.Conn
	br *bufio.Reader
	// target is the host and port of the request that dialled it: a later
	// request reuses it only for the same target.
	target target
	// private reports that a rule allowing restricted addresses dialled
	// it, so it may reach one: only such a rule may reuse it.
	private bool
}

// exchange is one forwarded request.
type exchange struct {
	req    *request
	method string
	origin string
	t      target
	// prefix is the start of the body that came with the head.
	prefix []byte
	cl     int64
	// keep reports that the client keeps its connection for another
	// request.
	keep bool
	out  rules.Outcome
	log  *slog.Logger
}

// forward serves an absolute-form request (S006-FR-003, the forward path of
// section 1.4). It returns the bytes the client sent after this request and
// whether the connection goes on to another one.
func (h *handler) forward(req *request, method string, prefix []byte) ([]byte, bool) {
	p := h.s.p
	u, err := parseAbsoluteURI(req.Target)
	if err != nil {
		h.fail(400, bodyBadURI, outcomeBadRequest)
		return nil, false
	}
	t := u.Target
	hosts := req.values(headerHost)
	if len(hosts) != 1 || !sameAuthority(hosts[0], defaultHTTPPort, t) {
		// Counted as blocked like the original: a Host that disagrees
		// with the URI is how a client tries to make the upstream serve a
		// name the rules never saw.
		p.totalBlocked.Add(1)
		h.log.Warn("proxy refused a request whose Host does not match its URI", "host", t.Host, "port", t.Port, "method", method)
		h.fail(400, bodyHostMismatch, outcomeBadRequest)
		return nil, false
	}
	if req.has(headerTransferEncode) || req.has("Expect") || req.has("Upgrade") {
		h.fail(400, bodyFraming, outcomeBadRequest)
		return nil, false
	}
	cl, code := contentLength(req, p.opts.MaxBodyBytes)
	switch code {
	case 400:
		h.fail(400, bodyContentLength, outcomeBadRequest)
		return nil, false
	case 413:
		h.fail(413, bodyTooLarge, outcomeBodyTooLarge)
		return nil, false
	}
	x := &exchange{req: req, method: method, origin: u.Origin, t: t, prefix: prefix, cl: cl, keep: keepsAlive(req)}
	var next []byte
	if int64(len(prefix)) > cl {
		if !x.keep {
			// Bytes after the last request of a connection are no
			// request anyone will answer.
			h.fail(400, bodyTrailing, outcomeBadRequest)
			return nil, false
		}
		x.prefix, next = prefix[:cl], prefix[cl:]
	}
	x.out = h.evaluate(requestContext(t, method, u.Origin, t.Host, req.headerMap(), cl))
	if !allowed(x.out) {
		h.block(x.out, method, t)
		return nil, false
	}
	x.log = h.log.With("host", t.Host, "port", t.Port, "method", method, "rule", x.out.RuleID())
	reused, uerr := h.upstreamFor(t, allowPrivate(x.out))
	for uerr == nil {
		x.log.Debug("proxy allowed a request", "reused", reused)
		again, stale := h.send(x, reused && cl == 0)
		if !stale {
			return next, again && x.keep
		}
		// A kept connection the upstream had closed while idle: the
		// request, which has no body, never reached anyone, so it goes
		// once more on a new connection.
		h.dropUpstream()
		reused, uerr = h.upstreamFor(t, allowPrivate(x.out))
	}
	h.upstreamFailed(x.log, uerr, x.out)
	return nil, false
}

// keepsAlive reports whether the client keeps the connection after this
// request: HTTP/1.1 unless it says close. HTTP/1.0 keep-alive is not
// offered.
func keepsAlive(req *request) bool {
	if req.Minor == 0 {
		return false
	}
	for _, name := range []string{headerConnection, "Proxy-Connection"} {
		if connectionTokens(req.values(name))["close"] {
			return false
		}
	}
	return true
}

// upstreamFor makes h.up a connection for t: the kept one if it was dialled
// for the same target under a rule at least as strict about restricted
// addresses, otherwise a new one. It reports whether it reused.
func (h *handler) upstreamFor(t target, private bool) (reused bool, _ *upstreamError) {
	if up := h.up; up != nil {
		if up.target == t && (!up.private || private) && up.br.Buffered() == 0 {
			return true, nil
		}
		h.dropUpstream()
	}
	addrs, uerr := h.resolve(t, private)
	if uerr != nil {
		return false, uerr
	}
	c, uerr := h.dial(addrs, t.Port)
	if uerr != nil {
		return false, uerr
	}
	h.up = &upstreamConn{Conn: c, br: bufio.NewReaderSize(c, relayBufferSize), target: t, private: private}
	return false, nil
}

// dropUpstream closes the kept upstream connection, if any.
func (h *handler) dropUpstream() {
	if h.up != nil {
		h.up.Close()
		h.s.untrack(h.up.Conn)
		h.up = nil
	}
}

// send sends x on h.up in origin form and relays the response (S006 forward
// path steps 8-9). It reports whether the client connection and h.up may
// carry another request, or, if retry is set, that h.up turned out stale
// before anything was answered (then nothing was written to the client).
func (h *handler) send(x *exchange, retry bool) (again, stale bool) {
	p := h.s.p
	up := h.up
	idle := newIdleWatch(p.opts.IdleTimeout, func() { h.c.Close(); up.Close() })
	defer idle.stop()
	_ = up.SetWriteDeadline(time.Now().Add(p.opts.IdleTimeout))
	_, err := up.Write(requestHead(x))
	_ = up.SetWriteDeadline(time.Time{})
	if err != nil {
		if retry {
			return false, true
		}
		x.log.Warn("proxy could not write the request upstream", "err", err)
		p.m.observe(outcomeUpstreamFailed, metricRule(x.out), h.start)
		writeResponse(h.c, 502, bodyUpstreamWrite, nil)
		closeLingering(h.c)
		return false, false
	}
	took := time.Since(h.start)
	bodyDone := make(chan error, 1)
	go func() {
		err := writeFull(up, x.prefix, idle)
		if err == nil {
			_, err = copyIdle(up, h.c, x.cl-int64(len(x.prefix)), idle, nil)
		}
		if err != nil {
			// A body cut short can never be completed: end the exchange
			// rather than leave the upstream waiting for the idle timeout.
			up.Close()
		}
		bodyDone <- err
	}()
	res, err := h.relayResponse(up, x, idle)
	if !res.answered && retry && errors.Is(err, errUpstreamSilent) {
		<-bodyDone
		return false, true
	}
	p.m.observeTook(outcomeAllowed, metricRule(x.out), took)
	switch {
	case err == nil:
	case !res.answered:
		// Nothing reached the client yet: it gets an answer, not a
		// silent close.
		x.log.Warn("proxy got no usable response from the upstream", "err", err)
		up.Close()
		<-bodyDone
		writeResponse(h.c, 502, bodyUpstreamFailed, nil)
		closeLingering(h.c)
		return false, false
	default:
		x.log.Debug("proxy response relay ended early", "err", err)
	}
	// The body copy may not have said it is done yet even when it has
	// nothing left to read from the client; only a body the client is
	// still sending makes the response's end the exchange's end.
	var bodyLeft <-chan time.Time
	if x.cl > int64(len(x.prefix)) {
		bodyLeft = time.After(bodyGrace)
	}
	select {
	case berr := <-bodyDone:
		if err == nil && berr == nil {
			if !res.upOpen {
				h.dropUpstream()
			}
			if !res.clientOpen {
				closeLingering(h.c)
			}
			return res.clientOpen, false
		}
	case <-bodyLeft:
		// The response ended before the client sent all of its body:
		// closing the client ends the body copy.
	}
	h.c.Close()
	up.Close()
	<-bodyDone
	return false, false
}

// requestHead is x's head as sent upstream: origin form, the client's
// headers in its order and spelling without the hop-by-hop ones, and
// `Connection: close` when the client will not send another request.
func requestHead(x *exchange) []byte {
	var b bytes.Buffer
	b.WriteString(x.method + " " + x.origin + " HTTP/1.1\r\n")
	drop := connectionTokens(x.req.values(headerConnection))
	for _, hd := range x.req.Headers {
		if k := strings.ToLower(hd.Name); !hopByHop[k] && !drop[k] {
			b.WriteString(hd.Name + ": " + hd.Value + "\r\n")
		}
	}
	if !x.keep {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// relayed is how a response relay ended.
type relayed struct {
	// answered reports that bytes of a response reached the client.
	answered bool
	// clientOpen and upOpen report whether the client connection and the
	// upstream connection may carry another request.
	clientOpen, upOpen bool
}

// relayResponse reads the upstream's response to x and writes it to the
// client, framed anew: the head without hop-by-hop headers, the body with
// the upstream's Content-Length or chunked, streamed as it comes. A
// response framed only by the upstream closing is relayed the same way and
// ends both connections. Interim 1xx responses pass through first.
func (h *handler) relayResponse(up *upstreamConn, x *exchange, idle *idleWatch) (res relayed, err error) {
	for {
		head, err := readResponseHead(up.br, idle)
		if err != nil {
			return res, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), &http.Request{Method: x.method})
		if err != nil {
			return res, fmt.Errorf("parse upstream response: %w", err)
		}
		code := resp.StatusCode
		if code == http.StatusSwitchingProtocols {
			// The request never asks to upgrade (Upgrade is refused).
			return res, errors.New("upstream switched protocols unasked")
		}
		interim := code >= 100 && code < 200
		bodiless := interim || x.method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
		chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
		closeDelimited := !bodiless && !chunked && resp.ContentLength < 0
		res.clientOpen = x.keep && !closeDelimited
		res.upOpen = !resp.Close && !closeDelimited
		var b bytes.Buffer
		fmt.Fprintf(&b, "HTTP/1.1 %s\r\n", resp.Status)
		forwardable(resp.Header).Write(&b)
		switch {
		case interim:
		case chunked && !bodiless:
			b.WriteString("Transfer-Encoding: chunked\r\n")
		case resp.ContentLength >= 0 && code != http.StatusNoContent && code != http.StatusNotModified:
			b.WriteString("Content-Length: " + strconv.FormatInt(resp.ContentLength, 10) + "\r\n")
		}
		if !interim && !res.clientOpen {
			b.WriteString("Connection: close\r\n")
		}
		b.WriteString("\r\n")
		res.answered = true
		if err := writeFull(h.c, b.Bytes(), idle); err != nil {
			return res, err
		}
		if interim {
			continue
		}
		switch {
		case bodiless:
		case chunked:
			err = relayChunked(h.c, up.br, idle)
		case closeDelimited:
			_, err = copyIdle(h.c, up.br, -1, idle, nil)
		default:
			_, err = copyIdle(h.c, up.br, resp.ContentLength, idle, nil)
		}
		if up.br.Buffered() > 0 {
			// More than the response: the upstream and the proxy disagree
			// about framing, so the connection carries nothing more.
			res.upOpen = false
		}
		return res, err
	}
}

// forwardable is a response's headers without the hop-by-hop ones, those
// its Connection header names, and the framing headers the proxy writes
// itself.
func forwardable(h http.Header) http.Header {
	drop := connectionTokens(h.Values(headerConnection))
	out := make(http.Header, len(h))
	for k, vs := range h {
		if lk := strings.ToLower(k); !hopByHop[lk] && !drop[lk] && lk != "content-length" {
			out[k] = vs
		}
	}
	return out
}

// readResponseHead reads a response head, up to and including its empty
// line, at most maxResponseHeadBytes. An upstream that ends before sending
// a byte is errUpstreamSilent.
func readResponseHead(br *bufio.Reader, idle *idleWatch) ([]byte, error) {
	var head []byte
	for {
		line, err := br.ReadSlice('\n')
		idle.touch()
		head = append(head, line...)
		if len(head) > maxResponseHeadBytes {
			return nil, errors.New("upstream response head too large")
		}
		switch {
		case err == nil && (string(line) == "\r\n" || string(line) == "\n") && len(head) > len(line):
			return head, nil
		case errors.Is(err, bufio.ErrBufferFull):
		case err != nil && len(head) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
			return nil, errUpstreamSilent
		case err != nil:
			return nil, fmt.Errorf("read upstream response head: %w", err)
		}
	}
}

// relayChunked relays a chunked body, chunk boundaries as they come, then
// the last chunk; the upstream's trailer section is read and dropped.
func relayChunked(dst io.Writer, br *bufio.Reader, idle *idleWatch) error {
	cw := httputil.NewChunkedWriter(dst)
	if _, err := copyIdle(cw, httputil.NewChunkedReader(br), -1, idle, nil); err != nil {
		return err
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if err := writeFull(dst, []byte("\r\n"), idle); err != nil {
		return err
	}
	n := 0
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("read chunked trailer: %w", err)
		}
		if n += len(line); n > maxResponseHeadBytes {
			return errors.New("chunked trailer too large")
		}
		if string(line) == "\r\n" || string(line) == "\n" {
			return nil
		}
	}
}

// connectionTokens returns the lowercased header names that Connection
// header values list: hop-by-hop for this message, so never forwarded.
func connectionTokens(values []string) map[string]bool {
	m := map[string]bool{}
	for _, v := range values {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.ToLower(strings.TrimSpace(tok)); tok != "" {
				m[tok] = true
			}
		}
	}
	return m
}
