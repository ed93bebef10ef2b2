package rules

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/netrange"
	"outcall.dev/outcall/pkg/ruletable"
)

// Lowering turns the rule list into the datapath's tables (DESIGN §4) so
// that, for every packet, the kernel's verdict is the one evaluating the
// whole list in CEL would give for the packet's network context
// (network.ip, network.port, network.protocol, agent.name; every other
// field absent, so zero).
//
// A condition is a tree of &&, ||, ! over atoms. Packet atoms compare a
// packet field with constants (==, !=, in, cidr().containsIP()); they are
// decided per table row. Subtrees that read no packet field (http.*,
// dns.*, network.hostname, ...) have one value for every packet and are
// evaluated once. Anything else is unknown. Values are three-valued
// (Kleene), which is also how CEL's && and || treat errors.
//
// Destinations are partitioned into classes: every prefix a rule mentions,
// and every restricted range (netrange), is a class, and an address belongs
// to the class of its longest matching prefix (class 0 if none). Prefixes nest or are disjoint, so the class of
// an address fixes the value of every destination atom. Agents are classes
// too: each name a rule mentions, and 0 for every other name. Ports a rule
// mentions get rows of their own, every other port shares an any-port row.
// For each class and protocol (TCP, UDP, ICMP, and protocol 0 for every
// other) the list is walked in order, so first match and default block
// carry over exactly; an allow rule that may not open a restricted class is
// skipped there, as Evaluate skips it (restricted.go).
//
// What the packet layer may not do: an allow rule that reads request-level
// fields never allows a packet (DNS-learned grants do that, per answer); a
// block rule whose value is unknown for a packet blocks it (fail closed).

// tri is a Kleene truth value.
type tri uint8

const (
	tFalse tri = iota
	tTrue
	tUnknown
)

func triOf(b bool) tri {
	if b {
		return tTrue
	}
	return tFalse
}

// Packet fields that lowering understands.
const (
	fieldIP       = "network.ip"
	fieldPort     = "network.port"
	fieldProtocol = "network.protocol"
	fieldAgent    = "agent.name"
)

// Protocols the datapath passes to the rule tables, as CEL sees them. The
// last stands for every other protocol: its packets are looked up with
// protocol 0 and port 0, and network.protocol is their decimal number.
var packetProtocols = []struct {
	name   string
	number uint8
	other  bool
}{{"tcp", 6, false}, {"udp", 17, false}, {"icmp", 1, false}, {"", 0, true}}

// Bounds on what one rule set may expand to, so that a pathological set is
// refused with a reason instead of exhausting the daemon.
const (
	maxTableEntries = 1 << 22
	maxLowerWork    = 1 << 28
)

type predOp uint8

const (
	opConst predOp = iota
	opAnd
	opOr
	opNot
	opDst   // destination in any of prefixes
	opPort  // port in ports
	opProto // protocol in protos
	opAgent // agent name in names
)

// pred is a lowered condition.
type pred struct {
	op       predOp
	val      tri // opConst
	kids     []*pred
	prefixes []int // opDst: indices into lowerer.prefixes
	ports    []int64
	strs     []string // opProto, opAgent
}

// tuple is the packet a row stands for. A dimension that is not known
// (while finding which rules apply where) makes its atoms unknown.
type tuple struct {
	ancestors  []int // prefixes containing the class; nil: no prefix
	dstKnown   bool
	agent      string // "" stands for every name no candidate mentions
	agentKnown bool
	proto      string
	protoOther bool // proto stands for every protocol of the protocol 0 row
	protoKnown bool
	port       int64 // -1 stands for every port no candidate mentions
	portKnown  bool
}

