/* Cluster mode in the runtime (see cluster_rt.h and docs/cluster.md): the
 * coordinator's hooks, the lease check, graceful leave, the tick that
 * drives routing, sweeping and streaming, and lifecycle. The parts live
 * beside it (cluster_rt_int.h says which file holds what).
 *
 * Handoff, new owner (hook acquire): the new shard_epoch is written to the
 * store's fence, then keel_cluster_acquired(). Old owner (hook release):
 * see unit_stream.c. */
#include "runtime/cluster_rt_int.h"
#include "runtime/dedup.h"
#include "runtime/obatch.h"
#include "runtime/outbox.h"
#include "runtime/reminders.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/addr.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "runtime/auth.h"

#include "coordinator/layout.h"
#include "coordinator/lease.h"
#include "coordinator/shardmap.h"
#include "coordinator/zkauth.h"
#include "runtime/repl.h"

/* How long a leaving node waits for its units to be handed off, unless
 * leave_timeout_ms says otherwise. */
#define LEAVE_MS_DEFAULT 30000
/* A stopping node exits once no other node has forwarded it a call for
 * STOP_QUIET_S (they have applied the map that sends them elsewhere) and
 * nothing it forwarded or holds is unanswered; at most STOP_QUIET_MAX_S. */
#define STOP_QUIET_S 0.3
#define STOP_QUIET_MAX_S 5.0

static double leave_s(const keel_cluster_rt *rt)
{
    uint32_t v = rt->n->opts.leave_timeout_ms;
    return (v != 0 ? v : LEAVE_MS_DEFAULT) / 1000.0;
}

/* ------------------------------------------------- what a store holds */

uint64_t rt_fence_read(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                       uint64_t epoch)
{
    keel_store_read *r;
    uint64_t fence = 0;

    if (keel_store_read_begin(rt->n->store, &r) != 0)
        return epoch;
    if (keel_store_fence_get(r, cap, (uint16_t)shard, &fence) != 0)
        fence = epoch;
    keel_store_read_end(r);
    return fence;
}

int rt_without_records(keel_cluster_rt *rt, const char *cap, uint32_t shard,
                       uint64_t epoch, uint64_t fence)
{
    return fence + 1 < epoch &&
           !keel_cluster_promoted(rt->c, cap, shard, epoch);
}

/* --------------------------------------------------------------- hooks */

static void on_release(keel_cluster *c, const char *cap, uint32_t shard,
                       uint64_t epoch, const char *to, void *data)
{
    (void)c;
    rt_release(data, cap, shard, epoch, to);
}

static void on_acquire(keel_cluster *c, const char *cap, uint32_t shard,
                       uint64_t epoch, void *data)
{
    keel_cluster_rt *rt = data;
    char to[KEEL_HANDOFF_NAME_MAX + 1];
    rt_job *j;

    if (rt_handed_over(rt, cap, shard, epoch, to, sizeof to)) {
        /* Streamed out and purged at this epoch before a restart, and the
         * move was called off meanwhile: the unit is with `to`. */
        keel_info("unit (%s, %u) was handed to %s from epoch %llu before a "
                  "restart",
                  keel_cap_name(cap), shard, to, (unsigned long long)epoch);
        keel_cluster_released(c, cap, shard, epoch, to);
        return;
    }
    if ((j = calloc(1, sizeof *j)) == NULL) {
        keel_error("out of memory acquiring (%s, %u)", keel_cap_name(cap),
                   shard);
        return;
    }
    j->kind = JOB_FENCE;
    snprintf(j->cap, sizeof j->cap, "%s", cap);
    j->shard = shard;
    j->epoch = epoch;
    {
        /* This store's fence says what it holds of the unit: the epoch
         * itself (it served the unit at that epoch before a restart) or
         * the one below (a handoff streamed it here). Anything lower
         * means, unless the map says this node was promoted from the
         * unit's in-sync set, that the unit came here without its data
         * (its owner was
         * forgotten or presumed dead, the loss accepted): what this store
         * still holds of it is an older owner's copy, deleted in the
         * transaction that records the epoch, before anything
         * activates. */
        uint64_t fence = rt_fence_read(rt, cap, shard, epoch);
        if (fence == epoch) {
            /* Served here at this epoch before: writes that had left for
             * its backups may not have committed here (repl.h). */
            keel__repl_resumed(rt->n, cap, shard, epoch);
        } else if (fence + 1 < epoch &&
            keel_cluster_promoted(c, cap, shard, epoch)) {
            /* Failover: an in-sync backup holds every acknowledged write
             * of the unit, whatever epoch its last replicated write
             * carried (none may have come from the primary it followed
             * last, if that primary got the unit by a handoff and died
             * before writing). */
            keel_info("unit (%s, %u) comes here at epoch %llu by failover: "
                      "keeping its replicated records (this store is at "
                      "epoch %llu)",
                      keel_cap_name(cap), shard, (unsigned long long)epoch,
                      (unsigned long long)fence);
        } else if (rt_without_records(rt, cap, shard, epoch, fence)) {
            j->wipe = 1;
            keel_info("unit (%s, %u) comes here at epoch %llu without its "
                      "records (this store is at epoch %llu): starting it "
                      "empty",
                      keel_cap_name(cap), shard, (unsigned long long)epoch,
                      (unsigned long long)fence);
        }
    }
#ifdef KEEL_FAILPOINTS
    if (keel_failpoint(KEEL_FP_ACQUIRE_DELAY_MS) > 0) {
        /* common/failpoint.h: the epoch is recorded late (rt_jobs_due) */
        j->not_before =
            rt_now(rt) + keel_failpoint(KEEL_FP_ACQUIRE_DELAY_MS) / 1000.0;
        j->next = rt->later;
        rt->later = j;
        return;
    }
#endif
    rt_job_push(rt, j);
}

