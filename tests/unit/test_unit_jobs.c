/* The cluster runtime's own store writes (runtime/unit_jobs.c), built as
 * its writer builds them and committed to a real store: a received unit
 * and the purge of a forgotten node's stale copy in one batch, a unit's
 * records when the node lacks one of the stored types, the durability of
 * a received unit, the fence of a unit kept by an in-sync backup. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"
#include "persistence/store.h"
#include "runtime/cluster_rt_int.h"
#include "runtime/node.h"
#include "testutil.h"

#define SHARD 3

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir("jobs");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

static int gpu_msg(keel_turn *ctx, const void *msg, size_t len)
{
    (void)ctx;
    (void)msg;
    (void)len;
    return 0;
}

static keel_node *node_open(int durability, int with_gpu)
{
    static const keel_actor_type gpu = {.name = "gpuctr",
                                        .capability = "gpu",
                                        .on_message = gpu_msg};
    keel_node_options o;
    keel_node *n;
    char err[256] = "";
    int rc;

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.shard_count = 64;
    o.durability = durability;
    rc = keel_node_create(&o, &n, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: %s", keel_err_name(rc), err);
    if (with_gpu)
        ck_assert_int_eq(keel_node_register_type(n, &gpu), 0);
    return n;
}

static int key_of(uint8_t *buf, const char *type, const char *id)
{
    int n = keel_key_encode(buf, SHARD, type, strlen(type), id, strlen(id),
                            NULL, 0);

    ck_assert_int_gt(n, 0);
    return n;
}

static void put(keel_node *n, const char *cap, uint64_t epoch,
                const char *type, const char *id, const char *val)
{
    keel_batch *b = keel_batch_create();
    uint8_t k[KEEL_KEY_MAX];
    int kl = key_of(k, type, id), st;

    ck_assert_int_eq(keel_batch_begin_group(b, cap, SHARD, epoch, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)kl, 1, val, strlen(val)),
                     0);
    ck_assert_int_eq(keel_store_commit(n->store, b), 0);
    keel_batch_group(b, 0, &st);
    ck_assert_int_eq(st, 0);
    keel_batch_destroy(b);
}

/* The value stored under (type, id), or NULL. Malloc'd. */
static char *get(keel_node *n, const char *type, const char *id)
{
    uint8_t k[KEEL_KEY_MAX];
    int kl = key_of(k, type, id);
    keel_store_read *r;
    keel_record rec;
    char *v = NULL;

    ck_assert_int_eq(keel_store_read_begin(n->store, &r), 0);
    if (keel_store_get(r, k, (size_t)kl, &rec) == 0) {
        v = calloc(1, rec.len + 1);
        memcpy(v, rec.data, rec.len);
    }
    keel_store_read_end(r);
    return v;
}

static void expect(keel_node *n, const char *type, const char *id,
                   const char *want)
{
    char *v = get(n, type, id);

    if (want == NULL)
        ck_assert_msg(v == NULL, "%s %s: %s, expected none", type, id, v);
    else
        ck_assert_msg(v != NULL && strcmp(v, want) == 0,
                      "%s %s: %s, expected %s", type, id, v ? v : "(none)",
                      want);
    free(v);
}

/* One record in XFER encoding appended to *p. */
static void xfer_rec(uint8_t **p, size_t *len, const char *type,
                     const char *id, const char *val)
{
    uint8_t k[KEEL_KEY_MAX];
    int kl = key_of(k, type, id);
    size_t vl = strlen(val);
    uint8_t *q;

    *p = realloc(*p, *len + 14 + (size_t)kl + vl);
    q = *p + *len;
    rt_put_be(q, (uint64_t)kl, 2);
    memcpy(q + 2, k, (size_t)kl);
    rt_put_be(q + 2 + kl, 1, 8);
    rt_put_be(q + 10 + kl, vl, 4);
    memcpy(q + 14 + kl, val, vl);
    *len += 14 + (size_t)kl + vl;
}

static rt_job *job(int kind, const char *cap, uint64_t epoch)
{
    rt_job *j = calloc(1, sizeof *j);

    j->kind = kind;
    snprintf(j->cap, sizeof j->cap, "%s", cap);
    j->shard = SHARD;
    j->epoch = epoch;
    if (kind == JOB_PURGE) /* a purge records where the unit went */
        snprintf(j->to, sizeof j->to, "node-x");
    return j;
}

