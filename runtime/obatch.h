/* Outbox messages to another node in batches (cluster mode; the frame is
 * OBATCH in proto.h and docs/protocol.md).
 *
 * Sender. route.c hands each outbox message it forwards here instead of
 * writing a CAST of its own. Those bound for the same node in the same
 * loop round leave together, in as many frames as the peer's max frame
 * size needs (taken to be this node's: a cluster runs one setting), at
 * the end of the round; the owner answers each frame with one REPLY holding
 * every message's own outcome, which goes to that message's callback as
 * a single CAST's answer would. Nothing changes for one message: it
 * keeps its callback, its deadline (the frame is held to the earliest of
 * its messages'), and its place in its sender's order, since an outbox
 * has one message out at a time; the batching is across senders.
 *
 * A node that does not know the kind (an older version, during a rolling
 * deploy) answers ERROR EMALFORMED: nothing of the frame ran, its
 * messages come back unsent to be routed again, and for OBATCH_LEGACY_S
 * that node gets single CASTs.
 *
 * Receiver. net.c checks a whole frame before any of it runs, then
 * submits its messages one by one through a keel_obatch_in, which sends
 * the REPLY once the last outcome is in.
 *
 * Loop thread only. */
#ifndef KEEL_RUNTIME_OBATCH_H
#define KEEL_RUNTIME_OBATCH_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/node.h"
#include "runtime/peer.h"
#include "runtime/proto.h"

typedef struct keel_obatch keel_obatch;

/* NULL when out of memory. peers must outlive it until
 * keel__obatch_stop. */
keel_obatch *keel__obatch_create(keel_node *n, keel_peers *peers);
/* Completes every message still queued here with status (they never
 * left, so it should be one that says so: KEEL_ESTOPPING) and forgets
 * peers. Frames that left are the peers module's to complete. */
void keel__obatch_stop(keel_obatch *ob, int status);
/* Frees ob, after keel__obatch_stop and after the peers are destroyed
 * (their last callbacks may still look at ob). NULL is fine. */
void keel__obatch_destroy(keel_obatch *ob);

/* Queues req, an outbox message (req->from set, a cast) to actor
 * (type, id) whose owner is at addr, with hop count hops. cb gets its
 * outcome as keel__peer_frame_by would give it, arg with it. Returns 0
 * when queued, or nonzero when it must go as a CAST of its own (the node
 * at addr takes no batches now, it is too large to share a frame, or no
 * memory): nothing was queued. */
int keel__obatch_add(keel_obatch *ob, const char *addr, unsigned hops,
                     const keel_req *req, const char *type, size_t tlen,
                     const void *id, size_t idlen, keel_peer_cb cb,
                     void *arg);
/* Messages queued and not yet in a frame. */
size_t keel__obatch_queued(const keel_obatch *ob);

/* ------------------------------------------------------------ receiver */

typedef struct keel_obatch_in keel_obatch_in;

/* One frame's messages on their way: reply is the REQ_NET request that
 * answers the frame (its connection and request id set; the connection
 * counts it as pending), count the messages. NULL when out of memory
 * (reply untouched). */
keel_obatch_in *keel__obatch_in_create(keel_node *n, keel_req *reply,
                                       unsigned count);
/* Submits item i (of type te) with the frame's deadline (0: none); an
 * error is its outcome. */
void keel__obatch_in_submit(keel_obatch_in *in, unsigned i,
                            struct keel_type_entry *te,
                            const keel_obatch_item *it, uint64_t deadline_ns);
/* Item i's outcome without running it (refused, unknown type). */
void keel__obatch_in_answer(keel_obatch_in *in, unsigned i, int status,
                            const char *text, size_t len);
/* Every item was submitted or answered: the REPLY leaves once the last
 * outcome is in (maybe at once). */
void keel__obatch_in_end(keel_obatch_in *in);

#endif
