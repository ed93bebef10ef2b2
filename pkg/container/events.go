package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"

	"outcall.dev/outcall/pkg/apikit"
)

// Run follows Docker until ctx ends, and returns nil then. It never stops
// a container, on its way out or ever (S008-FR-020):
//
//  1. Wait for Docker: ping, bounded by PingTimeout; while it fails the
//     manager is degraded (Status) and the ping is retried with backoff.
//  2. Open the event stream of managed containers (ManagedEventsFilter),
//     then sweep (Sweep): the Docker networks of every Outcall network,
//     and every identity reconciled with what runs. The stream opens
//     first so nothing that happens during the sweep is missed.
//  3. Follow the events: a start binds the identity of a container
//     Outcall created; a die, stop or destroy releases the identity bound
//     to that container, its grants and live state with it (S008-FR-031);
//     a kill or oom reconciles (the container may live on). Every
//     ResyncInterval the sweep runs again.
//  4. When the stream ends (dockerd restarted, the socket went away), wait
//     with backoff and go back to 1: events may have been missed, so the
//     sweep after every reconnect is what makes the registry true again.
func (m *Manager) Run(ctx context.Context) error {
	backoff := m.opts.MinBackoff
	for {
		ping, err := Available(ctx, m.engine, m.opts.PingTimeout)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			m.setDegraded(err)
		} else {
			m.setAvailable(apiVersionOf(ping.APIVersion, m.engine))
			began := m.now()
			err = m.follow(ctx)
			if ctx.Err() != nil {
				return nil
			}
			m.m.reconnects.Inc()
			m.setDegraded(fmt.Errorf("event stream: %w", err))
			if m.now().Sub(began) > m.opts.MaxBackoff {
				backoff = m.opts.MinBackoff // it ran well for a while
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, m.opts.MaxBackoff)
	}
}

// follow opens the event stream, sweeps and handles events until the
// stream or the sweep fails.
func (m *Manager) follow(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, errs := m.engine.Events(sctx, events.ListOptions{Filters: ManagedEventsFilter()})
	if err := m.Sweep(ctx); err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	var tick <-chan time.Time
	if m.opts.ResyncInterval > 0 {
		t := time.NewTicker(m.opts.ResyncInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			if err == nil {
				err = errors.New("closed")
			}
			return err
		case msg := <-msgs:
			m.handle(ctx, msg)
		case <-tick:
			if err := m.Sweep(ctx); err != nil {
				return fmt.Errorf("sweep: %w", err)
			}
		}
	}
}

// handle acts on one event of a managed container.
func (m *Manager) handle(ctx context.Context, msg events.Message) {
	if msg.Type != events.ContainerEventType {
		return
	}
	id, name := msg.Actor.ID, msg.Actor.Attributes["name"]
	action := msg.Action
	var err error
	switch action {
	case events.ActionStart, events.ActionRestart, events.ActionUnPause, events.ActionKill, events.ActionOOM:
		err = m.reconcile(ctx, name)
	case events.ActionDie, events.ActionStop:
		err = m.releaseFor(ctx, id, name)
	case events.ActionDestroy:
		err = m.releaseFor(ctx, id, name)
		m.forget(id)
	default:
		action = "other"
	}
	m.m.events.WithLabelValues(string(action)).Inc()
	if err != nil {
		m.log.Warn("container event not applied; the next sweep retries", "action", msg.Action, "name", name, "id", id, "err", err)
	}
	if action != "other" {
		m.refreshGauge(ctx)
	}
}

// releaseFor releases the identity of the container called name if it is
// bound to the container id the event is about: a late event of a
// container gone since never takes the identity of the one that has its
// name now. An identity reserved and never bound is reconciled instead.
func (m *Manager) releaseFor(ctx context.Context, id, name string) error {
	if name == "" {
		return nil
	}
	unlock := m.names.lock(name)
	r, ok, err := m.identity(ctx, name)
	if err != nil || !ok {
		unlock()
		return err
	}
	if r.ContainerID == id {
		err = m.release(ctx, name)
		unlock()
		if err == nil {
			m.log.Info("container identity released", "name", name, "id", id, "identity", r.Identity)
		}
		return err
	}
	unlock()
	if r.ContainerID == "" {
		return m.reconcile(ctx, name)
	}
	return nil
}

// identity is the registry's identity under a container name.
func (m *Manager) identity(ctx context.Context, name string) (Reservation, bool, error) {
	regs, err := m.nets.Containers(ctx)
	if err != nil {
		return Reservation{}, false, fmt.Errorf("list identities: %w", err)
	}
	for _, r := range regs {
		if r.Name == name {
			return r, true, nil
		}
	}
	return Reservation{}, false, nil
}

