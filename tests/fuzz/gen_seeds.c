/* Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>)
 * from the real encoders, so that every seed is an input the code meets
 * in practice, or a known kind of damage of one:
 *
 *   build-test/fuzz_gen_seeds tests/fuzz/corpus
 *
 * Files are written (overwritten) under names that say what they hold;
 * files already there and not written here (inputs found by fuzzing and
 * kept) are left alone. Run it again when a format changes, and commit
 * what changed. docs/fuzzing.md tells the rest. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chaos/history.h"
#include "chaos/hwriter.h"
#include "coordinator/layout.h"
#include "coordinator/nodestate.h"
#include "coordinator/shardmap.h"
#include "coordinator/storecheck.h"
#include "fuzz.h"
#include "persistence/store.h"
#include "persistence/wal.h"
#include "recovery.h"
#include "runtime/dedup.h"
#include "runtime/proto.h"

static const char *out_dir;
static size_t written;

static void seed(const char *target, const char *name, const void *p,
                 size_t len)
{
    char *path;
    FILE *f;

    if (asprintf(&path, "%s/%s", out_dir, target) < 0)
        abort();
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    free(path);
    if (asprintf(&path, "%s/%s/%s", out_dir, target, name) < 0)
        abort();
    f = fopen(path, "wb");
    if (f == NULL || (len > 0 && fwrite(p, 1, len, f) != len) ||
        fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    free(path);
    written++;
}

/* A growable byte string for building inputs. */
typedef struct bytes {
    uint8_t p[1 << 19];
    size_t len;
} bytes;

static bytes B;

static void b_reset(void)
{
    B.len = 0;
}

static void b_put(const void *p, size_t n)
{
    FUZZ_CHECK(B.len + n <= sizeof B.p);
    if (n > 0)
        memcpy(B.p + B.len, p, n);
    B.len += n;
}

static void b_u8(unsigned v)
{
    uint8_t c = (uint8_t)v;
    b_put(&c, 1);
}

static void b_be(uint64_t v, int n)
{
    while (n-- > 0)
        b_u8((unsigned)(v >> (8 * n)) & 0xFF);
}

static void b_str(const char *s)
{
    b_put(s, strlen(s));
}

/* ------------------------------------------------------------- wire */

static void frame(uint8_t kind, uint8_t flags, uint64_t id, const void *body,
                  size_t len)
{
    uint8_t hdr[KEEL_FRAME_HEADER];

    keel_frame_header(hdr, kind, id, len);
    hdr[5] = flags;
    b_put(hdr, sizeof hdr);
    b_put(body, len);
}

/* A CALL/CAST frame with the prefixes its flags say. */
static void call_frame(uint8_t kind, uint8_t flags, uint64_t id,
                       const char *type, const char *aid, const char *msg)
{
    uint8_t body[1024];
    size_t n = 0;

    if (flags & KEEL_FLAG_DEADLINE) {
        keel_deadline_put(body, 5000);
        n += KEEL_DEADLINE_LEN;
    }
    if (flags & KEEL_FLAG_KEYED) {
        memcpy(body + n, "0123456789abcdef", KEEL_REQUEST_KEY_LEN);
        n += KEEL_REQUEST_KEY_LEN;
    }
    if (flags & KEEL_FLAG_FROM)
        n += keel_from_encode(body + n, 7, "order", 5, "o-17", 4);
    n += keel_call_body_encode(body + n, type, strlen(type), aid, strlen(aid),
                               msg, strlen(msg));
    frame(kind, flags, id, body, n);
}

static void xfer_frame(uint64_t id, const char *cap, uint16_t shard,
                       uint64_t epoch, uint32_t seq, int last, int nrecs)
{
    uint8_t body[4096], k[KEEL_KEY_MAX];
    size_t n = 0, cl = strlen(cap);
    int i, kl;

    body[n++] = (uint8_t)cl;
    memcpy(body + n, cap, cl);
    n += cl;
    body[n++] = (uint8_t)(shard >> 8);
    body[n++] = (uint8_t)shard;
    for (i = 7; i >= 0; i--)
        body[n++] = (uint8_t)(epoch >> (8 * i));
    for (i = 3; i >= 0; i--)
        body[n++] = (uint8_t)(seq >> (8 * i));
    body[n++] = (uint8_t)(last ? 1 : 0);
    for (i = 0; i < nrecs; i++) {
        char aid[16], val[32];
        int j, vl;
        snprintf(aid, sizeof aid, "c%d", i);
        vl = snprintf(val, sizeof val, "%d", 10 * i);
        kl = keel_key_encode(k, shard, "counter", 7, aid, strlen(aid),
                             i % 2 ? "entry" : NULL, i % 2 ? 5 : 0);
        FUZZ_CHECK(kl > 0);
        body[n++] = (uint8_t)(kl >> 8);
        body[n++] = (uint8_t)kl;
        memcpy(body + n, k, (size_t)kl);
        n += (size_t)kl;
        for (j = 7; j >= 0; j--)
            body[n++] = (uint8_t)((uint64_t)(i + 1) >> (8 * j));
        for (j = 3; j >= 0; j--)
            body[n++] = (uint8_t)((unsigned)vl >> (8 * j));
        memcpy(body + n, val, (size_t)vl);
        n += (size_t)vl;
    }
    frame(KEEL_FRAME_XFER, 0, id, body, n);
}

/* A REPL frame from n1 with a unit of puts and deletes and an empty
 * unit, and a REPLY acking both. */
