package docker

import (
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/test/dockerlab"
	"outcall.dev/outcall/test/lab"
)

// peerPort is where a peer container listens ("peer" to every connection).
const peerPort = 7000

// TestManaged: containers that `outcall container create` made, on the
// default network, with the test's rules — (a) what one reaches and what
// it does not, (b) its docker inspect, (c) a container `docker run` put on
// the same network, (e) the bind-mount deny list, and the container
// commands' output. One daemon serves the subtests; each has containers of
// its own.
func TestManaged(t *testing.T) {
	w := setUp(t)
	a := w.create(t, w.u.Name("a"), nil, "sleep", "600")
	peer := w.create(t, w.u.Name("peer"), nil, "nc", "-ll", "-p", "7000", "-e", "echo", "peer")
	t.Logf("managed %s at %s and %s at %s on %s (%s)", a.Name, a.IP, peer.Name, peer.IP, a.Network, a.Bridge)
	if !w.subnet.Contains(a.IP) || !w.subnet.Contains(peer.IP) || a.IP == peer.IP {
		t.Fatalf("addresses %s and %s: want two of %s", a.IP, peer.IP, w.subnet)
	}
	gwDNS := netip.AddrPortFrom(w.gw, 53)

	t.Run("reaches", func(t *testing.T) { testReaches(t, w, a, peer) })
	t.Run("inspect", func(t *testing.T) { testInspect(t, w, a) })
	t.Run("plain docker run", func(t *testing.T) { testPlain(t, w, a, gwDNS) })
	t.Run("bind mounts refused", func(t *testing.T) { testBindMounts(t, w) })
	t.Run("cli", func(t *testing.T) { testContainerCLI(t, w, a, peer) })
}

