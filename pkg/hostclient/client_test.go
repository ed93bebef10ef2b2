package hostclient

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
)

// fakeDaemon stands in for outcalld: a minimal HTTP/1.0 server on a Unix
// socket in t.TempDir() that records each raw request, answers with a canned
// response and closes the connection. outcalld's real host API is exercised by
// the end-to-end tests elsewhere; these tests pin the client's side of the wire.
type fakeDaemon struct {
	path     string
	requests chan string
	done     chan struct{} // closed when the test ends
}

// startFake serves response (raw bytes, status line included) to every
// connection. With response == "" the server reads the request and never
// answers.
func startFake(t *testing.T, response string) *fakeDaemon {
	t.Helper()
	path := filepath.Join(t.TempDir(), "host.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDaemon{path: path, requests: make(chan string, 16), done: make(chan struct{})}
	t.Cleanup(func() { close(f.done); ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(conn, response)
		}
	}()
	return f
}

// serve reads one request (headers, then Content-Length bytes of body),
// records it verbatim and writes the canned response.
func (f *fakeDaemon) serve(conn net.Conn, response string) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	var req strings.Builder
	length := 0
	for {
		line, err := r.ReadString('\n')
		req.WriteString(line)
		if err != nil {
			f.requests <- req.String()
			return
		}
		if line == "\r\n" {
			break
		}
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	body := make([]byte, length)
	n, _ := io.ReadFull(r, body) // a short body shows up in the recorded request
	req.Write(body[:n])
	f.requests <- req.String()
	if response == "" {
		<-f.done // never answer
		return
	}
	io.WriteString(conn, response)
}

// received returns the next request the fake daemon recorded.
func (f *fakeDaemon) received(t *testing.T) string {
	t.Helper()
	select {
	case r := <-f.requests:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("fake daemon received no request")
		return ""
	}
}

// reply wraps a JSON body in an HTTP/1.0 response.
func reply(body string) string {
	return "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body
}

// TestRequestBytes pins the exact request of every route without a rule
// engine method (those are in rules_test.go).
func TestRequestBytes(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		call     func(*Client) error
		response string // the envelope
		want     string
	}{
		{
			name: "bridge status", call: func(c *Client) error { _, err := c.BridgeStatus(ctx); return err },
			response: `{"success":true,"data":{"name":"outcall0","up":false,"index":null,"nftables_active":false}}`,
			want:     "GET /api/v1/bridge HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name: "bridge up", call: func(c *Client) error { return c.BridgeUp(ctx) },
			want: "POST /api/v1/bridge/up HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
		},
		{
			name: "bridge down", call: func(c *Client) error { return c.BridgeDown(ctx, api.BridgeDownRequest{}) },
			want: "POST /api/v1/bridge/down HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
		},
		{
			name: "bridge down removing ports", call: func(c *Client) error { return c.BridgeDown(ctx, api.BridgeDownRequest{RemovePorts: true}) },
			want: "POST /api/v1/bridge/down?remove_ports=true HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
		},
		{
			name: "endpoints", call: func(c *Client) error { _, err := c.Endpoints(ctx); return err },
			response: `{"success":true,"data":[]}`,
			want:     "GET /api/v1/endpoints HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name: "add endpoint",
			call: func(c *Client) error {
				_, err := c.AddEndpoint(ctx, api.EndpointAddRequest{Name: "web", Interface: "veth-web", IP: "10.200.0.2", MAC: "02:00:00:00:00:0a"})
				return err
			},
			response: `{"success":true,"data":{"name":"web","interface":"veth-web","ip":"10.200.0.2","mac":"02:00:00:00:00:0a","identity":3,"ifindex":7,"attached":true}}`,
			want: "POST /api/v1/endpoints HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 81\r\n\r\n" +
				`{"name":"web","interface":"veth-web","ip":"10.200.0.2","mac":"02:00:00:00:00:0a"}`,
		},
		{
			name: "remove endpoint escapes the name", call: func(c *Client) error { return c.RemoveEndpoint(ctx, "a b/c") },
			want: "DELETE /api/v1/endpoints/a%20b%2Fc HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
		},
		{
			name: "allow",
			call: func(c *Client) error {
				_, err := c.Allow(ctx, api.AllowRequest{Container: "web", Destination: "203.0.113.10"})
				return err
			},
			response: `{"success":true,"data":{"container":"web","src_ip":"10.200.0.2","destination":"203.0.113.10","port":null,"protocol":null}}`,
			want: "POST /api/v1/rule/allow HTTP/1.0\r\nHost: localhost\r\n" +
				"Content-Type: application/json\r\nContent-Length: 48\r\n\r\n" +
				`{"container":"web","destination":"203.0.113.10"}`,
		},
		{
			name: "revoke",
			call: func(c *Client) error {
				return c.Revoke(ctx, api.RevokeRequest{Container: "web", Destination: "203.0.113.10"})
			},
			want: "POST /api/v1/rule/revoke HTTP/1.0\r\nHost: localhost\r\n" +
				"Content-Type: application/json\r\nContent-Length: 48\r\n\r\n" +
				`{"container":"web","destination":"203.0.113.10"}`,
		},
		{
			name: "active grants", call: func(c *Client) error { _, err := c.ActiveRules(ctx); return err },
			response: `{"success":true,"data":[]}`,
			want:     "GET /api/v1/rules/active HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name: "flush", call: func(c *Client) error { _, err := c.FlushRules(ctx); return err },
			response: `{"success":true,"data":{"removed":0}}`,
			want:     "POST /api/v1/rules/flush HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
		},
		{
			name: "datapath counters", call: func(c *Client) error { _, err := c.DatapathCounters(ctx); return err },
			response: `{"success":true,"data":[]}`,
			want:     "GET /api/v1/datapath/counters HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := tt.response
			if resp == "" {
				resp = `{"success":true}`
			}
			f := startFake(t, reply(resp))
			if err := tt.call(New(f.path)); err != nil {
				t.Fatalf("call: %v", err)
			}
			if got := f.received(t); got != tt.want {
				t.Errorf("request bytes:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestTypedResults: each call hands back the envelope's data as its type.
func TestTypedResults(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name, data string
		call       func(*Client) (any, error)
		want       any
	}{
		{"endpoint", `{"name":"web","interface":"veth-web","ip":"10.200.0.2","mac":"02:00:00:00:00:0a","identity":3,"ifindex":7,"attached":true}`,
			func(c *Client) (any, error) { return c.AddEndpoint(ctx, api.EndpointAddRequest{}) },
			api.Endpoint{Name: "web", Interface: "veth-web", IP: "10.200.0.2", MAC: "02:00:00:00:00:0a", Identity: 3, Ifindex: 7, Attached: true}},
		{"grant", `{"container":"web","src_ip":"10.200.0.2","destination":"203.0.113.10","port":443,"protocol":"tcp"}`,
			func(c *Client) (any, error) { return c.Allow(ctx, api.AllowRequest{}) },
			api.ActiveRule{Container: "web", SrcIP: "10.200.0.2", Destination: "203.0.113.10", Port: ptr(uint16(443)), Protocol: ptr("tcp")}},
		{"grants", `[{"container":"web","src_ip":"","destination":"203.0.113.10","port":null,"protocol":null}]`,
			func(c *Client) (any, error) { return c.ActiveRules(ctx) },
			[]api.ActiveRule{{Container: "web", Destination: "203.0.113.10"}}},
		{"flush", `{"removed":3}`,
			func(c *Client) (any, error) { return c.FlushRules(ctx) },
			api.FlushResult{Removed: 3}},
		{"counters", `[{"verdict":"drop","reason":"no_rule","packets":2,"bytes":120}]`,
			func(c *Client) (any, error) { return c.DatapathCounters(ctx) },
			[]api.DatapathCounter{{Verdict: "drop", Reason: "no_rule", Packets: 2, Bytes: 120}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, reply(`{"success":true,"data":`+tt.data+`}`))
			got, err := tt.call(New(f.path))
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestDecodesData(t *testing.T) {
	tests := []struct {
		name, body string
		want       api.BridgeStatus
	}{
		{
			name: "up",
			body: `{"success":true,"data":{"name":"outcall0","up":true,"index":42,"nftables_active":true}}`,
			want: api.BridgeStatus{Name: "outcall0", Up: true, Index: ptr(uint32(42)), NftablesActive: true},
		},
		{
			name: "down",
			body: `{"success":true,"data":{"name":"outcall0","up":false,"index":null,"nftables_active":false}}`,
			want: api.BridgeStatus{Name: "outcall0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, reply(tt.body))
			got, err := New(f.path).BridgeStatus(context.Background())
			if err != nil {
				t.Fatalf("BridgeStatus: %v", err)
			}
			if got.Name != tt.want.Name || got.Up != tt.want.Up || got.NftablesActive != tt.want.NftablesActive ||
				(got.Index == nil) != (tt.want.Index == nil) || (got.Index != nil && *got.Index != *tt.want.Index) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestIgnoresStatusLine(t *testing.T) {
	f := startFake(t, "HTTP/1.0 500 Internal Server Error\r\n\r\n"+`{"success":true,"data":{"removed":3}}`)
	got, err := New(f.path).FlushRules(context.Background())
	if err != nil || got.Removed != 3 {
		t.Fatalf("got %+v, %v; want removed 3", got, err)
	}
}

func TestNullDataIsZero(t *testing.T) {
	f := startFake(t, reply(`{"success":true,"data":null}`))
	got, err := New(f.path).Endpoints(context.Background())
	if err != nil || got != nil {
		t.Fatalf("got %v, %v; want nil slice and no error", got, err)
	}
}

func TestDataIgnoredWhereUnused(t *testing.T) {
	f := startFake(t, reply(`{"success":true,"data":{"anything":1}}`))
	if err := New(f.path).BridgeDown(context.Background(), api.BridgeDownRequest{}); err != nil {
		t.Fatalf("BridgeDown: %v", err)
	}
}

func TestAPIError(t *testing.T) {
	const msg = "bridge operation failed: create bridge: Operation not permitted"
	f := startFake(t, reply(`{"success":false,"error":"`+msg+`"}`))
	err := New(f.path).BridgeUp(context.Background())
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v (%T), want *APIError", err, err)
	}
	if apiErr.Message != msg || err.Error() != msg {
		t.Errorf("Message = %q, Error() = %q, want %q", apiErr.Message, err.Error(), msg)
	}
}

func TestUnreachable(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "regular")
	if err := os.WriteFile(file, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"missing path": filepath.Join(dir, "missing.sock"),
		"regular file": file,
		"directory":    dir,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(path).BridgeStatus(context.Background())
			var ue *UnreachableError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v (%T), want *UnreachableError", err, err)
			}
			want := "cannot connect to outcalld at " + path + " — is it running?"
			if err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
			if ue.SocketPath != path || ue.Unwrap() == nil {
				t.Errorf("SocketPath = %q, cause = %v", ue.SocketPath, ue.Unwrap())
			}
		})
	}
}

func TestMalformedResponse(t *testing.T) {
	tests := []struct {
		name, response, want string
	}{
		{"empty", "", "malformed response from outcalld: empty response"},
		{"no separator", "HTTP/1.0 200 OK\r\n" + `{"success":true}`, "no header/body separator"},
		{"body not JSON", "HTTP/1.0 404 Not Found\r\n\r\n404 page not found\n", `body is not a JSON envelope (status "HTTP/1.0 404 Not Found")`},
		{"trailing garbage", reply(`{"success":true}x`), "body is not a JSON envelope"},
		{"no success member", reply(`{"data":{}}`), `JSON envelope without "success"`},
		{"success without data", reply(`{"success":true}`), `success response without "data"`},
		{"data of wrong type", reply(`{"success":true,"data":[1]}`), `cannot decode "data"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f *fakeDaemon
			if tt.response == "" {
				f = startClosing(t)
			} else {
				f = startFake(t, tt.response)
			}
			_, err := New(f.path).FlushRules(context.Background())
			var re *ResponseError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v (%T), want *ResponseError", err, err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "malformed response from outcalld: ") {
				t.Errorf("Error() = %q, want it to contain %q", err.Error(), tt.want)
			}
		})
	}
}

// startClosing is a fake daemon that reads the request and closes the
// connection without answering.
func startClosing(t *testing.T) *fakeDaemon {
	t.Helper()
	path := filepath.Join(t.TempDir(), "host.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			bufio.NewReader(conn).ReadString('\n')
			conn.Close()
		}
	}()
	return &fakeDaemon{path: path}
}

func TestDeadline(t *testing.T) {
	f := startFake(t, "") // never answers
	c := New(f.path)
	c.Timeout = 100 * time.Millisecond
	start := time.Now()
	_, err := c.BridgeStatus(context.Background())
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if !strings.Contains(err.Error(), "did not answer within 100ms") {
		t.Errorf("Error() = %q, want it to name the timeout", err.Error())
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("BridgeStatus took %v, want about 100ms", elapsed)
	}
}

func ptr[T any](v T) *T { return &v }

// TestContext: a cancelled context ends an exchange the daemon never
// answers, well before the client's own timeout, and a context that is
// already done sends nothing at all.
func TestContext(t *testing.T) {
	f := startFake(t, "") // never answers
	c := New(f.path)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		f.received(t)
		cancel()
	}()
	start := time.Now()
	_, err := c.BridgeStatus(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("cancelled call took %v", elapsed)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.BridgeStatus(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the context's deadline", err)
	}
	f.received(t)

	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if err := c.BridgeUp(done); !errors.Is(err, context.Canceled) {
		t.Errorf("done context: err = %v, want context.Canceled", err)
	}
	var ue *UnreachableError
	if errors.As(err, &ue) {
		t.Error("a done context reads as an unreachable daemon")
	}
	select {
	case r := <-f.requests:
		t.Errorf("done context still sent %q", r)
	case <-time.After(100 * time.Millisecond):
	}
}
