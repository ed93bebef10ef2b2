// Package shim is outcall-agent, the container-side shim (S005): it parses
// an invocation (`outcall exec git status`, `outcall fetch <url>`, ...),
// checks in on the agent socket, asks outcalld for a verdict and, only on an
// allow, runs the requested program directly (no shell), keeping a
// heartbeat on the socket while it waits.
//
// The shim is opt-in mediation for commands run through it, never the
// egress boundary: that is the bridge, DNS filter, proxy and nftables floor,
// which hold whether or not an agent uses the shim. So the shim's one job is
// to fail closed: anything it cannot verify (a missing socket, a timeout, a
// malformed, oversized or unsuccessful answer, a heartbeat that stops
// answering) ends in exit 5 (api.UnreachableExitCode) with nothing run, or
// with the running child killed and reaped.
//
// The package holds no process-wide state except what Main, the process's
// entry point, sets up (signal delivery); Run is the testable core and takes
// everything it touches through Options.
package shim
