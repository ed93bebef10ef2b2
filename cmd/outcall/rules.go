package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"outcall.dev/outcall/pkg/api"
)

// newRulesCmd is `outcall rules reload|list|show|evaluate|test|validate`
// (S003-IF-010/011, FR-034/035).
func newRulesCmd(validate validator) *cobra.Command {
	cmd := groupCmd(&cobra.Command{
		Use:   "rules",
		Short: "Inspect, test and reload the rule engine",
		Long: `Inspect, test and reload the rule engine.

Rules are CEL conditions in YAML files in outcalld's --rules-dir. They are
evaluated by priority (lower first), then file name, then position in the
file; the first match decides and no match blocks. "reload" swaps in the
files as they are now, atomically: on any error the previous rules stay
active. "validate" checks a directory offline, without the daemon.`,
	})
	cmd.AddCommand(newRulesReloadCmd(), newRulesListCmd(), newRulesShowCmd(),
		newRulesEvaluateCmd(), newRulesTestCmd(), newRulesValidateCmd(validate))
	return cmd
}

func newRulesReloadCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Reload the rule files; the old rules stay active if the new ones are invalid",
		Args:  cobra.NoArgs,
		RunE: ruleAction(func(cmd *cobra.Command, _ []string) error {
			res, err := client(cmd).ReloadRules(cmd.Context())
			if err != nil {
				return err
			}
			if err := printLine(cmd, fmt.Sprintf("Reloaded %d rule(s) from %d file(s).", res.RulesLoaded, res.FilesLoaded)); err != nil {
				return err
			}
			return printWarnings(cmd, res.Warnings)
		}),
	}
}

// previewRunes is how much of a condition `rules list` shows.
const previewRunes = 60

func newRulesListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the loaded rules in evaluation order",
		Args:  cobra.NoArgs,
		RunE: ruleAction(func(cmd *cobra.Command, _ []string) error {
			rules, err := client(cmd).Rules(cmd.Context())
			if err != nil {
				return err
			}
			if len(rules) == 0 {
				return printLine(cmd, "No rules loaded.\nEverything is blocked by default.")
			}
			w := table(cmd)
			fmt.Fprintln(w, "ID\tFILE\tACTION\tLEVEL\tCONDITION")
			for _, r := range rules {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", cell(r.ID), cell(r.File), cell(string(r.Action)), cell(r.Level), preview(r.ConditionPreview))
			}
			return w.Flush()
		}),
	}
}

// cell makes s fit one table cell: visible, not empty.
func cell(s string) string { return orDash(printable(s, false)) }

// preview puts a condition on one line and cuts it to previewRunes.
func preview(cond string) string {
	s := cell(strings.Join(strings.Fields(cond), " "))
	if utf8.RuneCountInString(s) <= previewRunes {
		return s
	}
	return string([]rune(s)[:previewRunes-3]) + "..."
}

func newRulesShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one rule with its expanded condition",
		Args:  cobra.ExactArgs(1),
		RunE: ruleAction(func(cmd *cobra.Command, args []string) error {
			if args[0] == "" {
				return usagef("rule ID must not be empty")
			}
			rule, err := client(cmd).Rule(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printLine(cmd, formatRule(rule))
		}),
	}
}

// formatRule renders a label block and the condition on the lines after its
// label, indented.
func formatRule(r api.RuleDetail) string {
	file := r.File
	if r.Line > 0 {
		file += ":" + strconv.Itoa(r.Line)
	}
	var b strings.Builder
	writeLabels(&b, [][2]string{
		{"Rule:", r.ID},
		{"File:", file},
		{"Action:", string(r.Action)},
		{"Priority:", strconv.Itoa(r.Priority)},
		{"Level:", r.Level},
		{"Log:", yesNo(r.Log)},
		{"Description:", deref(r.Description, "")},
		{"Egress:", formatEgress(r.Egress)},
	})
	b.WriteString("Condition:")
	writeIndented(&b, r.Condition)
	return b.String()
}

// writeLabels writes one "Label: value" line per field, the values aligned
// after the longest label.
func writeLabels(b *strings.Builder, fields [][2]string) {
	width := 0
	for _, f := range fields {
		width = max(width, len(f[0]))
	}
	for _, f := range fields {
		fmt.Fprintf(b, "%-*s %s\n", width, f[0], cell(f[1]))
	}
}

