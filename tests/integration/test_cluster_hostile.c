/* A connection that streams a unit (XFER) and never finishes cannot make
 * a cluster node hold without limit what it sent: the unfinished streams
 * of one connection hold at most --max-unit-stream, and they are let go
 * when the connection closes. Real ZooKeeper, two keeld; the stream is
 * aimed at units the second node received when it joined, which it
 * accepts again at that epoch (a sender that missed the answer repeats
 * it). What is asserted is answers and resident memory. Every wait is
 * bounded. */
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
#include <sys/socket.h>
#include <unistd.h>

#include "keel.h"
#include "cluster.h"
#include "proc.h"
#include "rawconn.h"
#include "runtime/proto.h"
#include "testutil.h"

static tu_cluster cl;

static void setup(void)
{
    tu_cluster_setup(&cl, "clhostile", "hostile");
    cl.shards = 16;
}

static void teardown(void)
{
    tu_cluster_teardown(&cl, SIGTERM);
}

/* Reads one answer: its kind, and for an ERROR the KEEL_E* code. -1
 * when none comes (10 s). */
static int read_answer(int fd, int *code)
{
    tu_rframe f;

    if (tu_read_frame(fd, &f, 10000) != 1)
        return -1;
    *code = f.code;
    return f.kind;
}

/* The first frame a node sends on its connections to another: here as
 * member n0 would, to n1. */
static void say_peer(int fd)
{
    uint8_t f[KEEL_FRAME_HEADER + 7];
    int code;

    keel_frame_header(f, KEEL_FRAME_INFO, 1, 7);
    memcpy(f + KEEL_FRAME_HEADER, "peer\0n0", 7);
    ck_assert_int_eq(tu_send_all(fd, f, sizeof f), 0);
    ck_assert_int_ge(read_answer(fd, &code), 0);
}

#define REC_VALUE (900u << 10)

/* Sends XFER frame seq of the default capability's unit (shard, epoch),
 * not the last, holding one record of REC_VALUE bytes. */
static int send_xfer(int fd, uint32_t shard, uint64_t epoch, uint32_t seq)
{
    static uint8_t *frame;
    static const char key[] = "hostile-key";
    size_t klen = sizeof key - 1, hdr = 1 + 2 + 8 + 4 + 1;
    size_t body = hdr + 2 + klen + 8 + 4 + REC_VALUE;
    uint8_t *p;
    int i;

    if (frame == NULL && (frame = calloc(1, KEEL_FRAME_HEADER + body)) == NULL)
        return -1;
    keel_frame_header(frame, KEEL_FRAME_XFER, 100 + (uint64_t)seq, body);
    p = frame + KEEL_FRAME_HEADER;
    p[0] = 0; /* the default capability: "" */
    p[1] = (uint8_t)(shard >> 8);
    p[2] = (uint8_t)shard;
    for (i = 0; i < 8; i++)
        p[3 + i] = (uint8_t)(epoch >> (56 - 8 * i));
    for (i = 0; i < 4; i++)
        p[11 + i] = (uint8_t)(seq >> (24 - 8 * i));
    p[15] = 0; /* not the last frame */
    p += hdr;
    p[0] = 0;
    p[1] = (uint8_t)klen;
    memcpy(p + 2, key, klen);
    memset(p + 2 + klen, 0, 8);
    p[2 + klen + 8] = (uint8_t)(REC_VALUE >> 24);
    p[2 + klen + 9] = (uint8_t)(REC_VALUE >> 16);
    p[2 + klen + 10] = (uint8_t)(REC_VALUE >> 8);
    p[2 + klen + 11] = (uint8_t)REC_VALUE;
    return tu_send_all(fd, frame, KEEL_FRAME_HEADER + body);
}

/* The units `node` owns, settled (no target), as shard and epoch (into
 * shards and epochs when not NULL): how many, at most max. */
