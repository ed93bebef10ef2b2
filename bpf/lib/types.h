// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Types and constants shared with Go: bpf2go exports each one named in
 * pkg/datapath/gen.go, so C and Go cannot drift. */
#pragma once

#include <linux/types.h>

#define OUTCALL_MAX_ENDPOINTS 65536
#define OUTCALL_MAX_GRANTS (1 << 20)
/* Prefix grants (CIDR destinations), in an LPM trie beside the exact
 * grants' hash. */
#define OUTCALL_MAX_GRANT_PREFIXES (1 << 16)
/* Room in the counters map for reasons yet to come: its size is part of the
 * pinned map's identity, and a size change would make a restarted daemon
 * refuse the pinned maps. */
#define OUTCALL_MAX_REASONS 64
/* Rule tables come in two generations: the active one and the one being
 * built. */
#define OUTCALL_RULE_SLOTS 2
#define OUTCALL_MAX_FENCES 4096
/* Services are per gateway: room for a few on each of many networks. */
#define OUTCALL_MAX_SERVICES 1024
#define OUTCALL_MAX_FLOWS (1 << 18)

/* Why a packet was allowed or dropped. The value indexes the counters map;
 * the datapath package turns the names into metric labels. */
enum reason {
	REASON_ALLOW_GRANT = 0,     /* matched an allow entry */
	REASON_ALLOW_GATEWAY,       /* a service (DNS, proxy) open on the endpoint's gateway */
	REASON_ALLOW_ARP,           /* ARP with the endpoint's own addresses for the gateway */
	REASON_ALLOW_ESTABLISHED,   /* belongs to a flow conntrack already knows */
	REASON_DROP_UNKNOWN_PORT,   /* port has no identity, and the packet is not for a gateway service */
	REASON_DROP_SPOOFED_MAC,
	REASON_DROP_SPOOFED_IP,
	REASON_DROP_IPV6,
	REASON_DROP_NON_IP,
	REASON_DROP_MALFORMED,      /* truncated or invalid headers */
	REASON_DROP_FRAGMENT,
	REASON_DROP_NO_RULE,        /* default block */
	REASON_DROP_EXPIRED,        /* the only matching allow entry has expired */
	REASON_DROP_DNS_BYPASS,     /* DNS (enum dns_port) to anything but the gateway */
	REASON_DROP_GATEWAY_PORT,   /* a port that is not a service on the endpoint's gateway */
	REASON_DROP_ARP,            /* ARP not for the gateway or with foreign addresses */
	REASON_ALLOW_RULE,          /* a packet-layer rule allowed it */
	REASON_DROP_RULE,           /* a packet-layer rule blocked it */
	REASON_DROP_EAST_WEST,      /* not addressed to the gateway, or to another Outcall address */
	REASON_DROP_RESTRICTED,     /* a restricted destination no licensed rule or grant opens */
	REASON_DROP_IP_OPTIONS,     /* IPv4 options (source routing and the like) */
	REASON_ALLOW_REPLY,         /* reply of a connection opened towards the container */
	REASON_ALLOW_UNKNOWN_GATEWAY, /* a port without identity: a service open on its gateway */
	REASON_ALLOW_UNKNOWN_ARP,   /* a port without identity: ARP for its gateway */
	REASON_DROP_UNKNOWN_SPOOFED, /* a port without identity: an endpoint's, the gateway's or a foreign address */
	REASON_MAX,
};
_Static_assert(REASON_MAX <= OUTCALL_MAX_REASONS, "counters map too small");

/* Destination ports of DNS: TCP or UDP to them goes to the gateway's filter
 * or nowhere (REASON_DROP_DNS_BYPASS). */
enum dns_port {
	DNS_PORT = 53,  /* DNS over UDP and TCP */
	DOT_PORT = 853, /* DNS over TLS */
};

/* An endpoint is a container-facing port with an identity. Every frame it
 * may send goes to gateway_mac, the bridge's own address. */
struct endpoint {
	__u32 identity;
	__u8 ip[4];
	__u8 gateway[4];
	__u8 mac[6];
	__u8 gateway_mac[6];
};

/* The network of a port of an Outcall bridge, identity or not: what a port
 * without identity (a container nobody registered) may use. It reaches the
 * services open on gateway and nothing else, from an address of the subnet
 * that no endpoint holds (endpoint_ips, endpoint_macs). */
struct port_network {
	__u8 gateway[4];
	__u8 subnet[4]; /* the gateway's subnet, masked */
	__u8 gateway_mac[6];
	__u8 prefixlen; /* of subnet */
	__u8 pad;
};

/* An address an endpoint holds: its IPv4 address (endpoint_ips) or its MAC
 * (endpoint_macs). No port without identity may send from it. */
struct endpoint_ip {
	__u8 addr[4];
};

struct endpoint_mac {
	__u8 mac[6];
	__u8 pad[2];
};

/* An allow entry. port 0 matches every port of proto; proto 0 matches every
 * protocol and port. */
struct grant_key {
	__u32 identity;
	__u8 daddr[4];
	__u16 dport; /* host byte order */
	__u8 proto;
	__u8 pad;
};

/* grant_value.flags */
enum grant_flag {
	GRANT_F_PRIVATE = 1, /* may open a restricted destination */
};

