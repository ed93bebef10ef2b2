package hostclient

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"testing"

	"outcall.dev/outcall/pkg/api"
)

// post is the exact request bytes of a POST with a JSON body.
func post(path, body string) string {
	return "POST " + path + " HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

func TestContainerCalls(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		call     func(*Client) (any, error)
		response string // the envelope's data
		want     any
		wantReq  string
	}{
		{
			name: "create with the image alone",
			call: func(c *Client) (any, error) {
				return c.CreateContainer(ctx, api.ContainerCreateRequest{Image: "my-agent:latest"})
			},
			response: `{"container_id":"4f3e2d1c","name":"outcall-a3f7b201","created":true}`,
			want:     api.ContainerCreateResult{ContainerID: "4f3e2d1c", Name: "outcall-a3f7b201", Created: true},
			wantReq:  post("/api/v1/container/create", `{"image":"my-agent:latest"}`),
		},
		{
			name: "create with every field (IF-001's example)",
			call: func(c *Client) (any, error) {
				return c.CreateContainer(ctx, api.ContainerCreateRequest{
					Image: "my-agent:latest", Network: ptr("outcall-staging"), Name: ptr("my-task"), User: ptr("1000:1000"),
					MemoryLimit: ptr[int64](268435456), CPUShares: ptr[int64](512), Env: []string{"MY_VAR=value"},
					Cmd: []string{"run-agent"}, Entrypoint: []string{"/bin/sh", "-c"}, WorkingDir: "/workspace",
					Volumes: []string{"/host/project:/workspace"}, IncludeHelperMounts: true, Interactive: true, TTY: true,
				})
			},
			response: `{"container_id":"4f3e2d1c","name":"my-task","created":true}`,
			want:     api.ContainerCreateResult{ContainerID: "4f3e2d1c", Name: "my-task", Created: true},
			wantReq: post("/api/v1/container/create", `{"image":"my-agent:latest","network":"outcall-staging","name":"my-task","user":"1000:1000",`+
				`"memory_limit":268435456,"cpu_shares":512,"env":["MY_VAR=value"],"cmd":["run-agent"],"entrypoint":["/bin/sh","-c"],`+
				`"working_dir":"/workspace","volumes":["/host/project:/workspace"],"include_outcall_helper_mounts":true,"interactive":true,"tty":true}`),
		},
		{
			name: "create sends a zero limit rather than dropping it",
			call: func(c *Client) (any, error) {
				return c.CreateContainer(ctx, api.ContainerCreateRequest{Image: "a", MemoryLimit: ptr[int64](0)})
			},
			response: `{"container_id":"4f3e","name":"outcall-a3f7b201","created":true}`,
			want:     api.ContainerCreateResult{ContainerID: "4f3e", Name: "outcall-a3f7b201", Created: true},
			wantReq:  post("/api/v1/container/create", `{"image":"a","memory_limit":0}`),
		},
		{
			name: "list",
			call: func(c *Client) (any, error) { return c.Containers(ctx) },
			response: `[{"container_id":"4f3e","name":"outcall-a3f7b201","image":"my-agent:latest","state":"running","network":"outcall-default",` +
				`"created_at":"2026-04-21T14:30:00Z"}]`,
			want: []api.ContainerInfo{{ContainerID: "4f3e", Name: "outcall-a3f7b201", Image: "my-agent:latest", State: "running",
				Network: "outcall-default", CreatedAt: "2026-04-21T14:30:00Z"}},
			wantReq: "GET /api/v1/containers HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name:     "empty list",
			call:     func(c *Client) (any, error) { return c.Containers(ctx) },
			response: `[]`,
			want:     []api.ContainerInfo{},
			wantReq:  "GET /api/v1/containers HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name: "inspect",
			call: func(c *Client) (any, error) { return c.Container(ctx, "outcall-a3f7b201") },
			response: `{"container_id":"4f3e","name":"outcall-a3f7b201","image":"my-agent:latest","state":"running","network":"outcall-default",` +
				`"ip_address":"10.200.0.2","mounts":["/run/outcall/agent.sock:/run/outcall/agent.sock:ro"],"env":["HTTP_PROXY=<redacted>"],` +
				`"created_at":"2026-04-21T14:30:00Z"}`,
			want: api.ContainerInspectResult{ContainerID: "4f3e", Name: "outcall-a3f7b201", Image: "my-agent:latest", State: "running",
				Network: "outcall-default", IPAddress: ptr("10.200.0.2"), Mounts: []string{"/run/outcall/agent.sock:/run/outcall/agent.sock:ro"},
				Env: []string{"HTTP_PROXY=<redacted>"}, CreatedAt: "2026-04-21T14:30:00Z"},
			wantReq: "GET /api/v1/container?name=outcall-a3f7b201 HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name: "inspect name is escaped",
			call: func(c *Client) (any, error) { return c.Container(ctx, "a&name=b c#d") },
			response: `{"container_id":"4f3e","name":"a&name=b c#d","image":"i","state":"exited","network":"outcall-default",` +
				`"ip_address":null,"mounts":[],"env":[],"created_at":"2026-04-21T14:30:00Z"}`,
			want: api.ContainerInspectResult{ContainerID: "4f3e", Name: "a&name=b c#d", Image: "i", State: "exited", Network: "outcall-default",
				Mounts: []string{}, Env: []string{}, CreatedAt: "2026-04-21T14:30:00Z"},
			wantReq: "GET /api/v1/container?name=a%26name%3Db+c%23d HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name:     "inspect sends an empty name",
			call:     func(c *Client) (any, error) { return c.Container(ctx, "") },
			response: `{"container_id":"","name":"","image":"","state":"","network":"","ip_address":null,"mounts":[],"env":[],"created_at":""}`,
			want:     api.ContainerInspectResult{Mounts: []string{}, Env: []string{}},
			wantReq:  "GET /api/v1/container?name= HTTP/1.0\r\nHost: localhost\r\n\r\n",
		},
		{
			name: "stop with a timeout",
			call: func(c *Client) (any, error) {
				return c.StopContainer(ctx, api.ContainerStopRequest{Name: "outcall-a3f7b201", Timeout: ptr[int64](15)})
			},
			response: `{"name":"outcall-a3f7b201","stopped":true}`,
			want:     api.ContainerStopResult{Name: "outcall-a3f7b201", Stopped: true},
			wantReq:  post("/api/v1/container/stop", `{"name":"outcall-a3f7b201","timeout":15}`),
		},
		{
			name: "stop a stopped container",
			call: func(c *Client) (any, error) {
				return c.StopContainer(ctx, api.ContainerStopRequest{Name: "outcall-a3f7b201"})
			},
			response: `{"name":"outcall-a3f7b201","stopped":false}`,
			want:     api.ContainerStopResult{Name: "outcall-a3f7b201"},
			wantReq:  post("/api/v1/container/stop", `{"name":"outcall-a3f7b201"}`),
		},
		{
			name: "remove forced",
			call: func(c *Client) (any, error) {
				return c.RemoveContainer(ctx, api.ContainerRemoveRequest{Name: "outcall-a3f7b201", Force: true})
			},
			response: `{"name":"outcall-a3f7b201","removed":true}`,
			want:     api.ContainerRemoveResult{Name: "outcall-a3f7b201", Removed: true},
			wantReq:  post("/api/v1/container/remove", `{"name":"outcall-a3f7b201","force":true}`),
		},
		{
			name: "remove a missing container",
			call: func(c *Client) (any, error) {
				return c.RemoveContainer(ctx, api.ContainerRemoveRequest{Name: "outcall-xyz"})
			},
			response: `{"name":"outcall-xyz","removed":false}`,
			want:     api.ContainerRemoveResult{Name: "outcall-xyz"},
			wantReq:  post("/api/v1/container/remove", `{"name":"outcall-xyz"}`),
		},
		{
			name:     "pull",
			call:     func(c *Client) (any, error) { return c.PullImage(ctx, api.ImagePullRequest{Image: "my-agent:latest"}) },
			response: `{"image":"my-agent:latest","pulled":true}`,
			want:     api.ImagePullResult{Image: "my-agent:latest", Pulled: true},
			wantReq:  post("/api/v1/container/pull", `{"image":"my-agent:latest"}`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, reply(`{"success":true,"data":`+tt.response+`}`))
			got, err := tt.call(New(f.path))
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if req := f.received(t); req != tt.wantReq {
				t.Errorf("request bytes:\n got %q\nwant %q", req, tt.wantReq)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

// TestContainerAPIError: a refused create reaches the caller as the
// daemon's message, unchanged (S008-AS-002).
func TestContainerAPIError(t *testing.T) {
	const msg = `bind mount denied - "/run/outcall" exposes protected host path "/run/outcall/host.sock"`
	f := startFake(t, reply(`{"success":false,"error":"bind mount denied - \"/run/outcall\" exposes protected host path \"/run/outcall/host.sock\""}`))
	_, err := New(f.path).CreateContainer(context.Background(), api.ContainerCreateRequest{Image: "a", Volumes: []string{"/run/outcall:/x"}})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Message != msg {
		t.Fatalf("err = %v (%T), want *APIError %q", err, err, msg)
	}
}
