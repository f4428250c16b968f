/* keel_turn_event inside one node (runtime/follow.c): its typed errors
 * (a NULL payload with a length, a payload that cannot fit one event
 * frame under the node's max_frame, a call from on_passivate), the
 * largest payload that fits and an empty one accepted, whether or not
 * anyone follows the actor; a turn that only chose a payload commits
 * nothing. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"
#include "runtime/proto.h"
#include "testutil.h"

#define FRAME 4096
#define MAX_PAYLOAD (FRAME - KEEL_FRAME_HEADER - KEEL_EVENT_HDR)

static char *dir;
/* What keel_turn_event returned in on_passivate (loop thread writes;
 * read after the node has stopped). */
static int passivate_rc;

static void setup(void)
{
    dir = tu_tmpdir("turnev");
    passivate_rc = 1;
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

/* "args": every check below, answered "ok"; "emit": a payload and no
 * write. */
static int ev_message(keel_turn *t, const void *msg, size_t len)
{
    static uint8_t buf[FRAME];

    if (len == 4 && memcmp(msg, "emit", 4) == 0)
        return keel_turn_event(t, "e", 1);
    if (len != 4 || memcmp(msg, "args", 4) != 0)
        return KEEL_EBADMSG;
    memset(buf, 'p', sizeof buf);
    ck_assert_int_eq(keel_turn_event(NULL, buf, 1), KEEL_EINVAL);
    ck_assert_int_eq(keel_turn_event(t, NULL, 1), KEEL_EINVAL);
    ck_assert_int_eq(keel_turn_event(t, NULL, 0), 0);
    ck_assert_int_eq(keel_turn_event(t, buf, MAX_PAYLOAD), 0);
    ck_assert_int_eq(keel_turn_event(t, buf, MAX_PAYLOAD + 1), KEEL_ETOOBIG);
    ck_assert_int_eq(keel_turn_event(t, buf, SIZE_MAX), KEEL_ETOOBIG);
    return keel_turn_reply(t, "ok", 2);
}

static void ev_passivate(keel_turn *t)
{
    passivate_rc = keel_turn_event(t, "p", 1);
}

static keel_node *start_node(void)
{
    keel_node_options o;
    keel_node *n;
    char err[256];
    keel_actor_type ev = {.name = "ev",
                          .on_message = ev_message,
                          .on_passivate = ev_passivate};

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_ERROR;
    o.durability = KEEL_DURABILITY_NONE;
    o.max_frame = FRAME;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    ck_assert_int_eq(keel_node_register_type(n, &ev), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    return n;
}

static void finish(keel_node *n)
{
    keel_node_stop(n);
    keel_node_join(n);
    keel_node_destroy(n);
}

static int call(keel_node *n, const char *id, const char *msg, char *out,
                size_t cap)
{
    void *reply = NULL;
    size_t rl = 0;
    int rc = keel_call_sync(n, "ev", id, strlen(id), msg, strlen(msg),
                            &reply, &rl);

    snprintf(out, cap, "%.*s", (int)rl, reply != NULL ? (char *)reply : "");
    keel_free(reply);
    return rc;
}

/* The checks run in a turn of an actor nobody follows: the limit does
 * not depend on followers. */
START_TEST(arguments_and_limits)
{
    keel_node *n = start_node();
    char out[64];

    ck_assert_int_eq(call(n, "a", "args", out, sizeof out), 0);
    ck_assert_str_eq(out, "ok");
    finish(n);
    /* At stop the actor is passivated: no writes, no payload there. */
    ck_assert_int_eq(passivate_rc, KEEL_EINVAL);
}
END_TEST

/* A turn that only chose a payload wrote nothing: it ran, and no commit
 * was made for it. */
START_TEST(payload_only_turn_writes_nothing)
{
    keel_node *n = start_node();
    keel_stats before, after;
    char out[64];
    int i;

    keel_node_stats(n, &before);
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(call(n, "b", "emit", out, sizeof out), 0);
    keel_node_stats(n, &after);
    ck_assert_uint_eq(after.messages, before.messages + 5);
    ck_assert_uint_eq(after.commits, before.commits);
    finish(n);
}
END_TEST

static Suite *turn_event_suite(void)
{
    Suite *s = suite_create("turn_event");
    TCase *tc = tcase_create("turn_event");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, arguments_and_limits);
    tcase_add_test(tc, payload_only_turn_writes_nothing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(turn_event_suite());
}
