package shim

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
)

// inProcess is one Run of the shim inside the test binary, against a fake
// agent API, with files as its stdio so that a child writes to them
// directly.
type inProcess struct {
	args      []string
	env       map[string]string // OUTCALL_TIMEOUT_SECS; unset when absent
	socket    string
	heartbeat time.Duration
	term      chan os.Signal
}

type result struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

func (p inProcess) run(t *testing.T) result {
	t.Helper()
	dir := t.TempDir()
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	start := time.Now()
	code := Run(context.Background(), Options{
		Args:   p.args,
		Stdin:  stdin,
		Stdout: stdout,
		Stderr: stderr,
		LookupEnv: func(k string) (string, bool) {
			v, ok := p.env[k]
			return v, ok
		},
		Socket:    p.socket,
		Heartbeat: p.heartbeat,
		Version:   "test",
		Term:      p.term,
	})
	elapsed := time.Since(start)
	stdout.Close()
	stderr.Close()
	out, _ := os.ReadFile(stdout.Name())
	errOut, _ := os.ReadFile(stderr.Name())
	return result{code: code, stdout: string(out), stderr: string(errOut), elapsed: elapsed}
}

// markerArgs is a command that, when it runs, writes "ran" to a new file
// and returns that file's path.
func markerArgs(t *testing.T) ([]string, string) {
	marker := filepath.Join(t.TempDir(), "marker")
	return []string{"exec", "sh", "-c", `echo ran > "$0"`, marker}, marker
}

func ran(marker string) bool {
	b, err := os.ReadFile(marker)
	return err == nil && string(b) == "ran\n"
}

var oneSecond = map[string]string{api.ShimTimeoutEnv: "1"}

