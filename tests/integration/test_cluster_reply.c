/* Replies in cluster mode leave only while the node holds its lease.
 *
 * A node in cluster mode, in this process, against a real ZooKeeper
 * server. Its commit of a write is held (a store gate on the flushing
 * sync) for longer than the lease lasts: by the time the write is durable,
 * another node could own the unit, so the reply must not claim success.
 * The caller is told the outcome is unknown (EINDOUBT); the write did
 * take effect here, and the node serves again once its lease is renewed.
 * A node whose lease holds answers as usual. */
#include <check.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acall.h"
#include "gates.h"
#include "keel.h"
#include "runtime/node.h"
#include "testutil.h"
#include "zk.h"

static char *dir;
static tu_zk zk;

static void setup(void)
{
    dir = tu_tmpdir("reply");
}

static void teardown(void)
{
    tu_zk_stop(&zk);
    tu_rmrf(dir);
    free(dir);
}

static int call(keel_node *n, const char *id, const char *msg, char *out,
                size_t outlen)
{
    void *reply = NULL;
    size_t len = 0;
    int rc = keel_call_sync(n, "counter", id, strlen(id), msg, strlen(msg),
                            &reply, &len);
    size_t m = len < outlen - 1 ? len : outlen - 1;

    memcpy(out, reply ? reply : "", m);
    out[m] = '\0';
    keel_free(reply);
    return rc;
}

/* Calls until the unit is served here (the node joined, the map placed
 * the unit, its fence is recorded): at most 30 s. */
static void call_until_served(keel_node *n, const char *id, const char *msg,
                              const char *want)
{
    char buf[256];
    int rc = KEEL_EUNAVAIL, i;

    for (i = 0; i < 300; i++) {
        rc = call(n, id, msg, buf, sizeof buf);
        if (rc == 0)
            break;
        usleep(100000);
    }
    ck_assert_msg(rc == 0, "%s %s: %s (%s)", id, msg, keel_err_name(rc), buf);
    ck_assert_str_eq(buf, want);
}

static keel_node *start_cluster_node(void)
{
    keel_node_options o;
    keel_node *n;
    char err[256];
    int rc;

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_WARN;
    o.listen = "127.0.0.1:0";
    o.zk_hosts = zk.hosts;
    o.cluster = "reply";
    o.node_id = "solo";
    o.insecure = 1; /* a cluster node without credentials */
    o.shard_count = 1; /* one unit: nothing else commits meanwhile */
    o.zk_session_timeout_ms = 2000;
    rc = keel_node_create(&o, &n, err, sizeof err);
    ck_assert_msg(rc == 0, "create: %s %s", keel_strerror(rc), err);
    ck_assert_int_eq(keel_node_start(n), 0);
    return n;
}

START_TEST(reply_after_lapsed_lease_is_in_doubt)
{
    keel_node *n;
    struct gates g = {.hold_sync = 1};
    tu_acall c;
    keel_stats st;
    char buf[256];

    if (!tu_zk_available()) {
        fprintf(stderr, "SKIP: the ZooKeeper server is not installed\n");
        return;
    }
    ck_assert_int_eq(tu_zk_start(&zk, 1, 200), 0);
    n = start_cluster_node();
    call_until_served(n, "c", "incr", "1");

    /* The write's commit runs on the loop thread and is held in its
     * flush: the loop sends no heartbeat meanwhile, and the lease (2/3 of
     * the 2 s session timeout from the last heartbeat) runs out. */
    keel__node_set_inline_commits(n, 1);
    gates_install(n->store, &g);
    tu_acall_start(n, &c, "counter", "c", "incr", NULL);
    ck_assert_int_eq(sem_wait(&g.entered), 0);
    usleep(2500 * 1000);
    sem_post(&g.release);
    tu_acall_wait(&c);
    ck_assert_msg(c.status == KEEL_EINDOUBT,
                  "reply after the lease lapsed: %s (%s), want EINDOUBT",
                  keel_err_name(c.status), c.reply);
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.replies_in_doubt, 1);

    /* The write took effect; once the lease is renewed the node serves
     * again and says so. */
    call_until_served(n, "c", "get", "2");
    ck_assert_int_eq(call(n, "c", "incr", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "3");

    keel_node_stop(n);
    keel_node_join(n);
    keel_node_destroy(n);
}
END_TEST

