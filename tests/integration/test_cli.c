/* keeld driven by the keel CLI, as a user would: built-in types, errors,
 * statistics, the example plugin, clean shutdown and restart. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel.h"
#include "proc.h"
#include "runtime/proto.h"
#include "testutil.h"

static char *dir, *data;
static tu_keeld node;

static void setup(void)
{
    dir = tu_tmpdir("cli");
    if (asprintf(&data, "%s/data", dir) < 0)
        abort();
    memset(&node, 0, sizeof node);
}

static void teardown(void)
{
    tu_keeld_free(&node);
    tu_rmrf(dir);
    free(dir);
    free(data);
}

/* A node's hello, version 1 (docs/protocol.md, "Hello"). */
static const char hello[8] = {0x4b, 0x45, 0x45, 0x4c, 0x01, 0x00, 0x0d, 0x0a};

/* In a forked "node": takes the next connection on listener fd and sends
 * it the hello. Exits the child on failure. */
static int accept_hello(int fd)
{
    int c = accept(fd, NULL, NULL);

    if (c < 0 || write(c, hello, sizeof hello) != sizeof hello)
        _exit(1);
    return c;
}

/* A listener on a port of 127.0.0.1 the kernel picks, named in addr. */
static int listen_loopback(char *addr, size_t cap)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t salen = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, 8), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &salen), 0);
    snprintf(addr, cap, "127.0.0.1:%d", ntohs(sa.sin_port));
    return fd;
}

/* Runs the CLI and checks exit code and exact stdout. */
static void cli_expect(const char *want_out, int want_rc, ...)
{
    const char *argv[16];
    char *bin = tu_bin("keel"), *out = NULL, *err = NULL;
    va_list ap;
    int argc = 0, rc;
    const char *a;

    argv[argc++] = bin;
    argv[argc++] = "-a";
    argv[argc++] = node.addr;
    va_start(ap, want_rc);
    while ((a = va_arg(ap, const char *)) != NULL && argc < 15)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    rc = tu_run(argv, &out, &err);
    ck_assert_msg(rc == want_rc, "keel %s %s: exit %d, want %d; stderr: %s",
                  argv[3], argc > 4 ? argv[4] : "", rc, want_rc, err);
    if (want_out != NULL)
        ck_assert_str_eq(out, want_out);
    free(out);
    free(err);
    free(bin);
}

START_TEST(counter_through_cli)
{
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, NULL), 0);
    cli_expect("1\n", 0, "call", "counter", "c1", "incr", NULL);
    cli_expect("2\n", 0, "call", "counter", "c1", "incr", NULL);
    cli_expect("12\n", 0, "call", "counter", "c1", "incr", "10", NULL);
    cli_expect("", 0, "cast", "counter", "c1", "decr", "2", NULL);
    cli_expect("10\n", 0, "call", "counter", "c1", "get", NULL);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, NULL), 0);
    cli_expect("10\n", 0, "call", "counter", "c1", "get", NULL);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

START_TEST(kv_and_register_through_cli)
{
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, NULL), 0);
    cli_expect("OK\n", 0, "call", "kv", "users", "put", "ann", "Ann Lee", NULL);
    cli_expect("OK\n", 0, "call", "kv", "users", "put", "bob", "Bob", NULL);
    cli_expect("Ann Lee\n", 0, "call", "kv", "users", "get", "ann", NULL);
    cli_expect("ann\nbob\n", 0, "call", "kv", "users", "keys", NULL);
    cli_expect("1\n", 0, "call", "kv", "users", "del", "ann", NULL);
    cli_expect("bob\n", 0, "call", "kv", "users", "keys", NULL);
    cli_expect("", 1, "call", "kv", "users", "get", "ann", NULL);

    cli_expect("\n", 0, "call", "register", "r", "read", NULL);
    cli_expect("OK\n", 0, "call", "register", "r", "write", "v1", NULL);
    cli_expect("FAILED\n", 0, "call", "register", "r", "cas", "v0", "v2",
               NULL);
    cli_expect("OK\n", 0, "call", "register", "r", "cas", "v1", "v2", NULL);
    cli_expect("v2\n", 0, "call", "register", "r", "read", NULL);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

/* An option after the command is a word of the message (a message may
 * begin with "-"), but it is most likely a mistake: the value is sent as
 * it is, and keel says so on stderr (before, silently: `put note hello
 * -a ADDR` stored "hello -a ADDR"). */
START_TEST(options_after_the_command_are_warned)
{
    const char *argv[12];
    char *bin = tu_bin("keel"), *out = NULL, *err = NULL;
    int rc;

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, NULL), 0);
    argv[0] = bin;
    argv[1] = "-a";
    argv[2] = node.addr;
    argv[3] = "call";
    argv[4] = "kv";
    argv[5] = "k";
    argv[6] = "put";
    argv[7] = "note";
    argv[8] = "hello";
    argv[9] = "--timeout=5000";
    argv[10] = NULL;
    rc = tu_run(argv, &out, &err);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    ck_assert_msg(err != NULL && strstr(err, "keel: warning: "
                                             "'--timeout=5000' comes after "
                                             "the command, so it is sent "
                                             "as part of the message") !=
                                     NULL,
                  "stderr: '%s'", err != NULL ? err : "(null)");
    free(out);
    free(err);
    cli_expect("hello --timeout=5000\n", 0, "call", "kv", "k", "get", "note",
               NULL);
    /* Words that only begin like one are not options. */
    argv[9] = "-ab";
    rc = tu_run(argv, &out, &err);
    ck_assert_msg(rc == 0 && err != NULL && strstr(err, "warning") == NULL,
                  "exit %d: stderr '%s'", rc, err != NULL ? err : "(null)");
    free(out);
    free(err);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    free(bin);
}
END_TEST

