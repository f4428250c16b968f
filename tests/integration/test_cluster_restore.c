/* A node started again on a data directory restored from an older copy
 * of its own (docs/operations.md, "Backups": copy the directory, restore
 * a copy into an empty directory), end to end with a real ZooKeeper and
 * two keeld (--replicas 2, 16 shards, one counter per unit). Two
 * increments per counter; n1 killed, its directory copied, n1 started
 * again on it; three more increments per counter acknowledged with n1
 * in sync everywhere; n1 killed again, its directory
 * replaced by the copy (the same store identity, older content) and
 * started again; nothing is written meanwhile. Then n0 is killed.
 * Checked: n1 is not counted in sync on that older content (as a backup,
 * or as the primary of the units it gets back at their epoch), so that
 * every acknowledged count is still there once n0 is gone.
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
#define CLIENT_MS 20000

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
    char path[512], *text;

    snprintf(path, sizeof path, "%s/zk.pid", fx.zk.dir);
    if ((text = tu_read_file(path)) != NULL && atol(text) > 0)
        kill((pid_t)atol(text), SIGCONT);
    free(text);
    tu_cluster_teardown(&fx, SIGKILL);
}

static void counter_of(uint32_t s, char *id, size_t cap)
{
    int k;

    for (k = 0; k < 100000; k++) {
        snprintf(id, cap, "q%d", k);
        if (keel_shard_of("counter", id, strlen(id), SHARDS) == s)
            return;
    }
    ck_abort_msg("no counter id falls in shard %u", s);
}

static long call_counter(keel_client **c, int i, const char *id,
                         const char *op)
{
    uint8_t key[KEEL_REQUEST_KEY_LEN];
    double deadline = tu_now_s() + 40;
    long v = -1;

    ck_assert_int_eq(keel_client_new_key(key), 0);
    while (v < 0 && tu_now_s() < deadline) {
        char *reply = NULL;
        int rc;
        if (*c == NULL &&
            keel_client_connect(fx.nodes[i].addr, CLIENT_MS, c) != 0) {
            *c = NULL;
            tu_sleep_ms(100);
            continue;
        }
        rc = keel_client_call_keyed(*c, KEEL_FRAME_CALL, key, "counter", id,
                                    strlen(id), op, strlen(op), &reply,
                                    NULL);
        if (rc == 0) {
            v = atol(reply);
        } else {
            if (rc == KEEL_ECONN || rc == KEEL_ENOTSENT ||
                rc == KEEL_ETIMEDOUT) {
                keel_client_close(*c);
                *c = NULL;
            }
            tu_sleep_ms(100);
        }
        free(reply);
    }
    return v;
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

START_TEST(a_restored_backup_is_not_counted_in_sync)
{
    keel_client *cl[2] = {NULL, NULL};
    long acked[SHARDS] = {0}, at_copy[SHARDS] = {0};
    int backed[SHARDS] = {0}, led[SHARDS] = {0}, nbacked = 0, lost = 0;
    int lost_led = 0, differ = 0;
    int round;
    keel_shard_map m;
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
     * store identity), and back on it. Nothing is written meanwhile. */
    keel_client_close(cl[1]);
    cl[1] = NULL;
    restart_n1(put_copy_back);
    CHECK(wait_joined(3), "n1 did not join again on the older copy");
    CHECK(wait_member_and_settled(),
          "the cluster did not settle after n1's restore");

    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (s = 0; s < SHARDS; s++) {
        const keel_map_unit *u = tu_map_unit(&m, "", s);
        const char *p =
            keel_map_primary(&m, (uint32_t)keel_map_cap_index(&m, ""), s);
        if (p != NULL && strcmp(p, "n1") == 0) {
            /* Led by n1 again: n0's copy should still hold the writes. */
            char d0[128], d1[128];
            led[s] = 1;
            tu_cluster_digest(&fx, 0, s, d0, sizeof d0);
            tu_cluster_digest(&fx, 1, s, d1, sizeof d1);
            fprintf(stderr,
                    "restore: shard %u led by n1 at epoch %llu, n0 %s; "
                    "digests n0 \"%s\" n1 \"%s\"\n",
                    s, (unsigned long long)u->shard_epoch,
                    tu_map_in_sync(&m, u, "n0") ? "in sync" : "out of sync",
                    d0, d1);
        }
        if (p != NULL && strcmp(p, "n0") == 0 && tu_map_in_sync(&m, u, "n1")) {
            char d0[128], d1[128];
            backed[s] = 1;
            nbacked++;
            tu_cluster_digest(&fx, 0, s, d0, sizeof d0);
            tu_cluster_digest(&fx, 1, s, d1, sizeof d1);
            fprintf(stderr,
                    "restore: shard %u led by n0 at epoch %llu, n1 in sync; "
                    "digests n0 \"%s\" n1 \"%s\"%s\n",
                    s, (unsigned long long)u->shard_epoch, d0, d1,
                    strcmp(d0, d1) != 0 ? " DIFFER" : "");
            differ += strcmp(d0, d1) != 0;
        }
    }
    keel_map_free(&m);

    /* n0 dies: every unit is n1's now, and must hold what was
     * acknowledged. */
    keel_client_close(cl[0]);
    cl[0] = NULL;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[0]);
    for (s = 0; s < SHARDS; s++) {
        char id[16];
        long v;
        counter_of(s, id, sizeof id);
        v = call_counter(&cl[1], 1, id, "get");
        fprintf(stderr,
                "restore: %s (shard %u%s) is %ld on n1, %ld acknowledged, %ld "
                "at the copy\n",
                id, s, backed[s] ? ", n1 in sync under n0 after the restore"
                                 : "",
                v, acked[s], at_copy[s]);
        if (v != acked[s]) {
            lost++;
            lost_led += led[s];
        }
    }
    CHECK(differ == 0 && lost == 0,
          "n1 back on an older copy of its directory (same store id): it was "
          "in sync as a backup in %d units, %d of them with another digest "
          "than their primary's; once n0 died, %d of %d counters had lost "
          "acknowledged increments, %d of them in units n1 led again at "
          "their epoch after the restore, serving its older copy (which it "
          "then sent n0, in sync with the newer one, as a snapshot)",
          nbacked, differ, lost, SHARDS, lost_led);
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
    tcase_add_test(tc, a_restored_backup_is_not_counted_in_sync);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
