/* Dead letters in a cluster (runtime/deadletters.c): three keeld nodes,
 * every unit on three replicas, dead_plugin.so loaded, --dead-letter-after
 * 2. An outbox message that svc/b keeps refusing becomes a dead letter of
 * its sender svc/a; `keel dead-letters` through a node that does not own
 * svc/a lists it (the request is forwarded to the owner). The owner of
 * svc/a is killed with SIGKILL: once a backup is promoted, the dead
 * letter is still listed (it was replicated with svc/a's records), and
 * after svc/b is fixed, `keel dead-letters retry` through another node
 * delivers it exactly once. Every wait is bounded; the checks are about
 * outcomes. On a failure the nodes' logs are printed. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    plugin = tu_clplug_setup(&fx, "cldead", "dl", "dead_plugin.so");
}

static void teardown(void)
{
    tu_clplug_teardown(&fx, plugin);
}

/* Polls the dead letters of svc/ID through node i until HELD is want. */
static char *wait_dead(int i, const char *id, int want)
{
    char *out = NULL, line[32];
    int k;

    snprintf(line, sizeof line, "dead-letters %d\n", want);
    for (k = 0; k < 100; k++) {
        free(out);
        if (tu_clplug_keel(&fx, i, &out,
                           "dead-letters", "svc", id, NULL, NULL) == 0 &&
            strstr(out, line) != NULL)
            return out;
        tu_sleep_ms(200);
    }
    CHECK(0, "dead letters of svc/%s via n%d: %s", id, i, out);
    return NULL;
}

/* Polls svc/b through node i, at most tries times 200 ms apart, until it
 * has handled the one message "work 7": 1 then, 0 if it never did. */
static int wait_b_done(int i, int tries)
{
    char *out = NULL;
    int k, done = 0;

    for (k = 0; k < tries && !done; k++) {
        if (k > 0)
            tu_sleep_ms(200);
        CHECK(tu_clplug_keel(&fx, i, &out, "call", "svc", "b", "get",
                             NULL) == 0,
              "get: %s", out);
        done = strcmp(out, "done 1 last 7\n") == 0;
        free(out);
        out = NULL;
    }
    return done;
}

static int node_of(const char *owner)
{
    CHECK(owner[0] == 'n' && owner[1] >= '0' && owner[1] <= '2' &&
              owner[2] == '\0',
          "no owner: '%s'", owner);
    return owner[1] - '0';
}

START_TEST(dead_letters_survive_a_failover)
{
    const char *common[] = {"--load", plugin, "--dead-letter-after", "2",
                            "--repl-lag-ms", "1000", NULL};
    char owner[64], *out;
    int k, via, other;

    tu_cluster_start_together(&fx, 3, 3, common, NULL);
    tu_cluster_owner_of(&fx, 0, "svc", "a", owner, sizeof owner);
    k = node_of(owner);
    via = (k + 1) % 3;
    other = (k + 2) % 3;

    CHECK(tu_clplug_keel(&fx, via, &out,
                         "call", "svc", "b", "break", NULL) == 0,
          "break: %s", out);
    free(out);
    CHECK(tu_clplug_keel(&fx, via, &out, "call", "svc", "a", "send b work 7",
                         NULL) == 0,
          "send: %s", out);
    free(out);
    out = wait_dead(via, "a", 1);
    CHECK(strstr(out, "1 outbox to svc/b error EHANDLER attempts 2 ") !=
                  NULL &&
              strstr(out, "msg \"work 7\": broken\n") != NULL,
          "listing via n%d: %s", via, out);
    free(out);

    /* The owner of svc/a dies; a backup takes its unit with the dead
     * letter in its copy. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[k], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[k]);
    out = wait_dead(other, "a", 1);
    CHECK(strstr(out, "1 outbox to svc/b error EHANDLER attempts 2 ") !=
              NULL,
          "listing after the failover: %s", out);
    free(out);

    CHECK(tu_clplug_keel(&fx, other, &out,
                         "call", "svc", "b", "fix", NULL) == 0,
          "fix: %s", out);
    free(out);
    CHECK(tu_clplug_keel(&fx, via, &out,
                         "dead-letters", "retry", "svc", "a", "1") == 0,
          "retry: %s", out);
    CHECK(strcmp(out, "retried 1\n") == 0, "retry said: %s", out);
    free(out);
    CHECK(wait_b_done(via, 100), "the retried message never arrived");
    out = wait_dead(other, "a", 0);
    free(out);
    tu_sleep_ms(500);
    CHECK(tu_clplug_keel(&fx, other, &out,
                         "call", "svc", "b", "get", NULL) == 0 &&
              strcmp(out, "done 1 last 7\n") == 0,
          "b after the retry: %s", out); /* once */
    free(out);
}
END_TEST

/* A receiver whose handler itself returns KEEL_ENOTYPE (here: it sends
 * on to a type nobody registers and returns keel_turn_send's error) has
 * refused the message, as with any other code: its node registers the
 * type (the message ran its handler). The sender's outbox makes it a
 * dead letter, as a standalone node does, and lets its next message go;
 * it must not take the answer for a node without the type and send it
 * again for ever. One node, every unit on it. */
START_TEST(a_handlers_enotype_is_a_refusal)
{
    const char *common[] = {"--load", plugin, "--dead-letter-after", "2",
                            NULL};
    char *out;

    tu_cluster_start_together(&fx, 1, 1, common, NULL);
    CHECK(tu_clplug_keel(&fx, 0, &out, "call", "svc", "a",
                         "send b sendto nosuch x hi", NULL) == 0,
          "send: %s", out);
    free(out);
    CHECK(tu_clplug_keel(&fx, 0, &out, "call", "svc", "a", "send b work 7",
                         NULL) == 0,
          "send: %s", out);
    free(out);
    out = wait_dead(0, "a", 1);
    CHECK(strstr(out, "1 outbox to svc/b error ") != NULL &&
              strstr(out, "nosuch") != NULL,
          "listing: %s", out);
    free(out);
    CHECK(wait_b_done(0, 50),
          "the message after the refused one never arrived");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_dead_letters");
    TCase *tc = tcase_create("cluster_dead_letters");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, dead_letters_survive_a_failover);
    suite_add_tcase(s, tc);
    tc = tcase_create("handler_enotype");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, a_handlers_enotype_is_a_refusal);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
