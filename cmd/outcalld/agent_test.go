package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/agentapi"
	"outcall.dev/outcall/pkg/daemon"
)

// TestAgentFlagsRefused: a malformed agent API value stops startup (exit
// 2) naming the flag as given.
func TestAgentFlagsRefused(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--agent-perm-rate", "100"}, "--agent-perm-rate"},
		{[]string{"--agent-perm-rate", "100/10/2"}, "--agent-perm-rate"},
		{[]string{"--agent-rule-rate", "0/10"}, "--agent-rule-rate"},
		{[]string{"--agent-rule-rate", "10/86401"}, "--agent-rule-rate"},
		{[]string{"--agent-timeout-secs", "0"}, "--agent-timeout-secs"},
		{[]string{"--agent-timeout-secs", "2s"}, "--agent-timeout-secs"},
		{[]string{"--agent-timeout", "301"}, "--agent-timeout:"},
		{[]string{"--agent-socket", "relative.sock"}, "--agent-socket"},
		{[]string{"--agent-socket-host-path", "/run/outcall/host.sock"}, "--agent-socket: /run/outcall/host.sock is the host API socket"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		args := append([]string{"--dns-upstream", "192.0.2.53"}, tt.args...)
		if code := run(args, &stderr); code != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("outcalld %v: exit %d, stderr %q; want exit 2 naming %s", tt.args, code, stderr.String(), tt.want)
		}
	}
}

// TestAgentFlagAliases: --agent-socket-host-path and --agent-timeout set
// what --agent-socket and --agent-timeout-secs do; defaults are the
// spec's.
func TestAgentFlagAliases(t *testing.T) {
	parse := func(args ...string) daemon.Config {
		t.Helper()
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		var cfg daemon.Config
		fs.StringVar(&cfg.AgentSocket, "agent-socket", "/run/outcall/agent.sock", "")
		fs.StringVar(&cfg.AgentSocket, "agent-socket-host-path", "/run/outcall/agent.sock", "")
		timeout := fs.String("agent-timeout-secs", "5", "")
		fs.Var(aliasOf{timeout}, "agent-timeout", "")
		perm := fs.String("agent-perm-rate", "100/10", "")
		rule := fs.String("agent-rule-rate", "10/60", "")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := agentFlags(&cfg, fs, *timeout, *perm, *rule); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	d := parse()
	if d.AgentSocket != "/run/outcall/agent.sock" || d.AgentTimeout != 5*time.Second ||
		d.AgentPermRate != (agentapi.Rate{Count: 100, Window: 10 * time.Second}) || d.AgentRuleRate != (agentapi.Rate{Count: 10, Window: time.Minute}) {
		t.Errorf("defaults %+v", d)
	}
	a := parse("--agent-socket-host-path", "/tmp/a.sock", "--agent-timeout", "7", "--agent-perm-rate", "5/1")
	if a.AgentSocket != "/tmp/a.sock" || a.AgentTimeout != 7*time.Second || a.AgentPermRate.Count != 5 {
		t.Errorf("aliases %+v", a)
	}
	b := parse("--agent-socket", "/tmp/b.sock", "--agent-timeout-secs", "300")
	if b.AgentSocket != "/tmp/b.sock" || b.AgentTimeout != 300*time.Second {
		t.Errorf("flags %+v", b)
	}
}
