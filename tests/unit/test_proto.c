/* The wire codec (runtime/proto.c) and the blocking client
 * (runtime/client.c). Client tests talk to a small server thread in this
 * file, listening on 127.0.0.1 port 0, which answers frames the way a node
 * does (or, depending on its mode, never answers, sends garbage or hangs
 * up). */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "keel.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

/* ------------------------------------------------------------- helpers */

/* Parses from a heap copy of exactly len bytes, so that ASan catches any
 * read past the length the parser was given. */
static long parse_exact(const uint8_t *bytes, size_t len, size_t max,
                        keel_frame *f)
{
    uint8_t *copy = malloc(len ? len : 1);
    long n;

    ck_assert_ptr_nonnull(copy);
    if (len > 0)
        memcpy(copy, bytes, len);
    n = keel_frame_parse(copy, len, max, f);
    free(copy);
    return n;
}

static int call_body_parse_exact(const uint8_t *bytes, size_t len,
                                 keel_call_body *b)
{
    uint8_t *copy = malloc(len ? len : 1);
    int rc;

    ck_assert_ptr_nonnull(copy);
    if (len > 0)
        memcpy(copy, bytes, len);
    rc = keel_call_body_parse(copy, len, b);
    free(copy);
    return rc;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A whole frame (header + body) in a malloc'd buffer. */
static uint8_t *make_frame(uint8_t kind, uint64_t rid, const void *body,
                           size_t blen, size_t *total)
{
    uint8_t *f = malloc(KEEL_FRAME_HEADER + blen);

    ck_assert_ptr_nonnull(f);
    keel_frame_header(f, kind, rid, blen);
    if (blen > 0)
        memcpy(f + KEEL_FRAME_HEADER, body, blen);
    *total = KEEL_FRAME_HEADER + blen;
    return f;
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* -------------------------------------------------------------- header */

START_TEST(header_round_trip)
{
    static const uint8_t body[] = {'h', 'e', 'l', 'l', 'o', 0, 0xff};
    uint8_t buf[KEEL_FRAME_HEADER + sizeof body];
    keel_frame f;
    long n;

    keel_frame_header(buf, KEEL_FRAME_CALL, 0x0102030405060708ULL,
                      sizeof body);
    /* length = 12 + 7, big-endian; flags and reserved zero. */
    ck_assert_uint_eq(buf[0], 0);
    ck_assert_uint_eq(buf[1], 0);
    ck_assert_uint_eq(buf[2], 0);
    ck_assert_uint_eq(buf[3], 19);
    ck_assert_uint_eq(buf[4], KEEL_FRAME_CALL);
    ck_assert_uint_eq(buf[5], 0);
    ck_assert_uint_eq(buf[6], 0);
    ck_assert_uint_eq(buf[7], 0);
    for (int i = 0; i < 8; i++)
        ck_assert_uint_eq(buf[8 + i], (unsigned)(i + 1));
    memcpy(buf + KEEL_FRAME_HEADER, body, sizeof body);

    n = parse_exact(buf, sizeof buf, KEEL_DEFAULT_MAX_FRAME, &f);
    ck_assert_int_eq(n, (long)sizeof buf);
    ck_assert_uint_eq(f.kind, KEEL_FRAME_CALL);
    ck_assert_uint_eq(f.flags, 0);
    ck_assert(f.request_id == 0x0102030405060708ULL);
    ck_assert_uint_eq(f.body_len, sizeof body);

    /* body points into the buffer handed to the parser */
    n = keel_frame_parse(buf, sizeof buf, KEEL_DEFAULT_MAX_FRAME, &f);
    ck_assert_int_eq(n, (long)sizeof buf);
    ck_assert_ptr_eq(f.body, buf + KEEL_FRAME_HEADER);
    ck_assert_mem_eq(f.body, body, sizeof body);
}
END_TEST

START_TEST(header_every_kind_and_empty_body)
{
    uint8_t buf[KEEL_FRAME_HEADER];
    keel_frame f;

    for (int k = KEEL_FRAME_CALL; k <= KEEL_FRAME_PONG; k++) {
        keel_frame_header(buf, (uint8_t)k, UINT64_MAX, 0);
        ck_assert_int_eq(parse_exact(buf, sizeof buf, KEEL_FRAME_HEADER, &f),
                         KEEL_FRAME_HEADER);
        ck_assert_uint_eq(f.kind, (unsigned)k);
        ck_assert(f.request_id == UINT64_MAX);
        ck_assert_uint_eq(f.body_len, 0);
    }
}
END_TEST

START_TEST(parse_incremental)
{
    size_t total;
    uint8_t *fr = make_frame(KEEL_FRAME_PING, 42, "abcdefgh", 8, &total);
    keel_frame f;

    for (size_t n = 0; n < total; n++)
        ck_assert_int_eq(parse_exact(fr, n, KEEL_DEFAULT_MAX_FRAME, &f), 0);
    ck_assert_int_eq(parse_exact(fr, total, KEEL_DEFAULT_MAX_FRAME, &f),
                     (long)total);
    ck_assert(f.request_id == 42);
    ck_assert_uint_eq(f.body_len, 8);
    free(fr);
}
END_TEST

START_TEST(parse_back_to_back)
{
    size_t t1, t2;
    uint8_t *a = make_frame(KEEL_FRAME_REPLY, 1, "one", 3, &t1);
    uint8_t *b = make_frame(KEEL_FRAME_ERROR, 2, "\0\5two", 5, &t2);
    uint8_t *both = malloc(t1 + t2 + 3);
    keel_frame f;
    long n;

    ck_assert_ptr_nonnull(both);
    memcpy(both, a, t1);
    memcpy(both + t1, b, t2);
    /* and the first bytes of a third frame */
    memcpy(both + t1 + t2, a, 3);

    n = keel_frame_parse(both, t1 + t2 + 3, KEEL_DEFAULT_MAX_FRAME, &f);
    ck_assert_int_eq(n, (long)t1);
    ck_assert_uint_eq(f.kind, KEEL_FRAME_REPLY);
    ck_assert(f.request_id == 1);
    ck_assert_mem_eq(f.body, "one", 3);

    n = keel_frame_parse(both + t1, t2 + 3, KEEL_DEFAULT_MAX_FRAME, &f);
    ck_assert_int_eq(n, (long)t2);
    ck_assert_uint_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert(f.request_id == 2);
    ck_assert_uint_eq(f.body_len, 5);

    n = keel_frame_parse(both + t1 + t2, 3, KEEL_DEFAULT_MAX_FRAME, &f);
    ck_assert_int_eq(n, 0);
    free(a);
    free(b);
    free(both);
}
END_TEST

START_TEST(parse_too_big)
{
    uint8_t buf[KEEL_FRAME_HEADER];
    keel_frame f;

    /* max 1024: length 1020 is a 1024-byte frame, allowed (incomplete) */
    keel_frame_header(buf, KEEL_FRAME_CALL, 9, 1020 - 12);
    ck_assert_int_eq(parse_exact(buf, 4, 1024, &f), 0);
    ck_assert_int_eq(parse_exact(buf, sizeof buf, 1024, &f), 0);
    /* one byte more is refused as soon as the length is in */
    keel_frame_header(buf, KEEL_FRAME_CALL, 9, 1021 - 12);
    ck_assert_int_eq(parse_exact(buf, 4, 1024, &f), KEEL_ETOOBIG);
    ck_assert_int_eq(parse_exact(buf, sizeof buf, 1024, &f), KEEL_ETOOBIG);
    ck_assert(f.request_id == 9); /* quoted back in the ERROR */

    /* the largest length field: no overflow, whatever the limit */
    put32(buf, 0xFFFFFFFFu);
    ck_assert_int_eq(parse_exact(buf, 4, KEEL_DEFAULT_MAX_FRAME, &f),
                     KEEL_ETOOBIG);
    ck_assert_int_eq(parse_exact(buf, sizeof buf, KEEL_DEFAULT_MAX_FRAME, &f),
                     KEEL_ETOOBIG);
    ck_assert_int_eq(parse_exact(buf, 4, 0xFFFFFFFFu, &f), KEEL_ETOOBIG);
    put32(buf, 0xFFFFFFFBu); /* 4 + length == 2^32 - 1 */
    ck_assert_int_eq(parse_exact(buf, 4, 0xFFFFFFFEu, &f), KEEL_ETOOBIG);
    ck_assert_int_eq(parse_exact(buf, 4, 0xFFFFFFFFu, &f), 0);
    put32(buf, 0xFFFFFFFFu);
    ck_assert_int_eq(parse_exact(buf, sizeof buf, SIZE_MAX, &f), 0);
    put32(buf, 0xFFFFFFF0u);
    ck_assert_int_eq(parse_exact(buf, 4, 100, &f), KEEL_ETOOBIG);
}
END_TEST

START_TEST(parse_malformed)
{
    uint8_t buf[KEEL_FRAME_HEADER + 4];
    keel_frame f;

    /* length below 12: known after 4 bytes */
    for (uint32_t len = 0; len < 12; len++) {
        memset(buf, 0, sizeof buf);
        put32(buf, len);
        ck_assert_int_eq(parse_exact(buf, 4, KEEL_DEFAULT_MAX_FRAME, &f),
                         KEEL_EMALFORMED);
        ck_assert_int_eq(
            parse_exact(buf, sizeof buf, KEEL_DEFAULT_MAX_FRAME, &f),
            KEEL_EMALFORMED);
    }

    /* nonzero reserved field, either byte */
    keel_frame_header(buf, KEEL_FRAME_CALL, 77, 4);
    buf[6] = 1;
    ck_assert_int_eq(parse_exact(buf, KEEL_FRAME_HEADER - 1,
                                 KEEL_DEFAULT_MAX_FRAME, &f),
                     0);
    ck_assert_int_eq(
        parse_exact(buf, KEEL_FRAME_HEADER, KEEL_DEFAULT_MAX_FRAME, &f),
        KEEL_EMALFORMED);
    ck_assert(f.request_id == 77);
    keel_frame_header(buf, KEEL_FRAME_CALL, 77, 4);
    buf[7] = 0x80;
    ck_assert_int_eq(parse_exact(buf, sizeof buf, KEEL_DEFAULT_MAX_FRAME, &f),
                     KEEL_EMALFORMED);

    /* unknown kinds */
    {
        static const uint8_t bad[] = {0, KEEL_FRAME_KIND_MAX + 1, 99, 255};

        for (size_t i = 0; i < sizeof bad; i++) {
            keel_frame_header(buf, bad[i], 1000 + i, 4);
            ck_assert_int_eq(parse_exact(buf, KEEL_FRAME_HEADER,
                                         KEEL_DEFAULT_MAX_FRAME, &f),
                             KEEL_EMALFORMED);
            ck_assert(f.request_id == 1000 + i);
            ck_assert_uint_eq(f.kind, bad[i]);
        }
    }

    /* flags are carried, not judged */
    keel_frame_header(buf, KEEL_FRAME_PING, 5, 4);
    buf[5] = 0x42;
    ck_assert_int_eq(parse_exact(buf, sizeof buf, KEEL_DEFAULT_MAX_FRAME, &f),
                     (long)sizeof buf);
    ck_assert_uint_eq(f.flags, 0x42);
}
END_TEST

/* ----------------------------------------------------------- call body */

START_TEST(call_body_round_trip)
{
    static const uint8_t id[] = {0, 'a', 0, 0xff, '\n', 0};
    static const uint8_t msg[] = {'x', 0, 'y', 0x80};
    size_t need = keel_call_body_size(7, sizeof id, sizeof msg);
    uint8_t *buf = malloc(need);
    keel_call_body b;

    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(need, 1 + 7 + 2 + sizeof id + sizeof msg);
    ck_assert_uint_eq(keel_call_body_encode(buf, "counter", 7, id, sizeof id,
                                            msg, sizeof msg),
                      need);
    ck_assert_uint_eq(buf[0], 7);
    ck_assert_uint_eq(buf[8], 0);
    ck_assert_uint_eq(buf[9], sizeof id);

    ck_assert_int_eq(keel_call_body_parse(buf, need, &b), 0);
    ck_assert_uint_eq(b.tlen, 7);
    ck_assert_mem_eq(b.type, "counter", 7);
    ck_assert_uint_eq(b.idlen, sizeof id);
    ck_assert_mem_eq(b.id, id, sizeof id);
    ck_assert_uint_eq(b.msglen, sizeof msg);
    ck_assert_mem_eq(b.msg, msg, sizeof msg);

    /* empty id and empty message are fine */
    ck_assert_uint_eq(keel_call_body_encode(buf, "kv", 2, NULL, 0, NULL, 0),
                      5);
    ck_assert_int_eq(call_body_parse_exact(buf, 5, &b), 0);
    ck_assert_uint_eq(b.idlen, 0);
    ck_assert_uint_eq(b.msglen, 0);
    free(buf);
}
END_TEST

/* The sender prefix of an outbox message (KEEL_FLAG_FROM). */
START_TEST(from_prefix_round_trip)
{
    static const uint8_t id[] = {'o', 0, 0xfe};
    uint8_t buf[8 + 1 + KEEL_MAX_TYPE_LEN + 1 + 2 + KEEL_MAX_ID_LEN + 1];
    char longtype[KEEL_MAX_TYPE_LEN + 2];
    keel_from f;
    size_t n = keel_from_size(5, sizeof id), i;

    ck_assert_uint_eq(n, 8 + 1 + 5 + 2 + sizeof id);
    ck_assert_uint_eq(keel_from_encode(buf, 0x0102030405060708ull, "order",
                                       5, id, sizeof id),
                      n);
    ck_assert_uint_eq(buf[0], 1);
    ck_assert_uint_eq(buf[7], 8);
    ck_assert_uint_eq(buf[8], 5);
    ck_assert_uint_eq(buf[14], 0);
    ck_assert_uint_eq(buf[15], sizeof id);
    /* Parsed from a longer buffer: the call body follows. */
    buf[n] = 0x42;
    ck_assert_int_eq(keel_from_parse(buf, n + 1, &f), (long)n);
    ck_assert_uint_eq(f.seq, 0x0102030405060708ull);
    ck_assert_uint_eq(f.tlen, 5);
    ck_assert_mem_eq(f.type, "order", 5);
    ck_assert_uint_eq(f.idlen, sizeof id);
    ck_assert_mem_eq(f.id, id, sizeof id);
    /* Every cut short of the whole prefix is malformed. */
    for (i = 0; i < n; i++)
        ck_assert_int_eq(keel_from_parse(buf, i, &f), KEEL_EMALFORMED);
    /* Sequence 0 and an empty type are not senders. */
    keel_from_encode(buf, 0, "order", 5, id, sizeof id);
    ck_assert_int_eq(keel_from_parse(buf, n, &f), KEEL_EMALFORMED);
    n = keel_from_encode(buf, 1, "", 0, id, sizeof id);
    ck_assert_int_eq(keel_from_parse(buf, n, &f), KEEL_EMALFORMED);
    /* An empty id is fine; a type over its limit is not. */
    n = keel_from_encode(buf, 9, "a", 1, NULL, 0);
    ck_assert_int_eq(keel_from_parse(buf, n, &f), (long)n);
    ck_assert_uint_eq(f.idlen, 0);
    memset(longtype, 't', sizeof longtype);
    n = keel_from_encode(buf, 9, longtype, KEEL_MAX_TYPE_LEN + 1, "x", 1);
    ck_assert_int_eq(keel_from_parse(buf, n, &f), KEEL_ELIMIT);
}
END_TEST

START_TEST(call_body_truncated)
{
    uint8_t id[KEEL_MAX_ID_LEN];
    size_t need, head;
    uint8_t *buf;
    keel_call_body b;

    for (size_t i = 0; i < sizeof id; i++)
        id[i] = (uint8_t)i;
    need = keel_call_body_size(KEEL_MAX_TYPE_LEN, sizeof id, 4);
    head = need - 4;
    buf = malloc(need);
    ck_assert_ptr_nonnull(buf);
    keel_call_body_encode(buf,
                          "tttttttttttttttttttttttttttttttttttttttttttttttt"
                          "tttttttttttttttt",
                          KEEL_MAX_TYPE_LEN, id, sizeof id, "incr", 4);
    /* Cut anywhere inside type or id: malformed. */
    for (size_t cut = 0; cut < head; cut++)
        ck_assert_int_eq(call_body_parse_exact(buf, cut, &b),
                         KEEL_EMALFORMED);
    /* Cut inside the message: the message is simply shorter. */
    for (size_t cut = head; cut <= need; cut++) {
        ck_assert_int_eq(call_body_parse_exact(buf, cut, &b), 0);
        ck_assert_uint_eq(b.msglen, cut - head);
        ck_assert_uint_eq(b.idlen, sizeof id);
    }
    free(buf);

    /* Same with a short type and id. */
    {
        uint8_t small[16];
        size_t n = keel_call_body_encode(small, "kv", 2, "k", 1, NULL, 0);

        ck_assert_uint_eq(n, 6);
        for (size_t cut = 0; cut < n; cut++)
            ck_assert_int_eq(call_body_parse_exact(small, cut, &b),
                             KEEL_EMALFORMED);
        ck_assert_int_eq(call_body_parse_exact(small, n, &b), 0);
    }
}
END_TEST

START_TEST(call_body_limits)
{
    uint8_t buf[1 + 255 + 2 + 300 + 4];
    char type[KEEL_MAX_TYPE_LEN + 2];
    uint8_t id[KEEL_MAX_ID_LEN + 1];
    keel_call_body b;
    size_t n;

    memset(type, 'x', sizeof type);
    memset(id, 0, sizeof id);

    n = keel_call_body_encode(buf, type, KEEL_MAX_TYPE_LEN, id,
                              KEEL_MAX_ID_LEN, "m", 1);
    ck_assert_int_eq(call_body_parse_exact(buf, n, &b), 0);

    n = keel_call_body_encode(buf, type, KEEL_MAX_TYPE_LEN + 1, id, 1, "m", 1);
    ck_assert_int_eq(call_body_parse_exact(buf, n, &b), KEEL_ELIMIT);

    n = keel_call_body_encode(buf, type, 3, id, KEEL_MAX_ID_LEN + 1, "m", 1);
    ck_assert_int_eq(call_body_parse_exact(buf, n, &b), KEEL_ELIMIT);

    /* type length 255, body complete */
    memset(buf, 'y', sizeof buf);
    buf[0] = 255;
    buf[256] = 0;
    buf[257] = 0;
    ck_assert_int_eq(call_body_parse_exact(buf, 258, &b), KEEL_ELIMIT);
    /* but truncated, the structure is what is wrong */
    ck_assert_int_eq(call_body_parse_exact(buf, 100, &b), KEEL_EMALFORMED);

    /* empty type */
    n = keel_call_body_encode(buf, "", 0, "id", 2, "m", 1);
    ck_assert_int_eq(call_body_parse_exact(buf, n, &b), KEEL_EMALFORMED);
}
END_TEST

/* ---------------------------------------------------------- error body */

START_TEST(error_body_round_trip)
{
    uint8_t buf[64];
    const char *m;
    size_t ml, n;

    n = keel_error_body_encode(buf, KEEL_ENOTYPE, "no type 'x'", 11);
    ck_assert_uint_eq(n, 13);
    ck_assert_uint_eq(buf[0], 0);
    ck_assert_uint_eq(buf[1], 3); /* absolute value on the wire */
    ck_assert_int_eq(keel_error_body_parse(buf, n, &m, &ml), KEEL_ENOTYPE);
    ck_assert_uint_eq(ml, 11);
    ck_assert_mem_eq(m, "no type 'x'", 11);
    ck_assert_ptr_eq(m, (const char *)buf + 2);

    /* every code in the table survives the trip */
#define CHECK_CODE(name, val, msg)                                           \
    n = keel_error_body_encode(buf, (val), NULL, 0);                         \
    ck_assert_uint_eq(n, 2);                                                 \
    ck_assert_int_eq(keel_error_body_parse(buf, n, &m, &ml), (val));         \
    ck_assert_uint_eq(ml, 0);
    KEEL_ERRNO_MAP(CHECK_CODE)
#undef CHECK_CODE

    /* a positive code is sent as the same magnitude */
    n = keel_error_body_encode(buf, -KEEL_EOVERLOAD, "x", 1);
    ck_assert_uint_eq(buf[1], 24);
    ck_assert_int_eq(keel_error_body_parse(buf, n, &m, &ml), KEEL_EOVERLOAD);

    /* codes this build does not know still come back negative */
    buf[0] = 0xff;
    buf[1] = 0xff;
    ck_assert_int_eq(keel_error_body_parse(buf, 2, &m, &ml), -65535);
    buf[0] = 0;
    buf[1] = 200;
    ck_assert_int_eq(keel_error_body_parse(buf, 2, &m, &ml), -200);

    /* too short, or code 0 (which would read as success) */
    ck_assert_int_eq(keel_error_body_parse(buf, 0, &m, &ml), KEEL_EPROTO);
    ck_assert_uint_eq(ml, 0);
    ck_assert_int_eq(keel_error_body_parse(buf, 1, &m, &ml), KEEL_EPROTO);
    buf[0] = 0;
    buf[1] = 0;
    ck_assert_int_eq(keel_error_body_parse(buf, 2, &m, &ml), KEEL_EPROTO);
}
END_TEST

/* The worked example of docs/protocol.md, byte for byte. */
/* ------------------------------------------------------------- REPL */

/* A REPL body: from "n1", two units, the first with a put, a delete and
 * a prefix delete, the second with no ops. */
static size_t repl_sample(uint8_t *buf)
{
    static const uint8_t k1[] = {0, 7, 'a'}, k2[] = {0, 7, 'b', 'c'};
    size_t off = 0;

    off += keel_repl_head_encode(buf, "n1", 2, 0x1122334455667788ull, 0);
    off += keel_repl_unit_encode(buf + off, "gpu", 3, 7, 0x0102030405060708ull,
                                 42, 3);
    off += keel_repl_op_encode(buf + off, KEEL_REPL_PUT, k1, sizeof k1, 9,
                               "value", 5);
    off += keel_repl_op_encode(buf + off, KEEL_REPL_DEL, k2, sizeof k2, 0,
                               NULL, 0);
    off += keel_repl_op_encode(buf + off, KEEL_REPL_DEL_PREFIX, k1, 2, 0,
                               NULL, 0);
    off += keel_repl_unit_encode(buf + off, "", 0, 65535, 1, 1, 0);
    keel_repl_head_encode(buf, "n1", 2, 0x1122334455667788ull,
                          2); /* the count, once known */
    return off;
}

START_TEST(repl_round_trip)
{
    uint8_t buf[256];
    size_t len = repl_sample(buf), rest;
    keel_repl_head h;
    keel_repl_unit u;
    keel_repl_op op;
    const uint8_t *p, *ops;
    static const uint8_t want_head[] = {1,    2,    'n',  '1',  0x11, 0x22,
                                        0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
                                        0,    2};
    static const uint8_t want_unit[] = {3,    'g',  'p',  'u',  0,    7,
                                        1,    2,    3,    4,    5,    6,
                                        7,    8,    0,    0,    0,    0,
                                        0,    0,    0,    42,   0,    0,
                                        0,    3};
    static const uint8_t want_put[] = {1, 0, 3, 0, 7, 'a', 0, 0, 0, 0, 0,
                                       0, 0, 9, 0, 0, 0, 5, 'v', 'a', 'l',
                                       'u', 'e'};

    /* the bytes, as docs/protocol.md spells them */
    ck_assert_mem_eq(buf, want_head, sizeof want_head);
    ck_assert_mem_eq(buf + sizeof want_head, want_unit, sizeof want_unit);
    ck_assert_mem_eq(buf + sizeof want_head + sizeof want_unit, want_put,
                     sizeof want_put);
    ck_assert_uint_eq(keel_repl_op_size(KEEL_REPL_PUT, 3, 5), sizeof want_put);
    ck_assert_uint_eq(keel_repl_op_size(KEEL_REPL_DEL, 4, 99), 7);

    ck_assert_int_eq(keel_repl_head_parse(buf, len, &h), 0);
    ck_assert_uint_eq(h.flen, 2);
    ck_assert_mem_eq(h.from, "n1", 2);
    ck_assert_uint_eq(h.stream, 0x1122334455667788ull);
    ck_assert_uint_eq(h.nunits, 2);
    p = h.units;
    rest = h.units_len;
    ck_assert_int_eq(keel_repl_unit_next(&p, &rest, &u), 0);
    ck_assert_uint_eq(u.clen, 3);
    ck_assert_mem_eq(u.cap, "gpu", 3);
    ck_assert_uint_eq(u.shard, 7);
    ck_assert_uint_eq(u.epoch, 0x0102030405060708ull);
    ck_assert_uint_eq(u.seq, 42);
    ck_assert_uint_eq(u.nops, 3);
    ops = u.ops;
    {
        size_t olen = u.ops_len;
        ck_assert_int_eq(keel_repl_op_next(&ops, &olen, &op), 0);
        ck_assert_int_eq(op.kind, KEEL_REPL_PUT);
        ck_assert_uint_eq(op.klen, 3);
        ck_assert_uint_eq(op.version, 9);
        ck_assert_uint_eq(op.dlen, 5);
        ck_assert_mem_eq(op.data, "value", 5);
        ck_assert_int_eq(keel_repl_op_next(&ops, &olen, &op), 0);
        ck_assert_int_eq(op.kind, KEEL_REPL_DEL);
        ck_assert_uint_eq(op.klen, 4);
        ck_assert_mem_eq(op.key, "\0\7bc", 4);
        ck_assert_int_eq(keel_repl_op_next(&ops, &olen, &op), 0);
        ck_assert_int_eq(op.kind, KEEL_REPL_DEL_PREFIX);
        ck_assert_uint_eq(op.klen, 2);
        ck_assert_uint_eq(olen, 0);
    }
    ck_assert_int_eq(keel_repl_unit_next(&p, &rest, &u), 0);
    ck_assert_uint_eq(u.clen, 0);
    ck_assert_uint_eq(u.shard, 65535);
    ck_assert_uint_eq(u.nops, 0);
    ck_assert_uint_eq(u.ops_len, 0);
    ck_assert_uint_eq(rest, 0);
    ck_assert_ptr_eq(p, buf + len);
}
END_TEST

/* A snapshot piece: op kind 4 (every record of the unit) has no key and
 * no data, three bytes; a put follows it. */
START_TEST(repl_snapshot_op)
{
    static const uint8_t k1[] = {0, 7, 'a'};
    static const uint8_t want_del_unit[] = {4, 0, 0};
    uint8_t buf[128];
    size_t off = 0, rest, olen;
    keel_repl_head h;
    keel_repl_unit u;
    keel_repl_op op;
    const uint8_t *p, *ops;

    ck_assert_uint_eq(keel_repl_op_size(KEEL_REPL_DEL_UNIT, 0, 0), 3);
    off += keel_repl_head_encode(buf, "n1", 2, 5, 1);
    off += keel_repl_unit_encode(buf + off, "", 0, 7, 3, 9, 2);
    ck_assert_uint_eq(keel_repl_op_encode(buf + off, KEEL_REPL_DEL_UNIT, NULL,
                                          0, 0, NULL, 0),
                      3);
    ck_assert_mem_eq(buf + off, want_del_unit, 3);
    off += 3;
    off += keel_repl_op_encode(buf + off, KEEL_REPL_PUT, k1, sizeof k1, 2,
                               "v", 1);
    ck_assert_int_eq(keel_repl_head_parse(buf, off, &h), 0);
    p = h.units;
    rest = h.units_len;
    ck_assert_int_eq(keel_repl_unit_next(&p, &rest, &u), 0);
    ck_assert_uint_eq(u.seq, 9);
    ops = u.ops;
    olen = u.ops_len;
    ck_assert_int_eq(keel_repl_op_next(&ops, &olen, &op), 0);
    ck_assert_int_eq(op.kind, KEEL_REPL_DEL_UNIT);
    ck_assert_uint_eq(op.klen, 0);
    ck_assert_int_eq(keel_repl_op_next(&ops, &olen, &op), 0);
    ck_assert_int_eq(op.kind, KEEL_REPL_PUT);
    ck_assert_uint_eq(olen, 0);

    /* A check: no key, the digest after it. */
    {
        static const uint8_t want_check[11] = {5, 0, 0, 1, 2, 3, 4,
                                               5, 6, 7, 8};
        uint8_t cb[16];
        ck_assert_uint_eq(keel_repl_op_size(KEEL_REPL_CHECK_UNIT, 0, 0), 11);
        ck_assert_uint_eq(keel_repl_op_encode(cb, KEEL_REPL_CHECK_UNIT, NULL,
                                              0, 0x0102030405060708ull, NULL,
                                              0),
                          11);
        ck_assert_mem_eq(cb, want_check, 11);
        ops = cb;
        olen = 11;
        ck_assert_int_eq(keel_repl_op_next(&ops, &olen, &op), 0);
        ck_assert_int_eq(op.kind, KEEL_REPL_CHECK_UNIT);
        ck_assert_uint_eq(op.klen, 0);
        ck_assert_uint_eq(op.version, 0x0102030405060708ull);
        ck_assert_uint_eq(olen, 0);
        ops = cb; /* short of its digest */
        olen = 10;
        ck_assert_int_eq(keel_repl_op_next(&ops, &olen, &op),
                         KEEL_EMALFORMED);
        cb[2] = 2; /* a key: refused */
        ops = cb;
        olen = 11;
        ck_assert_int_eq(keel_repl_op_next(&ops, &olen, &op),
                         KEEL_EMALFORMED);
    }
}
END_TEST

/* Every truncation of a REPL body is refused by some step, never read
 * past; other versions, empty senders, bad op kinds and short keys too. */
START_TEST(repl_truncated_and_bad)
{
    uint8_t buf[256];
    size_t len = repl_sample(buf), cut;

    for (cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        keel_repl_head h;
        keel_repl_unit u;
        const uint8_t *p;
        size_t rest;
        int rc, i;

        memcpy(copy, buf, cut);
        rc = keel_repl_head_parse(copy, cut, &h);
        for (i = 0; rc == 0 && i < h.nunits; i++) {
            if (i == 0) {
                p = h.units;
                rest = h.units_len;
            }
            rc = keel_repl_unit_next(&p, &rest, &u);
        }
        ck_assert_msg(rc == KEEL_EMALFORMED, "cut at %zu: %d", cut, rc);
        free(copy);
    }
    {
        keel_repl_head h;
        keel_repl_unit u;
        const uint8_t *p;
        size_t rest;
        uint8_t b2[256];

        memcpy(b2, buf, len);
        b2[0] = 2;
        ck_assert_int_eq(keel_repl_head_parse(b2, len, &h), KEEL_EPROTO);
        b2[0] = 1;
        b2[1] = 0;
        ck_assert_int_eq(keel_repl_head_parse(b2, len, &h), KEEL_EMALFORMED);
        /* op kind 4 (the whole unit) with a key, and kind 5 */
        memcpy(b2, buf, len);
        b2[14 + 26] = 4;
        ck_assert_int_eq(keel_repl_head_parse(b2, len, &h), 0);
        p = h.units;
        rest = h.units_len;
        ck_assert_int_eq(keel_repl_unit_next(&p, &rest, &u), KEEL_EMALFORMED);
        b2[14 + 26] = 5;
        p = h.units;
        rest = h.units_len;
        ck_assert_int_eq(keel_repl_unit_next(&p, &rest, &u), KEEL_EMALFORMED);
        /* a key of one byte */
        memcpy(b2, buf, len);
        b2[14 + 26 + 2] = 1;
        ck_assert_int_eq(keel_repl_head_parse(b2, len, &h), 0);
        p = h.units;
        rest = h.units_len;
        ck_assert_int_eq(keel_repl_unit_next(&p, &rest, &u), KEEL_EMALFORMED);
        /* more ops announced than there are */
        memcpy(b2, buf, len);
        b2[14 + 25] = 4;
        ck_assert_int_eq(keel_repl_head_parse(b2, len, &h), 0);
        p = h.units;
        rest = h.units_len;
        ck_assert_int_eq(keel_repl_unit_next(&p, &rest, &u), KEEL_EMALFORMED);
    }
}
END_TEST

START_TEST(repl_acks_round_trip)
{
    uint8_t buf[64], *copy;
    size_t off = 2, len, cut;
    const uint8_t *p;
    uint16_t n = 0;
    keel_repl_ack a;
    static const uint8_t want[] = {0, 2,  3, 'g', 'p', 'u', 0, 7, 0, 0,
                                   0, 0,  0, 0,   0,   0,   1, 2, 0, 0,
                                   3, 0, 11, 0,   0,   0,   0, 0, 0, 0, 5};

    keel_repl_acks_count(buf, 2);
    off += keel_repl_ack_encode(buf + off, "gpu", 3, 7, 0, 258);
    off += keel_repl_ack_encode(buf + off, "", 0, 3, KEEL_EFENCED, 5);
    ck_assert_uint_eq(off, sizeof want);
    ck_assert_mem_eq(buf, want, sizeof want);
    ck_assert_uint_eq(KEEL_REPL_ACK_SIZE(3), 16);

    copy = malloc(off);
    memcpy(copy, buf, off);
    p = copy;
    len = off;
    ck_assert_int_eq(keel_repl_acks_parse(&p, &len, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(keel_repl_ack_next(&p, &len, &a), 0);
    ck_assert_mem_eq(a.cap, "gpu", 3);
    ck_assert_uint_eq(a.shard, 7);
    ck_assert_int_eq(a.status, 0);
    ck_assert_uint_eq(a.seq, 258);
    ck_assert_int_eq(keel_repl_ack_next(&p, &len, &a), 0);
    ck_assert_uint_eq(a.clen, 0);
    ck_assert_int_eq(a.status, KEEL_EFENCED);
    ck_assert_uint_eq(a.seq, 5);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(keel_repl_ack_next(&p, &len, &a), KEEL_EMALFORMED);
    free(copy);
    for (cut = 2; cut < 18; cut++) {
        copy = malloc(cut);
        memcpy(copy, buf, cut);
        p = copy + 2;
        len = cut - 2;
        ck_assert_int_eq(keel_repl_ack_next(&p, &len, &a), KEEL_EMALFORMED);
        free(copy);
    }
    p = buf;
    len = 1;
    ck_assert_int_eq(keel_repl_acks_parse(&p, &len, &n), KEEL_EMALFORMED);
}
END_TEST

/* The XFER head: flag bit 0 ends the unit, bit 1 makes a keep frame
 * (its record area is the sender's digest; docs/protocol.md). */
START_TEST(xfer_head_flags)
{
    uint8_t body[1 + 3 + 2 + 8 + 4 + 1 + 8];
    keel_xfer_head h;
    unsigned flags;

    memset(body, 0, sizeof body);
    body[0] = 3;
    memcpy(body + 1, "gpu", 3);
    body[4] = 0x01; /* shard 300 */
    body[5] = 0x2c;
    body[13] = 9; /* shard_epoch 9 */
    for (flags = 0; flags < 4; flags++) {
        body[1 + 3 + 2 + 8 + 4] = (uint8_t)flags;
        ck_assert_int_eq(keel_xfer_head_parse(body, sizeof body, &h), 0);
        ck_assert_int_eq(h.last, (int)(flags & 1));
        ck_assert_int_eq(h.keep, (int)(flags >> 1));
        ck_assert_uint_eq(h.shard, 300);
        ck_assert_uint_eq(h.epoch, 9);
        ck_assert_uint_eq(h.seq, 0);
        ck_assert_uint_eq(h.recs_len, 8);
        ck_assert_ptr_eq(h.recs, body + sizeof body - 8);
    }
    ck_assert_int_eq(keel_xfer_head_parse(body, 3 + 1 + 2 + 8 + 4, &h),
                     KEEL_EMALFORMED);
}
END_TEST

START_TEST(doc_example_bytes)
{
    static const uint8_t call[] = {
        0x00, 0x00, 0x00, 0x1c, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x07, 0x63, 0x6f, 0x75, 0x6e, 0x74,
        0x65, 0x72, 0x00, 0x02, 0x63, 0x31, 0x69, 0x6e, 0x63, 0x72};
    static const uint8_t reply[] = {0x00, 0x00, 0x00, 0x0d, 0x03, 0x00,
                                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                    0x00, 0x00, 0x00, 0x01, 0x31};
    static const uint8_t error[] = {
        0x00, 0x00, 0x00, 0x29, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x03, 0x75, 0x6e, 0x6b, 0x6e,
        0x6f, 0x77, 0x6e, 0x20, 0x61, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x74,
        0x79, 0x70, 0x65, 0x20, 0x27, 0x63, 0x6f, 0x75, 0x6e, 0x74, 0x72,
        0x27};
    uint8_t buf[64];
    size_t n;

    n = keel_call_body_encode(buf + KEEL_FRAME_HEADER, "counter", 7, "c1", 2,
                              "incr", 4);
    keel_frame_header(buf, KEEL_FRAME_CALL, 1, n);
    ck_assert_uint_eq(KEEL_FRAME_HEADER + n, sizeof call);
    ck_assert_mem_eq(buf, call, sizeof call);

    keel_frame_header(buf, KEEL_FRAME_REPLY, 1, 1);
    buf[KEEL_FRAME_HEADER] = '1';
    ck_assert_mem_eq(buf, reply, sizeof reply);

    n = keel_error_body_encode(buf + KEEL_FRAME_HEADER, KEEL_ENOTYPE,
                               "unknown actor type 'countr'", 27);
    keel_frame_header(buf, KEEL_FRAME_ERROR, 2, n);
    ck_assert_uint_eq(KEEL_FRAME_HEADER + n, sizeof error);
    ck_assert_mem_eq(buf, error, sizeof error);
}
END_TEST

/* -------------------------------------------------------- test server */

enum srv_mode {
    SRV_ECHO,    /* answers like a node: CALL echoes its message */
    SRV_SILENT,  /* reads everything, never answers */
    SRV_GARBAGE, /* sends a frame with a bad length, then waits */
    SRV_HANGUP,  /* accepts and closes at once */
    SRV_REFUSE,  /* refuses the first frame as too big and hangs up
                  * without reading the rest, like a node does */
    SRV_TAKE_HANGUP, /* reads one whole frame, closes without answering */
    SRV_FAREWELL, /* reads one whole frame, then says goodbye like a
                   * stopping node: ERROR ESTOPPING quoting id 0, EOF */
    SRV_HTTP,     /* an HTTP server: answers the hello 400 and closes */
    SRV_OLD,      /* a node older than the hello: reads ours as a frame
                   * over its limit, ERROR ETOOBIG */
    SRV_V2,       /* a node of protocol version 2 refusing version 1 */
    SRV_OVERLOAD  /* refuses at once with a bare ERROR EOVERLOAD */
};

struct test_server {
    int lfd;
    int port;
    enum srv_mode mode;
    pthread_t thread;
};

struct obuf {
    uint8_t *p;
    size_t len, cap;
};

static void obuf_frame(struct obuf *o, uint8_t kind, uint64_t rid,
                       const void *body, size_t blen)
{
    size_t need = o->len + KEEL_FRAME_HEADER + blen;

    if (need > o->cap) {
        o->cap = need * 2;
        o->p = realloc(o->p, o->cap);
        if (o->p == NULL)
            abort();
    }
    keel_frame_header(o->p + o->len, kind, rid, blen);
    if (blen > 0)
        memcpy(o->p + o->len + KEEL_FRAME_HEADER, body, blen);
    o->len = need;
}

static void obuf_error(struct obuf *o, uint64_t rid, int code,
                       const char *msg)
{
    uint8_t body[256];
    size_t n = keel_error_body_encode(body, code, msg, strlen(msg));

    obuf_frame(o, KEEL_FRAME_ERROR, rid, body, n);
}

static int send_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void drain(int fd)
{
    char b[4096];
    ssize_t n;

    do
        n = read(fd, b, sizeof b);
    while (n > 0 || (n < 0 && errno == EINTR));
}

/* Reads one whole frame (into nothing). 0, or -1 when the client closed
 * first. */
static int read_one_frame(int fd)
{
    uint8_t buf[4096];
    size_t got = 0;
    keel_frame f;

    for (;;) {
        ssize_t r = read(fd, buf + got, sizeof buf - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
        if (keel_frame_parse(buf, got, sizeof buf, &f) > 0)
            return 0;
        if (got == sizeof buf)
            return -1;
    }
}

/* The flags of the SUBSCRIBEs the echo server saw, in order (server
 * thread; read once it has been joined). */
static int sub_seen;
static uint8_t sub_flags_seen[4];

/* Answers one frame into o. Returns 0 to go on, -1 to close. */
static int serve_frame(const keel_frame *f, struct obuf *o)
{
    keel_call_body b;
    int rc;

    switch (f->kind) {
    case KEEL_FRAME_CALL:
    case KEEL_FRAME_CAST:
        rc = keel_call_body_parse(f->body, f->body_len, &b);
        if (rc < 0) {
            obuf_error(o, f->request_id, rc, keel_strerror(rc));
            return rc == KEEL_EMALFORMED ? -1 : 0;
        }
        if (b.tlen == 4 && memcmp(b.type, "fail", 4) == 0)
            obuf_error(o, f->request_id, KEEL_ENOTYPE, "no such type");
        else if (f->kind == KEEL_FRAME_CALL)
            obuf_frame(o, KEEL_FRAME_REPLY, f->request_id, b.msg, b.msglen);
        else
            obuf_frame(o, KEEL_FRAME_REPLY, f->request_id, NULL, 0);
        return 0;
    case KEEL_FRAME_STAT:
        obuf_frame(o, KEEL_FRAME_REPLY, f->request_id, "messages 1\n", 11);
        return 0;
    case KEEL_FRAME_PING:
        obuf_frame(o, KEEL_FRAME_PONG, f->request_id, f->body, f->body_len);
        return 0;
    case KEEL_FRAME_SUBSCRIBE:
        /* As a node from before event payloads: no flag taken; else
         * "unchanged since the version given". */
        if (sub_seen < 4)
            sub_flags_seen[sub_seen++] = f->flags;
        if (f->flags != 0)
            obuf_error(o, f->request_id, KEEL_EMALFORMED,
                       "SUBSCRIBE takes no flags");
        else
            obuf_frame(o, KEEL_FRAME_REPLY, f->request_id, NULL, 0);
        return 0;
    default:
        obuf_error(o, f->request_id, KEEL_EPROTO, "not a request");
        return 0;
    }
}

static void serve_echo(int fd)
{
    const size_t max = 16u << 20;
    struct obuf o = {NULL, 0, 0};
    size_t len = 0, cap = 1 << 16;
    uint8_t *in = malloc(cap);
    int closing = 0;

    if (in == NULL)
        abort();
    while (!closing) {
        size_t pos = 0;
        ssize_t r;
        long n;

        if (len == cap) {
            cap *= 2;
            in = realloc(in, cap);
            if (in == NULL)
                abort();
        }
        r = read(fd, in + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        /* Answer every whole frame read so far in one send. */
        for (;;) {
            keel_frame f;

            n = keel_frame_parse(in + pos, len - pos, max, &f);
            if (n == 0)
                break;
            if (n < 0) {
                obuf_error(&o, f.request_id, (int)n, keel_strerror((int)n));
                closing = 1;
                break;
            }
            pos += (size_t)n;
            if (serve_frame(&f, &o) < 0) {
                closing = 1;
                break;
            }
        }
        memmove(in, in + pos, len - pos);
        len -= pos;
        if (o.len > 0 && send_all(fd, o.p, o.len) < 0)
            break;
        o.len = 0;
    }
    free(in);
    free(o.p);
}

static void serve_refuse(int fd)
{
    uint8_t hdr[KEEL_FRAME_HEADER];
    struct obuf o = {NULL, 0, 0};
    size_t got = 0;
    keel_frame f;

    while (got < sizeof hdr) {
        ssize_t r = read(fd, hdr + got, sizeof hdr - got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
        got += (size_t)r;
    }
    ck_assert_int_eq(keel_frame_parse(hdr, sizeof hdr, 1024, &f),
                     KEEL_ETOOBIG);
    obuf_error(&o, f.request_id, KEEL_ETOOBIG, "frame larger than 1024");
    (void)send_all(fd, o.p, o.len);
    free(o.p);
    /* closing with unread input makes the kernel reset the connection */
}

/* The client's hello: 0 when it came whole and well formed. */
static int read_hello(int fd)
{
    uint8_t h[KEEL_HELLO_LEN];
    size_t got = 0;
    unsigned v;

    while (got < sizeof h) {
        ssize_t r = read(fd, h + got, sizeof h - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return keel_hello_parse(h, sizeof h, &v) == KEEL_HELLO_LEN &&
                   v == KEEL_PROTO_VERSION
               ? 0
               : -1;
}

/* A server that is not what the client expects. */
static void serve_odd(int fd, enum srv_mode mode)
{
    static const char http[] = "HTTP/1.1 400 Bad Request\r\n"
                               "Content-Length: 0\r\n\r\n";
    struct obuf o = {NULL, 0, 0};
    uint8_t hello[KEEL_HELLO_LEN];

    if (mode != SRV_OVERLOAD && read_hello(fd) != 0)
        return;
    if (mode == SRV_HTTP) {
        (void)send_all(fd, (const uint8_t *)http, sizeof http - 1);
    } else if (mode == SRV_OLD) {
        obuf_error(&o, 0, KEEL_ETOOBIG, "frame larger than the maximum");
    } else if (mode == SRV_V2) {
        keel_hello_encode(hello, 2);
        (void)send_all(fd, hello, sizeof hello);
        obuf_error(&o, 0, KEEL_EPROTO, "unsupported protocol version 1");
    } else {
        obuf_error(&o, 0, KEEL_EOVERLOAD, "node at its connection limit");
    }
    if (o.len > 0)
        (void)send_all(fd, o.p, o.len);
    free(o.p);
    shutdown(fd, SHUT_WR);
    drain(fd);
}

static void *server_main(void *arg)
{
    struct test_server *s = arg;
    static const uint8_t garbage[] = {0, 0, 0, 5, 1, 0, 0, 0, 0};
    uint8_t hello[KEEL_HELLO_LEN];
    int fd;

    do
        fd = accept(s->lfd, NULL, NULL);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return NULL;
    /* A node's hello comes first (the client reads it before any frame);
     * the client's leaves with its first request, and is read first. */
    keel_hello_encode(hello, KEEL_PROTO_VERSION);
    if (s->mode == SRV_ECHO || s->mode == SRV_GARBAGE ||
        s->mode == SRV_REFUSE || s->mode == SRV_TAKE_HANGUP ||
        s->mode == SRV_FAREWELL) {
        if (send_all(fd, hello, sizeof hello) != 0) {
            close(fd);
            return NULL;
        }
    }
    if ((s->mode == SRV_ECHO || s->mode == SRV_REFUSE ||
         s->mode == SRV_TAKE_HANGUP || s->mode == SRV_FAREWELL) &&
        read_hello(fd) != 0) {
        close(fd);
        return NULL;
    }
    switch (s->mode) {
    case SRV_HTTP:
    case SRV_OLD:
    case SRV_V2:
    case SRV_OVERLOAD:
        serve_odd(fd, s->mode);
        break;
    case SRV_ECHO:
        serve_echo(fd);
        break;
    case SRV_SILENT:
        drain(fd);
        break;
    case SRV_GARBAGE:
        if (send_all(fd, garbage, sizeof garbage) == 0)
            drain(fd);
        break;
    case SRV_HANGUP:
        break;
    case SRV_REFUSE:
        serve_refuse(fd);
        break;
    case SRV_TAKE_HANGUP:
        (void)read_one_frame(fd);
        break;
    case SRV_FAREWELL:
        if (read_one_frame(fd) == 0) {
            struct obuf o = {NULL, 0, 0};
            obuf_error(&o, 0, KEEL_ESTOPPING, "node is stopping");
            (void)send_all(fd, o.p, o.len);
            free(o.p);
            shutdown(fd, SHUT_WR);
            drain(fd);
        }
        break;
    }
    close(fd);
    return NULL;
}

static void server_start(struct test_server *s, enum srv_mode mode)
{
    struct sockaddr_in sa;
    socklen_t salen = sizeof sa;

    s->mode = mode;
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(s->lfd, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    ck_assert_int_eq(bind(s->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(s->lfd, 4), 0);
    ck_assert_int_eq(getsockname(s->lfd, (struct sockaddr *)&sa, &salen), 0);
    s->port = ntohs(sa.sin_port);
    ck_assert_int_eq(pthread_create(&s->thread, NULL, server_main, s), 0);
}

/* Call after the client is closed: the server thread ends on EOF. */
static void server_stop(struct test_server *s)
{
    pthread_join(s->thread, NULL);
    close(s->lfd);
}

static keel_client *connect_to(const struct test_server *s, int timeout_ms)
{
    char addr[64];
    keel_client *c = NULL;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", s->port);
    ck_assert_int_eq(keel_client_connect(addr, timeout_ms, &c), 0);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_ge(keel_client_fd(c), 0);
    return c;
}

/* Waits (at most 5 s) until the server's close is visible to the client. */
static void wait_readable(keel_client *c)
{
    struct pollfd pfd = {keel_client_fd(c), POLLIN, 0};

    ck_assert_int_eq(poll(&pfd, 1, 5000), 1);
}

/* -------------------------------------------------------------- client */

START_TEST(client_call_reply_and_error)
{
    struct test_server s;
    keel_client *c;
    char *reply;
    size_t rlen;

    server_start(&s, SRV_ECHO);
    c = connect_to(&s, 5000);

    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "counter", "c1", 2,
                                      "incr", 4, &reply, &rlen),
                     0);
    ck_assert_uint_eq(rlen, 4);
    ck_assert_str_eq(reply, "incr"); /* NUL-terminated copy */
    free(reply);

    /* an id with NUL bytes goes through untouched */
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "kv", "\0a\0", 3,
                                      "get k", 5, &reply, &rlen),
                     0);
    ck_assert_str_eq(reply, "get k");
    free(reply);

    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CAST, "counter", "c1", 2,
                                      "incr", 4, &reply, &rlen),
                     0);
    ck_assert_uint_eq(rlen, 0);
    ck_assert_str_eq(reply, "");
    free(reply);

    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "fail", "x", 1,
                                      "m", 1, &reply, &rlen),
                     KEEL_ENOTYPE);
    ck_assert_ptr_nonnull(reply);
    ck_assert_uint_eq(rlen, 12);
    ck_assert_str_eq(reply, "no such type");
    free(reply);

    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_STAT, NULL, NULL, 0, NULL,
                                      0, &reply, &rlen),
                     0);
    ck_assert_str_eq(reply, "messages 1\n");
    free(reply);

    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_PING, NULL, NULL, 0,
                                      "p\0q", 3, &reply, &rlen),
                     0);
    ck_assert_uint_eq(rlen, 3);
    ck_assert_mem_eq(reply, "p\0q", 3);
    free(reply);

    /* reply pointers may be omitted */
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "t", "i", 1, "m",
                                      1, NULL, NULL),
                     0);

    keel_client_close(c);
    server_stop(&s);
}
END_TEST

