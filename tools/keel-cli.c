/* keel — the command-line client of a keel node (built from keel-cli.c).
 *
 *   keel [-a HOST:PORT] [-t TIMEOUT_MS] [--direct] [--retry N] [--key HEX]
 *        call TYPE ID ARG...
 *   keel [...] cast TYPE ID ARG...        (same options as call)
 *   keel [-a HOST:PORT] [-t TIMEOUT_MS] stat | ping
 *   keel [-a HOST:PORT] [-t TIMEOUT_MS] nodes | capabilities
 *   keel [-a HOST:PORT] [-t TIMEOUT_MS] shards [--node NODE] [--digest]
 *   keel [-a HOST:PORT] [-t TIMEOUT_MS] where TYPE ID
 *   keel [-a HOST:PORT] [-t TIMEOUT_MS] follow TYPE ID
 *   keel [-a HOST:PORT] [-t TIMEOUT_MS] digest CAP SHARD
 *   keel [-a HOST:PORT] [-t TIMEOUT_MS] node drain ID
 *   keel [-a HOST:PORT] [-t TIMEOUT_MS] node forget ID
 *
 * A node with tokens (keeld --auth-tokens) wants one: $KEEL_TOKEN,
 * $KEEL_TOKEN_FILE, --token-file FILE or --token TOKEN (seen by anyone
 * who can list processes), presented on each connection before the
 * first request.
 *
 * Exit status: 0 success, 1 the server answered with an error, 2 usage,
 * 3 connection or transport failure. Errors are printed to stderr as
 * "keel: ENAME: message" so scripts can match on the symbolic name. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <unistd.h>
#include <limits.h>
#include <stdint.h>
#include <stdarg.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/be.h"
#include "keel.h"
#include "runtime/client.h"
#include "runtime/dedup.h"
#include "runtime/proto.h"
#include "tools/keel-cli-digests.h"

#define EXIT_SERVER 1
#define EXIT_USAGE 2
#define EXIT_TRANSPORT 3

#define DEFAULT_ADDR "127.0.0.1:7420"
#define DEFAULT_TIMEOUT_MS 10000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keel [-a HOST:PORT] [-t TIMEOUT_MS] [--tls-ca FILE\n"
            "            [--tls-cert FILE --tls-key FILE]] COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  call TYPE ID ARG...  send ARGs (joined by spaces) to actor\n"
            "                       TYPE/ID and print its reply\n"
            "  cast TYPE ID ARG...  send without printing a reply; returns\n"
            "                       once the effect is durable\n"
            "                       (an ARG '-' is standard input, '@FILE'\n"
            "                       a file's contents, '@@X' the word '@X')\n"
            "  stat                 print the node's statistics\n"
            "  ping                 check the node answers; print the\n"
            "                       round-trip time\n"
            "  nodes                the cluster's members (address,\n"
            "                       capabilities, incarnation, controller)\n"
            "  shards [--node NODE] [--digest]\n"
            "                       every placement unit: owner, backups\n"
            "                       and shard_epoch (only NODE's with\n"
            "                       --node); with --digest each replica's\n"
            "                       content digest and whether those in\n"
            "                       sync agree (exit 1 if not)\n"
            "  where TYPE ID        the shard, capability, owner and epoch\n"
            "                       of actor TYPE/ID\n"
            "  state TYPE ID        actor TYPE/ID's state, version and\n"
            "                       entry count, read by its owner\n"
            "  follow TYPE ID       print actor TYPE/ID's version and\n"
            "                       state now and after every committed\n"
            "                       change of its state (\"event VERSION\n"
            "                       PAYLOAD\" for a handler's event; named\n"
            "                       entries alone, as kv's, send nothing),\n"
            "                       until interrupted;\n"
            "                       reconnects by itself (changes in\n"
            "                       between are not replayed: the current\n"
            "                       state is)\n"
            "  reminders TYPE ID    actor TYPE/ID's reminders: name, due\n"
            "                       in ms from now, period, message size\n"
            "  dead-letters TYPE ID actor TYPE/ID's dead letters: messages\n"
            "                       the runtime could not deliver for it\n"
            "  dead-letters retry|drop TYPE ID [N]\n"
            "                       retry (send again) or drop dead\n"
            "                       letter N, or every one without N\n"
            "  outbox TYPE ID       actor TYPE/ID's outbox messages still\n"
            "                       waiting, and what each waits for\n"
            "  outbox give-up TYPE ID N\n"
            "                       give up waiting message N (the next\n"
            "                       to go): it becomes a dead letter\n"
            "  capabilities         every capability and the nodes that\n"
            "                       declare it\n"
            "  digest CAP SHARD     content digest and record count of\n"
            "                       unit (CAP, SHARD) in this node's store\n"
            "                       (CAP (default) for the default group)\n"
            "  node drain ID        graceful leave of node ID: it hands\n"
            "                       every unit off, then stops\n"
            "  node forget ID       give up dead node ID's data: its\n"
            "                       units move to live nodes, their\n"
            "                       state is lost\n"
            "\n"
            "options:\n"
            "  -a, --addr HOST:PORT     node address (default $KEEL_ADDR,\n"
            "                           else " DEFAULT_ADDR ")\n"
            "  -d, --direct             call/cast: ask the node where the\n"
            "                           actor lives and send it to that\n"
            "                           owner instead of through the node\n"
            "  -r, --retry N            call/cast: send with a request\n"
            "                           key and send again, up to N times,\n"
            "                           after a failure whose outcome is\n"
            "                           unknown or that did not run; the\n"
            "                           actor answers a repeat with its\n"
            "                           first outcome\n"
            "  -k, --key HEX            call/cast: the request key (32 hex\n"
            "                           digits), to retry an earlier keel\n"
            "                           call safely\n"
            "  -t, --timeout MS         connect and reply timeout in\n"
            "                           milliseconds, 0 for none (default "
            "%d)\n"
            "  --tls-ca FILE            connect with TLS; the node's\n"
            "                           certificate must chain to this CA\n"
            "                           (default $KEEL_TLS_CA; none: no TLS)\n"
            "  --tls-cert FILE          with TLS, present this client\n"
            "                           certificate (default $KEEL_TLS_CERT)\n"
            "  --tls-key FILE           its key (default $KEEL_TLS_KEY)\n"
            "  -F, --token-file FILE    present the token in FILE's first\n"
            "                           line to a node that requires one\n"
            "                           (default $KEEL_TOKEN, else the file\n"
            "                           $KEEL_TOKEN_FILE)\n"
            "  -T, --token TOKEN        the token itself; other users can\n"
            "                           see command lines: prefer the file\n"
            "                           or $KEEL_TOKEN\n"
            "  -h, --help               show this help (so do 'keel help'\n"
            "                           and 'keel COMMAND --help')\n"
            "  -V, --version            show the version\n"
            "\n"
            "built-in actor types (every node has them):\n"
            "  counter   incr [N], decr [N], get        a 64-bit integer\n"
            "  kv        put K V, get K, del K, keys     a map of keys\n"
            "  register  read, write V, cas OLD NEW      one value\n"
            "  e.g. keel call counter c1 incr; keel call kv users put ann Ann\n"
            "\n"
            "exit status: 0 ok, 1 error reply from the node, 2 usage error,\n"
            "3 connection or transport error\n",
            DEFAULT_TIMEOUT_MS);
}

/* `keel COMMAND --help`: the entries of the full help's command list
 * whose first word is cmd ("node" has two), the options of calls when it
 * is call or cast, and where the rest is. The full help when no entry
 * matches, or when it cannot be read back. */
