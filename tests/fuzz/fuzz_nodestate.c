/* Fuzz target: the node state znode (coordinator/nodestate.c,
 * keel_node_state_decode), which the controller decodes for every member.
 *
 * Input: a mode byte (sealed.h: bit 0 appends the checksum), then the
 * znode's bytes.
 *
 * Properties, besides "no crash, no sanitizer report, no leak":
 *  - decoding fails only with KEEL_ECORRUPT;
 *  - a state that decodes encodes to exactly the same bytes (canonical:
 *    sorted unique tables and entries, minimal varints, drop and add
 *    lists ascending); formats 1 and 2, read but no longer written,
 *    encode to the same bytes but for the format byte (and the
 *    checksum);
 *  - its entries are sorted and each is found by keel_node_state_find;
 *    indexes name a capability, for RELEASED a node, and in a PRIMARY's
 *    drop and add lists nodes, ascending; every add carries a store id
 *    as the map keeps them, never the unknown one. */
#include "coordinator/nodestate.h"
#include "coordinator/shardmap.h"
#include "fuzz.h"
#include "keel.h"
#include "sealed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    keel_node_state st;
    uint8_t *buf, *enc = NULL;
    size_t len, enc_len = 0, i;
    int rc, d;

    buf = fuzz_sealed_input(data, size, &len);
    rc = keel_node_state_decode(buf, len, &st);
    FUZZ_CHECK(rc == 0 || rc == KEEL_ECORRUPT);
    if (rc != 0) {
        free(buf);
        return 0;
    }
    for (i = 0; i < st.n; i++) {
        const keel_state_entry *e = &st.entries[i];
        FUZZ_CHECK(e->cap < st.ncaps && e->shard < KEEL_MAP_MAX_SHARDS);
        FUZZ_CHECK(e->role == KEEL_ROLE_PRIMARY ||
                   e->role == KEEL_ROLE_RELEASED);
        FUZZ_CHECK(e->role != KEEL_ROLE_RELEASED || e->to < st.nnames);
        FUZZ_CHECK(keel_node_state_find(&st, st.caps[e->cap], e->shard) ==
                   e);
        FUZZ_CHECK(e->ndrop <= KEEL_STATE_MAX_DROPS);
        FUZZ_CHECK(e->ndrop == 0 || e->role == KEEL_ROLE_PRIMARY);
        for (d = 0; d < e->ndrop; d++)
            FUZZ_CHECK(e->drop[d] < st.nnames &&
                       (d == 0 || e->drop[d - 1] < e->drop[d]));
        FUZZ_CHECK(e->nadd <= KEEL_STATE_MAX_ADDS);
        FUZZ_CHECK(e->nadd == 0 || e->role == KEEL_ROLE_PRIMARY);
        for (d = 0; d < e->nadd; d++)
            FUZZ_CHECK(e->add[d] < st.nnames &&
                       (d == 0 || e->add[d - 1] < e->add[d]) &&
                       keel_map_store_valid(e->add_store[d]) &&
                       strspn(e->add_store[d], "0") != KEEL_MAP_STORE_HEX);
    }
    FUZZ_CHECK(keel_node_state_encode(&st, &enc, &enc_len) == 0);
    FUZZ_CHECK(enc_len == len);
    if (buf[4] == 1 || buf[4] == 2) {
        FUZZ_CHECK(enc[4] == 3 && memcmp(enc, buf, 4) == 0 &&
                   memcmp(enc + 5, buf + 5, len - 5 - 8) == 0);
    } else {
        FUZZ_CHECK(memcmp(enc, buf, len) == 0);
    }
    keel_node_state_free(&st);
    free(enc);
    free(buf);
    return 0;
}
