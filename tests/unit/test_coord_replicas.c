/* Replication on the coordinator's side: the replica-set rules as pure
 * logic (coordinator/replicaset.c), then whole agents on the in-memory
 * ZooKeeper: the cluster's replica count, units placed with backups and
 * in-sync sets, backups following placement, primary moves, a node back
 * on another store, a primary's drop requests, dead backups, a new
 * controller, failover, catch-up (a primary's add requests, rule 7, and
 * their withdrawal), and the runtime's API (keel_cluster_insync_backups,
 * keel_cluster_request_drop, keel_cluster_may_replicate,
 * keel_cluster_catchup_backups, keel_cluster_request_add / withdraw_add /
 * add_pending, keel_cluster_repl_counts). After every
 * step the map is checked against the invariants: a unit's primary is in
 * its in-sync set, and no node is in sync under another store id than
 * the one its live member publishes. Deterministic, like
 * test_coord_cluster.c: events are delivered only when told, on the
 * fake's clock. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/cluster.h"
#include "coordinator/controller.h"
#include "coordinator/failover.h"
#include "coordinator/layout.h"
#include "coordinator/nodestate.h"
#include "coordinator/replicaset.h"
#include "coordinator/shardmap.h"
#include "coordinator/zk_fake.h"
#include "fakeclu.h"
#include "keel.h"
#include "testutil.h"

#define SHARDS 32
#define TIMEOUT 3000
#define MAXN 6
#define FORMATION 3000 /* the controller's default formation wait */

/* ------------------------------------------------------- pure rules */

static const char *live_set[8];
static const char *forgot_set[8];
static const char *nostore_set[8];

static int in(const char *const *v, const char *name)
{
    size_t i;

    for (i = 0; i < 8 && v[i] != NULL; i++)
        if (strcmp(v[i], name) == 0)
            return 1;
    return 0;
}

static int t_live(const char *name, void *arg)
{
    (void)arg;
    return in(live_set, name);
}

static int t_has_store(const char *name, void *arg)
{
    (void)arg;
    return in(live_set, name) && !in(nostore_set, name);
}

static int t_forgotten(const char *name, void *arg)
{
    (void)arg;
    return in(forgot_set, name);
}

static keel_rs_env env_of(size_t r, const char *const *desired, size_t nd)
{
    keel_rs_env e;

    memset(&e, 0, sizeof e);
    e.replicas = r;
    e.desired = desired;
    e.ndesired = nd;
    e.live = t_live;
    e.has_store = t_has_store;
    e.forgotten = t_forgotten;
    return e;
}

static keel_rs rs_of(const char *names, unsigned insync)
{
    static char buf[8][8][16];
    static int slot;
    keel_rs rs;
    char *p, *tok, *save = NULL;

    memset(&rs, 0, sizeof rs);
    slot = (slot + 1) % 8;
    snprintf(buf[slot][7], sizeof buf[slot][7], "%s", names);
    p = buf[slot][7];
    for (tok = strtok_r(p, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        snprintf(buf[slot][rs.n], sizeof buf[slot][0], "%s", tok);
        rs.names[rs.n] = buf[slot][rs.n];
        rs.n++;
    }
    rs.insync = (uint8_t)insync;
    return rs;
}

/* "a,b*,c": the names, in-sync ones starred. */
static const char *show(const keel_rs *rs)
{
    static char out[128];
    size_t off = 0;
    int i;

    out[0] = '\0';
    for (i = 0; i < rs->n; i++)
        off += (size_t)snprintf(out + off, sizeof out - off, "%s%s%s",
                                i ? "," : "", rs->names[i],
                                (rs->insync >> i) & 1 ? "*" : "");
    return out;
}

static void set_live(const char *a, const char *b, const char *c,
                     const char *d, const char *e)
{
    memset(live_set, 0, sizeof live_set);
    live_set[0] = a;
    live_set[1] = b;
    live_set[2] = c;
    live_set[3] = d;
    live_set[4] = e;
    memset(forgot_set, 0, sizeof forgot_set);
    memset(nostore_set, 0, sizeof nostore_set);
}

START_TEST(test_rs_fresh)
{
    const char *d[] = {"b", "a", "c"};
    keel_rs_env e = env_of(3, d, 3);
    keel_rs out;

    set_live("a", "b", "c", NULL, NULL);
    keel_rs_fresh(&e, &out);
    ck_assert_str_eq(show(&out), "b*,a*,c*");
    /* a member without a store id is never in sync as a backup */
    nostore_set[0] = "a";
    keel_rs_fresh(&e, &out);
    ck_assert_str_eq(show(&out), "b*,a,c*");
    nostore_set[0] = "b"; /* ...a primary is, by definition */
    keel_rs_fresh(&e, &out);
    ck_assert_str_eq(show(&out), "b*,a*,c*");
    /* fewer capable members than R */
    e = env_of(3, d, 1);
    keel_rs_fresh(&e, &out);
    ck_assert_str_eq(show(&out), "b*");
    e = env_of(1, d, 3);
    keel_rs_fresh(&e, &out);
    ck_assert_str_eq(show(&out), "b*");
}
END_TEST

START_TEST(test_rs_follow)
{
    const char *d[] = {"a", "d", "b"};
    keel_rs_env e = env_of(3, d, 3);
    keel_rs old, out;

    set_live("a", "b", "c", "d", NULL);
    /* c left the top 3 (d joined): d appended out of sync; b keeps its
     * flag and place; c, in sync, stays listed in sync until d has
     * caught up (the unit keeps every complete copy it had) */
    old = rs_of("a,b,c", 7);
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*,b*,c*,d");
    /* idempotent */
    old = out;
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*,b*,c*,d");
    /* d caught up (rule 7): c leaves */
    old = out;
    old.insync |= 8;
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*,b*,d*");
    /* displaced out of sync: removed at once */
    old = rs_of("a,b,c", 3);
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*,b*,d");
    /* the primary is not placement's first choice (a move is under way):
     * the backups are the top R-1 of the others */
    {
        const char *d2[] = {"d", "b", "c"};
        e = env_of(3, d2, 3);
        old = rs_of("a,b,c", 7);
        keel_rs_follow(&e, &old, &out);
        ck_assert_str_eq(show(&out), "a*,b*,c*,d");
    }
    /* R = 1: no backups, whatever was listed */
    e = env_of(1, d, 3);
    old = rs_of("a,b,c", 7);
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*");
}
END_TEST

START_TEST(test_rs_dead_backups)
{
    const char *d[] = {"a", "b", "d"};
    keel_rs_env e = env_of(3, d, 3);
    keel_rs old, out;

    /* c died in sync: it stays listed and in sync until its primary asks
     * to drop it; placement's replacement d is appended meanwhile */
    set_live("a", "b", "d", NULL, NULL);
    old = rs_of("a,b,c", 7);
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*,b*,c*,d");
    ck_assert_int_eq(keel_rs_drop(&out, "c"), 1);
    ck_assert_int_eq(keel_rs_drop(&out, "c"), 0);
    ck_assert_int_eq(keel_rs_drop(&out, "a"), 0); /* never the primary */
    ck_assert_int_eq(keel_rs_drop(&out, "x"), 0);
    ck_assert_str_eq(show(&out), "a*,b*,c,d");
    /* out of sync and dead: it goes */
    old = out;
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*,b*,d");
    /* forgotten: its data is given up, it goes at once */
    old = rs_of("a,b,c", 7);
    forgot_set[0] = "c";
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*,b*,d");
    /* the replacement in sync: the gone one is not needed any more */
    forgot_set[0] = NULL;
    old = rs_of("a,b,c,d", 15);
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*,b*,d*");
    /* ...but while fewer than R others could hold the unit, it stays */
    {
        const char *d2[] = {"a", "b"};
        e = env_of(3, d2, 2);
        set_live("a", "b", NULL, NULL, NULL);
        old = rs_of("a,b,c", 7);
        keel_rs_follow(&e, &old, &out);
        ck_assert_str_eq(show(&out), "a*,b*,c*");
    }
    /* a full list: the replacements take the room, gone in-sync
     * backups past their dead time give it up */
    {
        const char *d5[] = {"a", "f", "g", "h", "i"};
        e = env_of(5, d5, 5);
        set_live("a", "f", "g", "h", "i");
        old = rs_of("a,b,c,d,e", 31);
        keel_rs_follow(&e, &old, &out);
        ck_assert_str_eq(show(&out), "a*,f,g,h,i");
        e = env_of(4, d5, 4);
        old = rs_of("a,b,c,d", 15);
        keel_rs_follow(&e, &old, &out);
        ck_assert_str_eq(show(&out), "a*,b*,f,g,h");
    }
}
END_TEST

static const char *waiting_set[8];

static int t_waiting(const char *name, void *arg)
{
    (void)arg;
    return in(waiting_set, name);
}

/* Rule 2 with a dead time: a gone backup still within it keeps its place
 * and takes one of the R - 1 backup places from placement, in sync or
 * not; past it, placement's next choice replaces it. */
START_TEST(test_rs_dead_time)
{
    const char *d[] = {"a", "b", "d"}; /* live placement: c is gone */
    keel_rs_env e = env_of(3, d, 3);
    keel_rs old, out;

    e.waiting = t_waiting;
    set_live("a", "b", "d", NULL, NULL);
    memset(waiting_set, 0, sizeof waiting_set);
    waiting_set[0] = "c";
    /* within its dead time: kept, in sync or out, and no d */
    old = rs_of("a,b,c", 7);
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*,b*,c*");
    ck_assert_int_eq(keel_rs_drop(&out, "c"), 1);
    old = out;
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*,b*,c");
    /* back before the time: placement wants it again, it stays where
     * it is, out of sync (catch-up brings it back in) */
    {
        const char *d2[] = {"a", "b", "c"};
        keel_rs_env e2 = e;
        e2.desired = d2;
        set_live("a", "b", "c", "d", NULL);
        keel_rs_follow(&e2, &old, &out);
        ck_assert_str_eq(show(&out), "a*,b*,c");
        set_live("a", "b", "d", NULL, NULL);
    }
    /* past it: replaced by placement's next live choice, out of sync;
     * gone out of sync, c leaves at once */
    waiting_set[0] = NULL;
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*,b*,d");
    /* forgotten within the time: it goes */
    waiting_set[0] = "c";
    forgot_set[0] = "c";
    old = rs_of("a,b,c", 3);
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*,b*,d");
    forgot_set[0] = NULL;
    /* two gone, R = 3: both keep their places */
    {
        const char *d1[] = {"a", "d", "e"};
        keel_rs_env e3 = e;
        e3.desired = d1;
        set_live("a", "d", "e", NULL, NULL);
        waiting_set[1] = "b";
        old = rs_of("a,b,c", 7);
        keel_rs_follow(&e3, &old, &out);
        ck_assert_str_eq(show(&out), "a*,b*,c*");
        /* b's time ends first: d takes its place, b stays (in sync)
         * until d is in sync too */
        waiting_set[1] = NULL;
        keel_rs_follow(&e3, &old, &out);
        ck_assert_str_eq(show(&out), "a*,b*,c*,d");
        out.insync |= 8; /* d caught up (rule 7) */
        old = out;
        keel_rs_follow(&e3, &old, &out);
        ck_assert_str_eq(show(&out), "a*,c*,d*");
        waiting_set[1] = NULL;
    }
    /* failover: the dead primary is a backup that keeps its place, out
     * of sync, while it waits; the other backup is out of sync */
    {
        const char *d3[] = {"b", "d"};
        keel_rs_env e4 = e;
        e4.desired = d3;
        e4.ndesired = 2;
        set_live("b", "d", NULL, NULL, NULL);
        memset(waiting_set, 0, sizeof waiting_set);
        waiting_set[0] = "a";
        old = rs_of("a,b,d", 7);
        keel_rs_promote(&e4, &old, 1, &out);
        ck_assert_str_eq(show(&out), "b*,a,d");
        waiting_set[0] = NULL;
        keel_rs_promote(&e4, &old, 1, &out);
        ck_assert_str_eq(show(&out), "b*,d");
    }
    /* R = 1: nothing waits */
    e = env_of(1, d, 3);
    e.waiting = t_waiting;
    waiting_set[0] = "c";
    old = rs_of("a,c", 3);
    keel_rs_follow(&e, &old, &out);
    ck_assert_str_eq(show(&out), "a*");
    memset(waiting_set, 0, sizeof waiting_set);
}
END_TEST

START_TEST(test_rs_move)
{
    const char *d[] = {"b", "c", "d"};
    keel_rs_env e = env_of(3, d, 3);
    keel_rs old, out;

    set_live("a", "b", "c", "d", NULL);
    /* A -> B with A's data: B and the in-sync backups that stay */
    old = rs_of("a,b,c", 5); /* b listed out of sync, c in sync */
    keel_rs_move(&e, &old, "b", 1, &out);
    ck_assert_str_eq(show(&out), "b*,c*,d");
    /* without it (+2): B alone */
    keel_rs_move(&e, &old, "b", 0, &out);
    ck_assert_str_eq(show(&out), "b*,c,d");
    /* A stays a backup when placement keeps it: out of sync */
    {
        const char *d2[] = {"b", "a", "c"};
        e = env_of(3, d2, 3);
        old = rs_of("a,c", 3);
        keel_rs_move(&e, &old, "b", 1, &out);
        ck_assert_str_eq(show(&out), "b*,a,c*");
    }
    /* a recipient placement does not want (a called-off move adopted) */
    e = env_of(3, d, 3);
    old = rs_of("a,b,c", 7);
    keel_rs_move(&e, &old, "x", 1, &out);
    ck_assert_str_eq(show(&out), "x*,b*,c*");
    /* an old in-sync backup that is gone stays in sync */
    set_live("a", "b", "d", NULL, NULL);
    old = rs_of("a,b,c", 7);
    keel_rs_move(&e, &old, "b", 1, &out);
    ck_assert_str_eq(show(&out), "b*,c*,d");
}
END_TEST

static const char *leaving_set[8];

static int t_placeable(const char *name, void *arg)
{
    (void)arg;
    return in(live_set, name) && !in(leaving_set, name);
}

static const char *suspect_set[8];

static int t_suspect(const char *name, void *arg)
{
    (void)arg;
    return in(suspect_set, name);
}

static const char *capless_set[8];

/* Declares "gpu" unless listed in capless_set; every node declares "". */
static int t_declares(const char *name, const char *cap, void *arg)
{
    (void)arg;
    return cap[0] == '\0' || !in(capless_set, name);
}

/* Rule 6: whom failover picks, and the set after it. */
START_TEST(test_failover_pick)
{
    const char *want[] = {"b", "c"};
    keel_rs_env e = env_of(3, want, 2);
    keel_failover_unit fu;
    keel_rs rs, out;

    set_live("b", "c", "d", NULL, NULL);
    memset(leaving_set, 0, sizeof leaving_set);
    memset(&fu, 0, sizeof fu);
    rs = rs_of("a,b,c", 7);
    fu.rs = &rs;
    fu.primary_gone = 1;
    fu.released = 0;
    /* the first live in-sync backup, in list order */
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 1);
    /* not while the primary is a member, nor after it released */
    fu.primary_gone = 0;
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 0);
    fu.primary_gone = 1;
    fu.released = 1;
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 0);
    fu.released = 0;
    /* never out of sync: b is out, c is in */
    rs = rs_of("a,b,c", 5);
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 2);
    /* nobody in sync but the primary: none */
    rs = rs_of("a,b,c", 1);
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 0);
    /* in sync but gone, or without a store: none */
    rs = rs_of("a,x,c", 3);
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 0);
    nostore_set[0] = "c";
    rs = rs_of("a,b,c", 5);
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 0);
    nostore_set[0] = NULL;
    /* one placement can give units to first; a leaving one otherwise */
    e.placeable = t_placeable;
    leaving_set[0] = "b";
    rs = rs_of("a,b,c", 7);
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 2);
    rs = rs_of("a,b,d", 3);
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 1);
    leaving_set[0] = NULL;
    /* one this node's link to failed (dying too, its session not expired
     * yet) only when no other will do: promoted there, a unit would wait
     * for it, alone in sync */
    e.suspect = t_suspect;
    suspect_set[0] = "b";
    rs = rs_of("a,b,c", 7);
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 2);
    rs = rs_of("a,b,c", 3);
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 1);
    /* placeable first, then not suspect */
    leaving_set[0] = "c";
    rs = rs_of("a,b,c", 7);
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 1);
    leaving_set[0] = NULL;
    /* one that declares the unit's capability before one that no longer
     * does (restarted without it: it would hold the unit unserved), even
     * a suspect one; with no other, it still takes the unit */
    e.declares = t_declares;
    e.cap = "gpu";
    capless_set[0] = "b";
    rs = rs_of("a,b,c", 7);
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 2);
    suspect_set[0] = "c";
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 2);
    rs = rs_of("a,b,c", 3);
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 1);
    e.cap = "";
    rs = rs_of("a,b,c", 7);
    suspect_set[0] = NULL;
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 1);
    capless_set[0] = NULL;
    e.declares = NULL;
    suspect_set[0] = NULL;
    e.suspect = NULL;
    /* the set after it: the promoted backup alone in sync, the others
     * listed out of sync if placement wants them, the gone primary out */
    rs = rs_of("a,b,c", 7);
    keel_rs_promote(&e, &rs, 1, &out);
    ck_assert_str_eq(show(&out), "b*,c");
    /* c was in sync before: it may stand in for b (not a, gone) */
    ck_assert_uint_eq(out.fallback, 2);
    rs = rs_of("a,c,b", 7);
    keel_rs_promote(&e, &rs, 2, &out);
    ck_assert_str_eq(show(&out), "b*,c");
    ck_assert_uint_eq(out.fallback, 2);
    /* out of sync before: no fallback */
    rs = rs_of("a,b,c", 3);
    keel_rs_promote(&e, &rs, 1, &out);
    ck_assert_str_eq(show(&out), "b*,c");
    ck_assert_uint_eq(out.fallback, 0);
    /* a backup placement no longer wants goes, unless it is a fallback:
     * it stays listed (out of sync) while it may have to take the unit */
    rs = rs_of("a,b,d", 3);
    keel_rs_promote(&e, &rs, 1, &out);
    ck_assert_str_eq(show(&out), "b*,c");
    rs = rs_of("a,b,d", 7);
    keel_rs_promote(&e, &rs, 1, &out);
    ck_assert_str_eq(show(&out), "b*,d,c");
    ck_assert_uint_eq(out.fallback, 2);
    /* following placement keeps it while it is one, drops it after */
    rs = out;
    keel_rs_follow(&e, &rs, &out);
    ck_assert_str_eq(show(&out), "b*,d,c");
    ck_assert_uint_eq(out.fallback, 2);
    rs.fallback = 0;
    keel_rs_follow(&e, &rs, &out);
    ck_assert_str_eq(show(&out), "b*,c");
    /* a move of the primary ends them */
    rs = rs_of("b,d,c", 1);
    rs.fallback = 2;
    keel_rs_move(&e, &rs, "c", 1, &out);
    ck_assert_uint_eq(out.fallback, 0);
}
END_TEST

/* Rule 6 for a promoted primary gone before it served: one of its
 * fallbacks takes the unit, only when the controller found its state
 * unwritten since the promotion (stand_in), and only when no in-sync
 * backup can. */
START_TEST(test_failover_stand_in)
{
    const char *want[] = {"c", "d"};
    keel_rs_env e = env_of(3, want, 2);
    keel_failover_unit fu;
    keel_rs rs, out;

    set_live("c", "d", NULL, NULL, NULL);
    memset(leaving_set, 0, sizeof leaving_set);
    memset(&fu, 0, sizeof fu);
    /* b promoted over a, alone in sync, c its fallback; b gone too */
    rs = rs_of("b,a,c", 1);
    rs.fallback = 4;
    fu.rs = &rs;
    fu.primary_gone = 1;
    /* its state changed since (it may have served): no one */
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 0);
    fu.stand_in = 1;
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 2);
    keel_rs_stand_in(&e, &rs, 2, &out);
    ck_assert_str_eq(show(&out), "c*,d");
    ck_assert_uint_eq(out.fallback, 0);
    /* a fallback that is not live, or has no store: no one */
    set_live("d", NULL, NULL, NULL, NULL);
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 0);
    set_live("c", "d", NULL, NULL, NULL);
    nostore_set[0] = "c";
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 0);
    nostore_set[0] = NULL;
    /* an in-sync backup first (b added one before it went) */
    rs = rs_of("b,d,c", 3);
    rs.fallback = 4;
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 1);
    /* two fallbacks: the one taking the unit keeps the other as its own */
    rs = rs_of("b,c,d", 1);
    rs.fallback = 6;
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 1);
    keel_rs_stand_in(&e, &rs, 1, &out);
    ck_assert_str_eq(show(&out), "c*,d");
    ck_assert_uint_eq(out.fallback, 2);
    /* not after it released the unit */
    fu.released = 1;
    ck_assert_int_eq(keel_failover_pick(&e, &fu), 0);
}
END_TEST

/* Rule 7: the store a live member publishes: "" for those in
 * nostore_set, else 30 zeros and the hex of its name's first byte; NULL
 * when it is not live. */
static const char *t_store(const char *name, void *arg)
{
    static char buf[8][KEEL_MAP_STORE_HEX + 1];
    static int slot;

    (void)arg;
    if (!in(live_set, name))
        return NULL;
    if (in(nostore_set, name))
        return "";
    slot = (slot + 1) % 8;
    snprintf(buf[slot], sizeof buf[slot], "%030d%02x", 0,
             (unsigned char)name[0]);
    return buf[slot];
}

static int t_leaving(const char *name, void *arg)
{
    (void)arg;
    return in(leaving_set, name);
}

/* Rule 7 as pure logic: every condition alone refuses the add. */
START_TEST(test_rs_add)
{
    const char *want[] = {"a", "b", "c"};
    keel_rs_env e = env_of(3, want, 3);
    keel_rs_add_req q;
    keel_rs rs;
    char sb[KEEL_MAP_STORE_HEX + 1];

    e.store = t_store;
    e.leaving = t_leaving;
    set_live("a", "b", "c", "d", NULL);
    memset(leaving_set, 0, sizeof leaving_set);
    snprintf(sb, sizeof sb, "%s", t_store("b", NULL));
    memset(&q, 0, sizeof q);
    q.from = "a";
    q.shard_epoch = 5;
    q.backup = "b";
    q.store = sb;
    /* honoured: b listed out of sync, live, publishing and recorded on
     * the store asked for */
    rs = rs_of("a,b,c", 5);
    ck_assert_int_eq(keel_rs_add(&e, &rs, 5, &q, sb), 1);
    ck_assert_str_eq(show(&rs), "a*,b*,c*");
    /* already in sync: nothing to do */
    ck_assert_int_eq(keel_rs_add(&e, &rs, 5, &q, sb), 0);
    ck_assert_str_eq(show(&rs), "a*,b*,c*");
#define REFUSED(why)                                                       \
    do {                                                                   \
        rs = rs_of("a,b,c", 5);                                            \
        ck_assert_msg(keel_rs_add(&e, &rs, 5, &q, rec) == 0, why);         \
        ck_assert_str_eq(show(&rs), "a*,b,c*");                            \
    } while (0)
    {
        const char *rec = sb;
        q.from = "c";
        REFUSED("not from the primary");
        q.from = "a";
        q.shard_epoch = 4;
        REFUSED("another epoch");
        q.shard_epoch = 5;
        q.drop_too = 1;
        REFUSED("a drop for the same backup");
        q.drop_too = 0;
        q.store = "0000000000000000000000000000ffff";
        REFUSED("another store than the backup publishes");
        q.store = "";
        REFUSED("no store");
        q.store = sb;
        rec = "0000000000000000000000000000ffff";
        REFUSED("another store than the map records");
        rec = "";
        REFUSED("no store recorded");
        rec = NULL;
        REFUSED("not in the node table");
        rec = sb;
        set_live("a", "c", "d", NULL, NULL);
        REFUSED("not a live member");
        set_live("a", "b", "c", "d", NULL);
        nostore_set[0] = "b";
        REFUSED("publishing no store");
        nostore_set[0] = NULL;
        leaving_set[0] = "b";
        REFUSED("leaving");
        leaving_set[0] = NULL;
        q.backup = "d";
        REFUSED("not listed");
        q.backup = "a";
        REFUSED("the primary itself");
        q.backup = "c";
        REFUSED("in sync already");
        q.backup = "b";
    }
#undef REFUSED
    /* every condition restored: honoured again */
    rs = rs_of("a,b,c", 5);
    ck_assert_int_eq(keel_rs_add(&e, &rs, 5, &q, sb), 1);
    ck_assert_str_eq(show(&rs), "a*,b*,c*");
}
END_TEST

