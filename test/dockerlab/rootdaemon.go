package dockerlab

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/network"
)

// An outcalld under test in the root namespace, where Docker is: one at a
// time (its nftables tables are the namespace's), so every package that
// runs one holds the machine lock RootLock for as long as it does, and
// names what it makes after its session prefix: bridge <prefix>o, pins
// /sys/fs/bpf/<prefix>-od. PreflightRoot knows crashed runs by that.

// RootLock is the machine lock of the root namespace's outcalld.
const RootLock = "root-outcalld"

// RootLockWait bounds the wait for another package's outcalld to end.
const RootLockWait = 5 * time.Minute

// NFTTables are the tables outcalld makes in its network namespace.
var NFTTables = [][2]string{{"inet", "outcall"}, {"bridge", "outcall"}, {"arp", "outcall"}}

// PreflightRoot makes the root namespace ready for an outcalld, the
// machine lock RootLock held: it refuses to run beside an outcalld running
// here, or beside a default Docker network that is not a crashed session's,
// and removes what crashed sessions left (the default Docker network, the
// outcall-<prefix>... networks, their bridges and pins, the nftables
// tables).
func PreflightRoot(t testing.TB, d *Docker) {
	t.Helper()
	if OutcalldInRootNS() {
		t.Fatal("an outcalld runs in the root network namespace: refusing to run beside it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := d.Output(ctx, nil, "network", "inspect", "--format",
		`{{index .Options "com.docker.network.bridge.name"}}`, api.DefaultNetworkName); err == nil {
		bridge := strings.TrimSpace(out)
		p, ok := strings.CutSuffix(bridge, "o")
		if !ok || !IsPrefix(p) || Alive(p) {
			t.Fatalf("a Docker network %s on bridge %q exists that is not a crashed test run's: refusing to run (remove it, or stop the outcalld that made it)", api.DefaultNetworkName, bridge)
		}
		t.Logf("removing %s (bridge %s) of the crashed session %s", api.DefaultNetworkName, bridge, p)
		if _, err := d.Output(ctx, nil, "network", "rm", api.DefaultNetworkName); err != nil {
			t.Fatal(err)
		}
		_ = exec.Command("ip", "link", "del", bridge).Run()
		_ = os.RemoveAll("/sys/fs/bpf/" + p + "-od")
	}
	// Networks of crashed sessions: outcall-<prefix>... and their bridges.
	out, _ := d.Output(ctx, nil, "network", "ls", "--format", "{{.Name}}")
	for _, name := range strings.Fields(out) {
		rest, ok := strings.CutPrefix(name, api.NetworkPrefix)
		if !ok || len(rest) < 9 || !IsPrefix(rest[:9]) || Alive(rest[:9]) {
			continue
		}
		t.Logf("removing %s of the crashed session %s", name, rest[:9])
		_, _ = d.Output(ctx, nil, "network", "rm", name)
		_ = exec.Command("ip", "link", "del", network.BridgeName(name)).Run()
	}
	// No outcalld runs here and the machine lock is held: tables left
	// are a crashed run's.
	for _, tb := range NFTTables {
		if exec.Command("nft", "list", "table", tb[0], tb[1]).Run() == nil {
			t.Logf("removing the leftover nftables table %s %s", tb[0], tb[1])
			_ = exec.Command("nft", "delete", "table", tb[0], tb[1]).Run()
		}
	}
}

// OutcalldInRootNS reports whether a process called outcalld runs in this
// network namespace.
func OutcalldInRootNS() bool {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return false
	}
	dirs, _ := os.ReadDir("/proc")
	for _, e := range dirs {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "outcalld" {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && ns == self {
			return true
		}
	}
	return false
}

// FreeBlock picks a 10.x.0.0/16 for --subnet-block that no route or
// address of the root namespace and no Docker network uses (10.200 and
// 10.201, the labs' defaults, never). The seed is printed.
func FreeBlock(t testing.TB, d *Docker) netip.Prefix {
	t.Helper()
	seed := time.Now().UnixNano()
	t.Logf("subnet block seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	var used []netip.Prefix
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatalf("list routes: %v", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		if a, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok && ones > 0 {
			used = append(used, netip.PrefixFrom(a, ones).Masked())
		}
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("list addresses: %v", err)
	}
	for _, a := range addrs {
		if p, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			ones, _ := a.Mask.Size()
			used = append(used, netip.PrefixFrom(p, ones).Masked())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ids, err := d.Output(ctx, nil, "network", "ls", "--quiet", "--no-trunc")
	if err != nil {
		t.Fatal(err)
	}
	if ids = strings.TrimSpace(ids); ids != "" {
		out, err := d.Output(ctx, nil, append([]string{"network", "inspect", "--format",
			"{{range .IPAM.Config}}{{.Subnet}} {{end}}"}, strings.Fields(ids)...)...)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range strings.Fields(out) {
			if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
				used = append(used, p.Masked())
			}
		}
	}
	for range 100 {
		x := 16 + rng.IntN(235)
		if x == 200 || x == 201 {
			continue
		}
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(x), 0, 0}), 16)
		free := true
		for _, q := range used {
			if p.Overlaps(q) {
				free = false
				break
			}
		}
		if free {
			return p
		}
	}
	t.Fatal("no free 10.x.0.0/16 for --subnet-block")
	return netip.Prefix{}
}
