/* keel-bench flushes. A replicated write is durable once the primary and
 * every in-sync backup have flushed their logs; on one machine with one
 * disk those flushes are the disk's to order. Whether it runs several
 * at once or one after the other decides much of what replicas cost
 * there, and this measures it directly, without keel in the way: the
 * same record size and the same flush call as the store's log. */
#include "keel-bench-flush.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FL_RECORD 128u
#define FL_FILE (4u << 20) /* written in full first: no block allocation */
#define FL_MAX_FILES 8u

struct flusher {
    pthread_t thread;
    int fd;
    unsigned rounds;
    uint64_t *ns; /* rounds entries */
    int err;      /* errno of the first failure */
};

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static void *flusher_main(void *arg)
{
    struct flusher *f = arg;
    uint8_t rec[FL_RECORD];
    uint64_t off = 0;

    memset(rec, 'k', sizeof rec);
    for (unsigned i = 0; i < f->rounds; i++) {
        uint64_t t0 = mono_ns();

        if (pwrite(f->fd, rec, sizeof rec, (off_t)off) != (ssize_t)sizeof rec ||
            fdatasync(f->fd) != 0) {
            f->err = errno ? errno : EIO;
            return NULL;
        }
        f->ns[i] = mono_ns() - t0;
        off = (off + FL_RECORD) % FL_FILE;
    }
    return NULL;
}

/* A file of FL_FILE bytes, every block written and flushed. */
static int file_make(const char *dir, unsigned i, int *fd)
{
    char path[4200];
    static const uint8_t zeros[64 << 10];

    snprintf(path, sizeof path, "%s/log%u", dir, i);
    *fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (*fd < 0)
        return errno;
    for (uint64_t off = 0; off < FL_FILE; off += sizeof zeros)
        if (pwrite(*fd, zeros, sizeof zeros, (off_t)off) !=
            (ssize_t)sizeof zeros)
            return errno ? errno : ENOSPC;
    return fsync(*fd) != 0 ? errno : 0;
}

int bench_flushes(const char *parent, unsigned nfiles, unsigned rounds,
                  struct flush_figures *out, char *err, size_t errlen)
{
    struct flusher fl[FL_MAX_FILES];
    char dir[4096];
    uint64_t *all = NULL, t0;
    unsigned i, made = 0, started = 0;
    int rc = 0;

    memset(out, 0, sizeof *out);
    memset(fl, 0, sizeof fl);
    if (nfiles == 0 || nfiles > FL_MAX_FILES || rounds == 0) {
        snprintf(err, errlen, "flushes: 1 to %u files", FL_MAX_FILES);
        return -1;
    }
    if ((size_t)snprintf(dir, sizeof dir, "%s/keel-bench-fl-XXXXXX",
                         parent) >= sizeof dir ||
        mkdtemp(dir) == NULL) {
        snprintf(err, errlen, "cannot create a directory in %s: %s", parent,
                 strerror(errno));
        return -1;
    }
    all = calloc((size_t)nfiles * rounds, sizeof *all);
    if (all == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
        goto out;
    }
    for (i = 0; i < nfiles; i++, made++) {
        int e = file_make(dir, i, &fl[i].fd);

        if (e != 0) {
            if (fl[i].fd >= 0)
                made++;
            snprintf(err, errlen, "cannot write a file in %s: %s", dir,
                     strerror(e));
            rc = -1;
            goto out;
        }
        fl[i].rounds = rounds;
        fl[i].ns = all + (size_t)i * rounds;
    }
    /* The threads start a few microseconds apart: nothing next to a
     * flush, and they overlap for all but their first rounds. */
    t0 = mono_ns();
    for (i = 0; i < nfiles; i++, started++)
        if (pthread_create(&fl[i].thread, NULL, flusher_main, &fl[i]) != 0)
            break;
    for (i = 0; i < started; i++)
        pthread_join(fl[i].thread, NULL);
    out->secs = (double)(mono_ns() - t0) / 1e9;
    if (started < nfiles) {
        snprintf(err, errlen, "cannot start a thread");
        rc = -1;
        goto out;
    }
    for (i = 0; i < nfiles; i++) {
        if (fl[i].err != 0) {
            snprintf(err, errlen, "flushing a file in %s: %s", dir,
                     strerror(fl[i].err));
            rc = -1;
            goto out;
        }
    }
    out->files = nfiles;
    out->flushes = nfiles * rounds;
    qsort(all, out->flushes, sizeof *all, cmp_u64);
    out->p50_us = (double)all[out->flushes / 2] / 1000.0;
    out->p99_us = (double)all[(size_t)out->flushes * 99 / 100] / 1000.0;
    out->max_us = (double)all[out->flushes - 1] / 1000.0;
out:
    for (i = 0; i < made; i++) {
        char path[4200];

        close(fl[i].fd);
        snprintf(path, sizeof path, "%s/log%u", dir, i);
        unlink(path);
    }
    rmdir(dir);
    free(all);
    return rc;
}
