package agentapi

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent API's Prometheus series. Labels are bounded: a
// route of four (or "none"), a named outcome, a rule id of the operator's
// rule files or a pseudo-rule, a decision, an operation. Never a container
// id, a target or a token (DESIGN §6).
type metrics struct {
	requests    *prometheus.CounterVec
	decisions   *prometheus.CounterVec
	rateLimited *prometheus.CounterVec
	sessions    prometheus.GaugeFunc
}

// Route labels.
const (
	routeCheckin    = "checkin"
	routePermission = "permission_check"
	routeRuleSubmit = "rule_submit"
	routeRuleStatus = "rule_status"
	routeNone       = "none"
)

// Outcome labels of successful requests; errors carry their own
// (apiError.outcome).
const (
	outcomeOK      = "ok"
	outcomeCreated = "created"
)

// Pseudo-rules: the rule label of verdicts no rule made.
const (
	ruleTimeout     = "evaluation-timeout"
	ruleUnavailable = "evaluation-unavailable"
)

// Operation labels of rate limit rejections.
const (
	opPermission = "permission_check"
	opRuleSubmit = "rule_submit"
)

func newMetrics(liveSessions func() float64) *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_agent_requests_total",
			Help: "Agent API requests answered, by route and outcome.",
		}, []string{"route", "outcome"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_agent_permission_decisions_total",
			Help: "Agent API permission verdicts, by deciding rule (default-block, evaluation-timeout, evaluation-unavailable when none) and decision.",
		}, []string{"rule_id", "decision"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_agent_rate_limited_total",
			Help: "Agent API requests refused by a per-container rate limit, by operation.",
		}, []string{"operation"}),
		sessions: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outcall_agent_sessions",
			Help: "Live agent API sessions (one per checked-in container).",
		}, liveSessions),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.decisions, m.rateLimited, m.sessions}
}
