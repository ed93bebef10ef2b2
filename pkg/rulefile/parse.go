package rulefile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"

	"outcall.dev/outcall/pkg/api"
)

var (
	idPattern         = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
	definitionPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// YAML tags as yaml.Node.ShortTag reports them.
const (
	tagNull  = "!!null"
	tagStr   = "!!str"
	tagInt   = "!!int"
	tagFloat = "!!float"
	tagBool  = "!!bool"
)

// Parse validates one file's contents in isolation, as for an agent's rule
// request (S003-FR-024), and returns its rules in file order with FileIndex
// 0. Every error is an *Error.
func Parse(name string, data []byte) ([]Rule, []string, error) {
	f, err := parseFile(name, data, 0)
	if err != nil {
		return nil, nil, err
	}
	return f.rules, f.warnings, nil
}

// parser validates one file. Its methods return *Error values as error.
type parser struct {
	file  string
	index int
}

// errorf builds an *Error located in the parser's file.
func (p *parser) errorf(line int, rule, field, format string, args ...any) error {
	return &Error{File: p.file, Line: line, Rule: rule, Field: field, Err: fmt.Errorf(format, args...)}
}

// parsedFile is one file's validated rules and warnings.
type parsedFile struct {
	rules    []Rule
	warnings []string
}

// keyValue is one entry of a YAML mapping.
type keyValue struct{ key, val *yaml.Node }

func parseFile(name string, data []byte, index int) (*parsedFile, error) {
	p := &parser{file: name, index: index}
	if len(data) > MaxFileSize {
		return nil, p.errorf(0, "", "", "file is larger than the limit of %d bytes (1 MiB)", MaxFileSize)
	}
	root, err := decodeYAML(data)
	if err != nil {
		return nil, p.errorf(0, "", "", "malformed YAML: %w", err)
	}
	if root == nil || (root.Kind == yaml.ScalarNode && root.ShortTag() == tagNull) {
		return nil, p.errorf(0, "", "version", "missing version (the file is empty; it needs version: %q)", api.RuleVersion)
	}
	if err := p.rejectAliases(root); err != nil {
		return nil, err
	}
	if root.Kind != yaml.MappingNode {
		return nil, p.errorf(root.Line, "", "", "the top level must be a mapping with version, definitions and rules, got %s", describe(root))
	}
	kvs, err := p.mapping(root, "", "", "field")
	if err != nil {
		return nil, err
	}
	// The version decides the schema, so it is checked before anything else.
	var version, defsNode, rulesNode *yaml.Node
	for _, kv := range kvs {
		if kv.key.Value == "version" {
			version = kv.val
		}
	}
	if err := p.version(version, root.Line); err != nil {
		return nil, err
	}
	for _, kv := range kvs {
		switch kv.key.Value {
		case "version":
		case "definitions":
			defsNode = kv.val
		case "rules":
			rulesNode = kv.val
		case "enrich":
			return nil, p.enrichError(kv.key.Line, "", "")
		default:
			return nil, p.errorf(kv.key.Line, "", "", "unknown field %q (valid: version, definitions, rules)", kv.key.Value)
		}
	}
	defs, err := p.definitions(defsNode)
	if err != nil {
		return nil, err
	}
	rules, err := p.rules(rulesNode)
	if err != nil {
		return nil, err
	}
	warnings, err := p.expand(defs, rules)
	if err != nil {
		return nil, err
	}
	return &parsedFile{rules: rules, warnings: warnings}, nil
}

// decodeYAML returns the root node of the only document in data, or nil
// when data holds no document (empty, or comments only).
func decodeYAML(data []byte) (root *yaml.Node, err error) {
	// The parser reads agent-supplied text; a bug in it must fail this one
	// file, not take the daemon down.
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("YAML parser failed: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, errors.New("more than one YAML document (---); a rule file holds exactly one")
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

// rejectAliases refuses YAML aliases (and so merge keys): they would let a
// small file expand into a large one, and definitions already cover reuse.
func (p *parser) rejectAliases(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode {
		return p.errorf(n.Line, "", "", "YAML aliases (*%s) are not supported; use definitions to reuse conditions", n.Value)
	}
	for _, c := range n.Content {
		if err := p.rejectAliases(c); err != nil {
			return err
		}
	}
	return nil
}

// mapping returns the entries of mapping n in order, refusing non-scalar
// and duplicate keys. what names an entry in the duplicate message.
func (p *parser) mapping(n *yaml.Node, rule, field, what string) ([]keyValue, error) {
	kvs := make([]keyValue, 0, len(n.Content)/2)
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, p.errorf(k.Line, rule, field, "keys must be plain strings, got %s", describe(k))
		}
		if first, ok := seen[k.Value]; ok {
			return nil, p.errorf(k.Line, rule, field, "duplicate %s %q (first at line %d)", what, k.Value, first)
		}
		seen[k.Value] = k.Line
		kvs = append(kvs, keyValue{k, v})
	}
	return kvs, nil
}

// version accepts "1" quoted or not: yaml.v3 would turn the number into
// the same string anyway, and refusing it helps nobody. Any other number
// or string is named as the unsupported version.
func (p *parser) version(n *yaml.Node, rootLine int) error {
	if n == nil {
		return p.errorf(rootLine, "", "version", "missing version (add version: %q)", api.RuleVersion)
	}
	switch t := n.ShortTag(); {
	case n.Kind != yaml.ScalarNode, t != tagStr && t != tagInt && t != tagFloat:
		return p.errorf(n.Line, "", "version", "must be the string %q, got %s", api.RuleVersion, describe(n))
	}
	if n.Value != api.RuleVersion {
		return p.errorf(n.Line, "", "version", "unsupported version %q (only %q is supported)", truncate(n.Value), api.RuleVersion)
	}
	return nil
}

func (p *parser) definitions(n *yaml.Node) ([]*definition, error) {
	if n == nil || isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, p.errorf(n.Line, "", "definitions", "must be a mapping of name to CEL expression, got %s", describe(n))
	}
	kvs, err := p.mapping(n, "", "definitions", "definition")
	if err != nil {
		return nil, err
	}
	defs := make([]*definition, 0, len(kvs))
	for _, kv := range kvs {
		name := kv.key.Value
		if !definitionPattern.MatchString(name) {
			return nil, p.errorf(kv.key.Line, "", "definitions", "invalid definition name %q (use letters, digits and _, not starting with a digit)", truncate(name))
		}
		text, err := p.celText(kv.val, "", "definitions."+name)
		if err != nil {
			return nil, err
		}
		d := &definition{name: name, text: strings.TrimSpace(text), line: kv.key.Line}
		d.refs, d.endsInComment = scanCEL(d.text)
		defs = append(defs, d)
	}
	return defs, nil
}

