package lab

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"outcall.dev/outcall/internal/packet"
)

// htons is the network byte order of a 16-bit EtherType, as AF_PACKET wants
// its protocol argument.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket opens an AF_PACKET socket for every EtherType on ifname, in
// the calling thread's namespace, and returns it with the interface's index.
func packetSocket(ifname string) (fd, ifindex int, err error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return -1, 0, err
	}
	fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return -1, 0, fmt.Errorf("packet socket: %w", err)
	}
	return fd, ifi.Index, nil
}

// sendTo is where a raw frame goes: out of ifindex, to the frame's own
// destination MAC.
func sendTo(ifindex int, frame []byte) *unix.SockaddrLinklayer {
	sa := &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}
	copy(sa.Addr[:], frame[:6])
	return sa
}

// SendFrame writes one raw Ethernet frame on ifname inside ns, as a root
// agent can: any source, destination, EtherType or trailer.
func SendFrame(ns, ifname string, frame []byte) error {
	return Do(ns, func() error {
		fd, ifindex, err := packetSocket(ifname)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, frame, 0, sendTo(ifindex, frame))
	})
}

// StreamFrames sends a burst of frame copies on ifname inside ns every
// interval until stop is closed, from one socket, and returns how many it
// sent.
func StreamFrames(ns, ifname string, frame []byte, interval time.Duration, stop <-chan struct{}) (int, error) {
	n := 0
	err := Do(ns, func() error {
		fd, ifindex, err := packetSocket(ifname)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := sendTo(ifindex, frame)
		for {
			select {
			case <-stop:
				return nil
			case <-time.After(interval):
			}
			for range 20 {
				if unix.Sendto(fd, frame, 0, sa) == nil {
					n++
				}
			}
		}
	})
	return n, err
}

// FrameCatcher counts frames containing a marker that arrive on an
// interface inside a namespace.
type FrameCatcher struct {
	fd     int
	marker []byte
}

// CatchFrames opens a packet socket on ifname inside ns that counts frames
// carrying marker. Close it when done.
func CatchFrames(ns, ifname string, marker []byte) (*FrameCatcher, error) {
	c := &FrameCatcher{fd: -1, marker: marker}
	err := Do(ns, func() error {
		fd, ifindex, err := packetSocket(ifname)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to %s: %w", ifname, err)
		}
		c.fd = fd
		return nil
	})
	return c, err
}

// Count reads for d and returns how many frames carried the marker.
func (c *FrameCatcher) Count(d time.Duration) int {
	deadline := time.Now().Add(d)
	return c.countUntil(func() bool { return time.Now().After(deadline) })
}

// CountDuring counts the frames carrying the marker that arrive while fn
// runs, and a short grace period after, for frames still in flight.
func (c *FrameCatcher) CountDuring(fn func()) int {
	var done atomic.Bool
	n := make(chan int)
	go func() {
		var graceEnd time.Time
		n <- c.countUntil(func() bool {
			if !done.Load() {
				return false
			}
			if graceEnd.IsZero() {
				graceEnd = time.Now().Add(200 * time.Millisecond)
			}
			return time.Now().After(graceEnd)
		})
	}()
	fn()
	done.Store(true)
	return <-n
}

func (c *FrameCatcher) countUntil(over func() bool) int {
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	_ = unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 65536)
	n := 0
	for !over() {
		m, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue
		}
		if bytes.Contains(buf[:m], c.marker) {
			n++
		}
	}
	return n
}

// Close releases the socket.
func (c *FrameCatcher) Close() { unix.Close(c.fd) }

// udpPayloadFrame is an IPv4/UDP frame carrying payload, for raw sends.
func udpPayloadFrame(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	s, _ := netip.AddrFromSlice(src.To4())
	d, _ := netip.AddrFromSlice(dst.To4())
	f := packet.UDP(srcMAC, dstMAC, s, d, sport, dport)
	f.Payload = payload
	return f.Bytes()
}
