/* The coordination building blocks one by one on the in-memory ZooKeeper:
 * the znode text formats (coordinator/layout.c), bootstrap with a lost
 * connection, the election recipe (only the predecessor is watched; a
 * create whose answer was lost is found again, not duplicated), and
 * membership (a previous incarnation is waited out; our own node from a
 * lost answer is adopted). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/bootstrap.h"
#include "coordinator/election.h"
#include "coordinator/layout.h"
#include "coordinator/membership.h"
#include "coordinator/zk_fake.h"
#include "keel.h"
#include "testutil.h"

/* ------------------------------------------------------------ formats */

START_TEST(test_text_formats)
{
    static const char *caps[] = {"chat", "game"};
    char buf[64], *data;
    keel_member m;
    uint32_t shards;
    int replicas;
    uint64_t e;
    size_t len;
    keel_layout l;

    ck_assert_int_eq(keel_layout_init(&l, "prod"), 0);
    ck_assert_str_eq(keel_layout_path(&l, buf, "nodes", "n1", "state"),
                     "/keel/prod/nodes/n1/state");
    ck_assert_str_eq(keel_layout_path(&l, buf, "map", NULL, NULL),
                     "/keel/prod/map");
    ck_assert_int_eq(keel_layout_init(&l, "a/b"), KEEL_EINVAL);

    len = keel_config_format(buf, sizeof buf, 4096, 1);
    ck_assert_int_eq(keel_config_parse(buf, len, &shards, &replicas), 0);
    ck_assert_uint_eq(shards, 4096);
    ck_assert_int_eq(replicas, 1);
    ck_assert_int_eq(keel_config_parse("keel-cluster 1\nshards 0\n", 24,
                                       &shards, NULL),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_config_parse("keel-cluster 2\nshards 8\n", 24,
                                       &shards, NULL),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_config_parse("keel-cluster 1\nshards 8", 23,
                                       &shards, NULL),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_config_parse("keel-cluster 1\nshards 8\nx", 25,
                                       &shards, NULL),
                     KEEL_ECORRUPT);
    /* The replica count: a line only above 1; without it, 1. */
    len = keel_config_format(buf, sizeof buf, 64, 3);
    ck_assert_str_eq(buf, "keel-cluster 1\nshards 64\nreplicas 3\n");
    ck_assert_int_eq(keel_config_parse(buf, len, &shards, &replicas), 0);
    ck_assert_uint_eq(shards, 64);
    ck_assert_int_eq(replicas, 3);
    len = keel_config_format(buf, sizeof buf, 64, 0);
    ck_assert_str_eq(buf, "keel-cluster 1\nshards 64\n");
    {
        static const char *bad[] = {
            "keel-cluster 1\nshards 8\nreplicas 1\n", /* not canonical */
            "keel-cluster 1\nshards 8\nreplicas 0\n",
            "keel-cluster 1\nshards 8\nreplicas 6\n",
            "keel-cluster 1\nshards 8\nreplicas 03\n",
            "keel-cluster 1\nshards 8\nreplicas 3",
            "keel-cluster 1\nshards 8\nreplicas 3\nx\n",
            "keel-cluster 1\nreplicas 3\nshards 8\n",
        };
        size_t i;
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
            ck_assert_int_eq(
                keel_config_parse(bad[i], strlen(bad[i]), &shards, &replicas),
                KEEL_ECORRUPT);
    }

    ck_assert_int_eq(keel_epoch_parse("17", 2, &e), 0);
    ck_assert_uint_eq(e, 17);
    ck_assert_int_eq(keel_epoch_parse("017", 3, &e), KEEL_ECORRUPT);
    ck_assert_int_eq(keel_epoch_parse("99999999999999999999", 20, &e),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_epoch_parse("", 0, &e), KEEL_ECORRUPT);

    memset(&m, 0, sizeof m);
    ck_assert_int_eq(keel_member_format("10.0.0.1:7420", caps, 2, 0, &data,
                                        &len),
                     0);
    ck_assert_int_eq(keel_member_parse(data, len, &m), 0);
    ck_assert_str_eq(m.addr, "10.0.0.1:7420");
    ck_assert_uint_eq(m.ncaps, 2);
    ck_assert_str_eq(m.caps[1], "game");
    ck_assert_uint_eq(m.session_timeout_ms, 0);
    free(data);
    /* the session's timeout, published by current nodes */
    ck_assert_int_eq(keel_member_format("10.0.0.1:7420", caps, 2, 4000, &data,
                                        &len),
                     0);
    ck_assert_uint_eq(len, strlen("addr 10.0.0.1:7420\ncaps chat,game\n"
                                  "session_timeout 4000\n"));
    ck_assert_int_eq(memcmp(data, "addr 10.0.0.1:7420\ncaps chat,game\n"
                                  "session_timeout 4000\n", len),
                     0);
    ck_assert_int_eq(keel_member_parse(data, len, &m), 0);
    ck_assert_uint_eq(m.session_timeout_ms, 4000);
    ck_assert_uint_eq(m.ncaps, 2);
    free(data);
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps \nsession_timeout 0\n",
                                       33, &m),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps \nsession_timeout 04\n",
                                       34, &m),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps \nsession_timeout "
                                       "4294967296\n",
                                       42, &m),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps \nsession_timeout\n",
                                       31, &m),
                     KEEL_ECORRUPT);
    /* leaving comes last */
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps \nleaving 1\n"
                                       "session_timeout 9\n",
                                       43, &m),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps \nsession_timeout 9\n"
                                       "leaving 1\n",
                                       43, &m),
                     0);
    ck_assert_uint_eq(m.session_timeout_ms, 9);
    ck_assert_int_eq(m.leaving, 1);
    ck_assert_int_eq(m.insecure, 0);
    /* a node running without credentials says so, before "leaving" */
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps \ninsecure 1\n"
                                       "leaving 1\n",
                                       36, &m),
                     0);
    ck_assert_int_eq(m.insecure, 1);
    ck_assert_int_eq(m.leaving, 1);
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps \nleaving 1\n"
                                       "insecure 1\n",
                                       36, &m),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps \ninsecure 0\n", 26,
                                       &m),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps \ninsecure 1", 25,
                                       &m),
                     KEEL_ECORRUPT);
    /* an older node's znode has no timeout */
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps \n", 15, &m), 0);
    ck_assert_uint_eq(m.session_timeout_ms, 0);
    ck_assert_int_eq(m.leaving, 0);
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps \n", 15, &m), 0);
    ck_assert_uint_eq(m.ncaps, 0);
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps a,\n", 17, &m),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_member_parse("addr x:1\ncaps a,,b\n", 19, &m),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_member_parse("addr \ncaps a\n", 13, &m),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_member_parse("caps a\naddr x\n", 14, &m),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_member_format("has space:1", NULL, 0, 0, &data,
                                        &len),
                     KEEL_EINVAL);
    /* The store's identity: optional (older members have none), exactly
     * 32 lowercase hex digits, before "leaving". */
    {
        static const char with[] =
            "addr x:1\ncaps a\nstore 0123456789abcdef0123456789abcdef\n"
            "leaving 1\n";
        static const char bad1[] = "addr x:1\ncaps a\nstore 0123\n";
        static const char bad2[] =
            "addr x:1\ncaps a\nstore 0123456789ABCDEF0123456789abcdef\n";
        static const char bad3[] = "addr x:1\ncaps a\nleaving 1\n"
                                   "store 0123456789abcdef0123456789abcdef\n";

        ck_assert_int_eq(keel_member_parse(with, sizeof with - 1, &m), 0);
        ck_assert_str_eq(m.store, "0123456789abcdef0123456789abcdef");
        ck_assert_int_eq(m.leaving, 1);
        ck_assert_int_eq(keel_member_parse(bad1, sizeof bad1 - 1, &m),
                         KEEL_ECORRUPT);
        ck_assert_int_eq(keel_member_parse(bad2, sizeof bad2 - 1, &m),
                         KEEL_ECORRUPT);
        ck_assert_int_eq(keel_member_parse(bad3, sizeof bad3 - 1, &m),
                         KEEL_ECORRUPT);
        ck_assert_int_eq(keel_member_parse("addr x:1\ncaps \n", 15, &m), 0);
        ck_assert_str_eq(m.store, "");
    }
    keel_member_clear(&m);

    ck_assert_int_eq(keel_election_seq("n_00000000000010ab_0000000042"), 42);
    ck_assert_int_eq(keel_election_seq("n_00000000000010ab_000000004"), -1);
    ck_assert_int_eq(keel_election_seq("x_00000000000010ab_0000000042"), -1);
    ck_assert_int_eq(keel_election_seq("n_00000000000010aX_0000000042"), -1);
}
END_TEST

