package rules

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/ruletable"
)

// restrictedCase is a rule file and packets with the verdict both CEL and
// the tables must give. Every case has packets that pass beside the ones
// that must not, so a case cannot pass by blocking everything.
type restrictedCase struct {
	name  string
	rules string // the rules: list
	// warn are substrings the load warnings must contain; nowarn must not
	// appear.
	warn, nowarn []string
	packets      []restrictedPacket
}

type restrictedPacket struct {
	dst   string
	proto uint8
	port  uint16
	allow bool
	rule  string // "" for no rule (default block)
}

const flag = `, egress: {mode: proxy, allow_private_ips: true}`

var restrictedCases = []restrictedCase{
	{
		name:  "true",
		rules: `  - {id: all, condition: 'true', action: allow}`,
		warn:  []string{`rule "all" (00.yaml:3) allows broad destinations`},
		packets: []restrictedPacket{
			{"93.184.216.34", 6, 80, true, "all"}, // control
			{"93.184.216.34", 47, 0, true, "all"}, // control: other protocols too
			{"169.254.169.254", 6, 80, false, ""},
			{"169.254.169.254", 47, 0, false, ""},
			{"10.1.2.3", 6, 22, false, ""},
			{"10.200.0.92", 6, 80, false, ""}, // another agent
			{"172.16.0.1", 17, 443, false, ""},
			{"192.168.1.1", 1, 0, false, ""},
			{"127.0.0.1", 6, 8080, false, ""},
			{"100.64.0.1", 6, 80, false, ""},
			{"224.0.0.251", 17, 5353, false, ""},
			{"255.255.255.255", 17, 67, false, ""},
			{"0.0.0.0", 6, 80, false, ""},
		},
	},
	{
		name:  "0.0.0.0/0 port 80",
		rules: `  - {id: web, condition: 'cidr("0.0.0.0/0").containsIP(network.ip) && network.port == 80', action: allow}`,
		warn:  []string{`rule "web" (00.yaml:3) allows broad destinations`},
		packets: []restrictedPacket{
			{"93.184.216.34", 6, 80, true, "web"}, // control
			{"93.184.216.34", 6, 81, false, ""},
			{"169.254.169.254", 6, 80, false, ""},
			{"10.1.2.3", 6, 80, false, ""},
			{"127.0.0.1", 6, 80, false, ""},
			{"255.255.255.255", 17, 80, false, ""},
		},
	},
	{
		name:  "0.0.0.0/0 with the flag is still broad",
		rules: `  - {id: web, condition: 'cidr("0.0.0.0/0").containsIP(network.ip)', action: allow` + flag + `}`,
		warn:  []string{"allows broad destinations", "names no prefix inside a restricted range"},
		packets: []restrictedPacket{
			{"198.51.100.10", 6, 443, true, "web"}, // control
			{"169.254.169.254", 6, 80, false, ""},
			{"10.1.2.3", 6, 80, false, ""},
		},
	},
	{
		name: "10.0.0.0/8 without the flag",
		rules: `  - {id: corp, condition: 'cidr("10.0.0.0/8").containsIP(network.ip)', action: allow}
  - {id: pub, condition: 'cidr("198.51.100.0/24").containsIP(network.ip)', action: allow}`,
		warn:   []string{`rule "corp" (00.yaml:3) names restricted destinations (10.0.0.0/8) but does not set egress.allow_private_ips`},
		nowarn: []string{"broad", `"pub"`},
		packets: []restrictedPacket{
			{"198.51.100.10", 6, 22, true, "pub"}, // control
			{"10.1.2.3", 6, 22, false, ""},
			{"10.1.2.3", 132, 0, false, ""},
		},
	},
	{
		name:   "10.0.0.0/8 with the flag",
		rules:  `  - {id: corp, condition: 'cidr("10.0.0.0/8").containsIP(network.ip)', action: allow` + flag + `}`,
		nowarn: []string{"broad", "names restricted", "names no prefix"},
		packets: []restrictedPacket{
			{"10.1.2.3", 6, 22, true, "corp"},
			{"10.255.0.1", 4, 0, true, "corp"},
			{"172.16.0.1", 6, 22, false, ""},
			{"169.254.169.254", 6, 80, false, ""},
		},
	},
	{
		name:   "metadata address licensed",
		rules:  `  - {id: meta, condition: 'network.ip == "169.254.169.254" && network.port == 80', action: allow` + flag + `}`,
		nowarn: []string{"broad", "names"},
		packets: []restrictedPacket{
			{"169.254.169.254", 6, 80, true, "meta"},
			{"169.254.169.253", 6, 80, false, ""},
			{"169.254.169.254", 6, 81, false, ""},
		},
	},
	{
		name: "a licensed rule after an unlicensed broad one",
		rules: `  - {id: all, condition: 'true', action: allow}
  - {id: meta, condition: 'cidr("169.254.169.254/32").containsIP(network.ip)', action: allow` + flag + `}
  - {id: no-corp, condition: 'cidr("10.0.0.0/8").containsIP(network.ip)', action: block}
  - {id: lab, condition: 'cidr("10.1.0.0/16").containsIP(network.ip)', action: allow` + flag + `}`,
		warn: []string{`rule "all" (00.yaml:3) allows broad`},
		packets: []restrictedPacket{
			{"93.184.216.34", 6, 443, true, "all"},
			{"169.254.169.254", 6, 80, true, "meta"},
			{"169.254.169.254", 255, 0, true, "meta"},
			{"169.254.0.1", 6, 80, false, ""},
			{"10.1.2.3", 6, 22, false, "no-corp"}, // the block comes first
			{"127.0.0.1", 6, 22, false, ""},
		},
	},
	{
		name: "a negated prefix is broad",
		rules: `  - {id: not-corp, condition: '!cidr("10.0.0.0/8").containsIP(network.ip)', action: allow}
  - {id: corp, condition: 'cidr("10.0.0.0/8").containsIP(network.ip)', action: allow` + flag + `}`,
		warn: []string{`rule "not-corp" (00.yaml:3) allows broad`},
		packets: []restrictedPacket{
			{"93.184.216.34", 6, 443, true, "not-corp"},
			{"10.9.9.9", 6, 443, true, "corp"},
			{"169.254.169.254", 6, 80, false, ""},
		},
	},
	{
		// Defect 8: a block rule blocks every protocol it matches.
		name: "early block covers every protocol",
		rules: `  - {id: no-meta, condition: 'cidr("169.254.0.0/16").containsIP(network.ip) || cidr("203.0.113.0/24").containsIP(network.ip)', action: block, priority: 1}
  - {id: meta, condition: 'cidr("169.254.0.0/16").containsIP(network.ip) || network.ip != ""', action: allow` + flag + `}`,
		packets: []restrictedPacket{
			{"93.184.216.34", 47, 0, true, "meta"}, // controls
			{"93.184.216.34", 132, 0, true, "meta"},
			{"93.184.216.34", 4, 0, true, "meta"},
			{"93.184.216.34", 255, 0, true, "meta"},
			{"93.184.216.34", 6, 80, true, "meta"},
			{"169.254.169.254", 6, 80, false, "no-meta"},
			{"169.254.169.254", 47, 0, false, "no-meta"},
			{"169.254.169.254", 132, 0, false, "no-meta"},
			{"169.254.169.254", 4, 0, false, "no-meta"},
			{"169.254.169.254", 255, 0, false, "no-meta"},
			{"203.0.113.7", 47, 0, false, "no-meta"},
			{"203.0.113.7", 0, 0, false, "no-meta"},
		},
	},
	{
		name: "protocol atoms and other protocols",
		rules: `  - {id: not-tcp, condition: 'network.protocol != "tcp" && cidr("198.51.100.0/24").containsIP(network.ip)', action: allow}
  - {id: tcp, condition: 'network.protocol == "tcp"', action: allow}`,
		packets: []restrictedPacket{
			{"198.51.100.10", 47, 0, true, "not-tcp"},
			{"198.51.100.10", 17, 9000, true, "not-tcp"},
			{"93.184.216.34", 6, 80, true, "tcp"},
			{"93.184.216.34", 47, 0, false, ""},
		},
	},
}

