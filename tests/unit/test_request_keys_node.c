/* Request keys inside one node (runtime/dedup.h, node_keys.c): a retry waits
 * for the original's write to be durable; a retry of a write whose batch
 * failed fails too, and a later one runs once; two requests with one key
 * run once; a keyed request that changed nothing is recorded, so that a
 * late copy of it does not run again on a changed state (also after a
 * restart); a retry that finds its record while the actor activates is
 * answered from it (or EALREADY) with activations and passivations
 * balanced; a key sent with another message is refused; a record holds
 * however many keyed writes follow it, for the retention and no longer,
 * and the records of an actor do not pile up past it; an actor that
 * still has the count window's table is answered from it, and its next
 * keyed write moves the table's records to entries of their own. The
 * handler's listing skips the records; a queue header missing or
 * unreadable is made again from the queue, an unreadable queue entry is
 * dropped, and an unreadable record refuses its own key only. */
#include <check.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "acall.h"
#include "gates.h"
#include "keel.h"
#include "persistence/store.h"
#include "rktable.h"
#include "runtime/dedup.h"
#include "runtime/node.h"
#include "testutil.h"

static char *dir;
static int runs, acts, pass, nomem;
/* When nonzero, the next on_activate fails with it (once). */
static int fail_activate;
/* Called by "tkN" before it refuses (loop thread), when set. */
static void (*before_refusal)(void);

/* This test is linked with -Wl,--wrap=strdup (CMakeLists.txt): armed,
 * the next strdup fails. */
static volatile int fail_strdup;
char *__real_strdup(const char *s);
char *__wrap_strdup(const char *s);

char *__wrap_strdup(const char *s)
{
    if (fail_strdup) {
        fail_strdup = 0;
        return NULL;
    }
    return __real_strdup(s);
}

static void setup(void)
{
    dir = tu_tmpdir("rknode");
    runs = acts = pass = nomem = 0;
    fail_activate = 0;
    before_refusal = NULL;
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

static int tally_activate(keel_turn *t)
{
    void **u = keel_turn_actor_data(t);

    if (fail_activate != 0) {
        int rc = fail_activate;
        fail_activate = 0;
        return rc;
    }
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

/* "list": the handler's entries as keel_turn_entries gives them, "N
 * ok" or "N bad" when one of them is the runtime's (a NUL first byte). */
struct listing {
    unsigned n, bad;
};

static int list_cb(const void *key, size_t klen, const void *val,
                   size_t vlen, void *data)
{
    struct listing *l = data;

    (void)val;
    (void)vlen;
    l->n++;
    if (klen == 0 || ((const uint8_t *)key)[0] == 0)
        l->bad++;
    return 0;
}

static int list_entries(keel_turn *t)
{
    struct listing l = {0, 0};
    int rc = keel_turn_entries(t, list_cb, &l);

    if (rc != 0)
        return rc;
    return keel_turn_replyf(t, "%u %s", l.n, l.bad ? "bad" : "ok");
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
    if (len > 2 && len < sizeof buf && memcmp(msg, "tk", 2) == 0) {
        /* "tkN": the increment only when the value is N; refused with
         * ENOTFOUND otherwise. */
        memcpy(buf, (const char *)msg + 2, len - 2);
        buf[len - 2] = 0;
        if (strtoul(buf, NULL, 10) != v) {
            if (before_refusal != NULL)
                before_refusal();
            keel_turn_error(t, "the value is %lu, not %s", v, buf);
            return KEEL_ENOTFOUND;
        }
    }
    if (len == 5 && memcmp(msg, "nomem", 5) == 0 && nomem) {
        keel_turn_set_state(t, "999", 3); /* never kept */
        return KEEL_ENOMEM;
    }
    if (len == 4 && memcmp(msg, "list", 4) == 0)
        return list_entries(t);
    if (len > 2 && len < sizeof buf && memcmp(msg, "if", 2) == 0) {
        /* "ifN": a compare-and-set, the increment only when the value
         * is N; "no", changing nothing, otherwise. */
        memcpy(buf, (const char *)msg + 2, len - 2);
        buf[len - 2] = 0;
        if (strtoul(buf, NULL, 10) != v)
            return keel_turn_reply(t, "no", 2);
    }
    v++;
    snprintf(buf, sizeof buf, "%lu", v);
    keel_turn_set_state(t, buf, strlen(buf));
    if (len == 3 && memcmp(msg, "put", 3) == 0) {
        char ek[32];
        int rc;
        snprintf(ek, sizeof ek, "e%lu", v);
        rc = keel_turn_put(t, ek, strlen(ek), "v", 1);
        if (rc != 0)
            return rc;
    }
    if (len == 3 && memcmp(msg, "big", 3) == 0) {
        static char big[2000];
        memset(big, 'x', sizeof big);
        return keel_turn_reply(t, big, sizeof big);
    }
    return keel_turn_replyf(t, "%lu", v);
}

/* retention_ms 0: the default. */
static keel_node *start_node_ret(uint32_t retention_ms)
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
    o.request_key_retention_ms = retention_ms;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    ck_assert_int_eq(keel_node_register_type(n, &ty), 0);
    return n;
}

static keel_node *start_node(void)
{
    return start_node_ret(0);
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

/* A call of tally/id with msg, keyed with key unless NULL; returns its
 * status and copies its reply to out (256 bytes). */
static int call(keel_node *n, const char *id, const char *msg,
                const uint8_t *key, char *out)
{
    tu_acall c;

    tu_acall_start(n, &c, "tally", id, msg, key);
    tu_acall_wait(&c);
    memcpy(out, c.reply, sizeof c.reply);
    return c.status;
}

static void key_n(uint8_t *k, unsigned v)
{
    memset(k, 0x5a, 16);
    k[0] = (uint8_t)v;
    k[1] = (uint8_t)(v >> 8);
    k[2] = (uint8_t)(v >> 16);
}

/* A keyed request that ran and changed nothing (a compare-and-set that
 * found another value) is recorded too: a copy of it that reaches the
 * actor later (the original of a retry, delivered late by a connection
 * a partition held up) is answered with that outcome and does not run
 * again, also after a restart. Run again, it found the value it wanted
 * by then and wrote, after its client had been told it changed
 * nothing. */
START_TEST(late_copy_of_a_turn_that_changed_nothing)
{
    keel_node *n = start_node();
    char reply[256];

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "cas", "inc", NULL, reply), 0);
    ck_assert_str_eq(reply, "1");
    /* The retry runs first: the value is 1, not 2. */
    ck_assert_int_eq(call(n, "cas", "if2", K1, reply), 0);
    ck_assert_str_eq(reply, "no");
    ck_assert_int_eq(call(n, "cas", "inc", NULL, reply), 0);
    ck_assert_str_eq(reply, "2");
    finish(n);

    runs = 0;
    n = start_node();
    ck_assert_int_eq(keel_node_start(n), 0);
    /* The original arrives: it is the retry's request, answered as the
     * retry was. */
    ck_assert_int_eq(call(n, "cas", "if2", K1, reply), 0);
    ck_assert_str_eq(reply, "no");
    ck_assert_int_eq(runs, 0);
    ck_assert_int_eq(call(n, "cas", "get", NULL, reply), 0);
    ck_assert_str_eq(reply, "2");
    finish(n);
}
END_TEST