/* With the lease held, a commit that is slow but shorter than the lease
 * is answered as usual. */
START_TEST(reply_within_lease_succeeds)
{
    keel_node *n;
    struct gates g = {.hold_sync = 1};
    tu_acall c;
    keel_stats st;

    if (!tu_zk_available()) {
        fprintf(stderr, "SKIP: the ZooKeeper server is not installed\n");
        return;
    }
    ck_assert_int_eq(tu_zk_start(&zk, 1, 200), 0);
    n = start_cluster_node();
    call_until_served(n, "d", "incr", "1");
    /* Through the writer thread: the loop keeps the lease renewed while
     * the commit is held for longer than the lease would last. */
    keel__node_set_inline_commits(n, 0);
    gates_install(n->store, &g);
    tu_acall_start(n, &c, "counter", "d", "incr", NULL);
    ck_assert_int_eq(sem_wait(&g.entered), 0);
    usleep(2500 * 1000);
    sem_post(&g.release);
    tu_acall_wait(&c);
    ck_assert_msg(c.status == 0, "reply: %s (%s)", keel_err_name(c.status),
                  c.reply);
    ck_assert_str_eq(c.reply, "2");
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.replies_in_doubt, 0);
    keel_node_stop(n);
    keel_node_join(n);
    keel_node_destroy(n);
}
END_TEST

/* Two calls posted together, so that the second is queued behind the
 * first's write. */
struct two {
    tu_acall w, r;
};

static void two_post(keel_node *n, void *data)
{
    struct two *t = data;

    tu_acall_post(n, &t->w);
    tu_acall_post(n, &t->r);
}

/* A write, then a read of the same actor queued behind it (a value, or an
 * error that depends on state), with the commit held past the lease: the
 * write's outcome is unknown (EINDOUBT); the read changed nothing, so it
 * is not served (EUNAVAIL) rather than answered from state another node
 * may have changed. */
static void write_then_read(const char *type, const char *id,
                            const char *wmsg, const char *rmsg)
{
    keel_node *n;
    struct gates g = {.hold_sync = 1};
    struct two t;
    keel_stats st;

    ck_assert_int_eq(tu_zk_start(&zk, 1, 200), 0);
    n = start_cluster_node();
    call_until_served(n, "warm", "incr", "1");
    keel__node_set_inline_commits(n, 1);
    gates_install(n->store, &g);
    tu_acall_init(&t.w, type, id, wmsg, NULL);
    tu_acall_init(&t.r, type, id, rmsg, NULL);
    ck_assert_int_eq(keel_node_post(n, two_post, &t), 0);
    ck_assert_int_eq(sem_wait(&g.entered), 0);
    usleep(2500 * 1000);
    sem_post(&g.release);
    tu_acall_wait(&t.w);
    tu_acall_wait(&t.r);
    ck_assert_msg(t.w.status == KEEL_EINDOUBT, "write: %s (%s)",
                  keel_err_name(t.w.status), t.w.reply);
    ck_assert_msg(t.r.status == KEEL_EUNAVAIL, "read: %s (%s)",
                  keel_err_name(t.r.status), t.r.reply);
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.replies_in_doubt, 1);
    keel_node_stop(n);
    keel_node_join(n);
    keel_node_destroy(n);
}

START_TEST(read_behind_write_after_lapse)
{
    if (!tu_zk_available()) {
        fprintf(stderr, "SKIP: the ZooKeeper server is not installed\n");
        return;
    }
    write_then_read("counter", "e", "incr", "get");
}
END_TEST

START_TEST(error_read_behind_write_after_lapse)
{
    if (!tu_zk_available()) {
        fprintf(stderr, "SKIP: the ZooKeeper server is not installed\n");
        return;
    }
    write_then_read("kv", "k", "put a 1", "get b");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_reply");
    TCase *tc = tcase_create("lease");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, reply_after_lapsed_lease_is_in_doubt);
    tcase_add_test(tc, reply_within_lease_succeeds);
    tcase_add_test(tc, read_behind_write_after_lapse);
    tcase_add_test(tc, error_read_behind_write_after_lapse);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
