/* Catch-up: bringing a backup that is out of a unit's in-sync set back
 * into it (docs/cluster.md, "Catch-up"). The primary's side; the backup
 * takes what it is sent through the REPL frames like any piece.
 *
 * A backup the map lists for a unit out of sync, live under the store the
 * map records for it (keel_cluster_catchup_backups), is sent a snapshot:
 * one piece whose first op deletes everything it holds of the unit,
 * followed by a put of every record the primary's store holds of it,
 * numbered with the unit's last seq k. Every piece numbered after k goes
 * to it too, on the same ordered link. The snapshot is read after every
 * piece up to k was committed here, so it holds all of them, and perhaps
 * some writes of pieces after k, which those pieces write again with the
 * same content: once the backup applied the pieces that follow, it holds
 * exactly what the primary holds.
 *
 * Once the snapshot is durable there, the primary counts the backup:
 * every reply of the unit not released yet whose writes it may lack,
 * every later reply, and every confirm round of the read rule waits for
 * it as for an in-sync backup. The pieces numbered before that had their
 * replies released without it, so the controller is asked to add the
 * backup to the in-sync set (keel_cluster_request_add) only once it has
 * acknowledged them all. So when the map adds it, it holds every
 * acknowledged write, and a promotion of it is safe. A counted backup
 * that stops answering before the request is given up at once; after
 * it, has its request withdrawn, and is counted until the coordinator
 * says the withdrawal settled (no map can add it any more:
 * keel_cluster_add_pending), then what waited on it goes. One that the
 * map adds is an in-sync backup like any other (its lag leads to a drop
 * request).
 *
 * Snapshots are read on the loop thread, at most CU_MAX_SNAP unanswered
 * at a time. A unit larger than CU_PART_BYTES goes in parts, each a
 * piece of its own with a number of its own, read in a read of its own
 * once the part before it is durable on the backup (one part in flight
 * per backup): the first deletes the unit and puts its first records, the
 * others put the records after the key where the one before stopped. The
 * in-sync backups (and any other backup catching up) get an empty piece
 * under each part's number, so the unit's numbering stays one sequence.
 * The parts together hold everything up to the first part's seq k: a
 * part read later may also hold writes of pieces after k, which reach
 * the backup after that part (they are numbered after it), or before it
 * (and the part, read after they were committed here, holds their
 * result); either way the backup ends with what the primary holds. The
 * snapshot counts as durable there once its last part is.
 *
 * A backup whose hello says it takes them is first sent a check instead:
 * a snapshot piece that carries the unit's content digest, read in the
 * same way, and no records. The backup compares it with its own copy, in
 * order with what it took before. The same (a backup that restarted on
 * its data, or was made suspect by a primary that lost nothing), the
 * snapshot is durable there without a record sent. Another, the backup
 * deleted its copy in that transaction and answers EDIFFERS; the records
 * then go as parts that only put, from the unit's first key, exactly as
 * the parts after a first one do: the check took the first part's place
 * and number. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "runtime/repl_int.h"

/* Every so often, and soon after a map is applied, the units this node is
 * primary of are looked over for backups to catch up. */
#define CU_SCAN_S 1.0
#define CU_SCAN_SOON_S 0.05
/* Snapshots sent and not acknowledged yet, at most. */
#define CU_MAX_SNAP 16
/* Snapshot parts sent to one backup and not durable there yet, at most.
 * A backup applies what it is sent in order, so the writes of the units
 * it is in sync for queue behind the parts: more in flight only makes
 * those lag, and past --repl-lag-ms it is dropped from those units and
 * sent snapshots of them in turn. */
#define CU_LINK_PARTS 2
/* A snapshot not durable on the backup this long after it left is given
 * up (the backup is slow or gone); the unit is tried again later. */
#define CU_SNAP_TIMEOUT_S 10.0
/* A snapshot part holds records up to about this many bytes. */
#define CU_PART_BYTES (4u << 20)
/* At most this many bytes of ops in a part: room for its unit head and
 * the frame's in a REPL frame. */
#define CU_PART_ROOM (REPL_SEND_MAX - 4096)
/* snap_record: the part is full. */
#define SNAP_FULL 1
/* A unit whose catch-up failed is not tried again before this. */
#define CU_RETRY_S 1.0
#define CU_RETRY_LONG_S 30.0
/* With a catch-up rate, the budget holds at most this many seconds of it
 * (a node idle for a while sends no more than that at once). */
#define CU_BURST_S 0.25
/* A catch-up waits this long at most for the hello of a new connection
 * to the backup (to learn whether it takes checks); then it sends the
 * records. */
#define CU_HELLO_WAIT_S 1.0
/* A scan that has spent this long on the loop thread starting catch-ups
 * (each reads a first part, or a whole unit for its digest) lets the loop
 * serve what waits and goes on at the next tick. */
#define CU_SCAN_BUDGET_S 0.01

static keel_cluster *cl(keel_repl *r)
{
    return r->rt->c;
}

static repl_catchup *cu_find(repl_unit *u, uint64_t epoch,
                             const repl_link *l)
{
    unsigned i;

    for (i = 0; i < REPL_MAX_BACKUPS; i++)
        if (u->cu[i].l == l && u->cu[i].epoch == epoch)
            return &u->cu[i];
    return NULL;
}

static int counted(const repl_catchup *c)
{
    return c->phase == CU_ASKED || c->phase == CU_WITHDRAWN;
}

