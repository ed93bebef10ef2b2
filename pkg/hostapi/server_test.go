package hostapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

// fakeService records calls; the real Service is the daemon, exercised end
// to end in test/lab.
type fakeService struct {
	Service
	added api.EndpointAddRequest
	err   error
}

func (f *fakeService) BridgeStatus(context.Context) (api.BridgeStatus, error) {
	return api.BridgeStatus{Name: "outcall0"}, f.err
}

func (f *fakeService) AddEndpoint(_ context.Context, req api.EndpointAddRequest) (api.Endpoint, error) {
	f.added = req
	return api.Endpoint{Name: req.Name, Identity: 3}, f.err
}

func (f *fakeService) RemoveEndpoint(_ context.Context, name string) error {
	if name != "a b" {
		return errors.New("wrong name " + name)
	}
	return &StatusError{Status: http.StatusNotFound, Err: errors.New("endpoint not found")}
}

func TestHandler(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		err                      error
		status                   int
		want                     string
	}{
		{"status down keeps null index", "GET", "/api/v1/bridge", "", nil, 200,
			`{"success":true,"data":{"name":"outcall0","up":false,"index":null,"nftables_active":false}}`},
		{"service error", "GET", "/api/v1/bridge", "", errors.New("netlink: boom"), 500, `{"success":false,"error":"netlink: boom"}`},
		{"add endpoint", "POST", "/api/v1/endpoints", `{"name":"a","interface":"v","ip":"10.200.0.2","mac":"02:00:00:00:00:02"}`, nil, 200,
			`{"success":true,"data":{"name":"a","interface":"","ip":"","mac":"","identity":3,"ifindex":0,"attached":false}}`},
		{"unknown field", "POST", "/api/v1/endpoints", `{"name":"a","nmae":"b"}`, nil, 400, `unknown field \"nmae\"`},
		{"trailing data", "POST", "/api/v1/endpoints", `{"name":"a"} {}`, nil, 400, "trailing data"},
		{"not json", "POST", "/api/v1/endpoints", `name=a`, nil, 400, "invalid request body"},
		{"status error", "DELETE", "/api/v1/endpoints/a%20b", "", nil, 404, `{"success":false,"error":"endpoint not found"}`},
		{"unknown route", "GET", "/api/v1/nope", "", nil, 404, `no route for GET /api/v1/nope`},
		{"wrong method", "DELETE", "/api/v1/bridge", "", nil, 404, `no route for DELETE /api/v1/bridge`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &fakeService{err: tt.err}
			rec := httptest.NewRecorder()
			Handler(svc, slog.New(slog.NewTextHandler(io.Discard, nil))).ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
			if rec.Code != tt.status {
				t.Errorf("status %d, want %d (%s)", rec.Code, tt.status, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("body %s, want it to contain %s", rec.Body, tt.want)
			}
		})
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "outcall", "host.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	l.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	l.Close()
	// A stale socket from a dead daemon is replaced.
	l2, err := Listen(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	// A regular file at the path is not ours to delete.
	file := filepath.Join(dir, "file.sock")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("regular file was touched")
	}
}