// writeIndented writes text on the following lines, indented by two spaces,
// without its trailing blank space.
func writeIndented(b *strings.Builder, text string) {
	for _, line := range strings.Split(strings.TrimRightFunc(text, unicode.IsSpace), "\n") {
		b.WriteString("\n  " + printable(line, false))
	}
}

// formatEgress renders e.g. "direct_ip ports 80,443 private ips no", or ""
// when the rule has no egress.
func formatEgress(e *api.Egress) string {
	if e == nil {
		return ""
	}
	s := e.Mode
	if len(e.Ports) > 0 {
		ports := make([]string, len(e.Ports))
		for i, p := range e.Ports {
			ports[i] = strconv.Itoa(int(p))
		}
		s += " ports " + strings.Join(ports, ",")
	}
	return s + " private ips " + yesNo(e.AllowPrivateIPs)
}

func newRulesEvaluateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "evaluate (--context JSON | --context-file FILE)",
		Short: "Ask the rule engine for its decision on a request context",
		Long: `Ask the rule engine for its decision on a request context.

The context is an EvaluationContext JSON object; only the namespaces the
request has need to be given, e.g.
  --context '{"network":{"hostname":"github.com","ip":"140.82.121.4","port":443,"protocol":"tcp"}}'
Exit code 0 means the engine decided, allow or block; 1 means it did not
(daemon unreachable, bridge down, API error).`,
		Args: cobra.NoArgs,
	}
	var cf contextFlags
	cf.register(cmd)
	cmd.RunE = ruleAction(func(cmd *cobra.Command, _ []string) error {
		ec, given, err := cf.load(cmd)
		if err != nil {
			return err
		}
		if !given {
			return usagef("missing required flag --context or --context-file")
		}
		res, err := client(cmd).Evaluate(cmd.Context(), ec)
		if err != nil {
			return err
		}
		rule := "none (default block)"
		if res.MatchedRule != nil {
			rule = *res.MatchedRule
			if res.File != nil {
				rule += " (" + *res.File + ")"
			}
		}
		return printLine(cmd, "Decision: "+cell(string(res.Decision))+"\nRule: "+printable(rule, false))
	})
	return cmd
}

func newRulesTestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "test --expr CEL [--context JSON | --context-file FILE]",
		Short: "Evaluate one CEL expression without touching the active rules",
		Long: `Evaluate one CEL expression against a context (default: empty) without
touching the active rules. Prints "Result: true" or "Result: false". When the
expression does not compile or fails at run time, prints "Result: false",
then the error on stderr, and exits 1.`,
		Args: cobra.NoArgs,
	}
	expr := cmd.Flags().String("expr", "", "CEL expression (required)")
	var cf contextFlags
	cf.register(cmd)
	cmd.RunE = ruleAction(func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "expr"); err != nil {
			return err
		}
		ec, _, err := cf.load(cmd)
		if err != nil {
			return err
		}
		res, err := client(cmd).TestExpression(cmd.Context(), api.TestExpressionRequest{Expression: *expr, Context: ec})
		if err != nil {
			return err
		}
		if res.Error != nil {
			if err := printLine(cmd, "Result: false"); err != nil {
				return err
			}
			return errors.New(*res.Error)
		}
		return printLine(cmd, "Result: "+strconv.FormatBool(res.Result))
	})
	return cmd
}

func newRulesValidateCmd(validate validator) *cobra.Command {
	return &cobra.Command{
		Use:   "validate DIR",
		Short: "Check a rules directory offline, as outcalld would load it",
		Long: `Check a rules directory offline, as outcalld would load it: YAML schema,
versions, unique IDs, definitions and CEL. Needs no daemon. Exits 1 and names
the file, line, rule and field of the first problem when the set is invalid.`,
		Args: cobra.ExactArgs(1),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			// outcalld treats a missing directory as an empty rule set; here
			// that is almost always a typo, and "OK: 0 rule(s)" would hide it.
			fi, err := os.Stat(dir)
			if err != nil {
				return usagef("invalid rules directory %q: %v", dir, pathCause(err))
			}
			if !fi.IsDir() {
				return usagef("invalid rules directory %q: not a directory", dir)
			}
			res, err := validate(dir)
			if err != nil {
				return err
			}
			if err := printLine(cmd, fmt.Sprintf("OK: %d rule(s) from %d file(s), %d packet-level.", res.RulesLoaded, res.FilesLoaded, res.PacketRules)); err != nil {
				return err
			}
			return printWarnings(cmd, res.Warnings)
		}),
	}
}

