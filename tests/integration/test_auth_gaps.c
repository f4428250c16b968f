/* Access rules and connection bounds that docs/security.md promises for
 * someone who can reach a node's port but holds no credential, checked
 * from the paths around the usual ones: a standalone node's node claim
 * (INFO peer), a node whose only credential is TLS, a client that never
 * reads what it asked for, a subscription whose token a reload removed,
 * and an HTTP request whose body trickles in after its headers. Real
 * keeld processes on 127.0.0.1; every wait is bounded. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "certs.h"
#include "keel.h"
#include "proc.h"
#include "rawconn.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define ADMIN "admin-token-0123456789"
#define CLIENT "client-token-0123456789"

static char *dir, *data, *tokens;
static tu_keeld node;

static void write_tokens(const char *text)
{
    FILE *f = fopen(tokens, "w");

    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(chmod(tokens, 0600), 0);
}

static void setup(void)
{
    dir = tu_tmpdir("authgaps");
    if (asprintf(&data, "%s/data", dir) < 0 ||
        asprintf(&tokens, "%s/tokens", dir) < 0)
        abort();
    memset(&node, 0, sizeof node);
    write_tokens(ADMIN " admin\n" CLIENT " client\n");
}

static void teardown(void)
{
    tu_keeld_free(&node);
    tu_rmrf(dir);
    free(dir);
    free(data);
    free(tokens);
}

static void start(const char *const *more)
{
    const char *extra[16];
    int i = 0;

    extra[i++] = "--auth-tokens";
    extra[i++] = tokens;
    while (more != NULL && *more != NULL && i < 15)
        extra[i++] = *more++;
    extra[i] = NULL;
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
}

/* Sends one frame of kind with body on raw connection fd. */
static void send_raw(int fd, uint8_t kind, uint64_t id, const void *body,
                     size_t len)
{
    uint8_t *f = malloc(KEEL_FRAME_HEADER + len + 1);

    ck_assert_ptr_nonnull(f);
    keel_frame_header(f, kind, id, len);
    if (len > 0)
        memcpy(f + KEEL_FRAME_HEADER, body, len);
    ck_assert_int_eq(tu_send_all(fd, f, KEEL_FRAME_HEADER + len), 0);
    free(f);
}

static void send_call(int fd, uint64_t id, const char *type, const char *aid,
                      const char *msg)
{
    uint8_t body[512];
    size_t bl = keel_call_body_encode(body, type, strlen(type), aid,
                                      strlen(aid), msg, strlen(msg));

    send_raw(fd, KEEL_FRAME_CALL, id, body, bl);
}

/* A figure of `keel stat` read with the admin token, or -1. */
static long admin_stat(const char *name)
{
    const char *argv[] = {NULL, "-a", node.addr, "--token", ADMIN, "stat",
                          NULL};
    char *bin = tu_bin("keel"), *out = NULL, key[64];
    const char *p;
    long v = -1;

    argv[0] = bin;
    snprintf(key, sizeof key, "\n%s ", name);
    if (tu_run(argv, &out, NULL) == 0 && out != NULL &&
        (p = strstr(out, key)) != NULL)
        v = strtol(p + strlen(key), NULL, 10);
    free(out);
    free(bin);
    return v;
}

static char *admin_call(const char *type, const char *id, const char *msg)
{
    const char *argv[] = {NULL, "-a", node.addr, "--token", ADMIN, "call",
                          type, id, msg, NULL};
    char *bin = tu_bin("keel"), *out = NULL, *err = NULL;
    int rc;

    argv[0] = bin;
    rc = tu_run(argv, &out, &err);
    ck_assert_msg(rc == 0, "admin call: %d %s", rc, err ? err : "");
    free(err);
    free(bin);
    return out;
}

/* ------------------------------------ a standalone node's node claim */

/* docs/security.md: someone who holds no credential must not run any
 * actor nor read the node's statistics. On a standalone node, which has
 * no other nodes at all, one INFO "peer" frame without a node id makes
 * the connection a node's, and every token check passes from then on. */
