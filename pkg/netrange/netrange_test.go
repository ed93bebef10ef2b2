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
