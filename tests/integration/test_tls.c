/* TLS on a standalone keeld (docs/security.md, "TLS"): a client that
 * trusts the CA is answered, with or without a client certificate; a
 * plaintext client, a client certificate from another CA and a client
 * that does not trust the node's CA get nowhere, and nothing they sent
 * runs; a plaintext client is told in plaintext that the port requires
 * TLS, and a TLS client on a plaintext port learns that it is one; over
 * the connection limit a TLS client is told EOVERLOAD, and a flood of
 * such connections costs the node a bounded number of handshakes for a
 * bounded time; a client's hop count is refused EDENIED; SIGHUP swaps the
 * certificate for new connections while an open one goes on, and a bad
 * file on reload keeps the old one. Certificates are made per test with
 * the openssl command (tests/support/certs.h). Every wait is bounded. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "certs.h"
#include "keel.h"
#include "proc.h"
#include "rawconn.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"
#include "zk.h"

static char *dir, *data;
static tu_keeld node;
static char ca[512], cert[512], key[512], ccert[512], ckey[512];
static char ocert[512], okey[512], oca[512], opscert[512], opskey[512];

static void setup(void)
{
    dir = tu_tmpdir("tls");
    if (asprintf(&data, "%s/data", dir) < 0)
        abort();
    memset(&node, 0, sizeof node);
    ck_assert_int_eq(tu_certs_ca(dir, "ca"), 0);
    ck_assert_int_eq(tu_certs_ca(dir, "other"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "node", "node:n0"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "alice", "client:alice"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "ops", "admin:ops"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "other", "mallory",
                                    "client:mallory"),
                     0);
    tu_certs_path(ca, sizeof ca, dir, "ca", "pem");
    tu_certs_path(oca, sizeof oca, dir, "other", "pem");
    tu_certs_path(cert, sizeof cert, dir, "node", "pem");
    tu_certs_path(key, sizeof key, dir, "node", "key");
    tu_certs_path(opscert, sizeof opscert, dir, "ops", "pem");
    tu_certs_path(opskey, sizeof opskey, dir, "ops", "key");
    tu_certs_path(ccert, sizeof ccert, dir, "alice", "pem");
    tu_certs_path(ckey, sizeof ckey, dir, "alice", "key");
    tu_certs_path(ocert, sizeof ocert, dir, "mallory", "pem");
    tu_certs_path(okey, sizeof okey, dir, "mallory", "key");
    /* The CLI (tu_keeld_start's readiness check, tu_keel) trusts the CA. */
    setenv("KEEL_TLS_CA", ca, 1);
}

static void teardown(void)
{
    tu_keeld_free(&node);
    tu_rmrf(dir);
    free(dir);
    free(data);
}

static void start_node(void)
{
    const char *extra[] = {"--tls-cert", cert, "--tls-key", key,
                           "--tls-ca", ca, NULL};

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
}

/* A TLS connection: the CA file, a client certificate and its key (NULL:
 * alice's, since with TLS access control is on and an anonymous
 * connection may only PING; "": none, anonymous) and the node id the
 * server must prove. */
static int tls_connect(const char *with_ca, const char *cfile,
                       const char *kfile, const char *want_node,
                       keel_client **c, char *why, size_t whylen)
{
    keel_client_tls t;

    if (cfile == NULL) {
        cfile = ccert;
        kfile = ckey;
    } else if (cfile[0] == '\0') {
        cfile = kfile = NULL;
    }
    memset(&t, 0, sizeof t);
    t.ca = with_ca;
    t.cert = cfile;
    t.key = kfile;
    t.node = want_node;
    return keel_client_connect_tls(node.addr, 5000, &t, c, why, whylen);
}

/* counter/id `op` over c: the value, or -1. */
static long counter(keel_client *c, const char *id, const char *op)
{
    char *reply = NULL;
    long v = -1;
    int rc = keel_client_call(c, KEEL_FRAME_CALL, "counter", id, strlen(id),
                              op, strlen(op), &reply, NULL);

    if (rc == 0)
        v = strtol(reply, NULL, 10);
    free(reply);
    return v;
}

/* counter/id's value read over a fresh TLS connection, with the
 * operator's certificate (which no test revokes). */
