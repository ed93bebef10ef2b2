// Package nft keeps Outcall's nftables floor: the fail-closed tables underneath
// the eBPF datapath. A packet or frame from a container port that the datapath
// did not mark is dropped here, so a port whose program is missing, detached or
// crashed is dead, never open (DESIGN.md section 2). Frames switched between
// two container ports are dropped whatever they carry, since every frame the
// datapath allows goes to the gateway, and ARP reaching the host from an
// Outcall bridge without the mark is dropped, so a port the daemon has not
// taken over cannot poison the host's neighbour cache.
//
// The floor talks nf_tables netlink directly, so no nft binary is needed at run
// time, and every change is one kernel transaction.
package nft

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"outcall.dev/outcall/pkg/api"
)

// permissionMessage is what operators see without CAP_NET_ADMIN. It is an
// interface (S001-EC-003), kept word for word although no nft binary runs.
const permissionMessage = "permission denied running nft — are you root or have CAP_NET_ADMIN?"

// Error is a failed nftables operation. It is the Nftables variant of the
// bridge errors (S001-FR-019), so callers can tell the floor's failures apart.
type Error struct {
	Op  string
	Err error
}

// Error gives the spec's fixed guidance for permission errors, because the
// kernel's "operation not permitted" does not tell an operator what to fix.
func (e *Error) Error() string {
	if errors.Is(e.Err, unix.EPERM) || errors.Is(e.Err, unix.EACCES) {
		return permissionMessage
	}
	return fmt.Sprintf("nftables operation failed: %s: %v", e.Op, e.Err)
}

// Unwrap lets callers match the underlying errno.
func (e *Error) Unwrap() error { return e.Err }

// Config is the whole desired state of the floor. Apply rebuilds the tables
// from it, so anything not in it (stale ports, rules added by hand) goes away.
type Config struct {
	Bridges []string // Outcall bridge interface names (e.g. "outcall0")
	// Ports are the ifindexes of the container-facing ports on those bridges.
	// An ifindex, not a name, because a renamed port is still the same port
	// and a new port given an old name is not.
	Ports    []int
	Mark     uint32 // api.AllowMark
	MarkMask uint32 // api.AllowMarkMask
	// MaxConnsPerAgent caps the conntrack entries one agent source address
	// may hold through the gateway or to the host (0: no cap), because the
	// conntrack table is host-wide and one agent could fill it for every
	// other. Traffic of Services is not tracked, so it never counts.
	MaxConnsPerAgent uint32
	// Services are the gateway services open now (Outcall's own DNS filter
	// and proxy listeners). Marked packets to them from a bridge, and what
	// their sockets send back onto a bridge, are not tracked: a DNS query
	// would otherwise hold a conntrack entry for 30 s, towards the cap and
	// in the host's table, and the services bound their own load.
	Services []Service
}

// Service is a gateway service: a listener of Outcall's on Addr, Proto
// (TCP or UDP) and Port.
type Service struct {
	Addr  netip.Addr // IPv4
	Proto uint8
	Port  uint16
}

// Floor writes and inspects Outcall's nftables tables. Its methods are safe for
// concurrent use; they are serialized so that a read-modify sequence such as
// Delete sees a consistent state.
type Floor struct {
	mu    sync.Mutex
	netns int
	// bridgeMeta caches whether the kernel has `meta ibrname`
	// (CONFIG_NFT_BRIDGE_META); the answer does not change while the kernel
	// runs, so it is probed once.
	bridgeMeta probe
}

// probe is the cached answer of a kernel feature probe.
type probe int

const (
	probeUnknown probe = iota
	probeYes
	probeNo
)

// New returns a Floor working in the network namespace of the thread that
// calls its methods (the daemon's), or in netnsFD when >0 (for tests and the
// lab). The Floor does not own netnsFD; the caller keeps it open while using
// the Floor.
func New(netnsFD int) *Floor {
	return &Floor{netns: netnsFD}
}

