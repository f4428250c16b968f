/* The HTTP face over TLS (docs/http.md "HTTPS"): a keeld with TLS files
 * serves HTTPS 1.3 only on its --http port, checked with the curl program
 * as a user would: a client trusting the CA is answered, a plaintext
 * client and a TLS 1.2 client are not; bearer tokens and client
 * certificates give requests their identity; SIGHUP brings a new
 * certificate to new connections while a connection opened before goes
 * on with the old one. Certificates are made per test with the openssl
 * command (tests/support/certs.h). Every wait is bounded. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "certs.h"
#include "keel.h"
#include "proc.h"
#include "testutil.h"

#define CLIENT "client-token-0123456789"
#define LIMITED "limited-token-0123456789" /* client of kv only */

static char *dir, *data, *tokens;
static tu_keeld node;
static int http_port;
static char ca[512], cert[512], key[512];

static void setup(void)
{
    FILE *f;

    dir = tu_tmpdir("https");
    if (asprintf(&data, "%s/data", dir) < 0 ||
        asprintf(&tokens, "%s/tokens", dir) < 0)
        abort();
    memset(&node, 0, sizeof node);
    http_port = 0;
    ck_assert_int_eq(tu_certs_ca(dir, "ca"), 0);
    ck_assert_int_eq(tu_certs_ca(dir, "other"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "node", "node:n0"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "alice", "client:alice"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "root", "admin:root"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "odd", "operator"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "other", "mallory",
                                    "client:mallory"),
                     0);
    tu_certs_path(ca, sizeof ca, dir, "ca", "pem");
    tu_certs_path(cert, sizeof cert, dir, "node", "pem");
    tu_certs_path(key, sizeof key, dir, "node", "key");
    f = fopen(tokens, "w");
    ck_assert_ptr_nonnull(f);
    fputs(CLIENT " client\n" LIMITED " client kv\n", f);
    fclose(f);
    ck_assert_int_eq(chmod(tokens, 0600), 0);
    /* The CLI (tu_keeld_start's readiness check) trusts the CA. */
    setenv("KEEL_TLS_CA", ca, 1);
}

static void teardown(void)
{
    tu_keeld_free(&node);
    tu_rmrf(dir);
    free(dir);
    free(data);
    free(tokens);
}

/* keeld with TLS files and an HTTP face on a kernel-chosen port (read
 * from its log), with tokens when asked. */
static void start_node(int with_tokens)
{
    const char *extra[] = {"--tls-cert", cert, "--tls-key", key, "--tls-ca",
                           ca, "--http", "127.0.0.1:0",
                           with_tokens ? "--auth-tokens" : NULL, tokens,
                           NULL};
    const char *p = NULL, *q;
    char *log;

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
    log = tu_keeld_log(&node);
    ck_assert_ptr_nonnull(log);
    for (q = log; (q = strstr(q, "keeld: http on port ")) != NULL; q++)
        p = q;
    ck_assert_msg(p != NULL, "no http port in the log:\n%s", log);
    http_port = atoi(p + strlen("keeld: http on port "));
    ck_assert_int_gt(http_port, 0);
    free(log);
}

struct hres {
    int exit;   /* curl's exit code: 0 when it had an answer */
    int code;   /* HTTP status, 0 without an answer */
    char *body; /* the response body, NUL-terminated */
    char *err;  /* curl's stderr (with -v: the handshake) */
};

static void hres_free(struct hres *r)
{
    free(r->body);
    free(r->err);
    memset(r, 0, sizeof *r);
}

/* Runs curl against the node's HTTP port: scheme "https" or "http"; body
 * POSTed when not NULL; opts: more curl arguments, NULL-terminated (may
 * be NULL). The CA is trusted. */
