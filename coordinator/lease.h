/* The node's lease on its ZooKeeper session: the heartbeats that renew it,
 * feeding the self-fencing rules of selffence.h. The agent (cluster.c)
 * reports session events and time; the lease sends a heartbeat whenever
 * one is due and the client is connected. Calls made by the agent return
 * 1 when the node's fenced state flipped; an answer to a heartbeat, which
 * comes on its own, is reported through the `answered` callback.
 *
 * One heartbeat is in flight at a time. Its answer is matched to it by
 * order alone: the client answers every request of a session exactly once
 * and in order (zk.h), a request in flight when the connection drops is
 * answered (with a connection loss) before anything sent later, and a
 * session that ends takes its unanswered requests with it
 * (keel_lease_expired() forgets the one in flight). So a new heartbeat is
 * never sent before the previous one's answer, and an answer always
 * belongs to the request sent at `sent`. */
#ifndef KEEL_COORDINATOR_LEASE_H
#define KEEL_COORDINATOR_LEASE_H

#include <stdint.h>

#include "coordinator/selffence.h"
#include "coordinator/zk.h"

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
    int busy;       /* a heartbeat is in flight, sent at `sent` */
    uint64_t sent;
    uint64_t next;  /* when the next heartbeat is due; 0: at once */
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
/* The session is gone: fenced until rejoined; the heartbeat in flight will
 * never be answered. */
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

/* How often heartbeats leave (ms) for a session timeout. */
uint64_t keel_lease_interval(uint32_t timeout_ms);

#endif
