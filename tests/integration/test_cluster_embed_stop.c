/* An embedded cluster node that stops on its own tells its embedder why.
 *
 * Two nodes in this process against a real ZooKeeper server: the first
 * creates the cluster with 4 shards; the second, made with 8, cannot take
 * part and stops by itself. Started with keel_node_start, its embedder
 * learns the reason from keel_node_join (KEEL_ECONFIG), as one that ran
 * keel_node_run itself does from its return, and a call made while it
 * tried is answered KEEL_ESTOPPING with a text naming the reason; a node
 * stopped with keel_node_stop joins with 0.
 *
 * A blocking call with a deadline (keel_call_sync_timed) to a node that
 * holds it (fenced: ZooKeeper went away) returns at its deadline, and does
 * not run once the node serves again. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel.h"
#include "testutil.h"
#include "zk.h"

static char *dir;
static tu_zk zk;

static void setup(void)
{
    dir = tu_tmpdir("embed_stop");
}

static void teardown(void)
{
    tu_zk_stop(&zk);
    tu_rmrf(dir);
    free(dir);
}

static keel_node *cluster_node(const char *id, uint32_t shards)
{
    keel_node_options o;
    keel_node *n;
    char err[256], path[512];
    int rc;

    snprintf(path, sizeof path, "%s/%s", dir, id);
    keel_node_options_init(&o);
    o.data_dir = path;
    o.log_level = KEEL_LOG_ERROR;
    o.listen = "127.0.0.1:0";
    o.zk_hosts = zk.hosts;
    o.cluster = "embed";
    o.node_id = id;
    o.insecure = 1; /* a cluster node without credentials */
    o.shard_count = shards;
    o.zk_session_timeout_ms = 2000;
    /* A call held until the node fails, not until the bound. */
    o.hold_timeout_ms = 60000;
    rc = keel_node_create(&o, &n, err, sizeof err);
    ck_assert_msg(rc == 0, "create %s: %s %s", id, keel_strerror(rc), err);
    ck_assert_int_eq(keel_node_start(n), 0);
    return n;
}

/* Calls until the node serves: at most 30 s. */
static void until_served(keel_node *n)
{
    void *reply = NULL;
    size_t len;
    int rc = KEEL_EUNAVAIL, i;

    for (i = 0; i < 300 && rc != 0; i++) {
        rc = keel_call_sync(n, "counter", "c", 1, "incr", 4, &reply, &len);
        keel_free(reply);
        if (rc != 0)
            usleep(100000);
    }
    ck_assert_msg(rc == 0, "not served: %s", keel_err_name(rc));
}

/* ZooKeeper and a first node "a" (4 shards), served; NULL when the
 * ZooKeeper server is not installed (the test is skipped). */
static keel_node *first_node(void)
{
    keel_node *a;

    if (!tu_zk_available()) {
        fprintf(stderr, "SKIP: the ZooKeeper server is not installed\n");
        return NULL;
    }
    ck_assert_int_eq(tu_zk_start(&zk, 1, 200), 0);
    a = cluster_node("a", 4);
    until_served(a);
    return a;
}

START_TEST(join_says_why_the_node_stopped)
{
    keel_node *a, *b;

    a = first_node();
    if (a == NULL)
        return;
    /* The node refuses to join and its loop ends (within the test's
     * timeout: the join waits for it). */
    b = cluster_node("b", 8);
    {
        /* A call made meanwhile is not run, and its text says why. */
        void *reply = NULL;
        size_t len = 0;
        int rc = keel_call_sync(b, "counter", "c", 1, "incr", 4, &reply,
                                &len);
        ck_assert_msg(rc == KEEL_ESTOPPING, "the call was answered %s '%s'",
                      keel_err_name(rc),
                      reply != NULL ? (char *)reply : "(null)");
        ck_assert_msg(reply != NULL &&
                          strstr(reply, "cannot take part in its cluster "
                                        "(ECONFIG") != NULL,
                      "the call was answered '%s'",
                      reply != NULL ? (char *)reply : "(null)");
        keel_free(reply);
    }
    ck_assert_int_eq(keel_node_join(b), KEEL_ECONFIG);
    keel_node_destroy(b);

    keel_node_stop(a);
    ck_assert_int_eq(keel_node_join(a), 0);
    keel_node_destroy(a);
}
END_TEST

static void readiness_post(keel_node *n, void *data)
{
    __atomic_store_n((int *)data, keel_node_readiness(n, NULL),
                     __ATOMIC_RELEASE);
}

/* keel_node_readiness of n, read on its loop thread. */
static int readiness(keel_node *n)
{
    int r = 1000, i; /* 1000: not a KEEL_E* code */

    ck_assert_int_eq(keel_node_post(n, readiness_post, &r), 0);
    for (i = 0; i < 500 && __atomic_load_n(&r, __ATOMIC_ACQUIRE) == 1000;
         i++)
        usleep(10000);
    ck_assert_int_ne(__atomic_load_n(&r, __ATOMIC_ACQUIRE), 1000);
    return r;
}

static long counter_get(keel_node *n)
{
    void *reply = NULL;
    size_t len = 0;
    long v;
    int rc = keel_call_sync(n, "counter", "c", 1, "get", 3, &reply, &len);

    ck_assert_msg(rc == 0, "get: %s", keel_err_name(rc));
    v = strtol(reply, NULL, 10);
    keel_free(reply);
    return v;
}

START_TEST(a_timed_call_held_past_its_deadline_never_runs)
{
    keel_node *a;
    void *reply = NULL;
    size_t len = 0;
    long before;
    int rc, i;

    a = first_node();
    if (a == NULL)
        return;
    before = counter_get(a);
    ck_assert_int_eq(tu_zk_halt(&zk), 0);
    for (i = 0; i < 100 && readiness(a) == 0; i++)
        usleep(100000);
    ck_assert_msg(readiness(a) != 0, "the node still serves without "
                                     "ZooKeeper");
    /* Held (the hold bound is 60 s): answered at its deadline. Two
     * clocks run out at the same moment: the caller's wait, which gives
     * up with KEEL_ETIMEDOUT, and the node's hold list, which answers a
     * held call past its deadline KEEL_EUNAVAIL (it did not run). Either
     * may be first; what matters is that the call never runs. */
    rc = keel_call_sync_timed(a, NULL, 500, "counter", "c", 1, "incr", 4,
                              &reply, &len);
    ck_assert_msg(rc == KEEL_ETIMEDOUT ||
                      (rc == KEEL_EUNAVAIL && reply != NULL &&
                       strstr(reply, "not served within the call's "
                                     "deadline") != NULL),
                  "answered %s '%s'", keel_err_name(rc),
                  reply != NULL ? (char *)reply : "(null)");
    keel_free(reply);
    ck_assert_int_eq(tu_zk_restart(&zk), 0);
    for (i = 0; i < 300 && readiness(a) != 0; i++)
        usleep(100000);
    ck_assert_int_eq(readiness(a), 0);
    usleep(500000); /* a held call would have gone by now */
    ck_assert_msg(counter_get(a) == before,
                  "the call answered KEEL_ETIMEDOUT ran once the node "
                  "served again: the counter is at %ld, was %ld",
                  counter_get(a), before);
    keel_node_stop(a);
    ck_assert_int_eq(keel_node_join(a), 0);
    keel_node_destroy(a);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("cluster_embed_stop");
    TCase *tc = tcase_create("join");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, join_says_why_the_node_stopped);
    suite_add_tcase(s, tc);
    /* Its own case, so that CK_RUN_CASE runs it alone. */
    tc = tcase_create("timed");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, a_timed_call_held_past_its_deadline_never_runs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