// printWarnings writes "Warnings:" and one "  - <warning>" line each, or
// nothing when there are none.
func printWarnings(cmd *cobra.Command, warnings []string) error {
	if len(warnings) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("Warnings:")
	for _, w := range warnings {
		b.WriteString("\n  - " + printable(w, false))
	}
	return printLine(cmd, b.String())
}

// maxContextBytes is the daemon's request body limit; a larger context could
// never be sent.
const maxContextBytes = 1 << 20

// contextFlags are --context and --context-file, shared by evaluate and test.
type contextFlags struct{ inline, file string }

func (c *contextFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.inline, "context", "", `evaluation context as a JSON object, e.g. '{"dns":{"query":"github.com","record_type":"A"}}'`)
	f.StringVar(&c.file, "context-file", "", "read the evaluation context from FILE (- for standard input)")
}

// load returns the context the flags give; given is false when neither is
// set. Every problem is a usage error naming the flag.
func (c *contextFlags) load(cmd *cobra.Command) (ec api.EvaluationContext, given bool, err error) {
	var data []byte
	var source string
	switch inline, file := cmd.Flags().Changed("context"), cmd.Flags().Changed("context-file"); {
	case inline && file:
		return ec, false, usagef("--context and --context-file are mutually exclusive")
	case inline:
		data, source = []byte(c.inline), "--context"
	case file:
		source = fmt.Sprintf("--context-file %q", c.file)
		if data, err = readContextFile(cmd, c.file); err != nil {
			return ec, true, usagef("invalid %s: %v", source, err)
		}
	default:
		return ec, false, nil
	}
	if ec, err = parseContext(data); err != nil {
		return ec, true, usagef("invalid %s: %v", source, err)
	}
	return ec, true, nil
}

// readContextFile reads name, or standard input for "-", up to one byte more
// than parseContext accepts.
func readContextFile(cmd *cobra.Command, name string) ([]byte, error) {
	if name == "" {
		return nil, errors.New("empty file name")
	}
	r := cmd.InOrStdin()
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, pathCause(err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxContextBytes+1))
	if err != nil {
		return nil, pathCause(err)
	}
	return data, nil
}

// pathCause drops the operation and path from a *fs.PathError, for messages
// that already name the path.
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// jsonSpace is what JSON allows between tokens.
const jsonSpace = " \t\r\n"

// parseContext decodes one JSON object strictly, as the daemon will: an
// unknown field or trailing data is an error, so a typo never silently
// evaluates an emptier context. Numbers in run.context keep their exact text.
func parseContext(data []byte) (api.EvaluationContext, error) {
	var ec api.EvaluationContext
	if len(data) > maxContextBytes {
		return ec, fmt.Errorf("larger than %d bytes", maxContextBytes)
	}
	if rest := bytes.TrimLeft(data, jsonSpace); len(rest) == 0 || rest[0] != '{' {
		return ec, errors.New(`must be a JSON object like {"network":{"hostname":"github.com"}}`)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(&ec); err != nil {
		return ec, describeJSONError(err, len(data))
	}
	end := int(dec.InputOffset())
	if rest := bytes.TrimLeft(data[end:], jsonSpace); len(rest) > 0 {
		return ec, fmt.Errorf("trailing data after the JSON object at byte offset %d", len(data)-len(rest))
	}
	return ec, nil
}

// describeJSONError says what is wrong and where, without the "json: " and
// Go type names of encoding/json's messages where it can.
func describeJSONError(err error, size int) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Errorf("%v at byte offset %d", syntax, syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Errorf("field %s: cannot use JSON %s as %s at byte offset %d", typ.Field, typ.Value, typ.Type, typ.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("unexpected end of JSON input at byte offset %d", size)
	default:
		// DisallowUnknownFields: `json: unknown field "x"`, which names the
		// field but has no offset to give.
		return errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
}