static void repl_frames(uint64_t id)
{
    uint8_t body[512], k[KEEL_KEY_MAX];
    size_t n = 0;
    int kl = keel_key_encode(k, 3, "counter", 7, "c1", 2, NULL, 0);

    FUZZ_CHECK(kl > 0);
    n += keel_repl_head_encode(body, "n1", 2, 1700000000000000000ull, 2);
    n += keel_repl_unit_encode(body + n, "pay", 3, 3, 2, 7, 3);
    n += keel_repl_op_encode(body + n, KEEL_REPL_PUT, k, (size_t)kl, 5, "42",
                             2);
    n += keel_repl_op_encode(body + n, KEEL_REPL_DEL, k, (size_t)kl, 0, NULL,
                             0);
    n += keel_repl_op_encode(body + n, KEEL_REPL_DEL_PREFIX, k, 2, 0, NULL,
                             0);
    n += keel_repl_unit_encode(body + n, "", 0, 0, 1, 1, 0);
    frame(KEEL_FRAME_REPL, 0, id, body, n);
    /* A catch-up's first unit: the unit deleted whole, then a put. */
    n = keel_repl_head_encode(body, "n1", 2, 1700000000000000000ull, 1);
    n += keel_repl_unit_encode(body + n, "pay", 3, 3, 2, 1, 2);
    n += keel_repl_op_encode(body + n, KEEL_REPL_DEL_UNIT, NULL, 0, 0, NULL,
                             0);
    n += keel_repl_op_encode(body + n, KEEL_REPL_PUT, k, (size_t)kl, 5, "42",
                             2);
    frame(KEEL_FRAME_REPL, 0, id + 1, body, n);
    /* A catch-up's check of the backup's copy: the digest alone. */
    n = keel_repl_head_encode(body, "n1", 2, 1700000000000000000ull, 1);
    n += keel_repl_unit_encode(body + n, "pay", 3, 3, 2, 1, 1);
    n += keel_repl_op_encode(body + n, KEEL_REPL_CHECK_UNIT, NULL, 0,
                             0x0123456789abcdefull, NULL, 0);
    frame(KEEL_FRAME_REPL, 0, id + 2, body, n);
    n = 2;
    keel_repl_acks_count(body, 2);
    n += keel_repl_ack_encode(body + n, "pay", 3, 3, 0, 7);
    n += keel_repl_ack_encode(body + n, "", 0, 0, KEEL_EFENCED, 0);
    frame(KEEL_FRAME_REPLY, 0, id, body, n);
}

static void wire_seed(const char *name, unsigned max_frame_sel)
{
    uint8_t *p = malloc(B.len + 1);

    FUZZ_CHECK(p != NULL);
    p[0] = (uint8_t)max_frame_sel;
    memcpy(p + 1, B.p, B.len);
    seed("wire", name, p, B.len + 1);
    free(p);
}

