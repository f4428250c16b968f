/* Self-fencing by time: a node stops serving before the ZooKeeper servers
 * could expire its session and let the controller hand its shards to
 * someone else. This only narrows the window in which a stale owner could
 * act; shard epochs in the store are the real guard.
 *
 * Two rules, either of which fences:
 *  - The lease. Each answer the servers give to a request sent at time t
 *    proves that the session was alive when the request left, so the
 *    servers cannot expire it before t + T (T: the negotiated session
 *    timeout). The node serves only before lease_until, the latest such
 *    t + 2T/3. Counting from the send time, not from the arrival of the
 *    answer, is what makes this survive a process that was stopped (or
 *    starved) for a while: an answer that waited in a socket buffer during
 *    the pause renews nothing useful. The owner sends heartbeats of its
 *    own while connected so that the lease keeps moving.
 *  - The disconnection: 2/3 of T after the client reported the connection
 *    lost (never later than the lease, kept for clarity).
 * An expired session is fenced whatever the lease says, until the owner
 * has rejoined (keel_selffence_rejoined). A node starts fenced: it serves
 * once connected, joined and holding a lease.
 *
 * Pure logic: time is an input (ms on one monotonic clock, the same for
 * send times and for now) and the owner arms a timer for
 * keel_selffence_deadline(). */
#ifndef KEEL_COORDINATOR_SELFFENCE_H
#define KEEL_COORDINATOR_SELFFENCE_H

#include <stdint.h>

typedef struct keel_selffence {
    uint32_t timeout_ms;      /* negotiated session timeout */
    int connected;
    int fenced;
    int expired;
    uint64_t disconnected_at; /* valid while !connected */
    uint64_t lease_until;     /* serving only strictly before; 0: none */
} keel_selffence;

void keel_selffence_init(keel_selffence *f, uint32_t timeout_ms);
/* Each returns 1 when `fenced` changed. */
int keel_selffence_connected(keel_selffence *f, uint64_t now,
                             uint32_t timeout_ms);
int keel_selffence_disconnected(keel_selffence *f, uint64_t now);
/* The session is gone: fenced, and its lease with it. */
int keel_selffence_expired(keel_selffence *f);
/* The new session is joined: behave as freshly connected. */
int keel_selffence_rejoined(keel_selffence *f, uint64_t now,
                            uint32_t timeout_ms);
/* The servers answered a request of the current session that was sent at
 * sent_at: the lease reaches at least sent_at + 2T/3. */
int keel_selffence_renewed(keel_selffence *f, uint64_t sent_at,
                           uint64_t now);
int keel_selffence_tick(keel_selffence *f, uint64_t now);
/* When tick() must next run, or 0 if no timer is needed (fenced: only
 * events lift a fence). */
uint64_t keel_selffence_deadline(const keel_selffence *f);

/* The one comparison made before every batch of work: whether the lease
 * has lapsed at `now` (then tick() fences). */
static inline int keel_selffence_lapsed(const keel_selffence *f,
                                        uint64_t now)
{
    return now >= f->lease_until;
}

#endif
