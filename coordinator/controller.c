/* The controller: epoch bump, reads, fenced map writes. What it writes is
 * decided in reconcile.c; what the two share is in controller_int.h. */
#include "coordinator/controller.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/controller_int.h"
#include "keel.h"

enum {
    C_IDLE = 0,
    C_BUMP_READ,
    C_BUMP_WRITE,
    C_RUNNING,
    C_DEPOSED,
    C_FAILED
};

/* Bumping the epoch can only race with another controller's bump; a few
 * tries settle it or something is badly wrong. */
#define MAX_BUMP_TRIES 5

static void pump(keel_controller *ctl);
static void report_deadline(keel_controller *ctl);

static void fail(keel_controller *ctl, int rc)
{
    keel_error("cluster: controller gives up: %s", keel_strerror(rc));
    ctl->state = C_FAILED;
    ctl->error = rc;
    ctl->cb(ctl, KEEL_CONTROLLER_FAILED, ctl->arg);
}

/* ---------------------------------------------------------- node table */

int keel_controller_node_id(const keel_controller *ctl, const char *name)
{
    size_t i;

    for (i = 0; i < ctl->nnodes; i++)
        if (strcmp(ctl->nodes[i].name, name) == 0)
            return (int)i;
    return -1;
}

int keel__ctl_track(keel_controller *ctl, const char *name)
{
    int id = keel_controller_node_id(ctl, name);
    keel_ctl_node *v;

    if (id >= 0)
        return id;
    v = realloc(ctl->nodes, (ctl->nnodes + 1) * sizeof *v);
    if (v == NULL)
        return -1;
    ctl->nodes = v;
    memset(&v[ctl->nnodes], 0, sizeof *v);
    snprintf(v[ctl->nnodes].name, sizeof v[ctl->nnodes].name, "%s", name);
    keel_node_state_init(&v[ctl->nnodes].state);
    v[ctl->nnodes].dirty = 1;
    return (int)ctl->nnodes++;
}

keel_handoff *keel__ctl_machine(keel_controller *ctl, const char *cap,
                             uint32_t shard, int create)
{
    keel_ctl_cap *v;
    size_t i;

    for (i = 0; i < ctl->ncaps; i++)
        if (strcmp(ctl->caps[i].name, cap) == 0)
            return &ctl->caps[i].moves[shard];
    if (!create)
        return NULL;
    v = realloc(ctl->caps, (ctl->ncaps + 1) * sizeof *v);
    if (v == NULL)
        return NULL;
    ctl->caps = v;
    v[ctl->ncaps].moves = calloc(ctl->opt.shard_count, sizeof(keel_handoff));
    if (v[ctl->ncaps].moves == NULL)
        return NULL;
    snprintf(v[ctl->ncaps].name, sizeof v[ctl->ncaps].name, "%s", cap);
    ctl->ncaps++;
    return &v[ctl->ncaps - 1].moves[shard];
}

int keel__ctl_live(const keel_controller *ctl, const char *name)
{
    return keel_membership_find(ctl->members, name) != NULL;
}

int keel_controller_forgotten(const keel_controller *ctl, const char *name)
{
    size_t i;

    for (i = 0; i < ctl->nforgotten; i++)
        if (strcmp(ctl->forgotten[i], name) == 0)
            return 1;
    return 0;
}

int keel__ctl_loss_ok(const keel_controller *ctl, const char *owner)
{
#ifdef KEEL_TEST_NO_FENCE
    /* Test builds only (keeld-nofence, for keel-chaos's own test): a
     * silent node is taken for dead and its units go elsewhere. */
    (void)ctl;
    (void)owner;
    return 1;
#else
    return ctl->opt.reassign_dead_owner ||
           (keel_controller_forgotten(ctl, owner) &&
            !keel__ctl_live(ctl, owner));
#endif
}

/* Records what the member view says of node id: its published session
 * timeout while it is a member, and when it was first seen missing. Only
 * a view made by a completed listing counts: a listing answered after the
 * znode's deletion, so ctl->now is no earlier than that. */
void keel__ctl_observe(keel_controller *ctl, int id)
{
    keel_ctl_node *n = &ctl->nodes[id];
    const keel_member *m = keel_membership_find(ctl->members, n->name);

    if (m != NULL) {
        n->gone = 0;
        n->present_until = 0;
        n->dead_logged = 0;
        if (m->session_timeout_ms > 0)
            n->session_timeout_ms = m->session_timeout_ms;
    } else if (n->present_until != 0 &&
               ctl->members->list_done < n->present_until) {
        n->gone = 0; /* ZooKeeper holds its member znode (map_written) */
    } else if (!n->gone && ctl->members->listings > 0) {
        n->present_until = 0;
        n->gone = 1;
        n->gone_at = ctl->now;
    }
}

void keel__ctl_observe_all(keel_controller *ctl)
{
    size_t i;

    for (i = 0; i < ctl->nnodes; i++)
        keel__ctl_observe(ctl, (int)i);
}

uint32_t keel_controller_grace(keel_controller *ctl, const char *name)
{
    int id = keel_controller_node_id(ctl, name);
    uint64_t t = id >= 0 ? ctl->nodes[id].session_timeout_ms : 0, g;

    if (t == 0) {
        uint64_t own = (uint64_t)keel_zk_session_timeout(ctl->zk);
        t = 10 * (own > 0 ? own : 1000);
    }
    g = t + t / 4;
    return g > UINT32_MAX ? UINT32_MAX : (uint32_t)g;
}

