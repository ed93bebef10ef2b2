package rulefile

import (
	"slices"
	"strings"
)

// ref is one $name reference: text[start:end] is "$" + name.
type ref struct {
	start, end int
	name       string
}

// definition is one entry of a file's definitions section.
type definition struct {
	name string
	text string // as written, surrounding white space trimmed
	line int
	refs []ref
	// endsInComment: the text ends inside a // comment, so the closing
	// parenthesis of its expansion must go on a new line or CEL would read
	// it as part of the comment.
	endsInComment bool
}

func isNameStart(c byte) bool {
	return c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

func isNameChar(c byte) bool { return isNameStart(c) || ('0' <= c && c <= '9') }

// isStringPrefix reports whether ident, directly followed by a quote, is a
// CEL string prefix (raw r/R, bytes b/B, or raw bytes).
func isStringPrefix(ident string) bool {
	switch strings.ToLower(ident) {
	case "r", "b", "br", "rb":
		return true
	}
	return false
}

// scanCEL finds the $name references in CEL text. It follows CEL's lexer
// just far enough to skip string literals (so "$HOME" in a string stays
// text) and // comments; a $ not followed by a name start is left alone for
// CEL to reject.
func scanCEL(text string) (refs []ref, endsInComment bool) {
	n := len(text)
	for i := 0; i < n; {
		c := text[i]
		switch {
		case c == '/' && i+1 < n && text[i+1] == '/':
			j := strings.IndexByte(text[i:], '\n')
			if j < 0 {
				return refs, true
			}
			i += j + 1
		case c == '"' || c == '\'':
			i = skipString(text, i, false)
		case c == '$':
			j := i + 1
			if j < n && isNameStart(text[j]) {
				for j < n && isNameChar(text[j]) {
					j++
				}
				refs = append(refs, ref{start: i, end: j, name: text[i+1 : j]})
			}
			i = j
		case isNameStart(c):
			j := i + 1
			for j < n && isNameChar(text[j]) {
				j++
			}
			if j < n && (text[j] == '"' || text[j] == '\'') && isStringPrefix(text[i:j]) {
				j = skipString(text, j, strings.ContainsAny(text[i:j], "rR"))
			}
			i = j
		default:
			i++
		}
	}
	return refs, false
}

// skipString returns the index just after the string literal whose opening
// quote is at text[i], or len(text) when it is not closed. Single-quoted
// forms end at a line break as in CEL; raw strings have no escapes.
func skipString(text string, i int, raw bool) int {
	n := len(text)
	q := text[i]
	if delim := strings.Repeat(string(q), 3); strings.HasPrefix(text[i:], delim) {
		for j := i + 3; j < n; j++ {
			if !raw && text[j] == '\\' {
				j++
				continue
			}
			if strings.HasPrefix(text[j:], delim) {
				return j + 3
			}
		}
		return n
	}
	for j := i + 1; j < n; j++ {
		switch c := text[j]; {
		case !raw && c == '\\':
			j++
		case c == q:
			return j + 1
		case c == '\n' || c == '\r':
			return j
		}
	}
	return n
}

// expander expands one file's definitions. Definitions are expanded at
// most once (memo), and everything it writes is charged to budget so that
// nested definitions cannot blow up memory.
type expander struct {
	p      *parser
	defs   map[string]*definition
	order  []*definition
	memo   map[string]string
	budget int
}

func newExpander(p *parser, defs []*definition) *expander {
	x := &expander{p: p, defs: make(map[string]*definition, len(defs)), order: defs,
		memo: make(map[string]string), budget: MaxExpandedFileSize}
	for _, d := range defs {
		x.defs[d.name] = d
	}
	return x
}

// checkGraph reports the first undefined reference or cycle among all
// definitions, used or not, in file order.
func (x *expander) checkGraph() error {
	const (
		unvisited = iota
		visiting
		done
	)
	state := make(map[string]int, len(x.order))
	var path []string
	var visit func(d *definition) error
	visit = func(d *definition) error {
		state[d.name] = visiting
		path = append(path, d.name)
		for _, r := range d.refs {
			t, ok := x.defs[r.name]
			if !ok {
				return x.p.errorf(d.line, "", "definitions."+d.name, "undefined variable %q", "$"+r.name)
			}
			switch state[t.name] {
			case visiting:
				chain := append(slices.Clone(path[slices.Index(path, t.name):]), t.name)
				return x.p.errorf(t.line, "", "definitions", "cycle in definitions: %s", strings.Join(chain, " -> "))
			case unvisited:
				if err := visit(t); err != nil {
					return err
				}
			}
		}
		path = path[:len(path)-1]
		state[d.name] = done
		return nil
	}
	for _, d := range x.order {
		if state[d.name] == unvisited {
			if err := visit(d); err != nil {
				return err
			}
		}
	}
	return nil
}

// reachable returns the names of the definitions the given references use,
// directly or through other definitions. Call it after checkGraph.
func (x *expander) reachable(roots [][]ref) map[string]bool {
	used := make(map[string]bool)
	var stack []string
	for _, refs := range roots {
		for _, r := range refs {
			stack = append(stack, r.name)
		}
	}
	for len(stack) > 0 {
		name := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		d, ok := x.defs[name]
		if !ok || used[name] {
			continue
		}
		used[name] = true
		for _, r := range d.refs {
			stack = append(stack, r.name)
		}
	}
	return used
}

// expandDef returns d's text with every reference expanded.
func (x *expander) expandDef(d *definition) (string, error) {
	if s, ok := x.memo[d.name]; ok {
		return s, nil
	}
	s, err := x.substitute(d.text, d.refs, d.line, "", "definitions."+d.name)
	if err != nil {
		return "", err
	}
	x.memo[d.name] = s
	return s, nil
}

// substitute replaces each reference in text by "(" + its expansion + ")".
// line, rule and field locate errors.
func (x *expander) substitute(text string, refs []ref, line int, rule, field string) (string, error) {
	if len(refs) == 0 {
		return text, nil
	}
	var b strings.Builder
	write := func(parts ...string) error {
		for _, s := range parts {
			if b.Len()+len(s) > MaxExpandedSize {
				return x.p.errorf(line, rule, field, "expands to more than %d bytes (256 KiB)", MaxExpandedSize)
			}
			if len(s) > x.budget {
				return x.p.errorf(line, rule, field, "definition expansion in this file produces more than %d bytes (8 MiB) in total", MaxExpandedFileSize)
			}
			x.budget -= len(s)
			b.WriteString(s)
		}
		return nil
	}
	last := 0
	for _, r := range refs {
		d, ok := x.defs[r.name]
		if !ok {
			return "", x.p.errorf(line, rule, field, "undefined variable %q", "$"+r.name)
		}
		inner, err := x.expandDef(d)
		if err != nil {
			return "", err
		}
		closing := ")"
		if d.endsInComment {
			closing = "\n)"
		}
		if err := write(text[last:r.start], "(", inner, closing); err != nil {
			return "", err
		}
		last = r.end
	}
	if err := write(text[last:]); err != nil {
		return "", err
	}
	return b.String(), nil
}
