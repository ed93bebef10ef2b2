package shim

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
)

// binaryRun is the built outcall-agent run in its namespace.
type binaryRun struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

func startBinary(t *testing.T, fa *fakeAgent, env []string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	cmd := inNamespace(t, fa.dir, shimBinary(t), args...)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &stdout, &stderr
}

func waitBinary(t *testing.T, cmd *exec.Cmd, stdout, stderr *bytes.Buffer, start time.Time) binaryRun {
	t.Helper()
	err := cmd.Wait()
	res := binaryRun{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start)}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		res.code = exit.ExitCode()
	default:
		t.Fatalf("run the shim: %v", err)
	}
	if res.code == 97 {
		t.Fatalf("namespace helper failed: %s", res.stderr)
	}
	return res
}

func runBinary(t *testing.T, fa *fakeAgent, env []string, args ...string) binaryRun {
	t.Helper()
	start := time.Now()
	cmd, stdout, stderr := startBinary(t, fa, env, args...)
	return waitBinary(t, cmd, stdout, stderr, start)
}

// TestBinaryExitCodes: the built binary, at its constant socket path,
// against the fake agent API. The allow row is the control of the others.
func TestBinaryExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		permission http.HandlerFunc
		gone       bool
		want       int
		wantRan    bool
		wantStderr string
		within     time.Duration
	}{
		{name: "allow", want: ExitOK, wantRan: true, within: 2 * time.Second},
		{name: "deny", permission: respond(200, verdictDeny), want: ExitFailed, wantStderr: "outcall-agent: action blocked — no rule allows tool_exec of rm\n", within: 2 * time.Second},
		{name: "stall", permission: stall, want: ExitUnreachable, wantStderr: "timed out", within: 3 * time.Second},
		{name: "oversize", permission: respond(200, verdictAllow+strings.Repeat(" ", api.AgentBodyLimit)), want: ExitUnreachable, wantStderr: "exceeds 65536", within: 2 * time.Second},
		{name: "rate limited", permission: respond(429, `{"success":false,"error":"rate limit exceeded for container c"}`), want: ExitUnreachable, within: 2 * time.Second},
		{name: "unknown field", permission: respond(200, `{"success":true,"data":{"allowed":true,"rules":[]}}`), want: ExitUnreachable, within: 2 * time.Second},
		{name: "no socket", gone: true, want: ExitUnreachable, wantStderr: "outcall-agent: agent socket not reachable at /run/outcall/agent.sock: agent socket not found at /run/outcall/agent.sock\n", within: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fa := newFakeAgent(t)
			if tt.permission != nil {
				fa.setPermission(tt.permission)
			}
			if tt.gone {
				fa.vanish()
			}
			marker := filepath.Join(fa.dir, "marker")
			res := runBinary(t, fa, []string{api.ShimTimeoutEnv + "=1"}, "exec", "sh", "-c", `echo ran > "$0"`, marker)
			if res.code != tt.want || ran(marker) != tt.wantRan {
				t.Errorf("exit %d, ran %v; want %d, %v; stderr:\n%s", res.code, ran(marker), tt.want, tt.wantRan, res.stderr)
			}
			if !strings.Contains(res.stderr, tt.wantStderr) || res.stdout != "" {
				t.Errorf("stdout %q, stderr %q; want stderr with %q", res.stdout, res.stderr, tt.wantStderr)
			}
			if res.elapsed > tt.within {
				t.Errorf("took %v, want at most %v", res.elapsed, tt.within)
			}
		})
	}
}

// TestBinaryStatic: help, version and usage, with no daemon at all (run
// directly, outside any namespace).
func TestBinaryStatic(t *testing.T) {
	t.Parallel()
	bin := shimBinary(t)
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"--help"}, 0, Usage, ""},
		{[]string{"-V"}, 0, "outcall-agent " + testVersion + "\n", ""},
		{[]string{"--version", "x"}, 0, "outcall-agent " + testVersion + "\n", ""},
		{nil, 1, "", ShortUsage + "\n"},
	} {
		cmd := exec.Command(bin, tc.args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || stdout.String() != tc.stdout || stderr.String() != tc.stderr {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", tc.args, code, stdout.String(), stderr.String())
		}
	}
}

// TestBinaryArgv: the child gets exactly the arguments given, with no shell
// in between, and the daemon is asked about the same vector; `grep -h`
// after exec is grep's flag, not the shim's help.
func TestBinaryArgv(t *testing.T) {
	t.Parallel()
	fa := newFakeAgent(t)
	args := []string{"$HOME", ";", "*", `"double"`, "'single'", "new\nline", "", " spaced ", `back\slash`, "$(id)", "|", "&&", "-h", "--help", "é"}
	// The child prints each argument between brackets, one a line.
	res := runBinary(t, fa, nil, append([]string{"exec", "sh", "-c", `for a; do printf '[%s]\n' "$a"; done`, "sh"}, args...)...)
	if res.code != ExitOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	var want strings.Builder
	for _, a := range args {
		want.WriteString("[" + a + "]\n")
	}
	if res.stdout != want.String() {
		t.Errorf("child printed\n%s\nwant\n%s", res.stdout, want.String())
	}
	seen := fa.seen()
	if len(seen) != 1 {
		t.Fatalf("%d requests", len(seen))
	}
	var got []string
	if err := json.Unmarshal([]byte(seen[0].Metadata["args_json"]), &got); err != nil {
		t.Fatal(err)
	}
	if wantArgs := append([]string{"-c", `for a; do printf '[%s]\n' "$a"; done`, "sh"}, args...); !reflect.DeepEqual(got, wantArgs) || seen[0].Target != "sh" {
		t.Errorf("asked about %q %q, want sh %q", seen[0].Target, got, wantArgs)
	}

	res = runBinary(t, fa, nil, "exec", "grep", "-h", "x", os.DevNull)
	if strings.Contains(res.stdout, "Usage:") || res.code != ExitFailed { // grep finds nothing: 1
		t.Errorf("exec grep -h: exit %d, stdout %q", res.code, res.stdout)
	}
	if s := fa.seen(); len(s) != 2 || s[1].Target != "grep" || s[1].Metadata["args"] != "-h x "+os.DevNull {
		t.Errorf("grep request: %+v", s)
	}
}

