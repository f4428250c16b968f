/* Following an actor on a real keeld (docs/protocol.md, "Following an
 * actor"): every committed version in order, the current state for a
 * subscriber that comes back, no event for a failed turn or after
 * UNSUBSCRIBE, a slow subscriber ended, an END when the node stops, the
 * figures in keel stat, `keel follow`, and the same as Server-Sent Events
 * on the HTTP port (a raw socket reading the stream; a client that closes
 * its stream leaves no warning in the log). Event payloads
 * (keel_turn_event, with follow_plugin_feed.so): in order with their
 * versions to subscribers that take them, states to those that do not,
 * none from a failed turn, a payload too big refused to the handler, the
 * state (no replay) after a reconnect; on the wire, over SSE and in
 * `keel follow`.
 *
 * "No event" is tested without waiting on a clock: a change's event is
 * queued on the subscriber's connection before the reply of its turn
 * leaves, so once that reply is in, a PING sent on the subscriber's
 * connection is answered behind any event there is. */
#include <check.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keel.h"
#include "proc.h"
#include "rawconn.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

static char *dir, *data, *feed_plugin;
static tu_keeld node;

static void setup(void)
{
    dir = tu_tmpdir("follow");
    if (asprintf(&data, "%s/data", dir) < 0)
        abort();
    feed_plugin = tu_bin("follow_plugin_feed.so");
    memset(&node, 0, sizeof node);
}

static void teardown(void)
{
    tu_keeld_free(&node);
    tu_rmrf(dir);
    free(dir);
    free(data);
    free(feed_plugin);
}

static void start_node(void)
{
    static const char *const extra[] = {"--durability", "none", NULL};

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
}

static keel_client *connect_node(void)
{
    keel_client *c = NULL;

    ck_assert_int_eq(keel_client_connect(node.addr, 5000, &c), 0);
    return c;
}

static double mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void incr(keel_client *c, const char *id)
{
    char *reply = NULL;
    size_t rl = 0;

    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "counter", id,
                                      strlen(id), "incr", 4, &reply, &rl),
                     0);
    free(reply);
}

/* Sends a PING on c and reads up to its PONG; returns how many EVENT
 * frames came before it. */
static int events_before_pong(keel_client *c)
{
    keel_frame f;
    int events = 0, i;

    ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_PING, 999999, NULL,
                                       NULL, 0, "p", 1),
                     0);
    ck_assert_int_eq(keel_client_flush(c), 0);
    for (i = 0; i < 1000; i++) {
        ck_assert_int_eq(keel_client_recv(c, &f), 0);
        if (f.kind == KEEL_FRAME_PONG && f.request_id == 999999)
            return events;
        if (f.kind == KEEL_FRAME_EVENT)
            events++;
    }
    ck_abort_msg("no PONG");
    return -1;
}

/* A follower sees every committed version of a counter incremented one
 * call after another: versions 1..N, none missing, none twice, each with
 * the counter's value; the first answer shows an actor never written as
 * version 0 without state. */