func (p *pred) eval(t *tuple) tri {
	switch p.op {
	case opConst:
		return p.val
	case opAnd, opOr:
		// An operand equal to decisive decides; unknown otherwise wins.
		decisive, res := tFalse, tTrue
		if p.op == opOr {
			decisive, res = tTrue, tFalse
		}
		for _, k := range p.kids {
			switch k.eval(t) {
			case decisive:
				return decisive
			case tUnknown:
				res = tUnknown
			}
		}
		return res
	case opNot:
		switch v := p.kids[0].eval(t); v {
		case tTrue:
			return tFalse
		case tFalse:
			return tTrue
		default:
			return v
		}
	case opDst:
		if !t.dstKnown {
			return tUnknown
		}
		for _, a := range t.ancestors {
			if slices.Contains(p.prefixes, a) {
				return tTrue
			}
		}
		return tFalse
	case opPort:
		if !t.portKnown {
			return tUnknown
		}
		return triOf(t.port >= 0 && slices.Contains(p.ports, t.port))
	case opProto:
		if !t.protoKnown {
			return tUnknown
		}
		if t.protoOther {
			// True for some protocols of the row, false for the others,
			// or false for all of them.
			if slices.ContainsFunc(p.strs, otherProtocol) {
				return tUnknown
			}
			return tFalse
		}
		return triOf(slices.Contains(p.strs, t.proto))
	default: // opAgent
		if !t.agentKnown {
			return tUnknown
		}
		return triOf(t.agent != "" && slices.Contains(p.strs, t.agent))
	}
}

// walk calls fn for p and every node below it.
func (p *pred) walk(fn func(*pred)) {
	fn(p)
	for _, k := range p.kids {
		k.walk(fn)
	}
}

// lrule is a rule as lowering sees it.
type lrule struct {
	index int
	allow bool
	src   *Rule
	pred  *pred
	// What its atoms compare with, each sorted and without repeats:
	// destination prefixes, ports (valid ones), agent names.
	prefixes []int
	ports    []int64
	agents   []string
}

func newLrule(index int, src *Rule, p *pred) *lrule {
	r := &lrule{index: index, allow: src.Action == api.ActionAllow, src: src, pred: p}
	p.walk(func(q *pred) {
		switch q.op {
		case opDst:
			r.prefixes = append(r.prefixes, q.prefixes...)
		case opPort:
			for _, port := range q.ports {
				if port >= 0 && port <= 65535 {
					r.ports = append(r.ports, port)
				}
			}
		case opAgent:
			r.agents = append(r.agents, q.strs...)
		}
	})
	r.prefixes, r.ports, r.agents = sortedSet(r.prefixes), sortedSet(r.ports), sortedSet(r.agents)
	return r
}

func sortedSet[T cmp.Ordered](s []T) []T {
	slices.Sort(s)
	return slices.Compact(s)
}

// lowerer holds the state of one lowering.
type lowerer struct {
	env      *cel.Env
	prefixes []netip.Prefix
	prefixID map[netip.Prefix]int
	warnings []string
	// packet reports, while building a condition, whether it reads only
	// packet fields in ways the datapath expresses.
	packet bool
	// vague reports a subtree that reads packet fields in a way the datapath
	// cannot express.
	vague bool
	// evalRequestParts says whether subtrees that read only request fields
	// are evaluated (block rules) or left unknown (allow rules).
	evalRequestParts bool
	// readsMemo caches reads for the rule being lowered.
	readsMemo map[int64]uint8
	// restricted are the prefix ids of netrange.Restricted().
	restricted []int
}

// PacketTables is the packet-layer form of a rule set.
type PacketTables struct {
	// Tables has every field but Agents, which depends on the endpoints of
	// the moment: see WithAgents.
	Tables ruletable.Tables
	// AgentClasses maps each agent name a packet rule mentions to its class.
	AgentClasses map[string]uint32
}

// WithAgents returns the tables completed with the agent class of each
// identity, given the agent name of each identity.
func (p *PacketTables) WithAgents(names map[uint32]string) *ruletable.Tables {
	t := p.Tables
	t.Agents = make(map[uint32]uint32)
	for id, name := range names {
		if class, ok := p.AgentClasses[name]; ok {
			t.Agents[id] = class
		}
	}
	return &t
}

