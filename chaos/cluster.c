#include "chaos/cluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chaos/relay.h"
#include "keel.h"
#include "runtime/client.h"
#include "runtime/proto.h"

int64_t chaos_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t chaos_real_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void chaos_sleep_ms(int64_t ms)
{
    struct timespec ts;

    if (ms <= 0)
        return;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void say(const chaos_cluster *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A line of the harness's own log, with the time since the epoch. */
static void say(const chaos_cluster *c, const char *fmt, ...)
{
    va_list ap;
    int64_t t = chaos_real_ns();

    if (c->log == NULL)
        return;
    fprintf(c->log, "%lld.%03lld ", (long long)(t / 1000000000),
            (long long)(t / 1000000 % 1000));
    va_start(ap, fmt);
    vfprintf(c->log, fmt, ap);
    va_end(ap);
    fputc('\n', c->log);
    fflush(c->log);
}

static void event(const chaos_cluster *c, const char *node, const char *what)
{
    if (c->on_event != NULL)
        c->on_event(c->event_data, node, what);
}

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A TCP port on host that could be bound a moment ago, or -1. */
static int free_port(const char *host)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    if (inet_pton(AF_INET, host, &a.sin_addr) == 1 &&
        bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void set_addr(chaos_node *nd)
{
    char buf[sizeof nd->addr];

    snprintf(buf, sizeof buf, "%s:%d", nd->host, nd->port);
    memcpy(nd->addr, buf, sizeof buf);
}

static char *path2(const char *a, const char *b)
{
    char *p;

    return asprintf(&p, "%s/%s", a, b) < 0 ? NULL : p;
}

int chaos_cluster_init(chaos_cluster *c, int n, int base, const char *host)
{
    char sub[64], *d;
    int i;

    if (n < 1 || n > CHAOS_NODES_MAX || base < 1 || base > n)
        return KEEL_EINVAL;
    if (host == NULL)
        host = "127.0.0.1";
    c->nnodes = n;
    c->base = base;
    snprintf(c->zk_host, sizeof c->zk_host, "%s", host);
    if ((c->zk_dir = path2(c->dir, "zk")) == NULL)
        return KEEL_ENOMEM;
    if ((d = path2(c->dir, "nodes")) == NULL)
        return KEEL_ENOMEM;
    mkdir(d, 0755);
    free(d);
    if ((d = path2(c->dir, "actlogs")) == NULL)
        return KEEL_ENOMEM;
    mkdir(d, 0755);
    free(d);
    for (i = 0; i < n; i++) {
        chaos_node *nd = &c->nodes[i];

        memset(nd, 0, sizeof *nd);
        snprintf(nd->id, sizeof nd->id, "n%d", i);
        snprintf(nd->host, sizeof nd->host, "%s", host);
        nd->port = free_port(host);
        if (nd->port < 0)
            return KEEL_EADDR;
        set_addr(nd);
        nd->spare = i >= base;
        snprintf(sub, sizeof sub, "nodes/%s", nd->id);
        nd->data = path2(c->dir, sub);
        snprintf(sub, sizeof sub, "nodes/%s.log", nd->id);
        nd->log = path2(c->dir, sub);
        snprintf(sub, sizeof sub, "actlogs/%s.log", nd->id);
        nd->actlog = path2(c->dir, sub);
        if (nd->data == NULL || nd->log == NULL || nd->actlog == NULL)
            return KEEL_ENOMEM;
    }
    /* Ports of different nodes must differ on one address. */
    for (i = 1; i < n; i++) {
        int j;
        for (j = 0; j < i; j++)
            while (strcmp(c->nodes[j].host, c->nodes[i].host) == 0 &&
                   c->nodes[j].port == c->nodes[i].port) {
                c->nodes[i].port = free_port(host);
                if (c->nodes[i].port < 0)
                    return KEEL_EADDR;
                set_addr(&c->nodes[i]);
                j = 0;
            }
    }
    return 0;
}

void chaos_cluster_place(chaos_cluster *c, int i, const char *host, int port,
                         const char *netns)
{
    chaos_node *nd = &c->nodes[i];

    snprintf(nd->host, sizeof nd->host, "%s", host);
    nd->port = port;
    snprintf(nd->netns, sizeof nd->netns, "%s", netns);
    set_addr(nd);
}

/* ------------------------------------------------------------ processes */

extern char **environ;

/* This process's environment with the "NAME=value" strings of set (NULL-
 * terminated) in place of their names' values: malloc'd array, strings
 * not copied. Built before fork, since other threads may hold the
 * allocator's lock at that instant and the child must not allocate. */
static char **env_with(const char *const *set)
{
    size_t n = 0, k = 0, i, j;
    char **env;

    while (environ[n] != NULL)
        n++;
    for (j = 0; set != NULL && set[j] != NULL; j++)
        ;
    env = malloc((n + j + 1) * sizeof *env);
    if (env == NULL)
        return NULL;
    for (j = 0; set != NULL && set[j] != NULL; j++)
        env[k++] = (char *)set[j];
    for (i = 0; i < n; i++) {
        int replaced = 0;
        for (j = 0; set != NULL && set[j] != NULL; j++) {
            size_t l = strcspn(set[j], "=") + 1;
            if (strncmp(environ[i], set[j], l) == 0)
                replaced = 1;
        }
        if (!replaced)
            env[k++] = environ[i];
    }
    env[k] = NULL;
    return env;
}

/* Forks and execs argv with stdout and stderr appended to logpath, in
 * network namespace netns when not empty, with the environment changed
 * by set (see env_with; may be NULL). The child dies with this thread
 * (PR_SET_PDEATHSIG). Returns the pid or -1. */
static pid_t spawn(const char *const *argv, const char *const *set,
                   const char *logpath, const char *netns)
{
    char **env = env_with(set);
    pid_t ppid = getpid(), pid;

    if (env == NULL)
        return -1;
    pid = fork();
    if (pid != 0) {
        free(env);
        return pid;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != ppid)
        _exit(127);
    {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int nul = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (nul >= 0) {
            dup2(nul, 0);
            close(nul);
        }
    }
    if (netns != NULL && netns[0] != '\0') {
        char p[96];
        int fd;
        snprintf(p, sizeof p, "/var/run/netns/%s", netns);
        fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
            static const char m[] =
                "keel-chaos: cannot enter the node's network namespace\n";
            (void)!write(2, m, sizeof m - 1);
            _exit(126);
        }
        close(fd);
    }
    execve(argv[0], (char *const *)argv, env);
    {
        static const char m[] = "keel-chaos: cannot run the program\n";
        (void)!write(2, m, sizeof m - 1);
    }
    _exit(127);
}

const char *chaos_wait_status(int status, char *buf, size_t cap)
{
    if (WIFEXITED(status))
        snprintf(buf, cap, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)),
                 WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, cap, "wait status %#x", (unsigned)status);
    return buf;
}