START_TEST(standalone_peer_claim_is_no_credential)
{
    tu_rframe f;
    char *out;
    int fd;

    start(NULL);
    fd = tu_raw_connect(node.port);
    ck_assert_int_ge(fd, 0);
    send_call(fd, 1, "counter", "c1", "incr");
    ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
    ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert_int_eq(f.code, KEEL_EUNAUTH);
    /* The claim: "peer", no id. */
    send_raw(fd, KEEL_FRAME_INFO, 2, "peer", 4);
    ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
    /* The same call again, and a STAT: still no credential. */
    send_call(fd, 3, "counter", "c1", "incr");
    ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
    ck_assert_msg(f.kind == KEEL_FRAME_ERROR,
                  "a call after INFO peer on a standalone node with tokens "
                  "ran (kind %d, reply '%.*s')",
                  f.kind, (int)f.len, (const char *)f.body);
    close(fd);
    out = admin_call("counter", "c1", "get");
    ck_assert_str_eq(out, "0\n");
    free(out);
}
END_TEST

/* The same claim exempts the connection from --conn-idle-timeout, which
 * spares only "connections from other nodes": a client holds its place
 * for ever with one frame. */
START_TEST(standalone_peer_claim_never_idle)
{
    const char *more[] = {"--conn-idle-timeout", "1", NULL};
    tu_rframe f;
    int fd, rc;

    start(more);
    fd = tu_raw_connect(node.port);
    ck_assert_int_ge(fd, 0);
    send_raw(fd, KEEL_FRAME_INFO, 1, "peer", 4);
    ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
    /* Idle for 1 s: closed with ETIMEDOUT quoting id 0 within ~2 s. */
    rc = tu_read_frame(fd, &f, 5000);
    ck_assert_msg(rc != -1,
                  "a connection that said INFO peer on a standalone node "
                  "was not closed for idleness within 5 s "
                  "(--conn-idle-timeout 1)");
    close(fd);
}
END_TEST

/* -------------------------------------------- a non-reading client */

/* A client that sends requests and never reads the answers: the node
 * stops reading it once 8 MiB of answers wait (WBUF_PAUSE), and the idle
 * sweep skips a connection with unsent output, so it stays, with its
 * buffers, for ever. PING needs no token. */
