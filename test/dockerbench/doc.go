// Package dockerbench holds the container benchmarks of issue 10 (`make
// bench`, BENCHMARKS.md "Containers"): outcalld's Docker manager against
// the real Docker engine, with its peers measured in the same run.
//
// BenchmarkContainers creates 50 containers through outcalld's host API
// and, alternating with them, 50 of the same image with the same hardening
// on a plain Docker bridge network through the Engine API (create and
// start: what `docker run -d` asks, without the CLI). Each runs connloop,
// which connects in a loop to a server in the upstream namespace; the
// server notes when the first connection of each container arrives. It
// reports,
// p50 and p99 over the 50 containers of each kind:
//
//   - create: the create call's latency (the host API's; Engine API create
//     and start);
//   - first packet: from just before the create call to the first
//     connection accepted upstream, and from the call's return to it;
//   - for outcalld's containers, from the moment the container's veth is
//     enslaved to outcalld's bridge (an RTM_NEWLINK seen in the root
//     namespace) to the TCX program attached on it (BPF_PROG_QUERY) and to
//     its identity bound (the host API's endpoint list says attached);
//   - outcalld's resident set (VmRSS) idle and with the 50 containers
//     running.
//
// The daemon runs in the root namespace, where Docker is, so everything
// goes through test/dockerlab's Upstream: the machine-wide routes lock is
// held for the whole benchmark (one outcalld per root namespace: its
// nftables tables are per namespace), every destination is checked to
// route into the upstream namespace before a container that sends to it
// starts, and everything the benchmark or the daemon makes (containers,
// Docker networks, the bridge, the nftables tables, the pins) is removed
// at the end, also on failure.
package dockerbench
