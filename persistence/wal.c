/* The store's log and checkpoint file. Formats in wal.h. */
#include "persistence/wal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "persistence/batch_internal.h"

#define WAL_MAGIC 0x4b57414cu  /* "KWAL" */
#define CKPT_MAGIC 0x4b434b50u /* "KCKP" */
#define WAL_HDR 40u
#define WAL_GROUP_HDR 24u
#define CKPT_HDR 48u
/* Slot 1 starts here whatever the page size (LMDB's is at most 64 KiB). */
#define CKPT_SLOT_STRIDE (256u << 10)
/* A record longer than this cannot have been written by us (a batch holds
 * at most a few values of KEEL_MAX_VALUE_LEN); it ends the run. */
#define WAL_REC_MAX (1ull << 36)

static int open_in(const char *dir, const char *name, int *fd)
{
    char *path;

    if (asprintf(&path, "%s/%s", dir, name) < 0)
        return ENOMEM;
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    free(path);
    return *fd < 0 ? errno : 0;
}

/* pwrite (wr) or pread all of it: 0 or an errno. A write that makes no
 * progress is out of room (ENOSPC); a read that finds the file's end is
 * ENODATA. */
static int io_at(int fd, void *buf, size_t len, uint64_t off, int wr)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = wr ? pwrite(fd, p, len, (off_t)off)
                       : pread(fd, p, len, (off_t)off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (n == 0)
            return wr ? ENOSPC : ENODATA;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int write_at(int fd, const void *buf, size_t len, uint64_t off)
{
    return io_at(fd, (void *)buf, len, off, 1);
}

static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
    return io_at(fd, buf, len, off, 0);
}

static int sync_fd(int fd)
{
    return fdatasync(fd) < 0 ? errno : 0;
}

/* ------------------------------------------------------------------ log */

int keel_wal_open(keel_wal *w, const char *dir)
{
    memset(w, 0, sizeof *w);
    return open_in(dir, KEEL_WAL_NAME, &w->fd);
}

void keel_wal_close(keel_wal *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    free(w->rec);
    w->rec = NULL;
    w->cap = w->len = 0;
}

static int rec_reserve(keel_wal *w, size_t need)
{
    size_t ncap;
    uint8_t *p;

    if (need <= w->cap - w->len)
        return 0;
    if (need > SIZE_MAX / 2 - w->len)
        return ENOMEM;
    ncap = w->cap ? w->cap : 4096;
    while (ncap - w->len < need)
        ncap *= 2;
    p = realloc(w->rec, ncap);
    if (p == NULL)
        return ENOMEM;
    w->rec = p;
    w->cap = ncap;
    return 0;
}

void keel_wal_rec_begin(keel_wal *w)
{
    w->len = 0;
    w->ngroups = 0;
    if (rec_reserve(w, WAL_HDR) == 0)
        w->len = WAL_HDR; /* else keel_wal_rec_group fails */
}

int keel_wal_rec_group(keel_wal *w, const keel_batch *b, size_t group)
{
    const struct batch_group *g = &b->groups[group];
    size_t cpad = (g->cap_len + 7u) & ~(size_t)7u;
    size_t ops_len = g->ops_end - g->ops_off;
    uint32_t u32;
    uint64_t u64;
    uint8_t *p;
    int rc;

    if (w->len < WAL_HDR)
        return ENOMEM;
    rc = rec_reserve(w, WAL_GROUP_HDR + cpad + ops_len);
    if (rc != 0)
        return rc;
    p = w->rec + w->len;
    u32 = (uint32_t)g->cap_len;
    memcpy(p, &u32, 4);
    u32 = g->shard;
    memcpy(p + 4, &u32, 4);
    memcpy(p + 8, &g->epoch, 8);
    u64 = ops_len;
    memcpy(p + 16, &u64, 8);
    p += WAL_GROUP_HDR;
    memset(p, 0, cpad);
    if (g->cap_len > 0)
        memcpy(p, b->buf + g->cap_off, g->cap_len);
    p += cpad;
    if (ops_len > 0)
        memcpy(p, b->buf + g->ops_off, ops_len);
    w->len += WAL_GROUP_HDR + cpad + ops_len;
    w->ngroups++;
    return 0;
}