/* Waits at most ms for pid; returns its status, or -1 when it is still
 * running (then it is SIGKILLed and reaped if kill_late). */
static int wait_for(pid_t pid, int ms, int kill_late)
{
    int64_t deadline = chaos_mono_ns() + (int64_t)ms * 1000000;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return 0;
        if (chaos_mono_ns() > deadline)
            break;
        chaos_sleep_ms(10);
    }
    if (kill_late) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    return -1;
}

/* ------------------------------------------------------------ ZooKeeper */

static int zk_count(const chaos_cluster *c)
{
    return c->zk_servers == CHAOS_ZK_MAX ? CHAOS_ZK_MAX : 1;
}

const char *chaos_zk_name(const chaos_cluster *c, int s)
{
    static const char *const names[CHAOS_ZK_MAX] = {"zk1", "zk2", "zk3"};

    if (zk_count(c) == 1 || s < 0 || s >= CHAOS_ZK_MAX)
        return "zk";
    return names[s];
}

/* Server s's directory, as zk.sh lays them out: DIR/zk for one server,
 * DIR/zk/1..3 for an ensemble. malloc'd, or NULL. */
static char *zk_srv_dir(const chaos_cluster *c, int s)
{
    char sub[16];

    if (zk_count(c) == 1)
        return strdup(c->zk_dir);
    snprintf(sub, sizeof sub, "%d", s + 1);
    return path2(c->zk_dir, sub);
}

/* zk.sh VERB DIR [PORT [PROXY]] (a port <= 0 is left out), bounded at
 * 90 s; its output goes to DIR/zk/zk-script.log. */
static int zk_script(chaos_cluster *c, const char *verb, const char *dir,
                     int port, int proxy, char *err, size_t errlen)
{
    char script[1024], portbuf[16], proxybuf[16], tick[32], watch[32];
    char *logpath;
    const char *argv[7], *set[4];
    pid_t pid;
    int status;

    snprintf(script, sizeof script, "%s/zk.sh", c->zk_conf);
    snprintf(portbuf, sizeof portbuf, "%d", port);
    snprintf(proxybuf, sizeof proxybuf, "%d", proxy);
    snprintf(tick, sizeof tick, "ZK_TICK_MS=%d", c->zk_tick_ms);
    /* The server stops on its own when this process is gone. */
    snprintf(watch, sizeof watch, "ZK_WATCH_PID=%d", (int)getpid());
    set[0] = tick;
    set[1] = watch;
    set[2] = getenv("ZK_READY_SECS") == NULL ? "ZK_READY_SECS=60" : NULL;
    set[3] = NULL;
    argv[0] = "/bin/bash";
    argv[1] = script;
    argv[2] = verb;
    argv[3] = dir;
    argv[4] = port > 0 ? portbuf : NULL;
    argv[5] = port > 0 && proxy > 0 ? proxybuf : NULL;
    argv[6] = NULL;
    mkdir(c->zk_dir, 0755);
    logpath = path2(c->zk_dir, "zk-script.log");
    if (logpath == NULL)
        return -1;
    pid = spawn(argv, set, logpath, NULL);
    free(logpath);
    if (pid < 0) {
        errf(err, errlen, "cannot fork: %s", strerror(errno));
        return -1;
    }
    status = wait_for(pid, 90000, 1);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        errf(err, errlen, "zk.sh %s failed (see %s/zk-script.log)", verb,
             c->zk_dir);
        return -1;
    }
    return 0;
}

