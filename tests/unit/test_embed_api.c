/* The public API as an embedder meets it, in process on a real LMDB
 * store: what keel answers when it is misused, and that the answer names
 * the problem.
 *  - a handler (or on_activate) that returns something other than 0 or
 *    a KEEL_E* code fails its turn with KEEL_EHANDLER and a text naming
 *    the value, and nothing it wrote is kept;
 *  - keel_call and keel_cast from a thread other than the loop thread,
 *    while the node runs, are refused with KEEL_EINVAL (and nothing is
 *    sent); from the loop thread they run;
 *  - keel_call_sync gives a text with every error, those it raises
 *    before the call runs included, and an unknown type is named;
 *  - the turn calls refuse NULL buffers with a length (and NULL out
 *    pointers) with KEEL_EINVAL instead of reading through them;
 *  - keel_node_destroy of a node still running from keel_node_start
 *    stops it (its writes are durable) instead of waiting for ever;
 *  - keel_node_readiness off the loop thread, while the node runs, is
 *    refused with KEEL_EINVAL and a text saying where to call it;
 *  - keel_node_register_type right after keel_node_start is refused,
 *    before the loop thread (which reads the types) marks the node
 *    running;
 *  - keel_call_sync_timed returns at its deadline while the loop is stuck
 *    in a handler, and the call then never runs; keel_call_timed answers
 *    a call not started by its deadline KEEL_EDEADLINE, and it never
 *    runs;
 *  - a turn that holds the loop thread long is logged. */
#include <check.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acall.h"
#include "keel.h"
#include "runtime/node.h"
#include "testutil.h"

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir("embed_api");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

static keel_node *make_node(void)
{
    keel_node_options o;
    keel_node *n;
    char err[256];
    int rc;

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_WARN;
    rc = keel_node_create(&o, &n, err, sizeof err);
    ck_assert_msg(rc == 0, "create: %s %s", keel_strerror(rc), err);
    return n;
}

static void finish(keel_node *n)
{
    keel_node_stop(n);
    keel_node_join(n);
    keel_node_destroy(n);
}

/* Calls and copies the reply (or error text) into out. */
static int callx(keel_node *n, const char *type, const char *id,
                 const char *msg, char *out, size_t outlen)
{
    void *reply;
    size_t len;
    int rc = keel_call_sync(n, type, id, strlen(id), msg, strlen(msg), &reply,
                            &len);
    size_t m = len < outlen - 1 ? len : outlen - 1;

    memcpy(out, reply != NULL ? reply : "", m);
    out[m] = '\0';
    keel_free(reply);
    return rc;
}

/* "peek": the state; "ret N": writes the state "dirty", then returns N;
 * "ret-text N": the same with an error text of its own. */
static int ret_message(keel_turn *t, const void *msg, size_t len)
{
    char m[64];
    const void *st;
    size_t sl;

    snprintf(m, sizeof m, "%.*s", (int)len, (const char *)msg);
    if (strcmp(m, "peek") == 0) {
        keel_turn_state(t, &st, &sl);
        return keel_turn_reply(t, st, sl);
    }
    if (strcmp(m, "set") == 0)
        return keel_turn_set_state(t, "clean", 5);
    keel_turn_set_state(t, "dirty", 5);
    keel_turn_put(t, "e", 1, "x", 1);
    if (strncmp(m, "ret-text ", 9) == 0) {
        keel_turn_error(t, "my own words");
        return atoi(m + 9);
    }
    return atoi(m + 4);
}

static int activate_positive(keel_turn *t)
{
    (void)t;
    return 1;
}

