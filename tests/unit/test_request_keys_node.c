/* Request keys inside one node (runtime/dedup.h, node_keys.c): a retry waits
 * for the original's write to be durable; a retry of a write whose batch
 * failed fails too, and a later one runs once; two requests with one key
 * run once; a retry that finds its record while the actor activates is
 * answered from it (or EALREADY) with activations and passivations
 * balanced; a key sent with another message is refused. */
#include <check.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acall.h"
#include "gates.h"
#include "keel.h"
#include "persistence/store.h"
#include "runtime/node.h"
#include "testutil.h"

static char *dir;
static int runs, acts, pass;

static void setup(void)
{
    dir = tu_tmpdir("rknode");
    runs = acts = pass = 0;
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

static int tally_activate(keel_turn *t)
{
    void **u = keel_turn_actor_data(t);
    *u = malloc(32);
    acts++;
    return 0;
}

static void tally_passivate(keel_turn *t)
{
    void **u = keel_turn_actor_data(t);
    free(*u);
    *u = NULL;
    pass++;
}

static int tally_message(keel_turn *t, const void *msg, size_t len)
{
    const void *st;
    size_t sl;
    char buf[32];
    unsigned long v = 0;

    runs++;
    keel_turn_state(t, &st, &sl);
    if (sl > 0 && sl < sizeof buf) {
        memcpy(buf, st, sl);
        buf[sl] = 0;
        v = strtoul(buf, NULL, 10);
    }
    if (len == 3 && memcmp(msg, "get", 3) == 0)
        return keel_turn_replyf(t, "%lu", v);
    v++;
    snprintf(buf, sizeof buf, "%lu", v);
    keel_turn_set_state(t, buf, strlen(buf));
    if (len == 3 && memcmp(msg, "big", 3) == 0) {
        static char big[2000];
        memset(big, 'x', sizeof big);
        return keel_turn_reply(t, big, sizeof big);
    }
    return keel_turn_replyf(t, "%lu", v);
}

static keel_node *start_node(void)
{
    keel_node_options o;
    keel_node *n;
    char err[256];
    keel_actor_type ty = {.name = "tally",
                          .on_message = tally_message,
                          .on_activate = tally_activate,
                          .on_passivate = tally_passivate};

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_WARN;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    ck_assert_int_eq(keel_node_register_type(n, &ty), 0);
    return n;
}

static void finish(keel_node *n)
{
    keel_node_stop(n);
    keel_node_join(n);
    keel_node_destroy(n);
}

static const uint8_t K1[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

/* The retry of a write whose batch is not durable yet waits for it. */
START_TEST(retry_waits_for_durable)
{
    keel_node *n = start_node();
    struct gates g = {.hold_sync = 1};
    tu_acall a, b, c;

    gates_install(n->store, &g);
    ck_assert_int_eq(keel_node_start(n), 0);
    tu_acall_start(n, &a, "tally", "x", "inc", K1);
    sem_wait(&g.entered);
    tu_acall_start(n, &b, "tally", "x", "inc", K1);
    usleep(100000);
    ck_assert_msg(!tu_acall_finished(&b), "retry answered (%s) before the "
                  "original's write was durable", b.reply);
    sem_post(&g.release);
    tu_acall_wait(&a);
    tu_acall_wait(&b);
    ck_assert_int_eq(a.status, 0);
    ck_assert_int_eq(b.status, 0);
    ck_assert_str_eq(a.reply, "1");
    ck_assert_str_eq(b.reply, "1");
    ck_assert_int_eq(runs, 1);
    tu_acall_start(n, &c, "tally", "x", "get", NULL);
    tu_acall_wait(&c);
    ck_assert_str_eq(c.reply, "1");
    finish(n);
}
END_TEST

/* Original's batch fails: the retry queued behind it fails too, and a
 * later retry runs (once). */
START_TEST(retry_with_failed_batch)
{
    keel_node *n = start_node();
    struct gates g = {.hold_commit = 1, .fail_commit = 1,
                      .fail_rc = KEEL_ENOSPC};
    tu_acall a, b, c, d;

    gates_install(n->store, &g);
    keel__node_set_inline_commits(n, 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    tu_acall_start(n, &a, "tally", "y", "inc", K1);
    sem_wait(&g.entered);
    tu_acall_start(n, &b, "tally", "y", "inc", K1);
    usleep(100000);
    ck_assert(!tu_acall_finished(&b));
    sem_post(&g.release);
    tu_acall_wait(&a);
    tu_acall_wait(&b);
    ck_assert_int_eq(a.status, KEEL_ENOSPC);
    ck_assert_msg(b.status == KEEL_ENOSPC, "retry: %s %s",
                  keel_err_name(b.status), b.reply);
    tu_acall_start(n, &c, "tally", "y", "inc", K1);
    tu_acall_wait(&c);
    ck_assert_int_eq(c.status, 0);
    ck_assert_str_eq(c.reply, "1");
    tu_acall_start(n, &d, "tally", "y", "inc", K1);
    tu_acall_wait(&d);
    ck_assert_str_eq(d.reply, "1");
    finish(n);
}
END_TEST

/* Two same-key requests in one go. */
static void post_two(keel_node *n, void *data)
{
    tu_acall *c = data;
    tu_acall_post(n, &c[0]);
    tu_acall_post(n, &c[1]);
}

START_TEST(same_key_concurrent)
{
    keel_node *n = start_node();
    tu_acall c[2];

    ck_assert_int_eq(keel_node_start(n), 0);
    tu_acall_init(&c[0], "tally", "z", "inc", K1);
    tu_acall_init(&c[1], "tally", "z", "inc", K1);
    ck_assert_int_eq(keel_node_post(n, post_two, c), 0);
    tu_acall_wait(&c[0]);
    tu_acall_wait(&c[1]);
    ck_assert_str_eq(c[0].reply, "1");
    ck_assert_str_eq(c[1].reply, "1");
    ck_assert_int_eq(runs, 1);
    finish(n);
}
END_TEST

/* After a restart: a dup hit activates the actor (KEPT) or undoes the
 * activation (NOT KEPT, EALREADY); on_activate/on_passivate balance. */
START_TEST(dup_hit_on_activation)
{
    keel_node *n = start_node();
    static const uint8_t K2[16] = {9, 9, 9};
    tu_acall a, b, c, d;
    keel_stats st;

    ck_assert_int_eq(keel_node_start(n), 0);
    tu_acall_start(n, &a, "tally", "w", "inc", K1);
    tu_acall_wait(&a);
    tu_acall_start(n, &b, "tally", "w", "big", K2);
    tu_acall_wait(&b);
    ck_assert_int_eq(b.status, 0);
    ck_assert_uint_eq(b.len, 2000);
    finish(n);

    runs = acts = pass = 0;
    n = start_node();
    ck_assert_int_eq(keel_node_start(n), 0);
    tu_acall_start(n, &c, "tally", "w", "big", K2);
    tu_acall_wait(&c);
    ck_assert_msg(c.status == KEEL_EALREADY, "%s", keel_err_name(c.status));
    ck_assert_int_eq(acts, pass); /* the activation was undone */
    tu_acall_start(n, &d, "tally", "w", "inc", K1);
    tu_acall_wait(&d);
    ck_assert_int_eq(d.status, 0);
    ck_assert_str_eq(d.reply, "1");
    ck_assert_int_eq(runs, 0);
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.messages, 0);
    ck_assert_uint_eq(st.retries_answered, 2);
    ck_assert_uint_eq(st.handler_errors, 0);
    finish(n);
    ck_assert_int_eq(acts, pass);
}
END_TEST

/* A key may only come back with its own request. */
START_TEST(key_reused_for_another_message)
{
    keel_node *n = start_node();
    tu_acall a, b, c;

    ck_assert_int_eq(keel_node_start(n), 0);
    tu_acall_start(n, &a, "tally", "v", "inc", K1);
    tu_acall_wait(&a);
    ck_assert_str_eq(a.reply, "1");
    tu_acall_start(n, &b, "tally", "v", "big", K1);
    tu_acall_wait(&b);
    ck_assert_msg(b.status == KEEL_EINVAL, "%s (%s)", keel_err_name(b.status),
                  b.reply);
    tu_acall_start(n, &c, "tally", "v", "get", NULL);
    tu_acall_wait(&c);
    ck_assert_str_eq(c.reply, "1");
    ck_assert_int_eq(runs, 2);
    finish(n);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("request_keys_node");
    TCase *tc = tcase_create("keys");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, retry_waits_for_durable);
    tcase_add_test(tc, retry_with_failed_batch);
    tcase_add_test(tc, same_key_concurrent);
    tcase_add_test(tc, dup_hit_on_activation);
    tcase_add_test(tc, key_reused_for_another_message);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
