package datapath

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// BenchmarkVerdict measures the program's cost per packet with BPF_PROG_TEST_RUN
// as the allow map grows. Each run is a packet that matches an entry, so the
// lookup path is the full one. Figures: ns/packet.
func BenchmarkVerdict(b *testing.B) {
	for _, n := range []int{10, 10_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			d := openTest(b)
			seed(b, d)
			fillGrants(b, d, n)
			data := tcp(agentIP, upstream, 443).bytes()
			if v, _ := run(b, d, agentPort, data); v != tcActOK {
				b.Fatalf("verdict %d, want pass", v)
			}
			// The kernel repeats the run in one syscall, so the wall time
			// of the call divided by the repeat count is the per-packet cost;
			// the single syscall adds well under 0.1 ns per packet.
			const repeat = 500_000
			opts := &ebpf.RunOptions{Data: data, Context: skbContext{IngressIfindex: agentPort}, Repeat: repeat}
			var total time.Duration
			for i := 0; i < b.N; i++ {
				start := time.Now()
				ret, err := d.objs.OutcallPortIngress.Run(opts)
				total += time.Since(start)
				if err != nil || ret != tcActOK {
					b.Fatalf("benchmark run: ret %d, %v", ret, err)
				}
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N*repeat), "ns/packet")
		})
	}
}

// fillGrants adds n distinct entries for random identities and destinations
// (none of them the benchmarked packet's), in batches.
func fillGrants(b *testing.B, d *Datapath, n int) {
	b.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	const batch = 10_000
	keys := make([]portIngressGrantKey, 0, batch)
	vals := make([]portIngressGrantValue, 0, batch)
	flush := func() {
		if len(keys) == 0 {
			return
		}
		if _, err := d.objs.Grants.BatchUpdate(keys, vals, nil); err != nil {
			b.Fatalf("fill grants: %v", err)
		}
		keys, vals = keys[:0], vals[:0]
	}
	for i := 0; i < n; i++ {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], 0xc6120000|uint32(i)) // 198.18.0.0/15 benchmark range
		keys = append(keys, portIngressGrantKey{Identity: 1000 + r.Uint32N(1<<16), Daddr: netip.AddrFrom4(a).As4(), Dport: uint16(1 + r.IntN(65535)), Proto: 6})
		vals = append(vals, portIngressGrantValue{})
		if len(keys) == batch {
			flush()
		}
	}
	flush()
}
