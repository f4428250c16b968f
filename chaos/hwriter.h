/* The writer of history.jsonl (docs/chaos.md), for a runner. */
#ifndef KEEL_CHAOS_HWRITER_H
#define KEEL_CHAOS_HWRITER_H

#include <stdint.h>
#include <stdio.h>

#include "chaos/event.h"
#include "runtime/hmap.h"

/* A writer of history.jsonl: numbers the events and checks each one as
 * chaos_history_add would before it writes it, so that what it writes
 * reads back. It keeps the clients' outstanding invocations and each
 * actor's family, not the history. Not thread-safe: a runner with several
 * threads takes one lock around reading the clock and calling
 * chaos_hwriter_write, so that times never go back down the file. */
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

#endif
