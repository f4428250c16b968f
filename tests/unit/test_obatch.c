/* The OBATCH codec (runtime/proto.c, keel_obatch_*): batches of outbox
 * messages between nodes and their answers, round trips and hostile
 * bodies (truncated anywhere, counts of 0 or too many, item lengths that
 * run past the body or overflow, unknown flag bits, bad items, trailing
 * bytes). Every parse reads from a heap copy of exactly the bytes given,
 * so that ASan catches a read past them. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"
#include "runtime/proto.h"
#include "testutil.h"

static uint8_t *copy_of(const uint8_t *p, size_t len)
{
    uint8_t *c = malloc(len ? len : 1);

    ck_assert_ptr_nonnull(c);
    if (len > 0)
        memcpy(c, p, len);
    return c;
}

static int check_exact(const uint8_t *p, size_t len, unsigned *count)
{
    uint8_t *c = copy_of(p, len);
    int rc = keel_obatch_check(c, len, count);

    free(c);
    return rc;
}

/* A body (no budget) of n items: item i is from ("acct", "s<i>") seq
 * i + 1 to ("acct", "r<i>") with message "credit <i>", hops i % 4. */
static size_t build(uint8_t *buf, size_t cap, unsigned n)
{
    size_t off = KEEL_OBATCH_HEAD;
    unsigned i;

    buf[0] = (uint8_t)(n >> 8);
    buf[1] = (uint8_t)n;
    for (i = 0; i < n; i++) {
        char sid[16], rid[16], msg[32];
        size_t sl = (size_t)snprintf(sid, sizeof sid, "s%u", i);
        size_t rl = (size_t)snprintf(rid, sizeof rid, "r%u", i);
        size_t ml = (size_t)snprintf(msg, sizeof msg, "credit %u", i);
        size_t need = keel_obatch_item_size(4, sl, 4, rl, ml);
        ck_assert_uint_le(off + need, cap);
        ck_assert_uint_eq(keel_obatch_item_encode(buf + off, i % 4, i + 1,
                                                  "acct", 4, sid, sl, "acct",
                                                  4, rid, rl, msg, ml),
                          need);
        off += need;
    }
    return off;
}

START_TEST(round_trip)
{
    uint8_t buf[4096];
    size_t len = build(buf, sizeof buf, 5), left;
    const uint8_t *p;
    unsigned count = 0, i;
    uint8_t *c;

    ck_assert_int_eq(check_exact(buf, len, &count), 0);
    ck_assert_uint_eq(count, 5);
    c = copy_of(buf, len);
    ck_assert_int_eq(keel_obatch_head_parse(c, len, &count, &p, &left), 0);
    ck_assert_uint_eq(count, 5);
    for (i = 0; i < count; i++) {
        keel_obatch_item it;
        char want[32];
        ck_assert_int_eq(keel_obatch_item_next(&p, &left, &it), 0);
        ck_assert_uint_eq(it.hops, i % 4);
        ck_assert_uint_eq(it.from.seq, i + 1);
        ck_assert_uint_eq(it.from.tlen, 4);
        ck_assert_int_eq(memcmp(it.from.type, "acct", 4), 0);
        snprintf(want, sizeof want, "s%u", i);
        ck_assert_uint_eq(it.from.idlen, strlen(want));
        ck_assert_int_eq(memcmp(it.from.id, want, it.from.idlen), 0);
        snprintf(want, sizeof want, "r%u", i);
        ck_assert_uint_eq(it.call.idlen, strlen(want));
        ck_assert_int_eq(memcmp(it.call.id, want, it.call.idlen), 0);
        snprintf(want, sizeof want, "credit %u", i);
        ck_assert_uint_eq(it.call.msglen, strlen(want));
        ck_assert_int_eq(memcmp(it.call.msg, want, it.call.msglen), 0);
    }
    ck_assert_uint_eq(left, 0);
    free(c);
}
END_TEST

/* Every proper prefix of a good body is refused, none read past. */
START_TEST(truncated_anywhere)
{
    uint8_t buf[4096];
    size_t len = build(buf, sizeof buf, 3), cut;
    unsigned count;

    for (cut = 0; cut < len; cut++)
        ck_assert_int_eq(check_exact(buf, cut, &count), KEEL_EMALFORMED);
}
END_TEST

