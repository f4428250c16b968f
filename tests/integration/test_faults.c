/* keeld under bad input and faults: malformed, oversized and truncated
 * frames, requests with bad content, clients that vanish mid-request, a
 * full disk, a growing LMDB map, an unusable data directory and SIGTERM
 * during a pipelined load. Real keeld processes on 127.0.0.1, real LMDB
 * files in temporary directories. */
#include <check.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define CLIENT_TIMEOUT_MS 20000

static char *dir, *data;
static tu_keeld node;

static void setup(void)
{
    dir = tu_tmpdir("faults");
    if (asprintf(&data, "%s/data", dir) < 0)
        abort();
    memset(&node, 0, sizeof node);
}

static void teardown(void)
{
    tu_keeld_free(&node);
    tu_rmrf(dir);
    free(dir);
    free(data);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Starts (port 0) or restarts (port of the last run) the node. */
static void start_node(int port, const char *const *extra)
{
    ck_assert_msg(tu_keeld_start(&node, data, port, extra) == 0,
                  "keeld did not start (data %s)", data);
}

static void stop_node_clean(void)
{
    int rc = tu_keeld_stop(&node, SIGTERM);
    char *log = NULL;

    if (rc != 0)
        log = tu_keeld_log(&node);
    ck_assert_msg(rc == 0, "keeld exit code %d after SIGTERM; log:\n%s", rc,
                  log ? log : "");
    free(log);
}

static keel_client *conn(void)
{
    keel_client *c = NULL;
    int rc = keel_client_connect(node.addr, CLIENT_TIMEOUT_MS, &c);

    ck_assert_msg(rc == 0, "connect %s: %s", node.addr, keel_strerror(rc));
    return c;
}

/* One CALL with a text message. *reply (may be NULL) gets the malloc'd
 * reply or error text. */
static int call(keel_client *c, const char *type, const char *id,
                const char *msg, size_t msglen, char **reply,
                size_t *reply_len)
{
    char *r = NULL;
    int rc = keel_client_call(c, KEEL_FRAME_CALL, type, id, strlen(id), msg,
                              msglen, &r, reply_len);

    if (reply != NULL)
        *reply = r;
    else
        free(r);
    return rc;
}

/* A call that must succeed with exactly `want` as its reply. */
static void call_expect(keel_client *c, const char *type, const char *id,
                        const char *msg, const char *want)
{
    char *reply = NULL;
    int rc = call(c, type, id, msg, strlen(msg), &reply, NULL);

    ck_assert_msg(rc == 0, "%s %s '%s': %s (%s)", type, id, msg,
                  keel_err_name(rc), reply ? reply : "");
    if (want != NULL)
        ck_assert_msg(strcmp(reply, want) == 0, "%s %s '%s': reply '%s', "
                      "want '%s'", type, id, msg, reply, want);
    free(reply);
}

/* A call that must fail with the server error `code`. */
static void call_expect_err(keel_client *c, const char *type, const char *id,
                            const char *msg, int code)
{
    char *reply = NULL;
    int rc = call(c, type, id, msg, strlen(msg), &reply, NULL);

    ck_assert_msg(rc == code, "%s %s '%s': got %s (%s), want %s", type, id,
                  msg, keel_err_name(rc), reply ? reply : "",
                  keel_err_name(code));
    /* A server error carries a message; a transport error has none. */
    ck_assert_ptr_nonnull(reply);
    free(reply);
}

static long long counter_get(keel_client *c, const char *id)
{
    char *reply = NULL, *end;
    long long v;
    int rc = call(c, "counter", id, "get", 3, &reply, NULL);

    ck_assert_msg(rc == 0, "counter %s get: %s (%s)", id, keel_err_name(rc),
                  reply ? reply : "");
    v = strtoll(reply, &end, 10);
    ck_assert_msg(*end == '\0' && end != reply, "counter reply '%s'", reply);
    free(reply);
    return v;
}

static void ping(keel_client *c)
{
    char *reply = NULL;
    size_t len = 0;
    int rc = keel_client_call(c, KEEL_FRAME_PING, NULL, NULL, 0, "hello", 5,
                              &reply, &len);

    ck_assert_msg(rc == 0, "ping: %s", keel_err_name(rc));
    ck_assert_uint_eq(len, 5);
    ck_assert_int_eq(memcmp(reply, "hello", 5), 0);
    free(reply);
}

/* Receives one frame that must be an ERROR with `code`; returns its request
 * id. */
static uint64_t recv_error(keel_client *c, int code)
{
    keel_frame f;
    const char *msg = NULL;
    size_t mlen = 0;
    int rc = keel_client_recv(c, &f), got;

    ck_assert_msg(rc == 0, "recv: %s", keel_err_name(rc));
    ck_assert_msg(f.kind == KEEL_FRAME_ERROR, "frame kind %d, want ERROR",
                  f.kind);
    got = keel_error_body_parse(f.body, f.body_len, &msg, &mlen);
    ck_assert_msg(got == code, "error %s (%.*s), want %s", keel_err_name(got),
                  (int)mlen, msg ? msg : "", keel_err_name(code));
    return f.request_id;
}

/* The connection must have been closed by the server: no further frame. */
static void expect_closed(keel_client *c)
{
    keel_frame f;
    int rc = keel_client_recv(c, &f);

    ck_assert_msg(rc == KEEL_ECONN, "after a fatal error: recv gave %s "
                  "(kind %d), want ECONN", keel_err_name(rc),
                  rc == 0 ? f.kind : -1);
}

/* A named figure of `keel stat` / a STAT reply ("name value" lines). */
static unsigned long long stat_field(const char *text, const char *name)
{
    size_t nl = strlen(name);
    const char *p = text;

    while (p != NULL && *p != '\0') {
        if (strncmp(p, name, nl) == 0 && p[nl] == ' ')
            return strtoull(p + nl + 1, NULL, 10);
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    ck_abort_msg("no '%s' line in stats:\n%s", name, text);
    return 0;
}

static unsigned long long node_stat(keel_client *c, const char *name)
{
    char *reply = NULL;
    unsigned long long v;
    int rc = keel_client_call(c, KEEL_FRAME_STAT, NULL, NULL, 0, NULL, 0,
                              &reply, NULL);

    ck_assert_msg(rc == 0, "stat: %s", keel_err_name(rc));
    v = stat_field(reply, name);
    free(reply);
    return v;
}

/* Deterministic value of key i: a prefix naming the key, then letters. */
static void make_value(char *buf, size_t len, int i)
{
    char prefix[16];
    int n = snprintf(prefix, sizeof prefix, "v%05d:", i);
    size_t j, plen = n < 0 ? 0 : (size_t)n;

    for (j = 0; j < len; j++)
        buf[j] = j < plen ? prefix[j]
                          : (char)('a' + (int)((j * 7 + (size_t)i) % 26));
}

/* "put kNNNNN VALUE" for key i with a value of vlen bytes (malloc'd). */
static char *put_msg(int i, size_t vlen, size_t *len)
{
    char *m = malloc(32 + vlen);
    int n;

    ck_assert_ptr_nonnull(m);
    n = sprintf(m, "put k%05d ", i);
    make_value(m + n, vlen, i);
    *len = (size_t)n + vlen;
    return m;
}

/* get kNNNNN must return exactly the value of key i. */
static void kv_expect(keel_client *c, const char *actor, int i, size_t vlen)
{
    char key_msg[32], *reply = NULL, *want = malloc(vlen);
    size_t rlen = 0;
    int rc;

    ck_assert_ptr_nonnull(want);
    snprintf(key_msg, sizeof key_msg, "get k%05d", i);
    rc = call(c, "kv", actor, key_msg, strlen(key_msg), &reply, &rlen);
    ck_assert_msg(rc == 0, "kv %s %s: %s (%s)", actor, key_msg,
                  keel_err_name(rc), reply ? reply : "");
    make_value(want, vlen, i);
    ck_assert_msg(rlen == vlen && memcmp(reply, want, vlen) == 0,
                  "kv %s %s: %zu bytes, not the value written (%zu bytes)",
                  actor, key_msg, rlen, vlen);
    free(reply);
    free(want);
}

/* ------------------------------------------------------------ 1 malformed */

START_TEST(malformed_frame_closes_connection)
{
    static const char *const what[] = {"nonzero reserved field", "kind 0",
                                       "kind 99"};
    keel_client *other, *bad;
    uint8_t hdr[KEEL_FRAME_HEADER];
    uint64_t rid;
    int v;

    start_node(0, NULL);
    for (v = 0; v < 3; v++) {
        other = conn();
        ping(other); /* accepted and served before the bad frame */
        bad = conn();
        keel_frame_header(hdr, KEEL_FRAME_PING, 7700 + (uint64_t)v, 0);
        if (v == 0)
            hdr[7] = 1;
        else
            hdr[4] = v == 1 ? 0 : 99;
        ck_assert_int_eq(keel_client_queue_raw(bad, hdr, sizeof hdr), 0);
        ck_assert_int_eq(keel_client_flush(bad), 0);
        rid = recv_error(bad, KEEL_EMALFORMED);
        ck_assert_msg(rid == 7700 + (uint64_t)v,
                      "%s: ERROR quotes request id %llu", what[v],
                      (unsigned long long)rid);
        expect_closed(bad);
        keel_client_close(bad);

        call_expect(other, "counter", "malformed", "incr",
                    v == 0 ? "1" : v == 1 ? "2" : "3");
        keel_client_close(other);
    }
    stop_node_clean();
}
END_TEST

/* ------------------------------------------------------------ 2 oversized */

START_TEST(oversized_frame_refused)
{
    static const char *const extra[] = {"--max-frame", "4096", NULL};
    keel_client *other, *big;
    uint8_t hdr[KEEL_FRAME_HEADER];
    char msg[5000];

    start_node(0, extra);
    other = conn();
    ping(other);
    big = conn();
    /* The length field announces 1 MiB; only the header is sent. */
    keel_frame_header(hdr, KEEL_FRAME_CALL, 99,
                      (1u << 20) - (KEEL_FRAME_HEADER - 4));
    ck_assert_uint_eq(((uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
                       (uint32_t)hdr[2] << 8 | hdr[3]),
                      1u << 20);
    ck_assert_int_eq(keel_client_queue_raw(big, hdr, sizeof hdr), 0);
    ck_assert_int_eq(keel_client_flush(big), 0);
    recv_error(big, KEEL_ETOOBIG);
    expect_closed(big);
    keel_client_close(big);

    call_expect(other, "counter", "big", "incr", "1");
    /* Just over the limit through the ordinary encoder: refused too. */
    big = conn();
    memset(msg, 'x', sizeof msg);
    memcpy(msg, "put k ", 6);
    {
        char *reply = NULL;
        int rc = call(big, "kv", "big", msg, sizeof msg, &reply, NULL);
        ck_assert_msg(rc == KEEL_ETOOBIG, "5000-byte call: %s",
                      keel_err_name(rc));
        free(reply);
    }
    expect_closed(big);
    keel_client_close(big);
    /* A frame that fits still works. */
    {
        char *reply = NULL;
        int rc = call(other, "kv", "big", msg, 3000, &reply, NULL);
        ck_assert_msg(rc == 0, "3000-byte call: %s (%s)", keel_err_name(rc),
                      reply ? reply : "");
        free(reply);
    }
    call_expect(other, "counter", "big", "incr", "2");
    keel_client_close(other);
    stop_node_clean();
}
END_TEST

/* ------------------------------------------------------------ 3 truncated */

START_TEST(truncated_frame_then_disconnect)
{
    uint8_t buf[KEEL_FRAME_HEADER + 64];
    keel_client *c;
    int v;

    start_node(0, NULL);
    for (v = 0; v < 2; v++) {
        c = conn();
        /* v 0: half a header; v 1: a whole header and half its body. */
        keel_frame_header(buf, KEEL_FRAME_PING, 5, 64);
        memset(buf + KEEL_FRAME_HEADER, 'p', 64);
        ck_assert_int_eq(keel_client_queue_raw(c, buf,
                                               v == 0 ? KEEL_FRAME_HEADER / 2
                                                      : KEEL_FRAME_HEADER + 32),
                         0);
        ck_assert_int_eq(keel_client_flush(c), 0);
        keel_client_close(c);

        c = conn();
        ping(c);
        call_expect(c, "counter", "trunc", "incr", v == 0 ? "1" : "2");
        keel_client_close(c);
    }
    stop_node_clean();
}
END_TEST

/* ------------------------------------------------------- 4 bad content */

START_TEST(bad_requests_keep_connection)
{
    enum { IDLEN = 300 };
    uint8_t frame[KEEL_FRAME_HEADER + 1 + 7 + 2 + IDLEN + 4], *p;
    size_t body = sizeof frame - KEEL_FRAME_HEADER;
    keel_client *c;

    start_node(0, NULL);
    c = conn();
    call_expect_err(c, "nosuchtype", "x", "incr", KEEL_ENOTYPE);

    /* An id of 300 bytes, over the 255-byte limit: the client library
     * refuses to encode it, so the body is built by hand. */
    keel_frame_header(frame, KEEL_FRAME_CALL, 4242, body);
    p = frame + KEEL_FRAME_HEADER;
    *p++ = 7;
    memcpy(p, "counter", 7);
    p += 7;
    *p++ = (uint8_t)(IDLEN >> 8);
    *p++ = (uint8_t)(IDLEN & 0xff);
    memset(p, 'i', IDLEN);
    p += IDLEN;
    memcpy(p, "incr", 4);
    ck_assert_int_eq(keel_client_queue_raw(c, frame, sizeof frame), 0);
    ck_assert_int_eq(keel_client_flush(c), 0);
    ck_assert_uint_eq(recv_error(c, KEEL_ELIMIT), 4242);

    call_expect_err(c, "counter", "bad", "frobnicate", KEEL_EBADMSG);
    call_expect_err(c, "counter", "bad", "incr notanumber", KEEL_EBADMSG);
    call_expect_err(c, "counter", "bad", "", KEEL_EBADMSG);
    call_expect_err(c, "kv", "bad", "get nosuchkey", KEEL_ENOTFOUND);

    /* The same connection still serves, and the failed calls changed
     * nothing. */
    call_expect(c, "counter", "bad", "incr", "1");
    ping(c);
    keel_client_close(c);
    stop_node_clean();
}
END_TEST

/* --------------------------------------------- 5 disconnect mid-request */

START_TEST(client_disconnects_mid_request)
{
    enum { N = 2000 };
    keel_client *c;
    long long v;
    double deadline;
    char want[32];
    int i;

    start_node(0, NULL);
    c = conn();
    for (i = 0; i < N; i++)
        ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_CALL,
                                           (uint64_t)i + 1, "counter", "gone",
                                           4, "incr", 4),
                         0);
    ck_assert_int_eq(keel_client_flush(c), 0);
    keel_client_close(c);

    /* Once the server has dropped that connection, every request it read
     * from it is in the actor's mailbox, so a later get (same actor, FIFO)
     * sees all of them. */
    c = conn();
    deadline = now_s() + 30;
    while (node_stat(c, "connections") != 1) {
        ck_assert_msg(now_s() < deadline,
                      "the closed connection is still counted after 30 s");
        usleep(20000);
    }
    v = counter_get(c, "gone");
    ck_assert_msg(v >= 0 && v <= N, "counter is %lld after %d incr", v, N);
    snprintf(want, sizeof want, "%lld", v + 1);
    call_expect(c, "counter", "gone", "incr", want);
    ck_assert_int_eq(counter_get(c, "gone"), v + 1);
    printf("disconnect mid-request: %lld of %d increments ran\n", v, N);
    keel_client_close(c);
    stop_node_clean();
}
END_TEST

/* ------------------------------------------------------------ 6 disk full */

/* The file size limit stands in for a full disk. With durability none the
 * store writes through LMDB's map, and the full disk shows when the map's
 * blocks are reserved for growing: ENOSPC, never a SIGBUS. */
static void disk_full_case(const char *const *extra, const char *logged)
{
    enum { MAXPUT = 2000, EXTRA = 5 };
    const size_t vlen = 8192;
    static unsigned char acked[MAXPUT + EXTRA];
    keel_client *c;
    int i, n = 0, nacked = 0, first_fail = -1, last_ok = -1, rc;
    char *reply = NULL;

    memset(acked, 0, sizeof acked);
    node.fsize_limit = 3L << 20;
    start_node(0, extra);
    c = conn();
    for (i = 0; i < MAXPUT + EXTRA; i++) {
        size_t mlen;
        char *m;

        if (first_fail < 0 && i >= MAXPUT)
            break;
        if (first_fail >= 0 && i >= first_fail + 1 + EXTRA)
            break;
        m = put_msg(i, vlen, &mlen);
        rc = call(c, "kv", "disk", m, mlen, &reply, NULL);
        free(m);
        n++;
        if (rc == 0) {
            ck_assert_str_eq(reply, "OK");
            acked[i] = 1;
            nacked++;
            last_ok = i;
        } else {
            ck_assert_msg(rc == KEEL_ENOSPC, "put %d: %s (%s), want OK or "
                          "ENOSPC", i, keel_err_name(rc),
                          reply ? reply : "");
            if (first_fail < 0) {
                first_fail = i;
                printf("disk full: put %d refused: %s\n", i, reply);
            }
        }
        free(reply);
        reply = NULL;
    }
    printf("disk full: %d puts, %d acknowledged\n", n, nacked);
    if (logged != NULL) {
        char *log = tu_keeld_log(&node);
        ck_assert_msg(log != NULL && strstr(log, logged) != NULL,
                      "the node's log does not say \"%s\"", logged);
        free(log);
    }
    ck_assert_msg(first_fail >= 0, "no ENOSPC after %d puts of 8 KiB with a "
                  "3 MiB file size limit", n);
    ck_assert_msg(nacked > 0, "no put acknowledged before the disk was full");

    /* The node still answers, and reads what it acknowledged. */
    ping(c);
    kv_expect(c, "disk", 0, vlen);
    kv_expect(c, "disk", last_ok, vlen);
    /* The refused put is not visible: its reply said it was not written. */
    {
        char msg[32];
        snprintf(msg, sizeof msg, "get k%05d", first_fail);
        if (!acked[first_fail])
            call_expect_err(c, "kv", "disk", msg, KEEL_ENOTFOUND);
    }
    keel_client_close(c);
    stop_node_clean();

    /* Restart with no limit: every acknowledged put is there, exactly. */
    node.fsize_limit = 0;
    start_node(node.port, extra);
    c = conn();
    for (i = 0; i < MAXPUT + EXTRA; i++) {
        char msg[32];
        if (acked[i]) {
            kv_expect(c, "disk", i, vlen);
        } else if (i < n) {
            snprintf(msg, sizeof msg, "get k%05d", i);
            call_expect_err(c, "kv", "disk", msg, KEEL_ENOTFOUND);
        }
    }
    /* And the store takes writes again. */
    {
        size_t mlen;
        char *m = put_msg(MAXPUT + EXTRA, vlen, &mlen);
        rc = call(c, "kv", "disk", m, mlen, &reply, NULL);
        free(m);
        ck_assert_msg(rc == 0, "put after restart: %s (%s)",
                      keel_err_name(rc), reply ? reply : "");
        free(reply);
        kv_expect(c, "disk", MAXPUT + EXTRA, vlen);
    }
    keel_client_close(c);
    stop_node_clean();
}

START_TEST(disk_full)
{
    static const char *const extra[] = {"--map-size", "65536", NULL};

    disk_full_case(extra, NULL);
}
END_TEST

START_TEST(disk_full_none)
{
    static const char *const extra[] = {"--map-size", "65536",
                                        "--durability", "none", NULL};

    disk_full_case(extra, "bytes to grow the map");
}
END_TEST

/* A disk that really fills (a small tmpfs in a mount namespace of the
 * test's own; keeld inherits it), on a data directory made on it: the
 * node fills it, keeps serving reads with writes refused ENOSPC, and
 * starts again while it is still full, every acknowledged put there.
 * Needs the right to mount; otherwise says so and checks nothing. */
static void disk_really_full_case(const char *durability)
{
    enum { MAXPUT = 1500 };
    const size_t vlen = 8192;
    const char *extra[] = {"--durability", durability, NULL};
    char *mnt;
    keel_client *c;
    int i, nacked = 0, rc = 0;
    char *reply = NULL;

    if (asprintf(&mnt, "%s/small", dir) < 0 || mkdir(mnt, 0700) != 0)
        abort();
    if (unshare(CLONE_NEWNS) != 0 ||
        mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", mnt, "tmpfs", 0, "size=8m") != 0) {
        printf("disk really full: cannot mount a tmpfs (%s): not run\n",
               strerror(errno));
        free(mnt);
        return;
    }
    free(data);
    if (asprintf(&data, "%s/data", mnt) < 0)
        abort();
    start_node(0, extra);
    c = conn();
    for (i = 0; i < MAXPUT && rc == 0; i++) {
        size_t mlen;
        char *m = put_msg(i, vlen, &mlen);

        rc = call(c, "kv", "full", m, mlen, &reply, NULL);
        free(m);
        ck_assert_msg(rc == 0 || rc == KEEL_ENOSPC, "put %d: %s (%s)", i,
                      keel_err_name(rc), reply ? reply : "");
        if (rc == 0)
            nacked++;
        free(reply);
        reply = NULL;
    }
    ck_assert_msg(rc == KEEL_ENOSPC, "no ENOSPC after %d puts of 8 KiB on "
                  "an 8 MiB disk", i);
    ck_assert_int_gt(nacked, 0);
    printf("disk really full (%s): %d puts acknowledged\n", durability,
           nacked);
    ping(c);
    kv_expect(c, "full", 0, vlen);
    kv_expect(c, "full", nacked - 1, vlen);
    keel_client_close(c);
    stop_node_clean();

    /* Still full: the node starts, and everything acknowledged is there. */
    start_node(node.port, extra);
    c = conn();
    for (i = 0; i < nacked; i++)
        kv_expect(c, "full", i, vlen);
    keel_client_close(c);
    /* And once more after a kill -9 on the full disk. */
    ck_assert_int_eq(tu_keeld_stop(&node, SIGKILL), 128 + SIGKILL);
    start_node(node.port, extra);
    c = conn();
    for (i = 0; i < nacked; i++)
        kv_expect(c, "full", i, vlen);
    keel_client_close(c);
    stop_node_clean();
    tu_rmrf(data);
    ck_assert_int_eq(umount(mnt), 0);
    free(mnt);
}

START_TEST(disk_really_full)
{
    disk_really_full_case("fsync");
}
END_TEST

START_TEST(disk_really_full_none)
{
    disk_really_full_case("none");
}
END_TEST

/* -------------------------------------------------------- 7 map growth */

START_TEST(map_grows)
{
    enum { ACTORS = 8, PER = 80, N = ACTORS * PER };
    static const char *const extra[] = {"--map-size", "65536", NULL};
    const size_t vlen = 8192;
    const unsigned long long total = (unsigned long long)N * vlen;
    static unsigned char seen[N];
    keel_client *c;
    keel_frame f;
    char actor[16], *out = NULL;
    unsigned long long map1, map2;
    int i, rc;

    start_node(0, extra);
    c = conn();
    /* 640 puts of 8 KiB (5 MiB) over 8 kv actors, all in flight at once;
     * request id i + 1 is put i, of key i on actor i % ACTORS. */
    for (i = 0; i < N; i++) {
        size_t mlen;
        char *m = put_msg(i, vlen, &mlen);
        snprintf(actor, sizeof actor, "m%d", i % ACTORS);
        ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_CALL,
                                           (uint64_t)i + 1, "kv", actor,
                                           strlen(actor), m, mlen),
                         0);
        free(m);
    }
    ck_assert_int_eq(keel_client_flush(c), 0);
    memset(seen, 0, sizeof seen);
    for (i = 0; i < N; i++) {
        uint64_t k;
        rc = keel_client_recv(c, &f);
        ck_assert_msg(rc == 0, "reply %d of %d: %s", i, N, keel_err_name(rc));
        k = f.request_id - 1;
        ck_assert_msg(k < N && !seen[k], "unexpected request id %llu",
                      (unsigned long long)f.request_id);
        seen[k] = 1;
        if (f.kind == KEEL_FRAME_ERROR) {
            const char *m;
            size_t ml;
            int code = keel_error_body_parse(f.body, f.body_len, &m, &ml);
            ck_abort_msg("put %llu refused: %s (%.*s)", (unsigned long long)k,
                         keel_err_name(code), (int)ml, m);
        }
        ck_assert_int_eq(f.kind, KEEL_FRAME_REPLY);
        ck_assert_msg(f.body_len == 2 && memcmp(f.body, "OK", 2) == 0,
                      "put reply is not OK");
    }
    keel_client_close(c);

    ck_assert_int_eq(tu_keel(node.addr, &out, NULL, "stat", NULL), 0);
    map1 = stat_field(out, "map_size");
    free(out);
    out = NULL;
    printf("map growth: map_size %llu after %llu bytes of values\n", map1,
           total);
    ck_assert_msg(map1 > 65536 && map1 >= total,
                  "map_size %llu: no growth past 65536 for %llu bytes",
                  map1, total);
    stop_node_clean();

    start_node(node.port, extra);
    ck_assert_int_eq(tu_keel(node.addr, &out, NULL, "stat", NULL), 0);
    map2 = stat_field(out, "map_size");
    free(out);
    ck_assert_msg(map2 >= total, "map_size %llu after restart", map2);

    c = conn();
    for (i = 0; i < N; i++) {
        char msg[32];
        snprintf(actor, sizeof actor, "m%d", i % ACTORS);
        snprintf(msg, sizeof msg, "get k%05d", i);
        ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_CALL,
                                           (uint64_t)i + 1, "kv", actor,
                                           strlen(actor), msg, strlen(msg)),
                         0);
    }
    ck_assert_int_eq(keel_client_flush(c), 0);
    memset(seen, 0, sizeof seen);
    {
        char *want = malloc(vlen);
        ck_assert_ptr_nonnull(want);
        for (i = 0; i < N; i++) {
            uint64_t k;
            rc = keel_client_recv(c, &f);
            ck_assert_msg(rc == 0, "get %d of %d: %s", i, N,
                          keel_err_name(rc));
            k = f.request_id - 1;
            ck_assert_msg(k < N && !seen[k], "unexpected request id %llu",
                          (unsigned long long)f.request_id);
            seen[k] = 1;
            ck_assert_msg(f.kind == KEEL_FRAME_REPLY, "get k%05llu: kind %d",
                          (unsigned long long)k, f.kind);
            make_value(want, vlen, (int)k);
            ck_assert_msg(f.body_len == vlen &&
                              memcmp(f.body, want, vlen) == 0,
                          "get k%05llu: wrong value after restart",
                          (unsigned long long)k);
        }
        free(want);
    }
    keel_client_close(c);
    stop_node_clean();
}
END_TEST

