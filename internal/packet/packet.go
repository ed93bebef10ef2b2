// Package packet builds Ethernet frames to feed the datapath program through
// BPF_PROG_TEST_RUN: well-formed TCP, UDP and ICMP over IPv4 and ARP, and,
// through the fields of Frame, the malformed variants the program must drop.
// It is for tests; nothing here is fast or general.
package packet

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// EtherTypes and IP protocol numbers the builders use.
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeIPv6 = 0x86dd

	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// Frame describes an Ethernet frame. With EtherType IPv4 it carries an IPv4
// header and, for ProtoTCP, ProtoUDP and ProtoICMP, a minimal layer-4 header
// (TCP SYN, UDP with an empty payload, ICMP echo request); any other
// EtherType gets 46 zero bytes of payload.
type Frame struct {
	SrcMAC, DstMAC   net.HardwareAddr
	EtherType        uint16
	Src, Dst         netip.Addr // IPv4
	Proto            uint8
	SrcPort, DstPort uint16
	// IPOptions follow the IPv4 header; their length must be a multiple of
	// 4, padding is the caller's.
	IPOptions []byte
	// FragOff is the IPv4 flags and fragment offset field, host order.
	FragOff uint16
	// IHL, when non-zero, replaces the header length the options imply.
	IHL uint8
	// TruncateTo, when positive, cuts the frame to that many bytes.
	TruncateTo int
	// TCPFlags, when non-zero, replaces the TCP SYN flag (0x10 is ACK).
	TCPFlags uint8
	// Payload follows the layer-4 header (or the IPv4 header for other
	// protocols); IPv4 and UDP lengths count it.
	Payload []byte
}

// TCP flags for Frame.TCPFlags.
const (
	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagRST = 0x04
	TCPFlagACK = 0x10
)

// TCP is a TCP SYN from src:sport to dst:dport.
func TCP(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16) Frame {
	return ip(srcMAC, dstMAC, src, dst, ProtoTCP, sport, dport)
}

// UDP is an empty UDP datagram from src:sport to dst:dport.
func UDP(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16) Frame {
	return ip(srcMAC, dstMAC, src, dst, ProtoUDP, sport, dport)
}

// ICMP is an ICMP echo request from src to dst.
func ICMP(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr) Frame {
	return ip(srcMAC, dstMAC, src, dst, ProtoICMP, 0, 0)
}

func ip(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, proto uint8, sport, dport uint16) Frame {
	return Frame{SrcMAC: srcMAC, DstMAC: dstMAC, EtherType: EtherTypeIPv4, Src: src, Dst: dst, Proto: proto, SrcPort: sport, DstPort: dport}
}

// Bytes encodes the frame. The IPv4 header checksum is correct for the
// header as written; layer-4 checksums are left zero, which the datapath
// never reads.
func (f Frame) Bytes() []byte {
	b := make([]byte, 0, 128)
	b = append(b, f.DstMAC...)
	b = append(b, f.SrcMAC...)
	b = binary.BigEndian.AppendUint16(b, f.EtherType)
	if f.EtherType != EtherTypeIPv4 {
		b = append(b, make([]byte, 46)...)
		return f.cut(b)
	}
	var l4 []byte
	switch f.Proto {
	case ProtoTCP:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], f.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], f.DstPort)
		l4[12] = 5 << 4 // data offset
		l4[13] = TCPFlagSYN
		if f.TCPFlags != 0 {
			l4[13] = f.TCPFlags
		}
	case ProtoUDP:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[0:], f.SrcPort)
		binary.BigEndian.PutUint16(l4[2:], f.DstPort)
		binary.BigEndian.PutUint16(l4[4:], 8)
	case ProtoICMP:
		l4 = []byte{8, 0, 0, 0, 0, 1, 0, 1} // echo request, id 1, seq 1
	}
	if f.Proto == ProtoUDP {
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(f.Payload)))
	}
	l4 = append(l4, f.Payload...)
	ihl := uint8(5 + len(f.IPOptions)/4)
	if f.IHL != 0 {
		ihl = f.IHL
	}
	hdr := make([]byte, 20, 20+len(f.IPOptions))
	hdr[0] = 4<<4 | ihl&0x0f
	binary.BigEndian.PutUint16(hdr[2:], uint16(20+len(f.IPOptions)+len(l4)))
	binary.BigEndian.PutUint16(hdr[6:], f.FragOff)
	hdr[8] = 64 // TTL
	hdr[9] = f.Proto
	s, d := f.Src.As4(), f.Dst.As4()
	copy(hdr[12:], s[:])
	copy(hdr[16:], d[:])
	hdr = append(hdr, f.IPOptions...)
	binary.BigEndian.PutUint16(hdr[10:], Checksum(hdr))
	b = append(b, hdr...)
	b = append(b, l4...)
	return f.cut(b)
}

func (f Frame) cut(b []byte) []byte {
	if f.TruncateTo > 0 && f.TruncateTo < len(b) {
		return b[:f.TruncateTo]
	}
	return b
}

// Checksum is the Internet checksum (RFC 1071) of b. Over a header whose
// checksum field is filled in, it is 0.
func Checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// ARP is a broadcast ARP request from sha/spa asking for tpa, padded to the
// Ethernet minimum.
func ARP(sha net.HardwareAddr, spa, tpa netip.Addr) []byte {
	return ARPMessage(ARPRequest, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, sha, spa, make(net.HardwareAddr, 6), tpa)
}

// ARP operations.
const (
	ARPRequest = 1
	ARPReply   = 2
)

// ARPMessage is an ARP message of any operation, sent to dstMAC, padded to
// the Ethernet minimum.
func ARPMessage(op uint16, dstMAC, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b := make([]byte, 0, 60)
	b = append(b, dstMAC...)
	b = append(b, sha...)
	b = binary.BigEndian.AppendUint16(b, EtherTypeARP)
	b = binary.BigEndian.AppendUint16(b, 1) // hardware: Ethernet
	b = binary.BigEndian.AppendUint16(b, EtherTypeIPv4)
	b = append(b, 6, 4)
	b = binary.BigEndian.AppendUint16(b, op)
	b = append(b, sha...)
	s, t := spa.As4(), tpa.As4()
	b = append(b, s[:]...)
	b = append(b, tha...)
	b = append(b, t[:]...)
	return append(b, make([]byte, 18)...)
}
