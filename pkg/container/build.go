package container

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/versions"

	"outcall.dev/outcall/pkg/api"
)

// Facts are what the daemon knows of the container's network when it
// builds the container: the inspected Docker network, and the address and
// identity the network controller gave the container before it exists.
type Facts struct {
	// Network is the Docker network's name (the Outcall network's full
	// name, which the request named) and NetworkID its inspected id: the
	// endpoint names the id, so the container joins the network that was
	// inspected and checked, not one recreated under its name since.
	Network   string
	NetworkID string
	// IPv4 and MAC are the container's fixed address on the network: the
	// ones its identity was registered with.
	IPv4 netip.Addr
	MAC  net.HardwareAddr
	// Gateway is the network's gateway with the subnet's prefix length
	// (10.200.0.1/24); IPv4 must be a host address inside it.
	Gateway netip.Prefix
	// DNS is the DNS filter's address (the gateway's, port 53: a resolver
	// configuration has no port).
	DNS netip.Addr
	// Proxy is the HTTP proxy's address on the network.
	Proxy netip.AddrPort
	// Identity is the numeric identity the container was registered with.
	Identity uint32
	// APIVersion is the negotiated Engine API version (the client's
	// ClientVersion after negotiation). It decides where the MAC goes:
	// below 1.44 only the container-wide field exists.
	APIVersion string
	// CreatedAt is the creation time for the outcall.created-at label.
	CreatedAt time.Time
	// ResolvConf, if set, is a host file naming only the DNS filter
	// (ResolvConfContent), mounted read-only over /etc/resolv.conf. On a
	// user-defined network Docker otherwise points the container at its
	// embedded resolver (127.0.0.11), which answers the names of the
	// other containers on the network itself, before any rule is asked.
	ResolvConf string
}

// ResolvConfContent is the resolver configuration of a managed container
// on a network whose DNS filter is at dns: the filter only, ndots:0, no
// search domain.
func ResolvConfContent(dns netip.Addr) string {
	return "# outcalld: the DNS filter of this container's network\nnameserver " + dns.String() + "\noptions ndots:0\n"
}

// Spec is the Docker configuration of one managed container: the three
// arguments of ContainerCreate besides the name.
type Spec struct {
	Name       string
	Config     *container.Config
	HostConfig *container.HostConfig
	Networking *network.NetworkingConfig
}

// minMACAPIVersion is the first Engine API with a per-endpoint MAC.
const minMACAPIVersion = "1.44"

// check refuses facts that would build a container Outcall cannot
// enforce: every one of them is needed, and the address must be a host
// address of the network.
func (f Facts) check(networkName string) error {
	switch {
	case f.Network == "" || f.NetworkID == "":
		return errors.New("build container: the network's name and inspected id are required")
	case f.Network != networkName:
		return fmt.Errorf("build container: facts are for network %q, the request names %q", f.Network, networkName)
	case !f.Gateway.IsValid() || !f.Gateway.Addr().Is4():
		return fmt.Errorf("build container: gateway %v is not an IPv4 prefix", f.Gateway)
	case !f.IPv4.Is4() || !f.Gateway.Contains(f.IPv4) || f.IPv4 == f.Gateway.Addr() || f.IPv4 == f.Gateway.Masked().Addr():
		return fmt.Errorf("build container: address %v is not a host address of %s", f.IPv4, f.Gateway.Masked())
	case len(f.MAC) != 6:
		return fmt.Errorf("build container: MAC %v is not a 6-byte Ethernet address", f.MAC)
	case !f.DNS.Is4():
		return fmt.Errorf("build container: DNS address %v is not IPv4", f.DNS)
	case !f.Proxy.IsValid() || !f.Proxy.Addr().Is4() || f.Proxy.Port() == 0:
		return fmt.Errorf("build container: proxy address %v is not an IPv4 address and port", f.Proxy)
	case f.Identity == 0:
		return errors.New("build container: the container's identity is required")
	case f.APIVersion == "":
		return errors.New("build container: the negotiated API version is required")
	case f.CreatedAt.IsZero():
		return errors.New("build container: the creation time is required")
	}
	return nil
}

