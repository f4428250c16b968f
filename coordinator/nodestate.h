/* What a node actually holds, published in `nodes/<node>/state` (Helix's
 * CurrentState): per placement unit its role and shard_epoch, and the
 * map_epoch the node has applied. The controller reads it to learn that a
 * node released a unit (handoff step 1) and that the new owner recorded
 * its fence (step 3). A primary also asks here for backups that stopped
 * answering to leave the unit's in-sync set (its drop list), and for
 * backups it caught up to join it (its add list).
 *
 * Encoding (big-endian, LEB128 varints):
 *   "KNST" | u8 format (3) | u8 flags (0) | u64 map_epoch | u64
 *   incarnation | u16 ncaps | u16 nnames | ncaps x (u8 len, bytes) |
 *   nnames x (u8 len, bytes) | varint count | per entry: varint cap index,
 *   varint shard, u8 role (bit 7: a drop list follows, bit 6: an add list
 *   follows), varint shard_epoch, for RELEASED a varint index into the
 *   names (the node the unit was released to), for a PRIMARY with a drop
 *   list a varint count (1..KEEL_STATE_MAX_DROPS) and as many varint
 *   indexes into the names, ascending, then for a PRIMARY with an add
 *   list a varint count (1..KEEL_STATE_MAX_ADDS) and per add a varint
 *   index into the names (ascending) and the 16 bytes of the store id
 *   the backup was caught up under (never all zero)
 *   | u64 XXH3_64 of everything before.
 * Entries are sorted by (cap, shard), unique; capability and name tables
 * sorted and unique. Formats 1 (no drop lists) and 2 (no add lists) are
 * still decoded; states are always written in format 3. */
#ifndef KEEL_COORDINATOR_NODESTATE_H
#define KEEL_COORDINATOR_NODESTATE_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/shardmap.h"

/* A unit has at most this many backups to ask to drop, or to add. */
#define KEEL_STATE_MAX_DROPS (KEEL_MAP_MAX_REPLICAS - 1)
#define KEEL_STATE_MAX_ADDS (KEEL_MAP_MAX_REPLICAS - 1)

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
    /* PRIMARY: backups this node asks the controller to drop from the
     * unit's in-sync set at shard_epoch (indexes into names, ascending). */
    uint8_t ndrop;
    uint16_t drop[KEEL_STATE_MAX_DROPS];
    /* PRIMARY: backups this node caught up and asks the controller to add
     * to the unit's in-sync set at shard_epoch (indexes into names,
     * ascending), each with the store id (32 lowercase hex digits) it
     * holds the unit's content under. */
    uint8_t nadd;
    uint16_t add[KEEL_STATE_MAX_ADDS];
    char add_store[KEEL_STATE_MAX_ADDS][KEEL_MAP_STORE_HEX + 1];
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
/* Adds or replaces the entry of (cap, shard) (a replaced entry loses its
 * drop and add lists). `to` is used for RELEASED. Returns 0, KEEL_EINVAL or
 * KEEL_ENOMEM. */
int keel_node_state_put(keel_node_state *st, const char *cap, uint32_t shard,
                        int role, uint64_t shard_epoch, const char *to);
/* Adds node `name` to the drop list of the PRIMARY entry of (cap, shard).
 * Returns 0 (also when listed already), KEEL_ENOTFOUND (no PRIMARY entry),
 * KEEL_EINVAL (bad name), KEEL_EOVERLOAD (KEEL_STATE_MAX_DROPS listed) or
 * KEEL_ENOMEM; st is unchanged on error. */
int keel_node_state_put_drop(keel_node_state *st, const char *cap,
                             uint32_t shard, const char *name);
/* Adds node `name`, caught up under store id `store` (32 lowercase hex
 * digits, not all zero), to the add list of the PRIMARY entry of (cap,
 * shard); a name listed already gets that store. Returns 0, KEEL_ENOTFOUND
 * (no PRIMARY entry), KEEL_EINVAL (bad name or store id), KEEL_EOVERLOAD
 * (KEEL_STATE_MAX_ADDS listed) or KEEL_ENOMEM; st is unchanged on error. */
int keel_node_state_put_add(keel_node_state *st, const char *cap,
                            uint32_t shard, const char *name,
                            const char *store);
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
