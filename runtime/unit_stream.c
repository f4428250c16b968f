/* Streaming a unit between nodes (docs/cluster.md, docs/protocol.md).
 *
 * Old owner (hook release): the unit is UNAVAILABLE, so nothing new is
 * admitted; once the sweep has passivated every actor of the unit (all
 * writes committed), its records are read from the store and streamed to
 * the new owner in XFER frames; when the new owner has stored them, the
 * unit's records are deleted here and keel_cluster_released() publishes
 * the release.
 *
 * XFER body (all integers big-endian):
 *   len(cap) u8 | cap | shard be16 | shard_epoch be64 | seq be32
 *   | flags u8 (bit 0: last frame of the unit)
 *   | records: klen be16 | key | version be64 | vlen be32 | value
 * Frames of one unit travel in order on one connection, seq from 0. The
 * receiver replaces everything it holds of the unit with the records of
 * the whole stream, in one transaction, when the last frame arrives. */
#include "runtime/cluster_rt_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/layout.h"

/* -------------------------------------------------- streaming a unit out */

rt_rel *rt_rel_find(keel_cluster_rt *rt, const char *cap, uint32_t shard)
{
    rt_rel *r;

    for (r = rt->rels; r != NULL; r = r->next)
        if (r->shard == shard && strcmp(r->cap, cap) == 0)
            return r;
    return NULL;
}

static void xfer_out_cb(keel_node *n, int status, const uint8_t *body,
                        size_t len, void *arg);

/* Callback arguments of the frames of one stream: the rel is looked up by
 * unit, since it may be gone when the answer comes. */
typedef struct xfer_ref {
    char cap[256];
    uint32_t shard;
    int last;
} xfer_ref;

static int xfer_send(keel_cluster_rt *rt, rt_rel *r)
{
    char addr[KEEL_ADDR_MAX + 1];
    struct scan_ctx s;
    size_t off = 0, clen = strlen(r->cap);
    size_t chunk = rt->n->opts.max_frame / 2;
    uint32_t seq = 0;
    int rc;

    if (keel_cluster_member_addr(rt->c, r->to, addr, sizeof addr) != 0)
        return KEEL_EUNAVAIL;
    if (chunk > XFER_CHUNK)
        chunk = XFER_CHUNK;
    memset(&s, 0, sizeof s);
    rc = rt_unit_scan(rt->n, r->cap, r->shard, &s);
    if (rc != 0) {
        /* Nothing was sent: the release waits and tries again, rather
         * than sending a unit without records it may own. */
        keel_error("unit (%s, %u): cannot read its records to stream them: "
                   "%s",
                   r->cap, r->shard, keel_strerror(rc));
        free(s.out);
        return rc == KEEL_ENOMEM ? rc : KEEL_EUNAVAIL;
    }
    do {
        /* Whole records, at least one, up to chunk bytes. */
        size_t end = off, hdr = 1 + clen + 2 + 8 + 4 + 1;
        uint8_t *body;
        xfer_ref *ref;
        int last;
        while (end < s.len) {
            const uint8_t *key, *val;
            size_t klen, vlen, o = end;
            uint64_t version;
            rt_rec_next(s.out, s.len, &o, &key, &klen, &version, &val, &vlen);
            if (end > off && o - off > chunk)
                break;
            end = o;
        }
        last = end >= s.len;
        ref = malloc(sizeof *ref);
        if (ref == NULL) {
            rc = KEEL_ENOMEM;
            break;
        }
        snprintf(ref->cap, sizeof ref->cap, "%s", r->cap);
        ref->shard = r->shard;
        ref->last = last;
        body = keel__peer_frame(rt->peers, addr, KEEL_FRAME_XFER, 0,
                                hdr + (end - off), xfer_out_cb, ref);
        if (body == NULL) {
            free(ref);
            rc = KEEL_ECONN;
            break;
        }
        body[0] = (uint8_t)clen;
        memcpy(body + 1, r->cap, clen);
        rt_put_be(body + 1 + clen, r->shard, 2);
        rt_put_be(body + 3 + clen, r->epoch, 8);
        rt_put_be(body + 11 + clen, seq++, 4);
        body[15 + clen] = (uint8_t)last;
        if (end > off)
            memcpy(body + hdr, s.out + off, end - off);
        STAT_ADD(rt->n, handoff_bytes_out, end - off);
        off = end;
        if (last)
            break;
    } while (1);
    free(s.out);
    return rc;
}

