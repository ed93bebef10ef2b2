// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Ethernet: MAC address comparison and the ARP header for IPv4. */
#pragma once

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

/* ARP for IPv4 over Ethernet (RFC 826), the only kind a container sends. */
struct arp_eth_ipv4 {
	__be16 hrd;
	__be16 pro;
	__u8 hln;
	__u8 pln;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

#define ARP_HRD_ETHER 1
#define ARP_OP_REQUEST 1
#define ARP_OP_REPLY 2

/* mac_eq compares two 6-byte MAC addresses as one 32-bit and one 16-bit
 * word. */
static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b &&
	       *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

static __always_inline int broadcast_mac(const __u8 *m)
{
	return (m[0] & m[1] & m[2] & m[3] & m[4] & m[5]) == 0xff;
}
