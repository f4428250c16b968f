/* keel-chaos — puts a keel cluster under faults and checks what its
 * clients saw against keel's promises (docs/chaos.md).
 *
 *   keel-chaos run [options]       start a cluster, drive clients, inject
 *                                  faults, heal, check, report
 *   keel-chaos check [options] DIR check a recorded run
 *   keel-chaos report [options] DIR
 *                                  write DIR/report.html again
 *
 * Exit status: 0 every check passed (or was skipped for lack of input),
 * 1 a violation, 2 bad input or usage, 3 linearizability undecided
 * within --max-states, 4 (run) the run could not be made. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chaos/checkdir.h"
#include "chaos/report.h"
#include "chaos/run.h"
#include "chaos/schedule.h"
#include "keel.h"

#ifndef KEEL_CHAOS_ZK_CONF
#define KEEL_CHAOS_ZK_CONF "zk-conf"
#endif

/* After a usage error: the error stays the last thing on the screen,
 * not buried above the whole option list. */
static void usage_hint(void)
{
    fprintf(stderr,
            "usage: keel-chaos run [options]\n"
            "       keel-chaos check [--max-states N] [--detail N] DIR\n"
            "       keel-chaos report [--max-states N] DIR\n"
            "Try 'keel-chaos --help' for every option.\n");
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keel-chaos run [options]\n"
            "       keel-chaos check [--max-states N] [--detail N] DIR\n"
            "       keel-chaos report [--max-states N] DIR\n"
            "       keel-chaos --version\n"
            "\n"
            "run: starts ZooKeeper and a cluster of keeld nodes, drives\n"
            "concurrent clients over the wire protocol, injects faults on a\n"
            "schedule made from the seed, heals everything, reads every actor\n"
            "once more, then checks the run and writes DIR/report.html.\n"
            "  --nodes N         keeld nodes (default 3)\n"
            "  --replicas R      replicas per unit, 1 to 5 (keeld --replicas;\n"
            "                    default 1); as with keeld, a unit has\n"
            "                    min(R, nodes) of them\n"
            "  --seconds S       how long the clients run (default 60)\n"
            "  --clients C       concurrent clients (default 8)\n"
            "  --actors A        actors they share (default 12)\n"
            "  --workload W      register, counter, set or mixed (default)\n"
            "  --load PLUGIN.so[:ARGS]  every node loads this plugin, with\n"
            "                    ARGS if given (keeld --load)\n"
            "  --workload-type T the actors are of type T (a plugin's), which\n"
            "                    answers as the built-in type of --workload\n"
            "                    does (register, counter, or kv for set)\n"
            "  --rate N          operations per second, all clients together\n"
            "                    (default 200; 0: as fast as they go)\n"
            "  --faults LIST     kill,stop,zk,controller,drain,join,partition,\n"
            "                    disk-full,wipe,zk-stop,pair, all or none\n"
            "                    (default kill,stop,zk; wipe only with\n"
            "                    --replicas > 1, pair with 3 nodes or more)\n"
            "  --zk-servers N    ZooKeeper servers: 1 (default) or 3, an\n"
            "                    ensemble; then zk and zk-stop hit one server\n"
            "                    at a time (sometimes the leader)\n"
            "  --partitions LIST partition shapes drawn from: from-peers,\n"
            "                    from-zk, majority, with-zk-server (a node\n"
            "                    and one ZooKeeper server cut from the rest;\n"
            "                    needs --zk-servers 3), or all (default: all\n"
            "                    that apply)\n"
            "  --seed N          the schedule's and the clients' seed (default 1)\n"
            "  --out DIR         the run directory (default chaos-run-SEED)\n"
            "  --keeld PATH      the node program (default: keeld beside this\n"
            "                    program)\n"
            "  --zk-conf DIR     where zk.sh is (default: ../zk-conf beside\n"
            "                    this program, else the one installed with\n"
            "                    it, else the source tree's)\n"
            "  --shards N        shards of the cluster (default 64)\n"
            "  --session-ms MS   the nodes' ZooKeeper session timeout (default\n"
            "                    2000)\n"
            "  --replica-dead-ms MS  how long a node may be gone before live\n"
            "                    nodes replace it in replica lists, and a\n"
            "                    copy no list names is kept (keeld's option;\n"
            "                    default: keeld's, 5 minutes, which a run\n"
            "                    rarely reaches)\n"
            "  --client-timeout-ms MS  a client's wait for an answer (default\n"
            "                    10000)\n"
            "  --node-arg ARG    one more keeld argument for every node, as\n"
            "                    given (--node-arg --durability=none); up to\n"
            "                    6\n"
            "  --keyed N         send every operation with a request key,\n"
            "                    and again with the same key (on the next\n"
            "                    node) up to N times while its outcome is\n"
            "                    unknown or says it did not run (default\n"
            "                    0: once, without a key)\n"
            "  --refusals PCT    make PCT%% of counter increments (0 to 50)\n"
            "                    by 2^62 or -2^62, which the counter\n"
            "                    refuses when they would overflow: refusals\n"
            "                    that depend on the value (default 0)\n"
            "  --keep-data       keep the nodes' and ZooKeeper's data\n"
            "  --max-states N    as for check\n"
            "\n"
            "check: checks a recorded run: DIR/history.jsonl (the clients'\n"
            "operations), DIR/actlogs/NODE.log (each node's activation\n"
            "log, optional) and DIR/digests.txt (the units' digests on each\n"
            "replica, optional), and prints a verdict per check:\n"
            "  linearizability         per actor, against its model\n"
            "  lost-writes             every acknowledged write is in the\n"
            "                          final reads\n"
            "  at-most-one-activation  no actor active on two nodes at once\n"
            "  replicas-agree          every unit's in-sync replicas hold the\n"
            "                          same records\n"
            "\n"
            "report: writes DIR/report.html again from the run's files: the\n"
            "verdicts, a timeline of the operations, faults and nodes, the\n"
            "operations a violation names, throughput and latency. One page,\n"
            "nothing fetched from elsewhere.\n"
            "\n"
            "options:\n"
            "  --max-states N  give up on an actor's linearizability after N\n"
            "                  configurations (undecided); default: no bound\n"
            "  --detail N      describe at most N violations per check\n"
            "                  (default 3)\n"
            "\n"
            "exit status: 0 passed (or skipped), 1 violation, 2 bad input\n"
            "or usage, 3 undecided within --max-states, 4 the run could not\n"
            "be made. docs/chaos.md has the formats and what each check\n"
            "proves.\n");
}