/* The wait after the owner's member znode is gone before its units move
 * without it. A forgotten owner's data is given up, but not before its
 * session can be over: it may have kept a lease through a server cut off
 * from the leader, and serve until then. */
uint32_t keel__ctl_grace_of(keel_controller *ctl, const char *owner)
{
    uint32_t g = keel_controller_grace(ctl, owner);

#ifdef KEEL_TEST_NO_FENCE
    g = 0; /* at once: keeld-nofence, see loss_ok */
#else
    if (!(keel_controller_forgotten(ctl, owner) &&
          !keel__ctl_live(ctl, owner)) &&
        ctl->opt.dead_owner_grace_ms > g)
        g = ctl->opt.dead_owner_grace_ms;
#endif
    return g;
}

/* --------------------------------------------------------- epoch bump */

static int bump_read(keel_controller *ctl);

static void bump_done(keel_zk *zk, int rc, size_t failed,
                      const keel_zk_op_result *res, size_t n, void *arg)
{
    keel_controller *ctl = arg;

    (void)zk;
    (void)n;
    ctl->busy = 0;
    if (ctl->state != C_BUMP_WRITE)
        return;
    if (rc == 0) {
        ctl->epoch_version = res[1].stat.version;
        ctl->state = C_RUNNING;
        keel_info("cluster: controller active at epoch %llu",
                  (unsigned long long)ctl->epoch);
        ctl->cb(ctl, KEEL_CONTROLLER_ACTIVE, ctl->arg);
        pump(ctl);
        return;
    }
    if (rc == KEEL_ECONNLOSS) {
        /* Maybe applied: resume() reads and bumps again, which only
         * skips an epoch number. */
        ctl->state = C_BUMP_READ;
        ctl->stalled = 1;
        return;
    }
    if (rc == KEEL_ENOTFOUND && failed == 0) {
        ctl->state = C_DEPOSED;
        ctl->cb(ctl, KEEL_CONTROLLER_DEPOSED, ctl->arg);
        return;
    }
    if (rc == KEEL_EBADVERSION && failed == 1 &&
        ++ctl->bump_tries < MAX_BUMP_TRIES) {
        if ((rc = bump_read(ctl)) != 0)
            fail(ctl, rc);
        return;
    }
    fail(ctl, rc);
}

static void epoch_read(keel_zk *zk, int rc, const void *data, size_t len,
                       const keel_zk_stat *st, void *arg)
{
    keel_controller *ctl = arg;
    char path[KEEL_ZK_PATH_MAX], buf[32];
    keel_zk_op ops[2];
    uint64_t epoch;

    ctl->busy = 0;
    if (ctl->state != C_BUMP_READ)
        return;
    if (rc == KEEL_ECONNLOSS) {
        ctl->stalled = 1;
        return;
    }
    if (rc == 0 && (rc = keel_epoch_parse(data, len, &epoch)) != 0)
        rc = KEEL_ECORRUPT;
    if (rc != 0) {
        fail(ctl, rc);
        return;
    }
    ctl->epoch = epoch + 1;
    memset(ops, 0, sizeof ops);
    ops[0].type = KEEL_ZK_OP_CHECK; /* still a candidate: our node exists */
    ops[0].path = ctl->candidate;
    ops[0].version = KEEL_ZK_ANY_VERSION;
    ops[1].type = KEEL_ZK_OP_SET;
    ops[1].path = keel_layout_path(ctl->layout, path, "controller_epoch",
                                   NULL, NULL);
    ops[1].data = buf;
    ops[1].len = keel_epoch_format(buf, sizeof buf, ctl->epoch);
    ops[1].version = st->version;
    ctl->state = C_BUMP_WRITE;
    rc = keel_zk_multi(zk, ops, 2, bump_done, ctl);
    if (rc != 0)
        fail(ctl, rc);
    else
        ctl->busy = 1;
}

static int bump_read(keel_controller *ctl)
{
    char path[KEEL_ZK_PATH_MAX];
    int rc;

    ctl->state = C_BUMP_READ;
    keel_layout_path(ctl->layout, path, "controller_epoch", NULL, NULL);
    rc = keel_zk_get(ctl->zk, path, NULL, NULL, epoch_read, ctl);
    if (rc == 0)
        ctl->busy = 1;
    return rc;
}

/* ----------------------------------------------------------- map read */

/* Aligns the handoff machines with a map just read back: moves in the map
 * are resumed (keeping what was learnt about them), machines whose move is
 * not in the map any more are cleared. */