static long counter_get(const char *id)
{
    keel_client *c = NULL;
    long v;

    ck_assert_int_eq(tls_connect(ca, opscert, opskey, NULL, &c, NULL, 0), 0);
    v = counter(c, id, "get");
    keel_client_close(c);
    return v;
}

/* Waits (at most 10 s) for `what` to appear in the node's log `times`
 * times. */
static int log_has(const char *what, int times)
{
    int tries;

    for (tries = 0; tries < 200; tries++) {
        char *log = tu_keeld_log(&node), *p = log;
        int n = 0;
        while (p != NULL && (p = strstr(p, what)) != NULL) {
            n++;
            p++;
        }
        free(log);
        if (n >= times)
            return 1;
        usleep(50000);
    }
    return 0;
}

START_TEST(tls_client_answered)
{
    keel_client *c = NULL;
    char why[512];

    start_node();
    /* Server authentication only: the connection is made, and it is
     * anonymous: with TLS, access control is on, and it may PING but not
     * call (nothing ran). */
    ck_assert_int_eq(tls_connect(ca, "", "", NULL, &c, why, sizeof why), 0);
    {
        char *pong = NULL;
        ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_PING, NULL, NULL, 0,
                                          "hi", 2, &pong, NULL),
                         0);
        free(pong);
    }
    {
        char *reply = NULL;
        int rc = keel_client_call(c, KEEL_FRAME_CALL, "counter", "c1", 2,
                                  "incr", 4, &reply, NULL);
        ck_assert_msg(rc == KEEL_EUNAUTH, "anonymous call: %s (%s)",
                      keel_err_name(rc), reply ? reply : "");
        free(reply);
    }
    keel_client_close(c);
    /* Mutual: a client certificate from the CA; the node's id checked. */
    ck_assert_msg(tls_connect(ca, ccert, ckey, "n0", &c, why, sizeof why) ==
                      0,
                  "%s", why);
    ck_assert_int_eq(counter(c, "c1", "incr"), 1);
    ck_assert_int_eq(counter(c, "c1", "incr"), 2);
    keel_client_close(c);
    /* The CLI through KEEL_TLS_CA. */
    ck_assert_int_eq(tu_keel(node.addr, NULL, NULL, "ping", NULL), 0);
}
END_TEST

START_TEST(plaintext_refused)
{
    keel_client *c = NULL;
    char *reply = NULL, *out = NULL, *err = NULL;
    char *bin = tu_bin("keel");
    const char *argv[] = {bin, "-a", NULL, "call", "counter", "p1", "incr",
                          NULL};
    int rc;

    start_node();
    /* The first bytes are not a TLS handshake record: the node answers in
     * plaintext, EUNAUTH quoting request id 0 (the call did not run), and
     * closes. */
    ck_assert_int_eq(keel_client_connect(node.addr, 5000, &c), 0);
    rc = keel_client_call(c, KEEL_FRAME_CALL, "counter", "p1", 2, "incr", 4,
                          &reply, NULL);
    ck_assert_msg(rc == KEEL_EUNAUTH, "plaintext call: %d (%s)", rc,
                  reply ? reply : "");
    ck_assert_msg(strstr(reply, "requires TLS") != NULL, "%s", reply);
    free(reply);
    keel_client_close(c);
    /* The CLI without TLS says the same. */
    unsetenv("KEEL_TLS_CA");
    argv[2] = node.addr;
    ck_assert_int_ne(tu_run(argv, &out, &err), 0);
    ck_assert_msg(strstr(err, "requires TLS") != NULL, "%s", err);
    free(out);
    free(err);
    free(bin);
    setenv("KEEL_TLS_CA", ca, 1);
    ck_assert_int_eq(counter_get("p1"), 0);
}
END_TEST

/* A TLS client on a plaintext port learns at once that it is one, before
 * it sends anything; nothing runs. */
