/* At most one activation (chaos/actlog.c): the logs keeld writes read,
 * overlapping activations on two nodes are found and clean handoffs are
 * not, an "end" line closes what a killed node held, a node that
 * activates twice and an epoch that goes back are found, and malformed
 * logs are refused with file and line. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos/actlog.h"
#include "keel.h"
#include "proc.h"
#include "testutil.h"

static chaos_actlog al;

static void setup(void)
{
    chaos_actlog_init(&al);
}

static void teardown(void)
{
    chaos_actlog_free(&al);
}

static void add(const char *node, const char *text)
{
    char name[64], err[256];
    int rc;

    snprintf(name, sizeof name, "%s.log", node);
    rc = chaos_actlog_parse(&al, node, name, text, strlen(text), err,
                            sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
}

/* The report, checked, then returned (malloc'd) for more checks. */
static char *report(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    ck_assert_ptr_nonnull(f);
    chaos_actlog_print(f, &al, 10);
    fclose(f);
    fputs(buf, stderr);
    return buf;
}

static size_t count(chaos_act_kind kind)
{
    size_t k, n = 0;

    for (k = 0; k < al.nfound; k++)
        n += al.found[k].kind == kind;
    return n;
}

#define A(ns, id, epoch) #ns " activate counter " id " shard 7 epoch " #epoch "\n"
#define D(ns, id, epoch) #ns " deactivate counter " id " shard 7 epoch " #epoch "\n"

