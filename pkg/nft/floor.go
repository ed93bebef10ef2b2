// Package nft keeps Outcall's nftables floor: the fail-closed tables underneath
// the eBPF datapath. A packet or frame from a container port that the datapath
// did not mark is dropped here, so a port whose program is missing, detached or
// crashed is dead, never open (DESIGN.md section 2).
//
// The floor talks nf_tables netlink directly, so no nft binary is needed at run
// time, and every change is one kernel transaction.
package nft

import (
	"errors"
	"fmt"
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
	Bridges  []string // Outcall bridge interface names (e.g. "outcall0")
	Ports    []string // host-side names of container-facing ports on those bridges
	Mark     uint32   // api.AllowMark
	MarkMask uint32   // api.AllowMarkMask
}

// Floor writes and inspects Outcall's nftables tables. Its methods are safe for
// concurrent use; they are serialized so that a read-modify sequence such as
// Delete sees a consistent state.
type Floor struct {
	mu    sync.Mutex
	netns int
}

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
	setBridges   = "bridges"
	setPorts     = "ports"
	chainForward = "forward"
	chainInput   = "input"
)

// bridgePriorityFilter is nft's "priority filter" in the bridge family, which
// differs from the inet one (0).
const bridgePriorityFilter = -200

func inetTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: api.NFTableName}
}

func bridgeTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyBridge, Name: api.NFTableName}
}

// Apply atomically replaces both tables with cfg in one netlink batch, which
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
	return f.flush(op, func(c *nftables.Conn) error { return build(c, cfg) })
}

// AddPort adds one port name to the ports set of both tables without
// rewriting them, so counters and flows are kept. Adding a present port is not
// an error.
func (f *Floor) AddPort(name string) error {
	return f.updatePort(fmt.Sprintf("add port %q", name), name, false)
}

// RemovePort removes one port name from the ports set of both tables.
// Removing an absent port is not an error: the batch adds the element before
// deleting it, which the kernel accepts whether or not it was there.
func (f *Floor) RemovePort(name string) error {
	return f.updatePort(fmt.Sprintf("remove port %q", name), name, true)
}