func (p *parser) rules(n *yaml.Node) ([]Rule, error) {
	if n == nil || isNull(n) {
		return []Rule{}, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errorf(n.Line, "", "rules", "must be a list, got %s", describe(n))
	}
	rules := make([]Rule, 0, len(n.Content))
	lines := make(map[string]int, len(n.Content))
	for i, item := range n.Content {
		r, err := p.rule(item, i)
		if err != nil {
			return nil, err
		}
		if first, ok := lines[r.ID]; ok {
			return nil, p.errorf(r.Line, r.ID, "id", "duplicate rule ID %q (also at %s:%d)", r.ID, p.file, first)
		}
		lines[r.ID] = r.Line
		rules = append(rules, r)
	}
	return rules, nil
}

func (p *parser) rule(n *yaml.Node, pos int) (Rule, error) {
	if n.Kind != yaml.MappingNode {
		return Rule{}, p.errorf(n.Line, "", "rules", "each rule must be a mapping, got %s", describe(n))
	}
	r := Rule{File: p.file, Line: n.Line, Priority: api.DefaultRulePriority, FileIndex: p.index, Position: pos}
	// The ID comes first, wherever it is written, so that every later
	// error can name the rule.
	var idNode *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Value == "id" {
			idNode = n.Content[i+1]
			break
		}
	}
	if idNode == nil {
		return Rule{}, p.errorf(n.Line, "", "", "missing required field \"id\"")
	}
	if err := p.id(idNode); err != nil {
		return Rule{}, err
	}
	r.ID = idNode.Value
	kvs, err := p.mapping(n, r.ID, "", "field")
	if err != nil {
		return Rule{}, err
	}
	var egress *yaml.Node
	for _, kv := range kvs {
		v := kv.val
		switch kv.key.Value {
		case "id":
		case "condition":
			if r.RawCondition, err = p.celText(v, r.ID, "condition"); err != nil {
				return Rule{}, err
			}
			r.ConditionLine = v.Line
			if v.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
				r.ConditionLine++
			}
		case "action":
			if r.Action, err = p.action(v, r.ID); err != nil {
				return Rule{}, err
			}
		case "priority":
			if r.Priority, err = p.priority(v, r.ID); err != nil {
				return Rule{}, err
			}
		case "log":
			if !isNull(v) {
				if r.Log, err = p.boolean(v, r.ID, "log"); err != nil {
					return Rule{}, err
				}
			}
		case "description":
			if r.Description, err = p.description(v, r.ID); err != nil {
				return Rule{}, err
			}
		case "egress":
			egress = v
		case "enrich":
			return Rule{}, p.enrichError(kv.key.Line, r.ID, "enrich")
		default:
			return Rule{}, p.errorf(kv.key.Line, r.ID, "", "unknown field %q (valid: id, condition, action, priority, log, description, egress)", truncate(kv.key.Value))
		}
	}
	for _, req := range []struct {
		name    string
		missing bool
	}{{"condition", r.RawCondition == ""}, {"action", r.Action == ""}} {
		if req.missing {
			return Rule{}, p.errorf(n.Line, r.ID, "", "missing required field %q", req.name)
		}
	}
	if egress != nil && !isNull(egress) {
		if r.Action != api.ActionAllow {
			return Rule{}, p.errorf(egress.Line, r.ID, "egress", "only valid on allow rules, this rule is %s", r.Action)
		}
		if r.Egress, err = p.egress(egress, r.ID); err != nil {
			return Rule{}, err
		}
	}
	return r, nil
}

