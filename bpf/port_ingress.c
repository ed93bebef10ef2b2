// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TCX ingress program on the host side of every container-facing port of an
 * Outcall bridge. It knows the sender by the port it arrived on, drops spoofed
 * addresses, decides allow/deny from the maps in lib/maps.h, counts every
 * verdict, samples drops to a ring buffer and marks what it allows so the
 * nftables floor lets it through. Anything it does not understand is dropped.
 *
 * A port without identity reaches only the services open on its gateway
 * (unknown_sender), from an address no endpoint holds. For an endpoint's
 * IPv4 the order is: the frame goes to the gateway's MAC, no options, no
 * fragments; the services open on the endpoint's own gateway (and replies
 * of connections opened towards the container); DNS bypass; a flow this
 * program allowed under the active rule generation passes at once;
 * restricted destinations; the packet-layer rule tables (an allow entry
 * decides; a block entry decides after grants, if it lets them); grants;
 * replies; and finally no_rule. A new connection (a TCP SYN, a UDP tuple
 * with no flow) always needs a live rule or grant.
 *
 * This file holds the decision only. lib/ holds the rest: types.h what Go
 * shares, maps.h the maps, eth.h and ipv4.h the headers' helpers, ct.h the
 * conntrack lookup, verdict.h counting, drop events and the allow mark. */

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>

