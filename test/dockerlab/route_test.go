package dockerlab

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The checker's verdicts on crafted lookups: no kernel, no root.
func TestJudgeRoot(t *testing.T) {
	const link = 7
	dst := netip.MustParseAddr("198.51.100.10")
	names := func(i int) string { return map[int]string{2: "eth0", 7: "octr", 1: "lo"}[i] }
	cases := []struct {
		name   string
		routes []netlink.Route
		want   string // "" accepts
	}{
		{"into the upstream", []netlink.Route{{Type: unix.RTN_UNICAST, LinkIndex: link, Gw: net.ParseIP(LinkUp.String())}}, ""},
		{"default route out of eth0", []netlink.Route{{Type: unix.RTN_UNICAST, LinkIndex: 2, Gw: net.ParseIP("192.0.2.1")}}, "leaves the root namespace by eth0"},
		{"the link, another gateway", []netlink.Route{{Type: unix.RTN_UNICAST, LinkIndex: link, Gw: net.ParseIP("198.18.255.253")}}, "not via the upstream"},
		{"on-link, no gateway", []netlink.Route{{Type: unix.RTN_UNICAST, LinkIndex: link}}, "not via the upstream"},
		{"local address", []netlink.Route{{Type: unix.RTN_LOCAL, LinkIndex: 1}}, "local destination"},
		{"blackhole", []netlink.Route{{Type: unix.RTN_BLACKHOLE}}, "blackhole"},
		{"no answer", nil, "0 routes"},
		{"two answers", []netlink.Route{{Type: unix.RTN_UNICAST, LinkIndex: link}, {Type: unix.RTN_UNICAST, LinkIndex: link}}, "2 routes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := judgeRoot(dst, c.routes, link, LinkUp, names)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

func TestJudgeUpstream(t *testing.T) {
	dst := netip.MustParseAddr("203.0.113.77")
	if err := judgeUpstream(dst, []netlink.Route{{Type: unix.RTN_LOCAL}}); err != nil {
		t.Fatalf("local address refused: %v", err)
	}
	for _, routes := range [][]netlink.Route{nil, {{Type: unix.RTN_UNICAST, LinkIndex: 3}}, {{Type: unix.RTN_UNREACHABLE}}} {
		if err := judgeUpstream(dst, routes); err == nil {
			t.Fatalf("%v accepted as an upstream address", routes)
		}
	}
}

// The test prefixes are what TESTING.md allows, and DockerBlock and the
// link lie inside them without overlapping the routed ones wrongly.
func TestRangesAllowed(t *testing.T) {
	allowed := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("198.18.0.0/15")}
	within := func(p netip.Prefix) bool {
		for _, a := range allowed {
			if a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
				return true
			}
		}
		return false
	}
	for _, p := range append(slices.Clone(TestPrefixes), DockerBlock, linkNet) {
		if !within(p) {
			t.Errorf("%s is outside the test ranges", p)
		}
	}
	if overlapsAny(DockerBlock, TestPrefixes) {
		t.Errorf("DockerBlock %s overlaps a prefix routed into the upstream namespace", DockerBlock)
	}
	if !linkNet.Contains(LinkRoot) || !linkNet.Contains(LinkUp) {
		t.Errorf("link addresses outside %s", linkNet)
	}
}