/* ------------------------------------------------------------ agents */

static keel_zk_fake *F;
static keel_cluster *C[MAXN];
static char name_of_[MAXN][16];
static char store_of_[MAXN][KEEL_MAP_STORE_HEX + 1];

typedef struct mkopt {
    int replicas;
    const char *caps; /* one capability, or NULL */
    int no_store;
    int reassign;
    uint32_t dead_ms; /* replica_dead_ms; 0: the default */
} mkopt;

static const char *nm(int i)
{
    return name_of_[i];
}

/* map_applied hook calls, per node made by mk(). */
static uint64_t applied_n[MAXN];

static void on_map_applied(keel_cluster *c, uint64_t map_epoch, void *data)
{
    (void)c;
    (void)map_epoch;
    applied_n[(intptr_t)data]++;
}

/* While set, mk() makes nodes whose acquires go through on_acquire():
 * completed at once, unless the node's acquires are deferred, then kept
 * until acquire_deferred(). */
#define MAX_DEFERRED 64
static int acquire_hooked;
static int defer_acquires[MAXN];
static struct {
    int node;
    uint32_t shard;
    uint64_t epoch;
} deferred[MAX_DEFERRED];
static size_t ndeferred;

static void on_acquire(keel_cluster *c, const char *cap, uint32_t shard,
                       uint64_t epoch, void *data)
{
    int i = (int)(intptr_t)data;

    ck_assert_str_eq(cap, ""); /* the default group only */
    if (!defer_acquires[i]) {
        ck_assert_int_eq(keel_cluster_acquired(c, cap, shard, epoch), 0);
        return;
    }
    ck_assert_uint_lt(ndeferred, MAX_DEFERRED);
    deferred[ndeferred].node = i;
    deferred[ndeferred].shard = shard;
    deferred[ndeferred].epoch = epoch;
    ndeferred++;
}

/* Completes node i's deferred acquires (the fence recorded, in the
 * runtime); returns how many there were. */
static size_t acquire_deferred(int i)
{
    size_t k, n = 0;

    for (k = 0; k < ndeferred; k++)
        if (deferred[k].node == i) {
            ck_assert_int_eq(keel_cluster_acquired(C[i], "",
                                                   deferred[k].shard,
                                                   deferred[k].epoch),
                             0);
            deferred[k--] = deferred[--ndeferred];
            n++;
        }
    return n;
}

static void mk(int i, const mkopt *mo)
{
    keel_cluster_options o;
    const char *caps[1];
    char addr[32];
    keel_zk *zk;

    snprintf(name_of_[i], sizeof name_of_[i], "node-%c", 'a' + i);
    if (store_of_[i][0] == '\0')
        snprintf(store_of_[i], sizeof store_of_[i], "%032x", 0xa0 + i);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", 7000 + i);
    keel_cluster_options_init(&o);
    o.cluster = "test";
    o.node = name_of_[i];
    o.address = addr;
    o.shard_count = SHARDS;
    o.session_timeout_ms = TIMEOUT;
    o.replicas = mo ? mo->replicas : 0;
    o.reassign_dead_owner = mo ? mo->reassign : 0;
    o.replica_dead_ms = mo ? mo->dead_ms : 0;
    if (mo && mo->caps) {
        caps[0] = mo->caps;
        o.caps = caps;
        o.ncaps = 1;
    }
    o.store_id = mo && mo->no_store ? NULL : store_of_[i];
    o.hooks.map_applied = on_map_applied;
    if (acquire_hooked)
        o.hooks.acquire = on_acquire;
    o.hooks.data = (void *)(intptr_t)i;
    ck_assert_int_eq(keel_zk_fake_client(F, &zk), 0);
    ck_assert_int_eq(keel_cluster_create(NULL, &o, zk, &C[i]), 0);
    ck_assert_int_eq(keel_cluster_start(C[i]), 0);
}

static void kill_node(int i)
{
    keel_cluster_destroy(C[i]);
    C[i] = NULL;
}

static keel_cluster *cluster_at(size_t i)
{
    return C[i];
}

static void settle(void)
{
    tu_fake_settle(F, cluster_at, MAXN, 10000);
}

static void advance(uint64_t ms)
{
    tu_fake_advance(F, ms, cluster_at, MAXN, 10000);
}

static void setup(void)
{
    F = keel_zk_fake_create();
    memset(C, 0, sizeof C);
    memset(store_of_, 0, sizeof store_of_);
    memset(applied_n, 0, sizeof applied_n);
    acquire_hooked = 0;
    memset(defer_acquires, 0, sizeof defer_acquires);
    ndeferred = 0;
}

static void teardown(void)
{
    int i;

    for (i = 0; i < MAXN; i++)
        if (C[i] != NULL)
            kill_node(i);
    keel_zk_fake_destroy(F);
}

static keel_shard_map zk_map(void)
{
    static uint8_t buf[1 << 20];
    size_t len = sizeof buf;
    keel_shard_map m;

    ck_assert_int_eq(keel_zk_fake_get(F, "/keel/test/map", buf, &len, NULL),
                     0);
    ck_assert_int_eq(keel_map_decode(buf, len, &m), 0);
    return m;
}

static int node_idx(const char *name)
{
    int i;

    for (i = 0; i < MAXN; i++)
        if (strcmp(name_of_[i], name) == 0)
            return i;
    return -1;
}

/* The store a live node publishes, or NULL when it is not live. */
static const char *live_store(const char *name)
{
    int i = node_idx(name);

    return i >= 0 && C[i] != NULL ? store_of_[i] : NULL;
}

/* Invariant 7 and the map's shape: every unit with a primary has it in
 * sync; no in-sync flag for a node whose table store differs from its
 * live member's; no node twice in a list; at most R replicas plus the
 * gone in-sync ones kept. Every live node applied this very map. */
static void check_map(const keel_shard_map *m)
{
    uint32_t c, s;
    int r, q, i;

    for (c = 0; c < m->ncaps; c++)
        for (s = 0; s < m->shard_count; s++) {
            const keel_map_unit *u = keel_map_unit_at(m, c, s);
            if (u->shard_epoch > 0 && u->nreplicas > 0)
                ck_assert(u->insync & 1);
            for (r = 0; r < u->nreplicas; r++) {
                const char *n = m->nodes[u->replicas[r]];
                const char *st = live_store(n);
                for (q = 0; q < r; q++)
                    ck_assert_uint_ne(u->replicas[q], u->replicas[r]);
                if (st != NULL)
                    ck_assert_str_eq(m->store_ids[u->replicas[r]], st);
            }
        }
    for (i = 0; i < MAXN; i++)
        if (C[i] != NULL && keel_cluster_phase(C[i]) == KEEL_CLUSTER_RUNNING)
            ck_assert_uint_eq(keel_cluster_map(C[i])->map_epoch,
                              m->map_epoch);
}

static keel_shard_map checked_map(void)
{
    keel_shard_map m = zk_map();

    check_map(&m);
    return m;
}

/* The unit's replica set as "a,b*,c" (starred: in sync). */
static const char *unit_str(const keel_shard_map *m, const char *cap,
                            uint32_t s)
{
    static char out[128];
    const keel_map_unit *u;
    size_t off = 0;
    int r, ci = keel_map_cap_index(m, cap);

    out[0] = '\0';
    if (ci < 0)
        return out;
    u = keel_map_unit_at(m, (uint32_t)ci, s);
    for (r = 0; r < u->nreplicas; r++)
        off += (size_t)snprintf(out + off, sizeof out - off, "%s%s%s",
                                r ? "," : "", m->nodes[u->replicas[r]],
                                keel_map_insync(u, r) ? "*" : "");
    return out;
}

static const keel_map_unit *unit(const keel_shard_map *m, const char *cap,
                                 uint32_t s)
{
    int ci = keel_map_cap_index(m, cap);

    ck_assert_int_ge(ci, 0);
    return keel_map_unit_at(m, (uint32_t)ci, s);
}

static int pos_of(const keel_shard_map *m, const keel_map_unit *u,
                  const char *name)
{
    int idx = keel_map_node_index(m, name);

    return idx < 0 ? -1 : keel_map_replica_pos(u, (uint16_t)idx);
}

static size_t count_insync(const keel_map_unit *u)
{
    size_t n = 0;
    int r;

    for (r = 0; r < u->nreplicas; r++)
        n += keel_map_insync(u, r);
    return n;
}

/* Node a alone (default group), then nodes b and c declaring "gpu" joined
 * while the controller (a) hears nothing: the gpu units are first placed
 * with both members there (after the formation wait when R > 2), R =
 * replicas. */
static void start_gpu(int replicas)
{
    mkopt a = {replicas, NULL, 0, 0, 0}, g = {replicas, "gpu", 0, 0, 0};

    mk(0, &a);
    settle();
    ck_assert(keel_cluster_is_controller(C[0]));
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    mk(1, &g);
    mk(2, &g);
    settle();
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    settle();
    advance(FORMATION);
}

/* Node a alone, then b and c (default group only), R = replicas. */
static void start3(int replicas)
{
    mkopt o = {replicas, NULL, 0, 0, 0};

    mk(0, &o);
    settle();
    mk(1, &o);
    mk(2, &o);
    settle();
}

/* Units never owned wait (at most the formation wait) for R members to
 * hold them, so that nodes started together are all in sync. */
START_TEST(test_formation_wait)
{
    mkopt three = {3, NULL, 0, 0, 0};
    char buf[64];
    size_t len = sizeof buf;
    keel_shard_map m;
    uint32_t s;

    mk(0, &three);
    settle();
    advance(FORMATION - 1);
    if (keel_zk_fake_get(F, "/keel/test/map", buf, &len, NULL) == 0) {
        m = zk_map();
        for (s = 0; s < SHARDS; s++)
            ck_assert_uint_eq(unit(&m, "", s)->nreplicas, 0);
        keel_map_free(&m);
    }
    mk(1, &three);
    settle();
    len = sizeof buf;
    if (keel_zk_fake_get(F, "/keel/test/map", buf, &len, NULL) == 0) {
        m = zk_map();
        for (s = 0; s < SHARDS; s++)
            ck_assert_uint_eq(unit(&m, "", s)->nreplicas, 0);
        keel_map_free(&m);
    }
    advance(1); /* the wait is over: placed on the two there are */
    m = checked_map();
    for (s = 0; s < SHARDS; s++) {
        ck_assert_uint_eq(unit(&m, "", s)->nreplicas, 2);
        ck_assert_uint_eq(count_insync(unit(&m, "", s)), 2);
        ck_assert_uint_eq(unit(&m, "", s)->shard_epoch, 1);
    }
    keel_map_free(&m);
    /* the third is appended out of sync */
    mk(2, &three);
    settle();
    m = checked_map();
    for (s = 0; s < SHARDS; s++) {
        ck_assert_uint_eq(unit(&m, "", s)->nreplicas, 3);
        ck_assert_uint_eq(count_insync(unit(&m, "", s)), 2);
    }
    keel_map_free(&m);
}
END_TEST

/* Nodes started within the formation wait are all in sync. */
START_TEST(test_formation_all_in_sync)
{
    keel_shard_map m;
    uint32_t s;

    start3(3);
    m = checked_map();
    for (s = 0; s < SHARDS; s++) {
        ck_assert_uint_eq(unit(&m, "", s)->nreplicas, 3);
        ck_assert_uint_eq(count_insync(unit(&m, "", s)), 3);
        ck_assert_uint_eq(unit(&m, "", s)->shard_epoch, 1);
    }
    keel_map_free(&m);
}
END_TEST

START_TEST(test_config_replicas)
{
    mkopt three = {3, NULL, 0, 0, 0}, two = {2, NULL, 0, 0, 0};
    char buf[128];
    size_t len = sizeof buf - 1;

    mk(0, &three);
    ck_assert_int_eq(keel_cluster_replicas(C[0]), 1); /* before joining */
    settle();
    ck_assert_int_eq(keel_zk_fake_get(F, "/keel/test/config", buf, &len,
                                      NULL),
                     0);
    buf[len] = '\0';
    ck_assert_str_eq(buf, "keel-cluster 1\nshards 32\nreplicas 3\n");
    ck_assert_int_eq(keel_cluster_replicas(C[0]), 3);
    /* another explicit count follows the cluster's (with a warning), and
     * so does the default */
    mk(1, &two);
    mk(2, NULL);
    settle();
    ck_assert_int_eq(keel_cluster_replicas(C[1]), 3);
    ck_assert_int_eq(keel_cluster_replicas(C[2]), 3);
    /* the controller places 3 replicas where 3 members are */
    {
        keel_shard_map m = checked_map();
        uint32_t s;
        for (s = 0; s < SHARDS; s++)
            ck_assert_uint_eq(unit(&m, "", s)->nreplicas, 3);
        keel_map_free(&m);
    }
    /* out of range: refused */
    {
        keel_cluster_options o;
        keel_cluster *c;
        keel_zk *zk;
        keel_cluster_options_init(&o);
        ck_assert_int_eq(o.replicas, 0);
        o.cluster = "test";
        o.node = "node-z";
        o.address = "127.0.0.1:1";
        o.shard_count = SHARDS;
        o.replicas = KEEL_MAP_MAX_REPLICAS + 1;
        ck_assert_int_eq(keel_zk_fake_client(F, &zk), 0);
        ck_assert_int_eq(keel_cluster_create(NULL, &o, zk, &c), KEEL_EINVAL);
        keel_zk_destroy(zk);
    }
}
END_TEST

/* A cluster made before replication (a config without the line) has one
 * replica per unit, whatever a node asks for. */
START_TEST(test_config_without_replicas_means_one)
{
    mkopt three = {3, NULL, 0, 0, 0};
    const char *old = "keel-cluster 1\nshards 32\n";
    keel_shard_map m;
    uint32_t s;

    ck_assert_int_eq(
        keel_zk_fake_mkdirs(F, "/keel/test/config", old, strlen(old)), 0);
    mk(0, &three);
    mk(1, &three);
    settle();
    ck_assert_int_eq(keel_cluster_replicas(C[0]), 1);
    m = checked_map();
    for (s = 0; s < SHARDS; s++)
        ck_assert_str_eq(unit_str(&m, "", s),
                         strcmp(keel_map_primary(&m, 0, s), "node-a") == 0
                             ? "node-a*"
                             : "node-b*");
    keel_map_free(&m);
}
END_TEST

/* Rule 1: units never owned get the top R capable members, all in sync,
 * and the node table the members' store ids. */
START_TEST(test_fresh_units_all_in_sync)
{
    keel_shard_map m;
    uint32_t s;
    int gi;

    start_gpu(3);
    m = checked_map();
    gi = keel_map_cap_index(&m, "gpu");
    ck_assert_int_ge(gi, 0);
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = unit(&m, "gpu", s);
        ck_assert_uint_eq(u->nreplicas, 2); /* two members declare gpu */
        ck_assert_uint_eq(u->shard_epoch, 1);
        ck_assert_uint_eq(count_insync(u), 2);
    }
    ck_assert_str_eq(m.store_ids[keel_map_node_index(&m, "node-b")],
                     store_of_[1]);
    ck_assert_str_eq(m.store_ids[keel_map_node_index(&m, "node-c")],
                     store_of_[2]);
    keel_map_free(&m);
}
END_TEST

/* Rule 1 again: a member that publishes no store id is listed, out of
 * sync, as a backup. */
START_TEST(test_fresh_without_store_id)
{
    mkopt a = {2, NULL, 0, 0, 0}, g = {2, "gpu", 0, 0, 0},
          gn = {2, "gpu", 1, 0, 0};
    keel_shard_map m;
    uint32_t s;

    mk(0, &a);
    settle();
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    mk(1, &g);
    mk(2, &gn);
    settle();
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    settle();
    m = zk_map();
    ck_assert_str_eq(m.store_ids[keel_map_node_index(&m, "node-c")], "");
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = unit(&m, "gpu", s);
        ck_assert_uint_eq(u->nreplicas, 2);
        if (strcmp(keel_map_primary(&m, (uint32_t)keel_map_cap_index(&m,
                                                                     "gpu"),
                                    s),
                   "node-b") == 0)
            ck_assert_str_eq(unit_str(&m, "gpu", s), "node-b*,node-c");
        else
            ck_assert_str_eq(unit_str(&m, "gpu", s), "node-c*,node-b*");
    }
    keel_map_free(&m);
}
END_TEST

/* The runtime's API on the primary and on a backup. */
START_TEST(test_runtime_api)
{
    keel_replica_ref refs[KEEL_MAP_MAX_REPLICAS];
    keel_shard_map m;
    const keel_map_unit *u;
    int p, b, gi;
    uint64_t e;

    start_gpu(3);
    m = checked_map();
    gi = keel_map_cap_index(&m, "gpu");
    u = unit(&m, "gpu", 7);
    e = u->shard_epoch;
    p = node_idx(keel_map_primary(&m, (uint32_t)gi, 7));
    b = p == 1 ? 2 : 1;
    ck_assert_int_eq(
        keel_cluster_insync_backups(C[p], "gpu", 7, e, refs, 4), 1);
    ck_assert_str_eq(refs[0].name, nm(b));
    ck_assert_str_eq(refs[0].addr, b == 1 ? "127.0.0.1:7001"
                                          : "127.0.0.1:7002");
    ck_assert_int_eq(keel_cluster_insync_backups(C[p], "gpu", 7, e, refs, 0),
                     0);
    ck_assert_int_eq(
        keel_cluster_insync_backups(C[p], "gpu", 7, e + 1, refs, 4), 0);
    ck_assert_int_eq(
        keel_cluster_insync_backups(C[b], "gpu", 7, e, refs, 4), 0);
    ck_assert_int_eq(
        keel_cluster_insync_backups(C[p], "nope", 7, e, refs, 4), 0);
    ck_assert_int_eq(
        keel_cluster_insync_backups(C[p], "gpu", SHARDS, e, refs, 4), 0);

    ck_assert_int_eq(keel_cluster_may_replicate(C[b], "gpu", 7, e, nm(p)), 0);
    ck_assert_int_eq(keel_cluster_may_replicate(C[b], "gpu", 7, e + 1, nm(p)),
                     KEEL_ENOTTARGET);
    ck_assert_int_eq(keel_cluster_may_replicate(C[b], "gpu", 7, e, "node-a"),
                     KEEL_ENOTTARGET);
    ck_assert_int_eq(keel_cluster_may_replicate(C[p], "gpu", 7, e, nm(b)),
                     KEEL_ENOTTARGET); /* the primary is no backup */
    ck_assert_int_eq(keel_cluster_may_replicate(C[0], "gpu", 7, e, nm(p)),
                     KEEL_ENOTTARGET); /* not listed */
    ck_assert_int_eq(keel_cluster_may_replicate(C[b], "gpu", 7, e, "x/y"),
                     KEEL_ENOTTARGET);
    /* a fenced backup takes nothing */
    keel_zk_fake_disconnect(keel_cluster_zk(C[b]));
    advance(TIMEOUT / 2);
    ck_assert(keel_cluster_fenced(C[b]));
    ck_assert_int_eq(keel_cluster_may_replicate(C[b], "gpu", 7, e, nm(p)),
                     KEEL_EFENCED);
    keel_zk_fake_reconnect(keel_cluster_zk(C[b]));
    settle();
    ck_assert_int_eq(keel_cluster_may_replicate(C[b], "gpu", 7, e, nm(p)), 0);

    /* Requests that make no sense are refused on the spot. */
    ck_assert_int_eq(keel_cluster_request_drop(C[p], "gpu", 7, e + 1, nm(b)),
                     KEEL_ENOTFOUND);
    ck_assert_int_eq(keel_cluster_request_drop(C[b], "gpu", 7, e, nm(p)),
                     KEEL_ENOTFOUND);
    ck_assert_int_eq(keel_cluster_request_drop(C[p], "gpu", 7, e, nm(p)),
                     KEEL_ENOTFOUND);
    ck_assert_int_eq(keel_cluster_request_drop(C[p], "gpu", 7, e, "node-a"),
                     KEEL_ENOTFOUND);
    keel_map_free(&m);
}
END_TEST

/* The primary's state as ZooKeeper has it (caller frees). */
static keel_node_state zk_state(const char *name)
{
    static uint8_t buf[1 << 16];
    char path[128];
    size_t len = sizeof buf;
    keel_node_state st;

    snprintf(path, sizeof path, "/keel/test/nodes/%s/state", name);
    ck_assert_int_eq(keel_zk_fake_get(F, path, buf, &len, NULL), 0);
    ck_assert_int_eq(keel_node_state_decode(buf, len, &st), 0);
    return st;
}

/* Rule 5: a drop request is published in the primary's state, the
 * controller clears the flag, the primary sees it and withdraws the
 * request; the backup stays listed. */
