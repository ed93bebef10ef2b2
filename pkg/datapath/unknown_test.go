package datapath

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"outcall.dev/outcall/internal/packet"
	"outcall.dev/outcall/pkg/api"
)

// A container nobody registered, on the agents' network, and an endpoint
// that is registered while its port is away.
var (
	strangerMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x32}
	strangerIP  = netip.MustParseAddr("10.200.0.50")
	absentMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0c}
	absentIP    = netip.MustParseAddr("10.200.0.12")
	gatewayPfx  = netip.MustParsePrefix("10.200.0.1/24")
)

const absentID = 11

// seedUnknown is seed plus the unknown port's network and the addresses of
// every registered endpoint: the two with ports and one without.
func seedUnknown(t *testing.T, d *Datapath) {
	t.Helper()
	seed(t, d)
	must(t, d.SetPortNetwork(unknownPort, PortNetwork{Gateway: gatewayPfx, GatewayMAC: gwMAC}))
	must(t, d.SetEndpointAddrs([]EndpointAddrs{
		{Identity: agentID, IP: agentIP, MAC: agentMAC},
		{Identity: otherID, IP: otherIP, MAC: otherMAC},
		{Identity: absentID, IP: absentIP, MAC: absentMAC},
	}))
}

func strangerUDP(src netip.Addr, dst netip.Addr, dport uint16) packet.Frame {
	return packet.UDP(strangerMAC, gwMAC, src, dst, 40000, dport)
}

func strangerTCP(src netip.Addr, dst netip.Addr, dport uint16) packet.Frame {
	return packet.TCP(strangerMAC, gwMAC, src, dst, 40000, dport)
}