/* Whether a TCP port on host can be bound just now. */
static int port_bindable(const char *host, int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

    if (fd < 0)
        return 0;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    ok = inet_pton(AF_INET, host, &a.sin_addr) == 1 &&
         bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* The first of count consecutive ports on host that could all be bound
 * a moment ago, or -1. ZooKeeper's ports are taken below the kernel's
 * ephemeral range (ip_local_port_range): there no connection gets its own
 * port, while in that range a connection from the ensemble's servers, the
 * relays or the nodes could get one of them while its server starts or is
 * down (a connect to a port nobody listens on can even meet itself there,
 * TCP's simultaneous open), and the server would die at its bind. */
int chaos_free_ports(const char *host, int count)
{
    int attempt, lo = 10000, eph = 32768;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    uint64_t x = (uint64_t)chaos_mono_ns() ^ ((uint64_t)getpid() << 20);

    if (f != NULL) {
        if (fscanf(f, "%d", &eph) != 1)
            eph = 32768;
        fclose(f);
    }
    for (attempt = 0; attempt < 200; attempt++) {
        int base, k;
        if (eph - count - lo > 1000) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            base = lo + (int)((x >> 33) % (uint64_t)(eph - count - lo));
        } else {
            base = free_port(host); /* no room below: take what comes */
        }
        if (base < 0 || base + count > 65535)
            continue;
        for (k = 0; k < count && port_bindable(host, base + k); k++)
            ;
        if (k == count)
            return base;
    }
    return -1;
}

/* The quorum relays of an ensemble (zk.sh start-ensemble DIR BASE PROXY):
 * pair k, server `from` reaching server `to`, is relays 2k (quorum port)
 * and 2k + 1 (election port), listening on proxy + 2k and + 2k + 1. */
static void zk_pair(int k, int *from, int *to)
{
    *from = k / (CHAOS_ZK_MAX - 1);
    *to = k % (CHAOS_ZK_MAX - 1);
    if (*to >= *from)
        (*to)++;
}

static void zk_relays_stop(chaos_cluster *c)
{
    int k;

    for (k = 0; k < CHAOS_ZK_RELAYS; k++)
        chaos_relay_stop(&c->zk_relays[k]);
}

static int zk_relays_start(chaos_cluster *c, int base, int proxy)
{
    int k;

    for (k = 0; k < CHAOS_ZK_RELAYS; k++) {
        c->zk_relays[k].lfd = -1;
        c->zk_relays[k].stop_pipe[0] = c->zk_relays[k].stop_pipe[1] = -1;
    }
    for (k = 0; k < CHAOS_ZK_RELAYS; k++) {
        int from, to;
        zk_pair(k / 2, &from, &to);
        /* Server t (from 0) has quorum port base + 3 + t, election port
         * base + 6 + t. */
        if (chaos_relay_start(&c->zk_relays[k], "127.0.0.1", proxy + k,
                              "127.0.0.1",
                              base + (k % 2 ? 6 : 3) + to) != 0) {
            zk_relays_stop(c);
            return -1;
        }
    }
    return 0;
}

static void zk_set_hosts(chaos_cluster *c)
{
    size_t len = 0;
    int s;

    c->zk_hosts[0] = '\0';
    for (s = 0; s < zk_count(c); s++)
        len += (size_t)snprintf(c->zk_hosts + len, sizeof c->zk_hosts - len,
                                "%s%s:%d", s ? "," : "", c->zk_host,
                                c->zk[s].port);
}

static int cancelled(const chaos_cluster *c)
{
    return c->cancel != NULL && *c->cancel != 0;
}

/* One server: on a free port, or on its port again (a restart on the
 * same data). A port may be held for a moment after the server died: a
 * few attempts. */
static int zk_start_one(chaos_cluster *c, char *err, size_t errlen)
{
    int attempt;

    for (attempt = 0; attempt < 5 && !cancelled(c); attempt++) {
        int port = c->zk[0].port > 0 ? c->zk[0].port
                                     : chaos_free_ports(c->zk_host, 1);

        if (port < 0)
            continue;
        if (zk_script(c, "start", c->zk_dir, port, 0, err, errlen) == 0) {
            c->zk[0].port = port;
            c->zk[0].up = 1;
            zk_set_hosts(c);
            say(c, "zookeeper up on %s", c->zk_hosts);
            event(c, "zk", "start");
            return 0;
        }
        chaos_sleep_ms(500);
    }
    return -1;
}

/* The ensemble: 9 ports for the servers, 12 for the relays between them,
 * other ones on each attempt. */
static int zk_start_ensemble(chaos_cluster *c, char *err, size_t errlen)
{
    int attempt, s;

    for (attempt = 0; attempt < 5 && !cancelled(c); attempt++) {
        int base = chaos_free_ports("127.0.0.1", 9);
        int proxy = base > 0 ? chaos_free_ports("127.0.0.1", CHAOS_ZK_RELAYS) : -1;

        if (proxy < 0 || (proxy < base + 9 && base < proxy + CHAOS_ZK_RELAYS))
            continue;
        if (zk_relays_start(c, base, proxy) != 0) {
            errf(err, errlen, "cannot relay the servers' quorum ports: %s",
                 strerror(errno));
            continue;
        }
        if (zk_script(c, "start-ensemble", c->zk_dir, base, proxy, err,
                      errlen) == 0) {
            for (s = 0; s < CHAOS_ZK_MAX; s++) {
                c->zk[s].port = base + s;
                c->zk[s].up = 1;
            }
            c->zk_proxy = proxy;
            zk_set_hosts(c);
            say(c, "zookeeper ensemble up on %s (quorum ports %d..%d, "
                   "reached through relays on %d..%d)",
                c->zk_hosts, base + 3, base + 8, proxy,
                proxy + CHAOS_ZK_RELAYS - 1);
            for (s = 0; s < CHAOS_ZK_MAX; s++)
                event(c, chaos_zk_name(c, s), "start");
            return 0;
        }
        zk_relays_stop(c);
        chaos_sleep_ms(500);
    }
    return -1;
}

int chaos_zk_start(chaos_cluster *c, char *err, size_t errlen)
{
    if (access(c->zk_conf, R_OK) != 0) {
        errf(err, errlen, "no zk-conf directory at %s (--zk-conf DIR)",
             c->zk_conf);
        return -1;
    }
    if (zk_count(c) == 1)
        return zk_start_one(c, err, errlen);
    if (c->zk[0].port > 0) {
        errf(err, errlen, "the ensemble was started already");
        return -1;
    }
    return zk_start_ensemble(c, err, errlen);
}

int chaos_zk_restart(chaos_cluster *c, int s, char *err, size_t errlen)
{
    char *dir;
    int attempt, rc = -1;

    if (zk_count(c) == 1)
        return zk_start_one(c, err, errlen);
    if (s < 0 || s >= CHAOS_ZK_MAX || c->zk[s].port <= 0 || c->zk[s].up) {
        errf(err, errlen, "%s is not down", chaos_zk_name(c, s));
        return -1;
    }
    if ((dir = zk_srv_dir(c, s)) == NULL)
        return -1;
    for (attempt = 0; attempt < 5 && rc != 0 && !cancelled(c); attempt++) {
        if (attempt > 0)
            chaos_sleep_ms(500);
        rc = zk_script(c, "resume", dir, c->zk[s].port, 0, err, errlen);
    }
    free(dir);
    if (rc != 0)
        return -1;
    c->zk[s].up = 1;
    say(c, "zookeeper %s up again on port %d", chaos_zk_name(c, s),
        c->zk[s].port);
    event(c, chaos_zk_name(c, s), "start");
    return 0;
}

static pid_t zk_pid(const chaos_cluster *c, int s)
{
    char *d = zk_srv_dir(c, s);
    char *p = d != NULL ? path2(d, "zk.pid") : NULL;
    FILE *f = p != NULL ? fopen(p, "r") : NULL;
    long v = 0;

    free(d);
    free(p);
    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld", &v) != 1)
        v = 0;
    fclose(f);
    return v > 0 ? (pid_t)v : -1;
}

/* 1 while pid runs (a zombie counts as gone: the server is not our child
 * and what reaps it is not ours to know). */
static int running(pid_t pid)
{
    char p[64], buf[256], *s;
    FILE *f;
    size_t n;

    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    f = fopen(p, "r");
    if (f == NULL)
        return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    s = strrchr(buf, ')');
    return s != NULL && s[1] == ' ' && s[2] != 'Z' && s[2] != 'X';
}

int chaos_zk_kill(chaos_cluster *c, int s)
{
    pid_t pid = s >= 0 && s < zk_count(c) ? zk_pid(c, s) : -1;
    int64_t deadline = chaos_mono_ns() + 10 * 1000000000LL;
    char *d, *p;

    if (pid <= 0)
        return -1;
    kill(pid, SIGKILL);
    c->zk[s].stopped = 0;
    while (running(pid) && chaos_mono_ns() < deadline)
        chaos_sleep_ms(10);
    /* zk.sh would take a zombie's pid for a running server. */
    if ((d = zk_srv_dir(c, s)) != NULL && (p = path2(d, "zk.pid")) != NULL) {
        unlink(p);
        free(p);
    }
    free(d);
    c->zk[s].up = 0;
    say(c, "zookeeper %s killed (pid %d)", chaos_zk_name(c, s), (int)pid);
    event(c, chaos_zk_name(c, s), "kill");
    return running(pid) ? -1 : 0;
}

int chaos_zk_reap(chaos_cluster *c)
{
    int s, gone = 0;

    for (s = 0; s < zk_count(c); s++) {
        pid_t pid;
        char *d, *p;
        if (!c->zk[s].up)
            continue;
        pid = zk_pid(c, s);
        if (pid > 0 && running(pid))
            continue;
        gone |= 1 << s;
        c->zk[s].up = 0;
        c->zk[s].stopped = 0;
        if ((d = zk_srv_dir(c, s)) != NULL &&
            (p = path2(d, "zk.pid")) != NULL) {
            unlink(p);
            free(p);
        }
        free(d);
        say(c, "zookeeper %s exited by itself (pid %d)", chaos_zk_name(c, s),
            (int)pid);
        event(c, chaos_zk_name(c, s), "exit");
    }
    return gone;
}

int chaos_zk_sigstop(chaos_cluster *c, int s)
{
    pid_t pid = s >= 0 && s < zk_count(c) && c->zk[s].up && !c->zk[s].stopped
                    ? zk_pid(c, s)
                    : -1;

    if (pid <= 0 || kill(pid, SIGSTOP) != 0)
        return -1;
    c->zk[s].stopped = 1;
    say(c, "zookeeper %s stopped (SIGSTOP, pid %d)", chaos_zk_name(c, s),
        (int)pid);
    event(c, chaos_zk_name(c, s), "sigstop");
    return 0;
}

int chaos_zk_sigcont(chaos_cluster *c, int s)
{
    pid_t pid = s >= 0 && s < zk_count(c) && c->zk[s].stopped ? zk_pid(c, s)
                                                                : -1;

    if (pid <= 0 || kill(pid, SIGCONT) != 0)
        return -1;
    c->zk[s].stopped = 0;
    say(c, "zookeeper %s continued (SIGCONT)", chaos_zk_name(c, s));
    event(c, chaos_zk_name(c, s), "sigcont");
    return 0;
}

int chaos_zk_cut(chaos_cluster *c, int s, int on)
{
    int k;

    if (zk_count(c) == 1 || s < 0 || s >= CHAOS_ZK_MAX || c->zk_proxy <= 0)
        return -1;
    for (k = 0; k < CHAOS_ZK_RELAYS; k++) {
        int from, to;
        zk_pair(k / 2, &from, &to);
        if (from == s || to == s)
            chaos_relay_cut(&c->zk_relays[k], on);
    }
    c->zk[s].cut = on ? 1 : 0;
    say(c, "zookeeper %s %s the other servers", chaos_zk_name(c, s),
        on ? "cut from" : "joined again to");
    event(c, chaos_zk_name(c, s), on ? "partition" : "heal");
    return 0;
}

/* A four-letter word's answer from the server on 127.0.0.1:port into buf
 * (NUL-terminated), bounded at 2 s. 0 or -1. */
static int zk_probe(int port, const char *word, char *buf, size_t cap)
{
    struct sockaddr_in a;
    struct timeval tv = {2, 0};
    int64_t deadline = chaos_mono_ns() + 2000000000LL;
    size_t n = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        send(fd, word, strlen(word), MSG_NOSIGNAL) != (ssize_t)strlen(word)) {
        close(fd);
        return -1;
    }
    while (n + 1 < cap && chaos_mono_ns() < deadline) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    return n > 0 ? 0 : -1;
}

