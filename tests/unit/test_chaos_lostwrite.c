/* No acknowledged write lost (chaos/lostwrite.c): final reads that show
 * every acknowledged write pass, with or without the unknown ones; a
 * final read that misses one, or shows what nobody wrote, is reported;
 * final reads out of place are refused. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos/history.h"
#include "chaos/lostwrite.h"
#include "chaos_hist.h"
#include "keel.h"
#include "testutil.h"

static chaos_history h;

static void setup(void)
{
    chaos_history_init(&h);
}

static void teardown(void)
{
    chaos_history_free(&h);
}

/* The report (malloc'd); *nfound gets the number of findings. */
static char *check(size_t *nfound)
{
    chaos_lost_result r;
    char err[256], *buf = NULL;
    size_t len = 0;
    FILE *f;
    int rc = chaos_lost_check(&h, &r, err, sizeof err);

    ck_assert_msg(rc == 0, "%s", err);
    f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    chaos_lost_print(f, &h, &r, 10);
    fclose(f);
    fputs(buf, stderr);
    *nfound = r.nfound;
    chaos_lost_result_free(&r);
    return buf;
}

/* A final read of the actor set with hb_actor, then the verdict: the
 * number of findings. The read is taken back out of the history by
 * building it again, so callers build the writes in a function. */
static size_t final_read(void (*writes)(void), const char *op,
                         const char *result, char **report)
{
    size_t n;
    char *out;

    chaos_history_free(&h);
    chaos_history_init(&h);
    writes();
    hb_final();
    hb_op(&h, 9, op, "null", "ok", result);
    out = check(&n);
    if (report != NULL)
        *report = out;
    else
        free(out);
    return n;
}

static void counter_writes(void)
{
    hb_actor("counter/c");
    hb_op(&h, 1, "incr", "1", "ok", "1");
    hb_op(&h, 2, "incr", "2", "ok", "null");
    hb_op(&h, 3, "incr", "5", "info", NULL);
    hb_op(&h, 3, "incr", "-1", "info", NULL);
    hb_op(&h, 4, "incr", "100", "fail", NULL);
    hb_inv(&h, 5, "incr", "7"); /* never completed: unknown */
}

START_TEST(counter)
{
    char *out;

    /* acknowledged 3; unknown +5, +7, -1: anything in [2, 15] */
    ck_assert_uint_eq(final_read(counter_writes, "get", "3", &out), 0);
    ck_assert_ptr_nonnull(strstr(out, "lost-writes: PASS (1 actors read at "
                                      "the end, 1 final reads; 2 "
                                      "acknowledged writes)"));
    free(out);
    ck_assert_uint_eq(final_read(counter_writes, "get", "2", NULL), 0);
    ck_assert_uint_eq(final_read(counter_writes, "get", "15", NULL), 0);
    ck_assert_uint_eq(final_read(counter_writes, "get", "1", &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "lost-writes: FAIL"));
    ck_assert_ptr_nonnull(strstr(out, "is below what the acknowledged "
                                      "increments (2) add up to, 3, or 2 if "
                                      "the unknown negative ones (1) all "
                                      "took effect: at least 1 of the "
                                      "acknowledged amount is lost"));
    free(out);
    ck_assert_uint_eq(final_read(counter_writes, "get", "16", &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "and the unknown positive ones (2) "
                                      "can add up to, 15, by 1: an increment "
                                      "counted twice, or a failed one took "
                                      "effect (1 failed increments, 100 in "
                                      "all)"));
    free(out);
    /* A failed increment that took effect is reported: keel said it
     * did not run. */
    ck_assert_uint_eq(final_read(counter_writes, "get", "103", NULL), 1);
}
END_TEST

static void acked_only_writes(void)
{
    hb_actor("counter/a");
    hb_op(&h, 1, "incr", "4", "ok", "4");
    hb_op(&h, 2, "incr", "6", "ok", "10");
}

/* Increments of both signs, of every outcome: acknowledged 10 (+6, +8,
 * -4); unknown -3 and +2; failed -5 and +4. */
