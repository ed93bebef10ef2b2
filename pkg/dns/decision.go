package dns

import (
	"sync"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/rules"
)

// RuleSets is implemented by an Evaluator whose decisions are a function
// of the evaluation context and of the rule set in force, and nothing
// else, and that names that set: *rules.Engine, whose Active is the set
// Evaluate reads, swapped whole by a reload. Such an evaluator's decisions
// are remembered (decisionCache); any other one is asked on every query.
type RuleSets interface {
	Active() *rules.Set
}

// decisionKey is everything a DNS evaluation reads (api.DNSContext and
// api.AgentContext: the name, the type, the agent) and the identity that
// asked.
type decisionKey struct {
	identity uint32
	agent    string
	name     string
	qtype    uint16
}

// decision is one remembered outcome and the set that made it. The set is
// held, so its address cannot be reused by a later set while the entry
// lives: a pointer comparison tells the set in force from any other.
type decision struct {
	set *rules.Set
	out rules.Outcome
}

// decisionCache remembers the rule engine's DNS decisions per
// (identity, agent, name, type), each tagged with the rule set that made
// it. An entry is used only while its set is still the one in force, read
// before every lookup, so a reload can never serve a decision of the set
// it replaced, whatever the order of the swap and of Flush (which also
// empties it). Only plain outcomes are kept: a rule that logs its matches,
// a condition that errors or yields no bool, an allow rule skipped for a
// restricted destination are evaluated every time, so that the engine logs
// and warns as it always does. The decision is the rules' only: the
// restricted-address filter, the egress mode and the direct_ip grants are
// applied to every answer as before.
type decisionCache struct {
	mu  sync.RWMutex
	max int
	m   map[decisionKey]decision
}

func newDecisionCache(max int) *decisionCache {
	return &decisionCache{max: max, m: map[decisionKey]decision{}}
}

// get returns the outcome under k if set made it.
func (c *decisionCache) get(k decisionKey, set *rules.Set) (rules.Outcome, bool) {
	c.mu.RLock()
	d, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || d.set != set {
		return rules.Outcome{}, false
	}
	return d.out, true
}

// put remembers out, made by set, under k, if it is a plain outcome. A
// full cache starts again empty: decisions are cheap to remake, and a
// bound keeps a flood of names from growing it.
func (c *decisionCache) put(k decisionKey, set *rules.Set, out rules.Outcome) {
	if set == nil || out.Err != nil || len(out.NonBool) > 0 || len(out.Skipped) > 0 || out.Logged() {
		return
	}
	switch {
	case out.Decision == api.DecisionAllow && out.Rule != nil:
	case out.Decision == api.DecisionBlock:
	default:
		return
	}
	d := decision{set: set, out: rules.Outcome{Layer: out.Layer, Decision: out.Decision, Rule: out.Rule}}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[k] = d
}

// flush forgets every decision.
func (c *decisionCache) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}

func (c *decisionCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
