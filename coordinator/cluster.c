/* Cluster mode: the node's coordination agent (see cluster.h): its
 * session, joining, the lease, the units it holds and the map it applies.
 * Its published state is in cluster_state.c, replication's side of the
 * map in cluster_repl.c, graceful leave and forget in cluster_leave.c;
 * what they share is in cluster_int.h. */
#include "coordinator/cluster.h"

#include <ev.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "coordinator/bootstrap.h"
#include "coordinator/cluster_int.h"
#include "coordinator/storecheck.h"
#include "coordinator/controller.h"
#include "coordinator/election.h"
#include "coordinator/layout.h"
#include "coordinator/lease.h"
#include "coordinator/membership.h"
#include "coordinator/nodestate.h"
#include "coordinator/shardmap.h"
#include "keel.h"

#define DEFAULT_SESSION_TIMEOUT_MS 10000

static void connecting(keel_cluster *c);

/* The agent's clock, read afresh (ev_now() follows the wall clock, which
 * may be stepped). CLOCK_BOOTTIME keeps counting while the machine (or
 * the VM) is suspended, as the servers' clocks do: a node resumed after a
 * suspension must find its lease lapsed, which CLOCK_MONOTONIC, stopped
 * meanwhile, would hide. Kernels without it (before 2.6.39) get the
 * monotonic clock. Without a loop, the time given to keel_cluster_tick(). */
uint64_t keel__cluster_now_ms(keel_cluster *c)
{
    if (c->loop != NULL) {
        static int no_boottime;
        struct timespec ts;
        if (no_boottime || clock_gettime(CLOCK_BOOTTIME, &ts) != 0) {
            no_boottime = 1;
            clock_gettime(CLOCK_MONOTONIC, &ts);
        }
        c->now = (uint64_t)ts.tv_sec * 1000u +
                 (uint64_t)ts.tv_nsec / 1000000u;
    }
    return c->now;
}

static uint64_t clock_ms(void *arg)
{
    return keel__cluster_now_ms(arg);
}

/* The controller's hint (keel_controller_options.peer_down). */
static int peer_down(const char *name, void *arg)
{
    keel_cluster *c = arg;

    return c->hooks.peer_down != NULL &&
           c->hooks.peer_down(c, name, c->hooks.data);
}

static void fenced_changed(keel_cluster *c)
{
    const keel_selffence *f = &c->lease.fence;

    if (!f->fenced)
        keel_info("cluster: node %s serving", c->node);
    else if (f->expired)
        keel_info("cluster: node %s fenced: stops serving (no session)",
                  c->node);
    else if (f->lease_until == 0)
        keel_info("cluster: node %s fenced: stops serving (no lease yet)",
                  c->node);
    else if (!keel_selffence_lapsed(f, c->now))
        keel_warn("cluster: node %s fenced: stops serving (disconnected "
                  "from ZooKeeper)",
                  c->node);
    else
        keel_warn("cluster: node %s fenced: stops serving (lease lapsed "
                  "%lld ms ago: no heartbeat answered in time%s)",
                  c->node, (long long)(c->now - f->lease_until),
                  f->connected ? "" : "; disconnected from ZooKeeper");
    if (c->hooks.fenced != NULL)
        c->hooks.fenced(c, f->fenced, c->hooks.data);
}

/* ------------------------------------------------------------ the lease */

static void lease_answered(keel_lease *l, int flipped, void *arg)
{
    keel_cluster *c = arg;

    (void)l;
    keel__cluster_now_ms(c);
    if (flipped)
        fenced_changed(c);
    keel__cluster_schedule(c);
}

int keel_cluster_check_lease(keel_cluster *c)
{
    int flipped, fenced =
        keel_lease_check(&c->lease, keel__cluster_now_ms(c), &flipped);

    if (flipped) {
        fenced_changed(c);
        keel__cluster_schedule(c);
    }
    return fenced;
}

static void set_failed(keel_cluster *c, int rc)
{
    keel_error("cluster: node %s cannot take part: %s", c->node,
               keel_strerror(rc));
    c->phase = KEEL_CLUSTER_FAILED;
    c->error = rc;
    if (c->hooks.failed != NULL)
        c->hooks.failed(c, rc, c->hooks.data);
}

/* ---------------------------------------------------------- local units */

local_cap *keel__cluster_lcap(keel_cluster *c, const char *name, int create)
{
    local_cap *v;
    size_t i;

    for (i = 0; i < c->nlcaps; i++)
        if (strcmp(c->lcaps[i].name, name) == 0)
            return &c->lcaps[i];
    if (!create)
        return NULL;
    v = realloc(c->lcaps, (c->nlcaps + 1) * sizeof *v);
    if (v == NULL)
        return NULL;
    /* cap_of points into the old array: rebuilt by the caller */
    c->lcaps = v;
    v[c->nlcaps].units = calloc(c->shard_count, sizeof(local_unit));
    if (v[c->nlcaps].units == NULL)
        return NULL;
    snprintf(v[c->nlcaps].name, sizeof v[c->nlcaps].name, "%s", name);
    return &v[c->nlcaps++];
}

static int name_id(keel_cluster *c, const char *name)
{
    char **v;
    size_t i;

    for (i = 0; i < c->nnames; i++)
        if (strcmp(c->names[i], name) == 0)
            return (int)i;
    if (c->nnames >= 0xFFFF)
        return -1;
    v = realloc(c->names, (c->nnames + 1) * sizeof *v);
    if (v == NULL)
        return -1;
    c->names = v;
    if ((v[c->nnames] = strdup(name)) == NULL)
        return -1;
    return (int)c->nnames++;
}

static void drop_all(keel_cluster *c)
{
    size_t i;

    for (i = 0; i < c->nlcaps; i++)
        memset(c->lcaps[i].units, 0, c->shard_count * sizeof(local_unit));
}

uint64_t keel_cluster_write_epoch(keel_cluster *c, const char *cap,
                                  uint32_t shard)
{
    const local_cap *lc = keel__cluster_lcap(c, cap, 0);
    const local_unit *lu;

    if (lc == NULL || shard >= c->shard_count)
        return 0;
    lu = &lc->units[shard];
    /* Held: serving, or handing over (its last writes go out first). */
    return lu->phase == U_PRIMARY || lu->phase == U_RELEASING ? lu->epoch : 0;
}

/* ------------------------------------------------------------ placement */

static void compute_live(keel_cluster *c)
{
    uint32_t i;

    if (!c->have_map)
        return;
    for (i = 0; i < c->map.nnodes; i++)
        c->live[i] = keel_membership_find(&c->members, c->map.nodes[i]) != NULL;
}