static void sync_machines(keel_controller *ctl)
{
    const keel_shard_map *m = &ctl->map;
    uint32_t c, s;

    for (c = 0; c < m->ncaps; c++)
        for (s = 0; s < m->shard_count; s++) {
            const keel_map_unit *u = keel_map_unit_at(m, c, s);
            keel_handoff *h = keel__ctl_machine(ctl, m->caps[c], s, 1);
            int p, t, lok;
            uint32_t grace;
            if (h == NULL)
                continue; /* out of memory: this unit's move waits */
            if (u->nreplicas == 0) {
                memset(h, 0, sizeof *h);
                continue;
            }
            p = keel__ctl_track(ctl, m->nodes[u->replicas[0]]);
            lok = keel__ctl_loss_ok(ctl, m->nodes[u->replicas[0]]);
            grace = keel__ctl_grace_of(ctl, m->nodes[u->replicas[0]]);
            if (u->target != KEEL_MAP_NO_NODE) {
                t = keel__ctl_track(ctl, m->nodes[u->target]);
                if (p < 0 || t < 0)
                    continue;
                if (h->state == KEEL_HANDOFF_IDLE ||
                    h->state == KEEL_HANDOFF_DONE ||
                    h->state == KEEL_HANDOFF_ABORTED ||
                    h->from != (uint32_t)p || h->to != (uint32_t)t ||
                    h->epoch != u->shard_epoch ||
                    h->state == KEEL_HANDOFF_TARGET_PENDING ||
                    h->state == KEEL_HANDOFF_PRIMARY_PENDING)
                    keel_handoff_resume(h, (uint32_t)p, (uint32_t)t,
                                        u->shard_epoch, 0, lok, grace);
            } else if ((h->state == KEEL_HANDOFF_PRIMARY_PENDING ||
                        h->state == KEEL_HANDOFF_AWAIT_FENCE) &&
                       h->to == (uint32_t)p &&
                       u->shard_epoch == keel_handoff_next_epoch(h)) {
                keel_handoff_resume(h, h->from, h->to, h->epoch, 1, lok,
                                    grace);
            } else if (h->state != KEEL_HANDOFF_IDLE &&
                       h->state != KEEL_HANDOFF_DONE &&
                       h->state != KEEL_HANDOFF_AWAIT_FENCE) {
                memset(h, 0, sizeof *h);
            }
        }
}

static void map_read(keel_zk *zk, int rc, const void *data, size_t len,
                     const keel_zk_stat *st, void *arg)
{
    keel_controller *ctl = arg;
    keel_shard_map m;

    (void)zk;
    ctl->busy = 0;
    if (ctl->state != C_RUNNING)
        return;
    if (rc == KEEL_ECONNLOSS) {
        ctl->stalled = 1;
        return;
    }
    if (rc == KEEL_ENOTFOUND) {
        keel_map_free(&ctl->map);
        keel_map_init(&ctl->map, ctl->opt.shard_count);
        ctl->map_exists = 0;
        ctl->map_version = -1;
    } else if (rc != 0) {
        fail(ctl, rc);
        return;
    } else {
        if ((rc = keel_map_decode(data, len, &m)) != 0) {
            /* Shard epochs must never go back; without a readable map a
             * new one could not honour that. An operator must look. */
            keel_error("cluster: the map znode is unreadable (%s)",
                       keel_strerror(rc));
            fail(ctl, rc);
            return;
        }
        if (m.shard_count != ctl->opt.shard_count) {
            keel_map_free(&m);
            fail(ctl, KEEL_ECONFIG);
            return;
        }
        keel_map_free(&ctl->map);
        ctl->map = m;
        ctl->map_exists = 1;
        ctl->map_version = st->version;
    }
    ctl->have_map = 1;
    ctl->map_dirty = 0;
    sync_machines(ctl);
    pump(ctl);
}

/* -------------------------------------------------------- node states */

static void state_watch(keel_zk *zk, int event, const char *path, void *arg)
{
    keel_controller *ctl = arg;
    char name[KEEL_NAME_MAX + 1];
    const char *end, *start;
    int id;

    (void)zk;
    (void)event;
    /* .../nodes/<name>/state */
    end = strrchr(path, '/');
    if (end == NULL || strcmp(end, "/state") != 0)
        return;
    start = end;
    while (start > path && start[-1] != '/')
        start--;
    if ((size_t)(end - start) > KEEL_NAME_MAX)
        return;
    memcpy(name, start, (size_t)(end - start));
    name[end - start] = '\0';
    id = keel_controller_node_id(ctl, name);
    if (id < 0)
        return;
    ctl->nodes[id].watched = 0; /* one-shot: it fired */
    ctl->nodes[id].dirty = 1;
    pump(ctl);
}

static void state_exists(keel_zk *zk, int rc, const keel_zk_stat *st,
                         void *arg)
{
    keel_controller *ctl = arg;
    keel_ctl_node *n = &ctl->nodes[ctl->reading];

    (void)zk;
    (void)st;
    ctl->busy = 0;
    if (ctl->state != C_RUNNING)
        return;
    if (rc == KEEL_ECONNLOSS) {
        ctl->stalled = 1;
        return;
    }
    if (rc == 0) {
        n->dirty = 1; /* created meanwhile: read it */
    } else if (rc == KEEL_ENOTFOUND) {
        n->watched = 1; /* its creation will fire the watch */
    } else {
        fail(ctl, rc);
        return;
    }
    pump(ctl);
}