START_TEST(test_drop_request)
{
    keel_replica_ref refs[4];
    keel_shard_map m, m2;
    keel_node_state st;
    const keel_state_entry *en;
    int p, b, gi;
    uint64_t e, epoch_before;
    uint32_t s;

    start_gpu(3);
    m = checked_map();
    gi = keel_map_cap_index(&m, "gpu");
    e = unit(&m, "gpu", 3)->shard_epoch;
    p = node_idx(keel_map_primary(&m, (uint32_t)gi, 3));
    b = p == 1 ? 2 : 1;
    epoch_before = m.map_epoch;
    /* hold the controller: the request is seen in the state first */
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    ck_assert_int_eq(keel_cluster_request_drop(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_int_eq(keel_cluster_request_drop(C[p], "gpu", 3, e, nm(b)), 0);
    settle();
    st = zk_state(nm(p));
    en = keel_node_state_find(&st, "gpu", 3);
    ck_assert_ptr_nonnull(en);
    ck_assert_int_eq(en->role, KEEL_ROLE_PRIMARY);
    ck_assert_uint_eq(en->shard_epoch, e);
    ck_assert_uint_eq(en->ndrop, 1);
    ck_assert_str_eq(st.names[en->drop[0]], nm(b));
    keel_node_state_free(&st);
    /* still in sync until the map says otherwise */
    ck_assert_int_eq(
        keel_cluster_insync_backups(C[p], "gpu", 3, e, refs, 4), 1);
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    settle();
    m2 = checked_map();
    ck_assert_uint_gt(m2.map_epoch, epoch_before);
    /* out of sync, still listed, nothing else changed */
    ck_assert_int_eq(pos_of(&m2, unit(&m2, "gpu", 3), nm(b)), 1);
    ck_assert_uint_eq(count_insync(unit(&m2, "gpu", 3)), 1);
    ck_assert_uint_eq(unit(&m2, "gpu", 3)->shard_epoch, e);
    for (s = 0; s < SHARDS; s++)
        if (s != 3)
            ck_assert_str_eq(unit_str(&m2, "gpu", s), unit_str(&m, "gpu", s));
    ck_assert_int_eq(
        keel_cluster_insync_backups(C[p], "gpu", 3, e, refs, 4), 0);
    /* the request is withdrawn; asking again is pointless */
    st = zk_state(nm(p));
    ck_assert_uint_eq(keel_node_state_find(&st, "gpu", 3)->ndrop, 0);
    keel_node_state_free(&st);
    ck_assert_int_eq(keel_cluster_request_drop(C[p], "gpu", 3, e, nm(b)),
                     KEEL_ENOTFOUND);
    /* the backup may still take the primary's writes (catch-up, later) */
    ck_assert_int_eq(keel_cluster_may_replicate(C[b], "gpu", 3, e, nm(p)), 0);
    keel_map_free(&m);
    keel_map_free(&m2);
}
END_TEST

/* The backups placement wants for a unit whose primary is `primary`:
 * the first R-1 of the top R live placeable members other than it. */
static size_t wanted_backups(const char *cap, uint32_t shard,
                             const char *primary, size_t r,
                             const char **out)
{
    keel_map_member mm[MAXN];
    size_t top[KEEL_MAP_MAX_REPLICAS], n = 0, got, i, k = 0;
    int j;

    memset(mm, 0, sizeof mm);
    for (j = 0; j < MAXN; j++)
        if (C[j] != NULL && !keel_cluster_member_leaving(C[0] ? C[0] : C[j],
                                                          nm(j)))
            mm[n++].name = nm(j);
    got = keel_rendezvous_top(mm, n, cap, shard, r, top);
    for (i = 0; i < got && k + 1 < r; i++)
        if (strcmp(mm[top[i]].name, primary) != 0)
            out[k++] = mm[top[i]].name;
    return k;
}

static void catch_up(const char *cap);

/* Rule 2 and rule 3 with the data: a fourth node joins a cluster of three
 * with R = 2. Every unit's backups are what placement wants next to its
 * primary, and the in-sync backups placement no longer wants, which stay
 * until the new ones have caught up; a backup is in sync only if it was
 * an in-sync backup before (the joining node never is, nor is a former
 * primary); a moved unit took one epoch. Once every backup has caught
 * up, the backups are exactly placement's. */
START_TEST(test_backups_follow_placement)
{
    mkopt o = {2, NULL, 0, 0, 0};
    keel_shard_map before, after;
    uint32_t s;

    start3(2);
    before = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = unit(&before, "", s);
        ck_assert_uint_eq(u->nreplicas, 2);
    }
    mk(3, &o);
    settle();
    after = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "", s);
        const keel_map_unit *ua = unit(&after, "", s);
        const char *pa = after.nodes[ua->replicas[0]];
        const char *pb = before.nodes[ub->replicas[0]];
        const char *want[KEEL_MAP_MAX_REPLICAS];
        size_t nw = wanted_backups("", s, pa, 2, want), i;
        int r;
        ck_assert_uint_ge(ua->nreplicas, 1 + nw);
        for (i = 0; i < nw; i++)
            ck_assert_int_ge(pos_of(&after, ua, want[i]), 1);
        for (r = 1; r < ua->nreplicas; r++) {
            const char *n = after.nodes[ua->replicas[r]];
            int was = pos_of(&before, ub, n), w = 0;
            for (i = 0; i < nw; i++)
                w |= strcmp(want[i], n) == 0;
            if (!w) /* kept: a complete copy until the new one is */
                ck_assert_msg(keel_map_insync(ua, r) && was >= 1 &&
                                  keel_map_insync(ub, was),
                              "unit %u: %s listed, not wanted (%s -> %s)",
                              s, n, unit_str(&before, "", s),
                              unit_str(&after, "", s));
        }
        ck_assert_uint_eq(ua->shard_epoch,
                          ub->shard_epoch + (strcmp(pa, pb) != 0));
        for (r = 1; r < ua->nreplicas; r++) {
            const char *n = after.nodes[ua->replicas[r]];
            int was = pos_of(&before, ub, n);
            if (keel_map_insync(ua, r))
                ck_assert_msg(was >= 1 && keel_map_insync(ub, was),
                              "unit %u: %s in sync from nowhere (%s -> %s)",
                              s, n, unit_str(&before, "", s),
                              unit_str(&after, "", s));
            if (strcmp(n, "node-d") == 0)
                ck_assert(!keel_map_insync(ua, r));
        }
    }
    keel_map_free(&after);
    /* (a unit moved to node-d once it caught up leaves its old primary
     * out of sync: caught up in turn) */
    catch_up("");
    catch_up("");
    after = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ua = unit(&after, "", s);
        const char *pa = after.nodes[ua->replicas[0]];
        const char *want[KEEL_MAP_MAX_REPLICAS];
        size_t nw = wanted_backups("", s, pa, 2, want), i;
        ck_assert_msg(ua->nreplicas == 1 + nw, "unit %u: %s after catch-up",
                      s, unit_str(&after, "", s));
        for (i = 0; i < nw; i++)
            ck_assert_int_ge(pos_of(&after, ua, want[i]), 1);
        ck_assert_uint_eq(count_insync(ua), ua->nreplicas);
    }
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* A join must not take an in-sync copy away before its replacement has
 * caught up. R = 2, nodes a, b, c, every unit on two replicas in sync;
 * node-d joins. Where placement now wants d beside a primary that stays,
 * the backup d displaces holds every write the primary acknowledged: it
 * stays in sync (listed) until d has caught up. Otherwise the unit is on
 * one copy for the length of d's catch-up, and a crash of its primary
 * in that window leaves it waiting for that node (for good if its disk
 * is lost) while a complete copy is live on the dropped backup. */
START_TEST(test_join_keeps_insync_until_caught_up)
{
    mkopt o = {2, NULL, 0, 0, 0};
    keel_shard_map before, mid, after;
    uint32_t s, hit = SHARDS;
    char dropped[16] = "", prim[16] = "";
    int pi;

    start3(2);
    advance(FORMATION);
    before = checked_map();
    mk(3, &o);
    settle();
    mid = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "", s);
        const keel_map_unit *um = unit(&mid, "", s);
        const char *pb = before.nodes[ub->replicas[0]];
        const char *pm = mid.nodes[um->replicas[0]];
        int r;
        if (strcmp(pb, pm) != 0 || count_insync(ub) < 2)
            continue;
        for (r = 1; r < ub->nreplicas; r++) {
            const char *n = before.nodes[ub->replicas[r]];
            int pos = pos_of(&mid, um, n);
            if (keel_map_insync(ub, r) && (pos < 1 || !keel_map_insync(um, pos))) {
                char was[128];
                snprintf(was, sizeof was, "%s", unit_str(&before, "", s));
                fprintf(stderr, "unit %u: %s -> %s: %s dropped before "
                        "node-d caught up\n", s, was, unit_str(&mid, "", s),
                        n);
                if (hit == SHARDS && strcmp(pb, "node-a") != 0) {
                    hit = s;
                    snprintf(dropped, sizeof dropped, "%s", n);
                    snprintf(prim, sizeof prim, "%s", pb);
                }
            }
        }
    }
    if (hit < SHARDS) {
        /* the primary crashes while d catches up */
        pi = node_idx(prim);
        kill_node(pi);
        settle();
        advance(2 * TIMEOUT);
        after = checked_map();
        fprintf(stderr, "unit %u after %s crashed: %s (primary %s), %s "
                "live with every acknowledged write\n", hit, prim,
                unit_str(&after, "", hit),
                keel_map_primary(&after, 0, hit), dropped);
        ck_assert_msg(strcmp(keel_map_primary(&after, 0, hit), prim) != 0,
                      "unit %u waits for crashed %s though %s, in sync "
                      "until node-d joined, is live", hit, prim, dropped);
        keel_map_free(&after);
    }
    ck_assert_msg(hit == SHARDS, "a join dropped an in-sync backup before "
                  "its replacement caught up");
    keel_map_free(&before);
    keel_map_free(&mid);
}
END_TEST

/* A drained node stops once it leads nothing (cluster_rt.c, leave_tick):
 * it does not wait for the units it backs up. Kept listed in sync while
 * its replacement copies the unit (rule 2), it is then a gone in-sync
 * backup within its dead time, which takes a backup place back from
 * placement: the replacement, still catching up, must not be dropped for
 * it. R = 2, nodes a, b, c; node-b is drained, then stops. */
START_TEST(test_drained_backup_stops_before_its_replacement_caught_up)
{
    keel_shard_map before, drained, after;
    uint32_t s;
    size_t checked = 0;

    start3(2);
    advance(FORMATION);
    before = checked_map();
    ck_assert_int_eq(keel_cluster_drain(C[0], "node-b"), 0);
    settle();
    drained = checked_map();
    kill_node(1); /* handed off what it led: it stops */
    settle();
    advance(2 * TIMEOUT);
    after = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "", s);
        const keel_map_unit *ud = unit(&drained, "", s);
        const keel_map_unit *ua = unit(&after, "", s);
        int r;
        if (strcmp(before.nodes[ub->replicas[0]], "node-b") == 0 ||
            pos_of(&before, ub, "node-b") < 1)
            continue;
        /* the replacement the drain appended */
        for (r = 1; r < ud->nreplicas; r++) {
            const char *n = drained.nodes[ud->replicas[r]];
            if (strcmp(n, "node-b") == 0 || pos_of(&before, ub, n) >= 1)
                continue;
            char b[128], d[128];
            checked++;
            snprintf(b, sizeof b, "%s", unit_str(&before, "", s));
            snprintf(d, sizeof d, "%s", unit_str(&drained, "", s));
            ck_assert_msg(pos_of(&after, ua, n) >= 1,
                          "unit %u: %s -> drained %s -> after node-b "
                          "stopped %s: the replacement %s was dropped",
                          s, b, d, unit_str(&after, "", s), n);
        }
    }
    ck_assert_uint_gt(checked, 0);
    keel_map_free(&before);
    keel_map_free(&drained);
    keel_map_free(&after);
}
END_TEST

/* Every out-of-sync backup of every unit of cap is caught up by its
 * primary (rule 7: the runtime's add request, as if its snapshot were
 * stored). */
static void catch_up(const char *cap)
{
    keel_shard_map m = checked_map();
    uint32_t s;
    int r;

    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = unit(&m, cap, s);
        int p = node_idx(m.nodes[u->replicas[0]]);
        for (r = 1; r < u->nreplicas; r++) {
            int b = node_idx(m.nodes[u->replicas[r]]);
            if (keel_map_insync(u, r) || b < 0 || C[b] == NULL)
                continue;
            ck_assert_int_eq(keel_cluster_request_add(C[p], cap, s,
                                                      u->shard_epoch, nm(b),
                                                      store_of_[b]),
                             0);
        }
    }
    keel_map_free(&m);
    settle();
}

/* Rule 3: a primary move with the data keeps the in-sync backups that
 * stay listed, and the old primary is never in sync after it. A move
 * that placement asks for only to spread the units (the owner is live
 * and stays a replica) waits until the new node is an in-sync backup:
 * node-d joins as a backup out of sync everywhere, nothing moves, and
 * once it has caught up the units placement gives it move to it without
 * a stream (an in-sync backup promoted). */
START_TEST(test_primary_move_carries_insync)
{
    mkopt g = {3, "gpu", 0, 0, 0};
    keel_shard_map before, mid, after;
    uint32_t s;
    size_t moved = 0;

    start_gpu(3); /* gpu units: [b, c] or [c, b], both in sync */
    before = checked_map();
    mk(3, &g);
    settle();
    mid = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "gpu", s);
        char want[128];
        snprintf(want, sizeof want, "%s*,%s*,node-d",
                 before.nodes[ub->replicas[0]], before.nodes[ub->replicas[1]]);
        ck_assert_str_eq(unit_str(&mid, "gpu", s), want);
        ck_assert_uint_eq(unit(&mid, "gpu", s)->shard_epoch, ub->shard_epoch);
        ck_assert_int_eq(unit(&mid, "gpu", s)->target, KEEL_MAP_NO_NODE);
    }
    catch_up("gpu");
    after = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "gpu", s);
        const keel_map_unit *ua = unit(&after, "gpu", s);
        const char *pb = before.nodes[ub->replicas[0]];
        const char *other = before.nodes[ub->replicas[1]];
        char want[128];
        ck_assert_uint_eq(ua->nreplicas, 3);
        if (strcmp(after.nodes[ua->replicas[0]], "node-d") != 0) {
            /* d caught up, in sync */
            snprintf(want, sizeof want, "%s*,%s*,node-d*", pb, other);
            ck_assert_str_eq(unit_str(&after, "gpu", s), want);
            ck_assert_uint_eq(ua->shard_epoch, ub->shard_epoch);
            continue;
        }
        moved++;
        ck_assert_uint_eq(ua->shard_epoch, ub->shard_epoch + 1);
        ck_assert_uint_eq(ua->promoted, 0);
        snprintf(want, sizeof want, "node-d*,%s,%s*", pb, other);
        ck_assert_str_eq(unit_str(&after, "gpu", s), want);
    }
    ck_assert_uint_gt(moved, 0);
    keel_map_free(&before);
    keel_map_free(&mid);
    keel_map_free(&after);
}
END_TEST

/* A node that publishes no store id can never be added to an in-sync
 * set (rule 4), so a move to it cannot wait for that: the units
 * placement gives it move at once, with the data, as without replicas. */
START_TEST(test_spread_move_to_a_node_without_store)
{
    mkopt g = {3, "gpu", 1, 0, 0};
    keel_shard_map before, after;
    uint32_t s;
    size_t moved = 0;

    start_gpu(3);
    before = checked_map();
    mk(3, &g);
    settle();
    after = zk_map(); /* check_map expects every member's store */
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "gpu", s);
        const keel_map_unit *ua = unit(&after, "gpu", s);
        if (strcmp(after.nodes[ua->replicas[0]], "node-d") != 0)
            continue;
        moved++;
        ck_assert_uint_eq(ua->shard_epoch, ub->shard_epoch + 1);
    }
    ck_assert_uint_gt(moved, 0);
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* Rule 3 without the data: a dead primary's units, its loss accepted and
 * no in-sync backup left to promote (it asked to drop them), move with
 * shard_epoch + 2 and only the new primary in sync. */
START_TEST(test_primary_lost_alone_in_sync)
{
    mkopt a = {3, NULL, 0, 1, 0}, g = {3, "gpu", 0, 1, 0};
    keel_shard_map before, after;
    uint32_t s;
    size_t moved = 0;

    mk(0, &a);
    settle();
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    mk(1, &g);
    mk(2, &g);
    settle();
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    advance(FORMATION);
    before = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "gpu", s);
        if (strcmp(before.nodes[ub->replicas[0]], "node-b") == 0)
            ck_assert_int_eq(keel_cluster_request_drop(C[1], "gpu", s,
                                                       ub->shard_epoch,
                                                       "node-c"),
                             0);
    }
    settle();
    kill_node(1);
    settle();
    advance(TIMEOUT * 2);
    after = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "gpu", s);
        const keel_map_unit *ua = unit(&after, "gpu", s);
        if (strcmp(before.nodes[ub->replicas[0]], "node-b") == 0) {
            moved++;
            /* node-b keeps its place, out of sync, for its dead time */
            ck_assert_str_eq(unit_str(&after, "gpu", s), "node-c*,node-b");
            ck_assert_uint_eq(ua->shard_epoch, ub->shard_epoch + 2);
            ck_assert_uint_eq(ua->promoted, 0);
        } else {
            /* node-b was an in-sync backup: it stays, gone, in sync
             * until node-c asks to drop it */
            ck_assert_str_eq(unit_str(&after, "gpu", s), "node-c*,node-b*");
            ck_assert_uint_eq(ua->shard_epoch, ub->shard_epoch);
        }
    }
    ck_assert_uint_gt(moved, 0);
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* Writes member data for node i as its agent would, with `store` (NULL:
 * none): a node seen on another store without a new session. */
static void republish_member(int i, const char *store)
{
    char path[64], data[256];
    int n;

    snprintf(path, sizeof path, "/keel/test/members/%s", nm(i));
    n = snprintf(data, sizeof data, "addr 127.0.0.1:%d\ncaps gpu\n"
                                    "session_timeout %d\n%s%s%s",
                 7000 + i, TIMEOUT, store ? "store " : "", store ? store : "",
                 store ? "\n" : "");
    ck_assert_int_eq(keel_zk_fake_set(F, path, data, (size_t)n), 0);
}

static void check_primaries(void);

/* Rule 4 and invariant 7: the table records each node's store; a node
 * seen on another store leaves every in-sync set it backs up, and the
 * units it is the primary of go to an in-sync backup at shard_epoch + 1
 * (their data is on the store it no longer runs on), in the write that
 * records its new store; placed nothing in that write, it is placed again
 * in the next (out of sync). */
START_TEST(test_store_change_leaves_insync)
{
    const char *fresh = "00000000000000000000000000000fff";
    keel_shard_map before, after;
    uint64_t writes;
    uint32_t s;
    size_t backed = 0, owned = 0;
    int ci;

    start_gpu(3);
    before = checked_map();
    writes = before.map_epoch;
    republish_member(2, fresh);
    snprintf(store_of_[2], sizeof store_of_[2], "%s", fresh);
    settle();
    after = checked_map(); /* invariant 7 with node-c's new store */
    /* the write that records it, the one that places it again, and the
     * one that drops the fallbacks of the default group's units it led
     * once their promoted primaries wrote their state */
    ck_assert_uint_eq(after.map_epoch, writes + 3);
    for (s = 0; s < SHARDS; s++)
        ck_assert_uint_eq(unit(&after, "", s)->fallback, 0);
    ci = keel_map_node_index(&after, "node-c");
    ck_assert_str_eq(after.store_ids[ci], fresh);
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *was = unit(&before, "gpu", s);
        const keel_map_unit *now = unit(&after, "gpu", s);
        ck_assert_str_eq(unit_str(&after, "gpu", s), "node-b*,node-c");
        if (strcmp(before.nodes[was->replicas[0]], "node-c") == 0) {
            owned++;
            ck_assert_uint_eq(now->shard_epoch, was->shard_epoch + 1);
            ck_assert(now->promoted);
        } else {
            backed++;
            ck_assert_uint_eq(now->shard_epoch, was->shard_epoch);
        }
    }
    ck_assert_uint_gt(backed, 0);
    ck_assert_uint_gt(owned, 0);
    check_primaries();
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* A primary seen on another store whose units have no in-sync backup
 * left: they wait for its store. The table keeps the store their data
 * is on (so that the node does not serve them from the one it runs on),
 * nothing moves, and once the node runs on that store again the map is
 * as it was. A member that publishes no store id at all counts as being
 * on another store. */
