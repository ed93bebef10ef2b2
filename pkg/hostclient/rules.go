package hostclient

import (
	"context"
	"net/url"

	"outcall.dev/outcall/pkg/api"
)

// The rule engine calls (S003-IF-001..005, 007..009). IDs are path-escaped
// here, once, so that an ID holding "/" or "?" names that ID and never
// another route.

// Evaluate asks the rule engine for a decision on ec (S003-IF-001).
func (c *Client) Evaluate(ctx context.Context, ec api.EvaluationContext) (api.EvaluateResult, error) {
	return do[api.EvaluateResult](ctx, c, "POST", "/api/v1/rule/evaluate", api.EvaluateRequest{Context: ec})
}

// Rules lists the loaded rules in evaluation order (S003-IF-002).
func (c *Client) Rules(ctx context.Context) ([]api.RuleSummary, error) {
	return do[[]api.RuleSummary](ctx, c, "GET", "/api/v1/rules", nil)
}

// Rule returns one rule with its expanded condition (S003-IF-003).
func (c *Client) Rule(ctx context.Context, id string) (api.RuleDetail, error) {
	return do[api.RuleDetail](ctx, c, "GET", "/api/v1/rule/"+url.PathEscape(id), nil)
}

// ReloadRules makes the daemon re-read its rules directory (S003-IF-004).
func (c *Client) ReloadRules(ctx context.Context) (api.ReloadResult, error) {
	return do[api.ReloadResult](ctx, c, "POST", "/api/v1/rules/reload", nil)
}

// TestExpression evaluates one CEL expression against a context without
// touching the active rules (S003-IF-005).
func (c *Client) TestExpression(ctx context.Context, req api.TestExpressionRequest) (api.TestExpressionResult, error) {
	return do[api.TestExpressionResult](ctx, c, "POST", "/api/v1/rule/test", req)
}

// RuleRequests lists the pending rule requests (S003-IF-007).
func (c *Client) RuleRequests(ctx context.Context) ([]api.PendingRuleRequest, error) {
	return do[[]api.PendingRuleRequest](ctx, c, "GET", "/api/v1/requests/rules", nil)
}

// ApproveRuleRequest approves a pending rule request (S003-IF-008).
func (c *Client) ApproveRuleRequest(ctx context.Context, id string) (api.ApproveResult, error) {
	return do[api.ApproveResult](ctx, c, "POST", "/api/v1/requests/rules/"+url.PathEscape(id)+"/approve", nil)
}

// RejectRuleRequest rejects a pending rule request (S003-IF-009). A nil
// reason sends no body at all.
func (c *Client) RejectRuleRequest(ctx context.Context, id string, reason *string) (api.RejectResult, error) {
	var body any
	if reason != nil {
		body = api.RejectRequest{Reason: reason}
	}
	return do[api.RejectResult](ctx, c, "POST", "/api/v1/requests/rules/"+url.PathEscape(id)+"/reject", body)
}
