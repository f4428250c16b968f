#include "rktable.h"

#include <string.h>

#include "common/be.h"
#include "runtime/dedup.h"

size_t tu_rktable_add(uint8_t *tab, size_t len, const uint8_t *key,
                      uint64_t hash, int kept, const void *reply,
                      size_t rlen)
{
    uint8_t *p;

    if (len == 0)
        tab[len++] = 1; /* format */
    if (!kept)
        rlen = 0;
    p = tab + len;
    memcpy(p, key, KEEL_DEDUP_KEY_LEN);
    keel_put_be64(p + KEEL_DEDUP_KEY_LEN, hash);
    p[KEEL_DEDUP_KEY_LEN + 8] = (uint8_t)(kept != 0);
    p[KEEL_DEDUP_KEY_LEN + 9] = (uint8_t)(rlen >> 24);
    p[KEEL_DEDUP_KEY_LEN + 10] = (uint8_t)(rlen >> 16);
    p[KEEL_DEDUP_KEY_LEN + 11] = (uint8_t)(rlen >> 8);
    p[KEEL_DEDUP_KEY_LEN + 12] = (uint8_t)rlen;
    if (rlen > 0)
        memcpy(p + KEEL_DEDUP_KEY_LEN + 13, reply, rlen);
    return len + KEEL_DEDUP_KEY_LEN + 13 + rlen;
}