START_TEST(nonreading_client_never_closed)
{
    const char *more[] = {"--conn-idle-timeout", "1", NULL};
    static uint8_t body[256 << 10];
    long before, after, conns;
    int fd, i;
    struct timeval tv = {1, 0};

    start(more);
    before = tu_rss_kb(node.pid);
    fd = tu_raw_connect(node.port);
    ck_assert_int_ge(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    for (i = 0; i < 256; i++) { /* up to 64 MiB of PINGs */
        uint8_t hdr[KEEL_FRAME_HEADER];
        keel_frame_header(hdr, KEEL_FRAME_PING, (uint64_t)i + 1, sizeof body);
        if (tu_send_all(fd, hdr, sizeof hdr) != 0 ||
            tu_send_all(fd, body, sizeof body) != 0)
            break; /* the node stopped reading us */
    }
    sleep(4); /* four idle timeouts */
    after = tu_rss_kb(node.pid);
    conns = admin_stat("connections"); /* its own connection counts */
    fprintf(stderr,
            "nonreading_client_never_closed: sent %d PINGs of 256 KiB; "
            "node RSS %ld -> %ld KiB; connections %ld\n",
            i, before, after, conns);
    ck_assert_msg(conns == 1,
                  "a client that reads nothing is still connected after 4 "
                  "idle timeouts (connections %ld), its answers held in "
                  "the node (RSS %ld -> %ld KiB)",
                  conns, before, after);
    close(fd);
}
END_TEST

static long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Moves bytes on a non-blocking use of fd for at most total_ms: sends
 * out[*sent..len) as the socket takes them and, when reading, reads and
 * drops whatever arrives. Without reading it returns once nothing could
 * be sent for idle_ms (the node stopped reading us); reading, once all
 * of out is sent and nothing has arrived for idle_ms (every answer
 * read). */
static void pump(int fd, const uint8_t *out, size_t len, size_t *sent,
                 int reading, int idle_ms, int total_ms)
{
    static uint8_t sink[1 << 16];
    long start = now_ms(), moved = start;

    while (now_ms() - start < total_ms) {
        struct pollfd p = {fd, 0, 0};
        ssize_t r;

        if (now_ms() - moved >= idle_ms && (!reading || *sent == len))
            return;
        p.events = (short)((*sent < len ? POLLOUT : 0) |
                           (reading ? POLLIN : 0));
        if (poll(&p, 1, 100) <= 0)
            continue;
        if ((p.revents & POLLOUT) && *sent < len) {
            size_t want = len - *sent > (1u << 20) ? 1u << 20 : len - *sent;
            r = send(fd, out + *sent, want, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r > 0) {
                *sent += (size_t)r;
                moved = now_ms();
            }
        }
        if (reading && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
            r = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
            ck_assert_msg(r != 0, "the node closed the connection");
            if (r > 0)
                moved = now_ms();
        }
    }
}

/* The unread bound (WBUF_PAUSE, 8 MiB) held per read, not per frame: one
 * read of a grown read buffer can hold a hundred thousand 16-byte STAT
 * frames, each answered with over a kilobyte of text, and every one of
 * them was answered before the bound was looked at. A client that sent
 * large PINGs (which grow the read buffer and pause the node) and then a
 * megabyte of STATs made it queue tens of megabytes of answers in one
 * go, whether it read them or not. Now the node takes no further frame
 * once 8 MiB wait: the most one connection ever held (conn_unsent_peak)
 * is 8 MiB plus one answer. */
START_TEST(small_frames_stop_at_the_unread_bound)
{
    const size_t big = (1u << 20) - 64, nbig = 48, nstat = 1u << 16;
    int small = 256 << 10;
    size_t len = 0, sent = 0, i;
    uint8_t auth[64], *out;
    long peak;
    tu_rframe f;
    int fd;

    start(NULL);
    fd = tu_raw_connect(node.port);
    ck_assert_int_ge(fd, 0);
    /* A small receive buffer, fixed (no autotuning): with what the
     * kernel holds of the requests (a few MiB each way at most), the
     * PINGs sent stay well above what the node takes before it must
     * stop reading. */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    memcpy(auth, "auth", 5);
    memcpy(auth + 5, CLIENT, strlen(CLIENT));
    send_raw(fd, KEEL_FRAME_INFO, 1, auth, 5 + strlen(CLIENT));
    ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
    ck_assert_int_eq(f.kind, KEEL_FRAME_REPLY);

    out = calloc(1, nbig * (KEEL_FRAME_HEADER + big) +
                        nstat * KEEL_FRAME_HEADER);
    ck_assert_ptr_nonnull(out);
    for (i = 0; i < nbig; i++) { /* 48 MiB of PINGs: the node pauses */
        keel_frame_header(out + len, KEEL_FRAME_PING, 100 + i, big);
        len += KEEL_FRAME_HEADER + big;
    }
    for (i = 0; i < nstat; i++) { /* then a megabyte of STATs */
        keel_frame_header(out + len, KEEL_FRAME_STAT, 1000 + i, 0);
        len += KEEL_FRAME_HEADER;
    }
    /* Send until the node stops reading us (the kernel's buffers may
     * take all of it first), then read every answer: the node resumes,
     * pauses, resumes, and takes the STATs with its read buffer grown by
     * the PINGs, many at a time. */
    pump(fd, out, len, &sent, 0, 1000, 20000);
    pump(fd, out, len, &sent, 1, 1000, 60000);
    ck_assert_uint_eq(sent, len);
    peak = admin_stat("conn_unsent_peak");
    fprintf(stderr, "small_frames_stop_at_the_unread_bound: "
                    "conn_unsent_peak %ld\n", peak);
    ck_assert_msg(peak >= 8l << 20,
                  "conn_unsent_peak %ld: the node never held 8 MiB of "
                  "answers, so it never had to stop reading",
                  peak);
    ck_assert_msg(peak <= (8l << 20) + (1l << 20) + 64,
                  "one connection that does not read held %ld bytes of "
                  "answers: more than 8 MiB plus one answer",
                  peak);
    free(out);
    close(fd);
}
END_TEST

/* ------------------------------- connections that never authenticate */

/* PINGs one raw connection: 1 when it answered PONG. */
static int pinged(int fd)
{
    tu_rframe f;

    send_raw(fd, KEEL_FRAME_PING, 7, NULL, 0);
    return tu_read_frame(fd, &f, 5000) == 1 && f.kind == KEEL_FRAME_PONG;
}

/* docs/operations.md, "Resource limits and hostile clients": connections
 * without credentials could fill --max-connections and, pinging to stay
 * alive, hold every place: then no client with a token (and no other
 * node's link) could connect. At the limit the oldest connection without
 * credentials now gives its place, never one that authenticated. */
static void fill_then_authenticate(int max)
{
    char maxs[16];
    const char *more[] = {"--max-connections", maxs, NULL};
    int anon[16], more_fds[32], fd, i;
    keel_client *c = NULL;
    char *reply = NULL;
    size_t rlen;
    tu_rframe f;

    snprintf(maxs, sizeof maxs, "%d", max);
    start(more);
    for (i = 0; i < max; i++) {
        anon[i] = tu_raw_connect(node.port);
        ck_assert_int_ge(anon[i], 0);
        ck_assert_msg(pinged(anon[i]), "anonymous connection %d", i);
    }
    /* Every place is taken by a connection that proved nothing. */
    ck_assert_int_eq(keel_client_connect(node.addr, 3000, &c), 0);
    ck_assert_msg(keel_client_auth(c, CLIENT, &reply, &rlen) == 0,
                  "a client with a token could not get in past %d "
                  "connections without credentials: %s",
                  max, reply != NULL ? reply : "(transport error)");
    free(reply);
    reply = NULL;
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "counter", "c1", 2,
                                      "incr", 4, &reply, &rlen),
                     0);
    ck_assert_str_eq(reply, "1");
    free(reply);
    /* The oldest of them was told why and closed. */
    ck_assert_int_eq(tu_read_frame(anon[0], &f, 5000), 1);
    ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert_int_eq(f.code, KEEL_EOVERLOAD);
    ck_assert_int_eq(tu_closed_within(anon[0], 5000), 1);
    close(anon[0]);
    /* Twice as many more: each gets in, in place of an older one without
     * credentials; the client that authenticated keeps its place. */
    for (i = 0; i < 2 * max; i++) {
        fd = tu_raw_connect(node.port);
        ck_assert_int_ge(fd, 0);
        ck_assert_msg(pinged(fd), "new anonymous connection %d", i);
        more_fds[i] = fd;
    }
    reply = NULL;
    ck_assert_msg(keel_client_call(c, KEEL_FRAME_CALL, "counter", "c1", 2,
                                   "incr", 4, &reply, &rlen) == 0,
                  "the client with a token lost its place to connections "
                  "without credentials: %s",
                  reply != NULL ? reply : "(transport error)");
    ck_assert_str_eq(reply, "2");
    free(reply);
    for (i = 1; i < max; i++)
        close(anon[i]);
    for (i = 0; i < 2 * max; i++)
        close(more_fds[i]);
    keel_client_close(c);
}