// Names of the objects in both tables. Rules use them to find the sets, and
// readers of `nft list ruleset` see them.
const (
	setBridges      = "bridges"
	setPorts        = "ports"
	setConns        = "conns_per_agent"
	setServices     = "services"
	chainOutput     = "output"
	chainForward    = "forward"
	chainInput      = "input"
	chainPrerouting = "prerouting"
)

// connsSetSize bounds the memory of the per-agent connection counts. Only
// traffic the datapath marked (so from a registered port with a checked
// source address) creates an element, so a few agents per bridge are far
// below it.
const connsSetSize = 65535

// arpHookIn is NF_ARP_IN, the ARP family's input hook. It is 0, not
// NF_INET_LOCAL_IN, so nftables.ChainHookInput would be wrong here.
const arpHookIn = 0

// bridgePriorityFilter is nft's "priority filter" in the bridge family, which
// differs from the inet one (0).
const bridgePriorityFilter = -200

func inetTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: api.NFTableName}
}

func bridgeTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyBridge, Name: api.NFTableName}
}

func arpTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyARP, Name: api.NFTableName}
}

// tables are all of the floor's tables, in the order Apply builds them.
func tables() []*nftables.Table {
	return []*nftables.Table{inetTable(), bridgeTable(), arpTable()}
}

// Apply atomically replaces the three tables (inet, bridge and arp outcall)
// with cfg in one netlink batch, which
// the kernel runs as one transaction: there is no moment without the tables,
// and a failed Apply leaves the old tables in place. Dynamic state, such as
// rules added to the tables by hand, is dropped, which is what the strict base
// policy at shutdown needs (S001-FR-010).
func (f *Floor) Apply(cfg Config) error {
	const op = "apply floor"
	if err := cfg.validate(); err != nil {
		return &Error{Op: op, Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	meta, err := f.hasBridgeMeta()
	if err != nil {
		return &Error{Op: op, Err: fmt.Errorf("probe meta ibrname: %w", err)}
	}
	return f.flush(op, func(c *nftables.Conn) error { return build(c, cfg, meta) })
}

// hasBridgeMeta reports whether the kernel accepts `meta ibrname` in the
// bridge family, by sending a throw-away batch that creates and deletes a
// scratch table with such a rule: the batch leaves nothing behind whether it
// succeeds or fails. Only a definite answer is cached, so a transient
// failure is retried by the next Apply.
func (f *Floor) hasBridgeMeta() (bool, error) {
	switch f.bridgeMeta {
	case probeYes:
		return true, nil
	case probeNo:
		return false, nil
	}
	c, err := f.conn()
	if err != nil {
		return false, err
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyBridge, Name: api.NFTableName + "-probe"})
	ch := c.AddChain(&nftables.Chain{Name: "probe", Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{&expr.Meta{Key: expr.MetaKeyBRIIIFNAME, Register: 1}}})
	c.DelTable(t)
	switch err := c.Flush(); {
	case err == nil:
		f.bridgeMeta = probeYes
		return true, nil
	case errors.Is(err, unix.EOPNOTSUPP):
		f.bridgeMeta = probeNo
		return false, nil
	default:
		return false, err
	}
}

// AddPort adds one port, by ifindex, to the ports set of the inet and bridge
// tables without rewriting them, so counters and flows are kept. Adding a
// present port is not an error.
func (f *Floor) AddPort(ifindex int) error {
	return f.updatePort(fmt.Sprintf("add port %d", ifindex), ifindex, false)
}

// RemovePort removes one port, by ifindex, from the ports sets.
// Removing an absent port is not an error: the batch adds the element before
// deleting it, which the kernel accepts whether or not it was there.
func (f *Floor) RemovePort(ifindex int) error {
	return f.updatePort(fmt.Sprintf("remove port %d", ifindex), ifindex, true)
}

func (f *Floor) updatePort(op string, ifindex int, remove bool) error {
	if err := validIndex(ifindex); err != nil {
		return &Error{Op: op, Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flush(op, func(c *nftables.Conn) error {
		for _, t := range []*nftables.Table{inetTable(), bridgeTable()} {
			if err := c.SetAddElements(portSet(t), indexElements(ifindex)); err != nil {
				return err
			}
			if !remove {
				continue
			}
			if err := c.SetDeleteElements(portSet(t), indexElements(ifindex)); err != nil {
				return err
			}
		}
		return nil
	})
}

// SetServices replaces the services set of the inet table (Config.Services)
// in one transaction, without rewriting the tables, so counters and the
// per-agent connection counts are kept.
func (f *Floor) SetServices(services []Service) error {
	const op = "set services"
	elems, err := serviceElements(services)
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flush(op, func(c *nftables.Conn) error {
		set := serviceSet(inetTable())
		c.FlushSet(set)
		return c.SetAddElements(set, elems)
	})
}

// serviceSet is typed ipv4_addr . inet_proto . inet_service.
func serviceSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: setServices, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)}
}