// ProxyEnv is the environment every managed container gets, after the
// caller's (S008-FR-002.d/e, FR-006): the proxy for HTTP and HTTPS, and
// NoProxy, each in upper and lower case, since tools read one or the
// other.
func ProxyEnv(proxy netip.AddrPort) []string {
	url := "http://" + proxy.String()
	return []string{
		"HTTP_PROXY=" + url,
		"http_proxy=" + url,
		"HTTPS_PROXY=" + url,
		"https_proxy=" + url,
		"NO_PROXY=" + NoProxy,
		"no_proxy=" + NoProxy,
	}
}

// Build turns a validated request and its network's facts into Docker's
// configuration, with every S008 hardening default (§1.4). It is pure:
// it asks nothing of Docker or the host.
//
//   - user: the numeric non-root UID:GID; root file system read-only with
//     a tmpfs at /tmp; never privileged; every capability dropped and none
//     added; no-new-privileges; Docker's init as PID 1; a private IPC
//     namespace; no published ports.
//   - limits: memory, CPU shares and the PID limit.
//   - labels: managed-by=outcalld, outcall.network, outcall.created-at,
//     outcall.agent-name, outcall.identity.
//   - DNS: only the DNS filter, with ndots:0 and no search domain, so no
//     name is ever tried under the host's search list; with
//     Facts.ResolvConf, the daemon's own /etc/resolv.conf, read-only, so
//     not even Docker's embedded resolver answers first.
//   - env: the caller's, then ProxyEnv.
//   - network: the managed network as the network mode and as the only
//     endpoint, with the fixed IPv4 and MAC and the inspected network id.
func Build(c Create, f Facts) (Spec, error) {
	if err := f.check(c.Network); err != nil {
		return Spec{}, err
	}
	if c.Name == "" || c.Image.Ref == "" || c.User == "" {
		return Spec{}, errors.New("build container: the request was not validated (no name, image or user)")
	}
	env := make([]string, 0, len(c.Env)+6)
	env = append(env, c.Env...)
	env = append(env, ProxyEnv(f.Proxy)...)
	cfg := &container.Config{
		Image:       c.Image.Ref,
		User:        c.User,
		Env:         env,
		Cmd:         c.Cmd,
		Entrypoint:  c.Entrypoint,
		WorkingDir:  c.WorkingDir,
		OpenStdin:   c.Interactive,
		AttachStdin: c.Interactive,
		Tty:         c.TTY,
		Labels: map[string]string{
			api.LabelManagedBy: api.LabelManagedByValue,
			api.LabelNetwork:   c.Network,
			api.LabelCreatedAt: f.CreatedAt.UTC().Format(time.RFC3339),
			LabelAgentName:     c.AgentName,
			LabelIdentity:      strconv.FormatUint(uint64(f.Identity), 10),
		},
	}
	useInit := true
	pids := c.PidsLimit
	hc := &container.HostConfig{
		NetworkMode:    container.NetworkMode(f.Network),
		DNS:            []string{f.DNS.String()},
		DNSOptions:     []string{"ndots:0"},
		DNSSearch:      []string{"."},
		Init:           &useInit,
		ReadonlyRootfs: true,
		Tmpfs:          map[string]string{TmpPath: TmpfsOptions},
		Privileged:     false,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges:true"},
		IpcMode:        container.IPCModePrivate,
		Resources: container.Resources{
			Memory:    c.MemoryLimit,
			CPUShares: c.CPUShares,
			PidsLimit: &pids,
		},
	}
	for _, m := range c.Mounts {
		t := mount.TypeBind
		if m.Type == MountVolume {
			t = mount.TypeVolume
		}
		hc.Mounts = append(hc.Mounts, mount.Mount{Type: t, Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	if f.ResolvConf != "" {
		hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeBind, Source: f.ResolvConf, Target: ResolvConfPath, ReadOnly: true})
	}
	ep := &network.EndpointSettings{
		NetworkID:  f.NetworkID,
		IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: f.IPv4.String()},
	}
	if versions.LessThan(f.APIVersion, minMACAPIVersion) {
		//lint:ignore SA1019 below API 1.44 the container-wide MAC is the only one
		cfg.MacAddress = f.MAC.String()
	} else {
		ep.MacAddress = f.MAC.String()
	}
	return Spec{
		Name:       c.Name,
		Config:     cfg,
		HostConfig: hc,
		Networking: &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{f.Network: ep}},
	}, nil
}