static void curl(struct hres *r, const char *scheme, const char *path,
                 const char *body, const char *const *opts)
{
    const char *argv[40];
    char url[600], bodyf[512], *out = NULL;
    int argc = 0;

    memset(r, 0, sizeof *r);
    snprintf(url, sizeof url, "%s://127.0.0.1:%d%s", scheme, http_port,
             path);
    snprintf(bodyf, sizeof bodyf, "%s/resp.body", dir);
    unlink(bodyf);
    argv[argc++] = "/usr/bin/curl";
    argv[argc++] = "-sS";
    argv[argc++] = "--max-time";
    argv[argc++] = "20";
    argv[argc++] = "--cacert";
    argv[argc++] = ca;
    argv[argc++] = "-o";
    argv[argc++] = bodyf;
    argv[argc++] = "-w";
    argv[argc++] = "%{http_code}";
    if (body != NULL) {
        argv[argc++] = "-X";
        argv[argc++] = "POST";
        argv[argc++] = "--data-binary";
        argv[argc++] = body;
    }
    while (opts != NULL && *opts != NULL && argc < 38)
        argv[argc++] = *opts++;
    argv[argc++] = url;
    argv[argc] = NULL;
    r->exit = tu_run(argv, &out, &r->err);
    r->code = out != NULL ? atoi(out) : 0;
    free(out);
    r->body = tu_read_file(bodyf);
    if (r->body == NULL)
        r->body = calloc(1, 1);
    if (r->err == NULL)
        r->err = calloc(1, 1);
}

/* An answered request: status want, and a body starting with body_prefix
 * (NULL: any). */
static void expect(const char *path, const char *body,
                   const char *const *opts, int want,
                   const char *body_prefix)
{
    struct hres r;

    curl(&r, "https", path, body, opts);
    ck_assert_msg(r.exit == 0 && r.code == want,
                  "%s: curl exit %d, status %d (want %d): %s %s", path,
                  r.exit, r.code, want, r.body, r.err);
    if (body_prefix != NULL)
        ck_assert_msg(strncmp(r.body, body_prefix, strlen(body_prefix)) == 0,
                      "%s: body '%s', want '%s...'", path, r.body,
                      body_prefix);
    hres_free(&r);
}

/* curl arguments presenting alice's client certificate: with TLS, access
 * control is on, and an anonymous client only gets the health probes. */
static char alice_pem[512], alice_key[512];
static const char *as_alice[] = {"--cert", alice_pem, "--key", alice_key,
                                 NULL};

static void alice_paths(void)
{
    tu_certs_path(alice_pem, sizeof alice_pem, dir, "alice", "pem");
    tu_certs_path(alice_key, sizeof alice_key, dir, "alice", "key");
}

/* Waits (at most 10 s) for `what` to appear in the node's log. */
static int log_has(const char *what)
{
    int tries;

    for (tries = 0; tries < 200; tries++) {
        char *log = tu_keeld_log(&node);
        int found = log != NULL && strstr(log, what) != NULL;

        free(log);
        if (found)
            return 1;
        usleep(50000);
    }
    return 0;
}

