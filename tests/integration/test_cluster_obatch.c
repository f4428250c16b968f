/* Outbox messages to another node in batches (runtime/obatch.c, the
 * OBATCH frame): real ZooKeeper, two keeld nodes with one replica per
 * unit and outbox_plugin_bank.so loaded.
 *
 * many_senders_batched: "acct" senders all owned by n0 transfer, many at
 * once, to "acct" receivers all owned by n1. Every credit arrives exactly
 * once and in order per pair (the plugin counts duplicates and gaps), and
 * the frames that carried them from n0 (outbox_frames) are fewer than the
 * messages n0 sent: senders delivering in the same loop round shared
 * frames. batches_split_at_max_frame: the same with a max frame size
 * that holds fewer messages than deliver at once.
 *
 * hostile_batches: OBATCH frames written by hand to n1, as member n0
 * would and as a client would. Malformed ones (truncated, counts of 0 or
 * over the most, an item length that overflows, a count that does not
 * match the items, trailing bytes, unknown flags) are refused with
 * EMALFORMED, a client's with EDENIED, and the connection and node go on
 * (PING answered on the same connection); a good one gets one REPLY with
 * each message's own outcome (a success, an unknown type), and the same
 * message again is answered without running twice. Every wait is
 * bounded; the checks are about outcomes, not durations. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clmap.h"
#include "cluster.h"
#include "clplug.h"
#include "keel.h"
#include "proc.h"
#include "rawconn.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define SENDERS 24
#define RECEIVERS 12
#define ROUNDS 6
#define CLIENT_MS 20000

static tu_cluster fx;
static char *plugin;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    plugin = tu_clplug_setup(&fx, "clobatch", "obb", "outbox_plugin_bank.so");
}

static void teardown(void)
{
    tu_clplug_teardown(&fx, plugin);
}

/* Which node owns acct/id, by INFO "where" on c: 0 or 1, -1 when the
 * answer names neither. */
static int owner_of(keel_client *c, const char *id)
{
    uint8_t body[64];
    keel_frame f;
    size_t len = (size_t)snprintf((char *)body, sizeof body, "where%cacct%c%s",
                                  0, 0, id);
    uint8_t frame[KEEL_FRAME_HEADER + sizeof body];
    const char *p;
    char text[512];

    keel_frame_header(frame, KEEL_FRAME_INFO, 1, len);
    memcpy(frame + KEEL_FRAME_HEADER, body, len);
    if (keel_client_queue_raw(c, frame, KEEL_FRAME_HEADER + len) != 0 ||
        keel_client_flush(c) != 0 || keel_client_recv(c, &f) != 0 ||
        f.kind != KEEL_FRAME_REPLY || f.body_len >= sizeof text)
        return -1;
    memcpy(text, f.body, f.body_len);
    text[f.body_len] = '\0';
    if ((p = strstr(text, "\nowner ")) == NULL)
        return -1;
    p += strlen("\nowner ");
    while (*p == ' ')
        p++;
    return strncmp(p, "n0", 2) == 0 ? 0 : strncmp(p, "n1", 2) == 0 ? 1 : -1;
}

/* Fills ids (cap each) with want ids "<prefix><k>" owned by node. */
static void pick(keel_client *c, const char *prefix, int node, int want,
                 char ids[][16])
{
    int k, got = 0;

    for (k = 0; k < 2000 && got < want; k++) {
        char id[16];
        snprintf(id, sizeof id, "%s%d", prefix, k);
        if (owner_of(c, id) == node)
            snprintf(ids[got++], 16, "%s", id);
    }
    CHECK(got == want, "found %d of %d ids owned by n%d", got, want, node);
}