START_TEST(test_store_change_without_insync_backup_waits)
{
    const char *fresh = "00000000000000000000000000000fff";
    char own[KEEL_MAP_STORE_HEX + 1];
    keel_shard_map before, after;
    uint32_t s;
    int pass, bi;

    start_gpu(3);
    /* node-c on another store: every gpu unit is node-b's, alone in sync */
    republish_member(2, fresh);
    snprintf(store_of_[2], sizeof store_of_[2], "%s", fresh);
    settle();
    before = checked_map();
    for (s = 0; s < SHARDS; s++)
        ck_assert_str_eq(unit_str(&before, "gpu", s), "node-b*,node-c");
    snprintf(own, sizeof own, "%s", store_of_[1]);
    for (pass = 0; pass < 2; pass++) {
        republish_member(1, pass == 0 ? fresh + 0 : NULL);
        settle();
        advance(3 * TIMEOUT);
        after = zk_map(); /* node-b's live store is not the table's */
        bi = keel_map_node_index(&after, "node-b");
        ck_assert_int_ge(bi, 0);
        ck_assert_str_eq(after.store_ids[bi], own);
        for (s = 0; s < SHARDS; s++) {
            const keel_map_unit *was = unit(&before, "gpu", s);
            const keel_map_unit *now = unit(&after, "gpu", s);
            ck_assert_str_eq(unit_str(&after, "gpu", s), "node-b*,node-c");
            ck_assert_uint_eq(now->shard_epoch, was->shard_epoch);
            ck_assert_uint_eq(now->target, KEEL_MAP_NO_NODE);
        }
        keel_map_free(&after);
    }
    /* back on its store: nothing was lost, nothing changes */
    republish_member(1, own);
    settle();
    after = checked_map();
    for (s = 0; s < SHARDS; s++) {
        ck_assert_str_eq(unit_str(&after, "gpu", s), "node-b*,node-c");
        ck_assert_uint_eq(unit(&after, "gpu", s)->shard_epoch,
                          unit(&before, "gpu", s)->shard_epoch);
    }
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* A primary on another store whose unit has no in-sync backup keeps the
 * old store in the table, so it could never be caught up under the new
 * one: it is placed nothing, and live nodes take its places as a backup
 * (R = 2, four nodes, node-d spare for node-c's). */
START_TEST(test_store_lost_node_is_placed_nothing)
{
    const char *fresh = "00000000000000000000000000000fff";
    mkopt g = {2, "gpu", 0, 0, 0};
    char own[KEEL_MAP_STORE_HEX + 1];
    keel_shard_map m;
    uint32_t s, u1 = SHARDS, u2 = SHARDS;
    uint64_t e1;
    int ci, ri;

    start_gpu(2);
    mk(3, &g);
    settle();
    advance(FORMATION);
    for (s = 0; s < 4; s++) { /* caught up, moved, the old ones again */
        catch_up("gpu");
        advance(1000);
    }
    m = checked_map();
    ci = keel_map_cap_index(&m, "gpu");
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = unit(&m, "gpu", s);
        ck_assert_uint_eq(count_insync(u), 2);
        if (u1 == SHARDS &&
            strcmp(keel_map_primary(&m, (uint32_t)ci, s), "node-c") == 0)
            u1 = s;
        else if (u2 == SHARDS && pos_of(&m, u, "node-c") == 1 &&
                 pos_of(&m, u, "node-d") < 0)
            u2 = s;
    }
    ck_assert_uint_lt(u1, SHARDS);
    ck_assert_uint_lt(u2, SHARDS);
    /* u1 loses its in-sync backup: node-c holds its only copy */
    e1 = unit(&m, "gpu", u1)->shard_epoch;
    ri = unit(&m, "gpu", u1)->replicas[1];
    ck_assert_int_eq(keel_cluster_request_drop(C[2], "gpu", u1, e1,
                                               m.nodes[ri]),
                     0);
    settle();
    keel_map_free(&m);
    m = checked_map();
    ck_assert_uint_eq(count_insync(unit(&m, "gpu", u1)), 1);
    keel_map_free(&m);
    snprintf(own, sizeof own, "%s", store_of_[2]);
    republish_member(2, fresh);
    settle();
    advance(3 * TIMEOUT);
    m = zk_map();
    ck_assert_str_eq(m.store_ids[keel_map_node_index(&m, "node-c")], own);
    /* u1 waits for node-c's old store */
    ck_assert_str_eq(keel_map_primary(&m, (uint32_t)ci, u1), "node-c");
    ck_assert_uint_eq(unit(&m, "gpu", u1)->shard_epoch, e1);
    /* u2 has its backup place taken by the spare */
    ck_assert_int_lt(pos_of(&m, unit(&m, "gpu", u2), "node-c"), 1);
    ck_assert_int_ge(pos_of(&m, unit(&m, "gpu", u2), "node-b"), 0);
    ck_assert_int_ge(pos_of(&m, unit(&m, "gpu", u2), "node-d"), 0);
    keel_map_free(&m);
}
END_TEST

/* The first gpu unit node-b leads in m (the test fails if none). */
static uint32_t unit_led_by_b(const keel_shard_map *m)
{
    int ci = keel_map_cap_index(m, "gpu");
    uint32_t s;

    ck_assert_int_ge(ci, 0);
    for (s = 0; s < SHARDS; s++)
        if (strcmp(keel_map_primary(m, (uint32_t)ci, s), "node-b") == 0)
            return s;
    ck_abort_msg("node-b leads no gpu unit");
    return SHARDS;
}

/* Writes m as the next map, as a controller would, and lets the agents
 * apply it. */
static void write_map_as_controller(keel_shard_map *m)
{
    uint8_t *buf;
    size_t len;

    m->map_epoch++;
    ck_assert_int_eq(keel_map_encode(m, &buf, &len), 0);
    ck_assert_int_eq(keel_zk_fake_set(F, "/keel/test/map", buf, len), 0);
    free(buf);
    settle();
}

/* The node's side of rule 4: a map that makes a node the primary of a
 * unit while its table records another store than the one the node runs
 * on (a promotion decided on a view from before the node's restart on an
 * empty disk) does not make it serve the unit; the same map with its own
 * store does. */
START_TEST(test_no_primary_on_another_store)
{
    keel_shard_map m;
    keel_placement pl;
    uint32_t bs;
    int pass, ci, c_idx;

    start_gpu(3);
    m = checked_map();
    ci = keel_map_cap_index(&m, "gpu");
    c_idx = keel_map_node_index(&m, "node-c");
    bs = unit_led_by_b(&m);
    keel_cluster_placement(C[2], "gpu", bs, &pl);
    ck_assert_int_eq(pl.state, KEEL_PLACEMENT_REMOTE);
    /* The controller (node-a) hears nothing of what follows. */
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    for (pass = 0; pass < 2; pass++) {
        keel_map_unit *u = keel_map_unit_at(&m, (uint32_t)ci, bs);
        if (pass == 0) {
            uint16_t b = u->replicas[0];
            u->replicas[0] = u->replicas[1];
            u->replicas[1] = b;
            u->insync = 1;
        }
        u->shard_epoch++;
        u->promoted = 1;
        keel_map_set_store(&m, (uint32_t)c_idx,
                           pass == 0 ? "00000000000000000000000000000fff"
                                     : store_of_[2]);
        write_map_as_controller(&m);
        keel_cluster_placement(C[2], "gpu", bs, &pl);
        ck_assert_uint_eq(pl.epoch, u->shard_epoch);
        if (pass == 0)
            ck_assert_int_eq(pl.state, KEEL_PLACEMENT_UNAVAILABLE);
        else
            ck_assert_int_eq(pl.state, KEEL_PLACEMENT_LOCAL);
    }
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    keel_map_free(&m);
}
END_TEST

/* Nor does a node take a unit's stream into a store the map's table does
 * not name for it: the controller, which keeps the old store in the
 * table while the node is the primary of units (rule 4), would credit
 * that store with the unit, and the node would never serve it (nor
 * could it, back on the store the table names). */
START_TEST(test_no_stream_into_another_store)
{
    keel_shard_map m;
    uint32_t bs;
    int pass, ci, c_idx;

    start_gpu(3);
    m = checked_map();
    ci = keel_map_cap_index(&m, "gpu");
    c_idx = keel_map_node_index(&m, "node-c");
    bs = unit_led_by_b(&m);
    /* The controller (node-a) hears nothing of what follows. */
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    for (pass = 0; pass < 2; pass++) {
        keel_map_unit *u = keel_map_unit_at(&m, (uint32_t)ci, bs);
        u->target = (uint16_t)c_idx;
        keel_map_set_store(&m, (uint32_t)c_idx,
                           pass == 0 ? "00000000000000000000000000000fff"
                                     : store_of_[2]);
        write_map_as_controller(&m);
        ck_assert_int_eq(keel_cluster_may_receive(C[2], "gpu", bs,
                                                  u->shard_epoch, "node-b"),
                         pass == 0 ? KEEL_ENOTTARGET : 0);
    }
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    keel_map_free(&m);
}
END_TEST

/* Node i stopped and started again on `store`, and a session timeout
 * for what follows to settle. */
static void restart_on(int i, const char *store, const mkopt *mo)
{
    kill_node(i);
    settle();
    snprintf(store_of_[i], sizeof store_of_[i], "%s", store);
    mk(i, mo);
    settle();
    advance(TIMEOUT);
}

/* The units of a primary promoted on a view from before its restart on
 * another store wait for the store their data is on (rule 4): the node
 * must then be able to come back on that store. Its store record
 * (nodes/<node>) names the store it joined with as a backup, but the
 * map's table names the one the units' data is on, and that store
 * joins and serves them; the store it was promoted on then may not. */
START_TEST(test_store_lost_primary_back_on_its_store)
{
    const char *fresh = "00000000000000000000000000000ddd";
    mkopt g = {3, "gpu", 0, 0, 0};
    char own[KEEL_MAP_STORE_HEX + 1], rec[64];
    keel_shard_map m;
    keel_placement pl;
    uint32_t s, bs;
    uint64_t e = 0;
    int ci;

    start_gpu(3);
    m = checked_map();
    ci = keel_map_cap_index(&m, "gpu");
    bs = unit_led_by_b(&m);
    ck_assert_str_eq(unit_str(&m, "gpu", bs), "node-b*,node-c*");
    snprintf(own, sizeof own, "%s", store_of_[2]);
    /* The controller (node-a) hears nothing of what follows: node-c
     * comes back on a new store (a backup: its store check recorded
     * it), node-b dies, and the map makes node-c the primary of node-b's
     * units by failover, its table still naming node-c's old store. */
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    kill_node(2);
    settle();
    snprintf(rec, sizeof rec, "store %s\n", fresh);
    ck_assert_int_eq(keel_zk_fake_set(F, "/keel/test/nodes/node-c", rec,
                                      strlen(rec)),
                     0);
    snprintf(store_of_[2], sizeof store_of_[2], "%s", fresh);
    mk(2, &g);
    settle();
    ck_assert_int_eq(keel_cluster_phase(C[2]), KEEL_CLUSTER_RUNNING);
    kill_node(1);
    settle();
    for (s = 0; s < SHARDS; s++) {
        keel_map_unit *u = keel_map_unit_at(&m, (uint32_t)ci, s);
        if (strcmp(m.nodes[u->replicas[0]], "node-b") != 0)
            continue;
        u->replicas[0] = u->replicas[1];
        u->replicas[1] = (uint16_t)keel_map_node_index(&m, "node-b");
        u->insync = 1;
        u->shard_epoch++;
        u->promoted = 1;
        if (s == bs)
            e = u->shard_epoch;
    }
    write_map_as_controller(&m);
    keel_map_free(&m);
    keel_cluster_placement(C[2], "gpu", bs, &pl);
    ck_assert_uint_eq(pl.epoch, e);
    ck_assert_int_eq(pl.state, KEEL_PLACEMENT_UNAVAILABLE);
    /* The controller sees node-c's store: the units wait for node-c's
     * old store, which the table keeps. */
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    settle();
    advance(TIMEOUT);
    m = zk_map();
    ck_assert_str_eq(m.store_ids[keel_map_node_index(&m, "node-c")], own);
    ck_assert_str_eq(unit_str(&m, "gpu", bs), "node-c*,node-b");
    ck_assert_uint_eq(unit(&m, "gpu", bs)->shard_epoch, e);
    keel_map_free(&m);
    /* node-c back on that store joins and serves them. */
    restart_on(2, own, &g);
    ck_assert_int_eq(keel_cluster_phase(C[2]), KEEL_CLUSTER_RUNNING);
    keel_cluster_placement(C[2], "gpu", bs, &pl);
    ck_assert_uint_eq(pl.epoch, e);
    ck_assert_int_eq(pl.state, KEEL_PLACEMENT_LOCAL);
    m = checked_map();
    ck_assert_str_eq(m.store_ids[keel_map_node_index(&m, "node-c")], own);
    ck_assert_uint_eq(unit(&m, "gpu", bs)->shard_epoch, e);
    keel_map_free(&m);
    /* Back on the new store again: refused, the units are node-c's. */
    restart_on(2, fresh, &g);
    ck_assert_int_ne(keel_cluster_phase(C[2]), KEEL_CLUSTER_RUNNING);
}
END_TEST

/* Rule 5, stale requests: from another epoch, for a node not in sync,
 * or published by a node that is not the unit's primary; none changes
 * the map. */
START_TEST(test_stale_drop_requests_ignored)
{
    keel_shard_map before, after;
    keel_node_state st;
    uint8_t *buf;
    size_t len;
    int gi, p, b;
    uint64_t e;
    char path[64];

    start_gpu(3);
    before = checked_map();
    gi = keel_map_cap_index(&before, "gpu");
    e = unit(&before, "gpu", 5)->shard_epoch;
    p = node_idx(keel_map_primary(&before, (uint32_t)gi, 5));
    b = p == 1 ? 2 : 1;
    /* the primary asks at an older epoch, and for a node not listed */
    keel_node_state_init(&st);
    st.map_epoch = before.map_epoch;
    ck_assert_int_eq(
        keel_node_state_put(&st, "gpu", 5, KEEL_ROLE_PRIMARY, e + 7, NULL),
        0);
    ck_assert_int_eq(keel_node_state_put_drop(&st, "gpu", 5, nm(b)), 0);
    ck_assert_int_eq(keel_node_state_put_drop(&st, "gpu", 5, "node-a"), 0);
    ck_assert_int_eq(keel_node_state_encode(&st, &buf, &len), 0);
    snprintf(path, sizeof path, "/keel/test/nodes/%s/state", nm(p));
    ck_assert_int_eq(keel_zk_fake_set(F, path, buf, len), 0);
    free(buf);
    keel_node_state_free(&st);
    settle();
    /* the backup claims to be primary and asks to drop the primary */
    keel_node_state_init(&st);
    st.map_epoch = before.map_epoch;
    ck_assert_int_eq(
        keel_node_state_put(&st, "gpu", 5, KEEL_ROLE_PRIMARY, e, NULL), 0);
    ck_assert_int_eq(keel_node_state_put_drop(&st, "gpu", 5, nm(p)), 0);
    ck_assert_int_eq(keel_node_state_encode(&st, &buf, &len), 0);
    snprintf(path, sizeof path, "/keel/test/nodes/%s/state", nm(b));
    ck_assert_int_eq(keel_zk_fake_set(F, path, buf, len), 0);
    free(buf);
    keel_node_state_free(&st);
    settle();
    after = checked_map();
    ck_assert_uint_eq(after.map_epoch, before.map_epoch);
    ck_assert(keel_map_same_placement(&before, &after));
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* A backup that dies stays listed and in sync until its primary asks to
 * drop it; then it stays listed, out of sync, for its dead time. The
 * units it was primary of fail over to their in-sync backup, and list it
 * out of sync. Back on the same store, it is a backup of every unit
 * where it was, out of sync (catch-up brings it back in). */
START_TEST(test_dead_backup)
{
    mkopt g = {3, "gpu", 0, 0, 0};
    keel_shard_map before, dead, dropped, back;
    uint32_t s, mine = SHARDS;
    int gi;

    start_gpu(3);
    before = checked_map();
    gi = keel_map_cap_index(&before, "gpu");
    kill_node(2);
    settle();
    advance(TIMEOUT * 2);
    dead = checked_map();
    for (s = 0; s < SHARDS; s++) {
        if (strcmp(keel_map_primary(&before, (uint32_t)gi, s), "node-b") ==
            0) { /* nothing changes for node-b's units */
            ck_assert_str_eq(unit_str(&dead, "gpu", s),
                             unit_str(&before, "gpu", s));
            continue;
        }
        /* node-c's fail over to node-b */
        ck_assert_str_eq(unit_str(&dead, "gpu", s), "node-b*,node-c");
        ck_assert_uint_eq(unit(&dead, "gpu", s)->shard_epoch,
                          unit(&before, "gpu", s)->shard_epoch + 1);
        ck_assert_uint_eq(unit(&dead, "gpu", s)->promoted, 1);
    }
    for (s = 0; s < SHARDS; s++)
        if (strcmp(keel_map_primary(&before, (uint32_t)gi, s), "node-b") ==
            0) {
            uint64_t e = unit(&dead, "gpu", s)->shard_epoch;
            ck_assert_int_eq(
                keel_cluster_request_drop(C[1], "gpu", s, e, "node-c"), 0);
            mine = s;
        }
    ck_assert_uint_lt(mine, SHARDS);
    settle();
    dropped = checked_map();
    for (s = 0; s < SHARDS; s++)
        ck_assert_str_eq(unit_str(&dropped, "gpu", s), "node-b*,node-c");
    mk(2, &g);
    settle();
    back = checked_map();
    /* Back, node-c is a backup out of sync everywhere; placement gives it
     * its units back only once it is in sync (a move without a stream),
     * not before. */
    for (s = 0; s < SHARDS; s++)
        ck_assert_str_eq(unit_str(&back, "gpu", s), "node-b*,node-c");
    keel_map_free(&back);
    catch_up("gpu");
    back = checked_map();
    for (s = 0; s < SHARDS; s++) {
        if (strcmp(keel_map_primary(&before, (uint32_t)gi, s), "node-b") ==
            0) {
            ck_assert_str_eq(unit_str(&back, "gpu", s), "node-b*,node-c*");
            continue;
        }
        /* placement gives node-c its units back: handed off by node-b
         * to its in-sync backup, node-b out of sync after it */
        ck_assert_str_eq(unit_str(&back, "gpu", s), "node-c*,node-b");
        ck_assert_uint_eq(unit(&back, "gpu", s)->shard_epoch,
                          unit(&before, "gpu", s)->shard_epoch + 2);
        ck_assert_uint_eq(unit(&back, "gpu", s)->promoted, 0);
    }
    keel_map_free(&before);
    keel_map_free(&dead);
    keel_map_free(&dropped);
    keel_map_free(&back);
}
END_TEST

/* ------------------------------------------------ the dead time */

#define DEAD 20000 /* replica_dead_ms of the dead-time tests */

/* Nodes a, b, c and d in the default group, R = 3, dead time `dead_ms`:
 * every unit placed, all in sync; a is the controller. */
static void start4(uint32_t dead_ms)
{
    mkopt o = {3, NULL, 0, 0, dead_ms};
    int i;

    mk(0, &o);
    settle();
    for (i = 1; i < 4; i++)
        mk(i, &o);
    settle();
    advance(FORMATION);
    ck_assert(keel_cluster_is_controller(C[0]));
}

/* Kills node i and moves time on, 100 ms at a time, until its member
 * znode is gone; returns the fake's time then (the controllers saw it
 * gone within that step). */
static uint64_t kill_until_gone(int i)
{
    char path[64];
    int k;

    snprintf(path, sizeof path, "/keel/test/members/%s", nm(i));
    kill_node(i);
    settle();
    for (k = 0; k < 200; k++) {
        if (keel_zk_fake_get(F, path, NULL, NULL, NULL) == KEEL_ENOTFOUND)
            return keel_zk_fake_now(F);
        advance(100);
    }
    ck_abort_msg("the member znode of %s stayed", nm(i));
    return 0;
}

/* Moves the fake's time on to `t`, a second at most at a time. */
static void advance_to(uint64_t t)
{
    int k;

    for (k = 0; k < 1000 && keel_zk_fake_now(F) < t; k++) {
        uint64_t left = t - keel_zk_fake_now(F);
        advance(left < 1000 ? left : 1000);
    }
    ck_assert_uint_ge(keel_zk_fake_now(F), t);
}

/* Whether unit s lists exactly the nodes it listed in `before` (in any
 * order, in sync or not). */
static int same_nodes(const keel_shard_map *before, const keel_shard_map *m,
                      uint32_t s)
{
    const keel_map_unit *ub = unit(before, "", s), *u = unit(m, "", s);
    int r;

    if (ub->nreplicas != u->nreplicas)
        return 0;
    for (r = 0; r < ub->nreplicas; r++)
        if (pos_of(m, u, before->nodes[ub->replicas[r]]) < 0)
            return 0;
    return 1;
}

/* A dead node keeps its place in every replica list (a unit it led fails
 * over and lists it out of sync) until it has been gone for the dead
 * time; then the live node placement ranks next replaces it, out of sync,
 * and catches up; once that one is in sync, the dead node, still in sync
 * where its primary never asked to drop it, leaves too. */
START_TEST(test_dead_time_kept_then_replaced)
{
    keel_shard_map before, m;
    uint64_t gone;
    uint32_t s;
    size_t held = 0, led = 0;

    start4(DEAD);
    before = checked_map();
    gone = kill_until_gone(3);
    advance_to(gone + DEAD - 1000);
    m = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "", s);
        const keel_map_unit *u = unit(&m, "", s);
        ck_assert_msg(same_nodes(&before, &m, s), "%u: %s", s,
                      unit_str(&m, "", s));
        if (pos_of(&before, ub, "node-d") < 0)
            continue;
        held++;
        if (pos_of(&before, ub, "node-d") == 0) {
            /* failed over; node-d listed out of sync */
            led++;
            ck_assert_uint_eq(u->shard_epoch, ub->shard_epoch + 1);
            ck_assert(!keel_map_insync(u, pos_of(&m, u, "node-d")));
        }
    }
    ck_assert_uint_gt(held, 0);
    ck_assert_uint_gt(led, 0);
    keel_map_free(&m);
    advance_to(gone + DEAD + 1000);
    m = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "", s);
        const keel_map_unit *u = unit(&m, "", s);
        int pd = pos_of(&m, u, "node-d"), i;
        if (pos_of(&before, ub, "node-d") < 0) {
            ck_assert(same_nodes(&before, &m, s));
            continue;
        }
        /* the three live nodes, the new one out of sync; node-d only
         * where it is still in sync */
        for (i = 0; i < 3; i++) {
            int p = pos_of(&m, u, nm(i));
            ck_assert_msg(p >= 0, "%u: %s", s, unit_str(&m, "", s));
            if (pos_of(&before, ub, nm(i)) < 0)
                ck_assert(!keel_map_insync(u, p));
        }
        ck_assert(pd < 0 || keel_map_insync(u, pd));
        ck_assert_uint_eq(u->nreplicas, pd < 0 ? 3 : 4);
    }
    keel_map_free(&m);
    catch_up("");
    m = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = unit(&m, "", s);
        ck_assert_msg(pos_of(&m, u, "node-d") < 0, "%u: %s", s,
                      unit_str(&m, "", s));
        ck_assert_uint_eq(u->nreplicas, 3);
        ck_assert_uint_eq(count_insync(u), 3);
    }
    keel_map_free(&m);
    keel_map_free(&before);
}
END_TEST

/* A dead node that comes back before its dead time keeps every place it
 * had: nothing is re-replicated, then or after the time would have
 * ended. */
START_TEST(test_dead_time_back_before_it)
{
    mkopt o = {3, NULL, 0, 0, DEAD};
    keel_shard_map before, m;
    uint64_t gone;
    uint32_t s;
    size_t held = 0;

    start4(DEAD);
    before = checked_map();
    gone = kill_until_gone(3);
    advance_to(gone + DEAD / 2);
    mk(3, &o); /* the same store */
    settle();
    advance_to(gone + 2 * DEAD);
    m = checked_map();
    for (s = 0; s < SHARDS; s++) {
        ck_assert_msg(same_nodes(&before, &m, s), "%u: %s", s,
                      unit_str(&m, "", s));
        held += pos_of(&m, unit(&m, "", s), "node-d") >= 0;
    }
    ck_assert_uint_gt(held, 0);
    keel_map_free(&m);
    /* and it dies again: the time starts again from then */
    gone = kill_until_gone(3);
    advance_to(gone + DEAD - 1000);
    m = checked_map();
    for (s = 0; s < SHARDS; s++)
        ck_assert(same_nodes(&before, &m, s));
    keel_map_free(&m);
    keel_map_free(&before);
}
END_TEST

/* The controller dies halfway through a dead node's dead time: its
 * successor, a member when the node died, counts from that moment too,
 * and replaces the dead node when the time ends, not a whole dead time
 * after it took over. */
START_TEST(test_dead_time_new_controller)
{
    keel_shard_map before, m;
    uint64_t gone;
    uint32_t s;
    size_t out = 0;
    int k;

    start4(DEAD);
    before = checked_map();
    gone = kill_until_gone(3);
    advance_to(gone + DEAD / 2);
    kill_until_gone(0);
    for (k = 0; k < 100 && !keel_cluster_is_controller(C[1]) &&
                !keel_cluster_is_controller(C[2]);
         k++)
        advance(100);
    ck_assert(keel_cluster_is_controller(C[1]) ||
              keel_cluster_is_controller(C[2]));
    advance_to(gone + DEAD - 1000);
    m = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = unit(&m, "", s);
        int pd = pos_of(&m, u, "node-d");
        /* still where it was; out of sync where it led */
        ck_assert(same_nodes(&before, &m, s));
        if (pd >= 0 && !keel_map_insync(u, pd))
            out++;
    }
    ck_assert_uint_gt(out, 0);
    keel_map_free(&m);
    advance_to(gone + DEAD + 1000);
    m = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = unit(&m, "", s);
        int pd = pos_of(&m, u, "node-d");
        /* gone from every unit where it was out of sync; node-a, dead
         * for less than its own dead time, keeps its places */
        ck_assert_msg(pd < 0 || keel_map_insync(u, pd), "%u: %s", s,
                      unit_str(&m, "", s));
        if (pos_of(&before, unit(&before, "", s), "node-a") >= 0)
            ck_assert_int_ge(pos_of(&m, u, "node-a"), 0);
    }
    keel_map_free(&m);
    keel_map_free(&before);
}
END_TEST

/* A controller that joined after the node died never saw it go: it
 * counts the dead time from its own first look at the map (later than
 * the nodes that were members then would have, never earlier). Node e
 * joins halfway through node-d's dead time; a, b and c die, e leads. */
