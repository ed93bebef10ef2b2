package packet

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

var (
	macA = net.HardwareAddr{2, 0, 0, 0, 0, 0x0a}
	macB = net.HardwareAddr{2, 0, 0, 0, 0, 0x01}
	ipA  = netip.MustParseAddr("10.200.0.10")
	ipB  = netip.MustParseAddr("198.51.100.10")
)

func TestFrameBytes(t *testing.T) {
	withOptions := TCP(macA, macB, ipA, ipB, 40000, 443)
	withOptions.IPOptions = []byte{1, 1, 1, 0}
	frag := UDP(macA, macB, ipA, ipB, 1, 2)
	frag.FragOff = 0x2000
	badIHL := TCP(macA, macB, ipA, ipB, 1, 2)
	badIHL.IHL = 15
	short := TCP(macA, macB, ipA, ipB, 1, 2)
	short.TruncateTo = 36

	tests := []struct {
		name     string
		f        Frame
		len      int
		ihl      uint8
		proto    uint8
		l4       []byte // the first bytes of the layer-4 header
		fragOff  uint16
		checksum bool // the IPv4 header checksum verifies
	}{
		{"tcp", TCP(macA, macB, ipA, ipB, 40000, 443), 14 + 20 + 20, 5, ProtoTCP, []byte{0x9c, 0x40, 0x01, 0xbb}, 0, true},
		{"udp", UDP(macA, macB, ipA, ipB, 5353, 53), 14 + 20 + 8, 5, ProtoUDP, []byte{0x14, 0xe9, 0, 53, 0, 8}, 0, true},
		{"icmp", ICMP(macA, macB, ipA, ipB), 14 + 20 + 8, 5, ProtoICMP, []byte{8, 0}, 0, true},
		{"ip options", withOptions, 14 + 24 + 20, 6, ProtoTCP, []byte{0x9c, 0x40}, 0, true},
		{"fragment", frag, 14 + 20 + 8, 5, ProtoUDP, []byte{0, 1, 0, 2}, 0x2000, true},
		{"ihl override", badIHL, 14 + 20 + 20, 15, ProtoTCP, nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.f.Bytes()
			if len(b) != tt.len {
				t.Fatalf("len = %d, want %d", len(b), tt.len)
			}
			if !bytes.Equal(b[0:6], macB) || !bytes.Equal(b[6:12], macA) {
				t.Errorf("MACs = %x %x, want dst %s src %s", b[0:6], b[6:12], macB, macA)
			}
			if et := binary.BigEndian.Uint16(b[12:]); et != EtherTypeIPv4 {
				t.Errorf("ethertype = %#x", et)
			}
			ip := b[14:]
			if ip[0]>>4 != 4 || ip[0]&0x0f != tt.ihl {
				t.Errorf("version/ihl = %#x, want 4/%d", ip[0], tt.ihl)
			}
			if got := binary.BigEndian.Uint16(ip[2:]); int(got) != tt.len-14 {
				t.Errorf("total length = %d, want %d", got, tt.len-14)
			}
			if got := binary.BigEndian.Uint16(ip[6:]); got != tt.fragOff {
				t.Errorf("frag_off = %#x, want %#x", got, tt.fragOff)
			}
			if ip[9] != tt.proto {
				t.Errorf("proto = %d, want %d", ip[9], tt.proto)
			}
			if netip.AddrFrom4([4]byte(ip[12:16])) != ipA || netip.AddrFrom4([4]byte(ip[16:20])) != ipB {
				t.Errorf("addresses = %v -> %v", ip[12:16], ip[16:20])
			}
			if tt.checksum {
				hlen := int(tt.ihl) * 4
				if c := Checksum(ip[:hlen]); c != 0 {
					t.Errorf("header checksum does not verify: %#x", c)
				}
				if l4 := ip[hlen:]; !bytes.HasPrefix(l4, tt.l4) {
					t.Errorf("layer 4 = %x, want prefix %x", l4, tt.l4)
				}
			}
		})
	}
	if b := short.Bytes(); len(b) != 36 {
		t.Errorf("truncated frame has %d bytes, want 36", len(b))
	}
}

func TestNonIPFrame(t *testing.T) {
	b := Frame{SrcMAC: macA, DstMAC: macB, EtherType: EtherTypeIPv6}.Bytes()
	if len(b) != 60 || binary.BigEndian.Uint16(b[12:]) != EtherTypeIPv6 {
		t.Fatalf("frame = %x, want 60 bytes of ethertype %#x", b, EtherTypeIPv6)
	}
}

func TestARP(t *testing.T) {
	b := ARP(macA, ipA, ipB)
	if len(b) != 60 {
		t.Fatalf("len = %d, want 60", len(b))
	}
	want := []byte{0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1}
	if !bytes.Equal(b[12:22], want) {
		t.Errorf("header = %x, want %x", b[12:22], want)
	}
	if !bytes.Equal(b[22:28], macA) || netip.AddrFrom4([4]byte(b[28:32])) != ipA || netip.AddrFrom4([4]byte(b[38:42])) != ipB {
		t.Errorf("addresses = %x", b[22:42])
	}
}

func TestChecksum(t *testing.T) {
	// RFC 1071's worked example: the one's-complement sum is 0xddf2.
	if got := Checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); got != ^uint16(0xddf2) {
		t.Errorf("Checksum = %#x, want %#x", got, ^uint16(0xddf2))
	}
	if got := Checksum([]byte{0xff}); got != ^uint16(0xff00) {
		t.Errorf("odd length: Checksum = %#x, want %#x", got, ^uint16(0xff00))
	}
}
