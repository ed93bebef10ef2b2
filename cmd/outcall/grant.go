package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"outcall.dev/outcall/pkg/api"
)

// maxTTLSecs is S009's MAX_DYNAMIC_RULE_TTL_SECS.
const maxTTLSecs = api.MaxDynamicRuleTTLSecs

// newGrantCmd is `outcall grant add|remove|list|flush`: datapath allow entries.
func newGrantCmd() *cobra.Command {
	cmd := groupCmd(&cobra.Command{Use: "grant", Short: "Open or close destinations for an endpoint"})
	cmd.AddCommand(newGrantAddCmd(), newGrantRemoveCmd(), newGrantListCmd(), newGrantFlushCmd())
	return cmd
}

// grantFlags are the flags shared by `grant add` and `grant remove`.
type grantFlags struct {
	endpoint, dst, proto string
	port                 uint16
}

func (g *grantFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&g.endpoint, "endpoint", "", "endpoint name (required)")
	f.StringVar(&g.dst, "dst", "", "destination: an IPv4 address, a canonical IPv4 CIDR or a host name (required)")
	f.StringVar(&g.proto, "proto", "", "protocol: tcp or udp (default: all protocols)")
	f.Uint16Var(&g.port, "port", 0, "destination port (needs --proto)")
}

// validate checks the flags locally, with S009's messages where S009 has one,
// and returns the optional protocol and port as the API wants them.
func (g *grantFlags) validate(cmd *cobra.Command) (dst string, proto *string, port *uint16, err error) {
	if err := requireFlags(cmd, "endpoint", "dst"); err != nil {
		return "", nil, nil, err
	}
	d, err := api.ParseGrantDestination(g.dst)
	if err != nil {
		return "", nil, nil, usagef("%v", err)
	}
	if cmd.Flags().Changed("proto") {
		if g.proto != "tcp" && g.proto != "udp" {
			return "", nil, nil, usagef("invalid protocol '%s': must be 'tcp' or 'udp'", g.proto)
		}
		proto = &g.proto
	}
	if cmd.Flags().Changed("port") {
		if proto == nil {
			return "", nil, nil, usagef("a destination port requires protocol 'tcp' or 'udp'")
		}
		if g.port == 0 {
			return "", nil, nil, usagef("invalid --port 0: must be between 1 and 65535")
		}
		port = &g.port
	}
	return d.String(), proto, port, nil
}

// describeGrant renders "<endpoint> -> <dst>[ <proto>[/<port>]]".
func describeGrant(endpoint, dst string, proto *string, port *uint16) string {
	s := endpoint + " -> " + dst
	if proto != nil {
		s += " " + *proto
		if port != nil {
			s += "/" + strconv.Itoa(int(*port))
		}
	}
	return s
}

func newGrantAddCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "add --endpoint NAME --dst ADDRESS|CIDR|HOST [--proto tcp|udp] [--port PORT] [--ttl SECONDS] [--allow-private]",
		Short: "Allow an endpoint to reach a destination",
		Args:  cobra.NoArgs,
	}
	var g grantFlags
	g.register(cmd)
	ttl := cmd.Flags().Int64("ttl", 0, "expire the grant after this many seconds (1-86400; default: no expiry)")
	allowPrivate := cmd.Flags().Bool("allow-private", false, "allow a restricted destination (private, loopback, link-local/metadata, CGNAT, multicast, broadcast, the host's own addresses)")
	cmd.RunE = action(func(cmd *cobra.Command, _ []string) error {
		dst, proto, port, err := g.validate(cmd)
		if err != nil {
			return err
		}
		req := api.AllowRequest{Container: g.endpoint, Destination: dst, Protocol: proto, Port: port, AllowPrivate: *allowPrivate}
		suffix := ""
		if cmd.Flags().Changed("ttl") {
			if *ttl < 1 || *ttl > maxTTLSecs {
				return usagef("expires_in_secs must be between 1 and %d seconds", maxTTLSecs)
			}
			secs := uint32(*ttl)
			req.ExpiresInSecs = &secs
			suffix = fmt.Sprintf(" for %ds", secs)
		}
		// The daemon answers with the api.ActiveRule it holds; the message
		// echoes the request, which is what the operator asked for.
		if _, err := client(cmd).Allow(cmd.Context(), req); err != nil {
			return err
		}
		return printLine(cmd, "Granted "+describeGrant(g.endpoint, dst, proto, port)+suffix+".")
	})
	return cmd
}

func newGrantRemoveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove --endpoint NAME --dst ADDRESS|CIDR|HOST [--proto tcp|udp] [--port PORT]",
		Short: "Close what `grant add` with the same flags opened",
		Args:  cobra.NoArgs,
	}
	var g grantFlags
	g.register(cmd)
	cmd.RunE = action(func(cmd *cobra.Command, _ []string) error {
		dst, proto, port, err := g.validate(cmd)
		if err != nil {
			return err
		}
		req := api.RevokeRequest{Container: g.endpoint, Destination: dst, Protocol: proto, Port: port}
		if err := client(cmd).Revoke(cmd.Context(), req); err != nil {
			return err
		}
		return printLine(cmd, "Revoked "+describeGrant(g.endpoint, dst, proto, port)+".")
	})
	return cmd
}

func newGrantListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List active grants",
		Args:  cobra.NoArgs,
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			rules, err := client(cmd).ActiveRules(cmd.Context())
			if err != nil {
				return err
			}
			if len(rules) == 0 {
				return printLine(cmd, "No grants.")
			}
			w := table(cmd)
			fmt.Fprintln(w, "ENDPOINT\tSRC\tDESTINATION\tPROTO\tPORT\tEXPIRES\tSOURCE")
			for _, r := range rules {
				source := orDash(r.Source)
				if r.Rule != "" {
					source += " (" + r.Rule + ")"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", orDash(r.Container), orDash(r.SrcIP), orDash(r.Destination),
					orDash(deref(r.Protocol, "")), optional(r.Port, ""), optional(r.ExpiresInSecs, "s"), source)
			}
			return w.Flush()
		}),
	}
}

func newGrantFlushCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "flush",
		Short: "Remove every grant",
		Args:  cobra.NoArgs,
		RunE: action(func(cmd *cobra.Command, _ []string) error {
			res, err := client(cmd).FlushRules(cmd.Context())
			if err != nil {
				return err
			}
			return printLine(cmd, fmt.Sprintf("Removed %d grants.", res.Removed))
		}),
	}
}

// orDash shows an empty value as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// deref returns *p, or def when p is nil.
func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// optional formats a nullable number with a unit suffix, or "-" when null.
func optional[T uint16 | uint64](p *T, unit string) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%d%s", *p, unit)
}