static void on_drop(keel_cluster *c, const char *cap, uint32_t shard,
                    void *data)
{
    keel_cluster_rt *rt = data;

    (void)c;
    STAT_ADD(rt->n, units_dropped, 1);
    rt_drop_rel(rt, cap, shard);
    rt->sweep = 1;
}

/* Node identities (peer connections) count while their node is a
 * member: the new view says who is. A connection from a node that left
 * or was forgotten loses its rights from its next request. */
static void on_members(keel_cluster *c, void *data)
{
    keel_cluster_rt *rt = data;
    const keel_member *v;
    const char **names;
    size_t nv = 0, i;

    v = keel_cluster_view(c, &nv);
    names = calloc(nv > 0 ? nv : 1, sizeof *names);
    if (names == NULL) {
        keel_error("cluster: out of memory passing on the member list");
        return;
    }
    for (i = 0; i < nv; i++)
        names[i] = v[i].name;
    keel__auth_set_members(rt->n->auth, names, nv);
    free(names);
}

/* The controller's hint for a failover (coordinator/failover.h): this
 * node's link to the member `name` failed and was not made again. */
static int on_peer_down(keel_cluster *c, const char *name, void *data)
{
    keel_cluster_rt *rt = data;
    char addr[KEEL_ADDR_MAX + 1];

    return rt->peers != NULL &&
           keel_cluster_member_addr(c, name, addr, sizeof addr) == 0 &&
           keel__peer_down(rt->peers, addr);
}

static void on_fenced(keel_cluster *c, int fenced, void *data)
{
    keel_cluster_rt *rt = data;

    keel__actlog_fence(rt->n, fenced,
                       fenced ? keel_cluster_fenced_ago_ns(c) : 0);
    /* A node comes up fenced, and its first lift is its join, which
     * the membership logs ("serving"): a lift is news only after a
     * fence was reported. */
    if (fenced && !rt->fence_logged)
        keel_warn("cluster: fenced: not serving any unit");
    else if (!fenced && rt->fence_logged)
        keel_warn("cluster: fence lifted: serving again");
    rt->fence_logged = fenced;
    if (fenced)
        STAT_ADD(rt->n, fenced, 1);
    rt->sweep = 1;
    if (!fenced)
        keel__run_resume(rt->n); /* turns left queued when it came up */
}

static void on_expired(keel_cluster *c, void *data)
{
    keel_cluster_rt *rt = data;

    (void)c;
    keel_warn("cluster: session expired: dropping every unit");
    rt->wipe_gen++; /* a purge still running completes nothing now */
    rt->wipes_left = 0;
    STAT_ADD(rt->n, session_expirations, 1);
    rt_drop_rel(rt, NULL, 0);
    rt->sweep = 1;
}

/* This node was forgotten (keel node forget) and joined again: what it
 * still stores of units others own now is stale (they restarted from
 * nothing), so it goes, before this node could own one of them again.
 * Each unit's purge is fenced at the unit's current shard_epoch. A unit
 * the map still lists it as a backup of is held, not stale: its copy is
 * the in-sync replica the map may say it is (or one stage 3's catch-up
 * replaces). The coordinator hears when every wipe is durable
 * (rt_wipe_done). */
