/* What keel-chaos run decides without a cluster: the fault schedule
 * (chaos/schedule.c: the seed alone makes it, faults never overlap and
 * are healed before the end), and the workload (chaos/workload.c: keel
 * messages, replies as history results, error codes as outcomes). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chaos/cluster.h"
#include "chaos/hwriter.h"
#include "chaos/schedule.h"
#include "chaos/workload.h"
#include "keel.h"
#include "testutil.h"

static chaos_sched_opts sopts(uint64_t seed, unsigned kinds)
{
    chaos_sched_opts o;

    memset(&o, 0, sizeof o);
    o.seed = seed;
    o.seconds = 120;
    o.nodes = 3;
    o.session_ms = 2000;
    o.kinds = kinds;
    return o;
}

START_TEST(faults_parse)
{
    unsigned k;
    char err[256];

    ck_assert_int_eq(chaos_faults_parse("kill,stop,zk", &k, err, sizeof err),
                     0);
    ck_assert_uint_eq(k, (1u << CHAOS_F_KILL) | (1u << CHAOS_F_STOP) |
                             (1u << CHAOS_F_ZK));
    ck_assert_int_eq(chaos_faults_parse("all", &k, err, sizeof err), 0);
    ck_assert_uint_eq(k, (1u << CHAOS_F_COUNT) - 1);
    ck_assert_int_eq(chaos_faults_parse("none", &k, err, sizeof err), 0);
    ck_assert_uint_eq(k, 0);
    ck_assert_int_eq(chaos_faults_parse("partition", &k, err, sizeof err), 0);
    ck_assert_uint_eq(k, 1u << CHAOS_F_PARTITION);
    ck_assert_int_eq(chaos_faults_parse("disk-full,zk", &k, err, sizeof err),
                     0);
    ck_assert_uint_eq(k, (1u << CHAOS_F_DISKFULL) | (1u << CHAOS_F_ZK));
    ck_assert_int_eq(chaos_faults_parse("wipe,kill", &k, err, sizeof err), 0);
    ck_assert_uint_eq(k, (1u << CHAOS_F_WIPE) | (1u << CHAOS_F_KILL));
    ck_assert_str_eq(chaos_fault_name(CHAOS_F_WIPE), "wipe");
    ck_assert_int_eq(chaos_faults_parse("zk-stop,zk", &k, err, sizeof err),
                     0);
    ck_assert_uint_eq(k, (1u << CHAOS_F_ZKSTOP) | (1u << CHAOS_F_ZK));
    ck_assert_str_eq(chaos_fault_name(CHAOS_F_ZKSTOP), "zk-stop");
    ck_assert_int_eq(chaos_faults_parse("kill,bogus", &k, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "bogus"));
    ck_assert_int_eq(chaos_faults_parse("kil", &k, err, sizeof err),
                     KEEL_EINVAL);
}
END_TEST

START_TEST(schedule_is_the_seeds)
{
    chaos_sched_opts o = sopts(42, (1u << CHAOS_F_COUNT) - 1);
    chaos_fault *a, *b;
    size_t na, nb, k, differ = 0;
    int seen[CHAOS_F_COUNT] = {0};

    ck_assert_int_eq(chaos_schedule_make(&o, &a, &na), 0);
    ck_assert_int_eq(chaos_schedule_make(&o, &b, &nb), 0);
    ck_assert_uint_gt(na, 5);
    ck_assert_uint_eq(na, nb);
    ck_assert_int_eq(memcmp(a, b, na * sizeof *a), 0);
    for (k = 0; k < na; k++) {
        seen[a[k].kind] = 1;
        /* One at a time, a pause between two, all healed 12 s before
         * the end (a tenth of 120 s). */
        ck_assert_int_ge(a[k].at_ms, 12000);
        ck_assert_int_le(a[k].at_ms + a[k].dur_ms, 108000);
        if (k > 0)
            ck_assert_int_ge(a[k].at_ms,
                             a[k - 1].at_ms + a[k - 1].dur_ms + 2000);
        if (a[k].kind == CHAOS_F_STOP)
            ck_assert_int_gt(a[k].dur_ms, o.session_ms);
        if (a[k].kind == CHAOS_F_WIPE) /* down 1 to 4 s, as a kill */
            ck_assert(a[k].dur_ms >= 1000 && a[k].dur_ms <= 4000);
        if (a[k].kind == CHAOS_F_ZKSTOP) /* around a session timeout */
            ck_assert(a[k].dur_ms >= o.session_ms / 2 &&
                      a[k].dur_ms <= o.session_ms * 5 / 2);
        if (a[k].kind == CHAOS_F_PAIR) {
            /* another node, stopped within the first one's session
             * timeout and for longer than its own */
            ck_assert(a[k].node2 >= 0 && a[k].node2 < 3);
            ck_assert_int_ne(a[k].node2, a[k].node);
            ck_assert(a[k].gap_ms >= 300 &&
                      a[k].gap_ms <= o.session_ms * 3 / 4);
            ck_assert_int_gt(a[k].dur_ms - a[k].gap_ms, o.session_ms);
        } else {
            ck_assert_int_eq(a[k].node2, -1);
        }
        if (a[k].kind == CHAOS_F_KILL || a[k].kind == CHAOS_F_STOP ||
            a[k].kind == CHAOS_F_DRAIN || a[k].kind == CHAOS_F_PARTITION ||
            a[k].kind == CHAOS_F_DISKFULL || a[k].kind == CHAOS_F_WIPE ||
            a[k].kind == CHAOS_F_PAIR)
            ck_assert(a[k].node >= 0 && a[k].node < 3);
        else
            ck_assert_int_eq(a[k].node, -1);
    }
    /* Every kind asked for comes before any comes twice. */
    for (k = 0; k < CHAOS_F_COUNT; k++)
        ck_assert_msg(seen[k], "no %s fault",
                      chaos_fault_name((chaos_fault_kind)k));
    for (k = 0; k < CHAOS_F_COUNT && k < na; k++) {
        size_t j;
        for (j = 0; j < k; j++)
            ck_assert_int_ne(a[j].kind, a[k].kind);
    }
    free(b);

    /* Another seed, another schedule. */
    o.seed = 43;
    ck_assert_int_eq(chaos_schedule_make(&o, &b, &nb), 0);
    differ = nb != na;
    for (k = 0; k < na && k < nb; k++)
        differ += a[k].kind != b[k].kind || a[k].at_ms != b[k].at_ms;
    ck_assert_uint_gt(differ, 0);
    free(a);
    free(b);

    /* A pair needs a third node to serve: with two it is left out of
     * the schedule (the run says so before it starts), not planned and
     * then skipped. */
    o.seed = 42;
    o.nodes = 2;
    o.kinds = 1u << CHAOS_F_PAIR;
    ck_assert_uint_eq(chaos_faults_possible(2) & o.kinds, 0);
    ck_assert_uint_eq(chaos_faults_possible(3) & o.kinds, o.kinds);
    ck_assert_int_eq(chaos_schedule_make(&o, &b, &nb), 0);
    ck_assert_uint_eq(nb, 0);
    o.kinds = (1u << CHAOS_F_PAIR) | (1u << CHAOS_F_KILL);
    ck_assert_int_eq(chaos_schedule_make(&o, &b, &nb), 0);
    ck_assert_uint_gt(nb, 0);
    for (k = 0; k < nb; k++)
        ck_assert_int_eq(b[k].kind, CHAOS_F_KILL);
    free(b);
    o.nodes = 3;

    /* No faults, or a run too short for any. */
    o.kinds = 0;
    ck_assert_int_eq(chaos_schedule_make(&o, &a, &na), 0);
    ck_assert_uint_eq(na, 0);
    o.kinds = 1u << CHAOS_F_KILL;
    o.seconds = 4;
    ck_assert_int_eq(chaos_schedule_make(&o, &a, &na), 0);
    ck_assert_uint_eq(na, 0);
    o.nodes = 0;
    ck_assert_int_eq(chaos_schedule_make(&o, &a, &na), KEEL_EINVAL);
}
END_TEST