#include "lib/types.h"
#include "lib/maps.h"
#include "lib/eth.h"
#include "lib/ipv4.h"
#include "lib/ct.h"
#include "lib/verdict.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* grant_state is 1 for a live entry, -1 for an expired one, 0 for none or
 * for one that may not open a restricted destination: only an entry with
 * GRANT_F_PRIVATE does, and a prefix entry only when its prefix lies inside
 * the fence (license is the fence's prefix length; 0 for exact entries). */
static __always_inline int grant_state(const struct grant_value *g, __u64 now, int restricted, __u8 license)
{
	if (!g || (restricted && (!(g->flags & GRANT_F_PRIVATE) || g->prefixlen < license)))
		return 0;
	return !g->expires_ns || now < g->expires_ns ? 1 : -1;
}

/* grant_verdict tries the most specific allow entry first, then any port of
 * the protocol, then any protocol: in the exact grants' hash, and only when
 * none of those is live, the same three ways in the prefix grants' trie
 * (the longest prefix holding the destination). So an exact grant's first
 * packet costs what it did before prefix grants existed. It returns 1 for a
 * live entry, -1 when only expired entries matched, 0 for none. */
static __always_inline int grant_verdict(struct flow *f, int restricted, __u8 fence_plen)
{
	struct grant_key key = { .identity = f->identity, .proto = f->proto, .dport = f->dport };
	struct grant_prefix_key pk = { .prefixlen = GRANT_PREFIX_EXACT_BITS + 32, .identity = f->identity,
				       .proto = f->proto, .dport = f->dport };
	__u64 now = bpf_ktime_get_boot_ns();
	int s, expired = 0;

	__builtin_memcpy(key.daddr, f->daddr, 4);
	if ((s = grant_state(bpf_map_lookup_elem(&grants, &key), now, restricted, 0)) > 0)
		return 1;
	expired |= s < 0;
	key.dport = 0;
	if ((s = grant_state(bpf_map_lookup_elem(&grants, &key), now, restricted, 0)) > 0)
		return 1;
	expired |= s < 0;
	key.proto = 0;
	if ((s = grant_state(bpf_map_lookup_elem(&grants, &key), now, restricted, 0)) > 0)
		return 1;
	expired |= s < 0;

	__builtin_memcpy(pk.daddr, f->daddr, 4);
	if ((s = grant_state(bpf_map_lookup_elem(&grant_prefixes, &pk), now, restricted, fence_plen)) > 0)
		return 1;
	expired |= s < 0;
	pk.dport = 0;
	if ((s = grant_state(bpf_map_lookup_elem(&grant_prefixes, &pk), now, restricted, fence_plen)) > 0)
		return 1;
	expired |= s < 0;
	pk.proto = 0;
	if ((s = grant_state(bpf_map_lookup_elem(&grant_prefixes, &pk), now, restricted, fence_plen)) > 0)
		return 1;
	expired |= s < 0;
	return expired ? -1 : 0;
}

/* What the rule tables decided for a packet. hit is the matching rule's
 * counter, NULL for RULE_NONE. */
struct rule_match {
	__u8 action;
	__u8 grants;
	__u8 license_plen;
	__u32 rule;
	struct counter *hit;
};

/* rule_generation reads the active generation once; every lookup of the
 * packet uses this copy, so a packet sees one generation even while
 * userspace publishes the next. */
static __always_inline __u32 rule_generation(void)
{
	__u32 zero = 0, *gen = bpf_map_lookup_elem(&rule_active, &zero);

	return gen ? *gen : 0;
}

/* rule_lookup looks the packet up in generation gen: the destination's class
 * by longest prefix, the sender's agent class by identity, then the most
 * specific cell, first for the agent class, then for every agent. Protocols
 * other than TCP, UDP and ICMP share the rows of protocol 0. No generation
 * or no cell is RULE_NONE, which leaves the decision to grants as if there
 * were no rule tables. */
static __always_inline struct rule_match rule_lookup(struct flow *f, __u32 gen)
{
	struct rule_match m = { .action = RULE_NONE, .grants = 1 };
	struct rule_dst_key dk = { .prefixlen = 32 };
	struct rule_key k = { .proto = f->proto, .dport = f->dport };
	struct rule_verdict *v = NULL;
	void *dsts, *table, *agents, *hits;
	__u32 slot = gen % OUTCALL_RULE_SLOTS, *class;

	if (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP && f->proto != IPPROTO_ICMP) {
		k.proto = 0;
		k.dport = 0;
	}
	dsts = bpf_map_lookup_elem(&rule_dsts, &slot);
	table = bpf_map_lookup_elem(&rule_table, &slot);
	agents = bpf_map_lookup_elem(&rule_agents, &slot);
	hits = bpf_map_lookup_elem(&rule_hits, &slot);
	if (!dsts || !table || !agents || !hits)
		return m;

	__builtin_memcpy(dk.addr, f->daddr, 4);
	class = bpf_map_lookup_elem(dsts, &dk);
	if (class)
		k.dst_class = *class;
	class = bpf_map_lookup_elem(agents, &f->identity);
	if (class) {
		k.agent_class = *class;
		v = bpf_map_lookup_elem(table, &k);
		if (!v) {
			__u16 dport = k.dport;

			k.dport = 0;
			k.any_port = 1;
			v = bpf_map_lookup_elem(table, &k);
			k.dport = dport;
			k.any_port = 0;
		}
		k.agent_class = 0;
	}
	if (!v)
		v = bpf_map_lookup_elem(table, &k);
	if (!v) {
		k.dport = 0;
		k.any_port = 1;
		v = bpf_map_lookup_elem(table, &k);
	}
	if (!v || v->action == RULE_NONE)
		return m;
	m.action = v->action;
	m.grants = v->grants;
	m.license_plen = v->license_plen;
	m.rule = v->rule;
	m.hit = bpf_map_lookup_elem(hits, &v->rule);
	return m;
}

static __always_inline void remember_flow(struct flow_key *fk, const struct endpoint *ep,
					  __u32 gen, __u32 rule, __u8 owner)
{
	struct flow_state st = { .generation = gen, .rule = rule, .identity = ep->identity, .owner = owner };

	__builtin_memcpy(st.saddr, ep->ip, 4);
	__builtin_memcpy(st.mac, ep->mac, 6);
	__builtin_memcpy(st.gateway_mac, ep->gateway_mac, 6);
	bpf_map_update_elem(&flows, fk, &st, BPF_ANY);
}

/* established_fast passes a packet of a flow this program allowed under the
 * active generation with one lookup, before the endpoint's: the flow's state
 * holds the addresses the endpoint had when the flow began, and the packet
 * must carry exactly those, to exactly the gateway's MAC. Anything else,
 * including any doubt about the headers, goes the whole way below, which
 * decides (and counts) as if this did not exist. */
static __always_inline int established_fast(struct __sk_buff *skb, __u32 ifindex, __u32 gen)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct flow_key fk = { .ifindex = ifindex };
	struct flow_state *st;
	__u8 *l4 = (void *)(ip + 1);

	/* Ports for UDP; the TCP flags (byte 13) are checked below. */
	if ((void *)(l4 + 8) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return 0;
	if (ip->protocol == IPPROTO_TCP) {
		if ((void *)(l4 + 20) > data_end || (l4[13] & TCP_FLAG_SYN))
			return 0;
	} else if (ip->protocol != IPPROTO_UDP) {
		return 0;
	}
	__builtin_memcpy(fk.daddr, &ip->daddr, 4);
	fk.sport = ((__u16)l4[0] << 8) | l4[1];
	fk.dport = ((__u16)l4[2] << 8) | l4[3];
	fk.proto = ip->protocol;
	st = bpf_map_lookup_elem(&flows, &fk);
	if (!st || st->generation != gen || !addr_eq((__u8 *)&ip->saddr, st->saddr) ||
	    !mac_eq(eth->h_source, st->mac) || !mac_eq(eth->h_dest, st->gateway_mac))
		return 0;
	return 1;
}

/* handle_arp allows requests for the gateway (broadcast or to the gateway's
 * MAC) and replies to the gateway, each with the endpoint's own addresses:
 * ARP is how a container finds its gateway, never another port. */
static __always_inline int handle_arp(struct __sk_buff *skb, struct flow *f,
				      const struct endpoint *ep, struct ethhdr *eth, void *data_end)
{
	struct arp_eth_ipv4 *arp = (void *)(eth + 1);

	if ((void *)(arp + 1) > data_end)
		return drop(skb, f, REASON_DROP_MALFORMED);
	if (arp->hrd != bpf_htons(ARP_HRD_ETHER) || arp->pro != bpf_htons(ETH_P_IP) ||
	    arp->hln != 6 || arp->pln != 4)
		return drop(skb, f, REASON_DROP_ARP);
	__builtin_memcpy(f->saddr, arp->spa, 4);
	__builtin_memcpy(f->daddr, arp->tpa, 4);
	if (!mac_eq(arp->sha, ep->mac) || !addr_eq(arp->spa, ep->ip) ||
	    !addr_eq(arp->tpa, ep->gateway))
		return drop(skb, f, REASON_DROP_ARP);
	switch (arp->op) {
	case bpf_htons(ARP_OP_REQUEST):
		if (!broadcast_mac(eth->h_dest) && !mac_eq(eth->h_dest, ep->gateway_mac))
			return drop(skb, f, REASON_DROP_ARP);
		break;
	case bpf_htons(ARP_OP_REPLY):
		if (!mac_eq(eth->h_dest, ep->gateway_mac) || !mac_eq(arp->tha, ep->gateway_mac))
			return drop(skb, f, REASON_DROP_ARP);
		break;
	default:
		return drop(skb, f, REASON_DROP_ARP);
	}
	return allow(skb, REASON_ALLOW_ARP);
}

/* unknown_source_ok reports whether a port without identity may send from
 * ip and mac: an address of its network's subnet that is neither the
 * subnet's own, its broadcast, the gateway nor any registered endpoint's,
 * and a unicast, non-zero MAC that is neither the gateway's nor any
 * endpoint's. The
 * gateway services know a sender by its address: a source an endpoint
 * holds would be taken for that endpoint (its DNS-learned grants, its
 * rules), whether or not the endpoint's port is there now. */
static __always_inline int unknown_source_ok(const struct port_network *pn, const __u8 *ip, const __u8 *mac)
{
	struct endpoint_ip eip = {};
	struct endpoint_mac emac = {};
	__u32 addr = ((__u32)ip[0] << 24) | ((__u32)ip[1] << 16) | ((__u32)ip[2] << 8) | ip[3];
	__u32 net = ((__u32)pn->subnet[0] << 24) | ((__u32)pn->subnet[1] << 16) |
		    ((__u32)pn->subnet[2] << 8) | pn->subnet[3];
	__u32 mask, host;

	/* Subnets are at most /30 (network.CheckSubnet); anything else is
	 * no subnet a sender may claim an address in. */
	if (pn->prefixlen == 0 || pn->prefixlen > 30)
		return 0;
	mask = ~0U << (32 - pn->prefixlen);
	host = addr & ~mask;
	if ((addr & mask) != net || host == 0 || host == ~mask || addr_eq(ip, pn->gateway))
		return 0;
	if ((mac[0] & 1) || !(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]) ||
	    mac_eq(mac, pn->gateway_mac))
		return 0;
	__builtin_memcpy(eip.addr, ip, 4);
	__builtin_memcpy(emac.mac, mac, 6);
	return !bpf_map_lookup_elem(&endpoint_ips, &eip) && !bpf_map_lookup_elem(&endpoint_macs, &emac);
}