int chaos_zk_leader(const chaos_cluster *c)
{
    char buf[1024];
    int s;

    if (zk_count(c) == 1)
        return c->zk[0].up && !c->zk[0].stopped ? 0 : -1;
    for (s = 0; s < CHAOS_ZK_MAX; s++)
        if (c->zk[s].up && !c->zk[s].stopped && !c->zk[s].cut &&
            zk_probe(c->zk[s].port, "srvr", buf, sizeof buf) == 0 &&
            strstr(buf, "Mode: leader") != NULL)
            return s;
    return -1;
}

int chaos_zk_all_up(const chaos_cluster *c)
{
    int s;

    for (s = 0; s < zk_count(c); s++)
        if (!c->zk[s].up || c->zk[s].stopped || c->zk[s].cut)
            return 0;
    return 1;
}

void chaos_zk_stop(chaos_cluster *c)
{
    int s, any = 0;

    for (s = 0; s < zk_count(c); s++) {
        if (c->zk[s].stopped)
            chaos_zk_sigcont(c, s); /* zk.sh stop waits for it to exit */
        any |= c->zk[s].up;
    }
    if (c->zk_dir != NULL && c->zk[0].port > 0 && any) {
        zk_script(c, zk_count(c) == 1 ? "stop" : "stop-ensemble", c->zk_dir,
                  0, 0, NULL, 0);
        say(c, "zookeeper stopped");
    }
    for (s = 0; s < zk_count(c); s++)
        c->zk[s].up = 0;
    if (zk_count(c) > 1 && c->zk_proxy > 0) {
        zk_relays_stop(c);
        c->zk_proxy = 0;
    }
}

