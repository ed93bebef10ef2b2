// Package agentapi is the agent API (S004) that outcalld serves on
// agent.sock to the containers it manages: check-in, permission checks,
// rule requests and their status.
//
// Nothing an agent sends says who it is. Every request's peer is found
// from the kernel: SO_PEERCRED's PID and SO_PEERPIDFD's pidfd are read when
// the connection is accepted, /proc/<pid>/cgroup names the Docker container
// the process runs in, the pidfd shows the process is still the one that
// connected (so a reused PID cannot speak for another container), and the
// daemon's identity registry must have that container bound to an
// enforced port. Anything less is refused, never defaulted. Sessions and
// rate limits belong to one lifetime of a container's identity.
//
// Agents see verdicts (allowed, the deciding rule's id, a fixed reason)
// and their own rule requests' state; never rule bodies, other
// containers, the host's configuration or its topology. The API is
// advisory for the shim: the datapath, the DNS filter and the proxy
// enforce whatever the agent does.
package agentapi
