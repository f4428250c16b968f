/* A primary whose own commit fails after its writes left for its backups
 * (they leave when the batch is flushed, beside the primary's commit):
 * real ZooKeeper, three keeld with --replicas 3, and a file size limit on
 * the primary standing in for its full disk. The put that was refused
 * with ENOSPC must not be kept by the backups that applied it: before its
 * reply leaves they are out of the in-sync set, and they come back from a
 * snapshot of the primary. So after the primary dies and a backup is
 * promoted, the refused put is still absent, every acknowledged one is
 * there, and the replicas in sync agree. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
#define VLEN 8192
#define MAXPUT 1500

static tu_cluster fx;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    tu_cluster_setup(&fx, "clrfail", "rf");
    fx.shards = SHARDS;
    fx.session_ms = 4000;
}

static void teardown(void)
{
    tu_cluster_teardown(&fx, SIGKILL);
}

/* The value of put i: VLEN bytes that name i. */
static void make_value(char *v, int i)
{
    size_t k;

    for (k = 0; k < VLEN; k++)
        v[k] = (char)('a' + (i * 7 + (int)k) % 26);
}

static int put(keel_client *c, const char *id, int i, char **reply)
{
    char *m = malloc(32 + VLEN);
    int n, rc;

    ck_assert_ptr_nonnull(m);
    n = sprintf(m, "put k%05d ", i);
    make_value(m + n, i);
    rc = keel_client_call(c, KEEL_FRAME_CALL, "kv", id, strlen(id), m,
                          (size_t)n + VLEN, reply, NULL);
    free(m);
    return rc;
}

/* get k<i> of actor id through c: 0 with the value checked, or the
 * error. Retries transport errors and EUNAVAIL (a failover under way)
 * for up to 20 s, reconnecting to node `via`. */
static int get(keel_client **c, int via, const char *id, int i)
{
    char msg[32], *reply = NULL, want[VLEN];
    size_t rlen = 0;
    double deadline = tu_now_s() + 20;
    int rc = KEEL_EUNAVAIL;

    snprintf(msg, sizeof msg, "get k%05d", i);
    while (tu_now_s() < deadline) {
        if (*c == NULL &&
            keel_client_connect(fx.nodes[via].addr, CLIENT_MS, c) != 0) {
            *c = NULL;
            tu_sleep_ms(100);
            continue;
        }
        rc = keel_client_call(*c, KEEL_FRAME_CALL, "kv", id, strlen(id), msg,
                              strlen(msg), &reply, &rlen);
        if (rc == 0 || rc == KEEL_ENOTFOUND)
            break;
        free(reply);
        reply = NULL;
        if (rc == KEEL_ECONN || rc == KEEL_ENOTSENT || rc == KEEL_ETIMEDOUT) {
            keel_client_close(*c);
            *c = NULL;
        }
        tu_sleep_ms(100);
    }
    if (rc == 0) {
        make_value(want, i);
        CHECK(rlen == VLEN && memcmp(reply, want, VLEN) == 0,
              "kv %s k%05d: %zu bytes, not the value written", id, i, rlen);
    }
    free(reply);
    return rc;
}

static void digest_via(int i, uint32_t shard, char *out, size_t cap)
{
    char num[16], *o = NULL, *e = NULL;

    snprintf(num, sizeof num, "%u", shard);
    out[0] = '\0';
    if (tu_keel(fx.nodes[i].addr, &o, &e, "digest", "(default)", num, NULL) ==
            0 &&
        o != NULL)
        snprintf(out, cap, "%s", o);
    free(o);
    free(e);
}

START_TEST(a_refused_write_is_not_kept_by_the_backups)
{
    static unsigned char acked[MAXPUT];
    const char *common[] = {"--repl-lag-ms", "1000", NULL};
    keel_client *c = NULL;
    keel_shard_map m;
    char id[16] = "", owner[64], d[3][128];
    int i, j, first_fail = -1, last_ok = -1, nacked = 0, rc;
    uint32_t shard;
    char *reply = NULL;

    memset(acked, 0, sizeof acked);
    /* n0's data file may not grow past 4 MiB: its disk is full then. */
    fx.nodes[0].fsize_limit = 4L << 20;
    tu_cluster_start_together(&fx, 3, 3, common, NULL);
    for (j = 0; j < 64 && id[0] == '\0'; j++) {
        char cand[16];
        snprintf(cand, sizeof cand, "disk%d", j);
        tu_cluster_owner_of(&fx, 0, "kv", cand, owner, sizeof owner);
        if (strcmp(owner, "n0") == 0)
            snprintf(id, sizeof id, "%s", cand);
    }
    CHECK(id[0] != '\0', "no kv actor owned by n0");
    shard = keel_shard_of("kv", id, strlen(id), SHARDS);

    CHECK(keel_client_connect(fx.nodes[0].addr, CLIENT_MS, &c) == 0,
          "cannot connect to n0");
    for (i = 0; i < MAXPUT && first_fail < 0; i++) {
        rc = put(c, id, i, &reply);
        if (rc == 0) {
            acked[i] = 1;
            nacked++;
            last_ok = i;
        } else {
            CHECK(rc == KEEL_ENOSPC, "put %d: %s (%s), want OK or ENOSPC", i,
                  keel_err_name(rc), reply ? reply : "");
            first_fail = i;
            fprintf(stderr, "repl fail: put %d refused: %s\n", i, reply);
        }
        free(reply);
        reply = NULL;
    }
    keel_client_close(c);
    c = NULL;
    CHECK(first_fail >= 0, "no ENOSPC after %d puts of 8 KiB on n0", i);
    CHECK(nacked > 0, "no put acknowledged before n0's disk was full");

    /* The backups that may hold the refused put were dropped before its
     * reply left; they catch up from n0's store and are in sync again. */
    CHECK(tu_map_wait_settled(&fx, 3),
          "the backups of shard %u did not come back in sync", shard);
    CHECK(tu_map_read(&fx, &m) == 0, "no map");
    for (i = 0; i < 3; i++) {
        char name[4];
        snprintf(name, sizeof name, "n%d", i);
        d[i][0] = '\0';
        if (tu_map_in_sync(&m, tu_map_unit(&m, "", shard), name))
            digest_via(i, shard, d[i], sizeof d[i]);
    }
    keel_map_free(&m);
    for (i = 0; i < 3; i++)
        for (j = 0; j < 3; j++)
            CHECK(d[i][0] == '\0' || d[j][0] == '\0' ||
                      strcmp(d[i], d[j]) == 0,
                  "shard %u differs between replicas in sync: n%d '%s', "
                  "n%d '%s'",
                  shard, i, d[i], j, d[j]);

    /* n0 dies: a backup is promoted. It has every acknowledged put and
     * not the refused one. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[0]);
    rc = get(&c, 1, id, first_fail);
    CHECK(rc == KEEL_ENOTFOUND,
          "the put refused with ENOSPC on n0 is %s after the failover",
          rc == 0 ? "there" : keel_err_name(rc));
    CHECK(get(&c, 1, id, 0) == 0, "put 0 (acknowledged) is missing");
    CHECK(get(&c, 2, id, last_ok) == 0, "put %d (acknowledged) is missing",
          last_ok);
    keel_client_close(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_repl_fail");
    TCase *tc = tcase_create("cluster_repl_fail");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, a_refused_write_is_not_kept_by_the_backups);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
