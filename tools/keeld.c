/* keeld: the keel node daemon. Runs one node in the foreground until
 * SIGTERM or SIGINT, then stops cleanly: no new work, queued turns finish,
 * every write is committed and every reply sent, exit 0. SIGHUP reloads
 * what can be reloaded (keel_node_reload: the TLS files and the token file)
 * and opens the --log-file again, for log rotation.
 *
 * Options come from the command line and from a --config file; both go
 * through one table (keeld_opts) and one function (apply_option), so a
 * value is checked the same way wherever it is written. Under a service
 * manager keeld reports its state ($NOTIFY_SOCKET, common/notify.h). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <ini.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/log.h"
#include "common/notify.h"
#include "coordinator/shardmap.h"
#include "keel.h"
#include "runtime/auth.h"
#include "runtime/cluster_rt.h"
#include "runtime/tls.h"

static keel_node *volatile the_node; /* read by the signal handler */

/* The service manager's socket; set up before the signal handlers. */
static keel_notify notifier = {.fd = -1};

/* One dispatch for every signal keeld acts on; each action is
 * async-signal-safe (keel_notify_send is a sendto). */
static void on_signal(int sig)
{
    keel_node *n = the_node;

    if (n == NULL)
        return;
    switch (sig) {
    case SIGHUP:
        keel_node_reload(n);
        break;
    default:
        keel_notify_send(&notifier, "STOPPING=1\nSTATUS=stopping: finishing "
                                    "the work in hand\n");
        keel_node_stop(n);
        break;
    }
}

/* log_elsewhere: the log does not go to stderr as text (--log-file or
 * --log-format json); log_to_file: --log-file. Set once, before the node
 * is created. */
static int log_elsewhere;
static int log_to_file;

/* keeld's own lines once the log is set up. As text on stderr they read
 * as they always have ("keeld: ready on port N", which scripts wait
 * for). Otherwise they go through the log like the node's lines, and with
 * --log-file the text line still goes to stderr too, for whoever waits on
 * it there. Errors in the options come before the log is set up and go
 * to stderr (conf_error). */
static void say(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (!log_elsewhere || log_to_file)
        fprintf(stderr, "keeld: %s\n", line);
    if (log_elsewhere)
        keel_log_always(level, "keeld: %s", line);
}

/* After a usage error: the error stays the last thing on the screen,
 * not buried above the whole option list. */
static void usage_hint(void)
{
    fprintf(stderr, "usage: keeld --data DIR [options]\n"
                    "       keeld --config FILE [options]\n"
                    "Try 'keeld --help' for every option.\n");
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: keeld --data DIR [options]\n"
        "       keeld --config FILE [options]\n"
        "\n"
        "Runs a keel node in the foreground.\n"
        "\n"
        "  --config FILE          read options from FILE, one 'name = value'\n"
        "                         a line, each name an option below without\n"
        "                         its dashes; options given here override\n"
        "                         the file's (docs/operations.md)\n"
        "  --check-config         check the options and files, print\n"
        "                         'configuration ok' or the errors, exit\n"
        "                         0 or 2 without starting\n"
        "  --data DIR             data directory (created if missing); required\n"
        "  --listen HOST:PORT     wire-protocol listener (default 127.0.0.1:7420)\n"
        "  --http HOST:PORT       HTTP/JSON listener (default: none; port 0 picks\n"
        "                         one); see docs/http.md\n"
        "  --activation-log FILE  append a line per actor activation and\n"
        "                         deactivation, with its shard epoch (default: none)\n"
        "  --idle-timeout S       passivate actors idle this many seconds (default 60)\n"
        "  --max-resident N       keep at most N actors resident, passivating the\n"
        "                         least recently used (default 0: no limit)\n"
        "  --durability MODE      fsync (default): reply after the commit is on disk;\n"
        "                         none: the OS decides when data reaches the disk, so\n"
        "                         a power loss can lose recent acknowledged writes\n"
        "  --shards N             shard count, fixed when the data dir is created\n"
        "                         (default: the data dir's own, 4096 for a\n"
        "                         new one)\n"
        "  --max-frame BYTES      largest wire frame accepted (default 1048576)\n"
        "  --max-connections N    wire connections open at once; more are\n"
        "                         refused with EOVERLOAD (default 16384)\n"
        "  --conn-idle-timeout S  close a wire connection with nothing in flight\n"
        "                         that has sent or received no frame for S\n"
        "                         seconds (default 300; 0: never)\n"
        "  --http-header-timeout S  an HTTP connection must send each request's\n"
        "                         headers within S seconds (default 10)\n"
        "  --http-max-per-ip N    HTTP connections open at once from one client\n"
        "                         address (default 1024)\n"
        "  --map-size BYTES       initial LMDB map size (default 64 MiB; grows)\n"
        "  --dead-letter-after N  an outbox message or reminder firing whose\n"
        "                         receiver's handler refused it N times in a\n"
        "                         row with the same error becomes a dead\n"
        "                         letter (keel dead-letters; default 3)\n"
        "  --deploy-wait-ms MS    an outbox message waiting this long for a\n"
        "                         deploy (in a cluster its receiver's type\n"
        "                         missing on a node; its receiver's state newer\n"
        "                         than the node's code) becomes a dead letter\n"
        "                         of its sender (default 3600000: an hour)\n"
        "  --request-key-retention-ms MS\n"
        "                         how long an actor keeps a keyed request's\n"
        "                         record: a retry with its key within MS of\n"
        "                         the first run is answered with its first\n"
        "                         outcome, one after that runs again\n"
        "                         (default 600000: 10 minutes)\n"
        "  --recover-to-last-good when the data directory's log or checkpoint is\n"
        "                         damaged so that recovery would lose acknowledged\n"
        "                         writes, start from the last good state anyway and\n"
        "                         log what was dropped (default: refuse to start);\n"
        "                         see docs/operations.md, \"Damaged storage\"\n"
        "  --new-store-id         the data directory takes a new store id at this\n"
        "                         start (command line only): for a restored copy\n"
        "                         of a cluster node's directory, which the cluster\n"
        "                         refuses as it is; see docs/operations.md,\n"
        "                         \"Backups\"\n"
        "  --load PATH.so[:ARGS]  load actor types from a plugin (repeatable);\n"
        "                         the text after the first ':' goes to the\n"
        "                         plugin's keel_plugin_init\n"
        "  --auth-tokens FILE     bearer tokens and their roles, one\n"
        "                         'TOKEN client|admin [TYPE,...]' a line; the\n"
        "                         file must not be readable by others; read\n"
        "                         again on SIGHUP (docs/security.md)\n"
        "  --auth-conn-fails N    close a wire connection after N failed\n"
        "                         token attempts (default 3, at most 255)\n"
        "  --auth-addr-fails N    once N token attempts from one address\n"
        "  --auth-fail-window S   failed within S seconds (defaults 10, 10),\n"
        "                         refuse its attempts unchecked until those\n"
        "                         S seconds are over\n"
        "  --insecure             run without credentials where they are\n"
        "                         required: a listener beyond loopback, or a\n"
        "                         cluster node (--zk)\n"
        "  --log-level LEVEL      error, warn, info (default) or debug\n"
        "  --log-format FORMAT    text (default): 'TIME LEVEL MESSAGE' lines;\n"
        "                         json: one JSON object a line, with time,\n"
        "                         level, node (with --node-id) and msg\n"
        "  --log-file PATH        append the log to PATH (created 0640)\n"
        "                         instead of stderr; SIGHUP opens it again\n"
        "\n"
        "Cluster mode (docs/cluster.md; without --zk the node runs standalone):\n"
        "  --zk HOST:PORT[,...]   ZooKeeper servers; joins the cluster\n"
        "  --cluster NAME         cluster name (required with --zk)\n"
        "  --node-id ID           this node's name, unique in the cluster\n"
        "                         (required with --zk)\n"
        "  --capabilities A,B     capabilities this node declares\n"
        "  --zk-session-timeout MS  ZooKeeper session timeout (default 4000)\n"
        "  --zk-auth FILE         authenticate to ZooKeeper with the one line\n"
        "                         user:password of FILE (not readable by other\n"
        "                         users); the cluster's znodes then belong to\n"
        "                         that identity (docs/security.md, \"ZooKeeper\")\n"
        "  --advertise HOST:PORT  address other nodes reach this one at\n"
        "                         (default: the listen host, bound port)\n"
        "  --hold-timeout MS      how long a call waits for its shard to\n"
        "                         have a serving owner before EUNAVAIL\n"
        "                         (default: twice --zk-session-timeout,\n"
        "                         at least 5000; 8000 with its default,\n"
        "                         long enough for a failover)\n"
        "  --leave-timeout MS     how long SIGTERM hands shards off before\n"
        "                         the node exits anyway (default 30000)\n"
        "  --max-unit-stream BYTES  memory the unfinished unit streams from one\n"
        "                         connection may hold (default 1 GiB)\n"
        "  --replicas R           copies of every shard (1 to 5: the primary\n"
        "                         and R-1 synchronous backups) in a cluster\n"
        "                         this node creates (default 3); an existing\n"
        "                         cluster keeps its own count\n"
        "  --repl-lag-ms MS       how long a backup may leave writes\n"
        "                         unacknowledged before the primary asks to\n"
        "                         drop it from the in-sync set (default 1000)\n"
        "  --replica-dead-ms MS   how long a dead node keeps its places in\n"
        "                         the shards' replica lists before live nodes\n"
        "                         replace it and catch up (default 300000)\n"
        "  --catchup-mib-s N      at most N MiB/s of snapshots to backups\n"
        "                         catching up (default 0: no limit)\n"
        "\n"
        "TLS (docs/security.md; all three, or none):\n"
        "  --tls-cert FILE        this node's certificate chain (PEM), CN\n"
        "                         node:<node id>; served to clients and shown\n"
        "                         to other nodes (a cluster node's must name\n"
        "                         its --node-id, or it does not start)\n"
        "  --tls-key FILE         its private key (PEM)\n"
        "  --tls-ca FILE          the CA that signs the cluster's node and\n"
        "                         client certificates (PEM)\n"
        "  --tls-crl FILE         with them: the CA's certificate revocation\n"
        "                         list (PEM; one per CA); certificates it\n"
        "                         lists are refused\n"
        "  --version              print the version and exit\n"
        "  --help                 this text\n"
        "\n"
        "Built-in actor types: counter, kv, register (see `keel --help`).\n"
        "SIGTERM or SIGINT stops the node cleanly; SIGHUP reloads the TLS\n"
        "files and --auth-tokens, and opens --log-file again. Under systemd (Type=notify) keeld reports\n"
        "READY=1 once it serves, and WATCHDOG=1 while its loop runs.\n");
}

