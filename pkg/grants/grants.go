// Package grants manages the datapath's allow entries on behalf of their
// holders: the operator's dynamic rules (S009: `outcall grant`, the host
// API) and, with the DNS filter, the rules whose answers opened a
// destination. The kernel map is the enforcement; the Manager is the index
// beside it, so that listing, counting and revoking everything one
// identity or one rule opened never walk the kernel map.
//
// A Claim is one holder's ask: an operator rule (one allow request,
// whatever its destination expands to: an address, a CIDR, up to 16
// addresses of a host name) or one key a rule's DNS answer opened. Several
// claims may hold the same kernel key (a host name and the literal address
// it resolves to, an operator grant and a DNS answer); the kernel holds one
// entry per key, the union of its claims: persistent if any claim is, else
// the latest expiry, private if any claim is. Removing one claim leaves
// what the others hold, so a DNS renewal never shortens an operator's
// persistent grant and an operator's revoke never closes what a rule's
// answer still allows.
//
// Every change goes to the kernel first and to the index after. A put the
// kernel refuses changes nothing. A delete the kernel refuses means the
// datapath may allow more than the index says: then every grant is removed
// (S009-FR-014, the base policy being no grant at all); if the kernel
// refuses that too, the identities that may keep a grant are closed
// through Options.Close, the claims stay listed, new claims are refused,
// and each Sweep tries again until the kernel agrees.
package grants

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"outcall.dev/outcall/pkg/datapath"
)

// Kernel is what the Manager needs of the datapath. *datapath.Datapath
// implements it; tests use a fake.
type Kernel interface {
	// PutGrant inserts or replaces an allow entry.
	PutGrant(datapath.Grant) error
	// DeleteGrant deletes an entry; its flows live on (expiry).
	DeleteGrant(datapath.GrantKey) (bool, error)
	// EndGrantFlows ends the flows grants with these keys opened, once
	// no program still runs with the deleted entries.
	EndGrantFlows([]datapath.GrantKey) (int, error)
	// Grants lists the kernel's entries (to adopt or clear what an
	// earlier daemon left, and to remove everything after a failure).
	Grants() ([]datapath.Grant, error)
}

// Owner says who opened a grant: the operator (Rule empty) or the rule,
// by its stable id, whose decision allowed a DNS answer.
type Owner struct {
	Rule string
}

// Operator owns grants made through `outcall grant add` and the host API.
var Operator = Owner{}

// String is "operator" or "rule:<id>".
func (o Owner) String() string {
	if o.Rule == "" {
		return "operator"
	}
	return "rule:" + o.Rule
}

// Holder names one claim: its owner and a name unique for that owner.
type Holder struct {
	Owner Owner
	// Name tells one owner's claims apart: for an operator rule its
	// identity, destination as given, protocol and port; for a rule's
	// DNS-learned grant its key (KeyName).
	Name string
}

// Claim is what one holder asks the datapath to allow.
type Claim struct {
	Holder
	Identity uint32
	// Destination is what was asked for, as it is listed: an IPv4
	// address, a CIDR or a host name.
	Destination string
	Proto       uint8
	Port        uint16
	// Keys are the entries it opens: one for an address or a CIDR, one
	// per address of a host name. Each is Identity's, on Proto and Port.
	Keys []datapath.GrantKey
	// Expires is when the claim ends; zero never.
	Expires      time.Time
	AllowPrivate bool
	// Inserted is when the claim was first made; a renewal keeps it.
	Inserted time.Time
	// Handle numbers the claim from 1, in the order claims were first
	// made by this Manager; a renewal keeps it. It is S009's nft_handle: a
	// rule's name in answers and lists (there is no nftables rule; the
	// datapath map is the control point, DESIGN §7).
	Handle uint64
}

// live reports whether c has not expired at now.
func (c *Claim) live(now time.Time) bool { return c.Expires.IsZero() || c.Expires.After(now) }

// KeyName is the Holder name of a rule's grant on one key.
func KeyName(k datapath.GrantKey) string {
	return fmt.Sprintf("%d %s %d/%d", k.Identity, k.Prefix(), k.Proto, k.Port)
}