static void wire_seeds(void)
{
    uint8_t eb[128];
    size_t n;

    b_reset();
    call_frame(KEEL_FRAME_CALL, 0, 1, "counter", "c1", "incr");
    wire_seed("call", 2);
    b_reset();
    {
        /* A connection as it begins: the hello, then a frame. */
        uint8_t hello[KEEL_HELLO_LEN];
        keel_hello_encode(hello, KEEL_PROTO_VERSION);
        b_put(hello, sizeof hello);
    }
    call_frame(KEEL_FRAME_CALL, 0, 1, "counter", "c1", "incr");
    wire_seed("hello-call", 2 | 4);
    b_reset();
    call_frame(KEEL_FRAME_CAST, 0, 2, "kv", "users", "put ann Ann Lee");
    wire_seed("cast", 2);
    b_reset();
    call_frame(KEEL_FRAME_CALL, KEEL_FLAG_KEYED, 3, "register", "r1",
               "write v");
    wire_seed("call-keyed", 2);
    b_reset();
    call_frame(KEEL_FRAME_CALL, KEEL_FLAG_DEADLINE | 2, 4, "counter", "c1",
               "get");
    wire_seed("call-deadline-hops", 2);
    b_reset();
    call_frame(KEEL_FRAME_CAST, KEEL_FLAG_DEADLINE | KEEL_FLAG_KEYED | 1, 5,
               "kv", "k", "del a");
    wire_seed("cast-deadline-keyed", 2);
    b_reset();
    call_frame(KEEL_FRAME_CAST, KEEL_FLAG_DEADLINE | KEEL_FLAG_FROM | 1, 5,
               "payment", "p-17", "charge 30");
    wire_seed("cast-outbox-from", 2);
    b_reset();
    call_frame(KEEL_FRAME_CALL, 0, 6, "counter", "", "");
    wire_seed("call-empty-id-msg", 2);
    b_reset();
    call_frame(KEEL_FRAME_CALL, 0, 7,
               "a-type-name-of-sixty-five-bytes-which-is-one-more-than-allowed"
               "xyz",
               "id", "m");
    wire_seed("call-type-over-limit", 3);
    b_reset();
    n = keel_error_body_encode(eb, KEEL_ENOTYPE, "unknown actor type 'countr'",
                               27);
    frame(KEEL_FRAME_ERROR, 0, 2, eb, n);
    wire_seed("error", 2);
    b_reset();
    n = keel_error_body_encode(eb, KEEL_ESTOPPING, "bye", 3);
    frame(KEEL_FRAME_ERROR, 0, 0, eb, n);
    wire_seed("error-farewell", 2);
    b_reset();
    frame(KEEL_FRAME_REPLY, 0, 1, "1", 1);
    frame(KEEL_FRAME_REPLY, 0, 2, NULL, 0);
    wire_seed("replies", 2);
    b_reset();
    frame(KEEL_FRAME_STAT, 0, 9, NULL, 0);
    frame(KEEL_FRAME_PING, 0, 10, "hello", 5);
    frame(KEEL_FRAME_PONG, 0, 10, "hello", 5);
    frame(KEEL_FRAME_INFO, 0, 11, "where\0kv\0some id", 16);
    frame(KEEL_FRAME_INFO, 0, 12, "shards\0n1", 9);
    frame(KEEL_FRAME_INFO, 0, 13, "auth\0s3cret-token", 17);
    frame(KEEL_FRAME_INFO, 0, 14, "auth", 4);
    wire_seed("stat-ping-pong-info", 2);
    b_reset();
    xfer_frame(20, "pay", 3, 7, 0, 0, 3);
    xfer_frame(21, "pay", 3, 7, 1, 1, 2);
    wire_seed("xfer-stream", 0);
    b_reset();
    xfer_frame(22, "", 0, 1, 0, 1, 0);
    wire_seed("xfer-empty-unit", 2);
    b_reset();
    repl_frames(23);
    wire_seed("repl-and-acks", 0);
    b_reset();
    call_frame(KEEL_FRAME_CALL, 0, 1, "counter", "c1", "incr");
    call_frame(KEEL_FRAME_CALL, KEEL_FLAG_KEYED, 2, "counter", "c2", "incr");
    frame(KEEL_FRAME_PING, 0, 3, "x", 1);
    xfer_frame(4, "", 1, 2, 0, 1, 1);
    call_frame(KEEL_FRAME_CAST, 0, 5, "kv", "u", "put a b");
    wire_seed("pipelined", 2);
    /* Outbox messages between nodes: an OBATCH with a budget and two
     * items, and its answer (a success, an unknown type). */
    b_reset();
    {
        uint8_t body[512];
        size_t bn = KEEL_DEADLINE_LEN;
        keel_deadline_put(body, 5000);
        body[bn++] = 0;
        body[bn++] = 2;
        bn += keel_obatch_item_encode(body + bn, 1, 7, "order", 5, "o-17", 4,
                                      "pay", 3, "p-9", 3, "charge 30", 9);
        bn += keel_obatch_item_encode(body + bn, 0, 8, "order", 5, "o-18", 4,
                                      "nosuch", 6, "x", 1, "", 0);
        frame(KEEL_FRAME_OBATCH, KEEL_FLAG_DEADLINE, 30, body, bn);
        bn = 2;
        keel_obatch_results_count(body, 2);
        bn += keel_obatch_result_encode(body + bn, 0, NULL, 0);
        bn += keel_obatch_result_encode(body + bn, KEEL_ENOTYPE,
                                        "unknown actor type 'nosuch'", 27);
        frame(KEEL_FRAME_REPLY, 0, 30, body, bn);
    }
    wire_seed("obatch-and-answer", 2);
    /* Following an actor: SUBSCRIBE, UNSUBSCRIBE, and the node's answer
     * and EVENTs (a change, an end). */
    b_reset();
    {
        uint8_t fb[128];
        size_t fl = keel_subscribe_encode(fb, "counter", 7, "c1", 2, 41);
        frame(KEEL_FRAME_SUBSCRIBE, 0, 9, fb, fl);
        keel_state_read_head(fb, 1, 42, 0);
        memcpy(fb + KEEL_STATE_READ_HDR, "\0\0\0\0\0\0\0\x2a", 8);
        frame(KEEL_FRAME_REPLY, 0, 9, fb, KEEL_STATE_READ_HDR + 8);
        keel_event_head(fb, KEEL_EVENT_CHANGE, 43);
        memcpy(fb + KEEL_EVENT_HDR, "\0\0\0\0\0\0\0\x2b", 8);
        frame(KEEL_FRAME_EVENT, 0, 9, fb, KEEL_EVENT_HDR + 8);
        fl = keel_event_end_encode(fb, 43, KEEL_EUNAVAIL,
                                   "owner 127.0.0.1:7421", 20);
        frame(KEEL_FRAME_EVENT, 0, 9, fb, fl);
        frame(KEEL_FRAME_UNSUBSCRIBE, 0, 9, NULL, 0);
    }
    wire_seed("follow", 2);
    /* Dead letters: a list request and its page of two entries. */
    b_reset();
    {
        uint8_t fb[512];
        size_t fl = 8;
        keel_dead_entry e = {.number = 3, .kind = 1, .code = KEEL_EHANDLER,
                             .attempts = 3, .at_ms = 1764800000000ull,
                             .why = "broken", .why_len = 6, .a = "svc",
                             .a_len = 3, .b = "b", .b_len = 1, .msg_len = 6,
                             .shown = (const uint8_t *)"work 1",
                             .shown_len = 6};
        uint8_t msg[KEEL_DEAD_LIST_LEN + 8];
        memcpy(msg, KEEL_DEAD_LIST, KEEL_DEAD_LIST_LEN);
        memset(msg + KEEL_DEAD_LIST_LEN, 0, 8);
        fl = keel_call_body_encode(fb, "svc", 3, "a", 1, msg, sizeof msg);
        frame(KEEL_FRAME_CALL, KEEL_FLAG_READ, 5, fb, fl);
        fl = 8;
        memset(fb, 0, 8);
        fb[7] = 2;
        keel_dead_entry_put(fb + fl, &e);
        fl += keel_dead_entry_size(&e);
        e.number = 4;
        e.kind = 2;
        e.a_len = 0;
        e.b = "r1";
        e.b_len = 2;
        e.msg_len = 200;
        e.shown_len = 6;
        keel_dead_entry_put(fb + fl, &e);
        fl += keel_dead_entry_size(&e);
        frame(KEEL_FRAME_REPLY, 0, 5, fb, fl);
    }
    wire_seed("dead-letters", 2);
    /* A node's connection to a node that takes OBATCH: the hello with
     * that flag, then a batch of one. */
    b_reset();
    {
        uint8_t hello[KEEL_HELLO_LEN], body[256];
        size_t bn = 0;
        keel_hello_encode_flags(hello, KEEL_PROTO_VERSION, KEEL_HELLO_OBATCH);
        b_put(hello, sizeof hello);
        body[bn++] = 0;
        body[bn++] = 1;
        bn += keel_obatch_item_encode(body + bn, 2, 9, "order", 5, "o-19", 4,
                                      "pay", 3, "p-1", 3, "refund 5", 8);
        frame(KEEL_FRAME_OBATCH, 0, 31, body, bn);
    }
    wire_seed("hello-flags-obatch", 2 | 4);
    /* State reads and their answers: the state (a blob and two named
     * entries), the reminders (two), a dead-letter drop, and a message
     * no node knows. */
    b_reset();
    {
        uint8_t fb[256];
        size_t fl;
        uint8_t msg[KEEL_DEAD_DROP_LEN + 8];
        call_frame(KEEL_FRAME_CALL, KEEL_FLAG_READ, 40, "counter", "c1", "");
        keel_state_read_head(fb, 1, 12, 2);
        memcpy(fb + KEEL_STATE_READ_HDR, "count=7", 7);
        frame(KEEL_FRAME_REPLY, 0, 40, fb, KEEL_STATE_READ_HDR + 7);
        call_frame(KEEL_FRAME_CALL, KEEL_FLAG_READ, 41, "counter", "c1",
                   KEEL_READ_REMINDERS);
        keel_reminders_entry_put(fb, 1500, 60000, 4, "tick", 4);
        keel_reminders_entry_put(fb + KEEL_REMINDERS_ENTRY_HDR + 4, -20, 0, 0,
                                 "expire", 6);
        frame(KEEL_FRAME_REPLY, 0, 41, fb, 2 * KEEL_REMINDERS_ENTRY_HDR + 10);
        memcpy(msg, KEEL_DEAD_DROP, KEEL_DEAD_DROP_LEN);
        memset(msg + KEEL_DEAD_DROP_LEN, 0, 8);
        msg[sizeof msg - 1] = 3;
        fl = keel_call_body_encode(fb, "svc", 3, "a", 1, msg, sizeof msg);
        frame(KEEL_FRAME_CALL, KEEL_FLAG_READ, 42, fb, fl);
        frame(KEEL_FRAME_REPLY, 0, 42, NULL, 0);
        call_frame(KEEL_FRAME_CALL, KEEL_FLAG_READ, 43, "svc", "a",
                   KEEL_READ_DEAD);
    }
    wire_seed("state-reads", 2);
    /* Following with event payloads: SUBSCRIBE and EVENTs with the
     * payload flag, a payload and a state change. */
    b_reset();
    {
        uint8_t fb[128];
        size_t fl = keel_subscribe_encode(fb, "counter", 7, "c1", 2, 0);
        frame(KEEL_FRAME_SUBSCRIBE, KEEL_FLAG_PAYLOAD, 50, fb, fl);
        keel_state_read_head(fb, 0, 0, 0);
        frame(KEEL_FRAME_REPLY, 0, 50, fb, KEEL_STATE_READ_HDR);
        keel_event_head(fb, KEEL_EVENT_CHANGE, 1);
        memcpy(fb + KEEL_EVENT_HDR, "incremented", 11);
        frame(KEEL_FRAME_EVENT, KEEL_FLAG_PAYLOAD, 50, fb,
              KEEL_EVENT_HDR + 11);
        keel_event_head(fb, KEEL_EVENT_CHANGE, 2);
        frame(KEEL_FRAME_EVENT, KEEL_FLAG_PAYLOAD, 50, fb, KEEL_EVENT_HDR);
    }
    wire_seed("follow-payloads", 2);
    /* Damage: the connection closes at the bad frame. */
    b_reset();
    call_frame(KEEL_FRAME_CALL, 0, 1, "counter", "c1", "incr");
    B.p[7] = 1; /* reserved */
    wire_seed("bad-reserved", 2);
    b_reset();
    b_be(11, 4);
    b_be(0, 8);
    b_be(0, 4);
    wire_seed("bad-length", 2);
    b_reset();
    call_frame(KEEL_FRAME_CAST, 0, 1, "kv", "users",
               "put some-key a value longer than the smallest max frame");
    wire_seed("too-big", 0);
    b_reset();
    call_frame(KEEL_FRAME_CALL, 0, 1, "counter", "c1", "incr");
    B.len -= 3;
    wire_seed("truncated", 2);
    b_reset();
    frame(KEEL_FRAME_CALL, KEEL_FLAG_KEYED, 1, "short", 5);
    frame(KEEL_FRAME_CALL, KEEL_FLAG_DEADLINE, 2, "ab", 2);
    frame(42, 0, 3, NULL, 0);
    wire_seed("bad-prefixes-kind", 2);
}