static int parse_u64(const char *s, unsigned long long max,
                     unsigned long long *out)
{
    char *end;
    unsigned long long v;

    if (s == NULL || *s == '\0' || *s == '-')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_level(const char *s)
{
    if (strcmp(s, "error") == 0)
        return KEEL_LOG_ERROR;
    if (strcmp(s, "warn") == 0)
        return KEEL_LOG_WARN;
    if (strcmp(s, "info") == 0)
        return KEEL_LOG_INFO;
    if (strcmp(s, "debug") == 0)
        return KEEL_LOG_DEBUG;
    return -1;
}

/* ---------------------------------------------------------------- options */

enum {
    O_DATA = 256, O_LISTEN, O_HTTP, O_IDLE, O_MAXRES, O_DUR, O_SHARDS,
    O_FRAME, O_MAP, O_LOAD, O_LOG, O_VERSION, O_HELP, O_ZK, O_CLUSTER,
    O_NODEID, O_CAPS, O_ZKTIMEOUT, O_ADVERTISE, O_ACTLOG, O_TLSCRL,
    O_HOLD, O_LEAVE, O_MAXCONN, O_CONNIDLE, O_UNITSTREAM, O_HTTPHDR,
    O_HTTPPERIP, O_RECOVER, O_TLSCERT, O_TLSKEY, O_TLSCA, O_ZKAUTH,
    O_AUTHTOKENS, O_INSECURE, O_AUTHCONNFAILS, O_AUTHADDRFAILS,
    O_AUTHWINDOW, O_REPLICAS, O_REPLLAG, O_REPLDEAD, O_LOGFORMAT, O_DEADAFTER,
    O_RKRETAIN, O_LOGFILE, O_CONFIG, O_CHECK, O_CATCHUPRATE, O_NEWSTOREID,
    O_DEPLOYWAIT, O_END
};
#define O_COUNT (O_END - O_DATA)
#define MAX_LOADS 32

/* Every option of keeld. The --config file takes each one that is not
 * cmdline_only as a key of the same name; a switch there is written
 * 'name = yes' (or no). */
static const struct keeld_opt {
    const char *name;
    int id;
    int has_arg;      /* 0: a switch */
    int cmdline_only; /* what acts on the invocation, not on the node */
} keeld_opts[] = {
    {"data", O_DATA, 1, 0},
    {"activation-log", O_ACTLOG, 1, 0},
    {"listen", O_LISTEN, 1, 0},
    {"http", O_HTTP, 1, 0},
    {"idle-timeout", O_IDLE, 1, 0},
    {"max-resident", O_MAXRES, 1, 0},
    {"durability", O_DUR, 1, 0},
    {"shards", O_SHARDS, 1, 0},
    {"max-frame", O_FRAME, 1, 0},
    {"map-size", O_MAP, 1, 0},
    {"recover-to-last-good", O_RECOVER, 0, 0},
    {"load", O_LOAD, 1, 0},
    {"log-level", O_LOG, 1, 0},
    {"log-format", O_LOGFORMAT, 1, 0},
    {"log-file", O_LOGFILE, 1, 0},
    {"zk", O_ZK, 1, 0},
    {"cluster", O_CLUSTER, 1, 0},
    {"node-id", O_NODEID, 1, 0},
    {"capabilities", O_CAPS, 1, 0},
    {"zk-session-timeout", O_ZKTIMEOUT, 1, 0},
    {"zk-auth", O_ZKAUTH, 1, 0},
    {"hold-timeout", O_HOLD, 1, 0},
    {"leave-timeout", O_LEAVE, 1, 0},
    {"advertise", O_ADVERTISE, 1, 0},
    {"max-connections", O_MAXCONN, 1, 0},
    {"conn-idle-timeout", O_CONNIDLE, 1, 0},
    {"max-unit-stream", O_UNITSTREAM, 1, 0},
    {"http-header-timeout", O_HTTPHDR, 1, 0},
    {"http-max-per-ip", O_HTTPPERIP, 1, 0},
    {"tls-cert", O_TLSCERT, 1, 0},
    {"tls-key", O_TLSKEY, 1, 0},
    {"tls-ca", O_TLSCA, 1, 0},
    {"tls-crl", O_TLSCRL, 1, 0},
    {"auth-tokens", O_AUTHTOKENS, 1, 0},
    {"insecure", O_INSECURE, 0, 0},
    {"auth-conn-fails", O_AUTHCONNFAILS, 1, 0},
    {"auth-addr-fails", O_AUTHADDRFAILS, 1, 0},
    {"auth-fail-window", O_AUTHWINDOW, 1, 0},
    {"replicas", O_REPLICAS, 1, 0},
    {"repl-lag-ms", O_REPLLAG, 1, 0},
    {"replica-dead-ms", O_REPLDEAD, 1, 0},
    {"catchup-mib-s", O_CATCHUPRATE, 1, 0},
    {"dead-letter-after", O_DEADAFTER, 1, 0},
    {"deploy-wait-ms", O_DEPLOYWAIT, 1, 0},
    {"request-key-retention-ms", O_RKRETAIN, 1, 0},
    {"config", O_CONFIG, 1, 1},
    {"check-config", O_CHECK, 0, 1},
    {"new-store-id", O_NEWSTOREID, 0, 1},
    {"version", O_VERSION, 0, 1},
    {"help", O_HELP, 0, 1},
};
#define N_OPTS (sizeof keeld_opts / sizeof keeld_opts[0])

/* Where a value was given: the command line (file NULL) or a line of the
 * --config file. Errors name it. */
struct origin {
    const char *file;
    int line;
};

/* The options as they are being read. The file's values are copies that
 * live as long as this (owned); the command line's point into argv. */
struct keeld_conf {
    keel_node_options opts;
    const char *loads[MAX_LOADS];
    struct origin load_from[MAX_LOADS];
    int nloads;
    int loads_from_file; /* a --load replaces the file's list */
    int log_format;      /* KEEL_LOG_FORMAT_* */
    const char *log_file;
    struct origin from[O_COUNT]; /* where each option was set (FROM) */
    char **owned;
    size_t nowned;
};

/* Where option id was set: line 0 (and file NULL) when not from the
 * file. */
#define FROM(kc, id) ((kc)->from[(id) - O_DATA])

static int conf_errors; /* errors reported so far */
/* A --cluster or --node-id was given and refused: already reported, so
 * "--zk needs --cluster and --node-id" would only mislead. */
static int zk_name_refused;
/* --zk was given and refused: its cluster options are not "without
 * --zk". */
static int zk_hosts_refused;
/* Options whose value in the file was refused before it was looked at
 * (quoted): reported already, so not also missing. */
static unsigned char refused[O_COUNT];

/* Reports a bad configuration: "keeld: [FILE:LINE: ]MESSAGE". */
static void conf_error(const struct origin *at, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void conf_error(const struct origin *at, const char *fmt, ...)
{
    va_list ap;

    fputs("keeld: ", stderr);
    if (at != NULL && at->file != NULL)
        fprintf(stderr, "%s:%d: ", at->file, at->line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    conf_errors++;
}

static const struct keeld_opt *opt_by_name(const char *name)
{
    size_t i;

    for (i = 0; i < N_OPTS; i++)
        if (strcmp(keeld_opts[i].name, name) == 0)
            return &keeld_opts[i];
    return NULL;
}

static const struct keeld_opt *opt_by_id(int id)
{
    size_t i;

    for (i = 0; i < N_OPTS; i++)
        if (keeld_opts[i].id == id)
            return &keeld_opts[i];
    return NULL;
}

/* A switch's value in the file; 1 on the command line. -1: not a yes/no. */
static int parse_switch(const char *val)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    size_t i;

    if (val == NULL)
        return 1;
    for (i = 0; i < 4; i++) {
        if (strcasecmp(val, yes[i]) == 0)
            return 1;
        if (strcasecmp(val, no[i]) == 0)
            return 0;
    }
    return -1;
}

/* The server zk_hosts_valid refused, for the message. */
static char bad_zk[300];

/* Whether val is a ZooKeeper server list as its client reads one,
 * HOST:PORT[,HOST:PORT...]: HOST everything before a server's last ':'
 * (a host name, an IPv4 address, an IPv6 address without brackets), PORT
 * 1 to 65535. On failure the first bad server (possibly empty) is copied
 * into bad. */
static int zk_hosts_valid(const char *val, char *bad, size_t badlen)
{
    const char *p = val, *comma;

    for (;;) {
        const char *colon;
        unsigned long port = 0;
        size_t n, i;
        int ok;

        comma = strchr(p, ',');
        n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        snprintf(bad, badlen, "%.*s", (int)n, p);
        colon = memrchr(p, ':', n);
        ok = colon != NULL && colon > p && n - (size_t)(colon - p) - 1 >= 1 &&
             n - (size_t)(colon - p) - 1 <= 5;
        for (i = 0; ok && p + i < colon; i++)
            ok = isalnum((unsigned char)p[i]) || strchr(".-_:%", p[i]);
        for (i = 1; ok && colon + i < p + n; i++) {
            ok = colon[i] >= '0' && colon[i] <= '9';
            port = port * 10 + (unsigned long)(colon[i] - '0');
        }
        if (!ok || port == 0 || port > 65535)
            return 0;
        if (comma == NULL)
            return 1;
        p = comma + 1;
    }
}

/* Checks val for option o and sets it in kc. val must outlive kc (argv,
 * or a copy kc owns). 0, or -1 after reporting the error at `at`. The
 * messages name the option as it was written: --name on the command
 * line, name in the file. */
static int apply_option(struct keeld_conf *kc, const struct keeld_opt *o,
                        const char *val, const struct origin *at)
{
    keel_node_options *opts = &kc->opts;
    unsigned long long v;
    char who[40];
    int c = o->id;

    snprintf(who, sizeof who, "%s%s", at->file != NULL ? "" : "--", o->name);
    switch (c) {
    case O_DATA:
        opts->data_dir = val;
        break;
    case O_LISTEN:
        if (!keel_addr_valid(val, strlen(val), 1)) {
            conf_error(at,
                       "%s takes HOST:PORT (a host name or IPv4 "
                       "address, a port from 0 to 65535, 0 for any free "
                       "one; the wire protocol does not listen on IPv6 "
                       "yet, --http does), not '%s'",
                       who, val);
            return -1;
        }
        opts->listen = val;
        break;
    case O_HTTP:
        if (!keel_http_addr_valid(val)) {
            conf_error(at,
                       "%s takes HOST:PORT or [IPV6]:PORT (a port "
                       "from 0 to 65535, 0 for any free one), not '%s'",
                       who, val);
            return -1;
        }
        opts->http_listen = val;
        break;
    case O_ACTLOG:
        opts->activation_log = val;
        break;
    case O_IDLE:
        if (parse_u64(val, 86400 * 365, &v) != 0 || v == 0) {
            conf_error(at, "%s takes seconds > 0", who);
            return -1;
        }
        opts->idle_timeout_ms = (uint32_t)(v * 1000);
        break;
    case O_MAXRES:
        if (parse_u64(val, UINT32_MAX, &v) != 0) {
            conf_error(at, "%s takes a count", who);
            return -1;
        }
        opts->max_resident = (uint32_t)v;
        break;
    case O_DUR:
        if (strcmp(val, "fsync") == 0)
            opts->durability = KEEL_DURABILITY_FSYNC;
        else if (strcmp(val, "none") == 0)
            opts->durability = KEEL_DURABILITY_NONE;
        else {
            conf_error(at, "%s is fsync or none", who);
            return -1;
        }
        break;
    case O_SHARDS:
        if (parse_u64(val, 65536, &v) != 0 || v == 0) {
            conf_error(at, "%s takes 1..65536", who);
            return -1;
        }
        opts->shard_count = (uint32_t)v;
        break;
    case O_FRAME:
        if (parse_u64(val, UINT32_MAX, &v) != 0 || v < 64) {
            conf_error(at, "%s takes bytes >= 64", who);
            return -1;
        }
        opts->max_frame = (uint32_t)v;
        break;
    case O_MAP:
        if (parse_u64(val, 1ULL << 50, &v) != 0 || v < 65536) {
            conf_error(at, "%s takes bytes >= 65536", who);
            return -1;
        }
        opts->initial_map_size = v;
        break;
    case O_RECOVER:
    case O_INSECURE: {
        int on = parse_switch(val);
        if (on < 0) {
            conf_error(at, "%s is yes or no, not '%s'", who, val);
            return -1;
        }
        if (c == O_RECOVER)
            opts->recover_to_last_good = on;
        else
            opts->insecure = on;
        break;
    }
    case O_LOAD:
        /* PATH.so[:ARGS]: the path ends at the first ':' and is not
         * empty. */
        if (val[0] == '\0' || val[0] == ':') {
            conf_error(at, "%s takes PATH.so[:ARGS], not '%s'", who, val);
            return -1;
        }
        /* The command line's list replaces the file's, as any option
         * given there replaces the file's value. */
        if (at->file == NULL && kc->loads_from_file) {
            kc->nloads = 0;
            kc->loads_from_file = 0;
        }
        if (kc->nloads == MAX_LOADS) {
            conf_error(at, "too many %s (at most %d)", who, MAX_LOADS);
            return -1;
        }
        kc->load_from[kc->nloads] = *at;
        kc->loads[kc->nloads++] = val;
        if (at->file != NULL)
            kc->loads_from_file = 1;
        break;
    case O_LOG:
        opts->log_level = parse_level(val);
        if (opts->log_level < 0) {
            conf_error(at, "%s is error, warn, info or debug", who);
            return -1;
        }
        break;
    case O_LOGFORMAT:
        if (strcmp(val, "text") == 0)
            kc->log_format = KEEL_LOG_FORMAT_TEXT;
        else if (strcmp(val, "json") == 0)
            kc->log_format = KEEL_LOG_FORMAT_JSON;
        else {
            conf_error(at, "%s is text or json, not '%s'", who, val);
            return -1;
        }
        break;
    case O_LOGFILE:
        if (val[0] == '\0') {
            conf_error(at, "%s takes a path", who);
            return -1;
        }
        kc->log_file = val;
        break;
    case O_ZK:
        /* The ZooKeeper client takes what it cannot use quietly (a
         * port past 65535 left the node connecting for ever): each
         * server is refused here, by name. */
        if (!zk_hosts_valid(val, bad_zk, sizeof bad_zk)) {
            conf_error(at,
                       "%s takes HOST:PORT[,HOST:PORT...] (a host name, "
                       "an IPv4 address or an IPv6 one without brackets, a "
                       "port from 1 to 65535, no blanks), not '%s' in '%s'",
                       who, bad_zk, val);
            zk_hosts_refused = 1;
            return -1;
        }
        opts->zk_hosts = val;
        break;
    case O_CLUSTER:
    case O_NODEID:
        /* Both name znodes in ZooKeeper and appear in every peer's
         * map: refused here with the rule, not later as EINVAL. */
        if (!keel_name_valid(val, 0)) {
            conf_error(at,
                       "%s takes a name of 1 to %d letters, "
                       "digits, '.', '_' or '-' (neither '.' nor '..'), "
                       "not '%s'",
                       who, KEEL_NAME_MAX, val);
            zk_name_refused = 1;
            return -1;
        }
        if (c == O_CLUSTER)
            opts->cluster = val;
        else
            opts->node_id = val;
        break;
    case O_CAPS:
        opts->capabilities = val;
        break;
    case O_ZKAUTH:
        opts->zk_auth = val;
        break;
    case O_ADVERTISE:
        /* Peers connect to it: refused now, not at each of their
         * connection attempts. */
        if (!keel_addr_valid(val, strlen(val), 0)) {
            conf_error(at,
                       "%s takes HOST:PORT (a host name or "
                       "IPv4 address, a port from 1 to 65535), not '%s'",
                       who, val);
            return -1;
        }
        opts->advertise = val;
        break;
    case O_ZKTIMEOUT:
        /* The lease needs room below the timeout (docs/cluster.md,
         * "Self-fencing and expiry"); the node would refuse less. */
        if (parse_u64(val, 600000, &v) != 0 || v < 1000) {
            conf_error(at, "%s takes ms >= 1000", who);
            return -1;
        }
        opts->zk_session_timeout_ms = (uint32_t)v;
        break;
    case O_HOLD:
    case O_LEAVE:
        if (parse_u64(val, 3600000, &v) != 0 || v < 1) {
            conf_error(at, "%s takes ms from 1 to 3600000", who);
            return -1;
        }
        if (c == O_HOLD)
            opts->hold_timeout_ms = (uint32_t)v;
        else
            opts->leave_timeout_ms = (uint32_t)v;
        break;
    case O_MAXCONN:
    case O_HTTPPERIP:
        if (parse_u64(val, 1000000, &v) != 0 || v == 0) {
            conf_error(at, "%s takes a count from 1 to 1000000", who);
            return -1;
        }
        if (c == O_MAXCONN)
            opts->max_connections = (uint32_t)v;
        else
            opts->http_max_per_ip = (uint32_t)v;
        break;
    case O_CONNIDLE:
        if (parse_u64(val, 86400 * 365, &v) != 0) {
            conf_error(at, "%s takes seconds (0: never)", who);
            return -1;
        }
        opts->conn_idle_timeout_s = (uint32_t)v;
        break;
    case O_HTTPHDR:
        if (parse_u64(val, 3600, &v) != 0 || v == 0) {
            conf_error(at, "%s takes seconds from 1 to 3600", who);
            return -1;
        }
        opts->http_header_timeout_s = (uint32_t)v;
        break;
    case O_UNITSTREAM:
        if (parse_u64(val, 1ULL << 40, &v) != 0 || v < (1u << 20)) {
            conf_error(at, "%s takes bytes >= 1048576", who);
            return -1;
        }
        opts->max_unit_stream = v;
        break;
    case O_TLSCERT:
        opts->tls_cert = val;
        break;
    case O_TLSKEY:
        opts->tls_key = val;
        break;
    case O_TLSCA:
        opts->tls_ca = val;
        break;
    case O_TLSCRL:
        opts->tls_crl = val;
        break;
    case O_AUTHTOKENS:
        opts->auth_tokens = val;
        break;
    case O_REPLICAS:
        if (parse_u64(val, 5, &v) != 0 || v < 1) {
            conf_error(at, "%s takes 1 to 5", who);
            return -1;
        }
        opts->replicas = (int)v;
        break;
    case O_REPLLAG:
        if (parse_u64(val, 3600000, &v) != 0 || v < 1) {
            conf_error(at, "%s takes ms from 1 to 3600000", who);
            return -1;
        }
        opts->repl_lag_ms = (uint32_t)v;
        break;
    case O_DEADAFTER:
        if (parse_u64(val, 1000, &v) != 0 || v < 1) {
            conf_error(at, "%s takes 1 to 1000", who);
            return -1;
        }
        opts->dead_letter_after = (uint32_t)v;
        break;
    case O_DEPLOYWAIT:
        if (parse_u64(val, 604800000, &v) != 0 || v < 1) {
            conf_error(at, "%s takes ms from 1 to 604800000 (7 days)", who);
            return -1;
        }
        opts->deploy_wait_ms = (uint32_t)v;
        break;
    case O_RKRETAIN:
        if (parse_u64(val, 604800000, &v) != 0 || v < 1) {
            conf_error(at, "%s takes ms from 1 to 604800000 (7 days)", who);
            return -1;
        }
        opts->request_key_retention_ms = (uint32_t)v;
        break;
    case O_REPLDEAD:
        if (parse_u64(val, 86400000, &v) != 0 || v < 1) {
            conf_error(at, "%s takes ms from 1 to 86400000", who);
            return -1;
        }
        opts->replica_dead_ms = (uint32_t)v;
        break;
    case O_CATCHUPRATE:
        if (parse_u64(val, 100000, &v) != 0) {
            conf_error(at, "%s takes MiB/s from 0 (no limit) to 100000", who);
            return -1;
        }
        opts->catchup_mib_s = (uint32_t)v;
        break;
    case O_AUTHCONNFAILS:
    case O_AUTHADDRFAILS:
    case O_AUTHWINDOW: {
        unsigned long long max = c == O_AUTHCONNFAILS   ? 255
                                 : c == O_AUTHADDRFAILS ? 1000000
                                                        : 3600;
        if (parse_u64(val, max, &v) != 0 || v == 0) {
            conf_error(at, "%s takes %s from 1 to %llu", who,
                       c == O_AUTHWINDOW ? "seconds" : "a count", max);
            return -1;
        }
        if (c == O_AUTHCONNFAILS)
            opts->auth_conn_fails = (uint32_t)v;
        else if (c == O_AUTHADDRFAILS)
            opts->auth_addr_fails = (uint32_t)v;
        else
            opts->auth_fail_window_s = (uint32_t)v;
        break;
    }
    default: /* cmdline_only: acted on by main */
        return 0;
    }
    FROM(kc, c) = *at;
    return 0;
}

/* ------------------------------------------------------------ config file */

/* Reading one --config file with inih. Our reader hands inih one line at
 * a time, so that every error names its line, leading blanks removed (no
 * continuation lines: an indented key is a key like any other). */
struct conf_file {
    struct keeld_conf *kc;
    FILE *f;
    const char *path;
    int line;
    char *buf; /* getline's */
    size_t cap;
    /* The section the lines are in, as inih names it ("" before any),
     * the line of its header and the keys read in it. */
    char section[INI_MAX_LINE];
    int section_line;
    int section_keys;
};

/* The end of a section (a next header, or the end of the file): a
 * section other than [keeld] is refused even with no key in it, as each
 * key in it is (conf_handler). */
static void section_end(struct conf_file *cf)
{
    struct origin at = {cf->path, cf->section_line};

    if (cf->section[0] != '\0' && strcmp(cf->section, "keeld") != 0 &&
        cf->section_keys == 0)
        conf_error(&at, "section [%s]: keeld reads keys before any "
                        "section or under [keeld]",
                   cf->section);
}

/* Whether p (blanks removed before it; not a comment or a section) is a
 * 'name = value' line: a '=' with no ':' before it. inih would also take
 * 'name: value' (and cut 'listen 127.0.0.1:1' at its ':'), which the
 * file's format is not. */
static int is_name_value(const char *p)
{
    const char *eq = strchr(p, '=');
    const char *colon = strchr(p, ':');

    return eq != NULL && (colon == NULL || colon > eq);
}

static char *conf_reader(char *str, int num, void *stream)
{
    struct conf_file *cf = stream;
    struct origin at;
    ssize_t len;
    char *p;

    errno = 0;
    len = getline(&cf->buf, &cf->cap, cf->f);
    if (len < 0) {
        if (ferror(cf->f)) {
            at.file = cf->path;
            at.line = cf->line + 1;
            conf_error(&at, "cannot read: %s", strerror(errno));
        } else {
            section_end(cf);
        }
        return NULL;
    }
    cf->line++;
    at.file = cf->path;
    at.line = cf->line;
    while (len > 0 && (cf->buf[len - 1] == '\n' || cf->buf[len - 1] == '\r'))
        cf->buf[--len] = '\0';
    p = cf->buf;
    while (*p == ' ' || *p == '\t')
        p++;
    /* inih's line buffer holds num bytes with the line end and the NUL. */
    if (strlen(p) + 3 > (size_t)num) {
        conf_error(&at, "line longer than %d characters", num - 3);
        p = "";
    } else if (*p == '[' && strchr(p, ']') == NULL) {
        conf_error(&at, "'%s' opens a section without closing it", p);
        p = "";
    } else if (*p == '[') {
        /* inih names the section by what stands between the brackets. */
        section_end(cf);
        snprintf(cf->section, sizeof cf->section, "%.*s",
                 (int)(strchr(p, ']') - p - 1), p + 1);
        cf->section_line = cf->line;
        cf->section_keys = 0;
    } else if (*p != '\0' && *p != '#' && *p != ';' && !is_name_value(p)) {
        conf_error(&at, "'%s' is not a 'name = value' line", p);
        p = "";
    }
    memcpy(str, p, strlen(p) + 1);
    return str;
}

static int conf_handler(void *user, const char *section, const char *name,
                        const char *value)
{
    struct conf_file *cf = user;
    struct keeld_conf *kc = cf->kc;
    struct origin at = {cf->path, cf->line};
    const struct keeld_opt *o;
    char *copy, **owned;

    /* Errors are reported and counted here; parsing goes on so that one
     * run shows them all. */
    cf->section_keys++;
    if (section[0] != '\0' && strcmp(section, "keeld") != 0) {
        conf_error(&at, "key '%s' is in section [%s]: keeld reads keys "
                        "before any section or under [keeld]",
                   name, section);
        return 1;
    }
    o = opt_by_name(name);
    if (o == NULL) {
        conf_error(&at, "unknown key '%s' (the keys are keeld's options "
                        "without their leading dashes: keeld --help)",
                   name);
        return 1;
    }
    if (o->cmdline_only) {
        conf_error(&at, "key '%s' is a command-line option only (--%s)",
                   name, name);
        return 1;
    }
    if (value[0] == '\0') {
        conf_error(&at, "key '%s' has no value", name);
        return 1;
    }
    if (value[0] == '"' || value[0] == '\'') {
        /* Taken as written, quotes and all, the value would only be
         * refused later in words that hide why (a path's parent
         * '"/etc'), or used with them (capabilities). */
        size_t len = strlen(value);
        int both = len >= 2 && value[len - 1] == value[0];
        conf_error(&at,
                   "key '%s' has its value %s: values take no quotes; "
                   "write '%s = %.*s'",
                   name, both ? "in quotes" : "after a quote", name,
                   (int)(len - 1 - (size_t)both), value + 1);
        refused[o->id - O_DATA] = 1;
        if (o->id == O_CLUSTER || o->id == O_NODEID)
            zk_name_refused = 1;
        else if (o->id == O_ZK)
            zk_hosts_refused = 1;
        return 1;
    }
    if (o->id != O_LOAD && FROM(kc, o->id).file != NULL) {
        conf_error(&at, "key '%s' is set twice (first on line %d)", name,
                   FROM(kc, o->id).line);
        return 1;
    }
    copy = strdup(value);
    owned = realloc(kc->owned, (kc->nowned + 1) * sizeof *owned);
    if (copy == NULL || owned == NULL) {
        free(copy);
        if (owned != NULL)
            kc->owned = owned;
        conf_error(&at, "out of memory");
        return 1;
    }
    kc->owned = owned;
    kc->owned[kc->nowned++] = copy;
    apply_option(kc, o, copy, &at);
    return 1;
}

/* Reads the --config file into kc; every error is reported (and counted
 * in conf_errors). -1 when the file cannot be read at all. */
static int read_config(struct keeld_conf *kc, const char *path)
{
    struct conf_file cf;
    struct stat st;
    int before = conf_errors, rc;

    memset(&cf, 0, sizeof cf);
    cf.kc = kc;
    cf.path = path;
    cf.f = fopen(path, "r");
    if (cf.f == NULL) {
        conf_error(NULL, "--config %s: cannot open: %s", path,
                   strerror(errno));
        return -1;
    }
    if (fstat(fileno(cf.f), &st) == 0 && S_ISDIR(st.st_mode)) {
        conf_error(NULL, "--config %s: is a directory, not a file", path);
        fclose(cf.f);
        return -1;
    }
    rc = ini_parse_stream(conf_reader, &cf, conf_handler, &cf);
    /* Our reader and handler report what they refuse; inih reports only
     * the first line it could not parse, should it find one they let
     * through. */
    if (rc > 0 && conf_errors == before) {
        struct origin at = {path, rc};
        conf_error(&at, "cannot parse this line");
    } else if (rc < 0 && conf_errors == before) {
        conf_error(NULL, "--config %s: cannot read it (out of memory)", path);
    }
    free(cf.buf);
    fclose(cf.f);
    return 0;
}

/* ----------------------------------------------------------------- checks */

/* keeld creates its data directory, not the directories above it: a
 * mistyped path is refused (with the part that is missing) rather than
 * made four levels deep, and so is a path where a file stands in the
 * way (the directory itself, or one above it), which the store would
 * only report as "cannot create directory". 1 when dir is a directory,
 * or its parent is, or an error the store will name stops the look. */
static int data_dir_usable(const char *dir, const struct origin *at)
{
    const char *opt = at->file != NULL ? "data" : "--data";
    struct stat st;
    char *copy;
    const char *parent;
    int ok = 1;

    if (stat(dir, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return 1;
        conf_error(at, "%s %s: not a directory (a file of that name is in "
                       "the way; keeld keeps its store in a directory)",
                   opt, dir);
        return 0;
    }
    if (errno != ENOENT && errno != ENOTDIR)
        return 1;
    copy = strdup(dir);
    if (copy == NULL)
        return 1;
    parent = dirname(copy);
    if (stat(parent, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            conf_error(at, "%s %s: its parent %s is not a directory", opt,
                       dir, parent);
            ok = 0;
        }
    } else if (errno == ENOTDIR) {
        conf_error(at, "%s %s: a file stands in the path of its parent %s",
                   opt, dir, parent);
        ok = 0;
    } else if (errno == ENOENT) {
        conf_error(at,
                   "%s %s: its parent directory %s does not exist "
                   "(keeld creates the data directory, not the ones above "
                   "it)",
                   opt, dir, parent);
        ok = 0;
    }
    free(copy);
    return ok;
}

/* What needs several options together, or none of some. */
static void check_combinations(const keel_node_options *opts)
{
    if ((opts->tls_cert != NULL || opts->tls_key != NULL ||
         opts->tls_ca != NULL) &&
        (opts->tls_cert == NULL || opts->tls_key == NULL ||
         opts->tls_ca == NULL) &&
        !refused[O_TLSCERT - O_DATA] && !refused[O_TLSKEY - O_DATA] &&
        !refused[O_TLSCA - O_DATA])
        conf_error(NULL, "TLS needs --tls-cert, --tls-key and --tls-ca "
                         "together");
    if (opts->tls_crl != NULL && opts->tls_ca == NULL &&
        !refused[O_TLSCA - O_DATA])
        conf_error(NULL, "--tls-crl goes with --tls-cert, --tls-key and "
                         "--tls-ca");
    if (opts->zk_hosts != NULL && !zk_name_refused &&
        (opts->cluster == NULL || opts->node_id == NULL))
        conf_error(NULL, "--zk needs --cluster and --node-id");
    if (opts->zk_hosts == NULL && !zk_hosts_refused) {
        /* The first cluster option given, to name it. */
        const char *given =
            opts->cluster != NULL            ? "--cluster"
            : opts->node_id != NULL          ? "--node-id"
            : opts->capabilities != NULL     ? "--capabilities"
            : opts->advertise != NULL        ? "--advertise"
            : opts->zk_session_timeout_ms    ? "--zk-session-timeout"
            : opts->hold_timeout_ms          ? "--hold-timeout"
            : opts->leave_timeout_ms         ? "--leave-timeout"
            : opts->max_unit_stream          ? "--max-unit-stream"
            : opts->zk_auth != NULL          ? "--zk-auth"
            : opts->replicas                 ? "--replicas"
            : opts->repl_lag_ms              ? "--repl-lag-ms"
            : opts->replica_dead_ms          ? "--replica-dead-ms"
            : opts->catchup_mib_s            ? "--catchup-mib-s"
                                             : NULL;
        if (given != NULL)
            conf_error(NULL,
                       "%s is a cluster option: it needs --zk (a standalone "
                       "node has none)",
                       given);
    }
}

/* --check-config: a file option must name a regular file keeld can read.
 * 1 when it does (or is not given). */
static int check_readable(const struct origin *at, const char *name,
                          const char *path)
{
    struct stat st;
    int fd, ok = 1;

    if (path == NULL)
        return 1;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        conf_error(at, "%s%s %s: cannot read: %s", at->file ? "" : "--",
                   name, path, strerror(errno));
        return 0;
    }
    if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
        conf_error(at, "%s%s %s: not a regular file", at->file ? "" : "--",
                   name, path);
        ok = 0;
    }
    close(fd);
    return ok;
}

/* --check-config: keeld appends to --log-file, creating it when it is
 * missing; the check creates nothing. */
static void check_log_file(const struct keeld_conf *kc)
{
    const struct origin *at = &FROM(kc, O_LOGFILE);
    const char *who = at->file ? "log-file" : "--log-file";
    const char *path = kc->log_file;
    struct stat st;
    char *copy;
    const char *dir;
    int fd;

    if (path == NULL)
        return;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            conf_error(at, "%s %s: is a directory, not a file", who, path);
            return;
        }
        /* Opened as keeld will, less O_CREAT; nothing is written. */
        fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY |
                            O_NONBLOCK);
        if (fd < 0)
            conf_error(at, "%s %s: cannot append to it: %s", who, path,
                       strerror(errno));
        else
            close(fd);
        return;
    }
    if (errno != ENOENT) {
        conf_error(at, "%s %s: %s", who, path, strerror(errno));
        return;
    }
    copy = strdup(path);
    if (copy == NULL) {
        conf_error(at, "out of memory");
        return;
    }
    dir = dirname(copy);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        conf_error(at, "%s %s: its directory %s does not exist", who, path,
                   dir);
    else if (access(dir, W_OK | X_OK) != 0)
        conf_error(at, "%s %s: cannot create it in %s: %s", who, path, dir,
                   strerror(errno));
    free(copy);
}