static void usage_of(FILE *f, const char *cmd)
{
    char *text = NULL, *line, *save = NULL;
    size_t len = 0, cl = strlen(cmd);
    FILE *m = open_memstream(&text, &len);
    int in_cmds = 0, in_opts = 0, take = 0, found = 0, opts = 0;
    int calls = strcmp(cmd, "call") == 0 || strcmp(cmd, "cast") == 0;

    if (m == NULL) {
        usage(f);
        return;
    }
    usage(m);
    if (fclose(m) != 0 || text == NULL) {
        free(text);
        usage(f);
        return;
    }
    for (line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        int entry = line[0] == ' ' && line[1] == ' ' && line[2] != ' ';
        if (strcmp(line, "commands:") == 0 || strcmp(line, "options:") == 0) {
            in_cmds = line[0] == 'c';
            in_opts = !in_cmds;
            take = 0;
            continue;
        }
        if (line[0] != ' ') {
            in_cmds = in_opts = take = 0;
            continue;
        }
        /* call and cast share their words on ARGs and their options. */
        if (entry && in_cmds)
            take = (strncmp(line + 2, cmd, cl) == 0 && line[2 + cl] == ' ') ||
                   (calls && (strncmp(line + 2, "call ", 5) == 0 ||
                              strncmp(line + 2, "cast ", 5) == 0));
        else if (entry && in_opts)
            take = calls && found && strstr(line, "call/cast") != NULL;
        if (take && !found++)
            fprintf(f, "usage: keel [OPTIONS] %s ...\n\n", cmd);
        if (take && in_opts && !opts++)
            fprintf(f, "\noptions of call and cast:\n");
        if (take)
            fprintf(f, "%s\n", line);
    }
    free(text);
    if (!found) {
        usage(f);
        return;
    }
    fprintf(f, "\n'keel --help' lists every command and option.\n");
}

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "keel: %s: ", keel_err_name(KEEL_EINVAL));
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'keel --help'.\n");
    return EXIT_USAGE;
}

/* Prints "keel: ENAME: message"; without a message of its own the code's
 * standard text is used. */
static void print_error(int code, const char *msg, size_t len)
{
    fprintf(stderr, "keel: %s: ", keel_err_name(code));
    if (msg != NULL && len > 0)
        fwrite(msg, 1, len, stderr);
    else
        fputs(keel_strerror(code), stderr);
    fputc('\n', stderr);
}

/* The address of the node the last connection went to (cli_connect),
 * for the transport errors. */
static char cli_addr[300];
/* The reply wait (-t), for the timeout's message. */
static int cli_timeout_ms;

/* A failure of the connection, worded by what it means for the request:
 * ENOTSENT (it never left: safe to send again; why says what happened,
 * may be NULL), ECONN (it left: it may have run) or ETIMEDOUT (it left
 * and no reply came within -t: it may have run). They name the
 * address. */
static int transport_error_why(int code, const char *why)
{
    char msg[900];

    if (code == KEEL_ENOTSENT) {
        snprintf(msg, sizeof msg,
                 "request not sent to %s (%s); safe to retry", cli_addr,
                 why != NULL && why[0] != '\0' ? why : "connection closed");
        print_error(code, msg, strlen(msg));
    } else if (code == KEEL_ECONN) {
        snprintf(msg, sizeof msg, "connection to %s lost after the request "
                                  "was sent; it may have run",
                 cli_addr);
        print_error(code, msg, strlen(msg));
    } else if (code == KEEL_ETIMEDOUT) {
        snprintf(msg, sizeof msg, "no reply from %s within %d ms (-t); "
                                  "the request was sent and may have run",
                 cli_addr, cli_timeout_ms);
        print_error(code, msg, strlen(msg));
    } else if (why != NULL && why[0] != '\0') {
        print_error(code, why, strlen(why)); /* e.g. a TLS file */
    } else {
        print_error(code, NULL, 0);
    }
    return EXIT_TRANSPORT;
}

static int transport_error(int code)
{
    return transport_error_why(code, NULL);
}

/* The token presented on each connection, or NULL (main sets it). */
static const char *the_token;

/* Presents the token on a fresh connection, before any request. Returns
 * 0, the node's refusal (its message printed) or a transport error. */
static int present_token(keel_client *c)
{
    char *reply = NULL;
    size_t rlen = 0;
    int rc;

    if (the_token == NULL)
        return 0;
    rc = keel_client_auth(c, the_token, &reply, &rlen);
    if (rc == KEEL_EINVAL && reply != NULL) {
        /* A node older than tokens does not know the query: it has no
         * tokens to check either. */
        free(reply);
        return 0;
    }
    if (rc != 0 && reply != NULL)
        print_error(rc, reply, rlen);
    free(reply);
    return rc;
}

/* The whole of f, malloc'd into *out (*len bytes): 0, or -1 with errno
 * set. */
static int slurp(FILE *f, char **out, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);

    if (buf == NULL)
        return -1;
    errno = 0;
    for (;;) {
        size_t got;
        if (n == cap) {
            char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                errno = ENOMEM;
                return -1;
            }
            buf = nb;
            cap *= 2;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        if (errno == 0)
            errno = EIO; /* else fread's own: EISDIR for a directory */
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

/* One message argument as given: `-` is standard input, `@PATH` the
 * contents of a file (for values too large, or too binary, for a command
 * line), `@@...` the argument `@...`; anything else itself. *owned gets
 * what the caller frees. 0, or -1 after a message on stderr. */
static int arg_value(const char *a, const char **v, size_t *vl, char **owned)
{
    FILE *f;
    int rc;

    *owned = NULL;
    if (strcmp(a, "-") != 0 && (a[0] != '@' || a[1] == '@')) {
        *v = a[0] == '@' ? a + 1 : a;
        *vl = strlen(*v);
        return 0;
    }
    if (a[0] == '-') {
        rc = slurp(stdin, owned, vl);
        if (rc != 0)
            fprintf(stderr, "keel: %s: cannot read standard input: %s; "
                    "nothing was sent\n", keel_err_name(KEEL_EINVAL),
                    strerror(errno));
    } else if ((f = fopen(a + 1, "rb")) == NULL) {
        fprintf(stderr, "keel: %s: cannot read %s: %s; nothing was sent\n",
                keel_err_name(KEEL_EINVAL), a + 1, strerror(errno));
        return -1;
    } else {
        rc = slurp(f, owned, vl);
        if (rc != 0)
            fprintf(stderr, "keel: %s: cannot read %s: %s; nothing was "
                    "sent\n", keel_err_name(KEEL_EINVAL), a + 1,
                    strerror(errno));
        fclose(f);
    }
    if (rc != 0)
        return -1;
    *v = *owned;
    return 0;
}

/* Joins the message arguments argv[0..argc) with single spaces into a
 * malloc'd buffer the caller frees, `-` and `@PATH` read (arg_value).
 * NULL with *bad set when an argument could not be read, else when out
 * of memory. */
static char *join_args(int argc, char **argv, size_t *lenp, int *bad)
{
    size_t len = 0, off = 0;
    char *buf = NULL;
    int i, stdin_at = -1;

    *bad = 0;
    for (i = 0; i < argc; i++) {
        const char *v;
        size_t vl;
        char *owned, *nb;
        if (strcmp(argv[i], "-") == 0) {
            if (stdin_at >= 0) {
                /* The first took all of it: the second would read
                 * nothing, and the message end in a stray space. */
                fprintf(stderr, "keel: %s: '-' (standard input) given "
                        "twice in the message; nothing was sent\n",
                        keel_err_name(KEEL_EINVAL));
                free(buf);
                *bad = 1;
                return NULL;
            }
            stdin_at = i;
        }
        if (arg_value(argv[i], &v, &vl, &owned) != 0) {
            free(buf);
            *bad = 1;
            return NULL;
        }
        nb = realloc(buf, len + vl + (i > 0) + 1);
        if (nb == NULL) {
            free(owned);
            free(buf);
            return NULL;
        }
        buf = nb;
        if (i > 0)
            buf[off++] = ' ';
        if (vl > 0)
            memcpy(buf + off, v, vl);
        off += vl;
        len = off;
        free(owned);
    }
    if (buf == NULL && (buf = malloc(1)) == NULL)
        return NULL;
    buf[off] = '\0';
    *lenp = len;
    return buf;
}

/* A request that failed: the node's error (its text in reply, freed
 * here) exits EXIT_SERVER, a failed connection as transport_error says. */
static int request_failed(int rc, char *reply, size_t rlen)
{
    if (reply == NULL)
        return transport_error(rc);
    print_error(rc, reply, rlen);
    free(reply);
    return EXIT_SERVER;
}

static int flush_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        print_error(KEEL_EIO, "cannot write to standard output",
                    strlen("cannot write to standard output"));
        return EXIT_TRANSPORT;
    }
    return 0;
}