START_TEST(errors_through_cli)
{
    char *out = NULL, *err = NULL;

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, NULL), 0);
    ck_assert_int_eq(tu_keel(node.addr, &out, &err, "call", "nosuch", "x",
                             "hi", NULL),
                     1);
    ck_assert_str_eq(out, "");
    ck_assert_ptr_nonnull(strstr(err, "ENOTYPE"));
    free(out);
    free(err);
    ck_assert_int_eq(tu_keel(node.addr, &out, &err, "call", "counter", "x",
                             "jump", NULL),
                     1);
    ck_assert_ptr_nonnull(strstr(err, "EBADMSG"));
    ck_assert_ptr_nonnull(strstr(err, "jump"));
    free(out);
    free(err);
    /* Nobody listening: a transport error, its own exit code. */
    ck_assert_int_eq(tu_keel("127.0.0.1:1", &out, &err, "call", "counter",
                             "x", "get", NULL),
                     3);
    ck_assert_str_eq(err, "keel: ENOTSENT: request not sent to "
                          "127.0.0.1:1 (connection refused); safe to "
                          "retry\n");
    free(out);
    free(err);
    /* The send options belong to call and cast: elsewhere they would
     * be ignored, so they are refused. */
    ck_assert_int_eq(tu_keel("127.0.0.1:1", &out, &err, "--retry", "3",
                             "ping", NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "--retry applies to call and cast "
                                      "only, not to ping"));
    free(out);
    free(err);
    ck_assert_int_eq(tu_keel("127.0.0.1:1", &out, &err, "--direct", "state",
                             "counter", "x", NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "--direct applies to call and cast"));
    free(out);
    free(err);
    /* --retry tries again when nothing was sent, then gives up alike */
    ck_assert_int_eq(tu_keel("127.0.0.1:1", &out, &err, "--retry", "2",
                             "call", "counter", "x", "incr", NULL),
                     3);
    ck_assert_ptr_nonnull(strstr(err, "keel: ENOTSENT: request not sent"));
    free(out);
    free(err);
    /* A host name that does not resolve (.invalid never does, RFC 6761):
     * a transport error that names the host, not a bare "invalid". */
    ck_assert_int_eq(tu_keel("nosuch.invalid:7420", &out, &err, "ping",
                             NULL),
                     3);
    ck_assert_msg(strstr(err, "keel: EADDR: cannot resolve host "
                              "'nosuch.invalid'") != NULL,
                  "stderr: %s", err);
    free(out);
    free(err);
    {
        /* A node that answers the hello and then nothing: the request
         * left, so the timeout says it may have run, and names the wait.
         * The "node" is a child that says version 1's hello (the 8
         * bytes of docs/protocol.md, "Hello") and reads to the end. */
        char addr[32], want[160];
        int fd = listen_loopback(addr, sizeof addr), st = 0;
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            char buf[512];
            int c;
            alarm(10); /* bounded, whatever the client does */
            c = accept_hello(fd);
            while (read(c, buf, sizeof buf) > 0)
                ;
            _exit(0);
        }
        ck_assert_int_eq(tu_keel(addr, &out, &err, "-t", "300", "call",
                                 "counter", "x", "incr", NULL),
                         3);
        snprintf(want, sizeof want, "keel: ETIMEDOUT: no reply from %s "
                 "within 300 ms (-t); the request was sent and may have "
                 "run\n", addr);
        ck_assert_str_eq(err, want);
        free(out);
        free(err);
        close(fd);
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "the listener child: status %d", st);
    }
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

/* What a newcomer types to learn a command prints help, exit 0, without
 * asking any node (nobody listens on port 1): `keel help` the whole of
 * it; COMMAND --help or -h right after the command that command's entries
 * (and for call and cast their options), and where the rest is. Further
 * on, --help is a word of the message; an unknown command lists the
 * known ones. */
START_TEST(help_words)
{
    /* The words, a line the help must hold, one it must not. */
    static const char *const asks[][5] = {
        {"help", NULL, NULL, "node drain ID", NULL},
        {"help", "shards", NULL, "node drain ID", NULL},
        {"call", "--help", NULL, "-r, --retry N", "node drain ID"},
        {"cast", "-h", NULL, "  call TYPE ID", "  where TYPE ID"},
        {"shards", "--help", NULL, "--digest", "  call TYPE ID"},
        {"where", "--help", "x", "  where TYPE ID", "--retry"},
        {"node", "--help", NULL, "node forget ID", "  stat "},
        {"dead-letters", "-h", NULL, "retry|drop", "  node "},
        {"outbox", "--help", NULL, "  outbox give-up TYPE ID N", "  node "},
        {"stat", "--help", NULL, "  stat ", "  ping "},
    };
    char *out = NULL, *err = NULL;
    size_t i;

    for (i = 0; i < sizeof asks / sizeof asks[0]; i++) {
        int rc = tu_keel("127.0.0.1:1", &out, &err, asks[i][0], asks[i][1],
                         asks[i][2], NULL);
        ck_assert_msg(rc == 0, "keel %s %s: exit %d: %s", asks[i][0],
                      asks[i][1] != NULL ? asks[i][1] : "", rc, err);
        ck_assert_msg(strncmp(out, "usage: keel ", 12) == 0 &&
                          strstr(out, asks[i][3]) != NULL &&
                          (asks[i][4] == NULL ||
                           (strstr(out, asks[i][4]) == NULL &&
                            strstr(out, "keel --help") != NULL)),
                      "keel %s %s: %s", asks[i][0],
                      asks[i][1] != NULL ? asks[i][1] : "", out);
        ck_assert_str_eq(err, "");
        free(out);
        free(err);
    }
    /* Not right after the command: the message's word, sent. */
    ck_assert_int_eq(tu_keel("127.0.0.1:1", &out, &err, "call", "kv", "k",
                             "put", "note", "--help", NULL),
                     3);
    ck_assert_ptr_nonnull(strstr(err, "ENOTSENT"));
    free(out);
    free(err);
    /* A give-up without its number, or with one that is no number:
     * usage errors, nothing sent. */
    ck_assert_int_eq(tu_keel("127.0.0.1:1", &out, &err, "outbox", "give-up",
                             "order", "o-1", NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "outbox takes TYPE ID, or give-up"));
    free(out);
    free(err);
    ck_assert_int_eq(tu_keel("127.0.0.1:1", &out, &err, "outbox", "give-up",
                             "order", "o-1", " -3", NULL),
                     2);
    ck_assert_ptr_nonnull(strstr(err, "is not a positive integer"));
    free(out);
    free(err);
    ck_assert_int_eq(tu_keel("127.0.0.1:1", &out, &err, "stats", NULL), 2);
    ck_assert_msg(strstr(err, "unknown command 'stats' (commands: call, "
                              "cast, stat, ") != NULL,
                  "%s", err);
    free(out);
    free(err);
}
END_TEST

/* A TLS file keel cannot read is a usage error that names it and where
 * it came from, before any connection (nobody listens on port 1), not
 * OpenSSL's error queue and a transport failure. */
START_TEST(tls_files_unreadable)
{
    char *out = NULL, *err = NULL;

    ck_assert_int_eq(tu_keel("127.0.0.1:1", &out, &err, "--tls-ca",
                             "/nonexistent-keel/ca.pem", "ping", NULL),
                     2);
    ck_assert_msg(strstr(err, "keel: EINVAL: cannot read the CA file "
                              "'/nonexistent-keel/ca.pem' (--tls-ca or "
                              "$KEEL_TLS_CA): No such file or directory\n") ==
                      err,
                  "%s", err);
    free(out);
    free(err);
    ck_assert_int_eq(tu_keel("127.0.0.1:1", &out, &err, "--tls-ca",
                             "/dev/null", "--tls-cert", "/nonexistent-keel/c",
                             "--tls-key", "/dev/null", "ping", NULL),
                     2);
    ck_assert_msg(strstr(err, "cannot read the certificate "
                              "'/nonexistent-keel/c' (--tls-cert or "
                              "$KEEL_TLS_CERT)") != NULL,
                  "%s", err);
    free(out);
    free(err);
}
END_TEST

/* A "node" that answers one connection's hello (version 1's 8 bytes,
 * docs/protocol.md "Hello") and then nothing, and refuses every later
 * connection: its listener is closed once that one is accepted. */
static pid_t silent_node_once(char *addr, size_t cap)
{
    int fd = listen_loopback(addr, cap);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char buf[512];
        int c;
        alarm(10); /* bounded, whatever the client does */
        c = accept_hello(fd);
        close(fd);
        while (read(c, buf, sizeof buf) > 0)
            ;
        _exit(0);
    }
    close(fd);
    return pid;
}

/* In a forked "node": reads the client's hello and first frame on c, and
 * answers that frame ERROR code with text. Exits the child on failure. */
static void answer_first(int c, int code, const char *text)
{
    uint8_t buf[4096], out[256];
    size_t have = 0, bl;
    keel_frame f;
    long n = 0;

    /* Its hello (8 bytes), then the frame. */
    while (n == 0 && have < sizeof buf) {
        ssize_t r = read(c, buf + have, sizeof buf - have);
        if (r <= 0)
            _exit(1);
        have += (size_t)r;
        if (have > 8)
            n = keel_frame_parse(buf + 8, have - 8, sizeof buf, &f);
    }
    if (n <= 0)
        _exit(1);
    bl = keel_error_body_encode(out + KEEL_FRAME_HEADER, code, text,
                                strlen(text));
    keel_frame_header(out, KEEL_FRAME_ERROR, f.request_id, bl);
    if (write(c, out, KEEL_FRAME_HEADER + bl) < 0)
        _exit(1);
}

/* A "node" that takes two connections: the first gets the hello and
 * then nothing (a try that times out, its outcome unknown); on the
 * second it answers the first frame with ERROR code. */
static pid_t refusing_node(char *addr, size_t cap, int code)
{
    int fd = listen_loopback(addr, cap);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        uint8_t buf[4096];
        int c2;
        alarm(10); /* bounded, whatever the client does */
        (void)accept_hello(fd); /* the first: the hello, then nothing */
        c2 = accept_hello(fd);
        answer_first(c2, code, "refused");
        while (read(c2, buf, sizeof buf) > 0)
            ;
        _exit(0);
    }
    close(fd);
    return pid;
}

/* A "node" that stops: it answers the first frame of its one connection
 * with ERROR ESTOPPING ("node is stopping") and closes it and its
 * listener, so that the next connect is refused. */
static pid_t stopping_node(char *addr, size_t cap)
{
    int fd = listen_loopback(addr, cap);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int c;
        alarm(10); /* bounded, whatever the client does */
        c = accept_hello(fd);
        close(fd);
        answer_first(c, KEEL_ESTOPPING, "node is stopping");
        close(c);
        _exit(0);
    }
    close(fd);
    return pid;
}

/* The 32 hex digits after "--key " in s, or "" when there are none. */
static void key_after(const char *s, char out[33])
{
    const char *p = strstr(s, "--key ");

    out[0] = '\0';
    if (p != NULL && strspn(p + 6, "0123456789abcdef") >= 32)
        snprintf(out, 33, "%s", p + 6);
}

/* keel --retry: a try that may have run decides what keel says, though
 * a later one did not run (it is not "safe to retry" without the key),
 * and an unknown outcome names keel's own request key, for --key. */
START_TEST(retry_outcome_kept)
{
    char addr[32], want[200], key[33], *out = NULL, *err = NULL;
    pid_t pid;
    int st = 0;

    /* Try 1 is sent and times out; try 2 finds the port closed. */
    pid = silent_node_once(addr, sizeof addr);
    ck_assert_int_eq(tu_keel(addr, &out, &err, "-t", "300", "--retry", "1",
                             "call", "counter", "x", "incr", NULL),
                     3);
    snprintf(want, sizeof want, "keel: ETIMEDOUT: the request to %s may "
             "have run: a try before the last ended ETIMEDOUT, the last did "
             "not run (ENOTSENT: connection refused); send it again with "
             "--key ", addr);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
    ck_assert_ptr_null(strstr(err, "safe to retry"));
    key_after(err, key);
    ck_assert_msg(strlen(key) == 32, "%s", err);
    free(out);
    free(err);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);

    /* Try 2 fails for a reason of the node's (ENOSPC), which its key
     * does not record: try 1 may still run. */
    pid = refusing_node(addr, sizeof addr, KEEL_ENOSPC);
    ck_assert_int_eq(tu_keel(addr, &out, &err, "-t", "300", "--retry", "1",
                             "call", "counter", "x", "incr", NULL),
                     3);
    snprintf(want, sizeof want, "keel: ETIMEDOUT: the request to %s may "
             "have run: a try before the last ended ETIMEDOUT, the last "
             "failed (ENOSPC: refused); send it again with --key ", addr);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
    free(out);
    free(err);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);

    /* Try 1 did not run (ESTOPPING), try 2 found the port closed: the
     * outcome is the last try's, and its text is its own (before: the
     * text of try 1's answer under try 2's code, "ENOTSENT: node is
     * stopping", exit 1 as if the node had answered). */
    pid = stopping_node(addr, sizeof addr);
    ck_assert_int_eq(tu_keel(addr, &out, &err, "-t", "2000", "--retry", "1",
                             "call", "counter", "x", "incr", NULL),
                     3);
    snprintf(want, sizeof want, "keel: ENOTSENT: request not sent to %s "
             "(connection refused); safe to retry\n", addr);
    ck_assert_str_eq(err, want);
    free(out);
    free(err);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);

    /* A refusal that its key records (EBADMSG) is the outcome. */
    pid = refusing_node(addr, sizeof addr, KEEL_EBADMSG);
    ck_assert_int_eq(tu_keel(addr, &out, &err, "-t", "300", "--retry", "1",
                             "call", "counter", "x", "incr", NULL),
                     1);
    ck_assert_str_eq(err, "keel: EBADMSG: refused\n");
    free(out);
    free(err);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);

    /* One try, no reply: the usual line, then the key. */
    pid = silent_node_once(addr, sizeof addr);
    ck_assert_int_eq(tu_keel(addr, &out, &err, "-t", "300", "--retry", "0",
                             "cast", "counter", "x", "incr", NULL),
                     3);
    ck_assert_msg(strstr(err, "keel: ETIMEDOUT: no reply from ") == err &&
                      strstr(err, "\nkeel: its request key is ") != NULL,
                  "%s", err);
    key_after(err, key);
    ck_assert_msg(strlen(key) == 32, "%s", err);
    free(out);
    free(err);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);

    /* A key of the caller's own is not printed back. */
    pid = silent_node_once(addr, sizeof addr);
    ck_assert_int_eq(tu_keel(addr, &out, &err, "-t", "300", "--key",
                             "00112233445566778899aabbccddeeff", "call",
                             "counter", "x", "incr", NULL),
                     3);
    ck_assert_msg(strstr(err, "request key") == NULL, "%s", err);
    free(out);
    free(err);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
}
END_TEST

/* A malformed address is a usage error; one from $KEEL_ADDR says so,
 * and -a overrides it. */
START_TEST(bad_address_named)
{
    char *bin = tu_bin("keel"), *out = NULL, *err = NULL;
    const char *ping[] = {bin, "ping", NULL};
    const char *over[] = {bin, "-a", "127.0.0.1:1", "ping", NULL};

    ck_assert_int_eq(tu_keel("127.0.0.1:99999", &out, &err, "ping", NULL), 2);
    ck_assert_str_eq(err, "keel: EADDR: bad address '127.0.0.1:99999' "
                          "(expected HOST:PORT, a port from 1 to 65535)\n");
    free(out);
    free(err);
    setenv("KEEL_ADDR", "bogus", 1);
    ck_assert_int_eq(tu_run(ping, &out, &err), 2);
    ck_assert_str_eq(err, "keel: EADDR: bad address 'bogus' in $KEEL_ADDR "
                          "(expected HOST:PORT, a port from 1 to 65535)\n");
    free(out);
    free(err);
    ck_assert_int_eq(tu_run(over, &out, &err), 3);
    ck_assert_ptr_nonnull(strstr(err, "ENOTSENT"));
    free(out);
    free(err);
    unsetenv("KEEL_ADDR");
    free(bin);
}
END_TEST

START_TEST(stat_counts)
{
    char *out = NULL;

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, NULL), 0);
    cli_expect("1\n", 0, "call", "counter", "s", "incr", NULL);
    cli_expect("2\n", 0, "call", "counter", "s", "incr", NULL);
    ck_assert_int_eq(tu_keel(node.addr, &out, NULL, "stat", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "resident_actors 1\n"));
    ck_assert_ptr_nonnull(strstr(out, "messages 2\n"));
    ck_assert_ptr_nonnull(strstr(out, "commits 2\n"));
    /* One call at a time: each commit's log record is flushed once,
     * unless the checkpoint interval ran out at that commit: then the
     * checkpoint's two flushes make it durable instead. */
    {
        const char *f = strstr(out, "fsyncs "), *c = strstr(out,
                                                             "checkpoints ");
        ck_assert_ptr_nonnull(f);
        ck_assert_ptr_nonnull(c);
        ck_assert_uint_eq(strtoull(f + 7, NULL, 10),
                          2 + strtoull(c + 12, NULL, 10));
    }
    free(out);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

START_TEST(plugin_types)
{
    char *plugin = tu_bin("plugin_greeter.so");
    const char *args[] = {"--load", plugin, NULL};

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, args), 0);
    cli_expect("hello, ann (1)\n", 0, "call", "greeter", "ann", "hello",
               NULL);
    cli_expect("hello, ann (2)\n", 0, "call", "greeter", "ann", "hello",
               NULL);
    cli_expect("hello, bo (1)\n", 0, "call", "greeter", "bo", "hello", NULL);
    cli_expect("", 1, "call", "greeter", "bo", "bye", NULL);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, args), 0);
    cli_expect("hello, ann (3)\n", 0, "call", "greeter", "ann", "hello",
               NULL);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    free(plugin);
}
END_TEST

START_TEST(keeld_usage)
{
    char *bin = tu_bin("keeld"), *out = NULL, *err = NULL;
    const char *help[] = {bin, "--help", NULL};
    const char *nodata[] = {bin, NULL};
    const char *badload[] = {bin, "--data", data, "--listen", "127.0.0.1:0",
                             "--load", "/nonexistent/x.so", NULL};
    const char *baddur[] = {bin, "--data", data, "--durability", "maybe",
                            NULL};
    const char *baddead[] = {bin, "--data", data, "--zk", "127.0.0.1:1",
                             "--cluster", "c", "--node-id", "n0",
                             "--replica-dead-ms", "0", NULL};
    const char *deadnozk[] = {bin, "--data", data, "--replica-dead-ms",
                              "60000", NULL};
    /* A cluster node on every address must say where others reach it. */
    const char *wildcard[] = {bin, "--data", data, "--zk", "127.0.0.1:1",
                              "--cluster", "c", "--node-id", "n0",
                              "--insecure", "--listen", "0.0.0.0:0", NULL};

    ck_assert_int_eq(tu_run(help, &out, &err), 0);
    ck_assert_ptr_nonnull(strstr(out, "--durability"));
    ck_assert_ptr_nonnull(strstr(out, "--max-resident"));
    ck_assert_ptr_nonnull(strstr(out, "--replica-dead-ms"));
    free(out);
    free(err);
    /* the dead time: 1 ms or more, and only in a cluster */
    ck_assert_int_eq(tu_run(baddead, &out, &err), 2);
    ck_assert_ptr_nonnull(strstr(err, "--replica-dead-ms"));
    free(out);
    free(err);
    ck_assert_int_eq(tu_run(wildcard, &out, &err), 1);
    ck_assert_msg(strstr(err, "needs --advertise HOST:PORT") != NULL, "%s",
                  err);
    free(out);
    free(err);
    ck_assert_int_eq(tu_run(deadnozk, &out, &err), 2);
    ck_assert_ptr_nonnull(strstr(err, "--replica-dead-ms is a cluster "
                                      "option: it needs --zk"));
    free(out);
    free(err);
    ck_assert_int_eq(tu_run(nodata, &out, &err), 2);
    ck_assert_ptr_nonnull(strstr(err, "--data"));
    /* A usage error ends with a pointer to --help, not the option list
     * that would push the error off the screen. */
    ck_assert_msg(strstr(err, "Try 'keeld --help'") != NULL &&
                      strstr(err, "--max-resident") == NULL,
                  "%s", err);
    free(out);
    free(err);
    ck_assert_int_eq(tu_run(badload, &out, &err), 1);
    ck_assert_ptr_nonnull(strstr(err, "x.so"));
    free(out);
    free(err);
    ck_assert_int_eq(tu_run(baddur, &out, &err), 2);
    free(out);
    free(err);
    free(bin);
}
END_TEST

START_TEST(embedding_example_runs)
{
    char *bin = tu_bin("keel-embed-example"), *out = NULL;
    const char *argv[] = {bin, data, NULL};

    ck_assert_int_eq(tu_run(argv, &out, NULL), 0);
    ck_assert_str_eq(out, "home page hits: 1\n");
    free(out);
    ck_assert_int_eq(tu_run(argv, &out, NULL), 0);
    ck_assert_str_eq(out, "home page hits: 2\n");
    free(out);
    free(bin);
}
END_TEST

/* Introspection in standalone mode: the one member owns every unit at
 * shard_epoch 1. */
START_TEST(introspection_standalone)
{
    const char *args[] = {"--shards", "4", NULL};
    char want[512];
    unsigned shard;

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, args), 0);
    snprintf(want, sizeof want,
             "mode standalone\nself local\ncontroller local\nmap_epoch 1\n"
             "node local addr %s incarnation 1 caps (none) role controller "
             "self\n",
             node.addr);
    cli_expect(want, 0, "nodes", NULL);
    shard = keel_shard_of("counter", "c1", 2, 4);
    snprintf(want, sizeof want,
             "type counter\nid c1\ncapability (default)\nshard %u\n"
             "owner local\naddress %s\nepoch 1\nplacement local\n",
             shard, node.addr);
    cli_expect(want, 0, "where", "counter", "c1", NULL);
    /* state: what the owner holds, read by a turn there. */
    cli_expect("OK\n", 0, "call", "register", "st", "write", "hello",
               "world", NULL);
    cli_expect("version 1\nentries 0\nstate 11 bytes\nhello world\n", 0,
               "state", "register", "st", NULL);
    cli_expect("OK\n", 0, "call", "kv", "stkv", "put", "a", "1", NULL);
    cli_expect("version 1\nentries 1\nstate none\n", 0, "state", "kv",
               "stkv", NULL);
    cli_expect("", 1, "state", "register", "never", NULL);
    cli_expect("", 2, "state", "register", NULL);
    /* A counter's state is 8 binary bytes: raw into a pipe, hex on a
     * terminal (script(1) gives keel a pseudo-terminal). */
    cli_expect("3\n", 0, "call", "counter", "bin", "incr", "3", NULL);
    {
        char *bin = tu_bin("keel"), cmd[1024], *out = NULL, *err = NULL;
        const char *argv[] = {"/usr/bin/script", "-qec", cmd, "/dev/null",
                              NULL};
        snprintf(cmd, sizeof cmd, "%s -a %s state counter bin", bin,
                 node.addr);
        ck_assert_int_eq(tu_run(argv, &out, &err), 0);
        ck_assert_msg(out != NULL &&
                          strstr(out, "state 8 bytes\r\n0x0000000000000003") !=
                              NULL,
                      "keel state on a terminal: %s", out ? out : "");
        free(out);
        free(err);
        free(bin);
    }
    cli_expect("unit (default) 0 owner local epoch 1\n"
               "unit (default) 1 owner local epoch 1\n"
               "unit (default) 2 owner local epoch 1\n"
               "unit (default) 3 owner local epoch 1\n",
               0, "shards", NULL);
    /* --node of this node lists its units; a node there is not (a typo)
     * is an error, not an empty list; so is the digest of a capability
     * nothing has. */
    cli_expect("unit (default) 0 owner local epoch 1\n"
               "unit (default) 1 owner local epoch 1\n"
               "unit (default) 2 owner local epoch 1\n"
               "unit (default) 3 owner local epoch 1\n",
               0, "shards", "--node", "local", NULL);
    cli_expect("", 1, "shards", "--node", "elsewhere", NULL);
    cli_expect("", 1, "shards", "--node", "elsewhere", "--digest", NULL);
    cli_expect("", 1, "digest", "nosuchcap", "1", NULL);
    cli_expect("capability (default) nodes local\n", 0, "capabilities",
               NULL);
    cli_expect("", 1, "where", "nosuch", "x", NULL);
    cli_expect("", 2, "where", "counter", NULL);
    cli_expect("", 2, "shards", "n1", NULL);
    cli_expect("", 2, "nodes", "extra", NULL);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

/* Runs `keel node VERB NAME` against the node: exit 1 and stderr holding
 * each of the wanted strings. */
static void admin_refused(const char *verb, const char *want1,
                          const char *want2)
{
    char *out = NULL, *err = NULL;
    int rc = tu_keel(node.addr, &out, &err, "node", verb, "n2", NULL);

    ck_assert_msg(rc == 1, "node %s: exit %d: %s", verb, rc, err);
    ck_assert_msg(strstr(err, want1) != NULL && strstr(err, want2) != NULL,
                  "node %s: stderr '%s', want '%s' and '%s'", verb, err,
                  want1, want2);
    ck_assert_ptr_null(strstr(err, "shard unavailable"));
    free(out);
    free(err);
}

/* drain and forget need a cluster node that has joined: a standalone node
 * says it is not a cluster node (EINVAL); a node whose ZooKeeper cannot be
 * reached says it has not joined (ESESSION). Neither is about a shard. */
START_TEST(admin_needs_a_joined_cluster_node)
{
    char *zdata = NULL;
    const char *zk[] = {"--zk", "127.0.0.1:1", "--cluster", "c1",
                        "--node-id", "n1", "--insecure", NULL};

    /* Nobody listens on port 1: the node stays connecting. */
    if (asprintf(&zdata, "%s/zdata", dir) < 0)
        abort();
    ck_assert_int_eq(tu_keeld_start(&node, zdata, 0, zk), 0);
    admin_refused("drain", "keel: ESESSION: ", "has not joined cluster c1");
    admin_refused("forget", "keel: ESESSION: ", "has not joined cluster c1");
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    tu_keeld_free(&node);
    free(zdata);

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, NULL), 0);
    admin_refused("drain", "keel: EINVAL: ", "not a cluster node");
    admin_refused("forget", "keel: EINVAL: ", "not a cluster node");
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

/* keeld refuses an --advertise that is not HOST:PORT as a usage error,
 * before it starts: peers would only fail to connect to it. */
START_TEST(keeld_advertise_checked)
{
    static const char *const bad[] = {":7420", "localhost", "h:0", "h:99999",
                                      "h:http"};
    char *bin = tu_bin("keeld"), *out = NULL, *err = NULL;
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv[] = {bin, "--data", data, "--listen", "127.0.0.1:0",
                              "--zk", "127.0.0.1:1", "--cluster", "c",
                              "--node-id", "n1", "--advertise", bad[i],
                              NULL};
        int rc = tu_run_for(argv, 5, &out, &err);
        ck_assert_msg(rc == 2, "--advertise '%s': exit %d: %s", bad[i], rc,
                      err);
        ck_assert_msg(strstr(err, "--advertise takes HOST:PORT") != NULL,
                      "%s", err);
        free(out);
        free(err);
    }
    free(bin);
}
END_TEST

