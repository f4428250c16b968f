/* Handing a unit to one of its in-sync backups without streaming it
 * (docs/cluster.md, "A move onto an in-sync backup"; coordinator/promote.h).
 *
 * Old owner A: the release runs as for any handoff (the unit stops
 * admitting, its actors finish and passivate, which they do only once
 * every in-sync backup acknowledged their writes). If the map A applied
 * has the recipient B in the unit's in-sync set, A sends, instead of the
 * records, one keep frame: an XFER with flag bit 1 whose record area is
 * the digest of what A holds of the unit. Everything after it (B's answer
 * as the point of no return, the purge, RELEASED, the controller's
 * primary write at shard_epoch + 1, B's acquire) is the handoff's.
 *
 * Recipient B: it takes a keep frame under the same rule as a stream (its
 * applied map moves the unit to it at that epoch, or it took it already)
 * and only if its own copy's digest is A's. It then records the unit's
 * epoch in its fence, durably, and answers: its acquire at epoch + 1 then
 * keeps what it holds (its fence is at most one below), as a promoted
 * backup's does. A digest that differs is refused with KEEL_ENOTFOUND (B
 * does not hold that content): A then streams the records. A node of an
 * earlier version reads the 8-byte record area as a malformed record and
 * refuses the frame (KEEL_EMALFORMED), with the same outcome. */
#include "runtime/cluster_rt_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/promote.h"
#include "runtime/repl.h"

#define DIGEST_LEN 8

static int unit_digest(keel_node *n, const char *cap, uint32_t shard,
                       uint64_t *digest, uint64_t *nrec)
{
    keel_store_read *rd;
    int rc = keel_store_read_begin(n->store, &rd);

    if (rc != 0)
        return rc;
    rc = keel_store_unit_digest(rd, cap, (uint16_t)shard, digest, nrec);
    keel_store_read_end(rd);
    return rc;
}

int rt_promote_may_keep(keel_cluster_rt *rt, const rt_rel *r,
                        uint64_t *digest)
{
    const char *self = keel_cluster_node_name(rt->c);
    uint64_t nrec = 0;
    int why, rc;

    if (r->full)
        return 0;
    why = keel_promote_check(keel_cluster_map(rt->c), r->cap, r->shard,
                             r->epoch, self, r->sent_to);
    if (why != KEEL_PROMOTE_OK) {
        keel_debug("unit (%s, %u): streamed to %s: %s", keel_cap_name(r->cap),
                   r->shard,
                   r->sent_to, keel_promote_why_name(why));
        return 0;
    }
    /* The release waits for the unit's actors to passivate, which waits
     * for its backups; checked again, since a keep frame relies on it. */
    if (keel__repl_unit_pending(rt->n, r->cap, r->shard))
        return 0;
    if ((rc = unit_digest(rt->n, r->cap, r->shard, digest, &nrec)) != 0) {
        keel_warn("unit (%s, %u): cannot digest its records (%s): streaming "
                  "them",
                  keel_cap_name(r->cap), r->shard, keel_strerror(rc));
        return 0;
    }
    keel_debug("unit (%s, %u): %s is an in-sync backup: keep frame, digest "
               "%016llx over %llu records",
               keel_cap_name(r->cap), r->shard, r->sent_to,
               (unsigned long long)*digest,
               (unsigned long long)nrec);
    return 1;
}

int rt_promote_in(keel_cluster_rt *rt, keel_req *req, const char *cap,
                  uint32_t shard, uint64_t epoch, const keel_xfer_head *h)
{
    uint64_t want, have = 0, nrec = 0;
    const char *from;
    rt_job *j;
    int rc;

    if (h->seq != 0 || !h->last || h->recs_len != DIGEST_LEN)
        return KEEL_EMALFORMED;
    want = rt_get_be(h->recs, DIGEST_LEN);
    /* The stream's rule: the map this node applied moves the unit here
     * at that epoch, or this node took it at that epoch already and the
     * sender did not hear the answer. */
    from = rt_req_node(req);
    rc = keel_cluster_may_receive(rt->c, cap, shard, epoch, from);
    if (rc == 0 && rt_sweep_pending(rt, cap, shard))
        rc = KEEL_ENOTTARGET; /* its copy is being deleted: soon again */
    if (rc != 0 &&
        (rc == KEEL_EDENIED || !rt_receipt_has(rt, cap, shard, epoch, from)))
        return rc;
    if ((rc = unit_digest(rt->n, cap, shard, &have, &nrec)) != 0) {
        keel_warn("unit (%s, %u): cannot digest this node's copy (%s): "
                  "refusing to keep it",
                  keel_cap_name(cap), shard, keel_strerror(rc));
        return rc == KEEL_ENOMEM ? rc : KEEL_ENOTFOUND;
    }
    if (have != want) {
        keel_warn("unit (%s, %u): the sender holds digest %016llx, this "
                  "node %016llx over %llu records: not keeping it (the "
                  "records will be streamed)",
                  keel_cap_name(cap), shard, (unsigned long long)want,
                  (unsigned long long)have, (unsigned long long)nrec);
        return KEEL_ENOTFOUND;
    }
    if ((j = calloc(1, sizeof *j)) == NULL)
        return KEEL_ENOMEM;
    j->kind = JOB_KEEP;
    snprintf(j->cap, sizeof j->cap, "%s", cap);
    j->shard = shard;
    j->epoch = epoch;
    j->req = req;
    keel_info("unit (%s, %u): moving here from epoch %llu; an in-sync "
              "backup, this node keeps its copy (%llu records, digest "
              "%016llx)",
              keel_cap_name(cap), shard, (unsigned long long)epoch,
              (unsigned long long)nrec, (unsigned long long)have);
    rt_job_push(rt, j);
    return 0;
}

void rt_promote_kept(keel_cluster_rt *rt, rt_job *j, int status)
{
    keel_node *n = rt->n;

    if (status != 0) {
        keel_warn("unit (%s, %u): recording epoch %llu to keep it failed: "
                  "%s",
                  keel_cap_name(j->cap), j->shard,
                  (unsigned long long)j->epoch,
                  keel_strerror(status));
    } else {
        /* A repeated frame (the answer was lost) counts once. */
        if (!rt_receipt_has(rt, j->cap, j->shard, j->epoch, NULL))
            STAT_ADD(n, units_promoted_on_move, 1);
        rt_receipt_add(rt, j->cap, j->shard, j->epoch, rt_req_node(j->req));
    }
    rt_peer_answer(n, j->req, status);
    j->req = NULL;
}