/* "get" of acct/id through n0: balance sent credits dups gaps. */
static int acct_get(const char *id, long v[5])
{
    uint8_t key[KEEL_REQUEST_KEY_LEN];
    char out[128];

    ck_assert_int_eq(keel_client_new_key(key), 0);
    if (tu_clplug_call_keyed(&fx, 0, key, "acct", id, "get", out,
                             sizeof out) != 0)
        return -1;
    return sscanf(out, "%ld %ld %ld %ld %ld", &v[0], &v[1], &v[2], &v[3],
                  &v[4]) == 5
               ? 0
               : -1;
}

/* Runs the transfers on a fresh two-node cluster whose nodes get extra
 * (NULL-terminated, may be empty) and checks that every credit arrived
 * once, in order. Returns n0's outbox_frames; *sent gets its
 * outbox_sent. */
static long run_transfers(const char *const *extra, long *sent_out)
{
    const char *common[8] = {"--load", plugin};
    static char snd[SENDERS][16], rcv[RECEIVERS][16];
    static uint8_t keys[SENDERS * ROUNDS][KEEL_REQUEST_KEY_LEN];
    static char msgs[SENDERS * ROUNDS][64];
    static int ok[SENDERS * ROUNDS];
    const long want = (long)SENDERS * ROUNDS;
    long credits = 0, dups = 0, gaps = 0, sent = 0, prev = -1, frames, out;
    keel_client *c;
    int k, r, tries, quiet = 0, answered = 0;

    for (k = 0; extra[k] != NULL && k < 5; k++)
        common[2 + k] = extra[k];
    memset(ok, 0, sizeof ok);
    tu_cluster_start_together(&fx, 2, 1, common, NULL);
    CHECK(tu_map_wait_settled(&fx, 1), "the map did not settle");
    CHECK(keel_client_connect(fx.nodes[0].addr, CLIENT_MS, &c) == 0,
          "no connection to n0");
    pick(c, "s", 0, SENDERS, snd);
    pick(c, "r", 1, RECEIVERS, rcv);
    /* Every transfer on one connection, pipelined: their turns commit
     * together, and their senders deliver together. */
    for (k = 0; k < SENDERS * ROUNDS; k++) {
        int s = k % SENDERS, round = k / SENDERS;
        snprintf(msgs[k], sizeof msgs[k], "xfer %s 1",
                 rcv[(s + round) % RECEIVERS]);
        ck_assert_int_eq(keel_client_new_key(keys[k]), 0);
        ck_assert_int_eq(keel_client_queue_keyed(c, KEEL_FRAME_CALL,
                                                 (uint64_t)k + 1, keys[k],
                                                 "acct", snd[s],
                                                 strlen(snd[s]), msgs[k],
                                                 strlen(msgs[k])),
                         0);
    }
    if (keel_client_flush(c) == 0) {
        while (answered < SENDERS * ROUNDS) {
            keel_frame f;
            if (keel_client_recv(c, &f) != 0)
                break;
            if (f.request_id >= 1 && f.request_id <= SENDERS * ROUNDS &&
                f.kind == KEEL_FRAME_REPLY)
                ok[f.request_id - 1] = 1;
            answered++;
        }
    }
    keel_client_close(c);
    /* Whatever failed or went unanswered goes again with its key: it ran
     * once at most. */
    for (k = 0; k < SENDERS * ROUNDS; k++)
        if (!ok[k])
            CHECK(tu_clplug_call_keyed(&fx, 0, keys[k], "acct",
                                       snd[k % SENDERS], msgs[k], NULL,
                                       0) == 0,
                  "transfer %d failed", k);
    /* Quiet: every credit is in and the count stays. */
    for (tries = 0; tries < 120 && quiet < 2; tries++) {
        credits = dups = gaps = 0;
        for (r = 0; r < RECEIVERS; r++) {
            long v[5];
            CHECK(acct_get(rcv[r], v) == 0, "reading %s failed", rcv[r]);
            credits += v[2];
            dups += v[3];
            gaps += v[4];
        }
        quiet = credits >= want && credits == prev ? quiet + 1 : 0;
        prev = credits;
        if (quiet < 2)
            tu_sleep_ms(250);
    }
    for (k = 0; k < SENDERS; k++) {
        long v[5];
        CHECK(acct_get(snd[k], v) == 0, "reading %s failed", snd[k]);
        sent += v[1];
    }
    CHECK(sent == want, "the senders sent %ld transfers, not %ld", sent,
          want);
    CHECK(credits == want, "the receivers got %ld credits of %ld", credits,
          want);
    CHECK(dups == 0, "%ld credits were handled twice", dups);
    CHECK(gaps == 0, "%ld credits came out of order", gaps);
    frames = tu_keel_stat(fx.nodes[0].addr, "outbox_frames");
    out = tu_keel_stat(fx.nodes[0].addr, "outbox_sent");
    fprintf(stderr, "cluster obatch: %ld messages, n0 outbox_sent %ld in "
                    "%ld frame(s); n1 outbox_dropped %ld\n",
            want, out, frames,
            tu_keel_stat(fx.nodes[1].addr, "outbox_dropped"));
    CHECK(out >= want, "n0 sent %ld outbox messages, fewer than %ld", out,
          want);
    CHECK(frames > 0 && frames < out,
          "n0 carried %ld outbox messages in %ld frames: no batching", out,
          frames);
    CHECK(tu_keel_stat(fx.nodes[0].addr, "outbox_dead") == 0,
          "n0 kept dead letters");
    CHECK(tu_keel_stat(fx.nodes[1].addr, "outbox_frames") == 0,
          "n1 sent outbox frames, but its actors send nothing");
    /* Every credit is in: n0's senders drain (their last retirements
     * may still be committing). */
    for (tries = 0; tries < 100; tries++) {
        if (tu_keel_stat(fx.nodes[0].addr, "outbox_senders") == 0)
            break;
        tu_sleep_ms(100);
    }
    CHECK(tu_keel_stat(fx.nodes[0].addr, "outbox_senders") == 0,
          "n0 still counts %ld senders delivering, all delivered",
          tu_keel_stat(fx.nodes[0].addr, "outbox_senders"));
    *sent_out = out;
    return frames;
}

