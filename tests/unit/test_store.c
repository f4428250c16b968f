/* Unit tests of persistence/: keys, the LMDB store, batches and the
 * writer thread. Each test runs in its own process (check's fork mode)
 * with its own temporary directory. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <xxhash.h>

#include "gates.h"
#include "keel.h"
#include "persistence/store.h"
#include "testutil.h"

#define TYPE "t"

/* ------------------------------------------------------------- helpers */

static keel_store *open_store_opts(const char *path, uint32_t shards,
                                   int durability, uint64_t init,
                                   uint64_t max)
{
    keel_store_options o = {0};
    keel_store *s = NULL;
    char err[256] = "";
    int rc;

    o.path = path;
    o.shard_count = shards;
    o.durability = durability;
    o.initial_map_size = init;
    o.max_map_size = max;
    rc = keel_store_open(&o, &s, err, sizeof err);
    ck_assert_msg(rc == 0, "open %s: %s (%s)", path, keel_err_name(rc), err);
    return s;
}

static keel_store *open_store(const char *path)
{
    return open_store_opts(path, 64, KEEL_DURABILITY_FSYNC, 0, 0);
}

static off_t file_size(const char *dir, const char *name)
{
    char path[512];
    struct stat st;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    ck_assert_int_eq(stat(path, &st), 0);
    return st.st_size;
}

/* Bytes allocated to a file on the disk. */
static off_t file_blocks(const char *dir, const char *name)
{
    char path[512];
    struct stat st;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    ck_assert_int_eq(stat(path, &st), 0);
    return (off_t)st.st_blocks * 512;
}

static int mkkey(uint8_t *buf, uint16_t shard, const void *id, size_t idlen,
                 const char *entry)
{
    int n = keel_key_encode(buf, shard, TYPE, strlen(TYPE), id, idlen, entry,
                            entry ? strlen(entry) : 0);

    ck_assert_int_gt(n, 0);
    return n;
}

/* Reads key into a malloc'd copy (the record's data is only valid during
 * the read). Returns the get's status. */
static int read_copy(keel_store *s, const void *key, size_t klen,
                     keel_record *rec, char **data)
{
    keel_store_read *r;
    int rc;

    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    rc = keel_store_get(r, key, klen, rec);
    if (rc == 0 && data != NULL) {
        *data = malloc(rec->len + 1);
        ck_assert_ptr_nonnull(*data);
        memcpy(*data, rec->data, rec->len);
        (*data)[rec->len] = '\0';
        rec->data = *data;
    }
    keel_store_read_end(r);
    return rc;
}

static void expect_value(keel_store *s, const void *key, size_t klen,
                         const char *want)
{
    keel_record rec;
    char *data = NULL;
    int rc = read_copy(s, key, klen, &rec, &data);

    ck_assert_msg(rc == 0, "get: %s", keel_err_name(rc));
    ck_assert_uint_eq(rec.len, strlen(want));
    ck_assert_mem_eq(data, want, rec.len);
    free(data);
}

static void expect_absent(keel_store *s, const void *key, size_t klen)
{
    keel_record rec;

    ck_assert_int_eq(read_copy(s, key, klen, &rec, NULL), KEEL_ENOTFOUND);
}

static uint64_t fence_of(keel_store *s, const char *cap, uint16_t shard)
{
    keel_store_read *r;
    uint64_t e = 12345;

    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    ck_assert_int_eq(keel_store_fence_get(r, cap, shard, &e), 0);
    keel_store_read_end(r);
    return e;
}

/* One group, one put. */
static int commit_put(keel_store *s, const char *cap, uint16_t shard,
                      uint64_t epoch, const void *key, size_t klen,
                      uint64_t version, const char *val)
{
    keel_batch *b = keel_batch_create();
    int rc, st;

    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(keel_batch_begin_group(b, cap, shard, epoch, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, key, klen, version, val, strlen(val)),
                     0);
    rc = keel_store_commit(s, b);
    if (rc == 0) {
        keel_batch_group(b, 0, &st);
        rc = st;
    }
    keel_batch_destroy(b);
    return rc;
}

struct scan_out {
    size_t n;
    size_t cap;
    char **vals;
    uint8_t **keys;
    size_t *klens;
};

static int scan_collect(const uint8_t *key, size_t klen,
                        const keel_record *rec, void *data)
{
    struct scan_out *o = data;

    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 16;
        o->vals = realloc(o->vals, o->cap * sizeof *o->vals);
        o->keys = realloc(o->keys, o->cap * sizeof *o->keys);
        o->klens = realloc(o->klens, o->cap * sizeof *o->klens);
        ck_assert(o->vals && o->keys && o->klens);
    }
    o->vals[o->n] = strndup(rec->data, rec->len);
    o->keys[o->n] = malloc(klen);
    memcpy(o->keys[o->n], key, klen);
    o->klens[o->n] = klen;
    o->n++;
    return 0;
}

static void scan_free(struct scan_out *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->vals[i]);
        free(o->keys[i]);
    }
    free(o->vals);
    free(o->keys);
    free(o->klens);
    memset(o, 0, sizeof *o);
}

static void scan_prefix(keel_store *s, const void *prefix, size_t plen,
                        struct scan_out *o)
{
    keel_store_read *r;

    memset(o, 0, sizeof *o);
    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    ck_assert_int_eq(keel_store_scan(r, prefix, plen, scan_collect, o), 0);
    keel_store_read_end(r);
}

/* ---------------------------------------------------------------- keys */

START_TEST(test_key_roundtrip)
{
    static const uint8_t id[] = {'a', 0, 0xff, '\n', 0, 'z'};
    uint8_t buf[KEEL_KEY_MAX];
    keel_key_parts p;
    int n;

    n = keel_key_encode(buf, 0xbeef, "counter", 7, id, sizeof id, "e\0x", 3);
    ck_assert_int_eq(n, 2 + 1 + 7 + 2 + (int)sizeof id + 3);
    ck_assert_int_eq(buf[0], 0xbe);
    ck_assert_int_eq(buf[1], 0xef);
    ck_assert_int_eq(keel_key_decode(buf, (size_t)n, &p), 0);
    ck_assert_uint_eq(p.shard, 0xbeef);
    ck_assert_uint_eq(p.tlen, 7);
    ck_assert_mem_eq(p.type, "counter", 7);
    ck_assert_uint_eq(p.idlen, sizeof id);
    ck_assert_mem_eq(p.id, id, sizeof id);
    ck_assert_uint_eq(p.elen, 3);
    ck_assert_mem_eq(p.entry, "e\0x", 3);
    ck_assert_int_eq(keel_key_prefix_len(buf, (size_t)n), n - 3);

    /* The state blob: no entry; the empty id is an id too. */
    n = keel_key_encode(buf, 1, "t", 1, NULL, 0, NULL, 0);
    ck_assert_int_eq(n, 6);
    ck_assert_int_eq(keel_key_decode(buf, (size_t)n, &p), 0);
    ck_assert_uint_eq(p.idlen, 0);
    ck_assert_uint_eq(p.elen, 0);
    ck_assert_int_eq(keel_key_prefix_len(buf, (size_t)n), n);
}
END_TEST

START_TEST(test_key_limits)
{
    uint8_t buf[KEEL_KEY_MAX];
    char type[KEEL_MAX_TYPE_LEN + 1], id[KEEL_MAX_ID_LEN + 1];
    char entry[KEEL_MAX_ENTRY_KEY_LEN + 1];
    keel_key_parts p;
    int n;

    memset(type, 'T', sizeof type);
    memset(id, 0, sizeof id);
    memset(entry, 'E', sizeof entry);

    /* Every part at its limit: the largest key. */
    n = keel_key_encode(buf, 7, type, KEEL_MAX_TYPE_LEN, id, KEEL_MAX_ID_LEN,
                        entry, KEEL_MAX_ENTRY_KEY_LEN);
    ck_assert_int_eq(n, KEEL_KEY_MAX);
    ck_assert_int_eq(keel_key_decode(buf, (size_t)n, &p), 0);
    ck_assert_uint_eq(p.idlen, KEEL_MAX_ID_LEN);
    ck_assert_uint_eq(p.elen, KEEL_MAX_ENTRY_KEY_LEN);

    ck_assert_int_eq(keel_key_encode(buf, 7, type, KEEL_MAX_TYPE_LEN + 1, id,
                                     1, NULL, 0),
                     KEEL_ELIMIT);
    ck_assert_int_eq(keel_key_encode(buf, 7, "t", 1, id, KEEL_MAX_ID_LEN + 1,
                                     NULL, 0),
                     KEEL_ELIMIT);
    ck_assert_int_eq(keel_key_encode(buf, 7, "t", 1, id, 1, entry,
                                     KEEL_MAX_ENTRY_KEY_LEN + 1),
                     KEEL_ELIMIT);
    ck_assert_int_eq(keel_key_encode(buf, 7, "", 0, id, 1, NULL, 0),
                     KEEL_EINVAL);

    /* Truncated or inconsistent keys do not decode. */
    n = keel_key_encode(buf, 7, "type", 4, "id", 2, "e", 1);
    for (int len = 0; len < n - 1; len++)
        ck_assert_int_eq(keel_key_prefix_len(buf, (size_t)len),
                         KEEL_EMALFORMED);
    buf[2] = 0; /* empty type */
    ck_assert_int_eq(keel_key_decode(buf, (size_t)n, &p), KEEL_EMALFORMED);
}
END_TEST

/* --------------------------------------------------------------- store */

START_TEST(test_put_get_scan_neighbours)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    uint8_t k[KEEL_KEY_MAX], pre_ab[KEEL_KEY_MAX], pre_abc[KEEL_KEY_MAX];
    uint8_t pre_nul[KEEL_KEY_MAX];
    static const char nulid[] = {'a', 'b', 0};
    keel_batch *b = keel_batch_create();
    struct scan_out o;
    int n, pab, pabc, pnul, st;

    /* Three actors of one shard: "ab", "abc" (whose id starts with "ab")
     * and "ab\0". Each with a state blob and two entries. */
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 5, 1, NULL), 0);
    n = mkkey(k, 5, "ab", 2, NULL);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, "S-ab", 4), 0);
    n = mkkey(k, 5, "ab", 2, "x");
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, "ab-x", 4), 0);
    n = mkkey(k, 5, "ab", 2, "a");
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, "ab-a", 4), 0);
    n = mkkey(k, 5, "abc", 3, NULL);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, "S-abc", 5), 0);
    n = mkkey(k, 5, "abc", 3, "a");
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, "abc-a", 5), 0);
    n = mkkey(k, 5, nulid, 3, NULL);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, "S-nul", 5), 0);
    n = mkkey(k, 5, nulid, 3, "a");
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, "nul-a", 5), 0);
    ck_assert_uint_eq(keel_batch_group_count(b), 1);
    ck_assert_uint_eq(keel_batch_op_count(b), 7);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_batch_group(b, 0, &st);
    ck_assert_int_eq(st, 0);

    pab = mkkey(pre_ab, 5, "ab", 2, NULL);
    pabc = mkkey(pre_abc, 5, "abc", 3, NULL);
    pnul = mkkey(pre_nul, 5, nulid, 3, NULL);

    /* An actor's prefix yields its records, state blob first, entries in
     * key order, and nothing of the neighbours. */
    scan_prefix(s, pre_ab, (size_t)pab, &o);
    ck_assert_uint_eq(o.n, 3);
    ck_assert_str_eq(o.vals[0], "S-ab");
    ck_assert_str_eq(o.vals[1], "ab-a");
    ck_assert_str_eq(o.vals[2], "ab-x");
    ck_assert_int_eq(keel_key_prefix_len(o.keys[2], o.klens[2]), pab);
    scan_free(&o);

    scan_prefix(s, pre_abc, (size_t)pabc, &o);
    ck_assert_uint_eq(o.n, 2);
    ck_assert_str_eq(o.vals[0], "S-abc");
    ck_assert_str_eq(o.vals[1], "abc-a");
    scan_free(&o);

    scan_prefix(s, pre_nul, (size_t)pnul, &o);
    ck_assert_uint_eq(o.n, 2);
    ck_assert_str_eq(o.vals[0], "S-nul");
    ck_assert_str_eq(o.vals[1], "nul-a");
    scan_free(&o);

    /* The shard prefix holds all of them; another shard is empty. */
    scan_prefix(s, "\x00\x05", 2, &o);
    ck_assert_uint_eq(o.n, 7);
    scan_free(&o);
    scan_prefix(s, "\x00\x06", 2, &o);
    ck_assert_uint_eq(o.n, 0);
    scan_free(&o);

    expect_value(s, pre_abc, (size_t)pabc, "S-abc");
    n = mkkey(k, 5, "abd", 3, NULL);
    expect_absent(s, k, (size_t)n);

    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static int scan_stop_at_two(const uint8_t *key, size_t klen,
                            const keel_record *rec, void *data)
{
    int *count = data;

    return ++*count == 2 ? 42 : 0;
}

/* keel_store_scan_after: within the prefix, only the keys after `after`
 * (not `after` itself), in order; the actor's blob and the entries that
 * begin with a NUL byte, as the runtime's do, are past when `after` is
 * the actor's prefix, a NUL and 0xff; no `after` is refused. */
