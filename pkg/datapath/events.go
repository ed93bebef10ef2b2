package datapath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf/ringbuf"
)

// DropEvent is one sampled drop.
type DropEvent struct {
	Ifindex   uint32
	Identity  uint32
	Reason    Reason
	EtherType uint16
	Proto     uint8
	Src, Dst  netip.Addr
	SrcPort   uint16
	DstPort   uint16
	// Boot is the kernel boot-clock time of the drop.
	Boot time.Duration
}

// ReadDropEvents calls fn for every sampled drop until ctx is done.
func (d *Datapath) ReadDropEvents(ctx context.Context, fn func(DropEvent)) error {
	rd, err := ringbuf.NewReader(d.objs.DropEvents)
	if err != nil {
		return fmt.Errorf("open drop event ring buffer: %w", err)
	}
	go func() {
		<-ctx.Done()
		rd.Close()
	}()
	var raw portIngressDropEvent
	for {
		rec, err := rd.Read()
		if err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read drop event: %w", err)
		}
		if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &raw); err != nil {
			continue
		}
		fn(DropEvent{
			Ifindex:   raw.Ifindex,
			Identity:  raw.Identity,
			Reason:    Reason(raw.Reason),
			EtherType: raw.Ethertype,
			Proto:     raw.Proto,
			Src:       netip.AddrFrom4(raw.Saddr),
			Dst:       netip.AddrFrom4(raw.Daddr),
			SrcPort:   raw.Sport,
			DstPort:   raw.Dport,
			Boot:      time.Duration(raw.TimeNs),
		})
	}
}
