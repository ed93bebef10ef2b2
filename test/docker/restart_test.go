package docker

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"outcall.dev/outcall/test/dockerlab"
)

// proberScript runs in the container as its command: two loops, one
// trying the denied upstream address directly ("D+" when it answered),
// one fetching web.test through the proxy ("A+" when it came back). Each
// try is bounded; the loops end by themselves.
func proberScript() string {
	return fmt.Sprintf(`(i=0; while [ $i -lt 1500 ]; do if timeout 1 probe tcp %s >/dev/null 2>&1; then echo D+; else echo D-; fi; i=$((i+1)); sleep 0.1; done) &
(i=0; while [ $i -lt 1500 ]; do if timeout 2 wget -q -O /dev/null http://web.test:8088/probe 2>/dev/null; then echo A+; else echo A-; fi; i=$((i+1)); sleep 0.1; done) &
wait`, deniedAddr)
}

// probeLine is one line of the prober's log.
type probeLine struct {
	at   time.Time
	kind string // "D+", "D-", "A+", "A-"
}

// proberLog reads the prober's lines with Docker's timestamps.
func (w *world) proberLog(t *testing.T, name string) []probeLine {
	t.Helper()
	out := w.docker.Must(t, "logs", "--timestamps", name)
	var lines []probeLine
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, f[0])
		if err == nil {
			lines = append(lines, probeLine{at, f[1]})
		}
	}
	return lines
}

// waitAllowed waits for an "A+" line after since.
func (w *world) waitAllowed(t *testing.T, name string, since time.Time, what string) time.Time {
	t.Helper()
	var at time.Time
	waitFor(t, 30*time.Second, what, func() bool {
		for _, l := range w.proberLog(t, name) {
			if l.kind == "A+" && l.at.After(since) {
				at = l.at
				return true
			}
		}
		return false
	})
	return at
}

// window is a span in which the daemon did not run.
type window struct {
	what       string
	from, to   time.Time
	allowed    int // A lines in it
	allowedOK  int // of which got through
	deniedTrys int
}

// TestRestarts (d): outcalld stopped with SIGTERM, and separately with
// SIGKILL, leaves every container running and blocked: while it is down
// nothing gets through, allowed or not (fail closed); restarted, it binds
// its containers again and the allowed probe succeeds again. The denied
// probe never gets through, at any time. Then dockerd restarted (when no
// one else uses it): the containers stop, their identities go, and
// `docker start` brings them back enforced.
func TestRestarts(t *testing.T) {
	w := setUp(t)
	w.aim(t, w.subnet.Addr(), w.bridge, deniedAddr.Addr(), webAddr.Addr())
	mustReachRoot(t, w.u, deniedAddr)
	names := []string{w.u.Name("p1"), w.u.Name("p2")}
	for _, n := range names {
		c := w.create(t, n, nil, "sh", "-c", proberScript())
		w.aim(t, c.IP, c.Bridge, deniedAddr.Addr(), webAddr.Addr())
	}
	start := time.Now()
	for _, n := range names {
		w.waitAllowed(t, n, start, n+"'s first allowed fetch (positive control)")
	}
	var windows []*window
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		err := w.d.signal(sig)
		stopped := time.Now()
		t.Logf("outcalld after %v: %v", sig, err)
		// A fetch that completed just before the exit may be logged a
		// moment after it.
		win := &window{what: "outcalld down after " + sig.String(), from: stopped.Add(300 * time.Millisecond)}
		time.Sleep(4 * time.Second)
		for _, n := range names {
			if st := w.docker.Must(t, "inspect", "--format", "{{.State.Status}}", n); st != "running" {
				t.Errorf("%s is %q after outcalld's %v, want running", n, st, sig)
			}
		}
		if err := exec.Command("nft", "list", "table", "inet", "outcall").Run(); err != nil {
			t.Errorf("the nftables floor is gone after %v: %v", sig, err)
		}
		win.to = time.Now()
		windows = append(windows, win)
		w.start(t)
		restarted := time.Now()
		for _, n := range names {
			at := w.waitAllowed(t, n, restarted, n+"'s allowed fetch after the restart")
			t.Logf("%s: allowed again %v after outcalld restarted (%v)", n, at.Sub(restarted).Round(time.Millisecond), sig)
		}
	}

	t.Run("dockerd restart", func(t *testing.T) { testDockerdRestart(t, w, names) })

	// The record: no denied probe ever got through; no allowed one while
	// the daemon was down.
	denied, deniedOK := 0, 0
	for _, n := range names {
		mine := 0
		for _, l := range w.proberLog(t, n) {
			switch l.kind {
			case "D+":
				deniedOK++
				mine++
			case "D-":
				mine++
			}
			for _, win := range windows {
				if l.at.After(win.from) && l.at.Before(win.to) {
					if l.kind[0] == 'A' {
						win.allowed++
						if l.kind == "A+" {
							win.allowedOK++
						}
					} else {
						win.deniedTrys++
					}
				}
			}
		}
		if mine == 0 {
			t.Errorf("%s tried no denied probe; the record shows nothing about it", n)
		}
		denied += mine
	}
	// How many denied probes fit in the test depends on the machine's
	// speed (each waits out its timeout), so the bar is that every
	// container and every down window tried some, not a count.
	if deniedOK != 0 {
		t.Errorf("%d of %d denied probes got through (want 0)", deniedOK, denied)
	}
	for _, win := range windows {
		t.Logf("%s for %v: %d allowed fetches tried, %d got through; %d denied probes", win.what, win.to.Sub(win.from).Round(time.Millisecond), win.allowed, win.allowedOK, win.deniedTrys)
		if win.allowedOK != 0 || win.allowed == 0 {
			t.Errorf("%s: %d of %d allowed fetches got through (want 0 of at least 1: fail closed)", win.what, win.allowedOK, win.allowed)
		}
		if win.deniedTrys == 0 {
			t.Errorf("%s: no denied probe was tried in the window; the record shows nothing about it", win.what)
		}
	}
	t.Logf("denied probes over the whole test: %d, none through", denied)
}

