package datapath

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/cilium/ebpf"

	"outcall.dev/outcall/pkg/ruletable"
)

// The program numbers actions and DNS ports as package ruletable does; this
// does not compile when bpf2go's enums and ruletable's constants disagree.
func _() {
	var x [1]struct{}
	_ = x[int(portIngressRuleActionRULE_NONE)-int(ruletable.None)]
	_ = x[int(portIngressRuleActionRULE_ALLOW)-int(ruletable.Allow)]
	_ = x[int(portIngressRuleActionRULE_BLOCK)-int(ruletable.Block)]
	_ = x[int(portIngressDnsPortDNS_PORT)-int(ruletable.DNSPort)]
	_ = x[int(portIngressDnsPortDOT_PORT)-int(ruletable.DoTPort)]
}

// RuleHit is the packets and bytes a rule decided at the packet layer.
type RuleHit struct {
	RuleID  string
	Action  ruletable.Action
	Packets uint64
	Bytes   uint64
}

// ruleSlots is the number of generations the outer maps hold: the active one
// and the one being built.
const ruleSlots = 2

// ruleGen is one generation of inner maps as this process created them.
type ruleGen struct {
	dsts, table, agents, hits *ebpf.Map
	rules                     []ruletable.Rule
}

func (g *ruleGen) close() {
	for _, m := range []*ebpf.Map{g.dsts, g.table, g.agents, g.hits} {
		if m != nil {
			m.Close()
		}
	}
}

// ruleState is the userspace side of the rule tables.
type ruleState struct {
	mu sync.Mutex
	// inner are the templates of the inner maps, from the collection spec.
	inner struct{ dsts, table, agents, hits *ebpf.MapSpec }
	// live is the generation this process installed last, in liveSlot; nil
	// before its first install. The generations it replaced are folded into
	// totals and closed.
	live     *ruleGen
	liveSlot uint32
	totals   map[ruletable.Rule]RuleHit
}

func (s *ruleState) setTemplates(spec *ebpf.CollectionSpec) error {
	for name, dst := range map[string]**ebpf.MapSpec{
		"rule_dsts": &s.inner.dsts, "rule_table": &s.inner.table,
		"rule_agents": &s.inner.agents, "rule_hits": &s.inner.hits,
	} {
		m := spec.Maps[name]
		if m == nil || m.InnerMap == nil {
			return fmt.Errorf("datapath spec has no inner map template for %s", name)
		}
		*dst = m.InnerMap.Copy()
	}
	s.totals = map[ruletable.Rule]RuleHit{}
	return nil
}

func (s *ruleState) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live != nil {
		s.live.close()
		s.live = nil
	}
}

// rawTables is a validated ruletable.Tables in the program's layout.
type rawTables struct {
	rules               []ruletable.Rule
	dstKeys             []portIngressRuleDstKey
	dstClasses          []uint32
	keys                []portIngressRuleKey
	verdicts            []portIngressRuleVerdict
	identities, classes []uint32
}

// rawOf validates t (ruletable.Tables.Validate) and converts it.
func rawOf(t *ruletable.Tables) (*rawTables, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	r := &rawTables{
		rules:      slices.Clone(t.Rules),
		dstKeys:    make([]portIngressRuleDstKey, 0, len(t.Prefixes)),
		dstClasses: make([]uint32, 0, len(t.Prefixes)),
		keys:       make([]portIngressRuleKey, 0, len(t.Entries)),
		verdicts:   make([]portIngressRuleVerdict, 0, len(t.Entries)),
		identities: make([]uint32, 0, len(t.Agents)),
		classes:    make([]uint32, 0, len(t.Agents)),
	}
	for _, p := range t.Prefixes {
		masked := p.Prefix.Masked()
		r.dstKeys = append(r.dstKeys, portIngressRuleDstKey{Prefixlen: uint32(masked.Bits()), Addr: masked.Addr().As4()})
		r.dstClasses = append(r.dstClasses, p.Class)
	}
	for _, id := range slices.Sorted(maps.Keys(t.Agents)) {
		r.identities = append(r.identities, id)
		r.classes = append(r.classes, t.Agents[id])
	}
	for _, e := range t.Entries {
		k := portIngressRuleKey{AgentClass: e.AgentClass, DstClass: e.DstClass, Dport: e.Port, Proto: e.Proto}
		if e.AnyPort {
			k.AnyPort = 1
		}
		v := portIngressRuleVerdict{Rule: e.Rule, Action: uint8(e.Action), LicensePlen: e.License}
		if e.Grants {
			v.Grants = 1
		}
		r.keys = append(r.keys, k)
		r.verdicts = append(r.verdicts, v)
	}
	return r, nil
}

