package main

import (
	"net"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"outcall.dev/outcall/pkg/api"
)

// newDNSCmd is `outcall dns status|test|cache|flush` (S007-IF-004/005).
func newDNSCmd() *cobra.Command {
	cmd := groupCmd(&cobra.Command{
		Use:   "dns",
		Short: "Inspect the DNS filter, test names against the rules, manage its cache",
		Long: `Inspect the DNS filter, test names against the rules, manage its cache.

outcalld answers every container's DNS queries on its network's gateway,
port 53: each question is evaluated against the rules (dns.query,
dns.record_type) and only allowed ones are forwarded to the upstreams; a
blocked name gets NXDOMAIN. Answers are cached, and the rules are still
evaluated on every cached answer.`,
	})
	cmd.AddCommand(newDNSStatusCmd(), newDNSTestCmd(), newDNSCacheCmd(), newDNSFlushCmd())
	return cmd
}

func newDNSStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show whether the DNS filter runs, where it listens, its upstreams and counters",
		Long: `Show whether the DNS filter runs, where it listens (the default network's
gateway), its upstreams, cache size and query counters. With more than one
network, "Listeners:" names every network's listener. While the bridge is
down the filter does not run: "DNS Filter:     inactive (bridge not up)".`,
		Args: cobra.NoArgs,
		RunE: ruleAction(func(cmd *cobra.Command, _ []string) error {
			st, err := client(cmd).DNSStatus(cmd.Context())
			if err != nil {
				return err
			}
			return printLine(cmd, formatDNSStatus(st))
		}),
	}
}

func newDNSTestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "test HOSTNAME [--type TYPE]",
		Short: "Show the rules' decision on a DNS question, sending no query",
		Long: `Show the rules' decision on a DNS question: the rule engine evaluates
{"dns":{"query":HOSTNAME,"record_type":TYPE}} as the DNS filter would, and
no DNS query is sent. HOSTNAME is lowercased and its trailing dot dropped,
TYPE (default A) uppercased, as the filter sees them. Exit code 0 means the
engine decided, ALLOW or BLOCK; 1 means it did not (daemon unreachable,
bridge down, API error).`,
		Args: cobra.ExactArgs(1),
	}
	recordType := cmd.Flags().String("type", "A", "record type, e.g. A, AAAA, MX, TXT")
	cmd.RunE = ruleAction(func(cmd *cobra.Command, args []string) error {
		q, err := dnsQuestion(args[0], *recordType)
		if err != nil {
			return err
		}
		res, err := client(cmd).Evaluate(cmd.Context(), api.EvaluationContext{DNS: &q})
		if err != nil {
			return err
		}
		return printLine(cmd, formatDNSTest(q, res))
	})
	return cmd
}

// dnsQuestion normalises a name and record type the way the DNS filter
// hands them to the rules: the name lowercased without its trailing dot,
// the type uppercased.
func dnsQuestion(name, recordType string) (api.DNSContext, error) {
	q := api.DNSContext{
		Query:      strings.TrimSuffix(strings.ToLower(name), "."),
		RecordType: strings.ToUpper(recordType),
	}
	if q.Query == "" {
		return q, usagef("hostname must not be empty")
	}
	if q.RecordType == "" || strings.ContainsFunc(q.RecordType, func(r rune) bool {
		return (r < 'A' || r > 'Z') && (r < '0' || r > '9')
	}) {
		return q, usagef("invalid --type %q: must be a record type like A, AAAA or MX", recordType)
	}
	return q, nil
}

func newDNSCacheCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache [--entries]",
		Short: "Show the DNS cache's size and counters, with --entries its contents",
		Long: `Show the DNS cache's size and counters; the hit rate is hits / (hits +
misses), 0.0% before any lookup. With --entries, a table of the cached
answers follows with their remaining TTLs.`,
		Args: cobra.NoArgs,
	}
	entries := cmd.Flags().Bool("entries", false, "list the cached answers")
	cmd.RunE = ruleAction(func(cmd *cobra.Command, _ []string) error {
		if !*entries {
			st, err := client(cmd).DNSCache(cmd.Context())
			if err != nil {
				return err
			}
			return printLine(cmd, formatDNSCacheStats(st))
		}
		d, err := client(cmd).DNSCacheEntries(cmd.Context())
		if err != nil {
			return err
		}
		return printLine(cmd, formatDNSCacheStats(d.Stats)+"\n\n"+formatDNSCacheEntries(d.Entries))
	})
	return cmd
}

func newDNSFlushCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "flush",
		Short: "Empty the DNS cache",
		Args:  cobra.NoArgs,
		RunE: ruleAction(func(cmd *cobra.Command, _ []string) error {
			res, err := client(cmd).FlushDNSCache(cmd.Context())
			if err != nil {
				return err
			}
			return printLine(cmd, "DNS cache flushed ("+plural(res.EntriesFlushed, "entry", "entries")+" cleared).")
		}),
	}
}

// Column widths of S007-IF-005: values start at column 17.
const (
	valueColumn   = 16 // status labels
	hostnameWidth = 29 // cache table HOSTNAME
	typeWidth     = 6  // cache table TYPE
)

// label pads a label so that its value starts at column 17.
func label(s string) string { return column(s, valueColumn) }

// formatDNSStatus renders S007-IF-005's status, without the final newline.
func formatDNSStatus(st api.DNSFilterStatus) string {
	if !st.Running {
		return label("DNS Filter:") + "inactive (bridge not up)"
	}
	lines := []string{
		label("DNS Filter:") + "active",
		label("Listen:") + cell(listenAddress(st.ListenAddress, st.ListenPort)),
	}
	if len(st.Listeners) > 1 {
		lines = append(lines, label("Listeners:")+cells(st.Listeners))
	}
	lines = append(lines,
		label("Upstreams:")+cells(st.Upstreams),
		label("Cache:")+plural(st.CacheEntries, "entry", "entries"),
		label("Queries:")+strconv.FormatUint(st.QueriesTotal, 10)+" total ("+
			strconv.FormatUint(st.QueriesAllowed, 10)+" allowed, "+strconv.FormatUint(st.QueriesBlocked, 10)+" blocked)",
	)
	return strings.Join(lines, "\n")
}

// listenAddress joins an address and port as "10.200.0.1:53", or "" when
// there is no address.
func listenAddress(addr string, port uint16) string {
	if addr == "" {
		return ""
	}
	return net.JoinHostPort(addr, strconv.Itoa(int(port)))
}

// cells joins values with ", ", each made printable, or "-" when there are
// none.
func cells(vs []string) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = cell(v)
	}
	return orDash(strings.Join(out, ", "))
}

// formatDNSTest renders S007-IF-005's decision block, without the final
// newline.
func formatDNSTest(q api.DNSContext, res api.EvaluateResult) string {
	rule := "(default policy)"
	if res.MatchedRule != nil {
		rule = cell(*res.MatchedRule)
		if res.File != nil {
			rule += " (" + cell(*res.File) + ")"
		}
	}
	return strings.Join([]string{
		label("Hostname:") + cell(q.Query),
		label("Record type:") + cell(q.RecordType),
		label("Decision:") + cell(strings.ToUpper(string(res.Decision))),
		label("Matched rule:") + rule,
	}, "\n")
}

// formatDNSCacheStats renders S007-IF-005's cache block, without the final
// newline.
func formatDNSCacheStats(st api.DNSCacheStats) string {
	return strings.Join([]string{
		label("Entries:") + strconv.Itoa(st.Entries) + " / " + strconv.Itoa(st.MaxEntries),
		label("Hits:") + strconv.FormatUint(st.Hits, 10),
		label("Misses:") + strconv.FormatUint(st.Misses, 10),
		label("Evictions:") + strconv.FormatUint(st.Evictions, 10),
		label("Hit rate:") + hitRate(st.Hits, st.Misses),
	}, "\n")
}

// hitRate is hits / (hits + misses) as a percentage with one decimal,
// "0.0%" before any lookup.
func hitRate(hits, misses uint64) string {
	if hits == 0 && misses == 0 {
		return "0.0%"
	}
	h := float64(hits)
	return strconv.FormatFloat(100*h/(h+float64(misses)), 'f', 1, 64) + "%"
}

// formatDNSCacheEntries renders S007-IF-005's cache table in the daemon's
// order, without the final newline, or "No cached entries.".
func formatDNSCacheEntries(entries []api.DNSCacheEntry) string {
	if len(entries) == 0 {
		return "No cached entries."
	}
	lines := []string{column("HOSTNAME", hostnameWidth) + column("TYPE", typeWidth) + "TTL"}
	for _, e := range entries {
		lines = append(lines, column(cell(e.Hostname), hostnameWidth)+column(cell(e.RecordType), typeWidth)+
			strconv.FormatUint(uint64(e.TTLRemainingSecs), 10)+"s")
	}
	return strings.Join(lines, "\n")
}

// plural renders n with its noun: "1 entry", "142 entries".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
