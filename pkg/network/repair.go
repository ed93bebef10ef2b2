package network

import "outcall.dev/outcall/pkg/events"

// repairOnce re-attaches programs that were detached behind the
// Controller's back, restores deleted floor tables and follows changes of
// the host's own addresses. A port without its program is dead, not open
// (the floor drops what it sends), and a missing table leaves the programs
// deciding; either way it is enforcement as configured that is restored,
// and every repair is logged and counted.
func (c *Controller) repairOnce() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp == nil {
		return
	}
	detached := map[int]bool{}
	defer func() { c.detached = detached }()
	for ifindex, p := range c.ports {
		name := p.name
		if c.dp.LinkAlive(ifindex) {
			continue
		}
		if err := c.dp.Reattach(ifindex); err != nil {
			detached[ifindex] = true
			c.log.Error("re-attach detached datapath program", "port", name, "ifindex", ifindex, "err", err)
			continue
		}
		c.events.Publish(events.Repair{What: "tcx_link"})
		c.log.Warn("datapath program was detached from a port; re-attached", "port", name, "ifindex", ifindex)
	}
	if !c.floor.Intact() {
		if err := c.floor.Apply(c.floorConfigLocked()); err != nil {
			c.log.Error("restore nftables floor", "err", err)
		} else {
			c.events.Publish(events.Repair{What: "nftables"})
			c.log.Warn("nftables floor tables were missing or changed; restored")
		}
	}
	if err := c.syncFencesLocked(); err != nil {
		c.log.Warn("follow host addresses", "err", err)
	}
}