/* ------------------------------------------------------ catch-up rate */

/* With a rate (keel_node_options.catchup_mib_s), snapshots are sent from
 * a budget of bytes that fills at the rate, up to CU_BURST_S of it. A
 * part goes only while the budget is above zero, and takes its whole
 * size from it (it may take it below zero: what comes next waits until
 * the budget is back above). Parts are at most CU_PART_BYTES, so at the
 * lowest rate (1 MiB/s) one waits at most about 4 s after the one before
 * it; over time the bytes sent stay within the rate. */
void repl_catchup_rate(keel_repl *r, uint32_t mib_s)
{
    r->cu_rate = (double)mib_s * (1u << 20);
    r->cu_budget = r->cu_rate * CU_BURST_S;
    r->cu_budget_at = 0;
}

/* 0 when a part may go now; else the seconds until one may (the caller
 * then waits that long, the tick trying again). */
static double cu_wait(keel_repl *r)
{
    double now;

    if (r->cu_rate <= 0)
        return 0;
    now = ev_now(r->n->loop);
    if (r->cu_budget_at > 0 && now > r->cu_budget_at)
        r->cu_budget += (now - r->cu_budget_at) * r->cu_rate;
    r->cu_budget_at = now;
    if (r->cu_budget > r->cu_rate * CU_BURST_S)
        r->cu_budget = r->cu_rate * CU_BURST_S;
    if (r->cu_budget > 0)
        return 0;
    STAT_ADD(r->n, repl_catchup_waits, 1);
    return -r->cu_budget / r->cu_rate + 0.001;
}

static void cu_spend(keel_repl *r, size_t bytes)
{
    if (r->cu_rate > 0)
        r->cu_budget -= (double)bytes;
}

/* ------------------------------------------------------------ the list */

static void cu_list(keel_repl *r, repl_unit *u)
{
    if (u->culisted)
        return;
    u->cuprev = NULL;
    u->cunext = r->cuhead;
    if (r->cuhead != NULL)
        r->cuhead->cuprev = u;
    r->cuhead = u;
    u->culisted = 1;
    repl_arm(r, 0);
}

static void cu_unlist(keel_repl *r, repl_unit *u)
{
    if (!u->culisted)
        return;
    if (u->cuprev != NULL)
        u->cuprev->cunext = u->cunext;
    else
        r->cuhead = u->cunext;
    if (u->cunext != NULL)
        u->cunext->cuprev = u->cuprev;
    u->cunext = u->cuprev = NULL;
    u->culisted = 0;
}

/* c has a part on its way to the backup (counted once). */
static void part_out(repl_catchup *c)
{
    if (c->part_out)
        return;
    c->part_out = 1;
    c->l->snap_parts++;
}

/* c's part is durable there, or given up: the backup may be sent more,
 * of this unit or of others the scan passed over for it. */
static void part_in(keel_repl *r, repl_catchup *c)
{
    if (!c->part_out)
        return;
    c->part_out = 0;
    c->l->snap_parts--;
    r->rescan = 1;
    repl_arm(r, 0);
}

/* Ends a catch-up. forget: what the backup was sent of the unit is not
 * waited for any more (doubt: what waited on it fails in doubt). */
static void cu_end(keel_repl *r, repl_unit *u, repl_catchup *c, int forget,
                   int doubt, double retry)
{
    repl_link *l = c->l;
    uint64_t epoch = c->epoch;

    if (forget && ((c->phase == CU_ASKED && c->published) ||
                   c->phase == CU_WITHDRAWN))
        /* Its add was asked and is not pending any more: settled, or
         * dropped with this node's session while the state that asks it
         * is still published, where a controller may honour it yet. */
        repl_forgot_note(r, u, l, epoch);
    if (c->phase == CU_SNAP && r->nsnap > 0)
        r->nsnap--;
    part_in(r, c);
    free(c->resume);
    memset(c, 0, sizeof *c);
    u->ncu--;
    if (retry > 0) {
        ev_tstamp at = ev_now(r->n->loop) + retry;
        if (at > u->cu_retry_at)
            u->cu_retry_at = at;
    }
    if (forget) {
        repl_forget_link(r, u, epoch, l, doubt);
        repl_unit_progress(r, u);
    }
}

/* ------------------------------------------------------------ settles */

void repl_catchup_decide(keel_repl *r, repl_unit *u, uint64_t epoch)
{
    unsigned i, k;

    (void)r;
    for (i = 0; i < REPL_MAX_BACKUPS; i++) {
        repl_catchup *c = &u->cu[i];
        int dup = 0;
        if (c->l == NULL || c->epoch != epoch)
            continue;
        for (k = 0; k < u->snb; k++)
            if (u->sl[k] == c->l) {
                dup = 1; /* in sync meanwhile: already there */
                break;
            }
        if (dup || u->snb == REPL_MAX_BACKUPS)
            continue;
        u->sw[u->snb] = (uint8_t)counted(c);
        u->sl[u->snb++] = c->l;
    }
}

size_t repl_catchup_counted(keel_repl *r, repl_unit *u, uint64_t epoch,
                            size_t n)
{
    unsigned i;
    size_t k;

    for (i = 0; i < REPL_MAX_BACKUPS && n < REPL_MAX_BACKUPS; i++) {
        const repl_catchup *c = &u->cu[i];
        int dup = 0;
        if (c->l == NULL || c->epoch != epoch || !counted(c))
            continue;
        for (k = 0; k < n; k++)
            if (strcmp(r->refs[k].name, c->l->name) == 0)
                dup = 1;
        if (dup)
            continue;
        snprintf(r->refs[n].name, sizeof r->refs[n].name, "%s", c->l->name);
        snprintf(r->refs[n].addr, sizeof r->refs[n].addr, "%s", c->l->addr);
        n++;
    }
    return n;
}

