package grants

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/datapath"
)

// fakeKernel is the grants map as a Go map, with switchable failures.
type fakeKernel struct {
	entries  map[datapath.GrantKey]datapath.Grant
	revoked  []datapath.GrantKey // EndGrantFlows calls
	failOn   map[datapath.GrantKey]bool
	failPuts bool
}

func newFake() *fakeKernel {
	return &fakeKernel{entries: map[datapath.GrantKey]datapath.Grant{}, failOn: map[datapath.GrantKey]bool{}}
}

var errKernel = errors.New("kernel says no")

func (f *fakeKernel) PutGrant(g datapath.Grant) error {
	if f.failPuts {
		return errKernel
	}
	f.entries[g.GrantKey] = g
	return nil
}

func (f *fakeKernel) EndGrantFlows(ks []datapath.GrantKey) (int, error) {
	f.revoked = append(f.revoked, ks...)
	return len(ks), nil
}

func (f *fakeKernel) DeleteGrant(k datapath.GrantKey) (bool, error) {
	if f.failOn[k] {
		return false, errKernel
	}
	_, ok := f.entries[k]
	delete(f.entries, k)
	return ok, nil
}

func (f *fakeKernel) Grants() ([]datapath.Grant, error) {
	out := make([]datapath.Grant, 0, len(f.entries))
	for _, g := range f.entries {
		out = append(out, g)
	}
	return out, nil
}

func key(id uint32, dst string, port uint16) datapath.GrantKey {
	return datapath.GrantKey{Identity: id, Dst: netip.MustParseAddr(dst), Proto: 6, Port: port}
}

func grant(k datapath.GrantKey, o Owner) Grant {
	return Grant{Grant: datapath.Grant{GrantKey: k}, Owner: o}
}

func TestOwnersAndIdentities(t *testing.T) {
	k := newFake()
	m := New(k, Options{})
	a1web, a1db, a2web := key(1, "198.51.100.10", 443), key(1, "198.51.100.20", 5432), key(2, "198.51.100.10", 443)
	pypi := Owner{Rule: "allow-pypi"}
	for _, g := range []Grant{grant(a1web, pypi), grant(a1db, Operator), grant(a2web, pypi)} {
		if err := m.Put(g); err != nil {
			t.Fatal(err)
		}
	}
	if m.Count() != 3 || len(k.entries) != 3 {
		t.Fatalf("count %d, kernel %d, want 3 and 3", m.Count(), len(k.entries))
	}

	// A reload in which allow-pypi no longer allows revokes exactly its
	// grants; the operator's stays.
	n, err := m.RevokeOwnersExcept(map[string]bool{"allow-other": true})
	if err != nil || n != 2 {
		t.Fatalf("RevokeOwnersExcept = %d, %v; want 2", n, err)
	}
	if _, ok := k.entries[a1db]; !ok || len(k.entries) != 1 {
		t.Fatalf("kernel after the reload: %v, want only the operator's grant", k.entries)
	}

	// A removed identity loses all of its own, whoever made them.
	if err := m.Put(grant(a1web, pypi)); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(grant(a2web, Operator)); err != nil {
		t.Fatal(err)
	}
	n, err = m.RevokeIdentity(1)
	if err != nil || n != 2 {
		t.Fatalf("RevokeIdentity = %d, %v; want 2", n, err)
	}
	if got := m.List(); len(got) != 1 || got[0].GrantKey != a2web || got[0].Owner != Operator {
		t.Fatalf("List = %+v, want a2's operator grant", got)
	}
}

// TestPutChangesHands: one kernel entry per key, so a key another owner
// held is then the new owner's alone.
func TestPutChangesHands(t *testing.T) {
	m := New(newFake(), Options{})
	k1 := key(1, "198.51.100.10", 443)
	_ = m.Put(grant(k1, Owner{Rule: "a"}))
	_ = m.Put(grant(k1, Operator))
	if n, _ := m.RevokeOwner(Owner{Rule: "a"}); n != 0 {
		t.Fatalf("rule a revoked %d grants it no longer owns", n)
	}
	if m.Count() != 1 {
		t.Fatalf("count %d, want 1", m.Count())
	}
}

