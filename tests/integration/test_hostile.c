/* Hostile clients cannot exhaust a standalone node: XFER frames are held
 * to --max-frame, the listener survives the descriptor limit, connections
 * are capped and idle ones closed, a frame cut short by the end of the
 * stream is answered EMALFORMED, clients cannot set a call's hop count,
 * and the HTTP face survives trickled headers. Real keeld processes on
 * 127.0.0.1; every loop is bounded in count and time, and what is
 * asserted is behaviour (answers, closed connections, resident memory, log
 * size), never how long something took. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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

static char *dir, *data;
static tu_keeld node;

static void setup(void)
{
    dir = tu_tmpdir("hostile");
    if (asprintf(&data, "%s/data", dir) < 0)
        abort();
    memset(&node, 0, sizeof node);
}

static void teardown(void)
{
    if (node.pid > 0)
        tu_keeld_stop(&node, SIGKILL);
    tu_keeld_free(&node);
    tu_rmrf(dir);
    free(dir);
    free(data);
}

static void start_node(const char *const *extra)
{
    ck_assert_msg(tu_keeld_start(&node, data, 0, extra) == 0,
                  "keeld did not start");
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------- raw sockets */

/* A PING over a raw connection, answered by the same bytes within ms. */
static int raw_ping(int fd, uint64_t id, int ms)
{
    uint8_t frame[KEEL_FRAME_HEADER + 4];
    tu_rframe f;

    keel_frame_header(frame, KEEL_FRAME_PING, id, 4);
    memcpy(frame + KEEL_FRAME_HEADER, "ping", 4);
    if (tu_send_all(fd, frame, sizeof frame) != 0)
        return 0;
    return tu_read_frame(fd, &f, ms) == 1 && f.kind == KEEL_FRAME_PONG &&
           f.id == id && f.len == 4 && memcmp(f.body, "ping", 4) == 0;
}

static long file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* ---------------------------------------- 1 XFER held to --max-frame */

/* A standalone node has no use for XFER: an XFER frame larger than
 * --max-frame is refused as soon as its length is read, not buffered up
 * to the 64 MiB a cluster node allows between nodes. Eight connections
 * each claim a 60 MiB frame and send 8 MiB of it: each must be answered
 * ETOOBIG and closed, and the node must not hold their bytes. */
#define XFER_CONNS 8
#define XFER_SENT (8u << 20)

START_TEST(xfer_held_to_max_frame)
{
    static uint8_t chunk[65536];
    int fds[XFER_CONNS], i, refused = 0;
    long before, after;
    keel_client *c;

    start_node(NULL);
    before = tu_rss_kb(node.pid);
    ck_assert(before > 0);
    for (i = 0; i < XFER_CONNS; i++) {
        uint8_t hdr[KEEL_FRAME_HEADER];
        size_t sent;
        fds[i] = tu_raw_connect(node.port);
        ck_assert_int_ge(fds[i], 0);
        keel_frame_header(hdr, KEEL_FRAME_XFER, 7, 60u << 20);
        ck_assert_int_eq(tu_send_all(fds[i], hdr, sizeof hdr), 0);
        /* Sends stop when the node closes the connection. */
        for (sent = 0; sent < XFER_SENT; sent += sizeof chunk)
            if (tu_send_all(fds[i], chunk, sizeof chunk) != 0)
                break;
    }
    for (i = 0; i < XFER_CONNS; i++) {
        tu_rframe f;
        if (tu_read_frame(fds[i], &f, 5000) == 1 && f.kind == KEEL_FRAME_ERROR &&
            f.code == KEEL_ETOOBIG)
            refused++;
    }
    after = tu_rss_kb(node.pid);
    for (i = 0; i < XFER_CONNS; i++)
        close(fds[i]);
    ck_assert_msg(refused == XFER_CONNS,
                  "%d of %d oversized XFER frames answered ETOOBIG", refused,
                  XFER_CONNS);
    /* 64 MiB were sent; a node that buffers them grows by as much. */
    ck_assert_msg(after - before < 24 * 1024,
                  "resident memory grew by %ld KiB", after - before);
    ck_assert_int_eq(keel_client_connect(node.addr, 5000, &c), 0);
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_PING, NULL, NULL, 0, "x",
                                      1, NULL, NULL),
                     0);
    keel_client_close(c);
}
END_TEST

