/* The node's lease on its ZooKeeper session: the heartbeats that renew it,
 * feeding the self-fencing rules of selffence.h. The agent (cluster.c)
 * reports session events and time; the lease sends a heartbeat whenever
 * one is due and the client is connected. Calls made by the agent return
 * 1 when the node's fenced state flipped; an answer to a heartbeat, which
 * comes on its own, is reported through the `answered` callback.
 *
 * A heartbeat is a sync (zk.h), not a read: a follower answers reads from
 * its own copy even when it is cut off from the ZooKeeper leader, which
 * meanwhile expires the session, while a sync is answered only through
 * the leader. Heartbeats leave every T/8 whether or not the previous ones
 * were answered (up to KEEL_LEASE_INFLIGHT at once): the lease's bound
 * (selffence.h) relies on the session being touched that often.
 *
 * Answers are matched to heartbeats by order alone: the client answers
 * every request of a session exactly once and in order (zk.h), requests in
 * flight when the connection drops are answered (with a connection loss)
 * before anything sent later, and a session that ends takes its
 * unanswered requests with it (keel_lease_expired() forgets them). */
#ifndef KEEL_COORDINATOR_LEASE_H
#define KEEL_COORDINATOR_LEASE_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/selffence.h"
#include "coordinator/zk.h"

/* Heartbeats in flight at most: T/8 apart, eight cover T, by which time
 * a node whose heartbeats go unanswered has fenced itself long ago. */
#define KEEL_LEASE_INFLIGHT 8

/* A heartbeat unanswered for timeout / KEEL_LEASE_STALL has the client
 * give its server up for the next one of the connect string, once per
 * connection (keel_zk_drop_server). The library would do so only after
 * 2/3 of the timeout, and the lease lapses at 1/2: a server that hangs
 * (a long pause, a stalled disk) while the rest of the ensemble serves
 * would otherwise fence every node connected to it. A server cut off
 * from the leader answers nothing either; the next one may. */
#define KEEL_LEASE_STALL 4

/* The shortest negotiated session timeout a node accepts (ms). The lease
 * keeps at least T/8 between its end and the earliest expiry of the
 * session (selffence.h); below 1 s that is less than a busy machine may
 * take to notice the end of the lease. */
#define KEEL_LEASE_MIN_TIMEOUT_MS 1000

typedef struct keel_lease keel_lease;

/* A heartbeat was answered (the lease and deadline may have moved);
 * flipped: the fenced state changed. */
typedef void (*keel_lease_answered_cb)(keel_lease *l, int flipped,
                                       void *arg);
/* The owner's clock (ms), read when an answer arrives. */
typedef uint64_t (*keel_lease_clock_fn)(void *arg);

struct keel_lease {
    keel_selffence fence;
    keel_zk *zk;
    char path[KEEL_ZK_PATH_MAX]; /* the znode heartbeats name */
    keel_lease_answered_cb answered;
    keel_lease_clock_fn clock;
    void *arg;
    /* Send times of the heartbeats in flight, oldest first (a ring). */
    uint64_t sent[KEEL_LEASE_INFLIGHT];
    unsigned head, inflight;
    uint64_t next; /* when the next heartbeat is due; 0: at once */
    /* The server of this connection was given up for another (a
     * heartbeat unanswered for KEEL_LEASE_STALL of the timeout). */
    int dropped;
};

/* Starts fenced, with no session (as keel_lease_expired() leaves it).
 * path is copied. */
void keel_lease_init(keel_lease *l, keel_zk *zk, const char *path,
                     uint32_t timeout_ms, keel_lease_clock_fn clock,
                     keel_lease_answered_cb answered, void *arg);

/* Session events, at time now; each returns 1 when the fenced state
 * flipped. connected() and rejoined() read the negotiated timeout from the
 * client. */
int keel_lease_connected(keel_lease *l, uint64_t now);
int keel_lease_disconnected(keel_lease *l, uint64_t now);
/* The session is gone: fenced until rejoined; the heartbeats in flight
 * will never be answered. */
int keel_lease_expired(keel_lease *l);
/* The node joined in its new session. */
int keel_lease_rejoined(keel_lease *l, uint64_t now);

/* Time passed: fences if the lease lapsed, sends a heartbeat if one is
 * due. Returns 1 when the fenced state flipped. */
int keel_lease_tick(keel_lease *l, uint64_t now);
/* The cheap check before work: one comparison while the lease holds.
 * Fences the node at once if the lease lapsed (*flipped = 1). Returns 1
 * when the node is fenced at now. */
int keel_lease_check(keel_lease *l, uint64_t now, int *flipped);
/* When keel_lease_tick() must next run, or 0. */
uint64_t keel_lease_deadline(const keel_lease *l);

/* How often heartbeats leave (ms) for a session timeout: T/8. */
uint64_t keel_lease_interval(uint32_t timeout_ms);
/* How long the owner's loop may be held (no heartbeat sent, no answer
 * read) before its lease can lapse: the lease ends T/2 after the last
 * heartbeat answered, which left up to an interval before (0 for a T too
 * short for that). */
uint64_t keel_lease_hold_max(uint32_t timeout_ms);

/* Whether a node can hold a lease on a session whose negotiated timeout
 * is `negotiated` ms (it asked for `requested`): 0, or KEEL_ECONFIG with
 * the reason in why. *warn is set (with the reason in why) when it can,
 * but with the least margin the lease ever has (the servers raised the
 * timeout to their minimum, 2 ticks). */
int keel_lease_timeout_ok(uint32_t negotiated, uint32_t requested,
                          int *warn, char *why, size_t why_cap);

#endif
