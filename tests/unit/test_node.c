/* The runtime in process: turns, activation, passivation, ordering,
 * handler errors, limits and fencing, on a real LMDB store in a temporary
 * directory. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "acall.h"
#include "gates.h"
#include "keel.h"
#include "persistence/store.h"
#include "proc.h"
#include "runtime/node.h"
#include "testutil.h"

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir("node");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

static keel_node *start_node(keel_node_options *o)
{
    keel_node_options def;
    keel_node *n;
    char err[256];
    int rc;

    if (o == NULL) {
        keel_node_options_init(&def);
        o = &def;
    }
    o->data_dir = dir;
    o->log_level = KEEL_LOG_WARN;
    rc = keel_node_create(o, &n, err, sizeof err);
    ck_assert_msg(rc == 0, "create: %s %s", keel_strerror(rc), err);
    return n;
}

static void run(keel_node *n)
{
    ck_assert_int_eq(keel_node_start(n), 0);
}

static void finish(keel_node *n)
{
    keel_node_stop(n);
    keel_node_join(n);
    keel_node_destroy(n);
}

/* Calls and returns the reply as a string (static buffer per call). */
static int callx(keel_node *n, const char *type, const char *id,
                 const char *msg, char *out, size_t outlen)
{
    void *reply;
    size_t len;
    int rc = keel_call_sync(n, type, id, strlen(id), msg, strlen(msg), &reply,
                            &len);

    if (out != NULL) {
        size_t m = len < outlen - 1 ? len : outlen - 1;
        memcpy(out, reply ? reply : "", m);
        out[m] = '\0';
    }
    keel_free(reply);
    return rc;
}

static void expect(keel_node *n, const char *type, const char *id,
                   const char *msg, const char *want)
{
    char buf[4096];
    int rc = callx(n, type, id, msg, buf, sizeof buf);

    ck_assert_msg(rc == 0, "%s %s '%s': %s (%s)", type, id, msg,
                  keel_strerror(rc), buf);
    ck_assert_str_eq(buf, want);
}

START_TEST(counter_survives_restart)
{
    keel_node *n = start_node(NULL);

    run(n);
    expect(n, "counter", "c1", "incr", "1");
    expect(n, "counter", "c1", "incr", "2");
    expect(n, "counter", "c1", "incr 40", "42");
    expect(n, "counter", "c1", "decr 2", "40");
    expect(n, "counter", "c2", "get", "0");
    finish(n);

    n = start_node(NULL);
    run(n);
    expect(n, "counter", "c1", "get", "40");
    expect(n, "counter", "c2", "get", "0");
    finish(n);
}
END_TEST

START_TEST(counter_edges)
{
    keel_node *n = start_node(NULL);
    char buf[128];

    run(n);
    expect(n, "counter", "neg", "decr 5", "-5");
    expect(n, "counter", "neg", "incr 5", "0");
    expect(n, "counter", "big", "incr 9223372036854775807",
           "9223372036854775807");
    ck_assert_int_eq(callx(n, "counter", "big", "incr", buf, sizeof buf),
                     KEEL_EBADMSG); /* overflow refused, state kept */
    expect(n, "counter", "big", "get", "9223372036854775807");
    expect(n, "counter", "min", "decr 9223372036854775807",
           "-9223372036854775807");
    expect(n, "counter", "min", "decr 1", "-9223372036854775808");
    ck_assert_int_eq(callx(n, "counter", "min", "decr", buf, sizeof buf),
                     KEEL_EBADMSG);
    finish(n);
    n = start_node(NULL);
    run(n);
    expect(n, "counter", "min", "get", "-9223372036854775808");
    expect(n, "counter", "neg", "get", "0");
    finish(n);
}
END_TEST

/* A handler that writes state and entries, then fails: nothing of the
 * turn may remain. */
static int failing_message(keel_turn *t, const void *msg, size_t len)
{
    keel_turn_set_state(t, "changed", 7);
    keel_turn_put(t, "e", 1, "x", 1);
    if (len == 4 && memcmp(msg, "fail", 4) == 0) {
        keel_turn_error(t, "asked to fail");
        return KEEL_EHANDLER;
    }
    return keel_turn_reply(t, "ok", 2);
}

static int peek_message(keel_turn *t, const void *msg, size_t len)
{
    const void *s, *v;
    size_t sl, vl;
    int rc;

    (void)msg;
    (void)len;
    keel_turn_state(t, &s, &sl);
    rc = keel_turn_get(t, "e", 1, &v, &vl);
    return keel_turn_replyf(t, "%.*s/%s", (int)sl, (const char *)s,
                            rc == 0 ? "has-e" : "no-e");
}

START_TEST(failed_turn_leaves_state)
{
    keel_node *n = start_node(NULL);
    keel_actor_type ft = {.name = "failer", .on_message = failing_message};
    char buf[256];
    int rc;

    ck_assert_int_eq(keel_node_register_type(n, &ft), 0);
    run(n);
    rc = callx(n, "failer", "a", "fail", buf, sizeof buf);
    ck_assert_int_eq(rc, KEEL_EHANDLER);
    ck_assert_str_eq(buf, "asked to fail");
    expect(n, "failer", "a", "ok", "ok");
    finish(n);
}
END_TEST

/* One type whose messages either write-then-fail or report. */
static int dual_message(keel_turn *t, const void *msg, size_t len)
{
    if (len == 4 && memcmp(msg, "peek", 4) == 0)
        return peek_message(t, msg, len);
    if (len == 3 && memcmp(msg, "set", 3) == 0) {
        keel_turn_set_state(t, "v1", 2);
        keel_turn_put(t, "e", 1, "x", 1);
        return keel_turn_reply(t, "ok", 2);
    }
    keel_turn_set_state(t, "changed", 7);
    keel_turn_del(t, "e", 1);
    keel_turn_error(t, "asked to fail");
    return KEEL_EHANDLER;
}