// testDockerdRestart restarts this machine's dockerd the way it was
// started (same command line, setsid, its log appended), only when no
// other test session uses Docker and every container is this test's.
func testDockerdRestart(t *testing.T, w *world, names []string) {
	if reason := dockerdRestartUnsafe(t, w); reason != "" {
		// Not a skip: the rest of the test stands; the report says what
		// was not shown.
		t.Logf("NOT SHOWN: dockerd not restarted: %s", reason)
		return
	}
	pidB, err := os.ReadFile("/var/run/docker.pid")
	if err != nil {
		t.Logf("NOT SHOWN: dockerd not restarted: no /var/run/docker.pid: %v", err)
		return
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidB)))
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || pid <= 1 {
		t.Logf("NOT SHOWN: dockerd not restarted: cmdline of pid %d: %v", pid, err)
		return
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if filepath.Base(args[0]) != "dockerd" {
		t.Logf("NOT SHOWN: dockerd not restarted: pid %d is %q", pid, args[0])
		return
	}
	before := map[string]string{}
	for _, n := range names {
		before[n] = w.docker.Must(t, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", n)
	}
	t.Logf("stopping dockerd (pid %d, %q)", pid, strings.Join(args, " "))
	_ = syscall.Kill(pid, syscall.SIGTERM)
	waitFor(t, 60*time.Second, "dockerd to exit", func() bool { return syscall.Kill(pid, 0) != nil })
	stopped := time.Now()
	log, err := os.OpenFile("/tmp/dockerd.log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setsid", args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dockerd again: %v", err)
	}
	_ = cmd.Process.Release()
	log.Close()
	waitFor(t, 60*time.Second, "docker info", func() bool { return exec.Command("docker", "info").Run() == nil })
	t.Logf("dockerd back after %v", time.Since(stopped).Round(time.Millisecond))
	// Without a restart policy the containers stopped with dockerd; their
	// identities go once outcalld sees Docker again.
	for _, n := range names {
		if st := w.docker.Must(t, "inspect", "--format", "{{.State.Status}}", n); st == "running" {
			t.Errorf("%s runs after dockerd's restart (no restart policy was expected)", n)
		}
	}
	waitFor(t, 30*time.Second, "outcalld to release the stopped containers' identities", func() bool {
		out := w.mustCLI(t, "endpoint", "list")
		return !strings.Contains(out, names[0]) && !strings.Contains(out, names[1])
	})
	started := time.Now()
	for _, n := range names {
		w.docker.Must(t, "start", n)
	}
	for _, n := range names {
		at := w.waitAllowed(t, n, started, n+"'s allowed fetch after docker start")
		ip := w.docker.Must(t, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", n)
		if ip != before[n] {
			t.Errorf("%s came back at %s, was %s", n, ip, before[n])
		}
		t.Logf("%s: allowed again %v after docker start, at %s as before", n, at.Sub(started).Round(time.Millisecond), ip)
		if !strings.Contains(w.mustCLI(t, "endpoint", "list"), n) {
			t.Errorf("%s has no identity after docker start", n)
		}
	}
}

// dockerdRestartUnsafe says why restarting dockerd could hurt someone
// else, or "".
func dockerdRestartUnsafe(t *testing.T, w *world) string {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		return "systemd runs here: dockerd is its service, not restarted by a test"
	}
	for _, p := range dockerlab.LiveSessions() {
		if p != w.u.Prefix && !dockerlab.OwnsImages(p) {
			return "test session " + p + " of another process uses Docker"
		}
	}
	out := w.docker.Must(t, "ps", "-a", "--format", "{{.Names}}")
	for _, n := range strings.Fields(out) {
		if !strings.HasPrefix(n, w.u.Prefix) {
			return "container " + n + " is not this test's"
		}
	}
	return ""
}