START_TEST(test_dead_time_later_controller)
{
    mkopt o = {3, NULL, 0, 0, DEAD};
    keel_shard_map m;
    uint64_t gone, took;
    uint32_t s;
    size_t out = 0;
    int k;

    start4(DEAD);
    gone = kill_until_gone(3);
    advance_to(gone + DEAD / 2);
    mk(4, &o);
    settle();
    kill_node(0);
    kill_node(1);
    kill_node(2);
    for (k = 0; k < 200 && !keel_cluster_is_controller(C[4]); k++)
        advance(100);
    ck_assert(keel_cluster_is_controller(C[4]));
    took = keel_zk_fake_now(F);
    ck_assert_uint_gt(took, gone + DEAD / 2);
    /* past node-d's time as the others counted it: still listed, out of
     * sync where it led */
    advance_to(gone + DEAD + 2000);
    ck_assert_uint_lt(keel_zk_fake_now(F) + 1000, took + DEAD);
    m = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = unit(&m, "", s);
        int pd = pos_of(&m, u, "node-d");
        if (pd >= 1 && !keel_map_insync(u, pd))
            out++;
    }
    ck_assert_uint_gt(out, 0);
    keel_map_free(&m);
    /* past it as node-e counts it: gone wherever it was out of sync */
    advance_to(took + DEAD + 1000);
    m = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = unit(&m, "", s);
        int pd = pos_of(&m, u, "node-d");
        ck_assert_msg(pd < 0 || keel_map_insync(u, pd), "%u: %s", s,
                      unit_str(&m, "", s));
    }
    keel_map_free(&m);
}
END_TEST

/* A draining backup leaves the lists at once (placement drops it), and
 * its units as primary move with their in-sync backups kept. */
START_TEST(test_drain_with_backups)
{
    keel_shard_map before, after;
    uint32_t s;

    start3(3);
    before = checked_map();
    ck_assert_int_eq(keel_cluster_drain(C[0], "node-c"), 0);
    settle();
    after = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "", s);
        const keel_map_unit *ua = unit(&after, "", s);
        int r;
        ck_assert_int_eq(pos_of(&after, ua, "node-c"), -1);
        ck_assert_uint_eq(ua->nreplicas, 2);
        for (r = 1; r < ua->nreplicas; r++) {
            const char *n = after.nodes[ua->replicas[r]];
            int was = pos_of(&before, ub, n);
            /* in sync now only if an in-sync backup before */
            if (keel_map_insync(ua, r))
                ck_assert(was >= 1 && keel_map_insync(ub, was));
        }
    }
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* A drain moves each unit of the leaving node onto an in-sync backup,
 * without a stream, even where placement's first choice is a backup
 * still out of sync (node-d, joined and not caught up yet); that one
 * gets the unit later, once it has caught up, by a move of its own. */
START_TEST(test_drain_prefers_an_insync_backup)
{
    mkopt g = {3, "gpu", 0, 0, 0};
    keel_shard_map before, drained, after;
    uint32_t s;
    int gi;
    size_t led = 0, to_d = 0;

    start_gpu(3); /* gpu units on b and c, both in sync */
    mk(3, &g);
    settle();
    before = checked_map();
    gi = keel_map_cap_index(&before, "gpu");
    ck_assert_int_eq(keel_cluster_drain(C[0], "node-b"), 0);
    settle();
    drained = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "gpu", s);
        const keel_map_unit *ua = unit(&drained, "gpu", s);
        int pb = pos_of(&drained, ua, "node-b");
        ck_assert_str_eq(keel_map_primary(&drained, (uint32_t)gi, s),
                         "node-c");
        /* node-b stays only as the in-sync backup it was, until node-d
         * has caught up */
        if (pb >= 0)
            ck_assert(pb >= 1 && keel_map_insync(ua, pb) &&
                      strcmp(keel_map_primary(&before, (uint32_t)gi, s),
                             "node-b") != 0);
        ck_assert_int_ge(pos_of(&drained, ua, "node-d"), 1);
        ck_assert(!keel_map_insync(ua, pos_of(&drained, ua, "node-d")));
        if (strcmp(keel_map_primary(&before, (uint32_t)gi, s), "node-b") ==
            0) {
            led++;
            ck_assert_uint_eq(ua->shard_epoch, ub->shard_epoch + 1);
        } else {
            ck_assert_uint_eq(ua->shard_epoch, ub->shard_epoch);
        }
    }
    ck_assert_uint_gt(led, 0);
    catch_up("gpu");
    after = checked_map();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ud = unit(&drained, "gpu", s);
        const keel_map_unit *ua = unit(&after, "gpu", s);
        if (strcmp(keel_map_primary(&after, (uint32_t)gi, s), "node-d") !=
            0) {
            ck_assert_str_eq(unit_str(&after, "gpu", s), "node-c*,node-d*");
            continue;
        }
        to_d++;
        ck_assert_uint_eq(ua->shard_epoch, ud->shard_epoch + 1);
        ck_assert_str_eq(unit_str(&after, "gpu", s), "node-d*,node-c");
    }
    ck_assert_uint_gt(to_d, 0);
    keel_map_free(&before);
    keel_map_free(&drained);
    keel_map_free(&after);
}
END_TEST

/* The in-sync members of a unit, sorted, as "a,b". */
static const char *insync_set(const keel_shard_map *m, const char *cap,
                              uint32_t s)
{
    static char out[128];
    const keel_map_unit *u = unit(m, cap, s);
    const char *v[KEEL_MAP_MAX_REPLICAS];
    size_t n = 0, i, j, off = 0;
    int r;

    for (r = 0; r < u->nreplicas; r++)
        if (keel_map_insync(u, r))
            v[n++] = m->nodes[u->replicas[r]];
    for (i = 1; i < n; i++)
        for (j = i; j > 0 && strcmp(v[j - 1], v[j]) > 0; j--) {
            const char *t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    out[0] = '\0';
    for (i = 0; i < n; i++)
        off += (size_t)snprintf(out + off, sizeof out - off, "%s%s",
                                i ? "," : "", v[i]);
    return out;
}

/* A new controller reads the map and keeps every in-sync set as it is.
 * The old one's node rejoins meanwhile (a new session, its own store):
 * its out-of-sync places may be listed in another order after its
 * absence, but no in-sync set, primary or epoch changes, except that the
 * units node-a was primary of fail over while it is gone: to an in-sync
 * backup, at shard_epoch + 1, alone in sync. */
START_TEST(test_new_controller_keeps_insync)
{
    keel_shard_map before, after;
    int gi, p, b, who = -1, i;
    size_t nfailed = 0;
    uint64_t e;

    start_gpu(3);
    before = checked_map();
    gi = keel_map_cap_index(&before, "gpu");
    e = unit(&before, "gpu", 1)->shard_epoch;
    p = node_idx(keel_map_primary(&before, (uint32_t)gi, 1));
    b = p == 1 ? 2 : 1;
    ck_assert_int_eq(keel_cluster_request_drop(C[p], "gpu", 1, e, nm(b)), 0);
    settle();
    keel_map_free(&before);
    before = checked_map();
    ck_assert_uint_eq(count_insync(unit(&before, "gpu", 1)), 1);
    /* the controller's session expires: another node leads, node-a
     * rejoins on its own store */
    keel_zk_fake_expire(keel_cluster_zk(C[0]));
    settle();
    advance(1000);
    for (i = 0; i < 3; i++)
        if (keel_cluster_is_controller(C[i]))
            who = i;
    ck_assert_int_gt(who, 0);
    after = checked_map();
    for (i = 0; i < 2; i++) {
        const char *cap = i == 0 ? "" : "gpu";
        uint32_t s;
        char was[128];
        for (s = 0; s < SHARDS; s++) {
            const keel_map_unit *ub = unit(&before, cap, s);
            const keel_map_unit *ua = unit(&after, cap, s);
            const char *np = after.nodes[ua->replicas[0]];
            if (strcmp(before.nodes[ub->replicas[0]], "node-a") == 0 &&
                ua->shard_epoch != ub->shard_epoch) {
                /* failed over to an in-sync backup (and, once node-a was
                 * back, possibly handed back to it with the data) */
                int was_pos = pos_of(&before, ub, np);
                ck_assert(was_pos == 0 || keel_map_insync(ub, was_pos));
                ck_assert_uint_eq(ua->shard_epoch,
                                  ub->shard_epoch + (was_pos == 0 ? 2 : 1));
                ck_assert_uint_eq(ua->promoted, was_pos != 0);
                ck_assert_str_eq(insync_set(&after, cap, s), np);
                nfailed++;
                continue;
            }
            snprintf(was, sizeof was, "%s", insync_set(&before, cap, s));
            ck_assert_str_eq(insync_set(&after, cap, s), was);
            ck_assert_uint_eq(unit(&after, cap, s)->shard_epoch,
                              unit(&before, cap, s)->shard_epoch);
            ck_assert_str_eq(
                after.nodes[unit(&after, cap, s)->replicas[0]],
                before.nodes[unit(&before, cap, s)->replicas[0]]);
            if (i == 1)
                ck_assert_str_eq(unit_str(&after, cap, s),
                                 unit_str(&before, cap, s));
        }
    }
    ck_assert_uint_gt(nfailed, 0);
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* A node back on another store does not take writes as the replica the
 * map may still count in sync, until the controller has recorded its new
 * store (and taken it out of every in-sync set). */
START_TEST(test_new_store_takes_no_writes_before_the_map)
{
    const char *fresh = "00000000000000000000000000000ccc";
    mkopt g = {3, "gpu", 0, 0, 0};
    keel_shard_map m;
    uint32_t s, backed = SHARDS;
    uint64_t e = 0;
    int gi;
    char rec[64];

    start_gpu(3);
    m = checked_map();
    gi = keel_map_cap_index(&m, "gpu");
    for (s = 0; s < SHARDS && backed == SHARDS; s++)
        if (strcmp(keel_map_primary(&m, (uint32_t)gi, s), "node-b") == 0) {
            backed = s;
            e = unit(&m, "gpu", s)->shard_epoch;
        }
    ck_assert_uint_lt(backed, SHARDS);
    ck_assert_int_eq(
        keel_cluster_may_replicate(C[2], "gpu", backed, e, "node-b"), 0);
    keel_map_free(&m);
    kill_node(2);
    settle();
    /* the controller hears nothing while node-c comes back on a new
     * store (its record says so: the store check lets it in) */
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    snprintf(rec, sizeof rec, "store %s\n", fresh);
    ck_assert_int_eq(keel_zk_fake_set(F, "/keel/test/nodes/node-c", rec,
                                      strlen(rec)),
                     0);
    snprintf(store_of_[2], sizeof store_of_[2], "%s", fresh);
    mk(2, &g);
    settle();
    ck_assert_int_eq(keel_cluster_phase(C[2]), KEEL_CLUSTER_RUNNING);
    ck_assert_int_eq(
        keel_cluster_may_replicate(C[2], "gpu", backed, e, "node-b"),
        KEEL_ENOTTARGET);
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    settle();
    m = checked_map();
    ck_assert_str_eq(unit_str(&m, "gpu", backed), "node-b*,node-c");
    ck_assert_int_eq(
        keel_cluster_may_replicate(C[2], "gpu", backed, e, "node-b"), 0);
    keel_map_free(&m);
}
END_TEST

/* Releases the hook saw and left open (stall_release). */
static struct {
    int node;
    char cap[KEEL_NAME_MAX + 1];
    uint32_t shard;
    uint64_t epoch;
    char to[KEEL_NAME_MAX + 1];
} stalled[SHARDS * 2];
static size_t nstalled;

static void on_release_stall(keel_cluster *c, const char *cap,
                             uint32_t shard, uint64_t epoch, const char *to,
                             void *data)
{
    (void)c;
    ck_assert_ptr_nonnull(to);
    ck_assert_uint_lt(nstalled, SHARDS * 2);
    stalled[nstalled].node = (int)(intptr_t)data;
    snprintf(stalled[nstalled].cap, sizeof stalled[0].cap, "%s", cap);
    stalled[nstalled].shard = shard;
    stalled[nstalled].epoch = epoch;
    snprintf(stalled[nstalled].to, sizeof stalled[0].to, "%s", to);
    nstalled++;
}

/* A primary handing a unit off may still wait on a backup: its drop
 * request is published (as PRIMARY, for the unit it is releasing) and
 * honoured; the move then keeps only the backups still in sync. */
START_TEST(test_drop_while_releasing)
{
    mkopt o = {3, NULL, 0, 0, 0};
    keel_cluster_options opt;
    keel_shard_map m;
    keel_node_state st;
    const keel_state_entry *en;
    size_t i, k = SHARDS * 2;
    char want[256], backup[KEEL_NAME_MAX + 1];
    keel_zk *zk;
    uint32_t s;

    /* node-a's releases stall: it is made by hand with that hook */
    keel_cluster_options_init(&opt);
    snprintf(name_of_[0], sizeof name_of_[0], "node-a");
    snprintf(store_of_[0], sizeof store_of_[0], "%032x", 0xa0);
    opt.cluster = "test";
    opt.node = name_of_[0];
    opt.address = "127.0.0.1:7000";
    opt.shard_count = SHARDS;
    opt.session_timeout_ms = TIMEOUT;
    opt.replicas = 3;
    opt.store_id = store_of_[0];
    opt.hooks.release = on_release_stall;
    opt.hooks.data = (void *)(intptr_t)0;
    ck_assert_int_eq(keel_zk_fake_client(F, &zk), 0);
    ck_assert_int_eq(keel_cluster_create(NULL, &opt, zk, &C[0]), 0);
    ck_assert_int_eq(keel_cluster_start(C[0]), 0);
    settle();
    mk(1, &o);
    mk(2, &o);
    settle();
    advance(FORMATION);
    m = checked_map();
    for (s = 0; s < SHARDS; s++)
        ck_assert_uint_eq(count_insync(unit(&m, "", s)), 3);
    keel_map_free(&m);
    nstalled = 0;
    ck_assert_int_eq(keel_cluster_drain(C[1], "node-a"), 0);
    settle();
    ck_assert_uint_gt(nstalled, 0);
    m = checked_map();
    /* the first stalled release: node-a asks to drop the backup that is
     * not the recipient */
    for (i = 0; i < nstalled && k == SHARDS * 2; i++)
        if (stalled[i].node == 0)
            k = i;
    s = stalled[k].shard;
    ck_assert_uint_eq(stalled[k].epoch, unit(&m, "", s)->shard_epoch);
    snprintf(backup, sizeof backup, "%s",
             strcmp(stalled[k].to, "node-b") == 0 ? "node-c" : "node-b");
    keel_map_free(&m);
    ck_assert_int_eq(keel_cluster_request_drop(C[0], "", s, stalled[k].epoch,
                                               backup),
                     0);
    settle();
    m = checked_map();
    snprintf(want, sizeof want, "node-a*,%s*,%s", stalled[k].to, backup);
    if (strcmp(m.nodes[unit(&m, "", s)->replicas[1]], backup) == 0)
        snprintf(want, sizeof want, "node-a*,%s,%s*", backup, stalled[k].to);
    ck_assert_str_eq(unit_str(&m, "", s), want);
    keel_map_free(&m);
    st = zk_state("node-a");
    en = keel_node_state_find(&st, "", s);
    /* settled: withdrawn (a unit being released is published only to
     * carry a request) */
    ck_assert(en == NULL || en->ndrop == 0);
    keel_node_state_free(&st);
    /* the stream is stored: the recipient is primary, the dropped
     * backup stays out of sync, node-a (leaving) is gone from the list */
    ck_assert_int_eq(keel_cluster_released(C[0], "", s, stalled[k].epoch,
                                           stalled[k].to),
                     0);
    settle();
    m = checked_map();
    snprintf(want, sizeof want, "%s*,%s", stalled[k].to, backup);
    ck_assert_str_eq(unit_str(&m, "", s), want);
    ck_assert_uint_eq(unit(&m, "", s)->shard_epoch, stalled[k].epoch + 1);
    keel_map_free(&m);
}
END_TEST

/* ----------------------------------------------------------- failover */

/* No two nodes are primary of a unit at the same shard_epoch: neither by
 * their published states, nor by what the live agents serve. Every
 * primary in the map is in sync there (check_map), and every live agent
 * serving a unit serves it at the map's epoch. */
static void check_primaries(void)
{
    keel_shard_map m = checked_map();
    keel_node_state st[MAXN];
    int have[MAXN], i, j;
    uint32_t c, s;

    for (i = 0; i < MAXN; i++) {
        have[i] = 0;
        if (name_of_[i][0] != '\0') {
            static uint8_t buf[1 << 16];
            char path[128];
            size_t len = sizeof buf;
            snprintf(path, sizeof path, "/keel/test/nodes/%s/state", nm(i));
            if (keel_zk_fake_get(F, path, buf, &len, NULL) == 0 &&
                keel_node_state_decode(buf, len, &st[i]) == 0)
                have[i] = 1;
        }
    }
    for (c = 0; c < m.ncaps; c++)
        for (s = 0; s < m.shard_count; s++) {
            int local = 0;
            for (i = 0; i < MAXN; i++) {
                const keel_state_entry *ei, *ej;
                keel_placement p;
                if (C[i] != NULL) {
                    keel_cluster_placement(C[i], m.caps[c], s, &p);
                    if (p.state == KEEL_PLACEMENT_LOCAL) {
                        local++;
                        ck_assert_uint_eq(
                            p.epoch,
                            keel_map_unit_at(&m, c, s)->shard_epoch);
                    }
                }
                if (!have[i] ||
                    (ei = keel_node_state_find(&st[i], m.caps[c], s)) ==
                        NULL ||
                    ei->role != KEEL_ROLE_PRIMARY)
                    continue;
                for (j = i + 1; j < MAXN; j++)
                    if (have[j] &&
                        (ej = keel_node_state_find(&st[j], m.caps[c], s)) !=
                            NULL &&
                        ej->role == KEEL_ROLE_PRIMARY)
                        ck_assert_msg(ei->shard_epoch != ej->shard_epoch,
                                      "%s/%u: %s and %s primary at %llu",
                                      m.caps[c], s, nm(i), nm(j),
                                      (unsigned long long)ei->shard_epoch);
            }
            ck_assert_int_le(local, 1);
        }
    for (i = 0; i < MAXN; i++)
        if (have[i])
            keel_node_state_free(&st[i]);
    keel_map_free(&m);
}

/* Checks that every unit `dead` was primary of in `before` failed over in
 * `after`: to a backup in sync in `before` (the first live one in list
 * order), at shard_epoch + 1, alone in sync, marked promoted, no target;
 * and that the others kept primary and epoch. Returns how many failed
 * over. */
static size_t check_failed_over2(const keel_shard_map *before,
                                 const keel_shard_map *after,
                                 const char *dead, const char *dead2)
{
    size_t n = 0;
    uint32_t c, s;

    for (c = 0; c < before->ncaps; c++)
        for (s = 0; s < before->shard_count; s++) {
            const char *cap = before->caps[c];
            const keel_map_unit *ub = keel_map_unit_at(before, c, s);
            const keel_map_unit *ua = unit(after, cap, s);
            const char *np = after->nodes[ua->replicas[0]];
            int r, first = -1;
            if (ub->nreplicas == 0)
                continue;
            if (strcmp(before->nodes[ub->replicas[0]], dead) != 0 &&
                (dead2 == NULL ||
                 strcmp(before->nodes[ub->replicas[0]], dead2) != 0)) {
                ck_assert_str_eq(np, before->nodes[ub->replicas[0]]);
                ck_assert_uint_eq(ua->shard_epoch, ub->shard_epoch);
                continue;
            }
            for (r = 1; r < ub->nreplicas && first < 0; r++)
                if (keel_map_insync(ub, r) &&
                    live_store(before->nodes[ub->replicas[r]]) != NULL)
                    first = r;
            ck_assert_int_ge(first, 1);
            ck_assert_str_eq(np, before->nodes[ub->replicas[first]]);
            ck_assert_uint_eq(ua->shard_epoch, ub->shard_epoch + 1);
            ck_assert_uint_eq(ua->promoted, 1);
            ck_assert_uint_eq(count_insync(ua), 1);
            ck_assert_uint_eq(ua->target, KEEL_MAP_NO_NODE);
            ck_assert_int_eq(
                keel_cluster_promoted(C[node_idx(np)], cap, s,
                                      ua->shard_epoch),
                1);
            n++;
        }
    return n;
}

static size_t check_failed_over(const keel_shard_map *before,
                                const keel_shard_map *after,
                                const char *dead)
{
    return check_failed_over2(before, after, dead, NULL);
}

/* A primary whose session expires (its process stopped, its connection
 * gone): its units fail over to their first live in-sync backup, which
 * serves them at shard_epoch + 1; the old primary serves nothing after
 * its lease lapsed, and when it comes back (a new session) it is an
 * out-of-sync backup of those units, or their primary again through a
 * handoff with the data where placement wants it. */
START_TEST(test_failover_on_session_expiry)
{
    keel_shard_map before, after, back;
    uint32_t s;
    int i;

    start3(3);
    advance(FORMATION);
    before = checked_map();
    check_primaries();
    keel_zk_fake_disconnect(keel_cluster_zk(C[1]));
    advance(TIMEOUT / 2);
    /* fenced before the servers can expire its session: nothing moved */
    for (s = 0; s < SHARDS; s++) {
        keel_placement p;
        keel_cluster_placement(C[1], "", s, &p);
        ck_assert_int_ne(p.state, KEEL_PLACEMENT_LOCAL);
    }
    after = checked_map();
    ck_assert(keel_map_same_placement(&before, &after));
    keel_map_free(&after);
    advance(TIMEOUT);
    after = zk_map();
    ck_assert_uint_gt(check_failed_over(&before, &after, "node-b"), 0);
    for (s = 0; s < SHARDS; s++) /* out of sync in the units it led, and
                                  * listed for its dead time */
        if (strcmp(keel_map_primary(&before, 0, s), "node-b") == 0) {
            const keel_map_unit *u = unit(&after, "", s);
            int pos = pos_of(&after, u, "node-b");
            ck_assert_int_ge(pos, 1);
            ck_assert(!keel_map_insync(u, pos));
        }
    keel_map_free(&after);
    keel_zk_fake_reconnect(keel_cluster_zk(C[1]));
    settle();
    advance(1000);
    back = checked_map();
    check_primaries();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "", s);
        const keel_map_unit *u = unit(&back, "", s);
        int pos = pos_of(&back, u, "node-b");
        if (strcmp(before.nodes[ub->replicas[0]], "node-b") != 0)
            continue;
        if (pos == 0) {
            /* placement wanted it back: handed back with the data */
            ck_assert_uint_eq(u->shard_epoch, ub->shard_epoch + 2);
            ck_assert_uint_eq(u->promoted, 0);
        } else {
            ck_assert_int_ge(pos, 1);
            ck_assert(!keel_map_insync(u, pos));
        }
    }
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(keel_cluster_phase(C[i]), KEEL_CLUSTER_RUNNING);
    keel_map_free(&before);
    keel_map_free(&back);
}
END_TEST

/* Member i's znode as it would be were it started again, on the same
 * store, without declaring "gpu". */
static void republish_capless(int i)
{
    char path[64], data[256];
    int n;

    snprintf(path, sizeof path, "/keel/test/members/%s", nm(i));
    n = snprintf(data, sizeof data, "addr 127.0.0.1:%d\ncaps \n"
                                    "session_timeout %d\nstore %s\n",
                 7000 + i, TIMEOUT, store_of_[i]);
    ck_assert_int_eq(keel_zk_fake_set(F, path, data, (size_t)n), 0);
}

/* Failover prefers an in-sync backup that declares the unit's capability
 * to one listed before it that no longer does (its node started again
 * without it, the map not changed yet): promoted there, the unit would be
 * held without being served until it had moved on by a stream. Node a
 * (default group, the controller), b, c, d and e declaring "gpu", R = 3;
 * then one of them no longer declares it and a unit's primary dies. */
