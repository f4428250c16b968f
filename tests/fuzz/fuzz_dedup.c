/* Fuzz target: request keys (runtime/dedup.c): the hex form a client
 * gives (keel_dedup_key_parse, for the CLI's --key and HTTP's
 * Idempotency-Key), and the values read back from the store: a key's
 * record, a queue entry, the queue's header (keel_dedup_rec_decode,
 * keel_dedup_q_decode, keel_dedup_hdr_decode) and the count window's
 * table an older node may have left (keel_dedup_table_find,
 * keel_dedup_table_each).
 *
 * Input: a selector byte; with bit 0 set, a hex string; else, with bit 1
 * clear, a 16-byte key then a table; with it set, a value decoded as a
 * record, a queue entry and a header.
 *
 * Properties, besides "no crash, no sanitizer report, no leak":
 *  - a table is either refused (KEEL_ECORRUPT, by find and walk alike,
 *    and the walk then calls nothing) or read; a found reply lies inside
 *    the table, and the walk meets the key found, its last record the one
 *    found;
 *  - a value is either refused or decoded; a decoded record's reply lies
 *    inside the value, is empty when not kept and at most
 *    KEEL_DEDUP_REPLY_MAX; a refusal has a negative code and its text
 *    kept; encoding what was decoded gives the value
 *    back, byte for byte; a decoded header has first <= next and encodes
 *    back to the value; a decoded queue entry likewise;
 *  - a hex key (a C string: up to the first NUL) parses exactly when it
 *    is 32 hex digits, and parses to the bytes those digits spell. */
#include <ctype.h>
#include <string.h>

#include "fuzz.h"
#include "runtime/dedup.h"

struct walk {
    const uint8_t *key;
    const uint8_t *tab;
    size_t len;
    size_t calls;
    keel_dedup_rec last; /* the last record of key met */
    int met;
};

static int walk_cb(const uint8_t *key, const keel_dedup_rec *rec, void *data)
{
    struct walk *w = data;

    w->calls++;
    FUZZ_CHECK(key >= w->tab && key + KEEL_DEDUP_KEY_LEN <= w->tab + w->len);
    FUZZ_CHECK(rec->reply >= w->tab && rec->reply + rec->rlen <= w->tab + w->len);
    if (memcmp(key, w->key, KEEL_DEDUP_KEY_LEN) == 0) {
        w->last = *rec;
        w->met = 1;
    }
    return 0;
}

static void check_table(const uint8_t *key, const uint8_t *tab, size_t len)
{
    keel_dedup_rec rec;
    struct walk w;
    int found, rc;

    memset(&w, 0, sizeof w);
    w.key = key;
    w.tab = tab;
    w.len = len;
    found = keel_dedup_table_find(tab, len, key, &rec);
    FUZZ_CHECK(found == 0 || found == 1 || found == KEEL_ECORRUPT);
    rc = keel_dedup_table_each(tab, len, walk_cb, &w);
    if (found == KEEL_ECORRUPT) {
        FUZZ_CHECK(rc == KEEL_ECORRUPT && w.calls == 0);
        return;
    }
    FUZZ_CHECK(rc == 0 && w.met == found);
    if (found == 1) {
        FUZZ_CHECK(rec.reply >= tab && rec.reply + rec.rlen <= tab + len &&
                   (rec.kept || rec.rlen == 0) &&
                   rec.rlen <= KEEL_DEDUP_REPLY_MAX);
        FUZZ_CHECK(rec.hash == w.last.hash && rec.kept == w.last.kept &&
                   rec.reply == w.last.reply && rec.rlen == w.last.rlen);
    }
}

static void check_value(const uint8_t *v, size_t len)
{
    static uint8_t out[KEEL_DEDUP_REC_MAX];
    keel_dedup_rec rec;
    const uint8_t *key;
    uint64_t t, first, next;
    int rc;

    rc = keel_dedup_rec_decode(v, len, &rec);
    FUZZ_CHECK(rc == 0 || rc == KEEL_ECORRUPT);
    if (rc == 0) {
        FUZZ_CHECK(rec.reply >= v && rec.reply + rec.rlen <= v + len &&
                   (rec.kept || rec.rlen == 0) &&
                   rec.rlen <= KEEL_DEDUP_REPLY_MAX);
        FUZZ_CHECK(rec.err == 0 ||
                   (rec.err < 0 && rec.kept &&
                    rec.rlen <= KEEL_DEDUP_ERR_TEXT_MAX));
        FUZZ_CHECK(keel_dedup_rec_encode(out, &rec) == len &&
                   memcmp(out, v, len) == 0);
    }
    rc = keel_dedup_q_decode(v, len, &t, &key);
    FUZZ_CHECK(rc == 0 || rc == KEEL_ECORRUPT);
    if (rc == 0) {
        keel_dedup_q_encode(out, t, key);
        FUZZ_CHECK(len == KEEL_DEDUP_Q_LEN && memcmp(out, v, len) == 0);
    }
    rc = keel_dedup_hdr_decode(v, len, &first, &next);
    FUZZ_CHECK(rc == 0 || rc == KEEL_ECORRUPT);
    if (rc == 0) {
        keel_dedup_hdr_encode(out, first, next);
        FUZZ_CHECK(first <= next && len == KEEL_DEDUP_Q_HDR_SIZE &&
                   memcmp(out, v, len) == 0);
    }
}

static void check_hex(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    uint8_t key[KEEL_DEDUP_KEY_LEN];
    size_t i;
    size_t n;
    int ok, rc;

    FUZZ_CHECK(s != NULL);
    if (size > 0)
        memcpy(s, data, size);
    s[size] = '\0';
    /* The parser takes a C string: what follows a NUL is not seen. */
    n = strlen(s);
    ok = n == 2 * KEEL_DEDUP_KEY_LEN;
    for (i = 0; ok && i < n; i++)
        ok = isxdigit((unsigned char)s[i]) != 0;
    rc = keel_dedup_key_parse(s, key);
    FUZZ_CHECK(rc == (ok ? 0 : -1));
    if (ok)
        for (i = 0; i < KEEL_DEDUP_KEY_LEN; i++) {
            char two[3] = {s[2 * i], s[2 * i + 1], '\0'};
            FUZZ_CHECK(key[i] == (uint8_t)strtoul(two, NULL, 16));
        }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1) {
        check_hex(data + 1, size - 1);
    } else if (data[0] & 2) {
        /* A copy: the value must not be read past its end. */
        uint8_t *v = malloc(size);
        FUZZ_CHECK(v != NULL);
        if (size > 1)
            memcpy(v, data + 1, size - 1);
        check_value(v, size - 1);
        free(v);
    } else if (size >= 1 + KEEL_DEDUP_KEY_LEN) {
        size_t len = size - 1 - KEEL_DEDUP_KEY_LEN;
        uint8_t *tab = malloc(len + 1);
        FUZZ_CHECK(tab != NULL);
        if (len > 0)
            memcpy(tab, data + 1 + KEEL_DEDUP_KEY_LEN, len);
        check_table(data + 1, tab, len);
        free(tab);
    }
    return 0;
}