/* Every operation a client draws is one the history writer takes, with
 * a keel message of the built-in types. */
/* With an ensemble: with-zk-server partitions are dealt, each naming the
 * server it cuts (or the leader); with one server, never, and asking for
 * that shape alone is refused. --partitions narrows the shapes. */
START_TEST(schedule_with_an_ensemble)
{
    chaos_sched_opts o = sopts(7, (1u << CHAOS_F_PARTITION) |
                                      (1u << CHAOS_F_ZK) |
                                      (1u << CHAOS_F_ZKSTOP));
    chaos_fault *a;
    size_t na, k;
    int with_zk = 0, leader = 0, named = 0;
    unsigned shapes;
    char err[128];

    o.zk_servers = 3;
    o.seconds = 600;
    ck_assert_int_eq(chaos_schedule_make(&o, &a, &na), 0);
    for (k = 0; k < na; k++) {
        ck_assert(a[k].zk >= -1 && a[k].zk <= 2);
        if (a[k].kind == CHAOS_F_PARTITION &&
            a[k].variant == CHAOS_P_WITH_ZK)
            with_zk++;
        if (a[k].zk == -1)
            leader++;
        else if (a[k].zk > 0)
            named++;
    }
    ck_assert_int_gt(with_zk, 0);
    ck_assert_int_gt(leader, 0);
    ck_assert_int_gt(named, 0);
    free(a);

    ck_assert_int_eq(chaos_shapes_parse("with-zk-server", &shapes, err,
                                        sizeof err),
                     0);
    ck_assert_uint_eq(shapes, 1u << CHAOS_P_WITH_ZK);
    o.shapes = shapes;
    ck_assert_int_eq(chaos_schedule_make(&o, &a, &na), 0);
    ck_assert_uint_gt(na, 0);
    for (k = 0; k < na; k++)
        if (a[k].kind == CHAOS_F_PARTITION)
            ck_assert_int_eq(a[k].variant, CHAOS_P_WITH_ZK);
    free(a);

    /* One server: that shape cannot be made, the others are drawn as
     * before. */
    o.zk_servers = 1;
    ck_assert_int_eq(chaos_schedule_make(&o, &a, &na), KEEL_EINVAL);
    o.shapes = 0;
    ck_assert_int_eq(chaos_schedule_make(&o, &a, &na), 0);
    for (k = 0; k < na; k++) {
        ck_assert_int_ne(a[k].variant, CHAOS_P_WITH_ZK);
        ck_assert_int_eq(a[k].zk, 0);
    }
    free(a);

    ck_assert_int_eq(chaos_shapes_parse("all", &shapes, err, sizeof err), 0);
    ck_assert_uint_eq(shapes, 0);
    ck_assert_int_eq(chaos_shapes_parse("majority,from-zk", &shapes, err,
                                        sizeof err),
                     0);
    ck_assert_uint_eq(shapes,
                      (1u << CHAOS_P_MAJORITY) | (1u << CHAOS_P_FROM_ZK));
    ck_assert_int_eq(chaos_shapes_parse("with-zk", &shapes, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "'with-zk'"));
}
END_TEST

