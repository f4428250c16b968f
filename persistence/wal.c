/* The store's log and checkpoint file. Formats in wal.h. */
#include "persistence/wal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "persistence/batch_internal.h"

#define WAL_MAGIC_V3 0x4b574c33u /* "KWL3": a hash of the header itself */
#define WAL_MAGIC 0x4b574c32u  /* "KWL2": logs of file version 1 */
#define WAL_MAGIC_V1 0x4b57414cu /* "KWAL": no synced field, no header */
#define CKPT_MAGIC 0x4b434b50u /* "KCKP" */
#define WAL_HDR_V3 KEEL_WAL_REC_HDR
#define WAL_HDR 48u
#define WAL_HDR_V1 40u
/* The log file's version: 2 writes records of WAL_MAGIC_V3. */
#define WAL_FILE_VERSION 2u
/* The header hash's seed is the log's, xor this: not the whole record's
 * hash of an empty record under another name. */
#define WAL_HHASH_SALT KEEL_WAL_HHASH_SALT
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

#define WAL_FILE_MAGIC 0x4b574c48u /* "KWLH": file version 1 */
/* File version 2 and later. A keel that knows only version 1 takes this
 * header for a damaged one and refuses to open the store, rather than
 * read no record of the log and drop what it held. */
#define WAL_FILE_MAGIC_V2 0x4b574c49u /* "KWLI" */
#define WAL_START KEEL_WAL_HEADER_BYTES
/* The log is written ahead of its records with zeros, this much at a
 * time (see keel_wal_rec_append). */
#define WAL_AHEAD (1u << 20)

/* Writes a header with a new seed over the start of the file and flushes
 * it: records may then begin at WAL_START, where the next one goes. */
static int header_write(keel_wal *w)
{
    uint8_t hdr[WAL_START];
    uint32_t magic = WAL_FILE_MAGIC_V2, version = WAL_FILE_VERSION;
    uint64_t seed, h;
    int rc;

    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
        return errno ? errno : EIO;
    memset(hdr, 0, sizeof hdr);
    memcpy(hdr, &magic, 4);
    memcpy(hdr + 4, &version, 4);
    memcpy(hdr + 8, &seed, 8);
    h = XXH3_64bits(hdr, 16);
    memcpy(hdr + 16, &h, 8);
    /* Over a file that has its header's room already, the 24 bytes that
     * say anything, in one sector: a crash leaves the old header or the
     * new one, not a torn one the store would refuse to open over. (The
     * rest of the room is never read.) */
    rc = write_at(w->fd, hdr, w->end >= WAL_START ? 24 : sizeof hdr, 0);
    if (rc == 0)
        rc = sync_fd(w->fd);
    if (rc != 0)
        return rc;
    w->seed = seed;
    w->version = WAL_FILE_VERSION;
    w->start = w->pos = WAL_START;
    if (w->end < WAL_START)
        w->end = WAL_START;
    w->legacy = w->bad_header = 0;
    return 0;
}

/* The size of the header of the records this log writes. */
static size_t hdr_size(const keel_wal *w)
{
    return w->version >= 2 ? WAL_HDR_V3 : WAL_HDR;
}

/* The hash of a record header's fields (the 40 bytes from its magic), for
 * WAL_MAGIC_V3: checked before anything the header claims is read. */
static uint64_t hdr_hash(const keel_wal *w, const uint8_t *p)
{
    return XXH3_64bits_withSeed(p + 8, 40, w->seed ^ WAL_HHASH_SALT);
}

