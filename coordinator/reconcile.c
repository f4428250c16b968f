/* The controller's decision: the map it wants written now, reconciled
 * from the written map, the member view and the nodes' states. Per unit:
 * the drop and add requests its primary published, failover of a primary
 * that is gone, placement of the primary (handoffs, promotion of an
 * in-sync backup), and the replica list following placement
 * (docs/cluster.md, "Replicas and the in-sync set"). The controller
 * (controller.c) reads what this decides from and writes what it builds;
 * what the two share is in controller_int.h. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/controller_int.h"
#include "coordinator/failover.h"
#include "coordinator/replicaset.h"
#include "keel.h"

/* keel_controller_options.formation_ms by default. */
#define FORMATION_MS 3000

static const keel_state_entry *entry_of(keel_controller *ctl, int id,
                                        const char *cap, uint32_t shard)
{
    keel_ctl_node *n;

    if (id < 0)
        return NULL;
    n = &ctl->nodes[id];
    return n->have_state ? keel_node_state_find(&n->state, cap, shard) : NULL;
}

/* Feeds a machine what the node states and the member view say now. */
static void feed(keel_controller *ctl, keel_handoff *h, const char *cap,
                 uint32_t shard)
{
    const keel_state_entry *e;

    e = entry_of(ctl, (int)h->from, cap, shard);
    if (e != NULL && e->role == KEEL_ROLE_RELEASED) {
        int to = keel__ctl_track(ctl, ctl->nodes[h->from].state.names[e->to]);
        if (to >= 0)
            keel_handoff_released(h, h->from, e->shard_epoch, (uint32_t)to,
                                  ctl->now);
    }
    e = entry_of(ctl, (int)h->to, cap, shard);
    if (e != NULL && e->role == KEEL_ROLE_PRIMARY)
        keel_handoff_fenced(h, h->to, e->shard_epoch);
    /* Forgotten by the operator after the move began: it may complete
     * without A (after the grace). */
    if (keel__ctl_loss_ok(ctl, ctl->nodes[h->from].name)) {
        h->flags |= KEEL_HANDOFF_F_LOSS_OK;
        h->grace_ms = keel__ctl_grace_of(ctl, ctl->nodes[h->from].name);
    }
    keel__ctl_observe(ctl, (int)h->from);
    /* The clock starts when this controller first saw A missing, not when
     * the move began (a forget may come long after). */
    keel_handoff_member(h, h->from, !ctl->nodes[h->from].gone,
                        ctl->nodes[h->from].gone ? ctl->nodes[h->from].gone_at
                                                 : ctl->now);
    keel_handoff_tick(h, ctl->now);
}

/* ---------------------------------------------------- replica sets */

static int rs_live(const char *name, void *arg)
{
    keel_controller *ctl = arg;

    return keel__ctl_live(ctl, name);
}

/* A member's store id as the map keeps it ("" when none or malformed). */
static const char *member_store(const keel_member *m)
{
    return m != NULL && keel_map_store_valid(m->store) &&
                   strspn(m->store, "0") != KEEL_MAP_STORE_HEX
               ? m->store
               : "";
}

static int rs_has_store(const char *name, void *arg)
{
    keel_controller *ctl = arg;

    return member_store(keel_membership_find(ctl->members, name))[0] != '\0';
}

static int rs_forgotten(const char *name, void *arg)
{
    return keel_controller_forgotten(arg, name);
}

static int rs_placeable(const char *name, void *arg)
{
    keel_controller *ctl = arg;
    const keel_member *m = keel_membership_find(ctl->members, name);

    return m != NULL && !m->leaving && !m->addr_bad;
}

static int rs_declares(const char *name, const char *cap, void *arg)
{
    keel_controller *ctl = arg;
    const keel_member *m = keel_membership_find(ctl->members, name);

    return m != NULL ? keel_caps_declare(m->caps, m->ncaps, cap)
                     : keel_caps_declare(NULL, 0, cap);
}

static int rs_suspect(const char *name, void *arg)
{
    keel_controller *ctl = arg;

    return ctl->opt.peer_down != NULL &&
           ctl->opt.peer_down(name, ctl->opt.peer_down_arg);
}

static const char *rs_store(const char *name, void *arg)
{
    keel_controller *ctl = arg;
    const keel_member *m = keel_membership_find(ctl->members, name);

    return m != NULL ? member_store(m) : NULL;
}

static uint32_t dead_ms(const keel_controller *ctl)
{
    return ctl->opt.replica_dead_ms ? ctl->opt.replica_dead_ms
                                    : KEEL_CONTROLLER_REPLICA_DEAD_MS;
}

/* Rule 2: a gone replica keeps its places until it has been gone for the
 * dead time, as this node measures it (keel__ctl_observe()); the reconciliation
 * wakes up when the first of those times ends. Not seen missing in a
 * completed listing yet (no listing, or the node unknown): it waits. */
