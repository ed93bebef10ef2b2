package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/events"
)

type fakeSource struct{ hitsErr error }

func (fakeSource) DatapathCounters(context.Context) ([]api.DatapathCounter, error) {
	return []api.DatapathCounter{{Verdict: "drop", Reason: "rule", Packets: 3, Bytes: 180}}, nil
}
func (fakeSource) BridgeStatus(context.Context) (api.BridgeStatus, error) {
	return api.BridgeStatus{Name: "outcall0", Up: true, NftablesActive: true}, nil
}
func (fakeSource) GrantCounts(context.Context) (map[string]int, error) {
	return map[string]int{"operator": 2, "dns": 3}, nil
}
func (fakeSource) EndpointCount() int { return 1 }
func (fakeSource) FloorCounters(context.Context) (map[string]uint64, error) {
	return map[string]uint64{"forward_conn_limit_drop": 4}, nil
}
func (f fakeSource) DatapathRuleHits(context.Context) ([]RuleHit, error) {
	return []RuleHit{{RuleID: "allow-db", Decision: api.DecisionAllow, Packets: 7, Bytes: 700}}, f.hitsErr
}

func TestRuleMetrics(t *testing.T) {
	c := NewCollector(fakeSource{})
	for _, e := range []events.Event{
		events.Decision{Layer: "dns", RuleID: "allow-pypi", Decision: api.DecisionAllow},
		events.Decision{Layer: "dns", RuleID: "allow-pypi", Decision: api.DecisionAllow},
		events.Decision{Layer: "proxy", RuleID: "default-block", Decision: api.DecisionBlock},
		events.Reload{},
		events.Reload{Err: errors.New("bad rule")},
		events.Repair{What: "nftables"},
		events.Drop{Reason: "no_rule"},
		events.Grant{Owner: "operator", Added: true},
		events.Grant{Owner: "rule:allow-pypi", Added: true},
		events.Grant{Owner: "rule:allow-pypi", Expired: true},
		events.Grant{Owner: "operator"},
	} {
		c.Handle(e)
	}
	want := `
# HELP outcall_rule_hits_total Decisions by rule, enforcement layer and decision; rule_id is default-block when no rule matched. Datapath hits are packets.
# TYPE outcall_rule_hits_total counter
outcall_rule_hits_total{decision="allow",layer="datapath",rule_id="allow-db"} 7
outcall_rule_hits_total{decision="allow",layer="dns",rule_id="allow-pypi"} 2
outcall_rule_hits_total{decision="block",layer="proxy",rule_id="default-block"} 1
# HELP outcall_floor_packets_total Packets counted by each named rule of the nftables floor (e.g. forward_drop_in, bridge_forward_to_port, arp_input_drop, forward_conn_limit_drop).
# TYPE outcall_floor_packets_total counter
outcall_floor_packets_total{rule="forward_conn_limit_drop"} 4
# HELP outcall_rule_reloads_total Rule set reloads by result (success or failure; a failure keeps the previous set).
# TYPE outcall_rule_reloads_total counter
outcall_rule_reloads_total{result="failure"} 1
outcall_rule_reloads_total{result="success"} 1
# HELP outcall_repairs_total Enforcement found missing and restored, by what (tcx_link, nftables).
# TYPE outcall_repairs_total counter
outcall_repairs_total{what="nftables"} 1
# HELP outcall_datapath_drop_events_total Sampled drop events received from the datapath ring buffer.
# TYPE outcall_datapath_drop_events_total counter
outcall_datapath_drop_events_total{reason="no_rule"} 1
# HELP outcall_grants Live allow entries in the datapath by source (operator, dns).
# TYPE outcall_grants gauge
outcall_grants{source="dns"} 3
outcall_grants{source="operator"} 2
# HELP outcall_grant_changes_total Grants inserted (or renewed), revoked and expired, by source (operator, dns).
# TYPE outcall_grant_changes_total counter
outcall_grant_changes_total{change="expired",source="dns"} 1
outcall_grant_changes_total{change="inserted",source="dns"} 1
outcall_grant_changes_total{change="inserted",source="operator"} 1
outcall_grant_changes_total{change="revoked",source="operator"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "outcall_rule_hits_total", "outcall_floor_packets_total", "outcall_rule_reloads_total", "outcall_repairs_total", "outcall_datapath_drop_events_total", "outcall_grants", "outcall_grant_changes_total"); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("pedantic gather: %v", err)
	}
}

func TestScrapeErrorsCountFailedSources(t *testing.T) {
	c := NewCollector(fakeSource{hitsErr: errors.New("no datapath")})
	want := "# HELP outcall_scrape_errors Sources that could not be read in this scrape.\n# TYPE outcall_scrape_errors gauge\noutcall_scrape_errors 1\n"
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "outcall_scrape_errors"); err != nil {
		t.Fatal(err)
	}
}