START_TEST(handler_codes_outside_the_table)
{
    keel_node *n = make_node();
    keel_actor_type rt = {.name = "ret", .on_message = ret_message};
    keel_actor_type at = {.name = "act", .on_message = ret_message,
                          .on_activate = activate_positive};
    char buf[512];

    ck_assert_int_eq(keel_node_register_type(n, &rt), 0);
    ck_assert_int_eq(keel_node_register_type(n, &at), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(callx(n, "ret", "a", "set", buf, sizeof buf), 0);

    /* A positive return would pass for success to `rc < 0`. */
    ck_assert_int_eq(callx(n, "ret", "a", "ret 1", buf, sizeof buf),
                     KEEL_EHANDLER);
    ck_assert_str_eq(buf, "the handler of actor type 'ret' returned 1, "
                          "which is not 0 or a KEEL_E* code");
    ck_assert_int_eq(callx(n, "ret", "a", "ret -999", buf, sizeof buf),
                     KEEL_EHANDLER);
    ck_assert_ptr_nonnull(strstr(buf, "returned -999"));
    /* The handler's own text stays. */
    ck_assert_int_eq(callx(n, "ret", "a", "ret-text 7", buf, sizeof buf),
                     KEEL_EHANDLER);
    ck_assert_str_eq(buf, "my own words");
    /* KEEL_E* codes go through as they are. */
    ck_assert_int_eq(callx(n, "ret", "a", "ret -8", buf, sizeof buf),
                     KEEL_EBADMSG);
    /* None of the failed turns kept its writes. */
    ck_assert_int_eq(callx(n, "ret", "a", "peek", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "clean");

    ck_assert_int_eq(callx(n, "act", "a", "set", buf, sizeof buf),
                     KEEL_EHANDLER);
    ck_assert_str_eq(buf, "the on_activate of actor type 'act' returned 1, "
                          "which is not 0 or a KEEL_E* code");
    finish(n);
}
END_TEST

static void never_cb(int status, const void *reply, size_t len, void *data)
{
    (void)status;
    (void)reply;
    (void)len;
    ck_abort_msg("a refused call completed: %s", (const char *)data);
}

START_TEST(async_calls_off_the_loop_thread)
{
    keel_node *n = make_node();
    tu_acall c;
    char buf[64];

    ck_assert_int_eq(keel_node_start(n), 0);
    /* Once the loop runs (a blocking call went through it), calls from
     * this thread are refused. */
    ck_assert_int_eq(callx(n, "counter", "c", "get", buf, sizeof buf), 0);
    ck_assert_int_eq(keel_call(n, "counter", "c", 1, "incr", 4, never_cb,
                               "call"),
                     KEEL_EINVAL);
    ck_assert_int_eq(keel_cast(n, "counter", "c", 1, "incr", 4, never_cb,
                               "cast"),
                     KEEL_EINVAL);
    ck_assert_int_eq(callx(n, "counter", "c", "get", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "0");
    /* The same call made on the loop thread runs. */
    tu_acall_start(n, &c, "counter", "c", "incr", NULL);
    tu_acall_wait(&c);
    ck_assert_int_eq(c.status, 0);
    ck_assert_str_eq(c.reply, "1");
    finish(n);
}
END_TEST

/* Expects code and a reply that is the text want. */
static void refused(int rc, void *reply, size_t len, int code,
                    const char *want)
{
    ck_assert_int_eq(rc, code);
    ck_assert_ptr_nonnull(reply);
    ck_assert_uint_eq(len, strlen(want));
    ck_assert_mem_eq(reply, want, len);
    keel_free(reply);
}

struct on_loop {
    keel_node *n;
    int rc;
    void *reply;
    size_t len;
};

static void sync_on_loop(keel_node *n, void *data)
{
    struct on_loop *l = data;

    l->rc = keel_call_sync(n, "counter", "c", 1, "get", 3, &l->reply,
                           &l->len);
}

START_TEST(sync_call_error_texts)
{
    keel_node_options o;
    keel_node *n;
    char err[256], id[KEEL_MAX_ID_LEN + 1], big[600];
    void *reply;
    size_t len;
    int rc;
    struct on_loop l = {0};
    tu_acall c;

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_WARN;
    o.max_frame = 512;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    ck_assert_int_eq(keel_node_start(n), 0);

    rc = keel_call_sync(n, "nosuch", "a", 1, "x", 1, &reply, &len);
    refused(rc, reply, len, KEEL_ENOTYPE,
            "no actor type 'nosuch' is registered on this node");
    rc = keel_call_sync(n, NULL, "a", 1, "x", 1, &reply, &len);
    refused(rc, reply, len, KEEL_EINVAL, "keel_call_sync: the type is NULL");
    rc = keel_call_sync(n, "counter", NULL, 1, "x", 1, &reply, &len);
    refused(rc, reply, len, KEEL_EINVAL,
            "keel_call_sync: the id (with a length) is NULL");
    memset(id, 'i', sizeof id);
    rc = keel_call_sync(n, "counter", id, sizeof id, "get", 3, &reply, &len);
    refused(rc, reply, len, KEEL_ELIMIT,
            "an id of 256 bytes: ids are at most 255");
    memset(big, 'x', sizeof big);
    rc = keel_call_sync(n, "counter", "a", 1, big, sizeof big, &reply, &len);
    refused(rc, reply, len, KEEL_ETOOBIG,
            "a message of 600 bytes: the node's max_frame is 512");
    /* Without a place for the text, only the code. */
    ck_assert_int_eq(keel_call_sync(n, "nosuch", "a", 1, "x", 1, NULL, NULL),
                     KEEL_ENOTYPE);

    /* From the loop thread. */
    ck_assert_int_eq(keel_node_post(n, sync_on_loop, &l), 0);
    tu_acall_start(n, &c, "counter", "c", "get", NULL); /* runs after it */
    tu_acall_wait(&c);
    refused(l.rc, l.reply, l.len, KEEL_EINVAL,
            "keel_call_sync on the node's loop thread would wait for "
            "itself: use keel_call there");

    keel_node_stop(n);
    keel_node_join(n);
    rc = keel_call_sync(n, "counter", "a", 1, "get", 3, &reply, &len);
    refused(rc, reply, len, KEEL_ESTOPPING, keel_strerror(KEEL_ESTOPPING));
    keel_node_destroy(n);
}
END_TEST

static int noop_entry(const void *k, size_t kl, const void *v, size_t vl,
                      void *data)
{
    (void)k;
    (void)kl;
    (void)v;
    (void)vl;
    (void)data;
    return 0;
}

/* Each turn call with a NULL where a buffer belongs; the reply lists the
 * codes. The turn fails after them, so nothing is kept either way. */
static int null_message(keel_turn *t, const void *msg, size_t len)
{
    const void *v;
    size_t vl;
    char codes[256];
    /* Through a pointer: the compilers refuse a NULL format at once. */
    int (*replyf)(keel_turn *, const char *, ...) = keel_turn_replyf;

    (void)msg;
    (void)len;
    snprintf(codes, sizeof codes, "%s %s %s %s %s %s %s %s %s",
             keel_err_name(keel_turn_set_state(t, NULL, 5)),
             keel_err_name(keel_turn_reply(t, NULL, 5)),
             keel_err_name(replyf(t, NULL)),
             keel_err_name(keel_turn_put(t, "k", 1, NULL, 5)),
             keel_err_name(keel_turn_put(t, NULL, 1, "v", 1)),
             keel_err_name(keel_turn_get(t, "k", 1, NULL, &vl)),
             keel_err_name(keel_turn_get(t, "k", 1, &v, NULL)),
             keel_err_name(keel_turn_del(t, NULL, 1)),
             keel_err_name(keel_turn_entries(t, NULL, NULL)));
    /* Empty buffers are fine. */
    if (keel_turn_set_state(t, NULL, 0) != 0 ||
        keel_turn_put(t, "k", 1, NULL, 0) != 0 ||
        keel_turn_entries(t, noop_entry, NULL) != 0)
        return KEEL_EHANDLER;
    keel_turn_error(t, "%s", codes);
    return KEEL_EBADMSG;
}

START_TEST(turn_calls_refuse_null_buffers)
{
    keel_node *n = make_node();
    keel_actor_type nt = {.name = "nulls", .on_message = null_message};
    char buf[512];

    ck_assert_int_eq(keel_node_register_type(n, &nt), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(callx(n, "nulls", "a", "go", buf, sizeof buf),
                     KEEL_EBADMSG);
    ck_assert_str_eq(buf, "EINVAL EINVAL EINVAL EINVAL EINVAL EINVAL EINVAL "
                          "EINVAL EINVAL");
    finish(n);
}
END_TEST

START_TEST(destroy_stops_a_started_node)
{
    keel_node *n = make_node();
    char buf[64];

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(callx(n, "counter", "c", "incr 5", buf, sizeof buf), 0);
    keel_node_destroy(n); /* no keel_node_stop: within the test's timeout */

    n = make_node();
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(callx(n, "counter", "c", "get", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "5");
    keel_node_destroy(n);
}
END_TEST

struct ready {
    int rc;
    const char *why;
};

static void ready_on_loop(keel_node *n, void *data)
{
    struct ready *r = data;

    r->rc = keel_node_readiness(n, &r->why);
}

START_TEST(readiness_off_the_loop_thread)
{
    keel_node *n = make_node();
    struct ready r = {-1, NULL};
    const char *why = NULL;
    tu_acall c;
    char buf[64];

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(callx(n, "counter", "c", "get", buf, sizeof buf), 0);
    ck_assert_int_eq(keel_node_readiness(n, &why), KEEL_EINVAL);
    ck_assert_str_eq(why, "keel_node_readiness: call it on the node's loop "
                          "thread (from a keel_node_post job)");
    ck_assert_int_eq(keel_node_post(n, ready_on_loop, &r), 0);
    tu_acall_start(n, &c, "counter", "c", "get", NULL); /* runs after it */
    tu_acall_wait(&c);
    ck_assert_int_eq(r.rc, 0);
    finish(n);
}
END_TEST

static int echo_message(keel_turn *t, const void *msg, size_t len)
{
    return keel_turn_reply(t, msg, len);
}

START_TEST(register_after_start_refused)
{
    keel_node *n = make_node();
    keel_actor_type et = {.name = "echo", .on_message = echo_message};
    char buf[64];

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(keel_node_register_type(n, &et), KEEL_EINVAL);
    ck_assert_int_eq(callx(n, "echo", "a", "hi", buf, sizeof buf),
                     KEEL_ENOTYPE);
    finish(n);
}
END_TEST

/* A node runs once: started again after it stopped, or while
 * keel_node_run runs on another thread, it says so (KEEL_EINVAL) rather
 * than returning 0 for a node that never serves. */
static void *run_thread(void *arg)
{
    return (void *)(intptr_t)keel_node_run(arg);
}

START_TEST(a_node_runs_once)
{
    keel_node *n = make_node();
    pthread_t th;
    void *ret;
    char buf[64];
    int tries;

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(callx(n, "counter", "c", "incr 2", buf, sizeof buf), 0);
    keel_node_stop(n);
    ck_assert_int_eq(keel_node_join(n), 0);
    ck_assert_int_eq(keel_node_start(n), KEEL_EINVAL);
    ck_assert_int_eq(keel_node_run(n), KEEL_EINVAL);
    keel_node_destroy(n);

    n = make_node();
    ck_assert_int_eq(pthread_create(&th, NULL, run_thread, n), 0);
    /* Served: keel_node_run has begun on the other thread. */
    ck_assert_int_eq(callx(n, "counter", "c", "get", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "2");
    ck_assert_int_eq(keel_node_start(n), KEEL_EINVAL);
    for (tries = 0; tries < 3; tries++)
        ck_assert_int_eq(callx(n, "counter", "c", "get", buf, sizeof buf),
                         0);
    keel_node_stop(n);
    ck_assert_int_eq(pthread_join(th, &ret), 0);
    ck_assert_int_eq((int)(intptr_t)ret, 0);
    keel_node_destroy(n);

    /* keel_node_start racing keel_node_run: exactly one of them has the
     * node, and keel_node_start says which (0 only when its own thread
     * runs it; else keel_node_destroy would stop and join the wrong
     * thread and free the node under the running loop). */
    for (tries = 0; tries < 20; tries++) {
        int rc;
        n = make_node();
        ck_assert_int_eq(pthread_create(&th, NULL, run_thread, n), 0);
        rc = keel_node_start(n);
        keel_node_stop(n);
        ck_assert_int_eq(pthread_join(th, &ret), 0);
        if (rc == 0) {
            ck_assert_msg((int)(intptr_t)ret == KEEL_EINVAL,
                          "keel_node_start said 0, but keel_node_run on "
                          "the other thread ran the node (%s)",
                          keel_err_name((int)(intptr_t)ret));
            ck_assert_int_eq(keel_node_join(n), 0);
        } else {
            ck_assert_int_eq(rc, KEEL_EINVAL);
            ck_assert_int_eq((int)(intptr_t)ret, 0);
        }
        keel_node_destroy(n);
    }
}
END_TEST

/* An actor id may be empty, with a NULL pointer: no byte is read from it
 * (a sanitizer build reports a copy from NULL otherwise). */
START_TEST(an_empty_id_may_be_null)
{
    keel_node *n = make_node();
    void *reply = NULL;
    size_t len = 0;

    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(keel_call_sync(n, "counter", NULL, 0, "incr 3", 6,
                                    &reply, &len),
                     0);
    keel_free(reply);
    reply = NULL;
    ck_assert_int_eq(keel_call_sync(n, "counter", "", 0, "get", 3, &reply,
                                    &len),
                     0);
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq(((const char *)reply)[0], '3');
    keel_free(reply);
    finish(n);
}
END_TEST

/* Options keeld would refuse are refused here too, with a text. */
START_TEST(create_refuses_options_out_of_range)
{
    keel_node_options o;
    keel_node *n = NULL;
    char err[256];

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = 99;
    err[0] = '\0';
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), KEEL_EINVAL);
    ck_assert_ptr_null(n);
    ck_assert_msg(strstr(err, "log level") != NULL, "%s", err);
    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_WARN;
    o.replicas = KEEL_REPLICAS_MAX + 1;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), KEEL_EINVAL);
    ck_assert_msg(strstr(err, "replicas") != NULL, "%s", err);
    o.replicas = 0;
    o.cluster = "c1";
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), KEEL_EINVAL);
    ck_assert_msg(strstr(err, "zk_hosts") != NULL, "%s", err);
    o.cluster = NULL;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    keel_node_destroy(n);
}
END_TEST