/* Sends one request and maps the outcome to an exit status. On success
 * *reply holds the reply (caller frees). */
static int request(keel_client *c, uint8_t kind, const char *type,
                   const char *id, const char *msg, size_t len, char **reply,
                   size_t *reply_len)
{
    int rc;

    rc = keel_client_call(c, kind, type, id, id ? strlen(id) : 0, msg, len,
                          reply, reply_len);
    if (rc == 0)
        return 0;
    if (*reply != NULL) {
        /* The server answered with an error frame: *reply is its text. */
        print_error(rc, *reply, *reply_len);
        free(*reply);
        *reply = NULL;
        return EXIT_SERVER;
    }
    return transport_error(rc);
}

/* How call and cast are sent: with a request key when retrying or when
 * given one (--key), so that a request that ran is not run again. */
/* TLS for every connection of this run, or NULL (see main). */
static const keel_client_tls *cli_tls;

/* The last cli_connect failed because the node refused the connection
 * (at its connection limit, ...): its error is in why. */
static int cli_refused;

/* Connects and exchanges the protocol hellos at once, so that an address
 * that is not a keel node (an HTTP port, another service) or a node of
 * another protocol version is reported as such, in why, before anything
 * is sent. */
static int cli_connect(const char *addr, int timeout_ms, keel_client **out,
                       char *why, size_t whylen)
{
    char hwhy[512];
    int rc;

    snprintf(cli_addr, sizeof cli_addr, "%s", addr);
    rc = keel_client_connect_tls(addr, timeout_ms, cli_tls, out, why,
                                 whylen);

    if (rc != 0)
        return rc;
    rc = keel_client_hello(*out, hwhy, sizeof hwhy);
    cli_refused = rc != 0 && rc != KEEL_EPROTO && rc != KEEL_ENOTSENT &&
                  rc != KEEL_ENOMEM;
    if (rc != 0) {
        if (why != NULL && whylen > 0)
            snprintf(why, whylen, "%s", hwhy);
        keel_client_close(*out);
        *out = NULL;
    }
    return rc;
}

struct send_opts {
    const char *addr;
    int timeout_ms;
    int retries;       /* further attempts after a failure of unknown or
                        * retryable outcome */
    int keyed;
    int key_drawn;     /* the key is keel's own (--retry without --key):
                        * the caller learns it only if keel says it */
    uint8_t key[KEEL_REQUEST_KEY_LEN];
};

/* Outcomes after which the same keyed request may be sent again: the
 * request did not run (ENOTSENT, ESTOPPING, EUNAVAIL, EDEADLINE), or its
 * outcome is unknown (ECONN after sending, ETIMEDOUT, EINDOUBT); the key
 * makes a second run answer with the first outcome. */
static int retryable(int rc)
{
    return rc == KEEL_ENOTSENT || rc == KEEL_ECONN || rc == KEEL_ETIMEDOUT ||
           rc == KEEL_EINDOUBT || rc == KEEL_ESTOPPING ||
           rc == KEEL_EUNAVAIL || rc == KEEL_EDEADLINE;
}

/* Outcomes after which a request may have run: the caller must not
 * send it again without its key. */
static int outcome_unknown(int rc)
{
    return rc == KEEL_ECONN || rc == KEEL_ETIMEDOUT || rc == KEEL_EINDOUBT;
}

