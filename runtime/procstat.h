/* The process's own figures and its data directory's disk, for /metrics:
 * what an operator watches next to keel's counters (memory, descriptors,
 * CPU, when it started, how full its disk is). Read from /proc and the
 * file system on each scrape; any thread may call it. */
#ifndef KEEL_RUNTIME_PROCSTAT_H
#define KEEL_RUNTIME_PROCSTAT_H

#include <stdint.h>

typedef struct keel_procstat {
    /* Each have_* says whether the figure could be read (a figure that
     * could not is left out of /metrics, not shown as 0). */
    int have_rss, have_fds, have_max_fds, have_start, have_cpu, have_disk,
        have_dir;
    uint64_t rss_bytes;     /* resident memory */
    uint64_t open_fds;      /* descriptors open now */
    uint64_t max_fds;       /* RLIMIT_NOFILE's soft limit */
    double start_time_s;    /* Unix time the process started */
    double cpu_s;           /* user + system CPU time used */
    uint64_t disk_free;     /* bytes free to this user on the data dir's */
    uint64_t disk_size;     /* ... file system, and its size */
    uint64_t dir_bytes;     /* bytes the data directory's files occupy */
} keel_procstat;

/* Samples every figure; data_dir may be NULL (no disk figures). */
void keel__procstat(const char *data_dir, keel_procstat *out);

#endif