static int number(const char *opt, const char *s, unsigned long long *out)
{
    char *end;

    if (s[0] < '0' || s[0] > '9')
        goto bad;
    *out = strtoull(s, &end, 10);
    if (*end == '\0')
        return 0;
bad:
    fprintf(stderr, "keel-chaos: %s takes a number, not '%s'\n", opt, s);
    return -1;
}

/* The directory of this program, into buf ("" when unknown). */
static void self_dir(char *buf, size_t cap)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);

    buf[0] = '\0';
    if (n <= 0)
        return;
    exe[n] = '\0';
    snprintf(buf, cap, "%s", dirname(exe));
}

static int int_opt(const char *opt, const char *s, long long lo, long long hi,
                   long long *out)
{
    unsigned long long v;

    if (number(opt, s, &v) != 0)
        return -1;
    if ((long long)v < lo || (long long)v > hi) {
        fprintf(stderr, "keel-chaos: %s must lie within %lld and %lld\n",
                opt, lo, hi);
        return -1;
    }
    *out = (long long)v;
    return 0;
}

/* keeld options the run sets itself, each from its own option or its
 * layout of the cluster: --node-arg must not give them again. */
static const char *const owned[] = {
    "--data", "--listen", "--zk", "--cluster", "--node-id",
    "--zk-session-timeout", "--shards", "--activation-log", "--replicas",
    "--load", "--insecure", "--replica-dead-ms", "--config"};