/* unknown_sender decides for a port of an Outcall bridge that has no
 * identity: it reaches the services open on its own gateway, and sends the
 * ARP that finds the gateway, from an address no endpoint holds
 * (unknown_source_ok), and nothing else; it never gets a flow, a rule, a
 * grant or a reply. The gateway services answer such a sender REFUSED (DNS)
 * or 403 (proxy). */
static __always_inline int unknown_sender(struct __sk_buff *skb, struct flow *f, const struct port_network *pn)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct service_key svc = {};
	struct iphdr *ip;

	if ((void *)(eth + 1) > data_end)
		return drop(skb, f, REASON_DROP_MALFORMED);
	f->ethertype = bpf_ntohs(eth->h_proto);
	if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		struct arp_eth_ipv4 *arp = (void *)(eth + 1);

		if ((void *)(arp + 1) > data_end)
			return drop(skb, f, REASON_DROP_MALFORMED);
		__builtin_memcpy(f->saddr, arp->spa, 4);
		__builtin_memcpy(f->daddr, arp->tpa, 4);
		if (!mac_eq(arp->sha, eth->h_source) || !unknown_source_ok(pn, arp->spa, arp->sha))
			return drop(skb, f, REASON_DROP_UNKNOWN_SPOOFED);
		if (arp->hrd != bpf_htons(ARP_HRD_ETHER) || arp->pro != bpf_htons(ETH_P_IP) ||
		    arp->hln != 6 || arp->pln != 4 || !addr_eq(arp->tpa, pn->gateway))
			return drop(skb, f, REASON_DROP_UNKNOWN_PORT);
		if (arp->op == bpf_htons(ARP_OP_REQUEST) &&
		    (broadcast_mac(eth->h_dest) || mac_eq(eth->h_dest, pn->gateway_mac)))
			return allow(skb, REASON_ALLOW_UNKNOWN_ARP);
		if (arp->op == bpf_htons(ARP_OP_REPLY) && mac_eq(eth->h_dest, pn->gateway_mac) &&
		    mac_eq(arp->tha, pn->gateway_mac))
			return allow(skb, REASON_ALLOW_UNKNOWN_ARP);
		return drop(skb, f, REASON_DROP_UNKNOWN_PORT);
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return drop(skb, f, REASON_DROP_UNKNOWN_PORT);

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return drop(skb, f, REASON_DROP_MALFORMED);
	__builtin_memcpy(f->saddr, &ip->saddr, 4);
	__builtin_memcpy(f->daddr, &ip->daddr, 4);
	f->proto = ip->protocol;
	if (ip->version != 4 || ip->ihl < 5)
		return drop(skb, f, REASON_DROP_MALFORMED);
	if (!unknown_source_ok(pn, f->saddr, eth->h_source))
		return drop(skb, f, REASON_DROP_UNKNOWN_SPOOFED);
	/* To the gateway's MAC and address, no options, no fragments, TCP or
	 * UDP to an open service: anything else is not for the gateway's
	 * services. */
	if (!mac_eq(eth->h_dest, pn->gateway_mac) || !addr_eq(f->daddr, pn->gateway) || ip->ihl != 5 ||
	    (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) ||
	    (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP))
		return drop(skb, f, REASON_DROP_UNKNOWN_PORT);
	{
		__u8 *l4 = (void *)(ip + 1);

		/* The whole UDP header; for TCP the ports. */
		if ((void *)(l4 + 8) > data_end)
			return drop(skb, f, REASON_DROP_MALFORMED);
		f->sport = ((__u16)l4[0] << 8) | l4[1];
		f->dport = ((__u16)l4[2] << 8) | l4[3];
	}
	svc.port = f->dport;
	svc.proto = f->proto;
	__builtin_memcpy(svc.gateway, pn->gateway, 4);
	if (!f->dport || !bpf_map_lookup_elem(&services, &svc))
		return drop(skb, f, REASON_DROP_UNKNOWN_PORT);
	return allow(skb, REASON_ALLOW_UNKNOWN_GATEWAY);
}

