package dockerbench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	cerrdefs "github.com/containerd/errdefs"
	dcontainer "github.com/docker/docker/api/types/container"
	dnetwork "github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/vishvananda/netlink"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/container"
	"outcall.dev/outcall/pkg/hostclient"
	"outcall.dev/outcall/test/dockerlab"
	"outcall.dev/outcall/test/lab"
)

const (
	benchContainers = 50
	// connloopPackage runs in every container of the benchmark.
	connloopPackage = "outcall.dev/outcall/test/dockerbench/connloop"
	// The pause between two containers: what Docker does after a start
	// (and the previous container's last dials) does not fall into the
	// next one's figures.
	benchSettle = 100 * time.Millisecond
	// Bounds: a container whose first packet takes longer is a failure.
	firstPacketWait = 20 * time.Second
	attachWait      = 20 * time.Second
	// identityPoll is how often the endpoint list is asked while a port
	// waits for its identity: often enough for the figure, rarely enough
	// not to load the daemon it measures.
	identityPoll = 5 * time.Millisecond
	programPoll  = 500 * time.Microsecond
)

// target is where every container connects: an address of the upstream
// namespace (lab.Upstream2, a documentation address).
var target = netip.AddrPortFrom(netip.MustParseAddr(lab.Upstream2), 8080)

// benchRules allow exactly the target, at the packet level (lowered into
// the datapath's tables: no DNS, no proxy).
var benchRules = fmt.Sprintf(`version: "1"
rules:
  - id: bench-first-packet
    condition: 'network.ip == "%s" && network.port == %d && network.protocol == "tcp"'
    action: allow
`, target.Addr(), target.Port())

