package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"outcall.dev/outcall/pkg/api"
)

// newNetworkCmd is `outcall network create|status|list|destroy`
// (S002-IF-005/006).
func newNetworkCmd() *cobra.Command {
	cmd := groupCmd(&cobra.Command{
		Use:   "network",
		Short: "Create, inspect and destroy Outcall networks",
		Long: `Create, inspect and destroy Outcall networks.

Each network is a Linux bridge of its own with a subnet and a gateway, under
the nftables floor and the datapath from its first moment; agents on one
network never reach another. --name is a suffix: --name staging is the
network outcall-staging. Without --name a command means the default network,
outcall-default.`,
	})
	cmd.AddCommand(newNetworkCreateCmd(), newNetworkStatusCmd(), newNetworkListCmd(), newNetworkDestroyCmd())
	return cmd
}

func newNetworkCreateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "create [--name NAME] [--subnet CIDR] [--gateway IPV4]",
		Short: "Create a network, or find it already there",
		Long: `Create a network, or find it already there. Without --subnet it gets the
first free /24 of outcalld's --subnet-block; without --gateway, the first
address of its subnet. outcalld checks the name and the subnet.`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.String("name", "", "network name suffix (default: the default network)")
	f.String("subnet", "", "IPv4 subnet in CIDR notation, e.g. 10.200.50.0/24 (default: allocated)")
	f.String("gateway", "", "gateway address inside the subnet (default: its first address)")
	cmd.RunE = ruleAction(func(cmd *cobra.Command, _ []string) error {
		var req api.NetworkCreateRequest
		var err error
		if req.Name, err = optionalFlag(cmd, "name"); err != nil {
			return err
		}
		if req.Subnet, err = optionalFlag(cmd, "subnet"); err != nil {
			return err
		}
		if req.Gateway, err = optionalFlag(cmd, "gateway"); err != nil {
			return err
		}
		if req.Gateway != nil {
			addr, err := parseIPv4("gateway", *req.Gateway)
			if err != nil {
				return err
			}
			gw := addr.String()
			req.Gateway = &gw
		}
		res, err := client(cmd).CreateNetwork(cmd.Context(), req)
		if err != nil {
			return err
		}
		return printLine(cmd, formatNetworkCreated(res, req.Name != nil))
	})
	return cmd
}

func newNetworkStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [--name NAME]",
		Short: "Show a network and the containers on it",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().String("name", "", "network name suffix (default: the default network)")
	cmd.RunE = ruleAction(func(cmd *cobra.Command, _ []string) error {
		name, err := optionalFlag(cmd, "name")
		if err != nil {
			return err
		}
		st, err := client(cmd).Network(cmd.Context(), deref(name, ""))
		if err != nil {
			return err
		}
		return printLine(cmd, formatNetworkStatus(st))
	})
	return cmd
}

func newNetworkListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the Outcall networks",
		Args:  cobra.NoArgs,
		RunE: ruleAction(func(cmd *cobra.Command, _ []string) error {
			nets, err := client(cmd).Networks(cmd.Context())
			if err != nil {
				return err
			}
			return printLine(cmd, formatNetworkList(nets))
		}),
	}
}

func newNetworkDestroyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "destroy [--name NAME]",
		Short: "Destroy a network (refused while containers are connected)",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().String("name", "", "network name suffix (default: the default network)")
	cmd.RunE = ruleAction(func(cmd *cobra.Command, _ []string) error {
		name, err := optionalFlag(cmd, "name")
		if err != nil {
			return err
		}
		res, err := client(cmd).DestroyNetwork(cmd.Context(), api.NetworkDestroyRequest{Name: name})
		if err != nil {
			return err
		}
		return printLine(cmd, formatNetworkDestroyed(res))
	})
	return cmd
}

// optionalFlag returns a string flag's value, or nil when it was not given.
// A given flag must not be empty: to the API "" is a value, not an absent
// field, and `--name ""` would otherwise read as the default network to one
// command and as an invalid name to another.
func optionalFlag(cmd *cobra.Command, name string) (*string, error) {
	if !cmd.Flags().Changed(name) {
		return nil, nil
	}
	v, _ := cmd.Flags().GetString(name)
	if v == "" {
		return nil, usagef("invalid --%s: must not be empty", name)
	}
	return &v, nil
}

// Column widths of S002-IF-006.
const (
	labelWidth         = 14 // status labels
	containerNameWidth = 17 // status container names, after two spaces
	listNameWidth      = 19 // list NAME
	listSubnetWidth    = 17 // list SUBNET
)

// formatNetworkCreated renders a create. Only a network the operator named
// shows its subnet: the default network's is always the block's first /24.
func formatNetworkCreated(res api.NetworkCreateResult, named bool) string {
	switch {
	case !res.Created:
		return fmt.Sprintf("Network %q already exists.", res.Name)
	case named && res.Subnet != "":
		return fmt.Sprintf("Network %q created (%s).", res.Name, printable(res.Subnet, false))
	default:
		return fmt.Sprintf("Network %q created.", res.Name)
	}
}

// formatNetworkStatus renders S002-IF-006's status, without the final
// newline: labels padded to 14 columns, then each container's name padded
// to 17 after two spaces, then its address. A network that does not exist
// is one line (and no error).
func formatNetworkStatus(st api.NetworkStatus) string {
	if !st.Exists {
		return fmt.Sprintf("Network %q does not exist.", st.Name)
	}
	lines := []string{
		column("Network:", labelWidth) + cell(st.Name),
		column("Status:", labelWidth) + "active",
		column("Subnet:", labelWidth) + cell(deref(st.Subnet, "")),
		column("Gateway:", labelWidth) + cell(deref(st.Gateway, "")),
		column("Containers:", labelWidth) + strconv.Itoa(len(st.Containers)),
	}
	for _, c := range st.Containers {
		lines = append(lines, "  "+column(cell(c.Name), containerNameWidth)+cell(c.IPv4Address))
	}
	return strings.Join(lines, "\n")
}

// formatNetworkList renders S002-IF-006's list sorted by name (the API
// promises no order), without the final newline, or "No networks.".
func formatNetworkList(nets []api.NetworkStatus) string {
	if len(nets) == 0 {
		return "No networks."
	}
	nets = slices.Clone(nets)
	slices.SortStableFunc(nets, func(a, b api.NetworkStatus) int { return strings.Compare(a.Name, b.Name) })
	lines := []string{column("NAME", listNameWidth) + column("SUBNET", listSubnetWidth) + "CONTAINERS"}
	for _, n := range nets {
		lines = append(lines, column(cell(n.Name), listNameWidth)+column(cell(deref(n.Subnet, "")), listSubnetWidth)+strconv.Itoa(len(n.Containers)))
	}
	return strings.Join(lines, "\n")
}

// formatNetworkDestroyed renders a destroy; one that found nothing is no
// error (S002-AS-012).
func formatNetworkDestroyed(res api.NetworkDestroyResult) string {
	if !res.Destroyed {
		return fmt.Sprintf("Network %q does not exist (nothing to destroy).", res.Name)
	}
	return fmt.Sprintf("Network %q destroyed.", res.Name)
}

// column pads s to width runes and always leaves at least one space, so a
// value longer than its column (a network name may have 72 characters)
// never runs into the next one.
func column(s string, width int) string {
	return s + strings.Repeat(" ", max(width-utf8.RuneCountInString(s), 1))
}