/* ---------------------------------------------------------- bootstrap */

typedef struct bres {
    int calls, rc;
    uint32_t found;
} bres;

static void boot_cb(keel_bootstrap *b, int rc, uint32_t found, void *arg)
{
    bres *r = arg;

    (void)b;
    r->calls++;
    r->rc = rc;
    r->found = found;
}

static void connect_run(keel_zk_fake *f, keel_zk *zk)
{
    ck_assert_int_eq(keel_zk_connect(zk, 3000, NULL, NULL), 0);
    keel_zk_fake_run(f, 0);
}

START_TEST(test_bootstrap_resumes)
{
    keel_zk_fake *f = keel_zk_fake_create();
    keel_layout l;
    keel_bootstrap b;
    keel_zk *zk;
    bres r = {0, 0, 0};
    int steps = 0;

    keel_layout_init(&l, "c1");
    keel_zk_fake_client(f, &zk);
    connect_run(f, zk);
    keel_bootstrap_init(&b, zk, &l, 256, boot_cb, &r);
    ck_assert_int_eq(keel_bootstrap_start(&b), 0);
    /* lose the connection in the middle, twice */
    while (keel_zk_fake_step(f) && ++steps < 3)
        ;
    keel_zk_fake_disconnect(zk);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(r.calls, 0);
    keel_zk_fake_reconnect(zk);
    keel_zk_fake_run(f, 0);
    keel_bootstrap_resume(&b);
    keel_zk_fake_step(f);
    keel_zk_fake_disconnect(zk);
    keel_zk_fake_run(f, 0);
    keel_zk_fake_reconnect(zk);
    keel_zk_fake_run(f, 0);
    keel_bootstrap_resume(&b);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.rc, 0);
    /* config, election, members, nodes, forgotten, runs,
     * controller_epoch */
    ck_assert_int_eq(keel_zk_fake_num_children(f, "/keel/c1"), 7);
    /* corrupt config: refused with a typed error */
    keel_zk_fake_set(f, "/keel/c1/config", "shards=256", 10);
    memset(&r, 0, sizeof r);
    ck_assert_int_eq(keel_bootstrap_start(&b), 0);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(r.rc, KEEL_ECORRUPT);
    keel_zk_destroy(zk);
    keel_zk_fake_destroy(f);
}
END_TEST