/* ----------------------------------------------------------------- nodes */

static void end_line(const chaos_cluster *c, const chaos_node *nd)
{
    char line[48];
    int fd = open(nd->actlog, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
                  0644);
    int n;

    if (fd < 0)
        return;
    n = snprintf(line, sizeof line, "%lld end\n", (long long)chaos_real_ns());
    if (write(fd, line, (size_t)n) != n)
        say(c, "%s: cannot write its end line: %s", nd->id, strerror(errno));
    close(fd);
}

static int ping(const char *addr, int timeout_ms)
{
    keel_client *k;
    char *reply = NULL;
    int rc = keel_client_connect(addr, timeout_ms, &k);

    if (rc != 0)
        return rc;
    rc = keel_client_call(k, KEEL_FRAME_PING, NULL, NULL, 0, "p", 1, &reply,
                          NULL);
    free(reply);
    keel_client_close(k);
    return rc;
}

int chaos_node_start(chaos_cluster *c, int i, char *err, size_t errlen)
{
    chaos_node *nd = &c->nodes[i];
    char listen[80], shards[16], session[16], replicas[16];
    const char *argv[32];
    int argc = 0, j;
    int64_t deadline;

    if (nd->pid > 0) {
        errf(err, errlen, "%s runs already", nd->id);
        return -1;
    }
    snprintf(listen, sizeof listen, "%s:%d", nd->host, nd->port);
    snprintf(shards, sizeof shards, "%d", c->shards);
    snprintf(session, sizeof session, "%d", c->session_ms);
    argv[argc++] = c->keeld;
    argv[argc++] = "--data";
    argv[argc++] = nd->data;
    argv[argc++] = "--listen";
    argv[argc++] = listen;
    argv[argc++] = "--zk";
    argv[argc++] = c->zk_via[0] != '\0' ? c->zk_via : c->zk_hosts;
    argv[argc++] = "--cluster";
    argv[argc++] = c->name;
    argv[argc++] = "--node-id";
    argv[argc++] = nd->id;
    argv[argc++] = "--zk-session-timeout";
    argv[argc++] = session;
    argv[argc++] = "--shards";
    argv[argc++] = shards;
    if (!c->no_actlog) {
        argv[argc++] = "--activation-log";
        argv[argc++] = nd->actlog;
    }
    if (c->replicas > 0) {
        snprintf(replicas, sizeof replicas, "%d", c->replicas);
        argv[argc++] = "--replicas";
        argv[argc++] = replicas;
    }
    if (c->load != NULL) {
        argv[argc++] = "--load";
        argv[argc++] = c->load;
    }
    for (j = 0; c->args != NULL && c->args[j] != NULL && j < 8; j++)
        argv[argc++] = c->args[j];
    /* A cluster node without credentials must say so. */
    argv[argc++] = "--insecure";
    argv[argc] = NULL;
    nd->pid = spawn(argv, NULL, nd->log, nd->netns);
    if (nd->pid < 0) {
        nd->pid = 0;
        errf(err, errlen, "cannot fork: %s", strerror(errno));
        return -1;
    }
    nd->stopped = 0;
    nd->starts++;
    say(c, "%s started (pid %d) on %s", nd->id, (int)nd->pid, nd->addr);
    event(c, nd->id, "start");
    deadline = chaos_mono_ns() + 30 * 1000000000LL;
    while (chaos_mono_ns() < deadline && !cancelled(c)) {
        int status;
        if (waitpid(nd->pid, &status, WNOHANG) == nd->pid) {
            char how[96];
            errf(err, errlen, "%s exited during its start (%s; see %s)",
                 nd->id, chaos_wait_status(status, how, sizeof how),
                 nd->log);
            nd->pid = 0;
            end_line(c, nd);
            event(c, nd->id, "exit");
            return -1;
        }
        if (ping(nd->addr, 500) == 0)
            return 0;
        chaos_sleep_ms(50);
    }
    errf(err, errlen, "%s did not answer within 30 s (see %s)", nd->id,
         nd->log);
    return -1;
}

