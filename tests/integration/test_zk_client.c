/* The real ZooKeeper client behind the vtable (coordinator/zk_real.c)
 * against a real server started through zk-conf/zk.sh: operations and
 * their error codes, watches, multi with a check op, sync, ephemeral nodes going
 * with a closed session, connection loss and recovery, and session
 * expiry. Every wait is bounded. */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "coordinator/zk.h"
#include "keel.h"
#include "proc.h"
#include "testutil.h"
#include "zk.h"

static tu_zk server;

static void suite_setup(void)
{
    if (!tu_zk_available()) {
        fprintf(stderr, "ZooKeeper is not installed (sh scripts/install-deps)\n");
        exit(1);
    }
    /* tick 500 ms: sessions may last 1..10 s */
    if (tu_zk_start(&server, 1, 500) != 0)
        exit(1);
}

static void suite_teardown(void)
{
    tu_zk_stop(&server);
}

typedef struct rec {
    int calls;
    int rc;
    char path[KEEL_ZK_PATH_MAX];
    char data[256];
    keel_zk_stat st;
    size_t count, failed;
    int events[32];
    int nevents;
} rec;

static void on_session(keel_zk *zk, int event, void *arg)
{
    rec *r = arg;
    (void)zk;
    if (r->nevents < 32)
        r->events[r->nevents++] = event;
}

static int has_event(const rec *r, int event)
{
    int i;
    for (i = 0; i < r->nevents; i++)
        if (r->events[i] == event)
            return 1;
    return 0;
}

static void on_create(keel_zk *zk, int rc, const char *path,
                      const keel_zk_stat *st, void *arg)
{
    rec *r = arg;
    (void)zk;
    r->calls++;
    r->rc = rc;
    snprintf(r->path, sizeof r->path, "%s", path ? path : "");
    if (st)
        r->st = *st;
}

static void on_void(keel_zk *zk, int rc, void *arg)
{
    rec *r = arg;

    (void)zk;
    r->calls++;
    r->rc = rc;
}

static void on_stat(keel_zk *zk, int rc, const keel_zk_stat *st, void *arg)
{
    rec *r = arg;
    (void)zk;
    r->calls++;
    r->rc = rc;
    if (st)
        r->st = *st;
}

static void on_data(keel_zk *zk, int rc, const void *data, size_t len,
                    const keel_zk_stat *st, void *arg)
{
    rec *r = arg;
    (void)zk;
    r->calls++;
    r->rc = rc;
    if (data && len < sizeof r->data) {
        memcpy(r->data, data, len);
        r->data[len] = '\0';
    }
    if (st)
        r->st = *st;
}

static void on_children(keel_zk *zk, int rc, size_t count,
                        const char *const *names, void *arg)
{
    rec *r = arg;
    (void)zk;
    (void)names;
    r->calls++;
    r->rc = rc;
    r->count = count;
}

static void on_multi(keel_zk *zk, int rc, size_t failed,
                     const keel_zk_op_result *res, size_t n, void *arg)
{
    rec *r = arg;
    (void)zk;
    r->calls++;
    r->rc = rc;
    r->failed = failed;
    if (rc == 0 && n > 1 && res[1].path)
        snprintf(r->path, sizeof r->path, "%s", res[1].path);
}

static void on_watch(keel_zk *zk, int event, const char *path, void *arg)
{
    rec *r = arg;
    (void)zk;
    r->calls++;
    if (r->nevents < 32)
        r->events[r->nevents++] = event;
    snprintf(r->path, sizeof r->path, "%s", path);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* Runs the loop until *flag becomes nonzero or `secs` pass. */
static int run_until(struct ev_loop *loop, const int *flag, double secs)
{
    ev_timer t;
    double deadline;

    ev_timer_init(&t, tick_cb, 0.01, 0.01);
    ev_timer_start(loop, &t);
    ev_now_update(loop);
    deadline = ev_now(loop) + secs;
    while (!*flag && ev_now(loop) < deadline)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &t);
    return *flag;
}