static void on_forgotten(keel_cluster *c, void *data)
{
    keel_cluster_rt *rt = data;
    const keel_shard_map *m = keel_cluster_map(c);
    const char *me = keel_cluster_node_name(c);
    uint32_t ci, s;
    size_t queued = 0;
    int mi;

    rt->wipe_gen++;
    rt->wipes_left = 0;
    rt->wipe_status = 0;
    if (m == NULL) {
        keel_cluster_forgotten_done(c, KEEL_EUNAVAIL);
        return;
    }
    mi = keel_map_node_index(m, me);
    for (ci = 0; ci < m->ncaps; ci++)
        for (s = 0; s < m->shard_count; s++) {
            const keel_map_unit *u = keel_map_unit_at(m, ci, s);
            rt_job *j;
            if (mi >= 0 && keel_map_replica_pos(u, (uint16_t)mi) >= 0)
                continue; /* primary or backup: held */
            if ((j = calloc(1, sizeof *j)) == NULL) {
                keel_error("out of memory purging stale units");
                rt->wipe_status = KEEL_ENOMEM;
                goto out;
            }
            j->kind = JOB_WIPE;
            snprintf(j->cap, sizeof j->cap, "%s", m->caps[ci]);
            j->shard = s;
            j->epoch = u->shard_epoch;
            j->gen = rt->wipe_gen;
            rt->wipes_left++;
            rt_job_push(rt, j);
            queued++;
        }
out:
    keel_warn("cluster: this node was forgotten: deleting its stale copy "
              "of %zu units it does not own",
              queued);
    if (rt->wipes_left == 0)
        keel_cluster_forgotten_done(c, rt->wipe_status);
}

int rt_wiping(const keel_cluster_rt *rt)
{
    return rt->wipes_left > 0;
}

void rt_wipe_done(keel_cluster_rt *rt, const rt_job *j, int status)
{
    /* Refused by a newer fence: the unit was replaced here since (a
     * stream, an acquire), which removed the stale copy too. */
    if (status != 0 && status != KEEL_EFENCED && rt->wipe_status == 0)
        rt->wipe_status = status;
    if (j->gen != rt->wipe_gen || rt->wipes_left == 0)
        return;
    if (--rt->wipes_left == 0)
        keel_cluster_forgotten_done(rt->c, rt->wipe_status);
}

static void on_map(keel_cluster *c, uint64_t map_epoch, void *data)
{
    keel_cluster_rt *rt = data;

    (void)c;
    keel_debug("cluster: map %llu applied", (unsigned long long)map_epoch);
    rt->sweep = 1;
    keel__repl_map_applied(rt->n); /* backups it shows out of sync */
    rt_sweep_copies(rt, 1);
}

/* The node cannot take part in the cluster, for good: a node that serves
 * nothing and never will must not look alive to its operator, so it
 * stops, and keel_node_run returns the reason (keeld exits with it). Only
 * refusals of its configuration are lasting: ZooKeeper refusing its
 * credentials (EDENIED), a cluster made otherwise (ECONFIG), and a data
 * directory that is an older copy of the node's (EMISMATCH: the cluster
 * calls set_failed with it for nothing else; a store refused as another
 * one checks again by itself and is not a failure). Any other
 * failure (a request lost in a partition, say) leaves it running fenced,
 * as before: stopping then would skip the orderly deactivation of what it
 * held. */
static void on_failed(keel_cluster *c, int rc, void *data)
{
    keel_cluster_rt *rt = data;

    if (rt->failure != 0 || (rc != KEEL_EDENIED && rc != KEEL_ECONFIG &&
                             rc != KEEL_EMISMATCH))
        return;
    rt->failure = rc;
    /* An older copy of its own directory: marked, so that no later start
     * on it passes (storecheck.h). The store's commit lock orders this
     * with the writer's commits. */
    if (rc == KEEL_EMISMATCH && keel_store_stale(rt->n->store) == 0)
        (void)keel_store_mark_stale(rt->n->store);
    keel_error("cluster %s: stopping node %s, which cannot take part (%s)",
               keel_cluster_name(c), keel_cluster_node_name(c),
               keel_err_name(rc));
    keel_node_stop(rt->n);
}

void keel__cluster_rt_store_check(keel_node *n)
{
    keel_cluster_rt *rt = n->cluster;

    if (rt == NULL || rt->failure != 0 || !keel_store_broken(n->store))
        return;
    /* A failed flush broke the store (the kernel may have dropped what
     * it could not write): nothing here commits again until a restart
     * recovers from the log. Kept running, the node would hold its units
     * and answer ESTORE for them while their in-sync backups, which have
     * every acknowledged write, stand by. It stops as a crashed node
     * would, without handing off (its store cannot be read for that):
     * its session ends with it, and the controller promotes a backup of
     * each of its units. Its writes that had left for backups before
     * the failure were answered in doubt, so either outcome stands. */
    rt->failure = KEEL_ESTORE;
    keel_error("cluster %s: the store of node %s failed (its log says how): "
               "stopping without handing units off, so that their in-sync "
               "backups take them; restart the node to recover from its "
               "log, or replace its disk",
               keel_cluster_name(rt->c), keel_cluster_node_name(rt->c));
    keel_node_stop(n);
}

