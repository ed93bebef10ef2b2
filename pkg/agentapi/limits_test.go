package agentapi

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
)

// TestConnectionCap: with the cap's connections open, a new one is not
// served until one of them closes.
func TestConnectionCap(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxConns = 2 })
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("unix", h.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	time.Sleep(50 * time.Millisecond) // both accepted
	short := h.newClient()
	short.Timeout = 300 * time.Millisecond
	if resp, err := short.Post("http://agent"+api.AgentRouteCheckin, "application/json", strings.NewReader("{}")); err == nil {
		resp.Body.Close()
		t.Fatalf("a third connection was served past the cap: %d", resp.StatusCode)
	}
	held[0].Close()
	if r := h.do("POST", api.AgentRouteCheckin, "", "{}"); r.status != 200 {
		t.Fatalf("after a connection closed: %d %s", r.status, r.raw)
	}
}

// TestSlowClientCutOff: a client that never finishes its headers is
// disconnected after the header timeout; one that sends a request in time
// on a fresh connection is answered (positive control).
func TestSlowClientCutOff(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Timeouts.Header = 200 * time.Millisecond })
	c, err := net.Dial("unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("POST /v1/checkin HTTP/1.1\r\nHost: a\r\n")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	b, _ := io.ReadAll(c)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a stalled client held its connection for %v", took)
	}
	if strings.Contains(string(b), "session_token") {
		t.Errorf("a stalled request was answered: %q", b)
	}
	req, _ := http.NewRequestWithContext(context.Background(), "POST", "http://agent"+api.AgentRouteCheckin, strings.NewReader("{}"))
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("positive control: %d", resp.StatusCode)
	}
}
