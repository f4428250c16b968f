/* Streaming a unit between nodes (docs/cluster.md, docs/protocol.md).
 *
 * Old owner (hook release): the unit is UNAVAILABLE, so nothing new is
 * admitted; once the sweep has passivated every actor of the unit (all
 * writes committed), its records are read from the store and streamed to
 * the new owner in XFER frames; when the new owner has stored them, the
 * unit's records are deleted here and keel_cluster_released() publishes
 * the release. When the new owner is an in-sync backup of the unit, one
 * keep frame replaces the records (unit_promote.c); the rest is the same.
 *
 * XFER body (all integers big-endian):
 *   len(cap) u8 | cap | shard be16 | shard_epoch be64 | seq be32
 *   | flags u8 (bit 0: last frame of the unit; bit 1: keep frame)
 *   | records: klen be16 | key | version be64 | vlen be32 | value
 *     (a keep frame: the sender's content digest be64 instead)
 * Frames of one unit travel in order on one connection, seq from 0. The
 * receiver replaces everything it holds of the unit with the records of
 * the whole stream, in one transaction, when the last frame arrives. */
#include "runtime/cluster_rt_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/layout.h"
#include "runtime/repl.h"

/* -------------------------------------------------- streaming a unit out */

/* A stream whose answer has not come this long after it left, to a node
 * that is no longer a member, is given up: that node's session expired,
 * so it was fenced before it could read the frames, and refuses them
 * (keel_cluster_may_receive) whenever it does. */
#define STREAM_LOST_S 1.0
/* A refusal because the receiver has not applied the map that moves the
 * unit to it yet: it soon will. */
#define NOT_YET_S 0.05

