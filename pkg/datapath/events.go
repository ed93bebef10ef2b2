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
	// SYN is set for a TCP SYN: the packet tried to open a connection.
	SYN bool
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
		fn(dropEventOf(&raw))
	}
}

// dropEventOf decodes a record: the drop's reason beside the flow the program
// parsed the packet into (struct drop_event of bpf/lib/types.h).
func dropEventOf(raw *portIngressDropEvent) DropEvent {
	f := &raw.Flow
	return DropEvent{
		Ifindex:   f.Ifindex,
		Identity:  f.Identity,
		Reason:    Reason(raw.Reason),
		EtherType: f.Ethertype,
		Proto:     f.Proto,
		Src:       netip.AddrFrom4(f.Saddr),
		Dst:       netip.AddrFrom4(f.Daddr),
		SrcPort:   f.Sport,
		DstPort:   f.Dport,
		SYN:       f.Syn != 0,
		Boot:      time.Duration(raw.TimeNs),
	}
}
