package network

import (
	"context"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/metrics"
	"outcall.dev/outcall/pkg/rules"
	"outcall.dev/outcall/pkg/ruletable"
)

// InstallRules is the rules.PacketLayer: a reload's packet tables go
// into the datapath, with the agent class of every registered endpoint.
// While the bridge is down they are kept and installed when it comes up.
//
// Grants a rule's decision opened (DNS-learned) stay only while the new set
// still has that rule as an allow rule; the others are revoked with their
// flows, as the new generation re-decides the rest. Operator grants stay.
func (c *Controller) InstallRules(t *rules.PacketTables) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp != nil {
		if err := c.installRulesLocked(t); err != nil {
			return err
		}
	}
	c.packetRules = t
	if c.grants != nil && t != nil {
		keep := map[string]bool{}
		for _, r := range t.Tables.Rules {
			if r.Action == ruletable.Allow {
				keep[r.ID] = true
			}
		}
		if n, err := c.grants.RevokeOwnersExcept(keep); err != nil {
			c.log.Error("revoke grants of rules the reload removed", "err", err)
		} else if n > 0 {
			c.log.Info("revoked grants of rules the reload removed", "count", n)
		}
	}
	return nil
}

// installRulesLocked puts t into the datapath with the agent class of every
// registered endpoint; nil empties the tables.
func (c *Controller) installRulesLocked(t *rules.PacketTables) error {
	if t == nil {
		return c.dp.ClearRules()
	}
	return c.dp.InstallRules(t.WithAgents(c.agentNamesLocked()))
}

// syncRuleAgentsLocked follows endpoints coming and going: their agent
// names decide which rows of the rule tables apply to them.
func (c *Controller) syncRuleAgentsLocked() error {
	if c.dp == nil || c.packetRules == nil {
		return nil
	}
	return c.dp.SetRuleAgents(c.packetRules.WithAgents(c.agentNamesLocked()).Agents)
}

// agentNamesLocked maps each endpoint identity to the agent name rules see
// (agent.name).
func (c *Controller) agentNamesLocked() map[uint32]string {
	names := map[uint32]string{}
	for _, e := range c.endpoints.List() {
		names[e.Identity] = e.AgentName()
	}
	return names
}

// DatapathRuleHits implements metrics.Source.
func (c *Controller) DatapathRuleHits(ctx context.Context) ([]metrics.RuleHit, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dp == nil {
		return nil, nil
	}
	hits, err := c.dp.RuleHits()
	if err != nil {
		return nil, err
	}
	out := make([]metrics.RuleHit, 0, len(hits))
	for _, h := range hits {
		decision := api.DecisionBlock
		if h.Action == ruletable.Allow {
			decision = api.DecisionAllow
		}
		out = append(out, metrics.RuleHit{RuleID: h.RuleID, Decision: decision, Packets: h.Packets, Bytes: h.Bytes})
	}
	return out, nil
}