// Sweep reconciles the registry with Docker: every Outcall network gets
// its Docker network (one made while Docker was down is made now), every
// running managed container Outcall created has its identity bound, and
// every identity whose container is not running, or is not the container
// it was bound to, is released. Run calls it after every connect and
// every ResyncInterval; it is safe to call at any time.
func (m *Manager) Sweep(ctx context.Context) error {
	for _, n := range m.nets.Networks() {
		if _, err := m.ensureNetwork(ctx, n); err != nil {
			if errors.Is(err, apikit.ErrUnavailable) {
				return err
			}
			m.log.Warn("Docker network not ensured", "network", n.Name, "err", err)
		}
	}
	list, err := m.engine.ContainerList(ctx, container.ListOptions{All: true, Filters: ManagedFilter()})
	if err != nil {
		return m.dockerErr("list containers", err)
	}
	regs, err := m.nets.Containers(ctx)
	if err != nil {
		return fmt.Errorf("list identities: %w", err)
	}
	// The registry recorded these ids at Bind: they are Outcall's.
	inDocker := map[string]bool{}
	for _, c := range list {
		inDocker[c.ID] = true
	}
	m.mu.Lock()
	for _, r := range regs {
		if r.ContainerID != "" && inDocker[r.ContainerID] {
			if _, ok := m.known[r.ContainerID]; !ok {
				m.known[r.ContainerID] = r.Name
			}
		}
	}
	// Forget what Docker no longer has.
	pruned := false
	for id := range m.known {
		if !inDocker[id] {
			delete(m.known, id)
			pruned = true
		}
	}
	m.mu.Unlock()
	if pruned {
		m.saveKnown()
	}
	names := map[string]bool{}
	for _, r := range regs {
		names[r.Name] = true
	}
	for _, c := range list {
		if len(c.Names) > 0 {
			names[trimSlash(c.Names[0])] = true
		}
	}
	var errs []error
	for name := range names {
		if err := m.reconcile(ctx, name); err != nil {
			if errors.Is(err, apikit.ErrUnavailable) {
				return err
			}
			errs = append(errs, err)
		}
	}
	m.countStates(list)
	if len(errs) > 0 {
		m.log.Warn("sweep: some identities not reconciled; the next sweep retries", "err", errors.Join(errs...))
	}
	return nil
}

func trimSlash(s string) string {
	if len(s) > 0 && s[0] == '/' {
		return s[1:]
	}
	return s
}

// reconcile makes the identity held under a container name agree with
// the container Docker has under that name now:
//
//   - not running (absent, stopped, or not labelled): no identity.
//   - running, the identity bound to its id: kept, and bound again on a
//     new port if it started again unseen.
//   - running, the identity bound to its id but not to a port, or
//     reserved by Outcall (no id yet) at its address: bound.
//   - running, the identity bound to another id: that container is gone;
//     the identity is released, never handed over.
//   - running, no identity, and a container Outcall created under that
//     name: reserved at its inspected address and MAC, and bound (a
//     stopped container that starts again keeps its address). Any other
//     labelled container gets nothing: its port stays closed.
func (m *Manager) reconcile(ctx context.Context, name string) error {
	if name == "" {
		return nil
	}
	unlock := m.names.lock(name)
	defer unlock()
	r, have, err := m.identity(ctx, name)
	if err != nil {
		return err
	}
	in, err := m.engine.ContainerInspect(ctx, name)
	present := err == nil && in.ContainerJSONBase != nil && trimSlash(in.Name) == name
	if err != nil && !errdefs.IsNotFound(err) {
		return m.dockerErr(fmt.Sprintf("inspect container %q", name), err)
	}
	live := present && in.Config != nil && IsManaged(in.Config.Labels) && running(in)
	if have {
		switch {
		case !live:
			m.log.Info("identity released: its container is not running", "name", name, "id", r.ContainerID, "identity", r.Identity)
			return m.release(ctx, name)
		case r.ContainerID == in.ID && r.Bound:
			return m.rebindIfMoved(ctx, r, in)
		case r.ContainerID == in.ID || r.ContainerID == "" && matches(r, in):
			return m.bind(ctx, name, in)
		}
		m.log.Warn("identity released: the container now called so is not the one it was bound to", "name", name,
			"bound_id", r.ContainerID, "id", in.ID, "identity", r.Identity)
		if err := m.release(ctx, name); err != nil {
			return err
		}
	}
	if !live {
		return nil
	}
	if !m.trusted(in.ID, name) {
		m.mu.Lock()
		first := !m.untrusted[in.ID]
		m.untrusted[in.ID] = true
		m.mu.Unlock()
		if first {
			m.log.Warn("labelled managed-by=outcalld but not created by outcalld: no identity, its traffic stays dropped", "name", name, "id", in.ID)
		}
		return nil
	}
	netName, ip, mac, err := endpointOf(in)
	if err != nil {
		return fmt.Errorf("identity of container %q: %w", name, err)
	}
	if _, ok := m.nets.Network(netName); !ok {
		return fmt.Errorf("identity of container %q: network %q is not an Outcall network", name, netName)
	}
	if _, err := m.nets.Reserve(ctx, Reservation{Network: netName, Name: name, IPv4: ip, MAC: mac}); err != nil {
		return fmt.Errorf("register identity of container %q: %w", name, err)
	}
	if err := m.bind(ctx, name, in); err != nil {
		return errors.Join(err, m.release(ctx, name))
	}
	m.log.Info("identity restored", "name", name, "id", in.ID, "ip", ip)
	return nil
}