START_TEST(anonymous_connections_give_their_place)
{
    fill_then_authenticate(4);
}
END_TEST

/* The same over TLS, with tokens: the oldest connection without
 * credentials is one whose handshake never began (closed without a
 * word), then ones whose handshake is done (told EOVERLOAD through TLS,
 * then closed). The node survives every eviction (the test build runs
 * under the sanitizers), and the client with a token keeps its place. */
START_TEST(anonymous_tls_connections_give_their_place)
{
    char ca[512], cert[512], key[512], why[256] = "";
    const char *extra[12];
    keel_client_tls t;
    keel_client *anon[3] = {NULL, NULL, NULL}, *more[6], *c = NULL;
    char *reply = NULL;
    size_t rlen = 0;
    int raw, i, k;

    ck_assert_int_eq(tu_certs_ca(dir, "ca"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "node", "node:n0"), 0);
    tu_certs_path(ca, sizeof ca, dir, "ca", "pem");
    tu_certs_path(cert, sizeof cert, dir, "node", "pem");
    tu_certs_path(key, sizeof key, dir, "node", "key");
    i = 0;
    extra[i++] = "--auth-tokens";
    extra[i++] = tokens;
    extra[i++] = "--tls-cert";
    extra[i++] = cert;
    extra[i++] = "--tls-key";
    extra[i++] = key;
    extra[i++] = "--tls-ca";
    extra[i++] = ca;
    extra[i++] = "--max-connections";
    extra[i++] = "4";
    extra[i] = NULL;
    setenv("KEEL_TLS_CA", ca, 1);
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
    memset(&t, 0, sizeof t);
    t.ca = ca;
    {
        /* no handshake, nothing sent: the oldest */
        struct sockaddr_in sin;
        memset(&sin, 0, sizeof sin);
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)node.port);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        raw = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(raw, 0);
        ck_assert_int_eq(connect(raw, (struct sockaddr *)&sin, sizeof sin),
                         0);
    }
    usleep(100000);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(keel_client_connect_tls(node.addr, 5000, &t,
                                                 &anon[i], why, sizeof why),
                         0);
        ck_assert_int_eq(keel_client_hello(anon[i], why, sizeof why), 0);
    }
    /* At the limit: the one without a handshake goes. */
    ck_assert_int_eq(
        keel_client_connect_tls(node.addr, 5000, &t, &c, why, sizeof why), 0);
    ck_assert_msg(keel_client_auth(c, CLIENT, &reply, &rlen) == 0,
                  "a TLS client with a token could not get in: %s",
                  reply != NULL ? reply : why);
    free(reply);
    reply = NULL;
    if (tu_closed_within(raw, 5000) != 1) {
        for (i = 0; i < 3; i++) {
            int prc = keel_client_call(anon[i], KEEL_FRAME_CALL, "counter",
                                       "c1", 2, "get", 3, &reply, &rlen);
            fprintf(stderr, "anon[%d]: %s %.*s\n", i, keel_err_name(prc),
                    (int)rlen, reply ? reply : "");
            free(reply);
            reply = NULL;
        }
        tu_keeld_dump_logs(&node, 1);
        ck_abort_msg("the connection without a handshake was not closed");
    }
    close(raw);
    /* Then the ones whose handshake was done, each for a new one. */
    for (k = 0; k < 6; k++) {
        ck_assert_int_eq(keel_client_connect_tls(node.addr, 5000, &t,
                                                 &more[k], why, sizeof why),
                         0);
        ck_assert_int_eq(keel_client_hello(more[k], why, sizeof why), 0);
    }
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "counter", "c1", 2,
                                      "incr", 4, &reply, &rlen),
                     0);
    ck_assert_str_eq(reply, "1");
    free(reply);
    for (i = 0; i < 3; i++)
        keel_client_close(anon[i]);
    for (k = 0; k < 6; k++)
        keel_client_close(more[k]);
    keel_client_close(c);
    unsetenv("KEEL_TLS_CA");
    ck_assert_int_eq(kill(node.pid, 0), 0);
}
END_TEST

