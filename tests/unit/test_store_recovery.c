/* Recovery from damaged storage (persistence/wal.c, store.c): a damaged
 * log or checkpoint is never silently accepted.
 *
 * Each case makes a store in a child process that dies without closing
 * (every commit acknowledged, i.e. flushed, before the next), damages a
 * file the way a failing disk would, and opens the store again: it must
 * open with exactly the acknowledged state, or refuse and name the file
 * and offset; recover_to_last_good then opens at the last good state. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <lmdb.h>
#include <xxhash.h>

#include "persistence/store.h"
#include "persistence/wal.h"
#include "testutil.h"

#define TYPE "t"
#define WAL_HDR 56 /* wal.h: a record's header ("KWL3") */
#define WAL_START 4096 /* wal.h: where records begin, after the header */
#define SLOT1 (256 << 10) /* wal.h: where the second checkpoint slot starts */

/* ------------------------------------------------------------- helpers */

static int open_rc(const char *dir, int durability, int recover,
                   keel_store **s, char *err, size_t errlen)
{
    keel_store_options o = {0};

    o.path = dir;
    o.shard_count = 64;
    o.durability = durability;
    o.recover_to_last_good = recover;
    /* No checkpoint by the clock: the log's records stay where the tests
     * look for them however slowly the machine runs. */
    o.checkpoint_interval_ms = 3600u * 1000u;
    err[0] = '\0';
    *s = NULL;
    return keel_store_open(&o, s, err, errlen);
}

static keel_store *open_ok(const char *dir, int recover)
{
    char err[1024];
    keel_store *s;
    int rc = open_rc(dir, KEEL_DURABILITY_FSYNC, recover, &s, err,
                     sizeof err);

    ck_assert_msg(rc == 0, "open %s: %s (%s)", dir, keel_err_name(rc), err);
    return s;
}

static int key_of(uint8_t *k, const char *id)
{
    return keel_key_encode(k, 1, TYPE, strlen(TYPE), id, strlen(id), NULL, 0);
}

/* The counter: one key whose value is the decimal count, padded with
 * spaces to pad bytes (atoi stops at them). */
static int put_count_pad(keel_store *s, const char *id, int i, size_t pad)
{
    uint8_t k[KEEL_KEY_MAX];
    keel_batch *b = keel_batch_create();
    char v[8192];
    int n = key_of(k, id), rc, st = 0;

    ck_assert_uint_lt(pad, sizeof v);
    snprintf(v, sizeof v, "%-*d", (int)pad, i);
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 1, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, (uint64_t)i, v,
                                    strlen(v)),
                     0);
    rc = keel_store_commit(s, b);
    if (rc == 0)
        keel_batch_group(b, 0, &st);
    keel_batch_destroy(b);
    return rc != 0 ? rc : st;
}

static int put_count(keel_store *s, const char *id, int i)
{
    return put_count_pad(s, id, i, 0);
}

/* The count, or 0 when the key is absent. */
static int count_of(keel_store *s, const char *id)
{
    uint8_t k[KEEL_KEY_MAX];
    keel_store_read *r;
    keel_record rec;
    char v[8192] = "";
    int n = key_of(k, id), rc;

    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    rc = keel_store_get(r, k, (size_t)n, &rec);
    if (rc == 0) {
        ck_assert_uint_lt(rec.len, sizeof v);
        memcpy(v, rec.data, rec.len);
    }
    keel_store_read_end(r);
    if (rc == KEEL_ENOTFOUND)
        return 0;
    ck_assert_msg(rc == 0, "get: %s", keel_err_name(rc));
    return atoi(v);
}

/* Opens the store (recovering when told), checks the count, closes. */
static void expect_count(const char *dir, int recover, int n)
{
    keel_store *s = open_ok(dir, recover);

    ck_assert_int_eq(count_of(s, "c"), n);
    keel_store_close(s);
}

/* Opens the store, sets the count to i, closes. */
static void count_once(const char *dir, int i)
{
    keel_store *s = open_ok(dir, 0);

    ck_assert_int_eq(put_count(s, "c", i), 0);
    keel_store_close(s);
}

/* The counter set to i, with deletes of n keys that do not exist: a log
 * record of some 100 bytes per delete, and next to no pages in the data
 * file, so that the log crosses its stretches written ahead long before
 * a checkpoint is due. */
static int put_count_big(keel_store *s, const char *id, int i, int n)
{
    uint8_t k[KEEL_KEY_MAX];
    keel_batch *b = keel_batch_create();
    char v[16], e[128];
    int kn = key_of(k, id), rc, st = 0;

    snprintf(v, sizeof v, "%d", i);
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 1, 1, NULL), 0);
    ck_assert_int_eq(
        keel_batch_put(b, k, (size_t)kn, (uint64_t)i, v, strlen(v)), 0);
    for (int j = 0; j < n; j++) {
        snprintf(e, sizeof e, "absent-%d-%080d", i, j);
        kn = keel_key_encode(k, 1, TYPE, strlen(TYPE), "x", 1, e, strlen(e));
        ck_assert_int_gt(kn, 0);
        ck_assert_int_eq(keel_batch_del(b, k, (size_t)kn), 0);
    }
    rc = keel_store_commit(s, b);
    if (rc == 0)
        keel_batch_group(b, 0, &st);
    keel_batch_destroy(b);
    return rc != 0 ? rc : st;
}

/* A child opens the store, counts from..to in records of n deletes each
 * (each acknowledged), and dies without closing. */
static void child_counts_big(const char *dir, int from, int to, int n)
{
    pid_t pid = fork();
    int status;

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_store *s = open_ok(dir, 0);

        for (int i = from; i <= to; i++)
            if (put_count_big(s, "c", i, n) != 0)
                _exit(10);
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child");
}

/* A child opens the store, counts from..to (each commit flushed before
 * the next: acknowledged), and dies without closing. */
static void child_counts(const char *dir, int from, int to)
{
    child_counts_big(dir, from, to, 0);
}

static int open_file(const char *dir, const char *name)
{
    char path[512];
    int fd;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    return fd;
}

/* Offsets of the log's records from its start, as far as they chain:
 * returns how many (at most max). */
static int wal_offsets(const char *dir, off_t *offs, int max)
{
    int fd = open_file(dir, KEEL_WAL_NAME), n = 0;
    uint8_t hdr[WAL_HDR];
    off_t at = WAL_START;

    while (n < max && pread(fd, hdr, sizeof hdr, at) == (ssize_t)sizeof hdr &&
           memcmp(hdr + 8, "3LWK", 4) == 0) {
        uint64_t len;

        memcpy(&len, hdr + 24, 8);
        offs[n++] = at;
        at += WAL_HDR + (off_t)len;
    }
    close(fd);
    return n;
}

/* The log is written ahead of its records with zeros, a MiB at a time
 * (wal.c, write_ahead). */
#define WAL_AHEAD (1 << 20)

static off_t wal_size(const char *dir)
{
    int fd = open_file(dir, KEEL_WAL_NAME);
    struct stat st;

    ck_assert_int_eq(fstat(fd, &st), 0);
    close(fd);
    return st.st_size;
}

/* Whether every byte of the log up to its size has a block of its own:
 * the zeros written ahead are written, never a hole. */
static int wal_dense(const char *dir)
{
    int fd = open_file(dir, KEEL_WAL_NAME);
    struct stat st;
    off_t hole;

    ck_assert_int_eq(fstat(fd, &st), 0);
    hole = lseek(fd, 0, SEEK_HOLE);
    close(fd);
    ck_assert_int_ge(hole, 0);
    return hole >= st.st_size;
}

static void flip(const char *dir, const char *name, off_t at)
{
    int fd = open_file(dir, name);
    uint8_t c;

    ck_assert_int_eq(pread(fd, &c, 1, at), 1);
    c ^= 0x10;
    ck_assert_int_eq(pwrite(fd, &c, 1, at), 1);
    close(fd);
}

/* Offset of the checkpoint slot with the higher sequence number. */
static off_t newest_slot(const char *dir)
{
    int fd = open_file(dir, KEEL_CKPT_NAME);
    uint64_t a = 0, b = 0;

    ck_assert_int_eq(pread(fd, &a, 8, 16), 8);
    ck_assert_int_eq(pread(fd, &b, 8, SLOT1 + 16), 8);
    close(fd);
    return b > a ? SLOT1 : 0;
}

/* ------------------------------------------------------- the log's middle */

/* One flipped byte in the 100th of 200 acknowledged records: replay must
 * not stop there and call it the end (the records after it say it was
 * flushed). The open refuses, naming the file and offset, and changes
 * nothing; recovering to the last good record keeps 99 and says so. */
static void mid_log_case(off_t in_record)
{
    char *dir = tu_tmpdir("recov");
    char err[1024], want[128];
    off_t offs[256];
    keel_store *s;

    child_counts(dir, 1, 200);
    ck_assert_int_eq(wal_offsets(dir, offs, 256), 200);
    flip(dir, KEEL_WAL_NAME, offs[99] + in_record);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(
            open_rc(dir, KEEL_DURABILITY_FSYNC, 0, &s, err, sizeof err),
            KEEL_ECORRUPT);
        snprintf(want, sizeof want,
                 "keel.wal is damaged at offset %lld (record 100)",
                 (long long)offs[99]);
        ck_assert_msg(strstr(err, want) != NULL, "%s", err);
        ck_assert_ptr_nonnull(strstr(err, "up to record 200"));
        ck_assert_ptr_nonnull(strstr(err, "recover-to-last-good"));
    }
    s = open_ok(dir, 1);
    ck_assert_int_eq(count_of(s, "c"), 99);
    ck_assert_int_eq(put_count(s, "c", 100), 0);
    keel_store_close(s);
    /* What recovery kept is the store's state from now on. */
    expect_count(dir, 0, 100);
    tu_rmrf(dir);
    free(dir);
}

START_TEST(test_mid_log_damage_in_body)
{
    mid_log_case(WAL_HDR + 5);
}
END_TEST

START_TEST(test_mid_log_damage_in_header)
{
    mid_log_case(17); /* the lsn */
}
END_TEST

START_TEST(test_mid_log_damage_in_length)
{
    mid_log_case(24 + 2); /* the length: the next record is misplaced */
}
END_TEST

