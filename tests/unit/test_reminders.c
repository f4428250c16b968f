/* Durable reminders inside one node (runtime/reminders.c,
 * keel_turn_remind): a one-shot fires once at or after its due time; a
 * periodic one fires again and again until removed; setting a name again
 * replaces it; keel_turn_unremind removes it; a failed turn sets nothing;
 * a pending reminder fires after the node restarts on the same data; one
 * that fell due many periods over while the node was down fires once,
 * not once per missed period; a firing whose handler fails fires again;
 * a firing may set its own reminder again;
 * a state read lists them; bad arguments get typed errors. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keel.h"
#include "runtime/node.h"
#include "runtime/proto.h"
#include "entries.h"
#include "testutil.h"

static char *dir;
/* Firings of a reminder whose message is "flaky" that failed (loop thread
 * writes; the test reads it after calls, which order them). */
static int flaky_failed;

static void setup(void)
{
    dir = tu_tmpdir("remind");
    flaky_failed = 0;
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

static long wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* rem: a firing counts itself in "fires", keeps NAME:MSG in "last" and
 * its wall-clock ms in "tK" (K = its count). Messages: "set NAME DUE
 * PERIOD MSG" (then fails when MSG is "fail"), "unset NAME", "get"
 * (answers "FIRES LAST"), "time K" (answers tK), "bad" (checks the
 * argument errors, answers "ok"). */
static int rem_message(keel_turn *t, const void *msg, size_t len)
{
    char m[256], name[64], text[64], key[80];
    unsigned long due, period;
    const char *rname;
    size_t rl;
    long fires;
    int rc;

    rname = keel_turn_reminder(t, &rl);
    if (rname != NULL) {
        char last[160];
        int n = snprintf(last, sizeof last, "%.*s:%.*s", (int)rl, rname,
                         (int)len, (const char *)msg);
        ck_assert_uint_eq(strlen(rname), rl);
        if (len == 5 && memcmp(msg, "flaky", 5) == 0 && flaky_failed == 0) {
            flaky_failed++;
            tu_entry_set(t, "fires", 1000); /* must not stay */
            return KEEL_EHANDLER;
        }
        fires = tu_entry_num(t, "fires") + 1;
        snprintf(key, sizeof key, "t%ld", fires);
        tu_entry_set(t, key, wall_ms());
        keel_turn_put(t, "last", 4, last, (size_t)n);
        /* "chain" sets itself again from its own firing, three times. */
        if (len == 5 && memcmp(msg, "chain", 5) == 0 && fires < 3 &&
            keel_turn_remind(t, rname, rl, 20, 0, msg, len) != 0)
            return KEEL_EHANDLER;
        return tu_entry_set(t, "fires", fires);
    }
    if (len >= sizeof m)
        return KEEL_EBADMSG;
    memcpy(m, msg, len);
    m[len] = '\0';
    if (sscanf(m, "set %63s %lu %lu %63s", name, &due, &period, text) == 4) {
        rc = keel_turn_remind(t, name, strlen(name), due, period, text,
                              strlen(text));
        if (rc == 0 && strcmp(text, "fail") == 0)
            return KEEL_EHANDLER;
        return rc;
    }
    if (sscanf(m, "unset %63s", name) == 1)
        return keel_turn_unremind(t, name, strlen(name));
    if (strcmp(m, "get") == 0) {
        const void *v = NULL;
        size_t vl = 0;
        keel_turn_get(t, "last", 4, &v, &vl);
        return keel_turn_replyf(t, "%ld %.*s", tu_entry_num(t, "fires"),
                                (int)vl, v != NULL ? (const char *)v : "");
    }
    if (sscanf(m, "time %31s", text) == 1) {
        snprintf(key, sizeof key, "t%s", text);
        return keel_turn_replyf(t, "%ld", tu_entry_num(t, key));
    }
    if (strcmp(m, "bad") == 0) {
        static char big[KEEL_MAX_REMINDER_MSG_LEN + 1];
        char longname[KEEL_MAX_REMINDER_NAME_LEN + 1];
        memset(longname, 'n', sizeof longname);
        ck_assert_int_eq(keel_turn_remind(t, "", 0, 10, 0, "x", 1),
                         KEEL_EINVAL);
        ck_assert_int_eq(keel_turn_remind(t, NULL, 3, 10, 0, "x", 1),
                         KEEL_EINVAL);
        ck_assert_int_eq(keel_turn_remind(t, "a", 1, 10, 0, NULL, 1),
                         KEEL_EINVAL);
        ck_assert_int_eq(keel_turn_remind(t, longname, sizeof longname, 10,
                                          0, "x", 1),
                         KEEL_ELIMIT);
        ck_assert_int_eq(keel_turn_remind(t, "a", 1, 10, 0, big, sizeof big),
                         KEEL_ETOOBIG);
        ck_assert_int_eq(keel_turn_remind(t, "a", 1, 1ull << 40, 0, "x", 1),
                         KEEL_EINVAL);
        ck_assert_int_eq(keel_turn_remind(t, "a", 1, 10, 1ull << 41, "x", 1),
                         KEEL_EINVAL);
        ck_assert_int_eq(keel_turn_unremind(t, "", 0), KEEL_EINVAL);
        ck_assert_int_eq(keel_turn_unremind(t, "none", 4), 0);
        ck_assert_ptr_null(keel_turn_reminder(t, NULL));
        return keel_turn_replyf(t, "ok");
    }
    /* A handler that returns the call's code as it is: a due time of
     * -5 ms wraps past 2^40. */
    if (strcmp(m, "past") == 0)
        return keel_turn_remind(t, "a", 1, (uint64_t)-5, 0, "x", 1);
    if (strcmp(m, "longname") == 0) {
        char longname[KEEL_MAX_REMINDER_NAME_LEN + 1];
        memset(longname, 'n', sizeof longname);
        return keel_turn_remind(t, longname, sizeof longname, 10, 0, "x", 1);
    }
    return KEEL_EBADMSG;
}

static keel_node *start_node(void)
{
    keel_node_options o;
    keel_node *n;
    char err[256];
    keel_actor_type rem = {.name = "rem", .on_message = rem_message};

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_ERROR;
    o.durability = KEEL_DURABILITY_NONE;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    ck_assert_int_eq(keel_node_register_type(n, &rem), 0);
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
    int rc = keel_call_sync(n, "rem", id, strlen(id), msg, strlen(msg),
                            &reply, &rl);

    if (out != NULL) {
        size_t k = rl < cap - 1 ? rl : cap - 1;
        if (reply != NULL)
            memcpy(out, reply, k);
        out[reply != NULL ? k : 0] = '\0';
    }
    keel_free(reply);
    return rc;
}

static long fires(keel_node *n, const char *id, char *last, size_t cap)
{
    char got[256];
    long f;
    int off = 0;

    ck_assert_int_eq(call(n, id, "get", got, sizeof got), 0);
    ck_assert_int_eq(sscanf(got, "%ld %n", &f, &off), 1);
    if (last != NULL)
        snprintf(last, cap, "%s", got + off);
    return f;
}

/* Polls until actor id has fired at least want times (at most 10 s). */
static long wait_fires(keel_node *n, const char *id, long want)
{
    long f = 0;
    int i;

    for (i = 0; i < 1000; i++) {
        f = fires(n, id, NULL, 0);
        if (f >= want)
            break;
        usleep(10000);
    }
    return f;
}

START_TEST(one_shot_fires_once)
{
    keel_node *n = start_node();
    long before = wall_ms();
    char last[128], got[32];
    keel_stats st;

    ck_assert_int_eq(call(n, "a", "set ping 100 0 hello", NULL, 0), 0);
    ck_assert_int_eq(fires(n, "a", NULL, 0), 0);
    ck_assert_int_eq(wait_fires(n, "a", 1), 1);
    ck_assert_int_eq(call(n, "a", "time 1", got, sizeof got), 0);
    ck_assert_int_ge(atol(got), before + 100); /* not before its time */
    usleep(300000);
    ck_assert_int_eq(fires(n, "a", last, sizeof last), 1);
    ck_assert_str_eq(last, "ping:hello");
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.reminders_fired, 1);
    finish(n);
}
END_TEST