/* A log written by a real node: two actors, one with a binary id. */
START_TEST(reads_what_keeld_writes)
{
    char *dir = tu_tmpdir("chaos-actlog"), *path, *text, err[256], *out;
    keel_node_options o;
    keel_node *n;
    void *reply;
    size_t len;
    int rc;

    ck_assert_int_ge(asprintf(&path, "%s/n1.log", dir), 0);
    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_WARN;
    o.activation_log = path;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(keel_call_sync(n, "counter", "c1", 2, "incr", 4, &reply,
                                    &len),
                     0);
    keel_free(reply);
    ck_assert_int_eq(keel_call_sync(n, "counter", "\0\xff", 2, "incr", 4,
                                    &reply, &len),
                     0);
    keel_free(reply);
    keel_node_stop(n); /* deactivates both */
    keel_node_join(n);
    keel_node_destroy(n);

    rc = chaos_actlog_read(&al, "n1", path, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(al.n, 2);
    ck_assert_int_eq(al.iv[0].how, CHAOS_ACT_DEACTIVATED);
    ck_assert_int_eq(al.iv[1].how, CHAOS_ACT_DEACTIVATED);
    ck_assert_ptr_nonnull(strstr(al.iv[0].actor, "counter/"));
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    ck_assert_uint_eq(al.nfound, 0);
    ck_assert_uint_eq(al.actors, 2);

    /* The same log as a second node's: every activation overlaps. */
    text = tu_read_file(path);
    ck_assert_ptr_nonnull(text);
    chaos_actlog_free(&al);
    chaos_actlog_init(&al);
    add("n1", text);
    add("n2", text);
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    ck_assert_uint_eq(count(CHAOS_ACT_OVERLAP), 2);
    out = report();
    ck_assert_ptr_nonnull(strstr(out, "at-most-one-activation: FAIL"));
    ck_assert_ptr_nonnull(strstr(out, "counter/6331 (\"c1\") active on two "
                                      "nodes at once"));
    ck_assert_ptr_nonnull(strstr(out, "counter/00ff active on two nodes"));
    free(out);
    free(text);
    free(path);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A handoff: deactivated on one node before the other activates. */
START_TEST(handoff_passes)
{
    char *out;

    add("n1", A(100, "61", 1) D(200, "61", 1) A(250, "62", 1));
    add("n2", A(201, "61", 2) A(260, "63", 2) D(300, "61", 2));
    add("n3", A(301, "61", 3));
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    ck_assert_uint_eq(al.nfound, 0);
    ck_assert_uint_eq(al.actors, 3);
    ck_assert_uint_eq(al.moves, 2);
    out = report();
    ck_assert_ptr_nonnull(strstr(out, "at-most-one-activation: PASS (3 nodes, "
                                      "5 activations of 3 actors, 2 moves"));
    free(out);
}
END_TEST

/* Intervals are closed: a deactivate and an activate at the same
 * instant overlap, and so does an activation that ends as it begins. */
START_TEST(touching_overlaps)
{
    add("n1", A(100, "61", 1) D(200, "61", 1) A(300, "62", 1)
                  D(300, "62", 1));
    add("n2", A(200, "61", 2) A(300, "62", 2));
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    ck_assert_uint_eq(count(CHAOS_ACT_OVERLAP), 2);
}
END_TEST

/* Overlaps found both ways round, also when one activation spans two
 * others and when neither ever ended. */
START_TEST(overlaps_found)
{
    char *out;

    add("n1", A(100, "61", 1) A(100, "62", 1) D(300, "61", 1)
                  D(1000, "62", 1) A(5000, "63", 1));
    add("n2", A(200, "61", 1) A(200, "62", 1) D(300, "62", 1)
                  D(400, "61", 1) A(6000, "63", 1));
    add("n3", A(50, "61", 1) D(150, "61", 1) A(400, "62", 1)
                  D(500, "62", 1));
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    /* 61: n3 [50,150] / n1 [100,300] / n2 [200,400]: two overlaps.
     * 62: n1 [100,1000] covers n2 [200,300] and n3 [400,500]: two.
     * 63: open on n1 and on n2: one. */
    ck_assert_uint_eq(count(CHAOS_ACT_OVERLAP), 5);
    ck_assert_uint_eq(al.nfound, 5);
    out = report();
    ck_assert_ptr_nonnull(strstr(out, "overlap: +0.000000 s to +0.000000 s"));
    ck_assert_ptr_nonnull(strstr(out, "on n1 from +0.000004 s (n1.log:5, "
                                      "epoch 1) to the end of its log, never "
                                      "deactivated"));
    ck_assert_ptr_nonnull(strstr(out, "both never deactivated"));
    free(out);
}
END_TEST

/* A killed node's activations end at the harness's "end" line; without
 * it they last forever and overlap the next owner's. */
START_TEST(process_end_closes)
{
    const char *n2 = A(2000, "61", 2);

    add("n1", A(100, "61", 1) A(100, "62", 1) "1000 end\n" A(3000, "61", 3));
    add("n2", n2);
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    ck_assert_uint_eq(al.nfound, 1); /* n1's second 61 and n2's */
    ck_assert_int_eq(al.found[0].kind, CHAOS_ACT_OVERLAP);
    ck_assert_int_eq(al.iv[0].how, CHAOS_ACT_PROCESS_END);
    ck_assert_uint_eq(al.iv[0].end, 1000);
    ck_assert_uint_eq(al.iv[0].end_line, 3);
    ck_assert_int_eq(al.iv[1].how, CHAOS_ACT_PROCESS_END);
    ck_assert_uint_eq(al.process_ends, 1);

    chaos_actlog_free(&al);
    chaos_actlog_init(&al);
    add("n1", A(100, "61", 1) "1000 end\n");
    add("n2", n2);
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    ck_assert_uint_eq(al.nfound, 0);

    chaos_actlog_free(&al);
    chaos_actlog_init(&al);
    add("n1", A(100, "61", 1));
    add("n2", n2);
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    ck_assert_uint_eq(count(CHAOS_ACT_OVERLAP), 1);
}
END_TEST

/* A node that activates what it holds active, without an end line
 * between: reported once. */
START_TEST(activated_twice)
{
    char *out;

    add("n1", A(100, "61", 1) A(300, "61", 1) D(400, "61", 1));
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    ck_assert_uint_eq(al.nfound, 1);
    ck_assert_int_eq(al.found[0].kind, CHAOS_ACT_TWICE);
    ck_assert_int_eq(al.iv[0].how, CHAOS_ACT_REACTIVATED);
    ck_assert_int_eq(al.iv[1].how, CHAOS_ACT_DEACTIVATED);
    out = report();
    ck_assert_ptr_nonnull(strstr(out, "counter/61 (\"a\") activated again on "
                                      "n1 at +0.000000 s (n1.log:2) while"));
    free(out);
}
END_TEST

START_TEST(epoch_goes_back)
{
    char *out;

    add("n1", A(100, "61", 5) D(200, "61", 5));
    add("n2", A(300, "61", 4) D(400, "61", 4) A(500, "61", 4));
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    ck_assert_uint_eq(al.nfound, 1);
    ck_assert_int_eq(al.found[0].kind, CHAOS_ACT_EPOCH_BACK);
    out = report();
    ck_assert_ptr_nonnull(strstr(out, "shard epoch went back from 5 to 4"));
    free(out);
}
END_TEST

START_TEST(malformed_refused)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"abc\n", "n9.log:1: expected the time in ns first"},
        {"100 start counter 61 shard 1 epoch 1\n",
         "n9.log:1: expected activate, deactivate, fenced, serving or end "
         "after the time, not \"start\""},
        {A(100, "61", 1) "200 activate counter 61\n",
         "n9.log:2: expected \"<ns> activate <type> <hex id> shard <n> epoch "
         "<n>\""},
        {"100 activate counter 6 shard 1 epoch 1\n", "n9.log:1: expected"},
        {"100 activate counter 6A shard 1 epoch 1\n", "n9.log:1: expected"},
        {"100 activate counter 61 shard 1 epoch 1 x\n", "n9.log:1: expected"},
        {"100 activate counter 61 shard 1  epoch 1\n", "n9.log:1: expected"},
        {"100 activate counter 61 shard 1 epoch 1 \n", "n9.log:1: expected"},
        {"100 activate counter 61 shard 4294967296 epoch 1\n",
         "n9.log:1: expected"},
        {"100 end now\n", "n9.log:1: expected activate, deactivate, fenced, "
                         "serving or end"},
        {"100 fenced\n", "n9.log:1: expected \"<ns> fenced since <ns>\""},
        {"100 fenced since 101\n", "n9.log:1: fenced since 101, after the "
                                   "line's own time"},
        {"100 serving now\n", "n9.log:1: expected activate"},
        {D(100, "61", 1), "n9.log:1: deactivate of counter/61, which this "
                          "node had not activated"},
        {A(100, "61", 1) D(99, "61", 1),
         "n9.log:2: time 99 is earlier than the line before's 100"},
        {A(100, "61", 1) "200 deactivate counter 61 shard 7 epoch 1",
         "n9.log:2: the last line has no newline"},
        {"\n", "n9.log:1: expected the time"},
    };
    char err[256];
    size_t k;

    for (k = 0; k < sizeof cases / sizeof *cases; k++) {
        int rc = chaos_actlog_parse(&al, "n9", "n9.log", cases[k].text,
                                    strlen(cases[k].text), err, sizeof err);
        ck_assert_msg(rc == KEEL_EINVAL, "case %zu: rc %d", k, rc);
        ck_assert_msg(strstr(err, cases[k].want) != NULL,
                      "case %zu: got \"%s\", want \"%s\"", k, err,
                      cases[k].want);
        ck_assert_uint_eq(al.n, 0);
        ck_assert_uint_eq(al.nnodes, 0);
    }
    add("n9", A(100, "-", 1) D(100, "-", 1));
    ck_assert_int_eq(chaos_actlog_parse(&al, "n9", "again.log", "", 0, err,
                                        sizeof err),
                     KEEL_EINVAL);
    ck_assert_str_eq(err, "again.log: node n9 given twice");
    ck_assert_int_eq(chaos_actlog_read(&al, "n8", "/nonexistent/n8.log", err,
                                       sizeof err),
                     KEEL_EIO);
}
END_TEST

