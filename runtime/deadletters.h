/* Dead letters: messages the runtime delivers on an actor's behalf (its
 * outbox's messages, its reminders' firings) that could not be delivered,
 * kept with the actor instead of being dropped or retried for ever, until
 * an operator retries or drops them (keel dead-letters).
 *
 * A message becomes a dead letter when
 *  - its receiver's type is not registered (an outbox message), at once
 *    (standalone, unless its receiver may have applied it already; in a
 *    cluster after the deploy wait, runtime/outbox.c);
 *  - its receiver's handler refused it with the same error
 *    keel_node_options.dead_letter_after times in a row (an outbox
 *    message: the sender's dead letter; a reminder's firing: the actor's
 *    own, and the reminder goes on as if it had fired).
 * Failures that say "try later" (keel__dl_transient: the unit moving, the
 * store full, the connection lost...) never count: those are retried
 * until they pass.
 *
 * Storage, the actor's runtime entries (keys that begin with a NUL byte),
 * integers big-endian:
 *
 *   "\0keel.dl"        last be64 | held be64: the last number given out
 *                      and how many dead letters the actor holds
 *   "\0keel.dl/" n be64  one dead letter:
 *                      kind u8 | code be16 (the magnitude of a KEEL_E*
 *                      code) | attempts be16 | at_ms be64 (wall clock)
 *                      | len(why) be16 | why | body
 *                      body, kind 1 (outbox): the outbox record as it was
 *                        (len(type) u8 | type | len(id) be16 | id | msg);
 *                      kind 2 (reminder): len(name) u8 | name | msg.
 *
 * Operators act through runtime requests of the actor (a state read whose
 * message names the operation, runtime/proto.h): list, retry (an outbox
 * message is queued again under a new sequence number, so it goes after
 * what the actor queued since; a reminder's message runs through the
 * handler in the retry's own turn, which answers the handler's error if
 * it fails again) and drop. Loop thread only. */
#ifndef KEEL_RUNTIME_DEADLETTERS_H
#define KEEL_RUNTIME_DEADLETTERS_H

#include <stddef.h>
#include <stdint.h>

#include "keel.h"
#include "runtime/node.h"
#include "runtime/proto.h"

enum { KEEL_DL_OUTBOX = 1, KEEL_DL_REMINDER = 2 };

/* The default of keel_node_options.dead_letter_after. */
#define KEEL_DEAD_LETTER_AFTER_DEFAULT 3
/* What a dead letter keeps of the last error's text. */
#define KEEL_DL_WHY_MAX 256

/* Nonzero for a failure after which the same delivery may succeed
 * without anything changing at the receiver: the receiver's turn did not
 * run or did not commit, or nobody knows. Any other failure is the
 * receiver's answer to the message. */
int keel__dl_transient(int status);

/* Nonzero for a transient failure that says the receiver did not run the
 * delivery (held until its deadline, refused before it ran, never sent).
 * The others (the link or the lease lost, EINDOUBT...) leave it unknown
 * whether it was applied. */
int keel__dl_not_run(int status);

/* Refusals after which a delivery becomes a dead letter (the node's
 * option, its default when 0). */
unsigned keel__dl_after(const keel_node *n);

/* The default of keel_node_options.deploy_wait_ms: an hour. */
#define KEEL_DEPLOY_WAIT_MS_DEFAULT 3600000u

/* How long an outbox message may wait for a deploy before it becomes a
 * dead letter, in ms (the node's option, its default when 0). */
uint32_t keel__deploy_wait_ms(const keel_node *n);

/* Stages a dead letter of the turn's actor: kind, the error (code, why)
 * after attempts deliveries, and its body (layout above). */
int keel__dl_add(keel_turn *t, int kind, int code, unsigned attempts,
                 const char *why, size_t why_len, const void *body,
                 size_t body_len);

/* A page of entries (runtime/proto.h, keel_dead_entry) answering a list
 * request: held be64, then as many entries as fit one frame of the
 * node's max frame size, at most KEEL_DEAD_LIST_MAX. */
struct keel_dl_page {
    size_t room; /* the most a reply may hold */
    unsigned count;
    uint8_t *buf;
    size_t len, cap;
    int err;
};
int keel__dl_page_init(struct keel_dl_page *pg, keel_node *n, uint64_t held);
/* 0: added; 1: the page is full (or failed: pg->err), stop the walk. */
int keel__dl_page_add(struct keel_dl_page *pg, const keel_dead_entry *e);
/* Ends the walk that returned rc: 0 with *reply the page (malloc'd, *rlen
 * bytes), or the error, said in t's error text (what names an entry, "a
 * dead letter"); the page is freed either way. */
int keel__dl_page_end(struct keel_dl_page *pg, keel_turn *t, int rc,
                      const char *what, uint8_t **reply, size_t *rlen);

/* Whether req (a state read) is a dead-letter request. */
int keel__dl_is_request(const keel_req *req);
/* Runs a dead-letter request in the turn t, before its writes are
 * applied: *reply (malloc'd, *rlen bytes; NULL and 0 when empty) is its
 * answer. *ran is set when it ran the actor's handler (a retried
 * reminder). */
int keel__dl_request(keel_turn *t, keel_req *req, uint8_t **reply,
                     size_t *rlen, int *ran);

#endif