/* ----------------------------------------------------------- election */

typedef struct cand {
    keel_zk *zk;
    keel_election e;
    int won, rc;
} cand;

static void elected(keel_election *e, int rc, void *arg)
{
    cand *c = arg;

    (void)e;
    c->rc = rc;
    if (rc == 0)
        c->won++;
}

static void prepare(keel_zk_fake *f, keel_layout *l)
{
    keel_layout_init(l, "c1");
    ck_assert_int_eq(keel_zk_fake_mkdirs(f, "/keel/c1/election", NULL, 0), 0);
    ck_assert_int_eq(keel_zk_fake_mkdirs(f, "/keel/c1/members", NULL, 0), 0);
}

START_TEST(test_election_predecessor_chain)
{
    keel_zk_fake *f = keel_zk_fake_create();
    keel_layout l;
    cand c[3];
    int i;

    prepare(f, &l);
    memset(c, 0, sizeof c);
    for (i = 0; i < 3; i++) {
        char name[8];
        snprintf(name, sizeof name, "n%d", i);
        keel_zk_fake_client(f, &c[i].zk);
        connect_run(f, c[i].zk);
        keel_election_init(&c[i].e, c[i].zk, &l, name, elected, &c[i]);
        ck_assert_int_eq(keel_election_start(&c[i].e), 0);
        keel_zk_fake_run(f, 0);
    }
    ck_assert_int_eq(c[0].won, 1);
    ck_assert_int_eq(c[1].won + c[2].won, 0);
    /* each watches only its predecessor */
    ck_assert_str_eq(c[1].e.watching, c[0].e.path);
    ck_assert_str_eq(c[2].e.watching, c[1].e.path);

    /* the middle one leaves: only the last one looks, and now watches
     * the leader; nobody is elected */
    keel_zk_close(c[1].zk);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(c[2].won, 0);
    ck_assert_str_eq(c[2].e.watching, c[0].e.path);
    ck_assert_int_eq(c[0].won, 1);

    /* the leader leaves: the last one leads */
    keel_zk_fake_expire(c[0].zk);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(c[2].won, 1);
    ck_assert(keel_election_is_leader(&c[2].e));
    for (i = 0; i < 3; i++)
        keel_zk_destroy(c[i].zk);
    keel_zk_fake_destroy(f);
}
END_TEST

START_TEST(test_election_lost_create_answer)
{
    keel_zk_fake *f = keel_zk_fake_create();
    keel_layout l;
    cand c[2];

    prepare(f, &l);
    memset(c, 0, sizeof c);
    keel_zk_fake_client(f, &c[0].zk);
    keel_zk_fake_client(f, &c[1].zk);
    connect_run(f, c[0].zk);
    connect_run(f, c[1].zk);
    keel_election_init(&c[0].e, c[0].zk, &l, "n0", elected, &c[0]);
    keel_election_init(&c[1].e, c[1].zk, &l, "n1", elected, &c[1]);
    /* n0's create is applied but its answer is lost */
    keel_zk_fake_fail_next(c[0].zk, KEEL_ECONNLOSS, 1);
    ck_assert_int_eq(keel_election_start(&c[0].e), 0);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(c[0].won, 0);
    ck_assert_int_eq(keel_election_start(&c[1].e), 0);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(c[1].won, 0); /* n0's node leads, though n0 is unaware */
    keel_election_resume(&c[0].e);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(c[0].won, 1);
    /* it found its node instead of making a second one */
    ck_assert_int_eq(keel_zk_fake_num_children(f, "/keel/c1/election"), 2);
    keel_zk_destroy(c[0].zk);
    keel_zk_destroy(c[1].zk);
    keel_zk_fake_destroy(f);
}
END_TEST