/* ------------------------------------------------- 8 unusable data dir */

START_TEST(data_dir_unusable)
{
    char *file, *under, *bin = tu_bin("keeld"), *out = NULL, *err = NULL;
    const char *argv[8];
    FILE *f;
    double t0;
    int rc, v;

    if (asprintf(&file, "%s/plainfile", dir) < 0 ||
        asprintf(&under, "%s/plainfile/sub", dir) < 0)
        abort();
    f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fputs("not a directory\n", f);
    fclose(f);

    for (v = 0; v < 2; v++) {
        const char *path = v == 0 ? file : under;
        argv[0] = bin;
        argv[1] = "--data";
        argv[2] = path;
        argv[3] = "--listen";
        argv[4] = "127.0.0.1:0";
        argv[5] = NULL;
        t0 = now_s();
        rc = tu_run(argv, &out, &err);
        ck_assert_msg(rc > 0 && rc < 128,
                      "keeld --data %s: exit %d, want a non-zero exit code; "
                      "stderr: %s", path, rc, err);
        ck_assert_msg(now_s() - t0 < 20, "keeld took %.1f s to give up",
                      now_s() - t0);
        ck_assert_msg(strstr(err, path) != NULL,
                      "keeld --data %s: message does not name the path: %s",
                      path, err);
        ck_assert_msg(strstr(err, "ready on port") == NULL,
                      "keeld claims to be ready: %s", err);
        free(out);
        free(err);
        out = err = NULL;
    }
    /* The file is untouched. */
    {
        char *text = tu_read_file(file);
        ck_assert_ptr_nonnull(text);
        ck_assert_str_eq(text, "not a directory\n");
        free(text);
    }
    free(file);
    free(under);
    free(bin);
}
END_TEST

