/* The request-key records' codec (runtime/dedup.c): a record, a queue
 * entry and the queue's header read back as written; replies too long to
 * keep; refusals; damage refused; the count window's table still read
 * and walked. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"
#include "rktable.h"
#include "runtime/dedup.h"

static void key_of(uint8_t *k, unsigned v)
{
    memset(k, 0xab, KEEL_DEDUP_KEY_LEN);
    k[0] = (uint8_t)v;
    k[1] = (uint8_t)(v >> 8);
}

START_TEST(record_round_trip)
{
    uint8_t buf[KEEL_DEDUP_REC_MAX];
    keel_dedup_rec in = {.seq = 0x0102030405060708ull,
                         .time_ms = 1764950000123ull,
                         .hash = 0xfeedfacecafebeefull,
                         .kept = 1,
                         .reply = (const uint8_t *)"the reply",
                         .rlen = 9},
                   out;
    size_t len = keel_dedup_rec_encode(buf, &in);

    ck_assert_uint_eq(len, KEEL_DEDUP_REC_HDR + 9);
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), 0);
    ck_assert_uint_eq(out.seq, in.seq);
    ck_assert_uint_eq(out.time_ms, in.time_ms);
    ck_assert_uint_eq(out.hash, in.hash);
    ck_assert_int_eq(out.kept, 1);
    ck_assert_uint_eq(out.rlen, 9);
    ck_assert(memcmp(out.reply, "the reply", 9) == 0);

    /* An empty reply kept, and a reply not kept, differ. */
    in.rlen = 0;
    len = keel_dedup_rec_encode(buf, &in);
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), 0);
    ck_assert_int_eq(out.kept, 1);
    ck_assert_uint_eq(out.rlen, 0);
    in.kept = 0;
    in.rlen = 5000; /* ignored */
    len = keel_dedup_rec_encode(buf, &in);
    ck_assert_uint_eq(len, KEEL_DEDUP_REC_HDR);
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), 0);
    ck_assert_int_eq(out.kept, 0);
    ck_assert_uint_eq(out.rlen, 0);
}
END_TEST

/* The largest reply kept fits KEEL_DEDUP_REC_MAX. */
START_TEST(record_longest_reply)
{
    static uint8_t buf[KEEL_DEDUP_REC_MAX], big[KEEL_DEDUP_REPLY_MAX];
    keel_dedup_rec in = {.kept = 1, .reply = big,
                         .rlen = KEEL_DEDUP_REPLY_MAX},
                   out;
    size_t len;

    memset(big, 'x', sizeof big);
    len = keel_dedup_rec_encode(buf, &in);
    ck_assert_uint_eq(len, KEEL_DEDUP_REC_MAX);
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), 0);
    ck_assert_uint_eq(out.rlen, KEEL_DEDUP_REPLY_MAX);
}
END_TEST

/* Any damage is ECORRUPT, never a guess. */
START_TEST(damaged_records_refused)
{
    uint8_t buf[KEEL_DEDUP_REC_MAX + 1];
    keel_dedup_rec in = {.seq = 3, .time_ms = 4, .hash = 5, .kept = 1,
                         .reply = (const uint8_t *)"ab", .rlen = 2},
                   out;
    size_t len = keel_dedup_rec_encode(buf, &in), cut;

    for (cut = 0; cut < KEEL_DEDUP_REC_HDR; cut++)
        ck_assert_int_eq(keel_dedup_rec_decode(buf, cut, &out),
                         KEEL_ECORRUPT);
    buf[0] = 1; /* format */
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), KEEL_ECORRUPT);
    buf[0] = 2;
    buf[25] = 0x81; /* flags */
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), KEEL_ECORRUPT);
    buf[25] = 0; /* not kept, yet a reply follows */
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), KEEL_ECORRUPT);
    buf[25] = 1;
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), 0);
    ck_assert_int_eq(keel_dedup_rec_decode(buf, KEEL_DEDUP_REC_MAX + 1, &out),
                     KEEL_ECORRUPT); /* a reply over the most kept */
}
END_TEST

/* A refusal keeps its code and text; one without its code, with a code
 * that is not an error, or marked refused but not kept, is damage. */
