/* HOST:PORT, the one form of a node's address: what --listen and
 * --advertise take and what a member publishes for its peers to connect
 * to. Checked where an address enters, so that a bad one is refused once,
 * clearly, instead of failing every connection attempt later. */
#ifndef KEEL_COMMON_ADDR_H
#define KEEL_COMMON_ADDR_H

#include <stddef.h>

/* Whether the len bytes at addr are HOST:PORT: HOST a host name or an IPv4
 * address (1 to 253 bytes of letters, digits, '.', '-' and '_'), PORT a
 * decimal number from 1 to 65535, or 0 too when port0_ok (a listen
 * address whose port the kernel picks). Nothing else: no blanks, no NUL,
 * no service names, no brackets. */
int keel_addr_valid(const char *addr, size_t len, int port0_ok);

/* Whether addr (NUL-terminated) is an HTTP listen address: what
 * keel_addr_valid takes with a port from 0 to 65535, or [V6]:PORT, V6 an
 * IPv6 address in text form (hex digits, ':' and '.', an optional
 * %zone of letters and digits) of 2 to 45 characters. Name resolution is
 * left to the listener; this only refuses what can never be right, such
 * as a port past 65535 that getaddrinfo would wrap. */
int keel_http_addr_valid(const char *addr);

#endif