/* The key as the 32 hex digits --key takes. */
static void key_hex(const uint8_t *key, char out[2 * KEEL_REQUEST_KEY_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    int i;

    for (i = 0; i < KEEL_REQUEST_KEY_LEN; i++) {
        out[2 * i] = digits[key[i] >> 4];
        out[2 * i + 1] = digits[key[i] & 15];
    }
    out[2 * KEEL_REQUEST_KEY_LEN] = '\0';
}

/* One keyed request with retries; the client may be replaced by a new
 * connection (*cp NULL: the first connect failed with rc0, why0 saying
 * why). Same contract as request(). The outcome reported is the one
 * that matters to the caller: when an earlier try may have run, a last
 * try that did not run does not make the request "safe to retry"
 * without its key; and a key of keel's own is printed with an unknown
 * outcome, so that the caller can learn that outcome with --key. */
static int request_keyed(keel_client **cp, const struct send_opts *so,
                         uint8_t kind, const char *type, const char *id,
                         const char *msg, size_t len, char **reply,
                         size_t *reply_len, int rc0, const char *why0)
{
    int attempt, rc = rc0, delay_ms = 100, unknown = 0, status;
    char why[512], hex[2 * KEEL_REQUEST_KEY_LEN + 1];

    snprintf(why, sizeof why, "%s", why0 != NULL ? why0 : "");
    for (attempt = 0; attempt <= so->retries; attempt++) {
        if (attempt > 0 || *cp == NULL) {
            keel_client *nc;
            struct timespec ts = {delay_ms / 1000,
                                  (long)(delay_ms % 1000) * 1000000L};
            if (attempt == 0)
                continue; /* the first connect failed already */
            nanosleep(&ts, NULL);
            if (delay_ms < 2000)
                delay_ms *= 2;
            rc = cli_connect(so->addr, so->timeout_ms, &nc, why, sizeof why);
            if (rc == 0 && (rc = present_token(nc)) != 0) {
                keel_client_close(nc);
                if (rc == KEEL_EUNAUTH)
                    return EXIT_SERVER;
            }
            if (rc != 0) {
                /* This try's outcome is the connect's (why says it), not
                 * the text the try before was answered with. */
                free(*reply);
                *reply = NULL;
                if (!retryable(rc))
                    break;
                continue;
            }
            keel_client_close(*cp);
            *cp = nc;
        }
        why[0] = '\0';
        free(*reply);
        *reply = NULL;
        rc = keel_client_call_keyed(*cp, kind, so->key, type, id, strlen(id),
                                    msg, len, reply, reply_len);
        if (outcome_unknown(rc))
            unknown = rc;
        if (rc == 0 || !retryable(rc))
            break;
    }
    if (rc == 0)
        return 0;
    key_hex(so->key, hex);
    if (unknown != 0 && !outcome_unknown(rc) && !keel_err_is_answer(rc)) {
        /* The last try did not run, or failed for a reason of the node's
         * that its key does not record (ENOSPC...): an earlier one may
         * have run, or may still. An answer (EBADMSG...) is recorded
         * under the key, and every copy gets it: it is the outcome. */
        char msg2[1200];
        const char *last = *reply != NULL ? *reply : why;
        snprintf(msg2, sizeof msg2,
                 "the request to %s may have run: a try before the last "
                 "ended %s, the last %s (%s%s%s)%s%s%s",
                 so->addr, keel_err_name(unknown),
                 retryable(rc) ? "did not run" : "failed",
                 keel_err_name(rc),
                 last[0] != '\0' ? ": " : "", last,
                 so->key_drawn ? "; send it again with --key " : "",
                 so->key_drawn ? hex : "",
                 so->key_drawn ? " to learn its outcome" : "");
        print_error(unknown, msg2, strlen(msg2));
        free(*reply);
        *reply = NULL;
        return unknown == KEEL_EINDOUBT ? EXIT_SERVER : EXIT_TRANSPORT;
    }
    if (*reply != NULL) {
        print_error(rc, *reply, *reply_len);
        free(*reply);
        *reply = NULL;
        status = EXIT_SERVER;
    } else {
        status = transport_error_why(rc, why);
    }
    if (outcome_unknown(rc) && so->key_drawn)
        fprintf(stderr, "keel: its request key is %s: send it again with "
                        "--key %s to learn its outcome (it runs at most "
                        "once)\n",
                hex, hex);
    return status;
}

/* Sends msg (joined by join_args before connecting, so that a file that
 * cannot be read is a usage error whether or not the node is up, and a
 * slow pipe on standard input holds no connection open). */
static int cmd_send(keel_client **cp, const struct send_opts *so,
                    char **argv, const char *msg, size_t len, int is_call,
                    int connect_rc, const char *connect_why)
{
    char *reply = NULL;
    size_t rlen = 0;
    uint8_t kind = is_call ? KEEL_FRAME_CALL : KEEL_FRAME_CAST;
    int rc;

    if (so->keyed)
        rc = request_keyed(cp, so, kind, argv[0], argv[1], msg, len, &reply,
                           &rlen, connect_rc, connect_why);
    else
        rc = request(*cp, kind, argv[0], argv[1], msg, len, &reply, &rlen);
    if (rc != 0)
        return rc;
    if (is_call) {
        fwrite(reply, 1, rlen, stdout);
        if (rlen == 0 || reply[rlen - 1] != '\n')
            fputc('\n', stdout);
    }
    free(reply);
    return flush_stdout();
}

static int cmd_stat(keel_client *c)
{
    char *reply = NULL;
    size_t rlen = 0;
    int rc;

    rc = request(c, KEEL_FRAME_STAT, NULL, NULL, NULL, 0, &reply, &rlen);
    if (rc != 0)
        return rc;
    fwrite(reply, 1, rlen, stdout);
    free(reply);
    return flush_stdout();
}

/* Whether bytes show as themselves on a terminal: printable ASCII, and
 * with `lines` also tabs and line ends. */
static int shows_as_text(const uint8_t *d, size_t len, int lines)
{
    size_t i;

    for (i = 0; i < len; i++)
        if (d[i] >= 0x7f ||
            (d[i] < 0x20 &&
             !(lines && (d[i] == '\n' || d[i] == '\t' || d[i] == '\r'))))
            return 0;
    return 1;
}

/* "0x" and the bytes in hex. */
static void print_hex(const uint8_t *d, size_t len)
{
    size_t i;

    fputs("0x", stdout);
    for (i = 0; i < len; i++)
        printf("%02x", d[i]);
}

/* state TYPE ID: the actor's state as its owner holds it (a state read,
 * docs/protocol.md "State reads"), as lines "version V", "entries N",
 * then "state none" or "state N bytes" followed by the bytes and a
 * newline. */
static int cmd_state(keel_client *c, const char *type, const char *id)
{
    keel_state_read sr;
    char *reply = NULL;
    size_t rlen = 0;
    int rc;

    rc = keel_client_read_state(c, type, id, strlen(id), &reply, &rlen);
    if (rc != 0) {
        return request_failed(rc, reply, rlen);
    }
    if (keel_state_read_parse((const uint8_t *)reply, rlen, &sr) != 0) {
        free(reply);
        print_error(KEEL_EPROTO, "malformed state read reply",
                    strlen("malformed state read reply"));
        return EXIT_TRANSPORT;
    }
    printf("version %llu\nentries %llu\n", (unsigned long long)sr.version,
           (unsigned long long)sr.entries);
    if (!sr.has_blob) {
        printf("state none\n");
    } else {
        printf("state %zu bytes\n", sr.blob_len);
        /* Raw bytes would garble a terminal: hex, as follow shows them.
         * Into a pipe or a file they go as they are. */
        if (isatty(STDOUT_FILENO) && !shows_as_text(sr.blob, sr.blob_len, 1))
            print_hex(sr.blob, sr.blob_len);
        else
            fwrite(sr.blob, 1, sr.blob_len, stdout);
        putchar('\n');
    }
    free(reply);
    return flush_stdout();
}

/* One line per change: "VERSION STATE", the state as text when it is
 * printable on one line, else "0x" and its bytes in hex ("-" for an
 * actor without a blob: never written, or holding only entries; a state
 * of the one byte "-" is therefore printed "0x2d"); an
 * event payload the same way after "event":
 * "event VERSION PAYLOAD", which no state line can be taken for (those
 * begin with a digit). */
static int follow_print(const keel_follow_update *u)
{
    int pay = u->kind == KEEL_FOLLOW_PAYLOAD;
    const uint8_t *d = pay ? u->payload : u->state;
    size_t len = pay ? u->payload_len : u->state_len;

    printf("%s%llu ", pay ? "event " : "", (unsigned long long)u->version);
    if (!pay && !u->has_state && len == 0)
        fputs("-", stdout);
    else if (len > 0 && shows_as_text(d, len, 0) &&
             (pay || len != 1 || d[0] != '-'))
        fwrite(d, 1, len, stdout);
    else
        print_hex(d, len);
    putchar('\n');
    return flush_stdout();
}

/* The address after "owner " in a node's message, if any. */
static void follow_owner_hint(const char *msg, size_t len, char *addr,
                              size_t cap)
{
    const char *p = msg, *end = msg + len;
    size_t n = 0;

    for (; p + 6 <= end; p++) {
        if (memcmp(p, "owner ", 6) == 0) {
            p += 6;
            while (p + n < end && p[n] != ':' && p[n] != ' ' &&
                   p[n] != ';' && p[n] != ',' && n + 1 < cap)
                n++;
            /* HOST:PORT: the port follows the colon */
            if (p + n < end && p[n] == ':') {
                n++;
                while (p + n < end && p[n] >= '0' && p[n] <= '9' &&
                       n + 1 < cap)
                    n++;
            }
            memcpy(addr, p, n);
            addr[n] = '\0';
            return;
        }
    }
}

static int follow_retryable(int code)
{
    return code == KEEL_EUNAVAIL || code == KEEL_ESTOPPING ||
           code == KEEL_EOVERLOAD || code == KEEL_ENOMEM ||
           code == KEEL_ECONN || code == KEEL_ENOTSENT ||
           code == KEEL_ETIMEDOUT || code == KEEL_EFENCED;
}

/* Everything printed is flushed line by line: an interrupt ends follow
 * at once, with status 0. Installed even where the shell that started it
 * in the background had SIGINT ignored. */
static void follow_sigint(int sig)
{
    (void)sig;
    _exit(0);
}

/* Says on stderr, once per outage, that following stopped and why; the
 * changes themselves keep stdout to themselves. */
static void follow_down(int *down, const char *what)
{
    if (*down)
        return;
    *down = 1;
    fprintf(stderr, "keel: follow: %s; subscribing again until a node "
            "answers (Ctrl-C to stop)\n", what);
}

/* follow TYPE ID: subscribes (docs/protocol.md, "Following an actor"),
 * taking event payloads, and prints each change until interrupted. When the subscription ends or
 * the connection fails it subscribes again, with the last version seen,
 * at the owner the node named, else at the address it was given, waiting
 * a little longer each time (up to 2 s). */
static int cmd_follow(keel_client *c, const char *addr, int timeout_ms,
                      const char *type, const char *id)
{
    char next[300] = "", why[512], what[1024];
    uint64_t last = 0, sub = 0;
    keel_follow_update u;
    unsigned backoff_ms = 0;
    struct sigaction sa;
    int rc, down = 0;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = follow_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    for (;;) {
        if (c == NULL) {
            /* The owner named last, copied: next is cleared for the
             * next hint before the connect. */
            char hint[sizeof next];
            const char *to = addr;
            struct timespec ts;

            if (next[0] != '\0') {
                memcpy(hint, next, sizeof hint);
                to = hint;
            }

            if (backoff_ms > 0) {
                ts.tv_sec = backoff_ms / 1000;
                ts.tv_nsec = (long)(backoff_ms % 1000) * 1000000L;
                nanosleep(&ts, NULL);
            }
            backoff_ms = backoff_ms == 0 ? 100 : backoff_ms * 2;
            if (backoff_ms > 2000)
                backoff_ms = 2000;
            next[0] = '\0';
            rc = cli_connect(to, timeout_ms, &c, why, sizeof why);
            if (rc == 0 && (rc = present_token(c)) != 0) {
                keel_client_close(c);
                c = NULL;
                if (rc == KEEL_EUNAUTH || rc == KEEL_EDENIED)
                    return EXIT_SERVER;
            }
            if (rc != 0) {
                snprintf(what, sizeof what, "cannot reach %s: %s", to,
                         why);
                follow_down(&down, what);
                continue;
            }
        }
        rc = keel_client_subscribe_flags(c, type, id, strlen(id), last,
                                         KEEL_SUBSCRIBE_PAYLOADS, &sub, &u);
        if (rc != 0) {
            if (u.reason != NULL)
                follow_owner_hint(u.reason, u.reason_len, next, sizeof next);
            if (!follow_retryable(rc)) {
                if (u.reason != NULL) {
                    print_error(rc, u.reason, u.reason_len);
                    keel_client_close(c);
                    return EXIT_SERVER;
                }
                keel_client_close(c);
                return transport_error(rc);
            }
            snprintf(what, sizeof what, "%s: %.*s", keel_err_name(rc),
                     u.reason != NULL ? (int)u.reason_len : 0,
                     u.reason != NULL ? u.reason : "");
            follow_down(&down, what);
            keel_client_close(c);
            c = NULL;
            continue;
        }
        if (down) {
            fprintf(stderr, "keel: follow: subscribed again\n");
            down = 0;
        }
        if (u.kind == KEEL_EVENT_CHANGE) {
            last = u.version;
            if ((rc = follow_print(&u)) != 0)
                break;
        }
        backoff_ms = 0;
        for (;;) {
            rc = keel_client_next_event(c, sub, &u);
            if (rc == KEEL_ETIMEDOUT)
                continue; /* quiet actor: keep waiting */
            if (rc != 0 || u.kind == KEEL_EVENT_END) {
                if (rc == 0 && u.reason != NULL)
                    follow_owner_hint(u.reason, u.reason_len, next,
                                      sizeof next);
                if (rc != 0)
                    snprintf(what, sizeof what, "lost the connection (%s)",
                             keel_err_name(rc));
                else
                    snprintf(what, sizeof what, "the subscription ended: "
                             "%.*s",
                             u.reason != NULL ? (int)u.reason_len : 0,
                             u.reason != NULL ? u.reason : "");
                follow_down(&down, what);
                keel_client_close(c);
                c = NULL;
                break;
            }
            /* Payloads of turns that left the state as it was share its
             * version. */
            if (u.version > last ||
                (u.kind == KEEL_FOLLOW_PAYLOAD && u.version == last)) {
                last = u.version;
                if ((rc = follow_print(&u)) != 0) {
                    keel_client_close(c);
                    return rc;
                }
            }
        }
    }
    keel_client_close(c);
    return rc;
}

/* reminders TYPE ID: the actor's reminders as its owner holds them (a
 * state read, docs/protocol.md "State reads"), one line each:
 * "NAME due_in_ms IN period_ms P msg_bytes M" (IN is negative for one
 * overdue), then "reminders N". */
static int cmd_reminders(keel_client *c, const char *type, const char *id)
{
    char *reply = NULL;
    size_t rlen = 0, off = 0;
    unsigned count = 0;
    int rc;

    rc = keel_client_read_reminders(c, type, id, strlen(id), &reply, &rlen);
    if (rc != 0) {
        return request_failed(rc, reply, rlen);
    }
    while (off < rlen) {
        keel_reminder_entry e;
        long k = keel_reminders_entry_parse((const uint8_t *)reply + off,
                                            rlen - off, &e);
        if (k < 0) {
            free(reply);
            print_error(KEEL_EPROTO, "malformed reminders reply",
                        strlen("malformed reminders reply"));
            return EXIT_TRANSPORT;
        }
        printf("%.*s due_in_ms %lld period_ms %llu msg_bytes %u\n",
               (int)e.name_len, e.name, (long long)e.in_ms,
               (unsigned long long)e.period_ms, e.msg_len);
        off += (size_t)k;
        count++;
    }
    printf("reminders %u\n", count);
    free(reply);
    return flush_stdout();
}

/* The end of an entry's line: " msg_bytes M msg "START": WHY". */
static void shown_print(const keel_dead_entry *e)
{
    size_t i;

    printf(" msg_bytes %u msg \"", e->msg_len);
    for (i = 0; i < e->shown_len; i++) {
        uint8_t ch = e->shown[i];
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch >= 0x20 && ch < 0x7f)
            putchar(ch);
        else
            printf("\\x%02x", ch);
    }
    printf("%s\": %.*s\n", e->shown_len < e->msg_len ? "..." : "",
           (int)e->why_len, e->why);
}

