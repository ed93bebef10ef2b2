package hostclient

import (
	"context"
	"net/url"

	"outcall.dev/outcall/pkg/api"
)

// The container calls (S008-IF-001..006), answered by outcalld's Docker
// manager. Names are exact: a container's name as given, a network's full
// name ("outcall-staging"). The name of an inspect goes in the query,
// escaped here with net/url, so that a name holding "&" or "#" is that
// name and never another parameter.

// CreateContainer creates and starts an agent container (S008-IF-001).
// Only req.Image is required; a nil field gets the daemon's default.
func (c *Client) CreateContainer(ctx context.Context, req api.ContainerCreateRequest) (api.ContainerCreateResult, error) {
	return do[api.ContainerCreateResult](ctx, c, "POST", "/api/v1/container/create", req)
}

// Containers lists every container managed by outcalld (S008-IF-004), in
// no particular order.
func (c *Client) Containers(ctx context.Context) ([]api.ContainerInfo, error) {
	return do[[]api.ContainerInfo](ctx, c, "GET", "/api/v1/containers", nil)
}

// Container inspects one managed container (S008-IF-005); its environment
// comes as names with redacted values. The name is always sent, even "",
// for the daemon to refuse.
func (c *Client) Container(ctx context.Context, name string) (api.ContainerInspectResult, error) {
	return do[api.ContainerInspectResult](ctx, c, "GET", "/api/v1/container?"+url.Values{"name": {name}}.Encode(), nil)
}

// StopContainer stops a container: SIGTERM, then SIGKILL after the timeout
// (S008-IF-002). One that was not running is no error but Stopped false.
func (c *Client) StopContainer(ctx context.Context, req api.ContainerStopRequest) (api.ContainerStopResult, error) {
	return do[api.ContainerStopResult](ctx, c, "POST", "/api/v1/container/stop", req)
}

// RemoveContainer removes a container and its anonymous volumes
// (S008-IF-003); a running one is refused unless req.Force. One that does
// not exist is no error but Removed false.
func (c *Client) RemoveContainer(ctx context.Context, req api.ContainerRemoveRequest) (api.ContainerRemoveResult, error) {
	return do[api.ContainerRemoveResult](ctx, c, "POST", "/api/v1/container/remove", req)
}

// PullImage pulls an image ahead of a create (S008-IF-006); one already
// present and current is Pulled false.
func (c *Client) PullImage(ctx context.Context, req api.ImagePullRequest) (api.ImagePullResult, error) {
	return do[api.ImagePullResult](ctx, c, "POST", "/api/v1/container/pull", req)
}