/* A keyed blocking call sent again with its key is answered with the
 * first outcome and does not run again. */
START_TEST(a_keyed_sync_call_runs_once)
{
    keel_node *n = make_node();
    uint8_t key[KEEL_REQUEST_KEY_LEN] = {7, 1, 2, 3};
    void *reply = NULL;
    size_t len = 0;
    int i;

    ck_assert_int_eq(keel_node_start(n), 0);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(keel_call_sync_keyed(n, key, "counter", "k", 1,
                                              "incr 4", 6, &reply, &len),
                         0);
        ck_assert_uint_eq(len, 1);
        ck_assert_int_eq(((const char *)reply)[0], '4');
        keel_free(reply);
        reply = NULL;
    }
    ck_assert_int_eq(keel_call_sync(n, "counter", "k", 1, "get", 3, &reply,
                                    &len),
                     0);
    ck_assert_uint_eq(len, 1);
    ck_assert_int_eq(((const char *)reply)[0], '4');
    keel_free(reply);
    reply = NULL;
    ck_assert_int_eq(keel_call_sync_keyed(n, NULL, "counter", "k", 1, "get",
                                          3, &reply, &len),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(reply);
    keel_free(reply);
    finish(n);
}
END_TEST

/* A handler that holds the loop thread: "hold" posts gate_in, then waits
 * for gate_out. */
