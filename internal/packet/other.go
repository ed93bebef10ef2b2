package packet

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// IP protocol numbers beyond TCP, UDP and ICMP, for the datapath's
// "every other protocol" rule row.
const (
	ProtoIPIP = 4
	ProtoGRE  = 47
	ProtoSCTP = 132
	ProtoRaw  = 255
)

// Other is an IPv4 packet of protocol proto from src to dst carrying 8 zero
// bytes of payload (no layer-4 header the datapath reads), with a correct
// IPv4 header checksum.
func Other(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, proto uint8) []byte {
	b := ip(srcMAC, dstMAC, src, dst, proto, 0, 0).Bytes()
	b = append(b, make([]byte, 8)...)
	hdr := b[14 : 14+20]
	binary.BigEndian.PutUint16(hdr[2:], uint16(len(b)-14))
	binary.BigEndian.PutUint16(hdr[10:], 0)
	binary.BigEndian.PutUint16(hdr[10:], Checksum(hdr))
	return b
}