// (a) Allowed name, allowed URL through the proxy, direct_ip right after
// the answer; blocked: a denied name, a direct IP, another resolver, the
// host's other services, the metadata address, another container. Each
// negative probe has its positive control first.
func testReaches(t *testing.T, w *world, a, peer managed) {
	gwDNS := netip.AddrPortFrom(w.gw, 53)
	w.aim(t, a.IP, a.Bridge, webAddr.Addr(), directAddr, deniedAddr.Addr(), upstreamDNS.Addr(), metadataAddr)

	// Allowed name: the filter forwards it and answers with the address.
	if got := w.dnsFrom(t, a.Name, gwDNS, "web.test"); got != "NOERROR "+webAddr.Addr().String() {
		t.Fatalf("allowed name web.test from %s: %q", a.Name, got)
	}
	// Denied names: the block rule's and one no rule names. Control: the
	// upstream resolver has records for both, or answers for the other.
	if r := rootDNS(upstreamDNS, "evil.test"); r == nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("positive control: the upstream resolver does not answer evil.test: %v", r)
	}
	for _, name := range []string{"evil.test", "unlisted.test"} {
		if got := w.dnsFrom(t, a.Name, gwDNS, name); !strings.HasPrefix(got, "NXDOMAIN") {
			t.Errorf("denied name %s: %q, want NXDOMAIN", name, got)
		}
	}

	// Allowed URL through the proxy (HTTP_PROXY and http_proxy are set in
	// the container; busybox wget follows http_proxy).
	before := len(w.web.Requests())
	out, err := w.exec(t, a.Name, "timeout", "10", "wget", "-q", "-O", "-", "http://web.test:8088/allowed")
	if err != nil || strings.TrimSpace(out) != "hello web.test:8088 /allowed" {
		t.Fatalf("allowed URL through the proxy: %q %v", out, err)
	}
	reqs := w.web.Requests()[before:]
	if len(reqs) != 1 || reqs[0].Remote.Addr() != dockerlab.LinkRoot {
		t.Errorf("web server saw %+v, want one request from the root namespace (the proxy)", reqs)
	}
	// The same host directly, not through the proxy: a proxy rule grants
	// nothing. Control: the server answered the proxy just now.
	if out, err := w.exec(t, a.Name, "timeout", "3", "probe", "http", "http://"+webAddr.String()+"/direct"); err == nil {
		t.Errorf("the proxy-only host answered the container directly: %q", out)
	}

	// direct_ip: closed before the name is resolved, open right after
	// (one exec: resolve, then connect at once), and only on the rule's
	// port. Control: the responders greet the root namespace.
	direct80 := netip.AddrPortFrom(directAddr, 80)
	mustReachRoot(t, w.u, direct80, netip.AddrPortFrom(directAddr, 443))
	if ok, out := w.tcpFrom(t, a.Name, direct80); ok {
		t.Fatalf("direct.test's address reached before the name was resolved: %q", out)
	}
	out, err = w.exec(t, a.Name, "sh", "-c", "probe dns "+gwDNS.String()+" direct.test && timeout 2 probe tcp "+direct80.String())
	if err != nil || strings.TrimSpace(out) != "NOERROR "+directAddr.String()+"\nok" {
		t.Fatalf("resolve direct.test, then connect to %s at once: %q %v", direct80, out, err)
	}
	if ok, out := w.tcpFrom(t, a.Name, netip.AddrPortFrom(directAddr, 443)); ok {
		t.Errorf("the direct_ip grant opened port 443, which its rule does not list: %q", out)
	}
	if ok, _ := w.tcpFrom(t, peer.Name, direct80); ok {
		t.Errorf("%s's answer opened %s for %s", a.Name, direct80, peer.Name)
	}

	// A direct IP no rule opens. Control: it greets the root namespace.
	mustReachRoot(t, w.u, deniedAddr)
	if ok, out := w.tcpFrom(t, a.Name, deniedAddr); ok {
		t.Errorf("direct IP %s without a grant reached: %q", deniedAddr, out)
	}

	// Another resolver: the upstream one itself, over UDP and TCP.
	// Control: it answers the root namespace.
	if r := rootDNS(upstreamDNS, "web.test"); r == nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("positive control: the upstream resolver: %v", r)
	}
	for _, proto := range []string{"udp", "tcp"} {
		if out, err := w.exec(t, a.Name, "timeout", "3", "probe", "dns", upstreamDNS.String(), "web.test", proto); err == nil {
			t.Errorf("another resolver (%s over %s) answered the container: %q", upstreamDNS, proto, out)
		}
	}

	// The host's other services: a listener on the gateway address, on a
	// port that is neither DNS nor the proxy. Control: it greets the root
	// namespace.
	hostSvc := serveGreeting(t, netip.AddrPortFrom(w.gw, 2222))
	if !rootTCP(hostSvc) {
		t.Fatalf("positive control: the host service %s does not greet the root namespace", hostSvc)
	}
	if ok, out := w.tcpFrom(t, a.Name, hostSvc); ok {
		t.Errorf("the host's service %s reached from the container: %q", hostSvc, out)
	}

	// The metadata address, routed into the upstream namespace for this
	// test. Control: its responder greets the root namespace.
	meta := netip.AddrPortFrom(metadataAddr, 80)
	mustReachRoot(t, w.u, meta)
	if ok, out := w.tcpFrom(t, a.Name, meta); ok {
		t.Errorf("the metadata address %s reached directly: %q", meta, out)
	}
	if out, err := w.exec(t, a.Name, "timeout", "10", "wget", "-q", "-O", "-", "http://169.254.169.254/latest/meta-data/"); err == nil {
		t.Errorf("the metadata address answered through the proxy: %q", out)
	}

	// Another container on the same network. Control: the peer's
	// listener answers inside the peer.
	if out, err := w.exec(t, peer.Name, "timeout", "2", "probe", "tcp", "127.0.0.1:7000"); err != nil || strings.TrimSpace(out) != "peer" {
		t.Fatalf("positive control: the peer's listener: %q %v", out, err)
	}
	if ok, out := w.tcpFrom(t, a.Name, netip.AddrPortFrom(peer.IP, peerPort)); ok {
		t.Errorf("%s reached %s:%d: %q", a.Name, peer.IP, peerPort, out)
	}
	t.Logf("%s: web.test resolved and fetched through %s:8080, direct.test opened %s; evil.test and unlisted.test NXDOMAIN; %s, %s (udp, tcp), %s, %s and %s:%d blocked",
		a.Name, w.gw, direct80, deniedAddr, upstreamDNS, hostSvc, meta, peer.IP, peerPort)
}