/* One dead letter as a line: "N outbox TYPE/ID ..." or
 * "N reminder NAME ...". */
static void dead_print(const keel_dead_entry *e)
{
    time_t at = (time_t)(e->at_ms / 1000);
    struct tm tm;
    char when[32] = "?";

    if (gmtime_r(&at, &tm) != NULL)
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (e->kind == 1)
        printf("%llu outbox to %.*s/%.*s", (unsigned long long)e->number,
               (int)e->a_len, e->a, (int)e->b_len, e->b);
    else
        printf("%llu reminder %.*s", (unsigned long long)e->number,
               (int)e->b_len, e->b);
    printf(" error %s attempts %u at %s", keel_err_name(e->code),
           e->attempts, when);
    shown_print(e);
}

/* A waiting outbox message as a line: "N to TYPE/ID attempts A [error
 * CODE since TIME] msg_bytes M msg "...": what it waits for". */
static void waiting_print(const keel_dead_entry *e, void *data)
{
    (void)data;
    printf("%llu to %.*s/%.*s attempts %u", (unsigned long long)e->number,
           (int)e->a_len, e->a, (int)e->b_len, e->b, e->attempts);
    if (e->attempts > 0) {
        time_t at = (time_t)(e->at_ms / 1000);
        struct tm tm;
        char when[32] = "?";
        if (gmtime_r(&at, &tm) != NULL)
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        printf(" error %s since %s", keel_err_name(e->code), when);
    }
    shown_print(e);
}

typedef int (*page_fetch)(keel_client *c, const char *type, const void *id,
                          size_t idlen, uint64_t after, char **reply,
                          size_t *reply_len);

/* Calls fn for each entry of the actor's pages fetch reads (its dead
 * letters, or its waiting outbox messages), a page at a time; *held is
 * how many the actor holds. Returns 0 or an exit code. */
static int page_each(keel_client *c, page_fetch fetch, const char *what,
                     const char *type, const char *id,
                     void (*fn)(const keel_dead_entry *e, void *data),
                     void *data, uint64_t *held)
{
    uint64_t after = 0, seen = 0;
    unsigned pages;

    /* A page at a time, each read after the last number seen; bounded
     * so that a peer that keeps answering the same page cannot hold us. */
    for (pages = 0; pages < 1000000; pages++) {
        char *reply = NULL;
        size_t rlen = 0, off = 8;
        unsigned n = 0;
        int rc = fetch(c, type, id, strlen(id), after, &reply, &rlen);
        if (rc != 0)
            return request_failed(rc, reply, rlen);
        if (rlen < 8)
            goto malformed;
        *held = keel_get_be64((const uint8_t *)reply);
        while (off < rlen) {
            keel_dead_entry e;
            long k = keel_dead_entry_parse((const uint8_t *)reply + off,
                                           rlen - off, &e);
            if (k < 0 || e.number <= after)
                goto malformed;
            fn(&e, data);
            after = e.number;
            off += (size_t)k;
            n++;
        }
        free(reply);
        /* A page holds fewer than the most when the rest would not fit
         * one frame: the list ends with an empty page, or once every
         * dead letter the actor holds was seen. */
        seen += n;
        if (n == 0 || seen >= *held)
            return 0;
        continue;
    malformed:
        free(reply);
        fprintf(stderr, "keel: %s: malformed %s reply\n",
                keel_err_name(KEEL_EPROTO), what);
        return EXIT_TRANSPORT;
    }
    return 0;
}

static int dead_each(keel_client *c, const char *type, const char *id,
                     void (*fn)(const keel_dead_entry *e, void *data),
                     void *data, uint64_t *held)
{
    return page_each(c, keel_client_dead_letters, "dead-letters", type, id,
                     fn, data, held);
}

static void dead_list_one(const keel_dead_entry *e, void *data)
{
    (void)data;
    dead_print(e);
}

struct dead_numbers {
    uint64_t *v;
    size_t n, cap;
    int oom;
};

