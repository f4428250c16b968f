/* Dead letters (runtime/deadletters.c) through keeld and the keel CLI,
 * with dead_plugin.so loaded and --dead-letter-after 2:
 *  - an outbox message its receiver keeps refusing becomes a dead letter
 *    of the sender after two refusals (not at the first), is listed by
 *    `keel dead-letters` with its receiver, error, attempts and message,
 *    survives a kill -9, and once the receiver is fixed `keel
 *    dead-letters retry` delivers it exactly once;
 *  - a reminder's firing its handler keeps refusing becomes a dead letter
 *    of the actor, the one-shot reminder is gone, a retry while the
 *    handler still refuses answers its error and keeps the dead letter,
 *    and a retry after the fix runs it as the reminder it was;
 *  - drop removes them; bad numbers and malformed requests get typed
 *    errors and the node keeps serving.
 * Every wait is bounded; the checks are about outcomes. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel.h"
#include "cluster.h"
#include "proc.h"
#include "rawconn.h"
#include "runtime/proto.h"
#include "testutil.h"

static char *dir, *data, *plugin;
static tu_keeld node;

static void setup(void)
{
    dir = tu_tmpdir("deadl");
    if (asprintf(&data, "%s/data", dir) < 0)
        abort();
    plugin = tu_bin("dead_plugin.so");
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

/* With small frames, so that a page of the list holds fewer than the
 * most a page may. */
static void start_node_small(int port, const char *after)
{
    const char *extra[] = {"--load", plugin, "--dead-letter-after", after,
                           "--max-frame", "4096", NULL};

    ck_assert_int_eq(tu_keeld_start(&node, data, port, extra), 0);
}

static void start_node(int port)
{
    const char *extra[] = {"--load", plugin, "--dead-letter-after", "2",
                           NULL};

    ck_assert_int_eq(tu_keeld_start(&node, data, port, extra), 0);
}

/* `keel ARGS...` against the node: exit code, output in *out (malloc'd,
 * freed by the caller). */
#define KEEL(out, ...)                                                       \
    keel_run(out, (const char *[]){__VA_ARGS__, NULL})

static int keel_run(char **out, const char **args)
{
    const char *argv[16];
    char *o = NULL, *e = NULL;
    int i, rc;

    argv[0] = NULL;
    for (i = 0; args[i] != NULL && i < 14; i++)
        argv[i] = args[i];
    argv[i] = NULL;
    rc = tu_keel(node.addr, &o, &e, argv[0], argv[1], argv[2], argv[3],
                 argv[4], argv[5], argv[6], NULL);
    if (out != NULL) {
        size_t ol = o != NULL ? strlen(o) : 0, el = e != NULL ? strlen(e) : 0;
        *out = malloc(ol + el + 1);
        if (*out == NULL)
            abort();
        memcpy(*out, o != NULL ? o : "", ol);
        memcpy(*out + ol, e != NULL ? e : "", el);
        (*out)[ol + el] = '\0';
    }
    free(o);
    free(e);
    return rc;
}

static void svc(const char *id, const char *msg)
{
    char *out;
    int rc = KEEL(&out, "call", "svc", id, msg);

    ck_assert_msg(rc == 0, "keel call svc %s %s: %d %s", id, msg, rc, out);
    free(out);
}

/* Polls `keel dead-letters svc ID` until it reports want held, at most
 * 20 s; the listing (malloc'd). */
static char *wait_dead(const char *id, int want)
{
    char *out = NULL, line[32];
    int i;

    snprintf(line, sizeof line, "dead-letters %d\n", want);
    for (i = 0; i < 200; i++) {
        free(out);
        ck_assert_int_eq(KEEL(&out, "dead-letters", "svc", id), 0);
        if (strstr(out, line) != NULL)
            return out;
        tu_sleep_ms(100);
    }
    ck_abort_msg("dead letters of svc/%s: %s", id, out);
    return NULL;
}

static char *get(const char *id)
{
    char *out;

    ck_assert_int_eq(KEEL(&out, "call", "svc", id, "get"), 0);
    return out;
}