START_TEST(client_pipelining)
{
    struct test_server s;
    keel_client *c;
    char msg[32];
    keel_frame f;

    server_start(&s, SRV_ECHO);
    c = connect_to(&s, 5000);
    for (int i = 0; i < 100; i++) {
        int n = snprintf(msg, sizeof msg, "m%d", i);

        ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_CALL, 1000 + i,
                                           "counter", "c", 1, msg,
                                           (size_t)n),
                         0);
    }
    ck_assert_int_eq(keel_client_flush(c), 0);
    for (int i = 0; i < 100; i++) {
        int n = snprintf(msg, sizeof msg, "m%d", i);

        ck_assert_int_eq(keel_client_recv(c, &f), 0);
        ck_assert_uint_eq(f.kind, KEEL_FRAME_REPLY);
        ck_assert(f.request_id == (uint64_t)(1000 + i));
        ck_assert_uint_eq(f.body_len, (size_t)n);
        ck_assert_mem_eq(f.body, msg, (size_t)n);
    }

    /* kinds mixed in one batch keep their order and ids */
    ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_STAT, 1, "ignored", "x",
                                       1, "ignored", 7),
                     0);
    ck_assert_int_eq(
        keel_client_queue(c, KEEL_FRAME_PING, 2, NULL, NULL, 0, "hi", 2), 0);
    ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_CAST, 3, "counter", "c",
                                       1, "incr", 4),
                     0);
    ck_assert_int_eq(keel_client_flush(c), 0);
    ck_assert_int_eq(keel_client_recv(c, &f), 0);
    ck_assert(f.request_id == 1 && f.kind == KEEL_FRAME_REPLY);
    ck_assert_mem_eq(f.body, "messages 1\n", 11);
    ck_assert_int_eq(keel_client_recv(c, &f), 0);
    ck_assert(f.request_id == 2 && f.kind == KEEL_FRAME_PONG);
    ck_assert_mem_eq(f.body, "hi", 2);
    ck_assert_int_eq(keel_client_recv(c, &f), 0);
    ck_assert(f.request_id == 3 && f.kind == KEEL_FRAME_REPLY);
    ck_assert_uint_eq(f.body_len, 0);

    keel_client_close(c);
    server_stop(&s);
}
END_TEST

