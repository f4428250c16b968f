/* Request keys end to end, with real keeld processes: a request sent again
 * with its key is answered with the first outcome and does not run
 * again, however many keyed writes to the actor came between; the record
 * survives kill -9 and follows the actor when its unit moves to another
 * node; it is kept for --request-key-retention-ms and no longer, and the
 * actor's records do not pile up past it; the record is not one of the
 * actor's listed entries; the CLI's --key and --retry use it. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "testutil.h"
#include "zk.h"

/* Nodes 0 and 1; fx.zk is started by the tests that use ZooKeeper. */
static tu_cluster fx;

static void setup(void)
{
    tu_cluster_setup(&fx, "rkeys", "rk");
    memset(&fx.zk, 0, sizeof fx.zk);
}

static void teardown(void)
{
    tu_cluster_teardown(&fx, SIGKILL);
    tu_zk_stop(&fx.zk);
}

static keel_client *connect_to(const char *addr)
{
    keel_client *c;

    ck_assert_int_eq(keel_client_connect(addr, 10000, &c), 0);
    return c;
}

/* A keyed (key != NULL) or plain call; returns the status and copies the
 * reply into out. */
static int call(keel_client *c, const uint8_t *key, uint8_t kind,
                const char *type, const char *id, const char *msg, char *out,
                size_t outlen)
{
    char *reply = NULL;
    size_t rl = 0;
    int rc;

    if (key != NULL)
        rc = keel_client_call_keyed(c, kind, key, type, id, strlen(id), msg,
                                    strlen(msg), &reply, &rl);
    else
        rc = keel_client_call(c, kind, type, id, strlen(id), msg, strlen(msg),
                              &reply, &rl);
    if (out != NULL) {
        size_t m = rl < outlen - 1 ? rl : outlen - 1;
        memcpy(out, reply ? reply : "", m);
        out[m] = '\0';
    }
    free(reply);
    return rc;
}

static void expect(keel_client *c, const uint8_t *key, const char *type,
                   const char *id, const char *msg, const char *want)
{
    char buf[256];
    int rc = call(c, key, KEEL_FRAME_CALL, type, id, msg, buf, sizeof buf);

    ck_assert_msg(rc == 0, "%s %s %s: %s (%s)", type, id, msg,
                  keel_err_name(rc), buf);
    ck_assert_str_eq(buf, want);
}

static void new_key(uint8_t *k)
{
    ck_assert_int_eq(keel_client_new_key(k), 0);
}

START_TEST(retry_answered_with_first_outcome)
{
    uint8_t k1[16], k2[16], k3[16], kx[16];
    char data[512], buf[256];
    keel_client *c;
    int i;

    snprintf(data, sizeof data, "%s/n", fx.dir);
    ck_assert_int_eq(tu_keeld_start(&fx.nodes[0], data, 0, NULL), 0);
    c = connect_to(fx.nodes[0].addr);
    new_key(k1);
    new_key(k2);
    new_key(k3);

    expect(c, k1, "counter", "c", "incr", "1");
    expect(c, k1, "counter", "c", "incr", "1"); /* not run again */
    expect(c, NULL, "counter", "c", "get", "1");
    expect(c, k2, "counter", "c", "incr", "2");
    ck_assert_int_eq(call(c, k3, KEEL_FRAME_CAST, "counter", "c", "incr",
                          NULL, 0),
                     0);
    ck_assert_int_eq(call(c, k3, KEEL_FRAME_CAST, "counter", "c", "incr",
                          NULL, 0),
                     0);
    expect(c, NULL, "counter", "c", "get", "3");
    keel_client_close(c);
    ck_assert_int_eq(tu_keel_stat(fx.nodes[0].addr, "retries_answered"), 2);

    /* The records are as durable as the writes they came with. */
    tu_keeld_stop(&fx.nodes[0], SIGKILL);
    {
        int port = fx.nodes[0].port;
        tu_keeld_free(&fx.nodes[0]);
        ck_assert_int_eq(tu_keeld_start(&fx.nodes[0], data, port, NULL), 0);
    }
    c = connect_to(fx.nodes[0].addr);
    expect(c, k1, "counter", "c", "incr", "1");
    expect(c, k2, "counter", "c", "incr", "2");
    expect(c, NULL, "counter", "c", "get", "3");

    /* However many keyed writes to the actor follow, a retry within the
     * retention is answered from its record. (A window of the newest 32
     * forgot it, and a late copy of the request ran again.) */
    for (i = 0; i < 200; i++) {
        new_key(kx);
        ck_assert_int_eq(call(c, kx, KEEL_FRAME_CALL, "counter", "c", "incr",
                              buf, sizeof buf),
                         0);
    }
    expect(c, NULL, "counter", "c", "get", "203");
    expect(c, k1, "counter", "c", "incr", "1");
    expect(c, k2, "counter", "c", "incr", "2");
    expect(c, kx, "counter", "c", "incr", "203");
    expect(c, NULL, "counter", "c", "get", "203");

    /* The record is the runtime's: not among the actor's entries. */
    new_key(kx);
    expect(c, kx, "kv", "store", "put a 1", "OK");
    expect(c, kx, "kv", "store", "put a 1", "OK");
    expect(c, NULL, "kv", "store", "keys", "a");
    keel_client_close(c);
}
END_TEST

