package api

import (
	"fmt"
	"net/netip"
	"strings"
)

// Dynamic rules (S009) constants shared by the daemon and the CLI.
const (
	// MaxDynamicRuleTTLSecs is MAX_DYNAMIC_RULE_TTL_SECS: expires_in_secs
	// is 1..86400.
	MaxDynamicRuleTTLSecs = 86400
	// MaxDynamicRulesPerContainer caps one container's operator rules
	// (one allow request each, whatever its destination expands to).
	MaxDynamicRulesPerContainer = 256
	// MaxGrantHostAddrs is how many IPv4 addresses of a host name
	// destination a grant opens, at most.
	MaxGrantHostAddrs = 16
)

// GrantDestination is an allow request's destination: an IPv4 address, a
// canonical IPv4 CIDR or a host name.
type GrantDestination struct {
	// Prefix is the address (a /32) or the CIDR; invalid for a host name.
	Prefix netip.Prefix
	// CIDR says the destination was written as a CIDR (also a /32).
	CIDR bool
	// Host is the host name, lower case, without a trailing dot.
	Host string
}

// String is the destination as it is stored and listed.
func (d GrantDestination) String() string {
	switch {
	case d.Host != "":
		return d.Host
	case d.CIDR:
		return d.Prefix.String()
	default:
		return d.Prefix.Addr().String()
	}
}

// ParseGrantDestination parses an allow or revoke request's destination
// (S009-FR-013): an IPv4 literal, a CIDR in canonical form (the error names
// the expected one), or a valid domain name. IPv6 is refused: the datapath
// has no IPv6 layer yet.
func ParseGrantDestination(s string) (GrantDestination, error) {
	if s == "" {
		return GrantDestination{}, fmt.Errorf("invalid destination '': need an IPv4 address, an IPv4 CIDR or a host name")
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return GrantDestination{}, fmt.Errorf("invalid destination '%s': not an IPv4 address, CIDR or host name", s)
		}
		if !p.Addr().Is4() {
			return GrantDestination{}, fmt.Errorf("invalid destination '%s': only IPv4 destinations are supported", s)
		}
		if m := p.Masked(); m != p {
			return GrantDestination{}, fmt.Errorf("invalid destination '%s': CIDR must be in canonical form (%s)", s, m)
		}
		return GrantDestination{Prefix: p, CIDR: true}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if !a.Is4() {
			return GrantDestination{}, fmt.Errorf("invalid destination '%s': only IPv4 destinations are supported", s)
		}
		return GrantDestination{Prefix: netip.PrefixFrom(a, 32)}, nil
	}
	host := strings.ToLower(strings.TrimSuffix(s, "."))
	if !validHostName(host) {
		return GrantDestination{}, fmt.Errorf("invalid destination '%s': not an IPv4 address, CIDR or host name", s)
	}
	return GrantDestination{Host: host}, nil
}

// validHostName reports whether h (lower case, no trailing dot) is a domain
// name a resolver can be asked: at most 253 characters, labels of 1-63
// letters, digits, hyphens and underscores that neither start nor end with
// a hyphen, and a last label that is not all digits (that would be a
// mistyped address such as 10.0.0).
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
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
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}