static void gone(chaos_cluster *c, chaos_node *nd, const char *what)
{
    nd->pid = 0;
    nd->stopped = 0;
    end_line(c, nd);
    event(c, nd->id, what);
}

int chaos_node_kill(chaos_cluster *c, int i)
{
    chaos_node *nd = &c->nodes[i];

    if (nd->pid <= 0)
        return -1;
    kill(nd->pid, SIGKILL);
    (void)wait_for(nd->pid, 10000, 1);
    say(c, "%s killed (pid %d)", nd->id, (int)nd->pid);
    gone(c, nd, "kill");
    return 0;
}

int chaos_node_sigstop(chaos_cluster *c, int i)
{
    chaos_node *nd = &c->nodes[i];

    if (nd->pid <= 0 || nd->stopped || kill(nd->pid, SIGSTOP) != 0)
        return -1;
    nd->stopped = 1;
    say(c, "%s stopped (SIGSTOP)", nd->id);
    event(c, nd->id, "sigstop");
    return 0;
}

int chaos_node_sigcont(chaos_cluster *c, int i)
{
    chaos_node *nd = &c->nodes[i];

    if (nd->pid <= 0 || !nd->stopped || kill(nd->pid, SIGCONT) != 0)
        return -1;
    nd->stopped = 0;
    say(c, "%s continued (SIGCONT)", nd->id);
    event(c, nd->id, "sigcont");
    return 0;
}