// serviceElements are the elements of the services set: each field of the
// concatenation padded to 4 bytes, as the registers hold them.
func serviceElements(services []Service) ([]nftables.SetElement, error) {
	seen := map[Service]bool{}
	var elems []nftables.SetElement
	for _, s := range services {
		if !s.Addr.Is4() || (s.Proto != unix.IPPROTO_TCP && s.Proto != unix.IPPROTO_UDP) || s.Port == 0 {
			return nil, fmt.Errorf("invalid service %s/%d/%d: need an IPv4 address, TCP or UDP and a port", s.Addr, s.Proto, s.Port)
		}
		if seen[s] {
			continue
		}
		seen[s] = true
		a := s.Addr.As4()
		key := append(a[:], s.Proto, 0, 0, 0)
		key = append(key, byte(s.Port>>8), byte(s.Port), 0, 0)
		elems = append(elems, nftables.SetElement{Key: key})
	}
	return elems, nil
}

// Delete removes the three tables; it is the teardown of `bridge down` only,
// never of a daemon shutdown. Absent tables are not an error. It reports
// whether any of them existed, so teardown can say what it removed.
func (f *Floor) Delete() (existed bool, err error) {
	const op = "delete floor"
	f.mu.Lock()
	defer f.mu.Unlock()
	present, err := f.present()
	if err != nil {
		return false, &Error{Op: op, Err: err}
	}
	err = f.flush(op, func(c *nftables.Conn) error {
		// Adding first makes the delete succeed whether or not the table exists.
		for _, t := range tables() {
			c.AddTable(t)
			c.DelTable(t)
		}
		return nil
	})
	return present > 0, err
}

// Active reports whether the floor is in place (S001-FR-011.b): all three
// tables exist. A floor missing one of them does not hold, so it is not
// reported active. It is asked afresh on every call, as bridge status
// requires.
func (f *Floor) Active() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ok, err := f.active()
	if err != nil {
		return false, &Error{Op: "check floor", Err: err}
	}
	return ok, nil
}

func (f *Floor) active() (bool, error) {
	n, err := f.present()
	return n == len(tables()), err
}

// present counts the floor's tables that exist.
func (f *Floor) present() (int, error) {
	c, err := f.conn()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, want := range tables() {
		got, err := c.ListTablesOfFamily(want.Family)
		if err != nil {
			return 0, err
		}
		if slices.ContainsFunc(got, func(t *nftables.Table) bool { return t.Name == api.NFTableName }) {
			n++
		}
	}
	return n, nil
}