void keel_cluster_placement(keel_cluster *c, const char *cap, uint32_t shard,
                            keel_placement *out)
{
    const keel_map_unit *u;
    int ci;

    out->state = KEEL_PLACEMENT_UNAVAILABLE;
    out->epoch = 0;
    /* A map applied in an earlier session routes nothing: it may be
     * older than what happened while this node was cut off (its units
     * failed over or given up, moves called off), and the live flags
     * were those of that session's view. Messages wait for a map read
     * in this session, or their deadline. */
    if (!c->have_map || !c->map_this_session || shard >= c->map.shard_count)
        return;
    ci = keel_map_cap_index(&c->map, cap);
    if (ci < 0)
        return;
    u = keel_map_unit_at(&c->map, (uint32_t)ci, shard);
    if (u->nreplicas == 0)
        return;
    out->epoch = u->shard_epoch;
    if (u->replicas[0] == c->my_idx) {
        const local_cap *lc = c->cap_of[ci];
        const local_unit *lu = lc != NULL ? &lc->units[shard] : NULL;
        /* A unit of a capability this node no longer declares (it was
         * restarted without it) is not served here, whatever the map
         * says: the controller moves it to a node that declares it, and
         * until one does, it is unavailable, as a unit that was never
         * placed is. The node still holds it for that move. */
        if (!c->lease.fence.fenced && lu != NULL && lu->phase == U_PRIMARY &&
            lu->epoch == u->shard_epoch && u->target == KEEL_MAP_NO_NODE &&
            lu->announce <= c->state_landed &&
            keel_caps_declare(c->caps, c->ncaps, cap))
            out->state = KEEL_PLACEMENT_LOCAL;
        return;
    }
    if (!c->live[u->replicas[0]])
        return;
    if (cap != NULL && cap[0] != '\0') {
        /* An owner that no longer declares the capability does not
         * serve the unit (above): calls wait here, not on it. */
        const keel_member *m = keel_membership_find(
            &c->members, c->map.nodes[u->replicas[0]]);
        if (m == NULL || !keel_caps_declare(m->caps, m->ncaps, cap))
            return;
    }
    out->state = KEEL_PLACEMENT_REMOTE;
}

int keel_cluster_owner(keel_cluster *c, const char *cap, uint32_t shard,
                       char *name, size_t name_cap, char *addr,
                       size_t addr_cap)
{
    const keel_map_unit *u;
    const keel_member *m;
    int ci;

    if (!c->have_map || !c->map_this_session ||
        shard >= c->map.shard_count ||
        (ci = keel_map_cap_index(&c->map, cap)) < 0)
        return KEEL_EUNAVAIL; /* no map of this session: as placement */
    u = keel_map_unit_at(&c->map, (uint32_t)ci, shard);
    if (u->nreplicas == 0)
        return KEEL_EUNAVAIL;
    m = keel_membership_find(&c->members, c->map.nodes[u->replicas[0]]);
    if (m == NULL || m->addr_bad)
        return KEEL_EUNAVAIL; /* gone, or unreachable */
    if (name != NULL && name_cap > 0)
        snprintf(name, name_cap, "%s", m->name);
    if (addr != NULL && addr_cap > 0)
        snprintf(addr, addr_cap, "%s", m->addr);
    return 0;
}

int keel_cluster_member_addr(keel_cluster *c, const char *name, char *addr,
                             size_t addr_cap)
{
    const keel_member *m = keel_membership_find(&c->members, name);

    if (m == NULL)
        return KEEL_ENOTFOUND;
    if (m->addr_bad)
        return KEEL_EADDR;
    if (addr != NULL && addr_cap > 0)
        snprintf(addr, addr_cap, "%s", m->addr);
    return 0;
}

/* -------------------------------------------------------- map handling */

static void release_done(keel_cluster *c, local_cap *lc, uint32_t shard);

/* Unit u of the map being applied makes this node its primary. If that
 * map promoted it here with fallbacks, the unit serves only once a state
 * write issued from now on (after this map was applied: the one
 * keel__cluster_apply_map() issues at its end, normally) has landed,
 * which tells the controller it may have served (reconcile.c,
 * failover()). Any such write does: the controller stands a fallback in
 * only while the state's mzxid is the one it read before the promotion,
 * so the failover waits for no state write the acquire did not already
 * overlap. */
static void start_acquire(keel_cluster *c, local_cap *lc, uint32_t shard,
                          const keel_map_unit *u)
{
    local_unit *lu = &lc->units[shard];

    lu->phase = U_ACQUIRING;
    lu->epoch = u->shard_epoch;
    lu->release_wanted = 0;
    lu->announce = u->promoted && u->fallback != 0 ? c->state_sent + 1 : 0;
    if (c->hooks.acquire != NULL) {
        c->hooks.acquire(c, lc->name, shard, lu->epoch, c->hooks.data);
        return;
    }
    lu->phase = U_PRIMARY; /* nothing held here: no fence to record */
}

static void start_release(keel_cluster *c, local_cap *lc, uint32_t shard,
                          const char *to)
{
    local_unit *lu = &lc->units[shard];
    int id = name_id(c, to);

    if (id < 0)
        return; /* out of memory: retried with the next map */
    lu->to = (uint16_t)id;
    lu->calling_off = 0;
    if (lu->phase == U_ACQUIRING) {
        lu->release_wanted = 1;
        return;
    }
    if (lu->phase == U_NONE && c->hooks.release == NULL) {
        /* Nothing is held here without hooks: release at once. The epoch
         * is the map's (set by the caller). */
        lu->phase = U_RELEASED;
        return;
    }
    /* Not acquired in this incarnation, or not yet seen acquired (a map
     * in between was never read), the store may still hold the unit:
     * received by a handoff whose map was skipped, or written before a
     * restart in the middle of this move. The release hook sends what
     * there is, or finds the unit handed off already. */
    lu->phase = U_RELEASING;
    if (c->hooks.release != NULL) {
        c->hooks.release(c, lc->name, shard, lu->epoch, to, c->hooks.data);
        return;
    }
    release_done(c, lc, shard);
}

static void release_done(keel_cluster *c, local_cap *lc, uint32_t shard)
{
    local_unit *lu = &lc->units[shard];

    (void)c;
    lu->phase = U_RELEASED;
    lu->release_wanted = 0;
    lu->calling_off = 0;
}

/* The map changed course while the unit is being released at the map's
 * epoch: tell the hook (a new destination, or to == NULL: called off).
 * The runtime honours it only if no recipient has stored the unit yet;
 * otherwise the release ends in released() naming that recipient. */
static void redirect_release(keel_cluster *c, local_cap *lc, uint32_t shard,
                             const char *to)
{
    local_unit *lu = &lc->units[shard];

    if (to == NULL) {
        if (lu->calling_off)
            return;
        lu->calling_off = 1;
    } else {
        int id = name_id(c, to);
        if (id < 0)
            return; /* out of memory: retried with the next map */
        if (!lu->calling_off && lu->to == (uint16_t)id)
            return;
        lu->to = (uint16_t)id;
        lu->calling_off = 0;
    }
    if (c->hooks.release != NULL) {
        c->hooks.release(c, lc->name, shard, lu->epoch, to, c->hooks.data);
        return;
    }
    if (to == NULL) {
        /* Nothing held here without hooks: the unit is simply ours. */
        lu->phase = U_PRIMARY;
        lu->calling_off = 0;
    }
}

int keel__cluster_store_elsewhere(const keel_cluster *c)
{
    const char *recorded;

    if (!c->have_map || c->my_idx < 0 || c->members.store[0] == '\0')
        return 0;
    recorded = c->map.store_ids[c->my_idx];
    return recorded[0] != '\0' && strcmp(recorded, c->members.store) != 0;
}

/* Brings one unit's local phase in line with the map. Returns 1 when the
 * map makes this node the unit's primary but it runs on another store
 * than the map records (nothing is done for the unit), else 0. */
