// Package grants manages the datapath's allow entries on behalf of their
// owners: the operator (S009 dynamic rules, `outcall grant`) and, with the
// DNS filter, the rules whose answers opened a destination. The kernel map
// is the enforcement; the Manager is the index beside it, by key, by
// identity and by owner, so that revoking everything one identity or one
// rule opened, listing and counting never walk the kernel map under a lock
// the host API waits on.
//
// Every change goes to the kernel first and to the index after, so the index
// never shows a grant the kernel does not enforce as shown. A revoke that the
// kernel refuses leaves the grant listed, marked as not revoked yet, and the
// next Sweep tries again: the datapath may stay open for that one entry,
// never silently.
package grants

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
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
	// Grants lists the kernel's entries (used once, to adopt or clear
	// what an earlier daemon left).
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

// Grant is one allow entry with its owner.
type Grant struct {
	datapath.Grant
	Owner Owner
}

// Manager is the index of grants. Safe for concurrent use.
type Manager struct {
	k        Kernel
	now      func() time.Time
	onChange func(Grant, Change)

	mu         sync.Mutex
	byKey      map[datapath.GrantKey]Grant
	byIdentity map[uint32]map[datapath.GrantKey]struct{}
	byOwner    map[Owner]map[datapath.GrantKey]struct{}
}

// Options configure New.
type Options struct {
	// OnChange, if set, is called after every grant the index gains
	// (added) or loses, outside the Manager's lock.
	OnChange func(g Grant, change Change)
}

// New returns a Manager over k with an empty index.
func New(k Kernel, opts Options) *Manager {
	return &Manager{k: k, now: time.Now, onChange: opts.OnChange,
		byKey:      map[datapath.GrantKey]Grant{},
		byIdentity: map[uint32]map[datapath.GrantKey]struct{}{},
		byOwner:    map[Owner]map[datapath.GrantKey]struct{}{},
	}
}

// ClearKernel revokes every entry the kernel map holds, whoever made it:
// grants do not survive a restart (S009-FR-010), so what an earlier daemon
// left is removed before this one serves. It returns how many went.
func (m *Manager) ClearKernel() (int, error) {
	left, err := m.k.Grants()
	if err != nil {
		return 0, err
	}
	ks := make([]datapath.GrantKey, 0, len(left))
	for _, g := range left {
		ks = append(ks, g.GrantKey)
	}
	return m.revoke(func() []datapath.GrantKey { return ks })
}

// Put inserts or renews a grant for its owner. A key another owner holds
// changes hands: the kernel has one entry per key.
func (m *Manager) Put(g Grant) error {
	if err := m.k.PutGrant(g.Grant); err != nil {
		return err
	}
	m.mu.Lock()
	if old, ok := m.byKey[g.GrantKey]; ok {
		m.unindexLocked(old)
	}
	m.byKey[g.GrantKey] = g
	add(m.byIdentity, g.Identity, g.GrantKey)
	add(m.byOwner, g.Owner, g.GrantKey)
	m.mu.Unlock()
	m.notify(g, Added)
	return nil
}

// Get returns the grant the index holds for key.
func (m *Manager) Get(key datapath.GrantKey) (Grant, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.byKey[key]
	return g, ok
}

// Change is what happened to a grant, for Options.OnChange.
type Change int

// The changes.
const (
	Added   Change = iota // inserted or renewed
	Removed               // revoked: by the operator, a reload, an endpoint's removal
	Expired               // swept after its expiry
)

func (m *Manager) notify(g Grant, c Change) {
	if m.onChange != nil {
		m.onChange(g, c)
	}
}

// Revoke removes one grant and ends its flows. It reports whether the grant
// existed.
func (m *Manager) Revoke(key datapath.GrantKey) (bool, error) {
	n, err := m.revoke(func() []datapath.GrantKey { return []datapath.GrantKey{key} })
	return n > 0, err
}

// RevokeIdentity revokes every grant of one identity (an endpoint removed).
func (m *Manager) RevokeIdentity(id uint32) (int, error) {
	return m.revoke(func() []datapath.GrantKey { return keys(m.byIdentity[id]) })
}

// RevokeOwner revokes every grant one owner made (a rule gone from the set).
func (m *Manager) RevokeOwner(o Owner) (int, error) {
	return m.revoke(func() []datapath.GrantKey { return keys(m.byOwner[o]) })
}