START_TEST(client_call_skips_other_ids)
{
    struct test_server s;
    keel_client *c;
    char *reply;
    size_t rlen;

    server_start(&s, SRV_ECHO);
    c = connect_to(&s, 5000);
    /* An answer nobody waits for any more arrives before the call's own. */
    ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_CALL, 987654, "t", "i",
                                       1, "stale", 5),
                     0);
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "t", "i", 1,
                                      "fresh", 5, &reply, &rlen),
                     0);
    ck_assert_str_eq(reply, "fresh");
    free(reply);
    keel_client_close(c);
    server_stop(&s);
}
END_TEST

START_TEST(client_large_message)
{
    const size_t big = 700 * 1024;
    struct test_server s;
    keel_client *c;
    char *msg = malloc(big), *reply;
    size_t rlen;

    ck_assert_ptr_nonnull(msg);
    for (size_t i = 0; i < big; i++)
        msg[i] = (char)(i * 7 + 3);
    server_start(&s, SRV_ECHO);
    c = connect_to(&s, 5000);
    for (int round = 0; round < 3; round++) {
        ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "blob", "b", 1,
                                          msg, big, &reply, &rlen),
                         0);
        ck_assert_uint_eq(rlen, big);
        ck_assert(memcmp(reply, msg, big) == 0);
        free(reply);
    }

    /* A reply over the client's own limit is refused, not buffered. */
    keel_client_set_max_frame(c, 1024);
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "blob", "b", 1, msg,
                                      2000, &reply, &rlen),
                     KEEL_ETOOBIG);
    ck_assert_ptr_null(reply);
    /* the stream is out of step now: no further sends (nothing leaves) */
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "blob", "b", 1, msg,
                                      1, &reply, &rlen),
                     KEEL_ENOTSENT);
    keel_client_close(c);
    server_stop(&s);
    free(msg);
}
END_TEST