static int rs_waiting(const char *name, void *arg)
{
    keel_controller *ctl = arg;
    int id = keel_controller_node_id(ctl, name);
    uint64_t until;

    if (id < 0 || !ctl->nodes[id].gone)
        return 1;
    until = ctl->nodes[id].gone_at + dead_ms(ctl);
    if (ctl->now >= until) {
        if (!ctl->nodes[id].dead_logged)
            keel_info("cluster: node %s has been gone for %llu ms (dead "
                      "time %u ms): live nodes replace it in the replica "
                      "lists and catch up",
                      name,
                      (unsigned long long)(ctl->now -
                                           ctl->nodes[id].gone_at),
                      dead_ms(ctl));
        ctl->nodes[id].dead_logged = 1;
        return 0;
    }
    if (ctl->dead_deadline == 0 || until < ctl->dead_deadline)
        ctl->dead_deadline = until;
    return 1;
}

static int rs_leaving(const char *name, void *arg)
{
    keel_controller *ctl = arg;
    const keel_member *m = keel_membership_find(ctl->members, name);

    return m != NULL && m->leaving;
}

/* The unit's replica set, by name (the names are next's). */
static void unit_rs(const keel_shard_map *next, const keel_map_unit *u,
                    keel_rs *rs)
{
    int r;

    memset(rs, 0, sizeof *rs);
    for (r = 0; r < u->nreplicas; r++)
        rs->names[r] = next->nodes[u->replicas[r]];
    rs->n = u->nreplicas;
    rs->insync = u->insync;
    rs->fallback = u->promoted ? u->fallback : 0;
}

/* The index of name in next's node table, added if missing with the store
 * its member publishes (unknown for a node that is not a member). */
static int add_node(keel_controller *ctl, keel_shard_map *next,
                    const char *name)
{
    uint32_t before = next->nnodes;
    int idx = keel_map_add_node(next, name);

    if (idx >= 0 && next->nnodes != before)
        keel_map_set_store(
            next, (uint32_t)idx,
            member_store(keel_membership_find(ctl->members, name)));
    return idx;
}

/* Writes a replica set into unit (c, s) of next. The names may be next's
 * own, which adding nodes does not move (only the table of pointers). */
static int put_rs(keel_controller *ctl, keel_shard_map *next, uint32_t c,
                  uint32_t s, const keel_rs *rs)
{
    keel_map_unit *u;
    int r, idx;

    for (r = 0; r < rs->n; r++)
        if ((idx = add_node(ctl, next, rs->names[r])) < 0)
            return idx;
    /* adding may renumber: look every index up once all are in */
    u = keel_map_unit_at(next, c, s);
    for (r = 0; r < rs->n; r++)
        u->replicas[r] = (uint16_t)keel_map_node_index(next, rs->names[r]);
    u->nreplicas = rs->n;
    u->insync = rs->insync;
    u->fallback = rs->fallback;
    return 0;
}

/* A node back on another store (its member znode names another store id
 * than the map's node table) is a new, empty replica: it leaves the
 * in-sync set of every unit it backs up, and the table records its new
 * store, in the same map write.
 *
 * Not while it is the primary of a unit, unless the operator forgot it
 * (its data given up): the store check before joining keeps such a node
 * out, but a controller that promoted it on a view from before its
 * restart (its old session still listed) can still make it one. Its
 * units' data is on the store the table records, so the table keeps that
 * store, which keeps the node from serving them (it acts as primary only
 * on the store recorded); the node is marked store_lost, and its units
 * fail over to an in-sync backup like a dead primary's (failover()), or
 * wait for that store when none is left. record_stores() records the new
 * store once it is the primary of nothing. */
static void check_stores(keel_controller *ctl, keel_shard_map *next)
{
    size_t i, nunits = (size_t)next->ncaps * next->shard_count;
    uint32_t j;

    for (i = 0; i < ctl->nnodes; i++)
        ctl->nodes[i].store_lost = 0;
    for (j = 0; j < next->nnodes; j++) {
        const keel_member *m =
            keel_membership_find(ctl->members, next->nodes[j]);
        const char *now = member_store(m);
        size_t dropped = 0, owned;
        int id;
        if (m == NULL || strcmp(next->store_ids[j], now) == 0) {
            if (m != NULL &&
                (id = keel_controller_node_id(ctl, next->nodes[j])) >= 0)
                ctl->nodes[id].store_lost_logged = 0;
            continue;
        }
        for (i = 0; i < nunits; i++) {
            keel_map_unit *u = &next->units[i];
            int pos = keel_map_replica_pos(u, (uint16_t)j);
            if (pos >= 1 && keel_map_insync(u, pos)) {
                u->insync &= (uint8_t)~(1u << pos);
                dropped++;
            }
            if (pos >= 1) /* nor can it stand in for a promoted primary */
                u->fallback &= (uint8_t)~(1u << pos);
        }
        if (next->store_ids[j][0] != '\0' &&
            !keel_controller_forgotten(ctl, next->nodes[j]) &&
            (owned = keel_map_units_led(next, j)) > 0 &&
            (id = keel__ctl_track(ctl, next->nodes[j])) >= 0) {
            keel_ctl_node *n = &ctl->nodes[id];
            n->store_lost = 1;
            if (!n->store_lost_logged)
                keel_warn("cluster: node %s runs on store %s, not on %s "
                          "where the data of the %zu unit(s) it is the "
                          "primary of is: they go to an in-sync backup; a "
                          "unit without one waits for that store, or for "
                          "`keel node forget`",
                          next->nodes[j], now[0] ? now : "(none)",
                          next->store_ids[j], owned);
            n->store_lost_logged = 1;
            continue;
        }
        if (next->store_ids[j][0] != '\0' || dropped > 0)
            keel_info("cluster: node %s runs on store %s, not %s: out of "
                      "sync as a backup of %zu unit(s)",
                      next->nodes[j], now[0] ? now : "(none)",
                      next->store_ids[j][0] ? next->store_ids[j] : "(none)",
                      dropped);
        keel_map_set_store(next, j, now);
    }
}

