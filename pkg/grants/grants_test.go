package grants

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"outcall.dev/outcall/pkg/datapath"
)

// fakeKernel is the grants map as a Go map, with switchable failures.
type fakeKernel struct {
	entries map[datapath.GrantKey]datapath.Grant
	revoked []datapath.GrantKey // EndGrantFlows calls
	// failOn makes deletes of a key fail: that many times, or always
	// when negative.
	failOn map[datapath.GrantKey]int
	// failDeletes makes the nth delete (1-based) and, with
	// failDeletesAfter, every delete from then on fail.
	deletes          int
	failDeletes      int
	failDeletesAfter bool
	failPuts         bool
	failPutAt        int // the nth put (1-based) fails
	puts             int
}

func newFake() *fakeKernel {
	return &fakeKernel{entries: map[datapath.GrantKey]datapath.Grant{}, failOn: map[datapath.GrantKey]int{}}
}

var errKernel = errors.New("kernel says no")

func (f *fakeKernel) PutGrant(g datapath.Grant) error {
	f.puts++
	if f.failPuts || f.puts == f.failPutAt {
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
	f.deletes++
	if f.failDeletes > 0 && (f.deletes == f.failDeletes || f.failDeletesAfter && f.deletes > f.failDeletes) {
		return false, errKernel
	}
	if n := f.failOn[k]; n != 0 {
		if n > 0 {
			f.failOn[k] = n - 1
		}
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

// opClaim is an operator rule of identity id to dst on TCP/443 opening keys.
func opClaim(id uint32, dst string, expires time.Time, keys ...datapath.GrantKey) Claim {
	return Claim{Holder: Holder{Owner: Operator, Name: dst}, Identity: id, Destination: dst, Proto: 6, Port: 443,
		Keys: keys, Expires: expires}
}

func TestOwnersAndIdentities(t *testing.T) {
	k := newFake()
	m := New(k, Options{})
	pypi, other := Owner{Rule: "allow-pypi"}, Owner{Rule: "allow-other"}
	a1web, a1pypi, a2web := key(1, "198.51.100.10", 443), key(1, "151.101.0.223", 443), key(2, "198.51.100.10", 443)
	for _, g := range []Grant{grant(a1web, Operator), grant(a1pypi, pypi), grant(a2web, other)} {
		if err := m.Put(g); err != nil {
			t.Fatal(err)
		}
	}
	if m.Count() != 3 || len(k.entries) != 3 {
		t.Fatalf("count %d, kernel %d, want 3 and 3", m.Count(), len(k.entries))
	}
	// A reload that keeps allow-other but not allow-pypi revokes a1pypi only.
	n, err := m.RevokeOwnersExcept(map[string]bool{"allow-other": true})
	if err != nil || n != 1 {
		t.Fatalf("RevokeOwnersExcept = %d, %v; want 1", n, err)
	}
	if _, ok := k.entries[a1pypi]; ok {
		t.Fatal("kernel still holds the revoked rule's grant")
	}
	n, err = m.RevokeIdentity(1)
	if err != nil || n != 1 {
		t.Fatalf("RevokeIdentity = %d, %v; want 1", n, err)
	}
	if got := m.List(); len(got) != 1 || got[0].GrantKey != a2web || got[0].Owner != other {
		t.Fatalf("left %+v, want a2's grant", got)
	}
	if !slices.Contains(k.revoked, a1web) || !slices.Contains(k.revoked, a1pypi) {
		t.Fatalf("flows ended for %v, want both revoked keys", k.revoked)
	}
}

// TestSharedKeys: claims holding one key share one kernel entry, the union
// of theirs; removing one leaves what the others hold, and ends the flows
// only of keys no claim holds any more.
func TestSharedKeys(t *testing.T) {
	k := newFake()
	m := New(k, Options{})
	a, b := key(1, "203.0.113.1", 443), key(1, "203.0.113.2", 443)
	soon := time.Now().Add(time.Minute)
	host := opClaim(1, "example.test", time.Time{}, a, b)
	literal := opClaim(1, "203.0.113.1", soon, a)
	for _, c := range []Claim{host, literal} {
		if err := m.Claim(c); err != nil {
			t.Fatal(err)
		}
	}
	// A rule's DNS answer on the same key for a second: it never shortens
	// the operator's persistent grant.
	if err := m.Put(Grant{Grant: datapath.Grant{GrantKey: a, Expires: time.Now().Add(time.Second)}, Owner: Owner{Rule: "r"}}); err != nil {
		t.Fatal(err)
	}
	if len(k.entries) != 2 || !k.entries[a].Expires.IsZero() {
		t.Fatalf("kernel %+v, want a and b, a persistent", k.entries)
	}
	if ok, err := m.Unclaim(host.Holder); !ok || err != nil {
		t.Fatalf("Unclaim = %v, %v", ok, err)
	}
	if _, ok := k.entries[b]; ok {
		t.Fatal("b outlived the only claim that held it")
	}
	if got := k.entries[a]; !got.Expires.Equal(soon) {
		t.Fatalf("a = %+v, want the literal claim's expiry %v", got, soon)
	}
	if !slices.Equal(k.revoked, []datapath.GrantKey{b}) {
		t.Fatalf("flows ended for %v, want b's only", k.revoked)
	}
	if ok, _ := m.Unclaim(literal.Holder); !ok {
		t.Fatal("literal claim not found")
	}
	if got, ok := k.entries[a]; !ok || got.Expires.IsZero() || !got.Expires.Before(soon) {
		t.Fatalf("a = %+v (%v), want the rule's one-second grant", got, ok)
	}
	if g, ok := m.Get(a); !ok || g.Owner != (Owner{Rule: "r"}) {
		t.Fatalf("Get(a) = %+v, %v", g, ok)
	}
	if n, err := m.RevokeOwner(Owner{Rule: "r"}); n != 1 || err != nil || len(k.entries) != 0 {
		t.Fatalf("RevokeOwner = %d, %v; kernel %v", n, err, k.entries)
	}
	if ok, err := m.Unclaim(host.Holder); ok || err != nil {
		t.Fatalf("second Unclaim = %v, %v; want false, nil", ok, err)
	}
}

// TestRenewal: the operator is authoritative (S009-FR-016): a renewal
// replaces the keys and the expiry exactly, temporary to persistent and
// back, keeps the insertion time and counts once.
func TestRenewal(t *testing.T) {
	k := newFake()
	m := New(k, Options{})
	a, b, c := key(1, "203.0.113.1", 443), key(1, "203.0.113.2", 443), key(1, "203.0.113.3", 443)
	first := opClaim(1, "example.test", time.Time{}, a, b)
	if err := m.Claim(first); err != nil {
		t.Fatal(err)
	}
	inserted, _ := m.ClaimOf(first.Holder)
	later := time.Now().Add(30 * time.Second)
	if err := m.Claim(opClaim(1, "example.test", later, b, c)); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.entries[a]; ok || len(k.entries) != 2 || !k.entries[c].Expires.Equal(later) {
		t.Fatalf("kernel %+v, want b and c until %v", k.entries, later)
	}
	got, _ := m.ClaimOf(first.Holder)
	if m.Count() != 1 || m.CountOwned(1, Operator) != 1 || !got.Inserted.Equal(inserted.Inserted) {
		t.Fatalf("count %d, claim %+v; want one claim inserted at %v", m.Count(), got, inserted.Inserted)
	}
	// The handle names the rule: kept by a renewal, the next one for a
	// new rule.
	if inserted.Handle != 1 || got.Handle != 1 {
		t.Fatalf("handles %d then %d after a renewal, want 1 and 1", inserted.Handle, got.Handle)
	}
	other := opClaim(1, "other.test", time.Time{}, key(1, "203.0.113.9", 443))
	if err := m.Claim(other); err != nil {
		t.Fatal(err)
	}
	if o, _ := m.ClaimOf(other.Holder); o.Handle != 2 {
		t.Fatalf("a second rule has handle %d, want 2", o.Handle)
	}
	if err := m.Claim(opClaim(1, "example.test", time.Time{}, b, c)); err != nil {
		t.Fatal(err)
	}
	if !k.entries[b].Expires.IsZero() {
		t.Fatal("a renewal did not make the claim persistent")
	}
}

// TestFailedPutChangesNothing: a refused put leaves no claim, and the puts
// of a renewal before it are undone.
func TestFailedPutChangesNothing(t *testing.T) {
	k := newFake()
	m := New(k, Options{})
	k.failPuts = true
	if err := m.Claim(opClaim(1, "203.0.113.1", time.Time{}, key(1, "203.0.113.1", 443))); err == nil {
		t.Fatal("Claim succeeded over a failing kernel")
	}
	if m.Count() != 0 || len(k.entries) != 0 {
		t.Fatalf("count %d, kernel %v after a failed put", m.Count(), k.entries)
	}
	k.failPuts = false
	a, b, c := key(1, "203.0.113.1", 443), key(1, "203.0.113.2", 443), key(1, "203.0.113.3", 443)
	old := opClaim(1, "example.test", time.Now().Add(time.Minute), a, b)
	if err := m.Claim(old); err != nil {
		t.Fatal(err)
	}
	k.failPutAt, k.puts = 2, 0
	if err := m.Claim(opClaim(1, "example.test", time.Time{}, a, b, c)); err == nil {
		t.Fatal("renewal succeeded with a failing second put")
	}
	if len(k.entries) != 2 || !k.entries[a].Expires.Equal(old.Expires) {
		t.Fatalf("kernel %+v, want a and b as before", k.entries)
	}
	if got, _ := m.ClaimOf(old.Holder); !slices.Equal(got.Keys, old.Keys) {
		t.Fatalf("claim %+v after a failed renewal", got)
	}
}

// threeClaims puts claims of two identities: a1 two operator rules, a2 one
// rule's grant.
func threeClaims(t *testing.T, m *Manager) (a, b, c datapath.GrantKey) {
	t.Helper()
	a, b, c = key(1, "203.0.113.1", 443), key(1, "203.0.113.2", 443), key(2, "203.0.113.3", 443)
	for _, cl := range []Claim{opClaim(1, "203.0.113.1", time.Time{}, a), opClaim(1, "203.0.113.2", time.Time{}, b)} {
		if err := m.Claim(cl); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Put(grant(c, Owner{Rule: "r"})); err != nil {
		t.Fatal(err)
	}
	return a, b, c
}

// TestFailedDeleteRemovesEverything (S009-AS-006, EC-002): one delete the
// kernel refuses on a revoke, a flush or a container's removal, with the
// reset succeeding: no grant is left anywhere, every claim is reported
// removed, and the error says why.
func TestFailedDeleteRemovesEverything(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(m *Manager, a datapath.GrantKey) (int, error)
		want int
	}{
		{"revoke", func(m *Manager, a datapath.GrantKey) (int, error) {
			ok, err := m.Unclaim(Holder{Owner: Operator, Name: "203.0.113.1"})
			return map[bool]int{true: 1}[ok], err
		}, 1 + 2},
		{"flush", func(m *Manager, _ datapath.GrantKey) (int, error) { return m.Flush() }, 3},
		{"identity", func(m *Manager, _ datapath.GrantKey) (int, error) { return m.RevokeIdentity(1) }, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFake()
			closed := 0
			m := New(k, Options{Close: func([]uint32) error { closed++; return nil }})
			a, _, _ := threeClaims(t, m)
			k.failOn[a] = 1 // the first delete of a fails, the reset's succeeds
			n, err := tc.call(m, a)
			var re *ResetError
			if !errors.As(err, &re) || re.Stuck || !errors.Is(err, errKernel) {
				t.Fatalf("err = %v, want a ResetError that is not stuck", err)
			}
			if len(k.entries) != 0 || m.Count() != 0 || m.KernelEntries() != 0 {
				t.Fatalf("kernel %v, count %d after the reset", k.entries, m.Count())
			}
			if tc.name != "revoke" && n != tc.want {
				t.Fatalf("removed %d, want every claim (%d)", n, tc.want)
			}
			if closed != 0 || m.Closed(1) {
				t.Fatal("an identity was closed although the reset succeeded")
			}
			if err := m.Claim(opClaim(1, "203.0.113.9", time.Time{}, key(1, "203.0.113.9", 443))); err != nil {
				t.Fatalf("a claim after a successful reset: %v", err)
			}
		})
	}
}

// TestFailedDeleteAndReset: the kernel refuses the delete and the reset
// (the first delete, the second, all of them): the identities that may
// keep a grant are closed, their claims stay listed, new claims are
// refused, and a later sweep the kernel agrees with clears everything and
// reopens them.
func TestFailedDeleteAndReset(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(k *fakeKernel, a, b, c datapath.GrantKey)
		closed []uint32
	}{
		{"first delete and its retry", func(k *fakeKernel, a, _, _ datapath.GrantKey) { k.failOn[a] = 2 }, []uint32{1}},
		{"second delete, then every one", func(k *fakeKernel, _, _, _ datapath.GrantKey) { k.failDeletes, k.failDeletesAfter = 2, true }, []uint32{1, 2}},
		{"all deletes", func(k *fakeKernel, _, _, _ datapath.GrantKey) { k.failDeletes, k.failDeletesAfter = 1, true }, []uint32{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFake()
			var closed, reopened []uint32
			m := New(k, Options{Close: func(ids []uint32) error { closed = ids; return nil },
				Reopen: func(ids []uint32) { reopened = ids }})
			a, b, c := threeClaims(t, m)
			tc.setup(k, a, b, c)
			_, err := m.Flush()
			var re *ResetError
			if !errors.As(err, &re) || !re.Stuck || re.CloseErr != nil {
				t.Fatalf("Flush = %v, want a stuck ResetError", err)
			}
			if !slices.Equal(closed, tc.closed) || !slices.Equal(re.Closed, tc.closed) {
				t.Fatalf("closed %v (error says %v), want %v", closed, re.Closed, tc.closed)
			}
			for _, id := range tc.closed {
				if !m.Closed(id) {
					t.Errorf("identity %d not reported closed", id)
				}
			}
			if m.Count() == 0 {
				t.Fatal("the claims the kernel may still hold are no longer listed")
			}
			if err := m.Claim(opClaim(3, "203.0.113.9", time.Time{}, key(3, "203.0.113.9", 443))); !errors.Is(err, ErrStuck) {
				t.Fatalf("a new claim while stuck: %v, want ErrStuck", err)
			}
			// The kernel agrees again: the next sweep clears everything.
			clear(k.failOn)
			k.failDeletes = 0
			if _, err := m.Sweep(); !errors.As(err, &re) || re.Stuck {
				t.Fatalf("Sweep = %v, want a reset that is not stuck", err)
			}
			if len(k.entries) != 0 || m.Count() != 0 || m.Closed(1) || !slices.Equal(reopened, tc.closed) {
				t.Fatalf("kernel %v, count %d, reopened %v after the kernel agreed", k.entries, m.Count(), reopened)
			}
			if _, err := m.Sweep(); err != nil {
				t.Fatalf("a sweep with nothing to do: %v", err)
			}
		})
	}
}

// TestCloseFails: when closing the identities fails too, the error names
// both failures and the claims stay listed.
func TestCloseFails(t *testing.T) {
	k := newFake()
	m := New(k, Options{Close: func([]uint32) error { return errors.New("endpoint map says no") }})
	threeClaims(t, m)
	k.failDeletes, k.failDeletesAfter = 1, true
	_, err := m.RevokeIdentity(2)
	var re *ResetError
	if !errors.As(err, &re) || !re.Stuck || re.CloseErr == nil || m.Count() != 3 {
		t.Fatalf("RevokeIdentity = %v, count %d", err, m.Count())
	}
	for _, want := range []string{"removing every grant failed too", "closing identities [1 2] in the datapath failed too", "stay listed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestSweep: expired claims go without ending their flows; a delete that
// fails during the sweep after another succeeded resets everything and
// reports the full count (S009-EC-008).
func TestSweep(t *testing.T) {
	k := newFake()
	m := New(k, Options{})
	now := time.Now()
	m.now = func() time.Time { return now }
	live, old1, old2 := key(1, "198.51.100.10", 443), key(1, "198.51.100.11", 443), key(1, "198.51.100.12", 443)
	for _, c := range []Claim{opClaim(1, "live", now.Add(time.Hour), live), opClaim(1, "old1", now.Add(time.Second), old1), opClaim(1, "old2", now.Add(time.Second), old2)} {
		if err := m.Claim(c); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := m.Sweep(); n != 0 || err != nil {
		t.Fatalf("early Sweep = %d, %v", n, err)
	}
	now = now.Add(2 * time.Second)
	if got := m.List(); len(got) != 1 || got[0].GrantKey != live {
		t.Fatalf("List = %+v, want the live grant only", got)
	}
	k.failDeletes = 2 // the first expired delete works, the second fails once
	n, err := m.Sweep()
	var re *ResetError
	if !errors.As(err, &re) || re.Stuck || n != 3 {
		t.Fatalf("Sweep = %d, %v; want all 3 claims removed by a reset", n, err)
	}
	if len(k.entries) != 0 {
		t.Fatalf("kernel %v after the reset", k.entries)
	}

	k2 := newFake()
	m2 := New(k2, Options{})
	m2.now = m.now
	_ = m2.Claim(opClaim(1, "old", now.Add(-time.Second+time.Millisecond), old1))
	now = now.Add(time.Second)
	if n, err := m2.Sweep(); n != 1 || err != nil || len(k2.entries) != 0 {
		t.Fatalf("Sweep = %d, %v, kernel %v", n, err, k2.entries)
	}
	if len(k2.revoked) != 0 {
		t.Fatalf("a sweep ended flows of %v: expiry is not revocation", k2.revoked)
	}
}

func TestClearKernel(t *testing.T) {
	k := newFake()
	m := New(k, Options{})
	k.entries[key(9, "198.51.100.10", 443)] = datapath.Grant{GrantKey: key(9, "198.51.100.10", 443)}
	if n, err := m.ClearKernel(); err != nil || n != 1 || len(k.entries) != 0 {
		t.Fatalf("ClearKernel = %d, %v; kernel %v", n, err, k.entries)
	}
}

func TestOnChange(t *testing.T) {
	k := newFake()
	var got []Change
	m := New(k, Options{OnChange: func(_ Grant, c Change) { got = append(got, c) }})
	_ = m.Put(grant(key(1, "198.51.100.10", 443), Operator))
	_ = m.Claim(opClaim(1, "example.test", time.Time{}, key(1, "198.51.100.11", 443), key(1, "198.51.100.12", 443)))
	old := grant(key(1, "198.51.100.13", 443), Operator)
	old.Expires = time.Now().Add(time.Millisecond)
	_ = m.Put(old)
	time.Sleep(5 * time.Millisecond)
	if n, err := m.Sweep(); n != 1 || err != nil {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	_, _ = m.Flush()
	want := []Change{Added, Added, Added, Added, Expired, Removed, Removed, Removed}
	if !slices.Equal(got, want) {
		t.Fatalf("changes %v, want %v", got, want)
	}
}
