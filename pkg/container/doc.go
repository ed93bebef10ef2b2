// Package container is the kernel-free core of Outcall's Docker manager
// (S008): what a managed agent container is, decided before Docker is
// asked anything.
//
// Outcall creates agent containers itself, hardened, on its own networks,
// and only through the Docker Engine API (never the docker CLI). This
// package holds the parts that need neither a kernel nor a running engine,
// so each is unit-tested on its own:
//
//   - Validator.Validate of api.ContainerCreateRequest: the host API's create body,
//     checked and defaulted. Every refusal (name, image reference, user,
//     limits, env, the bind-mount deny list resolved through symlinks and
//     parent directories, the protected destinations, the helper-mount
//     sources) happens here, before any Docker call, so a refused request
//     leaves no trace (S008-SC-002).
//   - Build: the pure function from a validated request and the network's
//     Facts to Docker's Config, HostConfig and NetworkingConfig, with the
//     whole hardening profile.
//   - Inspect, Summarize and RedactEnv: what of a container leaves the
//     daemon (env names, never values).
//   - AgentName: agent.name (S013).
//   - Engine: the subset of the Docker client the manager uses, NewEngine
//     (API version negotiation on, so Debian's docker.io 20.10 at API 1.41
//     works) and Available (the bounded ping). containertest.Engine is a
//     fake of it.
//
// # The manager's flow (Manager: manager.go, events.go, dockernet.go)
//
// Create, in this order, so that no container ever runs without an
// identity and nothing is left behind by a failure:
//
//  1. Validator.Validate the request. Nothing has changed yet.
//  2. Inspect the network (Engine.NetworkInspect) and require an Outcall
//     network: the name's prefix, driver "bridge", and the bridge option
//     naming the network's own Linux bridge (S008-FR-003, FR-030, FR-032).
//     The Docker network of an Outcall network that has none is made
//     first (EnsureNetwork), then checked like any other. Inspect the
//     image (Engine.ImageInspect): absent is `image "<img>" not found
//     locally — pull it first`, never an implicit pull. A name already
//     taken is refused before anything changes.
//  3. Allocate the container's IPv4 and MAC on the network, and register
//     its identity with the network controller (pkg/network) before the
//     container exists: the endpoint, with its container name, address,
//     MAC and network, is known first, so the port's first packet meets a
//     program that already knows it. Until the port is bound the
//     controller drops its traffic (fail closed).
//  4. Build the Spec from the validated request and the Facts (the
//     inspected network id, the address, the gateway's DNS and proxy, the
//     identity, the negotiated API version) and ContainerCreate it.
//  5. ContainerStart it, inspect it for its network namespace (the
//     sandbox key) and Networks.Bind the identity to its port (the
//     controller finds the port from the namespace and the reserved MAC).
//     A container that exits at once after a successful start is still
//     created (S008-FR-011); it has no port, and its identity goes.
//  6. On any failure after step 4, ContainerRemove with Force and
//     RemoveVolumes, and release the identity; if the rollback fails too,
//     the error holds both (errors.Join; S008-FR-035). A failure in step 3
//     releases the address only.
//
// Stop, remove and inspect first ContainerInspect the name, require
// IsManaged on the inspected labels, and act on the inspected immutable
// id (S008-FR-034); an unmanaged container is refused without details.
//
// Following containers: Engine.Events with ManagedEventsFilter, for
// die, oom, kill, stop and destroy (S008-FR-031): a dead container's
// grants are revoked and its identity released. The stream is reconnected
// with backoff, and after every reconnect, and at daemon start, a sweep
// (ContainerList with ManagedFilter, All: true) reconciles the registry
// with what runs: events may have been missed. Managed containers are
// never stopped when the daemon stops (S008-FR-020). The sweep trusts the
// registry's container-id binding, not labels: anyone with the Docker
// socket can put a label on a container.
//
// Availability: NewEngine makes no connection; Available pings within
// PingTimeout (3 s) and negotiates the version. A failed ping is the
// degraded state, reported as such, while the policy daemon keeps running
// (S008-FR-036).
//
// The wire types and the shared constants are pkg/api's (container.go),
// which imports nothing from Docker: the CLI must not link the Docker
// client. types.go holds only what the daemon's side adds.
package container