START_TEST(many_senders_batched)
{
    const char *none[] = {NULL};
    long sent;

    (void)run_transfers(none, &sent);
}
END_TEST

/* With --max-frame 4096 a frame holds at most 15 messages (each answer
 * may take 262 bytes: (4096 - 18) / 262), fewer than the 24 senders that
 * deliver at once: batches are split, and every message still arrives
 * once. */
START_TEST(batches_split_at_max_frame)
{
    const char *small[] = {"--max-frame", "4096", NULL};
    long sent, frames = run_transfers(small, &sent);

    CHECK(frames >= (sent + 14) / 15,
          "%ld messages in %ld frames: a frame carried more than 15", sent,
          frames);
}
END_TEST

/* ---------------------------------------------------------- hostile */

static int read_answer(int fd, tu_rframe *f)
{
    if (tu_read_frame(fd, f, 10000) != 1)
        return -1;
    return f->kind;
}

/* Sends an OBATCH frame with id, flags and body. */
static void send_obatch(int fd, uint64_t id, uint8_t flags,
                        const uint8_t *body, size_t len)
{
    static uint8_t frame[KEEL_FRAME_HEADER + 8192];

    ck_assert_uint_le(len, sizeof frame - KEEL_FRAME_HEADER);
    keel_frame_header(frame, KEEL_FRAME_OBATCH, id, len);
    frame[5] = flags;
    if (len > 0)
        memcpy(frame + KEEL_FRAME_HEADER, body, len);
    ck_assert_int_eq(tu_send_all(fd, frame, KEEL_FRAME_HEADER + len), 0);
}

/* An ERROR with code for request id, within 10 s. */
static void expect_error(int fd, uint64_t id, int code, const char *what)
{
    tu_rframe f;

    CHECK(read_answer(fd, &f) == KEEL_FRAME_ERROR && f.id == id &&
              f.code == code,
          "%s: answered kind %u id %llu code %d, not ERROR %d", what,
          f.kind, (unsigned long long)f.id, f.code, code);
}