/* ------------------------------------------------------ binary znodes */

/* Sealed and as stored: mode 0 with the checksum, mode 1 without. */
static void sealed_seeds(const char *target, const char *name,
                         const uint8_t *p, size_t len)
{
    char n[128];

    b_reset();
    b_u8(0);
    b_put(p, len);
    snprintf(n, sizeof n, "%s", name);
    seed(target, n, B.p, B.len);
    b_reset();
    b_u8(1);
    b_put(p, len - 8);
    snprintf(n, sizeof n, "%s-unsealed", name);
    seed(target, n, B.p, B.len);
}

static void map_seeds(void)
{
    static const char *const caps_a[] = {"gpu"};
    static const char *const caps_b[] = {"gpu", "pay"};
    static const char *const all[] = {"gpu", "pay"};
    keel_map_member m[3] = {{"n1", caps_a, 1}, {"n2", caps_b, 2},
                            {"node-3", NULL, 0}};
    keel_shard_map map;
    uint8_t *enc;
    size_t len;

    FUZZ_CHECK(keel_map_init(&map, 8) == 0);
    FUZZ_CHECK(keel_map_encode(&map, &enc, &len) == 0);
    sealed_seeds("map", "empty", enc, len);
    free(enc);
    keel_map_free(&map);

    FUZZ_CHECK(keel_map_compute(m, 1, NULL, 0, 4, 1, &map) == 0);
    map.map_epoch = 1;
    FUZZ_CHECK(keel_map_encode(&map, &enc, &len) == 0);
    sealed_seeds("map", "one-node", enc, len);
    free(enc);
    keel_map_free(&map);

    FUZZ_CHECK(keel_map_compute(m, 3, all, 2, 16, 2, &map) == 0);
    map.map_epoch = 42;
    keel_map_unit_at(&map, 0, 3)->shard_epoch = 300; /* two varint bytes */
    keel_map_unit_at(&map, 1, 5)->target = 2;
    keel_map_unit_at(&map, 2, 0)->shard_epoch = 1;
    FUZZ_CHECK(keel_map_encode(&map, &enc, &len) == 0);
    sealed_seeds("map", "three-nodes-caps-move", enc, len);
    free(enc);
    keel_map_free(&map);

    /* Replication: three replicas of each unit, in-sync sets of every
     * shape, store ids known and unknown, units promoted by failover
     * (format 3). The corpus also keeps maps of formats 1 (v1-*) and 2
     * (v2-*), written by earlier versions. */
    FUZZ_CHECK(keel_map_compute(m, 3, all, 2, 8, 3, &map) == 0);
    map.map_epoch = 7;
    FUZZ_CHECK(keel_map_set_store(&map, 0, "0123456789abcdef0123456789abcdef")
               == 0);
    FUZZ_CHECK(keel_map_set_store(&map, 2, "ffffffffffffffff0000000000000001")
               == 0);
    {
        size_t i, n = (size_t)map.ncaps * map.shard_count;
        for (i = 0; i < n; i++) {
            keel_map_unit *u = &map.units[i];
            if (u->nreplicas == 0 || i % 5 == 4)
                continue; /* some never owned */
            u->shard_epoch = 1 + i;
            u->insync =
                (uint8_t)(1u | ((i << 1) & ((1u << u->nreplicas) - 2)));
            u->promoted = i % 3 == 1;
        }
    }
    keel_map_unit_at(&map, 0, 2)->target = 1;
    FUZZ_CHECK(keel_map_encode(&map, &enc, &len) == 0);
    sealed_seeds("map", "replicas-insync-stores", enc, len);
    free(enc);
    /* Format 4: promoted units with fallbacks (the backups in sync
     * before the promotion) and the mzxid they count until. */
    {
        size_t i, n = (size_t)map.ncaps * map.shard_count, k = 0;
        for (i = 0; i < n; i++) {
            keel_map_unit *u = &map.units[i];
            if (!u->promoted || u->nreplicas < 2)
                continue;
            u->fallback = (uint8_t)(((1u << u->nreplicas) - 2) &
                                    (k % 2 ? 2u : 6u));
            u->fallback_since = u->fallback ? 0x100000000ull + k : 0;
            k++;
        }
    }
    FUZZ_CHECK(keel_map_encode(&map, &enc, &len) == 0);
    FUZZ_CHECK(enc[4] == 4);
    sealed_seeds("map", "replicas-fallbacks", enc, len);
    free(enc);
    keel_map_free(&map);

    {
        keel_map_member five[5] = {{"a", NULL, 0}, {"b", NULL, 0},
                                   {"c", NULL, 0}, {"d", NULL, 0},
                                   {"e", NULL, 0}};
        FUZZ_CHECK(keel_map_compute(five, 5, NULL, 0, 2, KEEL_MAP_MAX_REPLICAS,
                                    &map) == 0);
        map.map_epoch = 3;
        keel_map_unit_at(&map, 0, 0)->shard_epoch = 2;
        keel_map_unit_at(&map, 0, 0)->insync = 0x1f;
        keel_map_unit_at(&map, 0, 1)->shard_epoch = 5;
        keel_map_unit_at(&map, 0, 1)->insync = 0x11;
        FUZZ_CHECK(keel_map_encode(&map, &enc, &len) == 0);
        sealed_seeds("map", "five-replicas", enc, len);
        free(enc);
        keel_map_free(&map);
    }
}

