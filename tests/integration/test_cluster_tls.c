/* A cluster secured with mutual TLS (docs/security.md, "TLS"): real
 * ZooKeeper, three keeld with node certificates CN=node:n<i> from one CA.
 * Calls forwarded between nodes work over the TLS links; a connection
 * without a node certificate cannot forward a call (hop bits) or stream a
 * unit (XFER), even after INFO "peer" (EDENIED, nothing changes); a
 * certificate from another CA, even one naming a member, gets no
 * connection at all, and a node started with one cannot forward; nor can
 * a node whose certificate the cluster's CRL revokes; a node's
 * connections lose their rights when it leaves the cluster. Every wait is
 * bounded. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "certs.h"
#include "cluster.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

static tu_cluster cl;
static char ca[512], oca[512];

static void setup(void)
{
    char cn[32], name[32];
    int i;

    tu_cluster_setup(&cl, "cltls", "tls");
    cl.shards = 16;
    ck_assert_int_eq(tu_certs_ca(cl.dir, "ca"), 0);
    ck_assert_int_eq(tu_certs_ca(cl.dir, "other"), 0);
    for (i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "n%d", i);
        snprintf(cn, sizeof cn, "node:n%d", i);
        ck_assert_int_eq(tu_certs_issue(cl.dir, "ca", name, cn), 0);
    }
    ck_assert_int_eq(tu_certs_issue(cl.dir, "ca", "alice", "client:alice"),
                     0);
    /* Another CA's certificate for a member's name. */
    ck_assert_int_eq(tu_certs_issue(cl.dir, "other", "fake-n1", "node:n1"),
                     0);
    tu_certs_path(ca, sizeof ca, cl.dir, "ca", "pem");
    tu_certs_path(oca, sizeof oca, cl.dir, "other", "pem");
    /* The CLI (readiness checks, tu_cluster_counter) trusts the CA. */
    setenv("KEEL_TLS_CA", ca, 1);
}

static void teardown(void)
{
    tu_cluster_teardown(&cl, SIGTERM);
}

/* Starts node i with the certificate `name` of the test's directory and
 * the CRL file crl (NULL: none). */
static void start_node_crl(int i, const char *name, const char *crl)
{
    char cert[512], key[512];

    tu_certs_path(cert, sizeof cert, cl.dir, name, "pem");
    tu_certs_path(key, sizeof key, cl.dir, name, "key");
    TU_CLUSTER_CHECK(&cl,
                     tu_cluster_start_node(&cl, i, 0, "--tls-cert", cert,
                                           "--tls-key", key, "--tls-ca", ca,
                                           crl != NULL ? "--tls-crl" : NULL,
                                           crl, NULL) == 0,
                     "n%d did not start", i);
}

static void start_node(int i, const char *name)
{
    start_node_crl(i, name, NULL);
}

static int tls_connect(int i, const char *name, const char *with_ca,
                       keel_client **c, char *why, size_t whylen)
{
    keel_client_tls t;
    char cert[512], key[512];

    memset(&t, 0, sizeof t);
    t.ca = with_ca;
    if (name != NULL) {
        t.cert = tu_certs_path(cert, sizeof cert, cl.dir, name, "pem");
        t.key = tu_certs_path(key, sizeof key, cl.dir, name, "key");
    }
    return keel_client_connect_tls(cl.nodes[i].addr, 10000, &t, c, why,
                                   whylen);
}

/* Waits (at most 60 s) until every one of ids answers `get` through node
 * 0, which means the map has settled enough to serve them. */
static void wait_served(const char *prefix, int nids)
{
    int tries, k, ok = 0;
    char id[32];

    cl.quiet = 1;
    for (tries = 0; tries < 600 && !ok; tries++) {
        ok = 1;
        for (k = 0; k < nids && ok; k++) {
            snprintf(id, sizeof id, "%s%d", prefix, k);
            ok = tu_cluster_counter(&cl, 0, id, "get") >= 0;
        }
        if (!ok)
            tu_sleep_ms(100);
    }
    cl.quiet = 0;
    TU_CLUSTER_CHECK(&cl, ok, "the cluster did not serve %s* in 60 s",
                     prefix);
}

