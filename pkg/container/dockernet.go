package container

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/network"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
)

// DockerNetworks is what the network controller asks of the manager for
// the Docker side of its networks (S002): each Outcall network has a
// Docker network naming its Linux bridge, made after the bridge and
// removed before it. *Manager implements it.
type DockerNetworks interface {
	// EnsureNetwork makes sure the Docker network of an Outcall network
	// exists, creating it if it does not, and returns its id. A Docker
	// network of that name that is not this network's (another driver,
	// bridge or subnet) is an ErrConflict and is left alone.
	EnsureNetwork(ctx context.Context, n NetworkInfo) (dockerID string, err error)
	// RemoveNetwork removes the Docker network called name; none is no
	// error. It is refused (ErrConflict) while containers are connected
	// and for a Docker network that is not Outcall's.
	RemoveNetwork(ctx context.Context, name string) error
	// UsedSubnets lists the IPv4 subnets of every Docker network, Outcall's
	// or not, for overlap detection (S002-FR-013, FR-015).
	UsedSubnets(ctx context.Context) ([]netip.Prefix, error)
	// NetworkContainers lists the containers connected to the Docker
	// network called name, by name; ErrNotFound if there is none.
	NetworkContainers(ctx context.Context, name string) ([]NetworkContainer, error)
}

var _ DockerNetworks = (*Manager)(nil)

// NetworkContainer is a container connected to a Docker network.
type NetworkContainer struct {
	Name string
	// IPv4 is its address on the network; invalid if it has none.
	IPv4 netip.Addr
}

// CheckNetwork reports whether an inspected Docker network is the Docker
// network of the Outcall network n: its name, the "outcall-" prefix,
// driver bridge, the bridge option naming n's own Linux bridge, and n's
// subnet among its IPAM configuration (S008-FR-003, FR-030, FR-032;
// S002-FR-018). A name alone is never enough: anyone with the Docker
// socket can create "outcall-default".
func CheckNetwork(d network.Inspect, n NetworkInfo) error {
	var why []string
	if d.Name != n.Name || !strings.HasPrefix(d.Name, api.NetworkPrefix) {
		why = append(why, fmt.Sprintf("name %q", d.Name))
	}
	if d.Driver != DriverBridge {
		why = append(why, fmt.Sprintf("driver %q", d.Driver))
	}
	if b := d.Options[OptionBridgeName]; b != n.Bridge {
		why = append(why, fmt.Sprintf("bridge %q", b))
	}
	if !slices.Contains(subnetsOf(d), n.Subnet) {
		why = append(why, fmt.Sprintf("subnets %v", subnetsOf(d)))
	}
	if len(why) == 0 {
		return nil
	}
	return apikit.Errorf(apikit.ErrConflict, "network %q is not an Outcall network: Docker's has %s, want driver %q, bridge %q, subnet %s",
		n.Name, strings.Join(why, ", "), DriverBridge, n.Bridge, n.Subnet)
}

// subnetsOf is a Docker network's IPv4 subnets.
func subnetsOf(d network.Inspect) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range d.IPAM.Config {
		p, err := netip.ParsePrefix(c.Subnet)
		if err == nil && p.Addr().Is4() {
			out = append(out, p.Masked())
		}
	}
	return out
}

// dockerNetwork is the inspected, checked Docker network of an Outcall
// network for a create. The Outcall network exists, so a missing Docker
// network is made (it was removed behind outcalld's back, or the network
// was created while Docker was down and no sweep has run since).
func (m *Manager) dockerNetwork(ctx context.Context, n NetworkInfo) (network.Inspect, error) {
	d, err := m.engine.NetworkInspect(ctx, n.Name, network.InspectOptions{})
	if errdefs.IsNotFound(err) {
		if _, err := m.ensureNetwork(ctx, n); err != nil {
			return network.Inspect{}, err
		}
		d, err = m.engine.NetworkInspect(ctx, n.Name, network.InspectOptions{})
	}
	if err != nil {
		return network.Inspect{}, m.dockerErr(fmt.Sprintf("inspect network %q", n.Name), err)
	}
	if err := CheckNetwork(d, n); err != nil {
		return network.Inspect{}, err
	}
	return d, nil
}

// EnsureNetwork implements DockerNetworks: driver bridge, the bridge
// option naming n.Bridge, inter-container traffic off, n's subnet and
// gateway, labelled managed-by=outcalld (S002-FR-002).
func (m *Manager) EnsureNetwork(ctx context.Context, n NetworkInfo) (string, error) {
	if err := m.ready(ctx); err != nil {
		return "", err
	}
	return m.ensureNetwork(ctx, n)
}