int keel_wal_open(keel_wal *w, const char *dir)
{
    uint8_t hdr[24];
    uint32_t magic;
    struct stat st;
    uint64_t h;
    int rc;

    memset(w, 0, sizeof *w);
    rc = open_in(dir, KEEL_WAL_NAME, &w->fd);
    if (rc != 0)
        return rc;
    if (fstat(w->fd, &st) < 0)
        return errno;
    w->end = (uint64_t)st.st_size;
    if (st.st_size == 0)
        return header_write(w);
    if ((size_t)st.st_size >= sizeof hdr &&
        (rc = read_at(w->fd, hdr, sizeof hdr, 0)) != 0)
        return rc;
    if ((size_t)st.st_size >= sizeof hdr) {
        memcpy(&magic, hdr, 4);
        memcpy(&h, hdr + 16, 8);
        if ((magic == WAL_FILE_MAGIC || magic == WAL_FILE_MAGIC_V2) &&
            XXH3_64bits(hdr, 16) == h) {
            memcpy(&w->seed, hdr + 8, 8);
            memcpy(&w->version, hdr + 4, 4);
            /* The magic says which records it may hold, whatever the
             * version field says. */
            if (magic == WAL_FILE_MAGIC)
                w->version = 1;
            else if (w->version < WAL_FILE_VERSION)
                w->version = WAL_FILE_VERSION;
            w->start = w->pos = WAL_START;
            return 0;
        }
        memcpy(&magic, hdr + 8, 4);
        if (magic == WAL_MAGIC_V1) {
            w->legacy = 1; /* records from 0, unseeded */
            return 0;
        }
    }
    /* No room for a record past the header: the header's own write was
     * cut short when the file was made, before anything counted. */
    if ((uint64_t)st.st_size <= WAL_START)
        return header_write(w);
    w->bad_header = 1;
    w->start = w->pos = WAL_START;
    return 0;
}

uint64_t keel_wal_cut(const char *dir)
{
    uint8_t head[12];
    struct stat st;
    char *path;
    ssize_t got = 0;
    int fd;

    if (asprintf(&path, "%s/%s", dir, KEEL_WAL_NAME) < 0)
        return 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return errno == ENOENT ? 1 : 0; /* gone: cut to nothing */
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_size >= WAL_START) {
        close(fd);
        return 0;
    }
    if (st.st_size >= (off_t)sizeof head)
        got = pread(fd, head, sizeof head, 0);
    close(fd);
    if (got == (ssize_t)sizeof head) {
        uint32_t magic;
        memcpy(&magic, head + 8, 4);
        if (magic == WAL_MAGIC_V1)
            return 0; /* records of the old format from offset 0 */
    }
    return (uint64_t)st.st_size + 1;
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
    if (rec_reserve(w, hdr_size(w)) == 0)
        w->len = hdr_size(w); /* else keel_wal_rec_group fails */
}

int keel_wal_rec_group(keel_wal *w, const keel_batch *b, size_t group)
{
    const struct batch_group *g = &b->groups[group];
    size_t cpad = (g->cap_len + 7u) & ~(size_t)7u;
    size_t ops_len = g->ops_end - g->ops_off;
    const uint8_t *ops = b->buf + g->ops_off;
    /* A check (the group's only op) is logged as what it did: nothing
     * (the group still raises the fence when replayed), or the deletion
     * of the unit. So a replay does not depend on the digest, and the log
     * holds only kinds every version reads. */
    struct {
        struct batch_op op;
        uint8_t key[8];
    } del;
    uint32_t u32;
    uint64_t u64;
    uint8_t *p;
    int rc;

    if (g->nops == 1 && ops_len >= sizeof del.op &&
        batch_op_at(b, g->ops_off)->kind == BATCH_OP_CHECK_UNIT) {
        const struct batch_op *op = batch_op_at(b, g->ops_off);
        memset(&del, 0, sizeof del);
        del.op.kind = BATCH_OP_DEL_UNIT;
        del.op.klen = 2;
        memcpy(del.key, batch_op_key(op), 2);
        ops = (const uint8_t *)&del;
        ops_len = g->differs ? batch_op_size(&del.op) : 0;
    }

    if (w->len < hdr_size(w))
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
        memcpy(p, ops, ops_len);
    w->len += WAL_GROUP_HDR + cpad + ops_len;
    w->ngroups++;
    return 0;
}

/* Writes zeros from the file's end up to past need. A flush of a record
 * that makes the file longer also writes the file's new size to the file
 * system's journal, which on ext4 and XFS is a second write and a second
 * cache flush, shared by every file of the file system; a record written
 * over bytes the file already holds needs neither. On a disk too full
 * for the zeros, they are taken back (the record then lengthens the file
 * as before, or reports the full disk itself), and the log does not
 * write ahead again until it restarts. */