START_TEST(counts)
{
    uint8_t buf[4096];
    size_t len = build(buf, sizeof buf, 3);
    unsigned count;

    /* More items announced than there are. */
    buf[1] = 4;
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    /* Fewer: the rest is trailing bytes. */
    buf[1] = 2;
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    /* None. */
    buf[1] = 0;
    ck_assert_int_eq(check_exact(buf, 2, &count), KEEL_EMALFORMED);
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    /* Over the most a frame may hold, and the largest be16. */
    buf[0] = (uint8_t)((KEEL_OBATCH_MAX + 1) >> 8);
    buf[1] = (uint8_t)(KEEL_OBATCH_MAX + 1);
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    buf[0] = buf[1] = 0xff;
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    /* One trailing byte after a right count. */
    len = build(buf, sizeof buf, 3);
    buf[len] = 0;
    ck_assert_int_eq(check_exact(buf, len + 1, &count), KEEL_EMALFORMED);
    ck_assert_int_eq(check_exact(buf, len, &count), 0);
}
END_TEST

START_TEST(item_lengths)
{
    uint8_t buf[4096];
    size_t len = build(buf, sizeof buf, 2);
    size_t first = KEEL_OBATCH_HEAD;
    uint8_t save[4];
    unsigned count;

    memcpy(save, buf + first + 1, 4);
    /* Lengths that overflow any sum or run past the body. */
    buf[first + 1] = buf[first + 2] = buf[first + 3] = buf[first + 4] = 0xff;
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    buf[first + 1] = 0x80;
    buf[first + 2] = buf[first + 3] = buf[first + 4] = 0;
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    buf[first + 1] = 0;
    buf[first + 2] = 0;
    buf[first + 3] = 0x10;
    buf[first + 4] = 0;
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    /* One byte short: the item's sender and call body no longer fit
     * together, and the next item is misread. */
    memcpy(buf + first + 1, save, 4);
    buf[first + 4]--;
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    /* Zero: no sender. */
    memset(buf + first + 1, 0, 4);
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    memcpy(buf + first + 1, save, 4);
    ck_assert_int_eq(check_exact(buf, len, &count), 0);
}
END_TEST

START_TEST(bad_items)
{
    uint8_t buf[4096];
    size_t len = build(buf, sizeof buf, 1);
    size_t it = KEEL_OBATCH_HEAD, from = it + KEEL_OBATCH_ITEM_HDR;
    unsigned count;
    uint8_t keep;

    /* Flag bits other than the hop count. */
    buf[it] = 0x10;
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    buf[it] = 0x80;
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    buf[it] = 0x0f;
    ck_assert_int_eq(check_exact(buf, len, &count), 0);
    /* Sequence 0. */
    memset(buf + from, 0, 8);
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    buf[from + 7] = 1;
    /* An empty sender type. */
    keep = buf[from + 8];
    buf[from + 8] = 0;
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    /* A sender type longer than the item. */
    buf[from + 8] = 0xff;
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    buf[from + 8] = keep;
    ck_assert_int_eq(check_exact(buf, len, &count), 0);
    /* The receiver's id length past the item. */
    {
        size_t call = from + keel_from_size(4, 2);
        buf[call + 1 + 4] = 0xff;
        ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    }
}
END_TEST

/* Ids over KEEL_MAX_ID_LEN are refused too, as a call's would be. */
START_TEST(limits)
{
    static uint8_t buf[8192], id[KEEL_MAX_ID_LEN + 1];
    size_t len;
    unsigned count;

    memset(id, 'x', sizeof id);
    buf[0] = 0;
    buf[1] = 1;
    len = KEEL_OBATCH_HEAD +
          keel_obatch_item_encode(buf + KEEL_OBATCH_HEAD, 0, 1, "acct", 4,
                                  "s", 1, "acct", 4, id, sizeof id, "m", 1);
    ck_assert_int_eq(check_exact(buf, len, &count), KEEL_EMALFORMED);
    len = KEEL_OBATCH_HEAD +
          keel_obatch_item_encode(buf + KEEL_OBATCH_HEAD, 0, 1, "acct", 4,
                                  "s", 1, "acct", 4, id, sizeof id - 1, "m",
                                  1);
    ck_assert_int_eq(check_exact(buf, len, &count), 0);
}
END_TEST