/* --check-config: what the node would find wrong only when it starts. */
static void check_files(const struct keeld_conf *kc)
{
    static const int files[] = {O_TLSCERT, O_TLSKEY,    O_TLSCA,
                                O_TLSCRL,  O_AUTHTOKENS, O_ZKAUTH};
    const keel_node_options *opts = &kc->opts;
    const char *paths[] = {opts->tls_cert, opts->tls_key,
                           opts->tls_ca,   opts->tls_crl,
                           opts->auth_tokens, opts->zk_auth};
    struct stat st;
    size_t i;
    int k, readable[sizeof files / sizeof files[0]];

    for (i = 0; i < sizeof files / sizeof files[0]; i++)
        readable[i] = check_readable(&FROM(kc, files[i]),
                                     opt_by_id(files[i])->name, paths[i]);
    /* What the start finds in those files, by the start's own code and
     * in its words: the token file's permissions and lines, the TLS
     * files (a key that does not match its certificate, a CA or CRL
     * file holding none, a CRL that revokes the node) and the
     * certificate's node name. Files already reported are not read
     * again, nor TLS without its three files (check_combinations). */
    if (opts->auth_tokens != NULL && readable[4]) {
        char why[1024];
        if (keel__auth_tokens_check(opts->auth_tokens, why, sizeof why) != 0)
            conf_error(&FROM(kc, O_AUTHTOKENS), "%s", why);
    }
    if (opts->tls_cert != NULL && opts->tls_key != NULL &&
        opts->tls_ca != NULL && readable[0] && readable[1] && readable[2] &&
        readable[3]) {
        char why[1024];
        keel_tls_ctx *ctx = NULL;
        if (keel_tls_node_ctx_create(opts->tls_cert, opts->tls_key,
                                     opts->tls_ca, opts->tls_crl,
                                     opts->zk_hosts != NULL ? opts->node_id
                                                            : NULL,
                                     &ctx, why, sizeof why) != 0)
            conf_error(NULL, "%s", why);
        keel_tls_ctx_unref(ctx);
    }
    for (k = 0; k < kc->nloads; k++) {
        /* The plugin is the part before ARGS. */
        const char *colon = strchr(kc->loads[k], ':');
        char *path = colon != NULL
                         ? strndup(kc->loads[k],
                                   (size_t)(colon - kc->loads[k]))
                         : strdup(kc->loads[k]);
        if (path == NULL) {
            conf_error(&kc->load_from[k], "out of memory");
            continue;
        }
        check_readable(&kc->load_from[k], "load", path);
        free(path);
    }
    check_log_file(kc);
    if (!opts->insecure) {
        /* The node refuses to start exposed without credentials (a
         * cluster node, a listener beyond loopback); the check must not
         * pass what the next restart would refuse. With --insecure it
         * starts, and says so then. */
        char why[512];
        int insecure;
        if (keel__auth_exposure_check(opts, &insecure, why, sizeof why) != 0)
            conf_error(NULL, "%s", why);
    }
    {
        char why[512];
        if (keel__hold_check(opts, why, sizeof why) != 0)
            conf_error(NULL, "%s", why);
    }
    /* The data directory itself: data_dir_usable, for a start too. */
    if (opts->activation_log != NULL) {
        char *copy = strdup(opts->activation_log);
        const struct origin *at = &FROM(kc, O_ACTLOG);
        if (copy != NULL && (stat(dirname(copy), &st) != 0 ||
                             !S_ISDIR(st.st_mode)))
            conf_error(at, "%s %s: its directory does not exist",
                       at->file ? "activation-log" : "--activation-log",
                       opts->activation_log);
        free(copy);
    }
}

