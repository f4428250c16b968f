/* runtime/tls.c's contexts and connections on their own: a client and a
 * server over two socket pairs joined by a relay in this file, which
 * moves the bytes between them as the test says, so that a test can hold
 * back part of a record; CRLs checked when a context is made and when a
 * certificate is presented. Certificates and CRLs are made per test with
 * the openssl command (tests/support/certs.h). Every wait is bounded. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "certs.h"
#include "keel.h"
#include "runtime/tls.h"
#include "testutil.h"

static char *dir;
static char ca[512], cert[512], key[512], ccert[512], ckey[512];

/* The client's socket is cs[1], the server's ss[0]; the relay reads
 * cs[0] and writes ss[1], and back. */
struct pair {
    int cs[2], ss[2];
    keel_tls_ctx *cctx, *sctx;
    keel_tls *c, *s;
};

static void setup(void)
{
    dir = tu_tmpdir("tlsconn");
    ck_assert_int_eq(tu_certs_ca(dir, "ca"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "node", "node:n0"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "bob", "client:bob"), 0);
    tu_certs_path(ca, sizeof ca, dir, "ca", "pem");
    tu_certs_path(cert, sizeof cert, dir, "node", "pem");
    tu_certs_path(key, sizeof key, dir, "node", "key");
    tu_certs_path(ccert, sizeof ccert, dir, "bob", "pem");
    tu_certs_path(ckey, sizeof ckey, dir, "bob", "key");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

/* Moves what fd `from` holds to fd `to`, at most max bytes. Returns how
 * many. */
static size_t relay(int from, int to, size_t max)
{
    unsigned char buf[65536];
    size_t moved = 0;

    while (moved < max) {
        size_t want = max - moved < sizeof buf ? max - moved : sizeof buf;
        ssize_t r = recv(from, buf, want, MSG_DONTWAIT);
        if (r <= 0)
            break;
        ck_assert_int_eq(send(to, buf, (size_t)r, 0), r);
        moved += (size_t)r;
    }
    return moved;
}

static void relay_all(struct pair *p)
{
    relay(p->cs[0], p->ss[1], SIZE_MAX);
    relay(p->ss[1], p->cs[0], SIZE_MAX);
}

/* Bytes waiting to be read in fd's socket, without taking them. */
static ssize_t waiting(int fd)
{
    unsigned char buf[65536];

    return recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
}

/* Opens a pair: the client presents cfile/kfile (NULL: none), the
 * server checks it against crl (NULL: none). Returns 0 once both sides
 * are done, or the KEEL_E* code of the side that failed first, with its
 * reason in why. */
static int pair_try(struct pair *p, const char *cfile, const char *kfile,
                    const char *crl, char *why, size_t whylen)
{
    char err[512];
    int i, cdone = 0, sdone = 0;

    memset(p, 0, sizeof *p);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0,
                                p->cs),
                     0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0,
                                p->ss),
                     0);
    ck_assert_msg(keel_tls_ctx_create(cfile, kfile, ca, NULL, &p->cctx,
                                      err, sizeof err) == 0,
                  "%s", err);
    ck_assert_msg(keel_tls_ctx_create(cert, key, ca, crl, &p->sctx, err,
                                      sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(keel_tls_connect(p->cctx, p->cs[1], "n0", &p->c), 0);
    ck_assert_int_eq(keel_tls_accept(p->sctx, p->ss[0], &p->s), 0);
    /* Each round moves what the other side wrote; a handful is plenty. */
    for (i = 0; i < 50 && !(cdone && sdone); i++) {
        int rc;
        if (!cdone) {
            rc = keel_tls_handshake(p->c, err, sizeof err);
            if (rc != 0 && rc != KEEL_TLS_WANT_READ &&
                rc != KEEL_TLS_WANT_WRITE) {
                snprintf(why, whylen, "client: %s", err);
                return rc;
            }
            cdone = rc == 0;
        }
        if (!sdone) {
            rc = keel_tls_handshake(p->s, err, sizeof err);
            if (rc != 0 && rc != KEEL_TLS_WANT_READ &&
                rc != KEEL_TLS_WANT_WRITE) {
                snprintf(why, whylen, "server: %s", err);
                return rc;
            }
            sdone = rc == 0;
        }
        relay_all(p);
    }
    ck_assert(cdone && sdone);
    return 0;
}

static void pair_open(struct pair *p)
{
    char why[600];

    ck_assert_msg(pair_try(p, NULL, NULL, NULL, why, sizeof why) == 0, "%s",
                  why);
}

static void pair_close(struct pair *p)
{
    keel_tls_free(p->c);
    keel_tls_free(p->s);
    keel_tls_ctx_unref(p->cctx);
    keel_tls_ctx_unref(p->sctx);
    close(p->cs[0]);
    close(p->cs[1]);
    close(p->ss[0]);
    close(p->ss[1]);
}

static void client_write(struct pair *p, const char *what)
{
    ck_assert_int_eq(keel_tls_write(p->c, what, strlen(what)),
                     (ssize_t)strlen(what));
}

/* Reads one record's bytes on the server and checks them. */
static void server_reads(struct pair *p, const char *what)
{
    char buf[256];
    ssize_t r = keel_tls_read(p->s, buf, sizeof buf);

    ck_assert_int_eq(r, (ssize_t)strlen(what));
    ck_assert(memcmp(buf, what, (size_t)r) == 0);
}

/* Three records arrive together: the first read takes all of them from
 * the socket in one read(2), hands out the first, and says that more is
 * inside (pending, not drained); once the last is handed out the
 * connection says the socket was found empty (drained), so a caller
 * need not ask it again and meet EAGAIN. */
START_TEST(burst_read_at_once)
{
    struct pair p;
    char buf[64];

    pair_open(&p);
    client_write(&p, "one");
    client_write(&p, "two");
    client_write(&p, "three");
    relay_all(&p);
    ck_assert_int_gt(waiting(p.ss[0]), 0);
    server_reads(&p, "one");
    /* Read ahead: nothing is left in the socket. */
    ck_assert_int_eq(waiting(p.ss[0]), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(keel_tls_pending(p.s), 1);
    ck_assert_int_eq(keel_tls_drained(p.s), 0);
    server_reads(&p, "two");
    ck_assert_int_eq(keel_tls_drained(p.s), 0);
    server_reads(&p, "three");
    ck_assert_int_eq(keel_tls_pending(p.s), 0);
    ck_assert_int_eq(keel_tls_drained(p.s), 1);
    ck_assert_int_eq(keel_tls_read(p.s, buf, sizeof buf),
                     KEEL_TLS_WANT_READ);
    /* What is left of a record after a read that filled the caller's
     * buffer waits inside: not drained until it is handed out. */
    client_write(&p, "four");
    relay_all(&p);
    ck_assert_int_eq(keel_tls_read(p.s, buf, 2), 2);
    ck_assert_int_eq(keel_tls_drained(p.s), 0);
    ck_assert_int_eq(keel_tls_read(p.s, buf, sizeof buf), 2);
    ck_assert_int_eq(keel_tls_drained(p.s), 1);
    pair_close(&p);
}
END_TEST

/* Part of a record is not something a read can return: after a read that
 * wanted the socket, pending is 0 although bytes sit inside (a caller
 * that polls pending would otherwise spin until the rest arrives). */
START_TEST(partial_record_not_pending)
{
    struct pair p;
    char big[3000], buf[4096];
    ssize_t r;

    pair_open(&p);
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    client_write(&p, big);
    ck_assert_int_eq(relay(p.cs[0], p.ss[1], 1000), 1000);
    ck_assert_int_eq(keel_tls_read(p.s, buf, sizeof buf),
                     KEEL_TLS_WANT_READ);
    ck_assert_int_eq(keel_tls_pending(p.s), 0);
    ck_assert_int_eq(keel_tls_drained(p.s), 0);
    relay_all(&p);
    r = keel_tls_read(p.s, buf, sizeof buf);
    ck_assert_int_eq(r, (ssize_t)strlen(big));
    ck_assert(memcmp(buf, big, (size_t)r) == 0);
    /* OpenSSL asked the socket for just the rest of the record, so
     * whether more waits there is not known: drained or not, a read now
     * finds nothing and leaves nothing pending. */
    ck_assert_int_eq(keel_tls_read(p.s, buf, sizeof buf),
                     KEEL_TLS_WANT_READ);
    ck_assert_int_eq(keel_tls_pending(p.s), 0);
    pair_close(&p);
}
END_TEST

/* keel_tls_ctx_create with a CRL: err (the reason) for a file that would
 * not do, or 0. */
static int ctx_with_crl(const char *crl, char *err, size_t errlen)
{
    keel_tls_ctx *ctx = NULL;
    int rc = keel_tls_ctx_create(cert, key, ca, crl, &ctx, err, errlen);

    keel_tls_ctx_unref(ctx);
    return rc;
}

/* A CRL file that would not do is refused when the context is made, with
 * the reason, rather than found out when every certificate of its CA
 * starts to fail: a configuration error (EINVAL), not a storage one. */
START_TEST(crl_checked_at_load)
{
    char crl[512], err[600];

    ck_assert_int_eq(tu_certs_ca(dir, "other"), 0);
    ck_assert_int_eq(tu_certs_crl(dir, "ca", "good", 0), 0);
    ck_assert_msg(ctx_with_crl(tu_certs_path(crl, sizeof crl, dir, "good",
                                             "pem"),
                               err, sizeof err) == 0,
                  "%s", err);
    /* Signed by a CA the node does not trust. */
    ck_assert_int_eq(tu_certs_crl(dir, "other", "foreign", 0), 0);
    ck_assert_int_eq(ctx_with_crl(tu_certs_path(crl, sizeof crl, dir,
                                                "foreign", "pem"),
                                  err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_msg(strstr(err, "not signed by a CA") != NULL, "%s", err);
    /* Past its next update. */
    ck_assert_int_eq(tu_certs_crl(dir, "ca", "stale", 1), 0);
    ck_assert_int_eq(ctx_with_crl(tu_certs_path(crl, sizeof crl, dir, "stale",
                                                "pem"),
                                  err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_msg(strstr(err, "expired") != NULL, "%s", err);
    /* No CRL at all (a certificate), and no file. */
    ck_assert_int_eq(ctx_with_crl(ca, err, sizeof err), KEEL_EINVAL);
    ck_assert_msg(strstr(err, "no CRL") != NULL, "%s", err);
    ck_assert_int_eq(ctx_with_crl(tu_certs_path(crl, sizeof crl, dir,
                                                "missing", "pem"),
                                  err, sizeof err),
                     KEEL_EINVAL);
    /* One that revokes this side's own certificate. */
    ck_assert_int_eq(tu_certs_revoke(dir, "ca", "node"), 0);
    ck_assert_int_eq(tu_certs_crl(dir, "ca", "self", 0), 0);
    ck_assert_int_eq(ctx_with_crl(tu_certs_path(crl, sizeof crl, dir, "self",
                                                "pem"),
                                  err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_msg(strstr(err, "own certificate") != NULL, "%s", err);
}
END_TEST

/* A node's context: a key that does not match its certificate is a
 * configuration error; in a cluster the certificate must name the node
 * (CN=node:<its id>), and standalone any node will do, but only a node:
 * clients refuse a server whose certificate is a client's. */
START_TEST(node_ctx_names_its_node)
{
    keel_tls_ctx *ctx = NULL;
    char err[600], want[700];

    ck_assert_int_eq(keel_tls_node_ctx_create(cert, ckey, ca, NULL, NULL,
                                              &ctx, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_msg(strstr(err, "key values mismatch") != NULL, "%s", err);
    ck_assert_int_eq(keel_tls_node_ctx_create(cert, key, ca, NULL, NULL,
                                              &ctx, err, sizeof err),
                     0);
    keel_tls_ctx_unref(ctx);
    ctx = NULL;
    ck_assert_int_eq(keel_tls_node_ctx_create(cert, key, ca, NULL, "n0",
                                              &ctx, err, sizeof err),
                     0);
    keel_tls_ctx_unref(ctx);
    ctx = NULL;
    ck_assert_int_eq(keel_tls_node_ctx_create(cert, key, ca, NULL, "n4",
                                              &ctx, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_ptr_null(ctx);
    snprintf(want, sizeof want,
             "certificate %s names node:n0, but this node is n4: a cluster "
             "node's certificate must name its own node id (CN=node:n4)",
             cert);
    ck_assert_msg(strstr(err, want) != NULL, "%s", err);
    ck_assert_int_eq(keel_tls_node_ctx_create(ccert, ckey, ca, NULL, "n4",
                                              &ctx, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_msg(strstr(err, "names client:bob, not a node") != NULL, "%s",
                  err);
    ck_assert_int_eq(keel_tls_node_ctx_create(ccert, ckey, ca, NULL, NULL,
                                              &ctx, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_ptr_null(ctx);
    ck_assert_msg(strstr(err, "names client:bob, not a node: a node's "
                              "certificate must name a node") != NULL,
                  "%s", err);
}
END_TEST

/* A client certificate the server's CRL lists fails the handshake on both
 * sides; keel_tls_revoked finds it on a connection made before the CRL
 * was loaded. */
START_TEST(crl_refuses_revoked)
{
    struct pair p;
    keel_tls_ctx *later = NULL;
    char crl[512], why[600];

    ck_assert_int_eq(tu_certs_crl(dir, "ca", "none", 0), 0);
    tu_certs_path(crl, sizeof crl, dir, "none", "pem");
    /* Not revoked yet: in. */
    ck_assert_msg(pair_try(&p, ccert, ckey, crl, why, sizeof why) == 0, "%s",
                  why);
    ck_assert_int_eq(tu_certs_revoke(dir, "ca", "bob"), 0);
    ck_assert_int_eq(tu_certs_crl(dir, "ca", "revoked", 0), 0);
    tu_certs_path(crl, sizeof crl, dir, "revoked", "pem");
    ck_assert_msg(keel_tls_ctx_create(cert, key, ca, crl, &later, why,
                                      sizeof why) == 0,
                  "%s", why);
    ck_assert_int_eq(keel_tls_revoked(later, p.s), 1);
    pair_close(&p);
    /* A client without a certificate has nothing to revoke. */
    pair_open(&p);
    ck_assert_int_eq(keel_tls_revoked(later, p.s), 0);
    pair_close(&p);
    keel_tls_ctx_unref(later);
    /* Revoked: out, with the reason on both sides. */
    ck_assert_int_eq(pair_try(&p, ccert, ckey, crl, why, sizeof why),
                     KEEL_ECONN);
    ck_assert_msg(strstr(why, "revoked") != NULL, "%s", why);
    pair_close(&p);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("tls_conn");
    TCase *tc = tcase_create("io");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, burst_read_at_once);
    tcase_add_test(tc, partial_record_not_pending);
    tcase_add_test(tc, crl_checked_at_load);
    tcase_add_test(tc, node_ctx_names_its_node);
    tcase_add_test(tc, crl_refuses_revoked);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (!tu_certs_available()) {
        fprintf(stderr, "test_tls_conn: the openssl command is not "
                        "installed\n");
        return 1;
    }
    return tu_run_suite(suite());
}