func compileCase(t *testing.T, c restrictedCase) *Set {
	t.Helper()
	set := mustCompile(t, "00.yaml", "version: \"1\"\nrules:\n"+c.rules+"\n")
	w := strings.Join(set.Warnings(), "\n")
	for _, s := range c.warn {
		if !strings.Contains(w, s) {
			t.Errorf("warnings %q lack %q", w, s)
		}
	}
	for _, s := range c.nowarn {
		if strings.Contains(w, s) {
			t.Errorf("warnings %q have %q", w, s)
		}
	}
	return set
}

func (p restrictedPacket) probe() probe {
	return probe{agent: "a1", dst: netip.MustParseAddr(p.dst), proto: p.proto, port: p.port}
}

func (p restrictedPacket) String() string {
	return fmt.Sprintf("%s %s/%d", p.dst, ProtocolName(p.proto), p.port)
}

// TestRestrictedDestinations: Evaluate and the tables (simulated with the
// datapath's fences) agree on restricted destinations, rule by rule.
func TestRestrictedDestinations(t *testing.T) {
	for _, c := range restrictedCases {
		t.Run(c.name, func(t *testing.T) {
			set := compileCase(t, c)
			tables := set.PacketTables().WithAgents(identityNames())
			for _, p := range c.packets {
				out := set.Evaluate(p.probe().context())
				if (out.Decision == api.DecisionAllow) != p.allow || ruleID(out.Rule) != cmpRule(p.rule) {
					t.Errorf("%s: CEL %s by %s, want allow=%v by %s", p, out.Decision, ruleID(out.Rule), p.allow, cmpRule(p.rule))
				}
				e := simulate(tables, agentIdentities["a1"], p.probe())
				got := "none"
				if e.Action != ruletable.None {
					got = set.Rules()[e.Rule].ID
				}
				if (e.Action == ruletable.Allow) != p.allow || got != cmpRule(p.rule) {
					t.Errorf("%s: tables %v (license %d) by %s, want allow=%v by %s", p, e.Action, e.License, got, p.allow, cmpRule(p.rule))
				}
			}
		})
	}
}