static void nodestate_seeds(void)
{
    keel_node_state st;
    uint8_t *enc;
    size_t len;

    keel_node_state_init(&st);
    FUZZ_CHECK(keel_node_state_encode(&st, &enc, &len) == 0);
    sealed_seeds("nodestate", "empty", enc, len);
    free(enc);
    st.map_epoch = 7;
    st.incarnation = 0x100000002ll;
    FUZZ_CHECK(keel_node_state_put(&st, "", 0, KEEL_ROLE_PRIMARY, 1, NULL) ==
               0);
    FUZZ_CHECK(keel_node_state_put(&st, "", 200, KEEL_ROLE_PRIMARY, 3,
                                   NULL) == 0);
    FUZZ_CHECK(keel_node_state_put(&st, "pay", 1, KEEL_ROLE_RELEASED, 4,
                                   "n2") == 0);
    FUZZ_CHECK(keel_node_state_put(&st, "gpu", 9, KEEL_ROLE_RELEASED, 2,
                                   "n1") == 0);
    FUZZ_CHECK(keel_node_state_encode(&st, &enc, &len) == 0);
    sealed_seeds("nodestate", "primary-released", enc, len);
    free(enc);
    /* A primary asking for backups to leave in-sync sets; the corpus
     * keeps states of format 1 (v1-*) and 2 (v2-*) too. */
    FUZZ_CHECK(keel_node_state_put_drop(&st, "", 0, "n3") == 0);
    FUZZ_CHECK(keel_node_state_put_drop(&st, "", 200, "n2") == 0);
    FUZZ_CHECK(keel_node_state_put_drop(&st, "", 200, "a-first") == 0);
    FUZZ_CHECK(keel_node_state_encode(&st, &enc, &len) == 0);
    sealed_seeds("nodestate", "primary-drops", enc, len);
    free(enc);
    /* ...and for backups it caught up to join them (format 3), one of
     * them also on a drop list. */
    FUZZ_CHECK(keel_node_state_put_add(&st, "", 0, "n4",
                                       "0123456789abcdef0123456789abcdef") ==
               0);
    FUZZ_CHECK(keel_node_state_put_add(&st, "", 200, "n1",
                                       "00000000000000000000000000000001") ==
               0);
    FUZZ_CHECK(keel_node_state_put_add(&st, "", 200, "n2",
                                       "fedcba9876543210fedcba9876543210") ==
               0);
    FUZZ_CHECK(keel_node_state_encode(&st, &enc, &len) == 0);
    sealed_seeds("nodestate", "primary-adds", enc, len);
    free(enc);
    keel_node_state_free(&st);
}

/* -------------------------------------------------------- text znodes */

static void member_seeds(void)
{
    static const char *const caps[] = {"gpu", "pay"};
    char *text, buf[512];
    size_t len;

    FUZZ_CHECK(keel_member_format("127.0.0.1:7421", NULL, 0, 0, &text,
                                  &len) == 0);
    seed("member", "no-caps", text, len);
    free(text);
    FUZZ_CHECK(keel_member_format("10.0.0.2:7420", caps, 2, 6000, &text,
                                  &len) == 0);
    seed("member", "caps-timeout", text, len);
    snprintf(buf, sizeof buf,
             "%.*sstore 0123456789abcdef0123456789abcdef\nleaving 1\n",
             (int)len, text);
    seed("member", "store-leaving", buf, strlen(buf));
    snprintf(buf, sizeof buf,
             "%.*sstore 0123456789abcdef0123456789abcdef\ninsecure 1\n"
             "leaving 1\n",
             (int)len, text);
    seed("member", "store-insecure-leaving", buf, strlen(buf));
    free(text);
    FUZZ_CHECK(keel_member_format("host.example:1", caps, 1, 0, &text,
                                  &len) == 0);
    snprintf(buf, sizeof buf, "%.*sleaving 1\n", (int)len, text);
    seed("member", "leaving", buf, strlen(buf));
    free(text);
}

static void config_seeds(void)
{
    char buf[128];
    size_t n;

    buf[0] = 0;
    n = keel_config_format(buf + 1, sizeof buf - 1, 4096, 1);
    seed("config", "config", buf, n + 1);
    n = keel_config_format(buf + 1, sizeof buf - 1, 1, 1);
    seed("config", "config-one-shard", buf, n + 1);
    n = keel_config_format(buf + 1, sizeof buf - 1, 4096, 3);
    seed("config", "config-replicas-3", buf, n + 1);
    n = keel_config_format(buf + 1, sizeof buf - 1, 64, KEEL_MAP_MAX_REPLICAS);
    seed("config", "config-replicas-max", buf, n + 1);
    buf[0] = 1;
    n = keel_epoch_format(buf + 1, sizeof buf - 1, 0);
    seed("config", "epoch-0", buf, n + 1);
    n = keel_epoch_format(buf + 1, sizeof buf - 1, 18446744073709551615ull);
    seed("config", "epoch-max", buf, n + 1);
    buf[0] = 2;
    seed("config", "store-none", buf, 1);
    n = (size_t)snprintf(buf + 1, sizeof buf - 1,
                         "store 0123456789abcdef0123456789abcdef\n");
    seed("config", "store", buf, n + 1);
    buf[0] = 3;
    n = keel_storecheck_run_format(buf + 1, sizeof buf - 1,
                                   "0123456789abcdef0123456789abcdef", 12);
    seed("config", "run", buf, n + 1);
}