func (f *Floor) updatePort(op, name string, remove bool) error {
	if err := validName(name); err != nil {
		return &Error{Op: op, Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flush(op, func(c *nftables.Conn) error {
		for _, t := range []*nftables.Table{inetTable(), bridgeTable()} {
			if err := c.SetAddElements(portSet(t), elements(name)); err != nil {
				return err
			}
			if !remove {
				continue
			}
			if err := c.SetDeleteElements(portSet(t), elements(name)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Delete removes both tables; it is the teardown of `bridge down` only, never
// of a daemon shutdown. Absent tables are not an error. It reports whether the
// inet table existed, so teardown can say what it removed.
func (f *Floor) Delete() (existed bool, err error) {
	const op = "delete floor"
	f.mu.Lock()
	defer f.mu.Unlock()
	existed, err = f.active()
	if err != nil {
		return false, &Error{Op: op, Err: err}
	}
	err = f.flush(op, func(c *nftables.Conn) error {
		// Adding first makes the delete succeed whether or not the table exists.
		for _, t := range []*nftables.Table{inetTable(), bridgeTable()} {
			c.AddTable(t)
			c.DelTable(t)
		}
		return nil
	})
	return existed, err
}

// Active reports whether table inet outcall exists (S001-FR-011.b). It is
// asked afresh on every call, as bridge status requires.
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
	c, err := f.conn()
	if err != nil {
		return false, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == api.NFTableName }), nil
}

// Counters returns the packet counts of the counted rules, keyed by the name in
// the rule's comment: forward_established, forward_allow, forward_drop_in,
// forward_drop_out, input_established, input_allow, input_drop,
// bridge_forward_allow, bridge_forward_drop, bridge_input_allow and
// bridge_input_drop. Comments, not positions, identify the rules, so the names
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
		return nil, &Error{Op: op, Err: fmt.Errorf("table inet %s: %w", api.NFTableName, unix.ENOENT)}
	}
	c, err := f.conn()
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	counts := make(map[string]uint64)
	for _, t := range []*nftables.Table{inetTable(), bridgeTable()} {
		for _, chain := range []string{chainForward, chainInput} {
			rules, err := c.GetRules(t, &nftables.Chain{Name: chain, Table: t})
			if err != nil {
				return nil, &Error{Op: op, Err: fmt.Errorf("list %s chain of %s table: %w", chain, family(t), err)}
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
	if t.Family == nftables.TableFamilyBridge {
		return "bridge"
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
// whether or not the tables exist, inside the same transaction.
func build(c *nftables.Conn, cfg Config) error {
	mark := markIs(cfg.Mark, cfg.MarkMask)
	accept, drop := nftables.ChainPolicyAccept, nftables.ChainPolicyDrop

	inet := replaceTable(c, inetTable())
	bridges := ifnameSet(inet, setBridges)
	if err := c.AddSet(bridges, elements(cfg.Bridges...)); err != nil {
		return err
	}
	// The inet ports set is matched by no rule today; it mirrors the bridge
	// table's so both tables name the same ports.
	if err := c.AddSet(portSet(inet), elements(cfg.Ports...)); err != nil {
		return err
	}
	fwd := c.AddChain(&nftables.Chain{
		Name: chainForward, Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop,
	})
	addRules(c, fwd,
		// Forwarded traffic that touches no Outcall bridge is not ours (S001-FR-007).
		rule{verdict: expr.VerdictAccept, match: slices.Concat(notIn(expr.MetaKeyIIFNAME, bridges), notIn(expr.MetaKeyOIFNAME, bridges))},
		// Replies to flows the datapath allowed carry no mark.
		rule{counter: "forward_established", verdict: expr.VerdictAccept, match: establishedOrRelated()},
		rule{counter: "forward_allow", verdict: expr.VerdictAccept, match: slices.Concat(in(expr.MetaKeyIIFNAME, bridges), mark)},
		rule{counter: "forward_drop_in", verdict: expr.VerdictDrop, match: in(expr.MetaKeyIIFNAME, bridges)},
		rule{counter: "forward_drop_out", verdict: expr.VerdictDrop, match: in(expr.MetaKeyOIFNAME, bridges)},
	)
	// Containers reach the host itself (gateway DNS and proxy) only where the
	// datapath allowed it; policy accept keeps every other host input untouched.
	input := c.AddChain(&nftables.Chain{
		Name: chainInput, Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	addRules(c, input,
		rule{verdict: expr.VerdictAccept, match: notIn(expr.MetaKeyIIFNAME, bridges)},
		rule{counter: "input_established", verdict: expr.VerdictAccept, match: establishedOrRelated()},
		rule{counter: "input_allow", verdict: expr.VerdictAccept, match: mark},
		rule{counter: "input_drop", verdict: expr.VerdictDrop},
	)

	// Frames switched between two ports of a bridge never reach the inet hooks
	// unless br_netfilter is on, and ARP never does; the bridge family sees
	// them all. Ports are matched by name because the bridge's own name (meta
	// ibrname) needs CONFIG_NFT_BRIDGE_META, which kernels may lack.
	br := replaceTable(c, bridgeTable())
	ports := portSet(br)
	if err := c.AddSet(ports, elements(cfg.Ports...)); err != nil {
		return err
	}
	for _, h := range []struct {
		name string
		hook *nftables.ChainHook
	}{
		{chainForward, nftables.ChainHookForward}, // NF_BR_FORWARD: port to port
		{chainInput, nftables.ChainHookInput},     // NF_BR_LOCAL_IN: port to the bridge itself
	} {
		chain := c.AddChain(&nftables.Chain{
			Name: h.name, Table: br, Type: nftables.ChainTypeFilter,
			Hooknum: h.hook, Priority: nftables.ChainPriorityRef(bridgePriorityFilter), Policy: &accept,
		})
		addRules(c, chain,
			rule{counter: "bridge_" + h.name + "_allow", verdict: expr.VerdictAccept, match: slices.Concat(in(expr.MetaKeyIIFNAME, ports), mark)},
			rule{counter: "bridge_" + h.name + "_drop", verdict: expr.VerdictDrop, match: in(expr.MetaKeyIIFNAME, ports)},
		)
	}
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

func portSet(t *nftables.Table) *nftables.Set { return ifnameSet(t, setPorts) }

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
	for _, n := range slices.Concat(cfg.Bridges, cfg.Ports) {
		if err := validName(n); err != nil {
			return err
		}
	}
	return nil
}

func validName(name string) error {
	if name == "" || len(name) >= unix.IFNAMSIZ || strings.ContainsRune(name, 0) {
		return fmt.Errorf("invalid interface name %q: want 1 to %d bytes without NUL", name, unix.IFNAMSIZ-1)
	}
	return nil
}
