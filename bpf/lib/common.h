/* Types and maps shared by Outcall's TC programs. Every map is pinned by name
 * under the daemon's pin directory and carries BTF, so `bpftool map dump
 * pinned /sys/fs/bpf/outcall/<map>` prints named fields. */
#pragma once

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define OUTCALL_MAX_ENDPOINTS 65536
#define OUTCALL_MAX_GRANTS (1 << 20)

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
	REASON_MAX,
};

/* An endpoint is a container-facing port with an identity. */
struct endpoint {
	__u32 identity;
	__u8 ip[4];
	__u8 gateway[4];
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

struct grant_value {
	__u64 expires_ns; /* CLOCK_BOOTTIME; 0 never expires */
	__u32 rule;       /* who opened it (0 = operator) */
	__u32 pad;
};

/* A service on the gateway that every endpoint may reach. */
struct service_key {
	__u16 port; /* host byte order */
	__u8 proto;
	__u8 pad;
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
	__uint(max_entries, REASON_MAX);
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

/* Referenced only so that BTF, and so bpf2go, knows these types. */
const struct drop_event *unused_drop_event __attribute__((unused));
const enum reason *unused_reason __attribute__((unused));
