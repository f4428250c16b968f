/* A placement unit's records in the store (unitrecs.h). */
#include "persistence/unitrecs.h"

#include <string.h>

#include "keel.h"

/* Whether the record's type belongs to capability cap: 1 yes, 0 no, or
 * KEEL_ECAPUNKNOWN when the table cannot say. */
int keel_unit_holds(const keel_typetab *tt, const uint8_t *key, size_t klen,
                    const uint8_t *cap, size_t clen)
{
    const uint8_t *type;
    const char *tcap;
    size_t tlen, tclen;

    if (keel_key_type(key, klen, &type, &tlen) != 0 ||
        keel_typetab_get(tt, type, tlen, &tcap, &tclen) != TT_KNOWN)
        return KEEL_ECAPUNKNOWN;
    return tclen == clen && memcmp(tcap, cap, clen) == 0;
}

/* Before a group is applied: its puts' types against the type table
 * (KEEL_ETYPECAP), and for a deletion of its unit, whether every record of
 * the shard can be placed (KEEL_ECAPUNKNOWN). 0 when the group may go on;
 * a raw LMDB code when reading failed. Nothing is changed. Puts of one
 * actor's type follow each other, so the type is looked up once per
 * run. */
int keel_unit_group_check(const keel_typetab *tt, MDB_txn *txn,
                          MDB_dbi state, const keel_batch *b,
                          const struct batch_group *g, keel_unit_seen *seen,
                          int *refuse, int *learn)
{
    const uint8_t *cap = b->buf + g->cap_off, *last = NULL;
    size_t lastlen = 0;

    *refuse = 0;
    *learn = 0;
    for (size_t off = g->ops_off; off < g->ops_end;) {
        const struct batch_op *op = batch_op_at(b, off);
        const uint8_t *type;
        const char *tcap;
        size_t tlen, tclen;

        off += batch_op_size(op);
        if (op->kind == BATCH_OP_DEL_UNIT ||
            op->kind == BATCH_OP_CHECK_UNIT) {
            /* A check deletes the unit when it finds another digest. */
            MDB_cursor *cur;
            MDB_val k = {2, (void *)batch_op_key(op)}, v;
            int rc;

            rc = mdb_cursor_open(txn, state, &cur);
            if (rc != 0)
                return rc;
            rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
            while (rc == 0 && k.mv_size >= 2 &&
                   memcmp(k.mv_data, batch_op_key(op), 2) == 0) {
                if (keel_unit_holds(tt, k.mv_data, k.mv_size, cap,
                                    g->cap_len) < 0) {
                    *refuse = KEEL_ECAPUNKNOWN;
                    break;
                }
                rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            }
            mdb_cursor_close(cur);
            if (*refuse != 0)
                return 0;
            if (rc != 0 && rc != MDB_NOTFOUND)
                return rc;
            continue;
        }
        if (op->kind != BATCH_OP_PUT)
            continue;
        if (keel_key_type(batch_op_key(op), op->klen, &type, &tlen) != 0) {
            *refuse = KEEL_ETYPECAP;
            return 0;
        }
        if (last != NULL && tlen == lastlen && memcmp(type, last, tlen) == 0)
            continue;
        last = type;
        lastlen = tlen;
        /* The pair this commit verified last (a batch's groups are mostly
         * one type): a known type keeps its capability, so it holds. */
        if (seen->type != NULL && tlen == seen->tlen &&
            g->cap_len == seen->clen && memcmp(type, seen->type, tlen) == 0 &&
            memcmp(cap, seen->cap, g->cap_len) == 0)
            continue;
        if (keel_typetab_get(tt, type, tlen, &tcap, &tclen) != TT_KNOWN) {
            *learn = 1; /* group_record_types has work */
            continue;
        }
        if (tclen != g->cap_len || memcmp(tcap, cap, tclen) != 0) {
            *refuse = KEEL_ETYPECAP;
            return 0;
        }
        seen->type = type; /* in the batch: valid for this commit */
        seen->tlen = tlen;
        seen->cap = cap;
        seen->clen = g->cap_len;
    }
    return 0;
}

/* Records the types of the group's puts that the table lacks (or lists as
 * unknown) with the group's capability; group_check passed. */
int keel_unit_learn_types(keel_typetab *tt, MDB_txn *txn, MDB_dbi types,
                          const keel_batch *b, const struct batch_group *g,
                          int *wrote)
{
    const char *cap = (const char *)b->buf + g->cap_off;
    const uint8_t *last = NULL;
    size_t lastlen = 0;

    for (size_t off = g->ops_off; off < g->ops_end;) {
        const struct batch_op *op = batch_op_at(b, off);
        const uint8_t *type;
        const char *tcap;
        size_t tlen, tclen;
        int rc;

        off += batch_op_size(op);
        if (op->kind != BATCH_OP_PUT ||
            keel_key_type(batch_op_key(op), op->klen, &type, &tlen) != 0)
            continue;
        if (last != NULL && tlen == lastlen && memcmp(type, last, tlen) == 0)
            continue;
        last = type;
        lastlen = tlen;
        if (keel_typetab_get(tt, type, tlen, &tcap, &tclen) == TT_KNOWN)
            continue;
        rc = keel_typetab_set(tt, txn, types, type, tlen, cap, g->cap_len);
        if (rc != 0)
            return rc;
        *wrote = 1;
    }
    return 0;
}

/* BATCH_OP_DEL_UNIT (and a BATCH_OP_CHECK_UNIT that found another
 * digest): deletes the shard's records of the group's unit written below
 * `below` (0: all). group_check found every type known. */
int keel_unit_delete(const keel_typetab *tt, MDB_txn *txn, MDB_dbi state,
                     MDB_cursor **curp, const keel_batch *b,
                     const struct batch_group *g, const struct batch_op *op,
                     uint64_t below, int *wrote)
{
    const uint8_t *cap = b->buf + g->cap_off;
    uint8_t kbuf[KEEL_KEY_MAX];
    MDB_val k = {2, (void *)batch_op_key(op)}, v;
    int rc;

    if (*curp == NULL) {
        rc = mdb_cursor_open(txn, state, curp);
        if (rc != 0) {
            *curp = NULL;
            return rc;
        }
    }
    rc = mdb_cursor_get(*curp, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size >= 2 &&
           memcmp(k.mv_data, batch_op_key(op), 2) == 0) {
        keel_record rec;
        int in = keel_unit_holds(tt, k.mv_data, k.mv_size, cap, g->cap_len);

        if (in < 0 || keel_record_parse(v.mv_data, v.mv_size, &rec) != 0)
            return MDB_CORRUPTED; /* group_check saw every record */
        if (in && (below == 0 || rec.epoch < below) &&
            k.mv_size <= sizeof kbuf) {
            /* Seek again past the deleted key: independent of where
             * mdb_cursor_del leaves the cursor when pages merge. */
            size_t klen = k.mv_size;

            memcpy(kbuf, k.mv_data, klen);
            rc = mdb_cursor_del(*curp, 0);
            if (rc != 0)
                return rc;
            *wrote = 1;
            k.mv_size = klen;
            k.mv_data = kbuf;
            rc = mdb_cursor_get(*curp, &k, &v, MDB_SET_RANGE);
            continue;
        }
        rc = mdb_cursor_get(*curp, &k, &v, MDB_NEXT);
    }
    return rc == MDB_NOTFOUND ? 0 : rc;
}
