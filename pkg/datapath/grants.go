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
type GrantKey struct {
	Identity uint32
	Dst      netip.Addr
	Proto    uint8
	Port     uint16
}

// Grant is an allow entry with its expiry. A zero Expires never expires.
type Grant struct {
	GrantKey
	Expires time.Time
	Rule    uint32
	// AllowPrivate lets the grant open a restricted destination (see
	// SetFences); without it such a grant opens nothing.
	AllowPrivate bool
}

func (k GrantKey) raw() (portIngressGrantKey, error) {
	if !k.Dst.Is4() {
		return portIngressGrantKey{}, fmt.Errorf("grant destination %s is not IPv4", k.Dst)
	}
	if k.Proto == 0 && k.Port != 0 {
		return portIngressGrantKey{}, errors.New("grant port requires a protocol")
	}
	return portIngressGrantKey{Identity: k.Identity, Daddr: k.Dst.As4(), Dport: k.Port, Proto: k.Proto}, nil
}

// PutGrant inserts or replaces an allow entry. The expiry is converted to the
// kernel's boot clock here, once, and checked per packet in the program, so a
// late sweeper never extends a grant.
func (d *Datapath) PutGrant(g Grant) error {
	key, err := g.raw()
	if err != nil {
		return err
	}
	val := portIngressGrantValue{Rule: g.Rule}
	if g.AllowPrivate {
		val.Flags = grantFlagPrivate
	}
	if !g.Expires.IsZero() {
		left := time.Until(g.Expires)
		if left <= 0 {
			return fmt.Errorf("grant for %s already expired", g.Dst)
		}
		val.ExpiresNs = uint64(bootNow() + left)
	}
	if err := d.objs.Grants.Put(&key, &val); err != nil {
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
	key, err := k.raw()
	if err != nil {
		return false, err
	}
	if err := d.objs.Grants.Delete(&key); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("delete grant %v: %w", k, err)
	}
	return true, nil
}

// Grants lists every allow entry, expired ones included until swept.
func (d *Datapath) Grants() ([]Grant, error) {
	now := bootNow()
	wall := time.Now()
	var (
		k   portIngressGrantKey
		v   portIngressGrantValue
		out []Grant
	)
	it := d.objs.Grants.Iterate()
	for it.Next(&k, &v) {
		g := Grant{GrantKey: GrantKey{Identity: k.Identity, Dst: netip.AddrFrom4(k.Daddr), Proto: k.Proto, Port: k.Dport},
			Rule: v.Rule, AllowPrivate: v.Flags&grantFlagPrivate != 0}
		if v.ExpiresNs != 0 {
			g.Expires = wall.Add(time.Duration(v.ExpiresNs) - now)
		}
		out = append(out, g)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list grants: %w", err)
	}
	return out, nil
}