/* ---------------------------------------- a token removed on reload */

/* docs/security.md: a connection whose token a reload removed is
 * anonymous from its next request. A subscription it opened before keeps
 * streaming the actor's states to it. */
START_TEST(removed_token_keeps_its_subscription)
{
    keel_client *c = NULL;
    keel_follow_update up;
    uint64_t sub = 0;
    char *reply = NULL, *out;
    size_t rlen;
    int i, rc;

    start(NULL);
    ck_assert_int_eq(keel_client_connect(node.addr, 3000, &c), 0);
    ck_assert_int_eq(keel_client_auth(c, CLIENT, &reply, &rlen), 0);
    free(reply);
    ck_assert_int_eq(
        keel_client_subscribe(c, "counter", "c1", 2, 0, &sub, &up), 0);
    write_tokens(ADMIN " admin\n");
    ck_assert_int_eq(kill(node.pid, SIGHUP), 0);
    for (i = 0; i < 100; i++) {
        char *log = tu_keeld_log(&node);
        int done = log != NULL && strstr(log, "auth tokens: reloaded") != NULL;
        free(log);
        if (done)
            break;
        usleep(50000);
    }
    ck_assert_int_lt(i, 100);
    out = admin_call("counter", "c1", "incr");
    ck_assert_str_eq(out, "1\n");
    free(out);
    rc = keel_client_next_event(c, sub, &up);
    ck_assert_msg(!(rc == 0 && up.kind == KEEL_EVENT_CHANGE),
                  "the subscription of a token removed by the reload got "
                  "the actor's new state (version %llu, '%.*s')",
                  (unsigned long long)up.version, (int)up.state_len,
                  (const char *)up.state);
    keel_client_close(c);
}
END_TEST

