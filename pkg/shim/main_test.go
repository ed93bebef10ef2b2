package shim

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"outcall.dev/outcall/internal/privtest"
)

// The built outcall-agent always dials /run/outcall/agent.sock: the path is
// a constant of the binary. To run the real binary against a fake agent
// API, the test binary re-executes itself as a helper in a private mount
// namespace, mounts a tmpfs on /run there, binds the fake's socket
// directory on /run/outcall and executes the program named in
// nsExecProgram. Nothing outside that namespace sees the mounts, so the
// machine's own /run/outcall (a real outcalld's) is never touched.
const (
	nsExecDir     = "OUTCALL_SHIM_TEST_NS_DIR"
	nsExecProgram = "OUTCALL_SHIM_TEST_NS_PROGRAM"
)

// testVersion is the version the test build of the binary carries.
const testVersion = "test-1.2.3"

func TestMain(m *testing.M) {
	if dir := os.Getenv(nsExecDir); dir != "" {
		nsExec(dir, os.Getenv(nsExecProgram))
	}
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// nsExec is the helper: it is already in its own mount namespace (the
// parent set Unshareflags, and Go made "/" private there). It never returns.
func nsExec(dir, program string) {
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "shim test helper: %v\n", err)
		os.Exit(97)
	}
	if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
		fail(fmt.Errorf("mount tmpfs on /run: %w", err))
	}
	if err := os.Mkdir("/run/outcall", 0o755); err != nil {
		fail(err)
	}
	if err := unix.Mount(dir, "/run/outcall", "", unix.MS_BIND, ""); err != nil {
		fail(fmt.Errorf("bind %s on /run/outcall: %w", dir, err))
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, nsExecDir+"=") && !strings.HasPrefix(kv, nsExecProgram+"=") {
			env = append(env, kv)
		}
	}
	argv := append([]string{"outcall"}, os.Args[1:]...)
	fail(syscall.Exec(program, argv, env))
}

// built is the outcall-agent binary, built once per test binary.
var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// shimBinary builds cmd/outcall-agent as `make build` does (CGO_ENABLED=0)
// and returns its path.
func shimBinary(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "shim-bin-")
		if built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "outcall-agent")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+testVersion, "-o", built.path, "outcall.dev/outcall/cmd/outcall-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build outcall-agent: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// inNamespace returns a command that runs program with args in a mount
// namespace where dir is /run/outcall. It needs root.
func inNamespace(t testing.TB, dir, program string, args ...string) *exec.Cmd {
	t.Helper()
	privtest.Root(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), nsExecDir+"="+dir, nsExecProgram+"="+program)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	return cmd
}
