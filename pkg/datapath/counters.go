package datapath

import (
	"fmt"

	"outcall.dev/outcall/pkg/ruletable"
)

// Reason says why the program allowed or dropped a packet.
type Reason uint32

var reasonNames = [...]string{
	portIngressReasonREASON_ALLOW_GRANT:           "grant",
	portIngressReasonREASON_ALLOW_GATEWAY:         "gateway",
	portIngressReasonREASON_ALLOW_ARP:             "arp",
	portIngressReasonREASON_ALLOW_ESTABLISHED:     "established",
	portIngressReasonREASON_DROP_UNKNOWN_PORT:     "unknown_port",
	portIngressReasonREASON_DROP_SPOOFED_MAC:      "spoofed_mac",
	portIngressReasonREASON_DROP_SPOOFED_IP:       "spoofed_ip",
	portIngressReasonREASON_DROP_IPV6:             "ipv6",
	portIngressReasonREASON_DROP_NON_IP:           "non_ip",
	portIngressReasonREASON_DROP_MALFORMED:        "malformed",
	portIngressReasonREASON_DROP_FRAGMENT:         "fragment",
	portIngressReasonREASON_DROP_NO_RULE:          "no_rule",
	portIngressReasonREASON_DROP_EXPIRED:          "expired",
	portIngressReasonREASON_DROP_DNS_BYPASS:       "dns_bypass",
	portIngressReasonREASON_DROP_GATEWAY_PORT:     "gateway_port",
	portIngressReasonREASON_DROP_ARP:              "arp",
	portIngressReasonREASON_ALLOW_RULE:            "rule",
	portIngressReasonREASON_DROP_RULE:             "rule",
	portIngressReasonREASON_DROP_EAST_WEST:        "east_west",
	portIngressReasonREASON_DROP_RESTRICTED:       "restricted",
	portIngressReasonREASON_DROP_IP_OPTIONS:       "ip_options",
	portIngressReasonREASON_ALLOW_REPLY:           "reply",
	portIngressReasonREASON_ALLOW_UNKNOWN_GATEWAY: "unknown_gateway",
	portIngressReasonREASON_ALLOW_UNKNOWN_ARP:     "unknown_arp",
	portIngressReasonREASON_DROP_UNKNOWN_SPOOFED:  "unknown_spoofed",
}

// Reasons, as the program numbers them.
const (
	AllowGrant       = Reason(portIngressReasonREASON_ALLOW_GRANT)
	AllowGateway     = Reason(portIngressReasonREASON_ALLOW_GATEWAY)
	AllowARP         = Reason(portIngressReasonREASON_ALLOW_ARP)
	AllowEstablished = Reason(portIngressReasonREASON_ALLOW_ESTABLISHED)
	DropUnknownPort  = Reason(portIngressReasonREASON_DROP_UNKNOWN_PORT)
	DropSpoofedMAC   = Reason(portIngressReasonREASON_DROP_SPOOFED_MAC)
	DropSpoofedIP    = Reason(portIngressReasonREASON_DROP_SPOOFED_IP)
	DropIPv6         = Reason(portIngressReasonREASON_DROP_IPV6)
	DropNonIP        = Reason(portIngressReasonREASON_DROP_NON_IP)
	DropMalformed    = Reason(portIngressReasonREASON_DROP_MALFORMED)
	DropFragment     = Reason(portIngressReasonREASON_DROP_FRAGMENT)
	DropNoRule       = Reason(portIngressReasonREASON_DROP_NO_RULE)
	DropExpired      = Reason(portIngressReasonREASON_DROP_EXPIRED)
	DropDNSBypass    = Reason(portIngressReasonREASON_DROP_DNS_BYPASS)
	DropGatewayPort  = Reason(portIngressReasonREASON_DROP_GATEWAY_PORT)
	DropARP          = Reason(portIngressReasonREASON_DROP_ARP)
	AllowRule        = Reason(portIngressReasonREASON_ALLOW_RULE)
	DropRule         = Reason(portIngressReasonREASON_DROP_RULE)
	DropEastWest     = Reason(portIngressReasonREASON_DROP_EAST_WEST)
	DropRestricted   = Reason(portIngressReasonREASON_DROP_RESTRICTED)
	DropIPOptions    = Reason(portIngressReasonREASON_DROP_IP_OPTIONS)
	AllowReply       = Reason(portIngressReasonREASON_ALLOW_REPLY)
	// A port without identity reached a service open on its gateway, or
	// sent ARP for it; it sent from an address an endpoint holds (or the
	// gateway's, or one outside its subnet). Everything else it sends is
	// DropUnknownPort.
	AllowUnknownGateway = Reason(portIngressReasonREASON_ALLOW_UNKNOWN_GATEWAY)
	AllowUnknownARP     = Reason(portIngressReasonREASON_ALLOW_UNKNOWN_ARP)
	DropUnknownSpoofed  = Reason(portIngressReasonREASON_DROP_UNKNOWN_SPOOFED)
	reasonCount         = int(portIngressReasonREASON_MAX)
)

// The destination ports of DNS (enum dns_port of bpf/lib/types.h). TCP or
// UDP from an agent to either reaches the gateway's DNS filter, as a gateway
// service, or nowhere (DropDNSBypass), whatever a rule or grant says.
const (
	DNSPort = ruletable.DNSPort // DNS over UDP and TCP
	DoTPort = ruletable.DoTPort // DNS over TLS
)

// String is the metric label of the reason.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason_%d", uint32(r))
}

// Allowed reports whether the reason is an allow verdict. Reasons are
// numbered in the order they were added, not grouped by verdict, so this is
// a list.
func (r Reason) Allowed() bool {
	switch r {
	case AllowGrant, AllowGateway, AllowARP, AllowEstablished, AllowRule, AllowReply, AllowUnknownGateway, AllowUnknownARP:
		return true
	}
	return false
}

// Verdict is "allow" or "drop".
func (r Reason) Verdict() string {
	if r.Allowed() {
		return "allow"
	}
	return "drop"
}

// Counter is the packets and bytes counted for one reason, summed over CPUs.
type Counter struct {
	Reason  Reason
	Packets uint64
	Bytes   uint64
}

// Counters reads the per-CPU verdict counters, one entry per reason.
func (d *Datapath) Counters() ([]Counter, error) {
	out := make([]Counter, 0, reasonCount)
	var perCPU []portIngressCounter
	for r := 0; r < reasonCount; r++ {
		if err := d.objs.Counters.Lookup(uint32(r), &perCPU); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", Reason(r), err)
		}
		c := Counter{Reason: Reason(r)}
		for _, v := range perCPU {
			c.Packets += v.Packets
			c.Bytes += v.Bytes
		}
		out = append(out, c)
	}
	return out, nil
}
