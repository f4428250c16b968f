/* Access control on a standalone keeld (docs/security.md): tokens and
 * their roles on the wire and over HTTP, the token file's checks, its
 * reload on SIGHUP, limits on failed token attempts (per connection, per
 * address), credentials required beyond loopback, and a node without
 * them saying so in every status answer. Every refusal is checked to have
 * left the state as it was. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keel.h"
#include "proc.h"
#include "rawconn.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define ADMIN "admin-token-0123456789"
#define CLIENT "client-token-0123456789"
#define LIMITED "limited-token-0123456789" /* client of counter and kv */
#define LATER "later-token-0123456789"

static char *dir, *data, *tokens;
static tu_keeld node;

static void write_tokens(const char *text, mode_t mode)
{
    FILE *f = fopen(tokens, "w");

    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(chmod(tokens, mode), 0);
}

static void setup(void)
{
    dir = tu_tmpdir("auth");
    if (asprintf(&data, "%s/data", dir) < 0 ||
        asprintf(&tokens, "%s/tokens", dir) < 0)
        abort();
    memset(&node, 0, sizeof node);
    write_tokens("# operators\n" ADMIN " admin\n\n" CLIENT " client\n" LIMITED
                 " client counter,kv\n",
                 0600);
}

static void teardown(void)
{
    tu_keeld_free(&node);
    tu_rmrf(dir);
    free(dir);
    free(data);
    free(tokens);
}

/* keel with a token (NULL: none), its exit code; stdout and stderr in
 * *out and *err when given (malloc'd). */
static int keel_as(const char *token, char **out, char **err, ...)
{
    const char *argv[24];
    char *bin = tu_bin("keel");
    va_list ap;
    int argc = 0, rc;
    const char *a;

    argv[argc++] = bin;
    argv[argc++] = "-a";
    argv[argc++] = node.addr;
    if (token != NULL) {
        argv[argc++] = "--token";
        argv[argc++] = token;
    }
    va_start(ap, err);
    while ((a = va_arg(ap, const char *)) != NULL && argc < 23)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    rc = tu_run(argv, out, err);
    free(bin);
    return rc;
}

/* Exit code and stderr must match. */
static void refused_as(const char *token, const char *want, ...)
{
    const char *argv[24];
    char *bin = tu_bin("keel"), *out = NULL, *err = NULL;
    va_list ap;
    int argc = 0, rc;
    const char *a;

    argv[argc++] = bin;
    argv[argc++] = "-a";
    argv[argc++] = node.addr;
    if (token != NULL) {
        argv[argc++] = "--token";
        argv[argc++] = token;
    }
    va_start(ap, want);
    while ((a = va_arg(ap, const char *)) != NULL && argc < 23)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    rc = tu_run(argv, &out, &err);
    ck_assert_msg(rc == 1, "keel %s: exit %d, want 1; stderr: %s",
                  argv[token ? 5 : 3], rc, err);
    ck_assert_msg(err != NULL && strstr(err, want) != NULL,
                  "keel %s: stderr '%s' lacks '%s'", argv[token ? 5 : 3],
                  err, want);
    free(out);
    free(err);
    free(bin);
}

/* The reply of a call made with the admin token. */
static char *admin_call(const char *type, const char *id, const char *msg)
{
    char *out = NULL, *err = NULL;
    int rc = keel_as(ADMIN, &out, &err, "call", type, id, msg, NULL);

    ck_assert_msg(rc == 0, "admin call %s %s %s: exit %d: %s", type, id, msg,
                  rc, err);
    free(err);
    return out;
}

static long stat_as(const char *token, const char *name)
{
    char *out = NULL, key[64];
    const char *p;
    long v = -1;

    snprintf(key, sizeof key, "\n%s ", name);
    if (keel_as(token, &out, NULL, "stat", NULL) == 0 && out != NULL &&
        (p = strstr(out, key)) != NULL)
        v = strtol(p + strlen(key), NULL, 10);
    free(out);
    return v;
}

static void start_with_tokens(int http)
{
    const char *extra[] = {"--auth-tokens", tokens, http ? "--http" : NULL,
                           "127.0.0.1:0", NULL};
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
}

/* ------------------------------------------------------------ the wire */

START_TEST(no_token_nothing_runs)
{
    char *out;

    start_with_tokens(0);
    refused_as(NULL, "keel: EUNAUTH: ", "call", "counter", "c1", "incr",
               NULL);
    refused_as(NULL, "keel: EUNAUTH: ", "cast", "counter", "c1", "incr",
               NULL);
    refused_as(NULL, "needs a token", "stat", NULL);
    refused_as(NULL, "keel: EUNAUTH: ", "nodes", NULL);
    refused_as("wrong-token-0123456789",
               "keel: EUNAUTH: not authenticated: unknown token",
               "call", "counter", "c1", "incr", NULL);
    /* PING stays open (liveness probes). */
    ck_assert_int_eq(keel_as(NULL, NULL, NULL, "ping", NULL), 0);
    /* Nothing ran: the counter was never incremented. */
    out = admin_call("counter", "c1", "get");
    ck_assert_str_eq(out, "0\n");
    free(out);
    ck_assert_int_eq(stat_as(ADMIN, "messages"), 1); /* the get above */
    ck_assert_int_ge(stat_as(ADMIN, "auth_refused_unauth"), 5);
    ck_assert_int_eq(stat_as(ADMIN, "auth_refused_denied"), 0);
    ck_assert_int_eq(stat_as(ADMIN, "insecure"), 0);
}
END_TEST