START_TEST(test_scan_after)
{
    static const char *const names[] = {"\001", "\001a", "b", "zz"};
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    uint8_t k[KEEL_KEY_MAX], after[KEEL_KEY_MAX];
    keel_store_read *r;
    struct scan_out o;
    size_t i;
    int n, p;

    p = mkkey(k, 1, "x", 1, NULL);
    ck_assert_int_eq(commit_put(s, NULL, 1, 1, k, (size_t)p, 1, "blob"), 0);
    for (i = 0; i < 40; i++) {
        char e[16];
        e[0] = '\0';
        n = snprintf(e + 1, sizeof e - 1, "keel.rk/%02zu", i) + 1;
        memcpy(after, k, (size_t)p);
        memcpy(after + p, e, (size_t)n);
        ck_assert_int_eq(commit_put(s, NULL, 1, 1, after, (size_t)(p + n), 1,
                                    "rt"),
                         0);
    }
    for (i = 0; i < 4; i++) {
        n = mkkey(k, 1, "x", 1, names[i]);
        ck_assert_int_eq(commit_put(s, NULL, 1, 1, k, (size_t)n, 1,
                                    names[i]),
                         0);
    }
    n = mkkey(k, 1, "y", 1, "other actor");
    ck_assert_int_eq(commit_put(s, NULL, 1, 1, k, (size_t)n, 1, "y"), 0);
    p = mkkey(k, 1, "x", 1, NULL);
    memcpy(after, k, (size_t)p);
    after[p] = 0x00;
    after[p + 1] = 0xff;
    memset(&o, 0, sizeof o);
    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    ck_assert_int_eq(keel_store_scan_after(r, k, (size_t)p, after,
                                           (size_t)p + 2, scan_collect, &o),
                     0);
    ck_assert_int_eq(keel_store_scan_after(r, k, (size_t)p, after, 0,
                                           scan_collect, &o),
                     KEEL_EINVAL);
    keel_store_read_end(r);
    ck_assert_uint_eq(o.n, 4);
    for (i = 0; i < 4; i++)
        ck_assert_str_eq(o.vals[i], names[i]);
    scan_free(&o);
    /* after an entry: strictly after it */
    n = mkkey(after, 1, "x", 1, "\001a");
    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    ck_assert_int_eq(keel_store_scan_after(r, k, (size_t)p, after,
                                           (size_t)n, scan_collect, &o),
                     0);
    keel_store_read_end(r);
    ck_assert_uint_eq(o.n, 2);
    ck_assert_str_eq(o.vals[0], "b");
    ck_assert_str_eq(o.vals[1], "zz");
    scan_free(&o);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_scan_stop)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    uint8_t k[KEEL_KEY_MAX];
    keel_store_read *r;
    char e[8];
    int n, count = 0;

    for (int i = 0; i < 5; i++) {
        snprintf(e, sizeof e, "e%d", i);
        n = mkkey(k, 1, "x", 1, e);
        ck_assert_int_eq(commit_put(s, NULL, 1, 1, k, (size_t)n, 1, e), 0);
    }
    n = mkkey(k, 1, "x", 1, NULL);
    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    ck_assert_int_eq(keel_store_scan(r, k, (size_t)n, scan_stop_at_two,
                                     &count),
                     42);
    keel_store_read_end(r);
    ck_assert_int_eq(count, 2);

    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_del_and_del_prefix)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    keel_batch *b = keel_batch_create();
    uint8_t k[KEEL_KEY_MAX], pre[KEEL_KEY_MAX];
    struct scan_out o;
    char e[32], v[64];
    int n, plen, st;

    /* "m" has enough entries to span many pages; "l" and "mm" sort right
     * before and after it and must survive its deletion. */
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 3, 1, NULL), 0);
    for (int i = 0; i < 3000; i++) {
        snprintf(e, sizeof e, "entry-%05d", i);
        snprintf(v, sizeof v, "value-%05d-padding-padding-padding", i);
        n = mkkey(k, 3, "m", 1, e);
        ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, v, strlen(v)),
                         0);
    }
    n = mkkey(k, 3, "m", 1, NULL);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, "state-m", 7), 0);
    n = mkkey(k, 3, "l", 1, "z");
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, "l-z", 3), 0);
    n = mkkey(k, 3, "mm", 2, NULL);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, "state-mm", 8), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);

    /* del: one entry; deleting an absent key is not an error. */
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 3, 1, NULL), 0);
    n = mkkey(k, 3, "m", 1, "entry-00007");
    ck_assert_int_eq(keel_batch_del(b, k, (size_t)n), 0);
    n = mkkey(k, 3, "m", 1, "no-such-entry");
    ck_assert_int_eq(keel_batch_del(b, k, (size_t)n), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_batch_group(b, 0, &st);
    ck_assert_int_eq(st, 0);
    n = mkkey(k, 3, "m", 1, "entry-00007");
    expect_absent(s, k, (size_t)n);
    n = mkkey(k, 3, "m", 1, "entry-00008");
    expect_value(s, k, (size_t)n, "value-00008-padding-padding-padding");
    plen = mkkey(pre, 3, "m", 1, NULL);
    scan_prefix(s, pre, (size_t)plen, &o);
    ck_assert_uint_eq(o.n, 3000);
    scan_free(&o);

    /* del_prefix: the whole actor, then a put to it in the same group
     * (ops apply in order). */
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 3, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_del_prefix(b, pre, (size_t)plen), 0);
    n = mkkey(k, 3, "m", 1, "after");
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 2, "new", 3), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    scan_prefix(s, pre, (size_t)plen, &o);
    ck_assert_uint_eq(o.n, 1);
    ck_assert_str_eq(o.vals[0], "new");
    scan_free(&o);
    n = mkkey(k, 3, "l", 1, "z");
    expect_value(s, k, (size_t)n, "l-z");
    n = mkkey(k, 3, "mm", 2, NULL);
    expect_value(s, k, (size_t)n, "state-mm");

    /* The whole shard. */
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 3, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_del_prefix(b, "\x00\x03", 2), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    scan_prefix(s, "", 0, &o);
    ck_assert_uint_eq(o.n, 0);
    scan_free(&o);

    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_version_epoch)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    keel_batch *b = keel_batch_create();
    uint8_t k[KEEL_KEY_MAX], k2[KEEL_KEY_MAX];
    keel_record rec;
    char *data = NULL;
    int n, n2;

    n = mkkey(k, 9, "v", 1, NULL);
    n2 = mkkey(k2, 9, "v", 1, "empty");
    ck_assert_int_eq(keel_batch_begin_group(b, "cap", 9, 0x0102030405060708ull,
                                            NULL),
                     0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 0xfedcba9876543210ull,
                                    "payload", 7),
                     0);
    ck_assert_int_eq(keel_batch_put(b, k2, (size_t)n2, 1, NULL, 0), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_store_close(s);

    /* Read back after a reopen: the header is on disk, big-endian. */
    s = open_store(dir);
    ck_assert_int_eq(read_copy(s, k, (size_t)n, &rec, &data), 0);
    ck_assert_uint_eq(rec.version, 0xfedcba9876543210ull);
    ck_assert_uint_eq(rec.epoch, 0x0102030405060708ull);
    ck_assert_uint_eq(rec.len, 7);
    ck_assert_mem_eq(data, "payload", 7);
    free(data);
    ck_assert_int_eq(read_copy(s, k2, (size_t)n2, &rec, NULL), 0);
    ck_assert_uint_eq(rec.len, 0);
    ck_assert_uint_eq(fence_of(s, "cap", 9), 0x0102030405060708ull);

    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_fencing)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    keel_batch *b = keel_batch_create();
    uint8_t k1[KEEL_KEY_MAX], k2[KEEL_KEY_MAX], k3[KEEL_KEY_MAX];
    uint8_t k4[KEEL_KEY_MAX];
    keel_store_stats st;
    int n1, n2, n3, n4, status;
    int tags[4] = {0, 1, 2, 3};

    n1 = mkkey(k1, 7, "a", 1, NULL);
    n2 = mkkey(k2, 7, "b", 1, NULL);
    n3 = mkkey(k3, 8, "c", 1, NULL);
    /* Another capability's type (the store ties a type to one). */
    n4 = keel_key_encode(k4, 7, "g", 1, "d", 1, NULL, 0);

    /* (default, 7) at epoch 2, then a stale writer of the same unit at
     * epoch 1, then another shard and another capability on shard 7, both
     * at epoch 1: only the stale group is refused. */
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 7, 2, &tags[0]), 0);
    ck_assert_int_eq(keel_batch_put(b, k1, (size_t)n1, 1, "one", 3), 0);
    ck_assert_int_eq(keel_batch_begin_group(b, "", 7, 1, &tags[1]), 0);
    ck_assert_int_eq(keel_batch_put(b, k2, (size_t)n2, 1, "two", 3), 0);
    ck_assert_int_eq(keel_batch_del(b, k1, (size_t)n1), 0);
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 8, 1, &tags[2]), 0);
    ck_assert_int_eq(keel_batch_put(b, k3, (size_t)n3, 1, "three", 5), 0);
    ck_assert_int_eq(keel_batch_begin_group(b, "game", 7, 1, &tags[3]), 0);
    ck_assert_int_eq(keel_batch_put(b, k4, (size_t)n4, 1, "four", 4), 0);
    ck_assert_uint_eq(keel_batch_group_count(b), 4);
    ck_assert_int_eq(keel_store_commit(s, b), 0);

    ck_assert_ptr_eq(keel_batch_group(b, 0, &status), &tags[0]);
    ck_assert_int_eq(status, 0);
    ck_assert_ptr_eq(keel_batch_group(b, 1, &status), &tags[1]);
    ck_assert_int_eq(status, KEEL_EFENCED);
    ck_assert_ptr_eq(keel_batch_group(b, 2, &status), &tags[2]);
    ck_assert_int_eq(status, 0);
    ck_assert_ptr_eq(keel_batch_group(b, 3, &status), &tags[3]);
    ck_assert_int_eq(status, 0);

    expect_value(s, k1, (size_t)n1, "one"); /* the refused del is absent */
    expect_absent(s, k2, (size_t)n2);
    expect_value(s, k3, (size_t)n3, "three");
    expect_value(s, k4, (size_t)n4, "four");
    ck_assert_uint_eq(fence_of(s, NULL, 7), 2);
    ck_assert_uint_eq(fence_of(s, NULL, 8), 1);
    ck_assert_uint_eq(fence_of(s, "game", 7), 1);
    ck_assert_uint_eq(fence_of(s, "game", 8), 0);
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.fence_refusals, 1);

    /* In a later transaction: still refused; the same epoch and a higher
     * one pass, the higher one raises the fence. */
    ck_assert_int_eq(commit_put(s, NULL, 7, 1, k2, (size_t)n2, 2, "x"),
                     KEEL_EFENCED);
    ck_assert_int_eq(commit_put(s, NULL, 7, 2, k2, (size_t)n2, 2, "same"), 0);
    ck_assert_int_eq(commit_put(s, NULL, 7, 3, k2, (size_t)n2, 3, "higher"),
                     0);
    ck_assert_uint_eq(fence_of(s, NULL, 7), 3);
    ck_assert_int_eq(commit_put(s, NULL, 7, 2, k2, (size_t)n2, 4, "stale"),
                     KEEL_EFENCED);
    expect_value(s, k2, (size_t)n2, "higher");
    /* The other capability on shard 7 is still at 1. */
    ck_assert_int_eq(commit_put(s, "game", 7, 1, k4, (size_t)n4, 2, "d2"), 0);

    /* fence_only raises the fence and writes no state. */
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_fence_only(b), KEEL_EINVAL);
    ck_assert_int_eq(keel_batch_begin_group(b, "game", 7, 9, NULL), 0);
    ck_assert_int_eq(keel_batch_fence_only(b), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    ck_assert_uint_eq(fence_of(s, "game", 7), 9);
    ck_assert_int_eq(commit_put(s, "game", 7, 8, k4, (size_t)n4, 3, "old"),
                     KEEL_EFENCED);
    expect_value(s, k4, (size_t)n4, "d2");

    /* A group's writes stay in its shard. */
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_put(b, k1, (size_t)n1, 1, "x", 1),
                     KEEL_EINVAL); /* no group */
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 8, 5, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k1, (size_t)n1, 1, "x", 1),
                     KEEL_EINVAL);
    ck_assert_int_eq(keel_batch_del_prefix(b, "\x00", 1), KEEL_EINVAL);
    {
        char longcap[257];

        memset(longcap, 'c', 256);
        longcap[256] = '\0';
        ck_assert_int_eq(keel_batch_begin_group(b, longcap, 8, 5, NULL),
                         KEEL_EINVAL);
    }

    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.fence_refusals, 4);
    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A handover record goes with its group: written in the group's
 * transaction, not when the group is refused by its fence, replaced by a
 * later one, kept across a reopen. */
START_TEST(test_handoff_record)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    keel_batch *b = keel_batch_create();
    keel_store_read *r;
    char to[KEEL_HANDOFF_NAME_MAX + 1], small[4];
    uint64_t at = 7, fence = 0;
    int status;

    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    ck_assert_int_eq(keel_store_handoff_get(r, "game", 5, &at, to, sizeof to),
                     0);
    ck_assert_uint_eq(at, 0);
    keel_store_read_end(r);

    ck_assert_int_eq(keel_batch_handoff(b, 2, "n2"), KEEL_EINVAL); /* no group */
    ck_assert_int_eq(keel_batch_begin_group(b, "game", 5, 3, NULL), 0);
    ck_assert_int_eq(keel_batch_handoff(b, 0, "n2"), KEEL_EINVAL);
    ck_assert_int_eq(keel_batch_handoff(b, 2, ""), KEEL_EINVAL);
    ck_assert_int_eq(keel_batch_handoff(b, 2, "n2"), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_batch_group(b, 0, &status);
    ck_assert_int_eq(status, 0);
    /* a stale group's record is refused with it */
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, "game", 5, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_handoff(b, 1, "stale"), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_batch_group(b, 0, &status);
    ck_assert_int_eq(status, KEEL_EFENCED);

    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    ck_assert_int_eq(keel_store_handoff_get(r, "game", 5, &at, to, sizeof to),
                     0);
    ck_assert_uint_eq(at, 2);
    ck_assert_str_eq(to, "n2");
    ck_assert_int_eq(keel_store_handoff_get(r, "game", 5, &at, small,
                                            sizeof small - 2),
                     KEEL_ELIMIT);
    ck_assert_int_eq(keel_store_handoff_get(r, "", 5, &at, to, sizeof to), 0);
    ck_assert_uint_eq(at, 0); /* another unit */
    ck_assert_int_eq(keel_store_fence_get(r, "game", 5, &fence), 0);
    ck_assert_uint_eq(fence, 3);
    keel_store_read_end(r);

    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, "game", 5, 6, NULL), 0);
    ck_assert_int_eq(keel_batch_handoff(b, 5, "n3"), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_store_close(s);
    s = open_store(dir);
    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    ck_assert_int_eq(keel_store_handoff_get(r, "game", 5, &at, to, sizeof to),
                     0);
    ck_assert_uint_eq(at, 5);
    ck_assert_str_eq(to, "n3");
    keel_store_read_end(r);
    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_batch_reuse)
{
    keel_batch *b = keel_batch_create();
    uint8_t k[KEEL_KEY_MAX];
    char big[10000];
    int n, st;

    memset(big, 'b', sizeof big);
    n = mkkey(k, 2, "r", 1, NULL);
    for (int round = 0; round < 3; round++) {
        for (int g = 0; g < 50; g++) {
            ck_assert_int_eq(keel_batch_begin_group(b, "c", 2, 1,
                                                    (void *)(intptr_t)(g + 1)),
                             0);
            ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, (uint64_t)g, big,
                                            (size_t)g * 100),
                             0);
            ck_assert_int_eq(keel_batch_del(b, k, (size_t)n), 0);
        }
        ck_assert_uint_eq(keel_batch_group_count(b), 50);
        ck_assert_uint_eq(keel_batch_op_count(b), 100);
        ck_assert_ptr_eq(keel_batch_group(b, 49, &st), (void *)(intptr_t)50);
        ck_assert_ptr_null(keel_batch_group(b, 50, &st));
        keel_batch_reset(b);
        ck_assert_uint_eq(keel_batch_group_count(b), 0);
        ck_assert_uint_eq(keel_batch_op_count(b), 0);
    }
    keel_batch_destroy(b);
}
END_TEST

START_TEST(test_shard_count_mismatch)
{
    char *dir = tu_tmpdir("store");
    keel_store_options o = {0};
    keel_store *s = open_store_opts(dir, 16, KEEL_DURABILITY_FSYNC, 0, 0);
    char err[256] = "";

    keel_store_close(s);
    s = NULL;
    o.path = dir;
    o.shard_count = 32;
    ck_assert_int_eq(keel_store_open(&o, &s, err, sizeof err),
                     KEEL_EMISMATCH);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err, "16") && strstr(err, "32"), "message: %s",
                  err);
    /* The right count still opens. */
    s = open_store_opts(dir, 16, KEEL_DURABILITY_FSYNC, 0, 0);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_open_errors)
{
    char *dir = tu_tmpdir("store");
    keel_store_options o = {0};
    keel_store *s = NULL, *s2 = NULL;
    char err[512] = "", *file, *nested;
    int fd;

    /* A regular file where the directory should be. */
    ck_assert_int_ge(asprintf(&file, "%s/plainfile", dir), 0);
    fd = open(file, O_CREAT | O_WRONLY, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    o.path = file;
    o.shard_count = 8;
    ck_assert_int_eq(keel_store_open(&o, &s, err, sizeof err), KEEL_EIO);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err, file) != NULL, "message: %s", err);
    ck_assert_msg(strstr(err, strerror(ENOTDIR)) != NULL, "message: %s",
                  err);

    /* A directory under it cannot be made either. */
    ck_assert_int_ge(asprintf(&nested, "%s/plainfile/sub", dir), 0);
    o.path = nested;
    ck_assert_int_eq(keel_store_open(&o, &s, err, sizeof err), KEEL_EIO);
    ck_assert_msg(strstr(err, nested) != NULL, "message: %s", err);
    free(nested);

    /* Missing parents are created. */
    ck_assert_int_ge(asprintf(&nested, "%s/a/b/c", dir), 0);
    o.path = nested;
    ck_assert_int_eq(keel_store_open(&o, &s, err, sizeof err), 0);

    /* The same directory twice: EEXIST, the holder this very process. */
    ck_assert_int_eq(keel_store_open(&o, &s2, err, sizeof err), KEEL_EEXIST);
    ck_assert_ptr_null(s2);
    ck_assert_msg(strstr(err, "in use") != NULL &&
                      strstr(err, "another open store") != NULL,
                  "message: %s", err);
    keel_store_close(s);

    /* No count: the directory's own. */
    {
        uint32_t made = o.shard_count;
        o.shard_count = 0;
        ck_assert_int_eq(keel_store_open(&o, &s, err, sizeof err), 0);
        ck_assert_uint_eq(keel_store_shards(s), made);
        keel_store_close(s);
        o.shard_count = made;
    }

    /* Bad options. */
    o.shard_count = 65537;
    ck_assert_int_eq(keel_store_open(&o, &s, err, sizeof err), KEEL_EINVAL);
    o.shard_count = 8;
    o.durability = 7;
    ck_assert_int_eq(keel_store_open(&o, &s, err, sizeof err), KEEL_EINVAL);

    free(nested);
    free(file);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A directory the process may not write into. Root ignores mode bits, so
 * the attempt runs in a child that drops to an unprivileged user when
 * started as root. */
START_TEST(test_open_no_permission)
{
    char *dir = tu_tmpdir("store");
    char *sub;
    pid_t pid;
    int wst;

    ck_assert_int_ge(asprintf(&sub, "%s/data", dir), 0);
    ck_assert_int_eq(chmod(dir, 0500), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_store_options o = {0};
        keel_store *s = NULL;
        char err[512] = "";
        int rc;

        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
            _exit(2);
        o.path = sub;
        o.shard_count = 8;
        rc = keel_store_open(&o, &s, err, sizeof err);
        if (rc != KEEL_EIO || s != NULL || strstr(err, sub) == NULL ||
            strstr(err, strerror(EACCES)) == NULL) {
            fprintf(stderr, "open: %s: %s\n", keel_err_name(rc), err);
            _exit(1);
        }
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &wst, 0), pid);
    ck_assert(WIFEXITED(wst));
    ck_assert_int_eq(WEXITSTATUS(wst), 0);
    chmod(dir, 0700);
    free(sub);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Refills b with one group of per records of size bytes for actor "big"
 * in shard 4; each value starts with its own entry name. */
static void fill_batch(keel_batch *b, int batch, int per, size_t size)
{
    uint8_t k[KEEL_KEY_MAX];
    char e[32], *v = malloc(size);
    int n;

    ck_assert_ptr_nonnull(v);
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 4, 1, NULL), 0);
    for (int i = 0; i < per; i++) {
        snprintf(e, sizeof e, "b%04d-r%04d", batch, i);
        n = mkkey(k, 4, "big", 3, e);
        memset(v, 'a' + (batch + i) % 26, size);
        memcpy(v, e, strlen(e));
        ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, (uint64_t)batch, v,
                                        size),
                         0);
    }
    free(v);
}

