package rules

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"outcall.dev/outcall/pkg/api"
	"outcall.dev/outcall/pkg/netrange"
	"outcall.dev/outcall/pkg/ruletable"
)

// simulate is the tables' entry for a packet after the fences, as the
// reference model of the program (ruletable.Model.Entry) finds it.
func simulate(tables *ruletable.Tables, identity uint32, p probe) ruletable.Entry {
	return ruletable.NewModel(tables, nil, nil).Entry(p.packet(identity))
}

// lookup is the entry before the fences (ruletable.Model.Lookup).
func lookup(tables *ruletable.Tables, identity uint32, p probe) ruletable.Entry {
	return ruletable.NewModel(tables, nil, nil).Lookup(p.packet(identity))
}

// agentIdentities gives each packet agent name an identity.
var agentIdentities = map[string]uint32{"a1": 101, "a2": 102, "a3": 103, "a4": 104}

func identityNames() map[uint32]string {
	names := map[uint32]string{}
	for n, id := range agentIdentities {
		names[id] = n
	}
	return names
}

// TestLoweringAgreesWithCEL is the pure-Go half of the differential test:
// random packet-level rule sets, random packets, the CEL verdict against a
// simulation of the datapath lookup.
func TestLoweringAgreesWithCEL(t *testing.T) {
	seed := testSeed(t)
	sets, packets := 400, 200
	if testing.Short() {
		sets = 50
	}
	g := ruleGen{r: rand.New(rand.NewPCG(seed, 0))}
	var cases, inexact, restricted, opened, other int
	for i := range sets {
		files := g.ruleFiles(8)
		set, err := compile(t, files...)
		if err != nil {
			t.Fatalf("seed %d set %d: %v\n%s", seed, i, err, strings.Join(files, "\n"))
		}
		for _, r := range set.Rules() {
			if r.Level != api.LevelPacket {
				t.Fatalf("seed %d: rule %s (%s) should be packet-level", seed, r.ID, r.Condition)
			}
		}
		tables := set.PacketTables().WithAgents(identityNames())
		// The same set without the index: every rule evaluated.
		unindexed := &Set{rules: set.rules, index: &ruleIndex{}}
		for i := range set.rules {
			unindexed.index.always = append(unindexed.index.always, i)
		}
		for range packets {
			p := g.probe()
			want := set.Evaluate(p.context())
			if all := unindexed.Evaluate(p.context()); all.Decision != want.Decision || all.Rule != want.Rule {
				t.Fatalf("seed %d set %d: packet %+v: the index changed the decision: %s by %v, without it %s by %v\n%s",
					seed, i, p, want.Decision, want.Rule, all.Decision, all.Rule, strings.Join(files, "\n"))
			}
			got := simulate(tables, agentIdentities[p.agent], p)
			cases++
			if netrange.IsRestricted(p.dst) {
				restricted++
				if want.Decision == api.DecisionAllow {
					opened++
				}
			}
			if p.other() {
				other++
			}
			if inexactOther(p, conditions(set)...) {
				// An unknown protocol atom: the tables may be more closed
				// than CEL and name another rule, never more open.
				if got.Action == ruletable.Allow && want.Decision != api.DecisionAllow {
					t.Fatalf("seed %d set %d: packet %+v (dst %s): CEL says %s (rule %v), tables allow by %s\n%s",
						seed, i, p, p.dst, want.Decision, want.Rule, set.Rules()[got.Rule].ID, strings.Join(files, "\n"))
				}
				inexact++
				continue
			}
			if (want.Decision == api.DecisionAllow) != (got.Action == ruletable.Allow) {
				t.Fatalf("seed %d set %d: packet %+v (dst %s): CEL says %s (rule %v), tables say %v\n%s",
					seed, i, p, p.dst, want.Decision, want.Rule, got, strings.Join(files, "\n"))
			}
			if want.Rule != nil && got.Action != ruletable.None && set.Rules()[got.Rule].ID != want.Rule.ID {
				t.Fatalf("seed %d set %d: packet %+v: CEL rule %s, tables rule %s\n%s",
					seed, i, p, want.Rule.ID, set.Rules()[got.Rule].ID, strings.Join(files, "\n"))
			}
		}
	}
	t.Logf("seed %d: %d packets agreed (%d to restricted destinations, %d of them opened by a licensed rule; %d of other protocols); %d more closed than CEL on a protocol number",
		seed, cases-inexact, restricted, opened, other, inexact)
}

func conditions(s *Set) []string {
	var out []string
	for _, r := range s.Rules() {
		out = append(out, r.Condition)
	}
	return out
}

