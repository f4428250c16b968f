/* The durable outbox (keel_turn_send): messages an actor sends from a
 * turn, committed with that turn's writes and delivered afterwards, at
 * least once, in order per sender, to receivers that apply each one
 * exactly once.
 *
 * Storage, all of it the runtime's own entries (keys that begin with a
 * NUL byte, never shown to handlers), integers big-endian:
 *
 *  sender    "\0keel.ob"            next be64 | done be64: the last
 *                                   sequence number given out, and the
 *                                   last one delivered or dead-lettered
 *                                   with all before it; of the messages
 *                                   (done, next], those whose records
 *                                   remain wait (a later one may be
 *                                   retired before an earlier one whose
 *                                   retiring turn failed)
 *            "\0keel.ob/" seq be64  one waiting message:
 *                                   len(type) u8 | type | len(id) be16
 *                                   | id | message
 *            (undeliverable messages become the sender's dead letters:
 *            runtime/deadletters.h)
 *  receiver  "\0keel.in/" h         h = XXH3-128 of len(type) u8 | type
 *                                   | id of a sender: the highest
 *                                   sequence applied from it, be64
 *  unit      the records of type "\x01outbox." + 16 hex digits of the
 *            XXH3-64 of the capability, id = the sender's h, in the
 *            sender's shard: the unit's index of senders with waiting
 *            messages (value: len(type) u8 | type | id), written in the
 *            sender's own batch group, so that it moves, replicates and
 *            fails with the sender's records.
 *
 * Delivery: the owner of the sender's unit sends one message of a sender
 * at a time, the lowest waiting one, once the turn that queued it has
 * been answered (its commit durable and, with replicas, acknowledged),
 * through keel__submit like any call; the message carries (sender,
 * sequence). The receiver drops, answering success, a message whose
 * sequence is not above what it recorded for that sender, and otherwise
 * records the sequence in its turn's writes. Once the receiver's answer
 * is in, a runtime turn of the sender deletes the message. A node that
 * takes a unit (start, handoff, failover) finds its senders in the index.
 * Everything here runs on the loop thread. */
#ifndef KEEL_RUNTIME_OUTBOX_H
#define KEEL_RUNTIME_OUTBOX_H

#include <stdint.h>

#include "keel.h"
#include "runtime/node.h"

/* The sender of a delivered message (keel_req.from), malloc'd. */
struct keel_ob_from {
    uint64_t seq;
    uint8_t tlen;
    uint16_t idlen;
    char type[KEEL_MAX_TYPE_LEN + 1];
    uint8_t id[KEEL_MAX_ID_LEN];
};

/* What a turn did to its actor's outbox (kept in keel_turn): the highest
 * sequence it queued (0: none), and the index write it needs. */
enum { KEEL_OB_INDEX_NONE = 0, KEEL_OB_INDEX_PUT = 1, KEEL_OB_INDEX_DEL = 2 };
struct keel_ob_turn {
    uint64_t hi;
    uint8_t index;
};

/* keel_req.ob_op: a runtime turn of a sender, not a message. Its buffer
 * holds seq be64 | code be16 | attempts be16, then (KEEL_OB_OP_DEAD) the
 * last error's text. KEEL_OB_OP_SETTLE (seq 0) writes the sender's
 * header again as it stands: its success says that what the store held
 * of the unit before it stands (outbox.c, settle). */
enum {
    KEEL_OB_OP_NONE = 0,
    KEEL_OB_OP_DONE = 1,
    KEEL_OB_OP_DEAD = 2,
    KEEL_OB_OP_SETTLE = 3
};

int keel__outbox_init(keel_node *n);
void keel__outbox_free(keel_node *n);
/* The node runs: standalone, every unit is this node's; the senders with
 * waiting messages are looked up in the index of each. */
void keel__outbox_start(keel_node *n);
/* Cluster mode: this node serves the unit from now on. */
void keel__outbox_unit_taken(keel_node *n, const char *cap, uint32_t shard);