START_TEST(failed_turn_discards_writes)
{
    keel_node *n = start_node(NULL);
    keel_actor_type dt = {.name = "dual", .on_message = dual_message};
    char buf[256];

    ck_assert_int_eq(keel_node_register_type(n, &dt), 0);
    run(n);
    expect(n, "dual", "a", "peek", "/no-e");
    ck_assert_int_eq(callx(n, "dual", "a", "fail", buf, sizeof buf),
                     KEEL_EHANDLER);
    expect(n, "dual", "a", "peek", "/no-e");
    expect(n, "dual", "a", "set", "ok");
    expect(n, "dual", "a", "peek", "v1/has-e");
    ck_assert_int_eq(callx(n, "dual", "a", "fail", buf, sizeof buf),
                     KEEL_EHANDLER);
    expect(n, "dual", "a", "peek", "v1/has-e");
    finish(n);

    n = start_node(NULL);
    ck_assert_int_eq(keel_node_register_type(n, &dt), 0);
    run(n);
    expect(n, "dual", "a", "peek", "v1/has-e");
    finish(n);
}
END_TEST

/* A value over KEEL_MAX_VALUE_LEN is refused with ETOOBIG, as state and
 * as an entry; the turn can go on and write something smaller. */
static int big_message(keel_turn *t, const void *msg, size_t len)
{
    static char big[KEEL_MAX_VALUE_LEN + 1];
    int a, b;

    if (len == 4 && memcmp(msg, "peek", 4) == 0) {
        const void *s;
        size_t sl;
        keel_turn_state(t, &s, &sl);
        return keel_turn_reply(t, s, sl);
    }
    a = keel_turn_set_state(t, big, sizeof big);
    b = keel_turn_put(t, "e", 1, big, sizeof big);
    keel_turn_set_state(t, "small", 5);
    return keel_turn_replyf(t, "%s %s", keel_err_name(a), keel_err_name(b));
}

START_TEST(oversized_values_refused)
{
    keel_node *n = start_node(NULL);
    keel_actor_type bt = {.name = "big", .on_message = big_message};

    ck_assert_int_eq(keel_node_register_type(n, &bt), 0);
    run(n);
    expect(n, "big", "a", "go", "ETOOBIG ETOOBIG");
    expect(n, "big", "a", "peek", "small");
    finish(n);
}
END_TEST

START_TEST(kv_entries)
{
    keel_node *n = start_node(NULL);
    char buf[256];

    run(n);
    expect(n, "kv", "k", "keys", "");
    expect(n, "kv", "k", "put b two words", "OK");
    expect(n, "kv", "k", "put a 1", "OK");
    expect(n, "kv", "k", "put c 3", "OK");
    expect(n, "kv", "k", "get b", "two words");
    expect(n, "kv", "k", "keys", "a\nb\nc");
    expect(n, "kv", "k", "del a", "1");
    expect(n, "kv", "k", "del a", "0");
    ck_assert_int_eq(callx(n, "kv", "k", "get a", buf, sizeof buf),
                     KEEL_ENOTFOUND);
    expect(n, "kv", "k", "keys", "b\nc");
    /* A neighbour whose id extends this one's shares no entries. */
    expect(n, "kv", "kk", "keys", "");
    ck_assert_int_eq(callx(n, "kv", "k", "frob", buf, sizeof buf),
                     KEEL_EBADMSG);
    finish(n);

    n = start_node(NULL);
    run(n);
    expect(n, "kv", "k", "keys", "b\nc");
    expect(n, "kv", "k", "get c", "3");
    finish(n);
}
END_TEST

/* ---- ordering and read-your-writes through casts on the loop thread */

struct order_ctx {
    keel_node *n;
    int count;
    int seen[2000];
    int nseen;
    int bad;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    char final[64];
};

static void order_cb(int status, const void *reply, size_t len, void *data)
{
    struct order_ctx *c = data;
    char buf[32];

    if (status != 0 || len >= sizeof buf) {
        c->bad++;
        return;
    }
    memcpy(buf, reply, len);
    buf[len] = '\0';
    c->seen[c->nseen++] = atoi(buf);
}