START_TEST(periodic_fires_until_removed)
{
    keel_node *n = start_node();
    char got[32];
    long f, t1, t2;

    ck_assert_int_eq(call(n, "p", "set tick 20 50 x", NULL, 0), 0);
    ck_assert_int_ge(wait_fires(n, "p", 3), 3);
    ck_assert_int_eq(call(n, "p", "time 1", got, sizeof got), 0);
    t1 = atol(got);
    ck_assert_int_eq(call(n, "p", "time 2", got, sizeof got), 0);
    t2 = atol(got);
    /* A period apart, less the time from the firing turn's start (its
     * next due time counts from there) to the handler's clock read. */
    ck_assert_int_ge(t2 - t1, 50 - 10);
    ck_assert_int_eq(call(n, "p", "unset tick", NULL, 0), 0);
    f = fires(n, "p", NULL, 0);
    usleep(300000);
    ck_assert_int_eq(fires(n, "p", NULL, 0), f);
    finish(n);
}
END_TEST

START_TEST(set_again_replaces)
{
    keel_node *n = start_node();
    char last[128];

    ck_assert_int_eq(call(n, "r", "set r 50 0 old", NULL, 0), 0);
    ck_assert_int_eq(call(n, "r", "set r 150 0 new", NULL, 0), 0);
    ck_assert_int_eq(wait_fires(n, "r", 1), 1);
    usleep(300000);
    ck_assert_int_eq(fires(n, "r", last, sizeof last), 1);
    ck_assert_str_eq(last, "r:new");
    finish(n);
}
END_TEST