// lower builds the packet tables of rules and sets each rule's Level.
func lower(env *cel.Env, rules []*Rule) (*PacketTables, []string, error) {
	l := &lowerer{env: env, prefixID: map[netip.Prefix]int{}}
	// The restricted ranges are classes of their own (ids 0 to
	// len(Restricted)-1), so that every class is wholly inside one or
	// outside all.
	for _, p := range netrange.Restricted() {
		l.restricted = append(l.restricted, l.prefix(p))
	}
	out := &PacketTables{AgentClasses: map[string]uint32{}}
	out.Tables.Rules = make([]ruletable.Rule, len(rules))
	var lrules []*lrule
	// requestAllowBefore[i]: some request-level allow rule precedes rule i,
	// so a grant it gave (DNS-learned) may still open what rule i blocks.
	requestAllowBefore := make([]bool, len(rules)+1)
	for i, r := range rules {
		action := ruletable.Block
		if r.Action == api.ActionAllow {
			action = ruletable.Allow
		}
		out.Tables.Rules[i] = ruletable.Rule{ID: r.ID, Action: action}
		l.packet, l.vague = true, false
		// Request-level parts of an allow rule never reach a table, so
		// they need not be evaluated.
		l.evalRequestParts = r.Action != api.ActionAllow
		l.readsMemo = map[int64]uint8{}
		p := l.build(r.ast, r.ast.Expr(), true)
		if l.packet {
			r.Level = api.LevelPacket
		}
		requestAllowBefore[i+1] = requestAllowBefore[i]
		allow := r.Action == api.ActionAllow
		if allow && r.allowsPrivate() && !slices.ContainsFunc(r.named, insideRestricted) {
			l.warnings = append(l.warnings, ruleWarning(r, warnNoNamed))
		}
		switch {
		case allow && !l.packet:
			requestAllowBefore[i+1] = true
			continue // never allows a packet
		case !allow && l.vague:
			l.warnings = append(l.warnings, fmt.Sprintf(
				"rule %q in %s: the datapath cannot express how it reads packet fields; it blocks every packet it might match", r.ID, r.File))
		}
		if p.op == opConst && p.val == tFalse {
			continue // never decides a packet
		}
		lr := newLrule(i, r, p)
		if allow && (slices.Contains(lr.ports, int64(ruletable.DNSPort)) || slices.Contains(lr.ports, int64(ruletable.DoTPort))) {
			l.warnings = append(l.warnings, fmt.Sprintf(
				"rule %q in %s: allows DNS ports (53, 853), but the datapath drops DNS to anything but the gateway's filter", r.ID, r.File))
		}
		lrules = append(lrules, lr)
	}
	ancestors := l.ancestors()
	l.restrictedWarnings(lrules, ancestors)
	if err := l.tables(lrules, requestAllowBefore, ancestors, out); err != nil {
		return nil, nil, err
	}
	return out, l.warnings, nil
}

// build lowers the checked expression e of a; root says whether e is the
// whole condition.
func (l *lowerer) build(a *celast.AST, e celast.Expr, root bool) *pred {
	if reads := l.reads(a, e); reads&readsPacket == 0 {
		if reads&readsField != 0 {
			l.packet = false
			if !l.evalRequestParts {
				return &pred{op: opConst, val: tUnknown}
			}
		}
		return &pred{op: opConst, val: l.constant(a, e, root)}
	}
	if e.Kind() == celast.CallKind {
		call := e.AsCall()
		switch call.FunctionName() {
		case operators.LogicalAnd, operators.LogicalOr:
			op := opAnd
			if call.FunctionName() == operators.LogicalOr {
				op = opOr
			}
			p := &pred{op: op}
			for _, arg := range call.Args() {
				p.kids = append(p.kids, l.build(a, arg, false))
			}
			return p
		case operators.LogicalNot:
			return &pred{op: opNot, kids: []*pred{l.build(a, call.Args()[0], false)}}
		}
		if p := l.atom(a, call); p != nil {
			return p
		}
	}
	l.packet, l.vague = false, true
	return &pred{op: opConst, val: tUnknown}
}

// atom lowers a comparison of one packet field with constants, or returns
// nil when call is not one.
func (l *lowerer) atom(a *celast.AST, call celast.CallExpr) *pred {
	if pfxs, ok := dstAtom(a, call); ok {
		p := &pred{op: opDst}
		for _, pfx := range pfxs {
			p.prefixes = append(p.prefixes, l.prefix(pfx))
		}
		if call.FunctionName() == operators.NotEquals {
			p = &pred{op: opNot, kids: []*pred{p}}
		}
		return p
	}
	args := call.Args()
	switch call.FunctionName() {
	case operators.Equals, operators.NotEquals:
		field, val := fieldOf(a, args[0]), args[1]
		if field == "" {
			field, val = fieldOf(a, args[1]), args[0]
		}
		p := l.compare(field, []celast.Expr{val})
		if p != nil && call.FunctionName() == operators.NotEquals {
			p = &pred{op: opNot, kids: []*pred{p}}
		}
		return p
	case operators.In:
		if args[1].Kind() != celast.ListKind {
			return nil
		}
		return l.compare(fieldOf(a, args[0]), args[1].AsList().Elements())
	}
	return nil
}

