/* The request-key table (dedup.h). Layout, oldest record first:
 *
 *   format u8 (1) | record*
 *   record = key[16] | request hash be64 | flags u8 (bit 0: reply kept)
 *            | len be32 | reply
 *
 * len is 0 and no reply bytes follow when the reply was not kept. */
#include "runtime/dedup.h"

#include <stdlib.h>
#include <string.h>

#include "keel.h"

#define FORMAT 1
#define REC_HDR (KEEL_DEDUP_KEY_LEN + 8 + 1 + 4)
#define FLAGS_AT (KEEL_DEDUP_KEY_LEN + 8)

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static void put32(uint8_t *q, uint32_t l)
{
    q[0] = (uint8_t)(l >> 24);
    q[1] = (uint8_t)(l >> 16);
    q[2] = (uint8_t)(l >> 8);
    q[3] = (uint8_t)l;
}

/* The size of the record at tab[off], or 0 if it does not parse. */
static size_t rec_size(const uint8_t *tab, size_t len, size_t off)
{
    uint32_t rl;

    if (len - off < REC_HDR)
        return 0;
    rl = get32(tab + off + FLAGS_AT + 1);
    if (tab[off + FLAGS_AT] & ~1u)
        return 0;
    if (!(tab[off + FLAGS_AT] & 1) && rl != 0)
        return 0;
    if (rl > KEEL_DEDUP_REPLY_MAX || len - off - REC_HDR < rl)
        return 0;
    return REC_HDR + rl;
}

/* Counts the records of a table (0 for an empty one), or -1. */
static long rec_count(const uint8_t *tab, size_t len)
{
    size_t off = 1;
    long n = 0;

    if (len == 0)
        return 0;
    if (tab[0] != FORMAT)
        return -1;
    while (off < len) {
        size_t sz = rec_size(tab, len, off);
        if (sz == 0)
            return -1;
        off += sz;
        n++;
    }
    return n;
}

int keel_dedup_key_parse(const char *hex, uint8_t *key)
{
    size_t i;

    if (strlen(hex) != 2 * KEEL_DEDUP_KEY_LEN)
        return -1;
    for (i = 0; i < 2 * KEEL_DEDUP_KEY_LEN; i++) {
        int c = hex[i], v;
        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v = c - 'A' + 10;
        else
            return -1;
        if (i % 2 == 0)
            key[i / 2] = (uint8_t)(v << 4);
        else
            key[i / 2] |= (uint8_t)v;
    }
    return 0;
}

int keel_dedup_find(const uint8_t *tab, size_t len, const uint8_t *key,
                    uint64_t *hash, int *kept, const uint8_t **reply,
                    size_t *rlen)
{
    size_t off = 1;
    int found = 0;

    if (rec_count(tab, len) < 0)
        return KEEL_ECORRUPT;
    /* Keys are unique in a table (a key found is never added again), but
     * the newest record would win if one were not. */
    while (len > 0 && off < len) {
        size_t sz = rec_size(tab, len, off);
        if (memcmp(tab + off, key, KEEL_DEDUP_KEY_LEN) == 0) {
            const uint8_t *h = tab + off + KEEL_DEDUP_KEY_LEN;
            *hash = (uint64_t)get32(h) << 32 | get32(h + 4);
            *kept = tab[off + FLAGS_AT] & 1;
            *reply = tab + off + REC_HDR;
            *rlen = sz - REC_HDR;
            found = 1;
        }
        off += sz;
    }
    return found;
}

int keel_dedup_add(const uint8_t *tab, size_t len, const uint8_t *key,
                   uint64_t hash, const void *reply, size_t rlen,
                   uint8_t **out, size_t *outlen)
{
    long count = rec_count(tab, len);
    int kept = rlen <= KEEL_DEDUP_REPLY_MAX;
    size_t add = REC_HDR + (kept ? rlen : 0), off = 1, keep_from, total;
    uint8_t *p;

    if (count < 0)
        return KEEL_ECORRUPT;
    /* Drop the oldest records until the new one fits both bounds. */
    total = len > 0 ? len : 1;
    while (len > 0 && off < len &&
           (count >= KEEL_DEDUP_MAX || total + add > KEEL_DEDUP_TABLE_MAX)) {
        size_t sz = rec_size(tab, len, off);
        off += sz;
        total -= sz;
        count--;
    }
    keep_from = off;
    p = malloc(total + add);
    if (p == NULL)
        return KEEL_ENOMEM;
    p[0] = FORMAT;
    if (len > keep_from)
        memcpy(p + 1, tab + keep_from, len - keep_from);
    off = total;
    memcpy(p + off, key, KEEL_DEDUP_KEY_LEN);
    put32(p + off + KEEL_DEDUP_KEY_LEN, (uint32_t)(hash >> 32));
    put32(p + off + KEEL_DEDUP_KEY_LEN + 4, (uint32_t)hash);
    p[off + FLAGS_AT] = (uint8_t)kept;
    put32(p + off + FLAGS_AT + 1, kept ? (uint32_t)rlen : 0);
    if (kept && rlen > 0)
        memcpy(p + off + REC_HDR, reply, rlen);
    *out = p;
    *outlen = total + add;
    return 0;
}
