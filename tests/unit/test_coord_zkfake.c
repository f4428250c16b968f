/* The in-memory ZooKeeper (coordinator/zk_fake.c): the coordination logic
 * is only as well tested as this fake is faithful, so its semantics are
 * pinned here: versions, sequential names, ephemeral owners, one-shot
 * watches, atomic multi, sync, negotiated timeouts, and the failure
 * controls (a server cut off from the leader among them). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/zk.h"
#include "coordinator/zk_fake.h"
#include "keel.h"
#include "testutil.h"

/* Records what callbacks saw. */
typedef struct rec {
    int calls;
    int rc;
    char path[KEEL_ZK_PATH_MAX];
    char data[256];
    size_t len;
    keel_zk_stat st;
    int has_st;
    size_t count;
    char names[16][64];
    size_t failed, n;
    char rpaths[4][KEEL_ZK_PATH_MAX];
    int events[16];
    int nevents;
} rec;

static int in_submit;

static void on_create(keel_zk *zk, int rc, const char *path,
                      const keel_zk_stat *st, void *arg)
{
    rec *r = arg;
    (void)zk;
    ck_assert(!in_submit);
    r->calls++;
    r->rc = rc;
    snprintf(r->path, sizeof r->path, "%s", path ? path : "");
    if (st)
        r->st = *st;
    r->has_st = st != NULL;
}

static void on_void(keel_zk *zk, int rc, void *arg)
{
    rec *r = arg;
    (void)zk;
    ck_assert(!in_submit);
    r->calls++;
    r->rc = rc;
}

static void on_data(keel_zk *zk, int rc, const void *data, size_t len,
                    const keel_zk_stat *st, void *arg)
{
    rec *r = arg;
    (void)zk;
    ck_assert(!in_submit);
    r->calls++;
    r->rc = rc;
    r->len = len;
    if (data && len < sizeof r->data) {
        memcpy(r->data, data, len);
        r->data[len] = '\0';
    }
    if (st)
        r->st = *st;
    r->has_st = st != NULL;
}

static void on_stat(keel_zk *zk, int rc, const keel_zk_stat *st, void *arg)
{
    rec *r = arg;
    (void)zk;
    ck_assert(!in_submit);
    r->calls++;
    r->rc = rc;
    if (st)
        r->st = *st;
    r->has_st = st != NULL;
}

static void on_children(keel_zk *zk, int rc, size_t count,
                        const char *const *names, void *arg)
{
    rec *r = arg;
    size_t i;
    (void)zk;
    r->calls++;
    r->rc = rc;
    r->count = count;
    for (i = 0; i < count && i < 16; i++)
        snprintf(r->names[i], sizeof r->names[i], "%s", names[i]);
}

static void on_multi(keel_zk *zk, int rc, size_t failed,
                     const keel_zk_op_result *res, size_t n, void *arg)
{
    rec *r = arg;
    size_t i;
    (void)zk;
    r->calls++;
    r->rc = rc;
    r->failed = failed;
    r->n = n;
    for (i = 0; res != NULL && i < n && i < 4; i++)
        snprintf(r->rpaths[i], sizeof r->rpaths[i], "%s",
                 res[i].path ? res[i].path : "");
}

static void on_watch(keel_zk *zk, int event, const char *path, void *arg)
{
    rec *r = arg;
    (void)zk;
    r->calls++;
    if (r->nevents < 16)
        r->events[r->nevents++] = event;
    snprintf(r->path, sizeof r->path, "%s", path);
}

static void on_session(keel_zk *zk, int event, void *arg)
{
    rec *r = arg;
    (void)zk;
    if (r->nevents < 16)
        r->events[r->nevents++] = event;
}

/* A server with `n` connected clients. */
typedef struct fx {
    keel_zk_fake *f;
    keel_zk *c[3];
    rec sess[3];
} fx;

static void fx_init(fx *x, int n)
{
    int i;

    memset(x, 0, sizeof *x);
    x->f = keel_zk_fake_create();
    ck_assert_ptr_nonnull(x->f);
    for (i = 0; i < n; i++) {
        ck_assert_int_eq(keel_zk_fake_client(x->f, &x->c[i]), 0);
        ck_assert_int_eq(keel_zk_connect(x->c[i], 3000, on_session,
                                         &x->sess[i]),
                         0);
    }
    keel_zk_fake_run(x->f, 0);
    for (i = 0; i < n; i++)
        ck_assert_int_eq(x->sess[i].events[0], KEEL_ZK_CONNECTED);
}