static void mixed_writes(void)
{
    hb_actor("counter/m");
    hb_op(&h, 1, "incr", "6", "ok", "6");
    hb_op(&h, 1, "incr", "8", "ok", "14");
    hb_op(&h, 2, "incr", "-4", "ok", "10");
    hb_op(&h, 3, "incr", "-3", "info", NULL);
    hb_op(&h, 3, "incr", "2", "info", NULL);
    hb_op(&h, 4, "incr", "-5", "fail", NULL);
    hb_op(&h, 4, "incr", "4", "fail", NULL);
}

/* Acknowledged 10 by two increments; a decrement of 5 said it did not
 * run. */
static void failed_decrement_writes(void)
{
    hb_actor("counter/d");
    hb_op(&h, 1, "incr", "5", "ok", "5");
    hb_op(&h, 2, "incr", "5", "ok", "10");
    hb_op(&h, 3, "incr", "-5", "fail", NULL);
}

/* With decrements the direction of a discrepancy does not tell a loss
 * from a failed operation that ran: a value below the range may be a
 * failed decrement that took effect, one above an acknowledged decrement
 * lost. Failed operations never widen the range (keel says they did not
 * run), so each case is a finding, named by what can explain it. */
START_TEST(counter_mixed_signs)
{
    char *out;

    /* [10 - 3, 10 + 2] */
    ck_assert_uint_eq(final_read(mixed_writes, "get", "7", NULL), 0);
    ck_assert_uint_eq(final_read(mixed_writes, "get", "10", NULL), 0);
    ck_assert_uint_eq(final_read(mixed_writes, "get", "12", NULL), 0);
    /* 2 short: the failed decrement of 5 could explain it. */
    ck_assert_uint_eq(final_read(mixed_writes, "get", "5", &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "is below what the acknowledged "
                                      "increments (3) add up to, 10, or 7 "
                                      "if the unknown negative ones (1) all "
                                      "took effect, by 2: an acknowledged "
                                      "increment is lost, or failed "
                                      "decrements (1, -5 in all) took "
                                      "effect though keel said they did not "
                                      "run"));
    ck_assert_ptr_null(strstr(out, "of the acknowledged amount is lost"));
    free(out);
    /* 7 short: 2 of it is lost whatever the failed decrement did. */
    ck_assert_uint_eq(final_read(mixed_writes, "get", "0", &out), 1);
    ck_assert_ptr_nonnull(strstr(out, ": at least 2 of the acknowledged "
                                      "amount is lost even if the failed "
                                      "decrements (1, -5 in all) took "
                                      "effect"));
    free(out);
    /* 1 over: a lost decrement, a failed increment, or a double. */
    ck_assert_uint_eq(final_read(mixed_writes, "get", "13", &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "can add up to, 12, by 1: an "
                                      "increment counted twice, an "
                                      "acknowledged decrement is lost (1 of "
                                      "them, -4 in all), or a failed one "
                                      "took effect (1 failed increments, 4 "
                                      "in all)"));
    free(out);
    ck_assert_uint_eq(final_read(mixed_writes, "get", "20", NULL), 1);

    /* The failed decrement that ran is not called a loss; a lost
     * increment still is. */
    ck_assert_uint_eq(final_read(failed_decrement_writes, "get", "10", NULL),
                      0);
    ck_assert_uint_eq(final_read(failed_decrement_writes, "get", "5", &out),
                      1);
    ck_assert_ptr_null(strstr(out, "of the acknowledged amount is lost"));
    ck_assert_ptr_nonnull(strstr(out, "by 5: an acknowledged increment is "
                                      "lost, or failed decrements (1, -5 in "
                                      "all) took effect though keel said "
                                      "they did not run"));
    free(out);
    ck_assert_uint_eq(final_read(failed_decrement_writes, "get", "4", &out),
                      1);
    ck_assert_ptr_nonnull(strstr(out, "at least 1 of the acknowledged amount "
                                      "is lost even if the failed "
                                      "decrements (1, -5 in all) took "
                                      "effect"));
    free(out);
    /* Increments only, nothing failed or unknown: a loss, as ever. */
    ck_assert_uint_eq(final_read(acked_only_writes, "get", "9", &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "is below what the acknowledged "
                                      "increments (2) add up to, 10: at "
                                      "least 1 of the acknowledged amount is "
                                      "lost"));
    free(out);
    ck_assert_uint_eq(final_read(acked_only_writes, "get", "11", &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "by 1: an increment counted twice\n"));
    free(out);
}
END_TEST

