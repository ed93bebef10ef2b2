package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"outcall.dev/outcall/pkg/api"
)

// newBridgeCmd is `outcall bridge status|up|down` (S001-IF-004).
func newBridgeCmd() *cobra.Command {
	cmd := groupCmd(&cobra.Command{Use: "bridge", Short: "Inspect or change the bridge"})
	cmd.AddCommand(
		&cobra.Command{
			Use:   "status",
			Short: "Show the bridge and nftables state",
			Args:  cobra.NoArgs,
			RunE: action(func(cmd *cobra.Command, _ []string) error {
				st, err := client(cmd).BridgeStatus(cmd.Context())
				if err != nil {
					return err
				}
				return printLine(cmd, formatBridgeStatus(st))
			}),
		},
		newBridgeUpCmd(),
		newBridgeDownCmd(),
	)
	return cmd
}

// newBridgeDownCmd is `bridge down [--remove-ports]`. The daemon refuses
// while the bridge has ports, since a port left without its bridge is open;
// --remove-ports deletes them (and a veth's peer) first.
func newBridgeDownCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "down [--remove-ports]",
		Short: "Remove the nftables table and delete the bridge (refused while it has ports)",
		Args:  cobra.NoArgs,
	}
	removePorts := cmd.Flags().Bool("remove-ports", false, "delete every port of the bridge (host-side links; a veth's peer goes with it) before the teardown")
	cmd.RunE = action(func(cmd *cobra.Command, _ []string) error {
		if err := client(cmd).BridgeDown(cmd.Context(), api.BridgeDownRequest{RemovePorts: *removePorts}); err != nil {
			return err
		}
		return printLine(cmd, "Bridge is down.")
	})
	return cmd
}

// newBridgeUpCmd is `bridge up`: idempotent, a fixed success message.
func newBridgeUpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "up",
		Short: "Create or attach the bridge and apply the base ruleset",
		Args:  cobra.NoArgs,
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			if err := client(cmd).BridgeUp(cmd.Context()); err != nil {
				return err
			}
			return printLine(cmd, "Bridge is up.")
		}),
	}
}

// formatBridgeStatus renders S001-IF-005 (values start at column 12; no Index
// line when the index is null), without the final newline. A Datapath line
// follows only while some port lacks its program, and a Docker line only
// while Docker does not answer, so the spec's output is unchanged when
// everything is in order.
func formatBridgeStatus(st api.BridgeStatus) string {
	status, nft := "down", "inactive"
	if st.Up {
		status = "up"
	}
	if st.NftablesActive {
		nft = "active"
	}
	s := fmt.Sprintf("Bridge:    %s\nStatus:    %s\n", st.Name, status)
	if st.Index != nil {
		s += fmt.Sprintf("Index:     %d\n", *st.Index)
	}
	s += "nftables:  " + nft
	if st.PortsEnforced < st.Ports {
		s += fmt.Sprintf("\nDatapath:  %d of %d ports enforced (a program is missing; outcalld re-attaches it)", st.PortsEnforced, st.Ports)
	}
	if d := st.Docker; d != nil {
		s += "\nDocker:    " + d.State
		if d.Reason != "" {
			s += " (" + d.Reason + ")"
		}
		s += "; enforcement goes on, containers cannot be created or followed until Docker answers"
	}
	return s
}
