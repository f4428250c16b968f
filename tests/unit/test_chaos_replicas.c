/* Replicas agree (chaos/replicas.c): hand-made digests.txt files whose
 * in-sync replicas agree pass; ones where they differ in digest or in
 * record count fail and name the unit and each replica's line; replicas
 * out of sync are not compared; an in-sync replica without a digest and
 * malformed files are refused with file and line; keel-chaos check DIR
 * gives the verdict with the other checks. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos/checkdir.h"
#include "chaos/replicas.h"
#include "keel.h"
#include "testutil.h"

static chaos_replicas rp;

static void setup(void)
{
    chaos_replicas_init(&rp);
}

static void teardown(void)
{
    chaos_replicas_free(&rp);
}

/* Parses and checks text; the return code of whichever failed first. */
static int run(const char *text, char *err, size_t errlen)
{
    int rc = chaos_replicas_parse(&rp, "digests.txt", text, strlen(text),
                                  err, errlen);

    if (rc == 0)
        rc = chaos_replicas_check(&rp, err, errlen);
    return rc;
}

static char *report(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    ck_assert_ptr_nonnull(f);
    chaos_replicas_print(f, &rp, 10);
    fclose(f);
    fputs(buf, stderr);
    return buf;
}

#define U0 "unit (default) 0 owner n1 epoch 3 backups n0,n2\n"
#define U1 "unit (default) 1 owner n0 epoch 2 backups n1,n2 out_of_sync n2\n"
#define DG(node, shard, hex, recs) \
    "digest " node " (default) " #shard " " hex " " #recs "\n"
#define H1 "3ab0bca2e111412c"
#define H2 "00000000000000ff"

/* Three replicas in sync with one digest, and a unit whose out-of-sync
 * backup differs (a catch-up not done: not compared). */
START_TEST(agree_passes)
{
    char err[256], *out;

    ck_assert_int_eq(run("# a comment\n" U0 U1 DG("n0", 0, H1, 4)
                             DG("n1", 0, H1, 4) DG("n2", 0, H1, 4)
                                 DG("n0", 1, H2, 1) DG("n1", 1, H2, 1)
                                     DG("n2", 1, H1, 0),
                         err, sizeof err),
                     0);
    ck_assert_uint_eq(rp.nunits, 2);
    ck_assert_uint_eq(rp.compared, 2);
    ck_assert_uint_eq(rp.insync, 5);
    ck_assert_uint_eq(rp.out_of_sync, 1);
    ck_assert_uint_eq(rp.ndisagree, 0);
    out = report();
    ck_assert_str_eq(out, "replicas-agree: PASS (2 units, 2 compared across "
                          "5 in-sync replicas, 1 replicas out of sync)\n");
    free(out);
}
END_TEST

/* One replica per unit (--replicas 1): nothing to compare, and the line
 * says so rather than leave "0 compared" unexplained. */
START_TEST(one_replica_each_says_nothing_to_compare)
{
    char err[256], *out;

    ck_assert_int_eq(run("unit (default) 0 owner n0 epoch 1\n"
                         "unit (default) 1 owner n1 epoch 1\n"
                         DG("n0", 0, H1, 4) DG("n1", 1, H2, 1),
                         err, sizeof err),
                     0);
    ck_assert_uint_eq(rp.compared, 0);
    out = report();
    ck_assert_str_eq(out, "replicas-agree: PASS (2 units, 0 compared across "
                          "2 in-sync replicas, 0 replicas out of sync; one "
                          "replica per unit: nothing to compare)\n");
    free(out);
}
END_TEST

/* One backup in sync with another digest: FAIL, naming the unit and each
 * replica's digest and line. */
START_TEST(digests_differ_fails)
{
    char err[256], *out;

    ck_assert_int_eq(run(U0 U1 DG("n0", 0, H1, 4) DG("n1", 0, H1, 4)
                             DG("n2", 0, H2, 4) DG("n0", 1, H2, 1)
                                 DG("n1", 1, H2, 1),
                         err, sizeof err),
                     0);
    ck_assert_uint_eq(rp.ndisagree, 1);
    ck_assert(rp.units[0].disagree);
    ck_assert(!rp.units[1].disagree);
    out = report();
    ck_assert_ptr_nonnull(strstr(out, "replicas-agree: FAIL (2 units"));
    ck_assert_ptr_nonnull(strstr(out, "1 of them differ across their "
                                      "in-sync replicas"));
    ck_assert_ptr_nonnull(strstr(out, "unit (default) 0 (epoch 3, "
                                      "digests.txt:1): in-sync replicas "
                                      "differ"));
    ck_assert_ptr_nonnull(strstr(out, "n1 (owner): digest " H1
                                      " records 4 (line 4)"));
    ck_assert_ptr_nonnull(strstr(out, "n2: digest " H2 " records 4 (line "
                                      "5)"));
    free(out);
}
END_TEST

