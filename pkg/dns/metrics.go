package dns

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the filter's Prometheus series. Labels stay bounded: an
// outcome and a rule id (or a pseudo-rule), never a query name or an
// address (DESIGN §6).
type metrics struct {
	queries         *prometheus.CounterVec
	upstreamSeconds prometheus.Histogram
	holdSeconds     prometheus.Histogram
	cacheHits       prometheus.CounterFunc
	cacheMisses     prometheus.CounterFunc
	cacheEvictions  prometheus.CounterFunc
	cacheEntries    prometheus.GaugeFunc
	grants          *prometheus.CounterVec
	// allowed holds queries{outcome="allowed"}'s counters by rule id,
	// for the hot path: a map load instead of hashing the labels.
	allowed sync.Map // string -> prometheus.Counter
}

// allowedBy is the counter of the queries rule allowed.
func (m *metrics) allowedBy(rule string) prometheus.Counter {
	if c, ok := m.allowed.Load(rule); ok {
		return c.(prometheus.Counter)
	}
	c := m.queries.WithLabelValues(outcomeAllowed, rule)
	m.allowed.Store(rule, c)
	return c
}

// Query outcomes, the "outcome" label of outcall_dns_queries_total.
const (
	outcomeAllowed   = "allowed"
	outcomeBlocked   = "blocked"
	outcomeRefused   = "refused"   // unknown sender
	outcomeServfail  = "servfail"  // upstream, engine or grant failure
	outcomeFormerr   = "formerr"   // name too long or not a plain host name
	outcomeNotimp    = "notimp"    // not a QUERY
	outcomeMalformed = "malformed" // dropped, no answer
)

// Pseudo-rules: the "rule" label of decisions no rule file made.
const (
	ruleRestricted = "restricted-address-filter"
	ruleLocal      = "mdns-local"
	ruleNone       = "" // before or without an evaluation
)

func newMetrics(c *cache) *metrics {
	return &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_dns_queries_total",
			Help: "DNS queries answered (or dropped) by the filter, by outcome and deciding rule.",
		}, []string{"outcome", "rule"}),
		upstreamSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outcall_dns_upstream_duration_seconds",
			Help:    "Time of one exchange with one upstream, failed ones included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		holdSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outcall_dns_answer_hold_seconds",
			Help:    "Time from the upstream answer or cache hit to the reply written, grant writes included.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1},
		}),
		cacheHits: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "outcall_dns_cache_hits_total", Help: "DNS cache hits.",
		}, func() float64 { h, _, _ := c.stats(); return float64(h) }),
		cacheMisses: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "outcall_dns_cache_misses_total", Help: "DNS cache misses.",
		}, func() float64 { _, m, _ := c.stats(); return float64(m) }),
		cacheEvictions: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "outcall_dns_cache_evictions_total", Help: "DNS cache LRU evictions.",
		}, func() float64 { _, _, e := c.stats(); return float64(e) }),
		cacheEntries: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outcall_dns_cache_entries", Help: "Answers in the DNS cache.",
		}, func() float64 { return float64(c.len()) }),
		grants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_dns_grants_learned_total",
			Help: "direct_ip grants (destination x port) written before an answer was released, by rule.",
		}, []string{"rule"}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.queries, m.upstreamSeconds, m.holdSeconds,
		m.cacheHits, m.cacheMisses, m.cacheEvictions, m.cacheEntries, m.grants}
}
