/* The inside of a keel_batch, shared by batch.c (which builds it), store.c
 * (which applies it) and writer.c (which queues it). Not for other
 * modules: they use the functions in store.h. */
#ifndef KEEL_PERSISTENCE_BATCH_INTERNAL_H
#define KEEL_PERSISTENCE_BATCH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "persistence/store.h"

enum batch_op_kind {
    BATCH_OP_PUT = 1,
    BATCH_OP_DEL = 2,
    BATCH_OP_DEL_PREFIX = 3,
    /* key: the group's shard be16; version: the epoch below which the
     * unit's records go (0: all). See keel_batch_del_unit. */
    BATCH_OP_DEL_UNIT = 4,
    /* key: a recipient's name, version: the shard_epoch of the handover;
     * written to the meta table under the group's unit */
    BATCH_OP_HANDOFF = 5,
    /* key: the group's shard be16; version: the content digest the unit
     * is expected to have (keel_batch_check_unit). The group's only op.
     * Never logged as such: the log gets what it did (nothing, or a
     * BATCH_OP_DEL_UNIT of every record). */
    BATCH_OP_CHECK_UNIT = 6
};

/* One op in the arena: this header, then klen key bytes, then dlen data
 * bytes (puts only), then padding to BATCH_ALIGN so the next header is
 * aligned. */
struct batch_op {
    uint32_t kind;
    uint32_t klen;
    uint64_t version;
    uint64_t dlen;
};

#define BATCH_ALIGN 8u

/* A group is a run of consecutive ops in the arena. Offsets, not pointers:
 * the arena moves when it grows. */
struct batch_group {
    size_t cap_off; /* the capability bytes, not NUL-terminated */
    size_t cap_len;
    size_t ops_off; /* first op */
    size_t ops_end; /* one past the last op */
    size_t nops;
    uint64_t epoch;
    void *tag;
    uint16_t shard;
    int status; /* set by keel_store_commit */
    /* Set by keel_store_commit for a group whose BATCH_OP_CHECK_UNIT
     * found another digest (and deleted the unit's records). */
    int differs;
    /* Set by the writer before the commit: nonzero refuses the group
     * with that status without looking at its fence (it depends on a
     * failed group of an earlier batch). */
    int pre_status;
};

struct keel_batch {
    uint8_t *buf; /* the arena: group capabilities and ops */
    size_t len;
    size_t cap;
    struct batch_group *groups;
    size_t ngroups;
    size_t gcap;
    size_t nops;
    /* Link in the writer's queue; the writer owns it and the fields
     * below while the batch is submitted. */
    keel_batch *next;
    uint64_t wgen;  /* failures acknowledged when it was submitted */
    int mergeable;  /* later submits may append to it while it waits */
    int sync;       /* keel_batch_require_sync */
    int wrc;        /* its commit's status */
    uint64_t wtxn;  /* its commit, for keel_store_durable (0: none) */
};

static inline size_t batch_op_size(const struct batch_op *op)
{
    size_t n = sizeof *op + op->klen + op->dlen;

    return (n + BATCH_ALIGN - 1) & ~(size_t)(BATCH_ALIGN - 1);
}

static inline const struct batch_op *batch_op_at(const keel_batch *b,
                                                 size_t off)
{
    return (const struct batch_op *)(const void *)(b->buf + off);
}

static inline const uint8_t *batch_op_key(const struct batch_op *op)
{
    return (const uint8_t *)(op + 1);
}

static inline const uint8_t *batch_op_data(const struct batch_op *op)
{
    return batch_op_key(op) + op->klen;
}

#endif
