/* Access control in a real cluster (ZooKeeper, keeld nodes with the same
 * token file): calls forwarded between nodes need no token, a client
 * token may not drain or forget a node (and nothing changes), an admin
 * token may; a node's claim (INFO peer NUL ID) gives a node's rights only
 * while that node is a member, and members without credentials are named
 * in the status answers. Every wait is bounded. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define ADMIN "admin-token-0123456789"
#define CLIENT "client-token-0123456789"
#define COUNTERS 16

static tu_cluster fx;
static char *tokens;

static void setup(void)
{
    FILE *f;

    tu_cluster_setup(&fx, "cauth", "au");
    if (asprintf(&tokens, "%s/tokens", fx.dir) < 0)
        abort();
    f = fopen(tokens, "w");
    ck_assert_ptr_nonnull(f);
    fputs(ADMIN " admin\n" CLIENT " client\n", f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(chmod(tokens, 0600), 0);
}

static void teardown(void)
{
    ck_assert_int_eq(tu_cluster_teardown(&fx, SIGTERM), 0);
    free(tokens);
}

/* keel through node i with a token (NULL: none): exit code, stdout and
 * stderr (malloc'd) when asked for. */
static int keel_via(int i, const char *token, char **out, char **err,
                    const char *a1, const char *a2, const char *a3,
                    const char *a4)
{
    if (token != NULL)
        return tu_keel(fx.nodes[i].addr, out, err, "--token", token, a1, a2,
                       a3, a4, NULL);
    return tu_keel(fx.nodes[i].addr, out, err, a1, a2, a3, a4, NULL);
}

static long counter_via(int i, const char *name, const char *op)
{
    char *out = NULL;
    long v = -1;

    if (keel_via(i, CLIENT, &out, NULL, "call", "counter", name, op) == 0 &&
        out != NULL)
        v = strtol(out, NULL, 10);
    free(out);
    return v;
}

/* Every counter incremented once through node 0, then readable through
 * both nodes (at most 60 s): about half of them live on node 1, so node
 * 0 forwards to it, on a connection that presents no token. */
static void converge(void)
{
    double t0 = tu_now_s();
    char name[16];
    int c, i, ok;

    for (c = 0; c < COUNTERS; c++) {
        snprintf(name, sizeof name, "c%d", c);
        do
            ok = counter_via(0, name, "incr") == 1;
        while (!ok && tu_now_s() - t0 < 60 && (tu_sleep_ms(100), 1));
        TU_CLUSTER_CHECK(&fx, ok, "incr %s through n0 failed", name);
    }
    for (c = 0; c < COUNTERS; c++) {
        snprintf(name, sizeof name, "c%d", c);
        for (i = 0; i < 2; i++)
            TU_CLUSTER_CHECK(&fx, counter_via(i, name, "get") == 1,
                             "%s through n%d is not 1", name, i);
    }
}

/* The node lines of `keel nodes` through node i. */
static char *members(int i)
{
    char *out = NULL;

    ck_assert_int_eq(keel_via(i, CLIENT, &out, NULL, "nodes", NULL, NULL,
                              NULL),
                     0);
    return out;
}

static void refused(int via, const char *token, const char *want,
                    const char *what, const char *node)
{
    char *err = NULL;
    int rc = keel_via(via, token, NULL, &err, "node", what, node, NULL);

    TU_CLUSTER_CHECK(&fx, rc == 1 && err && strstr(err, want),
                     "node %s %s: exit %d, stderr %s", what, node, rc,
                     err ? err : "");
    free(err);
}

