package main

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"outcall.dev/outcall/pkg/api"
)

// newEndpointCmd is `outcall endpoint add|list|remove`.
func newEndpointCmd() *cobra.Command {
	cmd := groupCmd(&cobra.Command{Use: "endpoint", Short: "Manage bridge ports with an identity"})
	cmd.AddCommand(newEndpointAddCmd(), newEndpointListCmd(), newEndpointRemoveCmd())
	return cmd
}

func newEndpointAddCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "add --name NAME --interface IF --ip IPV4 --mac MAC",
		Short: "Register a port on the bridge",
		Args:  cobra.NoArgs,
	}
	f := cmd.Flags()
	name := f.String("name", "", "endpoint name (required)")
	iface := f.String("interface", "", "host-side interface on the bridge (required)")
	ip := f.String("ip", "", "IPv4 address of the endpoint (required)")
	mac := f.String("mac", "", "MAC address of the endpoint (required)")
	cmd.RunE = action(func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "name", "interface", "ip", "mac"); err != nil {
			return err
		}
		addr, err := parseIPv4("ip", *ip)
		if err != nil {
			return err
		}
		hw, err := net.ParseMAC(*mac)
		if err != nil || len(hw) != 6 {
			return usagef("invalid --mac %q: must be a MAC address like 02:00:00:00:00:01", *mac)
		}
		req := api.EndpointAddRequest{Name: *name, Interface: *iface, IP: addr.String(), MAC: hw.String()}
		ep, err := client(cmd).AddEndpoint(cmd.Context(), req)
		if err != nil {
			return err
		}
		return printLine(cmd, fmt.Sprintf("Endpoint %s added (identity %d, interface %s).", ep.Name, ep.Identity, ep.Interface))
	})
	return cmd
}

func newEndpointListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List registered endpoints",
		Args:  cobra.NoArgs,
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			eps, err := client(cmd).Endpoints(cmd.Context())
			if err != nil {
				return err
			}
			if len(eps) == 0 {
				return printLine(cmd, "No endpoints.")
			}
			w := table(cmd)
			fmt.Fprintln(w, "NAME\tIDENTITY\tINTERFACE\tIP\tMAC\tATTACHED")
			for _, ep := range eps {
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", ep.Name, ep.Identity, ep.Interface, ep.IP, ep.MAC, yesNo(ep.Attached))
			}
			return w.Flush()
		}),
	}
}

func newEndpointRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a registered endpoint",
		Args:  cobra.ExactArgs(1),
		RunE: action(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if name == "" {
				return usagef("endpoint name must not be empty")
			}
			if err := client(cmd).RemoveEndpoint(cmd.Context(), name); err != nil {
				return err
			}
			return printLine(cmd, fmt.Sprintf("Endpoint %s removed.", name))
		}),
	}
}

// requireFlags reports every named string flag that is unset or empty.
func requireFlags(cmd *cobra.Command, names ...string) error {
	var missing []string
	for _, n := range names {
		if v, _ := cmd.Flags().GetString(n); v == "" {
			missing = append(missing, "--"+n)
		}
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return usagef("missing required flag %s", missing[0])
	default:
		return usagef("missing required flags %s", strings.Join(missing, ", "))
	}
}

// parseIPv4 parses the value of --flag as a plain IPv4 address.
func parseIPv4(flag, s string) (netip.Addr, error) {
	addr, err := netip.ParseAddr(s)
	if err != nil || !addr.Is4() {
		return netip.Addr{}, usagef("invalid --%s %q: must be an IPv4 address", flag, s)
	}
	return addr, nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
