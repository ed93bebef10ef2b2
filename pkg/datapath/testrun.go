package datapath

import (
	"fmt"
	"math"
	"time"

	"github.com/cilium/ebpf"
)

// skbContext is the head of struct __sk_buff: the fields BPF_PROG_TEST_RUN
// lets a caller set, padded to the kernel's full size so the context can be
// read back.
type skbContext struct {
	Len            uint32
	PktType        uint32
	Mark           uint32
	QueueMapping   uint32
	Protocol       uint32
	VlanPresent    uint32
	VlanTCI        uint32
	VlanProto      uint32
	Priority       uint32
	IngressIfindex uint32
	Ifindex        uint32
	_              [192 - 44]byte
}

// TestRun runs the program on frame as if it entered on port ifindex with
// mark 0 (BPF_PROG_TEST_RUN), repeat times in one call, and returns the TC
// verdict and mark of the last run. With repeat > 1, perRun is the wall time
// of the call divided by repeat, the program's cost per packet. Runs count
// like real packets: verdict counters, rule hits and drop events move. A
// signal that interrupts the call makes it start over, so the program may
// run more than repeat times.
func (d *Datapath) TestRun(frame []byte, ifindex uint32, repeat int) (verdict int, mark uint32, perRun time.Duration, err error) {
	if repeat < 1 || repeat > math.MaxUint32 {
		return 0, 0, 0, fmt.Errorf("test run: repeat %d out of range", repeat)
	}
	var out skbContext
	opts := &ebpf.RunOptions{
		Data:       frame,
		Context:    skbContext{IngressIfindex: ifindex},
		ContextOut: &out,
		Repeat:     uint32(repeat),
	}
	start := time.Now()
	ret, err := d.objs.OutcallPortIngress.Run(opts)
	elapsed := time.Since(start)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("test run on ifindex %d: %w", ifindex, err)
	}
	if repeat > 1 {
		perRun = elapsed / time.Duration(repeat)
	}
	return int(ret), out.Mark, perRun, nil
}