static void final_cb(int status, const void *reply, size_t len, void *data)
{
    struct order_ctx *c = data;

    pthread_mutex_lock(&c->mu);
    if (status == 0 && len < sizeof c->final) {
        memcpy(c->final, reply, len);
        c->final[len] = '\0';
    }
    c->done = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void order_post(keel_node *n, void *data)
{
    struct order_ctx *c = data;
    int i;

    for (i = 0; i < c->count; i++)
        ck_assert_int_eq(keel_call(n, "counter", "hot", 3, "incr", 4,
                                   order_cb, c), 0);
    ck_assert_int_eq(keel_call(n, "counter", "hot", 3, "get", 3, final_cb, c),
                     0);
}

START_TEST(one_caller_in_order)
{
    keel_node *n = start_node(NULL);
    struct order_ctx *c = calloc(1, sizeof *c);
    keel_stats st;
    int i;

    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->count = 2000;
    run(n);
    ck_assert_int_eq(keel_node_post(n, order_post, c), 0);
    pthread_mutex_lock(&c->mu);
    while (!c->done)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    ck_assert_int_eq(c->bad, 0);
    ck_assert_int_eq(c->nseen, 2000);
    for (i = 0; i < 2000; i++)
        ck_assert_int_eq(c->seen[i], i + 1);
    ck_assert_str_eq(c->final, "2000");
    keel_node_stats(n, &st);
    /* Group commit: 2000 turns of one actor took far fewer commits. */
    ck_assert_uint_lt(st.commits, 2000);
    ck_assert_uint_ge(st.batch_turns_max, 2);
    finish(n);
    free(c);
}
END_TEST

/* ------------------------------------------------ activation hooks */

struct hooks {
    int activations;
    int passivations;
};

static int hooked_activate(keel_turn *t)
{
    struct hooks *h = keel_turn_type_data(t);
    h->activations++;
    *keel_turn_actor_data(t) = h;
    return 0;
}

static void hooked_passivate(keel_turn *t)
{
    struct hooks *h = *keel_turn_actor_data(t);
    h->passivations++;
}

static int hooked_message(keel_turn *t, const void *msg, size_t len)
{
    const void *s;
    size_t sl;
    unsigned v = 0;
    char buf[16];

    keel_turn_state(t, &s, &sl);
    if (sl > 0 && sl < sizeof buf) {
        memcpy(buf, s, sl);
        buf[sl] = '\0';
        v = (unsigned)atoi(buf);
    }
    if (len == 3 && memcmp(msg, "add", 3) == 0) {
        v++;
        snprintf(buf, sizeof buf, "%u", v);
        keel_turn_set_state(t, buf, strlen(buf));
    }
    return keel_turn_replyf(t, "%u", v);
}

static void wait_for(keel_node *n, uint64_t want_passivations, int ms)
{
    keel_stats st;
    int i;

    for (i = 0; i < ms / 10; i++) {
        keel_node_stats(n, &st);
        if (st.passivations >= want_passivations)
            return;
        usleep(10000);
    }
}

START_TEST(idle_passivation_keeps_state)
{
    keel_node_options o;
    keel_node *n;
    struct hooks h = {0, 0};
    keel_actor_type ht = {.name = "hooked",
                          .on_message = hooked_message,
                          .on_activate = hooked_activate,
                          .on_passivate = hooked_passivate,
                          .data = &h};
    keel_stats st;

    keel_node_options_init(&o);
    o.idle_timeout_ms = 100;
    n = start_node(&o);
    ck_assert_int_eq(keel_node_register_type(n, &ht), 0);
    run(n);
    expect(n, "hooked", "x", "add", "1");
    expect(n, "hooked", "x", "add", "2");
    wait_for(n, 1, 5000);
    keel_node_stats(n, &st);
    ck_assert_uint_ge(st.passivations, 1);
    ck_assert_uint_eq(st.resident_actors, 0);
    expect(n, "hooked", "x", "get", "2");
    expect(n, "hooked", "x", "add", "3");
    finish(n);
    ck_assert_int_eq(h.activations, 2);
    ck_assert_int_eq(h.passivations, 2); /* idle, then at stop */
}
END_TEST

/* on_passivate may send messages, even to its own actor: the message must
 * run (reactivating the actor), and its callback must be called once. */
struct selfmsg {
    int passivations;
    int acks;
    int ack_status;
};

static void selfmsg_ack(int status, const void *reply, size_t len, void *d)
{
    struct selfmsg *m = d;
    (void)reply;
    (void)len;
    m->ack_status = status;
    __atomic_add_fetch(&m->acks, 1, __ATOMIC_SEQ_CST); /* read by the test */
}

static void selfmsg_passivate(keel_turn *t)
{
    struct selfmsg *m = keel_turn_type_data(t);
    const void *id;
    size_t idlen;

    m->passivations++;
    if (m->passivations == 1) {
        keel_turn_id(t, &id, &idlen);
        ck_assert_int_eq(keel_call(keel_turn_node(t), "selfmsg", id, idlen,
                                   "add", 3, selfmsg_ack, m),
                         0);
    }
}

START_TEST(message_sent_from_on_passivate_runs)
{
    keel_node_options o;
    keel_node *n;
    struct selfmsg m = {0, 0, 1};
    keel_actor_type ty = {.name = "selfmsg",
                          .on_message = hooked_message,
                          .on_passivate = selfmsg_passivate,
                          .data = &m};
    int i;

    keel_node_options_init(&o);
    o.idle_timeout_ms = 100;
    n = start_node(&o);
    ck_assert_int_eq(keel_node_register_type(n, &ty), 0);
    run(n);
    expect(n, "selfmsg", "x", "add", "1");
    for (i = 0; i < 500 && __atomic_load_n(&m.acks, __ATOMIC_SEQ_CST) == 0;
         i++)
        usleep(10000);
    expect(n, "selfmsg", "x", "get", "2");
    finish(n);
    ck_assert_int_eq(m.acks, 1);
    ck_assert_int_eq(m.ack_status, 0);
}
END_TEST

/* A first turn whose handler fails after on_activate succeeded hands what
 * on_activate set up to on_passivate. */
static int failfirst_message(keel_turn *t, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    (void)t;
    return KEEL_EHANDLER;
}

START_TEST(failed_activation_is_undone)
{
    keel_node *n = start_node(NULL);
    struct hooks h = {0, 0};
    keel_actor_type ty = {.name = "failfirst",
                          .on_message = failfirst_message,
                          .on_activate = hooked_activate,
                          .on_passivate = hooked_passivate,
                          .data = &h};

    ck_assert_int_eq(keel_node_register_type(n, &ty), 0);
    run(n);
    ck_assert_int_eq(callx(n, "failfirst", "a", "x", NULL, 0), KEEL_EHANDLER);
    ck_assert_int_eq(callx(n, "failfirst", "a", "x", NULL, 0), KEEL_EHANDLER);
    finish(n);
    ck_assert_int_eq(h.activations, 2);
    ck_assert_int_eq(h.passivations, 2);
}
END_TEST

/* A blocking call made on the loop thread would wait for itself: it must
 * be refused at once. */
struct loopcall {
    int rc;
    int done;
};

static void loopcall_post(keel_node *n, void *data)
{
    struct loopcall *lc = data;
    void *reply = NULL;
    size_t len = 0;

    lc->rc = keel_call_sync(n, "counter", "lc", 2, "get", 3, &reply, &len);
    keel_free(reply);
    __atomic_store_n(&lc->done, 1, __ATOMIC_SEQ_CST);
}

START_TEST(blocking_call_on_loop_thread_refused)
{
    keel_node *n = start_node(NULL);
    struct loopcall lc = {1, 0};
    int i;

    run(n);
    ck_assert_int_eq(keel_node_post(n, loopcall_post, &lc), 0);
    for (i = 0; i < 500 && !__atomic_load_n(&lc.done, __ATOMIC_SEQ_CST); i++)
        usleep(10000);
    ck_assert_int_eq(__atomic_load_n(&lc.done, __ATOMIC_SEQ_CST), 1);
    ck_assert_int_eq(lc.rc, KEEL_EINVAL);
    expect(n, "counter", "lc", "incr", "1"); /* the node is unharmed */
    finish(n);
}
END_TEST

/* The activation log: one line per activation and deactivation, with the
 * shard epoch, ids hex-encoded; a failed activation is closed too. */
START_TEST(activation_log_lines)
{
    keel_node_options o;
    keel_node *n;
    char *path, *log, want[128];
    struct hooks h = {0, 0};
    keel_actor_type ty = {.name = "failfirst",
                          .on_message = failfirst_message,
                          .on_activate = hooked_activate,
                          .on_passivate = hooked_passivate,
                          .data = &h};
    uint32_t shard = keel_shard_of("counter", "a\n", 2, KEEL_DEFAULT_SHARDS);
    const char *p;
    int lines = 0;

    ck_assert_int_ge(asprintf(&path, "%s/activations.log", dir), 0);
    keel_node_options_init(&o);
    o.activation_log = path;
    o.idle_timeout_ms = 100;
    n = start_node(&o);
    ck_assert_int_eq(keel_node_register_type(n, &ty), 0);
    run(n);
    expect(n, "counter", "a\n", "incr", "1");
    ck_assert_int_eq(callx(n, "failfirst", "b", "x", NULL, 0), KEEL_EHANDLER);
    wait_for(n, 1, 5000);
    finish(n);
    log = tu_read_file(path);
    ck_assert_ptr_nonnull(log);
    for (p = log; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    ck_assert_int_eq(lines, 4);
    snprintf(want, sizeof want, " activate counter 610a shard %u epoch 1\n",
             shard);
    ck_assert_msg(strstr(log, want) != NULL, "no '%s' in:\n%s", want, log);
    snprintf(want, sizeof want, " deactivate counter 610a shard %u epoch 1\n",
             shard);
    ck_assert_msg(strstr(log, want) != NULL, "no '%s' in:\n%s", want, log);
    ck_assert_ptr_nonnull(strstr(log, " activate failfirst 62 "));
    ck_assert_ptr_nonnull(strstr(log, " deactivate failfirst 62 "));
    free(log);
    free(path);
}
END_TEST

START_TEST(lru_cap_passivates)
{
    keel_node_options o;
    keel_node *n;
    keel_stats st;
    char id[16];
    int i;

    keel_node_options_init(&o);
    o.max_resident = 10;
    n = start_node(&o);
    run(n);
    for (i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "a%d", i);
        expect(n, "counter", id, "incr 7", "7");
    }
    keel_node_stats(n, &st);
    ck_assert_uint_le(st.resident_actors, 11);
    ck_assert_uint_ge(st.passivations, 89);
    for (i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "a%d", i);
        expect(n, "counter", id, "get", "7");
    }
    finish(n);
}
END_TEST

