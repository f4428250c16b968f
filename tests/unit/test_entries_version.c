/* The version of an actor that holds entries but no state blob
 * (docs/protocol.md, "State reads"): it is at 1, whether its entries are
 * its handler's (keel_turn_put) or the runtime's (a reminder), and it
 * stays at 1 after a passivation or a restart of the node on the same
 * store. A state read, a follower's first answer, the version of a
 * payload its next turn chooses, and the version its first state blob
 * takes it to (2) agree, reloaded or not. One that deleted all it held
 * is not found, as one never written. In process, on a real LMDB
 * store; the follower is a sink of the node's registry (follow.h). */
#include <check.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel.h"
#include "runtime/follow.h"
#include "runtime/node.h"
#include "runtime/proto.h"
#include "testutil.h"

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir("entver");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

/* "put": an entry, no blob; "del": deletes it; "remind": a reminder an hour away (the
 * runtime's entry), no blob; "set TEXT": the blob; "emit TEXT": an
 * event payload, nothing written; "noop": nothing. */
static int ev_message(keel_turn *t, const void *m, size_t len)
{
    const char *msg = m;

    if (len == 3 && memcmp(msg, "put", 3) == 0)
        return keel_turn_put(t, "k", 1, "v", 1);
    if (len == 3 && memcmp(msg, "del", 3) == 0)
        return keel_turn_del(t, "k", 1);
    if (len == 6 && memcmp(msg, "remind", 6) == 0)
        return keel_turn_remind(t, "r", 1, 3600000, 0, "x", 1);
    if (len > 4 && memcmp(msg, "set ", 4) == 0)
        return keel_turn_set_state(t, msg + 4, len - 4);
    if (len > 5 && memcmp(msg, "emit ", 5) == 0)
        return keel_turn_event(t, msg + 5, len - 5);
    if (len == 4 && memcmp(msg, "noop", 4) == 0)
        return 0;
    return KEEL_EBADMSG;
}