START_TEST(client_token_roles_and_types)
{
    char *out = NULL, *err = NULL;

    start_with_tokens(0);
    /* The client token calls any type. */
    ck_assert_int_eq(keel_as(CLIENT, &out, NULL, "call", "counter", "c1",
                             "incr", "5", NULL),
                     0);
    ck_assert_str_eq(out, "5\n");
    free(out);
    /* Token from the environment variable's file form, too. */
    {
        char *tf = NULL, *bin = tu_bin("keel");
        FILE *f;
        const char *argv[] = {bin, "-a", node.addr, "--token-file", NULL,
                              "call", "register", "r1", "write", "v1", NULL};
        if (asprintf(&tf, "%s/client.token", dir) < 0)
            abort();
        f = fopen(tf, "w");
        fputs(CLIENT "\n", f);
        fclose(f);
        argv[4] = tf;
        ck_assert_int_eq(tu_run(argv, &out, &err), 0);
        free(out);
        free(err);
        free(tf);
        free(bin);
    }
    /* The limited token: counter and kv only. */
    ck_assert_int_eq(keel_as(LIMITED, &out, NULL, "call", "counter", "c1",
                             "incr", NULL),
                     0);
    ck_assert_str_eq(out, "6\n");
    free(out);
    refused_as(LIMITED, "keel: EDENIED: not permitted: this token may call "
                        "actor types counter,kv only, not 'register'",
               "call", "register", "r1", "write", "v2", NULL);
    refused_as(LIMITED, "keel: EDENIED: ", "cast", "register", "r1", "write",
               "v3", NULL);
    out = admin_call("register", "r1", "read");
    ck_assert_str_eq(out, "v1\n"); /* neither write ran */
    free(out);
    /* Admin queries need the admin role: refused before the node looks
     * at them (a standalone node would say EINVAL). */
    refused_as(CLIENT, "keel: EDENIED: not permitted: this request needs an "
                       "admin token",
               "node", "drain", "n1", NULL);
    refused_as(LIMITED, "keel: EDENIED: ", "node", "forget", "n1", NULL);
    refused_as(ADMIN, "keel: EINVAL: not a cluster node", "node", "drain",
               "n1", NULL);
    /* Read-only queries need any token. */
    ck_assert_int_eq(keel_as(LIMITED, NULL, NULL, "nodes", NULL), 0);
    ck_assert_int_eq(stat_as(CLIENT, "auth_refused_denied"), 4);
}
END_TEST

/* ---------------------------------------------------------------- HTTP */

/* One HTTP/1.1 request (Connection: close) from local address `from`
 * (NULL: any); the status, and the whole response in *resp (malloc'd)
 * when given. */