// BenchmarkContainers: outcalld's `container create` against a plain
// Docker create of the same image, container by container, in one run
// (see the package doc and BENCHMARKS.md "Containers (issue 10)").
func BenchmarkContainers(b *testing.B) {
	t0 := time.Now()
	lockRoot(b)
	u := dockerlab.NewUpstream(b) // the routes lock, held until the end
	fmt.Printf("    machine locks taken after %v\n", time.Since(t0).Round(100*time.Millisecond))
	docker := u.Docker
	dockerlab.PreflightRoot(b, docker)
	image := dockerlab.Image(b, dockerlab.WithBinary("connloop", dockerlab.StaticBinary(b, connloopPackage)))
	srv := serveArrivals(b, u)

	block := dockerlab.FreeBlock(b, docker)
	u.RouteBack(b, block) // in case a source arrives unmasqueraded
	bin := buildDaemon(b)
	d := startDaemon(b, docker, bin, u.Prefix, block, benchRules)
	// Before anything is sent from the daemon's network: the target
	// routes into the upstream namespace from an address of it on its
	// bridge, and from the root namespace.
	u.RequireRoutes(b, target.Addr())
	if err := u.CheckFrom(target.Addr(), d.Gateway.Next().Next(), d.Bridge); err != nil {
		b.Fatalf("refusing to start containers on %s: %v", d.Bridge, err)
	}
	hc := &hostclient.Client{SocketPath: d.Socket, Timeout: time.Minute}

	plain := u.Network(b, "plain", netip.Prefix{})
	dc, err := client.NewClientWithOpts(client.WithHost(dockerlab.LocalSocket), client.WithAPIVersionNegotiation())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dc.Close() })
	// Registered after the daemon's own removal, so run before it: the
	// daemon stops first, then every container of the session goes, in
	// parallel (the harness's sweep is one by one).
	b.Cleanup(func() {
		t0 := time.Now()
		d.stop()
		removeSession(b, dc, u.Prefix)
		fmt.Printf("    cleanup: daemon stopped and %d containers removed in %v\n", 2*benchContainers, time.Since(t0).Round(100*time.Millisecond))
	})

	br, err := netlink.LinkByName(d.Bridge)
	if err != nil {
		b.Fatal(err)
	}
	w := watchPorts(b, br.Attrs().Index, hc)

	// Idle: the daemon up, its rules loaded, no container yet.
	time.Sleep(time.Second)
	idleRSS := rssKiB(b, d.PID(), "VmRSS")

	var (
		res  = map[string]*series{"outcall": {}, "docker": {}}
		port portSeries
	)
	ctx := context.Background()
	loopStart := time.Now()
	for i := range benchContainers {
		// Alternate the order, so that neither always follows the other.
		cases := []string{"outcall", "docker"}
		if i%2 == 1 {
			cases = []string{"docker", "outcall"}
		}
		for _, c := range cases {
			name := u.Name(fmt.Sprintf("%s-%02d", c, i))
			cmd := []string{"/bin/connloop", target.String(), name}
			var (
				start   time.Time
				created time.Duration
				id      string
			)
			switch c {
			case "outcall":
				start = time.Now()
				r, err := hc.CreateContainer(ctx, api.ContainerCreateRequest{Image: image, Name: &name, Cmd: cmd})
				created = time.Since(start)
				if err != nil {
					b.Fatalf("outcall container create %s: %v\n%s", name, err, d.Log())
				}
				id = r.ContainerID
			case "docker":
				ip := plain.NextIP()
				checkPeer(b, u, ip, plain)
				cfg, host, nw := peerSpec(image, u, plain, ip, cmd)
				start = time.Now()
				r, err := dc.ContainerCreate(ctx, cfg, host, nw, nil, name)
				if err == nil {
					err = dc.ContainerStart(ctx, r.ID, dcontainer.StartOptions{})
				}
				created = time.Since(start)
				if err != nil {
					b.Fatalf("docker create/start %s: %v", name, err)
				}
				id = r.ID
			}
			at, ok := srv.wait(name, start.Add(firstPacketWait))
			if !ok {
				logs, _ := exec.Command("docker", "logs", id).CombinedOutput()
				b.Fatalf("%s: no connection upstream within %v; its log:\n%s\noutcalld:\n%s", name, firstPacketWait, logs, d.Log())
			}
			res[c].create = append(res[c].create, created)
			res[c].first = append(res[c].first, at.Sub(start))
			res[c].after = append(res[c].after, at.Sub(start)-created)
			if c == "outcall" {
				pt := w.waitPort(b, hc, id, start.Add(attachWait))
				port.veth = append(port.veth, pt.veth.Sub(start))
				port.program = append(port.program, pt.program.Sub(pt.veth))
				port.identity = append(port.identity, pt.identity.Sub(pt.veth))
			}
			time.Sleep(benchSettle)
		}
	}

	// With the containers running: all of them, managed and running.
	time.Sleep(2 * time.Second)
	fullRSS := rssKiB(b, d.PID(), "VmRSS")
	peakRSS := rssKiB(b, d.PID(), "VmHWM")
	list, err := hc.Containers(ctx)
	if err != nil {
		b.Fatal(err)
	}
	running := 0
	for _, c := range list {
		if c.State == "running" {
			running++
		}
	}
	if running != benchContainers {
		b.Errorf("outcalld lists %d running containers, want %d", running, benchContainers)
	}

	loopTime := time.Since(loopStart)

	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	report := func(name string, metrics ...any) {
		b.Run(name, func(b *testing.B) {
			for j := 0; j+1 < len(metrics); j += 2 {
				b.ReportMetric(metrics[j+1].(float64), metrics[j].(string))
			}
		})
	}
	for _, c := range []string{"outcall", "docker"} {
		s := res[c]
		report(c,
			"create-p50-ms", ms(quantile(s.create, 0.5)), "create-p99-ms", ms(quantile(s.create, 0.99)),
			"first-packet-p50-ms", ms(quantile(s.first, 0.5)), "first-packet-p99-ms", ms(quantile(s.first, 0.99)),
			"after-create-p50-ms", ms(quantile(s.after, 0.5)), "after-create-p99-ms", ms(quantile(s.after, 0.99)))
	}
	report("port",
		"start-to-veth-p50-ms", ms(quantile(port.veth, 0.5)),
		"veth-to-program-p50-ms", ms(quantile(port.program, 0.5)), "veth-to-program-p99-ms", ms(quantile(port.program, 0.99)),
		"veth-to-identity-p50-ms", ms(quantile(port.identity, 0.5)), "veth-to-identity-p99-ms", ms(quantile(port.identity, 0.99)))
	report("rss",
		"idle-MiB", idleRSS/1024, fmt.Sprintf("with-%d-MiB", benchContainers), fullRSS/1024, "peak-MiB", peakRSS/1024)
	o, p := res["outcall"], res["docker"]
	report("ratio",
		"first-packet-p50-vs-docker", ratio(o.first, p.first, 0.5),
		"first-packet-p99-vs-docker", ratio(o.first, p.first, 0.99),
		"create-p50-vs-docker", ratio(o.create, p.create, 0.5),
		"create-p99-vs-docker", ratio(o.create, p.create, 0.99))
	fmt.Printf("    %d containers of each kind, p50 / p99 ms (the loop took %v):\n", benchContainers, loopTime.Round(time.Second))
	for _, c := range []string{"outcall", "docker"} {
		s := res[c]
		fmt.Printf("    %-8s create %7.1f / %7.1f   first packet %7.1f / %7.1f   create return to first packet %6.1f / %6.1f\n", c,
			ms(quantile(s.create, 0.5)), ms(quantile(s.create, 0.99)), ms(quantile(s.first, 0.5)), ms(quantile(s.first, 0.99)),
			ms(quantile(s.after, 0.5)), ms(quantile(s.after, 0.99)))
	}
	fmt.Printf("    outcall ports: create call to veth %.1f; veth to program %.1f / %.1f, to identity %.1f / %.1f\n",
		ms(quantile(port.veth, 0.5)), ms(quantile(port.program, 0.5)), ms(quantile(port.program, 0.99)),
		ms(quantile(port.identity, 0.5)), ms(quantile(port.identity, 0.99)))
	fmt.Printf("    outcalld RSS: idle %.1f MiB, with %d containers %.1f MiB (VmHWM %.1f MiB)\n",
		idleRSS/1024, benchContainers, fullRSS/1024, peakRSS/1024)
}

