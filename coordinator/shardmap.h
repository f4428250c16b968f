/* The shard map: for every placement unit (capability, shard) its replica
 * list (primary first), its shard_epoch and, during a move, the node the
 * unit is moving to. Only the controller computes and writes it (znode
 * `map`); nodes decode it.
 *
 * Placement is rendezvous hashing (highest random weight): a unit's score
 * on a node is XXH3_64(len(node) | node | len(cap) | cap | be32(shard)),
 * and the unit's replicas are the k best-scoring members that declare its
 * capability ("" — types with no requirement — is declared by every
 * member). Adding or removing one of N members therefore moves about 1/N
 * of the units and no others, and no coordination is needed to agree on
 * the result, although only the controller ever acts on it.
 *
 * Encoding of the `map` znode (all integers big-endian or LEB128 varints):
 *   "KMAP" | u8 format (1) | u8 flags (0) | u64 map_epoch | u32 shard_count
 *   | u16 ncaps | u16 nnodes | ncaps x (u8 len, bytes) | nnodes x (u8 len,
 *   bytes) | per unit, capability-major: u8 header (bits 0-2 replica
 *   count, bit 3 "has target", others 0), replica node indexes (varint),
 *   target node index (varint, if flagged), shard_epoch (varint)
 *   | u64 XXH3_64 of everything before.
 * Capabilities are sorted and unique, node names sorted and unique. A
 * settled unit takes 3 bytes, so 4096 shards x 8 capabilities is ~100 KB,
 * well under ZooKeeper's 1 MB limit. */
#ifndef KEEL_COORDINATOR_SHARDMAP_H
#define KEEL_COORDINATOR_SHARDMAP_H

#include <stddef.h>
#include <stdint.h>

#define KEEL_MAP_MAX_REPLICAS 3
#define KEEL_MAP_NO_NODE 0xFFFFu
#define KEEL_MAP_MAX_NODES 4096
#define KEEL_MAP_MAX_CAPS 64
#define KEEL_MAP_MAX_SHARDS 65536
/* Node names and capabilities: 1..KEEL_NAME_MAX bytes of [A-Za-z0-9._-]
 * (capabilities may also be "", the default group). Names are znode names
 * too, hence the restricted alphabet. */
#define KEEL_NAME_MAX 64

typedef struct keel_map_unit {
    uint64_t shard_epoch; /* 0: never had a primary */
    uint16_t replicas[KEEL_MAP_MAX_REPLICAS]; /* node indexes, primary first */
    uint8_t nreplicas;
    uint16_t target; /* node the unit is moving to, or KEEL_MAP_NO_NODE */
} keel_map_unit;

typedef struct keel_shard_map {
    uint64_t map_epoch;
    uint32_t shard_count;
    uint32_t ncaps;
    char **caps; /* sorted; "" sorts first */
    uint32_t nnodes;
    char **nodes; /* sorted */
    keel_map_unit *units; /* ncaps * shard_count, capability-major */
} keel_shard_map;

/* A member as placement sees it. */
typedef struct keel_map_member {
    const char *name;
    const char *const *caps;
    size_t ncaps;
} keel_map_member;

/* 1 if s is a valid node name (allow_empty: or "", for capabilities). */
int keel_name_valid(const char *s, int allow_empty);

/* An empty map (no capabilities, no nodes). Returns 0 or KEEL_EINVAL
 * (shard_count 0 or over KEEL_MAP_MAX_SHARDS). */
int keel_map_init(keel_shard_map *m, uint32_t shard_count);
void keel_map_free(keel_shard_map *m);
/* Deep copy into an uninitialised dst. 0 or KEEL_ENOMEM. */
int keel_map_copy(keel_shard_map *dst, const keel_shard_map *src);

/* Index of a capability / node, or -1. Binary search. */
int keel_map_cap_index(const keel_shard_map *m, const char *cap);
int keel_map_node_index(const keel_shard_map *m, const char *name);
/* Adds a capability (its units start empty) or a node, keeping the tables
 * sorted (existing node indexes in units are renumbered). Returns the new
 * index (or the existing one), KEEL_EINVAL or KEEL_ENOMEM (m unchanged). */
int keel_map_add_cap(keel_shard_map *m, const char *cap);
int keel_map_add_node(keel_shard_map *m, const char *name);
/* Drops nodes no unit refers to (renumbering the rest). */
void keel_map_compact_nodes(keel_shard_map *m);

static inline keel_map_unit *keel_map_unit_at(const keel_shard_map *m,
                                              uint32_t cap, uint32_t shard)
{
    return &m->units[(size_t)cap * m->shard_count + shard];
}

/* Primary node name of a unit, or NULL. */
const char *keel_map_primary(const keel_shard_map *m, uint32_t cap,
                             uint32_t shard);

/* The rendezvous score of a unit on a node. */
uint64_t keel_rendezvous_score(const char *node, const char *cap,
                               uint32_t shard);
/* The (at most k) best members for a unit among those declaring cap
 * (every member for ""), best first, as indexes into members. Ties, which
 * need a 64-bit collision, go to the smaller name. Returns the count. */
size_t keel_rendezvous_top(const keel_map_member *members, size_t n,
                           const char *cap, uint32_t shard, size_t k,
                           size_t *out);

/* The desired placement: a map over `caps` (plus "", always) whose units'
 * replicas are the top k capable members; shard epochs 0, no targets,
 * map_epoch 0. Pure and deterministic: the order of members and caps does
 * not matter. Returns 0, KEEL_EINVAL (bad name, duplicate member, k out of
 * 1..KEEL_MAP_MAX_REPLICAS, too many nodes or capabilities) or
 * KEEL_ENOMEM; *out is initialised only on success. */
int keel_map_compute(const keel_map_member *members, size_t n,
                     const char *const *caps, size_t ncaps,
                     uint32_t shard_count, size_t k, keel_shard_map *out);

/* Encodes m into a malloc'd buffer (*out, *len). 0 or KEEL_ENOMEM. */
int keel_map_encode(const keel_shard_map *m, uint8_t **out, size_t *len);
/* Decodes and validates; *out is initialised only on success. Returns 0,
 * KEEL_ECORRUPT (truncated, trailing bytes, bad magic or checksum, an
 * index out of range, unsorted or invalid names) or KEEL_ENOMEM. Never
 * reads outside buf[0..len). */
int keel_map_decode(const void *buf, size_t len, keel_shard_map *out);

/* 1 if the two maps place every unit identically (epochs, targets and
 * replica names; map_epoch ignored). */
int keel_map_same_placement(const keel_shard_map *a, const keel_shard_map *b);

#endif