START_TEST(refusal_round_trip)
{
    uint8_t buf[KEEL_DEDUP_REC_MAX];
    keel_dedup_rec in = {.seq = 7, .time_ms = 8, .hash = 9, .kept = 1,
                         .err = KEEL_ENOTFOUND,
                         .reply = (const uint8_t *)"no such item",
                         .rlen = 12},
                   out;
    size_t len = keel_dedup_rec_encode(buf, &in);

    ck_assert_uint_eq(len, KEEL_DEDUP_REC_HDR + 4 + 12);
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), 0);
    ck_assert_int_eq(out.err, KEEL_ENOTFOUND);
    ck_assert_int_eq(out.kept, 1);
    ck_assert_uint_eq(out.seq, 7);
    ck_assert_uint_eq(out.hash, 9);
    ck_assert_uint_eq(out.rlen, 12);
    ck_assert(memcmp(out.reply, "no such item", 12) == 0);

    /* A reply is not a refusal. */
    in.err = 0;
    len = keel_dedup_rec_encode(buf, &in);
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), 0);
    ck_assert_int_eq(out.err, 0);
    ck_assert_uint_eq(out.rlen, 12);

    /* Its text may be empty, not its code. */
    in.err = KEEL_EHANDLER;
    in.rlen = 0;
    len = keel_dedup_rec_encode(buf, &in);
    ck_assert_uint_eq(len, KEEL_DEDUP_REC_HDR + 4);
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), 0);
    ck_assert_int_eq(out.err, KEEL_EHANDLER);
    ck_assert_uint_eq(out.rlen, 0);
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len - 1, &out),
                     KEEL_ECORRUPT);
    buf[25] = 2; /* refused, not kept */
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), KEEL_ECORRUPT);
    buf[25] = 3;
    memset(buf + KEEL_DEDUP_REC_HDR, 0, 4); /* code 0 */
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), KEEL_ECORRUPT);
    buf[KEEL_DEDUP_REC_HDR + 3] = 5; /* code 5 */
    ck_assert_int_eq(keel_dedup_rec_decode(buf, len, &out), KEEL_ECORRUPT);
}
END_TEST

START_TEST(queue_and_header)
{
    uint8_t q[KEEL_DEDUP_Q_LEN], h[KEEL_DEDUP_Q_HDR_SIZE], k[16];
    const uint8_t *kp;
    uint64_t t, first, next;

    key_of(k, 42);
    keel_dedup_q_encode(q, 1764950000999ull, k);
    ck_assert_int_eq(keel_dedup_q_decode(q, sizeof q, &t, &kp), 0);
    ck_assert_uint_eq(t, 1764950000999ull);
    ck_assert(memcmp(kp, k, 16) == 0);
    ck_assert_int_eq(keel_dedup_q_decode(q, sizeof q - 1, &t, &kp),
                     KEEL_ECORRUPT);

    keel_dedup_hdr_encode(h, 7, 9);
    ck_assert_int_eq(keel_dedup_hdr_decode(h, sizeof h, &first, &next), 0);
    ck_assert_uint_eq(first, 7);
    ck_assert_uint_eq(next, 9);
    ck_assert_int_eq(keel_dedup_hdr_decode(h, sizeof h - 1, &first, &next),
                     KEEL_ECORRUPT);
    keel_dedup_hdr_encode(h, 10, 9); /* first past next */
    ck_assert_int_eq(keel_dedup_hdr_decode(h, sizeof h, &first, &next),
                     KEEL_ECORRUPT);
}
END_TEST

/* A table of three records, the second with its reply not kept. */
static size_t table3(uint8_t *tab)
{
    uint8_t k[16];
    size_t len = 0;

    key_of(k, 1);
    len = tu_rktable_add(tab, len, k, 11, 1, "r1", 2);
    key_of(k, 2);
    len = tu_rktable_add(tab, len, k, 22, 0, NULL, 0);
    key_of(k, 3);
    len = tu_rktable_add(tab, len, k, 33, 1, "r3", 2);
    return len;
}

