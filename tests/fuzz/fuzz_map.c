/* Fuzz target: the shard map znode (coordinator/shardmap.c,
 * keel_map_decode), which every node decodes from ZooKeeper.
 *
 * Input: a mode byte (sealed.h: bit 0 appends the checksum), then the
 * znode's bytes.
 *
 * Properties, besides "no crash, no sanitizer report, no leak":
 *  - decoding fails only with KEEL_ECORRUPT (KEEL_ENOMEM cannot come from
 *    inputs this small: the decoder refuses sizes the input cannot hold
 *    before it allocates);
 *  - a map that decodes encodes to exactly the same bytes (the format is
 *    canonical: sorted unique names, minimal varints, flags 0); a map of
 *    format 1 or 2, which are read but no longer written, encodes to a
 *    format 3 map that decodes to the same placement and encodes to
 *    itself;
 *  - a decoded map is usable: every replica and target index names a node,
 *    every store id is "" or 32 lowercase hex digits, the in-sync flags
 *    are within the replica count and the primary's is set exactly when
 *    the unit has a primary, so is the promoted flag only on a unit with
 *    a primary, fallback flags only on a promoted unit, never the
 *    primary's, within the replica count and with their mzxid, a copy
 *    places every unit the same way. */
#include "coordinator/shardmap.h"
#include "fuzz.h"
#include "keel.h"
#include "sealed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    keel_shard_map m, copy;
    uint8_t *buf, *enc = NULL;
    size_t len, enc_len = 0, i, n;
    uint32_t c, s;
    int rc;

    buf = fuzz_sealed_input(data, size, &len);
    rc = keel_map_decode(buf, len, &m);
    FUZZ_CHECK(rc == 0 || rc == KEEL_ECORRUPT);
    if (rc != 0) {
        free(buf);
        return 0;
    }
    FUZZ_CHECK(m.shard_count >= 1 && m.shard_count <= KEEL_MAP_MAX_SHARDS);
    FUZZ_CHECK(m.ncaps <= KEEL_MAP_MAX_CAPS &&
               m.nnodes <= KEEL_MAP_MAX_NODES);
    for (c = 0; c < m.ncaps; c++)
        FUZZ_CHECK(keel_map_cap_index(&m, m.caps[c]) == (int)c);
    for (c = 0; c < m.nnodes; c++)
        FUZZ_CHECK(keel_map_node_index(&m, m.nodes[c]) == (int)c);
    n = (size_t)m.ncaps * m.shard_count;
    for (i = 0; i < n; i++) {
        const keel_map_unit *u = &m.units[i];
        int r;
        FUZZ_CHECK(u->nreplicas <= KEEL_MAP_MAX_REPLICAS);
        for (r = 0; r < u->nreplicas; r++)
            FUZZ_CHECK(u->replicas[r] < m.nnodes);
        FUZZ_CHECK(u->target == KEEL_MAP_NO_NODE || u->target < m.nnodes);
        FUZZ_CHECK((u->insync >> u->nreplicas) == 0);
        FUZZ_CHECK((u->insync & 1) ==
                   (u->shard_epoch > 0 && u->nreplicas > 0));
        FUZZ_CHECK(!u->promoted || (u->insync & 1));
        FUZZ_CHECK(u->fallback == 0 || u->promoted);
        FUZZ_CHECK((u->fallback & 1) == 0 &&
                   (u->fallback >> u->nreplicas) == 0);
        FUZZ_CHECK((u->fallback != 0) == (u->fallback_since != 0));
    }
    for (c = 0; c < m.nnodes; c++)
        FUZZ_CHECK(m.store_ids[c][0] == '\0' ||
                   keel_map_store_valid(m.store_ids[c]));
    for (c = 0; c < m.ncaps; c++)
        for (s = 0; s < m.shard_count && s < 64; s++) {
            const char *p = keel_map_primary(&m, c, s);
            FUZZ_CHECK(p == NULL || keel_map_node_index(&m, p) >= 0);
        }
    FUZZ_CHECK(keel_map_encode(&m, &enc, &enc_len) == 0);
    if (buf[4] == 1 || buf[4] == 2) {
        keel_shard_map m2;
        uint8_t *enc2 = NULL;
        size_t enc2_len = 0;
        FUZZ_CHECK(enc[4] == 3);
        FUZZ_CHECK(keel_map_decode(enc, enc_len, &m2) == 0);
        FUZZ_CHECK(m2.map_epoch == m.map_epoch &&
                   keel_map_same_placement(&m2, &m));
        FUZZ_CHECK(keel_map_encode(&m2, &enc2, &enc2_len) == 0);
        FUZZ_CHECK(enc2_len == enc_len && memcmp(enc2, enc, enc_len) == 0);
        keel_map_free(&m2);
        free(enc2);
    } else {
        FUZZ_CHECK(enc_len == len && memcmp(enc, buf, len) == 0);
    }
    FUZZ_CHECK(keel_map_copy(&copy, &m) == 0);
    FUZZ_CHECK(keel_map_same_placement(&copy, &m));
    keel_map_free(&copy);
    keel_map_free(&m);
    free(enc);
    free(buf);
    return 0;
}