// Counters returns the packet counts of the counted rules, keyed by the name in
// the rule's comment: forward_established, forward_conn_limit_drop,
// forward_allow, forward_drop_in, forward_drop_out, input_established,
// input_conn_limit_drop, input_allow, input_drop, prerouting_service_notrack,
// output_service_notrack, bridge_forward_drop,
// bridge_forward_to_port, bridge_input_allow, bridge_input_drop,
// arp_input_allow and arp_input_drop, plus bridge_prerouting_unknown where
// the kernel has meta ibrname. The conn_limit names exist only with a cap.
// Comments, not positions, identify the rules, so the names
// survive reordering and are readable in `nft list ruleset`. Without the
// tables it fails with an error matching unix.ENOENT.
func (f *Floor) Counters() (map[string]uint64, error) {
	const op = "read counters"
	f.mu.Lock()
	defer f.mu.Unlock()
	// A dump of an absent table's rules is empty, not an error, so ask first.
	ok, err := f.active()
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	if !ok {
		return nil, &Error{Op: op, Err: fmt.Errorf("tables %s: %w", api.NFTableName, unix.ENOENT)}
	}
	c, err := f.conn()
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	counts := make(map[string]uint64)
	for _, t := range tables() {
		// The chains differ per table and per kernel (prerouting only with
		// meta ibrname), so ask the kernel which there are.
		chains, err := c.ListChainsOfTableFamily(t.Family)
		if err != nil {
			return nil, &Error{Op: op, Err: fmt.Errorf("list chains of %s table: %w", family(t), err)}
		}
		for _, ch := range chains {
			if ch.Table.Name != api.NFTableName {
				continue
			}
			rules, err := c.GetRules(t, &nftables.Chain{Name: ch.Name, Table: t})
			if err != nil {
				return nil, &Error{Op: op, Err: fmt.Errorf("list %s chain of %s table: %w", ch.Name, family(t), err)}
			}
			for _, r := range rules {
				name, ok := userdata.GetString(r.UserData, userdata.TypeComment)
				if !ok {
					continue
				}
				for _, e := range r.Exprs {
					if ctr, ok := e.(*expr.Counter); ok {
						counts[name] = ctr.Packets
					}
				}
			}
		}
	}
	return counts, nil
}

func family(t *nftables.Table) string {
	switch t.Family {
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyARP:
		return "arp"
	}
	return "inet"
}

func (f *Floor) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if f.netns > 0 {
		opts = append(opts, nftables.WithNetNSFd(f.netns))
	}
	return nftables.New(opts...)
}

// flush queues one batch with queue and sends it as one transaction.
func (f *Floor) flush(op string, queue func(*nftables.Conn) error) error {
	c, err := f.conn()
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	if err := queue(c); err != nil {
		return &Error{Op: op, Err: err}
	}
	if err := c.Flush(); err != nil {
		// The library joins one error per failed message of the batch, which
		// reads as the same line repeated; the errno says it all.
		var errno unix.Errno
		if errors.As(err, &errno) {
			err = errno
		}
		return &Error{Op: op, Err: err}
	}
	return nil
}

