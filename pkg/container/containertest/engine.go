// Package containertest provides a fake container.Engine: an in-memory
// Docker engine that records every call in order, so the manager's logic
// (validation before any call, rollback after a failed start, label checks
// before acting on an id) can be tested without Docker. It models only
// what the manager relies on: containers with labels and state, networks,
// local images, an event stream and the ping.
package containertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/versions"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	outcallcontainer "outcall.dev/outcall/pkg/container"
)

// Container is one container of the fake engine, with what it was created
// with.
type Container struct {
	ID         string
	Name       string
	Config     container.Config
	HostConfig container.HostConfig
	Networking network.NetworkingConfig
	Running    bool
	Created    time.Time
	// SandboxKey is the network namespace of the running container: a new
	// one at every start, as Docker's, and none while stopped.
	SandboxKey string
}

// Engine is a fake Docker engine. The zero value is not usable; use New.
// Errors set in Fail make the named method fail once its turn comes; a
// method not named there behaves like Docker.
type Engine struct {
	mu         sync.Mutex
	calls      []string
	containers map[string]*Container // by id
	networks   map[string]network.Inspect
	images     map[string]bool
	fail       map[string]error
	failOnce   map[string][]error
	subs       []*sub
	oneShot    map[string]bool
	pullErrors map[string]string
	down       bool
	pending    []events.Message
	version    string
	// pingBlock makes Ping wait for its context, as a hung engine does.
	pingBlock bool
	// PingAPIVersion is the version Ping reports ("1.41" for Debian's
	// docker.io 20.10).
	PingAPIVersion string
}

// New returns an empty fake engine speaking API 1.51 (Docker 28).
func New() *Engine {
	return &Engine{
		containers: map[string]*Container{}, networks: map[string]network.Inspect{},
		images: map[string]bool{}, fail: map[string]error{}, failOnce: map[string][]error{},
		oneShot: map[string]bool{}, pullErrors: map[string]string{},
		version: "1.51", PingAPIVersion: "1.51",
	}
}

var _ outcallcontainer.Engine = (*Engine)(nil)

// Fail makes every later call of method (an Engine method name, such as
// "ContainerStart") return err; a nil err clears it.
func (e *Engine) Fail(method string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		delete(e.fail, method)
		return
	}
	e.fail[method] = err
}

// FailOnce makes the next call of method return err, before any error set
// by Fail; calling it again queues more.
func (e *Engine) FailOnce(method string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failOnce[method] = append(e.failOnce[method], err)
}

// ConnectionFailed is the error the Docker client returns when the engine
// cannot be reached (client.IsErrConnectionFailed reports it).
func (e *Engine) ConnectionFailed() error {
	//lint:ignore SA1019 the only exported way to build the client's own connection error
	return client.ErrorConnectionFailed(e.DaemonHost())
}

// SetDown stops (true) or restarts (false) the engine, as dockerd going
// away: while down every call fails with ConnectionFailed, and going down
// ends every open event stream with that error.
func (e *Engine) SetDown(down bool) {
	e.mu.Lock()
	e.down = down
	var subs []*sub
	if down {
		subs, e.subs = e.subs, nil
	}
	e.mu.Unlock()
	for _, s := range subs {
		s.end(e.ConnectionFailed())
	}
}

// BreakEvents ends every open event stream with err, the engine staying
// up (a proxy in between dropping the connection).
func (e *Engine) BreakEvents(err error) {
	e.mu.Lock()
	subs := e.subs
	e.subs = nil
	e.mu.Unlock()
	for _, s := range subs {
		s.end(err)
	}
}

// Subscribers is the number of open event streams.
func (e *Engine) Subscribers() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.subs)
}

// OneShot makes the containers of image exit as soon as they start, as a
// one-shot command does (S008-FR-011).
func (e *Engine) OneShot(image string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.oneShot[image] = true
}

