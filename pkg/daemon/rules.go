package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/metrics"
	"outcall.dev/outcall/pkg/rulereq"
	"outcall.dev/outcall/pkg/rules"
	"outcall.dev/outcall/pkg/ruletable"
)

var errEvaluationUnavailable = apikit.Wrap(apikit.ErrBridgeDown, errors.New("rule evaluation unavailable: bridge is not up"))

// InstallRules implements rules.PacketLayer: a reload's packet tables go
// into the datapath, with the agent class of every registered endpoint.
// While the bridge is down they are kept and installed when it comes up.
//
// Grants a rule's decision opened (DNS-learned) stay only while the new set
// still has that rule as an allow rule; the others are revoked with their
// flows, as the new generation re-decides the rest. Operator grants stay.
func (d *Daemon) InstallRules(t *rules.PacketTables) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp != nil {
		if err := d.installRulesLocked(t); err != nil {
			return err
		}
	}
	d.packetRules = t
	if d.grants != nil && t != nil {
		keep := map[string]bool{}
		for _, r := range t.Tables.Rules {
			if r.Action == ruletable.Allow {
				keep[r.ID] = true
			}
		}
		if n, err := d.grants.RevokeOwnersExcept(keep); err != nil {
			d.log.Error("revoke grants of rules the reload removed", "err", err)
		} else if n > 0 {
			d.log.Info("revoked grants of rules the reload removed", "count", n)
		}
	}
	return nil
}

// installRulesLocked puts t into the datapath with the agent class of every
// registered endpoint; nil empties the tables.
func (d *Daemon) installRulesLocked(t *rules.PacketTables) error {
	if t == nil {
		return d.dp.ClearRules()
	}
	return d.dp.InstallRules(t.WithAgents(d.agentNamesLocked()))
}

// syncRuleAgentsLocked follows endpoints coming and going: their agent
// names decide which rows of the rule tables apply to them.
func (d *Daemon) syncRuleAgentsLocked() error {
	if d.dp == nil || d.packetRules == nil {
		return nil
	}
	return d.dp.SetRuleAgents(d.packetRules.WithAgents(d.agentNamesLocked()).Agents)
}

// agentNamesLocked maps each endpoint identity to the agent name rules see
// (agent.name).
func (d *Daemon) agentNamesLocked() map[uint32]string {
	names := map[uint32]string{}
	for _, e := range d.endpoints.List() {
		names[e.Identity] = e.Name
	}
	return names
}

// DatapathRuleHits implements metrics.Source.
func (d *Daemon) DatapathRuleHits(ctx context.Context) ([]metrics.RuleHit, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dp == nil {
		return nil, nil
	}
	hits, err := d.dp.RuleHits()
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

// requireBridgeUp refuses rule evaluation unless the base policy is in
// place (S003-FR-033): an evaluation never answers allow for a bridge that
// is not enforcing.
func (d *Daemon) requireBridgeUp(ctx context.Context) error {
	st, err := d.BridgeStatus(ctx)
	if err != nil || !st.Up || !st.NftablesActive {
		return errEvaluationUnavailable
	}
	return nil
}

// Evaluate implements hostapi.Service (S003-IF-001).
func (d *Daemon) Evaluate(ctx context.Context, c api.EvaluationContext) (api.EvaluateResult, error) {
	if err := d.requireBridgeUp(ctx); err != nil {
		return api.EvaluateResult{}, err
	}
	return d.rules.Evaluate(ctx, rules.LayerHostAPI, &c).Result(), nil
}

// TestExpression implements hostapi.Service (S003-IF-005).
func (d *Daemon) TestExpression(ctx context.Context, req api.TestExpressionRequest) (api.TestExpressionResult, error) {
	if err := d.requireBridgeUp(ctx); err != nil {
		return api.TestExpressionResult{}, err
	}
	return d.rules.Compiler().TestExpression(req.Expression, &req.Context), nil
}

// previewLen bounds condition_preview; rule show has the whole condition.
const previewLen = 120

// Rules implements hostapi.Service (S003-IF-002): evaluation order.
func (d *Daemon) Rules(ctx context.Context) ([]api.RuleSummary, error) {
	set := d.rules.Active()
	out := make([]api.RuleSummary, 0, len(set.Rules()))
	for _, r := range set.Rules() {
		preview := strings.Join(strings.Fields(r.Condition), " ")
		if len(preview) > previewLen {
			preview = preview[:previewLen-3] + "..."
		}
		out = append(out, api.RuleSummary{ID: r.ID, File: r.File, Action: r.Action, ConditionPreview: preview,
			Description: r.Description, Priority: r.Priority, Level: r.Level})
	}
	return out, nil
}

// Rule implements hostapi.Service (S003-IF-003).
func (d *Daemon) Rule(ctx context.Context, id string) (api.RuleDetail, error) {
	r, ok := d.rules.Active().Rule(id)
	if !ok {
		return api.RuleDetail{}, notFound(fmt.Errorf("rule not found: %q", id))
	}
	return api.RuleDetail{ID: r.ID, Condition: r.Condition, Action: r.Action, Log: r.Log, Description: r.Description,
		Priority: r.Priority, File: r.File, Line: r.Line, Level: r.Level, Egress: r.Egress}, nil
}

// ReloadRules implements hostapi.Service (S003-IF-004).
func (d *Daemon) ReloadRules(ctx context.Context) (api.ReloadResult, error) {
	res, err := d.rules.Reload(ctx)
	if err != nil {
		return res, apikit.Wrap(apikit.ErrUnprocessable, err)
	}
	return res, nil
}

// RuleRequests implements hostapi.Service (S003-IF-007).
func (d *Daemon) RuleRequests(ctx context.Context) ([]api.PendingRuleRequest, error) {
	return d.requests.Pending(ctx), nil
}

// ApproveRuleRequest implements hostapi.Service (S003-IF-008): the file is
// written and the rules reloaded; a failed reload removes the file again.
func (d *Daemon) ApproveRuleRequest(ctx context.Context, id string) (api.ApproveResult, error) {
	res, err := d.requests.Approve(ctx, id, d.rules.Dir(), func(ctx context.Context) (int, error) {
		r, err := d.rules.Reload(ctx)
		return r.RulesLoaded, err
	})
	return res, requestError(err)
}

// RejectRuleRequest implements hostapi.Service (S003-IF-009).
func (d *Daemon) RejectRuleRequest(ctx context.Context, id string, reason *string) (api.RejectResult, error) {
	res, err := d.requests.Reject(ctx, id, reason)
	return res, requestError(err)
}

func requestError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rulereq.ErrNotFound):
		return notFound(err)
	case errors.Is(err, rulereq.ErrNotPending):
		return apikit.Wrap(apikit.ErrConflict, err)
	case errors.Is(err, rulereq.ErrInvalidReason), errors.Is(err, rulereq.ErrInvalidSubmission):
		return apikit.Wrap(apikit.ErrInvalid, err)
	}
	return err // 500
}