// InstallRules builds a new generation off to the side (fresh inner maps sized
// to the tables, filled with batch updates), then publishes it with a single
// write to rule_active: a packet sees the old tables or the new ones, never a
// mix. It returns once no packet can still be deciding with the old
// generation, whose hit counts are then final and folded into the totals
// RuleHits reports. Invalid tables are refused with an error naming the bad
// element, and nothing changes. Besides filling the maps (about 50 ms for
// 10k entries, 300 ms for 100k), an install waits for two RCU grace periods.
func (d *Datapath) InstallRules(t *ruletable.Tables) error {
	raw, err := rawOf(t)
	if err != nil {
		return fmt.Errorf("install rule tables: %w", err)
	}
	s := &d.rules
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := d.installLocked(raw); err != nil {
		return fmt.Errorf("install rule tables: %w", err)
	}
	return nil
}

// ClearRules publishes an empty generation: only grants, gateway services and
// established flows pass. outcalld uses it at shutdown, so the pinned program
// it leaves behind enforces the strict policy.
func (d *Datapath) ClearRules() error {
	s := &d.rules
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := d.installLocked(&rawTables{}); err != nil {
		return fmt.Errorf("clear rule tables: %w", err)
	}
	return nil
}

func (d *Datapath) installLocked(raw *rawTables) error {
	s := &d.rules
	gen, err := d.Generation()
	if err != nil {
		return err
	}
	next := gen + 1
	target := next % ruleSlots
	g, err := s.build(raw)
	if err != nil {
		return err
	}
	// The target slot is not in use: packets read the other one. Filling
	// it is four map-in-map updates, each of which waits for an RCU grace
	// period in the kernel; in parallel they wait for about one.
	if err := parallel(
		func() error { return putInner("rule_dsts", d.objs.RuleDsts, target, g.dsts) },
		func() error { return putInner("rule_table", d.objs.RuleTable, target, g.table) },
		func() error { return putInner("rule_agents", d.objs.RuleAgents, target, g.agents) },
		func() error { return putInner("rule_hits", d.objs.RuleHits, target, g.hits) },
	); err != nil {
		g.close()
		return err
	}
	// One 32-bit write: a packet reads the generation, and so its slot,
	// once, and flows of older generations are decided again.
	if err := d.objs.RuleActive.Put(uint32(0), next); err != nil {
		g.close()
		return fmt.Errorf("publish rule generation %d in slot %d: %w", next, target, err)
	}
	old := s.live
	s.live, s.liveSlot = g, target
	// Writing an outer map waits for every program run that started
	// before; after this rewrite of an entry with its own value no packet
	// reads the old slot, so its counts are final and the next install
	// may overwrite it.
	if err := putInner("rule_hits", d.objs.RuleHits, target, g.hits); err != nil {
		d.log.Warn("waiting for packets of the previous rule generation", "err", err)
	}
	if old != nil {
		if err := addHits(s.totals, old); err != nil {
			d.log.Warn("rule hits of the previous generation are lost", "err", err)
		}
		old.close()
	}
	return nil
}

// Generation is the active rule generation; its slot is Generation %
// ruleSlots. Every install counts it up by one, so a flow that an older
// generation allowed is decided again at its next packet.
func (d *Datapath) Generation() (uint32, error) {
	var gen uint32
	if err := d.objs.RuleActive.Lookup(uint32(0), &gen); err != nil {
		return 0, fmt.Errorf("read active rule generation: %w", err)
	}
	return gen, nil
}

// activeSlot is the slot packets use now.
func (d *Datapath) activeSlot() (uint32, error) {
	gen, err := d.Generation()
	return gen % ruleSlots, err
}

func putInner(name string, outer *ebpf.Map, slot uint32, inner *ebpf.Map) error {
	if err := outer.Put(slot, inner); err != nil {
		return fmt.Errorf("put new inner map into slot %d of %s: %w", slot, name, err)
	}
	return nil
}

