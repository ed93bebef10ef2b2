package rules

import (
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
)

// Large rule sets are mostly generated: thousands of conditions of a few
// shapes that differ only in their literals. CEL's parser is most of the
// cost of compiling a condition, so conditions are parsed once per shape:
// the plain string and integer literals are replaced by placeholders, the
// template is parsed (and cached), and each condition gets a copy of the
// template's AST with its own literals put back. Type checking and cel-go's
// validators then run on that AST exactly as on a freshly parsed one.
//
// The scanner is deliberately narrow: escapes, triple quotes, prefixed or
// byte strings, floats, unsigned or hexadecimal numbers, negative literals,
// comments and quoted identifiers make it give up, and the condition is
// compiled from its text. A template is only used when every placeholder
// sits exactly where the parser put a literal of the same kind.

// literal is one literal taken out of a condition.
type literal struct {
	offset int // of its placeholder in the template
	value  ref.Val
}

// templateOf splits src into a template and its literals, or reports that
// src is not simple enough.
func templateOf(src string) (string, []literal, bool) {
	var b strings.Builder
	var lits []literal
	isIdent := func(c byte) bool {
		return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
	}
	prevNonSpace := func() byte {
		s := strings.TrimRight(b.String(), " \t\r\n")
		if s == "" {
			return 0
		}
		return s[len(s)-1]
	}
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '"' || c == '\'':
			if strings.HasPrefix(src[i:], strings.Repeat(string(c), 3)) || (b.Len() > 0 && isIdent(b.String()[b.Len()-1])) {
				return "", nil, false
			}
			end := strings.IndexByte(src[i+1:], c)
			if end < 0 {
				return "", nil, false
			}
			body := src[i+1 : i+1+end]
			// CEL turns invalid UTF-8 into U+FFFD; leave that to it.
			if strings.ContainsAny(body, "\\\n\r") || !utf8.ValidString(body) {
				return "", nil, false
			}
			lits = append(lits, literal{offset: b.Len(), value: types.String(body)})
			b.WriteString(`""`)
			i += end + 2
		case c >= '0' && c <= '9':
			j := i
			for j < len(src) && src[j] >= '0' && src[j] <= '9' {
				j++
			}
			digits := src[i:j]
			n, err := strconv.ParseInt(digits, 10, 64)
			if err != nil || (len(digits) > 1 && digits[0] == '0') || prevNonSpace() == '-' ||
				(j < len(src) && (isIdent(src[j]) || src[j] == '.')) {
				return "", nil, false
			}
			lits = append(lits, literal{offset: b.Len(), value: types.Int(n)})
			b.WriteString("0")
			i = j
		case isIdent(c):
			j := i
			for j < len(src) && isIdent(src[j]) {
				j++
			}
			b.WriteString(src[i:j])
			i = j
		case c == '`' || strings.HasPrefix(src[i:], "//"):
			return "", nil, false
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), lits, true
}

// template is a parsed template and, for each placeholder, the ID of the
// literal node the parser made of it.
type template struct {
	parsed *celast.AST
	ids    []int64
	// checked is the template itself type-checked, or nil when checking
	// failed (as it does where a validator looks at the placeholder, e.g.
	// cidr("")): then each condition is checked on its own.
	checked *celast.AST
}

// parseTemplate parses tmpl and maps the placeholders to literal nodes; nil
// when they do not line up one to one.
func parseTemplate(env *cel.Env, tmpl string, lits []literal) *template {
	parsed, iss := env.Parse(tmpl)
	if iss.Err() != nil {
		return nil
	}
	a := parsed.NativeRep()
	byOffset := map[int]celast.Expr{}
	celast.PostOrderVisit(a.Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() == celast.LiteralKind {
			if r, ok := a.SourceInfo().GetOffsetRange(e.ID()); ok {
				byOffset[int(r.Start)] = e
			}
		}
	}))
	t := &template{parsed: a}
	for _, l := range lits {
		e, ok := byOffset[l.offset]
		if !ok || e.AsLiteral().Type() != l.value.Type() {
			return nil
		}
		t.ids = append(t.ids, e.ID())
	}
	if checked, iss := env.Check(parsed); iss.Err() == nil {
		t.checked = checked.NativeRep()
	}
	return t
}

// substitute returns a copy of a (the parsed or the checked template) with
// lits in place of the placeholders. A copy of the checked template stays
// checked: checking depends on the literals' types, which are the
// placeholders' types, and not on their values.
func (t *template) substitute(a *celast.AST, lits []literal) *celast.AST {
	a = celast.Copy(a)
	values := make(map[int64]ref.Val, len(lits))
	for i, l := range lits {
		values[t.ids[i]] = l.value
	}
	fac := celast.NewExprFactory()
	set := celast.NewExprVisitor(func(e celast.Expr) {
		if v, ok := values[e.ID()]; ok && e.Kind() == celast.LiteralKind {
			e.SetKindCase(fac.NewLiteral(e.ID(), v))
		}
	})
	celast.PostOrderVisit(a.Expr(), set)
	// Macro calls keep a copy of their arguments, for unparsing.
	for _, call := range a.SourceInfo().MacroCalls() {
		celast.PostOrderVisit(call, set)
	}
	return a
}

// instantiate returns the parsed template with lits in place, as cel-go
// needs it for checking.
func (t *template) instantiate(lits []literal) (*cel.Ast, error) {
	pb, err := celast.ToProto(t.substitute(t.parsed, lits))
	if err != nil {
		return nil, err
	}
	return cel.ParsedExprToAst(&exprpb.ParsedExpr{Expr: pb.GetExpr(), SourceInfo: pb.GetSourceInfo()}), nil
}

// templates are the templates parsed during one Compile, shared by its
// workers.
type templates struct {
	env *cel.Env
	mu  sync.Mutex
	m   map[string]*templateEntry
}

type templateEntry struct {
	once sync.Once
	t    *template // nil: the template is not usable
}

func newTemplates(env *cel.Env) *templates {
	return &templates{env: env, m: map[string]*templateEntry{}}
}

// parse returns the checked AST of src through its template, or false when
// src must be compiled from its text (including every condition with an
// error, so that errors point into the condition as written).
func (ts *templates) parse(src string) (*celast.AST, bool) {
	tmpl, lits, ok := templateOf(src)
	if !ok || len(lits) == 0 {
		return nil, false
	}
	ts.mu.Lock()
	e := ts.m[tmpl]
	if e == nil {
		e = &templateEntry{}
		ts.m[tmpl] = e
	}
	ts.mu.Unlock()
	e.once.Do(func() { e.t = parseTemplate(ts.env, tmpl, lits) })
	if e.t == nil {
		return nil, false
	}
	if e.t.checked != nil {
		return e.t.substitute(e.t.checked, lits), true
	}
	parsed, err := e.t.instantiate(lits)
	if err != nil {
		return nil, false
	}
	checked, iss := ts.env.Check(parsed)
	if iss.Err() != nil {
		return nil, false
	}
	return checked.NativeRep(), true
}
