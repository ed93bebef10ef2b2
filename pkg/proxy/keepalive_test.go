package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// keptUpstream is an httptest server that keeps connections alive, counts
// them, and records each request's method, URI and Connection and
// Keep-Alive headers.
type keptUpstream struct {
	*httptest.Server
	conns atomic.Int32
	mu    sync.Mutex
	seen  []string
}

func newKeptUpstream(t *testing.T, h http.HandlerFunc) *keptUpstream {
	u := &keptUpstream{}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, fmt.Sprintf("%s %s conn=%q keep=%q hop=%q", r.Method, r.URL.RequestURI(), r.Header.Get("Connection"), r.Header.Get("Keep-Alive"), r.Header.Get("X-Hop")))
		u.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		io.WriteString(w, "ok "+r.URL.Path)
	}))
	u.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			u.conns.Add(1)
		}
	}
	u.Start()
	t.Cleanup(u.Close)
	return u
}

func (u *keptUpstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

// keptEnv is a proxy allowing api.test and blocking the rest, in front of
// a keep-alive upstream.
func keptEnv(t *testing.T, h http.HandlerFunc, tune func(*Options)) (*env, *keptUpstream) {
	up := newKeptUpstream(t, h)
	e := start(t, ruleAPI, tune)
	e.res.set("api.test", publicAddr)
	e.res.set("evil.test", publicAddr)
	e.dial.mapPublic(publicAddr, 80, up.Listener.Addr().String())
	return e, up
}

func get(path string, extra ...string) string {
	return "GET http://api.test" + path + " HTTP/1.1\r\nHost: api.test\r\n" + strings.Join(extra, "") + "\r\n"
}

// TestKeepAlive: requests on one client connection are each evaluated and
// answered, over one upstream connection, and the client's keep-alive
// headers never reach the upstream.
func TestKeepAlive(t *testing.T) {
	e, up := keptEnv(t, nil, nil)
	c := e.connect()
	for i, path := range []string{"/one", "/two", "/three"} {
		if _, err := io.WriteString(c, get(path, "Connection: keep-alive, X-Hop\r\n", "Keep-Alive: timeout=30\r\n", "X-Hop: 1\r\n")); err != nil {
			t.Fatal(err)
		}
		res := readResponse(t, c)
		if res.Status != 200 || res.Body != "ok "+path || res.Close {
			t.Fatalf("request %d: got %d %q close=%v, want 200 %q kept open", i+1, res.Status, res.Body, res.Close, "ok "+path)
		}
	}
	want := []string{`GET /one conn="" keep="" hop=""`, `GET /two conn="" keep="" hop=""`, `GET /three conn="" keep="" hop=""`}
	if got := up.requests(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("upstream saw\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := up.conns.Load(); n != 1 {
		t.Errorf("%d upstream connections for 3 requests, want 1", n)
	}
	if n := len(e.eval.contexts()); n != 3 {
		t.Errorf("%d evaluations, want one per request (3)", n)
	}
}

// TestKeepAliveEachRequestDecided: an allowed request does not carry the
// next one on the same connection: a blocked request after it gets its 403
// and the connection closes, and the upstream never sees it.
func TestKeepAliveEachRequestDecided(t *testing.T) {
	e, up := keptEnv(t, nil, nil)
	c := e.connect()
	io.WriteString(c, get("/allowed"))
	if res := readResponse(t, c); res.Status != 200 {
		t.Fatalf("control: got %d %q, want 200", res.Status, res.Body)
	}
	io.WriteString(c, "GET http://evil.test/x HTTP/1.1\r\nHost: evil.test\r\n\r\n")
	res := readResponse(t, c)
	if res.Status != 403 || res.Header.Get(blockReasonHeader) != reasonDefaultPolicy {
		t.Errorf("second request: got %d %q, want the default policy's 403", res.Status, res.Body)
	}
	if !res.closed() {
		t.Error("connection stayed open after a block")
	}
	if got := up.requests(); len(got) != 1 {
		t.Errorf("upstream saw %q, want only the allowed request", got)
	}
}

// TestPipelined: requests written back to back before any answer are
// answered in order, each evaluated; a body's bytes never start the next
// request early.
func TestPipelined(t *testing.T) {
	e, up := keptEnv(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	}, nil)
	c := e.connect()
	io.WriteString(c, get("/a")+
		"POST http://api.test/b HTTP/1.1\r\nHost: api.test\r\nContent-Length: 20\r\n\r\nGET http://api.test/"+
		get("/c", "Connection: close\r\n"))
	rs := readResponses(t, c, 3)
	for i, want := range []string{"GET /a ", "POST /b GET http://api.test/", "GET /c "} {
		if rs[i].Status != 200 || rs[i].Body != want {
			t.Errorf("response %d: %d %q, want 200 %q", i+1, rs[i].Status, rs[i].Body, want)
		}
	}
	if !rs[2].closed() {
		t.Error("connection stayed open after Connection: close")
	}
	if n := len(up.requests()); n != 3 {
		t.Errorf("upstream saw %d requests, want 3", n)
	}
}

// TestKeepAliveEnds: the proxy closes after the response when the client
// says close or speaks HTTP/1.0 (and then tells the upstream), when the
// response has no framing but the close, and when the client stays quiet
// for KeepAliveTimeout.
func TestKeepAliveEnds(t *testing.T) {
	unframed := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/unframed" {
			io.WriteString(w, "ok")
			return
		}
		// Hijacked: an HTTP/1.1 response framed by the close alone.
		c, bw, _ := w.(http.Hijacker).Hijack()
		bw.WriteString("HTTP/1.1 200 OK\r\n\r\nuntil close")
		bw.Flush()
		c.Close()
	}
	for _, tt := range []struct {
		name, raw, upConn string
	}{
		{"Connection: close", get("/", "Connection: close\r\n"), "close"},
		{"Proxy-Connection: close", get("/", "Proxy-Connection: close\r\n"), "close"},
		{"HTTP/1.0", "GET http://api.test/ HTTP/1.0\r\nHost: api.test\r\n\r\n", "close"},
		{"response framed by close", get("/unframed"), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, up := keptEnv(t, unframed, nil)
			res := e.roundTrip(tt.raw)
			if res.Status != 200 || !res.Close {
				t.Errorf("got %d close=%v, want 200 and Connection: close", res.Status, res.Close)
			}
			if !res.closed() {
				t.Error("connection stayed open")
			}
			if got := up.requests(); len(got) != 1 || !strings.Contains(got[0], fmt.Sprintf("conn=%q", tt.upConn)) {
				t.Errorf("upstream saw %q, want Connection %q", got, tt.upConn)
			}
		})
	}
	t.Run("idle", func(t *testing.T) {
		e, _ := keptEnv(t, nil, func(o *Options) { o.KeepAliveTimeout = 200 * time.Millisecond })
		c := e.connect()
		io.WriteString(c, get("/"))
		res := readResponse(t, c)
		if res.Status != 200 {
			t.Fatalf("got %d, want 200", res.Status)
		}
		start := time.Now()
		if !res.closed() {
			t.Fatal("idle connection stayed open")
		}
		if took := time.Since(start); took > 1500*time.Millisecond {
			t.Errorf("idle connection closed after %v, want about 200 ms", took)
		}
	})
}