/* A keyed request its handler refused with an answer (an error about
 * the actor's state) is recorded too: a copy that comes later is
 * answered with the refusal, also after a restart, and does not run.
 * Run again, it found the value it wanted by then and wrote, after its
 * client had been told it was refused. */
START_TEST(late_copy_of_a_refused_turn)
{
    keel_node *n = start_node();
    keel_stats st;
    char reply[256];

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "rf", "inc", NULL, reply), 0);
    ck_assert_int_eq(call(n, "rf", "tk2", K1, reply), KEEL_ENOTFOUND);
    ck_assert_str_eq(reply, "the value is 1, not 2");
    ck_assert_int_eq(call(n, "rf", "inc", NULL, reply), 0);
    ck_assert_str_eq(reply, "2");
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.handler_errors, 1);
    finish(n);

    runs = 0;
    n = start_node();
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "rf", "tk2", K1, reply), KEEL_ENOTFOUND);
    ck_assert_str_eq(reply, "the value is 1, not 2");
    ck_assert_int_eq(runs, 0);
    ck_assert_int_eq(call(n, "rf", "get", NULL, reply), 0);
    ck_assert_str_eq(reply, "2");
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.retries_answered, 1);
    ck_assert_uint_eq(st.handler_errors, 0);
    /* The key still belongs to its own request only. */
    ck_assert_int_eq(call(n, "rf", "tk3", K1, reply), KEEL_EINVAL);
    finish(n);
}
END_TEST

/* The refused request is the actor's first: the failed turn's activation
 * is undone, as for any failed first turn, and the actor activated again
 * to record the refusal. */
START_TEST(refusal_recorded_on_activation)
{
    keel_node *n = start_node();
    char reply[256];
    int i;

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "ra", "tk3", K1, reply), KEEL_ENOTFOUND);
    ck_assert_str_eq(reply, "the value is 0, not 3");
    ck_assert_int_eq(acts, 2);
    ck_assert_int_eq(pass, 1);
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(call(n, "ra", "inc", NULL, reply), 0);
    ck_assert_str_eq(reply, "3");
    runs = 0;
    ck_assert_int_eq(call(n, "ra", "tk3", K1, reply), KEEL_ENOTFOUND);
    ck_assert_str_eq(reply, "the value is 0, not 3");
    ck_assert_int_eq(runs, 0);
    ck_assert_int_eq(call(n, "ra", "get", NULL, reply), 0);
    ck_assert_str_eq(reply, "3");
    finish(n);
    ck_assert_int_eq(acts, pass);
}
END_TEST

/* An activation that fails (on_activate returned an error, here -1, a
 * passing failure such as a resource it could not get) is not recorded
 * under the request key, and the key is not even looked up: so its code
 * must not be one that keel_err_is_answer() settles as the request's
 * recorded refusal. Otherwise the retry of a request that ran is told it
 * was refused, and a retry that reaches the actor before its original
 * (held up on the wire) is told it was refused, and then the original
 * runs. */
