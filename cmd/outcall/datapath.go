package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newDatapathCmd is `outcall datapath counters`.
func newDatapathCmd() *cobra.Command {
	cmd := groupCmd(&cobra.Command{Use: "datapath", Short: "Inspect the eBPF datapath"})
	cmd.AddCommand(&cobra.Command{
		Use:   "counters",
		Short: "Show packet and byte counters per verdict and reason",
		Args:  cobra.NoArgs,
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			counters, err := client(cmd).DatapathCounters(cmd.Context())
			if err != nil {
				return err
			}
			w := table(cmd)
			fmt.Fprintln(w, "VERDICT\tREASON\tPACKETS\tBYTES")
			for _, c := range counters {
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\n", c.Verdict, c.Reason, c.Packets, c.Bytes)
			}
			return w.Flush()
		}),
	})
	return cmd
}