// TestFailedRevokeStaysListed: a grant the kernel refuses to delete is not
// dropped from the index (it still allows), and the next attempt clears it.
func TestFailedRevokeStaysListed(t *testing.T) {
	k := newFake()
	m := New(k, Options{})
	stuck, fine := key(1, "198.51.100.10", 443), key(1, "198.51.100.11", 443)
	_ = m.Put(grant(stuck, Operator))
	_ = m.Put(grant(fine, Operator))
	k.failOn[stuck] = true
	n, err := m.Flush()
	if err == nil || n != 1 {
		t.Fatalf("Flush = %d, %v; want 1 and an error", n, err)
	}
	if got := m.List(); len(got) != 1 || got[0].GrantKey != stuck {
		t.Fatalf("List after a failed revoke = %+v, want the stuck grant", got)
	}
	if len(k.revoked) != 1 || k.revoked[0] != fine {
		t.Fatalf("flows ended for %v, want only the revoked grant's", k.revoked)
	}
	delete(k.failOn, stuck)
	if n, err := m.Flush(); err != nil || n != 1 || m.Count() != 0 {
		t.Fatalf("second Flush = %d, %v, count %d", n, err, m.Count())
	}
}

// TestFailedPutIndexesNothing: the kernel first, the index after.
func TestFailedPutIndexesNothing(t *testing.T) {
	k := newFake()
	k.failPuts = true
	m := New(k, Options{})
	if err := m.Put(grant(key(1, "198.51.100.10", 443), Operator)); err == nil {
		t.Fatal("Put succeeded on a failing kernel")
	}
	if m.Count() != 0 {
		t.Fatalf("count %d after a failed put", m.Count())
	}
}

// TestSweepDeletesWithoutEndingFlows: expiry deletes entries with
// DeleteGrant (flows live on), never with EndGrantFlows.
func TestSweepDeletesWithoutEndingFlows(t *testing.T) {
	k := newFake()
	m := New(k, Options{})
	now := time.Now()
	m.now = func() time.Time { return now }
	old, live := key(1, "198.51.100.10", 443), key(1, "198.51.100.11", 443)
	g := grant(old, Operator)
	g.Expires = now.Add(-time.Second)
	_ = m.Put(g)
	g = grant(live, Operator)
	g.Expires = now.Add(time.Hour)
	_ = m.Put(g)
	if got := m.List(); len(got) != 1 || got[0].GrantKey != live {
		t.Fatalf("List = %+v, want only the live grant", got)
	}
	if n, err := m.Sweep(); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if len(k.revoked) != 0 {
		t.Fatalf("the sweep ended flows: %v", k.revoked)
	}
	if _, ok := k.entries[old]; ok {
		t.Fatal("the expired entry is still in the kernel")
	}
}

func TestClearKernel(t *testing.T) {
	k := newFake()
	k.entries[key(9, "198.51.100.10", 443)] = datapath.Grant{GrantKey: key(9, "198.51.100.10", 443)}
	m := New(k, Options{})
	if n, err := m.ClearKernel(); err != nil || n != 1 || len(k.entries) != 0 {
		t.Fatalf("ClearKernel = %d, %v, kernel %v", n, err, k.entries)
	}
}

func TestOnChange(t *testing.T) {
	seen := map[Change]int{}
	m := New(newFake(), Options{OnChange: func(_ Grant, c Change) { seen[c]++ }})
	now := time.Now()
	m.now = func() time.Time { return now }
	_ = m.Put(grant(key(1, "198.51.100.10", 443), Operator))
	_ = m.Put(grant(key(1, "198.51.100.11", 443), Operator))
	old := grant(key(1, "198.51.100.12", 443), Owner{Rule: "r"})
	old.Expires = now.Add(-time.Second)
	_ = m.Put(old)
	if n, err := m.Sweep(); n != 1 || err != nil {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	_, _ = m.Flush()
	if seen[Added] != 3 || seen[Removed] != 2 || seen[Expired] != 1 {
		t.Fatalf("OnChange saw %v; want 3 added, 2 removed, 1 expired", seen)
	}
}