// Grant is one key as one claim holds it (List), or as the kernel holds it
// (Get, with the owner of one of its claims, the operator first).
type Grant struct {
	datapath.Grant
	Owner Owner
}

// Change is what happened to a claim, for Options.OnChange.
type Change int

// The changes.
const (
	Added   Change = iota // inserted or renewed
	Removed               // revoked: by the operator, a reload, an endpoint's removal, a reset
	Expired               // swept after its expiry
)

// Options configure New.
type Options struct {
	// OnChange, if set, is called for every key of a claim the index
	// gains (added or renewed) or loses, outside the Manager's lock.
	OnChange func(g Grant, change Change)
	// Close is called when the kernel refused a delete and then refused
	// to remove every grant: it must close these identities in the
	// datapath some other way (their ports reaching nothing but the
	// gateway services) and report whether it could. It runs in the
	// goroutine of the call that failed.
	Close func(identities []uint32) error
	// Reopen is called with the identities Close closed once the kernel
	// has removed every grant after all.
	Reopen func(identities []uint32)
}

// ErrStuck is the error new claims get while the kernel holds grants it
// refused to delete (see ResetError).
var ErrStuck = errors.New("grants are closed: the kernel refused to delete grants, and every grant is being removed until it agrees")

// ResetError reports that deleting a grant failed and every grant was
// removed instead (S009-FR-014). With Stuck false the datapath now holds
// no grant at all: the call that failed is done (Flush and Sweep count
// every claim as removed), and the error says why the others went too.
// With Stuck the kernel refused that as well: the identities in Closed
// were closed through Options.Close (CloseErr if that failed too), the
// remaining claims stay listed, and Sweep tries again.
type ResetError struct {
	Cause    error // the delete that failed
	Removed  int   // claims the reset removed
	Stuck    bool
	Failed   error // the reset's own failures
	Closed   []uint32
	CloseErr error
}

func (e *ResetError) Error() string {
	if !e.Stuck {
		return fmt.Sprintf("%v; removed every grant instead (%d)", e.Cause, e.Removed)
	}
	s := fmt.Sprintf("%v; removing every grant failed too (%v): ", e.Cause, e.Failed)
	ids := make([]string, len(e.Closed))
	for i, id := range e.Closed {
		ids[i] = fmt.Sprint(id)
	}
	if e.CloseErr != nil {
		s += fmt.Sprintf("closing identities [%s] in the datapath failed too (%v)", strings.Join(ids, " "), e.CloseErr)
	} else {
		s += fmt.Sprintf("closed identities [%s] in the datapath (their ports reach only the gateway services)", strings.Join(ids, " "))
	}
	return s + "; their grants stay listed until the kernel deletes them"
}

func (e *ResetError) Unwrap() error { return e.Cause }

// Manager is the index of claims. Safe for concurrent use.
type Manager struct {
	k    Kernel
	now  func() time.Time
	opts Options

	// op serialises changes, kernel calls included; mu guards the index
	// and is never held across a kernel call, so listing never waits for
	// the kernel.
	op      sync.Mutex
	mu      sync.Mutex
	claims  map[Holder]*Claim
	byKey   map[datapath.GrantKey]map[Holder]struct{}
	written map[datapath.GrantKey]datapath.Grant // the kernel's entries as last written
	stuck   bool
	closed  map[uint32]bool
	handles uint64 // the last Claim.Handle given
}

// New returns a Manager over k with an empty index.
func New(k Kernel, opts Options) *Manager {
	return &Manager{k: k, now: time.Now, opts: opts,
		claims:  map[Holder]*Claim{},
		byKey:   map[datapath.GrantKey]map[Holder]struct{}{},
		written: map[datapath.GrantKey]datapath.Grant{},
		closed:  map[uint32]bool{},
	}
}

