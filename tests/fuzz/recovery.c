/* The recovery harness (recovery.h): what keel_store_open makes of a log
 * and a checkpoint file that a crash, a torn write or a damaged disk may
 * have left.
 *
 * The template store, built once per process:
 *   open a fresh store (durability fsync, 4 shards), commit B1..B3, close
 *   (a checkpoint: slot 0), open again (a checkpoint of the same state, a
 *   new log generation: slot 1), then commit C1..C8, each durable, and
 *   copy data.mdb, keel.ckpt and keel.wal while the store is still open:
 *   the image a crash leaves. The log then holds the records of C1..C8
 *   and, behind them, stale records of the first generation.
 * The commits touch two capabilities ("" and "pay") and every kind of
 * operation a log record carries: puts (one of 700 bytes), an overwrite,
 * a delete, a prefix delete, a group without writes (a fence raise), a
 * unit delete below an epoch with a handover record, and batches of two
 * groups.
 *
 * A state is everything the store's read API shows: every record of the
 * state table (key, version, epoch, data) in key order, and for each unit
 * (capability, shard) its fence, its handover record and the keys its
 * unit scan returns (which is where the type table shows). state[k] is
 * read from the live store right after commit k.
 *
 * The property, for a log and a checkpoint file made from the template's
 * by any damage (bytes changed, cut, moved, added), with data.mdb as the
 * crash left it:
 *
 *   keel_store_open either refuses with KEEL_ECORRUPT, or opens a store
 *   whose state is state[k] for some k in 0..8: the state after a prefix
 *   of the commits. Never another state, never a crash or a sanitizer
 *   report. And a store it opened, closed cleanly, opens again to the
 *   same state.
 *
 * That holds whether damage in the middle of the log is refused or the
 * log is cut there, and whatever prefix a damaged log is cut to. It is
 * deterministic: the template is rebuilt by each process from the same
 * commits (its log's bytes are the same every time but for the random
 * seed in the log's header and the record hashes made with it; the
 * seeds in the corpus are such a log, with its own seed), every input is
 * recovered in a fresh directory,
 * and nothing depends on time (a template whose store happened to
 * checkpoint on its own, which a stalled machine can cause, is made
 * again).
 *
 * One exception keeps the assertion honest: the log and the checkpoint
 * carry a 64-bit hash per record and per slot (the records' seeded with
 * the log's header, which the input carries), and a fuzzer that traces
 * comparisons can write the hash a changed record needs. Such a forgery
 * is not damage: the store trusts a record whose hash holds. When the
 * record the replay meets next is forged (rh_wal_forged), the state may
 * legitimately be another, and only the rest is checked: refusal with
 * KEEL_ECORRUPT or a store that reopens to the state it opened with. A
 * forged checkpoint slot hands LMDB meta pages the store never wrote,
 * which LMDB does not defend against (nor does the store against a data
 * file rewritten at will): those inputs are skipped. */
#include "recovery.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/log.h"
#include "coordinator/codec.h"
#include "fuzz.h"
#include "persistence/store.h"
#include "persistence/wal.h"

#define WAL_HDR KEEL_WAL_REC_HDR
#define WAL_START 4096u /* records begin after the log's header */
#define WAL_FILE_MAGIC 0x4b574c48u    /* version 1 */
#define WAL_FILE_MAGIC_V2 0x4b574c49u /* version 2 */
#define CKPT_HDR 48u
#define CKPT_MAGIC 0x4b434b50u

static rh_template tpl;
static int tpl_built;
static char *base_dir, *work_dir;

/* ----------------------------------------------------------- files */

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        char *p;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (asprintf(&p, "%s/%s", dir, e->d_name) < 0)
            abort();
        if (unlink(p) != 0 && errno == EISDIR)
            rm_dir(p);
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

static void cleanup(void)
{
    if (base_dir != NULL)
        rm_dir(base_dir);
}

static rh_bytes read_file(const char *dir, const char *name)
{
    rh_bytes b = {NULL, 0};
    struct stat st;
    char *p;
    int fd;

    if (asprintf(&p, "%s/%s", dir, name) < 0)
        abort();
    fd = open(p, O_RDONLY | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0 && fstat(fd, &st) == 0);
    b.len = (size_t)st.st_size;
    b.p = malloc(b.len + 1);
    FUZZ_CHECK(b.p != NULL);
    FUZZ_CHECK(pread(fd, b.p, b.len, 0) == (ssize_t)b.len);
    close(fd);
    free(p);
    return b;
}

