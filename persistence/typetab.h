/* The store's type table: actor type -> the capability its records belong
 * to (store.h, database `types`). Internal to persistence/.
 *
 * Which placement unit a stored record belongs to must not depend on the
 * actor types the node happens to have loaded: a node missing a plugin
 * would otherwise stream or delete a capability's records as if they
 * were the default group's. So the store records, in the same
 * transaction as the first record of a type, the capability of the group
 * that wrote it, and refuses later writes of that type under another
 * capability. Records from before the table existed (format 2 and older)
 * have their types listed as "unknown" until a node that knows the type
 * says which capability it has (keel_store_type_learn) or writes one.
 *
 * The whole table is kept in memory (a node has at most a few hundred
 * types), so the check on the write path is a lookup, never a read. The
 * cache is guarded by the store's commit lock; entries changed by the
 * open write transaction are undone if it is abandoned. */
#ifndef KEEL_PERSISTENCE_TYPETAB_H
#define KEEL_PERSISTENCE_TYPETAB_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

enum { TT_ABSENT = 0, TT_UNKNOWN = 1, TT_KNOWN = 2 };

/* The value stored for a type whose capability is not known: no
 * capability name can be this byte (names are [A-Za-z0-9._-]). */
#define TT_UNKNOWN_MARK 0xffu

struct tt_entry {
    uint64_t hash;
    uint8_t used;
    uint8_t state;
    uint8_t tlen;
    uint8_t clen;
    uint8_t type[64];
    char cap[255];
};

struct tt_undo {
    struct tt_entry old; /* used 0: the type was absent */
    uint8_t type[64];
    uint8_t tlen;
};

typedef struct keel_typetab {
    struct tt_entry *slots;
    size_t mask;
    size_t count;
    struct tt_undo *undo; /* changes of the open write transaction */
    size_t nundo, undo_cap;
} keel_typetab;

/* Reads the table from dbi (in txn) into t. Raw LMDB codes, or
 * MDB_CORRUPTED for a malformed entry. */
int keel_typetab_load(keel_typetab *t, MDB_txn *txn, MDB_dbi dbi);
void keel_typetab_free(keel_typetab *t);
/* TT_ABSENT, TT_UNKNOWN or TT_KNOWN (then *cap, *clen: not NUL-ended,
 * valid until the table changes). */
int keel_typetab_get(const keel_typetab *t, const uint8_t *type, size_t tlen,
                     const char **cap, size_t *clen);
/* Records type -> cap (cap NULL: unknown) in txn and in the cache. Raw
 * LMDB codes, ENOMEM. */
int keel_typetab_set(keel_typetab *t, MDB_txn *txn, MDB_dbi dbi,
                     const uint8_t *type, size_t tlen, const char *cap,
                     size_t clen);
/* After the write transaction: keeps its changes (ok) or undoes them. */
void keel_typetab_settle(keel_typetab *t, int ok);

#endif