// ClearKernel deletes every entry the kernel map holds, whoever made it:
// grants do not survive a restart (S009-FR-010), so what an earlier daemon
// left is removed before this one serves. It returns how many went.
func (m *Manager) ClearKernel() (int, error) {
	m.op.Lock()
	defer m.op.Unlock()
	left, err := m.k.Grants()
	if err != nil {
		return 0, err
	}
	ks := make([]datapath.GrantKey, 0, len(left))
	var errs []error
	for _, g := range left {
		if _, err := m.k.DeleteGrant(g.GrantKey); err != nil {
			errs = append(errs, err)
			continue
		}
		ks = append(ks, g.GrantKey)
	}
	if _, err := m.k.EndGrantFlows(ks); err != nil {
		errs = append(errs, err)
	}
	return len(ks), errors.Join(errs...)
}

// Claim inserts a claim or replaces the one its holder has (a renewal: the
// keys, expiry and private flag become exactly c's; Inserted is kept).
// Keys it no longer holds are closed unless another claim holds them.
func (m *Manager) Claim(c Claim) error {
	if len(c.Keys) == 0 {
		return fmt.Errorf("claim %q opens nothing", c.Name)
	}
	for _, k := range c.Keys {
		if k.Identity != c.Identity {
			return fmt.Errorf("claim %q of identity %d holds a key of identity %d", c.Name, c.Identity, k.Identity)
		}
	}
	m.op.Lock()
	defer m.op.Unlock()
	if m.stuck {
		return ErrStuck
	}
	m.mu.Lock()
	if old, ok := m.claims[c.Holder]; ok {
		c.Inserted, c.Handle = old.Inserted, old.Handle
	} else {
		if c.Inserted.IsZero() {
			c.Inserted = m.now()
		}
		m.handles++
		c.Handle = m.handles
	}
	m.mu.Unlock()
	c.Keys = slices.Clone(c.Keys)
	_, err := m.update(map[Holder]*Claim{c.Holder: &c}, Added)
	return err
}

// Put claims one key for g's owner (a rule's DNS-learned grant), named by
// the key (KeyName).
func (m *Manager) Put(g Grant) error {
	dst := g.Dst.String()
	if g.HostBits != 0 {
		dst = g.Prefix().String()
	}
	return m.Claim(Claim{Holder: Holder{Owner: g.Owner, Name: KeyName(g.GrantKey)}, Identity: g.Identity,
		Destination: dst, Proto: g.Proto, Port: g.Port, Keys: []datapath.GrantKey{g.GrantKey},
		Expires: g.Expires, AllowPrivate: g.AllowPrivate})
}

// Unclaim removes one claim and ends the flows of the keys no other claim
// holds. It reports whether the claim existed.
func (m *Manager) Unclaim(h Holder) (bool, error) {
	n, err := m.remove(func(c *Claim) bool { return c.Holder == h }, Removed)
	return n > 0, err
}

// RevokeIdentity revokes every claim of one identity (an endpoint removed).
func (m *Manager) RevokeIdentity(id uint32) (int, error) {
	return m.remove(func(c *Claim) bool { return c.Identity == id }, Removed)
}

// RevokeOwner revokes every claim one owner made (a rule gone from the set).
func (m *Manager) RevokeOwner(o Owner) (int, error) {
	return m.remove(func(c *Claim) bool { return c.Owner == o }, Removed)
}

// RevokeOwnersExcept revokes the claims of every rule owner not in keep,
// which a reload calls with the ids of the rules that still allow: the
// grants their answers opened stay, the others go. Operator claims stay.
func (m *Manager) RevokeOwnersExcept(keep map[string]bool) (int, error) {
	return m.remove(func(c *Claim) bool { return c.Owner != Operator && !keep[c.Owner.Rule] }, Removed)
}

// Flush revokes every claim.
func (m *Manager) Flush() (int, error) {
	return m.remove(func(*Claim) bool { return true }, Removed)
}

// Sweep removes expired claims (their flows live on: the program already
// refuses an expired entry for new connections) and returns how many went.
// While the kernel holds grants it refused to delete, it tries to remove
// every grant again instead.
func (m *Manager) Sweep() (int, error) {
	now := m.now()
	return m.remove(func(c *Claim) bool { return !c.live(now) }, Expired)
}

