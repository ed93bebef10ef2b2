package container

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"

	"outcall.dev/outcall/pkg/api"
)

func TestRedactEnv(t *testing.T) {
	tests := []struct{ in, want []string }{
		{nil, []string{}},
		{[]string{"HTTP_PROXY=http://10.200.0.1:8080"}, []string{"HTTP_PROXY=<redacted>"}},
		{[]string{"TOKEN=a=b=c", "EMPTY=", "BARE"}, []string{"TOKEN=<redacted>", "EMPTY=<redacted>", "BARE=<redacted>"}},
	}
	for _, tt := range tests {
		if got := RedactEnv(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("RedactEnv(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestInspect is S008-FR-015, AS-007: names, never values; the address on
// the declared network only; mounts as source:destination[:ro].
func TestInspect(t *testing.T) {
	const secret = "sk-ant-secret-value"
	in := container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{
			ID: "a1b2", Name: "/outcall-a3f7b201", Created: "2026-04-21T14:30:00.123456789Z",
			State: &container.State{Status: container.StateRunning},
		},
		Config: &container.Config{
			Image:  "my-agent:latest",
			Env:    []string{"ANTHROPIC_API_KEY=" + secret, "HTTP_PROXY=http://10.200.0.1:8080"},
			Cmd:    []string{"--token", secret},
			Labels: map[string]string{api.LabelManagedBy: api.LabelManagedByValue, api.LabelNetwork: "outcall-default", "secret": secret},
		},
		NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{
			"bridge":          {IPAddress: "172.17.0.5"},
			"outcall-default": {IPAddress: "10.200.0.2"},
		}},
		Mounts: []container.MountPoint{
			{Type: mount.TypeBind, Source: "/tmp/outcall/agent.sock", Destination: "/run/outcall/agent.sock"},
			{Type: mount.TypeBind, Source: "/usr/local/bin/outcall-agent", Destination: "/usr/local/bin/outcall"},
			{Type: mount.TypeVolume, Name: "cache", Source: "/var/lib/docker/volumes/cache/_data", Destination: "/cache", RW: true},
		},
	}
	in.Mounts[0].RW, in.Mounts[1].RW = false, false
	got := Inspect(in)
	ip := "10.200.0.2"
	want := api.ContainerInspectResult{
		ContainerID: "a1b2", Name: "outcall-a3f7b201", Image: "my-agent:latest", State: "running",
		Network: "outcall-default", IPAddress: &ip,
		Mounts:    []string{"/tmp/outcall/agent.sock:/run/outcall/agent.sock:ro", "/usr/local/bin/outcall-agent:/usr/local/bin/outcall:ro", "cache:/cache"},
		Env:       []string{"ANTHROPIC_API_KEY=<redacted>", "HTTP_PROXY=<redacted>"},
		CreatedAt: "2026-04-21T14:30:00Z",
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Errorf("Inspect =\n%s\nwant\n%s", gj, wj)
	}
	if strings.Contains(string(gj), secret) || strings.Contains(string(gj), "10.200.0.1:8080") {
		t.Errorf("inspect output holds an env value: %s", gj)
	}

	// Not on its declared network: no address, rather than another one.
	delete(in.NetworkSettings.Networks, "outcall-default")
	if got := Inspect(in); got.IPAddress != nil {
		t.Errorf("address %s from an undeclared network", *got.IPAddress)
	}
	// A bare answer does not panic and keeps the JSON arrays non-null.
	bare := Inspect(container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{ID: "x", Created: "garbage"}})
	if bj, _ := json.Marshal(bare); !strings.Contains(string(bj), `"mounts":[]`) || !strings.Contains(string(bj), `"env":[]`) || bare.CreatedAt != "garbage" {
		t.Errorf("bare inspect %s", bj)
	}
}

func TestSummarize(t *testing.T) {
	got := Summarize(container.Summary{
		ID: "a1b2", Names: []string{"/review-1"}, Image: "my-agent:latest", State: container.StateExited,
		Created: 1776781800, Labels: map[string]string{api.LabelNetwork: "outcall-staging"},
	})
	want := api.ContainerInfo{ContainerID: "a1b2", Name: "review-1", Image: "my-agent:latest", State: "exited", Network: "outcall-staging", CreatedAt: "2026-04-21T14:30:00Z"}
	if got != want {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
}