// serveGreeting listens on addr in the root namespace and greets every
// connection until the test ends.
func serveGreeting(t *testing.T, addr netip.AddrPort) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp4", addr.String())
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("host\n"))
			c.Close()
		}
	}()
	return addr
}

// inspected is what testInspect reads of `docker inspect`.
type inspected struct {
	Name   string
	Config struct {
		User   string
		Env    []string
		Labels map[string]string
	}
	HostConfig struct {
		NetworkMode    string
		Privileged     bool
		ReadonlyRootfs bool
		CapAdd         []string
		CapDrop        []string
		SecurityOpt    []string
		Init           *bool
		PidsLimit      *int64
		Memory         int64
		CPUShares      int64    `json:"CpuShares"`
		DNS            []string `json:"Dns"`
		DNSOptions     []string `json:"DnsOptions"`
		Tmpfs          map[string]string
		Binds          []string
		Mounts         []struct {
			Type, Source, Target string
			ReadOnly             bool
		}
		PortBindings map[string]json.RawMessage
	}
	Mounts          []json.RawMessage
	NetworkSettings struct {
		Networks map[string]struct {
			IPAddress  string
			MacAddress string
		}
	}
}

// (b) Every S008 hardening property (spec section 1.4), one by one, as
// Docker reports it, and the ones only the inside shows.
func testInspect(t *testing.T, w *world, a managed) {
	var c inspected
	raw := w.docker.Must(t, "inspect", "--format", "{{json .}}", a.Name)
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatal(err)
	}
	proxy := "http://" + w.gw.String() + ":8080"
	check := func(what string, ok bool, got any) {
		t.Helper()
		if !ok {
			t.Errorf("%s: got %v", what, got)
		} else {
			t.Logf("ok: %s (%v)", what, got)
		}
	}
	check("name is the caller's, exactly", c.Name == "/"+a.Name, c.Name)
	check("label managed-by=outcalld", c.Config.Labels[api.LabelManagedBy] == api.LabelManagedByValue, c.Config.Labels)
	check("label outcall.network=outcall-default", c.Config.Labels["outcall.network"] == api.DefaultNetworkName, c.Config.Labels["outcall.network"])
	created, err := time.Parse(time.RFC3339, c.Config.Labels["outcall.created-at"])
	check("label outcall.created-at is ISO 8601, recent", err == nil && time.Since(created) < 10*time.Minute && time.Until(created) < time.Minute, c.Config.Labels["outcall.created-at"])
	check("exactly one network, outcall-default", len(c.NetworkSettings.Networks) == 1 && c.NetworkSettings.Networks[api.DefaultNetworkName].IPAddress != "", c.NetworkSettings.Networks)
	check("NetworkMode names the same network", c.HostConfig.NetworkMode == api.DefaultNetworkName, c.HostConfig.NetworkMode)
	check("Dns = [the gateway's DNS filter]", slices.Equal(c.HostConfig.DNS, []string{w.gw.String()}), c.HostConfig.DNS)
	check("DnsOptions = [ndots:0]", slices.Equal(c.HostConfig.DNSOptions, []string{"ndots:0"}), c.HostConfig.DNSOptions)
	env := map[string]string{}
	for _, e := range c.Config.Env {
		k, v, _ := strings.Cut(e, "=")
		env[k] = v
	}
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		check("env "+k+"="+proxy, env[k] == proxy, env[k])
	}
	for _, k := range []string{"NO_PROXY", "no_proxy"} {
		check("env "+k+"=localhost,127.0.0.1", env[k] == "localhost,127.0.0.1", env[k])
	}
	check("user 65532:65532 (numeric, non-root)", c.Config.User == "65532:65532", c.Config.User)
	check("read-only root filesystem", c.HostConfig.ReadonlyRootfs, c.HostConfig.ReadonlyRootfs)
	_, tmp := c.HostConfig.Tmpfs["/tmp"]
	check("tmpfs at /tmp", tmp, c.HostConfig.Tmpfs)
	check("not privileged", !c.HostConfig.Privileged, c.HostConfig.Privileged)
	check("CapDrop ALL", slices.Contains(c.HostConfig.CapDrop, "ALL"), c.HostConfig.CapDrop)
	check("no CapAdd", len(c.HostConfig.CapAdd) == 0, c.HostConfig.CapAdd)
	check("no-new-privileges", slices.ContainsFunc(c.HostConfig.SecurityOpt, func(s string) bool {
		return s == "no-new-privileges" || s == "no-new-privileges:true"
	}), c.HostConfig.SecurityOpt)
	check("Init", c.HostConfig.Init != nil && *c.HostConfig.Init, c.HostConfig.Init)
	check("PidsLimit 256", c.HostConfig.PidsLimit != nil && *c.HostConfig.PidsLimit == 256, c.HostConfig.PidsLimit)
	check("Memory 512 MiB", c.HostConfig.Memory == 512<<20, c.HostConfig.Memory)
	check("CpuShares 1024", c.HostConfig.CPUShares == 1024, c.HostConfig.CPUShares)
	// One mount only, the daemon's resolver file, read-only over
	// /etc/resolv.conf (helper mounts are opt-in).
	check("no binds; one mount: the daemon's resolv.conf, read-only", len(c.HostConfig.Binds) == 0 && len(c.HostConfig.Mounts) == 1 &&
		c.HostConfig.Mounts[0].Target == "/etc/resolv.conf" && c.HostConfig.Mounts[0].ReadOnly && c.HostConfig.Mounts[0].Type == "bind", c.HostConfig.Mounts)
	check("no published ports", len(c.HostConfig.PortBindings) == 0, c.HostConfig.PortBindings)

	// docker network inspect shows the attachment (S008-SC-003).
	attached := w.docker.Must(t, "network", "inspect", "--format", "{{range .Containers}}{{.Name}} {{end}}", api.DefaultNetworkName)
	check("docker network inspect outcall-default lists it", slices.Contains(strings.Fields(attached), a.Name), attached)

	// Inside: the user, the resolver, the read-only root and /tmp.
	out, err := w.exec(t, a.Name, "probe", "id")
	check("runs as uid 65532 gid 65532 inside", err == nil && strings.TrimSpace(out) == "uid=65532 gid=65532", out)
	out, err = w.exec(t, a.Name, "cat", "/etc/resolv.conf")
	servers, ndots := resolvConf(out)
	check("resolv.conf has options ndots:0", err == nil && ndots, out)
	// Only the filter: not Docker's embedded resolver (127.0.0.11), which
	// would answer the other containers' names itself (SC-006).
	check("resolv.conf names only the gateway's DNS filter", slices.Equal(servers, []string{w.gw.String()}), servers)
	out, err = w.exec(t, a.Name, "timeout", "5", "nslookup", "web.test")
	check("the container's own resolver answers web.test (through the filter)", err == nil && strings.Contains(out, webAddr.Addr().String()), out)
	out, err = w.exec(t, a.Name, "timeout", "5", "nslookup", "evil.test")
	check("the container's own resolver answers evil.test NXDOMAIN (the filter's block)", strings.Contains(out, "NXDOMAIN") && !strings.Contains(out, lab.Upstream2), out+errString(err))
	_, err = w.exec(t, a.Name, "sh", "-c", "echo nameserver 198.51.100.10 > /etc/resolv.conf")
	check("resolv.conf is not writable", err != nil, err)
	_, err = w.exec(t, a.Name, "touch", "/probe-write")
	check("/ is not writable", err != nil, err)
	_, err = w.exec(t, a.Name, "touch", "/tmp/probe-write")
	check("/tmp is writable", err == nil, err)
	out, _ = w.exec(t, a.Name, "sh", "-c", "grep -E '^Cap(Prm|Eff|Bnd)|^NoNewPrivs' /proc/self/status")
	check("no capabilities and NoNewPrivs inside", strings.Count(out, "0000000000000000") == 3 && strings.Contains(out, "NoNewPrivs:\t1"), out)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return " (" + err.Error() + ")"
}