static int apply_unit(keel_cluster *c, local_cap *lc, const keel_map_unit *u,
                      uint32_t shard)
{
    local_unit *lu = &lc->units[shard];
    int mine = u->nreplicas > 0 && u->replicas[0] == c->my_idx;

    if (mine && lu->phase == U_NONE && keel__cluster_store_elsewhere(c)) {
        /* The map credits this node with the unit's data on the store
         * it recorded, which is not this one: a promotion decided before
         * the controller saw the store change. Acquiring would serve the
         * unit from nothing, releasing would hand nothing over. The
         * controller gives the unit to an in-sync backup once it sees
         * the change; until then, or if there is none, it waits. */
        return 1;
    }

    if (mine && lu->phase == U_RELEASING && lu->epoch != u->shard_epoch) {
        /* Ours again at another epoch: the unit left and came back in
         * maps this node skipped. What the release was about is over. */
        keel_warn("cluster: %s lost %s/%u at epoch %llu while handing it "
                  "off",
                  c->node, keel_cap_name(lc->name), shard,
                  (unsigned long long)lu->epoch);
        if (c->hooks.drop != NULL)
            c->hooks.drop(c, lc->name, shard, c->hooks.data);
        lu->phase = U_NONE;
        lu->calling_off = 0;
    }
    if (mine) {
        if (lu->phase == U_RELEASED && lu->epoch == u->shard_epoch)
            return 0; /* handed over at this epoch: the controller gives
                       * it to the recipient, whatever the target says */
        if (u->target != KEEL_MAP_NO_NODE) {
            const char *to = c->map.nodes[u->target];
            if (lu->phase == U_RELEASING) {
                redirect_release(c, lc, shard, to);
                return 0;
            }
            if (lu->phase == U_RELEASED)
                lu->phase = U_NONE; /* an older move's: holds nothing */
            if (lu->phase != U_ACQUIRING)
                lu->epoch = u->shard_epoch; /* the epoch the release is at */
            start_release(c, lc, shard, to);
        } else if (lu->phase == U_RELEASING) {
            redirect_release(c, lc, shard, NULL); /* the move is off */
        } else if ((lu->phase == U_PRIMARY || lu->phase == U_ACQUIRING) &&
                   lu->epoch == u->shard_epoch) {
            /* A move that was due once the acquire is done is off. */
            lu->release_wanted = 0;
        } else {
            start_acquire(c, lc, shard, u);
        }
    } else {
        if (lu->phase == U_PRIMARY || lu->phase == U_ACQUIRING ||
            lu->phase == U_RELEASING) {
            /* Lost without a handoff (presumed dead meanwhile). */
            keel_warn("cluster: %s lost %s/%u without handing it off",
                      c->node, keel_cap_name(lc->name), shard);
            if (c->hooks.drop != NULL)
                c->hooks.drop(c, lc->name, shard, c->hooks.data);
            lu->phase = U_NONE;
        } else if (lu->phase == U_RELEASED &&
                   u->shard_epoch > lu->epoch) {
            lu->phase = U_NONE; /* the move is complete */
        }
    }
    return 0;
}

void keel__cluster_apply_map(keel_cluster *c)
{
    uint32_t ci, s;
    size_t i, refused = 0;
    uint8_t *live;
    local_cap **cap_of;

    c->my_idx = keel_map_node_index(&c->map, c->node);
    live = calloc(c->map.nnodes ? c->map.nnodes : 1, 1);
    cap_of = calloc(c->map.ncaps ? c->map.ncaps : 1, sizeof *cap_of);
    if (live == NULL || cap_of == NULL) {
        free(live);
        free(cap_of);
        keel_error("cluster: out of memory applying map %llu",
                   (unsigned long long)c->map.map_epoch);
        c->have_map = 0;
        return;
    }
    free(c->live);
    free(c->cap_of);
    c->live = live;
    c->cap_of = cap_of;
    /* Create every capability first: keel__cluster_lcap() may move the
     * array. */
    for (ci = 0; ci < c->map.ncaps; ci++)
        keel__cluster_lcap(c, c->map.caps[ci], 1);
    for (ci = 0; ci < c->map.ncaps; ci++)
        c->cap_of[ci] = keel__cluster_lcap(c, c->map.caps[ci], 0);
    compute_live(c);
    keel__cluster_prune_drops(c);
    keel__cluster_prune_adds(c);
    for (ci = 0; ci < c->map.ncaps; ci++) {
        local_cap *lc = c->cap_of[ci];
        if (lc == NULL)
            continue;
        for (s = 0; s < c->map.shard_count; s++)
            refused += (size_t)apply_unit(c, lc,
                                          keel_map_unit_at(&c->map, ci, s), s);
    }
    if (refused > 0)
        keel_warn("cluster: map %llu makes %s primary of %zu unit(s) on "
                  "store %s, but it runs on store %s: it serves none of "
                  "them until the controller records its store",
                  (unsigned long long)c->map.map_epoch, c->node, refused,
                  c->map.store_ids[c->my_idx], c->members.store);
    /* Capabilities the map no longer has: we cannot hold them. */
    for (i = 0; i < c->nlcaps; i++)
        if (keel_map_cap_index(&c->map, c->lcaps[i].name) < 0)
            for (s = 0; s < c->shard_count; s++)
                if (c->lcaps[i].units[s].phase != U_NONE) {
                    if (c->hooks.drop != NULL)
                        c->hooks.drop(c, c->lcaps[i].name, s, c->hooks.data);
                    c->lcaps[i].units[s].phase = U_NONE;
                }
    keel_debug("cluster: %s applied map %llu", c->node,
               (unsigned long long)c->map.map_epoch);
    /* Before the hook: placement answers from this map from now on. */
    c->map_this_session = 1;
    /* The held add requests go with this write (the controller read the
     * batch before). */
    c->adds_out = 0;
    c->adds_hold_ms = 0;
    keel__cluster_publish(c); /* the applied map_epoch changed in any case */
    if (c->hooks.map_applied != NULL)
        c->hooks.map_applied(c, c->map.map_epoch, c->hooks.data);
    if (c->rejoin == R_PURGE)
        keel__cluster_rejoin_purge(c);
}

static void map_watch(keel_zk *zk, int event, const char *path, void *arg);

static void map_got(keel_zk *zk, int rc, const void *data, size_t len,
                    const keel_zk_stat *st, void *arg)
{
    keel_cluster *c = arg;
    keel_shard_map m;

    (void)zk;
    (void)st;
    c->map_busy = 0;
    if (rc == KEEL_ECONNLOSS) {
        c->map_stalled = 1;
        return;
    }
    if (rc == KEEL_ENOTFOUND || rc == KEEL_ESESSION)
        return; /* the watch tells us when it appears */
    if (rc != 0) {
        keel_error("cluster: cannot read the map: %s", keel_strerror(rc));
        return;
    }
    if ((rc = keel_map_decode(data, len, &m)) != 0) {
        keel_error("cluster: the map is unreadable (%s); keeping map %llu",
                   keel_strerror(rc), (unsigned long long)c->map.map_epoch);
    } else if (m.shard_count != c->shard_count) {
        keel_map_free(&m);
        set_failed(c, KEEL_ECONFIG);
    } else if (c->have_map && m.map_epoch < c->map.map_epoch) {
        keel_map_free(&m); /* older than what we applied */
    } else {
        keel_map_free(&c->map);
        c->map = m;
        c->have_map = 1;
        keel__cluster_apply_map(c);
    }
    if (c->map_dirty) {
        c->map_dirty = 0;
        if ((rc = keel__cluster_map_read(c)) != 0)
            keel_error("cluster: cannot read the map: %s", keel_strerror(rc));
    }
    /* a settle read that failed is tried again */
    keel__cluster_settle_kick(c);
}

static void map_checked(keel_zk *zk, int rc, const keel_zk_stat *st,
                        void *arg)
{
    keel_cluster *c = arg;
    char path[KEEL_ZK_PATH_MAX];

    (void)st;
    c->map_busy = 0;
    if (rc == KEEL_ECONNLOSS) {
        c->map_stalled = 1;
        return;
    }
    if (rc != 0)
        return; /* absent: the watch fires on creation */
    keel_layout_path(&c->layout, path, "map", NULL, NULL);
    if (keel_zk_get(zk, path, NULL, NULL, map_got, c) == 0)
        c->map_busy = 1;
}

