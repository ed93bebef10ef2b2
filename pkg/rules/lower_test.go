package rules

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
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

// reference is the ground truth of the differential tests: what the packet
// layer must decide for a packet that opens a connection, from CEL and the
// grants alone. CEL evaluates the packet's network context over the rules
// the packet layer judges: a request-level allow rule never allows a packet
// (it allows DNS answers, and the grants they leave stand for it). A grant
// (Port 0: every port, Proto 0: every protocol) opens what no rule decides,
// and what a block rule decides when a request-level allow rule comes first
// (the grant may be that rule's answer); a restricted destination only with
// AllowPrivate. An expired grant opens nothing.
type reference struct {
	set, packetSet *Set
	index          map[*Rule]int
	// requestAllowBefore[i]: a request-level allow rule precedes rule i.
	requestAllowBefore []bool
	grants             []ruletable.Grant
}

func newReference(set *Set, grants []ruletable.Grant) *reference {
	ref := &reference{set: set, index: map[*Rule]int{}, requestAllowBefore: make([]bool, len(set.rules)), grants: grants}
	var judged []*Rule
	before := false
	for i, r := range set.rules {
		ref.index[r] = i
		ref.requestAllowBefore[i] = before
		if r.Action == api.ActionAllow && r.Level == api.LevelRequest {
			before = true
			continue
		}
		judged = append(judged, r)
	}
	ref.packetSet = &Set{rules: judged, index: newRuleIndex(judged)}
	return ref
}

// grant is 1 for a live grant that opens p, -1 when only expired ones
// would, 0 for none.
func (ref *reference) grant(p probe, restricted bool) int {
	state := 0
	for _, g := range ref.grants {
		if g.Identity != agentIdentities[p.agent] || g.Dst != p.dst ||
			(g.Proto != 0 && g.Proto != p.proto) || (g.Port != 0 && g.Port != p.port) ||
			(restricted && !g.AllowPrivate) {
			continue
		}
		if !g.Expired {
			return 1
		}
		state = -1
	}
	return state
}

func (ref *reference) decide(p probe) ruletable.Verdict {
	restricted := netrange.IsRestricted(p.dst)
	out := ref.packetSet.Evaluate(p.context())
	if out.Decision == api.DecisionAllow {
		return ruletable.Verdict{Allowed: true, Reason: ruletable.AllowRule, Rule: ref.index[out.Rule]}
	}
	g := ref.grant(p, restricted)
	switch {
	case out.Rule != nil && ref.requestAllowBefore[ref.index[out.Rule]] && g > 0:
		return ruletable.Verdict{Allowed: true, Reason: ruletable.AllowGrant, Rule: -1}
	case out.Rule != nil:
		return ruletable.Verdict{Reason: ruletable.DropRule, Rule: ref.index[out.Rule]}
	case g > 0:
		return ruletable.Verdict{Allowed: true, Reason: ruletable.AllowGrant, Rule: -1}
	case restricted && g == 0:
		return ruletable.Verdict{Reason: ruletable.DropRestricted, Rule: -1}
	case g < 0:
		return ruletable.Verdict{Reason: ruletable.DropExpired, Rule: -1}
	}
	return ruletable.Verdict{Reason: ruletable.DropNoRule, Rule: -1}
}

// verdictString names v's rule by ID.
func verdictString(set *Set, v ruletable.Verdict) string {
	verdict := "drop"
	if v.Allowed {
		verdict = "allow"
	}
	if v.Rule < 0 {
		return verdict + "/" + string(v.Reason)
	}
	return fmt.Sprintf("%s/%s by %s", verdict, v.Reason, set.rules[v.Rule].ID)
}

// diffStats counts what a differential test covered.
type diffStats struct {
	cases, inexact, restricted, opened, other, requestRules, grants int
	reasons                                                         map[string]int
}

// add counts a packet; the reasons are those of the exact ones.
func (st *diffStats) add(p probe, want ruletable.Verdict, exact bool) {
	if st.reasons == nil {
		st.reasons = map[string]int{}
	}
	st.cases++
	if !exact {
		st.inexact++
	}
	if netrange.IsRestricted(p.dst) {
		st.restricted++
		if want.Allowed {
			st.opened++
		}
	}
	if p.other() {
		st.other++
	}
	r := string(want.Reason)
	if want.Reason == ruletable.AllowRule {
		r = map[bool]string{true: "allow_rule", false: "drop_rule"}[want.Allowed]
	}
	if exact {
		st.reasons[r]++
	}
}

