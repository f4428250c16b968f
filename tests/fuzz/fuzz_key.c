/* Fuzz target: the store's key codec and record header
 * (persistence/key.c: keel_key_decode, keel_key_type,
 * keel_key_prefix_len, keel_record_parse). Keys come back from LMDB, from
 * XFER streams of other nodes and from the log on recovery.
 *
 * Input: the bytes of a key (and, read as a stored value, of a record).
 *
 * Properties, besides "no crash, no sanitizer report":
 *  - a key decodes only with every part within its limit, the parts tile
 *    the key, and keel_key_encode of the parts gives back the same bytes;
 *  - keel_key_type and keel_key_prefix_len agree with the decoder;
 *  - keel_record_parse takes exactly a 16-byte header (two big-endian
 *    64-bit numbers) and leaves the rest as the data. */
#include <string.h>

#include "fuzz.h"
#include "persistence/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    keel_key_parts kp;
    keel_record rec;
    const uint8_t *type = NULL;
    size_t tlen = 0;
    int rc, trc, plen;

    rc = keel_key_decode(data, size, &kp);
    trc = keel_key_type(data, size, &type, &tlen);
    plen = keel_key_prefix_len(data, size);
    if (size == 0)
        FUZZ_CHECK(rc == KEEL_EMALFORMED);
    if (rc == 0) {
        uint8_t buf[KEEL_KEY_MAX];
        int n;

        FUZZ_CHECK(kp.tlen >= 1 && kp.tlen <= KEEL_MAX_TYPE_LEN &&
                   kp.idlen <= KEEL_MAX_ID_LEN &&
                   kp.elen <= KEEL_MAX_ENTRY_KEY_LEN);
        FUZZ_CHECK(kp.type == data + 3 && kp.id == kp.type + kp.tlen + 2 &&
                   kp.entry == kp.id + kp.idlen &&
                   kp.entry + kp.elen == data + size);
        FUZZ_CHECK(kp.shard == ((unsigned)data[0] << 8 | data[1]));
        FUZZ_CHECK(size <= KEEL_KEY_MAX);
        n = keel_key_encode(buf, kp.shard, kp.type, kp.tlen, kp.id,
                            kp.idlen, kp.entry, kp.elen);
        FUZZ_CHECK(n > 0 && (size_t)n == size && memcmp(buf, data, size) == 0);
        FUZZ_CHECK(trc == 0 && type == kp.type && tlen == kp.tlen);
        FUZZ_CHECK(plen == (int)(kp.entry - data));
    } else {
        FUZZ_CHECK(rc == KEEL_EMALFORMED && plen == KEEL_EMALFORMED);
    }
    if (trc == 0)
        FUZZ_CHECK(tlen >= 1 && tlen <= KEEL_MAX_TYPE_LEN &&
                   type == data + 3 && 3 + tlen + 2 <= size);

    rc = keel_record_parse(data, size, &rec);
    if (size < KEEL_RECORD_HEADER) {
        FUZZ_CHECK(rc == KEEL_ECORRUPT);
    } else {
        uint64_t v = 0, e = 0;
        int i;
        for (i = 0; i < 8; i++) {
            v = v << 8 | data[i];
            e = e << 8 | data[8 + i];
        }
        FUZZ_CHECK(rc == 0 && rec.version == v && rec.epoch == e);
        FUZZ_CHECK(rec.data == data + KEEL_RECORD_HEADER &&
                   rec.len == size - KEEL_RECORD_HEADER);
    }
    return 0;
}