START_TEST(unremind_removes)
{
    keel_node *n = start_node();
    char last[128];

    ck_assert_int_eq(call(n, "u", "set gone 50 0 x", NULL, 0), 0);
    ck_assert_int_eq(call(n, "u", "set kept 200 0 y", NULL, 0), 0);
    ck_assert_int_eq(call(n, "u", "unset gone", NULL, 0), 0);
    /* The kept one fires after the removed one's time. */
    ck_assert_int_eq(wait_fires(n, "u", 1), 1);
    usleep(200000);
    ck_assert_int_eq(fires(n, "u", last, sizeof last), 1);
    ck_assert_str_eq(last, "kept:y");
    finish(n);
}
END_TEST

START_TEST(failed_turn_sets_nothing)
{
    keel_node *n = start_node();
    char last[128];

    ck_assert_int_eq(call(n, "f", "set no 20 0 fail", NULL, 0),
                     KEEL_EHANDLER);
    ck_assert_int_eq(call(n, "f", "set yes 200 0 ok", NULL, 0), 0);
    ck_assert_int_eq(wait_fires(n, "f", 1), 1);
    usleep(200000);
    ck_assert_int_eq(fires(n, "f", last, sizeof last), 1);
    ck_assert_str_eq(last, "yes:ok");
    finish(n);
}
END_TEST

/* A firing whose handler fails changes nothing: the reminder is still
 * due and fires again, and only the successful firing's writes stay. */
START_TEST(failed_firing_fires_again)
{
    keel_node *n = start_node();
    char last[128];

    ck_assert_int_eq(call(n, "h", "set h 20 0 flaky", NULL, 0), 0);
    ck_assert_int_eq(wait_fires(n, "h", 1), 1);
    ck_assert_int_eq(flaky_failed, 1);
    usleep(200000);
    ck_assert_int_eq(fires(n, "h", last, sizeof last), 1);
    ck_assert_str_eq(last, "h:flaky");
    finish(n);
}
END_TEST

/* A one-shot that sets itself again from its firing fires again. */
START_TEST(firing_sets_itself_again)
{
    keel_node *n = start_node();

    ck_assert_int_eq(call(n, "c", "set c 20 0 chain", NULL, 0), 0);
    ck_assert_int_eq(wait_fires(n, "c", 3), 3);
    usleep(200000);
    ck_assert_int_eq(fires(n, "c", NULL, 0), 3);
    finish(n);
}
END_TEST

START_TEST(pending_fires_after_restart)
{
    keel_node *n = start_node();
    char last[128];

    ck_assert_int_eq(call(n, "s", "set later 400 0 hi", NULL, 0), 0);
    ck_assert_int_eq(fires(n, "s", NULL, 0), 0);
    finish(n);
    n = start_node();
    ck_assert_int_eq(wait_fires(n, "s", 1), 1);
    ck_assert_int_eq(fires(n, "s", last, sizeof last), 1);
    ck_assert_str_eq(last, "later:hi");
    finish(n);
}
END_TEST

/* Down for many periods: one firing when the node is back, the next one
 * a period after it, not a burst of the missed ones. */
START_TEST(missed_periods_fire_once)
{
    keel_node *n = start_node();
    char got[32], key[32];
    long f, ta, tb;

    ck_assert_int_eq(call(n, "m", "set beat 30 150 x", NULL, 0), 0);
    ck_assert_int_ge(wait_fires(n, "m", 1), 1);
    finish(n);
    usleep(1000000); /* six periods and more */
    n = start_node();
    f = fires(n, "m", NULL, 0);
    ck_assert_int_ge(wait_fires(n, "m", f + 2), f + 2);
    snprintf(key, sizeof key, "time %ld", f + 1);
    ck_assert_int_eq(call(n, "m", key, got, sizeof got), 0);
    ta = atol(got);
    snprintf(key, sizeof key, "time %ld", f + 2);
    ck_assert_int_eq(call(n, "m", key, got, sizeof got), 0);
    tb = atol(got);
    ck_assert_int_ge(tb - ta, 150 - 10); /* a burst: about 0 */
    finish(n);
}
END_TEST

struct list_job {
    char out[256];
    int done;
};

