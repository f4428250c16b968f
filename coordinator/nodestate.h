/* What a node actually holds, published in `nodes/<node>/state` (Helix's
 * CurrentState): per placement unit its role and shard_epoch, and the
 * map_epoch the node has applied. The controller reads it to learn that a
 * node released a unit (handoff step 1) and that the new owner recorded
 * its fence (step 3).
 *
 * Encoding (big-endian, LEB128 varints):
 *   "KNST" | u8 format (1) | u8 flags (0) | u64 map_epoch | u64
 *   incarnation | u16 ncaps | u16 nnames | ncaps x (u8 len, bytes) |
 *   nnames x (u8 len, bytes) | varint count | per entry: varint cap index,
 *   varint shard, u8 role, varint shard_epoch, and for RELEASED a varint
 *   index into the names (the node the unit was released to)
 *   | u64 XXH3_64 of everything before.
 * Entries are sorted by (cap, shard), unique; capability and name tables
 * sorted and unique. */
#ifndef KEEL_COORDINATOR_NODESTATE_H
#define KEEL_COORDINATOR_NODESTATE_H

#include <stddef.h>
#include <stdint.h>

enum keel_unit_role {
    KEEL_ROLE_PRIMARY = 1,  /* fence recorded at shard_epoch; serving */
    KEEL_ROLE_RELEASED = 2  /* stopped, handed to `to` at shard_epoch */
};

typedef struct keel_state_entry {
    uint16_t cap; /* index into caps */
    uint32_t shard;
    uint8_t role;
    uint64_t shard_epoch;
    uint16_t to; /* RELEASED: index into names */
} keel_state_entry;

typedef struct keel_node_state {
    uint64_t map_epoch;  /* map applied by the node */
    int64_t incarnation; /* czxid of the member znode that wrote it */
    uint32_t ncaps;
    char **caps;
    uint32_t nnames;
    char **names;
    size_t n;
    keel_state_entry *entries;
} keel_node_state;

/* A builder: add entries in any order, then encode. */
void keel_node_state_init(keel_node_state *st);
void keel_node_state_free(keel_node_state *st);
/* Adds or replaces the entry of (cap, shard). `to` is used for RELEASED.
 * Returns 0, KEEL_EINVAL or KEEL_ENOMEM. */
int keel_node_state_put(keel_node_state *st, const char *cap, uint32_t shard,
                        int role, uint64_t shard_epoch, const char *to);
/* Removes the entry, if any. */
void keel_node_state_remove(keel_node_state *st, const char *cap,
                            uint32_t shard);
/* The entry of (cap, shard) or NULL. Binary search. */
const keel_state_entry *keel_node_state_find(const keel_node_state *st,
                                             const char *cap, uint32_t shard);

int keel_node_state_encode(const keel_node_state *st, uint8_t **out,
                           size_t *len);
/* 0, KEEL_ECORRUPT or KEEL_ENOMEM; *out is initialised only on success. */
int keel_node_state_decode(const void *buf, size_t len, keel_node_state *out);

#endif