START_TEST(activation_failure_is_not_an_answer)
{
    keel_node *n = start_node();
    char reply[256];
    int rc;

    ck_assert_int_eq(keel_node_start(n), 0);
    /* The original runs and is recorded; its client never hears. */
    ck_assert_int_eq(call(n, "af", "inc", K1, reply), 0);
    ck_assert_str_eq(reply, "1");
    finish(n);
    runs = acts = pass = 0;
    n = start_node();
    ck_assert_int_eq(keel_node_start(n), 0);
    /* Its retry activates the actor, whose on_activate fails once. */
    fail_activate = -1;
    rc = call(n, "af", "inc", K1, reply);
    ck_assert_msg(rc == 0 || !keel_err_is_answer(rc),
                  "the retry of a request that ran was answered %s (%s), "
                  "which keel_err_is_answer settles as its refusal",
                  keel_err_name(rc), reply);
    if (rc == 0)
        ck_assert_str_eq(reply, "1");
    ck_assert_int_eq(call(n, "af", "inc", K1, reply), 0);
    ck_assert_str_eq(reply, "1");
    ck_assert_int_eq(runs, 0);

    /* A retry that comes first, its original late. */
    fail_activate = -1;
    rc = call(n, "ag", "inc", K1, reply);
    ck_assert_msg(!keel_err_is_answer(rc),
                  "a keyed request whose activation failed was answered %s "
                  "(%s), a settled refusal, yet it is not recorded: a late "
                  "copy of it runs",
                  keel_err_name(rc), reply);
    finish(n);
    ck_assert_int_eq(acts, pass);
}
END_TEST

/* An error about the node at the time (here out of memory) is not an
 * answer: it is not recorded, and a retry with the key runs. */
START_TEST(node_failure_not_recorded)
{
    keel_node *n = start_node();
    keel_stats st;
    char reply[256];

    ck_assert_int_eq(keel_node_start(n), 0);
    nomem = 1;
    ck_assert_int_eq(call(n, "rn", "nomem", K1, reply), KEEL_ENOMEM);
    nomem = 0;
    ck_assert_int_eq(call(n, "rn", "nomem", K1, reply), 0);
    ck_assert_str_eq(reply, "1");
    ck_assert_int_eq(runs, 2);
    ck_assert_int_eq(call(n, "rn", "nomem", K1, reply), 0);
    ck_assert_str_eq(reply, "1");
    ck_assert_int_eq(runs, 2);
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.retries_answered, 1);
    finish(n);
}
END_TEST

/* The refusal below is decided on a write that is then lost. */
static keel_node *lost_node;
static struct gates *lost_gates;

/* Lets the held commit fail and waits (bounded) until the writer has
 * handed it back: the loop settles it before the refused request's next
 * turn. */
static void lose_the_write(void)
{
    int i, done = 0;

    sem_post(&lost_gates->release);
    for (i = 0; i < 10000 && !done; i++) {
        pthread_mutex_lock(&lost_node->done_mu);
        done = lost_node->wb_ndone > lost_node->wb_first;
        pthread_mutex_unlock(&lost_node->done_mu);
        if (!done)
            usleep(1000);
    }
    ck_assert_msg(done, "the failed commit did not come back");
}

static void post_all(keel_node *n, void *data)
{
    tu_acall *c = data;
    int i;

    for (i = 0; i < 64; i++)
        tu_acall_post(n, &c[i]);
}

/* A refusal is recorded only on the state it was decided on. Here it
 * saw a write whose commit then failed, and the actor was reset to the
 * store between the refusing turn and the one that records (the refusal
 * is the 64th turn of its actor in a run, RUN_PER_ACTOR in node.c, so
 * the other actors, and the writer's answers, get a go in between). Recorded, it would answer the
 * client with a value that never took effect ("the value is 1, not 0"),
 * and every copy after it the same; the request runs again instead, on
 * the state the actor has now. */
START_TEST(refusal_on_lost_write_runs_again)
{
    keel_node *n = start_node();
    struct gates g = {.hold_commit = 1, .fail_commit = 1,
                      .fail_rc = KEEL_ENOSPC};
    tu_acall a, *c = calloc(64, sizeof *c);
    char reply[256];
    int i;

    ck_assert_ptr_nonnull(c);
    gates_install(n->store, &g);
    keel__node_set_inline_commits(n, 0);
    lost_node = n;
    lost_gates = &g;
    ck_assert_int_eq(keel_node_start(n), 0);
    tu_acall_start(n, &a, "tally", "lw", "inc", NULL);
    sem_wait(&g.entered); /* the value 1 is with the writer, held */
    for (i = 0; i < 63; i++)
        tu_acall_init(&c[i], "tally", "lw", "get", NULL);
    tu_acall_init(&c[63], "tally", "lw", "tk0", K1);
    before_refusal = lose_the_write;
    ck_assert_int_eq(keel_node_post(n, post_all, c), 0);
    tu_acall_wait(&c[63]);
    before_refusal = NULL;
    tu_acall_wait(&a);
    ck_assert_int_eq(a.status, KEEL_ENOSPC);
    for (i = 0; i < 63; i++)
        tu_acall_wait(&c[i]);
    ck_assert_msg(c[63].status == 0, "%s: %s", keel_err_name(c[63].status),
                  c[63].reply);
    ck_assert_str_eq(c[63].reply, "1");
    ck_assert_int_eq(call(n, "lw", "tk0", K1, reply), 0);
    ck_assert_str_eq(reply, "1");
    ck_assert_int_eq(call(n, "lw", "get", NULL, reply), 0);
    ck_assert_str_eq(reply, "1");
    finish(n);
    free(c);
}
END_TEST

