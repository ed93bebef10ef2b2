package hostapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
)

func (f *fakeService) CreateContainer(_ context.Context, req api.ContainerCreateRequest) (api.ContainerCreateResult, error) {
	f.record("CreateContainer", req)
	return api.ContainerCreateResult{ContainerID: "4f3e2d1c", Name: deref(req.Name, "outcall-a3f7b201"), Created: true}, f.err
}

// Containers answers nil when empty, as a Service may.
func (f *fakeService) Containers(context.Context) ([]api.ContainerInfo, error) {
	f.record("Containers")
	if f.empty {
		return nil, f.err
	}
	return []api.ContainerInfo{
		{ContainerID: "4f3e", Name: "outcall-a3f7b201", Image: "my-agent:latest", State: "running", Network: "outcall-default", CreatedAt: "2026-04-21T14:30:00Z"},
		{ContainerID: "9a8b", Name: "my-task", Image: "my-agent:dev", State: "exited", Network: "outcall-staging", CreatedAt: "2026-04-21T15:00:00Z"},
	}, f.err
}

// Container answers a stopped container without address, mounts or
// environment when empty, its lists left nil as a Service may leave them.
func (f *fakeService) Container(_ context.Context, name string) (api.ContainerInspectResult, error) {
	f.record("Container", name)
	if f.empty {
		return api.ContainerInspectResult{ContainerID: "4f3e", Name: name, Image: "my-agent:latest", State: "exited",
			Network: "outcall-default", CreatedAt: "2026-04-21T14:30:00Z"}, f.err
	}
	return api.ContainerInspectResult{ContainerID: "4f3e", Name: name, Image: "my-agent:latest", State: "running",
		Network: "outcall-default", IPAddress: ptr("10.200.0.2"),
		Mounts:    []string{"/run/outcall/agent.sock:/run/outcall/agent.sock:ro"},
		Env:       []string{"HTTP_PROXY=<redacted>"},
		CreatedAt: "2026-04-21T14:30:00Z"}, f.err
}

func (f *fakeService) StopContainer(_ context.Context, req api.ContainerStopRequest) (api.ContainerStopResult, error) {
	f.record("StopContainer", req)
	return api.ContainerStopResult{Name: req.Name, Stopped: !f.empty}, f.err
}

func (f *fakeService) RemoveContainer(_ context.Context, req api.ContainerRemoveRequest) (api.ContainerRemoveResult, error) {
	f.record("RemoveContainer", req)
	return api.ContainerRemoveResult{Name: req.Name, Removed: !f.empty}, f.err
}

