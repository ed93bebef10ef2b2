package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// FlowOwner says what allowed a flow when it began.
type FlowOwner uint8

// Flow owners, as the program numbers them.
const (
	FlowRule  = FlowOwner(portIngressFlowOwnerFLOW_RULE)
	FlowGrant = FlowOwner(portIngressFlowOwnerFLOW_GRANT)
)

// String is "rule" or "grant".
func (o FlowOwner) String() string {
	switch o {
	case FlowRule:
		return "rule"
	case FlowGrant:
		return "grant"
	}
	return fmt.Sprintf("owner_%d", uint8(o))
}

// Flow is a TCP or UDP flow the program allowed when it began. Its packets
// pass with one lookup while Generation is the active rule generation; after
// a reload the next packet decides again.
type Flow struct {
	Ifindex    int // the port it came from
	Identity   uint32
	Dst        netip.Addr
	Proto      uint8
	SrcPort    uint16
	DstPort    uint16
	Generation uint32
	Owner      FlowOwner
	Rule       uint32 // FlowRule: the rule's index in Generation
}

// FlowMatch selects flows by who sent them and where to, the way a grant
// key does: a zero Ifindex, Identity, Dst, Proto or Port matches every
// value. With HostBits, Dst is a prefix (GrantKey.HostBits) and every
// destination inside it matches.
type FlowMatch struct {
	Ifindex  int
	Identity uint32
	Dst      netip.Addr
	HostBits uint8
	Proto    uint8
	Port     uint16
	// GrantsOnly leaves flows a rule opened alone.
	GrantsOnly bool
}

func (m FlowMatch) matches(k *portIngressFlowKey, v *portIngressFlowState) bool {
	return (m.Ifindex == 0 || int(k.Ifindex) == m.Ifindex) &&
		(m.Identity == 0 || v.Identity == m.Identity) &&
		(!m.Dst.IsValid() || netip.PrefixFrom(m.Dst, 32-int(m.HostBits)).Contains(netip.AddrFrom4(k.Daddr))) &&
		(m.Proto == 0 || k.Proto == m.Proto) &&
		(m.Port == 0 || k.Dport == m.Port) &&
		(!m.GrantsOnly || FlowOwner(v.Owner) == FlowGrant)
}

// Flows lists the flow table.
func (d *Datapath) Flows() ([]Flow, error) {
	var (
		k   portIngressFlowKey
		v   portIngressFlowState
		out []Flow
	)
	it := d.objs.Flows.Iterate()
	for it.Next(&k, &v) {
		out = append(out, Flow{Ifindex: int(k.Ifindex), Identity: v.Identity, Dst: netip.AddrFrom4(k.Daddr), Proto: k.Proto,
			SrcPort: k.Sport, DstPort: k.Dport, Generation: v.Generation, Owner: FlowOwner(v.Owner), Rule: v.Rule})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list flows: %w", err)
	}
	return out, nil
}

// EndGrantFlows removes the flows that grants with these keys opened (a flow
// a key matches the way the grant matched its first packet), after one wait
// for running programs and in one pass over the flow table, and returns how
// many. Revoking many grants at once costs one grace period, not one each.
func (d *Datapath) EndGrantFlows(keys []GrantKey) (int, error) {
	ms := make([]FlowMatch, 0, len(keys))
	for _, k := range keys {
		ms = append(ms, FlowMatch{Identity: k.Identity, Dst: k.Dst, HostBits: k.HostBits, Proto: k.Proto, Port: k.Port, GrantsOnly: true})
	}
	return d.endFlows(ms)
}

// EndFlows removes the flows m matches and returns how many. It first waits
// until every program run that started before the call has finished, so a
// packet that saw a grant the caller just deleted has already written its
// flow, and that flow is removed too.
func (d *Datapath) EndFlows(m FlowMatch) (int, error) {
	return d.endFlows([]FlowMatch{m})
}

// endFlows removes the flows any of ms matches.
func (d *Datapath) endFlows(ms []FlowMatch) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	if err := d.waitForPrograms(); err != nil {
		return 0, err
	}
	var (
		k    portIngressFlowKey
		v    portIngressFlowState
		keys []portIngressFlowKey
	)
	it := d.objs.Flows.Iterate()
	for it.Next(&k, &v) {
		for _, m := range ms {
			if m.matches(&k, &v) {
				keys = append(keys, k)
				break
			}
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("end flows: list: %w", err)
	}
	n := 0
	for _, k := range keys {
		err := d.objs.Flows.Delete(&k)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("end flow of ifindex %d to %v: %w", k.Ifindex, netip.AddrFrom4(k.Daddr), err)
		}
		n++
	}
	return n, nil
}

// waitForPrograms returns once every program run that started before it has
// finished: the kernel waits for an RCU grace period on each update of a map
// of maps, and the barrier map is one no program reads.
func (d *Datapath) waitForPrograms() error {
	d.barrierMu.Lock()
	defer d.barrierMu.Unlock()
	if d.barrierInner == nil {
		spec := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
		m, err := ebpf.NewMap(spec)
		if err != nil {
			return fmt.Errorf("create barrier map: %w", err)
		}
		d.barrierInner = m
	}
	if err := d.objs.Barrier.Put(uint32(0), d.barrierInner); err != nil {
		return fmt.Errorf("wait for running programs: %w", err)
	}
	return nil
}