int keel__cluster_rt_failure(const keel_node *n)
{
    return n->cluster != NULL ? n->cluster->failure : 0;
}

const char *keel__cluster_rt_stop_text(const keel_node *n, char *buf,
                                       size_t cap)
{
    int rc = keel__cluster_rt_failure(n);

    if (rc == 0)
        return keel_strerror(KEEL_ESTOPPING);
    snprintf(buf, cap,
             "node is stopping: it cannot take part in its cluster (%s; "
             "its log says why)",
             keel_err_name(rc));
    return buf;
}

/* Graceful leave. Marked leaving by someone else (`keel node drain`): stop
 * like on SIGTERM, which hands off first. Handing off: done once this node
 * holds nothing another member could take and no release is under way, or
 * at the deadline. */
static void leave_tick(keel_cluster_rt *rt)
{
    keel_node *n = rt->n;
    size_t held, movable, received;

    if (rt->leave == 0) {
        if (keel_cluster_phase(rt->c) == KEEL_CLUSTER_RUNNING &&
            keel_cluster_member_leaving(rt->c,
                                        keel_cluster_node_name(rt->c)) &&
            !atomic_load(&n->stop_requested)) {
            keel_info("cluster: this node is being drained: handing its "
                      "units off, then stopping");
            keel_node_stop(n);
        }
        return;
    }
    if (rt->leave != 1)
        return;
    if (rt->failure != 0) {
        rt->leave = 2; /* the store failed: stop without the rest */
        keel_node_stop(n);
        return;
    }
    keel_cluster_held(rt->c, &held, &movable);
    /* A unit stored here from a stream is on its way to being ours (the
     * sender's release names this node): leaving before the map shows it
     * would strand its only copy. */
    received = rt_receipts_pending(rt);
    if (movable == 0 && rt->rels == NULL && received == 0) {
        if (held > 0)
            keel_warn("cluster: leaving with %zu unit(s) no other member can "
                      "take; they stay unavailable until this node returns",
                      held);
        else
            keel_info("cluster: every unit handed off");
    } else if (rt_now(rt) >= rt->leave_deadline) {
        keel_warn("cluster: leave timed out with %zu unit(s) not handed off "
                  "(%zu could move); they stay unavailable until this node "
                  "returns",
                  held, movable);
    } else {
        if (rt_now(rt) >= rt->leave_report) {
            size_t out = 0;
            const rt_rel *r;
            for (r = rt->rels; r != NULL; r = r->next)
                out++;
            /* What the leave waits for, as it is: units another member
             * can take, handoffs under way, units received here that the
             * map does not name this node for yet. */
            keel_info("cluster: leaving: %zu unit(s) still to hand off, "
                      "%zu handoff(s) under way, %zu unit(s) received "
                      "here not yet in the map",
                      movable, out, received);
            rt->leave_report = rt_now(rt) + 1.0;
        }
        return;
    }
    rt->leave = 2;
    keel_node_stop(n); /* wakes the loop: the stop goes on */
}

int keel__cluster_rt_leave(keel_node *n)
{
    keel_cluster_rt *rt = n->cluster;
    int rc;

    if (rt == NULL || !rt->started || rt->leave == 2)
        return 0;
    if (rt->failure != 0) {
        /* keel__cluster_rt_store_check, on_failed; also when the store
         * failed while this node was handing its units off: the rest of
         * the leave would read a store that refuses every read. */
        rt->leave = 2;
        return 0;
    }
    if (rt->leave == 1)
        return 1;
    if (keel_cluster_phase(rt->c) != KEEL_CLUSTER_RUNNING ||
        keel_cluster_fenced(rt->c)) {
        keel_warn("cluster: not joined or fenced: stopping without handing "
                  "units off");
        rt->leave = 2;
        return 0;
    }
    rc = keel_cluster_drain(rt->c, keel_cluster_node_name(rt->c));
    if (rc != 0) {
        keel_warn("cluster: cannot mark this node leaving (%s): stopping "
                  "without handing units off",
                  keel_strerror(rc));
        rt->leave = 2;
        return 0;
    }
    keel_info("cluster: leaving: handing every unit off (at most %.0f s)",
              leave_s(rt));
    rt->leave = 1;
    rt->leave_deadline = rt_now(rt) + leave_s(rt);
    rt->leave_report = rt_now(rt) + 1.0;
    return 1;
}

