/* The linearizability checker (chaos/lin.c) and its models: hand-made
 * histories that are not linearizable are reported, with where the search
 * got stuck; linearizable ones with concurrency and info operations pass;
 * and a simulated run of 10,000 operations over 20 actors is checked. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chaos/history.h"
#include "chaos/hwriter.h"
#include "chaos/json.h"
#include "chaos/lin.h"
#include "chaos/lostwrite.h"
#include "chaos_hist.h"
#include "keel.h"
#include "testutil.h"

static chaos_history h;

static void setup(void)
{
    chaos_history_init(&h);
    hb_actor("register/r");
}

static void teardown(void)
{
    chaos_history_free(&h);
}

/* The verdict for the only (or first) actor. */
static chaos_lin_verdict verdict_of(size_t actor, chaos_lin_actor *keep)
{
    chaos_lin_actor a;
    chaos_lin_verdict v;

    ck_assert_int_eq(chaos_lin_check_actor(&h, actor, NULL, &a), 0);
    v = a.verdict;
    if (v == CHAOS_LIN_VIOLATION) /* the report must print */
        chaos_lin_print_actor(stderr, &h, &a);
    if (keep != NULL)
        *keep = a;
    else
        chaos_lin_actor_free(&a);
    return v;
}

static chaos_lin_verdict verdict(void)
{
    return verdict_of(0, NULL);
}

/* ------------------------------------------------------------ register */

START_TEST(register_sequential)
{
    hb_op(&h, 1, "read", "null", "ok", "\"\"");
    hb_op(&h, 1, "write", "\"1\"", "ok", "null");
    hb_op(&h, 2, "read", "null", "ok", "\"1\"");
    hb_op(&h, 2, "cas", "[\"1\",\"2\"]", "ok", "true");
    hb_op(&h, 1, "cas", "[\"1\",\"3\"]", "ok", "false");
    hb_op(&h, 3, "read", "null", "ok", "\"2\"");
    ck_assert_int_eq(verdict(), CHAOS_LIN_OK);
}
END_TEST

/* Reads concurrent with a write may see either value, but once one read
 * has seen the new value, a later one may not see the old. */
START_TEST(register_concurrent)
{
    hb_op(&h, 1, "write", "\"0\"", "ok", "null");
    hb_inv(&h, 1, "write", "\"1\"");
    hb_inv(&h, 2, "read", "null");
    hb_inv(&h, 3, "read", "null");
    hb_ret(&h, "ok", 3, "\"1\""); /* sees the new value... */
    hb_ret(&h, "ok", 2, "\"0\""); /* ...while this one, concurrent, does not */
    hb_ret(&h, "ok", 1, "null");
    ck_assert_int_eq(verdict(), CHAOS_LIN_OK);
}
END_TEST

/* The classic stale read: write 2 completed before the read began. */
START_TEST(register_stale_read)
{
    chaos_lin_actor a;

    hb_op(&h, 1, "write", "\"1\"", "ok", "null");
    hb_op(&h, 1, "write", "\"2\"", "ok", "null");
    hb_inv(&h, 3, "write", "\"3\""); /* concurrent, to have a pending op */
    hb_op(&h, 2, "read", "null", "ok", "\"1\"");
    hb_ret(&h, "ok", 3, "null");
    hb_op(&h, 2, "read", "null", "ok", "\"3\"");
    ck_assert_int_eq(verdict_of(0, &a), CHAOS_LIN_VIOLATION);
    /* The shortest failing prefix ends with the stale read (op 3). */
    ck_assert_uint_eq(a.events, 10);
    ck_assert_uint_eq(a.prefix_events, 7);
    ck_assert_uint_eq(a.prefix_end, 3);
    ck_assert_uint_eq(a.stuck, 3);
    ck_assert_uint_eq(h.ops[a.stuck].complete_line, 7);
    /* The search got as far as both writes, then neither the read nor
     * the pending write 3 could explain "1". */
    ck_assert_uint_eq(a.norder, 2);
    ck_assert_uint_eq(a.order[0], 0);
    ck_assert_uint_eq(a.order[1], 1);
    ck_assert_str_eq(a.state, "value \"2\"");
    ck_assert_uint_eq(a.npending, 2);
    ck_assert_uint_eq(a.pending[0], 2); /* write 3 */
    ck_assert_int_eq(a.refused[0], 0);  /* allowed, leads nowhere */
    ck_assert_uint_eq(a.pending[1], 3); /* the read */
    ck_assert_int_eq(a.refused[1], 1);
    chaos_lin_actor_free(&a);
}
END_TEST