// remove removes the claims pick selects. While stuck, any removal tries
// the whole reset again: nothing less would make the kernel agree with
// the index.
func (m *Manager) remove(pick func(*Claim) bool, why Change) (int, error) {
	m.op.Lock()
	defer m.op.Unlock()
	if m.stuck {
		return m.reset(errors.New("grants the kernel refused to delete are still there"), why)
	}
	m.mu.Lock()
	next := map[Holder]*Claim{}
	for h, c := range m.claims {
		if pick(c) {
			next[h] = nil
		}
	}
	m.mu.Unlock()
	return m.update(next, why)
}

// update replaces the claims of next's holders (nil: removed) and writes
// the kernel entries their keys need: puts first, so that a renewal never
// closes what it keeps, then deletes. A refused put undoes the puts before
// it and changes nothing; a refused delete (or undo) resets everything. It
// returns how many claims went. Callers hold m.op.
func (m *Manager) update(next map[Holder]*Claim, why Change) (int, error) {
	type write struct {
		g, old datapath.Grant
		had    bool
	}
	m.mu.Lock()
	affected := map[datapath.GrantKey]struct{}{}
	for h, c := range next {
		if old := m.claims[h]; old != nil {
			for _, k := range old.Keys {
				affected[k] = struct{}{}
			}
		}
		if c != nil {
			for _, k := range c.Keys {
				affected[k] = struct{}{}
			}
		}
	}
	var puts []write
	var dels []datapath.GrantKey
	var narrowed []datapath.GrantKey // lost the private flag: their flows end on a revoke
	for _, k := range sortedKeys(affected) {
		want, ok := m.desiredLocked(k, next)
		old, had := m.written[k]
		switch {
		case ok && (!had || old != want):
			puts = append(puts, write{g: want, old: old, had: had})
			if had && old.AllowPrivate && !want.AllowPrivate {
				narrowed = append(narrowed, k)
			}
		case !ok && had:
			dels = append(dels, k)
		}
	}
	m.mu.Unlock()

	for i, w := range puts {
		if err := m.k.PutGrant(w.g); err != nil {
			err = fmt.Errorf("put grant %v: %w", w.g.GrantKey, err)
			var undo []error
			for _, u := range slices.Backward(puts[:i]) {
				if u.had {
					undo = append(undo, m.k.PutGrant(u.old))
				} else if _, err := m.k.DeleteGrant(u.g.GrantKey); err != nil {
					undo = append(undo, err)
				}
			}
			if uerr := errors.Join(undo...); uerr != nil {
				// The kernel may hold what no claim asks for now.
				return m.reset(fmt.Errorf("%w; undoing the puts before it failed: %v", err, uerr), Removed)
			}
			return 0, err
		}
	}
	var delErrs []error
	deleted := make([]datapath.GrantKey, 0, len(dels))
	refused := map[datapath.GrantKey]bool{}
	for _, k := range dels {
		if _, err := m.k.DeleteGrant(k); err != nil {
			delErrs = append(delErrs, fmt.Errorf("delete grant %v: %w", k, err))
			refused[k] = true
			continue
		}
		deleted = append(deleted, k)
	}

	m.mu.Lock()
	var gone, added []Claim
	for h, c := range next {
		old := m.claims[h]
		if c == nil && old != nil && slices.ContainsFunc(old.Keys, func(k datapath.GrantKey) bool { return refused[k] }) {
			continue // the kernel still holds it: listed until the reset agrees
		}
		if old != nil {
			m.unindexLocked(old)
			if c == nil {
				delete(m.claims, h)
				gone = append(gone, *old)
			}
		}
		if c != nil {
			m.claims[h] = c
			for _, k := range c.Keys {
				set := m.byKey[k]
				if set == nil {
					set = map[Holder]struct{}{}
					m.byKey[k] = set
				}
				set[h] = struct{}{}
			}
			added = append(added, *c)
		}
	}
	for _, w := range puts {
		m.written[w.g.GrantKey] = w.g
	}
	for _, k := range deleted {
		delete(m.written, k)
	}
	m.mu.Unlock()
	for _, c := range gone {
		m.notify(c, why)
	}
	for _, c := range added {
		m.notify(c, Added)
	}

	var errs []error
	if why == Removed {
		if _, err := m.k.EndGrantFlows(append(deleted, narrowed...)); err != nil {
			errs = append(errs, fmt.Errorf("end the flows of %d revoked grants: %w", len(deleted)+len(narrowed), err))
		}
	}
	if err := errors.Join(delErrs...); err != nil {
		n, rerr := m.reset(err, why)
		return len(gone) + n, errors.Join(append(errs, rerr)...)
	}
	return len(gone), errors.Join(errs...)
}