START_TEST(tls_client_on_plaintext_port)
{
    keel_client *c = NULL;
    char why[512], *reply = NULL;
    struct timespec t0, t1;
    long ms;

    unsetenv("KEEL_TLS_CA"); /* tu_keeld_start's ping is plaintext */
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, NULL), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(tls_connect(ca, NULL, NULL, NULL, &c, why, sizeof why),
                     KEEL_ENOTSENT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    ck_assert_msg(strstr(why, "does not speak TLS") != NULL, "why: %s", why);
    ck_assert_msg(ms < 3000, "the refusal took %ld ms", ms);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(keel_client_connect(node.addr, 5000, &c), 0);
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "counter", "q1", 2,
                                      "get", 3, &reply, NULL),
                     0);
    ck_assert_str_eq(reply, "0");
    free(reply);
    keel_client_close(c);
}
END_TEST

/* Over --max-connections a TLS client is told EOVERLOAD inside TLS, as a
 * plaintext client is in plaintext; its call did not run. */
START_TEST(overload_told_over_tls)
{
    const char *extra[] = {"--tls-cert", cert, "--tls-key", key,
                           "--tls-ca", ca, "--max-connections", "2", NULL};
    keel_client *a = NULL, *b = NULL, *c = NULL;
    char why[512], *reply = NULL;
    int rc;

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
    ck_assert_int_eq(tls_connect(ca, NULL, NULL, NULL, &a, why, sizeof why),
                     0);
    ck_assert_int_eq(tls_connect(ca, NULL, NULL, NULL, &b, why, sizeof why),
                     0);
    ck_assert_int_eq(counter(a, "o1", "incr"), 1);
    ck_assert_msg(tls_connect(ca, NULL, NULL, NULL, &c, why, sizeof why) == 0,
                  "%s", why);
    rc = keel_client_call(c, KEEL_FRAME_CALL, "counter", "o1", 2, "incr", 4,
                          &reply, NULL);
    ck_assert_msg(rc == KEEL_EOVERLOAD, "over the limit: %d (%s)", rc,
                  reply ? reply : "");
    ck_assert_msg(strstr(reply, "connection limit") != NULL, "%s", reply);
    free(reply);
    keel_client_close(c);
    /* A node's certificate (another node's link) is refused in the
     * handshake instead: it learns before it sends anything. */
    c = NULL;
    ck_assert_int_eq(tls_connect(ca, cert, key, NULL, &c, why, sizeof why),
                     KEEL_ENOTSENT);
    ck_assert_msg(strstr(why, "refused us") != NULL, "why: %s", why);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(counter(b, "o1", "get"), 1);
    /* A place freed is a place taken. */
    keel_client_close(b);
    ck_assert_int_eq(log_has("connection limit", 1), 1);
    c = NULL;
    for (rc = 0; rc < 100 && c == NULL; rc++) {
        long v = -1;
        /* Until the node has seen b close, this is one more refusal. */
        if (tls_connect(ca, NULL, NULL, NULL, &c, why, sizeof why) == 0)
            v = counter(c, "o1", "incr");
        if (v < 0) {
            keel_client_close(c);
            c = NULL;
            usleep(20000);
            continue;
        }
        ck_assert_int_eq(v, 2);
    }
    ck_assert_ptr_nonnull(c);
    keel_client_close(c);
    keel_client_close(a);
}
END_TEST

/* Connects to addr over plain TCP and sends nothing: the socket, or -1. */
static int raw_connect(const char *addr)
{
    struct sockaddr_in sin;
    const char *colon = strrchr(addr, ':');
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0 || colon == NULL)
        return -1;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)atoi(colon + 1));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* How many of fds[0..n) the node has closed (EOF or reset), waiting at
 * most ms for at least want of them; closed ones become -1. */
static int closed_by_node(int *fds, int n, int want, int ms, int *closed)
{
    int waited;

    for (waited = 0;; waited += 20) {
        int i;
        for (i = 0; i < n; i++) {
            char b;
            ssize_t r;
            if (fds[i] < 0)
                continue;
            r = recv(fds[i], &b, 1, MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
                close(fds[i]);
                fds[i] = -1;
                (*closed)++;
            }
        }
        if (*closed >= want || waited >= ms)
            return *closed;
        usleep(20000);
    }
}

/* Telling connections over the limit why costs the node a handshake
 * each, so it does that for a few at once, for a few seconds each: a
 * flood of connections that never finish a handshake is closed at once
 * beyond those, and the rest when their time is up. Meanwhile the node
 * serves the connections it has. */
