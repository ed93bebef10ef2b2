package proxy

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
)

// target is a validated upstream authority: what the rules see and what is
// dialled.
type target struct {
	// Host is the normalized host: lowercase A-label domain without a
	// trailing dot, or the canonical IPv4 literal.
	Host string
	// IP is the host when it is an IPv4 literal; invalid otherwise.
	IP   netip.Addr
	Port uint16
}

func (t target) String() string { return t.Host + ":" + strconv.Itoa(int(t.Port)) }

var errBadHost = errors.New("invalid host")

// hostProfile is IDNA lookup (UTS #46 mapping, punycode, the bidi rule)
// without STD3's ban on underscores, which WHATWG URLs and real hostnames
// allow; validDomain checks the characters afterwards.
var hostProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.StrictDomainName(false))

// maxDomainLen is the longest domain name in presentation form without the
// trailing dot (RFC 1035).
const maxDomainLen = 253

// normalizeHost turns a URI, Host header or CONNECT host into the form rules
// compare: IDNs become punycode (rules use A-labels), case and a trailing dot
// are dropped, IPv4 literals must be canonical. The WHATWG parser of the
// original implementation also reads 0x7f.1 or 2130706433 as addresses; Go
// has no such parser, and reinterpreting them is how a filter gets bypassed,
// so a host that looks numeric but is not a canonical dotted quad is refused.
// IPv6 literals are refused too: the proxy dials IPv4 only.
func normalizeHost(h string) (string, netip.Addr, error) {
	if h == "" || strings.HasPrefix(h, "[") {
		return "", netip.Addr{}, errBadHost
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c == 0x7f || strings.IndexByte("/?#@[]\\%:*", c) >= 0 {
			return "", netip.Addr{}, errBadHost
		}
	}
	h = strings.TrimSuffix(h, ".")
	if ip, err := netip.ParseAddr(h); err == nil {
		if !ip.Is4() {
			return "", netip.Addr{}, errBadHost
		}
		return ip.String(), ip, nil
	}
	a, err := hostProfile.ToASCII(h)
	if err != nil {
		return "", netip.Addr{}, errBadHost
	}
	a = strings.ToLower(a)
	if !validDomain(a) {
		return "", netip.Addr{}, errBadHost
	}
	return a, netip.Addr{}, nil
}

// validDomain reports whether d is a plausible ASCII domain name: labels of
// 1-63 letters, digits, hyphens and underscores, not starting or ending with
// a hyphen, and a last label that is not numeric (a numeric last label is
// an IPv4 form in WHATWG URLs: see normalizeHost).
func validDomain(d string) bool {
	if d == "" || len(d) > maxDomainLen {
		return false
	}
	labels := strings.Split(d, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return !looksNumeric(labels[len(labels)-1])
}

// looksNumeric reports whether a label would be read as a number by a
// WHATWG IPv4 parser: decimal digits, or 0x followed by hex digits.
func looksNumeric(l string) bool {
	if s, ok := strings.CutPrefix(l, "0x"); ok {
		for i := 0; i < len(s); i++ {
			if !strings.ContainsRune("0123456789abcdef", rune(s[i])) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}

// parseAuthority parses host[:port] with defPort for an absent or empty
// port. Port 0 and ports with non-digits are invalid.
func parseAuthority(a string, defPort uint16) (target, error) {
	host, port := a, ""
	if i := strings.LastIndexByte(a, ':'); i >= 0 {
		host, port = a[:i], a[i+1:]
	}
	t := target{Port: defPort}
	if port != "" {
		if len(port) > 5 {
			return target{}, errBadHost
		}
		for i := 0; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return target{}, errBadHost
			}
		}
		n, _ := strconv.Atoi(port)
		if n == 0 || n > 65535 {
			return target{}, errBadHost
		}
		t.Port = uint16(n)
	}
	var err error
	if t.Host, t.IP, err = normalizeHost(host); err != nil {
		return target{}, err
	}
	return t, nil
}

// absoluteURI is a parsed absolute-form request target.
type absoluteURI struct {
	Target target
	// Origin is the origin-form target sent upstream and the path the
	// rules see: the path ("/" when empty) with "?query" when present.
	Origin string
}

var errBadURI = errors.New("invalid absolute-form URI")

// parseAbsoluteURI parses an absolute-form target (RFC 9112 §3.2.2). Only
// http is accepted: https must use CONNECT, so the proxy never sees what it
// cannot inspect as plain text. Userinfo and fragments are refused: a
// client never sends them legitimately and each is a classic way to make two
// parsers see different hosts.
func parseAbsoluteURI(s string) (absoluteURI, error) {
	i := strings.Index(s, "://")
	if i < 0 || !strings.EqualFold(s[:i], "http") {
		return absoluteURI{}, errBadURI
	}
	rest := s[i+3:]
	if strings.IndexByte(rest, '#') >= 0 {
		return absoluteURI{}, errBadURI
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	auth, origin := rest[:end], rest[end:]
	if auth == "" || strings.IndexByte(auth, '@') >= 0 {
		return absoluteURI{}, errBadURI
	}
	t, err := parseAuthority(auth, 80)
	if err != nil {
		return absoluteURI{}, errBadURI
	}
	if origin == "" || origin[0] == '?' {
		origin = "/" + origin
	}
	return absoluteURI{Target: t, Origin: origin}, nil
}
