/* The request-key records' codec (dedup.h has the layouts). */
#include "runtime/dedup.h"

#include <string.h>

#include "common/be.h"
#include "keel.h"

#define REC_FORMAT 2
#define TAB_FORMAT 1
/* The table's record: key | hash be64 | flags u8 | len be32 | reply. */
#define TAB_REC_HDR (KEEL_DEDUP_KEY_LEN + 8 + 1 + 4)
#define TAB_FLAGS_AT (KEEL_DEDUP_KEY_LEN + 8)

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

/* ---------------------------------------------------------- records */

#define FLAG_KEPT 1u
#define FLAG_REFUSED 2u

size_t keel_dedup_rec_encode(uint8_t *out, const keel_dedup_rec *rec)
{
    size_t rlen = rec->kept ? rec->rlen : 0, off = KEEL_DEDUP_REC_HDR;

    out[0] = REC_FORMAT;
    keel_put_be64(out + 1, rec->seq);
    keel_put_be64(out + 9, rec->time_ms);
    keel_put_be64(out + 17, rec->hash);
    out[25] = (uint8_t)(rec->kept != 0 ? FLAG_KEPT : 0);
    if (rec->err < 0) {
        out[25] = FLAG_KEPT | FLAG_REFUSED;
        keel_put_be32(out + off, (uint32_t)rec->err);
        off += 4;
    }
    if (rlen > 0)
        memcpy(out + off, rec->reply, rlen);
    return off + rlen;
}

int keel_dedup_rec_decode(const uint8_t *v, size_t len, keel_dedup_rec *rec)
{
    size_t off = KEEL_DEDUP_REC_HDR;

    if (len < KEEL_DEDUP_REC_HDR || len > KEEL_DEDUP_REC_MAX ||
        v[0] != REC_FORMAT || (v[25] & ~(FLAG_KEPT | FLAG_REFUSED)) != 0)
        return KEEL_ECORRUPT;
    rec->kept = (v[25] & FLAG_KEPT) != 0;
    if (!rec->kept && len != KEEL_DEDUP_REC_HDR)
        return KEEL_ECORRUPT;
    rec->err = 0;
    if (v[25] & FLAG_REFUSED) {
        int32_t code;
        if (!rec->kept || len < off + 4)
            return KEEL_ECORRUPT;
        code = (int32_t)keel_get_be32(v + off);
        if (code >= 0 || len - off - 4 > KEEL_DEDUP_ERR_TEXT_MAX)
            return KEEL_ECORRUPT;
        rec->err = code;
        off += 4;
    }
    rec->seq = keel_get_be64(v + 1);
    rec->time_ms = keel_get_be64(v + 9);
    rec->hash = keel_get_be64(v + 17);
    rec->reply = v + off;
    rec->rlen = len - off;
    return 0;
}

/* ------------------------------------------------------------ queue */

void keel_dedup_q_encode(uint8_t *out, uint64_t time_ms, const uint8_t *key)
{
    keel_put_be64(out, time_ms);
    memcpy(out + 8, key, KEEL_DEDUP_KEY_LEN);
}

int keel_dedup_q_decode(const uint8_t *v, size_t len, uint64_t *time_ms,
                        const uint8_t **key)
{
    if (len != KEEL_DEDUP_Q_LEN)
        return KEEL_ECORRUPT;
    *time_ms = keel_get_be64(v);
    *key = v + 8;
    return 0;
}

void keel_dedup_hdr_encode(uint8_t *out, uint64_t first, uint64_t next)
{
    keel_put_be64(out, first);
    keel_put_be64(out + 8, next);
}

int keel_dedup_hdr_decode(const uint8_t *v, size_t len, uint64_t *first,
                          uint64_t *next)
{
    if (len != KEEL_DEDUP_Q_HDR_SIZE)
        return KEEL_ECORRUPT;
    *first = keel_get_be64(v);
    *next = keel_get_be64(v + 8);
    return *first <= *next ? 0 : KEEL_ECORRUPT;
}

/* ------------------------------------------- the count window's table */

/* The size of the table's record at tab[off], or 0 if it does not
 * parse. */
static size_t tab_rec_size(const uint8_t *tab, size_t len, size_t off)
{
    uint32_t rl;

    if (len - off < TAB_REC_HDR)
        return 0;
    rl = keel_get_be32(tab + off + TAB_FLAGS_AT + 1);
    if (tab[off + TAB_FLAGS_AT] & ~1u)
        return 0;
    if (!(tab[off + TAB_FLAGS_AT] & 1) && rl != 0)
        return 0;
    if (rl > KEEL_DEDUP_REPLY_MAX || len - off - TAB_REC_HDR < rl)
        return 0;
    return TAB_REC_HDR + rl;
}

/* Whether the table parses (an empty one does). */
static int tab_valid(const uint8_t *tab, size_t len)
{
    size_t off = 1;

    if (len == 0)
        return 1;
    if (tab[0] != TAB_FORMAT)
        return 0;
    while (off < len) {
        size_t sz = tab_rec_size(tab, len, off);
        if (sz == 0)
            return 0;
        off += sz;
    }
    return 1;
}

static void tab_rec(const uint8_t *tab, size_t off, size_t sz,
                    keel_dedup_rec *rec)
{
    const uint8_t *h = tab + off + KEEL_DEDUP_KEY_LEN;

    rec->seq = 0;
    rec->time_ms = 0;
    rec->hash = keel_get_be64(h);
    rec->err = 0;
    rec->kept = tab[off + TAB_FLAGS_AT] & 1;
    rec->reply = tab + off + TAB_REC_HDR;
    rec->rlen = sz - TAB_REC_HDR;
}

int keel_dedup_table_find(const uint8_t *tab, size_t len, const uint8_t *key,
                          keel_dedup_rec *rec)
{
    size_t off = 1;
    int found = 0;

    if (!tab_valid(tab, len))
        return KEEL_ECORRUPT;
    /* Keys are unique in a table (a key found is never added again), but
     * the newest record would win if one were not. */
    while (len > 0 && off < len) {
        size_t sz = tab_rec_size(tab, len, off);
        if (memcmp(tab + off, key, KEEL_DEDUP_KEY_LEN) == 0) {
            tab_rec(tab, off, sz, rec);
            found = 1;
        }
        off += sz;
    }
    return found;
}

int keel_dedup_table_each(const uint8_t *tab, size_t len,
                          keel_dedup_table_fn fn, void *data)
{
    keel_dedup_rec rec;
    size_t off = 1;
    int rc = 0;

    if (!tab_valid(tab, len))
        return KEEL_ECORRUPT;
    while (rc == 0 && len > 0 && off < len) {
        size_t sz = tab_rec_size(tab, len, off);
        tab_rec(tab, off, sz, &rec);
        rc = fn(tab + off, &rec, data);
        off += sz;
    }
    return rc;
}
