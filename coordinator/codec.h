/* Byte-level helpers for the coordinator's binary znode formats (map,
 * node state): a growable output buffer and a bounds-checked reader.
 * Integers are big-endian or LEB128 varints. A reader never reads past its
 * end: once it runs short it stays failed, and every later get returns 0,
 * so decoders check `r.bad` at the points where it matters. */
#ifndef KEEL_COORDINATOR_CODEC_H
#define KEEL_COORDINATOR_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct keel_wbuf {
    uint8_t *p;
    size_t len, cap;
    int oom;
} keel_wbuf;

static inline void keel_wbuf_need(keel_wbuf *w, size_t n)
{
    if (w->oom || w->len + n <= w->cap)
        return;
    {
        size_t cap = w->cap ? w->cap : 256;
        uint8_t *p;
        while (cap < w->len + n)
            cap *= 2;
        p = realloc(w->p, cap);
        if (p == NULL) {
            w->oom = 1;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
}

static inline void keel_wbuf_put(keel_wbuf *w, const void *src, size_t n)
{
    keel_wbuf_need(w, n);
    if (w->oom || n == 0)
        return;
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static inline void keel_wbuf_u8(keel_wbuf *w, unsigned v)
{
    uint8_t b = (uint8_t)v;
    keel_wbuf_put(w, &b, 1);
}

static inline void keel_wbuf_be(keel_wbuf *w, uint64_t v, int bytes)
{
    uint8_t b[8];
    int i;
    for (i = 0; i < bytes; i++)
        b[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    keel_wbuf_put(w, b, (size_t)bytes);
}

static inline void keel_wbuf_varint(keel_wbuf *w, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;
    do {
        b[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v != 0)
            b[n] |= 0x80;
        n++;
    } while (v != 0);
    keel_wbuf_put(w, b, n);
}

/* A short string: u8 length, bytes. Callers guarantee len <= 255. */
static inline void keel_wbuf_str8(keel_wbuf *w, const char *s)
{
    size_t n = strlen(s);
    keel_wbuf_u8(w, (unsigned)n);
    keel_wbuf_put(w, s, n);
}

typedef struct keel_rbuf {
    const uint8_t *p;
    size_t len, off;
    int bad;
} keel_rbuf;

static inline const uint8_t *keel_rbuf_take(keel_rbuf *r, size_t n)
{
    const uint8_t *p;
    if (r->bad || r->len - r->off < n) {
        r->bad = 1;
        return NULL;
    }
    p = r->p + r->off;
    r->off += n;
    return p;
}

static inline unsigned keel_rbuf_u8(keel_rbuf *r)
{
    const uint8_t *p = keel_rbuf_take(r, 1);
    return p ? p[0] : 0;
}

static inline uint64_t keel_rbuf_be(keel_rbuf *r, int bytes)
{
    const uint8_t *p = keel_rbuf_take(r, (size_t)bytes);
    uint64_t v = 0;
    int i;
    if (p == NULL)
        return 0;
    for (i = 0; i < bytes; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Rejects overlong and overflowing encodings, so that one value has one
 * encoding (the checksum then covers a canonical form). */
static inline uint64_t keel_rbuf_varint(keel_rbuf *r)
{
    uint64_t v = 0;
    int shift = 0;
    for (;;) {
        const uint8_t *p = keel_rbuf_take(r, 1);
        if (p == NULL)
            return 0;
        if (shift == 63 && (p[0] & 0x7e) != 0) {
            r->bad = 1;
            return 0;
        }
        v |= (uint64_t)(p[0] & 0x7f) << shift;
        if (!(p[0] & 0x80)) {
            if (p[0] == 0 && shift > 0) {
                r->bad = 1; /* overlong */
                return 0;
            }
            return v;
        }
        shift += 7;
        if (shift > 63) {
            r->bad = 1;
            return 0;
        }
    }
}

/* Reads a u8-length string into a fresh NUL-terminated copy; rejects
 * embedded NULs. NULL on failure (r->bad set, or out of memory). */
static inline char *keel_rbuf_str8(keel_rbuf *r, int *oom)
{
    unsigned n = keel_rbuf_u8(r);
    const uint8_t *p = keel_rbuf_take(r, n);
    char *s;
    if (p == NULL)
        return NULL;
    if (n > 0 && memchr(p, 0, n) != NULL) {
        r->bad = 1;
        return NULL;
    }
    s = malloc(n + 1);
    if (s == NULL) {
        *oom = 1;
        return NULL;
    }
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* Shared by the map and node-state formats (codec.c). */

/* Appends the XXH3 checksum of everything written and hands the buffer
 * over: 0 with *out (malloc'd, the caller frees) and *len, or KEEL_ENOMEM
 * with the buffer freed. */
int keel_wbuf_seal(keel_wbuf *w, uint8_t **out, size_t *len);
/* Position of s in a sorted table of n names, or where it would go as
 * -(pos + 1). */
int keel_names_find(char *const *v, uint32_t n, const char *s);
/* Frees a table of n names (NULL is fine). */
void keel_names_free(char **v, uint32_t n);
/* Reads a sorted, unique table of n names, each valid per
 * keel_name_valid(). KEEL_ECORRUPT or KEEL_ENOMEM. */
int keel_rbuf_names(keel_rbuf *r, uint32_t n, int allow_empty, char ***out);
/* A store id on the wire: 16 raw bytes, all zero for "" (unknown).
 * keel_wbuf_store takes "" or KEEL_MAP_STORE_HEX lowercase hex digits;
 * keel_rbuf_store writes the hex digits and a NUL into hex (33 bytes), ""
 * when the bytes are all zero or missing (then r->bad is set). */
void keel_wbuf_store(keel_wbuf *w, const char *hex);
void keel_rbuf_store(keel_rbuf *r, char *hex);

#endif