START_TEST(overload_refusals_bounded)
{
    const char *extra[] = {"--tls-cert", cert, "--tls-key", key,
                           "--tls-ca", ca, "--max-connections", "1", NULL};
    enum { FLOOD = 40, HELD = 16 }; /* HELD: net.c's OVERFLOW_TLS_MAX */
    int fds[FLOOD], i, closed = 0;
    keel_client *a = NULL;
    struct timespec t0, t1;
    long ms;

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
    ck_assert_int_eq(tls_connect(ca, NULL, NULL, NULL, &a, NULL, 0), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (i = 0; i < FLOOD; i++) {
        fds[i] = raw_connect(node.addr);
        ck_assert_int_ge(fds[i], 0);
    }
    /* Those beyond the few are closed at once, well before the few's
     * two seconds are up. */
    closed_by_node(fds, FLOOD, FLOOD - HELD, 1500, &closed);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    ck_assert_msg(closed >= FLOOD - HELD, "%d closed after %ld ms", closed,
                  ms);
    if (ms < 1500)
        ck_assert_msg(closed <= FLOOD - HELD,
                      "%d closed after %ld ms: more than the excess", closed,
                      ms);
    ck_assert_int_eq(counter(a, "f1", "incr"), 1);
    /* The few are closed when their time is up, not at the idle
     * timeout. */
    closed_by_node(fds, FLOOD, FLOOD, 8000, &closed);
    ck_assert_int_eq(closed, FLOOD);
    ck_assert_int_eq(counter(a, "f1", "incr"), 2);
    keel_client_close(a);
}
END_TEST

START_TEST(foreign_client_cert_refused)
{
    keel_client *c = NULL;
    char why[512];

    start_node();
    /* The server refuses the certificate: the client learns it before it
     * sends anything (keel_tls_handshake waits for the server's ticket). */
    ck_assert_int_eq(tls_connect(ca, ocert, okey, NULL, &c, why, sizeof why),
                     KEEL_ENOTSENT);
    ck_assert_msg(strstr(why, "unknown ca") != NULL, "why: %s", why);
    ck_assert_ptr_null(c);
    /* A client that does not trust the node's CA does not go on either. */
    ck_assert_int_eq(tls_connect(oca, NULL, NULL, NULL, &c, why, sizeof why),
                     KEEL_ENOTSENT);
    ck_assert_msg(strstr(why, "certificate verify failed") != NULL, "why: %s",
                  why);
    /* Nor one that expects another node. */
    ck_assert_int_eq(tls_connect(ca, NULL, NULL, "n9", &c, why, sizeof why),
                     KEEL_ENOTSENT);
    ck_assert_msg(strstr(why, "node:n0") != NULL, "why: %s", why);
    ck_assert_int_eq(counter_get("m1"), 0);
}
END_TEST

/* Whether something accepts on 127.0.0.1:port within 10 s (a raw
 * connection, closed at once). */
static int listening(int port)
{
    int tries, fd;

    for (tries = 0; tries < 200; tries++) {
        if ((fd = tu_raw_connect(port)) >= 0) {
            close(fd);
            return 1;
        }
        usleep(50000);
    }
    return 0;
}

/* A server that holds a client's certificate from the cluster's CA
 * (alice's) poses as a node: `openssl s_server`, which writes what it
 * receives to `got`. The keel client, with an admin token, must refuse
 * it before it sends anything: it took any certificate of the CA for a
 * node's, and handed such a server its token. And a node does not start
 * on such a certificate, which every client would refuse. */
START_TEST(client_certificate_is_no_node)
{
    const char *argv[] = {NULL, "--tls-ca", ca, "--token",
                          "admin-secret-token-42", "-a", NULL, "ping",
                          NULL};
    char port_s[16], addr[64], got[600], *out = NULL, *err = NULL, *seen;
    char why[512];
    keel_client *c = NULL;
    pid_t pid;
    int port = tu_zk_free_ports(1), fd, rc, status;

    ck_assert_int_gt(port, 0);
    snprintf(port_s, sizeof port_s, "%d", port);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    snprintf(got, sizeof got, "%s/s_server.out", dir);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        fd = open(got, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0)
            _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        execl("/usr/bin/openssl", "openssl", "s_server", "-quiet",
              "-tls1_3", "-accept", addr, "-cert", ccert, "-key", ckey,
              "-naccept", "3", (char *)NULL); /* the probe, then two */
        _exit(127);
    }
    ck_assert_msg(listening(port), "openssl s_server did not start");
    /* The C client. */
    {
        keel_client_tls t;

        memset(&t, 0, sizeof t);
        t.ca = ca;
        rc = keel_client_connect_tls(addr, 5000, &t, &c, why, sizeof why);
    }
    ck_assert_msg(rc == KEEL_ENOTSENT,
                  "a server with a client's certificate was taken for a "
                  "node (rc %d, %s)",
                  rc, why);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(why, "client:alice") != NULL &&
                      strstr(why, "not a node") != NULL,
                  "why: %s", why);
    /* The CLI, with a token to lose. */
    argv[0] = tu_bin("keel");
    argv[6] = addr;
    rc = tu_run_for(argv, 20, &out, &err);
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    seen = tu_read_file(got);
    ck_assert_msg(rc != 0, "keel ping through a client's certificate "
                           "succeeded: %s",
                  out != NULL ? out : "");
    ck_assert_msg(seen == NULL || strstr(seen, "admin-secret") == NULL,
                  "the token reached a server holding a client's "
                  "certificate: %s",
                  seen);
    ck_assert_msg(err != NULL && strstr(err, "not a node") != NULL,
                  "keel said: %s", err != NULL ? err : "");
    free(seen);
    free(out);
    free(err);
    free((char *)argv[0]);

    /* A node on such a certificate does not start. */
    {
        const char *extra[] = {"--tls-cert", ccert, "--tls-key", ckey,
                               "--tls-ca", ca, NULL};
        ck_assert_int_ne(tu_keeld_start(&node, data, 0, extra), 0);
        seen = tu_keeld_log(&node);
        ck_assert_msg(seen != NULL && strstr(seen, "not a node") != NULL,
                      "keeld said: %s", seen != NULL ? seen : "");
        free(seen);
    }
}
END_TEST