/* The sockets of this process: how many, and how many of them would be
 * inherited across an exec (no close-on-exec). */
static void count_sockets(int *all, int *inherited)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;

    *all = *inherited = 0;
    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL) {
        char path[300], to[64];
        ssize_t n;
        int fd = atoi(e->d_name), fl;

        if (e->d_name[0] == '.' || fd == dirfd(d))
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        n = readlink(path, to, sizeof to - 1);
        if (n <= 0)
            continue;
        to[n] = '\0';
        if (strncmp(to, "socket:", 7) != 0)
            continue;
        (*all)++;
        fl = fcntl(fd, F_GETFD);
        if (fl >= 0 && !(fl & FD_CLOEXEC))
            (*inherited)++;
    }
    closedir(d);
}

static keel_zk *client(struct ev_loop *loop, int timeout_ms, rec *sess)
{
    keel_zk *zk;
    int connected;

    ck_assert_int_eq(keel_zk_real_create(loop, server.hosts, &zk), 0);
    ck_assert_int_eq(keel_zk_connect(zk, timeout_ms, on_session, sess), 0);
    connected = 0;
    while (run_until(loop, &sess->nevents, 10) && !connected) {
        connected = has_event(sess, KEEL_ZK_CONNECTED);
        if (!connected)
            ck_abort_msg("unexpected session event %d", sess->events[0]);
    }
    ck_assert_msg(connected, "no session within 10 s");
    ck_assert(keel_zk_session_id(zk) != 0);
    ck_assert_int_ge(keel_zk_session_timeout(zk), 1000);
    {
        /* The session's socket is not handed to a program an embedder
         * forks and execs: a child holding it would keep the connection
         * open after the node closed it. */
        int all, inherited;
        count_sockets(&all, &inherited);
        ck_assert_int_ge(all, 1);
        ck_assert_msg(inherited == 0,
                      "%d of this process's %d sockets lack close-on-exec",
                      inherited, all);
    }
    return zk;
}

