/* Deadlines of forwarded calls, with a real ZooKeeper and real keeld
 * processes: calls sent through node n0 to a counter owned by n1 while n1
 * is paused (SIGSTOP) wait in n1's socket. Their deadline is set where
 * they entered (n0's hold bound), so n0 answers each within that bound
 * (ETIMEDOUT: it may have run; EDEADLINE: it did not) while n1 is still
 * paused; and when n1 resumes it does not run them: they were past their
 * deadline, counted from before the pause, not from when n1 read them.
 * The counter ends at the number of increments acknowledged. n1's kernel
 * took the frames (acknowledged them) although n1 did not read them: n0
 * resets no link for them (peer_resets stays 0), as a link to a slow but
 * reachable owner is healthy; and it logs the answers n1 sends for them
 * once it resumes (EDEADLINE), late as they are.
 * Every wait is bounded. On a failure the nodes' logs are printed. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"
#include "zk.h"

#define NODES 2
#define STALLED 20
#define HOLD_MS 1500
#define HOLD_MS_S "1500"
/* Above the hold bound plus slack, below the owner's pause: a caller that
 * waits this long and has no answer gives up. */
#define CALLER_TIMEOUT_MS 3000
#define PAUSE_MS 6000

static tu_cluster fx;

static void setup(void)
{
    tu_cluster_setup(&fx, "cldead", "cd");
    fx.session_ms = 4000;
}

static void teardown(void)
{
    tu_cluster_teardown(&fx, SIGTERM);
}

/* Node i on port `port` (0: any), its data in dir/n<i>, with a hold
 * bound (the budget of every call that enters the cluster there) of
 * HOLD_MS. */
static void start_node(int i, int port)
{
    ck_assert_int_eq(tu_cluster_start_node(&fx, i, port, "--hold-timeout",
                                           HOLD_MS_S, NULL),
                     0);
}

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)


START_TEST(paused_owner_runs_no_stalled_call)
{
    keel_client *cl, *q;
    char id[32] = "";
    int i, tries, rc, acked = 0, answered = 0, timedout = 0, notrun = 0;
    keel_frame f;
    long value = -1;

    start_node(0, 0);
    start_node(1, 0);
    tu_cluster_counter_owned_by(&fx, 0, "d", "n1", id, sizeof id);
    CHECK(id[0] != '\0', "no counter owned by n1");
    ck_assert_int_eq(keel_client_connect(fx.nodes[0].addr, 30000, &cl), 0);
    acked = tu_cluster_incr_from_one(cl, id, 5);
    CHECK(acked == 5, "the counter is not served through n0 (%d)", acked);

    /* n1 pauses; STALLED increments go to it through n0 and wait in its
     * socket. */
    ck_assert_int_eq(kill(fx.nodes[1].pid, SIGSTOP), 0);
    ck_assert_int_eq(keel_client_connect(fx.nodes[0].addr, CALLER_TIMEOUT_MS,
                                         &q),
                     0);
    for (i = 0; i < STALLED; i++)
        ck_assert_int_eq(keel_client_queue(q, KEEL_FRAME_CALL,
                                           (uint64_t)(i + 1), "counter", id,
                                           strlen(id), "incr", 4),
                         0);
    ck_assert_int_eq(keel_client_flush(q), 0);
    /* n0 answers each within the call's budget, with n1 still paused. */
    for (answered = 0; answered < STALLED; answered++) {
        int code;
        rc = keel_client_recv(q, &f);
        if (rc != 0)
            break;
        CHECK(f.kind == KEEL_FRAME_ERROR,
              "a call to a paused owner succeeded (kind %d)", f.kind);
        code = keel_error_body_parse(f.body, f.body_len, NULL, NULL);
        CHECK(code == KEEL_ETIMEDOUT || code == KEEL_EDEADLINE ||
                  code == KEEL_EUNAVAIL,
              "a call to a paused owner failed with %s",
              keel_err_name(code));
        if (code == KEEL_ETIMEDOUT)
            timedout++;
        else
            notrun++;
    }
    keel_client_close(q); /* its caller gives up (and might send again) */
    tu_sleep_ms(PAUSE_MS);
    ck_assert_int_eq(kill(fx.nodes[1].pid, SIGCONT), 0);
    fprintf(stderr,
            "deadline: %d of %d stalled calls answered while the owner was "
            "paused (%d may have run, %d did not)\n",
            answered, STALLED, timedout, notrun);

    /* n1 serves again (after a fence or a new session); the stalled
     * increments did not run. */
    value = tu_cluster_counter_over(cl, id, 600);
    CHECK(value >= 0, "the counter is not served after n1 resumed");
    CHECK(value == acked,
          "the counter is %ld, but %d increments were acknowledged: %ld "
          "stalled call(s) ran after their callers gave up",
          value, acked, value - acked);
    CHECK(tu_keel_stat(fx.nodes[0].addr, "peer_resets") == 0,
          "n0 reset its link to the paused owner, whose kernel took the "
          "frames");
    for (tries = 0; tries < 50; tries++) {
        char *log = tu_keeld_log(&fx.nodes[0]);
        int seen = log != NULL &&
                   strstr(log, "late answer to request ") != NULL &&
                   strstr(log, "answered at its deadline: EDEADLINE") != NULL;
        free(log);
        if (seen)
            break;
        tu_sleep_ms(100);
    }
    CHECK(tries < 50, "n0 did not log the late answers of the paused owner");
    CHECK(answered == STALLED,
          "only %d of %d calls to the paused owner were answered within "
          "%d ms (the hold bound is %d ms)",
          answered, STALLED, CALLER_TIMEOUT_MS, HOLD_MS);
    keel_client_close(cl);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_deadline");
    TCase *tc = tcase_create("cluster_deadline");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, paused_owner_runs_no_stalled_call);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
