/* A backup joins a unit's in-sync set only holding every write its
 * primary acknowledged (docs/cluster.md, "Catch-up"): real ZooKeeper, two
 * keeld with --replicas 2.
 *
 * The primary reads the snapshot for a backup that fell out of sync, and
 * the unit's later writes are answered without waiting for that backup
 * until the primary asks the controller to add it. A write answered in
 * that window must be acknowledged by the backup before the request
 * leaves: else the map can put the backup in sync while it still lacks
 * the write, and a failover to it loses the write. The window is held
 * open by stopping the backup (SIGSTOP) while its snapshot is on its way,
 * and the write is kept off the backup's disk by a file size limit (its
 * disk is full), so that a backup that joined too early visibly lacks it
 * once it is promoted. */
#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "cluster.h"
#include "clmap.h"
#include "coordinator/shardmap.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define SHARDS 16
#define CLIENT_MS 20000
#define BIG (900u << 10) /* the write the full disk refuses */
#define SLACK (128L << 10) /* room left on it: the small writes fit */

static tu_cluster fx;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    tu_cluster_setup(&fx, "clrjoin", "rj");
    fx.shards = SHARDS;
    fx.session_ms = 4000;
}

static void teardown(void)
{
    tu_cluster_teardown(&fx, SIGKILL);
}

/* The value of key k<i>: len bytes that name i. */
static void make_value(char *v, int i, size_t len)
{
    size_t k;

    for (k = 0; k < len; k++)
        v[k] = (char)('a' + (i * 7 + (int)k) % 26);
}

static int put(keel_client *c, const char *id, int i, size_t len)
{
    char *m = malloc(32 + len), *reply = NULL;
    int n, rc;

    ck_assert_ptr_nonnull(m);
    n = sprintf(m, "put k%05d ", i);
    make_value(m + n, i, len);
    rc = keel_client_call(c, KEEL_FRAME_CALL, "kv", id, strlen(id), m,
                          (size_t)n + len, &reply, NULL);
    if (rc != 0)
        fprintf(stderr, "repl join: put k%05d: %s (%s)\n", i,
                keel_err_name(rc), reply ? reply : "");
    free(reply);
    free(m);
    return rc;
}

/* get k<i> of actor id through node `via`: 0 with the value checked, or
 * the error. Retries transport errors and EUNAVAIL (a failover under way)
 * for up to 40 s. */
static int get(int via, const char *id, int i, size_t len)
{
    keel_client *c = NULL;
    char msg[32], *reply = NULL, *want;
    size_t rlen = 0;
    double deadline = tu_now_s() + 40;
    int rc = KEEL_EUNAVAIL;

    snprintf(msg, sizeof msg, "get k%05d", i);
    while (tu_now_s() < deadline) {
        if (c == NULL &&
            keel_client_connect(fx.nodes[via].addr, CLIENT_MS, &c) != 0) {
            c = NULL;
            tu_sleep_ms(100);
            continue;
        }
        rc = keel_client_call(c, KEEL_FRAME_CALL, "kv", id, strlen(id), msg,
                              strlen(msg), &reply, &rlen);
        if (rc == 0 || rc == KEEL_ENOTFOUND)
            break;
        free(reply);
        reply = NULL;
        if (rc == KEEL_ECONN || rc == KEEL_ENOTSENT || rc == KEEL_ETIMEDOUT) {
            keel_client_close(c);
            c = NULL;
        }
        tu_sleep_ms(100);
    }
    if (c != NULL)
        keel_client_close(c);
    if (rc == 0) {
        want = malloc(len);
        ck_assert_ptr_nonnull(want);
        make_value(want, i, len);
        CHECK(rlen == len && memcmp(reply, want, len) == 0,
              "kv %s k%05d: %zu bytes, not the value written", id, i, rlen);
        free(want);
    }
    free(reply);
    return rc;
}