static void write_file(const char *dir, const char *name, const uint8_t *p,
                       size_t len)
{
    char *path;
    int fd;

    if (asprintf(&path, "%s/%s", dir, name) < 0)
        abort();
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(len == 0 || pwrite(fd, p, len, 0) == (ssize_t)len);
    close(fd);
    free(path);
}

/* ---------------------------------------------------------- states */

static const char *const caps[2] = {"", "pay"};

static int dump_rec(const uint8_t *key, size_t klen, const keel_record *rec,
                    void *data)
{
    keel_wbuf *w = data;

    keel_wbuf_be(w, klen, 4);
    keel_wbuf_put(w, key, klen);
    keel_wbuf_be(w, rec->version, 8);
    keel_wbuf_be(w, rec->epoch, 8);
    keel_wbuf_be(w, rec->len, 4);
    keel_wbuf_put(w, rec->data, rec->len);
    return 0;
}

static int dump_key(const uint8_t *key, size_t klen, const keel_record *rec,
                    void *data)
{
    keel_wbuf *w = data;

    (void)rec;
    keel_wbuf_be(w, klen, 4);
    keel_wbuf_put(w, key, klen);
    return 0;
}

/* The state of s (see the top of the file), as bytes to compare. */
static rh_bytes dump(keel_store *s)
{
    keel_wbuf w = {0};
    keel_store_read *r;
    rh_bytes b;
    int c, sh;

    FUZZ_CHECK(keel_store_read_begin(s, &r) == 0);
    FUZZ_CHECK(keel_store_scan(r, NULL, 0, dump_rec, &w) == 0);
    for (c = 0; c < 2; c++)
        for (sh = 0; sh < RH_SHARDS; sh++) {
            uint64_t fence = 0, hepoch = 0;
            char to[KEEL_HANDOFF_NAME_MAX + 1] = "";
            int rc;

            FUZZ_CHECK(keel_store_fence_get(r, caps[c], (uint16_t)sh,
                                            &fence) == 0);
            rc = keel_store_handoff_get(r, caps[c], (uint16_t)sh, &hepoch, to,
                                        sizeof to);
            FUZZ_CHECK(rc == 0 || rc == KEEL_ENOTFOUND);
            keel_wbuf_str8(&w, "unit");
            keel_wbuf_be(&w, fence, 8);
            keel_wbuf_be(&w, hepoch, 8);
            keel_wbuf_str8(&w, to);
            rc = keel_store_unit_scan(r, caps[c], (uint16_t)sh, dump_key, &w);
            keel_wbuf_be(&w, (uint64_t)(int64_t)rc, 8);
        }
    keel_store_read_end(r);
    FUZZ_CHECK(!w.oom);
    b.p = w.p;
    b.len = w.len;
    return b;
}