/* exists() with a watch (it also fires on creation), then get(). */
int keel__cluster_map_read(keel_cluster *c)
{
    char path[KEEL_ZK_PATH_MAX];
    int rc;

    keel_layout_path(&c->layout, path, "map", NULL, NULL);
    rc = keel_zk_exists(c->zk, path, map_watch, c, map_checked, c);
    if (rc == 0)
        c->map_busy = 1;
    return rc;
}

static void map_watch(keel_zk *zk, int event, const char *path, void *arg)
{
    keel_cluster *c = arg;

    (void)zk;
    (void)event;
    (void)path;
    keel__cluster_now_ms(c);
    if (c->map_busy || c->map_stalled) {
        c->map_dirty = 1;
        return;
    }
    if (keel__cluster_map_read(c) != 0)
        c->map_dirty = 1;
}

/* --------------------------------------------------------------- setup */

static void setup_step(keel_cluster *c);

static void setup_created(keel_zk *zk, int rc, const char *path,
                          const keel_zk_stat *st, void *arg)
{
    keel_cluster *c = arg;

    (void)zk;
    (void)path;
    (void)st;
    c->setup_busy = 0;
    if (rc == KEEL_ECONNLOSS) {
        c->setup_stalled = 1;
        return;
    }
    if (rc != 0 && rc != KEEL_EEXIST) {
        if (rc != KEEL_ESESSION)
            keel_error("cluster: cannot create the node znodes of %s: %s",
                       c->node, keel_strerror(rc));
        return;
    }
    c->setup++;
    setup_step(c);
}

static void setup_step(keel_cluster *c)
{
    char path[KEEL_ZK_PATH_MAX];
    int rc;

    if (c->setup == SETUP_NODE) {
        keel_layout_path(&c->layout, path, "nodes", c->node, NULL);
        rc = keel_zk_create(c->zk, path, NULL, 0, 0, setup_created, c);
    } else if (c->setup == SETUP_STATE) {
        keel_layout_path(&c->layout, path, "nodes", c->node, "state");
        rc = keel_zk_create(c->zk, path, NULL, 0, 0, setup_created, c);
    } else {
        /* Everything exists: what we hold (nothing yet, in a new
         * incarnation) replaces what a previous one left. */
        keel__cluster_publish(c);
        return;
    }
    if (rc == 0)
        c->setup_busy = 1;
}

/* -------------------------------------------------------------- events */

static void election_cb(keel_election *e, int rc, void *arg)
{
    keel_cluster *c = arg;

    keel__cluster_now_ms(c);
    if (rc != 0) {
        if (rc != KEEL_ESESSION)
            keel_error("cluster: election failed: %s", keel_strerror(rc));
        return;
    }
    rc = keel_controller_start(&c->ctl, e->path, c->now);
    if (rc != 0 && rc != KEEL_ESESSION)
        keel_error("cluster: controller cannot start: %s", keel_strerror(rc));
    keel__cluster_schedule(c);
}

/* ------------------------------------------- who leads (introspection) */

static int leader_list(keel_cluster *c);

static void leader_listed(keel_zk *zk, int rc, size_t count,
                          const char *const *names, void *arg)
{
    keel_cluster *c = arg;
    int64_t best = -1, session = 0;
    size_t i;

    (void)zk;
    c->lead_busy = 0;
    if (rc == KEEL_ECONNLOSS) {
        c->lead_stalled = 1;
        return;
    }
    if (rc != 0)
        return; /* the session is gone: expired() starts over */
    for (i = 0; i < count; i++) {
        int64_t seq = keel_election_seq(names[i]);
        unsigned long long id;

        if (seq < 0 || (best >= 0 && seq >= best))
            continue;
        /* "n_<16 hex>_<10 digits>": keel_election_seq checked the shape. */
        if (sscanf(names[i] + 2, "%16llx", &id) != 1)
            continue;
        best = seq;
        session = (int64_t)id;
    }
    c->leader_session = session;
    if (c->lead_dirty) {
        c->lead_dirty = 0;
        if (leader_list(c) != 0)
            c->lead_dirty = 1;
    }
}

static void leader_watch(keel_zk *zk, int event, const char *path, void *arg)
{
    keel_cluster *c = arg;

    (void)zk;
    (void)event;
    (void)path;
    if (c->lead_busy || c->lead_stalled) {
        c->lead_dirty = 1;
        return;
    }
    if (leader_list(c) != 0)
        c->lead_dirty = 1;
}

static int leader_list(keel_cluster *c)
{
    char path[KEEL_ZK_PATH_MAX];
    int rc;

    keel_layout_path(&c->layout, path, "election", NULL, NULL);
    rc = keel_zk_children(c->zk, path, leader_watch, c, leader_listed, c);
    if (rc == 0) {
        c->lead_busy = 1;
        c->lead_started = 1;
    }
    return rc;
}

static void controller_cb(keel_controller *ctl, int event, void *arg)
{
    keel_cluster *c = arg;

    if (event == KEEL_CONTROLLER_MEMBERS_BEHIND)
        keel_membership_refresh(&c->members);
    else if (event == KEEL_CONTROLLER_DEPOSED)
        keel_warn("cluster: %s is no longer the controller", c->node);
    else if (event == KEEL_CONTROLLER_FAILED && ctl->error != KEEL_ESESSION)
        keel_error("cluster: controller on %s failed: %s", c->node,
                   keel_strerror(ctl->error));
    keel__cluster_schedule(c);
}

static void membership_cb(keel_membership *m, int event, void *arg)
{
    keel_cluster *c = arg;
    int rc;

    keel__cluster_now_ms(c);
    switch (event) {
    case KEEL_MEMBERSHIP_JOINED:
        keel_info("cluster: %s joined as incarnation %llu", c->node,
                  (unsigned long long)m->incarnation);
        c->phase = KEEL_CLUSTER_RUNNING;
        c->joining = 0;
        if (keel_lease_rejoined(&c->lease, c->now))
            fenced_changed(c);
        c->setup = SETUP_NODE;
        setup_step(c);
        c->rejoin = R_CHECK;
        c->rejoin_busy = c->rejoin_stalled = 0;
        if ((rc = keel__cluster_rejoin_step(c)) != 0 && rc != KEEL_ESESSION)
            keel_error("cluster: %s cannot check forgotten/: %s", c->node,
                       keel_strerror(rc));
        /* The map is read once the first state write completed
         * (state_written). */
        if ((rc = keel_membership_watch(m)) != 0 ||
            (rc = keel_election_start(&c->election)) != 0 ||
            (rc = leader_list(c)) != 0)
            if (rc != KEEL_ESESSION)
                keel_error("cluster: %s cannot start: %s", c->node,
                           keel_strerror(rc));
        break;
    case KEEL_MEMBERSHIP_CHANGED:
        compute_live(c);
        keel_controller_members_changed(&c->ctl, c->now);
        if (c->hooks.members != NULL)
            c->hooks.members(c, c->hooks.data);
        break;
    case KEEL_MEMBERSHIP_FAILED:
        if (m->error != KEEL_ESESSION)
            keel_error("cluster: membership of %s failed: %s", c->node,
                       keel_strerror(m->error));
        break;
    }
    keel__cluster_schedule(c);
}

static void bootstrap_cb(keel_bootstrap *b, int rc, uint32_t found, void *arg)
{
    keel_cluster *c = arg;

    (void)found;
    if (rc != 0) {
        if (rc != KEEL_ESESSION)
            set_failed(c, rc);
        return;
    }
    /* The config is the cluster's word on the replica count. */
    c->replicas = b->cluster_replicas > 0 ? b->cluster_replicas : 1;
    keel_controller_set_replicas(&c->ctl, c->replicas);
    rc = keel_storecheck_start(&c->store_check);
    if (rc != 0 && rc != KEEL_ESESSION)
        set_failed(c, rc);
}