START_TEST(every_version_in_order)
{
    enum { N = 60 };
    keel_client *f, *w;
    keel_follow_update u;
    uint64_t sub = 0;
    int i;

    start_node();
    f = connect_node();
    w = connect_node();
    ck_assert_int_eq(keel_client_subscribe(f, "counter", "seq", 3, 0, &sub,
                                           &u),
                     0);
    ck_assert_int_eq(u.kind, KEEL_EVENT_CHANGE);
    ck_assert_uint_eq(u.version, 0);
    ck_assert_int_eq(u.has_state, 0);
    ck_assert_int_eq(tu_keel_stat(node.addr, "subscribers"), 1);
    for (i = 1; i <= N; i++)
        incr(w, "seq");
    for (i = 1; i <= N; i++) {
        ck_assert_int_eq(keel_client_next_event(f, sub, &u), 0);
        ck_assert_int_eq(u.kind, KEEL_EVENT_CHANGE);
        ck_assert_uint_eq(u.version, (uint64_t)i);
        ck_assert_uint_eq(u.state_len, 8);
        ck_assert_uint_eq(be64(u.state), (uint64_t)i);
    }
    ck_assert_int_eq(events_before_pong(f), 0);
    ck_assert_int_eq(tu_keel_stat(node.addr, "events_sent"), N);
    /* Other actors' changes are not sent to it. */
    incr(w, "other");
    ck_assert_int_eq(events_before_pong(f), 0);
    keel_client_close(f);
    keel_client_close(w);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

/* A subscriber that comes back with the last version it saw gets the
 * current state at once when the actor moved on meanwhile (no replay of
 * the versions between), nothing when it did not; changes follow. */
START_TEST(reconnect_gets_current_state)
{
    keel_client *f, *w;
    keel_follow_update u;
    uint64_t sub = 0;
    int i;

    start_node();
    w = connect_node();
    for (i = 0; i < 10; i++)
        incr(w, "r");
    f = connect_node();
    ck_assert_int_eq(keel_client_subscribe(f, "counter", "r", 1, 3, &sub,
                                           &u),
                     0);
    ck_assert_int_eq(u.kind, KEEL_EVENT_CHANGE);
    ck_assert_uint_eq(u.version, 10);
    ck_assert_uint_eq(be64(u.state), 10);
    ck_assert_int_eq(events_before_pong(f), 0); /* no replay of 4..9 */
    keel_client_close(f);

    f = connect_node();
    ck_assert_int_eq(keel_client_subscribe(f, "counter", "r", 1, 10, &sub,
                                           &u),
                     0);
    ck_assert_int_eq(u.kind, 0); /* unchanged since 10 */
    incr(w, "r");
    ck_assert_int_eq(keel_client_next_event(f, sub, &u), 0);
    ck_assert_int_eq(u.kind, KEEL_EVENT_CHANGE);
    ck_assert_uint_eq(u.version, 11);
    ck_assert_uint_eq(be64(u.state), 11);
    keel_client_close(f);
    keel_client_close(w);
}
END_TEST

/* A turn that fails sends nothing; the next good one is the next
 * version. UNSUBSCRIBE stops the events and the figure drops. */
START_TEST(failed_turn_and_unsubscribe)
{
    keel_client *f, *w;
    keel_follow_update u;
    uint64_t sub = 0;
    char *reply = NULL;
    size_t rl = 0;

    start_node();
    w = connect_node();
    incr(w, "x");
    f = connect_node();
    ck_assert_int_eq(keel_client_subscribe(f, "counter", "x", 1, 0, &sub,
                                           &u),
                     0);
    ck_assert_uint_eq(u.version, 1);
    ck_assert_int_eq(keel_client_call(w, KEEL_FRAME_CALL, "counter", "x", 1,
                                      "bogus", 5, &reply, &rl),
                     KEEL_EBADMSG);
    free(reply);
    ck_assert_int_eq(events_before_pong(f), 0);
    incr(w, "x");
    ck_assert_int_eq(keel_client_next_event(f, sub, &u), 0);
    ck_assert_uint_eq(u.version, 2);
    ck_assert_uint_eq(be64(u.state), 2);

    ck_assert_int_eq(keel_client_unsubscribe(f, sub), 0);
    ck_assert_int_eq(keel_client_unsubscribe(f, sub), KEEL_ENOTFOUND);
    ck_assert_int_eq(tu_keel_stat(node.addr, "subscribers"), 0);
    incr(w, "x");
    ck_assert_int_eq(events_before_pong(f), 0);

    /* Refusals: a malformed body (no 8-byte version) and the connection
     * goes on; an unknown type; a request id in use; more than a
     * connection may hold. */
    {
        uint8_t raw[KEEL_FRAME_HEADER + 16];
        size_t bl = keel_call_body_encode(raw + KEEL_FRAME_HEADER, "counter",
                                          7, "x", 1, NULL, 0);
        keel_frame fr;
        keel_frame_header(raw, KEEL_FRAME_SUBSCRIBE, 77, bl);
        ck_assert_int_eq(keel_client_queue_raw(f, raw,
                                               KEEL_FRAME_HEADER + bl),
                         0);
        ck_assert_int_eq(keel_client_flush(f), 0);
        ck_assert_int_eq(keel_client_recv(f, &fr), 0);
        ck_assert_int_eq(fr.kind, KEEL_FRAME_ERROR);
        ck_assert_uint_eq(fr.request_id, 77);
        ck_assert_int_eq(keel_error_body_parse(fr.body, fr.body_len, NULL,
                                               NULL),
                         KEEL_EMALFORMED);
        ck_assert_int_eq(events_before_pong(f), 0);
    }
    ck_assert_int_eq(keel_client_subscribe(f, "nosuch", "x", 1, 0, &sub,
                                           &u),
                     KEEL_ENOTYPE);
    {
        uint8_t body[64];
        keel_frame fr;
        int i, refused = 0;
        size_t n = keel_subscribe_encode(body, "counter", 7, "x", 1, 0);
        for (i = 0; i < 1025; i++) {
            uint8_t hdr[KEEL_FRAME_HEADER];
            keel_frame_header(hdr, KEEL_FRAME_SUBSCRIBE,
                              (uint64_t)(5000 + (i == 1024 ? 0 : i)), n);
            ck_assert_int_eq(keel_client_queue_raw(f, hdr, sizeof hdr), 0);
            ck_assert_int_eq(keel_client_queue_raw(f, body, n), 0);
        }
        ck_assert_int_eq(keel_client_flush(f), 0);
        for (i = 0; i < 1025; i++) {
            ck_assert_int_eq(keel_client_recv(f, &fr), 0);
            if (fr.kind == KEEL_FRAME_ERROR) {
                refused++;
                ck_assert_uint_eq(fr.request_id, 5000);
                ck_assert_int_eq(keel_error_body_parse(fr.body, fr.body_len,
                                                       NULL, NULL),
                                 KEEL_EEXIST);
            }
        }
        ck_assert_int_eq(refused, 1);
        ck_assert_int_eq(tu_keel_stat(node.addr, "subscribers"), 1024);
        ck_assert_int_eq(keel_client_subscribe(f, "counter", "y", 1, 0,
                                               &sub, &u),
                         KEEL_ELIMIT);
    }
    keel_client_close(f);
    keel_client_close(w);
}
END_TEST

/* A subscriber that does not read is ended (EOVERLOAD) once its
 * connection holds more than the node keeps for it, and the node does
 * not grow without bound meanwhile. */
START_TEST(slow_subscriber_ended)
{
    enum { VAL = 200000, WRITES = 120 };
    keel_client *f, *w;
    keel_follow_update u;
    keel_frame fr;
    uint64_t sub = 0;
    char *msg = malloc(6 + VAL), *reply = NULL;
    size_t rl = 0;
    int i, ended = 0;

    ck_assert_ptr_nonnull(msg);
    memcpy(msg, "write ", 6);
    start_node();
    f = connect_node();
    w = connect_node();
    ck_assert_int_eq(keel_client_subscribe(f, "register", "big", 3, 0, &sub,
                                           &u),
                     0);
    for (i = 0; i < WRITES; i++) {
        memset(msg + 6, 'a' + i % 26, VAL);
        ck_assert_int_eq(keel_client_call(w, KEEL_FRAME_CALL, "register",
                                          "big", 3, msg, 6 + VAL, &reply,
                                          &rl),
                         0);
        free(reply);
        reply = NULL;
    }
    /* WRITES * VAL bytes is far above the limit plus what sockets hold:
     * the END is among the frames, and after it nothing for sub. */
    keel_client_set_max_frame(f, 2u << 20);
    for (i = 0; i < WRITES + 1 && !ended; i++) {
        ck_assert_int_eq(keel_client_recv(f, &fr), 0);
        ck_assert_uint_eq(fr.request_id, sub);
        ck_assert_int_eq(fr.kind, KEEL_FRAME_EVENT);
        {
            keel_event ev;
            ck_assert_int_eq(keel_event_parse(fr.body, fr.body_len, &ev), 0);
            if (ev.kind == KEEL_EVENT_END) {
                ck_assert_int_eq(ev.code, KEEL_EOVERLOAD);
                ended = 1;
            }
        }
    }
    ck_assert_msg(ended, "no END for a subscriber that did not read");
    ck_assert_int_lt(i, WRITES);
    ck_assert_int_eq(events_before_pong(f), 0);
    ck_assert_int_eq(tu_keel_stat(node.addr, "subscribers"), 0);
    free(msg);
    keel_client_close(f);
    keel_client_close(w);
}
END_TEST

/* A stopping node ends its subscriptions with ESTOPPING. */
START_TEST(stop_ends_subscriptions)
{
    keel_client *f;
    keel_follow_update u;
    uint64_t sub = 0;

    start_node();
    f = connect_node();
    ck_assert_int_eq(keel_client_subscribe(f, "counter", "s", 1, 0, &sub,
                                           &u),
                     0);
    /* The END was written before the node closed the connection. */
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    ck_assert_int_eq(keel_client_next_event(f, sub, &u), 0);
    ck_assert_int_eq(u.kind, KEEL_EVENT_END);
    ck_assert_int_eq(u.code, KEEL_ESTOPPING);
    keel_client_close(f);
}
END_TEST


/* Reads from fd into buf (cap bytes, NUL-ended, *len so far) until buf
 * holds needle; at most ms in all. Returns the needle's offset, or -1. */
static long read_until(int fd, char *buf, size_t cap, size_t *len,
                       const char *needle, int ms)
{
    double end = mono_ms() + ms;

    for (;;) {
        char *hit = strstr(buf, needle);
        ssize_t r;
        if (hit != NULL)
            return hit - buf;
        if (*len + 1 >= cap || mono_ms() >= end ||
            !tu_wait_readable(fd, (int)(end - mono_ms()) + 1))
            return -1;
        r = read(fd, buf + *len, cap - 1 - *len);
        if (r <= 0)
            return -1;
        *len += (size_t)r;
        buf[*len] = '\0';
    }
}

static int sse_open(int port, const char *path, const char *last_id)
{
    char req[512];
    int fd = tu_raw_connect_bare(port);

    ck_assert_int_ge(fd, 0);
    snprintf(req, sizeof req,
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%s"
             "Accept: text/event-stream\r\n\r\n",
             path, last_id != NULL ? "Last-Event-ID: " : "",
             last_id != NULL ? last_id : "", last_id != NULL ? "\r\n" : "");
    ck_assert_int_eq(tu_send_all(fd, req, strlen(req)), 0);
    return fd;
}

/* An event stream whose client went away ends, and its connection with
 * it, without waiting for an event (the actor may stay quiet for ever):
 * else every stream a client left would keep its place, and
 * --http-max-per-ip of them lock the address out of the HTTP face,
 * /healthz included. */
START_TEST(sse_client_gone)
{
    static const char *const extra[] = {"--durability", "none", "--http",
                                        "127.0.0.1:0", "--http-max-per-ip",
                                        "3", NULL};
    static char a[16384];
    int port, i, ok = 0;
    double end;

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
    port = tu_keeld_http_port(&node);
    ck_assert_int_gt(port, 0);
    for (i = 0; i < 5; i++) {
        size_t al = 0;
        int fa = sse_open(port, "/v1/actors/counter/quiet/events", NULL);
        a[0] = '\0';
        ck_assert_int_ge(read_until(fa, a, sizeof a, &al, "id: 0\n", 10000),
                         0);
        close(fa);
        /* each place is free again before the next stream needs one */
        end = mono_ms() + 10000;
        while (tu_keel_stat(node.addr, "subscribers") != 0 &&
               mono_ms() < end)
            usleep(20000);
        ck_assert_int_eq(tu_keel_stat(node.addr, "subscribers"), 0);
    }
    end = mono_ms() + 10000;
    while (!(ok = tu_http_healthz(NULL, port)) && mono_ms() < end)
        usleep(50000);
    ck_assert_msg(ok, "/healthz refused after 5 abandoned event streams");
}
END_TEST

/* GET /v1/actors/{type}/{id}/events: the current state as the first
 * event, then every change with its version as the event id, in order;
 * Last-Event-ID resumes with the current state (no replay); an unknown
 * type is a 404; a stopping node ends the stream with "event: end". */
START_TEST(server_sent_events)
{
    static const char *const extra[] = {"--durability", "none", "--http",
                                        "127.0.0.1:0", NULL};
    static char a[16384], b[16384];
    size_t al = 0, bl = 0;
    long p1, p2, p3;
    keel_client *w;
    int port, fa, fb;

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
    port = tu_keeld_http_port(&node);
    ck_assert_int_gt(port, 0);
    w = connect_node();
    incr(w, "sse");

    fa = sse_open(port, "/v1/actors/counter/sse/events", NULL);
    ck_assert_int_ge(read_until(fa, a, sizeof a, &al,
                                "Content-Type: text/event-stream", 10000),
                     0);
    ck_assert_int_ge(read_until(fa, a, sizeof a, &al,
                                "id: 1\ndata: {\"version\": 1, "
                                "\"state_base64\": \"AAAAAAAAAAE=\"}\n\n",
                                10000),
                     0);
    ck_assert_int_eq(tu_keel_stat(node.addr, "subscribers"), 1);
    {
        /* The figures in /metrics too. */
        static char m[65536];
        size_t ml = 0;
        int fm = sse_open(port, "/metrics", NULL);
        ck_assert_int_ge(read_until(fm, m, sizeof m, &ml,
                                    "\nkeel_subscribers 1\n", 10000),
                         0);
        close(fm);
    }
    incr(w, "sse");
    incr(w, "sse");
    incr(w, "sse");
    p3 = read_until(fa, a, sizeof a, &al,
                    "id: 4\ndata: {\"version\": 4, \"state_base64\": "
                    "\"AAAAAAAAAAQ=\"}\n\n",
                    10000);
    ck_assert_int_ge(p3, 0);
    p1 = strstr(a, "id: 2\n") - a;
    p2 = strstr(a, "id: 3\n") - a;
    ck_assert(strstr(a, "id: 2\n") != NULL && strstr(a, "id: 3\n") != NULL);
    ck_assert(p1 < p2 && p2 < p3);

    /* A browser coming back with Last-Event-ID 2 gets version 4 at once,
     * not 3. */
    fb = sse_open(port, "/v1/actors/counter/sse/events", "2");
    ck_assert_int_ge(read_until(fb, b, sizeof b, &bl, "id: 4\n", 10000), 0);
    ck_assert_ptr_null(strstr(b, "id: 3\n"));
    incr(w, "sse");
    ck_assert_int_ge(read_until(fb, b, sizeof b, &bl, "id: 5\n", 10000), 0);
    ck_assert_int_ge(read_until(fa, a, sizeof a, &al, "id: 5\n", 10000), 0);
    close(fb);
    /* Versions 2-5 to the first stream, 5 to the second: first answers
     * are not counted as change events. */
    ck_assert_int_eq(tu_keel_stat(node.addr, "events_sent"), 5);

    /* An unknown type. */
    {
        static char c[4096];
        size_t cl = 0;
        int fc = sse_open(port, "/v1/actors/nosuch/x/events", NULL);
        ck_assert_int_ge(read_until(fc, c, sizeof c, &cl, "404", 10000), 0);
        ck_assert_int_ge(read_until(fc, c, sizeof c, &cl, "ENOTYPE", 10000),
                         0);
        close(fc);
    }
    /* A client that stops following is routine: once the node has ended
     * the stream closed above (at an event it cannot send),
     * its log has no warning about it (MHD fails to send the stream's
     * last chunk to the closed socket). */
    {
        int i;
        char *log;
        /* A write to a socket the client closed may still succeed: the
         * node learns of the close at a later event. */
        for (i = 0; i < 40 && tu_keel_stat(node.addr, "subscribers") != 1;
             i++) {
            incr(w, "sse");
            usleep(50000);
        }
        ck_assert_int_eq(tu_keel_stat(node.addr, "subscribers"), 1);
        usleep(200000);
        log = tu_keeld_log(&node);
        ck_assert_ptr_nonnull(log);
        ck_assert_msg(strstr(log, " warn http:") == NULL, "%s", log);
        free(log);
    }
    keel_client_close(w);

    /* The node stops: the stream ends with the reason. */
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    ck_assert_int_ge(read_until(fa, a, sizeof a, &al,
                                "event: end\ndata: {\"error\": \"ESTOPPING\"",
                                10000),
                     0);
    close(fa);
}
END_TEST

/* Reads one line from fd into buf within ms milliseconds. */
static int read_line(int fd, char *buf, size_t cap, int ms)
{
    size_t n = 0;

    while (n + 1 < cap) {
        struct pollfd p = {fd, POLLIN, 0};
        char ch;
        if (poll(&p, 1, ms) <= 0 || read(fd, &ch, 1) != 1)
            return -1;
        if (ch == '\n')
            break;
        buf[n++] = ch;
    }
    buf[n] = '\0';
    return 0;
}

/* keel follow prints the state now and each change, in order, and exits
 * 0 on SIGINT; after the node restarts it subscribes again by itself
 * and goes on from the current state. */

/* Where spawn_follow sends the follower's standard error. */
static char *follow_err_path(void)
{
    static char path[512];

    snprintf(path, sizeof path, "%s/follow.err", dir);
    return path;
}

/* Starts `keel follow TYPE ID` against the node with its standard output
 * on a pipe (fds[0] is the end to read) and its standard error appended to
 * follow_err_path(). Returns its pid. */
static pid_t spawn_follow(const char *bin, const char *type, const char *id,
                          int fds[2])
{
    pid_t pid;

    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int efd = open(follow_err_path(),
                       O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (efd >= 0)
            dup2(efd, 2);
        dup2(fds[1], 1);
        close(fds[0]);
        execl(bin, bin, "-a", node.addr, "follow", type, id, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    return pid;
}

/* Interrupts a spawn_follow() follower, which exits 0. */
static void stop_follow(pid_t pid, int fds[2])
{
    int st;

    kill(pid, SIGINT);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(fds[0]);
}

START_TEST(cli_follow)
{
    char *bin = tu_bin("keel");
    char line[256];
    keel_client *w;
    int fds[2], i;
    pid_t pid;

    start_node();
    w = connect_node();
    incr(w, "cli");
    unlink(follow_err_path());
    pid = spawn_follow(bin, "counter", "cli", fds);
    ck_assert_int_eq(read_line(fds[0], line, sizeof line, 10000), 0);
    ck_assert_str_eq(line, "1 0x0000000000000001");
    for (i = 2; i <= 4; i++) {
        char want[64];
        incr(w, "cli");
        ck_assert_int_eq(read_line(fds[0], line, sizeof line, 10000), 0);
        snprintf(want, sizeof want, "%d 0x%016x", i, i);
        ck_assert_str_eq(line, want);
    }
    keel_client_close(w);
    /* The node goes and comes back on the same port. */
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    {
        static const char *const extra[] = {"--durability", "none", NULL};
        int port = node.port;
        tu_keeld_free(&node);
        memset(&node, 0, sizeof node);
        ck_assert_int_eq(tu_keeld_start(&node, data, port, extra), 0);
    }
    w = connect_node();
    incr(w, "cli");
    /* It may resubscribe before or after this increment: either way the
     * next line is version 5, once. */
    ck_assert_int_eq(read_line(fds[0], line, sizeof line, 15000), 0);
    ck_assert_str_eq(line, "5 0x0000000000000005");
    keel_client_close(w);
    stop_follow(pid, fds);
    /* The outage was said on stderr, once, and its end (before, nothing:
     * a follower of a node gone waited in silence). */
    {
        char *err = tu_read_file(follow_err_path());
        const char *down =
            err != NULL ? strstr(err, "subscribing again until a node "
                                      "answers (Ctrl-C to stop)\n")
                        : NULL;
        ck_assert_msg(down != NULL && strncmp(err, "keel: follow: ", 14) == 0 &&
                          strstr(down + 20, "until a node answers") == NULL,
                      "stderr: '%s'", err != NULL ? err : "(null)");
        ck_assert_msg(strstr(err, "keel: follow: subscribed again\n") !=
                          NULL,
                      "stderr: '%s'", err);
        free(err);
    }
    free(bin);
}
END_TEST

/* An actor never written prints "-" for its state; one whose state is the
 * one byte "-" must not look the same (before, both printed "-"). */
START_TEST(cli_follow_no_state_is_not_a_dash)
{
    static const char *const writes[2] = {"write -", "write --"};
    char *bin = tu_bin("keel");
    char line[256];
    keel_client *w;
    int fds[2], i;
    pid_t pid;

    start_node();
    w = connect_node();
    pid = spawn_follow(bin, "register", "dash", fds);
    ck_assert_int_eq(read_line(fds[0], line, sizeof line, 10000), 0);
    ck_assert_str_eq(line, "0 -");
    for (i = 0; i < 2; i++) {
        char *reply = NULL;
        size_t rl = 0;
        ck_assert_int_eq(keel_client_call(w, KEEL_FRAME_CALL, "register",
                                          "dash", 4, writes[i],
                                          strlen(writes[i]), &reply, &rl),
                         0);
        free(reply);
        ck_assert_int_eq(read_line(fds[0], line, sizeof line, 10000), 0);
        ck_assert_str_eq(line, i == 0 ? "1 0x2d" : "2 --");
    }
    keel_client_close(w);
    stop_follow(pid, fds);
    free(bin);
}
END_TEST

/* ------------------------------------------------------ event payloads */

/* The node's frame limit in the payload tests: an event frame holds at
 * most FEED_FRAME - 16 - 9 bytes of payload. */
#define FEED_FRAME 4096
#define FEED_MAX_PAYLOAD (FEED_FRAME - KEEL_FRAME_HEADER - KEEL_EVENT_HDR)

/* A node with the feed type; with http, an HTTP port too. */
static void start_feed_node(int http)
{
    const char *extra[] = {"--durability", "none", "--max-frame", "4096",
                           "--load", feed_plugin, NULL, NULL, NULL};

    if (http) {
        extra[6] = "--http";
        extra[7] = "127.0.0.1:0";
    }
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, extra), 0);
}

/* Sends msg to feed/id; returns the call's status, the reply into
 * out (cap bytes, NUL-ended) when out is not NULL. */
static int feed(keel_client *c, const char *id, const char *msg, char *out,
                size_t cap)
{
    char *reply = NULL;
    size_t rl = 0;
    int rc = keel_client_call(c, KEEL_FRAME_CALL, "feed", id, strlen(id),
                              msg, strlen(msg), &reply, &rl);

    if (out != NULL) {
        snprintf(out, cap, "%.*s", (int)rl, reply != NULL ? reply : "");
    }
    free(reply);
    return rc;
}

/* The next event of sub is kind at version with data (a payload or a
 * state, as kind says). */
static void expect_event(keel_client *c, uint64_t sub, int kind,
                         uint64_t version, const void *want, size_t len)
{
    keel_follow_update u;

    ck_assert_int_eq(keel_client_next_event(c, sub, &u), 0);
    ck_assert_int_eq(u.kind, kind);
    ck_assert_uint_eq(u.version, version);
    if (kind == KEEL_FOLLOW_PAYLOAD) {
        ck_assert_ptr_null(u.state);
        ck_assert_uint_eq(u.payload_len, len);
        ck_assert(len == 0 || memcmp(u.payload, want, len) == 0);
    } else {
        ck_assert_ptr_null(u.payload);
        ck_assert_uint_eq(u.state_len, len);
        ck_assert(len == 0 || memcmp(u.state, want, len) == 0);
    }
}

#define EXPECT(c, sub, kind, v, str) \
    expect_event(c, sub, kind, v, str, strlen(str))

/* A subscriber that takes payloads gets each committed turn's payload,
 * in order, with the actor's version after the turn (the same version
 * again for a turn that left the state alone), and the state for a turn
 * that chose none; the last payload of a turn goes; a failed turn sends
 * nothing; a payload that cannot fit an event frame is refused to the
 * handler (KEEL_ETOOBIG), leaving the turn's earlier one, and one that
 * just fits goes. A subscriber that does not take payloads (as clients
 * before them) sees only the states, as before. A subscriber that comes
 * back gets the current state, never the payloads it missed. */
START_TEST(payload_events)
{
    keel_client *p, *s, *w;
    keel_follow_update u;
    uint64_t psub = 0, ssub = 0;
    char reply[64], msg[64], want[64], *big;

    start_feed_node(0);
    p = connect_node();
    s = connect_node();
    w = connect_node();
    ck_assert_int_eq(keel_client_subscribe_flags(p, "feed", "a", 1, 0,
                                                 KEEL_SUBSCRIBE_PAYLOADS,
                                                 &psub, &u),
                     0);
    ck_assert_int_eq(u.kind, KEEL_EVENT_CHANGE);
    ck_assert_uint_eq(u.version, 0);
    ck_assert_int_eq(keel_client_subscribe(s, "feed", "a", 1, 0, &ssub, &u),
                     0);
    ck_assert_uint_eq(u.version, 0);

    ck_assert_int_eq(feed(w, "a", "add x1", NULL, 0), 0);    /* v1 */
    ck_assert_int_eq(feed(w, "a", "emit e1", NULL, 0), 0);   /* v1 */
    ck_assert_int_eq(feed(w, "a", "state s2", NULL, 0), 0);  /* v2 */
    ck_assert_int_eq(feed(w, "a", "twice A B", NULL, 0), 0); /* v2 */
    ck_assert_int_eq(feed(w, "a", "fail f", NULL, 0), KEEL_EBADMSG);
    ck_assert_int_eq(feed(w, "a", "add x3", NULL, 0), 0);    /* v3 */
    snprintf(msg, sizeof msg, "big %d", FEED_MAX_PAYLOAD + 1);
    ck_assert_int_eq(feed(w, "a", msg, reply, sizeof reply), 0);
    snprintf(want, sizeof want, "%d", KEEL_ETOOBIG);
    ck_assert_str_eq(reply, want);
    snprintf(msg, sizeof msg, "keep %d", FEED_MAX_PAYLOAD + 1);
    ck_assert_int_eq(feed(w, "a", msg, reply, sizeof reply), 0);
    ck_assert_str_eq(reply, want);
    snprintf(msg, sizeof msg, "big %d", FEED_MAX_PAYLOAD);
    ck_assert_int_eq(feed(w, "a", msg, reply, sizeof reply), 0);
    ck_assert_str_eq(reply, "0");

    EXPECT(p, psub, KEEL_FOLLOW_PAYLOAD, 1, "added x1");
    EXPECT(p, psub, KEEL_FOLLOW_PAYLOAD, 1, "e1");
    EXPECT(p, psub, KEEL_EVENT_CHANGE, 2, "s2");
    EXPECT(p, psub, KEEL_FOLLOW_PAYLOAD, 2, "B");
    EXPECT(p, psub, KEEL_FOLLOW_PAYLOAD, 3, "added x3");
    EXPECT(p, psub, KEEL_FOLLOW_PAYLOAD, 3, "kept");
    big = malloc(FEED_MAX_PAYLOAD);
    ck_assert_ptr_nonnull(big);
    memset(big, 'x', FEED_MAX_PAYLOAD);
    expect_event(p, psub, KEEL_FOLLOW_PAYLOAD, 3, big, FEED_MAX_PAYLOAD);
    free(big);
    ck_assert_int_eq(events_before_pong(p), 0);

    EXPECT(s, ssub, KEEL_EVENT_CHANGE, 1, "x1");
    EXPECT(s, ssub, KEEL_EVENT_CHANGE, 2, "s2");
    EXPECT(s, ssub, KEEL_EVENT_CHANGE, 3, "x3");
    ck_assert_int_eq(events_before_pong(s), 0);
    ck_assert_int_eq(tu_keel_stat(node.addr, "events_sent"), 10);
    keel_client_close(p);
    keel_client_close(s);

    /* Back with the last version seen: nothing to show, then the next
     * payload at that same version. Back with an older one: the current
     * state, not the payloads in between. */
    p = connect_node();
    ck_assert_int_eq(keel_client_subscribe_flags(p, "feed", "a", 1, 3,
                                                 KEEL_SUBSCRIBE_PAYLOADS,
                                                 &psub, &u),
                     0);
    ck_assert_int_eq(u.kind, 0);
    ck_assert_int_eq(feed(w, "a", "emit e4", NULL, 0), 0);
    EXPECT(p, psub, KEEL_FOLLOW_PAYLOAD, 3, "e4");
    keel_client_close(p);
    p = connect_node();
    ck_assert_int_eq(keel_client_subscribe_flags(p, "feed", "a", 1, 1,
                                                 KEEL_SUBSCRIBE_PAYLOADS,
                                                 &psub, &u),
                     0);
    ck_assert_int_eq(u.kind, KEEL_EVENT_CHANGE);
    ck_assert_uint_eq(u.version, 3);
    ck_assert_uint_eq(u.state_len, 2);
    ck_assert(memcmp(u.state, "x3", 2) == 0);
    ck_assert_int_eq(events_before_pong(p), 0);

    /* On the wire: the payload flag is bit 0 of an EVENT; a SUBSCRIBE
     * with another flag bit is refused, the connection going on. */
    {
        uint8_t raw[KEEL_FRAME_HEADER + 64];
        size_t bl = keel_subscribe_encode(raw + KEEL_FRAME_HEADER, "feed", 4,
                                          "a", 1, 3);
        keel_frame fr;
        keel_event ev;

        keel_frame_header(raw, KEEL_FRAME_SUBSCRIBE, 88, bl);
        raw[5] = 0x02;
        ck_assert_int_eq(keel_client_queue_raw(p, raw, KEEL_FRAME_HEADER + bl),
                         0);
        ck_assert_int_eq(keel_client_flush(p), 0);
        ck_assert_int_eq(keel_client_recv(p, &fr), 0);
        ck_assert_int_eq(fr.kind, KEEL_FRAME_ERROR);
        ck_assert_uint_eq(fr.request_id, 88);
        ck_assert_int_eq(keel_error_body_parse(fr.body, fr.body_len, NULL,
                                               NULL),
                         KEEL_EMALFORMED);
        ck_assert_int_eq(feed(w, "a", "emit e5", NULL, 0), 0);
        ck_assert_int_eq(keel_client_recv(p, &fr), 0);
        ck_assert_int_eq(fr.kind, KEEL_FRAME_EVENT);
        ck_assert_uint_eq(fr.request_id, psub);
        ck_assert_uint_eq(fr.flags, KEEL_FLAG_PAYLOAD);
        ck_assert_int_eq(keel_event_parse(fr.body, fr.body_len, &ev), 0);
        ck_assert_int_eq(ev.kind, KEEL_EVENT_CHANGE);
        ck_assert_uint_eq(ev.version, 3);
        ck_assert_uint_eq(ev.data_len, 2);
        ck_assert(memcmp(ev.data, "e5", 2) == 0);
    }
    keel_client_close(p);
    keel_client_close(w);
}
END_TEST

/* An actor that holds entries only is shown at version 1 by a state
 * read, also after a restart (where it loads at 1): its payloads say 1,
 * not a version older than the one its followers were shown. */
START_TEST(payload_version_entries_only)
{
    keel_client *p, *w;
    keel_follow_update u;
    uint64_t psub = 0;

    start_feed_node(0);
    w = connect_node();
    ck_assert_int_eq(feed(w, "e", "put k", NULL, 0), 0);
    keel_client_close(w);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    tu_keeld_free(&node);
    memset(&node, 0, sizeof node);
    start_feed_node(0);
    w = connect_node();
    p = connect_node();
    ck_assert_int_eq(keel_client_subscribe_flags(p, "feed", "e", 1, 0,
                                                 KEEL_SUBSCRIBE_PAYLOADS,
                                                 &psub, &u),
                     0);
    ck_assert_int_eq(u.kind, KEEL_EVENT_CHANGE);
    ck_assert_uint_eq(u.version, 1);
    ck_assert_int_eq(u.has_state, 0);
    ck_assert_int_eq(feed(w, "e", "emit e1", NULL, 0), 0);
    EXPECT(p, psub, KEEL_FOLLOW_PAYLOAD, 1, "e1");
    keel_client_close(p);
    keel_client_close(w);
}
END_TEST

/* Server-Sent Events with ?payloads=1: payloads as "event: payload"
 * with the version as id, states as before; a stream without it sees
 * the states only; another value is a 400. */
START_TEST(server_sent_payloads)
{
    static char a[16384], b[16384], c[4096];
    size_t al = 0, bl = 0, cl = 0;
    keel_client *w;
    int port, fa, fb, fc;

    start_feed_node(1);
    port = tu_keeld_http_port(&node);
    ck_assert_int_gt(port, 0);
    w = connect_node();
    fa = sse_open(port, "/v1/actors/feed/s/events?payloads=1", NULL);
    fb = sse_open(port, "/v1/actors/feed/s/events", NULL);
    ck_assert_int_ge(read_until(fa, a, sizeof a, &al,
                                "id: 0\ndata: {\"version\": 0, "
                                "\"state_base64\": \"\"}\n\n",
                                10000),
                     0);
    ck_assert_int_ge(read_until(fb, b, sizeof b, &bl, "id: 0\n", 10000), 0);
    ck_assert_int_eq(feed(w, "s", "add x1", NULL, 0), 0);
    ck_assert_int_eq(feed(w, "s", "emit e1", NULL, 0), 0);
    ck_assert_int_eq(feed(w, "s", "fail f", NULL, 0), KEEL_EBADMSG);
    ck_assert_int_eq(feed(w, "s", "state s2", NULL, 0), 0);
    /* The events come in order (each in a chunk of its own). */
    {
        static const char *const want_a[] = {
            "event: payload\nid: 1\ndata: {\"version\": 1, "
            "\"payload_base64\": \"YWRkZWQgeDE=\", \"payload_text\": "
            "\"added x1\"}\n\n",
            "event: payload\nid: 1\ndata: {\"version\": 1, "
            "\"payload_base64\": \"ZTE=\", \"payload_text\": \"e1\"}\n\n",
            "id: 2\ndata: {\"version\": 2, \"state_base64\": \"czI=\", "
            "\"state_text\": \"s2\"}\n\n"};
        static const char *const want_b[] = {
            "id: 1\ndata: {\"version\": 1, \"state_base64\": \"eDE=\", "
            "\"state_text\": \"x1\"}\n\n",
            "id: 2\ndata: {\"version\": 2, \"state_base64\": \"czI=\", "
            "\"state_text\": \"s2\"}\n\n"};
        long at = -1, pos;
        size_t i;

        for (i = 0; i < sizeof want_a / sizeof want_a[0]; i++) {
            pos = read_until(fa, a, sizeof a, &al, want_a[i], 10000);
            ck_assert_int_gt(pos, at);
            at = pos;
        }
        at = -1;
        for (i = 0; i < sizeof want_b / sizeof want_b[0]; i++) {
            pos = read_until(fb, b, sizeof b, &bl, want_b[i], 10000);
            ck_assert_int_gt(pos, at);
            at = pos;
        }
    }
    ck_assert_ptr_null(strstr(b, "event: payload"));
    ck_assert_ptr_null(strstr(a, "\"f\""));

    fc = sse_open(port, "/v1/actors/feed/s/events?payloads=yes", NULL);
    ck_assert_int_ge(read_until(fc, c, sizeof c, &cl, "400", 10000), 0);
    ck_assert_int_ge(read_until(fc, c, sizeof c, &cl, "EINVAL", 10000), 0);
    close(fc);
    /* A query value may come percent-encoded: %31 is a 1. */
    cl = 0;
    memset(c, 0, sizeof c);
    fc = sse_open(port, "/v1/actors/feed/s/events?payloads=%31", NULL);
    ck_assert_int_ge(read_until(fc, c, sizeof c, &cl, "id: 2\n", 10000), 0);
    ck_assert_int_eq(feed(w, "s", "emit e3", NULL, 0), 0);
    ck_assert_int_ge(read_until(fc, c, sizeof c, &cl,
                                "event: payload\nid: 2\n", 10000),
                     0);
    close(fc);
    close(fa);
    close(fb);
    keel_client_close(w);
}
END_TEST

/* keel follow prints a handler's payloads as "event VERSION PAYLOAD",
 * states as "VERSION STATE". */
START_TEST(cli_follow_payloads)
{
    char *bin = tu_bin("keel");
    char line[256];
    keel_client *w;
    int fds[2];
    pid_t pid;

    start_feed_node(0);
    w = connect_node();
    pid = spawn_follow(bin, "feed", "c", fds);
    ck_assert_int_eq(read_line(fds[0], line, sizeof line, 10000), 0);
    ck_assert_str_eq(line, "0 -");
    ck_assert_int_eq(feed(w, "c", "add x1", NULL, 0), 0);
    ck_assert_int_eq(read_line(fds[0], line, sizeof line, 10000), 0);
    ck_assert_str_eq(line, "event 1 added x1");
    ck_assert_int_eq(feed(w, "c", "emit e1", NULL, 0), 0);
    ck_assert_int_eq(read_line(fds[0], line, sizeof line, 10000), 0);
    ck_assert_str_eq(line, "event 1 e1");
    ck_assert_int_eq(feed(w, "c", "state s2", NULL, 0), 0);
    ck_assert_int_eq(read_line(fds[0], line, sizeof line, 10000), 0);
    ck_assert_str_eq(line, "2 s2");
    keel_client_close(w);
    stop_follow(pid, fds);
    free(bin);
}
END_TEST

static Suite *follow_suite(void)
{
    Suite *s = suite_create("follow");
    TCase *tc = tcase_create("follow");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, every_version_in_order);
    tcase_add_test(tc, reconnect_gets_current_state);
    tcase_add_test(tc, failed_turn_and_unsubscribe);
    tcase_add_test(tc, slow_subscriber_ended);
    tcase_add_test(tc, stop_ends_subscriptions);
    tcase_add_test(tc, cli_follow);
    tcase_add_test(tc, cli_follow_no_state_is_not_a_dash);
    tcase_add_test(tc, server_sent_events);
    tcase_add_test(tc, sse_client_gone);
    tcase_add_test(tc, payload_events);
    tcase_add_test(tc, payload_version_entries_only);
    tcase_add_test(tc, server_sent_payloads);
    tcase_add_test(tc, cli_follow_payloads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(follow_suite());
}
