// Package docker holds Outcall's end-to-end tests against the real Docker
// engine (issue 10, "How it is shown" (a) to (f); ../../../shared/TESTING.md,
// "docker" tests): outcalld runs in the root network namespace, where
// Docker's bridges are, creates hardened containers on its networks, and
// each test probes what they reach. The internet is test/dockerlab's
// upstream namespace, reached only through the routes it installs and
// checks; every name the daemon resolves goes to that namespace's resolver
// (--dns-upstream), and every probe aims at an address of it, or of the
// test's own namespaces and containers.
//
// One outcalld runs in the root namespace at a time (its nftables tables
// are the namespace's): the package holds the machine lock root-outcalld
// for its whole run, and each test removes the daemon's tables, bridges,
// Docker networks and pins when it ends.
package docker

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"outcall.dev/outcall/test/dockerlab"
)

// bins holds the outcalld, outcall and probe binaries of this run.
var bins string

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Geteuid() == 0 {
		f, err := dockerlab.LockMachine(dockerlab.RootLock, dockerlab.RootLockWait)
		if err != nil {
			fmt.Fprintln(os.Stderr, "test/docker:", err)
			return 1
		}
		defer f.Close()
	}
	dir, err := os.MkdirTemp("", "outcall-docker-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	for _, b := range []struct{ name, pkg string }{
		{"outcalld", "outcall.dev/outcall/cmd/outcalld"},
		{"outcall", "outcall.dev/outcall/cmd/outcall"},
		{"probe", dockerlab.ProbePackage},
		{"outcall-agent", "outcall.dev/outcall/cmd/outcall-agent"},
		{"agentcall", dockerlab.AgentCallPackage},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.name), b.pkg)
		if b.name != "outcalld" && b.name != "outcall" {
			// They go into a libc-less image, or are mounted into one.
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", b.name, err)
			return 1
		}
	}
	bins = dir
	return dockerlab.Main(m)
}
