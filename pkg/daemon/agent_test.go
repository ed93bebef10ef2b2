package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/api"
)

// TestAgentAPIStartsLastStopsFirst: the agent API is up only while the host
// API is (it starts after and stops before it, S004 §1.5), it runs without
// Docker, refuses a peer that is no managed container in the envelope,
// and its socket (0666) is gone when Run returns.
func TestAgentAPIStartsLastStopsFirst(t *testing.T) {
	td := newTestDaemon(t)
	td.cfg.AgentSocket = filepath.Join(filepath.Dir(td.cfg.Socket), "agent", "agent.sock")
	if err := td.buildAgent(); err != nil || td.agent == nil {
		t.Fatalf("buildAgent: %v", err)
	}
	// up: the socket answers HTTP (a bound socket whose server does not
	// run yet accepts connections into its backlog but answers nothing).
	up := func(path string) bool {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Write([]byte("GET /none HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
			return false
		}
		buf := make([]byte, 12)
		n, _ := io.ReadFull(c, buf)
		return n == 12 && strings.HasPrefix(string(buf), "HTTP/1.1 ")
	}
	var agentSeen, violations atomic.Int64
	stopProbe := make(chan struct{})
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		for {
			select {
			case <-stopProbe:
				return
			default:
			}
			// The agent's up-time is one interval; if it is up before and
			// after the host probe, it was up during it, and so must the
			// host API be.
			before := up(td.cfg.AgentSocket)
			host := up(td.cfg.Socket)
			after := up(td.cfg.AgentSocket)
			if before && after {
				agentSeen.Add(1)
				if !host {
					violations.Add(1)
				}
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- td.Run(ctx) }()
	waitUntil(t, "the agent API", func() bool { return agentSeen.Load() > 0 })

	fi, err := os.Lstat(td.cfg.AgentSocket)
	if err != nil || fi.Mode().Perm() != 0o666 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("agent socket %v, %v; want a 0666 socket", fi, err)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", td.cfg.AgentSocket)
	}}}
	resp, err := client.Post("http://agent"+api.AgentRouteCheckin, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || strings.TrimSpace(string(b)) != `{"success":false,"error":"check-in rejected: peer is not a managed container"}` {
		t.Errorf("check-in from the test process: %d %s", resp.StatusCode, b)
	}
	client.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	close(stopProbe)
	<-probeDone
	if n := violations.Load(); n > 0 {
		t.Errorf("the agent API answered %d times while the host API did not", n)
	}
	if _, err := os.Lstat(td.cfg.AgentSocket); !os.IsNotExist(err) {
		t.Errorf("agent socket left after Run: %v", err)
	}
}

func TestValidateAgentSettings(t *testing.T) {
	base := func() Config {
		dir := t.TempDir()
		c := newTestDaemon(t).cfg
		c.Socket = filepath.Join(dir, "host.sock")
		c.AgentSocket = filepath.Join(dir, "agent.sock")
		return c
	}
	if err := base().Validate(); err != nil {
		t.Fatalf("positive control: %v", err)
	}
	tests := map[string]func(*Config){
		"--agent-socket: \"agent.sock\" must be an absolute path": func(c *Config) { c.AgentSocket = "agent.sock" },
		"is the host API socket (--socket)":                       func(c *Config) { c.AgentSocket = c.Socket },
		"is the host API socket (--socket); they must differ":     func(c *Config) { c.AgentSocket = filepath.Dir(c.Socket) + "/./x/../host.sock" },
		"--agent-timeout-secs: 5m1s":                              func(c *Config) { c.AgentTimeout = 301 * time.Second },
		"--agent-timeout-secs: 1.5s":                              func(c *Config) { c.AgentTimeout = 1500 * time.Millisecond },
		"--agent-perm-rate: count 0":                              func(c *Config) { c.AgentPermRate.Window = time.Second },
		"--agent-rule-rate: window 0s":                            func(c *Config) { c.AgentRuleRate.Count = 1 },
	}
	for want, tweak := range tests {
		c := base()
		tweak(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want %q", err, want)
		}
	}
}
