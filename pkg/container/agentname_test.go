package container

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
