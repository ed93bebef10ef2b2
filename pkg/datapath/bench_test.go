package datapath

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"outcall.dev/outcall/internal/packet"
)

// BenchmarkVerdict measures the program's cost per packet with BPF_PROG_TEST_RUN
// as the allow map grows, and with rule tables of 10k prefixes (60k entries)
// installed. Each run is a packet that goes the full way to its verdict:
// entries=N is a packet one of N grants allows, without rule tables;
// rules=10k/allow is one a rule entry allows; rules=10k/grant is one the rule
// tables leave to a grant, so it pays for both. Figures: ns/packet.
func BenchmarkVerdict(b *testing.B) {
	for _, n := range []int{10, 10_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			d := openTest(b)
			seed(b, d)
			fillGrants(b, d, n)
			benchPackets(b, d, tcp(agentIP, upstream, 443).Bytes(), AllowGrant)
		})
	}
	// A packet no grant allows (no_rule) pays for every lookup: the three
	// exact ones and, since prefix grants, the trie's three.
	b.Run("entries=10000/miss", func(b *testing.B) {
		d := openTest(b)
		seed(b, d)
		fillGrants(b, d, 10_000)
		benchPackets(b, d, tcp(agentIP, netip.MustParseAddr("203.0.113.50"), 443).Bytes(), DropNoRule)
	})
	// A packet only a prefix grant allows pays for the three exact
	// lookups first, then the trie's.
	b.Run("entries=10000/prefixes=1000/prefix", func(b *testing.B) {
		d := openTest(b)
		seed(b, d)
		fillGrants(b, d, 10_000)
		fillPrefixGrants(b, d, 1000)
		must(b, d.PutGrant(Grant{GrantKey: PrefixKey(agentID, netip.MustParsePrefix("203.0.113.0/24"), 6, 443)}))
		benchPackets(b, d, tcp(agentIP, netip.MustParseAddr("203.0.113.50"), 443).Bytes(), AllowGrant)
	})
	for _, tc := range []struct {
		name   string
		frame  []byte
		reason Reason
	}{
		{"allow", tcp(agentIP, netip.AddrFrom4([4]byte{198, 18, 0x13, 0x88}), 443).Bytes(), AllowRule},
		{"grant", tcp(agentIP, upstream, 443).Bytes(), AllowGrant},
	} {
		b.Run("rules=10k/"+tc.name, func(b *testing.B) {
			d := openTest(b)
			seed(b, d)
			fillGrants(b, d, 10_000)
			must(b, d.InstallRules(bigTables(10_000)))
			benchPackets(b, d, tc.frame, tc.reason)
		})
	}
}

// benchPackets reports the per-packet cost of data on agentPort, after
// checking it gets reason, and returns it in ns.
func benchPackets(b *testing.B, d *Datapath, data []byte, reason Reason) float64 {
	b.Helper()
	before := counterOf(b, d, reason)
	if _, _, _, err := d.TestRun(data, agentPort, 1); err != nil {
		b.Fatal(err)
	}
	if got := counterOf(b, d, reason); got.Packets != before.Packets+1 {
		b.Fatalf("benchmark packet is not counted as %s/%s", reason.Verdict(), reason)
	}
	return benchProgram(b, func(repeat int) error {
		_, _, _, err := d.TestRun(data, agentPort, repeat)
		return err
	})
}

// benchProgram reports the per-run cost of run(repeat) as ns/packet. The
// kernel repeats the run in one syscall, so the wall time of the call
// divided by the repeat count is the per-packet cost; the single syscall
// adds well under 0.1 ns per packet.
func benchProgram(b *testing.B, run func(repeat int) error) float64 {
	b.Helper()
	const repeat = 500_000
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		if err := run(repeat); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
	}
	ns := float64(total.Nanoseconds()) / float64(b.N*repeat)
	b.ReportMetric(ns, "ns/packet")
	return ns
}

// BenchmarkInstallRules measures InstallRules of 10k and 100k entries (six
// per prefix) over an installed set of the same size, as a reload does.
func BenchmarkInstallRules(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			d := openTest(b)
			t := bigTables(n / 6)
			must(b, d.InstallRules(t))
			var total time.Duration
			for b.Loop() {
				start := time.Now()
				must(b, d.InstallRules(t))
				total += time.Since(start)
			}
			b.ReportMetric(total.Seconds()*1000/float64(b.N), "ms/install")
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

// fillPrefixGrants adds n prefix grants (/24 to /28 inside 198.18.0.0/15) for
// random identities.
func fillPrefixGrants(b *testing.B, d *Datapath, n int) {
	b.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < n; i++ {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], 0xc6120000|uint32(i)<<8)
		p := netip.PrefixFrom(netip.AddrFrom4(a), 24+r.IntN(5)).Masked()
		must(b, d.PutGrant(Grant{GrantKey: PrefixKey(1000+r.Uint32N(1<<16), p, 6, uint16(1+r.IntN(65535)))}))
	}
}

// BenchmarkPacketPath measures, in one run, an established packet (one flow
// table lookup after the endpoint's), the first packet of a flow (fences,
// rule tables and grants, then the flow is written) and, as the floor of the
// measure, a minimal TCX program that does one hash lookup. The established
// figure is reported beside the floor as a ratio.
func BenchmarkPacketPath(b *testing.B) {
	d := openTest(b)
	seed(b, d)
	fillGrants(b, d, 10_000)
	must(b, d.InstallRules(bigTables(10_000)))
	syn := tcp(agentIP, upstream, 443)
	ack := syn
	ack.TCPFlags = packet.TCPFlagACK
	if _, _, _, err := d.TestRun(syn.Bytes(), agentPort, 1); err != nil {
		b.Fatal(err)
	}
	var floorNs float64
	b.Run("floor=one-lookup", func(b *testing.B) {
		var objs oneLookupObjects
		if err := loadOneLookupObjects(&objs, nil); err != nil {
			b.Fatal(err)
		}
		defer objs.Close()
		must(b, objs.Ports.Put(uint32(agentPort), uint64(1)))
		floorNs = benchProgram(b, func(repeat int) error {
			_, err := objs.OneLookup.Run(&ebpf.RunOptions{Data: ack.Bytes(), Context: skbContext{IngressIfindex: agentPort}, Repeat: uint32(repeat)})
			return err
		})
	})
	b.Run("established", func(b *testing.B) {
		ns := benchPackets(b, d, ack.Bytes(), AllowEstablished)
		if floorNs > 0 {
			b.ReportMetric(ns/floorNs, "x-floor")
		}
	})
	b.Run("first-packet/grant", func(b *testing.B) { benchPackets(b, d, syn.Bytes(), AllowGrant) })
	rule := tcp(agentIP, netip.AddrFrom4([4]byte{198, 18, 0x13, 0x88}), 443)
	b.Run("first-packet/rule", func(b *testing.B) { benchPackets(b, d, rule.Bytes(), AllowRule) })
}