/* One --node-arg: 0, or -1 after saying why not. */
static int node_arg(chaos_run_opts *o, const char *arg)
{
    size_t k, n = strcspn(arg, "=");

    if (o->nnode_args >= CHAOS_NODE_ARGS_MAX) {
        fprintf(stderr, "keel-chaos: --node-arg: at most %d\n",
                CHAOS_NODE_ARGS_MAX);
        return -1;
    }
    for (k = 0; k < sizeof owned / sizeof *owned; k++)
        if (strlen(owned[k]) == n && strncmp(arg, owned[k], n) == 0) {
            fprintf(stderr, "keel-chaos: --node-arg %s: the run sets %s "
                            "itself%s\n",
                    arg, owned[k],
                    strcmp(owned[k], "--load") == 0
                        ? " (give it to keel-chaos run: --load "
                          "PLUGIN.so[:ARGS])"
                    : strcmp(owned[k], "--replicas") == 0 ||
                            strcmp(owned[k], "--replica-dead-ms") == 0
                        ? " (give it to keel-chaos run)"
                        : "");
            return -1;
        }
    o->node_args[o->nnode_args++] = arg;
    return 0;
}

/* --load PATH.so[:ARGS], as keeld takes it: the path ends at the first
 * ':' and must name a file; the nodes may start elsewhere than here, so
 * they get it absolute, with the ARGS as given. 0, or -1 after saying
 * why not. */