START_TEST(operations_write_and_parse)
{
    static const chaos_workload ws[] = {CHAOS_W_REGISTER, CHAOS_W_COUNTER,
                                        CHAOS_W_SET, CHAOS_W_MIXED};
    char *buf = NULL, err[256];
    size_t len = 0, w, n;
    FILE *f = open_memstream(&buf, &len);
    chaos_hwriter hw;
    int seen[CHAOS_FN_COUNT] = {0};

    ck_assert_ptr_nonnull(f);
    chaos_hwriter_init(&hw, f);
    for (w = 0; w < 4; w++) {
        chaos_rng r;
        chaos_rng_seed(&r, w);
        for (n = 0; n < 400; n++) {
            chaos_wop op;
            chaos_event e;
            char name[128];
            /* Actors named per workload: the writer refuses one actor
             * with two families, and counter/c1 of "counter" is
             * counter/c1 of "mixed" too. */
            chaos_wl wl = {ws[w], 6, NULL, 0};
            chaos_wl_next(&wl, (int)(n / 100), &r, (int)w, n, &op);
            seen[op.fn] = 1;
            snprintf(name, sizeof name, "%s-%zu", op.actor, w);
            ck_assert_ptr_eq(op.id, strchr(op.actor, '/') + 1);
            ck_assert_uint_eq(op.msg_len, strlen(op.msg));
            memset(&e, 0, sizeof e);
            e.t = CHAOS_INVOKE;
            e.client = 1;
            e.actor = name;
            e.op = op.fn;
            e.args = op.args;
            e.time_ns = (int64_t)(w * 1000 + n);
            ck_assert_msg(chaos_hwriter_write(&hw, &e, err, sizeof err) == 0,
                          "%s: %s", op.msg, err);
            e.t = CHAOS_INFO;
            ck_assert_msg(chaos_hwriter_write(&hw, &e, err, sizeof err) == 0,
                          "%s: %s", op.msg, err);
            switch (op.fn) {
            case CHAOS_READ:
                ck_assert_str_eq(op.msg, "read");
                ck_assert_str_eq(op.type, "register");
                break;
            case CHAOS_WRITE:
                ck_assert_int_eq(strncmp(op.msg, "write ", 6), 0);
                ck_assert_str_eq(op.msg + 6, op.args.s);
                break;
            case CHAOS_CAS: {
                char m[64];
                snprintf(m, sizeof m, "cas %s %s", op.args.strs[0],
                         op.args.strs[1]);
                ck_assert_str_eq(op.msg, m);
                break;
            }
            case CHAOS_INCR: {
                char m[64];
                snprintf(m, sizeof m, "incr %lld", (long long)op.args.i);
                ck_assert_str_eq(op.msg, m);
                ck_assert_str_eq(op.type, "counter");
                break;
            }
            case CHAOS_GET:
                ck_assert_str_eq(op.msg, "get");
                break;
            case CHAOS_ADD: {
                char m[64];
                snprintf(m, sizeof m, "put %s 1", op.args.s);
                ck_assert_str_eq(op.msg, m);
                ck_assert_str_eq(op.type, "kv");
                break;
            }
            case CHAOS_READ_SET:
                ck_assert_str_eq(op.msg, "keys");
                break;
            default:
                ck_abort_msg("op %d", op.fn);
            }
        }
    }
    for (n = 0; n < CHAOS_FN_COUNT; n++)
        ck_assert_msg(seen[n], "%s never drawn", chaos_fn_name((chaos_fn)n));
    chaos_hwriter_close(&hw);
    fclose(f);
    free(buf);
}
END_TEST