static void check_batch(keel_store *s, int batch, int per, size_t size,
                        int present)
{
    uint8_t k[KEEL_KEY_MAX];
    keel_store_read *r;
    keel_record rec;
    char e[32];
    int n, rc;

    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    for (int i = 0; i < per; i++) {
        snprintf(e, sizeof e, "b%04d-r%04d", batch, i);
        n = mkkey(k, 4, "big", 3, e);
        rc = keel_store_get(r, k, (size_t)n, &rec);
        if (!present) {
            ck_assert_msg(rc == KEEL_ENOTFOUND, "batch %d record %d: %s",
                          batch, i, keel_err_name(rc));
            continue;
        }
        ck_assert_msg(rc == 0, "batch %d record %d: %s", batch, i,
                      keel_err_name(rc));
        ck_assert_uint_eq(rec.len, size);
        ck_assert_uint_eq(rec.version, (uint64_t)batch);
        ck_assert_mem_eq(rec.data, e, strlen(e));
        ck_assert_int_eq(((const char *)rec.data)[size - 1],
                         'a' + (batch + i) % 26);
    }
    keel_store_read_end(r);
}

START_TEST(test_map_growth)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE,
                                    256 << 10, 0);
    keel_batch *b = keel_batch_create();
    keel_store_stats st;

    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.map_size, 256 << 10);
    /* 6 MB in 24 batches of 256 KB. */
    for (int i = 0; i < 24; i++) {
        fill_batch(b, i, 64, 4000);
        ck_assert_int_eq(keel_store_commit(s, b), 0);
    }
    keel_store_stats_get(s, &st);
    ck_assert_uint_gt(st.map_grows, 0);
    ck_assert_uint_ge(st.map_size, 6u << 20);
    ck_assert_uint_eq(st.commits, 24);
    ck_assert_uint_eq(st.commit_failures, 0);
    /* Durability none writes through the map: all of it is allocated. */
    ck_assert_int_ge(file_blocks(dir, "data.mdb"), (off_t)st.map_size);
    for (int i = 0; i < 24; i++)
        check_batch(s, i, 64, 4000, 1);
    keel_store_close(s);

    /* And after a reopen with the same small initial size. */
    s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE, 256 << 10, 0);
    for (int i = 0; i < 24; i++)
        check_batch(s, i, 64, 4000, 1);
    fill_batch(b, 24, 64, 4000);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    check_batch(s, 24, 64, 4000, 1);

    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Reads in a loop from another thread while commits grow the map under
 * it: growth must wait for each read to end, and reads see whole
 * records. */
struct reader_arg {
    keel_store *s;
    int stop;
    long reads;
};

static void *reader_main(void *p)
{
    struct reader_arg *a = p;
    uint8_t k[KEEL_KEY_MAX];
    keel_store_read *r;
    keel_record rec;
    /* Record 0 of batch 0, as fill_batch() names it. */
    int n = keel_key_encode(k, 4, TYPE, strlen(TYPE), "big", 3,
                            "b0000-r0000", 11);

    while (!__atomic_load_n(&a->stop, __ATOMIC_RELAXED)) {
        if (keel_store_read_begin(a->s, &r) != 0)
            abort();
        if (keel_store_get(r, k, (size_t)n, &rec) == 0 &&
            (rec.len != 4000 || memcmp(rec.data, "b0000-r0000", 11) != 0))
            abort();
        keel_store_read_end(r);
        __atomic_fetch_add(&a->reads, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

START_TEST(test_map_growth_with_readers)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE,
                                    256 << 10, 0);
    keel_batch *b = keel_batch_create();
    struct reader_arg a = {.s = s};
    keel_store_stats st;
    pthread_t th[2];

    for (int t = 0; t < 2; t++)
        ck_assert_int_eq(pthread_create(&th[t], NULL, reader_main, &a), 0);
    for (int i = 0; i < 16; i++) {
        fill_batch(b, i, 64, 4000);
        ck_assert_int_eq(keel_store_commit(s, b), 0);
    }
    __atomic_store_n(&a.stop, 1, __ATOMIC_RELAXED);
    for (int t = 0; t < 2; t++)
        pthread_join(th[t], NULL);
    keel_store_stats_get(s, &st);
    ck_assert_uint_gt(st.map_grows, 0);
    ck_assert_int_gt(a.reads, 0);
    for (int i = 0; i < 16; i++)
        check_batch(s, i, 64, 4000, 1);

    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_map_max)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store_opts(dir, 64, KEEL_DURABILITY_FSYNC,
                                    256 << 10, 1 << 20);
    keel_batch *b = keel_batch_create();
    uint8_t k[KEEL_KEY_MAX];
    keel_store_stats st;
    int n, status;

    fill_batch(b, 0, 10, 4000);
    ck_assert_int_eq(keel_store_commit(s, b), 0);

    /* 2 MB cannot fit a 1 MB map. The batch also carries a fence raise of
     * another unit: that must not survive either. */
    fill_batch(b, 1, 512, 4000);
    ck_assert_int_eq(keel_batch_begin_group(b, "other", 11, 77, NULL), 0);
    ck_assert_int_eq(keel_batch_fence_only(b), 0);
    ck_assert_int_eq(keel_store_commit(s, b), KEEL_ENOSPC);
    keel_batch_group(b, 0, &status);
    ck_assert_int_eq(status, 0); /* not refused: the batch failed whole */
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.map_size, 1 << 20);
    ck_assert_uint_eq(st.commit_failures, 1);
    ck_assert_uint_eq(st.commits, 1);
    check_batch(s, 1, 512, 4000, 0);
    ck_assert_uint_eq(fence_of(s, "other", 11), 0);
    check_batch(s, 0, 10, 4000, 1);

    /* Still usable for small writes. */
    n = mkkey(k, 4, "small", 5, NULL);
    ck_assert_int_eq(commit_put(s, NULL, 4, 1, k, (size_t)n, 1, "fits"), 0);
    expect_value(s, k, (size_t)n, "fits");
    fill_batch(b, 2, 10, 4000);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    check_batch(s, 2, 10, 4000, 1);

    /* The store caches fences it has read: the raise to 77 in the failed
     * transaction must not have stuck there either. */
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, "other", 11, 5, NULL), 0);
    ck_assert_int_eq(keel_batch_fence_only(b), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_batch_group(b, 0, &status);
    ck_assert_int_eq(status, 0);
    ck_assert_uint_eq(fence_of(s, "other", 11), 5);
    /* ...while a committed raise is remembered: epoch 4 is now stale. */
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, "other", 11, 4, NULL), 0);
    ck_assert_int_eq(keel_batch_fence_only(b), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_batch_group(b, 0, &status);
    ck_assert_int_eq(status, KEEL_EFENCED);

    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The store's warnings, as the log callback hands them over (the test's
 * own thread commits, so no lock is needed). */
struct warn_count {
    int failed;    /* "commit failed" lines */
    int unlogged;  /* of those, ones that say how many went unlogged */
    int again;     /* "commits succeed again" lines */
    char last_again[256];
};

static void count_store_lines(void *data, int level, const char *msg)
{
    struct warn_count *w = data;

    if (level == KEEL_LOG_WARN && strstr(msg, "commit failed: map full")) {
        w->failed++;
        if (strstr(msg, "more since the last such line") != NULL)
            w->unlogged++;
    } else if (level == KEEL_LOG_INFO &&
               strstr(msg, "commits succeed again") != NULL) {
        w->again++;
        snprintf(w->last_again, sizeof w->last_again, "%s", msg);
    }
}

/* A store that stays full fails every commit the writers try again: one
 * line a second says so, not one per commit, and the first commit that
 * succeeds says how many failed. */
START_TEST(test_failed_commits_logged_once_a_second)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store_opts(dir, 64, KEEL_DURABILITY_FSYNC,
                                    256 << 10, 1 << 20);
    keel_batch *b = keel_batch_create();
    struct warn_count w = {0};
    struct timespec t0, t1;
    char want[64];
    double secs;
    int i, unlogged;

    keel_log_set_callback(count_store_lines, &w);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (i = 0; i < 40; i++) {
        fill_batch(b, 1, 512, 4000); /* 2 MB: never fits the 1 MB map */
        ck_assert_int_eq(keel_store_commit(s, b), KEEL_ENOSPC);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) +
           (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    /* The first at once, then one per full second at most: however slow
     * this machine is, never one per commit. */
    ck_assert_int_ge(w.failed, 1);
    ck_assert_msg(w.failed <= 1 + (int)secs,
                  "%d lines for 40 failed commits in %.2f s", w.failed,
                  secs);
    ck_assert_int_le(w.unlogged, w.failed - 1);
    ck_assert_int_eq(w.again, 0);

    fill_batch(b, 2, 10, 4000);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    ck_assert_int_eq(w.again, 1);
    snprintf(want, sizeof want, "after %d failed", 40);
    ck_assert_msg(strstr(w.last_again, want) != NULL, "%s", w.last_again);
    /* Once: the run is over. */
    fill_batch(b, 3, 10, 4000);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    ck_assert_int_eq(w.again, 1);
    /* A new run is logged at once again, as a first line. */
    i = w.failed;
    unlogged = w.unlogged;
    fill_batch(b, 4, 512, 4000);
    ck_assert_int_eq(keel_store_commit(s, b), KEEL_ENOSPC);
    ck_assert_int_eq(w.failed, i + 1);
    ck_assert_int_eq(w.unlogged, unlogged);
    keel_log_set_callback(NULL, NULL);

    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Commits batches of 25 records of 4000 bytes (fill_batch) until one
 * fails, which must be for lack of space within max batches; returns how
 * many were committed. */
static int fill_until_full(keel_store *s, keel_batch *b, int max)
{
    int i, rc = 0;

    for (i = 0; i < max; i++) {
        fill_batch(b, i, 25, 4000);
        rc = keel_store_commit(s, b);
        if (rc != 0)
            break;
    }
    ck_assert_msg(rc == KEEL_ENOSPC, "commit %d: %s", i, keel_err_name(rc));
    return i;
}

/* Compacts the data file of the closed store at dir in LMDB itself: the
 * copy has no free page, and ends at its last page in use, so the store
 * maps it full. */
static void compact_data(const char *dir)
{
    char *to = tu_tmpdir("compact"), from[512], into[512];
    MDB_env *env;

    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(env, 4), 0);
    ck_assert_int_eq(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
    ck_assert_int_eq(mdb_env_copy2(env, to, MDB_CP_COMPACT), 0);
    mdb_env_close(env);
    snprintf(from, sizeof from, "%s/data.mdb", to);
    snprintf(into, sizeof into, "%s/data.mdb", dir);
    ck_assert_int_eq(rename(from, into), 0);
    tu_rmrf(to);
    free(to);
}

/* A store closed with its map full to the last page still opens: the open
 * writes (the run counter), and grows the map for it as a commit would.
 * Bounded by a maximum the map has reached, the open refuses with ENOSPC
 * and says what to change. */
START_TEST(test_open_grows_a_full_map)
{
    char *dir = tu_tmpdir("store");
    keel_store_options o = {0};
    keel_store *s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE, 256 << 10,
                                    0);
    keel_batch *b = keel_batch_create();
    keel_store_stats st;
    char err[512] = "";
    uint64_t run = keel_store_run(s), full;
    int j, rc;

    for (j = 0; j < 4; j++) {
        fill_batch(b, j, 25, 4000);
        ck_assert_int_eq(keel_store_commit(s, b), 0);
    }
    keel_store_close(s);
    /* Durability none keeps no log or checkpoint: the data file is the
     * store, and can be replaced behind its back. */
    compact_data(dir);
    full = (uint64_t)file_size(dir, "data.mdb");

    o.path = dir;
    o.shard_count = 64;
    o.durability = KEEL_DURABILITY_NONE;
    o.initial_map_size = 64 << 10;
    o.max_map_size = full;
    s = NULL;
    rc = keel_store_open(&o, &s, err, sizeof err);
    ck_assert_msg(rc == KEEL_ENOSPC, "open at the same maximum: %s (%s)",
                  keel_err_name(rc), err);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err, "larger maximum map size") != NULL, "%s", err);

    s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE, 64 << 10, 0);
    keel_store_stats_get(s, &st);
    ck_assert_uint_gt(st.map_size, full);
    /* The refused open raised nothing. */
    ck_assert_uint_eq(keel_store_run(s), run + 1);
    for (j = 0; j < 4; j++)
        check_batch(s, j, 25, 4000, 1);
    fill_batch(b, 9000, 25, 4000);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    check_batch(s, 9000, 25, 4000, 1);

    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST


/* As test_open_grows_a_full_map, with less room left on the disk (the
 * file size limit) than a doubled map needs, but far more than the few
 * pages the open writes: the store still opens (a smaller step, or
 * writing through the file, as an open that cannot reserve its map
 * does), with every record, instead of refusing to start. */
START_TEST(test_open_grows_a_full_map_short_of_room)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE, 1 << 20,
                                    0);
    keel_batch *b = keel_batch_create();
    keel_store_options o = {0};
    struct rlimit old, lim;
    char err[512] = "";
    uint64_t full;
    int j, rc;

    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max < (64u << 20))
        goto out;
    for (j = 0; j < 40; j++) {
        fill_batch(b, j, 25, 4000);
        ck_assert_int_eq(keel_store_commit(s, b), 0);
    }
    keel_store_close(s);
    compact_data(dir);
    full = (uint64_t)file_size(dir, "data.mdb");
    ck_assert_uint_gt(full, 3u << 20);

    /* Room for 2 MiB more: not for the doubled map. */
    signal(SIGXFSZ, SIG_IGN);
    lim.rlim_cur = full + (2u << 20);
    lim.rlim_max = old.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    o.path = dir;
    o.shard_count = 64;
    o.durability = KEEL_DURABILITY_NONE;
    o.initial_map_size = 64 << 10;
    s = NULL;
    rc = keel_store_open(&o, &s, err, sizeof err);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    ck_assert_msg(rc == 0, "open with 2 MiB of room: %s (%s)",
                  keel_err_name(rc), err);
    for (j = 0; j < 40; j++)
        check_batch(s, j, 25, 4000, 1);
    keel_store_close(s);
out:
    keel_batch_destroy(b);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Disk full, as the file size limit: commits fail with KEEL_ENOSPC and
 * none of the batches acknowledged before is lost. With durability none
 * and a small map, the full disk shows when the map's blocks are reserved
 * before growing; with the limit already there at open, the store cannot
 * reserve its map and writes through the file. */
static void disk_full_case(int durability, uint64_t init, int limit_first)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = NULL;
    keel_batch *b = keel_batch_create();
    struct rlimit old, lim;
    keel_store_stats st;
    int ok = 0, i;

    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max < (4u << 20))
        goto out;
    signal(SIGXFSZ, SIG_IGN);
    lim.rlim_cur = 2u << 20;
    lim.rlim_max = old.rlim_max;
    if (!limit_first)
        s = open_store_opts(dir, 64, durability, init, 0);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    if (limit_first)
        s = open_store_opts(dir, 64, durability, init, 0);
    ok = fill_until_full(s, b, 200);
    ck_assert_int_gt(ok, 0);
    /* It stays full, and stays consistent. */
    fill_batch(b, ok + 1, 25, 4000);
    ck_assert_int_eq(keel_store_commit(s, b), KEEL_ENOSPC);
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.commits, (uint64_t)ok);
    ck_assert_uint_eq(st.commit_failures, 2);
    for (i = 0; i < ok; i++)
        check_batch(s, i, 25, 4000, 1);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    keel_store_close(s);

    s = open_store_opts(dir, 64, durability, init, 0);
    for (i = 0; i < ok; i++)
        check_batch(s, i, 25, 4000, 1);
    check_batch(s, ok, 25, 4000, 0);
    check_batch(s, ok + 1, 25, 4000, 0);
    /* With room again, commits go through. */
    fill_batch(b, ok, 25, 4000);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    check_batch(s, ok, 25, 4000, 1);
    keel_store_close(s);
out:
    keel_batch_destroy(b);
    tu_rmrf(dir);
    free(dir);
}

START_TEST(test_disk_full)
{
    disk_full_case(KEEL_DURABILITY_FSYNC, 0, 0);
}
END_TEST

START_TEST(test_disk_full_none)
{
    disk_full_case(KEEL_DURABILITY_NONE, 256 << 10, 0);
    disk_full_case(KEEL_DURABILITY_NONE, 0, 1);
}
END_TEST

/* A file system that really fills up (a small tmpfs, in a mount
 * namespace of this test's own, so the mount goes with the process). With
 * durability none the map's blocks are reserved before each growth; when
 * the doubled map does not fit, smaller steps do, so the store fills most
 * of the disk, as writing through the file does, and nothing it could not
 * use stays allocated. Needs the right to mount (root); otherwise it says
 * so and checks nothing. */
#define SMALL_FS_MB 24

