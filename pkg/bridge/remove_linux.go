//go:build linux

package bridge

import (
	"errors"

	"golang.org/x/sys/unix"
)

// DeletePorts deletes the links of ports, which must be ports of the bridge
// with ifindex bridgeIndex. Deleting a veth deletes its peer too, so the
// agent side goes with it. A port that is already gone counts as deleted;
// a link whose ifindex now names something else (another name, another
// master) is left alone, since it is no longer the port that was listed.
// Every port is tried; the errors are joined.
//
// `bridge down` uses it: a port left behind after its bridge is deleted is a
// plain routed interface that no floor rule matches.
func (m *Manager) DeletePorts(bridgeIndex int, ports []Port) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, p := range ports {
		l, err := m.h.LinkByIndex(p.Index)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, &Error{Op: "delete port " + p.Name, Err: err})
			continue
		}
		if a := l.Attrs(); a.Name != p.Name || a.MasterIndex != bridgeIndex {
			continue
		}
		if err := m.h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, &Error{Op: "delete port " + p.Name, Err: err})
			continue
		}
		m.log.Info("bridge teardown: port deleted", "port", p.Name, "ifindex", p.Index)
	}
	return errors.Join(errs...)
}