/* Runs at EV_MAXPRI among the check watchers, which libev queues right
 * after the poll: after a pause (SIGSTOP, a starved process) this is the
 * first thing the loop does, before it reads a request from a socket or
 * runs a turn, so a node whose lease lapsed meanwhile is fenced before it
 * could serve a unit that another node may own by now. One clock read and
 * one comparison while the lease holds; the clock is the agent's own
 * (CLOCK_BOOTTIME, which counts a suspension too), not ev_now(), which
 * follows the wall clock. */
static void lease_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    keel_cluster_rt *rt = w->data;

    (void)loop;
    (void)revents;
    keel_cluster_check_lease(rt->c);
}

int keel__cluster_rt_serving(keel_node *n)
{
    return !keel_cluster_check_lease(n->cluster->c);
}

int keel__cluster_req_stale(keel_node *n, const keel_req *req)
{
    return req->session != keel_cluster_session(n->cluster->c);
}

int keel__cluster_rt_holds(keel_node *n, const char *cap, uint32_t shard)
{
    return n->cluster == NULL ||
           keel_cluster_write_epoch(n->cluster->c, cap, shard) != 0;
}

uint64_t keel__cluster_write_epoch(keel_node *n, const char *cap,
                                   uint32_t shard)
{
    return keel_cluster_write_epoch(n->cluster->c, cap, shard);
}

/* Reports the units of rt->acq acquired once none of their actors is
 * resident any more (the sweep passivates them as their writes settle). */