// TestRunOutcomes: each answer of the agent API against the exit code and
// whether the command ran. The allow rows are the positive controls of the
// blocked ones: the same command, the same server, only the answer differs.
func TestRunOutcomes(t *testing.T) {
	big := `{"success":true,"data":{"allowed":true,"matched_rule":"` + strings.Repeat("a", api.AgentBodyLimit) + `","reason":null}}`
	nullReason := `{"success":true,"data":{"allowed":false,"matched_rule":"r1","reason":null}}`
	tests := []struct {
		name       string
		checkin    http.HandlerFunc
		permission http.HandlerFunc
		command    []string // instead of the marker command
		want       int
		wantRan    bool
		wantStderr string
		atLeast    time.Duration
	}{
		{name: "allow runs the command", want: ExitOK, wantRan: true, wantStderr: `msg="registered with outcalld" component=shim container_id=` + testContainerID},
		{name: "deny", permission: respond(200, verdictDeny), want: ExitFailed, wantStderr: "outcall-agent: action blocked — no rule allows tool_exec of rm\n"},
		{name: "deny without reason", permission: respond(200, nullReason), want: ExitFailed, wantStderr: "outcall-agent: action blocked — blocked by policy\n"},
		{name: "verdict stalls", permission: stall, want: ExitUnreachable, wantStderr: "permission check timed out — outcalld unreachable", atLeast: time.Second},
		{name: "check-in stalls", checkin: stall, want: ExitUnreachable, wantStderr: "check-in timed out — outcalld unreachable", atLeast: time.Second},
		{name: "check-in 403", checkin: respond(403, `{"success":false,"error":"check-in rejected: peer is not a managed container"}`), want: ExitUnreachable, wantStderr: "check-in rejected: HTTP 403: check-in rejected: peer is not a managed container"},
		{name: "check-in malformed", checkin: respond(200, `{"success":true,"data":{"container_id":"c"}}`), want: ExitUnreachable, wantStderr: "check-in: check-in data"},
		{name: "oversize verdict", permission: respond(200, big), want: ExitUnreachable, wantStderr: "answer exceeds 65536 bytes"},
		{name: "429", permission: respond(429, `{"success":false,"error":"rate limit exceeded for container c"}`), want: ExitUnreachable, wantStderr: "HTTP 429"},
		{name: "422", permission: respond(422, `{"success":false,"error":"invalid request: target"}`), want: ExitUnreachable, wantStderr: "HTTP 422"},
		{name: "500 with an allow body", permission: respond(500, verdictAllow), want: ExitUnreachable, wantStderr: "HTTP 500"},
		{name: "204", permission: respond(204, ""), want: ExitUnreachable},
		{name: "success false on 200", permission: respond(200, `{"success":false,"error":"x"}`), want: ExitUnreachable, wantStderr: "success:false"},
		{name: "missing data", permission: respond(200, `{"success":true}`), want: ExitUnreachable, wantStderr: "success without data"},
		{name: "unknown field", permission: respond(200, `{"success":true,"data":{"allowed":true,"matched_rule":null,"reason":null,"condition":"true"}}`), want: ExitUnreachable, wantStderr: `unknown field "condition"`},
		{name: "trailing garbage", permission: respond(200, verdictAllow+"garbage"), want: ExitUnreachable, wantStderr: "data after the object"},
		{name: "connection dropped", permission: func(w http.ResponseWriter, _ *http.Request) {
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		}, want: ExitUnreachable, wantStderr: "permission check failed — outcalld unreachable"},
		{name: "request over the body limit is never sent", command: []string{"exec", "echo", strings.Repeat("a", api.AgentBodyLimit)}, want: ExitUnreachable, wantStderr: "exceeds the agent API limit of 65536"},
		{name: "failing command", command: []string{"exec", "sh", "-c", "exit 3"}, want: ExitFailed},
		{name: "command exiting 5 is a failure, not unreachable", command: []string{"exec", "sh", "-c", "exit 5"}, want: ExitFailed},
		{name: "command killed by a signal", command: []string{"exec", "sh", "-c", "kill -9 $$"}, want: ExitFailed},
		{name: "command not found", command: []string{"exec", "outcall-test-no-such-program"}, want: ExitFailed, wantStderr: "outcall-agent: failed to execute 'outcall-test-no-such-program': "},
		{name: "exec without a program, allowed anyway", command: []string{"exec"}, want: ExitFailed, wantStderr: "failed to execute '': no program given"},
		{name: "allowed probe runs nothing", command: []string{"fetch", "https://api.example.com"}, want: ExitOK, wantStderr: `msg="action allowed"`},
		{name: "denied probe", command: []string{"file", "/etc/shadow"}, permission: respond(200, verdictDeny), want: ExitFailed, wantStderr: "action blocked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fa := newFakeAgent(t)
			if tt.checkin != nil {
				fa.setCheckin(tt.checkin)
			}
			if tt.permission != nil {
				fa.setPermission(tt.permission)
			}
			args, marker := markerArgs(t)
			if tt.command != nil {
				args = tt.command
			}
			res := inProcess{args: args, env: oneSecond, socket: fa.path}.run(t)
			if res.code != tt.want {
				t.Errorf("exit %d, want %d; stderr:\n%s", res.code, tt.want, res.stderr)
			}
			if tt.command == nil && ran(marker) != tt.wantRan {
				t.Errorf("command ran = %v, want %v", ran(marker), tt.wantRan)
			}
			if !strings.Contains(res.stderr, tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", res.stderr, tt.wantStderr)
			}
			if res.stdout != "" {
				t.Errorf("stdout %q, want nothing", res.stdout)
			}
			if res.elapsed < tt.atLeast || res.elapsed > tt.atLeast+3*time.Second {
				t.Errorf("took %v, want from %v to %v", res.elapsed, tt.atLeast, tt.atLeast+3*time.Second)
			}
		})
	}
}

// TestRunRequest: what the daemon is asked, token included, for an
// executing form, a probe and the implicit form.
func TestRunRequest(t *testing.T) {
	fa := newFakeAgent(t)
	for _, args := range [][]string{{"exec", "true", "-x", "a b"}, {"write", "/workspace/o", "extra"}, {"true"}} {
		if res := (inProcess{args: args, socket: fa.path}).run(t); res.code != ExitOK {
			t.Fatalf("%q: exit %d: %s", args, res.code, res.stderr)
		}
	}
	want := []api.PermissionRequest{
		{ActionType: api.ActionToolExec, Target: "true", Metadata: map[string]string{"args": "-x a b", "args_json": `["-x","a b"]`}},
		{ActionType: api.ActionFileAccess, Target: "/workspace/o", Metadata: map[string]string{"mode": "write"}},
		{ActionType: api.ActionToolExec, Target: "true"},
	}
	if got := fa.seen(); !reflect.DeepEqual(got, want) {
		t.Errorf("requests\n got %#v\nwant %#v", got, want)
	}
	for _, a := range fa.auth {
		if a != "Bearer "+testToken {
			t.Errorf("Authorization %q", a)
		}
	}
	if n := fa.checkinCount(); n != 3 {
		t.Errorf("%d check-ins, want one per run", n)
	}
}