/* Builds the jobs into one batch, as the writer does, and commits it.
 * Returns the commit's status; *gst gets the first refused group's. */
static int commit_jobs(keel_node *n, rt_job **jobs, size_t nj, int *gst)
{
    keel_cluster_rt rt;
    keel_batch *b = keel_batch_create();
    size_t i;
    int rc = 0;

    memset(&rt, 0, sizeof rt);
    rt.n = n;
    *gst = 0;
    for (i = 0; i < nj && rc == 0; i++)
        rc = rt_job_build(&rt, b, jobs[i]);
    if (rc == 0)
        rc = keel_store_commit(n->store, b);
    for (i = 0; rc == 0 && i < keel_batch_group_count(b); i++) {
        int st;
        keel_batch_group(b, i, &st);
        if (st != 0 && *gst == 0)
            *gst = st;
    }
    keel_batch_destroy(b);
    return rc;
}

/* A forgotten node rejoins: the wipe of its stale copy of a unit and the
 * stream of the same unit from its current owner land in one batch of the
 * module's writer, the stream first. The wipe removes only what the node
 * held from before (written below the unit's epoch), never the records
 * the stream just stored. */
START_TEST(test_wipe_after_stream_in_one_batch)
{
    keel_node *n = node_open(KEEL_DURABILITY_FSYNC, 0);
    rt_job *jobs[2];
    int gst;

    put(n, "", 2, "counter", "1", "old1");
    put(n, "", 2, "counter", "3", "old3");
    jobs[0] = job(JOB_XFER_IN, "", 5);
    xfer_rec(&jobs[0]->recs, &jobs[0]->recs_len, "counter", "1", "new1");
    xfer_rec(&jobs[0]->recs, &jobs[0]->recs_len, "counter", "2", "new2");
    jobs[1] = job(JOB_WIPE, "", 5);
    ck_assert_int_eq(commit_jobs(n, jobs, 2, &gst), 0);
    ck_assert_int_eq(gst, 0);
    expect(n, "counter", "1", "new1");
    expect(n, "counter", "2", "new2");
    expect(n, "counter", "3", NULL);
    rt_job_free(jobs[0]);
    rt_job_free(jobs[1]);
    keel_node_destroy(n);
}
END_TEST

/* Which unit a record belongs to does not depend on the types this node
 * has loaded: reopened without the gpu type, the node's default unit of
 * the shard neither carries nor purges the gpu type's records; the gpu
 * unit does. */
START_TEST(test_unit_without_its_type_loaded)
{
    keel_node *n = node_open(KEEL_DURABILITY_FSYNC, 1);
    struct scan_ctx s;
    rt_job *jobs[1];
    int gst;

    put(n, "gpu", 1, "gpuctr", "g", "gpu-state");
    put(n, "", 1, "counter", "c", "plain-state");
    keel_node_destroy(n);

    n = node_open(KEEL_DURABILITY_FSYNC, 0);
    memset(&s, 0, sizeof s);
    ck_assert_int_eq(rt_unit_scan(n, "", SHARD, &s), 0);
    ck_assert_ptr_nonnull(s.out);
    ck_assert_ptr_null(memmem(s.out, s.len, "gpuctr", 6));
    ck_assert_ptr_nonnull(memmem(s.out, s.len, "plain-state", 11));
    free(s.out);
    memset(&s, 0, sizeof s);
    ck_assert_int_eq(rt_unit_scan(n, "gpu", SHARD, &s), 0);
    ck_assert_ptr_nonnull(s.out);
    ck_assert_ptr_nonnull(memmem(s.out, s.len, "gpu-state", 9));
    ck_assert_ptr_null(memmem(s.out, s.len, "plain-state", 11));
    free(s.out);

    jobs[0] = job(JOB_PURGE, "", 2);
    ck_assert_int_eq(commit_jobs(n, jobs, 1, &gst), 0);
    ck_assert_int_eq(gst, 0);
    rt_job_free(jobs[0]);
    expect(n, "gpuctr", "g", "gpu-state");
    expect(n, "counter", "c", NULL);
    jobs[0] = job(JOB_PURGE, "gpu", 2);
    ck_assert_int_eq(commit_jobs(n, jobs, 1, &gst), 0);
    rt_job_free(jobs[0]);
    expect(n, "gpuctr", "g", NULL);
    keel_node_destroy(n);
}
END_TEST

