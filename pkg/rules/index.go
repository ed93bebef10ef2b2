package rules

import (
	"slices"

	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
)

// ruleIndex lets an evaluation skip rules that cannot match. Most rules
// name a host, a query or an address: their condition is a conjunction with
// a term field == "literal" (or field in [literals]). When the context's
// field has another value that term is false, and so is the whole
// condition — CEL's && is false when any operand is, even if another one
// fails — so skipping the rule changes no decision, error or warning.
type ruleIndex struct {
	// always holds the rules without such a term, in evaluation order.
	always []int
	keyed  []keyedRules
}

// keyedRules are the rules whose condition requires field to be one of
// the keys of byValue.
type keyedRules struct {
	field   string
	byValue map[string][]int // rule positions, ascending
}

func newRuleIndex(rules []*Rule) *ruleIndex {
	ix := &ruleIndex{}
	byField := map[string]int{}
	for i, r := range rules {
		a := r.ast
		field, values, ok := requiredValues(a, a.Expr())
		if !ok {
			ix.always = append(ix.always, i)
			continue
		}
		k, seen := byField[field]
		if !seen {
			k = len(ix.keyed)
			byField[field] = k
			ix.keyed = append(ix.keyed, keyedRules{field: field, byValue: map[string][]int{}})
		}
		slices.Sort(values)
		for _, v := range slices.Compact(values) {
			ix.keyed[k].byValue[v] = append(ix.keyed[k].byValue[v], i)
		}
	}
	return ix
}

// requiredValues finds a string field that must equal one of values for e
// to be true.
func requiredValues(a *celast.AST, e celast.Expr) (field string, values []string, ok bool) {
	if e.Kind() != celast.CallKind {
		return "", nil, false
	}
	call := e.AsCall()
	args := call.Args()
	switch call.FunctionName() {
	case operators.LogicalAnd:
		for _, arg := range args {
			if field, values, ok := requiredValues(a, arg); ok {
				return field, values, true
			}
		}
	case operators.LogicalOr:
		for i, arg := range args {
			f, vs, ok := requiredValues(a, arg)
			if !ok || (i > 0 && f != field) {
				return "", nil, false
			}
			field, values = f, append(values, vs...)
		}
		return field, values, true
	case operators.Equals:
		f, lit := fieldOf(a, args[0]), args[1]
		if f == "" {
			f, lit = fieldOf(a, args[1]), args[0]
		}
		if s, isLit := stringLiteral(lit); isLit && isStringField(f) {
			return f, []string{s}, true
		}
	case operators.In:
		f := fieldOf(a, args[0])
		if !isStringField(f) || args[1].Kind() != celast.ListKind {
			return "", nil, false
		}
		for _, el := range args[1].AsList().Elements() {
			s, isLit := stringLiteral(el)
			if !isLit {
				return "", nil, false
			}
			values = append(values, s)
		}
		return f, values, true
	}
	return "", nil, false
}

// candidates returns the positions of the rules that may match, ascending.
func (ix *ruleIndex) candidates(act activation) []int {
	lists := [][]int{ix.always}
	for _, k := range ix.keyed {
		v, _ := act.ResolveName(k.field)
		if l := k.byValue[v.(string)]; len(l) > 0 {
			lists = append(lists, l)
		}
	}
	if len(lists) == 1 {
		return lists[0]
	}
	var out []int
	for _, l := range lists {
		out = append(out, l...)
	}
	slices.Sort(out)
	return out
}