static void xfer_out_cb(keel_node *n, int status, const uint8_t *body,
                        size_t len, void *arg)
{
    keel_cluster_rt *rt = n->cluster;
    xfer_ref *ref = arg;
    rt_rel *r = rt_rel_find(rt, ref->cap, ref->shard);

    if (r != NULL && r->stage == REL_SENDING) {
        if (status != 0) {
            if (status == KEEL_PEER_UNSENT)
                keel_warn("unit (%s, %u): %s is unreachable", r->cap,
                          r->shard, r->to);
            else
                keel_warn("unit (%s, %u): streaming to %s failed: %.*s",
                          r->cap, r->shard, r->to, (int)len,
                          (const char *)body);
            r->failed = 1;
        }
        if (ref->last) {
            if (r->failed || r->redo || !rt->started) {
                r->stage = REL_DRAIN;
                r->not_before = rt_now(rt) + (r->redo ? 0 : RETRY_S);
                r->failed = r->redo = 0;
            } else {
                rt_job *j = calloc(1, sizeof *j);
                if (j == NULL) {
                    r->stage = REL_DRAIN;
                    r->not_before = rt_now(rt) + RETRY_S;
                } else {
                    /* The purge raises the fence one past the epoch
                     * of the release: this node's stragglers at that
                     * epoch are refused, and after a restart the fence
                     * says the unit was handed off already
                     * (handed_off_before). The new owner's epoch is
                     * that one, so records it streams here later pass. */
                    r->stage = REL_PURGING;
                    j->kind = JOB_PURGE;
                    snprintf(j->cap, sizeof j->cap, "%s", r->cap);
                    j->shard = r->shard;
                    j->epoch = r->epoch + 1;
                    rt_job_push(rt, j);
                }
            }
        }
    }
    free(ref);
}

static void rel_unlink(keel_cluster_rt *rt, rt_rel *r)
{
    rt_rel **pp;

    for (pp = &rt->rels; *pp != NULL; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            return;
        }
}

/* Whether this node handed the unit off at r->epoch already: its purge
 * left the unit's fence at r->epoch + 1 (see JOB_PURGE). That happens
 * when the node restarted after its purge and before the release reached
 * the controller: the unit's records are with r->to, and streaming this
 * node's (none) would replace them. Any other fence means the records
 * here are the unit's: they are sent. */
static int handed_off_before(keel_cluster_rt *rt, rt_rel *r)
{
    keel_store_read *rd;
    uint64_t fence = 0;
    int rc;

    rc = keel_store_read_begin(rt->n->store, &rd);
    if (rc != 0)
        return 0;
    rc = keel_store_fence_get(rd, r->cap, (uint16_t)r->shard, &fence);
    keel_store_read_end(rd);
    return rc == 0 && fence > r->epoch;
}

void rt_progress_rels(keel_cluster_rt *rt)
{
    rt_rel *r;

    for (r = rt->rels; r != NULL;) {
        rt_rel *next = r->next;
        int rc;
        if (r->stage != REL_DRAIN || rt_now(rt) < r->not_before ||
            rt_unit_resident(rt, r->cap, r->shard)) {
            r = next;
            continue;
        }
        if (handed_off_before(rt, r)) {
            rel_unlink(rt, r);
            rc = keel_cluster_released(rt->c, r->cap, r->shard, r->epoch);
            STAT_ADD(rt->n, units_handed_off, 1);
            keel_info("unit (%s, %u) was handed to %s at epoch %llu before "
                      "a restart%s",
                      r->cap, r->shard, r->to, (unsigned long long)r->epoch,
                      rc == 0 ? "" : " (the map moved on meanwhile)");
            free(r);
            r = next;
            continue;
        }
        r->stage = REL_SENDING;
        r->failed = r->redo = 0;
        rc = xfer_send(rt, r);
        if (rc != 0) {
            /* Frames already queued fail or finish; the last one's answer
             * decides. When none was queued, retry later. */
            r->failed = 1;
            if (rc == KEEL_EUNAVAIL || rc == KEEL_ENOMEM) {
                r->stage = REL_DRAIN;
                r->not_before = rt_now(rt) + RETRY_S;
            }
        }
        r = next;
    }
}

/* The purge that follows a unit's stream is durable (status 0) or failed:
 * publish the release, or stream again after a pause. */
