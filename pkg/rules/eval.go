package rules

import (
	"context"
	"errors"
	"fmt"

	"cel.dev/cel-go/common/types"

	"outcall.dev/outcall/pkg/api"
)

// Outcome is one evaluation of a context against a rule set.
type Outcome struct {
	// Layer is the enforcement point the evaluation was for; empty from
	// Set.Evaluate, which serves every layer.
	Layer    Layer
	Decision api.Decision
	// Rule decided, with its file, action, egress mode and ports
	// (Rule.Egress) and egress.allow_private_ips (Rule.AllowPrivateIPs);
	// nil for the default block.
	Rule *Rule
	// Err is the runtime error of Rule. An erroring rule blocks, whatever its
	// action (DESIGN §7: fail closed, naming the rule).
	Err error
	// NonBool lists rules whose condition yielded something other than a
	// bool for this context and which therefore did not match (S003-EC-012).
	NonBool []*Rule
	// Skipped lists allow rules whose condition held but which may not open
	// the context's restricted destination (see restricted.go), in order.
	Skipped []*Rule
}

// RuleID is the ID of the rule that decided, or DefaultRuleLabel.
func (o Outcome) RuleID() string {
	if o.Rule == nil {
		return DefaultRuleLabel
	}
	return o.Rule.ID
}

// Logged reports whether the deciding rule asks for an audit entry.
func (o Outcome) Logged() bool { return o.Rule != nil && o.Rule.Log }

// Result is the outcome as the host API reports it (S003-IF-001):
// matched_rule and file null for the default block.
func (o Outcome) Result() api.EvaluateResult {
	res := api.EvaluateResult{Decision: o.Decision, Logged: o.Logged()}
	if r := o.Rule; r != nil {
		id, file := r.ID, r.File
		res.MatchedRule, res.File = &id, &file
	}
	return res
}

// Evaluate runs the rules in order against c: the first condition that is
// true decides with its rule's action; no match blocks (S003-FR-008/009).
// An allow rule does not match a restricted destination it does not
// license (it names no prefix inside the destination's range, or lacks
// egress.allow_private_ips): the rules after it decide.
func (s *Set) Evaluate(c *api.EvaluationContext) Outcome {
	// A context that never ends: the walk cannot be interrupted, so there
	// is no error.
	out, _ := s.EvaluateContext(context.Background(), c)
	return out
}

func decisionOf(a api.RuleAction) api.Decision {
	if a == api.ActionAllow {
		return api.DecisionAllow
	}
	return api.DecisionBlock
}

// TestExpression compiles and evaluates one expression against c without
// touching any rule set (S003-IF-005). Compile and runtime errors are part of
// the result, not an error of the call.
func (c *Compiler) TestExpression(expr string, ctx *api.EvaluationContext) api.TestExpressionResult {
	fail := func(err error) api.TestExpressionResult {
		msg := err.Error()
		return api.TestExpressionResult{Error: &msg}
	}
	if len(expr) > maxTestExpression {
		return fail(fmt.Errorf("expression is %d bytes; the limit is %d", len(expr), maxTestExpression))
	}
	ast, iss := c.env.Compile(expr)
	if iss.Err() != nil {
		return fail(celError(iss))
	}
	prg, err := c.env.Program(ast)
	if err != nil {
		return fail(err)
	}
	val, _, err := prg.Eval(activation{ctx})
	if err != nil {
		return fail(fmt.Errorf("CEL evaluation error: %w", err))
	}
	b, ok := val.(types.Bool)
	if !ok {
		return fail(errors.New("expression yields " + val.Type().TypeName() + ", not bool"))
	}
	return api.TestExpressionResult{Result: bool(b)}
}

// maxTestExpression bounds what an operator can ask the daemon to compile.
const maxTestExpression = 64 << 10