START_TEST(test_disk_really_full_none)
{
    char *dir = tu_tmpdir("store");
    char opt[32], spare[512];
    keel_store *s;
    keel_batch *b = keel_batch_create();
    int ok = 0, i, fd;

    snprintf(opt, sizeof opt, "size=%dm", SMALL_FS_MB);
    if (unshare(CLONE_NEWNS) != 0 ||
        mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", dir, "tmpfs", 0, opt) != 0) {
        printf("test_disk_really_full_none: cannot mount a tmpfs (%s): "
               "not run\n", strerror(errno));
        keel_batch_destroy(b);
        tu_rmrf(dir);
        free(dir);
        return;
    }
    s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE, 1 << 20, 0);
    ok = fill_until_full(s, b, 1000);
    /* Doubling alone stops at a 16 MiB map (32 does not fit): 15 MiB of
     * values at most. */
    ck_assert_msg(ok * 25 * 4000 > 17 << 20,
                  "only %d batches (%d KiB) fit a %d MiB file system", ok,
                  ok * 25 * 4000 / 1024, SMALL_FS_MB);
    for (i = 0; i < ok; i++)
        check_batch(s, i, 25, 4000, 1);
    /* What the failed reservations took is free again: a small file
     * fits beside the store. */
    snprintf(spare, sizeof spare, "%s/spare", dir);
    fd = open(spare, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "x", 1), 1);
    close(fd);
    unlink(spare);
    keel_store_close(s);
    s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE, 1 << 20, 0);
    for (i = 0; i < ok; i++)
        check_batch(s, i, 25, 4000, 1);
    keel_store_close(s);
    keel_batch_destroy(b);
    ck_assert_int_eq(umount(dir), 0);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(test_durability_stats)
{
    char *dir = tu_tmpdir("store");
    char *dir2 = tu_tmpdir("store");
    keel_store *s;
    keel_store_stats st;
    uint8_t k[KEEL_KEY_MAX];
    int n = mkkey(k, 1, "d", 1, NULL);
    char v[16];

    s = open_store_opts(dir, 64, KEEL_DURABILITY_FSYNC, 0, 0);
    for (int i = 0; i < 5; i++) {
        snprintf(v, sizeof v, "v%d", i);
        ck_assert_int_eq(commit_put(s, NULL, 1, 1, k, (size_t)n, 1, v), 0);
    }
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.commits, 5);
    /* keel_store_commit is durable on return: each commit is logged, then
     * a sync flushes the log, once. The data file is flushed only by
     * checkpoints. */
    ck_assert_uint_eq(st.fsyncs, 5);
    ck_assert_uint_eq(st.syncs, 5);
    ck_assert_uint_eq(st.checkpoints, 0);
    ck_assert_uint_eq(st.unsynced, 0);
    ck_assert_uint_eq(st.map_size, 64u << 20);
    keel_store_close(s);

    s = open_store_opts(dir2, 64, KEEL_DURABILITY_NONE, 0, 0);
    for (int i = 0; i < 5; i++) {
        snprintf(v, sizeof v, "v%d", i);
        ck_assert_int_eq(commit_put(s, NULL, 1, 1, k, (size_t)n, 1, v), 0);
    }
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.commits, 5);
    ck_assert_uint_eq(st.fsyncs, 0);
    ck_assert_uint_eq(st.syncs, 0);
    ck_assert_uint_eq(st.unsynced, 0);
    keel_store_close(s);

    /* Committed without sync is still committed. */
    s = open_store_opts(dir2, 64, KEEL_DURABILITY_FSYNC, 0, 0);
    expect_value(s, k, (size_t)n, "v4");
    keel_store_close(s);

    tu_rmrf(dir);
    tu_rmrf(dir2);
    free(dir);
    free(dir2);
}
END_TEST


/* A deferred commit flushes nothing: it is visible at once, and durable
 * after the next sync, which flushes the log once for every commit
 * before it. */
START_TEST(test_commit_deferred)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    keel_batch *b = keel_batch_create();
    uint8_t k[KEEL_KEY_MAX];
    keel_store_stats st;
    uint64_t t1, t2, t3;
    int n = mkkey(k, 1, "d", 1, NULL);

    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 1, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, "a", 1), 0);
    ck_assert_int_eq(keel_store_commit_deferred(s, b, &t1), 0);
    ck_assert_uint_ne(t1, 0);
    ck_assert(!keel_store_durable(s, t1));
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.unsynced, 1);
    ck_assert_uint_eq(st.fsyncs, 0);
    expect_value(s, k, (size_t)n, "a"); /* committed: visible */

    ck_assert_int_eq(keel_store_commit_deferred(s, b, &t2), 0);
    ck_assert_uint_gt(t2, t1);
    ck_assert(!keel_store_durable(s, t1));
    ck_assert(!keel_store_durable(s, t2));

    /* A commit that writes nothing has nothing to wait for, and flushes
     * nothing: the fence of (default, 1) is at 1 already. */
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 1, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_fence_only(b), 0);
    ck_assert_int_eq(keel_store_commit_deferred(s, b, &t3), 0);
    ck_assert_uint_eq(t3, 0);
    ck_assert(!keel_store_durable(s, t2));

    ck_assert_int_eq(keel_store_sync(s), 0);
    ck_assert(keel_store_durable(s, t1));
    ck_assert(keel_store_durable(s, t2));
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.unsynced, 0);
    ck_assert_uint_eq(st.syncs, 1);
    ck_assert_uint_eq(st.fsyncs, 1);
    /* Nothing left: no flush. */
    ck_assert_int_eq(keel_store_sync(s), 0);
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.syncs, 1);
    keel_store_close(s);

    /* Durability none: committed is all there is. */
    s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE, 0, 0);
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 1, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 2, "b", 1), 0);
    ck_assert_int_eq(keel_store_commit_deferred(s, b, &t1), 0);
    ck_assert(keel_store_durable(s, t1));
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.fsyncs, 0);
    ck_assert_uint_eq(st.unsynced, 0);

    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* -------------------------------------------------------------- writer */

#define NBATCH 100
#define NPROBE 10000

struct writer_log {
    pthread_mutex_t lock;
    keel_batch *batches[NBATCH];
    keel_batch *probes[NPROBE];
    int order[NBATCH];
    int status[NBATCH];
    int n;
    int probes_done;
    int other;
    pthread_t writer_thread;
    sem_t gate; /* the first done_cb waits here */
    int gated;
};

static void writer_done(keel_batch *b, int status, void *data)
{
    struct writer_log *log = data;
    int idx = -1;

    for (int i = 0; i < NBATCH; i++)
        if (log->batches[i] == b)
            idx = i;
    pthread_mutex_lock(&log->lock);
    log->writer_thread = pthread_self();
    if (idx >= 0) {
        log->order[log->n] = idx;
        log->status[idx] = status;
        log->n++;
    } else if (status == 0) {
        log->probes_done++;
    } else {
        log->other++;
    }
    pthread_mutex_unlock(&log->lock);
    if (idx == 0 && log->gated)
        sem_wait(&log->gate);
}

static void writer_log_init(struct writer_log *log, int gated)
{
    uint8_t k[KEEL_KEY_MAX];
    char v[16];
    int n;

    memset(log, 0, sizeof *log);
    pthread_mutex_init(&log->lock, NULL);
    sem_init(&log->gate, 0, 0);
    log->gated = gated;
    for (int i = 0; i < NBATCH; i++) {
        log->batches[i] = keel_batch_create();
        ck_assert_ptr_nonnull(log->batches[i]);
        snprintf(v, sizeof v, "v%d", i);
        /* Every batch also rewrites one shared key: the last write wins
         * only if the commits run in order. */
        ck_assert_int_eq(keel_batch_begin_group(log->batches[i], NULL, 3, 1,
                                                NULL),
                         0);
        n = mkkey(k, 3, v, strlen(v), NULL);
        ck_assert_int_eq(keel_batch_put(log->batches[i], k, (size_t)n,
                                        (uint64_t)i, v, strlen(v)),
                         0);
        n = mkkey(k, 3, "shared", 6, NULL);
        ck_assert_int_eq(keel_batch_put(log->batches[i], k, (size_t)n,
                                        (uint64_t)i, v, strlen(v)),
                         0);
    }
}

static void writer_log_check(keel_store *s, struct writer_log *log)
{
    uint8_t k[KEEL_KEY_MAX];
    char v[16];
    int n;

    ck_assert_int_eq(log->n, NBATCH);
    ck_assert_int_eq(log->other, 0);
    ck_assert(!pthread_equal(log->writer_thread, pthread_self()));
    for (int i = 0; i < NBATCH; i++) {
        ck_assert_int_eq(log->order[i], i);
        ck_assert_int_eq(log->status[i], 0);
        snprintf(v, sizeof v, "v%d", i);
        n = mkkey(k, 3, v, strlen(v), NULL);
        expect_value(s, k, (size_t)n, v);
    }
    n = mkkey(k, 3, "shared", 6, NULL);
    snprintf(v, sizeof v, "v%d", NBATCH - 1);
    expect_value(s, k, (size_t)n, v);
}

static void writer_log_free(struct writer_log *log)
{
    for (int i = 0; i < NBATCH; i++)
        keel_batch_destroy(log->batches[i]);
    for (int i = 0; i < NPROBE; i++)
        keel_batch_destroy(log->probes[i]);
    sem_destroy(&log->gate);
    pthread_mutex_destroy(&log->lock);
}

START_TEST(test_writer_order)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE, 0, 0);
    struct writer_log *log = malloc(sizeof *log);
    keel_store_stats st;
    keel_writer *w;

    writer_log_init(log, 0);
    ck_assert_int_eq(keel_writer_start(s, writer_done, log, &w), 0);
    for (int i = 0; i < NBATCH; i++)
        ck_assert_int_eq(keel_writer_submit(w, log->batches[i]), 0);
    keel_writer_stop(w);
    writer_log_check(s, log);
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.commits, NBATCH);

    writer_log_free(log);
    free(log);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static void *stopper_main(void *p)
{
    keel_writer_stop(p);
    return NULL;
}

/* Stop commits what was queued before it began, and refuses what comes
 * after. The writer is held in its first done_cb so that the queue is
 * still full when stop begins. */
START_TEST(test_writer_stop_drains)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE, 0, 0);
    struct writer_log *log = malloc(sizeof *log);
    keel_writer *w;
    pthread_t stopper;
    int rc = 0, probes = 0;

    writer_log_init(log, 1);
    ck_assert_int_eq(keel_writer_start(s, writer_done, log, &w), 0);
    for (int i = 0; i < NBATCH; i++)
        ck_assert_int_eq(keel_writer_submit(w, log->batches[i]), 0);
    ck_assert_int_eq(pthread_create(&stopper, NULL, stopper_main, w), 0);
    /* w stays allocated: the stopper waits for the writer, which waits at
     * the gate. Until stop has begun, submits still succeed; each takes a
     * fresh empty batch. */
    while (probes < NPROBE) {
        log->probes[probes] = keel_batch_create();
        rc = keel_writer_submit(w, log->probes[probes]);
        probes++;
        if (rc != 0)
            break;
        usleep(1000);
    }
    ck_assert_int_eq(rc, KEEL_ESTOPPING);
    sem_post(&log->gate);
    pthread_join(stopper, NULL);

    writer_log_check(s, log);
    ck_assert_int_eq(log->probes_done, probes - 1);

    writer_log_free(log);
    free(log);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST


/* ------------------------------------- writer: durability and failures */

/* What the writer handed back, in order, with each batch's group statuses
 * as they were at hand-off. */
struct wdone {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    keel_batch *b[16];
    int status[16];
    int gst[16][4];
    int n;
};

static void wdone_cb(keel_batch *b, int status, void *data)
{
    struct wdone *d = data;

    pthread_mutex_lock(&d->mu);
    ck_assert_int_lt(d->n, 16);
    d->b[d->n] = b;
    d->status[d->n] = status;
    for (size_t i = 0; i < keel_batch_group_count(b) && i < 4; i++)
        keel_batch_group(b, i, &d->gst[d->n][i]);
    d->n++;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void wdone_init(struct wdone *d)
{
    memset(d, 0, sizeof *d);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
}

static void wdone_wait(struct wdone *d, int n)
{
    pthread_mutex_lock(&d->mu);
    while (d->n < n)
        pthread_cond_wait(&d->cv, &d->mu);
    pthread_mutex_unlock(&d->mu);
}

static int wdone_count(struct wdone *d)
{
    int n;

    pthread_mutex_lock(&d->mu);
    n = d->n;
    pthread_mutex_unlock(&d->mu);
    return n;
}

/* A batch of one group per tag, each putting key <id>. */
static keel_batch *tagged_batch(uint16_t shard, uint64_t epoch, int ngroups,
                                void *const *tags, const char *const *ids)
{
    keel_batch *b = keel_batch_create();
    uint8_t k[KEEL_KEY_MAX];

    ck_assert_ptr_nonnull(b);
    for (int i = 0; i < ngroups; i++) {
        int n = mkkey(k, shard, ids[i], strlen(ids[i]), NULL);
        ck_assert_int_eq(keel_batch_begin_group(b, NULL, shard, epoch,
                                                tags[i]),
                         0);
        ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, ids[i],
                                        strlen(ids[i])),
                         0);
    }
    return b;
}

static void expect_id(keel_store *s, uint16_t shard, const char *id,
                      int present)
{
    uint8_t k[KEEL_KEY_MAX];
    int n = mkkey(k, shard, id, strlen(id), NULL);

    if (present)
        expect_value(s, k, (size_t)n, id);
    else
        expect_absent(s, k, (size_t)n);
}

/* done_cb means durable: a committed batch is handed back only after the
 * sync that flushes its log record; batches committed back to back share
 * one sync. */
START_TEST(test_writer_reports_when_durable)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    struct gates g = {.hold_sync = 1, .hold_commit = 2};
    struct wdone d;
    keel_store_stats st;
    keel_writer *w;
    int tag;
    void *tags[] = {&tag};
    const char *ids1[] = {"one"}, *ids2[] = {"two"}, *ids3[] = {"three"};
    keel_batch *b1 = tagged_batch(1, 1, 1, tags, ids1);
    keel_batch *b2 = tagged_batch(1, 1, 1, tags, ids2);
    keel_batch *b3 = tagged_batch(1, 1, 1, tags, ids3);

    wdone_init(&d);
    gates_install(s, &g);
    ck_assert_int_eq(keel_writer_start(s, wdone_cb, &d, &w), 0);

    /* Alone: committed, held until its sync. */
    ck_assert_int_eq(keel_writer_submit(w, b1), 0);
    sem_wait(&g.entered); /* in the sync */
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.commits, 1);
    ck_assert_uint_eq(st.unsynced, 1);
    expect_id(s, 1, "one", 1);
    usleep(20000);
    ck_assert_int_eq(wdone_count(&d), 0);
    sem_post(&g.release);
    wdone_wait(&d, 1);
    ck_assert_ptr_eq(d.b[0], b1);
    ck_assert_int_eq(d.status[0], 0);
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.unsynced, 0);
    ck_assert_uint_eq(st.syncs, 1);

    /* With a successor queued: b2 and b3 are committed, then one sync
     * makes both durable. */
    ck_assert_int_eq(keel_writer_submit(w, b2), 0);
    sem_wait(&g.entered); /* b2's commit is about to begin */
    ck_assert_int_eq(keel_writer_submit(w, b3), 0);
    sem_post(&g.release);
    wdone_wait(&d, 3);
    ck_assert_ptr_eq(d.b[1], b2);
    ck_assert_ptr_eq(d.b[2], b3);
    ck_assert_int_eq(d.status[1], 0);
    ck_assert_int_eq(d.status[2], 0);
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.commits, 3);
    ck_assert_uint_eq(st.syncs, 2);
    ck_assert_uint_eq(st.fsyncs, 2);
    ck_assert_uint_eq(st.unsynced, 0);

    keel_writer_stop(w);
    keel_batch_destroy(b1);
    keel_batch_destroy(b2);
    keel_batch_destroy(b3);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* An inline commit is durable when done_cb runs, on the caller's thread,
 * and leaves the data file's write-back owed until keel_writer_writeback
 * hands it to the writer thread (once); a commit made by the writer
 * thread sends its own, and the writer goes on with submitted batches. */
START_TEST(test_writer_inline_leaves_writeback)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    struct wdone d;
    keel_store_stats st;
    keel_writer *w;
    int tag;
    void *tags[] = {&tag};
    const char *ids1[] = {"one"}, *ids2[] = {"two"};
    keel_batch *b1 = tagged_batch(1, 1, 1, tags, ids1);
    keel_batch *b2 = tagged_batch(1, 1, 1, tags, ids2);

    wdone_init(&d);
    ck_assert_int_eq(keel_writer_start(s, wdone_cb, &d, &w), 0);
    ck_assert_int_eq(keel_writer_writeback(w), 0); /* nothing owed */

    ck_assert_int_eq(keel_writer_try_inline(w, b1), 1);
    ck_assert_int_eq(wdone_count(&d), 1); /* reported before returning */
    ck_assert_ptr_eq(d.b[0], b1);
    ck_assert_int_eq(d.status[0], 0);
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.unsynced, 0);
    ck_assert_uint_eq(st.syncs, 1);
    expect_id(s, 1, "one", 1);
    ck_assert_int_eq(keel_writer_writeback(w), 1);
    ck_assert_int_eq(keel_writer_writeback(w), 0); /* asked once */

    ck_assert_int_eq(keel_writer_submit(w, b2), 0);
    wdone_wait(&d, 2);
    ck_assert_int_eq(d.status[1], 0);
    expect_id(s, 1, "two", 1);
    ck_assert_int_eq(keel_writer_writeback(w), 0); /* nothing new owed */

    keel_writer_stop(w);
    keel_batch_destroy(b1);
    keel_batch_destroy(b2);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Stopping right after a submit: the batch is committed and synced before
 * the writer is gone. */
