/* A node that stops declaring a capability serves none of that
 * capability's units: three keeld, only n0 with --capabilities gpu,
 * dead_plugin.so loaded with svc bound to gpu, so svc's units are n0's
 * alone. n0 restarted on its data without gpu still holds them in the
 * map (no other node could take them), but calls to svc are refused
 * EUNAVAIL through every node, as for a unit never placed, and its
 * activation log shows no svc actor activated; it used to serve them,
 * writes and all, on a node whose operator had taken the capability away.
 * Restarted with gpu again, it serves them with their state. Every wait
 * is bounded; the checks are about outcomes. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "clplug.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

static tu_cluster fx;
static char *plugin;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    plugin = tu_clplug_setup(&fx, "clcapless", "cp", "dead_plugin.so");
}

static void teardown(void)
{
    tu_clplug_teardown(&fx, plugin);
}

/* One call of svc/a with msg through node i, not sent again: its status,
 * the reply in out. */
static int call_once(int i, const char *msg, char *out, size_t cap)
{
    keel_client *c = NULL;
    char *reply = NULL;
    size_t rl = 0;
    int rc;

    out[0] = '\0';
    if (keel_client_connect(fx.nodes[i].addr, 20000, &c) != 0)
        return KEEL_ENOTSENT;
    rc = keel_client_call(c, KEEL_FRAME_CALL, "svc", "a", 1, msg,
                          strlen(msg), &reply, &rl);
    if (reply != NULL)
        snprintf(out, cap, "%.*s", (int)rl, reply);
    free(reply);
    keel_client_close(c);
    return rc;
}

/* Restarts n0 on its data with `extra`. */
static void restart_n0(const char *const *extra)
{
    int port = fx.nodes[0].port;

    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[0]);
    CHECK(tu_cluster_start_nodev(&fx, 0, port, extra) == 0,
          "n0 did not start again");
}

START_TEST(a_node_without_a_capability_serves_none_of_its_units)
{
    char load[600], out[160], actlog[600];
    const char *gpu[] = {"--load", load, "--capabilities", "gpu",
                         "--hold-timeout", "2000", "--activation-log",
                         actlog, NULL};
    const char *bare[] = {"--load", load, "--hold-timeout", "2000",
                          "--activation-log", actlog, NULL};
    const char *others[] = {"--load", load, "--hold-timeout", "2000", NULL};
    char *log;
    size_t before;
    int i, k, rc;

    snprintf(load, sizeof load, "%s:gpu", plugin);
    snprintf(actlog, sizeof actlog, "%s/n0-activations", fx.dir);
    CHECK(tu_cluster_start_nodev(&fx, 0, 0, gpu) == 0, "n0 did not start");
    for (i = 1; i < 3; i++)
        CHECK(tu_cluster_start_nodev(&fx, i, 0, others) == 0,
              "n%d did not start", i);
    CHECK(tu_clplug_call_keyed(&fx, 1, NULL, "svc", "a", "work 1", out,
                               sizeof out) == 0,
          "work 1 through n1: %s", out);

    /* Without gpu: n0 holds svc's unit and serves it to nobody. */
    log = tu_read_file(actlog);
    before = log != NULL ? strlen(log) : 0;
    free(log);
    restart_n0(bare);
    /* Until every node sees n0 back without gpu (its previous member
     * znode, with gpu, lasts until its session expires). */
    for (i = 0; i < 3; i++) {
        char *caps = NULL;
        for (k = 0; k < 100; k++) {
            free(caps);
            caps = NULL;
            if (tu_clplug_keel(&fx, i, &caps, "capabilities", NULL, NULL,
                               NULL, NULL) == 0 &&
                strstr(caps, "capability gpu nodes (none)") != NULL)
                break;
            tu_sleep_ms(200);
        }
        CHECK(k < 100, "n%d does not see n0 without gpu: %s", i,
              caps ? caps : "");
        free(caps);
    }
    tu_sleep_ms(500); /* n0's map read, its units acquired */
    for (k = 0; k < 3; k++) {
        for (i = 0; i < 3; i++) {
            rc = call_once(i, k == 0 ? "work 2" : "get", out, sizeof out);
            CHECK(rc == KEEL_EUNAVAIL,
                  "svc/a through n%d with n0 not declaring gpu: %s (%s)", i,
                  keel_err_name(rc), out);
        }
    }
    log = tu_read_file(actlog);
    CHECK(log != NULL && strlen(log) >= before &&
              strstr(log + before, "activate svc") == NULL,
          "n0, without gpu, activated svc:\n%s",
          log != NULL && strlen(log) >= before ? log + before : "");
    free(log);

    /* gpu again: svc/a as it was (work 2 never ran). */
    restart_n0(gpu);
    CHECK(tu_clplug_call_keyed(&fx, 2, NULL, "svc", "a", "get", out,
                               sizeof out) == 0 &&
              strcmp(out, "done 1 last 1") == 0,
          "svc/a with gpu back: '%s'", out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_capless");
    TCase *tc = tcase_create("cluster_capless");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, a_node_without_a_capability_serves_none_of_its_units);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
