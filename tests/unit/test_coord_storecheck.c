/* The store check before joining (coordinator/storecheck.c), its run
 * record runs/<node> in particular, on the deterministic fake ZooKeeper:
 * the first record, a normal restart (the run raised), an older copy of
 * the store refused (its run at or below the recorded one, also when the
 * record changes between the read and the write), another store's record
 * taken over; and through a whole cluster agent, that a node refused as
 * an older copy fails for good (the runtime stops it) instead of checking
 * again (also once its run passed the record, its store marked stale),
 * while with a new store id it is a node on another store. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "coordinator/cluster.h"
#include "coordinator/layout.h"
#include "coordinator/storecheck.h"
#include "coordinator/zk_fake.h"
#include "fakeclu.h"
#include "keel.h"
#include "testutil.h"

#define STORE_A "0123456789abcdef0123456789abcdef"
#define STORE_B "fedcba9876543210fedcba9876543210"
#define RUNS "/keel/test/runs/node-a"
#define NODES "/keel/test/nodes/node-a"

static keel_zk_fake *F;
static keel_zk *Z;
static keel_layout L;

typedef struct seen {
    int calls;
    int rc;
} seen;

static void on_done(keel_storecheck *sc, int rc, void *arg)
{
    seen *s = arg;

    (void)sc;
    s->calls++;
    s->rc = rc;
}

static void on_session(keel_zk *zk, int event, void *arg)
{
    (void)zk;
    (void)event;
    (void)arg;
}

static void setup(void)
{
    F = keel_zk_fake_create();
    ck_assert_ptr_nonnull(F);
    ck_assert_int_eq(keel_zk_fake_client(F, &Z), 0);
    ck_assert_int_eq(keel_zk_connect(Z, 3000, on_session, NULL), 0);
    keel_zk_fake_run(F, 100);
    ck_assert_int_eq(keel_layout_init(&L, "test"), 0);
    /* What the bootstrap makes. */
    ck_assert_int_eq(keel_zk_fake_mkdirs(F, "/keel/test/nodes", NULL, 0), 0);
    ck_assert_int_eq(keel_zk_fake_mkdirs(F, "/keel/test/runs", NULL, 0), 0);
    ck_assert_int_eq(keel_zk_fake_mkdirs(F, "/keel/test/forgotten", NULL, 0),
                     0);
}

static void teardown(void)
{
    keel_zk_destroy(Z);
    keel_zk_fake_destroy(F);
}

/* keel_store_stale of the store check_store() checks. */
static uint64_t check_marked;

/* Runs a whole check of node-a on `store` at `run`: its rc. */
static int check_store(const char *store, uint64_t run, keel_storecheck *sc)
{
    seen s = {0, 0};

    keel_storecheck_init(sc, Z, &L, "node-a", store, on_done, &s);
    keel_storecheck_set_run(sc, run, "/data/a", check_marked);
    ck_assert_int_eq(keel_storecheck_start(sc), 0);
    keel_zk_fake_run(F, 1000);
    ck_assert_int_eq(s.calls, 1);
    keel_storecheck_free(sc);
    return s.rc;
}

/* runs/node-a as written: "store <id> run <n>\n". */
static void expect_runs(const char *store, uint64_t run)
{
    char buf[128], want[128];
    size_t len = sizeof buf - 1;
    int n;

    ck_assert_int_eq(keel_zk_fake_get(F, RUNS, buf, &len, NULL), 0);
    buf[len] = '\0';
    n = snprintf(want, sizeof want, "store %s run %llu\n", store,
                 (unsigned long long)run);
    ck_assert_uint_eq(len, (size_t)n);
    ck_assert_str_eq(buf, want);
}

static void put_runs(const char *store, uint64_t run)
{
    char buf[128];
    size_t len = keel_storecheck_run_format(buf, sizeof buf, store, run);

    if (keel_zk_fake_set(F, RUNS, buf, len) != 0)
        ck_assert_int_eq(keel_zk_fake_mkdirs(F, RUNS, buf, len), 0);
}

