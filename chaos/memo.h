/* The configurations the linearizability search has been in: tuples of a
 * fixed number of 64-bit words (which operations are linearized, then
 * the model's state). A configuration seen once need not be explored
 * again: whatever follows from it failed the first time (Lowe's
 * memoisation of the Wing-Gong search, as in Porcupine). */
#ifndef KEEL_CHAOS_MEMO_H
#define KEEL_CHAOS_MEMO_H

#include <stddef.h>
#include <stdint.h>

typedef struct chaos_memo {
    size_t words;    /* per tuple */
    uint64_t *tuples; /* count * words */
    uint64_t *hashes; /* count */
    size_t count, cap;
    uint32_t *slots; /* tuple number + 1; 0 is empty */
    size_t mask;
} chaos_memo;

void chaos_memo_init(chaos_memo *m, size_t words);
void chaos_memo_free(chaos_memo *m);
/* Adds the tuple. Returns 1 if it was new, 0 if it was there already,
 * KEEL_ENOMEM (the set unchanged) or KEEL_ELIMIT past 2^32 - 2 tuples. */
int chaos_memo_add(chaos_memo *m, const uint64_t *tuple);

#endif
