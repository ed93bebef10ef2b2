// Package dockerlab runs tests against the real Docker engine safely
// (../../../shared/TESTING.md, "docker" tests).
//
// With real Docker, outcalld and its containers live in the root network
// namespace, whose routes lead to the real network. So before a Docker test
// sends anything, NewUpstream builds the lab's upstream namespace (package
// test/lab: the internet on documentation addresses), connects it to the
// root namespace by a veth, routes exactly the test prefixes through that
// veth (each only if the host routes no part of it itself), and Check asks
// the kernel (RTM_GETROUTE, what `ip route get` asks) that each target
// address leaves the root namespace by that veth and is an address of the
// upstream namespace. A target that would go anywhere else is refused,
// without a packet sent.
//
// No image is pulled: Image imports a root filesystem made of Debian's
// busybox-static (and any static test binary, WithBinary) with
// `docker import`, and containers run with --pull=never.
//
// Every container, network and image is named with a test prefix ("oct" and
// six hex digits, as test/lab names its namespaces; images
// "outcall-test/busybox:<hash>-<prefix>") and carries the label
// dev.outcall.test.session=<prefix>. Its removal is registered before it is
// created. A session holds an flock on a file named after its prefix under
// /var/tmp/outcall-dockerlab for as long as it lives, so that the first
// RequireDocker of every test binary can sweep what crashed runs left
// behind — the objects of prefixes whose lock nobody holds — without
// touching a session of another test binary that runs at the same time.
// The root-namespace routes are one resource for the whole machine: an
// Upstream holds routes.lock there while its routes exist.
//
// A package that uses Image removes its images on exit with
//
//	func TestMain(m *testing.M) { os.Exit(dockerlab.Main(m)) }
//
// (without it the next run's sweep removes them).
package dockerlab
