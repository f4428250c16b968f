/* Fuzz target: store recovery from a damaged log (keel.wal), through
 * keel_store_open. The harness and the property are in recovery.c.
 *
 * Input: a mode byte, then the log's bytes. Mode bit 0 clear: the log as
 * given; the state must be one after a prefix of the template's commits
 * (unless the fuzzer forged a record's hash, see recovery.c). Bit 0 set:
 * the harness first rewrites the hash of every record it can delimit
 * (by the length in its header) to match, so that the log's parser
 * (rec_to_batch) and the replay of what it yields get arbitrary records;
 * then only refusal-or-consistent-reopen is checked, since a record
 * whose hash holds is the store's to apply, whatever it says. Bit 1 set:
 * the log is followed by zeros up to the next MiB past its end, as the
 * store's writing ahead leaves it (persistence/wal.c, write_ahead),
 * without the input having to carry them. */
#include <string.h>
#include <xxhash.h>

#include "fuzz.h"
#include "persistence/wal.h"
#include "recovery.h"

/* The stretch the log is written ahead by (persistence/wal.c). */
#define WAL_AHEAD (1u << 20)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rh_template_get();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const rh_template *t = rh_template_get();
    uint8_t *wal;
    size_t len, pos, padded, hs;
    uint64_t seed;
    int reseal;

    if (size < 1)
        return 0;
    reseal = data[0] & 1;
    len = size - 1;
    padded = data[0] & 2 ? (len + WAL_AHEAD) & ~(size_t)(WAL_AHEAD - 1)
                         : len;
    wal = calloc(1, padded + 1);
    FUZZ_CHECK(wal != NULL);
    if (len > 0)
        memcpy(wal, data + 1, len);
    /* Records begin after the log's 4 KiB header, hashed with the
     * header's seed (wal.h): in a log of version 2, 56-byte headers, each
     * also hashed on its own; in one of version 1, 48-byte headers. */
    pos = 4096;
    seed = rh_wal_seed(wal, len);
    hs = rh_wal_version(wal, len) >= 2 ? KEEL_WAL_REC_HDR : 48;
    while (reseal && len >= pos && len - pos >= hs) {
        uint64_t rlen, h;
        memcpy(&rlen, wal + pos + 24, 8);
        if (rlen > len - pos - hs)
            break;
        if (hs == KEEL_WAL_REC_HDR) {
            h = XXH3_64bits_withSeed(wal + pos + 8, 40,
                                     seed ^ KEEL_WAL_HHASH_SALT);
            memcpy(wal + pos + 48, &h, 8);
        }
        h = XXH3_64bits_withSeed(wal + pos + 8, hs - 8 + (size_t)rlen, seed);
        memcpy(wal + pos, &h, 8);
        pos += hs + (size_t)rlen;
    }
    /* The zeros after the resealing: they are no records. */
    len = padded;
    rh_recover(wal, len, t->ckpt.p, t->ckpt.len,
               !reseal && !rh_wal_forged(wal, len));
    free(wal);
    return 0;
}