// parallel runs fns concurrently and joins their errors.
func parallel(fns ...func() error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Go(func() { errs[i] = fn() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// build creates and fills the inner maps of a generation, concurrently: most
// of the time goes to the kernel allocating elements.
func (s *ruleState) build(raw *rawTables) (*ruleGen, error) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count CPUs: %w", err)
	}
	// Every rule index gets its zeroed counters now, so the program only
	// ever looks them up.
	idx := make([]uint32, len(raw.rules))
	for i := range idx {
		idx[i] = uint32(i)
	}
	g := &ruleGen{rules: raw.rules}
	err = parallel(
		func() (err error) {
			g.dsts, err = newInner("rule destinations", s.inner.dsts, raw.dstKeys, raw.dstClasses)
			return err
		},
		func() (err error) {
			g.table, err = newInner("rule table", s.inner.table, raw.keys, raw.verdicts)
			return err
		},
		func() (err error) {
			g.agents, err = newInner("rule agents", s.inner.agents, raw.identities, raw.classes)
			return err
		},
		func() (err error) {
			g.hits, err = newInner("rule hits", s.inner.hits, idx, make([]portIngressCounter, len(idx)*ncpu))
			return err
		},
	)
	if err != nil {
		g.close()
		return nil, err
	}
	return g, nil
}

// newInner creates an inner map of the template's kind sized for keys (the
// kernel wants at least one entry) and fills it in one batch.
func newInner[K, V any](what string, template *ebpf.MapSpec, keys []K, values []V) (*ebpf.Map, error) {
	spec := template.Copy()
	spec.MaxEntries = uint32(max(1, len(keys)))
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create %s map of %d entries: %w", what, spec.MaxEntries, err)
	}
	if len(keys) == 0 {
		return m, nil
	}
	if _, err := m.BatchUpdate(keys, values, nil); err != nil {
		m.Close()
		return nil, fmt.Errorf("fill %s map with %d entries: %w", what, len(keys), err)
	}
	return m, nil
}

// SetRuleAgents replaces the identity → agent class map of the active
// generation (endpoints come and go between reloads). Packets see the old
// map or the new one. The classes must be those of the tables this process
// installed last, so it fails when there are none.
func (d *Datapath) SetRuleAgents(agents map[uint32]uint32) error {
	raw, err := rawOf(&ruletable.Tables{Agents: agents})
	if err != nil {
		return fmt.Errorf("set rule agents: %w", err)
	}
	s := &d.rules
	s.mu.Lock()
	defer s.mu.Unlock()
	active, err := d.activeSlot()
	if err != nil {
		return fmt.Errorf("set rule agents: %w", err)
	}
	g := s.live
	if g == nil || s.liveSlot != active {
		return errors.New("set rule agents: the active rule tables were not installed by this process")
	}
	m, err := newInner("rule agents", s.inner.agents, raw.identities, raw.classes)
	if err != nil {
		return fmt.Errorf("set rule agents: %w", err)
	}
	if err := putInner("rule_agents", d.objs.RuleAgents, active, m); err != nil {
		m.Close()
		return fmt.Errorf("set rule agents: %w", err)
	}
	g.agents.Close()
	g.agents = m
	return nil
}

// RuleHits returns the hits of every rule since Open, summed over CPUs and
// over every generation this Datapath installed: replaced generations are
// folded into running totals, the active one is read now. So the figures are
// monotonic across reloads; a rule ID that returns after a reload continues
// its count. Sorted by rule ID, then action.
func (d *Datapath) RuleHits() ([]RuleHit, error) {
	s := &d.rules
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := make(map[ruletable.Rule]RuleHit, len(s.totals))
	for ref, h := range s.totals {
		sum[ref] = h
	}
	if s.live != nil {
		if err := addHits(sum, s.live); err != nil {
			return nil, fmt.Errorf("read rule hits: %w", err)
		}
	}
	out := make([]RuleHit, 0, len(sum))
	for _, h := range sum {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b RuleHit) int {
		return cmp.Or(cmp.Compare(a.RuleID, b.RuleID), cmp.Compare(a.Action, b.Action))
	})
	return out, nil
}

// addHits adds g's per-CPU counters to sum, by rule.
func addHits(sum map[ruletable.Rule]RuleHit, g *ruleGen) error {
	for _, ref := range g.rules {
		if _, ok := sum[ref]; !ok {
			sum[ref] = RuleHit{RuleID: ref.ID, Action: ref.Action}
		}
	}
	if len(g.rules) == 0 {
		return nil
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("count CPUs: %w", err)
	}
	keys := make([]uint32, len(g.rules))
	vals := make([]portIngressCounter, len(g.rules)*ncpu)
	var cursor ebpf.MapBatchCursor
	n, err := g.hits.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	for i, k := range keys[:n] {
		if int(k) >= len(g.rules) {
			continue
		}
		h := sum[g.rules[k]]
		for _, c := range vals[i*ncpu : (i+1)*ncpu] {
			h.Packets += c.Packets
			h.Bytes += c.Bytes
		}
		sum[g.rules[k]] = h
	}
	return nil
}
