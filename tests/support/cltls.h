/* The fixture of the cluster TLS tests (test_cluster_tls*.c): one CA for
 * the cluster, with node certificates n0..n2 (CN=node:n<i>) and a client
 * certificate alice (CN=client:alice); another CA ("other") with a
 * certificate fake-n1 that names member n1. */
#ifndef KEEL_TESTS_SUPPORT_CLTLS_H
#define KEEL_TESTS_SUPPORT_CLTLS_H

#include <stddef.h>

#include "cluster.h"
#include "keel.h"
#include "runtime/client.h"

/* Sets cl up (tu_cluster_setup with name, 16 shards), makes the
 * certificates in its directory, puts the two CAs' paths in ca and oca
 * (512 bytes each) and has the CLI trust the cluster's CA
 * (KEEL_TLS_CA). */
void tu_cltls_setup(tu_cluster *cl, const char *name, char *ca, char *oca);
/* Starts node i with the certificate `cert` of the test's directory,
 * trusting ca, with the CRL file crl (NULL: none) and the hold bound
 * hold_ms (--hold-timeout; NULL: the default). */
void tu_cltls_start(tu_cluster *cl, int i, const char *cert, const char *ca,
                    const char *crl, const char *hold_ms);
/* A TLS client connection to node i trusting with_ca, presenting the
 * certificate `cert` (NULL: none). keel_client_connect_tls's result. */
int tu_cltls_connect(tu_cluster *cl, int i, const char *cert,
                     const char *with_ca, keel_client **c, char *why,
                     size_t whylen);
/* Waits (at most 60 s) until every one of prefix0..prefix<nids-1>
 * answers `get` through node 0, which means the map has settled enough
 * to serve them. */
void tu_cltls_wait_served(tu_cluster *cl, const char *prefix, int nids);

#endif