/* The server answers before the request is even sent in full, then
 * resets the connection: the call still reports the server's error, not
 * just a failed send. */
START_TEST(client_refused_mid_send)
{
    const size_t big = 32u << 20;
    struct test_server s;
    keel_client *c;
    char *msg = calloc(1, big), *reply;
    size_t rlen;

    ck_assert_ptr_nonnull(msg);
    server_start(&s, SRV_REFUSE);
    c = connect_to(&s, 5000);
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "kv", "k", 1, msg,
                                      big, &reply, &rlen),
                     KEEL_ETOOBIG);
    ck_assert_ptr_nonnull(reply);
    ck_assert_str_eq(reply, "frame larger than 1024");
    free(reply);
    keel_client_close(c);
    server_stop(&s);
    free(msg);
}
END_TEST

START_TEST(client_recv_timeout)
{
    struct test_server s;
    keel_client *c;
    keel_frame f;
    char *reply = (char *)1;
    size_t rlen;
    int64_t t0, dt;

    server_start(&s, SRV_SILENT);
    c = connect_to(&s, 300);

    t0 = now_ms();
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "counter", "c1", 2,
                                      "incr", 4, &reply, &rlen),
                     KEEL_ETIMEDOUT);
    dt = now_ms() - t0;
    ck_assert_ptr_null(reply);
    ck_assert_int_ge(dt, 290);
    ck_assert_int_lt(dt, 3000);

    /* a timeout leaves the connection usable */
    ck_assert_int_eq(
        keel_client_queue(c, KEEL_FRAME_PING, 5, NULL, NULL, 0, "x", 1), 0);
    ck_assert_int_eq(keel_client_flush(c), 0);
    t0 = now_ms();
    ck_assert_int_eq(keel_client_recv(c, &f), KEEL_ETIMEDOUT);
    dt = now_ms() - t0;
    ck_assert_int_ge(dt, 290);
    ck_assert_int_lt(dt, 3000);

    keel_client_close(c);
    server_stop(&s);
}
END_TEST