/* ---------------------------------------------------------------- service */

/* keeld under a service manager (docs/operations.md, "systemd"): READY=1
 * once the node serves, STATUS= whenever what it waits for changes,
 * WATCHDOG=1 pings. The checks run as jobs on the node's loop
 * (keel_node_post), so each ping also says that the loop turns: a stuck
 * loop stops the pings and the service manager restarts the node. */
struct service {
    keel_node *node;
    uint64_t half_us;   /* half of $WATCHDOG_USEC; 0: no watchdog */
    uint64_t period_us; /* between checks once ready */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    int quit;          /* under mu */
    atomic_int queued; /* a check is posted and has not run yet */
    atomic_int ready;  /* READY=1 sent */
    /* The loop thread's: */
    char status[160];
    uint64_t last_ping_us;
};

/* A check while the node starts: short, so READY=1 follows soon after the
 * node serves. */
#define SERVICE_START_PERIOD_US 100000

static uint64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Runs on the loop thread. */
static void service_check(keel_node *n, void *data)
{
    struct service *s = data;
    const char *why = NULL;
    char status[sizeof s->status], msg[sizeof status + 64];
    size_t len = 0;
    uint64_t now = mono_us();
    int rc = keel_node_readiness(n, &why);

    if (rc == 0)
        snprintf(status, sizeof status, "serving on port %d",
                 keel_node_port(n));
    else
        snprintf(status, sizeof status, "%s",
                 why != NULL ? why : keel_strerror(rc));
    msg[0] = '\0';
    if (rc == 0 && !atomic_load(&s->ready)) {
        len += (size_t)snprintf(msg + len, sizeof msg - len, "READY=1\n");
        atomic_store(&s->ready, 1);
    }
    if (strcmp(status, s->status) != 0) {
        len += (size_t)snprintf(msg + len, sizeof msg - len, "STATUS=%s\n",
                                status);
        memcpy(s->status, status, sizeof status);
    }
    /* Checks come every period_us (<= half_us): a ping at the first one
     * that could not wait for the next keeps pings at most half_us
     * apart, give or take the loop's delay. */
    if (s->half_us != 0 &&
        now - s->last_ping_us + s->period_us >= s->half_us) {
        len += (size_t)snprintf(msg + len, sizeof msg - len, "WATCHDOG=1\n");
        s->last_ping_us = now;
    }
    if (len > 0)
        keel_notify_send(&notifier, msg);
    atomic_store(&s->queued, 0);
}