static void dead_collect(const keel_dead_entry *e, void *data)
{
    struct dead_numbers *d = data;

    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        uint64_t *p = realloc(d->v, cap * sizeof *p);
        if (p == NULL) {
            d->oom = 1;
            return;
        }
        d->v = p;
        d->cap = cap;
    }
    d->v[d->n++] = e->number;
}

/* A number of the command line that counts from 1 (a dead letter's, a
 * message's): decimal digits only. 0, or -1 when s is none. */
static int positive_number(const char *s, uint64_t *v)
{
    unsigned long long n;
    char *end;

    errno = 0;
    n = strtoull(s, &end, 10);
    if (!isdigit((unsigned char)s[0]) || errno != 0 || *end != '\0' ||
        n == 0)
        return -1;
    *v = n;
    return 0;
}

/* dead-letters TYPE ID: every dead letter of the actor, one line each,
 * then "dead-letters HELD".
 * dead-letters retry|drop TYPE ID [N]: acts on dead letter N, or on each
 * one the actor holds; prints "retried N" / "dropped N" for each, or the
 * error, and goes on with the next; "dead-letters 0" when it holds none. */
static int cmd_dead_letters(keel_client *c, int nargs, char **args)
{
    struct dead_numbers d = {0};
    uint64_t held = 0;
    const char *type, *id;
    int retry, failed = 0, rc;
    size_t i;

    if (nargs == 2) {
        rc = dead_each(c, args[0], args[1], dead_list_one, NULL, &held);
        if (rc != 0)
            return rc;
        printf("dead-letters %llu\n", (unsigned long long)held);
        return flush_stdout();
    }
    retry = strcmp(args[0], "retry") == 0;
    type = args[1];
    id = args[2];
    if (nargs == 4) {
        uint64_t v;
        if (positive_number(args[3], &v) != 0) {
            fprintf(stderr, "keel: %s: dead letter number '%s' is not a "
                            "positive integer\n",
                    keel_err_name(KEEL_EINVAL), args[3]);
            return EXIT_USAGE;
        }
        if ((d.v = malloc(sizeof *d.v)) == NULL)
            return transport_error(KEEL_ENOMEM);
        d.v[0] = v;
        d.n = 1;
    } else {
        rc = dead_each(c, type, id, dead_collect, &d, &held);
        if (rc == 0 && d.oom)
            rc = transport_error(KEEL_ENOMEM);
        if (rc != 0) {
            free(d.v);
            return rc;
        }
        if (d.n == 0)
            printf("dead-letters 0\n"); /* nothing to act on: said so */
    }
    for (i = 0; i < d.n; i++) {
        char *reply = NULL;
        size_t rlen = 0;
        rc = keel_client_dead_letter_act(c, type, id, strlen(id), retry,
                                         d.v[i], &reply, &rlen);
        if (rc == 0) {
            printf("%s %llu\n", retry ? "retried" : "dropped",
                   (unsigned long long)d.v[i]);
        } else if (reply != NULL) {
            fprintf(stderr, "keel: %s: dead letter %llu: %.*s\n",
                    keel_err_name(rc), (unsigned long long)d.v[i], (int)rlen,
                    reply);
            failed = 1;
        } else {
            free(d.v);
            return transport_error(rc);
        }
        free(reply);
    }
    free(d.v);
    rc = flush_stdout();
    return rc != 0 ? rc : failed ? EXIT_SERVER : 0;
}

/* outbox TYPE ID: the actor's outbox messages still waiting, one line
 * each, then "outbox WAITING".
 * outbox give-up TYPE ID N: gives up waiting message N; prints the
 * node's answer. */
static int cmd_outbox(keel_client *c, int nargs, char **args)
{
    uint64_t held = 0, n;
    char *reply = NULL;
    size_t rlen = 0;
    int rc;

    if (nargs == 2) {
        rc = page_each(c, keel_client_outbox_waiting, "outbox", args[0],
                       args[1], waiting_print, NULL, &held);
        if (rc != 0)
            return rc;
        printf("outbox %llu\n", (unsigned long long)held);
        return flush_stdout();
    }
    (void)positive_number(args[3], &n); /* checked in main */
    rc = keel_client_outbox_give_up(c, args[1], args[2], strlen(args[2]), n,
                                    &reply, &rlen);
    if (rc != 0)
        return request_failed(rc, reply, rlen);
    printf("%.*s\n", (int)rlen, reply != NULL ? reply : "");
    free(reply);
    return flush_stdout();
}

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int cmd_ping(keel_client *c)
{
    static const char payload[] = "keel-ping";
    char *reply = NULL;
    size_t rlen = 0;
    int64_t t0, t1;
    int rc;

    t0 = now_us();
    rc = request(c, KEEL_FRAME_PING, NULL, NULL, payload, sizeof payload - 1,
                 &reply, &rlen);
    t1 = now_us();
    if (rc != 0)
        return rc;
    if (rlen != sizeof payload - 1 || memcmp(reply, payload, rlen) != 0) {
        free(reply);
        print_error(KEEL_EPROTO, "PONG does not echo the PING payload",
                    strlen("PONG does not echo the PING payload"));
        return EXIT_TRANSPORT;
    }
    free(reply);
    printf("pong %lld us\n", (long long)(t1 - t0));
    return flush_stdout();
}

/* nodes, shards, where, capabilities: an INFO frame whose body is the
 * words separated by NUL bytes; the reply is printed as it is. */
static int cmd_info(keel_client *c, int argc, char **argv)
{
    char *reply = NULL;
    size_t rlen = 0;
    int rc;

    /* A unit per line: thousands of lines are normal for shards. */
    keel_client_set_max_frame(c, (size_t)64 << 20);
    rc = keel_client_info(c, (const char *const *)argv, (size_t)argc, &reply,
                          &rlen);
    if (rc != 0)
        return request_failed(rc, reply, rlen);
    fwrite(reply, 1, rlen, stdout);
    free(reply);
    return flush_stdout();
}

/* How keel shards --digest reaches the other nodes: as the contact
 * node, with the same TLS, token and timeout. */
static int connect_peer(const char *addr, keel_client **out, char *why,
                        size_t whylen)
{
    int rc = cli_connect(addr, cli_timeout_ms, out, why, whylen);

    if (rc == 0 && (rc = present_token(*out)) != 0) {
        keel_client_close(*out);
        *out = NULL;
        snprintf(why, whylen, "its token was refused");
    }
    return rc;
}

/* shards --digest: exit 1 when replicas in sync differ, 3 when some
 * could not be asked, 0 when every unit's agree. */
static int cmd_shards_digest(keel_client *c, const char *node)
{
    struct cli_digest_counts k;
    int rc = cli_shards_digest(c, node, connect_peer, stdout, &k);

    if (rc != 0)
        return rc == KEEL_ECONN || rc == KEEL_ETIMEDOUT ? EXIT_TRANSPORT
                                                        : EXIT_SERVER;
    if ((rc = flush_stdout()) != 0)
        return rc;
    return k.differ > 0 ? EXIT_SERVER : k.incomplete > 0 ? EXIT_TRANSPORT : 0;
}

/* The client checks the address too, but answers KEEL_EADDR alike for a
 * typo and for a name that does not resolve; only the first is a usage
 * error. */
static int addr_well_formed(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    size_t n;
    long port;
    char *end;

    if (colon == NULL || colon == addr)
        return 0;
    n = strlen(colon + 1);
    if (n == 0 || n > 5 || colon[1] < '0' || colon[1] > '9')
        return 0;
    port = strtol(colon + 1, &end, 10);
    return *end == '\0' && port > 0 && port <= 65535;
}

/* --direct: asks the contact node `where TYPE ID` and, when it names an
 * owner with an address other than addr, connects there instead (into
 * owner_addr). Any failure keeps the contact node, which forwards the
 * request itself: redirection saves a hop, it is never needed. */