/* The size of the largest file in node i's data directory, or -1. */
static long largest_file(int i)
{
    char dir[512], path[1024];
    struct dirent *e;
    struct stat st;
    long most = -1;
    DIR *d;

    snprintf(dir, sizeof dir, "%s/n%d", fx.dir, i);
    if ((d = opendir(dir)) == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
            (long)st.st_size > most)
            most = (long)st.st_size;
    }
    closedir(d);
    return most;
}

/* The roles: P, the controller's node, leads the unit; B backs it up.
 * The controller must keep running while B is stopped. */
static int P, B;
static char pname[8], bname[8];

/* Whether the map has B in sync in unit `shard`, P its primary at
 * `epoch`: 1, 0, or -1 when P is no longer that. */
static int b_in_sync(uint32_t shard, uint64_t epoch)
{
    keel_shard_map m;
    const keel_map_unit *u;
    const char *p;
    int ci, in = -1;

    if (tu_map_read(&fx, &m) != 0)
        return 0;
    ci = keel_map_cap_index(&m, "");
    u = tu_map_unit(&m, "", shard);
    p = ci >= 0 ? keel_map_primary(&m, (uint32_t)ci, shard) : NULL;
    if (u != NULL && u->shard_epoch == epoch && p != NULL &&
        strcmp(p, pname) == 0)
        in = tu_map_in_sync(&m, u, bname);
    keel_map_free(&m);
    return in;
}

/* Waits at most ms for B to be in sync in the unit (P primary at
 * epoch); 1 when it is. */
static int wait_in_sync(uint32_t shard, uint64_t epoch, int ms)
{
    double deadline = tu_now_s() + ms / 1000.0;
    int in;

    do {
        if ((in = b_in_sync(shard, epoch)) != 0)
            return in == 1;
        tu_sleep_ms(20);
    } while (tu_now_s() < deadline);
    return 0;
}

/* The index of the node `keel nodes` through node 0 names controller, or
 * -1; waits (bounded) for one. */
static int controller_node(void)
{
    int tries, at = -1;

    for (tries = 0; tries < 100 && at < 0; tries++) {
        char *out = NULL, *err = NULL, name[16] = "";
        const char *p;
        if (tu_keel(fx.nodes[0].addr, &out, &err, "nodes", NULL) == 0 &&
            out != NULL && (p = strstr(out, "\ncontroller ")) != NULL &&
            sscanf(p, "\ncontroller %15s", name) == 1 && name[0] == 'n')
            at = atoi(name + 1);
        free(out);
        free(err);
        if (at < 0)
            tu_sleep_ms(50);
    }
    return at;
}

