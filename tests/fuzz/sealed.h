/* The binary znodes (map, node state) end in an XXH3-64 of everything
 * before, checked first: random bytes never get past it. So their targets
 * take one mode byte first: bit 0 set means "the rest is the znode
 * without its checksum; append the right one", which lets the fuzzer
 * explore the decoder behind the check; clear means "the rest is the
 * znode as stored", which keeps the check itself under test. */
#ifndef KEEL_TESTS_FUZZ_SEALED_H
#define KEEL_TESTS_FUZZ_SEALED_H

#include <string.h>
#include <xxhash.h>

#include "fuzz.h"

/* A malloc'd copy of the znode the input stands for; the caller frees. */
static inline uint8_t *fuzz_sealed_input(const uint8_t *data, size_t size,
                                         size_t *len)
{
    int seal = size > 0 && (data[0] & 1);
    size_t n = size > 0 ? size - 1 : 0;
    uint8_t *buf = malloc(n + 8 + 1);

    FUZZ_CHECK(buf != NULL);
    if (n > 0)
        memcpy(buf, data + 1, n);
    if (seal) {
        uint64_t h = XXH3_64bits(buf, n);
        int i;
        for (i = 0; i < 8; i++)
            buf[n + (size_t)i] = (uint8_t)(h >> (56 - 8 * i));
        n += 8;
    }
    *len = n;
    return buf;
}

#endif