static void state_read(keel_zk *zk, int rc, const void *data, size_t len,
                       const keel_zk_stat *st, void *arg)
{
    keel_controller *ctl = arg;
    keel_ctl_node *n = &ctl->nodes[ctl->reading];
    keel_node_state ns;
    char path[KEEL_ZK_PATH_MAX];

    (void)st;
    ctl->busy = 0;
    if (ctl->state != C_RUNNING)
        return;
    if (rc == KEEL_ECONNLOSS) {
        n->dirty = 1;
        ctl->stalled = 1;
        return;
    }
    if (rc == KEEL_ENOTFOUND) {
        keel_node_state_free(&n->state);
        n->have_state = 0;
        n->state_mzxid = 0;
        keel_layout_path(ctl->layout, path, "nodes", n->name, "state");
        rc = keel_zk_exists(zk, path, state_watch, ctl, state_exists, ctl);
        if (rc != 0)
            fail(ctl, rc);
        else
            ctl->busy = 1;
        return;
    }
    if (rc != 0) {
        fail(ctl, rc);
        return;
    }
    /* Only a read that left a watch arms one. A read that left none may
     * be answered after the armed watch fired (state_watch cleared
     * `watched` and set `dirty`): the next read must leave one. */
    if (n->arming)
        n->watched = 1;
    /* A map write honouring this state's add requests checks that the
     * node has not rewritten it since (rule 7). */
    n->state_version = st->version;
    /* A promoted primary that has not written its state since its
     * promotion answered nothing at that epoch (failover()). */
    if (n->state_mzxid != st->mzxid)
        n->fallback_at = 0;
    n->state_mzxid = st->mzxid;
    if (len == 0) {
        /* created, not yet written by its node: holds nothing */
        keel_node_state_free(&n->state);
        n->have_state = 0;
    } else if ((rc = keel_node_state_decode(data, len, &ns)) != 0) {
        keel_warn("cluster: state of node %s is unreadable (%s); ignored",
                  n->name, keel_strerror(rc));
        keel_node_state_free(&n->state);
        n->have_state = 0;
    } else {
        keel_node_state_free(&n->state);
        n->state = ns;
        n->have_state = 1;
    }
    pump(ctl);
}

/* Reads the state of node i, leaving a watch unless one is armed. The
 * controller has one request in flight, so its callbacks find the node
 * through ctl->reading. */
static int read_state(keel_controller *ctl, size_t i)
{
    char path[KEEL_ZK_PATH_MAX];
    keel_ctl_node *n = &ctl->nodes[i];
    int rc;

    n->dirty = 0;
    n->arming = !n->watched;
    ctl->reading = i;
    keel_layout_path(ctl->layout, path, "nodes", n->name, "state");
    rc = keel_zk_get(ctl->zk, path, n->arming ? state_watch : NULL, ctl,
                     state_read, ctl);
    if (rc == 0)
        ctl->busy = 1;
    return rc;
}

/* ------------------------------------------------------ forgotten/ */

static void forgot_watch(keel_zk *zk, int event, const char *path, void *arg)
{
    keel_controller *ctl = arg;

    (void)zk;
    (void)event;
    (void)path;
    ctl->forgot_watched = 0; /* one-shot: it fired */
    ctl->forgot_dirty = 1;
    pump(ctl);
}

static void forgot_listed(keel_zk *zk, int rc, size_t count,
                          const char *const *names, void *arg)
{
    keel_controller *ctl = arg;
    char (*v)[KEEL_NAME_MAX + 1] = NULL;
    size_t i, n = 0;

    (void)zk;
    ctl->busy = 0;
    if (ctl->state != C_RUNNING)
        return;
    if (rc == KEEL_ECONNLOSS) {
        ctl->forgot_dirty = 1;
        ctl->stalled = 1;
        return;
    }
    if (rc == KEEL_ENOTFOUND) {
        count = 0; /* a cluster bootstrapped before forgotten/ existed */
    } else if (rc != 0) {
        fail(ctl, rc);
        return;
    } else if (ctl->forgot_arming) {
        /* Only a listing that left a watch arms one (see state_read). */
        ctl->forgot_watched = 1;
    }
    if (count > 0 && (v = calloc(count, sizeof *v)) == NULL) {
        ctl->forgot_dirty = 1;
        fail(ctl, KEEL_ENOMEM);
        return;
    }
    for (i = 0; i < count; i++)
        if (keel_name_valid(names[i], 0))
            snprintf(v[n++], sizeof v[0], "%s", names[i]);
    free(ctl->forgotten);
    ctl->forgotten = v;
    ctl->nforgotten = n;
    for (i = 0; i < n; i++)
        keel_info("cluster: node %s is forgotten: its units move without "
                  "it", v[i]);
    pump(ctl);
}

static int read_forgotten(keel_controller *ctl)
{
    char path[KEEL_ZK_PATH_MAX];
    int rc;

    ctl->forgot_dirty = 0;
    ctl->forgot_arming = !ctl->forgot_watched;
    keel_layout_path(ctl->layout, path, "forgotten", NULL, NULL);
    rc = keel_zk_children(ctl->zk, path,
                          ctl->forgot_arming ? forgot_watch : NULL, ctl,
                          forgot_listed, ctl);
    if (rc == 0)
        ctl->busy = 1;
    return rc;
}

/* ------------------------------------------------------------- writing */

/* What a landed write changed (keel_controller.expansions...): over the
 * units that keep their primary and shard_epoch, backups that joined or
 * left the in-sync set; and the units promoted by failover. */