START_TEST(run_record_format)
{
    char buf[128], store[KEEL_STORE_ID_HEX + 1];
    uint64_t run = 0;
    size_t len;

    len = keel_storecheck_run_format(buf, sizeof buf, STORE_A,
                                     18446744073709551615ull);
    ck_assert_int_eq(keel_storecheck_run_parse(buf, len, store, &run), 0);
    ck_assert_str_eq(store, STORE_A);
    ck_assert(run == 18446744073709551615ull);
    len = keel_storecheck_run_format(buf, sizeof buf, STORE_A, 7);
    ck_assert_int_eq(keel_storecheck_run_parse(buf, len, store, &run), 0);
    ck_assert(run == 7);
    /* Strict: no newline, a leading zero, too large, upper case, a store
     * record, nothing. */
    ck_assert_int_eq(keel_storecheck_run_parse(buf, len - 1, store, &run),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(
        keel_storecheck_run_parse("store " STORE_A " run 07\n",
                                  sizeof "store " STORE_A " run 07\n" - 1,
                                  store, &run),
        KEEL_ECORRUPT);
    ck_assert_int_eq(
        keel_storecheck_run_parse(
            "store " STORE_A " run 18446744073709551616\n",
            sizeof "store " STORE_A " run 18446744073709551616\n" - 1, store,
            &run),
        KEEL_ECORRUPT);
    ck_assert_int_eq(
        keel_storecheck_run_parse("store 0123456789ABCDEF0123456789abcdef "
                                  "run 1\n",
                                  sizeof "store " STORE_A " run 1\n" - 1,
                                  store, &run),
        KEEL_ECORRUPT);
    ck_assert_int_eq(keel_storecheck_run_parse("store " STORE_A "\n",
                                               sizeof "store " STORE_A "\n" -
                                                   1,
                                               store, &run),
                     KEEL_ECORRUPT);
    ck_assert_int_eq(keel_storecheck_run_parse("", 0, store, &run),
                     KEEL_ECORRUPT);
}
END_TEST

/* First start: both records made; restarts raise the run; an older copy
 * (its run at or below the record) is refused and changes nothing. */
START_TEST(first_record_restart_and_older_copy)
{
    keel_storecheck sc;
    char buf[64];
    size_t len = sizeof buf;

    ck_assert_int_eq(check_store(STORE_A, 1, &sc), 0);
    expect_runs(STORE_A, 1);
    ck_assert_int_eq(keel_zk_fake_get(F, NODES, buf, &len, NULL), 0);
    ck_assert_int_eq(memcmp(buf, "store " STORE_A "\n", len), 0);

    /* Restarts: the run rises, the record follows. */
    ck_assert_int_eq(check_store(STORE_A, 2, &sc), 0);
    expect_runs(STORE_A, 2);
    ck_assert_int_eq(check_store(STORE_A, 5, &sc), 0); /* runs not joined */
    expect_runs(STORE_A, 5);

    /* A copy taken at run 2, opened again: run 3, then 5 (the run the
     * cluster saw): refused both times, the record untouched. */
    ck_assert_int_eq(check_store(STORE_A, 3, &sc), KEEL_EMISMATCH);
    ck_assert(sc.stale);
    ck_assert(sc.found_run == 5);
    ck_assert(sc.run == 3);
    expect_runs(STORE_A, 5);
    ck_assert_int_eq(check_store(STORE_A, 5, &sc), KEEL_EMISMATCH);
    ck_assert(sc.stale);
    expect_runs(STORE_A, 5);

    /* The newest directory goes on. */
    ck_assert_int_eq(check_store(STORE_A, 6, &sc), 0);
    ck_assert(!sc.stale);
    expect_runs(STORE_A, 6);

    /* A copy refused before (its store marked stale then) and opened
     * again until its run passed the record: refused still. */
    check_marked = 5;
    ck_assert_int_eq(check_store(STORE_A, 7, &sc), KEEL_EMISMATCH);
    ck_assert(sc.stale);
    ck_assert(sc.found_run == 5);
    expect_runs(STORE_A, 6);
    check_marked = 0;
}
END_TEST

/* A store the other checks let in (here: a new store id on a node the
 * cluster gives nothing) takes over another store's run record, whatever
 * run that one was at. */
START_TEST(another_store_takes_the_record)
{
    keel_storecheck sc;
    char buf[64];
    size_t len;

    ck_assert_int_eq(check_store(STORE_A, 9, &sc), 0);
    expect_runs(STORE_A, 9);
    ck_assert_int_eq(check_store(STORE_B, 1, &sc), 0);
    ck_assert(!sc.stale);
    expect_runs(STORE_B, 1);
    len = sizeof buf;
    ck_assert_int_eq(keel_zk_fake_get(F, NODES, buf, &len, NULL), 0);
    ck_assert_int_eq(memcmp(buf, "store " STORE_B "\n", len), 0);

    /* The old store is now the other one: it comes back only under the
     * rules for another store (accepted here: no units), and takes the
     * record over in turn. */
    ck_assert_int_eq(check_store(STORE_A, 10, &sc), 0);
    expect_runs(STORE_A, 10);

    /* A record of another store without a nodes/<node> change (a
     * previous release wrote nodes/<node> only): taken over too. */
    put_runs(STORE_B, 99);
    ck_assert_int_eq(check_store(STORE_A, 11, &sc), 0);
    expect_runs(STORE_A, 11);
}
END_TEST

/* The record changes between the read and the version-checked write (a
 * newer run recorded meanwhile): read again, and decided on what it says
 * now. */
START_TEST(record_changed_meanwhile_is_read_again)
{
    keel_storecheck sc;
    seen s = {0, 0};

    ck_assert_int_eq(check_store(STORE_A, 3, &sc), 0);
    expect_runs(STORE_A, 3);

    keel_storecheck_init(&sc, Z, &L, "node-a", STORE_A, on_done, &s);
    keel_storecheck_set_run(&sc, 4, NULL, 0);
    ck_assert_int_eq(keel_storecheck_start(&sc), 0);
    /* nodes/<node> answered: the same store; runs/<node> is read (the
     * fake applies a request when it is submitted). */
    ck_assert_int_eq(keel_zk_fake_step(F), 1);
    ck_assert_int_eq(s.calls, 0);
    put_runs(STORE_A, 4); /* another start of this store got there first */
    keel_zk_fake_run(F, 1000);
    ck_assert_int_eq(s.calls, 1);
    ck_assert_int_eq(s.rc, KEEL_EMISMATCH);
    ck_assert(sc.stale);
    ck_assert(sc.found_run == 4);
    expect_runs(STORE_A, 4);

    /* And a lower run written meanwhile: ours replaces it. */
    memset(&s, 0, sizeof s);
    keel_storecheck_init(&sc, Z, &L, "node-a", STORE_A, on_done, &s);
    keel_storecheck_set_run(&sc, 8, NULL, 0);
    ck_assert_int_eq(keel_storecheck_start(&sc), 0);
    ck_assert_int_eq(keel_zk_fake_step(F), 1);
    put_runs(STORE_A, 6);
    keel_zk_fake_run(F, 1000);
    ck_assert_int_eq(s.calls, 1);
    ck_assert_int_eq(s.rc, 0);
    expect_runs(STORE_A, 8);
}
END_TEST

/* A record of this very run that this process wrote is its own: found
 * again by the check of a later session, or after the answer to its write
 * was lost, it lets the node in. Written by another process (a copy
 * opened to the same run), it does not. */
START_TEST(own_record_found_again)
{
    keel_storecheck sc;
    seen s = {0, 0};

    keel_storecheck_init(&sc, Z, &L, "node-a", STORE_A, on_done, &s);
    keel_storecheck_set_run(&sc, 3, NULL, 0);
    ck_assert_int_eq(keel_storecheck_start(&sc), 0);
    keel_zk_fake_run(F, 1000);
    ck_assert_int_eq(s.calls, 1);
    ck_assert_int_eq(s.rc, 0);
    expect_runs(STORE_A, 3);
    /* A new session checks again. */
    ck_assert_int_eq(keel_storecheck_start(&sc), 0);
    keel_zk_fake_run(F, 1000);
    ck_assert_int_eq(s.calls, 2);
    ck_assert_int_eq(s.rc, 0);
    keel_storecheck_free(&sc);
    /* Another process at the same run. */
    ck_assert_int_eq(check_store(STORE_A, 3, &sc), KEEL_EMISMATCH);

    /* The answer to the write is lost (the write applied): the step is
     * redone, finds the record changed, reads it again: its own. */
    memset(&s, 0, sizeof s);
    keel_storecheck_init(&sc, Z, &L, "node-a", STORE_A, on_done, &s);
    keel_storecheck_set_run(&sc, 4, NULL, 0);
    ck_assert_int_eq(keel_storecheck_start(&sc), 0);
    ck_assert_int_eq(keel_zk_fake_step(F), 1); /* nodes/: runs/ read */
    keel_zk_fake_fail_next(Z, KEEL_ECONNLOSS, 1);
    ck_assert_int_eq(keel_zk_fake_step(F), 1); /* runs/: the write */
    keel_zk_fake_run(F, 1000);
    ck_assert_int_eq(s.calls, 0);
    ck_assert(sc.stalled);
    expect_runs(STORE_A, 4);
    keel_storecheck_resume(&sc);
    keel_zk_fake_run(F, 1000);
    ck_assert_int_eq(s.calls, 1);
    ck_assert_int_eq(s.rc, 0);
    expect_runs(STORE_A, 4);
    keel_storecheck_free(&sc);
}
END_TEST

/* Without a run (an embedder's store, a check set up without one), the
 * run record is neither read nor written. */
START_TEST(no_run_no_record)
{
    keel_storecheck sc;

    put_runs(STORE_A, 50);
    ck_assert_int_eq(check_store(STORE_A, 0, &sc), 0);
    expect_runs(STORE_A, 50);
    ck_assert_int_eq(keel_zk_fake_get(F, NODES, NULL, NULL, NULL), 0);
}
END_TEST

/* ------------------------------------------------- through the agent */

static keel_cluster *C;
static keel_zk *CZ; /* C's client */

static keel_cluster *at(size_t i)
{
    return i == 0 ? C : NULL;
}

static int failed_calls, failed_rc;

static void on_failed(keel_cluster *c, int rc, void *data)
{
    (void)c;
    (void)data;
    failed_calls++;
    failed_rc = rc;
}

static void start_node_marked(const char *store, uint64_t run,
                              uint64_t marked);

static void start_node(const char *store, uint64_t run)
{
    start_node_marked(store, run, 0);
}

static void start_node_marked(const char *store, uint64_t run,
                              uint64_t marked)
{
    keel_cluster_options o;
    keel_zk *zk;

    keel_cluster_options_init(&o);
    o.cluster = "test";
    o.node = "node-a";
    o.address = "127.0.0.1:7000";
    o.shard_count = 8;
    o.session_timeout_ms = 3000;
    o.store_id = store;
    o.store_run = run;
    o.store_dir = "/data/node-a";
    o.store_stale = marked;
    o.hooks.failed = on_failed;
    ck_assert_int_eq(keel_zk_fake_client(F, &zk), 0);
    CZ = zk;
    ck_assert_int_eq(keel_cluster_create(NULL, &o, zk, &C), 0);
    ck_assert_int_eq(keel_cluster_start(C), 0);
    tu_fake_settle(F, at, 1, 10000);
    tu_fake_advance(F, 1000, at, 1, 10000);
}

static void stop_node(void)
{
    keel_cluster_destroy(C);
    C = NULL;
    keel_zk_fake_advance(F, 10000);
    keel_zk_fake_run(F, 100000);
}

START_TEST(agent_refuses_an_older_copy_for_good)
{
    char buf[64];
    size_t len;

    failed_calls = 0;
    start_node(STORE_A, 1);
    ck_assert_int_eq(keel_cluster_phase(C), KEEL_CLUSTER_RUNNING);
    expect_runs(STORE_A, 1);
    stop_node();
    start_node(STORE_A, 2);
    ck_assert_int_eq(keel_cluster_phase(C), KEEL_CLUSTER_RUNNING);
    expect_runs(STORE_A, 2);
    /* Its session expires: it checks again, finds its own record, and
     * joins again. */
    keel_zk_fake_expire(CZ);
    tu_fake_advance(F, 12000, at, 1, 10000);
    ck_assert_int_eq(keel_cluster_phase(C), KEEL_CLUSTER_RUNNING);
    ck_assert_int_eq(failed_calls, 0);
    expect_runs(STORE_A, 2);
    stop_node();

    /* A copy of run 1, opened again: run 2. */
    start_node(STORE_A, 2);
    tu_fake_advance(F, 12000, at, 1, 10000);
    ck_assert_int_eq(keel_cluster_phase(C), KEEL_CLUSTER_FAILED);
    ck_assert_int_eq(keel_cluster_error(C), KEEL_EMISMATCH);
    ck_assert_int_eq(failed_calls, 1);
    ck_assert_int_eq(failed_rc, KEEL_EMISMATCH);
    len = sizeof buf;
    ck_assert_int_eq(
        keel_zk_fake_get(F, "/keel/test/members/node-a", buf, &len, NULL),
        KEEL_ENOTFOUND);
    expect_runs(STORE_A, 2);
    stop_node();

    /* Opened again: run 3, past the record, but marked stale by the
     * runtime at the refusal: refused again. */
    failed_calls = 0;
    start_node_marked(STORE_A, 3, 2);
    tu_fake_advance(F, 12000, at, 1, 10000);
    ck_assert_int_eq(keel_cluster_phase(C), KEEL_CLUSTER_FAILED);
    ck_assert_int_eq(keel_cluster_error(C), KEEL_EMISMATCH);
    ck_assert_int_eq(failed_calls, 1);
    expect_runs(STORE_A, 2);
    stop_node();

    /* The same copy with a new store id: a node on another store, under
     * those rules. Alone, it held every unit alone: refused until
     * forgotten, checking again (no failure), the run record untouched
     * until a store is let in. */
    failed_calls = 0;
    start_node(STORE_B, 3);
    tu_fake_advance(F, 12000, at, 1, 10000);
    ck_assert_int_eq(keel_cluster_error(C), KEEL_EMISMATCH);
    ck_assert_int_ne(keel_cluster_phase(C), KEEL_CLUSTER_FAILED);
    ck_assert_int_ne(keel_cluster_phase(C), KEEL_CLUSTER_RUNNING);
    ck_assert_int_eq(failed_calls, 0);
    expect_runs(STORE_A, 2);
    stop_node();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("coord_storecheck");
    TCase *tc = tcase_create("storecheck");

    keel_log_set_level(KEEL_LOG_ERROR);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, run_record_format);
    tcase_add_test(tc, first_record_restart_and_older_copy);
    tcase_add_test(tc, another_store_takes_the_record);
    tcase_add_test(tc, record_changed_meanwhile_is_read_again);
    tcase_add_test(tc, own_record_found_again);
    tcase_add_test(tc, no_run_no_record);
    tcase_add_test(tc, agent_refuses_an_older_copy_for_good);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
