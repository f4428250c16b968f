/* runtime/tls.c's connections on their own: a client and a server over
 * two socket pairs joined by a relay in this file, which moves the bytes
 * between them as the test says, so that a test can hold back part of a
 * record. Certificates are made per test with the openssl command
 * (tests/support/certs.h). Every wait is bounded. */
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
static char ca[512], cert[512], key[512];

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
    tu_certs_path(ca, sizeof ca, dir, "ca", "pem");
    tu_certs_path(cert, sizeof cert, dir, "node", "pem");
    tu_certs_path(key, sizeof key, dir, "node", "key");
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

static void pair_open(struct pair *p)
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
    ck_assert_int_eq(keel_tls_ctx_create(NULL, NULL, ca, &p->cctx, err,
                                         sizeof err),
                     0);
    ck_assert_msg(keel_tls_ctx_create(cert, key, ca, &p->sctx, err,
                                      sizeof err) == 0,
                  "%s", err);
    ck_assert_int_eq(keel_tls_connect(p->cctx, p->cs[1], "n0", &p->c), 0);
    ck_assert_int_eq(keel_tls_accept(p->sctx, p->ss[0], &p->s), 0);
    /* Each round moves what the other side wrote; a handful is plenty. */
    for (i = 0; i < 50 && !(cdone && sdone); i++) {
        int rc;
        if (!cdone) {
            rc = keel_tls_handshake(p->c, err, sizeof err);
            ck_assert_msg(rc == 0 || rc == KEEL_TLS_WANT_READ ||
                              rc == KEEL_TLS_WANT_WRITE,
                          "client: %d %s", rc, err);
            cdone = rc == 0;
        }
        if (!sdone) {
            rc = keel_tls_handshake(p->s, err, sizeof err);
            ck_assert_msg(rc == 0 || rc == KEEL_TLS_WANT_READ ||
                              rc == KEEL_TLS_WANT_WRITE,
                          "server: %d %s", rc, err);
            sdone = rc == 0;
        }
        relay_all(p);
    }
    ck_assert(cdone && sdone);
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

static Suite *suite(void)
{
    Suite *s = suite_create("tls_conn");
    TCase *tc = tcase_create("io");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, burst_read_at_once);
    tcase_add_test(tc, partial_record_not_pending);
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
