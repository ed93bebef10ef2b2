package shim

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

// Answers of a well-behaved agent API.
const (
	testContainerID = "4f1c0e5b9a2d4c7e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f506"
	testToken       = "tok-0123456789abcdef0123456789abcdef"
	checkinOK       = `{"success":true,"data":{"container_id":"` + testContainerID + `","session_token":"` + testToken + `","context_keys":["action_type","target","metadata"]}}`
	verdictAllow    = `{"success":true,"data":{"allowed":true,"matched_rule":"allow-tools","reason":null}}`
	verdictDeny     = `{"success":true,"data":{"allowed":false,"matched_rule":null,"reason":"no rule allows tool_exec of rm"}}`
)

// fakeAgent is an agent API on a real Unix socket, agent.sock in a short
// temporary directory, whose answers a test chooses per route.
type fakeAgent struct {
	t    testing.TB
	dir  string
	path string
	ln   net.Listener
	srv  *http.Server

	mu         sync.Mutex
	checkin    http.HandlerFunc
	permission http.HandlerFunc
	checkins   int
	requests   []api.PermissionRequest
	auth       []string
	arrived    chan struct{} // a permission request arrived (buffered)
	vanished   bool
}

func newFakeAgent(t testing.TB) *fakeAgent {
	t.Helper()
	// t.TempDir's path can pass the 108-byte limit of a socket address.
	dir, err := os.MkdirTemp("", "shim-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := &fakeAgent{t: t, dir: dir, path: filepath.Join(dir, "agent.sock"), arrived: make(chan struct{}, 64)}
	f.checkin = respond(http.StatusOK, checkinOK)
	f.permission = respond(http.StatusOK, verdictAllow)
	ln, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.AgentRouteCheckin, func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.checkins++
		h := f.checkin
		f.mu.Unlock()
		h(w, r)
	})
	mux.HandleFunc("POST "+api.AgentRoutePermission, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, api.AgentBodyLimit+1))
		var req api.PermissionRequest
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || r.Header.Get("Content-Type") != "application/json" || r.Host != "localhost" {
			respond(http.StatusBadRequest, `{"success":false,"error":"invalid request: malformed JSON body"}`)(w, r)
			return
		}
		f.mu.Lock()
		f.requests = append(f.requests, req)
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		h := f.permission
		f.mu.Unlock()
		select { // tests read it for their first requests; a benchmark never does
		case f.arrived <- struct{}{}:
		default:
		}
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			respond(http.StatusUnauthorized, `{"success":false,"error":"invalid or missing session token"}`)(w, r)
			return
		}
		h(w, r)
	})
	f.srv = &http.Server{Handler: mux}
	go func() {
		if err := f.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			t.Errorf("fake agent API: %v", err)
		}
	}()
	t.Cleanup(func() { f.srv.Close() })
	return f
}

// setCheckin and setPermission choose the routes' answers.
func (f *fakeAgent) setCheckin(h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checkin = h
}

func (f *fakeAgent) setPermission(h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.permission = h
}

// vanish is outcalld going away: the listener closes, open connections
// drop and the socket file is gone.
func (f *fakeAgent) vanish() {
	f.mu.Lock()
	f.vanished = true
	f.mu.Unlock()
	f.srv.Close()
	os.Remove(f.path)
}

// seen returns the permission requests received so far.
func (f *fakeAgent) seen() []api.PermissionRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.PermissionRequest(nil), f.requests...)
}

func (f *fakeAgent) checkinCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checkins
}

// respond answers status with body as JSON.
func respond(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// stall never answers; the request ends when the client gives up.
func stall(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
