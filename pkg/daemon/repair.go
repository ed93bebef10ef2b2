package daemon

import (
	"context"
	"time"

	"outcall.dev/outcall/pkg/events"
)

// DefaultRepairInterval is how often the daemon checks that what enforces
// is still in place: a repair is due within a second of a detach or a
// deleted table.
const DefaultRepairInterval = 250 * time.Millisecond

// repair re-attaches programs that were detached behind the daemon's back,
// restores deleted floor tables and follows changes of the host's own
// addresses, until ctx is done. A port without its program is dead, not
// open (the floor drops what it sends), and a missing table leaves the
// programs deciding; either way it is enforcement as configured that is
// restored, and every repair is logged and counted.
func (d *Daemon) repair(ctx context.Context) error {
	interval := d.cfg.RepairInterval
	if interval == 0 {
		interval = DefaultRepairInterval
	}
	return every(ctx, interval, d.repairOnce)
}

func (d *Daemon) repairOnce() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp == nil {
		return
	}
	for ifindex, name := range d.ports {
		if d.dp.LinkAlive(ifindex) {
			continue
		}
		if err := d.dp.Reattach(ifindex); err != nil {
			d.log.Error("re-attach detached datapath program", "port", name, "ifindex", ifindex, "err", err)
			continue
		}
		d.events.Publish(events.Repair{What: "tcx_link"})
		d.log.Warn("datapath program was detached from a port; re-attached", "port", name, "ifindex", ifindex)
	}
	if !d.floor.Intact() {
		if err := d.floor.Apply(d.floorConfigLocked()); err != nil {
			d.log.Error("restore nftables floor", "err", err)
		} else {
			d.events.Publish(events.Repair{What: "nftables"})
			d.log.Warn("nftables floor tables were missing or changed; restored")
		}
	}
	if err := d.syncFencesLocked(); err != nil {
		d.log.Warn("follow host addresses", "err", err)
	}
}
