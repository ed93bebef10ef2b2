package apikit

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestListenModeAndOwner(t *testing.T) {
	me := &Owner{UID: os.Getuid(), GID: os.Getgid()}
	tests := []struct {
		name     string
		opts     SocketOptions
		wantMode fs.FileMode
	}{
		{"default owner only", SocketOptions{}, 0o600},
		{"agent socket for everyone", SocketOptions{Mode: 0o666}, 0o666},
		{"owner set", SocketOptions{Mode: 0o660, Owner: me}, 0o660},
		{"owner unchanged", SocketOptions{Owner: &Owner{UID: -1, GID: -1}}, 0o600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "run", "outcall", "host.sock")
			l, err := Listen(path, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != tt.wantMode {
				t.Errorf("mode %v, want socket %v", fi.Mode(), tt.wantMode)
			}
			if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != me.UID || int(st.Gid) != me.GID {
				t.Errorf("owner %d:%d, want %d:%d", st.Uid, st.Gid, me.UID, me.GID)
			}
			if d, err := os.Stat(filepath.Dir(path)); err != nil || d.Mode().Perm() != 0o750&^umask() {
				t.Errorf("created directory: %v, %v", d.Mode(), err)
			}
			if l.Addr().String() != path {
				t.Errorf("Addr %s, want %s", l.Addr(), path)
			}
			assertNoLeftovers(t, filepath.Dir(path))
			// The socket answers at its final path.
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			c.Close()
		})
	}
}

func umask() fs.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return fs.FileMode(m)
}

// assertNoLeftovers: the private directory is gone whatever happened.
func assertNoLeftovers(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".sock") {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestListenReplacesOnlySockets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "host.sock")
	l, err := Listen(path, SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A daemon that died leaves its socket behind.
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	l2, err := Listen(path, SocketOptions{})
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("Close left the socket: %v", err)
	}

	tests := []struct {
		name  string
		setup func(path string)
		check func(path string) bool
	}{
		{"regular file", func(p string) { os.WriteFile(p, []byte("keep"), 0o600) },
			func(p string) bool { b, _ := os.ReadFile(p); return string(b) == "keep" }},
		{"directory", func(p string) { os.Mkdir(p, 0o700) },
			func(p string) bool { fi, err := os.Stat(p); return err == nil && fi.IsDir() }},
		{"symlink to a socket path", func(p string) { os.Symlink(filepath.Join(dir, "elsewhere.sock"), p) },
			func(p string) bool { fi, err := os.Lstat(p); return err == nil && fi.Mode().Type() == fs.ModeSymlink }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			tt.setup(p)
			if _, err := Listen(p, SocketOptions{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
				t.Errorf("Listen over a %s: %v", tt.name, err)
			}
			if !tt.check(p) {
				t.Errorf("the %s was touched", tt.name)
			}
			assertNoLeftovers(t, dir)
		})
	}
}

// TestCloseKeepsASuccessorsSocket: a daemon that stops after another took
// over the path does not delete the newer socket.
func TestCloseKeepsASuccessorsSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host.sock")
	old, err := Listen(path, SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	successor, err := Listen(path, SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer successor.Close()
	old.Close()
	old.Close() // twice is fine
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the successor's socket is gone: %v", err)
	}
	c.Close()
}

// TestSocketNeverLooser watches the path while sockets come and go: every
// time the socket is there at all, it already has its final mode. Binding at
// the path and chmod-ing afterwards fails this test (with the usual umask
// 022 the socket is briefly 0755).
func TestSocketNeverLooser(t *testing.T) {
	old := syscall.Umask(0o022) // the umask a daemon typically inherits
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "host.sock")
	var stop atomic.Bool
	var seen, loose atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if fi, err := os.Lstat(path); err == nil {
					seen.Add(1)
					if fi.Mode().Perm() != 0o600 {
						loose.Add(1)
					}
				}
			}
		}()
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	for n := 0; n < 2000 && time.Now().Before(deadline); n++ {
		l, err := Listen(path, SocketOptions{})
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
	stop.Store(true)
	wg.Wait()
	if seen.Load() == 0 {
		t.Fatal("the watchers never saw the socket; the test proves nothing")
	}
	if loose.Load() > 0 {
		t.Errorf("the socket was seen with a looser mode %d of %d times", loose.Load(), seen.Load())
	}
}

func TestListenPathTooLong(t *testing.T) {
	dir := t.TempDir()
	long := filepath.Join(dir, strings.Repeat("d", maxSocketPath-len(dir)-12))
	path := filepath.Join(long, "h.sock")
	if len(path) > maxSocketPath {
		t.Skipf("temporary directory %s too long for this test", dir)
	}
	if _, err := Listen(path, SocketOptions{}); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("err = %v, want the path named too long", err)
	}
	assertNoLeftovers(t, long)
}

// TestServe: requests are answered in the envelope, and a done ctx stops
// the server and removes the socket.
func TestServe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	l, err := Listen(path, SocketOptions{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mux := http.NewServeMux()
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		var req request
		if err := ReadJSON(w, r, &req, 32); err != nil {
			WriteError(w, log, err)
			return
		}
		Reply(w, log, &req, nil)
	})
	mux.Handle("/", NoRoute(log))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, mux, ServeOptions{MaxBody: 32}) }()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"echo", "POST", "/echo", `{"name":"a"}`, 200, `{"success":true,"data":{"name":"a","port":null}}`},
		{"over the limit", "POST", "/echo", `{"name":"` + strings.Repeat("a", 40) + `"}`, 413, `{"success":false,"error":"invalid request body: larger than 32 bytes"}`},
		{"no route", "GET", "/nope", "", 404, `{"success":false,"error":"no route for GET /nope"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://localhost"+tt.path, strings.NewReader(tt.body))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || strings.TrimSpace(string(b)) != tt.want {
				t.Errorf("%d %s, want %d %s", resp.StatusCode, b, tt.status, tt.want)
			}
		})
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket still there after Serve: %v", err)
	}
}
