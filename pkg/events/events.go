// Package events is outcalld's in-process feed of what happens: rule
// decisions, sampled datapath drops, grant changes, rule reloads, ports
// joining and leaving, networks coming and going, repairs. Producers publish typed events and never wait
// for a consumer; metrics and logs read the feed, and so will the dashboard.
//
// A Bus has two kinds of consumers. Handlers run inline, in the publisher's
// goroutine, so a counter they move is up to date when Publish returns (the
// metrics use them); they must be quick and must not publish. Subscriptions
// get a buffered channel each; a subscriber that falls behind loses events,
// and counts them, instead of slowing the datapath reader or the API down.
package events

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"outcall.dev/outcall/pkg/api"
)

// Event is one of the types below.
type Event interface{ event() }

// Decision is one rule engine decision at a layer (dns, proxy, agent,
// host_api); RuleID is "default-block" when no rule matched.
type Decision struct {
	Layer, RuleID string
	Decision      api.Decision
}

// Drop is a sampled drop the datapath reported through its ring buffer.
type Drop struct {
	Reason           string
	Identity         uint32
	Ifindex          int
	Src, Dst         netip.Addr
	Proto            uint8
	SrcPort, DstPort uint16
}

// Grant is a grant added (Added) or removed.
type Grant struct {
	Identity uint32
	Dst      netip.Addr
	Proto    uint8
	Port     uint16
	Owner    string // "operator" or "rule:<id>"
	Added    bool
	// Expired is a removal by the expiry sweep, not a revoke.
	Expired bool
}

// Reload is a finished rule reload; Err is nil on success.
type Reload struct{ Err error }

// Port is a port that joined (Joined) or left the bridge of an Outcall
// network.
type Port struct {
	Ifindex int
	Name    string
	Network string
	Joined  bool
}

// Network is an Outcall network whose bridge came up (Up) or went away.
// Gateway services follow it: the DNS filter and the proxy listen on each
// network's gateway while it is up.
type Network struct {
	Name    string
	Bridge  string
	Gateway netip.Prefix
	Up      bool
}

// Repair is enforcement found missing and restored: "tcx_link" or
// "nftables".
type Repair struct{ What string }

func (Decision) event() {}
func (Drop) event()     {}
func (Grant) event()    {}
func (Reload) event()   {}
func (Port) event()     {}
func (Network) event()  {}
func (Repair) event()   {}

// Bus fans events out. The zero value is not usable; use New.
type Bus struct {
	mu       sync.RWMutex
	handlers []func(Event)
	subs     map[*Subscription]struct{}
}

// New returns an empty Bus.
func New() *Bus { return &Bus{subs: map[*Subscription]struct{}{}} }

// Handle registers fn to run inline for every event published from now on.
func (b *Bus) Handle(fn func(Event)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.handlers = append(b.handlers, fn)
}

// Subscription is a buffered channel of events.
type Subscription struct {
	bus     *Bus
	ch      chan Event
	dropped atomic.Uint64
	once    sync.Once
}

// Subscribe returns a subscription holding up to buffer undelivered events.
func (b *Bus) Subscribe(buffer int) *Subscription {
	s := &Subscription{bus: b, ch: make(chan Event, buffer)}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
}

// C delivers the events; it is closed by Close.
func (s *Subscription) C() <-chan Event { return s.ch }

// Dropped is how many events the subscription lost because its buffer was
// full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription and closes its channel.
func (s *Subscription) Close() {
	s.once.Do(func() {
		s.bus.mu.Lock()
		delete(s.bus.subs, s)
		s.bus.mu.Unlock()
		close(s.ch)
	})
}

// Publish hands e to every handler, then offers it to every subscription
// without waiting.
func (b *Bus) Publish(e Event) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, h := range b.handlers {
		h(e)
	}
	for s := range b.subs {
		select {
		case s.ch <- e:
		default:
			s.dropped.Add(1)
		}
	}
}