START_TEST(test_failover_prefers_a_backup_declaring_the_capability)
{
    mkopt a = {3, NULL, 0, 0, 0}, g = {3, "gpu", 0, 0, 0};
    keel_shard_map before, after;
    uint32_t s, pick = SHARDS;
    uint64_t epoch;
    int ci, p = -1, x = -1, y = -1, i;

    mk(0, &a);
    settle();
    ck_assert(keel_cluster_is_controller(C[0]));
    for (i = 1; i < 5; i++)
        mk(i, &g);
    settle();
    advance(FORMATION);
    before = checked_map();
    ci = keel_map_cap_index(&before, "gpu");
    ck_assert_int_ge(ci, 0);
    for (s = 0; s < SHARDS && pick == SHARDS; s++) {
        const keel_map_unit *u = keel_map_unit_at(&before, (uint32_t)ci, s);
        if (u->nreplicas == 3 && count_insync(u) == 3)
            pick = s;
    }
    ck_assert_uint_lt(pick, SHARDS);
    {
        const keel_map_unit *u = keel_map_unit_at(&before, (uint32_t)ci, pick);
        p = node_idx(before.nodes[u->replicas[0]]);
        x = node_idx(before.nodes[u->replicas[1]]);
        y = node_idx(before.nodes[u->replicas[2]]);
    }
    ck_assert(p > 0 && x > 0 && y > 0);
    epoch = keel_map_unit_at(&before, (uint32_t)ci, pick)->shard_epoch;
    keel_map_free(&before);
    /* x no longer declares gpu; the controller hears of it only after the
     * primary is gone, so both changes meet in one decision */
    republish_capless(x);
    settle();
    after = zk_map();
    /* x stays listed in sync while its replacement catches up */
    ck_assert_int_eq(pos_of(&after, unit(&after, "gpu", pick), nm(x)), 1);
    ck_assert(keel_map_insync(unit(&after, "gpu", pick), 1));
    keel_map_free(&after);
    keel_zk_fake_disconnect(keel_cluster_zk(C[p]));
    advance(TIMEOUT + TIMEOUT / 2);
    advance(1000);
    after = zk_map();
    /* y took it in the failover itself, not by a move after x had it */
    ck_assert_msg(strcmp(keel_map_primary(&after, (uint32_t)ci, pick),
                         nm(y)) == 0 &&
                      unit(&after, "gpu", pick)->shard_epoch == epoch + 1,
                  "gpu/%u, at epoch %llu %s,%s,%s, is now %s at epoch %llu",
                  pick, (unsigned long long)epoch, nm(p), nm(x), nm(y),
                  unit_str(&after, "gpu", pick),
                  (unsigned long long)unit(&after, "gpu", pick)->shard_epoch);
    keel_map_free(&after);
}
END_TEST

/* The units a stood-in failover concerns: node-b primary, node-c its
 * first in-sync backup, node-a in sync too. */
static int b_then_c(const keel_shard_map *m, uint32_t s)
{
    const keel_map_unit *u = unit(m, "", s);

    return strcmp(keel_map_primary(m, 0, s), "node-b") == 0 &&
           pos_of(m, u, "node-c") == 1 && keel_map_insync(u, 1) &&
           keel_map_insync(u, pos_of(m, u, "node-a"));
}

/* Rule 6 when the promoted backup is dying too (its session not expired
 * when the primary's did): it is promoted, alone in sync, with the other
 * backup that was in sync as its fallback. It never writes its state
 * (it is cut off), so once its session expires the fallback takes the
 * unit at shard_epoch + 2. Had it written its state (it may have served
 * alone), the fallback is dropped and the unit waits for it. */
START_TEST(test_failover_stand_in_when_promoted_one_dies)
{
    keel_shard_map before, mid, after;
    uint32_t s;
    size_t both = 0;
    int pass;

    for (pass = 0; pass < 2; pass++) {
        int wrote = pass == 1;
        if (pass > 0) {
            teardown();
            setup();
        }
        both = 0;
        start3(3);
        advance(FORMATION);
        before = checked_map();
        for (s = 0; s < SHARDS; s++)
            both += (size_t)b_then_c(&before, s);
        ck_assert_uint_gt(both, 0);
        keel_zk_fake_disconnect(keel_cluster_zk(C[1]));
        if (!wrote)
            advance(TIMEOUT / 2);
        else
            advance(TIMEOUT + TIMEOUT / 2); /* b gone, c promoted, wrote */
        keel_zk_fake_disconnect(keel_cluster_zk(C[2]));
        if (!wrote)
            advance(TIMEOUT - TIMEOUT / 4); /* b gone, c not yet */
        mid = zk_map(); /* b and c cut off: not applied there */
        for (s = 0; s < SHARDS; s++) {
            const keel_map_unit *u = unit(&mid, "", s);
            if (!b_then_c(&before, s))
                continue;
            ck_assert_str_eq(keel_map_primary(&mid, 0, s), "node-c");
            ck_assert_uint_eq(u->shard_epoch,
                              unit(&before, "", s)->shard_epoch + 1);
            ck_assert(u->promoted);
            if (wrote) {
                /* it wrote its state since: the fallback is gone */
                ck_assert_uint_eq(u->fallback, 0);
            } else {
                ck_assert_int_ge(pos_of(&mid, u, "node-a"), 1);
                ck_assert_uint_eq(u->fallback,
                                  1u << pos_of(&mid, u, "node-a"));
                ck_assert_uint_gt(u->fallback_since, 0);
            }
        }
        advance(TIMEOUT * 2);
        after = zk_map();
        for (s = 0; s < SHARDS; s++) {
            const keel_map_unit *u = unit(&after, "", s);
            if (!b_then_c(&before, s))
                continue;
            if (wrote) {
                ck_assert_str_eq(keel_map_primary(&after, 0, s), "node-c");
                ck_assert_uint_eq(u->shard_epoch,
                                  unit(&before, "", s)->shard_epoch + 1);
            } else {
                ck_assert_str_eq(keel_map_primary(&after, 0, s), "node-a");
                ck_assert_uint_eq(u->shard_epoch,
                                  unit(&before, "", s)->shard_epoch + 2);
                ck_assert(u->promoted);
                ck_assert_uint_eq(u->fallback, 0); /* none left */
            }
        }
        keel_map_free(&before);
        keel_map_free(&mid);
        keel_map_free(&after);
    }
}
END_TEST

/* Whether node `name`'s state in ZooKeeper has it PRIMARY of (cap "",
 * shard) at epoch. */
static int state_shows_primary(const char *name, uint32_t shard,
                               uint64_t epoch)
{
    static uint8_t buf[1 << 16];
    char path[128];
    size_t len = sizeof buf;
    keel_node_state st;
    const keel_state_entry *e;
    int yes;

    snprintf(path, sizeof path, "/keel/test/nodes/%s/state", name);
    if (keel_zk_fake_get(F, path, buf, &len, NULL) != 0 || len == 0 ||
        keel_node_state_decode(buf, len, &st) != 0)
        return 0;
    e = keel_node_state_find(&st, "", shard);
    yes = e != NULL && e->role == KEEL_ROLE_PRIMARY && e->shard_epoch == epoch;
    keel_node_state_free(&st);
    return yes;
}

/* The other half of the stand-in rule: a primary promoted with
 * fallbacks serves (its placement says LOCAL) only once a state write of
 * its, issued after it applied that map, has landed; so the controller,
 * which promotes a fallback only while that state is unchanged, never
 * takes the unit from a primary that may have answered. node-c is cut
 * off from the ZooKeeper leader just as the map promoting it lands: it
 * reads and applies it, but its state write never lands, and it must not
 * serve (checked after every event the fake server delivers). Once its
 * session expires, node-a stands in. */
START_TEST(test_promoted_serves_once_its_state_landed)
{
    keel_shard_map before, after;
    uint32_t s;
    size_t steps, n = 0;
    int cut = 0;

    start3(3);
    advance(FORMATION);
    before = checked_map();
    keel_zk_fake_disconnect(keel_cluster_zk(C[1]));
    /* up to just before b's session expires, the others' heartbeats
     * answered; then past it, one event at a time */
    advance(TIMEOUT - 50);
    keel_zk_fake_advance(F, 100);
    for (steps = 0; steps < 200000; steps++) {
        int i;
        if (!cut) {
            keel_shard_map m = zk_map();
            for (s = 0; s < SHARDS && !cut; s++)
                if (b_then_c(&before, s) &&
                    strcmp(keel_map_primary(&m, 0, s), "node-c") == 0) {
                    keel_zk_fake_cut_off(keel_cluster_zk(C[2]));
                    cut = 1;
                }
            keel_map_free(&m);
        }
        if (!keel_zk_fake_step(F)) {
            for (i = 0; i < MAXN; i++)
                if (C[i] != NULL)
                    keel_cluster_tick(C[i], keel_zk_fake_now(F));
            if (!keel_zk_fake_step(F))
                break;
        }
        for (s = 0; s < SHARDS; s++) {
            keel_placement p;
            if (!b_then_c(&before, s))
                continue;
            keel_cluster_placement(C[2], "", s, &p);
            if (p.state == KEEL_PLACEMENT_LOCAL &&
                p.epoch > unit(&before, "", s)->shard_epoch)
                ck_assert_msg(state_shows_primary("node-c", s, p.epoch),
                              "node-c serves unit %u at epoch %llu before "
                              "its state shows it",
                              s, (unsigned long long)p.epoch);
        }
    }
    ck_assert_uint_lt(steps, 200000);
    ck_assert(cut);
    /* it applied the map that promotes it, and waits */
    for (s = 0; s < SHARDS; s++) {
        keel_placement p;
        if (!b_then_c(&before, s))
            continue;
        ck_assert_str_eq(keel_map_primary(keel_cluster_map(C[2]), 0, s),
                         "node-c");
        keel_cluster_placement(C[2], "", s, &p);
        ck_assert_int_ne(p.state, KEEL_PLACEMENT_LOCAL);
    }
    advance(TIMEOUT * 2);
    after = zk_map();
    for (s = 0; s < SHARDS; s++) {
        if (!b_then_c(&before, s))
            continue;
        ck_assert_str_eq(keel_map_primary(&after, 0, s), "node-a");
        ck_assert_uint_eq(unit(&after, "", s)->shard_epoch,
                          unit(&before, "", s)->shard_epoch + 2);
        n++;
    }
    ck_assert_uint_gt(n, 0);
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* What the wait of a primary promoted with fallbacks is for: a state
 * write that tells the controller it may have served. The one it issues
 * as it applies the map that promotes it does (the controller stands a
 * fallback in only while the state's mzxid is the one it read before the
 * promotion), and it lands while the acquire runs (the fence recorded in
 * the runtime): once the acquire is done the unit is served at once, with
 * no second state write to wait for, as in a failover without fallbacks.
 * node-c's acquires are held until its map write has landed, the
 * controller (node-a) hearing nothing meanwhile, so that the map node-c
 * holds still lists the fallbacks. */
START_TEST(test_promoted_serves_once_acquired_after_its_map_write)
{
    mkopt o = {3, NULL, 0, 0, 0};
    keel_shard_map before, m1, after;
    uint64_t m1_epoch = 0;
    uint32_t s;
    size_t steps, n = 0;

    acquire_hooked = 1;
    mk(0, &o);
    settle();
    mk(1, &o);
    mk(2, &o);
    settle();
    advance(FORMATION);
    ck_assert(keel_cluster_is_controller(C[0]));
    before = checked_map();
    defer_acquires[2] = 1;
    keel_zk_fake_disconnect(keel_cluster_zk(C[1]));
    advance(TIMEOUT - 50);
    keel_zk_fake_advance(F, 100);
    /* one event at a time until the map promoting node-c is written:
     * from then on the controller hears nothing */
    for (steps = 0; steps < 200000 && m1_epoch == 0; steps++) {
        keel_shard_map m = zk_map();
        int i;
        for (s = 0; s < SHARDS && m1_epoch == 0; s++)
            if (b_then_c(&before, s) &&
                strcmp(keel_map_primary(&m, 0, s), "node-c") == 0)
                m1_epoch = m.map_epoch;
        keel_map_free(&m);
        if (m1_epoch != 0)
            break;
        if (!keel_zk_fake_step(F)) {
            for (i = 0; i < MAXN; i++)
                if (C[i] != NULL)
                    keel_cluster_tick(C[i], keel_zk_fake_now(F));
            keel_zk_fake_step(F);
        }
    }
    ck_assert_uint_gt(m1_epoch, 0);
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    settle();
    /* node-c applied it (fallbacks listed), wrote its state since */
    m1 = zk_map();
    ck_assert_uint_eq(m1.map_epoch, m1_epoch);
    ck_assert_uint_eq(keel_cluster_map(C[2])->map_epoch, m1_epoch);
    for (s = 0; s < SHARDS; s++) {
        keel_placement p;
        if (!b_then_c(&before, s))
            continue;
        ck_assert_uint_ne(unit(&m1, "", s)->fallback, 0);
        keel_cluster_placement(C[2], "", s, &p);
        ck_assert_int_ne(p.state, KEEL_PLACEMENT_LOCAL);
    }
    {
        static uint8_t buf[1 << 16];
        size_t len = sizeof buf;
        keel_node_state st;
        ck_assert_int_eq(keel_zk_fake_get(F, "/keel/test/nodes/node-c/state",
                                          buf, &len, NULL),
                         0);
        ck_assert_int_eq(keel_node_state_decode(buf, len, &st), 0);
        ck_assert_uint_eq(st.map_epoch, m1_epoch);
        keel_node_state_free(&st);
    }
    ck_assert_uint_gt(acquire_deferred(2), 0);
    /* served at once: no event delivered since the acquire */
    for (s = 0; s < SHARDS; s++) {
        keel_placement p;
        if (!b_then_c(&before, s))
            continue;
        keel_cluster_placement(C[2], "", s, &p);
        ck_assert_msg(p.state == KEEL_PLACEMENT_LOCAL,
                      "node-c does not serve unit %u, acquired after its "
                      "state write of the map promoting it landed",
                      s);
        ck_assert_uint_eq(p.epoch, unit(&before, "", s)->shard_epoch + 1);
        n++;
    }
    ck_assert_uint_gt(n, 0);
    /* and the controller, hearing again, drops the fallbacks */
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    settle();
    after = zk_map();
    for (s = 0; s < SHARDS; s++) {
        if (!b_then_c(&before, s))
            continue;
        ck_assert_str_eq(keel_map_primary(&after, 0, s), "node-c");
        ck_assert_uint_eq(unit(&after, "", s)->fallback, 0);
    }
    keel_map_free(&before);
    keel_map_free(&m1);
    keel_map_free(&after);
}
END_TEST

/* Never from outside the in-sync set: a unit whose primary asked to drop
 * every backup waits for it when it dies; one with an in-sync backup
 * left fails over to that one, not to the first listed; one whose only
 * in-sync backup died first waits too. */
START_TEST(test_failover_only_from_insync)
{
    keel_shard_map before, after;
    uint32_t s, alone = SHARDS, one = SHARDS, gone = SHARDS;
    int pi;

    start3(3);
    advance(FORMATION);
    before = checked_map();
    pi = keel_map_node_index(&before, "node-b");
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = unit(&before, "", s);
        if (u->replicas[0] != pi)
            continue;
        if (alone == SHARDS)
            alone = s;
        else if (one == SHARDS)
            one = s;
        else if (gone == SHARDS)
            gone = s;
    }
    ck_assert_uint_lt(gone, SHARDS);
    /* alone: both backups dropped; one: the first listed dropped; gone:
     * node-a dropped, node-c (in sync) killed below */
    ck_assert_int_eq(keel_cluster_request_drop(
                         C[1], "", alone, unit(&before, "", alone)->shard_epoch,
                         "node-a"),
                     0);
    ck_assert_int_eq(keel_cluster_request_drop(
                         C[1], "", alone, unit(&before, "", alone)->shard_epoch,
                         "node-c"),
                     0);
    ck_assert_int_eq(
        keel_cluster_request_drop(
            C[1], "", one, unit(&before, "", one)->shard_epoch,
            before.nodes[unit(&before, "", one)->replicas[1]]),
        0);
    ck_assert_int_eq(keel_cluster_request_drop(
                         C[1], "", gone, unit(&before, "", gone)->shard_epoch,
                         "node-a"),
                     0);
    settle();
    keel_map_free(&before);
    before = checked_map();
    ck_assert_uint_eq(count_insync(unit(&before, "", alone)), 1);
    ck_assert_uint_eq(count_insync(unit(&before, "", one)), 2);
    ck_assert(!keel_map_insync(unit(&before, "", one), 1));
    kill_node(2);
    settle();
    kill_node(1);
    settle();
    advance(TIMEOUT * 3);
    after = checked_map();
    check_primaries();
    /* alone and gone wait for node-b */
    ck_assert_str_eq(keel_map_primary(&after, 0, alone), "node-b");
    ck_assert_uint_eq(unit(&after, "", alone)->shard_epoch,
                      unit(&before, "", alone)->shard_epoch);
    ck_assert_str_eq(keel_map_primary(&after, 0, gone), "node-b");
    ck_assert_uint_eq(unit(&after, "", gone)->shard_epoch,
                      unit(&before, "", gone)->shard_epoch);
    /* one: to its in-sync backup (the second listed), if it is live */
    {
        const keel_map_unit *ub = unit(&before, "", one);
        const char *second = before.nodes[ub->replicas[2]];
        if (strcmp(second, "node-a") == 0) {
            ck_assert_str_eq(keel_map_primary(&after, 0, one), "node-a");
            ck_assert_uint_eq(unit(&after, "", one)->shard_epoch,
                              ub->shard_epoch + 1);
        } else { /* node-c, killed: waits */
            ck_assert_str_eq(keel_map_primary(&after, 0, one), "node-b");
        }
    }
    /* no unit has a primary outside the in-sync set it had */
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "", s);
        const keel_map_unit *ua = unit(&after, "", s);
        const char *np = after.nodes[ua->replicas[0]];
        int was = pos_of(&before, ub, np);
        ck_assert_int_ge(was, 0);
        ck_assert(keel_map_insync(ub, was));
    }
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* The controller is held (it hears nothing) while a primary dies, then
 * dies itself: its successor reads a map whose primaries are gone and
 * promotes the same way, for both dead nodes' units. */
START_TEST(test_failover_by_new_controller)
{
    keel_shard_map before, after;
    size_t n;

    start3(3);
    advance(FORMATION);
    before = checked_map();
    ck_assert(keel_cluster_is_controller(C[0]));
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    kill_node(1);
    settle();
    advance(TIMEOUT);
    kill_node(0);
    settle();
    advance(TIMEOUT);
    ck_assert(keel_cluster_is_controller(C[2]));
    after = zk_map();
    /* every unit is node-c's now, from the in-sync set */
    n = check_failed_over2(&before, &after, "node-a", "node-b");
    ck_assert_uint_gt(n, 0);
    check_primaries();
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* A controller whose member view missed a node's return (the watch that
 * would have told it was lost with a connection): node-b dies and comes
 * back while node-a, the controller, hears nothing; node-c saw node-b go
 * but not come back, and takes over. Its promotion of node-b's units
 * finds node-b's member znode and fails; deciding again from the same
 * view would write the same promotion forever. It must take node-b for
 * live, list the members again, and settle with node-b serving. */