START_TEST(bad_requests)
{
    keel_node_options o;
    keel_node *n;
    char big[300], *huge;
    void *reply;
    size_t len;

    keel_node_options_init(&o);
    o.max_frame = 4096;
    n = start_node(&o);
    run(n);
    ck_assert_int_eq(callx(n, "nosuch", "a", "x", NULL, 0), KEEL_ENOTYPE);
    memset(big, 'i', sizeof big);
    ck_assert_int_eq(keel_call_sync(n, "counter", big, sizeof big, "get", 3,
                                    &reply, &len),
                     KEEL_ELIMIT);
    keel_free(reply); /* the error's text */
    huge = calloc(1, 8192);
    ck_assert_int_eq(keel_call_sync(n, "counter", "a", 1, huge, 8192, &reply,
                                    &len),
                     KEEL_ETOOBIG);
    keel_free(reply);
    free(huge);
    ck_assert_int_eq(callx(n, "counter", "a", "incr x", NULL, 0),
                     KEEL_EBADMSG);
    ck_assert_int_eq(callx(n, "counter", "a", "", NULL, 0), KEEL_EBADMSG);
    /* The node is unharmed. */
    expect(n, "counter", "a", "incr", "1");
    finish(n);
}
END_TEST

START_TEST(register_type_rules)
{
    keel_node *n = start_node(NULL);
    keel_actor_type t = {.name = "counter", .on_message = dual_message};
    char longname[KEEL_MAX_TYPE_LEN + 2];

    ck_assert_int_eq(keel_node_register_type(n, &t), KEEL_EEXIST);
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    t.name = longname;
    ck_assert_int_eq(keel_node_register_type(n, &t), KEEL_ELIMIT);
    t.name = "";
    ck_assert_int_eq(keel_node_register_type(n, &t), KEEL_EINVAL);
    t.name = "fine";
    t.on_message = NULL;
    ck_assert_int_eq(keel_node_register_type(n, &t), KEEL_EINVAL);
    keel_node_destroy(n);
}
END_TEST