/* Damage in the first record of the run: nothing before it to keep. */
START_TEST(test_first_record_damaged)
{
    char *dir = tu_tmpdir("recov");
    char err[1024];
    off_t offs[8];
    keel_store *s;

    child_counts(dir, 1, 5);
    ck_assert_int_eq(wal_offsets(dir, offs, 8), 5);
    flip(dir, KEEL_WAL_NAME, offs[0] + WAL_HDR + 1);
    ck_assert_int_eq(open_rc(dir, KEEL_DURABILITY_FSYNC, 0, &s, err,
                             sizeof err),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(open_rc(dir, KEEL_DURABILITY_NONE, 0, &s, err,
                             sizeof err),
                     KEEL_ECORRUPT);
    expect_count(dir, 1, 0);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------ the tail */

/* The last record damaged or cut short: nothing after it vouches for it,
 * so it is the torn tail of a write never flushed; the store opens with
 * the record before it. */
START_TEST(test_torn_tail_opens)
{
    char *dir = tu_tmpdir("recov");
    off_t offs[64];
    int fd;

    child_counts(dir, 1, 50);
    ck_assert_int_eq(wal_offsets(dir, offs, 64), 50);
    flip(dir, KEEL_WAL_NAME, offs[49] + WAL_HDR + 3);
    expect_count(dir, 0, 49);
    tu_rmrf(dir);
    free(dir);

    dir = tu_tmpdir("recov");
    child_counts(dir, 1, 50);
    ck_assert_int_eq(wal_offsets(dir, offs, 64), 50);
    fd = open_file(dir, KEEL_WAL_NAME);
    ck_assert_int_eq(ftruncate(fd, offs[49] + WAL_HDR + 2), 0);
    close(fd);
    expect_count(dir, 0, 49);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The log cut inside its header (a file system or a hand that truncated
 * it): the records since the checkpoint are gone with no torn record to
 * show it, and the store opened at the checkpoint as if nothing had been
 * written since. It refuses; recovering takes the data file, which after
 * a process crash holds every acknowledged write. */
START_TEST(test_log_cut_inside_its_header)
{
    char *dir = tu_tmpdir("recov");
    char err[1024];
    keel_store *s;
    int fd;

    count_once(dir, 1);
    child_counts(dir, 2, 30);
    fd = open_file(dir, KEEL_WAL_NAME);
    ck_assert_int_eq(ftruncate(fd, 100), 0);
    close(fd);
    ck_assert_int_eq(open_rc(dir, KEEL_DURABILITY_FSYNC, 0, &s, err,
                             sizeof err),
                     KEEL_ECORRUPT);
    ck_assert_msg(strstr(err, "shorter than its own header") != NULL, "%s",
                  err);
    expect_count(dir, 1, 30);
    expect_count(dir, 0, 30);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The same cut, to nothing or to less than the header's first 24 bytes
 * (operations.md: "a log cut short below its 4 KiB header refuses to
 * start"): the open writes a new header over it and opens at the
 * checkpoint, the 29 acknowledged writes since gone. */
START_TEST(test_log_cut_to_nothing)
{
    static const off_t cuts[] = {0, 10};
    char err[1024];
    keel_store *s;
    int fd, rc;

    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char *dir = tu_tmpdir("recov");

        count_once(dir, 1);
        child_counts(dir, 2, 30);
        fd = open_file(dir, KEEL_WAL_NAME);
        ck_assert_int_eq(ftruncate(fd, cuts[i]), 0);
        close(fd);
        rc = open_rc(dir, KEEL_DURABILITY_FSYNC, 0, &s, err, sizeof err);
        if (rc == 0) {
            int n = count_of(s, "c");
            keel_store_close(s);
            ck_abort_msg("log cut to %lld bytes: opened, count %d of 30 "
                         "acknowledged", (long long)cuts[i], n);
        }
        ck_assert_int_eq(rc, KEEL_ECORRUPT);
        ck_assert_msg(strstr(err, "shorter than its own header") != NULL,
                      "%s", err);
        /* Refused again: the refusal wrote nothing over the file. */
        ck_assert_int_eq(open_rc(dir, KEEL_DURABILITY_FSYNC, 0, &s, err,
                                 sizeof err),
                         KEEL_ECORRUPT);
        expect_count(dir, 1, 30);
        tu_rmrf(dir);
        free(dir);
    }
    {
        /* The log removed altogether. */
        char *dir = tu_tmpdir("recov"), *wal;

        count_once(dir, 1);
        child_counts(dir, 2, 30);
        ck_assert_int_ge(asprintf(&wal, "%s/%s", dir, KEEL_WAL_NAME), 0);
        ck_assert_int_eq(unlink(wal), 0);
        free(wal);
        ck_assert_int_eq(open_rc(dir, KEEL_DURABILITY_FSYNC, 0, &s, err,
                                 sizeof err),
                         KEEL_ECORRUPT);
        ck_assert_msg(strstr(err, "missing or 0 bytes") != NULL, "%s", err);
        expect_count(dir, 1, 30);
        tu_rmrf(dir);
        free(dir);
    }
}
END_TEST

/* ------------------------------------------------------- the checkpoint */

/* The newest checkpoint damaged after commits followed it: the older one
 * is not a state to go back to (its pages may have been reused), so the
 * open refuses, naming keel.ckpt. Recovering takes the data file as it
 * stands, which after a process crash holds every acknowledged write. */
START_TEST(test_newest_checkpoint_damaged_refused)
{
    char *dir = tu_tmpdir("recov");
    char err[1024];
    keel_store *s;

    count_once(dir, 1);
    child_counts(dir, 2, 60);
    flip(dir, KEEL_CKPT_NAME, newest_slot(dir) + 100);
    ck_assert_int_eq(open_rc(dir, KEEL_DURABILITY_FSYNC, 0, &s, err,
                             sizeof err),
                     KEEL_ECORRUPT);
    ck_assert_msg(strstr(err, "keel.ckpt") != NULL &&
                      strstr(err, "damaged") != NULL,
                  "%s", err);
    s = open_ok(dir, 1);
    ck_assert_int_eq(count_of(s, "c"), 60);
    ck_assert_int_eq(put_count(s, "c", 61), 0);
    keel_store_close(s);
    expect_count(dir, 0, 61);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The newest checkpoint damaged with nothing committed after it (here: the
 * one a clean close makes): no page of the older one was reused, and its
 * log records are all there, so recovery goes back to it and replays. */
START_TEST(test_newest_checkpoint_damaged_nothing_after)
{
    char *dir = tu_tmpdir("recov");
    keel_store *s;

    s = open_ok(dir, 0);
    for (int i = 1; i <= 30; i++)
        ck_assert_int_eq(put_count(s, "c", i), 0);
    keel_store_close(s);
    flip(dir, KEEL_CKPT_NAME, newest_slot(dir) + 60);
    expect_count(dir, 0, 30);
    expect_count(dir, 0, 30);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Both slots damaged: no checkpoint to trust at all. */
START_TEST(test_both_checkpoints_damaged)
{
    char *dir = tu_tmpdir("recov");
    char err[1024];
    keel_store *s;

    count_once(dir, 1);
    child_counts(dir, 2, 20);
    flip(dir, KEEL_CKPT_NAME, 70);
    flip(dir, KEEL_CKPT_NAME, SLOT1 + 70);
    ck_assert_int_eq(open_rc(dir, KEEL_DURABILITY_FSYNC, 0, &s, err,
                             sizeof err),
                     KEEL_ECORRUPT);
    ck_assert_msg(strstr(err, "no checkpoint") != NULL, "%s", err);
    expect_count(dir, 1, 20);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The newest checkpoint gone without a trace (its slot zeros, as if
 * never written): the log's records of its generation still show it was
 * made, and the open refuses rather than go back to the older one. */
START_TEST(test_newest_checkpoint_lost)
{
    char *dir = tu_tmpdir("recov");
    static const uint8_t zeros[4096];
    char err[1024];
    keel_store *s;
    int fd;

    count_once(dir, 1);
    child_counts(dir, 2, 30);
    fd = open_file(dir, KEEL_CKPT_NAME);
    ck_assert_int_eq(pwrite(fd, zeros, sizeof zeros, newest_slot(dir)),
                     (ssize_t)sizeof zeros);
    close(fd);
    ck_assert_int_eq(open_rc(dir, KEEL_DURABILITY_FSYNC, 0, &s, err,
                             sizeof err),
                     KEEL_ECORRUPT);
    ck_assert_msg(strstr(err, "newer than any valid one") != NULL, "%s", err);
    expect_count(dir, 1, 30);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Reads a whole file into a malloc'd buffer (*len bytes). */
static uint8_t *slurp(const char *dir, const char *name, size_t *len)
{
    int fd = open_file(dir, name);
    struct stat st;
    uint8_t *p;

    ck_assert_int_eq(fstat(fd, &st), 0);
    p = malloc((size_t)st.st_size + 1);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(pread(fd, p, (size_t)st.st_size, 0),
                     (ssize_t)st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return p;
}

static void spill(const char *dir, const char *name, const uint8_t *p,
                  size_t len)
{
    int fd = open_file(dir, name);

    ck_assert_int_eq(ftruncate(fd, 0), 0);
    ck_assert_int_eq(pwrite(fd, p, len, 0), (ssize_t)len);
    close(fd);
}

/* The transaction LMDB's meta pages say the closed store is at, read as
 * the store reads them (offsets of lmdb's MDB_meta), checked against
 * LMDB's own answer. */
static uint64_t raw_txnid(const char *dir)
{
    size_t len;
    uint8_t *p = slurp(dir, "data.mdb", &len);
    MDB_env *env;
    MDB_envinfo info;
    MDB_stat st;
    uint64_t best = 0;

    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(env, 4), 0);
    ck_assert_int_eq(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
    ck_assert_int_eq(mdb_env_info(env, &info), 0);
    ck_assert_int_eq(mdb_env_stat(env, &st), 0);
    ck_assert_uint_ge(len, 2u * st.ms_psize);
    for (int i = 0; i < 2; i++) {
        uint32_t magic;
        uint64_t t;
        memcpy(&magic, p + (size_t)i * st.ms_psize + 16, 4);
        memcpy(&t, p + (size_t)i * st.ms_psize + 144, 8);
        ck_assert_uint_eq(magic, 0xBEEFC0DEu);
        if (t > best)
            best = t;
    }
    ck_assert_uint_eq(best, info.me_last_txnid);
    mdb_env_close(env);
    free(p);
    return best;
}

/* A data file copied back over a directory whose checkpoint and log are
 * newer (the operator restored data.mdb alone): the checkpoint's meta
 * pages would point into pages the old file never held, and the store
 * read as empty, every acknowledged write gone without a word. The data
 * file is never behind its checkpoint (a checkpoint follows a flush of
 * it), so the open refuses; recovering takes the data file as it is. */
START_TEST(test_older_data_file_under_newer_checkpoint)
{
    char *dir = tu_tmpdir("recov");
    uint8_t *old;
    size_t old_len;
    uint64_t t_old, t_new;
    char err[1024];
    keel_store *s;
    int i;

    count_once(dir, 1);
    t_old = raw_txnid(dir);
    old = slurp(dir, "data.mdb", &old_len);
    /* Many commits and pages since: the old file lacks them. */
    s = open_ok(dir, 0);
    for (i = 2; i <= 400; i++)
        ck_assert_int_eq(put_count_pad(s, "c", i, 2000), 0);
    keel_store_close(s);
    t_new = raw_txnid(dir);
    ck_assert_uint_gt(t_new, t_old);
    expect_count(dir, 0, 400);
    spill(dir, "data.mdb", old, old_len);
    ck_assert_int_eq(open_rc(dir, KEEL_DURABILITY_FSYNC, 0, &s, err,
                             sizeof err),
                     KEEL_ECORRUPT);
    ck_assert_msg(strstr(err, "older than the checkpoint") != NULL, "%s",
                  err);
    /* Refused again: nothing was changed by the refusal. */
    ck_assert_int_eq(open_rc(dir, KEEL_DURABILITY_FSYNC, 0, &s, err,
                             sizeof err),
                     KEEL_ECORRUPT);
    /* The operator's choice: the data file as it was copied. */
    expect_count(dir, 1, 1);
    expect_count(dir, 0, 1);
    free(old);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A client may store any bytes, including ones shaped like a log record
 * of a far newer generation, or like later records of the current run
 * vouching for everything, in this log's format or an older one: records
 * are hashed with the log's own secret seed, and a log holds records of
 * one format only, so these are never taken for records, and the store
 * opens after a clean close and after a crash whose last record is torn.
 * (A record of the first format, "KWAL", unseeded, was taken for one in
 * any log: forged with a newer generation, it made the store refuse to
 * open.) */
static size_t forged_record(uint8_t *p, uint64_t lsn, uint64_t gen, int kind)
{
    static const uint32_t magics[] = {0x4b574c33u, 0x4b574c32u, 0x4b57414cu};
    static const size_t sizes[] = {56, 48, 40};
    uint32_t magic = magics[kind], ngroups = 0;
    size_t size = sizes[kind];
    uint64_t zero = 0, h;

    memcpy(p + 8, &magic, 4);
    memcpy(p + 12, &ngroups, 4);
    memcpy(p + 16, &lsn, 8);
    memcpy(p + 24, &zero, 8);
    memcpy(p + 32, &gen, 8);
    if (kind < 2)
        memcpy(p + 40, &lsn, 8); /* synced: vouches for everything */
    if (kind == 0) {
        h = XXH3_64bits(p + 8, 40); /* the header hash, guessed unseeded */
        memcpy(p + 48, &h, 8);
    }
    h = XXH3_64bits(p + 8, size - 8);
    memcpy(p, &h, 8);
    return size;
}

static int put_bytes(keel_store *s, const char *id, const void *v, size_t n)
{
    uint8_t k[KEEL_KEY_MAX];
    keel_batch *b = keel_batch_create();
    int kn = key_of(k, id), rc, st = 0;

    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 1, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)kn, 1, v, n), 0);
    rc = keel_store_commit(s, b);
    if (rc == 0)
        keel_batch_group(b, 0, &st);
    keel_batch_destroy(b);
    return rc != 0 ? rc : st;
}

START_TEST(test_forged_records_in_values)
{
    char *dir = tu_tmpdir("recov");
    uint8_t v[3 * 9 * WAL_HDR];
    off_t offs[64];
    keel_store *s;
    size_t n = 0;
    int fd;

    /* Generation 2^62 (evidence of a newer checkpoint), and lsn 1000 of
     * every generation up to 8, vouching for all before it; in each
     * format. */
    for (int kind = 0; kind < 3; kind++) {
        n += forged_record(v + n, 0, 1ull << 62, kind);
        for (uint64_t g = 1; g <= 8; g++)
            n += forged_record(v + n, 1000, g, kind);
    }
    s = open_ok(dir, 0);
    ck_assert_int_eq(put_bytes(s, "forged", v, n), 0);
    keel_store_close(s);
    s = open_ok(dir, 0);
    keel_store_close(s);

    /* The forged bytes inside the torn last record of a crashed run. */
    {
        pid_t pid = fork();
        int status;

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            s = open_ok(dir, 0);
            for (int i = 1; i <= 5; i++)
                if (put_count(s, "c", i) != 0)
                    _exit(10);
            if (put_bytes(s, "forged", v, n) != 0)
                _exit(11);
            _exit(0);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "child");
    }
    ck_assert_int_eq(wal_offsets(dir, offs, 64), 6);
    fd = open_file(dir, KEEL_WAL_NAME);
    ck_assert_int_eq(ftruncate(fd, offs[5] + WAL_HDR + 20), 0);
    ck_assert_int_eq(ftruncate(fd, offs[5] + 4096), 0);
    close(fd);
    flip(dir, KEEL_WAL_NAME, offs[5] + 2); /* the torn record's hash */
    expect_count(dir, 0, 5);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The first checkpoint of a new directory cut short (the only slot ever
 * written is not valid) with nothing logged after it: nothing was lost,
 * and the store opens. */
START_TEST(test_first_checkpoint_torn)
{
    char *dir = tu_tmpdir("recov");
    pid_t pid = fork();
    int status;

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        (void)open_ok(dir, 0);
        _exit(0); /* dies after its first checkpoint, nothing written */
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    flip(dir, KEEL_CKPT_NAME, newest_slot(dir) + 200);
    count_once(dir, 1);
    expect_count(dir, 0, 1);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The older slot damaged: the newest is in force, nothing to say. */
START_TEST(test_older_checkpoint_damaged)
{
    char *dir = tu_tmpdir("recov");

    count_once(dir, 1);
    child_counts(dir, 2, 20);
    flip(dir, KEEL_CKPT_NAME, (newest_slot(dir) ? 0 : SLOT1) + 100);
    expect_count(dir, 0, 20);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The mark a checkpoint made during a replay leaves: a record of a newer
 * generation than any before it, found wherever it is, and never taken
 * for a record of a run. */
START_TEST(test_wal_mark)
{
    char *dir = tu_tmpdir("recov");
    keel_batch *scratch = keel_batch_create();
    keel_wal w;
    keel_wal_end end;
    uint64_t off = 0, last;

    ck_assert_int_eq(keel_wal_open(&w, dir), 0);
    ck_assert_int_eq(keel_wal_newer_gen(&w, 0, &off), 0);
    ck_assert_int_eq(keel_wal_mark(&w, 7), 0);
    ck_assert_int_eq(keel_wal_newer_gen(&w, 6, &off), 1);
    ck_assert_uint_eq(off, WAL_START);
    ck_assert_int_eq(keel_wal_newer_gen(&w, 7, &off), 0);
    ck_assert_int_eq(keel_wal_replay(&w, 0, 0, 7, scratch, NULL, NULL, &last,
                                     &end),
                     0);
    ck_assert_uint_eq(last, 0);
    ck_assert_int_eq(end.kind, KEEL_WAL_END_CLEAN);
    keel_wal_close(&w);
    keel_batch_destroy(scratch);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Bytes of a stored value shaped like record headers, each claiming a
 * body as long as the file allows, in every format, cost the looks for
 * records past damage nothing: a header's own hash (seeded) rejects them
 * before their bodies are read. (Before it, each forged header of the
 * log's format made every open read and hash the body it claimed: a
 * value of 2 MiB of them took seconds, one of 64 MiB hours.) */
START_TEST(test_forged_headers_are_not_read_past)
{
    char *dir = tu_tmpdir("recov");
    size_t vlen = 64 << 10, n = 0;
    uint8_t *v = calloc(1, vlen);
    off_t fsize = WAL_START + (off_t)vlen + (8 << 20);
    uint64_t off = 0;
    keel_wal w;
    int fd;

    ck_assert_ptr_nonnull(v);
    while (n + 3 * WAL_HDR <= vlen)
        for (int kind = 0; kind < 3; kind++) {
            size_t k = forged_record(v + n, 1, UINT64_MAX - 1, kind);
            uint64_t len = (uint64_t)(fsize - WAL_START) - n - k;
            memcpy(v + n + 24, &len, 8); /* a body to the file's end */
            n += k;
        }
    ck_assert_int_eq(keel_wal_open(&w, dir), 0);
    keel_wal_close(&w);
    fd = open_file(dir, KEEL_WAL_NAME);
    ck_assert_int_eq(pwrite(fd, v, vlen, WAL_START), (ssize_t)vlen);
    ck_assert_int_eq(ftruncate(fd, fsize), 0);
    close(fd);
    ck_assert_int_eq(keel_wal_open(&w, dir), 0);
    ck_assert_int_eq(keel_wal_newer_gen(&w, 1, &off), 0);
    ck_assert_uint_eq(w.body_bytes, 0);
    keel_wal_close(&w);
    free(v);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ----------------------------------------------------- written ahead */

/* A crash after the log crossed a stretch it wrote ahead; then after the
 * next open's checkpoint started it again, a new generation over the
 * first one's records and zeros; then after that generation ran past all
 * of them into a stretch of its own. Every acknowledged count comes
 * back, and no record of an older generation does. */
START_TEST(test_log_ahead_crash_over_older_gen)
{
    char *dir = tu_tmpdir("recov");
    off_t offs[64];

    child_counts_big(dir, 1, 20, 600);
    ck_assert_int_eq(wal_offsets(dir, offs, 64), 20);
    ck_assert_int_gt(offs[19], WAL_AHEAD);
    ck_assert_int_eq(wal_size(dir), 2 * WAL_AHEAD);
    ck_assert(wal_dense(dir));
    expect_count(dir, 0, 20);
    /* Small records at the start, the first generation's behind them. */
    child_counts(dir, 21, 25);
    ck_assert_int_eq(wal_offsets(dir, offs, 64), 5);
    ck_assert_int_eq(wal_size(dir), 2 * WAL_AHEAD);
    expect_count(dir, 0, 25);
    /* Over all of it and on into a third MiB written ahead. */
    child_counts_big(dir, 26, 60, 600);
    ck_assert_int_eq(wal_offsets(dir, offs, 64), 35);
    ck_assert_int_gt(offs[34], 2 * WAL_AHEAD);
    ck_assert_int_eq(wal_size(dir), 3 * WAL_AHEAD);
    ck_assert(wal_dense(dir));
    expect_count(dir, 0, 60);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A log as a version that did not write ahead leaves it: the records,
 * and the file's end right after the last one (not on a MiB). The store
 * replays it, starts it again, and once its records pass that end it
 * writes ahead from there; a crash then loses nothing. */
START_TEST(test_log_ahead_from_unaligned_end)
{
    char *dir = tu_tmpdir("recov");
    off_t offs[64], cut;
    uint64_t len;
    int fd;

    child_counts_big(dir, 1, 10, 600);
    ck_assert_int_eq(wal_offsets(dir, offs, 64), 10);
    fd = open_file(dir, KEEL_WAL_NAME);
    ck_assert_int_eq(pread(fd, &len, 8, offs[9] + 24), 8);
    cut = offs[9] + WAL_HDR + (off_t)len;
    ck_assert_int_lt(cut, WAL_AHEAD);
    ck_assert_int_eq(ftruncate(fd, cut), 0);
    close(fd);
    expect_count(dir, 0, 10);
    ck_assert_int_eq(wal_size(dir), cut);
    child_counts_big(dir, 11, 30, 600);
    ck_assert_int_eq(wal_offsets(dir, offs, 64), 20);
    ck_assert_int_gt(offs[19], WAL_AHEAD);
    ck_assert_int_eq(wal_size(dir), 2 * WAL_AHEAD);
    ck_assert(wal_dense(dir));
    expect_count(dir, 0, 30);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static int count_cb(keel_batch *b, uint64_t lsn, uint64_t off, void *data)
{
    (void)b;
    (void)lsn;
    (void)off;
    (*(int *)data)++;
    return 0;
}

/* Appends a record of b's first group as lsn: 0 or an errno. */
static int wal_append(keel_wal *w, keel_batch *b, uint64_t lsn)
{
    int rc;

    keel_wal_rec_begin(w);
    rc = keel_wal_rec_group(w, b, 0);
    if (rc == 0)
        rc = keel_wal_rec_append(w, lsn, lsn - 1);
    if (rc == 0)
        keel_wal_rec_done(w);
    return rc;
}

/* A log of file version 1 (an older keel's: records of "KWL2", whose
 * header has no hash of its own) is read as before; the restart after
 * the next checkpoint gives it a new header, of version 2, and the
 * records from then on are of "KWL3". */
START_TEST(test_version1_log_read_then_upgraded)
{
    char *dir = tu_tmpdir("recov");
    keel_batch *scratch = keel_batch_create();
    keel_batch *b = keel_batch_create();
    uint8_t hdr[WAL_START], rec[48], k[KEEL_KEY_MAX];
    uint32_t magic = 0x4b574c48u, version = 1, ngroups = 0;
    uint64_t seed = 0x1234567890abcdefull, h, lsn = 1, zero = 0, gen = 5;
    uint64_t last = 0;
    keel_wal_end end;
    keel_wal w;
    int fd, n = 0, kn = key_of(k, "c");

    memset(hdr, 0, sizeof hdr);
    memcpy(hdr, &magic, 4);
    memcpy(hdr + 4, &version, 4);
    memcpy(hdr + 8, &seed, 8);
    h = XXH3_64bits(hdr, 16);
    memcpy(hdr + 16, &h, 8);
    magic = 0x4b574c32u;
    memcpy(rec + 8, &magic, 4);
    memcpy(rec + 12, &ngroups, 4);
    memcpy(rec + 16, &lsn, 8);
    memcpy(rec + 24, &zero, 8);
    memcpy(rec + 32, &gen, 8);
    memcpy(rec + 40, &zero, 8);
    h = XXH3_64bits_withSeed(rec + 8, 40, seed);
    memcpy(rec, &h, 8);
    {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, KEEL_WAL_NAME);
        fd = open(path, O_RDWR | O_CREAT, 0600);
    }
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, hdr, sizeof hdr, 0), (ssize_t)sizeof hdr);
    ck_assert_int_eq(pwrite(fd, rec, sizeof rec, WAL_START),
                     (ssize_t)sizeof rec);
    close(fd);

    ck_assert_int_eq(keel_wal_open(&w, dir), 0);
    ck_assert_uint_eq(w.version, 1);
    ck_assert_int_eq(keel_wal_replay(&w, 0, 0, gen, scratch, count_cb, &n,
                                     &last, &end),
                     0);
    ck_assert_int_eq(n, 1);
    ck_assert_uint_eq(last, 1);
    ck_assert_int_eq(keel_wal_restart(&w), 0);
    ck_assert_uint_eq(w.version, 2);
    w.gen = 6;
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 1, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)kn, 1, "1", 1), 0);
    ck_assert_int_eq(wal_append(&w, b, 1), 0);
    keel_wal_close(&w);
    fd = open_file(dir, KEEL_WAL_NAME);
    ck_assert_int_eq(pread(fd, rec, sizeof rec, WAL_START),
                     (ssize_t)sizeof rec);
    ck_assert_int_eq(pread(fd, hdr, 8, 0), 8);
    close(fd);
    ck_assert_int_eq(memcmp(rec + 8, "3LWK", 4), 0);
    /* A file magic a keel of version 1 logs takes for a damaged header:
     * it refuses the store rather than read none of these records. */
    ck_assert_int_eq(memcmp(hdr, "ILWK", 4), 0);
    ck_assert_int_eq(keel_wal_open(&w, dir), 0);
    ck_assert_uint_eq(w.version, 2);
    n = 0;
    ck_assert_int_eq(keel_wal_replay(&w, 0, 0, 6, scratch, count_cb, &n,
                                     &last, &end),
                     0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(end.kind, KEEL_WAL_END_CLEAN);
    keel_wal_close(&w);
    keel_batch_destroy(b);
    keel_batch_destroy(scratch);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A log without a header (the first format, records of "KWAL" from
 * offset 0): a checkpoint's mark made while replaying it, before its
 * first restart gives it a header, is found by the look for newer
 * generations; a restart whose new header cannot be written says so
 * (the store then stops: records appended in the old format after a
 * header that may be on the disk would be nobody's at the next open). */
START_TEST(test_legacy_log_marks_and_failed_upgrade)
{
    char *dir = tu_tmpdir("recov");
    uint8_t rec[40];
    uint32_t magic = 0x4b57414cu, ngroups = 0;
    uint64_t h, lsn = 1, zero = 0, gen = 2, off = 0;
    char path[512];
    keel_wal w;
    int fd;

    memcpy(rec + 8, &magic, 4);
    memcpy(rec + 12, &ngroups, 4);
    memcpy(rec + 16, &lsn, 8);
    memcpy(rec + 24, &zero, 8);
    memcpy(rec + 32, &gen, 8);
    h = XXH3_64bits(rec + 8, 32);
    memcpy(rec, &h, 8);
    snprintf(path, sizeof path, "%s/%s", dir, KEEL_WAL_NAME);
    fd = open(path, O_RDWR | O_CREAT, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, rec, sizeof rec, 0), (ssize_t)sizeof rec);
    close(fd);

    ck_assert_int_eq(keel_wal_open(&w, dir), 0);
    ck_assert_int_eq(w.legacy, 1);
    ck_assert_int_eq(keel_wal_mark(&w, 7), 0);
    ck_assert_int_eq(keel_wal_newer_gen(&w, 6, &off), 1);
    ck_assert_int_eq(keel_wal_newer_gen(&w, 7, &off), 0);
    /* The header cannot be written (a descriptor opened read-only). */
    close(w.fd);
    w.fd = open(path, O_RDONLY);
    ck_assert_int_ge(w.fd, 0);
    ck_assert_int_ne(keel_wal_restart(&w), 0);
    ck_assert_int_eq(w.legacy, 1);
    keel_wal_close(&w);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A mark made after the log wrote ahead goes past the zeros, at the
 * file's end: found there, and still no part of the run the replay
 * ends (cleanly) at the zeros. */
START_TEST(test_wal_mark_past_zeros)
{
    char *dir = tu_tmpdir("recov");
    keel_batch *b = keel_batch_create(), *scratch = keel_batch_create();
    uint8_t k[KEEL_KEY_MAX];
    keel_wal w;
    keel_wal_end end;
    uint64_t off = 0, last;
    int kn = key_of(k, "c"), n = 0;

    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 1, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)kn, 1, "1", 1), 0);
    ck_assert_int_eq(keel_wal_open(&w, dir), 0);
    ck_assert_int_eq(keel_wal_restart(&w), 0);
    w.gen = 3;
    ck_assert_int_eq(wal_append(&w, b, 1), 0);
    ck_assert_int_eq(wal_size(dir), WAL_AHEAD);
    ck_assert_int_eq(keel_wal_mark(&w, 7), 0);
    ck_assert_int_eq(wal_size(dir), WAL_AHEAD + WAL_HDR);
    ck_assert_int_eq(keel_wal_newer_gen(&w, 6, &off), 1);
    ck_assert_uint_eq(off, WAL_AHEAD);
    ck_assert_int_eq(keel_wal_newer_gen(&w, 7, &off), 0);
    ck_assert_int_eq(keel_wal_replay(&w, 0, 0, 3, scratch, count_cb, &n,
                                     &last, &end),
                     0);
    ck_assert_int_eq(n, 1);
    ck_assert_uint_eq(last, 1);
    ck_assert_int_eq(end.kind, KEEL_WAL_END_CLEAN);
    keel_wal_close(&w);
    keel_batch_destroy(b);
    keel_batch_destroy(scratch);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Writing ahead cut short part way by the file size limit (as by a full
 * disk): the zeros written are taken back and the records lengthen the
 * file, as before the log wrote ahead, until one does not fit. After a
 * restart with room again, the log writes ahead once more, over the end
 * of the record that did not fit. Every record appended replays, and
 * nothing else. */
START_TEST(test_wal_ahead_cut_short)
{
    char *dir = tu_tmpdir("recov");
    keel_batch *b = keel_batch_create(), *scratch = keel_batch_create();
    static char v[60000];
    uint8_t k[KEEL_KEY_MAX];
    struct rlimit old, lim;
    keel_wal w;
    keel_wal_end end;
    uint64_t lsn = 1, last, off;
    int kn = key_of(k, "c"), rc = 0, n = 0;

    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    if (old.rlim_cur != RLIM_INFINITY && old.rlim_cur < 4 * WAL_AHEAD) {
        printf("test_wal_ahead_cut_short: file size limit too low: "
               "not run\n");
        goto out;
    }
    signal(SIGXFSZ, SIG_IGN);
    memset(v, 'v', sizeof v);
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 1, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)kn, 1, v, sizeof v), 0);
    ck_assert_int_eq(keel_wal_open(&w, dir), 0);
    /* As the store's first checkpoint does: */
    ck_assert_int_eq(keel_wal_restart(&w), 0);
    w.gen = 5;
    ck_assert_int_eq(wal_append(&w, b, lsn), 0);
    ck_assert_int_eq(wal_size(dir), WAL_AHEAD);
    /* The limit falls inside one of the writes of zeros. */
    lim.rlim_cur = WAL_AHEAD + WAL_AHEAD / 2 + 1000;
    lim.rlim_max = old.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    while (lsn < 100 && (rc = wal_append(&w, b, lsn + 1)) == 0) {
        lsn++;
        if (w.pos > WAL_AHEAD)
            ck_assert_int_eq(wal_size(dir), (off_t)w.pos);
        else
            ck_assert_int_eq(wal_size(dir), WAL_AHEAD);
    }
    ck_assert_int_eq(rc, EFBIG);
    ck_assert_uint_gt(w.pos, WAL_AHEAD);
    ck_assert_int_le(wal_size(dir), (off_t)lim.rlim_cur);
    ck_assert(wal_dense(dir));
    /* The record that did not fit is a torn tail; all before it replay. */
    ck_assert_int_eq(keel_wal_replay(&w, 0, 0, 5, scratch, count_cb, &n,
                                     &last, &end),
                     0);
    ck_assert_int_eq(n, (int)lsn);
    ck_assert_uint_eq(last, lsn);
    ck_assert_int_eq(end.kind, KEEL_WAL_END_TORN);

    /* Room again, and the log starts again as a new generation. */
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    ck_assert_int_eq(keel_wal_restart(&w), 0);
    w.gen = 6;
    lsn = 0;
    while (lsn < 100 && wal_size(dir) < 2 * WAL_AHEAD)
        ck_assert_int_eq(wal_append(&w, b, ++lsn), 0);
    ck_assert_int_eq(wal_size(dir), 2 * WAL_AHEAD);
    ck_assert(wal_dense(dir));
    n = 0;
    ck_assert_int_eq(keel_wal_replay(&w, 0, 0, 6, scratch, count_cb, &n,
                                     &last, &end),
                     0);
    ck_assert_int_eq(n, (int)lsn);
    ck_assert_int_eq(end.kind, KEEL_WAL_END_CLEAN);
    ck_assert_int_eq(keel_wal_newer_gen(&w, 5, &off), 1);
    ck_assert_uint_eq(off, WAL_START);
    ck_assert_int_eq(keel_wal_newer_gen(&w, 6, &off), 0);
    keel_wal_close(&w);
out:
    keel_batch_destroy(b);
    keel_batch_destroy(scratch);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Writes file (64 KiB at a time, at most chunks times) until less than
 * leave bytes of its file system are free. */
static void fill_disk(const char *file, uint64_t leave, int chunks)
{
    static char pad[1 << 16];
    int fd = open(file, O_CREAT | O_WRONLY, 0600);

    ck_assert_int_ge(fd, 0);
    memset(pad, 'x', sizeof pad);
    for (int i = 0; i < chunks; i++) {
        struct statvfs sv;

        ck_assert_int_eq(fstatvfs(fd, &sv), 0);
        if ((uint64_t)sv.f_bavail * sv.f_frsize < leave ||
            write(fd, pad, sizeof pad) <= 0)
            break;
    }
    close(fd);
}

/* A disk that fills while the log writes ahead, then frees room, with a
 * crash at the end. The log crosses its first MiB with less than a MiB
 * free: the zeros are taken back and records lengthen the file until the
 * disk is full (writes then fail with KEEL_ENOSPC, or the log starts
 * again after a checkpoint). Room freed, the log writes ahead again, and
 * the crash loses no acknowledged count. In a small tmpfs in a mount
 * namespace of the test's own; needs the right to mount. */
START_TEST(test_log_ahead_disk_fills)
{
    char *dir = tu_tmpdir("recov");
    char path[600], filler[600];
    pid_t pid;
    int status;

    if (unshare(CLONE_NEWNS) != 0 ||
        mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", dir, "tmpfs", 0, "size=6m") != 0) {
        printf("test_log_ahead_disk_fills: cannot mount a tmpfs (%s): "
               "not run\n", strerror(errno));
        tu_rmrf(dir);
        free(dir);
        return;
    }
    snprintf(path, sizeof path, "%s/d", dir);
    snprintf(filler, sizeof filler, "%s/filler", dir);
    count_once(path, 1);
    ck_assert_int_eq(wal_size(path), WAL_AHEAD);
    fill_disk(filler, 512u << 10, 128);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_store *s = open_ok(path, 0);
        keel_store_stats st;
        int ok = 1, full = 0;

        for (int i = 2; i <= 150; i++) {
            int rc = put_count_big(s, "c", i, 600);
            off_t size = wal_size(path);

            if (rc == 0)
                ok = i;
            else if (rc != KEEL_ENOSPC)
                _exit(201);
            /* Past the first MiB with no room for the next: no zeros. */
            if (!full && size > WAL_AHEAD && size % WAL_AHEAD == 0)
                _exit(202);
            keel_store_stats_get(s, &st);
            if (!full && (rc != 0 || st.checkpoints > 0)) {
                full = 1;
                if (unlink(filler) != 0)
                    _exit(203);
            } else if (full && size > WAL_AHEAD && size % WAL_AHEAD == 0) {
                _exit(ok); /* written ahead again: the crash */
            }
        }
        _exit(204);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) > 1 &&
                      WEXITSTATUS(status) <= 150,
                  "child status %d", status);
    ck_assert_int_eq(wal_size(path) % WAL_AHEAD, 0);
    ck_assert(wal_dense(path));
    expect_count(path, 0, WEXITSTATUS(status));
    ck_assert_int_eq(umount(dir), 0);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------ disk full */

/* A data directory made on a disk that then fills before its second
 * checkpoint was ever written: the checkpoint file's room was reserved
 * when it was made, so the store keeps checkpointing. Reads keep working,
 * writes get KEEL_ENOSPC, and the store opens again while the disk stays
 * full, every acknowledged write there. In a small tmpfs in a mount
 * namespace of the test's own; needs the right to mount. */
static void fresh_disk_full_case(int durability)
{
    char *dir = tu_tmpdir("recov");
    char err[1024], path[600];
    keel_store *s;
    int ok = 0, rc = 0;

    if (unshare(CLONE_NEWNS) != 0 ||
        mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", dir, "tmpfs", 0, "size=3m") != 0) {
        printf("fresh_disk_full: cannot mount a tmpfs (%s): not run\n",
               strerror(errno));
        tu_rmrf(dir);
        free(dir);
        return;
    }
    ck_assert_int_eq(mkdir(strcat(strcpy(path, dir), "/d"), 0700), 0);
    {
        keel_store_options o = {0};

        o.path = path;
        o.shard_count = 64;
        o.durability = durability;
        o.initial_map_size = 1 << 20;
        ck_assert_int_eq(keel_store_open(&o, &s, err, sizeof err), 0);
    }
    /* Most of the rest of the disk goes to a file of the test's own, so
     * that the store fills it before its second checkpoint. */
    snprintf(err, sizeof err, "%s/filler", dir);
    fill_disk(err, 1u << 20, 64);
    /* Values of 3000 bytes under keys of their own, then the count: with
     * durability none the map's blocks are taken ahead, so only values
     * that outgrow the map fill the disk. */
    for (int i = 1; i <= 2000 && rc == 0; i++) {
        char id[16];

        snprintf(id, sizeof id, "v%d", i);
        rc = put_count_pad(s, id, i, 3000);
        if (rc == 0)
            rc = put_count(s, "c", i);
        if (rc == 0)
            ok = i;
    }
    ck_assert_int_eq(rc, KEEL_ENOSPC);
    ck_assert_int_gt(ok, 0);
    ck_assert_int_eq(count_of(s, "c"), ok);
    /* The store still works: a failed write changed nothing. */
    ck_assert_int_eq(count_of(s, "v1"), 1);
    keel_store_close(s);
    /* Opened again on the full disk. */
    rc = open_rc(path, durability, 0, &s, err, sizeof err);
    ck_assert_msg(rc == 0, "open on a full disk: %s (%s)", keel_err_name(rc),
                  err);
    ck_assert_int_eq(count_of(s, "c"), ok);
    ck_assert_int_eq(count_of(s, "v1"), 1);
    /* Writes go on where room is left (the open's checkpoint may have
     * freed some), and fail cleanly where not. */
    rc = put_count_pad(s, "w", 7, 6000);
    ck_assert_msg(rc == 0 || rc == KEEL_ENOSPC, "%s", keel_err_name(rc));
    ck_assert_int_eq(count_of(s, "w"), rc == 0 ? 7 : 0);
    keel_store_close(s);
    /* A crash after a commit on the full disk, and recovery on it. */
    {
        pid_t pid = fork();
        int status, wrc = 0;

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            if (open_rc(path, durability, 0, &s, err, sizeof err) != 0)
                _exit(10);
            wrc = put_count(s, "c", ok);
            _exit(wrc == 0 ? 0 : 11);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "child: %d", status);
    }
    rc = open_rc(path, durability, 0, &s, err, sizeof err);
    ck_assert_msg(rc == 0, "recovery on a full disk: %s (%s)",
                  keel_err_name(rc), err);
    ck_assert_int_eq(count_of(s, "c"), ok);
    keel_store_close(s);
    ck_assert_int_eq(umount(dir), 0);
    tu_rmrf(dir);
    free(dir);
}

START_TEST(test_fresh_dir_disk_full)
{
    fresh_disk_full_case(KEEL_DURABILITY_FSYNC);
}
END_TEST

START_TEST(test_fresh_dir_disk_full_none)
{
    fresh_disk_full_case(KEEL_DURABILITY_NONE);
}
END_TEST


/* ----------------------------------------------- writes outside the log */

/* Marks type as of unknown capability in the closed store at dir, as an
 * upgrade from format 2 leaves the types of its records: the log and
 * checkpoint go first (after a clean close the data file is the whole
 * state), so that the open takes the file as it stands. */
static void type_unknown(const char *dir, const char *type)
{
    char path[512];
    uint8_t mark = 0xff; /* typetab.h: TT_UNKNOWN_MARK */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {strlen(type), (void *)type}, v = {1, &mark};

    snprintf(path, sizeof path, "%s/%s", dir, KEEL_CKPT_NAME);
    ck_assert_int_eq(unlink(path), 0);
    snprintf(path, sizeof path, "%s/%s", dir, KEEL_WAL_NAME);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(env, 4), 0);
    ck_assert_int_eq(mdb_env_open(env, dir, 0, 0600), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, "types", 0, &dbi), 0);
    ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* A node declares the capability of a type its store lists as unknown
 * (keel_store_type_learn, at every start), then deletes a unit holding
 * records of that type (a wipe or a purge, acknowledged: flushed), and
 * dies before the next checkpoint. The deletion's log record was
 * committed on a state where the type was known; the open must replay
 * it and come up without the unit's records. */
START_TEST(test_type_learned_then_unit_deleted_crash)
{
    char *dir = tu_tmpdir("recov");
    char err[1024];
    keel_store *s;
    pid_t pid;
    int status, rc;

    count_once(dir, 7);
    type_unknown(dir, TYPE);
    s = open_ok(dir, 0);
    ck_assert_int_eq(count_of(s, "c"), 7);
    keel_store_close(s);

    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_batch *b = keel_batch_create();
        int st = -1;

        s = open_ok(dir, 0);
        if (keel_store_type_learn(s, TYPE, "") != 0)
            _exit(10);
        if (keel_batch_begin_group(b, NULL, 1, 1, NULL) != 0 ||
            keel_batch_del_unit(b, 0) != 0 || keel_store_commit(s, b) != 0)
            _exit(11);
        keel_batch_group(b, 0, &st);
        if (st != 0 || count_of(s, "c") != 0)
            _exit(12);
        _exit(0); /* acknowledged; dies without closing */
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d",
                  status);

    rc = open_rc(dir, KEEL_DURABILITY_FSYNC, 0, &s, err, sizeof err);
    ck_assert_msg(rc == 0, "open after the crash: %s (%s)", keel_err_name(rc),
                  err);
    ck_assert_int_eq(count_of(s, "c"), 0);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST


/* Recovering to the last good state takes the data file as it stands,
 * once it reads through whole. After a machine crash that file may end
 * before the pages its newest meta page counts (the meta page reached
 * the disk, the file's new size did not): the open must refuse it as
 * not reading through, not die reading past the file's end. */
START_TEST(test_recover_data_file_cut_short)
{
    char *dir = tu_tmpdir("recov");
    char err[1024];
    keel_store *s;
    pid_t pid;
    int fd, status;

    count_once(dir, 1);
    child_counts(dir, 2, 60);
    flip(dir, KEEL_CKPT_NAME, newest_slot(dir) + 100);
    fd = open_file(dir, "data.mdb");
    ck_assert_int_eq(ftruncate(fd, 3 * 4096), 0);
    close(fd);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int rc = open_rc(dir, KEEL_DURABILITY_FSYNC, 1, &s, err, sizeof err);

        _exit(rc == KEEL_ECORRUPT ? 0 : rc == 0 ? 20 : 21);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(!WIFSIGNALED(status), "the open died of signal %d",
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the open: exit %d", WEXITSTATUS(status));
    tu_rmrf(dir);
    free(dir);
}
END_TEST


/* n records of 4000 bytes for actor "big" of type TYPE, version v. */
static int put_big(keel_store *s, int v, int nrec)
{
    uint8_t k[KEEL_KEY_MAX];
    keel_batch *b = keel_batch_create();
    char e[32], val[4000];
    int rc, st = 0;

    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 1, 1, NULL), 0);
    for (int i = 0; i < nrec; i++) {
        int n;

        snprintf(e, sizeof e, "e%04d", i);
        n = keel_key_encode(k, 1, TYPE, strlen(TYPE), "big", 3, e, strlen(e));
        ck_assert_int_gt(n, 0);
        memset(val, 'a' + (v + i) % 26, sizeof val);
        ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, (uint64_t)v, val,
                                        sizeof val),
                         0);
    }
    rc = keel_store_commit(s, b);
    if (rc == 0)
        keel_batch_group(b, 0, &st);
    keel_batch_destroy(b);
    return rc != 0 ? rc : st;
}

