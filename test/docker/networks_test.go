package docker

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/network"
	"outcall.dev/outcall/test/dockerlab"
)

// createdLine is what `outcall network create --name` prints.
var createdLine = regexp.MustCompile(`^Network "([^"]+)" created \(([0-9./]+)\)\.\n$`)

// TestNetworks (f): two networks made with `outcall network create`, each
// with its own bridge and Docker network and a container, cannot reach
// each other's containers or gateway, while each reaches its own; and the
// S002 edge cases a real engine shows: a subnet overlapping a Docker
// network is refused, create is idempotent, destroy is refused while a
// container is connected and, after its removal, destroys the bridge and
// the Docker network.
func TestNetworks(t *testing.T) {
	w := setUp(t)
	type net struct {
		suffix, name, bridge string
		subnet               netip.Prefix
		gw                   netip.Addr
		c                    managed
	}
	nets := []*net{{suffix: w.u.Prefix + "a"}, {suffix: w.u.Prefix + "b"}}
	for _, n := range nets {
		n.name = api.NetworkPrefix + n.suffix
		out := w.mustCLI(t, "network", "create", "--name", n.suffix)
		m := createdLine.FindStringSubmatch(out)
		if m == nil || m[1] != n.name {
			t.Fatalf("network create printed %q", out)
		}
		n.subnet = netip.MustParsePrefix(m[2])
		n.gw = n.subnet.Addr().Next()
		if !w.block.Contains(n.subnet.Addr()) || n.subnet.Overlaps(w.subnet) {
			t.Fatalf("%s got %s: want a fresh /24 of %s", n.name, n.subnet, w.block)
		}
		n.bridge = network.BridgeName(n.name)
		if _, err := netlink.LinkByName(n.bridge); err != nil {
			t.Fatalf("bridge %s of %s: %v", n.bridge, n.name, err)
		}
		got := w.docker.Must(t, "network", "inspect", "--format",
			`{{.Driver}} {{index .Options "com.docker.network.bridge.name"}} {{range .IPAM.Config}}{{.Subnet}}{{end}} {{index .Labels "managed-by"}}`, n.name)
		if want := "bridge " + n.bridge + " " + n.subnet.String() + " outcalld"; got != want {
			t.Errorf("docker network %s: %q, want %q", n.name, got, want)
		}
		if out := w.mustCLI(t, "network", "create", "--name", n.suffix); out != fmt.Sprintf("Network %q already exists.\n", n.name) {
			t.Errorf("second create of %s: %q", n.name, out)
		}
		n.c = w.create(t, w.u.Name("c"+n.suffix[len(n.suffix)-1:]), []string{"--network", n.suffix}, "nc", "-ll", "-p", "7000", "-e", "echo", "peer")
		if n.c.Network != n.name || !n.subnet.Contains(n.c.IP) {
			t.Fatalf("container %s is on %s at %s, want %s in %s", n.c.Name, n.c.Network, n.c.IP, n.name, n.subnet)
		}
		t.Logf("network %s: %s, gateway %s, bridge %s, container %s at %s", n.name, n.subnet, n.gw, n.bridge, n.c.Name, n.c.IP)
	}
	a, b := nets[0], nets[1]

	// Isolation, both ways. Controls: each container's own gateway
	// answers it, and each listener answers inside its container.
	for _, pair := range [][2]*net{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		if got := w.dnsFrom(t, from.c.Name, netip.AddrPortFrom(from.gw, 53), "web.test"); got != "NOERROR "+webAddr.Addr().String() {
			t.Fatalf("positive control: %s's own gateway resolves web.test: %q", from.c.Name, got)
		}
		if out, err := w.exec(t, to.c.Name, "timeout", "2", "probe", "tcp", "127.0.0.1:7000"); err != nil || strings.TrimSpace(out) != "peer" {
			t.Fatalf("positive control: %s's listener: %q %v", to.c.Name, out, err)
		}
		if ok, out := w.tcpFrom(t, from.c.Name, netip.AddrPortFrom(to.c.IP, peerPort)); ok {
			t.Errorf("%s reached %s's container %s: %q", from.name, to.name, to.c.IP, out)
		}
		if got := w.dnsFrom(t, from.c.Name, netip.AddrPortFrom(to.gw, 53), "web.test"); got != "" {
			t.Errorf("%s's container got an answer from %s's gateway DNS: %q", from.name, to.name, got)
		}
		if ok, out := w.tcpFrom(t, from.c.Name, netip.AddrPortFrom(to.gw, 8080)); ok {
			t.Errorf("%s's container reached %s's proxy: %q", from.name, to.name, out)
		}
		// The default network's gateway is another network's too.
		if got := w.dnsFrom(t, from.c.Name, netip.AddrPortFrom(w.gw, 53), "web.test"); got != "" {
			t.Errorf("%s's container got an answer from the default network's gateway: %q", from.name, got)
		}
	}

	out := w.mustCLI(t, "network", "list")
	for _, n := range nets {
		if !strings.Contains(out, n.name) || !strings.Contains(out, n.subnet.String()) {
			t.Errorf("network list lacks %s %s:\n%s", n.name, n.subnet, out)
		}
	}
	out = w.mustCLI(t, "network", "status", "--name", a.suffix)
	for _, want := range []string{"Network:      " + a.name, "Subnet:       " + a.subnet.String(), "Gateway:      " + a.gw.String(), "Containers:   1", a.c.Name, a.c.IP.String()} {
		if !strings.Contains(out, want) {
			t.Errorf("network status lacks %q:\n%s", want, out)
		}
	}

	// Subnets Docker networks (not Outcall's) already use: a bridge
	// network's, whose gateway address is the host's, and a macvlan
	// network's, of which the host has neither address nor route, so that
	// only the Docker check can see it.
	third := w.block.Addr().As4()
	third[2] = 250
	bridged := w.u.Network(t, "foreign", netip.PrefixFrom(netip.AddrFrom4(third), 24))
	third[2] = 251
	macvlan := macvlanNetwork(t, w, netip.PrefixFrom(netip.AddrFrom4(third), 24))
	for i, sub := range []netip.Prefix{bridged.Subnet, macvlan} {
		suffix := w.u.Prefix + "c" + strconv.Itoa(i)
		_, errOut, code := w.cli(t, "network", "create", "--name", suffix, "--subnet", sub.String())
		if code != 1 || !strings.Contains(errOut, sub.String()) || !strings.Contains(errOut, "overlaps") && !strings.Contains(errOut, "an address of this host") {
			t.Errorf("create on %s, which a Docker network uses: exit %d %q", sub, code, errOut)
		} else {
			t.Logf("overlap with a Docker network refused: %s", strings.TrimSpace(errOut))
		}
		if _, err := w.docker.Output(t.Context(), nil, "network", "inspect", api.NetworkPrefix+suffix); err == nil {
			t.Errorf("the refused create left a Docker network")
		}
		if _, err := netlink.LinkByName(network.BridgeName(api.NetworkPrefix + suffix)); err == nil {
			t.Errorf("the refused create left a bridge")
		}
	}
	_, errOut, _ := w.cli(t, "network", "create", "--name", w.u.Prefix+"c1", "--subnet", macvlan.String())
	if !strings.Contains(errOut, "of a Docker network") {
		t.Errorf("the macvlan network's subnet was not refused as a Docker network's: %q", errOut)
	}

	// Destroy: refused with a container connected, done after its
	// removal, and then nothing to destroy.
	_, errOut, code := w.cli(t, "network", "destroy", "--name", a.suffix)
	if code != 1 || !strings.Contains(errOut, "still connected") || !strings.Contains(errOut, a.c.Name) {
		t.Errorf("destroy of %s with %s connected: exit %d %q", a.name, a.c.Name, code, errOut)
	} else {
		t.Logf("destroy refused: %s", strings.TrimSpace(errOut))
	}
	if _, err := netlink.LinkByName(a.bridge); err != nil {
		t.Errorf("the refused destroy removed the bridge: %v", err)
	}
	w.mustCLI(t, "container", "remove", "--name", a.c.Name, "--force")
	if out := w.mustCLI(t, "network", "destroy", "--name", a.suffix); out != fmt.Sprintf("Network %q destroyed.\n", a.name) {
		t.Errorf("destroy: %q", out)
	}
	if _, err := w.docker.Output(t.Context(), nil, "network", "inspect", a.name); err == nil {
		t.Errorf("Docker network %s is still there after destroy", a.name)
	}
	if _, err := netlink.LinkByName(a.bridge); err == nil {
		t.Errorf("bridge %s is still there after destroy", a.bridge)
	}
	if out := w.mustCLI(t, "network", "destroy", "--name", a.suffix); out != fmt.Sprintf("Network %q does not exist (nothing to destroy).\n", a.name) {
		t.Errorf("second destroy: %q", out)
	}
	if out := w.mustCLI(t, "network", "status", "--name", a.suffix); out != fmt.Sprintf("Network %q does not exist.\n", a.name) {
		t.Errorf("status after destroy: %q", out)
	}
	// The other network is untouched: its container still resolves.
	if got := w.dnsFrom(t, b.c.Name, netip.AddrPortFrom(b.gw, 53), "web.test"); got != "NOERROR "+webAddr.Addr().String() {
		t.Errorf("%s after %s was destroyed: %q", b.name, a.name, got)
	}
}

// macvlanNetwork creates a Docker macvlan network on subnet, over a veth
// of the session, and registers the removal of both first: a Docker
// network that gives the host no address and no route.
func macvlanNetwork(t *testing.T, w *world, subnet netip.Prefix) netip.Prefix {
	t.Helper()
	parent := w.u.Prefix + "m"
	name := w.u.Name("macvlan")
	t.Cleanup(func() {
		_, _ = w.docker.Output(context.Background(), nil, "network", "rm", name)
		_ = exec.Command("ip", "link", "del", parent).Run()
	})
	w.u.Lab.Run("ip", "link", "add", parent, "type", "veth", "peer", "name", w.u.Prefix+"n")
	w.docker.Must(t, "network", "create", "--driver", "macvlan", "--subnet", subnet.String(),
		"--opt", "parent="+parent, "--label", dockerlab.LabelSession+"="+w.u.Prefix, name)
	return subnet
}