// PullFails makes a pull of ref fail inside the progress stream with msg,
// as a registry's refusal does (the call itself succeeds).
func (e *Engine) PullFails(ref, msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pullErrors[ref] = msg
}

// SetRunning changes a container's state without any event: what Docker
// did while nobody was listening. A container that runs gets a new
// sandbox.
func (e *Engine) SetRunning(idOrName string, running bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.findLocked(idOrName); c != nil {
		c.setRunning(running)
	}
}

// Delete removes a container without any event.
func (e *Engine) Delete(idOrName string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.findLocked(idOrName); c != nil {
		delete(e.containers, c.ID)
	}
}

// Die makes a running container exit on its own (a crash, an OOM kill),
// with the events Docker sends for it.
func (e *Engine) Die(idOrName string, oom bool) {
	e.mu.Lock()
	c := e.findLocked(idOrName)
	var evs []events.Message
	if c != nil && c.Running {
		if oom {
			evs = append(evs, c.event(events.ActionOOM))
		}
		c.setRunning(false)
		evs = append(evs, c.event(events.ActionDie))
	}
	e.mu.Unlock()
	e.send(evs...)
}

// HangPing makes Ping block until its context ends, as an engine whose
// socket accepts but never answers does (S008-AS-017).
func (e *Engine) HangPing(hang bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pingBlock = hang
}

// AddImage makes ref a local image.
func (e *Engine) AddImage(ref string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.images[ref] = true
}

// AddNetwork adds a network as NetworkInspect returns it.
func (e *Engine) AddNetwork(n network.Inspect) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.networks[n.ID] = n
}

// AddContainer adds a container directly, as if created outside Outcall
// (an unmanaged one has no managed-by label).
func (e *Engine) AddContainer(c Container) {
	e.mu.Lock()
	defer e.mu.Unlock()
	cc := c
	if cc.Running && cc.SandboxKey == "" {
		cc.setRunning(true)
	}
	e.containers[c.ID] = &cc
}

// Calls returns the calls made so far, in order, as "Method arg".
func (e *Engine) Calls() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.calls)
}

// Container returns a container by id or name.
func (e *Engine) Container(idOrName string) (Container, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.findLocked(idOrName)
	if c == nil {
		return Container{}, false
	}
	return *c, true
}

// Emit sends an event to every open Events stream whose filter it passes.
func (e *Engine) Emit(m events.Message) { e.send(m) }

// ContainerEvent is the event Docker sends for a container: its id, and
// its name and labels as attributes.
func (e *Engine) ContainerEvent(idOrName string, action events.Action) events.Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.findLocked(idOrName); c != nil {
		return c.event(action)
	}
	return events.Message{Type: events.ContainerEventType, Action: action, Actor: events.Actor{ID: idOrName, Attributes: map[string]string{"name": idOrName}}}
}

func (c *Container) event(action events.Action) events.Message {
	attrs := maps.Clone(c.Config.Labels)
	if attrs == nil {
		attrs = map[string]string{}
	}
	attrs["name"] = c.Name
	attrs["image"] = c.Config.Image
	return events.Message{Type: events.ContainerEventType, Action: action, Actor: events.Actor{ID: c.ID, Attributes: attrs}, Scope: "local", TimeNano: time.Now().UnixNano()}
}

func (c *Container) setRunning(running bool) {
	c.Running = running
	c.SandboxKey = ""
	if running {
		c.SandboxKey = "/var/run/docker/netns/" + newID()[:12]
	}
}

// sub is one open event stream.
type sub struct {
	filter filters.Args
	msgs   chan events.Message
	errs   chan error
	once   sync.Once
}

func (s *sub) end(err error) {
	s.once.Do(func() { s.errs <- err })
}

// passes applies the type and label filters, as Docker does.
func (s *sub) passes(m events.Message) bool {
	if types := s.filter.Get("type"); len(types) > 0 && !slices.Contains(types, string(m.Type)) {
		return false
	}
	return matchLabels(m.Actor.Attributes, s.filter.Get("label"))
}