/* A client with a client certificate is no node: hop bits are refused. */
START_TEST(client_hops_denied)
{
    uint8_t frame[KEEL_FRAME_HEADER + 64];
    size_t blen = keel_call_body_size(7, 2, 4);
    keel_client *c = NULL;
    keel_frame f;
    const char *m;
    size_t ml;

    start_node();
    ck_assert_int_eq(tls_connect(ca, ccert, ckey, NULL, &c, NULL, 0), 0);
    keel_frame_header(frame, KEEL_FRAME_CALL, 9, blen);
    frame[5] = 2;
    keel_call_body_encode(frame + KEEL_FRAME_HEADER, "counter", 7, "h1", 2,
                          "incr", 4);
    ck_assert_int_eq(keel_client_queue_raw(c, frame, KEEL_FRAME_HEADER + blen),
                     0);
    ck_assert_int_eq(keel_client_flush(c), 0);
    ck_assert_int_eq(keel_client_recv(c, &f), 0);
    ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert_uint_eq(f.request_id, 9);
    ck_assert_int_eq(keel_error_body_parse(f.body, f.body_len, &m, &ml),
                     KEEL_EDENIED);
    /* The connection goes on; the call did not run. */
    ck_assert_int_eq(counter(c, "h1", "get"), 0);
    keel_client_close(c);
}
END_TEST