START_TEST(https_only_tls13)
{
    const char *tls12[] = {"--tls-max", "1.2", NULL};
    struct hres r;

    start_node(0);
    alice_paths();
    expect("/v1/actors/counter/c1", "incr 5", as_alice, 200, "5");
    expect("/v1/actors/counter/c1", NULL, as_alice, 200,
           "{\"type\": \"counter\"");
    expect("/healthz", NULL, NULL, 200, "ok");
    /* No certificate, no token: anonymous, refused all but the probes. */
    expect("/v1/actors/counter/c1", "incr 5", NULL, 401,
           "{\"error\": \"EUNAUTH\"");
    expect("/metrics", NULL, NULL, 401, "{\"error\": \"EUNAUTH\"");
    /* Plain HTTP on the HTTPS port: no answer. */
    curl(&r, "http", "/v1/actors/counter/c1", "incr 5", NULL);
    ck_assert_msg(r.exit != 0 && r.code == 0, "plain http answered %d: %s",
                  r.code, r.body);
    hres_free(&r);
    /* A client that offers at most TLS 1.2: refused in the handshake. */
    curl(&r, "https", "/v1/actors/counter/c1", "incr 5", tls12);
    ck_assert_msg(r.exit != 0 && r.code == 0, "TLS 1.2 answered %d: %s",
                  r.code, r.body);
    hres_free(&r);
    /* Neither ran. */
    expect("/v1/actors/counter/c1", "get", as_alice, 200, "5");
    /* The keel tool pointed at the HTTPS port (it trusts the CA through
     * KEEL_TLS_CA): the TLS handshake completes, then the server waits
     * for an HTTP request. The tool says that this is not a keel node,
     * not that the handshake timed out. */
    {
        char addr[32], *out = NULL, *err = NULL;
        snprintf(addr, sizeof addr, "127.0.0.1:%d", http_port);
        ck_assert_int_ne(tu_keel(addr, &out, &err, "-t", "1000", "ping",
                                 NULL),
                         0);
        ck_assert_msg(err != NULL && strstr(err, "not a keel node") != NULL,
                      "keel ping at the HTTPS port: %s", err ? err : "");
        free(out);
        free(err);
    }
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

START_TEST(https_bearer_tokens)
{
    const char *client[] = {"-H", "Authorization: Bearer " CLIENT, NULL};
    const char *limited[] = {"-H", "Authorization: Bearer " LIMITED, NULL};

    start_node(1);
    expect("/v1/actors/counter/c1", "incr 2", client, 200, "2");
    expect("/v1/actors/counter/c1", "incr 2", NULL, 401,
           "{\"error\": \"EUNAUTH\"");
    expect("/metrics", NULL, NULL, 401, "{\"error\": \"EUNAUTH\"");
    expect("/v1/actors/counter/c1", "incr 2", limited, 403,
           "{\"error\": \"EDENIED\"");
    expect("/healthz", NULL, NULL, 200, "ok");
    expect("/v1/actors/counter/c1", "get", client, 200, "2");
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

/* Client certificates: the identity of a verified one counts (there is no
 * admin-only HTTP endpoint, so admin:NAME and client:NAME may do the
 * same); one of another CA, or of no known kind, proves nothing and the
 * token rules apply. */
START_TEST(https_client_certs)
{
    char ac[512], ak[512], rc_[512], rk[512], mc[512], mk[512], oc[512],
        ok[512];
    const char *alice[] = {"--cert", ac, "--key", ak, NULL};
    const char *root[] = {"--cert", rc_, "--key", rk, NULL};
    const char *mallory[] = {"--cert", mc, "--key", mk, NULL};
    const char *odd[] = {"--cert", oc, "--key", ok, NULL};
    const char *mallory_tok[] = {"--cert", mc, "--key", mk, "-H",
                                 "Authorization: Bearer " CLIENT, NULL};
    const char *alice_limited[] = {"--cert", ac, "--key", ak, "-H",
                                   "Authorization: Bearer " LIMITED, NULL};

    tu_certs_path(ac, sizeof ac, dir, "alice", "pem");
    tu_certs_path(ak, sizeof ak, dir, "alice", "key");
    tu_certs_path(rc_, sizeof rc_, dir, "root", "pem");
    tu_certs_path(rk, sizeof rk, dir, "root", "key");
    tu_certs_path(mc, sizeof mc, dir, "mallory", "pem");
    tu_certs_path(mk, sizeof mk, dir, "mallory", "key");
    tu_certs_path(oc, sizeof oc, dir, "odd", "pem");
    tu_certs_path(ok, sizeof ok, dir, "odd", "key");
    start_node(1);
    expect("/v1/actors/counter/c1", "incr 3", alice, 200, "3");
    expect("/v1/cluster", NULL, alice, 200, "{\"mode\"");
    expect("/v1/actors/counter/c1", "incr 3", root, 200, "6");
    expect("/metrics", NULL, root, 200, "# HELP");
    /* The certificate's identity is the one that counts: a token beside
     * it limits nothing. */
    expect("/v1/actors/counter/c1", "incr 3", alice_limited, 200, "9");
    /* Another CA's certificate, a CN of no known kind: anonymous. */
    expect("/v1/actors/counter/c1", "incr 3", mallory, 401,
           "{\"error\": \"EUNAUTH\"");
    expect("/v1/actors/counter/c1", "incr 3", odd, 401,
           "{\"error\": \"EUNAUTH\"");
    /* ... and may authenticate with a token. */
    expect("/v1/actors/counter/c1", "incr 3", mallory_tok, 200, "12");
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

/* A blocking TLS connection to the HTTP port that trusts the CA. */
struct tconn {
    SSL_CTX *ctx;
    SSL *ssl;
    int fd;
};

static void tconn_open(struct tconn *t)
{
    struct sockaddr_in sa;
    struct timeval tv = {10, 0};

    t->ctx = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(t->ctx);
    ck_assert_int_eq(SSL_CTX_load_verify_locations(t->ctx, ca, NULL), 1);
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    t->fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(t->fd, 0);
    setsockopt(t->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(t->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)http_port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(t->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    t->ssl = SSL_new(t->ctx);
    ck_assert_ptr_nonnull(t->ssl);
    SSL_set_fd(t->ssl, t->fd);
    ck_assert_int_eq(SSL_connect(t->ssl), 1);
}

static void tconn_close(struct tconn *t)
{
    SSL_free(t->ssl);
    SSL_CTX_free(t->ctx);
    close(t->fd);
}

/* The subject CN of the server's certificate on t. */
static void tconn_cn(struct tconn *t, char *buf, size_t cap)
{
    X509 *x = SSL_get1_peer_certificate(t->ssl);

    ck_assert_ptr_nonnull(x);
    ck_assert_int_gt(X509_NAME_get_text_by_NID(X509_get_subject_name(x),
                                               NID_commonName, buf,
                                               (int)cap),
                     0);
    X509_free(x);
}

/* GET /healthz on t, keeping the connection open: 200 and "ok". */
static void tconn_healthz(struct tconn *t)
{
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    char buf[2048];
    size_t len = 0;

    ck_assert_int_eq(SSL_write(t->ssl, req, (int)sizeof req - 1),
                     (int)sizeof req - 1);
    while (len < sizeof buf - 1) {
        int n = SSL_read(t->ssl, buf + len, (int)(sizeof buf - 1 - len));

        ck_assert_msg(n > 0, "connection ended after %zu bytes", len);
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\nok\n") != NULL)
            break;
    }
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%s", buf);
}

START_TEST(https_sighup_reloads)
{
    struct tconn old;
    char cn[256];
    struct hres r;
    const char *verbose[] = {"-v", NULL};
    FILE *f;

    ck_assert_int_eq(tu_certs_issue(dir, "ca", "node", "node:old"), 0);
    start_node(0);
    alice_paths();
    curl(&r, "https", "/healthz", NULL, verbose);
    ck_assert_msg(r.code == 200 && strstr(r.err, "CN=node:old") != NULL,
                  "%d %s", r.code, r.err);
    hres_free(&r);
    tconn_open(&old);
    tconn_healthz(&old);
    tconn_cn(&old, cn, sizeof cn);
    ck_assert_str_eq(cn, "node:old");

    ck_assert_int_eq(tu_certs_issue(dir, "ca", "node", "node:new"), 0);
    ck_assert_int_eq(kill(node.pid, SIGHUP), 0);
    ck_assert(log_has("HTTPS reloaded"));
    /* New connections see the new certificate. */
    curl(&r, "https", "/healthz", NULL, verbose);
    ck_assert_msg(r.code == 200 && strstr(r.err, "CN=node:new") != NULL,
                  "%d %s", r.code, r.err);
    hres_free(&r);
    expect("/v1/actors/counter/c1", "incr", as_alice, 200, "1");
    /* The connection opened before goes on, with its session. */
    tconn_healthz(&old);
    tconn_close(&old);
    /* Its daemon, with nothing left to serve, stops. */
    ck_assert(log_has("daemon of the previous certificate has finished"));

    /* A bad file: logged, and the certificate in use stays. */
    f = fopen(cert, "w");
    ck_assert_ptr_nonnull(f);
    fputs("not a certificate\n", f);
    fclose(f);
    ck_assert_int_eq(kill(node.pid, SIGHUP), 0);
    ck_assert(log_has("TLS reload failed"));
    curl(&r, "https", "/healthz", NULL, verbose);
    ck_assert_msg(r.code == 200 && strstr(r.err, "CN=node:new") != NULL,
                  "%d %s", r.code, r.err);
    hres_free(&r);
    expect("/v1/actors/counter/c1", "incr", as_alice, 200, "2");
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("https");
    TCase *tc = tcase_create("https");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, https_only_tls13);
    tcase_add_test(tc, https_bearer_tokens);
    tcase_add_test(tc, https_client_certs);
    tcase_add_test(tc, https_sighup_reloads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (!tu_certs_available() || access("/usr/bin/curl", X_OK) != 0) {
        fprintf(stderr, "test_https: needs the openssl and curl commands "
                        "(scripts/install-deps)\n");
        return 1;
    }
    return tu_run_suite(suite());
}
