/* keel-bench flushes: how the disk under a data directory serves log
 * flushes, one file alone and several files at once. */
#ifndef KEEL_TOOLS_BENCH_FLUSH_H
#define KEEL_TOOLS_BENCH_FLUSH_H

#include <stddef.h>

struct flush_figures {
    unsigned files;     /* flushed at once, one thread each */
    unsigned flushes;   /* in all */
    double secs;        /* wall time of the whole run */
    double p50_us, p99_us, max_us;
};

/* In a new directory under parent (removed afterwards): each of nfiles
 * threads appends a 128-byte record to a file of its own, written in
 * full beforehand, and flushes it (fdatasync), rounds times, as a node's
 * store does for a lone durable write. 0, or -1 with err set. */
int bench_flushes(const char *parent, unsigned nfiles, unsigned rounds,
                  struct flush_figures *out, char *err, size_t errlen);

#endif