START_TEST(sighup_reloads)
{
    keel_client *old = NULL, *c = NULL;
    char why[512];
    FILE *f;

    /* The node starts as node:old (a standalone node's certificate need
     * not match any node id), then gets node:new from the same CA. */
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "node", "node:old"), 0);
    start_node();
    ck_assert_int_eq(tls_connect(ca, ccert, ckey, "old", &old, why,
                                 sizeof why),
                     0);
    ck_assert_int_eq(counter(old, "r1", "incr"), 1);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "node", "node:new"), 0);
    ck_assert_int_eq(kill(node.pid, SIGHUP), 0);
    ck_assert(log_has("TLS reloaded", 1));
    /* The open connection goes on over its old session. */
    ck_assert_int_eq(counter(old, "r1", "incr"), 2);
    /* New connections get the new certificate. */
    ck_assert_msg(tls_connect(ca, NULL, NULL, "new", &c, why, sizeof why) ==
                      0,
                  "%s", why);
    ck_assert_int_eq(counter(c, "r1", "incr"), 3);
    keel_client_close(c);
    ck_assert_int_eq(tls_connect(ca, NULL, NULL, "old", &c, why, sizeof why),
                     KEEL_ENOTSENT);
    /* A bad file: logged, and the certificate in use stays. */
    f = fopen(cert, "w");
    ck_assert_ptr_nonnull(f);
    fputs("not a certificate\n", f);
    fclose(f);
    ck_assert_int_eq(kill(node.pid, SIGHUP), 0);
    ck_assert(log_has("TLS reload failed", 1));
    ck_assert_msg(tls_connect(ca, NULL, NULL, "new", &c, why, sizeof why) ==
                      0,
                  "%s", why);
    ck_assert_int_eq(counter(c, "r1", "incr"), 4);
    keel_client_close(c);
    ck_assert_int_eq(counter(old, "r1", "incr"), 5);
    keel_client_close(old);
    /* SIGHUP did not stop the node: SIGTERM does, cleanly. */
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

/* Revocation (docs/security.md, "Revocation"): certificates a CRL of the
 * CA lists are refused in the handshake, a client's as another node's;
 * SIGHUP with a new CRL refuses newly revoked certificates to new
 * connections and closes the open connections that presented one, telling
 * one with nothing in flight EUNAUTH; a CRL that revokes the node's own
 * certificate is refused on reload, the old one staying; a client given
 * the CRL refuses a node whose certificate it lists. */
START_TEST(crl_revokes)
{
    char crl[512], crl2[512], why[512], *reply = NULL;
    const char *extra[] = {"--tls-cert", cert, "--tls-key", key,
                           "--tls-ca", ca, "--tls-crl", crl, NULL};
    keel_client *a = NULL, *c = NULL;
    keel_client_tls t;
    int rc;

    tu_certs_path(crl, sizeof crl, dir, "crl", "pem");
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "bob", "client:bob"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "n1", "node:n1"), 0);
    ck_assert_int_eq(tu_certs_revoke(dir, "ca", "bob"), 0);
    ck_assert_int_eq(tu_certs_revoke(dir, "ca", "n1"), 0);
    ck_assert_int_eq(tu_certs_crl(dir, "ca", "crl", 0), 0);
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
    /* alice is not listed; bob is, and so is node n1's certificate (a
     * link n1 opened would present it). */
    ck_assert_msg(tls_connect(ca, ccert, ckey, NULL, &a, why, sizeof why) ==
                      0,
                  "%s", why);
    ck_assert_int_eq(counter(a, "v1", "incr"), 1);
    {
        char bc[512], bk[512];
        tu_certs_path(bc, sizeof bc, dir, "bob", "pem");
        tu_certs_path(bk, sizeof bk, dir, "bob", "key");
        ck_assert_int_eq(tls_connect(ca, bc, bk, NULL, &c, why, sizeof why),
                         KEEL_ENOTSENT);
        ck_assert_msg(strstr(why, "revoked") != NULL, "why: %s", why);
        tu_certs_path(bc, sizeof bc, dir, "n1", "pem");
        tu_certs_path(bk, sizeof bk, dir, "n1", "key");
        ck_assert_int_eq(tls_connect(ca, bc, bk, NULL, &c, why, sizeof why),
                         KEEL_ENOTSENT);
        ck_assert_msg(strstr(why, "revoked") != NULL, "why: %s", why);
    }
    /* Refusals are logged once a second at most. */
    ck_assert(log_has("certificate revoked", 1));
    /* alice is revoked too: the new CRL is renamed into place, SIGHUP. */
    ck_assert_int_eq(tu_certs_revoke(dir, "ca", "alice"), 0);
    ck_assert_int_eq(tu_certs_crl(dir, "ca", "crl", 0), 0);
    ck_assert_int_eq(kill(node.pid, SIGHUP), 0);
    ck_assert(log_has("TLS reloaded", 1));
    /* Her open connection is told, and closed; nothing more runs. */
    rc = keel_client_call(a, KEEL_FRAME_CALL, "counter", "v1", 2, "incr", 4,
                          &reply, NULL);
    ck_assert_msg(rc == KEEL_EUNAUTH, "%d (%s)", rc, reply ? reply : "");
    ck_assert_msg(strstr(reply, "revoked") != NULL, "%s", reply);
    free(reply);
    keel_client_close(a);
    ck_assert_int_eq(tls_connect(ca, ccert, ckey, NULL, &c, why, sizeof why),
                     KEEL_ENOTSENT);
    ck_assert_msg(strstr(why, "revoked") != NULL, "why: %s", why);
    /* A certificate the CRL does not list goes on. */
    ck_assert_int_eq(counter_get("v1"), 1);
    /* A CRL that revokes the node's own certificate: refused, the one in
     * force stays (alice still out, ops still in). */
    ck_assert_int_eq(tu_certs_revoke(dir, "ca", "node"), 0);
    ck_assert_int_eq(tu_certs_crl(dir, "ca", "crl2", 0), 0);
    ck_assert_int_eq(tu_certs_crl(dir, "ca", "crl", 0), 0);
    ck_assert_int_eq(kill(node.pid, SIGHUP), 0);
    ck_assert(log_has("TLS reload failed", 1));
    ck_assert(log_has("own certificate", 1));
    ck_assert_int_eq(tls_connect(ca, ccert, ckey, NULL, &c, why, sizeof why),
                     KEEL_ENOTSENT);
    ck_assert_int_eq(counter_get("v1"), 1);
    /* A client that has the CRL refuses the node. */
    memset(&t, 0, sizeof t);
    t.ca = ca;
    t.crl = tu_certs_path(crl2, sizeof crl2, dir, "crl2", "pem");
    ck_assert_int_eq(keel_client_connect_tls(node.addr, 5000, &t, &c, why,
                                             sizeof why),
                     KEEL_ENOTSENT);
    ck_assert_msg(strstr(why, "revoked") != NULL, "why: %s", why);
    ck_assert_ptr_null(c);
}
END_TEST