func TestLevels(t *testing.T) {
	set := mustCompile(t, "00.yaml", `version: "1"
rules:
  - {id: ip, condition: 'network.ip == "192.0.2.1" && network.port in [80, 443]', action: allow}
  - {id: cidr-agent, condition: 'cidr("10.0.0.0/8").containsIP(network.ip) && agent.name != "x"', action: allow, egress: {mode: proxy, allow_private_ips: true}}
  - {id: constant, condition: 'true && !false', action: block, priority: 200}
  - {id: hostname, condition: 'network.hostname == "github.com"', action: allow}
  - {id: mixed, condition: 'network.ip == "192.0.2.2" || http.host == "a"', action: allow}
  - {id: vague, condition: 'network.ip.startsWith("10.")', action: block, priority: 150}
  - {id: admin, condition: 'http.path.startsWith("/admin")', action: block}
  - {id: dot, condition: 'network.ip == "192.0.2.53" && network.port == 853', action: allow}
`)
	want := map[string]string{"ip": api.LevelPacket, "cidr-agent": api.LevelPacket, "constant": api.LevelPacket,

		"hostname": api.LevelRequest, "mixed": api.LevelRequest, "vague": api.LevelRequest, "admin": api.LevelRequest,
		"dot": api.LevelPacket}
	for _, r := range set.Rules() {
		if r.Level != want[r.ID] {
			t.Errorf("rule %s: level %s, want %s", r.ID, r.Level, want[r.ID])
		}
	}
	w := strings.Join(set.Warnings(), "\n")
	if !strings.Contains(w, `rule "vague"`) {
		t.Errorf("want a warning about the vague block rule, got %q", w)
	}
	if !strings.Contains(w, `rule "dot"`) || !strings.Contains(w, "DNS ports") {
		t.Errorf("want a warning about the rule allowing DNS over TLS, got %q", w)
	}
	tables := set.PacketTables().WithAgents(nil)
	verdict := func(ip string, port uint16) (ruletable.Action, string, bool) {
		e := simulate(tables, 0, probe{dst: netip.MustParseAddr(ip), proto: 6, port: port})
		if e.Action == ruletable.None {
			return e.Action, "", e.Grants
		}
		return e.Action, set.Rules()[e.Rule].ID, e.Grants
	}
	tests := []struct {
		ip     string
		port   uint16
		action ruletable.Action
		rule   string
		grants bool
	}{
		{"192.0.2.1", 443, ruletable.Allow, "ip", false},
		{"10.1.2.3", 22, ruletable.Allow, "cidr-agent", false},
		// mixed never allows a packet, admin is false without a request,
		// vague might hold: it blocks, after request-level allows.
		{"192.0.2.2", 443, ruletable.Block, "vague", true},
		{"172.16.0.1", 22, ruletable.Block, "vague", true},
	}
	for _, tt := range tests {
		action, rule, grants := verdict(tt.ip, tt.port)
		if action != tt.action || rule != tt.rule || grants != tt.grants {
			t.Errorf("%s:%d: %v by %q (grants %v), want %v by %q (grants %v)", tt.ip, tt.port, action, rule, grants, tt.action, tt.rule, tt.grants)
		}
	}
}

// FuzzLowering: for any condition, as an allow and as a block rule in front
// of a catch-all of the other action, the tables decide every probe packet
// as CEL does, or more closed where lowering cannot know (a request-level
// allow never allows; an unknown block blocks).
func FuzzLowering(f *testing.F) {
	g := ruleGen{r: rand.New(rand.NewPCG(3, 4))}
	for range 20 {
		f.Add(g.expr(3))
	}
	for _, s := range []string{
		`network.ip.startsWith("10.")`, `http.path.startsWith("/admin")`,
		`network.port > 1000`, `network.ip == "" || network.port == 0`,
		`network.ip in ["10.1.2.3"] && !(agent.name in [])`, `1/0 == 1 || network.port == 80`,
		`(network.port == 80) == (network.protocol == "tcp")`,
	} {
		f.Add(s)
	}
	probes := make([]probe, 200)
	for i := range probes {
		probes[i] = g.probe()
	}
	f.Fuzz(func(t *testing.T, cond string) {
		if len(cond) > 2048 || strings.ContainsAny(cond, "\n\r") {
			return
		}
		for _, actions := range [][2]string{{"allow", "block"}, {"block", "allow"}} {
			file := fmt.Sprintf("version: \"1\"\nrules:\n  - id: fuzzed\n    condition: |\n      %s\n    action: %s\n  - {id: rest, condition: 'true', action: %s}\n",
				cond, actions[0], actions[1])
			set, err := compile(t, "00.yaml", file)
			if err != nil {
				return // not a valid condition
			}
			tables := set.PacketTables().WithAgents(identityNames())
			fuzzed := set.Rules()[0]
			for _, p := range probes {
				want := set.Evaluate(p.context())
				got := simulate(tables, agentIdentities[p.agent], p).Action == ruletable.Allow
				switch {
				case got == (want.Decision == api.DecisionAllow):
				case !got && fuzzed.Level == api.LevelRequest:
					// More closed than CEL: allowed only by a rule the
					// packet layer cannot judge.
				case !got && inexactOther(p, cond):
					// More closed than CEL: a protocol number the
					// protocol 0 row cannot tell apart.
				default:
					t.Fatalf("%q (%s first): packet %+v to %s: tables allow=%v, CEL %s by %v", cond, actions[0], p, p.dst, got, want.Decision, ruleID(want.Rule))
				}
			}
		}
	})
}