int repl_catchup_has(const repl_unit *u, uint64_t epoch, const repl_link *l)
{
    unsigned i;

    for (i = 0; i < REPL_MAX_BACKUPS; i++)
        if (u->cu[i].l == l && u->cu[i].epoch == epoch)
            return 1;
    return 0;
}

/* ------------------------------------------------------- asking to add */

/* From now on replies of u wait for c's backup: the writes it may lack
 * (after what it acknowledged), and the confirm rounds of reads not
 * answered yet, which it is sent. */
static void cu_count(keel_repl *r, repl_unit *u, repl_catchup *c)
{
    repl_wait *w;
    int sent = 0;

    for (w = u->head; w != NULL; w = w->next) {
        unsigned i;
        int there = 0;
        if (w->epoch != c->epoch || w->doubt)
            continue;
        if (!w->confirm && w->seq <= c->acked)
            continue;
        for (i = 0; i < w->nb; i++)
            if (w->b[i].l == c->l)
                there = 1;
        if (there || w->nb == REPL_MAX_BACKUPS)
            continue;
        if (w->confirm && w != u->conf) {
            /* Its round went to the others already: this one gets its
             * own piece of the round. */
            repl_frame *f;
            r->plen = 0;
            r->pops = 0;
            if (repl_frame_add_piece(r, c->l, u, w->epoch, 0) != 0) {
                w->doubt = 1;
                continue;
            }
            f = c->l->build;
            f->units[f->nunits - 1].cid = w->cid;
            sent = 1;
        }
        w->b[w->nb].l = c->l;
        w->b[w->nb].done = 0;
        w->nb++;
    }
    if (sent)
        repl_frame_finish(r, c->l);
    repl_unit_progress(r, u);
}

/* Counts c's backup from now on (CU_TAIL), and asks the controller to add
 * it once it has acknowledged every piece numbered before that: the
 * replies of those pieces did not wait for it, and some may have left
 * already. Asked earlier, the map could put it in sync while a write
 * answered to a client is not durable there, and a failover to it would
 * lose that write. */
static void cu_ask(keel_repl *r, repl_unit *u, repl_catchup *c)
{
    int rc;

    if (c->phase == CU_TAIL) {
        c->need = u->epoch == c->epoch ? u->seq : UINT64_MAX;
        c->published = 0;
        c->phase = CU_ASKED;
        c->since = ev_now(r->n->loop);
        cu_count(r, u, c);
    }
    if (c->published || c->acked < c->need)
        return; /* repl_catchup_acked arms the tick once it is */
    rc = keel_cluster_request_add(cl(r), u->cap, u->shard, c->epoch,
                                  c->l->name, c->store);
    if (rc == KEEL_ENOTFOUND) {
        /* The map moved on: no longer this node's, or not out of sync. */
        cu_end(r, u, c, 1, 0, CU_RETRY_S);
        return;
    }
    if (rc != 0) {
        keel_warn("unit (%s, %u): cannot ask to add backup %s to the "
                  "in-sync set: %s",
                  keel_cap_name(u->cap), u->shard, c->l->name,
                  keel_strerror(rc));
        return; /* the next tick asks again */
    }
    keel_info("unit (%s, %u): backup %s caught up at seq %llu; asking the "
              "controller to add it to the in-sync set",
              keel_cap_name(u->cap), u->shard, c->l->name,
              (unsigned long long)c->acked);
    c->published = 1;
    repl_forgot_clear(r, u, c->l, c->epoch);
}

void repl_catchup_differs(keel_repl *r, repl_unit *u, uint64_t epoch,
                          repl_link *l, uint64_t seq)
{
    repl_catchup *c = cu_find(u, epoch, l);

    if (c == NULL || !c->checking || c->phase != CU_SNAP ||
        seq != c->snap_seq)
        return;
    /* The backup deleted its copy with the check: the records follow,
     * from the unit's first key, as the parts after a first one. */
    if (c->resume == NULL && (c->resume = malloc(KEEL_KEY_MAX)) == NULL) {
        keel_error("unit (%s, %u): out of memory to send backup %s the "
                   "records of the unit; trying again in %.0f s",
                   keel_cap_name(u->cap), u->shard, l->name, CU_RETRY_LONG_S);
        cu_end(r, u, c, 1, 0, CU_RETRY_LONG_S);
        return;
    }
    c->rlen = 0;
    c->checking = 0;
    c->first_part = 1;
    c->snap_seq = UINT64_MAX;
}