static void storecheck_cb(keel_storecheck *sc, int rc, void *arg)
{
    keel_cluster *c = arg;

    /* A check of an earlier session, or one that lost a race with a
     * newer one: only a node still before joining acts on it. */
    if (c->phase != KEEL_CLUSTER_BOOTSTRAP)
        return;

    if (rc == KEEL_EMISMATCH && sc->stale) {
        /* An older copy of the node's directory: waiting changes nothing.
         * The node stops (hooks.failed) and marks its store
         * (runtime/cluster_rt.c, on_failed), so that no later start on
         * it passes either. */
        char seen[256];
        if (sc->marked != 0)
            snprintf(seen, sizeof seen,
                     "now at run %llu) was found at run %llu to be",
                     (unsigned long long)sc->run,
                     (unsigned long long)sc->marked);
        else
            snprintf(seen, sizeof seen,
                     "started now as run %llu of its store, while the "
                     "cluster saw that store reach run %llu already: "
                     "each start counts one run, so this directory "
                     "missed at least one start) is",
                     (unsigned long long)sc->run,
                     (unsigned long long)sc->found_run);
        keel_error(
            "cluster: node %s refuses to join: its data directory%s%s "
            "(store %s, %s an older copy of the directory the node served "
            "from (a restored backup?), and may lack writes the cluster "
            "acknowledged. Start the node on its newest data directory, or "
            "start it on this one with --new-store-id "
            "(keel_node_options.new_store_id): it then joins as a node on "
            "a new disk, out of sync, and its replicated units catch up "
            "from their primaries (units it held alone are refused until "
            "`keel node forget %s`). docs/operations.md, \"Backups\".",
            c->node, c->store_dir != NULL ? " " : "",
            c->store_dir != NULL ? c->store_dir : "", sc->store, seen,
            c->node);
        set_failed(c, KEEL_EMISMATCH);
        return;
    }
    if (rc == KEEL_EMISMATCH) {
        if (c->error != KEEL_EMISMATCH)
            keel_error(
                "cluster: node %s refuses to join: its data directory (store "
                "%s) is not the one node %s served from (store %s), and the "
                "cluster still gives it %zu unit(s) whose data is therefore "
                "not here. If node %s is running elsewhere (`keel nodes` on "
                "a member lists it), this process has the wrong --node-id: "
                "stop it. Otherwise start it on its own data directory, or "
                "accept the loss of that data with `keel node forget %s` on "
                "another node (refused while a node %s is a member), after "
                "which it joins by itself. Checking again every %d s.",
                c->node, sc->store, c->node, sc->found, sc->units, c->node,
                c->node, c->node, KEEL_STORECHECK_RETRY_MS / 1000);
        c->error = KEEL_EMISMATCH;
        keel_storecheck_retry_later(sc, keel__cluster_now_ms(c));
        keel__cluster_schedule(c);
        return;
    }
    if (rc != 0) {
        if (rc != KEEL_ESESSION)
            set_failed(c, rc);
        return;
    }
    if (c->error == KEEL_EMISMATCH) {
        keel_info("cluster: node %s: its store may serve now", c->node);
        c->error = 0;
    }
    c->phase = KEEL_CLUSTER_JOINING;
    rc = keel_membership_join(&c->members, c->address,
                              (const char *const *)c->caps, c->ncaps);
    if (rc != 0 && rc != KEEL_ESESSION)
        set_failed(c, rc);
}

static void resume_all(keel_cluster *c)
{
    keel_bootstrap_resume(&c->boot);
    keel_storecheck_resume(&c->store_check);
    keel_membership_resume(&c->members);
    keel_election_resume(&c->election);
    keel_controller_resume(&c->ctl);
    if (c->map_stalled) {
        c->map_stalled = 0;
        if (keel__cluster_map_read(c) != 0)
            c->map_dirty = 1;
    }
    if (c->lead_stalled || (c->lead_started && c->lead_dirty &&
                            !c->lead_busy)) {
        c->lead_stalled = 0;
        c->lead_dirty = 0;
        if (leader_list(c) != 0)
            c->lead_dirty = 1;
    }
    if (c->setup_stalled) {
        c->setup_stalled = 0;
        setup_step(c);
    }
    if (c->state_stalled) {
        c->state_stalled = 0;
        keel__cluster_publish(c);
    }
    if (c->settle_stalled) {
        c->settle_stalled = 0;
        keel__cluster_settle_kick(c);
    }
    if (c->rejoin_stalled && !c->rejoin_busy) {
        c->rejoin_stalled = 0;
        if (keel__cluster_rejoin_step(c) != 0)
            c->rejoin_stalled = 1;
    }
}

static void session_cb(keel_zk *zk, int event, void *arg);

/* Drops everything this session held and connects anew. */
static void start_over(keel_cluster *c)
{
    int rc;

    c->session_gen++; /* before the hooks: replies check it */
    if (keel_lease_expired(&c->lease))
        fenced_changed(c);
    drop_all(c);
    c->ndrops = 0; /* the units they were about are dropped */
    c->nadds = 0;
    c->adds_out = c->adds_held = 0;
    c->adds_hold_ms = 0;
    c->settle_busy = c->settle_stalled = 0;
    if (c->hooks.expired != NULL)
        c->hooks.expired(c, c->hooks.data);
    keel_controller_stop(&c->ctl);
    keel_membership_reset(&c->members);
    keel_election_reset(&c->election);
    c->map_busy = c->map_stalled = c->map_dirty = 0;
    c->map_started = 0;
    c->lead_busy = c->lead_stalled = c->lead_dirty = c->lead_started = 0;
    c->leader_session = 0;
    c->setup = SETUP_NONE;
    c->setup_busy = c->setup_stalled = 0;
    c->state_busy = c->state_stalled = c->state_dirty = 0;
    c->state_missing = 0;
    c->rejoin = R_NONE;
    c->rejoin_busy = c->rejoin_stalled = 0;
    c->forget_busy = 0;
    c->map_this_session = 0;
    keel_storecheck_cancel(&c->store_check); /* the new session checks */
    c->phase = KEEL_CLUSTER_CONNECTING;
    c->joining = 0;
    keel__cluster_now_ms(c);
    connecting(c);
    rc = keel_zk_connect(c->zk, (int)c->timeout_ms, session_cb, c);
    if (rc != 0)
        set_failed(c, rc);
    else
        keel__cluster_schedule(c);
}

static void expired(keel_cluster *c)
{
    keel_warn("cluster: session of %s expired; dropping everything and "
              "rejoining",
              c->node);
    start_over(c);
}

/* How long a node connected to ZooKeeper may take to join: reading the
 * cluster's config, checking its store and creating its member znode are
 * a few requests each; waiting out a previous incarnation's session takes
 * at most about its timeout. */
static uint64_t join_bound(const keel_cluster *c)
{
    uint64_t b = 3 * (uint64_t)c->timeout_ms + 10000;

    return b > 30000 ? b : 30000;
}

/* A join that has not ended long after the node reached ZooKeeper is
 * stuck on an answer or an event that will not come: say where, and
 * start over with a new session rather than stay out of the cluster
 * with nothing in the log. (A node refused for its store, EMISMATCH,
 * checks again on its own and is left alone.) */
