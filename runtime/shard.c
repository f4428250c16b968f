/* Actor -> shard: XXH3_64(len(type) u8 || type || id) mod shard_count.
 * The type's length goes first so that ("ab", "c") and ("a", "bc") differ. */
#include <string.h>
#include <xxhash.h>

#include "keel.h"

uint32_t keel_shard_of(const char *type, const void *id, size_t idlen,
                       uint32_t shard_count)
{
    uint8_t buf[1 + KEEL_MAX_TYPE_LEN + KEEL_MAX_ID_LEN];
    size_t tlen = strlen(type);

    if (shard_count == 0)
        return 0;
    if (tlen <= KEEL_MAX_TYPE_LEN && idlen <= KEEL_MAX_ID_LEN) {
        /* The common case: one contiguous input, no streaming state. */
        buf[0] = (uint8_t)tlen;
        memcpy(buf + 1, type, tlen);
        if (idlen > 0)
            memcpy(buf + 1 + tlen, id, idlen);
        return (uint32_t)(XXH3_64bits(buf, 1 + tlen + idlen) % shard_count);
    } else {
        /* Over the limits keel enforces: only direct callers get here. */
        XXH3_state_t *st = XXH3_createState();
        uint8_t tl = (uint8_t)(tlen > 255 ? 255 : tlen);
        uint64_t h;

        if (st == NULL)
            return 0;
        XXH3_64bits_reset(st);
        XXH3_64bits_update(st, &tl, 1);
        XXH3_64bits_update(st, type, tlen);
        XXH3_64bits_update(st, id, idlen);
        h = XXH3_64bits_digest(st);
        XXH3_freeState(st);
        return (uint32_t)(h % shard_count);
    }
}