/* After the units are placed: a node check_stores() found on another
 * store while it was a primary, and that is the primary of nothing now
 * (its units failed over in this write), gets its new store recorded. */
static void record_stores(keel_controller *ctl, keel_shard_map *next)
{
    uint32_t j;

    for (j = 0; j < next->nnodes; j++) {
        int id = keel_controller_node_id(ctl, next->nodes[j]);
        const char *now;
        if (id < 0 || !ctl->nodes[id].store_lost ||
            keel_map_units_led(next, j) > 0)
            continue;
        now = member_store(keel_membership_find(ctl->members, next->nodes[j]));
        keel_info("cluster: node %s is the primary of no unit any more: "
                  "recording its store %s",
                  next->nodes[j], now[0] ? now : "(none)");
        keel_map_set_store(next, j, now);
    }
}

/* Honours the drop requests the unit's primary publishes for it at the
 * unit's shard_epoch: those backups leave the in-sync set. A request
 * from another epoch, or for a node not in sync, is stale: ignored. */
static void apply_drops(keel_controller *ctl, keel_shard_map *next,
                        const char *cap, uint32_t c, uint32_t s)
{
    keel_map_unit *u = keel_map_unit_at(next, c, s);
    const keel_state_entry *e;
    keel_rs rs;
    int id, d, changed = 0;

    if (u->nreplicas < 2 || u->shard_epoch == 0)
        return;
    id = keel_controller_node_id(ctl, next->nodes[u->replicas[0]]);
    /* A gone primary's requests wait: it cannot have acknowledged
     * anything without a backup it asked to drop before a map it applied
     * showed the drop, so that backup still holds every acknowledged
     * write and may be the one failover needs. */
    if (id >= 0 && ctl->nodes[id].gone)
        return;
    e = entry_of(ctl, id, cap, s);
    if (e == NULL || e->role != KEEL_ROLE_PRIMARY ||
        e->shard_epoch != u->shard_epoch || e->ndrop == 0)
        return;
    unit_rs(next, u, &rs);
    for (d = 0; d < e->ndrop; d++) {
        const char *name = ctl->nodes[id].state.names[e->drop[d]];
        if (keel_rs_drop(&rs, name)) {
            keel_info("cluster: %s/%u: %s leaves the in-sync set at epoch "
                      "%llu (asked by its primary %s)",
                      keel_cap_name(cap), s, name,
                      (unsigned long long)u->shard_epoch,
                      ctl->nodes[id].name);
            changed = 1;
        }
    }
    if (changed)
        u->insync = rs.insync;
}

/* Notes that the map being built relies on node id's state as read:
 * the write carries a CHECK of nodes/<node>/state at that version. */
static int note_check(keel_controller *ctl, size_t id)
{
    struct keel_ctl_check *v;
    size_t i;

    for (i = 0; i < ctl->nchecks; i++)
        if (ctl->checks[i].node == id)
            return 0;
    if (ctl->nchecks == ctl->checks_cap) {
        size_t cap = ctl->checks_cap ? 2 * ctl->checks_cap : 8;
        v = realloc(ctl->checks, cap * sizeof *v);
        if (v == NULL)
            return KEEL_ENOMEM;
        ctl->checks = v;
        ctl->checks_cap = cap;
    }
    ctl->checks[ctl->nchecks].node = id;
    ctl->checks[ctl->nchecks].version = ctl->nodes[id].state_version;
    ctl->nchecks++;
    return 0;
}

/* Rule 7 (keel_rs_add): honours the add requests the unit's primary
 * publishes for it at the unit's shard_epoch. Once one is honoured, the
 * write carries a check that the primary's state is still the one read:
 * a primary that withdrew the request meanwhile, and may already have
 * stopped counting the backup, makes the write fail, and the controller
 * decides again from fresh reads. Returns 0 or KEEL_ENOMEM. */
static int apply_adds(keel_controller *ctl, keel_shard_map *next,
                      const char *cap, uint32_t c, uint32_t s,
                      const keel_rs_env *env)
{
    keel_map_unit *u = keel_map_unit_at(next, c, s);
    const keel_state_entry *e;
    const keel_node_state *st;
    keel_rs rs;
    int id, a, d, added = 0;

    if (u->nreplicas < 2 || u->shard_epoch == 0)
        return 0;
    id = keel_controller_node_id(ctl, next->nodes[u->replicas[0]]);
    e = entry_of(ctl, id, cap, s);
    if (e == NULL || e->role != KEEL_ROLE_PRIMARY || e->nadd == 0)
        return 0;
    st = &ctl->nodes[id].state;
    unit_rs(next, u, &rs);
    for (a = 0; a < e->nadd; a++) {
        keel_rs_add_req req;
        int ri;
        req.from = ctl->nodes[id].name;
        req.shard_epoch = e->shard_epoch;
        req.backup = st->names[e->add[a]];
        req.store = e->add_store[a];
        req.drop_too = 0;
        for (d = 0; d < e->ndrop; d++)
            if (e->drop[d] == e->add[a])
                req.drop_too = 1;
        /* The table as read: this write's store changes (rule 4) only
         * ever clear in-sync bits. */
        ri = keel_map_node_index(&ctl->map, req.backup);
        if (!keel_rs_add(env, &rs, u->shard_epoch, &req,
                         ri >= 0 ? ctl->map.store_ids[ri] : NULL))
            continue;
        /* logged once the write lands (count_changes): a write that
         * fails is decided again, and would log it twice */
        keel_debug("cluster: %s/%u: honouring %s's add request for %s at "
                   "epoch %llu (store %s)",
                   keel_cap_name(cap), s, req.from, req.backup,
                   (unsigned long long)u->shard_epoch, req.store);
        added = 1;
    }
    if (!added)
        return 0;
    if (note_check(ctl, (size_t)id) != 0)
        return KEEL_ENOMEM; /* unchecked, nothing is honoured */
    u->insync = rs.insync;
    return 0;
}