static int load_opt(const char *arg, char *out, size_t cap)
{
    const char *colon = strchr(arg, ':');
    size_t plen = colon != NULL ? (size_t)(colon - arg) : strlen(arg);
    char path[PATH_MAX], abs[PATH_MAX];

    if (plen == 0 || plen >= sizeof path) {
        fprintf(stderr, "keel-chaos: --load %s: give PATH.so or "
                        "PATH.so:ARGS\n",
                arg);
        return -1;
    }
    memcpy(path, arg, plen);
    path[plen] = '\0';
    if (realpath(path, abs) == NULL) {
        fprintf(stderr, "keel-chaos: --load %s: no such file %s%s\n", arg,
                path,
                colon != NULL ? " (the path ends at the first ':', the "
                                "plugin's ARGS follow it)"
                              : "");
        return -1;
    }
    if ((size_t)snprintf(out, cap, "%s%s", abs, colon != NULL ? colon : "") >=
        cap) {
        fprintf(stderr, "keel-chaos: --load %s: too long\n", arg);
        return -1;
    }
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    enum {
        O_NODES = 256, O_REPLICAS, O_SECONDS, O_CLIENTS, O_ACTORS,
        O_WORKLOAD, O_FAULTS, O_SEED, O_OUT, O_KEELD, O_ZKCONF, O_RATE,
        O_SHARDS, O_SESSION, O_CTIMEOUT, O_KEEP, O_MAXSTATES, O_LOAD,
        O_WTYPE, O_KEYED, O_ZKSERVERS, O_PARTITIONS, O_REPLDEAD, O_NODEARG,
        O_REFUSALS
    };
    static const struct option longopts[] = {
        {"nodes", required_argument, NULL, O_NODES},
        {"replicas", required_argument, NULL, O_REPLICAS},
        {"seconds", required_argument, NULL, O_SECONDS},
        {"clients", required_argument, NULL, O_CLIENTS},
        {"actors", required_argument, NULL, O_ACTORS},
        {"workload", required_argument, NULL, O_WORKLOAD},
        {"faults", required_argument, NULL, O_FAULTS},
        {"seed", required_argument, NULL, O_SEED},
        {"out", required_argument, NULL, O_OUT},
        {"keeld", required_argument, NULL, O_KEELD},
        {"zk-conf", required_argument, NULL, O_ZKCONF},
        {"rate", required_argument, NULL, O_RATE},
        {"shards", required_argument, NULL, O_SHARDS},
        {"session-ms", required_argument, NULL, O_SESSION},
        {"replica-dead-ms", required_argument, NULL, O_REPLDEAD},
        {"node-arg", required_argument, NULL, O_NODEARG},
        {"client-timeout-ms", required_argument, NULL, O_CTIMEOUT},
        {"keyed", required_argument, NULL, O_KEYED},
        {"refusals", required_argument, NULL, O_REFUSALS},
        {"zk-servers", required_argument, NULL, O_ZKSERVERS},
        {"partitions", required_argument, NULL, O_PARTITIONS},
        {"keep-data", no_argument, NULL, O_KEEP},
        {"max-states", required_argument, NULL, O_MAXSTATES},
        {"load", required_argument, NULL, O_LOAD},
        {"workload-type", required_argument, NULL, O_WTYPE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    static char load[PATH_MAX + 4096];
    static char keeld[PATH_MAX + 16], zkconf[PATH_MAX + 32], out[64];
    char self[PATH_MAX], probe[PATH_MAX + 48], err[256];
    chaos_run_opts o;
    long long v;
    unsigned long long u;
    int c, rc;

    chaos_run_opts_init(&o);
    self_dir(self, sizeof self);
    snprintf(keeld, sizeof keeld, "%s/keeld", self);
    /* A build directory inside the source tree finds zk-conf beside it;
     * an installed program, the copy installed with it; otherwise the
     * source tree this program was built from. */
    snprintf(zkconf, sizeof zkconf, "%s/../zk-conf", self);
    snprintf(probe, sizeof probe, "%s/zk.sh", zkconf);
#ifdef KEEL_ZK_CONF_FROM_BIN
    if (access(probe, R_OK) != 0) {
        snprintf(zkconf, sizeof zkconf, "%s/%s", self, KEEL_ZK_CONF_FROM_BIN);
        snprintf(probe, sizeof probe, "%s/zk.sh", zkconf);
    }
#endif
    if (access(probe, R_OK) != 0)
        snprintf(zkconf, sizeof zkconf, "%s", KEEL_CHAOS_ZK_CONF);
    o.keeld = keeld;
    o.zk_conf = zkconf;
    optind = 2;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_NODES:
            if (int_opt("--nodes", optarg, 1, 15, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.nodes = (int)v;
            break;
        case O_REPLICAS:
            if (int_opt("--replicas", optarg, 1, 5, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.replicas = (int)v;
            break;
        case O_SECONDS:
            if (int_opt("--seconds", optarg, 1, 7 * 86400, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.seconds = v;
            break;
        case O_CLIENTS:
            if (int_opt("--clients", optarg, 1, 1024, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.clients = (int)v;
            break;
        case O_ACTORS:
            if (int_opt("--actors", optarg, 1, 100000, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.actors = (int)v;
            break;
        case O_WORKLOAD:
            if (chaos_workload_parse(optarg, &o.workload) != 0) {
                fprintf(stderr, "keel-chaos: --workload: register, counter, "
                                "set or mixed, not '%s'\n",
                        optarg);
                return CHAOS_EXIT_BAD_INPUT;
            }
            break;
        case O_FAULTS:
            if (chaos_faults_parse(optarg, &o.faults, err, sizeof err) != 0) {
                fprintf(stderr, "keel-chaos: --faults: %s\n", err);
                return CHAOS_EXIT_BAD_INPUT;
            }
            break;
        case O_SEED:
            if (number("--seed", optarg, &u) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.seed = u;
            break;
        case O_OUT:
            o.out = optarg;
            break;
        case O_KEELD:
            o.keeld = optarg;
            break;
        case O_ZKCONF:
            o.zk_conf = optarg;
            break;
        case O_RATE:
            if (int_opt("--rate", optarg, 0, 1000000, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.rate = (int)v;
            break;
        case O_SHARDS:
            if (int_opt("--shards", optarg, 1, 65536, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.shards = (int)v;
            break;
        case O_SESSION:
            if (int_opt("--session-ms", optarg, 1000, 600000, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.session_ms = (int)v;
            break;
        case O_REPLDEAD:
            if (int_opt("--replica-dead-ms", optarg, 1, 86400000, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.replica_dead_ms = (int)v;
            break;
        case O_CTIMEOUT:
            if (int_opt("--client-timeout-ms", optarg, 100, 3600000, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.client_timeout_ms = (int)v;
            break;
        case O_KEYED:
            if (int_opt("--keyed", optarg, 0, 1000, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.keyed = (int)v;
            break;
        case O_REFUSALS:
            if (int_opt("--refusals", optarg, 0, 50, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.refusals = (int)v;
            break;
        case O_ZKSERVERS:
            if (number("--zk-servers", optarg, &u) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            if (u != 1 && u != 3) {
                fprintf(stderr, "keel-chaos: --zk-servers takes 1 or 3, not "
                                "%s\n",
                        optarg);
                return CHAOS_EXIT_BAD_INPUT;
            }
            o.zk_servers = (int)u;
            break;
        case O_PARTITIONS:
            if (chaos_shapes_parse(optarg, &o.shapes, err, sizeof err) != 0) {
                fprintf(stderr, "keel-chaos: --partitions: %s\n", err);
                return CHAOS_EXIT_BAD_INPUT;
            }
            break;
        case O_KEEP:
            o.keep_data = 1;
            break;
        case O_MAXSTATES:
            if (number("--max-states", optarg, &u) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.max_states = u;
            break;
        case O_LOAD:
            if (load_opt(optarg, load, sizeof load) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.load = load;
            break;
        case O_WTYPE:
            o.workload_type = optarg;
            break;
        case O_NODEARG:
            if (node_arg(&o, optarg) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage_hint();
            return CHAOS_EXIT_BAD_INPUT;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "keel-chaos: run takes options only, not '%s'\n",
                argv[optind]);
        usage_hint();
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (o.out == NULL) {
        snprintf(out, sizeof out, "chaos-run-%llu",
                 (unsigned long long)o.seed);
        o.out = out;
    }
    rc = chaos_run(&o, stdout, stderr);
    if (rc > 128 && rc < 128 + 32) {
        /* Interrupted and cleaned up: end as the signal would have, so
         * that a shell loop around the run stops too. */
        fflush(NULL);
        signal(rc - 128, SIG_DFL);
        raise(rc - 128);
    }
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"max-states", required_argument, NULL, 's'},
        {"detail", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    chaos_check_opts o;
    unsigned long long v;
    int c;

    chaos_check_opts_init(&o);
    if (argc < 2) {
        fprintf(stderr, "keel-chaos: no command given (run, check or "
                        "report)\n");
        usage_hint();
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("keel-chaos %s\n", keel_version_string());
        return 0;
    }
    if (strcmp(argv[1], "run") == 0)
        return cmd_run(argc, argv);
    if (strcmp(argv[1], "check") != 0 && strcmp(argv[1], "report") != 0) {
        fprintf(stderr, "keel-chaos: unknown command '%s'\n", argv[1]);
        usage_hint();
        return CHAOS_EXIT_BAD_INPUT;
    }
    optind = 2;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (number("--max-states", optarg, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.max_states = v;
            break;
        case 'd':
            if (number("--detail", optarg, &v) != 0)
                return CHAOS_EXIT_BAD_INPUT;
            o.max_detail = (size_t)v;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage_hint();
            return CHAOS_EXIT_BAD_INPUT;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "keel-chaos: %s takes one directory\n", argv[1]);
        usage_hint();
        return CHAOS_EXIT_BAD_INPUT;
    }
    /* Said the same way by both: for report, the page is written beside
     * the run's files, and a DIR that is not there would otherwise be
     * reported as the page's temporary file that could not be made. */
    {
        struct stat st;

        if (stat(argv[optind], &st) != 0) {
            fprintf(stderr, "keel-chaos: %s: no run directory %s (%s)\n",
                    argv[1], argv[optind], strerror(errno));
            return CHAOS_EXIT_BAD_INPUT;
        }
        if (!S_ISDIR(st.st_mode)) {
            fprintf(stderr, "keel-chaos: %s: %s is not a directory: "
                            "give the run directory\n",
                    argv[1], argv[optind]);
            return CHAOS_EXIT_BAD_INPUT;
        }
    }
    if (strcmp(argv[1], "report") == 0) {
        /* Exit 0 once the page is written, whatever it says: check
         * gives the verdict's status. */
        if (chaos_report_write(argv[optind], &o, stderr) != 0)
            return CHAOS_EXIT_BAD_INPUT;
        printf("%s/report.html\n", argv[optind]);
        return 0;
    }
    return chaos_check_dir(argv[optind], &o, stdout, stderr);
}