static void join_watchdog(keel_cluster *c)
{
    if (!c->joining ||
        (c->phase != KEEL_CLUSTER_BOOTSTRAP &&
         c->phase != KEEL_CLUSTER_JOINING) ||
        c->error == KEEL_EMISMATCH ||
        c->now < c->joining_since + join_bound(c))
        return;
    keel_warn("cluster: %s has been connected to ZooKeeper for %.0f s "
              "without joining (%s; config step %d%s%s, store check step "
              "%d%s%s, member znode state %d%s%s); starting over with a new "
              "session",
              c->node, (double)(c->now - c->joining_since) / 1000.0,
              c->phase == KEEL_CLUSTER_BOOTSTRAP ? "checking the cluster "
                                                   "and its store"
                                                 : "creating its member "
                                                   "znode",
              c->boot.step, c->boot.busy ? ", waiting for an answer" : "",
              c->boot.stalled ? ", stalled" : "", c->store_check.step,
              c->store_check.busy ? ", waiting for an answer" : "",
              c->store_check.stalled ? ", stalled" : "",
              c->members.join_state,
              c->members.join_busy ? ", waiting for an answer" : "",
              c->members.join_stalled ? ", stalled" : "");
    start_over(c);
}

/* Whether the negotiated session timeout leaves the lease its margin
 * (lease.h); if not, the node fails with KEEL_ECONFIG. */
static int timeout_usable(keel_cluster *c)
{
    uint32_t t = (uint32_t)keel_zk_session_timeout(c->zk);
    char why[256];
    int warn, rc = keel_lease_timeout_ok(t, c->timeout_ms, &warn, why,
                                         sizeof why);

    if (rc != 0) {
        keel_error("cluster: node %s: %s", c->node, why);
        set_failed(c, rc);
        return 0;
    }
    if (warn && t != c->warned_timeout)
        keel_warn("cluster: node %s: %s", c->node, why);
    c->warned_timeout = t;
    return 1;
}

static void session_cb(keel_zk *zk, int event, void *arg)
{
    keel_cluster *c = arg;
    int rc;

    (void)zk;
    keel__cluster_now_ms(c);
    switch (event) {
    case KEEL_ZK_CONNECTED:
        if (c->phase == KEEL_CLUSTER_FAILED)
            break;
        if (!timeout_usable(c)) {
            keel_zk_close(c->zk);
            break;
        }
        if (keel_lease_connected(&c->lease, c->now))
            fenced_changed(c);
        if (!c->joining && c->phase != KEEL_CLUSTER_RUNNING) {
            c->joining = 1;
            c->joining_since = c->now;
        }
        if (c->phase == KEEL_CLUSTER_CONNECTING) {
            if (c->connect_warned)
                keel_info("cluster %s: %s reached ZooKeeper after %.1f s",
                          keel_cluster_name(c), c->node,
                          (double)(c->now - c->connect_since) / 1000.0);
            c->connect_warn_at = 0;
            c->phase = KEEL_CLUSTER_BOOTSTRAP;
            if ((rc = keel_bootstrap_start(&c->boot)) != 0 &&
                rc != KEEL_ESESSION)
                set_failed(c, rc);
        } else {
            resume_all(c);
        }
        break;
    case KEEL_ZK_DISCONNECTED:
        c->joining = 0; /* the bound counts connected time */
        if (keel_lease_disconnected(&c->lease, c->now))
            fenced_changed(c);
        break;
    case KEEL_ZK_EXPIRED:
        if (c->phase == KEEL_CLUSTER_FAILED)
            break;
        expired(c);
        break;
    }
    keel__cluster_schedule(c);
}

/* --------------------------------------------------------------- timer */

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    keel_cluster *c = w->data;

    (void)loop;
    (void)revents;
    keel_cluster_tick(c, keel__cluster_now_ms(c));
}

/* The earlier of two deadlines, 0 meaning none. */
static uint64_t earlier(uint64_t a, uint64_t b)
{
    return a == 0 ? b : (b == 0 || a < b ? a : b);
}

/* The first warning that ZooKeeper has not answered comes after this
 * long; the next ones after twice the wait so far, at most a minute. */
#define CONNECT_WARN_MS 5000u
#define CONNECT_WARN_MAX_MS 60000u

static void connecting(keel_cluster *c)
{
    c->connect_since = c->now;
    c->connect_warn_at = c->now + CONNECT_WARN_MS;
    c->connect_warned = 0;
}

/* A node that cannot reach ZooKeeper says so, rather than look ready and
 * stay silent while its calls wait and fail. */
static void connect_warn(keel_cluster *c)
{
    uint64_t waited, gap;

    if (c->phase != KEEL_CLUSTER_CONNECTING || c->connect_warn_at == 0 ||
        c->now < c->connect_warn_at)
        return;
    waited = c->now - c->connect_since;
    keel_warn("cluster %s: %s has not reached ZooKeeper (%s) for %.0f s; "
              "still trying. Until it joins it serves nothing: calls "
              "through it wait, then fail with EUNAVAIL, and /readyz says "
              "so",
              keel_cluster_name(c), c->node,
              c->zk_hosts != NULL ? c->zk_hosts : "its client",
              (double)waited / 1000.0);
    c->connect_warned = 1;
    gap = waited < CONNECT_WARN_MAX_MS ? waited : CONNECT_WARN_MAX_MS;
    c->connect_warn_at = c->now + (gap > 0 ? gap : CONNECT_WARN_MS);
}

void keel__cluster_schedule(keel_cluster *c)
{
    uint64_t next = earlier(keel_lease_deadline(&c->lease),
                            keel_controller_deadline(&c->ctl));

    if (c->phase == KEEL_CLUSTER_CONNECTING)
        next = earlier(next, c->connect_warn_at);
    if (c->joining && (c->phase == KEEL_CLUSTER_BOOTSTRAP ||
                                  c->phase == KEEL_CLUSTER_JOINING))
        next = earlier(next, c->joining_since + join_bound(c));

    next = earlier(next, keel_storecheck_deadline(&c->store_check));
    if (c->adds_held)
        next = earlier(next, c->adds_due);
    if (c->loop == NULL)
        return;
    ev_timer_stop(c->loop, &c->timer);
    if (next == 0)
        return;
    keel__cluster_now_ms(c);
    ev_timer_set(&c->timer,
                 next > c->now ? (double)(next - c->now) / 1000.0 : 0.0, 0.);
    ev_timer_start(c->loop, &c->timer);
}

void keel_cluster_tick(keel_cluster *c, uint64_t now)
{
    int rc;

    c->now = now;
    connect_warn(c);
    join_watchdog(c);
    if (keel_lease_tick(&c->lease, now))
        fenced_changed(c);
    keel_controller_tick(&c->ctl, now);
    keel__cluster_adds_due(c);
    rc = keel_storecheck_tick(&c->store_check, now,
                              c->lease.fence.connected &&
                                  c->phase == KEEL_CLUSTER_BOOTSTRAP);
    if (rc != 0 && rc != KEEL_ESESSION)
        keel_warn("cluster: %s cannot check its store: %s", c->node,
                  keel_strerror(rc));
    keel__cluster_schedule(c);
}

/* ----------------------------------------------------------- interface */

void keel_cluster_options_init(keel_cluster_options *o)
{
    memset(o, 0, sizeof *o);
    o->session_timeout_ms = DEFAULT_SESSION_TIMEOUT_MS;
    o->replicas = 0; /* 1 when creating a cluster; else the cluster's */
}