static const char *name_of(const keel_shard_map *m, uint16_t idx)
{
    return idx == KEEL_MAP_NO_NODE ? NULL : m->nodes[idx];
}

/* When this controller first saw a member able to hold cap's units
 * (recorded now if never); now as well when out of memory. */
static uint64_t seen_at(keel_controller *ctl, const char *cap)
{
    struct keel_ctl_seen *v;
    size_t i;

    for (i = 0; i < ctl->nseen; i++)
        if (strcmp(ctl->seen[i].name, cap) == 0)
            return ctl->seen[i].at;
    v = realloc(ctl->seen, (ctl->nseen + 1) * sizeof *v);
    if (v == NULL)
        return ctl->now;
    ctl->seen = v;
    snprintf(v[ctl->nseen].name, sizeof v[0].name, "%s", cap);
    v[ctl->nseen].at = ctl->now;
    ctl->nseen++;
    return ctl->now;
}

/* Failover (coordinator/failover.h): if the primary of unit (c, s),
 * node `from`, is gone and one of the unit's in-sync backups can take its
 * place, writes that backup primary at shard_epoch + 1 into next, alone
 * in sync and marked promoted, and returns 0. Returns 1 when the unit
 * does not fail over, or a code.
 *
 * A primary that was itself promoted at the unit's epoch and is gone
 * without having written its state since is alone in sync but answered
 * nothing: a promoted primary serves only once a state write of its,
 * issued after it applied the map that promoted it, has landed
 * (keel_cluster_placement), and that write changes the state's mzxid
 * from the one the map recorded (fallback_since). So the backups that
 * were in sync before that promotion (its fallbacks) still hold every
 * acknowledged write, and one of them takes the unit, the write checking
 * that the state is still the one read. This is what keeps a unit
 * whose primary and first backup die within a session timeout of each
 * other from waiting for one of them: the controller may promote the
 * second while it is dying too, its session not expired yet. */
static int failover(keel_controller *ctl, keel_shard_map *next,
                    const char *cap, uint32_t c, uint32_t s, keel_handoff *h,
                    int from, const keel_rs_env *env)
{
    keel_map_unit *u = keel_map_unit_at(next, c, s);
    const keel_state_entry *e = entry_of(ctl, from, cap, s);
    keel_failover_unit fu;
    keel_rs old, rs;
    int pos, to, rc, stand_in, gone;
    int64_t mzxid;

    if (u->shard_epoch == 0 || u->nreplicas < 2)
        return 1;
    keel__ctl_observe(ctl, from);
    unit_rs(next, u, &old);
    memset(&fu, 0, sizeof fu);
    fu.rs = &old;
    /* keel__ctl_track() below may move ctl->nodes: what is needed of `from` is
     * read now. */
    gone = ctl->nodes[from].gone;
    mzxid = ctl->nodes[from].state_mzxid;
    /* A primary on another store than its units' data is as good as
     * gone for them (check_stores): it never served them there. */
    fu.primary_gone = gone || ctl->nodes[from].store_lost;
    fu.released = (e != NULL && e->role == KEEL_ROLE_RELEASED &&
                   e->shard_epoch == u->shard_epoch) ||
                  (h->state != KEEL_HANDOFF_IDLE &&
                   h->state != KEEL_HANDOFF_DONE &&
                   h->state != KEEL_HANDOFF_ABORTED &&
                   (h->flags & KEEL_HANDOFF_F_RELEASED) &&
                   h->epoch == u->shard_epoch);
    for (pos = 1; pos < old.n; pos++) /* a forgotten one gave its data up */
        if (keel_controller_forgotten(ctl, old.names[pos]))
            old.fallback &= (uint8_t)~(1u << pos);
    fu.stand_in = gone && u->promoted && old.fallback != 0 && mzxid > 0 &&
                  (uint64_t)mzxid == u->fallback_since;
    if ((pos = keel_failover_pick(env, &fu)) == 0)
        return 1;
    stand_in = !((old.insync >> pos) & 1);
    if ((to = keel__ctl_track(ctl, old.names[pos])) < 0)
        return KEEL_ENOMEM;
    if (stand_in) {
        /* The write relies on the state as read: unchanged when it
         * lands, or it fails and the unit is decided again. */
        if (note_check(ctl, (size_t)from) != 0)
            return KEEL_ENOMEM;
        keel_info("cluster: %s/%u: primary %s, promoted at epoch %llu, is "
                  "gone without having served it; promoting %s, in sync "
                  "before that promotion, at epoch %llu",
                  keel_cap_name(cap), s, old.names[0],
                  (unsigned long long)u->shard_epoch, old.names[pos],
                  (unsigned long long)u->shard_epoch + 1);
        keel_rs_stand_in(env, &old, pos, &rs);
    } else {
        keel_info("cluster: %s/%u: primary %s %s; promoting in-sync backup "
                  "%s at epoch %llu",
                  keel_cap_name(cap), s, old.names[0],
                  gone ? "is gone" : "runs on another store",
                  old.names[pos], (unsigned long long)u->shard_epoch + 1);
        keel_rs_promote(env, &old, pos, &rs);
    }
    keel_handoff_promote(h, (uint32_t)from, (uint32_t)to, u->shard_epoch);
    if ((rc = put_rs(ctl, next, c, s, &rs)) != 0)
        return rc;
    u = keel_map_unit_at(next, c, s);
    u->shard_epoch++;
    u->target = KEEL_MAP_NO_NODE;
    u->promoted = 1;
    /* Its fallbacks count while its state stays as read now. */
    u->fallback_since = ctl->nodes[to].state_mzxid > 0
                            ? (uint64_t)ctl->nodes[to].state_mzxid
                            : 0;
    if (u->fallback_since == 0)
        u->fallback = 0;
    if (u->fallback != 0)
        ctl->nodes[to].fallback_at = ctl->now;
    return 0;
}