void rt_rel_purged(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                   int status)
{
    keel_node *n = rt->n;
    rt_rel **pp, *r;
    int rc;

    for (pp = &rt->rels; (r = *pp) != NULL; pp = &r->next)
        if (r->shard == shard && strcmp(r->cap, cap) == 0)
            break;
    if (r == NULL || r->stage != REL_PURGING)
        return;
    if (status != 0) {
        r->stage = REL_DRAIN;
        r->not_before = rt_now(rt) + RETRY_S;
        return;
    }
    *pp = r->next;
    rc = keel_cluster_released(rt->c, r->cap, r->shard, r->epoch);
    STAT_ADD(n, units_handed_off, 1);
    keel_info("unit (%s, %u) handed to %s at epoch %llu%s", r->cap,
              r->shard, r->to, (unsigned long long)r->epoch,
              rc == 0 ? "" : " (the map moved on meanwhile)");
    free(r);
}

void rt_drop_rel(keel_cluster_rt *rt, const char *cap, uint32_t shard)
{
    rt_rel **pp, *r;

    for (pp = &rt->rels; (r = *pp) != NULL;) {
        if (cap == NULL || (r->shard == shard && strcmp(r->cap, cap) == 0)) {
            if (r->stage == REL_PURGING) {
                pp = &r->next; /* its job finds it and lets it go */
                continue;
            }
            *pp = r->next;
            free(r);
        } else {
            pp = &r->next;
        }
    }
}

/* ---------------------------------------------------- a unit coming in */

int keel__cluster_xfer_frame(keel_node *n, const keel_frame *f,
                             keel_req *req)
{
    keel_cluster_rt *rt = n->cluster;
    const uint8_t *p = f->body;
    size_t len = f->body_len, clen, off;
    char cap[256];
    uint32_t shard, seq;
    uint64_t epoch;
    int last;
    rt_xin *x, **pp;

    if (rt == NULL)
        return KEEL_EPROTO;
    if (len < 1 || len < 1 + (size_t)p[0] + 15)
        return KEEL_EMALFORMED;
    clen = p[0];
    memcpy(cap, p + 1, clen);
    cap[clen] = '\0';
    shard = (uint32_t)rt_get_be(p + 1 + clen, 2);
    epoch = rt_get_be(p + 3 + clen, 8);
    seq = (uint32_t)rt_get_be(p + 11 + clen, 4);
    last = p[15 + clen] & 1;
    off = 16 + clen;
    if (shard >= n->opts.shard_count)
        return KEEL_EMALFORMED;
    for (pp = &rt->xins; (x = *pp) != NULL; pp = &x->next)
        if (x->shard == shard && strcmp(x->cap, cap) == 0)
            break;
    if (seq == 0) {
        if (x == NULL) {
            x = calloc(1, sizeof *x);
            if (x == NULL)
                return KEEL_ENOMEM;
            snprintf(x->cap, sizeof x->cap, "%s", cap);
            x->shard = shard;
            x->next = rt->xins;
            rt->xins = x;
            pp = &rt->xins;
        }
        x->len = 0;
        x->next_seq = 0;
        x->epoch = epoch;
    }
    if (x == NULL || seq != x->next_seq || epoch != x->epoch)
        return KEEL_EPROTO;
    {
        /* Validate the records now, so that a bad stream is refused
         * before anything is written. */
        size_t o = off;
        while (o < len) {
            const uint8_t *key, *val;
            size_t klen, vlen;
            uint64_t version;
            if (rt_rec_next(p, len, &o, &key, &klen, &version, &val, &vlen) != 0)
                return KEEL_EMALFORMED;
        }
    }
    if (x->len + (len - off) > x->cap_bytes) {
        size_t c = x->cap_bytes ? x->cap_bytes : 4096;
        uint8_t *q;
        while (c < x->len + (len - off))
            c *= 2;
        q = realloc(x->recs, c);
        if (q == NULL)
            return KEEL_ENOMEM;
        x->recs = q;
        x->cap_bytes = c;
    }
    if (len > off) {
        memcpy(x->recs + x->len, p + off, len - off);
        x->len += len - off;
    }
    x->next_seq++;
    if (!last)
        return 1;
    {
        rt_job *j = calloc(1, sizeof *j);
        if (j == NULL)
            return KEEL_ENOMEM;
        j->kind = JOB_XFER_IN;
        snprintf(j->cap, sizeof j->cap, "%s", cap);
        j->shard = shard;
        j->epoch = epoch;
        j->req = req;
        j->recs = x->recs;
        j->recs_len = x->len;
        *pp = x->next;
        free(x);
        keel_info("unit (%s, %u): received %zu bytes of records", cap, shard,
                  j->recs_len);
        rt_job_push(rt, j);
    }
    return 0;
}
