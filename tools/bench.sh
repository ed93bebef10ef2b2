#!/usr/bin/env bash
# bench.sh: run the benchmarks N times and print, for every benchmark and
# every figure it reports, the median over the runs (and the lowest and
# highest). BENCHMARKS.md compares same-run ratios (x-floor: the datapath
# against the one-lookup floor; ratio: filtered against plain throughput),
# which one machine reproduces far better than absolute times.
#
#   sudo tools/bench.sh [N]            N runs of `make bench` (default 5)
#   sudo BENCH_CMD='go test -run ^$ -bench PacketPath -benchtime 5x ./pkg/datapath' tools/bench.sh 3
#
# Every run's output is kept in $BENCH_LOG (default /tmp/outcall-bench.log).
set -euo pipefail

N=${1:-5}
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: N must be a positive number" >&2; exit 2; }
BENCH_CMD=${BENCH_CMD:-make bench}
BENCH_LOG=${BENCH_LOG:-/tmp/outcall-bench.log}
cd "$(dirname "$0")/.."

: >"$BENCH_LOG"
for i in $(seq "$N"); do
	echo "== run $i of $N: $BENCH_CMD" | tee -a "$BENCH_LOG" >&2
	bash -c "$BENCH_CMD" 2>&1 | tee -a "$BENCH_LOG" >&2
done

# A benchmark line: name-GOMAXPROCS, iterations, then value-unit pairs.
# Allocation figures and ns/op (b.N's own timing) are left out.
grep -E '^Benchmark' "$BENCH_LOG" | awk '{
	name = $1; sub(/-[0-9]+$/, "", name)
	for (i = 3; i + 1 <= NF; i += 2)
		if ($(i+1) != "ns/op" && $(i+1) != "B/op" && $(i+1) != "allocs/op")
			print name, $(i+1), $i
}' | sort -k1,1 -k2,2 -k3,3g | awk '
function flush() {
	if (n == 0) return
	med = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
	printf "%-60s %-16s %10.4g  (min %.4g, max %.4g, %d runs)\n", key1, key2, med, v[1], v[n], n
}
{
	if ($1 != key1 || $2 != key2) { flush(); key1 = $1; key2 = $2; n = 0 }
	v[++n] = $3
}
END { flush() }'
