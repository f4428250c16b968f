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

#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"
#include "zk.h"

#define NODES 2
#define PUTS 200
#define CLIENT_TIMEOUT_MS 90000

static tu_zk server;
static char *dir;
static tu_keeld nodes[NODES];
static char cluster[32];

static void suite_setup(void)
{
    if (!tu_zk_available()) {
        fprintf(stderr,
                "ZooKeeper is not installed (sh scripts/install-deps)\n");
        exit(1);
    }
    if (tu_zk_start(&server, 1, 200) != 0)
        exit(1);
}

static void suite_teardown(void)
{
    tu_zk_stop(&server);
}

static void setup(void)
{
    static int round;
    dir = tu_tmpdir("clorder");
    memset(nodes, 0, sizeof nodes);
    snprintf(cluster, sizeof cluster, "co%d-%d", (int)getpid(), round++);
}

static void teardown(void)
{
    int i;

    for (i = 0; i < NODES; i++) {
        if (nodes[i].pid > 0)
            tu_keeld_stop(&nodes[i], SIGTERM);
        tu_keeld_free(&nodes[i]);
    }
    tu_rmrf(dir);
    free(dir);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Node i on port `port` (0: any), its data in dir/n<i>. The hold bound is
 * long enough for n1 to come back from a kill while calls wait. */
static void start_node(int i, int port)
{
    char data[512], id[16];
    const char *extra[] = {"--shards", "64", "--zk", server.hosts,
                           "--cluster", cluster, "--node-id", id,
                           "--zk-session-timeout", "2000",
                           "--hold-timeout", "60000", NULL};

    snprintf(data, sizeof data, "%s/n%d", dir, i);
    snprintf(id, sizeof id, "n%d", i);
    ck_assert_int_eq(tu_keeld_start(&nodes[i], data, port, extra), 0);
}

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            tu_keeld_dump_logs(nodes, NODES);                               \
            ck_abort_msg(__VA_ARGS__);                                      \
        }                                                                   \
    } while (0)

/* The owner `where` names through node i for kv/id ("" if none). */
static void owner_of(int i, const char *id, char owner[64])
{
    char *out = NULL, *err = NULL, *p;
    int rc = tu_keel(nodes[i].addr, &out, &err, "where", "kv", id, NULL);

    owner[0] = '\0';
    if (rc == 0 && out != NULL && (p = strstr(out, "\nowner ")) != NULL)
        sscanf(p + 7, "%63s", owner);
    free(out);
    free(err);
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
    n1port = nodes[1].port;

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
            sleep_ms(100);
    }
    CHECK(id[0] != '\0', "no key owned by n1");
    ck_assert_int_eq(keel_client_connect(nodes[0].addr, CLIENT_TIMEOUT_MS,
                                         &cl),
                     0);
    for (tries = 0; tries < 100; tries++) {
        if (call1(cl, id, "put k start", buf, sizeof buf) == 0)
            break;
        sleep_ms(100);
    }
    CHECK(tries < 100, "the key's owner does not answer through n0");

    /* The owner dies; the calls are sent meanwhile, in one pipeline. */
    ck_assert_int_eq(tu_keeld_stop(&nodes[1], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&nodes[1]);
    memset(&nodes[1], 0, sizeof nodes[1]);
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
    sleep_ms(1500);
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
        sleep_ms(100);
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
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, pipelined_order_across_owner_restart);
    suite_add_tcase(s, tc);
    suite_setup();
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    suite_teardown();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
