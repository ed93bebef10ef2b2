/* Types and maps shared by Outcall's TC programs. Every map is pinned by name
 * under the daemon's pin directory and carries BTF, so `bpftool map dump
 * pinned /sys/fs/bpf/outcall/<map>` prints named fields. */
#pragma once

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define OUTCALL_MAX_ENDPOINTS 65536
#define OUTCALL_MAX_GRANTS (1 << 20)
/* Room in the counters map for reasons yet to come: its size is part of the
 * pinned map's identity, and a size change would make a restarted daemon
 * refuse the pinned maps. */
#define OUTCALL_MAX_REASONS 64
/* Rule tables come in two generations: the active one and the one being
 * built. */
#define OUTCALL_RULE_SLOTS 2
#define OUTCALL_MAX_FENCES 4096
#define OUTCALL_MAX_FLOWS (1 << 18)

/* Why a packet was allowed or dropped. The value indexes the counters map;
 * the datapath package turns the names into metric labels. */
enum reason {
	REASON_ALLOW_GRANT = 0,     /* matched an allow entry */
	REASON_ALLOW_GATEWAY,       /* gateway DNS or proxy port */
	REASON_ALLOW_ARP,           /* ARP with the endpoint's own addresses for the gateway */
	REASON_ALLOW_ESTABLISHED,   /* belongs to a flow conntrack already knows */
	REASON_DROP_UNKNOWN_PORT,   /* port has no identity */
	REASON_DROP_SPOOFED_MAC,
	REASON_DROP_SPOOFED_IP,
	REASON_DROP_IPV6,
	REASON_DROP_NON_IP,
	REASON_DROP_MALFORMED,      /* truncated or invalid headers */
	REASON_DROP_FRAGMENT,
	REASON_DROP_NO_RULE,        /* default block */
	REASON_DROP_EXPIRED,        /* the only matching allow entry has expired */
	REASON_DROP_DNS_BYPASS,     /* DNS (53/853) to anything but the gateway */
	REASON_DROP_GATEWAY_PORT,   /* a gateway port that is not a service */
	REASON_DROP_ARP,            /* ARP not for the gateway or with foreign addresses */
	REASON_ALLOW_RULE,          /* a packet-layer rule allowed it */
	REASON_DROP_RULE,           /* a packet-layer rule blocked it */
	REASON_DROP_EAST_WEST,      /* not addressed to the gateway, or to another Outcall address */
	REASON_DROP_RESTRICTED,     /* a restricted destination no licensed rule or grant opens */
	REASON_DROP_IP_OPTIONS,     /* IPv4 options (source routing and the like) */
	REASON_ALLOW_REPLY,         /* reply of a connection opened towards the container */
	REASON_MAX,
};
_Static_assert(REASON_MAX <= OUTCALL_MAX_REASONS, "counters map too small");

/* An endpoint is a container-facing port with an identity. Every frame it
 * may send goes to gateway_mac, the bridge's own address. */
struct endpoint {
	__u32 identity;
	__u8 ip[4];
	__u8 gateway[4];
	__u8 mac[6];
	__u8 gateway_mac[6];
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
#define GRANT_F_PRIVATE 1 /* may open a restricted destination */

struct grant_value {
	__u64 expires_ns; /* CLOCK_BOOTTIME; 0 never expires */
	__u32 rule;       /* who opened it (0 = operator) */
	__u8 flags;       /* GRANT_F_* */
	__u8 pad[3];
};

/* A service on the gateway that every endpoint may reach. */
struct service_key {
	__u16 port; /* host byte order */
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

struct drop_event {
	__u64 time_ns;
	__u32 ifindex;
	__u32 identity;
	__u8 saddr[4];
	__u8 daddr[4];
	__u16 sport;
	__u16 dport;
	__u16 ethertype;
	__u8 proto;
	__u8 reason;
};

struct event_budget {
	__u64 window_start_ns;
	__u64 sent;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OUTCALL_MAX_ENDPOINTS);
	__type(key, __u32); /* ifindex of the port */
	__type(value, struct endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OUTCALL_MAX_GRANTS);
	__type(key, struct grant_key);
	__type(value, struct grant_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} grants SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct service_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OUTCALL_MAX_REASONS);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} drop_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_budget);
} event_budgets SEC(".maps");

/* Packet-layer rule tables. Each outer map holds one inner map per
 * generation slot; rule_active names the slot packets use. Userspace builds a
 * generation in the unused slot, each inner map created with exactly the size
 * it needs, and publishes it with one write to rule_active. The kernel
 * accepts an inner hash or LPM trie whose max_entries differs from the
 * template's (type, key and value size and flags must match), so the
 * templates are sized 1: the kernel keeps only their metadata. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, OUTCALL_RULE_SLOTS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);
		__uint(max_entries, 1);
		__type(key, struct rule_dst_key);
		__type(value, __u32); /* destination class, > 0 */
		__uint(map_flags, BPF_F_NO_PREALLOC);
	});
} rule_dsts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, OUTCALL_RULE_SLOTS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(max_entries, 1);
		__type(key, struct rule_key);
		__type(value, struct rule_verdict);
		__uint(map_flags, BPF_F_NO_PREALLOC);
	});
} rule_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, OUTCALL_RULE_SLOTS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(max_entries, 1);
		__type(key, __u32);   /* identity */
		__type(value, __u32); /* agent class, > 0 */
		__uint(map_flags, BPF_F_NO_PREALLOC);
	});
} rule_agents SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, OUTCALL_RULE_SLOTS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	/* A hash rather than a per-CPU array: the kernel takes
	 * BPF_F_INNER_MAP, which lets inner arrays differ in size, only for
	 * plain arrays, and a fixed-size per-CPU array would cost its full
	 * size times the CPU count per generation. Userspace inserts every
	 * rule index when it builds a generation, so the program only looks
	 * up and never allocates. */
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
		__uint(max_entries, 1);
		__type(key, __u32); /* rule index */
		__type(value, struct counter);
	});
} rule_hits SEC(".maps");

/* The active rule generation. Its low bit is the slot packets use; every
 * install counts it up by one, so flows remember which generation allowed
 * them in the same 32-bit word a packet reads once. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rule_active SEC(".maps");

/* Restricted destinations: the static ranges, the host's own addresses and
 * every Outcall subnet. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, OUTCALL_MAX_FENCES);
	__type(key, struct rule_dst_key);
	__type(value, struct fence);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fences SEC(".maps");

/* Flows the datapath allowed. An evicted flow is decided afresh at its next
 * packet, like a new one. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, OUTCALL_MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows SEC(".maps");

/* Never read by a program. Userspace rewrites its one entry to wait until
 * every program run that started before has finished: the kernel waits for
 * an RCU grace period on every update of a map of maps. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(max_entries, 1);
		__type(key, __u32);
		__type(value, __u32);
	});
} barrier SEC(".maps");

/* Referenced only so that BTF, and so bpf2go, knows these types. The rule
 * key and value types are otherwise reached only through the inner map
 * templates, two pointers deep, where clang emits mere forward declarations
 * that no loader can size. */
const struct drop_event *unused_drop_event __attribute__((unused));
const struct rule_dst_key *unused_rule_dst_key __attribute__((unused));
const struct rule_key *unused_rule_key __attribute__((unused));
const struct rule_verdict *unused_rule_verdict __attribute__((unused));
const enum reason *unused_reason __attribute__((unused));
const enum rule_action *unused_rule_action __attribute__((unused));
const enum fence_kind *unused_fence_kind __attribute__((unused));
const enum flow_owner *unused_flow_owner __attribute__((unused));