/* Same digest, another record count: a difference too. */
START_TEST(records_differ_fails)
{
    char err[256];

    ck_assert_int_eq(run(U0 DG("n0", 0, H1, 4) DG("n1", 0, H1, 5)
                             DG("n2", 0, H1, 4),
                         err, sizeof err),
                     0);
    ck_assert_uint_eq(rp.ndisagree, 1);
}
END_TEST

/* A wiped node out of sync with an empty store, and the same node back in
 * the in-sync set with it: the first passes, the second fails. */
START_TEST(empty_replica_in_sync_fails)
{
    char err[256];

    ck_assert_int_eq(run("unit (default) 7 owner n1 epoch 5 backups n0,n2 "
                         "out_of_sync n0\n" DG("n0", 7, "0000000000000000", 0)
                             DG("n1", 7, H1, 3) DG("n2", 7, H1, 3),
                         err, sizeof err),
                     0);
    ck_assert_uint_eq(rp.ndisagree, 0);
    chaos_replicas_free(&rp);
    chaos_replicas_init(&rp);
    ck_assert_int_eq(run("unit (default) 7 owner n1 epoch 5 backups n0,n2\n"
                         DG("n0", 7, "0000000000000000", 0) DG("n1", 7, H1, 3)
                             DG("n2", 7, H1, 3),
                         err, sizeof err),
                     0);
    ck_assert_uint_eq(rp.ndisagree, 1);
}
END_TEST

/* An in-sync replica whose digest was not recorded: the record is
 * incomplete, bad input naming the unit's line; an out-of-sync one may
 * lack it. */
START_TEST(missing_replica_refused)
{
    char err[256];

    ck_assert_int_eq(run(U0 DG("n0", 0, H1, 4) DG("n1", 0, H1, 4), err,
                         sizeof err),
                     KEEL_EINVAL);
    ck_assert_str_eq(err, "digests.txt:1: no digest of unit (default) 0 "
                          "from n2, which is in its in-sync set");
    chaos_replicas_free(&rp);
    chaos_replicas_init(&rp);
    ck_assert_int_eq(run(U1 DG("n0", 1, H2, 1) DG("n1", 1, H2, 1), err,
                         sizeof err),
                     0);
    ck_assert_uint_eq(rp.ndisagree, 0);
}
END_TEST

/* One replica (R = 1), and a unit without an owner: nothing to compare,
 * a pass that says so. */
START_TEST(single_replicas_pass)
{
    char err[256], *out;

    ck_assert_int_eq(run("unit (default) 0 owner n0 epoch 1\n"
                         "unit (default) 1 owner (none) epoch 1\n"
                         "unit game 1 owner n1 epoch 4 target n0\n"
                         DG("n0", 0, H1, 1) "digest n1 game 1 " H2 " 2\n",
                         err, sizeof err),
                     0);
    ck_assert_uint_eq(rp.compared, 0);
    ck_assert_uint_eq(rp.no_owner, 1);
    out = report();
    ck_assert_str_eq(out, "replicas-agree: PASS (3 units, 0 compared across "
                          "2 in-sync replicas, 0 replicas out of sync, 1 "
                          "units without an owner)\n");
    free(out);
}
END_TEST

