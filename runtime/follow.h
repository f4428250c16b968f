/* Following an actor (docs/protocol.md, "Following an actor"): clients
 * subscribe to an actor's committed state changes on the node that owns
 * it, and get the new version and state after every turn that changed
 * it, once that turn's reply could be released (durable, and with
 * replicas acknowledged): never a change a failover could undo.
 *
 * A subscriber is a sink: the wire connection (net.c) or an HTTP
 * event stream (http.c) embeds a keel_follow_sink and gives the ops
 * that write to it. Subscriptions keep no actor active and hold nothing
 * of the actor's but the version last sent; there is no history: a
 * subscriber that falls behind, reconnects or resubscribes gets the
 * current state, not the versions in between.
 *
 * A handler may also choose an event payload for its turn
 * (keel_turn_event). Subscribers that said they take payloads
 * (KEEL_FOLLOW_PAYLOADS) get it instead of the state, for that version;
 * the others get the state as before, and nothing for a turn that only
 * emitted. Payloads are never stored: like the versions in between, a
 * subscriber that was away does not get the ones it missed.
 *
 * Loop thread only. */
#ifndef KEEL_RUNTIME_FOLLOW_H
#define KEEL_RUNTIME_FOLLOW_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/node.h"
#include "runtime/proto.h"

typedef struct keel_sub keel_sub;
typedef struct keel_follow_sink keel_follow_sink;

/* A sink whose unsent output grows past this is too slow: its
 * subscriptions end (KEEL_EOVERLOAD) rather than let it hold the node's
 * memory. */
#define KEEL_FOLLOW_BACKLOG_MAX (4u << 20)
/* Subscriptions one sink (connection) may hold open. */
#define KEEL_FOLLOW_PER_SINK_MAX 1024

struct keel_follow_ops {
    /* The subscription's first answer. rc 0: st is the actor's current
     * state (version 0, no blob: never written), or NULL when it has not
     * changed since the version the subscriber gave. Otherwise the
     * KEEL_E* code and msg (msglen bytes): the subscription is gone.
     * Returns KEEL_ETOOBIG, having sent nothing, when the state does not
     * fit the sink's frames (then it is asked again with that error). */
    int (*answer)(keel_follow_sink *k, uint64_t tag, int rc,
                   const keel_state_read *st, const char *msg,
                   size_t msglen);
    /* A committed change: the actor's state is now data (len bytes) at
     * version; or, with payload, a committed turn left the actor at
     * version and chose data as its event payload (only to subscriptions
     * made with KEEL_FOLLOW_PAYLOADS). KEEL_ETOOBIG, having sent
     * nothing, when it does not fit the sink's frames: the subscription
     * is then ended with it. */
    int (*change)(keel_follow_sink *k, uint64_t tag, uint64_t version,
                   int payload, const uint8_t *data, size_t len);
    /* The subscription ended (code, reason); version is the last one
     * sent on it (0: none). No more calls for tag follow. */
    void (*end)(keel_follow_sink *k, uint64_t tag, uint64_t version,
                int code, const char *reason);
    /* Bytes the sink has buffered and not yet written. */
    size_t (*backlog)(keel_follow_sink *k);
};

struct keel_follow_sink {
    const struct keel_follow_ops *ops;
    void *data;     /* the sink's own: its connection */
    keel_sub *subs; /* its subscriptions (follow.c's) */
};

/* What a turn chose for its followers (keel_turn_event), kept in
 * keel_turn. The payload's bytes are in the registry, which holds those
 * of the turn running now; they are copied only when someone follows the
 * actor. */
struct keel_fl_turn {
    int set;     /* keel_turn_event was called */
    int kept;    /* its bytes were kept: the actor is followed */
    size_t len;
};

/* keel__follow_subscribe's flags: the subscriber takes event payloads
 * (the wire's KEEL_FLAG_PAYLOAD on SUBSCRIBE). */
#define KEEL_FOLLOW_PAYLOADS 0x01u

/* Creates and frees the node's registry (n->follow; keel_node_create /
 * keel_node_destroy). */
int keel__follow_create(keel_node *n);
void keel__follow_destroy(keel_node *n);

/* Subscribes sink k, under tag (its request id), to actor te/id, the
 * subscriber having seen version since (0: none), with flags
 * (KEEL_FOLLOW_PAYLOADS or 0). The first answer comes through
 * k->ops->answer, later changes through change. In cluster mode
 * the node must own the actor's unit: otherwise KEEL_EUNAVAIL with
 * errbuf naming the owner's address, "owner HOST:PORT", or saying that
 * it has none now. Errors (nothing registered, errbuf says why):
 * KEEL_EUNAVAIL, KEEL_EEXIST (tag in use on k), KEEL_ELIMIT (k holds
 * KEEL_FOLLOW_PER_SINK_MAX already), KEEL_ESTOPPING, KEEL_ENOMEM. */
int keel__follow_subscribe(keel_node *n, keel_follow_sink *k, uint64_t tag,
                           struct keel_type_entry *te, const void *id,
                           size_t idlen, uint64_t since, unsigned flags,
                           char *errbuf, size_t errlen);
/* Ends k's subscription tag without an END: 0, or 1 when its first
 * answer was still due (it will not come). KEEL_ENOTFOUND when k has none
 * by that tag. */
int keel__follow_unsubscribe(keel_node *n, keel_follow_sink *k,
                             uint64_t tag);
/* The sink closes: every subscription of it goes, silently. */
void keel__follow_sink_close(keel_node *n, keel_follow_sink *k);
/* Ends every subscription of sink k with code and reason, through its
 * end (or, before its first answer, its answer) callback. */
void keel__follow_sink_end(keel_node *n, keel_follow_sink *k, int code,
                           const char *reason);
/* Ends every subscription on the node with code and reason (the node is
 * stopping). */
void keel__follow_end_all(keel_node *n, int code, const char *reason);

/* The node's hooks (node.c, node_commit.c). After a committed turn of a
 * that set its state blob (state_set) or chose an event payload
 * (ft->set): if anyone follows a, the change is kept with req until its
 * release. */
void keel__follow_turn(keel_node *n, keel_actor *a, keel_req *req,
                       int state_set, const struct keel_fl_turn *ft);
/* req's reply is being released: its change goes to the subscribers if
 * the reply is a success, and is dropped otherwise. */
void keel__follow_release(keel_node *n, keel_req *req);
/* Frees a change still kept with req. */
void keel__follow_req_free(keel_req *req);

#endif