static keel_node *start_node(uint32_t max_resident)
{
    keel_node_options o;
    keel_node *n;
    char err[256];
    keel_actor_type ev = {.name = "ev", .on_message = ev_message};
    int rc;

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_ERROR;
    o.durability = KEEL_DURABILITY_NONE;
    o.max_resident = max_resident;
    rc = keel_node_create(&o, &n, err, sizeof err);
    ck_assert_msg(rc == 0, "create: %s %s", keel_strerror(rc), err);
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

static void call(keel_node *n, const char *id, const char *msg)
{
    void *reply = NULL;
    size_t rl = 0;
    int rc = keel_call_sync(n, "ev", id, strlen(id), msg, strlen(msg),
                            &reply, &rl);

    keel_free(reply);
    ck_assert_msg(rc == 0, "%s to %s: %s", msg, id, keel_strerror(rc));
}

/* Waits (at most about 10 s) until *flag is set by the loop thread. */
static void wait_flag(int *flag, const char *what)
{
    int i;

    for (i = 0; i < 10000 && !__atomic_load_n(flag, __ATOMIC_ACQUIRE); i++)
        usleep(1000);
    ck_assert_msg(__atomic_load_n(flag, __ATOMIC_ACQUIRE), "no %s", what);
}

/* ------------------------------------------------------- state reads */

struct read_job {
    const char *id;
    int done;
    int status;
    keel_state_read st;
    char blob[64];
};

static void read_cb(int status, const void *reply, size_t len, void *data)
{
    struct read_job *j = data;

    j->status = status;
    if (status == 0)
        j->status = keel_state_read_parse(reply, len, &j->st);
    if (j->status == 0)
        snprintf(j->blob, sizeof j->blob, "%.*s", (int)j->st.blob_len,
                 (const char *)j->st.blob);
    j->st.blob = NULL;
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
}

static void read_post(keel_node *n, void *data)
{
    struct read_job *j = data;
    int rc = keel__read_state(n, "ev", j->id, strlen(j->id), read_cb, j);

    if (rc != 0)
        read_cb(rc, NULL, 0, j);
}

/* The actor's state read must be found at version with blob (NULL: no
 * blob) and entries named entries. */
static void expect_read(keel_node *n, const char *id, uint64_t version,
                        const char *blob, uint64_t entries)
{
    struct read_job j;

    memset(&j, 0, sizeof j);
    j.id = id;
    ck_assert_int_eq(keel_node_post(n, read_post, &j), 0);
    wait_flag(&j.done, "state read");
    ck_assert_msg(j.status == 0, "state read of %s: %s", id,
                  keel_strerror(j.status));
    ck_assert_uint_eq(j.st.version, version);
    ck_assert_int_eq(j.st.has_blob, blob != NULL);
    if (blob != NULL)
        ck_assert_str_eq(j.blob, blob);
    ck_assert_uint_eq(j.st.entries, entries);
}

/* The actor's state read must not find it. */
static void expect_not_found(keel_node *n, const char *id)
{
    struct read_job j;

    memset(&j, 0, sizeof j);
    j.id = id;
    ck_assert_int_eq(keel_node_post(n, read_post, &j), 0);
    wait_flag(&j.done, "state read");
    ck_assert_msg(j.status == KEEL_ENOTFOUND, "state read of %s: %s", id,
                  keel_strerror(j.status));
}

/* ---------------------------------------------------------- followers */

/* What a sink got, as text: "answer V" (or "unchanged"), then
 * "payload V TEXT" and "state V TEXT", each followed by ';'. Written by
 * the loop thread under mu. */
struct fol {
    keel_follow_sink sink;
    pthread_mutex_t mu;
    char log[1024];
    size_t len;
    int answered;
};

static void fol_add(struct fol *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fol_add(struct fol *f, const char *fmt, ...)
{
    va_list ap;
    int w;

    pthread_mutex_lock(&f->mu);
    va_start(ap, fmt);
    w = vsnprintf(f->log + f->len, sizeof f->log - f->len, fmt, ap);
    va_end(ap);
    if (w > 0 && (size_t)w < sizeof f->log - f->len)
        f->len += (size_t)w;
    pthread_mutex_unlock(&f->mu);
}

static int fol_answer(keel_follow_sink *k, uint64_t tag, int rc,
                      const keel_state_read *st, const char *msg,
                      size_t msglen)
{
    struct fol *f = k->data;

    (void)tag;
    if (rc != 0)
        fol_add(f, "error %d %.*s;", rc, (int)msglen, msg);
    else if (st == NULL)
        fol_add(f, "unchanged;");
    else
        fol_add(f, "answer %llu;", (unsigned long long)st->version);
    __atomic_store_n(&f->answered, 1, __ATOMIC_RELEASE);
    return 0;
}

static int fol_change(keel_follow_sink *k, uint64_t tag, uint64_t version,
                      int payload, const uint8_t *data, size_t len)
{
    (void)tag;
    fol_add(k->data, "%s %llu %.*s;", payload ? "payload" : "state",
            (unsigned long long)version, (int)len, (const char *)data);
    return 0;
}

static void fol_end(keel_follow_sink *k, uint64_t tag, uint64_t version,
                    int code, const char *reason)
{
    (void)k;
    (void)tag;
    (void)version;
    (void)code;
    (void)reason;
}

static size_t fol_backlog(keel_follow_sink *k)
{
    (void)k;
    return 0;
}

static const struct keel_follow_ops fol_ops = {
    .answer = fol_answer,
    .change = fol_change,
    .end = fol_end,
    .backlog = fol_backlog,
};

struct sub_job {
    struct fol *f;
    const char *id;
    uint64_t since;
    int rc;
    int done;
};

static void sub_post(keel_node *n, void *data)
{
    struct sub_job *j = data;
    char err[256];

    j->rc = keel__follow_subscribe(n, &j->f->sink, 1,
                                   keel__type_find(n, "ev", 2), j->id,
                                   strlen(j->id), j->since,
                                   KEEL_FOLLOW_PAYLOADS, err, sizeof err);
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
}

/* Subscribes f (taking payloads) to id, having seen since, and waits for
 * its first answer. */
static void follow(keel_node *n, struct fol *f, const char *id,
                   uint64_t since)
{
    struct sub_job j = {.f = f, .id = id, .since = since};

    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->sink.ops = &fol_ops;
    f->sink.data = f;
    ck_assert_int_eq(keel_node_post(n, sub_post, &j), 0);
    wait_flag(&j.done, "subscription");
    ck_assert_int_eq(j.rc, 0);
    wait_flag(&f->answered, "first answer");
}

/* f's log must become want (bounded wait: changes reach the sink as the
 * turn's reply is released, on the loop thread). */
static void expect_log(struct fol *f, const char *want)
{
    char got[sizeof f->log];
    int i;

    for (i = 0; i < 10000; i++) {
        pthread_mutex_lock(&f->mu);
        memcpy(got, f->log, f->len);
        got[f->len] = '\0';
        pthread_mutex_unlock(&f->mu);
        if (strcmp(got, want) == 0 || strlen(got) >= strlen(want))
            break;
        usleep(1000);
    }
    ck_assert_str_eq(got, want);
}

static void fol_free(struct fol *f)
{
    pthread_mutex_destroy(&f->mu);
}

/* --------------------------------------------------------- passivating */

/* With max_resident 1, a turn of another actor passivates id once id's
 * writes are durable: turns of "other" until only it is resident. */
static void passivate(keel_node *n, const char *id)
{
    keel_stats st;
    int i;

    for (i = 0; i < 2000; i++) {
        call(n, "other", "noop");
        keel_node_stats(n, &st);
        if (st.resident_actors == 1)
            return;
        usleep(5000);
    }
    ck_abort_msg("%s was not passivated", id);
}

/* ------------------------------------------------------------- the tests */

/* An actor whose handler only writes entries: version 1 before and
 * after it is passivated; its next payload says 1, and its first state
 * blob takes it to 2, which its follower gets. */
START_TEST(entries_only_after_passivation)
{
    keel_node *n = start_node(1);
    struct fol f;

    call(n, "e", "put");
    expect_read(n, "e", 1, NULL, 1);
    follow(n, &f, "e", 0);
    passivate(n, "e");
    expect_read(n, "e", 1, NULL, 1);
    passivate(n, "e");
    call(n, "e", "emit e1");
    passivate(n, "e");
    call(n, "e", "set s1");
    expect_read(n, "e", 2, "s1", 1);
    expect_log(&f, "answer 1;payload 1 e1;state 2 s1;");
    finish(n);
    fol_free(&f);
}
END_TEST

/* The same actor never passivated: what the reloaded one must match. */
START_TEST(entries_only_resident)
{
    keel_node *n = start_node(0);
    struct fol f;

    call(n, "e", "put");
    follow(n, &f, "e", 0);
    call(n, "e", "emit e1");
    call(n, "e", "set s1");
    expect_read(n, "e", 2, "s1", 1);
    expect_log(&f, "answer 1;payload 1 e1;state 2 s1;");
    finish(n);
    fol_free(&f);
}
END_TEST

/* Only the runtime's entries (a reminder): the actor holds something, so
 * a state read finds it at 1 with no named entries, before and after a
 * passivation, and its first state blob takes it to 2. */
START_TEST(runtime_entries_only)
{
    keel_node *n = start_node(1);
    struct fol f;

    call(n, "r", "remind");
    expect_read(n, "r", 1, NULL, 0);
    follow(n, &f, "r", 0);
    call(n, "r", "emit e1");
    passivate(n, "r");
    expect_read(n, "r", 1, NULL, 0);
    passivate(n, "r");
    call(n, "r", "emit e2");
    passivate(n, "r");
    call(n, "r", "set s1");
    expect_read(n, "r", 2, "s1", 0);
    expect_log(&f, "answer 1;payload 1 e1;payload 1 e2;state 2 s1;");
    finish(n);
    fol_free(&f);
}
END_TEST

/* A restart on the same store: the entries-only actor comes back at 1.
 * A follower that saw 1 is told nothing changed, then gets version 2 for
 * the first blob. A never-written actor is still not found, and one at
 * version 2 stays at 2. */
START_TEST(entries_only_after_restart)
{
    keel_node *n = start_node(0);
    struct fol f;

    call(n, "e", "put");
    call(n, "b", "set x");
    call(n, "b", "put");
    call(n, "b", "set y");
    expect_read(n, "b", 2, "y", 1);
    finish(n);

    n = start_node(0);
    expect_read(n, "e", 1, NULL, 1);
    expect_read(n, "b", 2, "y", 1);
    expect_not_found(n, "never");
    follow(n, &f, "e", 1);
    call(n, "e", "emit e1");
    call(n, "e", "set s1");
    expect_read(n, "e", 2, "s1", 1);
    expect_log(&f, "unchanged;payload 1 e1;state 2 s1;");
    finish(n);
    fol_free(&f);
}
END_TEST

/* An actor without a blob that deleted its only entry holds nothing: a
 * state read does not find it, resident or reloaded, and once reloaded
 * its first blob takes it to 1, as a never-written actor's does. */
START_TEST(deleted_all_reads_as_never_written)
{
    keel_node *n = start_node(1);

    call(n, "d", "put");
    call(n, "d", "del");
    expect_not_found(n, "d");
    passivate(n, "d");
    expect_not_found(n, "d");
    passivate(n, "d");
    call(n, "d", "set s1");
    expect_read(n, "d", 1, "s1", 0);
    finish(n);
}
END_TEST

static Suite *entries_version_suite(void)
{
    Suite *s = suite_create("entries_version");
    TCase *tc = tcase_create("entries_version");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, entries_only_after_passivation);
    tcase_add_test(tc, entries_only_resident);
    tcase_add_test(tc, runtime_entries_only);
    tcase_add_test(tc, entries_only_after_restart);
    tcase_add_test(tc, deleted_all_reads_as_never_written);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(entries_version_suite());
}