START_TEST(test_writer_stop_syncs)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    struct wdone d;
    keel_store_stats st;
    keel_writer *w;
    int tag;
    void *tags[] = {&tag};
    const char *ids[] = {"last"};
    keel_batch *b = tagged_batch(2, 1, 1, tags, ids);

    wdone_init(&d);
    ck_assert_int_eq(keel_writer_start(s, wdone_cb, &d, &w), 0);
    ck_assert_int_eq(keel_writer_submit(w, b), 0);
    keel_writer_stop(w);
    ck_assert_int_eq(d.n, 1);
    ck_assert_int_eq(d.status[0], 0);
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.commits, 1);
    ck_assert_uint_eq(st.unsynced, 0);
    ck_assert_uint_ge(st.syncs, 1);
    keel_store_close(s);

    s = open_store(dir);
    expect_id(s, 2, "last", 1);
    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The first of two batches with the writer fails as a whole: the second
 * one's group of the same tag (built on the first) is refused with the
 * same status, its other group commits; so is a group of that tag
 * submitted before the failures were acknowledged, and not one submitted
 * after. */
START_TEST(test_writer_failure_refuses_dependents)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    struct gates g = {.hold_commit = 1, .fail_commit = 1,
                      .fail_rc = KEEL_ENOSPC};
    struct wdone d;
    keel_writer *w;
    int ta, tb;
    void *a[] = {&ta}, *ab[] = {&ta, &tb};
    const char *ids1[] = {"a1"}, *ids2[] = {"a2", "b2"}, *ids3[] = {"a3"},
               *ids4[] = {"a4"};
    keel_batch *b1 = tagged_batch(3, 1, 1, a, ids1);
    keel_batch *b2 = tagged_batch(3, 1, 2, ab, ids2);
    keel_batch *b3 = tagged_batch(3, 1, 1, a, ids3);
    keel_batch *b4 = tagged_batch(3, 1, 1, a, ids4);

    wdone_init(&d);
    gates_install(s, &g);
    ck_assert_int_eq(keel_writer_start(s, wdone_cb, &d, &w), 0);
    ck_assert_int_eq(keel_writer_submit(w, b1), 0);
    sem_wait(&g.entered);
    ck_assert_int_eq(keel_writer_submit(w, b2), 0);
    sem_post(&g.release);
    wdone_wait(&d, 2);
    ck_assert_int_eq(d.status[0], KEEL_ENOSPC);
    ck_assert_int_eq(d.status[1], 0);
    ck_assert_int_eq(d.gst[1][0], KEEL_ENOSPC); /* a2: built on a1 */
    ck_assert_int_eq(d.gst[1][1], 0);           /* b2: independent */

    /* Not yet acknowledged: still refused. */
    ck_assert_int_eq(keel_writer_submit(w, b4), 0);
    wdone_wait(&d, 3);
    ck_assert_int_eq(d.status[2], 0);
    ck_assert_int_ne(d.gst[2][0], 0);

    /* Three failed batches, three acknowledgements: the tag is free. */
    keel_writer_ack_failure(w);
    keel_writer_ack_failure(w);
    keel_writer_ack_failure(w);
    ck_assert_int_eq(keel_writer_submit(w, b3), 0);
    wdone_wait(&d, 4);
    ck_assert_int_eq(d.status[3], 0);
    ck_assert_int_eq(d.gst[3][0], 0);
    keel_writer_stop(w);

    expect_id(s, 3, "a1", 0);
    expect_id(s, 3, "a2", 0);
    expect_id(s, 3, "b2", 1);
    expect_id(s, 3, "a4", 0);
    expect_id(s, 3, "a3", 1);
    keel_batch_destroy(b1);
    keel_batch_destroy(b2);
    keel_batch_destroy(b3);
    keel_batch_destroy(b4);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A group refused by its fence: the same tag's group in the batch behind
 * it is refused too, even though its newer epoch would pass the fence. */
START_TEST(test_writer_fence_refusal_refuses_dependents)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    struct gates g = {.hold_commit = 1};
    struct wdone d;
    keel_batch *f = keel_batch_create();
    keel_writer *w;
    int ta, tb;
    void *a[] = {&ta}, *ab[] = {&ta, &tb};
    const char *ids1[] = {"a1"}, *ids2[] = {"a2", "b2"}, *ids3[] = {"a3"};
    keel_batch *b1 = tagged_batch(5, 1, 1, a, ids1);
    keel_batch *b2 = tagged_batch(5, 6, 2, ab, ids2);
    keel_batch *b3 = tagged_batch(5, 6, 1, a, ids3);

    ck_assert_int_eq(keel_batch_begin_group(f, NULL, 5, 5, NULL), 0);
    ck_assert_int_eq(keel_batch_fence_only(f), 0);
    ck_assert_int_eq(keel_store_commit(s, f), 0);
    keel_batch_destroy(f);

    wdone_init(&d);
    gates_install(s, &g);
    ck_assert_int_eq(keel_writer_start(s, wdone_cb, &d, &w), 0);
    ck_assert_int_eq(keel_writer_submit(w, b1), 0);
    sem_wait(&g.entered);
    ck_assert_int_eq(keel_writer_submit(w, b2), 0);
    sem_post(&g.release);
    wdone_wait(&d, 2);
    ck_assert_int_eq(d.status[0], 0);
    ck_assert_int_eq(d.gst[0][0], KEEL_EFENCED);
    ck_assert_int_eq(d.status[1], 0);
    ck_assert_int_eq(d.gst[1][0], KEEL_EFENCED);
    ck_assert_int_eq(d.gst[1][1], 0);
    keel_writer_ack_failure(w);
    keel_writer_ack_failure(w);
    ck_assert_int_eq(keel_writer_submit(w, b3), 0);
    wdone_wait(&d, 3);
    ck_assert_int_eq(d.gst[2][0], 0);
    keel_writer_stop(w);

    expect_id(s, 5, "a1", 0);
    expect_id(s, 5, "a2", 0);
    expect_id(s, 5, "b2", 1);
    expect_id(s, 5, "a3", 1);
    ck_assert_uint_eq(fence_of(s, "", 5), 6);
    keel_batch_destroy(b1);
    keel_batch_destroy(b2);
    keel_batch_destroy(b3);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* submit_merge appends to the batch waiting for the writer, but not to
 * one submitted before an acknowledged failure, nor to a plain submit. */
START_TEST(test_writer_merge)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    struct gates g = {.hold_commit = 1};
    struct wdone d;
    keel_writer *w;
    keel_batch *into = NULL;
    int t[6];
    const char *ids[] = {"m1", "m2", "m3", "m4", "m5", "m6"};
    keel_batch *b[6];

    for (int i = 0; i < 6; i++) {
        void *tag[] = {&t[i]};
        b[i] = tagged_batch(6, 1, 1, tag, &ids[i]);
    }
    wdone_init(&d);
    gates_install(s, &g);
    ck_assert_int_eq(keel_writer_start(s, wdone_cb, &d, &w), 0);
    ck_assert_int_eq(keel_writer_submit_merge(w, b[0], &into), 0);
    ck_assert_ptr_eq(into, b[0]);
    sem_wait(&g.entered); /* b[0] taken: nothing waits */
    ck_assert_int_eq(keel_writer_submit_merge(w, b[1], &into), 0);
    ck_assert_ptr_eq(into, b[1]);
    ck_assert_int_eq(keel_writer_submit_merge(w, b[2], &into), 0);
    ck_assert_ptr_eq(into, b[1]);
    ck_assert_uint_eq(keel_batch_group_count(b[1]), 2);
    ck_assert_uint_eq(keel_batch_group_count(b[2]), 1); /* unchanged */
    keel_writer_ack_failure(w);
    ck_assert_int_eq(keel_writer_submit_merge(w, b[3], &into), 0);
    ck_assert_ptr_eq(into, b[3]);
    ck_assert_int_eq(keel_writer_submit(w, b[4]), 0);
    ck_assert_int_eq(keel_writer_submit_merge(w, b[5], &into), 0);
    ck_assert_ptr_eq(into, b[5]);
    sem_post(&g.release);
    wdone_wait(&d, 5);
    ck_assert_ptr_eq(d.b[0], b[0]);
    ck_assert_ptr_eq(d.b[1], b[1]);
    ck_assert_ptr_eq(d.b[2], b[3]);
    ck_assert_ptr_eq(d.b[3], b[4]);
    ck_assert_ptr_eq(d.b[4], b[5]);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(d.status[i], 0);
    keel_writer_stop(w);
    ck_assert_int_eq(d.n, 5);
    for (int i = 0; i < 6; i++) {
        expect_id(s, 6, ids[i], 1);
        keel_batch_destroy(b[i]);
    }
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---------------------------------------------------------------- main */

/* ------------------------------------------------------------ recovery */

/* What the child of a crash test committed, durably, before it died. */
#define CRASH_KEYS 40

static void crash_key(uint8_t *k, int *n, int i)
{
    char id[16];

    snprintf(id, sizeof id, "c%d", i);
    *n = mkkey(k, 1, id, strlen(id), NULL);
}

/* Runs in a child: opens the store, commits CRASH_KEYS puts (c10 with an
 * entry too), a delete of c0, a prefix delete of c10 (its state and
 * entry) and a fence raise, each durable on return, then dies without
 * closing. */
/* The size of data.mdb once the child's open returned (its open raises
 * the run counter: a commit, then the open's checkpoint covers it). */
static off_t crash_open_size;

static void crash_child_mode(const char *dir, int durability)
{
    int fds[2];
    pid_t pid;
    int status;

    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_store *s = open_store_opts(dir, 64, durability, 0, 0);
        keel_batch *b = keel_batch_create();
        uint8_t k[KEEL_KEY_MAX];
        char v[32];
        int n;
        off_t opened = file_size(dir, "data.mdb");

        close(fds[0]);
        if (write(fds[1], &opened, sizeof opened) != (ssize_t)sizeof opened)
            _exit(15);
        close(fds[1]);

        for (int i = 0; i < CRASH_KEYS; i++) {
            crash_key(k, &n, i);
            snprintf(v, sizeof v, "value %d", i);
            if (commit_put(s, NULL, 1, 3, k, (size_t)n, (uint64_t)i + 1,
                           v) != 0)
                _exit(10);
        }
        crash_key(k, &n, 0);
        keel_batch_reset(b);
        if (keel_batch_begin_group(b, NULL, 1, 3, NULL) != 0 ||
            keel_batch_del(b, k, (size_t)n) != 0 ||
            keel_store_commit(s, b) != 0)
            _exit(11);
        n = mkkey(k, 1, "c10", 3, "entry");
        if (commit_put(s, NULL, 1, 3, k, (size_t)n, 1, "e") != 0)
            _exit(12);
        crash_key(k, &n, 10); /* the state key is the actor's prefix */
        keel_batch_reset(b);
        if (keel_batch_begin_group(b, NULL, 1, 3, NULL) != 0 ||
            keel_batch_del_prefix(b, k, (size_t)n) != 0 ||
            keel_store_commit(s, b) != 0)
            _exit(14);
        keel_batch_reset(b);
        if (keel_batch_begin_group(b, "cap", 9, 42, NULL) != 0 ||
            keel_batch_fence_only(b) != 0 || keel_store_commit(s, b) != 0)
            _exit(13);
        _exit(0); /* no close: no checkpoint of any of it */
    }
    close(fds[1]);
    crash_open_size = 0;
    ck_assert_int_eq(read(fds[0], &crash_open_size, sizeof crash_open_size),
                     (ssize_t)sizeof crash_open_size);
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child status %d", status);
}

/* Where the log's records end: records from the header on, each 56 bytes
 * of header (its magic at 8, its length at 24) and its groups. The file
 * goes on past it (zeros written ahead). */
static off_t log_records_end(const char *dir)
{
    char path[512];
    uint8_t h[56];
    uint32_t magic;
    uint64_t len;
    off_t at = 4096;
    int fd;

    snprintf(path, sizeof path, "%s/keel.wal", dir);
    fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    while (pread(fd, h, sizeof h, at) == (ssize_t)sizeof h) {
        memcpy(&magic, h + 8, 4);
        memcpy(&len, h + 24, 8);
        if (magic != 0x4b574c33u)
            break;
        at += (off_t)(sizeof h + len);
    }
    close(fd);
    ck_assert_int_gt(at, 4096);
    return at;
}

static void crash_child(const char *dir)
{
    crash_child_mode(dir, KEEL_DURABILITY_FSYNC);
}

/* What every crash test expects after reopening. */
static void crash_expect(keel_store *s)
{
    uint8_t k[KEEL_KEY_MAX];
    char v[32];
    int n;

    crash_key(k, &n, 0);
    expect_absent(s, k, (size_t)n);
    for (int i = 1; i < CRASH_KEYS; i++) {
        crash_key(k, &n, i);
        if (i == 10) {
            expect_absent(s, k, (size_t)n);
            continue;
        }
        snprintf(v, sizeof v, "value %d", i);
        expect_value(s, k, (size_t)n, v);
    }
    n = mkkey(k, 1, "c10", 3, "entry");
    expect_absent(s, k, (size_t)n);
    ck_assert_uint_eq(fence_of(s, "cap", 9), 42);
    ck_assert_uint_eq(fence_of(s, NULL, 1), 3);
}

/* A process that dies without closing loses nothing it was told is
 * durable. With fsync its log is replayed; a clean close after that leaves
 * a checkpoint of everything, and opening again (with fsync) finds the
 * same. Durability none writes through LMDB's map: its pages are the page
 * cache's, so nothing is lost either, and the blocks under the map were
 * reserved, so a full disk cannot hit a page written through it. */
static void process_crash_case(int durability)
{
    char *dir = tu_tmpdir("store");
    keel_store_stats st;
    keel_store *s;

    crash_child_mode(dir, durability);
    s = open_store_opts(dir, 64, durability, 0, 0);
    crash_expect(s);
    if (durability == KEEL_DURABILITY_NONE) {
        ck_assert_int_eq(file_size(dir, "keel.wal"), 4096); /* header */
        keel_store_stats_get(s, &st);
        ck_assert_int_ge(file_blocks(dir, "data.mdb"), (off_t)st.map_size);
    }
    keel_store_close(s);
    s = open_store(dir);
    crash_expect(s);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}

START_TEST(test_recover_process_crash)
{
    process_crash_case(KEEL_DURABILITY_FSYNC);
}
END_TEST

START_TEST(test_recover_process_crash_none)
{
    process_crash_case(KEEL_DURABILITY_NONE);
}
END_TEST

/* The log is written ahead of its records with zeros, on the disk (not a
 * sparse file): a record's flush then does not also change the file's
 * size. A crash with records well past the first stretch written ahead
 * loses nothing. */