void repl_catchup_acked(keel_repl *r, repl_unit *u, uint64_t epoch,
                        repl_link *l, uint64_t seq)
{
    repl_catchup *c = cu_find(u, epoch, l);

    if (c == NULL)
        return;
    if (seq > c->acked)
        c->acked = seq;
    if (c->acked >= c->part_seq)
        part_in(r, c);
    if (c->phase == CU_SNAP && c->acked >= c->snap_seq) {
        if (c->checking) {
            STAT_ADD(r->n, repl_catchup_same, 1);
            keel_info("unit (%s, %u): backup %s holds the unit as this "
                      "node does (its digest matched); no records sent",
                      keel_cap_name(u->cap), u->shard, l->name);
            c->checking = 0;
        }
        /* Asked from the tick: an answer's callback never sends. */
        r->nsnap--;
        c->phase = CU_TAIL;
        c->since = ev_now(r->n->loop);
        repl_arm(r, 0);
    } else if (c->phase == CU_SNAP && c->resume != NULL &&
               c->acked >= c->part_seq) {
        repl_arm(r, 0); /* the next part, from the tick */
    } else if (c->phase == CU_ASKED && !c->published &&
               c->acked >= c->need) {
        repl_arm(r, 0); /* the add is asked from the tick */
    }
}

static void cu_withdraw(keel_repl *r, repl_unit *u, repl_catchup *c,
                        const char *why)
{
    int rc = keel_cluster_withdraw_add(cl(r), u->cap, u->shard, c->epoch,
                                       c->l->name);

    if (rc != 0 && rc != KEEL_ENOTFOUND) {
        keel_warn("unit (%s, %u): cannot withdraw the add of backup %s: %s",
                  keel_cap_name(u->cap), u->shard, c->l->name,
                  keel_strerror(rc));
        return; /* the next tick tries again */
    }
    keel_warn("unit (%s, %u): backup %s %s; withdrawing its add to the "
              "in-sync set",
              keel_cap_name(u->cap), u->shard, c->l->name, why);
    c->phase = CU_WITHDRAWN;
    c->since = ev_now(r->n->loop);
}

int repl_catchup_lag(keel_repl *r, repl_unit *u, uint64_t epoch,
                     repl_link *l)
{
    repl_catchup *c = cu_find(u, epoch, l);

    if (c == NULL)
        return -1;
    switch (c->phase) {
    case CU_ASKED:
        if (!c->published) {
            /* Nothing asked: nothing can add it, it goes at once (the
             * caller stops waiting for it). */
            keel_warn("unit (%s, %u): backup %s stopped acknowledging "
                      "before its add was asked; trying again later",
                      keel_cap_name(u->cap), u->shard, l->name);
            cu_end(r, u, c, 0, 0, CU_RETRY_S);
            return LAG_OUT;
        }
        cu_withdraw(r, u, c, "stopped acknowledging");
        return LAG_WAIT;
    case CU_WITHDRAWN:
        return LAG_WAIT;
    default:
        if (ev_now(r->n->loop) - c->since < CU_SNAP_TIMEOUT_S)
            return LAG_WAIT;
        keel_warn("unit (%s, %u): backup %s did not store its snapshot "
                  "within %.0f s; trying again later",
                  keel_cap_name(u->cap), u->shard, l->name, CU_SNAP_TIMEOUT_S);
        cu_end(r, u, c, 0, 0, CU_RETRY_S);
        return LAG_OUT;
    }
}

/* ---------------------------------------------------------- snapshots */

/* Adds a record to the snapshot part in r->piece; SNAP_FULL (with the
 * record's key in r->snap_key) once the part holds CU_PART_BYTES. */
static int snap_record(const uint8_t *key, size_t klen,
                       const keel_record *rec, void *data)
{
    keel_repl *r = data;
    size_t need = keel_repl_op_size(KEEL_REPL_PUT, klen, rec->len);

    if (need > CU_PART_ROOM - r->plen) {
        /* A record that does not fit beside those of the part starts the
         * next one; one that fits in no part cannot be sent. */
        return r->snap_klen > 0 ? SNAP_FULL : KEEL_ETOOBIG;
    }
    if (repl_reserve(&r->piece, &r->pcap, r->plen, need) != 0)
        return KEEL_ENOMEM;
    r->plen += keel_repl_op_encode(r->piece + r->plen, KEEL_REPL_PUT, key,
                                   klen, rec->version, rec->data, rec->len);
    r->pops++;
    memcpy(r->snap_key, key, klen);
    r->snap_klen = klen;
    return r->plen < CU_PART_BYTES ? 0 : SNAP_FULL;
}

/* Reads the next snapshot part of u into r->piece (after what it holds
 * already): 0 when it is the last, SNAP_FULL when more follow (the key
 * to go on after, the last one the part holds, in r->snap_key), or an
 * error. */
static int snap_read(keel_repl *r, repl_unit *u, const uint8_t *after,
                     size_t alen)
{
    keel_store_read *rd;
    int rc = keel_store_read_begin(r->n->store, &rd);

    if (rc != 0)
        return rc;
    r->snap_klen = 0;
    rc = keel_store_unit_scan_from(rd, u->cap, (uint16_t)u->shard, after,
                                   alen, snap_record, r);
    keel_store_read_end(rd);
    return rc;
}

/* Gives the next number of u at epoch to a snapshot part for c's backup:
 * every other backup that takes u's pieces (in sync, or catching up) gets
 * an empty piece under it, so that what follows is in sequence there. The
 * part itself (r->piece) is left as it is. */
