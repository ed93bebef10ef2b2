package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/apikit"
	"outcall.dev/outcall/pkg/hostapi"
	"outcall.dev/outcall/pkg/network"
	"outcall.dev/outcall/pkg/rulereq"
	"outcall.dev/outcall/pkg/rules"
)

// hostService is what the host API serves: the networks (bridges, networks,
// endpoints, grants, counters), the rules, the DNS filter and the proxy.
type hostService struct {
	*network.Controller
	*ruleService
	nameService
	containers ContainerManager // nil: every container call is 503 (containers.go)
	// docker says whether Docker answers (Daemon.dockerStatus).
	docker func() *api.DockerStatus
}

var _ hostapi.Service = hostService{}

func (d *Daemon) hostService() hostService {
	return hostService{d.networks, &ruleService{networks: d.networks, rules: d.rules, requests: d.requests}, nameService{d.dns, d.proxy}, d.containers, d.dockerStatus}
}

// ruleService serves the rule engine and rule requests on the host API.
type ruleService struct {
	networks *network.Controller
	rules    *rules.Engine
	requests *rulereq.Store
}

// BridgeStatus is the Controller's, with the Docker manager's state while
// Docker does not answer.
func (s hostService) BridgeStatus(ctx context.Context) (api.BridgeStatus, error) {
	st, err := s.Controller.BridgeStatus(ctx)
	st.Docker = s.docker()
	return st, err
}

func notFound(err error) error { return apikit.Wrap(apikit.ErrNotFound, err) }

var errEvaluationUnavailable = apikit.Wrap(apikit.ErrBridgeDown, errors.New("rule evaluation unavailable: bridge is not up"))

// requireBridgeUp refuses rule evaluation unless the base policy is in
// place (S003-FR-033): an evaluation never answers allow for a bridge that
// is not enforcing.
func (d *ruleService) requireBridgeUp(ctx context.Context) error {
	st, err := d.networks.BridgeStatus(ctx)
	if err != nil || !st.Up || !st.NftablesActive {
		return errEvaluationUnavailable
	}
	return nil
}

// Evaluate serves (S003-IF-001).
func (d *ruleService) Evaluate(ctx context.Context, c api.EvaluationContext) (api.EvaluateResult, error) {
	if err := d.requireBridgeUp(ctx); err != nil {
		return api.EvaluateResult{}, err
	}
	return d.rules.Evaluate(ctx, rules.LayerHostAPI, &c).Result(), nil
}

// TestExpression serves (S003-IF-005).
func (d *ruleService) TestExpression(ctx context.Context, req api.TestExpressionRequest) (api.TestExpressionResult, error) {
	if err := d.requireBridgeUp(ctx); err != nil {
		return api.TestExpressionResult{}, err
	}
	return d.rules.Compiler().TestExpression(req.Expression, &req.Context), nil
}

// previewLen bounds condition_preview; rule show has the whole condition.
const previewLen = 120

// Rules serves (S003-IF-002): evaluation order.
func (d *ruleService) Rules(ctx context.Context) ([]api.RuleSummary, error) {
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

// Rule serves (S003-IF-003).
func (d *ruleService) Rule(ctx context.Context, id string) (api.RuleDetail, error) {
	r, ok := d.rules.Active().Rule(id)
	if !ok {
		return api.RuleDetail{}, notFound(fmt.Errorf("rule not found: %q", id))
	}
	return api.RuleDetail{ID: r.ID, Condition: r.Condition, Action: r.Action, Log: r.Log, Description: r.Description,
		Priority: r.Priority, File: r.File, Line: r.Line, Level: r.Level, Egress: r.Egress}, nil
}

// ReloadRules serves (S003-IF-004).
func (d *ruleService) ReloadRules(ctx context.Context) (api.ReloadResult, error) {
	res, err := d.rules.Reload(ctx)
	if err != nil {
		return res, apikit.Wrap(apikit.ErrUnprocessable, err)
	}
	return res, nil
}

// RuleRequests serves (S003-IF-007).
func (d *ruleService) RuleRequests(ctx context.Context) ([]api.PendingRuleRequest, error) {
	return d.requests.Pending(ctx), nil
}

// ApproveRuleRequest serves (S003-IF-008): the file is
// written and the rules reloaded; a failed reload removes the file again.
func (d *ruleService) ApproveRuleRequest(ctx context.Context, id string) (api.ApproveResult, error) {
	res, err := d.requests.Approve(ctx, id, d.rules.Dir(), func(ctx context.Context) (int, error) {
		r, err := d.rules.Reload(ctx)
		return r.RulesLoaded, err
	})
	return res, requestError(err)
}

// RejectRuleRequest serves (S003-IF-009).
func (d *ruleService) RejectRuleRequest(ctx context.Context, id string, reason *string) (api.RejectResult, error) {
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
