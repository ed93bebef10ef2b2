package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// recordingListener keeps the first bytes each accepted connection reads:
// what reached the TLS server, to compare with what the client sent.
type recordingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*recordingConn
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &recordingConn{Conn: c}
	l.mu.Lock()
	l.conns = append(l.conns, rc)
	l.mu.Unlock()
	return rc, nil
}

func (l *recordingListener) first() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) == 0 {
		return nil
	}
	return l.conns[0].bytes()
}

// recordingConn records what is read from it (reads) and written to it.
type recordingConn struct {
	net.Conn
	mu            sync.Mutex
	read, written bytes.Buffer
	// split, if set, writes the first split bytes one byte per write:
	// a ClientHello arriving in many TCP segments.
	split int
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.read.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.written.Write(p)
	c.mu.Unlock()
	total := 0
	for c.split > 0 && len(p) > 0 {
		n, err := c.Conn.Write(p[:1])
		total += n
		if err != nil {
			return total, err
		}
		p = p[1:]
		c.split--
	}
	n, err := c.Conn.Write(p)
	return total + n, err
}

func (c *recordingConn) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.read.Bytes()...)
}

func (c *recordingConn) writtenBytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.written.Bytes()...)
}

// tlsUpstream is an httptest TLS server (its certificate names example.com
// and 127.0.0.1) whose listener records what arrives.
func tlsUpstream(t *testing.T) (*httptest.Server, *recordingListener) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls ok %s", r.Host)
	}))
	rl := &recordingListener{Listener: srv.Listener}
	srv.Listener = rl
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, rl
}

func rootsOf(srv *httptest.Server) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return pool
}

const ruleExample = `  - id: example
    condition: 'network.hostname == "example.com"'
    action: allow
`

// connectTLS sends CONNECT authority, expects the 200, then runs a TLS
// client with cfg over the tunnel and one GET. It returns the client's
// recorded connection.
func connectTLS(t *testing.T, e *env, authority string, cfg *tls.Config, split int) (*recordingConn, string, error) {
	t.Helper()
	raw := e.connect()
	if _, err := fmt.Fprintf(raw, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: test\r\n\r\n", authority, authority); err != nil {
		t.Fatal(err)
	}
	want := "HTTP/1.1 200 Connection Established\r\n\r\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(raw, got); err != nil || string(got) != want {
		t.Fatalf("CONNECT answer %q, %v", got, err)
	}
	rc := &recordingConn{Conn: raw, split: split}
	tc := tls.Client(rc, cfg)
	if err := tc.Handshake(); err != nil {
		return rc, "", err
	}
	if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"); err != nil {
		return rc, "", err
	}
	body, err := io.ReadAll(tc)
	return rc, string(body), err
}

func TestConnectTunnel(t *testing.T) {
	for _, tt := range []struct {
		name  string
		split int
	}{
		{"one segment", 0},
		// The ClientHello arrives a byte per segment: the record must be
		// assembled, not read with one Read.
		{"ClientHello split over segments", 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, rl := tlsUpstream(t)
			e := start(t, ruleExample, nil)
			e.res.set("example.com", publicAddr)
			e.dial.mapPublic(publicAddr, 443, srv.Listener.Addr().String())
			rc, body, err := connectTLS(t, e, "example.com:443", &tls.Config{RootCAs: rootsOf(srv), ServerName: "example.com"}, tt.split)
			if err != nil || !strings.Contains(body, "tls ok example.com") {
				t.Fatalf("tunnel: %v, body %q", err, body)
			}
			sent := rc.writtenBytes()
			hello, err := readClientHelloRecord(bytes.NewReader(sent))
			if err != nil {
				t.Fatal(err)
			}
			if arrived := rl.first(); !bytes.HasPrefix(arrived, hello) {
				t.Error("the ClientHello did not arrive at the upstream unchanged")
			}
			cs := e.eval.contexts()
			if len(cs) != 1 { // SNI equals the CONNECT host: one evaluation
				t.Fatalf("%d evaluations, want 1", len(cs))
			}
			c := cs[0]
			if c.HTTP.Method != "CONNECT" || c.HTTP.Path != "/" || *c.Network.Hostname != "example.com" ||
				c.Network.Port != 443 || c.HTTP.Headers["user-agent"] != "test" || c.HTTP.BodySize != 0 {
				t.Errorf("context %+v %+v", *c.Network, *c.HTTP)
			}
		})
	}
}