static void part_number(keel_repl *r, repl_unit *u, uint64_t epoch,
                        const repl_link *to)
{
    size_t plen = r->plen, nin, i;
    uint32_t pops = r->pops;
    repl_link *sent[2 * REPL_MAX_BACKUPS];
    size_t nsent = 0, k;

    u->seq++;
    r->plen = 0;
    r->pops = 0;
    nin = keel_cluster_insync_backups(cl(r), u->cap, u->shard, epoch, r->refs,
                                      REPL_MAX_BACKUPS);
    for (i = 0; i < nin; i++) {
        repl_link *l = repl_link_get(r, &r->refs[i]);
        if (l != NULL && l != to)
            sent[nsent++] = l;
    }
    for (i = 0; i < REPL_MAX_BACKUPS; i++) {
        repl_link *l = u->cu[i].l;
        int dup = 0;
        if (l == NULL || l == to || u->cu[i].epoch != epoch)
            continue;
        for (k = 0; k < nsent; k++)
            dup |= sent[k] == l;
        if (!dup)
            sent[nsent++] = l;
    }
    for (k = 0; k < nsent; k++)
        if (repl_frame_add_piece(r, sent[k], u, epoch, u->seq) == 0)
            repl_frame_finish(r, sent[k]);
    r->plen = plen;
    r->pops = pops;
}

/* Keeps where the next part of c's snapshot starts (rc SNAP_FULL), or
 * notes that the part just made is the last. 0, or KEEL_ENOMEM. */
static int part_resume(keel_repl *r, repl_catchup *c, int rc, uint64_t seq)
{
    c->part_seq = seq;
    if (rc != SNAP_FULL) {
        free(c->resume);
        c->resume = NULL;
        c->rlen = 0;
        c->snap_seq = seq;
        return 0;
    }
    if (c->resume == NULL && (c->resume = malloc(KEEL_KEY_MAX)) == NULL)
        return KEEL_ENOMEM;
    memcpy(c->resume, r->snap_key, r->snap_klen);
    c->rlen = r->snap_klen;
    c->snap_seq = UINT64_MAX;
    return 0;
}

/* Sends c's backup the next part of its snapshot of u, once the one
 * before is durable there. */
static void cu_part(keel_repl *r, repl_unit *u, repl_catchup *c)
{
    double wait;
    int rc;

    if (u->epoch != c->epoch) {
        cu_end(r, u, c, 1, 0, CU_RETRY_S); /* numbered at another epoch */
        return;
    }
    if (c->l->snap_parts >= CU_LINK_PARTS)
        return; /* sent once one of those is durable there */
    if ((wait = cu_wait(r)) > 0) {
        repl_arm(r, wait); /* the tick sends it (cu_check) */
        return;
    }
    r->plen = 0;
    r->pops = 0;
    rc = snap_read(r, u, c->resume, c->rlen);
    if (rc == 0 || rc == SNAP_FULL) {
        part_number(r, u, c->epoch, c->l);
        if (repl_frame_add_piece(r, c->l, u, c->epoch, u->seq) != 0)
            rc = KEEL_ENOMEM;
        else
            rc = part_resume(r, c, rc, u->seq);
    }
    if (rc != 0) {
        keel_error("unit (%s, %u): cannot send backup %s the next part of "
                   "its snapshot: %s; trying again in %.0f s",
                   keel_cap_name(u->cap), u->shard, c->l->name,
                   keel_strerror(rc),
                   CU_RETRY_LONG_S);
        r->plen = 0;
        r->pops = 0;
        if (c->l->build != NULL)
            repl_frame_finish(r, c->l);
        cu_end(r, u, c, 1, 0, CU_RETRY_LONG_S);
        return;
    }
    STAT_ADD(r->n, repl_catchup_bytes, r->plen);
    cu_spend(r, r->plen);
    if (c->first_part)
        keel_info("unit (%s, %u): backup %s holds another copy of the "
                  "unit; sending it a snapshot (%s%u records, %zu bytes) at "
                  "epoch %llu seq %llu",
                  keel_cap_name(u->cap), u->shard, c->l->name,
                  c->resume != NULL ? "in parts, the first " : "", r->pops,
                  r->plen, (unsigned long long)c->epoch,
                  (unsigned long long)u->seq);
    else
        keel_debug("unit (%s, %u): snapshot part for backup %s at seq %llu "
                   "(%u records, %zu bytes)%s",
                   keel_cap_name(u->cap), u->shard, c->l->name,
                   (unsigned long long)u->seq, r->pops, r->plen,
                   c->resume != NULL ? ", more follow" : "");
    c->first_part = 0;
    r->plen = 0;
    r->pops = 0;
    repl_frame_finish(r, c->l);
    c->since = ev_now(r->n->loop);
    part_out(c);
}

/* Puts into r->piece a check of u: its content digest as this node's
 * store holds it now. */
static int check_read(keel_repl *r, repl_unit *u)
{
    size_t need = keel_repl_op_size(KEEL_REPL_CHECK_UNIT, 0, 0);
    keel_store_read *rd;
    uint64_t digest = 0;
    int rc = keel_store_read_begin(r->n->store, &rd);

    if (rc != 0)
        return rc;
    rc = keel_store_unit_digest(rd, u->cap, (uint16_t)u->shard, &digest,
                                NULL);
    keel_store_read_end(rd);
    if (rc == 0)
        rc = repl_reserve(&r->piece, &r->pcap, 0, need);
    if (rc != 0)
        return rc;
    r->plen = keel_repl_op_encode(r->piece, KEEL_REPL_CHECK_UNIT, NULL, 0,
                                  digest, NULL, 0);
    r->pops = 1;
    return 0;
}

/* Sends the backup `ref` (store `store`) a snapshot of u at epoch; with
 * check, a check of its copy in the snapshot's place. */
