package container

import (
	"context"
	"net"
	"net/netip"
)

// Networks is what the manager needs of the network controller
// (pkg/network's Controller implements it): the Outcall networks, and the
// identities of the containers on them. The controller owns addresses,
// identities and their binding to ports; the manager only says which
// container is which.
type Networks interface {
	// Network returns the Outcall network called name (its full name,
	// "outcall-default"); false if there is none.
	Network(name string) (NetworkInfo, bool)
	// Networks lists every Outcall network: each gets a Docker network
	// naming its bridge.
	Networks() []NetworkInfo
	// Reserve registers the identity of a container that does not run
	// yet, on network, under the container's name: an address and MAC are
	// allocated (or, when the request carries them, taken: a stopped
	// container that starts again keeps the ones it was created with), and
	// the identity is known before the container's port exists. Until Bind
	// ties it to a port, nothing the container sends carries the identity:
	// its port stays closed (fail closed).
	Reserve(ctx context.Context, req Reservation) (Reservation, error)
	// Bind ties the reserved identity of the container called name to its
	// port, found from the container's network namespace (Docker's sandbox
	// key) and the reserved MAC, and records the container's id.
	Bind(ctx context.Context, name, containerID, sandboxKey string) error
	// Release removes the identity of the container called name: its
	// grants, flows and live state go with it. Releasing one that is not
	// there is no error.
	Release(ctx context.Context, name string) error
	// Containers lists the container identities the controller holds, for
	// the sweep that reconciles them with what Docker runs.
	Containers(ctx context.Context) ([]Reservation, error)
}

// NetworkInfo is an Outcall network as the manager sees it.
type NetworkInfo struct {
	// Name is the full name, also the Docker network's.
	Name string
	// Bridge is the Linux bridge outcalld made for it; the Docker
	// network must name exactly this bridge.
	Bridge string
	// Subnet and Gateway are the network's; Gateway is also where the
	// DNS filter listens (port 53).
	Subnet  netip.Prefix
	Gateway netip.Addr
	// Proxy is the proxy's address on this network.
	Proxy netip.AddrPort
}

// Reservation is a container's identity on its network.
type Reservation struct {
	// Network is the network's full name; Name the container's name.
	Network, Name string
	// IPv4 and MAC are the container's fixed address; zero in a request
	// means "allocate".
	IPv4 netip.Addr
	MAC  net.HardwareAddr
	// Identity is the numeric identity the datapath knows it by; set by
	// Reserve.
	Identity uint32
	// ContainerID is Docker's id once Bind recorded it.
	ContainerID string
	// Bound reports whether the identity is tied to a port.
	Bound bool
}
