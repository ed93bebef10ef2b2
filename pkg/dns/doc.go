// Package dns is Outcall's DNS filter (S007): a filtering forwarder that
// listens on every network's gateway, UDP and TCP, and answers only the
// containers the gateway can identify.
//
// Each query goes through one pipeline (handle, S007 §2.4): identity
// first, so a sender the gateway does not know learns nothing but REFUSED;
// then the name, normalised for the rule engine; then the rules
// (dns.query, dns.record_type, agent.name). A block is NXDOMAIN with
// Outcall's SOA; an allow is answered from the cache or the upstreams, and
// the restricted-address filter and the rule's egress mode are applied to
// every answer, cached or fresh, under the policy in force now. For an
// egress.mode direct_ip rule the answer's grants are written into the
// datapath (network.Gateway.Learn) before the answer is released, so the
// client's first SYN never races the grant map.
//
// The package parses and builds messages with github.com/miekg/dns only
// (S007-FR-024), but runs its own socket loops instead of dns.Server, whose
// early FORMERR replies would answer an unknown or malformed sender.
package dns
