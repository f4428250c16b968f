/* A node started again on a data directory restored from an older copy
 * of its own (docs/operations.md, "Backups": copy the directory, restore
 * a copy into an empty directory), end to end with a real ZooKeeper and
 * two keeld (--replicas 2, 16 shards, one counter per unit). Two
 * increments per counter; n1 killed, its directory copied, n1 started
 * again on it; three more increments per counter acknowledged with n1
 * in sync everywhere; n1 killed again and its directory replaced by the
 * copy (the same store identity, older content). Checked: keeld on the
 * copy refuses to join and exits non-zero, its log naming the directory,
 * the store, both runs and --new-store-id, and nothing changes in the
 * cluster (twice: a refused start does not make the next one pass); then
 * started on the copy with --new-store-id, n1 joins as a node on another
 * store, is not in sync until it caught up, and once every unit has both
 * nodes in sync again with equal digests, n0 is killed and every
 * acknowledged count is still there on n1.
 * Every wait is bounded; on a failure the nodes' logs are printed. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clmap.h"
#include "cluster.h"
#include "coordinator/shardmap.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define SHARDS 16

static tu_cluster fx;

static const char *const common_args[] = {"--repl-lag-ms", "1000", NULL};

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    tu_cluster_setup(&fx, "clrestore", "rs");
    fx.shards = SHARDS;
    fx.session_ms = 4000;
}

static void teardown(void)
{
    tu_cluster_teardown_zk_paused(&fx, SIGKILL);
}

static void counter_of(uint32_t s, char *id, size_t cap)
{
    tu_cluster_counter_in("q", s, SHARDS, id, cap);
}

static long call_counter(keel_client **c, int i, const char *id,
                         const char *op)
{
    return tu_cluster_keyed_counter(&fx, c, i, id, op);
}

static void load_round(keel_client **cl, long *acked, int round,
                       const char *when)
{
    char id[16];
    uint32_t s;

    for (s = 0; s < SHARDS; s++) {
        int i = (int)((s + (uint32_t)round) % 2);
        long v;
        counter_of(s, id, sizeof id);
        v = call_counter(&cl[i], i, id, "incr");
        CHECK(v == acked[s] + 1, "%s answered %ld after %ld increments (%s)",
              id, v, acked[s], when);
        acked[s] = v;
    }
}

static void run_cp(const char *from, const char *to)
{
    const char *argv[] = {"/bin/cp", "-a", from, to, NULL};

    CHECK(tu_run(argv, NULL, NULL) == 0, "cp -a %s %s failed", from, to);
}

/* n1 killed with SIGKILL and started again on its directory, after
 * `between` ran on the directory while it was down. */
static void restart_n1(void (*between)(void))
{
    int port = fx.nodes[1].port;

    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[1], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[1]);
    between();
    CHECK(tu_cluster_start_nodev(&fx, 1, port,
                                 (const char *const[]){"--replicas", "2",
                                                       "--repl-lag-ms",
                                                       "1000", NULL}) == 0,
          "n1 did not start again");
}

static char n1_dir[600], snap_dir[600];

static void take_copy(void)
{
    run_cp(n1_dir, snap_dir);
}

static void put_copy_back(void)
{
    tu_rmrf(n1_dir);
    run_cp(snap_dir, n1_dir);
}

/* Waits (at most 30 s) until n1's log says it joined `times` times in
 * all (its log is kept across restarts): 1 when it has. */
static int wait_joined(int times)
{
    double deadline = tu_now_s() + 30;

    while (tu_now_s() < deadline) {
        char *log = tu_keeld_log(&fx.nodes[1]), *p = log;
        int n = 0;
        while (p != NULL && (p = strstr(p, "joined as incarnation")) != NULL) {
            n++;
            p++;
        }
        free(log);
        if (n >= times)
            return 1;
        tu_sleep_ms(100);
    }
    return 0;
}

/* Waits (at most 60 s) until n1 is a member and every unit has both
 * nodes in sync and no move: 1 when it has. */
static int wait_member_and_settled(void)
{
    double deadline = tu_now_s() + 60;

    while (tu_now_s() < deadline) {
        if (tu_cluster_member_exists(&fx, "n1") == 1 &&
            tu_map_wait_settled(&fx, 2))
            return 1;
        tu_sleep_ms(200);
    }
    return 0;
}

/* keeld as node n1 on its directory, run to its exit (at most 60 s):
 * the exit code, its log in *log (malloc'd). */
static int run_n1_to_exit(int port, char **log)
{
    char *bin = tu_bin("keeld"), listen[64], shards[16], session[16];
    const char *argv[] = {bin,
                          "--data",
                          n1_dir,
                          "--listen",
                          listen,
                          "--shards",
                          shards,
                          "--zk",
                          fx.zk.hosts,
                          "--cluster",
                          fx.name,
                          "--node-id",
                          "n1",
                          "--zk-session-timeout",
                          session,
                          "--insecure",
                          "--replicas",
                          "2",
                          "--repl-lag-ms",
                          "1000",
                          NULL};
    int code;

    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(shards, sizeof shards, "%d", fx.shards);
    snprintf(session, sizeof session, "%d", fx.session_ms);
    *log = NULL;
    code = tu_run_for(argv, 60, NULL, log);
    free(bin);
    return code;
}