// TestBinarySIGTERM: SIGTERM to the real process while its verdict is
// pending finishes the request and runs nothing (control: without SIGTERM
// the same run executes the command); during a child, the child finishes
// and the exit is 0 even though the child fails.
func TestBinarySIGTERM(t *testing.T) {
	t.Parallel()
	t.Run("pending verdict", func(t *testing.T) {
		for _, term := range []bool{false, true} {
			fa := newFakeAgent(t)
			release := make(chan struct{})
			answered := make(chan error, 1)
			fa.setPermission(func(w http.ResponseWriter, r *http.Request) {
				<-release
				respond(200, verdictAllow)(w, r)
				answered <- http.NewResponseController(w).Flush()
			})
			marker := filepath.Join(fa.dir, "marker")
			start := time.Now()
			cmd, stdout, stderr := startBinary(t, fa, nil, "exec", "sh", "-c", `echo ran > "$0"`, marker)
			<-fa.arrived
			if term {
				if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				time.Sleep(200 * time.Millisecond)
			}
			close(release)
			res := waitBinary(t, cmd, stdout, stderr, start)
			if err := <-answered; err != nil {
				t.Errorf("answer not delivered: %v", err)
			}
			if res.code != ExitOK || ran(marker) == term {
				t.Errorf("SIGTERM %v: exit %d, ran %v; want 0, ran %v; stderr:\n%s", term, res.code, ran(marker), !term, res.stderr)
			}
		}
	})
	t.Run("child", func(t *testing.T) {
		fa := newFakeAgent(t)
		started, marker := filepath.Join(fa.dir, "started"), filepath.Join(fa.dir, "marker")
		start := time.Now()
		cmd, stdout, stderr := startBinary(t, fa, nil, "exec", "sh", "-c", `touch "$0"; sleep 0.5; echo ran > "$1"; exit 3`, started, marker)
		waitFile(t, started)
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		res := waitBinary(t, cmd, stdout, stderr, start)
		if res.code != ExitOK || !ran(marker) {
			t.Errorf("exit %d, ran %v; want 0 and the child finished; stderr:\n%s", res.code, ran(marker), res.stderr)
		}
	})
}

// TestBinaryForwardsSignals: SIGINT to the shim reaches the child, which
// reports it; the control is SIGTERM, which is not forwarded.
func TestBinaryForwardsSignals(t *testing.T) {
	t.Parallel()
	fa := newFakeAgent(t)
	started, got := filepath.Join(fa.dir, "started"), filepath.Join(fa.dir, "got")
	script := `trap 'echo INT > "$1"; exit 0' INT; trap 'echo TERM > "$1"; exit 0' TERM; touch "$0"; i=0; while [ $i -lt 30 ]; do sleep 0.05; i=$((i+1)); done; echo none > "$1"`
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		os.Remove(started)
		os.Remove(got)
		start := time.Now()
		cmd, stdout, stderr := startBinary(t, fa, nil, "exec", "sh", "-c", script, started, got)
		waitFile(t, started)
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		res := waitBinary(t, cmd, stdout, stderr, start)
		b, _ := os.ReadFile(got)
		want := map[syscall.Signal]string{syscall.SIGINT: "INT\n", syscall.SIGTERM: "none\n"}[sig]
		if string(b) != want || res.code != ExitOK {
			t.Errorf("%v: child saw %q, exit %d; want %q, 0; stderr:\n%s", sig, b, res.code, want, res.stderr)
		}
	}
}

// TestBinaryShimKilled: when the shim itself is SIGKILLed, its child dies
// with it (Pdeathsig) instead of running on unmediated. The control is the
// child alive before the kill.
func TestBinaryShimKilled(t *testing.T) {
	t.Parallel()
	fa := newFakeAgent(t)
	pidFile := filepath.Join(fa.dir, "pid")
	// No pipes for stdio: a child outliving the shim would hold them open
	// and make Wait wait for it.
	cmd := inNamespace(t, fa.dir, shimBinary(t), "exec", "sh", "-c", `echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec sleep 30`, pidFile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := waitPID(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if !alive(pid) {
		t.Fatalf("control: child %d not running under the shim", pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait() // "signal: killed"
	deadline := time.Now().Add(2 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d still running 2 s after the shim was killed", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid is a process that has not exited (a zombie
// has: this machine's init may be slow to reap orphans).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}