// TestConnectThroughGoClient: net/http's HTTPS_PROXY client, end to end.
func TestConnectThroughGoClient(t *testing.T) {
	srv, _ := tlsUpstream(t)
	e := start(t, ruleExample, nil)
	e.res.set("example.com", publicAddr)
	e.dial.mapPublic(publicAddr, 443, srv.Listener.Addr().String())
	proxyURL, _ := url.Parse("http://" + e.addr)
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{RootCAs: rootsOf(srv)}}
	// A tunnel the client keeps would hold the proxy's shutdown for its
	// grace period.
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	res, err := client.Get("https://example.com/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "tls ok example.com" {
		t.Errorf("got %d %q", res.StatusCode, body)
	}
}

// TestConnectIPLiteralWithoutSNI (AS-010, FR-018): a CONNECT to an IP
// literal is evaluated with the IP as hostname and network.ip; Go sends no
// SNI for an IP, so there is no second evaluation.
func TestConnectIPLiteralWithoutSNI(t *testing.T) {
	for _, tt := range []struct {
		name, egress string
		ok           bool
	}{
		{"rule names the range with allow_private_ips", "\n    egress: {mode: proxy, allow_private_ips: true}", true},
		{"rule without allow_private_ips", "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := tlsUpstream(t)
			e := start(t, `  - id: loopback-tls
    condition: 'cidr("127.0.0.0/8").containsIP(network.ip) && network.hostname == network.ip'
    action: allow`+tt.egress+"\n", nil)
			target := srv.Listener.Addr().String()
			if !tt.ok {
				res := e.roundTrip("CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n")
				if res.Status != 403 || res.Header.Get("X-Outcall-Block-Reason") != "default policy" || e.dial.count() != 0 {
					t.Errorf("got %d %q after %d dials, want the default block", res.Status, res.Body, e.dial.count())
				}
				return
			}
			_, body, err := connectTLS(t, e, target, &tls.Config{RootCAs: rootsOf(srv), ServerName: "127.0.0.1"}, 0)
			if err != nil || !strings.Contains(body, "tls ok") {
				t.Fatalf("tunnel: %v %q", err, body)
			}
			cs := e.eval.contexts()
			if len(cs) != 1 || cs[0].Network.IP != "127.0.0.1" || *cs[0].Network.Hostname != "127.0.0.1" {
				t.Errorf("contexts %+v", cs)
			}
		})
	}
}

// TestConnectMissingSNI: a ClientHello without server_name is decided by
// the CONNECT host alone.
func TestConnectMissingSNI(t *testing.T) {
	srv, _ := tlsUpstream(t)
	e := start(t, ruleExample, nil)
	e.res.set("example.com", publicAddr)
	e.dial.mapPublic(publicAddr, 443, srv.Listener.Addr().String())
	cfg := &tls.Config{InsecureSkipVerify: true} // no ServerName: no SNI
	if sni, err := ParseClientHello(clientHello(t, cfg)); err != nil || sni != "" {
		t.Fatalf("control: the ClientHello has SNI %q (%v)", sni, err)
	}
	_, body, err := connectTLS(t, e, "example.com:443", cfg, 0)
	if err != nil || !strings.Contains(body, "tls ok") {
		t.Fatalf("tunnel: %v %q", err, body)
	}
	if n := len(e.eval.contexts()); n != 1 {
		t.Errorf("%d evaluations, want 1", n)
	}
}