START_TEST(outbox_message_refused_then_retried)
{
    char *out;
    int port;

    start_node(0);
    port = node.port;
    svc("b", "break");
    svc("a", "send b work 1");
    out = wait_dead("a", 1);
    ck_assert_msg(strstr(out, "1 outbox to svc/b error EHANDLER attempts 2 "
                              "at ") != NULL &&
                      strstr(out, " msg_bytes 6 msg \"work 1\": broken\n") !=
                          NULL,
                  "listing: %s", out);
    free(out);
    ck_assert_int_eq(tu_keel_stat(node.addr, "outbox_dead"), 1);
    out = get("b");
    ck_assert_str_eq(out, "done 0 last -\n");
    free(out);

    /* Kept with the sender's records: a crash loses none of it. */
    ck_assert_int_eq(tu_keeld_stop(&node, SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&node);
    start_node(port);
    out = wait_dead("a", 1);
    free(out);

    /* Still broken: the retried message is refused again, and kept
     * again, under a new number. */
    ck_assert_int_eq(KEEL(&out, "dead-letters", "retry", "svc", "a", "1"), 0);
    ck_assert_str_eq(out, "retried 1\n");
    free(out);
    out = wait_dead("a", 1);
    ck_assert_msg(strstr(out, "2 outbox to svc/b error EHANDLER") != NULL,
                  "listing: %s", out);
    free(out);

    svc("b", "fix");
    ck_assert_int_eq(KEEL(&out, "dead-letters", "retry", "svc", "a"), 0);
    ck_assert_str_eq(out, "retried 2\n");
    free(out);
    out = wait_dead("a", 0);
    ck_assert_str_eq(out, "dead-letters 0\n");
    free(out);
    /* Acting on every one when none is held says so. */
    ck_assert_int_eq(KEEL(&out, "dead-letters", "drop", "svc", "a"), 0);
    ck_assert_str_eq(out, "dead-letters 0\n");
    free(out);
    for (int i = 0; i < 100; i++) {
        out = get("b");
        if (strcmp(out, "done 1 last 1\n") == 0)
            break;
        free(out);
        out = NULL;
        tu_sleep_ms(100);
    }
    ck_assert_msg(out != NULL, "the retried message never arrived");
    free(out);
    tu_sleep_ms(300);
    out = get("b");
    ck_assert_str_eq(out, "done 1 last 1\n"); /* once */
    free(out);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

START_TEST(reminder_refused_then_retried)
{
    char *out;

    start_node(0);
    svc("c", "break");
    svc("c", "remind r1 10 work R");
    out = wait_dead("c", 1);
    ck_assert_msg(strstr(out, "1 reminder r1 error EHANDLER attempts 2 at ") !=
                          NULL &&
                      strstr(out, "msg \"work R\": broken\n") != NULL,
                  "listing: %s", out);
    free(out);
    ck_assert_int_eq(tu_keel_stat(node.addr, "reminders_dead"), 1);
    ck_assert_int_eq(tu_keel_stat(node.addr, "reminders_fired"), 0);
    /* The warning names the actor whose dead letters to list. */
    out = tu_keeld_log(&node);
    ck_assert_msg(strstr(out, "a firing of reminder 'r1' of svc 'c' kept as "
                              "a dead letter after 2 refusals: EHANDLER: "
                              "broken") != NULL,
                  "log: %s", out);
    free(out);
    /* A one-shot: gone from the reminders once it became a dead letter. */
    ck_assert_int_eq(KEEL(&out, "reminders", "svc", "c"), 0);
    ck_assert_str_eq(out, "reminders 0\n");
    free(out);

    /* Still broken: the retry answers the handler's error and the dead
     * letter stays. */
    ck_assert_int_eq(KEEL(&out, "dead-letters", "retry", "svc", "c", "1"), 1);
    ck_assert_msg(strstr(out, "EHANDLER: dead letter 1: broken") != NULL,
                  "retry: %s", out);
    free(out);
    out = wait_dead("c", 1);
    free(out);

    svc("c", "fix");
    ck_assert_int_eq(KEEL(&out, "dead-letters", "retry", "svc", "c", "1"), 0);
    ck_assert_str_eq(out, "retried 1\n");
    free(out);
    out = get("c");
    ck_assert_str_eq(out, "done 1 last R\n");
    free(out);
    out = wait_dead("c", 0);
    free(out);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

START_TEST(drop_and_bad_requests)
{
    uint8_t msg[KEEL_DEAD_DROP_LEN + 3], frame[KEEL_FRAME_HEADER + 64];
    size_t blen;
    tu_rframe f;
    char *out;
    int fd, i;

    start_node(0);
    svc("e", "break");
    for (i = 0; i < 3; i++) {
        char m[32];
        snprintf(m, sizeof m, "send e work %d", i);
        svc("d", m);
    }
    out = wait_dead("d", 3);
    free(out);

    ck_assert_int_eq(KEEL(&out, "dead-letters", "drop", "svc", "d", "2"), 0);
    ck_assert_str_eq(out, "dropped 2\n");
    free(out);
    ck_assert_int_eq(KEEL(&out, "dead-letters", "drop", "svc", "d", "2"), 1);
    ck_assert_msg(strstr(out, "ENOTFOUND: dead letter 2: the actor has no "
                              "dead letter 2") != NULL,
                  "drop again: %s", out);
    free(out);
    ck_assert_int_eq(KEEL(&out, "dead-letters", "retry", "svc", "d", "x"), 2);
    free(out);
    ck_assert_int_eq(KEEL(&out, "dead-letters", "svc"), 2);
    free(out);
    out = wait_dead("d", 2);
    ck_assert_msg(strstr(out, "\n3 outbox") != NULL && strstr(out, "\n2 ") ==
                                                            NULL,
                  "listing: %s", out);
    free(out);
    ck_assert_int_eq(KEEL(&out, "dead-letters", "drop", "svc", "d"), 0);
    ck_assert_str_eq(out, "dropped 1\ndropped 3\n");
    free(out);
    out = wait_dead("d", 0);
    free(out);

    /* A dead-letter request cut short: a typed error, and the node goes
     * on serving. */
    memcpy(msg, KEEL_DEAD_DROP, KEEL_DEAD_DROP_LEN);
    memset(msg + KEEL_DEAD_DROP_LEN, 0, 3);
    blen = keel_call_body_size(3, 1, sizeof msg);
    keel_frame_header(frame, KEEL_FRAME_CALL, 7, blen);
    frame[5] = KEEL_FLAG_READ;
    keel_call_body_encode(frame + KEEL_FRAME_HEADER, "svc", 3, "d", 1, msg,
                          sizeof msg);
    fd = tu_raw_connect(node.port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(tu_send_all(fd, frame, KEEL_FRAME_HEADER + blen), 0);
    ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
    ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert_uint_eq(f.id, 7);
    ck_assert_int_eq(f.code, KEEL_EMALFORMED);
    close(fd);
    out = get("e");
    ck_assert_str_eq(out, "done 0 last -\n");
    free(out);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

/* More dead letters than one page of the list holds (100 at most, fewer
 * in 4 KiB frames): `keel dead-letters` reads them all, in order, and
 * drop without a number drops them all. */
START_TEST(many_dead_letters_page)
{
    char *out, *all, line[64];
    const char *p;
    int k;

    start_node_small(0, "1");
    svc("g", "break");
    svc("f", "sendn g 150");
    out = wait_dead("f", 150);
    /* Each at the start of a line, in order. */
    if (asprintf(&all, "\n%s", out) < 0)
        abort();
    for (k = 1, p = all; k <= 150; k++) {
        snprintf(line, sizeof line, "\n%d outbox to svc/g error EHANDLER "
                                    "attempts 1 ",
                 k);
        p = strstr(p, line);
        ck_assert_msg(p != NULL, "dead letter %d missing or out of order", k);
    }
    free(all);
    free(out);
    ck_assert_int_eq(KEEL(&out, "dead-letters", "drop", "svc", "f"), 0);
    ck_assert_msg(strncmp(out, "dropped 1\ndropped 2\n", 20) == 0 &&
                      strstr(out, "dropped 150\n") != NULL,
                  "drop: %.200s", out);
    free(out);
    out = wait_dead("f", 0);
    free(out);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dead_letters");
    TCase *tc = tcase_create("dead_letters");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, outbox_message_refused_then_retried);
    tcase_add_test(tc, reminder_refused_then_retried);
    tcase_add_test(tc, drop_and_bad_requests);
    tcase_add_test(tc, many_dead_letters_page);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