START_TEST(test_operations)
{
    struct ev_loop *loop;
    keel_zk *a;
    rec s = {0}, r1 = {0}, r2 = {0}, r3 = {0}, r4 = {0}, r5 = {0}, r6 = {0};
    keel_zk_op ops[2];
    char path[64];

    loop = ev_loop_new(EVFLAG_AUTO);
    a = client(loop, 4000, &s);
    snprintf(path, sizeof path, "/ops-%d", (int)getpid());

    ck_assert_int_eq(keel_zk_create(a, path, "v1", 2, 0, on_create, &r1), 0);
    ck_assert_int_eq(r1.calls, 0); /* never inside the submit call */
    ck_assert(run_until(loop, &r1.calls, 5));
    ck_assert_int_eq(r1.rc, 0);
    ck_assert_str_eq(r1.path, path);
    ck_assert_int_eq(r1.st.version, 0);

    ck_assert_int_eq(keel_zk_create(a, path, "v1", 2, 0, on_create, &r2), 0);
    ck_assert(run_until(loop, &r2.calls, 5));
    ck_assert_int_eq(r2.rc, KEEL_EEXIST);

    ck_assert_int_eq(keel_zk_set(a, path, "v2", 2, 3, on_stat, &r3), 0);
    ck_assert(run_until(loop, &r3.calls, 5));
    ck_assert_int_eq(r3.rc, KEEL_EBADVERSION);

    ck_assert_int_eq(keel_zk_get(a, "/no-such-node", NULL, NULL, on_data, &r4),
                     0);
    ck_assert(run_until(loop, &r4.calls, 5));
    ck_assert_int_eq(r4.rc, KEEL_ENOTFOUND);

    /* multi: a failing check op rolls the create back */
    memset(ops, 0, sizeof ops);
    ops[0].type = KEEL_ZK_OP_CHECK;
    ops[0].path = path;
    ops[0].version = 5;
    ops[1].type = KEEL_ZK_OP_CREATE;
    ops[1].path = "/seq-";
    ops[1].flags = KEEL_ZK_SEQUENTIAL | KEEL_ZK_EPHEMERAL;
    ck_assert_int_eq(keel_zk_multi(a, ops, 2, on_multi, &r5), 0);
    ck_assert(run_until(loop, &r5.calls, 5));
    ck_assert_int_eq(r5.rc, KEEL_EBADVERSION);
    ck_assert_int_eq(r5.failed, 0);
    ops[0].version = 0;
    memset(&r5, 0, sizeof r5);
    ck_assert_int_eq(keel_zk_multi(a, ops, 2, on_multi, &r5), 0);
    ck_assert(run_until(loop, &r5.calls, 5));
    ck_assert_int_eq(r5.rc, 0);
    ck_assert_int_eq(strncmp(r5.path, "/seq-", 5), 0);
    ck_assert_int_eq(strlen(r5.path), 15);

    ck_assert_int_eq(keel_zk_children(a, "/", NULL, NULL, on_children, &r6), 0);
    ck_assert(run_until(loop, &r6.calls, 5));
    ck_assert_int_eq(r6.rc, 0);
    ck_assert_int_ge(r6.count, 3); /* zookeeper, ours, the sequential one */

    /* sync: answered, never inside the submit call */
    memset(&r1, 0, sizeof r1);
    ck_assert_int_eq(keel_zk_sync(a, path, on_void, &r1), 0);
    ck_assert_int_eq(r1.calls, 0);
    ck_assert(run_until(loop, &r1.calls, 5));
    ck_assert_int_eq(r1.rc, 0);

    keel_zk_destroy(a);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_watches_and_ephemerals)
{
    struct ev_loop *loop;
    keel_zk *a, *b;
    rec sa = {0}, sb = {0}, c1 = {0}, g = {0}, gc = {0}, ge = {0}, w = {0},
        wc = {0}, st = {0};
    char path[64];

    loop = ev_loop_new(EVFLAG_AUTO);
    a = client(loop, 4000, &sa);
    b = client(loop, 4000, &sb);
    snprintf(path, sizeof path, "/eph-%d", (int)getpid());

    ck_assert_int_eq(keel_zk_create(a, path, "x", 1, KEEL_ZK_EPHEMERAL,
                                    on_create, &c1),
                     0);
    ck_assert(run_until(loop, &c1.calls, 5));
    ck_assert_int_eq(c1.rc, 0);
    ck_assert_int_eq(c1.st.ephemeral_owner, keel_zk_session_id(a));

    /* b watches the node's data and the root's children. Every request
     * has its own record: the server may answer b after it has sent b an
     * event that a's later request caused, so one answer must not be
     * taken for another's. */
    ck_assert_int_eq(keel_zk_get(b, path, on_watch, &w, on_data, &g), 0);
    ck_assert(run_until(loop, &g.calls, 5));
    ck_assert_int_eq(g.rc, 0);
    ck_assert_str_eq(g.data, "x");
    ck_assert_int_eq(
        keel_zk_children(b, "/", on_watch, &wc, on_children, &gc), 0);
    ck_assert(run_until(loop, &gc.calls, 5));
    ck_assert_int_eq(gc.rc, 0);

    ck_assert_int_eq(keel_zk_set(a, path, "y", 1, 0, on_stat, &st), 0);
    ck_assert(run_until(loop, &w.calls, 5));
    ck_assert_int_eq(w.events[0], KEEL_ZK_NODE_CHANGED);
    ck_assert_str_eq(w.path, path);
    ck_assert(run_until(loop, &st.calls, 5));
    ck_assert_int_eq(st.rc, 0);

    /* Re-arm with exists (same callback and argument as the fired data
     * watch), then close a's session: the node goes, both watches fire.
     * The exists answer must be in, and must have found the node, before
     * the close: an exists that reaches the server after the node is gone
     * answers ENOTFOUND and leaves a watch for the node's creation, which
     * its deletion does not fire (see the end of this test). */
    ck_assert_int_eq(keel_zk_exists(b, path, on_watch, &w, on_stat, &ge), 0);
    ck_assert(run_until(loop, &ge.calls, 5));
    ck_assert_int_eq(ge.rc, 0);
    ck_assert_int_eq(w.calls, 1);
    keel_zk_close(a);
    {
        /* The close normally ends the session at once; should its
         * request not reach the server (a loaded machine), the session
         * expires instead, within its timeout and a tick or two: wait
         * that long, so the check is about the watches, not the clock. */
        int both = 0;
        double t0 = ev_time();
        while (!both && ev_time() - t0 < 4 + 8) {
            int zero = 0;
            run_until(loop, &zero, 0.05);
            both = w.calls >= 2 && wc.calls >= 1;
        }
        ck_assert_msg(both, "watches did not fire after close");
    }
    ck_assert_int_eq(w.events[1], KEEL_ZK_NODE_DELETED);
    ck_assert_str_eq(w.path, path);
    ck_assert_int_eq(wc.events[0], KEEL_ZK_CHILDREN_CHANGED);
    ck_assert_str_eq(wc.path, "/");
    /* a closed client refuses requests until it connects again */
    ck_assert_int_eq(keel_zk_get(a, path, NULL, NULL, on_data, &g),
                     KEEL_ESESSION);

    /* An exists on the absent node answers ENOTFOUND and leaves a watch
     * that its creation fires (by a's new session here). */
    memset(&ge, 0, sizeof ge);
    ck_assert_int_eq(keel_zk_exists(b, path, on_watch, &w, on_stat, &ge), 0);
    ck_assert(run_until(loop, &ge.calls, 5));
    ck_assert_int_eq(ge.rc, KEEL_ENOTFOUND);
    memset(&sa, 0, sizeof sa);
    ck_assert_int_eq(keel_zk_connect(a, 4000, on_session, &sa), 0);
    ck_assert(run_until(loop, &sa.nevents, 10));
    ck_assert_int_eq(sa.events[0], KEEL_ZK_CONNECTED);
    memset(&c1, 0, sizeof c1);
    ck_assert_int_eq(keel_zk_create(a, path, "z", 1, KEEL_ZK_EPHEMERAL,
                                    on_create, &c1),
                     0);
    ck_assert(run_until(loop, &c1.calls, 5));
    ck_assert_int_eq(c1.rc, 0);
    {
        int third = 0;
        double t0 = ev_time();
        while (!third && ev_time() - t0 < 5) {
            int zero = 0;
            run_until(loop, &zero, 0.05);
            third = w.calls >= 3;
        }
        ck_assert_msg(third, "the exists watch did not fire on creation");
    }
    ck_assert_int_eq(w.calls, 3);
    ck_assert_int_eq(w.events[2], KEEL_ZK_NODE_CREATED);
    ck_assert_str_eq(w.path, path);

    keel_zk_destroy(a);
    keel_zk_destroy(b);
    ev_loop_destroy(loop);
}
END_TEST