static void acquire_pending(keel_cluster_rt *rt)
{
    rt_job **pp = &rt->acq, *j;

    while ((j = *pp) != NULL) {
        if (rt_unit_resident(rt, j->cap, j->shard)) {
            rt->sweep = 1;
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        if (keel_cluster_acquired(rt->c, j->cap, j->shard, j->epoch) == 0) {
            STAT_ADD(rt->n, units_acquired, 1);
            keel__outbox_unit_taken(rt->n, j->cap, j->shard);
            keel__reminders_unit_taken(rt->n, j->cap, j->shard);
        }
        rt_job_free(j);
    }
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    keel_cluster_rt *rt = w->data;

    (void)loop;
    (void)revents;
    if (rt->sweep)
        rt->sweep = rt_sweep(rt) > 0;
    if (rt->acq != NULL)
        acquire_pending(rt);
    if (rt->later != NULL)
        rt_jobs_due(rt);
    if (rt->rels != NULL)
        rt_progress_rels(rt);
    if (rt->waiting != NULL)
        rt_retry_held(rt);
    if (rt->sw_since != NULL)
        rt_sweep_copies(rt, 0);
    keel__cluster_rt_store_check(rt->n); /* a backup's commits too */
    leave_tick(rt);
    if (rt->n->stopping)
        keel__node_stop_check(rt->n);
}

int keel__cluster_rt_busy(keel_node *n)
{
    keel_cluster_rt *rt = n->cluster;
    ev_tstamp t;

    if (rt == NULL || !rt->started)
        return 0;
    t = rt_now(rt);
    if (rt->stop_since == 0)
        rt->stop_since = t;
    if (t - rt->stop_since >= STOP_QUIET_MAX_S) {
        if (rt->nheld > 0 || keel__peers_pending(rt->peers) > 0)
            keel_warn("cluster: stopping with %zu held and %zu forwarded "
                      "call(s) unanswered",
                      rt->nheld, keel__peers_pending(rt->peers));
        return 0;
    }
    /* A node that cannot take part (its store failed, say) stops as
     * soon as the calls it forwarded are answered: the others route to
     * it until its session ends with it, so no quiet would come, and its
     * units fail over only once it is gone. */
    if (rt->failure != 0)
        return keel__peers_pending(rt->peers) > 0;
    return rt->nheld > 0 || keel__peers_pending(rt->peers) > 0 ||
           keel__obatch_queued(rt->obatch) > 0 ||
           t - n->last_forward_in < STOP_QUIET_S;
}

/* ----------------------------------------------------------- lifecycle */

static int split_caps(keel_cluster_rt *rt, const char *list)
{
    const char *p = list;

    while (p != NULL && *p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char **v;
        if (len > 0) {
            v = realloc(rt->caps, (rt->ncaps + 1) * sizeof *v);
            if (v == NULL)
                return KEEL_ENOMEM;
            rt->caps = v;
            v[rt->ncaps] = strndup(p, len);
            if (v[rt->ncaps] == NULL)
                return KEEL_ENOMEM;
            rt->ncaps++;
        }
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

static void rt_free(keel_cluster_rt *rt)
{
    size_t i;
    rt_job *j;

    while ((j = rt->acq) != NULL) {
        rt->acq = j->next;
        rt_job_free(j);
    }
    while ((j = rt->later) != NULL) {
        rt->later = j->next;
        rt_job_free(j);
    }
    rt_receipts_free(rt);
    rt_sweep_free(rt);
    for (i = 0; i < rt->ncaps; i++)
        free(rt->caps[i]);
    free(rt->caps);
    keel_batch_destroy(rt->batch);
    pthread_mutex_destroy(&rt->mu);
    free(rt);
}

/* The ZooKeeper session timeout a node asks for (ms). */
static uint32_t session_ms(const keel_node_options *o)
{
    return o->zk_session_timeout_ms ? o->zk_session_timeout_ms : 4000;
}

uint32_t keel__cluster_rt_turn_max_ms(const keel_node *n)
{
    return (uint32_t)keel_lease_hold_max(
        keel_cluster_session_timeout(n->cluster->c));
}

int keel__cluster_rt_create(keel_node *n, char *errbuf, size_t errlen)
{
    const keel_node_options *o = &n->opts;
    keel_cluster_options co;
    keel_cluster_rt *rt;
    keel_coord *coord = NULL;
    char auth[KEEL_ZKAUTH_MAX + 1];
    int rc;

    if (o->cluster == NULL || o->node_id == NULL) {
        snprintf(errbuf, errlen,
                 "cluster mode needs a cluster name and a node id");
        return KEEL_EINVAL;
    }
    _Static_assert(KEEL_MAP_MAX_REPLICAS == KEEL_REPLICAS_MAX,
                   "the map holds the replicas keel.h allows");
    rt = calloc(1, sizeof *rt);
    if (rt == NULL)
        return KEEL_ENOMEM;
    rt->n = n;
    keel_hmap_init(&rt->units);
    pthread_mutex_init(&rt->mu, NULL);
    rt->batch = keel_batch_create();
    if (rt->batch == NULL || split_caps(rt, o->capabilities) != 0) {
        rt_free(rt);
        return KEEL_ENOMEM;
    }
    if (o->advertise != NULL) {
        snprintf(rt->address, sizeof rt->address, "%s", o->advertise);
    } else if (o->listen != NULL) {
        const char *colon = strrchr(o->listen, ':');
        int hl = colon ? (int)(colon - o->listen) : 0;
        if ((hl == 7 && strncmp(o->listen, "0.0.0.0", 7) == 0) || hl == 0) {
            /* Published as is, it would send the other nodes to
             * themselves (0.0.0.0 connects to the local host). */
            snprintf(errbuf, errlen,
                     "listening on every address (%s) needs --advertise "
                     "HOST:PORT: the address other nodes reach this one at",
                     o->listen);
            rt_free(rt);
            return KEEL_EINVAL;
        }
        snprintf(rt->address, sizeof rt->address, "%.*s:%d", hl, o->listen,
                 n->port);
    } else {
        snprintf(errbuf, errlen, "cluster mode needs a listen address");
        rt_free(rt);
        return KEEL_EINVAL;
    }
    /* The address goes to every peer through ZooKeeper: refused here,
     * once, rather than failing each of their connection attempts. */
    if ((o->advertise != NULL && strlen(o->advertise) >= sizeof rt->address) ||
        !keel_addr_valid(rt->address, strlen(rt->address), 0)) {
        snprintf(errbuf, errlen,
                 "%s address '%.64s' is not HOST:PORT (a host name or IPv4 "
                 "address, a port from 1 to 65535)",
                 o->advertise != NULL ? "advertise" : "derived", rt->address);
        rt_free(rt);
        return KEEL_EADDR;
    }
    rt->peers = keel__peers_create(n);
    rt->obatch = rt->peers != NULL ? keel__obatch_create(n, rt->peers) : NULL;
    if (rt->obatch == NULL) {
        keel__peers_destroy(rt->peers);
        rt_free(rt);
        return KEEL_ENOMEM;
    }
    keel_cluster_options_init(&co);
    if (o->zk_auth != NULL) {
        rc = keel_zkauth_load(o->zk_auth, auth, sizeof auth, errbuf, errlen);
        if (rc != 0) {
            keel__peers_destroy(rt->peers);
            keel__obatch_destroy(rt->obatch);
            rt_free(rt);
            return rc;
        }
        co.zk_auth = auth;
    }
    co.zk_hosts = o->zk_hosts;
    co.cluster = o->cluster;
    co.node = o->node_id;
    co.address = rt->address;
    keel_store_id(n->store, rt->store_id);
    co.store_id = rt->store_id;
    co.store_run = keel_store_run(n->store);
    co.store_dir = n->data_dir;
    co.store_stale = keel_store_stale(n->store);
    co.caps = (const char *const *)rt->caps;
    co.ncaps = rt->ncaps;
    co.shard_count = o->shard_count;
    co.replicas = o->replicas;
    co.replicas_default = KEEL_REPLICAS_DEFAULT;
    co.replica_dead_ms = o->replica_dead_ms;
    co.session_timeout_ms = session_ms(o);
    co.hooks.data = rt;
    co.hooks.release = on_release;
    co.hooks.acquire = on_acquire;
    co.hooks.drop = on_drop;
    co.hooks.fenced = on_fenced;
    co.hooks.expired = on_expired;
    co.hooks.map_applied = on_map;
    co.hooks.forgotten = on_forgotten;
    co.hooks.failed = on_failed;
    co.hooks.members = on_members;
    co.hooks.peer_down = on_peer_down;
    co.insecure = o->insecure;
    rc = keel_coord_cluster_create(n->loop, &co, &coord);
    explicit_bzero(auth, sizeof auth); /* the client keeps its own copy */
    if (rc != 0) {
        if (rc == KEEL_EADDR)
            /* The ZooKeeper client resolves every server at once and
             * says no more than that one failed. */
            snprintf(errbuf, errlen,
                     "cannot join cluster %s as %s: cannot use the "
                     "ZooKeeper servers %s (a host name that does not "
                     "resolve, or an address the client refuses)",
                     o->cluster, o->node_id, o->zk_hosts);
        else
            snprintf(errbuf, errlen, "cannot join cluster %s as %s: %s",
                     o->cluster, o->node_id, keel_strerror(rc));
        keel__peers_destroy(rt->peers);
        keel__obatch_destroy(rt->obatch);
        rt_free(rt);
        return rc;
    }
    rt->c = keel_coord_to_cluster(coord);
    keel_coord_destroy(n->coord);
    n->coord = coord;
    n->cluster = rt;
    ev_async_init(&rt->wake, rt_wake_cb);
    rt->wake.data = rt;
    ev_timer_init(&rt->tick, tick_cb, TICK_S, TICK_S);
    rt->tick.data = rt;
    ev_check_init(&rt->lease, lease_cb);
    ev_set_priority(&rt->lease, EV_MAXPRI);
    rt->lease.data = rt;
    keel_info("cluster %s: node %s at %s, zookeeper %s%s", o->cluster,
              o->node_id, rt->address, o->zk_hosts,
              o->zk_auth != NULL ? " (digest credentials, own ACLs)" : "");
    return 0;
}

int keel__cluster_rt_start(keel_node *n)
{
    keel_cluster_rt *rt = n->cluster;
    int rc;

    if (rt == NULL)
        return 0;
    /* Records written before the store kept a type table have types of
     * unknown capability, and their shards cannot move until some node
     * says which capability those types have: this one says it for its
     * own types. */
    for (size_t i = 0; i < n->ntypes; i++) {
        rc = keel_store_type_learn(n->store, n->types[i]->name,
                                   n->types[i]->capability);
        if (rc == KEEL_ETYPECAP)
            keel_error("actor type %s requires capability \"%s\" here, but "
                       "this store holds its records under another one: its "
                       "writes will be refused",
                       n->types[i]->name, n->types[i]->capability);
    }
    rc = keel_writer_start(n->store, rt_writer_done, rt, &rt->writer);
    if (rc != 0)
        return rc;
    ev_async_start(n->loop, &rt->wake);
    ev_timer_start(n->loop, &rt->tick);
    ev_check_start(n->loop, &rt->lease);
    rt->started = 1;
    rt_kick_writer(rt);
    return 0;
}

void keel__cluster_rt_stop(keel_node *n)
{
    keel_cluster_rt *rt = n->cluster;
    rt_job *j;

    if (rt == NULL || !rt->started)
        return;
    rt->started = 0;
    ev_timer_stop(n->loop, &rt->tick);
    ev_check_stop(n->loop, &rt->lease);
    ev_async_stop(n->loop, &rt->wake);
    keel_writer_stop(rt->writer); /* commits what it has, then returns */
    rt->writer = NULL;
    if (rt->busy)
        rt_settle(rt, rt->done ? rt->done_status : KEEL_ESTOPPING, 0);
    while ((j = rt->jobs) != NULL) {
        rt->jobs = j->next;
        if (j->req != NULL)
            rt_peer_answer(n, j->req, KEEL_ESTOPPING);
        rt_job_free(j);
    }
    rt->jobs_tail = NULL;
    /* Streams waiting for the replication writer (rt_jobs_due) were not
     * stored: their senders keep the units. */
    for (j = rt->later; j != NULL; j = j->next)
        if (j->req != NULL) {
            rt_peer_answer(n, j->req, KEEL_ESTOPPING);
            j->req = NULL;
        }
    /* Outbox messages waiting for their batch never left. */
    keel__obatch_stop(rt->obatch, KEEL_ESTOPPING);
    rt_fail_held(rt, KEEL_ESTOPPING);
    /* Forwarded requests that left fail with KEEL_ECONN (they may have
     * run), the others with KEEL_ESTOPPING. */
    keel__peers_destroy(rt->peers);
    rt->peers = NULL;
    keel__obatch_destroy(rt->obatch);
    rt->obatch = NULL;
}

void keel__cluster_rt_destroy(keel_node *n)
{
    keel_cluster_rt *rt = n->cluster;

    if (rt == NULL)
        return;
    keel__cluster_rt_stop(n);
    keel_coord_destroy(n->coord);
    n->coord = NULL;
    rt_fail_held(rt, KEEL_ESTOPPING);
    keel__obatch_stop(rt->obatch, KEEL_ESTOPPING);
    keel__peers_destroy(rt->peers);
    keel__obatch_destroy(rt->obatch);
    rt->obatch = NULL;
    rt_units_free(rt);
    rt_drop_rel(rt, NULL, 0);
    while (rt->rels != NULL) {
        rt_rel *r = rt->rels;
        rt->rels = r->next;
        free(r);
    }
    while (rt->xins != NULL) {
        rt_xin *x = rt->xins;
        rt->xins = x->next;
        free(x->recs);
        free(x);
    }
    n->cluster = NULL;
    rt_free(rt);
}

int keel__cluster_is_member(keel_node *n, const char *name)
{
    keel_cluster_rt *rt = n->cluster;
    char addr[KEEL_ADDR_MAX + 1];

    if (rt == NULL || n->coord == NULL || rt->c == NULL)
        return 0;
    /* KEEL_EADDR: a member, if one nobody can reach. */
    return keel_cluster_member_addr(rt->c, name, addr, sizeof addr) !=
           KEEL_ENOTFOUND;
}

int keel__cluster_member_at(keel_node *n, const char *addr, char *name,
                            size_t cap)
{
    keel_cluster_rt *rt = n->cluster;
    const keel_member *v;
    size_t i, nv = 0;

    if (rt == NULL || n->coord == NULL || rt->c == NULL)
        return KEEL_ENOTFOUND;
    v = keel_cluster_view(rt->c, &nv);
    for (i = 0; v != NULL && i < nv; i++) {
        if (strcmp(v[i].addr, addr) == 0) {
            snprintf(name, cap, "%s", v[i].name);
            return 0;
        }
    }
    return KEEL_ENOTFOUND;
}

uint32_t keel__hold_ms(const keel_node_options *o)
{
    uint32_t t = session_ms(o);

    if (o->hold_timeout_ms != 0)
        return o->hold_timeout_ms;
    return t <= HOLD_MS_DEFAULT / 2 ? HOLD_MS_DEFAULT
           : t > UINT32_MAX / 2     ? UINT32_MAX
                                    : 2 * t;
}

int keel__hold_check(const keel_node_options *o, char *why, size_t len)
{
    uint32_t hold, keep;

    if (o->zk_hosts == NULL)
        return 0; /* nothing is held */
    /* A keyed call held at the edge of the cluster may start as late as
     * the hold bound after it entered; a copy of it sent later may have
     * run and been recorded meanwhile. The record must outlast the held
     * copy, or that copy runs a second time. */
    hold = keel__hold_ms(o);
    keep = o->request_key_retention_ms != 0 ? o->request_key_retention_ms
                                            : KEEL_DEDUP_RETENTION_MS;
    if (hold <= keep)
        return 0;
    snprintf(why, len,
             "the hold bound (hold_timeout_ms, --hold-timeout: %u ms) is "
             "longer than the request-key retention "
             "(request_key_retention_ms, --request-key-retention-ms: %u "
             "ms): a keyed call held that long could start after its key "
             "is forgotten and run twice; lower the one or raise the other",
             hold, keep);
    return KEEL_EINVAL;
}
