/* State keys: shard be16 | len(type) u8 | type | len(id) be16 | id | entry.
 *
 * Every variable part before the entry is length-prefixed, so ids may hold
 * any byte (NUL included) and no actor's prefix is a prefix of another
 * actor's prefix: "ab" and "abc" differ at the id length already. The
 * shard comes first so that one shard is one contiguous key range. */
#include <string.h>

#include "persistence/store.h"

int keel_key_encode(uint8_t *buf, uint16_t shard, const void *type,
                    size_t tlen, const void *id, size_t idlen,
                    const void *entry, size_t elen)
{
    size_t n = 0;

    if (buf == NULL || type == NULL || tlen == 0)
        return KEEL_EINVAL;
    if (tlen > KEEL_MAX_TYPE_LEN || idlen > KEEL_MAX_ID_LEN ||
        elen > KEEL_MAX_ENTRY_KEY_LEN)
        return KEEL_ELIMIT;
    if ((idlen > 0 && id == NULL) || (elen > 0 && entry == NULL))
        return KEEL_EINVAL;

    buf[n++] = (uint8_t)(shard >> 8);
    buf[n++] = (uint8_t)shard;
    buf[n++] = (uint8_t)tlen;
    memcpy(buf + n, type, tlen);
    n += tlen;
    buf[n++] = (uint8_t)(idlen >> 8);
    buf[n++] = (uint8_t)idlen;
    if (idlen > 0)
        memcpy(buf + n, id, idlen);
    n += idlen;
    if (elen > 0)
        memcpy(buf + n, entry, elen);
    n += elen;
    return (int)n;
}

int keel_key_type(const uint8_t *key, size_t klen, const uint8_t **type,
                  size_t *tlen)
{
    if (klen < 3 || key[2] == 0 || key[2] > KEEL_MAX_TYPE_LEN ||
        klen < 3u + key[2] + 2u)
        return -1;
    *type = key + 3;
    *tlen = key[2];
    return 0;
}

int keel_record_parse(const void *val, size_t len, keel_record *out)
{
    const uint8_t *p = val;
    uint64_t version = 0, epoch = 0;

    if (len < KEEL_RECORD_HEADER)
        return KEEL_ECORRUPT;
    for (int i = 0; i < 8; i++) {
        version = (version << 8) | p[i];
        epoch = (epoch << 8) | p[8 + i];
    }
    out->version = version;
    out->epoch = epoch;
    out->data = p + KEEL_RECORD_HEADER;
    out->len = len - KEEL_RECORD_HEADER;
    return 0;
}

int keel_key_decode(const uint8_t *key, size_t klen, keel_key_parts *out)
{
    size_t tlen, idlen, off;

    if (key == NULL || out == NULL || klen < 3)
        return KEEL_EMALFORMED;
    tlen = key[2];
    if (tlen == 0 || tlen > KEEL_MAX_TYPE_LEN || klen < 3 + tlen + 2)
        return KEEL_EMALFORMED;
    off = 3 + tlen;
    idlen = ((size_t)key[off] << 8) | key[off + 1];
    off += 2;
    if (idlen > KEEL_MAX_ID_LEN || klen < off + idlen)
        return KEEL_EMALFORMED;
    if (klen - off - idlen > KEEL_MAX_ENTRY_KEY_LEN)
        return KEEL_EMALFORMED;

    out->shard = (uint16_t)(((unsigned)key[0] << 8) | key[1]);
    out->type = key + 3;
    out->tlen = tlen;
    out->id = key + off;
    out->idlen = idlen;
    out->entry = key + off + idlen;
    out->elen = klen - off - idlen;
    return 0;
}

int keel_key_prefix_len(const uint8_t *key, size_t klen)
{
    keel_key_parts p;
    int rc = keel_key_decode(key, klen, &p);

    if (rc < 0)
        return rc;
    return (int)(p.entry - key);
}