/* Two types of unknown capability learned at a start (two commits outside
 * the log, nothing logged yet), then a commit that finds the map full: the
 * map grows, and the commits after it must still leave the checkpointed
 * state's pages alone, so that a crash goes back to it whole. */
START_TEST(test_types_learned_then_map_grows_crash)
{
    char *dir = tu_tmpdir("recov");
    char err[1024], path[512];
    keel_store *s;
    struct stat st;
    pid_t pid;
    int status, rc;

    s = open_ok(dir, 0);
    ck_assert_int_eq(put_count(s, "c", 7), 0);
    {
        uint8_t k[KEEL_KEY_MAX];
        keel_batch *b = keel_batch_create();
        int n = keel_key_encode(k, 2, "u", 1, "d", 1, NULL, 0);

        ck_assert_int_eq(keel_batch_begin_group(b, NULL, 2, 1, NULL), 0);
        ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, "8", 1), 0);
        ck_assert_int_eq(keel_store_commit(s, b), 0);
        keel_batch_destroy(b);
    }
    keel_store_close(s);
    type_unknown(dir, TYPE);
    {
        /* A second type of unknown capability, the same way (the
         * data file is the whole state now). */
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        uint8_t mark = 0xff;
        MDB_val k = {1, "u"}, v = {1, &mark};

        ck_assert_int_eq(mdb_env_create(&env), 0);
        ck_assert_int_eq(mdb_env_set_maxdbs(env, 4), 0);
        ck_assert_int_eq(mdb_env_open(env, dir, 0, 0600), 0);
        ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
        ck_assert_int_eq(mdb_dbi_open(txn, "types", 0, &dbi), 0);
        ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
        ck_assert_int_eq(mdb_txn_commit(txn), 0);
        mdb_env_close(env);
    }
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    ck_assert_int_eq(stat(path, &st), 0);

    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_store_options o = {0};

        o.path = dir;
        o.shard_count = 64;
        o.durability = KEEL_DURABILITY_FSYNC;
        o.checkpoint_interval_ms = 3600u * 1000u;
        /* Room for the open and the two types, not for 1 MB. */
        o.initial_map_size = (uint64_t)st.st_size + (128u << 10);
        if (keel_store_open(&o, &s, err, sizeof err) != 0)
            _exit(10);
        if (keel_store_type_learn(s, TYPE, "") != 0 ||
            keel_store_type_learn(s, "u", "") != 0)
            _exit(11);
        /* 1 MB: the map grows (three times), nothing checkpointed. */
        if (put_big(s, 6, 250) != 0)
            _exit(12);
        for (int i = 8; i <= 24; i++)
            if (put_count(s, "c", i) != 0)
                _exit(13);
        _exit(0); /* all acknowledged; dies without closing */
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d",
                  status);

    rc = open_rc(dir, KEEL_DURABILITY_FSYNC, 0, &s, err, sizeof err);
    ck_assert_msg(rc == 0, "open after the crash: %s (%s)", keel_err_name(rc),
                  err);
    ck_assert_int_eq(count_of(s, "c"), 24);
    {
        uint8_t k[KEEL_KEY_MAX];
        keel_store_read *r;
        keel_record rec;

        ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
        for (int i = 0; i < 250; i++) {
            char e[32];
            int n;

            snprintf(e, sizeof e, "e%04d", i);
            n = keel_key_encode(k, 1, TYPE, strlen(TYPE), "big", 3, e,
                                strlen(e));
            rc = keel_store_get(r, k, (size_t)n, &rec);
            ck_assert_msg(rc == 0, "record %d: %s", i, keel_err_name(rc));
            ck_assert_uint_eq(rec.version, 6);
            ck_assert_uint_eq(rec.len, 4000);
            ck_assert_int_eq(((const char *)rec.data)[3999],
                             'a' + (6 + i) % 26);
        }
        keel_store_read_end(r);
    }
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *su = suite_create("store_recovery");
    TCase *tc = tcase_create("recovery");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_mid_log_damage_in_body);
    tcase_add_test(tc, test_mid_log_damage_in_header);
    tcase_add_test(tc, test_mid_log_damage_in_length);
    tcase_add_test(tc, test_first_record_damaged);
    tcase_add_test(tc, test_torn_tail_opens);
    tcase_add_test(tc, test_newest_checkpoint_damaged_refused);
    tcase_add_test(tc, test_newest_checkpoint_damaged_nothing_after);
    tcase_add_test(tc, test_both_checkpoints_damaged);
    tcase_add_test(tc, test_older_checkpoint_damaged);
    tcase_add_test(tc, test_newest_checkpoint_lost);
    tcase_add_test(tc, test_forged_records_in_values);
    tcase_add_test(tc, test_forged_headers_are_not_read_past);
    tcase_add_test(tc, test_version1_log_read_then_upgraded);
    tcase_add_test(tc, test_legacy_log_marks_and_failed_upgrade);
    tcase_add_test(tc, test_first_checkpoint_torn);
    tcase_add_test(tc, test_wal_mark);
    tcase_add_test(tc, test_fresh_dir_disk_full);
    tcase_add_test(tc, test_fresh_dir_disk_full_none);
    tcase_add_test(tc, test_log_ahead_crash_over_older_gen);
    tcase_add_test(tc, test_log_ahead_from_unaligned_end);
    tcase_add_test(tc, test_wal_ahead_cut_short);
    tcase_add_test(tc, test_wal_mark_past_zeros);
    tcase_add_test(tc, test_log_ahead_disk_fills);
    tcase_add_test(tc, test_type_learned_then_unit_deleted_crash);
    tcase_add_test(tc, test_recover_data_file_cut_short);
    tcase_add_test(tc, test_types_learned_then_map_grows_crash);
    tcase_add_test(tc, test_older_data_file_under_newer_checkpoint);
    tcase_add_test(tc, test_log_cut_inside_its_header);
    tcase_add_test(tc, test_log_cut_to_nothing);
    suite_add_tcase(su, tc);
    return su;
}

int main(void)
{
    return tu_run_suite(suite());
}