/* ------------------------------------------ 2 the descriptor limit */

/* With its descriptor limit cut to 64, the node gets 200 connections more
 * than it can hold. A client connected before must still be answered, the
 * connections over the limit must be refused (EOVERLOAD, id 0) rather
 * than left waiting, and the log must not fill with the same line. */
#define FLOOD 200

START_TEST(fd_limit_keeps_serving)
{
    static int fds[FLOOD];
    struct rlimit rl = {64, 64};
    int i, j, answered = 0, refused = 0, opened = 0, early;
    long log0, log1;

    start_node(NULL);
    early = tu_raw_connect(node.port);
    ck_assert_int_ge(early, 0);
    ck_assert(raw_ping(early, 1, 5000));
    ck_assert_int_eq(prlimit(node.pid, RLIMIT_NOFILE, &rl, NULL), 0);
    log0 = file_size(node.log_path);
    for (i = 0; i < FLOOD; i++) {
        fds[i] = tu_raw_connect(node.port);
        if (fds[i] >= 0)
            opened++;
    }
    /* The connected client is served while the flood sits there: 20
     * pings, each answered within 5 s. */
    for (j = 0; j < 20; j++) {
        if (raw_ping(early, 100 + (uint64_t)j, 5000))
            answered++;
        usleep(100 * 1000);
    }
    for (i = 0; i < FLOOD; i++) {
        tu_rframe f;
        if (fds[i] >= 0 && tu_wait_readable(fds[i], 0) &&
            tu_read_frame(fds[i], &f, 1000) == 1 &&
            f.kind == KEEL_FRAME_ERROR && f.id == 0 &&
            f.code == KEEL_EOVERLOAD)
            refused++;
    }
    log1 = file_size(node.log_path);
    for (i = 0; i < FLOOD; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    ck_assert_msg(log1 - log0 < 16 * 1024, "the log grew by %ld bytes",
                  log1 - log0);
    ck_assert_msg(answered == 20, "%d of 20 pings answered", answered);
    ck_assert_msg(opened > 100, "only %d connects completed", opened);
    ck_assert_msg(refused > 100, "%d of %d connections refused EOVERLOAD",
                  refused, opened);
    /* Once the flood is gone, new connections are served again. */
    for (j = 0, answered = 0; j < 50 && !answered; j++) {
        int fd = tu_raw_connect(node.port);
        if (fd >= 0) {
            answered = raw_ping(fd, 9, 2000);
            close(fd);
        }
        if (!answered)
            usleep(100 * 1000);
    }
    ck_assert(answered);
    ck_assert(raw_ping(early, 2, 5000));
    close(early);
}
END_TEST

/* ------------------------------------------- 2 --max-connections */

START_TEST(max_connections_refuses)
{
    static const char *const extra[] = {"--max-connections", "3", NULL};
    int fds[3], fd, i, ok = 0;
    tu_rframe f;

    start_node(extra);
    for (i = 0; i < 3; i++) {
        fds[i] = tu_raw_connect(node.port);
        ck_assert_int_ge(fds[i], 0);
        ck_assert(raw_ping(fds[i], 1, 5000));
    }
    /* The fourth is told why, with the farewell's id 0, and closed. */
    fd = tu_raw_connect(node.port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
    ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert_uint_eq(f.id, 0);
    ck_assert_int_eq(f.code, KEEL_EOVERLOAD);
    ck_assert(tu_closed_within(fd, 5000));
    close(fd);
    for (i = 0; i < 3; i++)
        ck_assert(raw_ping(fds[i], 2, 5000));
    /* A place freed is taken again (the close reaches the node soon). */
    close(fds[0]);
    for (i = 0; i < 50 && !ok; i++) {
        fd = tu_raw_connect(node.port);
        if (fd >= 0) {
            ok = raw_ping(fd, 3, 2000);
            close(fd);
        }
        if (!ok)
            usleep(100 * 1000);
    }
    ck_assert(ok);
    close(fds[1]);
    close(fds[2]);
}
END_TEST

/* -------------------------------------------- 2 idle connections */

/* --conn-idle-timeout 1: a silent connection and one trickling a frame
 * that never completes are closed, the silent one with ERROR ETIMEDOUT
 * quoting id 0; one that keeps asking is served throughout. */
START_TEST(idle_connections_closed)
{
    static const char *const extra[] = {"--conn-idle-timeout", "1", NULL};
    uint8_t hdr[KEEL_FRAME_HEADER];
    int quiet, trickle, busy, j, served = 0;
    tu_rframe f;

    start_node(extra);
    quiet = tu_raw_connect(node.port);
    trickle = tu_raw_connect(node.port);
    busy = tu_raw_connect(node.port);
    ck_assert(quiet >= 0 && trickle >= 0 && busy >= 0);
    keel_frame_header(hdr, KEEL_FRAME_PING, 5, 64);
    /* 4 s: the trickler sends a byte of its frame every 200 ms, the busy
     * one a ping. */
    for (j = 0; j < 20; j++) {
        if (j < (int)sizeof hdr)
            (void)send(trickle, hdr + j, 1, MSG_NOSIGNAL);
        else
            (void)send(trickle, "p", 1, MSG_NOSIGNAL);
        if (raw_ping(busy, 10 + (uint64_t)j, 5000))
            served++;
        usleep(200 * 1000);
    }
    ck_assert_int_eq(served, 20);
    ck_assert_int_eq(tu_read_frame(quiet, &f, 5000), 1);
    ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert_uint_eq(f.id, 0);
    ck_assert_int_eq(f.code, KEEL_ETIMEDOUT);
    ck_assert(tu_closed_within(quiet, 5000));
    /* The trickler gets the same farewell (its frame never ran). */
    ck_assert_int_eq(tu_read_frame(trickle, &f, 5000), 1);
    ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert_int_eq(f.code, KEEL_ETIMEDOUT);
    ck_assert(tu_closed_within(trickle, 5000));
    ck_assert(raw_ping(busy, 99, 5000));
    close(quiet);
    close(trickle);
    close(busy);
}
END_TEST

/* ------------------------------ 4b a frame's limit, read in pieces */

/* A call that carries a budget may be KEEL_DEADLINE_LEN bytes over
 * --max-frame; which limit applies depends on the frame's kind and flags
 * (bytes 5 and 6). A read may end anywhere in a frame: one that ends
 * after its length, before its kind or flags, must not have the frame
 * judged by the plain limit (ETOOBIG, and the connection closed). The
 * frame of the largest size is sent three ways: whole, cut after 4
 * bytes, cut after 5; each is answered as a call. */
#define PIECES_MAX 65536u

START_TEST(a_frame_read_in_pieces_gets_its_whole_limit)
{
    const char *extra[] = {"--max-frame", "65536", NULL};
    const size_t total = PIECES_MAX + KEEL_DEADLINE_LEN;
    const size_t msglen = total - KEEL_FRAME_HEADER - KEEL_DEADLINE_LEN -
                          keel_call_body_size(8, 1, 0);
    uint8_t *frame = malloc(total), *msg = malloc(msglen);
    int v;

    ck_assert(frame != NULL && msg != NULL);
    memcpy(msg, "write ", 6);
    memset(msg + 6, 'v', msglen - 6);
    keel_frame_header(frame, KEEL_FRAME_CALL, 9, total - KEEL_FRAME_HEADER);
    frame[5] = KEEL_FLAG_DEADLINE;
    keel_deadline_put(frame + KEEL_FRAME_HEADER, 10000);
    ck_assert_uint_eq(keel_call_body_encode(frame + KEEL_FRAME_HEADER +
                                                KEEL_DEADLINE_LEN,
                                            "register", 8, "p", 1, msg,
                                            msglen),
                      total - KEEL_FRAME_HEADER - KEEL_DEADLINE_LEN);
    start_node(extra);
    for (v = 0; v < 3; v++) {
        const size_t cut = v == 0 ? total : (size_t)(3 + v); /* 4, 5 */
        tu_rframe f;
        int fd = tu_raw_connect(node.port);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(tu_send_all(fd, frame, cut), 0);
        if (cut < total) {
            usleep(300000); /* read on its own */
            ck_assert_int_eq(tu_send_all(fd, frame + cut, total - cut), 0);
        }
        ck_assert_int_eq(tu_read_frame(fd, &f, 10000), 1);
        ck_assert_msg(f.kind == KEEL_FRAME_REPLY && f.id == 9,
                      "cut after %zu bytes: kind %u, code %d, '%.*s'", cut,
                      f.kind, f.code, (int)(f.len < 200 ? f.len : 200),
                      (const char *)f.body);
        ck_assert(raw_ping(fd, 10, 5000)); /* the connection lives on */
        close(fd);
    }
    free(frame);
    free(msg);
}
END_TEST

/* ------------------------------------------- 5 truncated then EOF */

/* A frame cut short by the end of the stream is malformed: the node says
 * so (EMALFORMED, with the frame's request id once its header is in)
 * before it closes. */
START_TEST(truncated_frame_answered)
{
    uint8_t buf[KEEL_FRAME_HEADER + 64];
    int v;

    start_node(NULL);
    for (v = 0; v < 2; v++) {
        tu_rframe f;
        int fd = tu_raw_connect(node.port);
        ck_assert_int_ge(fd, 0);
        keel_frame_header(buf, KEEL_FRAME_PING, 5, 64);
        memset(buf + KEEL_FRAME_HEADER, 'p', 64);
        /* v 0: half a header; v 1: a whole header and half its body. */
        ck_assert_int_eq(tu_send_all(fd, buf,
                                  v == 0 ? KEEL_FRAME_HEADER / 2
                                         : KEEL_FRAME_HEADER + 32),
                         0);
        ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
        ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
        ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
        ck_assert_int_eq(f.code, KEEL_EMALFORMED);
        ck_assert_uint_eq(f.id, v == 0 ? 0 : 5);
        ck_assert(tu_closed_within(fd, 5000));
        close(fd);
    }
}
END_TEST

/* An error that ends the connection comes after the answers the node
 * owes for what it read before (docs/protocol.md): a client that stops
 * reading at it has every reply of the requests that ran. Three ways to
 * end it, each after a durable call whose reply takes a flush: a stream
 * ending inside a frame, a frame of an unknown kind, a frame over the
 * maximum size. */
START_TEST(fatal_error_after_owed_replies)
{
    uint8_t frame[KEEL_FRAME_HEADER + 64], bad[KEEL_FRAME_HEADER];
    size_t blen = keel_call_body_size(7, 2, 4);
    int v, k;

    start_node(NULL);
    for (v = 0; v < 3; v++)
        for (k = 0; k < 5; k++) {
            tu_rframe f;
            int fd = tu_raw_connect(node.port);
            size_t badlen = sizeof bad;
            ck_assert_int_ge(fd, 0);
            keel_frame_header(frame, KEEL_FRAME_CALL, 1, blen);
            keel_call_body_encode(frame + KEEL_FRAME_HEADER, "counter", 7,
                                  "o1", 2, "incr", 4);
            if (v == 0) {
                memset(bad, 0, sizeof bad);
                badlen = 5;
            } else if (v == 1) {
                keel_frame_header(bad, KEEL_FRAME_PING, 9, 0);
                bad[4] = 42;
            } else {
                keel_frame_header(bad, KEEL_FRAME_PING, 9, 64u << 20);
            }
            memcpy(frame + KEEL_FRAME_HEADER + blen, bad, badlen);
            ck_assert_int_eq(tu_send_all(fd, frame,
                                         KEEL_FRAME_HEADER + blen + badlen),
                             0);
            if (v == 0)
                ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
            ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
            ck_assert_msg(f.kind == KEEL_FRAME_REPLY && f.id == 1,
                          "case %d: frame kind %d id %llu came first", v,
                          f.kind, (unsigned long long)f.id);
            ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
            ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
            ck_assert_int_eq(f.code, v == 2 ? KEEL_ETOOBIG : KEEL_EMALFORMED);
            ck_assert(tu_closed_within(fd, 5000));
            close(fd);
        }
}
END_TEST

/* A subscription's first answer is owed as a reply is: it comes before
 * an error that ends the connection. One unsubscribed before its first
 * answer is owed nothing, and the connection still ends at the client's
 * end of stream. */
START_TEST(fatal_error_after_subscribe_answer)
{
    uint8_t frame[3 * KEEL_FRAME_HEADER + 64], bad[KEEL_FRAME_HEADER];
    int k;

    start_node(NULL);
    for (k = 0; k < 10; k++) {
        tu_rframe f;
        int fd = tu_raw_connect(node.port);
        char id[16];
        size_t n, il = (size_t)snprintf(id, sizeof id, "s%d", k);
        ck_assert_int_ge(fd, 0);
        n = keel_subscribe_encode(frame + KEEL_FRAME_HEADER, "counter", 7,
                                  id, il, 0);
        keel_frame_header(frame, KEEL_FRAME_SUBSCRIBE, 1, n);
        n += KEEL_FRAME_HEADER;
        if (k % 2 == 0) {
            keel_frame_header(bad, KEEL_FRAME_PING, 9, 0);
            bad[4] = 42;
            memcpy(frame + n, bad, sizeof bad);
            ck_assert_int_eq(tu_send_all(fd, frame, n + sizeof bad), 0);
            ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
            ck_assert_msg(f.kind == KEEL_FRAME_REPLY && f.id == 1,
                          "try %d: frame kind %d id %llu came first", k,
                          f.kind, (unsigned long long)f.id);
            ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
            ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
            ck_assert_int_eq(f.code, KEEL_EMALFORMED);
        } else {
            keel_frame_header(frame + n, KEEL_FRAME_UNSUBSCRIBE, 1, 0);
            n += KEEL_FRAME_HEADER;
            ck_assert_int_eq(tu_send_all(fd, frame, n), 0);
            ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
            /* the subscription's answer if it came first, then the
             * unsubscribe's */
            while (tu_read_frame(fd, &f, 5000) == 1)
                ck_assert_uint_eq(f.id, 1);
        }
        ck_assert(tu_closed_within(fd, 5000));
        close(fd);
    }
}
END_TEST

/* ------------------------------------------------ 4 client hop counts */

/* Bits 0-3 of a CALL's flags count forwards between nodes. A client that
 * sets them is refused EDENIED (not permitted for this connection) on
 * that request; the connection stays usable. */
START_TEST(client_hops_refused)
{
    uint8_t frame[KEEL_FRAME_HEADER + 64];
    size_t blen = keel_call_body_size(7, 2, 4);
    tu_rframe f;
    int fd;

    start_node(NULL);
    fd = tu_raw_connect(node.port);
    ck_assert_int_ge(fd, 0);
    keel_frame_header(frame, KEEL_FRAME_CALL, 3, blen);
    frame[5] = 3;
    keel_call_body_encode(frame + KEEL_FRAME_HEADER, "counter", 7, "c1", 2,
                          "incr", 4);
    ck_assert_int_eq(tu_send_all(fd, frame, KEEL_FRAME_HEADER + blen), 0);
    ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
    ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert_uint_eq(f.id, 3);
    ck_assert_int_eq(f.code, KEEL_EDENIED);
    /* The same call without hops runs, as the first increment. */
    frame[5] = 0;
    keel_frame_header(frame, KEEL_FRAME_CALL, 4, blen);
    ck_assert_int_eq(tu_send_all(fd, frame, KEEL_FRAME_HEADER + blen), 0);
    ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
    ck_assert_int_eq(f.kind, KEEL_FRAME_REPLY);
    ck_assert_uint_eq(f.len, 1);
    ck_assert_int_eq(f.body[0], '1');
    close(fd);
}
END_TEST

/* --------------------------------------------------- 3 HTTP slowloris */

static int http_port(void)
{
    char *log = tu_keeld_log(&node);
    const char *p = log != NULL ? strstr(log, "keeld: http on port ") : NULL;
    int port = p != NULL ? atoi(p + strlen("keeld: http on port ")) : 0;

    free(log);
    return port;
}

/* Opens n connections to port that send the start of a request's
 * headers; alive[i] says which took it. */
static void trickle_open(int port, int *fds, int *alive, int n)
{
    static const char head[] = "GET /healthz HTTP/1.1\r\nX-Slow: ";
    int i;

    for (i = 0; i < n; i++) {
        fds[i] = tu_raw_connect_bare(port);
        alive[i] = fds[i] >= 0 && tu_send_all(fds[i], head, sizeof head - 1) == 0;
    }
}

/* One byte more on each live trickling connection; returns how many are
 * still open (a closed one is marked dead). */
static int trickle_round(int *fds, int *alive, int n)
{
    int i, open_now = 0;

    for (i = 0; i < n; i++) {
        if (!alive[i])
            continue;
        if (send(fds[i], "a", 1, MSG_NOSIGNAL) != 1 ||
            (tu_wait_readable(fds[i], 0) && tu_closed_within(fds[i], 100)))
            alive[i] = 0;
        else
            open_now++;
    }
    return open_now;
}

/* 100 connections trickle a request's headers, a byte each every 250 ms,
 * and never finish them. With the default header deadline (10 s) they
 * are closed although they keep sending, and the face serves again. */
#define LORIS 100

START_TEST(http_header_deadline)
{
    static const char *const extra[] = {"--http", "127.0.0.1:0", NULL};
    static int fds[LORIS], alive[LORIS];
    int port, i, round, open_now = LORIS, ok = 0;
    double t0;

    start_node(extra);
    port = http_port();
    ck_assert_int_gt(port, 0);
    ck_assert(tu_http_healthz(NULL, port));
    trickle_open(port, fds, alive, LORIS);
    /* Up to 20 s of trickling. */
    t0 = now_s();
    for (round = 0; round < 80 && open_now > 0; round++) {
        open_now = trickle_round(fds, alive, LORIS);
        if (open_now > 0)
            usleep(250 * 1000);
    }
    for (i = 0; i < LORIS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    ck_assert_msg(open_now == 0,
                  "%d trickling connections still open after %.1f s",
                  open_now, now_s() - t0);
    for (i = 0; i < 20 && !ok; i++) {
        ok = tu_http_healthz(NULL, port);
        if (!ok)
            usleep(250 * 1000);
    }
    ck_assert(ok);
}
END_TEST

/* --http-max-per-ip 16: of 40 trickling connections from 127.0.0.1, the
 * 24 over the cap are closed at once, and a client from another address
 * (127.0.0.2) is served while the 16 hold their places. */
#define CAPPED 40

/* The connections of fds the node has closed since the last look: marked
 * dead in alive, and counted. */
static int reap_closed(const int *fds, int *alive, int n)
{
    int i, closed = 0;

    for (i = 0; i < n; i++)
        if (alive[i] && tu_wait_readable(fds[i], 0) &&
            tu_closed_within(fds[i], 100)) {
            alive[i] = 0;
            closed++;
        }
    return closed;
}

START_TEST(http_per_ip_cap)
{
    static const char *const extra[] = {"--http", "127.0.0.1:0",
                                        "--http-max-per-ip", "16", NULL};
    static int fds[CAPPED], alive[CAPPED];
    int port, i, round, closed = 0, served = 0;

    start_node(extra);
    port = http_port();
    ck_assert_int_gt(port, 0);
    trickle_open(port, fds, alive, CAPPED);
    /* The refused ones are closed at once: looked for until they all are
     * (a node slow to run closes them late), or for 10 s. Closing more
     * than 24 fails too. */
    for (round = 0; round < 40 && closed < CAPPED - 16; round++) {
        usleep(250 * 1000);
        closed += reap_closed(fds, alive, CAPPED);
    }
    usleep(250 * 1000); /* one more look: no 25th */
    closed += reap_closed(fds, alive, CAPPED);
    ck_assert_msg(closed == CAPPED - 16,
                  "%d of %d trickling connections closed at once", closed,
                  CAPPED);
    for (i = 0; i < 5; i++) {
        ck_assert_int_eq(trickle_round(fds, alive, CAPPED), 16);
        served += tu_http_healthz("127.0.0.2", port);
    }
    ck_assert_int_eq(served, 5);
    for (i = 0; i < CAPPED; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hostile");
    TCase *tc = tcase_create("hostile");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, xfer_held_to_max_frame);
    tcase_add_test(tc, fd_limit_keeps_serving);
    tcase_add_test(tc, max_connections_refuses);
    tcase_add_test(tc, idle_connections_closed);
    tcase_add_test(tc, a_frame_read_in_pieces_gets_its_whole_limit);
    tcase_add_test(tc, truncated_frame_answered);
    tcase_add_test(tc, fatal_error_after_owed_replies);
    tcase_add_test(tc, fatal_error_after_subscribe_answer);
    tcase_add_test(tc, client_hops_refused);
    tcase_add_test(tc, http_header_deadline);
    tcase_add_test(tc, http_per_ip_cap);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