START_TEST(a_backup_joins_only_with_every_acknowledged_write)
{
    const char *common[] = {"--repl-lag-ms", "1500", NULL};
    struct rlimit lim = {RLIM_INFINITY, RLIM_INFINITY};
    char id[16] = "", fill[16] = "", owner[64];
    keel_client *c = NULL;
    keel_shard_map m;
    uint64_t epoch;
    uint32_t shard;
    long base, n, size;
    int j, early, in;

    /* Under a file size limit (none in effect: 1 GiB), a store writes
     * through its file, where a lower limit set later makes a growing
     * commit fail. Which node will be the backup is known later. */
    fx.nodes[0].fsize_limit = 1L << 30;
    fx.nodes[1].fsize_limit = 1L << 30;
    tu_cluster_start_together(&fx, 2, 2, common, NULL);
    P = controller_node();
    CHECK(P == 0 || P == 1, "no controller");
    B = 1 - P;
    snprintf(pname, sizeof pname, "n%d", P);
    snprintf(bname, sizeof bname, "n%d", B);
    /* Two actors P owns, in two units. */
    for (j = 0; j < 64 && fill[0] == '\0'; j++) {
        char cand[16];
        snprintf(cand, sizeof cand, "join%d", j);
        tu_cluster_owner_of(&fx, P, "kv", cand, owner, sizeof owner);
        if (strcmp(owner, pname) != 0)
            continue;
        if (id[0] == '\0')
            snprintf(id, sizeof id, "%s", cand);
        else if (keel_shard_of("kv", cand, strlen(cand), SHARDS) !=
                 keel_shard_of("kv", id, strlen(id), SHARDS))
            snprintf(fill, sizeof fill, "%s", cand);
    }
    CHECK(fill[0] != '\0', "no two kv actors owned by %s", pname);
    shard = keel_shard_of("kv", id, strlen(id), SHARDS);
    CHECK(tu_map_wait_settled(&fx, 2), "the replicas did not settle");
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    epoch = tu_map_unit(&m, "", shard)->shard_epoch;
    keel_map_free(&m);
    CHECK(keel_client_connect(fx.nodes[P].addr, CLIENT_MS, &c) == 0,
          "cannot connect to %s", pname);
    CHECK(put(c, id, 0, 100) == 0, "put k00000 refused");
    /* Two large puts in another unit fill B's data file beyond its log
     * and checkpoint files: the disk B will find full is the data
     * file's, and the unit's snapshot stays small. */
    CHECK(put(c, fill, 3, BIG) == 0, "put k00003 refused");
    CHECK(put(c, fill, 4, BIG) == 0, "put k00004 refused");
    base = tu_keel_stat(fx.nodes[P].addr, "repl_catchups");
    CHECK(base >= 0, "no repl_catchups from %s", pname);

    /* B stops (for less than its session): the next write waits for it
     * for the lag, then P has it dropped and answers. */
    ck_assert_int_eq(kill(fx.nodes[B].pid, SIGSTOP), 0);
    CHECK(put(c, id, 1, 100) == 0, "put k00001 refused");
    /* P catches B up: the snapshot leaves (into B's socket). */
    for (j = 0;
         j < 100 &&
         (n = tu_keel_stat(fx.nodes[P].addr, "repl_catchups")) <= base;
         j++)
        tu_sleep_ms(10);
    CHECK(n > base, "%s sends %s no snapshot", pname, bname);

    /* B's disk fills: what its files hold, and a little. The next write,
     * numbered after the snapshot, is answered by P alone (B is not in
     * sync and not asked for yet) and can never be stored on B. */
    size = largest_file(B);
    CHECK(size > 0, "no files in %s's data directory", bname);
    lim.rlim_cur = (rlim_t)size + SLACK;
    ck_assert_int_eq(prlimit(fx.nodes[B].pid, RLIMIT_FSIZE, &lim, NULL), 0);
    CHECK(put(c, id, 2, BIG) == 0, "put k00002 refused");
    keel_client_close(c);
    ck_assert_int_eq(kill(fx.nodes[B].pid, SIGCONT), 0);

    /* B stores its snapshot and acknowledges it; k00002 fails there. B
     * must not join the in-sync set without it. */
    early = wait_in_sync(shard, epoch, 1000);
    fprintf(stderr, "repl join: %s %s the in-sync set on a full disk\n",
            bname, early ? "joined" : "stayed out of");
    if (!early) {
        /* Room again: B stores k00002, then joins. */
        lim.rlim_cur = RLIM_INFINITY;
        ck_assert_int_eq(
            prlimit(fx.nodes[B].pid, RLIMIT_FSIZE, &lim, NULL), 0);
        in = wait_in_sync(shard, epoch, 30000);
        CHECK(in, "%s did not join the in-sync set of shard %u", bname,
              shard);
    }

    /* P dies: B, in sync, is promoted and has every acknowledged put. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[P], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[P]);
    CHECK(get(B, id, 2, BIG) == 0,
          "put k00002, acknowledged by %s, is missing on %s promoted (%s "
          "joined the in-sync set %s)",
          pname, bname, bname,
          early ? "while its disk refused that put" : "once it stored it");
    CHECK(get(B, id, 1, 100) == 0, "put k00001 is missing on %s", bname);
    CHECK(get(B, id, 0, 100) == 0, "put k00000 is missing on %s", bname);
    CHECK(get(B, fill, 4, BIG) == 0, "put k00004 is missing on %s", bname);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_repl_join");
    TCase *tc = tcase_create("cluster_repl_join");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, a_backup_joins_only_with_every_acknowledged_write);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
