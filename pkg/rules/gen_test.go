package rules

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"

	"outcall.dev/outcall/pkg/api"
)

// ruleGen generates random packet-level rule sets and packets for the
// differential tests. The pools are small on purpose, so that prefixes
// nest, rules overlap and first-match order matters.
type ruleGen struct{ r *rand.Rand }

var (
	genPrefixes = []string{"0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32",
		"192.0.2.0/24", "198.51.100.0/25", "198.51.100.128/25", "203.0.113.7/32", "2001:db8::/32"}
	genIPs = []string{"10.1.2.3", "10.1.2.4", "10.9.9.9", "192.0.2.77", "198.51.100.10",
		"198.51.100.200", "203.0.113.7", "172.16.0.1", "010.1.2.3"}
	genPorts  = []int{22, 80, 443, 8080, 5432, 0, 70000}
	genProtos = []string{"tcp", "udp", "icmp", "TCP"}
	genAgents = []string{"a1", "a2", "a3"}
	// Packets also come from an agent no rule names.
	genPacketAgents = []string{"a1", "a2", "a3", "a4"}
)

func pick[T any](r *rand.Rand, pool []T) T { return pool[r.IntN(len(pool))] }

func (g ruleGen) list(n int, item func() string) string {
	items := make([]string, 1+g.r.IntN(n))
	for i := range items {
		items[i] = item()
	}
	return "[" + strings.Join(items, ", ") + "]"
}

func (g ruleGen) atom() string {
	r := g.r
	quote := func(s string) string { return fmt.Sprintf("%q", s) }
	op := pick(r, []string{"==", "!="})
	switch r.IntN(10) {
	case 0:
		return fmt.Sprintf("network.ip %s %q", op, pick(r, genIPs))
	case 1:
		return "network.ip in " + g.list(3, func() string { return quote(pick(r, genIPs)) })
	case 2, 3:
		return fmt.Sprintf("cidr('%s').containsIP(network.ip)", pick(r, genPrefixes))
	case 4:
		return fmt.Sprintf("network.port %s %d", op, pick(r, genPorts))
	case 5:
		return "network.port in " + g.list(3, func() string { return fmt.Sprint(pick(r, genPorts)) })
	case 6:
		return fmt.Sprintf("network.protocol %s %q", op, pick(r, genProtos))
	case 7:
		return "network.protocol in " + g.list(2, func() string { return quote(pick(r, genProtos)) })
	case 8:
		if r.IntN(2) == 0 {
			return "agent.name in " + g.list(2, func() string { return quote(pick(r, genAgents)) })
		}
		return fmt.Sprintf("agent.name %s %q", op, pick(r, genAgents))
	default:
		return pick(r, []string{"true", "false", `cidr("10.1.0.0/16").containsIP(ip(network.ip))`})
	}
}

func (g ruleGen) expr(depth int) string {
	if depth == 0 || g.r.IntN(3) == 0 {
		return g.atom()
	}
	switch g.r.IntN(3) {
	case 0:
		return "(" + g.expr(depth-1) + " && " + g.expr(depth-1) + ")"
	case 1:
		return "(" + g.expr(depth-1) + " || " + g.expr(depth-1) + ")"
	default:
		return "!(" + g.expr(depth-1) + ")"
	}
}

// ruleFiles returns one or two rule files of packet-level rules.
func (g ruleGen) ruleFiles(maxRules int) []string {
	var files []string
	id := 0
	for f := 0; f < 1+g.r.IntN(2); f++ {
		var b strings.Builder
		b.WriteString("version: \"1\"\nrules:\n")
		for range 1 + g.r.IntN(maxRules) {
			id++
			fmt.Fprintf(&b, "  - id: r%d\n    condition: |\n      %s\n    action: %s\n", id, g.expr(3), pick(g.r, []string{"allow", "block"}))
			if g.r.IntN(4) == 0 {
				fmt.Fprintf(&b, "    priority: %d\n", 90+g.r.IntN(20))
			}
		}
		files = append(files, fmt.Sprintf("%02d.yaml", f*10), b.String())
	}
	return files
}

// probe is a datapath packet and its network context.
type probe struct {
	agent string
	dst   netip.Addr
	proto uint8
	port  uint16
}

func (g ruleGen) probe() probe {
	r := g.r
	p := probe{agent: pick(r, genPacketAgents)}
	switch r.IntN(3) {
	case 0:
		if a, err := netip.ParseAddr(pick(r, genIPs)); err == nil {
			p.dst = a
			break
		}
		fallthrough
	case 1:
		pfx := netip.MustParsePrefix(pick(r, genPrefixes[:9]))
		b := pfx.Addr().As4()
		host := r.Uint32() & (1<<(32-pfx.Bits()) - 1)
		if pfx.Bits() == 0 {
			host = r.Uint32()
		}
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
		p.dst = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	default:
		p.dst = netip.AddrFrom4([4]byte{byte(r.IntN(224)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
	}
	p.proto = pick(r, []uint8{6, 17, 1})
	if p.proto != 1 {
		for p.port == 0 || p.port == 53 || p.port == 853 {
			if r.IntN(2) == 0 {
				p.port = uint16(pick(r, genPorts[:5]))
			} else {
				p.port = uint16(1 + r.IntN(65535))
			}
		}
	}
	return p
}

func (p probe) context() *api.EvaluationContext {
	proto := map[uint8]string{6: "tcp", 17: "udp", 1: "icmp"}[p.proto]
	return &api.EvaluationContext{
		Network: &api.NetworkContext{IP: p.dst.String(), Port: p.port, Protocol: proto},
		Agent:   &api.AgentContext{Name: p.agent},
	}
}
