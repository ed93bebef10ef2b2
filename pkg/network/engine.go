package network

import (
	"context"
	"net/netip"
)

// Engine is the container engine's side of the networks (Docker, issue
// 10): every Outcall network has an engine network of the same name that
// names its bridge, so containers created on it land on the bridge the
// Controller enforces. The Docker manager implements it.
type Engine interface {
	// UsedSubnets lists the IPv4 subnets of every engine network: a new
	// Outcall subnet overlaps none of them.
	UsedSubnets(ctx context.Context) ([]netip.Prefix, error)
	// EnsureNetwork makes, or finds, the engine network of n, naming n's
	// bridge, and returns its id. A network of that name that names
	// another bridge or subnet is an error, and left alone.
	EnsureNetwork(ctx context.Context, n Network) (string, error)
	// RemoveNetwork removes the engine network called name; it refuses
	// while containers are connected. One that is not there is no error.
	RemoveNetwork(ctx context.Context, name string) error
}

// SetEngine gives the Controller its container engine (nil: none). From
// then on network create and destroy go through it too.
func (c *Controller) SetEngine(e Engine) {
	c.engineMu.Lock()
	defer c.engineMu.Unlock()
	c.engine = e
}

func (c *Controller) engineOf() Engine {
	c.engineMu.Lock()
	defer c.engineMu.Unlock()
	return c.engine
}

// SetEngineID records the engine network's id of the network called name,
// which network status reports as its id from then on.
func (c *Controller) SetEngineID(name, id string) { c.setEngineID(name, id) }

func (c *Controller) setEngineID(name, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.netByNameLocked(name); n != nil {
		n.engineID = id
	}
}

// undoCreate removes a network whose engine network could not be made.
func (c *Controller) undoCreate(name string) {
	if _, err := c.destroyNetwork(name, false); err != nil {
		c.log.Error("remove a network whose Docker network failed", "network", name, "err", err)
	}
}

// id is the network's id: the engine network's once known, the bridge's
// name before.
func (n *netState) id() string {
	if n.engineID != "" {
		return n.engineID
	}
	return n.Bridge
}