#define F(ns, since) #ns " fenced since " #since "\n"
#define S(ns) #ns " serving\n"

/* A node stopped past its lease (SIGSTOP): its lease ran out at 150, it
 * noticed at 400 ("fenced since 150") and deactivated at 410; n2 took the
 * actor over at 300. The activation on n1 ends at 150: no overlap. */
START_TEST(fenced_ends_activations)
{
    char *out;

    add("n1", A(100, "61", 1) F(400, 150) D(410, "61", 1));
    add("n2", A(300, "61", 2) D(500, "61", 2));
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    ck_assert_uint_eq(al.nfound, 0);
    ck_assert_uint_eq(al.fences, 1);
    ck_assert_uint_eq(al.iv[0].end, 150);
    ck_assert_int_eq(al.iv[0].how, CHAOS_ACT_FENCED);
    out = report();
    ck_assert_ptr_nonnull(strstr(out, "at-most-one-activation: PASS"));
    ck_assert_ptr_nonnull(strstr(out, "1 fences"));
    free(out);
}
END_TEST

/* The fence came at 350, after n2 activated at 300: an overlap from 300
 * to 350, reported with the fence as n1's end. */
START_TEST(fenced_too_late_overlaps)
{
    char *out;

    add("n1", A(100, "61", 1) F(400, 350) D(410, "61", 1));
    add("n2", A(300, "61", 2) D(500, "61", 2));
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    ck_assert_uint_eq(count(CHAOS_ACT_OVERLAP), 1);
    out = report();
    ck_assert_ptr_nonnull(strstr(out, "(fenced since, line 2)"));
    free(out);
}
END_TEST