// send delivers events to the open streams; it must be called without the
// lock. A stream whose reader is too slow (256 queued) ends with an error,
// as Docker drops a slow subscriber.
func (e *Engine) send(evs ...events.Message) {
	if len(evs) == 0 {
		return
	}
	e.mu.Lock()
	subs := slices.Clone(e.subs)
	e.mu.Unlock()
	for _, m := range evs {
		for _, s := range subs {
			if !s.passes(m) {
				continue
			}
			select {
			case s.msgs <- m:
			default:
				e.mu.Lock()
				e.subs = slices.DeleteFunc(e.subs, func(x *sub) bool { return x == s })
				e.mu.Unlock()
				s.end(errors.New("event stream: subscriber too slow"))
			}
		}
	}
}

// enter records a call and returns the error set for its method.
func (e *Engine) enter(method, arg string) error {
	e.calls = append(e.calls, strings.TrimSpace(method+" "+arg))
	if e.down {
		//lint:ignore SA1019 the only exported way to build the client's own connection error
		return client.ErrorConnectionFailed(e.DaemonHost())
	}
	if q := e.failOnce[method]; len(q) > 0 {
		e.failOnce[method] = q[1:]
		return q[0]
	}
	return e.fail[method]
}

func (e *Engine) findLocked(idOrName string) *Container {
	if c, ok := e.containers[idOrName]; ok {
		return c
	}
	name := strings.TrimPrefix(idOrName, "/")
	for _, c := range e.containers {
		if c.Name == name {
			return c
		}
	}
	// Docker also takes an unambiguous id prefix.
	var found *Container
	for id, c := range e.containers {
		if len(idOrName) >= 3 && strings.HasPrefix(id, idOrName) {
			if found != nil {
				return nil
			}
			found = c
		}
	}
	return found
}

func notFound(what, name string) error {
	return errdefs.ErrNotFound.WithMessage(fmt.Sprintf("No such %s: %s", what, name))
}

func newID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ContainerCreate implements outcallcontainer.Engine.
func (e *Engine) ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, name string) (container.CreateResponse, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.enter("ContainerCreate", name); err != nil {
		return container.CreateResponse{}, err
	}
	if config == nil || hostConfig == nil || networkingConfig == nil {
		return container.CreateResponse{}, errdefs.ErrInvalidArgument.WithMessage("config, host config and networking config are required")
	}
	if !e.images[config.Image] {
		return container.CreateResponse{}, notFound("image", config.Image)
	}
	if name != "" && e.findLocked(name) != nil {
		return container.CreateResponse{}, errdefs.ErrConflict.WithMessage(fmt.Sprintf("Conflict. The container name %q is already in use", "/"+name))
	}
	c := &Container{ID: newID(), Name: name, Config: *config, HostConfig: *hostConfig, Networking: *networkingConfig, Created: time.Now().UTC()}
	c.Config.Labels = maps.Clone(config.Labels)
	e.containers[c.ID] = c
	return container.CreateResponse{ID: c.ID}, nil
}

// ContainerStart implements outcallcontainer.Engine.
func (e *Engine) ContainerStart(ctx context.Context, id string, _ container.StartOptions) error {
	e.mu.Lock()
	defer e.unlock()
	if err := e.enter("ContainerStart", id); err != nil {
		return err
	}
	c := e.findLocked(id)
	if c == nil {
		return notFound("container", id)
	}
	if c.Running {
		return nil
	}
	c.setRunning(true)
	evs := []events.Message{c.event(events.ActionStart)}
	if e.oneShot[c.Config.Image] {
		c.setRunning(false)
		evs = append(evs, c.event(events.ActionDie))
	}
	e.afterUnlock(evs)
	return nil
}

// afterUnlock queues events to send once the method's lock is released.
func (e *Engine) afterUnlock(evs []events.Message) {
	e.pending = append(e.pending, evs...)
}