/* ------------------------------------------------------- keys, dedup */

static void key_seeds(void)
{
    uint8_t k[KEEL_KEY_MAX + 64];
    char id[256];
    int n;

    n = keel_key_encode(k, 3, "counter", 7, "c1", 2, NULL, 0);
    seed("key", "state-blob", k, (size_t)n);
    n = keel_key_encode(k, 65535, "kv", 2, "users", 5, "ann", 3);
    seed("key", "entry", k, (size_t)n);
    n = keel_key_encode(k, 0, "kv", 2, "a\0b", 3, "\0keel.requests", 14);
    seed("key", "nul-id-dedup-entry", k, (size_t)n);
    memset(id, 'i', 255);
    n = keel_key_encode(k, 1, "t", 1, id, 255, NULL, 0);
    seed("key", "id-at-limit", k, (size_t)n);
    /* A stored value: version be64 | epoch be64 | data. */
    memcpy(k, "\0\0\0\0\0\0\0\x05\0\0\0\0\0\0\0\x02hello", 21);
    seed("key", "record", k, 21);
}

/* A record of the count window's table (format 1), as nodes wrote it
 * before records were kept for a time; none writes it now. */
static void old_table_rec(const uint8_t *key, uint64_t hash, int kept,
                          const void *reply, size_t rlen)
{
    if (!kept)
        rlen = 0;
    b_put(key, 16);
    b_be(hash, 8);
    b_u8((unsigned)kept);
    b_be(rlen, 4);
    b_put(reply, rlen);
}

static void dedup_seeds(void)
{
    static const uint8_t key1[16] = "0123456789abcdef";
    static const uint8_t key2[16] = "fedcba9876543210";
    uint8_t v[KEEL_DEDUP_REC_MAX];
    keel_dedup_rec rec = {.seq = 41, .time_ms = 1764950000123ull,
                          .hash = 0x1122334455667788ull, .kept = 1,
                          .reply = (const uint8_t *)"OK", .rlen = 2};
    size_t vl;
    const char *hex = "00112233445566778899aAbBcCdDeEfF";

    b_reset();
    b_u8(0);
    b_put(key1, 16);
    seed("dedup", "empty-table", B.p, B.len);
    b_u8(1);
    old_table_rec(key1, 1, 1, "OK", 2);
    seed("dedup", "one-record-found", B.p, B.len);
    b_reset();
    b_u8(0);
    b_put(key1, 16);
    b_u8(1);
    old_table_rec(key1, 1, 1, "OK", 2);
    old_table_rec(key2, 2, 1, "", 0);
    old_table_rec((const uint8_t *)"another key....", 3, 0, NULL, 0);
    seed("dedup", "three-records-one-not-kept", B.p, B.len);

    vl = keel_dedup_rec_encode(v, &rec);
    b_reset();
    b_u8(2);
    b_put(v, vl);
    seed("dedup", "record", B.p, B.len);
    rec.kept = 0;
    vl = keel_dedup_rec_encode(v, &rec);
    b_reset();
    b_u8(2);
    b_put(v, vl);
    seed("dedup", "record-reply-not-kept", B.p, B.len);
    rec.kept = 1;
    rec.err = KEEL_ENOTFOUND;
    rec.reply = (const uint8_t *)"the value is 1, not 2";
    rec.rlen = 21;
    vl = keel_dedup_rec_encode(v, &rec);
    b_reset();
    b_u8(2);
    b_put(v, vl);
    seed("dedup", "record-refused", B.p, B.len);
    b_reset();
    b_u8(2);
    keel_dedup_q_encode(v, 1764950000123ull, key1);
    b_put(v, KEEL_DEDUP_Q_LEN);
    seed("dedup", "queue-entry", B.p, B.len);
    b_reset();
    b_u8(2);
    keel_dedup_hdr_encode(v, 3, 9);
    b_put(v, KEEL_DEDUP_Q_HDR_SIZE);
    seed("dedup", "queue-header", B.p, B.len);

    b_reset();
    b_u8(1);
    b_str(hex);
    seed("dedup", "hex-key", B.p, B.len);
    b_reset();
    b_u8(1);
    b_str("0011223344556677889xaabbccddeeff");
    seed("dedup", "hex-key-bad-digit", B.p, B.len);
}

/* ------------------------------------------------------------ history */

/* Events of a history, through the writer keel-chaos runs will use. */
static FILE *hw_file;
static char *hw_buf;
static size_t hw_len;
static chaos_hwriter hw;
static int64_t hw_ns;

static void hw_begin(void)
{
    hw_file = open_memstream(&hw_buf, &hw_len);
    FUZZ_CHECK(hw_file != NULL);
    chaos_hwriter_init(&hw, hw_file);
    hw_ns = 1000;
}

static void hw_ev(chaos_type t, int client, const char *actor, chaos_fn op,
                  const char *args, const char *result, int final)
{
    static const char *pair[2];
    chaos_event e;
    char err[256], *end;

    memset(&e, 0, sizeof e);
    e.t = t;
    e.time_ns = hw_ns += 500;
    e.client = client;
    e.actor = actor;
    e.op = op;
    e.final = final;
    /* args and result: NULL for null, "=N" an integer, "?" a boolean
     * (true), "!" false, "a|b" a pair or a list, else a string. */
    if (args != NULL && args[0] == '=') {
        e.args.type = CHAOS_V_INT;
        e.args.i = strtoll(args + 1, &end, 10);
    } else if (args != NULL && strchr(args, '|') != NULL) {
        static char a[64];
        snprintf(a, sizeof a, "%s", args);
        pair[0] = a;
        pair[1] = strchr(a, '|') + 1;
        a[pair[1] - a - 1] = '\0';
        e.args.type = CHAOS_V_STRS;
        e.args.strs = pair;
        e.args.n = 2;
    } else if (args != NULL) {
        e.args.type = CHAOS_V_STR;
        e.args.s = args;
    }
    if (result != NULL && result[0] == '=') {
        e.result.type = CHAOS_V_INT;
        e.result.i = strtoll(result + 1, &end, 10);
    } else if (result != NULL && (result[0] == '?' || result[0] == '!')) {
        e.result.type = CHAOS_V_BOOL;
        e.result.b = result[0] == '?';
    } else if (result != NULL && result[0] == '[') {
        static const char *elems[8];
        static char l[128];
        char *save = NULL, *tok;
        e.result.type = CHAOS_V_STRS;
        e.result.strs = elems;
        snprintf(l, sizeof l, "%s", result + 1);
        for (tok = strtok_r(l, "|", &save); tok != NULL && e.result.n < 8;
             tok = strtok_r(NULL, "|", &save))
            elems[e.result.n++] = tok;
    } else if (result != NULL) {
        e.result.type = CHAOS_V_STR;
        e.result.s = result;
    }
    if (t == CHAOS_INFO)
        e.error = "ETIMEDOUT";
    if (chaos_hwriter_write(&hw, &e, err, sizeof err) != 0) {
        fprintf(stderr, "history seed: %s\n", err);
        exit(1);
    }
}