START_TEST(same_seed_same_operations)
{
    chaos_wl wl = {CHAOS_W_MIXED, 12, NULL, 0};
    chaos_rng a, b;
    int n;

    chaos_rng_seed(&a, 7);
    chaos_rng_seed(&b, 7);
    for (n = 0; n < 100; n++) {
        chaos_wop x, y;
        chaos_wl_next(&wl, 0, &a, 3, (uint64_t)n, &x);
        chaos_wl_next(&wl, 0, &b, 3, (uint64_t)n, &y);
        ck_assert_str_eq(x.actor, y.actor);
        ck_assert_str_eq(x.msg, y.msg);
    }
}
END_TEST

/* --refusals: that share of the increments is by 2^62 or -2^62, in the
 * message as in the history's argument; without it, none is. */
START_TEST(refusals_make_big_increments)
{
    chaos_wl plain = {CHAOS_W_COUNTER, 4, NULL, 0};
    chaos_wl big = {CHAOS_W_COUNTER, 4, NULL, 30};
    unsigned incrs = 0, bigs = 0, ups = 0, n;
    chaos_rng r;
    chaos_wop op;

    chaos_rng_seed(&r, 11);
    for (n = 0; n < 2000; n++) {
        chaos_wl_next(&plain, 0, &r, 1, n, &op);
        if (op.fn == CHAOS_INCR)
            ck_assert(op.args.i >= -5 && op.args.i <= 5);
    }
    for (n = 0; n < 2000; n++) {
        chaos_wl_next(&big, 0, &r, 1, n, &op);
        if (op.fn != CHAOS_INCR)
            continue;
        incrs++;
        if (op.args.i == CHAOS_WL_BIG) {
            bigs++;
            ups++;
            ck_assert_str_eq(op.msg, "incr 4611686018427387904");
        } else if (op.args.i == -CHAOS_WL_BIG) {
            bigs++;
            ck_assert_str_eq(op.msg, "incr -4611686018427387904");
        } else {
            ck_assert(op.args.i >= -5 && op.args.i <= 5);
        }
    }
    ck_assert_msg(bigs > incrs / 5 && bigs < incrs * 2 / 5, "%u of %u",
                  bigs, incrs);
    ck_assert(ups > 0 && ups < bigs);
}
END_TEST