// series are one kind's samples: the create call, from its start to the
// first packet upstream, and from its return to that packet.
type series struct {
	create []time.Duration
	first  []time.Duration
	after  []time.Duration
}

// portSeries are the samples of outcalld's ports: from the create call's
// start to the veth on the bridge, and from the veth to the program and
// to the identity.
type portSeries struct {
	veth, program, identity []time.Duration
}

// quantile interpolates linearly between the closest ranks (the R-7 rule,
// numpy's default): of 50 samples p50 is the mean of the 25th and 26th,
// p99 lies half-way from the 49th to the 50th, the largest.
func quantile(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	v := slices.Clone(s)
	slices.Sort(v)
	h := q * float64(len(v)-1)
	lo := int(math.Floor(h))
	if lo+1 >= len(v) {
		return v[len(v)-1]
	}
	return v[lo] + time.Duration((h-float64(lo))*float64(v[lo+1]-v[lo]))
}

func ratio(a, b []time.Duration, q float64) float64 {
	return float64(quantile(a, q)) / float64(quantile(b, q))
}

// checkPeer checks, before a peer container at ip starts on n, that its
// target and its resolver route into the upstream namespace.
func checkPeer(t testing.TB, u *dockerlab.Upstream, ip netip.Addr, n *dockerlab.Network) {
	t.Helper()
	var errs []error
	for _, dst := range []netip.Addr{target.Addr(), u.DNS} {
		errs = append(errs, u.Check(dst), u.CheckFrom(dst, ip, n.Bridge))
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("refusing to start a container that would send elsewhere: %v", err)
	}
}