// desiredLocked is the kernel entry key needs with next's claims in place
// of the index's, and false when no claim holds it.
func (m *Manager) desiredLocked(key datapath.GrantKey, next map[Holder]*Claim) (datapath.Grant, bool) {
	holders := maps.Clone(m.byKey[key])
	if holders == nil {
		holders = map[Holder]struct{}{}
	}
	for h := range next {
		holders[h] = struct{}{}
	}
	g := datapath.Grant{GrantKey: key}
	n := 0
	for h := range holders {
		c, ok := next[h]
		if !ok {
			c = m.claims[h]
		}
		if c == nil || !slices.Contains(c.Keys, key) {
			continue
		}
		switch {
		case n == 0:
			g.Expires = c.Expires
		case g.Expires.IsZero():
		case c.Expires.IsZero() || c.Expires.After(g.Expires):
			g.Expires = c.Expires
		}
		g.AllowPrivate = g.AllowPrivate || c.AllowPrivate
		n++
	}
	return g, n > 0
}

// reset deletes every grant the index wrote and the kernel lists (FR-014).
// If the kernel agrees, the index is emptied and the identities closed
// earlier are reopened; if not, the identities that may keep a grant are
// closed and the claims whose keys may remain stay listed. Callers hold
// m.op.
func (m *Manager) reset(cause error, why Change) (int, error) {
	m.mu.Lock()
	keys := maps.Clone(m.written)
	m.mu.Unlock()
	var failures []error
	if listed, err := m.k.Grants(); err != nil {
		failures = append(failures, fmt.Errorf("list grants: %w", err))
	} else {
		for _, g := range listed {
			keys[g.GrantKey] = g
		}
	}
	failed := map[datapath.GrantKey]bool{}
	var deleted []datapath.GrantKey
	for _, k := range sortedKeys(keys) {
		if _, err := m.k.DeleteGrant(k); err != nil {
			failed[k] = true
			failures = append(failures, fmt.Errorf("delete grant %v: %w", k, err))
			continue
		}
		deleted = append(deleted, k)
	}
	flowsLeft := false
	if _, err := m.k.EndGrantFlows(deleted); err != nil {
		failures = append(failures, fmt.Errorf("end the flows of %d grants: %w", len(deleted), err))
		flowsLeft = true
	}

	m.mu.Lock()
	var gone []Claim
	for h, c := range m.claims {
		if slices.ContainsFunc(c.Keys, func(k datapath.GrantKey) bool { return failed[k] }) && len(failures) > 0 {
			continue
		}
		m.unindexLocked(c)
		delete(m.claims, h)
		gone = append(gone, *c)
	}
	for _, k := range deleted {
		delete(m.written, k)
	}
	ids := map[uint32]bool{}
	for k := range failed {
		ids[k.Identity] = true
	}
	if flowsLeft { // their connections may live on
		for _, k := range deleted {
			ids[k.Identity] = true
		}
	}
	for _, c := range m.claims {
		ids[c.Identity] = true
	}
	var reopen []uint32
	m.stuck = len(failures) > 0
	if !m.stuck {
		reopen = slices.Sorted(maps.Keys(m.closed))
		clear(m.closed)
	} else {
		for id := range ids {
			m.closed[id] = true
		}
	}
	m.mu.Unlock()
	for _, c := range gone {
		m.notify(c, why)
	}
	if !m.stuck {
		if len(reopen) > 0 && m.opts.Reopen != nil {
			m.opts.Reopen(reopen)
		}
		return len(gone), &ResetError{Cause: cause, Removed: len(gone)}
	}
	e := &ResetError{Cause: cause, Removed: len(gone), Stuck: true, Failed: errors.Join(failures...), Closed: slices.Sorted(maps.Keys(ids))}
	if m.opts.Close == nil {
		e.CloseErr = errors.New("no way to close an identity")
	} else {
		e.CloseErr = m.opts.Close(e.Closed)
	}
	return len(gone), e
}