static void write_ahead(keel_wal *w, uint64_t need)
{
    static const uint8_t zeros[64u << 10];
    uint64_t to = (need + WAL_AHEAD) & ~(uint64_t)(WAL_AHEAD - 1);
    uint64_t at = w->end;

    while (at < to) {
        uint64_t n = to - at < sizeof zeros ? to - at : sizeof zeros;

        if (write_at(w->fd, zeros, (size_t)n, at) != 0) {
            /* If they cannot be taken back, they stay: zeros after the
             * last record are the log's end. */
            if (ftruncate(w->fd, (off_t)w->end) < 0)
                w->end = at;
            w->no_ahead = 1;
            return;
        }
        at += n;
    }
    w->end = to;
}

/* Fills the header of the record at p (this log's format, its len bytes
 * of groups right after the header) and seals it: its own hash, when
 * the format has one, then the record's. Returns the header's size. */
static size_t rec_seal(const keel_wal *w, uint8_t *p, uint32_t ngroups,
                       uint64_t lsn, uint64_t len, uint64_t gen,
                       uint64_t synced)
{
    size_t hs = hdr_size(w);
    uint32_t magic = hs == WAL_HDR_V3 ? WAL_MAGIC_V3 : WAL_MAGIC;
    uint64_t h;

    memcpy(p + 8, &magic, 4);
    memcpy(p + 12, &ngroups, 4);
    memcpy(p + 16, &lsn, 8);
    memcpy(p + 24, &len, 8);
    memcpy(p + 32, &gen, 8);
    memcpy(p + 40, &synced, 8);
    if (hs == WAL_HDR_V3) {
        h = hdr_hash(w, p);
        memcpy(p + 48, &h, 8);
    }
    h = XXH3_64bits_withSeed(p + 8, hs - 8 + len, w->seed);
    memcpy(p, &h, 8);
    return hs;
}

int keel_wal_rec_append(keel_wal *w, uint64_t lsn, uint64_t synced)
{
    int rc;

    if (w->len < hdr_size(w))
        return ENOMEM;
    if (w->pos + w->len > w->end && !w->no_ahead)
        write_ahead(w, w->pos + w->len);
    rec_seal(w, w->rec, w->ngroups, lsn, w->len - hdr_size(w), w->gen,
             synced);
    rc = write_at(w->fd, w->rec, w->len, w->pos);
    if (rc == 0 && w->pos + w->len > w->end)
        w->end = w->pos + w->len;
    return rc;
}

void keel_wal_rec_done(keel_wal *w)
{
    w->pos += w->len;
}

int keel_wal_rec_cancel(keel_wal *w)
{
    static const uint8_t zeros[WAL_HDR_V3];
    int rc = write_at(w->fd, zeros, hdr_size(w), w->pos);

    return rc != 0 ? rc : sync_fd(w->fd);
}

int keel_wal_sync(keel_wal *w)
{
    return sync_fd(w->fd);
}

int keel_wal_restart(keel_wal *w)
{
    int rc = 0;

    /* What the log held is of older generations now: the start of a log
     * of the previous format can take a header, and a log of file version
     * 1 a new one (a new seed: its records are nobody's now), so that it
     * writes records whose header is hashed too. A header that could not
     * be written whole and flushed may still be on the disk: records
     * appended after it in the old format would be nobody's at the next
     * open, so the caller must stop (the checkpoint before holds all). */
    if (w->legacy || (!w->bad_header && w->version < WAL_FILE_VERSION))
        rc = header_write(w);
    w->pos = w->start;
    w->no_ahead = 0;
    return rc;
}

