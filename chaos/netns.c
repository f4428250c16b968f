#include "chaos/netns.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CMD_MS 10000 /* one ip or nft command */
#define TABLE "keelchaos"

static const char *find_tool(const char *name)
{
    static const char *const dirs[] = {"/usr/sbin", "/sbin", "/usr/bin",
                                       "/bin"};
    static char found[2][64];
    int slot = strcmp(name, "ip") == 0 ? 0 : 1;
    size_t k;

    for (k = 0; k < sizeof dirs / sizeof *dirs; k++) {
        snprintf(found[slot], sizeof found[slot], "%s/%s", dirs[k], name);
        if (access(found[slot], X_OK) == 0)
            return found[slot];
    }
    return NULL;
}

/* Runs argv (argv[0] a path) with its output going to the log, bounded
 * by CMD_MS. Returns its exit status, or -1. */
static int run(FILE *log, const char *const *argv)
{
    int64_t deadline = chaos_mono_ns() + (int64_t)CMD_MS * 1000000;
    int fd = log != NULL ? fileno(log) : -1, status, k;
    pid_t pid;

    if (log != NULL)
        fflush(log);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(fd >= 0 ? fd : nul, 1);
            dup2(fd >= 0 ? fd : nul, 2);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 || chaos_mono_ns() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            status = -1;
            break;
        }
        chaos_sleep_ms(5);
    }
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (log != NULL) {
            fprintf(log, "netns: failed (%d):", status);
            for (k = 0; argv[k] != NULL; k++)
                fprintf(log, " %s", argv[k]);
            fputc('\n', log);
            fflush(log);
        }
        return status == -1 ? -1 : (WIFEXITED(status) ? WEXITSTATUS(status)
                                                       : -1);
    }
    return 0;
}

/* ip ARGS... (NULL-terminated). */
static int ip(FILE *log, ...)
{
    const char *argv[24];
    const char *a;
    int n = 0;
    va_list ap;

    argv[n++] = find_tool("ip");
    if (argv[0] == NULL)
        return -1;
    va_start(ap, log);
    while ((a = va_arg(ap, const char *)) != NULL && n < 23)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    return run(log, argv);
}

int chaos_net_check(char *why, size_t cap)
{
    char name[32];

    if (geteuid() != 0) {
        snprintf(why, cap, "not root (network namespaces and nftables "
                           "rules need CAP_NET_ADMIN)");
        return -1;
    }
    if (find_tool("ip") == NULL) {
        snprintf(why, cap, "no ip command (apt-get install iproute2)");
        return -1;
    }
    if (find_tool("nft") == NULL) {
        snprintf(why, cap, "no nft command (apt-get install nftables)");
        return -1;
    }
    snprintf(name, sizeof name, "kc%dprobe", (int)getpid());
    if (ip(NULL, "netns", "add", name, NULL) != 0) {
        snprintf(why, cap, "cannot create a network namespace (ip netns "
                           "add failed: no rights in this container?)");
        return -1;
    }
    ip(NULL, "netns", "del", name, NULL);
    return 0;
}

/* Removes what a harness that died left: namespaces and bridges named
 * kc<pid>... whose pid runs no more. */
static void sweep_stale(FILE *log)
{
    DIR *d = opendir("/var/run/netns");
    struct dirent *e;

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid;
        if (strncmp(e->d_name, "kc", 2) != 0)
            continue;
        pid = strtol(e->d_name + 2, &end, 10);
        if (end == e->d_name + 2 || *end != '-' || pid <= 0 ||
            pid == (long)getpid() || kill((pid_t)pid, 0) == 0 ||
            errno != ESRCH)
            continue;
        if (ip(log, "netns", "del", e->d_name, NULL) == 0) {
            char br[32];
            snprintf(br, sizeof br, "kc%ldbr", pid);
            ip(NULL, "link", "del", br, NULL);
        }
    }
    closedir(d);
}