static void hw_end(const char *name, size_t cut)
{
    chaos_hwriter_close(&hw);
    fclose(hw_file);
    b_reset();
    b_u8(0);
    b_put(hw_buf, cut > 0 && cut < hw_len ? cut : hw_len);
    seed("history", name, B.p, B.len);
    free(hw_buf);
}

static void history_seeds(void)
{
    static const char *const logs[][2] = {
        {"actlog-handoff",
         "1000 activate counter 6331 shard 5 epoch 1\n"
         "2000 deactivate counter 6331 shard 5 epoch 1\n"
         "2000 activate register 72 shard 9 epoch 3\n"},
        {"actlog-kill-end",
         "1000 activate counter 6331 shard 5 epoch 1\n"
         "1500 activate kv - shard 1 epoch 2\n"
         "3000 end\n"
         "4000 activate counter 6331 shard 5 epoch 2\n"},
        {"actlog-twice-bad-epoch",
         "1000 activate counter 61 shard 5 epoch 4\n"
         "2000 activate counter 61 shard 5 epoch 2\n"
         "2500 deactivate counter 61 shard 5 epoch 2\n"},
        {"actlog-malformed", "1000 activate counter 6 shard 5 epoch 1\n"},
        /* Found by fuzzing: read as two nodes' logs, an activation cut
         * short at the instant it began, against one open from then. */
        {"actlog-reactivated-same-instant",
         "1000 activate counter 6331 shard 5 epoch 1\n"
         "1000 activate counter 6331 shard 5 epoch 2\n"},
        /* A node resumed after its lease ran out: the fence dates back
         * before a deactivation it logged, and before an activation;
         * then it serves again with one actor still resident. */
        {"actlog-fenced",
         "1000 activate counter 6331 shard 5 epoch 1\n"
         "1100 activate kv 61 shard 2 epoch 1\n"
         "1500 deactivate kv 61 shard 2 epoch 1\n"
         "1600 activate register 72 shard 9 epoch 3\n"
         "3000 fenced since 1200\n"
         "3100 deactivate register 72 shard 9 epoch 3\n"
         "3500 serving\n"
         "4000 deactivate counter 6331 shard 5 epoch 1\n"
         "4100 end\n"},
    };
    size_t k;

    /* A register: concurrent writes, cas both ways, an info write that
     * lands late, a final read. */
    hw_begin();
    hw_ev(CHAOS_INVOKE, 1, "register/r", CHAOS_WRITE, "1", NULL, 0);
    hw_ev(CHAOS_INVOKE, 2, "register/r", CHAOS_READ, NULL, NULL, 0);
    hw_ev(CHAOS_OK, 1, "register/r", CHAOS_WRITE, "1", NULL, 0);
    hw_ev(CHAOS_OK, 2, "register/r", CHAOS_READ, NULL, "", 0);
    hw_ev(CHAOS_INVOKE, 1, "register/r", CHAOS_CAS, "1|2", NULL, 0);
    hw_ev(CHAOS_INVOKE, 3, "register/r", CHAOS_WRITE, "3", NULL, 0);
    hw_ev(CHAOS_OK, 1, "register/r", CHAOS_CAS, "1|2", "?", 0);
    hw_ev(CHAOS_INFO, 3, "register/r", CHAOS_WRITE, "3", NULL, 0);
    hw_ev(CHAOS_INVOKE, 2, "register/r", CHAOS_CAS, "1|4", NULL, 0);
    hw_ev(CHAOS_OK, 2, "register/r", CHAOS_CAS, "1|4", "!", 0);
    hw_ev(CHAOS_INVOKE, 2, "register/r", CHAOS_READ, NULL, NULL, 1);
    hw_ev(CHAOS_OK, 2, "register/r", CHAOS_READ, NULL, "3", 1);
    hw_end("register", 0);

    /* A counter with an increment that counted twice, a cast, a failed
     * and an unfinished one; several actors. */
    hw_begin();
    hw_ev(CHAOS_INVOKE, 1, "counter/c", CHAOS_INCR, "=1", NULL, 0);
    hw_ev(CHAOS_INVOKE, 2, "counter/d", CHAOS_INCR, "=-2", NULL, 0);
    hw_ev(CHAOS_OK, 1, "counter/c", CHAOS_INCR, "=1", "=1", 0);
    hw_ev(CHAOS_OK, 2, "counter/d", CHAOS_INCR, "=-2", NULL, 0);
    hw_ev(CHAOS_INVOKE, 1, "counter/c", CHAOS_INCR, "=1", NULL, 0);
    hw_ev(CHAOS_OK, 1, "counter/c", CHAOS_INCR, "=1", "=3", 0);
    hw_ev(CHAOS_INVOKE, 2, "counter/c", CHAOS_INCR, "=5", NULL, 0);
    hw_ev(CHAOS_FAIL, 2, "counter/c", CHAOS_INCR, "=5", NULL, 0);
    hw_ev(CHAOS_INVOKE, 3, "counter/d", CHAOS_INCR, "=7", NULL, 0);
    hw_ev(CHAOS_INVOKE, 1, "counter/c", CHAOS_GET, NULL, NULL, 1);
    hw_ev(CHAOS_OK, 1, "counter/c", CHAOS_GET, NULL, "=3", 1);
    hw_end("counter", 0);

    /* A set: info adds, one never read, an element that disappears. */
    hw_begin();
    hw_ev(CHAOS_INVOKE, 1, "kv/s", CHAOS_ADD, "a", NULL, 0);
    hw_ev(CHAOS_INVOKE, 2, "kv/s", CHAOS_ADD, "b", NULL, 0);
    hw_ev(CHAOS_OK, 1, "kv/s", CHAOS_ADD, "a", NULL, 0);
    hw_ev(CHAOS_INFO, 2, "kv/s", CHAOS_ADD, "b", NULL, 0);
    hw_ev(CHAOS_INVOKE, 3, "kv/s", CHAOS_ADD, "never read", NULL, 0);
    hw_ev(CHAOS_INFO, 3, "kv/s", CHAOS_ADD, "never read", NULL, 0);
    hw_ev(CHAOS_INVOKE, 1, "kv/s", CHAOS_READ_SET, NULL, NULL, 0);
    hw_ev(CHAOS_OK, 1, "kv/s", CHAOS_READ_SET, NULL, "[a|b", 0);
    hw_ev(CHAOS_INVOKE, 1, "kv/s", CHAOS_READ_SET, NULL, NULL, 1);
    hw_ev(CHAOS_OK, 1, "kv/s", CHAOS_READ_SET, NULL, "[b", 1);
    hw_end("set", 0);
    /* The same, cut inside a line, as a runner that died leaves it. */
    hw_begin();
    hw_ev(CHAOS_INVOKE, 1, "kv/s", CHAOS_ADD, "a", NULL, 0);
    hw_ev(CHAOS_OK, 1, "kv/s", CHAOS_ADD, "a", NULL, 0);
    hw_end("cut-short", 150);

    for (k = 0; k < sizeof logs / sizeof *logs; k++) {
        b_reset();
        b_u8(1);
        b_str(logs[k][1]);
        seed("history", logs[k][0], B.p, B.len);
    }
}

