/* One line of history.jsonl (docs/chaos.md): an invocation or a
 * completion, its schema, and its JSON form. chaos/history.h reads lines
 * into a history; chaos/hwriter.h writes them. */
#ifndef KEEL_CHAOS_EVENT_H
#define KEEL_CHAOS_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "chaos/arena.h"

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

const char *chaos_type_name(chaos_type t);
const char *chaos_fn_name(chaos_fn f);
const char *chaos_family_name(chaos_family f);
chaos_family chaos_fn_family(chaos_fn f);
/* 1 for read, get and read_set: operations that change nothing. */
int chaos_fn_is_read(chaos_fn f);

/* Checks one event on its own: the fields its type and operation need,
 * and the shapes of args and result. KEEL_EINVAL with a message, or 0. */
int chaos_event_check(const chaos_event *ev, char *err, size_t errlen);

/* Parses one line (without its newline) into *ev; scratch holds what ev
 * points to. Returns 0, KEEL_ENOMEM or KEEL_EINVAL with a message. The
 * event is only parsed: chaos_history_add checks it against the
 * history. */
int chaos_event_parse(const char *line, size_t len, chaos_arena *scratch,
                      chaos_event *ev, char *err, size_t errlen);

struct chaos_buf;
/* One event as a line of history.jsonl, with its newline, appended to
 * out (a chaos_buf). KEEL_EINVAL if the event fails chaos_event_check. */
int chaos_event_format(const chaos_event *ev, struct chaos_buf *out,
                       char *err, size_t errlen);

/* For the history and the writer: whether two values are equal, and
 * whether completion ev repeats invocation inv (actor, op, args, final);
 * KEEL_EINVAL with a message naming inv_line (if not 0), or 0. */
int chaos_value_eq(const chaos_value *a, const chaos_value *b);
int chaos_event_same_call(const chaos_event *inv, size_t inv_line,
                          const chaos_event *ev, char *err, size_t errlen);

#endif