// build queues the whole floor. Add, delete, add makes the replace work
// whether or not the tables exist, inside the same transaction. bridgeMeta
// says whether the kernel has meta ibrname.
func build(c *nftables.Conn, cfg Config, bridgeMeta bool) error {
	mark := markIs(cfg.Mark, cfg.MarkMask)
	accept, drop := nftables.ChainPolicyAccept, nftables.ChainPolicyDrop

	inet := replaceTable(c, inetTable())
	bridges := ifnameSet(inet, setBridges)
	if err := c.AddSet(bridges, elements(cfg.Bridges...)); err != nil {
		return err
	}
	// The inet ports set is matched by no rule today; it mirrors the bridge
	// table's so both tables name the same ports.
	if err := c.AddSet(portSet(inet), indexElements(cfg.Ports...)); err != nil {
		return err
	}
	services := serviceSet(inet)
	serviceElems, err := serviceElements(cfg.Services)
	if err != nil {
		return err
	}
	if err := c.AddSet(services, serviceElems); err != nil {
		return err
	}
	// Gateway services are not tracked (Config.Services): a query from the
	// datapath-marked port to an open service, and its answer, leave no
	// conntrack entry, so they never count towards the cap. Unmarked
	// packets are tracked as ever and dropped below.
	raw := func(name string, hook *nftables.ChainHook) *nftables.Chain {
		return c.AddChain(&nftables.Chain{
			Name: name, Table: inet, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityRaw, Policy: &accept,
		})
	}
	addRules(c, raw(chainPrerouting, nftables.ChainHookPrerouting),
		rule{counter: "prerouting_service_notrack", verdict: expr.VerdictContinue,
			match: slices.Concat(mark, serviceMatch(services, 16, 2), []expr.Any{&expr.Notrack{}})})
	addRules(c, raw(chainOutput, nftables.ChainHookOutput),
		rule{counter: "output_service_notrack", verdict: expr.VerdictContinue,
			match: slices.Concat(in(expr.MetaKeyOIFNAME, bridges), serviceMatch(services, 12, 0), []expr.Any{&expr.Notrack{}})})

	// connLimit is empty without a cap. It comes after the established rule,
	// which new connections never match, so established packets skip it.
	connLimit := func(string) []rule { return nil }
	if cfg.MaxConnsPerAgent > 0 {
		conns := &nftables.Set{Table: inet, Name: setConns, KeyType: nftables.TypeIPAddr, Dynamic: true, Size: connsSetSize}
		if err := c.AddSet(conns, nil); err != nil {
			return err
		}
		connLimit = func(chain string) []rule {
			return []rule{{counter: chain + "_conn_limit_drop", verdict: expr.VerdictDrop,
				match: slices.Concat(in(expr.MetaKeyIIFNAME, bridges), mark, ctStateNew(), connsOver(conns, cfg.MaxConnsPerAgent))}}
		}
	}
	fwd := c.AddChain(&nftables.Chain{
		Name: chainForward, Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop,
	})
	addRules(c, fwd, slices.Concat(
		[]rule{
			// Forwarded traffic that touches no Outcall bridge is not ours (S001-FR-007).
			{verdict: expr.VerdictAccept, match: slices.Concat(notIn(expr.MetaKeyIIFNAME, bridges), notIn(expr.MetaKeyOIFNAME, bridges))},
			// Replies to flows the datapath allowed carry no mark.
			{counter: "forward_established", verdict: expr.VerdictAccept, match: establishedOrRelated()},
		},
		connLimit(chainForward),
		[]rule{
			{counter: "forward_allow", verdict: expr.VerdictAccept, match: slices.Concat(in(expr.MetaKeyIIFNAME, bridges), mark)},
			{counter: "forward_drop_in", verdict: expr.VerdictDrop, match: in(expr.MetaKeyIIFNAME, bridges)},
			{counter: "forward_drop_out", verdict: expr.VerdictDrop, match: in(expr.MetaKeyOIFNAME, bridges)},
		})...,
	)
	// Containers reach the host itself (gateway DNS and proxy) only where the
	// datapath allowed it; policy accept keeps every other host input untouched.
	input := c.AddChain(&nftables.Chain{
		Name: chainInput, Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	addRules(c, input, slices.Concat(
		[]rule{
			{verdict: expr.VerdictAccept, match: notIn(expr.MetaKeyIIFNAME, bridges)},
			{counter: "input_established", verdict: expr.VerdictAccept, match: establishedOrRelated()},
		},
		connLimit(chainInput),
		[]rule{
			{counter: "input_allow", verdict: expr.VerdictAccept, match: mark},
			{counter: "input_drop", verdict: expr.VerdictDrop},
		})...,
	)

	// Frames switched between two ports of a bridge never reach the inet hooks
	// unless br_netfilter is on, and ARP never does; the bridge family sees
	// them all. Ports are matched by ifindex (meta iif/oif is the port in the
	// bridge family), so a rename changes nothing.
	br := replaceTable(c, bridgeTable())
	ports := portSet(br)
	if err := c.AddSet(ports, indexElements(cfg.Ports...)); err != nil {
		return err
	}
	brChain := func(name string, hook *nftables.ChainHook) *nftables.Chain {
		return c.AddChain(&nftables.Chain{
			Name: name, Table: br, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityRef(bridgePriorityFilter), Policy: &accept,
		})
	}
	// NF_BR_FORWARD: port to port. Every frame the datapath allows goes to
	// the gateway's MAC, so no frame between container ports is legitimate,
	// marked or not. Matching the output port too means a port the daemon
	// has not taken over (no program, not in @ports) reaches no taken-over
	// port, and what it sends never lands in an agent's neighbour cache.
	addRules(c, brChain(chainForward, nftables.ChainHookForward),
		rule{counter: "bridge_forward_drop", verdict: expr.VerdictDrop, match: in(expr.MetaKeyIIF, ports)},
		rule{counter: "bridge_forward_to_port", verdict: expr.VerdictDrop, match: in(expr.MetaKeyOIF, ports)},
	)
	// NF_BR_LOCAL_IN: port to the bridge itself.
	addRules(c, brChain(chainInput, nftables.ChainHookInput),
		rule{counter: "bridge_input_allow", verdict: expr.VerdictAccept, match: slices.Concat(in(expr.MetaKeyIIF, ports), mark)},
		rule{counter: "bridge_input_drop", verdict: expr.VerdictDrop, match: in(expr.MetaKeyIIF, ports)},
	)
	if bridgeMeta {
		// With meta ibrname the floor knows every port of an Outcall bridge,
		// taken over or not, so a port not in @ports is dropped before the
		// bridge learns its source MAC (prerouting runs before learning):
		// it reaches no port and the host, and cannot steal an agent's MAC
		// in the bridge's table. Without it, DECISIONS.md says what remains.
		brBridges := ifnameSet(br, setBridges)
		if err := c.AddSet(brBridges, elements(cfg.Bridges...)); err != nil {
			return err
		}
		addRules(c, brChain(chainPrerouting, nftables.ChainHookPrerouting),
			rule{counter: "bridge_prerouting_unknown", verdict: expr.VerdictDrop,
				match: slices.Concat(in(expr.MetaKeyBRIIIFNAME, brBridges), notIn(expr.MetaKeyIIF, ports))},
		)
	}

	// ARP reaches the host's neighbour cache through the arp family, which
	// sees it arrive on the bridge device itself. The datapath marks the ARP
	// it allows and the mark survives the bridge, so unmarked ARP came from
	// a port without a program: dropping it stops that port poisoning the
	// host's entries for the agents.
	arp := replaceTable(c, arpTable())
	arpBridges := ifnameSet(arp, setBridges)
	if err := c.AddSet(arpBridges, elements(cfg.Bridges...)); err != nil {
		return err
	}
	arpIn := c.AddChain(&nftables.Chain{
		Name: chainInput, Table: arp, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookRef(arpHookIn), Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	addRules(c, arpIn,
		rule{counter: "arp_input_allow", verdict: expr.VerdictAccept, match: slices.Concat(in(expr.MetaKeyIIFNAME, arpBridges), mark)},
		rule{counter: "arp_input_drop", verdict: expr.VerdictDrop, match: in(expr.MetaKeyIIFNAME, arpBridges)},
	)
	return nil
}

func replaceTable(c *nftables.Conn, t *nftables.Table) *nftables.Table {
	c.AddTable(t)
	c.DelTable(t)
	return c.AddTable(t)
}

// ifnameSet is typed ifname so that nft lists its elements as names.
func ifnameSet(t *nftables.Table, name string) *nftables.Set {
	return &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
}

// portSet is typed iface_index: ports are ifindexes, matched by meta iif
// and oif.
func portSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: setPorts, KeyType: nftables.TypeIFIndex, KeyByteOrder: binaryutil.NativeEndian}
}

// indexElements are set elements for ifindexes, in the host byte order meta
// iif loads.
func indexElements(ifindexes ...int) []nftables.SetElement {
	ifindexes = slices.Compact(slices.Sorted(slices.Values(ifindexes)))
	elems := make([]nftables.SetElement, len(ifindexes))
	for i, n := range ifindexes {
		elems[i] = nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(n))}
	}
	return elems
}

