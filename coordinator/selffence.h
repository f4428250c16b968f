/* Self-fencing by time: a node that has been cut off from ZooKeeper for
 * 2/3 of its session timeout stops serving, because by then the servers
 * may be about to expire its session and let the controller hand its
 * shards to someone else. This only narrows the window in which a stale
 * owner could act; shard epochs in the store are the real guard.
 *
 * Pure logic: time is an input (ms on any monotonic clock) and the owner
 * arms a timer for keel_selffence_deadline(). A node starts fenced and is
 * unfenced by its first connection; an expired session stays fenced until
 * the owner has rejoined (keel_selffence_rejoined). */
#ifndef KEEL_COORDINATOR_SELFFENCE_H
#define KEEL_COORDINATOR_SELFFENCE_H

#include <stdint.h>

typedef struct keel_selffence {
    uint32_t timeout_ms;      /* negotiated session timeout */
    int connected;
    int fenced;
    int expired;
    uint64_t disconnected_at; /* valid while !connected && !fenced */
} keel_selffence;

void keel_selffence_init(keel_selffence *f, uint32_t timeout_ms);
/* Each returns 1 when `fenced` changed. */
int keel_selffence_connected(keel_selffence *f, uint64_t now,
                             uint32_t timeout_ms);
int keel_selffence_disconnected(keel_selffence *f, uint64_t now);
int keel_selffence_expired(keel_selffence *f);
/* The new session is joined: behave as freshly connected. */
int keel_selffence_rejoined(keel_selffence *f, uint64_t now,
                            uint32_t timeout_ms);
int keel_selffence_tick(keel_selffence *f, uint64_t now);
/* When tick() must next run, or 0 if no timer is needed. */
uint64_t keel_selffence_deadline(const keel_selffence *f);

#endif