int keel_wal_rec_append(keel_wal *w, uint64_t lsn)
{
    uint32_t magic = WAL_MAGIC;
    uint64_t len, h;

    if (w->len < WAL_HDR)
        return ENOMEM;
    len = w->len - WAL_HDR;
    memcpy(w->rec + 8, &magic, 4);
    memcpy(w->rec + 12, &w->ngroups, 4);
    memcpy(w->rec + 16, &lsn, 8);
    memcpy(w->rec + 24, &len, 8);
    memcpy(w->rec + 32, &w->gen, 8);
    h = XXH3_64bits(w->rec + 8, w->len - 8);
    memcpy(w->rec, &h, 8);
    return write_at(w->fd, w->rec, w->len, w->pos);
}

void keel_wal_rec_done(keel_wal *w)
{
    w->pos += w->len;
}

int keel_wal_rec_cancel(keel_wal *w)
{
    static const uint8_t zeros[WAL_HDR];
    int rc = write_at(w->fd, zeros, sizeof zeros, w->pos);

    return rc != 0 ? rc : sync_fd(w->fd);
}

int keel_wal_sync(keel_wal *w)
{
    return sync_fd(w->fd);
}

void keel_wal_restart(keel_wal *w)
{
    w->pos = 0;
}

int keel_wal_clear(keel_wal *w)
{
    w->pos = 0;
    return ftruncate(w->fd, 0) < 0 || fsync(w->fd) < 0 ? errno : 0;
}

/* Rebuilds a record's groups into b. EILSEQ when they do not parse. */
static int rec_to_batch(const uint8_t *p, uint64_t len, uint32_t ngroups,
                        keel_batch *b)
{
    const uint8_t *end = p + len;
    char cap[256];
    uint32_t i;
    int rc;

    keel_batch_reset(b);
    for (i = 0; i < ngroups; i++) {
        uint32_t clen, shard;
        uint64_t epoch, ops_len;
        const uint8_t *op_end;

        if ((uint64_t)(end - p) < WAL_GROUP_HDR)
            return EILSEQ;
        memcpy(&clen, p, 4);
        memcpy(&shard, p + 4, 4);
        memcpy(&epoch, p + 8, 8);
        memcpy(&ops_len, p + 16, 8);
        p += WAL_GROUP_HDR;
        if (clen > 255 || shard > 0xffff ||
            (uint64_t)(end - p) < ((clen + 7u) & ~7u))
            return EILSEQ;
        memcpy(cap, p, clen);
        cap[clen] = '\0';
        p += (clen + 7u) & ~7u;
        if ((uint64_t)(end - p) < ops_len)
            return EILSEQ;
        rc = keel_batch_begin_group(b, cap, (uint16_t)shard, epoch, NULL);
        if (rc != 0)
            return rc == KEEL_ENOMEM ? ENOMEM : EILSEQ;
        op_end = p + ops_len;
        while (p < op_end) {
            struct batch_op op;
            const uint8_t *key;
            size_t size;

            if ((size_t)(op_end - p) < sizeof op)
                return EILSEQ;
            memcpy(&op, p, sizeof op);
            if (op.klen > KEEL_KEY_MAX ||
                op.dlen > (uint64_t)(op_end - p))
                return EILSEQ;
            size = batch_op_size(&op);
            if (size > (size_t)(op_end - p))
                return EILSEQ;
            key = p + sizeof op;
            switch (op.kind) {
            case BATCH_OP_PUT:
                rc = keel_batch_put(b, key, op.klen, op.version,
                                    key + op.klen, op.dlen);
                break;
            case BATCH_OP_DEL:
                rc = keel_batch_del(b, key, op.klen);
                break;
            case BATCH_OP_DEL_PREFIX:
                rc = keel_batch_del_prefix(b, key, op.klen);
                break;
            case BATCH_OP_DEL_UNIT:
                rc = op.klen == 2 && key[0] == (uint8_t)(shard >> 8) &&
                             key[1] == (uint8_t)shard
                         ? keel_batch_del_unit(b, op.version)
                         : KEEL_EINVAL;
                break;
            case BATCH_OP_HANDOFF: {
                char to[KEEL_HANDOFF_NAME_MAX + 1];
                if (op.klen > KEEL_HANDOFF_NAME_MAX)
                    return EILSEQ;
                memcpy(to, key, op.klen);
                to[op.klen] = '\0';
                rc = keel_batch_handoff(b, op.version, to);
                break;
            }
            default:
                return EILSEQ;
            }
            if (rc != 0)
                return rc == KEEL_ENOMEM ? ENOMEM : EILSEQ;
            p += size;
        }
    }
    return p == end ? 0 : EILSEQ;
}

