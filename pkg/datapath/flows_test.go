package datapath

import (
	"net/netip"
	"testing"
	"time"

	"outcall.dev/outcall/internal/packet"
)

// flowTCP is a packet of one TCP flow from the agent to dst:dport with the
// given flags (packet.TCPFlagSYN opens it).
func flowTCP(dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	f := packet.TCP(agentMAC, gwMAC, agentIP, dst, sport, dport)
	f.TCPFlags = flags
	return f.Bytes()
}

func flowUDP(dst netip.Addr, sport, dport uint16) []byte {
	return packet.UDP(agentMAC, gwMAC, agentIP, dst, sport, dport).Bytes()
}

// TestFlowsOutliveExpiryNotRevocation: a flow a grant opened passes with
// one lookup, outlives the grant's expiry, and ends with an operator's
// revoke. A new connection on the tuple needs a live grant each time.
func TestFlowsOutliveExpiryNotRevocation(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	dst := netip.MustParseAddr("203.0.113.40")
	key := GrantKey{Identity: agentID, Dst: dst, Proto: 6, Port: 443}
	syn := flowTCP(dst, 41000, 443, packet.TCPFlagSYN)
	ack := flowTCP(dst, 41000, 443, packet.TCPFlagACK)

	// Positive control first: without a grant nothing passes, with one
	// the SYN does, and the flow's later segments take the fast path.
	expectVerdict(t, d, agentPort, syn, DropNoRule, "")
	expectVerdict(t, d, agentPort, ack, DropNoRule, "")
	must(t, d.PutGrant(Grant{GrantKey: key, Expires: time.Now().Add(300 * time.Millisecond)}))
	expectVerdict(t, d, agentPort, syn, AllowGrant, "")
	expectVerdict(t, d, agentPort, ack, AllowEstablished, "")
	flows, err := d.Flows()
	must(t, err)
	if len(flows) != 1 || flows[0].Owner != FlowGrant || flows[0].Dst != dst || flows[0].SrcPort != 41000 {
		t.Fatalf("flows = %+v, want one grant flow to %s from port 41000", flows, dst)
	}

	time.Sleep(400 * time.Millisecond)
	expectVerdict(t, d, agentPort, ack, AllowEstablished, "") // outlives expiry
	expectVerdict(t, d, agentPort, syn, DropExpired, "")      // a new connection does not
	// A sweep (grants.Manager) deletes the expired entry; its flow lives.
	if ok, err := d.DeleteGrant(key); err != nil || !ok {
		t.Fatalf("delete the expired grant = %v, %v", ok, err)
	}
	expectVerdict(t, d, agentPort, ack, AllowEstablished, "") // nor the sweep

	// A revoke deletes the entry and ends its flows.
	must(t, d.PutGrant(Grant{GrantKey: key}))
	if ok, err := d.DeleteGrant(key); err != nil || !ok {
		t.Fatalf("DeleteGrant = %v, %v", ok, err)
	}
	if _, err := d.EndGrantFlows([]GrantKey{key}); err != nil {
		t.Fatal(err)
	}
	expectVerdict(t, d, agentPort, ack, DropNoRule, "")
	expectVerdict(t, d, agentPort, syn, DropNoRule, "")
	for i := range 1000 { // out-of-window segments renew nothing
		if v, _ := run(t, d, agentPort, ack); v != tcActShot {
			t.Fatalf("segment %d on the revoked tuple passed", i)
		}
	}
	if flows, _ := d.Flows(); len(flows) != 0 {
		t.Fatalf("flows after revoke = %+v, want none", flows)
	}
}

// TestFlowsOfAnEndpoint: removing an identity's flows ends them, and a UDP
// tuple seen before needs a live grant again.
func TestFlowsOfAnEndpoint(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	pkt := flowUDP(upstream, 42000, 9000) // seed grants udp to upstream
	expectVerdict(t, d, agentPort, pkt, AllowGrant, "")
	expectVerdict(t, d, agentPort, pkt, AllowEstablished, "")
	other := packet.UDP(otherMAC, gwMAC, otherIP, upstream, 42000, 9000).Bytes()
	must(t, d.PutGrant(Grant{GrantKey: GrantKey{Identity: otherID, Dst: upstream, Proto: 17}}))
	expectVerdict(t, d, otherPort, other, AllowGrant, "")

	n, err := d.EndFlows(FlowMatch{Identity: agentID})
	must(t, err)
	if n != 1 {
		t.Fatalf("EndFlows ended %d flows, want 1", n)
	}
	expectVerdict(t, d, otherPort, other, AllowEstablished, "") // another identity's flow stays
	must(t, d.DeleteEndpoint(agentPort))
	expectVerdict(t, d, agentPort, pkt, DropUnknownPort, "")
}

// TestReloadRedecidesFlows: after a reload, a flow the new rules still
// allow continues, one they no longer allow stops at its next packet, and a
// grant's flow stops only for a block that beats grants.
func TestReloadRedecidesFlows(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	web := netip.MustParseAddr("203.0.113.7")
	tables := func(action RuleAction, grants bool) *RuleTables {
		return &RuleTables{
			Rules:    []RuleRef{{ID: "web-" + action.String(), Action: action}},
			Prefixes: []RulePrefix{{Prefix: pfx("203.0.113.0/24"), Class: 1}, {Prefix: netip.PrefixFrom(upstream2, 32), Class: 2}},
			Entries: []RuleEntry{
				{DstClass: 1, Proto: tcp6, AnyPort: true, Action: action, Rule: 0},
				{DstClass: 2, Proto: tcp6, AnyPort: true, Action: RuleBlock, Grants: grants, Rule: 0},
			},
		}
	}
	ruled := flowTCP(web, 43000, 80, packet.TCPFlagACK)
	granted := flowTCP(upstream2, 43001, 22, packet.TCPFlagACK) // seed: any-protocol grant
	must(t, d.InstallRules(tables(RuleAllow, true)))
	expectVerdict(t, d, agentPort, flowTCP(web, 43000, 80, packet.TCPFlagSYN), AllowRule, "web-allow")
	expectVerdict(t, d, agentPort, ruled, AllowEstablished, "")
	expectVerdict(t, d, agentPort, flowTCP(upstream2, 43001, 22, packet.TCPFlagSYN), AllowGrant, "")
	expectVerdict(t, d, agentPort, granted, AllowEstablished, "")

	gen, err := d.Generation()
	must(t, err)
	must(t, d.InstallRules(tables(RuleAllow, true)))
	if now, _ := d.Generation(); now != gen+1 {
		t.Fatalf("generation %d after a reload of %d, want %d", now, gen, gen+1)
	}
	// Still allowed: decided once more, then the fast path again.
	expectVerdict(t, d, agentPort, ruled, AllowRule, "web-allow")
	expectVerdict(t, d, agentPort, ruled, AllowEstablished, "")
	expectVerdict(t, d, agentPort, granted, AllowEstablished, "")

	// The allow is gone: the rule's flow stops; the grant's flow lives on
	// under a block that lets grants through.
	must(t, d.InstallRules(tables(RuleBlock, true)))
	expectVerdict(t, d, agentPort, ruled, DropRule, "web-block")
	expectVerdict(t, d, agentPort, ruled, DropRule, "web-block")
	expectVerdict(t, d, agentPort, granted, AllowEstablished, "")
	// A block that beats grants stops it too.
	must(t, d.InstallRules(tables(RuleBlock, false)))
	expectVerdict(t, d, agentPort, granted, DropRule, "web-block")
}
