/* keel-chaos report DIR, run as a user would, on recorded runs written by
 * hand (tests/support/chaosrun.c): the page holds the verdict of each
 * check, a bar per operation coloured by outcome, the fault windows and
 * node events, the operations a violation names outlined and linked, and
 * nothing it would fetch from elsewhere. test_chaos_browser renders it. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaosrun.h"
#include "proc.h"
#include "testutil.h"

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir("chaos-report");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

static char *report(int expect_rc)
{
    char *bin = tu_bin("keel-chaos"), *out = NULL, *err = NULL, path[512];
    const char *argv[] = {bin, "report", dir, NULL};
    int rc = tu_run(argv, &out, &err);
    char *html;

    fprintf(stderr, "--- keel-chaos report: exit %d\n%s%s", rc,
            out ? out : "", err ? err : "");
    ck_assert_int_eq(rc, expect_rc);
    free(bin);
    free(out);
    free(err);
    snprintf(path, sizeof path, "%s/report.html", dir);
    html = tu_read_file(path);
    if (expect_rc == 0)
        ck_assert_ptr_nonnull(html);
    return html;
}

static int count(const char *s, const char *pat)
{
    int n = 0;

    while ((s = strstr(s, pat)) != NULL) {
        n++;
        s++;
    }
    return n;
}

/* Nothing to fetch: no links, sources or stylesheets elsewhere; the only
 * URL is the SVG namespace, which names and does not fetch. */
static void self_contained(const char *html)
{
    const char *p;

    ck_assert_ptr_null(strstr(html, "<link"));
    ck_assert_ptr_null(strstr(html, " src="));
    ck_assert_ptr_null(strstr(html, "@import"));
    ck_assert_ptr_null(strstr(html, "url("));
    for (p = html; (p = strstr(p, "http")) != NULL; p++)
        ck_assert_msg(strncmp(p, "http://www.w3.org/2000/svg", 26) == 0,
                      "a URL in the page: %.60s", p);
}

START_TEST(violations_on_the_page)
{
    char *html;

    tu_chaos_fake_run(dir, 1);
    html = report(0);
    self_contained(html);
    ck_assert_ptr_nonnull(strstr(html, "<title>keel-chaos: FAIL"));
    ck_assert_ptr_nonnull(strstr(html, "id=verdict>FAIL<"));
    ck_assert_ptr_nonnull(strstr(html, "<th>linearizability</th><td><span "
                                       "class='v FAIL'>FAIL</span>"));
    ck_assert_ptr_nonnull(strstr(html, "<th>lost-writes</th><td><span "
                                       "class='v FAIL'>FAIL</span>"));
    ck_assert_ptr_nonnull(strstr(html, "<th>at-most-one-activation</th><td>"
                                       "<span class='v FAIL'>FAIL</span>"));
    /* A bar per operation: 8 of them, 6 ok (2 of them final reads), 1
     * fail, 1 info (which the counter's violation names too: it could
     * not come next either). */
    ck_assert_int_eq(count(html, "<rect id='op"), 8);
    ck_assert_int_eq(count(html, "' class='ok"), 6);
    ck_assert_int_eq(count(html, "' class='ok final"), 2);
    ck_assert_int_eq(count(html, "' class='fail"), 1);
    ck_assert_int_eq(count(html, "' class='info"), 1);
    /* The read of "2" that nobody wrote (op 1), outlined and linked. */
    ck_assert_ptr_nonnull(strstr(html, "<rect id='op1' class='ok bad'"));
    ck_assert_ptr_nonnull(strstr(html, "data-op='op1'>register/r1: client 2 "
                                       "read() -&gt; &quot;2&quot;"));
    /* The final read that lost an increment, linked. */
    ck_assert_ptr_nonnull(strstr(html, "counter/c1: client 3 get() -&gt; 1"));
    /* counter/c1 on two nodes at once, marked on both node lanes. */
    ck_assert_ptr_nonnull(strstr(html, "id='act0a'"));
    ck_assert_ptr_nonnull(strstr(html, "id='act0b'"));
    ck_assert_ptr_nonnull(strstr(html, "active on two nodes at once"));
    /* The kill window, node events, the stopped stretch of n2. */
    ck_assert_ptr_nonnull(strstr(html, "<title>kill n1 from +0.500 s to "
                                       "+1.200 s</title>"));
    ck_assert_ptr_nonnull(strstr(html, "<title>n1 kill at +0.500 s</title>"));
    ck_assert_ptr_nonnull(strstr(html, "<rect class='stopped'"));
    ck_assert_ptr_nonnull(strstr(html, "seed 7, 2 nodes, 3 clients"));
    /* Throughput and latency, and check's own text. */
    ck_assert_ptr_nonnull(strstr(html, "Completions per "));
    ck_assert_ptr_nonnull(strstr(html, "<polyline"));
    ck_assert_ptr_nonnull(strstr(html, "verdict: FAIL\n</pre>"));
    free(html);
}
END_TEST

START_TEST(passing_run)
{
    char *html;

    tu_chaos_fake_run(dir, 0);
    html = report(0);
    self_contained(html);
    ck_assert_ptr_nonnull(strstr(html, "id=verdict>PASS<"));
    ck_assert_int_eq(count(html, "class='v PASS'"), 4); /* and the title's */
    ck_assert_ptr_null(strstr(html, " bad'"));
    ck_assert_ptr_null(strstr(html, "<h2>Violations"));
    free(html);
}
END_TEST

/* Without a history there is nothing to report; the other files are
 * optional. */
START_TEST(inputs)
{
    char path[512];
    char *html;

    ck_assert_ptr_null(report(2));
    tu_chaos_fake_run(dir, 0);
    snprintf(path, sizeof path, "%s/run.json", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/events.jsonl", dir);
    remove(path);
    html = report(0);
    ck_assert_ptr_nonnull(strstr(html, "id=verdict>PASS<"));
    ck_assert_int_eq(count(html, "<rect id='op"), 8);
    free(html);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("chaos_report");
    TCase *tc = tcase_create("report");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, violations_on_the_page);
    tcase_add_test(tc, passing_run);
    tcase_add_test(tc, inputs);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
