/* The cluster TLS tests' fixture (cltls.h). */
#include "cltls.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "certs.h"
#include "testutil.h"

void tu_cltls_setup(tu_cluster *cl, const char *name, char *ca, char *oca)
{
    char cn[32], cert[32];
    int i;

    tu_cluster_setup(cl, name, "tls");
    cl->shards = 16;
    ck_assert_int_eq(tu_certs_ca(cl->dir, "ca"), 0);
    ck_assert_int_eq(tu_certs_ca(cl->dir, "other"), 0);
    for (i = 0; i < 3; i++) {
        snprintf(cert, sizeof cert, "n%d", i);
        snprintf(cn, sizeof cn, "node:n%d", i);
        ck_assert_int_eq(tu_certs_issue(cl->dir, "ca", cert, cn), 0);
    }
    ck_assert_int_eq(tu_certs_issue(cl->dir, "ca", "alice", "client:alice"),
                     0);
    /* Another CA's certificate for a member's name. */
    ck_assert_int_eq(tu_certs_issue(cl->dir, "other", "fake-n1", "node:n1"),
                     0);
    /* The CLI's: with TLS, access control is on, and an anonymous
     * client may only PING. */
    ck_assert_int_eq(tu_certs_issue(cl->dir, "ca", "ops", "admin:ops"), 0);
    tu_certs_path(ca, 512, cl->dir, "ca", "pem");
    tu_certs_path(oca, 512, cl->dir, "other", "pem");
    /* The CLI (readiness checks, tu_cluster_counter) trusts the CA and
     * presents the admin certificate. */
    setenv("KEEL_TLS_CA", ca, 1);
    {
        char pem[512], key[512];
        tu_certs_path(pem, sizeof pem, cl->dir, "ops", "pem");
        tu_certs_path(key, sizeof key, cl->dir, "ops", "key");
        setenv("KEEL_TLS_CERT", pem, 1);
        setenv("KEEL_TLS_KEY", key, 1);
    }
}

void tu_cltls_start(tu_cluster *cl, int i, const char *cert, const char *ca,
                    const char *crl, const char *hold_ms)
{
    char pem[512], key[512];
    /* The options that are given, in a row: the list ends at a NULL. */
    const char *o1 = crl != NULL ? "--tls-crl"
                     : hold_ms != NULL ? "--hold-timeout" : NULL;
    const char *v1 = crl != NULL ? crl : hold_ms;
    const char *o2 = crl != NULL && hold_ms != NULL ? "--hold-timeout" : NULL;

    tu_certs_path(pem, sizeof pem, cl->dir, cert, "pem");
    tu_certs_path(key, sizeof key, cl->dir, cert, "key");
    TU_CLUSTER_CHECK(cl,
                     tu_cluster_start_node(cl, i, 0, "--tls-cert", pem,
                                           "--tls-key", key, "--tls-ca", ca,
                                           o1, v1, o2, hold_ms, NULL) == 0,
                     "n%d did not start", i);
}

int tu_cltls_connect(tu_cluster *cl, int i, const char *cert,
                     const char *with_ca, keel_client **c, char *why,
                     size_t whylen)
{
    keel_client_tls t;
    char pem[512], key[512];

    memset(&t, 0, sizeof t);
    t.ca = with_ca;
    if (cert != NULL) {
        t.cert = tu_certs_path(pem, sizeof pem, cl->dir, cert, "pem");
        t.key = tu_certs_path(key, sizeof key, cl->dir, cert, "key");
    }
    return keel_client_connect_tls(cl->nodes[i].addr, 10000, &t, c, why,
                                   whylen);
}

void tu_cltls_wait_served(tu_cluster *cl, const char *prefix, int nids)
{
    int tries, k, ok = 0;
    char id[32];

    cl->quiet = 1;
    for (tries = 0; tries < 600 && !ok; tries++) {
        ok = 1;
        for (k = 0; k < nids && ok; k++) {
            snprintf(id, sizeof id, "%s%d", prefix, k);
            ok = tu_cluster_counter(cl, 0, id, "get") >= 0;
        }
        if (!ok)
            tu_sleep_ms(100);
    }
    cl->quiet = 0;
    TU_CLUSTER_CHECK(cl, ok, "the cluster did not serve %s* in 60 s",
                     prefix);
}
