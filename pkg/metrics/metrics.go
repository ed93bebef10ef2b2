// Package metrics exports Outcall's counters in the Prometheus text format.
// Datapath counters are read from the per-CPU maps at scrape time, so the
// numbers an operator sees are the kernel's, not a copy that can drift.
// Labels stay bounded: verdict and reason, never an address or a name a
// container chose.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/events"
)

// Source is what the collector reads at each scrape.
type Source interface {
	DatapathCounters(ctx context.Context) ([]api.DatapathCounter, error)
	BridgeStatus(ctx context.Context) (api.BridgeStatus, error)
	// GrantCounts is the live grants by source ("operator", "dns").
	GrantCounts(ctx context.Context) (map[string]int, error)
	EndpointCount() int
	// DatapathRuleHits returns what each packet-level rule decided in the
	// datapath since the daemon started.
	DatapathRuleHits(ctx context.Context) ([]RuleHit, error)
	// FloorCounters returns the packets counted by the nftables floor's
	// named rules (nft.Floor.Counters): what the floor dropped behind the
	// datapath, and what the per-agent connection cap refused.
	FloorCounters(ctx context.Context) (map[string]uint64, error)
}

// RuleHit is what one rule decided at the packet layer.
type RuleHit struct {
	RuleID   string
	Decision api.Decision
	Packets  uint64
	Bytes    uint64
}

// LayerDatapath is the layer label of packet-layer rule hits.
const LayerDatapath = "datapath"

var (
	packetsDesc = prometheus.NewDesc("outcall_datapath_packets_total",
		"Packets from container ports by datapath verdict and reason.", []string{"verdict", "reason"}, nil)
	bytesDesc = prometheus.NewDesc("outcall_datapath_bytes_total",
		"Bytes from container ports by datapath verdict and reason.", []string{"verdict", "reason"}, nil)
	bridgeUpDesc = prometheus.NewDesc("outcall_bridge_up",
		"Whether the bridge exists and is up.", []string{"bridge"}, nil)
	nftDesc = prometheus.NewDesc("outcall_nftables_active",
		"Whether the inet outcall table exists.", nil, nil)
	grantsDesc = prometheus.NewDesc("outcall_grants",
		"Live allow entries in the datapath by source (operator, dns).", []string{"source"}, nil)
	endpointsDesc = prometheus.NewDesc("outcall_endpoints",
		"Registered endpoints.", nil, nil)
	scrapeErrDesc = prometheus.NewDesc("outcall_scrape_errors",
		"Sources that could not be read in this scrape.", nil, nil)
	ruleHitsDesc = prometheus.NewDesc("outcall_rule_hits_total",
		"Decisions by rule, enforcement layer and decision; rule_id is default-block when no rule matched. Datapath hits are packets.",
		[]string{"rule_id", "layer", "decision"}, nil)
	ruleBytesDesc = prometheus.NewDesc("outcall_rule_datapath_bytes_total",
		"Bytes decided by each packet-level rule in the datapath.", []string{"rule_id", "decision"}, nil)
	floorDesc = prometheus.NewDesc("outcall_floor_packets_total",
		"Packets counted by each named rule of the nftables floor (e.g. forward_drop_in, bridge_forward_to_port, arp_input_drop, forward_conn_limit_drop).",
		[]string{"rule"}, nil)
)

type decisionKey struct {
	layer, rule string
	decision    api.Decision
}

// Collector turns a Source into metrics.
type Collector struct {
	src Source
	// DropEvents counts sampled drop events read from the ring buffer.
	DropEvents *prometheus.CounterVec
	// Reloads counts rule reloads by result.
	Reloads *prometheus.CounterVec
	// GrantChanges counts grants inserted (or renewed), revoked and
	// expired, by source (operator, dns).
	GrantChanges *prometheus.CounterVec
	// Repairs counts enforcement the daemon found missing and restored,
	// by what: tcx_link (a port's program was detached) or nftables (a
	// floor table was deleted).
	Repairs *prometheus.CounterVec

	mu        sync.Mutex
	decisions map[decisionKey]uint64
}

// NewCollector returns a collector reading src.
func NewCollector(src Source) *Collector {
	return &Collector{
		src: src,
		DropEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_datapath_drop_events_total",
			Help: "Sampled drop events received from the datapath ring buffer.",
		}, []string{"reason"}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_rule_reloads_total",
			Help: "Rule set reloads by result (success or failure; a failure keeps the previous set).",
		}, []string{"result"}),
		GrantChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_grant_changes_total",
			Help: "Grants inserted (or renewed), revoked and expired, by source (operator, dns).",
		}, []string{"source", "change"}),
		Repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_repairs_total",
			Help: "Enforcement found missing and restored, by what (tcx_link, nftables).",
		}, []string{"what"}),
		decisions: map[decisionKey]uint64{},
	}
}