/* A deactivation logged after the lease ran out but before the node
 * noticed (line 2 at 200, fence since 150, noticed at 400) is cut back to
 * the fence too; an activation after the fence's time (line 3 at 220,
 * which keel never does) counts as the instant it was logged. */
START_TEST(fenced_cuts_back)
{
    add("n1", A(100, "61", 1) D(200, "61", 1) A(220, "62", 1) F(400, 150)
                  D(410, "62", 1));
    add("n2", A(180, "61", 2) A(220, "62", 2) D(500, "61", 2)
                  D(500, "62", 2));
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    ck_assert_uint_eq(al.iv[0].end, 150);
    ck_assert_uint_eq(al.iv[1].start, 220);
    ck_assert_uint_eq(al.iv[1].end, 220);
    ck_assert_int_eq(al.iv[1].how, CHAOS_ACT_FENCED);
    ck_assert_uint_eq(count(CHAOS_ACT_OVERLAP), 1); /* counter/62 at 220 */
}
END_TEST

/* A fence lifted (a ZooKeeper blip with no failover): the actors still
 * resident are active again from "serving" on; one deactivated while
 * fenced is not. An end line closes what serving reopened. */
START_TEST(serving_reopens)
{
    add("n1", A(100, "61", 1) A(110, "62", 1) F(200, 150) D(210, "62", 1)
                  S(300) "400 end\n");
    add("n2", A(160, "62", 2) D(170, "62", 2) A(350, "61", 2)
                  D(500, "61", 2));
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    /* 62 on n2 within n1's fence: fine; 61 on n2 at 350 while n1 serves
     * it again since 300: an overlap */
    ck_assert_uint_eq(count(CHAOS_ACT_OVERLAP), 1);
    ck_assert_uint_eq(al.n, 5);
    ck_assert_uint_eq(al.iv[2].start, 300);
    ck_assert_uint_eq(al.iv[2].end, 400);
    ck_assert_int_eq(al.iv[2].how, CHAOS_ACT_PROCESS_END);
    ck_assert_str_eq(al.iv[2].actor, "counter/61");
}
END_TEST

/* DIR/NODE.log, in name order; other files left alone. */
START_TEST(reads_a_directory)
{
    char *dir = tu_tmpdir("chaos-actdir"), path[512], err[256];
    const char *files[][2] = {{"n2.log", A(200, "61", 2)},
                              {"n1.log", A(100, "61", 1) D(150, "61", 1)},
                              {"notes.txt", "not a log\n"},
                              {".log", "not a node\n"}};
    size_t k;

    for (k = 0; k < 4; k++) {
        FILE *f;
        snprintf(path, sizeof path, "%s/%s", dir, files[k][0]);
        f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(files[k][1], f);
        fclose(f);
    }
    ck_assert_int_eq(chaos_actlog_read_dir(&al, dir, err, sizeof err), 0);
    ck_assert_uint_eq(al.nnodes, 2);
    ck_assert_str_eq(al.nodes[0], "n1");
    ck_assert_str_eq(al.nodes[1], "n2");
    ck_assert_int_eq(chaos_actlog_check(&al), 0);
    ck_assert_uint_eq(al.nfound, 0);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("chaos_actlog");
    TCase *tc = tcase_create("actlog");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, reads_what_keeld_writes);
    tcase_add_test(tc, handoff_passes);
    tcase_add_test(tc, touching_overlaps);
    tcase_add_test(tc, overlaps_found);
    tcase_add_test(tc, process_end_closes);
    tcase_add_test(tc, activated_twice);
    tcase_add_test(tc, epoch_goes_back);
    tcase_add_test(tc, malformed_refused);
    tcase_add_test(tc, fenced_ends_activations);
    tcase_add_test(tc, fenced_too_late_overlaps);
    tcase_add_test(tc, fenced_cuts_back);
    tcase_add_test(tc, serving_reopens);
    tcase_add_test(tc, reads_a_directory);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
