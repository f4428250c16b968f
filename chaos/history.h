/* The history of a chaos run: what clients asked of actors and what they
 * learned, as history.jsonl holds it (docs/chaos.md, "history.jsonl").
 *
 * Each line is one event: an invocation, or the completion of the one
 * operation its client has outstanding. A completion is `ok` (the
 * operation took effect and returned `result`), `fail` (it certainly did
 * not take effect) or `info` (nobody knows: it may take effect at any
 * point after its invocation, even after the completion line, or never).
 * An invocation without a completion by the end of the file counts as
 * `info`. Lines are in the order the runner saw the events, so one
 * operation precedes another when its completion line comes before the
 * other's invocation line; time_ns never decreases down the file.
 *
 * Operations come in three families, one per model:
 *   register: read -> "v" | write "v" -> null | cas ["old","new"] -> bool
 *   counter:  incr n -> new value or null | get -> n
 *   set:      add "e" -> null | read_set -> ["e", ...]
 * All operations on one actor belong to one family. */
#ifndef KEEL_CHAOS_HISTORY_H
#define KEEL_CHAOS_HISTORY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "chaos/arena.h"
#include "chaos/event.h"
#include "runtime/hmap.h"

/* One operation: an invocation and its completion. */
typedef struct chaos_op {
    size_t actor; /* index in chaos_history.actors */
    int64_t client;
    chaos_fn fn;
    chaos_type outcome; /* CHAOS_OK, CHAOS_FAIL or CHAOS_INFO */
    int completed;      /* 0: no completion in the history (outcome info) */
    int final;
    chaos_value args, result;
    uint64_t invoke, complete; /* event indexes; complete UINT64_MAX if none */
    int64_t invoke_ns, complete_ns; /* complete_ns -1 if none */
    size_t invoke_line, complete_line; /* in the file, from 1; 0: none */
    const char *node, *error;
} chaos_op;

typedef struct chaos_actor {
    const char *name; /* "type/id" */
    chaos_family family;
    size_t *ops; /* indexes in chaos_history.ops, in invocation order */
    size_t nops, cap;
} chaos_actor;

/* A history in memory. Everything it points to is its own and lives until
 * chaos_history_free. ops are in invocation order. */
typedef struct chaos_history {
    chaos_op *ops;
    size_t nops, ops_cap;
    chaos_actor *actors;
    size_t nactors, actors_cap;
    uint64_t nevents;
    int64_t last_ns;
    size_t nclients;
    /* private */
    chaos_arena arena;
    keel_hmap actor_index; /* name -> actor */
    keel_hmap clients;     /* client -> its outstanding operation */
} chaos_history;

void chaos_history_init(chaos_history *h);
void chaos_history_free(chaos_history *h);

/* Appends one event: it must pass chaos_event_check, carry the next index
 * and a time no earlier than the last event's, and fit its client's
 * state: an invocation needs the client idle, a completion must repeat
 * the client's outstanding invocation (actor, op, args and final). line
 * (from 1, or 0) is kept for messages. Returns 0, KEEL_ENOMEM, or
 * KEEL_EINVAL with a message (the history is left as it was). */
int chaos_history_add(chaos_history *h, const chaos_event *ev, size_t line,
                      char *err, size_t errlen);

/* Reads history.jsonl at path into h (initialised by the caller, usually
 * empty). Errors name the file and line: KEEL_EIO (cannot read),
 * KEEL_EINVAL (malformed), KEEL_ENOMEM. */
int chaos_history_read(chaos_history *h, const char *path, char *err,
                       size_t errlen);
/* The same from a stream; name is used in messages. */
int chaos_history_read_stream(chaos_history *h, FILE *f, const char *name,
                              char *err, size_t errlen);

/* "client 3 cas("1", "2") -> true" and the outcome: for reports.
 * Strings longer than a few dozen bytes are cut. */
void chaos_op_describe(const chaos_history *h, const chaos_op *op,
                       struct chaos_buf *out);

#endif
