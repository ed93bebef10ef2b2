package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes label outcall_proxy_requests_total and the latency histogram.
// The set is fixed, so the label stays bounded whatever clients send.
const (
	outcomeAllowed          = "allowed"           // forwarded or tunnelled
	outcomeBlocked          = "blocked"           // a rule, the default policy or an engine error
	outcomeSNIBlocked       = "sni_blocked"       // the SNI's evaluation blocked after the 200
	outcomeRestricted       = "restricted"        // resolved only to restricted addresses
	outcomeIdentity         = "identity_required" // peer is not a managed container
	outcomePortDenied       = "port_denied"       // CONNECT to a deny-listed port
	outcomeBadRequest       = "bad_request"       // any 400
	outcomeHeaderTimeout    = "header_timeout"    // 408
	outcomeHeadersTooLarge  = "headers_too_large" // 431
	outcomeBodyTooLarge     = "body_too_large"    // 413
	outcomeUpstreamFailed   = "upstream_failed"   // 502, or a failed dial after the 200
	outcomeUpstreamTimeout  = "upstream_timeout"  // 504
	outcomeBadClientHello   = "bad_client_hello"  // unreadable ClientHello or SNI after the 200
	outcomeOverCapacity     = "over_capacity"     // 503
	outcomeHealth           = "health"            // GET /outcall-health
	outcomeClientGone       = "client_gone"       // closed or failed before a full head
	directionUpstream       = "upstream"          // client → upstream
	directionDownstream     = "downstream"        // upstream → client
	metricsRuleLabelNoMatch = ""                  // outcomes no rule decided
)

// metrics are the proxy's Prometheus series. Labels are the outcome and the
// rule id (rule ids are the operator's, bounded by the rule set), never a
// host, address, path or container name a client chose.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	active   prometheus.GaugeFunc
}

func newMetrics(p *Proxy) *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_proxy_requests_total",
			Help: "Proxy requests by outcome and deciding rule (rule_id is default-block for the default policy, empty when no evaluation decided).",
		}, []string{"outcome", "rule_id"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "outcall_proxy_request_duration_seconds",
			Help:    "Time from a complete request head to the proxy's answer: an error response, the first byte sent upstream, or the tunnel starting.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"outcome"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_proxy_tunnel_bytes_total",
			Help: "Bytes relayed through CONNECT tunnels (the ClientHello included) by direction: upstream (client to server) or downstream.",
		}, []string{"direction"}),
		active: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outcall_proxy_active_connections",
			Help: "Client connections the proxy holds now.",
		}, func() float64 { return float64(p.active.Load()) }),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.latency, m.bytes, m.active}
}

// request counts one request's outcome.
func (m *metrics) request(outcome, rule string) {
	m.requests.WithLabelValues(outcome, rule).Inc()
}

// observe counts one request's outcome and how long the proxy took to reach
// it since the head was complete.
func (m *metrics) observe(outcome, rule string, since time.Time) {
	m.observeTook(outcome, rule, time.Since(since))
}

// observeTook counts one request's outcome, reached after took.
func (m *metrics) observeTook(outcome, rule string, took time.Duration) {
	m.request(outcome, rule)
	m.latency.WithLabelValues(outcome).Observe(took.Seconds())
}
