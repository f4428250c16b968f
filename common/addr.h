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

#endif
