// Package latency summarises the per-worker latencies a load generator
// collected.
package latency

import (
	"slices"
	"time"
)

// Quantiles merges the workers' latencies and returns the p50 and p99, in
// milliseconds; 0 and 0 when there are none.
func Quantiles(perWorker [][]time.Duration) (p50, p99 float64) {
	var all []time.Duration
	for _, l := range perWorker {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return 0, 0
	}
	slices.Sort(all)
	q := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))]) / 1e6 }
	return q(0.50), q(0.99)
}