// TestConnectSNIMismatch: when the SNI differs from the CONNECT host, both
// must be allowed, and the dial target stays the CONNECT host's address.
func TestConnectSNIMismatch(t *testing.T) {
	for _, tt := range []struct {
		name, sni string
		ok        bool
	}{
		{"SNI also allowed", "other.test", true},
		{"SNI blocked", "evil.test", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, rl := tlsUpstream(t)
			e := start(t, `  - {id: allowed, condition: 'network.hostname in ["allowed.test", "other.test"]', action: allow}
`, nil)
			e.res.set("allowed.test", publicAddr)
			e.res.set("other.test", netip.MustParseAddr("11.1.1.2")) // never used: SNI never changes the target
			e.dial.mapPublic(publicAddr, 443, srv.Listener.Addr().String())
			cfg := &tls.Config{InsecureSkipVerify: true, ServerName: tt.sni}
			_, body, err := connectTLS(t, e, "allowed.test:443", cfg, 0)
			cs := e.eval.contexts()
			if len(cs) != 2 || *cs[1].Network.Hostname != tt.sni || cs[1].HTTP.Host != tt.sni || cs[1].HTTP.Method != "CONNECT" {
				t.Fatalf("evaluations %+v, want the CONNECT host then the SNI", cs)
			}
			if tt.ok {
				if err != nil || !strings.Contains(body, "tls ok") {
					t.Fatalf("tunnel: %v %q", err, body)
				}
				if d := e.dial.dialed; len(d) != 1 || d[0] != "11.1.1.1:443" {
					t.Errorf("dialed %v, want the CONNECT host's 11.1.1.1:443", d)
				}
				return
			}
			if err == nil {
				t.Fatal("TLS handshake succeeded through a blocked SNI")
			}
			if e.dial.count() != 0 || rl.first() != nil {
				t.Errorf("blocked SNI reached the upstream (%d dials)", e.dial.count())
			}
			if !strings.Contains(e.logs.String(), "level=ERROR") {
				t.Error("SNI block not logged at error")
			}
		})
	}
}

// TestConnectBadClientHello: after the 200 anything but one whole, valid
// ClientHello record closes the tunnel without dialling.
func TestConnectBadClientHello(t *testing.T) {
	good := clientHello(t, &tls.Config{ServerName: "example.com", InsecureSkipVerify: true})
	oversized := []byte{0x16, 0x03, 0x01, 0x40, 0x01} // payload 16385
	fragmented := append([]byte(nil), good...)
	// Claim a ClientHello longer than the record: it would continue in a
	// second record.
	fragmented[5+3]++
	for _, tt := range []struct {
		name string
		send []byte
		ok   bool
	}{
		{"control", good, true},
		{"not TLS", []byte("SSH-2.0-OpenSSH_9.6\r\n"), false},
		{"oversized record", oversized, false},
		{"fragmented ClientHello", fragmented, false},
		{"IP literal SNI", clientHelloWithSNI(t, "127.0.0.1"), false},
		{"wildcard SNI", clientHelloWithSNI(t, "*.example.com"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newHelloSink(t)
			e := start(t, ruleExample, func(o *Options) { o.IdleTimeout = time.Second })
			e.res.set("example.com", publicAddr)
			e.dial.mapPublic(publicAddr, 443, up.ln.Addr().String())
			c := e.connect()
			fmt.Fprintf(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
			want := "HTTP/1.1 200 Connection Established\r\n\r\n"
			got := make([]byte, len(want))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			c.Write(tt.send)
			if tt.ok {
				if rec := <-up.got; !bytes.Equal(rec, good) {
					t.Error("the upstream got another ClientHello")
				}
				return
			}
			// A close with unread bytes may arrive as a reset: either way
			// no byte comes back.
			if rest, err := io.ReadAll(c); (err != nil && !errors.Is(err, syscall.ECONNRESET)) || len(rest) != 0 {
				t.Errorf("after a bad ClientHello: %q, %v; want a close", rest, err)
			}
			if e.dial.count() != 0 {
				t.Error("a bad ClientHello was dialled")
			}
			if st := e.p.Status(); st.TotalBlocked != 1 {
				t.Errorf("blocked %d, want 1", st.TotalBlocked)
			}
		})
	}
}

// helloSink is a TCP upstream that reads one TLS record and reports it,
// then holds the connection open without a word.
type helloSink struct {
	ln  net.Listener
	got chan []byte
}

func newHelloSink(t *testing.T) *helloSink {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &helloSink{ln: ln, got: make(chan []byte, 4)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				rec, _ := readClientHelloRecord(c)
				s.got <- rec
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return s
}

// clientHelloWithSNI builds a ClientHello whose server_name is name,
// whatever crypto/tls would allow.
func clientHelloWithSNI(t testing.TB, name string) []byte {
	t.Helper()
	var sn []byte
	sn = append(sn, 0)
	sn = append(sn, byte(len(name)>>8), byte(len(name)))
	sn = append(sn, name...)
	list := append([]byte{byte(len(sn) >> 8), byte(len(sn))}, sn...)
	ext := append([]byte{0, 0, byte(len(list) >> 8), byte(len(list))}, list...)
	return buildHello(ext)
}

// buildHello wraps extensions (nil: no extensions block) in a minimal
// ClientHello record.
func buildHello(exts []byte) []byte {
	body := []byte{0x03, 0x03}
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)             // session id
	body = append(body, 0, 2, 0x13, 1) // one cipher suite
	body = append(body, 1, 0)          // null compression
	if exts != nil {
		body = append(body, byte(len(exts)>>8), byte(len(exts)))
		body = append(body, exts...)
	}
	hs := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{0x16, 0x03, 0x01, byte(len(hs) >> 8), byte(len(hs))}, hs...)
}

