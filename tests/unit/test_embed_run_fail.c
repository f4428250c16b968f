/* A node whose loop cannot start (here: its storage writer thread cannot
 * be created) answers the calls that wait for it, instead of leaving them
 * waiting for ever, and keel_node_join says why it stopped.
 *
 * Linked with -Wl,--wrap=pthread_create (CMakeLists.txt): while `armed`,
 * a thread other than the test's own cannot create threads, so the node's
 * thread (keel_node_start) runs but its writer does not start. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"
#include "testutil.h"

int __real_pthread_create(pthread_t *t, const pthread_attr_t *a,
                          void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a,
                          void *(*fn)(void *), void *arg);

static atomic_int armed;
static pthread_t test_thread;

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a,
                          void *(*fn)(void *), void *arg)
{
    if (atomic_load(&armed) && !pthread_equal(pthread_self(), test_thread))
        return EAGAIN;
    return __real_pthread_create(t, a, fn, arg);
}

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir("embed_run_fail");
    test_thread = pthread_self();
}

static void teardown(void)
{
    atomic_store(&armed, 0);
    tu_rmrf(dir);
    free(dir);
}

START_TEST(calls_answered_when_the_loop_cannot_start)
{
    keel_node_options o;
    keel_node *n;
    char err[256];
    void *reply = NULL;
    size_t len = 0;
    int rc;

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_ERROR;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    atomic_store(&armed, 1);
    ck_assert_int_eq(keel_node_start(n), 0);
    /* Queued before the failure or refused after it: answered either
     * way (without the answer, the test's timeout ends it). */
    rc = keel_call_sync(n, "counter", "c", 1, "incr", 4, &reply, &len);
    ck_assert_int_eq(rc, KEEL_ESTOPPING);
    keel_free(reply);
    rc = keel_node_join(n);
    ck_assert_msg(rc != 0, "join: %d", rc);
    ck_assert_int_eq(keel_call_sync(n, "counter", "c", 1, "incr", 4, NULL,
                                    NULL),
                     KEEL_ESTOPPING);
    keel_node_destroy(n);
    atomic_store(&armed, 0);

    /* Nothing was written. */
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    rc = keel_call_sync(n, "counter", "c", 1, "get", 3, &reply, &len);
    ck_assert_int_eq(rc, 0);
    ck_assert_mem_eq(reply, "0", 1);
    keel_free(reply);
    keel_node_destroy(n);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("embed_run_fail");
    TCase *tc = tcase_create("run");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, calls_answered_when_the_loop_cannot_start);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
