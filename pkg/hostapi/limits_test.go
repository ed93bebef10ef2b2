package hostapi

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/apikit"
)

// TestBridgeDownRoute: remove_ports comes as a query parameter or a body
// field; the spec's bodiless request means "do not remove".
func TestBridgeDownRoute(t *testing.T) {
	tests := []struct {
		name, path, body string
		status           int
		call, want       string
	}{
		{"bodiless", "/api/v1/bridge/down", "", 200, `BridgeDown {"remove_ports":false}`, `{"success":true}`},
		{"query", "/api/v1/bridge/down?remove_ports=true", "", 200, `BridgeDown {"remove_ports":true}`, `{"success":true}`},
		{"body", "/api/v1/bridge/down", `{"remove_ports":true}`, 200, `BridgeDown {"remove_ports":true}`, `{"success":true}`},
		{"bad query", "/api/v1/bridge/down?remove_ports=yes!", "", 400, "", `invalid query parameter remove_ports=\"yes!\": want true or false`},
		{"unknown field", "/api/v1/bridge/down", `{"remove":true}`, 400, "", `unknown field \"remove\"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &fakeService{}
			rec := httptest.NewRecorder()
			Handler(svc, slog.New(slog.NewTextHandler(io.Discard, nil))).ServeHTTP(rec, httptest.NewRequest("POST", tt.path, strings.NewReader(tt.body)))
			if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("status %d body %s; want %d containing %s", rec.Code, rec.Body, tt.status, tt.want)
			}
			if got := strings.Join(svc.calls, ";"); got != tt.call {
				t.Errorf("calls %q, want %q", got, tt.call)
			}
		})
	}
}

// serveTest serves the handler on a fresh socket with short timeouts.
func serveTest(t *testing.T, to Timeouts) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "host.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ServeWithTimeouts(ctx, l, Handler(&fakeService{}, slog.New(slog.NewTextHandler(io.Discard, nil))), to)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

// exchange writes req, then waits up to wait for the server to answer and
// close the connection; it returns the status line ("" if the server
// closed without one) and whether the server ended the exchange in time.
func exchange(t *testing.T, path, req string, wait time.Duration) (string, bool) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	r := bufio.NewReader(c)
	status, _ := r.ReadString('\n')
	_, err = io.ReadAll(r)
	return strings.TrimSpace(status), err == nil
}

// TestStalledClientsAreCutOff (defect 14): a client that sends its headers
// and then stalls in the body, or stalls in the headers, is answered or
// disconnected once the timeout passes; a normal request still works.
func TestStalledClientsAreCutOff(t *testing.T) {
	path := serveTest(t, Timeouts{Header: 300 * time.Millisecond, Body: 300 * time.Millisecond})

	// Positive control: a complete request with a body succeeds.
	status, closed := exchange(t, path, "POST /api/v1/bridge/down HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n{\"remove_ports\":true}", 3*time.Second)
	if !closed || !strings.Contains(status, " 200 ") {
		t.Fatalf("normal request: status %q, closed %v", status, closed)
	}

	start := time.Now()
	status, closed = exchange(t, path, "POST /api/v1/bridge/down HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"remo", 3*time.Second)
	if !closed {
		t.Fatal("stalled body: connection still open after 3s")
	}
	if !strings.Contains(status, " 408 ") {
		t.Errorf("stalled body: status %q, want 408", status)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("stalled body cut off after %v, before the timeout", d)
	}

	status, closed = exchange(t, path, "POST /api/v1/bridge/down HTTP/1.0\r\nHost: loc", 3*time.Second)
	if !closed {
		t.Fatal("stalled headers: connection still open after 3s")
	}
	t.Logf("stalled headers: status %q", status)

	// A body over the limit is refused, not buffered.
	big := `{"remove_ports":true,"x":"` + strings.Repeat("a", maxBody) + `"}`
	status, closed = exchange(t, path, "POST /api/v1/bridge/down HTTP/1.0\r\nHost: localhost\r\nContent-Length: "+strconv.Itoa(len(big))+"\r\n\r\n"+big, 3*time.Second)
	if !closed || !strings.Contains(status, " 413 ") {
		t.Errorf("oversized body: status %q, closed %v; want 413", status, closed)
	}
}

// TestSlowHandlerKeepsContext: the body deadline is lifted once the body is
// read, so a handler slower than it is not cancelled.
func TestSlowHandlerKeepsContext(t *testing.T) {
	h := apikit.BoundBodies(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		select {
		case <-r.Context().Done():
			http.Error(w, "cancelled", http.StatusServiceUnavailable)
		case <-time.After(600 * time.Millisecond):
			_, _ = io.WriteString(w, "ok")
		}
	}), maxBody, 200*time.Millisecond)
	srv := httptest.NewUnstartedServer(h)
	srv.Start()
	defer srv.Close()
	resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Errorf("slow handler: %d %s", resp.StatusCode, b)
	}
}