// TestKeepAliveShutdown: a client holding a kept connection open does not
// hold up shutdown for the grace period.
func TestKeepAliveShutdown(t *testing.T) {
	e, _ := keptEnv(t, nil, func(o *Options) { o.ShutdownGrace = 5 * time.Second })
	c := e.connect()
	io.WriteString(c, get("/"))
	if res := readResponse(t, c); res.Status != 200 {
		t.Fatalf("got %d, want 200", res.Status)
	}
	start := time.Now()
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("shutdown took %v with an idle kept connection, want well under the 5 s grace", took)
	}
}

// TestStaleUpstream: an upstream that closes a kept connection while it is
// idle costs the next request nothing: a request without a body is sent
// again on a new connection.
func TestStaleUpstream(t *testing.T) {
	// One request per connection, and no "Connection: close" to say so.
	up := newRawUpstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
	e := start(t, ruleAPI, nil)
	e.res.set("api.test", publicAddr)
	e.dial.mapPublic(publicAddr, 80, up.addr())
	c := e.connect()
	for i := range 3 {
		io.WriteString(c, get("/"))
		if res := readResponse(t, c); res.Status != 200 || res.Body != "hello" {
			t.Fatalf("request %d: got %d %q, want 200 hello", i+1, res.Status, res.Body)
		}
		// Let the upstream's close arrive before the next request.
		waitFor(t, "upstream close", func() bool { return len(up.requests()) == i+1 })
		time.Sleep(20 * time.Millisecond)
	}
	if n := e.dial.count(); n != 3 {
		t.Errorf("%d dials, want 3 (one per request, each after the last closed)", n)
	}
}