// unlock releases the lock and sends the events the call queued.
func (e *Engine) unlock() {
	evs := e.pending
	e.pending = nil
	e.mu.Unlock()
	e.send(evs...)
}

// ContainerStop implements outcallcontainer.Engine.
func (e *Engine) ContainerStop(ctx context.Context, id string, opts container.StopOptions) error {
	e.mu.Lock()
	defer e.unlock()
	timeout := "default"
	if opts.Timeout != nil {
		timeout = fmt.Sprint(*opts.Timeout)
	}
	if err := e.enter("ContainerStop", id+" timeout="+timeout); err != nil {
		return err
	}
	c := e.findLocked(id)
	if c == nil {
		return notFound("container", id)
	}
	if !c.Running {
		return nil // Docker: 304, no error
	}
	c.setRunning(false)
	e.afterUnlock([]events.Message{c.event(events.ActionKill), c.event(events.ActionDie), c.event(events.ActionStop)})
	return nil
}

// ContainerRemove implements outcallcontainer.Engine.
func (e *Engine) ContainerRemove(ctx context.Context, id string, opts container.RemoveOptions) error {
	e.mu.Lock()
	defer e.unlock()
	if err := e.enter("ContainerRemove", fmt.Sprintf("%s force=%t volumes=%t", id, opts.Force, opts.RemoveVolumes)); err != nil {
		return err
	}
	c := e.findLocked(id)
	if c == nil {
		return notFound("container", id)
	}
	if c.Running && !opts.Force {
		return errdefs.ErrConflict.WithMessage("cannot remove a running container")
	}
	var evs []events.Message
	if c.Running {
		c.setRunning(false)
		evs = append(evs, c.event(events.ActionKill), c.event(events.ActionDie))
	}
	e.afterUnlock(append(evs, c.event(events.ActionDestroy)))
	delete(e.containers, c.ID)
	return nil
}

// ContainerInspect implements outcallcontainer.Engine.
func (e *Engine) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.enter("ContainerInspect", id); err != nil {
		return container.InspectResponse{}, err
	}
	c := e.findLocked(id)
	if c == nil {
		return container.InspectResponse{}, notFound("container", id)
	}
	return c.inspect(), nil
}

func (c *Container) state() container.ContainerState {
	if c.Running {
		return container.StateRunning
	}
	return container.StateExited
}

func (c *Container) inspect() container.InspectResponse {
	cfg := c.Config
	cfg.Env = slices.Clone(c.Config.Env)
	cfg.Labels = maps.Clone(c.Config.Labels)
	hc := c.HostConfig
	out := container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{
			ID: c.ID, Name: "/" + c.Name, Created: c.Created.Format(time.RFC3339Nano),
			State:      &container.State{Status: c.state(), Running: c.Running},
			HostConfig: &hc,
		},
		Config:          &cfg,
		NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{}},
	}
	out.NetworkSettings.SandboxKey = c.SandboxKey
	for name, ep := range c.Networking.EndpointsConfig {
		s := &network.EndpointSettings{NetworkID: ep.NetworkID, MacAddress: ep.MacAddress}
		if ep.IPAMConfig != nil {
			s.IPAddress = ep.IPAMConfig.IPv4Address
		}
		out.NetworkSettings.Networks[name] = s
	}
	for _, m := range c.HostConfig.Mounts {
		out.Mounts = append(out.Mounts, container.MountPoint{Type: m.Type, Source: m.Source, Destination: m.Target, RW: !m.ReadOnly})
	}
	return out
}

// ContainerList implements outcallcontainer.Engine. It honours the "label"
// filters (key or key=value) and All.
func (e *Engine) ContainerList(ctx context.Context, opts container.ListOptions) ([]container.Summary, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.enter("ContainerList", strings.Join(opts.Filters.Get("label"), ",")); err != nil {
		return nil, err
	}
	var out []container.Summary
	for _, c := range e.containers {
		if !opts.All && !c.Running {
			continue
		}
		if !matchLabels(c.Config.Labels, opts.Filters.Get("label")) {
			continue
		}
		out = append(out, container.Summary{
			ID: c.ID, Names: []string{"/" + c.Name}, Image: c.Config.Image, Labels: maps.Clone(c.Config.Labels),
			State: c.state(), Created: c.Created.Unix(),
		})
	}
	slices.SortFunc(out, func(a, b container.Summary) int { return strings.Compare(a.Names[0], b.Names[0]) })
	return out, nil
}

