/* Fuzz target: the small text znodes of a cluster (coordinator/layout.c,
 * coordinator/storecheck.c): `config` (keel_config_parse),
 * `controller_epoch` (keel_epoch_parse), the store record of a node
 * (keel_storecheck_parse) and its run record (runs/<node>,
 * keel_storecheck_run_parse).
 *
 * Input: a selector byte (0: config, 1: controller_epoch, 2: store
 * record, 3: run record; taken modulo 4), then the znode's bytes.
 *
 * Properties, besides "no crash, no sanitizer report":
 *  - parsing fails only with KEEL_ECORRUPT;
 *  - what parses is a legal value (a shard count in 1..KEEL_MAP_MAX_SHARDS
 *    and a replica count in 1..KEEL_MAP_MAX_REPLICAS, a store id of 32
 *    lowercase hex digits) and is written back by the
 *    format's own writer (keel_config_format, keel_epoch_format,
 *    "store <id>\n", keel_storecheck_run_format) to the very same
 *    bytes. */
#include <string.h>

#include "coordinator/layout.h"
#include "coordinator/storecheck.h"
#include "fuzz.h"
#include "keel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[128];
    size_t n;
    int rc;

    if (size < 1)
        return 0;
    switch (data[0] % 4) {
    case 0: {
        uint32_t shards = 0;
        int replicas = 0;
        rc = keel_config_parse(data + 1, size - 1, &shards, &replicas);
        FUZZ_CHECK(rc == 0 || rc == KEEL_ECORRUPT);
        if (rc != 0)
            return 0;
        FUZZ_CHECK(shards >= 1 && shards <= KEEL_MAP_MAX_SHARDS);
        FUZZ_CHECK(replicas >= 1 && replicas <= KEEL_MAP_MAX_REPLICAS);
        n = keel_config_format(out, sizeof out, shards, replicas);
        FUZZ_CHECK(n == size - 1 && memcmp(out, data + 1, n) == 0);
        break;
    }
    case 1: {
        uint64_t epoch = 0;
        rc = keel_epoch_parse(data + 1, size - 1, &epoch);
        FUZZ_CHECK(rc == 0 || rc == KEEL_ECORRUPT);
        if (rc != 0)
            return 0;
        n = keel_epoch_format(out, sizeof out, epoch);
        FUZZ_CHECK(n == size - 1 && memcmp(out, data + 1, n) == 0);
        break;
    }
    case 3: {
        char store[KEEL_STORE_ID_HEX + 1];
        uint64_t run = 0;
        rc = keel_storecheck_run_parse(data + 1, size - 1, store, &run);
        FUZZ_CHECK(rc == 0 || rc == KEEL_ECORRUPT);
        if (rc != 0)
            return 0;
        FUZZ_CHECK(strlen(store) == KEEL_STORE_ID_HEX);
        n = keel_storecheck_run_format(out, sizeof out, store, run);
        FUZZ_CHECK(n == size - 1 && memcmp(out, data + 1, n) == 0);
        break;
    }
    default: {
        char store[KEEL_STORE_ID_HEX + 1];
        rc = keel_storecheck_parse(data + 1, size - 1, store);
        FUZZ_CHECK(rc == 0 || rc == KEEL_ECORRUPT);
        if (rc != 0)
            return 0;
        if (size == 1) {
            FUZZ_CHECK(store[0] == '\0'); /* recorded by no one yet */
            break;
        }
        FUZZ_CHECK(strlen(store) == KEEL_STORE_ID_HEX);
        n = (size_t)snprintf(out, sizeof out, "store %s\n", store);
        FUZZ_CHECK(n == size - 1 && memcmp(out, data + 1, n) == 0);
        break;
    }
    }
    return 0;
}
