/* A cluster secured with mutual TLS (docs/security.md, "TLS"): real
 * ZooKeeper, three keeld with node certificates CN=node:n<i> from one CA.
 * Calls forwarded between nodes work over the TLS links; a connection
 * without a node certificate cannot forward a call (hop bits) or stream a
 * unit (XFER), even after INFO "peer" (EDENIED, nothing changes); a
 * node's connections lose their rights when it leaves the cluster.
 * (test_cluster_tls_refused.c: certificates that get no link at all.)
 * Every wait is bounded. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "certs.h"
#include "clmap.h"
#include "cltls.h"
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
    tu_cltls_setup(&cl, "cltls", ca, oca);
}

static void teardown(void)
{
    tu_cluster_teardown(&cl, SIGTERM);
}

static void start_node(int i, const char *name)
{
    tu_cltls_start(&cl, i, name, ca, NULL, NULL);
}

static int tls_connect(int i, const char *name, const char *with_ca,
                       keel_client **c, char *why, size_t whylen)
{
    return tu_cltls_connect(&cl, i, name, with_ca, c, why, whylen);
}

static void wait_served(const char *prefix, int nids)
{
    tu_cltls_wait_served(&cl, prefix, nids);
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
        /* A client's certificate may not forward or stream (EDENIED);
         * with none the connection is anonymous (EUNAUTH). */
        queue_hopped(c, 7, "g0");
        ck_assert_int_eq(keel_client_flush(c), 0);
        ck_assert_int_eq(answer_code(c, 7),
                         w == 0 ? KEEL_EDENIED : KEEL_EUNAUTH);
        queue_xfer(c, 8);
        ck_assert_int_eq(keel_client_flush(c), 0);
        ck_assert_int_eq(answer_code(c, 8),
                         w == 0 ? KEEL_EDENIED : KEEL_EUNAUTH);
        keel_client_close(c);
        c = NULL;
    }
    ck_assert_int_eq(tu_cluster_counter(&cl, 0, "g0", "get"), before);
    ck_assert_int_eq(tu_cluster_counter(&cl, 1, "g0", "get"), before);
    /* Counted as refused: by the frame checks, or (with TLS, access
     * control is on) by the access rules. */
    ck_assert(tu_keel_stat(cl.nodes[0].addr, "frames_bad") +
                  tu_keel_stat(cl.nodes[0].addr, "auth_refused_denied") +
                  tu_keel_stat(cl.nodes[0].addr, "auth_refused_unauth") >=
              xfers_bad + 4);
}
END_TEST

/* A confirm round (docs/protocol.md, "REPL body": seq 0, no ops) for
 * unit (cap "", shard) at epoch, in the name of node `from`, on c. */
static void queue_confirm(keel_client *c, uint64_t rid, const char *from,
                          uint32_t shard, uint64_t epoch)
{
    uint8_t frame[KEEL_FRAME_HEADER + 128], *p = frame + KEEL_FRAME_HEADER;
    size_t len = keel_repl_head_encode(p, from, strlen(from), 1, 1);

    len += keel_repl_unit_encode(p + len, "", 0, shard, epoch, 0, 0);
    keel_frame_header(frame, KEEL_FRAME_REPL, rid, len);
    ck_assert_int_eq(keel_client_queue_raw(c, frame, KEEL_FRAME_HEADER + len),
                     0);
}

/* A member's connection sends REPL in its own name only. n2's
 * certificate on a connection to n0, a confirm round of a unit that n1
 * leads and n0 backs up, in n1's name: n0 took it as n1's and confirmed
 * it (any member could speak for another's units: confirm its reads,
 * send its writes). Now it is refused EDENIED; in n1's own name, over
 * n1's certificate, the same round is confirmed. */
START_TEST(member_cannot_replicate_as_another)
{
    keel_shard_map m;
    const keel_map_unit *u = NULL;
    keel_client *c = NULL;
    uint8_t st[8];
    char why[512];
    uint32_t s, shard = 0;
    int i, n0, n1, rc;
    keel_frame f;

    for (i = 0; i < 3; i++) {
        char name[8], pem[512], key[512];
        snprintf(name, sizeof name, "n%d", i);
        tu_certs_path(pem, sizeof pem, cl.dir, name, "pem");
        tu_certs_path(key, sizeof key, cl.dir, name, "key");
        TU_CLUSTER_CHECK(&cl,
                         tu_cluster_start_node(&cl, i, 0, "--tls-cert", pem,
                                               "--tls-key", key, "--tls-ca",
                                               ca, "--replicas", "3",
                                               NULL) == 0,
                         "n%d did not start", i);
    }
    wait_served("m", 1);
    TU_CLUSTER_CHECK(&cl, tu_map_wait_settled(&cl, 3), "map not settled");
    TU_CLUSTER_CHECK(&cl, tu_map_read(&cl, &m) == 0, "map not read");
    n0 = keel_map_node_index(&m, "n0");
    n1 = keel_map_node_index(&m, "n1");
    for (s = 0; s < m.shard_count && u == NULL; s++) {
        const keel_map_unit *x = tu_map_unit(&m, "", s);
        if (x->nreplicas > 0 && x->replicas[0] == n1 &&
            tu_map_in_sync(&m, x, "n0") && n0 >= 0) {
            u = x;
            shard = s;
        }
    }
    TU_CLUSTER_CHECK(&cl, u != NULL, "no unit led by n1 with n0 in sync");
    for (i = 0; i < 2; i++) {
        const char *cert = i == 0 ? "n2" : "n1";
        ck_assert_msg(tls_connect(0, cert, ca, &c, why, sizeof why) == 0,
                      "%s", why);
        queue_confirm(c, 5, "n1", shard, u->shard_epoch);
        ck_assert_int_eq(keel_client_flush(c), 0);
        ck_assert_int_eq(keel_client_recv(c, &f), 0);
        ck_assert_uint_eq(f.request_id, 5);
        if (i == 0) {
            rc = f.kind == KEEL_FRAME_ERROR
                     ? keel_error_body_parse(f.body, f.body_len, NULL, NULL)
                     : 0;
            ck_assert_msg(rc == KEEL_EDENIED,
                          "n0 took n2's confirm round in n1's name "
                          "(answer %d, code %d)",
                          f.kind, rc);
        } else {
            /* nunits be16 | len(cap) 0 | shard be16 | status be16 | ... */
            ck_assert_int_eq(f.kind, KEEL_FRAME_REPLY);
            ck_assert_uint_ge(f.body_len, 7);
            memcpy(st, f.body, 7);
            ck_assert_msg(st[5] == 0 && st[6] == 0,
                          "n1's own confirm round: status %d",
                          st[5] << 8 | st[6]);
        }
        keel_client_close(c);
        c = NULL;
    }
    keel_map_free(&m);
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
    ck_assert_int_eq(answer_code(c, rid++), KEEL_ENOTMEMBER);
    keel_client_close(c);
    ck_assert_msg(tls_connect(0, "n2", ca, &c2, why, sizeof why) == 0, "%s",
                  why);
    ck_assert_int_eq(hop_call(c2, rid++, "d0"), KEEL_ENOTMEMBER);
    keel_client_close(c2);
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
    tcase_add_test(tc, departed_node_loses_peer_rights);
    tcase_add_test(tc, member_cannot_replicate_as_another);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&cl, s);
}
