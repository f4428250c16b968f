/* Activation logs of keeld (--activation-log FILE: one line per actor
 * activation and deactivation, with a wall-clock time in ns and the shard
 * epoch), merged across nodes to check the first promise: one actor is
 * never active on two nodes at overlapping times. The checks fail the
 * running test (check.h) with the actor, nodes and times involved. */
#ifndef KEEL_TEST_ACTLOG_H
#define KEEL_TEST_ACTLOG_H

#include <stddef.h>

typedef struct tu_interval {
    char key[128]; /* type and id */
    int node;
    unsigned long long start, end; /* realtime ns; end 0: still open */
    unsigned long long epoch;
} tu_interval;

typedef struct tu_actlog {
    tu_interval *iv;
    size_t n, cap;
} tu_actlog;

void tu_actlog_init(tu_actlog *a);
void tu_actlog_free(tu_actlog *a);

/* Reads node `node`'s log at path from byte `from` to byte `to` (0: to
 * the end). Every activation opens an interval, the next deactivation of
 * the same actor on this node closes it; an actor activated twice on one
 * node without a deactivation in between is itself a failure. Intervals
 * still open at `to` are closed at close_ns (the moment the node was
 * killed), or stay open (close_ns 0). */
void tu_actlog_parse(tu_actlog *a, const char *path, int node, size_t from,
                     size_t to, unsigned long long close_ns);

/* No two intervals of one actor overlap (an open interval lasts until
 * now); epochs never decrease from one activation to the next. Sorts the
 * intervals. Returns how many times an actor moved between nodes. */
size_t tu_actlog_check(tu_actlog *a);

/* The current wall-clock time in ns, as the logs write it. */
unsigned long long tu_realtime_ns(void);

#endif