// compare lowers "field equals one of vals" for the fields other than
// network.ip (see dstAtom); vals must be literals.
func (l *lowerer) compare(field string, vals []celast.Expr) *pred {
	var p *pred
	switch field {
	case fieldPort:
		p = &pred{op: opPort}
	case fieldProtocol:
		p = &pred{op: opProto}
	case fieldAgent:
		p = &pred{op: opAgent}
	default:
		return nil
	}
	for _, v := range vals {
		if field == fieldPort {
			if v.Kind() != celast.LiteralKind || v.AsLiteral().Type() != types.IntType {
				return nil
			}
			p.ports = append(p.ports, int64(v.AsLiteral().(types.Int)))
			continue
		}
		s, ok := stringLiteral(v)
		if !ok {
			return nil
		}
		p.strs = append(p.strs, s)
	}
	return p
}

func (l *lowerer) prefix(p netip.Prefix) int {
	if id, ok := l.prefixID[p]; ok {
		return id
	}
	l.prefixID[p] = len(l.prefixes)
	l.prefixes = append(l.prefixes, p)
	return len(l.prefixes) - 1
}

// constant evaluates a subtree that reads no packet field, with every
// namespace absent, as it is for a packet. A value that is not a bool does
// not match when it is the whole condition (S003-EC-012) and is an error
// anywhere else, as in CEL.
func (l *lowerer) constant(a *celast.AST, e celast.Expr, root bool) tri {
	sub := celast.NewCheckedAST(celast.NewAST(e, a.SourceInfo()), a.TypeMap(), a.ReferenceMap())
	prg, err := l.env.PlanProgram(sub)
	if err != nil {
		return tUnknown
	}
	val, _, err := prg.Eval(activation{&api.EvaluationContext{}})
	if err != nil {
		return tUnknown
	}
	if b, ok := val.(types.Bool); ok {
		return triOf(bool(b))
	}
	if root {
		return tFalse
	}
	return tUnknown
}

// fieldOf returns the context variable e is, or "".
func fieldOf(a *celast.AST, e celast.Expr) string {
	var name string
	if ref, ok := a.ReferenceMap()[e.ID()]; ok && ref.Value == nil && (e.Kind() == celast.IdentKind || e.Kind() == celast.SelectKind) {
		name = ref.Name
	} else if e.Kind() == celast.IdentKind {
		name = e.AsIdent()
	}
	if _, ok := fieldTypes[name]; !ok {
		return "" // a comprehension variable, or nothing
	}
	return name
}

func stringLiteral(e celast.Expr) (string, bool) {
	if e.Kind() != celast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().(types.String)
	return string(s), ok
}

// Which context fields a subtree reads, as bits.
const (
	readsField  = 1 << iota // any context field
	readsPacket             // network.ip, network.port, network.protocol or agent.name
)

// reads returns what e reads. It is memoised per node, so lowering a
// condition stays linear in its size however deep it nests.
func (l *lowerer) reads(a *celast.AST, e celast.Expr) uint8 {
	if r, ok := l.readsMemo[e.ID()]; ok {
		return r
	}
	var r uint8
	switch f := fieldOf(a, e); f {
	case "":
	case fieldIP, fieldPort, fieldProtocol, fieldAgent:
		r = readsField | readsPacket
	default:
		r = readsField
	}
	for _, c := range celast.NavigateExpr(a, e).Children() {
		r |= l.reads(a, c)
	}
	l.readsMemo[e.ID()] = r
	return r
}

// verdict is what a table row decides.
type verdict struct {
	action  ruletable.Action
	rule    uint32
	grants  bool
	license uint8
}

// dstClass is what deciding needs to know of a destination class.
type dstClass struct {
	prefix netip.Prefix // invalid for class 0
	// restricted: the class lies inside a restricted range of rangeBits.
	restricted bool
	rangeBits  int
}

// decide walks the candidate rules in order for one packet tuple.
func decide(rules []*lrule, cands []int, requestAllowBefore []bool, t *tuple, class *dstClass) verdict {
	for _, ci := range cands {
		r := rules[ci]
		v := r.pred.eval(t)
		switch {
		case v == tFalse:
			continue
		case v == tTrue && r.allow:
			license := r.src.license(class.prefix)
			if class.restricted && int(license) < class.rangeBits {
				continue // it may not open the class: the next rule decides
			}
			return verdict{action: ruletable.Allow, rule: uint32(r.index), license: license}
		}
		// A block rule that holds or might hold, or an allow rule whose
		// condition errors (CEL blocks on errors, naming the rule) or is
		// unknown for some protocols of the protocol 0 row.
		return verdict{action: ruletable.Block, rule: uint32(r.index), grants: requestAllowBefore[r.index]}
	}
	return verdict{action: ruletable.None, grants: true}
}