// resolvConf returns the nameservers of resolv.conf text and whether it
// sets ndots:0.
func resolvConf(conf string) ([]string, bool) {
	var servers []string
	ndots := false
	for _, line := range strings.Split(conf, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			servers = append(servers, f[1])
		}
		if len(f) >= 2 && f[0] == "options" && slices.Contains(f[1:], "ndots:0") {
			ndots = true
		}
	}
	return servers, ndots
}

// (c) A container `docker run` puts on outcall-default reaches nothing:
// REFUSED from the DNS filter, 403 from the proxy, nothing upstream or to
// the managed containers. The managed container a is the positive control
// of each probe.
func testPlain(t *testing.T, w *world, a managed, gwDNS netip.AddrPort) {
	plain := w.startPlain(t, "plain", 200)
	ip := plain.IP
	w.aim(t, ip, w.bridge, webAddr.Addr(), deniedAddr.Addr(), upstreamDNS.Addr())

	if got := w.dnsFrom(t, a.Name, gwDNS, "web.test"); got != "NOERROR "+webAddr.Addr().String() {
		t.Fatalf("positive control: the managed container resolves web.test: %q", got)
	}
	if got := w.dnsFrom(t, plain.Name, gwDNS, "web.test"); got != "REFUSED" {
		t.Errorf("the plain container's query for web.test: %q, want REFUSED", got)
	}
	if out, err := w.exec(t, a.Name, "timeout", "10", "wget", "-q", "-O", "-", "http://web.test:8088/plain-control"); err != nil {
		t.Fatalf("positive control: the managed container fetches through the proxy: %q %v", out, err)
	}
	before := len(w.web.Requests())
	out, err := w.exec(t, plain.Name, "timeout", "10", "wget", "-O", "-", "http://web.test:8088/plain")
	if err == nil || !strings.Contains(out+err.Error(), "403") {
		t.Errorf("the plain container through the proxy: %q %v, want 403", out, err)
	}
	if n := len(w.web.Requests()) - before; n != 0 {
		t.Errorf("the web server saw %d requests of the plain container", n)
	}
	mustReachRoot(t, w.u, deniedAddr)
	if ok, out := w.tcpFrom(t, plain.Name, deniedAddr); ok {
		t.Errorf("the plain container reached %s: %q", deniedAddr, out)
	}
	if out, err := w.exec(t, plain.Name, "timeout", "3", "probe", "dns", upstreamDNS.String(), "web.test"); err == nil {
		t.Errorf("the plain container reached the upstream resolver: %q", out)
	}
	// The managed containers: a's listener-less address and the peer's
	// listener (controlled in testReaches).
	if ok, out := w.tcpFrom(t, plain.Name, netip.AddrPortFrom(a.IP, peerPort)); ok {
		t.Errorf("the plain container reached %s: %q", a.Name, out)
	}
	t.Logf("plain container %s at %s: DNS REFUSED, proxy 403, upstream and containers unreachable; %s resolved and fetched", plain.Name, ip, a.Name)
}