/* A received unit is on the disk before the node acknowledges it (the
 * sender then deletes its copy), even with durability none. */
START_TEST(test_received_unit_durable_with_none)
{
    keel_node *n = node_open(KEEL_DURABILITY_NONE, 0);
    keel_store_stats st0, st1;
    rt_job *jobs[1];
    int gst;

    jobs[0] = job(JOB_XFER_IN, "", 4);
    xfer_rec(&jobs[0]->recs, &jobs[0]->recs_len, "counter", "9", "v");
    keel_store_stats_get(n->store, &st0);
    ck_assert_int_eq(commit_jobs(n, jobs, 1, &gst), 0);
    ck_assert_int_eq(gst, 0);
    keel_store_stats_get(n->store, &st1);
    ck_assert_uint_eq(st1.fsyncs, st0.fsyncs + 1);
    expect(n, "counter", "9", "v");
    rt_job_free(jobs[0]);
    keel_node_destroy(n);
}
END_TEST

/* The fence of unit ("", SHARD) on n's store. */
static uint64_t fence_of(keel_node *n)
{
    keel_store_read *r;
    uint64_t f = 0;

    ck_assert_int_eq(keel_store_read_begin(n->store, &r), 0);
    ck_assert_int_eq(keel_store_fence_get(r, "", SHARD, &f), 0);
    keel_store_read_end(r);
    return f;
}

/* An in-sync backup keeping its copy for a move (JOB_KEEP,
 * runtime/unit_promote.c): its records stay, the fence records the
 * epoch of the release, durably before the answer even with durability
 * none, so that the acquire at the next epoch keeps them (its fence is
 * one below) and the old primary's writes at an older epoch are refused.
 * A keep below the fence is refused. */
START_TEST(test_kept_unit_fenced_durable_with_none)
{
    keel_node *n = node_open(KEEL_DURABILITY_NONE, 0);
    keel_store_stats st0, st1;
    keel_batch *b;
    uint8_t k[KEEL_KEY_MAX];
    rt_job *jobs[1];
    int gst, kl;

    put(n, "", 2, "counter", "1", "replicated");
    ck_assert_uint_eq(fence_of(n), 2);
    jobs[0] = job(JOB_KEEP, "", 5);
    keel_store_stats_get(n->store, &st0);
    ck_assert_int_eq(commit_jobs(n, jobs, 1, &gst), 0);
    ck_assert_int_eq(gst, 0);
    keel_store_stats_get(n->store, &st1);
    ck_assert_uint_eq(st1.fsyncs, st0.fsyncs + 1);
    rt_job_free(jobs[0]);
    expect(n, "counter", "1", "replicated");
    ck_assert_uint_eq(fence_of(n), 5);
    ck_assert_uint_ge(fence_of(n) + 1, 6); /* the acquire at 6 keeps */

    /* a straggler of an older epoch is refused */
    b = keel_batch_create();
    kl = key_of(k, "counter", "1");
    ck_assert_int_eq(keel_batch_begin_group(b, "", SHARD, 4, NULL), 0);
    ck_assert_int_eq(keel_batch_put(b, k, (size_t)kl, 2, "late", 4), 0);
    ck_assert_int_eq(keel_store_commit(n->store, b), 0);
    keel_batch_group(b, 0, &gst);
    ck_assert_int_eq(gst, KEEL_EFENCED);
    keel_batch_destroy(b);
    expect(n, "counter", "1", "replicated");

    jobs[0] = job(JOB_KEEP, "", 3);
    ck_assert_int_eq(commit_jobs(n, jobs, 1, &gst), 0);
    ck_assert_int_eq(gst, KEEL_EFENCED);
    rt_job_free(jobs[0]);
    ck_assert_uint_eq(fence_of(n), 5);
    keel_node_destroy(n);
}
END_TEST

static Suite *jobs_suite(void)
{
    Suite *s = suite_create("unit_jobs");
    TCase *tc = tcase_create("unit_jobs");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_wipe_after_stream_in_one_batch);
    tcase_add_test(tc, test_unit_without_its_type_loaded);
    tcase_add_test(tc, test_received_unit_durable_with_none);
    tcase_add_test(tc, test_kept_unit_fenced_durable_with_none);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(jobs_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