/* ------------------------------------------ HTTP: a trickled body */

/* docs/http.md: a connection must send each request's headers within
 * --http-header-timeout, and its body within six times that of them.
 * Without the body's deadline it could trickle a byte a minute (MHD's
 * idle timeout restarts with every byte): an anonymous client would hold
 * its connection for ever through the open /healthz. */
START_TEST(http_body_trickle_outlives_deadline)
{
    const char *more[] = {"--http", "127.0.0.1:0", "--http-header-timeout",
                          "2", NULL};
    static const char req[] = "POST /healthz HTTP/1.1\r\nHost: x\r\n"
                              "Content-Length: 100000\r\n\r\n";
    int port, fd, i, open = 1;

    start(more);
    port = tu_keeld_http_port(&node);
    ck_assert_int_gt(port, 0);
    fd = tu_raw_connect_bare(port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(tu_send_all(fd, req, sizeof req - 1), 0);
    for (i = 0; i < 40 && open; i++) { /* 20 s: past the body's 12 s */
        usleep(500000);
        if (tu_wait_readable(fd, 0)) {
            char b;
            open = read(fd, &b, 1) > 0 ? 1 : 0;
            if (open)
                open = 2; /* answered: not held */
            break;
        }
        if (tu_send_all(fd, "x", 1) != 0)
            open = 0;
    }
    close(fd);
    ck_assert_msg(open != 1,
                  "an HTTP connection trickling its body a byte every "
                  "500 ms is still open after 20 s (--http-header-timeout "
                  "2: 12 s for a body)");
}
END_TEST

/* ------------------------------- an HTTP event stream's withdrawn token */

/* Reads from fd into buf (cap bytes, NUL-ended, *len so far) until it
 * holds needle or the peer closes; at most ms. 1 when found. */
static int read_for(int fd, char *buf, size_t cap, size_t *len,
                    const char *needle, int ms)
{
    struct timespec t0, t;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        ssize_t r;
        long el;
        if (strstr(buf, needle) != NULL)
            return 1;
        clock_gettime(CLOCK_MONOTONIC, &t);
        el = (t.tv_sec - t0.tv_sec) * 1000 +
             (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (*len + 1 >= cap || el >= ms ||
            !tu_wait_readable(fd, (int)(ms - el)))
            return 0;
        r = read(fd, buf + *len, cap - 1 - *len);
        if (r <= 0)
            return 0;
        *len += (size_t)r;
        buf[*len] = '\0';
    }
}

/* docs/security.md, "Reload": a token the file no longer holds must not
 * go on receiving actors' states. A wire subscription under it is closed
 * at the reload; an HTTP event stream opened with it (Authorization:
 * Bearer) ran on until the client closed it. It now ends at the reload
 * with "event: end" and EUNAUTH, and no later state reaches it. */
START_TEST(removed_token_ends_its_event_stream)
{
    const char *more[] = {"--http", "127.0.0.1:0", NULL};
    static char buf[16384];
    char req[512], *out;
    size_t len = 0;
    int port, fd;

    start(more);
    port = tu_keeld_http_port(&node);
    ck_assert_int_gt(port, 0);
    out = admin_call("counter", "c1", "incr");
    free(out);
    fd = tu_raw_connect_bare(port);
    ck_assert_int_ge(fd, 0);
    snprintf(req, sizeof req,
             "GET /v1/actors/counter/c1/events HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer %s\r\nAccept: text/event-stream\r\n"
             "\r\n",
             CLIENT);
    ck_assert_int_eq(tu_send_all(fd, req, strlen(req)), 0);
    ck_assert_msg(read_for(fd, buf, sizeof buf, &len, "id: 1\n", 10000),
                  "no first event: %s", buf);
    write_tokens(ADMIN " admin\n");
    ck_assert_int_eq(kill(node.pid, SIGHUP), 0);
    ck_assert_msg(read_for(fd, buf, sizeof buf, &len, "event: end\n", 10000),
                  "an event stream opened with a token the reload removed "
                  "did not end within 10 s:\n%s",
                  buf);
    ck_assert_ptr_nonnull(strstr(buf, "EUNAUTH"));
    /* Nothing after it: a change made now never reaches it. */
    out = admin_call("counter", "c1", "incr");
    free(out);
    (void)read_for(fd, buf, sizeof buf, &len, "id: 2\n", 1500);
    ck_assert_ptr_null(strstr(buf, "id: 2\n"));
    close(fd);
}
END_TEST

/* ------------------------------------------ TLS as the only credential */

/* docs/security.md, "Secure by default": TLS counts as credentials, and
 * someone who holds none must not change the cluster (drain, forget). A
 * node started with TLS and no token file checks nothing: a TLS client
 * with no certificate reaches drain (a standalone node answers "not a
 * cluster node", which an admin's drain also gets), where CN=client:...
 * would be EDENIED under tokens. */
START_TEST(tls_only_anonymous_reaches_admin)
{
    char ca[512], cert[512], key[512], why[256] = "";
    const char *extra[7];
    const char *q[] = {"drain", "n0"};
    keel_client_tls t;
    keel_client *c = NULL;
    char *reply = NULL;
    size_t rlen = 0;
    int rc;

    ck_assert_int_eq(tu_certs_ca(dir, "ca"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "node", "node:n0"), 0);
    tu_certs_path(ca, sizeof ca, dir, "ca", "pem");
    tu_certs_path(cert, sizeof cert, dir, "node", "pem");
    tu_certs_path(key, sizeof key, dir, "node", "key");
    setenv("KEEL_TLS_CA", ca, 1);
    extra[0] = "--tls-cert";
    extra[1] = cert;
    extra[2] = "--tls-key";
    extra[3] = key;
    extra[4] = "--tls-ca";
    extra[5] = ca;
    extra[6] = NULL;
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
    memset(&t, 0, sizeof t);
    t.ca = ca; /* no client certificate: anonymous */
    ck_assert_int_eq(
        keel_client_connect_tls(node.addr, 5000, &t, &c, why, sizeof why), 0);
    rc = keel_client_info(c, q, 2, &reply, &rlen);
    fprintf(stderr, "tls_only_anonymous_reaches_admin: drain: %d %.*s\n", rc,
            (int)rlen, reply ? reply : "");
    ck_assert_msg(rc == KEEL_EUNAUTH || rc == KEEL_EDENIED,
                  "an anonymous TLS client's drain was not refused by the "
                  "access rules: %s: %.*s",
                  keel_err_name(rc), (int)rlen, reply ? reply : "");
    free(reply);
    keel_client_close(c);
    unsetenv("KEEL_TLS_CA");
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("auth_gaps");
    TCase *tc = tcase_create("standalone");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, standalone_peer_claim_is_no_credential);
    tcase_add_test(tc, standalone_peer_claim_never_idle);
    tcase_add_test(tc, nonreading_client_never_closed);
    tcase_add_test(tc, small_frames_stop_at_the_unread_bound);
    tcase_add_test(tc, removed_token_keeps_its_subscription);
    tcase_add_test(tc, anonymous_connections_give_their_place);
    tcase_add_test(tc, anonymous_tls_connections_give_their_place);
    tcase_add_test(tc, http_body_trickle_outlives_deadline);
    tcase_add_test(tc, removed_token_ends_its_event_stream);
    tcase_add_test(tc, tls_only_anonymous_reaches_admin);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (!tu_certs_available()) {
        fprintf(stderr, "test_auth_gaps: the openssl command is not "
                        "installed\n");
        return 1;
    }
    return tu_run_suite(suite());
}