rt_rel *rt_rel_find(keel_cluster_rt *rt, const char *cap, uint32_t shard)
{
    rt_rel *r;

    for (r = rt->rels; r != NULL; r = r->next)
        if (r->shard == shard && strcmp(r->cap, cap) == 0)
            return r;
    return NULL;
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

/* Nothing was handed over and the map no longer moves the unit: it is
 * this node's again (the coordinator records its fence anew). */
static void rel_keep(keel_cluster_rt *rt, rt_rel *r)
{
    int rc;

    rel_unlink(rt, r);
    rc = keel_cluster_kept(rt->c, r->cap, r->shard, r->epoch);
    keel_info("unit (%s, %u): handoff at epoch %llu called off, kept%s",
              keel_cap_name(r->cap), r->shard, (unsigned long long)r->epoch,
              rc == 0 ? "" : " (the map moved on meanwhile)");
    free(r);
    rt->sweep = 1;
}

void rt_release(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                uint64_t epoch, const char *to)
{
    rt_rel *r = rt_rel_find(rt, cap, shard);

    keel_debug("release (%s, %u) at %llu to %s", keel_cap_name(cap), shard,
               (unsigned long long)epoch, to != NULL ? to : "(called off)");
    if (r != NULL && r->stage == REL_PURGING)
        return; /* stored by its recipient: finishes there */
    if (to == NULL) {
        if (r == NULL) {
            /* Never started here (out of memory, or dropped): nothing
             * left this node. */
            if (keel_cluster_kept(rt->c, cap, shard, epoch) == 0)
                rt->sweep = 1;
            return;
        }
        if (r->stage == REL_DRAIN) {
            rel_keep(rt, r);
            return;
        }
        r->call_off = 1; /* decided by the stream's answer */
        return;
    }
    if (r == NULL) {
        r = calloc(1, sizeof *r);
        if (r == NULL) {
            keel_error("out of memory releasing (%s, %u)", keel_cap_name(cap),
                       shard);
            return;
        }
        snprintf(r->cap, sizeof r->cap, "%s", cap);
        r->shard = shard;
        r->stage = REL_DRAIN;
        r->next = rt->rels;
        rt->rels = r;
    }
    /* A stream out to another node goes on: if that node stores it, the
     * release finishes there; if not, the next one goes to `to`. */
    r->call_off = 0;
    r->epoch = epoch;
    if (strcmp(r->to, to) != 0)
        r->full = 0; /* a refused keep frame says nothing of another node */
    snprintf(r->to, sizeof r->to, "%s", to);
    if (r->stage == REL_DRAIN)
        r->not_before = 0;
    rt->sweep = 1;
}

static void xfer_out_cb(keel_node *n, int status, const uint8_t *body,
                        size_t len, void *arg);

/* Callback arguments of the frames of one stream: the rel is looked up by
 * unit, since it may be gone when the answer comes, and by generation,
 * since another stream of the unit may be out by then. */
typedef struct xfer_ref {
    char cap[256];
    uint32_t shard;
    uint32_t gen;
    int last;
} xfer_ref;

/* One frame, the last, with flag bit 1 and the digest for records: the
 * recipient keeps what it holds if that is what this node holds. */
static int keep_send(keel_cluster_rt *rt, rt_rel *r, const char *addr,
                     uint64_t digest)
{
    size_t clen = strlen(r->cap), hdr = 1 + clen + 2 + 8 + 4 + 1;
    xfer_ref *ref = malloc(sizeof *ref);
    uint8_t *body;

    if (ref == NULL)
        return KEEL_ENOMEM;
    snprintf(ref->cap, sizeof ref->cap, "%s", r->cap);
    ref->shard = r->shard;
    ref->gen = r->gen;
    ref->last = 1;
    body = keel__peer_frame(rt->peers, addr, KEEL_FRAME_XFER, 0, hdr + 8,
                            xfer_out_cb, ref);
    if (body == NULL) {
        free(ref);
        return KEEL_EUNAVAIL;
    }
    body[0] = (uint8_t)clen;
    memcpy(body + 1, r->cap, clen);
    rt_put_be(body + 1 + clen, r->shard, 2);
    rt_put_be(body + 3 + clen, r->epoch, 8);
    rt_put_be(body + 11 + clen, 0, 4);
    body[15 + clen] = 3; /* last, keep */
    rt_put_be(body + hdr, digest, 8);
    return 0;
}

static int xfer_send(keel_cluster_rt *rt, rt_rel *r)
{
    char addr[KEEL_ADDR_MAX + 1];
    struct scan_ctx s;
    size_t off = 0, clen = strlen(r->cap);
    size_t chunk = rt->n->opts.max_frame / 2;
    uint32_t seq = 0;
    uint64_t digest, fence;
    int rc = 0;

    if (keel_cluster_member_addr(rt->c, r->sent_to, addr, sizeof addr) != 0)
        return KEEL_EUNAVAIL;
    memset(&s, 0, sizeof s);
    /* Given here without its records (owner forgotten: shard_epoch + 2)
     * and moved on before this node acquired it, so the acquire that
     * deletes an older copy held here never ran. */
    fence = rt_fence_read(rt, r->cap, r->shard, r->epoch);
    if (rt_without_records(rt, r->cap, r->shard, r->epoch, fence)) {
        /* The unit starts empty, here or at the recipient: an older
         * copy held here is not its data (nor a keep frame's). */
        r->keep = 0;
        keel_info("unit (%s, %u) came here at epoch %llu without its "
                  "records (this store is at epoch %llu): handing it to %s "
                  "empty",
                  keel_cap_name(r->cap), r->shard,
                  (unsigned long long)r->epoch, (unsigned long long)fence,
                  r->sent_to);
    } else {
        r->keep = rt_promote_may_keep(rt, r, &digest);
        if (r->keep)
            return keep_send(rt, r, addr, digest);
        rc = rt_unit_scan(rt->n, r->cap, r->shard, &s);
    }
    if (chunk > XFER_CHUNK)
        chunk = XFER_CHUNK;
    if (rc != 0) {
        /* Nothing was sent: the release waits and tries again, rather
         * than sending a unit without records it may own. */
        keel_error("unit (%s, %u): cannot read its records to stream them: "
                   "%s",
                   keel_cap_name(r->cap), r->shard, keel_strerror(rc));
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
        ref->gen = r->gen;
        ref->last = last;
        body = keel__peer_frame(rt->peers, addr, KEEL_FRAME_XFER, 0,
                                hdr + (end - off), xfer_out_cb, ref);
        if (body == NULL) {
            /* No frame of this stream was queued when the first one is
             * refused (the link to the recipient is pausing between
             * reconnects): nothing will answer, so the release must be
             * retried rather than wait for an answer. */
            free(ref);
            rc = seq == 0 ? KEEL_EUNAVAIL : KEEL_ECONN;
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

/* The stream out did not end stored (refused, connection failed, given
 * up): this node still holds the unit. A call-off is honoured now, else
 * the next stream goes to where the map wants the unit by then. A
 * recipient that may have stored it without its answer reaching here
 * keeps a copy it never serves: it becomes the unit's owner only through
 * a later stream, which replaces it, or a release naming it, which only
 * follows its answer. */
static void rel_unsent(keel_cluster_rt *rt, rt_rel *r, ev_tstamp pause)
{
    r->gen++; /* late answers of that stream are stale */
    r->failed = 0;
    if (r->call_off) {
        rel_keep(rt, r);
        return;
    }
    r->stage = REL_DRAIN;
    r->not_before = rt_now(rt) + pause;
}

static void rel_purge(keel_cluster_rt *rt, rt_rel *r)
{
    rt_job *j = calloc(1, sizeof *j);

    if (j == NULL) {
        keel_error("unit (%s, %u): out of memory purging; retrying",
                   keel_cap_name(r->cap),
                   r->shard);
        r->not_before = rt_now(rt) + RETRY_S;
        return; /* rt_progress_rels queues it */
    }
    /* The purge raises the fence one past the epoch of the release, so
     * this node's stragglers at that epoch are refused, and records where
     * the unit went in the same transaction: after a restart the store
     * says the unit was handed over, and to whom (rt_handed_over). The
     * new owner's epoch is that one, so records it streams here later
     * pass. */
    j->kind = JOB_PURGE;
    snprintf(j->cap, sizeof j->cap, "%s", r->cap);
    j->shard = r->shard;
    j->epoch = r->epoch + 1;
    snprintf(j->to, sizeof j->to, "%s", r->sent_to);
    /* With replicas the copy stays: the map that completes the move may
     * keep this node as a backup, whose catch-up then finds it the same
     * (catchup.c); if it does not, the copy goes a dead time later
     * (unit_sweep.c). Without replicas nothing would ever use it. */
    j->keep_records = keel_cluster_replicas(rt->c) > 1;
    r->not_before = 0;
    r->failed = 1; /* with the writer */
    rt_job_push(rt, j);
}

static void xfer_out_cb(keel_node *n, int status, const uint8_t *body,
                        size_t len, void *arg)
{
    keel_cluster_rt *rt = n->cluster;
    xfer_ref *ref = arg;
    rt_rel *r = rt != NULL ? rt_rel_find(rt, ref->cap, ref->shard) : NULL;

    if (r != NULL && r->stage == REL_SENDING && r->gen == ref->gen) {
        if (status != 0) {
            if (status == KEEL_PEER_UNSENT)
                keel_warn("unit (%s, %u): %s is unreachable",
                          keel_cap_name(r->cap),
                          r->shard, r->sent_to);
            else if (status != KEEL_ENOTTARGET && !r->failed)
                keel_warn("unit (%s, %u): streaming to %s failed: %.*s",
                          keel_cap_name(r->cap), r->shard, r->sent_to,
                          (int)len,
                          (const char *)body);
            if (!r->failed)
                r->refused = status;
            if (r->keep &&
                (status == KEEL_ENOTFOUND || status == KEEL_EMALFORMED)) {
                /* The recipient does not hold what this node holds, or
                 * predates keep frames: the next attempt streams the
                 * records. Other refusals would meet a stream too. */
                keel_info("unit (%s, %u): %s refused to keep its copy "
                          "(%s): streaming the records instead",
                          keel_cap_name(r->cap), r->shard, r->sent_to,
                          keel_strerror(status));
                r->full = 1;
            }
            r->failed = 1;
        }
        if (ref->last) {
            if (!r->failed && rt->started) {
                /* Stored there: whatever the map says by now, the unit
                 * goes where its data is. */
                r->stage = REL_PURGING;
                r->failed = 0;
                rel_purge(rt, r);
            } else {
                rel_unsent(rt, r,
                           r->refused == KEEL_ENOTTARGET ? NOT_YET_S
                                                         : RETRY_S);
            }
        }
    }
    free(ref);
}

int rt_handed_over(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                   uint64_t epoch, char *to, size_t to_cap)
{
    keel_store_read *rd;
    uint64_t at = 0;
    int rc;

    if (keel_store_read_begin(rt->n->store, &rd) != 0)
        return 0;
    rc = keel_store_handoff_get(rd, cap, (uint16_t)shard, &at, to, to_cap);
    keel_store_read_end(rd);
    return rc == 0 && at == epoch && to[0] != '\0';
}

void rt_progress_rels(keel_cluster_rt *rt)
{
    rt_rel *r;

    for (r = rt->rels; r != NULL;) {
        rt_rel *next = r->next;
        char to[KEEL_HANDOFF_NAME_MAX + 1];
        int rc;
        if (r->stage == REL_SENDING) {
            /* The answer may never come (the recipient stopped): once it
             * is not a member any more, it cannot store what it reads. */
            if (rt_now(rt) - r->sent_at >= STREAM_LOST_S &&
                keel_cluster_member_addr(rt->c, r->sent_to, NULL, 0) != 0) {
                keel_warn("unit (%s, %u): %s left before answering the "
                          "stream",
                          keel_cap_name(r->cap), r->shard, r->sent_to);
                rel_unsent(rt, r, 0);
            }
            r = next;
            continue;
        }
        if (r->stage == REL_PURGING) {
            if (!r->failed && rt_now(rt) >= r->not_before)
                rel_purge(rt, r);
            r = next;
            continue;
        }
        /* Pieces its backups have not acknowledged (a write answered in
         * doubt let its actor go): the lag has them acknowledged or the
         * backup dropped first, so that the backups the map keeps in sync
         * hold what the recipient gets. */
        if (rt_now(rt) < r->not_before ||
            rt_unit_resident(rt, r->cap, r->shard) ||
            keel__repl_unit_unacked(rt->n, r->cap, r->shard, r->epoch)) {
            r = next;
            continue;
        }
        if (rt_handed_over(rt, r->cap, r->shard, r->epoch, to, sizeof to)) {
            /* Purged before a restart, not yet published: the unit is
             * with that node, and streaming this node's (nothing) would
             * replace it. */
            rel_unlink(rt, r);
            rc = keel_cluster_released(rt->c, r->cap, r->shard, r->epoch, to);
            STAT_ADD(rt->n, units_handed_off, 1);
            keel_info("unit (%s, %u) was handed to %s from epoch %llu before "
                      "a restart%s",
                      keel_cap_name(r->cap), r->shard, to,
                      (unsigned long long)r->epoch,
                      rc == 0 ? "" : " (the map moved on meanwhile)");
            free(r);
            r = next;
            continue;
        }
        r->stage = REL_SENDING;
        r->failed = 0;
        r->refused = 0;
        r->gen++;
        r->sent_at = rt_now(rt);
        snprintf(r->sent_to, sizeof r->sent_to, "%s", r->to);
        rc = xfer_send(rt, r);
        if (rc != 0) {
            /* Frames already queued fail or finish; the last one's answer
             * decides. When none was queued, retry later. */
            r->failed = 1;
            if (rc == KEEL_EUNAVAIL || rc == KEEL_ENOMEM)
                rel_unsent(rt, r, RETRY_S);
        }
        r = next;
    }
}

/* The purge that follows a unit's stream is durable (status 0) or failed:
 * publish the release, or purge again after a pause (the recipient has
 * the unit: it is not streamed again). */
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
        keel_error("unit (%s, %u): purge after the handoff to %s failed: "
                   "%s; retrying",
                   keel_cap_name(r->cap), r->shard, r->sent_to,
                   keel_strerror(status));
        r->failed = 0;
        r->not_before = rt_now(rt) + RETRY_S;
        return;
    }
    *pp = r->next;
    rc = keel_cluster_released(rt->c, r->cap, r->shard, r->epoch,
                               r->sent_to);
    STAT_ADD(n, units_handed_off, 1);
    keel_info("unit (%s, %u) handed to %s from epoch %llu%s%s",
              keel_cap_name(r->cap),
              r->shard, r->sent_to, (unsigned long long)r->epoch,
              r->keep ? " without a stream (an in-sync backup)" : "",
              rc == 0 ? "" : " (the map moved on meanwhile)");
    free(r);
}

void rt_drop_rel(keel_cluster_rt *rt, const char *cap, uint32_t shard)
{
    rt_rel **pp, *r;

    for (pp = &rt->rels; (r = *pp) != NULL;) {
        if (cap == NULL || (r->shard == shard && strcmp(r->cap, cap) == 0)) {
            if (r->stage == REL_PURGING && r->failed) {
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

/* ---------------------------------------------------------- receipts */

static rt_rcvd *rcvd_find(keel_cluster_rt *rt, const char *cap,
                          uint32_t shard, uint64_t epoch)
{
    rt_rcvd *x;

    for (x = rt->rcvd; x != NULL; x = x->next)
        if (x->shard == shard && x->epoch == epoch && strcmp(x->cap, cap) == 0)
            return x;
    return NULL;
}

int rt_receipt_has(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                   uint64_t epoch, const char *from)
{
    rt_rcvd *x = rcvd_find(rt, cap, shard, epoch);

    return x != NULL && (from == NULL || x->from[0] == '\0' ||
                         strcmp(x->from, from) == 0);
}

const char *rt_req_node(const keel_req *req)
{
    return req != NULL && req->origin == REQ_NET
               ? keel__conn_node(req->u.net.conn)
               : NULL;
}

/* Out of memory loses only the leniency towards a repeated stream: the
 * sender then keeps the unit instead. */
void rt_receipt_add(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                     uint64_t epoch, const char *from)
{
    rt_rcvd *x;

    if (rcvd_find(rt, cap, shard, epoch) != NULL)
        return;
    if ((x = calloc(1, sizeof *x)) == NULL)
        return;
    snprintf(x->cap, sizeof x->cap, "%s", cap);
    snprintf(x->from, sizeof x->from, "%s", from != NULL ? from : "");
    x->shard = shard;
    x->epoch = epoch;
    x->next = rt->rcvd;
    rt->rcvd = x;
}

size_t rt_receipts_pending(keel_cluster_rt *rt)
{
    const keel_shard_map *m = keel_cluster_map(rt->c);
    rt_rcvd **pp = &rt->rcvd, *x;
    size_t n = 0;

    while ((x = *pp) != NULL) {
        int ci = m != NULL ? keel_map_cap_index(m, x->cap) : -1;
        if (ci >= 0 && x->shard < m->shard_count &&
            keel_map_unit_at(m, (uint32_t)ci, x->shard)->shard_epoch >
                x->epoch) {
            *pp = x->next; /* settled: someone owns it past that epoch */
            free(x);
            continue;
        }
        n++;
        pp = &x->next;
    }
    return n;
}

void rt_receipts_free(keel_cluster_rt *rt)
{
    while (rt->rcvd != NULL) {
        rt_rcvd *x = rt->rcvd;
        rt->rcvd = x->next;
        free(x);
    }
}

/* ---------------------------------------------------- a unit coming in */

static void xin_drop(rt_xin *x)
{
    free(x->recs);
    free(x);
}

/* Bytes the connection's unfinished streams other than `but` hold. */
static size_t conn_buffered(const keel_cluster_rt *rt, const keel_conn *c,
                            const rt_xin *but)
{
    const rt_xin *x;
    size_t sum = 0;

    for (x = rt->xins; x != NULL; x = x->next)
        if (x->conn == c && x != but)
            sum += x->len;
    return sum;
}

void keel__cluster_conn_closed(keel_node *n, const keel_conn *c)
{
    keel_cluster_rt *rt = n->cluster;
    rt_xin **pp, *x;

    if (rt == NULL)
        return;
    for (pp = &rt->xins; (x = *pp) != NULL;) {
        if (x->conn == c) {
            *pp = x->next;
            keel_info("unit (%s, %u): stream dropped unfinished with its "
                      "connection (%zu bytes received)",
                      keel_cap_name(x->cap), x->shard, x->len);
            xin_drop(x);
        } else {
            pp = &x->next;
        }
    }
}

int keel__cluster_xfer_frame(keel_node *n, const keel_frame *f,
                             keel_req *req)
{
    keel_cluster_rt *rt = n->cluster;
    const keel_conn *conn = req->u.net.conn;
    const uint8_t *p = f->body;
    size_t len = f->body_len, off;
    size_t max = (size_t)n->opts.max_unit_stream;
    char cap[256];
    uint32_t shard, seq;
    uint64_t epoch;
    int last;
    keel_xfer_head h;
    rt_xin *x, **pp;

    if (rt == NULL)
        return KEEL_EPROTO;
    if (keel_xfer_head_parse(p, len, &h) != 0)
        return KEEL_EMALFORMED;
    memcpy(cap, h.cap, h.clen);
    cap[h.clen] = '\0';
    shard = h.shard;
    epoch = h.epoch;
    seq = h.seq;
    last = h.last;
    off = (size_t)(h.recs - p);
    if (shard >= n->opts.shard_count)
        return KEEL_EMALFORMED;
    if (h.keep)
        return rt_promote_in(rt, req, cap, shard, epoch, &h);
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
        x->refused = 0;
        x->conn = conn; /* a stream started over may change connection */
    }
    if (x == NULL || x->conn != conn || seq != x->next_seq ||
        epoch != x->epoch)
        return KEEL_EPROTO;
    if (!x->refused && (seq == 0 || last)) {
        /* Stored only if the applied map moves the unit here at that
         * epoch (checked again on the last frame: the map may have
         * changed since the first), or it was stored here already at that
         * epoch and the sender did not hear the answer. A sender whose map
         * is newer than ours gets KEEL_ENOTTARGET and tries again soon:
         * accepting ahead of the map could store a move the controller
         * has called off meanwhile. */
        const char *from = keel__conn_node(conn);
        int rc = keel_cluster_may_receive(rt->c, cap, shard, epoch, from);
        /* Not while a deletion of this node's copy of the unit is
         * queued (unit_sweep.c): it could remove what the stream
         * brings. The sender tries again soon. */
        if (rc == 0 && rt_sweep_pending(rt, cap, shard))
            rc = KEEL_ENOTTARGET;
        if (rc != 0 && (rc == KEEL_EDENIED ||
                        !rt_receipt_has(rt, cap, shard, epoch, from))) {
            x->refused = rc;
            x->len = 0;
        }
    }
    if (x->refused) {
        /* The rest of a refused stream gets the same answer (not a
         * sequence error, which would close the connection). */
        int rc = x->refused;
        x->next_seq++;
        if (last) {
            *pp = x->next;
            xin_drop(x);
        }
        return rc;
    }
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
    if (conn_buffered(rt, conn, x) + x->len + (len - off) > max) {
        /* Held in memory until the last frame: one connection's streams
         * may not hold more than --max-unit-stream. The rest of this one
         * is refused too, and what it sent is let go now. */
        keel_warn("unit (%s, %u): stream over %zu bytes (--max-unit-stream) "
                  "refused",
                  keel_cap_name(cap), shard, max);
        x->refused = KEEL_ETOOBIG;
        free(x->recs);
        x->recs = NULL;
        x->len = x->cap_bytes = 0;
        x->next_seq++;
        if (last) {
            *pp = x->next;
            xin_drop(x);
        }
        return KEEL_ETOOBIG;
    }
    if (x->len + (len - off) > x->cap_bytes) {
        size_t c = x->cap_bytes ? x->cap_bytes : 4096;
        uint8_t *q;
        while (c < x->len + (len - off))
            c *= 2;
        if (c > max)
            c = max; /* enough: the sum is within max, checked above */
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
        keel_info("unit (%s, %u): received %zu bytes of records",
                  keel_cap_name(cap), shard,
                  j->recs_len);
        if (keel__repl_unit_applying(rt->n, cap, shard)) {
            /* Pieces of the unit that its sender sent before, as this
             * node's primary, are still with the replication writer: the
             * stream is stored after them (rt_jobs_due), or one of them
             * (a catch-up's check finding another digest, a put of an
             * older value) would land on it. */
            j->not_before = 0;
            j->next = rt->later;
            rt->later = j;
        } else
            rt_job_push(rt, j);
    }
    return 0;
}