/* A promoted unit's fallbacks stop counting once its primary has written
 * its state since the promotion (it may have served since), or when its
 * primary changes; the map then drops them. Also when its primary stays
 * a member, silent, for twice its grace: it is not dying, and a node of
 * the release before, which cannot read a map with fallbacks (format 4),
 * would never write its state for it. Dropping them only ever takes a
 * choice away from failover. */
static void settle_fallbacks(keel_controller *ctl, keel_map_unit *u,
                             const keel_shard_map *next)
{
    keel_ctl_node *p;
    uint64_t until;
    int id;

    if (!u->promoted || u->fallback == 0 || u->nreplicas == 0 ||
        (id = keel_controller_node_id(ctl, next->nodes[u->replicas[0]])) <
            0)
        goto clear;
    p = &ctl->nodes[id];
    if (p->state_mzxid <= 0 || (uint64_t)p->state_mzxid != u->fallback_since)
        goto clear;
    if (p->gone)
        return; /* the failover it may need */
    if (p->fallback_at == 0)
        p->fallback_at = ctl->now; /* a new controller: from now */
    until = p->fallback_at + 2 * (uint64_t)keel_controller_grace(ctl, p->name);
    if (ctl->now < until) {
        if (ctl->fallback_deadline == 0 || until < ctl->fallback_deadline)
            ctl->fallback_deadline = until;
        return;
    }
clear:
    u->fallback = 0;
    u->fallback_since = 0;
}

/* Whether name is listed as a backup of u (position 1 on) and is in its
 * in-sync set. */
static int insync_backup(const keel_shard_map *next, const keel_map_unit *u,
                         const char *name)
{
    int idx = keel_map_node_index(next, name);
    int pos = idx < 0 ? -1 : keel_map_replica_pos(u, (uint16_t)idx);

    return pos >= 1 && keel_map_insync(u, pos);
}

static int desired(const keel_rs_env *env, const char *name)
{
    size_t i;

    for (i = 0; i < env->ndesired; i++)
        if (strcmp(env->desired[i], name) == 0)
            return 1;
    return 0;
}

/* Whether owner may keep its units as far as placement goes: live, not
 * leaving, and still one of the replicas placement wants. A move away
 * from such an owner is only to spread the units. */
static int may_stay(const char *owner, const keel_rs_env *env)
{
    return env->live(owner, env->arg) && !env->leaving(owner, env->arg) &&
           desired(env, owner);
}

/* Whether a move of unit u from owner to want, which placement asks for
 * only to spread the units (the owner is live, not leaving, and still
 * one of the replicas placement wants), waits until want is an in-sync
 * backup. Moved now, want would get the unit by a stream, and the unit
 * is closed to calls while a stream runs. Waiting, want is a backup out
 * of sync (keel_rs_follow lists it) and catches up from the owner, which
 * serves the unit meanwhile; the move is then onto an in-sync backup,
 * without a stream. A node that publishes no store can never be added
 * to an in-sync set (rule 7): its units move by a stream as before. */
static int catch_up_first(const keel_shard_map *next, const keel_map_unit *u,
                          const char *owner, const char *want,
                          const keel_rs_env *env)
{
    if (env->replicas < 2 || want == NULL || !may_stay(owner, env) ||
        !env->live(want, env->arg) || !env->has_store(want, env->arg))
        return 0;
    return !insync_backup(next, u, want);
}

/* An in-sync backup of u that a move may go to without a stream: live,
 * placeable (not leaving, reachable) and one of the replicas placement
 * wants. */
static int move_backup(const keel_shard_map *next, const keel_map_unit *u,
                       const char *name, const keel_rs_env *env)
{
    return insync_backup(next, u, name) && env->live(name, env->arg) &&
           env->placeable(name, env->arg) && desired(env, name);
}