/* A request submitted again carrying a refusal from a mailbox it left,
 * as the cluster runtime's sweep does with what it holds when a unit
 * moves: made on the loop thread. */
struct resubmit {
    keel_node *n;
    const char *id, *msg, *stale;
    sem_t done;
    int status;
    char reply[256];
};

static void resubmit_cb(int status, const void *reply, size_t len,
                        void *data)
{
    struct resubmit *r = data;
    size_t l = len < sizeof r->reply - 1 ? len : sizeof r->reply - 1;

    r->status = status;
    memcpy(r->reply, reply, l);
    r->reply[l] = '\0';
    sem_post(&r->done);
}

static void resubmit_post(keel_node *n, void *data)
{
    struct resubmit *r = data;
    struct keel_type_entry *te = keel__type_find(n, "tally", 5);
    keel_req *req = keel__req_alloc(n, strlen(r->msg));
    int rc;

    ck_assert_ptr_nonnull(te);
    ck_assert_ptr_nonnull(req);
    keel__req_set(req, r->msg, strlen(r->msg));
    req->origin = REQ_LOCAL;
    req->u.local.cb = resubmit_cb;
    req->u.local.data = r;
    req->keyed = 1;
    memcpy(req->rkey, K1, KEEL_REQUEST_KEY_LEN);
    /* Refused where it was queued before, on a state that need not be
     * the one it finds now. */
    req->refused = KEEL_ENOTFOUND;
    req->refusal = strdup(r->stale);
    ck_assert_ptr_nonnull(req->refusal);
    rc = keel__submit(n, te, r->id, strlen(r->id), req);
    if (rc != 0) {
        keel__req_free(n, req);
        resubmit_cb(rc, "", 0, r);
    }
}

/* A request that left its actor's mailbox between the turn that refused
 * it and the one that would record the refusal (a unit that moved: the
 * sweep holds its messages and routes them again, perhaps here, in a
 * later session) runs its handler again where it is submitted: the
 * refusal was decided on a state that may have changed or been lost
 * since. */
START_TEST(refusal_not_carried_into_a_new_mailbox)
{
    keel_node *n = start_node();
    struct resubmit r = {.n = n, .id = "rs", .msg = "tk0",
                         .stale = "the value is 7, not 0"};
    char reply[256];

    ck_assert_int_eq(sem_init(&r.done, 0, 0), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(keel_node_post(n, resubmit_post, &r), 0);
    sem_wait(&r.done);
    ck_assert_msg(r.status == 0, "%s: %s", keel_err_name(r.status), r.reply);
    ck_assert_str_eq(r.reply, "1");
    ck_assert_int_eq(runs, 1);
    ck_assert_int_eq(call(n, "rs", "tk0", K1, reply), 0);
    ck_assert_str_eq(reply, "1");
    ck_assert_int_eq(runs, 1);
    finish(n);
    sem_destroy(&r.done);
}
END_TEST

static void arm_strdup_failure(void)
{
    fail_strdup = 1;
}

/* No memory to keep the refusal for the turn that records it: the
 * request is not recorded, so its client must not be told the refusal
 * (an answer, settled for every copy) but the node's failure, ENOMEM. A
 * copy that comes later runs on the state it finds, and here succeeds:
 * told ENOTFOUND first, its client would have been told wrong. */
START_TEST(refusal_not_kept_is_not_answered)
{
    keel_node *n = start_node();
    char reply[256];
    int rc;

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "om", "inc", NULL, reply), 0);
    before_refusal = arm_strdup_failure;
    rc = call(n, "om", "tk2", K1, reply);
    before_refusal = NULL;
    ck_assert_int_eq(fail_strdup, 0);
    ck_assert_msg(rc == KEEL_ENOMEM && !keel_err_is_answer(rc), "%s: %s",
                  keel_err_name(rc), reply);
    ck_assert_int_eq(call(n, "om", "inc", NULL, reply), 0);
    ck_assert_int_eq(call(n, "om", "tk2", K1, reply), 0);
    ck_assert_str_eq(reply, "3");
    ck_assert_int_eq(call(n, "om", "tk2", K1, reply), 0);
    ck_assert_str_eq(reply, "3");
    finish(n);
}
END_TEST

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* "herald": its activation sends tally/hx "inc" through the outbox; it
 * refuses every message (ENOTFOUND). */
static int herald_activate(keel_turn *t)
{
    return keel_turn_send(t, "tally", "hx", 2, "inc", 3);
}

