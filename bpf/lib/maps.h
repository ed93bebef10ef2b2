// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The maps of Outcall's TC programs. Every map is pinned by name under the
 * daemon's pin directory and carries BTF, so `bpftool map dump pinned
 * /sys/fs/bpf/outcall/<map>` prints named fields. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OUTCALL_MAX_ENDPOINTS);
	__type(key, __u32); /* ifindex of the port */
	__type(value, struct endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoints SEC(".maps");

/* Every port of an Outcall bridge the daemon took over, by ifindex: its
 * network, for the ports that have no entry in endpoints. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OUTCALL_MAX_ENDPOINTS);
	__type(key, __u32); /* ifindex of the port */
	__type(value, struct port_network);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} port_networks SEC(".maps");

/* The addresses of every registered endpoint (whether its port is there or
 * not), to the identity holding them: a port without identity sending from
 * one of them is dropped, so the gateway services, which know senders by
 * address, never take it for the endpoint. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OUTCALL_MAX_ENDPOINTS);
	__type(key, struct endpoint_ip);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoint_ips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OUTCALL_MAX_ENDPOINTS);
	__type(key, struct endpoint_mac);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} endpoint_macs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OUTCALL_MAX_GRANTS);
	__type(key, struct grant_key);
	__type(value, struct grant_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} grants SEC(".maps");

/* Prefix grants: looked up after the exact grants miss, the same three
 * ways (port, any port of the protocol, any protocol). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, OUTCALL_MAX_GRANT_PREFIXES);
	__type(key, struct grant_prefix_key);
	__type(value, struct grant_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} grant_prefixes SEC(".maps");

/* Gateway services, each open on one gateway address (struct service_key).
 * The daemon writes the whole set at startup, so a pinned map of an older
 * layout is replaced rather than reused (datapath.replaceStaleMaps). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OUTCALL_MAX_SERVICES);
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
const enum dns_port *unused_dns_port __attribute__((unused));
const enum grant_flag *unused_grant_flag __attribute__((unused));
const enum grant_prefix_bits *unused_grant_prefix_bits __attribute__((unused));
