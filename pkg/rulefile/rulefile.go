package rulefile

import (
	"strconv"
	"strings"

	"outcall.dev/outcall/pkg/api"
)

// Size and range limits. They keep a hostile file (an agent's rule request)
// from costing the daemon much memory or time; every one of them is reported
// by name when exceeded.
const (
	// MaxFileSize bounds one rule file, in bytes.
	MaxFileSize = 1 << 20
	// MaxConditionSize bounds a condition or a definition as written, in bytes.
	MaxConditionSize = 64 << 10
	// MaxExpandedSize bounds a condition or definition after $name expansion.
	// Nested definitions can grow exponentially, so it is checked while
	// expanding, not after.
	MaxExpandedSize = 256 << 10
	// MaxExpandedFileSize bounds all the text one file's expansion produces
	// (expanded definitions and conditions together), so that many rules
	// each just under MaxExpandedSize cannot add up to gigabytes.
	MaxExpandedFileSize = 8 << 20
	// MaxIDLength bounds a rule ID; IDs appear in logs and metric labels.
	MaxIDLength = 128
	// MaxDescriptionSize bounds a rule's description, in bytes.
	MaxDescriptionSize = 4 << 10
	// MinPriority and MaxPriority bound a rule's priority.
	MinPriority = -1_000_000
	MaxPriority = 1_000_000
)

// defaultDirectIPPorts are the ports of a direct_ip egress that lists none
// (S003-IF-012).
func defaultDirectIPPorts() []uint16 { return []uint16{80, 443} }

// Rule is one validated rule with its definitions expanded.
type Rule struct {
	ID string
	// File is the base name of the file the rule is in, e.g. "00-base.yaml".
	File string
	// Line is the 1-based line of the rule's list item.
	Line int
	// ConditionLine is the 1-based line where the condition text starts: the
	// line after the indicator for a block scalar (| or >), else the line of
	// the value.
	ConditionLine int
	// Condition is RawCondition with every $name reference replaced by
	// "(" + the fully expanded definition + ")".
	Condition string
	// RawCondition is the condition as written.
	RawCondition string
	// Action is api.ActionAllow or api.ActionBlock, never anything else.
	Action api.RuleAction
	// Priority orders rules (lower first); api.DefaultRulePriority when absent.
	Priority int
	// Log asks for an audit entry when the rule matches.
	Log bool
	// Description is documentation only; nil when absent.
	Description *string
	// Egress is nil when absent. For direct_ip, Ports is never empty: it
	// defaults to 80 and 443.
	Egress *api.Egress
	// FileIndex is the index of File in Set.Files.
	FileIndex int
	// Position is the index of the rule within its file.
	Position int
}

// Set is a whole validated rule directory.
type Set struct {
	// Files are the base names of the files loaded, in load order.
	Files []string
	// Rules are in evaluation order: priority ascending, then FileIndex, then
	// Position.
	Rules []Rule
	// Warnings never stop a load (S003-FR-016).
	Warnings []string
}

// Source is one rule file's name and contents, for Build.
type Source struct {
	// Name is the file's base name; it decides the load order.
	Name string
	Data []byte
}

// Error is a load error that names where it happened. File is a base name
// (or the directory for directory errors); fields are empty or 0 when
// unknown.
type Error struct {
	File  string
	Line  int
	Rule  string
	Field string
	Err   error
}

// Error formats as `<file>:<line>: rule "<id>": <field>: <msg>`, leaving out
// the parts that are unknown.
func (e *Error) Error() string {
	var parts []string
	loc := e.File
	if e.Line > 0 {
		if loc == "" {
			loc = "line " + strconv.Itoa(e.Line)
		} else {
			loc += ":" + strconv.Itoa(e.Line)
		}
	}
	if loc != "" {
		parts = append(parts, loc)
	}
	if e.Rule != "" {
		parts = append(parts, "rule "+strconv.Quote(e.Rule))
	}
	if e.Field != "" {
		parts = append(parts, e.Field)
	}
	if e.Err != nil {
		parts = append(parts, e.Err.Error())
	}
	return strings.Join(parts, ": ")
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }
