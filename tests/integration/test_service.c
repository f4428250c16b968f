/* keeld as a service: options from a --config file, the command line over
 * them, bad files refused before anything starts, --check-config, and the
 * service manager's notifications (READY=1 once the node answers,
 * WATCHDOG=1 pings, STOPPING=1 on SIGTERM) received on a datagram socket
 * of the test's own, as systemd would receive them. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "certs.h"
#include "proc.h"
#include "testutil.h"
#include "zk.h"

static char *dir;
static pid_t child = -1;
static int nfd = -1;

static void setup(void)
{
    dir = tu_tmpdir("service");
    child = -1;
    nfd = -1;
}

static void teardown(void)
{
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    }
    if (nfd >= 0)
        close(nfd);
    tu_rmrf(dir);
    free(dir);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* dir/name (malloc'd). */
static char *path_of(const char *name)
{
    char *p;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        abort();
    return p;
}

/* Writes text to dir/name; returns the path (malloc'd). */
static char *write_file(const char *name, const char *fmt, ...)
{
    char *p = path_of(name);
    FILE *f = fopen(p, "w");
    va_list ap;

    ck_assert_ptr_nonnull(f);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
    return p;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Starts keeld with args (after the program name; NULL-terminated), its
 * output into log, and waits (at most 20 s) for its "ready on port" line.
 * The wire port, or -1 when it exited or never said it. */
static int start_keeld(const char *const *args, const char *log)
{
    const char *argv[32];
    char *bin = tu_bin("keeld");
    int argc = 0;
    double deadline;

    argv[argc++] = bin;
    while (*args != NULL && argc < 31)
        argv[argc++] = *args++;
    argv[argc] = NULL;
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    free(bin);
    deadline = now_s() + 20;
    while (now_s() < deadline) {
        char *text = tu_read_file(log);
        const char *p = text ? strstr(text, "keeld: ready on port ") : NULL;
        int port = p ? atoi(p + strlen("keeld: ready on port ")) : 0, st;
        free(text);
        if (port > 0)
            return port;
        if (waitpid(child, &st, WNOHANG) == child) {
            child = -1;
            return -1;
        }
        usleep(20000);
    }
    return -1;
}

/* SIGTERM to the child, and its exit code (at most 30 s; -1 otherwise). */
static int stop_keeld(void)
{
    double deadline = now_s() + 30;
    int st;

    kill(child, SIGTERM);
    while (now_s() < deadline) {
        if (waitpid(child, &st, WNOHANG) == child) {
            child = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(10000);
    }
    return -1;
}

static int keel_ok(int port, const char *want, ...)
{
    char addr[32], *out = NULL, *err = NULL;
    const char *argv[12];
    char *bin = tu_bin("keel");
    const char *a;
    va_list ap;
    int argc = 0, rc;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    argv[argc++] = bin;
    argv[argc++] = "-a";
    argv[argc++] = addr;
    va_start(ap, want);
    while ((a = va_arg(ap, const char *)) != NULL && argc < 11)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    rc = tu_run(argv, &out, &err);
    rc = rc == 0 && out != NULL && strcmp(out, want) == 0;
    if (!rc)
        fprintf(stderr, "keel %s: got '%s' / '%s'\n", argv[3],
                out ? out : "", err ? err : "");
    free(out);
    free(err);
    free(bin);
    return rc;
}

/* Runs keeld with args to its end (at most 10 s); its exit code, and its
 * stdout and stderr (malloc'd). */
static int run_keeld(const char *const *args, char **out, char **err)
{
    const char *argv[32];
    char *bin = tu_bin("keeld");
    int argc = 0, rc;

    argv[argc++] = bin;
    while (*args != NULL && argc < 31)
        argv[argc++] = *args++;
    argv[argc] = NULL;
    rc = tu_run_for(argv, 10, out, err);
    free(bin);
    return rc;
}

/* The options that start a node come from the file alone: its data
 * directory, listen address and shard count. */
START_TEST(config_file_applied)
{
    char *data = path_of("data"), *log = path_of("keeld.log"), *text;
    char *conf = write_file("keeld.conf",
                            "# a node for the test\n"
                            "data = %s\n"
                            "\n"
                            "[keeld]\n"
                            "listen = 127.0.0.1:0   ; any free port\n"
                            "shards = 8\n"
                            "durability = none\n"
                            "insecure = no\n",
                            data);
    const char *args[] = {"--config", conf, NULL};
    int port = start_keeld(args, log);

    ck_assert_int_gt(port, 0);
    ck_assert(keel_ok(port, "1\n", "call", "counter", "c", "incr", NULL));
    ck_assert(keel_ok(port, "2\n", "call", "counter", "c", "incr", NULL));
    ck_assert(exists(data));
    /* Logged when the loop starts: it has, since a call was served. */
    text = tu_read_file(log);
    ck_assert_msg(strstr(text, "8 shards, durability none") != NULL, "%s",
                  text);
    free(text);
    ck_assert_int_eq(stop_keeld(), 0);
    free(conf);
    free(data);
    free(log);
}
END_TEST

/* An option on the command line overrides the file's, before or after
 * --config; the file's other options still apply. */
START_TEST(command_line_overrides_file)
{
    char *fdata = path_of("fdata"), *cdata = path_of("cdata");
    char *log = path_of("keeld.log"), *text;
    char *conf = write_file("keeld.conf",
                            "data = %s\nlisten = 127.0.0.1:0\nshards = 8\n"
                            "durability = none\n",
                            fdata);
    const char *args[] = {"--data", cdata, "--config", conf, "--shards",
                          "16", NULL};
    int port = start_keeld(args, log);

    ck_assert_int_gt(port, 0);
    ck_assert(keel_ok(port, "1\n", "call", "counter", "c", "incr", NULL));
    text = tu_read_file(log);
    ck_assert_msg(strstr(text, "16 shards, durability none") != NULL, "%s",
                  text);
    free(text);
    ck_assert(exists(cdata));
    ck_assert(!exists(fdata));
    ck_assert_int_eq(stop_keeld(), 0);
    free(conf);
    free(fdata);
    free(cdata);
    free(log);
}
END_TEST

/* A file with one bad line is refused as a whole, naming the file, the
 * line and the key, before anything starts: no data directory is made. */
START_TEST(bad_config_refused)
{
    static const struct {
        const char *text; /* after a first line 'data = ...' */
        int line;
        const char *why;
    } bad[] = {
        {"listen = 127.0.0.1:99999\n", 2, "listen takes HOST:PORT"},
        {"shards = 8\nnosuch = 1\n", 3, "unknown key 'nosuch'"},
        {"shards = 0\n", 2, "shards takes 1..65536"},
        {"durability = sometimes\n", 2, "durability is fsync or none"},
        {"insecure = maybe\n", 2, "insecure is yes or no, not 'maybe'"},
        {"data = /elsewhere\n", 2, "key 'data' is set twice (first on line 1)"},
        {"\nlisten\n", 3, "'listen' is not a 'name = value' line"},
        {"listen =\n", 2, "key 'listen' has no value"},
        {"[other]\nshards = 8\n", 3, "key 'shards' is in section [other]"},
        {"config = /x\n", 2, "key 'config' is a command-line option only"},
        {"cluster = a/b\n", 2, "cluster takes a name of 1 to 64"},
        {"log-format = xml\n", 2, "log-format is text or json, not 'xml'"},
        {"load = :greeting\n", 2,
         "load takes PATH.so[:ARGS], not ':greeting'"},
        {"log-file = /a\nlog-file = /b\n", 3,
         "key 'log-file' is set twice (first on line 2)"},
        /* 'name: value' is not the file's format, though inih takes it;
         * nor is a line without '=' whose value holds a ':'. */
        {"data: /x\n", 2, "'data: /x' is not a 'name = value' line"},
        {"listen: 127.0.0.1:7450\n", 2,
         "'listen: 127.0.0.1:7450' is not a 'name = value' line"},
        {"listen 127.0.0.1:1\n", 2,
         "'listen 127.0.0.1:1' is not a 'name = value' line"},
        /* Another section is refused with no key after it too. */
        {"shards = 8\n[other]\n", 3,
         "section [other]: keeld reads keys before any section or under "
         "[keeld]"},
        {"[other]\n[keeld]\nshards = 8\n", 2,
         "section [other]: keeld reads keys before any section or under "
         "[keeld]"},
        {"log-file = \"/a/b.log\"\n", 2,
         "key 'log-file' has its value in quotes: values take no quotes; "
         "write 'log-file = /a/b.log'"},
        {"log-file = '/a/b.log\n", 2,
         "key 'log-file' has its value after a quote: values take no "
         "quotes; write 'log-file = /a/b.log'"},
    };
    char *data = path_of("data"), *out = NULL, *err = NULL, want[512];
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *conf = write_file("bad.conf", "data = %s\n%s", data,
                                bad[i].text);
        const char *args[] = {"--config", conf, "--listen", "127.0.0.1:0",
                              NULL};
        int rc = run_keeld(args, &out, &err);
        snprintf(want, sizeof want, "keeld: %s:%d: %s", conf, bad[i].line,
                 bad[i].why);
        ck_assert_msg(rc == 2, "case %zu: exit %d: %s", i, rc, err);
        ck_assert_msg(strstr(err, want) != NULL, "case %zu: no '%s' in: %s",
                      i, want, err);
        ck_assert_msg(!exists(data), "case %zu: keeld started", i);
        free(out);
        free(err);
        free(conf);
    }
    {
        char *missing = path_of("missing.conf");
        const char *args[] = {"--config", missing, NULL};
        int rc = run_keeld(args, &out, &err);
        snprintf(want, sizeof want, "keeld: --config %s: cannot open: No "
                 "such file or directory", missing);
        ck_assert_msg(rc == 2 && strstr(err, want) != NULL, "exit %d: %s",
                      rc, err);
        free(out);
        free(err);
        free(missing);
    }
    free(data);
}
END_TEST

/* --check-config says "configuration ok" for what would start, and
 * starts nothing; for what would not, it lists every error, those the
 * node would find only when it starts (unreadable files) too. */
START_TEST(check_config_cases)
{
    char *data = path_of("data"), *out = NULL, *err = NULL, want[512];
    char *cert = write_file("node.crt", "not checked here\n");
    char *missing = path_of("missing.key");
    char *conf = write_file("keeld.conf",
                            "data = %s\nlisten = 127.0.0.1:7420\n"
                            "http = [::1]:0\nshards = 8\n",
                            data);
    char *conf2 = write_file("tls.conf",
                             "data = %s\n"
                             "tls-cert = %s\n"
                             "tls-key = %s\n"
                             "tls-ca = %s\n"
                             "zk = 127.0.0.1:2181\n",
                             data, cert, missing, cert);
    int rc;

    {
        const char *args[] = {"--config", conf, "--check-config", NULL};
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
        ck_assert_str_eq(out, "configuration ok\n");
        ck_assert(!exists(data));
        free(out);
        free(err);
    }
    {
        /* The command line alone, and its values are checked too. */
        const char *args[] = {"--check-config", "--data", data, "--listen",
                              "127.0.0.1:0", NULL};
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 0 && strcmp(out, "configuration ok\n") == 0,
                      "exit %d: %s", rc, err);
        free(out);
        free(err);
    }
    {
        const char *args[] = {"--check-config", "--data", data, "--listen",
                              "127.0.0.1:0", "--shards", "0", NULL};
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 2 && strstr(err, "--shards takes 1..65536"),
                      "exit %d: %s", rc, err);
        ck_assert(strstr(out, "configuration ok") == NULL);
        free(out);
        free(err);
    }
    {
        /* An unreadable key file (line 3) and a cluster option without a
         * cluster name: both reported in one run. */
        const char *args[] = {"--config", conf2, "--check-config", NULL};
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
        snprintf(want, sizeof want, "keeld: %s:3: tls-key %s: cannot read: "
                 "No such file or directory", conf2, missing);
        ck_assert_msg(strstr(err, want) != NULL, "no '%s' in: %s", want,
                      err);
        ck_assert_msg(strstr(err, "--zk needs --cluster and --node-id"),
                      "%s", err);
        ck_assert_msg(strstr(err, "configuration has 2 errors"), "%s", err);
        ck_assert(strstr(out, "configuration ok") == NULL);
        free(out);
        free(err);
    }
    {
        /* A data directory whose parent is missing. */
        const char *args[] = {"--config", conf, "--data",
                              "/nonexistent-keel/a/b", "--check-config",
                              NULL};
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 2 && strstr(err, "its parent directory "
                                             "/nonexistent-keel/a does not "
                                             "exist"),
                      "exit %d: %s", rc, err);
        free(out);
        free(err);
    }
    {
        /* A refused cluster name is one error, not also a missing one. */
        const char *args[] = {"--check-config", "--data", data, "--zk",
                              "127.0.0.1:2181", "--cluster", "bad name",
                              "--node-id", "n1", "--insecure", NULL};
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 2 && strstr(err, "--cluster takes a name"),
                      "exit %d: %s", rc, err);
        ck_assert_msg(strstr(err, "--zk needs") == NULL &&
                          strstr(err, "configuration has 1 error\n"),
                      "%s", err);
        free(out);
        free(err);
    }
    ck_assert(!exists(data));
    free(conf);
    free(conf2);
    free(cert);
    free(missing);
    free(data);
}
END_TEST

/* A node that would run exposed without credentials (an HTTP face on
 * every address, a cluster node) refuses to start: --check-config says
 * so too, and passes the same options once they carry credentials or
 * --insecure. */
START_TEST(check_config_credentials)
{
    char *data = path_of("data"), *out = NULL, *err = NULL;
    char *tokens = write_file("tokens", "t0ken-for-the-check admin\n");
    int rc;

    ck_assert_int_eq(chmod(tokens, 0600), 0); /* as the start wants it */

    {
        const char *args[] = {"--check-config", "--data", data, "--listen",
                              "127.0.0.1:0", "--http", "0.0.0.0:0", NULL};
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 2 && strstr(err, "its HTTP face listens on "
                                             "0.0.0.0:0, beyond loopback, "
                                             "so it needs credentials"),
                      "exit %d: %s", rc, err);
        ck_assert(strstr(out, "configuration ok") == NULL);
        free(out);
        free(err);
    }
    {
        const char *args[] = {"--check-config", "--data", data,
                              "--listen", "127.0.0.1:0", "--zk",
                              "127.0.0.1:2181", "--cluster", "c",
                              "--node-id", "n1", NULL};
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 2 && strstr(err, "it is a cluster node (--zk), "
                                             "so it needs credentials"),
                      "exit %d: %s", rc, err);
        ck_assert_msg(strstr(err, "configuration has 1 error\n"), "%s",
                      err);
        free(out);
        free(err);
    }
    {
        const char *args[] = {"--check-config", "--data", data,
                              "--listen", "127.0.0.1:0", "--zk",
                              "127.0.0.1:2181", "--cluster", "c",
                              "--node-id", "n1", "--auth-tokens", tokens,
                              NULL};
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
        ck_assert_str_eq(out, "configuration ok\n");
        free(out);
        free(err);
    }
    {
        const char *args[] = {"--check-config", "--data", data, "--listen",
                              "127.0.0.1:0", "--http", "0.0.0.0:0",
                              "--insecure", NULL};
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
        ck_assert_str_eq(out, "configuration ok\n");
        free(out);
        free(err);
    }
    ck_assert(!exists(data));
    free(tokens);
    free(data);
}
END_TEST

/* A quoted value in the file is refused as such, showing the value
 * without its quotes, not taken as written to fail later in words
 * that hide the quotes (its parent directory "/tmp/x does not exist),
 * and the key it was for is not also missing. */
START_TEST(quoted_value_refused)
{
    char *out = NULL, *err = NULL, want[1024];
    char *conf = write_file("quoted.conf", "data = \"%s/cfg/data\"\n", dir);
    const char *args[] = {"--config", conf, "--check-config", NULL};
    int rc = run_keeld(args, &out, &err);

    snprintf(want, sizeof want,
             "keeld: %s:1: key 'data' has its value in quotes: values take "
             "no quotes; write 'data = %s/cfg/data'\n",
             conf, dir);
    ck_assert_msg(rc == 2 && strstr(err, want) != NULL, "exit %d: %s", rc,
                  err);
    ck_assert_msg(strstr(err, "does not exist") == NULL &&
                      strstr(err, "is required") == NULL &&
                      strstr(err, "configuration has 1 error\n") != NULL,
                  "%s", err);
    free(out);
    free(err);
    free(conf);
}
END_TEST

/* Runs keeld with the node options args twice: with --check-config,
 * which must exit 2 naming why, and as a start, which must refuse with
 * the same words (exit 1, a configuration error, not a storage one)
 * before it makes its data directory. */
static void refused_alike(const char *data, const char *const *args,
                          const char *why)
{
    const char *argv[24];
    char *out = NULL, *err = NULL;
    int n = 0, rc;

    while (args[n] != NULL) {
        argv[n] = args[n];
        n++;
    }
    argv[n] = "--check-config";
    argv[n + 1] = NULL;
    rc = run_keeld(argv, &out, &err);
    ck_assert_msg(rc == 2 && strstr(err, why) != NULL &&
                      strstr(out, "configuration ok") == NULL,
                  "--check-config, for '%s': exit %d: %s", why, rc, err);
    free(out);
    free(err);
    argv[n] = NULL;
    rc = run_keeld(argv, &out, &err);
    ck_assert_msg(rc == 1 && strstr(err, why) != NULL &&
                      strstr(err, "cannot start: EINVAL: ") != NULL,
                  "the start, for '%s': exit %d: %s", why, rc, err);
    ck_assert_msg(!exists(data), "the start, for '%s', made %s", why, data);
    free(out);
    free(err);
}

/* --check-config reads the token and TLS files as the start reads them,
 * by the start's own code: what the start refuses in them it reports,
 * in the start's words. A cluster node's certificate must name it. */
START_TEST(check_config_reads_files_as_start)
{
    char *data = path_of("data"), *out = NULL, *err = NULL;
    char *open_toks = write_file("open.tokens", "t0ken-for-the-check admin\n");
    char *short_toks = write_file("short.tokens", "short admin\n");
    char *ok_toks = write_file("ok.tokens", "t0ken-for-the-check admin\n");
    char ca[512], n2[512], n2k[512], n3[512], n3k[512], al[512], alk[512];
    char crl[512];
    int rc;

    if (!tu_certs_available()) {
        fprintf(stderr, "check_config_reads_files_as_start: skipped: no "
                        "openssl command\n");
        goto done;
    }
    ck_assert_int_eq(chmod(open_toks, 0644), 0);
    ck_assert_int_eq(chmod(short_toks, 0600), 0);
    ck_assert_int_eq(chmod(ok_toks, 0600), 0);
    ck_assert_int_eq(tu_certs_ca(dir, "ca"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "n2", "node:n2"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "n3", "node:n3"), 0);
    ck_assert_int_eq(tu_certs_issue(dir, "ca", "alice", "client:alice"), 0);
    tu_certs_path(ca, sizeof ca, dir, "ca", "pem");
    tu_certs_path(n2, sizeof n2, dir, "n2", "pem");
    tu_certs_path(n2k, sizeof n2k, dir, "n2", "key");
    tu_certs_path(n3, sizeof n3, dir, "n3", "pem");
    tu_certs_path(n3k, sizeof n3k, dir, "n3", "key");
    tu_certs_path(al, sizeof al, dir, "alice", "pem");
    tu_certs_path(alk, sizeof alk, dir, "alice", "key");
    tu_certs_path(crl, sizeof crl, dir, "n2", "pem"); /* not a CRL */
    {
        const char *args[] = {"--data", data, "--listen", "127.0.0.1:0",
                              "--auth-tokens", open_toks, NULL};
        refused_alike(data, args, "permissions 0644 are too open");
    }
    {
        const char *args[] = {"--data", data, "--listen", "127.0.0.1:0",
                              "--auth-tokens", short_toks, NULL};
        refused_alike(data, args, "line 1: a token is 16 to 256 characters");
    }
    {
        const char *args[] = {"--data", data, "--listen", "127.0.0.1:0",
                              "--tls-cert", n2, "--tls-key", n3k,
                              "--tls-ca", ca, NULL};
        refused_alike(data, args, "key values mismatch");
    }
    {
        /* A key file as the CA file: it holds no certificate. */
        const char *args[] = {"--data", data, "--listen", "127.0.0.1:0",
                              "--tls-cert", n2, "--tls-key", n2k,
                              "--tls-ca", n2k, NULL};
        refused_alike(data, args, "CA file");
    }
    {
        const char *args[] = {"--data", data, "--listen", "127.0.0.1:0",
                              "--tls-cert", n2, "--tls-key", n2k,
                              "--tls-ca", ca, "--tls-crl", crl, NULL};
        refused_alike(data, args, "no CRL in it");
    }
    {
        /* A cluster node n2 with n3's certificate: the other nodes would
         * refuse every link to it. Refused before ZooKeeper (nobody
         * listens on port 1). */
        const char *args[] = {"--data", data, "--listen", "127.0.0.1:0",
                              "--zk", "127.0.0.1:1", "--cluster", "c",
                              "--node-id", "n2", "--tls-cert", n3,
                              "--tls-key", n3k, "--tls-ca", ca, NULL};
        char why[1024];
        snprintf(why, sizeof why,
                 "certificate %s names node:n3, but this node is n2", n3);
        refused_alike(data, args, why);
    }
    {
        const char *args[] = {"--data", data, "--listen", "127.0.0.1:0",
                              "--zk", "127.0.0.1:1", "--cluster", "c",
                              "--node-id", "n2", "--tls-cert", al,
                              "--tls-key", alk, "--tls-ca", ca, NULL};
        char why[1024];
        snprintf(why, sizeof why,
                 "certificate %s names client:alice, not a node", al);
        refused_alike(data, args, why);
    }
    {
        /* Its own certificate, and good tokens: ok. */
        const char *args[] = {"--check-config", "--data", data, "--listen",
                              "127.0.0.1:0", "--zk", "127.0.0.1:1",
                              "--cluster", "c", "--node-id", "n2",
                              "--tls-cert", n2, "--tls-key", n2k,
                              "--tls-ca", ca, "--auth-tokens", ok_toks,
                              NULL};
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 0 && strcmp(out, "configuration ok\n") == 0,
                      "exit %d: %s", rc, err);
        free(out);
        free(err);
    }
    {
        /* A standalone node has no node id to match: any node name. */
        const char *args[] = {"--check-config", "--data", data, "--listen",
                              "127.0.0.1:0", "--tls-cert", n3, "--tls-key",
                              n3k, "--tls-ca", ca, NULL};
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 0 && strcmp(out, "configuration ok\n") == 0,
                      "exit %d: %s", rc, err);
        free(out);
        free(err);
    }
    ck_assert(!exists(data));
done:
    free(open_toks);
    free(short_toks);
    free(ok_toks);
    free(data);
}
END_TEST

/* The log options as keys of the file, checked like the rest: a log
 * file whose directory is missing, or that is a directory; a plugin
 * checked by its path, without its :ARGS. Nothing is created. */
START_TEST(check_config_log_and_load)
{
    char *data = path_of("data"), *out = NULL, *err = NULL, want[1024];
    char *plugin = tu_bin("plugin_greeter.so");
    char *logf = path_of("logs/keeld.log"), *missing = path_of("no.so");
    char *conf = write_file("keeld.conf",
                            "data = %s\n"
                            "log-format = json\n"
                            "log-file = %s\n"
                            "load = %s:greeting=hello: there\n"
                            "load = %s:x\n",
                            data, logf, plugin, missing);
    char *ok = write_file("ok.conf",
                          "data = %s\nlog-format = text\n"
                          "log-file = %s/keeld.log\nload = %s:a:b\n",
                          data, dir, plugin);
    int rc;

    {
        const char *args[] = {"--config", conf, "--check-config", NULL};
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
        snprintf(want, sizeof want, "keeld: %s:3: log-file %s: its "
                 "directory %s/logs does not exist", conf, logf, dir);
        ck_assert_msg(strstr(err, want) != NULL, "no '%s' in: %s", want,
                      err);
        snprintf(want, sizeof want, "keeld: %s:5: load %s: cannot read: No "
                 "such file or directory", conf, missing);
        ck_assert_msg(strstr(err, want) != NULL, "no '%s' in: %s", want,
                      err);
        /* The greeter's line, ARGS and all, is not among the errors. */
        ck_assert_msg(strstr(err, "configuration has 2 errors"), "%s", err);
        free(out);
        free(err);
    }
    {
        /* The command line's --log-file overrides the file's and is
         * checked the same way: here a directory. */
        const char *args[] = {"--config", conf, "--log-file", dir, "--load",
                              plugin, "--check-config", NULL};
        rc = run_keeld(args, &out, &err);
        snprintf(want, sizeof want, "keeld: --log-file %s: is a directory, "
                 "not a file", dir);
        ck_assert_msg(rc == 2 && strstr(err, want) != NULL, "exit %d: %s",
                      rc, err);
        ck_assert_msg(strstr(err, "configuration has 1 error"), "%s", err);
        free(out);
        free(err);
    }
    {
        const char *args[] = {"--config", ok, "--check-config", NULL};
        char *created = path_of("keeld.log");
        rc = run_keeld(args, &out, &err);
        ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
        ck_assert_str_eq(out, "configuration ok\n");
        ck_assert(!exists(created));
        free(created);
        free(out);
        free(err);
    }
    ck_assert(!exists(data));
    free(conf);
    free(ok);
    free(logf);
    free(missing);
    free(plugin);
    free(data);
}
END_TEST

/* log-format, log-file and load with ARGS from the file start a node
 * that logs JSON lines to the file (keeld's ready line as text on stderr
 * too), hands ARGS to the plugin, and opens the file again on SIGHUP
 * after it was renamed, as log rotation does. */
START_TEST(log_and_load_from_file)
{
    char *data = path_of("data"), *log = path_of("stderr.log");
    char *logf = path_of("node.log"), *rotated = path_of("node.log.1");
    char *plugin = tu_bin("plugin_greeter.so"), *text, *out = NULL;
    char *conf = write_file("keeld.conf",
                            "data = %s\nlisten = 127.0.0.1:0\n"
                            "log-format = json\nlog-file = %s\n"
                            "load = %s:Hi: there\n",
                            data, logf, plugin);
    const char *args[] = {"--config", conf, NULL};
    char addr[32];
    double deadline;
    int port = start_keeld(args, log), reopened = 0;

    ck_assert_int_gt(port, 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    ck_assert_int_eq(tu_keel(addr, &out, NULL, "call", "greeter", "ann",
                             "hello", NULL),
                     0);
    ck_assert_msg(strncmp(out, "Hi: there", 9) == 0, "%s", out);
    free(out);
    text = tu_read_file(logf);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strncmp(text, "{\"time\":", 8) == 0 &&
                      strstr(text, "\"msg\":\"keeld: ready on port ") !=
                          NULL,
                  "%s", text);
    free(text);
    text = tu_read_file(log);
    ck_assert_msg(strstr(text, "keeld: ready on port ") != NULL &&
                      strstr(text, "{\"time\"") == NULL,
                  "%s", text);
    free(text);

    ck_assert_int_eq(rename(logf, rotated), 0);
    kill(child, SIGHUP);
    deadline = now_s() + 10;
    while (!reopened && now_s() < deadline) {
        text = tu_read_file(logf);
        reopened = text != NULL && strstr(text, "opened again") != NULL;
        free(text);
        if (!reopened)
            usleep(20000);
    }
    ck_assert_msg(reopened, "no new %s after SIGHUP", logf);
    /* Lines after the reopen go to the new file. */
    ck_assert_int_eq(tu_keel(addr, &out, NULL, "call", "counter", "c",
                             "incr", NULL),
                     0);
    free(out);
    ck_assert_int_eq(stop_keeld(), 0);
    text = tu_read_file(logf);
    ck_assert_msg(strstr(text, "\"msg\":\"node stopped\"") != NULL, "%s",
                  text);
    free(text);
    text = tu_read_file(rotated);
    ck_assert_msg(strstr(text, "node stopped") == NULL, "%s", text);
    free(text);
    free(conf);
    free(plugin);
    free(rotated);
    free(logf);
    free(log);
    free(data);
}
END_TEST

/* The example configuration shipped in dist/ passes --check-config (its
 * data directory replaced: /var/lib/keel may not exist here). */
START_TEST(example_config_checks_ok)
{
    char *data = path_of("data"), *out = NULL, *err = NULL;
    const char *args[] = {"--config", KEEL_SOURCE_DIR "/dist/keeld.conf",
                          "--data", data, "--check-config", NULL};
    int rc = run_keeld(args, &out, &err);

    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    ck_assert_str_eq(out, "configuration ok\n");
    free(out);
    free(err);
    free(data);
}
END_TEST

/* dist/keeld.service passes systemd-analyze verify, where that tool is
 * (it is not needed to build or run keel): its programs pointed at the
 * keeld just built, as verify wants them to exist. */
START_TEST(unit_file_verifies)
{
    static const char *const tool = "/usr/bin/systemd-analyze";
    char *unit = path_of("keeld.service"), *text, *out = NULL, *err = NULL;
    char *bin = tu_bin("keeld"), *p;
    FILE *f;
    int rc;

    if (access(tool, X_OK) != 0) {
        fprintf(stderr, "unit_file_verifies: skipped: no %s\n", tool);
        goto done;
    }
    text = tu_read_file(KEEL_SOURCE_DIR "/dist/keeld.service");
    ck_assert_ptr_nonnull(text);
    f = fopen(unit, "w");
    ck_assert_ptr_nonnull(f);
    for (p = text; *p != '\0';) {
        const char *hit = strstr(p, "/usr/bin/keeld");
        if (hit == NULL) {
            fputs(p, f);
            break;
        }
        fwrite(p, 1, (size_t)(hit - p), f);
        fputs(bin, f);
        p = (char *)hit + strlen("/usr/bin/keeld");
    }
    fclose(f);
    free(text);
    {
        const char *argv[] = {tool, "verify", unit, NULL};
        rc = tu_run(argv, &out, &err);
    }
    ck_assert_msg(rc == 0 && (err == NULL || err[0] == '\0'),
                  "exit %d: %s", rc, err ? err : "");
    free(out);
    free(err);
done:
    free(bin);
    free(unit);
}
END_TEST

/* ------------------------------------------------------------ notify */

/* Binds the datagram socket the service manager would listen on. */
static void notify_listen(const char *path)
{
    struct sockaddr_un sa;

    nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(nfd, 0);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    ck_assert_uint_lt(strlen(path), sizeof sa.sun_path);
    strcpy(sa.sun_path, path);
    ck_assert_int_eq(bind(nfd, (struct sockaddr *)&sa, sizeof sa), 0);
}

/* The next datagram into buf (NUL-terminated), waiting at most ms; 0 on
 * a timeout. */
static int notify_recv(char *buf, size_t cap, int ms)
{
    struct pollfd p = {nfd, POLLIN, 0};
    ssize_t n;

    if (poll(&p, 1, ms) <= 0)
        return 0;
    n = recv(nfd, buf, cap - 1, 0);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    return 1;
}

/* Waits (at most secs) for a datagram with the line `want`, the lines
 * before it counted into *seen (which may be NULL) when they are
 * `count`. The datagram that held it is left in buf. */
static int notify_wait(const char *want, double secs, char *buf, size_t cap,
                       const char *count, int *seen)
{
    double deadline = now_s() + secs;
    size_t wl = strlen(want);

    while (now_s() < deadline) {
        const char *p;
        if (!notify_recv(buf, cap, 100))
            continue;
        for (p = buf; *p != '\0';) {
            const char *nl = strchr(p, '\n');
            size_t len = nl ? (size_t)(nl - p) : strlen(p);
            if (len == wl && memcmp(p, want, wl) == 0)
                return 1;
            if (count != NULL && len == strlen(count) &&
                memcmp(p, count, len) == 0 && seen != NULL)
                (*seen)++;
            p += len + (nl != NULL);
        }
    }
    return 0;
}

/* Under a service manager: READY=1 comes once the node answers (and not
 * before: a call made as soon as it arrives is served), with a STATUS=
 * line naming the port; WATCHDOG=1 pings follow at half of WATCHDOG_USEC;
 * SIGTERM brings STOPPING=1 and a clean exit. */
START_TEST(notify_ready_watchdog_stopping)
{
    char *sock = path_of("notify.sock"), *log = path_of("keeld.log");
    char *data = path_of("data"), buf[1024];
    const char *args[] = {"--data", data, "--listen", "127.0.0.1:0",
                          "--shards", "8", NULL};
    const char *st;
    int port, readies = 0;

    notify_listen(sock);
    setenv("NOTIFY_SOCKET", sock, 1);
    setenv("WATCHDOG_USEC", "400000", 1);
    port = start_keeld(args, log);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    ck_assert_int_gt(port, 0);

    ck_assert_msg(notify_wait("READY=1", 20, buf, sizeof buf, "READY=1",
                              &readies),
                  "no READY=1");
    /* The node answers now, at once. */
    ck_assert(keel_ok(port, "1\n", "call", "counter", "p", "incr", NULL));
    ck_assert(keel_ok(port, "1\n", "call", "counter", "c", "incr", NULL));
    st = strstr(buf, "STATUS=serving on port ");
    ck_assert_msg(st != NULL, "%s", buf);
    ck_assert_int_eq(atoi(st + strlen("STATUS=serving on port ")), port);

    /* Pings, and READY=1 only once. */
    ck_assert(notify_wait("WATCHDOG=1", 10, buf, sizeof buf, "READY=1",
                          &readies));
    ck_assert(notify_wait("WATCHDOG=1", 10, buf, sizeof buf, "READY=1",
                          &readies));
    ck_assert(notify_wait("WATCHDOG=1", 10, buf, sizeof buf, "READY=1",
                          &readies));
    ck_assert_int_eq(readies, 0);

    kill(child, SIGTERM);
    ck_assert_msg(notify_wait("STOPPING=1", 20, buf, sizeof buf, NULL, NULL),
                  "no STOPPING=1");
    ck_assert_int_eq(stop_keeld(), 0);
    free(sock);
    free(log);
    free(data);
}
END_TEST

/* Without WATCHDOG_USEC there are no pings; and keeld started without
 * NOTIFY_SOCKET sends nothing anywhere (the socket stays silent). */
START_TEST(notify_without_watchdog_or_socket)
{
    char *sock = path_of("notify.sock"), *log = path_of("keeld.log");
    char *log2 = path_of("keeld2.log"), *data = path_of("data"), buf[1024];
    const char *args[] = {"--data", data, "--listen", "127.0.0.1:0",
                          "--shards", "8", NULL};
    int port, pings = 0;

    notify_listen(sock);
    setenv("NOTIFY_SOCKET", sock, 1);
    unsetenv("WATCHDOG_USEC");
    port = start_keeld(args, log);
    unsetenv("NOTIFY_SOCKET");
    ck_assert_int_gt(port, 0);
    ck_assert(notify_wait("READY=1", 20, buf, sizeof buf, NULL, NULL));
    /* A ping would have come within 1 s with any watchdog; the wait ends
     * on the SIGTERM's STOPPING=1 and counts pings up to it. */
    usleep(1000 * 1000);
    kill(child, SIGTERM);
    ck_assert(notify_wait("STOPPING=1", 20, buf, sizeof buf, "WATCHDOG=1",
                          &pings));
    ck_assert_int_eq(pings, 0);
    ck_assert_int_eq(stop_keeld(), 0);

    /* No NOTIFY_SOCKET: the same start, and nothing arrives (after what
     * the first run sent on its way out). */
    while (notify_recv(buf, sizeof buf, 0))
        ;
    port = start_keeld(args, log2);
    ck_assert_int_gt(port, 0);
    ck_assert(keel_ok(port, "1\n", "call", "counter", "p", "incr", NULL));
    ck_assert_int_eq(stop_keeld(), 0);
    ck_assert_int_eq(notify_recv(buf, sizeof buf, 0), 0);
    free(sock);
    free(log);
    free(log2);
    free(data);
}
END_TEST

/* A cluster node is ready once it has joined: while ZooKeeper cannot be
 * reached it says why in STATUS= and sends no READY=1; with ZooKeeper
 * there READY=1 comes once /readyz says ready and a call is served. */
START_TEST(notify_cluster_ready_after_join)
{
    char *sock = path_of("notify.sock"), *log = path_of("keeld.log");
    char *log2 = path_of("keeld2.log"), *data = path_of("data");
    char *data2 = path_of("data2"), buf[1024];
    char url[80], *out = NULL;
    int port, readies = 0, hport;
    tu_zk zk;

    if (!tu_zk_available()) {
        fprintf(stderr, "notify_cluster_ready_after_join: skipped: no "
                        "ZooKeeper server package\n");
        free(sock);
        free(log);
        free(log2);
        free(data);
        free(data2);
        return;
    }
    notify_listen(sock);
    setenv("NOTIFY_SOCKET", sock, 1);
    {
        const char *args[] = {"--data", data, "--listen", "127.0.0.1:0",
                              "--shards", "8", "--zk", "127.0.0.1:1",
                              "--cluster", "c1", "--node-id", "n1",
                              "--insecure", NULL};
        port = start_keeld(args, log);
        ck_assert_int_gt(port, 0);
        ck_assert_msg(notify_wait("STATUS=not ready: connecting to "
                                  "ZooKeeper",
                                  20, buf, sizeof buf, "READY=1", &readies),
                      "no STATUS while connecting");
        ck_assert_int_eq(readies, 0);
        kill(child, SIGTERM);
        ck_assert(notify_wait("STOPPING=1", 20, buf, sizeof buf, "READY=1",
                              &readies));
        ck_assert_int_eq(readies, 0);
        ck_assert_int_eq(stop_keeld(), 0);
    }

    memset(&zk, 0, sizeof zk);
    ck_assert_int_eq(tu_zk_start(&zk, 1, 200), 0);
    {
        const char *args[] = {"--data", data2, "--listen", "127.0.0.1:0",
                              "--shards", "8", "--zk", zk.hosts,
                              "--cluster", "c1", "--node-id", "n1",
                              "--replicas", "1", "--insecure", "--http",
                              "127.0.0.1:0", NULL};
        const char *p;
        char *text;
        port = start_keeld(args, log2);
        ck_assert_int_gt(port, 0);
        ck_assert_msg(notify_wait("READY=1", 60, buf, sizeof buf, NULL, NULL),
                      "no READY=1");
        text = tu_read_file(log2);
        p = text ? strstr(text, "keeld: http on port ") : NULL;
        ck_assert_ptr_nonnull(p);
        hport = atoi(p + strlen("keeld: http on port "));
        free(text);
        snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", hport);
        {
            const char *argv[] = {"/usr/bin/curl", "-s", "-w",
                                  " %{http_code}", url, NULL};
            ck_assert_int_eq(tu_run(argv, &out, NULL), 0);
            ck_assert_msg(strcmp(out, "ready\n 200") == 0, "%s", out);
            free(out);
        }
        ck_assert(keel_ok(port, "1\n", "call", "counter", "c", "incr",
                          NULL));
        ck_assert_int_eq(stop_keeld(), 0);
    }
    unsetenv("NOTIFY_SOCKET");
    tu_zk_stop(&zk);
    free(sock);
    free(log);
    free(log2);
    free(data);
    free(data2);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("service");
    TCase *tc = tcase_create("config");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, config_file_applied);
    tcase_add_test(tc, command_line_overrides_file);
    tcase_add_test(tc, bad_config_refused);
    tcase_add_test(tc, check_config_cases);
    tcase_add_test(tc, check_config_credentials);
    tcase_add_test(tc, check_config_log_and_load);
    tcase_add_test(tc, check_config_reads_files_as_start);
    tcase_add_test(tc, quoted_value_refused);
    tcase_add_test(tc, log_and_load_from_file);
    tcase_add_test(tc, example_config_checks_ok);
    tcase_add_test(tc, unit_file_verifies);
    suite_add_tcase(s, tc);
    tc = tcase_create("notify");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 150);
    tcase_add_test(tc, notify_ready_watchdog_stopping);
    tcase_add_test(tc, notify_without_watchdog_or_socket);
    tcase_add_test(tc, notify_cluster_ready_after_join);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