START_TEST(final_reads)
{
    chaos_wl mixed = {CHAOS_W_MIXED, 12, NULL, 0};
    chaos_wl counter = {CHAOS_W_COUNTER, 12, NULL, 0};
    chaos_wl tally = {CHAOS_W_COUNTER, 12, "tally", 0};
    chaos_wop op;

    chaos_wl_final(&mixed, 0, 0, &op);
    ck_assert_str_eq(op.actor, "register/r0");
    ck_assert_int_eq(op.fn, CHAOS_READ);
    ck_assert_int_eq(op.final, 1);
    chaos_wl_final(&mixed, 4, 0, &op);
    ck_assert_str_eq(op.actor, "counter/c4");
    ck_assert_str_eq(op.msg, "get");
    chaos_wl_final(&mixed, 5, 0, &op);
    ck_assert_str_eq(op.actor, "kv/s5");
    ck_assert_str_eq(op.id, "s5");
    ck_assert_str_eq(op.msg, "keys");
    chaos_wl_final(&counter, 5, 0, &op);
    ck_assert_str_eq(op.actor, "counter/c5");
    /* Sets are taken afresh each generation; the others are not. */
    chaos_wl_final(&mixed, 5, 3, &op);
    ck_assert_str_eq(op.actor, "kv/s5.g3");
    ck_assert_str_eq(op.id, "s5.g3");
    chaos_wl_final(&mixed, 4, 3, &op);
    ck_assert_str_eq(op.actor, "counter/c4");
    /* A type of one's own speaking the counter's messages. */
    chaos_wl_final(&tally, 5, 0, &op);
    ck_assert_str_eq(op.actor, "tally/c5");
    ck_assert_str_eq(op.type, "tally");
    ck_assert_str_eq(op.id, "c5");
    ck_assert_str_eq(op.msg, "get");
}
END_TEST

static int result(chaos_fn fn, const char *reply, chaos_value *v,
                  const char ***strs, char *buf, size_t cap)
{
    chaos_wop op;

    memset(&op, 0, sizeof op);
    op.fn = fn;
    snprintf(buf, cap, "%s", reply);
    return chaos_wl_result(&op, buf, strlen(reply), v, strs);
}

