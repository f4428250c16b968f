/* Linearizability of a history, one actor at a time.
 *
 * keel promises linearizability per actor, and linearizability is local
 * (Herlihy and Wing): a history is linearizable if and only if each
 * actor's sub-history is. So each actor is checked alone against its
 * family's model (chaos/model.h), which keeps the searches small.
 *
 * The search is Wing and Gong's, in Lowe's "just in time" form with his
 * memoisation of configurations (which operations are linearized, the
 * model's state), as Porcupine does it. Operations that failed are left
 * out (they did not take effect); an info operation, or one without a
 * completion, may take effect at any point after its invocation or never:
 * its completion counts as +infinity and it need not be linearized at
 * all; info reads are left out (they constrain nothing).
 *
 * When an actor's history is not linearizable, the check looks for the
 * shortest prefix of that actor's events that is not (by bisection:
 * linearizability is prefix-closed, with the operations still open at
 * the cut counted as info), and reports where the search of that prefix
 * got stuck: the longest linearization it found, the operation whose
 * completion could not be explained and the operations that could have
 * come next. */
#ifndef KEEL_CHAOS_LIN_H
#define KEEL_CHAOS_LIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "chaos/history.h"

typedef enum chaos_lin_verdict {
    CHAOS_LIN_OK,        /* linearizable */
    CHAOS_LIN_VIOLATION, /* not linearizable */
    CHAOS_LIN_UNDECIDED  /* the search passed max_states */
} chaos_lin_verdict;

typedef struct chaos_lin_opts {
    /* Configurations one actor's search may visit before its verdict is
     * UNDECIDED; 0: no bound. The search is exponential in the worst
     * case (many concurrent or info operations on one actor). */
    uint64_t max_states;
} chaos_lin_opts;

typedef struct chaos_lin_actor {
    size_t actor;   /* index in chaos_history.actors */
    chaos_lin_verdict verdict;
    size_t searched; /* operations in the search (not fail, not info reads) */
    uint64_t states; /* configurations visited, every search counted */
    double seconds;
    /* A violation, about the shortest failing prefix: */
    size_t prefix_events, events; /* its length, and all of the actor's */
    size_t prefix_end; /* the op whose completion ends that prefix */
    size_t stuck;     /* the op (index in ops) whose completion no
                       * linearization explains */
    size_t *order;    /* the longest linearization found, in order */
    size_t norder;
    size_t *pending;  /* ops invoked, not linearized, before stuck ended */
    int *refused;     /* per pending op: 1 if the model refuses it in
                       * the state after order, 0 if it allows it (every
                       * way on from there failed) */
    char **why;       /* per pending op the model refuses: why, in words
                       * (a set read: the elements it lacks or has too
                       * many), or NULL */
    size_t npending;
    char *state;      /* the model's state after order, in words */
} chaos_lin_actor;

typedef struct chaos_lin_result {
    chaos_lin_actor *actors; /* one per actor of the history, same order */
    size_t nactors;
    size_t violations, undecided;
    uint64_t states;
    double seconds;
} chaos_lin_result;

/* Checks every actor of h. Returns 0 (the verdicts are in *res, to be
 * freed with chaos_lin_result_free) or KEEL_ENOMEM (nothing to free). */
int chaos_lin_check(const chaos_history *h, const chaos_lin_opts *o,
                    chaos_lin_result *res);
/* Checks one actor; free *out with chaos_lin_actor_free. 0 or
 * KEEL_ENOMEM. */
int chaos_lin_check_actor(const chaos_history *h, size_t actor,
                          const chaos_lin_opts *o, chaos_lin_actor *out);
void chaos_lin_actor_free(chaos_lin_actor *a);
void chaos_lin_result_free(chaos_lin_result *res);

/* The verdict for people: one line, then for each actor that failed (up
 * to max_detail of them, the shortest failing prefixes first) where its
 * search got stuck. */
void chaos_lin_print(FILE *f, const chaos_history *h,
                     const chaos_lin_result *res, size_t max_detail);
void chaos_lin_print_actor(FILE *f, const chaos_history *h,
                           const chaos_lin_actor *a);

#endif
