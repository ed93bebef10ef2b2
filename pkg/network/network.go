// Package network owns Outcall's networks and the ports on them.
//
// A network is a Linux bridge of its own, a subnet and the gateway address
// the host holds on the bridge (DESIGN §5: Docker refuses two networks on one
// bridge). The Controller keeps every port of every Outcall bridge in the
// fail-closed order: the datapath program on the port, then the port in the
// nftables floor's set, then the identity. It also owns what lives as long
// as the datapath does: the grants, the packet-layer rule tables, the
// gateway services and the fences.
package network

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"outcall.dev/outcall/internal/atomicfile"
	"outcall.dev/outcall/pkg/api"
)

// Network is one Outcall network.
type Network struct {
	// Name is the full name, api.NetworkPrefix and a suffix.
	Name string `json:"name"`
	// Bridge is the network's Linux bridge.
	Bridge string `json:"bridge"`
	// Gateway is the host's address on the bridge, with the subnet's
	// prefix length (10.200.1.1/24).
	Gateway netip.Prefix `json:"gateway"`
}

// Subnet is the network's subnet.
func (n Network) Subnet() netip.Prefix { return n.Gateway.Masked() }

// maxSuffixLen bounds a network name's suffix (S002-FR-011).
const maxSuffixLen = 64

// FullName turns a requested suffix into the network's name: nil (no name
// given) is the default network (S002-FR-007), and the prefix is always
// added by Outcall (S002-FR-009, FR-011).
func FullName(suffix *string) (string, error) {
	if suffix == nil {
		return api.DefaultNetworkName, nil
	}
	s := *suffix
	if s == "" || len(s) > maxSuffixLen {
		return "", fmt.Errorf("invalid network name %q: must be 1-%d characters", s, maxSuffixLen)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return "", fmt.Errorf("invalid network name %q: character %q not allowed (use letters, digits, '-', '_')", s, r)
		}
	}
	return api.NetworkPrefix + s, nil
}

// BridgeName is the Linux bridge of a network other than the default one
// (which uses --bridge): deterministic, so a restarted daemon finds the same
// bridge, and at most 15 characters whatever the network's name.
func BridgeName(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "ocbr-" + hex.EncodeToString(sum[:])[:10]
}

// CheckSubnet validates an explicit subnet and gateway (S002-FR-015): a
// canonical IPv4 CIDR inside one RFC 1918 range, room for a gateway and
// containers, and a gateway that is a usable address inside it (the first
// one when none is given).
func CheckSubnet(subnet string, gateway *string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(subnet)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %q: need an IPv4 CIDR such as 10.200.5.0/24", subnet)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %q: host bits are set (did you mean %s?)", subnet, p.Masked())
	}
	if p.Bits() > 30 {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %q: leaves no room for a gateway and containers (at most /30)", subnet)
	}
	if !inOnePrivateRange(p) {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %q: must lie inside one of 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16", subnet)
	}
	gw := p.Addr().Next()
	if gateway != nil {
		gw, err = netip.ParseAddr(*gateway)
		if err != nil || !gw.Is4() {
			return netip.Prefix{}, fmt.Errorf("invalid gateway %q: need an IPv4 address", *gateway)
		}
		if !p.Contains(gw) || gw == p.Addr() || gw == lastAddr(p) {
			return netip.Prefix{}, fmt.Errorf("invalid gateway %s: not a usable address of subnet %s", gw, p)
		}
	}
	return netip.PrefixFrom(gw, p.Bits()), nil
}

// CheckSubnetBlock validates --subnet-block (S002-FR-030): canonical, at
// least a /24, inside one RFC 1918 range.
func CheckSubnetBlock(block netip.Prefix) error {
	switch {
	case !block.IsValid() || !block.Addr().Is4():
		return fmt.Errorf("%q is not an IPv4 CIDR", block)
	case block != block.Masked():
		return fmt.Errorf("%s has host bits set (did you mean %s?)", block, block.Masked())
	case block.Bits() > 24:
		return fmt.Errorf("%s is smaller than a /24", block)
	case !inOnePrivateRange(block):
		return fmt.Errorf("%s is not inside one of 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16", block)
	}
	return nil
}

// Allocate returns the first /24 of block that overlaps none of used, with
// its first address as the gateway (S002-FR-012..014).
func Allocate(block netip.Prefix, used []netip.Prefix) (netip.Prefix, error) {
	first := toUint(block.Masked().Addr())
	for slot := uint64(0); slot < 1<<(24-block.Bits()); slot++ {
		p := netip.PrefixFrom(fromUint(first+uint32(slot)<<8), 24)
		if !slices.ContainsFunc(used, p.Overlaps) {
			return netip.PrefixFrom(p.Addr().Next(), 24), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no available subnets in %s", block)
}

var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
}

func inOnePrivateRange(p netip.Prefix) bool {
	for _, r := range privateRanges {
		if r.Contains(p.Addr()) && r.Bits() <= p.Bits() {
			return true
		}
	}
	return false
}

func lastAddr(p netip.Prefix) netip.Addr {
	return fromUint(toUint(p.Masked().Addr()) | (1<<(32-p.Bits()) - 1))
}

func toUint(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromUint(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// store persists the networks other than the default one (which comes from
// the daemon's flags), so a restarted daemon brings their bridges back
// under the floor and the datapath before it serves anything.
type store struct{ path string }

func (s store) load() ([]Network, error) {
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read networks: %w", err)
	}
	var nets []Network
	if err := json.Unmarshal(b, &nets); err != nil {
		return nil, fmt.Errorf("%s: %w", s.path, err)
	}
	for _, n := range nets {
		if n.Name == "" || n.Bridge == "" || !n.Gateway.IsValid() {
			return nil, fmt.Errorf("%s: network %q is incomplete", s.path, n.Name)
		}
	}
	return nets, nil
}

func (s store) save(nets []Network) error {
	b, err := json.MarshalIndent(nets, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("write networks: %w", err)
	}
	if err := atomicfile.WriteFile(s.path, append(b, '\n')); err != nil {
		return fmt.Errorf("write networks: %w", err)
	}
	return nil
}
