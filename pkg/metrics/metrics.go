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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"outcall.dev/outcall/pkg/api"
)

// Source is what the collector reads at each scrape.
type Source interface {
	DatapathCounters(ctx context.Context) ([]api.DatapathCounter, error)
	BridgeStatus(ctx context.Context) (api.BridgeStatus, error)
	GrantCount(ctx context.Context) (int, error)
	EndpointCount() int
}

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
		"Allow entries in the datapath.", nil, nil)
	endpointsDesc = prometheus.NewDesc("outcall_endpoints",
		"Registered endpoints.", nil, nil)
	scrapeErrDesc = prometheus.NewDesc("outcall_scrape_errors",
		"Sources that could not be read in this scrape.", nil, nil)
)

// Collector turns a Source into metrics.
type Collector struct {
	src Source
	// DropEvents counts sampled drop events read from the ring buffer.
	DropEvents *prometheus.CounterVec
}

// NewCollector returns a collector reading src.
func NewCollector(src Source) *Collector {
	return &Collector{
		src: src,
		DropEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_datapath_drop_events_total",
			Help: "Sampled drop events received from the datapath ring buffer.",
		}, []string{"reason"}),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{packetsDesc, bytesDesc, bridgeUpDesc, nftDesc, grantsDesc, endpointsDesc, scrapeErrDesc} {
		ch <- d
	}
	c.DropEvents.Describe(ch)
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
	if n, err := c.src.GrantCount(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(grantsDesc, prometheus.GaugeValue, float64(n))
	} else {
		failed++
	}
	ch <- prometheus.MustNewConstMetric(endpointsDesc, prometheus.GaugeValue, float64(c.src.EndpointCount()))
	ch <- prometheus.MustNewConstMetric(scrapeErrDesc, prometheus.GaugeValue, float64(failed))
	c.DropEvents.Collect(ch)
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

// Serve exposes the collector (plus Go runtime metrics) on l at /metrics
// until ctx is done.
func Serve(ctx context.Context, l net.Listener, c *Collector, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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