static int herald_message(keel_turn *t, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    keel_turn_error(t, "nothing here");
    return KEEL_ENOTFOUND;
}

/* The turn that records a refusal commits what the actor's activation
 * did with it (here an outbox message): that goes out as it does after a
 * success, once the refusal leaves, not after the pause of a reply whose
 * outcome is in doubt (a second). */
START_TEST(recorded_refusal_releases_its_turn)
{
    keel_node_options o;
    keel_node *n;
    char err[256], reply[256];
    keel_actor_type tally = {.name = "tally", .on_message = tally_message};
    keel_actor_type herald = {.name = "herald",
                              .on_message = herald_message,
                              .on_activate = herald_activate};
    uint64_t t0;
    int i, got = 0;

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_WARN;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    ck_assert_int_eq(keel_node_register_type(n, &tally), 0);
    ck_assert_int_eq(keel_node_register_type(n, &herald), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    {
        tu_acall c;
        tu_acall_start(n, &c, "herald", "h", "hello", K1);
        tu_acall_wait(&c);
        ck_assert_msg(c.status == KEEL_ENOTFOUND, "%s: %s",
                      keel_err_name(c.status), c.reply);
        ck_assert_str_eq(c.reply, "nothing here");
    }
    /* Delivered before the second a doubtful reply's messages wait, which
     * began before the refusal reached us. */
    t0 = mono_ms();
    for (i = 0; i < 900 && !got && mono_ms() - t0 < 900; i++) {
        ck_assert_int_eq(call(n, "hx", "get", NULL, reply), 0);
        got = strcmp(reply, "1") == 0;
        if (!got)
            usleep(1000);
    }
    ck_assert_msg(got, "the activation's outbox message was not delivered "
                       "within 900 ms of the recorded refusal");
    finish(n);
}
END_TEST

/* The runtime's request-key entries of an actor, in the store. */
struct rk_count {
    size_t plen;
    unsigned recs, queue, hdr, table;
};

static int rk_count_cb(const uint8_t *key, size_t klen,
                       const keel_record *rec, void *data)
{
    struct rk_count *c = data;
    const uint8_t *e = key + c->plen;
    size_t el = klen - c->plen;

    (void)rec;
    if (el > KEEL_DEDUP_REC_PREFIX_LEN &&
        memcmp(e, KEEL_DEDUP_REC_PREFIX, KEEL_DEDUP_REC_PREFIX_LEN) == 0)
        c->recs++;
    else if (el > KEEL_DEDUP_Q_PREFIX_LEN &&
             memcmp(e, KEEL_DEDUP_Q_PREFIX, KEEL_DEDUP_Q_PREFIX_LEN) == 0)
        c->queue++;
    else if (el == KEEL_DEDUP_Q_HDR_LEN &&
             memcmp(e, KEEL_DEDUP_Q_HDR, el) == 0)
        c->hdr++;
    else if (el == KEEL_DEDUP_ENTRY_LEN &&
             memcmp(e, KEEL_DEDUP_ENTRY, el) == 0)
        c->table++;
    return 0;
}

/* Counts them on a node that is not running (the test's thread is the
 * store's only reader). */
static void rk_count(keel_node *n, const char *id, struct rk_count *c)
{
    uint8_t prefix[KEEL_KEY_MAX];
    uint32_t shard = keel_shard_of("tally", id, strlen(id),
                                   n->opts.shard_count);
    keel_store_read *r;
    int pl = keel_key_encode(prefix, (uint16_t)shard, "tally", 5, id,
                             strlen(id), NULL, 0);

    ck_assert_int_gt(pl, 0);
    memset(c, 0, sizeof *c);
    c->plen = (size_t)pl;
    ck_assert_int_eq(keel_store_read_begin(n->store, &r), 0);
    ck_assert_int_eq(keel_store_scan(r, prefix, (size_t)pl, rk_count_cb, c),
                     0);
    keel_store_read_end(r);
}

/* The count window forgot a key after 32 newer keyed writes to its actor,
 * and a late copy of its request ran again. Kept for a time, the record
 * holds however many follow it. */
START_TEST(record_outlives_many_keyed_writes)
{
    keel_node *n = start_node();
    char reply[256];
    uint8_t k[16];
    unsigned i;

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "busy", "inc", K1, reply), 0);
    ck_assert_str_eq(reply, "1");
    for (i = 0; i < 200; i++) {
        key_n(k, i + 100);
        ck_assert_int_eq(call(n, "busy", "inc", k, reply), 0);
    }
    ck_assert_str_eq(reply, "201");
    ck_assert_int_eq(call(n, "busy", "inc", K1, reply), 0);
    ck_assert_str_eq(reply, "1"); /* the first outcome */
    ck_assert_int_eq(runs, 201);
    ck_assert_int_eq(call(n, "busy", "get", NULL, reply), 0);
    ck_assert_str_eq(reply, "201");
    finish(n);

    /* Every one of them is an entry of its own. */
    {
        struct rk_count c;
        n = start_node();
        rk_count(n, "busy", &c);
        ck_assert_uint_eq(c.recs, 201);
        ck_assert_uint_eq(c.queue, 201);
        ck_assert_uint_eq(c.hdr, 1);
        keel_node_destroy(n);
    }
}
END_TEST