START_TEST(test_failover_view_behind)
{
    keel_shard_map before, after;
    uint64_t req0;
    uint32_t s;
    int bi;

    start3(3);
    advance(FORMATION);
    before = checked_map();
    ck_assert(keel_cluster_is_controller(C[0]));
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    keel_zk_fake_disconnect(keel_cluster_zk(C[1]));
    advance(TIMEOUT + 500); /* node-b's session expires; node-c sees it */
    ck_assert_uint_eq(keel_cluster_members(C[2]), 2);
    keel_zk_fake_lose_watches(keel_cluster_zk(C[2]), "/keel/test/members");
    keel_zk_fake_reconnect(keel_cluster_zk(C[1]));
    settle(); /* node-b rejoins: node-c is not told */
    ck_assert_int_eq(keel_cluster_phase(C[1]), KEEL_CLUSTER_RUNNING);
    ck_assert_uint_eq(keel_cluster_members(C[2]), 2);
    req0 = keel_zk_fake_requests(keel_cluster_zk(C[2]));
    kill_node(0);
    advance(TIMEOUT + 500); /* node-c takes over: settles, or aborts */
    ck_assert(keel_cluster_is_controller(C[2]));
    ck_assert_uint_eq(keel_cluster_members(C[2]), 2); /* node-b, node-c */
    ck_assert_uint_lt(keel_zk_fake_requests(keel_cluster_zk(C[2])) - req0,
                      1000);
    advance(1000);
    after = checked_map();
    check_primaries();
    bi = keel_map_node_index(&after, "node-b");
    ck_assert_int_ge(bi, 0);
    for (s = 0; s < SHARDS; s++)
        /* node-b's units were never taken from it */
        if (strcmp(keel_map_primary(&before, 0, s), "node-b") == 0)
            ck_assert_str_eq(keel_map_primary(&after, 0, s), "node-b");
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST

/* Events delivered in random order (several seeds): a primary killed, the
 * controller's answers and watches interleaved at random with the
 * agents'. Whatever the order, the units fail over as the rules say and
 * no two nodes serve a unit at one epoch. */
START_TEST(test_failover_reordered)
{
    static const uint64_t seeds[] = {1, 7, 42, 1234, 99991};
    size_t k;

    for (k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
        keel_shard_map before, after;
        int i;
        if (k > 0) {
            teardown();
            setup();
        }
        start3(3);
        advance(FORMATION);
        keel_zk_fake_shuffle(F, seeds[k]);
        before = checked_map();
        kill_node(2);
        for (i = 0; i < 20; i++) {
            advance(100);
            check_primaries();
        }
        advance(TIMEOUT);
        after = checked_map();
        ck_assert_uint_gt(check_failed_over(&before, &after, "node-c"), 0);
        check_primaries();
        keel_zk_fake_shuffle(F, 0);
        keel_map_free(&before);
        keel_map_free(&after);
    }
}
END_TEST

/* Moves under way when their primary dies (node-a drained; its releases
 * stall): a unit whose stream was stored (node-a published the release
 * before dying) goes to the recipient at shard_epoch + 1, which has the
 * data; the others are not waited for: they fail over to an in-sync
 * backup, their targets cleared. node-b is the controller, held while
 * node-a releases and dies. */
START_TEST(test_failover_during_move)
{
    mkopt o = {3, NULL, 0, 0, 0};
    keel_cluster_options opt;
    keel_shard_map before, after;
    size_t i, k = SHARDS * 2, promoted = 0;
    keel_zk *zk;
    uint32_t s;

    mk(1, &o);
    settle();
    ck_assert(keel_cluster_is_controller(C[1]));
    keel_cluster_options_init(&opt);
    snprintf(name_of_[0], sizeof name_of_[0], "node-a");
    snprintf(store_of_[0], sizeof store_of_[0], "%032x", 0xa0);
    opt.cluster = "test";
    opt.node = name_of_[0];
    opt.address = "127.0.0.1:7000";
    opt.shard_count = SHARDS;
    opt.session_timeout_ms = TIMEOUT;
    opt.replicas = 3;
    opt.store_id = store_of_[0];
    opt.hooks.release = on_release_stall;
    opt.hooks.data = (void *)(intptr_t)0;
    ck_assert_int_eq(keel_zk_fake_client(F, &zk), 0);
    ck_assert_int_eq(keel_cluster_create(NULL, &opt, zk, &C[0]), 0);
    ck_assert_int_eq(keel_cluster_start(C[0]), 0);
    mk(2, &o);
    settle();
    advance(FORMATION);
    nstalled = 0;
    ck_assert_int_eq(keel_cluster_drain(C[1], "node-a"), 0);
    settle();
    ck_assert_uint_gt(nstalled, 1);
    before = checked_map();
    for (i = 0; i < nstalled && k == SHARDS * 2; i++)
        if (stalled[i].node == 0)
            k = i;
    ck_assert_uint_lt(k, SHARDS * 2);
    keel_zk_fake_hold(keel_cluster_zk(C[1]), 1);
    ck_assert_int_eq(keel_cluster_released(C[0], stalled[k].cap,
                                           stalled[k].shard, stalled[k].epoch,
                                           stalled[k].to),
                     0);
    settle();
    kill_node(0);
    settle();
    keel_zk_fake_hold(keel_cluster_zk(C[1]), 0);
    settle();
    advance(TIMEOUT);
    after = checked_map();
    check_primaries();
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *ub = unit(&before, "", s);
        const keel_map_unit *ua = unit(&after, "", s);
        const char *np = after.nodes[ua->replicas[0]];
        if (strcmp(before.nodes[ub->replicas[0]], "node-a") != 0)
            continue;
        ck_assert_uint_eq(ua->target, KEEL_MAP_NO_NODE);
        ck_assert_uint_eq(ua->shard_epoch, ub->shard_epoch + 1);
        if (s == stalled[k].shard) {
            ck_assert_str_eq(np, stalled[k].to);
            ck_assert_uint_eq(ua->promoted, 0);
        } else {
            int was = pos_of(&before, ub, np);
            ck_assert_int_ge(was, 1);
            ck_assert(keel_map_insync(ub, was));
            ck_assert_uint_eq(ua->promoted, 1);
            promoted++;
        }
    }
    ck_assert_uint_gt(promoted, 0);
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST


/* --------------------------------------------------- catch-up: rule 7 */

/* A gpu unit whose primary dropped its backup (start_gpu(3): every gpu
 * unit on node-b and node-c, both in sync): the backup stays listed, out
 * of sync. *p and *b get the primary's and the backup's indexes; returns
 * the unit's shard_epoch. */
static uint64_t out_of_sync(uint32_t s, int *p, int *b)
{
    keel_shard_map m;
    uint64_t e;
    int gi;

    start_gpu(3);
    m = checked_map();
    gi = keel_map_cap_index(&m, "gpu");
    e = unit(&m, "gpu", s)->shard_epoch;
    *p = node_idx(keel_map_primary(&m, (uint32_t)gi, s));
    *b = *p == 1 ? 2 : 1;
    keel_map_free(&m);
    ck_assert_int_eq(keel_cluster_request_drop(C[*p], "gpu", s, e, nm(*b)),
                     0);
    settle();
    m = checked_map();
    ck_assert_uint_eq(count_insync(unit(&m, "gpu", s)), 1);
    ck_assert_int_eq(pos_of(&m, unit(&m, "gpu", s), nm(*b)), 1);
    keel_map_free(&m);
    return e;
}

/* The add list of node `name`'s entry for gpu/s as ZooKeeper has it:
 * "b@store,c@store", "" when none. */
static const char *zk_adds(const char *name, uint32_t s)
{
    static char out[256];
    keel_node_state st = zk_state(name);
    const keel_state_entry *en = keel_node_state_find(&st, "gpu", s);
    size_t off = 0;
    int a;

    out[0] = '\0';
    for (a = 0; en != NULL && a < en->nadd; a++)
        off += (size_t)snprintf(out + off, sizeof out - off, "%s%s@%s",
                                a ? "," : "", st.names[en->add[a]],
                                en->add_store[a]);
    keel_node_state_free(&st);
    return out;
}

/* Rule 7 and the runtime's side: a backup out of sync is offered for
 * catch-up; the primary's add request is published in its state and
 * honoured; the backup is then in sync, the request leaves the state, and
 * add_pending() turns 0 with insync_backups() listing it. */
START_TEST(test_add_request)
{
    keel_replica_ref refs[4];
    char stores[4][KEEL_MAP_STORE_HEX + 1], want[256];
    keel_shard_map m;
    uint64_t e, x, sh, f;
    int p, b;

    e = out_of_sync(3, &p, &b);
    keel_cluster_repl_counts(C[0], &x, &sh, &f);
    ck_assert_uint_eq(x, 0);
    ck_assert_uint_eq(sh, 1);
    ck_assert_uint_eq(f, 0);
    ck_assert_uint_eq(keel_cluster_catchup_backups(C[p], "gpu", 3, e, refs,
                                                   stores, 4),
                      1);
    ck_assert_str_eq(refs[0].name, nm(b));
    ck_assert_str_eq(refs[0].addr, b == 1 ? "127.0.0.1:7001"
                                          : "127.0.0.1:7002");
    ck_assert_str_eq(stores[0], store_of_[b]);
    ck_assert_uint_eq(keel_cluster_catchup_backups(C[p], "gpu", 3, e, refs,
                                                   NULL, 4),
                      1);
    ck_assert_uint_eq(keel_cluster_catchup_backups(C[p], "gpu", 3, e, refs,
                                                   stores, 0),
                      0);
    ck_assert_uint_eq(keel_cluster_catchup_backups(C[p], "gpu", 3, e + 1,
                                                   refs, stores, 4),
                      0);
    ck_assert_uint_eq(keel_cluster_catchup_backups(C[b], "gpu", 3, e, refs,
                                                   stores, 4),
                      0);
    /* the controller is held: the request shows in the state first */
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_int_eq(
        keel_cluster_request_add(C[p], "gpu", 3, e, nm(b), store_of_[b]), 0);
    ck_assert_int_eq(
        keel_cluster_request_add(C[p], "gpu", 3, e, nm(b), store_of_[b]), 0);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 1);
    settle();
    snprintf(want, sizeof want, "%s@%s", nm(b), store_of_[b]);
    ck_assert_str_eq(zk_adds(nm(p), 3), want);
    ck_assert_int_eq(
        keel_cluster_insync_backups(C[p], "gpu", 3, e, refs, 4), 0);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 1);
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    settle();
    m = checked_map();
    snprintf(want, sizeof want, "%s*,%s*", nm(p), nm(b));
    ck_assert_str_eq(unit_str(&m, "gpu", 3), want);
    ck_assert_uint_eq(unit(&m, "gpu", 3)->shard_epoch, e);
    keel_map_free(&m);
    ck_assert_int_eq(
        keel_cluster_insync_backups(C[p], "gpu", 3, e, refs, 4), 1);
    ck_assert_str_eq(refs[0].name, nm(b));
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_str_eq(zk_adds(nm(p), 3), "");
    ck_assert_uint_eq(keel_cluster_catchup_backups(C[p], "gpu", 3, e, refs,
                                                   stores, 4),
                      0);
    /* in sync: asking again is pointless, withdrawing finds nothing */
    ck_assert_int_eq(
        keel_cluster_request_add(C[p], "gpu", 3, e, nm(b), store_of_[b]),
        KEEL_ENOTFOUND);
    ck_assert_int_eq(keel_cluster_withdraw_add(C[p], "gpu", 3, e, nm(b)),
                     KEEL_ENOTFOUND);
    keel_cluster_repl_counts(C[0], &x, &sh, &f);
    ck_assert_uint_eq(x, 1);
    ck_assert_uint_eq(sh, 1);
    ck_assert_uint_eq(f, 0);
    /* only the node whose controller wrote the maps counts */
    keel_cluster_repl_counts(C[p], &x, &sh, &f);
    ck_assert_uint_eq(x + sh + f, 0);
    keel_cluster_repl_counts(C[b], &x, NULL, NULL);
    ck_assert_uint_eq(x, 0);
    check_primaries();
}
END_TEST


/* The runtime's calls that make no sense are refused on the spot; a
 * request can be asked again, under another store, withdrawn, asked
 * again after its withdrawal; the session takes every request with it. */
START_TEST(test_add_request_api)
{
    keel_replica_ref refs[4];
    char want[256];
    uint64_t e;
    int p, b;

    e = out_of_sync(3, &p, &b);
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1); /* nothing is honoured */
    /* bad store ids */
    ck_assert_int_eq(keel_cluster_request_add(C[p], "gpu", 3, e, nm(b), NULL),
                     KEEL_EINVAL);
    ck_assert_int_eq(keel_cluster_request_add(C[p], "gpu", 3, e, nm(b), "ab"),
                     KEEL_EINVAL);
    ck_assert_int_eq(keel_cluster_request_add(
                         C[p], "gpu", 3, e, nm(b),
                         "0000000000000000000000000000000A"),
                     KEEL_EINVAL);
    ck_assert_int_eq(keel_cluster_request_add(
                         C[p], "gpu", 3, e, nm(b),
                         "00000000000000000000000000000000"),
                     KEEL_EINVAL);
    /* not this node's unit at that epoch, not listed, in sync, itself */
    ck_assert_int_eq(keel_cluster_request_add(C[p], "gpu", 3, e + 1, nm(b),
                                              store_of_[b]),
                     KEEL_ENOTFOUND);
    ck_assert_int_eq(keel_cluster_request_add(C[b], "gpu", 3, e, nm(p),
                                              store_of_[p]),
                     KEEL_ENOTFOUND);
    ck_assert_int_eq(keel_cluster_request_add(C[p], "gpu", 3, e, "node-a",
                                              store_of_[0]),
                     KEEL_ENOTFOUND);
    ck_assert_int_eq(keel_cluster_request_add(C[p], "gpu", 3, e, nm(p),
                                              store_of_[p]),
                     KEEL_ENOTFOUND);
    ck_assert_int_eq(keel_cluster_request_add(C[p], "nope", 3, e, nm(b),
                                              store_of_[b]),
                     KEEL_ENOTFOUND);
    ck_assert_int_eq(keel_cluster_request_add(C[p], "gpu", SHARDS, e, nm(b),
                                              store_of_[b]),
                     KEEL_ENOTFOUND);
    {
        /* a unit where b is still in sync */
        const keel_shard_map *m = keel_cluster_map(C[p]);
        uint32_t s, other = SHARDS;
        int gi = keel_map_cap_index(m, "gpu");
        for (s = 0; s < SHARDS && other == SHARDS; s++)
            if (s != 3 && strcmp(keel_map_primary(m, (uint32_t)gi, s),
                                 nm(p)) == 0)
                other = s;
        ck_assert_uint_lt(other, SHARDS);
        ck_assert_int_eq(keel_cluster_request_add(
                             C[p], "gpu", other,
                             keel_map_unit_at(m, (uint32_t)gi, other)
                                 ->shard_epoch,
                             nm(b), store_of_[b]),
                         KEEL_ENOTFOUND);
    }
    ck_assert_int_eq(keel_cluster_withdraw_add(C[p], "gpu", 3, e, nm(b)),
                     KEEL_ENOTFOUND);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 0);
    /* asked, then under another store: the state carries the last */
    ck_assert_int_eq(keel_cluster_request_add(
                         C[p], "gpu", 3, e, nm(b),
                         "0000000000000000000000000000abcd"),
                     0);
    settle();
    snprintf(want, sizeof want, "%s@0000000000000000000000000000abcd",
             nm(b));
    ck_assert_str_eq(zk_adds(nm(p), 3), want);
    ck_assert_int_eq(
        keel_cluster_request_add(C[p], "gpu", 3, e, nm(b), store_of_[b]), 0);
    settle();
    snprintf(want, sizeof want, "%s@%s", nm(b), store_of_[b]);
    ck_assert_str_eq(zk_adds(nm(p), 3), want);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 1);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e + 1, nm(b)),
                     0);
    ck_assert_int_eq(keel_cluster_add_pending(C[b], "gpu", 3, e, nm(b)), 0);
    /* withdrawn: out of the state at once, still counted until settled */
    ck_assert_int_eq(keel_cluster_withdraw_add(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_int_eq(keel_cluster_withdraw_add(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 1);
    settle();
    ck_assert_str_eq(zk_adds(nm(p), 3), "");
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_int_eq(keel_cluster_withdraw_add(C[p], "gpu", 3, e, nm(b)),
                     KEEL_ENOTFOUND);
    /* asked again; withdrawn, and asked again before it settled: active
     * again, published again */
    ck_assert_int_eq(
        keel_cluster_request_add(C[p], "gpu", 3, e, nm(b), store_of_[b]), 0);
    ck_assert_int_eq(keel_cluster_withdraw_add(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_int_eq(
        keel_cluster_request_add(C[p], "gpu", 3, e, nm(b), store_of_[b]), 0);
    settle();
    ck_assert_str_eq(zk_adds(nm(p), 3), want);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 1);
    /* the session ends: everything is dropped */
    keel_zk_fake_expire(keel_cluster_zk(C[p]));
    settle();
    ck_assert_uint_eq(keel_cluster_catchup_backups(C[p], "gpu", 3, e, refs,
                                                   NULL, 4),
                      1); /* the map: still its unit (the controller is
                           * held) */
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_str_eq(zk_adds(nm(p), 3), "");
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    settle();
    {
        keel_shard_map m = checked_map();
        const keel_map_unit *u = unit(&m, "gpu", 3);
        int pos = pos_of(&m, u, nm(b));
        ck_assert(pos < 0 || !keel_map_insync(u, pos) ||
                  u->shard_epoch != e);
        keel_map_free(&m);
    }
}
END_TEST


/* The state version of node `name` as ZooKeeper has it. */
static int32_t zk_state_version(const char *name)
{
    static uint8_t buf[1 << 16];
    char path[128];
    size_t len = sizeof buf;
    keel_zk_stat st;

    snprintf(path, sizeof path, "/keel/test/nodes/%s/state", name);
    ck_assert_int_eq(keel_zk_fake_get(F, path, buf, &len, &st), 0);
    return st.version;
}

/* Three gpu units of one primary (start_gpu(3)) whose backup it
 * dropped: *p and *b get the primary's and the backup's indexes, us the
 * shards and es their shard_epochs. */
static void three_out_of_sync(int *p, int *b, uint32_t us[3], uint64_t es[3])
{
    keel_shard_map m;
    uint32_t s;
    int gi, n = 0, i;

    start_gpu(3);
    m = checked_map();
    gi = keel_map_cap_index(&m, "gpu");
    *p = node_idx(keel_map_primary(&m, (uint32_t)gi, 0));
    *b = *p == 1 ? 2 : 1;
    for (s = 0; s < SHARDS && n < 3; s++)
        if (strcmp(keel_map_primary(&m, (uint32_t)gi, s), nm(*p)) == 0) {
            us[n] = s;
            es[n++] = unit(&m, "gpu", s)->shard_epoch;
        }
    keel_map_free(&m);
    ck_assert_int_eq(n, 3);
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(
            keel_cluster_request_drop(C[*p], "gpu", us[i], es[i], nm(*b)), 0);
    settle();
    m = checked_map();
    for (i = 0; i < 3; i++)
        ck_assert_uint_eq(count_insync(unit(&m, "gpu", us[i])), 1);
    keel_map_free(&m);
}

/* p asks the controller to add b to unit (gpu, u) at epoch e. */
static void ask_add(int p, int b, uint32_t u, uint64_t e)
{
    ck_assert_int_eq(
        keel_cluster_request_add(C[p], "gpu", u, e, nm(b), store_of_[b]), 0);
}

/* With the controller held (no map comes), p asks the first add of
 * three_out_of_sync's units, which goes out at once in one state write.
 * Returns p's state version before it. */
static int32_t first_add_out(int p, int b, const uint32_t us[3],
                             const uint64_t es[3])
{
    int32_t v0;

    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    v0 = zk_state_version(nm(p));
    ask_add(p, b, us[0], es[0]);
    settle();
    ck_assert_int_eq(zk_state_version(nm(p)), v0 + 1);
    return v0;
}

/* A primary catching up many units asks many adds. Each as a state write
 * of its own, the controller's map writes that honour them (each with a
 * check of the state it read) would fail as long as the asks keep coming
 * faster than it decides: with a large map, never a map written. Once a
 * write carrying adds went out, the next ones wait for the next map
 * applied (one batch per map), or, with no map, for a bounded wait. */
START_TEST(test_adds_wait_for_the_next_map)
{
    keel_shard_map m;
    uint32_t us[3];
    uint64_t es[3];
    int32_t v0;
    int p, b, i;
    char want[256];

    three_out_of_sync(&p, &b, us, es);
    v0 = first_add_out(p, b, us, es);
    ask_add(p, b, us[1], es[1]);
    settle();
    ask_add(p, b, us[2], es[2]);
    settle();
    /* held for the next map: one write so far */
    ck_assert_int_eq(zk_state_version(nm(p)), v0 + 1);
    snprintf(want, sizeof want, "%s@%s", nm(b), store_of_[b]);
    ck_assert_str_eq(zk_adds(nm(p), us[0]), want);
    ck_assert_str_eq(zk_adds(nm(p), us[1]), "");
    ck_assert_str_eq(zk_adds(nm(p), us[2]), "");
    /* no map within the wait: they go anyway, in one write */
    advance(600);
    ck_assert_int_eq(zk_state_version(nm(p)), v0 + 2);
    ck_assert_str_eq(zk_adds(nm(p), us[1]), want);
    ck_assert_str_eq(zk_adds(nm(p), us[2]), want);

    /* the controller honours them all */
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    settle();
    m = checked_map();
    for (i = 0; i < 3; i++) {
        ck_assert_uint_eq(count_insync(unit(&m, "gpu", us[i])), 2);
        ck_assert_int_eq(
            keel_cluster_add_pending(C[p], "gpu", us[i], es[i], nm(b)), 0);
    }
    keel_map_free(&m);
    check_primaries();
}
END_TEST

/* Adds held for the next map go out with the write the map's apply
 * makes, and the controller honours them in the map after. */
START_TEST(test_held_adds_go_with_the_next_map)
{
    keel_shard_map m;
    uint32_t us[3];
    uint64_t es[3];
    int32_t v0;
    int p, b, i;

    three_out_of_sync(&p, &b, us, es);
    v0 = first_add_out(p, b, us, es);
    ask_add(p, b, us[1], es[1]);
    ask_add(p, b, us[2], es[2]);
    settle();
    ck_assert_int_eq(zk_state_version(nm(p)), v0 + 1);
    /* the controller writes the map adding the first; its apply carries
     * the other two, which the next map adds */
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    settle();
    m = checked_map();
    for (i = 0; i < 3; i++)
        ck_assert_uint_eq(count_insync(unit(&m, "gpu", us[i])), 2);
    keel_map_free(&m);
    check_primaries();
}
END_TEST


/* A held add withdrawn before any write carried it settles at once: no
 * map could have read it. */
START_TEST(test_held_add_withdrawn_settles)
{
    uint32_t us[3];
    uint64_t es[3];
    int32_t v0;
    int p, b;

    three_out_of_sync(&p, &b, us, es);
    v0 = first_add_out(p, b, us, es);
    ask_add(p, b, us[1], es[1]);
    settle();
    ck_assert_int_eq(zk_state_version(nm(p)), v0 + 1); /* held */
    ck_assert_int_eq(
        keel_cluster_withdraw_add(C[p], "gpu", us[1], es[1], nm(b)), 0);
    settle();
    ck_assert_int_eq(
        keel_cluster_add_pending(C[p], "gpu", us[1], es[1], nm(b)), 0);
    ck_assert_str_eq(zk_adds(nm(p), us[1]), "");
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    settle();
    check_primaries();
}
END_TEST

/* Writes node `name`'s state with (cap "gpu", shard s) changed by hand:
 * its PRIMARY entry at `epoch` (made anew), with an add of
 * `add` under `store` and a drop of `drop` (each NULL: none). */
static void craft_state(const char *name, uint32_t s, uint64_t epoch,
                        const char *add, const char *store, const char *drop)
{
    keel_node_state st = zk_state(name);
    char path[128];
    uint8_t *buf;
    size_t len;

    /* a new entry: no lists left from earlier crafts */
    ck_assert_int_eq(keel_node_state_put(&st, "gpu", s, KEEL_ROLE_PRIMARY,
                                         epoch, NULL),
                     0);
    if (add != NULL)
        ck_assert_int_eq(keel_node_state_put_add(&st, "gpu", s, add, store),
                         0);
    if (drop != NULL)
        ck_assert_int_eq(keel_node_state_put_drop(&st, "gpu", s, drop), 0);
    ck_assert_int_eq(keel_node_state_encode(&st, &buf, &len), 0);
    snprintf(path, sizeof path, "/keel/test/nodes/%s/state", name);
    ck_assert_int_eq(keel_zk_fake_set(F, path, buf, len), 0);
    free(buf);
    keel_node_state_free(&st);
}

/* Rule 7's refusals, end to end: requests written into the primary's
 * state by hand (the API refuses them up front) under another store, at
 * another epoch, for a node not listed, from a node that is not the
 * unit's primary, together with a drop of the same backup; none changes
 * the map. Then a backup that died after the request was published: not
 * added (a gone backup in sync would stay listed). */
START_TEST(test_add_refused)
{
    const char *other = "0000000000000000000000000000ffff";
    keel_shard_map before, after;
    uint64_t e, x;
    int p, b;
    char want[128];

    e = out_of_sync(3, &p, &b);
    before = checked_map();
    craft_state(nm(p), 3, e, nm(b), other, NULL); /* another store */
    settle();
    craft_state(nm(p), 3, e + 7, nm(b), store_of_[b], NULL); /* epoch */
    settle();
    craft_state(nm(p), 3, e, "node-a", store_of_[0], NULL); /* not listed */
    settle();
    craft_state(nm(b), 3, e, nm(b), store_of_[b], NULL); /* not primary */
    settle();
    craft_state(nm(p), 3, e, nm(b), store_of_[b], nm(b)); /* drop wins */
    settle();
    after = checked_map();
    ck_assert_uint_eq(after.map_epoch, before.map_epoch);
    ck_assert(keel_map_same_placement(&before, &after));
    keel_map_free(&after);
    keel_cluster_repl_counts(C[0], &x, NULL, NULL);
    ck_assert_uint_eq(x, 0);
    /* the same request without the drop is honoured: the refusals above
     * were the conditions', not the crafting's */
    craft_state(nm(p), 3, e, nm(b), store_of_[b], NULL);
    settle();
    after = checked_map();
    snprintf(want, sizeof want, "%s*,%s*", nm(p), nm(b));
    ck_assert_str_eq(unit_str(&after, "gpu", 3), want);
    keel_map_free(&after);
    keel_map_free(&before);
}
END_TEST

/* A backup that died before the controller read the request: the
 * primary, which has not applied a map since (held), still sees it listed
 * out of sync and asks; the controller, which saw it gone, refuses. The
 * backup stays listed, out of sync, for its dead time (rule 2). */
START_TEST(test_add_refused_dead_backup)
{
    keel_shard_map m;
    uint64_t e, x;
    int p, b;
    char want[128];

    e = out_of_sync(3, &p, &b);
    keel_zk_fake_hold(keel_cluster_zk(C[p]), 1);
    kill_node(b);
    settle();
    ck_assert_int_eq(
        keel_cluster_request_add(C[p], "gpu", 3, e, nm(b), store_of_[b]), 0);
    settle();
    keel_zk_fake_hold(keel_cluster_zk(C[p]), 0);
    settle();
    m = checked_map();
    snprintf(want, sizeof want, "%s*,%s", nm(p), nm(b));
    ck_assert_str_eq(unit_str(&m, "gpu", 3), want);
    ck_assert_uint_eq(unit(&m, "gpu", 3)->shard_epoch, e);
    keel_map_free(&m);
    keel_cluster_repl_counts(C[0], &x, NULL, NULL);
    ck_assert_uint_eq(x, 0);
    check_primaries();
}
END_TEST

/* Delivers one event to the agent of node i alone (every other client
 * held meanwhile). */
static void step1(int i)
{
    int j;

    for (j = 0; j < MAXN; j++)
        if (C[j] != NULL)
            keel_zk_fake_hold(keel_cluster_zk(C[j]), j != i);
    ck_assert_int_eq(keel_zk_fake_step(F), 1);
    for (j = 0; j < MAXN; j++)
        if (C[j] != NULL)
            keel_zk_fake_hold(keel_cluster_zk(C[j]), 0);
}

/* Requests the agent of node i submitted so far. */
static uint64_t nreq(int i)
{
    return keel_zk_fake_requests(keel_cluster_zk(C[i]));
}

/* The withdrawal race (contract of keel_cluster_add_pending): the
 * controller reads the primary's state with the request; the primary
 * withdraws it and its state write completes before the controller's map
 * write, which must then fail its check of the primary's state: the
 * backup is not added. The primary keeps counting the backup until a map
 * read issued after its write completed is applied: a map read issued
 * before (in flight across the withdrawal) does not settle it, and the
 * agent makes that read itself, calling map_applied though the map did
 * not change. */
START_TEST(test_add_withdrawal_race)
{
    keel_controller *ctl;
    keel_shard_map before, after;
    uint64_t e, writes, applied, x, r0;
    int p, b, pid;
    size_t k;

    e = out_of_sync(3, &p, &b);
    ctl = keel_cluster_controller(C[0]);
    ck_assert(keel_cluster_is_controller(C[0]));
    before = checked_map();
    /* 1. the request is published; the controller hears of it later */
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    ck_assert_int_eq(
        keel_cluster_request_add(C[p], "gpu", 3, e, nm(b), store_of_[b]), 0);
    settle();
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
    /* 2. the controller republishes the map (the primary's map read that
     * follows is in flight across the withdrawal), then reads the
     * primary's state: the read reaches the server, which answers with
     * the request; the answer waits */
    ck_assert_int_eq(keel_controller_republish(ctl), 0);
    pid = keel_controller_node_id(ctl, nm(p));
    ck_assert_int_ge(pid, 0);
    for (k = 0; k < 64 && !(ctl->busy && ctl->reading == (size_t)pid &&
                             !ctl->nodes[pid].dirty && !ctl->pending_valid);
         k++)
        step1(0);
    ck_assert(ctl->busy && ctl->reading == (size_t)pid);
    writes = ctl->writes;
    /* the primary's map watch fires: exists, then get; stop once the get
     * is out */
    r0 = nreq(p);
    for (k = 0; k < 16 && nreq(p) < r0 + 2; k++)
        step1(p);
    ck_assert_uint_eq(nreq(p), r0 + 2);
    /* 3. the primary withdraws; its state write reaches the server */
    applied = applied_n[p];
    ck_assert_int_eq(keel_cluster_withdraw_add(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_str_eq(zk_adds(nm(p), 3), "");
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 1);
    /* the map read issued before the write completed is applied: still
     * counted */
    step1(p);
    ck_assert_uint_eq(applied_n[p], applied + 1);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 1);
    /* the write completes: the agent reads the map (one get; and it
     * writes its state again, for the map it applied) */
    r0 = nreq(p);
    step1(p);
    ck_assert_uint_ge(nreq(p), r0 + 1);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 1);
    ck_assert_uint_eq(applied_n[p], applied + 1);
    /* 4. the controller gets the state it read, with the request: the
     * map write it makes fails its check of the primary's state */
    for (k = 0; k < 16 && !ctl->pending_valid; k++)
        step1(0);
    ck_assert(ctl->busy && ctl->pending_valid);
    ck_assert_uint_eq(ctl->nchecks, 1);
    settle();
    ck_assert_uint_eq(ctl->writes, writes);
    ck_assert(keel_cluster_is_controller(C[0]));
    after = checked_map();
    ck_assert_uint_eq(after.map_epoch, before.map_epoch + 1); /* republish */
    ck_assert(keel_map_same_placement(&before, &after));
    keel_map_free(&after);
    /* 5. the settling read was applied (the map unchanged): counted no
     * more, and map_applied told the runtime */
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_uint_eq(applied_n[p], applied + 2);
    keel_cluster_repl_counts(C[0], &x, NULL, NULL);
    ck_assert_uint_eq(x, 0);
    check_primaries();
    keel_map_free(&before);
}
END_TEST


/* The settling read is one issued after the withdrawal's write completed:
 * a settling read that failed is issued again with the next map read; a
 * second request withdrawn meanwhile, whose write completes while that
 * read is in flight, is not settled by it, only by the next. (The
 * requests name another store: the controller refuses them.) */
START_TEST(test_add_settle_read_after_write)
{
    const char *wrong = "0000000000000000000000000000abcd";
    const keel_shard_map *m;
    uint64_t e, e2, r0;
    uint32_t o = SHARDS, s;
    int p, b, gi;
    size_t k;

    e = out_of_sync(3, &p, &b);
    m = keel_cluster_map(C[p]);
    gi = keel_map_cap_index(m, "gpu");
    for (s = 0; s < SHARDS && o == SHARDS; s++)
        if (s != 3 && strcmp(keel_map_primary(m, (uint32_t)gi, s), nm(p)) == 0)
            o = s;
    ck_assert_uint_lt(o, SHARDS);
    e2 = keel_map_unit_at(m, (uint32_t)gi, o)->shard_epoch;
    ck_assert_int_eq(keel_cluster_request_drop(C[p], "gpu", o, e2, nm(b)), 0);
    settle();
    ck_assert_int_eq(keel_cluster_request_add(C[p], "gpu", 3, e, nm(b), wrong),
                     0);
    ck_assert_int_eq(
        keel_cluster_request_add(C[p], "gpu", o, e2, nm(b), wrong), 0);
    settle();
    advance(600); /* no map honours the first: the second goes anyway */
    ck_assert_str_ne(zk_adds(nm(p), o), "");
    /* 1. the first is withdrawn: its write completes, the settling read
     * fails */
    ck_assert_int_eq(keel_cluster_withdraw_add(C[p], "gpu", 3, e, nm(b)), 0);
    keel_zk_fake_fail_next(keel_cluster_zk(C[p]), KEEL_EPROTO, 0);
    settle();
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 1);
    /* 2. a map read of the primary's watch: its get goes out */
    ck_assert_int_eq(keel_controller_republish(keel_cluster_controller(C[0])),
                     0);
    r0 = nreq(p);
    for (k = 0; k < 16 && nreq(p) < r0 + 2; k++)
        step1(p);
    ck_assert_uint_eq(nreq(p), r0 + 2);
    /* 3. the second is withdrawn: its write goes out */
    ck_assert_int_eq(keel_cluster_withdraw_add(C[p], "gpu", o, e2, nm(b)),
                     0);
    /* 4. the get's answer: the map is applied, and the settling read of
     * the first goes out (after the second's write, before its
     * completion) */
    r0 = nreq(p);
    step1(p);
    ck_assert_uint_eq(nreq(p), r0 + 1);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 1);
    /* 5. the second's write completes; 6. the settling read answers: the
     * first is settled, not the second */
    step1(p);
    step1(p);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", o, e2, nm(b)), 1);
    settle();
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", o, e2, nm(b)), 0);
    ck_assert_str_eq(zk_adds(nm(p), o), "");
    m = keel_cluster_map(C[p]);
    ck_assert_uint_eq(count_insync(keel_map_unit_at(m, (uint32_t)gi, 3)), 1);
    ck_assert_uint_eq(count_insync(keel_map_unit_at(m, (uint32_t)gi, o)), 1);
}
END_TEST