START_TEST(a_restored_backup_is_refused_then_catches_up_as_a_new_store)
{
    keel_client *cl[2] = {NULL, NULL};
    long acked[SHARDS] = {0}, at_copy[SHARDS] = {0};
    int nsync = 0, differ = 0, lost = 0, round, attempt, port;
    keel_shard_map m;
    char *log = NULL;
    uint32_t s;

    snprintf(n1_dir, sizeof n1_dir, "%s/n1", fx.dir);
    snprintf(snap_dir, sizeof snap_dir, "%s/n1.copy", fx.dir);
    tu_cluster_start_together(&fx, 2, 2, common_args, NULL);
    for (round = 0; round < 2; round++)
        load_round(cl, acked, round, "before the copy");

    /* The copy: n1 down, its directory copied, n1 back on it. */
    keel_client_close(cl[1]);
    cl[1] = NULL;
    restart_n1(take_copy);
    memcpy(at_copy, acked, sizeof acked);
    CHECK(wait_joined(2), "n1 did not join again after the copy");
    CHECK(wait_member_and_settled(), "n1 is not back in sync after the copy");

    /* Writes acknowledged with n1 in sync in every unit. */
    for (round = 0; round < 3; round++)
        load_round(cl, acked, round, "after the copy");
    CHECK(wait_member_and_settled(), "not settled after the writes");

    /* n1 down again, its directory replaced by the older copy (same
     * store identity). keeld on it refuses to join and exits, twice. */
    keel_client_close(cl[1]);
    cl[1] = NULL;
    port = fx.nodes[1].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[1], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[1]);
    put_copy_back();
    for (attempt = 0; attempt < 2; attempt++) {
        int code = run_n1_to_exit(port, &log);
        CHECK(code == 1,
              "keeld on the older copy (attempt %d) exited %d, not 1:\n%s",
              attempt + 1, code, log ? log : "");
        CHECK(log != NULL && strstr(log, "refuses to join") != NULL &&
                  strstr(log, "older copy") != NULL &&
                  strstr(log, n1_dir) != NULL &&
                  strstr(log, "--new-store-id") != NULL &&
                  strstr(log, "acknowledged") != NULL &&
                  strstr(log, "EMISMATCH") != NULL &&
                  strstr(log, "keeld: stopped: the cluster refused this "
                              "data directory as an older copy") != NULL &&
                  strstr(log, "joined as incarnation") == NULL,
              "keeld on the older copy (attempt %d) does not say why it "
              "refuses, or joined:\n%s",
              attempt + 1, log ? log : "");
        free(log);
        log = NULL;
    }
    /* Nothing it holds was served meanwhile: the counts stand on n0. */
    for (s = 0; s < SHARDS; s++) {
        char id[16];
        long v;
        counter_of(s, id, sizeof id);
        v = call_counter(&cl[0], 0, id, "get");
        CHECK(v == acked[s], "%s is %ld on n0 after the refusals, %ld "
              "acknowledged", id, v, acked[s]);
    }

    /* With a new store id: joins as a node on another store, and catches
     * up. */
    CHECK(tu_cluster_start_nodev(&fx, 1, port,
                                 (const char *const[]){
                                     "--replicas", "2", "--repl-lag-ms",
                                     "1000", "--new-store-id", NULL}) == 0,
          "n1 did not start on the copy with --new-store-id");
    CHECK(wait_joined(3), "n1 did not join with a new store id");
    CHECK(wait_member_and_settled(),
          "n1 with a new store id did not catch up into every unit");

    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = tu_map_unit(&m, "", s);
        char d0[128], d1[128];
        if (!tu_map_in_sync(&m, u, "n1") || !tu_map_in_sync(&m, u, "n0"))
            continue;
        nsync++;
        tu_cluster_digest(&fx, 0, s, d0, sizeof d0);
        tu_cluster_digest(&fx, 1, s, d1, sizeof d1);
        if (strcmp(d0, d1) != 0) {
            differ++;
            fprintf(stderr,
                    "restore: shard %u, both in sync at epoch %llu, digests "
                    "n0 \"%s\" n1 \"%s\"\n",
                    s, (unsigned long long)u->shard_epoch, d0, d1);
        }
    }
    keel_map_free(&m);
    CHECK(nsync == SHARDS && differ == 0,
          "after catch-up: %d of %d units with both nodes in sync, %d of "
          "them with other digests on n1 than on n0",
          nsync, SHARDS, differ);

    /* n0 dies: every unit is n1's now, and holds what was acknowledged. */
    keel_client_close(cl[0]);
    cl[0] = NULL;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[0]);
    for (s = 0; s < SHARDS; s++) {
        char id[16];
        long v;
        counter_of(s, id, sizeof id);
        v = call_counter(&cl[1], 1, id, "get");
        if (v != acked[s]) {
            lost++;
            fprintf(stderr,
                    "restore: %s (shard %u) is %ld on n1, %ld acknowledged, "
                    "%ld at the copy\n",
                    id, s, v, acked[s], at_copy[s]);
        }
    }
    CHECK(lost == 0,
          "once n0 died, %d of %d counters on n1 (caught up from a restored "
          "copy under a new store id) had lost acknowledged increments",
          lost, SHARDS);
    if (cl[1] != NULL)
        keel_client_close(cl[1]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_restore");
    TCase *tc = tcase_create("cluster_restore");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, a_restored_backup_is_refused_then_catches_up_as_a_new_store);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
