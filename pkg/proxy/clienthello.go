package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// TLS record limits for the one record the proxy peeks at after a CONNECT
// (S006-FR-005): a handshake record of TLS major version 3 whose payload
// holds at least a handshake header and at most the protocol's 2^14 bytes.
const (
	recordHeaderLen  = 5
	maxRecordPayload = 16384
	minRecordPayload = 4
)

// ErrClientHello is wrapped by every error ParseClientHello returns, so
// callers can tell a refused ClientHello from an I/O error.
var ErrClientHello = errors.New("invalid TLS ClientHello")

func helloErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrClientHello, fmt.Sprintf(format, a...))
}

// readClientHelloRecord reads exactly one TLS record from r, header and
// payload, however the bytes are split into TCP segments, and nothing more:
// what follows belongs to the tunnel. The header is checked before the
// payload is read, so an oversized length never makes the proxy wait for
// or buffer more than one record.
func readClientHelloRecord(r io.Reader) ([]byte, error) {
	var hdr [recordHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n, err := checkRecordHeader(hdr[:])
	if err != nil {
		return nil, err
	}
	rec := make([]byte, recordHeaderLen+n)
	copy(rec, hdr[:])
	if _, err := io.ReadFull(r, rec[recordHeaderLen:]); err != nil {
		return nil, err
	}
	return rec, nil
}

// checkRecordHeader validates a record header and returns its payload
// length.
func checkRecordHeader(hdr []byte) (int, error) {
	if hdr[0] != 0x16 {
		return 0, helloErr("record type 0x%02x is not handshake", hdr[0])
	}
	if hdr[1] != 0x03 {
		return 0, helloErr("record major version 0x%02x is not 3", hdr[1])
	}
	n := int(binary.BigEndian.Uint16(hdr[3:5]))
	if n > maxRecordPayload {
		return 0, helloErr("record payload of %d bytes is over %d", n, maxRecordPayload)
	}
	if n < minRecordPayload {
		return 0, helloErr("record payload of %d bytes is under %d", n, minRecordPayload)
	}
	return n, nil
}

// ParseClientHello returns the server name (SNI) of the TLS ClientHello in
// record: exactly one whole TLS record, its 5-byte header included. The name
// comes back normalized (lowercase, no trailing dot); it is "" when the
// ClientHello has no server_name extension or no host_name entry, which the
// proxy answers by evaluating the CONNECT host (S006-FR-018).
//
// The ClientHello must fill the record exactly: one fragmented over several
// records, a record with other bytes after it, any length field that
// disagrees with what contains it, a repeated extension or name type, or a
// server name that is not a valid ASCII domain (an IP literal, a wildcard,
// raw UTF-8, a control byte) is an error wrapping ErrClientHello. The proxy
// closes the tunnel on any error: it never guesses at what the upstream
// would make of a ClientHello it cannot read.
func ParseClientHello(record []byte) (string, error) {
	if len(record) < recordHeaderLen {
		return "", helloErr("record of %d bytes is shorter than its header", len(record))
	}
	n, err := checkRecordHeader(record[:recordHeaderLen])
	if err != nil {
		return "", err
	}
	if len(record)-recordHeaderLen != n {
		return "", helloErr("record holds %d payload bytes, its header says %d", len(record)-recordHeaderLen, n)
	}
	p := record[recordHeaderLen:]
	if p[0] != 0x01 {
		return "", helloErr("handshake type %d is not ClientHello", p[0])
	}
	hl := int(p[1])<<16 | int(p[2])<<8 | int(p[3])
	if hl != len(p)-4 {
		return "", helloErr("ClientHello of %d bytes in a record payload of %d: fragmented or trailing data", hl, len(p)-4)
	}
	s := reader(p[4:])
	if !s.skip(2 + 32) { // legacy_version, random
		return "", helloErr("truncated before session id")
	}
	sid, ok := s.vec8()
	if !ok || len(sid) > 32 {
		return "", helloErr("bad session id")
	}
	suites, ok := s.vec16()
	if !ok || len(suites) < 2 || len(suites)%2 != 0 {
		return "", helloErr("bad cipher suites")
	}
	comp, ok := s.vec8()
	if !ok || len(comp) < 1 {
		return "", helloErr("bad compression methods")
	}
	if len(s) == 0 {
		return "", nil // no extensions at all
	}
	exts, ok := s.vec16()
	if !ok || len(s) != 0 {
		return "", helloErr("bad extensions block")
	}
	seen := map[uint16]bool{}
	sni := ""
	for len(exts) > 0 {
		typ, ok := exts.u16()
		if !ok {
			return "", helloErr("truncated extension")
		}
		data, ok := exts.vec16()
		if !ok {
			return "", helloErr("truncated extension %d", typ)
		}
		if seen[typ] {
			return "", helloErr("extension %d repeated", typ)
		}
		seen[typ] = true
		if typ == 0 {
			if sni, err = parseServerName(data); err != nil {
				return "", err
			}
		}
	}
	return sni, nil
}

// parseServerName parses the server_name extension's data (RFC 6066 §3).
func parseServerName(data reader) (string, error) {
	list, ok := data.vec16()
	if !ok || len(data) != 0 || len(list) == 0 {
		return "", helloErr("bad server_name list")
	}
	name, found := "", false
	for len(list) > 0 {
		typ, ok := list.u8()
		if !ok {
			return "", helloErr("truncated server name")
		}
		v, ok := list.vec16()
		if !ok || len(v) == 0 {
			return "", helloErr("bad server name of type %d", typ)
		}
		if typ != 0 {
			continue
		}
		if found {
			return "", helloErr("more than one host_name")
		}
		n, err := normalizeSNI(string(v))
		if err != nil {
			return "", err
		}
		name, found = n, true
	}
	return name, nil
}

// normalizeSNI checks a host_name the way the original implementation did:
// ASCII only (RFC 6066 sends A-labels), no wildcard or control byte, not an
// IP literal (RFC 6066 forbids them), a valid domain once lowercased and
// stripped of one trailing dot.
func normalizeSNI(v string) (string, error) {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c >= 0x7f || c == '*' {
			return "", helloErr("server name has byte 0x%02x", c)
		}
	}
	n := strings.ToLower(strings.TrimSuffix(v, "."))
	if _, err := netip.ParseAddr(n); err == nil {
		return "", helloErr("server name is an IP literal")
	}
	if !validDomain(n) {
		return "", helloErr("server name is not a valid domain")
	}
	return n, nil
}

// reader consumes TLS's big-endian, length-prefixed encoding.
type reader []byte

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

func (r *reader) u8() (byte, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := (*r)[0]
	*r = (*r)[1:]
	return v, true
}

func (r *reader) u16() (uint16, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(*r)
	*r = (*r)[2:]
	return v, true
}

func (r *reader) bytes(n int) (reader, bool) {
	if len(*r) < n {
		return nil, false
	}
	v := (*r)[:n]
	*r = (*r)[n:]
	return v, true
}

func (r *reader) vec8() (reader, bool) {
	n, ok := r.u8()
	if !ok {
		return nil, false
	}
	return r.bytes(int(n))
}

func (r *reader) vec16() (reader, bool) {
	n, ok := r.u16()
	if !ok {
		return nil, false
	}
	return r.bytes(int(n))
}
