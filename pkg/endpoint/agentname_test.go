package endpoint

import (
	"strings"
	"testing"
)

// TestAgentName is S013-FR-004, EC-003..005, SC-006 and the [impl] facts.
func TestAgentName(t *testing.T) {
	long := "a" + strings.Repeat("b", 120)
	tests := []struct{ in, want string }{
		{"foobar-1", "foobar"},
		{"foobar-2", "foobar"},
		{"my-agent-12", "my-agent"},
		{"standalone", "standalone"},
		{"myagent", "myagent"},
		{"agent-0", "agent"},
		{"project-001", "project"},
		{"project-", "project-"},
		{"project-final", "project-final"},
		{"project-1a", "project-1a"},
		{"a-1-2", "a-1"},
		{"outcall-a3f7b201", "outcall-a3f7b201"}, // hex, not all digits
		{"outcall-12345678", "outcall"},          // why NewName never generates it
		{"/foobar-1", "foobar"},                  // Docker's inspect spelling
		{long + "-1", long},                      // no truncation (EC-005)
		{"-1", "-1"},                             // never empty
		{"1", "1"},
		{"", ""},
		{"a--1", "a-"},
		{"a-١", "a-١"}, // only ASCII digits count
	}
	for _, tt := range tests {
		if got := AgentName(tt.in); got != tt.want {
			t.Errorf("AgentName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestEndpointAgentName: a container's endpoint carries the derived name
// to every layer; an operator's endpoint keeps the name it was given.
func TestEndpointAgentName(t *testing.T) {
	for _, tc := range []struct {
		e    Endpoint
		want string
	}{
		{Endpoint{Name: "foobar-1", Origin: OriginDocker}, "foobar"},
		{Endpoint{Name: "foobar-2", Origin: OriginDocker}, "foobar"},
		{Endpoint{Name: "standalone", Origin: OriginDocker}, "standalone"},
		{Endpoint{Name: "web-1", Origin: OriginOperator}, "web-1"},
		{Endpoint{Name: "web-1"}, "web-1"},
	} {
		if got := tc.e.AgentName(); got != tc.want {
			t.Errorf("%+v: agent name %q, want %q", tc.e, got, tc.want)
		}
	}
}
