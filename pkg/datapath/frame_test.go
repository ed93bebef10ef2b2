package datapath

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// frame builds Ethernet frames for BPF_PROG_TEST_RUN.
type frame struct {
	srcMAC, dstMAC net.HardwareAddr
	etherType      uint16
	src, dst       netip.Addr
	proto          uint8
	sport, dport   uint16
	ipOptions      []byte // padded to 4 bytes by the caller
	fragOff        uint16 // flags and offset, host order
	ihlOverride    uint8
	truncateTo     int // cut the frame to this length when > 0
}

func (f frame) bytes() []byte {
	b := make([]byte, 0, 128)
	b = append(b, f.dstMAC...)
	b = append(b, f.srcMAC...)
	b = binary.BigEndian.AppendUint16(b, f.etherType)
	if f.etherType != 0x0800 {
		b = append(b, make([]byte, 46)...)
		return f.cut(b)
	}
	var l4 []byte
	switch f.proto {
	case 6: // TCP header with SYN
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], f.sport)
		binary.BigEndian.PutUint16(l4[2:], f.dport)
		l4[12] = 5 << 4
		l4[13] = 0x02
	case 17:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[0:], f.sport)
		binary.BigEndian.PutUint16(l4[2:], f.dport)
		binary.BigEndian.PutUint16(l4[4:], 8)
	case 1: // echo request
		l4 = []byte{8, 0, 0, 0, 0, 1, 0, 1}
	}
	ihl := uint8(5 + len(f.ipOptions)/4)
	if f.ihlOverride != 0 {
		ihl = f.ihlOverride
	}
	ip := make([]byte, 20)
	ip[0] = 4<<4 | ihl
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(f.ipOptions)+len(l4)))
	binary.BigEndian.PutUint16(ip[6:], f.fragOff)
	ip[8] = 64
	ip[9] = f.proto
	s, d := f.src.As4(), f.dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	b = append(b, ip...)
	b = append(b, f.ipOptions...)
	b = append(b, l4...)
	return f.cut(b)
}

func (f frame) cut(b []byte) []byte {
	if f.truncateTo > 0 && f.truncateTo < len(b) {
		return b[:f.truncateTo]
	}
	return b
}

// arpFrame builds an ARP request.
func arpFrame(sha net.HardwareAddr, spa, tpa netip.Addr) []byte {
	b := make([]byte, 0, 60)
	b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	b = append(b, sha...)
	b = binary.BigEndian.AppendUint16(b, 0x0806)
	b = binary.BigEndian.AppendUint16(b, 1)      // Ethernet
	b = binary.BigEndian.AppendUint16(b, 0x0800) // IPv4
	b = append(b, 6, 4)
	b = binary.BigEndian.AppendUint16(b, 1) // request
	b = append(b, sha...)
	s, t := spa.As4(), tpa.As4()
	b = append(b, s[:]...)
	b = append(b, make([]byte, 6)...)
	b = append(b, t[:]...)
	return append(b, make([]byte, 18)...)
}

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