// Handle counts what an event says; the daemon registers it as an inline
// handler of its event bus, so a counter has moved when Publish returns.
func (c *Collector) Handle(e events.Event) {
	switch e := e.(type) {
	case events.Decision:
		c.mu.Lock()
		c.decisions[decisionKey{e.Layer, e.RuleID, e.Decision}]++
		c.mu.Unlock()
	case events.Reload:
		result := "success"
		if e.Err != nil {
			result = "failure"
		}
		c.Reloads.WithLabelValues(result).Inc()
	case events.Drop:
		c.DropEvents.WithLabelValues(e.Reason).Inc()
	case events.Repair:
		c.Repairs.WithLabelValues(e.What).Inc()
	case events.Grant:
		source, change := "operator", "revoked"
		if strings.HasPrefix(e.Owner, "rule:") {
			source = "dns"
		}
		switch {
		case e.Added:
			change = "inserted"
		case e.Expired:
			change = "expired"
		}
		c.GrantChanges.WithLabelValues(source, change).Inc()
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{packetsDesc, bytesDesc, bridgeUpDesc, nftDesc, grantsDesc, endpointsDesc, scrapeErrDesc, ruleHitsDesc, ruleBytesDesc, floorDesc} {
		ch <- d
	}
	c.DropEvents.Describe(ch)
	c.Reloads.Describe(ch)
	c.Repairs.Describe(ch)
	c.GrantChanges.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	failed := 0
	if cs, err := c.src.DatapathCounters(ctx); err == nil {
		for _, x := range cs {
			ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(x.Packets), x.Verdict, x.Reason)
			ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(x.Bytes), x.Verdict, x.Reason)
		}
	} else {
		failed++
	}
	if st, err := c.src.BridgeStatus(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(bridgeUpDesc, prometheus.GaugeValue, boolValue(st.Up), st.Name)
		ch <- prometheus.MustNewConstMetric(nftDesc, prometheus.GaugeValue, boolValue(st.NftablesActive))
	} else {
		failed++
	}
	if counts, err := c.src.GrantCounts(ctx); err == nil {
		for source, n := range counts {
			ch <- prometheus.MustNewConstMetric(grantsDesc, prometheus.GaugeValue, float64(n), source)
		}
	} else {
		failed++
	}
	if hits, err := c.src.DatapathRuleHits(ctx); err == nil {
		for _, h := range hits {
			ch <- prometheus.MustNewConstMetric(ruleHitsDesc, prometheus.CounterValue, float64(h.Packets), h.RuleID, LayerDatapath, string(h.Decision))
			ch <- prometheus.MustNewConstMetric(ruleBytesDesc, prometheus.CounterValue, float64(h.Bytes), h.RuleID, string(h.Decision))
		}
	} else {
		failed++
	}
	if counts, err := c.src.FloorCounters(ctx); err == nil {
		for rule, n := range counts {
			ch <- prometheus.MustNewConstMetric(floorDesc, prometheus.CounterValue, float64(n), rule)
		}
	} else {
		failed++
	}
	c.mu.Lock()
	for k, n := range c.decisions {
		ch <- prometheus.MustNewConstMetric(ruleHitsDesc, prometheus.CounterValue, float64(n), k.rule, k.layer, string(k.decision))
	}
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(endpointsDesc, prometheus.GaugeValue, float64(c.src.EndpointCount()))
	ch <- prometheus.MustNewConstMetric(scrapeErrDesc, prometheus.GaugeValue, float64(failed))
	c.DropEvents.Collect(ch)
	c.Reloads.Collect(ch)
	c.Repairs.Collect(ch)
	c.GrantChanges.Collect(ch)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Listen binds the metrics address, so a bad --metrics-addr fails startup
// instead of a running daemon.
func Listen(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	return l, nil
}

// Serve exposes the collector, Go runtime metrics and the extra collectors
// (the DNS filter's, the proxy's) on l at /metrics until ctx is done.
func Serve(ctx context.Context, l net.Listener, c *Collector, log *slog.Logger, extra ...prometheus.Collector) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, x := range extra {
		if err := reg.Register(x); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("serving metrics", "addr", l.Addr().String())
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
