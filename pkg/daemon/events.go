package daemon

import (
	"log/slog"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/events"
)

// ruleEvents turns the rule engine's observations into events
// (rules.Observer).
type ruleEvents struct{ bus *events.Bus }

func (r ruleEvents) ObserveDecision(layer, ruleID string, decision api.Decision) {
	r.bus.Publish(events.Decision{Layer: layer, RuleID: ruleID, Decision: decision})
}

func (r ruleEvents) ObserveReload(err error) { r.bus.Publish(events.Reload{Err: err}) }

// logEvents logs what the feed says that no call site logs itself: sampled
// drops (debug, they are many) and grant changes.
func logEvents(log *slog.Logger) func(events.Event) {
	dp := log.With("target", "datapath")
	return func(e events.Event) {
		switch e := e.(type) {
		case events.Drop:
			dp.Debug("drop", "reason", e.Reason, "identity", e.Identity, "ifindex", e.Ifindex,
				"src", e.Src, "dst", e.Dst, "proto", e.Proto, "sport", e.SrcPort, "dport", e.DstPort)
		case events.Grant:
			verb := "grant removed"
			if e.Added {
				verb = "grant added"
			}
			log.Info(verb, "identity", e.Identity, "dst", e.Dst, "proto", e.Proto, "port", e.Port, "owner", e.Owner)
		}
	}
}
