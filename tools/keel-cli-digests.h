/* keel shards --digest: every unit's content digest on each of its
 * replicas, and whether the replicas in sync agree (keel-cli-digests.c). */
#ifndef KEEL_CLI_DIGESTS_H
#define KEEL_CLI_DIGESTS_H

#include <stdio.h>

#include "runtime/client.h"

/* Opens a connection to another node of the cluster the way the command
 * line says (TLS, token). 0 and *out, or an error code with why filled
 * (the error already printed when the node refused). */
typedef int (*cli_connect_fn)(const char *addr, keel_client **out,
                              char *why, size_t whylen);

/* What the sweep found. A unit "agrees" when every replica in sync
 * answered the same digest and record count, "differs" when two of them
 * answered differently (after a few looks, so that a write between the
 * replicas' answers does not count), and is "incomplete" when an in-sync
 * replica could not be asked (a dead owner, an unreachable node). */
struct cli_digest_counts {
    unsigned units, agree, differ, incomplete;
};

/* Asks contact for the members and the map (only the units NODE leads
 * with only non-NULL), then every replica of every unit for its digest.
 * Prints each unit line with its digests and verdict to out, then a
 * summary line; problems reaching a node go to stderr once per node.
 * Returns 0 with *counts filled, the error of a request to contact (its
 * text printed), or KEEL_EDENIED / KEEL_EUNAUTH when a node refused the
 * credentials (where tokens are required, a digest takes an
 * administrator's): printed once, and the sweep stops there. */
int cli_shards_digest(keel_client *contact, const char *only,
                      cli_connect_fn connect, FILE *out,
                      struct cli_digest_counts *counts);

#endif
