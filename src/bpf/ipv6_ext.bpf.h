/* IPv6 extension headers the UDP parsers step over to reach the UDP header:
 * Hop-by-Hop, Routing, Destination Options and a first Fragment header. AH
 * and ESP are IPsec: such a datagram is reported from elsewhere (the socket,
 * or the sendmsg hook). */
#ifndef SOCKSCOPE_IPV6_EXT_H
#define SOCKSCOPE_IPV6_EXT_H

/* Extension headers followed at most (a bound the verifier can see). */
#define IPV6_EXT_MAX 4

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60

static __always_inline int ipv6_ext_followed(__u8 next)
{
	return next == NEXTHDR_HOP || next == NEXTHDR_ROUTING || next == NEXTHDR_FRAGMENT || next == NEXTHDR_DEST;
}

/* The length of extension header `kind` from its first four bytes (next
 * header, length, and a fragment's offset); 0 for a fragment other than the
 * first, which carries no UDP header. */
static __always_inline __u32 ipv6_ext_len(__u8 kind, const __u8 h[4])
{
	if (kind != NEXTHDR_FRAGMENT)
		return ((__u32)h[1] + 1) * 8;
	return ((h[2] << 8 | h[3]) & 0xfff8) ? 0 : 8;
}

#endif
