/* Per-actor order of pipelined calls forwarded between nodes, with a real
 * ZooKeeper and real keeld processes: a client pipelines puts and reads
 * of one key through node n0 while the key's owner n1 is down (kill -9)
 * and comes back on its data. The calls that could not reach n1 are held
 * on n0 and go out again each time n0 tries to reconnect; they must reach
 * n1 in the order they were sent, whatever failed in between:
 *  - every read sees the value of the put sent just before it, or an
 *    older one only if that put failed, and reads never go backwards;
 *  - the final value is the last acknowledged put.
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
#define PUTS 200
#define CLIENT_TIMEOUT_MS 90000

static tu_cluster fx;

static void setup(void)
{
    tu_cluster_setup(&fx, "clorder", "co");
}

static void teardown(void)
{
    tu_cluster_teardown(&fx, SIGTERM);
}

/* Node i on port `port` (0: any), its data in dir/n<i>. The hold bound is
 * long enough for n1 to come back from a kill while calls wait. */
static void start_node(int i, int port)
{
    ck_assert_int_eq(tu_cluster_start_node(&fx, i, port, "--hold-timeout",
                                           "60000", NULL),
                     0);
}

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

/* The owner `where` names through node i for kv/id ("" if none). */
static void owner_of(int i, const char *id, char owner[64])
{
    tu_cluster_owner_of(&fx, i, "kv", id, owner, 64);
}

/* One call over cl: status, and the reply in buf. */
static int call1(keel_client *cl, const char *id, const char *msg, char *buf,
                 size_t cap)
{
    char *reply = NULL;
    size_t len = 0;
    int rc = keel_client_call(cl, KEEL_FRAME_CALL, "kv", id, strlen(id), msg,
                              strlen(msg), &reply, &len);

    snprintf(buf, cap, "%s", reply != NULL ? reply : "");
    free(reply);
    return rc;
}

/* "vNNN" -> NNN, or -1. */
static int value_index(const char *v)
{
    int k;

    return sscanf(v, "v%d", &k) == 1 ? k : -1;
}

START_TEST(pipelined_order_across_owner_restart)
{
    keel_client *cl;
    char id[32] = "", owner[64], buf[256];
    int put_st[PUTS], get_st[PUTS], get_val[PUTS];
    int i, tries, n1port, got, last_acked = -1, prev = -1, rc, final;
    keel_frame f;

    start_node(0, 0);
    start_node(1, 0);
    n1port = fx.nodes[1].port;

    /* A key n1 owns, once the cluster has settled (bounded). */
    for (tries = 0; tries < 300 && id[0] == '\0'; tries++) {
        for (i = 0; i < 64 && id[0] == '\0'; i++) {
            char cand[32];
            snprintf(cand, sizeof cand, "o%d", i);
            owner_of(0, cand, owner);
            if (owner[0] == '\0')
                break; /* not settled yet */
            if (strcmp(owner, "n1") == 0)
                snprintf(id, sizeof id, "%s", cand);
        }
        if (id[0] == '\0')
            tu_sleep_ms(100);
    }
    CHECK(id[0] != '\0', "no key owned by n1");
    ck_assert_int_eq(
        keel_client_connect(fx.nodes[0].addr, CLIENT_TIMEOUT_MS, &cl), 0);
    for (tries = 0; tries < 100; tries++) {
        if (call1(cl, id, "put k start", buf, sizeof buf) == 0)
            break;
        tu_sleep_ms(100);
    }
    CHECK(tries < 100, "the key's owner does not answer through n0");

    /* The owner dies; the calls are sent meanwhile, in one pipeline. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[1], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[1]);
    memset(&fx.nodes[1], 0, sizeof fx.nodes[1]);
    for (i = 0; i < PUTS; i++) {
        char msg[32];
        snprintf(msg, sizeof msg, "put k v%03d", i);
        ck_assert_int_eq(keel_client_queue(cl, KEEL_FRAME_CALL,
                                           (uint64_t)(2 * i + 1), "kv", id,
                                           strlen(id), msg, strlen(msg)),
                         0);
        ck_assert_int_eq(keel_client_queue(cl, KEEL_FRAME_CALL,
                                           (uint64_t)(2 * i + 2), "kv", id,
                                           strlen(id), "get k", 5),
                         0);
    }
    ck_assert_int_eq(keel_client_flush(cl), 0);
    /* Long enough for n0 to try (and fail) reconnecting several times. */
    tu_sleep_ms(1500);
    start_node(1, n1port);

    for (i = 0; i < PUTS; i++)
        put_st[i] = get_st[i] = 1;
    for (got = 0; got < 2 * PUTS; got++) {
        uint64_t rid;
        rc = keel_client_recv(cl, &f);
        CHECK(rc == 0, "answer %d of %d: %s", got, 2 * PUTS,
              keel_strerror(rc));
        rid = f.request_id;
        CHECK(rid >= 1 && rid <= 2 * PUTS, "answer for request %llu",
              (unsigned long long)rid);
        i = (int)((rid - 1) / 2);
        if (f.kind == KEEL_FRAME_ERROR) {
            int code = keel_error_body_parse(f.body, f.body_len, NULL, NULL);
            if (rid % 2 == 1)
                put_st[i] = code;
            else
                get_st[i] = code;
            continue;
        }
        CHECK(f.kind == KEEL_FRAME_REPLY, "frame kind %d", f.kind);
        if (rid % 2 == 1) {
            put_st[i] = 0;
        } else {
            char v[32];
            size_t n = f.body_len < sizeof v - 1 ? f.body_len : sizeof v - 1;
            memcpy(v, f.body, n);
            v[n] = '\0';
            get_st[i] = 0;
            get_val[i] = value_index(v);
        }
    }

    /* In send order: a read sees the put just before it when that put
     * was acknowledged, never a later one, and never goes back. */
    for (i = 0; i < PUTS; i++) {
        CHECK(put_st[i] <= 0 && get_st[i] <= 0, "call %d unanswered", i);
        if (put_st[i] == 0)
            last_acked = i;
        if (get_st[i] != 0)
            continue;
        CHECK(get_val[i] <= i,
              "read %d saw v%03d: a put sent after it ran before it", i,
              get_val[i]);
        CHECK(get_val[i] >= last_acked,
              "read %d saw v%03d, but put v%03d was acknowledged before it: "
              "reordered",
              i, get_val[i], last_acked);
        CHECK(get_val[i] >= prev, "read %d saw v%03d after a read saw v%03d",
              i, get_val[i], prev);
        prev = get_val[i];
    }
    for (tries = 0; tries < 100; tries++) {
        if ((rc = call1(cl, id, "get k", buf, sizeof buf)) == 0)
            break;
        tu_sleep_ms(100);
    }
    CHECK(rc == 0, "final read: %s", keel_strerror(rc));
    final = value_index(buf);
    CHECK(final == last_acked,
          "final value %s, but the last acknowledged put was v%03d", buf,
          last_acked);
    /* The hold bound covers the restart: every call went through. */
    CHECK(last_acked == PUTS - 1, "only puts up to v%03d acknowledged",
          last_acked);
    for (i = 0; i < PUTS; i++)
        CHECK(put_st[i] == 0 && get_st[i] == 0, "call %d failed: %s %s", i,
              keel_err_name(put_st[i]), keel_err_name(get_st[i]));
    keel_client_close(cl);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_order");
    TCase *tc = tcase_create("cluster_order");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, pipelined_order_across_owner_restart);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
