/* Fuzz target: request keys (runtime/dedup.c): the hex form a client
 * gives (keel_dedup_key_parse, for the CLI's --key and HTTP's
 * Idempotency-Key) and the per-actor table of recorded replies, which is
 * read back from the store (keel_dedup_find, keel_dedup_add).
 *
 * Input: a selector byte; with bit 0 clear, a 16-byte key then a table;
 * with it set, a hex string.
 *
 * Properties, besides "no crash, no sanitizer report, no leak":
 *  - a table is either refused (KEEL_ECORRUPT, by find and add alike) or
 *    read; a found reply lies inside the table;
 *  - adding a record to a table that reads gives a table that reads,
 *    within the bounds (KEEL_DEDUP_MAX records, KEEL_DEDUP_TABLE_MAX
 *    bytes), in which the key is found with the hash and reply added;
 *  - a hex key (a C string: up to the first NUL) parses exactly when it
 *    is 32 hex digits, and parses to the bytes those digits spell. */
#include <ctype.h>
#include <string.h>

#include "fuzz.h"
#include "runtime/dedup.h"

static void check_table(const uint8_t *key, const uint8_t *tab, size_t len)
{
    const uint8_t *reply = NULL;
    static const char newreply[] = "the reply";
    uint8_t *out = NULL;
    size_t rlen = 0, outlen = 0, off, count = 0;
    uint64_t hash = 0;
    int kept = 0, found, rc;

    found = keel_dedup_find(tab, len, key, &hash, &kept, &reply, &rlen);
    FUZZ_CHECK(found == 0 || found == 1 || found == KEEL_ECORRUPT);
    if (found == 1)
        FUZZ_CHECK(reply >= tab && reply + rlen <= tab + len &&
                   (kept || rlen == 0) && rlen <= KEEL_DEDUP_REPLY_MAX);
    rc = keel_dedup_add(tab, len, key, 0x1122334455667788ull, newreply,
                        sizeof newreply - 1, &out, &outlen);
    if (found == KEEL_ECORRUPT) {
        FUZZ_CHECK(rc == KEEL_ECORRUPT);
        return;
    }
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(outlen <= KEEL_DEDUP_TABLE_MAX && out[0] == 1);
    found = keel_dedup_find(out, outlen, key, &hash, &kept, &reply, &rlen);
    FUZZ_CHECK(found == 1 && hash == 0x1122334455667788ull && kept &&
               rlen == sizeof newreply - 1 &&
               memcmp(reply, newreply, rlen) == 0);
    /* Count the records by the layout (dedup.c). */
    for (off = 1; off < outlen; count++) {
        size_t l = (size_t)out[off + 25] << 24 | (size_t)out[off + 26] << 16 |
                   (size_t)out[off + 27] << 8 | out[off + 28];
        FUZZ_CHECK(outlen - off >= 29 + l);
        off += 29 + l;
    }
    FUZZ_CHECK(off == outlen && count >= 1 && count <= KEEL_DEDUP_MAX);
    free(out);
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
    } else if (size >= 1 + KEEL_DEDUP_KEY_LEN) {
        /* A copy: the table must not be read past its end. */
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