/* Past the retention a key is forgotten: its retry runs again. Writes
 * spaced further apart than the retention leave the records of about one
 * retention's writes, however many there were. */
/* Long enough that a retry sent right after its answer comes within it,
 * on a loaded machine too. */
#define SHORT_MS 300

START_TEST(record_forgotten_after_retention)
{
    keel_node *n = start_node_ret(SHORT_MS);
    char reply[256];
    struct rk_count c;
    uint8_t k[16];
    unsigned round, i;
    uint64_t t0;

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "brief", "inc", K1, reply), 0);
    ck_assert_str_eq(reply, "1");
    /* Waiting out the retention is what is tested here. */
    usleep(2 * SHORT_MS * 1000);
    t0 = mono_ms(); /* the record's time is later */
    ck_assert_int_eq(call(n, "brief", "inc", K1, reply), 0);
    ck_assert_str_eq(reply, "2"); /* ran again */
    ck_assert_int_eq(runs, 2);
    /* Recorded again, as a new first run: answered from that, unless a
     * slow machine took longer than the retention for the two calls. */
    ck_assert_int_eq(call(n, "brief", "inc", K1, reply), 0);
    if (mono_ms() - t0 < SHORT_MS) {
        ck_assert_str_eq(reply, "2");
        ck_assert_int_eq(runs, 2);
    } else {
        fprintf(stderr, "record_forgotten_after_retention: the two calls "
                        "took longer than the retention; not checked\n");
        runs = 2;
    }

    for (round = 0; round < 6; round++) {
        usleep(2 * SHORT_MS * 1000);
        for (i = 0; i < 20; i++) {
            key_n(k, round * 100 + i + 1000);
            ck_assert_int_eq(call(n, "brief", "inc", k, reply), 0);
        }
    }
    ck_assert_int_eq(runs, 122);
    finish(n);
    n = start_node();
    rk_count(n, "brief", &c);
    /* The last round's 20 at most: the first writes of a round forget
     * the round before (up to KEEL_DEDUP_PRUNE_MAX records each). */
    ck_assert_msg(c.recs >= 1 && c.recs <= 20, "%u records", c.recs);
    ck_assert_uint_eq(c.queue, c.recs);
    ck_assert_uint_eq(c.hdr, 1);
    keel_node_destroy(n);
}
END_TEST

/* What a call's request hashes to (node_keys.c): kind and message. */
static uint64_t call_hash(const char *msg)
{
    return XXH3_64bits_withSeed(msg, strlen(msg), 1);
}

/* An actor written by a node that kept the count window's table: its
 * records are answered from the table, and its next keyed write moves
 * them to entries of their own (kept a retention from then) and deletes
 * the table. */
START_TEST(old_table_read_then_moved)
{
    static const uint8_t KO[16] = {0x0d, 1}, KN[16] = {0x0d, 2},
                         KW[16] = {0x0d, 3};
    keel_node *n = start_node();
    uint8_t tab[256], key[KEEL_KEY_MAX];
    uint32_t shard = keel_shard_of("tally", "old", 3, n->opts.shard_count);
    keel_batch *b = keel_batch_create();
    size_t tl = 0;
    char reply[256];
    struct rk_count c;
    int kl, st;

    /* State 5, and the table of the writes that made it. */
    tl = tu_rktable_add(tab, tl, KO, call_hash("inc"), 1, "5", 1);
    tl = tu_rktable_add(tab, tl, KN, call_hash("big"), 0, NULL, 0);
    ck_assert_int_eq(keel_batch_begin_group(b, "", (uint16_t)shard, 1, NULL),
                     0);
    kl = keel_key_encode(key, (uint16_t)shard, "tally", 5, "old", 3, NULL, 0);
    ck_assert_int_eq(keel_batch_put(b, key, (size_t)kl, 1, "5", 1), 0);
    kl = keel_key_encode(key, (uint16_t)shard, "tally", 5, "old", 3,
                         KEEL_DEDUP_ENTRY, KEEL_DEDUP_ENTRY_LEN);
    ck_assert_int_eq(keel_batch_put(b, key, (size_t)kl, 1, tab, tl), 0);
    ck_assert_int_eq(keel_store_commit(n->store, b), 0);
    keel_batch_group(b, 0, &st);
    ck_assert_int_eq(st, 0);
    keel_batch_destroy(b);

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "old", "inc", KO, reply), 0);
    ck_assert_str_eq(reply, "5");
    ck_assert_int_eq(call(n, "old", "big", KN, reply), KEEL_EALREADY);
    ck_assert_int_eq(runs, 0);
    ck_assert_int_eq(call(n, "old", "inc", KW, reply), 0); /* moves them */
    ck_assert_str_eq(reply, "6");
    ck_assert_int_eq(call(n, "old", "inc", KO, reply), 0);
    ck_assert_str_eq(reply, "5");
    ck_assert_int_eq(call(n, "old", "big", KN, reply), KEEL_EALREADY);
    ck_assert_int_eq(call(n, "old", "inc", KW, reply), 0);
    ck_assert_str_eq(reply, "6");
    ck_assert_int_eq(runs, 1);
    finish(n);

    n = start_node();
    rk_count(n, "old", &c);
    ck_assert_uint_eq(c.table, 0);
    ck_assert_uint_eq(c.recs, 3);
    ck_assert_uint_eq(c.queue, 3);
    ck_assert_uint_eq(c.hdr, 1);
    keel_node_destroy(n);

    /* After a restart, from the entries. */
    runs = 0;
    n = start_node();
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "old", "inc", KO, reply), 0);
    ck_assert_str_eq(reply, "5");
    ck_assert_int_eq(call(n, "old", "get", NULL, reply), 0);
    ck_assert_str_eq(reply, "6");
    ck_assert_int_eq(runs, 1);
    finish(n);
}
END_TEST