START_TEST(client_may_not_drain_admin_may)
{
    char *before, *after, *out = NULL;
    double t0;
    int gone = 0, c;

    ck_assert_int_eq(tu_cluster_start_node(&fx, 0, 0, "--auth-tokens",
                                           tokens, NULL),
                     0);
    ck_assert_int_eq(tu_cluster_start_node(&fx, 1, 0, "--auth-tokens",
                                           tokens, NULL),
                     0);
    converge();
    before = members(0);
    ck_assert_ptr_nonnull(strstr(before, "node n1 "));

    refused(0, NULL, "keel: EUNAUTH: ", "drain", "n1");
    refused(0, CLIENT, "keel: EDENIED: not permitted: this request needs "
                       "an admin token",
            "drain", "n1");
    refused(1, CLIENT, "keel: EDENIED: ", "forget", "n0");
    refused(0, NULL, "keel: EUNAUTH: ", "forget", "n1");
    /* Nothing changed: both still members (neither leaving), n1 still
     * serves, a while later too. */
    tu_sleep_ms(1000);
    after = members(0);
    ck_assert_str_eq(before, after);
    free(after);
    for (c = 0; c < COUNTERS; c++) {
        char name[16];
        snprintf(name, sizeof name, "c%d", c);
        TU_CLUSTER_CHECK(&fx, counter_via(1, name, "get") == 1,
                         "%s changed or unavailable after refusals", name);
    }
    ck_assert_int_eq(tu_keel_stat(fx.nodes[0].addr, "auth_refused_denied"),
                     -1); /* stat itself needs a token */
    {
        char *st = NULL;
        ck_assert_int_eq(keel_via(0, CLIENT, &st, NULL, "stat", NULL, NULL,
                                  NULL),
                         0);
        ck_assert_ptr_nonnull(strstr(st, "\nauth_refused_denied 1\n"));
        ck_assert_ptr_nonnull(strstr(st, "\nauth_refused_unauth 3\n"));
        ck_assert_ptr_nonnull(strstr(st, "\ninsecure 0\n"));
        free(st);
    }

    /* The admin token drains n1: it hands its units to n0 and leaves. */
    ck_assert_int_eq(keel_via(0, ADMIN, &out, NULL, "node", "drain", "n1",
                              NULL),
                     0);
    ck_assert_ptr_nonnull(strstr(out, "node n1 leaving"));
    free(out);
    t0 = tu_now_s();
    while (!gone && tu_now_s() - t0 < 60) {
        char *m = members(0);
        gone = strstr(m, "node n1 ") == NULL;
        free(m);
        if (!gone)
            tu_sleep_ms(200);
    }
    TU_CLUSTER_CHECK(&fx, gone, "n1 still a member 60 s after its drain");
    for (c = 0; c < COUNTERS; c++) {
        char name[16];
        snprintf(name, sizeof name, "c%d", c);
        TU_CLUSTER_CHECK(&fx, counter_via(0, name, "get") == 1,
                         "%s lost in the drain", name);
    }
    free(before);
}
END_TEST

/* A CALL of counter `id` incr on c, forwarded `hops` times already (0:
 * a plain call); its answer's code (0: it ran). */
static int call_on(keel_client *c, uint64_t rid, const char *id, int hops)
{
    uint8_t frame[KEEL_FRAME_HEADER + 128];
    size_t blen = keel_call_body_size(7, strlen(id), 4);
    keel_frame f;

    keel_frame_header(frame, KEEL_FRAME_CALL, rid, blen);
    frame[5] = (uint8_t)hops;
    keel_call_body_encode(frame + KEEL_FRAME_HEADER, "counter", 7, id,
                          strlen(id), "incr", 4);
    ck_assert_int_eq(keel_client_queue_raw(c, frame, KEEL_FRAME_HEADER + blen),
                     0);
    ck_assert_int_eq(keel_client_flush(c), 0);
    ck_assert_int_eq(keel_client_recv(c, &f), 0);
    ck_assert_uint_eq(f.request_id, rid);
    if (f.kind != KEEL_FRAME_ERROR)
        return 0;
    return keel_error_body_parse(f.body, f.body_len, NULL, NULL);
}

/* A connection to node 0 that says it comes from node `name` (len bytes
 * of claim: "peer" alone, or with NUL and the name). The claim's code. */
static int claim(keel_client **c, const char *body, size_t len)
{
    char *reply = NULL;
    size_t rlen = 0;
    int rc;

    ck_assert_int_eq(keel_client_connect(fx.nodes[0].addr, 10000, c), 0);
    rc = keel_client_call(*c, KEEL_FRAME_INFO, NULL, NULL, 0, body, len,
                          &reply, &rlen);
    free(reply);
    return rc;
}

/* Whether `keel nodes` through node 0 holds s. */
static int nodes_has(const char *s)
{
    char *out = members(0);
    int yes = strstr(out, s) != NULL;

    free(out);
    return yes;
}

