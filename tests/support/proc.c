#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

char *tu_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, r;

    if (f == NULL)
        return NULL;
    do {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
            if (buf == NULL)
                abort();
        }
        r = fread(buf + len, 1, cap - len - 1, f);
        len += r;
    } while (r > 0);
    fclose(f);
    buf[len] = '\0';
    return buf;
}

char *tu_keeld_log(const tu_keeld *k)
{
    return tu_read_file(k->log_path);
}

int tu_keeld_http_port(const tu_keeld *k)
{
    static const char tag[] = "keeld: http on port ";
    char *log = tu_keeld_log(k);
    const char *p, *q = NULL;
    int port = -1;

    for (p = log; p != NULL && (p = strstr(p, tag)) != NULL; p++)
        q = p;
    if (q != NULL)
        port = atoi(q + sizeof tag - 1);
    free(log);
    return port;
}

void tu_keeld_dump_logs(const tu_keeld *nodes, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        char *log;
        if (nodes[i].log_path == NULL)
            continue;
        log = tu_keeld_log(&nodes[i]);
        fprintf(stderr, "---- n%d log ----\n%s\n", i, log ? log : "");
        free(log);
    }
}

int tu_keeld_start(tu_keeld *k, const char *data_dir, int port,
                   const char *const *extra)
{
    const char *argv[64];
    char listen[64];
    char *bin = tu_bin("keeld");
    int argc = 0, i;
    double deadline;

    if (k->data_dir == NULL || strcmp(k->data_dir, data_dir) != 0) {
        free(k->data_dir);
        k->data_dir = strdup(data_dir);
    }
    free(k->log_path);
    if (asprintf(&k->log_path, "%s.log", data_dir) < 0)
        abort();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    argv[argc++] = bin;
    argv[argc++] = "--data";
    argv[argc++] = data_dir;
    argv[argc++] = "--listen";
    argv[argc++] = listen;
    for (i = 0; extra != NULL && extra[i] != NULL && argc < 62; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;

    k->pid = fork();
    if (k->pid < 0)
        abort();
    if (k->pid == 0) {
        int fd = open(k->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        /* Nothing else of the test's: a ZooKeeper client's socket, say,
         * opened without close-on-exec by another thread. */
        closefrom(3);
        if (k->child_env != NULL)
            putenv((char *)k->child_env);
        if (k->fsize_limit > 0) {
            /* The soft limit only: a test may lift it again (prlimit)
             * without privileges, giving the node room on its "disk". */
            struct rlimit rl;
            getrlimit(RLIMIT_FSIZE, &rl);
            rl.rlim_cur = (rlim_t)k->fsize_limit;
            if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < rl.rlim_cur)
                rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    free(bin);
    /* Wait for the newest "ready on port N" line of this start. */
    deadline = now_s() + 20;
    while (now_s() < deadline) {
        char *log = tu_keeld_log(k);
        const char *p = NULL, *q = log;
        int status;
        while (q && (q = strstr(q, "keeld: ready on port ")) != NULL)
            p = q++;
        if (p != NULL)
            k->port = atoi(p + strlen("keeld: ready on port "));
        if (waitpid(k->pid, &status, WNOHANG) == k->pid) {
            fprintf(stderr, "keeld exited during start; log:\n%s\n",
                    log ? log : "");
            free(log);
            k->pid = -1;
            return -1;
        }
        free(log);
        if (p != NULL && (port == 0 || k->port == port)) {
            /* The line may come from an earlier run in the same log: make
             * sure this process answers before returning. */
            char *out = NULL;
            snprintf(k->addr, sizeof k->addr, "127.0.0.1:%d", k->port);
            if (tu_keel(k->addr, &out, NULL, "ping", NULL) == 0) {
                free(out);
                return 0;
            }
            free(out);
        }
        usleep(20000);
    }
    fprintf(stderr, "keeld did not become ready in time\n");
    kill(k->pid, SIGKILL);
    waitpid(k->pid, NULL, 0);
    k->pid = -1;
    return -1;
}

/* Reaps pid within secs seconds: 1 with its *status, 0 when it still
 * runs then, -1 when it cannot be waited for. */
static int reap_within(pid_t pid, double secs, int *status)
{
    double deadline = now_s() + secs;

    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 1;
        if (r < 0)
            return -1;
        if (now_s() > deadline)
            return 0;
        usleep(10000);
    }
}

int tu_keeld_stop(tu_keeld *k, int sig)
{
    int status, rc;

    if (k->pid <= 0)
        return -1;
    kill(k->pid, sig);
    rc = reap_within(k->pid, 30, &status);
    if (rc < 0) {
        k->pid = -1;
        return -1;
    }
    if (rc == 0) {
        /* It did not stop in time: the test fails on the exit status; its
         * log says what it was waiting for. */
        char *log = tu_keeld_log(k);
        fprintf(stderr, "keeld (pid %d) did not exit 30 s after signal "
                        "%d; killed. Its log:\n%s\n",
                (int)k->pid, sig, log ? log : "");
        free(log);
        kill(k->pid, SIGKILL);
        waitpid(k->pid, &status, 0);
    }
    k->pid = -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

void tu_keeld_free(tu_keeld *k)
{
    if (k->pid > 0)
        tu_keeld_stop(k, SIGKILL);
    free(k->data_dir);
    free(k->log_path);
    k->data_dir = k->log_path = NULL;
}

static void drain(int fd, char **buf, size_t *len, size_t *cap, int *open_)
{
    char tmp[4096];
    ssize_t r = read(fd, tmp, sizeof tmp);

    if (r <= 0) {
        *open_ = 0;
        return;
    }
    if (*len + (size_t)r + 1 > *cap) {
        *cap = (*len + (size_t)r + 1) * 2;
        *buf = realloc(*buf, *cap);
        if (*buf == NULL)
            abort();
    }
    memcpy(*buf + *len, tmp, (size_t)r);
    *len += (size_t)r;
    (*buf)[*len] = '\0';
}

int tu_run(const char *const *argv, char **out, char **err)
{
    return tu_run_for(argv, 30, out, err);
}

int tu_run_for(const char *const *argv, int secs, char **out, char **err)
{
    int po[2], pe[2], status;
    pid_t pid;
    char *ob = calloc(1, 1), *eb = calloc(1, 1);
    size_t ol = 0, oc = 1, el = 0, ec = 1;
    int oo = 1, eo = 1;
    double deadline = now_s() + secs;

    /* Close-on-exec: other threads of a test fork keeld while this runs,
     * and a keeld holding a write end would keep the read below from its
     * end of file until the deadline. The child's dup2 clears the flag on
     * its 1 and 2. */
    if (pipe2(po, O_CLOEXEC) != 0 || pipe2(pe, O_CLOEXEC) != 0)
        abort();
    pid = fork();
    if (pid < 0)
        abort();
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        close(po[1]);
        close(pe[1]);
        closefrom(3);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    while ((oo || eo) && now_s() < deadline) {
        struct pollfd p[2] = {{oo ? po[0] : -1, POLLIN, 0},
                              {eo ? pe[0] : -1, POLLIN, 0}};
        if (poll(p, 2, 200) < 0 && errno != EINTR)
            break;
        if (p[0].revents)
            drain(po[0], &ob, &ol, &oc, &oo);
        if (p[1].revents)
            drain(pe[0], &eb, &el, &ec, &eo);
    }
    close(po[0]);
    close(pe[0]);
    if (oo || eo)
        kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    if (out)
        *out = ob;
    else
        free(ob);
    if (err)
        *err = eb;
    else
        free(eb);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

int tu_keel(const char *addr, char **out, char **err, ...)
{
    const char *argv[64];
    char *bin = tu_bin("keel");
    va_list ap;
    int argc = 0, rc;
    const char *a;

    argv[argc++] = bin;
    argv[argc++] = "-a";
    argv[argc++] = addr;
    va_start(ap, err);
    while ((a = va_arg(ap, const char *)) != NULL && argc < 63)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    rc = tu_run(argv, out, err);
    free(bin);
    return rc;
}

long tu_keel_stat(const char *addr, const char *name)
{
    char *out = NULL, key[64];
    const char *p;
    long v = -1;

    snprintf(key, sizeof key, "\n%s ", name);
    if (tu_keel(addr, &out, NULL, "stat", NULL) == 0 && out != NULL) {
        /* The first line has no line end before it. */
        if (strncmp(out, key + 1, strlen(key + 1)) == 0)
            v = strtol(out + strlen(key + 1), NULL, 10);
        else if ((p = strstr(out, key)) != NULL)
            v = strtol(p + strlen(key), NULL, 10);
    }
    free(out);
    return v;
}

pid_t tu_spawn(const char *const *argv, const char *out_path,
               const char *err_path)
{
    pid_t pid = fork();
    int fo, fe;

    if (pid != 0)
        return pid;
    fo = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    fe = open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fo < 0 || fe < 0)
        _exit(127);
    dup2(fo, 1);
    dup2(fe, 2);
    closefrom(3);
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

int tu_wait_exit(pid_t pid, int secs)
{
    int status, rc = reap_within(pid, secs, &status);

    if (rc < 0)
        return -1;
    if (rc == 0) {
        kill(pid, SIGKILL);
        if (waitpid(pid, &status, 0) != pid)
            return -1;
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 256 + WTERMSIG(status) : -1;
}
