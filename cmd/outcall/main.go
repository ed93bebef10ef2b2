// Command outcall is the operator CLI for outcalld. It talks to the daemon's
// host API over the Unix socket given by --socket and prints plain text.
//
// Exit codes: 0 success; 1 API error or daemon unreachable; 2 bad arguments.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/hostclient"
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
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the CLI with args (without the program name) and returns the
// exit code.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var unreachable *hostclient.UnreachableError
	var usage *usageError
	var failed *runError
	switch {
	case errors.As(err, &unreachable):
		fmt.Fprintln(stderr, unreachable.Error())
		return exitError
	case errors.As(err, &usage):
		fmt.Fprintln(stderr, "Error: "+usage.msg)
		return exitUsage
	case errors.As(err, &failed):
		fmt.Fprintln(stderr, "Error: "+failed.err.Error())
		return exitError
	default:
		// Everything else comes from cobra itself: unknown command or flag,
		// bad flag value, wrong number of arguments.
		fmt.Fprintln(stderr, "Error: "+err.Error())
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
func newRootCmd() *cobra.Command {
	root := groupCmd(&cobra.Command{
		Use:           "outcall",
		Short:         "Operator CLI for the outcalld egress firewall",
		SilenceErrors: true,
		SilenceUsage:  true,
	})
	root.CompletionOptions.DisableDefaultCmd = true
	root.PersistentFlags().String("socket", api.DefaultHostSocket, "outcalld host API socket")
	root.AddCommand(
		newBridgeCmd(),
		newEndpointCmd(),
		newGrantCmd(),
		newDatapathCmd(),
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

// client returns a host API client for the --socket flag.
func client(cmd *cobra.Command) *hostclient.Client {
	path, _ := cmd.Flags().GetString("socket")
	return hostclient.New(path)
}

// printLine writes one line to the command's standard output.
func printLine(cmd *cobra.Command, line string) error {
	_, err := fmt.Fprintln(cmd.OutOrStdout(), line)
	return err
}
