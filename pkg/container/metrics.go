package container

import "github.com/prometheus/client_golang/prometheus"

// metrics are the manager's Prometheus series. Labels are fixed sets
// (states Docker reports, outcomes, event actions the manager handles),
// never a container name, image or environment value.
type metrics struct {
	available      prometheus.GaugeFunc
	containers     *prometheus.GaugeVec
	reconnects     prometheus.Counter
	events         *prometheus.CounterVec
	createDuration *prometheus.HistogramVec
	rollbacks      *prometheus.CounterVec
}

func newMetrics(m *Manager) *metrics {
	return &metrics{
		available: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outcall_docker_available",
			Help: "1 while the Docker engine answers (the manager is available), 0 while it is degraded or not yet reached.",
		}, func() float64 {
			if m.Status().State == DockerAvailable {
				return 1
			}
			return 0
		}),
		containers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outcall_managed_containers",
			Help: "Containers labelled managed-by=outcalld, by Docker state, as of the last list, sweep or event.",
		}, []string{"state"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outcall_docker_event_stream_reconnects_total",
			Help: "Times the Docker event stream ended and the manager went back to reconnect (each followed by a sweep).",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_docker_events_total",
			Help: "Events of managed containers handled, by action (other: not acted on).",
		}, []string{"action"}),
		createDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "outcall_container_create_duration_seconds",
			Help:    "Time of a container create by result: created, refused (before any identity or container existed), failed (rolled back).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"result"}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outcall_container_create_rollbacks_total",
			Help: "Containers removed after a failed start or identity binding, by result (failed: the rollback failed too).",
		}, []string{"result"}),
	}
}

// Collectors returns the manager's metrics, for the daemon's registry.
func (m *Manager) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.m.available, m.m.containers, m.m.reconnects, m.m.events, m.m.createDuration, m.m.rollbacks}
}