func (m *Manager) ensureNetwork(ctx context.Context, n NetworkInfo) (string, error) {
	if !strings.HasPrefix(n.Name, api.NetworkPrefix) || n.Bridge == "" || !n.Subnet.IsValid() || !n.Gateway.IsValid() {
		return "", fmt.Errorf("ensure Docker network: incomplete network %+v", n)
	}
	d, err := m.engine.NetworkInspect(ctx, n.Name, network.InspectOptions{})
	if err == nil {
		if err := CheckNetwork(d, n); err != nil {
			m.log.Warn("Docker network is a lookalike: left alone", "network", n.Name, "err", err)
			return "", err
		}
		return d.ID, nil
	}
	if !errdefs.IsNotFound(err) {
		return "", m.dockerErr(fmt.Sprintf("inspect network %q", n.Name), err)
	}
	_, err = m.engine.NetworkCreate(ctx, n.Name, network.CreateOptions{
		Driver: DriverBridge,
		Options: map[string]string{
			OptionBridgeName: n.Bridge,
			OptionEnableICC:  "false",
		},
		IPAM: &network.IPAM{Driver: "default", Config: []network.IPAMConfig{{
			Subnet: n.Subnet.Masked().String(), Gateway: n.Gateway.String(),
		}}},
		Labels: map[string]string{api.LabelManagedBy: api.LabelManagedByValue},
	})
	if err != nil && !errdefs.IsConflict(err) && !errdefs.IsAlreadyExists(err) {
		return "", m.dockerErr(fmt.Sprintf("create Docker network %q", n.Name), err)
	}
	// Check what Docker made, or what a concurrent create made first.
	d, err = m.engine.NetworkInspect(ctx, n.Name, network.InspectOptions{})
	if err != nil {
		return "", m.dockerErr(fmt.Sprintf("inspect network %q", n.Name), err)
	}
	if err := CheckNetwork(d, n); err != nil {
		return "", err
	}
	m.log.Info("Docker network created", "network", n.Name, "id", d.ID, "bridge", n.Bridge, "subnet", n.Subnet)
	return d.ID, nil
}

// RemoveNetwork implements DockerNetworks. A Docker network that is not
// Outcall's (checked against the Outcall network while it is still known,
// else by its prefix, driver and managed-by label) is refused, as is one
// with containers connected.
func (m *Manager) RemoveNetwork(ctx context.Context, name string) error {
	if err := m.ready(ctx); err != nil {
		return err
	}
	d, err := m.engine.NetworkInspect(ctx, name, network.InspectOptions{})
	switch {
	case errdefs.IsNotFound(err):
		return nil
	case err != nil:
		return m.dockerErr(fmt.Sprintf("inspect network %q", name), err)
	}
	if n, ok := m.nets.Network(name); ok {
		if err := CheckNetwork(d, n); err != nil {
			return err
		}
	} else if d.Name != name || !strings.HasPrefix(name, api.NetworkPrefix) || d.Driver != DriverBridge || d.Labels[api.LabelManagedBy] != api.LabelManagedByValue {
		return apikit.Errorf(apikit.ErrConflict, "network %q is not an Outcall network: left alone", name)
	}
	if k := len(d.Containers); k > 0 {
		return apikit.Errorf(apikit.ErrConflict, "network %q has %d connected container(s): remove them first", name, k)
	}
	if err := m.engine.NetworkRemove(ctx, d.ID); err != nil && !errdefs.IsNotFound(err) {
		return m.dockerErr(fmt.Sprintf("remove Docker network %q", name), err)
	}
	m.log.Info("Docker network removed", "network", name, "id", d.ID)
	return nil
}

// UsedSubnets implements DockerNetworks: every Docker network's IPv4
// subnets, sorted, each once.
func (m *Manager) UsedSubnets(ctx context.Context) ([]netip.Prefix, error) {
	if err := m.ready(ctx); err != nil {
		return nil, err
	}
	list, err := m.engine.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		return nil, m.dockerErr("list networks", err)
	}
	var out []netip.Prefix
	for _, d := range list {
		out = append(out, subnetsOf(d)...)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out), nil
}

// NetworkContainers implements DockerNetworks, sorted by name.
func (m *Manager) NetworkContainers(ctx context.Context, name string) ([]NetworkContainer, error) {
	if err := m.ready(ctx); err != nil {
		return nil, err
	}
	d, err := m.engine.NetworkInspect(ctx, name, network.InspectOptions{})
	if errdefs.IsNotFound(err) {
		return nil, apikit.Errorf(apikit.ErrNotFound, "network %q does not exist", name)
	}
	if err != nil {
		return nil, m.dockerErr(fmt.Sprintf("inspect network %q", name), err)
	}
	out := make([]NetworkContainer, 0, len(d.Containers))
	for _, ep := range d.Containers {
		c := NetworkContainer{Name: strings.TrimPrefix(ep.Name, "/")}
		if p, err := netip.ParsePrefix(ep.IPv4Address); err == nil {
			c.IPv4 = p.Addr()
		} else if a, err := netip.ParseAddr(ep.IPv4Address); err == nil {
			c.IPv4 = a
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b NetworkContainer) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