/* A write acknowledged, then lost: a later read sees what was before. */
START_TEST(register_lost_write)
{
    hb_op(&h, 1, "write", "\"1\"", "ok", "null");
    hb_op(&h, 2, "write", "\"2\"", "ok", "null");
    hb_final();
    hb_op(&h, 3, "read", "null", "ok", "\"1\"");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

START_TEST(register_value_never_written)
{
    hb_op(&h, 1, "write", "\"1\"", "ok", "null");
    hb_op(&h, 2, "read", "null", "ok", "\"7\"");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

/* Two compare-and-sets from the same value cannot both succeed, even
 * when they run at the same time. */
START_TEST(register_cas_both_succeed)
{
    hb_op(&h, 1, "write", "\"0\"", "ok", "null");
    hb_inv(&h, 1, "cas", "[\"0\",\"1\"]");
    hb_inv(&h, 2, "cas", "[\"0\",\"2\"]");
    hb_ret(&h, "ok", 1, "true");
    hb_ret(&h, "ok", 2, "true");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

/* A cas that says the value was not old, while it was. */
START_TEST(register_cas_false_failure)
{
    hb_op(&h, 1, "write", "\"0\"", "ok", "null");
    hb_op(&h, 2, "cas", "[\"0\",\"1\"]", "ok", "false");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

/* One of two concurrent cas from one value wins; the other says false. */
START_TEST(register_cas_race)
{
    hb_op(&h, 1, "write", "\"0\"", "ok", "null");
    hb_inv(&h, 1, "cas", "[\"0\",\"1\"]");
    hb_inv(&h, 2, "cas", "[\"0\",\"2\"]");
    hb_ret(&h, "ok", 2, "false");
    hb_ret(&h, "ok", 1, "true");
    hb_op(&h, 3, "read", "null", "ok", "\"1\"");
    ck_assert_int_eq(verdict(), CHAOS_LIN_OK);
}
END_TEST

/* An info write may take effect long after its client gave up on it...
 * but only once. */
START_TEST(register_info_takes_effect_later)
{
    hb_op(&h, 1, "write", "\"1\"", "ok", "null");
    hb_op(&h, 2, "write", "\"3\"", "info", NULL);
    hb_op(&h, 1, "read", "null", "ok", "\"1\"");
    hb_op(&h, 1, "read", "null", "ok", "\"3\"");
    ck_assert_int_eq(verdict(), CHAOS_LIN_OK);
    hb_op(&h, 1, "read", "null", "ok", "\"1\"");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

/* ...or never; and an invocation without a completion is the same. */
START_TEST(register_info_never)
{
    hb_op(&h, 1, "write", "\"1\"", "ok", "null");
    hb_op(&h, 2, "cas", "[\"1\",\"2\"]", "info", NULL);
    hb_op(&h, 3, "read", "null", "ok", "\"1\"");
    hb_inv(&h, 2, "write", "\"4\"");
    hb_op(&h, 3, "read", "null", "ok", "\"1\"");
    hb_op(&h, 3, "read", "null", "ok", "\"4\"");
    ck_assert_int_eq(verdict(), CHAOS_LIN_OK);
}
END_TEST

/* Two info writes of one value: each may land once, late. */
START_TEST(register_info_twins)
{
    hb_op(&h, 1, "write", "\"5\"", "info", NULL);
    hb_op(&h, 2, "write", "\"5\"", "info", NULL);
    hb_op(&h, 3, "read", "null", "ok", "\"5\"");
    hb_op(&h, 3, "write", "\"6\"", "ok", "null");
    hb_op(&h, 3, "read", "null", "ok", "\"5\"");
    ck_assert_int_eq(verdict(), CHAOS_LIN_OK);
    hb_op(&h, 3, "write", "\"7\"", "ok", "null");
    hb_op(&h, 3, "read", "null", "ok", "\"5\"");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

/* A failed write did not happen: reading its value is a violation. */
START_TEST(register_fail_did_not_happen)
{
    hb_op(&h, 1, "write", "\"1\"", "ok", "null");
    hb_op(&h, 2, "write", "\"2\"", "fail", NULL);
    hb_op(&h, 3, "read", "null", "ok", "\"2\"");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

/* ------------------------------------------------------------- counter */

START_TEST(counter_concurrent)
{
    hb_actor("counter/c");
    hb_inv(&h, 1, "incr", "1");
    hb_inv(&h, 2, "incr", "2");
    hb_inv(&h, 3, "get", "null");
    hb_ret(&h, "ok", 2, "2"); /* 2 went first */
    hb_ret(&h, "ok", 3, "2");
    hb_ret(&h, "ok", 1, "3");
    hb_op(&h, 1, "incr", "-5", "ok", "null"); /* a cast: no value */
    hb_op(&h, 2, "get", "null", "ok", "-2");
    ck_assert_int_eq(verdict(), CHAOS_LIN_OK);
}
END_TEST

/* An increment applied twice (a retry that ran again). */
START_TEST(counter_duplicate_incr)
{
    hb_actor("counter/c");
    hb_op(&h, 1, "incr", "1", "ok", "1");
    hb_op(&h, 2, "incr", "1", "ok", "null");
    hb_op(&h, 3, "get", "null", "ok", "3");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

/* Two increments that both say they made the value 1. */
START_TEST(counter_same_result_twice)
{
    hb_actor("counter/c");
    hb_inv(&h, 1, "incr", "1");
    hb_inv(&h, 2, "incr", "1");
    hb_ret(&h, "ok", 1, "1");
    hb_ret(&h, "ok", 2, "1");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

/* Info increments count zero or one time each, at any later point. */
START_TEST(counter_info)
{
    hb_actor("counter/c");
    hb_op(&h, 1, "incr", "1", "info", NULL);
    hb_op(&h, 2, "incr", "10", "info", NULL);
    hb_op(&h, 3, "get", "null", "ok", "0");
    hb_op(&h, 3, "get", "null", "ok", "10");
    hb_op(&h, 3, "incr", "100", "ok", "110");
    hb_op(&h, 3, "get", "null", "ok", "111");
    ck_assert_int_eq(verdict(), CHAOS_LIN_OK);
    hb_op(&h, 3, "get", "null", "ok", "112");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

/* Identical info increments are interchangeable once both are invoked
 * (the search tries one of them): each still counts at most once, and
 * one invoked later cannot count before its invocation. */
START_TEST(counter_info_twins)
{
    hb_actor("counter/c");
    hb_op(&h, 1, "incr", "1", "info", NULL);
    hb_op(&h, 2, "get", "null", "ok", "1");
    hb_op(&h, 3, "incr", "1", "info", NULL);
    hb_op(&h, 2, "get", "null", "ok", "1");
    hb_op(&h, 4, "incr", "1", "info", NULL);
    hb_op(&h, 2, "get", "null", "ok", "3");
    ck_assert_int_eq(verdict(), CHAOS_LIN_OK);
    hb_op(&h, 2, "get", "null", "ok", "4");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
    chaos_history_free(&h);
    chaos_history_init(&h);
    hb_op(&h, 1, "incr", "1", "info", NULL);
    hb_op(&h, 2, "get", "null", "ok", "2"); /* the second is not invoked */
    hb_op(&h, 3, "incr", "1", "info", NULL);
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

START_TEST(counter_overflow_refused)
{
    hb_actor("counter/c");
    hb_op(&h, 1, "incr", "9223372036854775807", "ok", "9223372036854775807");
    hb_op(&h, 1, "incr", "1", "info", NULL);
    hb_op(&h, 2, "get", "null", "ok", "9223372036854775807");
    ck_assert_int_eq(verdict(), CHAOS_LIN_OK);
    hb_op(&h, 1, "incr", "1", "ok", "null"); /* cannot have happened */
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

/* ----------------------------------------------------------------- set */

START_TEST(set_concurrent)
{
    hb_actor("kv/s");
    hb_op(&h, 1, "add", "\"a\"", "ok", "null");
    hb_inv(&h, 1, "add", "\"b\"");
    hb_inv(&h, 2, "read_set", "null");
    hb_inv(&h, 3, "add", "\"c\"");
    hb_ret(&h, "ok", 2, "[\"c\",\"a\"]"); /* order does not matter */
    hb_ret(&h, "ok", 1, "null");
    hb_ret(&h, "info", 3, NULL);
    hb_op(&h, 2, "read_set", "null", "ok", "[\"a\",\"b\",\"c\"]");
    ck_assert_int_eq(verdict(), CHAOS_LIN_OK);
}
END_TEST

/* Info adds whose elements no read returns are left out of the search
 * (they can only come after every read); the others still count. */
START_TEST(set_info_adds)
{
    int k;

    hb_actor("kv/s");
    for (k = 0; k < 40; k++) {
        char e[16];
        snprintf(e, sizeof e, "\"x%d\"", k);
        hb_op(&h, 1, "add", e, "info", NULL);
    }
    hb_op(&h, 2, "add", "\"a\"", "info", NULL);
    hb_op(&h, 3, "read_set", "null", "ok", "[]");
    hb_op(&h, 3, "read_set", "null", "ok", "[\"a\"]");
    ck_assert_int_eq(verdict(), CHAOS_LIN_OK);
    hb_op(&h, 3, "read_set", "null", "ok", "[]");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

/* An element read once and gone at the next read. */
START_TEST(set_element_disappears)
{
    chaos_lin_actor a;

    hb_actor("kv/s");
    hb_op(&h, 1, "add", "\"a\"", "ok", "null");
    hb_op(&h, 2, "add", "\"b\"", "ok", "null");
    hb_op(&h, 3, "read_set", "null", "ok", "[\"a\",\"b\"]");
    hb_op(&h, 3, "read_set", "null", "ok", "[\"b\"]");
    hb_op(&h, 3, "read_set", "null", "ok", "[\"b\"]");
    ck_assert_int_eq(verdict_of(0, &a), CHAOS_LIN_VIOLATION);
    ck_assert_uint_eq(a.prefix_events, 8);
    ck_assert_uint_eq(a.stuck, 3);
    ck_assert_str_eq(a.state, "{\"a\", \"b\"}");
    chaos_lin_actor_free(&a);
}
END_TEST

/* A large set read that differs in one element: the report names it,
 * not only the two sets cut short after 16 elements. */
static char *set_read_report(const char *skip, const char *extra)
{
    chaos_lin_actor a;
    chaos_buf b;
    char *text = NULL;
    size_t len = 0;
    FILE *f;
    int k;

    chaos_history_free(&h);
    chaos_history_init(&h);
    hb_actor("kv/s");
    chaos_buf_init(&b);
    chaos_buf_puts(&b, "[");
    for (k = 0; k < 40; k++) {
        char e[16], q[24];
        snprintf(e, sizeof e, "e0.%d", k);
        snprintf(q, sizeof q, "\"%s\"", e);
        hb_op(&h, 1, "add", q, "ok", "null");
        if (skip != NULL && strcmp(e, skip) == 0)
            continue;
        chaos_buf_printf(&b, "%s%s", b.len > 1 ? "," : "", q);
    }
    if (extra != NULL)
        chaos_buf_printf(&b, ",\"%s\"", extra);
    chaos_buf_puts(&b, "]");
    ck_assert(!b.oom);
    hb_op(&h, 2, "read_set", "null", "ok", b.p);
    chaos_buf_free(&b);
    ck_assert_int_eq(verdict_of(0, &a), CHAOS_LIN_VIOLATION);
    ck_assert_uint_eq(a.npending, 1);
    ck_assert_int_eq(a.refused[0], 1);
    f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    chaos_lin_print_actor(f, &h, &a);
    fclose(f);
    chaos_lin_actor_free(&a);
    return text;
}

START_TEST(set_refusal_names_elements)
{
    char *text = set_read_report("e0.17", NULL);

    ck_assert_msg(strstr(text, "the model refuses it in this state: it "
                               "lacks elements the set holds: \"e0.17\"\n") !=
                      NULL,
                  "%s", text);
    free(text);
    text = set_read_report(NULL, "zz");
    ck_assert_msg(strstr(text, "the model refuses it in this state: it "
                               "returns elements the set does not hold: "
                               "\"zz\"\n") != NULL,
                  "%s", text);
    free(text);
    text = set_read_report("e0.3", "zz");
    ck_assert_msg(strstr(text, ": it lacks elements the set holds: \"e0.3\"; "
                               "it returns elements the set does not hold: "
                               "\"zz\"\n") != NULL,
                  "%s", text);
    free(text);
}
END_TEST

START_TEST(set_phantom_and_repeated_elements)
{
    hb_actor("kv/s");
    hb_op(&h, 1, "add", "\"a\"", "ok", "null");
    hb_op(&h, 2, "read_set", "null", "ok", "[\"a\",\"a\"]");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
    chaos_history_free(&h);
    chaos_history_init(&h);
    hb_op(&h, 1, "add", "\"a\"", "fail", NULL);
    hb_op(&h, 2, "read_set", "null", "ok", "[\"a\"]");
    ck_assert_int_eq(verdict(), CHAOS_LIN_VIOLATION);
}
END_TEST

/* --------------------------------------------------------- the history */

/* Actors are checked apart: interleaved, each is fine; the one that is
 * not is named. */
START_TEST(actors_checked_apart)
{
    chaos_lin_result r;

    hb_actor("register/x");
    hb_inv(&h, 1, "write", "\"1\"");
    hb_actor("register/y");
    hb_inv(&h, 2, "write", "\"2\"");
    hb_ret(&h, "ok", 1, "null");
    hb_ret(&h, "ok", 2, "null");
    hb_actor("counter/z");
    hb_op(&h, 3, "incr", "1", "ok", "1");
    hb_actor("register/x");
    hb_op(&h, 3, "read", "null", "ok", "\"1\"");
    hb_actor("register/y");
    hb_op(&h, 3, "read", "null", "ok", "\"1\"");
    ck_assert_int_eq(chaos_lin_check(&h, NULL, &r), 0);
    ck_assert_uint_eq(r.nactors, 3);
    ck_assert_uint_eq(r.violations, 1);
    ck_assert_int_eq(r.actors[0].verdict, CHAOS_LIN_OK);
    ck_assert_int_eq(r.actors[1].verdict, CHAOS_LIN_VIOLATION);
    ck_assert_int_eq(r.actors[2].verdict, CHAOS_LIN_OK);
    chaos_lin_print(stderr, &h, &r, 3);
    chaos_lin_result_free(&r);
}
END_TEST

/* With a bound on the configurations, a search that needs more is
 * undecided rather than wrong. */
START_TEST(bounded_search_undecided)
{
    chaos_lin_opts o = {.max_states = 3};
    chaos_lin_actor a;
    int k;

    for (k = 0; k < 6; k++) {
        char v[16];
        snprintf(v, sizeof v, "\"%d\"", k);
        hb_op(&h, 1, "write", v, "ok", "null");
    }
    ck_assert_int_eq(chaos_lin_check_actor(&h, 0, &o, &a), 0);
    ck_assert_int_eq(a.verdict, CHAOS_LIN_UNDECIDED);
    /* Undecided after as many configurations as it was allowed, not
     * one more (--max-states 3: "undecided after 3 configurations"). */
    ck_assert_uint_eq(a.states, 3);
    chaos_lin_actor_free(&a);
    o.max_states = 5;
    ck_assert_int_eq(chaos_lin_check_actor(&h, 0, &o, &a), 0);
    ck_assert_int_eq(a.verdict, CHAOS_LIN_UNDECIDED);
    ck_assert_uint_eq(a.states, 5);
    chaos_lin_actor_free(&a);
    /* Six writes in a row need six: a bound of six decides them. */
    o.max_states = 6;
    ck_assert_int_eq(chaos_lin_check_actor(&h, 0, &o, &a), 0);
    ck_assert_int_eq(a.verdict, CHAOS_LIN_OK);
    ck_assert_uint_eq(a.states, 6);
    chaos_lin_actor_free(&a);
}
END_TEST

/* ---------------------------------------------- a simulated large run */

/* A concurrent execution simulated with a seeded generator: clients pick
 * actors and operations at random; each operation takes effect at one
 * instant inside its interval (an info one possibly after its client
 * gave up, or never; a failed one never), on a true state, which gives
 * the results. Written with the writer and read back, so the history is
 * linearizable by construction and goes through both. */

#define SIM_ACTORS 20
#define SIM_CLIENTS 32
#define SIM_OPS 10000

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint64_t below(uint64_t n)
{
    return rnd() % n;
}

struct sim_op {
    int client, actor;
    chaos_fn fn;
    chaos_type outcome;
    int64_t inv, ret, at; /* at < 0: never takes effect */
    int64_t n;            /* incr amount */
    char a[16], b[16];    /* write value, cas old/new, added element */
    int cast;             /* incr whose value is not learnt */
    int final;
    /* results */
    char r[16];
    int64_t ri;
    int rb;
    char **set;
    size_t nset;
};

struct sim_actor {
    chaos_family fam;
    char name[32];
    char reg[16];
    int64_t ctr;
    char **elems;
    size_t nelems;
};

static struct sim_op *ops;
static size_t nops;
static struct sim_actor actors[SIM_ACTORS];

static void sim_pick(struct sim_op *o, uint64_t *elem_seq)
{
    const char *vals = "01234";
    struct sim_actor *a = &actors[o->actor];
    uint64_t p = below(100);

    switch (a->fam) {
    case CHAOS_REGISTER:
        if (p < 45) {
            o->fn = CHAOS_READ;
        } else if (p < 80) {
            o->fn = CHAOS_WRITE;
            snprintf(o->a, sizeof o->a, "%c", vals[below(5)]);
        } else {
            o->fn = CHAOS_CAS;
            snprintf(o->a, sizeof o->a, "%c", vals[below(5)]);
            snprintf(o->b, sizeof o->b, "%c", vals[below(5)]);
        }
        break;
    case CHAOS_COUNTER:
        if (p < 40) {
            o->fn = CHAOS_GET;
        } else {
            o->fn = CHAOS_INCR;
            o->n = (int64_t)below(5) - 1;
            o->cast = below(10) == 0;
        }
        break;
    default:
        if (p < 40) {
            o->fn = CHAOS_READ_SET;
        } else {
            o->fn = CHAOS_ADD;
            snprintf(o->a, sizeof o->a, "e%llu",
                     (unsigned long long)(*elem_seq)++);
        }
    }
}

static int cmp_at(const void *x, const void *y)
{
    const struct sim_op *a = *(const struct sim_op *const *)x,
                        *b = *(const struct sim_op *const *)y;

    return a->at < b->at ? -1 : a->at > b->at;
}

static void sim_apply(struct sim_op *o)
{
    struct sim_actor *a = &actors[o->actor];
    size_t k;

    switch (o->fn) {
    case CHAOS_READ:
        snprintf(o->r, sizeof o->r, "%s", a->reg);
        break;
    case CHAOS_WRITE:
        snprintf(a->reg, sizeof a->reg, "%s", o->a);
        break;
    case CHAOS_CAS:
        o->rb = strcmp(a->reg, o->a) == 0;
        if (o->rb)
            snprintf(a->reg, sizeof a->reg, "%s", o->b);
        break;
    case CHAOS_INCR:
        a->ctr += o->n;
        o->ri = a->ctr;
        break;
    case CHAOS_GET:
        o->ri = a->ctr;
        break;
    case CHAOS_ADD:
        a->elems = realloc(a->elems, (a->nelems + 1) * sizeof *a->elems);
        a->elems[a->nelems++] = o->a;
        break;
    default:
        o->set = malloc((a->nelems + 1) * sizeof *o->set);
        for (k = 0; k < a->nelems; k++)
            o->set[k] = a->elems[k];
        o->nset = a->nelems;
    }
}

/* Generates the run into ops[]. Every actor ends with a final read,
 * after everything else took effect. */
static void simulate(void)
{
    int64_t free_at[SIM_CLIENTS], end = 0;
    struct sim_op **by_at;
    uint64_t elem_seq = 0;
    size_t k, main_ops = SIM_OPS - SIM_ACTORS;
    int c;

    memset(actors, 0, sizeof actors);
    for (k = 0; k < SIM_ACTORS; k++) {
        actors[k].fam = (chaos_family)(k % 3);
        snprintf(actors[k].name, sizeof actors[k].name, "%s/a%zu",
                 actors[k].fam == CHAOS_REGISTER  ? "register"
                 : actors[k].fam == CHAOS_COUNTER ? "counter"
                                                  : "kv",
                 k);
    }
    ops = calloc(SIM_OPS, sizeof *ops);
    for (c = 0; c < SIM_CLIENTS; c++)
        free_at[c] = (int64_t)below(1000);
    for (nops = 0; nops < main_ops; nops++) {
        struct sim_op *o = &ops[nops];
        uint64_t p = below(100);
        /* The client that is free first goes next. */
        int best = 0;
        for (c = 1; c < SIM_CLIENTS; c++)
            if (free_at[c] < free_at[best])
                best = c;
        o->client = best;
        o->actor = (int)below(SIM_ACTORS);
        sim_pick(o, &elem_seq);
        o->inv = free_at[best] + 1 + (int64_t)below(50);
        o->ret = o->inv + 2 + (int64_t)below(below(10) == 0 ? 3000 : 300);
        o->at = o->inv + 1 + (int64_t)below((uint64_t)(o->ret - o->inv - 1));
        if (p < 4) {
            o->outcome = CHAOS_FAIL;
            o->at = -1;
        } else if (p < 14) {
            o->outcome = CHAOS_INFO;
            if (below(2) == 0)
                o->at = -1;
            else
                o->at = o->inv + 1 + (int64_t)below(2000); /* maybe later */
        } else {
            o->outcome = CHAOS_OK;
        }
        free_at[best] = o->ret;
        if (o->ret > end)
            end = o->ret;
        if (o->at > end)
            end = o->at;
    }
    for (k = 0; k < SIM_ACTORS; k++, nops++) {
        struct sim_op *o = &ops[nops];
        struct sim_actor *a = &actors[k];
        o->client = (int)(k % SIM_CLIENTS);
        o->actor = (int)k;
        o->fn = a->fam == CHAOS_REGISTER  ? CHAOS_READ
                : a->fam == CHAOS_COUNTER ? CHAOS_GET
                                          : CHAOS_READ_SET;
        o->outcome = CHAOS_OK;
        o->final = 1;
        o->inv = end + 10 + 10 * (int64_t)k;
        o->at = o->inv + 1;
        o->ret = o->inv + 2;
    }
    by_at = malloc(nops * sizeof *by_at);
    for (k = 0; k < nops; k++)
        by_at[k] = &ops[k];
    qsort(by_at, nops, sizeof *by_at, cmp_at);
    for (k = 0; k < nops; k++)
        if (by_at[k]->at >= 0)
            sim_apply(by_at[k]);
    free(by_at);
}

static void sim_free(void)
{
    size_t k;

    for (k = 0; k < nops; k++)
        free(ops[k].set);
    for (k = 0; k < SIM_ACTORS; k++)
        free(actors[k].elems);
    free(ops);
    ops = NULL;
    nops = 0;
}

struct sim_ev {
    int64_t t;
    size_t op;
    int ret;
};

static int cmp_ev(const void *x, const void *y)
{
    const struct sim_ev *a = x, *b = y;

    if (a->t != b->t)
        return a->t < b->t ? -1 : 1;
    if (a->ret != b->ret)
        return a->ret ? -1 : 1;
    return a->op < b->op ? -1 : a->op > b->op;
}

/* Writes the simulated run; a read of a register whose number is
 * `corrupt` (if any) returns a value nobody wrote. */
static void sim_write(const char *path, size_t corrupt)
{
    struct sim_ev *evs = malloc(2 * nops * sizeof *evs);
    chaos_hwriter w;
    size_t k, n = 0, reads = 0;
    char err[256];
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(f);
    for (k = 0; k < nops; k++) {
        evs[n].t = ops[k].inv;
        evs[n].op = k;
        evs[n++].ret = 0;
        evs[n].t = ops[k].ret;
        evs[n].op = k;
        evs[n++].ret = 1;
    }
    qsort(evs, n, sizeof *evs, cmp_ev);
    chaos_hwriter_init(&w, f);
    for (k = 0; k < n; k++) {
        struct sim_op *o = &ops[evs[k].op];
        chaos_event e;
        const char *cas[2];
        memset(&e, 0, sizeof e);
        e.t = evs[k].ret ? o->outcome : CHAOS_INVOKE;
        e.client = o->client;
        e.actor = actors[o->actor].name;
        e.op = o->fn;
        e.time_ns = evs[k].t * 1000;
        e.final = o->final;
        switch (o->fn) {
        case CHAOS_WRITE:
        case CHAOS_ADD:
            e.args.type = CHAOS_V_STR;
            e.args.s = o->a;
            break;
        case CHAOS_CAS:
            cas[0] = o->a;
            cas[1] = o->b;
            e.args.type = CHAOS_V_STRS;
            e.args.strs = cas;
            e.args.n = 2;
            break;
        case CHAOS_INCR:
            e.args.type = CHAOS_V_INT;
            e.args.i = o->n;
            break;
        default:
            break;
        }
        if (e.t == CHAOS_OK) {
            switch (o->fn) {
            case CHAOS_READ:
                e.result.type = CHAOS_V_STR;
                e.result.s = o->r;
                if (reads++ == corrupt)
                    e.result.s = "never written";
                break;
            case CHAOS_CAS:
                e.result.type = CHAOS_V_BOOL;
                e.result.b = o->rb;
                break;
            case CHAOS_INCR:
                if (!o->cast) {
                    e.result.type = CHAOS_V_INT;
                    e.result.i = o->ri;
                }
                break;
            case CHAOS_GET:
                e.result.type = CHAOS_V_INT;
                e.result.i = o->ri;
                break;
            case CHAOS_READ_SET:
                e.result.type = CHAOS_V_STRS;
                e.result.strs = (const char *const *)o->set;
                e.result.n = o->nset;
                break;
            default:
                break;
            }
        }
        if (e.t == CHAOS_INFO)
            e.error = "ETIMEDOUT";
        ck_assert_msg(chaos_hwriter_write(&w, &e, err, sizeof err) == 0,
                      "%s", err);
    }
    chaos_hwriter_close(&w);
    fclose(f);
    free(evs);
}

static double seconds(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

START_TEST(simulated_10k_ops_20_actors)
{
    char *dir = tu_tmpdir("chaos-lin"), path[512], err[512];
    chaos_lost_result lost;
    chaos_lin_result r;
    double t0, t1;
    size_t k;

    snprintf(path, sizeof path, "%s/history.jsonl", dir);
    simulate();
    sim_write(path, SIZE_MAX);
    ck_assert_int_eq(chaos_history_read(&h, path, err, sizeof err), 0);
    ck_assert_uint_eq(h.nops, SIM_OPS);
    ck_assert_uint_eq(h.nactors, SIM_ACTORS);
    t0 = seconds();
    ck_assert_int_eq(chaos_lin_check(&h, NULL, &r), 0);
    t1 = seconds();
    chaos_lin_print(stderr, &h, &r, 3);
    ck_assert_uint_eq(r.violations, 0);
    ck_assert_uint_eq(r.undecided, 0);
    for (k = 0; k < r.nactors; k++)
        ck_assert_int_eq(r.actors[k].verdict, CHAOS_LIN_OK);
    fprintf(stderr, "simulated run: %zu operations, %zu actors, %zu clients: "
                    "linearizable, checked in %.3f s (%llu configurations)\n",
            h.nops, h.nactors, h.nclients, t1 - t0,
            (unsigned long long)r.states);
    /* A generous bound, for sanitizer builds on a loaded machine; the
     * verdict is what the test asserts. */
    ck_assert_msg(t1 - t0 < 60, "took %.1f s", t1 - t0);
    chaos_lin_result_free(&r);
    /* Every actor was read at the end: nothing acknowledged is lost. */
    ck_assert_int_eq(chaos_lost_check(&h, &lost, err, sizeof err), 0);
    ck_assert_uint_eq(lost.finals, SIM_ACTORS);
    ck_assert_uint_eq(lost.actors_read, SIM_ACTORS);
    ck_assert_uint_eq(lost.nfound, 0);
    chaos_lost_result_free(&lost);

    /* The same run with one register read that returns a value nobody
     * wrote: found, on that register alone. */
    chaos_history_free(&h);
    chaos_history_init(&h);
    sim_write(path, 200);
    ck_assert_int_eq(chaos_history_read(&h, path, err, sizeof err), 0);
    t0 = seconds();
    ck_assert_int_eq(chaos_lin_check(&h, NULL, &r), 0);
    t1 = seconds();
    chaos_lin_print(stderr, &h, &r, 3);
    ck_assert_uint_eq(r.violations, 1);
    for (k = 0; k < r.nactors; k++)
        if (r.actors[k].verdict == CHAOS_LIN_VIOLATION) {
            const chaos_op *op = &h.ops[r.actors[k].prefix_end];
            ck_assert_int_eq(op->fn, CHAOS_READ);
            ck_assert_str_eq(op->result.s, "never written");
        }
    fprintf(stderr, "with one corrupt read: found in %.3f s\n", t1 - t0);
    chaos_lin_result_free(&r);
    sim_free();
    tu_rmrf(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("chaos_lin");
    TCase *reg = tcase_create("register"), *ctr = tcase_create("counter"),
          *set = tcase_create("set"), *his = tcase_create("history");

    tcase_add_checked_fixture(reg, setup, teardown);
    tcase_add_test(reg, register_sequential);
    tcase_add_test(reg, register_concurrent);
    tcase_add_test(reg, register_stale_read);
    tcase_add_test(reg, register_lost_write);
    tcase_add_test(reg, register_value_never_written);
    tcase_add_test(reg, register_cas_both_succeed);
    tcase_add_test(reg, register_cas_false_failure);
    tcase_add_test(reg, register_cas_race);
    tcase_add_test(reg, register_info_takes_effect_later);
    tcase_add_test(reg, register_info_never);
    tcase_add_test(reg, register_info_twins);
    tcase_add_test(reg, register_fail_did_not_happen);
    suite_add_tcase(s, reg);

    tcase_add_checked_fixture(ctr, setup, teardown);
    tcase_add_test(ctr, counter_concurrent);
    tcase_add_test(ctr, counter_duplicate_incr);
    tcase_add_test(ctr, counter_same_result_twice);
    tcase_add_test(ctr, counter_info);
    tcase_add_test(ctr, counter_info_twins);
    tcase_add_test(ctr, counter_overflow_refused);
    suite_add_tcase(s, ctr);

    tcase_add_checked_fixture(set, setup, teardown);
    tcase_add_test(set, set_concurrent);
    tcase_add_test(set, set_info_adds);
    tcase_add_test(set, set_element_disappears);
    tcase_add_test(set, set_phantom_and_repeated_elements);
    tcase_add_test(set, set_refusal_names_elements);
    suite_add_tcase(s, set);

    tcase_add_checked_fixture(his, setup, teardown);
    tcase_add_test(his, actors_checked_apart);
    tcase_add_test(his, bounded_search_undecided);
    tcase_add_test(his, simulated_10k_ops_20_actors);
    tcase_set_timeout(his, 240);
    suite_add_tcase(s, his);
    return tu_run_suite(s);
}