/* --------------------------------------------------------- membership */

typedef struct mres {
    int joined, changed, failed;
} mres;

static void member_cb(keel_membership *m, int event, void *arg)
{
    mres *r = arg;

    (void)m;
    if (event == KEEL_MEMBERSHIP_JOINED)
        r->joined++;
    else if (event == KEEL_MEMBERSHIP_CHANGED)
        r->changed++;
    else
        r->failed++;
}

START_TEST(test_membership_waits_for_previous_incarnation)
{
    static const char *caps[] = {"game"};
    keel_zk_fake *f = keel_zk_fake_create();
    keel_layout l;
    keel_membership old, neu, watcher;
    keel_zk *z_old, *z_new, *z_w;
    mres r_old = {0, 0, 0}, r_new = {0, 0, 0}, r_w = {0, 0, 0};
    const keel_member *m;

    prepare(f, &l);
    keel_zk_fake_client(f, &z_old);
    keel_zk_fake_client(f, &z_new);
    keel_zk_fake_client(f, &z_w);
    connect_run(f, z_old);
    connect_run(f, z_new);
    connect_run(f, z_w);
    keel_membership_init(&watcher, z_w, &l, "w", member_cb, &r_w);
    ck_assert_int_eq(keel_membership_watch(&watcher), 0);
    keel_membership_init(&old, z_old, &l, "n1", member_cb, &r_old);
    ck_assert_int_eq(keel_membership_join(&old, "h:1", caps, 1), 0);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(r_old.joined, 1);
    ck_assert_int_ge(r_w.changed, 1);
    m = keel_membership_find(&watcher, "n1");
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(m->addr, "h:1");
    ck_assert_str_eq(m->caps[0], "game");
    ck_assert_int_eq(m->incarnation, old.incarnation);

    /* the same node restarts while its old session still lives */
    keel_membership_init(&neu, z_new, &l, "n1", member_cb, &r_new);
    ck_assert_int_eq(keel_membership_join(&neu, "h:2", NULL, 0), 0);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(r_new.joined, 0);
    /* the old session expires: the new incarnation joins */
    keel_zk_fake_disconnect(z_old);
    keel_zk_fake_advance(f, 3000);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(r_new.joined, 1);
    ck_assert_int_gt(neu.incarnation, old.incarnation);
    m = keel_membership_find(&watcher, "n1");
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(m->addr, "h:2");
    ck_assert_int_eq(m->incarnation, neu.incarnation);

    keel_membership_free(&old);
    keel_membership_free(&neu);
    keel_membership_free(&watcher);
    keel_zk_destroy(z_old);
    keel_zk_destroy(z_new);
    keel_zk_destroy(z_w);
    keel_zk_fake_destroy(f);
}
END_TEST

START_TEST(test_membership_adopts_own_node)
{
    keel_zk_fake *f = keel_zk_fake_create();
    keel_layout l;
    keel_membership m;
    keel_zk *zk;
    mres r = {0, 0, 0};
    keel_zk_stat st;

    prepare(f, &l);
    keel_zk_fake_client(f, &zk);
    connect_run(f, zk);
    keel_membership_init(&m, zk, &l, "n1", member_cb, &r);
    keel_zk_fake_fail_next(zk, KEEL_ECONNLOSS, 1);
    ck_assert_int_eq(keel_membership_join(&m, "h:1", NULL, 0), 0);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(r.joined, 0);
    keel_membership_resume(&m);
    keel_zk_fake_run(f, 0);
    ck_assert_int_eq(r.joined, 1);
    ck_assert_int_eq(keel_zk_fake_get(f, "/keel/c1/members/n1", NULL, NULL,
                                      &st),
                     0);
    ck_assert_int_eq(m.incarnation, st.czxid);
    keel_membership_free(&m);
    keel_zk_destroy(zk);
    keel_zk_fake_destroy(f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("coord_election");
    TCase *tc = tcase_create("blocks");

    keel_log_set_level(KEEL_LOG_ERROR);
    tcase_add_test(tc, test_text_formats);
    tcase_add_test(tc, test_bootstrap_resumes);
    tcase_add_test(tc, test_election_predecessor_chain);
    tcase_add_test(tc, test_election_lost_create_answer);
    tcase_add_test(tc, test_membership_waits_for_previous_incarnation);
    tcase_add_test(tc, test_membership_adopts_own_node);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