// startPlain starts a container with `docker run` on outcall-default at
// the subnet's address .last, with the proxy variables set as Outcall
// would set them.
func (w *world) startPlain(t *testing.T, name string, last byte) *dockerlab.Container {
	t.Helper()
	n := &dockerlab.Network{Name: api.DefaultNetworkName, Bridge: w.bridge, Subnet: w.subnet, Gateway: w.gw}
	a := w.subnet.Addr().As4()
	a[3] = last
	proxy := "http://" + w.gw.String() + ":8080"
	// Session.Start (not the Upstream's): its resolver is the gateway,
	// which is no upstream address; each probe is checked where it is
	// made.
	return w.u.Session.Start(t, name, dockerlab.RunOptions{Image: w.image, Network: n, IP: netip.AddrFrom4(a), DNS: w.gw,
		Flags: []string{"-e", "http_proxy=" + proxy, "-e", "HTTP_PROXY=" + proxy},
		Cmd:   []string{"sleep", "600"}})
}

// (e) Binds of the Docker socket, directly, through a symlink and through
// a parent directory (and the host API socket), are refused with the
// spec's error and leave no container; an innocuous bind is the positive
// control.
func testBindMounts(t *testing.T, w *world) {
	dir := t.TempDir()
	link := filepath.Join(dir, "innocent.sock")
	if err := os.Symlink("/var/run/docker.sock", link); err != nil {
		t.Fatal(err)
	}
	dockerSocks := []string{"/var/run/docker.sock", "/run/docker.sock"}
	cases := []struct {
		name, src string
		protected []string
	}{
		{"docker socket", "/var/run/docker.sock", dockerSocks},
		{"symlink to it", link, dockerSocks},
		{"parent directory", "/run", dockerSocks},
		{"parent of the symlinked /var/run", "/var", dockerSocks},
		{"host API socket", w.socket, []string{w.socket}},
	}
	for i, c := range cases {
		name := w.u.Name("bind" + string(rune('0'+i)))
		out, errOut, code := w.cli(t, "container", "create", "--image", w.image, "--name", name,
			"--volume", c.src+":/mnt/x", "--", "sleep", "60")
		okMsg := false
		for _, p := range c.protected {
			if strings.Contains(errOut, `bind mount denied - "`+c.src+`" exposes protected host path "`+p+`"`) {
				okMsg = true
			}
		}
		if code != 1 || out != "" || !okMsg || !strings.HasPrefix(errOut, "Error: ") {
			t.Errorf("%s (%s): exit %d, stdout %q, stderr %q", c.name, c.src, code, out, errOut)
		} else {
			t.Logf("refused %s: %s", c.name, strings.TrimSpace(errOut))
		}
		if got, _ := w.docker.Output(t.Context(), nil, "ps", "-aq", "--filter", "name=^"+name+"$"); got != "" {
			t.Errorf("%s: a container %s was left behind (%s)", c.name, name, got)
		}
	}
	ok := w.create(t, w.u.Name("bindok"), []string{"--volume", dir + ":/mnt/data:ro"}, "sleep", "60")
	if out, err := w.exec(t, ok.Name, "ls", "/mnt/data"); err != nil || strings.TrimSpace(out) != "innocent.sock" {
		t.Errorf("positive control: an innocuous bind: %q %v", out, err)
	}
	w.mustCLI(t, "container", "remove", "--name", ok.Name, "--force")
}