static void count_changes(keel_controller *ctl, const keel_shard_map *old,
                          const keel_shard_map *now)
{
    uint32_t c, s;
    int r, idx;

    for (c = 0; c < now->ncaps; c++) {
        int oc = keel_map_cap_index(old, now->caps[c]);
        if (oc < 0)
            continue;
        for (s = 0; s < now->shard_count; s++) {
            const keel_map_unit *un = keel_map_unit_at(now, c, s);
            const keel_map_unit *uo = keel_map_unit_at(old, (uint32_t)oc, s);
            if (un->nreplicas == 0 || uo->nreplicas == 0)
                continue;
            if (un->shard_epoch != uo->shard_epoch ||
                strcmp(now->nodes[un->replicas[0]],
                       old->nodes[uo->replicas[0]]) != 0) {
                if (un->promoted && un->shard_epoch != uo->shard_epoch)
                    ctl->failovers++;
                continue;
            }
            for (r = 1; r < uo->nreplicas; r++) {
                if (!keel_map_insync(uo, r))
                    continue;
                idx = keel_map_node_index(now, old->nodes[uo->replicas[r]]);
                if (idx < 0 ||
                    !keel_map_insync(un, keel_map_replica_pos(un,
                                                              (uint16_t)idx)))
                    ctl->shrinks++;
            }
            for (r = 1; r < un->nreplicas; r++) {
                if (!keel_map_insync(un, r))
                    continue;
                idx = keel_map_node_index(old, now->nodes[un->replicas[r]]);
                if (idx >= 0 &&
                    keel_map_insync(uo, keel_map_replica_pos(uo,
                                                             (uint16_t)idx)))
                    continue;
                ctl->expansions++;
                keel_info("cluster: %s/%u: %s joins the in-sync set at "
                          "epoch %llu (caught up by its primary %s, store "
                          "%s)",
                          keel_cap_name(now->caps[c]), s,
                          now->nodes[un->replicas[r]],
                          (unsigned long long)un->shard_epoch,
                          now->nodes[un->replicas[0]],
                          now->store_ids[un->replicas[r]]);
            }
        }
    }
}

static void map_written(keel_zk *zk, int rc, size_t failed,
                        const keel_zk_op_result *res, size_t n, void *arg)
{
    keel_controller *ctl = arg;
    size_t i;
    uint32_t s;

    (void)zk;
    (void)n;
    ctl->busy = 0;
    if (ctl->state != C_RUNNING) {
        if (ctl->pending_valid)
            keel_map_free(&ctl->pending);
        ctl->pending_valid = 0;
        return;
    }
    if (rc == 0) {
        count_changes(ctl, &ctl->map, &ctl->pending);
        keel_map_free(&ctl->map);
        ctl->map = ctl->pending;
        ctl->pending_valid = 0;
        ctl->map_version = ctl->map_exists ? res[1].stat.version : 0;
        ctl->map_exists = 1;
        ctl->writes++;
        for (i = 0; i < ctl->ncaps; i++)
            for (s = 0; s < ctl->opt.shard_count; s++) {
                keel_handoff *h = &ctl->caps[i].moves[s];
                if (h->state == KEEL_HANDOFF_TARGET_PENDING)
                    keel_handoff_target_written(h, 0, ctl->now);
                else if (h->state == KEEL_HANDOFF_PRIMARY_PENDING)
                    keel_handoff_primary_written(h, 0);
            }
        keel_debug("cluster: map epoch %llu written",
                   (unsigned long long)ctl->map.map_epoch);
        ctl->cb(ctl, KEEL_CONTROLLER_MAP_WRITTEN, ctl->arg);
        report_deadline(ctl);
        pump(ctl);
        return;
    }
    keel_map_free(&ctl->pending);
    ctl->pending_valid = 0;
    if ((rc == KEEL_EBADVERSION || rc == KEEL_ENOTFOUND) && failed == 0) {
        /* controller_epoch moved on: another controller leads. */
        keel_warn("cluster: controller at epoch %llu deposed",
                  (unsigned long long)ctl->epoch);
        for (i = 0; i < ctl->ncaps; i++)
            for (s = 0; s < ctl->opt.shard_count; s++) {
                keel_handoff *h = &ctl->caps[i].moves[s];
                keel_handoff_target_written(h, KEEL_EDEPOSED, ctl->now);
                keel_handoff_primary_written(h, KEEL_EDEPOSED);
            }
        ctl->state = C_DEPOSED;
        ctl->error = KEEL_EDEPOSED;
        ctl->cb(ctl, KEEL_CONTROLLER_DEPOSED, ctl->arg);
        return;
    }
    if (rc == KEEL_ECONNLOSS) {
        ctl->map_dirty = 1; /* outcome unknown: read it back */
        ctl->stalled = 1;
        return;
    }
    if ((rc == KEEL_EBADVERSION || rc == KEEL_EEXIST ||
         rc == KEEL_ENOTFOUND) &&
        failed == 1) {
        ctl->map_dirty = 1; /* the map is not what we thought */
        pump(ctl);
        return;
    }
    if ((rc == KEEL_EBADVERSION || rc == KEEL_ENOTFOUND) &&
        failed >= ctl->pending_checks &&
        failed - ctl->pending_checks < ctl->nchecks) {
        /* A state this write relied on was rewritten meanwhile: a
         * primary whose add request it honoured (it may have withdrawn
         * the request and stopped counting the backup), or a promoted
         * primary taken for one that never served. Read it again, and
         * decide again. */
        keel_ctl_node *node =
            &ctl->nodes[ctl->checks[failed - ctl->pending_checks].node];
        keel_info("cluster: the state of %s changed while a map write "
                  "relied on it; deciding again",
                  node->name);
        node->dirty = 1;
        ctl->map_dirty = 1;
        pump(ctl);
        return;
    }
    if (rc == KEEL_EEXIST && failed >= 2 && failed % 2 == 0 &&
        (failed - 2) / 2 < ctl->nproofs) {
        /* An owner whose units were being promoted without it is a member
         * again. Decide with it live: its watch event is normally on its
         * way, but the view may also have missed it (a watch lost with a
         * connection), and deciding again from that view would only write
         * the same promotion again, forever. So it counts as live until
         * a listing begun now has ended, and one is asked for. */
        keel_ctl_node *node =
            &ctl->nodes[ctl->proof_owner[(failed - 2) / 2]];
        keel_info("cluster: %s came back while its units were being moved "
                  "without it; deciding again with it live",
                  node->name);
        node->gone = 0;
        node->present_until = ctl->members->list_seq + 1;
        ctl->cb(ctl, KEEL_CONTROLLER_MEMBERS_BEHIND, ctl->arg);
        ctl->map_dirty = 1;
        pump(ctl);
        return;
    }
    fail(ctl, rc);
}