func elements(names ...string) []nftables.SetElement {
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	elems := make([]nftables.SetElement, len(names))
	for i, n := range names {
		elems[i] = nftables.SetElement{Key: ifname(n)}
	}
	return elems
}

// ifname pads a name to IFNAMSIZ, the width meta iifname loads.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// rule is one rule of a chain. A rule with a counter carries the counter's
// name as its comment, which is how Counters finds it again.
type rule struct {
	counter string
	verdict expr.VerdictKind
	match   []expr.Any
}

func addRules(c *nftables.Conn, chain *nftables.Chain, rules ...rule) {
	for _, r := range rules {
		exprs := slices.Clone(r.match)
		var ud []byte
		if r.counter != "" {
			exprs = append(exprs, &expr.Counter{})
			ud = userdata.AppendString(nil, userdata.TypeComment, r.counter)
		}
		exprs = append(exprs, &expr.Verdict{Kind: r.verdict})
		c.AddRule(&nftables.Rule{Table: chain.Table, Chain: chain, Exprs: exprs, UserData: ud})
	}
}

// in matches when the interface named by key is in s: `iifname @s`.
func in(key expr.MetaKey, s *nftables.Set) []expr.Any {
	return lookup(key, s, false)
}

// notIn is `iifname != @s`.
func notIn(key expr.MetaKey, s *nftables.Set) []expr.Any {
	return lookup(key, s, true)
}