// matches reports whether a reserved, never bound identity is the one of
// this container: same network, address and MAC.
func matches(r Reservation, in container.InspectResponse) bool {
	netName, ip, mac, err := endpointOf(in)
	return err == nil && netName == r.Network && ip == r.IPv4 && mac.String() == r.MAC.String()
}

// bind binds the identity of a running container to its port.
func (m *Manager) bind(ctx context.Context, name string, in container.InspectResponse) error {
	key := sandboxKey(in)
	if key == "" {
		return fmt.Errorf("bind identity of container %q: Docker reports no network namespace", name)
	}
	if err := m.nets.Bind(ctx, name, in.ID, key); err != nil {
		return fmt.Errorf("bind identity of container %q: %w", name, err)
	}
	m.mu.Lock()
	m.sandboxes[name] = key
	m.known[in.ID] = name
	m.mu.Unlock()
	return nil
}

// rebindIfMoved handles a bound identity whose container runs in another
// network namespace than the one bound: it stopped and started while no
// event was seen, so its port is new. The old binding goes (with the
// grants of the container's previous run, as a die would take them) and
// the identity is bound again at the same address. A binding this
// process did not make (the registry restored it) is taken as it is.
func (m *Manager) rebindIfMoved(ctx context.Context, r Reservation, in container.InspectResponse) error {
	m.mu.Lock()
	prev, seen := m.sandboxes[r.Name]
	m.mu.Unlock()
	key := sandboxKey(in)
	if !seen {
		m.mu.Lock()
		m.sandboxes[r.Name] = key
		m.mu.Unlock()
		return nil
	}
	if prev == key {
		return nil
	}
	m.log.Info("container started again unseen: identity bound to its new port", "name", r.Name, "id", in.ID)
	if err := m.release(ctx, r.Name); err != nil {
		return err
	}
	if _, err := m.nets.Reserve(ctx, Reservation{Network: r.Network, Name: r.Name, IPv4: r.IPv4, MAC: r.MAC}); err != nil {
		return fmt.Errorf("register identity of container %q: %w", r.Name, err)
	}
	if err := m.bind(ctx, r.Name, in); err != nil {
		return errors.Join(err, m.release(ctx, r.Name))
	}
	return nil
}

// refreshGauge recounts the managed containers by state, at most once a
// second.
func (m *Manager) refreshGauge(ctx context.Context) {
	m.mu.Lock()
	due := m.now().Sub(m.lastGauge) >= time.Second
	m.mu.Unlock()
	if !due {
		return
	}
	list, err := m.engine.ContainerList(ctx, container.ListOptions{All: true, Filters: ManagedFilter()})
	if err == nil {
		m.countStates(list)
	}
}

func (m *Manager) countStates(list []container.Summary) {
	counts := map[string]float64{}
	for _, c := range list {
		if IsManaged(c.Labels) {
			counts[string(c.State)]++
		}
	}
	m.mu.Lock()
	m.lastGauge = m.now()
	m.mu.Unlock()
	m.m.containers.Reset()
	for state, n := range counts {
		m.m.containers.WithLabelValues(state).Set(n)
	}
}

// stateFile is the StateFile's content.
type stateFile struct {
	// Containers are the containers Outcall created: id → name.
	Containers map[string]string `json:"containers"`
}

func loadKnown(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s stateFile
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s.Containers, nil
}

// saveKnown writes the known containers to the StateFile, atomically.
func (m *Manager) saveKnown() {
	if m.opts.StateFile == "" {
		return
	}
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	m.mu.Lock()
	s := stateFile{Containers: make(map[string]string, len(m.known))}
	for id, name := range m.known {
		s.Containers[id] = name
	}
	m.mu.Unlock()
	b, err := json.Marshal(s)
	if err == nil {
		err = writeAtomic(m.opts.StateFile, b)
	}
	if err != nil {
		m.log.Warn("container state file not written", "file", m.opts.StateFile, "err", err)
	}
}

func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}