static sem_t gate_in, gate_out, post_in, post_out;

static int gate_message(keel_turn *t, const void *msg, size_t len)
{
    (void)t;
    (void)msg;
    (void)len;
    sem_post(&gate_in);
    sem_wait(&gate_out);
    return 0;
}

static void gate_cb(int status, const void *reply, size_t len, void *data)
{
    (void)reply;
    (void)len;
    *(int *)data = status;
}

/* On the loop thread: queues "hold" for gate/g (it runs later), then
 * waits until the test lets it go. */
static void hold_post(keel_node *n, void *data)
{
    ck_assert_int_eq(keel_call(n, "gate", "g", 1, "hold", 4, gate_cb, data),
                     0);
    sem_post(&post_in);
    sem_wait(&post_out);
}

struct timed {
    keel_node *n;
    const uint8_t *key;
    uint32_t ms;
    const char *msg;
    int rc;
    char text[256];
};

static void *timed_thread(void *arg)
{
    struct timed *c = arg;
    char *m = strdup(c->msg); /* freed as soon as the call returns */
    void *reply = NULL;
    size_t len = 0;

    c->rc = keel_call_sync_timed(c->n, c->key, c->ms, "counter", "k", 1, m,
                                 strlen(m), &reply, &len);
    free(m);
    snprintf(c->text, sizeof c->text, "%.*s", (int)len,
             reply != NULL ? (const char *)reply : "");
    keel_free(reply);
    return NULL;
}