// TestRunWithoutDaemon: no socket, and a socket file nobody listens on,
// both exit 5 within a second and run nothing; the control is the same
// command with the daemon there.
func TestRunWithoutDaemon(t *testing.T) {
	fa := newFakeAgent(t)
	args, marker := markerArgs(t)
	if res := (inProcess{args: args, socket: fa.path}).run(t); res.code != ExitOK || !ran(marker) {
		t.Fatalf("control: exit %d, ran %v: %s", res.code, ran(marker), res.stderr)
	}
	os.Remove(marker)

	missing := filepath.Join(fa.dir, "missing.sock")
	stale := filepath.Join(fa.dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	for _, tc := range []struct{ name, socket, want string }{
		{"missing", missing, "outcall-agent: agent socket not reachable at " + missing + ": agent socket not found at " + missing + "\n"},
		{"nobody listening", stale, "outcall-agent: agent socket not reachable at " + stale + ": connect: "},
		{"not a socket", marker + ".file", "connect: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "not a socket" {
				os.WriteFile(tc.socket, nil, 0o644)
			}
			res := inProcess{args: args, socket: tc.socket}.run(t)
			if res.code != ExitUnreachable || ran(marker) || !strings.Contains(res.stderr, tc.want) {
				t.Errorf("exit %d, ran %v, stderr %q; want 5, not run, %q", res.code, ran(marker), res.stderr, tc.want)
			}
			if res.elapsed > time.Second {
				t.Errorf("took %v, want under 1 s", res.elapsed)
			}
		})
	}
}

// TestRunBadTimeout: a rejected OUTCALL_TIMEOUT_SECS exits 5 before any
// socket work; the control is a good value.
func TestRunBadTimeout(t *testing.T) {
	fa := newFakeAgent(t)
	for _, v := range []string{"", "0", "301", "2s", " 2", "+2"} {
		args, marker := markerArgs(t)
		res := inProcess{args: args, socket: fa.path, env: map[string]string{api.ShimTimeoutEnv: v}}.run(t)
		if res.code != ExitUnreachable || ran(marker) || !strings.Contains(res.stderr, "invalid OUTCALL_TIMEOUT_SECS") {
			t.Errorf("%q: exit %d, ran %v, stderr %q", v, res.code, ran(marker), res.stderr)
		}
	}
	if n := fa.checkinCount(); n != 0 {
		t.Errorf("%d check-ins with a bad timeout", n)
	}
	for _, v := range []string{"1", "300"} {
		args, marker := markerArgs(t)
		if res := (inProcess{args: args, socket: fa.path, env: map[string]string{api.ShimTimeoutEnv: v}}).run(t); res.code != ExitOK || !ran(marker) {
			t.Errorf("control %q: exit %d, ran %v: %s", v, res.code, ran(marker), res.stderr)
		}
	}
}

// TestRunStatic: help, version and usage need no daemon.
func TestRunStatic(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"--help"}, 0, Usage, ""},
		{[]string{"-h", "exec", "rm"}, 0, Usage, ""},
		{[]string{"--version"}, 0, "outcall-agent test\n", ""},
		{[]string{"-V"}, 0, "outcall-agent test\n", ""},
		{nil, 1, "", "Usage: outcall <tool> [args...]\n"},
	} {
		res := inProcess{args: tc.args, socket: "/nonexistent/agent.sock"}.run(t)
		if res.code != tc.code || res.stdout != tc.stdout || res.stderr != tc.stderr {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", tc.args, res.code, res.stdout, res.stderr)
		}
	}
}