static void huge_writes(void)
{
    hb_actor("counter/c");
    hb_op(&h, 1, "incr", "4611686018427387904", "ok", "null"); /* 2^62 */
    hb_op(&h, 2, "incr", "4611686018427387904", "ok", "null");
    hb_op(&h, 3, "incr", "4611686018427387904", "ok", "null");
}

/* Sums of 2^62-sized increments pass a long long: the report gives them
 * as they are (a counter that wrapped, 3 * 2^62 read as -2^62), not
 * wrapped themselves ("at least 0 ... is lost"). */
START_TEST(counter_sums_past_64_bits)
{
    char *out;

    ck_assert_uint_eq(final_read(huge_writes, "get", "-4611686018427387904",
                                 &out),
                      1);
    ck_assert_ptr_nonnull(strstr(out, "is below what the acknowledged "
                                      "increments (3) add up to, "
                                      "13835058055282163712: at least "
                                      "18446744073709551616 of the "
                                      "acknowledged amount is lost"));
    free(out);
}
END_TEST

static void set_writes(void)
{
    hb_actor("kv/s");
    hb_op(&h, 1, "add", "\"a\"", "ok", "null");
    hb_op(&h, 2, "add", "\"b\"", "info", NULL);
    hb_op(&h, 3, "add", "\"c\"", "fail", NULL);
    hb_op(&h, 3, "add", "\"d\"", "ok", "null");
}

START_TEST(set)
{
    char *out;

    ck_assert_uint_eq(final_read(set_writes, "read_set", "[\"d\",\"a\"]",
                                 NULL),
                      0);
    ck_assert_uint_eq(final_read(set_writes, "read_set",
                                 "[\"a\",\"b\",\"d\"]", NULL),
                      0);
    ck_assert_uint_eq(final_read(set_writes, "read_set", "[\"b\"]", &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "lacks acknowledged elements: \"a\" "
                                      "\"d\"\n    the first one added by "
                                      "client 1 add(\"a\")"));
    free(out);
    ck_assert_uint_eq(final_read(set_writes, "read_set",
                                 "[\"a\",\"c\",\"d\"]", &out),
                      1);
    ck_assert_ptr_nonnull(strstr(out, "holds \"c\", which only a failed add "
                                      "wrote"));
    free(out);
    ck_assert_uint_eq(final_read(set_writes, "read_set",
                                 "[\"a\",\"d\",\"z\"]", &out),
                      1);
    ck_assert_ptr_nonnull(strstr(out, "holds \"z\", which no add wrote"));
    free(out);
}
END_TEST

static void register_writes(void)
{
    hb_actor("register/r");
    hb_op(&h, 1, "write", "\"1\"", "ok", "null");
    hb_inv(&h, 1, "write", "\"2\""); /* 2 and 3 concurrent */
    hb_inv(&h, 2, "cas", "[\"1\",\"3\"]");
    hb_ret(&h, "ok", 1, "null");
    hb_ret(&h, "ok", 2, "true");
    hb_op(&h, 3, "write", "\"4\"", "info", NULL);
    hb_op(&h, 3, "write", "\"9\"", "fail", NULL);
    hb_op(&h, 4, "cas", "[\"0\",\"5\"]", "ok", "false");
}

