#include "zk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chaos/cluster.h"
#include "proc.h"
#include "testutil.h"

#define ZK_SCRIPT KEEL_SOURCE_DIR "/zk-conf/zk.sh"
#define ZK_SERVER "/usr/share/zookeeper/bin/zkServer.sh"

int tu_zk_available(void)
{
    return access(ZK_SERVER, X_OK) == 0;
}

/* ZooKeeper's ports are taken as keel-chaos takes them: below the
 * kernel's ephemeral range, where no connection's own local port can take
 * a server's while it starts or is down. */
int tu_zk_free_ports(int count)
{
    return chaos_free_ports("127.0.0.1", count);
}

static int run_script2(const char *verb, const char *dir, int port,
                       int port2)
{
    char portbuf[16], port2buf[16], *out = NULL, *err = NULL;
    const char *argv[7];
    int rc;

    snprintf(portbuf, sizeof portbuf, "%d", port);
    snprintf(port2buf, sizeof port2buf, "%d", port2);
    argv[0] = "/bin/bash";
    argv[1] = ZK_SCRIPT;
    argv[2] = verb;
    argv[3] = dir;
    argv[4] = port > 0 ? portbuf : NULL;
    argv[5] = port > 0 && port2 > 0 ? port2buf : NULL;
    argv[6] = NULL;
    /* Servers (three JVMs for an ensemble) may start slowly on a loaded
     * machine: the script waits up to ZK_READY_SECS for readiness, this
     * run a little longer. */
    setenv("ZK_READY_SECS", "80", 0);
    rc = tu_run_for(argv, 90, &out, &err);
    if (rc != 0)
        fprintf(stderr, "zk.sh %s %s failed (%d):\n%s%s\n", verb, dir, rc,
                out ? out : "", err ? err : "");
    free(out);
    free(err);
    return rc;
}

static int run_script(const char *verb, const char *dir, int port)
{
    return run_script2(verb, dir, port, 0);
}

static void set_env(int tick_ms)
{
    char buf[16];

    snprintf(buf, sizeof buf, "%d", tick_ms > 0 ? tick_ms : 2000);
    setenv("ZK_TICK_MS", buf, 1);
    snprintf(buf, sizeof buf, "%d", (int)getpid());
    setenv("ZK_WATCH_PID", buf, 1);
}

int tu_zk_start(tu_zk *zk, int servers, int tick_ms)
{
    int attempt;

    memset(zk, 0, sizeof *zk);
    if (servers != 1 && servers != 3)
        return -1;
    set_env(tick_ms);
    zk->dir = tu_tmpdir("zk");
    zk->servers = servers;
    for (attempt = 0; attempt < 2; attempt++) {
        /* An ensemble uses 9 ports: 3 client, 3 quorum, 3 election. */
        int port = tu_zk_free_ports(servers == 1 ? 1 : 9);

        if (port < 0)
            continue;
        if (run_script(servers == 1 ? "start" : "start-ensemble", zk->dir,
                       port) == 0) {
            zk->port = port;
            if (servers == 1)
                snprintf(zk->hosts, sizeof zk->hosts, "127.0.0.1:%d", port);
            else
                snprintf(zk->hosts, sizeof zk->hosts,
                         "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", port,
                         port + 1, port + 2);
            return 0;
        }
    }
    tu_rmrf(zk->dir);
    free(zk->dir);
    zk->dir = NULL;
    return -1;
}

int tu_zk_start_split(tu_zk *zk, int tick_ms, int proxy,
                      int (*relay)(int base, void *arg), void *arg)
{
    int attempt;

    memset(zk, 0, sizeof *zk);
    set_env(tick_ms);
    zk->dir = tu_tmpdir("zk");
    zk->servers = 3;
    zk->proxy = proxy;
    for (attempt = 0; attempt < 2; attempt++) {
        int port = tu_zk_free_ports(9);

        if (port < 0 || (port + 8 >= proxy && port <= proxy + 5))
            continue; /* overlaps the relayed ports */
        if (relay(port, arg) != 0)
            break;
        if (run_script2("start-split", zk->dir, port, proxy) == 0) {
            zk->port = port;
            snprintf(zk->hosts, sizeof zk->hosts,
                     "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", port,
                     port + 1, port + 2);
            return 0;
        }
    }
    tu_rmrf(zk->dir);
    free(zk->dir);
    zk->dir = NULL;
    return -1;
}

int tu_zk_mode(int client_port, char *buf, size_t cap)
{
    char portbuf[16], *out = NULL, *err = NULL, *p;
    const char *argv[] = {"/bin/bash", ZK_SCRIPT, "probe", portbuf, "srvr",
                          NULL};
    int rc = -1;

    snprintf(portbuf, sizeof portbuf, "%d", client_port);
    if (tu_run(argv, &out, &err) == 0 && out != NULL &&
        (p = strstr(out, "Mode: ")) != NULL) {
        size_t n = strcspn(p + 6, "\r\n");
        if (n > 0 && n < cap) {
            memcpy(buf, p + 6, n);
            buf[n] = '\0';
            rc = 0;
        }
    }
    free(out);
    free(err);
    return rc;
}

void tu_zk_stop(tu_zk *zk)
{
    if (zk->dir == NULL)
        return;
    if (zk->port > 0)
        run_script(zk->servers == 1 ? "stop" : "stop-ensemble", zk->dir, 0);
    tu_rmrf(zk->dir);
    free(zk->dir);
    zk->dir = NULL;
    zk->port = 0;
}

int tu_zk_halt(tu_zk *zk)
{
    if (zk->dir == NULL || zk->port <= 0)
        return -1;
    return run_script(zk->servers == 1 ? "stop" : "stop-ensemble", zk->dir,
                      0) == 0
               ? 0
               : -1;
}

int tu_zk_restart(tu_zk *zk)
{
    int attempt;

    if (zk->dir == NULL || zk->port <= 0)
        return -1;
    for (attempt = 0; attempt < 5; attempt++) {
        struct timespec pause = {0, 500 * 1000 * 1000};
        if (zk->proxy > 0 ? run_script2("start-split", zk->dir, zk->port,
                                        zk->proxy) == 0
                          : run_script(zk->servers == 1 ? "start"
                                                        : "start-ensemble",
                                       zk->dir, zk->port) == 0)
            return 0;
        /* A failed start leaves nothing running (zk.sh halts it). */
        nanosleep(&pause, NULL);
    }
    return -1;
}
