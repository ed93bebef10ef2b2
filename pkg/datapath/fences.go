package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"outcall.dev/outcall/pkg/netrange"
)

// Fence is a restricted destination prefix beyond the static ranges of
// package netrange, which every datapath fences from the start.
type Fence struct {
	Prefix netip.Prefix
	// Never fences an Outcall subnet: no rule or grant opens it (agents
	// never reach each other; the own gateway's services are decided
	// before fences). Otherwise the prefix (say, one of the host's own
	// addresses) is opened only by a rule that names a prefix inside it
	// and sets egress.allow_private_ips, or by a grant with AllowPrivate.
	Never bool
}

// SetFences replaces the fenced destinations with the static restricted
// ranges plus extra. Entries are added before stale ones go, so no fenced
// address is ever unfenced in between.
func (d *Datapath) SetFences(extra []Fence) error {
	want := map[portIngressRuleDstKey]portIngressFence{}
	add := func(p netip.Prefix, kind portIngressFenceKind) error {
		if !p.IsValid() || !p.Addr().Is4() {
			return fmt.Errorf("set fences: %s is not an IPv4 prefix", p)
		}
		p = p.Masked()
		k := portIngressRuleDstKey{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As4()}
		if old, ok := want[k]; ok && old.Kind == uint8(portIngressFenceKindFENCE_NEVER) {
			return nil
		}
		want[k] = portIngressFence{Kind: uint8(kind), Prefixlen: uint8(p.Bits())}
		return nil
	}
	for _, p := range netrange.Restricted() {
		if err := add(p, portIngressFenceKindFENCE_RESTRICTED); err != nil {
			return err
		}
	}
	for _, f := range extra {
		kind := portIngressFenceKindFENCE_RESTRICTED
		if f.Never {
			kind = portIngressFenceKindFENCE_NEVER
		}
		if err := add(f.Prefix, kind); err != nil {
			return err
		}
	}
	var (
		k     portIngressRuleDstKey
		v     portIngressFence
		stale []portIngressRuleDstKey
	)
	it := d.objs.Fences.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list fences: %w", err)
	}
	for k, v := range want {
		if err := d.objs.Fences.Put(k, v); err != nil {
			return fmt.Errorf("fence %v/%d: %w", netip.AddrFrom4(k.Addr), k.Prefixlen, err)
		}
	}
	for _, k := range stale {
		if err := d.objs.Fences.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("unfence %v/%d: %w", netip.AddrFrom4(k.Addr), k.Prefixlen, err)
		}
	}
	return nil
}

// Fences lists the fenced destinations, the static ranges included.
func (d *Datapath) Fences() ([]Fence, error) {
	var (
		k   portIngressRuleDstKey
		v   portIngressFence
		out []Fence
	)
	it := d.objs.Fences.Iterate()
	for it.Next(&k, &v) {
		out = append(out, Fence{Prefix: netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen)),
			Never: v.Kind == uint8(portIngressFenceKindFENCE_NEVER)})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list fences: %w", err)
	}
	return out, nil
}