#define NIDS 12

START_TEST(forwards_over_mutual_tls)
{
    long forwarded = 0;
    char id[32];
    int k, i;

    for (i = 0; i < 3; i++)
        start_node(i, i == 0 ? "n0" : i == 1 ? "n1" : "n2");
    wait_served("f", NIDS);
    /* Every actor through every node: most of the calls are forwarded to
     * the owner over a TLS link. */
    for (k = 0; k < NIDS; k++) {
        snprintf(id, sizeof id, "f%d", k);
        for (i = 0; i < 3; i++)
            TU_CLUSTER_CHECK(&cl, tu_cluster_counter(&cl, i, id, "incr") ==
                                      i + 1,
                             "%s incr through n%d", id, i);
    }
    for (i = 0; i < 3; i++)
        forwarded += tu_keel_stat(cl.nodes[i].addr, "forwarded");
    TU_CLUSTER_CHECK(&cl, forwarded >= NIDS, "only %ld calls forwarded",
                     forwarded);
}
END_TEST

/* An XFER frame for shard 0 of the default capability, epoch 1: a unit
 * stream's first frame, with no records. */
static void queue_xfer(keel_client *c, uint64_t rid)
{
    uint8_t frame[KEEL_FRAME_HEADER + 16];
    uint8_t *p = frame + KEEL_FRAME_HEADER;

    memset(frame, 0, sizeof frame);
    keel_frame_header(frame, KEEL_FRAME_XFER, rid, 16);
    p[0] = 0;  /* capability "" */
    p[10] = 1; /* epoch 1 */
    p[15] = 1; /* the last frame */
    ck_assert_int_eq(keel_client_queue_raw(c, frame, sizeof frame), 0);
}

static void queue_hopped(keel_client *c, uint64_t rid, const char *id)
{
    uint8_t frame[KEEL_FRAME_HEADER + 128];
    size_t blen = keel_call_body_size(7, strlen(id), 4);

    keel_frame_header(frame, KEEL_FRAME_CALL, rid, blen);
    frame[5] = 1; /* forwarded once */
    keel_call_body_encode(frame + KEEL_FRAME_HEADER, "counter", 7, id,
                          strlen(id), "incr", 4);
    ck_assert_int_eq(keel_client_queue_raw(c, frame, KEEL_FRAME_HEADER + blen),
                     0);
}

static int answer_code(keel_client *c, uint64_t rid)
{
    keel_frame f;

    ck_assert_int_eq(keel_client_recv(c, &f), 0);
    ck_assert_uint_eq(f.request_id, rid);
    if (f.kind != KEEL_FRAME_ERROR)
        return 0;
    return keel_error_body_parse(f.body, f.body_len, NULL, NULL);
}

START_TEST(forged_peer_frames_denied)
{
    const char *who[2] = {"alice", NULL}; /* a client cert, and none */
    long before, xfers_bad;
    keel_client *c = NULL;
    char why[512];
    int w;

    start_node(0, "n0");
    start_node(1, "n1");
    wait_served("g", 1);
    before = tu_cluster_counter(&cl, 0, "g0", "incr");
    TU_CLUSTER_CHECK(&cl, before >= 1, "g0 incr");
    xfers_bad = tu_keel_stat(cl.nodes[0].addr, "frames_bad");
    for (w = 0; w < 2; w++) {
        ck_assert_msg(tls_connect(0, who[w], ca, &c, why, sizeof why) == 0,
                      "%s", why);
        /* Saying it is a node counts for nothing with TLS. */
        ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_INFO, NULL, NULL, 0,
                                          "peer", 4, NULL, NULL),
                         0);
        queue_hopped(c, 7, "g0");
        ck_assert_int_eq(keel_client_flush(c), 0);
        ck_assert_int_eq(answer_code(c, 7), KEEL_EDENIED);
        queue_xfer(c, 8);
        ck_assert_int_eq(keel_client_flush(c), 0);
        ck_assert_int_eq(answer_code(c, 8), KEEL_EDENIED);
        keel_client_close(c);
        c = NULL;
    }
    ck_assert_int_eq(tu_cluster_counter(&cl, 0, "g0", "get"), before);
    ck_assert_int_eq(tu_cluster_counter(&cl, 1, "g0", "get"), before);
    ck_assert(tu_keel_stat(cl.nodes[0].addr, "frames_bad") >= xfers_bad + 4);
}
END_TEST