// id checks a rule ID. IDs end up in logs, metric labels and CLI output,
// hence the narrow character set.
func (p *parser) id(n *yaml.Node) error {
	if isNull(n) {
		return p.errorf(n.Line, "", "id", "must not be empty")
	}
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != tagStr && n.ShortTag() != tagInt) {
		return p.errorf(n.Line, "", "id", "must be a string, got %s", describe(n))
	}
	if !idPattern.MatchString(n.Value) {
		return p.errorf(n.Line, "", "id", "%q is not a valid rule ID (1-%d letters, digits, '.', '_', ':' or '-', starting with a letter or digit)", truncate(n.Value), MaxIDLength)
	}
	return nil
}

// celText returns a condition or definition as written. Any plain scalar is
// CEL text: `condition: true` and `port: 443` mean what they say.
func (p *parser) celText(n *yaml.Node, rule, field string) (string, error) {
	if isNull(n) {
		return "", p.errorf(n.Line, rule, field, "must not be empty")
	}
	if n.Kind != yaml.ScalarNode {
		return "", p.errorf(n.Line, rule, field, "must be a CEL expression (a string), got %s", describe(n))
	}
	switch n.ShortTag() {
	case tagStr, tagInt, tagFloat, tagBool:
	default:
		return "", p.errorf(n.Line, rule, field, "must be a CEL expression (a string), got %s", describe(n))
	}
	if len(n.Value) > MaxConditionSize {
		return "", p.errorf(n.Line, rule, field, "is %d bytes, more than the limit of %d bytes (64 KiB)", len(n.Value), MaxConditionSize)
	}
	if strings.TrimSpace(n.Value) == "" {
		return "", p.errorf(n.Line, rule, field, "must not be empty")
	}
	return n.Value, nil
}

