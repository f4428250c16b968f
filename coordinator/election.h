/* Controller election, the ZooKeeper recipe: each candidate creates
 * election/n_<session>_<seq> (ephemeral, sequential); the lowest sequence
 * number leads; every other candidate watches only its predecessor, so a
 * departure wakes one candidate, not all of them.
 *
 * The session id in the name lets a candidate whose create lost its
 * connection find the node it may have made, instead of making a second
 * one that would outlive its own purpose.
 *
 * Winning is reported once per candidacy. Losing leadership is never
 * reported here: it only happens with the session, which the owner learns
 * from the session events. One request in flight. */
#ifndef KEEL_COORDINATOR_ELECTION_H
#define KEEL_COORDINATOR_ELECTION_H

#include <stdint.h>

#include "coordinator/layout.h"
#include "coordinator/zk.h"

typedef struct keel_election keel_election;

/* rc 0: elected (e->path is ours, e->seq its number); otherwise a request
 * failed for good (not connection loss, which stalls until resume()). */
typedef void (*keel_election_cb)(keel_election *e, int rc, void *arg);

struct keel_election {
    keel_zk *zk;
    const keel_layout *layout;
    char node[KEEL_NAME_MAX + 1];
    keel_election_cb cb;
    void *arg;
    int state;
    int busy, stalled;
    char prefix[48];             /* "n_<session hex>_" */
    char path[KEEL_ZK_PATH_MAX]; /* our candidate, once known */
    int64_t seq;
    char watching[KEEL_ZK_PATH_MAX]; /* predecessor */
};

void keel_election_init(keel_election *e, keel_zk *zk,
                        const keel_layout *layout, const char *node,
                        keel_election_cb cb, void *arg);
/* Becomes a candidate in the current session. */
int keel_election_start(keel_election *e);
void keel_election_resume(keel_election *e);
void keel_election_reset(keel_election *e);
int keel_election_is_leader(const keel_election *e);

/* The sequence number of an election node name, or -1 if the name is not
 * one ("n_<16 hex>_<10 digits>"). */
int64_t keel_election_seq(const char *name);

#endif