func (st *diffStats) String() string {
	var reasons []string
	for _, r := range slices.Sorted(maps.Keys(st.reasons)) {
		reasons = append(reasons, fmt.Sprintf("%s %d", r, st.reasons[r]))
	}
	return fmt.Sprintf("%d packets agreed on verdict, reason and rule (%s; %d to restricted destinations, %d of them opened; %d of other protocols) under %d request-level rules and %d grants; %d more closed than CEL on a protocol number",
		st.cases-st.inexact, strings.Join(reasons, ", "), st.restricted, st.opened, st.other, st.requestRules, st.grants, st.inexact)
}

// checkVerdict compares got, the packet layer's verdict, with the
// reference's want. Where lowering is inexact (a protocol number the
// protocol 0 row cannot tell apart) got may be more closed than want and
// name another rule, never more open. It reports whether p was exact.
func checkVerdict(t *testing.T, ctx string, set *Set, p probe, got, want ruletable.Verdict) bool {
	t.Helper()
	if inexactOther(p, conditions(set)...) {
		if got.Allowed && !want.Allowed {
			t.Fatalf("%s: packet %s: reference %s, packet layer more open: %s",
				ctx, p, verdictString(set, want), verdictString(set, got))
		}
		return false
	}
	if got != want {
		t.Fatalf("%s: packet %s: reference %s, packet layer %s",
			ctx, p, verdictString(set, want), verdictString(set, got))
	}
	return true
}

// setContext names a generated set in failures: the seed that replays it and
// its rule files and grants.
func setContext(seed uint64, i int, files []string, grants []ruletable.Grant) string {
	return fmt.Sprintf("seed %d (replay with OUTCALL_RULES_SEED=%d) set %d, grants %+v, rules:\n%s", seed, seed, i, grants, strings.Join(files, "\n"))
}

// TestLoweringAgreesWithCEL is the pure-Go half of the differential test:
// random rule sets (packet-level, request-level and mixed), random grants,
// random packets; the reference (CEL and the grants) against the reference
// model of the program (ruletable.Model) on the lowered tables: verdict,
// reason and rule.
func TestLoweringAgreesWithCEL(t *testing.T) {
	seed := testSeed(t)
	sets, packets := 400, 200
	if testing.Short() {
		sets = 50
	}
	g := ruleGen{r: rand.New(rand.NewPCG(seed, 0))}
	var st diffStats
	for i := range sets {
		files := g.ruleFiles(8)
		set, err := compile(t, files...)
		if err != nil {
			t.Fatalf("seed %d set %d: %v\n%s", seed, i, err, strings.Join(files, "\n"))
		}
		for _, r := range set.Rules() {
			if want := map[bool]string{true: api.LevelRequest, false: api.LevelPacket}[readsRequest(r.Condition)]; r.Level != want {
				t.Fatalf("seed %d: rule %s (%s) is %s-level, want %s", seed, r.ID, r.Condition, r.Level, want)
			}
			if r.Level == api.LevelRequest {
				st.requestRules++
			}
		}
		grants := g.grants(6)
		st.grants += len(grants)
		ctx := setContext(seed, i, files, grants)
		model := ruletable.NewModel(set.PacketTables().WithAgents(identityNames()), nil, grants)
		ref := newReference(set, grants)
		// The same set without the index: every rule evaluated.
		unindexed := &Set{rules: set.rules, index: &ruleIndex{}}
		for i := range set.rules {
			unindexed.index.always = append(unindexed.index.always, i)
		}
		for range packets {
			p := g.grantProbe(grants)
			indexed := set.Evaluate(p.context())
			if all := unindexed.Evaluate(p.context()); all.Decision != indexed.Decision || all.Rule != indexed.Rule {
				t.Fatalf("%s: packet %+v: the index changed the decision: %s by %v, without it %s by %v",
					ctx, p, indexed.Decision, indexed.Rule, all.Decision, all.Rule)
			}
			want := ref.decide(p)
			st.add(p, want, checkVerdict(t, ctx, set, p, model.Decide(p.packet(agentIdentities[p.agent])), want))
		}
	}
	t.Logf("seed %d: %s", seed, &st)
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