static void pause_loop(double secs)
{
    usleep((useconds_t)(secs * 1e6));
}

START_TEST(test_expiry_when_frozen)
{
    struct ev_loop *loop;
    keel_zk *a;
    rec s = {0}, c1 = {0}, st = {0};
    char path[64];

    loop = ev_loop_new(EVFLAG_AUTO);
    a = client(loop, 1000, &s);
    snprintf(path, sizeof path, "/frozen-%d", (int)getpid());
    ck_assert_int_eq(keel_zk_create(a, path, NULL, 0, KEEL_ZK_EPHEMERAL,
                                    on_create, &c1),
                     0);
    ck_assert(run_until(loop, &c1.calls, 5));
    /* Not driving the client for longer than its session timeout: the
     * server expires the session, and the client learns it once it runs
     * again (disconnected first, then expired on reconnection). */
    pause_loop(2.5);
    {
        int seen = 0;
        double t0 = ev_time();
        while (!seen && ev_time() - t0 < 10) {
            int zero = 0;
            run_until(loop, &zero, 0.05);
            seen = has_event(&s, KEEL_ZK_EXPIRED);
        }
        ck_assert_msg(seen, "no expiry event");
    }
    ck_assert_int_eq(keel_zk_exists(a, path, NULL, NULL, on_stat, &st),
                     KEEL_ESESSION);
    /* A new session on the same handle works, and the ephemeral is gone. */
    memset(&s, 0, sizeof s);
    ck_assert_int_eq(keel_zk_connect(a, 4000, on_session, &s), 0);
    ck_assert(run_until(loop, &s.nevents, 10));
    ck_assert_int_eq(s.events[0], KEEL_ZK_CONNECTED);
    ck_assert_int_eq(keel_zk_exists(a, path, NULL, NULL, on_stat, &st), 0);
    ck_assert(run_until(loop, &st.calls, 5));
    ck_assert_int_eq(st.rc, KEEL_ENOTFOUND);
    keel_zk_destroy(a);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_connection_loss_and_recovery)
{
    struct ev_loop *loop;
    keel_zk *a;
    rec s = {0}, st = {0};
    const char *argv[6];
    char port[16];

    loop = ev_loop_new(EVFLAG_AUTO);
    a = client(loop, 10000, &s);
    snprintf(port, sizeof port, "%d", server.port);
    argv[0] = "/bin/bash";
    argv[1] = KEEL_SOURCE_DIR "/zk-conf/zk.sh";
    argv[2] = "stop";
    argv[3] = server.dir;
    argv[4] = NULL;
    ck_assert_int_eq(tu_run(argv, NULL, NULL), 0);
    {
        int seen = 0;
        double t0 = ev_time();
        while (!seen && ev_time() - t0 < 10) {
            int zero = 0;
            run_until(loop, &zero, 0.05);
            seen = has_event(&s, KEEL_ZK_DISCONNECTED);
        }
        ck_assert_msg(seen, "no disconnection event");
    }
    /* Requests made while disconnected fail with connection loss (or wait
     * for the reconnection; either way they answer). */
    ck_assert_int_eq(keel_zk_exists(a, "/", NULL, NULL, on_stat, &st), 0);
    argv[2] = "start";
    argv[4] = port;
    argv[5] = NULL;
    ck_assert_int_eq(tu_run(argv, NULL, NULL), 0);
    {
        int seen = 0;
        double t0 = ev_time();
        while (!seen && ev_time() - t0 < 15) {
            int zero = 0;
            run_until(loop, &zero, 0.05);
            seen = s.nevents >= 3 && s.events[2] == KEEL_ZK_CONNECTED;
        }
        ck_assert_msg(seen, "session not re-established");
    }
    ck_assert(run_until(loop, &st.calls, 10));
    ck_assert(st.rc == 0 || st.rc == KEEL_ECONNLOSS);
    keel_zk_destroy(a);
    ev_loop_destroy(loop);
}
END_TEST