int chaos_node_reap(chaos_cluster *c, int i)
{
    chaos_node *nd = &c->nodes[i];
    int status;
    char how[96];

    if (nd->pid <= 0)
        return 1;
    if (waitpid(nd->pid, &status, WNOHANG) != nd->pid)
        return 0;
    say(c, "%s exited (%s)", nd->id,
        chaos_wait_status(status, how, sizeof how));
    gone(c, nd, "exit");
    return 1;
}

int chaos_node_wait_exit(chaos_cluster *c, int i, int ms)
{
    int64_t deadline = chaos_mono_ns() + (int64_t)ms * 1000000;

    for (;;) {
        if (chaos_node_reap(c, i))
            return 1;
        if (chaos_mono_ns() > deadline)
            return 0;
        chaos_sleep_ms(20);
    }
}

int chaos_node_up(const chaos_cluster *c, int i)
{
    return c->nodes[i].pid > 0 && !c->nodes[i].stopped;
}

void chaos_cluster_free(chaos_cluster *c)
{
    int i;

    for (i = 0; i < c->nnodes; i++) {
        chaos_node *nd = &c->nodes[i];
        if (nd->pid > 0) {
            if (nd->stopped)
                kill(nd->pid, SIGCONT);
            chaos_node_kill(c, i);
        }
        free(nd->data);
        free(nd->log);
        free(nd->actlog);
        nd->data = nd->log = nd->actlog = NULL;
    }
    chaos_zk_stop(c);
    free(c->zk_dir);
    c->zk_dir = NULL;
}

/* ----------------------------------------------------------------- INFO */