/* A store that saw a newer owner of the shard refuses this node. */
START_TEST(fenced_by_store)
{
    keel_store_options so;
    keel_store *s;
    keel_batch *b;
    keel_node *n;
    char err[256], buf[256];
    uint32_t shard = keel_shard_of("counter", "c1", 2, KEEL_DEFAULT_SHARDS);
    int st;

    /* Start once so the store exists with the node's settings. */
    n = start_node(NULL);
    run(n);
    expect(n, "counter", "c1", "incr", "1");
    expect(n, "counter", "c2", "incr", "1");
    finish(n);

    memset(&so, 0, sizeof so);
    so.path = dir;
    so.shard_count = KEEL_DEFAULT_SHARDS;
    ck_assert_int_eq(keel_store_open(&so, &s, err, sizeof err), 0);
    b = keel_batch_create();
    ck_assert_int_eq(keel_batch_begin_group(b, "", (uint16_t)shard, 7, NULL),
                     0);
    ck_assert_int_eq(keel_batch_fence_only(b), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_batch_group(b, 0, &st);
    ck_assert_int_eq(st, 0);
    keel_batch_destroy(b);
    keel_store_close(s);

    n = start_node(NULL);
    run(n);
    ck_assert_int_eq(callx(n, "counter", "c1", "incr", buf, sizeof buf),
                     KEEL_EFENCED);
    if (keel_shard_of("counter", "c2", 2, KEEL_DEFAULT_SHARDS) != shard)
        expect(n, "counter", "c2", "incr", "2");
    finish(n);
}
END_TEST

START_TEST(shard_count_is_fixed)
{
    keel_node_options o;
    keel_node *n = start_node(NULL);
    char err[256];

    keel_node_destroy(n);
    keel_node_options_init(&o);
    o.data_dir = dir;
    o.shard_count = 1024;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err),
                     KEEL_EMISMATCH);
    ck_assert_ptr_nonnull(strstr(err, "1024"));
}
END_TEST

START_TEST(bad_data_dir)
{
    keel_node_options o;
    keel_node *n = NULL;
    char err[256], *file;
    FILE *f;

    ck_assert_int_ge(asprintf(&file, "%s/plainfile", dir), 0);
    f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    keel_node_options_init(&o);
    o.data_dir = file;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), KEEL_EIO);
    ck_assert_ptr_null(n);
    ck_assert_ptr_nonnull(strstr(err, "plainfile"));
    free(file);

    /* Missing arguments are named as what they are. */
    ck_assert_int_eq(keel_node_create(NULL, &n, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "no options given"));
    keel_node_options_init(&o);
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), KEEL_EINVAL);
    ck_assert_str_eq(err, "a data directory is required");
}
END_TEST

/* A cluster node's advertised address goes to every peer: one that is not
 * HOST:PORT is refused when the node is created (KEEL_EADDR), with the
 * address in the message, and nothing is left behind. */
START_TEST(advertise_must_be_host_port)
{
    static const char *const bad[] = {":7420", "h", "h:", "h:0", "h:70000",
                                      "h:7420x", "h 1:7420"};
    keel_node_options o;
    keel_node *n = NULL;
    char err[256];
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        keel_node_options_init(&o);
        o.data_dir = dir;
        o.log_level = KEEL_LOG_ERROR;
        o.listen = "127.0.0.1:0";
        o.zk_hosts = "127.0.0.1:1";
        o.cluster = "c";
        o.node_id = "n1";
        o.insecure = 1; /* a cluster node: credentials or this */
        o.advertise = bad[i];
        err[0] = '\0';
        ck_assert_msg(keel_node_create(&o, &n, err, sizeof err) ==
                          KEEL_EADDR,
                      "advertise '%s' accepted", bad[i]);
        ck_assert_ptr_null(n);
        ck_assert_msg(strstr(err, "HOST:PORT") != NULL &&
                          strstr(err, bad[i]) != NULL,
                      "'%s': %s", bad[i], err);
    }
}
END_TEST

START_TEST(map_grows_under_load)
{
    keel_node_options o;
    keel_node *n;
    keel_stats st;
    char msg[1100];
    char key[32];
    int i;

    keel_node_options_init(&o);
    o.initial_map_size = 256 * 1024;
    o.durability = KEEL_DURABILITY_NONE;
    n = start_node(&o);
    run(n);
    memset(msg, 'v', sizeof msg);
    for (i = 0; i < 2000; i++) {
        int len = snprintf(msg, 32, "put key%05d ", i);
        msg[len] = 'v';
        msg[sizeof msg - 1] = '\0';
        expect(n, "kv", "big", msg, "OK");
    }
    keel_node_stats(n, &st);
    ck_assert_uint_gt(st.map_size, 256 * 1024);
    finish(n);
    n = start_node(&o);
    run(n);
    snprintf(key, sizeof key, "get key%05d", 1999);
    {
        char buf[2048];
        ck_assert_int_eq(callx(n, "kv", "big", key, buf, sizeof buf), 0);
        ck_assert_uint_eq(strlen(buf), sizeof msg - 1 - 13);
    }
    finish(n);
}
END_TEST

