/* Reminders in a cluster (keel_turn_remind, runtime/reminders.c): three
 * keeld nodes, every unit on three replicas, remind_plugin.so loaded. An
 * actor gets a periodic reminder and a one-shot one; then its owner
 * leaves (`keel node drain`: the unit is handed off) or is killed with
 * SIGKILL (the unit fails over to a backup). Once the old owner is gone,
 * the periodic reminder goes on firing on the new owner, which learned it
 * from the unit's index when it took the unit, and the one-shot fires and
 * its committed count is exactly 1. And a node fenced for a while with
 * its session alive fires its reminders again once it serves. Every wait
 * is bounded; the checks are about outcomes, not durations. On a failure
 * the nodes' logs are printed. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clmap.h"
#include "cluster.h"
#include "clplug.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "testutil.h"

static tu_cluster fx;
static char *plugin;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    plugin = tu_clplug_setup(&fx, "clrem", "rm", "remind_plugin.so");
}

static void teardown(void)
{
    tu_clplug_teardown(&fx, plugin);
}

static long count(int i, const char *id, const char *name)
{
    char msg[64], out[32];

    snprintf(msg, sizeof msg, "count %s", name);
    if (tu_clplug_call_keyed(&fx, i, NULL, "rem", id, msg, out,
                             sizeof out) != 0)
        return -1;
    return strtol(out, NULL, 10);
}

/* Polls count through node i until it reaches want, at most 30 s. */
static long wait_count(int i, const char *id, const char *name, long want)
{
    long v = -1;
    int k;

    for (k = 0; k < 300; k++) {
        v = count(i, id, name);
        if (v >= want)
            break;
        tu_sleep_ms(100);
    }
    return v;
}

/* Starts the cluster, sets the reminders of rem/ID through a node that
 * does not own it, and returns the owner's index. */
static int start_and_set(const char *id, int *via)
{
    const char *common[] = {"--load", plugin, "--repl-lag-ms", "1000",
                            NULL};
    char owner[64];
    int k;

    tu_cluster_start_together(&fx, 3, 3, common, NULL);
    tu_cluster_owner_of(&fx, 0, "rem", id, owner, sizeof owner);
    CHECK(owner[0] == 'n' && owner[1] >= '0' && owner[1] <= '2',
          "no owner for rem/%s: '%s'", id, owner);
    k = owner[1] - '0';
    *via = (k + 1) % 3;
    CHECK(tu_clplug_call_keyed(&fx, *via, NULL, "rem", id,
                               "set beat 200 300 b", NULL, 0) == 0,
          "setting beat failed");
    CHECK(tu_clplug_call_keyed(&fx, *via, NULL, "rem", id,
                               "set once 4000 0 hello", NULL, 0) == 0,
          "setting once failed");
    CHECK(wait_count(*via, id, "beat", 1) >= 1, "beat never fired");
    return k;
}

/* After the owner is gone: beat goes on, once fires exactly once. */
static void check_after(int via, const char *id)
{
    long before, after;
    char last[64];

    before = count(via, id, "beat");
    CHECK(before >= 1, "reading beat failed");
    after = wait_count(via, id, "beat", before + 3);
    CHECK(after >= before + 3,
          "beat fired %ld times after the owner left, not 3", after - before);
    CHECK(wait_count(via, id, "once", 1) == 1, "once did not fire");
    tu_sleep_ms(600);
    CHECK(count(via, id, "once") == 1, "once fired more than once");
    CHECK(tu_clplug_call_keyed(&fx, via, NULL, "rem", id, "last", last,
                               sizeof last) == 0,
          "reading last failed");
    CHECK(strcmp(last, "beat:b") == 0 || strcmp(last, "once:hello") == 0,
          "last firing '%s'", last);
}

START_TEST(reminders_fire_after_a_drain)
{
    char *out = NULL, *err = NULL;
    int via, k = start_and_set("d1", &via);
    char name[8];

    snprintf(name, sizeof name, "n%d", k);
    CHECK(tu_keel(fx.nodes[via].addr, &out, &err, "node", "drain", name,
                  NULL) == 0,
          "keel node drain %s: %s", name, err != NULL ? err : "");
    free(out);
    free(err);
    /* Signal 0: only wait for it to exit by itself. */
    CHECK(tu_keeld_stop(&fx.nodes[k], 0) == 0, "%s did not leave", name);
    tu_keeld_free(&fx.nodes[k]);
    check_after(via, "d1");
}
END_TEST

START_TEST(reminders_fire_after_a_failover)
{
    int via, k = start_and_set("f1", &via);

    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[k], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[k]);
    check_after(via, "f1");
}
END_TEST

/* A node fenced for longer than the reminders' looks at a unit not served
 * (40, 100 ms apart) while its session lives: its ZooKeeper server is
 * stopped for 16 s under 16 s sessions and started again on its data, so
 * the sessions come back and the node keeps its units; it fences T/2
 * after losing the connection and serves again once it has reconnected.
 * The periodic reminder must go on firing then. Before, the unit was
 * forgotten while the node was fenced, and nothing loaded it again: the
 * unit was never taken anew. */
START_TEST(reminders_fire_after_a_long_fence)
{
    const char *common[] = {"--load", plugin, NULL};
    tu_zk suite;
    long acquired, fenced, before, after;
    const char *why;

    CHECK(tu_cluster_own_zk(&fx, &suite, 16000) == 0,
          "ZooKeeper (tickTime 2 s) did not start");
    tu_cluster_start_together(&fx, 1, 1, common, NULL);
    CHECK(tu_clplug_call_keyed(&fx, 0, NULL, "rem", "z1",
                               "set beat 200 300 b", NULL, 0) == 0,
          "setting beat failed");
    CHECK(wait_count(0, "z1", "beat", 1) >= 1, "beat never fired");
    CHECK(tu_cluster_zk_outage(&fx, 0, 16000, &acquired, &fenced) == 0,
          "the ZooKeeper outage failed");
    before = wait_count(0, "z1", "beat", 1);
    CHECK(before >= 1, "the node does not serve after the fence");
    why = tu_cluster_outage_fenced(&fx, 0, acquired, fenced);
    CHECK(why == NULL, "%s: the test proves nothing", why);
    after = wait_count(0, "z1", "beat", before + 3);
    CHECK(after >= before + 3,
          "beat fired %ld times in 30 s after the fence, not 3",
          after - before);
    tu_cluster_own_zk_end(&fx, &suite);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_reminders");
    TCase *tc = tcase_create("cluster_reminders");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, reminders_fire_after_a_drain);
    tcase_add_test(tc, reminders_fire_after_a_failover);
    tcase_add_test(tc, reminders_fire_after_a_long_fence);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