/* The other order: the controller's map write lands before the
 * primary's withdrawal (the primary, held, hears of neither in time):
 * once it applies the map, the backup is in sync, add_pending() is 0 and
 * insync_backups() lists the backup, which the runtime keeps counting. */
START_TEST(test_add_withdrawn_after_honoured)
{
    keel_replica_ref refs[4];
    keel_shard_map m;
    uint64_t e, x;
    int p, b;
    char want[128];

    e = out_of_sync(3, &p, &b);
    keel_zk_fake_hold(keel_cluster_zk(C[p]), 1);
    ck_assert_int_eq(
        keel_cluster_request_add(C[p], "gpu", 3, e, nm(b), store_of_[b]), 0);
    settle();
    m = zk_map();
    snprintf(want, sizeof want, "%s*,%s*", nm(p), nm(b));
    ck_assert_str_eq(unit_str(&m, "gpu", 3), want);
    keel_map_free(&m);
    ck_assert_int_eq(
        keel_cluster_insync_backups(C[p], "gpu", 3, e, refs, 4), 0);
    ck_assert_int_eq(keel_cluster_withdraw_add(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 1);
    keel_zk_fake_hold(keel_cluster_zk(C[p]), 0);
    settle();
    m = checked_map();
    ck_assert_str_eq(unit_str(&m, "gpu", 3), want);
    keel_map_free(&m);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_int_eq(
        keel_cluster_insync_backups(C[p], "gpu", 3, e, refs, 4), 1);
    ck_assert_str_eq(refs[0].name, nm(b));
    ck_assert_str_eq(zk_adds(nm(p), 3), "");
    keel_cluster_repl_counts(C[0], &x, NULL, NULL);
    ck_assert_uint_eq(x, 1);
}
END_TEST

/* A request published while the controller hears nothing, and the
 * controller dies: its successor reads the states and honours it, in the
 * map write that also fails over the dead node's units. Counted by the
 * node whose controller wrote it. */
START_TEST(test_add_by_new_controller)
{
    keel_replica_ref refs[4];
    keel_shard_map before, after;
    uint64_t e, x, sh, f;
    size_t n;
    int p, b, who = -1, i;
    char want[128];

    e = out_of_sync(3, &p, &b);
    before = checked_map();
    keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
    ck_assert_int_eq(
        keel_cluster_request_add(C[p], "gpu", 3, e, nm(b), store_of_[b]), 0);
    settle();
    kill_node(0);
    settle();
    advance(TIMEOUT);
    for (i = 1; i < 3; i++)
        if (keel_cluster_is_controller(C[i]))
            who = i;
    ck_assert_int_gt(who, 0);
    after = checked_map();
    snprintf(want, sizeof want, "%s*,%s*", nm(p), nm(b));
    ck_assert_str_eq(unit_str(&after, "gpu", 3), want);
    ck_assert_uint_eq(unit(&after, "gpu", 3)->shard_epoch, e);
    ck_assert_int_eq(keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 0);
    ck_assert_int_eq(
        keel_cluster_insync_backups(C[p], "gpu", 3, e, refs, 4), 1);
    n = check_failed_over(&before, &after, "node-a");
    ck_assert_uint_gt(n, 0);
    keel_cluster_repl_counts(C[who], &x, &sh, &f);
    ck_assert_uint_eq(x, 1);
    ck_assert_uint_eq(sh, 0);
    ck_assert_uint_eq(f, n);
    keel_cluster_repl_counts(C[3 - who], &x, &sh, &f);
    ck_assert_uint_eq(x + sh + f, 0);
    check_primaries();
    keel_map_free(&before);
    keel_map_free(&after);
}
END_TEST


/* The safety of rule 7, after any event: a node that holds a unit at
 * shard_epoch E (keel_cluster_write_epoch) counts, by
 * keel_cluster_insync_backups or keel_cluster_add_pending, every backup
 * the map in ZooKeeper has in sync at E with it primary. Otherwise it
 * could acknowledge a write that an in-sync backup, promoted later, does
 * not have. */
static void check_counted(void)
{
    keel_shard_map m = zk_map();
    keel_replica_ref refs[KEEL_MAP_MAX_REPLICAS];
    uint32_t c, s;
    int i, r;

    for (i = 0; i < MAXN; i++) {
        if (C[i] == NULL || keel_cluster_phase(C[i]) != KEEL_CLUSTER_RUNNING)
            continue;
        for (c = 0; c < m.ncaps; c++)
            for (s = 0; s < m.shard_count; s++) {
                const keel_map_unit *u = keel_map_unit_at(&m, c, s);
                size_t n;
                if (u->nreplicas < 2 ||
                    strcmp(m.nodes[u->replicas[0]], nm(i)) != 0 ||
                    keel_cluster_write_epoch(C[i], m.caps[c], s) !=
                        u->shard_epoch)
                    continue;
                n = keel_cluster_insync_backups(C[i], m.caps[c], s,
                                                u->shard_epoch, refs,
                                                KEEL_MAP_MAX_REPLICAS);
                for (r = 1; r < u->nreplicas; r++) {
                    const char *y = m.nodes[u->replicas[r]];
                    size_t k;
                    int counted = 0;
                    if (!keel_map_insync(u, r))
                        continue;
                    for (k = 0; k < n; k++)
                        counted |= strcmp(refs[k].name, y) == 0;
                    counted |= keel_cluster_add_pending(
                        C[i], m.caps[c], s, u->shard_epoch, y);
                    ck_assert_msg(counted,
                                  "%s/%u: %s holds it at epoch %llu and does "
                                  "not count %s, in sync in map %llu",
                                  m.caps[c], s, nm(i),
                                  (unsigned long long)u->shard_epoch, y,
                                  (unsigned long long)m.map_epoch);
                }
            }
    }
    keel_map_free(&m);
}

/* Delivers every event one at a time (in the fake's order: shuffled when
 * a seed is set), ticking the agents, checking check_counted() after
 * each. */
static void settle_checked(void)
{
    int round, i;

    for (round = 0; round < 100000; round++) {
        if (keel_zk_fake_step(F) == 0) {
            for (i = 0; i < MAXN; i++)
                if (C[i] != NULL)
                    keel_cluster_tick(C[i], keel_zk_fake_now(F));
            if (keel_zk_fake_step(F) == 0)
                return;
        }
        check_counted();
    }
    ck_abort_msg("the cluster did not settle");
}

/* Delivers at most n events to the agent of node i alone (ticking it);
 * returns how many it got. */
static size_t step_upto(int i, size_t n)
{
    size_t k;
    int j;

    for (j = 0; j < MAXN; j++)
        if (C[j] != NULL)
            keel_zk_fake_hold(keel_cluster_zk(C[j]), j != i);
    for (k = 0; k < n; k++) {
        if (keel_zk_fake_step(F) == 0) {
            keel_cluster_tick(C[i], keel_zk_fake_now(F));
            if (keel_zk_fake_step(F) == 0)
                break;
        }
    }
    for (j = 0; j < MAXN; j++)
        if (C[j] != NULL)
            keel_zk_fake_hold(keel_cluster_zk(C[j]), 0);
    return k;
}

/* A primary's session ends with an add request in its state that the
 * controller has not read yet: the request is dropped with the session
 * (the node stops counting the backup), but its state znode, persistent,
 * still holds it until the node writes it again in its new session. The
 * controller may honour it meanwhile. Whatever the point of the node's
 * return at which the controller (held until then) reads the state and
 * writes its map, the node (held in turn) must never hold the unit while
 * the map has the backup in sync and the node does not count it. */
START_TEST(test_add_stale_across_sessions)
{
    size_t j, got = 0;

    for (j = 0; j < 48; j++) {
        uint64_t e;
        int p, b;
        if (j > 0) {
            teardown();
            setup();
        }
        e = out_of_sync(3, &p, &b);
        keel_zk_fake_hold(keel_cluster_zk(C[0]), 1);
        ck_assert_int_eq(keel_cluster_request_add(C[p], "gpu", 3, e, nm(b),
                                                  store_of_[b]),
                         0);
        settle();
        /* the primary's session ends; it comes back through j events */
        keel_zk_fake_expire(keel_cluster_zk(C[p]));
        got = step_upto(p, j);
        check_counted();
        /* the controller reads and writes; the primary hears nothing */
        keel_zk_fake_hold(keel_cluster_zk(C[p]), 1);
        keel_zk_fake_hold(keel_cluster_zk(C[0]), 0);
        settle();
        check_counted();
        keel_zk_fake_hold(keel_cluster_zk(C[p]), 0);
        settle_checked();
        advance(1000);
        check_counted();
        check_primaries();
        if (got < j)
            break; /* the node came back in fewer events: all cut */
    }
    ck_assert_uint_lt(got, j); /* every cut point was tried */
}
END_TEST


/* A request withdrawn at any point of its way (after k events), events
 * delivered in shuffled orders: after every event, a node holding a unit
 * counts every backup the map has in sync there (check_counted); in the
 * end the request is settled, and the backup is in sync exactly when the
 * primary's map lists it so. */
START_TEST(test_add_withdraw_reordered)
{
    static const uint64_t seeds[] = {1, 7, 42, 1234, 99991};
    static const size_t cuts[] = {0, 1, 2, 3, 4, 6, 9, 14};
    keel_replica_ref refs[4];
    size_t i, j, k, added = 0, refused = 0;

    for (i = 0; i < sizeof seeds / sizeof seeds[0]; i++)
        for (j = 0; j < sizeof cuts / sizeof cuts[0]; j++) {
            keel_shard_map m;
            uint64_t e;
            int p, b, pos;
            if (i + j > 0) {
                teardown();
                setup();
            }
            e = out_of_sync(3, &p, &b);
            keel_zk_fake_shuffle(F, seeds[i]);
            ck_assert_int_eq(keel_cluster_request_add(C[p], "gpu", 3, e,
                                                      nm(b), store_of_[b]),
                             0);
            for (k = 0; k < cuts[j] && keel_zk_fake_step(F); k++)
                check_counted();
            ck_assert_int_eq(
                keel_cluster_withdraw_add(C[p], "gpu", 3, e, nm(b)),
                keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b))
                    ? 0
                    : KEEL_ENOTFOUND);
            settle_checked();
            keel_zk_fake_shuffle(F, 0);
            ck_assert_int_eq(
                keel_cluster_add_pending(C[p], "gpu", 3, e, nm(b)), 0);
            m = checked_map();
            pos = pos_of(&m, unit(&m, "gpu", 3), nm(b));
            ck_assert_int_ge(pos, 1);
            if (keel_map_insync(unit(&m, "gpu", 3), pos)) {
                ck_assert_int_eq(keel_cluster_insync_backups(C[p], "gpu", 3,
                                                             e, refs, 4),
                                 1);
                added++;
            } else {
                refused++;
            }
            keel_map_free(&m);
            check_primaries();
        }
    /* both outcomes were seen */
    ck_assert_uint_gt(added, 0);
    ck_assert_uint_gt(refused, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("coord_replicas");
    TCase *rules = tcase_create("rules");
    TCase *tc = tcase_create("agents");

    keel_log_set_level(KEEL_LOG_WARN);
    tcase_add_test(rules, test_rs_fresh);
    tcase_add_test(rules, test_rs_follow);
    tcase_add_test(rules, test_rs_dead_backups);
    tcase_add_test(rules, test_rs_dead_time);
    tcase_add_test(rules, test_rs_move);
    tcase_add_test(rules, test_failover_pick);
    tcase_add_test(rules, test_failover_stand_in);
    tcase_add_test(rules, test_rs_add);
    suite_add_tcase(s, rules);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_config_replicas);
    tcase_add_test(tc, test_formation_wait);
    tcase_add_test(tc, test_formation_all_in_sync);
    tcase_add_test(tc, test_config_without_replicas_means_one);
    tcase_add_test(tc, test_fresh_units_all_in_sync);
    tcase_add_test(tc, test_fresh_without_store_id);
    tcase_add_test(tc, test_runtime_api);
    tcase_add_test(tc, test_drop_request);
    tcase_add_test(tc, test_backups_follow_placement);
    tcase_add_test(tc, test_join_keeps_insync_until_caught_up);
    tcase_add_test(tc, test_drained_backup_stops_before_its_replacement_caught_up);
    tcase_add_test(tc, test_primary_move_carries_insync);
    tcase_add_test(tc, test_spread_move_to_a_node_without_store);
    tcase_add_test(tc, test_primary_lost_alone_in_sync);
    tcase_add_test(tc, test_store_change_leaves_insync);
    tcase_add_test(tc, test_store_change_without_insync_backup_waits);
    tcase_add_test(tc, test_no_primary_on_another_store);
    tcase_add_test(tc, test_store_lost_node_is_placed_nothing);
    tcase_add_test(tc, test_no_stream_into_another_store);
    tcase_add_test(tc, test_store_lost_primary_back_on_its_store);
    tcase_add_test(tc, test_stale_drop_requests_ignored);
    tcase_add_test(tc, test_failover_on_session_expiry);
    tcase_add_test(tc, test_failover_stand_in_when_promoted_one_dies);
    tcase_add_test(tc, test_promoted_serves_once_its_state_landed);
    tcase_add_test(tc, test_promoted_serves_once_acquired_after_its_map_write);
    tcase_add_test(tc, test_failover_only_from_insync);
    tcase_add_test(tc, test_failover_by_new_controller);
    tcase_add_test(tc, test_failover_view_behind);
    tcase_add_test(tc, test_failover_reordered);
    tcase_add_test(tc, test_failover_during_move);
    tcase_add_test(tc, test_dead_backup);
    tcase_add_test(tc, test_dead_time_kept_then_replaced);
    tcase_add_test(tc, test_dead_time_back_before_it);
    tcase_add_test(tc, test_dead_time_new_controller);
    tcase_add_test(tc, test_dead_time_later_controller);
    tcase_add_test(tc, test_drain_with_backups);
    tcase_add_test(tc, test_drain_prefers_an_insync_backup);
    tcase_add_test(tc, test_new_controller_keeps_insync);
    tcase_add_test(tc, test_new_store_takes_no_writes_before_the_map);
    tcase_add_test(tc, test_drop_while_releasing);
    tcase_add_test(tc, test_add_request);
    tcase_add_test(tc, test_add_request_api);
    tcase_add_test(tc, test_adds_wait_for_the_next_map);
    tcase_add_test(tc, test_held_adds_go_with_the_next_map);
    tcase_add_test(tc, test_held_add_withdrawn_settles);
    tcase_add_test(tc, test_add_refused);
    tcase_add_test(tc, test_add_refused_dead_backup);
    tcase_add_test(tc, test_add_withdrawal_race);
    tcase_add_test(tc, test_add_settle_read_after_write);
    tcase_add_test(tc, test_add_withdrawn_after_honoured);
    tcase_add_test(tc, test_add_by_new_controller);
    tcase_add_test(tc, test_add_stale_across_sessions);
    tcase_add_test(tc, test_add_withdraw_reordered);
    suite_add_tcase(s, tc);
    /* Its own case, so that CK_RUN_CASE runs it alone. */
    tc = tcase_create("failover_caps");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_failover_prefers_a_backup_declaring_the_capability);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