func matchLabels(labels map[string]string, want []string) bool {
	for _, w := range want {
		k, v, hasValue := strings.Cut(w, "=")
		got, ok := labels[k]
		if !ok || hasValue && got != v {
			return false
		}
	}
	return true
}

// Events implements outcallcontainer.Engine: a stream of what Emit sends, until
// ctx ends (then the error channel reports ctx's error).
func (e *Engine) Events(ctx context.Context, opts events.ListOptions) (<-chan events.Message, <-chan error) {
	s := &sub{filter: opts.Filters.Clone(), msgs: make(chan events.Message, 256), errs: make(chan error, 1)}
	e.mu.Lock()
	err := e.enter("Events", strings.Join(opts.Filters.Get("label"), ","))
	if err == nil {
		e.subs = append(e.subs, s)
	}
	e.mu.Unlock()
	if err != nil {
		s.end(err)
		return s.msgs, s.errs
	}
	context.AfterFunc(ctx, func() {
		e.mu.Lock()
		e.subs = slices.DeleteFunc(e.subs, func(x *sub) bool { return x == s })
		e.mu.Unlock()
		s.end(ctx.Err())
	})
	return s.msgs, s.errs
}

// NetworkCreate implements outcallcontainer.Engine.
func (e *Engine) NetworkCreate(ctx context.Context, name string, opts network.CreateOptions) (network.CreateResponse, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.enter("NetworkCreate", name); err != nil {
		return network.CreateResponse{}, err
	}
	for _, n := range e.networks {
		if n.Name == name {
			return network.CreateResponse{}, errdefs.ErrConflict.WithMessage(fmt.Sprintf("network with name %s already exists", name))
		}
	}
	id := newID()
	e.networks[id] = network.Inspect{ID: id, Name: name, Driver: opts.Driver, Options: maps.Clone(opts.Options), Labels: maps.Clone(opts.Labels), IPAM: ptrValue(opts.IPAM)}
	return network.CreateResponse{ID: id}, nil
}