/* keeld refuses, as usage errors and with the rule, addresses and names
 * that could never work: a port past 65535 (which the resolver would
 * wrap to another port), an IPv6 wire listener, names with a '/'. */
/* In cluster mode a hold bound longer than the request-key retention is
 * refused at start: a keyed call held that long could start after a copy
 * of it ran and its record was forgotten, and run twice. Given (the
 * hold) or derived (8 s from the session timeout, against a shorter
 * retention), the message names both options and both values. */
START_TEST(keeld_hold_outlasting_retention_refused)
{
    static const char *const bad[][5] = {
        {"--hold-timeout", "700000", NULL, NULL, "700000 ms"},
        {"--request-key-retention-ms", "5000", NULL, NULL, "8000 ms"},
        {"--hold-timeout", "20001", "--request-key-retention-ms", "20000",
         "20001 ms"},
    };
    char *bin = tu_bin("keeld"), *out = NULL, *err = NULL;
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv[] = {bin,          "--data",    data,
                              "--listen",   "127.0.0.1:0", "--zk",
                              "127.0.0.1:1", "--cluster", "c1",
                              "--node-id",  "n1",        "--insecure",
                              bad[i][0],    bad[i][1],   bad[i][2],
                              bad[i][3],    NULL};
        int rc = tu_run_for(argv, 5, &out, &err);

        ck_assert_msg(rc == 1, "%s %s: exit %d: %s", bad[i][0], bad[i][1], rc,
                      err);
        ck_assert_msg(strstr(err, "longer than the request-key retention") &&
                          strstr(err, "--hold-timeout: ") &&
                          strstr(err, "--request-key-retention-ms: ") &&
                          strstr(err, bad[i][4]),
                      "%s %s: %s", bad[i][0], bad[i][1], err);
        free(out);
        free(err);
    }
    free(bin);
}
END_TEST

START_TEST(keeld_addresses_and_names_checked)
{
    static const char *const bad[][3] = {
        {"--listen", "127.0.0.1:99999", "--listen takes HOST:PORT"},
        {"--listen", "127.0.0.1:-1", "--listen takes HOST:PORT"},
        {"--listen", "[::1]:7480", "does not listen on IPv6"},
        {"--http", "127.0.0.1:99999", "--http takes HOST:PORT or [IPV6]"},
        {"--http", "[::1]:70000", "--http takes HOST:PORT or [IPV6]"},
        {"--http", "[zz]:80", "--http takes HOST:PORT or [IPV6]"},
        {"--cluster", "a/b", "--cluster takes a name of 1 to 64"},
        {"--node-id", "n/1", "--node-id takes a name of 1 to 64"},
        {"--node-id", "..", "--node-id takes a name of 1 to 64"},
        {"--data", "/nonexistent-keel/a/b", "its parent directory "
                                            "/nonexistent-keel/a does not "
                                            "exist"},
        /* The ZooKeeper client would take these and never connect (a
         * port past 65535) or fail later, naming no server. */
        {"--zk", "127.0.0.1:99999", "--zk takes HOST:PORT[,HOST:PORT...]"},
        {"--zk", "zkhost", "not 'zkhost' in 'zkhost'"},
        {"--zk", "127.0.0.1:2181,", "not '' in '127.0.0.1:2181,'"},
        {"--zk", "a:2181, b:2181", "not ' b:2181' in"},
        {"--zk", "[::1]:2181", "an IPv6 one without brackets"},
    };
    char *bin = tu_bin("keeld"), *out = NULL, *err = NULL;
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv[] = {bin,       "--data", data, "--listen",
                              "127.0.0.1:0", bad[i][0], bad[i][1], NULL};
        int rc = tu_run_for(argv, 5, &out, &err);
        ck_assert_msg(rc == 2, "%s '%s': exit %d: %s", bad[i][0], bad[i][1],
                      rc, err);
        ck_assert_msg(strstr(err, bad[i][2]) != NULL && strstr(err, bad[i][1]),
                      "%s '%s': %s", bad[i][0], bad[i][1], err);
        /* One error: a refused --zk is not also "a cluster option
         * without --zk". */
        ck_assert_msg(strstr(err, "it needs --zk") == NULL, "%s", err);
        free(out);
        free(err);
    }
    {
        /* What the client reads as a server list passes, IPv6 without
         * brackets too; a host that does not resolve is named at start. */
        const char *ok[] = {bin, "--check-config", "--data", data, "--zk",
                            "::1:2181,zk-1.example:2182", "--cluster", "c",
                            "--node-id", "n1", "--insecure", NULL};
        const char *nores[] = {bin, "--data", data, "--listen",
                               "127.0.0.1:0", "--zk", "nosuch.invalid:2181",
                               "--cluster", "c", "--node-id", "n1",
                               "--insecure", NULL};
        int rc = tu_run_for(ok, 5, &out, &err);
        ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
        free(out);
        free(err);
        rc = tu_run_for(nores, 10, &out, &err);
        ck_assert_msg(rc == 1 && strstr(err, "cannot use the ZooKeeper "
                                             "servers nosuch.invalid:2181") !=
                                     NULL,
                      "exit %d: %s", rc, err);
        free(out);
        free(err);
    }
    free(bin);
}
END_TEST

/* A port already taken: keeld exits 1 and says which of its listeners
 * could not have it (8080, make's default HTTP port, is often taken). */
/* keel-bench names a bad option once, in its own words: an unknown one,
 * and one without its value. */
START_TEST(bench_bad_options)
{
    static const char *const asks[][2] = {
        {"--bogus", "keel-bench: unknown option '--bogus'\n"},
        {"-x", "keel-bench: unknown option '-x'\n"},
        {"--runs", "keel-bench: option '--runs' needs a value\n"},
    };
    char *bin = tu_bin("keel-bench"), *out = NULL, *err = NULL;
    size_t i;

    for (i = 0; i < sizeof asks / sizeof asks[0]; i++) {
        const char *argv[] = {bin, asks[i][0], NULL};
        int rc = tu_run_for(argv, 10, &out, &err);
        ck_assert_msg(rc == 2, "%s: exit %d", asks[i][0], rc);
        ck_assert_msg(strncmp(err, asks[i][1], strlen(asks[i][1])) == 0 &&
                          strstr(err, "unrecognized") == NULL,
                      "%s: %s", asks[i][0], err);
        free(out);
        free(err);
    }
    free(bin);
}
END_TEST

