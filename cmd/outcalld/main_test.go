package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestDefaultGateway(t *testing.T) {
	tests := []struct {
		block, want, err string
	}{
		{"10.200.0.0/16", "10.200.0.1/24", ""},
		{"172.20.0.0/16", "172.20.0.1/24", ""},
		{"192.168.8.0/24", "192.168.8.1/24", ""},
		{"10.200.0.1/16", "", "canonical"},
		{"10.200.0.0/25", "", "/24 or larger"},
		{"8.8.0.0/16", "", "RFC 1918"},
		{"172.0.0.0/8", "", "RFC 1918"},
		{"fd00::/8", "", "IPv4"},
		{"nope", "", "not a CIDR"},
	}
	for _, tt := range tests {
		got, err := defaultGateway(tt.block)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("defaultGateway(%q) = %v, %v; want error with %q", tt.block, got, err, tt.err)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("defaultGateway(%q) = %v, %v; want %s", tt.block, got, err, tt.want)
		}
	}
}

// TestBadFlags: each is refused with exit 2 and a message naming the flag,
// before the daemon touches anything (it never gets to check privileges).
func TestBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--bridge", "a-very-long-bridge-name"}, "--bridge"},
		{[]string{"--bridge", "bad/name"}, "--bridge"},
		{[]string{"--socket", "relative.sock"}, "--socket"},
		{[]string{"--dns-port", "0"}, "--dns-port"},
		{[]string{"--proxy-addr", "10.200.0.1"}, "--proxy-addr"},
		{[]string{"--proxy-addr", "10.200.0.1:0"}, "--proxy-addr"},
		{[]string{"--subnet-block", "10.0.0.0/30"}, "--subnet-block"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--dns-listen", "192.0.2.1"}, "--dns-listen: 192.0.2.1 is not the default network's gateway 10.200.0.1"},
		{[]string{"--dns-listen", "nope"}, "--dns-listen"},
		{[]string{"--dns-upstream", "192.0.2.53:53,bad"}, "--dns-upstream"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		if code := run(tt.args, &stderr); code != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("outcalld %v: exit %d, stderr %q; want exit 2 naming %s", tt.args, code, stderr.String(), tt.want)
		}
	}
}