/* ---------------------------------------------------------- recovery */

static void wal_seed(const char *name, int mode, const uint8_t *p,
                     size_t len)
{
    b_reset();
    b_u8((unsigned)mode);
    b_put(p, len);
    seed("recovery_wal", name, B.p, B.len);
}

static void recovery_seeds(void)
{
    const rh_template *t = rh_template_get();
    size_t end = t->rec_off[RH_COMMITS], r3 = t->rec_off[3], img = t->wal.len;
    uint8_t *w;
    char name[64];
    int k;

    /* The template's log is its records, then zeros up to the next MiB
     * (the store writes ahead): the seeds carry the bytes before the
     * zeros and set mode bit 1, which puts the zeros back
     * (fuzz_recovery_wal.c). */
    while (img > end && t->wal.p[img - 1] == 0)
        img--;
    FUZZ_CHECK(((img + (1u << 20)) & ~(size_t)((1u << 20) - 1)) ==
               t->wal.len);
    w = malloc(img);
    FUZZ_CHECK(w != NULL);
    wal_seed("crash-image", 2, t->wal.p, img);
    wal_seed("crash-image-reseal", 3, t->wal.p, img);
    /* A log an older version wrote, without zeros after its records. */
    wal_seed("records-only", 0, t->wal.p, end);
    for (k = 0; k < RH_COMMITS; k += 3) {
        snprintf(name, sizeof name, "cut-after-%d", k);
        wal_seed(name, 0, t->wal.p, t->rec_off[k]);
    }
    /* Records that never reached the disk, where the zeros written ahead
     * of them did. */
    wal_seed("cut-after-3-ahead", 2, t->wal.p, t->rec_off[3]);
    wal_seed("torn-in-record-6", 0, t->wal.p,
             (t->rec_off[5] + t->rec_off[6]) / 2);
    wal_seed("torn-in-record-6-ahead", 2, t->wal.p,
             (t->rec_off[5] + t->rec_off[6]) / 2);
    wal_seed("torn-in-header-4", 0, t->wal.p, t->rec_off[3] + 20);
    /* A flipped byte in the middle record: later records stay valid. */
    memcpy(w, t->wal.p, img);
    w[r3 + 60] ^= 0x40;
    wal_seed("damaged-record-4", 2, w, img);
    /* The same, resealed: the change reaches the record's parser. */
    wal_seed("changed-record-4-reseal", 3, w, img);
    /* The middle record zeroed whole, as if it were zeros written ahead:
     * the records after it still say it was flushed. */
    memcpy(w, t->wal.p, img);
    memset(w + r3, 0, t->rec_off[4] - r3);
    wal_seed("zeroed-record-4", 2, w, img);
    /* An op length that no longer fits its group, resealed. */
    memcpy(w, t->wal.p, img);
    w[t->rec_off[1] + KEEL_WAL_REC_HDR + 24 + 4] ^= 0x7f; /* first op klen */
    wal_seed("bad-op-record-2-reseal", 3, w, img);
    /* Record 2 twice: the second is out of sequence. */
    memcpy(w, t->wal.p, t->rec_off[2]);
    memcpy(w + t->rec_off[2], t->wal.p + t->rec_off[1],
           t->rec_off[2] - t->rec_off[1]);
    wal_seed("record-2-twice", 0, w, t->rec_off[2] * 2 - t->rec_off[1]);
    wal_seed("empty", 0, NULL, 0);
    free(w);

    /* keel.ckpt: reserved byte, be32 length of the first slot's part,
     * the part, the second slot's part (fuzz_recovery_ckpt.c). */
#define CKPT_SEED(name, s0, n0, s1, n1)                                      \
    do {                                                                     \
        b_reset();                                                           \
        b_u8(0);                                                             \
        b_be((n0), 4);                                                       \
        b_put((s0), (n0));                                                   \
        b_put((s1), (n1));                                                   \
        seed("recovery_ckpt", (name), B.p, B.len);                           \
    } while (0)
    CKPT_SEED("both-slots", t->slot[0].p, t->slot[0].len, t->slot[1].p,
              t->slot[1].len);
    /* The newest slot lost or torn, with the older one intact, are kept
     * in tests/fuzz/found/ instead (see the README there): the store
     * does not recover them as it should yet. */
    CKPT_SEED("older-slot-lost", NULL, 0, t->slot[1].p, t->slot[1].len);
    CKPT_SEED("newest-in-slot-0", t->slot[1].p, t->slot[1].len, NULL, 0);
    CKPT_SEED("no-slot", NULL, 0, NULL, 0);
#undef CKPT_SEED
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        perror(out_dir);
        return 1;
    }
    wire_seeds();
    map_seeds();
    nodestate_seeds();
    member_seeds();
    config_seeds();
    key_seeds();
    dedup_seeds();
    history_seeds();
    recovery_seeds();
    printf("%zu seeds written under %s\n", written, out_dir);
    return 0;
}