START_TEST(client_bad_server)
{
    struct test_server s;
    keel_client *c;
    keel_frame f;
    char *reply;
    size_t rlen;

    server_start(&s, SRV_GARBAGE);
    c = connect_to(&s, 5000);
    ck_assert_int_eq(keel_client_recv(c, &f), KEEL_EMALFORMED);
    ck_assert_int_eq(
        keel_client_queue(c, KEEL_FRAME_PING, 1, NULL, NULL, 0, NULL, 0), 0);
    ck_assert_int_eq(keel_client_flush(c), KEEL_ENOTSENT);
    keel_client_close(c);
    server_stop(&s);

    /* closed before the request: it is not sent, and the client says so */
    server_start(&s, SRV_HANGUP);
    c = connect_to(&s, 5000);
    wait_readable(c);
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_PING, NULL, NULL, 0, "x",
                                      1, &reply, &rlen),
                     KEEL_ENOTSENT);
    ck_assert_ptr_null(reply);
    keel_client_close(c);
    server_stop(&s);

    /* closed after taking the request: it may have run */
    server_start(&s, SRV_TAKE_HANGUP);
    c = connect_to(&s, 5000);
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_PING, NULL, NULL, 0, "x",
                                      1, &reply, &rlen),
                     KEEL_ECONN);
    ck_assert_ptr_null(reply);
    keel_client_close(c);
    server_stop(&s);
}
END_TEST