static void cu_begin(keel_repl *r, repl_unit *u, uint64_t epoch,
                     const keel_replica_ref *ref, const char *store,
                     int check)
{
    repl_catchup *c = NULL;
    repl_link *l;
    size_t need, i, slen;
    int rc, more = 0;

    for (i = 0; i < REPL_MAX_BACKUPS; i++)
        if (u->cu[i].l == NULL) {
            c = &u->cu[i];
            break;
        }
    if (c == NULL || (l = repl_link_get(r, ref)) == NULL)
        return;
    if (u->epoch > epoch)
        return;
    if (u->epoch < epoch) {
        /* No piece numbered at this epoch yet. */
        u->epoch = epoch;
        u->seq = r->lossy ? 1 : 0;
    }
    if (u->seq == 0) {
        /* The snapshot needs a number: an empty piece takes 1, sent to
         * the in-sync backups so that they take what follows. */
        r->plen = 0;
        r->pops = 0;
        part_number(r, u, epoch, l);
    }
    r->plen = 0;
    r->pops = 0;
    need = keel_repl_op_size(KEEL_REPL_DEL_UNIT, 0, 0);
    rc = check ? check_read(r, u) : repl_reserve(&r->piece, &r->pcap, 0, need);
    if (rc == 0 && !check) {
        r->plen = keel_repl_op_encode(r->piece, KEEL_REPL_DEL_UNIT, NULL, 0,
                                      0, NULL, 0);
        r->pops = 1;
        rc = snap_read(r, u, NULL, 0);
    }
    if (rc == 0 || rc == SNAP_FULL) {
        more = rc == SNAP_FULL;
        rc = repl_frame_add_piece(r, l, u, epoch, u->seq);
    }
    if (rc != 0) {
        keel_error("unit (%s, %u): cannot send backup %s a snapshot: %s; "
                   "trying again in %.0f s",
                   keel_cap_name(u->cap), u->shard, l->name, keel_strerror(rc),
                   CU_RETRY_LONG_S);
        r->plen = 0;
        r->pops = 0;
        u->cu_retry_at = ev_now(r->n->loop) + CU_RETRY_LONG_S;
        if (l->build != NULL)
            repl_frame_finish(r, l);
        return;
    }
    STAT_ADD(r->n, repl_catchups, 1);
    STAT_ADD(r->n, repl_catchup_bytes, r->plen);
    cu_spend(r, r->plen);
    if (check)
        keel_info("unit (%s, %u): backup %s is out of sync; checking its "
                  "copy against this node's at epoch %llu seq %llu",
                  keel_cap_name(u->cap), u->shard, l->name,
                  (unsigned long long)epoch, (unsigned long long)u->seq);
    else
        keel_info("unit (%s, %u): backup %s is out of sync; sending it a "
                  "snapshot (%s%u records, %zu bytes) at epoch %llu seq %llu",
                  keel_cap_name(u->cap), u->shard, l->name,
                  more ? "in parts, the first " : "",
                  r->pops - 1, r->plen, (unsigned long long)epoch,
                  (unsigned long long)u->seq);
    r->plen = 0;
    r->pops = 0;
    repl_frame_finish(r, l);
    /* A drop of it asked at this epoch was settled (it is out): the next
     * lag of it, once it is back in, asks again. */
    for (i = 0; i < REPL_MAX_BACKUPS; i++)
        if (u->asked[i].l == l && u->asked[i].epoch == epoch)
            u->asked[i].l = NULL;
    memset(c, 0, sizeof *c);
    c->l = l;
    c->epoch = epoch;
    if (part_resume(r, c, more ? SNAP_FULL : 0, u->seq) != 0) {
        /* Out of memory for the key to go on from: the part sent is a
         * snapshot the backup takes, never completed; tried again. */
        memset(c, 0, sizeof *c);
        u->cu_retry_at = ev_now(r->n->loop) + CU_RETRY_LONG_S;
        return;
    }
    c->phase = CU_SNAP;
    c->checking = check;
    c->since = ev_now(r->n->loop);
    part_out(c);
    /* A store id is KEEL_MAP_STORE_HEX characters at most (a plain
     * copy: snprintf here makes gcc -O2 warn about truncation). */
    slen = strnlen(store, sizeof c->store - 1);
    memcpy(c->store, store, slen);
    c->store[slen] = '\0';
    u->ncu++;
    r->nsnap++;
    cu_list(r, u);
}

/* Whether a catch-up of l's node starts with a check: 1 when the hello of
 * the connection to it said it takes them, 0 when it did not (or none
 * came within CU_HELLO_WAIT_S), -1 while that hello is awaited. */
static int link_checks(keel_repl *r, repl_link *l, ev_tstamp now)
{
    unsigned flags = 0;

    if (r->rt->peers == NULL || l->addr[0] == '\0')
        return 0;
    if (keel__peer_hello(r->rt->peers, l->addr, &flags)) {
        l->hello_wait = 0;
        return (flags & KEEL_HELLO_UNITCHECK) != 0;
    }
    if (l->hello_wait == 0)
        l->hello_wait = now;
    if (now - l->hello_wait < CU_HELLO_WAIT_S)
        return -1;
    l->hello_wait = 0;
    return 0;
}

/* Whether the link to the map's node j takes no more parts now. */
static int link_full(keel_repl *r, const keel_shard_map *m, uint16_t j)
{
    repl_link *l;

    for (l = r->links; l != NULL; l = l->next)
        if (strcmp(l->name, m->nodes[j]) == 0)
            return l->snap_parts >= CU_LINK_PARTS;
    return 0;
}