// peerSpec is the peer container through the Engine API: what Outcall's
// Build asks of Docker (container.Build: user, read-only root and /tmp
// tmpfs, every capability dropped, no-new-privileges, init, private IPC,
// the same limits, one resolver), on a plain bridge network at ip.
func peerSpec(image string, u *dockerlab.Upstream, n *dockerlab.Network, ip netip.Addr, cmd []string) (*dcontainer.Config, *dcontainer.HostConfig, *dnetwork.NetworkingConfig) {
	useInit := true
	pids := api.DefaultPidsLimit
	cfg := &dcontainer.Config{Image: image, User: api.DefaultContainerUser, Cmd: cmd,
		Labels: map[string]string{dockerlab.LabelSession: u.Prefix}}
	host := &dcontainer.HostConfig{
		NetworkMode: dcontainer.NetworkMode(n.Name),
		DNS:         []string{u.DNS.String()}, DNSOptions: []string{"ndots:0"}, DNSSearch: []string{"."},
		Init: &useInit, ReadonlyRootfs: true, Tmpfs: map[string]string{container.TmpPath: container.TmpfsOptions},
		CapDrop: []string{"ALL"}, SecurityOpt: []string{"no-new-privileges:true"}, IpcMode: dcontainer.IPCModePrivate,
		Resources: dcontainer.Resources{Memory: api.DefaultMemoryLimit, CPUShares: api.DefaultCPUShares, PidsLimit: &pids},
	}
	nw := &dnetwork.NetworkingConfig{EndpointsConfig: map[string]*dnetwork.EndpointSettings{
		n.Name: {NetworkID: n.ID, IPAMConfig: &dnetwork.EndpointIPAMConfig{IPv4Address: ip.String()}}}}
	return cfg, host, nw
}