START_TEST(replies)
{
    chaos_value v;
    const char **strs;
    char buf[64];

    ck_assert_int_eq(result(CHAOS_READ, "3", &v, &strs, buf, sizeof buf), 0);
    ck_assert_int_eq(v.type, CHAOS_V_STR);
    ck_assert_str_eq(v.s, "3");
    ck_assert_int_eq(result(CHAOS_READ, "", &v, &strs, buf, sizeof buf), 0);
    ck_assert_str_eq(v.s, "");
    ck_assert_int_eq(result(CHAOS_WRITE, "OK", &v, &strs, buf, sizeof buf),
                     0);
    ck_assert_int_eq(v.type, CHAOS_V_NULL);
    ck_assert_int_eq(result(CHAOS_CAS, "OK", &v, &strs, buf, sizeof buf), 0);
    ck_assert_int_eq(v.type, CHAOS_V_BOOL);
    ck_assert_int_eq(v.b, 1);
    ck_assert_int_eq(result(CHAOS_CAS, "FAILED", &v, &strs, buf, sizeof buf),
                     0);
    ck_assert_int_eq(v.b, 0);
    ck_assert_int_eq(result(CHAOS_CAS, "NO", &v, &strs, buf, sizeof buf),
                     KEEL_EPROTO);
    ck_assert_int_eq(result(CHAOS_INCR, "-17", &v, &strs, buf, sizeof buf),
                     0);
    ck_assert_int_eq(v.type, CHAOS_V_INT);
    ck_assert_int_eq(v.i, -17);
    ck_assert_int_eq(result(CHAOS_GET, "12x", &v, &strs, buf, sizeof buf),
                     KEEL_EPROTO);
    ck_assert_int_eq(result(CHAOS_GET, "", &v, &strs, buf, sizeof buf),
                     KEEL_EPROTO);
    ck_assert_int_eq(result(CHAOS_ADD, "OK", &v, &strs, buf, sizeof buf), 0);
    ck_assert_int_eq(result(CHAOS_READ_SET, "", &v, &strs, buf, sizeof buf),
                     0);
    ck_assert_int_eq(v.type, CHAOS_V_STRS);
    ck_assert_uint_eq(v.n, 0);
    free(strs);
    ck_assert_int_eq(
        result(CHAOS_READ_SET, "e1.0\ne2.5", &v, &strs, buf, sizeof buf), 0);
    ck_assert_uint_eq(v.n, 2);
    ck_assert_str_eq(v.strs[0], "e1.0");
    ck_assert_str_eq(v.strs[1], "e2.5");
    free(strs);
}
END_TEST

START_TEST(outcomes)
{
    /* docs/protocol.md, "Did it run?" */
    ck_assert_int_eq(chaos_wl_outcome(0), CHAOS_OK);
    ck_assert_int_eq(chaos_wl_outcome(KEEL_ENOTSENT), CHAOS_FAIL);
    ck_assert_int_eq(chaos_wl_outcome(KEEL_ESTOPPING), CHAOS_FAIL);
    ck_assert_int_eq(chaos_wl_outcome(KEEL_EUNAVAIL), CHAOS_FAIL);
    ck_assert_int_eq(chaos_wl_outcome(KEEL_EDEADLINE), CHAOS_FAIL);
    ck_assert_int_eq(chaos_wl_outcome(KEEL_EOVERLOAD), CHAOS_FAIL);
    ck_assert_int_eq(chaos_wl_outcome(KEEL_EBADMSG), CHAOS_FAIL);
    ck_assert_int_eq(chaos_wl_outcome(KEEL_ECONN), CHAOS_INFO);
    ck_assert_int_eq(chaos_wl_outcome(KEEL_ETIMEDOUT), CHAOS_INFO);
    ck_assert_int_eq(chaos_wl_outcome(KEEL_EINDOUBT), CHAOS_INFO);
    ck_assert_int_eq(chaos_wl_outcome(KEEL_EALREADY), CHAOS_INFO);
    /* A failed commit leaves the state as it was, keel says: fail, so
     * that a write that failed and still took effect is caught. */
    ck_assert_int_eq(chaos_wl_outcome(KEEL_ENOSPC), CHAOS_FAIL);
    ck_assert_int_eq(chaos_wl_outcome(KEEL_EIO), CHAOS_FAIL);
    ck_assert_int_eq(chaos_wl_outcome(KEEL_EPROTO), CHAOS_INFO);
}
END_TEST

