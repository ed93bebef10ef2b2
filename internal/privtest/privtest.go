// Package privtest gates tests that need root, BPF or namespaces. Such a test
// skips where it cannot run and says why, but under
// OUTCALL_REQUIRE_PRIVILEGED=1 (set by CI) the skip is a failure, so a CI run
// can never pass by skipping the firewall's real tests.
package privtest

import (
	"os"
	"testing"
)

// Required reports whether skipping privileged tests is forbidden.
func Required() bool { return os.Getenv("OUTCALL_REQUIRE_PRIVILEGED") == "1" }

// Skip skips t with reason, or fails it when privileged tests are required.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if Required() {
		t.Fatalf("privileged test cannot run (OUTCALL_REQUIRE_PRIVILEGED=1): %s", reason)
	}
	t.Skip(reason)
}

// Root skips t unless it runs as root.
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root")
	}
}