/* The owners whose units the next write promotes without their release
 * (dead, or forgotten): at most `cap` names, each once, into v. */
static size_t promoted_owners(const keel_controller *ctl, size_t *v,
                              size_t cap)
{
    size_t i, j, n = 0;
    uint32_t s;

    for (i = 0; i < ctl->ncaps; i++)
        for (s = 0; s < ctl->opt.shard_count; s++) {
            const keel_handoff *h = &ctl->caps[i].moves[s];
            /* An owner on another store is a member, and the promotion
             * needs no proof: it cannot serve the unit (it acts as
             * primary only on the store the map records, which this
             * write keeps or records anew only once it owns nothing). A
             * process of its name back on the recorded store meanwhile
             * (the store check lets it in: its units wait for that
             * store) may serve the unit at the old epoch until it
             * applies this map, as a primary whose session expired
             * may: every reply it gives needs the promoted backup,
             * which was in sync at that epoch and refuses it once it
             * has applied this map ("Failover", "Why no grace"). */
            if (h->state != KEEL_HANDOFF_PRIMARY_PENDING ||
                (h->flags & KEEL_HANDOFF_F_RELEASED) ||
                ctl->nodes[h->from].store_lost)
                continue;
            for (j = 0; j < n && v[j] != h->from; j++)
                ;
            if (j == n && n < cap)
                v[n++] = h->from;
        }
    return n;
}

/* Writes next, with the checks the reconciliation noted (ctl->checks, when
 * `checked`) after the proofs. Every owner whose units the write gives
 * away without its release is proven absent in it, however many there
 * are (a rack lost at once): a write that moved the units of an owner it
 * did not prove absent could land while that owner is a member again.
 * Two small ops per owner, a few hundred bytes: tens of owners lost at
 * once add kilobytes to a write that carries the whole map. */
static int write_map(keel_controller *ctl, keel_shard_map *next, int checked)
{
    char epath[KEEL_ZK_PATH_MAX], mpath[KEEL_ZK_PATH_MAX];
    char (*ppath)[KEEL_ZK_PATH_MAX] = NULL;
    char (*cpath)[KEEL_ZK_PATH_MAX] = NULL;
    keel_zk_op *ops;
    size_t nproofs, nchecks = checked ? ctl->nchecks : 0;
    size_t i;
    uint8_t *buf;
    size_t len;
    int rc;

    if (!checked)
        ctl->nchecks = 0; /* none in flight: nothing to match a failure */
    next->map_epoch = ctl->map.map_epoch + 1;
    /* Each owner once: at most one per node this controller tracks. */
    if (ctl->proofs_cap < ctl->nnodes) {
        size_t *v = realloc(ctl->proof_owner, ctl->nnodes * sizeof *v);
        if (v == NULL)
            return KEEL_ENOMEM;
        ctl->proof_owner = v;
        ctl->proofs_cap = ctl->nnodes;
    }
    /* A promotion without the owner's release relies on the owner being
     * gone. If it joined again meanwhile (a forgotten or dead node back
     * while the write is on its way), it may already have read the map
     * that still gives it the unit, and serve it next to the new owner.
     * A create and a delete of its member znode in the same multi prove
     * that it is not a member when the map changes; if it is, the write
     * fails as a whole and the moves are decided again, with it live. */
    nproofs = promoted_owners(ctl, ctl->proof_owner, ctl->proofs_cap);
    ops = calloc(2 + 2 * nproofs + nchecks, sizeof *ops);
    if (nproofs > 0)
        ppath = calloc(nproofs, sizeof *ppath);
    if (nchecks > 0)
        cpath = calloc(nchecks, sizeof *cpath);
    if (ops == NULL || (nproofs > 0 && ppath == NULL) ||
        (nchecks > 0 && cpath == NULL)) {
        free(ops);
        free(ppath);
        free(cpath);
        return KEEL_ENOMEM;
    }
    if ((rc = keel_map_encode(next, &buf, &len)) != 0) {
        free(ops);
        free(ppath);
        free(cpath);
        return rc;
    }
    for (i = 0; i < nproofs; i++) {
        keel_layout_path(ctl->layout, ppath[i], "members",
                         ctl->nodes[ctl->proof_owner[i]].name, NULL);
        ops[2 + 2 * i].type = KEEL_ZK_OP_CREATE;
        ops[2 + 2 * i].path = ppath[i];
        ops[3 + 2 * i].type = KEEL_ZK_OP_DELETE;
        ops[3 + 2 * i].path = ppath[i];
        ops[3 + 2 * i].version = KEEL_ZK_ANY_VERSION;
    }
    ops[0].type = KEEL_ZK_OP_CHECK;
    ops[0].path = keel_layout_path(ctl->layout, epath, "controller_epoch",
                                   NULL, NULL);
    ops[0].version = ctl->epoch_version;
    ops[1].type = ctl->map_exists ? KEEL_ZK_OP_SET : KEEL_ZK_OP_CREATE;
    ops[1].path = keel_layout_path(ctl->layout, mpath, "map", NULL, NULL);
    ops[1].data = buf;
    ops[1].len = len;
    ops[1].version = ctl->map_version;
    /* Rule 7: the states whose add requests the map honours are still the
     * ones read. */
    for (i = 0; i < nchecks; i++) {
        keel_zk_op *op = &ops[2 + 2 * nproofs + i];
        op->type = KEEL_ZK_OP_CHECK;
        op->path = keel_layout_path(ctl->layout, cpath[i], "nodes",
                                    ctl->nodes[ctl->checks[i].node].name,
                                    "state");
        op->version = ctl->checks[i].version;
    }
    ctl->pending_checks = 2 + 2 * nproofs;
    ctl->nproofs = nproofs;
    rc = keel_zk_multi(ctl->zk, ops, 2 + 2 * nproofs + nchecks, map_written,
                       ctl);
    free(buf);
    free(ops);
    free(ppath);
    free(cpath);
    if (rc != 0)
        return rc;
    ctl->pending = *next;
    ctl->pending_valid = 1;
    ctl->busy = 1;
    return 0;
}