START_TEST(test_log_written_ahead)
{
    char *dir = tu_tmpdir("store");
    uint8_t k[KEEL_KEY_MAX];
    char v[2048];
    keel_store *s = open_store(dir);
    pid_t pid;
    int status, n;

    n = mkkey(k, 1, "w0", 2, NULL);
    ck_assert_int_eq(commit_put(s, NULL, 1, 3, k, (size_t)n, 1, "v"), 0);
    ck_assert_int_ge(file_size(dir, "keel.wal"), 1 << 20);
    ck_assert_int_ge(file_blocks(dir, "keel.wal"), 1 << 20);
    ck_assert_int_lt(log_records_end(dir), 8192);
    keel_store_close(s);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_store_options o = {0};
        char err[256];

        /* No checkpoint on time: the log must reach past its first
         * stretch (700 commits stay well under the pages that call for
         * one). */
        o.path = dir;
        o.shard_count = 64;
        o.checkpoint_interval_ms = 3600 * 1000;
        if (keel_store_open(&o, &s, err, sizeof err) != 0)
            _exit(9);
        memset(v, 'a', sizeof v - 1);
        v[sizeof v - 1] = '\0';
        for (int i = 1; i <= 700; i++) {
            char id[16];

            snprintf(id, sizeof id, "w%d", i);
            n = mkkey(k, 1, id, strlen(id), NULL);
            v[0] = (char)('a' + i % 26);
            if (commit_put(s, NULL, 1, 3, k, (size_t)n, 1, v) != 0)
                _exit(10);
        }
        _exit(0); /* crash: no close */
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child");
    ck_assert_int_gt(log_records_end(dir), 1 << 20);
    ck_assert_int_ge(file_size(dir, "keel.wal"), log_records_end(dir));
    s = open_store(dir);
    for (int i = 1; i <= 700; i++) {
        char id[16];

        snprintf(id, sizeof id, "w%d", i);
        n = mkkey(k, 1, id, strlen(id), NULL);
        memset(v, 'a', sizeof v - 1);
        v[sizeof v - 1] = '\0';
        v[0] = (char)('a' + i % 26);
        expect_value(s, k, (size_t)n, v);
    }
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Durability none runs without the log: opening a store that crashed in
 * fsync mode replays its log first, and switching back finds it all. */
START_TEST(test_recover_then_durability_none)
{
    char *dir = tu_tmpdir("store");
    uint8_t k[KEEL_KEY_MAX];
    keel_store *s;
    int n;

    crash_child(dir);
    s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE, 0, 0);
    crash_expect(s);
    /* The log is its header alone, and no checkpoint slot holds
     * anything (their room stays reserved). */
    ck_assert_int_eq(file_size(dir, "keel.wal"), 4096);
    {
        char path[512];
        uint8_t head[2][48], zeros[48] = {0};
        int fd;

        snprintf(path, sizeof path, "%s/keel.ckpt", dir);
        fd = open(path, O_RDONLY);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(pread(fd, head[0], 48, 0), 48);
        ck_assert_int_eq(pread(fd, head[1], 48, 256 << 10), 48);
        close(fd);
        ck_assert_mem_eq(head[0], zeros, 48);
        ck_assert_mem_eq(head[1], zeros, 48);
    }
    n = mkkey(k, 1, "late", 4, NULL);
    ck_assert_int_eq(commit_put(s, NULL, 1, 3, k, (size_t)n, 1, "x"), 0);
    keel_store_close(s);
    s = open_store(dir);
    crash_expect(s);
    expect_value(s, k, (size_t)n, "x");
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A machine crash can leave LMDB's meta pages pointing at pages that
 * never reached the disk. Simulated here: both meta pages are garbage,
 * and every page written after the checkpoint is zeros. The store goes
 * back to its checkpoint and replays the log. */
START_TEST(test_recover_lost_pages)
{
    char *dir = tu_tmpdir("store");
    char path[512];
    off_t size = 0, now;
    static uint8_t junk[8192];
    keel_store *s;
    int fd;

    /* A store closed cleanly: its checkpoint covers the whole file. The
     * child's open raises the run counter and checkpoints that: what the
     * commits after it write past the file as it was then is lost. */
    s = open_store(dir);
    keel_store_close(s);
    crash_child(dir);
    size = crash_open_size;
    ck_assert_int_gt(size, 0);
    now = file_size(dir, "data.mdb");
    ck_assert_int_gt(now, size); /* the commits went somewhere */

    snprintf(path, sizeof path, "%s/data.mdb", dir);
    fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    memset(junk, 0xa5, sizeof junk);
    ck_assert_int_eq(pwrite(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk);
    ck_assert_int_eq(ftruncate(fd, size), 0);
    ck_assert_int_eq(ftruncate(fd, now), 0); /* zeros past the checkpoint */
    close(fd);

    s = open_store(dir);
    crash_expect(s);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A record whose write never finished (cut short, or bytes that are not
 * a record) ends the log: what came before is replayed, the open works. */
START_TEST(test_recover_torn_log)
{
    char *dir = tu_tmpdir("store");
    char path[512];
    uint8_t hdr[32];
    off_t wal;
    keel_store *s;
    int fd;

    crash_child(dir);
    wal = log_records_end(dir);
    snprintf(path, sizeof path, "%s/keel.wal", dir);
    fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    /* A header that claims a 1000-byte record, then only 10 bytes. */
    ck_assert_int_eq(pread(fd, hdr, sizeof hdr, 0), (ssize_t)sizeof hdr);
    memset(hdr + 16, 0xff, 8); /* some lsn: never the next one */
    ck_assert_int_eq(pwrite(fd, hdr, sizeof hdr, wal), (ssize_t)sizeof hdr);
    ck_assert_int_eq(pwrite(fd, "0123456789", 10, wal + 32), 10);
    close(fd);

    s = open_store(dir);
    crash_expect(s);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A log whose checkpoint is gone cannot be replayed safely: the open
 * refuses with KEEL_ECORRUPT and names both files. */
START_TEST(test_recover_log_without_checkpoint)
{
    char *dir = tu_tmpdir("store");
    char path[512], err[256] = "";
    keel_store_options o = {0};
    keel_store *s = NULL;

    crash_child(dir);
    snprintf(path, sizeof path, "%s/keel.ckpt", dir);
    ck_assert_int_eq(unlink(path), 0);
    o.path = dir;
    o.shard_count = 64;
    ck_assert_int_eq(keel_store_open(&o, &s, err, sizeof err),
                     KEEL_ECORRUPT);
    ck_assert_ptr_nonnull(strstr(err, "keel.ckpt"));
    tu_rmrf(dir);
    free(dir);
}
END_TEST


/* Records left past the end of a replayed run (here: the first record
 * lost in a machine crash, the next ones kept) must never come back, not
 * even after a later generation reused their offsets and lsns. */
static void gen_child_puts(const char *dir, const char *prefix, int n)
{
    pid_t pid = fork();
    int status;

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_store *s = open_store(dir);
        uint8_t k[KEEL_KEY_MAX];
        char v[32];
        int kn = mkkey(k, 1, "K", 1, NULL);

        for (int i = 1; i <= n; i++) {
            snprintf(v, sizeof v, "%s-%d", prefix, i);
            if (commit_put(s, NULL, 1, 3, k, (size_t)kn, (uint64_t)i, v) != 0)
                _exit(10);
        }
        _exit(0); /* crash: no close */
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child");
}

START_TEST(test_recover_stale_records_never_return)
{
    char *dir = tu_tmpdir("store");
    char path[512];
    uint8_t zeros[32] = {0}, k[KEEL_KEY_MAX];
    keel_store *s;
    int fd, kn = mkkey(k, 1, "K", 1, NULL);

    s = open_store(dir);
    keel_store_close(s); /* checkpoint, log empty */
    /* Life 1: five commits (old-1..old-5), then damage that lost record
     * 1's header but kept records 2..5. They say record 1 was flushed:
     * the open refuses, and the operator recovers to the last good
     * record (none). */
    gen_child_puts(dir, "old", 5);
    snprintf(path, sizeof path, "%s/keel.wal", dir);
    fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, zeros, sizeof zeros, 4096), 32);
    close(fd);
    /* Life 2: recovery replays nothing (K absent: correct), then one
     * acknowledged (synced) write new-1, then a crash. */
    {
        keel_store_options o = {0};
        char err[512] = "";

        o.path = dir;
        o.shard_count = 64;
        ck_assert_int_eq(keel_store_open(&o, &s, err, sizeof err),
                         KEEL_ECORRUPT);
        ck_assert_ptr_nonnull(strstr(err, "keel.wal is damaged at offset 4096"));
        o.recover_to_last_good = 1;
        ck_assert_int_eq(keel_store_open(&o, &s, err, sizeof err), 0);
    }
    expect_absent(s, k, (size_t)kn);
    keel_store_close(s);
    gen_child_puts(dir, "new", 1);
    /* Life 3: the acknowledged new-1 must be there. */
    s = open_store(dir);
    expect_value(s, k, (size_t)kn, "new-1");
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* At the map's maximum, overwrites go on: when the map is full, a
 * checkpoint releases the pages the pin held before growth is tried. */
START_TEST(test_overwrite_at_max_map)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store_opts(dir, 64, KEEL_DURABILITY_FSYNC,
                                    256 << 10, 1 << 20);
    keel_batch *b = keel_batch_create();
    int rc = 0, i;

    for (i = 0; i < 200; i++) {
        fill_batch(b, 0, 10, 4000); /* the same 10 keys every time */
        rc = keel_store_commit(s, b);
        if (rc != 0)
            break;
    }
    ck_assert_msg(rc == 0, "overwrite %d: %s", i, keel_err_name(rc));
    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A log that reaches the disk's (here: the file size) limit starts again
 * at its beginning after a checkpoint: commits go on, and the log never
 * grows past the room it has. */
static void logfull_batch(keel_batch *b, int i)
{
    uint8_t k[KEEL_KEY_MAX];
    char e[200];
    int n, rc;

    /* No check assertion per op: under the file size limit, check's own
     * record of passed assertions must stay small. */
    keel_batch_reset(b);
    rc = keel_batch_begin_group(b, NULL, 4, 1, NULL);
    n = keel_key_encode(k, 4, TYPE, strlen(TYPE), "small", 5, NULL, 0);
    rc |= keel_batch_put(b, k, (size_t)n, (uint64_t)i, "x", 1);
    /* Deletes of keys that do not exist: bytes in the log, no pages. */
    for (int j = 0; j < 600; j++) {
        snprintf(e, sizeof e, "%0150d", j);
        n = keel_key_encode(k, 4, TYPE, strlen(TYPE), "nx", 2, e, strlen(e));
        rc |= keel_batch_del(b, k, (size_t)n);
    }
    if (rc != 0)
        ck_abort_msg("building batch %d failed", i);
}

START_TEST(test_log_full_starts_again)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    keel_batch *b = keel_batch_create();
    keel_store_stats st;
    struct rlimit old, lim;
    uint8_t k[KEEL_KEY_MAX];
    int n = mkkey(k, 4, "small", 5, NULL);

    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_IGN);
    lim.rlim_cur = 2u << 20;
    lim.rlim_max = old.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    for (int i = 0; i < 100; i++) {
        int rc;

        logfull_batch(b, i);
        rc = keel_store_commit(s, b);
        if (rc != 0)
            ck_abort_msg("commit %d: %s", i, keel_err_name(rc));
    }
    ck_assert_int_le(file_size(dir, "keel.wal"), 2 << 20);
    keel_store_stats_get(s, &st);
    ck_assert_uint_ge(st.checkpoints, 1);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    keel_store_close(s);
    s = open_store(dir);
    expect_value(s, k, (size_t)n, "x");
    keel_store_close(s);
    keel_batch_destroy(b);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------ units and identity */

static int tkey(uint8_t *buf, uint16_t shard, const char *type,
               const char *id)
{
    int n = keel_key_encode(buf, shard, type, strlen(type), id, strlen(id),
                            NULL, 0);

    ck_assert_int_gt(n, 0);
    return n;
}

static int count_cb(const uint8_t *key, size_t klen, const keel_record *rec,
                    void *data)
{
    (void)key;
    (void)klen;
    (void)rec;
    (*(int *)data)++;
    return 0;
}

/* Records of the unit, or the scan's error. */
static int unit_count(keel_store *s, const char *cap, uint16_t shard)
{
    keel_store_read *r;
    int n = 0, rc;

    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    rc = keel_store_unit_scan(r, cap, shard, count_cb, &n);
    keel_store_read_end(r);
    return rc != 0 ? rc : n;
}

/* A record's unit is the store's to say: a type is tied to the capability
 * it was first written under, whatever the reader has loaded, and a
 * write of it under another capability is refused. */
START_TEST(test_type_table_units)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    uint8_t kg[KEEL_KEY_MAX], kd[KEEL_KEY_MAX], kx[KEEL_KEY_MAX];
    int ng = tkey(kg, 5, "gputype", "a"), nd = tkey(kd, 5, "plain", "b");
    int nx = tkey(kx, 5, "gputype", "c");
    keel_batch *b = keel_batch_create();
    int st;

    ck_assert_int_eq(commit_put(s, "gpu", 5, 1, kg, (size_t)ng, 1, "g"), 0);
    ck_assert_int_eq(commit_put(s, NULL, 5, 1, kd, (size_t)nd, 1, "d"), 0);
    /* The same type under the default group: refused, nothing written. */
    ck_assert_int_eq(commit_put(s, NULL, 5, 1, kx, (size_t)nx, 1, "x"),
                     KEEL_ETYPECAP);
    expect_absent(s, kx, (size_t)nx);
    keel_store_close(s);

    s = open_store(dir);
    ck_assert_int_eq(unit_count(s, "", 5), 1);
    ck_assert_int_eq(unit_count(s, "gpu", 5), 1);
    ck_assert_int_eq(unit_count(s, "gpu", 6), 0);
    ck_assert_int_eq(keel_store_type_learn(s, "gputype", "gpu"), 0);
    ck_assert_int_eq(keel_store_type_learn(s, "gputype", ""), KEEL_ETYPECAP);
    ck_assert_int_eq(keel_store_type_learn(s, "never", ""), KEEL_ENOTFOUND);

    /* Deleting the default unit leaves the gpu unit's record. */
    ck_assert_int_eq(keel_batch_begin_group(b, "", 5, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_del_unit(b, 0), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_batch_group(b, 0, &st);
    ck_assert_int_eq(st, 0);
    expect_absent(s, kd, (size_t)nd);
    expect_value(s, kg, (size_t)ng, "g");
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, "gpu", 5, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_del_unit(b, 0), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    expect_absent(s, kg, (size_t)ng);
    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

struct keys_seen {
    int n;
    char ids[8][8];
};

static int ids_cb(const uint8_t *key, size_t klen, const keel_record *rec,
                  void *data)
{
    struct keys_seen *k = data;

    (void)rec;
    ck_assert_int_lt(k->n, 8);
    /* The id is the key's tail here: ids of one letter. */
    k->ids[k->n][0] = (char)key[klen - 1];
    k->ids[k->n][1] = '\0';
    k->n++;
    return 0;
}

/* A unit scan in pieces: from after a key of the unit, only the records
 * after it (of the unit, not of the shard's other units); after the last
 * one, none; a key of another shard is refused. */
START_TEST(test_unit_scan_from)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    uint8_t k[4][KEEL_KEY_MAX], kg[KEEL_KEY_MAX], ko[KEEL_KEY_MAX];
    int n[4], ng, no, i;
    static const char *const ids[4] = {"a", "b", "c", "d"};
    struct keys_seen seen;
    keel_store_read *r;

    for (i = 0; i < 4; i++) {
        n[i] = tkey(k[i], 9, "counter", ids[i]);
        ck_assert_int_eq(commit_put(s, NULL, 9, 1, k[i], (size_t)n[i], 1,
                                    "v"), 0);
    }
    ng = tkey(kg, 9, "gputype", "e");
    ck_assert_int_eq(commit_put(s, "gpu", 9, 1, kg, (size_t)ng, 1, "g"), 0);
    no = tkey(ko, 10, "counter", "a");
    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    memset(&seen, 0, sizeof seen);
    ck_assert_int_eq(keel_store_unit_scan_from(r, "", 9, k[1], (size_t)n[1],
                                               ids_cb, &seen), 0);
    ck_assert_int_eq(seen.n, 2);
    ck_assert_str_eq(seen.ids[0], "c");
    ck_assert_str_eq(seen.ids[1], "d");
    memset(&seen, 0, sizeof seen);
    ck_assert_int_eq(keel_store_unit_scan_from(r, "", 9, k[3], (size_t)n[3],
                                               ids_cb, &seen), 0);
    ck_assert_int_eq(seen.n, 0);
    memset(&seen, 0, sizeof seen);
    ck_assert_int_eq(keel_store_unit_scan_from(r, "gpu", 9, k[0],
                                               (size_t)n[0], ids_cb, &seen),
                     0);
    ck_assert_int_eq(seen.n, 1);
    ck_assert_str_eq(seen.ids[0], "e");
    memset(&seen, 0, sizeof seen);
    ck_assert_int_eq(keel_store_unit_scan_from(r, "", 9, NULL, 0, ids_cb,
                                               &seen), 0);
    ck_assert_int_eq(seen.n, 4);
    ck_assert_int_eq(keel_store_unit_scan_from(r, "", 9, ko, (size_t)no,
                                               ids_cb, &seen),
                     KEEL_EINVAL);
    keel_store_read_end(r);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A unit's deletion is decided inside the transaction, after the batch's
 * earlier groups: a unit received by an earlier group at epoch 5 stays
 * when a later group deletes what was written below 5, and what the
 * store held from before goes. Replayed from the log after a crash, the
 * same comes out. */
START_TEST(test_del_unit_sees_earlier_groups)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    uint8_t k1[KEEL_KEY_MAX], k2[KEEL_KEY_MAX], k3[KEEL_KEY_MAX];
    int n1 = tkey(k1, 3, "counter", "1"), n2 = tkey(k2, 3, "counter", "2");
    int n3 = tkey(k3, 3, "counter", "3");
    keel_batch *b = keel_batch_create();
    int st;
    pid_t pid;

    ck_assert_int_eq(commit_put(s, NULL, 3, 2, k1, (size_t)n1, 1, "old1"), 0);
    ck_assert_int_eq(commit_put(s, NULL, 3, 2, k3, (size_t)n3, 1, "old3"), 0);
    /* A stream replaces the unit at epoch 5 ... */
    ck_assert_int_eq(keel_batch_begin_group(b, "", 3, 5, NULL), 0);
    ck_assert_int_eq(keel_batch_del_unit(b, 0), 0);
    ck_assert_int_eq(keel_batch_put(b, k1, (size_t)n1, 7, "new1", 4), 0);
    ck_assert_int_eq(keel_batch_put(b, k2, (size_t)n2, 7, "new2", 4), 0);
    /* ... and in the same batch the stale copy from below 5 goes. */
    ck_assert_int_eq(keel_batch_begin_group(b, "", 3, 5, NULL), 0);
    ck_assert_int_eq(keel_batch_del_unit(b, 5), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Committed, in the log, then the process dies. */
        uint64_t txn;
        int rc = keel_store_commit_deferred(s, b, &txn);
        if (rc == 0)
            rc = keel_store_sync(s);
        _exit(rc == 0 ? 0 : 1);
    }
    {
        int wst;
        ck_assert_int_eq(waitpid(pid, &wst, 0), pid);
        ck_assert(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    }
    keel_batch_reset(b);
    keel_store_close(s);
    /* The child's commit is only in the log: the open replays it. */
    s = open_store(dir);
    expect_value(s, k1, (size_t)n1, "new1");
    expect_value(s, k2, (size_t)n2, "new2");
    expect_absent(s, k3, (size_t)n3);
    ck_assert_uint_eq(fence_of(s, NULL, 3), 5);
    /* And in one process too, the other way round: a deletion below 6
     * after the stream takes everything. */
    ck_assert_int_eq(keel_batch_begin_group(b, "", 3, 6, NULL), 0);
    ck_assert_int_eq(keel_batch_del_unit(b, 6), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_batch_group(b, 0, &st);
    ck_assert_int_eq(st, 0);
    ck_assert_int_eq(unit_count(s, "", 3), 0);
    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A batch that must be durable is flushed at its commit even with
 * durability none. */
START_TEST(test_require_sync_none)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE, 0, 0);
    uint8_t k[KEEL_KEY_MAX];
    int n = tkey(k, 1, "counter", "x");
    keel_batch *b = keel_batch_create();
    keel_store_stats st;

    ck_assert_int_eq(commit_put(s, NULL, 1, 1, k, (size_t)n, 1, "a"), 0);
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.fsyncs, 0);
    ck_assert_int_eq(keel_batch_begin_group(b, "", 1, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 2, "b", 1), 0);
    keel_batch_require_sync(b);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.fsyncs, 1);
    /* reset forgets the requirement */
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, "", 1, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 3, "c", 1), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_store_stats_get(s, &st);
    ck_assert_uint_eq(st.fsyncs, 1);
    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static int fail_flush(void *data)
{
    (void)data;
    return EIO;
}

/* With durability none, a batch that must be durable whose flush fails
 * committed all the same: it is in doubt, not "not written" (its caller
 * must not tell anyone it did not happen), and the store is broken. */
START_TEST(test_require_sync_none_flush_fails)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store_opts(dir, 64, KEEL_DURABILITY_NONE, 0, 0);
    keel_store_hooks h = {.before_sync = fail_flush};
    uint8_t k[KEEL_KEY_MAX];
    int n = tkey(k, 1, "counter", "x");
    keel_batch *b = keel_batch_create();
    uint64_t txn = 0;

    keel_store_set_hooks(s, &h);
    ck_assert_int_eq(keel_batch_begin_group(b, "", 1, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 1, "b", 1), 0);
    keel_batch_require_sync(b);
    ck_assert_int_eq(keel_store_commit_deferred(s, b, &txn), KEEL_EINDOUBT);
    ck_assert_uint_ne(txn, 0);
    /* Broken from then on, as after any failed flush. */
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, "", 1, 1, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)n, 2, "c", 1), 0);
    ck_assert_int_eq(keel_store_commit(s, b), KEEL_ESTORE);
    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