func cmpRule(id string) string {
	if id == "" {
		return "none"
	}
	return id
}

// TestLicenses: the license of an allowing entry is the longest prefix the
// rule names around the class, only with the flag; the datapath's fences
// check it again.
func TestLicenses(t *testing.T) {
	set := mustCompile(t, "00.yaml", `version: "1"
rules:
  - {id: meta, condition: 'cidr("169.254.0.0/16").containsIP(network.ip) && network.ip == "169.254.169.254"', action: allow`+flag+`}
  - {id: pub, condition: 'cidr("198.51.100.0/24").containsIP(network.ip)', action: allow`+flag+`}
  - {id: web, condition: 'network.port == 80', action: allow}
`)
	tables := set.PacketTables().WithAgents(nil)
	for _, tt := range []struct {
		dst     string
		port    uint16
		rule    string
		license uint8
	}{
		{"169.254.169.254", 443, "meta", 32},
		{"198.51.100.1", 443, "pub", 24}, // unrestricted: the license serves the daemon's own fences
		{"93.184.216.34", 80, "web", 0},
	} {
		e := lookup(tables, 0, probe{dst: netip.MustParseAddr(tt.dst), proto: 6, port: tt.port})
		if e.Action != ruletable.Allow || set.Rules()[e.Rule].ID != tt.rule || e.License != tt.license {
			t.Errorf("%s:%d: %v by rule %d, license %d; want allow by %s, license %d", tt.dst, tt.port, e.Action, e.Rule, e.License, tt.rule, tt.license)
		}
	}
}

