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
 * Every unit with a primary also has an in-sync set (replication): the
 * replicas that hold every write acknowledged to a client. The primary is
 * always in it. And every node of the map's node table has the identity
 * of the store it was last seen with, so that a node back on another
 * (empty) data directory is never taken for an in-sync replica.
 *
 * Encoding of the `map` znode (all integers big-endian or LEB128 varints):
 *   "KMAP" | u8 format (3) | u8 flags (0) | u64 map_epoch | u32 shard_count
 *   | u16 ncaps | u16 nnodes | ncaps x (u8 len, bytes) | nnodes x (u8 len,
 *   bytes, 16 bytes store id: all zero when unknown) | per unit,
 *   capability-major: u8 header (bits 0-2 replica count, bit 3 "has
 *   target", bits 4-7 in-sync flags of replicas[1..4]; the primary's is
 *   implicit: set iff the unit has a primary), replica node indexes
 *   (varint), target node index (varint, if flagged), shard_epoch (varint)
 *   | varint count of promoted units | their unit indexes (varint, the
 *   first as is, then each as the gap to the one before, ascending; in
 *   format 4 each followed by u8 fallback flags and, when not zero, the
 *   varint fallback_since)
 *   | u64 XXH3_64 of everything before.
 * Formats 2 (no promoted list) and 1 (no store ids either, header bits
 * 4-7 zero, the primary alone in sync) are still decoded. Maps are
 * written in format 3 unless a unit has fallback flags (only from a
 * failover until the controller sees its primary's state written), then
 * in format 4.
 * Capabilities are sorted and unique, node names sorted and unique. A
 * settled unit takes 3 bytes (5 with two backups), so 4096 shards x 8
 * capabilities is ~100-170 KB, well under ZooKeeper's 1 MB limit. */
#ifndef KEEL_COORDINATOR_SHARDMAP_H
#define KEEL_COORDINATOR_SHARDMAP_H

#include <stddef.h>
#include <stdint.h>

#define KEEL_MAP_MAX_REPLICAS 5
#define KEEL_MAP_NO_NODE 0xFFFFu
#define KEEL_MAP_MAX_NODES 4096
#define KEEL_MAP_MAX_CAPS 64
#define KEEL_MAP_MAX_SHARDS 65536
/* Node names and capabilities: 1..KEEL_NAME_MAX bytes of [A-Za-z0-9._-]
 * (capabilities may also be "", the default group). Names are znode names
 * too, hence the restricted alphabet. */
#define KEEL_NAME_MAX 64
/* A store's identity: 32 lowercase hex digits (16 bytes). */
#define KEEL_MAP_STORE_HEX 32

typedef struct keel_map_unit {
    uint64_t shard_epoch; /* 0: never had a primary */
    uint16_t replicas[KEEL_MAP_MAX_REPLICAS]; /* node indexes, primary first */
    uint8_t nreplicas;
    uint16_t target; /* node the unit is moving to, or KEEL_MAP_NO_NODE */
    /* Bit i set: replicas[i] is in the in-sync set. Bit 0 (the primary)
     * is set iff the unit has a primary (shard_epoch > 0, nreplicas >
     * 0); no bit at or beyond nreplicas. */
    uint8_t insync;
    /* 1: the primary was promoted from the unit's in-sync set at
     * shard_epoch (its predecessor died): its store holds the unit's data
     * whatever fence it recorded as a backup, so its acquire keeps what
     * it holds (docs/cluster.md, "Failover"). Only on a unit with a
     * primary; cleared by the next change of primary. */
    uint8_t promoted;
    /* Promoted units only: bit i set, replicas[i] (i >= 1) was in the
     * in-sync set before that promotion, so it may stand in for the
     * promoted primary if that one is gone without having written its
     * state znode since (it then answered nothing at shard_epoch:
     * docs/cluster.md, "Failover", "A promoted primary lost before it
     * served"). fallback_since is the mzxid that state had when the
     * promotion was decided (nonzero iff fallback is). */
    uint8_t fallback;
    uint64_t fallback_since;
} keel_map_unit;

typedef struct keel_shard_map {
    uint64_t map_epoch;
    uint32_t shard_count;
    uint32_t ncaps;
    char **caps; /* sorted; "" sorts first */
    uint32_t nnodes;
    char **nodes; /* sorted */
    /* Parallel to nodes: the identity of the store each node was last
     * seen with (KEEL_MAP_STORE_HEX lowercase hex digits), "" unknown. */
    char (*store_ids)[KEEL_MAP_STORE_HEX + 1];
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
/* Adds a capability (its units start empty) or a node (store id
 * unknown), keeping the tables sorted (existing node indexes in units are
 * renumbered). Returns the new index (or the existing one), KEEL_EINVAL or
 * KEEL_ENOMEM (m unchanged). */
int keel_map_add_cap(keel_shard_map *m, const char *cap);
int keel_map_add_node(keel_shard_map *m, const char *name);
/* Drops nodes no unit refers to (renumbering the rest). */
void keel_map_compact_nodes(keel_shard_map *m);
/* Records the store id of node idx: KEEL_MAP_STORE_HEX lowercase hex
 * digits, or NULL / "" for unknown (so is an id of all zeros, which the
 * encoding cannot tell from unknown). 0 or KEEL_EINVAL (m unchanged). */
int keel_map_set_store(keel_shard_map *m, uint32_t idx, const char *store);
/* 1 if s is a store id as the map keeps it (32 lowercase hex digits). */
int keel_map_store_valid(const char *s);

static inline keel_map_unit *keel_map_unit_at(const keel_shard_map *m,
                                              uint32_t cap, uint32_t shard)
{
    return &m->units[(size_t)cap * m->shard_count + shard];
}

/* Primary node name of a unit, or NULL. */
const char *keel_map_primary(const keel_shard_map *m, uint32_t cap,
                             uint32_t shard);
/* How many units have node table entry idx as their primary. */
size_t keel_map_units_led(const keel_shard_map *m, uint32_t idx);
/* Position of node idx in the unit's replica list (0: the primary), or
 * -1. */
int keel_map_replica_pos(const keel_map_unit *u, uint16_t idx);
/* Whether replicas[pos] is in the unit's in-sync set. */
static inline int keel_map_insync(const keel_map_unit *u, int pos)
{
    return pos >= 0 && pos < u->nreplicas && (u->insync >> pos) & 1;
}

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
/* Decodes and validates (formats 1 to 3); *out is initialised only on
 * success. Returns 0, KEEL_ECORRUPT (truncated, trailing bytes, bad magic
 * or checksum, an index out of range, unsorted or invalid names, in-sync
 * flags beyond the replica count or on a unit without a primary, a
 * promoted unit without a primary) or
 * KEEL_ENOMEM. Never reads outside buf[0..len). */
int keel_map_decode(const void *buf, size_t len, keel_shard_map *out);

/* 1 if the two maps place every unit identically (epochs, targets,
 * replica names, in-sync sets, promotions, and the store ids of the nodes
 * units name;
 * map_epoch ignored). */
int keel_map_same_placement(const keel_shard_map *a, const keel_shard_map *b);

#endif