// Closed reports whether id was closed because the kernel refused to
// delete grants: whatever would give its port its identity again must
// wait until the Manager reopens it.
func (m *Manager) Closed(id uint32) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed[id]
}

func (m *Manager) notify(c Claim, ch Change) {
	if m.opts.OnChange == nil {
		return
	}
	for _, k := range c.Keys {
		m.opts.OnChange(Grant{Grant: datapath.Grant{GrantKey: k, Expires: c.Expires, AllowPrivate: c.AllowPrivate}, Owner: c.Owner}, ch)
	}
}

// ClaimOf returns the claim h holds, expired or not.
func (m *Manager) ClaimOf(h Holder) (Claim, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.claims[h]
	if !ok {
		return Claim{}, false
	}
	out := *c
	out.Keys = slices.Clone(c.Keys)
	return out, true
}

// Get returns the kernel's entry for key as the index wrote it, with the
// owner of one claim holding it (the operator's, if any).
func (m *Manager) Get(key datapath.GrantKey) (Grant, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.written[key]
	if !ok {
		return Grant{}, false
	}
	out := Grant{Grant: g}
	first := true
	for h := range m.byKey[key] {
		if first || h.Owner == Operator {
			out.Owner = h.Owner
			first = false
		}
	}
	return out, true
}

// Claims returns the live claims (expired ones left out), sorted by
// identity, destination, protocol and port.
func (m *Manager) Claims() []Claim {
	now := m.now()
	m.mu.Lock()
	out := make([]Claim, 0, len(m.claims))
	for _, c := range m.claims {
		if c.live(now) {
			cc := *c
			cc.Keys = slices.Clone(c.Keys)
			out = append(out, cc)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Claim) int {
		return cmp.Or(cmp.Compare(a.Identity, b.Identity), cmp.Compare(a.Destination, b.Destination),
			cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Owner.Rule, b.Owner.Rule))
	})
	return out
}

// List returns every key of every live claim as that claim holds it,
// sorted by identity and key.
func (m *Manager) List() []Grant {
	var out []Grant
	for _, c := range m.Claims() {
		for _, k := range c.Keys {
			out = append(out, Grant{Grant: datapath.Grant{GrantKey: k, Expires: c.Expires, AllowPrivate: c.AllowPrivate}, Owner: c.Owner})
		}
	}
	slices.SortFunc(out, func(a, b Grant) int {
		return cmp.Or(cmp.Compare(a.Identity, b.Identity), a.Dst.Compare(b.Dst), cmp.Compare(a.HostBits, b.HostBits),
			cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Owner.Rule, b.Owner.Rule))
	})
	return out
}

// Count is the number of claims the index holds, expired ones not yet
// swept included.
func (m *Manager) Count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.claims)
}

// CountOwned is how many claims of owner o identity id holds (the
// operator's per-container cap).
func (m *Manager) CountOwned(id uint32, o Owner) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, c := range m.claims {
		if c.Identity == id && c.Owner == o {
			n++
		}
	}
	return n
}

// KernelEntries is how many entries the index wrote into the kernel.
func (m *Manager) KernelEntries() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.written)
}

func (m *Manager) unindexLocked(c *Claim) {
	for _, k := range c.Keys {
		delete(m.byKey[k], c.Holder)
		if len(m.byKey[k]) == 0 {
			delete(m.byKey, k)
		}
	}
}

// sortedKeys orders keys so that kernel calls (and their errors) come in a
// stable order.
func sortedKeys[V any](set map[datapath.GrantKey]V) []datapath.GrantKey {
	out := slices.Collect(maps.Keys(set))
	slices.SortFunc(out, func(a, b datapath.GrantKey) int {
		return cmp.Or(cmp.Compare(a.Identity, b.Identity), a.Dst.Compare(b.Dst), cmp.Compare(a.HostBits, b.HostBits),
			cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
	})
	return out
}
