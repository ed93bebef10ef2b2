// Package rules is Outcall's rule engine (S003): it compiles the rule files
// package rulefile loads into CEL programs, evaluates requests against them
// for every enforcement point, and lowers the rules that only look at a
// packet into the datapath's tables.
//
// A Set is one immutable, compiled rule set. Set.Evaluate walks its rules
// in order: the first condition that is true decides with its rule's
// action, a condition that fails blocks naming its rule, and no match
// blocks. Rules that require a field to equal a literal are skipped when it
// does not (ruleIndex), which changes no outcome.
//
// The Engine owns the active set. Reload builds a new set off to the side —
// load, compile, lower, hand the packet tables to the datapath — and swaps
// it in only when every step succeeded; Watch does the same when a rule
// file changes. Evaluations take the set once and finish on it.
//
// Lowering (lower.go) turns conditions over network.ip, network.port,
// network.protocol and agent.name into a destination-class LPM trie and a
// verdict hash, so that the kernel decides every packet exactly as CEL
// would for the packet's network context; see DESIGN.md §4 and the
// differential tests. Every IP protocol reaches the tables: for one other
// than TCP, UDP and ICMP, network.protocol is its decimal number ("47") and
// network.port is 0 (ProtocolName).
//
// Restricted destinations (package netrange) open only for an allow rule
// that sets egress.allow_private_ips and names a prefix inside the range;
// a broad rule that matches one is skipped, in Evaluate and in lowering
// alike (restricted.go).
//
// A typical caller:
//
//	e, err := rules.NewEngine(rules.Options{Dir: "/etc/outcall/rules.d", Logger: log})
//	if err != nil { ... }
//	if _, err := e.Reload(ctx); err != nil { ... } // a bad rule set aborts startup
//	out := e.Evaluate(ctx, rules.LayerDNS, &api.EvaluationContext{
//		DNS: &api.DNSContext{Query: "pypi.org", RecordType: "A"},
//	})
//	// out.Decision; out.Rule (nil for the default block) with its Egress
//	// mode and ports; out.Result() is the host API's EvaluateResult.
package rules