// TestResponseFraming: the response is reframed for the client: chunked
// stays chunked, HEAD and 204 have no body, an interim 103 passes through,
// and an unparseable response head is a 502.
func TestResponseFraming(t *testing.T) {
	for _, tt := range []struct {
		name, method, reply string
		status              int
		body                string
		chunked             bool
	}{
		{"content-length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello", 200, "hello", false},
		{"chunked", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: 1\r\n\r\n", 200, "hello", true},
		{"HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 200, "", false},
		{"204", "GET", "HTTP/1.1 204 No Content\r\n\r\n", 204, "", false},
		{"103 then 200", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, "ok", false},
		{"garbage", "GET", "SSH-2.0-OpenSSH\r\n\r\n", 502, bodyUpstreamFailed, false},
		{"nothing", "GET", "", 502, bodyUpstreamFailed, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := publicAPI(t, tt.reply, nil)
			c := e.connect()
			io.WriteString(c, tt.method+" http://api.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n")
			br := bufio.NewReader(c)
			res, err := http.ReadResponse(br, &http.Request{Method: tt.method})
			if err == nil && res.StatusCode == 103 {
				if res.Header.Get("Link") != "</a>" {
					t.Errorf("103 lost its Link header: %v", res.Header)
				}
				res, err = http.ReadResponse(br, &http.Request{Method: tt.method})
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.status || string(b) != tt.body {
				t.Errorf("got %d %q, want %d %q", res.StatusCode, b, tt.status, tt.body)
			}
			if chunked := len(res.TransferEncoding) > 0; chunked != tt.chunked {
				t.Errorf("chunked %v, want %v", chunked, tt.chunked)
			}
			if tt.name == "content-length" && res.Header.Get("X-A") != "1" {
				t.Errorf("header X-A lost: %v", res.Header)
			}
		})
	}
}

// TestGoClientReusesConnection: net/http's transport, as agents use
// HTTP_PROXY, sends its requests over one kept connection.
func TestGoClientReusesConnection(t *testing.T) {
	e, up := keptEnv(t, nil, nil)
	proxyURL, _ := url.Parse("http://" + e.addr)
	// One connection at most: the transport hands a finished connection
	// back to its idle pool asynchronously, and without the bound a quick
	// next request may dial anew before it is there.
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), MaxConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	reused := 0
	for i := range 5 {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://api.test/%d", i), nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(ci httptrace.GotConnInfo) {
				if ci.Reused {
					reused++
				}
			},
		}))
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(b) != fmt.Sprintf("ok /%d", i) {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, b)
		}
	}
	if reused != 4 || up.conns.Load() != 1 {
		t.Errorf("client reused its connection %d times (want 4), upstream saw %d connections (want 1)", reused, up.conns.Load())
	}
}