/* A keyed request whose reply is larger than the node's frames ran, and
 * its key records that it did: its client is told so (EALREADY, what
 * every later copy of it is told), not ETOOBIG, an answer that reads as
 * a refusal, i.e. a request that took no effect. */
START_TEST(reply_too_big_for_a_frame)
{
    static const char *const extra[] = {"--max-frame", "512", NULL};
    char data[512], msg[128], buf[256];
    uint8_t k[16];
    keel_client *c;
    int i, rc;

    snprintf(data, sizeof data, "%s/n", fx.dir);
    ck_assert_int_eq(tu_keeld_start(&fx.nodes[0], data, 0, extra), 0);
    c = connect_to(fx.nodes[0].addr);
    /* A listing of 20 keys of 56 bytes: over the frame, and over the
     * 1024 bytes a record keeps of a reply. */
    for (i = 0; i < 20; i++) {
        snprintf(msg, sizeof msg, "put key%02d-%0*d v", i, 50, 0);
        expect(c, NULL, "kv", "big", msg, "OK");
    }
    new_key(k);
    rc = call(c, k, KEEL_FRAME_CALL, "kv", "big", "keys", buf, sizeof buf);
    ck_assert_msg(rc == KEEL_EALREADY, "%s (%s)", keel_err_name(rc), buf);
    rc = call(c, k, KEEL_FRAME_CALL, "kv", "big", "keys", buf, sizeof buf);
    ck_assert_msg(rc == KEEL_EALREADY, "retry: %s (%s)", keel_err_name(rc),
                  buf);
    /* Without a key it is ETOOBIG as before: nothing says it ran. */
    rc = call(c, NULL, KEEL_FRAME_CALL, "kv", "big", "keys", buf, sizeof buf);
    ck_assert_msg(rc == KEEL_ETOOBIG, "%s (%s)", keel_err_name(rc), buf);
    keel_client_close(c);
}
END_TEST

/* The same seen from a client whose frames are smaller than the node's
 * (keel_client_set_max_frame; the library's default is about 1 MiB, a
 * node's --max-frame may be up to 4 GiB): the reply, too large for the
 * client, came as a REPLY, so the request ran. The client must not hand
 * its caller ETOOBIG, an answer keel_err_is_answer() settles as a
 * refusal (a request that took no effect). */
START_TEST(reply_too_big_for_the_client)
{
    char data[512], msg[128], buf[256];
    uint8_t k[16];
    keel_client *c;
    int i, rc;

    snprintf(data, sizeof data, "%s/n", fx.dir);
    ck_assert_int_eq(tu_keeld_start(&fx.nodes[0], data, 0, NULL), 0);
    c = connect_to(fx.nodes[0].addr);
    for (i = 0; i < 20; i++) {
        snprintf(msg, sizeof msg, "put key%02d-%0*d v", i, 50, 0);
        expect(c, NULL, "kv", "big", msg, "OK");
    }
    keel_client_set_max_frame(c, 512);
    new_key(k);
    rc = call(c, k, KEEL_FRAME_CALL, "kv", "big", "keys", buf, sizeof buf);
    ck_assert_msg(rc == KEEL_EALREADY || !keel_err_is_answer(rc),
                  "a keyed request that ran was answered %s (%s), which "
                  "reads as its recorded refusal",
                  keel_err_name(rc), buf);
    /* Every copy of it is told the same. */
    keel_client_close(c);
    c = connect_to(fx.nodes[0].addr);
    keel_client_set_max_frame(c, 512);
    rc = call(c, k, KEEL_FRAME_CALL, "kv", "big", "keys", buf, sizeof buf);
    ck_assert_msg(rc == KEEL_EALREADY, "retry: %s (%s)", keel_err_name(rc),
                  buf);
    keel_client_close(c);
}
END_TEST

