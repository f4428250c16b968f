/* A cluster secured with mutual TLS (docs/security.md, "TLS"), as in
 * test_cluster_tls.c: a certificate from another CA, even one naming a
 * member, gets no connection at all, and a node started with one cannot
 * forward; nor can a node whose certificate the cluster's CRL revokes.
 * Every wait is bounded. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "certs.h"
#include "cltls.h"
#include "cluster.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "testutil.h"

static tu_cluster cl;
static char ca[512], oca[512];

static void setup(void)
{
    tu_cltls_setup(&cl, "cltlsref", ca, oca);
}

static void teardown(void)
{
    tu_cluster_teardown(&cl, SIGTERM);
}

static void start_node_crl(int i, const char *name, const char *crl)
{
    tu_cltls_start(&cl, i, name, ca, crl, NULL);
}

/* The node without links: each call it cannot forward waits out its hold
 * bound, here 1 s rather than 5, before it fails. */
static void start_unlinked(int i, const char *name)
{
    tu_cltls_start(&cl, i, name, ca, NULL, "1000");
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

/* Node 2, started without links (its certificate refused), against the
 * others serving prefix0..: every call through it fails (its clients
 * trusting client_ca), its log names the refusal, and once it is gone
 * every counter is still 0, nothing of it having run (at most 60 s for
 * the map to settle again). */
static void unlinked_node_runs_nothing(const char *prefix,
                                       const char *client_ca,
                                       const char *refusal)
{
    char id[32];
    int k, failed = 0;
    long v;

    setenv("KEEL_TLS_CA", client_ca, 1);
    cl.quiet = 1;
    for (k = 0; k < NIDS; k++) {
        snprintf(id, sizeof id, "%s%d", prefix, k);
        if (tu_cluster_counter(&cl, 2, id, "incr") < 0)
            failed++;
    }
    cl.quiet = 0;
    setenv("KEEL_TLS_CA", ca, 1);
    TU_CLUSTER_CHECK(&cl, failed == NIDS, "%d of %d calls through the node "
                     "whose links are refused (%s) failed", failed, NIDS,
                     refusal);
    {
        char *log = tu_keeld_log(&cl.nodes[2]);
        int refused = log != NULL && strstr(log, refusal) != NULL;
        free(log);
        TU_CLUSTER_CHECK(&cl, refused, "n2's links were not refused (%s)",
                         refusal);
    }
    tu_keeld_stop(&cl.nodes[2], SIGKILL);
    wait_served(prefix, NIDS);
    for (k = 0; k < NIDS; k++) {
        snprintf(id, sizeof id, "%s%d", prefix, k);
        v = tu_cluster_counter(&cl, 0, id, "get");
        TU_CLUSTER_CHECK(&cl, v == 0, "%s is %ld", id, v);
    }
}

START_TEST(foreign_ca_gets_no_link)
{
    keel_client *c = NULL;
    char why[512];

    start_node_crl(0, "n0", NULL);
    start_node_crl(1, "n1", NULL);
    wait_served("h", NIDS);
    /* A certificate that names member n1 but comes from another CA: the
     * handshake fails, nothing is sent. */
    ck_assert_int_eq(tls_connect(0, "fake-n1", ca, &c, why, sizeof why),
                     KEEL_ENOTSENT);
    ck_assert_msg(strstr(why, "unknown ca") != NULL, "why: %s", why);
    /* A node started with another CA's certificate for its own name
     * (one naming another node would not start) reaches ZooKeeper but no
     * other node: whatever it must forward fails, and nothing of it
     * runs. Its clients (the start's readiness check too) trust its
     * certificate's CA. */
    ck_assert_int_eq(tu_certs_issue(cl.dir, "other", "fake-n2", "node:n2"),
                     0);
    setenv("KEEL_TLS_CA", oca, 1);
    start_unlinked(2, "fake-n2");
    unlinked_node_runs_nothing("h", oca, "unknown ca");
}
END_TEST

START_TEST(revoked_node_gets_no_link)
{
    char crl[512];

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
    start_unlinked(2, "n2");
    unlinked_node_runs_nothing("r", ca, "revoked");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_tls_refused");
    TCase *tc = tcase_create("tls");

    if (!tu_certs_available()) {
        fprintf(stderr, "test_cluster_tls_refused: the openssl command is "
                        "not installed\n");
        return 1;
    }
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, foreign_ca_gets_no_link);
    tcase_add_test(tc, revoked_node_gets_no_link);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&cl, s);
}
