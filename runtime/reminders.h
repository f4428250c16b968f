/* Durable reminders (keel_turn_remind): a message the runtime delivers
 * to an actor at or after a time, once or every period, set and removed
 * with the actor's turns.
 *
 * Storage, all of it the runtime's own entries (keys that begin with a
 * NUL byte, never shown to handlers), integers big-endian, times in
 * milliseconds of the wall clock (CLOCK_REALTIME, so that they mean the
 * same on every node and across restarts):
 *
 *  actor  "\0keel.rm/" name    due be64 | period be64 | message
 *  unit   the records of type "\x01remind." + 16 hex digits of the
 *         XXH3-64 of the capability, id = due be64 | h (24 bytes), where
 *         h = XXH3-128 of len(type) u8 | type | len(id) u8 | id | name,
 *         in the actor's shard: the unit's index of reminders ordered by
 *         due time (value: len(type) u8 | type | len(id) u8 | id | name),
 *         written in the actor's own batch group, so that it moves,
 *         replicates and fails over with the actor's records.
 *
 * Firing: the node keeps, for each unit it serves that has reminders,
 * the earliest due time in its index (one cursor seek), and one timer at
 * the earliest of those. When it runs, the index entries due by now are
 * read and each becomes a runtime turn of its actor (keel__submit, so the
 * actor is activated if need be) that looks at the actor's record: if
 * the reminder is still set with that due time, the turn reschedules it
 * (now + period) or deletes it, and runs the handler with its message;
 * otherwise (replaced or removed since) it only deletes the stale index
 * entry. A reminder due while its unit was not served fires once when it
 * is served again. Everything here runs on the loop thread. */
#ifndef KEEL_RUNTIME_REMINDERS_H
#define KEEL_RUNTIME_REMINDERS_H

#include <stdint.h>

#include "keel.h"
#include "runtime/node.h"

/* A pending write of the unit index, from a turn to the flush that puts
 * it in the actor's batch group (keel_actor.rm_idx). */
struct keel_rm_idx {
    struct keel_rm_idx *next;
    uint8_t del;
    uint8_t id[24]; /* due be64 | h */
    uint16_t vlen;
    uint8_t val[];
};

/* A firing: keel_req.rm of a runtime turn. Owned by the firing's reply
 * callback, not by the req. */
struct keel_rm_fire {
    struct rm_unit *u;
    uint64_t due;
    uint64_t key; /* names the reminder in its unit (its index value's hash) */
    int ran; /* the handler ran (set by the turn) */
    /* The handler refused this firing attempts times, the last time with
     * code and why (malloc'd): the turn makes it a dead letter of the
     * actor instead of running the handler again (deadletters.h). */
    int dead, code;
    unsigned attempts;
    char *why;
    size_t why_len;
    uint8_t nlen;
    char name[KEEL_MAX_REMINDER_NAME_LEN + 1];
};

/* What a turn did to its actor's reminders (kept in keel_turn). */
struct keel_rm_turn {
    struct keel_rm_idx *idx, **tail; /* index writes, in order */
    uint64_t min_due;                /* earliest due it set; 0: none */
    const struct keel_rm_fire *fire; /* the turn is this firing */
};

int keel__reminders_init(keel_node *n);
void keel__reminders_free(keel_node *n);
/* The node runs: standalone, every unit is this node's; each unit's
 * earliest reminder is looked up. */
void keel__reminders_start(keel_node *n);
/* Cluster mode: this node serves the unit from now on. */
void keel__reminders_unit_taken(keel_node *n, const char *cap,
                                uint32_t shard);

/* A firing's turn (req->rm), before the handler: *run set when the
 * handler is to run with req's buffer, which now holds the message. */
int keel__reminders_fire(keel_turn *t, keel_req *req, int *run);
/* The end of a turn: its index writes go to the actor (ok) or are
 * dropped, and req learns the earliest due time it set. */
void keel__reminders_turn_end(keel_turn *t, keel_actor *a, keel_req *req,
                              int ok);
/* flush_open: adds the actor's pending index writes to its group of b. */
int keel__reminders_flush(keel_node *n, keel_batch *b, keel_actor *a);
/* The actor's pending index writes are gone with its open writes. */
void keel__reminders_forget(keel_actor *a);
/* A reply of a turn that set a reminder left (req->rm_due != 0): its
 * writes are durable (or in doubt): the unit's timer is looked at. */
void keel__reminders_released(keel_node *n, const keel_req *req);
/* A state read's reply listing the actor's reminders (proto.h,
 * keel_reminders_entry layout). */
int keel__reminders_list(keel_turn *t, uint8_t **out, size_t *len);

#endif