// RevokeOwnersExcept revokes the grants of every rule owner not in keep,
// which a reload calls with the ids of the rules that still allow: the
// grants their answers opened stay, the others go. Operator grants stay.
func (m *Manager) RevokeOwnersExcept(keep map[string]bool) (int, error) {
	return m.revoke(func() []datapath.GrantKey {
		var out []datapath.GrantKey
		for o, ks := range m.byOwner {
			if o != Operator && !keep[o.Rule] {
				out = append(out, keys(ks)...)
			}
		}
		return out
	})
}

// Flush revokes every grant.
func (m *Manager) Flush() (int, error) {
	return m.revoke(func() []datapath.GrantKey { return slices.Collect(maps.Keys(m.byKey)) })
}

// revoke deletes the keys pick selects (under the lock) from the kernel,
// then ends their flows in one pass. A key the kernel refused to delete
// stays indexed, so it is listed and the next call tries again; its flows
// are left alone, since it still allows. It counts the keys that existed in
// the kernel or in the index.
func (m *Manager) revoke(pick func() []datapath.GrantKey) (int, error) {
	m.mu.Lock()
	ks := pick()
	m.mu.Unlock()
	n := 0
	var errs []error
	deleted := make([]datapath.GrantKey, 0, len(ks))
	for _, k := range ks {
		existed, err := m.k.DeleteGrant(k)
		if err != nil {
			errs = append(errs, fmt.Errorf("revoke grant %v: %w", k, err))
			continue
		}
		deleted = append(deleted, k)
		m.mu.Lock()
		g, ok := m.byKey[k]
		if ok {
			m.unindexLocked(g)
			existed = true
		}
		m.mu.Unlock()
		if ok {
			m.notify(g, Removed)
		}
		if existed {
			n++
		}
	}
	if _, err := m.k.EndGrantFlows(deleted); err != nil {
		errs = append(errs, fmt.Errorf("end the flows of %d revoked grants: %w", len(deleted), err))
	}
	return n, errors.Join(errs...)
}

// Sweep deletes expired grants from the kernel (their flows live on: the
// program already refuses the expired entry for new connections) and from
// the index, and returns how many went.
func (m *Manager) Sweep() (int, error) {
	now := m.now()
	m.mu.Lock()
	var expired []datapath.GrantKey
	for k, g := range m.byKey {
		if !g.Expires.IsZero() && !g.Expires.After(now) {
			expired = append(expired, k)
		}
	}
	m.mu.Unlock()
	n := 0
	var errs []error
	for _, k := range expired {
		if _, err := m.k.DeleteGrant(k); err != nil {
			errs = append(errs, err)
			continue
		}
		m.mu.Lock()
		g, ok := m.byKey[k]
		if ok {
			m.unindexLocked(g)
			n++
		}
		m.mu.Unlock()
		if ok {
			m.notify(g, Expired)
		}
	}
	return n, errors.Join(errs...)
}

// List returns the live grants (expired ones left out), sorted by identity
// and key, from the index.
func (m *Manager) List() []Grant {
	now := m.now()
	m.mu.Lock()
	out := make([]Grant, 0, len(m.byKey))
	for _, g := range m.byKey {
		if g.Expires.IsZero() || g.Expires.After(now) {
			out = append(out, g)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Grant) int {
		return cmp.Or(cmp.Compare(a.Identity, b.Identity), a.Dst.Compare(b.Dst),
			cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
	})
	return out
}

// Count is the number of grants the index holds, expired ones not yet
// swept included (the kernel holds as many entries).
func (m *Manager) Count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byKey)
}

func (m *Manager) unindexLocked(g Grant) {
	delete(m.byKey, g.GrantKey)
	remove(m.byIdentity, g.Identity, g.GrantKey)
	remove(m.byOwner, g.Owner, g.GrantKey)
}

func add[K comparable](idx map[K]map[datapath.GrantKey]struct{}, k K, key datapath.GrantKey) {
	set := idx[k]
	if set == nil {
		set = map[datapath.GrantKey]struct{}{}
		idx[k] = set
	}
	set[key] = struct{}{}
}

func remove[K comparable](idx map[K]map[datapath.GrantKey]struct{}, k K, key datapath.GrantKey) {
	delete(idx[k], key)
	if len(idx[k]) == 0 {
		delete(idx, k)
	}
}

func keys(set map[datapath.GrantKey]struct{}) []datapath.GrantKey {
	return slices.Collect(maps.Keys(set))
}
