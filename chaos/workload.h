/* What the clients of a chaos run ask of keel (docs/chaos.md,
 * "Workloads"): the actors, the operations, the keel message of each, how
 * a reply becomes a history result, and how an error becomes an outcome
 * (ok, fail, info). No I/O: the runner sends and records. */
#ifndef KEEL_CHAOS_WORKLOAD_H
#define KEEL_CHAOS_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "chaos/event.h"
#include "chaos/schedule.h"

typedef enum chaos_workload {
    CHAOS_W_REGISTER, /* register: read, write, cas on a few hot actors */
    CHAOS_W_COUNTER,  /* counter: incr (some negative), get */
    CHAOS_W_SET,      /* kv: put E 1 of distinct elements, keys */
    CHAOS_W_MIXED     /* the three, actor k of family k % 3 */
} chaos_workload;

const char *chaos_workload_name(chaos_workload w);
/* 0 with *w, or KEEL_EINVAL. */
int chaos_workload_parse(const char *s, chaos_workload *w);

/* A workload: its kind, how many actors the clients share, and the
 * actor type that speaks it when it is not keel's built-in one. A type
 * of one's own (a plugin's) must answer the built-in type's messages the
 * same way: register `read`, `write V`, `cas OLD NEW`; counter `incr N`,
 * `get`; set (as kv) `put E 1`, `keys` (docs/chaos.md). */
typedef struct chaos_wl {
    chaos_workload kind;
    int actors;
    const char *type; /* NULL: register, counter or kv; not with mixed */
    /* Percent of counter increments by CHAOS_WL_BIG or -CHAOS_WL_BIG
     * (keel-chaos run --refusals): the counter refuses those that would
     * overflow (EBADMSG), depending on the value it finds. 0: none. */
    int refusals;
} chaos_wl;

/* 2^62: two of these overflow a counter near 0, three below it. */
#define CHAOS_WL_BIG ((int64_t)1 << 62)

#define CHAOS_WOP_MSG_MAX 96
#define CHAOS_WOP_ACTOR_MAX 96

/* One operation, ready to send and to record. */
typedef struct chaos_wop {
    chaos_fn fn;
    int final;
    char actor[CHAOS_WOP_ACTOR_MAX]; /* "type/id", the history's name */
    const char *type;                /* points into actor */
    const char *id;                  /* points into actor */
    char msg[CHAOS_WOP_MSG_MAX];     /* the keel message */
    size_t msg_len;
    /* The history's args: args.s / args.strs point into these. */
    chaos_value args;
    char arg1[32], arg2[32];
    const char *pair[2];
} chaos_wop;

/* A set grows with every add and each read returns all of it, so the
 * history of a long run would grow with the square of its length: set
 * actors are taken afresh every CHAOS_WL_SET_GEN_S seconds of the run
 * (generation g of set actor k is "kv/s<k>.g<g>", g 0 "kv/s<k>").
 * Registers and counters do not grow and keep one actor each. */
#define CHAOS_WL_SET_GEN_S 30

/* The family of actor k (0 <= k), and the name in the history of its
 * generation gen: "register/r<k>", "counter/c<k>", "kv/s<k>[.g<gen>]", or
 * "<type>/..." with w->type. gen matters to sets only. */
chaos_family chaos_wl_family(const chaos_wl *w, int k);
void chaos_wl_actor_name(const chaos_wl *w, int k, int gen, char *buf,
                         size_t cap);

/* The next operation of client `client` (its seq-th) on one of the
 * workload's actors, drawn from r, in generation gen. Set elements are
 * unique per client and seq. op->type points to w->type or a static
 * string. */
void chaos_wl_next(const chaos_wl *w, int gen, chaos_rng *r, int client,
                   uint64_t seq, chaos_wop *op);
/* The final read of actor k in generation gen ("final": true). */
void chaos_wl_final(const chaos_wl *w, int k, int gen, chaos_wop *op);

/* A successful reply as the history's result. For read_set, *strs gets a
 * malloc'd array (free it with the reply) whose strings point into reply,
 * which is modified (newlines become NULs). Returns 0, or KEEL_EPROTO
 * when the reply is not what the operation answers (a counter that is not
 * a number, a cas answer that is neither OK nor FAILED): the runner
 * records such an answer as info and counts it. */
int chaos_wl_result(const chaos_wop *op, char *reply, size_t len,
                    chaos_value *out, const char ***strs);

/* The outcome of an error code from keel_client_call (docs/chaos.md,
 * "Outcomes"; docs/protocol.md, "Did it run?"): CHAOS_FAIL when keel
 * says the request did not run (every error of the turn, storage errors
 * included), CHAOS_INFO when nobody knows (ECONN, ETIMEDOUT, EINDOUBT,
 * EALREADY, and the client's own EPROTO and ENOMEM). */
chaos_type chaos_wl_outcome(int rc);

/* Keyed retries (keel-chaos run --keyed N): 1 when a request sent with a
 * request key may be sent again with the same key after rc, because it
 * did not run (ENOTSENT, ESTOPPING, EUNAVAIL, EDEADLINE, EOVERLOAD) or
 * nobody knows (ECONN, ETIMEDOUT, EINDOUBT): the actor answers a key it
 * recorded with its first reply, without running the message again. */
int chaos_wl_retryable(int rc);

/* The outcome of a keyed operation whose last attempt ended with rc,
 * maybe_ran saying whether an earlier attempt's outcome was unknown:
 * CHAOS_OK on a reply (the first run's, if there was an earlier one);
 * CHAOS_FAIL on a refusal that keel records under the key
 * (keel_err_is_answer: every copy of the request gets it); else
 * CHAOS_INFO when it may have run, else CHAOS_FAIL. */
chaos_type chaos_wl_keyed_outcome(int rc, int maybe_ran);

#endif