/* Queues an outbox record (rec, rl bytes, the layout above) as the
 * actor's next message, with the turn's writes: keel_turn_send, and a
 * dead letter retried. */
int keel__outbox_queue(keel_turn *t, const void *rec, size_t rl);

/* Receiver, before the handler: *dup set when the actor applied this
 * message already (answer success, run nothing). */
int keel__outbox_check(keel_turn *t, const keel_req *req, int *dup);
/* Receiver, after the handler succeeded: records the sequence with the
 * turn's writes. */
int keel__outbox_applied(keel_turn *t, const keel_req *req);
/* Sender: a runtime turn (req->ob_op) that retires a message. */
int keel__outbox_op(keel_turn *t, const keel_req *req);
/* A reply left with success: the messages its turn queued may go. */
void keel__outbox_released(keel_node *n, const keel_req *req);
/* A reply of a turn that queued messages left with an error: if its
 * writes committed after all (its outcome was in doubt), its messages go
 * once the unit is served here again; if they did not, there is nothing
 * to send. */
void keel__outbox_doubt(keel_node *n, const keel_req *req);
/* --- operators (runtime/outbox_admin.c) --- */

/* What an operator is shown of an error's text, at most. */
#define KEEL_OB_WHY_MAX 128

/* What this node knows of actor a's outbox delivery (its unit served
 * here): known 0 when it delivers nothing for it now. */
struct keel_ob_view {
    int known;
    uint64_t done;        /* retired up to here, in order */
    uint64_t released;    /* may go up to here (or will, once settled) */
    uint64_t inflight;    /* the message out now; 0: none */
    uint64_t unsure_upto; /* up to here its receiver may have applied it */
    uint64_t wait_seq;    /* the message waiting for a deploy; 0: none */
    uint64_t give_up;     /* the message an operator gave up; 0: none */
    uint64_t dead_seq;    /* a dead letter's turn out for it; 0: none */
    /* The message tried last failed tries times since tried_ms (wall
     * clock), the last time with last_code and the text last_why. */
    uint64_t last_seq;
    unsigned tries;
    int last_code;
    uint64_t tried_ms;
    const char *last_why;
};
void keel__outbox_view(keel_node *n, const keel_actor *a,
                       struct keel_ob_view *v);
/* An operator gives up message seq of actor a, its next to go: kept as a
 * dead letter once its attempt out now (if any) has failed, or at once;
 * an attempt that succeeds delivers it instead. Remembered by this node
 * only (a restart or a move forgets it). KEEL_EUNAVAIL when this node
 * cannot take it now: it does not deliver for the actor yet, seq may not
 * go yet, or the dead letter of the message before is still being
 * kept. */
int keel__outbox_give_up(keel_node *n, keel_actor *a, uint64_t seq);

/* One waiting message, as turn t sees the actor's records. */
struct keel_ob_rec {
    uint64_t seq;
    const char *type; /* the receiver's, not NUL-terminated */
    size_t tlen;
    const uint8_t *id;
    size_t idlen;
    const uint8_t *msg;
    size_t msg_len;
};
/* Returns nonzero to stop the walk. */
typedef int (*keel_ob_rec_fn)(const struct keel_ob_rec *r, void *data);
/* Calls fn for each waiting message, in order: 0, KEEL_ECORRUPT for an
 * unreadable record, or the store's error. */
int keel__outbox_records(keel_turn *t, keel_ob_rec_fn fn, void *data);

/* The state-read requests of waiting messages (runtime/proto.h, "dead-
 * letters waiting" and "dead-letters give-up"), run in turn t of the
 * sender: 0 with *reply (malloc'd, *rlen bytes), or an error said in
 * t's error text. */
int keel__outbox_list(keel_turn *t, uint64_t after, uint8_t **reply,
                      size_t *rlen);
int keel__outbox_give_up_request(keel_turn *t, uint64_t seq,
                                 uint8_t **reply, size_t *rlen);

/* flush_open: adds the actor's pending index write (a->ob_index) to its
 * group of b. */
int keel__outbox_flush(keel_node *n, keel_batch *b, keel_actor *a);

#endif