/* ------------------------------------------ group commit and durability */

/* Waits for c and checks its status and (unless NULL) its reply. */
static void acall_expect(tu_acall *c, int status, const char *reply)
{
    tu_acall_wait(c);
    ck_assert_msg(c->status == status, "%s %s: %s (%s), want %s", c->id,
                  c->msg, keel_err_name(c->status), c->reply,
                  keel_err_name(status));
    if (reply != NULL)
        ck_assert_str_eq(c->reply, reply);
}

static void wait_messages(keel_node *n, uint64_t want)
{
    keel_stats st;

    for (int i = 0; i < 1000; i++) {
        keel_node_stats(n, &st);
        if (st.messages >= want)
            return;
        usleep(2000);
    }
    ck_abort_msg("the node ran %llu turns, want %llu",
                 (unsigned long long)st.messages, (unsigned long long)want);
}

/* A reply waits until its batch is durable: committed is not enough, the
 * flush that carries the commit's meta page must have returned. */
START_TEST(reply_held_until_sync)
{
    keel_node *n = start_node(NULL);
    struct gates g = {.hold_sync = 1};
    tu_acall c;
    keel_store_stats ss;

    gates_install(n->store, &g);
    run(n);
    tu_acall_start(n, &c, "counter", "held", "incr", NULL);
    sem_wait(&g.entered); /* committed, about to be synced */
    keel_store_stats_get(n->store, &ss);
    ck_assert_uint_eq(ss.commits, 1);
    ck_assert_uint_eq(ss.unsynced, 1);
    usleep(30000);
    ck_assert(!tu_acall_finished(&c));
    sem_post(&g.release);
    acall_expect(&c, 0, "1");
    finish(n);
}
END_TEST

/* Two batches with the writer, the first fails as a whole: the turn in the
 * second batch that built on the first one's write fails too (and its
 * write is not stored), the other actor's turn in it succeeds, and the
 * failed actor starts over from the store. */
START_TEST(first_of_two_batches_fails)
{
    keel_node *n = start_node(NULL);
    struct gates g = {.hold_commit = 1, .fail_commit = 1,
                      .fail_rc = KEEL_ENOSPC};
    tu_acall c1, c2, c3;

    gates_install(n->store, &g);
    /* Two batches with the writer at once: only the writer thread's
     * pipeline makes that (a lone small batch is committed on the loop
     * thread, which the held commit would stop). */
    keel__node_set_inline_commits(n, 0);
    run(n);
    tu_acall_start(n, &c1, "counter", "a", "incr", NULL);
    sem_wait(&g.entered); /* batch 1 is with the writer, held */
    tu_acall_start(n, &c2, "counter", "a", "incr 10", NULL);
    tu_acall_start(n, &c3, "counter", "b", "incr", NULL);
    wait_messages(n, 3);
    usleep(20000); /* the run's flush queues batch 2 */
    sem_post(&g.release);
    acall_expect(&c1, KEEL_ENOSPC, NULL);
    acall_expect(&c2, KEEL_ENOSPC, NULL);
    acall_expect(&c3, 0, "1");
    expect(n, "counter", "a", "get", "0");
    expect(n, "counter", "b", "get", "1");
    expect(n, "counter", "a", "incr", "1");
    finish(n);

    n = start_node(NULL);
    run(n);
    expect(n, "counter", "a", "get", "1");
    expect(n, "counter", "b", "get", "1");
    finish(n);
}
END_TEST

/* Which thread ran each commit (store hook). */
static pthread_t commit_threads[64];
static int ncommit_threads;

static int record_commit_thread(void *data)
{
    (void)data;
    if (ncommit_threads < 64)
        commit_threads[ncommit_threads++] = pthread_self();
    return 0;
}

static pthread_t loop_thread;
static sem_t loop_seen;

static void note_loop_thread(keel_node *n, void *data)
{
    (void)n;
    (void)data;
    loop_thread = pthread_self();
    sem_post(&loop_seen);
}

static void acall_post_many(keel_node *n, void *data)
{
    tu_acall *c = data;

    for (int i = 0; i < 40; i++)
        tu_acall_post(n, &c[i]);
}

/* A lone small batch that finds the writer idle is committed on the loop
 * thread; a batch of many actors goes to the writer thread. Both are
 * durable before their replies. */
START_TEST(small_batches_commit_on_the_loop)
{
    keel_node *n = start_node(NULL);
    keel_store_hooks h = {record_commit_thread, NULL, NULL};
    tu_acall c[40];
    char ids[40][8];
    int i, on_loop = 0, elsewhere = 0;

    keel_store_set_hooks(n->store, &h);
    sem_init(&loop_seen, 0, 0);
    run(n);
    ck_assert_int_eq(keel_node_post(n, note_loop_thread, NULL), 0);
    sem_wait(&loop_seen);
    expect(n, "counter", "one", "incr", "1");
    ck_assert_int_eq(ncommit_threads, 1);
    ck_assert(pthread_equal(commit_threads[0], loop_thread));
    /* 40 actors called from one post, so their turns share one run and
     * one batch: over the inline bound of 16 groups. */
    for (i = 0; i < 40; i++) {
        snprintf(ids[i], sizeof ids[i], "m%d", i);
        tu_acall_init(&c[i], "counter", ids[i], "incr", NULL);
    }
    ck_assert_int_eq(keel_node_post(n, acall_post_many, c), 0);
    for (i = 0; i < 40; i++)
        acall_expect(&c[i], 0, "1");
    for (i = 1; i < ncommit_threads; i++) {
        if (pthread_equal(commit_threads[i], loop_thread))
            on_loop++;
        else
            elsewhere++;
    }
    ck_assert_msg(elsewhere >= 1, "%d commits, all on the loop thread",
                  ncommit_threads - 1);
    finish(n);
}
END_TEST