func (f *fakeService) PullImage(_ context.Context, req api.ImagePullRequest) (api.ImagePullResult, error) {
	f.record("PullImage", req)
	return api.ImagePullResult{Image: req.Image, Pulled: !f.empty}, f.err
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// TestContainerRoutes runs S008-IF-001..006 through the handler: what
// reaches the Service, and the exact body and status of every answer,
// including the status decision of §1.6 (400, 403, 404, 409, 503).
func TestContainerRoutes(t *testing.T) {
	const (
		created = `{"success":true,"data":{"container_id":"4f3e2d1c","name":"outcall-a3f7b201","created":true}}`
		denied  = `bind mount denied - "/run/outcall" exposes protected host path "/run/outcall/host.sock"`
	)
	tests := []struct {
		name, method, path, body string
		empty                    bool
		err                      error
		status                   int
		want                     string // the exact response body
		wantCall                 string // the exact Service call; "" means none
	}{
		// create
		{name: "create with the image alone", method: "POST", path: "/api/v1/container/create", body: `{"image":"my-agent:latest"}`, status: 200,
			want: created, wantCall: `CreateContainer {"image":"my-agent:latest"}`},
		{name: "create with every field", method: "POST", path: "/api/v1/container/create",
			body: `{"image":"my-agent:latest","network":"outcall-staging","name":"my-task","user":"1000:1000","memory_limit":268435456,` +
				`"cpu_shares":512,"env":["MY_VAR=value"],"cmd":["run-agent"],"entrypoint":["/bin/sh","-c"],"working_dir":"/workspace",` +
				`"volumes":["/host/project:/workspace"],"include_outcall_helper_mounts":true,"interactive":true,"tty":true}`, status: 200,
			want: `{"success":true,"data":{"container_id":"4f3e2d1c","name":"my-task","created":true}}`,
			wantCall: `CreateContainer {"image":"my-agent:latest","network":"outcall-staging","name":"my-task","user":"1000:1000","memory_limit":268435456,` +
				`"cpu_shares":512,"env":["MY_VAR=value"],"cmd":["run-agent"],"entrypoint":["/bin/sh","-c"],"working_dir":"/workspace",` +
				`"volumes":["/host/project:/workspace"],"include_outcall_helper_mounts":true,"interactive":true,"tty":true}`},
		{name: "create keeps null apart from a value", method: "POST", path: "/api/v1/container/create",
			body: `{"image":"my-agent:latest","network":null,"name":"","memory_limit":0}`, status: 200,
			want:     `{"success":true,"data":{"container_id":"4f3e2d1c","name":"","created":true}}`,
			wantCall: `CreateContainer {"image":"my-agent:latest","name":"","memory_limit":0}`},
		{name: "create with helper mounts off is the default", method: "POST", path: "/api/v1/container/create",
			body: `{"image":"my-agent:latest","include_outcall_helper_mounts":false}`, status: 200,
			want: created, wantCall: `CreateContainer {"image":"my-agent:latest"}`},
		{name: "create without body reaches the service to refuse", method: "POST", path: "/api/v1/container/create",
			err: apikit.Errorf(apikit.ErrInvalid, "invalid image reference \"\": must not be empty"), status: 400,
			want:     `{"success":false,"error":"invalid image reference \"\": must not be empty"}`,
			wantCall: `CreateContainer {"image":""}`},
		{name: "create asking for capabilities", method: "POST", path: "/api/v1/container/create", body: `{"image":"a","cap_add":["NET_ADMIN"]}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: unknown field \"cap_add\""}`},
		{name: "create asking to be privileged", method: "POST", path: "/api/v1/container/create", body: `{"image":"a","privileged":true}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: unknown field \"privileged\""}`},
		{name: "create with a memory limit that is not a number", method: "POST", path: "/api/v1/container/create", body: `{"image":"a","memory_limit":"256m"}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: cannot unmarshal string into Go struct field ContainerCreateRequest.memory_limit of type int64"}`},
		{name: "create trailing data", method: "POST", path: "/api/v1/container/create", body: `{"image":"a"} {}`, status: 400,
			want: `{"success":false,"error":"invalid request body: trailing data after JSON object"}`},
		{name: "create below the memory floor", method: "POST", path: "/api/v1/container/create", body: `{"image":"a","memory_limit":1048576}`,
			err: apikit.Errorf(apikit.ErrInvalid, "invalid memory_limit 1048576: must be at least 6291456 bytes (6 MiB)"), status: 400,
			want:     `{"success":false,"error":"invalid memory_limit 1048576: must be at least 6291456 bytes (6 MiB)"}`,
			wantCall: `CreateContainer {"image":"a","memory_limit":1048576}`},
		{name: "create binding a protected socket", method: "POST", path: "/api/v1/container/create", body: `{"image":"a","volumes":["/run/outcall:/x"]}`,
			err: apikit.Errorf(apikit.ErrForbidden, "%s", denied), status: 403,
			want:     `{"success":false,"error":"bind mount denied - \"/run/outcall\" exposes protected host path \"/run/outcall/host.sock\""}`,
			wantCall: `CreateContainer {"image":"a","volumes":["/run/outcall:/x"]}`},
		{name: "create on a missing network", method: "POST", path: "/api/v1/container/create", body: `{"image":"a"}`,
			err: apikit.Errorf(apikit.ErrNotFound, `network "outcall-default" does not exist`), status: 404,
			want:     `{"success":false,"error":"network \"outcall-default\" does not exist"}`,
			wantCall: `CreateContainer {"image":"a"}`},
		{name: "create of an image not present", method: "POST", path: "/api/v1/container/create", body: `{"image":"a"}`,
			err: apikit.Errorf(apikit.ErrNotFound, `image "a" not found locally — pull it first`), status: 404,
			want:     `{"success":false,"error":"image \"a\" not found locally — pull it first"}`,
			wantCall: `CreateContainer {"image":"a"}`},
		{name: "create with a name in use", method: "POST", path: "/api/v1/container/create", body: `{"image":"a","name":"my-task"}`,
			err: apikit.Errorf(apikit.ErrConflict, `Conflict. The container name "/my-task" is already in use`), status: 409,
			want:     `{"success":false,"error":"Conflict. The container name \"/my-task\" is already in use"}`,
			wantCall: `CreateContainer {"image":"a","name":"my-task"}`},
		{name: "create without docker", method: "POST", path: "/api/v1/container/create", body: `{"image":"a"}`,
			err: apikit.Errorf(apikit.ErrUnavailable, "docker unavailable: ping timed out after 3s"), status: 503,
			want:     `{"success":false,"error":"docker unavailable: ping timed out after 3s"}`,
			wantCall: `CreateContainer {"image":"a"}`},
		{name: "create that fails otherwise", method: "POST", path: "/api/v1/container/create", body: `{"image":"a"}`,
			err: errors.New("start container: OCI runtime create failed; rollback: remove container: EOF"), status: 500,
			want:     `{"success":false,"error":"start container: OCI runtime create failed; rollback: remove container: EOF"}`,
			wantCall: `CreateContainer {"image":"a"}`},
		{name: "create is POST only", method: "GET", path: "/api/v1/container/create", status: 404,
			want: `{"success":false,"error":"no route for GET /api/v1/container/create"}`},

		// list
		{name: "list", method: "GET", path: "/api/v1/containers", status: 200,
			want: `{"success":true,"data":[` +
				`{"container_id":"4f3e","name":"outcall-a3f7b201","image":"my-agent:latest","state":"running","network":"outcall-default","created_at":"2026-04-21T14:30:00Z"},` +
				`{"container_id":"9a8b","name":"my-task","image":"my-agent:dev","state":"exited","network":"outcall-staging","created_at":"2026-04-21T15:00:00Z"}]}`,
			wantCall: "Containers"},
		{name: "no containers is an empty list", method: "GET", path: "/api/v1/containers", empty: true, status: 200,
			want: `{"success":true,"data":[]}`, wantCall: "Containers"},
		{name: "list without docker", method: "GET", path: "/api/v1/containers", empty: true,
			err: apikit.Errorf(apikit.ErrUnavailable, "docker unavailable: dial unix /var/run/docker.sock: connect: no such file or directory"), status: 503,
			want:     `{"success":false,"error":"docker unavailable: dial unix /var/run/docker.sock: connect: no such file or directory"}`,
			wantCall: "Containers"},
		{name: "list is GET only", method: "POST", path: "/api/v1/containers", status: 404,
			want: `{"success":false,"error":"no route for POST /api/v1/containers"}`},

		// inspect
		{name: "inspect", method: "GET", path: "/api/v1/container?name=outcall-a3f7b201", status: 200,
			want: `{"success":true,"data":{"container_id":"4f3e","name":"outcall-a3f7b201","image":"my-agent:latest","state":"running","network":"outcall-default",` +
				`"ip_address":"10.200.0.2","mounts":["/run/outcall/agent.sock:/run/outcall/agent.sock:ro"],"env":["HTTP_PROXY=\u003credacted\u003e"],"created_at":"2026-04-21T14:30:00Z"}}`,
			wantCall: `Container "outcall-a3f7b201"`},
		{name: "inspect keeps a null address and lists no mounts", method: "GET", path: "/api/v1/container?name=outcall-a3f7b201", empty: true, status: 200,
			want: `{"success":true,"data":{"container_id":"4f3e","name":"outcall-a3f7b201","image":"my-agent:latest","state":"exited","network":"outcall-default",` +
				`"ip_address":null,"mounts":[],"env":[],"created_at":"2026-04-21T14:30:00Z"}}`,
			wantCall: `Container "outcall-a3f7b201"`},
		{name: "inspect name is unescaped", method: "GET", path: "/api/v1/container?name=a%26b+c", empty: true, status: 200,
			want: `{"success":true,"data":{"container_id":"4f3e","name":"a\u0026b c","image":"my-agent:latest","state":"exited","network":"outcall-default",` +
				`"ip_address":null,"mounts":[],"env":[],"created_at":"2026-04-21T14:30:00Z"}}`,
			wantCall: `Container "a\u0026b c"`},
		{name: "inspect of a missing container", method: "GET", path: "/api/v1/container?name=outcall-xyz",
			err: apikit.Errorf(apikit.ErrNotFound, `container "outcall-xyz" does not exist`), status: 404,
			want: `{"success":false,"error":"container \"outcall-xyz\" does not exist"}`, wantCall: `Container "outcall-xyz"`},
		{name: "inspect of an unmanaged container", method: "GET", path: "/api/v1/container?name=postgres",
			err: apikit.Errorf(apikit.ErrForbidden, `container "postgres" is not managed by outcalld`), status: 403,
			want: `{"success":false,"error":"container \"postgres\" is not managed by outcalld"}`, wantCall: `Container "postgres"`},
		{name: "inspect empty name reaches the service", method: "GET", path: "/api/v1/container?name=",
			err: apikit.Errorf(apikit.ErrInvalid, `invalid container name "": must not be empty`), status: 400,
			want: `{"success":false,"error":"invalid container name \"\": must not be empty"}`, wantCall: `Container ""`},
		{name: "inspect without name", method: "GET", path: "/api/v1/container", status: 400,
			want: `{"success":false,"error":"missing query parameter name: want ?name=\u003ccontainer\u003e"}`},
		{name: "inspect with only other parameters", method: "GET", path: "/api/v1/container?verbose=1", status: 400,
			want: `{"success":false,"error":"missing query parameter name: want ?name=\u003ccontainer\u003e"}`},
		{name: "inspect other parameters are ignored", method: "GET", path: "/api/v1/container?verbose=1&name=my-task", empty: true, status: 200,
			want: `{"success":true,"data":{"container_id":"4f3e","name":"my-task","image":"my-agent:latest","state":"exited","network":"outcall-default",` +
				`"ip_address":null,"mounts":[],"env":[],"created_at":"2026-04-21T14:30:00Z"}}`,
			wantCall: `Container "my-task"`},
		{name: "inspect name twice", method: "GET", path: "/api/v1/container?name=a&name=b", status: 400,
			want: `{"success":false,"error":"invalid query parameter name: given 2 times, want once"}`},
		{name: "inspect malformed query", method: "GET", path: "/api/v1/container?name=%zz", status: 400,
			want: `{"success":false,"error":"invalid query: invalid URL escape \"%zz\""}`},
		{name: "inspect is GET only", method: "POST", path: "/api/v1/container", status: 404,
			want: `{"success":false,"error":"no route for POST /api/v1/container"}`},

		// stop
		{name: "stop", method: "POST", path: "/api/v1/container/stop", body: `{"name":"outcall-a3f7b201","timeout":15}`, status: 200,
			want:     `{"success":true,"data":{"name":"outcall-a3f7b201","stopped":true}}`,
			wantCall: `StopContainer {"name":"outcall-a3f7b201","timeout":15}`},
		{name: "stop without timeout leaves the default to the service", method: "POST", path: "/api/v1/container/stop", body: `{"name":"outcall-a3f7b201"}`, status: 200,
			want:     `{"success":true,"data":{"name":"outcall-a3f7b201","stopped":true}}`,
			wantCall: `StopContainer {"name":"outcall-a3f7b201"}`},
		{name: "stop keeps a zero timeout", method: "POST", path: "/api/v1/container/stop", body: `{"name":"outcall-a3f7b201","timeout":0}`, status: 200,
			want:     `{"success":true,"data":{"name":"outcall-a3f7b201","stopped":true}}`,
			wantCall: `StopContainer {"name":"outcall-a3f7b201","timeout":0}`},
		{name: "stop of a stopped container", method: "POST", path: "/api/v1/container/stop", body: `{"name":"outcall-a3f7b201"}`, empty: true, status: 200,
			want:     `{"success":true,"data":{"name":"outcall-a3f7b201","stopped":false}}`,
			wantCall: `StopContainer {"name":"outcall-a3f7b201"}`},
		{name: "stop of a missing container", method: "POST", path: "/api/v1/container/stop", body: `{"name":"outcall-xyz"}`,
			err: apikit.Errorf(apikit.ErrNotFound, `container "outcall-xyz" does not exist`), status: 404,
			want: `{"success":false,"error":"container \"outcall-xyz\" does not exist"}`, wantCall: `StopContainer {"name":"outcall-xyz"}`},
		{name: "stop of an unmanaged container", method: "POST", path: "/api/v1/container/stop", body: `{"name":"postgres"}`,
			err: apikit.Errorf(apikit.ErrForbidden, `container "postgres" is not managed by outcalld`), status: 403,
			want: `{"success":false,"error":"container \"postgres\" is not managed by outcalld"}`, wantCall: `StopContainer {"name":"postgres"}`},
		{name: "stop with a fractional timeout", method: "POST", path: "/api/v1/container/stop", body: `{"name":"a","timeout":1.5}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: cannot unmarshal number 1.5 into Go struct field ContainerStopRequest.timeout of type int64"}`},
		{name: "stop unknown field", method: "POST", path: "/api/v1/container/stop", body: `{"name":"a","signal":"KILL"}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: unknown field \"signal\""}`},

		// remove
		{name: "remove", method: "POST", path: "/api/v1/container/remove", body: `{"name":"outcall-a3f7b201","force":false}`, status: 200,
			want:     `{"success":true,"data":{"name":"outcall-a3f7b201","removed":true}}`,
			wantCall: `RemoveContainer {"name":"outcall-a3f7b201"}`},
		{name: "remove forced", method: "POST", path: "/api/v1/container/remove", body: `{"name":"outcall-a3f7b201","force":true}`, status: 200,
			want:     `{"success":true,"data":{"name":"outcall-a3f7b201","removed":true}}`,
			wantCall: `RemoveContainer {"name":"outcall-a3f7b201","force":true}`},
		{name: "remove of a missing container", method: "POST", path: "/api/v1/container/remove", body: `{"name":"outcall-xyz"}`, empty: true, status: 200,
			want:     `{"success":true,"data":{"name":"outcall-xyz","removed":false}}`,
			wantCall: `RemoveContainer {"name":"outcall-xyz"}`},
		{name: "remove of a running container", method: "POST", path: "/api/v1/container/remove", body: `{"name":"outcall-a3f7b201"}`,
			err: apikit.Errorf(apikit.ErrConflict, `container "outcall-a3f7b201" is still running — stop it first or use force`), status: 409,
			want:     `{"success":false,"error":"container \"outcall-a3f7b201\" is still running — stop it first or use force"}`,
			wantCall: `RemoveContainer {"name":"outcall-a3f7b201"}`},
		{name: "remove of an unmanaged container", method: "POST", path: "/api/v1/container/remove", body: `{"name":"postgres","force":true}`,
			err: apikit.Errorf(apikit.ErrForbidden, `container "postgres" is not managed by outcalld`), status: 403,
			want:     `{"success":false,"error":"container \"postgres\" is not managed by outcalld"}`,
			wantCall: `RemoveContainer {"name":"postgres","force":true}`},
		{name: "remove with a string force", method: "POST", path: "/api/v1/container/remove", body: `{"name":"a","force":"yes"}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: cannot unmarshal string into Go struct field ContainerRemoveRequest.force of type bool"}`},

		// pull
		{name: "pull", method: "POST", path: "/api/v1/container/pull", body: `{"image":"my-agent:latest"}`, status: 200,
			want: `{"success":true,"data":{"image":"my-agent:latest","pulled":true}}`, wantCall: `PullImage {"image":"my-agent:latest"}`},
		{name: "pull of an image already current", method: "POST", path: "/api/v1/container/pull", body: `{"image":"my-agent:latest"}`, empty: true, status: 200,
			want: `{"success":true,"data":{"image":"my-agent:latest","pulled":false}}`, wantCall: `PullImage {"image":"my-agent:latest"}`},
		{name: "pull that fails upstream", method: "POST", path: "/api/v1/container/pull", body: `{"image":"my-agent:latest"}`,
			err: apikit.Errorf(apikit.ErrNotFound, `failed to pull image "my-agent:latest": not found`), status: 404,
			want:     `{"success":false,"error":"failed to pull image \"my-agent:latest\": not found"}`,
			wantCall: `PullImage {"image":"my-agent:latest"}`},
		{name: "pull unknown field", method: "POST", path: "/api/v1/container/pull", body: `{"image":"a","platform":"linux/arm64"}`, status: 400,
			want: `{"success":false,"error":"invalid request body: json: unknown field \"platform\""}`},
		{name: "no other route under container", method: "GET", path: "/api/v1/container/my-task", status: 404,
			want: `{"success":false,"error":"no route for GET /api/v1/container/my-task"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &fakeService{empty: tt.empty, err: tt.err}
			rec := httptest.NewRecorder()
			Handler(svc, slog.New(slog.NewTextHandler(io.Discard, nil))).ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body)))
			if rec.Code != tt.status {
				t.Errorf("status %d, want %d", rec.Code, tt.status)
			}
			if got := strings.TrimSuffix(rec.Body.String(), "\n"); got != tt.want {
				t.Errorf("body:\n got %s\nwant %s", got, tt.want)
			}
			if got := strings.Join(svc.calls, "\n"); got != tt.wantCall {
				t.Errorf("service saw %q, want %q", got, tt.wantCall)
			}
		})
	}
}