/* The `records N` of `keel digest` for the unit of counter/id: the
 * actor's records and those of the unit's other actors (none here). */
static long unit_records(const char *addr, const char *id)
{
    char *out = NULL, *p, shard[16];
    long n;

    ck_assert_int_eq(tu_keel(addr, &out, NULL, "where", "counter", id, NULL),
                     0);
    p = strstr(out, "\nshard ");
    ck_assert_ptr_nonnull(p);
    p += 7;
    snprintf(shard, sizeof shard, "%.*s", (int)strcspn(p, "\n"), p);
    free(out);
    out = NULL;
    ck_assert_int_eq(tu_keel(addr, &out, NULL, "digest", "(default)", shard,
                             NULL),
                     0);
    p = strstr(out, " records ");
    ck_assert_ptr_nonnull(p);
    n = strtol(p + 9, NULL, 10);
    free(out);
    return n;
}

/* A key is kept for the retention (here 1 s: a retry sent right after
 * its answer comes within it, on a loaded machine too) and then
 * forgotten: its retry runs again. Keyed writes spaced further apart than
 * that leave the records of about one retention's writes. */
#define RETAIN_MS 1000
START_TEST(key_forgotten_after_retention)
{
    const char *extra[] = {"--request-key-retention-ms", "1000", NULL};
    uint8_t k1[16], kx[16];
    char data[512], buf[256];
    keel_client *c;
    long records;
    int round, i;

    snprintf(data, sizeof data, "%s/n", fx.dir);
    ck_assert_int_eq(tu_keeld_start(&fx.nodes[0], data, 0, extra), 0);
    c = connect_to(fx.nodes[0].addr);
    new_key(k1);
    expect(c, k1, "counter", "t", "incr", "1");
    expect(c, k1, "counter", "t", "incr", "1");
    /* Waiting out the retention is what is tested. */
    usleep(3 * RETAIN_MS * 1000 / 2);
    expect(c, k1, "counter", "t", "incr", "2"); /* ran again */
    expect(c, k1, "counter", "t", "incr", "2"); /* and is kept again */

    for (round = 0; round < 4; round++) {
        usleep(3 * RETAIN_MS * 1000 / 2);
        for (i = 0; i < 20; i++) {
            new_key(kx);
            ck_assert_int_eq(call(c, kx, KEEL_FRAME_CALL, "counter", "t",
                                  "incr", buf, sizeof buf),
                             0);
        }
    }
    expect(c, NULL, "counter", "t", "get", "82");
    keel_client_close(c);
    /* The state, the queue's header, and a record and its queue entry
     * for each of the last round's writes at most (none forgotten, the
     * 82 keyed writes would leave 165 records). */
    records = unit_records(fx.nodes[0].addr, "t");
    ck_assert_msg(records >= 4 && records <= 2 + 2 * 20, "%ld records",
                  records);
}
END_TEST

/* The CLI: the same --key twice runs once; --retry sends with a fresh
 * key. A malformed key is a usage error. */