static void *service_main(void *arg)
{
    struct service *s = arg;
    struct timespec at;

    pthread_mutex_lock(&s->mu);
    while (!s->quit) {
        uint64_t wait_us = atomic_load(&s->ready) ? s->period_us
                                                  : SERVICE_START_PERIOD_US;
        /* One check at a time: a loop that does not run them gets no
         * second one queued, and sends no ping. */
        if (!atomic_exchange(&s->queued, 1) &&
            keel_node_post(s->node, service_check, s) != 0)
            atomic_store(&s->queued, 0); /* stopping: nothing to check */
        clock_gettime(CLOCK_MONOTONIC, &at);
        at.tv_sec += (time_t)(wait_us / 1000000u);
        at.tv_nsec += (long)(wait_us % 1000000u) * 1000;
        if (at.tv_nsec >= 1000000000L) {
            at.tv_sec++;
            at.tv_nsec -= 1000000000L;
        }
        while (!s->quit &&
               pthread_cond_timedwait(&s->cv, &s->mu, &at) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Starts the checks when a service manager listens; 0 also when none
 * does (nothing started). */
static int service_start(struct service *s, keel_node *node)
{
    pthread_condattr_t ca;
    sigset_t all, old;
    uint64_t wd = keel_notify_watchdog_usec();
    int rc;

    memset(s, 0, sizeof *s);
    if (!keel_notify_on(&notifier))
        return 0;
    s->node = node;
    s->half_us = wd / 2;
    s->period_us = 1000000;
    if (s->half_us != 0 && s->half_us < s->period_us)
        s->period_us = s->half_us;
    s->last_ping_us = mono_us();
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    /* Signals go to the main thread: the handler must not run here while
     * main frees the node. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&s->thread, NULL, service_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        s->node = NULL;
        return -1;
    }
    return 0;
}

static void service_stop(struct service *s)
{
    if (s->node == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->quit = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    s->node = NULL;
}

/* ------------------------------------------------------------------- main */

/* Runs the node with the checked options until it stops; keeld's exit
 * status. */
/* The file of a --load PATH.so[:ARGS], malloc'd (NULL when out of
 * memory): the path ends at the first ':' (apply_option refused an empty
 * one). A path without '/' names a file in the working directory, as for
 * every other file option (and as --check-config reads it): dlopen would
 * look for it among the system's libraries instead. */
static char *plugin_path(const char *load)
{
    const char *colon = strchr(load, ':');
    size_t plen = colon != NULL ? (size_t)(colon - load) : strlen(load);
    int bare = memchr(load, '/', plen) == NULL;
    char *path = NULL;

    if (asprintf(&path, "%s%.*s", bare ? "./" : "", (int)plen, load) < 0)
        return NULL;
    return path;
}

static int run_node(const struct keeld_conf *kc)
{
    const keel_node_options *opts = &kc->opts;
    struct service svc;
    struct sigaction sa;
    char err[1024], msg[1200];
    int rc, i;

    /* The log is set up before anything logs: the node's first lines go
     * where the rest will. */
    keel_log_set_format(kc->log_format);
    if (opts->node_id != NULL)
        keel_log_set_node(opts->node_id);
    if (kc->log_file != NULL) {
        rc = keel_log_open_file(kc->log_file, err, sizeof err);
        if (rc != 0) {
            /* Still before the log: a configuration error, exit 2. */
            conf_error(&FROM(kc, O_LOGFILE), "%slog-file: %s",
                       FROM(kc, O_LOGFILE).file ? "" : "--", err);
            return 2;
        }
        log_to_file = 1;
    }
    log_elsewhere = log_to_file || kc->log_format != KEEL_LOG_FORMAT_TEXT;

    /* A full disk must surface as a write error, not kill the process:
     * EFBIG from a file-size limit is handled like ENOSPC. */
    signal(SIGXFSZ, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    /* Every client connection (wire or HTTP) holds a descriptor: allow as
     * many as the hard limit lets us, up to 65536. */
    {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 &&
            rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    rc = keel_notify_init(&notifier);
    if (rc != 0)
        say(KEEL_LOG_WARN,
            "NOTIFY_SOCKET: %s (%s); running without service manager "
            "notification",
            rc == KEEL_EINVAL ? "not an absolute path or @name"
                              : strerror(errno),
            keel_err_name(rc));
    snprintf(msg, sizeof msg, "STATUS=starting: opening %s\n",
             opts->data_dir);
    keel_notify_send(&notifier, msg);

    /* A plugin file that cannot be read fails the start before the data
     * directory is made: a typo must not leave a new store behind. */
    for (i = 0; i < kc->nloads; i++) {
        char *path = plugin_path(kc->loads[i]);

        if (path != NULL && access(path, R_OK) != 0) {
            say(KEEL_LOG_ERROR, "%s %s: cannot read %s: %s",
                kc->load_from[i].file ? "load" : "--load", kc->loads[i],
                path, strerror(errno));
            free(path);
            keel_notify_close(&notifier);
            return 1;
        }
        free(path);
    }
    {
        /* Through a plain pointer: the_node is volatile. */
        keel_node *created = NULL;
        rc = keel_node_create(opts, &created, err, sizeof err);
        the_node = created;
    }
    if (rc != 0) {
        say(KEEL_LOG_ERROR, "cannot start: %s: %s%s%s", keel_err_name(rc),
            keel_strerror(rc), err[0] ? ": " : "", err);
        keel_notify_close(&notifier);
        return 1;
    }
    for (i = 0; i < kc->nloads; i++) {
        const char *colon = strchr(kc->loads[i], ':');
        const char *who = kc->load_from[i].file ? "load" : "--load";
        char *path = plugin_path(kc->loads[i]);

        if (path == NULL) {
            say(KEEL_LOG_ERROR, "%s %s: out of memory", who, kc->loads[i]);
            rc = KEEL_ENOMEM;
        } else {
            err[0] = '\0';
            rc = keel_node_load_plugin_args(the_node, path,
                                            colon != NULL ? colon + 1 : NULL,
                                            err, sizeof err);
            free(path);
            if (rc != 0)
                say(KEEL_LOG_ERROR, "%s %s: %s", who, kc->loads[i], err);
        }
        if (rc != 0) {
            keel_node_destroy(the_node);
            keel_notify_close(&notifier);
            return 1;
        }
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    /* Tests and scripts wait for this line before connecting. A node
     * that runs exposed without credentials says so on it too. */
    {
        keel_stats st;
        char joining[KEEL_NAME_MAX + 80] = "";
        keel_node_stats(the_node, &st);
        if (opts->zk_hosts != NULL)
            snprintf(joining, sizeof joining,
                     "; joining cluster %s (/readyz and `keel nodes` say "
                     "when it serves)",
                     opts->cluster);
        say(KEEL_LOG_INFO, "ready on port %d%s%s", keel_node_port(the_node),
            st.insecure ? " (INSECURE: no credentials, --insecure)" : "",
            joining);
    }
    if (opts->http_listen != NULL)
        say(KEEL_LOG_INFO, "http on port %d", keel_node_http_port(the_node));
    if (service_start(&svc, the_node) != 0)
        say(KEEL_LOG_WARN, "cannot start the service manager notification "
                           "thread; running without it");
    rc = keel_node_run(the_node);
    service_stop(&svc);
    {
        /* A late SIGTERM must not reach a node being freed: block the
         * stop signals first (pending ones die with the process). */
        sigset_t stop_sigs;
        sigemptyset(&stop_sigs);
        sigaddset(&stop_sigs, SIGTERM);
        sigaddset(&stop_sigs, SIGINT);
        sigaddset(&stop_sigs, SIGHUP);
        sigprocmask(SIG_BLOCK, &stop_sigs, NULL);
    }
    /* A node that stopped on its own, e.g. unable to take part in its
     * cluster (keel_node_run), logged why: exit non-zero. */
    if (rc != 0) {
        /* The reason in full went to the log: with --log-file, stderr
         * (a supervisor's, the journal) must still say where to look. */
        const char *why = rc == KEEL_EMISMATCH
                              ? "the cluster refused this data directory "
                                "as an older copy of the node's (a "
                                "restored backup?)"
                              : keel_strerror(rc);
        say(KEEL_LOG_ERROR, "stopped: %s (%s); the log %s%s says why", why,
            keel_err_name(rc), log_to_file ? "file " : "above",
            log_to_file ? kc->log_file : "");
        snprintf(msg, sizeof msg, "STOPPING=1\nSTATUS=stopped: %s (%s)\n",
                 why, keel_err_name(rc));
        keel_notify_send(&notifier, msg);
    }
    keel_node *n = the_node;
    the_node = NULL;
    keel_node_destroy(n);
    keel_notify_close(&notifier);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    static const struct origin cmdline = {NULL, 0};
    struct option longopts[N_OPTS + 1];
    struct keeld_conf kc;
    const char *config = NULL;
    int check = 0, c, rc = 2;
    size_t i;

    for (i = 0; i < N_OPTS; i++) {
        longopts[i].name = keeld_opts[i].name;
        longopts[i].has_arg =
            keeld_opts[i].has_arg ? required_argument : no_argument;
        longopts[i].flag = NULL;
        longopts[i].val = keeld_opts[i].id;
    }
    memset(&longopts[N_OPTS], 0, sizeof longopts[N_OPTS]);
    memset(&kc, 0, sizeof kc);
    keel_node_options_init(&kc.opts);
    kc.opts.listen = "127.0.0.1:7420";

    /* First the options about the invocation: the file is read before
     * the command line's options so that those override it, wherever
     * they stand. Errors are the second pass's to report. */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_CONFIG:
            config = optarg;
            break;
        case O_CHECK:
            check = 1;
            break;
        case O_NEWSTOREID:
            kc.opts.new_store_id = 1;
            break;
        case O_VERSION:
            printf("keeld %s\n", keel_version_string());
            return 0;
        case 'h':
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            break;
        }
    }
    if (config != NULL && read_config(&kc, config) != 0)
        goto out;

    optind = 0; /* glibc: start over, permutation state included */
    opterr = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        const struct keeld_opt *o = opt_by_id(c);
        if (o == NULL) {
            usage_hint();
            goto out;
        }
        if (!o->cmdline_only)
            apply_option(&kc, o, optarg, &cmdline);
    }
    if (optind != argc) {
        conf_error(NULL, "unexpected argument '%s'", argv[optind]);
        usage_hint();
        goto out;
    }
    if (kc.opts.data_dir == NULL && !refused[O_DATA - O_DATA]) {
        conf_error(NULL, "--data DIR is required%s",
                   config != NULL ? " (or 'data = DIR' in the file)" : "");
        if (config == NULL)
            usage_hint();
    } else if (kc.opts.data_dir != NULL) {
        data_dir_usable(kc.opts.data_dir, &FROM(&kc, O_DATA));
    }
    check_combinations(&kc.opts);
    if (check)
        check_files(&kc);
    if (conf_errors > 0) {
        if (check)
            fprintf(stderr, "keeld: configuration has %d error%s\n",
                    conf_errors, conf_errors == 1 ? "" : "s");
        goto out;
    }
    if (check) {
        printf("configuration ok\n");
        rc = 0;
        goto out;
    }
    rc = run_node(&kc);
out:
    for (i = 0; i < kc.nowned; i++)
        free(kc.owned[i]);
    free(kc.owned);
    return rc;
}