/* --------------------------------------------- 9 SIGTERM under load */

START_TEST(sigterm_under_load)
{
    enum { WINDOW = 64, TERM_AFTER = 300 };
    keel_client *c;
    keel_frame f;
    long attempted = 0, acked = 0, stopping = 0, other = 0;
    int inflight = 0, can_send = 1, term_sent = 0, rc, exit_rc;
    uint64_t rid = 1;
    double deadline;
    long long v;
    char *log;

    start_node(0, NULL);
    c = conn();
    deadline = now_s() + 60;
    for (;;) {
        ck_assert_msg(now_s() < deadline, "load did not end in 60 s");
        if (can_send) {
            while (inflight < WINDOW) {
                ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_CALL, rid++,
                                                   "counter", "term", 4,
                                                   "incr", 4),
                                 0);
                attempted++;
                inflight++;
            }
            if (keel_client_flush(c) != 0)
                can_send = 0;
        }
        rc = keel_client_recv(c, &f);
        if (rc == KEEL_ECONN)
            break;
        ck_assert_msg(rc == 0, "recv: %s", keel_err_name(rc));
        inflight--;
        if (f.kind == KEEL_FRAME_REPLY) {
            acked++;
        } else {
            const char *m;
            size_t ml;
            int code;
            ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
            code = keel_error_body_parse(f.body, f.body_len, &m, &ml);
            if (code == KEEL_ESTOPPING) {
                stopping++;
            } else {
                other++;
                fprintf(stderr, "sigterm: error %s (%.*s)\n",
                        keel_err_name(code), (int)ml, m);
            }
            can_send = 0;
        }
        if (!term_sent && acked >= TERM_AFTER) {
            ck_assert_int_eq(kill(node.pid, SIGTERM), 0);
            term_sent = 1;
        }
    }
    keel_client_close(c);
    ck_assert(term_sent);
    /* The node closed the connection while stopping; a second SIGTERM now
     * (people repeat it) must not disturb the exit. */
    exit_rc = tu_keeld_stop(&node, SIGTERM);
    log = exit_rc != 0 ? tu_keeld_log(&node) : NULL;
    ck_assert_msg(exit_rc == 0, "keeld exit code %d after SIGTERM; log:\n%s",
                  exit_rc, log ? log : "");
    free(log);
    printf("sigterm: attempted %ld, acked %ld, ESTOPPING %ld\n", attempted,
           acked, stopping);
    ck_assert_msg(other == 0, "%ld errors other than ESTOPPING", other);

    start_node(node.port, NULL);
    c = conn();
    v = counter_get(c, "term");
    keel_client_close(c);
    ck_assert_msg(v >= acked && v <= attempted,
                  "counter %lld after restart; acked %ld, attempted %ld", v,
                  acked, attempted);
    stop_node_clean();
}
END_TEST