// The container commands against the real daemon: list, inspect (values
// redacted), stop (twice), remove (twice), and refusals for a container
// Outcall did not create.
func testContainerCLI(t *testing.T, w *world, a, peer managed) {
	out := w.mustCLI(t, "container", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if f := strings.Fields(lines[0]); !slices.Equal(f, []string{"NAME", "IMAGE", "STATE", "NETWORK", "CREATED"}) {
		t.Errorf("list header %q", lines[0])
	}
	for _, c := range []managed{a, peer} {
		found := false
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) == 5 && f[0] == c.Name && f[1] == w.image && f[2] == "running" && f[3] == api.DefaultNetworkName {
				if _, err := time.Parse(time.RFC3339, f[4]); err == nil {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("list does not show %s running on %s:\n%s", c.Name, api.DefaultNetworkName, out)
		}
	}
	if strings.Contains(out, "plain") {
		t.Errorf("list shows the container docker run made:\n%s", out)
	}

	out = w.mustCLI(t, "container", "inspect", "--name", a.Name)
	for _, want := range []string{"Container:    " + a.Name, "Image:        " + w.image, "State:        running",
		"Network:      " + api.DefaultNetworkName, "IP Address:   " + a.IP.String(), "Mounts:",
		// The daemon's own resolver file, and nothing else.
		"/resolv/" + api.DefaultNetworkName + ".conf:/etc/resolv.conf:ro",
		"Environment:", "  HTTP_PROXY=<redacted>", "  HTTPS_PROXY=<redacted>", "  NO_PROXY=<redacted>", "Created:"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, ":8080") || strings.Contains(out, "127.0.0.1") {
		t.Errorf("inspect shows an environment value:\n%s", out)
	}

	// Refusals for what Outcall did not create or does not know.
	plain := w.startPlain(t, "plain-cli", 201).Name
	for _, args := range [][]string{{"inspect", "--name", plain}, {"stop", "--name", plain}, {"remove", "--name", plain, "--force"}} {
		out, errOut, code := w.cli(t, append([]string{"container"}, args...)...)
		if code != 1 || out != "" || errOut != "Error: container \""+plain+"\" is not managed by outcalld\n" {
			t.Errorf("container %s of a docker-run container: exit %d %q %q", args[0], code, out, errOut)
		}
	}
	if st, _ := w.docker.Output(t.Context(), nil, "inspect", "--format", "{{.State.Status}}", plain); st != "running" {
		t.Errorf("the docker-run container is %q after the refusals, want running", st)
	}
	missing := w.u.Name("missing")
	if _, errOut, code := w.cli(t, "container", "inspect", "--name", missing); code != 1 || errOut != "Error: container \""+missing+"\" does not exist\n" {
		t.Errorf("inspect of a missing container: exit %d %q", code, errOut)
	}
	if _, errOut, code := w.cli(t, "container", "create", "--image", "outcall-test/absent:none", "--name", missing); code != 1 ||
		errOut != "Error: image \"outcall-test/absent:none\" not found locally — pull it first\n" {
		t.Errorf("create from an absent image: exit %d %q", code, errOut)
	}
	if _, errOut, code := w.cli(t, "container", "create", "--image", w.image, "--name", a.Name); code != 1 || !strings.Contains(errOut, "already in use") {
		t.Errorf("create with a taken name: exit %d %q", code, errOut)
	}
	if _, errOut, code := w.cli(t, "container", "create", "--image", w.image, "--network", "nosuch"+w.u.Prefix); code != 1 ||
		errOut != "Error: network \"outcall-nosuch"+w.u.Prefix+"\" does not exist\n" {
		t.Errorf("create on a missing network: exit %d %q", code, errOut)
	}

	// Stop, twice; remove, twice. A removed container's identity is gone
	// with it (its address is free for the next one).
	if out := w.mustCLI(t, "container", "stop", "--name", peer.Name, "--timeout", "1"); out != "Container \""+peer.Name+"\" stopped.\n" {
		t.Errorf("stop: %q", out)
	}
	if out := w.mustCLI(t, "container", "stop", "--name", peer.Name); out != "Container \""+peer.Name+"\" is not running (nothing to stop).\n" {
		t.Errorf("stop of a stopped container: %q", out)
	}
	out = w.mustCLI(t, "container", "list")
	if !slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool {
		f := strings.Fields(l)
		return len(f) == 5 && f[0] == peer.Name && f[2] == "exited"
	}) {
		t.Errorf("list after stop does not show %s exited:\n%s", peer.Name, out)
	}
	if _, errOut, code := w.cli(t, "container", "remove", "--name", a.Name); code != 1 ||
		errOut != "Error: container \""+a.Name+"\" is still running — stop it first or use force\n" {
		t.Errorf("remove of a running container without --force: exit %d %q", code, errOut)
	}
	if out := w.mustCLI(t, "container", "remove", "--name", peer.Name); out != "Container \""+peer.Name+"\" removed.\n" {
		t.Errorf("remove: %q", out)
	}
	if out := w.mustCLI(t, "container", "remove", "--name", peer.Name); out != "Container \""+peer.Name+"\" does not exist (nothing to remove).\n" {
		t.Errorf("remove of a removed container: %q", out)
	}
	if got, _ := w.docker.Output(t.Context(), nil, "ps", "-aq", "--filter", "name=^"+peer.Name+"$"); got != "" {
		t.Errorf("docker still has %s after remove", peer.Name)
	}
	waitFor(t, 10*time.Second, peer.Name+"'s identity released", func() bool {
		return !strings.Contains(w.mustCLI(t, "endpoint", "list"), peer.Name)
	})
	if out := w.mustCLI(t, "container", "remove", "--name", a.Name, "--force"); out != "Container \""+a.Name+"\" removed.\n" {
		t.Errorf("remove --force: %q", out)
	}
	if out := w.mustCLI(t, "container", "list"); out != "No agent containers found.\n" {
		t.Errorf("list with no managed containers: %q", out)
	}
}
