package hostclient

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
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

func TestRequestBytes(t *testing.T) {
	tests := []struct {
		name, method, path string
		body               any
		want               string
	}{
		{
			name: "GET without body", method: "GET", path: "/api/v1/bridge",
			want: "GET /api/v1/bridge HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name: "POST without body", method: "POST", path: "/api/v1/bridge/up",
			want: "POST /api/v1/bridge/up HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
		},
		{
			name: "POST with JSON body", method: "POST", path: "/api/v1/rule/revoke",
			body: api.RevokeRequest{Container: "web", Destination: "203.0.113.10"},
			want: "POST /api/v1/rule/revoke HTTP/1.0\r\nHost: localhost\r\n" +
				"Content-Type: application/json\r\nContent-Length: 48\r\n\r\n" +
				`{"container":"web","destination":"203.0.113.10"}`,
		},
		{
			name: "DELETE without body", method: "DELETE", path: "/api/v1/endpoints/a%20b",
			want: "DELETE /api/v1/endpoints/a%20b HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, reply(`{"success":true}`))
			if err := New(f.path).Exec(tt.method, tt.path, tt.body); err != nil {
				t.Fatalf("Exec: %v", err)
			}
			if got := f.received(t); got != tt.want {
				t.Errorf("request bytes:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestDoDecodesData(t *testing.T) {
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
			got, err := Do[api.BridgeStatus](New(f.path), "GET", "/api/v1/bridge", nil)
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if got.Name != tt.want.Name || got.Up != tt.want.Up || got.NftablesActive != tt.want.NftablesActive ||
				(got.Index == nil) != (tt.want.Index == nil) || (got.Index != nil && *got.Index != *tt.want.Index) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDoIgnoresStatusLine(t *testing.T) {
	f := startFake(t, "HTTP/1.0 500 Internal Server Error\r\n\r\n"+`{"success":true,"data":{"removed":3}}`)
	got, err := Do[api.FlushResult](New(f.path), "POST", "/api/v1/rules/flush", nil)
	if err != nil || got.Removed != 3 {
		t.Fatalf("got %+v, %v; want removed 3", got, err)
	}
}

func TestDoNullDataIsZero(t *testing.T) {
	f := startFake(t, reply(`{"success":true,"data":null}`))
	got, err := Do[[]api.Endpoint](New(f.path), "GET", "/api/v1/endpoints", nil)
	if err != nil || got != nil {
		t.Fatalf("got %v, %v; want nil slice and no error", got, err)
	}
}

func TestExecIgnoresData(t *testing.T) {
	f := startFake(t, reply(`{"success":true,"data":{"anything":1}}`))
	if err := New(f.path).Exec("POST", "/api/v1/bridge/down", nil); err != nil {
		t.Fatalf("Exec: %v", err)
	}
}

func TestAPIError(t *testing.T) {
	const msg = "bridge operation failed: create bridge: Operation not permitted"
	f := startFake(t, reply(`{"success":false,"error":"`+msg+`"}`))
	_, err := Do[api.BridgeStatus](New(f.path), "POST", "/api/v1/bridge/up", nil)
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
			err := New(path).Exec("GET", "/api/v1/bridge", nil)
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
			_, err := Do[api.FlushResult](New(f.path), "GET", "/api/v1/x", nil)
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
	err := c.Exec("GET", "/api/v1/bridge", nil)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if !strings.Contains(err.Error(), "did not answer within 100ms") {
		t.Errorf("Error() = %q, want it to name the timeout", err.Error())
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Exec took %v, want about 100ms", elapsed)
	}
}

func ptr[T any](v T) *T { return &v }
