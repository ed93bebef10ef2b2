package main

import (
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"outcall.dev/outcall/pkg/api"
)

// newProxyCmd is `outcall proxy status` (S006), its only subcommand.
func newProxyCmd() *cobra.Command {
	cmd := groupCmd(&cobra.Command{
		Use:   "proxy",
		Short: "Inspect the HTTP/CONNECT proxy",
		Long: `Inspect the HTTP/CONNECT proxy.

outcalld's proxy listens on each network's gateway, port 8080 by default,
and evaluates every request against the rules before it connects
upstream.`,
	})
	cmd.AddCommand(newProxyStatusCmd())
	return cmd
}

func newProxyStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the proxy's listener, active connections and request counters",
		Long: `Show the proxy's listener, active connections and request counters, in
the style of "outcall dns status" (values start at column 17):

  Proxy:          active
  Listen:         10.200.0.1:8080
  Connections:    3 active
  Requests:       120 total (7 blocked)

"Listen:" is the default network's listener; with more than one network,
"Listeners:" names every network's. With --no-proxy the proxy is
"Proxy:          disabled"; configured but not listening (the bridge is
down) it is "Proxy:          inactive (bridge not up)".`,
		Args: cobra.NoArgs,
		RunE: ruleAction(func(cmd *cobra.Command, _ []string) error {
			st, err := client(cmd).ProxyStatus(cmd.Context())
			if err != nil {
				return err
			}
			return printLine(cmd, formatProxyStatus(st))
		}),
	}
}

// formatProxyStatus renders the proxy's status, without the final newline.
func formatProxyStatus(st api.ProxyStatus) string {
	switch {
	case !st.Listening && st.ListenAddr == "":
		return label("Proxy:") + "disabled"
	case !st.Listening:
		return label("Proxy:") + "inactive (bridge not up)"
	}
	lines := []string{
		label("Proxy:") + "active",
		label("Listen:") + cell(st.ListenAddr),
	}
	if len(st.Listeners) > 1 {
		lines = append(lines, label("Listeners:")+cells(st.Listeners))
	}
	lines = append(lines,
		label("Connections:")+strconv.FormatInt(st.ActiveConnections, 10)+" active",
		label("Requests:")+strconv.FormatUint(st.TotalRequests, 10)+" total ("+strconv.FormatUint(st.TotalBlocked, 10)+" blocked)",
	)
	return strings.Join(lines, "\n")
}
