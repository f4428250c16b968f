/* Pieces shared by the coordinator's binary formats (shardmap.c,
 * nodestate.c); the byte-level helpers are inline in codec.h. */
#include "coordinator/codec.h"

#include <xxhash.h>

#include "coordinator/shardmap.h"
#include "keel.h"

int keel_wbuf_seal(keel_wbuf *w, uint8_t **out, size_t *len)
{
    if (!w->oom)
        keel_wbuf_be(w, XXH3_64bits(w->p, w->len), 8);
    if (w->oom) {
        free(w->p);
        return KEEL_ENOMEM;
    }
    *out = w->p;
    *len = w->len;
    return 0;
}

int keel_names_find(char *const *v, uint32_t n, const char *s)
{
    int lo = 0, hi = (int)n - 1;

    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(v[mid], s);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -(lo + 1);
}

void keel_names_free(char **v, uint32_t n)
{
    uint32_t i;

    if (v == NULL)
        return;
    for (i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int keel_rbuf_names(keel_rbuf *r, uint32_t n, int allow_empty, char ***out)
{
    char **v = calloc(n ? n : 1, sizeof *v);
    uint32_t i;
    int oom = 0;

    if (v == NULL)
        return KEEL_ENOMEM;
    for (i = 0; i < n; i++) {
        v[i] = keel_rbuf_str8(r, &oom);
        if (v[i] == NULL || !keel_name_valid(v[i], allow_empty) ||
            (i > 0 && strcmp(v[i - 1], v[i]) >= 0)) {
            keel_names_free(v, v[i] != NULL ? i + 1 : i);
            return oom ? KEEL_ENOMEM : KEEL_ECORRUPT;
        }
    }
    *out = v;
    return 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c - 'a' + 10;
}

void keel_wbuf_store(keel_wbuf *w, const char *hex)
{
    uint8_t b[KEEL_MAP_STORE_HEX / 2];
    int i;

    memset(b, 0, sizeof b);
    if (hex[0] != '\0')
        for (i = 0; i < (int)sizeof b; i++)
            b[i] = (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
    keel_wbuf_put(w, b, sizeof b);
}

void keel_rbuf_store(keel_rbuf *r, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = keel_rbuf_take(r, KEEL_MAP_STORE_HEX / 2);
    int i, zero = 1;

    hex[0] = '\0';
    if (p == NULL)
        return;
    for (i = 0; i < KEEL_MAP_STORE_HEX / 2; i++) {
        hex[2 * i] = digits[p[i] >> 4];
        hex[2 * i + 1] = digits[p[i] & 15];
        zero &= p[i] == 0;
    }
    hex[KEEL_MAP_STORE_HEX] = '\0';
    if (zero)
        hex[0] = '\0';
}
