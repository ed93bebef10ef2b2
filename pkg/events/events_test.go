package events

import (
	"sync"
	"testing"
)

func TestHandlersRunInline(t *testing.T) {
	b := New()
	var got []Event
	b.Handle(func(e Event) { got = append(got, e) })
	b.Publish(Repair{What: "tcx_link"})
	b.Publish(Reload{})
	if len(got) != 2 || got[0] != (Repair{What: "tcx_link"}) {
		t.Fatalf("handler saw %v, want both events in order at once", got)
	}
}

func TestSlowSubscriberLosesAndCounts(t *testing.T) {
	b := New()
	s := b.Subscribe(2)
	for range 5 {
		b.Publish(Port{Ifindex: 7, Joined: true})
	}
	if n := len(s.C()); n != 2 {
		t.Fatalf("%d events buffered, want 2", n)
	}
	if s.Dropped() != 3 {
		t.Fatalf("dropped %d, want 3", s.Dropped())
	}
	s.Close()
	b.Publish(Port{})
	for range s.C() { // drains the two, then ends: closed
	}
}

// TestPublishWhileClosing: subscriptions come and go while events flow;
// nothing is sent on a closed channel (run with -race).
func TestPublishWhileClosing(t *testing.T) {
	b := New()
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 10000 {
			b.Publish(Drop{Reason: "no_rule"})
		}
	})
	for range 200 {
		s := b.Subscribe(1)
		s.Close()
		s.Close() // twice is harmless
	}
	wg.Wait()
}
