/* Introspection of placement (docs/cluster.md, "Introspection"): who the
 * members are, who owns which unit, where an actor lives, which node has
 * which capability. One answer for the wire (INFO frames, `keel nodes`,
 * `keel shards`, `keel where`, `keel capabilities`), the C API
 * (keel_node_info) and, as JSON, the HTTP face's /v1/cluster. In
 * standalone mode the answers are the standalone facts: one member that
 * owns every unit at shard_epoch 1. Loop thread only. */
#ifndef KEEL_RUNTIME_INFO_H
#define KEEL_RUNTIME_INFO_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/node.h"

/* Answers the query in body: words separated by NUL bytes, the first
 * naming the query ("nodes", "shards" [NODE], "where" TYPE ID,
 * "capabilities"); the ID of "where" extends to the end of the body. On
 * success *text is a malloc'd block of '\n'-terminated lines (*len bytes,
 * NUL-terminated as well). Otherwise returns KEEL_EINVAL (unknown query,
 * wrong arguments), KEEL_ENOTYPE (where: type not registered here),
 * KEEL_ELIMIT or KEEL_ENOMEM, with a message in errbuf. */
int keel__info(keel_node *n, const uint8_t *body, size_t blen, char **text,
               size_t *len, char *errbuf, size_t errlen);

/* The body of /v1/cluster: a JSON object, malloc'd, NUL-terminated.
 * 0 or KEEL_ENOMEM. */
int keel__info_json(keel_node *n, const char *http_addr, char **json,
                    size_t *len);

/* What an operator alerts on, from this node's view of a cluster: live
 * members, units with no owner or an owner that is not a live member
 * (they answer nothing until a failover or its return), replicas listed
 * but out of sync, and units moving (a target). Standalone: one member,
 * the rest 0. */
struct keel_info_health {
    uint64_t members, units_unavailable, replicas_out_of_sync, units_moving;
};
void keel__info_health(keel_node *n, struct keel_info_health *h);

#endif