/* A port another process holds: keeld says which and exits 1, having
 * created no data directory (a new one, made with the default shard
 * count, would refuse the --shards of the next start). */
START_TEST(keeld_port_taken)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t salen = sizeof sa;
    char *bin = tu_bin("keeld"), *out = NULL, *err = NULL, addr[32],
         want[256], fresh[600];
    int fd = socket(AF_INET, SOCK_STREAM, 0), rc;
    struct stat st;

    ck_assert_int_ge(fd, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, 1), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &salen), 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    snprintf(fresh, sizeof fresh, "%s/fresh", dir);
    {
        const char *argv[] = {bin, "--data", fresh, "--listen",
                              "127.0.0.1:0", "--http", addr, NULL};
        rc = tu_run_for(argv, 10, &out, &err);
    }
    snprintf(want, sizeof want, "cannot listen for HTTP on %s: Address "
             "already in use (another process holds that port: give another "
             "with --http HOST:PORT", addr);
    ck_assert_msg(rc == 1 && strstr(err, want) != NULL, "exit %d: %s", rc,
                  err);
    ck_assert_msg(stat(fresh, &st) != 0, "%s was created", fresh);
    free(out);
    free(err);
    {
        const char *argv[] = {bin, "--data", fresh, "--listen", addr, NULL};
        rc = tu_run_for(argv, 10, &out, &err);
    }
    snprintf(want, sizeof want, "cannot listen on %s: Address already in "
             "use (another process holds that port: give this node another "
             "with --listen HOST:PORT", addr);
    ck_assert_msg(rc == 1 && strstr(err, want) != NULL, "exit %d: %s", rc,
                  err);
    ck_assert_msg(stat(fresh, &st) != 0, "%s was created", fresh);
    free(out);
    free(err);
    close(fd);
    free(bin);
}
END_TEST

/* A data directory a running keeld holds: a second keeld on it exits 1
 * naming the first's process, with EEXIST (before: EIO, "storage I/O
 * error", and no process named). */
START_TEST(keeld_data_dir_in_use)
{
    char *bin = tu_bin("keeld"), *out = NULL, *err = NULL, want[1024],
         held[600];
    tu_keeld first;
    int rc;

    memset(&first, 0, sizeof first);
    snprintf(held, sizeof held, "%s/held", dir);
    ck_assert_int_eq(tu_keeld_start(&first, held, 0, NULL), 0);
    {
        const char *argv[] = {bin, "--data", held, "--listen", "127.0.0.1:0",
                              NULL};
        rc = tu_run_for(argv, 10, &out, &err);
    }
    snprintf(want, sizeof want, "EEXIST: already exists: %s: data directory "
             "already in use by process %ld (a keeld running on it?)", held,
             (long)first.pid);
    ck_assert_msg(rc == 1 && err != NULL && strstr(err, want) != NULL,
                  "exit %d: %s", rc, err);
    free(out);
    free(err);
    /* The first node still serves. */
    out = NULL;
    ck_assert_int_eq(tu_keel(first.addr, &out, NULL, "ping", NULL), 0);
    free(out);
    ck_assert_int_eq(tu_keeld_stop(&first, SIGTERM), 0);
    tu_keeld_free(&first);
    free(bin);
}
END_TEST

/* A file where the data directory, or one above it, should be: a usage
 * error naming the path and the file, before anything starts (the store
 * would say only "cannot create directory: Not a directory"), once under
 * --check-config too. The file is left as it was. */
START_TEST(data_dir_in_the_way)
{
    char *bin = tu_bin("keeld"), *out = NULL, *err = NULL, *file, *text;
    char paths[3][512], want[3][600];
    FILE *f;
    int i;

    if (asprintf(&file, "%s/plain", dir) < 0)
        abort();
    f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fputs("a file\n", f);
    fclose(f);
    snprintf(paths[0], sizeof paths[0], "%s", file);
    snprintf(want[0], sizeof want[0], "keeld: --data %s: not a directory "
             "(a file of that name is in the way", file);
    snprintf(paths[1], sizeof paths[1], "%s/sub", file);
    snprintf(want[1], sizeof want[1], "keeld: --data %s/sub: its parent %s "
             "is not a directory\n", file, file);
    snprintf(paths[2], sizeof paths[2], "%s/a/b", file);
    snprintf(want[2], sizeof want[2], "keeld: --data %s/a/b: a file stands "
             "in the path of its parent %s/a\n", file, file);
    for (i = 0; i < 3; i++) {
        const char *argv[] = {bin, "--data", paths[i], "--listen",
                              "127.0.0.1:0", NULL};
        const char *check[] = {bin, "--check-config", "--data", paths[i],
                               NULL};
        int rc = tu_run_for(argv, 5, &out, &err);
        ck_assert_msg(rc == 2 && strncmp(err, want[i], strlen(want[i])) == 0,
                      "--data %s: exit %d: %s", paths[i], rc, err);
        free(out);
        free(err);
        rc = tu_run_for(check, 5, &out, &err);
        ck_assert_msg(rc == 2 && strstr(err, want[i]) != NULL &&
                          strstr(err, "configuration has 1 error\n") != NULL,
                      "--check-config --data %s: exit %d: %s", paths[i], rc,
                      err);
        free(out);
        free(err);
    }
    text = tu_read_file(file);
    ck_assert_ptr_nonnull(text);
    ck_assert_str_eq(text, "a file\n");
    free(text);
    free(file);
    free(bin);
}
END_TEST

/* A data directory keeps the shard count it was created with: keeld
 * started on it without --shards takes that count (a count is needed
 * only for a new directory), and a different one is refused. The log
 * names the port bound, not the 0 asked for. */
START_TEST(shard_count_kept_by_the_directory)
{
    const char *one[] = {"--shards", "1", NULL};
    char *bin = tu_bin("keeld"), *out = NULL, *err = NULL, *log, want[96];

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, one), 0);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, NULL), 0);
    cli_expect("1\n", 0, "call", "counter", "c1", "incr", NULL);
    log = tu_keeld_log(&node);
    snprintf(want, sizeof want, "1 shards, durability fsync, listening on "
             "127.0.0.1:%d\n", node.port);
    ck_assert_msg(log != NULL && strstr(log, want) != NULL,
                  "no '%s' in:\n%s", want, log ? log : "");
    free(log);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    {
        const char *argv[] = {bin, "--data", data, "--listen", "127.0.0.1:0",
                              "--shards", "8", NULL};
        int rc = tu_run_for(argv, 10, &out, &err);
        ck_assert_msg(rc != 0 && strstr(err, "created with 1 shards") != NULL,
                      "exit %d: %s", rc, err);
        free(out);
        free(err);
    }
    free(bin);
}
END_TEST

/* A cluster node that cannot reach ZooKeeper says so: /readyz answers
 * 503 with the reason, a call through it fails EUNAVAIL saying that the
 * node has not joined (at its hold bound), and the log says, after 5 s,
 * that ZooKeeper has not answered. */
START_TEST(unreachable_zookeeper_is_said)
{
    const char *zk[] = {"--zk", "127.0.0.1:1", "--cluster", "c1",
                        "--node-id", "n1", "--insecure", "--http",
                        "127.0.0.1:0", "--hold-timeout", "1000", NULL};
    char *zdata = NULL, *log, *out = NULL, *err = NULL, url[80];
    const char *p;
    int port = 0, rc, tries, warned = 0;

    if (asprintf(&zdata, "%s/zdata", dir) < 0)
        abort();
    ck_assert_int_eq(tu_keeld_start(&node, zdata, 0, zk), 0);
    log = tu_keeld_log(&node);
    p = log != NULL ? strstr(log, "keeld: http on port ") : NULL;
    ck_assert_ptr_nonnull(p);
    port = atoi(p + strlen("keeld: http on port "));
    free(log);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", port);
    {
        const char *argv[] = {"/usr/bin/curl", "-s", "-w", " %{http_code}",
                              url, NULL};
        ck_assert_int_eq(tu_run(argv, &out, NULL), 0);
        ck_assert_msg(strstr(out, "not ready: connecting to ZooKeeper") !=
                              NULL &&
                          strstr(out, " 503") != NULL,
                      "%s", out);
        free(out);
        out = NULL;
    }
    rc = tu_keel(node.addr, &out, &err, "call", "counter", "c1", "incr",
                 NULL);
    ck_assert_msg(rc == 1 && err != NULL && strstr(err, "EUNAVAIL") &&
                      strstr(err, "has not joined cluster c1"),
                  "exit %d: %s", rc, err ? err : "");
    free(out);
    free(err);
    for (tries = 0; tries < 200 && !warned; tries++) {
        log = tu_keeld_log(&node);
        warned = log != NULL &&
                 strstr(log, "has not reached ZooKeeper (127.0.0.1:1) "
                             "for 5 s") != NULL;
        free(log);
        if (!warned)
            usleep(100 * 1000);
    }
    ck_assert_msg(warned, "no warning about ZooKeeper in 20 s");
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    free(zdata);
}
END_TEST

/* A message argument `@FILE` is a file's contents (a 700 KB value, too
 * large for a command line), `-` is standard input, `@@X` the word @X;
 * an unreadable file is a usage error and sends nothing. */
START_TEST(message_arguments_from_files_and_stdin)
{
    char *path = NULL, *arg = NULL, *cmd = NULL, *bin = tu_bin("keel");
    char *out = NULL, *err = NULL, *want;
    size_t n = 700 * 1000, i;
    FILE *f;
    int rc;

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, NULL), 0);
    if (asprintf(&path, "%s/value", dir) < 0 || asprintf(&arg, "@%s", path) < 0)
        abort();
    want = malloc(n + 2);
    ck_assert_ptr_nonnull(want);
    for (i = 0; i < n; i++)
        want[i] = (char)('a' + (i * 7919) % 26);
    want[n] = '\n';
    want[n + 1] = '\0';
    f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(want, 1, n, f), n);
    fclose(f);
    cli_expect("OK\n", 0, "call", "kv", "k", "put", "big", arg, NULL);
    cli_expect(want, 0, "call", "kv", "k", "get", "big", NULL);
    cli_expect("OK\n", 0, "call", "kv", "k", "put", "at", "@@x", NULL);
    cli_expect("@x\n", 0, "call", "kv", "k", "get", "at", NULL);
    if (asprintf(&cmd, "printf 'two words' | %s -a %s call kv k put in -",
                 bin, node.addr) < 0)
        abort();
    {
        const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
        ck_assert_int_eq(tu_run(argv, &out, &err), 0);
        ck_assert_str_eq(out, "OK\n");
        free(out);
        free(err);
    }
    cli_expect("two words\n", 0, "call", "kv", "k", "get", "in", NULL);
    {
        const char *argv[] = {bin, "-a", node.addr, "call", "kv", "k", "put",
                              "gone", "@/nonexistent-keel-file", NULL};
        rc = tu_run(argv, &out, &err);
        ck_assert_msg(rc == 2 && strstr(err, "keel: EINVAL: cannot read "
                                             "/nonexistent-keel-file") != NULL &&
                          strstr(err, "nothing was sent") != NULL,
                      "exit %d: %s", rc, err);
        free(out);
        free(err);
    }
    {
        /* Read before connecting: a usage error even with no node there
         * (port 1 has no listener), not a connection failure. */
        const char *argv[] = {bin, "-a", "127.0.0.1:1", "call", "kv", "k",
                              "put", "gone", "@/nonexistent-keel-file", NULL};
        rc = tu_run(argv, &out, &err);
        ck_assert_msg(rc == 2 && strstr(err, "cannot read "
                                             "/nonexistent-keel-file") != NULL,
                      "exit %d: %s", rc, err);
        free(out);
        free(err);
    }
    cli_expect("", 1, "call", "kv", "k", "get", "gone", NULL);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    free(want);
    free(cmd);
    free(arg);
    free(path);
    free(bin);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, counter_through_cli);
    tcase_add_test(tc, kv_and_register_through_cli);
    tcase_add_test(tc, errors_through_cli);
    tcase_add_test(tc, help_words);
    tcase_add_test(tc, tls_files_unreadable);
    tcase_add_test(tc, retry_outcome_kept);
    tcase_add_test(tc, bad_address_named);
    tcase_add_test(tc, stat_counts);
    tcase_add_test(tc, plugin_types);
    tcase_add_test(tc, keeld_usage);
    tcase_add_test(tc, embedding_example_runs);
    tcase_add_test(tc, introspection_standalone);
    tcase_add_test(tc, admin_needs_a_joined_cluster_node);
    tcase_add_test(tc, keeld_advertise_checked);
    tcase_add_test(tc, keeld_addresses_and_names_checked);
    tcase_add_test(tc, keeld_hold_outlasting_retention_refused);
    tcase_add_test(tc, data_dir_in_the_way);
    tcase_add_test(tc, keeld_port_taken);
    tcase_add_test(tc, keeld_data_dir_in_use);
    tcase_add_test(tc, options_after_the_command_are_warned);
    tcase_add_test(tc, bench_bad_options);
    tcase_add_test(tc, shard_count_kept_by_the_directory);
    tcase_add_test(tc, unreachable_zookeeper_is_said);
    tcase_add_test(tc, message_arguments_from_files_and_stdin);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