/* keeld refuses to start with a CRL it could not use, saying why. */
START_TEST(crl_refused_at_start)
{
    char crl[512], *out = NULL, *err = NULL, *bin = tu_bin("keeld");
    const char *argv[] = {bin, "--data", data, "--listen", "127.0.0.1:0",
                          "--tls-cert", cert, "--tls-key", key, "--tls-ca",
                          ca, "--tls-crl", crl, NULL};
    const char *bare[] = {bin, "--data", data, "--listen", "127.0.0.1:0",
                          "--tls-crl", crl, NULL};

    /* Another CA's. */
    ck_assert_int_eq(tu_certs_crl(dir, "other", "ocrl", 0), 0);
    tu_certs_path(crl, sizeof crl, dir, "ocrl", "pem");
    ck_assert_int_ne(tu_run(argv, &out, &err), 0);
    ck_assert_msg(strstr(err, "not signed by a CA") != NULL, "%s", err);
    free(out);
    free(err);
    /* Without TLS. */
    ck_assert_int_eq(tu_run(bare, &out, &err), 2);
    ck_assert_msg(strstr(err, "--tls-crl goes with") != NULL, "%s", err);
    free(out);
    free(err);
    free(bin);
}
END_TEST

/* keel over TLS with a client certificate (name of the test's directory;
 * NULL: none): its exit code, stderr in *err (malloc'd). */
static int keel_cert(const char *name, char **out, char **err,
                     const char *a1, const char *a2, const char *a3,
                     const char *a4, const char *a5)
{
    char *bin = tu_bin("keel"), pem[512], pkey[512];
    const char *argv[16];
    int argc = 0, rc;

    argv[argc++] = bin;
    argv[argc++] = "-a";
    argv[argc++] = node.addr;
    argv[argc++] = "--tls-ca";
    argv[argc++] = ca;
    if (name != NULL) {
        argv[argc++] = "--tls-cert";
        argv[argc++] = tu_certs_path(pem, sizeof pem, dir, name, "pem");
        argv[argc++] = "--tls-key";
        argv[argc++] = tu_certs_path(pkey, sizeof pkey, dir, name, "key");
    }
    argv[argc++] = a1;
    argv[argc++] = a2;
    argv[argc++] = a3;
    argv[argc++] = a4;
    argv[argc++] = a5;
    argv[argc] = NULL;
    rc = tu_run(argv, out, err);
    free(bin);
    return rc;
}

