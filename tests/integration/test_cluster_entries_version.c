/* The version of an actor that holds entries but no state blob, in a
 * cluster (docs/protocol.md, "State reads"): three keeld nodes with
 * follow_plugin_feed.so. feed/e writes an entry only and is at version
 * 1; its unit then changes hands, by a failover (every unit on three
 * replicas, the owner killed with SIGKILL, a backup promoted) or by a
 * handoff (one replica, the owner drained). On the new owner it is still
 * at 1, and its first state blob takes it to 2, as on the old one. Every
 * wait is bounded; on a failure the nodes' logs are printed. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clmap.h"
#include "clplug.h"
#include "cluster.h"
#include "keel.h"
#include "proc.h"
#include "testutil.h"

static tu_cluster fx;
static char *plugin;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    plugin = tu_clplug_setup(&fx, "clentver", "ev", "follow_plugin_feed.so");
}

static void teardown(void)
{
    tu_clplug_teardown(&fx, plugin);
}

/* `keel state feed e` through node i must begin with want. */
static void expect_state(int i, const char *want)
{
    char *out;

    CHECK(tu_clplug_keel(&fx, i, &out,
                         "state", "feed", "e", NULL, NULL) == 0 &&
              strncmp(out, want, strlen(want)) == 0,
          "state of feed/e via n%d: %s (want %s)", i, out, want);
    free(out);
}

static void feed(int i, const char *msg)
{
    char *out;

    CHECK(tu_clplug_keel(&fx, i, &out, "call", "feed", "e", msg, NULL) == 0,
          "%s via n%d: %s", msg, i, out);
    free(out);
}

static int node_of(const char *owner)
{
    CHECK(owner[0] == 'n' && owner[1] >= '0' && owner[1] <= '2' &&
              owner[2] == '\0',
          "no owner: '%s'", owner);
    return owner[1] - '0';
}

/* The owner of feed/e as node via sees it once it is not node old. */
static int new_owner(int via, int old)
{
    char owner[64];
    int tries, k = -1;

    for (tries = 0; tries < 150; tries++) {
        tu_cluster_owner_of(&fx, via, "feed", "e", owner, sizeof owner);
        if (owner[0] == 'n' && owner[1] >= '0' && owner[1] <= '2' &&
            owner[2] == '\0' && owner[1] - '0' != old) {
            k = owner[1] - '0';
            break;
        }
        tu_sleep_ms(200);
    }
    CHECK(k >= 0, "feed/e has no owner other than n%d", old);
    return k;
}

START_TEST(entries_only_after_a_failover)
{
    const char *common[] = {"--load", plugin, "--repl-lag-ms", "1000", NULL};
    char owner[64];
    int k, via;

    tu_cluster_start_together(&fx, 3, 3, common, NULL);
    tu_cluster_owner_of(&fx, 0, "feed", "e", owner, sizeof owner);
    k = node_of(owner);
    via = (k + 1) % 3;
    feed(via, "put k");
    expect_state(via, "version 1\nentries 1\nstate none\n");

    /* Its owner dies; a backup takes the unit with the entry in its
     * copy, and the actor loads there at the version it had. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[k], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[k]);
    CHECK(new_owner(via, k) != k, "no failover");
    expect_state(via, "version 1\nentries 1\nstate none\n");
    feed(via, "state s1");
    expect_state(via, "version 2\nentries 1\nstate 2 bytes\ns1\n");
}
END_TEST

START_TEST(entries_only_after_a_handoff)
{
    const char *common[] = {"--load", plugin, NULL};
    char owner[64], name[8], *out = NULL, *err = NULL;
    int k, via, rc;

    tu_cluster_start_together(&fx, 3, 1, common, NULL);
    tu_cluster_owner_of(&fx, 0, "feed", "e", owner, sizeof owner);
    k = node_of(owner);
    via = (k + 1) % 3;
    feed(via, "put k");
    expect_state(via, "version 1\nentries 1\nstate none\n");

    /* The owner is drained: the unit is streamed to another node, which
     * loads the actor at the version it had. */
    snprintf(name, sizeof name, "n%d", k);
    rc = tu_keel(fx.nodes[via].addr, &out, &err, "node", "drain", name,
                 NULL);
    CHECK(rc == 0, "node drain %s: %s", name, err);
    free(out);
    free(err);
    CHECK(tu_keeld_stop(&fx.nodes[k], SIGTERM) == 0,
          "the drained node did not exit cleanly");
    tu_keeld_free(&fx.nodes[k]);
    CHECK(new_owner(via, k) != k, "no handoff");
    expect_state(via, "version 1\nentries 1\nstate none\n");
    feed(via, "state s1");
    expect_state(via, "version 2\nentries 1\nstate 2 bytes\ns1\n");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_entries_version");
    TCase *tc = tcase_create("cluster_entries_version");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, entries_only_after_a_failover);
    tcase_add_test(tc, entries_only_after_a_handoff);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