static void fx_done(fx *x)
{
    int i;

    for (i = 0; i < 3; i++)
        keel_zk_destroy(x->c[i]);
    keel_zk_fake_destroy(x->f);
}

static void create(fx *x, int i, const char *path, const char *data,
                   int flags, rec *r)
{
    in_submit = 1;
    ck_assert_int_eq(keel_zk_create(x->c[i], path, data,
                                    data ? strlen(data) : 0, flags,
                                    on_create, r),
                     0);
    in_submit = 0;
    ck_assert_int_eq(r->calls, 0);
    keel_zk_fake_run(x->f, 0);
}

START_TEST(test_crud_versions)
{
    fx x;
    rec a = {0}, b = {0}, c = {0}, d = {0}, e = {0}, g = {0};

    fx_init(&x, 1);
    create(&x, 0, "/a", "one", 0, &a);
    ck_assert_int_eq(a.rc, 0);
    ck_assert_str_eq(a.path, "/a");
    ck_assert_int_eq(a.st.version, 0);
    ck_assert(a.st.czxid > 0);
    create(&x, 0, "/a", "dup", 0, &b);
    ck_assert_int_eq(b.rc, KEEL_EEXIST);
    create(&x, 0, "/missing/child", NULL, 0, &c);
    ck_assert_int_eq(c.rc, KEEL_ENOTFOUND);

    ck_assert_int_eq(keel_zk_set(x.c[0], "/a", "two", 3, 0, on_stat, &d), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(d.rc, 0);
    ck_assert_int_eq(d.st.version, 1);
    ck_assert(d.st.mzxid > a.st.czxid);
    memset(&d, 0, sizeof d);
    ck_assert_int_eq(keel_zk_set(x.c[0], "/a", "x", 1, 0, on_stat, &d), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(d.rc, KEEL_EBADVERSION);

    ck_assert_int_eq(keel_zk_get(x.c[0], "/a", NULL, NULL, on_data, &e), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(e.rc, 0);
    ck_assert_str_eq(e.data, "two");
    ck_assert_int_eq(e.st.version, 1);

    memset(&b, 0, sizeof b);
    create(&x, 0, "/a/kid", NULL, 0, &b);
    ck_assert_int_eq(b.rc, 0);
    ck_assert_int_eq(keel_zk_remove(x.c[0], "/a", -1, on_void, &g), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(g.rc, KEEL_EEXIST); /* has children */
    memset(&g, 0, sizeof g);
    ck_assert_int_eq(keel_zk_remove(x.c[0], "/a/kid", 5, on_void, &g), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(g.rc, KEEL_EBADVERSION);
    memset(&g, 0, sizeof g);
    ck_assert_int_eq(keel_zk_remove(x.c[0], "/a/kid", 0, on_void, &g), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(g.rc, 0);

    memset(&e, 0, sizeof e);
    ck_assert_int_eq(keel_zk_exists(x.c[0], "/a/kid", NULL, NULL, on_stat, &e),
                     0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(e.rc, KEEL_ENOTFOUND);
    ck_assert(!e.has_st);
    fx_done(&x);
}
END_TEST

START_TEST(test_sequential_and_ephemeral)
{
    fx x;
    rec a = {0}, b = {0}, c = {0}, kids = {0};

    fx_init(&x, 2);
    create(&x, 0, "/e", NULL, 0, &a);
    memset(&a, 0, sizeof a);
    create(&x, 0, "/e/n_", "x", KEEL_ZK_EPHEMERAL | KEEL_ZK_SEQUENTIAL, &a);
    create(&x, 1, "/e/n_", "y", KEEL_ZK_EPHEMERAL | KEEL_ZK_SEQUENTIAL, &b);
    ck_assert_int_eq(a.rc, 0);
    ck_assert_int_eq(b.rc, 0);
    ck_assert_str_eq(a.path, "/e/n_0000000000");
    ck_assert_str_eq(b.path, "/e/n_0000000001");
    ck_assert_int_eq(a.st.ephemeral_owner, keel_zk_session_id(x.c[0]));
    ck_assert(b.st.czxid > a.st.czxid);
    /* Ephemeral nodes cannot have children. */
    create(&x, 0, "/e/n_0000000000/sub", NULL, 0, &c);
    ck_assert_int_eq(c.rc, KEEL_EINVAL);

    /* Closing client 0 removes its ephemeral node at once. */
    keel_zk_close(x.c[0]);
    ck_assert_int_eq(keel_zk_children(x.c[1], "/e", NULL, NULL, on_children,
                                      &kids),
                     0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(kids.count, 1);
    ck_assert_str_eq(kids.names[0], "n_0000000001");
    /* A closed client refuses requests outright. */
    ck_assert_int_eq(keel_zk_get(x.c[0], "/e", NULL, NULL, on_data, &c),
                     KEEL_ESESSION);
    fx_done(&x);
}
END_TEST

START_TEST(test_watches_one_shot)
{
    fx x;
    rec a = {0}, w1 = {0}, w2 = {0}, w3 = {0}, st = {0}, d = {0};

    fx_init(&x, 2);
    create(&x, 0, "/w", "v", 0, &a);
    /* data watch from client 1, child watch from client 1, exists watch on
     * a missing node */
    ck_assert_int_eq(keel_zk_get(x.c[1], "/w", on_watch, &w1, on_data, &d), 0);
    ck_assert_int_eq(
        keel_zk_children(x.c[1], "/w", on_watch, &w2, on_children, &d), 0);
    ck_assert_int_eq(
        keel_zk_exists(x.c[1], "/w/k", on_watch, &w3, on_stat, &st), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(st.rc, KEEL_ENOTFOUND);

    ck_assert_int_eq(keel_zk_set(x.c[0], "/w", "v2", 2, -1, on_stat, &st), 0);
    ck_assert_int_eq(keel_zk_set(x.c[0], "/w", "v3", 2, -1, on_stat, &st), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(w1.calls, 1); /* one-shot */
    ck_assert_int_eq(w1.events[0], KEEL_ZK_NODE_CHANGED);
    ck_assert_int_eq(w2.calls, 0);

    memset(&a, 0, sizeof a);
    create(&x, 0, "/w/k", NULL, 0, &a);
    ck_assert_int_eq(w3.calls, 1);
    ck_assert_int_eq(w3.events[0], KEEL_ZK_NODE_CREATED);
    ck_assert_str_eq(w3.path, "/w/k");
    ck_assert_int_eq(w2.calls, 1);
    ck_assert_int_eq(w2.events[0], KEEL_ZK_CHILDREN_CHANGED);
    ck_assert_str_eq(w2.path, "/w");

    /* Deleting a node fires both its data and child watches. */
    memset(&w1, 0, sizeof w1);
    memset(&w2, 0, sizeof w2);
    ck_assert_int_eq(keel_zk_get(x.c[1], "/w/k", on_watch, &w1, on_data, &d),
                     0);
    ck_assert_int_eq(
        keel_zk_children(x.c[1], "/w/k", on_watch, &w2, on_children, &d), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(keel_zk_remove(x.c[0], "/w/k", -1, on_void, &a), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(w1.events[0], KEEL_ZK_NODE_DELETED);
    ck_assert_int_eq(w2.events[0], KEEL_ZK_NODE_DELETED);
    fx_done(&x);
}
END_TEST

START_TEST(test_multi_atomic)
{
    fx x;
    rec a = {0}, m = {0}, g = {0};
    keel_zk_op ops[3];
    size_t len = sizeof g.data - 1;

    fx_init(&x, 1);
    create(&x, 0, "/epoch", "1", 0, &a);
    memset(&a, 0, sizeof a);
    create(&x, 0, "/m", "old", 0, &a);

    memset(ops, 0, sizeof ops);
    ops[0].type = KEEL_ZK_OP_CHECK;
    ops[0].path = "/epoch";
    ops[0].version = 7; /* wrong */
    ops[1].type = KEEL_ZK_OP_SET;
    ops[1].path = "/m";
    ops[1].data = "new";
    ops[1].len = 3;
    ops[1].version = -1;
    ops[2].type = KEEL_ZK_OP_CREATE;
    ops[2].path = "/q_";
    ops[2].flags = KEEL_ZK_SEQUENTIAL;
    ck_assert_int_eq(keel_zk_multi(x.c[0], ops, 3, on_multi, &m), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(m.rc, KEEL_EBADVERSION);
    ck_assert_int_eq(m.failed, 0);
    ck_assert_int_eq(keel_zk_fake_get(x.f, "/m", g.data, &len, NULL), 0);
    ck_assert_int_eq(len, 3);
    g.data[len] = '\0';
    ck_assert_str_eq(g.data, "old");
    ck_assert_int_eq(keel_zk_fake_num_children(x.f, "/"), 2);

    ops[0].version = 0;
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(keel_zk_multi(x.c[0], ops, 3, on_multi, &m), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(m.rc, 0);
    ck_assert_int_eq(m.n, 3);
    ck_assert_str_eq(m.rpaths[2], "/q_0000000002");
    len = sizeof g.data;
    ck_assert_int_eq(keel_zk_fake_get(x.f, "/m", g.data, &len, NULL), 0);
    g.data[len] = '\0';
    ck_assert_str_eq(g.data, "new");

    /* A failing op in the middle: index reported, first op undone. */
    ops[0].type = KEEL_ZK_OP_SET;
    ops[0].path = "/m";
    ops[0].data = "zzz";
    ops[0].len = 3;
    ops[0].version = -1;
    ops[1].type = KEEL_ZK_OP_DELETE;
    ops[1].path = "/nothing";
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(keel_zk_multi(x.c[0], ops, 2, on_multi, &m), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(m.rc, KEEL_ENOTFOUND);
    ck_assert_int_eq(m.failed, 1);
    len = sizeof g.data;
    keel_zk_fake_get(x.f, "/m", g.data, &len, NULL);
    g.data[len] = '\0';
    ck_assert_str_eq(g.data, "new");
    fx_done(&x);
}
END_TEST

START_TEST(test_disconnect_reconnect)
{
    fx x;
    rec a = {0}, s = {0}, w = {0}, d = {0}, late = {0};

    fx_init(&x, 2);
    create(&x, 0, "/d", "v", 0, &a);
    ck_assert_int_eq(keel_zk_get(x.c[1], "/d", on_watch, &w, on_data, &d), 0);
    keel_zk_fake_run(x.f, 0);

    /* Client 1's set is applied, then the link drops before the answer. */
    ck_assert_int_eq(keel_zk_set(x.c[1], "/d", "v2", 2, -1, on_stat, &s), 0);
    keel_zk_fake_disconnect(x.c[1]);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(x.sess[1].events[1], KEEL_ZK_DISCONNECTED);
    ck_assert_int_eq(s.rc, KEEL_ECONNLOSS);
    ck_assert_int_eq(w.calls, 0); /* parked */
    {
        keel_zk_stat st;
        ck_assert_int_eq(keel_zk_fake_get(x.f, "/d", NULL, NULL, &st), 0);
        ck_assert_int_eq(st.version, 1); /* it was applied */
    }
    /* New requests fail while disconnected. */
    ck_assert_int_eq(keel_zk_get(x.c[1], "/d", NULL, NULL, on_data, &late), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(late.rc, KEEL_ECONNLOSS);

    keel_zk_fake_reconnect(x.c[1]);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(x.sess[1].events[2], KEEL_ZK_CONNECTED);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.events[0], KEEL_ZK_NODE_CHANGED);
    fx_done(&x);
}
END_TEST

START_TEST(test_expiry_by_time)
{
    fx x;
    rec a = {0}, w = {0}, st = {0};

    fx_init(&x, 2);
    create(&x, 0, "/eph", NULL, KEEL_ZK_EPHEMERAL, &a);
    ck_assert_int_eq(keel_zk_exists(x.c[1], "/eph", on_watch, &w, on_stat, &st),
                     0);
    keel_zk_fake_run(x.f, 0);
    keel_zk_fake_disconnect(x.c[0]);
    keel_zk_fake_run(x.f, 0);
    keel_zk_fake_advance(x.f, 2999);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(w.calls, 0); /* session still alive on the server */
    keel_zk_fake_advance(x.f, 1);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.events[0], KEEL_ZK_NODE_DELETED);
    /* Client 0 hears of it only when it reaches a server again. */
    ck_assert_int_eq(x.sess[0].nevents, 2);
    keel_zk_fake_reconnect(x.c[0]);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(x.sess[0].events[2], KEEL_ZK_EXPIRED);
    ck_assert_int_eq(keel_zk_exists(x.c[0], "/", NULL, NULL, on_stat, &st),
                     KEEL_ESESSION);
    /* A new session works. */
    ck_assert_int_eq(keel_zk_connect(x.c[0], 3000, on_session, &x.sess[0]), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(x.sess[0].events[3], KEEL_ZK_CONNECTED);
    fx_done(&x);
}
END_TEST

START_TEST(test_expire_connected_and_fail_next)
{
    fx x;
    rec a = {0}, b = {0};
    keel_zk_stat st;

    fx_init(&x, 1);
    create(&x, 0, "/k", NULL, KEEL_ZK_EPHEMERAL, &a);
    ck_assert_int_eq(keel_zk_exists(x.c[0], "/k", NULL, NULL, on_stat, &b), 0);
    keel_zk_fake_expire(x.c[0]);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(x.sess[0].events[1], KEEL_ZK_EXPIRED);
    ck_assert_int_eq(b.rc, KEEL_ESESSION);
    ck_assert_int_eq(keel_zk_fake_get(x.f, "/k", NULL, NULL, &st),
                     KEEL_ENOTFOUND);

    ck_assert_int_eq(keel_zk_connect(x.c[0], 3000, on_session, &x.sess[0]), 0);
    keel_zk_fake_run(x.f, 0);
    /* Injected: applied but the answer lost. */
    keel_zk_fake_fail_next(x.c[0], KEEL_ECONNLOSS, 1);
    memset(&a, 0, sizeof a);
    create(&x, 0, "/lost", NULL, 0, &a);
    ck_assert_int_eq(a.rc, KEEL_ECONNLOSS);
    ck_assert_int_eq(keel_zk_fake_get(x.f, "/lost", NULL, NULL, &st), 0);
    /* Injected: refused, not applied. */
    keel_zk_fake_fail_next(x.c[0], KEEL_EBADVERSION, 0);
    memset(&a, 0, sizeof a);
    create(&x, 0, "/never", NULL, 0, &a);
    ck_assert_int_eq(a.rc, KEEL_EBADVERSION);
    ck_assert_int_eq(keel_zk_fake_get(x.f, "/never", NULL, NULL, &st),
                     KEEL_ENOTFOUND);
    fx_done(&x);
}
END_TEST

static int order[16], norder;

static void on_order(keel_zk *zk, int rc, const keel_zk_stat *st, void *arg)
{
    (void)zk;
    (void)rc;
    (void)st;
    order[norder++] = (int)(intptr_t)arg;
}

START_TEST(test_hold_and_shuffle)
{
    fx x;
    int i;

    fx_init(&x, 2);
    norder = 0;
    keel_zk_fake_hold(x.c[0], 1);
    for (i = 0; i < 3; i++) {
        keel_zk_exists(x.c[0], "/", NULL, NULL, on_order, (void *)(intptr_t)i);
        keel_zk_exists(x.c[1], "/", NULL, NULL, on_order,
                       (void *)(intptr_t)(10 + i));
    }
    ck_assert_int_eq(keel_zk_fake_run(x.f, 0), 3);
    ck_assert_int_eq(order[0], 10);
    ck_assert_int_eq(order[2], 12);
    ck_assert_int_eq(keel_zk_fake_pending(x.f), 3);
    keel_zk_fake_hold(x.c[0], 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(order[3], 0);
    ck_assert_int_eq(order[5], 2);

    /* Shuffled: any interleaving, but each client's own order holds. */
    norder = 0;
    keel_zk_fake_shuffle(x.f, 42);
    for (i = 0; i < 3; i++) {
        keel_zk_exists(x.c[0], "/", NULL, NULL, on_order, (void *)(intptr_t)i);
        keel_zk_exists(x.c[1], "/", NULL, NULL, on_order,
                       (void *)(intptr_t)(10 + i));
    }
    keel_zk_fake_run(x.f, 0);
    {
        int last0 = -1, last1 = 9;
        for (i = 0; i < norder; i++) {
            if (order[i] < 10) {
                ck_assert_int_gt(order[i], last0);
                last0 = order[i];
            } else {
                ck_assert_int_gt(order[i], last1);
                last1 = order[i];
            }
        }
        ck_assert_int_eq(norder, 6);
    }
    fx_done(&x);
}
END_TEST

static void destroy_self(keel_zk *zk, int rc, const keel_zk_stat *st,
                         void *arg)
{
    (void)rc;
    (void)st;
    *(int *)arg += 1;
    keel_zk_destroy(zk);
}

/* sync is answered like any request while the server reaches the
 * leader, and refused for a bad path or without a session. */
START_TEST(test_sync)
{
    fx x;
    rec r = {0}, late = {0};

    fx_init(&x, 1);
    in_submit = 1;
    ck_assert_int_eq(keel_zk_sync(x.c[0], "/", on_void, &r), 0);
    in_submit = 0;
    ck_assert_int_eq(r.calls, 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(keel_zk_sync(x.c[0], "no-slash", on_void, &r),
                     KEEL_EINVAL);
    keel_zk_fake_disconnect(x.c[0]);
    ck_assert_int_eq(keel_zk_sync(x.c[0], "/", on_void, &late), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(late.rc, KEEL_ECONNLOSS);
    keel_zk_close(x.c[0]);
    ck_assert_int_eq(keel_zk_sync(x.c[0], "/", on_void, &late),
                     KEEL_ESESSION);
    fx_done(&x);
}
END_TEST

/* A client whose server is cut off from the leader: reads answered,
 * writes and syncs never (nor anything after them), no watch events; its
 * session expires on the server after the timeout without it being told;
 * when the server drops it, what waited fails unapplied, and the
 * reconnection reports the expiry. */
START_TEST(test_cut_off_follower)
{
    fx x;
    rec a = {0}, eph = {0}, w = {0}, r1 = {0}, sy = {0}, wr = {0}, r2 = {0};
    rec ow = {0}, os = {0};
    keel_zk_stat st;

    fx_init(&x, 2);
    create(&x, 0, "/d", "v", 0, &a);
    create(&x, 0, "/eph", NULL, KEEL_ZK_EPHEMERAL, &eph);
    ck_assert_int_eq(keel_zk_get(x.c[0], "/d", on_watch, &w, on_data, &r1),
                     0);
    ck_assert_int_eq(keel_zk_exists(x.c[1], "/eph", on_watch, &ow, on_stat,
                                    &os),
                     0);
    keel_zk_fake_run(x.f, 0);
    r1.calls = 0;

    keel_zk_fake_cut_off(x.c[0]);
    /* a read: answered */
    ck_assert_int_eq(keel_zk_exists(x.c[0], "/d", NULL, NULL, on_stat, &r1),
                     0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(r1.calls, 1);
    ck_assert_int_eq(r1.rc, 0);
    /* a sync and a write: neither answered nor applied; a read after them
     * waits behind them */
    ck_assert_int_eq(keel_zk_sync(x.c[0], "/", on_void, &sy), 0);
    ck_assert_int_eq(keel_zk_set(x.c[0], "/d", "cut", 3, -1, on_stat, &wr),
                     0);
    ck_assert_int_eq(keel_zk_exists(x.c[0], "/d", NULL, NULL, on_stat, &r2),
                     0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(sy.calls + wr.calls + r2.calls, 0);
    ck_assert_int_eq(keel_zk_fake_get(x.f, "/d", NULL, NULL, &st), 0);
    ck_assert_int_eq(st.version, 0);
    ck_assert_uint_eq(keel_zk_fake_pending(x.f), 3);
    /* another client's write: no watch event reaches the cut-off one */
    ck_assert_int_eq(keel_zk_fake_set(x.f, "/d", "v2", 2), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(w.calls, 0);

    /* The leader expires the session after the timeout: the ephemeral
     * goes (the other client sees it), the cut-off client hears nothing. */
    keel_zk_fake_advance(x.f, 2999);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(ow.calls, 0);
    keel_zk_fake_advance(x.f, 1);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(ow.calls, 1);
    ck_assert_int_eq(ow.events[0], KEEL_ZK_NODE_DELETED);
    ck_assert_int_eq(x.sess[0].nevents, 1);
    ck_assert_int_eq(sy.calls, 0);

    /* The server gives up on the leader and drops its clients. */
    keel_zk_fake_disconnect(x.c[0]);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(x.sess[0].events[1], KEEL_ZK_DISCONNECTED);
    ck_assert_int_eq(sy.calls, 1);
    ck_assert_int_eq(sy.rc, KEEL_ECONNLOSS);
    ck_assert_int_eq(wr.rc, KEEL_ECONNLOSS);
    ck_assert_int_eq(r2.rc, KEEL_ECONNLOSS);
    ck_assert_int_eq(keel_zk_fake_get(x.f, "/d", NULL, NULL, &st), 0);
    ck_assert_int_eq(st.version, 1); /* only the other client's set */
    keel_zk_fake_reconnect(x.c[0]);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(x.sess[0].events[2], KEEL_ZK_EXPIRED);
    ck_assert_int_eq(w.calls, 0); /* watches died with the session */
    fx_done(&x);
}
END_TEST

/* Cut off, then back before the timeout: the session lives, the waiting
 * requests fail unapplied with the disconnection, new ones work. */
START_TEST(test_cut_off_then_back)
{
    fx x;
    rec sy = {0}, again = {0};

    fx_init(&x, 1);
    keel_zk_fake_cut_off(x.c[0]);
    ck_assert_int_eq(keel_zk_sync(x.c[0], "/", on_void, &sy), 0);
    keel_zk_fake_advance(x.f, 2000);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(sy.calls, 0);
    keel_zk_fake_disconnect(x.c[0]);
    keel_zk_fake_reconnect(x.c[0]);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(sy.rc, KEEL_ECONNLOSS);
    ck_assert_int_eq(x.sess[0].events[2], KEEL_ZK_CONNECTED);
    ck_assert_int_eq(keel_zk_sync(x.c[0], "/", on_void, &again), 0);
    keel_zk_fake_run(x.f, 0);
    ck_assert_int_eq(again.calls, 1);
    ck_assert_int_eq(again.rc, 0);
    fx_done(&x);
}
END_TEST

/* The server grants timeouts within its bounds, as real ones do. */
START_TEST(test_timeout_bounds)
{
    keel_zk_fake *f = keel_zk_fake_create();
    keel_zk *c;
    rec s = {0};

    ck_assert_int_eq(keel_zk_fake_client(f, &c), 0);
    keel_zk_fake_timeout_bounds(f, 4000, 40000);
    ck_assert_int_eq(keel_zk_connect(c, 1000, on_session, &s), 0);
    ck_assert_int_eq(keel_zk_session_timeout(c), 4000);
    ck_assert_int_eq(keel_zk_connect(c, 90000, on_session, &s), 0);
    ck_assert_int_eq(keel_zk_session_timeout(c), 40000);
    ck_assert_int_eq(keel_zk_connect(c, 6000, on_session, &s), 0);
    ck_assert_int_eq(keel_zk_session_timeout(c), 6000);
    keel_zk_destroy(c);
    keel_zk_fake_destroy(f);
}
END_TEST

START_TEST(test_destroy_from_callback)
{
    keel_zk_fake *f = keel_zk_fake_create();
    keel_zk *c;
    rec s = {0};
    int hits = 0;

    ck_assert_int_eq(keel_zk_fake_client(f, &c), 0);
    keel_zk_connect(c, 1000, on_session, &s);
    keel_zk_fake_run(f, 0);
    keel_zk_exists(c, "/", NULL, NULL, destroy_self, &hits);
    keel_zk_exists(c, "/", NULL, NULL, destroy_self, &hits);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(hits, 1); /* nothing after destroy */
    keel_zk_fake_destroy(f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("coord_zkfake");
    TCase *tc = tcase_create("fake");

    tcase_add_test(tc, test_crud_versions);
    tcase_add_test(tc, test_sequential_and_ephemeral);
    tcase_add_test(tc, test_watches_one_shot);
    tcase_add_test(tc, test_multi_atomic);
    tcase_add_test(tc, test_disconnect_reconnect);
    tcase_add_test(tc, test_expiry_by_time);
    tcase_add_test(tc, test_expire_connected_and_fail_next);
    tcase_add_test(tc, test_hold_and_shuffle);
    tcase_add_test(tc, test_destroy_from_callback);
    tcase_add_test(tc, test_sync);
    tcase_add_test(tc, test_cut_off_follower);
    tcase_add_test(tc, test_cut_off_then_back);
    tcase_add_test(tc, test_timeout_bounds);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