/* A hopped call on c: its answer's code (0: it ran). */
static int hop_call(keel_client *c, uint64_t rid, const char *id)
{
    queue_hopped(c, rid, id);
    ck_assert_int_eq(keel_client_flush(c), 0);
    return answer_code(c, rid);
}

/* Whether `keel nodes` through node 0 lists node `name`. */
static int listed(const char *name)
{
    char *out = NULL, want[32];
    int yes;

    snprintf(want, sizeof want, "node %s addr ", name);
    if (tu_keel(cl.nodes[0].addr, &out, NULL, "nodes", NULL) != 0) {
        free(out);
        return -1;
    }
    yes = strstr(out, want) != NULL;
    free(out);
    return yes;
}

/* A connection is a peer while the node its certificate names is a
 * member: n2's connection to n0 forwards calls while n2 is in the
 * cluster, and is refused them once n2 has left and been forgotten, as is
 * a new one with the same certificate. */
START_TEST(departed_node_loses_peer_rights)
{
    keel_client *c = NULL, *c2 = NULL;
    char why[512], *out = NULL;
    uint64_t rid = 1;
    int i, rc = -1, tries;
    double t0;

    for (i = 0; i < 3; i++)
        start_node(i, i == 0 ? "n0" : i == 1 ? "n1" : "n2");
    wait_served("d", 1);
    ck_assert_msg(tls_connect(0, "n2", ca, &c, why, sizeof why) == 0, "%s",
                  why);
    /* Taken once n0 sees n2 as a member (on this same connection). */
    for (tries = 0; tries < 100 && rc != 0; tries++) {
        rc = hop_call(c, rid++, "d0");
        if (rc != 0)
            tu_sleep_ms(100);
    }
    TU_CLUSTER_CHECK(&cl, rc == 0, "n2's forwarded call refused: %d", rc);

    tu_keeld_stop(&cl.nodes[2], SIGKILL);
    t0 = tu_now_s();
    while (listed("n2") != 0 && tu_now_s() - t0 < 30)
        tu_sleep_ms(200);
    TU_CLUSTER_CHECK(&cl, listed("n2") == 0, "n2 still a member 30 s after "
                                             "it was killed");
    /* Its session is over: its connection is no peer any more. */
    ck_assert_int_eq(hop_call(c, rid++, "d0"), KEEL_ENOTMEMBER);
    /* Forgotten: still refused, a stream too, and a new connection with
     * its certificate as well. */
    TU_CLUSTER_CHECK(&cl, tu_cluster_forget(&cl, 0, "n2", 50, 200, &out) == 0,
                     "forget n2");
    free(out);
    ck_assert_int_eq(hop_call(c, rid++, "d0"), KEEL_ENOTMEMBER);
    queue_xfer(c, rid);
    ck_assert_int_eq(keel_client_flush(c), 0);
    ck_assert_int_eq(answer_code(c, rid++), KEEL_EDENIED);
    keel_client_close(c);
    ck_assert_msg(tls_connect(0, "n2", ca, &c2, why, sizeof why) == 0, "%s",
                  why);
    ck_assert_int_eq(hop_call(c2, rid++, "d0"), KEEL_ENOTMEMBER);
    keel_client_close(c2);
}
END_TEST

