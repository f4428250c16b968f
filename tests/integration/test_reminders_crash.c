/* Reminders across a crash (keel_turn_remind, runtime/reminders.c): keeld
 * with remind_plugin.so sets a one-shot reminder and a periodic one, `keel
 * reminders` lists them, and keeld is killed with SIGKILL before the
 * one-shot is due, then started again on the same data. The one-shot
 * fires exactly once after the restart (its committed count is 1 and
 * stays 1), the periodic one goes on firing, `keel reminders` no longer
 * lists the one-shot, and `keel stat` counts the firings. Every wait is
 * bounded; the checks are about outcomes, not durations. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "keel.h"
#include "proc.h"
#include "testutil.h"

static char *dir, *data, *plugin;
static tu_keeld node;

static void setup(void)
{
    dir = tu_tmpdir("rmcrash");
    if (asprintf(&data, "%s/data", dir) < 0)
        abort();
    plugin = tu_bin("remind_plugin.so");
    memset(&node, 0, sizeof node);
}

static void teardown(void)
{
    tu_keeld_free(&node);
    tu_rmrf(dir);
    free(dir);
    free(data);
    free(plugin);
}

static void start_node(int port)
{
    const char *extra[] = {"--load", plugin, NULL};

    ck_assert_int_eq(tu_keeld_start(&node, data, port, extra), 0);
}

/* `keel call rem ID MSG`: its output (malloc'd), NULL on failure. */
static char *rem_call(const char *id, const char *msg)
{
    char *out = NULL, *err = NULL;
    int rc = tu_keel(node.addr, &out, &err, "call", "rem", id, msg, NULL);

    if (rc != 0) {
        fprintf(stderr, "keel call rem %s %s: %d: %s\n", id, msg, rc,
                err != NULL ? err : "");
        free(out);
        out = NULL;
    }
    free(err);
    return out;
}

static long count(const char *id, const char *name)
{
    char msg[64], *out;
    long v;

    snprintf(msg, sizeof msg, "count %s", name);
    out = rem_call(id, msg);
    v = out != NULL ? strtol(out, NULL, 10) : -1;
    free(out);
    return v;
}

/* Polls until count(id, name) >= want, at most 20 s. */
static long wait_count(const char *id, const char *name, long want)
{
    long v = -1;
    int i;

    for (i = 0; i < 200; i++) {
        v = count(id, name);
        if (v >= want)
            break;
        tu_sleep_ms(100);
    }
    return v;
}

START_TEST(reminders_fire_across_kill_and_restart)
{
    char *out = NULL, *err = NULL, *s;
    long beat;
    int port;

    start_node(0);
    port = node.port;
    free(rem_call("r1", "set later 6000 0 hello"));
    free(rem_call("r2", "set beat 100 300 b"));
    ck_assert_int_eq(tu_keel(node.addr, &out, &err, "reminders", "rem", "r1",
                             NULL),
                     0);
    ck_assert_msg(strstr(out, "later due_in_ms ") != NULL &&
                      strstr(out, " period_ms 0 msg_bytes 5\n") != NULL &&
                      strstr(out, "reminders 1\n") != NULL,
                  "keel reminders: %s", out);
    free(out);
    free(err);
    out = err = NULL;
    ck_assert_int_ge(wait_count("r2", "beat", 1), 1);
    ck_assert_int_eq(count("r1", "later"), 0);

    ck_assert_int_eq(tu_keeld_stop(&node, SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&node);
    start_node(port);

    ck_assert_int_eq(wait_count("r1", "later", 1), 1);
    s = rem_call("r1", "last");
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "later:hello\n");
    free(s);
    beat = count("r2", "beat");
    ck_assert_int_ge(wait_count("r2", "beat", beat + 2), beat + 2);
    tu_sleep_ms(500);
    ck_assert_int_eq(count("r1", "later"), 1); /* once, not again */
    ck_assert_int_eq(tu_keel(node.addr, &out, &err, "reminders", "rem", "r1",
                             NULL),
                     0);
    ck_assert_str_eq(out, "reminders 0\n");
    free(out);
    free(err);
    out = err = NULL;
    ck_assert_int_eq(tu_keel(node.addr, &out, &err, "reminders", "rem", "r2",
                             NULL),
                     0);
    ck_assert_msg(strstr(out, "beat due_in_ms ") != NULL &&
                      strstr(out, " period_ms 300 msg_bytes 1\n") != NULL,
                  "keel reminders: %s", out);
    free(out);
    free(err);
    ck_assert_int_ge(tu_keel_stat(node.addr, "reminders_fired"), 3);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reminders_crash");
    TCase *tc = tcase_create("reminders_crash");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, reminders_fire_across_kill_and_restart);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
