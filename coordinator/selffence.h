/* Self-fencing by time: a node stops serving before the ZooKeeper servers
 * could expire its session and let the controller hand its shards to
 * someone else. Shard epochs in the stores are the other guard; with one
 * copy of a unit, the old owner's own store never sees the new epoch, so
 * for it this rule is what keeps two nodes from serving one unit.
 *
 * Two rules, either of which fences:
 *  - The lease. The node serves only before lease_until: the latest
 *    t + T/2 over the heartbeats (syncs, lease.h) sent at t that the
 *    servers answered, T being the negotiated session timeout.
 *    An answered sync proves that the ZooKeeper leader held the session
 *    alive after t. The leader expires a session T after the last touch
 *    it heard of; touches made at a follower reach it only in the
 *    follower's answers to its pings, sent every tickTime/2, and those
 *    answers travel on the link the sync took, before it, so the leader
 *    had heard of every touch the follower took up to tickTime/2 before
 *    it received the sync. The node sends a heartbeat every T/8 whether
 *    or not the last one was answered, so such a touch is at most T/8
 *    older than that: the leader cannot expire the session before
 *    t + T - tickTime/2 - T/8. ZooKeeper grants no timeout below 2 ticks
 *    (tickTime <= T/2), so that is at least t + 5T/8, T/8 past the lease
 *    (T/4 past it when T is 4 ticks or more; expiry checks on tick
 *    boundaries only delay an expiry). Counting from the send time, not
 *    from the arrival of the answer, is what makes this survive a process
 *    that was stopped (or starved) for a while: an answer that waited in
 *    a socket buffer during the pause renews nothing useful.
 *  - The disconnection: T/2 after the client reported the connection lost
 *    (never later than the lease, which began before; kept so that a
 *    disconnection alone is enough).
 * An expired session is fenced whatever the lease says, until the owner
 * has rejoined (keel_selffence_rejoined). A node starts fenced: it serves
 * once connected, joined and holding a lease.
 *
 * Pure logic: time is an input (ms on one clock that keeps counting while
 * the machine is suspended, the same for send times and for now) and the
 * owner arms a timer for keel_selffence_deadline(). */
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
    /* While fenced: since when, the earliest moment a rule that fences
     * held (the lease's end, T/2 after the disconnection), which may lie
     * well before the moment the node noticed (a node resumed after a
     * pause); the time of the flip when no rule says earlier (an expiry
     * learned of, no lease yet). 0 before the first flip. */
    uint64_t fenced_at;
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
/* The leader answered a heartbeat of the current session that was sent at
 * sent_at: the lease reaches at least sent_at + T/2. */
int keel_selffence_renewed(keel_selffence *f, uint64_t sent_at,
                           uint64_t now);
int keel_selffence_tick(keel_selffence *f, uint64_t now);
/* When tick() must next run, or 0 if no timer is needed (fenced: only
 * events lift a fence). */
uint64_t keel_selffence_deadline(const keel_selffence *f);

/* How long a lease lasts from the send time of the heartbeat that renewed
 * it, for the negotiated timeout T: T/2 (see above). */
static inline uint64_t keel_selffence_lease_ms(uint32_t timeout_ms)
{
    return timeout_ms / 2;
}

/* The one comparison made before every batch of work: whether the lease
 * has lapsed at `now` (then tick() fences). */
static inline int keel_selffence_lapsed(const keel_selffence *f,
                                        uint64_t now)
{
    return now >= f->lease_until;
}

#endif