START_TEST(results_round_trip_and_hostile)
{
    uint8_t buf[256], *c;
    const uint8_t *p, *d;
    size_t len, left, dl, cut;
    unsigned count;
    int st;

    keel_obatch_results_count(buf, 3);
    len = 2;
    len += keel_obatch_result_encode(buf + len, 0, NULL, 0);
    len += keel_obatch_result_encode(buf + len, KEEL_ENOTYPE, "no such", 7);
    len += keel_obatch_result_encode(buf + len, KEEL_EHANDLER, "bad", 3);
    c = copy_of(buf, len);
    p = c;
    left = len;
    ck_assert_int_eq(keel_obatch_results_parse(&p, &left, &count), 0);
    ck_assert_uint_eq(count, 3);
    ck_assert_int_eq(keel_obatch_result_next(&p, &left, &st, &d, &dl), 0);
    ck_assert_int_eq(st, 0);
    ck_assert_uint_eq(dl, 0);
    ck_assert_int_eq(keel_obatch_result_next(&p, &left, &st, &d, &dl), 0);
    ck_assert_int_eq(st, KEEL_ENOTYPE);
    ck_assert_uint_eq(dl, 7);
    ck_assert_int_eq(memcmp(d, "no such", 7), 0);
    ck_assert_int_eq(keel_obatch_result_next(&p, &left, &st, &d, &dl), 0);
    ck_assert_int_eq(st, KEEL_EHANDLER);
    ck_assert_uint_eq(left, 0);
    ck_assert_int_eq(keel_obatch_result_next(&p, &left, &st, &d, &dl),
                     KEEL_EMALFORMED);
    free(c);
    /* Cut anywhere inside the second result: refused there, not read
     * past. */
    for (cut = 2 + KEEL_OBATCH_RESULT_HDR + 1;
         cut < 2 + 2 * KEEL_OBATCH_RESULT_HDR + 7; cut++) {
        c = copy_of(buf, cut);
        p = c;
        left = cut;
        ck_assert_int_eq(keel_obatch_results_parse(&p, &left, &count), 0);
        ck_assert_int_eq(keel_obatch_result_next(&p, &left, &st, &d, &dl), 0);
        ck_assert_int_eq(keel_obatch_result_next(&p, &left, &st, &d, &dl),
                         KEEL_EMALFORMED);
        free(c);
    }
    /* A text length that overflows. */
    buf[2 + 2] = buf[2 + 3] = buf[2 + 4] = buf[2 + 5] = 0xff;
    c = copy_of(buf, len);
    p = c;
    left = len;
    ck_assert_int_eq(keel_obatch_results_parse(&p, &left, &count), 0);
    ck_assert_int_eq(keel_obatch_result_next(&p, &left, &st, &d, &dl),
                     KEEL_EMALFORMED);
    free(c);
    /* Shorter than the count. */
    c = copy_of(buf, 1);
    p = c;
    left = 1;
    ck_assert_int_eq(keel_obatch_results_parse(&p, &left, &count),
                     KEEL_EMALFORMED);
    free(c);
}
END_TEST

/* The frame kind is one a node of this version reads. */
START_TEST(frame_kind_known)
{
    uint8_t f[KEEL_FRAME_HEADER + 2];
    keel_frame fr;

    keel_frame_header(f, KEEL_FRAME_OBATCH, 9, 2);
    f[KEEL_FRAME_HEADER] = 0;
    f[KEEL_FRAME_HEADER + 1] = 0;
    ck_assert_int_eq(keel_frame_parse(f, sizeof f, 1024, &fr),
                     (long)sizeof f);
    ck_assert_uint_eq(fr.kind, KEEL_FRAME_OBATCH);
    ck_assert_uint_eq(fr.request_id, 9);
}
END_TEST

static Suite *obatch_suite(void)
{
    Suite *s = suite_create("obatch");
    TCase *tc = tcase_create("codec");

    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, truncated_anywhere);
    tcase_add_test(tc, counts);
    tcase_add_test(tc, item_lengths);
    tcase_add_test(tc, bad_items);
    tcase_add_test(tc, limits);
    tcase_add_test(tc, results_round_trip_and_hostile);
    tcase_add_test(tc, frame_kind_known);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(obatch_suite());
}
