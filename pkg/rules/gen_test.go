package rules

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/ruletable"
)

// ruleGen generates random packet-level rule sets and packets for the
// differential tests. The pools are small on purpose, so that prefixes
// nest, rules overlap and first-match order matters.
type ruleGen struct {
	r *rand.Rand
	// numeric lets protocol atoms name other protocols by number, which
	// makes lowering inexact for them (see inexactOther); ruleFiles sets it
	// for one set in four, so that most sets check the protocol 0 row
	// exactly.
	numeric bool
	// request lets conditions read request-level fields (dns.*, http.*,
	// network.hostname), alone or mixed with packet fields; ruleFiles sets
	// it for half the sets.
	request bool
}

var (
	// IPv4 prefixes first: probes pick addresses inside them. Restricted
	// ranges (10/8, 169.254/16, 127/8, 240/4) and prefixes inside and
	// around them are in the pool.
	genPrefixes = []string{"0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32",
		"192.0.2.0/24", "198.51.100.0/25", "198.51.100.128/25", "203.0.113.7/32",
		"169.254.0.0/16", "169.254.169.254/32", "127.0.0.0/8", "128.0.0.0/1", "255.255.255.255/32",
		"2001:db8::/32"}
	genIPs = []string{"10.1.2.3", "10.1.2.4", "10.9.9.9", "192.0.2.77", "198.51.100.10",
		"198.51.100.200", "203.0.113.7", "172.16.0.1", "010.1.2.3",
		"169.254.169.254", "127.0.0.1", "255.255.255.255", "100.64.0.1", "224.0.0.251"}
	genPorts = []int{22, 80, 443, 8080, 5432, 0, 70000}
	// "47" and "132" name other protocols (GRE, SCTP), which share the
	// datapath's protocol 0 row: see inexactOther. "gre" names none.
	genProtos        = []string{"tcp", "udp", "icmp", "TCP", "gre"}
	genNumericProtos = []string{"tcp", "udp", "icmp", "TCP", "gre", "47", "132"}
	// Packets use these protocols: TCP, UDP, ICMP and, through the
	// protocol 0 row, IP-in-IP, GRE, SCTP, 255 and 0.
	genPacketProtos = []uint8{6, 17, 1, 6, 17, 4, 47, 132, 255, 0}
	genAgents       = []string{"a1", "a2", "a3"}
	// Request-level atoms: for a packet, whose context has no DNS or HTTP
	// part and no hostname, some hold ("" comparisons) and some do not.
	genRequestAtoms = []string{`dns.query == "pypi.org"`, `dns.query == ""`, `http.host == "api.example.com"`,
		`http.method == ""`, `network.hostname.endsWith(".org")`, `network.hostname == ""`,
		`http.path.startsWith("/admin")`, `dns.query in ["pypi.org", "github.com"]`}
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
	if g.request && r.IntN(4) == 0 {
		return pick(r, genRequestAtoms)
	}
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
	case 6, 7:
		protos := genProtos
		if g.numeric {
			protos = genNumericProtos
		}
		if r.IntN(2) == 0 {
			return fmt.Sprintf("network.protocol %s %q", op, pick(r, protos))
		}
		return "network.protocol in " + g.list(2, func() string { return quote(pick(r, protos)) })
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
	g.numeric = g.r.IntN(4) == 0
	g.request = g.r.IntN(2) == 0
	for f := 0; f < 1+g.r.IntN(2); f++ {
		var b strings.Builder
		b.WriteString("version: \"1\"\nrules:\n")
		for range 1 + g.r.IntN(maxRules) {
			id++
			action := pick(g.r, []string{"allow", "block"})
			fmt.Fprintf(&b, "  - id: r%d\n    condition: |\n      %s\n    action: %s\n", id, g.expr(3), action)
			if action == "allow" && g.r.IntN(2) == 0 {
				b.WriteString("    egress: {mode: proxy, allow_private_ips: true}\n")
			}
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
	// sport is the TCP or UDP source port; 0 means 40000.
	sport uint16
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
		pfx := netip.MustParsePrefix(pick(r, genPrefixes[:len(genPrefixes)-1]))
		b := pfx.Addr().As4()
		host := r.Uint32() & (1<<(32-pfx.Bits()) - 1)
		if pfx.Bits() == 0 {
			host = r.Uint32()
		}
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
		p.dst = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	default:
		p.dst = netip.AddrFrom4([4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
	}
	p.proto = pick(r, genPacketProtos)
	if p.proto == 6 || p.proto == 17 {
		for p.port == 0 || p.port == ruletable.DNSPort || p.port == ruletable.DoTPort {
			if r.IntN(2) == 0 {
				p.port = uint16(pick(r, genPorts[:5]))
			} else {
				p.port = uint16(1 + r.IntN(65535))
			}
		}
	}
	return p
}

func (p probe) String() string {
	return fmt.Sprintf("%s to %s proto %d port %d", p.agent, p.dst, p.proto, p.port)
}

// readsRequest reports whether a generated condition reads a request-level
// field, which makes its rule request-level.
func readsRequest(cond string) bool {
	return strings.Contains(cond, "dns.") || strings.Contains(cond, "http.") || strings.Contains(cond, "network.hostname")
}

// grants returns up to n random grants to the packet agents: exact,
// port-less and protocol-less ones, some with AllowPrivate, some to
// restricted destinations, some expired.
func (g ruleGen) grants(n int) []ruletable.Grant {
	r := g.r
	out := make([]ruletable.Grant, 0, n)
	for range r.IntN(n + 1) {
		p := g.probe()
		gr := ruletable.Grant{Identity: agentIdentities[p.agent], Dst: p.dst, AllowPrivate: r.IntN(2) == 0, Expired: r.IntN(6) == 0}
		switch r.IntN(3) {
		case 0: // every protocol
		case 1: // every port of a protocol
			gr.Proto = pick(r, genPacketProtos[:5])
		default:
			gr.Proto, gr.Port = p.proto, p.port
		}
		// One grant per key, as the datapath's map holds them.
		if !slices.ContainsFunc(out, func(o ruletable.Grant) bool {
			return o.Identity == gr.Identity && o.Dst == gr.Dst && o.Proto == gr.Proto && o.Port == gr.Port
		}) {
			out = append(out, gr)
		}
	}
	return out
}

// grantProbe is a packet towards one of grants: its agent, address, and
// protocol and port where the grant names them.
func (g ruleGen) grantProbe(grants []ruletable.Grant) probe {
	p := g.probe()
	if len(grants) == 0 || g.r.IntN(2) == 0 {
		return p
	}
	gr := pick(g.r, grants)
	for name, id := range agentIdentities {
		if id == gr.Identity {
			p.agent = name
		}
	}
	p.dst = gr.Dst
	if gr.Proto != 0 && gr.Proto != p.proto {
		p.proto, p.port = gr.Proto, 0
		if p.proto == 6 || p.proto == 17 {
			p.port = uint16(pick(g.r, genPorts[:5]))
		}
	}
	if gr.Port != 0 && g.r.IntN(4) != 0 {
		p.port = gr.Port
	}
	return p
}

// other reports whether p goes through the datapath's protocol 0 row.
func (p probe) other() bool { return p.proto != 6 && p.proto != 17 && p.proto != 1 }

// packet is p as the reference model of the datapath reads it.
func (p probe) packet(identity uint32) ruletable.Packet {
	return ruletable.Packet{Identity: identity, Dst: p.dst, Proto: p.proto, Port: p.port}
}

func (p probe) context() *api.EvaluationContext {
	return &api.EvaluationContext{
		Network: &api.NetworkContext{IP: p.dst.String(), Port: p.port, Protocol: ProtocolName(p.proto)},
		Agent:   &api.AgentContext{Name: p.agent},
	}
}

// quotedNumber finds string literals that may be network.protocol of an
// other protocol.
var quotedNumber = regexp.MustCompile(`["'](\d{1,3})["']`)

// inexactOther reports whether lowering may be more closed than CEL for a
// packet of an other protocol under rules with these conditions: a
// comparison of network.protocol with "47" is unknown for the protocol 0
// row (it holds for GRE, not for SCTP), so a block rule with one blocks all
// of the row and an allow rule with one allows none of it.
func inexactOther(p probe, conds ...string) bool {
	if !p.other() {
		return false
	}
	for _, c := range conds {
		for _, m := range quotedNumber.FindAllStringSubmatch(c, -1) {
			if otherProtocol(m[1]) {
				return true
			}
		}
	}
	return false
}

// testSeed is the seed of a randomised test: $OUTCALL_RULES_SEED when set
// (to replay a failure), else a random one. It is logged either way.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	if s := os.Getenv("OUTCALL_RULES_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("OUTCALL_RULES_SEED=%q: %v", s, err)
		}
		t.Logf("seed %d (from OUTCALL_RULES_SEED)", seed)
		return seed
	}
	seed := rand.Uint64()
	t.Logf("seed %d (replay with OUTCALL_RULES_SEED=%d)", seed, seed)
	return seed
}