/* zk.sh start on a port something else listens on fails and names the
 * port, launching nothing: a server started there would die at its bind
 * while the one already there answered the readiness probe for it. An
 * ensemble one of whose nine ports is taken is refused the same way.
 * The listener here is the test's own, so no other test's server can be
 * taken for it. */
START_TEST(test_start_on_taken_port)
{
    char *dir = tu_tmpdir("zk-taken"), *out = NULL, *err = NULL;
    char port[16], base[16], want[96], pidfile[4096];
    const char *one[] = {"/bin/bash", KEEL_SOURCE_DIR "/zk-conf/zk.sh",
                         "start", dir, port, NULL};
    const char *ens[] = {"/bin/bash", KEEL_SOURCE_DIR "/zk-conf/zk.sh",
                         "start-ensemble", dir, base, NULL};
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t salen = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), taken, rc;

    ck_assert_int_ge(fd, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, 8), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &salen), 0);
    taken = ntohs(sa.sin_port);

    snprintf(port, sizeof port, "%d", taken);
    snprintf(want, sizeof want, "port %d on 127.0.0.1 is in use", taken);
    rc = tu_run_for(one, 20, &out, &err);
    ck_assert_msg(rc == 1 && err != NULL && strstr(err, want) != NULL,
                  "exit %d: %s", rc, err != NULL ? err : "");
    snprintf(pidfile, sizeof pidfile, "%s/zk.pid", dir);
    ck_assert_msg(access(pidfile, F_OK) != 0, "a server was launched");
    free(out);
    free(err);

    if (taken > 4) {
        /* The taken port is the ensemble's fifth (a quorum port). */
        snprintf(base, sizeof base, "%d", taken - 4);
        rc = tu_run_for(ens, 20, &out, &err);
        ck_assert_msg(rc == 1 && err != NULL && strstr(err, want) != NULL,
                      "exit %d: %s", rc, err != NULL ? err : "");
        snprintf(pidfile, sizeof pidfile, "%s/1/zk.pid", dir);
        ck_assert_msg(access(pidfile, F_OK) != 0, "a server was launched");
        free(out);
        free(err);
    }
    close(fd);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A 3-server ensemble from zk.sh start-ensemble: a client sees one
 * session across the loss of any one server. */