/* A caller on the loop thread that sends each call from the completion of
 * the one before (a closed loop, one call in flight). Every reply is
 * checked against the count it must show. */
#define CHAIN_ACTORS 10
#define CHAIN_CALLS 2000

struct chain {
    keel_node *n;
    int sent;
    int bad;      /* first wrong reply, as call number + 1 */
    long base;    /* each counter's value before the chain */
    sem_t done;
};

static void chain_next(struct chain *ch);

static void chain_cb(int status, const void *reply, size_t len, void *data)
{
    struct chain *ch = data;
    char want[32];
    int i = ch->sent - 1;

    snprintf(want, sizeof want, "%ld", ch->base + i / CHAIN_ACTORS + 1);
    if (ch->bad == 0 && (status != 0 || len != strlen(want) ||
                         memcmp(reply, want, len) != 0))
        ch->bad = i + 1;
    if (ch->sent < CHAIN_CALLS && ch->bad == 0)
        chain_next(ch);
    else
        sem_post(&ch->done);
}

static void chain_next(struct chain *ch)
{
    char id[16];
    int len = snprintf(id, sizeof id, "ch%d", ch->sent % CHAIN_ACTORS);

    ch->sent++;
    if (keel_call(ch->n, "counter", id, (size_t)len, "incr", 4, chain_cb,
                  ch) != 0) {
        ch->bad = ch->sent;
        sem_post(&ch->done);
    }
}

static void chain_start(keel_node *n, void *data)
{
    (void)n;
    chain_next(data);
}

static void chain_run(int durability, long base)
{
    keel_node_options o;
    struct chain ch = {.base = base};
    keel_stats st;
    keel_node *n;

    keel_node_options_init(&o);
    o.durability = durability;
    n = start_node(&o);
    ch.n = n;
    sem_init(&ch.done, 0, 0);
    run(n);
    ck_assert_int_eq(keel_node_post(n, chain_start, &ch), 0);
    sem_wait(&ch.done);
    ck_assert_msg(ch.bad == 0, "call %d of the chain went wrong", ch.bad);
    ck_assert_int_eq(ch.sent, CHAIN_CALLS);
    keel_node_stats(n, &st);
    ck_assert_uint_ge(st.commits, CHAIN_CALLS);
    finish(n);
}

/* Calls sent from completions, one at a time, each committed on the loop
 * thread and settled there without a wake-up: none is lost or stuck, and
 * every count survives a restart, with durability fsync and then none
 * (the store then writes through LMDB's map) on the same directory. */
START_TEST(calls_chained_from_completions)
{
    char want[16];
    keel_node *n;

    chain_run(KEEL_DURABILITY_FSYNC, 0);
    chain_run(KEEL_DURABILITY_NONE, CHAIN_CALLS / CHAIN_ACTORS);
    n = start_node(NULL);
    run(n);
    snprintf(want, sizeof want, "%d", 2 * CHAIN_CALLS / CHAIN_ACTORS);
    for (int i = 0; i < CHAIN_ACTORS; i++) {
        char id[16];
        snprintf(id, sizeof id, "ch%d", i);
        expect(n, "counter", id, "get", want);
    }
    finish(n);
}
END_TEST

/* A commit that fails on the loop thread fails its callers and resets the
 * actor, as one failing on the writer thread does. */
START_TEST(inline_commit_fails)
{
    keel_node *n = start_node(NULL);
    struct gates g = {.fail_commit = 2, .fail_rc = KEEL_ENOSPC};
    char buf[64];

    gates_install(n->store, &g);
    run(n);
    expect(n, "counter", "a", "incr", "1");
    ck_assert_int_eq(callx(n, "counter", "a", "incr", buf, sizeof buf),
                     KEEL_ENOSPC);
    expect(n, "counter", "a", "get", "1");
    expect(n, "counter", "a", "incr", "2");
    finish(n);
}
END_TEST

static int fail_every_commit(void *data)
{
    (void)data;
    return KEEL_ENOSPC;
}

/* The node's lines on failed commits; the loop thread logs, the test
 * reads them once the node has stopped. */
struct commit_lines {
    atomic_int failed;   /* "commit of N actors failed" */
    atomic_int unlogged; /* of those, ones that count commits unlogged */
};

static void count_commit_lines(void *data, int level, const char *msg)
{
    struct commit_lines *c = data;

    if (level != KEEL_LOG_WARN || strncmp(msg, "commit of ", 10) != 0 ||
        strstr(msg, "actors failed") == NULL)
        return;
    atomic_fetch_add(&c->failed, 1);
    if (strstr(msg, "more failed commits since the last such line"))
        atomic_fetch_add(&c->unlogged, 1);
}

/* A full disk fails every commit, each call's own: the node says so in
 * one line a second, not one per commit, and every caller still gets
 * ENOSPC. */
