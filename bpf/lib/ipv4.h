// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* IPv4: address comparison, fragment bits and the TCP flag the program
 * reads. */
#pragma once

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

/* iphdr.frag_off, in host byte order. */
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* Byte 13 of the TCP header. */
#define TCP_FLAG_SYN 0x02

/* addr_eq compares two IPv4 addresses as one 32-bit word. */
static __always_inline int addr_eq(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b;
}