static int open_as(const char *dir, const char *cluster, const char *node,
                   keel_store **out, char *err, size_t errlen)
{
    keel_store_options o = {0};

    o.path = dir;
    o.shard_count = 64;
    o.cluster = cluster;
    o.node = node;
    return keel_store_open(&o, out, err, errlen);
}

/* A store is made for one cluster and node, with an identity of its own. */
START_TEST(test_store_identity)
{
    char *dir = tu_tmpdir("store"), *dir2 = tu_tmpdir("store");
    char id1[33], id2[33], id3[33], err[512] = "";
    keel_store *s;

    ck_assert_int_eq(open_as(dir, "prod", "n1", &s, err, sizeof err), 0);
    keel_store_id(s, id1);
    ck_assert_uint_eq(strlen(id1), 32);
    keel_store_close(s);
    ck_assert_int_eq(open_as(dir, "prod", "n2", &s, err, sizeof err),
                     KEEL_EMISMATCH);
    ck_assert_ptr_nonnull(strstr(err, "node n1 of cluster prod"));
    ck_assert_int_eq(open_as(dir, "test", "n1", &s, err, sizeof err),
                     KEEL_EMISMATCH);
    ck_assert_int_eq(open_as(dir, NULL, NULL, &s, err, sizeof err), 0);
    keel_store_id(s, id2);
    keel_store_close(s);
    ck_assert_str_eq(id1, id2);
    ck_assert_int_eq(open_as(dir, "prod", "n1", &s, err, sizeof err), 0);
    keel_store_close(s);
    /* Another directory: another identity, whatever it is opened for. */
    ck_assert_int_eq(open_as(dir2, "prod", "n1", &s, err, sizeof err), 0);
    keel_store_id(s, id3);
    keel_store_close(s);
    ck_assert_str_ne(id1, id3);
    tu_rmrf(dir);
    tu_rmrf(dir2);
    free(dir);
    free(dir2);
}
END_TEST

static uint64_t run_at_open(const char *dir, int durability, int new_id,
                            char id[33])
{
    keel_store_options o = {0};
    keel_store *s = NULL;
    char err[256] = "";
    uint64_t run;
    int rc;

    o.path = dir;
    o.shard_count = 64;
    o.durability = durability;
    o.new_store_id = new_id;
    rc = keel_store_open(&o, &s, err, sizeof err);
    ck_assert_msg(rc == 0, "open %s: %s (%s)", dir, keel_err_name(rc), err);
    run = keel_store_run(s);
    if (id != NULL)
        keel_store_id(s, id);
    keel_store_close(s);
    return run;
}

/* keel_store_stale at an open (new_id: with new_store_id), and marked
 * stale after it when mark is set (then dropped without a close, as a
 * node stopped by a crash right after would). */
static uint64_t store_stale_at_open(const char *dir, int durability,
                                    int new_id)
{
    keel_store_options o = {0};
    keel_store *s = NULL;
    char err[256] = "";
    uint64_t stale;
    int rc;

    o.path = dir;
    o.shard_count = 64;
    o.durability = durability;
    o.new_store_id = new_id;
    rc = keel_store_open(&o, &s, err, sizeof err);
    ck_assert_msg(rc == 0, "open %s: %s (%s)", dir, keel_err_name(rc), err);
    stale = keel_store_stale(s);
    keel_store_close(s);
    return stale;
}

/* Marks the store stale in a child that then dies without closing. */
static void mark_stale_and_crash(const char *dir, int durability)
{
    pid_t pid = fork();
    int status;

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_store *s = open_store_opts(dir, 64, durability, 0, 0);
        uint8_t k[KEEL_KEY_MAX];
        int n = mkkey(k, 1, "m", 1, NULL);

        if (commit_put(s, NULL, 1, 3, k, (size_t)n, 1, "v") != 0)
            _exit(10);
        if (keel_store_mark_stale(s) != 0 || keel_store_stale(s) == 0)
            _exit(11);
        if (commit_put(s, NULL, 1, 3, k, (size_t)n, 2, "w") != 0)
            _exit(12);
        _exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child status %d", status);
}

/* A store marked stale says so at every later open, whatever the
 * durability and however it stopped, until an open with a new store id
 * drops the mark with the identity. */
START_TEST(test_store_stale_mark)
{
    int durs[2] = {KEEL_DURABILITY_FSYNC, KEEL_DURABILITY_NONE};
    int i;

    for (i = 0; i < 2; i++) {
        char *dir = tu_tmpdir("store");
        char id1[33], id2[33];

        ck_assert(run_at_open(dir, durs[i], 0, id1) == 1);
        ck_assert(store_stale_at_open(dir, durs[i], 0) == 0);
        mark_stale_and_crash(dir, durs[i]); /* at run 3 */
        ck_assert(store_stale_at_open(dir, durs[i], 0) == 3);
        ck_assert(store_stale_at_open(dir, KEEL_DURABILITY_FSYNC, 0) == 3);
        ck_assert(run_at_open(dir, durs[i], 0, id2) == 6);
        ck_assert_str_eq(id1, id2);
        ck_assert(store_stale_at_open(dir, durs[i], 1) == 0);
        ck_assert(store_stale_at_open(dir, durs[i], 0) == 0);
        ck_assert(run_at_open(dir, durs[i], 0, id2) == 9);
        ck_assert_str_ne(id1, id2);
        tu_rmrf(dir);
        free(dir);
    }
}
END_TEST

/* The run counter rises by one at every open (whatever the durability,
 * which with none opens LMDB twice), durably before the open returns: a
 * crash right after leaves it raised. A copy of the directory goes on
 * from where it was copied. A new store id keeps the counter going. */
START_TEST(test_store_run_counter)
{
    char *dir = tu_tmpdir("store"), *copy = tu_tmpdir("store");
    char id1[33], id2[33], id3[33], cmd[1200];

    ck_assert(run_at_open(dir, KEEL_DURABILITY_FSYNC, 0, id1) == 1);
    ck_assert(run_at_open(dir, KEEL_DURABILITY_FSYNC, 0, NULL) == 2);
    ck_assert(run_at_open(dir, KEEL_DURABILITY_NONE, 0, NULL) == 3);
    ck_assert(run_at_open(dir, KEEL_DURABILITY_NONE, 0, NULL) == 4);
    crash_child(dir); /* run 5, then killed without a close */
    ck_assert(run_at_open(dir, KEEL_DURABILITY_FSYNC, 0, NULL) == 6);
    crash_child_mode(dir, KEEL_DURABILITY_NONE); /* run 7 */
    ck_assert(run_at_open(dir, KEEL_DURABILITY_FSYNC, 0, NULL) == 8);

    /* A copy made now (at run 8), while the directory goes on. */
    snprintf(cmd, sizeof cmd, "cp -a %s/. %s/", dir, copy);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert(run_at_open(dir, KEEL_DURABILITY_FSYNC, 0, NULL) == 9);
    ck_assert(run_at_open(dir, KEEL_DURABILITY_FSYNC, 0, NULL) == 10);
    ck_assert(run_at_open(copy, KEEL_DURABILITY_FSYNC, 0, id2) == 9);
    ck_assert_str_eq(id1, id2); /* the same identity: the cluster compares */

    /* A new identity, asked for: taken once, the counter kept. */
    ck_assert(run_at_open(copy, KEEL_DURABILITY_FSYNC, 1, id2) == 10);
    ck_assert_str_ne(id1, id2);
    ck_assert(run_at_open(copy, KEEL_DURABILITY_NONE, 0, id3) == 11);
    ck_assert_str_eq(id2, id3);
    crash_child(copy); /* run 12 */
    ck_assert(run_at_open(copy, KEEL_DURABILITY_NONE, 1, id3) == 13);
    ck_assert_str_ne(id2, id3);
    ck_assert(run_at_open(copy, KEEL_DURABILITY_FSYNC, 0, id2) == 14);
    ck_assert_str_eq(id2, id3);
    ck_assert(store_stale_at_open(copy, KEEL_DURABILITY_FSYNC, 0) == 0);
    tu_rmrf(dir);
    tu_rmrf(copy);
    free(dir);
    free(copy);
}
END_TEST

/* The empty prefix is the whole state table, also when it is given as
 * NULL with length 0 (nothing to compare against). */
START_TEST(test_scan_null_prefix)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    uint8_t k[KEEL_KEY_MAX];
    struct scan_out o;
    keel_store_read *r;
    int n;

    n = mkkey(k, 1, "a", 1, NULL);
    ck_assert_int_eq(commit_put(s, NULL, 1, 1, k, (size_t)n, 1, "one"), 0);
    n = mkkey(k, 2, "b", 1, "e");
    ck_assert_int_eq(commit_put(s, NULL, 2, 1, k, (size_t)n, 1, "two"), 0);
    scan_prefix(s, NULL, 0, &o);
    ck_assert_uint_eq(o.n, 2);
    ck_assert_str_eq(o.vals[0], "one");
    ck_assert_str_eq(o.vals[1], "two");
    scan_free(&o);
    scan_prefix(s, "", 0, &o);
    ck_assert_uint_eq(o.n, 2);
    scan_free(&o);
    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    ck_assert_int_eq(keel_store_scan(r, NULL, 1, scan_collect, &o),
                     KEEL_EINVAL);
    keel_store_read_end(r);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A batch whose only group raises a fence of the default capability
 * holds no byte in its arena (empty capability, no ops): committing it
 * and replaying the log record that holds it must not compute with a
 * missing arena (pointer arithmetic on NULL is undefined). */
START_TEST(test_fence_only_default_capability)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    keel_batch *b = keel_batch_create();
    int st, wst;
    pid_t pid;

    ck_assert_int_eq(keel_batch_begin_group(b, NULL, 4, 3, NULL), 0);
    ck_assert_int_eq(keel_batch_fence_only(b), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_batch_group(b, 0, &st);
    ck_assert_int_eq(st, 0);
    ck_assert_uint_eq(fence_of(s, NULL, 4), 3);
    keel_batch_destroy(b);
    /* Only in the log: a child commits another one and dies unclosed. */
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        keel_batch *c = keel_batch_create();
        uint64_t txn;
        int rc = c == NULL ? KEEL_ENOMEM
                           : keel_batch_begin_group(c, "", 5, 7, NULL);
        if (rc == 0)
            rc = keel_batch_fence_only(c);
        if (rc == 0)
            rc = keel_store_commit_deferred(s, c, &txn);
        if (rc == 0)
            rc = keel_store_sync(s);
        _exit(rc == 0 ? 0 : 1);
    }
    ck_assert_int_eq(waitpid(pid, &wst, 0), pid);
    ck_assert_msg(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "child %d", wst);
    keel_store_close(s);
    s = open_store(dir); /* replays the child's record */
    ck_assert_uint_eq(fence_of(s, NULL, 4), 3);
    ck_assert_uint_eq(fence_of(s, NULL, 5), 7);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------- group visitor, digest */

struct visit_log {
    char text[2048];
    size_t len;
    keel_batch *into; /* replays each op there */
};

static int visit_op(int kind, const uint8_t *key, size_t klen,
                    uint64_t version, const void *data, size_t dlen,
                    void *arg)
{
    struct visit_log *v = arg;
    int w = snprintf(v->text + v->len, sizeof v->text - v->len,
                     "%d:%zu:%llu:%.*s;", kind, klen,
                     (unsigned long long)version, (int)dlen,
                     data != NULL ? (const char *)data : "");

    ck_assert_int_gt(w, 0);
    v->len += (size_t)w;
    ck_assert_uint_lt(v->len, sizeof v->text);
    switch (kind) {
    case KEEL_BATCH_OP_PUT:
        return keel_batch_put(v->into, key, klen, version, data, dlen);
    case KEEL_BATCH_OP_DEL:
        return keel_batch_del(v->into, key, klen);
    case KEEL_BATCH_OP_DEL_PREFIX:
        return keel_batch_del_prefix(v->into, key, klen);
    case KEEL_BATCH_OP_DEL_UNIT:
        ck_assert_ptr_null(key);
        return keel_batch_del_unit(v->into, version);
    case KEEL_BATCH_OP_HANDOFF: {
        char to[KEEL_HANDOFF_NAME_MAX + 1];
        memcpy(to, key, klen);
        to[klen] = '\0';
        return keel_batch_handoff(v->into, version, to);
    }
    case KEEL_BATCH_OP_FENCE_ONLY:
        return keel_batch_fence_only(v->into);
    default:
        ck_abort_msg("unknown op kind %d", kind);
    }
    return 0;
}

static int visit_stop(int kind, const uint8_t *key, size_t klen,
                      uint64_t version, const void *data, size_t dlen,
                      void *arg)
{
    (void)kind;
    (void)key;
    (void)klen;
    (void)version;
    (void)data;
    (void)dlen;
    return ++*(int *)arg == 2 ? 77 : 0;
}

static uint64_t digest_of(keel_store *s, const char *cap, uint16_t shard,
                          uint64_t *n)
{
    keel_store_read *r;
    uint64_t d = 0;

    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    ck_assert_int_eq(keel_store_unit_digest(r, cap, shard, &d, n), 0);
    keel_store_read_end(r);
    return d;
}

/* The ops of each group, visited in order, re-create the batch on
 * another store: both stores end with the same units and fences. */