START_TEST(foreign_ca_gets_no_link)
{
    keel_client *c = NULL;
    char why[512];
    long v;
    int k, failed = 0;

    start_node(0, "n0");
    start_node(1, "n1");
    wait_served("h", NIDS);
    /* A certificate that names member n1 but comes from another CA: the
     * handshake fails, nothing is sent. */
    ck_assert_int_eq(tls_connect(0, "fake-n1", ca, &c, why, sizeof why),
                     KEEL_ENOTSENT);
    ck_assert_msg(strstr(why, "unknown ca") != NULL, "why: %s", why);
    /* A node started with it (trusting the right CA) reaches ZooKeeper
     * but no other node: whatever it must forward fails, and nothing of
     * it runs. Its clients trust its certificate's CA. */
    setenv("KEEL_TLS_CA", oca, 1);
    start_node(2, "fake-n1");
    cl.quiet = 1;
    for (k = 0; k < NIDS; k++) {
        char id[32];
        snprintf(id, sizeof id, "h%d", k);
        if (tu_cluster_counter(&cl, 2, id, "incr") < 0)
            failed++;
    }
    cl.quiet = 0;
    setenv("KEEL_TLS_CA", ca, 1);
    TU_CLUSTER_CHECK(&cl, failed == NIDS, "%d of %d calls through the node "
                     "with a foreign certificate failed", failed, NIDS);
    {
        char *log = tu_keeld_log(&cl.nodes[2]);
        int refused = log != NULL && strstr(log, "unknown ca") != NULL;
        free(log);
        TU_CLUSTER_CHECK(&cl, refused, "n2's links were not refused");
    }
    /* The node goes; what it was given returns to the others. Every
     * counter is still 0 (at most 60 s for the map to settle again). */
    tu_keeld_stop(&cl.nodes[2], SIGKILL);
    wait_served("h", NIDS);
    for (k = 0; k < NIDS; k++) {
        char id[32];
        snprintf(id, sizeof id, "h%d", k);
        v = tu_cluster_counter(&cl, 0, id, "get");
        TU_CLUSTER_CHECK(&cl, v == 0, "%s is %ld", id, v);
    }
}
END_TEST

START_TEST(revoked_node_gets_no_link)
{
    char crl[512];
    int k, failed = 0;
    long v;

    ck_assert_int_eq(tu_certs_revoke(cl.dir, "ca", "n2"), 0);
    ck_assert_int_eq(tu_certs_crl(cl.dir, "ca", "crl", 0), 0);
    tu_certs_path(crl, sizeof crl, cl.dir, "crl", "pem");
    start_node_crl(0, "n0", crl);
    start_node_crl(1, "n1", crl);
    wait_served("r", NIDS);
    /* n2's certificate is from the cluster's CA and names a member, but
     * is revoked: its links are refused both ways (it does not know, and
     * has no CRL: with one it would not start). Whatever it must forward
     * fails, and nothing of it runs. */
    start_node(2, "n2");
    cl.quiet = 1;
    for (k = 0; k < NIDS; k++) {
        char id[32];
        snprintf(id, sizeof id, "r%d", k);
        if (tu_cluster_counter(&cl, 2, id, "incr") < 0)
            failed++;
    }
    cl.quiet = 0;
    TU_CLUSTER_CHECK(&cl, failed == NIDS, "%d of %d calls through the node "
                     "with a revoked certificate failed", failed, NIDS);
    {
        char *log = tu_keeld_log(&cl.nodes[2]);
        int refused = log != NULL && strstr(log, "revoked") != NULL;
        free(log);
        TU_CLUSTER_CHECK(&cl, refused, "n2's links were not refused");
    }
    tu_keeld_stop(&cl.nodes[2], SIGKILL);
    wait_served("r", NIDS);
    for (k = 0; k < NIDS; k++) {
        char id[32];
        snprintf(id, sizeof id, "r%d", k);
        v = tu_cluster_counter(&cl, 0, id, "get");
        TU_CLUSTER_CHECK(&cl, v == 0, "%s is %ld", id, v);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_tls");
    TCase *tc = tcase_create("tls");

    if (!tu_certs_available()) {
        fprintf(stderr, "test_cluster_tls: the openssl command is not "
                        "installed\n");
        return 1;
    }
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, forwards_over_mutual_tls);
    tcase_add_test(tc, forged_peer_frames_denied);
    tcase_add_test(tc, foreign_ca_gets_no_link);
    tcase_add_test(tc, departed_node_loses_peer_rights);
    tcase_add_test(tc, revoked_node_gets_no_link);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&cl, s);
}