/* Looks for backups to catch up on the units this node is primary of,
 * serving at their map epoch. Stops once CU_MAX_SNAP snapshots are out;
 * the tick goes on from there.
 *
 * A scan runs each time a part lands, and a map may hold 65,536 units
 * per capability: units whose backups out of sync are all on links that
 * take no more parts now are passed over on the map's bytes alone, and
 * the scan ends at once when no link takes one. */
static void cu_scan(keel_repl *r)
{
    const keel_shard_map *m = keel_cluster_map(cl(r));
    const char *me = keel_cluster_node_name(cl(r));
    keel_replica_ref refs[REPL_MAX_BACKUPS];
    char stores[REPL_MAX_BACKUPS][KEEL_MAP_STORE_HEX + 1];
    ev_tstamp now = ev_now(r->n->loop);
    keel_placement pl;
    double wait;
    uint32_t ci, s;
    uint16_t j;
    int self, check, open = 0;
    uint8_t *full;
    double began = ev_time();

    r->rescan = 0;
    if (m == NULL || keel_cluster_replicas(cl(r)) < 2 ||
        !keel__cluster_rt_serving(r->n) ||
        (self = keel_map_node_index(m, me)) < 0)
        return;
    if ((full = calloc(m->nnodes ? m->nnodes : 1, 1)) == NULL) {
        r->rescan = 1;
        repl_arm(r, REPL_TICK_S);
        return;
    }
    for (j = 0; j < m->nnodes; j++)
        if (j != (uint16_t)self && !(full[j] = (uint8_t)link_full(r, m, j)))
            open = 1;
    for (ci = 0; open && ci < m->ncaps; ci++) {
        for (s = 0; s < m->shard_count; s++) {
            const keel_map_unit *mu = &m->units[ci * m->shard_count + s];
            const char *cap = m->caps[ci];
            repl_unit *u;
            size_t n, i;
            int k, any = 0;
            if (mu->nreplicas < 2 || mu->shard_epoch == 0 ||
                mu->replicas[0] != (uint16_t)self ||
                mu->insync == (uint8_t)((1u << mu->nreplicas) - 1))
                continue;
            for (k = 1; k < mu->nreplicas && !any; k++)
                any = !keel_map_insync(mu, k) && mu->replicas[k] < m->nnodes &&
                      !full[mu->replicas[k]];
            if (!any) {
                /* A part landing there scans again. A unit that asked
                 * for late flushes keeps them meanwhile, so that it is
                 * ready when a part goes (it would lose its turn to
                 * units written less). */
                u = repl_unit_find(r, cap, s);
                if (u != NULL && u->cu_want_at != 0 &&
                    u->early_no > r->settled_no)
                    u->cu_want_at = now;
                continue;
            }
            /* Only a unit this node serves at that epoch and that is not
             * moving: a unit being handed off may have had its records
             * deleted here already (they went to the new primary), and
             * a snapshot of that would wipe the backup's copy. */
            keel_coord_placement(r->n->coord, cap, s, &pl);
            if (pl.state != KEEL_PLACEMENT_LOCAL ||
                pl.epoch != mu->shard_epoch)
                continue;
            n = keel_cluster_catchup_backups(cl(r), cap, s, mu->shard_epoch,
                                             refs, stores, REPL_MAX_BACKUPS);
            if (n == 0)
                continue;
            u = repl_unit_get(r, cap, s);
            if (u == NULL || u->cu_retry_at > now)
                continue;
            if (u->early_no > r->settled_no) {
                /* Writes of it left before their commit here, which has
                 * not settled: a snapshot read now could miss them. Its
                 * flushes go late from now on, and the tick looks again
                 * once they settled. */
                u->cu_want_at = now;
                r->rescan = 1;
                repl_arm(r, REPL_TICK_S);
                continue;
            }
            for (i = 0; i < n; i++) {
                repl_link *l;
                if (r->nsnap >= CU_MAX_SNAP) {
                    r->rescan = 1; /* the tick goes on */
                    repl_arm(r, 0);
                    goto out;
                }
                l = repl_link_get(r, &refs[i]);
                if (l == NULL || cu_find(u, mu->shard_epoch, l) != NULL ||
                    l->snap_parts >= CU_LINK_PARTS)
                    continue; /* a part landing there scans again */
                if ((wait = cu_wait(r)) > 0) {
                    r->rescan = 1; /* the tick goes on, once it may */
                    repl_arm(r, wait);
                    goto out;
                }
                if ((check = link_checks(r, l, now)) < 0) {
                    r->rescan = 1; /* once its hello is read */
                    repl_arm(r, REPL_TICK_S);
                    continue;
                }
                cu_begin(r, u, mu->shard_epoch, &refs[i], stores[i], check);
                if (l->snap_parts >= CU_LINK_PARTS &&
                    (k = keel_map_node_index(m, l->name)) >= 0)
                    full[k] = 1;
                if (ev_time() - began >= CU_SCAN_BUDGET_S) {
                    /* Reads of whole units (a check's digest) or first
                     * parts add up: the loop serves what waits, and the
                     * next tick goes on. */
                    r->rescan = 1;
                    repl_arm(r, 0);
                    goto out;
                }
            }
        }
    }
out:
    free(full);
}