func lookup(key expr.MetaKey, s *nftables.Set, invert bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: invert},
	}
}

// markIs is `meta mark & mask == mark`: only Outcall's bits count, so other
// users of the mark keep theirs.
func markIs(mark, mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
	}
}

// ctStateNew is `ct state new`.
func ctStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// connsOver is `add @s { ip saddr ct count over n }`: it matches when the
// packet's source address holds more than n conntrack entries, counting
// this one. nft adds the meta nfproto test because ip saddr in the inet
// family needs it; IPv6 never gets here marked (the datapath drops it).
func connsOver(s *nftables.Set, n uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Dynset{SrcRegKey: 1, SetName: s.Name, SetID: s.ID, Operation: unix.NFT_DYNSET_OP_ADD,
			Exprs: []expr.Any{&expr.Connlimit{Count: n, Flags: expr.NFT_CONNLIMIT_F_INV}}},
	}
}

// serviceMatch is `ip daddr . meta l4proto . th dport @services` with the
// address at addrOff of the IPv4 header and the port at portOff of the
// transport header (16 and 2: destination; 12 and 0: source). The
// concatenation is built in consecutive 32-bit registers.
func serviceMatch(s *nftables.Set, addrOff, portOff uint32) []expr.Any {
	const reg = 8 // NFT_REG32_00
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg + 1},
		&expr.Payload{DestRegister: reg + 2, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2},
		&expr.Lookup{SourceRegister: reg, SetName: s.Name, SetID: s.ID},
	}
}

// establishedOrRelated is `ct state established,related`.
func establishedOrRelated() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// validate refuses a config that would not load or would open the floor: a
// mark outside its mask never matches as meant, and a zero mark would let
// every unmarked packet pass.
func (cfg Config) validate() error {
	if cfg.Mark&cfg.MarkMask == 0 || cfg.Mark&^cfg.MarkMask != 0 {
		return fmt.Errorf("allow mark %#x must be non-zero and inside mask %#x", cfg.Mark, cfg.MarkMask)
	}
	for _, n := range cfg.Bridges {
		if err := validName(n); err != nil {
			return err
		}
	}
	for _, i := range cfg.Ports {
		if err := validIndex(i); err != nil {
			return err
		}
	}
	_, err := serviceElements(cfg.Services)
	return err
}

// validIndex refuses what cannot be an ifindex: the kernel's are positive
// 32-bit numbers.
func validIndex(ifindex int) error {
	if ifindex <= 0 || ifindex > math.MaxInt32 {
		return fmt.Errorf("invalid interface index %d", ifindex)
	}
	return nil
}

func validName(name string) error {
	if name == "" || len(name) >= unix.IFNAMSIZ || strings.ContainsRune(name, 0) {
		return fmt.Errorf("invalid interface name %q: want 1 to %d bytes without NUL", name, unix.IFNAMSIZ-1)
	}
	return nil
}
