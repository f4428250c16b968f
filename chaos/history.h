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
#include "runtime/hmap.h"

typedef enum chaos_type {
    CHAOS_INVOKE,
    CHAOS_OK,
    CHAOS_FAIL,
    CHAOS_INFO
} chaos_type;

typedef enum chaos_fn {
    CHAOS_READ,
    CHAOS_WRITE,
    CHAOS_CAS,
    CHAOS_INCR,
    CHAOS_GET,
    CHAOS_ADD,
    CHAOS_READ_SET,
    CHAOS_FN_COUNT
} chaos_fn;

typedef enum chaos_family {
    CHAOS_REGISTER,
    CHAOS_COUNTER,
    CHAOS_SET
} chaos_family;

typedef enum chaos_vtype {
    CHAOS_V_NULL,
    CHAOS_V_BOOL,
    CHAOS_V_INT,
    CHAOS_V_STR,
    CHAOS_V_STRS /* an array of strings */
} chaos_vtype;

/* An argument or a result. Strings are UTF-8 without NUL bytes. */
typedef struct chaos_value {
    chaos_vtype type;
    int b;
    int64_t i;
    const char *s;
    const char *const *strs;
    size_t n;
} chaos_value;

/* One line of history.jsonl. The pointers are the caller's (writing) or
 * the reader's scratch (reading): chaos_history_add copies what it
 * keeps. */
typedef struct chaos_event {
    chaos_type t;
    uint64_t index;   /* the event's position in the file, from 0 */
    int64_t time_ns;  /* monotonic, never decreasing down the file */
    int64_t client;   /* >= 0; at most one operation outstanding */
    const char *actor; /* "type/id" */
    chaos_fn op;
    chaos_value args;
    chaos_value result; /* completions only; CHAOS_V_NULL otherwise */
    int final;         /* a read of the state once the run has healed */
    const char *node;  /* optional: the node the client sent to, or NULL */
    const char *error; /* optional on fail and info: why, or NULL */
} chaos_event;

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

const char *chaos_type_name(chaos_type t);
const char *chaos_fn_name(chaos_fn f);
const char *chaos_family_name(chaos_family f);
chaos_family chaos_fn_family(chaos_fn f);
/* 1 for read, get and read_set: operations that change nothing. */
int chaos_fn_is_read(chaos_fn f);

/* Checks one event on its own: the fields its type and operation need,
 * and the shapes of args and result. KEEL_EINVAL with a message, or 0. */
int chaos_event_check(const chaos_event *ev, char *err, size_t errlen);

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

/* Parses one line (without its newline) into *ev; scratch holds what ev
 * points to. Returns 0, KEEL_ENOMEM or KEEL_EINVAL with a message. The
 * event is only parsed: chaos_history_add checks it against the
 * history. */
int chaos_event_parse(const char *line, size_t len, chaos_arena *scratch,
                      chaos_event *ev, char *err, size_t errlen);

/* Reads history.jsonl at path into h (initialised by the caller, usually
 * empty). Errors name the file and line: KEEL_EIO (cannot read),
 * KEEL_EINVAL (malformed), KEEL_ENOMEM. */
int chaos_history_read(chaos_history *h, const char *path, char *err,
                       size_t errlen);
/* The same from a stream; name is used in messages. */
int chaos_history_read_stream(chaos_history *h, FILE *f, const char *name,
                              char *err, size_t errlen);

/* One event as a line of history.jsonl, with its newline, appended to
 * out (a chaos_buf). KEEL_EINVAL if the event fails chaos_event_check. */
struct chaos_buf;
int chaos_event_format(const chaos_event *ev, struct chaos_buf *out,
                       char *err, size_t errlen);

/* A writer of history.jsonl: numbers the events and checks each one as
 * chaos_history_add would before it writes it, so that what it writes
 * reads back. It keeps the clients' outstanding invocations and each
 * actor's family, not the history. Not thread-safe: a runner with several threads takes one
 * lock around reading the clock and calling chaos_hwriter_write, so that
 * times never go back down the file. */
typedef struct chaos_hwriter {
    FILE *f; /* not owned */
    uint64_t next_index;
    int64_t last_ns;
    /* private */
    keel_hmap pending;  /* client -> a copy of its outstanding invocation */
    keel_hmap families; /* actor -> the family of its operations */
} chaos_hwriter;

void chaos_hwriter_init(chaos_hwriter *w, FILE *f);
void chaos_hwriter_close(chaos_hwriter *w); /* does not close f */
/* Writes ev with the next index (ev->index is ignored) and flushes the
 * line to f. Returns 0, KEEL_EINVAL (refused, nothing written),
 * KEEL_EIO or KEEL_ENOMEM. */
int chaos_hwriter_write(chaos_hwriter *w, const chaos_event *ev, char *err,
                        size_t errlen);

/* "client 3 cas("1", "2") -> true" and the outcome: for reports.
 * Strings longer than a few dozen bytes are cut. */
void chaos_op_describe(const chaos_history *h, const chaos_op *op,
                       struct chaos_buf *out);

#endif
