package rules

import (
	"context"
	"fmt"
	"time"

	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"

	"outcall.dev/outcall/pkg/api"
)

// interruptCheckFrequency is how many comprehension iterations a CEL
// program runs between looks at its context (cel.InterruptCheckFrequency):
// often enough that a runaway list comprehension stops within microseconds
// of its deadline, rarely enough that the check costs nothing measurable.
const interruptCheckFrequency = 64

// EvaluateContext is Set.Evaluate under ctx: the same walk, the same
// decisions, except that it stops when ctx is done, between rules and
// inside a rule's comprehensions (prg.ContextEval, for the rules that have
// one), and then returns ctx's error and no decision. The caller decides what an unfinished evaluation
// means; the agent API denies (S004-EC-007). A rule's own runtime error is
// still a block naming the rule, never an error of the call.
func (s *Set) EvaluateContext(ctx context.Context, c *api.EvaluationContext) (Outcome, error) {
	act := activation{c}
	dst, restricted := restrictedDst(c)
	var out Outcome
	for _, i := range s.index.candidates(act) {
		if err := ctx.Err(); err != nil {
			return Outcome{}, fmt.Errorf("evaluate rules: %w", context.Cause(ctx))
		}
		r := s.rules[i]
		var val ref.Val
		var err error
		if r.loops {
			val, _, err = r.program.ContextEval(ctx, act)
		} else {
			// Without a comprehension a condition's work is bounded by
			// its size and the input's; ContextEval's per-call set-up
			// would cost more than the check between rules saves.
			val, _, err = r.program.Eval(act)
		}
		if err != nil {
			if ctx.Err() != nil {
				// Interrupted (or failed because it was): not the rule's
				// verdict.
				return Outcome{}, fmt.Errorf("evaluate rule %q: %w", r.ID, context.Cause(ctx))
			}
			out.Decision, out.Rule, out.Err = api.DecisionBlock, r, err
			return out, nil
		}
		b, ok := val.(types.Bool)
		if !ok {
			if !r.warnedType.Swap(true) {
				out.NonBool = append(out.NonBool, r)
			}
			continue
		}
		if bool(b) && r.Action == api.ActionAllow && !r.licenses(dst, restricted) {
			out.Skipped = append(out.Skipped, r)
			continue
		}
		if b {
			out.Decision, out.Rule = decisionOf(r.Action), r
			return out, nil
		}
	}
	out.Decision = api.DecisionBlock
	return out, nil
}

// EvaluateContext is Engine.Evaluate under ctx (Set.EvaluateContext): a
// finished evaluation is logged and reported to the Observer exactly as
// Evaluate's are, so rule hit metrics count it; an unfinished one returns
// ctx's error, is logged at Warn and reported to nobody (no rule decided).
func (e *Engine) EvaluateContext(ctx context.Context, layer Layer, c *api.EvaluationContext) (Outcome, error) {
	start := time.Now()
	out, err := e.active.Load().EvaluateContext(ctx, c)
	if err != nil {
		e.log.WarnContext(ctx, "rule evaluation did not finish in time", "layer", layer, "took", time.Since(start), "err", err)
		return Outcome{}, err
	}
	out.Layer = layer
	e.report(ctx, layer, out, time.Since(start))
	return out, nil
}

// report logs and counts one finished evaluation, as Engine.Evaluate does.
func (e *Engine) report(ctx context.Context, layer Layer, out Outcome, took time.Duration) {
	label := out.RuleID()
	for _, r := range out.NonBool {
		e.log.WarnContext(ctx, "rule condition did not yield a bool; treated as no match",
			"rule_id", r.ID, "file", r.File)
	}
	for _, r := range out.Skipped {
		e.log.DebugContext(ctx, "allow rule matched a restricted destination it does not name with egress.allow_private_ips; skipped",
			"rule_id", r.ID, "file", r.File, "layer", layer)
	}
	// Only the rule, its file and the decision are logged: contexts carry
	// headers, paths and arguments that may hold secrets (S003-FR-020).
	attrs := []any{"rule_id", label, "decision", out.Decision, "layer", layer}
	if out.Rule != nil {
		attrs = append(attrs, "file", out.Rule.File)
	}
	switch {
	case out.Err != nil:
		e.log.WarnContext(ctx, "rule condition failed; blocking", append(attrs, "err", out.Err)...)
	case out.Logged():
		e.log.InfoContext(ctx, "rule matched", attrs...)
	default:
		e.log.DebugContext(ctx, "rule evaluated", attrs...)
	}
	if took > e.opts.Budget {
		e.log.WarnContext(ctx, "rule evaluation exceeded its budget", "took", took, "budget", e.opts.Budget, "layer", layer)
	}
	if e.opts.Observer != nil {
		e.opts.Observer.ObserveDecision(string(layer), label, out.Decision)
	}
}

// hasComprehension reports whether a checked condition contains a
// comprehension (all, exists, exists_one, map, filter, ...), the only
// construct whose work is not bounded by the expression's and the input's
// size.
func hasComprehension(a *celast.AST) bool {
	found := false
	celast.PreOrderVisit(a.Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() == celast.ComprehensionKind {
			found = true
		}
	}))
	return found
}
