package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"outcall.dev/outcall/pkg/api"
)

// newRequestsCmd is `outcall requests list|show|approve|reject`: agents'
// rule requests (S003-IF-010/011).
func newRequestsCmd() *cobra.Command {
	cmd := groupCmd(&cobra.Command{
		Use:   "requests",
		Short: "Review the rule files agents asked for",
		Long: `Review the rule files agents asked for.

An agent's request holds a whole rule file and has no effect until approved.
Approving writes it as agent-<id>.yaml into outcalld's rules directory and
reloads the rules; rejecting records an optional reason. Read the file with
"requests show" before approving it.`,
	})
	cmd.AddCommand(newRequestsListCmd(), newRequestsShowCmd(), newRequestsApproveCmd(), newRequestsRejectCmd())
	return cmd
}

func newRequestsListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List pending rule requests",
		Args:  cobra.NoArgs,
		RunE: ruleAction(func(cmd *cobra.Command, _ []string) error {
			reqs, err := client(cmd).RuleRequests(cmd.Context())
			if err != nil {
				return err
			}
			if len(reqs) == 0 {
				return printLine(cmd, "No pending rule requests.")
			}
			w := table(cmd)
			fmt.Fprintln(w, "ID\tCONTAINER\tSTATUS")
			for _, r := range reqs {
				fmt.Fprintf(w, "%s\t%s\t%s\n", cell(r.ID), cell(r.ContainerID), cell(string(r.Status)))
			}
			return w.Flush()
		}),
	}
}

func newRequestsShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a pending rule request with its rule file",
		Args:  cobra.ExactArgs(1),
		RunE: ruleAction(func(cmd *cobra.Command, args []string) error {
			id, err := requestID(args)
			if err != nil {
				return err
			}
			// The host API has no single-request route; the pending list
			// carries every field.
			reqs, err := client(cmd).RuleRequests(cmd.Context())
			if err != nil {
				return err
			}
			for _, r := range reqs {
				if r.ID == id {
					return printLine(cmd, formatRequest(r))
				}
			}
			return fmt.Errorf("no pending rule request %q", id)
		}),
	}
}

// formatRequest renders a label block and the rule file after it, indented,
// control characters escaped so that what is shown is what gets approved.
func formatRequest(r api.PendingRuleRequest) string {
	var b strings.Builder
	writeLabels(&b, [][2]string{
		{"Request:", r.ID},
		{"Container:", r.ContainerID},
		{"Status:", string(r.Status)},
		{"Submitted:", r.SubmittedAt},
	})
	b.WriteString("Rule file:")
	writeIndented(&b, r.RuleFile)
	return b.String()
}

func newRequestsApproveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "approve ID",
		Short: "Approve a pending rule request: write its rule file and reload",
		Args:  cobra.ExactArgs(1),
		RunE: ruleAction(func(cmd *cobra.Command, args []string) error {
			id, err := requestID(args)
			if err != nil {
				return err
			}
			res, err := client(cmd).ApproveRuleRequest(cmd.Context(), id)
			if err != nil {
				return err
			}
			return printLine(cmd, fmt.Sprintf("Rule request %q approved; %d rule(s) loaded.", id, res.RulesLoaded))
		}),
	}
}

func newRequestsRejectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reject ID [--reason TEXT]",
		Short: "Reject a pending rule request",
		Args:  cobra.ExactArgs(1),
	}
	reason := cmd.Flags().String("reason", "", fmt.Sprintf("why, for the audit record (1-%d bytes, no control characters)", api.MaxRejectReason))
	cmd.RunE = ruleAction(func(cmd *cobra.Command, args []string) error {
		id, err := requestID(args)
		if err != nil {
			return err
		}
		var why *string
		if cmd.Flags().Changed("reason") {
			if err := checkReason(*reason); err != nil {
				return err
			}
			why = reason
		}
		if _, err := client(cmd).RejectRuleRequest(cmd.Context(), id, why); err != nil {
			return err
		}
		return printLine(cmd, fmt.Sprintf("Rule request %q rejected.", id))
	})
	return cmd
}

// requestID is the one argument of show, approve and reject.
func requestID(args []string) (string, error) {
	if args[0] == "" {
		return "", usagef("rule request ID must not be empty")
	}
	return args[0], nil
}

// checkReason applies S003-IF-009's limits before anything is sent.
func checkReason(s string) error {
	switch {
	case s == "":
		return usagef("invalid --reason: must not be empty")
	case len(s) > api.MaxRejectReason:
		return usagef("invalid --reason: %d bytes, at most %d allowed", len(s), api.MaxRejectReason)
	case !utf8.ValidString(s):
		return usagef("invalid --reason: not valid UTF-8")
	}
	for i, r := range s {
		if unicode.IsControl(r) {
			return usagef("invalid --reason: control character %U at byte %d is not allowed", r, i)
		}
	}
	return nil
}
