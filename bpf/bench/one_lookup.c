// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The floor of the datapath's cost: a TCX program that does nothing but one
 * hash lookup by ingress ifindex and pass. Benchmarks measure Outcall's
 * program beside it; it is never attached anywhere. */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} ports SEC(".maps");

SEC("tcx/ingress")
int one_lookup(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ingress_ifindex;
	__u64 *v = bpf_map_lookup_elem(&ports, &ifindex);

	return v ? TC_ACT_OK : TC_ACT_SHOT;
}