START_TEST(malformed_refused)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"unit (default) 0 owner n1\n", "digests.txt:1: expected \"unit CAP"},
        {"unit (default) x owner n1 epoch 1\n", "digests.txt:1: expected"},
        {"unit (default) 0 owner n1 epoch 1 backups\n",
         "digests.txt:1: expected"},
        {"unit (default) 0 owner n1 epoch 1 backups n0, \n",
         "digests.txt:1: expected"},
        {"unit (default) 0 owner n1 epoch 1 backups n0 extra\n",
         "digests.txt:1: expected"},
        {"unit (default) 0 owner n1 epoch 1 backups n0 out_of_sync n2\n",
         "digests.txt:1: n2 is out of sync but not among the backups"},
        {U0 U0, "digests.txt:2: unit (default) 0 given twice"},
        {U0 DG("n0", 0, "3ab0", 4), "digests.txt:2: expected \"digest NODE"},
        {U0 DG("n0", 0, "3AB0BCA2E111412C", 4), "digests.txt:2: expected"},
        {U0 "digest n0 (default) 0 " H1 "\n", "digests.txt:2: expected"},
        {U0 DG("n0", 5, H1, 4),
         "digests.txt:2: a digest of unit (default) 5, which no unit line"},
        {U0 DG("n0", 0, H1, 4) DG("n0", 0, H1, 4),
         "digests.txt:3: n0's digest of unit (default) 0 given twice (line "
         "2)"},
        {"map 1\n", "digests.txt:1: expected a unit or a digest line, not "
                    "\"map\""},
        {"\n", "digests.txt:1: expected a unit or a digest line"},
        {U0 "digest n0", "digests.txt:2: the last line has no newline"},
    };
    char err[256];
    size_t k;

    for (k = 0; k < sizeof cases / sizeof *cases; k++) {
        int rc;
        chaos_replicas_free(&rp);
        chaos_replicas_init(&rp);
        rc = run(cases[k].text, err, sizeof err);
        ck_assert_msg(rc == KEEL_EINVAL, "case %zu: rc %d", k, rc);
        ck_assert_msg(strstr(err, cases[k].want) != NULL,
                      "case %zu: got \"%s\", want \"%s\"", k, err,
                      cases[k].want);
    }
    ck_assert_int_eq(chaos_replicas_read(&rp, "/nonexistent/digests.txt",
                                         err, sizeof err),
                     KEEL_EIO);
}
END_TEST

/* keel-chaos check DIR: the verdict beside the others, FAIL for replicas
 * that differ, BAD INPUT for a missing one, SKIPPED without the file. */
START_TEST(check_dir_verdicts)
{
    static const char hist[] =
        "{\"t\":\"invoke\",\"index\":0,\"time_ns\":1,\"client\":0,"
        "\"actor\":\"counter/c0\",\"op\":\"incr\",\"args\":1}\n"
        "{\"t\":\"ok\",\"index\":1,\"time_ns\":2,\"client\":0,"
        "\"actor\":\"counter/c0\",\"op\":\"incr\",\"args\":1,"
        "\"result\":1}\n";
    static const struct {
        const char *digests; /* NULL: no file */
        int rc;
        const char *want;
    } cases[] = {
        {NULL, CHAOS_EXIT_PASS, "replicas-agree: SKIPPED (no "},
        {U0 DG("n0", 0, H1, 4) DG("n1", 0, H1, 4) DG("n2", 0, H1, 4),
         CHAOS_EXIT_PASS, "replicas-agree: PASS (1 units, 1 compared"},
        {U0 DG("n0", 0, H1, 4) DG("n1", 0, H1, 4) DG("n2", 0, H2, 4),
         CHAOS_EXIT_VIOLATION, "replicas-agree: FAIL (1 units"},
        {U0 DG("n0", 0, H1, 4) DG("n1", 0, H1, 4), CHAOS_EXIT_BAD_INPUT,
         "replicas-agree: BAD INPUT: "},
    };
    size_t k;

    for (k = 0; k < sizeof cases / sizeof *cases; k++) {
        char *dir = tu_tmpdir("chaos-replicas"), path[512], *out = NULL;
        size_t len = 0;
        FILE *f, *mem;
        int rc;

        snprintf(path, sizeof path, "%s/history.jsonl", dir);
        f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(hist, f);
        fclose(f);
        if (cases[k].digests != NULL) {
            snprintf(path, sizeof path, "%s/digests.txt", dir);
            f = fopen(path, "w");
            ck_assert_ptr_nonnull(f);
            fputs(cases[k].digests, f);
            fclose(f);
        }
        mem = open_memstream(&out, &len);
        ck_assert_ptr_nonnull(mem);
        rc = chaos_check_dir(dir, NULL, mem, NULL);
        fclose(mem);
        fputs(out, stderr);
        ck_assert_msg(rc == cases[k].rc, "case %zu: exit %d", k, rc);
        ck_assert_msg(strstr(out, cases[k].want) != NULL,
                      "case %zu: no \"%s\"", k, cases[k].want);
        ck_assert_ptr_nonnull(strstr(out, "linearizability: PASS"));
        free(out);
        tu_rmrf(dir);
        free(dir);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("chaos_replicas");
    TCase *tc = tcase_create("replicas");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, agree_passes);
    tcase_add_test(tc, one_replica_each_says_nothing_to_compare);
    tcase_add_test(tc, digests_differ_fails);
    tcase_add_test(tc, records_differ_fails);
    tcase_add_test(tc, empty_replica_in_sync_fails);
    tcase_add_test(tc, missing_replica_refused);
    tcase_add_test(tc, single_replicas_pass);
    tcase_add_test(tc, malformed_refused);
    tcase_add_test(tc, check_dir_verdicts);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
