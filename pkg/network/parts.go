package network

import (
	"context"
	"net"
	"net/netip"

	"outcall.dev/outcall/pkg/bridge"
	"outcall.dev/outcall/pkg/datapath"
	"outcall.dev/outcall/pkg/grants"
	"outcall.dev/outcall/pkg/nft"
	"outcall.dev/outcall/pkg/ruletable"
)

// The kernel-facing parts the Controller drives, as small interfaces: the
// real ones are *datapath.Datapath, *nft.Floor and *bridge.Manager; the
// Controller's own logic (validation, ordering, fail-closed sequences) is
// unit-tested against fakes of them, without root.

// Datapath is the BPF datapath.
type Datapath interface {
	grants.Kernel
	Attach(ifindex int) error
	Detach(ifindex int) error
	AttachedPorts() []int
	LinkAlive(ifindex int) bool
	Reattach(ifindex int) error
	SetEndpoint(ifindex int, ep datapath.Endpoint) error
	DeleteEndpoint(ifindex int) error
	// SetPortNetwork tells the program the network of a port it runs on:
	// without an identity the port reaches that gateway's open services,
	// from an address no endpoint holds, and nothing else.
	SetPortNetwork(ifindex int, pn datapath.PortNetwork) error
	// SetEndpointAddrs names the addresses every registered endpoint
	// holds, which no port without identity may send from.
	SetEndpointAddrs([]datapath.EndpointAddrs) error
	SetServices([]datapath.Service) error
	SetFences([]datapath.Fence) error
	EndFlows(datapath.FlowMatch) (int, error)
	Counters() ([]datapath.Counter, error)
	RuleHits() ([]datapath.RuleHit, error)
	InstallRules(*ruletable.Tables) error
	ClearRules() error
	SetRuleAgents(map[uint32]uint32) error
	ReadDropEvents(ctx context.Context, fn func(datapath.DropEvent)) error
	Unpin() error
	Close() error
}

// Floor is the nftables floor.
type Floor interface {
	Apply(nft.Config) error
	AddPort(ifindex int) error
	RemovePort(ifindex int) error
	// SetServices names the open gateway services, whose traffic is not
	// tracked (so never counts towards the per-agent cap).
	SetServices([]nft.Service) error
	Delete() (bool, error)
	Active() (bool, error)
	Intact() bool
	Counters() (map[string]uint64, error)
}

// Bridges is the bridge manager.
type Bridges interface {
	Ensure(name string, gateway netip.Prefix) (int, bool, error)
	Status(name string) (bridge.Status, error)
	Ports(bridgeIndex int) ([]bridge.Port, error)
	HardwareAddr(ifindex int) (net.HardwareAddr, error)
	Delete(name string) error
	DeletePorts(bridgeIndex int, ports []bridge.Port) error
	PinEndpoint(bridgeIndex, port int, ip netip.Addr, mac net.HardwareAddr) error
	UnpinEndpoint(bridgeIndex, port int, ip netip.Addr, mac net.HardwareAddr) error
	// PeerPort finds the bridge port whose veth peer is the interface
	// with this MAC in the network namespace at nsPath (a container's).
	PeerPort(nsPath string, mac net.HardwareAddr) (int, error)
	// PortPeer returns the MAC of the far end of veth port ifindex once
	// it is in a namespace pinned under nsDir; false until then.
	PortPeer(ifindex int, nsDir string) (net.HardwareAddr, bool, error)
}

// OpenDatapath loads the real datapath.
func OpenDatapath(opts datapath.Options) (Datapath, error) {
	dp, err := datapath.Open(opts)
	if err != nil {
		return nil, err
	}
	return dp, nil
}

var (
	_ Datapath = (*datapath.Datapath)(nil)
	_ Floor    = (*nft.Floor)(nil)
	_ Bridges  = (*bridge.Manager)(nil)
)