static void find_owner(keel_client *c, const char *addr, const char *type,
                       const char *id, char *owner_addr, size_t cap)
{
    const char *words[] = {"where", type, id};
    size_t rlen = 0;
    char *reply = NULL, *p;

    snprintf(owner_addr, cap, "%s", addr);
    if (keel_client_info(c, words, 3, &reply, &rlen) == 0 &&
        (p = strstr(reply, "\naddress ")) != NULL) {
        char a[128];
        if (sscanf(p, "\naddress %127s", a) == 1 && addr_well_formed(a))
            snprintf(owner_addr, cap, "%s", a);
    }
    free(reply);
}

static int parse_timeout(const char *s, int *out)
{
    char *end;
    long v;

    if (s[0] < '0' || s[0] > '9')
        return -1;
    v = strtol(s, &end, 10);
    if (*end != '\0' || v < 0 || v > INT_MAX)
        return -1;
    *out = (int)v;
    return 0;
}

/* A TLS file that cannot be read is the caller's mistake, said as such
 * (a usage error naming the file and where it came from) before any
 * connection, rather than as OpenSSL's error queue. */
static int tls_file_readable(const char *path, const char *what,
                             const char *from)
{
    FILE *f;

    if (path == NULL)
        return 0;
    if ((f = fopen(path, "rb")) == NULL)
        return usage_error("cannot read the %s '%s' (%s): %s", what, path,
                           from, strerror(errno));
    fclose(f);
    return 0;
}

/* "+": stop at the command, so message words such as "-1" are not taken
 * for options; ":": report a missing value apart. */
