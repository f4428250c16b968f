/* Membership: this node's ephemeral znode members/<node> (address and
 * capabilities; its czxid is the node's incarnation), and a watched view
 * of every member.
 *
 * Joining when members/<node> already exists: if the node belongs to our
 * own session (a create whose answer was lost with the connection), it is
 * adopted; otherwise it is a previous incarnation whose session has not
 * expired yet, and the join waits (watching it) until it is gone, so that
 * two incarnations never hold the name at once.
 *
 * Two independent request streams (join, view), at most one request in
 * flight each. Connection losses stall a stream until resume(); a lost
 * session needs reset() and a new start. */
#ifndef KEEL_COORDINATOR_MEMBERSHIP_H
#define KEEL_COORDINATOR_MEMBERSHIP_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/layout.h"
#include "coordinator/zk.h"

typedef struct keel_membership keel_membership;

enum keel_membership_event {
    KEEL_MEMBERSHIP_JOINED = 1,  /* our member znode exists: incarnation set */
    KEEL_MEMBERSHIP_CHANGED = 2, /* the view changed, or a listing asked
                                  * for by keel_membership_refresh ended */
    KEEL_MEMBERSHIP_FAILED = 3   /* a request failed for good: m->error */
};

typedef void (*keel_membership_cb)(keel_membership *m, int event, void *arg);

struct keel_membership {
    keel_zk *zk;
    const keel_layout *layout;
    char node[KEEL_NAME_MAX + 1];
    keel_membership_cb cb;
    void *arg;
    int error;

    /* join */
    char *data; /* our member znode's content */
    char store[33]; /* published in it when not empty */
    int insecure;   /* publish "insecure 1" */
    size_t len;
    int join_state;
    int join_busy, join_stalled;
    int64_t incarnation; /* 0 until joined */

    /* view: sorted by name */
    keel_member *view;
    size_t nview;
    uint64_t view_version; /* bumps with every change */
    uint64_t listings;     /* listings completed: the view is one of them */
    /* Listings started (each gets the next number), the number of the
     * one under way or last started, and of the last completed: a view
     * with list_done > N comes from a listing begun after listing N.
     * notify_at: report the listing of that number (or a later one) even
     * if the view did not change; 0: none asked. */
    uint64_t list_seq, list_cur, list_done, notify_at;
    int view_started;
    int list_state;
    int list_busy, list_stalled, list_dirty;
    /* Reconnections so far, and the count when the listing's request in
     * flight was sent: an answer lost with an older connection. */
    uint64_t resume_gen, list_gen;
    char **names; /* children being read */
    size_t nnames, next;
    keel_member *building;
    size_t nbuilding;
    /* Watches this session has armed, so that a listing leaves a watch
     * only where none is armed: the client keeps one registry entry per
     * watch left, and every listing would otherwise add one per member. */
    int child_watched, child_arming, data_arming;
    char (*dwatched)[KEEL_NAME_MAX + 1]; /* members with a data watch */
    size_t ndwatched, dwatched_cap;
};

void keel_membership_init(keel_membership *m, keel_zk *zk,
                          const keel_layout *layout, const char *node,
                          keel_membership_cb cb, void *arg);
void keel_membership_free(keel_membership *m);

/* Creates members/<node>. Returns 0, KEEL_EINVAL, KEEL_ENOMEM or a submit
 * error. */
int keel_membership_join(keel_membership *m, const char *addr,
                         const char *const *caps, size_t ncaps);
/* The store identity the member znode publishes (32 hex digits; NULL or
 * "": none). Before keel_membership_join. */
void keel_membership_set_store(keel_membership *m, const char *store);
/* Whether the member znode says the node runs without credentials
 * ("insecure 1"). Before keel_membership_join. */
void keel_membership_set_insecure(keel_membership *m, int insecure);
/* Starts maintaining the view (children watch on members/). */
int keel_membership_watch(keel_membership *m);
/* Redoes stalled requests after a reconnection, and lists members/
 * again with fresh watches (keel_membership_refresh). */
void keel_membership_resume(keel_membership *m);
/* Lists members/ again once the listing under way (if any) is done, and
 * leaves every watch again: for when the view is known to be behind
 * ZooKeeper (a member znode the view lacks exists). */
void keel_membership_refresh(keel_membership *m);
/* Forgets the session: not joined, view kept until the next listing. */
void keel_membership_reset(keel_membership *m);

const keel_member *keel_membership_find(const keel_membership *m,
                                        const char *name);

#endif