func (p *parser) action(n *yaml.Node, rule string) (api.RuleAction, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != tagStr {
		return "", p.errorf(n.Line, rule, "action", "must be allow or block, got %s", describe(n))
	}
	switch a := api.RuleAction(n.Value); a {
	case api.ActionAllow, api.ActionBlock:
		return a, nil
	case api.ActionEnrich:
		return "", p.enrichError(n.Line, rule, "action")
	}
	return "", p.errorf(n.Line, rule, "action", "%q is not a valid action (valid: allow, block)", truncate(n.Value))
}

// enrichError is the one answer to `action: enrich` and to any enrich key
// (S003-FR-003, FR-041): clearer than "unknown field", and the same at
// start and on reload.
func (p *parser) enrichError(line int, rule, field string) error {
	return p.errorf(line, rule, field, "%q is reserved and not supported: enrich hooks are not implemented and Outcall never runs rule scripts; use allow or block", "enrich")
}

func (p *parser) priority(n *yaml.Node, rule string) (int, error) {
	if isNull(n) {
		return api.DefaultRulePriority, nil
	}
	v, err := p.integer(n, rule, "priority")
	if err != nil {
		return 0, err
	}
	if v < MinPriority || v > MaxPriority {
		return 0, p.errorf(n.Line, rule, "priority", "%d is out of range (%d to %d)", v, MinPriority, MaxPriority)
	}
	return int(v), nil
}

func (p *parser) integer(n *yaml.Node, rule, field string) (int64, error) {
	var v int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != tagInt || n.Decode(&v) != nil {
		return 0, p.errorf(n.Line, rule, field, "must be an integer, got %s", describe(n))
	}
	return v, nil
}

func (p *parser) boolean(n *yaml.Node, rule, field string) (bool, error) {
	var v bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != tagBool || n.Decode(&v) != nil {
		return false, p.errorf(n.Line, rule, field, "must be true or false, got %s", describe(n))
	}
	return v, nil
}

// description refuses control characters other than tab and newline: the
// text is printed on operators' terminals.
func (p *parser) description(n *yaml.Node, rule string) (*string, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != tagStr {
		return nil, p.errorf(n.Line, rule, "description", "must be a string, got %s", describe(n))
	}
	if len(n.Value) > MaxDescriptionSize {
		return nil, p.errorf(n.Line, rule, "description", "is %d bytes, more than the limit of %d bytes", len(n.Value), MaxDescriptionSize)
	}
	if strings.ContainsFunc(n.Value, func(c rune) bool { return unicode.IsControl(c) && c != '\n' && c != '\t' }) {
		return nil, p.errorf(n.Line, rule, "description", "must not contain control characters")
	}
	s := n.Value
	return &s, nil
}

func (p *parser) egress(n *yaml.Node, rule string) (*api.Egress, error) {
	if n.Kind != yaml.MappingNode {
		return nil, p.errorf(n.Line, rule, "egress", "must be a mapping with a mode, got %s", describe(n))
	}
	kvs, err := p.mapping(n, rule, "egress", "field")
	if err != nil {
		return nil, err
	}
	e := &api.Egress{}
	var ports *keyValue
	for _, kv := range kvs {
		v := kv.val
		switch kv.key.Value {
		case "mode":
			if e.Mode, err = p.egressMode(v, rule); err != nil {
				return nil, err
			}
		case "ports":
			ports = &kv
		case "allow_private_ips":
			if !isNull(v) {
				if e.AllowPrivateIPs, err = p.boolean(v, rule, "egress.allow_private_ips"); err != nil {
					return nil, err
				}
			}
		case "enrich":
			return nil, p.enrichError(kv.key.Line, rule, "egress.enrich")
		default:
			return nil, p.errorf(kv.key.Line, rule, "egress", "unknown field %q (valid: mode, ports, allow_private_ips)", truncate(kv.key.Value))
		}
	}
	if e.Mode == "" {
		return nil, p.errorf(n.Line, rule, "egress", "missing required field \"mode\" (proxy or direct_ip)")
	}
	if e.Mode == api.EgressDirectIP {
		if ports != nil {
			if e.Ports, err = p.ports(ports.val, rule); err != nil {
				return nil, err
			}
		}
		if len(e.Ports) == 0 {
			e.Ports = defaultDirectIPPorts()
		}
	} else if ports != nil {
		return nil, p.errorf(ports.key.Line, rule, "egress.ports", "only valid with mode %s", api.EgressDirectIP)
	}
	return e, nil
}

