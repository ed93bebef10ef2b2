package dockerlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"outcall.dev/outcall/internal/privtest"
)

// LocalSocket is the only engine the harness talks to: the routes it checks
// are this machine's, so a DOCKER_HOST elsewhere would make them
// meaningless.
const LocalSocket = "unix:///var/run/docker.sock"

// LabelSession names the session (its prefix) that created an object.
const LabelSession = "dev.outcall.test.session"

// Docker is the local engine, driven through the docker CLI.
type Docker struct {
	Server     string // the engine's version
	APIVersion string // the engine's API version
}

// Command bounds: an engine that does not answer within them is broken.
const (
	pingTimeout    = 10 * time.Second
	commandTimeout = 2 * time.Minute
)

var engine struct {
	once     sync.Once
	docker   *Docker
	err      error
	sweepErr error
}

// RequireDocker returns the local engine. It skips t when the engine cannot
// be used here (not root, no docker CLI, dockerd not answering), with the
// reason; under OUTCALL_REQUIRE_PRIVILEGED=1 that is a failure. The first
// call of a test binary sweeps what crashed earlier runs left behind.
func RequireDocker(t testing.TB) *Docker {
	t.Helper()
	privtest.Root(t)
	engine.once.Do(func() {
		engine.docker, engine.err = connect()
		if engine.err == nil {
			engine.sweepErr = sweep(engine.docker)
		}
	})
	if engine.err != nil {
		privtest.Skip(t, engine.err.Error())
	}
	if engine.sweepErr != nil {
		t.Logf("sweep of earlier runs' leftovers: %v", engine.sweepErr)
	}
	return engine.docker
}

func connect() (*Docker, error) {
	if _, err := exec.LookPath("docker"); err != nil {
		return nil, errors.New("docker CLI not installed (make deps installs docker.io)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	d := &Docker{}
	out, err := d.Output(ctx, nil, "version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}")
	if err != nil {
		return nil, fmt.Errorf("dockerd not reachable at %s (.ci/run starts it): %w", LocalSocket, err)
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return nil, fmt.Errorf("docker version: unexpected output %q", out)
	}
	d.Server, d.APIVersion = f[0], f[1]
	return d, nil
}

// Output runs the docker CLI against the local engine with stdin (nil for
// none) and returns its trimmed standard output; the error holds the
// command and its standard error.
func (d *Docker) Output(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := d.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Run runs the docker CLI like Output and returns both streams and the
// exit code; err is set only when the command could not run or was
// killed (the context ended), not for a non-zero exit.
func (d *Docker) Run(ctx context.Context, args ...string) (stdout, stderr string, code int, err error) {
	cmd := d.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ctx.Err() == nil {
		code, err = ee.ExitCode(), nil
	}
	return out.String(), errb.String(), code, err
}

// command is the docker CLI against the local engine: the flag wins over
// DOCKER_HOST and the CLI's contexts.
func (d *Docker) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "docker", append([]string{"--host", LocalSocket}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CLI_HINTS=false")
	return cmd
}

// Must runs the docker CLI, bounded in time, and fails t if it fails.
func (d *Docker) Must(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := d.Output(ctx, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Main runs the tests of a package that uses Image and then removes the
// images this test binary imported:
//
//	func TestMain(m *testing.M) { os.Exit(dockerlab.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if err := removeImages(); err != nil {
		fmt.Fprintln(os.Stderr, "dockerlab:", err)
	}
	return code
}
