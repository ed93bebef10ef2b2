package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"outcall.dev/outcall/internal/atomicfile"
	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
)

// ManagerOptions configure a Manager. Engine, Networks and Validator are
// required.
type ManagerOptions struct {
	// Engine is the Docker client (NewEngine), or a fake.
	Engine Engine
	// Networks is the network controller's side: Outcall networks and the
	// identities of the containers on them.
	Networks Networks
	// Validator checks create requests (NewValidator).
	Validator *Validator
	// Logger; slog.Default() if nil.
	Logger *slog.Logger
	// PingTimeout bounds every availability ping; PingTimeout (3 s) if
	// not positive (S008-FR-036).
	PingTimeout time.Duration
	// MinBackoff and MaxBackoff bound the waits between attempts to reach
	// Docker and to reopen its event stream; 500 ms and 30 s if not
	// positive.
	MinBackoff, MaxBackoff time.Duration
	// ResyncInterval is how often Run sweeps while the event stream is
	// open, in case an event was lost; 5 minutes if zero, never if
	// negative.
	ResyncInterval time.Duration
	// StateFile keeps the ids of the containers Outcall created (with
	// their names) across daemon restarts, so a stopped managed container
	// started again after a restart gets its identity back. Optional:
	// without it, only containers this process created or found bound in
	// the registry are known.
	StateFile string
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// ResolvDir, if set, is where the manager keeps one resolver file per
	// network (ResolvConfContent), mounted read-only over each managed
	// container's /etc/resolv.conf (Facts.ResolvConf). dockerd must see
	// the same path: the daemon and Docker share the host's file system.
	ResolvDir string
}

// Manager is the Docker manager (S008): it creates hardened agent
// containers on Outcall networks, stops, removes, lists and inspects the
// managed ones, pulls images, and, in Run, follows Docker so that every
// running managed container has its identity and no other container
// keeps one. Its methods take and return the host API's types; their
// errors carry apikit kinds. It never stops a container on its own
// (S008-FR-020).
type Manager struct {
	engine   Engine
	nets     Networks
	validate *Validator
	log      *slog.Logger
	opts     ManagerOptions
	now      func() time.Time
	m        *metrics

	// names serialises the work on one container name: a create from
	// reserve to bind, and the reconciliation events and sweeps do.
	names keyedMutex

	mu     sync.Mutex
	status Status
	// known are the containers Outcall created or found bound in the
	// registry, by id, with their names: the only ones the sweep gives an
	// identity that the registry does not hold (labels can be forged).
	known map[string]string
	// sandboxes are the network namespaces identities were bound in, by
	// container name: a different one means the container started again
	// unseen, on a new port.
	sandboxes map[string]string
	// untrusted are the labelled containers already reported as not
	// Outcall's, so each is logged once.
	untrusted map[string]bool
	// lastGauge is when the state gauge was last refreshed.
	lastGauge time.Time
	// saveMu orders the writes of the StateFile, resolvMu those of the
	// resolver files.
	saveMu   sync.Mutex
	resolvMu sync.Mutex
}

// DockerState is the manager's view of the Docker engine.
type DockerState string

// Docker states. Starting is before the first ping has answered or
// failed; Degraded is a failed or timed-out ping, a failed call, or a
// lost event stream: the daemon keeps enforcing, and says so
// (S008-FR-036).
const (
	DockerStarting  DockerState = "starting"
	DockerAvailable DockerState = "available"
	DockerDegraded  DockerState = "degraded"
)

// Status is what the manager knows of Docker.
type Status struct {
	State DockerState
	// Reason is why the manager is degraded ("" when available).
	Reason string
	// Host is the engine's address.
	Host string
	// APIVersion is the negotiated Engine API version, once available.
	APIVersion string
	// Since is when State last changed.
	Since time.Time
}