// removeSession removes every container named with prefix, eight at a
// time.
func removeSession(t testing.TB, dc *client.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	list, err := dc.ContainerList(ctx, dcontainer.ListOptions{All: true})
	if err != nil {
		t.Errorf("list containers: %v", err)
		return
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, c := range list {
		if !slices.ContainsFunc(c.Names, func(n string) bool { return strings.HasPrefix(strings.TrimPrefix(n, "/"), prefix) }) {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(id string) {
			defer func() { <-sem; wg.Done() }()
			if err := dc.ContainerRemove(ctx, id, dcontainer.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}(c.ID)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Errorf("remove containers: %v", err)
	}
}

// arrivals is the upstream server: when the first connection of each
// container (named by the line it sends) was accepted.
type arrivals struct {
	mu    sync.Mutex
	first map[string]time.Time
	seen  map[string]chan struct{}
}

// serveArrivals listens on target in the upstream namespace until the end
// of t.
func serveArrivals(t testing.TB, u *dockerlab.Upstream) *arrivals {
	t.Helper()
	u.RequireRoutes(t, target.Addr())
	a := &arrivals{first: map[string]time.Time{}, seen: map[string]chan struct{}{}}
	var ln net.Listener
	if err := lab.Do(u.NS, func() (err error) { ln, err = net.Listen("tcp4", target.String()); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", target, u.NS, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			at := time.Now()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				a.note(strings.TrimSpace(line), at)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return a
}

func (a *arrivals) ch(id string) chan struct{} {
	c, ok := a.seen[id]
	if !ok {
		c = make(chan struct{})
		a.seen[id] = c
	}
	return c
}

// note records a connection of id accepted at at.
func (a *arrivals) note(id string, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if prev, ok := a.first[id]; ok {
		if at.Before(prev) {
			a.first[id] = at
		}
		return
	}
	a.first[id] = at
	close(a.ch(id))
}

// wait returns when id's first connection was accepted, waiting until
// deadline for it.
func (a *arrivals) wait(id string, deadline time.Time) (time.Time, bool) {
	a.mu.Lock()
	c := a.ch(id)
	a.mu.Unlock()
	select {
	case <-c:
	case <-time.After(time.Until(deadline)):
		return time.Time{}, false
	}
	// A connection accepted earlier may finish its line later.
	time.Sleep(5 * time.Millisecond)
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.first[id], true
}

// ports watches the root namespace for veths enslaved to the daemon's
// bridge and times, for each, the TCX program and the identity on it.
type ports struct {
	bridge int
	hc     *hostclient.Client

	mu      sync.Mutex
	veth    map[int]time.Time // when the veth was first seen on the bridge
	program map[int]time.Time
	ident   map[int]time.Time
	errs    []error
	changed chan struct{}
}

func watchPorts(t testing.TB, bridge int, hc *hostclient.Client) *ports {
	t.Helper()
	p := &ports{bridge: bridge, hc: hc, veth: map[int]time.Time{}, program: map[int]time.Time{},
		ident: map[int]time.Time{}, changed: make(chan struct{}, 1)}
	updates := make(chan netlink.LinkUpdate, 256)
	done := make(chan struct{})
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) { p.fail(fmt.Errorf("link updates: %w", err)) },
	})
	if err != nil {
		t.Fatalf("subscribe to link updates: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for up := range updates {
			at := time.Now()
			attrs := up.Link.Attrs()
			if up.Link.Type() != "veth" || attrs.MasterIndex != bridge {
				continue
			}
			p.mu.Lock()
			_, known := p.veth[attrs.Index]
			if !known {
				p.veth[attrs.Index] = at
			}
			p.mu.Unlock()
			if !known {
				wg.Add(2)
				go func() { defer wg.Done(); p.pollProgram(attrs.Index, at.Add(attachWait)) }()
				go func() { defer wg.Done(); p.pollIdentity(attrs.Index, at.Add(attachWait)) }()
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		// The subscription closes updates once it sees done.
		wg.Wait()
	})
	return p
}

func (p *ports) fail(err error) {
	p.mu.Lock()
	p.errs = append(p.errs, err)
	p.mu.Unlock()
	p.signal()
}

func (p *ports) signal() {
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

func (p *ports) set(m map[int]time.Time, ifindex int, at time.Time) {
	p.mu.Lock()
	m[ifindex] = at
	p.mu.Unlock()
	p.signal()
}

// pollProgram asks the kernel for the TCX ingress programs of ifindex
// until there is one.
func (p *ports) pollProgram(ifindex int, deadline time.Time) {
	for time.Now().Before(deadline) {
		r, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
		if err == nil && len(r.Programs) > 0 {
			p.set(p.program, ifindex, time.Now())
			return
		}
		time.Sleep(programPoll)
	}
}

// pollIdentity asks the daemon for its endpoints until one is attached on
// ifindex: bound to the port, the program alive.
func (p *ports) pollIdentity(ifindex int, deadline time.Time) {
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		eps, err := p.hc.Endpoints(ctx)
		cancel()
		at := time.Now()
		if err == nil && slices.ContainsFunc(eps, func(e api.Endpoint) bool { return e.Ifindex == ifindex && e.Attached }) {
			p.set(p.ident, ifindex, at)
			return
		}
		time.Sleep(identityPoll)
	}
}

// portTimes are when a port was seen on the bridge, with its program and
// with its identity.
type portTimes struct{ veth, program, identity time.Time }

// waitPort finds the port of container id (its endpoint's ifindex) and
// waits until deadline for its program and its identity.
func (p *ports) waitPort(t testing.TB, hc *hostclient.Client, id string, deadline time.Time) portTimes {
	t.Helper()
	ifindex := 0
	for ifindex == 0 {
		eps, err := hc.Endpoints(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range eps {
			if e.ContainerID == id && e.Ifindex != 0 {
				ifindex = e.Ifindex
			}
		}
		if ifindex == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("container %.12s: no endpoint with a port", id)
			}
			time.Sleep(identityPoll)
		}
	}
	for {
		p.mu.Lock()
		v, okV := p.veth[ifindex]
		pr, okP := p.program[ifindex]
		idt, okI := p.ident[ifindex]
		errs := errors.Join(p.errs...)
		p.mu.Unlock()
		if errs != nil {
			t.Fatal(errs)
		}
		if okV && okP && okI {
			return portTimes{veth: v, program: pr, identity: idt}
		}
		select {
		case <-p.changed:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("port ifindex %d: veth seen %v, program %v, identity %v by the deadline", ifindex, okV, okP, okI)
		}
	}
}
