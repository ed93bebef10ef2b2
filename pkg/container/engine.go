package container

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/versions"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"outcall.dev/outcall/pkg/api"
)

// Engine is the part of the Docker Engine API the manager uses: container
// lifecycle, discovery by label, events, networks, images and the ping
// that decides availability. *client.Client implements it; tests use
// containertest.Engine. Every call takes a context; none shells out
// (S008-FR-001).
type Engine interface {
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, container string, options container.StartOptions) error
	ContainerStop(ctx context.Context, container string, options container.StopOptions) error
	ContainerRemove(ctx context.Context, container string, options container.RemoveOptions) error
	ContainerInspect(ctx context.Context, container string) (container.InspectResponse, error)
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)

	NetworkCreate(ctx context.Context, name string, options network.CreateOptions) (network.CreateResponse, error)
	NetworkInspect(ctx context.Context, network string, options network.InspectOptions) (network.Inspect, error)
	NetworkRemove(ctx context.Context, network string) error
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)

	ImageInspect(ctx context.Context, image string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImagePull(ctx context.Context, ref string, options image.PullOptions) (io.ReadCloser, error)

	Ping(ctx context.Context) (types.Ping, error)
	// NegotiateAPIVersionPing lowers the client's API version to the
	// engine's, from a ping's answer.
	NegotiateAPIVersionPing(types.Ping)
	// ClientVersion is the API version the client speaks: the negotiated
	// one once a ping was negotiated.
	ClientVersion() string
	// DaemonHost is the engine's address ("unix:///var/run/docker.sock").
	DaemonHost() string
	Close() error
}

var _ Engine = (*client.Client)(nil)

// NewEngine returns a Docker client configured from the environment
// (DOCKER_HOST, DOCKER_API_VERSION, DOCKER_CERT_PATH, DOCKER_TLS_VERIFY)
// that negotiates the API version with the engine, so an older engine
// (Debian's docker.io 20.10 speaks 1.41) is spoken to in its own version.
// It makes no connection: constructing a client is not proof of
// availability (S008-FR-036); call Available.
func NewEngine() (*client.Client, error) {
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return c, nil
}

// PingTimeout bounds the availability ping (S008-FR-036).
const PingTimeout = 3 * time.Second

// MinAPIVersion is the oldest Engine API Outcall creates containers with:
// Docker 20.10's.
const MinAPIVersion = "1.41"

// Available pings the engine, bounded by timeout (PingTimeout if not
// positive), negotiates the API version from the answer and refuses an
// engine older than MinAPIVersion. An error means the manager is degraded:
// the daemon keeps enforcing and says so; it never reports Docker as
// initialised (S008-FR-036, AS-017, EC-020).
func Available(ctx context.Context, e Engine, timeout time.Duration) (types.Ping, error) {
	if timeout <= 0 {
		timeout = PingTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ping, err := e.Ping(ctx)
	if err != nil {
		return types.Ping{}, fmt.Errorf("docker unavailable at %s: ping: %w", e.DaemonHost(), err)
	}
	if ping.APIVersion != "" && versions.LessThan(ping.APIVersion, MinAPIVersion) {
		return types.Ping{}, fmt.Errorf("docker unavailable at %s: Engine API %s is older than %s (Docker 20.10)", e.DaemonHost(), ping.APIVersion, MinAPIVersion)
	}
	e.NegotiateAPIVersionPing(ping)
	return ping, nil
}

// SocketPath is the Unix socket path of a Docker host address
// ("unix:///run/user/1000/docker.sock" → "/run/user/1000/docker.sock"),
// or "" for any other transport: the path Policy.EngineSocket protects.
func SocketPath(daemonHost string) string {
	p, ok := strings.CutPrefix(daemonHost, "unix://")
	if !ok || !strings.HasPrefix(p, "/") {
		return ""
	}
	return p
}

// ManagedFilter selects the managed containers: the label, never the
// name (S008-FR-014, FR-020).
func ManagedFilter() filters.Args {
	return filters.NewArgs(filters.Arg("label", api.LabelManagedBy+"="+api.LabelManagedByValue))
}

// ManagedEventsFilter selects the events of managed containers
// (S008-FR-031).
func ManagedEventsFilter() filters.Args {
	return filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)), filters.Arg("label", api.LabelManagedBy+"="+api.LabelManagedByValue))
}

// IsManaged reports whether a container's labels mark it as Outcall's: the
// check every lifecycle call makes on the inspected container before it
// acts on its id (S008-FR-034).
func IsManaged(labels map[string]string) bool {
	return labels[api.LabelManagedBy] == api.LabelManagedByValue
}