static int same(rh_bytes a, rh_bytes b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* --------------------------------------------------------- commits */

static size_t key(uint8_t *buf, uint16_t shard, const char *type,
                  const char *id, const char *entry)
{
    int n = keel_key_encode(buf, shard, type, strlen(type), id, strlen(id),
                            entry, entry ? strlen(entry) : 0);
    FUZZ_CHECK(n > 0);
    return (size_t)n;
}

static void put(keel_batch *b, uint16_t shard, const char *type,
                const char *id, const char *entry, uint64_t version,
                const char *val)
{
    uint8_t k[KEEL_KEY_MAX];
    size_t kl = key(k, shard, type, id, entry);

    FUZZ_CHECK(keel_batch_put(b, k, kl, version, val, strlen(val)) == 0);
}

static void group(keel_batch *b, const char *cap, uint16_t shard,
                  uint64_t epoch)
{
    FUZZ_CHECK(keel_batch_begin_group(b, cap, shard, epoch, NULL) == 0);
}

/* Commit `step` of the template: 1..3 before the checkpoint (B1..B3),
 * 4..11 after it (C1..C8). */
static void commit_step(keel_store *s, int step)
{
    keel_batch *b = keel_batch_create();
    uint8_t k[KEEL_KEY_MAX];
    char big[701];
    size_t kl;
    int i;

    FUZZ_CHECK(b != NULL);
    switch (step) {
    case 1:
        group(b, "", 0, 1);
        put(b, 0, "counter", "c1", NULL, 1, "1");
        put(b, 0, "kv", "users", "ann", 1, "Ann");
        break;
    case 2:
        group(b, "pay", 1, 1);
        put(b, 1, "acct", "a1", NULL, 1, "100");
        break;
    case 3:
        group(b, "", 2, 1);
        put(b, 2, "register", "r1", NULL, 1, "x");
        break;
    case 4: /* C1: an overwrite */
        group(b, "", 0, 1);
        put(b, 0, "counter", "c1", NULL, 2, "2");
        break;
    case 5: /* C2: two groups, two capabilities */
        group(b, "", 0, 1);
        put(b, 0, "kv", "users", "bob", 1, "Bob");
        group(b, "pay", 1, 1);
        put(b, 1, "acct", "a1", NULL, 2, "90");
        break;
    case 6: /* C3: a delete */
        group(b, "", 0, 1);
        kl = key(k, 0, "kv", "users", "ann");
        FUZZ_CHECK(keel_batch_del(b, k, kl) == 0);
        break;
    case 7: /* C4: a fence raise without writes */
        group(b, "", 2, 2);
        FUZZ_CHECK(keel_batch_fence_only(b) == 0);
        break;
    case 8: /* C5: an actor's records by prefix */
        group(b, "", 0, 1);
        kl = key(k, 0, "kv", "users", NULL);
        FUZZ_CHECK(keel_batch_del_prefix(b, k, kl) == 0);
        break;
    case 9: /* C6: a larger value */
        for (i = 0; i < 700; i++)
            big[i] = (char)('a' + i % 26);
        big[700] = '\0';
        group(b, "pay", 1, 1);
        put(b, 1, "acct", "a2", NULL, 1, big);
        break;
    case 10: /* C7: the unit handed over: its records go below epoch 3 */
        group(b, "pay", 1, 3);
        FUZZ_CHECK(keel_batch_del_unit(b, 3) == 0);
        FUZZ_CHECK(keel_batch_handoff(b, 3, "n2") == 0);
        break;
    case 11: /* C8: two groups of one capability */
        group(b, "", 3, 1);
        put(b, 3, "counter", "c9", NULL, 1, "9");
        group(b, "", 0, 1);
        put(b, 0, "counter", "c1", NULL, 3, "3");
        break;
    default:
        abort();
    }
    FUZZ_CHECK(keel_store_commit(s, b) == 0);
    for (i = 0; i < (int)keel_batch_group_count(b); i++) {
        int st;
        keel_batch_group(b, (size_t)i, &st);
        FUZZ_CHECK(st == 0);
    }
    keel_batch_destroy(b);
}

static int store_open(const char *dir, keel_store **s, char *err,
                      size_t errlen)
{
    keel_store_options o;

    memset(&o, 0, sizeof o);
    o.path = dir;
    o.shard_count = RH_SHARDS;
    o.durability = KEEL_DURABILITY_FSYNC;
    /* Small: every input maps it afresh. */
    o.initial_map_size = 4u << 20;
    return keel_store_open(&o, s, err, errlen);
}

/* One attempt at the template: 0, or -1 when the store checkpointed on
 * its own between the commits (then the log is not the one expected). */
static int build_once(const char *live)
{
    keel_store *s;
    keel_store_stats st;
    char err[512];
    uint64_t pos;
    int k;

    rm_dir(live);
    FUZZ_CHECK(store_open(live, &s, err, sizeof err) == 0);
    for (k = 1; k <= 3; k++)
        commit_step(s, k);
    keel_store_close(s);
    if (store_open(live, &s, err, sizeof err) != 0) {
        fprintf(stderr, "recovery harness: %s\n", err);
        abort();
    }
    tpl.state[0] = dump(s);
    for (k = 1; k <= RH_COMMITS; k++) {
        commit_step(s, 3 + k);
        tpl.state[k] = dump(s);
    }
    keel_store_stats_get(s, &st);
    if (st.checkpoints != 0) {
        keel_store_close(s);
        for (k = 0; k <= RH_COMMITS; k++)
            free(tpl.state[k].p);
        return -1;
    }
    /* The crash: the files as they are, the store still open. */
    tpl.data_mdb = read_file(live, "data.mdb");
    tpl.wal = read_file(live, "keel.wal");
    tpl.ckpt = read_file(live, "keel.ckpt");
    keel_store_close(s);
    rm_dir(live);

    pos = WAL_START;
    for (k = 0; k < RH_COMMITS; k++) {
        uint64_t len;
        FUZZ_CHECK(tpl.wal.len - pos >= WAL_HDR);
        memcpy(&len, tpl.wal.p + pos + 24, 8);
        tpl.rec_off[k] = (size_t)pos;
        pos += WAL_HDR + len;
        FUZZ_CHECK(pos <= tpl.wal.len);
    }
    tpl.rec_off[RH_COMMITS] = (size_t)pos;
    for (k = 0; k < 2; k++) {
        size_t off = k ? RH_CKPT_STRIDE : 0;
        uint32_t ps;
        FUZZ_CHECK(tpl.ckpt.len >= off + CKPT_HDR);
        memcpy(&ps, tpl.ckpt.p + off + 12, 4);
        tpl.slot[k].p = tpl.ckpt.p + off;
        tpl.slot[k].len = CKPT_HDR + 2u * (size_t)ps;
        FUZZ_CHECK(tpl.ckpt.len >= off + tpl.slot[k].len);
    }
    return 0;
}

const rh_template *rh_template_get(void)
{
    const char *t = getenv("TMPDIR");
    char *live;
    int tries;

    if (tpl_built)
        return &tpl;
    keel_log_set_level(KEEL_LOG_ERROR); /* recovery's notes are expected */
    /* tmpfs when there is one: thousands of stores are opened, and their
     * flushes cost nothing there. */
    if (access("/dev/shm", W_OK) == 0)
        t = "/dev/shm";
    else if (t == NULL || t[0] == '\0')
        t = "/tmp";
    if (asprintf(&base_dir, "%s/keel-fuzz-recovery-XXXXXX", t) < 0)
        abort();
    FUZZ_CHECK(mkdtemp(base_dir) != NULL);
    atexit(cleanup);
    if (asprintf(&live, "%s/live", base_dir) < 0 ||
        asprintf(&work_dir, "%s/work", base_dir) < 0)
        abort();
    for (tries = 0; build_once(live) != 0; tries++)
        FUZZ_CHECK(tries < 20);
    free(live);
    tpl_built = 1;
    /* The image as the crash left it recovers every commit. */
    rh_recover(tpl.wal.p, tpl.wal.len, tpl.ckpt.p, tpl.ckpt.len, 2);
    return &tpl;
}

/* ---------------------------------------------------------- forgery */

uint64_t rh_wal_seed(const uint8_t *wal, size_t len)
{
    uint32_t magic;
    uint64_t h, seed;

    /* The log's header (wal.h); without a valid one the store refuses the
     * log or reads it as the previous, unseeded format. */
    if (len < 24)
        return 0;
    memcpy(&magic, wal, 4);
    memcpy(&seed, wal + 8, 8);
    memcpy(&h, wal + 16, 8);
    return (magic == WAL_FILE_MAGIC || magic == WAL_FILE_MAGIC_V2) &&
                   XXH3_64bits(wal, 16) == h
               ? seed
               : 0;
}

uint32_t rh_wal_version(const uint8_t *wal, size_t len)
{
    uint32_t magic;

    if (rh_wal_seed(wal, len) == 0)
        return 0;
    memcpy(&magic, wal, 4);
    return magic == WAL_FILE_MAGIC ? 1 : 2; /* as keel_wal_open says */
}

int rh_wal_forged(const uint8_t *wal, size_t len)
{
    size_t pos = WAL_START;
    uint64_t h, rlen, seed = rh_wal_seed(wal, len);
    /* The log's records' header: with its own hash (version 2, as the
     * template's), or without (version 1, an older keel's). */
    size_t hs = rh_wal_version(wal, len) >= 2 ? WAL_HDR : 48;
    int k = 0;

    /* Follow the template's own records from the start, hashes aside
     * (each log has its own seed: the record's hash, and its header's);
     * the replay stops at the first other bytes. */
    if (len < pos)
        return 0;
    while (k < RH_COMMITS && hs == WAL_HDR) {
        size_t n = tpl.rec_off[k + 1] - tpl.rec_off[k];
        const uint8_t *t = tpl.wal.p + tpl.rec_off[k];
        if (len - pos < n || memcmp(wal + pos + 8, t + 8, 40) != 0 ||
            memcmp(wal + pos + WAL_HDR, t + WAL_HDR, n - WAL_HDR) != 0)
            break;
        pos += n;
        k++;
    }
    if (len - pos < hs)
        return 0;
    if (hs == WAL_HDR) {
        memcpy(&h, wal + pos + 48, 8);
        if (XXH3_64bits_withSeed(wal + pos + 8, 40,
                                 seed ^ KEEL_WAL_HHASH_SALT) != h)
            return 0;
    }
    memcpy(&h, wal + pos, 8);
    memcpy(&rlen, wal + pos + 24, 8);
    if (rlen > len - pos - hs)
        return 0;
    return XXH3_64bits_withSeed(wal + pos + 8, hs - 8 + (size_t)rlen, seed) ==
           h;
}

int rh_ckpt_forged(const uint8_t *ckpt, size_t len)
{
    int k, j;

    for (k = 0; k < 2; k++) {
        size_t off = k ? RH_CKPT_STRIDE : 0, n;
        uint32_t magic, ps;
        uint64_t h;
        int known = 0;

        if (len < off + CKPT_HDR)
            continue;
        memcpy(&h, ckpt + off, 8);
        memcpy(&magic, ckpt + off + 8, 4);
        memcpy(&ps, ckpt + off + 12, 4);
        if (magic != CKPT_MAGIC || ps < 512 || ps > 65536 || (ps & (ps - 1)))
            continue;
        n = CKPT_HDR + 2u * (size_t)ps;
        if (len - off < n || XXH3_64bits(ckpt + off + 8, n - 8) != h)
            continue;
        for (j = 0; j < 2; j++)
            if (n == tpl.slot[j].len &&
                memcmp(ckpt + off, tpl.slot[j].p, n) == 0)
                known = 1;
        if (!known)
            return 1;
    }
    return 0;
}

/* --------------------------------------------------------- recovery */

#define RH_CHECK(cond, err)                                                  \
    do {                                                                     \
        if (!(cond))                                                         \
            fprintf(stderr, "recovery harness: store says: %s\n", (err));    \
        FUZZ_CHECK(cond);                                                    \
    } while (0)

/* strict 2: the template's own image, which must recover everything. */
void rh_recover(const uint8_t *wal, size_t wal_len, const uint8_t *ckpt,
                size_t ckpt_len, int strict)
{
    keel_store *s;
    rh_bytes d1, d2;
    char err[512] = "";
    int rc, k, match = -1;

    rm_dir(work_dir);
    FUZZ_CHECK(mkdir(work_dir, 0700) == 0);
    write_file(work_dir, "data.mdb", tpl.data_mdb.p, tpl.data_mdb.len);
    write_file(work_dir, "keel.ckpt", ckpt, ckpt_len);
    write_file(work_dir, "keel.wal", wal, wal_len);

    rc = store_open(work_dir, &s, err, sizeof err);
    if (rc != 0) {
        RH_CHECK(rc == KEEL_ECORRUPT && strict != 2, err);
        rm_dir(work_dir);
        return;
    }
    d1 = dump(s);
    keel_store_close(s);
    for (k = 0; k <= RH_COMMITS && match < 0; k++)
        if (same(d1, tpl.state[k]))
            match = k;
    if (strict == 2 && match != RH_COMMITS)
        fprintf(stderr, "recovery harness: the template's image recovers "
                        "to state %d\n", match);
    FUZZ_CHECK(strict != 2 || match == RH_COMMITS);
    if (strict && match < 0)
        fprintf(stderr, "recovery harness: the store opened with a state "
                        "that follows no prefix of the commits\n");
    FUZZ_CHECK(!strict || match >= 0);
    /* Closed cleanly, it opens again to the same state. */
    rc = store_open(work_dir, &s, err, sizeof err);
    RH_CHECK(rc == 0, err);
    d2 = dump(s);
    keel_store_close(s);
    if (getenv("KEEL_FUZZ_VERBOSE") != NULL || !same(d1, d2)) {
        int m2 = -1;
        for (k = 0; k <= RH_COMMITS && m2 < 0; k++)
            if (same(d2, tpl.state[k]))
                m2 = k;
        fprintf(stderr,
                "recovery harness: opened at state %d, reopened at state "
                "%d (-1: none of the template's)\n",
                match, m2);
    }
    FUZZ_CHECK(same(d1, d2));
    free(d1.p);
    free(d2.p);
    rm_dir(work_dir);
}
