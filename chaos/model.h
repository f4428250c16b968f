/* Sequential models of the actor types a history exercises, for the
 * linearizability search (chaos/lin.c).
 *
 * A model first compiles one actor's operations into chaos_cop records
 * (strings interned to numbers, a set read turned into a bitset), so that
 * a step is a few word operations. A state is a fixed number of 64-bit
 * words, the same for every state of one actor, so the search can copy,
 * hash and compare states without knowing the model. */
#ifndef KEEL_CHAOS_MODEL_H
#define KEEL_CHAOS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "chaos/history.h"

/* One operation, compiled. The caller fills op; compile fills the rest. */
typedef struct chaos_cop {
    size_t op;        /* index in chaos_history.ops */
    chaos_fn fn;
    int known;        /* 1: the result is known (an ok completion) */
    int64_t a, b;     /* arguments: interned value, amount, element */
    int64_t r;        /* the known result, interned */
    const uint64_t *bits; /* set reads: the elements read, as a bitset */
    int impossible;   /* a result no state can give (a set read that
                       * repeats an element) */
    int inert;        /* as an info op: taking effect can only make
                       * known results wrong, so it need not be tried
                       * (an add of an element no read returns) */
} chaos_cop;

typedef struct chaos_model {
    const char *name;
    /* Compiles cops[0..n) (their .op set) of one actor of h. Sets *words,
     * the size of a state, and *data, which the other functions get.
     * Returns 0 or KEEL_ENOMEM. */
    int (*compile)(const chaos_history *h, chaos_cop *cops, size_t n,
                   size_t *words, void **data);
    /* The state before any operation. */
    void (*init)(const void *data, uint64_t *state);
    /* Whether op can take effect in state with the result it has (any
     * result, when !op->known); if so, next gets the state after it.
     * next never aliases state. */
    int (*step)(const void *data, const uint64_t *state,
                const chaos_cop *op, uint64_t *next);
    /* The state in words, for reports. */
    void (*describe)(const void *data, const uint64_t *state,
                     struct chaos_buf *out);
    /* Why step refuses op in state, in words, for reports: what differs
     * between the state and the result (a set read's elements that are
     * missing or extra). NULL, or nothing written, when describe and the
     * operation say it already. */
    void (*refusal)(const void *data, const uint64_t *state,
                    const chaos_cop *op, struct chaos_buf *out);
    void (*free)(void *data);
} chaos_model;

extern const chaos_model chaos_model_register;
extern const chaos_model chaos_model_counter;
extern const chaos_model chaos_model_set;

const chaos_model *chaos_model_for(chaos_family f);

/* Strings to dense numbers from 0, for the models' compile steps. The
 * strings are not copied: they must outlive the table. */
typedef struct chaos_intern {
    keel_hmap map;
    const char **strs; /* number -> string */
    size_t n, cap;
    chaos_arena arena;
} chaos_intern;

void chaos_intern_init(chaos_intern *t);
void chaos_intern_free(chaos_intern *t);
/* The number of s, given a new one if s is new; -1 when out of memory. */
int64_t chaos_intern_str(chaos_intern *t, const char *s);

#endif