// TestRunDaemonVanishes: outcalld going away while a child runs gets the
// child killed and reaped, and exit 5, within a heartbeat or two; while a
// verdict is pending (T is 30 s here) it ends the wait at once.
func TestRunDaemonVanishes(t *testing.T) {
	t.Run("during the child", func(t *testing.T) {
		fa := newFakeAgent(t)
		pidFile := filepath.Join(t.TempDir(), "pid")
		args := []string{"exec", "sh", "-c", `echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec sleep 30`, pidFile}
		done := make(chan result, 1)
		go func() { done <- inProcess{args: args, socket: fa.path, heartbeat: 50 * time.Millisecond}.run(t) }()
		pid := waitPID(t, pidFile)
		// Control: the child is alive while the daemon answers.
		time.Sleep(200 * time.Millisecond)
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("child %d not running before the daemon left: %v", pid, err)
		}
		fa.vanish()
		vanished := time.Now()
		var res result
		select {
		case res = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the shim did not exit within 10 s of the daemon leaving")
		}
		if res.code != ExitUnreachable || !strings.Contains(res.stderr, "command killed: heartbeat failed — outcalld unreachable") {
			t.Errorf("exit %d, stderr %q", res.code, res.stderr)
		}
		if d := time.Since(vanished); d > 2*time.Second {
			t.Errorf("exit %v after the daemon left", d)
		}
		// Run is in this process, the child's parent: a child killed but
		// not reaped would still answer signal 0 as a zombie.
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("child %d after exit: kill 0 = %v, want ESRCH (killed and reaped)", pid, err)
		}
	})
	t.Run("during the verdict", func(t *testing.T) {
		fa := newFakeAgent(t)
		fa.setPermission(stall)
		args, marker := markerArgs(t)
		done := make(chan result, 1)
		go func() { done <- inProcess{args: args, socket: fa.path, heartbeat: 50 * time.Millisecond}.run(t) }()
		<-fa.arrived
		fa.vanish()
		select {
		case res := <-done:
			if res.code != ExitUnreachable || ran(marker) {
				t.Errorf("exit %d, ran %v: %s", res.code, ran(marker), res.stderr)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the shim did not exit within 10 s of the daemon leaving")
		}
	})
}

// TestRunSIGTERM: SIGTERM during a pending verdict lets the request finish,
// starts no child and exits 0; during a child, lets it finish and exits 0.
// The controls are the same runs without SIGTERM.
func TestRunSIGTERM(t *testing.T) {
	release := make(chan struct{})
	finished := make(chan struct{}, 4)
	slowAllow := func(w http.ResponseWriter, r *http.Request) {
		<-release
		respond(200, verdictAllow)(w, r)
		finished <- struct{}{}
	}
	t.Run("during the verdict", func(t *testing.T) {
		for _, term := range []bool{false, true} {
			fa := newFakeAgent(t)
			fa.setPermission(slowAllow)
			args, marker := markerArgs(t)
			termCh := make(chan os.Signal, 1)
			done := make(chan result, 1)
			go func() { done <- inProcess{args: args, socket: fa.path, term: termCh}.run(t) }()
			<-fa.arrived
			if term {
				termCh <- syscall.SIGTERM
				time.Sleep(100 * time.Millisecond)
			}
			release <- struct{}{}
			res := <-done
			<-finished
			if res.code != ExitOK || ran(marker) == term {
				t.Errorf("SIGTERM %v: exit %d, ran %v, want 0 and ran %v: %s", term, res.code, ran(marker), !term, res.stderr)
			}
		}
	})
	t.Run("during the child", func(t *testing.T) {
		for _, failing := range []bool{false, true} {
			fa := newFakeAgent(t)
			dir := t.TempDir()
			started, marker := filepath.Join(dir, "started"), filepath.Join(dir, "marker")
			script := `touch "$0"; sleep 0.3; echo ran > "$1"; exit ` + strconv.Itoa(map[bool]int{false: 0, true: 3}[failing])
			termCh := make(chan os.Signal, 1)
			done := make(chan result, 1)
			go func() {
				done <- inProcess{args: []string{"exec", "sh", "-c", script, started, marker}, socket: fa.path, term: termCh, heartbeat: 20 * time.Millisecond}.run(t)
			}()
			waitFile(t, started)
			termCh <- syscall.SIGTERM
			// With SIGTERM the heartbeat stops: the daemon leaving no
			// longer kills the child (the sleep lets the shim take the
			// signal first; the child sleeps 0.3 s).
			time.Sleep(100 * time.Millisecond)
			fa.vanish()
			res := <-done
			if res.code != ExitOK || !ran(marker) {
				t.Errorf("failing %v: exit %d, ran %v; want 0 and the child finished: %s", failing, res.code, ran(marker), res.stderr)
			}
		}
	})
}

func waitFile(t *testing.T, path string) []byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			return b
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", path)
	return nil
}

func waitPID(t *testing.T, path string) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(string(waitFile(t, path))))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
