package netrange

import (
	"net/netip"
	"testing"
)

func TestRestricted(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"169.254.169.254", true},
		{"10.200.0.11", true},
		{"127.0.0.1", true},
		{"255.255.255.255", true},
		{"0.0.0.0", true},
		{"100.64.1.1", true},
		{"224.0.0.251", true},
		{"172.31.255.255", true},
		{"172.32.0.1", false},
		{"198.51.100.10", false},
		{"192.0.2.1", false},
		{"203.0.113.77", false},
	} {
		if got := IsRestricted(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("IsRestricted(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

func TestLicenses(t *testing.T) {
	for _, tc := range []struct {
		named, addr string
		want        bool
	}{
		{"10.20.0.0/16", "10.20.0.5", true},
		{"10.0.0.0/8", "10.20.0.5", true},
		{"0.0.0.0/0", "10.20.0.5", false},
		{"10.0.0.0/7", "10.20.0.5", false},
		{"10.20.0.0/16", "10.21.0.5", false},
		{"169.254.169.254/32", "169.254.169.254", true},
		{"0.0.0.0/0", "198.51.100.1", true},
	} {
		if got := Licenses(netip.MustParsePrefix(tc.named), netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("Licenses(%s, %s) = %v, want %v", tc.named, tc.addr, got, tc.want)
		}
	}
}

func TestRangeOfAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want string // "" = not restricted
	}{
		{"8.8.8.8", ""},
		{"10.1.2.3", "10.0.0.0/8"},
		{"::", "::/128"},
		{"::1", "::1/128"},
		{"::ffff:8.8.8.8", "::ffff:0.0.0.0/96"},
		{"::8.8.8.8", "::/96"},
		{"fe80::1", "fe80::/10"},
		{"fd00::1", "fc00::/7"},
		{"fec0::1", "fec0::/10"},
		{"ff02::1", "ff00::/8"},
		{"2001:db8::1", "2001:db8::/32"},
		{"2001:0:1::1", "2001::/32"},
		{"64:ff9b::a00:1", "64:ff9b::/96"}, // NAT64 of 10.0.0.1
		{"64:ff9b::808:808", ""},           // NAT64 of 8.8.8.8
		{"2002:c0a8:101::1", "2002::/16"},  // 6to4 of 192.168.1.1
		{"2002:808:808::1", ""},            // 6to4 of 8.8.8.8
		{"2606:4700:4700::1111", ""},       // public
		{"fe80::1%eth0", "fe80::/10"},      // zone ignored
		{"2001:4860:4860::8888", ""},       // public, not Teredo
	} {
		p, ok := RangeOfAddr(netip.MustParseAddr(tc.addr))
		if got := map[bool]string{true: p.String(), false: ""}[ok]; got != tc.want {
			t.Errorf("RangeOfAddr(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	if _, ok := RangeOfAddr(netip.Addr{}); ok {
		t.Error("the zero Addr is restricted; want not")
	}
	// RangeOf keeps its IPv4-only meaning.
	if _, ok := RangeOf(netip.MustParseAddr("::1")); ok {
		t.Error("RangeOf(::1) changed: want not restricted (IPv4 only)")
	}
}