// TestUnknownSenderReachesOnlyGatewayServices: a port without identity
// reaches the services open on its gateway and sends ARP for the gateway,
// from an address of its subnet no endpoint holds, and nothing else. Every
// refused probe has an allowed twin that differs in the one field probed.
func TestUnknownSenderReachesOnlyGatewayServices(t *testing.T) {
	d := openTest(t)
	seedUnknown(t, d)
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	frag := strangerUDP(strangerIP, gatewayIP, 53)
	frag.FragOff = 0x2000
	opts := strangerUDP(strangerIP, gatewayIP, 53)
	opts.IPOptions = []byte{1, 1, 1, 0}
	toOtherMAC := strangerUDP(strangerIP, gatewayIP, 53)
	toOtherMAC.DstMAC = otherMAC
	ipv6 := strangerUDP(strangerIP, gatewayIP, 53)
	ipv6.EtherType = packet.EtherTypeIPv6
	withMAC := func(f packet.Frame, mac net.HardwareAddr) []byte {
		f.SrcMAC = mac
		return f.Bytes()
	}
	dns := strangerUDP(strangerIP, gatewayIP, api.DefaultDNSPort)

	steps := []struct {
		name   string
		data   []byte
		reason Reason
	}{
		// What it may do: the open services and ARP for the gateway.
		{"udp/53 on the gateway", dns.Bytes(), AllowUnknownGateway},
		{"tcp/53 on the gateway", strangerTCP(strangerIP, gatewayIP, api.DefaultDNSPort).Bytes(), AllowUnknownGateway},
		{"tcp/8080 on the gateway", strangerTCP(strangerIP, gatewayIP, api.DefaultProxyPort).Bytes(), AllowUnknownGateway},
		{"ARP request for the gateway", packet.ARP(strangerMAC, strangerIP, gatewayIP), AllowUnknownARP},
		{"ARP request for the gateway to its MAC", packet.ARPMessage(packet.ARPRequest, gwMAC, strangerMAC, strangerIP, make(net.HardwareAddr, 6), gatewayIP), AllowUnknownARP},
		{"ARP reply to the gateway", packet.ARPMessage(packet.ARPReply, gwMAC, strangerMAC, strangerIP, gwMAC, gatewayIP), AllowUnknownARP},

		// Nothing else: the twins of the allowed above.
		{"a closed gateway port (udp/5353)", strangerUDP(strangerIP, gatewayIP, 5353).Bytes(), DropUnknownPort},
		{"tcp/53 as udp/8080 (open for tcp only)", strangerUDP(strangerIP, gatewayIP, api.DefaultProxyPort).Bytes(), DropUnknownPort},
		{"icmp to the gateway", packet.ICMP(strangerMAC, gwMAC, strangerIP, gatewayIP).Bytes(), DropUnknownPort},
		{"upstream (the agent holds grants there)", strangerTCP(strangerIP, upstream, 443).Bytes(), DropUnknownPort},
		{"upstream udp", strangerUDP(strangerIP, upstream, 9000).Bytes(), DropUnknownPort},
		{"DNS on another address", strangerUDP(strangerIP, upstream, 53).Bytes(), DropUnknownPort},
		{"another agent's address", strangerUDP(strangerIP, otherIP, 7000).Bytes(), DropUnknownPort},
		{"a host address", strangerTCP(strangerIP, hostAddr, 8080).Bytes(), DropUnknownPort},
		{"the gateway's address at another agent's MAC", toOtherMAC.Bytes(), DropUnknownPort},
		{"a fragment", frag.Bytes(), DropUnknownPort},
		{"IPv4 options", opts.Bytes(), DropUnknownPort},
		{"IPv6", ipv6.Bytes(), DropUnknownPort},
		{"ARP for another agent", packet.ARP(strangerMAC, strangerIP, otherIP), DropUnknownPort},
		{"ARP request to another agent's MAC", packet.ARPMessage(packet.ARPRequest, otherMAC, strangerMAC, strangerIP, make(net.HardwareAddr, 6), gatewayIP), DropUnknownPort},
		{"ARP reply to a broadcast", packet.ARPMessage(packet.ARPReply, bcast, strangerMAC, strangerIP, gwMAC, gatewayIP), DropUnknownPort},

		// Spoofing: the DNS query above from addresses it may not use.
		{"from an active endpoint's address", strangerUDP(agentIP, gatewayIP, 53).Bytes(), DropUnknownSpoofed},
		{"from an absent endpoint's address", strangerUDP(absentIP, gatewayIP, 53).Bytes(), DropUnknownSpoofed},
		{"from an active endpoint's MAC", withMAC(dns, agentMAC), DropUnknownSpoofed},
		{"from an absent endpoint's MAC", withMAC(dns, absentMAC), DropUnknownSpoofed},
		{"from both of an endpoint's addresses", withMAC(strangerUDP(agentIP, gatewayIP, 53), agentMAC), DropUnknownSpoofed},
		{"from the gateway's address", strangerUDP(gatewayIP, gatewayIP, 53).Bytes(), DropUnknownSpoofed},
		{"from the gateway's MAC", withMAC(dns, gwMAC), DropUnknownSpoofed},
		{"from a multicast MAC", withMAC(dns, net.HardwareAddr{0x03, 0, 0, 0, 0, 0x32}), DropUnknownSpoofed},
		{"from the zero MAC", withMAC(dns, make(net.HardwareAddr, 6)), DropUnknownSpoofed},
		{"from the subnet's own address", strangerUDP(netip.MustParseAddr("10.200.0.0"), gatewayIP, 53).Bytes(), DropUnknownSpoofed},
		{"from the subnet's broadcast", strangerUDP(netip.MustParseAddr("10.200.0.255"), gatewayIP, 53).Bytes(), DropUnknownSpoofed},
		{"from another subnet", strangerUDP(netip.MustParseAddr("10.200.1.50"), gatewayIP, 53).Bytes(), DropUnknownSpoofed},
		{"from another network's endpoint", strangerUDP(net2IP, gatewayIP, 53).Bytes(), DropUnknownSpoofed},
		{"ARP from an endpoint's address", packet.ARP(strangerMAC, agentIP, gatewayIP), DropUnknownSpoofed},
		{"ARP from an endpoint's MAC", packet.ARP(agentMAC, strangerIP, gatewayIP), DropUnknownSpoofed},
		{"ARP whose sender MAC is not the frame's", withARPSource(packet.ARP(otherMAC, strangerIP, gatewayIP), strangerMAC), DropUnknownSpoofed},
		{"gratuitous ARP for the gateway's address", packet.ARP(strangerMAC, gatewayIP, gatewayIP), DropUnknownSpoofed},

		// Positive controls of the spoof probes: the same query from
		// another free address and MAC of the subnet passes.
		{"from another free address", strangerUDP(netip.MustParseAddr("10.200.0.254"), gatewayIP, 53).Bytes(), AllowUnknownGateway},
		{"from another free MAC", withMAC(dns, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x33}), AllowUnknownGateway},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) { expectVerdict(t, d, unknownPort, s.data, s.reason, "") })
	}
	// The ports with identities are judged as before.
	t.Run("the agent's own DNS", func(t *testing.T) {
		expectVerdict(t, d, agentPort, udp(gatewayIP, 53).Bytes(), AllowGateway, "")
	})
	t.Run("the agent's grant", func(t *testing.T) {
		expectVerdict(t, d, agentPort, tcp(agentIP, upstream, 443).Bytes(), AllowGrant, "")
	})
	// No flow: every packet of the stranger is decided in full.
	if n := countFlows(t, d, FlowMatch{Ifindex: unknownPort}); n != 0 {
		t.Errorf("the port without identity has %d flows", n)
	}
}

// withARPSource replaces the frame's Ethernet source, not the ARP sender.
func withARPSource(frame []byte, mac net.HardwareAddr) []byte {
	copy(frame[6:12], mac)
	return frame
}

func countFlows(t *testing.T, d *Datapath, m FlowMatch) int {
	t.Helper()
	var k portIngressFlowKey
	var v portIngressFlowState
	n := 0
	it := d.objs.Flows.Iterate()
	for it.Next(&k, &v) {
		if m.Ifindex == 0 || int(k.Ifindex) == m.Ifindex {
			n++
		}
	}
	must(t, it.Err())
	return n
}