/* A stopping node's farewell (ERROR ESTOPPING quoting id 0) answers the
 * call in flight (it did not run); nothing is sent after it. */
START_TEST(client_farewell)
{
    struct test_server s;
    keel_client *c;
    char *reply;
    size_t rlen;

    server_start(&s, SRV_FAREWELL);
    c = connect_to(&s, 5000);
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "counter", "c1", 2,
                                      "incr", 4, &reply, &rlen),
                     KEEL_ESTOPPING);
    ck_assert_ptr_nonnull(reply);
    free(reply);
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "counter", "c1", 2,
                                      "incr", 4, &reply, &rlen),
                     KEEL_ENOTSENT);
    ck_assert_ptr_null(reply);
    keel_client_close(c);
    server_stop(&s);
}
END_TEST

START_TEST(client_raw_malformed)
{
    struct test_server s;
    keel_client *c;
    keel_frame f;
    uint8_t bad[KEEL_FRAME_HEADER];
    const char *m;
    size_t ml;

    server_start(&s, SRV_ECHO);
    c = connect_to(&s, 5000);
    keel_frame_header(bad, 99, 5, 0);
    ck_assert_int_eq(keel_client_queue_raw(c, bad, sizeof bad), 0);
    ck_assert_int_eq(keel_client_flush(c), 0);
    ck_assert_int_eq(keel_client_recv(c, &f), 0);
    ck_assert_uint_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert(f.request_id == 5);
    ck_assert_int_eq(keel_error_body_parse(f.body, f.body_len, &m, &ml),
                     KEEL_EMALFORMED);
    ck_assert_int_eq(keel_client_recv(c, &f), KEEL_ECONN);
    keel_client_close(c);
    server_stop(&s);
}
END_TEST