/* How many posts wait for the loop. */
static int posts_queued(keel_node *n)
{
    struct keel_post *p;
    int k = 0;

    pthread_mutex_lock(&n->post_mu);
    for (p = n->post_head; p != NULL; p = p->next)
        k++;
    pthread_mutex_unlock(&n->post_mu);
    return k;
}

/* A blocking call with a deadline returns at it while the loop is held
 * in a handler, and does not run afterwards: neither when it was queued
 * behind the handler (its turn would start past its deadline) nor when
 * the loop had not even taken it. Retried with its key, it runs once. */
START_TEST(a_timed_sync_call_returns_at_its_deadline)
{
    keel_node *n = make_node();
    keel_actor_type gate = {.name = "gate", .on_message = gate_message};
    uint8_t key[KEEL_REQUEST_KEY_LEN] = {9, 9, 1};
    struct timed c = {.n = n, .key = NULL, .ms = 300, .msg = "incr 5"};
    struct timed d = {.n = n, .key = key, .ms = 200, .msg = "incr 7"};
    pthread_t th;
    char buf[64];
    int i, held = 1;

    sem_init(&gate_in, 0, 0);
    sem_init(&gate_out, 0, 0);
    sem_init(&post_in, 0, 0);
    sem_init(&post_out, 0, 0);
    ck_assert_int_eq(keel_node_register_type(n, &gate), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(callx(n, "counter", "k", "get", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "0");
    /* The loop queues "hold" and waits; meanwhile the timed call is
     * posted, so that both are queued before either turn runs. */
    ck_assert_int_eq(keel_node_post(n, hold_post, &held), 0);
    sem_wait(&post_in);
    ck_assert_int_eq(pthread_create(&th, NULL, timed_thread, &c), 0);
    for (i = 0; i < 500 && posts_queued(n) < 1; i++)
        usleep(10000);
    ck_assert_int_eq(posts_queued(n), 1);
    sem_post(&post_out);
    sem_wait(&gate_in); /* the loop is in the handler now */
    pthread_join(th, NULL);
    ck_assert_msg(c.rc == KEEL_ETIMEDOUT, "%s: %s", keel_err_name(c.rc),
                  c.text);
    ck_assert_ptr_nonnull(strstr(c.text, "300 ms"));
    /* One the loop has not taken by its deadline. */
    ck_assert_int_eq(pthread_create(&th, NULL, timed_thread, &d), 0);
    pthread_join(th, NULL);
    ck_assert_msg(d.rc == KEEL_ETIMEDOUT, "%s: %s", keel_err_name(d.rc),
                  d.text);
    sem_post(&gate_out);
    ck_assert_int_eq(callx(n, "counter", "k", "get", buf, sizeof buf), 0);
    ck_assert_msg(strcmp(buf, "0") == 0,
                  "a call whose caller was answered at its deadline ran "
                  "after it: the counter is at %s",
                  buf);
    ck_assert_int_eq(held, 0);
    /* Sent again with its key, the second one runs, once. */
    d.ms = 10000;
    for (i = 0; i < 2; i++) {
        ck_assert_int_eq(pthread_create(&th, NULL, timed_thread, &d), 0);
        pthread_join(th, NULL);
        ck_assert_msg(d.rc == 0, "%s: %s", keel_err_name(d.rc), d.text);
        ck_assert_str_eq(d.text, "7");
    }
    ck_assert_int_eq(callx(n, "counter", "k", "get", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "7");
    finish(n);
    sem_destroy(&gate_in);
    sem_destroy(&gate_out);
    sem_destroy(&post_in);
    sem_destroy(&post_out);
}
END_TEST

static void *untimed_thread(void *arg)
{
    struct timed *c = arg;
    void *reply = NULL;
    size_t len = 0;

    c->rc = keel_call_sync(c->n, "counter", "k", 1, c->msg, strlen(c->msg),
                           &reply, &len);
    snprintf(c->text, sizeof c->text, "%.*s", (int)len,
             reply != NULL ? (const char *)reply : "");
    keel_free(reply);
    return NULL;
}

/* Blocking calls made to a node that is destroyed without ever running
 * are answered KEEL_ESTOPPING, timed or not, instead of waiting for ever
 * (or leaking what the timed one shares with the loop). */
START_TEST(calls_to_a_node_destroyed_unstarted_are_answered)
{
    keel_node *n = make_node();
    struct timed c = {.n = n, .msg = "incr 1"};
    struct timed d = {.n = n, .ms = 60000, .msg = "incr 2"};
    pthread_t tc, td;
    int i;

    ck_assert_int_eq(pthread_create(&tc, NULL, untimed_thread, &c), 0);
    ck_assert_int_eq(pthread_create(&td, NULL, timed_thread, &d), 0);
    for (i = 0; i < 500 && posts_queued(n) < 2; i++)
        usleep(10000);
    ck_assert_int_eq(posts_queued(n), 2);
    keel_node_destroy(n);
    pthread_join(tc, NULL);
    pthread_join(td, NULL);
    ck_assert_msg(c.rc == KEEL_ESTOPPING, "%s: %s", keel_err_name(c.rc),
                  c.text);
    ck_assert_msg(d.rc == KEEL_ESTOPPING, "%s: %s", keel_err_name(d.rc),
                  d.text);
}
END_TEST

static int spin_message(keel_turn *t, const void *msg, size_t len)
{
    (void)t;
    (void)msg;
    (void)len;
    usleep(300000);
    return 0;
}

struct slow_log {
    int lines;
    char first[512];
};

static void slow_log_cb(void *data, int level, const char *msg)
{
    struct slow_log *l = data;

    if (level != KEEL_LOG_WARN || strstr(msg, "held the node's loop") == NULL)
        return;
    if (l->lines++ == 0)
        snprintf(l->first, sizeof l->first, "%s", msg);
}

/* A turn that holds the loop thread long is logged, naming the actor. */
START_TEST(a_slow_turn_is_logged)
{
    keel_node *n = make_node();
    keel_actor_type spin = {.name = "spin", .on_message = spin_message};
    struct slow_log l;
    char buf[64];

    memset(&l, 0, sizeof l);
    ck_assert_int_eq(keel_node_register_type(n, &spin), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(callx(n, "counter", "k", "incr", buf, sizeof buf), 0);
    keel_log_set_callback(slow_log_cb, &l);
    ck_assert_int_eq(callx(n, "spin", "slowpoke", "x", buf, sizeof buf), 0);
    keel_log_set_callback(NULL, NULL);
    finish(n);
    ck_assert_int_eq(l.lines, 1);
    ck_assert_msg(strstr(l.first, "spin 'slowpoke'") != NULL, "%s", l.first);
}
END_TEST

/* nap: "sleep" holds the loop 300 ms; "incr" adds one to its count and
 * answers it; "get" answers it. */
static int nap_message(keel_turn *t, const void *msg, size_t len)
{
    const void *st;
    size_t sl;
    unsigned long long v = 0;
    char buf[32];

    if (len == 5 && memcmp(msg, "sleep", 5) == 0) {
        usleep(300000);
        return 0;
    }
    keel_turn_state(t, &st, &sl);
    if (sl > 0 && sl < sizeof buf) {
        memcpy(buf, st, sl);
        buf[sl] = '\0';
        v = strtoull(buf, NULL, 10);
    }
    if (len == 4 && memcmp(msg, "incr", 4) == 0) {
        int n = snprintf(buf, sizeof buf, "%llu", ++v);
        int rc = keel_turn_set_state(t, buf, (size_t)n);
        return rc != 0 ? rc : keel_turn_replyf(t, "%llu", v);
    }
    return keel_turn_replyf(t, "%llu", v);
}

struct timed_async {
    sem_t done;
    int status[3];
    int rc[3];
};

static void timed_async_cb(int status, const void *reply, size_t len,
                           void *data)
{
    int *slot = data;

    (void)reply;
    (void)len;
    *slot = status;
}

static void last_async_cb(int status, const void *reply, size_t len,
                          void *data)
{
    struct timed_async *ta = data;

    (void)reply;
    (void)len;
    ta->status[2] = status;
    sem_post(&ta->done);
}

/* On the loop thread: a call that holds the actor 300 ms, then two to the
 * same actor behind it, with deadlines of 100 ms and 10 s. */
static void timed_async_post(keel_node *n, void *data)
{
    struct timed_async *ta = data;

    ta->rc[0] = keel_call(n, "nap", "a", 1, "sleep", 5, timed_async_cb,
                          &ta->status[0]);
    ta->rc[1] = keel_call_timed(n, NULL, 100, "nap", "a", 1, "incr", 4,
                                timed_async_cb, &ta->status[1]);
    ta->rc[2] = keel_cast_timed(n, NULL, 10000, "nap", "a", 1, "incr", 4,
                                last_async_cb, ta);
    if (ta->rc[2] != 0)
        sem_post(&ta->done);
}

/* keel_call_timed: a call whose turn would start past its deadline is
 * answered KEEL_EDEADLINE and never runs; one with time left runs. */
START_TEST(a_timed_call_not_started_by_its_deadline_never_runs)
{
    keel_node *n = make_node();
    keel_actor_type nap = {.name = "nap", .on_message = nap_message};
    struct timed_async ta;
    char buf[64];

    memset(&ta, 0, sizeof ta);
    ta.status[0] = ta.status[1] = ta.status[2] = -1000;
    sem_init(&ta.done, 0, 0);
    ck_assert_int_eq(keel_node_register_type(n, &nap), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    /* Not from another thread while the node runs. */
    ck_assert_int_eq(keel_call_timed(n, NULL, 100, "nap", "a", 1, "incr", 4,
                                     NULL, NULL),
                     KEEL_EINVAL);
    ck_assert_int_eq(keel_node_post(n, timed_async_post, &ta), 0);
    sem_wait(&ta.done);
    ck_assert_int_eq(ta.rc[0], 0);
    ck_assert_int_eq(ta.rc[1], 0);
    ck_assert_int_eq(ta.rc[2], 0);
    ck_assert_int_eq(callx(n, "nap", "a", "get", buf, sizeof buf), 0);
    /* Every answer is in: the get ran after them. */
    ck_assert_int_eq(ta.status[0], 0);
    ck_assert_msg(ta.status[1] == KEEL_EDEADLINE, "the late call: %s",
                  keel_err_name(ta.status[1]));
    ck_assert_int_eq(ta.status[2], 0);
    ck_assert_msg(strcmp(buf, "1") == 0,
                  "the count is %s: the late call ran", buf);
    finish(n);
    sem_destroy(&ta.done);
}
END_TEST

struct late_keyed {
    sem_t done;
    int rc[5];
    int status[5];
    char reply[5][32];
};

struct late_slot {
    struct late_keyed *lk;
    int i;
};

static struct late_slot late_slots[5];

static void late_keyed_cb(int status, const void *reply, size_t len,
                          void *data)
{
    struct late_slot *sl = data;
    struct late_keyed *lk = sl->lk;

    lk->status[sl->i] = status;
    if (len >= sizeof lk->reply[0])
        len = sizeof lk->reply[0] - 1;
    memcpy(lk->reply[sl->i], reply, len);
    lk->reply[sl->i][len] = '\0';
    if (sl->i == 4)
        sem_post(&lk->done);
}

/* On the loop thread: a keyed incr (it runs), a call that holds the actor
 * 300 ms, then behind it two timed copies of 100 ms that come too late:
 * one of the first key, one of a key nothing recorded; last an incr with
 * time to spare. */
static void late_keyed_post(keel_node *n, void *data)
{
    struct late_keyed *lk = data;
    static const uint8_t k1[KEEL_REQUEST_KEY_LEN] = {9, 1};
    static const uint8_t k2[KEEL_REQUEST_KEY_LEN] = {9, 2};

    for (int i = 0; i < 5; i++)
        late_slots[i] = (struct late_slot){lk, i};
    lk->rc[0] = keel_call_timed(n, k1, 0, "nap", "k", 1, "incr", 4,
                                late_keyed_cb, &late_slots[0]);
    lk->rc[1] = keel_call(n, "nap", "k", 1, "sleep", 5, late_keyed_cb,
                          &late_slots[1]);
    lk->rc[2] = keel_call_timed(n, k1, 100, "nap", "k", 1, "incr", 4,
                                late_keyed_cb, &late_slots[2]);
    lk->rc[3] = keel_call_timed(n, k2, 100, "nap", "k", 1, "incr", 4,
                                late_keyed_cb, &late_slots[3]);
    lk->rc[4] = keel_call_timed(n, NULL, 10000, "nap", "k", 1, "incr", 4,
                                late_keyed_cb, &late_slots[4]);
    if (lk->rc[4] != 0)
        sem_post(&lk->done);
}

/* A keyed copy whose deadline passed before its turn does not run; its
 * answer is the outcome its key recorded (a retry must not hear "did not
 * run" of a write an earlier copy made), or KEEL_EDEADLINE when the key
 * recorded nothing. */
START_TEST(a_late_keyed_copy_gets_the_recorded_outcome)
{
    keel_node *n = make_node();
    keel_actor_type nap = {.name = "nap", .on_message = nap_message};
    struct late_keyed lk;
    char buf[64];

    memset(&lk, 0, sizeof lk);
    for (int i = 0; i < 5; i++)
        lk.status[i] = -1000;
    sem_init(&lk.done, 0, 0);
    ck_assert_int_eq(keel_node_register_type(n, &nap), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(keel_node_post(n, late_keyed_post, &lk), 0);
    sem_wait(&lk.done);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(lk.rc[i], 0);
    ck_assert_int_eq(callx(n, "nap", "k", "get", buf, sizeof buf), 0);
    ck_assert_int_eq(lk.status[0], 0);
    ck_assert_str_eq(lk.reply[0], "1");
    ck_assert_msg(lk.status[2] == 0 && strcmp(lk.reply[2], "1") == 0,
                  "the late copy of a key that ran: %s (%s)",
                  keel_err_name(lk.status[2]), lk.reply[2]);
    ck_assert_msg(lk.status[3] == KEEL_EDEADLINE,
                  "the late copy of a key that never ran: %s",
                  keel_err_name(lk.status[3]));
    ck_assert_int_eq(lk.status[4], 0);
    ck_assert_str_eq(lk.reply[4], "2");
    ck_assert_msg(strcmp(buf, "2") == 0,
                  "the count is %s: a late copy ran", buf);
    finish(n);
    sem_destroy(&lk.done);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("embed_api");
    TCase *tc = tcase_create("codes");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, handler_codes_outside_the_table);
    tcase_add_test(tc, async_calls_off_the_loop_thread);
    tcase_add_test(tc, sync_call_error_texts);
    tcase_add_test(tc, turn_calls_refuse_null_buffers);
    tcase_add_test(tc, destroy_stops_a_started_node);
    tcase_add_test(tc, readiness_off_the_loop_thread);
    tcase_add_test(tc, register_after_start_refused);
    tcase_add_test(tc, a_node_runs_once);
    tcase_add_test(tc, an_empty_id_may_be_null);
    tcase_add_test(tc, create_refuses_options_out_of_range);
    tcase_add_test(tc, a_keyed_sync_call_runs_once);
    tcase_add_test(tc, a_timed_sync_call_returns_at_its_deadline);
    tcase_add_test(tc, a_timed_call_not_started_by_its_deadline_never_runs);
    tcase_add_test(tc, a_late_keyed_copy_gets_the_recorded_outcome);
    tcase_add_test(tc, calls_to_a_node_destroyed_unstarted_are_answered);
    tcase_add_test(tc, a_slow_turn_is_logged);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