static void expect_pong(int fd, uint64_t id)
{
    uint8_t frame[KEEL_FRAME_HEADER + 2];
    tu_rframe f;

    keel_frame_header(frame, KEEL_FRAME_PING, id, 2);
    memcpy(frame + KEEL_FRAME_HEADER, "hi", 2);
    ck_assert_int_eq(tu_send_all(fd, frame, sizeof frame), 0);
    CHECK(read_answer(fd, &f) == KEEL_FRAME_PONG && f.id == id,
          "no PONG after the hostile frames");
}

/* One item: acct "s" seq 1 to (type, "r") with msg. */
static size_t item(uint8_t *p, const char *type, const char *msg)
{
    return keel_obatch_item_encode(p, 0, 1, "acct", 4, "hs", 2, type,
                                   strlen(type), "hr", 2, msg, strlen(msg));
}

START_TEST(hostile_batches)
{
    uint8_t body[4096];
    size_t len, one;
    tu_rframe f;
    int fd, cfd;
    long bad0, v[5];

    CHECK(tu_cluster_start_node(&fx, 0, 0, "--load", plugin, NULL) == 0,
          "n0 did not start");
    CHECK(tu_cluster_start_node(&fx, 1, 0, "--load", plugin, NULL) == 0,
          "n1 did not start");
    CHECK(tu_map_wait_settled(&fx, 1), "the map did not settle");
    bad0 = tu_keel_stat(fx.nodes[1].addr, "frames_bad");

    /* A client's batch: refused, none of it ran. */
    cfd = tu_raw_connect(fx.nodes[1].port);
    ck_assert_int_ge(cfd, 0);
    body[0] = 0;
    body[1] = 1;
    len = 2 + item(body + 2, "acct", "credit 5 x 1");
    send_obatch(cfd, 7, 0, body, len);
    expect_error(cfd, 7, KEEL_EDENIED, "a client's batch");
    expect_pong(cfd, 8);
    close(cfd);

    /* As member n0. */
    fd = tu_raw_connect(fx.nodes[1].port);
    ck_assert_int_ge(fd, 0);
    {
        uint8_t fr[KEEL_FRAME_HEADER + 7];
        keel_frame_header(fr, KEEL_FRAME_INFO, 1, 7);
        memcpy(fr + KEEL_FRAME_HEADER, "peer\0n0", 7);
        ck_assert_int_eq(tu_send_all(fd, fr, sizeof fr), 0);
        CHECK(read_answer(fd, &f) == KEEL_FRAME_REPLY, "peer claim refused");
    }
    /* Truncated: no count. */
    send_obatch(fd, 10, 0, body, 1);
    expect_error(fd, 10, KEEL_EMALFORMED, "a body of 1 byte");
    /* A count of 0, and one over the most. */
    body[0] = 0;
    body[1] = 0;
    send_obatch(fd, 11, 0, body, 2);
    expect_error(fd, 11, KEEL_EMALFORMED, "a count of 0");
    body[0] = (uint8_t)((KEEL_OBATCH_MAX + 1) >> 8);
    body[1] = (uint8_t)(KEEL_OBATCH_MAX + 1);
    one = item(body + 2, "acct", "credit 5 x 1");
    send_obatch(fd, 12, 0, body, 2 + one);
    expect_error(fd, 12, KEEL_EMALFORMED, "a count over the most");
    /* A count of 2 over one item; a count of 1 with a byte after it. */
    body[0] = 0;
    body[1] = 2;
    send_obatch(fd, 13, 0, body, 2 + one);
    expect_error(fd, 13, KEEL_EMALFORMED, "a count over the items");
    body[1] = 1;
    body[2 + one] = 0;
    send_obatch(fd, 14, 0, body, 2 + one + 1);
    expect_error(fd, 14, KEEL_EMALFORMED, "a trailing byte");
    /* An item length that overflows. */
    {
        uint8_t save[4];
        memcpy(save, body + 3, 4);
        memset(body + 3, 0xff, 4);
        send_obatch(fd, 15, 0, body, 2 + one);
        expect_error(fd, 15, KEEL_EMALFORMED, "an item length of 2^32-1");
        memcpy(body + 3, save, 4);
    }
    /* Unknown flags on the frame, then on the item. */
    send_obatch(fd, 16, 0x80, body, 2 + one);
    expect_error(fd, 16, KEEL_EMALFORMED, "frame flag bit 7");
    body[2] = 0x40;
    send_obatch(fd, 17, 0, body, 2 + one);
    expect_error(fd, 17, KEEL_EMALFORMED, "item flag bit 6");
    body[2] = 0;
    /* A budget that is used up: none of it runs. */
    {
        uint8_t b2[4 + sizeof body];
        memset(b2, 0, 4);
        memcpy(b2 + 4, body, 2 + one);
        send_obatch(fd, 18, KEEL_FLAG_DEADLINE, b2, 4 + 2 + one);
        expect_error(fd, 18, KEEL_EDEADLINE, "a budget of 0");
        /* A budget that is cut short. */
        send_obatch(fd, 19, KEEL_FLAG_DEADLINE, b2, 3);
        expect_error(fd, 19, KEEL_EMALFORMED, "a truncated budget");
    }
    /* The connection and the node go on. */
    expect_pong(fd, 20);
    CHECK(tu_keel_stat(fx.nodes[1].addr, "frames_bad") >= bad0 + 10,
          "the malformed batches were not counted as bad frames");

    /* A good batch: the credit runs, the unknown type is its own error. */
    body[0] = 0;
    body[1] = 2;
    len = 2 + item(body + 2, "acct", "credit 5 x 1");
    len += item(body + len, "nosuch", "hello");
    send_obatch(fd, 30, 0, body, len);
    CHECK(read_answer(fd, &f) == KEEL_FRAME_REPLY && f.id == 30,
          "a good batch was answered kind %u", f.kind);
    {
        const uint8_t *p = f.body, *d;
        size_t left = f.len, dl;
        unsigned count;
        int st0, st1;
        CHECK(keel_obatch_results_parse(&p, &left, &count) == 0 &&
                  count == 2 &&
                  keel_obatch_result_next(&p, &left, &st0, &d, &dl) == 0 &&
                  keel_obatch_result_next(&p, &left, &st1, &d, &dl) == 0 &&
                  left == 0,
              "the answer to a good batch does not read");
        CHECK(st0 == 0, "the credit failed: %d", st0);
        char why[300];
        snprintf(why, sizeof why, "%.*s", (int)dl, (const char *)d);
        CHECK(st1 == KEEL_ENOTYPE && strstr(why, "nosuch") != NULL,
              "the unknown type got %d '%s'", st1, why);
    }
    /* The same message again (a resend): answered, not run twice. */
    len = 2 + item(body + 2, "acct", "credit 5 x 1");
    body[1] = 1;
    send_obatch(fd, 31, 0, body, len);
    CHECK(read_answer(fd, &f) == KEEL_FRAME_REPLY && f.id == 31 &&
              f.len == 2 + KEEL_OBATCH_RESULT_HDR && f.body[2] == 0 &&
              f.body[3] == 0,
          "the resend was not answered with a success");
    CHECK(acct_get("hr", v) == 0 && v[0] == 5 && v[2] == 1,
          "acct hr: balance %ld after %ld credits, not 5 after 1", v[0],
          v[2]);
    close(fd);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_obatch");
    TCase *tc = tcase_create("cluster_obatch");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, many_senders_batched);
    tcase_add_test(tc, batches_split_at_max_frame);
    tcase_add_test(tc, hostile_batches);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