/* Asks node i a question of frame kind (INFO or STAT) with body. */
static int ask(const chaos_cluster *c, int i, int kind, const char *body,
               size_t n, int timeout_ms, char **out)
{
    keel_client *k;
    size_t len = 0;
    int rc;

    *out = NULL;
    rc = keel_client_connect(c->nodes[i].addr, timeout_ms, &k);
    if (rc == 0) {
        keel_client_set_max_frame(k, (size_t)64 << 20);
        rc = keel_client_call(k, kind, NULL, NULL, 0, body, n, out, &len);
        keel_client_close(k);
    }
    if (rc != 0) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

int chaos_node_info(const chaos_cluster *c, int i, const char *words,
                    int timeout_ms, char **out)
{
    size_t n = strlen(words), j;
    char *body = malloc(n + 1);
    int rc;

    *out = NULL;
    if (body == NULL)
        return KEEL_ENOMEM;
    for (j = 0; j < n; j++)
        body[j] = words[j] == ' ' ? '\0' : words[j];
    rc = ask(c, i, KEEL_FRAME_INFO, body, n, timeout_ms, out);
    free(body);
    return rc;
}

int chaos_node_stats(const chaos_cluster *c, int i, int timeout_ms,
                     char **out)
{
    return ask(c, i, KEEL_FRAME_STAT, NULL, 0, timeout_ms, out);
}

int chaos_line_value(const char *text, const char *key, char *buf,
                     size_t cap)
{
    size_t kl = strlen(key);
    const char *p = text;

    while (p != NULL && *p != '\0') {
        if (strncmp(p, key, kl) == 0 && p[kl] == ' ') {
            size_t n = strcspn(p + kl + 1, "\n");
            if (n >= cap)
                n = cap - 1;
            memcpy(buf, p + kl + 1, n);
            buf[n] = '\0';
            return 0;
        }
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return -1;
}

static int node_index(const chaos_cluster *c, const char *name)
{
    int i;

    for (i = 0; i < c->nnodes; i++)
        if (strcmp(c->nodes[i].id, name) == 0)
            return i;
    return -1;
}

int chaos_cluster_controller(const chaos_cluster *c, int i, char *name,
                             size_t cap)
{
    char *out = NULL;
    int idx = -1;

    name[0] = '\0';
    if (chaos_node_info(c, i, "nodes", 2000, &out) == 0 &&
        chaos_line_value(out, "controller", name, cap) == 0)
        idx = node_index(c, name);
    free(out);
    return idx;
}

/* Checks one node's view: members, controller, map epoch. */
static int view_ok(const chaos_cluster *c, int i, char *epoch, size_t ecap,
                   char *why, size_t cap)
{
    char *out = NULL, ctl[32];
    const char *p;
    int seen[CHAOS_NODES_MAX] = {0}, j, rc;

    rc = chaos_node_info(c, i, "nodes", 2000, &out);
    if (rc != 0) {
        errf(why, cap, "%s does not answer INFO nodes (%s)", c->nodes[i].id,
             keel_strerror(rc));
        return 0;
    }
    if (chaos_line_value(out, "controller", ctl, sizeof ctl) != 0 ||
        strcmp(ctl, "(none)") == 0 ||
        chaos_line_value(out, "map_epoch", epoch, ecap) != 0) {
        errf(why, cap, "%s sees no controller or map", c->nodes[i].id);
        free(out);
        return 0;
    }
    for (p = out; p != NULL && *p != '\0';) {
        if (strncmp(p, "node ", 5) == 0) {
            char name[32];
            size_t n = strcspn(p + 5, " \n");
            if (n < sizeof name) {
                memcpy(name, p + 5, n);
                name[n] = '\0';
                j = node_index(c, name);
                if (j < 0 || c->nodes[j].pid <= 0) {
                    errf(why, cap, "%s lists %s as a member", c->nodes[i].id,
                         name);
                    free(out);
                    return 0;
                }
                seen[j] = 1;
            }
        }
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    free(out);
    for (j = 0; j < c->nnodes; j++)
        if (c->nodes[j].pid > 0 && !seen[j]) {
            errf(why, cap, "%s does not list %s yet", c->nodes[i].id,
                 c->nodes[j].id);
            return 0;
        }
    return 1;
}

static int units_ok(const chaos_cluster *c, int i, char *why, size_t cap)
{
    char *out = NULL;
    const char *p;
    int rc = chaos_node_info(c, i, "shards", 5000, &out);

    if (rc != 0) {
        errf(why, cap, "%s does not answer INFO shards (%s)", c->nodes[i].id,
             keel_strerror(rc));
        return 0;
    }
    for (p = out; p != NULL && *p != '\0';) {
        const char *nl = strchr(p, '\n'), *o;
        size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
        char owner[32];
        int j;

        /* Only unit lines: the answer may start with others (the
         * "insecure" line of nodes run without credentials). */
        if (len > 0 && strncmp(p, "unit ", 5) == 0) {
            o = strstr(p, " owner ");
            if (o == NULL || o > p + len) {
                errf(why, cap, "%s: a unit line without owner", c->nodes[i].id);
                free(out);
                return 0;
            }
            if (memmem(p, len, " target ", 8) != NULL) {
                errf(why, cap, "a unit is still moving (%.*s)", (int)len, p);
                free(out);
                return 0;
            }
            o += 7;
            j = (int)strcspn(o, " \n");
            snprintf(owner, sizeof owner, "%.*s", j, o);
            j = node_index(c, owner);
            if (j < 0 || !chaos_node_up(c, j)) {
                errf(why, cap, "a unit is owned by %s, which is not up",
                     owner);
                free(out);
                return 0;
            }
        }
        p = nl != NULL ? nl + 1 : NULL;
    }
    free(out);
    return 1;
}

int chaos_cluster_settled(const chaos_cluster *c, char *why, size_t cap)
{
    char first[32] = "", epoch[32];
    int i, any = -1;

    if (!chaos_zk_all_up(c)) {
        errf(why, cap, "a ZooKeeper server is down, stopped or cut off");
        return 0;
    }
    for (i = 0; i < c->nnodes; i++) {
        if (c->nodes[i].pid <= 0)
            continue;
        if (c->nodes[i].stopped) {
            errf(why, cap, "%s is stopped", c->nodes[i].id);
            return 0;
        }
        if (!view_ok(c, i, epoch, sizeof epoch, why, cap))
            return 0;
        if (any < 0) {
            any = i;
            snprintf(first, sizeof first, "%s", epoch);
        } else if (strcmp(first, epoch) != 0) {
            errf(why, cap, "map epochs differ (%s: %s, %s: %s)",
                 c->nodes[any].id, first, c->nodes[i].id, epoch);
            return 0;
        }
    }
    if (any < 0) {
        errf(why, cap, "no node runs");
        return 0;
    }
    return units_ok(c, any, why, cap);
}