/* Writes (val non-NULL) or deletes the runtime's entry e[0, el) of
 * tally/id, on a node that is not running, as a store that lost or
 * damaged it would hold it. */
static void raw_entry(keel_node *n, const char *id, const void *e, size_t el,
                      const void *val, size_t vl)
{
    uint32_t shard = keel_shard_of("tally", id, strlen(id),
                                   n->opts.shard_count);
    keel_batch *b = keel_batch_create();
    uint8_t key[KEEL_KEY_MAX];
    int kl, st;

    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(keel_batch_begin_group(b, "", (uint16_t)shard, 1, NULL),
                     0);
    kl = keel_key_encode(key, (uint16_t)shard, "tally", 5, id, strlen(id), e,
                         el);
    ck_assert_int_gt(kl, 0);
    if (val != NULL)
        ck_assert_int_eq(keel_batch_put(b, key, (size_t)kl, 1, val, vl), 0);
    else
        ck_assert_int_eq(keel_batch_del(b, key, (size_t)kl), 0);
    ck_assert_int_eq(keel_store_commit(n->store, b), 0);
    keel_batch_group(b, 0, &st);
    ck_assert_int_eq(st, 0);
    keel_batch_destroy(b);
}

/* keel_turn_entries lists the handler's entries only, however many
 * request-key records the actor holds: resident (the overlay) and
 * reloaded (the store). */
START_TEST(listing_skips_request_keys)
{
    keel_node *n = start_node();
    char reply[256];
    uint8_t k[16];
    unsigned i;

    ck_assert_int_eq(keel_node_start(n), 0);
    for (i = 0; i < 20; i++) {
        key_n(k, i + 1);
        ck_assert_int_eq(call(n, "lister", "put", k, reply), 0);
    }
    ck_assert_int_eq(call(n, "lister", "list", NULL, reply), 0);
    ck_assert_str_eq(reply, "20 ok");
    finish(n);
    n = start_node();
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "lister", "list", NULL, reply), 0);
    ck_assert_str_eq(reply, "20 ok");
    key_n(k, 1);
    ck_assert_int_eq(call(n, "lister", "put", k, reply), 0);
    ck_assert_str_eq(reply, "1"); /* answered from its record */
    ck_assert_int_eq(call(n, "lister", "list", NULL, reply), 0);
    ck_assert_str_eq(reply, "20 ok");
    finish(n);
}
END_TEST

/* The queue's header only says what to forget: an unreadable one does
 * not stop the actor's keyed writes (every one would fail, for ever). It
 * is made again from the queue's entries, and the records stay as they
 * were: a retry is still answered from its record. */
START_TEST(unreadable_header_remade)
{
    keel_node *n = start_node();
    char reply[256];
    struct rk_count c;
    uint8_t k[16];

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "hdr", "inc", K1, reply), 0);
    key_n(k, 2);
    ck_assert_int_eq(call(n, "hdr", "inc", k, reply), 0);
    finish(n);
    n = start_node();
    raw_entry(n, "hdr", KEEL_DEDUP_Q_HDR, KEEL_DEDUP_Q_HDR_LEN, "bad", 3);
    ck_assert_int_eq(keel_node_start(n), 0);
    key_n(k, 3);
    ck_assert_int_eq(call(n, "hdr", "inc", k, reply), 0);
    ck_assert_str_eq(reply, "3");
    ck_assert_int_eq(call(n, "hdr", "inc", K1, reply), 0);
    ck_assert_str_eq(reply, "1");
    ck_assert_int_eq(runs, 3);
    finish(n);
    n = start_node();
    rk_count(n, "hdr", &c);
    ck_assert_uint_eq(c.recs, 3);
    ck_assert_uint_eq(c.queue, 3);
    ck_assert_uint_eq(c.hdr, 1);
    keel_node_destroy(n);
}
END_TEST

/* A header lost while its queue's entries stay (a store that kept some
 * of an actor's records): the next keyed write does not take the places
 * of the entries there (their records would never be forgotten), and
 * once the retention is over they are all forgotten. */