START_TEST(table_found)
{
    uint8_t tab[256], k[16];
    size_t len = table3(tab);
    keel_dedup_rec rec;

    key_of(k, 1);
    ck_assert_int_eq(keel_dedup_table_find(tab, len, k, &rec), 1);
    ck_assert_uint_eq(rec.hash, 11);
    ck_assert_int_eq(rec.kept, 1);
    ck_assert_uint_eq(rec.rlen, 2);
    ck_assert(memcmp(rec.reply, "r1", 2) == 0);
    key_of(k, 2);
    ck_assert_int_eq(keel_dedup_table_find(tab, len, k, &rec), 1);
    ck_assert_int_eq(rec.kept, 0);
    ck_assert_uint_eq(rec.hash, 22);
    key_of(k, 4);
    ck_assert_int_eq(keel_dedup_table_find(tab, len, k, &rec), 0);
    ck_assert_int_eq(keel_dedup_table_find(tab, 0, k, &rec), 0);
}
END_TEST

struct walk {
    unsigned n;
    uint64_t hashes[8];
};

static int walk_cb(const uint8_t *key, const keel_dedup_rec *rec, void *data)
{
    struct walk *w = data;

    ck_assert_uint_eq(key[0], w->n + 1);
    w->hashes[w->n++] = rec->hash;
    return w->n == 2 ? 7 : 0;
}

START_TEST(table_walked_oldest_first)
{
    uint8_t tab[256];
    size_t len = table3(tab);
    struct walk w = {0};

    /* Stops at the callback's first nonzero return. */
    ck_assert_int_eq(keel_dedup_table_each(tab, len, walk_cb, &w), 7);
    ck_assert_uint_eq(w.n, 2);
    ck_assert_uint_eq(w.hashes[0], 11);
    ck_assert_uint_eq(w.hashes[1], 22);
}
END_TEST

/* Truncation anywhere, a wrong format byte, a bad flag, a length past
 * the end: ECORRUPT, from find and walk alike, and no call. */
START_TEST(damaged_tables_refused)
{
    uint8_t tab[256], copy[256], k[16];
    size_t len = table3(tab), cut;
    keel_dedup_rec rec;
    struct walk w = {0};

    key_of(k, 3);
    for (cut = 1; cut < len; cut++) {
        int rc = keel_dedup_table_find(tab, cut, k, &rec);
        /* Whole after the format byte, or after a record. */
        if (cut == 1 || cut == 1 + 29 + 2 || cut == 1 + 29 + 2 + 29) {
            ck_assert_int_eq(rc, 0);
            continue;
        }
        ck_assert_msg(rc == KEEL_ECORRUPT, "cut at %zu of %zu: %d", cut, len,
                      rc);
        ck_assert_int_eq(keel_dedup_table_each(tab, cut, walk_cb, &w),
                         KEEL_ECORRUPT);
        ck_assert_uint_eq(w.n, 0);
    }
    memcpy(copy, tab, len);
    copy[0] = 9; /* format */
    ck_assert_int_eq(keel_dedup_table_find(copy, len, k, &rec), KEEL_ECORRUPT);
    memcpy(copy, tab, len);
    copy[1 + KEEL_DEDUP_KEY_LEN + 8] = 0x81; /* flags */
    ck_assert_int_eq(keel_dedup_table_find(copy, len, k, &rec), KEEL_ECORRUPT);
    memcpy(copy, tab, len);
    copy[1 + KEEL_DEDUP_KEY_LEN + 9] = 0x7f; /* reply length */
    ck_assert_int_eq(keel_dedup_table_find(copy, len, k, &rec), KEEL_ECORRUPT);
}
END_TEST

START_TEST(hex_keys)
{
    uint8_t k[16];

    ck_assert_int_eq(
        keel_dedup_key_parse("00112233445566778899AABBCCDDeeff", k), 0);
    ck_assert_uint_eq(k[0], 0x00);
    ck_assert_uint_eq(k[11], 0xbb);
    ck_assert_uint_eq(k[15], 0xff);
    ck_assert_int_eq(keel_dedup_key_parse("0011", k), -1);
    ck_assert_int_eq(
        keel_dedup_key_parse("00112233445566778899aabbccddeefg", k), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dedup");
    TCase *tc = tcase_create("codec");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, record_round_trip);
    tcase_add_test(tc, record_longest_reply);
    tcase_add_test(tc, damaged_records_refused);
    tcase_add_test(tc, refusal_round_trip);
    tcase_add_test(tc, queue_and_header);
    tcase_add_test(tc, table_found);
    tcase_add_test(tc, table_walked_oldest_first);
    tcase_add_test(tc, damaged_tables_refused);
    tcase_add_test(tc, hex_keys);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