int keel_wal_replay(keel_wal *w, uint64_t after, uint64_t off, uint64_t gen,
                    keel_batch *scratch, keel_wal_replay_fn fn, void *data,
                    uint64_t *last)
{
    uint64_t pos = off, want = after + 1, size;
    uint8_t hdr[WAL_HDR];
    struct stat st;
    int rc = 0;

    *last = after;
    w->pos = off;
    if (fstat(w->fd, &st) < 0)
        return errno;
    size = (uint64_t)st.st_size;
    for (;;) {
        uint64_t h, lsn, len, rgen;
        uint32_t magic, ngroups;

        rc = read_at(w->fd, hdr, sizeof hdr, pos);
        if (rc == ENODATA)
            return 0;
        if (rc != 0)
            return rc;
        memcpy(&h, hdr, 8);
        memcpy(&magic, hdr + 8, 4);
        memcpy(&ngroups, hdr + 12, 4);
        memcpy(&lsn, hdr + 16, 8);
        memcpy(&len, hdr + 24, 8);
        memcpy(&rgen, hdr + 32, 8);
        /* A header torn on a page boundary may pair a fresh lsn with a
         * stale length: the length must fit the file before anything is
         * allocated for it. */
        if (magic != WAL_MAGIC || lsn != want || rgen != gen ||
            len > size - pos - WAL_HDR)
            return 0;
        w->len = 0;
        rc = rec_reserve(w, WAL_HDR + len);
        if (rc != 0)
            return rc;
        memcpy(w->rec, hdr, WAL_HDR);
        rc = read_at(w->fd, w->rec + WAL_HDR, len, pos + WAL_HDR);
        if (rc == ENODATA)
            return 0;
        if (rc != 0)
            return rc;
        if (XXH3_64bits(w->rec + 8, WAL_HDR - 8 + len) != h)
            return 0;
        rc = rec_to_batch(w->rec + WAL_HDR, len, ngroups, scratch);
        if (rc != 0)
            return rc;
        rc = fn(scratch, lsn, pos, data);
        if (rc != 0)
            return rc;
        pos += WAL_HDR + len;
        w->pos = pos;
        *last = lsn;
        want++;
    }
}

/* ----------------------------------------------------------- checkpoint */

/* Reads the slot at off of fd into out (fd not set): 0 with out->have
 * set when the slot is valid, 0 with it clear when it is not, or an
 * errno. */
static int slot_read(int fd, uint64_t off, keel_ckpt *out)
{
    uint8_t hdr[CKPT_HDR];
    uint8_t *buf;
    uint64_t h;
    uint32_t magic, ps;
    int rc;

    memset(out, 0, sizeof *out);
    out->fd = -1;
    rc = read_at(fd, hdr, sizeof hdr, off);
    if (rc != 0)
        return rc == ENODATA ? 0 : rc;
    memcpy(&h, hdr, 8);
    memcpy(&magic, hdr + 8, 4);
    memcpy(&ps, hdr + 12, 4);
    if (magic != CKPT_MAGIC || ps < 512 || ps > 65536 || (ps & (ps - 1)))
        return 0;
    buf = malloc(CKPT_HDR + 2ull * ps);
    if (buf == NULL)
        return ENOMEM;
    memcpy(buf, hdr, CKPT_HDR);
    rc = read_at(fd, buf + CKPT_HDR, 2ull * ps, off + CKPT_HDR);
    if (rc != 0 || XXH3_64bits(buf + 8, CKPT_HDR - 8 + 2ull * ps) != h) {
        free(buf);
        return rc == ENODATA ? 0 : rc;
    }
    memcpy(&out->seq, hdr + 16, 8);
    memcpy(&out->lsn, hdr + 24, 8);
    memcpy(&out->wal_off, hdr + 32, 8);
    memcpy(&out->wal_gen, hdr + 40, 8);
    memmove(buf, buf + CKPT_HDR, 2ull * ps);
    out->psize = ps;
    out->pages = buf;
    out->have = 1;
    return 0;
}

int keel_ckpt_open(keel_ckpt *c, const char *dir)
{
    keel_ckpt s0, s1, *best;
    int rc;

    memset(c, 0, sizeof *c);
    rc = open_in(dir, KEEL_CKPT_NAME, &c->fd);
    if (rc != 0)
        return rc;
    rc = slot_read(c->fd, 0, &s0);
    if (rc == 0)
        rc = slot_read(c->fd, CKPT_SLOT_STRIDE, &s1);
    else
        memset(&s1, 0, sizeof s1);
    if (rc != 0) {
        free(s0.pages);
        free(s1.pages);
        close(c->fd);
        c->fd = -1;
        return rc;
    }
    best = s1.have && (!s0.have || s1.seq > s0.seq) ? &s1 : &s0;
    free(best == &s0 ? s1.pages : s0.pages);
    best->fd = c->fd;
    *c = *best; /* no slot valid: have 0, pages NULL */
    return 0;
}

int keel_ckpt_clear(keel_ckpt *c)
{
    if (ftruncate(c->fd, 0) < 0 || fsync(c->fd) < 0)
        return errno;
    c->have = 0;
    return 0;
}

void keel_ckpt_close(keel_ckpt *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->pages);
    c->pages = NULL;
}

int keel_ckpt_write(keel_ckpt *c, uint64_t lsn, uint64_t wal_off,
                    uint64_t wal_gen, uint32_t psize, const uint8_t *pages)
{
    uint64_t seq = c->seq + 1, h, off;
    uint32_t magic = CKPT_MAGIC;
    size_t n = CKPT_HDR + 2u * (size_t)psize;
    uint8_t *buf = malloc(n), *keep;
    int rc;

    if (buf == NULL)
        return ENOMEM;
    keep = malloc(2u * (size_t)psize);
    if (keep == NULL) {
        free(buf);
        return ENOMEM;
    }
    memcpy(buf + 8, &magic, 4);
    memcpy(buf + 12, &psize, 4);
    memcpy(buf + 16, &seq, 8);
    memcpy(buf + 24, &lsn, 8);
    memcpy(buf + 32, &wal_off, 8);
    memcpy(buf + 40, &wal_gen, 8);
    memcpy(buf + CKPT_HDR, pages, 2u * (size_t)psize);
    h = XXH3_64bits(buf + 8, n - 8);
    memcpy(buf, &h, 8);
    /* Slot seq % 2: the newest valid slot is never the one written. */
    off = (seq & 1) ? CKPT_SLOT_STRIDE : 0;
    rc = write_at(c->fd, buf, n, off);
    if (rc == 0)
        rc = sync_fd(c->fd);
    free(buf);
    if (rc != 0) {
        free(keep);
        return rc;
    }
    memcpy(keep, pages, 2u * (size_t)psize);
    free(c->pages);
    c->pages = keep;
    c->seq = seq;
    c->lsn = lsn;
    c->wal_off = wal_off;
    c->wal_gen = wal_gen;
    c->psize = psize;
    c->have = 1;
    return 0;
}