int chaos_net_setup(chaos_net *net, const char *dir, int n, FILE *log,
                    char *err, size_t errlen)
{
    int pid = (int)getpid(), a = 200 + pid % 50, b = (pid / 50) % 250, i;
    char cidr[24];

    memset(net, 0, sizeof *net);
    net->log = log;
    net->n = n;
    if (asprintf(&net->dir, "%s/net", dir) < 0) {
        net->dir = NULL;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    mkdir(net->dir, 0755);
    sweep_stale(log);
    snprintf(net->tag, sizeof net->tag, "kc%d", pid);
    snprintf(net->bridge, sizeof net->bridge, "kc%dbr", pid);
    snprintf(net->host_addr, sizeof net->host_addr, "10.%d.%d.1", a & 255,
             b & 255);
    for (i = 0; i < CHAOS_ZK_MAX; i++)
        snprintf(net->zk_addr[i], sizeof net->zk_addr[i], "10.%d.%d.%d",
                 a & 255, b & 255, 2 + i);
    if (ip(log, "link", "add", net->bridge, "type", "bridge", NULL) != 0) {
        snprintf(err, errlen, "cannot create bridge %s", net->bridge);
        goto fail;
    }
    net->made_bridge = 1;
    snprintf(cidr, sizeof cidr, "%s/24", net->host_addr);
    if (ip(log, "addr", "add", cidr, "dev", net->bridge, NULL) != 0)
        goto cmd;
    for (i = 0; i < CHAOS_ZK_MAX; i++) {
        snprintf(cidr, sizeof cidr, "%s/24", net->zk_addr[i]);
        if (ip(log, "addr", "add", cidr, "dev", net->bridge, NULL) != 0)
            goto cmd;
    }
    if (ip(log, "link", "set", net->bridge, "up", NULL) != 0)
        goto cmd;
    for (i = 0; i < n; i++) {
        char host[16], peer[16];
        snprintf(net->ns[i], sizeof net->ns[i], "kc%d-n%d", pid, i);
        snprintf(net->addr[i], sizeof net->addr[i], "10.%d.%d.%d", a & 255,
                 b & 255, (10 + i) & 255);
        snprintf(host, sizeof host, "kc%dv%d", pid, i);
        snprintf(peer, sizeof peer, "kc%dp%d", pid, i);
        snprintf(cidr, sizeof cidr, "%s/24", net->addr[i]);
        if (ip(log, "netns", "add", net->ns[i], NULL) != 0)
            goto cmd;
        net->made[i] = 1;
        if (ip(log, "link", "add", host, "type", "veth", "peer", "name", peer,
               NULL) != 0 ||
            ip(log, "link", "set", host, "master", net->bridge, NULL) != 0 ||
            ip(log, "link", "set", host, "up", NULL) != 0 ||
            ip(log, "link", "set", peer, "netns", net->ns[i], NULL) != 0 ||
            ip(log, "-n", net->ns[i], "link", "set", peer, "name", "eth0",
               NULL) != 0 ||
            ip(log, "-n", net->ns[i], "addr", "add", cidr, "dev", "eth0",
               NULL) != 0 ||
            ip(log, "-n", net->ns[i], "link", "set", "eth0", "up", NULL) != 0 ||
            ip(log, "-n", net->ns[i], "link", "set", "lo", "up", NULL) != 0)
            goto cmd;
    }
    return 0;
cmd:
    snprintf(err, errlen, "an ip command failed (see run.log)");
fail:
    chaos_net_teardown(net);
    return -1;
}

void chaos_net_teardown(chaos_net *net)
{
    int i;

    for (i = 0; i < net->n; i++)
        if (net->made[i]) {
            ip(net->log, "netns", "del", net->ns[i], NULL);
            net->made[i] = 0;
        }
    if (net->made_bridge) {
        ip(net->log, "link", "del", net->bridge, NULL);
        net->made_bridge = 0;
    }
    free(net->dir);
    net->dir = NULL;
}

/* Node i's rules: drop what goes to or comes from addrs. */
static int rules(chaos_net *net, int i, const char *const *addrs, int naddrs)
{
    const char *nsexec[] = {find_tool("ip"), "netns", "exec", net->ns[i],
                            find_tool("nft"), "-f", NULL, NULL};
    const char *del[] = {find_tool("ip"), "netns", "exec", net->ns[i],
                         find_tool("nft"), "delete", "table", "inet", TABLE,
                         NULL};
    char path[512], set[512] = "";
    size_t len = 0;
    FILE *f;
    int k;

    /* There may be none yet: deleting it fails then, which is fine. */
    (void)run(NULL, del);
    if (naddrs == 0)
        return 0;
    for (k = 0; k < naddrs; k++)
        len += (size_t)snprintf(set + len, sizeof set - len, "%s%s",
                                k ? ", " : "", addrs[k]);
    snprintf(path, sizeof path, "%s/n%d.nft", net->dir, i);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f,
            "table inet " TABLE " {\n"
            "  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            "    ip saddr { %s } drop\n"
            "  }\n"
            "  chain output {\n"
            "    type filter hook output priority 0; policy accept;\n"
            "    ip daddr { %s } drop\n"
            "  }\n"
            "}\n",
            set, set);
    if (fclose(f) != 0)
        return -1;
    nsexec[6] = path;
    return run(net->log, nsexec) == 0 ? 0 : -1;
}

int chaos_net_apply(chaos_net *net, const unsigned *cut, const int *zk)
{
    int i, j, rc = 0;

    for (i = 0; i < net->n; i++) {
        const char *addrs[CHAOS_NODES_MAX + CHAOS_ZK_MAX];
        int na = 0, s;
        for (j = 0; j < net->n; j++)
            if (j != i && ((cut[i] >> j) & 1u || (cut[j] >> i) & 1u))
                addrs[na++] = net->addr[j];
        for (s = 0; s < CHAOS_ZK_MAX; s++)
            if ((zk[i] >> s) & 1)
                addrs[na++] = net->zk_addr[s];
        if (rules(net, i, addrs, na) != 0)
            rc = -1;
    }
    return rc;
}

int chaos_net_heal(chaos_net *net)
{
    int i, rc = 0;

    for (i = 0; i < net->n; i++)
        if (rules(net, i, NULL, 0) != 0)
            rc = -1;
    return rc;
}
