//go:build linux

package bridge

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// PortEvent tells the daemon that a port joined an Outcall bridge (attach the
// datapath program; also sent again when a port is renamed) or left it (Joined false: its master changed or was
// cleared, or the link was deleted; drop its state). For a leave,
// Port.Bridge is the bridge that was left.
type PortEvent struct {
	Port   Port
	Joined bool
}

// WatchPorts reports ports joining and leaving the bridges for which isBridge
// is true, starting with the ports that already exist. isBridge is asked on
// every update, so bridges created later are covered from their next port
// change on. ns selects the network namespace (netns.None() for the
// caller's).
//
// It returns nil when ctx is done. Any subscription trouble, including an
// interrupted initial dump or an overrun socket, ends it with an error:
// events may have been lost, so the caller should treat its ports as unknown
// (fail closed) and subscribe again, which replays the current state.
func WatchPorts(ctx context.Context, ns netns.NsHandle, isBridge func(ifindex int) bool, events chan<- PortEvent) error {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	failed := make(chan error, 1)
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		Namespace:    &ns,
		ListExisting: true,
		ErrorCallback: func(err error) {
			select {
			case failed <- err:
			default:
			}
		},
	})
	if err != nil {
		close(done) // releases the socket if it was opened
		return fmt.Errorf("subscribe to link updates: %w", err)
	}
	defer func() {
		close(done)
		for range updates { // let the reader goroutine finish and close
		}
	}()

	ports := portTracker{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return fmt.Errorf("link updates: %w", err)
		case u, ok := <-updates:
			if !ok {
				select {
				case err := <-failed:
					return fmt.Errorf("link updates: %w", err)
				default:
					return errors.New("link updates: subscription closed")
				}
			}
			for _, ev := range ports.apply(u, isBridge) {
				select {
				case events <- ev:
				case <-ctx.Done():
					return nil
				}
			}
		}
	}
}

// portTracker remembers which bridge each reported port is on, so that
// repeated updates (flags, carrier) do not repeat events and a leave names
// the bridge that was left.
type portTracker map[int]Port

func (t portTracker) apply(u netlink.LinkUpdate, isBridge func(int) bool) []PortEvent {
	// AF_BRIDGE messages are the bridge's own per-port notifications; the
	// AF_UNSPEC message about the same change carries the master, and a
	// bridge RTM_DELLINK only means "left the bridge", not "deleted".
	if u.Family == unix.AF_BRIDGE {
		return nil
	}
	a := u.Attrs()
	prev, had := t[a.Index]
	master := a.MasterIndex
	if u.Header.Type == unix.RTM_DELLINK {
		master = 0
	}
	var evs []PortEvent
	if had && master != prev.Bridge {
		delete(t, a.Index)
		evs = append(evs, PortEvent{Port: portOf(a, prev.Bridge), Joined: false})
	}
	// A rename is reported as a join under the new name: the daemon keys
	// ports by ifindex and only learns the name it shows.
	renamed := had && master == prev.Bridge && a.Name != prev.Name
	if master != 0 && (!had || master != prev.Bridge || renamed) && isBridge(master) {
		p := portOf(a, master)
		t[a.Index] = p
		evs = append(evs, PortEvent{Port: p, Joined: true})
	}
	return evs
}