START_TEST(test_batch_group_ops_replay)
{
    char *dir = tu_tmpdir("store");
    char *da = NULL, *db = NULL;
    keel_store *sa, *sb;
    keel_batch *b = keel_batch_create(), *c = keel_batch_create();
    struct visit_log v;
    uint8_t k1[KEEL_KEY_MAX], k2[KEEL_KEY_MAX], k3[KEEL_KEY_MAX];
    uint8_t pre[KEEL_KEY_MAX];
    int n1, n2, n3, np, st, stop = 0;
    const char *cap;
    uint16_t shard;
    uint64_t epoch, na, nb;
    size_t i;

    ck_assert_int_ge(asprintf(&da, "%s/a", dir), 0);
    ck_assert_int_ge(asprintf(&db, "%s/b", dir), 0);
    sa = open_store(da);
    sb = open_store(db);
    n1 = mkkey(k1, 3, "x", 1, NULL);
    n2 = mkkey(k2, 3, "y", 1, "e1");
    n3 = mkkey(k3, 3, "y", 1, "e2");
    np = keel_key_prefix_len(k3, (size_t)n3);
    memcpy(pre, k3, (size_t)np);
    /* The same start on both: y has two entries, x none. */
    ck_assert_int_eq(commit_put(sa, "game", 3, 1, k3, (size_t)n3, 1, "old"),
                     0);
    ck_assert_int_eq(commit_put(sb, "game", 3, 1, k3, (size_t)n3, 1, "old"),
                     0);

    ck_assert_int_eq(keel_batch_group_unit(b, 0, &cap, &shard, &epoch),
                     KEEL_EINVAL);
    /* group 0: puts, a delete of y's entries, a put after it */
    ck_assert_int_eq(keel_batch_begin_group(b, "game", 3, 2, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k1, (size_t)n1, 5, "vx", 2), 0);
    ck_assert_int_eq(keel_batch_del_prefix(b, pre, (size_t)np), 0);
    ck_assert_int_eq(keel_batch_put(b, k2, (size_t)n2, 6, "", 0), 0);
    ck_assert_int_eq(keel_batch_del(b, k1, (size_t)n1), 0);
    ck_assert_int_eq(keel_batch_put(b, k1, (size_t)n1, 7, "vx2", 3), 0);
    /* group 1: a fence raise of the default group */
    ck_assert_int_eq(keel_batch_begin_group(b, "", 4, 9, NULL), 0);
    ck_assert_int_eq(keel_batch_fence_only(b), 0);
    /* group 2: a capability of 8 bytes (no padding after it), a purge */
    ck_assert_int_eq(keel_batch_begin_group(b, "abcdefgh", 5, 4, NULL), 0);
    ck_assert_int_eq(keel_batch_del_unit(b, 3), 0);
    ck_assert_int_eq(keel_batch_handoff(b, 3, "n7"), 0);

    memset(&v, 0, sizeof v);
    v.into = c;
    for (i = 0; i < keel_batch_group_count(b); i++) {
        ck_assert_int_eq(keel_batch_group_unit(b, i, &cap, &shard, &epoch),
                         0);
        ck_assert_int_eq(keel_batch_begin_group(c, cap, shard, epoch, NULL),
                         0);
        ck_assert_int_eq(keel_batch_group_ops(b, i, visit_op, &v), 0);
    }
    ck_assert_int_eq(keel_batch_group_unit(b, 2, &cap, &shard, &epoch), 0);
    ck_assert_str_eq(cap, "abcdefgh");
    ck_assert_uint_eq(shard, 5);
    ck_assert_uint_eq(epoch, 4);
    ck_assert_int_eq(keel_batch_group_unit(b, 1, &cap, NULL, NULL), 0);
    ck_assert_str_eq(cap, "");
    ck_assert_int_eq(keel_batch_group_ops(b, 3, visit_op, &v), KEEL_EINVAL);
    {
        char want[512];
        snprintf(want, sizeof want,
                 "1:%d:5:vx;3:%d:0:;1:%d:6:;2:%d:0:;1:%d:7:vx2;6:0:0:;"
                 "4:0:3:;5:2:3:;",
                 n1, np, n2, n1, n1);
        ck_assert_str_eq(v.text, want);
    }
    /* fn's nonzero return stops the visit and is returned */
    ck_assert_int_eq(keel_batch_group_ops(b, 0, visit_stop, &stop), 77);
    ck_assert_int_eq(stop, 2);
    ck_assert_uint_eq(keel_batch_op_count(c), keel_batch_op_count(b));

    ck_assert_int_eq(keel_store_commit(sa, b), 0);
    ck_assert_int_eq(keel_store_commit(sb, c), 0);
    for (i = 0; i < 3; i++) {
        keel_batch_group(b, i, &st);
        ck_assert_int_eq(st, 0);
        keel_batch_group(c, i, &st);
        ck_assert_int_eq(st, 0);
    }
    expect_value(sb, k1, (size_t)n1, "vx2");
    expect_value(sb, k2, (size_t)n2, "");
    expect_absent(sb, k3, (size_t)n3);
    ck_assert_uint_eq(digest_of(sa, "game", 3, &na),
                      digest_of(sb, "game", 3, &nb));
    ck_assert_uint_eq(na, 2);
    ck_assert_uint_eq(nb, 2);
    ck_assert_uint_eq(fence_of(sb, "", 4), 9);
    ck_assert_uint_eq(fence_of(sb, "abcdefgh", 5), 4);
    {
        keel_store_read *r;
        char to[16];
        uint64_t at = 0;
        ck_assert_int_eq(keel_store_read_begin(sb, &r), 0);
        ck_assert_int_eq(keel_store_handoff_get(r, "abcdefgh", 5, &at, to,
                                                sizeof to),
                         0);
        keel_store_read_end(r);
        ck_assert_uint_eq(at, 3);
        ck_assert_str_eq(to, "n7");
    }
    keel_batch_destroy(b);
    keel_batch_destroy(c);
    keel_store_close(sa);
    keel_store_close(sb);
    tu_rmrf(dir);
    free(da);
    free(db);
    free(dir);
}
END_TEST

/* A check of a unit's digest (keel_batch_check_unit) is decided in the
 * transaction, after the batch's earlier groups: the same digest leaves
 * the unit as it is and raises its fence; another deletes every record
 * of the unit, not the next unit's, and the group says so. The log holds
 * what each check did: replayed after a crash, the same comes out. */
START_TEST(test_check_unit)
{
    char *dir = tu_tmpdir("store");
    keel_store *s = open_store(dir);
    uint8_t k1[KEEL_KEY_MAX], k2[KEEL_KEY_MAX], k4[KEEL_KEY_MAX];
    int n1 = tkey(k1, 3, "counter", "1"), n2 = tkey(k2, 3, "counter", "2");
    int n4 = tkey(k4, 4, "counter", "1");
    keel_batch *b = keel_batch_create();
    uint64_t d;
    int st;
    pid_t pid;

    ck_assert_int_eq(commit_put(s, NULL, 3, 2, k1, (size_t)n1, 1, "one"), 0);
    ck_assert_int_eq(commit_put(s, NULL, 4, 2, k4, (size_t)n4, 1, "four"), 0);
    d = digest_of(s, "", 3, NULL);

    /* The same digest: nothing goes, the fence rises. */
    ck_assert_int_eq(keel_batch_begin_group(b, "", 3, 3, NULL), 0);
    ck_assert_int_eq(keel_batch_check_unit(b, d), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_batch_group(b, 0, &st);
    ck_assert_int_eq(st, 0);
    ck_assert_int_eq(keel_batch_group_differs(b, 0), 0);
    expect_value(s, k1, (size_t)n1, "one");
    ck_assert_uint_eq(fence_of(s, NULL, 3), 3);

    /* A check is its group's only op. */
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_check_unit(b, d), KEEL_EINVAL);
    ck_assert_int_eq(keel_batch_begin_group(b, "", 3, 3, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k2, (size_t)n2, 1, "two", 3), 0);
    ck_assert_int_eq(keel_batch_check_unit(b, d), KEEL_EINVAL);

    /* An earlier group of the batch changed the unit: the digest the
     * check carries (the unit before) is not the unit's any more, so
     * every record of it goes, that group's too; the next unit stays. */
    keel_batch_reset(b);
    ck_assert_int_eq(keel_batch_begin_group(b, "", 3, 3, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k2, (size_t)n2, 1, "two", 3), 0);
    ck_assert_int_eq(keel_batch_begin_group(b, "", 3, 3, NULL), 0);
    ck_assert_int_eq(keel_batch_check_unit(b, d), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_batch_group(b, 1, &st);
    ck_assert_int_eq(st, 0);
    ck_assert_int_eq(keel_batch_group_differs(b, 0), 0);
    ck_assert_int_eq(keel_batch_group_differs(b, 1), 1);
    ck_assert_int_eq(unit_count(s, "", 3), 0);
    expect_value(s, k4, (size_t)n4, "four");

    /* In the log: a put, a check that matches (logged as the fence raise
     * alone), a put, and a check of shard 4 that does not (logged as the
     * deletion). */
    keel_batch_reset(b);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        uint64_t txn, dx;
        int rc = commit_put(s, NULL, 3, 3, k1, (size_t)n1, 2, "x");
        keel_store_read *r;
        if (rc == 0)
            rc = keel_store_read_begin(s, &r);
        if (rc == 0) {
            rc = keel_store_unit_digest(r, "", 3, &dx, NULL);
            keel_store_read_end(r);
        }
        if (rc == 0)
            rc = keel_batch_begin_group(b, "", 3, 4, NULL);
        if (rc == 0)
            rc = keel_batch_check_unit(b, dx);
        if (rc == 0)
            rc = keel_batch_begin_group(b, "", 3, 4, NULL);
        if (rc == 0)
            rc = keel_batch_put(b, k2, (size_t)n2, 2, "y", 1);
        if (rc == 0)
            rc = keel_batch_begin_group(b, "", 4, 4, NULL);
        if (rc == 0)
            rc = keel_batch_check_unit(b, dx ^ 1);
        if (rc == 0)
            rc = keel_store_commit_deferred(s, b, &txn);
        if (rc == 0)
            rc = keel_store_sync(s);
        if (rc == 0 && (keel_batch_group_differs(b, 0) ||
                        !keel_batch_group_differs(b, 2)))
            rc = -1;
        _exit(rc == 0 ? 0 : 1);
    }
    {
        int wst;
        ck_assert_int_eq(waitpid(pid, &wst, 0), pid);
        ck_assert(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    }
    keel_store_close(s);
    /* The child's commits are only in the log: the open replays them. */
    s = open_store(dir);
    expect_value(s, k1, (size_t)n1, "x");
    expect_value(s, k2, (size_t)n2, "y");
    expect_absent(s, k4, (size_t)n4);
    ck_assert_uint_eq(fence_of(s, NULL, 3), 4);
    ck_assert_uint_eq(fence_of(s, NULL, 4), 4);
    keel_batch_destroy(b);
    keel_store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The digest covers a unit's records (key, version, data) in key order,
 * not their epochs, and nothing of other units. */
START_TEST(test_unit_digest)
{
    char *dir = tu_tmpdir("store");
    char *da = NULL, *db = NULL;
    keel_store *sa, *sb;
    uint8_t k1[KEEL_KEY_MAX], k2[KEEL_KEY_MAX], buf[1024];
    int n1, n2;
    uint64_t n = 99, d0, d;
    size_t off = 0;
    keel_store_read *r;

    ck_assert_int_ge(asprintf(&da, "%s/a", dir), 0);
    ck_assert_int_ge(asprintf(&db, "%s/b", dir), 0);
    sa = open_store(da);
    sb = open_store(db);
    n1 = mkkey(k1, 3, "a", 1, NULL);
    n2 = mkkey(k2, 3, "b", 1, "e");

    /* empty: the digest of nothing */
    d0 = digest_of(sa, "", 3, &n);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(d0, XXH3_64bits(NULL, 0));

    /* the same records written at other epochs, in another order */
    ck_assert_int_eq(commit_put(sa, "", 3, 1, k1, (size_t)n1, 4, "one"), 0);
    ck_assert_int_eq(commit_put(sa, "", 3, 1, k2, (size_t)n2, 2, "two!"), 0);
    ck_assert_int_eq(commit_put(sb, "", 3, 5, k2, (size_t)n2, 2, "two!"), 0);
    ck_assert_int_eq(commit_put(sb, "", 3, 6, k1, (size_t)n1, 4, "one"), 0);
    d = digest_of(sa, "", 3, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(d, digest_of(sb, "", 3, NULL));
    ck_assert_uint_ne(d, d0);

    /* by hand: klen be16 | key | version be64 | dlen be32 | data */
#define PUT_BE(p, v, nb)                                                     \
    do {                                                                     \
        for (int i_ = 0; i_ < (nb); i_++)                                    \
            (p)[i_] = (uint8_t)((uint64_t)(v) >> (8 * ((nb)-1 - i_)));       \
    } while (0)
    PUT_BE(buf + off, n1, 2);
    memcpy(buf + off + 2, k1, (size_t)n1);
    off += 2 + (size_t)n1;
    PUT_BE(buf + off, 4, 8);
    PUT_BE(buf + off + 8, 3, 4);
    memcpy(buf + off + 12, "one", 3);
    off += 15;
    PUT_BE(buf + off, n2, 2);
    memcpy(buf + off + 2, k2, (size_t)n2);
    off += 2 + (size_t)n2;
    PUT_BE(buf + off, 2, 8);
    PUT_BE(buf + off + 8, 4, 4);
    memcpy(buf + off + 12, "two!", 4);
    off += 16;
#undef PUT_BE
    ck_assert_uint_eq(d, XXH3_64bits(buf, off));

    /* a record of another unit in the same shard does not count */
    {
        uint8_t k3[KEEL_KEY_MAX];
        int n3 = keel_key_encode(k3, 3, "g", 1, "a", 1, NULL, 0);
        ck_assert_int_gt(n3, 0);
        ck_assert_int_eq(commit_put(sb, "gpu", 3, 1, k3, (size_t)n3, 1, "z"),
                         0);
        ck_assert_uint_eq(digest_of(sb, "", 3, &n), d);
        ck_assert_uint_eq(n, 2);
        ck_assert_uint_ne(digest_of(sb, "gpu", 3, &n), d0);
        ck_assert_uint_eq(n, 1);
    }
    /* another version changes it */
    ck_assert_int_eq(commit_put(sb, "", 3, 6, k1, (size_t)n1, 5, "one"), 0);
    ck_assert_uint_ne(digest_of(sb, "", 3, NULL), d);
    ck_assert_int_eq(keel_store_read_begin(sa, &r), 0);
    ck_assert_int_eq(keel_store_unit_digest(r, "", 3, NULL, NULL),
                     KEEL_EINVAL);
    keel_store_read_end(r);

    keel_store_close(sa);
    keel_store_close(sb);
    tu_rmrf(dir);
    free(da);
    free(db);
    free(dir);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_key_roundtrip);
    tcase_add_test(tc, test_key_limits);
    tcase_add_test(tc, test_put_get_scan_neighbours);
    tcase_add_test(tc, test_scan_stop);
    tcase_add_test(tc, test_scan_after);
    tcase_add_test(tc, test_del_and_del_prefix);
    tcase_add_test(tc, test_version_epoch);
    tcase_add_test(tc, test_fencing);
    tcase_add_test(tc, test_handoff_record);
    tcase_add_test(tc, test_batch_reuse);
    tcase_add_test(tc, test_shard_count_mismatch);
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_open_no_permission);
    tcase_add_test(tc, test_map_growth);
    tcase_add_test(tc, test_map_growth_with_readers);
    tcase_add_test(tc, test_map_max);
    tcase_add_test(tc, test_open_grows_a_full_map);
    tcase_add_test(tc, test_open_grows_a_full_map_short_of_room);
    tcase_add_test(tc, test_disk_full);
    tcase_add_test(tc, test_disk_full_none);
    tcase_add_test(tc, test_disk_really_full_none);
    tcase_add_test(tc, test_durability_stats);
    tcase_add_test(tc, test_writer_order);
    tcase_add_test(tc, test_writer_stop_drains);
    tcase_add_test(tc, test_commit_deferred);
    tcase_add_test(tc, test_writer_reports_when_durable);
    tcase_add_test(tc, test_writer_stop_syncs);
    tcase_add_test(tc, test_writer_failure_refuses_dependents);
    tcase_add_test(tc, test_writer_fence_refusal_refuses_dependents);
    tcase_add_test(tc, test_writer_merge);
    tcase_add_test(tc, test_writer_inline_leaves_writeback);
    tcase_add_test(tc, test_recover_process_crash);
    tcase_add_test(tc, test_recover_process_crash_none);
    tcase_add_test(tc, test_recover_then_durability_none);
    tcase_add_test(tc, test_recover_lost_pages);
    tcase_add_test(tc, test_recover_torn_log);
    tcase_add_test(tc, test_recover_log_without_checkpoint);
    tcase_add_test(tc, test_recover_stale_records_never_return);
    tcase_add_test(tc, test_overwrite_at_max_map);
    tcase_add_test(tc, test_log_full_starts_again);
    tcase_add_test(tc, test_type_table_units);
    tcase_add_test(tc, test_del_unit_sees_earlier_groups);
    tcase_add_test(tc, test_check_unit);
    tcase_add_test(tc, test_require_sync_none);
    tcase_add_test(tc, test_require_sync_none_flush_fails);
    tcase_add_test(tc, test_store_identity);
    tcase_add_test(tc, test_store_run_counter);
    tcase_add_test(tc, test_store_stale_mark);
    tcase_add_test(tc, test_scan_null_prefix);
    tcase_add_test(tc, test_fence_only_default_capability);
    tcase_add_test(tc, test_batch_group_ops_replay);
    tcase_add_test(tc, test_unit_digest);
    tcase_add_test(tc, test_unit_scan_from);
    tcase_add_test(tc, test_log_written_ahead);
    tcase_add_test(tc, test_failed_commits_logged_once_a_second);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(store_suite());
}
