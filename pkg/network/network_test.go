package network

import (
	"net/netip"
	"strings"
	"testing"
)

func TestFullName(t *testing.T) {
	for _, tc := range []struct {
		suffix *string
		want   string // or the error's text
		bad    bool
	}{
		{nil, "outcall-default", false},
		{ptr("staging"), "outcall-staging", false},
		{ptr("a_b-9"), "outcall-a_b-9", false},
		{ptr(strings.Repeat("x", 64)), "outcall-" + strings.Repeat("x", 64), false},
		{ptr(""), "must be 1-64 characters", true},
		{ptr(strings.Repeat("x", 65)), "must be 1-64 characters", true},
		{ptr("a.b"), `character '.' not allowed`, true},
		{ptr("a/b"), `character '/' not allowed`, true},
	} {
		got, err := FullName(tc.suffix)
		if tc.bad {
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("FullName(%q) = %q, %v; want an error containing %q", *tc.suffix, got, err, tc.want)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("FullName = %q, %v; want %q", got, err, tc.want)
		}
	}
}

func TestBridgeName(t *testing.T) {
	a, b := BridgeName("outcall-staging"), BridgeName("outcall-"+strings.Repeat("x", 64))
	if a != BridgeName("outcall-staging") {
		t.Fatal("BridgeName is not deterministic")
	}
	if a == b || a == BridgeName("outcall-prod") {
		t.Fatal("two networks share a bridge name")
	}
	for _, n := range []string{a, b} {
		if len(n) > 15 {
			t.Errorf("bridge name %q is longer than IFNAMSIZ-1", n)
		}
	}
}

func TestCheckSubnet(t *testing.T) {
	for _, tc := range []struct {
		subnet  string
		gateway *string
		want    string // the gateway prefix, or the error's text
	}{
		{"10.200.5.0/24", nil, "10.200.5.1/24"},
		{"192.168.7.0/30", nil, "192.168.7.1/30"},
		{"172.20.0.0/16", ptr("172.20.9.9"), "172.20.9.9/16"},
		{"10.200.5.1/24", nil, "host bits are set (did you mean 10.200.5.0/24?)"},
		{"10.200.5.0/31", nil, "at most /30"},
		{"8.8.8.0/24", nil, "must lie inside one of"},
		{"172.0.0.0/8", nil, "must lie inside one of"}, // crosses 172.16/12
		{"fd00::/64", nil, "need an IPv4 CIDR"},
		{"nonsense", nil, "need an IPv4 CIDR"},
		{"10.200.5.0/24", ptr("10.200.5.0"), "not a usable address"},
		{"10.200.5.0/24", ptr("10.200.5.255"), "not a usable address"},
		{"10.200.5.0/24", ptr("10.200.6.1"), "not a usable address"},
		{"10.200.5.0/24", ptr("x"), "need an IPv4 address"},
	} {
		got, err := CheckSubnet(tc.subnet, tc.gateway)
		if err != nil {
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckSubnet(%s) = %v, want %q", tc.subnet, err, tc.want)
			}
			continue
		}
		if got.String() != tc.want {
			t.Errorf("CheckSubnet(%s) = %s, want %s", tc.subnet, got, tc.want)
		}
	}
}

func TestCheckSubnetBlock(t *testing.T) {
	for block, want := range map[string]string{
		"10.200.0.0/16":  "",
		"10.201.0.0/16":  "",
		"192.168.0.0/24": "",
		"10.200.0.1/16":  "host bits",
		"10.200.0.0/25":  "smaller than a /24",
		"100.64.0.0/16":  "not inside one of",
		"172.0.0.0/8":    "not inside one of",
	} {
		err := CheckSubnetBlock(netip.MustParsePrefix(block))
		if (want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("CheckSubnetBlock(%s) = %v, want %q", block, err, want)
		}
	}
}

func TestAllocate(t *testing.T) {
	block := netip.MustParsePrefix("10.200.0.0/16")
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		used []netip.Prefix
		want string
	}{
		{nil, "10.200.0.1/24"},
		{[]netip.Prefix{p("10.200.0.0/24")}, "10.200.1.1/24"},
		{[]netip.Prefix{p("10.200.0.0/23"), p("10.200.3.7/32")}, "10.200.2.1/24"}, // a wider and a narrower overlap
		{[]netip.Prefix{p("10.0.0.0/8")}, "no available subnets in 10.200.0.0/16"},
	} {
		got, err := Allocate(block, tc.used)
		if err != nil {
			if err.Error() != tc.want {
				t.Errorf("Allocate(%v) = %v, want %q", tc.used, err, tc.want)
			}
			continue
		}
		if got.String() != tc.want {
			t.Errorf("Allocate(%v) = %s, want %s", tc.used, got, tc.want)
		}
	}
	// Every slot but the last used: the last one is found.
	var used []netip.Prefix
	for i := range 255 {
		used = append(used, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i), 0}), 24))
	}
	if got, err := Allocate(block, used); err != nil || got.String() != "10.200.255.1/24" {
		t.Fatalf("Allocate with 255 slots used = %v, %v; want 10.200.255.1/24", got, err)
	}
	if _, err := Allocate(p("192.168.4.0/24"), []netip.Prefix{p("192.168.4.0/24")}); err == nil || err.Error() != "no available subnets in 192.168.4.0/24" {
		t.Fatalf("a one-slot block, used: %v", err)
	}
}