/* ---------------------------------------------------- 10 damaged log */

/* The current run of the node's log (records from the start of one
 * generation with consecutive sequence numbers; wal.h): offsets into
 * offs, how many returned; *end where the last one ends. */
static int wal_run(const char *wal, long *offs, int max, long *end)
{
    FILE *f = fopen(wal, "rb");
    unsigned char h[56]; /* a record's header ("KWL3") */
    unsigned long long gen0 = 0, lsn0 = 0;
    long at = 4096; /* after the log's header */
    int n = 0;

    ck_assert_ptr_nonnull(f);
    while (n < max && fseek(f, at, SEEK_SET) == 0 &&
           fread(h, 1, sizeof h, f) == sizeof h &&
           memcmp(h + 8, "3LWK", 4) == 0) {
        unsigned long long lsn, len, gen;

        memcpy(&lsn, h + 16, 8);
        memcpy(&len, h + 24, 8);
        memcpy(&gen, h + 32, 8);
        if (n > 0 && (gen != gen0 || lsn != lsn0 + (unsigned long long)n))
            break;
        if (n == 0) {
            gen0 = gen;
            lsn0 = lsn;
        }
        offs[n++] = at;
        at += 56 + (long)len;
    }
    fclose(f);
    *end = at;
    return n;
}