func (p *parser) egressMode(n *yaml.Node, rule string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != tagStr {
		return "", p.errorf(n.Line, rule, "egress.mode", "must be proxy or direct_ip, got %s", describe(n))
	}
	switch n.Value {
	case api.EgressProxy, api.EgressDirectIP:
		return n.Value, nil
	case "intercept":
		return "", p.errorf(n.Line, rule, "egress.mode", "%q (TLS interception) is not implemented; use proxy or direct_ip", n.Value)
	}
	return "", p.errorf(n.Line, rule, "egress.mode", "%q is not a valid mode (valid: proxy, direct_ip)", truncate(n.Value))
}

func (p *parser) ports(n *yaml.Node, rule string) ([]uint16, error) {
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, p.errorf(n.Line, rule, "egress.ports", "must be a list of ports, got %s", describe(n))
	}
	ports := make([]uint16, 0, len(n.Content))
	seen := make(map[int64]bool, len(n.Content))
	for _, item := range n.Content {
		v, err := p.integer(item, rule, "egress.ports")
		if err != nil {
			return nil, err
		}
		if v < 1 || v > 65535 {
			return nil, p.errorf(item.Line, rule, "egress.ports", "%d is not a port (1 to 65535)", v)
		}
		if seen[v] {
			return nil, p.errorf(item.Line, rule, "egress.ports", "duplicate port %d", v)
		}
		seen[v] = true
		ports = append(ports, uint16(v))
	}
	return ports, nil
}

// expand resolves the file's definitions into its rules' conditions and
// returns the file's warnings.
func (p *parser) expand(defs []*definition, rules []Rule) ([]string, error) {
	x := newExpander(p, defs)
	if err := x.checkGraph(); err != nil {
		return nil, err
	}
	refs := make([][]ref, len(rules))
	for i := range rules {
		refs[i], _ = scanCEL(rules[i].RawCondition)
	}
	for i := range rules {
		r := &rules[i]
		cond, err := x.substitute(r.RawCondition, refs[i], r.ConditionLine, r.ID, "condition")
		if err != nil {
			return nil, err
		}
		r.Condition = cond
	}
	warnings := []string{}
	if len(defs) > 0 && len(rules) == 0 {
		// One warning for the file rather than one per definition.
		return append(warnings, fmt.Sprintf("%s has definitions but no rules", p.file)), nil
	}
	used := x.reachable(refs)
	for _, d := range defs {
		if !used[d.name] {
			warnings = append(warnings, fmt.Sprintf("unused definition %q in %s", d.name, p.file))
		}
	}
	return warnings, nil
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == tagNull }

// describe names a node's YAML type (and short value) for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch t := n.ShortTag(); t {
		case tagNull:
			return "null"
		case tagStr:
			return "string " + strconv.Quote(truncate(n.Value))
		case tagInt:
			return "integer " + truncate(n.Value)
		case tagFloat:
			return "number " + truncate(n.Value)
		case tagBool:
			return "boolean " + n.Value
		default:
			return fmt.Sprintf("%s value %q", truncate(t), truncate(n.Value))
		}
	}
	return "an unsupported YAML node"
}

// truncate shortens user text quoted in error messages.
func truncate(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}
