package lab

import (
	"bytes"
	"context"
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
	"testing"
	"time"
)

// proxyRules allow web.test through the proxy (its address is the upstream
// namespace's, a documentation address: allow_private_ips) and nothing
// else; evil.test resolves but no rule allows it.
const proxyRules = `version: "1"
rules:
  - id: web-via-proxy
    condition: 'network.hostname == "web.test"'
    action: allow
    egress:
      mode: proxy
      allow_private_ips: true
`

// serveHTTP serves h on addr inside namespace ns until the test ends, over
// TLS when tlsOn (a self-signed certificate for web.test, returned).
func serveHTTP(t *testing.T, ns, addr string, tlsOn bool, h http.Handler) *x509.Certificate {
	t.Helper()
	var l net.Listener
	if err := Do(ns, func() error {
		var err error
		l, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = l
	if !tlsOn {
		srv.Start()
		t.Cleanup(srv.Close)
		return nil
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Certificate()
}

// proxyClient is an HTTP client in namespace ns that sends everything
// through the proxy at proxyAddr, with serverName as the TLS SNI. The test
// server's certificate (httptest's, for example.com) is checked against
// cert by pinning, not by name, so any SNI can be sent.
func proxyClient(ns, proxyAddr string, cert *x509.Certificate, serverName string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := Do(ns, func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy:       http.ProxyURL(&url.URL{Scheme: "http", Host: proxyAddr}),
		DialContext: dial,
		TLSClientConfig: &tls.Config{ServerName: serverName, InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if cert == nil || len(raw) == 0 || !bytes.Equal(raw[0], cert.Raw) {
					return errors.New("not the test server's certificate")
				}
				return nil
			}},
	}}
}

// TestLabProxy: allowed HTTP and HTTPS through each agent's gateway proxy
// succeed; a host no rule allows gets 403 with the rule's reason; a CONNECT
// whose SNI names another host is closed; the proxy-only host's address is
// not reachable directly.
func TestLabProxy(t *testing.T) {
	w := setUpWithRules(t, map[string]string{"10-web.yaml": proxyRules})
	a1, d := w.a1, w.d
	ServeDNSZone(t, w.lab.Up, netip.MustParseAddrPort(Upstream+":53"), Zone{
		"web.test.":  {RR(t, "web.test. 60 IN A "+Upstream2)},
		"evil.test.": {RR(t, "evil.test. 60 IN A "+Upstream2)},
	})
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s %s", r.Host, r.URL.Path)
	})
	serveHTTP(t, w.lab.Up, Upstream2+":8088", false, hello)
	cert := serveHTTP(t, w.lab.Up, Upstream2+":8443", true, hello)
	proxyAddr := Gateway + ":8080"

	get := func(c *http.Client, u string) (int, string, http.Header, error) {
		resp, err := c.Get(u)
		if err != nil {
			return 0, "", nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header, nil
	}
	// Positive control for the direct probe below: the proxy-only host's
	// address answers the host namespace.
	mustReach(t, TCP, w.lab.Host, Upstream2+":80")

	plain := proxyClient(a1.NS, proxyAddr, cert, "web.test")
	code, body, _, err := get(plain, "http://web.test:8088/index")
	if err != nil || code != 200 || body != "hello web.test:8088 /index" {
		t.Fatalf("allowed HTTP through the proxy: %d %q %v", code, body, err)
	}
	code, body, _, err = get(plain, "https://web.test:8443/secure")
	if err != nil || code != 200 || body != "hello web.test:8443 /secure" {
		t.Fatalf("allowed HTTPS through the proxy: %d %q %v", code, body, err)
	}
	code, _, hdr, err := get(plain, "http://evil.test:8088/")
	if err != nil || code != 403 || hdr.Get("X-Outcall-Block-Reason") != "default policy" {
		t.Errorf("a host no rule allows: %d %v %v", code, hdr, err)
	}
	// CONNECT to web.test, then a ClientHello for evil.test: closed.
	sni := proxyClient(a1.NS, proxyAddr, cert, "evil.test")
	if _, _, _, err := get(sni, "https://web.test:8443/"); err == nil {
		t.Error("a tunnel whose SNI names a host no rule allows carried a request")
	}
	// The proxy-only host's address, directly: closed (no grant, no
	// direct_ip rule).
	before := counters(t, d)
	if TCP(a1.NS, Upstream2+":80") {
		t.Error("the agent reached the proxy-only host's address directly")
	}
	if moved := counters(t, d)["drop/no_rule"] - before["drop/no_rule"]; moved < 1 {
		t.Errorf("drop/no_rule moved by %d for the direct probe, want at least 1", moved)
	}
	status := mustCLI(t, d, "proxy", "status")
	if !strings.Contains(status, "Proxy:          active") || !strings.Contains(status, "Listen:         "+proxyAddr) {
		t.Errorf("proxy status:\n%s", status)
	}
}
