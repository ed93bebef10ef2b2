// Command outcall is the operator CLI for outcalld. It talks to the daemon's
// host API over the Unix socket given by --socket and prints plain text;
// `rules validate` alone works offline.
//
// Exit codes: 0 success; 1 API error or daemon unreachable; 2 bad arguments.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/hostclient"
	"outcall.dev/outcall/pkg/rules"
)

// version is the CLI version, set at build time with
// -ldflags "-X main.version=...".
var version = "dev"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	c := cli{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, validate: validateDir}
	os.Exit(c.run(os.Args[1:]))
}

// validator checks a rules directory offline, the way outcalld would load it,
// for `outcall rules validate`.
type validator func(dir string) (api.ReloadResult, error)

// validateDir loads and compiles dir with the daemon's own loader.
func validateDir(dir string) (api.ReloadResult, error) {
	set, err := rules.Validate(dir)
	if err != nil {
		return api.ReloadResult{}, err
	}
	return set.Result(), nil
}

// cli is what one run reads, writes and calls besides the daemon, so tests
// can substitute each.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	validate       validator
}

// run executes the CLI with args (without the program name) and returns the
// exit code.
func (c cli) run(args []string) int {
	root := newRootCmd(c.validate)
	root.SetArgs(args)
	root.SetIn(c.stdin)
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	// Every command passes cmd.Context() to the client; cancelling it ends
	// the exchange with the daemon.
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return exitOK
	}
	var unreachable *hostclient.UnreachableError
	var usage *usageError
	var failed *runError
	switch {
	case errors.As(err, &unreachable):
		fmt.Fprintln(c.stderr, unreachable.Error())
		return exitError
	case errors.As(err, &usage):
		fmt.Fprintln(c.stderr, "Error: "+usage.msg)
		return exitUsage
	case errors.As(err, &failed):
		fmt.Fprintln(c.stderr, "Error: "+printable(failed.err.Error(), true))
		return exitError
	default:
		// Everything else comes from cobra itself: unknown command or flag,
		// bad flag value, wrong number of arguments.
		fmt.Fprintln(c.stderr, "Error: "+err.Error())
		return exitUsage
	}
}

// usageError is a bad argument found by the CLI's own validation (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// runError is a failure while carrying out a valid command (exit 1).
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// action adapts a command body to cobra: errors other than usage errors are
// marked as run failures, so that run can tell them from cobra's own parse
// errors.
func action(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		var usage *usageError
		if err == nil || errors.As(err, &usage) {
			return err
		}
		return &runError{err: err}
	}
}

// newRootCmd builds a fresh command tree, so every run starts from default
// flag values.
func newRootCmd(validate validator) *cobra.Command {
	root := groupCmd(&cobra.Command{
		Use:   "outcall",
		Short: "Operator CLI for the outcalld egress firewall",
		Long: `Operator CLI for the outcalld egress firewall.

Every command except "rules validate" talks to outcalld over its host API
socket (--socket). Exit codes: 0 success, 1 error (API error or daemon
unreachable), 2 bad arguments.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	})
	root.CompletionOptions.DisableDefaultCmd = true
	root.PersistentFlags().String("socket", api.DefaultHostSocket, "outcalld host API socket")
	root.AddCommand(
		newBridgeCmd(),
		newEndpointCmd(),
		newNetworkCmd(),
		newContainerCmd(),
		newDNSCmd(),
		newProxyCmd(),
		newGrantCmd(),
		newDatapathCmd(),
		newRulesCmd(validate),
		newRequestsCmd(),
		&cobra.Command{
			Use:   "version",
			Short: "Print the CLI version",
			Args:  cobra.NoArgs,
			RunE: action(func(cmd *cobra.Command, _ []string) error {
				return printLine(cmd, "outcall "+version)
			}),
		},
	)
	return root
}

// groupCmd makes a command that only holds subcommands: without arguments it
// prints its help; an unknown subcommand is a usage error rather than cobra's
// default of printing help and succeeding.
func groupCmd(c *cobra.Command) *cobra.Command {
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		return cmd.Help()
	}
	return c
}

// ruleAction is action for the rule engine, network, DNS and proxy
// commands, which report an unreachable daemon in their own words
// (S003-AS-018, S002-AS-013, S007-AS-013) rather than S001's.
func ruleAction(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return action(func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		var unreachable *hostclient.UnreachableError
		if errors.As(err, &unreachable) {
			return fmt.Errorf("cannot connect to outcalld at %s -- is it running?", unreachable.SocketPath)
		}
		return err
	})
}

// client returns a host API client for the --socket flag.
func client(cmd *cobra.Command) *hostclient.Client {
	path, _ := cmd.Flags().GetString("socket")
	return hostclient.New(path)
}

// printLine writes one line to the command's standard output.
// table returns the writer every listing uses: tab-separated cells,
// aligned with two spaces between columns; the caller flushes it.
func table(cmd *cobra.Command) *tabwriter.Writer {
	return tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 2, ' ', 0)
}

func printLine(cmd *cobra.Command, line string) error {
	_, err := fmt.Fprintln(cmd.OutOrStdout(), line)
	return err
}

// printable escapes control and format characters (keeping newlines when
// asked) and invalid UTF-8, so text that came from rule files or agents
// cannot drive the operator's terminal or hide what it says behind bidi
// overrides.
func printable(s string, keepNewlines bool) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, isHidden) {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], string(utf8.RuneError)):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case isHidden(r) && (r != '\n' || !keepNewlines):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isHidden(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }
