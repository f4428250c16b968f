/* Real processes for integration tests: keeld nodes and CLI runs. Every
 * wait here is bounded. */
#ifndef KEEL_TEST_PROC_H
#define KEEL_TEST_PROC_H

#include <stddef.h>
#include <sys/types.h>

typedef struct tu_keeld {
    pid_t pid;
    int port;
    char addr[64];     /* "127.0.0.1:PORT" */
    char *data_dir;    /* owned */
    char *log_path;    /* owned: keeld's stderr */
    long fsize_limit;  /* >0: RLIMIT_FSIZE for the child, in bytes (the
                        * soft limit: prlimit may lift it) */
    const char *child_env; /* "NAME=VALUE" set in the child only, or NULL */
} tu_keeld;

/* Starts keeld on 127.0.0.1 with a kernel-chosen port, data in data_dir,
 * plus extra arguments (NULL-terminated, may be NULL), and waits (at most
 * 20 s) for its "ready" line. A port given as `port` (nonzero) is reused,
 * so a restarted node keeps its address. Returns 0, or -1 with the log
 * printed to stderr. */
int tu_keeld_start(tu_keeld *k, const char *data_dir, int port,
                   const char *const *extra);
/* Sends sig and waits (at most 30 s; then SIGKILL) for the exit. Returns
 * the exit code, 128+signal for a signal death, -1 on error. */
int tu_keeld_stop(tu_keeld *k, int sig);
void tu_keeld_free(tu_keeld *k);
/* The node's log so far (malloc'd). */
char *tu_keeld_log(const tu_keeld *k);
/* The HTTP port the node's log names last ("keeld: http on port N"), or
 * -1 when it names none. */
int tu_keeld_http_port(const tu_keeld *k);
/* Prints the logs of nodes[0..n) that were started, each headed by its
 * index, to stderr: for a failure report that shows what a cluster did. */
void tu_keeld_dump_logs(const tu_keeld *nodes, int n);

/* Runs argv (argv[0] is a path) with a 30 s bound, capturing stdout and
 * stderr (malloc'd, NUL-terminated; either pointer may be NULL). Returns
 * the exit code, 128+signal, or -1. */
int tu_run(const char *const *argv, char **out, char **err);
/* tu_run with a bound of secs seconds instead of 30. */
int tu_run_for(const char *const *argv, int secs, char **out, char **err);

/* Starts argv (argv[0] is a path) in the background, its stdout and
 * stderr appended to the files out_path and err_path. Returns its pid, or
 * -1. */
pid_t tu_spawn(const char *const *argv, const char *out_path,
               const char *err_path);
/* Waits (at most secs seconds; then SIGKILL) for pid's exit. Returns the
 * exit code, 256 + the signal that ended it (unlike tu_run: an exit code
 * 130 and a death by SIGINT differ here), or -1. */
int tu_wait_exit(pid_t pid, int secs);

/* Runs the keel CLI against addr: tu_keel(addr, &out, &err, "call",
 * "counter", "c1", "incr", NULL). */
int tu_keel(const char *addr, char **out, char **err, ...);

/* One figure of `keel stat` from the node at addr, or -1 when the call
 * fails or the output has no such line. */
long tu_keel_stat(const char *addr, const char *name);

/* Reads a whole file (malloc'd, NUL-terminated) or NULL. */
char *tu_read_file(const char *path);

#endif
