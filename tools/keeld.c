/* keeld: the keel node daemon. Runs one node in the foreground until
 * SIGTERM or SIGINT, then stops cleanly: no new work, queued turns finish,
 * every write is committed and every reply sent, exit 0. SIGHUP reloads
 * what can be reloaded (keel_node_reload: the TLS files and the token file)
 * and opens the --log-file again, for log rotation. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "common/addr.h"
#include "common/log.h"
#include "coordinator/shardmap.h"
#include "keel.h"

static keel_node *volatile the_node; /* read by the signal handler */

/* One dispatch for every signal keeld acts on; each action is
 * async-signal-safe. */
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
 * it there. */
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

static void usage(FILE *f)
{
    fprintf(f,
        "usage: keeld --data DIR [options]\n"
        "\n"
        "Runs a keel node in the foreground.\n"
        "\n"
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
        "  --recover-to-last-good when the data directory's log or checkpoint is\n"
        "                         damaged so that recovery would lose acknowledged\n"
        "                         writes, start from the last good state anyway and\n"
        "                         log what was dropped (default: refuse to start);\n"
        "                         see docs/operations.md, \"Damaged storage\"\n"
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
        "\n"
        "TLS (docs/security.md; all three, or none):\n"
        "  --tls-cert FILE        this node's certificate chain (PEM), CN\n"
        "                         node:<node id>; served to clients and shown\n"
        "                         to other nodes\n"
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
        "files and --auth-tokens, and opens --log-file again.\n");
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

/* keeld creates its data directory, not the directories above it: a
 * mistyped path is refused (with the part that is missing) rather than
 * made four levels deep. 1 when dir exists or its parent does. */
static int data_parent_exists(const char *dir)
{
    struct stat st;
    char *copy;
    const char *parent;
    int ok;

    if (stat(dir, &st) == 0 || errno != ENOENT)
        return 1; /* there, or an error the store will name */
    copy = strdup(dir);
    if (copy == NULL)
        return 1;
    parent = dirname(copy);
    ok = stat(parent, &st) == 0;
    if (!ok)
        fprintf(stderr,
                "keeld: --data %s: its parent directory %s does not exist "
                "(keeld creates the data directory, not the ones above "
                "it)\n",
                dir, parent);
    free(copy);
    return ok;
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

int main(int argc, char **argv)
{
    enum {
        O_DATA = 256, O_LISTEN, O_HTTP, O_IDLE, O_MAXRES, O_DUR, O_SHARDS,
        O_FRAME, O_MAP, O_LOAD, O_LOG, O_VERSION, O_HELP, O_ZK, O_CLUSTER,
        O_NODEID, O_CAPS, O_ZKTIMEOUT, O_ADVERTISE, O_ACTLOG, O_TLSCRL,
        O_HOLD, O_LEAVE, O_MAXCONN, O_CONNIDLE, O_UNITSTREAM, O_HTTPHDR,
        O_HTTPPERIP, O_RECOVER, O_TLSCERT, O_TLSKEY, O_TLSCA, O_ZKAUTH,
        O_AUTHTOKENS, O_INSECURE, O_AUTHCONNFAILS, O_AUTHADDRFAILS,
        O_AUTHWINDOW, O_REPLICAS, O_REPLLAG, O_REPLDEAD, O_LOGFORMAT,
        O_LOGFILE
    };
    static const struct option longopts[] = {
        {"data", required_argument, NULL, O_DATA},
        {"activation-log", required_argument, NULL, O_ACTLOG},
        {"listen", required_argument, NULL, O_LISTEN},
        {"http", required_argument, NULL, O_HTTP},
        {"idle-timeout", required_argument, NULL, O_IDLE},
        {"max-resident", required_argument, NULL, O_MAXRES},
        {"durability", required_argument, NULL, O_DUR},
        {"shards", required_argument, NULL, O_SHARDS},
        {"max-frame", required_argument, NULL, O_FRAME},
        {"map-size", required_argument, NULL, O_MAP},
        {"recover-to-last-good", no_argument, NULL, O_RECOVER},
        {"load", required_argument, NULL, O_LOAD},
        {"log-level", required_argument, NULL, O_LOG},
        {"log-format", required_argument, NULL, O_LOGFORMAT},
        {"log-file", required_argument, NULL, O_LOGFILE},
        {"zk", required_argument, NULL, O_ZK},
        {"cluster", required_argument, NULL, O_CLUSTER},
        {"node-id", required_argument, NULL, O_NODEID},
        {"capabilities", required_argument, NULL, O_CAPS},
        {"zk-session-timeout", required_argument, NULL, O_ZKTIMEOUT},
        {"zk-auth", required_argument, NULL, O_ZKAUTH},
        {"hold-timeout", required_argument, NULL, O_HOLD},
        {"leave-timeout", required_argument, NULL, O_LEAVE},
        {"advertise", required_argument, NULL, O_ADVERTISE},
        {"max-connections", required_argument, NULL, O_MAXCONN},
        {"conn-idle-timeout", required_argument, NULL, O_CONNIDLE},
        {"max-unit-stream", required_argument, NULL, O_UNITSTREAM},
        {"http-header-timeout", required_argument, NULL, O_HTTPHDR},
        {"http-max-per-ip", required_argument, NULL, O_HTTPPERIP},
        {"tls-cert", required_argument, NULL, O_TLSCERT},
        {"tls-key", required_argument, NULL, O_TLSKEY},
        {"tls-ca", required_argument, NULL, O_TLSCA},
        {"tls-crl", required_argument, NULL, O_TLSCRL},
        {"auth-tokens", required_argument, NULL, O_AUTHTOKENS},
        {"insecure", no_argument, NULL, O_INSECURE},
        {"auth-conn-fails", required_argument, NULL, O_AUTHCONNFAILS},
        {"auth-addr-fails", required_argument, NULL, O_AUTHADDRFAILS},
        {"auth-fail-window", required_argument, NULL, O_AUTHWINDOW},
        {"replicas", required_argument, NULL, O_REPLICAS},
        {"repl-lag-ms", required_argument, NULL, O_REPLLAG},
        {"replica-dead-ms", required_argument, NULL, O_REPLDEAD},
        {"version", no_argument, NULL, O_VERSION},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0}};
    keel_node_options opts;
    const char *loads[32];
    int nloads = 0, c, rc, i;
    unsigned long long v;
    char err[1024];
    struct sigaction sa;
    int log_format = KEEL_LOG_FORMAT_TEXT;
    const char *log_file = NULL;

    keel_node_options_init(&opts);
    opts.listen = "127.0.0.1:7420";
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_DATA:
            opts.data_dir = optarg;
            break;
        case O_LISTEN:
            if (!keel_addr_valid(optarg, strlen(optarg), 1)) {
                fprintf(stderr,
                        "keeld: --listen takes HOST:PORT (a host name or IPv4 "
                        "address, a port from 0 to 65535, 0 for any free "
                        "one; the wire protocol does not listen on IPv6 "
                        "yet, --http does), not '%s'\n",
                        optarg);
                return 2;
            }
            opts.listen = optarg;
            break;
        case O_HTTP:
            if (!keel_http_addr_valid(optarg)) {
                fprintf(stderr,
                        "keeld: --http takes HOST:PORT or [IPV6]:PORT (a port "
                        "from 0 to 65535, 0 for any free one), not '%s'\n",
                        optarg);
                return 2;
            }
            opts.http_listen = optarg;
            break;
        case O_ACTLOG:
            opts.activation_log = optarg;
            break;
        case O_IDLE:
            if (parse_u64(optarg, 86400 * 365, &v) != 0 || v == 0) {
                fprintf(stderr, "keeld: --idle-timeout takes seconds > 0\n");
                return 2;
            }
            opts.idle_timeout_ms = (uint32_t)(v * 1000);
            break;
        case O_MAXRES:
            if (parse_u64(optarg, UINT32_MAX, &v) != 0) {
                fprintf(stderr, "keeld: --max-resident takes a count\n");
                return 2;
            }
            opts.max_resident = (uint32_t)v;
            break;
        case O_DUR:
            if (strcmp(optarg, "fsync") == 0)
                opts.durability = KEEL_DURABILITY_FSYNC;
            else if (strcmp(optarg, "none") == 0)
                opts.durability = KEEL_DURABILITY_NONE;
            else {
                fprintf(stderr, "keeld: --durability is fsync or none\n");
                return 2;
            }
            break;
        case O_SHARDS:
            if (parse_u64(optarg, 65536, &v) != 0 || v == 0) {
                fprintf(stderr, "keeld: --shards takes 1..65536\n");
                return 2;
            }
            opts.shard_count = (uint32_t)v;
            break;
        case O_FRAME:
            if (parse_u64(optarg, UINT32_MAX, &v) != 0 || v < 64) {
                fprintf(stderr, "keeld: --max-frame takes bytes >= 64\n");
                return 2;
            }
            opts.max_frame = (uint32_t)v;
            break;
        case O_MAP:
            if (parse_u64(optarg, 1ULL << 50, &v) != 0 || v < 65536) {
                fprintf(stderr, "keeld: --map-size takes bytes >= 65536\n");
                return 2;
            }
            opts.initial_map_size = v;
            break;
        case O_RECOVER:
            opts.recover_to_last_good = 1;
            break;
        case O_LOAD:
            if (optarg[0] == '\0' || optarg[0] == ':') {
                fprintf(stderr, "keeld: --load takes PATH.so[:ARGS]\n");
                return 2;
            }
            if (nloads == (int)(sizeof loads / sizeof loads[0])) {
                fprintf(stderr, "keeld: too many --load\n");
                return 2;
            }
            loads[nloads++] = optarg;
            break;
        case O_LOG:
            opts.log_level = parse_level(optarg);
            if (opts.log_level < 0) {
                fprintf(stderr,
                        "keeld: --log-level is error, warn, info or debug\n");
                return 2;
            }
            break;
        case O_LOGFORMAT:
            if (strcmp(optarg, "text") == 0)
                log_format = KEEL_LOG_FORMAT_TEXT;
            else if (strcmp(optarg, "json") == 0)
                log_format = KEEL_LOG_FORMAT_JSON;
            else {
                fprintf(stderr, "keeld: --log-format is text or json, not "
                                "'%s'\n",
                        optarg);
                return 2;
            }
            break;
        case O_LOGFILE:
            if (optarg[0] == '\0') {
                fprintf(stderr, "keeld: --log-file takes a path\n");
                return 2;
            }
            log_file = optarg;
            break;
        case O_ZK:
            opts.zk_hosts = optarg;
            break;
        case O_CLUSTER:
        case O_NODEID:
            /* Both name znodes in ZooKeeper and appear in every peer's
             * map: refused here with the rule, not later as EINVAL. */
            if (!keel_name_valid(optarg, 0)) {
                fprintf(stderr,
                        "keeld: --%s takes a name of 1 to %d letters, "
                        "digits, '.', '_' or '-' (neither '.' nor '..'), "
                        "not '%s'\n",
                        c == O_CLUSTER ? "cluster" : "node-id", KEEL_NAME_MAX,
                        optarg);
                return 2;
            }
            if (c == O_CLUSTER)
                opts.cluster = optarg;
            else
                opts.node_id = optarg;
            break;
        case O_CAPS:
            opts.capabilities = optarg;
            break;
        case O_ZKAUTH:
            opts.zk_auth = optarg;
            break;
        case O_ADVERTISE:
            /* Peers connect to it: refused now, not at each of their
             * connection attempts. */
            if (!keel_addr_valid(optarg, strlen(optarg), 0)) {
                fprintf(stderr,
                        "keeld: --advertise takes HOST:PORT (a host name or "
                        "IPv4 address, a port from 1 to 65535), not '%s'\n",
                        optarg);
                return 2;
            }
            opts.advertise = optarg;
            break;
        case O_ZKTIMEOUT:
            /* The lease needs room below the timeout (docs/cluster.md,
             * "Self-fencing and expiry"); the node would refuse less. */
            if (parse_u64(optarg, 600000, &v) != 0 || v < 1000) {
                fprintf(stderr,
                        "keeld: --zk-session-timeout takes ms >= 1000\n");
                return 2;
            }
            opts.zk_session_timeout_ms = (uint32_t)v;
            break;
        case O_HOLD:
        case O_LEAVE:
            if (parse_u64(optarg, 3600000, &v) != 0 || v < 1) {
                fprintf(stderr, "keeld: --%s takes ms from 1 to 3600000\n",
                        c == O_HOLD ? "hold-timeout" : "leave-timeout");
                return 2;
            }
            if (c == O_HOLD)
                opts.hold_timeout_ms = (uint32_t)v;
            else
                opts.leave_timeout_ms = (uint32_t)v;
            break;
        case O_MAXCONN:
        case O_HTTPPERIP:
            if (parse_u64(optarg, 1000000, &v) != 0 || v == 0) {
                fprintf(stderr, "keeld: --%s takes a count from 1 to "
                                "1000000\n",
                        c == O_MAXCONN ? "max-connections"
                                       : "http-max-per-ip");
                return 2;
            }
            if (c == O_MAXCONN)
                opts.max_connections = (uint32_t)v;
            else
                opts.http_max_per_ip = (uint32_t)v;
            break;
        case O_CONNIDLE:
            if (parse_u64(optarg, 86400 * 365, &v) != 0) {
                fprintf(stderr, "keeld: --conn-idle-timeout takes seconds "
                                "(0: never)\n");
                return 2;
            }
            opts.conn_idle_timeout_s = (uint32_t)v;
            break;
        case O_HTTPHDR:
            if (parse_u64(optarg, 3600, &v) != 0 || v == 0) {
                fprintf(stderr, "keeld: --http-header-timeout takes seconds "
                                "from 1 to 3600\n");
                return 2;
            }
            opts.http_header_timeout_s = (uint32_t)v;
            break;
        case O_UNITSTREAM:
            if (parse_u64(optarg, 1ULL << 40, &v) != 0 || v < (1u << 20)) {
                fprintf(stderr, "keeld: --max-unit-stream takes bytes >= "
                                "1048576\n");
                return 2;
            }
            opts.max_unit_stream = v;
            break;
        case O_TLSCERT:
            opts.tls_cert = optarg;
            break;
        case O_TLSKEY:
            opts.tls_key = optarg;
            break;
        case O_TLSCA:
            opts.tls_ca = optarg;
            break;
        case O_TLSCRL:
            opts.tls_crl = optarg;
            break;
        case O_AUTHTOKENS:
            opts.auth_tokens = optarg;
            break;
        case O_REPLICAS:
            if (parse_u64(optarg, 5, &v) != 0 || v < 1) {
                fprintf(stderr, "keeld: --replicas takes 1 to 5\n");
                return 2;
            }
            opts.replicas = (int)v;
            break;
        case O_REPLLAG:
            if (parse_u64(optarg, 3600000, &v) != 0 || v < 1) {
                fprintf(stderr,
                        "keeld: --repl-lag-ms takes ms from 1 to 3600000\n");
                return 2;
            }
            opts.repl_lag_ms = (uint32_t)v;
            break;
        case O_REPLDEAD:
            if (parse_u64(optarg, 86400000, &v) != 0 || v < 1) {
                fprintf(stderr, "keeld: --replica-dead-ms takes ms from 1 "
                                "to 86400000\n");
                return 2;
            }
            opts.replica_dead_ms = (uint32_t)v;
            break;
        case O_INSECURE:
            opts.insecure = 1;
            break;
        case O_AUTHCONNFAILS:
        case O_AUTHADDRFAILS:
        case O_AUTHWINDOW: {
            unsigned long long max = c == O_AUTHCONNFAILS ? 255
                                     : c == O_AUTHADDRFAILS ? 1000000
                                                            : 3600;
            if (parse_u64(optarg, max, &v) != 0 || v == 0) {
                fprintf(stderr, "keeld: --%s takes %s from 1 to %llu\n",
                        c == O_AUTHCONNFAILS   ? "auth-conn-fails"
                        : c == O_AUTHADDRFAILS ? "auth-addr-fails"
                                               : "auth-fail-window",
                        c == O_AUTHWINDOW ? "seconds" : "a count", max);
                return 2;
            }
            if (c == O_AUTHCONNFAILS)
                opts.auth_conn_fails = (uint32_t)v;
            else if (c == O_AUTHADDRFAILS)
                opts.auth_addr_fails = (uint32_t)v;
            else
                opts.auth_fail_window_s = (uint32_t)v;
            break;
        }
        case O_VERSION:
            printf("keeld %s\n", keel_version_string());
            return 0;
        case 'h':
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || opts.data_dir == NULL) {
        if (opts.data_dir == NULL)
            fprintf(stderr, "keeld: --data DIR is required\n");
        else
            fprintf(stderr, "keeld: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!data_parent_exists(opts.data_dir))
        return 2;

    if ((opts.tls_cert != NULL || opts.tls_key != NULL ||
         opts.tls_ca != NULL) &&
        (opts.tls_cert == NULL || opts.tls_key == NULL ||
         opts.tls_ca == NULL)) {
        fprintf(stderr, "keeld: TLS needs --tls-cert, --tls-key and "
                        "--tls-ca together\n");
        return 2;
    }
    if (opts.tls_crl != NULL && opts.tls_ca == NULL) {
        fprintf(stderr, "keeld: --tls-crl goes with --tls-cert, --tls-key "
                        "and --tls-ca\n");
        return 2;
    }
    if (opts.zk_hosts != NULL &&
        (opts.cluster == NULL || opts.node_id == NULL)) {
        fprintf(stderr, "keeld: --zk needs --cluster and --node-id\n");
        return 2;
    }
    if (opts.zk_hosts == NULL &&
        (opts.cluster != NULL || opts.node_id != NULL ||
         opts.capabilities != NULL || opts.advertise != NULL ||
         opts.zk_session_timeout_ms != 0 || opts.hold_timeout_ms != 0 ||
         opts.leave_timeout_ms != 0 || opts.max_unit_stream != 0 ||
         opts.zk_auth != NULL || opts.replicas != 0 ||
         opts.repl_lag_ms != 0 || opts.replica_dead_ms != 0)) {
        fprintf(stderr, "keeld: cluster options need --zk\n");
        return 2;
    }

    /* The log is set up before anything logs: the node's first lines go
     * where the rest will. */
    keel_log_set_format(log_format);
    if (opts.node_id != NULL)
        keel_log_set_node(opts.node_id);
    if (log_file != NULL) {
        rc = keel_log_open_file(log_file, err, sizeof err);
        if (rc != 0) {
            fprintf(stderr, "keeld: --log-file: %s\n", err);
            return 2;
        }
        log_to_file = 1;
    }
    log_elsewhere = log_to_file || log_format != KEEL_LOG_FORMAT_TEXT;

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

    {
        /* Through a plain pointer: the_node is volatile. */
        keel_node *created = NULL;
        rc = keel_node_create(&opts, &created, err, sizeof err);
        the_node = created;
    }
    if (rc != 0) {
        say(KEEL_LOG_ERROR, "cannot start: %s%s%s", keel_strerror(rc),
            err[0] ? ": " : "", err);
        return 1;
    }
    for (i = 0; i < nloads; i++) {
        /* PATH.so[:ARGS]: the path ends at the first ':'. */
        const char *colon = strchr(loads[i], ':');
        char *path = colon != NULL
                         ? strndup(loads[i], (size_t)(colon - loads[i]))
                         : strdup(loads[i]);
        if (path == NULL) {
            say(KEEL_LOG_ERROR, "--load %s: out of memory", loads[i]);
            keel_node_destroy(the_node);
            return 1;
        }
        err[0] = '\0';
        rc = keel_node_load_plugin_args(the_node, path,
                                        colon != NULL ? colon + 1 : NULL,
                                        err, sizeof err);
        free(path);
        if (rc != 0) {
            say(KEEL_LOG_ERROR, "--load %s: %s", loads[i], err);
            keel_node_destroy(the_node);
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
        keel_node_stats(the_node, &st);
        say(KEEL_LOG_INFO, "ready on port %d%s", keel_node_port(the_node),
            st.insecure ? " (INSECURE: no credentials, --insecure)" : "");
    }
    if (opts.http_listen != NULL)
        say(KEEL_LOG_INFO, "http on port %d", keel_node_http_port(the_node));
    rc = keel_node_run(the_node);
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
    if (rc != 0)
        say(KEEL_LOG_ERROR, "stopped: %s (%s); the log above says why",
            keel_strerror(rc), keel_err_name(rc));
    keel_node *n = the_node;
    the_node = NULL;
    keel_node_destroy(n);
    return rc == 0 ? 0 : 1;
}