/* n0 and n1 have tokens; n2 has none (--insecure). n0 says n2 runs
 * insecure. A connection that claims to be n2 calls without a token and
 * forwards while n2 is a member; once n2 is gone and forgotten, both are
 * refused on that connection. Claims without a name, or naming a node
 * that is no member, get nothing. */
START_TEST(claims_follow_membership)
{
    keel_client *c = NULL;
    char *out = NULL;
    double t0;
    long before;
    int rc = -1, tries;

    ck_assert_int_eq(tu_cluster_start_node(&fx, 0, 0, "--auth-tokens",
                                           tokens, NULL),
                     0);
    ck_assert_int_eq(tu_cluster_start_node(&fx, 1, 0, "--auth-tokens",
                                           tokens, NULL),
                     0);
    ck_assert_int_eq(tu_cluster_start_node(&fx, 2, 0, NULL), 0);
    converge();
    t0 = tu_now_s();
    while (!nodes_has("node n2 ") && tu_now_s() - t0 < 30)
        tu_sleep_ms(100);
    out = members(0);
    TU_CLUSTER_CHECK(&fx, strstr(out, "\ninsecure n2 (running without "
                                      "credentials: --insecure)\n") &&
                              strstr(out, " role member insecure\n") &&
                              strstr(out, "insecure n0") == NULL &&
                              strstr(out, " self\n"),
                     "n0's nodes: %s", out);
    free(out);

    /* No name, or a name that is no member's: no rights. */
    ck_assert_int_eq(claim(&c, "peer", 4), KEEL_EDENIED);
    keel_client_close(c);
    ck_assert_int_eq(claim(&c, "peer\0nosuch", 11), 0);
    ck_assert_int_eq(call_on(c, 1, "k", 0), KEEL_ENOTMEMBER);
    /* A hop call from a node identity that is no member: refused as
     * such, so that a real node forwarding too early holds its call. */
    ck_assert_int_eq(call_on(c, 2, "k", 1), KEEL_ENOTMEMBER);
    keel_client_close(c);
    /* As n2, a member: calls without a token, forwards. */
    ck_assert_int_eq(claim(&c, "peer\0n2", 7), 0);
    for (tries = 0; tries < 100 && rc != 0; tries++) {
        rc = call_on(c, 10 + (uint64_t)tries, "k", 0);
        if (rc != 0)
            tu_sleep_ms(100);
    }
    TU_CLUSTER_CHECK(&fx, rc == 0, "a call as n2: %d", rc);
    ck_assert_int_eq(call_on(c, 200, "k", 1), 0);

    /* n2 goes; forgotten (by an admin). */
    tu_keeld_stop(&fx.nodes[2], SIGKILL);
    t0 = tu_now_s();
    while (nodes_has("node n2 ") && tu_now_s() - t0 < 30)
        tu_sleep_ms(200);
    TU_CLUSTER_CHECK(&fx, !nodes_has("node n2 "), "n2 still listed 30 s "
                                                  "after it was killed");
    for (tries = 0, rc = -1; tries < 50 && rc != 0; tries++) {
        rc = keel_via(0, ADMIN, NULL, NULL, "node", "forget", "n2", NULL);
        if (rc != 0)
            tu_sleep_ms(200);
    }
    TU_CLUSTER_CHECK(&fx, rc == 0, "forget n2 failed");
    /* k is served again (its unit may have been n2's, and start empty). */
    t0 = tu_now_s();
    while ((before = counter_via(0, "k", "get")) < 0 && tu_now_s() - t0 < 30)
        tu_sleep_ms(200);
    TU_CLUSTER_CHECK(&fx, before >= 0, "k not served after the forget");
    /* The connection that claimed to be n2 has no rights left, and what
     * it sends does not run. */
    ck_assert_int_eq(call_on(c, 300, "k", 0), KEEL_ENOTMEMBER);
    ck_assert_int_eq(call_on(c, 301, "k", 1), KEEL_ENOTMEMBER);
    keel_client_close(c);
    ck_assert_int_eq(counter_via(0, "k", "get"), before);
    /* Nobody runs insecure any more. */
    ck_assert(!nodes_has("insecure"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_auth");
    TCase *tc = tcase_create("auth");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, client_may_not_drain_admin_may);
    tcase_add_test(tc, claims_follow_membership);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