static void free_strings(char **v, size_t n)
{
    size_t i;

    if (v == NULL)
        return;
    for (i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int keel_cluster_create(struct ev_loop *loop, const keel_cluster_options *o,
                        keel_zk *zk, keel_cluster **out)
{
    keel_controller_options copt;
    keel_cluster *c;
    size_t i;
    int rc;

    if (o == NULL || out == NULL || !keel_name_valid(o->node, 0) ||
        !keel_name_valid(o->cluster, 0) || o->address == NULL ||
        o->shard_count == 0 || o->shard_count > KEEL_MAP_MAX_SHARDS ||
        o->ncaps > KEEL_MAP_MAX_CAPS || (o->ncaps > 0 && o->caps == NULL) ||
        o->replicas < 0 || o->replicas > KEEL_MAP_MAX_REPLICAS ||
        o->replicas_default < 0 ||
        o->replicas_default > KEEL_MAP_MAX_REPLICAS ||
        (zk == NULL && (loop == NULL || o->zk_hosts == NULL)))
        return KEEL_EINVAL;
    for (i = 0; i < o->ncaps; i++)
        if (!keel_name_valid(o->caps[i], 0))
            return KEEL_EINVAL;
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return KEEL_ENOMEM;
    c->loop = loop;
    snprintf(c->node, sizeof c->node, "%s", o->node);
    keel_layout_init(&c->layout, o->cluster);
    c->address = strdup(o->address);
    c->caps = calloc(o->ncaps ? o->ncaps : 1, sizeof *c->caps);
    if (o->store_dir != NULL && (c->store_dir = strdup(o->store_dir)) == NULL) {
        rc = KEEL_ENOMEM;
        goto fail;
    }
    if (c->address == NULL || c->caps == NULL) {
        rc = KEEL_ENOMEM;
        goto fail;
    }
    for (i = 0; i < o->ncaps; i++)
        if ((c->caps[i] = strdup(o->caps[i])) == NULL) {
            c->ncaps = i;
            rc = KEEL_ENOMEM;
            goto fail;
        }
    c->ncaps = o->ncaps;
    c->shard_count = o->shard_count;
    c->timeout_ms = o->session_timeout_ms ? o->session_timeout_ms
                                          : DEFAULT_SESSION_TIMEOUT_MS;
    c->hooks = o->hooks;
    c->my_idx = -1;
    if (zk == NULL) {
        if ((rc = keel_zk_real_create(loop, o->zk_hosts, &zk)) != 0)
            goto fail;
        c->zk_hosts = strdup(o->zk_hosts); /* NULL: the log says less */
        if (o->zk_auth != NULL &&
            (rc = keel_zk_real_set_auth(zk, o->zk_auth)) != 0) {
            keel_zk_destroy(zk);
            goto fail;
        }
    }
    c->zk = zk;
    zk->data = c;
    keel_map_init(&c->map, c->shard_count);
    keel_bootstrap_init(&c->boot, zk, &c->layout, c->shard_count,
                        bootstrap_cb, c);
    c->boot.replicas = o->replicas > 0           ? o->replicas
                       : o->replicas_default > 0 ? o->replicas_default
                                                 : 1;
    c->boot.replicas_explicit = o->replicas > 0;
    c->replicas = 1;
    keel_membership_init(&c->members, zk, &c->layout, c->node, membership_cb,
                         c);
    if (o->store_id != NULL)
        keel_membership_set_store(&c->members, o->store_id);
    keel_membership_set_insecure(&c->members, o->insecure);
    keel_storecheck_init(&c->store_check, zk, &c->layout, c->node,
                         o->store_id, storecheck_cb, c);
    keel_storecheck_set_run(&c->store_check, o->store_run, c->store_dir,
                            o->store_stale);
    keel_election_init(&c->election, zk, &c->layout, c->node, election_cb, c);
    memset(&copt, 0, sizeof copt);
    copt.shard_count = c->shard_count;
    copt.replicas = 1; /* the config's, once read */
    copt.reassign_dead_owner = o->reassign_dead_owner;
    /* 0: the controller waits the dead node's own negotiated timeout and
     * a quarter (keel_controller_grace), the least it ever waits. */
    copt.dead_owner_grace_ms = o->dead_owner_grace_ms;
    copt.replica_dead_ms = o->replica_dead_ms;
    copt.map_budget = o->map_budget;
    copt.clock = clock_ms;
    copt.clock_arg = c;
    copt.peer_down = peer_down;
    copt.peer_down_arg = c;
    keel_controller_init(&c->ctl, zk, &c->layout, &c->members, &copt,
                         controller_cb, c);
    keel_lease_init(&c->lease, zk, c->layout.root, c->timeout_ms, clock_ms,
                    lease_answered, c);
    if (loop != NULL) {
        ev_timer_init(&c->timer, timer_cb, 0., 0.);
        c->timer.data = c;
    }
    *out = c;
    return 0;
fail:
    free(c->zk_hosts);
    free(c->address);
    free(c->store_dir);
    free_strings(c->caps, c->ncaps);
    free(c);
    return rc;
}

int keel_cluster_start(keel_cluster *c)
{
    int rc;

    if (c->phase != KEEL_CLUSTER_IDLE)
        return KEEL_EINVAL;
    c->phase = KEEL_CLUSTER_CONNECTING;
    keel__cluster_now_ms(c);
    connecting(c);
    rc = keel_zk_connect(c->zk, (int)c->timeout_ms, session_cb, c);
    if (rc != 0)
        c->phase = KEEL_CLUSTER_IDLE;
    else
        keel__cluster_schedule(c); /* warns if ZooKeeper does not answer */
    return rc;
}

void keel_cluster_destroy(keel_cluster *c)
{
    size_t i;

    if (c == NULL)
        return;
    /* First the session: no callback reaches what is freed below. */
    keel_zk_destroy(c->zk);
    if (c->loop != NULL)
        ev_timer_stop(c->loop, &c->timer);
    keel_controller_free(&c->ctl);
    keel_membership_free(&c->members);
    keel_map_free(&c->map);
    free(c->zk_hosts);
    free(c->live);
    free(c->cap_of);
    for (i = 0; i < c->nlcaps; i++)
        free(c->lcaps[i].units);
    free(c->lcaps);
    free_strings(c->names, c->nnames);
    free(c->drops);
    free(c->adds);
    keel_storecheck_free(&c->store_check);
    free(c->store_dir);
    free(c->address);
    free_strings(c->caps, c->ncaps);
    free(c);
}

int keel_cluster_released(keel_cluster *c, const char *cap, uint32_t shard,
                          uint64_t shard_epoch, const char *to)
{
    local_cap *lc = keel__cluster_lcap(c, cap, 0);
    local_unit *lu;

    if (lc == NULL || shard >= c->shard_count)
        return KEEL_ENOTFOUND;
    lu = &lc->units[shard];
    if ((lu->phase != U_RELEASING && lu->phase != U_ACQUIRING) ||
        lu->epoch != shard_epoch)
        return KEEL_ENOTFOUND;
    if (to != NULL) {
        int id;
        if (!keel_name_valid(to, 0))
            return KEEL_EINVAL;
        if ((id = name_id(c, to)) < 0)
            return KEEL_ENOMEM;
        lu->to = (uint16_t)id;
    } else if (lu->phase == U_ACQUIRING && !lu->release_wanted) {
        return KEEL_EINVAL; /* no destination was ever given */
    }
    /* The data is with `to` and gone from here, whatever the map says
     * now (a cancel or retarget that came too late): the release is
     * published to where it went, and the controller finishes it there.
     * Taking the unit back would serve it empty, its own fence refusing
     * the old epoch. */
    release_done(c, lc, shard);
    keel__cluster_publish(c);
    return 0;
}

int keel_cluster_kept(keel_cluster *c, const char *cap, uint32_t shard,
                      uint64_t shard_epoch)
{
    local_cap *lc = keel__cluster_lcap(c, cap, 0);
    local_unit *lu;
    int ci;

    if (lc == NULL || shard >= c->shard_count)
        return KEEL_ENOTFOUND;
    lu = &lc->units[shard];
    if (lu->phase != U_RELEASING || lu->epoch != shard_epoch)
        return KEEL_ENOTFOUND;
    /* Nothing left this node: what the map says now decides (ours: the
     * fence is recorded again at its epoch; another move: a new release;
     * the map may also have moved the unit on without us). */
    lu->phase = U_NONE;
    lu->calling_off = 0;
    ci = c->have_map ? keel_map_cap_index(&c->map, cap) : -1;
    if (ci >= 0) {
        const keel_map_unit *u = keel_map_unit_at(&c->map, (uint32_t)ci, shard);
        if (u->nreplicas > 0 && u->replicas[0] == c->my_idx)
            apply_unit(c, lc, u, shard);
        else if (c->hooks.drop != NULL)
            c->hooks.drop(c, lc->name, shard, c->hooks.data);
    }
    keel__cluster_publish(c);
    return 0;
}

int keel_cluster_acquired(keel_cluster *c, const char *cap, uint32_t shard,
                          uint64_t shard_epoch)
{
    local_cap *lc = keel__cluster_lcap(c, cap, 0);
    local_unit *lu;

    if (lc == NULL || shard >= c->shard_count)
        return KEEL_ENOTFOUND;
    lu = &lc->units[shard];
    if (lu->phase != U_ACQUIRING || lu->epoch != shard_epoch)
        return KEEL_ENOTFOUND;
    lu->phase = U_PRIMARY;
    if (lu->release_wanted) {
        lu->release_wanted = 0;
        start_release(c, lc, shard, c->names[lu->to]);
    }
    keel__cluster_publish(c);
    return 0;
}

int keel_cluster_acquiring(keel_cluster *c, const char *cap, uint32_t shard,
                           uint64_t shard_epoch)
{
    const local_cap *lc = keel__cluster_lcap(c, cap, 0);

    return lc != NULL && shard < c->shard_count &&
           lc->units[shard].phase == U_ACQUIRING &&
           lc->units[shard].epoch == shard_epoch;
}

int keel_cluster_may_receive(keel_cluster *c, const char *cap, uint32_t shard,
                             uint64_t shard_epoch, const char *from)
{
    const keel_map_unit *u;
    int ci;

    if (c->phase != KEEL_CLUSTER_RUNNING || c->lease.fence.fenced)
        return KEEL_EFENCED;
    if (keel_cluster_member_leaving(c, c->node))
        return KEEL_ESTOPPING;
    /* A map from an earlier session may show a move that was called off
     * since: only one read in this session counts. */
    if (!c->have_map || !c->map_this_session || shard >= c->shard_count ||
        (ci = keel_map_cap_index(&c->map, cap)) < 0)
        return KEEL_ENOTTARGET;
    u = keel_map_unit_at(&c->map, (uint32_t)ci, shard);
    if (u->nreplicas == 0 || u->replicas[0] == c->my_idx ||
        u->target == KEEL_MAP_NO_NODE || u->target != c->my_idx ||
        u->shard_epoch != shard_epoch)
        return KEEL_ENOTTARGET;
    /* The primary at an epoch never changes within it: a stream at that
     * epoch from any other member is another's unit in its name. */
    if (from != NULL &&
        keel_map_node_index(&c->map, from) != (int)u->replicas[0])
        return KEEL_EDENIED;
    /* Not into another store than the map's table names for this node:
     * the controller keeps that one while the node is the primary of
     * units (rule 4), so it would credit it with this unit too, and the
     * node would serve the unit from neither. Once it records this
     * store, the sender's retry is taken. */
    if (keel__cluster_store_elsewhere(c))
        return KEEL_ENOTTARGET;
    return 0;
}

int keel_cluster_phase(const keel_cluster *c)
{
    return c->phase;
}

int keel_cluster_error(const keel_cluster *c)
{
    return c->error;
}

int keel_cluster_fenced(const keel_cluster *c)
{
    return c->lease.fence.fenced;
}

int64_t keel_cluster_fenced_ago_ns(keel_cluster *c)
{
    const keel_selffence *f = &c->lease.fence;
    uint64_t now_ns, at_ns;
    struct timespec ts;

    if (!f->fenced || c->loop == NULL)
        return 0;
    /* The clock of keel__cluster_now_ms(), in ns: fenced_at is a whole ms
     * on it (the lease ends at such a ms, and a rule holds from it on). */
    if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    now_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    if (f->fenced_at == 0 || f->fenced_at > now_ns / 1000000u)
        return 0;
    at_ns = f->fenced_at * 1000000u;
    return (int64_t)(now_ns - at_ns);
}

uint64_t keel_cluster_lease_until(const keel_cluster *c)
{
    return c->lease.fence.lease_until;
}

uint32_t keel_cluster_session_timeout(const keel_cluster *c)
{
    return c->lease.fence.timeout_ms;
}

int keel_cluster_is_controller(const keel_cluster *c)
{
    return keel_controller_active(&c->ctl);
}

uint64_t keel_cluster_session(const keel_cluster *c)
{
    return c->session_gen;
}

int64_t keel_cluster_incarnation(const keel_cluster *c)
{
    return c->members.incarnation;
}

const struct keel_shard_map *keel_cluster_map(const keel_cluster *c)
{
    return c->have_map ? &c->map : NULL;
}

struct keel_controller *keel_cluster_controller(keel_cluster *c)
{
    return &c->ctl;
}

keel_zk *keel_cluster_zk(keel_cluster *c)
{
    return c->zk;
}

size_t keel_cluster_members(const keel_cluster *c)
{
    return c->members.nview;
}

const keel_member *keel_cluster_view(const keel_cluster *c, size_t *n)
{
    *n = c->members.nview;
    return c->members.view;
}

const char *keel_cluster_controller_name(const keel_cluster *c)
{
    size_t i;

    if (c->phase == KEEL_CLUSTER_RUNNING && keel_cluster_is_controller(c))
        return c->node;
    if (c->leader_session == 0)
        return NULL;
    for (i = 0; i < c->members.nview; i++)
        if (c->members.view[i].session == c->leader_session)
            return c->members.view[i].name;
    return NULL;
}

const char *keel_cluster_node_name(const keel_cluster *c)
{
    return c->node;
}

const char *keel_cluster_name(const keel_cluster *c)
{
    return c->layout.root + sizeof "/keel/" - 1;
}

/* ------------------------------------------------------------ keel_coord */

static void coord_placement(keel_coord *coord, const char *cap,
                            uint32_t shard, keel_placement *out)
{
    keel_cluster_placement(coord->data, cap, shard, out);
}

static const char *coord_mode(keel_coord *coord)
{
    (void)coord;
    return "cluster";
}

static void coord_destroy(keel_coord *coord)
{
    keel_cluster_destroy(coord->data);
}

static const struct keel_coord_ops cluster_coord_ops = {
    1, coord_placement, coord_mode, coord_destroy};

int keel_cluster_coord(keel_cluster *c, keel_coord **out)
{
    c->coord.data = c;
    c->coord.ops = &cluster_coord_ops;
    c->coord.shard_count = c->shard_count;
    *out = &c->coord;
    return 0;
}

keel_cluster *keel_coord_to_cluster(keel_coord *coord)
{
    return coord != NULL && coord->ops == &cluster_coord_ops ? coord->data
                                                             : NULL;
}

int keel_coord_cluster_create(struct ev_loop *loop,
                              const keel_cluster_options *o,
                              keel_coord **out)
{
    keel_cluster *c;
    int rc;

    if (loop == NULL || o == NULL || o->zk_hosts == NULL || out == NULL)
        return KEEL_EINVAL;
    if ((rc = keel_cluster_create(loop, o, NULL, &c)) != 0)
        return rc;
    if ((rc = keel_cluster_start(c)) != 0) {
        keel_cluster_destroy(c);
        return rc;
    }
    return keel_cluster_coord(c, out);
}
