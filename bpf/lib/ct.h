// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Conntrack: the kernel's kfuncs for looking up a tuple, and the one
 * question the program asks of them. */
#pragma once

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "types.h"

/* conntrack kfuncs (net/netfilter/nf_conntrack_bpf.c). The 12-byte options
 * layout is the one every kernel since 6.0 accepts. */
struct bpf_ct_opts {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};
/* Opaque here; a body is needed only so the loader matches it with the
 * kernel's struct of the same name. */
struct nf_conn {
	int unused;
};
extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
					 __u32 tuple__sz, struct bpf_ct_opts *opts,
					 __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;

#define CT_CURRENT_NETNS (-1)
#define IP_CT_DIR_REPLY 1

/* reply_of_inbound reports whether conntrack knows this TCP or UDP packet as
 * the reply direction of a connection opened towards the container. A flow
 * the container opened is never judged by conntrack: conntrack remembers
 * tuples in every state, which would let a revoked tuple live on. */
static __always_inline int reply_of_inbound(struct __sk_buff *skb, struct flow *f)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_ct_opts opts = { .netns_id = CT_CURRENT_NETNS, .l4proto = f->proto };
	struct nf_conn *ct;

	if (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP)
		return 0;
	__builtin_memcpy(&tuple.ipv4.saddr, f->saddr, 4);
	__builtin_memcpy(&tuple.ipv4.daddr, f->daddr, 4);
	tuple.ipv4.sport = bpf_htons(f->sport);
	tuple.ipv4.dport = bpf_htons(f->dport);
	ct = bpf_skb_ct_lookup(skb, &tuple, sizeof(tuple.ipv4), &opts, sizeof(opts));
	if (!ct)
		return 0;
	bpf_ct_release(ct);
	return opts.dir == IP_CT_DIR_REPLY;
}