START_TEST(client_queue_checks)
{
    struct test_server s;
    keel_client *c;
    char type[KEEL_MAX_TYPE_LEN + 2];
    uint8_t id[KEEL_MAX_ID_LEN + 1];
    keel_frame f;

    memset(type, 't', sizeof type);
    type[sizeof type - 1] = '\0';
    memset(id, 0, sizeof id);
    server_start(&s, SRV_ECHO);
    c = connect_to(&s, 5000);

    ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_CALL, 1, type, id, 1,
                                       "m", 1),
                     KEEL_ELIMIT);
    type[KEEL_MAX_TYPE_LEN] = '\0';
    ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_CALL, 1, type, id,
                                       KEEL_MAX_ID_LEN + 1, "m", 1),
                     KEEL_ELIMIT);
    ck_assert_int_eq(
        keel_client_queue(c, KEEL_FRAME_CALL, 1, "", id, 1, "m", 1),
        KEEL_EINVAL);
    ck_assert_int_eq(
        keel_client_queue(c, KEEL_FRAME_CALL, 1, NULL, id, 1, "m", 1),
        KEEL_EINVAL);
    ck_assert_int_eq(
        keel_client_queue(c, KEEL_FRAME_REPLY, 1, "t", id, 1, "m", 1),
        KEEL_EINVAL);
    ck_assert_int_eq(keel_client_queue(c, 99, 1, "t", id, 1, "m", 1),
                     KEEL_EINVAL);
    ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_CALL, 1, type, id,
                                       KEEL_MAX_ID_LEN, "m", 1),
                     0);

    /* only the accepted request went out */
    ck_assert_int_eq(keel_client_flush(c), 0);
    ck_assert_int_eq(keel_client_recv(c, &f), 0);
    ck_assert(f.request_id == 1 && f.kind == KEEL_FRAME_REPLY);
    ck_assert_mem_eq(f.body, "m", 1);
    keel_client_close(c);
    server_stop(&s);
}
END_TEST

START_TEST(client_connect_errors)
{
    struct sockaddr_in sa;
    socklen_t salen = sizeof sa;
    keel_client *c = (keel_client *)1;
    char addr[64];
    int fd;

    ck_assert_int_eq(keel_client_connect("nonsense", 1000, &c), KEEL_EADDR);
    ck_assert_int_eq(keel_client_connect("127.0.0.1:", 1000, &c), KEEL_EADDR);
    ck_assert_int_eq(keel_client_connect(":7420", 1000, &c), KEEL_EADDR);
    ck_assert_int_eq(keel_client_connect("127.0.0.1:0", 1000, &c),
                     KEEL_EADDR);
    ck_assert_int_eq(keel_client_connect("127.0.0.1:65536", 1000, &c),
                     KEEL_EADDR);
    ck_assert_int_eq(keel_client_connect("127.0.0.1:7x", 1000, &c),
                     KEEL_EADDR);
    ck_assert_int_eq(keel_client_connect("no-such-host.invalid:7420", 1000,
                                         &c),
                     KEEL_EADDR);
    ck_assert_ptr_eq(c, (keel_client *)1); /* untouched on error */

    /* a bound port nobody listens on refuses the connection */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &salen), 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    ck_assert_int_eq(keel_client_connect(addr, 1000, &c), KEEL_ENOTSENT);
    snprintf(addr, sizeof addr, "localhost:%d", ntohs(sa.sin_port));
    ck_assert_int_eq(keel_client_connect(addr, 0, &c), KEEL_ENOTSENT);
    ck_assert_ptr_eq(c, (keel_client *)1);
    close(fd);
}
END_TEST

/* A refused connect is ENOTSENT, and says why. */
START_TEST(client_connect_refused_notsent)
{
    struct sockaddr_in sa;
    socklen_t salen = sizeof sa;
    keel_client *c = NULL;
    char addr[64], why[128];
    int fd;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &salen), 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    ck_assert_int_eq(keel_client_connect_why(addr, 1000, &c, why, sizeof why),
                     KEEL_ENOTSENT);
    ck_assert_ptr_null(c);
    ck_assert_str_eq(why, "connection refused");
    ck_assert_str_eq(keel_err_name(KEEL_ENOTSENT), "ENOTSENT");
    ck_assert_int_eq(KEEL_ENOTSENT, -36);
    close(fd);
}
END_TEST

START_TEST(client_connect_by_name)
{
    struct test_server s;
    keel_client *c = NULL;
    char addr[64];
    char *reply;
    size_t rlen;

    server_start(&s, SRV_ECHO);
    snprintf(addr, sizeof addr, "localhost:%d", s.port);
    ck_assert_int_eq(keel_client_connect(addr, 0, &c), 0);
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_PING, NULL, NULL, 0, "n",
                                      1, &reply, &rlen),
                     0);
    free(reply);
    keel_client_close(c);
    server_stop(&s);
}
END_TEST

START_TEST(hello_round_trip)
{
    uint8_t h[KEEL_HELLO_LEN];
    unsigned v = 99;
    size_t i;

    keel_hello_encode(h, KEEL_PROTO_VERSION);
    ck_assert_int_eq(memcmp(h, "KEEL\x01\x00\r\n", KEEL_HELLO_LEN), 0);
    ck_assert_int_eq(keel_hello_parse(h, sizeof h, &v), KEEL_HELLO_LEN);
    ck_assert_uint_eq(v, KEEL_PROTO_VERSION);
    /* every proper prefix asks for more */
    for (i = 0; i < KEEL_HELLO_LEN; i++)
        ck_assert_int_eq(keel_hello_parse(h, i, &v), 0);
    /* a frame, an HTTP request line, a broken line end: no hello */
    ck_assert_int_eq(keel_hello_parse((const uint8_t *)"\0\0\0\x1c", 4, &v),
                     KEEL_EPROTO);
    ck_assert_int_eq(keel_hello_parse((const uint8_t *)"GET / HTTP/1.1", 14,
                                      &v),
                     KEEL_EPROTO);
    ck_assert_int_eq(keel_hello_parse((const uint8_t *)"KEEL\x01\x00\n\r", 8,
                                      &v),
                     KEEL_EPROTO);
    ck_assert_int_eq(keel_hello_parse((const uint8_t *)"KEEL\x01\x00X", 7,
                                      &v),
                     KEEL_EPROTO);
    /* flags ride along, and the parse ignores them */
    keel_hello_encode_flags(h, KEEL_PROTO_VERSION, KEEL_HELLO_OBATCH);
    ck_assert_int_eq(memcmp(h, "KEEL\x01\x01\r\n", KEEL_HELLO_LEN), 0);
    ck_assert_int_eq(keel_hello_parse(h, sizeof h, &v), KEEL_HELLO_LEN);
    ck_assert_uint_eq(v, KEEL_PROTO_VERSION);
    ck_assert_uint_eq(keel_hello_flags(h), KEEL_HELLO_OBATCH);
    /* another version reads as such */
    keel_hello_encode(h, 7);
    ck_assert_int_eq(keel_hello_parse(h, sizeof h, &v), KEEL_HELLO_LEN);
    ck_assert_uint_eq(v, 7);
    /* read as a frame's length, the magic is far over any limit */
    {
        keel_frame f;
        ck_assert_int_eq(keel_frame_parse(h, sizeof h, 64u << 20, &f),
                         KEEL_ETOOBIG);
    }
}
END_TEST

/* A client that reached something else says what, in its error: an HTTP
 * server, a node older than the hello, a node of another version; a bare
 * refusal before the hello is read as the node's error. */
START_TEST(client_hello_mismatch)
{
    static const struct {
        enum srv_mode mode;
        int code;
        const char *says;
    } cases[] = {
        {SRV_HTTP, KEEL_EPROTO, "not a keel node: it answered like an HTTP "
                                "server ('HTTP/1.1 400 Bad Request')"},
        {SRV_OLD, KEEL_EPROTO, "older than the protocol hello"},
        {SRV_V2, KEEL_EPROTO, "speaks protocol version 2; this client "
                              "speaks version 1"},
        {SRV_OVERLOAD, KEEL_EOVERLOAD, "node at its connection limit"},
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct test_server s;
        keel_client *c;
        char *reply = NULL, why[400];
        size_t rlen;
        int rc;

        /* through a call: the hello leaves with it */
        server_start(&s, cases[i].mode);
        c = connect_to(&s, 5000);
        rc = keel_client_call(c, KEEL_FRAME_PING, NULL, NULL, 0, "x", 1,
                              &reply, &rlen);
        ck_assert_msg(rc == cases[i].code, "case %zu: %s", i,
                      keel_err_name(rc));
        if (cases[i].code == KEEL_EPROTO) {
            ck_assert_ptr_null(reply);
            ck_assert_msg(strstr(keel_client_why(c), cases[i].says) != NULL,
                          "case %zu: %s", i, keel_client_why(c));
        } else {
            ck_assert_ptr_nonnull(reply);
            ck_assert_str_eq(reply, cases[i].says);
        }
        free(reply);
        keel_client_close(c);
        server_stop(&s);

        /* through keel_client_hello, before any request */
        server_start(&s, cases[i].mode);
        c = connect_to(&s, 5000);
        rc = keel_client_hello(c, why, sizeof why);
        ck_assert_msg(rc == cases[i].code, "case %zu: %s", i,
                      keel_err_name(rc));
        ck_assert_msg(strstr(why, cases[i].says) != NULL, "case %zu: %s", i,
                      why);
        keel_client_close(c);
        server_stop(&s);
    }
}
END_TEST