struct grant_value {
	__u64 expires_ns; /* CLOCK_BOOTTIME; 0 never expires */
	__u32 rule;       /* who opened it (0 = operator) */
	__u8 flags;       /* enum grant_flag */
	/* Length of the destination prefix the entry covers (32 for an exact
	 * grant). A prefix grant with GRANT_F_PRIVATE opens a fenced
	 * destination only when it lies inside the fence (prefixlen at least
	 * the fence's), like a rule's license: 0.0.0.0/0 never opens the
	 * metadata address. */
	__u8 prefixlen;
	__u8 pad[2];
};

/* The exact part of a grant_prefix_key: identity, dport and proto. */
enum grant_prefix_bits {
	GRANT_PREFIX_EXACT_BITS = 56,
};

/* A prefix grant (a CIDR destination) in the grant_prefixes LPM trie. The
 * trie matches the first prefixlen bits of what follows it, so identity,
 * dport and proto (GRANT_PREFIX_EXACT_BITS) always match exactly and daddr
 * by the destination prefix: prefixlen is GRANT_PREFIX_EXACT_BITS plus the
 * destination's prefix length. A lookup uses the full length. */
struct grant_prefix_key {
	__u32 prefixlen;
	__u32 identity;
	__u16 dport; /* host byte order */
	__u8 proto;
	__u8 daddr[4];
	__u8 pad;
};

/* A service on one gateway address: open to the endpoints whose gateway
 * (struct endpoint.gateway) that address is, and to no other. Each Outcall
 * network has its own gateway, so a listener bound on one network's gateway
 * opens its port on that network only. */
struct service_key {
	__u8 gateway[4]; /* network byte order, like every address here */
	__u16 port;      /* host byte order */
	__u8 proto;
	__u8 pad;
};

/* A destination prefix of the rule tables. */
struct rule_dst_key {
	__u32 prefixlen;
	__u8 addr[4];
};

enum rule_action {
	RULE_NONE = 0,  /* no rule decides: grants, then conntrack, then no_rule */
	RULE_ALLOW = 1,
	RULE_BLOCK = 2,
};

/* One cell of the rule table. agent_class 0 is every agent; dst_class 0 is
 * every destination no prefix matches. any_port 1 (with dport 0) covers every
 * port not listed for the same agent class, destination class and proto. */
struct rule_key {
	__u32 agent_class;
	__u32 dst_class;
	__u16 dport; /* host byte order */
	__u8 proto;
	__u8 any_port;
};

struct rule_verdict {
	__u32 rule;  /* index into the generation's hit counters */
	__u8 action; /* enum rule_action */
	__u8 grants; /* RULE_BLOCK: 1 lets a grant still allow */
	/* RULE_ALLOW: the length of the longest prefix the allowing rule
	 * names around this destination, when it sets
	 * egress.allow_private_ips; 0 otherwise. A fenced destination is
	 * opened only when it is at least the fence's prefix length. */
	__u8 license_plen;
	__u8 pad;
};

enum fence_kind {
	FENCE_RESTRICTED = 1, /* opened only by a licensed rule or grant */
	FENCE_NEVER = 2,      /* an Outcall subnet: never opened */
};

/* A fenced destination prefix (DESIGN.md section 4, restricted
 * destinations). */
struct fence {
	__u8 kind;      /* enum fence_kind */
	__u8 prefixlen; /* of the fenced prefix */
	__u16 pad;
};

/* A flow the datapath allowed when it began: TCP or UDP from one port. Keyed
 * by the port's ifindex, not its identity, so that an established packet
 * costs one lookup: the state carries what the packet must match. */
struct flow_key {
	__u32 ifindex;
	__u8 daddr[4];
	__u16 sport; /* host byte order */
	__u16 dport; /* host byte order */
	__u8 proto;
	__u8 pad[3];
};

enum flow_owner {
	FLOW_RULE = 1,  /* opened by a packet-layer allow rule */
	FLOW_GRANT = 2, /* opened by a grant; outlives its expiry, not its revocation */
};

struct flow_state {
	__u32 generation; /* rule generation that last allowed it */
	__u32 rule;       /* FLOW_RULE: the rule's index in that generation */
	__u32 identity;   /* of the endpoint that opened it */
	__u8 saddr[4];    /* the endpoint's address, MAC and gateway MAC when it */
	__u8 mac[6];      /* opened: a packet of the flow must still carry them */
	__u8 gateway_mac[6];
	__u8 owner; /* enum flow_owner */
	__u8 pad[3];
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* What the parser learned about a packet: what the decision reads, what is
 * counted, and, unchanged, what a drop event reports. Fields the parser
 * did not reach are 0. */
struct flow {
	__u32 ifindex;
	__u32 identity;
	__u8 saddr[4];
	__u8 daddr[4];
	__u16 sport; /* host byte order */
	__u16 dport; /* host byte order */
	__u16 ethertype;
	__u8 proto;
	__u8 syn; /* TCP SYN: a new connection, never a known flow */
};

/* One sampled drop: the packet's flow as the program parsed it. */
struct drop_event {
	__u64 time_ns; /* CLOCK_BOOTTIME */
	struct flow flow;
	__u32 reason; /* enum reason */
	__u32 pad;
};

struct event_budget {
	__u64 window_start_ns;
	__u64 sent;
};