/* Where a move of u away from owner goes: placement's choice want,
 * unless the owner must go (it leaves, or placement no longer wants it)
 * and want is not an in-sync backup. Then the move goes to an in-sync
 * backup placement wants, so that it streams nothing: the one it is
 * already going to (current), if it is such, else the first in list
 * order. Placement's choice gets the unit later, once it has caught up,
 * by a move of its own (catch_up_first). With no such backup, want, by a
 * stream. An owner that may stay is moved only to spread the units: to
 * want, once it has caught up (catch_up_first), or by a stream when it
 * cannot. */
static const char *move_target(const keel_shard_map *next,
                               const keel_map_unit *u, const char *owner,
                               const char *want, const char *current,
                               const keel_rs_env *env)
{
    int r;

    if (env->replicas < 2 || want == NULL || strcmp(want, owner) == 0 ||
        insync_backup(next, u, want) || may_stay(owner, env))
        return want;
    if (current != NULL && move_backup(next, u, current, env))
        return current;
    for (r = 1; r < u->nreplicas; r++) {
        const char *b = next->nodes[u->replicas[r]];
        if (move_backup(next, u, b, env))
            return b;
    }
    return want;
}

/* The primary position of unit (c, s): first owner, handoffs, dead
 * owners. `want` is placement's choice for primary, env what the replica
 * rules need; a unit never owned is placed only if `fresh_ok`. Returns 0
 * or a code. */
static int place_primary(keel_controller *ctl, keel_shard_map *next,
                         const char *cap, uint32_t c, uint32_t s,
                         const char *want, const keel_rs_env *env,
                         int fresh_ok)
{
    keel_map_unit *u = keel_map_unit_at(next, c, s);
    const char *owner = u->nreplicas > 0 ? next->nodes[u->replicas[0]] : NULL;
    const char *target = name_of(next, u->target);
    keel_handoff *h = keel__ctl_machine(ctl, cap, s, 1);
    int from, to, rc;

    if (h == NULL)
        return KEEL_ENOMEM;
    if (owner == NULL) {
        /* Never owned: nobody holds data, no handoff needed. */
        if (want != NULL && fresh_ok) {
            keel_rs rs;
            keel_rs_fresh(env, &rs);
            if ((rc = put_rs(ctl, next, c, s, &rs)) != 0)
                return rc;
            u = keel_map_unit_at(next, c, s);
            u->shard_epoch++;
            u->promoted = 0;
            u->target = KEEL_MAP_NO_NODE;
        }
        return 0;
    }
    if ((from = keel__ctl_track(ctl, owner)) < 0)
        return KEEL_ENOMEM;
    if ((rc = failover(ctl, next, cap, c, s, h, from, env)) <= 0)
        return rc;
    if (ctl->nodes[from].store_lost)
        return 0; /* its data is on a store it does not run on: wait */
    want = move_target(next, u, owner, want, target, env);
    if (target == NULL) {
        const keel_state_entry *e = entry_of(ctl, from, cap, s);
        if (h->state == KEEL_HANDOFF_AWAIT_FENCE)
            feed(ctl, h, cap, s);
        if (e != NULL && e->role == KEEL_ROLE_RELEASED &&
            e->shard_epoch == u->shard_epoch &&
            h->state != KEEL_HANDOFF_PRIMARY_PENDING) {
            /* The owner handed the unit over at its current epoch
             * though no move is in the map (called off after the
             * recipient had stored it): the recipient has the only
             * copy, live or not. It owns the unit from now on; if it is
             * gone, the unit waits for it as for any dead owner. */
            const char *rcpt = ctl->nodes[from].state.names[e->to];
            if ((to = keel__ctl_track(ctl, rcpt)) < 0)
                return KEEL_ENOMEM;
            keel_info("cluster: %s/%u was handed from %s to %s after its "
                      "move was called off: %s owns it",
                      keel_cap_name(cap), s, owner, ctl->nodes[to].name,
                      ctl->nodes[to].name);
            keel_handoff_adopt(h, (uint32_t)from, (uint32_t)to,
                               u->shard_epoch, keel__ctl_loss_ok(ctl, owner),
                               keel__ctl_grace_of(ctl, owner));
        } else if (want == NULL || strcmp(want, owner) == 0) {
            return 0;
        }
    }
    if (target == NULL && h->state == KEEL_HANDOFF_PRIMARY_PENDING) {
        /* adopted above: written below */
    } else if (target == NULL) {
        if (!keel__ctl_live(ctl, owner) && !keel__ctl_loss_ok(ctl, owner))
            return 0; /* the owner has the only copy: wait */
        if (catch_up_first(next, u, owner, want, env))
            return 0;
        if ((to = keel__ctl_track(ctl, want)) < 0)
            return KEEL_ENOMEM;
        keel_handoff_begin(h, (uint32_t)from, (uint32_t)to, u->shard_epoch,
                           keel__ctl_loss_ok(ctl, owner),
                           keel__ctl_grace_of(ctl, owner));
        feed(ctl, h, cap, s);
    } else {
        if ((to = keel__ctl_track(ctl, target)) < 0)
            return KEEL_ENOMEM;
        if (h->state == KEEL_HANDOFF_IDLE || h->state == KEEL_HANDOFF_DONE ||
            h->state == KEEL_HANDOFF_ABORTED)
            keel_handoff_resume(h, (uint32_t)from, (uint32_t)to,
                                u->shard_epoch, 0,
                                keel__ctl_loss_ok(ctl, owner),
                                keel__ctl_grace_of(ctl, owner));
        feed(ctl, h, cap, s);
        if (want != NULL && strcmp(want, ctl->nodes[h->to].name) &&
            !(h->flags & KEEL_HANDOFF_F_RELEASED) &&
            h->state != KEEL_HANDOFF_PRIMARY_PENDING) {
            if (strcmp(want, owner) == 0) {
                /* Back to the owner before it let go: cancel. */
                memset(h, 0, sizeof *h);
                u->target = KEEL_MAP_NO_NODE;
                return 0;
            }
            if ((to = keel__ctl_track(ctl, want)) < 0)
                return KEEL_ENOMEM;
            keel_handoff_retarget(h, (uint32_t)to);
        }
    }
    /* The unit as the machine says it must be written. */
    if (h->state == KEEL_HANDOFF_TARGET_PENDING ||
        h->state == KEEL_HANDOFF_AWAIT_RELEASE ||
        h->state == KEEL_HANDOFF_AWAIT_DEATH) {
        int t = add_node(ctl, next, ctl->nodes[h->to].name);
        if (t < 0)
            return t;
        u = keel_map_unit_at(next, c, s);
        u->target = (uint16_t)t;
    } else if (h->state == KEEL_HANDOFF_PRIMARY_PENDING) {
        uint64_t epoch = keel_handoff_next_epoch(h);
        keel_rs old, rs;
        unit_rs(next, u, &old);
        keel_rs_move(env, &old, ctl->nodes[h->to].name,
                     epoch == u->shard_epoch + 1, &rs);
        if ((rc = put_rs(ctl, next, c, s, &rs)) != 0)
            return rc;
        u = keel_map_unit_at(next, c, s);
        u->shard_epoch = epoch;
        u->target = KEEL_MAP_NO_NODE;
        u->promoted = 0;
    }
    return 0;
}

