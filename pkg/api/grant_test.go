package api

import (
	"strings"
	"testing"
)

func TestParseGrantDestination(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "203.0.113.10", want: "203.0.113.10"},
		{in: "203.0.113.0/24", want: "203.0.113.0/24"},
		{in: "203.0.113.10/32", want: "203.0.113.10/32"},
		{in: "0.0.0.0/0", want: "0.0.0.0/0"},
		{in: "Example.COM.", want: "example.com"},
		{in: "pypi.org", want: "pypi.org"},
		{in: "a_b.example", want: "a_b.example"},
		{in: "192.168.0.1/24", err: "canonical form (192.168.0.0/24)"},
		{in: "2001:db8::1", err: "only IPv4"},
		{in: "fe80::1%eth0", err: "only IPv4"},
		{in: "2001:db8::/32", err: "only IPv4"},
		{in: "10.0.0.0/33", err: "not an IPv4 address, CIDR or host name"},
		{in: "10.0.0", err: "not an IPv4 address, CIDR or host name"},
		{in: "010.0.0.1", err: "not an IPv4 address, CIDR or host name"},
		{in: "-bad.example", err: "not an IPv4 address"},
		{in: "bad..example", err: "not an IPv4 address"},
		{in: "sp ace.example", err: "not an IPv4 address"},
		{in: strings.Repeat("a", 64) + ".example", err: "not an IPv4 address"},
		{in: "", err: "need an IPv4 address"},
	} {
		d, err := ParseGrantDestination(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseGrantDestination(%q) = %v, %v; want an error containing %q", tc.in, d, err, tc.err)
			}
			continue
		}
		if err != nil || d.String() != tc.want {
			t.Errorf("ParseGrantDestination(%q) = %q, %v; want %q", tc.in, d, err, tc.want)
		}
	}
}
