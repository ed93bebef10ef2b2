package dns

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"

	"outcall.dev/outcall/pkg/network"
)

// udpBatch is how many datagrams a reader takes from the socket in one
// system call (recvmmsg), and at most how many answers it sends in one
// (sendmmsg).
const udpBatch = 32

// maxUDPQuery is the largest query a reader takes: a UDP datagram's
// payload, so that no query is cut.
const maxUDPQuery = 65535

// batchConn is a gateway's UDP socket as ipv4.NewPacketConn takes it: the
// socket's own methods, and its raw access (syscall.Conn) for recvmmsg and
// sendmmsg. It closes only through the socket it wraps (Close), so the
// gateway's port still closes to containers before the socket does; the
// stubs are there for the interfaces x/net asserts, and are never called.
type batchConn struct {
	net.PacketConn
	raw syscall.Conn
}

func (c batchConn) SyscallConn() (syscall.RawConn, error) { return c.raw.SyscallConn() }

func (c batchConn) ReadMsgUDP(b, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	return 0, 0, 0, nil, errors.ErrUnsupported
}

func (c batchConn) Read([]byte) (int, error)  { return 0, errors.ErrUnsupported }
func (c batchConn) Write([]byte) (int, error) { return 0, errors.ErrUnsupported }
func (c batchConn) RemoteAddr() net.Addr      { return nil }

// newBatchConn returns pc for batched reads and writes, or false when pc
// has no raw access (or x/net cannot use it), and the readers read and
// write one datagram per call.
func newBatchConn(pc net.PacketConn) (*ipv4.PacketConn, bool) {
	raw, ok := pc.(syscall.Conn)
	if !ok {
		return nil, false
	}
	if _, ok := pc.LocalAddr().(*net.UDPAddr); !ok {
		return nil, false
	}
	bc := ipv4.NewPacketConn(batchConn{PacketConn: pc, raw: raw})
	// A socket option read fails when x/net did not take the raw access.
	if _, err := bc.TOS(); err != nil {
		return nil, false
	}
	return bc, true
}

// readUDPBatch is readUDP with up to udpBatch datagrams a system call:
// it decides every query of a batch in the order the socket gave them,
// answers what needs no upstream in one write after the last, and hands
// the rest to goroutines of their own, as readUDP does. An answer is in
// the batch only once decide returned it, so its direct_ip grants are
// written (or it is the SERVFAIL of a grant that failed) before it is
// sent.
func (f *Filter) readUDPBatch(ctx context.Context, gw network.Gateway, pc net.PacketConn, bc *ipv4.PacketConn, sem chan struct{}, wg *sync.WaitGroup) {
	in := make([]ipv4.Message, udpBatch)
	slab := make([]byte, udpBatch*maxUDPQuery)
	for i := range in {
		in[i].Buffers = [][]byte{slab[i*maxUDPQuery : (i+1)*maxUDPQuery : (i+1)*maxUDPQuery]}
	}
	out := make([]ipv4.Message, udpBatch)
	for i := range out {
		out[i].Buffers = make([][]byte, 1)
	}
	held := make([]time.Time, udpBatch)
	for {
		n, err := bc.ReadBatch(in, 0)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return // the shutdown's deadline
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		k := 0 // answers in out
		for i := range in[:n] {
			m := &in[i]
			from := m.Addr
			m.Addr = nil
			src, ok := addrOf(from)
			if !ok {
				continue
			}
			res, p := f.decide(ctx, gw, src, m.Buffers[0][:m.N], true)
			if p == nil {
				if res.reply == nil {
					res.observeHold(f)
					continue
				}
				out[k].Buffers[0], out[k].Addr, held[k] = res.reply, from, res.held
				k++
				continue
			}
			f.goUpstream(ctx, gw, pc, from, p, sem, wg)
		}
		if k == 0 {
			continue
		}
		writeBatch(bc, out[:k])
		now := time.Now()
		for j := range out[:k] {
			result{held: held[j]}.observeHoldAt(f, now)
			out[j].Buffers[0], out[j].Addr = nil, nil
		}
	}
}

// writeBatch sends ms, as many per system call as the socket takes; a
// message the kernel refuses is dropped (the client retries) and the rest
// are still sent.
func writeBatch(bc *ipv4.PacketConn, ms []ipv4.Message) {
	for len(ms) > 0 {
		n, err := bc.WriteBatch(ms, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			n = 1 // the first message failed: skip it
		}
		ms = ms[max(n, 1):]
	}
}