static int units_of(const char *node, uint32_t *shards, uint64_t *epochs,
                    int max)
{
    char *out = NULL, *line;
    int n = 0;

    if (tu_keel(cl.nodes[0].addr, &out, NULL, "shards", NULL) != 0) {
        free(out);
        return 0;
    }
    for (line = out; line != NULL && *line != '\0' && n < max;) {
        char *nl = strchr(line, '\n');
        unsigned shard;
        unsigned long long epoch;
        char owner[64];
        if (nl != NULL)
            *nl = '\0';
        if (sscanf(line, "unit (default) %u owner %63s epoch %llu", &shard,
                   owner, &epoch) == 3 &&
            strcmp(owner, node) == 0 && strstr(line, "target") == NULL) {
            if (shards != NULL)
                shards[n] = shard;
            if (epochs != NULL)
                epochs[n] = epoch;
            n++;
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    free(out);
    return n;
}

/* Starts a stream of the unit at the epoch the node accepts it again:
 * the epoch it was streamed at, the one `shards` shows or the one before
 * (the map may have moved on by one once the handoff finished). Returns
 * the answer's kind to frame 0, with *epoch set. */
static int start_stream(int fd, uint32_t shard, uint64_t *epoch)
{
    uint64_t e = *epoch;
    int k, kind = -1, code = 0;

    for (k = 0; k < 2 && e >= 1; k++, e--) {
        ck_assert_int_eq(send_xfer(fd, shard, e, 0), 0);
        kind = read_answer(fd, &code);
        if (kind == KEEL_FRAME_REPLY) {
            *epoch = e;
            break;
        }
    }
    return kind;
}

#define CAP_BYTES (8u << 20)
#define CAP_FRAMES 40 /* 36 MB: well over the cap */
#define OPEN_FRAMES 7 /* 6.3 MB: under the cap */

START_TEST(unfinished_streams_bounded)
{
    uint32_t shards[16];
    uint64_t epochs[16];
    int nunits = 0, tries, fd, i, u, replies = 0, toobig = 0, other = 0;
    long rss0, rss1, rss2;
    char cap[32];

    snprintf(cap, sizeof cap, "%u", CAP_BYTES);
    ck_assert_int_eq(tu_cluster_start_node(&cl, 0, 0, NULL), 0);
    /* n0 owns every unit before n1 starts (at most 30 s): n1 then gets
     * its units by streams. Started together, both could be in the
     * first placement, and n1 would have received nothing. */
    for (tries = 0; tries < 300 && units_of("n0", NULL, NULL, 16) < 16;
         tries++)
        tu_sleep_ms(100);
    TU_CLUSTER_CHECK(&cl, units_of("n0", NULL, NULL, 16) == 16,
                     "n0 owns %d of 16 units",
                     units_of("n0", NULL, NULL, 16));
    ck_assert_int_eq(tu_cluster_start_node(&cl, 1, 0, "--max-unit-stream",
                                           cap, NULL),
                     0);
    /* n1 received some units when it joined (at most 60 s). */
    for (tries = 0; tries < 600 && nunits < 5; tries++) {
        nunits = units_of("n1", shards, epochs, 16);
        if (nunits < 5)
            tu_sleep_ms(100);
    }
    TU_CLUSTER_CHECK(&cl, nunits >= 5, "n1 owns %d units", nunits);
    tu_sleep_ms(500); /* the handoffs' last answers are out */
    rss0 = tu_rss_kb(cl.nodes[1].pid);

    /* One stream that never ends: refused once over the cap. */
    fd = tu_raw_connect(cl.nodes[1].port);
    ck_assert_int_ge(fd, 0);
    say_peer(fd);
    TU_CLUSTER_CHECK(&cl, start_stream(fd, shards[0], &epochs[0]) ==
                              KEEL_FRAME_REPLY,
                     "unit %u: the stream was not accepted", shards[0]);
    replies = 1;
    for (i = 1; i < CAP_FRAMES; i++) {
        int kind, code;
        ck_assert_int_eq(send_xfer(fd, shards[0], epochs[0], (uint32_t)i), 0);
        kind = read_answer(fd, &code);
        ck_assert_int_ge(kind, 0);
        if (kind == KEEL_FRAME_REPLY)
            replies++;
        else if (kind == KEEL_FRAME_ERROR && code == KEEL_ETOOBIG)
            toobig++;
        else
            other = other != 0 ? other : code != 0 ? code : -1000 - kind;
    }
    rss1 = tu_rss_kb(cl.nodes[1].pid);
    close(fd);
    TU_CLUSTER_CHECK(&cl, toobig > 0 && replies <= (int)(CAP_BYTES / REC_VALUE),
                     "%d frames stored, %d refused ETOOBIG (other answer: %s, "
                     "unit %u epoch %llu)",
                     replies, toobig, keel_err_name(other), shards[0],
                     (unsigned long long)epochs[0]);
    TU_CLUSTER_CHECK(&cl, rss1 - rss0 < 24 * 1024,
                     "resident memory grew by %ld KiB", rss1 - rss0);

    /* Streams under the cap, left unfinished by connections that close:
     * what they sent is let go with them. */
    for (u = 1; u < 5; u++) {
        fd = tu_raw_connect(cl.nodes[1].port);
        ck_assert_int_ge(fd, 0);
        say_peer(fd);
        TU_CLUSTER_CHECK(&cl, start_stream(fd, shards[u], &epochs[u]) ==
                                  KEEL_FRAME_REPLY,
                         "unit %u: the stream was not accepted", shards[u]);
        for (i = 1; i < OPEN_FRAMES; i++) {
            int kind, code;
            ck_assert_int_eq(
                send_xfer(fd, shards[u], epochs[u], (uint32_t)i), 0);
            kind = read_answer(fd, &code);
            TU_CLUSTER_CHECK(&cl, kind == KEEL_FRAME_REPLY,
                             "unit %u frame %d: kind %d code %d", shards[u],
                             i, kind, code);
        }
        close(fd);
    }
    tu_sleep_ms(500); /* the closes reach the node */
    rss2 = tu_rss_kb(cl.nodes[1].pid);
    TU_CLUSTER_CHECK(&cl, rss2 - rss1 < 16 * 1024,
                     "resident memory grew by %ld KiB after 4 unfinished "
                     "streams of 6.3 MB closed",
                     rss2 - rss1);
    /* The node still serves. */
    ck_assert_int_ge(tu_cluster_counter(&cl, 1, "hostile", "incr"), 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_hostile");
    TCase *tc = tcase_create("hostile");
    const char *asan = getenv("ASAN_OPTIONS");
    char *env = NULL;

    /* Freed memory must be given back for resident memory to show it:
     * under AddressSanitizer, keep its quarantine of freed blocks small. */
    if (asprintf(&env, "%s%squarantine_size_mb=1", asan ? asan : "",
                 asan && *asan ? ":" : "") > 0)
        setenv("ASAN_OPTIONS", env, 1);
    free(env);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, unfinished_streams_bounded);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&cl, s);
}