int keel_wal_clear(keel_wal *w)
{
    int rc;

    /* A new header over the old one, then the rest cut off: a crash in
     * between leaves a header (old or new) and records no checkpoint
     * replays (another seed, or an older generation), never a file
     * shorter than its header, which the store takes for a log cut by
     * something else (keel_wal_cut). */
    w->no_ahead = 0;
    rc = header_write(w);
    if (rc != 0)
        return rc;
    if (ftruncate(w->fd, (off_t)WAL_START) < 0)
        return errno;
    w->pos = w->end = WAL_START;
    return sync_fd(w->fd);
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

/* A record header as read from the file. */
struct rec_hdr {
    uint64_t hash, lsn, len, gen, synced;
    uint32_t ngroups;
    uint32_t size; /* of the header: WAL_HDR, or WAL_HDR_V1 */
};

/* Decodes the header at p (avail bytes): 0 when it is not the header of
 * a record this log can hold. A log of file version 2 holds records of
 * WAL_MAGIC_V3 only, whose header hash must match (so bytes of a stored
 * value shaped like a header are refused before the length they claim
 * is read); one of version 1, of WAL_MAGIC; a log without a header, of
 * WAL_MAGIC_V1, unseeded. A stored value may hold anything: a magic of
 * another kind than the log's is never taken for a record. */
static int hdr_decode(const keel_wal *w, const uint8_t *p, size_t avail,
                      struct rec_hdr *h)
{
    uint32_t magic;
    uint64_t hh;

    if (avail < WAL_HDR_V1)
        return 0;
    memcpy(&magic, p + 8, 4);
    if (w->legacy && magic == WAL_MAGIC_V1) {
        h->size = WAL_HDR_V1;
        h->synced = 0;
    } else if (w->legacy) {
        /* Marks (keel_wal_mark) made while replaying such a log, before
         * its first restart gives it a header: of "KWL2", unseeded, as
         * its own records are. */
        if (magic != WAL_MAGIC || avail < WAL_HDR)
            return 0;
        h->size = WAL_HDR;
        memcpy(&h->synced, p + 40, 8);
    } else if (w->version >= 2) {
        if (magic != WAL_MAGIC_V3 || avail < WAL_HDR_V3)
            return 0;
        memcpy(&hh, p + 48, 8);
        if (hh != hdr_hash(w, p))
            return 0;
        h->size = WAL_HDR_V3;
        memcpy(&h->synced, p + 40, 8);
    } else {
        if (magic != WAL_MAGIC || avail < WAL_HDR)
            return 0;
        h->size = WAL_HDR;
        memcpy(&h->synced, p + 40, 8);
    }
    memcpy(&h->hash, p, 8);
    memcpy(&h->ngroups, p + 12, 4);
    memcpy(&h->lsn, p + 16, 8);
    memcpy(&h->len, p + 24, 8);
    memcpy(&h->gen, p + 32, 8);
    return 1;
}

/* Reads the record at pos into w->rec and checks its hash: 1 when it is
 * intact (*h filled), 0 when it is not a whole record, or an errno
 * (negated). Only records whose generation is in [gen_lo, gen_hi] and lsn
 * at least lsn_lo are read past their header. */
static int rec_read(keel_wal *w, uint64_t pos, uint64_t size, uint64_t gen_lo,
                    uint64_t gen_hi, uint64_t lsn_lo, struct rec_hdr *h)
{
    uint8_t hdr[WAL_HDR_V3];
    size_t avail;
    int rc;

    if (pos >= size || size - pos < WAL_HDR_V1)
        return 0;
    avail = size - pos < WAL_HDR_V3 ? (size_t)(size - pos) : WAL_HDR_V3;
    rc = read_at(w->fd, hdr, avail, pos);
    if (rc != 0)
        return rc == ENODATA ? 0 : -rc;
    if (!hdr_decode(w, hdr, avail, h) || h->gen < gen_lo ||
        h->gen > gen_hi || h->lsn < lsn_lo)
        return 0;
    /* A header torn on a page boundary may pair a fresh lsn with a stale
     * length: the length must fit the file before anything is allocated
     * for it. */
    if (h->len > size - pos - h->size || h->len > WAL_REC_MAX)
        return 0;
    w->len = 0;
    rc = rec_reserve(w, h->size + h->len);
    if (rc != 0)
        return -rc;
    w->body_bytes += h->len;
    memcpy(w->rec, hdr, h->size);
    rc = read_at(w->fd, w->rec + h->size, h->len, pos + h->size);
    if (rc != 0)
        return rc == ENODATA ? 0 : -rc;
    return XXH3_64bits_withSeed(w->rec + 8, h->size - 8 + h->len,
                                h->size == WAL_HDR_V1 ? 0 : w->seed) ==
           h->hash;
}

/* What a look through the file for intact records found. */
struct scan_found {
    uint64_t count;
    uint64_t first_off;
    uint64_t end_off; /* where the last found ends */
    uint64_t lsn_lo, lsn_hi;
    uint64_t synced_max;
};

#define SCAN_CHUNK (1u << 20)

/* Looks at every byte offset from `from` to the file's end for an intact
 * record within the bounds rec_read takes; stops at the first one when
 * `first`. A record found is skipped whole, so that bytes inside it (a
 * stored value may hold anything) are never taken for records. 0 or an
 * errno (negated). */
static int scan(keel_wal *w, uint64_t from, uint64_t size, uint64_t gen_lo,
                uint64_t gen_hi, uint64_t lsn_lo, int first,
                struct scan_found *out)
{
    static const uint8_t m2[4] = {0x32, 0x4c, 0x57, 0x4b};
    static const uint8_t m1[4] = {0x4c, 0x41, 0x57, 0x4b};
    static const uint8_t m3[4] = {0x33, 0x4c, 0x57, 0x4b};
    /* The magic this log's records have (hdr_decode): a log without a
     * header has two, its own and its marks'. */
    const uint8_t *m = w->legacy ? m1 : w->version >= 2 ? m3 : m2;
    const uint8_t *mb = w->legacy ? m2 : m;
    uint8_t *buf = malloc(SCAN_CHUNK);
    uint64_t base = from, resume = 0;
    int rc = 0;

    memset(out, 0, sizeof *out);
    if (buf == NULL)
        return -ENOMEM;
    /* Magic values are written in host order: match the bytes as
     * written. */
    {
        uint32_t probe = WAL_MAGIC;
        uint8_t b[4];

        memcpy(b, &probe, 4);
        if (memcmp(b, m2, 4) != 0) {
            free(buf);
            return -ENOTSUP; /* the file's byte order is not handled */
        }
    }
    while (base < size && rc == 0) {
        size_t n = size - base < SCAN_CHUNK ? (size_t)(size - base)
                                            : SCAN_CHUNK;
        /* The next chunk overlaps this one by a header's magic and what
         * precedes it, unless this one reaches the end. */
        uint64_t next = base + n >= size ? size : base + n - 16;

        rc = read_at(w->fd, buf, n, base);
        if (rc != 0) {
            rc = rc == ENODATA ? 0 : -rc;
            break;
        }
        for (size_t i = 0; i + 12 <= n; i++) {
            struct rec_hdr h;
            uint64_t at;
            int r;

            if ((buf[i + 8] != m[0] || memcmp(buf + i + 8, m, 4) != 0) &&
                (buf[i + 8] != mb[0] || memcmp(buf + i + 8, mb, 4) != 0))
                continue;
            at = base + i;
            if (at < resume)
                continue; /* inside a record found */
            /* The header straight from the chunk where it lies whole in
             * it: most hits are stale records, or bytes of values. */
            if (i + WAL_HDR_V3 <= n &&
                (!hdr_decode(w, buf + i, WAL_HDR_V3, &h) || h.gen < gen_lo ||
                 h.gen > gen_hi || h.lsn < lsn_lo))
                continue;
            r = rec_read(w, at, size, gen_lo, gen_hi, lsn_lo, &h);
            if (r < 0) {
                rc = r;
                break;
            }
            if (r == 0)
                continue;
            if (out->count == 0) {
                out->first_off = at;
                out->lsn_lo = out->lsn_hi = h.lsn;
            }
            out->count++;
            if (h.lsn < out->lsn_lo)
                out->lsn_lo = h.lsn;
            if (h.lsn > out->lsn_hi)
                out->lsn_hi = h.lsn;
            if (h.synced > out->synced_max)
                out->synced_max = h.synced;
            if (first)
                goto done;
            /* On past the record: bytes inside it are its own. */
            resume = at + h.size + h.len;
            out->end_off = resume;
        }
        if (rc != 0)
            break;
        if (resume > next)
            next = resume;
        if (next <= base)
            next = base + 1;
        base = next;
    }
done:
    free(buf);
    return rc;
}

int keel_wal_replay(keel_wal *w, uint64_t after, uint64_t off, uint64_t gen,
                    keel_batch *scratch, keel_wal_replay_fn fn, void *data,
                    uint64_t *last, keel_wal_end *end)
{
    uint64_t pos = off, want = after + 1, size;
    struct scan_found later;
    struct rec_hdr h;
    struct stat st;
    int rc = 0, intact;

    *last = after;
    memset(end, 0, sizeof *end);
    if (off == 0)
        pos = off = w->start;
    w->pos = off;
    if (fstat(w->fd, &st) < 0)
        return errno;
    size = (uint64_t)st.st_size;
    for (;;) {
        intact = rec_read(w, pos, size, gen, gen, want, &h);
        if (intact < 0)
            return -intact;
        if (intact == 0 || h.lsn != want)
            break;
        rc = rec_to_batch(w->rec + h.size, h.len, h.ngroups, scratch);
        if (rc != 0)
            return rc;
        rc = fn(scratch, h.lsn, pos, data);
        if (rc != 0)
            return rc;
        pos += h.size + h.len;
        w->pos = pos;
        *last = h.lsn;
        want++;
    }

    /* How the run ended. Records of the run further on (from pos itself:
     * an intact record there with a later lsn means the one expected was
     * lost) mean the bytes at pos were once one of its records. */
    end->off = pos;
    end->lsn = want;
    end->bytes = size > pos ? size - pos : 0;
    if (pos >= size)
        return 0;
    rc = scan(w, pos, size, gen, gen, want, 0, &later);
    if (rc < 0)
        return -rc;
    end->later = later.count;
    end->later_first = later.first_off;
    end->later_lo = later.lsn_lo;
    end->later_hi = later.lsn_hi;
    end->later_end = later.end_off;
    end->vouched = later.synced_max;
    if (later.count > 0 && later.synced_max >= want) {
        end->kind = KEEL_WAL_END_DAMAGED;
    } else if (later.count > 0) {
        end->kind = KEEL_WAL_END_TORN;
    } else {
        /* Nothing after: a record of the run cut short or failing its
         * check is a torn tail; anything else is the end. */
        uint8_t hdr[WAL_HDR_V3];
        size_t avail = end->bytes < WAL_HDR_V3 ? (size_t)end->bytes
                                               : WAL_HDR_V3;

        rc = read_at(w->fd, hdr, avail, pos);
        if (rc != 0 && rc != ENODATA)
            return rc;
        if (rc == 0 && hdr_decode(w, hdr, avail, &h) && h.gen == gen &&
            h.lsn == want)
            end->kind = KEEL_WAL_END_TORN;
    }
    return 0;
}

int keel_wal_newer_gen(keel_wal *w, uint64_t gen, uint64_t *off)
{
    struct scan_found f;
    struct stat st;
    int rc;

    if (fstat(w->fd, &st) < 0)
        return -errno;
    if (gen == UINT64_MAX)
        return 0;
    rc = scan(w, w->start, (uint64_t)st.st_size, gen + 1, UINT64_MAX, 0, 1,
              &f);
    if (rc < 0)
        return rc;
    if (f.count > 0)
        *off = f.first_off;
    return f.count > 0;
}

int keel_wal_mark(keel_wal *w, uint64_t gen)
{
    uint8_t rec[WAL_HDR_V3];
    struct stat st;
    size_t hs;
    int rc;

    if (fstat(w->fd, &st) < 0)
        return errno;
    hs = rec_seal(w, rec, 0, 0 /* lsn 0: never part of a run */, 0, gen, 0);
    rc = write_at(w->fd, rec, hs, (uint64_t)st.st_size);
    if (rc == 0 && (uint64_t)st.st_size + hs > w->end)
        w->end = (uint64_t)st.st_size + hs;
    return rc != 0 ? rc : sync_fd(w->fd);
}

/* ----------------------------------------------------------- checkpoint */

/* Reads the slot at off of fd into out (fd not set): 0 with out->have
 * set when the slot is valid, 0 with it clear when it is not, or an
 * errno. *written: the slot holds something (not zeros, not past the
 * file's end); *seq its sequence number when the header says one. */
static int slot_read(int fd, uint64_t off, keel_ckpt *out, int *written,
                     uint64_t *seq)
{
    static const uint8_t zeros[CKPT_HDR];
    uint8_t hdr[CKPT_HDR];
    uint8_t *buf;
    uint64_t h;
    uint32_t magic, ps;
    int rc;

    memset(out, 0, sizeof *out);
    out->fd = -1;
    *written = 0;
    *seq = 0;
    rc = read_at(fd, hdr, sizeof hdr, off);
    if (rc == ENODATA) {
        struct stat st;

        /* A slot cut short by the file's end was still written. */
        *written = fstat(fd, &st) == 0 && (uint64_t)st.st_size > off;
        return 0;
    }
    if (rc != 0)
        return rc;
    *written = memcmp(hdr, zeros, sizeof hdr) != 0;
    memcpy(&h, hdr, 8);
    memcpy(&magic, hdr + 8, 4);
    memcpy(&ps, hdr + 12, 4);
    if (magic != CKPT_MAGIC || ps < 512 || ps > 65536 || (ps & (ps - 1)))
        return 0;
    memcpy(seq, hdr + 16, 8);
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

/* Both slots' room, so that no checkpoint ever needs a block the disk
 * may not have. Zeros read as a slot never written. */
#define CKPT_FILE_SIZE (2ull * CKPT_SLOT_STRIDE)

int keel_ckpt_open(keel_ckpt *c, const char *dir)
{
    keel_ckpt s[2];
    int written[2];
    uint64_t seq[2];
    struct stat st;
    int rc, best;

    memset(c, 0, sizeof *c);
    rc = open_in(dir, KEEL_CKPT_NAME, &c->fd);
    if (rc != 0)
        return rc;
    memset(s, 0, sizeof s);
    if (fstat(c->fd, &st) < 0) {
        rc = errno;
    } else if ((uint64_t)st.st_size < CKPT_FILE_SIZE) {
        /* posix_fallocate writes zeros where the file system cannot
         * allocate without them. A file made by an earlier version
         * grows here too. */
        rc = posix_fallocate(c->fd, 0, (off_t)CKPT_FILE_SIZE);
        if (rc == 0)
            rc = sync_fd(c->fd);
        /* A disk already full (an older directory, never reserved) is
         * no reason not to open: the checkpoints then need the room
         * when they are written, as they did before. */
        if (rc == ENOSPC || rc == EDQUOT || rc == EFBIG)
            rc = 0;
    }
    for (int i = 0; i < 2 && rc == 0; i++)
        rc = slot_read(c->fd, i ? CKPT_SLOT_STRIDE : 0, &s[i], &written[i],
                       &seq[i]);
    if (rc != 0) {
        free(s[0].pages);
        free(s[1].pages);
        close(c->fd);
        c->fd = -1;
        return rc;
    }
    best = s[1].have && (!s[0].have || s[1].seq > s[0].seq) ? 1 : 0;
    free(s[!best].pages);
    s[best].fd = c->fd;
    *c = s[best]; /* no slot valid: have 0, pages NULL */
    if (c->have && !s[!best].have && written[!best] &&
        !(seq[!best] != 0 && seq[!best] < c->seq)) {
        c->damaged = 1;
        c->damaged_seq = seq[!best];
        c->damaged_off = !best ? CKPT_SLOT_STRIDE : 0;
    }
    if (!c->have && (written[0] || written[1])) {
        c->unusable = 1;
        c->damaged_off = written[0] ? 0 : CKPT_SLOT_STRIDE;
    }
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
    /* The slot written was the other one: whatever it held is gone. */
    c->damaged = c->unusable = 0;
    return 0;
}

int keel_ckpt_reset(keel_ckpt *c)
{
    static const uint8_t zeros[CKPT_HDR];
    int rc = write_at(c->fd, zeros, sizeof zeros, 0);

    if (rc == 0)
        rc = write_at(c->fd, zeros, sizeof zeros, CKPT_SLOT_STRIDE);
    if (rc == 0)
        rc = sync_fd(c->fd);
    if (rc != 0)
        return rc;
    free(c->pages);
    c->pages = NULL;
    c->have = c->damaged = c->unusable = 0;
    c->seq = c->lsn = c->wal_off = c->wal_gen = 0;
    return 0;
}
