/* A placement unit's records in the store: which stored records belong to
 * a unit (capability, shard), decided by the store's type table
 * (typetab.h), never by the types a node has loaded; checking a write
 * group's puts against that table and teaching it new types; and
 * deleting a unit's records inside a write transaction (BATCH_OP_DEL_UNIT),
 * so that what is deleted is what the transaction sees, streams written
 * earlier in the same batch included. Internal to persistence/, called by
 * the commit in store.c with its open transaction. */
#ifndef KEEL_PERSISTENCE_UNITRECS_H
#define KEEL_PERSISTENCE_UNITRECS_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "persistence/batch_internal.h"
#include "persistence/typetab.h"

/* The (type, capability) pair one commit verified last; its pointers go
 * into the commit's batch. Reset (type NULL) at the start of a commit. */
typedef struct keel_unit_seen {
    const uint8_t *type, *cap;
    size_t tlen, clen;
} keel_unit_seen;

/* Whether the state record under key belongs to capability cap: 1 yes,
 * 0 no, or KEEL_ECAPUNKNOWN when the table cannot say. */
int keel_unit_holds(const keel_typetab *tt, const uint8_t *key, size_t klen,
                    const uint8_t *cap, size_t clen);

/* Before a group is applied: its puts' types against the type table
 * (*refuse = KEEL_ETYPECAP), and for a deletion of its unit, whether every
 * record of the shard can be placed (*refuse = KEEL_ECAPUNKNOWN); *learn
 * says whether keel_unit_learn_types has types to record. Returns 0, or a
 * raw LMDB code when reading failed. Changes nothing in the store. */
int keel_unit_group_check(const keel_typetab *tt, MDB_txn *txn,
                          MDB_dbi state, const keel_batch *b,
                          const struct batch_group *g, keel_unit_seen *seen,
                          int *refuse, int *learn);

/* Records, in txn, the types of the group's puts that the table lacks (or
 * lists as unknown) with the group's capability; the check passed. Sets
 * *wrote when it wrote. 0 or an LMDB code. */
int keel_unit_learn_types(keel_typetab *tt, MDB_txn *txn, MDB_dbi types,
                          const keel_batch *b, const struct batch_group *g,
                          int *wrote);

/* BATCH_OP_DEL_UNIT (op: its key is the shard): deletes, in txn, the
 * shard's records of the group's unit written below `below` (0: all),
 * through *curp (opened on state if NULL; the caller closes it). Sets
 * *wrote when it deleted. 0 or an LMDB code (MDB_CORRUPTED for a record
 * the check did not see). */
int keel_unit_delete(const keel_typetab *tt, MDB_txn *txn, MDB_dbi state,
                     MDB_cursor **curp, const keel_batch *b,
                     const struct batch_group *g, const struct batch_op *op,
                     uint64_t below, int *wrote);

#endif
