/* No acknowledged write lost: the final reads against the writes.
 *
 * Once a run has healed, the runner reads every actor again; those reads
 * carry "final": true in the history and are invoked after every other
 * operation on their actor completed (a history where they are not is
 * refused). Each successful final read must show every acknowledged (ok)
 * write of its actor, and whatever else it shows must come from a write
 * that may have taken effect (ok or info; never a failed one):
 *
 *   counter  the value lies between the ok increments' sum plus the
 *            info increments that subtract, and that sum plus the info
 *            increments that add (failed ones count in neither: keel
 *            said they did not run). Below is an acknowledged increment
 *            lost or a failed decrement that took effect; above, an
 *            acknowledged decrement lost, a failed increment that took
 *            effect, or one counted twice: the finding names the causes
 *            the signs allow
 *   set      every ok add's element is in the read; every element read
 *            was added by an ok or info add
 *   register the value read was written (by a write or a successful cas,
 *            ok or info) by an operation that may have been the last:
 *            one that did not complete before an acknowledged write of
 *            another value began; "" (never written) only if no write
 *            was acknowledged
 *
 * This says less than the linearizability check, which sees the final
 * reads as well; it is kept because it never searches (so it answers
 * when that check is undecided) and names the write that was lost. */
#ifndef KEEL_CHAOS_LOSTWRITE_H
#define KEEL_CHAOS_LOSTWRITE_H

#include <stddef.h>
#include <stdio.h>

#include "chaos/history.h"

typedef struct chaos_lost_finding {
    size_t actor;
    size_t final_op; /* the final read (index in ops) */
    size_t write_op; /* the lost write, or SIZE_MAX */
    char *msg;       /* what is wrong, in words (malloc'd) */
} chaos_lost_finding;

typedef struct chaos_lost_result {
    size_t actors_read;   /* actors with an ok final read */
    size_t actors_unread; /* with ok writes but no ok final read */
    size_t finals;        /* ok final reads checked */
    size_t acked;         /* ok writes of the actors read */
    chaos_lost_finding *found;
    size_t nfound;
} chaos_lost_result;

/* Returns 0 (the verdict in *r, freed with chaos_lost_result_free),
 * KEEL_ENOMEM, or KEEL_EINVAL with err when a final read was invoked
 * before another operation on its actor completed, or an operation
 * other than a final read was invoked after one (nothing to free). */
int chaos_lost_check(const chaos_history *h, chaos_lost_result *r, char *err,
                     size_t errlen);
void chaos_lost_result_free(chaos_lost_result *r);
void chaos_lost_print(FILE *f, const chaos_history *h,
                      const chaos_lost_result *r, size_t max);

#endif