static const char shortopts[] = "+:a:t:dr:k:T:F:hV";
static const struct option longopts[] = {
    {"addr", required_argument, NULL, 'a'},
    {"timeout", required_argument, NULL, 't'},
    {"direct", no_argument, NULL, 'd'},
    {"retry", required_argument, NULL, 'r'},
    {"key", required_argument, NULL, 'k'},
    {"tls-ca", required_argument, NULL, 'C'},
    {"tls-cert", required_argument, NULL, 'E'},
    {"tls-key", required_argument, NULL, 'K'},
    {"token", required_argument, NULL, 'T'},
    {"token-file", required_argument, NULL, 'F'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

/* Whether word is one of the options above (help and version aside),
 * as -X, --NAME or --NAME=VALUE. */
static int is_option(const char *word)
{
    const struct option *o;

    for (o = longopts; o->name != NULL; o++) {
        size_t n = strlen(o->name);
        if (o->val == 'h' || o->val == 'V')
            continue;
        if (word[0] == '-' && word[1] == o->val && word[2] == '\0' &&
            strchr(shortopts, o->val) != NULL)
            return 1;
        if (strncmp(word, "--", 2) == 0 &&
            strncmp(word + 2, o->name, n) == 0 &&
            (word[2 + n] == '\0' || word[2 + n] == '='))
            return 1;
    }
    return 0;
}

/* Options go before the command: after it they are words of the message
 * (getopt stops at the command, so that a message may begin with "-").
 * One that looks like an option is sent as it is, with a warning, since
 * the caller more likely meant the option. */
static void warn_late_options(int argc, char **argv, const char *cmd)
{
    int i;

    for (i = 0; i < argc; i++)
        if (is_option(argv[i])) {
            fprintf(stderr, "keel: warning: '%s' comes after the command, "
                    "so it is sent as part of the message; options go "
                    "first: keel [OPTIONS] %s TYPE ID MESSAGE\n",
                    argv[i], cmd);
            return;
        }
}

int main(int argc, char **argv)
{
    const char *addr = getenv("KEEL_ADDR");
    const char *cmd;
    int timeout_ms = DEFAULT_TIMEOUT_MS;
    keel_client *c = NULL;
    int opt, rc, nargs, info_argc = 0, direct = 0, is_send;
    int shards_digest = 0, addr_from_env = 0;
    char **args, **info_argv = NULL, why[512], *shards_node = NULL;
    char *msg = NULL; /* call/cast: the joined message */
    size_t msg_len = 0;
    struct send_opts so;
    keel_client_tls tls;
    const char *token_file = NULL;
    static char token_buf[512];

    if (addr == NULL || addr[0] == '\0')
        addr = DEFAULT_ADDR;
    else
        addr_from_env = 1;
    memset(&so, 0, sizeof so);
    memset(&tls, 0, sizeof tls);
    tls.ca = getenv("KEEL_TLS_CA");
    tls.cert = getenv("KEEL_TLS_CERT");
    tls.key = getenv("KEEL_TLS_KEY");
    opterr = 0;
    while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        switch (opt) {
        case 'a':
            addr = optarg;
            addr_from_env = 0;
            break;
        case 'd':
            direct = 1;
            break;
        case 'r': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || v < 0 || v > 100)
                return usage_error("bad retry count '%s' (0 to 100)",
                                   optarg);
            so.retries = (int)v;
            if (!so.keyed) {
                if (keel_client_new_key(so.key) != 0)
                    return transport_error(KEEL_EIO);
                so.key_drawn = 1;
            }
            so.keyed = 1;
            break;
        }
        case 'k':
            if (keel_dedup_key_parse(optarg, so.key) != 0)
                return usage_error("bad request key '%s' (%d hex digits)",
                                   optarg, 2 * KEEL_REQUEST_KEY_LEN);
            so.keyed = 1;
            so.key_drawn = 0;
            break;
        case 'C':
            tls.ca = optarg;
            break;
        case 'E':
            tls.cert = optarg;
            break;
        case 'K':
            tls.key = optarg;
            break;
        case 'T':
            the_token = optarg;
            token_file = NULL;
            break;
        case 'F':
            token_file = optarg;
            the_token = NULL;
            break;
        case 't':
            if (parse_timeout(optarg, &timeout_ms) < 0)
                return usage_error("bad timeout '%s' (milliseconds, >= 0)",
                                   optarg);
            break;
        case 'h':
            usage(stdout);
            return flush_stdout();
        case 'V':
            printf("keel %s\n", keel_version_string());
            return flush_stdout();
        case ':':
            return usage_error("option '%s' needs a value",
                               argv[optind - 1]);
        default:
            if (optopt != 0)
                return usage_error("unknown option '-%c'", optopt);
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (tls.ca != NULL && tls.ca[0] == '\0')
        tls.ca = NULL;
    if (tls.cert != NULL && tls.cert[0] == '\0')
        tls.cert = NULL;
    if (tls.key != NULL && tls.key[0] == '\0')
        tls.key = NULL;
    if ((tls.cert != NULL) != (tls.key != NULL))
        return usage_error("--tls-cert and --tls-key go together");
    if (tls.cert != NULL && tls.ca == NULL)
        return usage_error("--tls-cert needs --tls-ca");
    if ((rc = tls_file_readable(tls.ca, "CA file",
                                "--tls-ca or $KEEL_TLS_CA")) != 0 ||
        (rc = tls_file_readable(tls.cert, "certificate",
                                "--tls-cert or $KEEL_TLS_CERT")) != 0 ||
        (rc = tls_file_readable(tls.key, "key",
                                "--tls-key or $KEEL_TLS_KEY")) != 0)
        return rc;
    if (tls.ca != NULL)
        cli_tls = &tls;
    if (optind >= argc)
        return usage_error("no command given");
    if (the_token == NULL && token_file == NULL) {
        const char *e = getenv("KEEL_TOKEN");
        if (e != NULL && e[0] != '\0')
            the_token = e;
        else if ((e = getenv("KEEL_TOKEN_FILE")) != NULL && e[0] != '\0')
            token_file = e;
    }
    if (token_file != NULL) {
        rc = keel_client_token_from_file(token_file, token_buf,
                                         sizeof token_buf);
        if (rc != 0)
            return usage_error("cannot read a token from '%s'%s",
                               token_file,
                               rc == KEEL_EIO ? "" : ": its first line is "
                                                     "empty");
        the_token = token_buf;
    }
    if (the_token != NULL && the_token[0] == '\0')
        the_token = NULL;
    cmd = argv[optind];
    args = argv + optind + 1;
    nargs = argc - optind - 1;

    /* `keel help`, `keel COMMAND --help`: what a newcomer types first.
     * Only the word right after the command, so that a message word
     * "--help" further on is still sent. */
    if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return flush_stdout();
    }
    if (nargs > 0 &&
        (strcmp(args[0], "--help") == 0 || strcmp(args[0], "-h") == 0)) {
        usage_of(stdout, cmd);
        return flush_stdout();
    }
    if (strcmp(cmd, "call") == 0 || strcmp(cmd, "cast") == 0) {
        if (nargs < 3)
            return usage_error("%s needs TYPE ID ARG...", cmd);
        if (args[0][0] == '\0')
            return usage_error("empty actor type");
        if (strlen(args[0]) > KEEL_MAX_TYPE_LEN ||
            strlen(args[1]) > KEEL_MAX_ID_LEN) {
            fprintf(stderr,
                    "keel: %s: type name is limited to %d bytes, id to %d\n",
                    keel_err_name(KEEL_ELIMIT), KEEL_MAX_TYPE_LEN,
                    KEEL_MAX_ID_LEN);
            return EXIT_USAGE;
        }
    } else if (strcmp(cmd, "stat") == 0 || strcmp(cmd, "ping") == 0 ||
               strcmp(cmd, "nodes") == 0 ||
               strcmp(cmd, "capabilities") == 0) {
        if (nargs != 0)
            return usage_error("%s takes no arguments", cmd);
    } else if (strcmp(cmd, "shards") == 0) {
        int i;

        for (i = 0; i < nargs; i++) {
            if (strcmp(args[i], "--digest") == 0 && !shards_digest) {
                shards_digest = 1;
            } else if (strcmp(args[i], "--node") == 0 && i + 1 < nargs &&
                       args[i + 1][0] != '\0' && shards_node == NULL) {
                shards_node = args[++i];
            } else {
                return usage_error("shards takes only --node NODE and "
                                   "--digest");
            }
        }
        if (shards_node != NULL && !shards_digest) {
            static char *words[2];
            words[0] = argv[optind]; /* query words: shards NODE */
            words[1] = shards_node;
            info_argv = words;
            info_argc = 2;
        }
    } else if (strcmp(cmd, "node") == 0) {
        if (nargs != 2 ||
            (strcmp(args[0], "drain") != 0 &&
             strcmp(args[0], "forget") != 0) ||
            args[1][0] == '\0')
            return usage_error("node takes: drain ID | forget ID");
        info_argv = args; /* query words: drain ID, forget ID */
        info_argc = 2;
    } else if (strcmp(cmd, "digest") == 0) {
        if (nargs != 2 || args[0][0] == '\0' || args[1][0] == '\0')
            return usage_error("digest needs CAP SHARD (CAP (default) for "
                               "the default group)");
    } else if (strcmp(cmd, "where") == 0 || strcmp(cmd, "state") == 0 ||
               strcmp(cmd, "follow") == 0 ||
               strcmp(cmd, "reminders") == 0) {
        if (nargs != 2)
            return usage_error("%s needs TYPE ID", cmd);
        if (args[0][0] == '\0')
            return usage_error("empty actor type");
    } else if (strcmp(cmd, "dead-letters") == 0) {
        int act = nargs >= 1 && (strcmp(args[0], "retry") == 0 ||
                                 strcmp(args[0], "drop") == 0);
        if (act ? nargs != 3 && nargs != 4 : nargs != 2)
            return usage_error("dead-letters takes TYPE ID, or retry|drop "
                               "TYPE ID [N]");
        if (args[act ? 1 : 0][0] == '\0')
            return usage_error("empty actor type");
    } else if (strcmp(cmd, "outbox") == 0) {
        int act = nargs >= 1 && strcmp(args[0], "give-up") == 0;
        uint64_t n;
        if (act ? nargs != 4 : nargs != 2)
            return usage_error("outbox takes TYPE ID, or give-up TYPE ID N");
        if (args[act ? 1 : 0][0] == '\0')
            return usage_error("empty actor type");
        if (act && positive_number(args[3], &n) != 0)
            return usage_error("message number '%s' is not a positive "
                               "integer",
                               args[3]);
    } else {
        return usage_error("unknown command '%s' (commands: call, cast, "
                           "stat, ping, nodes, shards, where, state, "
                           "follow, reminders, dead-letters, outbox, "
                           "capabilities, "
                           "digest, node, help)",
                           cmd);
    }

    if (!addr_well_formed(addr)) {
        /* An address from the environment is named as such: the caller
         * may have set it long ago, in another shell's profile. */
        fprintf(stderr, "keel: %s: bad address '%s'%s (expected "
                        "HOST:PORT, a port from 1 to 65535)\n",
                keel_err_name(KEEL_EADDR), addr,
                addr_from_env ? " in $KEEL_ADDR" : "");
        return EXIT_USAGE;
    }
    is_send = strcmp(cmd, "call") == 0 || strcmp(cmd, "cast") == 0;
    if (!is_send && (direct || so.keyed))
        return usage_error("%s applies to call and cast only, not to %s",
                           direct ? "--direct"
                           : so.key_drawn ? "--retry" : "--key",
                           cmd);
    if (is_send) {
        int bad;

        warn_late_options(nargs - 2, args + 2, cmd);
        msg = join_args(nargs - 2, args + 2, &msg_len, &bad);
        if (msg == NULL)
            return bad ? EXIT_USAGE : transport_error(KEEL_ENOMEM);
    }
    cli_timeout_ms = timeout_ms;
    rc = cli_connect(addr, timeout_ms, &c, why, sizeof why);
    if (rc == 0 && (rc = present_token(c)) != 0) {
        keel_client_close(c);
        c = NULL;
        if (rc == KEEL_EUNAUTH || rc == KEEL_EDENIED) {
            free(msg);
            return EXIT_SERVER;
        }
    }
    if (rc < 0 && cli_refused) {
        print_error(rc, why, strlen(why));
        free(msg);
        return EXIT_SERVER;
    }
    if (rc < 0 && !(is_send && so.keyed && so.retries > 0 && retryable(rc))) {
        free(msg);
        return transport_error_why(rc, why);
    }
    if (c != NULL && direct && (strcmp(cmd, "call") == 0 || strcmp(cmd, "cast") == 0)) {
        char owner[128];
        keel_client *oc;
        find_owner(c, addr, args[0], args[1], owner, sizeof owner);
        if (strcmp(owner, addr) != 0 &&
            cli_connect(owner, timeout_ms, &oc, NULL, 0) == 0) {
            if (present_token(oc) == 0) {
                keel_client_close(c);
                c = oc;
            } else {
                keel_client_close(oc); /* the contact node forwards */
                snprintf(cli_addr, sizeof cli_addr, "%s", addr);
            }
        } else {
            snprintf(cli_addr, sizeof cli_addr, "%s", addr);
        }
    }
    so.addr = addr;
    so.timeout_ms = timeout_ms;
    if (strcmp(cmd, "call") == 0)
        rc = cmd_send(&c, &so, args, msg, msg_len, 1, rc, why);
    else if (strcmp(cmd, "cast") == 0)
        rc = cmd_send(&c, &so, args, msg, msg_len, 0, rc, why);
    else if (strcmp(cmd, "stat") == 0)
        rc = cmd_stat(c);
    else if (strcmp(cmd, "ping") == 0)
        rc = cmd_ping(c);
    else if (strcmp(cmd, "state") == 0)
        rc = cmd_state(c, args[0], args[1]);
    else if (strcmp(cmd, "follow") == 0) {
        rc = cmd_follow(c, addr, timeout_ms, args[0], args[1]);
        c = NULL; /* closed there */
    }
    else if (strcmp(cmd, "reminders") == 0)
        rc = cmd_reminders(c, args[0], args[1]);
    else if (strcmp(cmd, "dead-letters") == 0)
        rc = cmd_dead_letters(c, nargs, args);
    else if (strcmp(cmd, "outbox") == 0)
        rc = cmd_outbox(c, nargs, args);
    else if (shards_digest)
        rc = cmd_shards_digest(c, shards_node);
    else if (info_argv != NULL)
        rc = cmd_info(c, info_argc, info_argv);
    else
        rc = cmd_info(c, nargs + 1, argv + optind);
    keel_client_close(c);
    free(msg);
    return rc;
}
