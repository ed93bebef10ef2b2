package daemon

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/hostapi"
)

// TestContainersWithoutManager: until a Docker manager is wired, every
// container call is a 503 that says so, with zero results: nothing is
// pretended.
func TestContainersWithoutManager(t *testing.T) {
	ctx := context.Background()
	var s hostService
	calls := map[string]func() (any, error){
		"create":  func() (any, error) { return s.CreateContainer(ctx, api.ContainerCreateRequest{Image: "a"}) },
		"list":    func() (any, error) { return s.Containers(ctx) },
		"inspect": func() (any, error) { return s.Container(ctx, "a") },
		"stop":    func() (any, error) { return s.StopContainer(ctx, api.ContainerStopRequest{Name: "a"}) },
		"remove":  func() (any, error) { return s.RemoveContainer(ctx, api.ContainerRemoveRequest{Name: "a"}) },
		"pull":    func() (any, error) { return s.PullImage(ctx, api.ImagePullRequest{Image: "a"}) },
	}
	const want = "docker manager unavailable: this outcalld runs without one, so it cannot create or manage containers"
	for name, call := range calls {
		res, err := call()
		status, msg := apikit.StatusOf(err)
		if status != http.StatusServiceUnavailable || msg != want {
			t.Errorf("%s: %d %q, want 503 %q", name, status, msg, want)
		}
		if !reflect.ValueOf(res).IsZero() {
			t.Errorf("%s: result %+v without a manager, want the zero value", name, res)
		}
	}
}

// fakeManager answers every call with what it was asked, marked.
type fakeManager struct{ calls []string }

func (m *fakeManager) CreateContainer(_ context.Context, req api.ContainerCreateRequest) (api.ContainerCreateResult, error) {
	m.calls = append(m.calls, "create "+req.Image)
	return api.ContainerCreateResult{ContainerID: "4f3e", Name: "n", Created: true}, nil
}

func (m *fakeManager) Containers(context.Context) ([]api.ContainerInfo, error) {
	m.calls = append(m.calls, "list")
	return []api.ContainerInfo{{Name: "n"}}, nil
}

func (m *fakeManager) Container(_ context.Context, name string) (api.ContainerInspectResult, error) {
	m.calls = append(m.calls, "inspect "+name)
	return api.ContainerInspectResult{}, apikit.Errorf(apikit.ErrNotFound, "container %q does not exist", name)
}

func (m *fakeManager) StopContainer(_ context.Context, req api.ContainerStopRequest) (api.ContainerStopResult, error) {
	m.calls = append(m.calls, "stop "+req.Name)
	return api.ContainerStopResult{Name: req.Name, Stopped: true}, nil
}

func (m *fakeManager) RemoveContainer(_ context.Context, req api.ContainerRemoveRequest) (api.ContainerRemoveResult, error) {
	m.calls = append(m.calls, "remove "+req.Name)
	return api.ContainerRemoveResult{Name: req.Name, Removed: true}, nil
}

func (m *fakeManager) PullImage(_ context.Context, req api.ImagePullRequest) (api.ImagePullResult, error) {
	m.calls = append(m.calls, "pull "+req.Image)
	return api.ImagePullResult{Image: req.Image, Pulled: true}, nil
}

// TestContainersDelegate: with a manager, each call is the manager's,
// result and error unchanged.
func TestContainersDelegate(t *testing.T) {
	ctx := context.Background()
	m := &fakeManager{}
	s := hostService{containers: m}
	if res, err := s.CreateContainer(ctx, api.ContainerCreateRequest{Image: "img"}); err != nil || !res.Created {
		t.Errorf("create = %+v, %v", res, err)
	}
	if cs, err := s.Containers(ctx); err != nil || len(cs) != 1 {
		t.Errorf("list = %+v, %v", cs, err)
	}
	if _, err := s.Container(ctx, "x"); err == nil || err.Error() != `container "x" does not exist` {
		t.Errorf("inspect error = %v", err)
	} else if status, _ := apikit.StatusOf(err); status != http.StatusNotFound {
		t.Errorf("inspect status = %d, want 404", status)
	}
	if res, err := s.StopContainer(ctx, api.ContainerStopRequest{Name: "x"}); err != nil || !res.Stopped {
		t.Errorf("stop = %+v, %v", res, err)
	}
	if res, err := s.RemoveContainer(ctx, api.ContainerRemoveRequest{Name: "x"}); err != nil || !res.Removed {
		t.Errorf("remove = %+v, %v", res, err)
	}
	if res, err := s.PullImage(ctx, api.ImagePullRequest{Image: "img"}); err != nil || !res.Pulled {
		t.Errorf("pull = %+v, %v", res, err)
	}
	want := []string{"create img", "list", "inspect x", "stop x", "remove x", "pull img"}
	if len(m.calls) != len(want) {
		t.Fatalf("manager saw %q, want %q", m.calls, want)
	}
	for i := range want {
		if m.calls[i] != want[i] {
			t.Errorf("manager call %d = %q, want %q", i, m.calls[i], want[i])
		}
	}
}

// TestContainerRoutesWithoutManager: through the host API's real handler,
// the daemon's answer today is the 503 envelope on every container route.
func TestContainerRoutesWithoutManager(t *testing.T) {
	h := hostapi.Handler(hostService{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	const want = `{"success":false,"error":"docker manager unavailable: this outcalld runs without one, so it cannot create or manage containers"}`
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/api/v1/container/create", `{"image":"my-agent:latest"}`},
		{"GET", "/api/v1/containers", ""},
		{"GET", "/api/v1/container?name=my-task", ""},
		{"POST", "/api/v1/container/stop", `{"name":"my-task"}`},
		{"POST", "/api/v1/container/remove", `{"name":"my-task","force":true}`},
		{"POST", "/api/v1/container/pull", `{"image":"my-agent:latest"}`},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(r.method, r.path, strings.NewReader(r.body)))
		if got := strings.TrimSpace(rec.Body.String()); rec.Code != http.StatusServiceUnavailable || got != want {
			t.Errorf("%s %s: %d %s, want 503 %s", r.method, r.path, rec.Code, got, want)
		}
	}
}