/* --keyed: what may be sent again with its key, and what an operation
 * was once its attempts are over. */
START_TEST(keyed_outcomes)
{
    ck_assert(chaos_wl_retryable(KEEL_ECONN));
    ck_assert(chaos_wl_retryable(KEEL_ETIMEDOUT));
    ck_assert(chaos_wl_retryable(KEEL_EINDOUBT));
    ck_assert(chaos_wl_retryable(KEEL_EUNAVAIL));
    ck_assert(chaos_wl_retryable(KEEL_ENOTSENT));
    ck_assert(chaos_wl_retryable(KEEL_ESTOPPING));
    ck_assert(chaos_wl_retryable(KEEL_EDEADLINE));
    ck_assert(!chaos_wl_retryable(0));
    ck_assert(!chaos_wl_retryable(KEEL_EALREADY)); /* ran; reply gone */
    ck_assert(!chaos_wl_retryable(KEEL_EBADMSG));
    ck_assert(!chaos_wl_retryable(KEEL_ENOSPC));
    /* An answer is the first run's, whatever came before it. */
    ck_assert_int_eq(chaos_wl_keyed_outcome(0, 1), CHAOS_OK);
    /* "It did not run" after an attempt that may have: unknown. */
    ck_assert_int_eq(chaos_wl_keyed_outcome(KEEL_EUNAVAIL, 1), CHAOS_INFO);
    ck_assert_int_eq(chaos_wl_keyed_outcome(KEEL_ENOSPC, 1), CHAOS_INFO);
    ck_assert_int_eq(chaos_wl_keyed_outcome(KEEL_EUNAVAIL, 0), CHAOS_FAIL);
    ck_assert_int_eq(chaos_wl_keyed_outcome(KEEL_ETIMEDOUT, 0), CHAOS_INFO);
    ck_assert_int_eq(chaos_wl_keyed_outcome(KEEL_EALREADY, 0), CHAOS_INFO);
    /* A refusal is recorded under the key, as a reply is: every copy of
     * the request gets it, so it failed whatever came before it. */
    ck_assert_int_eq(chaos_wl_keyed_outcome(KEEL_EBADMSG, 1), CHAOS_FAIL);
    ck_assert_int_eq(chaos_wl_keyed_outcome(KEEL_ENOTFOUND, 1), CHAOS_FAIL);
    ck_assert_int_eq(chaos_wl_keyed_outcome(KEEL_EBADMSG, 0), CHAOS_FAIL);
}
END_TEST

/* The status of a child that exits with code, or (code < 0) is killed by
 * signal -code. */
static int child_status(int code)
{
    int status = 0;
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (code < 0)
            raise(-code);
        _exit(code);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return status;
}

/* A node that exits says how: its exit code or the signal, not the raw
 * wait status (256 for an exit with 1). */
START_TEST(wait_status_in_words)
{
    char buf[96];

    ck_assert_str_eq(chaos_wait_status(child_status(1), buf, sizeof buf),
                     "exit status 1");
    ck_assert_str_eq(chaos_wait_status(child_status(0), buf, sizeof buf),
                     "exit status 0");
    ck_assert_str_eq(chaos_wait_status(child_status(-SIGKILL), buf,
                                       sizeof buf),
                     "killed by signal 9 (Killed)");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("chaos_workload");
    TCase *tc = tcase_create("workload");

    tcase_add_test(tc, faults_parse);
    tcase_add_test(tc, keyed_outcomes);
    tcase_add_test(tc, refusals_make_big_increments);
    tcase_add_test(tc, schedule_is_the_seeds);
    tcase_add_test(tc, schedule_with_an_ensemble);
    tcase_add_test(tc, operations_write_and_parse);
    tcase_add_test(tc, same_seed_same_operations);
    tcase_add_test(tc, final_reads);
    tcase_add_test(tc, replies);
    tcase_add_test(tc, outcomes);
    tcase_add_test(tc, wait_status_in_words);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