/* Whether placement m, encoded, takes at most the map budget. */
static int placement_fits(const keel_controller *ctl, const keel_shard_map *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;

    if (keel_map_encode(m, &buf, &len) != 0)
        return 1; /* the write reports it */
    free(buf);
    return len <= (ctl->opt.map_budget ? ctl->opt.map_budget
                                       : KEEL_CONTROLLER_MAP_BUDGET);
}

/* Logs which capabilities reconcile left out, when that changes. */
static void note_left_out(keel_controller *ctl, const char *const *caps,
                          size_t from, size_t to)
{
    char list[sizeof ctl->left_out];
    size_t i, n = 0;

    list[0] = '\0';
    for (i = from; i < to; i++) {
        int w = snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "",
                         caps[i]);
        if (w < 0 || (size_t)w >= sizeof list - n)
            break;
        n += (size_t)w;
    }
    if (strcmp(list, ctl->left_out) == 0)
        return;
    if (list[0] != '\0')
        keel_error("cluster: capabilities %s are not placed: with them the "
                   "shard map (%u shards per capability, replicas %d) "
                   "would not fit what a ZooKeeper znode may hold; "
                   "their actors stay unavailable. Use fewer shards or "
                   "fewer capabilities (docs/cluster.md, \"The map "
                   "znode\")",
                   list, ctl->opt.shard_count, ctl->opt.replicas);
    else
        keel_info("cluster: every capability the members declare is "
                  "placed again");
    snprintf(ctl->left_out, sizeof ctl->left_out, "%s", list);
}

/* Builds the map the controller wants written now into *next. Returns 0
 * or a code (KEEL_ENOMEM, KEEL_EINVAL). */