func TestConnectFraming(t *testing.T) {
	for _, tt := range []struct {
		name, raw string
		status    int
		body      string
	}{
		{"no Host", "CONNECT example.com:443 HTTP/1.1\r\n\r\n", 400, bodyConnectFraming},
		{"Host differs", "CONNECT example.com:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n", 400, bodyConnectFraming},
		{"Host default port", "CONNECT example.com HTTP/1.1\r\nHost: example.com:8443\r\n\r\n", 400, bodyConnectFraming},
		{"early bytes", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01", 400, bodyConnectFraming},
		{"body", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nContent-Length: 3\r\n\r\n", 400, bodyConnectFraming},
		{"Upgrade", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUpgrade: h2c\r\n\r\n", 400, bodyConnectFraming},
		{"port 0", "CONNECT example.com:0 HTTP/1.1\r\nHost: example.com:0\r\n\r\n", 400, bodyBadConnect},
		{"port too big", "CONNECT example.com:65536 HTTP/1.1\r\nHost: example.com:65536\r\n\r\n", 400, bodyBadConnect},
		{"userinfo", "CONNECT u@example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 400, bodyBadConnect},
		{"path", "CONNECT example.com:443/x HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 400, bodyBadConnect},
		{"SSH port", "CONNECT example.com:22 HTTP/1.1\r\nHost: example.com:22\r\n\r\n", 403, bodyPortDenied},
		{"SMTP port", "CONNECT example.com:25 HTTP/1.1\r\nHost: example.com:25\r\n\r\n", 403, bodyPortDenied},
		{"blocked host", "CONNECT malware.test:443 HTTP/1.1\r\nHost: malware.test:443\r\n\r\n", 403, "Blocked by outcall: default policy"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// example.com on every port is allowed: the port deny-list
			// comes before the rules.
			e := start(t, ruleExample, nil)
			e.res.set("example.com", publicAddr)
			res := e.roundTrip(tt.raw)
			if res.Status != tt.status || res.Body != tt.body {
				t.Errorf("got %d %q, want %d %q", res.Status, res.Body, tt.status, tt.body)
			}
			if e.dial.count() != 0 {
				t.Error("refused CONNECT was dialled")
			}
		})
	}
}

// TestConnectBeforeTheTwoHundred: resolution failures still get an HTTP
// answer, because the CONNECT is resolved before the 200.
func TestConnectBeforeTheTwoHundred(t *testing.T) {
	e := start(t, `  - {id: all, condition: 'true', action: allow}
`, func(o *Options) { o.ConnectTimeout = 200 * time.Millisecond })
	e.res.set("local.test", netip.MustParseAddr("127.0.0.1"))
	for host, want := range map[string]int{"nxdomain.test": 502, "slowdns.test": 504, "local.test": 403} {
		res := e.roundTrip("CONNECT " + host + ":443 HTTP/1.1\r\nHost: " + host + ":443\r\n\r\n")
		if res.Status != want {
			t.Errorf("%s: got %d %q, want %d", host, res.Status, res.Body, want)
		}
	}
}

// TestTunnelIdleTimeout: a tunnel with no data either way is closed.
func TestTunnelIdleTimeout(t *testing.T) {
	up := newHelloSink(t)
	e := start(t, ruleExample, func(o *Options) { o.IdleTimeout = 200 * time.Millisecond })
	e.res.set("example.com", publicAddr)
	e.dial.mapPublic(publicAddr, 443, up.ln.Addr().String())
	c := e.connect()
	fmt.Fprintf(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	got := make([]byte, len(connectEstablished))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.Write(clientHello(t, &tls.Config{ServerName: "example.com", InsecureSkipVerify: true}))
	<-up.got
	if _, err := io.ReadAll(c); err != nil { // the proxy's close ends this read
		t.Fatalf("read: %v", err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("tunnel closed after %v, before the idle timeout", took)
	}
}

// TestShutdown: Serve stops accepting at once, drops a tunnel still open
// after the grace period, closes its listener and returns.
func TestShutdown(t *testing.T) {
	up := newHelloSink(t)
	e := start(t, ruleExample, func(o *Options) { o.ShutdownGrace = 200 * time.Millisecond })
	e.res.set("example.com", publicAddr)
	e.dial.mapPublic(publicAddr, 443, up.ln.Addr().String())
	c := e.connect()
	fmt.Fprintf(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	got := make([]byte, len(connectEstablished))
	io.ReadFull(c, got)
	c.Write(clientHello(t, &tls.Config{ServerName: "example.com", InsecureSkipVerify: true}))
	<-up.got
	if err := e.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("tunnel after shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp4", e.addr, time.Second); err == nil {
		t.Error("the listener still accepts after Serve returned")
	}
	e.gw.mu.Lock()
	open := e.gw.open
	e.gw.mu.Unlock()
	if open != 0 || e.p.Status().Listening || e.p.Status().ActiveConnections != 0 {
		t.Errorf("after shutdown: %d listeners held, status %+v", open, e.p.Status())
	}
}

// TestTunnelDisconnect (EC-004, EC-005): when either side of a tunnel goes,
// the other side is closed, without any response.
func TestTunnelDisconnect(t *testing.T) {
	for _, clientLeaves := range []bool{true, false} {
		t.Run(fmt.Sprintf("client leaves %v", clientLeaves), func(t *testing.T) {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			upEOF := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := readClientHelloRecord(c); err != nil {
					upEOF <- err
					return
				}
				io.WriteString(c, "server bytes")
				if !clientLeaves {
					return // the upstream goes
				}
				_, err = io.Copy(io.Discard, c)
				upEOF <- err
			}()
			e := start(t, ruleExample, nil)
			e.res.set("example.com", publicAddr)
			e.dial.mapPublic(publicAddr, 443, ln.Addr().String())
			c := e.connect()
			fmt.Fprintf(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
			got := make([]byte, len(connectEstablished)+len("server bytes"))
			if _, err := io.ReadFull(c, got[:len(connectEstablished)]); err != nil {
				t.Fatal(err)
			}
			c.Write(clientHello(t, &tls.Config{ServerName: "example.com", InsecureSkipVerify: true}))
			if _, err := io.ReadFull(c, got[len(connectEstablished):]); err != nil || !strings.HasSuffix(string(got), "server bytes") {
				t.Fatalf("read %q, %v", got, err)
			}
			if clientLeaves {
				c.Close()
				if err := <-upEOF; err != nil {
					t.Errorf("upstream: %v, want EOF", err)
				}
				return
			}
			if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
				t.Errorf("client after the upstream left: %q, %v; want EOF", rest, err)
			}
		})
	}
}