/* ---------------------------------------------------------------- pump */

/* Machines waiting out a grace period need a timer; the owner arms it. */
static void report_deadline(keel_controller *ctl)
{
    uint64_t d = keel_controller_deadline(ctl);

    if (d != ctl->deadline) {
        ctl->deadline = d;
        ctl->cb(ctl, KEEL_CONTROLLER_TIMER, ctl->arg);
    }
}

static void pump(keel_controller *ctl)
{
    keel_shard_map next;
    size_t i;
    int rc;

    if (ctl->state != C_RUNNING || ctl->busy || ctl->stalled)
        return;
    if (ctl->opt.clock != NULL)
        ctl->now = ctl->opt.clock(ctl->opt.clock_arg);
    if (ctl->map_dirty || !ctl->have_map) {
        char path[KEEL_ZK_PATH_MAX];
        keel_layout_path(ctl->layout, path, "map", NULL, NULL);
        rc = keel_zk_get(ctl->zk, path, NULL, NULL, map_read, ctl);
        if (rc != 0)
            fail(ctl, rc);
        else
            ctl->busy = 1;
        return;
    }
    if (ctl->forgot_dirty) {
        if ((rc = read_forgotten(ctl)) != 0)
            fail(ctl, rc);
        return;
    }
    for (i = 0; i < ctl->nnodes; i++)
        if (ctl->nodes[i].dirty) {
            if ((rc = read_state(ctl, i)) != 0)
                fail(ctl, rc);
            return;
        }
    if ((rc = keel__ctl_reconcile(ctl, &next)) != 0) {
        fail(ctl, rc);
        return;
    }
    /* Reading may have found new nodes to track. */
    for (i = 0; i < ctl->nnodes; i++)
        if (ctl->nodes[i].dirty) {
            keel_map_free(&next);
            pump(ctl);
            return;
        }
    if (ctl->map_exists && keel_map_same_placement(&next, &ctl->map)) {
        keel_map_free(&next);
        report_deadline(ctl);
        return;
    }
    if ((rc = write_map(ctl, &next, 1)) != 0) {
        if (rc == KEEL_ETOOBIG)
            keel_error("cluster: the shard map no longer fits the %d bytes "
                       "a ZooKeeper znode may hold (%u shards per "
                       "capability, %u capabilities, %d replicas, %u "
                       "nodes): use fewer shards or fewer capabilities "
                       "(docs/cluster.md, \"The map znode\")",
                       KEEL_ZK_MAX_DATA, next.shard_count,
                       (unsigned)next.ncaps, ctl->opt.replicas,
                       (unsigned)next.nnodes);
        keel_map_free(&next);
        fail(ctl, rc);
        return;
    }
    report_deadline(ctl);
}

/* ----------------------------------------------------------- interface */

void keel_controller_init(keel_controller *ctl, keel_zk *zk,
                          const keel_layout *layout,
                          const keel_membership *members,
                          const keel_controller_options *opt,
                          keel_controller_cb cb, void *arg)
{
    memset(ctl, 0, sizeof *ctl);
    ctl->zk = zk;
    ctl->layout = layout;
    ctl->members = members;
    ctl->opt = *opt;
    keel_controller_set_replicas(ctl, opt->replicas);
    ctl->cb = cb;
    ctl->arg = arg;
    keel_map_init(&ctl->map, opt->shard_count);
}