// TestEvaluateRestricted covers what the packet layer never sees: other
// layers' contexts (no destination, IPv4-mapped addresses, request-level
// rules).
func TestEvaluateRestricted(t *testing.T) {
	set := mustCompile(t, "00.yaml", `version: "1"
rules:
  - {id: meta-dns, condition: 'dns.query == "metadata.internal"', action: allow`+flag+`}
  - {id: corp-host, condition: 'network.hostname == "git.corp" && cidr("10.0.0.0/8").containsIP(network.ip)', action: allow`+flag+`}
  - {id: any-host, condition: 'network.hostname != ""', action: allow}
  - {id: docker, condition: 'docker.image == "alpine"', action: allow}
`)
	if w := strings.Join(set.Warnings(), "\n"); !strings.Contains(w, `rule "meta-dns" (00.yaml:3) sets egress.allow_private_ips but names no prefix`) {
		t.Errorf("want a warning about meta-dns, got %q", w)
	}
	netCtx := func(host, ip string) *api.EvaluationContext {
		return &api.EvaluationContext{Network: &api.NetworkContext{Hostname: str(host), IP: ip, Port: 443, Protocol: "tcp"}}
	}
	for _, tt := range []struct {
		name  string
		ctx   *api.EvaluationContext
		allow bool
		rule  string
	}{
		{"dns to a public address", &api.EvaluationContext{DNS: &api.DNSContext{Query: "metadata.internal"}, Network: &api.NetworkContext{IP: "93.184.216.34"}}, true, "meta-dns"},
		{"dns to the metadata address", &api.EvaluationContext{DNS: &api.DNSContext{Query: "metadata.internal"}, Network: &api.NetworkContext{IP: "169.254.169.254"}}, false, "none"},
		{"named private address", netCtx("git.corp", "10.1.2.3"), true, "corp-host"},
		{"private address not named", netCtx("git.corp", "192.168.1.1"), false, "none"},
		{"public address", netCtx("example.com", "93.184.216.34"), true, "any-host"},
		{"mapped public address", netCtx("example.com", "::ffff:93.184.216.34"), true, "any-host"},
		{"mapped metadata address", netCtx("example.com", "::ffff:169.254.169.254"), false, "none"},
		{"no destination", &api.EvaluationContext{Docker: &api.DockerContext{Image: "alpine"}}, true, "docker"},
	} {
		out := set.Evaluate(tt.ctx)
		if (out.Decision == api.DecisionAllow) != tt.allow || ruleID(out.Rule) != tt.rule {
			t.Errorf("%s: %s by %s, want allow=%v by %s", tt.name, out.Decision, ruleID(out.Rule), tt.allow, tt.rule)
		}
	}
}

func TestProtocolName(t *testing.T) {
	for proto, want := range map[uint8]string{6: "tcp", 17: "udp", 1: "icmp", 47: "47", 132: "132", 0: "0", 255: "255"} {
		if got := ProtocolName(proto); got != want {
			t.Errorf("ProtocolName(%d) = %q, want %q", proto, got, want)
		}
	}
	for s, want := range map[string]bool{"47": true, "0": true, "255": true, "6": false, "17": false, "1": false, "047": false, "256": false, "gre": false, "": false} {
		if otherProtocol(s) != want {
			t.Errorf("otherProtocol(%q) = %v, want %v", s, !want, want)
		}
	}
}

// TestOtherProtocolNumbers: a comparison with a protocol number is unknown
// for the protocol 0 row, where lowering is more closed than CEL, never
// more open.
func TestOtherProtocolNumbers(t *testing.T) {
	set := mustCompile(t, "00.yaml", `version: "1"
rules:
  - {id: no-gre, condition: 'network.protocol == "47"', action: block}
  - {id: sctp, condition: 'network.protocol == "132"', action: allow}
  - {id: all, condition: 'cidr("198.51.100.0/24").containsIP(network.ip)', action: allow}
`)
	tables := set.PacketTables().WithAgents(nil)
	dst := netip.MustParseAddr("198.51.100.10")
	for _, tt := range []struct {
		proto      uint8
		cel        string // the rule CEL picks
		tables     string // the rule the tables pick
		celAllow   bool
		tableAllow bool
	}{
		{6, "all", "all", true, true}, // control
		{47, "no-gre", "no-gre", false, false},
		{132, "sctp", "no-gre", true, false}, // fail closed
		{255, "all", "no-gre", true, false},
	} {
		p := probe{agent: "a1", dst: dst, proto: tt.proto}
		out := set.Evaluate(p.context())
		if (out.Decision == api.DecisionAllow) != tt.celAllow || ruleID(out.Rule) != tt.cel {
			t.Errorf("proto %d: CEL %s by %s, want %s", tt.proto, out.Decision, ruleID(out.Rule), tt.cel)
		}
		e := simulate(tables, 0, p)
		if (e.Action == ruletable.Allow) != tt.tableAllow || set.Rules()[e.Rule].ID != tt.tables {
			t.Errorf("proto %d: tables %v by %d, want %s", tt.proto, e.Action, e.Rule, tt.tables)
		}
	}
}