START_TEST(failed_commits_logged_once_a_second)
{
    keel_node *n = start_node(NULL);
    keel_store_hooks h = {fail_every_commit, NULL, NULL};
    struct commit_lines c;
    struct timespec t0, t1;
    char buf[64];
    double secs;
    int i;

    atomic_init(&c.failed, 0);
    atomic_init(&c.unlogged, 0);
    keel_store_set_hooks(n->store, &h);
    keel_log_set_callback(count_commit_lines, &c);
    run(n);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (i = 0; i < 30; i++)
        ck_assert_int_eq(callx(n, "counter", "a", "incr", buf, sizeof buf),
                         KEEL_ENOSPC);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    finish(n);
    keel_log_set_callback(NULL, NULL);
    secs = (double)(t1.tv_sec - t0.tv_sec) +
           (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    ck_assert_int_ge(atomic_load(&c.failed), 1);
    ck_assert_msg(atomic_load(&c.failed) <= 1 + (int)secs,
                  "%d lines for 30 failed commits in %.2f s",
                  atomic_load(&c.failed), secs);
    ck_assert_int_le(atomic_load(&c.unlogged), atomic_load(&c.failed) - 1);
}
END_TEST

/* A flush that fails after a commit leaves that commit's fate unknown:
 * its caller is answered EINDOUBT, never "not committed", because the
 * write can be found after a restart; and nothing is written after it. */
START_TEST(failed_flush_is_in_doubt)
{
    keel_node *n = start_node(NULL);
    struct gates g = {.fail_sync = 2, .fail_sync_errno = EIO};
    char buf[256];

    gates_install(n->store, &g);
    run(n);
    expect(n, "counter", "a", "incr", "1");
    ck_assert_int_eq(callx(n, "counter", "a", "incr", buf, sizeof buf),
                     KEEL_EINDOUBT);
    ck_assert_msg(strstr(buf, "may have taken effect") != NULL, "%s", buf);
    /* The store refuses everything after a failed flush. */
    ck_assert_int_ne(callx(n, "counter", "a", "incr", buf, sizeof buf), 0);
    finish(n);

    /* The write answered in doubt had reached the log. */
    n = start_node(NULL);
    run(n);
    expect(n, "counter", "a", "get", "2");
    finish(n);
}
END_TEST

/* A stop while the last batch is committed but not yet synced: the node
 * syncs it, answers, and only then stops. */
START_TEST(stop_syncs_last_batch)
{
    keel_node *n = start_node(NULL);
    struct gates g = {.hold_sync = 1};
    tu_acall c;
    keel_store_stats ss;

    gates_install(n->store, &g);
    run(n);
    tu_acall_start(n, &c, "counter", "last", "incr", NULL);
    sem_wait(&g.entered);
    keel_node_stop(n);
    usleep(30000);
    ck_assert(!tu_acall_finished(&c));
    sem_post(&g.release);
    keel_node_join(n);
    acall_expect(&c, 0, "1");
    keel_store_stats_get(n->store, &ss);
    ck_assert_uint_eq(ss.unsynced, 0);
    ck_assert_uint_ge(ss.syncs, 1);
    keel_node_destroy(n);

    n = start_node(NULL);
    run(n);
    expect(n, "counter", "last", "get", "1");
    finish(n);
}
END_TEST

START_TEST(shard_hash)
{
    uint32_t counts[16] = {0};
    char id[32];
    int i;

    ck_assert_uint_eq(keel_shard_of("counter", "c1", 2, 4096),
                      keel_shard_of("counter", "c1", 2, 4096));
    ck_assert_uint_lt(keel_shard_of("counter", "c1", 2, 4096), 4096);
    /* The type's length is hashed too: ("ab","c") is not ("a","bc"). */
    ck_assert_uint_ne(keel_shard_of("ab", "c", 1, 1u << 30),
                      keel_shard_of("a", "bc", 2, 1u << 30));
    for (i = 0; i < 16000; i++) {
        int len = snprintf(id, sizeof id, "actor_%d", i);
        counts[keel_shard_of("counter", id, (size_t)len, 16)]++;
    }
    for (i = 0; i < 16; i++) {
        ck_assert_uint_gt(counts[i], 800);
        ck_assert_uint_lt(counts[i], 1200);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("node");
    TCase *tc = tcase_create("node");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, counter_survives_restart);
    tcase_add_test(tc, counter_edges);
    tcase_add_test(tc, failed_turn_leaves_state);
    tcase_add_test(tc, failed_turn_discards_writes);
    tcase_add_test(tc, kv_entries);
    tcase_add_test(tc, one_caller_in_order);
    tcase_add_test(tc, idle_passivation_keeps_state);
    tcase_add_test(tc, lru_cap_passivates);
    tcase_add_test(tc, message_sent_from_on_passivate_runs);
    tcase_add_test(tc, failed_activation_is_undone);
    tcase_add_test(tc, blocking_call_on_loop_thread_refused);
    tcase_add_test(tc, activation_log_lines);
    tcase_add_test(tc, bad_requests);
    tcase_add_test(tc, register_type_rules);
    tcase_add_test(tc, fenced_by_store);
    tcase_add_test(tc, small_batches_commit_on_the_loop);
    tcase_add_test(tc, calls_chained_from_completions);
    tcase_add_test(tc, inline_commit_fails);
    tcase_add_test(tc, failed_commits_logged_once_a_second);
    tcase_add_test(tc, shard_count_is_fixed);
    tcase_add_test(tc, bad_data_dir);
    tcase_add_test(tc, advertise_must_be_host_port);
    tcase_add_test(tc, map_grows_under_load);
    tcase_add_test(tc, shard_hash);
    tcase_add_test(tc, oversized_values_refused);
    tcase_add_test(tc, reply_held_until_sync);
    tcase_add_test(tc, first_of_two_batches_fails);
    tcase_add_test(tc, stop_syncs_last_batch);
    tcase_add_test(tc, failed_flush_is_in_doubt);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