/* The hellos cost no round trip of their own, and keel_client_hello on a
 * node's connection succeeds. */
START_TEST(client_hello_ok)
{
    struct test_server s;
    keel_client *c;
    char *reply = NULL, why[400];
    size_t rlen;

    server_start(&s, SRV_ECHO);
    c = connect_to(&s, 5000);
    ck_assert_int_eq(keel_client_hello(c, why, sizeof why), 0);
    ck_assert_int_eq(keel_client_hello(c, why, sizeof why), 0);
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "t", "i", 1, "hi",
                                      2, &reply, &rlen),
                     0);
    ck_assert_str_eq(reply, "hi");
    ck_assert_str_eq(keel_client_why(c), "");
    free(reply);
    keel_client_close(c);
    server_stop(&s);
}
END_TEST


/* SUBSCRIBE bodies and EVENT bodies (docs/protocol.md, "Following an
 * actor"): round trips, the exact bytes, and what is refused. */
START_TEST(follow_codec)
{
    static const uint8_t sub_bytes[] = {7, 'c', 'o', 'u', 'n', 't', 'e', 'r',
                                        0, 2, 'c', '1', 0, 0, 0, 0, 0, 0,
                                        1, 2};
    static const uint8_t end_bytes[] = {2, 0, 0, 0, 0, 0, 0, 0, 9,
                                        0, 12, 'g', 'o', 'n', 'e'};
    uint8_t buf[64], big[300];
    keel_call_body cb;
    keel_event ev;
    uint64_t since;
    size_t n;

    n = keel_subscribe_encode(buf, "counter", 7, "c1", 2, 258);
    ck_assert_uint_eq(n, keel_subscribe_size(7, 2));
    ck_assert_uint_eq(n, sizeof sub_bytes);
    ck_assert_mem_eq(buf, sub_bytes, n);
    ck_assert_int_eq(keel_subscribe_parse(buf, n, &cb, &since), 0);
    ck_assert_uint_eq(since, 258);
    ck_assert_uint_eq(cb.tlen, 7);
    ck_assert_mem_eq(cb.type, "counter", 7);
    ck_assert_uint_eq(cb.idlen, 2);
    ck_assert_mem_eq(cb.id, "c1", 2);
    /* The version is exactly 8 bytes: shorter or longer is malformed, as
     * is a body cut inside the id or an empty type. */
    ck_assert_int_eq(keel_subscribe_parse(buf, n - 1, &cb, &since),
                     KEEL_EMALFORMED);
    buf[n] = 0;
    ck_assert_int_eq(keel_subscribe_parse(buf, n + 1, &cb, &since),
                     KEEL_EMALFORMED);
    ck_assert_int_eq(keel_subscribe_parse(buf, 9, &cb, &since),
                     KEEL_EMALFORMED);
    buf[0] = 0;
    ck_assert_int_eq(keel_subscribe_parse(buf, n - 7, &cb, &since),
                     KEEL_EMALFORMED);
    /* Over the type limit, well formed: ELIMIT. */
    memset(big, 'x', sizeof big);
    n = keel_subscribe_encode(big, big + 100, KEEL_MAX_TYPE_LEN + 1, "i", 1,
                              1);
    ck_assert_int_eq(keel_subscribe_parse(big, n, &cb, &since), KEEL_ELIMIT);

    /* CHANGE: head then the state. */
    keel_event_head(buf, KEEL_EVENT_CHANGE, 0x0102030405060708ull);
    memcpy(buf + KEEL_EVENT_HDR, "abc", 3);
    ck_assert_uint_eq(buf[0], 1);
    ck_assert_uint_eq(buf[1], 1);
    ck_assert_uint_eq(buf[8], 8);
    ck_assert_int_eq(keel_event_parse(buf, KEEL_EVENT_HDR + 3, &ev), 0);
    ck_assert_int_eq(ev.kind, KEEL_EVENT_CHANGE);
    ck_assert_uint_eq(ev.version, 0x0102030405060708ull);
    ck_assert_uint_eq(ev.data_len, 3);
    ck_assert_mem_eq(ev.data, "abc", 3);
    /* An empty state is a change too. */
    ck_assert_int_eq(keel_event_parse(buf, KEEL_EVENT_HDR, &ev), 0);
    ck_assert_uint_eq(ev.data_len, 0);

    /* END: version, code, reason. */
    n = keel_event_end_encode(buf, 9, KEEL_EUNAVAIL, "gone", 4);
    ck_assert_uint_eq(n, sizeof end_bytes);
    ck_assert_mem_eq(buf, end_bytes, n);
    ck_assert_int_eq(keel_event_parse(buf, n, &ev), 0);
    ck_assert_int_eq(ev.kind, KEEL_EVENT_END);
    ck_assert_uint_eq(ev.version, 9);
    ck_assert_int_eq(ev.code, KEEL_EUNAVAIL);
    ck_assert_uint_eq(ev.data_len, 4);
    ck_assert_mem_eq(ev.data, "gone", 4);
    /* Refused: short heads, an END without its code or with code 0, an
     * unknown kind. */
    ck_assert_int_eq(keel_event_parse(buf, KEEL_EVENT_HDR - 1, &ev),
                     KEEL_EMALFORMED);
    ck_assert_int_eq(keel_event_parse(buf, KEEL_EVENT_HDR + 1, &ev),
                     KEEL_EMALFORMED);
    buf[KEEL_EVENT_HDR] = buf[KEEL_EVENT_HDR + 1] = 0;
    ck_assert_int_eq(keel_event_parse(buf, n, &ev), KEEL_EMALFORMED);
    buf[0] = 3;
    ck_assert_int_eq(keel_event_parse(buf, n, &ev), KEEL_EMALFORMED);
    buf[0] = 0;
    ck_assert_int_eq(keel_event_parse(buf, n, &ev), KEEL_EMALFORMED);

    /* The new kinds are frames; the one after them is not. */
    keel_frame_header(buf, KEEL_FRAME_EVENT, 5, 0);
    {
        keel_frame f;
        ck_assert_int_eq(keel_frame_parse(buf, KEEL_FRAME_HEADER, 1024, &f),
                         KEEL_FRAME_HEADER);
        ck_assert_uint_eq(f.kind, KEEL_FRAME_EVENT);
        buf[4] = KEEL_FRAME_KIND_MAX + 1;
        ck_assert_int_eq(keel_frame_parse(buf, KEEL_FRAME_HEADER, 1024, &f),
                         KEEL_EMALFORMED);
    }
}
END_TEST

/* Asking a node from before event payloads for them: it refuses the
 * flag (EMALFORMED), and the client subscribes again without it; a flag
 * the client does not know is its caller's error. */
START_TEST(client_subscribe_payloads_older_node)
{
    struct test_server s;
    keel_follow_update u;
    uint64_t sub = 0;
    keel_client *c;

    sub_seen = 0;
    server_start(&s, SRV_ECHO);
    c = connect_to(&s, 5000);
    ck_assert_int_eq(keel_client_subscribe_flags(c, "feed", "a", 1, 5,
                                                 KEEL_SUBSCRIBE_PAYLOADS,
                                                 &sub, &u),
                     0);
    ck_assert_int_eq(u.kind, 0);
    ck_assert_uint_ne(sub, 0);
    ck_assert_int_eq(keel_client_subscribe_flags(c, "feed", "a", 1, 5, 0x02,
                                                 &sub, &u),
                     KEEL_EINVAL);
    keel_client_close(c);
    server_stop(&s);
    ck_assert_int_eq(sub_seen, 2);
    ck_assert_uint_eq(sub_flags_seen[0], KEEL_FLAG_PAYLOAD);
    ck_assert_uint_eq(sub_flags_seen[1], 0);
}
END_TEST

static Suite *proto_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *codec = tcase_create("codec");
    TCase *client = tcase_create("client");

    tcase_add_test(codec, header_round_trip);
    tcase_add_test(codec, header_every_kind_and_empty_body);
    tcase_add_test(codec, parse_incremental);
    tcase_add_test(codec, parse_back_to_back);
    tcase_add_test(codec, parse_too_big);
    tcase_add_test(codec, parse_malformed);
    tcase_add_test(codec, call_body_round_trip);
    tcase_add_test(codec, call_body_truncated);
    tcase_add_test(codec, call_body_limits);
    tcase_add_test(codec, from_prefix_round_trip);
    tcase_add_test(codec, error_body_round_trip);
    tcase_add_test(codec, doc_example_bytes);
    tcase_add_test(codec, repl_round_trip);
    tcase_add_test(codec, repl_truncated_and_bad);
    tcase_add_test(codec, repl_snapshot_op);
    tcase_add_test(codec, repl_acks_round_trip);
    tcase_add_test(codec, xfer_head_flags);
    tcase_add_test(codec, hello_round_trip);
    tcase_add_test(codec, follow_codec);
    suite_add_tcase(s, codec);

    tcase_add_test(client, client_call_reply_and_error);
    tcase_add_test(client, client_pipelining);
    tcase_add_test(client, client_call_skips_other_ids);
    tcase_add_test(client, client_large_message);
    tcase_add_test(client, client_refused_mid_send);
    tcase_add_test(client, client_recv_timeout);
    tcase_add_test(client, client_bad_server);
    tcase_add_test(client, client_raw_malformed);
    tcase_add_test(client, client_queue_checks);
    tcase_add_test(client, client_connect_errors);
    tcase_add_test(client, client_connect_refused_notsent);
    tcase_add_test(client, client_farewell);
    tcase_add_test(client, client_connect_by_name);
    tcase_add_test(client, client_hello_mismatch);
    tcase_add_test(client, client_hello_ok);
    tcase_add_test(client, client_subscribe_payloads_older_node);
    tcase_set_timeout(client, 30);
    suite_add_tcase(s, client);
    return s;
}

int main(void)
{
    return tu_run_suite(proto_suite());
}