// NewManager checks the options and returns a Manager. It makes no Docker
// call: Run does, and every method pings first while Docker is not known
// to be available.
func NewManager(o ManagerOptions) (*Manager, error) {
	switch {
	case o.Engine == nil:
		return nil, errors.New("container manager: an engine is required")
	case o.Networks == nil:
		return nil, errors.New("container manager: the network controller is required")
	case o.Validator == nil:
		return nil, errors.New("container manager: a validator is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = PingTimeout
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.ResyncInterval == 0 {
		o.ResyncInterval = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Manager{
		engine: o.Engine, nets: o.Networks, validate: o.Validator, log: o.Logger.With("component", "docker"),
		opts: o, now: o.Now,
		known: map[string]string{}, sandboxes: map[string]string{}, untrusted: map[string]bool{},
	}
	m.status = Status{State: DockerStarting, Reason: "docker not reached yet", Host: o.Engine.DaemonHost(), Since: o.Now()}
	m.m = newMetrics(m)
	if o.StateFile != "" {
		known, err := loadKnown(o.StateFile)
		if err != nil {
			// A lost file costs identities of stopped containers only;
			// running ones are found bound in the registry.
			m.log.Warn("container state file unreadable; starting without it", "file", o.StateFile, "err", err)
		}
		for id, name := range known {
			m.known[id] = name
		}
	}
	return m, nil
}

// Status returns what the manager knows of Docker.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

func (m *Manager) setAvailable(apiVersion string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.status.State != DockerAvailable {
		m.log.Info("docker available", "host", m.status.Host, "api_version", apiVersion)
		m.status.Since = m.now()
	}
	m.status.State, m.status.Reason, m.status.APIVersion = DockerAvailable, "", apiVersion
}

func (m *Manager) setDegraded(reason error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.status.State != DockerDegraded {
		m.log.Warn("docker unavailable: container management degraded, enforcement continues", "host", m.status.Host, "err", reason)
		m.status.Since = m.now()
	}
	m.status.State, m.status.Reason = DockerDegraded, reason.Error()
}

// ready returns nil when Docker is available, pinging it (bounded) when
// it is not known to be: constructing a client is not availability, and a
// degraded manager answers within the ping's bound (S008-AS-010, EC-003).
func (m *Manager) ready(ctx context.Context) error {
	if m.Status().State == DockerAvailable {
		return nil
	}
	ping, err := Available(ctx, m.engine, m.opts.PingTimeout)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.setDegraded(err)
		return apikit.Wrap(apikit.ErrUnavailable, err)
	}
	m.setAvailable(apiVersionOf(ping.APIVersion, m.engine))
	return nil
}

func apiVersionOf(pinged string, e Engine) string {
	if v := e.ClientVersion(); v != "" {
		return v
	}
	return pinged
}

// dockerErr marks a Docker call's failure with its kind: unreachable
// Docker is unavailable (and the manager degraded until a ping answers),
// Docker's own not-found, conflict, invalid and permission errors keep
// their meaning; Docker's message is kept (S008-EC-011, EC-013).
func (m *Manager) dockerErr(op string, err error) error {
	if err == nil {
		return nil
	}
	wrapped := fmt.Errorf("%s: %w", op, err)
	switch {
	case client.IsErrConnectionFailed(err) || errdefs.IsUnavailable(err):
		m.setDegraded(err)
		return apikit.Wrap(apikit.ErrUnavailable, fmt.Errorf("docker unavailable: %w", wrapped))
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return apikit.Wrap(apikit.ErrUnavailable, wrapped)
	case errdefs.IsNotFound(err):
		return apikit.Wrap(apikit.ErrNotFound, wrapped)
	case errdefs.IsConflict(err) || errdefs.IsAlreadyExists(err):
		return apikit.Wrap(apikit.ErrConflict, wrapped)
	case errdefs.IsInvalidArgument(err):
		return apikit.Wrap(apikit.ErrInvalid, wrapped)
	case errdefs.IsPermissionDenied(err) || errdefs.IsUnauthorized(err):
		return apikit.Wrap(apikit.ErrForbidden, wrapped)
	}
	return wrapped
}

// errNotExist is a container that does not exist (S008-EC-004, IF-005).
func errNotExist(name string) error {
	return apikit.Errorf(apikit.ErrNotFound, "container %q does not exist", name)
}

// errUnmanaged refuses a container outcalld does not manage, saying
// nothing else of it (S008-AS-016, EC-019).
func errUnmanaged(name string) error {
	return apikit.Errorf(apikit.ErrForbidden, "container %q is not managed by outcalld", name)
}

// inspectManaged inspects the container called name and requires the
// managed label. found is false, with no error, for a container that does
// not exist.
func (m *Manager) inspectManaged(ctx context.Context, name string) (in container.InspectResponse, found bool, err error) {
	if name == "" {
		return in, false, apikit.Errorf(apikit.ErrInvalid, "a container name is required")
	}
	if strings.ContainsAny(name, "/?#\x00") {
		// Never a container name; "/" would make Docker read a path.
		return in, false, apikit.Errorf(apikit.ErrInvalid, "invalid container name %q", name)
	}
	in, err = m.engine.ContainerInspect(ctx, name)
	switch {
	case errdefs.IsNotFound(err):
		return in, false, nil
	case err != nil:
		return in, false, m.dockerErr(fmt.Sprintf("inspect container %q", name), err)
	case in.ContainerJSONBase == nil || in.Config == nil || !IsManaged(in.Config.Labels):
		return container.InspectResponse{}, false, errUnmanaged(name)
	case strings.TrimPrefix(in.Name, "/") != name:
		// Docker also finds a container by its id or an id prefix: the
		// host API names containers by name only.
		return container.InspectResponse{}, false, nil
	}
	return in, true, nil
}

func running(in container.InspectResponse) bool {
	return in.ContainerJSONBase != nil && in.State != nil && in.State.Running
}

// CreateContainer validates the request, checks the network and the image, gives
// the container its identity, creates and starts it hardened (Build) and
// binds the identity to its port, in that order; a failure after the
// identity was reserved leaves nothing behind (S008-FR-011, FR-035).
func (m *Manager) CreateContainer(ctx context.Context, req api.ContainerCreateRequest) (res api.ContainerCreateResult, err error) {
	start := m.now()
	outcome := "refused"
	defer func() {
		if err == nil {
			outcome = "created"
		}
		m.m.createDuration.WithLabelValues(outcome).Observe(m.now().Sub(start).Seconds())
	}()
	c, err := m.validate.Validate(req)
	if err != nil {
		return res, err
	}
	if err := m.ready(ctx); err != nil {
		return res, err
	}
	info, ok := m.nets.Network(c.Network)
	if !ok {
		return res, apikit.Errorf(apikit.ErrNotFound, "network %q does not exist", c.Network)
	}
	dn, err := m.dockerNetwork(ctx, info)
	if err != nil {
		return res, err
	}
	if _, err := m.engine.ImageInspect(ctx, c.Image.Ref); err != nil {
		if errdefs.IsNotFound(err) {
			return res, apikit.Errorf(apikit.ErrNotFound, "image %q not found locally — pull it first", req.Image)
		}
		return res, m.dockerErr(fmt.Sprintf("inspect image %q", req.Image), err)
	}

	unlock := m.names.lock(c.Name)
	defer unlock()
	// Docker would refuse the name at create; asking first keeps the
	// identity of the container that holds it untouched (S008-EC-013).
	// (Docker also finds a container by an id prefix: only the name
	// counts.)
	switch in, err := m.engine.ContainerInspect(ctx, c.Name); {
	case err == nil && in.ContainerJSONBase != nil && trimSlash(in.Name) == c.Name:
		return res, apikit.Errorf(apikit.ErrConflict, "container name %q is already in use", c.Name)
	case err != nil && !errdefs.IsNotFound(err):
		return res, m.dockerErr(fmt.Sprintf("inspect container %q", c.Name), err)
	}

	outcome = "failed"
	r, err := m.nets.Reserve(ctx, Reservation{Network: info.Name, Name: c.Name})
	if err != nil {
		return res, fmt.Errorf("register identity of container %q: %w", c.Name, err)
	}
	resolv, err := m.resolvConf(info)
	if err != nil {
		return res, errors.Join(err, m.release(ctx, c.Name))
	}
	spec, err := Build(c, Facts{
		Network: info.Name, NetworkID: dn.ID, IPv4: r.IPv4, MAC: r.MAC,
		Gateway: netip.PrefixFrom(info.Gateway, info.Subnet.Bits()), DNS: info.Gateway, Proxy: info.Proxy,
		Identity: r.Identity, APIVersion: m.engine.ClientVersion(), CreatedAt: m.now(), ResolvConf: resolv,
	})
	if err != nil {
		return res, errors.Join(err, m.release(ctx, c.Name))
	}
	created, err := m.engine.ContainerCreate(ctx, spec.Config, spec.HostConfig, spec.Networking, nil, spec.Name)
	if err != nil {
		return res, errors.Join(m.dockerErr(fmt.Sprintf("create container %q", c.Name), err), m.release(ctx, c.Name))
	}
	m.remember(created.ID, c.Name)
	if err := m.engine.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return res, m.rollback(ctx, created.ID, c.Name, m.dockerErr(fmt.Sprintf("start container %q", c.Name), err))
	}
	if err := m.bindStarted(ctx, created.ID, c.Name); err != nil {
		return res, m.rollback(ctx, created.ID, c.Name, err)
	}
	m.log.Info("container created", "name", c.Name, "id", created.ID, "network", info.Name, "ip", r.IPv4, "identity", r.Identity, "request", LogRequest(req))
	return api.ContainerCreateResult{ContainerID: created.ID, Name: c.Name, Created: true}, nil
}

// bindStarted binds the reserved identity of a container just started to
// its port. One that has exited already is created all the same
// (S008-FR-011): it has no port, and its identity goes.
func (m *Manager) bindStarted(ctx context.Context, id, name string) error {
	in, err := m.engine.ContainerInspect(ctx, id)
	if err != nil {
		return m.dockerErr(fmt.Sprintf("inspect started container %q", name), err)
	}
	if !running(in) {
		return m.release(ctx, name)
	}
	key := sandboxKey(in)
	if key == "" {
		return fmt.Errorf("bind identity of container %q: Docker reports no network namespace", name)
	}
	if err := m.nets.Bind(ctx, name, id, key); err != nil {
		// It may have exited meanwhile: then there was no port to bind.
		if again, ierr := m.engine.ContainerInspect(ctx, id); ierr == nil && !running(again) {
			return m.release(ctx, name)
		}
		return fmt.Errorf("bind identity of container %q: %w", name, err)
	}
	m.mu.Lock()
	m.sandboxes[name] = key
	m.mu.Unlock()
	return nil
}

func sandboxKey(in container.InspectResponse) string {
	if in.NetworkSettings == nil {
		return ""
	}
	return in.NetworkSettings.SandboxKey
}

// rollback removes a container whose start or binding failed, with its
// anonymous volumes, and releases its identity; the error holds the
// failure and, if the rollback failed too, that as well (S008-FR-035,
// AS-018). It runs to its end even if the request was cancelled.
func (m *Manager) rollback(ctx context.Context, id, name string, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var failed []error
	if err := m.engine.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !errdefs.IsNotFound(err) {
		failed = append(failed, fmt.Errorf("rollback: remove container %q (%s): %w", name, id, err))
	} else {
		m.forget(id)
	}
	if err := m.nets.Release(ctx, name); err != nil {
		failed = append(failed, fmt.Errorf("rollback: release identity of container %q: %w", name, err))
	}
	result := "ok"
	if len(failed) > 0 {
		result = "failed"
		m.log.Error("container create rollback failed", "name", name, "id", id, "cause", cause, "err", errors.Join(failed...))
	}
	m.m.rollbacks.WithLabelValues(result).Inc()
	return errors.Join(append([]error{cause}, failed...)...)
}

func (m *Manager) release(ctx context.Context, name string) error {
	m.mu.Lock()
	delete(m.sandboxes, name)
	m.mu.Unlock()
	if err := m.nets.Release(context.WithoutCancel(ctx), name); err != nil {
		return fmt.Errorf("release identity of container %q: %w", name, err)
	}
	return nil
}

// StopContainer stops a running managed container: SIGTERM, then SIGKILL after the
// timeout (S008-FR-012, FR-028), on the inspected id (FR-034). One that is
// not running is Stopped false (EC-007); its identity goes with it.
func (m *Manager) StopContainer(ctx context.Context, req api.ContainerStopRequest) (api.ContainerStopResult, error) {
	res := api.ContainerStopResult{Name: req.Name}
	secs := api.DefaultStopTimeoutSecs
	if req.Timeout != nil {
		secs = *req.Timeout
	}
	if secs < 0 || secs > 24*3600 {
		return res, apikit.Errorf(apikit.ErrInvalid, "invalid timeout %d: need 0 to 86400 seconds", secs)
	}
	if err := m.ready(ctx); err != nil {
		return res, err
	}
	in, found, err := m.inspectManaged(ctx, req.Name)
	switch {
	case err != nil:
		return res, err
	case !found:
		return res, errNotExist(req.Name)
	}
	if running(in) {
		t := int(secs)
		if err := m.engine.ContainerStop(ctx, in.ID, container.StopOptions{Timeout: &t}); err != nil {
			return res, m.dockerErr(fmt.Sprintf("stop container %q", req.Name), err)
		}
		res.Stopped = true
		m.log.Info("container stopped", "name", req.Name, "id", in.ID)
	}
	// The die event does the same; the stream may be down.
	if err := m.reconcile(context.WithoutCancel(ctx), req.Name); err != nil {
		m.log.Warn("identity of stopped container not reconciled", "name", req.Name, "err", err)
	}
	return res, nil
}

// RemoveContainer removes a managed container and its anonymous volumes
// (S008-FR-013) on the inspected id (FR-034). A running one is refused
// unless Force, which stops it first; one that does not exist is Removed
// false (EC-008).
func (m *Manager) RemoveContainer(ctx context.Context, req api.ContainerRemoveRequest) (api.ContainerRemoveResult, error) {
	res := api.ContainerRemoveResult{Name: req.Name}
	if err := m.ready(ctx); err != nil {
		return res, err
	}
	in, found, err := m.inspectManaged(ctx, req.Name)
	switch {
	case err != nil:
		return res, err
	case !found:
		return res, nil
	}
	if running(in) {
		if !req.Force {
			return res, apikit.Errorf(apikit.ErrConflict, "container %q is still running — stop it first or use force", req.Name)
		}
		t := int(api.DefaultStopTimeoutSecs)
		if err := m.engine.ContainerStop(ctx, in.ID, container.StopOptions{Timeout: &t}); err != nil && !errdefs.IsNotFound(err) {
			return res, m.dockerErr(fmt.Sprintf("stop container %q", req.Name), err)
		}
	}
	err = m.engine.ContainerRemove(ctx, in.ID, container.RemoveOptions{Force: req.Force, RemoveVolumes: true})
	switch {
	case errdefs.IsNotFound(err):
		// Gone meanwhile: removed, but not by us.
	case err != nil:
		return res, m.dockerErr(fmt.Sprintf("remove container %q", req.Name), err)
	default:
		res.Removed = true
		m.log.Info("container removed", "name", req.Name, "id", in.ID)
	}
	m.forget(in.ID)
	if err := m.reconcile(context.WithoutCancel(ctx), req.Name); err != nil {
		m.log.Warn("identity of removed container not reconciled", "name", req.Name, "err", err)
	}
	return res, nil
}

// Containers returns every container labelled managed-by=outcalld, whatever its
// name or state, sorted by name (S008-FR-014).
func (m *Manager) Containers(ctx context.Context) ([]api.ContainerInfo, error) {
	if err := m.ready(ctx); err != nil {
		return nil, err
	}
	list, err := m.engine.ContainerList(ctx, container.ListOptions{All: true, Filters: ManagedFilter()})
	if err != nil {
		return nil, m.dockerErr("list containers", err)
	}
	m.countStates(list)
	out := make([]api.ContainerInfo, 0, len(list))
	for _, c := range list {
		if !IsManaged(c.Labels) {
			continue
		}
		out = append(out, Summarize(c))
	}
	slices.SortFunc(out, func(a, b api.ContainerInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Container returns one managed container with its environment values
// redacted (S008-FR-015); an unmanaged one is refused without details
// (AS-016, EC-019).
func (m *Manager) Container(ctx context.Context, name string) (api.ContainerInspectResult, error) {
	if err := m.ready(ctx); err != nil {
		return api.ContainerInspectResult{}, err
	}
	in, found, err := m.inspectManaged(ctx, name)
	switch {
	case err != nil:
		return api.ContainerInspectResult{}, err
	case !found:
		return api.ContainerInspectResult{}, errNotExist(name)
	}
	return Inspect(in), nil
}

// pullMessage is one line of Docker's pull progress stream.
type pullMessage struct {
	Status      string `json:"status"`
	Error       string `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// PullImage pulls an image (S008-FR-017, IF-006). Pulled is false when the
// image was present and current. A failure, at the call or inside the
// progress stream, is `failed to pull image "<image>": <Docker's
// message>` (EC-006).
func (m *Manager) PullImage(ctx context.Context, req api.ImagePullRequest) (api.ImagePullResult, error) {
	res := api.ImagePullResult{Image: req.Image}
	ref, err := ParseImage("image", req.Image)
	if err != nil {
		return res, err
	}
	if err := m.ready(ctx); err != nil {
		return res, err
	}
	failed := func(err error) error {
		return m.dockerErr(fmt.Sprintf("failed to pull image %q", req.Image), err)
	}
	rc, err := m.engine.ImagePull(ctx, ref.Ref, image.PullOptions{})
	if err != nil {
		return res, failed(err)
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	upToDate := false
	for {
		var msg pullMessage
		if err := dec.Decode(&msg); err == io.EOF {
			break
		} else if err != nil {
			return res, failed(fmt.Errorf("reading the progress stream: %w", err))
		}
		if msg.ErrorDetail != nil && msg.ErrorDetail.Message != "" {
			msg.Error = msg.ErrorDetail.Message
		}
		if msg.Error != "" {
			return res, pullStreamErr(req.Image, msg.Error)
		}
		if strings.HasPrefix(msg.Status, "Status: Image is up to date") || strings.HasPrefix(msg.Status, "Image is up to date") {
			upToDate = true
		}
	}
	res.Pulled = !upToDate
	m.log.Info("image pulled", "image", ref.Ref, "pulled", res.Pulled)
	return res, nil
}

// pullStreamErr classifies a registry's refusal from its message: the
// stream carries no status code.
func pullStreamErr(img, msg string) error {
	err := fmt.Errorf("failed to pull image %q: %s", img, msg)
	low := strings.ToLower(msg)
	switch {
	case strings.Contains(low, "not found") || strings.Contains(low, "manifest unknown"):
		return apikit.Wrap(apikit.ErrNotFound, err)
	case strings.Contains(low, "denied") || strings.Contains(low, "unauthorized"):
		return apikit.Wrap(apikit.ErrForbidden, err)
	}
	return err
}

// remember records a container Outcall created.
func (m *Manager) remember(id, name string) {
	m.mu.Lock()
	m.known[id] = name
	m.mu.Unlock()
	m.saveKnown()
}

// forget drops a container that no longer exists.
func (m *Manager) forget(id string) {
	m.mu.Lock()
	_, had := m.known[id]
	delete(m.known, id)
	delete(m.untrusted, id)
	m.mu.Unlock()
	if had {
		m.saveKnown()
	}
}

// trusted reports whether a container is one Outcall created (or found
// bound to an identity) under that name.
func (m *Manager) trusted(id, name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.known[id] == name
}

// endpointOf is a container's address on its Outcall network: the
// outcall.network label's, which must be its only network (Build gives it
// one, and no Outcall API adds another).
func endpointOf(in container.InspectResponse) (netName string, ip netip.Addr, mac net.HardwareAddr, err error) {
	netName = in.Config.Labels[api.LabelNetwork]
	if in.NetworkSettings == nil || len(in.NetworkSettings.Networks) != 1 {
		return "", ip, nil, fmt.Errorf("container is not on exactly one network")
	}
	ep := in.NetworkSettings.Networks[netName]
	if ep == nil {
		return "", ip, nil, fmt.Errorf("container is not on its network %q", netName)
	}
	ip, err = netip.ParseAddr(ep.IPAddress)
	if err != nil || !ip.Is4() {
		return "", ip, nil, fmt.Errorf("container has no IPv4 address on %q", netName)
	}
	mac, err = net.ParseMAC(ep.MacAddress)
	if err != nil {
		//lint:ignore SA1019 below API 1.44 the container-wide MAC is the only one
		mac, err = net.ParseMAC(in.Config.MacAddress)
	}
	if err != nil || len(mac) != 6 {
		return "", ip, nil, fmt.Errorf("container has no MAC address on %q", netName)
	}
	return netName, ip, mac, nil
}

// keyedMutex is one mutex per key, kept while in use.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// resolvConf makes sure the resolver file of network info
// (ResolvConfContent, mode 0644: the container's non-root user reads it)
// is under ResolvDir and returns its path; "" without a ResolvDir. A file
// already right is left alone, so a container starting meanwhile never
// meets a replaced or unreadable one.
func (m *Manager) resolvConf(info NetworkInfo) (string, error) {
	if m.opts.ResolvDir == "" {
		return "", nil
	}
	m.resolvMu.Lock()
	defer m.resolvMu.Unlock()
	path := filepath.Join(m.opts.ResolvDir, info.Name+".conf")
	want := ResolvConfContent(info.Gateway)
	if b, err := os.ReadFile(path); err == nil && string(b) == want {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == 0o644 {
			return path, nil
		}
	}
	err := os.MkdirAll(m.opts.ResolvDir, 0o755)
	if err == nil {
		err = atomicfile.WriteFile(path, []byte(want))
	}
	if err == nil {
		err = os.Chmod(path, 0o644)
	}
	if err != nil {
		return "", fmt.Errorf("write the resolver file of network %s: %w", info.Name, err)
	}
	return path, nil
}