START_TEST(cli_key_and_retry)
{
    const char *key = "00112233445566778899aabbccddeeff";
    char data[512], *out = NULL;

    snprintf(data, sizeof data, "%s/n", fx.dir);
    ck_assert_int_eq(tu_keeld_start(&fx.nodes[0], data, 0, NULL), 0);
    ck_assert_int_eq(tu_keel(fx.nodes[0].addr, &out, NULL, "-k", key, "call",
                             "counter", "z", "incr", NULL),
                     0);
    ck_assert_str_eq(out, "1\n");
    free(out);
    ck_assert_int_eq(tu_keel(fx.nodes[0].addr, &out, NULL, "--key", key, "call",
                             "counter", "z", "incr", NULL),
                     0);
    ck_assert_str_eq(out, "1\n");
    free(out);
    ck_assert_int_eq(tu_keel(fx.nodes[0].addr, &out, NULL, "--retry", "2",
                             "call", "counter", "z", "incr", NULL),
                     0);
    ck_assert_str_eq(out, "2\n");
    free(out);
    ck_assert_int_eq(tu_keel(fx.nodes[0].addr, NULL, NULL, "-k", "0011", "call",
                             "counter", "z", "incr", NULL),
                     2);
    out = NULL;
    ck_assert_int_eq(tu_keel(fx.nodes[0].addr, &out, NULL, "call", "counter",
                             "z", "get", NULL),
                     0);
    ck_assert_str_eq(out, "2\n");
    free(out);
}
END_TEST

/* The owner of the unit: the `owner` line of `keel where`. */
static void owner_of(const char *addr, const char *id, char *owner,
                     size_t len)
{
    char *out = NULL, *p;

    ck_assert_int_eq(tu_keel(addr, &out, NULL, "where", "counter", id, NULL),
                     0);
    p = strstr(out, "\nowner ");
    ck_assert_ptr_nonnull(p);
    p += 7;
    snprintf(owner, len, "%.*s", (int)strcspn(p, "\n"), p);
    free(out);
}

/* The record travels with the actor's records in a handoff: retried
 * through the new owner, the request is still answered once. */
START_TEST(record_follows_the_unit)
{
    char owner[64], id[32], buf[256];
    uint8_t k[16];
    keel_client *c;
    int i, rc = -1;

    if (!tu_zk_available()) {
        fprintf(stderr, "SKIP: the ZooKeeper server is not installed\n");
        return;
    }
    ck_assert_int_eq(tu_zk_start(&fx.zk, 1, 200), 0);
    fx.shards = 8;
    ck_assert_int_eq(tu_cluster_start_node(&fx, 0, 0, NULL), 0);
    ck_assert_int_eq(tu_cluster_start_node(&fx, 1, 0, NULL), 0);
    c = connect_to(fx.nodes[0].addr);
    /* Both nodes own units once the map has settled; pick an actor of
     * n1's, called through n0. At most 30 s. */
    for (i = 0; i < 300; i++) {
        snprintf(id, sizeof id, "a%d", i % 64);
        if (call(c, NULL, KEEL_FRAME_CALL, "counter", id, "get", buf,
                 sizeof buf) == 0) {
            owner_of(fx.nodes[0].addr, id, owner, sizeof owner);
            if (strcmp(owner, "n1") == 0)
                break;
        }
        usleep(100000);
    }
    ck_assert_str_eq(owner, "n1");
    new_key(k);
    expect(c, k, "counter", id, "incr", "1");

    /* n1 leaves: its units, records and all, move to n0. */
    ck_assert_int_eq(tu_keel(fx.nodes[0].addr, NULL, NULL, "node", "drain",
                             "n1", NULL),
                     0);
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[1], 0), 0);
    for (i = 0; i < 300; i++) {
        rc = call(c, k, KEEL_FRAME_CALL, "counter", id, "incr", buf,
                  sizeof buf);
        if (rc == 0)
            break;
        usleep(100000);
    }
    ck_assert_msg(rc == 0, "retry after the move: %s (%s)", keel_err_name(rc),
                  buf);
    ck_assert_str_eq(buf, "1");
    owner_of(fx.nodes[0].addr, id, owner, sizeof owner);
    ck_assert_str_eq(owner, "n0");
    expect(c, NULL, "counter", id, "get", "1");
    keel_client_close(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("request_keys");
    TCase *tc = tcase_create("keys");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, retry_answered_with_first_outcome);
    tcase_add_test(tc, reply_too_big_for_a_frame);
    tcase_add_test(tc, reply_too_big_for_the_client);
    tcase_add_test(tc, key_forgotten_after_retention);
    tcase_add_test(tc, cli_key_and_retry);
    tcase_add_test(tc, record_follows_the_unit);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
