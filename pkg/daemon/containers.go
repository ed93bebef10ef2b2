package daemon

import (
	"context"
	"errors"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
)

// ContainerManager is the Docker manager as the host API sees it: agent
// containers created hardened on an Outcall network, listed, inspected,
// stopped and removed by the managed-by=outcalld label, and images pulled
// (S008-IF-001..006). Its errors carry the apikit kinds hostapi.Service
// documents (400 validation, 403 deny list or unmanaged target, 404 not
// found, 409 still running or duplicate name, 503 Docker unavailable).
type ContainerManager interface {
	CreateContainer(ctx context.Context, req api.ContainerCreateRequest) (api.ContainerCreateResult, error)
	Containers(ctx context.Context) ([]api.ContainerInfo, error)
	Container(ctx context.Context, name string) (api.ContainerInspectResult, error)
	StopContainer(ctx context.Context, req api.ContainerStopRequest) (api.ContainerStopResult, error)
	RemoveContainer(ctx context.Context, req api.ContainerRemoveRequest) (api.ContainerRemoveResult, error)
	PullImage(ctx context.Context, req api.ImagePullRequest) (api.ImagePullResult, error)
}

// errNoContainerManager answers every container call while the daemon has
// no Docker manager: 503, the same as Docker being unreachable, and never
// a made-up success. Nothing is created, stopped or removed.
var errNoContainerManager = apikit.Wrap(apikit.ErrUnavailable,
	errors.New("docker manager unavailable: this outcalld runs without one, so it cannot create or manage containers"))

// CreateContainer creates and starts an agent container through the Docker
// manager.
func (s hostService) CreateContainer(ctx context.Context, req api.ContainerCreateRequest) (api.ContainerCreateResult, error) {
	if s.containers == nil {
		return api.ContainerCreateResult{}, errNoContainerManager
	}
	return s.containers.CreateContainer(ctx, req)
}

// Containers lists the managed containers through the Docker manager.
func (s hostService) Containers(ctx context.Context) ([]api.ContainerInfo, error) {
	if s.containers == nil {
		return nil, errNoContainerManager
	}
	return s.containers.Containers(ctx)
}

// Container inspects one managed container through the Docker manager.
func (s hostService) Container(ctx context.Context, name string) (api.ContainerInspectResult, error) {
	if s.containers == nil {
		return api.ContainerInspectResult{}, errNoContainerManager
	}
	return s.containers.Container(ctx, name)
}

// StopContainer stops a managed container through the Docker manager.
func (s hostService) StopContainer(ctx context.Context, req api.ContainerStopRequest) (api.ContainerStopResult, error) {
	if s.containers == nil {
		return api.ContainerStopResult{}, errNoContainerManager
	}
	return s.containers.StopContainer(ctx, req)
}

// RemoveContainer removes a managed container through the Docker manager.
func (s hostService) RemoveContainer(ctx context.Context, req api.ContainerRemoveRequest) (api.ContainerRemoveResult, error) {
	if s.containers == nil {
		return api.ContainerRemoveResult{}, errNoContainerManager
	}
	return s.containers.RemoveContainer(ctx, req)
}

// PullImage pulls an image through the Docker manager.
func (s hostService) PullImage(ctx context.Context, req api.ImagePullRequest) (api.ImagePullResult, error) {
	if s.containers == nil {
		return api.ImagePullResult{}, errNoContainerManager
	}
	return s.containers.PullImage(ctx, req)
}
