package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/hostclient"
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
				st, err := hostclient.Do[api.BridgeStatus](client(cmd), "GET", "/api/v1/bridge", nil)
				if err != nil {
					return err
				}
				return printLine(cmd, formatBridgeStatus(st))
			}),
		},
		bridgeAction("up", "Create or attach the bridge and apply the base ruleset", "Bridge is up."),
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
		path := "/api/v1/bridge/down"
		if *removePorts {
			path += "?remove_ports=true"
		}
		if err := client(cmd).Exec("POST", path, nil); err != nil {
			return err
		}
		return printLine(cmd, "Bridge is down.")
	})
	return cmd
}

// bridgeAction is `bridge up`: a bodiless POST and a fixed success message.
func bridgeAction(verb, short, done string) *cobra.Command {
	return &cobra.Command{
		Use:   verb,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			if err := client(cmd).Exec("POST", "/api/v1/bridge/"+verb, nil); err != nil {
				return err
			}
			return printLine(cmd, done)
		}),
	}
}

// formatBridgeStatus renders S001-IF-005 (values start at column 12; no Index
// line when the index is null), without the final newline. A Datapath line
// follows only while some port lacks its program, so the spec's output is
// unchanged when everything is enforced.
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
	return s
}
