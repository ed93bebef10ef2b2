// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Verdicts: per-reason and per-rule counters, drop events sampled under a
 * per-CPU rate limit, and the mark that lets an allowed packet through the
 * nftables floor. */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "maps.h"

/* Set by the loader. */
volatile const __u32 allow_mark = 0;
volatile const __u32 allow_mark_mask = 0;
volatile const __u32 events_per_second = 100;

static __always_inline void count_hit(struct __sk_buff *skb, struct counter *c)
{
	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
}

static __always_inline void count(struct __sk_buff *skb, __u32 reason)
{
	struct counter *c = bpf_map_lookup_elem(&counters, &reason);

	count_hit(skb, c);
}

/* Emits at most events_per_second drop events per CPU, so a flood cannot
 * turn the ring buffer into a denial of service on the daemon. */
static __always_inline void report_drop(struct __sk_buff *skb, struct flow *f, __u32 reason)
{
	__u32 zero = 0;
	struct event_budget *b = bpf_map_lookup_elem(&event_budgets, &zero);
	struct drop_event *e;
	__u64 now = bpf_ktime_get_boot_ns();

	if (!b)
		return;
	if (now - b->window_start_ns > 1000000000ULL) {
		b->window_start_ns = now;
		b->sent = 0;
	}
	if (b->sent >= events_per_second)
		return;
	e = bpf_ringbuf_reserve(&drop_events, sizeof(*e), 0);
	if (!e)
		return;
	b->sent++;
	e->time_ns = now;
	e->flow = *f;
	e->reason = reason;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int drop(struct __sk_buff *skb, struct flow *f, __u32 reason)
{
	count(skb, reason);
	report_drop(skb, f, reason);
	return TC_ACT_SHOT;
}

static __always_inline int allow(struct __sk_buff *skb, __u32 reason)
{
	count(skb, reason);
	skb->mark = (skb->mark & ~allow_mark_mask) | allow_mark;
	return TC_ACT_OK;
}