static int http_from(const char *from, int port, const char *method,
                     const char *path, const char *token, const char *body,
                     char **resp)
{
    char req[1024], buf[65536];
    size_t got = 0;
    ssize_t r;
    int fd, status = -1;

    fd = tu_raw_connect_bare_from(from, port);
    ck_assert_int_ge(fd, 0);
    snprintf(req, sizeof req,
             "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
             "%s%s%sContent-Length: %zu\r\n\r\n%s",
             method, path, token ? "Authorization: Bearer " : "",
             token ? token : "", token ? "\r\n" : "",
             body ? strlen(body) : 0, body ? body : "");
    ck_assert_int_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    while (got < sizeof buf - 1 &&
           (r = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    buf[got] = '\0';
    sscanf(buf, "HTTP/1.1 %d", &status);
    if (resp != NULL)
        *resp = strdup(buf);
    return status;
}

static int http(int port, const char *method, const char *path,
                const char *token, const char *body, char **resp)
{
    return http_from(NULL, port, method, path, token, body, resp);
}

/* The HTTP port of this start of the node (its log may hold earlier
 * ones). */
static int http_port_of(void)
{
    char *log = tu_keeld_log(&node), *p, *last = NULL;
    int port = 0;

    for (p = log; p != NULL && (p = strstr(p, "keeld: http on port ")) != NULL;
         p++)
        last = p;
    if (last != NULL)
        port = atoi(last + strlen("keeld: http on port "));
    free(log);
    ck_assert_int_gt(port, 0);
    return port;
}

/* keel shards --digest asks a digest of every unit, an administrator's
 * request: with a client token the first refusal is printed, once, and
 * the sweep stops there (exit 1); with the admin token every unit
 * agrees. */
START_TEST(shards_digest_needs_admin)
{
    char *out = NULL, *err = NULL, want[96];
    int rc;

    start_with_tokens(0);
    free(admin_call("counter", "c1", "incr"));
    rc = keel_as(CLIENT, &out, &err, "shards", "--digest", NULL);
    ck_assert_msg(rc == 1, "shards --digest as a client: exit %d", rc);
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strstr(err, "EDENIED") != NULL &&
                      strstr(strstr(err, "EDENIED") + 1, "EDENIED") == NULL,
                  "one refusal expected: %s", err);
    ck_assert_ptr_null(strstr(out, "digests:"));
    free(out);
    free(err);
    rc = keel_as(ADMIN, &out, &err, "shards", "--digest", NULL);
    ck_assert_msg(rc == 0, "shards --digest as admin: exit %d: %s", rc, err);
    snprintf(want, sizeof want, "digests: %u units, %u agree, 0 differ",
             KEEL_DEFAULT_SHARDS, KEEL_DEFAULT_SHARDS);
    ck_assert_msg(strstr(out, want) != NULL, "no '%s' in the output", want);
    ck_assert_ptr_nonnull(strstr(out, ":1 agree\n")); /* c1's unit */
    free(out);
    free(err);
}
END_TEST

START_TEST(http_401_403_200)
{
    char *resp = NULL;
    int port;

    start_with_tokens(1);
    port = http_port_of();
    /* No token, an unknown one: 401 with the challenge; nothing ran. */
    ck_assert_int_eq(http(port, "POST", "/v1/actors/counter/h1", NULL,
                          "incr", &resp),
                     401);
    ck_assert_ptr_nonnull(strstr(resp, "WWW-Authenticate: Bearer"));
    ck_assert_ptr_nonnull(strstr(resp, "\"EUNAUTH\""));
    free(resp);
    ck_assert_int_eq(http(port, "POST", "/v1/actors/counter/h1",
                          "not-a-token-0123456789", "incr", NULL),
                     401);
    ck_assert_int_eq(http(port, "GET", "/v1/actors/counter/h1", NULL, NULL,
                          NULL),
                     401);
    ck_assert_int_eq(http(port, "GET", "/metrics", NULL, NULL, NULL), 401);
    ck_assert_int_eq(http(port, "GET", "/v1/cluster", NULL, NULL, NULL),
                     401);
    /* A type outside the token's list: 403; nothing ran. */
    ck_assert_int_eq(http(port, "POST", "/v1/actors/register/h2", LIMITED,
                          "write no", &resp),
                     403);
    ck_assert_ptr_nonnull(strstr(resp, "\"EDENIED\""));
    free(resp);
    ck_assert_int_eq(http(port, "GET", "/v1/actors/register/h2", LIMITED,
                          NULL, NULL),
                     403);
    /* Health probes stay open. */
    ck_assert_int_eq(http(port, "GET", "/healthz", NULL, NULL, NULL), 200);
    ck_assert_int_eq(http(port, "GET", "/readyz", NULL, NULL, NULL), 200);
    /* The state is as it was: never written. */
    ck_assert_int_eq(http(port, "GET", "/v1/actors/counter/h1", ADMIN, NULL,
                          NULL),
                     404);
    ck_assert_int_eq(http(port, "GET", "/v1/actors/register/h2", ADMIN, NULL,
                          NULL),
                     404);
    /* Allowed: 200. */
    ck_assert_int_eq(http(port, "POST", "/v1/actors/counter/h1", LIMITED,
                          "incr", &resp),
                     200);
    ck_assert_ptr_nonnull(strstr(resp, "\r\n\r\n1"));
    free(resp);
    ck_assert_int_eq(http(port, "POST", "/v1/actors/register/h2", CLIENT,
                          "write yes", NULL),
                     200);
    /* /metrics with any token, refusals counted there. */
    ck_assert_int_eq(http(port, "GET", "/metrics", LIMITED, NULL, &resp),
                     200);
    ck_assert_msg(strstr(resp, "# HELP keel_auth_refused_unauth_total ") &&
                      strstr(resp, "\nkeel_auth_refused_unauth_total 5\n") &&
                      strstr(resp, "\nkeel_auth_refused_denied_total 2\n") &&
                      strstr(resp, "\nkeel_insecure 0\n"),
                  "%s", resp);
    free(resp);
}
END_TEST

/* --------------------------------------------------------- the file */

/* keeld with the token file must exit 1 with `want` in its stderr. */
static void keeld_refuses(const char *want, const char *const *more)
{
    const char *argv[24];
    char *bin = tu_bin("keeld"), *out = NULL, *err = NULL;
    int argc = 0, rc;

    argv[argc++] = bin;
    argv[argc++] = "--data";
    argv[argc++] = data;
    while (more != NULL && *more != NULL)
        argv[argc++] = *more++;
    argv[argc] = NULL;
    rc = tu_run_for(argv, 10, &out, &err);
    ck_assert_msg(rc == 1, "keeld: exit %d, want 1: %s", rc, err);
    ck_assert_msg(strstr(err, want) != NULL, "stderr '%s' lacks '%s'", err,
                  want);
    free(out);
    free(err);
    free(bin);
}

START_TEST(bad_token_files_refused)
{
    const char *args[] = {"--listen", "127.0.0.1:0", "--auth-tokens", tokens,
                          NULL};
    char want[1024];

    write_tokens(ADMIN " admin\n", 0644);
    snprintf(want, sizeof want, "auth tokens file %s: permissions 0644 are "
                                "too open",
             tokens);
    keeld_refuses(want, args);
    write_tokens(ADMIN " admin\n", 0620);
    keeld_refuses("permissions 0620 are too open", args);
    write_tokens("# ok\n" ADMIN " admin\n" CLIENT " superuser\n", 0600);
    snprintf(want, sizeof want, "auth tokens file %s line 3: unknown role "
                                "'superuser'",
             tokens);
    keeld_refuses(want, args);
    write_tokens("\n\n\n\nshort client\n", 0600);
    keeld_refuses("line 5: a token is 16 to 256 characters", args);
    write_tokens(CLIENT " client counter,,kv\n", 0600);
    keeld_refuses("line 1: bad actor type list", args);
    write_tokens(ADMIN " admin\n" ADMIN " client\n", 0600);
    keeld_refuses("line 2: the same token as line 1", args);
    write_tokens(ADMIN " admin x y\n", 0600);
    keeld_refuses("line 1: more than three fields", args);
    {
        const char *missing[] = {"--auth-tokens", "/nonexistent/tokens",
                                 NULL};
        keeld_refuses("auth tokens file /nonexistent/tokens: No such file",
                      missing);
    }
}
END_TEST

/* Bounded: waits until keel with token gets exit code want. */
static int wait_exit(const char *token, int want)
{
    int i, rc = -1;

    for (i = 0; i < 100; i++) {
        rc = keel_as(token, NULL, NULL, "call", "counter", "r", "get", NULL);
        if (rc == want)
            return rc;
        usleep(50000);
    }
    return rc;
}

START_TEST(sighup_reload)
{
    char *log, *reply = NULL;
    size_t rlen;
    keel_client *kc;

    start_with_tokens(0);
    /* A connection that authenticated with CLIENT before the reload. */
    ck_assert_int_eq(keel_client_connect(node.addr, 10000, &kc), 0);
    ck_assert_int_eq(keel_client_auth(kc, CLIENT, &reply, &rlen), 0);
    ck_assert_str_eq(reply, "auth client\n");
    free(reply);
    ck_assert_int_eq(keel_client_call(kc, KEEL_FRAME_CALL, "counter", "k", 1,
                                      "incr", 4, &reply, &rlen),
                     0);
    free(reply);
    refused_as(LATER, "keel: EUNAUTH: not authenticated: unknown token",
               "call", "counter", "r", "incr", NULL);
    /* LATER added, CLIENT removed. */
    write_tokens(ADMIN " admin\n" LATER " client\n", 0600);
    ck_assert_int_eq(kill(node.pid, SIGHUP), 0);
    ck_assert_int_eq(wait_exit(LATER, 0), 0);
    refused_as(CLIENT, "keel: EUNAUTH: not authenticated: unknown token",
               "call", "counter", "r", "incr", NULL);
    /* The connection authenticated with it is anonymous now: refused, and
     * the counter did not move. */
    ck_assert_int_eq(keel_client_call(kc, KEEL_FRAME_CALL, "counter", "k", 1,
                                      "incr", 4, &reply, &rlen),
                     KEEL_EUNAUTH);
    free(reply);
    keel_client_close(kc);
    reply = admin_call("counter", "k", "get");
    ck_assert_str_eq(reply, "1\n");
    free(reply);
    /* A bad file on reload: logged, the table kept. */
    write_tokens(ADMIN " admin\n" LATER " root\n", 0600);
    ck_assert_int_eq(kill(node.pid, SIGHUP), 0);
    {
        int i;
        for (i = 0; i < 100; i++) {
            log = tu_keeld_log(&node);
            if (log != NULL && strstr(log, "reload failed") != NULL)
                break;
            free(log);
            log = NULL;
            usleep(50000);
        }
    }
    ck_assert_msg(log != NULL && strstr(log, "keeping the 2 tokens loaded "
                                             "before") &&
                      strstr(log, "line 2: unknown role 'root'"),
                  "%s", log ? log : "(no log)");
    free(log);
    ck_assert_int_eq(keel_as(LATER, NULL, NULL, "call", "counter", "r",
                             "incr", NULL),
                     0);
    /* A connection authenticated before a reload that drops its token is
     * refused from its next request: the CLI opens one per run, so the
     * removal above already showed it; the node still runs. */
    ck_assert_int_eq(keel_as(NULL, NULL, NULL, "ping", NULL), 0);
}
END_TEST

/* ------------------------------------------------ failed token attempts */

/* INFO auth TOKEN on raw connection fd, request id `id`; the answer in
 * *f. Returns its kind, or -1 when none came (the connection closed, 5 s
 * passed). */
static int raw_auth(int fd, uint64_t id, const char *token, tu_rframe *f)
{
    uint8_t frame[KEEL_FRAME_HEADER + 5 + 256];
    size_t tl = strlen(token);

    ck_assert_uint_le(tl, 256);
    keel_frame_header(frame, KEEL_FRAME_INFO, id, (uint32_t)(5 + tl));
    memcpy(frame + KEEL_FRAME_HEADER, "auth", 5); /* with its NUL */
    memcpy(frame + KEEL_FRAME_HEADER + 5, token, tl);
    if (tu_send_all(fd, frame, KEEL_FRAME_HEADER + 5 + tl) != 0 ||
        tu_read_frame(fd, f, 5000) != 1)
        return -1;
    ck_assert_uint_eq(f->id, id);
    return f->kind;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int body_has(const tu_rframe *f, const char *s)
{
    return memmem(f->body, f->len, s, strlen(s)) != NULL;
}

/* A PING on fd is answered. */
static int raw_ping(int fd)
{
    uint8_t frame[KEEL_FRAME_HEADER + 2];
    tu_rframe f;

    keel_frame_header(frame, KEEL_FRAME_PING, 99, 2);
    memcpy(frame + KEEL_FRAME_HEADER, "hi", 2);
    return tu_send_all(fd, frame, sizeof frame) == 0 &&
           tu_read_frame(fd, &f, 5000) == 1 && f.kind == KEEL_FRAME_PONG;
}

/* Wrong tokens from 127.0.0.1 until the node refuses them unchecked, on
 * fresh connections (each closed after its third failure). At most 40
 * attempts. Returns how many were refused as unknown before that. */
static int brute_force(const char *from)
{
    int attempts = 0, unknown = 0, fd = -1, on_conn = 0, cut = 0;
    char wrong[64];
    tu_rframe f;

    while (!cut && attempts < 40) {
        if (fd < 0) {
            fd = tu_raw_connect_from(from, node.port);
            ck_assert_int_ge(fd, 0);
            on_conn = 0;
        }
        snprintf(wrong, sizeof wrong, "guess-%04d-0123456789abcdef",
                 attempts);
        ck_assert_int_eq(raw_auth(fd, (uint64_t)attempts + 1, wrong, &f),
                         KEEL_FRAME_ERROR);
        ck_assert_int_eq(f.code, KEEL_EUNAUTH);
        attempts++;
        if (body_has(&f, "too many failed token attempts from"))
            cut = 1;
        else
            ck_assert_msg(body_has(&f, "unknown token"), "%.*s",
                          (int)f.len, (const char *)f.body);
        unknown += !cut;
        if (++on_conn == 3) {
            /* Closed after the refusal of its third failure. */
            ck_assert(body_has(&f, "it is closed"));
            ck_assert(tu_closed_within(fd, 5000));
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0)
        close(fd);
    ck_assert_msg(cut, "still checking tokens after %d wrong ones",
                  attempts);
    return unknown;
}

START_TEST(failed_token_attempts_limited)
{
    const char *extra[] = {"--auth-tokens", tokens, "--http", "127.0.0.1:0",
                           NULL};
    tu_rframe f;
    char *resp = NULL;
    int fd, port;

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
    port = http_port_of();

    /* One connection: two failures leave it open, the third closes it,
     * and a frame sent after is not answered. */
    fd = tu_raw_connect_from("127.0.0.3", node.port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(raw_auth(fd, 1, "wrong-token-0123456789", &f),
                     KEEL_FRAME_ERROR);
    ck_assert_int_eq(raw_auth(fd, 2, "wrong-token-0123456789", &f),
                     KEEL_FRAME_ERROR);
    ck_assert(!body_has(&f, "closed"));
    ck_assert(raw_ping(fd));
    ck_assert_int_eq(raw_auth(fd, 3, "wrong-token-0123456789", &f),
                     KEEL_FRAME_ERROR);
    ck_assert_int_eq(f.code, KEEL_EUNAUTH);
    ck_assert_msg(body_has(&f, "too many failed attempts on this "
                               "connection: it is closed"),
                  "%.*s", (int)f.len, (const char *)f.body);
    ck_assert(tu_closed_within(fd, 5000));
    close(fd);
    ck_assert_int_eq(stat_as(ADMIN, "auth_conns_closed"), 1);
    /* A right token on a fresh connection from there still works: three
     * failures are below the address's limit. */
    fd = tu_raw_connect_from("127.0.0.3", node.port);
    ck_assert_int_eq(raw_auth(fd, 1, ADMIN, &f), KEEL_FRAME_REPLY);
    close(fd);

    /* A brute force from 127.0.0.1: ten wrong tokens are looked at, the
     * next is refused without a look. */
    ck_assert_int_eq(brute_force("127.0.0.1"), 10);
    /* From there even the right token is refused now, on the wire and
     * over HTTP... */
    fd = tu_raw_connect_from("127.0.0.1", node.port);
    ck_assert_int_eq(raw_auth(fd, 1, ADMIN, &f), KEEL_FRAME_ERROR);
    ck_assert_int_eq(f.code, KEEL_EUNAUTH);
    ck_assert(body_has(&f, "too many failed token attempts from "
                           "127.0.0.1"));
    close(fd);
    refused_as(ADMIN, "keel: EUNAUTH: not authenticated: too many failed "
                      "token attempts from 127.0.0.1",
               "call", "counter", "bf", "incr", NULL);
    ck_assert_int_eq(http_from("127.0.0.1", port, "POST",
                               "/v1/actors/counter/bf", ADMIN, "incr",
                               &resp),
                     401);
    ck_assert_ptr_nonnull(strstr(resp, "too many failed token attempts"));
    free(resp);
    /* ...while another address is served as usual. */
    fd = tu_raw_connect_from("127.0.0.2", node.port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(raw_auth(fd, 1, CLIENT, &f), KEEL_FRAME_REPLY);
    ck_assert_int_eq(memcmp(f.body, "auth client\n", 12), 0);
    close(fd);
    ck_assert_int_eq(http_from("127.0.0.2", port, "POST",
                               "/v1/actors/counter/bf", ADMIN, "incr",
                               &resp),
                     200);
    ck_assert_ptr_nonnull(strstr(resp, "\r\n\r\n1"));
    free(resp);
    ck_assert_int_eq(http_from("127.0.0.2", port, "GET", "/metrics", CLIENT,
                               NULL, &resp),
                     200);
    /* Four refused unchecked: the brute force's last, the raw attempt,
     * the CLI's and the HTTP request; four connections closed: the first
     * one and three of the brute force. */
    ck_assert_msg(strstr(resp, "\nkeel_auth_throttled_total 4\n") &&
                      strstr(resp, "\nkeel_auth_conns_closed_total 4\n"),
                  "%s", resp);
    free(resp);

    /* Wrong bearer tokens count as well: ten from 127.0.0.4, then the
     * right one is refused there, over HTTP and on the wire. */
    {
        int k;
        for (k = 0; k < 10; k++)
            ck_assert_int_eq(http_from("127.0.0.4", port, "GET", "/metrics",
                                       "not-a-token-0123456789", NULL, NULL),
                             401);
    }
    ck_assert_int_eq(http_from("127.0.0.4", port, "GET", "/metrics", CLIENT,
                               NULL, &resp),
                     401);
    ck_assert_ptr_nonnull(strstr(resp, "too many failed token attempts from "
                                       "127.0.0.4"));
    free(resp);
    fd = tu_raw_connect_from("127.0.0.4", node.port);
    ck_assert_int_eq(raw_auth(fd, 1, CLIENT, &f), KEEL_FRAME_ERROR);
    ck_assert(body_has(&f, "too many failed token attempts"));
    close(fd);
    /* Nothing refused ran: bf was incremented once, from 127.0.0.2 (the
     * CLI cannot choose its address: read it over HTTP from there). */
    ck_assert_int_eq(http_from("127.0.0.2", port, "POST",
                               "/v1/actors/counter/bf", ADMIN, "get", &resp),
                     200);
    ck_assert_msg(strstr(resp, "\r\n\r\n1") != NULL, "%s", resp);
    free(resp);
    {
        char *log = tu_keeld_log(&node);
        ck_assert_msg(log != NULL &&
                          strstr(log, "10 failed token attempts from "
                                      "127.0.0.1 within 10 s"),
                      "%s", log ? log : "(no log)");
        free(log);
    }
}
END_TEST

/* XFER and REPL from a connection that is not a node's are refused before
 * their body is looked at, and the connection is closed (more of a stream
 * may be on its way), with access control as without it: EUNAUTH with no
 * identity, EDENIED with a client's. Before, with tokens, the connection
 * stayed open. */
START_TEST(peer_frames_from_clients_close)
{
    static const uint8_t kinds[2] = {KEEL_FRAME_XFER, KEEL_FRAME_REPL};
    uint8_t frame[KEEL_FRAME_HEADER + 16];
    tu_rframe f;
    int i, fd;

    start_with_tokens(0);
    for (i = 0; i < 4; i++) {
        fd = tu_raw_connect(node.port);
        ck_assert_int_ge(fd, 0);
        if (i >= 2)
            ck_assert_int_eq(raw_auth(fd, 1, CLIENT, &f), KEEL_FRAME_REPLY);
        memset(frame, 0, sizeof frame);
        keel_frame_header(frame, kinds[i % 2], 7, 16);
        ck_assert_int_eq(tu_send_all(fd, frame, sizeof frame), 0);
        ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
        ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
        ck_assert_uint_eq(f.id, 7);
        ck_assert_int_eq(f.code, i >= 2 ? KEEL_EDENIED : KEEL_EUNAUTH);
        ck_assert_msg(tu_closed_within(fd, 5000),
                      "the connection stayed open after %s from %s",
                      i % 2 ? "REPL" : "XFER",
                      i >= 2 ? "a client" : "no identity");
        close(fd);
    }
    ck_assert_int_eq(keel_as(ADMIN, NULL, NULL, "ping", NULL), 0);
}
END_TEST

/* Following an actor needs what calling its type needs: with no identity
 * SUBSCRIBE and UNSUBSCRIBE are both EUNAUTH (before, UNSUBSCRIBE was
 * answered ENOTFOUND, as if an anonymous connection could have had a
 * subscription), and the connection goes on. */
START_TEST(follow_frames_need_a_token)
{
    static const uint8_t kinds[2] = {KEEL_FRAME_SUBSCRIBE,
                                     KEEL_FRAME_UNSUBSCRIBE};
    uint8_t frame[KEEL_FRAME_HEADER];
    tu_rframe f;
    int i, fd;

    start_with_tokens(0);
    fd = tu_raw_connect(node.port);
    ck_assert_int_ge(fd, 0);
    for (i = 0; i < 2; i++) {
        keel_frame_header(frame, kinds[i], 9 + (uint32_t)i, 0);
        ck_assert_int_eq(tu_send_all(fd, frame, sizeof frame), 0);
        ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
        ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
        ck_assert_uint_eq(f.id, 9 + (uint32_t)i);
        ck_assert_msg(f.code == KEEL_EUNAUTH, "%s answered %s",
                      i ? "UNSUBSCRIBE" : "SUBSCRIBE",
                      keel_err_name(f.code));
    }
    ck_assert_int_eq(raw_auth(fd, 11, CLIENT, &f), KEEL_FRAME_REPLY);
    keel_frame_header(frame, KEEL_FRAME_UNSUBSCRIBE, 12, 0);
    ck_assert_int_eq(tu_send_all(fd, frame, sizeof frame), 0);
    ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
    ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert_int_eq(f.code, KEEL_ENOTFOUND); /* logged in: none with id 12 */
    close(fd);
}
END_TEST

/* A short window: the address is served again once it is over. */
START_TEST(failed_token_window_ends)
{
    const char *extra[] = {"--auth-tokens", tokens, "--auth-fail-window",
                           "3", "--auth-addr-fails", "4",
                           "--auth-conn-fails", "2", NULL};
    tu_rframe f;
    double t0;
    int fd, ok = 0;

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
    /* Two failures close a connection now. */
    fd = tu_raw_connect_from("127.0.0.1", node.port);
    ck_assert_int_eq(raw_auth(fd, 1, "wrong-token-0123456789", &f),
                     KEEL_FRAME_ERROR);
    ck_assert(raw_ping(fd));
    ck_assert_int_eq(raw_auth(fd, 2, "wrong-token-0123456789", &f),
                     KEEL_FRAME_ERROR);
    ck_assert(body_has(&f, "it is closed"));
    ck_assert(tu_closed_within(fd, 5000));
    close(fd);
    /* Two more, and the address is cut off. */
    fd = tu_raw_connect_from("127.0.0.1", node.port);
    ck_assert_int_eq(raw_auth(fd, 1, "wrong-token-0123456789", &f),
                     KEEL_FRAME_ERROR);
    ck_assert(body_has(&f, "unknown token"));
    ck_assert_int_eq(raw_auth(fd, 2, "wrong-token-0123456789", &f),
                     KEEL_FRAME_ERROR);
    ck_assert(body_has(&f, "unknown token"));
    close(fd);
    t0 = now_s();
    fd = tu_raw_connect_from("127.0.0.1", node.port);
    ck_assert_int_eq(raw_auth(fd, 1, ADMIN, &f), KEEL_FRAME_ERROR);
    ck_assert(body_has(&f, "too many failed token attempts"));
    close(fd);
    /* Served again within the window and a second or so (at most 10 s). */
    while (!ok && now_s() - t0 < 10) {
        fd = tu_raw_connect_from("127.0.0.1", node.port);
        ck_assert_int_ge(fd, 0);
        ok = raw_auth(fd, 1, ADMIN, &f) == KEEL_FRAME_REPLY;
        close(fd);
        if (!ok)
            usleep(200000);
    }
    ck_assert_msg(ok, "still refused 10 s after a 3 s window began");
    ck_assert_int_eq(stat_as(ADMIN, "auth_conns_closed"), 2);
    ck_assert_int_ge(stat_as(ADMIN, "auth_throttled"), 1);
}
END_TEST

/* ---------------------------------------------------- secure by default */

/* Whether every status answer of the node (started with --http) says it
 * runs without credentials: keeld's ready line, `keel nodes`, `shards`,
 * `where`, `capabilities` and /v1/cluster. */
static void says_insecure(int insecure)
{
    static const char *const cmds[][4] = {
        {"nodes", NULL}, {"shards", NULL}, {"where", "counter", "c", NULL},
        {"capabilities", NULL}};
    const char *line = "insecure local (running without credentials: "
                       "--insecure)\n";
    char *out, *log, *resp = NULL;
    size_t i;

    log = tu_keeld_log(&node);
    ck_assert_ptr_nonnull(log);
    ck_assert_msg((strstr(log, "keeld: ready on port ") != NULL) &&
                      (strstr(log, " (INSECURE: no credentials, "
                                   "--insecure)\n") != NULL) == insecure,
                  "%s", log);
    free(log);
    for (i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        out = NULL;
        ck_assert_int_eq(keel_as(NULL, &out, NULL, cmds[i][0], cmds[i][1],
                                 cmds[i][2], NULL),
                         0);
        ck_assert_msg((strstr(out, line) != NULL) == insecure,
                      "keel %s: %s", cmds[i][0], out);
        free(out);
    }
    out = NULL;
    ck_assert_int_eq(keel_as(NULL, &out, NULL, "nodes", NULL), 0);
    ck_assert_msg((strstr(out, " role controller self insecure\n") != NULL) ==
                      insecure,
                  "%s", out);
    free(out);
    ck_assert_int_eq(http(http_port_of(), "GET", "/v1/cluster", NULL, NULL,
                          &resp),
                     200);
    ck_assert_msg(strstr(resp, insecure ? "{\"mode\": \"standalone\", "
                                          "\"insecure\": true, "
                                        : "{\"mode\": \"standalone\", "
                                          "\"insecure\": false, ") &&
                      strstr(resp, insecure ? "\"self\": true, \"insecure\": "
                                              "true"
                                            : "\"self\": true, \"insecure\": "
                                              "false"),
                  "%s", resp);
    free(resp);
}

START_TEST(credentials_required_beyond_loopback)
{
    const char *cluster[] = {"--listen", "127.0.0.1:0", "--zk", "127.0.0.1:1",
                             "--cluster", "c", "--node-id", "n1", NULL};
    const char *any[] = {"--listen", "0.0.0.0:0", NULL};
    const char *http_any[] = {"--listen", "127.0.0.1:0", "--http",
                              "0.0.0.0:0", NULL};

    keeld_refuses("it is a cluster node (--zk), so it needs credentials: "
                  "--auth-tokens FILE",
                  cluster);
    keeld_refuses("it listens on 0.0.0.0:0, beyond loopback, so it needs "
                  "credentials",
                  any);
    keeld_refuses("its HTTP face listens on 0.0.0.0:0, beyond loopback",
                  http_any);
    /* Loopback without credentials: as before, not insecure, and no
     * answer says it is. */
    {
        const char *h[] = {"--http", "127.0.0.1:0", NULL};
        ck_assert_int_eq(tu_keeld_start(&node, data, 0, h), 0);
    }
    ck_assert_int_eq(keel_as(NULL, NULL, NULL, "call", "counter", "c",
                             "incr", NULL),
                     0);
    ck_assert_int_eq(stat_as(NULL, "insecure"), 0);
    says_insecure(0);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    tu_keeld_free(&node);
    memset(&node, 0, sizeof node);
    /* Beyond loopback with --insecure: starts, warns, says so. */
    {
        const char *extra[] = {"--insecure", NULL};
        char *log;
        tu_keeld k;
        memset(&k, 0, sizeof k);
        /* tu_keeld_start listens on 127.0.0.1; a later --listen wins. */
        {
            const char *wide[] = {"--listen", "0.0.0.0:0", "--insecure",
                                  "--http", "127.0.0.1:0", NULL};
            (void)extra;
            ck_assert_int_eq(tu_keeld_start(&k, data, 0, wide), 0);
        }
        log = tu_keeld_log(&k);
        ck_assert_msg(log && strstr(log, "INSECURE: it listens on 0.0.0.0:0"),
                      "%s", log ? log : "");
        free(log);
        snprintf(k.addr, sizeof k.addr, "127.0.0.1:%d", k.port);
        node = k;
        ck_assert_int_eq(stat_as(NULL, "insecure"), 1);
        says_insecure(1);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("auth");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, no_token_nothing_runs);
    tcase_add_test(tc, client_token_roles_and_types);
    tcase_add_test(tc, shards_digest_needs_admin);
    tcase_add_test(tc, http_401_403_200);
    tcase_add_test(tc, bad_token_files_refused);
    tcase_add_test(tc, sighup_reload);
    tcase_add_test(tc, failed_token_attempts_limited);
    tcase_add_test(tc, failed_token_window_ends);
    tcase_add_test(tc, peer_frames_from_clients_close);
    tcase_add_test(tc, follow_frames_need_a_token);
    tcase_add_test(tc, credentials_required_beyond_loopback);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