SEC("tcx/ingress")
int outcall_port_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct flow f = {};
	struct flow_key fk = {};
	struct flow_state *known = NULL;
	struct endpoint *ep;
	struct iphdr *ip;
	struct fence *fence;
	struct rule_dst_key dk = { .prefixlen = 32 };
	__u32 ifindex = skb->ingress_ifindex;
	struct rule_match rule;
	int g = 0, restricted = 0, grants_ok;
	__u32 gen;

	gen = rule_generation();
	if (established_fast(skb, ifindex, gen))
		return allow(skb, REASON_ALLOW_ESTABLISHED);

	f.ifindex = ifindex;
	ep = bpf_map_lookup_elem(&endpoints, &ifindex);
	if (!ep) {
		struct port_network *pn = bpf_map_lookup_elem(&port_networks, &ifindex);

		if (!pn)
			return drop(skb, &f, REASON_DROP_UNKNOWN_PORT);
		return unknown_sender(skb, &f, pn);
	}
	f.identity = ep->identity;

	if ((void *)(eth + 1) > data_end)
		return drop(skb, &f, REASON_DROP_MALFORMED);
	f.ethertype = bpf_ntohs(eth->h_proto);
	if (!mac_eq(eth->h_source, ep->mac))
		return drop(skb, &f, REASON_DROP_SPOOFED_MAC);

	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		break;
	case bpf_htons(ETH_P_ARP):
		return handle_arp(skb, &f, ep, eth, data_end);
	case bpf_htons(ETH_P_IPV6):
		return drop(skb, &f, REASON_DROP_IPV6);
	default:
		return drop(skb, &f, REASON_DROP_NON_IP);
	}

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return drop(skb, &f, REASON_DROP_MALFORMED);
	__builtin_memcpy(f.saddr, &ip->saddr, 4);
	__builtin_memcpy(f.daddr, &ip->daddr, 4);
	f.proto = ip->protocol;
	if (ip->version != 4 || ip->ihl < 5)
		return drop(skb, &f, REASON_DROP_MALFORMED);
	if (!addr_eq(f.saddr, ep->ip))
		return drop(skb, &f, REASON_DROP_SPOOFED_IP);
	/* Every IPv4 frame goes to the gateway, whatever its address: the
	 * bridge must never switch it to another port. */
	if (!mac_eq(eth->h_dest, ep->gateway_mac))
		return drop(skb, &f, REASON_DROP_EAST_WEST);
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return drop(skb, &f, REASON_DROP_FRAGMENT);
	/* Options serve no container; source routing would steer a packet
	 * past the decision below. */
	if (ip->ihl != 5)
		return drop(skb, &f, REASON_DROP_IP_OPTIONS);

	if (f.proto == IPPROTO_TCP) {
		/* The flags are byte 13 of the TCP header. */
		__u8 *tcp = (void *)(ip + 1);

		if ((void *)(tcp + 20) > data_end)
			return drop(skb, &f, REASON_DROP_MALFORMED);
		f.sport = ((__u16)tcp[0] << 8) | tcp[1];
		f.dport = ((__u16)tcp[2] << 8) | tcp[3];
		f.syn = !!(tcp[13] & TCP_FLAG_SYN);
	} else if (f.proto == IPPROTO_UDP) {
		__be16 *ports = (void *)(ip + 1);

		if ((void *)(ports + 4) > data_end)
			return drop(skb, &f, REASON_DROP_MALFORMED);
		f.sport = bpf_ntohs(ports[0]);
		f.dport = bpf_ntohs(ports[1]);
	}

	if (addr_eq(f.daddr, ep->gateway)) {
		/* Services are per gateway: only those open on this
		 * endpoint's own gateway address. */
		struct service_key svc = { .port = f.dport, .proto = f.proto };

		__builtin_memcpy(svc.gateway, ep->gateway, 4);
		if (f.dport && bpf_map_lookup_elem(&services, &svc))
			return allow(skb, REASON_ALLOW_GATEWAY);
		if (reply_of_inbound(skb, &f))
			return allow(skb, REASON_ALLOW_REPLY);
		return drop(skb, &f, REASON_DROP_GATEWAY_PORT);
	}
	if ((f.proto == IPPROTO_TCP || f.proto == IPPROTO_UDP) &&
	    (f.dport == DNS_PORT || f.dport == DOT_PORT))
		return drop(skb, &f, REASON_DROP_DNS_BYPASS);

	if (f.proto == IPPROTO_TCP || f.proto == IPPROTO_UDP) {
		fk.ifindex = ifindex;
		__builtin_memcpy(fk.daddr, f.daddr, 4);
		fk.sport = f.sport;
		fk.dport = f.dport;
		fk.proto = f.proto;
		/* Not on the fast path: of an older generation, or its
		 * addresses differ (the flow is then decided as new). */
		if (!f.syn) {
			known = bpf_map_lookup_elem(&flows, &fk);
			if (known && (known->identity != ep->identity || !addr_eq(known->saddr, ep->ip) ||
				      !mac_eq(known->mac, ep->mac)))
				known = NULL;
		}
	}

	__builtin_memcpy(dk.addr, f.daddr, 4);
	fence = bpf_map_lookup_elem(&fences, &dk);
	if (fence) {
		if (fence->kind == FENCE_NEVER)
			return drop(skb, &f, REASON_DROP_EAST_WEST);
		restricted = 1;
	}

	rule = rule_lookup(&f, gen);
	/* A rule allows a restricted destination only if it names a prefix
	 * inside the fence and sets egress.allow_private_ips. */
	if (rule.action == RULE_ALLOW && restricted &&
	    (!rule.license_plen || rule.license_plen < fence->prefixlen))
		rule.action = RULE_NONE;
	/* A block that grants may not override skips them; any other
	 * outcome lets a grant allow, as without rule tables. */
	grants_ok = rule.action != RULE_BLOCK || rule.grants;

	/* A flow of an older generation is decided again: the new rules keep
	 * it or stop it here. A grant's flow outlives the grant's expiry, so
	 * only a block that beats grants stops it; a revoked grant's flows
	 * are removed by userspace. */
	if (known && known->owner == FLOW_GRANT && grants_ok) {
		known->generation = gen;
		return allow(skb, REASON_ALLOW_ESTABLISHED);
	}
	if (rule.action == RULE_ALLOW) {
		if (fk.proto)
			remember_flow(&fk, ep, gen, rule.rule, FLOW_RULE);
		count_hit(skb, rule.hit);
		return allow(skb, REASON_ALLOW_RULE);
	}
	if (grants_ok) {
		g = grant_verdict(&f, restricted, restricted ? fence->prefixlen : 0);
		if (g > 0) {
			if (fk.proto)
				remember_flow(&fk, ep, gen, 0, FLOW_GRANT);
			return allow(skb, REASON_ALLOW_GRANT);
		}
	}
	if (known)
		bpf_map_delete_elem(&flows, &fk);
	if (reply_of_inbound(skb, &f))
		return allow(skb, REASON_ALLOW_REPLY);
	if (rule.action == RULE_BLOCK) {
		count_hit(skb, rule.hit);
		return drop(skb, &f, REASON_DROP_RULE);
	}
	if (restricted && g == 0)
		return drop(skb, &f, REASON_DROP_RESTRICTED);
	return drop(skb, &f, g < 0 ? REASON_DROP_EXPIRED : REASON_DROP_NO_RULE);
}