/* ---------------------------------------------------------------- tick */

/* Whether the map still lets l catch up on u at epoch (listed out of
 * sync, live, under store). */
static int still_candidate(keel_repl *r, repl_unit *u, const repl_catchup *c)
{
    keel_replica_ref refs[REPL_MAX_BACKUPS];
    char stores[REPL_MAX_BACKUPS][KEEL_MAP_STORE_HEX + 1];
    size_t n, i;

    n = keel_cluster_catchup_backups(cl(r), u->cap, u->shard, c->epoch, refs,
                                     stores, REPL_MAX_BACKUPS);
    for (i = 0; i < n; i++)
        if (strcmp(refs[i].name, c->l->name) == 0)
            return strcmp(stores[i], c->store) == 0;
    return 0;
}

static int is_insync(keel_repl *r, repl_unit *u, const repl_catchup *c)
{
    size_t n, i;

    n = keel_cluster_insync_backups(cl(r), u->cap, u->shard, c->epoch,
                                    r->refs, REPL_MAX_BACKUPS);
    for (i = 0; i < n; i++)
        if (strcmp(r->refs[i].name, c->l->name) == 0)
            return 1;
    return 0;
}

static void cu_check(keel_repl *r, repl_unit *u, repl_catchup *c)
{
    keel_placement pl;

    if (!repl_unit_ours(r, u->cap, u->shard, c->epoch)) {
        /* The unit left this node at that epoch: whatever waited on the
         * backup cannot be confirmed here any more. */
        cu_end(r, u, c, 1, counted(c), 0);
        return;
    }
    if (c->phase == CU_SNAP || c->phase == CU_TAIL) {
        /* As cu_scan: only while this node serves the unit at that epoch
         * and it is not moving. A unit being handed off may have had its
         * records purged here, and a later part read then would be empty:
         * the backup would be taken for caught up without them. */
        keel_coord_placement(r->n->coord, u->cap, u->shard, &pl);
        if (pl.state != KEEL_PLACEMENT_LOCAL || pl.epoch != c->epoch) {
            cu_end(r, u, c, 1, 0, CU_RETRY_S);
            return;
        }
    }
    if (c->phase == CU_ASKED && !c->published) {
        /* Counted, not asked yet: no request can add it, so it may stop
         * being counted at once. */
        if (!still_candidate(r, u, c))
            cu_end(r, u, c, 1, 0, CU_RETRY_S);
        else
            cu_ask(r, u, c);
        return;
    }
    switch (c->phase) {
    case CU_ASKED:
    case CU_WITHDRAWN:
        if (keel_cluster_add_pending(cl(r), u->cap, u->shard, c->epoch,
                                     c->l->name)) {
            if (c->phase == CU_ASKED && !still_candidate(r, u, c) &&
                !is_insync(r, u, c))
                cu_withdraw(r, u, c, "is not a live replica of it any more");
            return;
        }
        if (is_insync(r, u, c)) {
            keel_info("unit (%s, %u): backup %s is in sync at epoch %llu",
                      keel_cap_name(u->cap), u->shard, c->l->name,
                      (unsigned long long)c->epoch);
            cu_end(r, u, c, 0, 0, 0); /* an in-sync backup from now on */
        } else {
            /* Settled without it: no map can add it on this request. */
            cu_end(r, u, c, 1, 0, CU_RETRY_S);
        }
        return;
    case CU_TAIL:
        if (!still_candidate(r, u, c))
            cu_end(r, u, c, 1, 0, CU_RETRY_S);
        else
            cu_ask(r, u, c);
        return;
    default:
        if (!still_candidate(r, u, c))
            cu_end(r, u, c, 1, 0, CU_RETRY_S);
        else if (c->resume != NULL && c->acked >= c->part_seq)
            cu_part(r, u, c);
        return;
    }
}

static void cu_settle_all(keel_repl *r)
{
    repl_unit *u, *unext;

    for (u = r->cuhead; u != NULL; u = unext) {
        unsigned i;
        unext = u->cunext;
        for (i = 0; i < REPL_MAX_BACKUPS; i++)
            if (u->cu[i].l != NULL)
                cu_check(r, u, &u->cu[i]);
        if (u->ncu == 0)
            cu_unlist(r, u);
    }
}

void repl_catchup_tick(keel_repl *r)
{
    cu_settle_all(r);
    if (r->rescan && r->nsnap < CU_MAX_SNAP)
        cu_scan(r);
}

void repl_catchup_map_applied(keel_repl *r)
{
    cu_settle_all(r);
    if (r->started && keel_cluster_replicas(cl(r)) > 1) {
        ev_timer_stop(r->n->loop, &r->scan);
        ev_timer_set(&r->scan, CU_SCAN_SOON_S, CU_SCAN_S);
        ev_timer_start(r->n->loop, &r->scan);
    }
}

static void scan_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    keel_repl *r = t->data;

    (void)loop;
    (void)revents;
    if (r->nsnap < CU_MAX_SNAP)
        cu_scan(r);
}

void repl_catchup_init(keel_repl *r)
{
    ev_timer_init(&r->scan, scan_cb, CU_SCAN_S, CU_SCAN_S);
    r->scan.data = r;
}

void repl_catchup_start(keel_repl *r)
{
    ev_timer_start(r->n->loop, &r->scan);
}

void repl_catchup_stop(keel_repl *r)
{
    ev_timer_stop(r->n->loop, &r->scan);
}
