package rules

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/rulefile"
)

// Rule is one compiled rule.
type Rule struct {
	rulefile.Rule
	// Level is api.LevelPacket when the datapath enforces the rule exactly,
	// api.LevelRequest when only the DNS filter, proxy and agent API can.
	Level string

	ast     *celast.AST // checked
	program cel.Program
	// named are the IPv4 prefixes the condition names as destinations
	// (cidr literals, network.ip literals), masked, sorted, without repeats:
	// what may license a restricted destination (see licenses).
	named []netip.Prefix
	// warnedType makes the non-bool warning appear once per rule set, not
	// once per request.
	warnedType atomic.Bool
	// loops says the condition has a comprehension: only such a program
	// can run long on a bounded input, so only it is evaluated with
	// ContextEval (see EvaluateContext).
	loops bool
}

// Set is an immutable, compiled rule set: evaluations that started on it
// finish on it, whatever reloads happen meanwhile (S003-FR-040).
type Set struct {
	rules    []*Rule
	byID     map[string]*Rule
	files    []string
	warnings []string
	packet   *PacketTables
	index    *ruleIndex
}

// Rules returns the rules in evaluation order.
func (s *Set) Rules() []*Rule { return s.rules }

// Rule returns the rule with the given id.
func (s *Set) Rule(id string) (*Rule, bool) {
	r, ok := s.byID[id]
	return r, ok
}

// Files returns the rule files the set was loaded from, in load order.
func (s *Set) Files() []string { return s.files }

// Warnings returns what loading found questionable but accepted.
func (s *Set) Warnings() []string { return s.warnings }

// PacketTables returns the packet-layer lowering of the set.
func (s *Set) PacketTables() *PacketTables { return s.packet }

// Result summarises the set as a reload reports it.
func (s *Set) Result() api.ReloadResult {
	res := api.ReloadResult{FilesLoaded: len(s.files), RulesLoaded: len(s.rules), Warnings: s.warnings}
	for _, r := range s.rules {
		if r.Level == api.LevelPacket {
			res.PacketRules++
		}
	}
	if res.Warnings == nil {
		res.Warnings = []string{}
	}
	return res
}

// Compiler turns loaded rule files into rule sets. It holds the CEL
// environment, which is expensive to build and safe to share, and the
// programs of the last set it compiled: a reload that changed one file
// compiles only that file's conditions again.
type Compiler struct {
	env *cel.Env

	mu    sync.Mutex
	cache map[string]*compiled // by expanded condition
}

// compiled is a condition's checked AST and program; both are immutable
// and shared by every rule set that has the condition.
type compiled struct {
	ast     *celast.AST // checked
	program cel.Program
	named   []netip.Prefix
	loops   bool
}

// NewCompiler returns a compiler with Outcall's CEL environment.
func NewCompiler() (*Compiler, error) {
	env, err := newEnv()
	if err != nil {
		return nil, err
	}
	return &Compiler{env: env}, nil
}

// Compile compiles every condition of a loaded rule directory, on all CPUs,
// and lowers the packet-level rules. Any error rejects the whole set; the
// error reported is the first in evaluation order.
func (c *Compiler) Compile(loaded *rulefile.Set) (*Set, error) {
	c.mu.Lock()
	cache := c.cache
	c.mu.Unlock()
	n := len(loaded.Rules)
	rules, warns, errs := make([]*Rule, n), make([]string, n), make([]error, n)
	tmpls := newTemplates(c.env)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				rules[i], warns[i], errs[i] = c.compileRule(loaded.Rules[i], cache, tmpls)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	s := &Set{
		rules:    rules,
		byID:     make(map[string]*Rule, n),
		files:    loaded.Files,
		warnings: append([]string(nil), loaded.Warnings...),
	}
	used := make(map[string]*compiled, n)
	for i, r := range rules {
		s.byID[r.ID] = r
		if warns[i] != "" {
			s.warnings = append(s.warnings, warns[i])
		}
		used[r.Condition] = &compiled{ast: r.ast, program: r.program, named: r.named, loops: r.loops}
	}
	s.index = newRuleIndex(rules)
	packet, warnings, err := lower(c.env, s.rules)
	if err != nil {
		return nil, err
	}
	s.packet = packet
	s.warnings = append(s.warnings, warnings...)
	c.mu.Lock()
	c.cache = used
	c.mu.Unlock()
	return s, nil
}

// compileRule compiles one condition — through its template when it has
// one — or takes it from cache; the error
// names file, line, rule and field, as every load error does.
func (c *Compiler) compileRule(lr rulefile.Rule, cache map[string]*compiled, tmpls *templates) (*Rule, string, error) {
	cc, ok := cache[lr.Condition]
	if !ok {
		fail := func(err error) error {
			return &rulefile.Error{File: lr.File, Line: lr.ConditionLine, Rule: lr.ID, Field: "condition", Err: err}
		}
		ast, ok := tmpls.parse(lr.Condition)
		if !ok {
			checked, iss := c.env.Compile(lr.Condition)
			if iss.Err() != nil {
				return nil, "", fail(celError(iss))
			}
			ast = checked.NativeRep()
		}
		prg, err := c.env.PlanProgram(ast, cel.EvalOptions(cel.OptOptimize), cel.InterruptCheckFrequency(interruptCheckFrequency))
		if err != nil {
			return nil, "", fail(fmt.Errorf("CEL program: %w", err))
		}
		cc = &compiled{ast: ast, program: prg, named: namedPrefixes(ast), loops: hasComprehension(ast)}
	}
	r := &Rule{Rule: lr, ast: cc.ast, program: cc.program, named: cc.named, loops: cc.loops, Level: api.LevelRequest}
	var warn string
	if t := cc.ast.GetType(cc.ast.Expr().ID()); !t.IsExactType(cel.BoolType) && !t.IsExactType(cel.DynType) {
		warn = fmt.Sprintf("rule %q in %s: condition yields %s, not bool; it never matches", lr.ID, lr.File, t)
		r.warnedType.Store(true)
	}
	return r, warn, nil
}

// celError keeps what an operator needs from cel-go's issues: each message
// with its position in the condition, without the source excerpt and caret.
func celError(iss *cel.Issues) error {
	var msgs []string
	for _, e := range iss.Errors() {
		msgs = append(msgs, fmt.Sprintf("%s (condition line %d, column %d)",
			e.Message, e.Location.Line(), e.Location.Column()+1))
	}
	msg := strings.Join(msgs, "; ")
	if strings.Contains(msg, "undeclared reference") {
		msg += "; the context fields are " + fieldList
	}
	return fmt.Errorf("CEL error: %s", msg)
}