/* One flipped byte in the middle of the log: the node must not start
 * with the records after it silently gone (they were acknowledged). It
 * refuses, naming the file and offset; --recover-to-last-good starts it
 * at the last good record and says what it dropped. */
START_TEST(damaged_log_refused_then_recovered)
{
    enum { ROUNDS = 10, PER = 200 };
    char *bin = tu_bin("keeld"), *wal, *out = NULL, *err = NULL, *log;
    const char *argv[8];
    static const char *const recover[] = {"--recover-to-last-good", NULL};
    long offs[4096], acked = 0, v, end = 0;
    char want[160];
    keel_client *c;
    int n = 0, rc;
    FILE *f;

    if (asprintf(&wal, "%s/keel.wal", data) < 0)
        abort();
    /* Counts, then kill -9; again while the log's current run is short
     * (a checkpoint by the clock starts it again). */
    for (int round = 0; round < ROUNDS && n < 20; round++) {
        start_node(node.port, NULL);
        c = conn();
        for (int i = 0; i < PER; i++) {
            snprintf(want, sizeof want, "%ld", ++acked);
            call_expect(c, "counter", "c", "incr", want);
        }
        keel_client_close(c);
        ck_assert_int_eq(tu_keeld_stop(&node, SIGKILL), 128 + SIGKILL);
        n = wal_run(wal, offs, 4096, &end);
    }
    ck_assert_msg(n >= 20, "the log's run stays short: %d records", n);
    f = fopen(wal, "r+b");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, offs[n / 2] + 60, SEEK_SET), 0);
    rc = fgetc(f);
    ck_assert_int_eq(fseek(f, offs[n / 2] + 60, SEEK_SET), 0);
    fputc(rc ^ 0x10, f);
    fclose(f);

    argv[0] = bin;
    argv[1] = "--data";
    argv[2] = data;
    argv[3] = "--listen";
    argv[4] = "127.0.0.1:0";
    argv[5] = NULL;
    for (int i = 0; i < 2; i++) { /* refusing changed nothing */
        rc = tu_run(argv, &out, &err);
        ck_assert_msg(rc > 0 && rc < 128, "keeld on a damaged log: exit %d; "
                      "stderr: %s", rc, err);
        snprintf(want, sizeof want, "keel.wal is damaged at offset %ld",
                 offs[n / 2]);
        ck_assert_msg(strstr(err, want) != NULL &&
                          strstr(err, "--recover-to-last-good") != NULL &&
                          strstr(err, "ready on port") == NULL,
                      "keeld on a damaged log says: %s", err);
        free(out);
        free(err);
        out = err = NULL;
    }

    start_node(node.port, recover);
    log = tu_keeld_log(&node);
    ck_assert_msg(strstr(log, "recovering to the last good record") != NULL,
                  "the node does not say what it dropped:\n%s", log);
    /* The bytes it names are the dropped records', not the zeros the log
     * holds ahead of its end. */
    snprintf(want, sizeof want, "(%ld bytes from offset %ld)",
             end - offs[n / 2], offs[n / 2]);
    ck_assert_msg(strstr(log, want) != NULL, "no '%s' in:\n%s", want, log);
    free(log);
    c = conn();
    v = counter_get(c, "c");
    /* Every record of the run from the damaged one on is dropped; those
     * before it are kept. */
    ck_assert_msg(v < acked && v >= acked - (n - n / 2) - 2,
                  "after recovery the counter is %ld (acknowledged %ld, "
                  "%d records in the run, damage in record %d)",
                  v, acked, n, n / 2 + 1);
    snprintf(want, sizeof want, "%ld", v + 1);
    call_expect(c, "counter", "c", "incr", want);
    keel_client_close(c);
    stop_node_clean();
    /* What recovery kept is the node's state from now on. */
    start_node(node.port, NULL);
    c = conn();
    ck_assert_int_eq(counter_get(c, "c"), v + 1);
    keel_client_close(c);
    stop_node_clean();
    printf("damaged log: %ld acknowledged, %ld kept by recovery\n", acked, v);
    free(wal);
    free(bin);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("faults");

    /* Summary lines survive a test that fails (and _exits) later. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, malformed_frame_closes_connection);
    tcase_add_test(tc, oversized_frame_refused);
    tcase_add_test(tc, truncated_frame_then_disconnect);
    tcase_add_test(tc, bad_requests_keep_connection);
    tcase_add_test(tc, client_disconnects_mid_request);
    tcase_add_test(tc, disk_full);
    tcase_add_test(tc, disk_full_none);
    tcase_add_test(tc, disk_really_full);
    tcase_add_test(tc, disk_really_full_none);
    tcase_add_test(tc, map_grows);
    tcase_add_test(tc, data_dir_unusable);
    tcase_add_test(tc, sigterm_under_load);
    tcase_add_test(tc, damaged_log_refused_then_recovered);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