func ptrValue[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func (e *Engine) findNetworkLocked(idOrName string) (network.Inspect, bool) {
	if n, ok := e.networks[idOrName]; ok {
		return n, true
	}
	for _, n := range e.networks {
		if n.Name == idOrName {
			return n, true
		}
	}
	return network.Inspect{}, false
}

// NetworkInspect implements outcallcontainer.Engine.
func (e *Engine) NetworkInspect(ctx context.Context, idOrName string, _ network.InspectOptions) (network.Inspect, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.enter("NetworkInspect", idOrName); err != nil {
		return network.Inspect{}, err
	}
	n, ok := e.findNetworkLocked(idOrName)
	if !ok {
		return network.Inspect{}, notFound("network", idOrName)
	}
	n.Containers = e.endpointsLocked(n)
	return n, nil
}

// endpointsLocked lists the running containers connected to n, as
// NetworkInspect's Containers (the address with the subnet's length).
func (e *Engine) endpointsLocked(n network.Inspect) map[string]network.EndpointResource {
	bits := 24
	if len(n.IPAM.Config) > 0 {
		if p, err := netip.ParsePrefix(n.IPAM.Config[0].Subnet); err == nil {
			bits = p.Bits()
		}
	}
	out := map[string]network.EndpointResource{}
	for _, c := range e.containers {
		if !c.Running {
			continue
		}
		for name, ep := range c.Networking.EndpointsConfig {
			if name != n.Name && ep.NetworkID != n.ID {
				continue
			}
			r := network.EndpointResource{Name: c.Name, MacAddress: ep.MacAddress}
			if ep.IPAMConfig != nil && ep.IPAMConfig.IPv4Address != "" {
				r.IPv4Address = fmt.Sprintf("%s/%d", ep.IPAMConfig.IPv4Address, bits)
			}
			out[c.ID] = r
		}
	}
	return out
}

// NetworkRemove implements outcallcontainer.Engine.
func (e *Engine) NetworkRemove(ctx context.Context, idOrName string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.enter("NetworkRemove", idOrName); err != nil {
		return err
	}
	n, ok := e.findNetworkLocked(idOrName)
	if !ok {
		return notFound("network", idOrName)
	}
	if len(e.endpointsLocked(n)) > 0 {
		return errdefs.ErrConflict.WithMessage(fmt.Sprintf("error while removing network: network %s id %s has active endpoints", n.Name, n.ID))
	}
	delete(e.networks, n.ID)
	return nil
}

// NetworkList implements outcallcontainer.Engine (no filters).
func (e *Engine) NetworkList(ctx context.Context, _ network.ListOptions) ([]network.Summary, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.enter("NetworkList", ""); err != nil {
		return nil, err
	}
	out := make([]network.Summary, 0, len(e.networks))
	for _, n := range e.networks {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b network.Summary) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// ImageInspect implements outcallcontainer.Engine: a local image is found, any
// other is not.
func (e *Engine) ImageInspect(ctx context.Context, ref string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.enter("ImageInspect", ref); err != nil {
		return image.InspectResponse{}, err
	}
	if !e.images[ref] {
		return image.InspectResponse{}, notFound("image", ref)
	}
	return image.InspectResponse{ID: "sha256:" + newID(), RepoTags: []string{ref}}, nil
}

// ImagePull implements outcallcontainer.Engine: the image becomes local, and the
// stream says whether it was there already, as Docker's does.
func (e *Engine) ImagePull(ctx context.Context, ref string, _ image.PullOptions) (io.ReadCloser, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.enter("ImagePull", ref); err != nil {
		return nil, err
	}
	if msg, ok := e.pullErrors[ref]; ok {
		return io.NopCloser(strings.NewReader(fmt.Sprintf("{\"status\":\"Pulling from %s\"}\n{\"errorDetail\":{\"message\":%q},\"error\":%q}\n", ref, msg, msg))), nil
	}
	status := "Status: Downloaded newer image for " + ref
	if e.images[ref] {
		status = "Status: Image is up to date for " + ref
	}
	e.images[ref] = true
	return io.NopCloser(strings.NewReader(fmt.Sprintf("{\"status\":\"Pulling from %s\"}\n{\"status\":%q}\n", ref, status))), nil
}

// Ping implements outcallcontainer.Engine.
func (e *Engine) Ping(ctx context.Context) (types.Ping, error) {
	e.mu.Lock()
	err, block, v := e.enter("Ping", ""), e.pingBlock, e.PingAPIVersion
	e.mu.Unlock()
	if block {
		<-ctx.Done()
		return types.Ping{}, ctx.Err()
	}
	if err != nil {
		return types.Ping{}, err
	}
	return types.Ping{APIVersion: v, OSType: "linux"}, nil
}

// NegotiateAPIVersionPing implements outcallcontainer.Engine: the client's
// version drops to the engine's if that is older.
func (e *Engine) NegotiateAPIVersionPing(p types.Ping) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p.APIVersion != "" && versions.LessThan(p.APIVersion, e.version) {
		e.version = p.APIVersion
	}
}

// ClientVersion implements outcallcontainer.Engine.
func (e *Engine) ClientVersion() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.version
}

// DaemonHost implements outcallcontainer.Engine.
func (e *Engine) DaemonHost() string { return "unix:///var/run/docker.sock" }

// Close implements outcallcontainer.Engine.
func (e *Engine) Close() error { return nil }