START_TEST(test_ensemble)
{
    struct ev_loop *loop;
    tu_zk ens;
    keel_zk *a;
    keel_zk_stat first;
    rec s = {0}, c1 = {0}, st = {0};
    const char *argv[5];
    char dir[512];

    ck_assert_int_eq(tu_zk_start(&ens, 3, 500), 0);
    loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_int_eq(keel_zk_real_create(loop, ens.hosts, &a), 0);
    ck_assert_int_eq(keel_zk_connect(a, 6000, on_session, &s), 0);
    ck_assert(run_until(loop, &s.nevents, 10));
    ck_assert_int_eq(s.events[0], KEEL_ZK_CONNECTED);
    ck_assert_int_eq(keel_zk_create(a, "/ens", "x", 1, KEEL_ZK_EPHEMERAL,
                                    on_create, &c1),
                     0);
    ck_assert(run_until(loop, &c1.calls, 10));
    ck_assert_int_eq(c1.rc, 0);
    first = c1.st;
    /* stop one server: with two of three up the ensemble serves, and
     * the session survives (moving to another server if it was on this
     * one) */
    snprintf(dir, sizeof dir, "%s/1", ens.dir);
    argv[0] = "/bin/bash";
    argv[1] = KEEL_SOURCE_DIR "/zk-conf/zk.sh";
    argv[2] = "stop";
    argv[3] = dir;
    argv[4] = NULL;
    ck_assert_int_eq(tu_run(argv, NULL, NULL), 0);
    {
        double t0 = ev_time();
        int ok = 0;
        while (!ok && ev_time() - t0 < 15) {
            memset(&st, 0, sizeof st);
            ck_assert_int_eq(keel_zk_exists(a, "/ens", NULL, NULL, on_stat,
                                            &st),
                             0);
            run_until(loop, &st.calls, 5);
            ok = st.calls && st.rc == 0;
        }
        ck_assert_msg(ok, "the ensemble did not answer with 2 of 3 servers");
    }
    ck_assert_int_eq(st.st.czxid, first.czxid);
    ck_assert_int_eq(st.st.ephemeral_owner, keel_zk_session_id(a));
    ck_assert(!has_event(&s, KEEL_ZK_EXPIRED));
    keel_zk_destroy(a);
    ev_loop_destroy(loop);
    tu_zk_stop(&ens);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("zk_client");
    TCase *tc = tcase_create("real");
    TCase *te = tcase_create("ensemble");
    TCase *ts = tcase_create("script");

    tcase_add_unchecked_fixture(tc, suite_setup, suite_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_operations);
    tcase_add_test(tc, test_watches_and_ephemerals);
    tcase_add_test(tc, test_expiry_when_frozen);
    tcase_add_test(tc, test_connection_loss_and_recovery);
    suite_add_tcase(s, tc);
    tcase_set_timeout(te, 90);
    tcase_add_test(te, test_ensemble);
    suite_add_tcase(s, te);
    tcase_set_timeout(ts, 60);
    tcase_add_test(ts, test_start_on_taken_port);
    suite_add_tcase(s, ts);
    return tu_run_suite(s);
}
