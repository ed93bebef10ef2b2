package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
)

// GrantKey names one allow entry. Port 0 means every port of Proto; Proto 0
// means every protocol and port.
//
// HostBits makes the entry cover a prefix (a CIDR grant): Dst is the
// prefix's address (its host bits zero) and HostBits how many low bits any
// address inside may have, so the zero value is the one address Dst (also
// what a /32 is) and 32 is 0.0.0.0/0. Exact entries live in the grants
// hash, which a first packet asks first; prefix entries in the
// grant_prefixes trie, asked only when no exact entry allows.
type GrantKey struct {
	Identity uint32
	Dst      netip.Addr
	HostBits uint8
	Proto    uint8
	Port     uint16
}

// Prefix is the destination prefix the key covers (a /32 for an exact key).
func (k GrantKey) Prefix() netip.Prefix {
	return netip.PrefixFrom(k.Dst, 32-int(k.HostBits))
}

// PrefixKey returns the key of a grant on p, exact when p is a /32. p must be
// IPv4 and masked; the datapath refuses the key otherwise.
func PrefixKey(identity uint32, p netip.Prefix, proto uint8, port uint16) GrantKey {
	return GrantKey{Identity: identity, Dst: p.Addr(), HostBits: uint8(32 - p.Bits()), Proto: proto, Port: port}
}

// String is "<identity> <prefix or address> <proto>/<port>" for errors and logs.
func (k GrantKey) String() string {
	dst := k.Dst.String()
	if k.HostBits != 0 {
		dst = k.Prefix().String()
	}
	return fmt.Sprintf("identity %d to %s %s/%d", k.Identity, dst, ProtoName(k.Proto), k.Port)
}

// Grant is an allow entry with its expiry. A zero Expires never expires.
type Grant struct {
	GrantKey
	Expires time.Time
	Rule    uint32
	// AllowPrivate lets the grant open a restricted destination (see
	// SetFences); without it such a grant opens nothing. A prefix grant
	// opens a fenced range only when it lies inside the range.
	AllowPrivate bool
}

// String is the key, its expiry and its private flag (without it, %v of a
// Grant would print GrantKey's String alone).
func (g Grant) String() string {
	s := g.GrantKey.String()
	if !g.Expires.IsZero() {
		s += " until " + g.Expires.Format(time.RFC3339)
	}
	if g.AllowPrivate {
		s += " private"
	}
	return s
}

func (k GrantKey) check() error {
	if !k.Dst.Is4() {
		return fmt.Errorf("grant destination %s is not IPv4", k.Dst)
	}
	if k.Proto == 0 && k.Port != 0 {
		return errors.New("grant port requires a protocol")
	}
	if k.HostBits > 32 {
		return fmt.Errorf("grant destination %s: %d host bits", k.Dst, k.HostBits)
	}
	if p := k.Prefix(); p.Masked() != p {
		return fmt.Errorf("grant destination %s has host bits set (%s)", p, p.Masked())
	}
	return nil
}

func (k GrantKey) raw() portIngressGrantKey {
	return portIngressGrantKey{Identity: k.Identity, Daddr: k.Dst.As4(), Dport: k.Port, Proto: k.Proto}
}

func (k GrantKey) rawPrefix() portIngressGrantPrefixKey {
	return portIngressGrantPrefixKey{Prefixlen: grantPrefixExactBits + 32 - uint32(k.HostBits),
		Identity: k.Identity, Daddr: k.Dst.As4(), Dport: k.Port, Proto: k.Proto}
}

// grantPrefixExactBits is GRANT_PREFIX_EXACT_BITS of bpf/lib/types.h.
const grantPrefixExactBits = uint32(portIngressGrantPrefixBitsGRANT_PREFIX_EXACT_BITS)

// PutGrant inserts or replaces an allow entry. The expiry is converted to the
// kernel's boot clock here, once, and checked per packet in the program, so a
// late sweeper never extends a grant.
func (d *Datapath) PutGrant(g Grant) error {
	if err := g.check(); err != nil {
		return err
	}
	val := portIngressGrantValue{Rule: g.Rule, Prefixlen: uint8(32 - g.HostBits)}
	if g.AllowPrivate {
		val.Flags = grantFlagPrivate
	}
	if !g.Expires.IsZero() {
		left := time.Until(g.Expires)
		if left <= 0 {
			return fmt.Errorf("grant for %s already expired", g.Prefix())
		}
		val.ExpiresNs = uint64(bootNow() + left)
	}
	var err error
	if g.HostBits == 0 {
		key := g.raw()
		err = d.objs.Grants.Put(&key, &val)
	} else {
		key := g.rawPrefix()
		err = d.objs.GrantPrefixes.Put(&key, &val)
	}
	if err != nil {
		return fmt.Errorf("put grant %v: %w", g.GrantKey, err)
	}
	return nil
}

// grantFlagPrivate is GRANT_F_PRIVATE of bpf/lib/types.h, as grant_value.flags holds it.
const grantFlagPrivate = uint8(portIngressGrantFlagGRANT_F_PRIVATE)

// DeleteGrant removes an allow entry; it reports whether it existed. The
// flows it opened live on: EndGrantFlows ends them too (grants.Manager
// does both on a revoke).
func (d *Datapath) DeleteGrant(k GrantKey) (bool, error) {
	if err := k.check(); err != nil {
		return false, err
	}
	var err error
	if k.HostBits == 0 {
		key := k.raw()
		err = d.objs.Grants.Delete(&key)
	} else {
		key := k.rawPrefix()
		err = d.objs.GrantPrefixes.Delete(&key)
	}
	if err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("delete grant %v: %w", k, err)
	}
	return true, nil
}

// Grants lists every allow entry, exact and prefix, expired ones included
// until swept.
func (d *Datapath) Grants() ([]Grant, error) {
	now := bootNow()
	wall := time.Now()
	var out []Grant
	value := func(key GrantKey, v portIngressGrantValue) {
		g := Grant{GrantKey: key, Rule: v.Rule, AllowPrivate: v.Flags&grantFlagPrivate != 0}
		if v.ExpiresNs != 0 {
			g.Expires = wall.Add(time.Duration(v.ExpiresNs) - now)
		}
		out = append(out, g)
	}
	var (
		k  portIngressGrantKey
		pk portIngressGrantPrefixKey
		v  portIngressGrantValue
	)
	it := d.objs.Grants.Iterate()
	for it.Next(&k, &v) {
		value(GrantKey{Identity: k.Identity, Dst: netip.AddrFrom4(k.Daddr), Proto: k.Proto, Port: k.Dport}, v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list grants: %w", err)
	}
	it = d.objs.GrantPrefixes.Iterate()
	for it.Next(&pk, &v) {
		bits := int(pk.Prefixlen) - int(grantPrefixExactBits)
		if bits < 0 || bits > 32 {
			return nil, fmt.Errorf("list prefix grants: entry of prefix length %d", pk.Prefixlen)
		}
		value(GrantKey{Identity: pk.Identity, Dst: netip.AddrFrom4(pk.Daddr), HostBits: uint8(32 - bits), Proto: pk.Proto, Port: pk.Dport}, v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list prefix grants: %w", err)
	}
	return out, nil
}