// rows are the verdicts of one agent class and destination class: per
// protocol, the any-port verdict and one per mentioned port (none for the
// protocol 0 row, whose packets have port 0).
type rows [][]verdict // [proto][0] any port, [proto][1+i] ports[i]

// ancestors returns, for each prefix, the prefixes that contain it, itself
// included, shortest first.
func (l *lowerer) ancestors() [][]int {
	ancestors := make([][]int, len(l.prefixes))
	for i, p := range l.prefixes {
		for bits := 0; bits <= p.Bits(); bits++ {
			if id, ok := l.prefixID[netip.PrefixFrom(p.Addr(), bits).Masked()]; ok {
				ancestors[i] = append(ancestors[i], id)
			}
		}
	}
	return ancestors
}

// class describes destination class d (0, or 1 + a prefix id).
func (l *lowerer) class(d int, ancestors [][]int) dstClass {
	if d == 0 {
		return dstClass{}
	}
	c := dstClass{prefix: l.prefixes[d-1]}
	for _, a := range ancestors[d-1] {
		if a < len(l.restricted) { // the restricted ranges come first
			c.restricted, c.rangeBits = true, l.prefixes[a].Bits()
		}
	}
	return c
}

// insideRestricted reports whether p lies inside a restricted range.
func insideRestricted(p netip.Prefix) bool {
	r, ok := netrange.RangeOf(p.Addr())
	return ok && p.Bits() >= r.Bits()
}

func ruleWarning(r *Rule, msg string) string {
	return fmt.Sprintf("rule %q (%s:%d) %s", r.ID, r.File, r.Line, msg)
}

// restrictedWarnings warns about allow rules that may hold for restricted
// destinations they cannot open: broad ones (true, 0.0.0.0/0, a negated
// prefix) and ones that name a restricted prefix without the flag. The
// value of a rule over the classes inside a range is that on the range's
// own class or on a class of a prefix the rule names inside it, so those
// are the only ones to try.
func (l *lowerer) restrictedWarnings(rules []*lrule, ancestors [][]int) {
	for _, r := range rules {
		if !r.allow {
			continue
		}
		var broad bool
		var unflagged []string
		for _, rid := range l.restricted {
			rng := l.prefixes[rid]
			classes := []int{rid}
			for _, id := range r.prefixes {
				if p := l.prefixes[id]; id != rid && rng.Overlaps(p) && p.Bits() > rng.Bits() {
					classes = append(classes, id)
				}
			}
			for _, id := range classes {
				t := tuple{ancestors: ancestors[id], dstKnown: true}
				if r.pred.eval(&t) == tFalse {
					continue
				}
				class := l.class(id+1, ancestors)
				if int(r.src.license(class.prefix)) >= class.rangeBits {
					continue
				}
				// Does the rule name a restricted prefix around the class?
				named := ""
				for _, a := range ancestors[id] {
					if p := l.prefixes[a]; slices.Contains(r.prefixes, a) && p.Bits() >= rng.Bits() {
						named = p.String()
					}
				}
				if named == "" {
					broad = true
				} else if !slices.Contains(unflagged, named) {
					unflagged = append(unflagged, named)
				}
			}
		}
		if broad {
			l.warnings = append(l.warnings, ruleWarning(r.src, warnBroad))
		}
		if len(unflagged) > 0 {
			l.warnings = append(l.warnings, ruleWarning(r.src, fmt.Sprintf(warnNoFlag, strings.Join(unflagged, ", "))))
		}
	}
}