void keel_controller_set_replicas(keel_controller *ctl, int replicas)
{
    if (replicas <= 0)
        replicas = 1;
    if (replicas > KEEL_MAP_MAX_REPLICAS)
        replicas = KEEL_MAP_MAX_REPLICAS;
    ctl->opt.replicas = replicas;
}

void keel_controller_free(keel_controller *ctl)
{
    size_t i;

    keel_map_free(&ctl->map);
    if (ctl->pending_valid)
        keel_map_free(&ctl->pending);
    for (i = 0; i < ctl->nnodes; i++)
        keel_node_state_free(&ctl->nodes[i].state);
    free(ctl->nodes);
    free(ctl->forgotten);
    free(ctl->seen);
    free(ctl->checks);
    free(ctl->proof_owner);
    ctl->proof_owner = NULL;
    ctl->proofs_cap = 0;
    for (i = 0; i < ctl->ncaps; i++)
        free(ctl->caps[i].moves);
    free(ctl->caps);
    memset(ctl, 0, sizeof *ctl);
}

int keel_controller_start(keel_controller *ctl, const char *candidate,
                          uint64_t now)
{
    size_t i;

    if (ctl->pending_valid)
        keel_map_free(&ctl->pending);
    ctl->pending_valid = 0;
    snprintf(ctl->candidate, sizeof ctl->candidate, "%s", candidate);
    ctl->now = now;
    ctl->error = 0;
    ctl->busy = ctl->stalled = 0;
    ctl->bump_tries = 0;
    ctl->deadline = 0;
    ctl->have_map = 0;
    ctl->map_dirty = 1;
    ctl->forgot_dirty = 1;
    ctl->forgot_watched = 0;
    ctl->nseen = 0; /* a new term waits anew for units never owned */
    ctl->formation_deadline = 0;
    ctl->dead_deadline = 0;
    ctl->fallback_deadline = 0;
    /* A new term re-reads everything and re-arms every watch. */
    for (i = 0; i < ctl->nnodes; i++) {
        ctl->nodes[i].dirty = 1;
        ctl->nodes[i].fallback_at = 0;
        ctl->nodes[i].watched = 0;
    }
    for (i = 0; i < ctl->ncaps; i++)
        memset(ctl->caps[i].moves, 0,
               ctl->opt.shard_count * sizeof(keel_handoff));
    return bump_read(ctl);
}

void keel_controller_stop(keel_controller *ctl)
{
    if (ctl->state == C_RUNNING || ctl->state == C_BUMP_READ ||
        ctl->state == C_BUMP_WRITE)
        ctl->state = C_IDLE;
}

int keel_controller_active(const keel_controller *ctl)
{
    return ctl->state == C_RUNNING;
}

void keel_controller_members_changed(keel_controller *ctl, uint64_t now)
{
    size_t i;

    ctl->now = now;
    for (i = 0; i < ctl->members->nview; i++)
        keel__ctl_track(ctl, ctl->members->view[i].name);
    /* Whether or not this node leads now: a controller elected after a
     * member went must still know its timeout and when it went. */
    keel__ctl_observe_all(ctl);
    pump(ctl);
}

void keel_controller_tick(keel_controller *ctl, uint64_t now)
{
    ctl->now = now;
    pump(ctl);
}

void keel_controller_resume(keel_controller *ctl)
{
    int rc;

    if (!ctl->stalled || ctl->busy)
        return;
    ctl->stalled = 0;
    if (ctl->state == C_BUMP_READ) {
        if ((rc = bump_read(ctl)) != 0)
            fail(ctl, rc);
        return;
    }
    pump(ctl);
}

uint64_t keel_controller_deadline(const keel_controller *ctl)
{
    uint64_t best = 0;
    size_t i;
    uint32_t s;

    if (ctl->state != C_RUNNING)
        return 0;
    best = ctl->formation_deadline;
    if (ctl->dead_deadline != 0 && (best == 0 || ctl->dead_deadline < best))
        best = ctl->dead_deadline;
    if (ctl->fallback_deadline != 0 &&
        (best == 0 || ctl->fallback_deadline < best))
        best = ctl->fallback_deadline;
    for (i = 0; i < ctl->ncaps; i++)
        for (s = 0; s < ctl->opt.shard_count; s++) {
            uint64_t d = keel_handoff_deadline(&ctl->caps[i].moves[s]);
            if (d != 0 && (best == 0 || d < best))
                best = d;
        }
    return best;
}

int keel_controller_republish(keel_controller *ctl)
{
    keel_shard_map next;
    int rc;

    if (ctl->state != C_RUNNING)
        return KEEL_EDEPOSED;
    if (keel_zk_session_id(ctl->zk) == 0)
        return KEEL_ESESSION; /* a request in flight will never answer */
    if (ctl->busy || ctl->stalled || !ctl->have_map)
        return KEEL_EOVERLOAD;
    if ((rc = keel_map_copy(&next, &ctl->map)) != 0)
        return rc;
    if ((rc = write_map(ctl, &next, 0)) != 0)
        keel_map_free(&next);
    return rc;
}

const keel_handoff *keel_controller_move(const keel_controller *ctl,
                                         const char *cap, uint32_t shard)
{
    size_t i;

    if (shard >= ctl->opt.shard_count)
        return NULL;
    for (i = 0; i < ctl->ncaps; i++)
        if (strcmp(ctl->caps[i].name, cap) == 0)
            return &ctl->caps[i].moves[shard];
    return NULL;
}
