/* The service manager's notification protocol (common/notify.c): off
 * without $NOTIFY_SOCKET, datagrams to a path or an abstract name, names
 * that cannot be socket addresses refused, and the watchdog interval
 * taken only when it is this process's. */
#include <check.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/notify.h"
#include "keel.h"
#include "testutil.h"

/* Binds a datagram socket at addr/len; its descriptor. */
static int listen_at(const struct sockaddr_un *sa, socklen_t len)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (const struct sockaddr *)sa, len), 0);
    return fd;
}

/* The datagram waiting on fd (at most 2 s), NUL-terminated in buf. */
static void expect_datagram(int fd, const char *want)
{
    struct pollfd p = {fd, POLLIN, 0};
    char buf[256];
    ssize_t n;

    ck_assert_int_eq(poll(&p, 1, 2000), 1);
    n = recv(fd, buf, sizeof buf - 1, 0);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    ck_assert_str_eq(buf, want);
}

START_TEST(off_without_the_variable)
{
    keel_notify n;

    unsetenv("NOTIFY_SOCKET");
    ck_assert_int_eq(keel_notify_init(&n), 0);
    ck_assert(!keel_notify_on(&n));
    ck_assert_int_eq(keel_notify_send(&n, "READY=1"), 0);
    keel_notify_close(&n);
    setenv("NOTIFY_SOCKET", "", 1);
    ck_assert_int_eq(keel_notify_init(&n), 0);
    ck_assert(!keel_notify_on(&n));
    keel_notify_close(&n);
}
END_TEST

START_TEST(sends_to_a_path)
{
    char *dir = tu_tmpdir("notify");
    struct sockaddr_un sa;
    keel_notify n;
    int fd;

    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/n.sock", dir);
    fd = listen_at(&sa, sizeof sa);
    setenv("NOTIFY_SOCKET", sa.sun_path, 1);
    ck_assert_int_eq(keel_notify_init(&n), 0);
    ck_assert(keel_notify_on(&n));
    ck_assert_int_eq(keel_notify_send(&n, "READY=1\nSTATUS=serving\n"), 0);
    expect_datagram(fd, "READY=1\nSTATUS=serving\n");
    keel_notify_close(&n);
    ck_assert(!keel_notify_on(&n));
    /* Nobody listens any more: an error to ignore, not a crash. */
    close(fd);
    ck_assert_int_eq(keel_notify_init(&n), 0);
    ck_assert_int_eq(keel_notify_send(&n, "WATCHDOG=1"), -1);
    keel_notify_close(&n);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(sends_to_an_abstract_name)
{
    struct sockaddr_un sa;
    char name[64];
    keel_notify n;
    size_t len;
    int fd;

    len = (size_t)snprintf(name, sizeof name, "@keel-notify-test-%d",
                           (int)getpid());
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path + 1, name + 1, len - 1);
    /* The name is exactly these bytes: no NUL after them. */
    fd = listen_at(&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
                                    len));
    setenv("NOTIFY_SOCKET", name, 1);
    ck_assert_int_eq(keel_notify_init(&n), 0);
    ck_assert_int_eq(keel_notify_send(&n, "STOPPING=1"), 0);
    expect_datagram(fd, "STOPPING=1");
    keel_notify_close(&n);
    close(fd);
}
END_TEST

START_TEST(bad_names_refused)
{
    char longname[200];
    keel_notify n;

    setenv("NOTIFY_SOCKET", "relative/path", 1);
    ck_assert_int_eq(keel_notify_init(&n), KEEL_EINVAL);
    ck_assert(!keel_notify_on(&n));
    memset(longname, 'a', sizeof longname - 1);
    longname[0] = '/';
    longname[sizeof longname - 1] = '\0';
    setenv("NOTIFY_SOCKET", longname, 1);
    ck_assert_int_eq(keel_notify_init(&n), KEEL_EINVAL);
    ck_assert(!keel_notify_on(&n));
    ck_assert_int_eq(keel_notify_send(&n, "READY=1"), 0);
}
END_TEST

START_TEST(watchdog_interval)
{
    char pid[32];

    unsetenv("WATCHDOG_PID");
    unsetenv("WATCHDOG_USEC");
    ck_assert_uint_eq(keel_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "30000000", 1);
    ck_assert_uint_eq(keel_notify_watchdog_usec(), 30000000);
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_uint_eq(keel_notify_watchdog_usec(), 30000000);
    /* Another process's watchdog (inherited from a parent): not ours. */
    snprintf(pid, sizeof pid, "%d", (int)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_uint_eq(keel_notify_watchdog_usec(), 0);
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "30s", 1);
    ck_assert_uint_eq(keel_notify_watchdog_usec(), 0);
    setenv("WATCHDOG_USEC", "-1", 1);
    ck_assert_uint_eq(keel_notify_watchdog_usec(), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("notify");
    TCase *tc = tcase_create("notify");

    tcase_add_test(tc, off_without_the_variable);
    tcase_add_test(tc, sends_to_a_path);
    tcase_add_test(tc, sends_to_an_abstract_name);
    tcase_add_test(tc, bad_names_refused);
    tcase_add_test(tc, watchdog_interval);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