static void list_cb(int status, const void *reply, size_t len, void *data)
{
    struct list_job *j = data;
    char *out = j->out;
    const uint8_t *p = reply;
    size_t off = 0, used = 0;

    if (status != 0) {
        snprintf(out, 256, "error %d", status);
        __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
        return;
    }
    out[0] = '\0';
    while (off < len) {
        keel_reminder_entry e;
        long k = keel_reminders_entry_parse(p + off, len - off, &e);
        if (k < 0) {
            snprintf(out, 256, "malformed");
            break;
        }
        used += (size_t)snprintf(out + used, 256 - used, "%.*s/%s/%llu/%u;",
                                 (int)e.name_len, e.name,
                                 e.in_ms > 5000 && e.in_ms <= 10000 ? "soon"
                                                                    : "?",
                                 (unsigned long long)e.period_ms, e.msg_len);
        off += (size_t)k;
    }
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
}

static void list_post(keel_node *n, void *data)
{
    struct list_job *j = data;
    keel_req *req = keel__req_alloc(n, KEEL_READ_REMINDERS_LEN);

    ck_assert_ptr_nonnull(req);
    keel__req_set(req, KEEL_READ_REMINDERS, KEEL_READ_REMINDERS_LEN);
    req->read_state = 1;
    req->origin = REQ_LOCAL;
    req->u.local.cb = list_cb;
    req->u.local.data = j;
    ck_assert_int_eq(keel__submit(n, keel__type_find(n, "rem", 3), "l", 1,
                                  req),
                     0);
}

START_TEST(state_read_lists_them)
{
    keel_node *n = start_node();
    struct list_job j = {.done = 0};
    int i;

    ck_assert_int_eq(call(n, "l", "set b 10000 0 four", NULL, 0), 0);
    ck_assert_int_eq(call(n, "l", "set a 9000 60000 xy", NULL, 0), 0);
    ck_assert_int_eq(keel_node_post(n, list_post, &j), 0);
    for (i = 0; i < 500 && !__atomic_load_n(&j.done, __ATOMIC_ACQUIRE); i++)
        usleep(10000);
    ck_assert_int_eq(__atomic_load_n(&j.done, __ATOMIC_ACQUIRE), 1);
    ck_assert_str_eq(j.out, "a/soon/60000/2;b/soon/0/4;");
    finish(n);
}
END_TEST

/* The listing's entries: what is put parses back; a cut one does not. */
START_TEST(list_entry_layout)
{
    uint8_t buf[KEEL_REMINDERS_ENTRY_HDR + 4];
    keel_reminder_entry e;

    keel_reminders_entry_put(buf, -1500, 60000, 70000, "tick", 4);
    ck_assert_int_eq(keel_reminders_entry_parse(buf, sizeof buf, &e),
                     (long)sizeof buf);
    ck_assert_int_eq(e.in_ms, -1500);
    ck_assert_uint_eq(e.period_ms, 60000);
    ck_assert_uint_eq(e.msg_len, 70000);
    ck_assert_uint_eq(e.name_len, 4);
    ck_assert_int_eq(memcmp(e.name, "tick", 4), 0);
    ck_assert_int_eq(keel_reminders_entry_parse(buf, sizeof buf - 1, &e),
                     KEEL_EMALFORMED);
    ck_assert_int_eq(keel_reminders_entry_parse(buf, 10, &e),
                     KEEL_EMALFORMED);
    buf[20] = 0; /* no name */
    ck_assert_int_eq(keel_reminders_entry_parse(buf, sizeof buf, &e),
                     KEEL_EMALFORMED);
}
END_TEST

START_TEST(bad_arguments)
{
    keel_node *n = start_node();
    char got[32], msg[256];

    ck_assert_int_eq(call(n, "x", "bad", got, sizeof got), 0);
    ck_assert_str_eq(got, "ok");
    /* Returned as they are: a due time in the past is an invalid
     * argument (ELIMIT's text speaks of names and keys), a long name
     * over a length limit. */
    ck_assert_int_eq(call(n, "x", "past", msg, sizeof msg), KEEL_EINVAL);
    ck_assert_int_eq(call(n, "x", "longname", msg, sizeof msg), KEEL_ELIMIT);
    finish(n);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("reminders");
    TCase *tc = tcase_create("node");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, one_shot_fires_once);
    tcase_add_test(tc, periodic_fires_until_removed);
    tcase_add_test(tc, set_again_replaces);
    tcase_add_test(tc, unremind_removes);
    tcase_add_test(tc, failed_turn_sets_nothing);
    tcase_add_test(tc, failed_firing_fires_again);
    tcase_add_test(tc, firing_sets_itself_again);
    tcase_add_test(tc, pending_fires_after_restart);
    tcase_add_test(tc, missed_periods_fire_once);
    tcase_add_test(tc, state_read_lists_them);
    tcase_add_test(tc, list_entry_layout);
    tcase_add_test(tc, bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
