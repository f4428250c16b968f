/* The request-key table (runtime/dedup.c): lookups, the window's bounds,
 * replies too long to keep, and damaged tables refused. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"
#include "runtime/dedup.h"

static void key_of(uint8_t *k, unsigned v)
{
    memset(k, 0xab, KEEL_DEDUP_KEY_LEN);
    k[0] = (uint8_t)v;
    k[1] = (uint8_t)(v >> 8);
}

/* Adds key v with reply "r<v>" to *tab (replaced). */
static void add(uint8_t **tab, size_t *len, unsigned v)
{
    uint8_t k[KEEL_DEDUP_KEY_LEN], *out;
    char reply[32];
    size_t olen;

    key_of(k, v);
    snprintf(reply, sizeof reply, "r%u", v);
    ck_assert_int_eq(
        keel_dedup_add(*tab, *len, k, v * 7u, reply, strlen(reply), &out, &olen), 0);
    free(*tab);
    *tab = out;
    *len = olen;
}

/* 1 and the reply when key v is in the table, 0 when not. */
static int find(const uint8_t *tab, size_t len, unsigned v, char *reply)
{
    uint8_t k[KEEL_DEDUP_KEY_LEN];
    const uint8_t *r;
    size_t rl;
    uint64_t h;
    int kept, rc;

    key_of(k, v);
    rc = keel_dedup_find(tab, len, k, &h, &kept, &r, &rl);
    ck_assert_int_ge(rc, 0);
    if (rc == 1) {
        ck_assert_int_eq(kept, 1);
        ck_assert_uint_eq(h, v * 7u);
        memcpy(reply, r, rl);
        reply[rl] = '\0';
    }
    return rc;
}

START_TEST(found_after_add)
{
    uint8_t *tab = NULL;
    size_t len = 0;
    char reply[64];

    ck_assert_int_eq(find(tab, len, 1, reply), 0);
    add(&tab, &len, 1);
    add(&tab, &len, 2);
    ck_assert_int_eq(find(tab, len, 1, reply), 1);
    ck_assert_str_eq(reply, "r1");
    ck_assert_int_eq(find(tab, len, 2, reply), 1);
    ck_assert_str_eq(reply, "r2");
    ck_assert_int_eq(find(tab, len, 3, reply), 0);
    free(tab);
}
END_TEST

/* The newest KEEL_DEDUP_MAX records stay; older ones go first. */
START_TEST(window_keeps_the_newest)
{
    uint8_t *tab = NULL;
    size_t len = 0;
    char reply[64];
    unsigned v, total = KEEL_DEDUP_MAX + 10;

    for (v = 1; v <= total; v++)
        add(&tab, &len, v);
    for (v = 1; v <= total; v++)
        ck_assert_int_eq(find(tab, len, v, reply),
                         v > total - KEEL_DEDUP_MAX);
    free(tab);
}
END_TEST

/* Replies over KEEL_DEDUP_REPLY_MAX are recorded as seen, not kept; the
 * table's size stays bounded whatever the replies. */
START_TEST(long_replies_not_kept_size_bounded)
{
    uint8_t *tab = NULL, k[KEEL_DEDUP_KEY_LEN], *out;
    size_t len = 0, olen, rl;
    const uint8_t *r;
    uint64_t h;
    int kept, i;
    char *big = malloc(KEEL_DEDUP_REPLY_MAX + 1);

    memset(big, 'x', KEEL_DEDUP_REPLY_MAX + 1);
    key_of(k, 7);
    ck_assert_int_eq(keel_dedup_add(NULL, 0, k, 1, big, KEEL_DEDUP_REPLY_MAX + 1,
                                    &out, &olen),
                     0);
    ck_assert_int_eq(keel_dedup_find(out, olen, k, &h, &kept, &r, &rl), 1);
    ck_assert_int_eq(kept, 0);
    ck_assert_uint_eq(rl, 0);
    free(out);
    for (i = 0; i < 200; i++) {
        key_of(k, (unsigned)i);
        ck_assert_int_eq(keel_dedup_add(tab, len, k, 2, big,
                                        KEEL_DEDUP_REPLY_MAX, &out, &olen),
                         0);
        free(tab);
        tab = out;
        len = olen;
        ck_assert_uint_le(len, KEEL_DEDUP_TABLE_MAX);
        ck_assert_int_eq(keel_dedup_find(tab, len, k, &h, &kept, &r, &rl), 1);
        ck_assert_int_eq(kept, 1);
        ck_assert_uint_eq(rl, KEEL_DEDUP_REPLY_MAX);
    }
    free(tab);
    free(big);
}
END_TEST

/* Any damage is ECORRUPT, never a guess: truncation anywhere, a wrong
 * format byte, a bad flag, a length past the end. */
START_TEST(damaged_tables_refused)
{
    uint8_t *tab = NULL, k[KEEL_DEDUP_KEY_LEN], *out, *copy;
    size_t len = 0, cut, rl, olen;
    const uint8_t *r;
    uint64_t h;
    int kept;

    add(&tab, &len, 1);
    add(&tab, &len, 2);
    key_of(k, 2);
    /* Cut after the format byte, or after the first record (format byte,
     * 29-byte header, "r1"), the table is whole: key 2 is not in it. */
    for (cut = 1; cut < len; cut++) {
        int rc = keel_dedup_find(tab, cut, k, &h, &kept, &r, &rl);
        if (cut == 1 || cut == 1 + KEEL_DEDUP_KEY_LEN + 13 + 2) {
            ck_assert_int_eq(rc, 0);
            continue;
        }
        ck_assert_msg(rc == KEEL_ECORRUPT, "cut at %zu of %zu: %d", cut, len,
                      rc);
        ck_assert_int_eq(keel_dedup_add(tab, cut, k, 3, "z", 1, &out, &olen),
                         KEEL_ECORRUPT);
    }
    copy = malloc(len);
    memcpy(copy, tab, len);
    copy[0] = 9; /* format */
    ck_assert_int_eq(keel_dedup_find(copy, len, k, &h, &kept, &r, &rl),
                     KEEL_ECORRUPT);
    memcpy(copy, tab, len);
    copy[1 + KEEL_DEDUP_KEY_LEN + 8] = 0x81; /* flags */
    ck_assert_int_eq(keel_dedup_find(copy, len, k, &h, &kept, &r, &rl),
                     KEEL_ECORRUPT);
    memcpy(copy, tab, len);
    copy[1 + KEEL_DEDUP_KEY_LEN + 9] = 0x7f; /* reply length */
    ck_assert_int_eq(keel_dedup_find(copy, len, k, &h, &kept, &r, &rl),
                     KEEL_ECORRUPT);
    free(copy);
    free(tab);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dedup");
    TCase *tc = tcase_create("table");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, found_after_add);
    tcase_add_test(tc, window_keeps_the_newest);
    tcase_add_test(tc, long_replies_not_kept_size_bounded);
    tcase_add_test(tc, damaged_tables_refused);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
