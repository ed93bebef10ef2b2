package datapath

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"outcall.dev/outcall/internal/packet"
)

func prefixKey(id uint32, p string, proto uint8, port uint16) GrantKey {
	return PrefixKey(id, netip.MustParsePrefix(p), proto, port)
}

func ip4(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestPrefixGrants: a CIDR grant opens the destinations inside it for its
// identity, on its protocol and port only; the fences still apply (a
// restricted range inside a broad prefix stays closed without the private
// flag, and with it unless the prefix lies inside the range; an Outcall
// subnet never opens); the longest prefix decides per specificity, and an
// expired narrower entry does not hide a live broader one.
func TestPrefixGrants(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	// Positive control for every negative below: the same packets are
	// dropped before the prefix grants exist, allowed (where allowed)
	// after.
	inside := tcp(agentIP, ip4("203.0.113.77"), 443).Bytes()
	expectVerdict(t, d, agentPort, inside, DropNoRule, "")

	must(t, d.PutGrant(Grant{GrantKey: prefixKey(agentID, "203.0.113.0/24", 6, 443)}))
	must(t, d.PutGrant(Grant{GrantKey: prefixKey(agentID, "198.18.0.0/15", 17, 0)}))
	must(t, d.PutGrant(Grant{GrantKey: prefixKey(agentID, "0.0.0.0/0", 6, 8080)}))
	must(t, d.PutGrant(Grant{GrantKey: prefixKey(agentID, "0.0.0.0/0", 17, 7000), AllowPrivate: true}))
	must(t, d.PutGrant(Grant{GrantKey: prefixKey(agentID, "10.20.0.0/16", 6, 5432), AllowPrivate: true}))
	must(t, d.PutGrant(Grant{GrantKey: prefixKey(agentID, "10.30.0.0/16", 6, 5433)}))
	must(t, d.PutGrant(Grant{GrantKey: prefixKey(agentID, "198.51.100.0/24", 6, 0)}))
	// Written raw with an expiry long past: PutGrant refuses it.
	expired := prefixKey(agentID, "198.51.100.0/25", 6, 7001).rawPrefix()
	must(t, d.objs.GrantPrefixes.Put(&expired, &portIngressGrantValue{ExpiresNs: 1, Prefixlen: 25}))
	must(t, d.PutGrant(Grant{GrantKey: prefixKey(agentID, "192.0.2.128/25", 17, 0)}))
	expiredOnly := prefixKey(agentID, "192.0.2.0/25", 6, 9).rawPrefix()
	must(t, d.objs.GrantPrefixes.Put(&expiredOnly, &portIngressGrantValue{ExpiresNs: 1, Prefixlen: 25}))

	for _, tc := range []struct {
		name   string
		port   uint32
		frame  []byte
		reason Reason
	}{
		{"inside the prefix, its port", agentPort, inside, AllowGrant},
		{"inside, first address", agentPort, tcp(agentIP, ip4("203.0.113.0"), 443).Bytes(), AllowGrant},
		{"inside, last address", agentPort, tcp(agentIP, ip4("203.0.113.255"), 443).Bytes(), AllowGrant},
		{"inside, another port", agentPort, tcp(agentIP, ip4("203.0.113.77"), 80).Bytes(), DropNoRule},
		{"inside, another protocol", agentPort, udp(ip4("203.0.113.77"), 443).Bytes(), DropNoRule},
		{"just outside the prefix", agentPort, tcp(agentIP, ip4("203.0.114.0"), 443).Bytes(), DropNoRule},
		{"just below the prefix", agentPort, tcp(agentIP, ip4("203.0.112.255"), 443).Bytes(), DropNoRule},
		{"another identity", otherPort, packet.TCP(otherMAC, gwMAC, otherIP, ip4("203.0.113.77"), 1, 443).Bytes(), DropNoRule},
		{"any port of udp", agentPort, udp(ip4("198.19.200.1"), 5353).Bytes(), AllowGrant},
		{"any port of udp, tcp", agentPort, tcp(agentIP, ip4("198.19.200.1"), 5353).Bytes(), DropNoRule},
		{"dns stays a bypass", agentPort, udp(ip4("198.19.200.1"), DNSPort).Bytes(), DropDNSBypass},
		{"0/0 opens the open internet", agentPort, tcp(agentIP, ip4("198.51.100.99"), 8080).Bytes(), AllowGrant},
		{"0/0 unlicensed, a private address", agentPort, tcp(agentIP, ip4("10.20.0.9"), 8080).Bytes(), DropRestricted},
		{"0/0 unlicensed, the metadata address", agentPort, tcp(agentIP, metadata, 8080).Bytes(), DropRestricted},
		{"0/0 unlicensed, a host address", agentPort, tcp(agentIP, hostAddr, 8080).Bytes(), DropRestricted},
		{"0/0 licensed, still not a private range it is broader than", agentPort, udp(ip4("10.20.0.9"), 7000).Bytes(), DropRestricted},
		{"0/0 licensed, nor the metadata address", agentPort, udp(metadata, 7000).Bytes(), DropRestricted},
		{"0/0, never an agent", agentPort, tcp(agentIP, otherIP, 8080).Bytes(), DropEastWest},
		{"0/0 licensed, never an agent", agentPort, udp(otherIP, 7000).Bytes(), DropEastWest},
		{"licensed prefix inside a private range", agentPort, tcp(agentIP, ip4("10.20.7.7"), 5432).Bytes(), AllowGrant},
		{"unlicensed prefix inside a private range", agentPort, tcp(agentIP, ip4("10.30.7.7"), 5433).Bytes(), DropRestricted},
		{"an expired narrower prefix, a live broader one", agentPort, tcp(agentIP, ip4("198.51.100.5"), 7001).Bytes(), AllowGrant},
		{"only an expired prefix", agentPort, tcp(agentIP, ip4("192.0.2.5"), 9).Bytes(), DropExpired},
		{"beside the expired prefix, another protocol", agentPort, udp(ip4("192.0.2.200"), 9).Bytes(), AllowGrant},
		{"exact grants still first", agentPort, tcp(agentIP, upstream, 443).Bytes(), AllowGrant},
	} {
		t.Run(tc.name, func(t *testing.T) { expectVerdict(t, d, tc.port, tc.frame, tc.reason, "") })
	}

	// Listing reads both maps; a delete closes what the prefix opened.
	gs, err := d.Grants()
	must(t, err)
	key := prefixKey(agentID, "203.0.113.0/24", 6, 443)
	if !slices.ContainsFunc(gs, func(g Grant) bool { return g.GrantKey == key }) {
		t.Fatalf("grants %+v do not list %v", gs, key)
	}
	if ok, err := d.DeleteGrant(key); err != nil || !ok {
		t.Fatalf("DeleteGrant(%v) = %v, %v", key, ok, err)
	}
	expectVerdict(t, d, agentPort, tcp(agentIP, ip4("203.0.113.78"), 443).Bytes(), DropNoRule, "")
	if ok, err := d.DeleteGrant(key); err != nil || ok {
		t.Fatalf("second DeleteGrant(%v) = %v, %v; want false, nil", key, ok, err)
	}
	if err := d.PutGrant(Grant{GrantKey: GrantKey{Identity: agentID, Dst: ip4("203.0.113.1"), HostBits: 8}}); err == nil {
		t.Fatal("a prefix key with host bits set was accepted")
	}
}

// TestPrefixGrantExpiry: a prefix grant's expiry is checked per packet.
func TestPrefixGrantExpiry(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	f := tcp(agentIP, ip4("203.0.113.200"), 8000).Bytes()
	expectVerdict(t, d, agentPort, f, DropNoRule, "")
	must(t, d.PutGrant(Grant{GrantKey: prefixKey(agentID, "203.0.113.128/25", 6, 8000), Expires: time.Now().Add(300 * time.Millisecond)}))
	expectVerdict(t, d, agentPort, f, AllowGrant, "")
	time.Sleep(400 * time.Millisecond)
	expectVerdict(t, d, agentPort, f, DropExpired, "")
}

// TestPrefixGrantFlows: revoking a prefix grant ends the flows to every
// address inside it, and only those.
func TestPrefixGrantFlows(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	key := prefixKey(agentID, "203.0.113.0/24", 6, 443)
	must(t, d.PutGrant(Grant{GrantKey: key}))
	for _, dst := range []string{"203.0.113.5", "203.0.113.6"} {
		expectVerdict(t, d, agentPort, flowTCP(addr(dst), 41000, 443, packet.TCPFlagSYN), AllowGrant, "")
		expectVerdict(t, d, agentPort, flowTCP(addr(dst), 41000, 443, packet.TCPFlagACK), AllowEstablished, "")
	}
	// An exact grant's flow (seed: upstream tcp/443) is outside the prefix.
	expectVerdict(t, d, agentPort, flowTCP(upstream, 41001, 443, packet.TCPFlagSYN), AllowGrant, "")
	if ok, err := d.DeleteGrant(key); err != nil || !ok {
		t.Fatalf("DeleteGrant = %v, %v", ok, err)
	}
	n, err := d.EndGrantFlows([]GrantKey{key})
	must(t, err)
	if n != 2 {
		t.Fatalf("EndGrantFlows ended %d flows, want the 2 inside the prefix", n)
	}
	expectVerdict(t, d, agentPort, flowTCP(ip4("203.0.113.5"), 41000, 443, packet.TCPFlagACK), DropNoRule, "")
	expectVerdict(t, d, agentPort, flowTCP(upstream, 41001, 443, packet.TCPFlagACK), AllowEstablished, "")
}
