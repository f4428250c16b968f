/* One server of a 3-server ZooKeeper ensemble stops answering (SIGSTOP, as
 * a long pause or a stalled disk would) while the other two serve: a node
 * connected to it must leave it for another server before its lease
 * lapses, and go on serving. The ZooKeeper library gives a silent server
 * up only after 2/3 of the session timeout, the lease ends at 1/2: without
 * the node's own switch (lease.h, KEEL_LEASE_STALL) it fenced itself for
 * seconds though the ensemble served throughout.
 *
 * Real processes: the ensemble from zk-conf/zk.sh (tickTime 800 ms), one
 * keeld with a 16 s session given all three servers. Which server its
 * session landed on is read from /proc (its established connection to
 * one of the client ports); a node on the leader is restarted until it
 * lands on a follower, since pausing the leader stops the whole ensemble
 * until a new one is elected. Every wait is bounded. Skipped (exit 77)
 * without the ZooKeeper server package. */
#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "proc.h"
#include "testutil.h"
#include "zk.h"

/* A session of 16 s (ZooKeeper grants at most 20 ticks): heartbeats every
 * 2 s, a server left after 4 s without an answer, the lease at 8 s, so
 * the switch has at least 2 s to reach another server and have a
 * heartbeat answered, on a loaded machine too. */
#define TICK_MS 800
#define SESSION_MS 16000 /* the library gives up at 10.7 s */
#define PAUSE_MS 11500   /* past both, within the session */
#define TRIES 10

static tu_cluster fx;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

/* Whether inode is one of process pid's open sockets. */
static int has_socket(pid_t pid, unsigned long inode)
{
    char path[64], link[64], want[48];
    struct dirent *e;
    DIR *d;
    int found = 0;

    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    snprintf(want, sizeof want, "socket:[%lu]", inode);
    if ((d = opendir(path)) == NULL)
        return 0;
    while (!found && (e = readdir(d)) != NULL) {
        char fd[384];
        ssize_t n;
        snprintf(fd, sizeof fd, "%s/%s", path, e->d_name);
        n = readlink(fd, link, sizeof link - 1);
        if (n > 0) {
            link[n] = '\0';
            found = strcmp(link, want) == 0;
        }
    }
    closedir(d);
    return found;
}

/* The client port (of base..base+2) that process pid has an established
 * TCP connection to, or 0. */
static int zk_port_of(pid_t pid, int base)
{
    char path[64], line[512];
    FILE *f;
    int port = 0;

    snprintf(path, sizeof path, "/proc/%d/net/tcp", (int)pid);
    if ((f = fopen(path, "r")) == NULL)
        return 0;
    while (port == 0 && fgets(line, sizeof line, f) != NULL) {
        unsigned lport, rport, st;
        unsigned long inode;
        char laddr[16], raddr[16];
        if (sscanf(line, " %*d: %15[0-9A-F]:%x %15[0-9A-F]:%x %x %*s %*s %*s "
                         "%*s %*s %lu",
                   laddr, &lport, raddr, &rport, &st, &inode) != 6)
            continue;
        if (st == 1 /* ESTABLISHED */ && (int)rport >= base &&
            (int)rport < base + 3 && has_socket(pid, inode))
            port = (int)rport;
    }
    fclose(f);
    return port;
}

/* The pid of the ensemble's server with client port `port`. */
static pid_t server_pid(int port)
{
    char path[512];
    FILE *f;
    int pid = 0;

    snprintf(path, sizeof path, "%s/%d/zk.pid", fx.zk.dir,
             port - fx.zk.port + 1);
    if ((f = fopen(path, "r")) == NULL)
        return 0;
    if (fscanf(f, "%d", &pid) != 1)
        pid = 0;
    fclose(f);
    return (pid_t)pid;
}

static void setup(void)
{
    tu_cluster_setup(&fx, "zkserver", "zs");
    fx.session_ms = SESSION_MS;
}

static void teardown(void)
{
    tu_cluster_teardown(&fx, SIGKILL);
}

START_TEST(a_silent_server_is_left_for_another)
{
    char mode[32] = "", *log;
    int tries, port = 0, ok = 0, failed = 0;
    pid_t zk;
    double t0;

    for (tries = 0; tries < TRIES; tries++) {
        int i;
        /* At debug, a failure's log shows the library's server choices. */
        ck_assert_int_eq(tu_cluster_start_node(&fx, 0, 0, "--log-level",
                                               "debug", NULL),
                         0);
        for (i = 0; i < 200 && tu_cluster_counter(&fx, 0, "c", "get") < 0;
             i++)
            tu_sleep_ms(100);
        port = zk_port_of(fx.nodes[0].pid, fx.zk.port);
        if (port > 0 && tu_zk_mode(port, mode, sizeof mode) == 0 &&
            strcmp(mode, "follower") == 0)
            break;
        /* On the leader (or not found): a clean stop closes the session,
         * and the next one lands on a server the library picks. */
        ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGTERM), 0);
        tu_keeld_free(&fx.nodes[0]);
        port = 0;
    }
    CHECK(port > 0, "the node's session never landed on a follower in %d "
                    "starts",
          TRIES);
    CHECK(tu_cluster_counter(&fx, 0, "c", "incr") == 1,
          "the first increment failed");
    ok = 1;
    zk = server_pid(port);
    CHECK(zk > 0, "no pid for the server on port %d", port);

    fprintf(stderr, "pausing the server on port %d\n", port);
    /* The server stops answering; the other two go on. */
    ck_assert_int_eq(kill(zk, SIGSTOP), 0);
    t0 = tu_now_s();
    while (tu_now_s() - t0 < PAUSE_MS / 1000.0) {
        long v;
        fx.quiet = 1;
        v = tu_cluster_counter(&fx, 0, "c", "incr");
        fx.quiet = 0;
        if (v == ok + 1)
            ok++;
        else
            failed++;
        tu_sleep_ms(100);
    }
    ck_assert_int_eq(kill(zk, SIGCONT), 0);
    log = tu_keeld_log(&fx.nodes[0]);
    CHECK(failed == 0,
          "%d of %d increments failed while a follower was silent",
          failed, ok - 1 + failed);
    CHECK(log != NULL && strstr(log, "trying the next server") != NULL,
          "the node did not leave the silent server");
    CHECK(log != NULL && strstr(log, "fenced: stops serving (lease") == NULL,
          "the node fenced itself while the ensemble served");
    free(log);
    CHECK(tu_cluster_counter(&fx, 0, "c", "get") == ok,
          "the counter does not hold the %d increments answered", ok);
}
END_TEST

int main(void)
{
    Suite *s;
    TCase *tc;
    int rc;

    if (!tu_zk_available()) {
        fprintf(stderr, "test_cluster_zkserver: skipped: the ZooKeeper "
                        "server package is not installed "
                        "(scripts/install-deps)\n");
        return 77;
    }
    if (tu_zk_start(&fx.zk, 3, TICK_MS) != 0) {
        fprintf(stderr, "test_cluster_zkserver: the ensemble did not "
                        "start\n");
        return 1;
    }
    s = suite_create("cluster_zkserver");
    tc = tcase_create("zkserver");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_silent_server_is_left_for_another);
    suite_add_tcase(s, tc);
    rc = tu_run_suite(s);
    tu_zk_stop(&fx.zk);
    return rc;
}
