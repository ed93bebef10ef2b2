package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/container"
	"outcall.dev/outcall/pkg/network"
)

// buildDocker builds the Docker manager (Config.Docker) and ties it
// and the network controller to each other: the manager reserves and binds
// container identities through the controller, the controller makes each
// network's Docker network through the manager. It makes no Docker call:
// the manager's Run does, and reports degraded while Docker does not
// answer.
func (d *Daemon) buildDocker() error {
	if !d.cfg.Docker {
		return nil
	}
	engine, err := container.NewEngine()
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	v, err := container.NewValidator(container.Policy{
		HostSocket:   d.cfg.Socket,
		AgentSocket:  d.cfg.AgentSocket,
		ShimPath:     d.cfg.ShimHostPath,
		EngineSocket: container.SocketPath(engine.DaemonHost()),
		// What the daemon keeps on the host is no container's business.
		Protected: []string{d.cfg.StateDir, d.cfg.PinDir, d.cfg.RulesDir},
	})
	if err != nil {
		return err
	}
	m, err := container.NewManager(container.ManagerOptions{
		Engine:    engine,
		Networks:  containerNetworks{c: d.networks, proxyPort: d.cfg.ProxyPort},
		Validator: v,
		Logger:    d.log.With("target", "docker"),
		StateFile: filepath.Join(d.cfg.StateDir, "containers.json"),
		ResolvDir: filepath.Join(d.cfg.StateDir, "resolv"),
	})
	if err != nil {
		return err
	}
	d.docker = m
	d.containers = m
	d.networks.SetEngine(dockerNetworks{m: m, c: d.networks})
	return nil
}

// dockerStatus is the Docker line of `bridge status`: nil while Docker
// answers (the spec's output unchanged), the state and reason otherwise.
func (d *Daemon) dockerStatus() *api.DockerStatus {
	if d.docker == nil {
		return nil
	}
	st := d.docker.Status()
	if st.State == container.DockerAvailable {
		return nil
	}
	return &api.DockerStatus{State: string(st.State), Reason: st.Reason}
}

// containerNetworks is the network controller as the Docker manager sees
// it (container.Networks).
type containerNetworks struct {
	c         *network.Controller
	proxyPort uint16
}

var _ container.Networks = containerNetworks{}

func (n containerNetworks) info(nw network.Network) container.NetworkInfo {
	gw := nw.Gateway.Addr()
	return container.NetworkInfo{Name: nw.Name, Bridge: nw.Bridge, Subnet: nw.Subnet(), Gateway: gw,
		Proxy: netip.AddrPortFrom(gw, n.proxyPort)}
}

// Network implements container.Networks.
func (n containerNetworks) Network(name string) (container.NetworkInfo, bool) {
	nw, ok := n.c.NetworkByName(name)
	if !ok {
		return container.NetworkInfo{}, false
	}
	return n.info(nw), true
}

// Networks implements container.Networks.
func (n containerNetworks) Networks() []container.NetworkInfo {
	var out []container.NetworkInfo
	for _, nw := range n.c.NetworkList() {
		out = append(out, n.info(nw))
	}
	return out
}

// Reserve implements container.Networks.
func (n containerNetworks) Reserve(ctx context.Context, r container.Reservation) (container.Reservation, error) {
	e, err := n.c.ReserveContainer(ctx, network.ContainerReservation{Network: r.Network, Name: r.Name, IP: r.IPv4, MAC: r.MAC})
	if err != nil {
		return container.Reservation{}, err
	}
	return container.Reservation{Network: e.Network, Name: e.Name, IPv4: e.IP, MAC: e.MAC, Identity: e.Identity,
		ContainerID: e.ContainerID, Bound: e.Ifindex != 0}, nil
}

// Bind implements container.Networks.
func (n containerNetworks) Bind(ctx context.Context, name, containerID, sandboxKey string) error {
	_, err := n.c.BindContainer(ctx, name, containerID, sandboxKey)
	return err
}

// Release implements container.Networks.
func (n containerNetworks) Release(ctx context.Context, name string) error {
	return n.c.ReleaseContainer(ctx, name)
}

// Containers implements container.Networks.
func (n containerNetworks) Containers(ctx context.Context) ([]container.Reservation, error) {
	var out []container.Reservation
	for _, e := range n.c.ContainerEndpoints() {
		out = append(out, container.Reservation{Network: e.Network, Name: e.Name, IPv4: e.IP, MAC: e.MAC, Identity: e.Identity,
			ContainerID: e.ContainerID, Bound: e.Ifindex != 0})
	}
	return out, nil
}

// dockerNetworks is the Docker manager as the network controller's
// container engine (network.Engine).
type dockerNetworks struct {
	m *container.Manager
	c *network.Controller
}

var _ network.Engine = dockerNetworks{}

// UsedSubnets implements network.Engine.
func (d dockerNetworks) UsedSubnets(ctx context.Context) ([]netip.Prefix, error) {
	return d.m.UsedSubnets(ctx)
}

// EnsureNetwork implements network.Engine.
func (d dockerNetworks) EnsureNetwork(ctx context.Context, n network.Network) (string, error) {
	return d.m.EnsureNetwork(ctx, containerNetworks{c: d.c}.info(n))
}

// RemoveNetwork implements network.Engine.
func (d dockerNetworks) RemoveNetwork(ctx context.Context, name string) error {
	return d.m.RemoveNetwork(ctx, name)
}