// TestUnknownSenderNeedsItsNetwork: a port without identity whose network
// the daemon has not written (or that was detached) reaches nothing, not
// even an open service: no network, no gateway to reach.
func TestUnknownSenderNeedsItsNetwork(t *testing.T) {
	d := openTest(t)
	seed(t, d)
	dns := strangerUDP(strangerIP, gatewayIP, 53).Bytes()
	expectVerdict(t, d, unknownPort, dns, DropUnknownPort, "")
	must(t, d.SetPortNetwork(unknownPort, PortNetwork{Gateway: gatewayPfx, GatewayMAC: gwMAC}))
	expectVerdict(t, d, unknownPort, dns, AllowUnknownGateway, "") // positive control
	must(t, d.Detach(unknownPort))
	expectVerdict(t, d, unknownPort, dns, DropUnknownPort, "")

	// A service is per gateway: another network's gateway opens nothing.
	must(t, d.SetPortNetwork(unknownPort, PortNetwork{Gateway: netip.PrefixFrom(gateway2, 24), GatewayMAC: net2GwMAC}))
	expectVerdict(t, d, unknownPort, packet.UDP(strangerMAC, net2GwMAC, netip.MustParseAddr("10.201.0.50"), gateway2, 40000, 53).Bytes(), DropUnknownPort, "")
}

// TestEndpointAddrsHeld: the addresses of an endpoint stay its own while it
// is registered, its port there or not; SetEndpointAddrs releases those of
// the endpoints it no longer lists, never those of a port with an identity
// now.
func TestEndpointAddrsHeld(t *testing.T) {
	d := openTest(t)
	seedUnknown(t, d)
	from := func(ip netip.Addr) []byte { return strangerUDP(ip, gatewayIP, 53).Bytes() }

	// The port leaves: its addresses stay held.
	must(t, d.DeleteEndpoint(otherPort))
	expectVerdict(t, d, unknownPort, from(otherIP), DropUnknownSpoofed, "")
	// The endpoints are removed from the registry: an empty list releases
	// the absent ones, not the agent whose port has its identity.
	must(t, d.SetEndpointAddrs(nil))
	expectVerdict(t, d, unknownPort, from(otherIP), AllowUnknownGateway, "")
	expectVerdict(t, d, unknownPort, from(absentIP), AllowUnknownGateway, "")
	expectVerdict(t, d, unknownPort, from(agentIP), DropUnknownSpoofed, "")
	expectVerdict(t, d, unknownPort, withMACOf(strangerUDP(strangerIP, gatewayIP, 53), agentMAC), DropUnknownSpoofed, "")
	// SetEndpoint holds the address before the port has its identity.
	must(t, d.SetEndpoint(otherPort, Endpoint{Identity: otherID, IP: otherIP, Gateway: gatewayIP, MAC: otherMAC, GatewayMAC: gwMAC}))
	expectVerdict(t, d, unknownPort, from(otherIP), DropUnknownSpoofed, "")
}

func withMACOf(f packet.Frame, mac net.HardwareAddr) []byte {
	f.SrcMAC = mac
	return f.Bytes()
}

// TestPortNetworkValidation: SetPortNetwork and SetEndpointAddrs refuse
// what the program could not use, naming it, and change nothing.
func TestPortNetworkValidation(t *testing.T) {
	d := openTest(t)
	for _, pn := range []PortNetwork{
		{Gateway: netip.MustParsePrefix("10.200.0.1/31"), GatewayMAC: gwMAC},
		{Gateway: netip.MustParsePrefix("10.200.0.1/0"), GatewayMAC: gwMAC},
		{Gateway: netip.MustParsePrefix("2001:db8::1/64"), GatewayMAC: gwMAC},
		{Gateway: gatewayPfx, GatewayMAC: net.HardwareAddr{1, 2, 3}},
		{},
	} {
		if err := d.SetPortNetwork(unknownPort, pn); err == nil || !strings.Contains(err.Error(), "ifindex 4444") {
			t.Errorf("SetPortNetwork(%v, %v): error %v, want one naming the port", pn.Gateway, pn.GatewayMAC, err)
		}
	}
	must(t, d.SetServices([]Service{{gatewayIP, 17, 53}}))
	expectVerdict(t, d, unknownPort, strangerUDP(strangerIP, gatewayIP, 53).Bytes(), DropUnknownPort, "")

	must(t, d.SetEndpointAddrs([]EndpointAddrs{{Identity: agentID, IP: agentIP, MAC: agentMAC}}))
	err := d.SetEndpointAddrs([]EndpointAddrs{{Identity: otherID, IP: otherIP, MAC: otherMAC}, {Identity: 3, IP: netip.MustParseAddr("2001:db8::3"), MAC: otherMAC}})
	if err == nil || !strings.Contains(err.Error(), "identity 3") {
		t.Errorf("SetEndpointAddrs with an IPv6 address: error %v, want one naming identity 3", err)
	}
	must(t, d.SetPortNetwork(unknownPort, PortNetwork{Gateway: gatewayPfx, GatewayMAC: gwMAC}))
	expectVerdict(t, d, unknownPort, strangerUDP(agentIP, gatewayIP, 53).Bytes(), DropUnknownSpoofed, "")
	expectVerdict(t, d, unknownPort, strangerUDP(otherIP, gatewayIP, 53).Bytes(), AllowUnknownGateway, "")
}