START_TEST(lost_header_keeps_places)
{
    keel_node *n = start_node_ret(SHORT_MS);
    char reply[256];
    struct rk_count c;
    uint8_t k[16];
    unsigned i;

    ck_assert_int_eq(keel_node_start(n), 0);
    for (i = 0; i < 3; i++) {
        key_n(k, i + 1);
        ck_assert_int_eq(call(n, "lost", "inc", k, reply), 0);
    }
    finish(n);
    n = start_node_ret(SHORT_MS);
    raw_entry(n, "lost", KEEL_DEDUP_Q_HDR, KEEL_DEDUP_Q_HDR_LEN, NULL, 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    key_n(k, 4);
    ck_assert_int_eq(call(n, "lost", "inc", k, reply), 0);
    /* Waiting out the retention is what is tested here. */
    usleep(2 * SHORT_MS * 1000);
    key_n(k, 5);
    ck_assert_int_eq(call(n, "lost", "inc", k, reply), 0);
    ck_assert_str_eq(reply, "5");
    finish(n);
    n = start_node();
    rk_count(n, "lost", &c);
    ck_assert_uint_eq(c.recs, 1);
    ck_assert_uint_eq(c.queue, 1);
    ck_assert_uint_eq(c.hdr, 1);
    keel_node_destroy(n);
}
END_TEST

/* An unreadable queue entry at the front is dropped (with a warning) as
 * the forgetting reaches it; it does not fail the actor's keyed writes
 * for ever. */
START_TEST(unreadable_queue_entry_dropped)
{
    keel_node *n = start_node_ret(SHORT_MS);
    uint8_t qk[KEEL_DEDUP_Q_PREFIX_LEN + 8] = {0};
    char reply[256];
    struct rk_count c;
    uint8_t k[16];

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "qbad", "inc", K1, reply), 0);
    key_n(k, 2);
    ck_assert_int_eq(call(n, "qbad", "inc", k, reply), 0);
    finish(n);
    n = start_node_ret(SHORT_MS);
    memcpy(qk, KEEL_DEDUP_Q_PREFIX, KEEL_DEDUP_Q_PREFIX_LEN); /* seq 0 */
    raw_entry(n, "qbad", qk, sizeof qk, "bad", 3);
    ck_assert_int_eq(keel_node_start(n), 0);
    /* Waiting out the retention is what is tested here. */
    usleep(2 * SHORT_MS * 1000);
    key_n(k, 3);
    ck_assert_int_eq(call(n, "qbad", "inc", k, reply), 0);
    ck_assert_str_eq(reply, "3");
    finish(n);
    n = start_node();
    rk_count(n, "qbad", &c);
    /* K1's record cannot be found from its entry: it stays until K1 is
     * written again. */
    ck_assert_uint_eq(c.recs, 2);
    ck_assert_uint_eq(c.queue, 1);
    ck_assert_uint_eq(c.hdr, 1);
    keel_node_destroy(n);
}
END_TEST

/* An unreadable record refuses its own key (whether that request ran
 * cannot be told), saying so, and nothing else: other keys run. */
START_TEST(unreadable_record_refuses_its_key)
{
    keel_node *n = start_node();
    uint8_t ek[KEEL_DEDUP_REC_PREFIX_LEN + 16];
    char reply[256];
    uint8_t k[16];

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "rbad", "inc", K1, reply), 0);
    finish(n);
    n = start_node();
    memcpy(ek, KEEL_DEDUP_REC_PREFIX, KEEL_DEDUP_REC_PREFIX_LEN);
    memcpy(ek + KEEL_DEDUP_REC_PREFIX_LEN, K1, 16);
    raw_entry(n, "rbad", ek, sizeof ek, "bad", 3);
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "rbad", "inc", K1, reply), KEEL_ECORRUPT);
    ck_assert_msg(strstr(reply, "unreadable") != NULL, "%s", reply);
    key_n(k, 2);
    ck_assert_int_eq(call(n, "rbad", "inc", k, reply), 0);
    ck_assert_str_eq(reply, "2");
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
    tcase_add_test(tc, late_copy_of_a_turn_that_changed_nothing);
    tcase_add_test(tc, late_copy_of_a_refused_turn);
    tcase_add_test(tc, refusal_recorded_on_activation);
    tcase_add_test(tc, node_failure_not_recorded);
    tcase_add_test(tc, activation_failure_is_not_an_answer);
    tcase_add_test(tc, refusal_on_lost_write_runs_again);
    tcase_add_test(tc, refusal_not_carried_into_a_new_mailbox);
    tcase_add_test(tc, refusal_not_kept_is_not_answered);
    tcase_add_test(tc, recorded_refusal_releases_its_turn);
    tcase_add_test(tc, record_outlives_many_keyed_writes);
    tcase_add_test(tc, record_forgotten_after_retention);
    tcase_add_test(tc, old_table_read_then_moved);
    tcase_add_test(tc, listing_skips_request_keys);
    tcase_add_test(tc, unreadable_header_remade);
    tcase_add_test(tc, lost_header_keeps_places);
    tcase_add_test(tc, unreadable_queue_entry_dropped);
    tcase_add_test(tc, unreadable_record_refuses_its_key);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