int keel__ctl_reconcile(keel_controller *ctl, keel_shard_map *next)
{
    const keel_membership *mb = ctl->members;
    keel_map_member *mm = NULL;
    const char **caps = NULL;
    keel_shard_map desired;
    keel_rs_env env;
    size_t i, j, ncaps = 0, nmm = 0, k = (size_t)ctl->opt.replicas;
    size_t nold, nall;
    uint32_t c, s;
    int rc;

    memset(&desired, 0, sizeof desired);
    ctl->nchecks = 0;
    if ((rc = keel_map_copy(next, &ctl->map)) != 0)
        return rc;
    check_stores(ctl, next);
    mm = calloc(mb->nview ? mb->nview : 1, sizeof *mm);
    caps = calloc(KEEL_MAP_MAX_CAPS, sizeof *caps);
    if (mm == NULL || caps == NULL) {
        rc = KEEL_ENOMEM;
        goto out;
    }
    /* capabilities: the map's and the members' */
    for (c = 0; c < ctl->map.ncaps && ncaps < KEEL_MAP_MAX_CAPS; c++)
        if (ctl->map.caps[c][0] != '\0')
            caps[ncaps++] = ctl->map.caps[c];
    nold = ncaps;
    for (i = 0; i < mb->nview; i++) {
        /* A leaving member is live (it releases what it holds) but is
         * placed nothing: everything it owns moves to the others. So is
         * a member no node can connect to (its address is not
         * HOST:PORT), and one on another store than the data of units
         * it is the primary of (check_stores): the table cannot record
         * its new store for the units it would back up while it keeps
         * the old one for those, so it backs up nothing, and live nodes
         * take its places. */
        int id = keel_controller_node_id(ctl, mb->view[i].name);
        if (!mb->view[i].leaving && !mb->view[i].addr_bad &&
            !(id >= 0 && ctl->nodes[id].store_lost)) {
            mm[nmm].name = mb->view[i].name;
            mm[nmm].caps = (const char *const *)mb->view[i].caps;
            mm[nmm].ncaps = mb->view[i].ncaps;
            nmm++;
        }
        for (j = 0; j < mb->view[i].ncaps; j++) {
            size_t q;
            for (q = 0; q < ncaps; q++)
                if (strcmp(caps[q], mb->view[i].caps[j]) == 0)
                    break;
            if (q == ncaps && ncaps < KEEL_MAP_MAX_CAPS)
                caps[ncaps++] = mb->view[i].caps[j];
        }
        keel__ctl_track(ctl, mb->view[i].name);
    }
    /* Every node the map lists, so that the dead time of one gone before
     * this controller knew it starts now (observe_all). */
    for (j = 0; j < ctl->map.nnodes; j++)
        if (keel__ctl_track(ctl, ctl->map.nodes[j]) < 0) {
            rc = KEEL_ENOMEM;
            goto out;
        }
    keel__ctl_observe_all(ctl);
    /* A map too large for ZooKeeper could never be written, and the
     * controller would place nothing more, failovers included. So the
     * capabilities new to the map are left out, the last declared first,
     * while the placement takes more than its budget; the others keep
     * their units. Placement alone decides here: nothing has changed
     * yet. */
    nall = ncaps;
    for (;;) {
        rc = keel_map_compute(mm, nmm, caps, ncaps, ctl->opt.shard_count,
                              k, &desired);
        if (rc != 0)
            goto out;
        if (ncaps == nold || placement_fits(ctl, &desired))
            break;
        keel_map_free(&desired);
        ncaps--;
    }
    note_left_out(ctl, caps, ncaps, nall);
    for (c = 0; c < desired.ncaps; c++)
        if ((rc = keel_map_add_cap(next, desired.caps[c])) < 0)
            goto out;
    rc = 0;

    ctl->formation_deadline = 0;
    ctl->dead_deadline = 0;
    ctl->fallback_deadline = 0;
    memset(&env, 0, sizeof env);
    env.replicas = k;
    env.live = rs_live;
    env.has_store = rs_has_store;
    env.forgotten = rs_forgotten;
    env.waiting = rs_waiting;
    env.placeable = rs_placeable;
    env.suspect = rs_suspect;
    env.declares = rs_declares;
    env.store = rs_store;
    env.leaving = rs_leaving;
    env.arg = ctl;
    for (c = 0; c < next->ncaps; c++) {
        const char *cap = next->caps[c];
        int dc = keel_map_cap_index(&desired, cap);
        uint64_t formed = 0;
        env.cap = cap;
        /* A unit never owned goes to the members there are once R of
         * them could hold it, or once the formation wait is over: the
         * members placed in its first write are all in sync, those
         * appended later are not (until catch-up). */
        if (k > 1 && dc >= 0 &&
            keel_map_unit_at(&desired, (uint32_t)dc, 0)->nreplicas > 0)
            formed = seen_at(ctl, cap) + (ctl->opt.formation_ms
                                              ? ctl->opt.formation_ms
                                              : FORMATION_MS);
        for (s = 0; s < next->shard_count; s++) {
            const keel_map_unit *d =
                dc >= 0 ? keel_map_unit_at(&desired, (uint32_t)dc, s) : NULL;
            const char *want[KEEL_MAP_MAX_REPLICAS];
            keel_map_unit *u;
            size_t nwant = 0;
            for (; d != NULL && nwant < d->nreplicas; nwant++)
                want[nwant] = desired.nodes[d->replicas[nwant]];
            env.desired = want;
            env.ndesired = nwant;
            apply_drops(ctl, next, cap, c, s);
            if ((rc = apply_adds(ctl, next, cap, c, s, &env)) != 0)
                goto out;
            int fresh_ok = nwant >= k || ctl->now >= formed;
            if (!fresh_ok && keel_map_unit_at(next, c, s)->nreplicas == 0 &&
                (ctl->formation_deadline == 0 ||
                 formed < ctl->formation_deadline))
                ctl->formation_deadline = formed;
            rc = place_primary(ctl, next, cap, c, s,
                               nwant > 0 ? want[0] : NULL, &env, fresh_ok);
            if (rc != 0)
                goto out;
            u = keel_map_unit_at(next, c, s);
            if (u->nreplicas > 0 && u->shard_epoch > 0) {
                keel_rs old, rs;
                unit_rs(next, u, &old);
                keel_rs_follow(&env, &old, &rs);
                if ((rc = put_rs(ctl, next, c, s, &rs)) != 0)
                    goto out;
            }
            settle_fallbacks(ctl, keel_map_unit_at(next, c, s), next);
        }
    }
    record_stores(ctl, next);
    keel_map_compact_nodes(next);
out:
    keel_map_free(&desired);
    free(mm);
    free(caps);
    if (rc != 0)
        keel_map_free(next);
    return rc;
}