START_TEST(register_)
{
    char *out;

    ck_assert_uint_eq(final_read(register_writes, "read", "\"2\"", NULL), 0);
    ck_assert_uint_eq(final_read(register_writes, "read", "\"3\"", NULL), 0);
    ck_assert_uint_eq(final_read(register_writes, "read", "\"4\"", NULL), 0);
    /* 1 was overwritten by acknowledged writes that began after it. */
    ck_assert_uint_eq(final_read(register_writes, "read", "\"1\"", &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "lost the acknowledged client 2 "
                                      "cas(\"1\", \"3\") -> true"));
    ck_assert_ptr_nonnull(strstr(out, "the last one client 1 write(\"1\")"));
    free(out);
    ck_assert_uint_eq(final_read(register_writes, "read", "\"\"", &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "(the register reads as never "
                                      "written)"));
    free(out);
    ck_assert_uint_eq(final_read(register_writes, "read", "\"9\"", &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "returned a value only a failed write "
                                      "wrote: client 3 write(\"9\")"));
    free(out);
    ck_assert_uint_eq(final_read(register_writes, "read", "\"5\"", &out), 1);
    ck_assert_ptr_nonnull(strstr(out, "returned a value no write wrote"));
    free(out);
}
END_TEST

static void nothing_written(void)
{
    hb_actor("register/r");
    hb_op(&h, 1, "write", "\"1\"", "fail", NULL);
}

START_TEST(register_never_written)
{
    ck_assert_uint_eq(final_read(nothing_written, "read", "\"\"", NULL), 0);
}
END_TEST

/* Several actors, a final read that failed, actors never read again. */
START_TEST(unread_actors_and_skips)
{
    char *out;
    size_t n;

    hb_actor("counter/a");
    hb_op(&h, 1, "incr", "1", "ok", "1");
    out = check(&n);
    ck_assert_ptr_nonnull(strstr(out, "lost-writes: SKIPPED (no successful "
                                      "final read"));
    free(out);
    hb_actor("counter/b");
    hb_op(&h, 1, "incr", "1", "ok", "1");
    hb_final();
    hb_op(&h, 2, "get", "null", "ok", "1");
    hb_actor("counter/a");
    hb_final();
    hb_op(&h, 2, "get", "null", "info", NULL);
    out = check(&n);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_nonnull(strstr(out, "lost-writes: PASS (1 actors read"));
    ck_assert_ptr_nonnull(strstr(out, "not checked: 1 actors with "
                                      "acknowledged writes and no successful "
                                      "final read: counter/a\n"));
    free(out);
}
END_TEST

START_TEST(final_reads_out_of_place)
{
    chaos_lost_result r;
    char err[256];

    hb_actor("counter/c");
    hb_inv(&h, 1, "incr", "1");
    hb_final();
    hb_op(&h, 2, "get", "null", "ok", "1");
    hb_ret(&h, "ok", 1, "1");
    ck_assert_int_eq(chaos_lost_check(&h, &r, err, sizeof err), KEEL_EINVAL);
    ck_assert_str_eq(err, "line 2: final read of counter/c invoked before "
                          "its incr of line 1 completed (line 4)");

    chaos_history_free(&h);
    chaos_history_init(&h);
    hb_final();
    hb_op(&h, 2, "get", "null", "ok", "0");
    hb_op(&h, 1, "incr", "1", "ok", "1");
    ck_assert_int_eq(chaos_lost_check(&h, &r, err, sizeof err), KEEL_EINVAL);
    ck_assert_str_eq(err, "line 3: incr on counter/c invoked after the final "
                          "read of line 1: final reads come after the "
                          "workload");

    /* Still running when the final read began, with no completion ever:
     * allowed, it is unknown anyway. */
    chaos_history_free(&h);
    chaos_history_init(&h);
    hb_inv(&h, 1, "incr", "1");
    hb_final();
    hb_op(&h, 2, "get", "null", "ok", "1");
    ck_assert_int_eq(chaos_lost_check(&h, &r, err, sizeof err), 0);
    ck_assert_uint_eq(r.nfound, 0);
    chaos_lost_result_free(&r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("chaos_lostwrite");
    TCase *tc = tcase_create("lostwrite");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, counter);
    tcase_add_test(tc, counter_mixed_signs);
    tcase_add_test(tc, counter_sums_past_64_bits);
    tcase_add_test(tc, set);
    tcase_add_test(tc, register_);
    tcase_add_test(tc, register_never_written);
    tcase_add_test(tc, unread_actors_and_skips);
    tcase_add_test(tc, final_reads_out_of_place);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