func (l *lowerer) tables(rules []*lrule, requestAllowBefore []bool, ancestors [][]int, out *PacketTables) error {
	n := len(l.prefixes)
	for i, p := range l.prefixes {
		out.Tables.Prefixes = append(out.Tables.Prefixes, ruletable.Prefix{Prefix: p, Class: uint32(i + 1)})
	}
	// A rule that cannot hold while all its destination atoms are false
	// applies only to the classes under the prefixes it mentions; the
	// others (wildcards) apply everywhere.
	var wildcards []int
	byPrefix := make([][]int, n)
	for ri, r := range rules {
		if r.pred.eval(&tuple{dstKnown: true}) != tFalse {
			wildcards = append(wildcards, ri)
			continue
		}
		for _, id := range r.prefixes {
			byPrefix[id] = append(byPrefix[id], ri)
		}
	}
	var names []string
	for _, r := range rules {
		names = append(names, r.agents...)
	}
	for _, name := range sortedSet(names) {
		out.AgentClasses[name] = uint32(len(out.AgentClasses) + 1)
	}

	work := 0
	for d := 0; d <= n; d++ {
		cands := slices.Clone(wildcards)
		var anc []int
		if d > 0 {
			anc = ancestors[d-1]
			for _, a := range anc {
				cands = append(cands, byPrefix[a]...)
			}
			slices.Sort(cands)
			cands = slices.Compact(cands)
		}
		if len(cands) == 0 {
			continue
		}
		class := l.class(d, ancestors)
		ports, agents := mentions(rules, cands)
		work += len(cands) * (len(agents) + 1) * len(packetProtocols) * (len(ports) + 1)
		if work > maxLowerWork {
			return fmt.Errorf("packet-level rules are too complex to lower: more than %d rule evaluations; use fewer distinct destinations, ports or agent names per rule", maxLowerWork)
		}
		rowsFor := func(agent string) rows {
			rs := make(rows, len(packetProtocols))
			for pi, proto := range packetProtocols {
				t := tuple{ancestors: anc, dstKnown: true, agent: agent, agentKnown: true,
					proto: proto.name, protoOther: proto.other, protoKnown: true, port: -1, portKnown: true}
				if proto.other {
					t.port = 0
					rs[pi] = append(rs[pi], decide(rules, cands, requestAllowBefore, &t, &class))
					continue
				}
				rs[pi] = append(rs[pi], decide(rules, cands, requestAllowBefore, &t, &class))
				for _, port := range ports {
					t.port = port
					rs[pi] = append(rs[pi], decide(rules, cands, requestAllowBefore, &t, &class))
				}
			}
			return rs
		}
		base := rowsFor("")
		out.Tables.Entries = emit(out.Tables.Entries, base, 0, uint32(d), ports)
		for _, name := range agents {
			if rs := rowsFor(name); !slices.EqualFunc(rs, base, slices.Equal) {
				out.Tables.Entries = emit(out.Tables.Entries, rs, out.AgentClasses[name], uint32(d), ports)
			}
		}
		if len(out.Tables.Entries) > maxTableEntries {
			return fmt.Errorf("packet-level rules need more than %d datapath entries; use fewer distinct destinations, ports or agent names per rule", maxTableEntries)
		}
	}
	return nil
}

// mentions returns the ports and agent names the candidate rules compare
// with.
func mentions(rules []*lrule, cands []int) (ports []int64, agents []string) {
	for _, ci := range cands {
		ports = append(ports, rules[ci].ports...)
		agents = append(agents, rules[ci].agents...)
	}
	return sortedSet(ports), sortedSet(agents)
}

// emit appends the rows of one agent class and destination class. Rows of
// agent class 0 leave out what a lookup miss means anyway (no rule); rows of
// a named agent always carry their any-port row, which stops the lookup from
// falling back to agent class 0.
func emit(entries []ruletable.Entry, rs rows, agentClass, dstClass uint32, ports []int64) []ruletable.Entry {
	for pi, proto := range packetProtocols {
		anyPort := rs[pi][0]
		if agentClass != 0 || anyPort.action != ruletable.None {
			entries = append(entries, entry(agentClass, dstClass, proto.number, true, 0, anyPort))
		}
		if proto.other {
			continue // one row, port 0
		}
		for i, port := range ports {
			if v := rs[pi][1+i]; v != anyPort {
				entries = append(entries, entry(agentClass, dstClass, proto.number, false, uint16(port), v))
			}
		}
	}
	return entries
}

func entry(agentClass, dstClass uint32, proto uint8, anyPort bool, port uint16, v verdict) ruletable.Entry {
	return ruletable.Entry{
		AgentClass: agentClass, DstClass: dstClass, Proto: proto, AnyPort: anyPort, Port: port,
		Action: v.action, Grants: v.grants, Rule: v.rule, License: v.license,
	}
}