/* With tokens required, a verified client certificate is a credential:
 * CN=client:NAME calls actors but may not drain, CN=admin:NAME may; a
 * connection with neither certificate nor token may do nothing. */
START_TEST(certificate_roles)
{
    char tokens[600], *out = NULL, *err = NULL;
    const char *extra[9];
    FILE *f;

    snprintf(tokens, sizeof tokens, "%s/tokens", dir);
    f = fopen(tokens, "w");
    ck_assert_ptr_nonnull(f);
    fputs("a-token-nobody-uses-0123456789 admin\n", f);
    fclose(f);
    ck_assert_int_eq(chmod(tokens, 0600), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "ops", "admin:ops"), 0);
    extra[0] = "--tls-cert";
    extra[1] = cert;
    extra[2] = "--tls-key";
    extra[3] = key;
    extra[4] = "--tls-ca";
    extra[5] = ca;
    extra[6] = "--auth-tokens";
    extra[7] = tokens;
    extra[8] = NULL;
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);

    ck_assert_int_ne(keel_cert(NULL, &out, &err, "call", "counter", "c1",
                               "incr", NULL),
                     0);
    ck_assert_msg(strstr(err, "EUNAUTH") != NULL, "%s", err);
    free(out);
    free(err);
    ck_assert_int_eq(keel_cert("alice", &out, &err, "call", "counter", "c1",
                               "incr", NULL),
                     0);
    ck_assert_str_eq(out, "1\n");
    free(out);
    free(err);
    ck_assert_int_ne(keel_cert("alice", &out, &err, "node", "drain", "n0",
                               NULL, NULL),
                     0);
    ck_assert_msg(strstr(err, "EDENIED") != NULL, "%s", err);
    free(out);
    free(err);
    /* An administrator's drain reaches the node, which is standalone. */
    ck_assert_int_ne(keel_cert("ops", &out, &err, "node", "drain", "n0",
                               NULL, NULL),
                     0);
    ck_assert_msg(strstr(err, "not a cluster node") != NULL, "%s", err);
    free(out);
    free(err);
    ck_assert_int_eq(keel_cert("alice", &out, &err, "call", "counter", "c1",
                               "get", NULL),
                     0);
    ck_assert_str_eq(out, "1\n");
    free(out);
    free(err);
    /* A certificate's identity stays when the connection also presents a
     * token: the administrator's token leaves alice a client, and the
     * answer to the token says so rather than promising admin. */
    {
        keel_client *c = NULL;
        char *reply = NULL, why[256] = "";
        size_t rlen = 0;
        const char *q[] = {"node", "drain", "n0"};
        char body[32];
        size_t blen = 0, i;

        ck_assert_int_eq(tls_connect(ca, ccert, ckey, NULL, &c, why,
                                     sizeof why),
                         0);
        ck_assert_int_eq(keel_client_auth(c, "a-token-nobody-uses-0123456789",
                                          &reply, &rlen),
                         0);
        ck_assert_str_eq(reply, "auth client certificate alice\n");
        free(reply);
        reply = NULL;
        for (i = 0; i < 3; i++) {
            memcpy(body + blen, q[i], strlen(q[i]) + 1);
            blen += strlen(q[i]) + 1;
        }
        ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_INFO, NULL, NULL, 0,
                                          body, blen - 1, &reply, &rlen),
                         KEEL_EDENIED);
        free(reply);
        keel_client_close(c);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("standalone");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, tls_client_answered);
    tcase_add_test(tc, plaintext_refused);
    tcase_add_test(tc, tls_client_on_plaintext_port);
    tcase_add_test(tc, overload_told_over_tls);
    tcase_add_test(tc, overload_refusals_bounded);
    tcase_add_test(tc, foreign_client_cert_refused);
    tcase_add_test(tc, client_certificate_is_no_node);
    tcase_add_test(tc, client_hops_denied);
    tcase_add_test(tc, sighup_reloads);
    tcase_add_test(tc, certificate_roles);
    tcase_add_test(tc, crl_revokes);
    tcase_add_test(tc, crl_refused_at_start);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (!tu_certs_available()) {
        fprintf(stderr, "test_tls: the openssl command is not installed\n");
        return 1;
    }
    return tu_run_suite(suite());
}
