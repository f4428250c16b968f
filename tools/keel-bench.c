/* keel-bench — throughput, latency and memory of a keel node.
 *
 *   keel-bench [--durability fsync|none] [--transport inproc|tcp|tls|tcp+tls]
 *              [--tls-ca FILE --tls-cert FILE --tls-key FILE] [--json]
 *              [--data DIR] [--runs N] [--connections N]
 *              [--perf-ctl CTL[,ACK]] [WORKLOAD...]
 *
 * Every workload starts its own node on a fresh data directory, in this
 * process. With --transport inproc the workload drives the node through
 * the C API from the loop thread (keel_call/keel_cast with a window of
 * calls in flight, each completion issuing the next call); with --transport
 * tcp the node also listens on 127.0.0.1 and the workload drives it over
 * the wire protocol from the main thread, pipelined, its connections
 * multiplexed by poll(); --transport tls is the same over TLS 1.3 (the
 * node serves --tls-cert/--tls-key, the connections verify it against
 * --tls-ca and present the same certificate: mutual TLS, as between
 * nodes), and tcp+tls runs each workload over both, one after the other,
 * for a comparison in one table. Latency is taken per call, from just before the
 * call is handed to keel (or written to the socket) to its completion.
 *
 * Every call is checked: an error reply, a wrong reply or a wrong final
 * counter value fails the workload, and keel-bench exits 1. A benchmark
 * that measures errors is worse than none.
 *
 * docs/benchmarks.md describes the workloads, the figures and how to read
 * them. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keel-bench-flush.h"
#include "chaos/cluster.h"
#include "keel.h"
#include "runtime/client.h"
#include "runtime/proto.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2

#define PHASE_TIMEOUT_S 600   /* a phase that takes longer has hung */
#define POLL_TIMEOUT_MS 60000 /* no reply on any connection for this long */
#define CONNECT_TIMEOUT_MS 10000
#define MAX_RUNS 15
#define MAX_EXTRA 14
#define MAX_RESULTS 6

/* --------------------------------------------------------------- helpers */

static const char *prog = "keel-bench";

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2),
                                                     noreturn));

/* For conditions the benchmark cannot recover from (a phase that hangs
 * while the loop thread may still use its memory, out of memory). */
static void die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_FAILED);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (p == NULL)
        die("out of memory");
    return p;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Writes the decimal digits of v at p; returns how many. snprintf would
 * cost more than the call being measured. */
static size_t put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0, i;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

/* Parses a reply that should be a decimal integer. */
static int parse_reply_i64(const void *reply, size_t len, int64_t *out)
{
    const char *s = reply;
    int64_t v = 0;
    size_t i = 0;
    int neg = 0;

    if (len > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == len || len - i > 18)
        return -1;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

    return (a > b) - (a < b);
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;

    return (a > b) - (a < b);
}

/* Resident and shared (file-backed) pages of this process. */
static int read_statm(uint64_t *resident, uint64_t *shared)
{
    unsigned long long size, res, shr;
    FILE *f = fopen("/proc/self/statm", "r");
    int ok;

    if (f == NULL)
        return -1;
    ok = fscanf(f, "%llu %llu %llu", &size, &res, &shr) == 3;
    fclose(f);
    if (!ok)
        return -1;
    *resident = res;
    *shared = shr;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "%s: cannot remove %s: %s\n", prog, path,
                strerror(errno));
    return 0;
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Is an executable called name on $PATH? */
static int on_path(const char *name)
{
    const char *path = getenv("PATH"), *p, *colon;
    char buf[PATH_MAX];

    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (p = path; *p != '\0'; p = *colon ? colon + 1 : colon) {
        size_t len;

        colon = strchr(p, ':');
        if (colon == NULL)
            colon = p + strlen(p);
        len = (size_t)(colon - p);
        if (len > 0 && len + strlen(name) + 2 <= sizeof buf) {
            memcpy(buf, p, len);
            buf[len] = '/';
            strcpy(buf + len + 1, name);
            if (access(buf, X_OK) == 0)
                return 1;
        }
    }
    return 0;
}

/* --------------------------------------------------------------- config */

enum transport { T_INPROC = 0, T_TCP = 1, T_TLS = 2, T_TCP_TLS = 3 };

struct config {
    int durability;     /* enum keel_durability */
    int transport;      /* enum transport */
    int json;
    const char *data;   /* parent of the data directories; NULL: $TMPDIR */
    int runs;
    unsigned connections; /* TCP connections per pipelined workload */
    const char *tls_ca, *tls_cert, *tls_key; /* --transport tls */
    int progress;       /* progress lines on stderr */
    const char *token;  /* --token: the node requires it (an admin token
                         * in a token file), every connection presents it */
    /* The cluster workloads (replication, failover, catchup, outbox): */
    const char *keeld;  /* the node program */
    const char *zk_conf; /* the directory of zk.sh */
    int shards;         /* --shards of the cluster */
    int session_ms;     /* --zk-session-timeout of its nodes */
    int rounds;         /* failover: kills */
    int catchup_mb;     /* catchup: MiB of entries the cluster holds */
    const char *catchup_rate; /* catchup: keeld --catchup-mib-s, or NULL */
    unsigned repl_loads; /* replication: bit l runs load l (hot, create,
                          * latency) */
    const char *outbox_plugin; /* outbox: the actor types its nodes load */
};

static const char *durability_name(int d)
{
    return d == KEEL_DURABILITY_NONE ? "none" : "fsync";
}

static const char *transport_name(int t)
{
    return t == T_TCP       ? "tcp"
           : t == T_TLS     ? "tls"
           : t == T_TCP_TLS ? "tcp+tls"
                            : "inproc";
}

/* ---------------------------------------------------------------- phases */

/* One call to make: a message for an actor. Pointers are valid until the
 * next op is generated. */
struct op {
    const char *type;
    const char *msg;
    size_t len;
    size_t idlen;
    char id[96];
    char msgbuf[96];
};

struct phase;
typedef void (*gen_fn)(const struct phase *ph, uint64_t i, struct op *op);
/* Returns 0 when the reply to op i is right; otherwise writes why. */
typedef int (*check_fn)(const struct phase *ph, uint64_t i, const void *reply,
                        size_t len, char *why, size_t whylen);

/* A phase: ops calls (or casts), at most window in flight. Op i is built
 * by gen(i); with the default generator it goes to actor type/prefix<k>,
 * k = (i, or i % mod) * stride + base, with message msg. */
struct phase {
    const char *name;
    uint64_t ops;
    unsigned window;   /* inproc: calls in flight; tcp: per connection
                        * when per_conn is set, else spread over them */
    int per_conn;
    unsigned conns;    /* tcp connections; 0: the configured number */
    int cast;
    gen_fn gen;
    check_fn check;
    const char *type;
    const char *prefix; /* NULL: the one actor called fixed_id */
    const char *fixed_id;
    uint64_t mod, stride, base;
    const char *msg;
    const char *expect; /* for check_expect */
    int64_t lo, hi;     /* for check_range */
    uint8_t *seen;      /* for check_distinct: values lo..hi seen once */

    /* Results. lat_ns has ops entries, or is NULL: not recorded. */
    uint64_t *lat_ns;
    double secs;
    uint64_t failed;
    char first_err[320];
};

static void phase_init(struct phase *ph, const char *name, uint64_t ops,
                       unsigned window)
{
    memset(ph, 0, sizeof *ph);
    ph->name = name;
    ph->ops = ops;
    ph->window = window;
}

static void phase_fini(struct phase *ph)
{
    free(ph->lat_ns);
    ph->lat_ns = NULL;
    free(ph->seen);
    ph->seen = NULL;
}

static void phase_record_latency(struct phase *ph)
{
    ph->lat_ns = xcalloc(ph->ops, sizeof *ph->lat_ns);
}

#define NO_OP UINT64_MAX /* a failure of the connection, not of one op */

/* Records a failure of op i; the first failure's text is kept. */
static void phase_fail(struct phase *ph, uint64_t i, int code,
                       const void *msg, size_t len)
{
    char where[32] = "";

    if (i != NO_OP)
        snprintf(where, sizeof where, "op %" PRIu64 ": ", i);
    if (ph->failed++ == 0)
        snprintf(ph->first_err, sizeof ph->first_err, "%s: %s%s: %.*s",
                 ph->name, where, code ? keel_err_name(code) : "bad reply",
                 (int)len, (const char *)msg);
}

static void gen_default(const struct phase *ph, uint64_t i, struct op *op)
{
    uint64_t k = (ph->mod ? i % ph->mod : i) * (ph->stride ? ph->stride : 1);
    size_t pl;

    op->type = ph->type;
    if (ph->prefix == NULL) {
        pl = strlen(ph->fixed_id);
        memcpy(op->id, ph->fixed_id, pl);
        op->idlen = pl;
    } else {
        pl = strlen(ph->prefix);
        memcpy(op->id, ph->prefix, pl);
        op->idlen = pl + put_u64(op->id + pl, k + ph->base);
    }
    op->msg = ph->msg;
    op->len = strlen(ph->msg);
}

static int check_expect(const struct phase *ph, uint64_t i, const void *reply,
                        size_t len, char *why, size_t whylen)
{
    (void)i;
    if (len == strlen(ph->expect) && memcmp(reply, ph->expect, len) == 0)
        return 0;
    snprintf(why, whylen, "reply '%.*s', expected '%s'", (int)len,
             (const char *)reply, ph->expect);
    return -1;
}

static int check_range(const struct phase *ph, uint64_t i, const void *reply,
                       size_t len, char *why, size_t whylen)
{
    int64_t v;

    (void)i;
    if (parse_reply_i64(reply, len, &v) == 0 && v >= ph->lo && v <= ph->hi)
        return 0;
    snprintf(why, whylen, "reply '%.*s', expected %" PRId64 "..%" PRId64,
             (int)len, (const char *)reply, ph->lo, ph->hi);
    return -1;
}

/* Round-robin increments of mod counters that each start at lo - 1: the
 * calls of one counter are 'mod' ops apart, so they run in order and op i
 * sees lo + i / mod. */
static int check_round_robin(const struct phase *ph, uint64_t i,
                             const void *reply, size_t len, char *why,
                             size_t whylen)
{
    int64_t v, want = ph->lo + (int64_t)(i / ph->mod);

    if (parse_reply_i64(reply, len, &v) == 0 && v == want)
        return 0;
    snprintf(why, whylen, "reply '%.*s', expected %" PRId64, (int)len,
             (const char *)reply, want);
    return -1;
}

/* Each value lo..hi exactly once: increments of one counter. */
static int check_distinct(const struct phase *ph, uint64_t i,
                          const void *reply, size_t len, char *why,
                          size_t whylen)
{
    int64_t v = 0;

    if (check_range(ph, i, reply, len, why, whylen) != 0)
        return -1;
    parse_reply_i64(reply, len, &v);
    if (ph->seen[v - ph->lo]++ == 0)
        return 0;
    snprintf(why, whylen, "value %" PRId64 " returned twice", v);
    return -1;
}

static void check_reply(struct phase *ph, uint64_t i, const void *reply,
                        size_t len)
{
    char why[256];

    if (ph->check != NULL && ph->check(ph, i, reply, len, why, sizeof why))
        phase_fail(ph, i, 0, why, strlen(why));
}

/* Latency summary of a phase, in microseconds. */
struct lat {
    double avg, p50, p95, p99, max;
};

static double rank(const uint64_t *sorted, uint64_t n, double q)
{
    uint64_t r = (uint64_t)ceil(q * (double)n);

    if (r == 0)
        r = 1;
    return (double)sorted[r - 1] / 1000.0;
}

static void phase_latency(const struct phase *ph, struct lat *out)
{
    uint64_t *v, i;
    double sum = 0;

    memset(out, 0, sizeof *out);
    if (ph->lat_ns == NULL || ph->ops == 0)
        return;
    v = xcalloc(ph->ops, sizeof *v);
    memcpy(v, ph->lat_ns, ph->ops * sizeof *v);
    qsort(v, ph->ops, sizeof *v, cmp_u64);
    for (i = 0; i < ph->ops; i++)
        sum += (double)v[i];
    out->avg = sum / (double)ph->ops / 1000.0;
    out->p50 = rank(v, ph->ops, 0.50);
    out->p95 = rank(v, ph->ops, 0.95);
    out->p99 = rank(v, ph->ops, 0.99);
    out->max = (double)v[ph->ops - 1] / 1000.0;
    free(v);
}

/* ------------------------------------------------------------ the node */

/* A TCP connection of the driver. keel_client connects and sends; replies
 * are read here without blocking, so one thread can wait on many
 * connections with poll(). */
struct tconn {
    keel_client *c;
    int fd;
    uint8_t *rbuf;
    size_t rlen, rcap;
    unsigned inflight;
    uint64_t *fresh; /* ops queued since the last flush */
    size_t nfresh, fresh_cap;
};

/* Where a cluster's units are: per shard of the default capability the
 * connection (env.conns) of its primary, as a client that read the map
 * would send. */
struct route {
    uint32_t shards;
    int owner[65536];
    unsigned nnodes;
    char addr[8][64]; /* the nodes, in the order of env.conns */
};

static unsigned route_op(const struct route *rt, const struct op *op)
{
    uint32_t s = keel_shard_of(op->type, op->id, op->idlen, rt->shards);

    return rt->owner[s] >= 0 ? (unsigned)rt->owner[s] : 0;
}

/* One node on a fresh data directory, for one run of one workload. */
struct env {
    const struct config *cfg;
    int transport;
    keel_node *node;
    char dir[PATH_MAX];
    char addr[64];
    int http_port; /* the node's HTTP listener, or 0 */
    char token_file[PATH_MAX + 16]; /* --token: the node's token file */
    struct tconn *conns;
    unsigned nconns;
    /* Cluster workloads: conns[k] reaches the k-th node, and route sends
     * each op to its unit's primary; NULL for a node of this process. */
    const struct route *route;
};

static int bench_rem_message(keel_turn *t, const void *msg, size_t len);

static int env_open(struct env *e, const struct config *cfg, int transport,
                    uint32_t idle_timeout_ms, int http)
{
    keel_node_options o;
    char err[256];
    const char *parent = cfg->data;
    int rc;

    memset(e, 0, sizeof *e);
    e->cfg = cfg;
    e->transport = transport;
    if (parent == NULL) {
        parent = getenv("TMPDIR");
        if (parent == NULL || parent[0] == '\0')
            parent = "/tmp";
    } else if (mkdir(parent, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: cannot create %s: %s\n", prog, parent,
                strerror(errno));
        return -1;
    }
    if ((size_t)snprintf(e->dir, sizeof e->dir, "%s/keel-bench-XXXXXX",
                         parent) >= sizeof e->dir ||
        mkdtemp(e->dir) == NULL) {
        fprintf(stderr, "%s: cannot create a directory in %s: %s\n", prog,
                parent, strerror(errno));
        return -1;
    }
    /* Write back what earlier runs left dirty (removed data directories,
     * pages of durability none) so that it does not compete with this
     * run's fsyncs. */
    sync();
    keel_node_options_init(&o);
    o.data_dir = e->dir;
    o.durability = cfg->durability;
    o.log_level = KEEL_LOG_WARN;
    o.idle_timeout_ms = idle_timeout_ms;
    if (transport != T_INPROC)
        o.listen = "127.0.0.1:0";
    if (transport == T_TLS) {
        o.tls_cert = cfg->tls_cert;
        o.tls_key = cfg->tls_key;
        o.tls_ca = cfg->tls_ca;
    }
    if (http)
        o.http_listen = "127.0.0.1:0";
    if (cfg->token != NULL) {
        /* Measures the node with its access checks on. The file sits in
         * the data directory, which mkdtemp made 0700. */
        FILE *tf;
        int tfd;
        snprintf(e->token_file, sizeof e->token_file, "%s/auth-tokens",
                 e->dir);
        tfd = open(e->token_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                   0600);
        tf = tfd >= 0 ? fdopen(tfd, "w") : NULL;
        if (tf == NULL || fprintf(tf, "%s admin\n", cfg->token) < 0 ||
            fclose(tf) != 0) {
            fprintf(stderr, "%s: cannot write %s\n", prog, e->token_file);
            rm_rf(e->dir);
            return -1;
        }
        o.auth_tokens = e->token_file;
    }
    rc = keel_node_create(&o, &e->node, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot create the node: %s: %s\n", prog,
                keel_err_name(rc), err[0] ? err : keel_strerror(rc));
        rm_rf(e->dir);
        return -1;
    }
    {
        /* The reminders workload's actors. */
        keel_actor_type rt = {.name = "bench-rem",
                              .on_message = bench_rem_message};
        rc = keel_node_register_type(e->node, &rt);
        if (rc != 0) {
            fprintf(stderr, "%s: cannot register bench-rem: %s\n", prog,
                    keel_strerror(rc));
            keel_node_destroy(e->node);
            rm_rf(e->dir);
            return -1;
        }
    }
    rc = keel_node_start(e->node);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot start the node: %s\n", prog,
                keel_strerror(rc));
        keel_node_destroy(e->node);
        rm_rf(e->dir);
        return -1;
    }
    snprintf(e->addr, sizeof e->addr, "127.0.0.1:%d",
             keel_node_port(e->node));
    e->http_port = keel_node_http_port(e->node);
    return 0;
}

static void env_close(struct env *e)
{
    unsigned i;

    for (i = 0; i < e->nconns; i++) {
        if (e->conns[i].c != NULL)
            keel_client_close(e->conns[i].c);
        free(e->conns[i].rbuf);
        free(e->conns[i].fresh);
    }
    free(e->conns);
    e->conns = NULL;
    e->nconns = 0;
    if (e->node != NULL) {
        keel_node_stop(e->node);
        keel_node_destroy(e->node); /* joins the loop thread */
        e->node = NULL;
    }
    if (e->dir[0] != '\0')
        rm_rf(e->dir);
}

/* Makes sure at least n connections are open. */
static int env_connect(struct env *e, unsigned n)
{
    if (n <= e->nconns)
        return 0;
    e->conns = realloc(e->conns, n * sizeof *e->conns);
    if (e->conns == NULL)
        die("out of memory");
    while (e->nconns < n) {
        struct tconn *tc = &e->conns[e->nconns];
        int rc;

        keel_client_tls tls;
        char why[512];

        memset(tc, 0, sizeof *tc);
        memset(&tls, 0, sizeof tls);
        tls.ca = e->cfg->tls_ca;
        tls.cert = e->cfg->tls_cert;
        tls.key = e->cfg->tls_key;
        rc = keel_client_connect_tls(e->addr, CONNECT_TIMEOUT_MS,
                                     e->transport == T_TLS ? &tls : NULL,
                                     &tc->c, why, sizeof why);
        if (rc != 0) {
            fprintf(stderr, "%s: cannot connect to %s: %s%s%s\n", prog,
                    e->addr, keel_strerror(rc), why[0] ? ": " : "", why);
            return -1;
        }
        if (e->cfg->token != NULL &&
            (rc = keel_client_auth(tc->c, e->cfg->token, NULL, NULL)) != 0) {
            fprintf(stderr, "%s: the node refused the token: %s\n", prog,
                    keel_strerror(rc));
            keel_client_close(tc->c);
            return -1;
        }
        tc->fd = keel_client_fd(tc->c);
        tc->rcap = 1u << 20;
        tc->rbuf = xcalloc(1, tc->rcap);
        e->nconns++;
    }
    return 0;
}

/* ------------------------------------------------------- inproc driver */

/* Runs on the loop thread: every completion issues the next call from the
 * same slot, so the window stays full without any other thread. */
struct inproc_run;

struct islot {
    struct inproc_run *r;
    uint64_t i;
    uint64_t t0;
};

struct inproc_run {
    keel_node *node;
    struct phase *ph;
    struct islot *slots;
    uint64_t next, done;
    uint64_t t_start, t_end;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished;
};

static void inproc_done_cb(int status, const void *reply, size_t len,
                           void *data);

static void inproc_finish(struct inproc_run *r)
{
    r->t_end = now_ns();
    pthread_mutex_lock(&r->mu);
    r->finished = 1;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Issues the next op from slot s, if any is left. */
static void inproc_issue(struct inproc_run *r, struct islot *s)
{
    struct phase *ph = r->ph;
    struct op op;
    int rc;

    while (r->next < ph->ops) {
        s->i = r->next++;
        ph->gen(ph, s->i, &op);
        s->t0 = now_ns();
        rc = (ph->cast ? keel_cast : keel_call)(r->node, op.type, op.id,
                                                op.idlen, op.msg, op.len,
                                                inproc_done_cb, s);
        if (rc == 0)
            return;
        phase_fail(ph, s->i, rc, "not queued", 10);
        if (++r->done == ph->ops)
            inproc_finish(r);
    }
}

static void inproc_done_cb(int status, const void *reply, size_t len,
                           void *data)
{
    struct islot *s = data;
    struct inproc_run *r = s->r;
    struct phase *ph = r->ph;

    if (ph->lat_ns != NULL)
        ph->lat_ns[s->i] = now_ns() - s->t0;
    if (status != 0)
        phase_fail(ph, s->i, status, reply, len);
    else if (!ph->cast)
        check_reply(ph, s->i, reply, len);
    if (++r->done == ph->ops) {
        inproc_finish(r);
        return;
    }
    inproc_issue(r, s);
}

static void inproc_start(keel_node *node, void *data)
{
    struct inproc_run *r = data;
    uint64_t k, w = r->ph->window < r->ph->ops ? r->ph->window : r->ph->ops;

    (void)node;
    r->t_start = now_ns();
    if (r->ph->ops == 0) {
        inproc_finish(r);
        return;
    }
    for (k = 0; k < w; k++)
        inproc_issue(r, &r->slots[k]);
}

static int run_inproc(struct env *e, struct phase *ph)
{
    struct inproc_run r;
    struct timespec dl;
    unsigned k, w = ph->window ? ph->window : 1;
    int rc = 0;

    memset(&r, 0, sizeof r);
    r.node = e->node;
    r.ph = ph;
    r.slots = xcalloc(w, sizeof *r.slots);
    for (k = 0; k < w; k++)
        r.slots[k].r = &r;
    ph->window = w;
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    rc = keel_node_post(e->node, inproc_start, &r);
    if (rc != 0)
        die("%s: cannot post to the node: %s", ph->name, keel_strerror(rc));
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += PHASE_TIMEOUT_S;
    pthread_mutex_lock(&r.mu);
    while (!r.finished && rc == 0)
        rc = pthread_cond_timedwait(&r.cv, &r.mu, &dl);
    pthread_mutex_unlock(&r.mu);
    if (!r.finished) /* the loop thread still holds r: no way back */
        die("%s: no completion after %d s (%" PRIu64 " of %" PRIu64
            " calls done)",
            ph->name, PHASE_TIMEOUT_S, r.done, ph->ops);
    ph->secs = (double)(r.t_end - r.t_start) / 1e9;
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    free(r.slots);
    return ph->failed ? -1 : 0;
}

/* ---------------------------------------------------------- tcp driver */

/* Runs on the calling thread: fills every connection's window, sends,
 * waits with poll() for replies on any of them, and refills. */
struct tcp_run {
    struct phase *ph;
    struct tconn *conns;
    unsigned nconn;
    unsigned window;  /* per connection */
    uint64_t next;    /* next op to send */
    uint64_t *t_send; /* per op: when its frame was flushed */
    int broken;       /* a connection failed: the phase stops */
    const struct route *route; /* routed: window is over all connections */
};

static void tcp_abort(struct tcp_run *run, const char *what, int code)
{
    phase_fail(run->ph, NO_OP, code, what, strlen(what));
    run->broken = 1;
}

/* Handles one reply frame. */
static int tcp_frame(struct tcp_run *run, struct tconn *tc,
                     const keel_frame *f, uint64_t t)
{
    struct phase *ph = run->ph;
    uint64_t i;

    if (f->request_id == 0 || f->request_id > ph->ops || tc->inflight == 0) {
        tcp_abort(run, "reply to a request never sent", KEEL_EPROTO);
        return -1;
    }
    i = f->request_id - 1;
    tc->inflight--;
    if (ph->lat_ns != NULL)
        ph->lat_ns[i] = t - run->t_send[i];
    if (f->kind == KEEL_FRAME_REPLY) {
        if (!ph->cast)
            check_reply(ph, i, f->body, f->body_len);
    } else if (f->kind == KEEL_FRAME_ERROR) {
        const char *m;
        size_t ml;
        int code = keel_error_body_parse(f->body, f->body_len, &m, &ml);
        phase_fail(ph, i, code, m, ml);
    } else {
        phase_fail(ph, i, KEEL_EPROTO, "unexpected frame kind", 21);
    }
    return 0;
}

/* Reads what the socket has and handles every whole frame in it. */
static int tcp_read(struct tcp_run *run, struct tconn *tc, uint64_t t)
{
    size_t pos = 0;
    keel_frame f;
    ssize_t r;
    long n;

    if (tc->rlen == tc->rcap) {
        tc->rcap *= 2;
        tc->rbuf = realloc(tc->rbuf, tc->rcap);
        if (tc->rbuf == NULL)
            die("out of memory");
    }
    /* Through the client: with TLS the bytes are decrypted there. */
    r = keel_client_read_some(tc->c, tc->rbuf + tc->rlen,
                              tc->rcap - tc->rlen);
    if (r == KEEL_ETIMEDOUT)
        return 0;
    if (r <= 0) {
        const char *why = keel_client_why(tc->c);
        tcp_abort(run, r == 0         ? "connection closed by the node"
                       : why[0] != '\0' ? why
                                       : keel_strerror((int)r),
                  KEEL_ECONN);
        return -1;
    }
    tc->rlen += (size_t)r;
    for (;;) {
        n = keel_frame_parse(tc->rbuf + pos, tc->rlen - pos, tc->rcap, &f);
        if (n == 0)
            break;
        if (n < 0) {
            tcp_abort(run, "bad frame from the node", (int)n);
            return -1;
        }
        pos += (size_t)n;
        if (tcp_frame(run, tc, &f, t) != 0)
            return -1;
    }
    if (pos > 0) {
        memmove(tc->rbuf, tc->rbuf + pos, tc->rlen - pos);
        tc->rlen -= pos;
    }
    return 0;
}

/* Queues op i on the connection. */
static int tcp_queue(struct tcp_run *run, struct tconn *tc, uint64_t i,
                     const struct op *op)
{
    int rc = keel_client_queue(tc->c,
                               run->ph->cast ? KEEL_FRAME_CAST
                                             : KEEL_FRAME_CALL,
                               i + 1, op->type, op->id, op->idlen, op->msg,
                               op->len);

    if (rc != 0) {
        tcp_abort(run, "cannot queue a request", rc);
        return -1;
    }
    if (tc->nfresh == tc->fresh_cap) {
        tc->fresh_cap = tc->fresh_cap ? tc->fresh_cap * 2 : 64;
        tc->fresh = realloc(tc->fresh, tc->fresh_cap * sizeof *tc->fresh);
        if (tc->fresh == NULL)
            die("out of memory");
    }
    tc->fresh[tc->nfresh++] = i;
    tc->inflight++;
    return 0;
}

/* Sends what the connection queued since its last flush, in one write. */
static int tcp_send(struct tcp_run *run, struct tconn *tc)
{
    uint64_t t;
    size_t k;
    int rc;

    if (tc->nfresh == 0)
        return 0;
    t = now_ns();
    for (k = 0; k < tc->nfresh; k++)
        run->t_send[tc->fresh[k]] = t;
    tc->nfresh = 0;
    rc = keel_client_flush(tc->c);
    if (rc != 0) {
        tcp_abort(run, "cannot send", rc);
        return -1;
    }
    return 0;
}

/* Fills the connection's window and sends what it queued in one write. */
static int tcp_refill(struct tcp_run *run, struct tconn *tc)
{
    struct phase *ph = run->ph;
    struct op op;

    tc->nfresh = 0;
    while (tc->inflight < run->window && run->next < ph->ops) {
        uint64_t i = run->next++;
        ph->gen(ph, i, &op);
        if (tcp_queue(run, tc, i, &op) != 0)
            return -1;
    }
    return tcp_send(run, tc);
}

/* Routed: fills the window, which counts the calls in flight on every
 * connection, each op on the connection of its unit's primary; then
 * each connection sends what it queued in one write. */
static int tcp_refill_routed(struct tcp_run *run)
{
    struct phase *ph = run->ph;
    struct op op;
    unsigned k, inflight = 0;

    for (k = 0; k < run->nconn; k++) {
        run->conns[k].nfresh = 0;
        inflight += run->conns[k].inflight;
    }
    while (inflight < run->window && run->next < ph->ops) {
        uint64_t i = run->next++;
        unsigned to;

        ph->gen(ph, i, &op);
        to = route_op(run->route, &op);
        if (to >= run->nconn)
            to = 0;
        if (tcp_queue(run, &run->conns[to], i, &op) != 0)
            return -1;
        inflight++;
    }
    for (k = 0; k < run->nconn; k++)
        if (tcp_send(run, &run->conns[k]) != 0)
            return -1;
    return 0;
}

static void tcp_drive(struct tcp_run *run)
{
    struct pollfd *pfd = xcalloc(run->nconn, sizeof *pfd);
    unsigned *which = xcalloc(run->nconn, sizeof *which);
    unsigned k, np;
    uint64_t t;
    int rc;

    while (!run->broken) {
        if (run->route != NULL)
            (void)tcp_refill_routed(run);
        else
            for (k = 0; k < run->nconn; k++)
                if (tcp_refill(run, &run->conns[k]) != 0)
                    break;
        if (run->broken)
            break;
        int buffered = 0;
        for (np = 0, k = 0; k < run->nconn; k++) {
            if (run->conns[k].inflight == 0)
                continue;
            pfd[np].fd = run->conns[k].fd;
            pfd[np].events = POLLIN;
            pfd[np].revents = 0;
            /* TLS may hold bytes the socket no longer shows. */
            if (keel_client_pending(run->conns[k].c))
                buffered = 1;
            which[np++] = k;
        }
        if (np == 0)
            break; /* nothing in flight and nothing left to send */
        rc = poll(pfd, np, buffered ? 0 : POLL_TIMEOUT_MS);
        if (buffered && rc >= 0) {
            for (k = 0; k < np; k++)
                if (keel_client_pending(run->conns[which[k]].c))
                    pfd[k].revents |= POLLIN;
            rc = 1;
        }
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0) {
            tcp_abort(run, rc == 0 ? "no reply for 60 s" : strerror(errno),
                      rc == 0 ? KEEL_ETIMEDOUT : KEEL_ECONN);
            break;
        }
        t = now_ns();
        for (k = 0; k < np; k++)
            if (pfd[k].revents != 0 &&
                tcp_read(run, &run->conns[which[k]], t) != 0)
                break;
    }
    free(pfd);
    free(which);
}

static int run_tcp(struct env *e, struct phase *ph)
{
    struct tcp_run run;
    unsigned nconn = ph->conns ? ph->conns : e->cfg->connections;
    uint64_t t0;
    unsigned k;

    if (e->route != NULL)
        nconn = e->nconns; /* connected by the cluster workload */
    if (nconn == 0)
        nconn = 1;
    if (env_connect(e, nconn) != 0) {
        phase_fail(ph, NO_OP, KEEL_ECONN, "cannot connect", 14);
        return -1;
    }
    memset(&run, 0, sizeof run);
    run.ph = ph;
    run.conns = e->conns;
    run.nconn = nconn;
    /* The window is per connection, or the phase's window spread evenly
     * (rounded up) over the connections. */
    run.window = ph->per_conn ? ph->window : (ph->window + nconn - 1) / nconn;
    if (e->route != NULL) {
        run.route = e->route;
        run.window = ph->window; /* over all of them */
    }
    if (run.window == 0)
        run.window = 1;
    run.t_send = xcalloc(ph->ops, sizeof *run.t_send);
    for (k = 0; k < nconn; k++)
        e->conns[k].inflight = 0;
    t0 = now_ns();
    tcp_drive(&run);
    ph->secs = (double)(now_ns() - t0) / 1e9;
    free(run.t_send);
    /* A broken run leaves the connections out of step: the workload
     * fails and its environment is closed. */
    return run.broken || ph->failed ? -1 : 0;
}

/* Runs a phase over the environment's transport. On failure the phase's
 * first_err says why. */
static int run_phase(struct env *e, struct phase *ph)
{
    if (ph->gen == NULL)
        ph->gen = gen_default;
    if (e->transport != T_INPROC)
        return run_tcp(e, ph);
    return run_inproc(e, ph);
}

/* ---------------------------------------------------------------- results */

struct extra {
    const char *key;   /* JSON name */
    const char *label; /* in the table's notes; NULL: JSON only */
    int decimals;
    double v;
};

struct result {
    const char *workload;
    const char *transport;
    const char *unit;
    const char *what;  /* the message measured */
    uint64_t ops;
    double ops_per_s;
    struct lat lat;
    struct extra extra[MAX_EXTRA];
    int nextra;
    const char *skipped; /* reason, or NULL */
    char error[400];     /* nonempty: the run failed */
};

static void add_extra(struct result *r, const char *key, const char *label,
                      int decimals, double v)
{
    if (r->nextra < MAX_EXTRA)
        r->extra[r->nextra++] = (struct extra){key, label, decimals, v};
}

static void result_init(struct result *r, const char *workload,
                        const struct env *e, const char *unit,
                        const char *what)
{
    memset(r, 0, sizeof *r);
    r->workload = workload;
    r->transport = transport_name(e->transport);
    r->unit = unit;
    r->what = what;
}

/* Fills the headline of r from a measured phase. */
static void result_from_phase(struct result *r, const struct phase *ph)
{
    r->ops = ph->ops;
    r->ops_per_s = ph->secs > 0 ? (double)ph->ops / ph->secs : 0;
    phase_latency(ph, &r->lat);
}

static int result_fail(struct result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int result_fail(struct result *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
    return -1;
}

/* With --perf-ctl, perf records only the measured phases (those that
 * record latencies), not set-up, verification or percentile sorting. */
static int perf_ctl_fd = -1, perf_ack_fd = -1;

static void perf_ctl(const char *cmd)
{
    char ack[8];
    size_t got = 0;
    ssize_t n;

    if (perf_ctl_fd < 0)
        return;
    if (write(perf_ctl_fd, cmd, strlen(cmd)) != (ssize_t)strlen(cmd))
        die("--perf-ctl: cannot write to perf's control fifo");
    while (perf_ack_fd >= 0 && got < 4) {
        n = read(perf_ack_fd, ack + got, 4 - got);
        if (n <= 0)
            die("--perf-ctl: no acknowledgement from perf");
        got += (size_t)n;
    }
}

static int perf_ctl_open(const char *arg)
{
    char ctl[PATH_MAX];
    const char *comma = strchr(arg, ',');
    size_t len = comma ? (size_t)(comma - arg) : strlen(arg);

    if (len == 0 || len >= sizeof ctl)
        return -1;
    memcpy(ctl, arg, len);
    ctl[len] = '\0';
    perf_ctl_fd = open(ctl, O_WRONLY | O_CLOEXEC);
    if (perf_ctl_fd < 0)
        return -1;
    if (comma != NULL) {
        perf_ack_fd = open(comma + 1, O_RDONLY | O_CLOEXEC);
        if (perf_ack_fd < 0)
            return -1;
    }
    return 0;
}

/* Runs a phase; a failure is written into r. */
static int step(struct env *e, struct phase *ph, struct result *r)
{
    int rc;

    if (ph->lat_ns != NULL)
        perf_ctl("enable\n");
    rc = run_phase(e, ph);
    if (ph->lat_ns != NULL)
        perf_ctl("disable\n");
    if (rc == 0)
        return 0;
    return result_fail(r, "%" PRIu64 " of %" PRIu64 " calls failed; first: %s",
                       ph->failed, ph->ops, ph->first_err);
}

/* Statistics deltas of the node over a measured phase. */
static void add_commit_extras(struct result *r, const keel_stats *a,
                              const keel_stats *b)
{
    double commits = (double)(b->commits - a->commits);
    double turns = (double)(b->batch_turns_total - a->batch_turns_total);

    add_extra(r, "commits", "commits", 0, commits);
    add_extra(r, "turns_per_commit", "turns/commit", 1,
              commits > 0 ? turns / commits : 0);
}

/* Cluster workloads: the sums over the nodes of what their statistics
 * (a STAT request each) say of the store and the replication stream. */
struct cl_stats {
    double commits, fsyncs, frames_sent, frames_applied, frames_merged;
    double outbox_sent, outbox_frames;
    double snap_bytes, snaps, stream_bytes, drops; /* catchup */
};

static double stat_line(const char *text, const char *key)
{
    size_t kl = strlen(key);
    const char *p = text;

    for (; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p)
        if (strncmp(p, key, kl) == 0 && p[kl] == ' ')
            return strtod(p + kl + 1, NULL);
    return 0;
}

static void cl_stats_get(const struct route *rt, struct cl_stats *out)
{
    unsigned i;

    memset(out, 0, sizeof *out);
    for (i = 0; i < rt->nnodes; i++) {
        keel_client *k;
        char *reply = NULL;

        if (keel_client_connect(rt->addr[i], CONNECT_TIMEOUT_MS, &k) != 0)
            continue;
        if (keel_client_call(k, KEEL_FRAME_STAT, NULL, NULL, 0, NULL, 0,
                             &reply, NULL) == 0 &&
            reply != NULL) {
            out->commits += stat_line(reply, "commits");
            out->fsyncs += stat_line(reply, "fsyncs");
            out->frames_sent += stat_line(reply, "repl_frames_sent");
            out->frames_applied += stat_line(reply, "repl_applied_frames");
            out->outbox_sent += stat_line(reply, "outbox_sent");
            out->outbox_frames += stat_line(reply, "outbox_frames");
            out->frames_merged += stat_line(reply, "repl_merged_frames");
            out->snap_bytes += stat_line(reply, "repl_catchup_bytes");
            out->snaps += stat_line(reply, "repl_catchups");
            out->stream_bytes += stat_line(reply, "handoff_bytes_in");
            out->drops += stat_line(reply, "repl_drop_requests");
        }
        free(reply);
        keel_client_close(k);
    }
}

/* The node must not have seen a handler error or a failed commit. */
/* Runs a measured phase between two snapshots of the node's statistics
 * and, when it succeeded, records its figures and the commits it took. */
static int measure(struct env *e, struct phase *p, struct result *r,
                   keel_stats *a, keel_stats *b)
{
    int rc;

    if (e->node == NULL) { /* a cluster's nodes: their own processes */
        struct cl_stats sa, sb;
        memset(a, 0, sizeof *a);
        memset(b, 0, sizeof *b);
        cl_stats_get(e->route, &sa);
        rc = step(e, p, r);
        cl_stats_get(e->route, &sb);
        if (rc == 0) {
            result_from_phase(r, p);
            add_extra(r, "commits", "commits", 0, sb.commits - sa.commits);
            add_extra(r, "fsyncs", "fsyncs", 0, sb.fsyncs - sa.fsyncs);
            add_extra(r, "repl_frames_sent", "frames sent", 0,
                      sb.frames_sent - sa.frames_sent);
            add_extra(r, "repl_frames_applied", "frames applied", 0,
                      sb.frames_applied - sa.frames_applied);
            add_extra(r, "repl_frames_merged", "frames merged", 0,
                      sb.frames_merged - sa.frames_merged);
        }
        return rc;
    }
    keel_node_stats(e->node, a);
    rc = step(e, p, r);
    keel_node_stats(e->node, b);
    if (rc == 0) {
        result_from_phase(r, p);
        add_commit_extras(r, a, b);
    }
    return rc;
}

static int check_node(struct env *e, struct result *r)
{
    keel_stats st;

    if (e->node == NULL)
        return 0;
    keel_node_stats(e->node, &st);
    if (st.handler_errors != 0)
        return result_fail(r, "the node counted %" PRIu64 " handler errors",
                           st.handler_errors);
    if (st.commit_failures != 0)
        return result_fail(r, "the node counted %" PRIu64
                              " failed commits",
                           st.commit_failures);
    return 0;
}

static int check_activations(struct result *r, const keel_stats *a,
                             const keel_stats *b, uint64_t want)
{
    uint64_t got = b->activations - a->activations;

    if (b->activations == 0 && a->activations == 0)
        return 0; /* no statistics: a cluster's nodes */
    if (got == want)
        return 0;
    return result_fail(r, "%" PRIu64 " activations, expected %" PRIu64, got,
                       want);
}

/* ------------------------------------------------------------ workloads */

#define CREATE_N 50000
#define HOT_N 10000
#define CAP_N 30000
#define MIXED_ACTORS 5000
#define MIXED_CALLS 20000
#define LATENCY_N 1000
#define MEMORY_N 1000000
#define PUT_N 1000000
#define PUT_WINDOW 10000
#define PEER_CLIENTS 50
#define PEER_N 200000
#define PEER_PIPELINE 16

/* The verification pass: every stride-th of the n counters called
 * prefix<k> answers `get` with want. Not timed. */
static int verify_counters(struct env *e, struct result *r, const char *prefix,
                           uint64_t n, uint64_t stride, const char *want)
{
    struct phase v;
    int rc;

    phase_init(&v, "verify", (n + stride - 1) / stride, 500);
    v.type = "counter";
    v.prefix = prefix;
    v.stride = stride;
    v.msg = "get";
    v.expect = want;
    v.check = check_expect;
    rc = step(e, &v, r);
    phase_fini(&v);
    return rc;
}

/* One call to one actor, checked. */
static int call_one(struct env *e, struct result *r, const char *type,
                    const char *id, const char *msg, const char *want)
{
    struct phase p;
    int rc;

    phase_init(&p, "call", 1, 1);
    p.type = type;
    p.fixed_id = id;
    p.msg = msg;
    p.expect = want;
    p.check = want ? check_expect : NULL;
    rc = step(e, &p, r);
    phase_fini(&p);
    return rc;
}

static int wl_create(struct env *e, struct result *res, int *nres)
{
    struct result *r = &res[0];
    struct phase p;
    keel_stats a, b;
    int rc;

    *nres = 1;
    result_init(r, "create", e, "activations/s", "counter incr");
    phase_init(&p, "create", CREATE_N, 500);
    p.type = "counter";
    p.prefix = "actor_";
    p.msg = "incr";
    p.expect = "1";
    p.check = check_expect;
    phase_record_latency(&p);
    rc = measure(e, &p, r, &a, &b);
    if (rc == 0)
        rc = check_activations(r, &a, &b, CREATE_N);
    phase_fini(&p);
    if (rc == 0)
        rc = verify_counters(e, r, "actor_", CREATE_N, 1, "1");
    return rc;
}

static int wl_hot(struct env *e, struct result *res, int *nres)
{
    struct result *r = &res[0];
    struct phase p;
    keel_stats a, b;
    char want[32];
    int rc;

    *nres = 1;
    result_init(r, "hot", e, "calls/s", "counter incr");
    /* Activate first: the measured calls find the actor resident. */
    rc = call_one(e, r, "counter", "hot", "get", "0");
    if (rc != 0)
        return rc;
    phase_init(&p, "hot", HOT_N, 200);
    p.type = "counter";
    p.fixed_id = "hot";
    p.msg = "incr";
    p.lo = 1;
    p.hi = HOT_N;
    p.seen = xcalloc(HOT_N, sizeof *p.seen);
    p.check = check_distinct;
    phase_record_latency(&p);
    rc = measure(e, &p, r, &a, &b);
    phase_fini(&p);
    snprintf(want, sizeof want, "%d", HOT_N);
    if (rc == 0)
        rc = call_one(e, r, "counter", "hot", "get", want);
    return rc;
}

/* capabilities: op i creates cap_<i> of type counter, kv or register. */
static const char *const cap_types[3] = {"counter", "kv", "register"};

static void gen_cap(const struct phase *ph, uint64_t i, struct op *op)
{
    static const char *const write_msgs[3] = {"incr", "put k v", "write v"};
    static const char *const read_msgs[3] = {"get", "get k", "read"};

    memcpy(op->id, "cap_", 4);
    op->idlen = 4 + put_u64(op->id + 4, i);
    op->type = cap_types[i % 3];
    op->msg = (ph->msg[0] == 'w' ? write_msgs : read_msgs)[i % 3];
    op->len = strlen(op->msg);
}

static int check_cap(const struct phase *ph, uint64_t i, const void *reply,
                     size_t len, char *why, size_t whylen)
{
    static const char *const after_write[3] = {"1", "OK", "OK"};
    static const char *const after_read[3] = {"1", "v", "v"};
    const char *want = (ph->msg[0] == 'w' ? after_write : after_read)[i % 3];

    if (len == strlen(want) && memcmp(reply, want, len) == 0)
        return 0;
    snprintf(why, whylen, "%s cap_%" PRIu64 ": reply '%.*s', expected '%s'",
             cap_types[i % 3], i, (int)len, (const char *)reply, want);
    return -1;
}

static int wl_capabilities(struct env *e, struct result *res, int *nres)
{
    struct result *r = &res[0];
    struct phase p;
    keel_stats a, b;
    int rc;

    *nres = 1;
    result_init(r, "capabilities", e, "activations/s",
                "counter incr | kv put k v | register write v");
    phase_init(&p, "capabilities", CAP_N, 500);
    p.gen = gen_cap;
    p.check = check_cap;
    p.msg = "write";
    phase_record_latency(&p);
    rc = measure(e, &p, r, &a, &b);
    if (rc == 0)
        rc = check_activations(r, &a, &b, CAP_N);
    phase_fini(&p);
    if (rc == 0) {
        phase_init(&p, "verify", CAP_N, 500);
        p.gen = gen_cap;
        p.check = check_cap;
        p.msg = "read";
        rc = step(e, &p, r);
        phase_fini(&p);
    }
    return rc;
}

static int wl_mixed(struct env *e, struct result *res, int *nres)
{
    struct result *r = &res[0];
    struct phase c, p;
    keel_stats a, b;
    char want[32];
    int rc;

    *nres = 1;
    result_init(r, "mixed", e, "calls/s", "counter incr");
    phase_init(&c, "mixed-create", MIXED_ACTORS, 300);
    c.type = "counter";
    c.prefix = "mix_";
    c.msg = "incr";
    c.expect = "1";
    c.check = check_expect;
    rc = step(e, &c, r);
    if (rc == 0) {
        phase_init(&p, "mixed-calls", MIXED_CALLS, 300);
        p.type = "counter";
        p.prefix = "mix_";
        p.mod = MIXED_ACTORS;
        p.msg = "incr";
        p.lo = 2;
        p.check = check_round_robin;
        phase_record_latency(&p);
        rc = measure(e, &p, r, &a, &b);
        if (rc == 0)
            add_extra(r, "create_ops_per_s", "create/s", 0,
                      (double)c.ops / c.secs);
        phase_fini(&p);
    }
    phase_fini(&c);
    snprintf(want, sizeof want, "%d", 1 + MIXED_CALLS / MIXED_ACTORS);
    if (rc == 0)
        rc = verify_counters(e, r, "mix_", MIXED_ACTORS, 1, want);
    return rc;
}

static int wl_latency(struct env *e, struct result *res, int *nres)
{
    struct result *r = &res[0];
    struct phase c, p, g;
    keel_stats a, b;
    struct lat gl;
    int rc;

    *nres = 1;
    result_init(r, "latency", e, "calls/s", "counter incr, one at a time");
    phase_init(&c, "latency-create", LATENCY_N, 500);
    c.type = "counter";
    c.prefix = "lat_";
    c.msg = "incr";
    c.expect = "1";
    c.check = check_expect;
    rc = step(e, &c, r);
    phase_fini(&c);
    if (rc != 0)
        return rc;
    phase_init(&p, "latency-incr", LATENCY_N, 1);
    p.conns = 1;
    p.type = "counter";
    p.prefix = "lat_";
    p.msg = "incr";
    p.expect = "2";
    p.check = check_expect;
    phase_record_latency(&p);
    rc = measure(e, &p, r, &a, &b);
    if (rc == 0) {
        /* A read of an actor with nothing waiting to commit: the reply
         * need not wait for the disk. */
        phase_init(&g, "latency-get", LATENCY_N, 1);
        g.conns = 1;
        g.type = "counter";
        g.prefix = "lat_";
        g.msg = "get";
        g.expect = "2";
        g.check = check_expect;
        phase_record_latency(&g);
        rc = step(e, &g, r);
        if (rc == 0) {
            phase_latency(&g, &gl);
            add_extra(r, "get_p50_us", "get p50", 1, gl.p50);
            add_extra(r, "get_p99_us", "get p99", 1, gl.p99);
        }
        phase_fini(&g);
    }
    phase_fini(&p);
    return rc;
}

static int wl_memory(struct env *e, struct result *res, int *nres)
{
    struct result *r = &res[0];
    struct phase p;
    keel_stats a, b;
    uint64_t res0 = 0, shr0 = 0, res1 = 0, shr1 = 0;
    struct mallinfo2 m0, m1;
    double page = (double)sysconf(_SC_PAGESIZE);
    int rc;

    *nres = 1;
    result_init(r, "memory", e, "activations/s", "counter incr");
    if (e->transport != T_INPROC) {
        r->skipped = "measured in-process only (--transport inproc)";
        return 0;
    }
    /* Warm up: one actor, so the node's buffers and pools exist before
     * the baseline. */
    rc = call_one(e, r, "counter", "warm", "incr", "1");
    if (rc != 0)
        return rc;
    phase_init(&p, "memory", MEMORY_N, 500);
    p.type = "counter";
    p.prefix = "m_";
    p.msg = "incr";
    p.expect = "1";
    p.check = check_expect;
    phase_record_latency(&p);
    /* Touch the latency array now so it is part of the baseline, and
     * hand back to the system what earlier runs in this process freed:
     * actors must not land in pages that were already resident. */
    memset(p.lat_ns, 0xff, p.ops * sizeof *p.lat_ns);
    malloc_trim(0);
    if (read_statm(&res0, &shr0) != 0) {
        phase_fini(&p);
        return result_fail(r, "cannot read /proc/self/statm");
    }
    m0 = mallinfo2();
    keel_node_stats(e->node, &a);
    rc = step(e, &p, r);
    keel_node_stats(e->node, &b);
    m1 = mallinfo2();
    if (rc == 0 && read_statm(&res1, &shr1) != 0)
        rc = result_fail(r, "cannot read /proc/self/statm");
    if (rc == 0) {
        double n = (double)MEMORY_N;
        double heap0 = (double)(m0.uordblks + m0.hblkhd);
        double heap1 = (double)(m1.uordblks + m1.hblkhd);
        result_from_phase(r, &p);
        rc = check_activations(r, &a, &b, MEMORY_N);
        if (rc == 0 && b.resident_actors < MEMORY_N + 1)
            rc = result_fail(r, "only %" PRIu64 " actors resident",
                             b.resident_actors);
        /* The headline subtracts nothing: it is the whole process's
         * resident-set growth, LMDB's mapped pages included. */
        add_extra(r, "bytes_per_actor", "B/actor RSS", 0,
                  ((double)res1 - (double)res0) * page / n);
        add_extra(r, "anon_bytes_per_actor", "anon", 0,
                  (((double)res1 - (double)shr1) -
                   ((double)res0 - (double)shr0)) *
                      page / n);
        add_extra(r, "heap_bytes_per_actor", "malloc'd", 0,
                  (heap1 - heap0) / n);
        add_extra(r, "resident_actors", NULL, 0, (double)b.resident_actors);
        add_commit_extras(r, &a, &b);
    }
    phase_fini(&p);
    if (rc == 0)
        rc = verify_counters(e, r, "m_", MEMORY_N, 1000, "1");
    return rc;
}

static void gen_put(const struct phase *ph, uint64_t i, struct op *op)
{
    char *p = op->msgbuf;

    op->type = "kv";
    memcpy(op->id, ph->fixed_id, strlen(ph->fixed_id));
    op->idlen = strlen(ph->fixed_id);
    memcpy(p, "put ", 4);
    p += 4;
    p += put_u64(p, i);
    memcpy(p, " test", 5);
    p += 5;
    op->msg = op->msgbuf;
    op->len = (size_t)(p - op->msgbuf);
}

static int wl_single_put(struct env *e, struct result *res, int *nres)
{
    struct result *r = &res[0];
    struct phase p, g;
    keel_stats a, b;
    char key[48];
    int rc;

    *nres = 1;
    result_init(r, "single-actor-put", e, "puts/s",
                "kv put <i> test (cast), then one call");
    phase_init(&p, "single-actor-put", PUT_N, PUT_WINDOW);
    p.cast = 1;
    p.gen = gen_put;
    p.fixed_id = "bulk";
    phase_record_latency(&p);
    keel_node_stats(e->node, &a);
    rc = step(e, &p, r);
    if (rc == 0) {
        /* The call that waits for all: it reads the last put back. */
        phase_init(&g, "single-actor-put-get", 1, 1);
        g.type = "kv";
        g.fixed_id = "bulk";
        snprintf(key, sizeof key, "get %d", PUT_N - 1);
        g.msg = key;
        g.expect = "test";
        g.check = check_expect;
        rc = step(e, &g, r);
        keel_node_stats(e->node, &b);
        if (rc == 0) {
            result_from_phase(r, &p);
            r->ops_per_s = (double)PUT_N / (p.secs + g.secs);
            add_commit_extras(r, &a, &b);
        }
        phase_fini(&g);
    }
    phase_fini(&p);
    if (rc == 0)
        rc = call_one(e, r, "kv", "bulk", "get 0", "test");
    return rc;
}

/* ---------------------------------------------------------- reminders */

/* reminders: REM_N actors each set a one-shot reminder, all falling due
 * within REM_SPREAD_MS, REM_LEAD_MS after the first is set (so they are
 * all pending first); the figure is how late each fires: the wall clock
 * when its handler runs minus its due time. */
#define REM_N 100000
#define REM_SPREAD_MS 10000
#define REM_LEAD_MS 20000
#define REM_WAIT_S 60

static uint64_t rem_t0_ms;        /* wall clock at the start of the set */
static uint64_t *rem_late_ns;     /* loop thread writes, main reads after */
static uint64_t rem_fired, rem_early; /* atomic */

static uint64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* bench-rem: a message "DUE" (wall-clock ms) sets reminder "r" for then,
 * with DUE as its message; its firing records how late it ran. */
static int bench_rem_message(keel_turn *t, const void *msg, size_t len)
{
    struct timespec ts;
    uint64_t due = 0, now_ns_wall;
    size_t i;

    if (len == 0 || len > 20)
        return KEEL_EBADMSG;
    for (i = 0; i < len; i++) {
        char c = ((const char *)msg)[i];
        if (c < '0' || c > '9')
            return KEEL_EBADMSG;
        due = due * 10 + (uint64_t)(c - '0');
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    now_ns_wall = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    if (keel_turn_reminder(t, NULL) != NULL) {
        uint64_t k = __atomic_load_n(&rem_fired, __ATOMIC_RELAXED);
        if (now_ns_wall / 1000000u < due)
            __atomic_add_fetch(&rem_early, 1, __ATOMIC_RELAXED);
        else if (k < REM_N && rem_late_ns != NULL)
            rem_late_ns[k] = now_ns_wall - due * 1000000u;
        __atomic_store_n(&rem_fired, k + 1, __ATOMIC_RELEASE);
        return 0;
    }
    return keel_turn_remind(t, "r", 1,
                            due > now_ns_wall / 1000000u
                                ? due - now_ns_wall / 1000000u
                                : 0,
                            0, msg, len);
}

static void gen_rem(const struct phase *ph, uint64_t i, struct op *op)
{
    (void)ph;
    op->type = "bench-rem";
    op->id[0] = 'r';
    op->idlen = 1 + put_u64(op->id + 1, i);
    op->len = put_u64(op->msgbuf,
                      rem_t0_ms + REM_LEAD_MS + i % REM_SPREAD_MS);
    op->msg = op->msgbuf;
}

static int wl_reminders(struct env *e, struct result *res, int *nres)
{
    struct result *r = &res[0];
    struct phase p, late;
    uint64_t deadline, first_due, fired;
    double secs;
    int rc;

    *nres = 1;
    result_init(r, "reminders", e, "fired/s",
                "100,000 one-shot reminders due within 10 s; lateness");
    rem_late_ns = xcalloc(REM_N, sizeof *rem_late_ns);
    __atomic_store_n(&rem_fired, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&rem_early, 0, __ATOMIC_RELAXED);
    rem_t0_ms = wall_ms();
    first_due = rem_t0_ms + REM_LEAD_MS;
    phase_init(&p, "reminders-set", REM_N, 500);
    p.gen = gen_rem;
    rc = step(e, &p, r);
    if (rc == 0 && wall_ms() > first_due)
        rc = result_fail(r, "setting %d reminders took %.1f s, longer than "
                            "the %d ms lead",
                         REM_N, p.secs, REM_LEAD_MS);
    deadline = first_due + REM_SPREAD_MS + REM_WAIT_S * 1000u;
    while (rc == 0 &&
           (fired = __atomic_load_n(&rem_fired, __ATOMIC_ACQUIRE)) < REM_N) {
        if (wall_ms() > deadline) {
            rc = result_fail(r, "%" PRIu64 " of %d reminders fired within "
                                "%d s of their due time",
                             fired, REM_N, REM_WAIT_S);
            break;
        }
        usleep(10000);
    }
    secs = (double)(wall_ms() - first_due) / 1000.0;
    if (rc == 0 && __atomic_load_n(&rem_early, __ATOMIC_RELAXED) != 0)
        rc = result_fail(r, "%" PRIu64 " reminders fired before their due "
                            "time",
                         __atomic_load_n(&rem_early, __ATOMIC_RELAXED));
    if (rc == 0) {
        phase_init(&late, "reminders-late", REM_N, 1);
        late.lat_ns = rem_late_ns; /* handed over: freed by phase_fini */
        rem_late_ns = NULL;
        r->ops = REM_N;
        r->ops_per_s = secs > 0 ? REM_N / secs : 0;
        phase_latency(&late, &r->lat);
        add_extra(r, "set_per_s", "set/s", 0,
                  p.secs > 0 ? REM_N / p.secs : 0);
        add_extra(r, "late_p50_ms", "p50 late ms", 1, r->lat.p50 / 1000.0);
        add_extra(r, "late_p99_ms", "p99 late ms", 1, r->lat.p99 / 1000.0);
        phase_fini(&late);
    }
    phase_fini(&p);
    /* The node stops with the workload: no firing runs after this. */
    free(rem_late_ns);
    rem_late_ns = NULL;
    return rc;
}

/* --------------------------------------------------------- redis-peer */

static int free_port(void)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    if (fd < 0)
        return -1;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0 &&
        getsockname(fd, (struct sockaddr *)&sin, &sl) == 0)
        port = ntohs(sin.sin_port);
    close(fd);
    return port;
}

/* Does a Redis server answer PING on the port? */
static int redis_ping(int port)
{
    struct sockaddr_in sin;
    char buf[16];
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok = 0;
    ssize_t n;

    if (fd < 0)
        return 0;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0 &&
        write(fd, "PING\r\n", 6) == 6) {
        n = read(fd, buf, sizeof buf - 1);
        ok = n >= 5 && memcmp(buf, "+PONG", 5) == 0;
    }
    close(fd);
    return ok;
}

struct redis {
    pid_t pid;
    int port;
    char dir[PATH_MAX];
};

/* Starts redis-server on a free loopback port, fsyncing every write, in a
 * temporary directory. */
static int redis_start(struct redis *rs, const struct config *cfg)
{
    char portstr[16], log[PATH_MAX + 16];
    const char *parent = cfg->data ? cfg->data : getenv("TMPDIR");
    int i, fd;

    if (parent == NULL || parent[0] == '\0')
        parent = "/tmp";
    memset(rs, 0, sizeof *rs);
    snprintf(rs->dir, sizeof rs->dir, "%s/keel-bench-redis-XXXXXX", parent);
    if (mkdtemp(rs->dir) == NULL)
        return -1;
    rs->port = free_port();
    if (rs->port <= 0)
        goto err_dir;
    snprintf(portstr, sizeof portstr, "%d", rs->port);
    snprintf(log, sizeof log, "%s/redis.log", rs->dir);
    rs->pid = fork();
    if (rs->pid < 0)
        goto err_dir;
    if (rs->pid == 0) {
        fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execlp("redis-server", "redis-server", "--port", portstr, "--bind",
               "127.0.0.1", "--dir", rs->dir, "--appendonly", "yes",
               "--appendfsync", "always", "--save", "", "--daemonize", "no",
               (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 100; i++) {
        if (redis_ping(rs->port))
            return 0;
        if (waitpid(rs->pid, NULL, WNOHANG) == rs->pid) {
            rs->pid = 0;
            fprintf(stderr, "%s: redis-server exited; see %s\n", prog, log);
            goto err_dir;
        }
        usleep(50000);
    }
    fprintf(stderr, "%s: redis-server did not answer on port %d\n", prog,
            rs->port);
    kill(rs->pid, SIGKILL);
    waitpid(rs->pid, NULL, 0);
err_dir:
    rm_rf(rs->dir);
    return -1;
}

static void redis_stop(struct redis *rs)
{
    if (rs->pid > 0) {
        kill(rs->pid, SIGTERM);
        waitpid(rs->pid, NULL, 0);
    }
    rm_rf(rs->dir);
}

/* Runs redis-benchmark for INCR; *rps and *p50_us from its summary. */
static int redis_bench(const struct redis *rs, int pipeline, double *rps,
                       double *p50_us)
{
    char cmd[256], line[4096];
    const char *hit, *s;
    FILE *f;
    int found = 0, st;

    snprintf(cmd, sizeof cmd,
             "redis-benchmark -h 127.0.0.1 -p %d -c %d -n %d -t incr -q "
             "-P %d 2>&1",
             rs->port, PEER_CLIENTS, PEER_N, pipeline);
    f = popen(cmd, "r");
    if (f == NULL)
        return -1;
    *p50_us = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        /* -q prints progress lines ending in \r, then
         * "INCR: 64000.00 requests per second, p50=0.391 msec". */
        hit = strstr(line, "requests per second");
        if (hit == NULL)
            continue;
        s = hit;
        while (s > line && s[-1] == ' ')
            s--;
        while (s > line && (isdigit((unsigned char)s[-1]) || s[-1] == '.'))
            s--;
        *rps = strtod(s, NULL);
        found = *rps > 0;
        s = strstr(hit, "p50=");
        if (s != NULL)
            *p50_us = strtod(s + 4, NULL) * 1000.0;
    }
    st = pclose(f);
    if (!found || st != 0) {
        fprintf(stderr, "%s: redis-benchmark failed or printed no rate\n",
                prog);
        return -1;
    }
    return 0;
}

static int wl_redis_peer(struct env *e, struct result *res, int *nres)
{
    static const int pipelines[2] = {1, PEER_PIPELINE};
    struct redis rs;
    int k, rc = 0;

    *nres = 2;
    for (k = 0; k < 2; k++) {
        result_init(&res[k], "redis-peer", e, "calls/s",
                    "counter incr on one counter vs Redis INCR");
        add_extra(&res[k], "pipeline", "pipeline", 0, pipelines[k]);
    }
    if (!on_path("redis-server") || !on_path("redis-benchmark")) {
        res[0].skipped = res[1].skipped = "redis-server not installed";
        return 0;
    }
    for (k = 0; k < 2 && rc == 0; k++) {
        struct result *r = &res[k];
        struct phase p;
        keel_stats a, b;
        char id[16], want[32];

        snprintf(id, sizeof id, "peer%d", pipelines[k]);
        phase_init(&p, "redis-peer", PEER_N, (unsigned)pipelines[k]);
        p.per_conn = 1;
        p.conns = PEER_CLIENTS;
        p.type = "counter";
        p.fixed_id = id;
        p.msg = "incr";
        p.lo = 1;
        p.hi = PEER_N;
        p.seen = xcalloc(PEER_N, sizeof *p.seen);
        p.check = check_distinct;
        phase_record_latency(&p);
        rc = measure(e, &p, r, &a, &b);
        phase_fini(&p);
        snprintf(want, sizeof want, "%d", PEER_N);
        if (rc == 0)
            rc = call_one(e, r, "counter", id, "get", want);
    }
    if (rc != 0)
        return rc;
    if (redis_start(&rs, e->cfg) != 0)
        return result_fail(&res[0], "cannot start redis-server");
    for (k = 0; k < 2 && rc == 0; k++) {
        double rps = 0, p50 = 0;
        if (redis_bench(&rs, pipelines[k], &rps, &p50) != 0) {
            rc = result_fail(&res[k], "redis-benchmark failed");
            break;
        }
        add_extra(&res[k], "redis_ops_per_s", "redis/s", 0, rps);
        add_extra(&res[k], "redis_p50_us", "redis p50", 0, p50);
        add_extra(&res[k], "ratio", "keel/redis", 2, res[k].ops_per_s / rps);
    }
    redis_stop(&rs);
    return rc;
}

/* --------------------------------------------------------------- http */

/* wrk's duration for the http workload and its connections. */
#define HTTP_SECONDS 5
#define HTTP_CONNS 50

/* "301.00us", "1.20ms", "2.00s" -> microseconds. */
static double wrk_time_us(const char *s)
{
    char *end;
    double v = strtod(s, &end);

    if (strncmp(end, "us", 2) == 0)
        return v;
    if (strncmp(end, "ms", 2) == 0)
        return v * 1000.0;
    if (strncmp(end, "s", 1) == 0)
        return v * 1e6;
    return v;
}

/* POST `incr` to one counter through the HTTP face with wrk. Every answer
 * must be 2xx, and afterwards the counter must hold at least the number of
 * answers wrk counted (requests cut off at the end may still land). */
static int wl_http(struct env *e, struct result *res, int *nres)
{
    struct result *r = &res[0];
    char script[PATH_MAX], cmd[PATH_MAX + 256], line[512];
    double rps = 0, p50 = 0, p99 = 0, avg = 0, maxl = 0;
    uint64_t requests = 0, bad = 0, sock_errors = 0;
    int64_t value = 0;
    void *reply = NULL;
    size_t len = 0;
    FILE *f;
    int rc, st;

    *nres = 1;
    result_init(r, "http", e, "calls/s",
                "POST /v1/actors/counter/wrk `incr`, wrk 50 connections");
    r->transport = "http";
    if (!on_path("wrk")) {
        r->skipped = "wrk not installed";
        return 0;
    }
    if (e->http_port <= 0)
        return result_fail(r, "the node has no HTTP listener");
    if ((size_t)snprintf(script, sizeof script, "%s/post.lua", e->dir) >=
        sizeof script)
        return result_fail(r, "data directory path too long");
    f = fopen(script, "w");
    if (f == NULL)
        return result_fail(r, "cannot write %s", script);
    fputs("wrk.method = \"POST\"\nwrk.body = \"incr\"\n"
          "wrk.headers[\"Content-Type\"] = \"text/plain\"\n",
          f);
    if (e->cfg->token != NULL)
        fprintf(f, "wrk.headers[\"Authorization\"] = \"Bearer %s\"\n",
                e->cfg->token);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "wrk -t2 -c%d -d%ds --latency -s %s "
             "http://127.0.0.1:%d/v1/actors/counter/wrk 2>&1",
             HTTP_CONNS, HTTP_SECONDS, script, e->http_port);
    perf_ctl("enable");
    f = popen(cmd, "r");
    if (f == NULL) {
        perf_ctl("disable");
        return result_fail(r, "cannot run wrk");
    }
    while (fgets(line, sizeof line, f) != NULL) {
        const char *p = line;
        unsigned long long c, rd, wr, to;
        while (*p == ' ')
            p++;
        if (strncmp(p, "Requests/sec:", 13) == 0)
            rps = strtod(p + 13, NULL);
        else if (strncmp(p, "50%", 3) == 0)
            p50 = wrk_time_us(p + 3 + strspn(p + 3, " "));
        else if (strncmp(p, "99%", 3) == 0)
            p99 = wrk_time_us(p + 3 + strspn(p + 3, " "));
        else if (strncmp(p, "Latency ", 8) == 0) {
            /* "Latency   301.00us  120.00us   5.00ms   90.00%" */
            char a[32], sd[32], mx[32];
            if (sscanf(p + 8, "%31s %31s %31s", a, sd, mx) == 3) {
                avg = wrk_time_us(a);
                maxl = wrk_time_us(mx);
            }
        } else if (strstr(p, " requests in ") != NULL)
            requests = strtoull(p, NULL, 10);
        else if (strncmp(p, "Non-2xx or 3xx responses:", 25) == 0)
            bad = strtoull(p + 25, NULL, 10);
        else if (sscanf(p, "Socket errors: connect %llu, read %llu, write "
                           "%llu, timeout %llu",
                        &c, &rd, &wr, &to) == 4)
            sock_errors = c + rd + wr + to;
    }
    st = pclose(f);
    perf_ctl("disable");
    if (st != 0 || requests == 0 || rps <= 0)
        return result_fail(r, "wrk failed or printed no rate");
    if (bad != 0)
        return result_fail(r, "%llu responses were not 2xx",
                           (unsigned long long)bad);
    if (sock_errors != 0)
        return result_fail(r, "%llu socket errors",
                           (unsigned long long)sock_errors);
    rc = keel_call_sync(e->node, "counter", "wrk", 3, "get", 3, &reply, &len);
    if (rc != 0 || parse_reply_i64(reply, len, &value) != 0 ||
        value < (int64_t)requests) {
        keel_free(reply);
        return result_fail(r, "counter holds %lld after %llu answered incr",
                           (long long)value, (unsigned long long)requests);
    }
    keel_free(reply);
    r->ops = requests;
    r->ops_per_s = rps;
    r->lat.avg = avg;
    r->lat.p50 = p50;
    r->lat.p99 = p99;
    r->lat.max = maxl;
    add_extra(r, "connections", "connections", 0, HTTP_CONNS);
    return 0;
}

/* ----------------------------------------------------- cluster workloads */

/* replication and failover start their own ZooKeeper (zk-conf/zk.sh, on
 * a free loopback port) and keeld processes from the build, through the
 * chaos harness's cluster (chaos/cluster.h), under one directory that is
 * removed afterwards (kept, and named on stderr, when the run failed).
 * The driver reaches every node over TCP and sends each op to its unit's
 * primary, as read from the map (INFO shards). */

#define CL_NODES 3
#define CL_SETTLE_S 120      /* a cluster that takes longer has hung */
#define FO_STALL_MS 100      /* a call slower than this is a stalled one */
#define FO_CALL_TIMEOUT_MS 15000
#define FO_STEADY_MS 500     /* load before each kill */
#define FO_DOWN_S 60         /* no success this long after a kill: failed */
#define FO_RECORDS (1u << 21)

struct cl {
    chaos_cluster c;
    char dir[PATH_MAX];
    FILE *log;
    const char *args[6]; /* more keeld arguments: --durability, --load */
    int first;           /* the first node of the running cluster */
    int count;           /* its nodes (cl_open: CL_NODES) */
    int failed;          /* keep the directory */
};

static int cl_open(struct cl *cl, const struct config *cfg, int nnodes)
{
    const char *parent = cfg->data;
    char err[256], path[PATH_MAX + 32];

    memset(cl, 0, sizeof *cl);
    if (parent == NULL) {
        parent = getenv("TMPDIR");
        if (parent == NULL || parent[0] == '\0')
            parent = "/tmp";
    } else if (mkdir(parent, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: cannot create %s: %s\n", prog, parent,
                strerror(errno));
        return -1;
    }
    if ((size_t)snprintf(cl->dir, sizeof cl->dir, "%s/keel-bench-cl-XXXXXX",
                         parent) >= sizeof cl->dir ||
        mkdtemp(cl->dir) == NULL) {
        fprintf(stderr, "%s: cannot create a directory in %s: %s\n", prog,
                parent, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof path, "%s/harness.log", cl->dir);
    cl->log = fopen(path, "w");
    cl->args[0] = "--durability";
    cl->args[1] = durability_name(cfg->durability);
    cl->args[2] = NULL;
    cl->count = CL_NODES;
    cl->c.dir = cl->dir;
    cl->c.keeld = cfg->keeld;
    cl->c.zk_conf = cfg->zk_conf;
    cl->c.shards = cfg->shards;
    cl->c.session_ms = cfg->session_ms;
    /* Session timeouts must lie within 2 to 20 ticks: 10, as keel-chaos. */
    cl->c.zk_tick_ms = cfg->session_ms / 10 > 100 ? cfg->session_ms / 10
                                                   : 100;
    cl->c.no_actlog = 1;
    cl->c.args = cl->args;
    cl->c.log = cl->log;
    if (access(cfg->keeld, X_OK) != 0) {
        fprintf(stderr, "%s: no keeld at %s (--keeld PATH)\n", prog,
                cfg->keeld);
        goto err;
    }
    if (chaos_cluster_init(&cl->c, nnodes, nnodes, NULL) != 0) {
        fprintf(stderr, "%s: cannot lay out the cluster (no free port?)\n",
                prog);
        goto err;
    }
    if (chaos_zk_start(&cl->c, err, sizeof err) != 0) {
        fprintf(stderr, "%s: cannot start ZooKeeper: %s\n", prog, err);
        goto err;
    }
    return 0;
err:
    cl->failed = 1;
    return -1;
}

static void cl_close(struct cl *cl)
{
    chaos_cluster_free(&cl->c);
    if (cl->log != NULL)
        fclose(cl->log);
    cl->log = NULL;
    if (cl->failed)
        fprintf(stderr, "%s: the cluster's logs are kept in %s\n", prog,
                cl->dir);
    else
        rm_rf(cl->dir);
}

/* The index of the running node called name, or -1. */
static int cl_node(const struct cl *cl, const char *name, size_t len)
{
    int i;

    for (i = 0; i < cl->c.nnodes; i++)
        if (strlen(cl->c.nodes[i].id) == len &&
            memcmp(cl->c.nodes[i].id, name, len) == 0)
            return i;
    return -1;
}

/* A running node that answers INFO, from first on, or -1. */
static int cl_any(const struct cl *cl)
{
    int i;

    for (i = cl->first; i < cl->first + cl->count; i++)
        if (chaos_node_up(&cl->c, i))
            return i;
    return -1;
}

/* Whether every unit has a running primary, no move under way and, with
 * replicas > 1, replicas - 1 backups all in sync, as node via sees the
 * map. With route, fills it: per shard the connection index of the
 * primary (its node index minus cl->first). 1 yes, 0 not yet (why). */
static int cl_units_ok(const struct cl *cl, int via, int replicas,
                       struct route *route, char *why, size_t cap)
{
    char *out = NULL;
    const char *p;
    int units = 0;

    if (chaos_node_info(&cl->c, via, "shards", 5000, &out) != 0) {
        snprintf(why, cap, "%s does not answer INFO shards",
                 cl->c.nodes[via].id);
        return 0;
    }
    for (p = out; p != NULL && *p != '\0';) {
        const char *nl = strchr(p, '\n'), *o, *b;
        size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
        unsigned long shard;
        int owner, nb = 0;
        char line[512];

        snprintf(line, sizeof line, "%.*s", (int)len, p);
        p = nl != NULL ? nl + 1 : NULL;
        if (strncmp(line, "unit ", 5) != 0)
            continue;
        units++;
        o = strstr(line, " owner ");
        if (o == NULL || strstr(line, " target ") != NULL ||
            strstr(line, " out_of_sync ") != NULL) {
            snprintf(why, cap, "not yet: %s", line);
            free(out);
            return 0;
        }
        o += 7;
        owner = cl_node(cl, o, strcspn(o, " "));
        if (owner < 0 || !chaos_node_up(&cl->c, owner)) {
            snprintf(why, cap, "owner not up: %s", line);
            free(out);
            return 0;
        }
        if ((b = strstr(line, " backups ")) != NULL)
            for (nb = 1, b += 9; *b != '\0' && *b != ' '; b++)
                nb += *b == ',';
        if (nb != replicas - 1) {
            snprintf(why, cap, "backups: %s", line);
            free(out);
            return 0;
        }
        /* "unit CAP SHARD owner": the shard is the third word. */
        shard = strtoul(strchr(line + 5, ' ') + 1, NULL, 10);
        if (route != NULL && shard < 65536)
            route->owner[shard] = owner - cl->first;
    }
    free(out);
    if (units == 0) {
        snprintf(why, cap, "no units yet");
        return 0;
    }
    return 1;
}

/* Waits (at most CL_SETTLE_S) until the cluster has settled and every
 * unit is served with all its replicas in sync. */
static int cl_wait_ready(struct cl *cl, int replicas, struct route *route)
{
    int64_t deadline = chaos_mono_ns() + CL_SETTLE_S * 1000000000LL;
    char why[600] = "";
    int via;

    while (chaos_mono_ns() < deadline) {
        if ((via = cl_any(cl)) >= 0 &&
            chaos_cluster_settled(&cl->c, why, sizeof why) &&
            cl_units_ok(cl, via, replicas, route, why, sizeof why))
            return 0;
        chaos_sleep_ms(100);
    }
    fprintf(stderr, "%s: the cluster did not settle in %d s: %s\n", prog,
            CL_SETTLE_S, why);
    cl->failed = 1;
    return -1;
}

/* Starts nodes first.. of cluster name with replicas, and waits until
 * they serve every unit with its replicas in sync. */
static int cl_start(struct cl *cl, int first, const char *name, int replicas,
                    struct route *route)
{
    char err[256];
    int i;

    cl->first = first;
    snprintf(cl->c.name, sizeof cl->c.name, "%s", name);
    cl->c.replicas = replicas;
    sync(); /* as env_open: earlier runs' dirty pages */
    for (i = first; i < first + cl->count; i++)
        if (chaos_node_start(&cl->c, i, err, sizeof err) != 0) {
            fprintf(stderr, "%s: %s\n", prog, err);
            cl->failed = 1;
            return -1;
        }
    if (route != NULL) {
        route->shards = (uint32_t)cl->c.shards;
        for (i = 0; i < 65536; i++)
            route->owner[i] = -1;
    }
    return cl_wait_ready(cl, replicas, route);
}

/* e: the driver's connections to the running nodes, routed by route
 * (which also gets their addresses). */
static int cl_connect(struct env *e, const struct config *cfg,
                      const struct cl *cl, struct route *route)
{
    int i;

    memset(e, 0, sizeof *e);
    e->cfg = cfg;
    e->transport = T_TCP;
    e->route = route;
    e->conns = xcalloc((size_t)cl->count, sizeof *e->conns);
    route->nnodes = (unsigned)cl->count;
    for (i = 0; i < cl->count; i++)
        snprintf(route->addr[i], sizeof route->addr[i], "%s",
                 cl->c.nodes[cl->first + i].addr);
    for (i = 0; i < cl->count; i++) {
        struct tconn *tc = &e->conns[i];
        const char *addr = cl->c.nodes[cl->first + i].addr;
        int rc = keel_client_connect(addr, CONNECT_TIMEOUT_MS, &tc->c);

        if (rc != 0) {
            fprintf(stderr, "%s: cannot connect to %s: %s\n", prog, addr,
                    keel_strerror(rc));
            env_close(e);
            return -1;
        }
        tc->fd = keel_client_fd(tc->c);
        tc->rcap = 1u << 20;
        tc->rbuf = xcalloc(1, tc->rcap);
        e->nconns++;
    }
    return 0;
}

/* ---------------------------------------------------------- replication */

/* The hot, create and latency loads of a single node, on a cluster of
 * three with one replica per unit, then on another with three. Results: hot R=1, hot R=3, create R=1, create R=3, latency R=1,
 * latency R=3. The R=3 rows carry the ratios to R=1. */
static int wl_replication(struct env *e0, struct result *res, int *nres)
{
    static const int reps[2] = {1, 3};
    static const char *const what[6] = {
        "hot, R=1: counter incr, window 200",
        "hot, R=3: counter incr, window 200",
        "create, R=1: new counter incr, window 500",
        "create, R=3: new counter incr, window 500",
        "latency, R=1: sequential incr",
        "latency, R=3: sequential incr"};
    int (*const loads[3])(struct env *, struct result *, int *) = {
        wl_hot, wl_create, wl_latency};
    static struct route route;
    const struct config *cfg = e0->cfg;
    struct cl cl;
    char name[48];
    int k, l, rc = 0, n;

    *nres = 6;
    for (k = 0; k < 6; k++) {
        result_init(&res[k], "replication", e0, "", what[k]);
        res[k].transport = "tcp";
    }
    if (cl_open(&cl, cfg, 2 * CL_NODES) != 0) {
        cl_close(&cl);
        return result_fail(&res[0], "cannot start ZooKeeper");
    }
    for (k = 0; k < 2 && rc == 0; k++) {
        struct env e;

        snprintf(name, sizeof name, "bench%d-r%d", (int)getpid(), reps[k]);
        if (cl_start(&cl, k * CL_NODES, name, reps[k], &route) != 0) {
            rc = result_fail(&res[k], "the cluster with R=%d did not start "
                                      "or settle", reps[k]);
            break;
        }
        if (cl_connect(&e, cfg, &cl, &route) != 0) {
            rc = result_fail(&res[k], "cannot connect to the cluster");
            break;
        }
        for (l = 0; l < 3 && rc == 0; l++) {
            struct result *r = &res[2 * l + k];
            if (!(cfg->repl_loads & (1u << l))) {
                r->skipped = "not in --repl-loads";
                continue;
            }
            rc = loads[l](&e, r, &n);
            r->workload = "replication";
            r->transport = "tcp";
            r->what = what[2 * l + k];
            add_extra(r, "replicas", "R", 0, reps[k]);
        }
        env_close(&e);
        for (l = k * CL_NODES; l < (k + 1) * CL_NODES; l++)
            chaos_node_kill(&cl.c, l);
    }
    if (rc == 0)
        for (l = 0; l < 3; l++) {
            struct result *r1 = &res[2 * l], *r3 = &res[2 * l + 1];
            double ratio;
            if (r1->skipped != NULL)
                continue;
            if (l < 2) {
                ratio = r1->ops_per_s > 0 ? r3->ops_per_s / r1->ops_per_s : 0;
                add_extra(r3, "ratio", "R3/R1", 2, ratio);
                add_extra(r3, "target_met", "target >= 0.5 met", 0,
                          ratio >= 0.5);
            } else {
                ratio = r1->lat.p50 > 0 ? r3->lat.p50 / r1->lat.p50 : 0;
                add_extra(r3, "p50_ratio", "p50 R3/R1", 2, ratio);
                add_extra(r3, "p99_ratio", "p99 R3/R1", 2,
                          r1->lat.p99 > 0 ? r3->lat.p99 / r1->lat.p99 : 0);
                add_extra(r3, "target_met", "target p50 <= 2x met", 0,
                          ratio <= 2.0);
            }
        }
    if (rc != 0)
        cl.failed = 1;
    cl_close(&cl);
    return rc;
}

/* ------------------------------------------------------------- failover */

/* One incr of the loaded unit's counter, as the client saw it. */
struct fo_rec {
    uint64_t t0, t1; /* sent, answered (or failed) */
    int ok;
};

/* The load: one client thread making sequential keyed `incr` calls to
 * counter/fo. A call that fails is retried with its key (on another node
 * after a transport error or a refusal), so every increment takes effect
 * once: each reply must be the previous one plus 1, whatever failed over
 * in between. */
struct fo_load {
    const struct cl *cl;
    pthread_t thread;
    pthread_mutex_t mu;
    int stop;            /* under mu */
    char prefer[64];     /* under mu: connect here next (the primary) */
    unsigned prefer_gen; /* under mu */
    uint64_t last_ok;    /* under mu: when the latest success came back */
    struct fo_rec *recs; /* written by the thread; read after the join */
    size_t nrecs;
    int64_t value;       /* the counter, as acknowledged */
    char error[300];     /* a wrong reply: the workload fails */
};

static void fo_connect(struct fo_load *fl, keel_client **k, unsigned *rr,
                       unsigned *gen)
{
    char addr[64];
    int i;

    pthread_mutex_lock(&fl->mu);
    if (*gen != fl->prefer_gen) {
        *gen = fl->prefer_gen;
        snprintf(addr, sizeof addr, "%s", fl->prefer);
    } else {
        i = fl->cl->first + (int)((*rr)++ % CL_NODES);
        snprintf(addr, sizeof addr, "%s", fl->cl->c.nodes[i].addr);
    }
    pthread_mutex_unlock(&fl->mu);
    if (keel_client_connect(addr, FO_CALL_TIMEOUT_MS, k) != 0)
        *k = NULL;
}

static void *fo_thread(void *arg)
{
    struct fo_load *fl = arg;
    keel_client *k = NULL;
    uint8_t key[KEEL_REQUEST_KEY_LEN];
    unsigned rr = 0, gen = 0;
    int need_key = 1;

    for (;;) {
        struct fo_rec *rec;
        char *reply = NULL;
        size_t len = 0;
        int rc, stop, moved;
        int64_t v;

        pthread_mutex_lock(&fl->mu);
        stop = fl->stop;
        moved = gen != fl->prefer_gen;
        pthread_mutex_unlock(&fl->mu);
        if (stop)
            break;
        if (fl->nrecs == FO_RECORDS) {
            snprintf(fl->error, sizeof fl->error, "more than %u calls",
                     FO_RECORDS);
            break;
        }
        if (moved && k != NULL) {
            keel_client_close(k);
            k = NULL;
        }
        if (need_key) {
            if (keel_client_new_key(key) != 0) {
                snprintf(fl->error, sizeof fl->error, "no request key");
                break;
            }
            need_key = 0;
        }
        rec = &fl->recs[fl->nrecs++];
        rec->t0 = now_ns();
        rec->ok = 0;
        if (k == NULL)
            fo_connect(fl, &k, &rr, &gen);
        if (k == NULL) {
            rec->t1 = now_ns();
            chaos_sleep_ms(5);
            continue;
        }
        rc = keel_client_call_keyed(k, KEEL_FRAME_CALL, key, "counter", "fo",
                                    2, "incr", 4, &reply, &len);
        rec->t1 = now_ns();
        if (rc == 0) {
            if (parse_reply_i64(reply, len, &v) != 0 || v != fl->value + 1) {
                snprintf(fl->error, sizeof fl->error,
                         "incr answered '%.*s' after %" PRId64, (int)len,
                         reply, fl->value);
                free(reply);
                break;
            }
        } else if (rc == KEEL_EALREADY) {
            v = fl->value + 1; /* it ran; its reply was not kept */
        } else {
            /* Transport errors, EUNAVAIL, EINDOUBT, ESTOPPING...: the
             * same key again, through another connection. */
            free(reply);
            keel_client_close(k);
            k = NULL;
            chaos_sleep_ms(5);
            continue;
        }
        free(reply);
        fl->value = v;
        need_key = 1;
        rec->ok = 1;
        pthread_mutex_lock(&fl->mu);
        fl->last_ok = rec->t1;
        pthread_mutex_unlock(&fl->mu);
    }
    if (k != NULL)
        keel_client_close(k);
    return NULL;
}

/* The primary of counter/fo as node via sees it, or -1. */
static int fo_primary(const struct cl *cl, int via)
{
    char *out = NULL, *o;
    int i = -1;
    if (chaos_node_info(&cl->c, via, "where counter fo", 3000, &out) == 0 &&
        (o = strstr(out, "\nowner ")) != NULL) {
        o += 7;
        i = cl_node(cl, o, strcspn(o, "\n"));
    }
    free(out);
    return i;
}

static int cmp_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;

    return (a > b) - (a < b);
}

/* Per round: the outage the client saw, from the first call after the
 * kill that failed or stalled to the next success (0 when none failed),
 * and from the kill to that success; in ns. */
static void fo_outages(const struct fo_load *fl, const uint64_t *kill_t,
                       int rounds, int64_t *outage, int64_t *from_kill)
{
    size_t i = 0;
    int r;

    for (r = 0; r < rounds; r++) {
        size_t bad = SIZE_MAX;

        outage[r] = from_kill[r] = -1;
        while (i < fl->nrecs && fl->recs[i].t1 < kill_t[r])
            i++;
        for (; i < fl->nrecs; i++) {
            const struct fo_rec *c = &fl->recs[i];
            int stalled = c->t1 - c->t0 > (uint64_t)FO_STALL_MS * 1000000;
            if (bad == SIZE_MAX && (!c->ok || stalled))
                bad = i;
            if (c->ok) {
                outage[r] = bad == SIZE_MAX
                                ? 0
                                : (int64_t)(c->t1 - fl->recs[bad].t0);
                from_kill[r] = (int64_t)(c->t1 - kill_t[r]);
                break;
            }
        }
    }
}

static double pct_ms(const int64_t *sorted, int n, double q)
{
    int r = (int)ceil(q * n);

    if (r < 1)
        r = 1;
    return (double)sorted[r - 1] / 1e6;
}

static int wl_failover(struct env *e0, struct result *res, int *nres)
{
    const struct config *cfg = e0->cfg;
    struct result *r = &res[0];
    static struct fo_load fl;
    uint64_t *kill_t = xcalloc((size_t)cfg->rounds, sizeof *kill_t);
    int64_t *outage = xcalloc((size_t)cfg->rounds, sizeof *outage);
    int64_t *from_kill = xcalloc((size_t)cfg->rounds, sizeof *from_kill);
    struct cl cl;
    char name[48];
    int round, rc = 0, started = 0;
    uint64_t calls_ok = 0;
    size_t i;

    *nres = 1;
    result_init(r, "failover", e0, "ms p99 down",
                "kill -9 of counter/fo's primary, sequential keyed incr");
    r->transport = "tcp";
    memset(&fl, 0, sizeof fl);
    if (cl_open(&cl, cfg, CL_NODES) != 0) {
        rc = result_fail(r, "cannot start ZooKeeper");
        goto out;
    }
    snprintf(name, sizeof name, "bench%d-fo", (int)getpid());
    if (cl_start(&cl, 0, name, 3, NULL) != 0) {
        rc = result_fail(r, "the cluster did not start or settle");
        goto out;
    }
    fl.cl = &cl;
    fl.recs = xcalloc(FO_RECORDS, sizeof *fl.recs);
    pthread_mutex_init(&fl.mu, NULL);
    if (pthread_create(&fl.thread, NULL, fo_thread, &fl) != 0) {
        rc = result_fail(r, "cannot start the client thread");
        goto out;
    }
    started = 1;
    for (round = 0; round < cfg->rounds && rc == 0; round++) {
        int via = cl_any(&cl), p = via >= 0 ? fo_primary(&cl, via) : -1;
        uint64_t deadline, before;
        char err[256];

        if (p < 0 || !chaos_node_up(&cl.c, p)) {
            rc = result_fail(r, "round %d: no primary for counter/fo",
                             round + 1);
            break;
        }
        /* The client goes to the primary, as one that read the map. */
        pthread_mutex_lock(&fl.mu);
        snprintf(fl.prefer, sizeof fl.prefer, "%s", cl.c.nodes[p].addr);
        fl.prefer_gen++;
        before = fl.last_ok;
        pthread_mutex_unlock(&fl.mu);
        chaos_sleep_ms(FO_STEADY_MS);
        pthread_mutex_lock(&fl.mu);
        if (fl.last_ok == before || fl.error[0] != '\0') {
            pthread_mutex_unlock(&fl.mu);
            rc = result_fail(r, "round %d: no success before the kill%s%s",
                             round + 1, fl.error[0] ? ": " : "", fl.error);
            break;
        }
        pthread_mutex_unlock(&fl.mu);
        if (cfg->progress)
            fprintf(stderr, "%s: failover round %d: kill -9 %s\n", prog,
                    round + 1, cl.c.nodes[p].id);
        kill_t[round] = now_ns();
        chaos_node_kill(&cl.c, p);
        deadline = now_ns() + (uint64_t)FO_DOWN_S * 1000000000u;
        for (;;) {
            uint64_t ok;
            pthread_mutex_lock(&fl.mu);
            ok = fl.last_ok;
            pthread_mutex_unlock(&fl.mu);
            if (ok > kill_t[round])
                break;
            if (now_ns() > deadline || fl.error[0] != '\0') {
                rc = result_fail(r, "round %d: no success within %d s of "
                                    "the kill%s%s",
                                 round + 1, FO_DOWN_S,
                                 fl.error[0] ? ": " : "", fl.error);
                break;
            }
            chaos_sleep_ms(5);
        }
        if (rc != 0)
            break;
        /* Back on its data; the load goes on meanwhile. */
        if (chaos_node_start(&cl.c, p, err, sizeof err) != 0) {
            rc = result_fail(r, "round %d: %s", round + 1, err);
            break;
        }
        if (cl_wait_ready(&cl, 3, NULL) != 0)
            rc = result_fail(r, "round %d: %s did not come back in sync",
                             round + 1, cl.c.nodes[p].id);
    }
out:
    if (started) {
        pthread_mutex_lock(&fl.mu);
        fl.stop = 1;
        pthread_mutex_unlock(&fl.mu);
        pthread_join(fl.thread, NULL);
        pthread_mutex_destroy(&fl.mu);
        if (rc == 0 && fl.error[0] != '\0')
            rc = result_fail(r, "%s", fl.error);
    }
    if (rc == 0) {
        /* Every acknowledged increment is there, once. */
        int via = cl_any(&cl);
        keel_client *k = NULL;
        char *reply = NULL, want[32];
        int crc = via < 0 ? KEEL_ECONN
                          : keel_client_connect(cl.c.nodes[via].addr,
                                                FO_CALL_TIMEOUT_MS, &k);
        if (crc == 0)
            crc = keel_client_call(k, KEEL_FRAME_CALL, "counter", "fo", 2,
                                   "get", 3, &reply, NULL);
        snprintf(want, sizeof want, "%" PRId64, fl.value);
        if (crc != 0 || reply == NULL || strcmp(reply, want) != 0)
            rc = result_fail(r, "counter/fo reads %s (%s), expected %s",
                             reply ? reply : "nothing", keel_strerror(crc),
                             want);
        free(reply);
        if (k != NULL)
            keel_client_close(k);
    }
    if (rc == 0) {
        int n = cfg->rounds;
        for (i = 0; i < fl.nrecs; i++)
            calls_ok += fl.recs[i].ok;
        fo_outages(&fl, kill_t, n, outage, from_kill);
        for (round = 0; round < n; round++)
            if (outage[round] < 0)
                rc = result_fail(r, "round %d: no success recorded",
                                 round + 1);
    }
    if (rc == 0) {
        int n = cfg->rounds;
        double sum = 0;
        for (round = 0; round < n; round++)
            sum += (double)outage[round];
        qsort(outage, (size_t)n, sizeof *outage, cmp_i64);
        qsort(from_kill, (size_t)n, sizeof *from_kill, cmp_i64);
        r->ops = (uint64_t)n;
        r->ops_per_s = pct_ms(outage, n, 0.99);
        r->lat.avg = sum / n / 1000.0;
        r->lat.p50 = pct_ms(outage, n, 0.50) * 1000.0;
        r->lat.p95 = pct_ms(outage, n, 0.95) * 1000.0;
        r->lat.p99 = pct_ms(outage, n, 0.99) * 1000.0;
        r->lat.max = (double)outage[n - 1] / 1000.0;
        add_extra(r, "outage_p50_ms", "down p50 ms", 0,
                  pct_ms(outage, n, 0.50));
        add_extra(r, "outage_p99_ms", "down p99 ms", 0,
                  pct_ms(outage, n, 0.99));
        add_extra(r, "outage_max_ms", "down max ms", 0,
                  (double)outage[n - 1] / 1e6);
        add_extra(r, "from_kill_p50_ms", "kill to success p50 ms", 0,
                  pct_ms(from_kill, n, 0.50));
        add_extra(r, "from_kill_max_ms", "kill to success max ms", 0,
                  (double)from_kill[n - 1] / 1e6);
        add_extra(r, "calls", "calls", 0, (double)calls_ok);
        add_extra(r, "session_ms", "session ms", 0, cfg->session_ms);
        add_extra(r, "target_met", "target p99 <= 5 s met", 0,
                  pct_ms(outage, n, 0.99) <= 5000.0);
    }
    if (rc != 0)
        cl.failed = 1;
    cl_close(&cl);
    free(fl.recs);
    free(kill_t);
    free(outage);
    free(from_kill);
    return rc;
}

/* -------------------------------------------------------------- catchup */

/* What a restart costs a cluster with replicas, as in a rolling restart:
 * three keeld with --replicas 3 hold --catchup-mb MiB of kv entries
 * (CU_VALUE-byte values, one entry per actor, written with a window of
 * CU_WINDOW: the first result, in puts/s). Then n2 is stopped in order
 * (SIGTERM: it hands the units it leads to in-sync backups and exits)
 * and started again on its data; the second result is the time from its
 * start until every unit has its two backups in sync again, in ms, with
 * what the restart moved (snapshot and stream bytes, snapshots, drop
 * requests: cl_stats_get).
 * Meanwhile a client thread makes sequential `incr` calls to a counter
 * n0 leads: their latency during the catch-up, against the same before
 * the stop, is what catching up costs the clients of the primaries that
 * send the snapshots. Every entry read back afterwards must be the value
 * written, and the counter the number of increments answered. */
#define CU_VALUE 16384
#define CU_WINDOW 64
#define CU_BASELINE_MS 2000
#define CU_LEAVE_S 120
#define CU_PROBE_MAX (1u << 20)
#define CU_SAMPLE 256

static char cu_msg[6 + CU_VALUE];

/* Entry i's value: its number, then a fill that depends on it. */
static void cu_value(uint64_t i, char *v)
{
    size_t k, n = (size_t)snprintf(v, 24, "%020" PRIu64, i);

    for (k = n; k < CU_VALUE; k++)
        v[k] = (char)('a' + (i + k) % 26);
}

static void gen_cufill(const struct phase *ph, uint64_t i, struct op *op)
{
    (void)ph;
    op->type = "kv";
    memcpy(op->id, "cu", 2);
    op->idlen = 2 + put_u64(op->id + 2, i);
    memcpy(cu_msg, "put v ", 6);
    cu_value(i, cu_msg + 6);
    op->msg = cu_msg;
    op->len = sizeof cu_msg;
}

/* The probe: sequential incr of counter/<id> through n0. */
struct cu_probe {
    const char *addr;
    char id[32];
    pthread_t thread;
    pthread_mutex_t mu;
    int stop;
    uint64_t *t0, *lat; /* per answered call: sent at, latency (ns) */
    size_t n;
    uint64_t failed;
    int unknown;   /* a call failed since the last answer */
    int64_t value; /* the last answer */
    char first_fail[96]; /* the first failed call's error */
    char error[256];
};

static void *cu_probe_thread(void *arg)
{
    struct cu_probe *p = arg;
    keel_client *k = NULL;

    for (;;) {
        char *reply = NULL;
        uint64_t t0, t1;
        int rc, stop;

        pthread_mutex_lock(&p->mu);
        stop = p->stop || p->n == CU_PROBE_MAX;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            break;
        if (k == NULL &&
            (rc = keel_client_connect(p->addr, CONNECT_TIMEOUT_MS, &k)) != 0) {
            pthread_mutex_lock(&p->mu);
            p->failed++;
            pthread_mutex_unlock(&p->mu);
            chaos_sleep_ms(10);
            continue;
        }
        t0 = now_ns();
        rc = keel_client_call(k, KEEL_FRAME_CALL, "counter", p->id,
                              strlen(p->id), "incr", 4, &reply, NULL);
        t1 = now_ns();
        pthread_mutex_lock(&p->mu);
        if (rc == 0 && reply != NULL) {
            int64_t v = strtoll(reply, NULL, 10);
            /* One more than the last answer; after a failed call, whose
             * increment may have run, more than the last answer. */
            if ((p->unknown ? v <= p->value : v != p->value + 1) &&
                p->error[0] == '\0')
                snprintf(p->error, sizeof p->error,
                         "counter/%s answered %s after %" PRId64, p->id,
                         reply, p->value);
            p->value = v;
            p->unknown = 0;
            p->t0[p->n] = t0;
            p->lat[p->n++] = t1 - t0;
        } else {
            /* Did not run, or its outcome is unknown. */
            if (p->failed++ == 0)
                snprintf(p->first_fail, sizeof p->first_fail, "%s",
                         keel_err_name(rc));
            p->unknown = 1;
        }
        pthread_mutex_unlock(&p->mu);
        free(reply);
        if (rc != 0 && rc != KEEL_EUNAVAIL && rc != KEEL_ESTOPPING) {
            keel_client_close(k);
            k = NULL;
        }
    }
    if (k != NULL)
        keel_client_close(k);
    return NULL;
}

/* Latency of the probe's calls sent within [from, to), into r (µs). */
static size_t cu_window(const struct cu_probe *p, uint64_t from, uint64_t to,
                        struct lat *out)
{
    struct phase ph;
    size_t i, n = 0;

    memset(&ph, 0, sizeof ph);
    ph.lat_ns = xcalloc(p->n ? p->n : 1, sizeof *ph.lat_ns);
    for (i = 0; i < p->n; i++)
        if (p->t0[i] >= from && p->t0[i] < to)
            ph.lat_ns[n++] = p->lat[i];
    ph.ops = n;
    phase_latency(&ph, out);
    free(ph.lat_ns);
    return n;
}

/* Reads back CU_SAMPLE entries spread over the n written through any
 * node: each must hold the value written. */
static int cu_verify(const struct cl *cl, uint64_t n, struct result *r)
{
    keel_client *k = NULL;
    char *want = xcalloc(1, CU_VALUE + 1);
    int via = cl_any(cl), rc = 0;
    uint64_t s;

    if (via < 0 || keel_client_connect(cl->c.nodes[via].addr,
                                       CONNECT_TIMEOUT_MS, &k) != 0) {
        free(want);
        return result_fail(r, "cannot connect to read the entries back");
    }
    for (s = 0; s < CU_SAMPLE && rc == 0; s++) {
        uint64_t i = s * n / CU_SAMPLE;
        char id[32], *reply = NULL;
        size_t len = 0;
        int crc;

        snprintf(id, sizeof id, "cu%" PRIu64, i);
        cu_value(i, want);
        crc = keel_client_call(k, KEEL_FRAME_CALL, "kv", id, strlen(id),
                               "get v", 5, &reply, &len);
        if (crc != 0 || len != CU_VALUE || memcmp(reply, want, len) != 0)
            rc = result_fail(r, "kv/%s reads %s after the catch-up", id,
                             crc != 0 ? keel_strerror(crc)
                                      : "another value");
        free(reply);
    }
    keel_client_close(k);
    free(want);
    return rc;
}

static int wl_catchup(struct env *e0, struct result *res, int *nres)
{
    const struct config *cfg = e0->cfg;
    struct result *rf = &res[0], *r = &res[1];
    static struct route route;
    static struct cu_probe pr;
    uint64_t nvals = (uint64_t)cfg->catchup_mb * (1u << 20) / CU_VALUE;
    uint64_t base0 = 0, base1 = 0, stop_t, start_t = 0, ready_t = 0;
    struct cl_stats s0, s1;
    struct lat before, during;
    struct phase p;
    keel_stats a, b;
    struct env e;
    struct cl cl;
    char name[48], err[256];
    int rc = 0, started = 0, connected = 0, k;
    size_t nbefore = 0, nduring = 0;
    const int victim = 2;

    *nres = 2;
    result_init(rf, "catchup", e0, "puts/s",
                "fill, R=3: kv put of 16 KiB values, window 64");
    result_init(r, "catchup", e0, "ms to in sync",
                "n2 stopped in order and restarted on its data");
    rf->transport = r->transport = "tcp";
    memset(&pr, 0, sizeof pr);
    if (cl_open(&cl, cfg, CL_NODES) != 0) {
        cl_close(&cl);
        return result_fail(rf, "cannot start ZooKeeper");
    }
    snprintf(name, sizeof name, "bench%d-cu", (int)getpid());
    if (cfg->catchup_rate != NULL) {
        cl.args[2] = "--catchup-mib-s";
        cl.args[3] = cfg->catchup_rate;
        cl.args[4] = NULL;
        add_extra(r, "catchup_mib_s", "MiB/s", 0, atof(cfg->catchup_rate));
    }
    if (cl_start(&cl, 0, name, 3, &route) != 0) {
        rc = result_fail(rf, "the cluster did not start or settle");
        goto out;
    }
    if (cl_connect(&e, cfg, &cl, &route) != 0) {
        rc = result_fail(rf, "cannot connect to the cluster");
        goto out;
    }
    connected = 1;
    phase_init(&p, "fill", nvals, CU_WINDOW);
    p.gen = gen_cufill;
    phase_record_latency(&p);
    rc = measure(&e, &p, rf, &a, &b);
    phase_fini(&p);
    if (rc != 0)
        goto out;
    add_extra(rf, "mb_per_s", "MiB/s", 1,
              rf->ops_per_s * CU_VALUE / (1 << 20));
    add_extra(rf, "data_mb", "MiB", 0, (double)cfg->catchup_mb);

    /* The probe's counter: one whose unit n0 leads. */
    for (k = 0; k < 100000; k++) {
        int len = snprintf(pr.id, sizeof pr.id, "probe%d", k);
        if (route.owner[keel_shard_of("counter", pr.id, (size_t)len,
                                      route.shards)] == 0)
            break;
    }
    if (k == 100000) {
        rc = result_fail(r, "n0 leads no unit");
        goto out;
    }
    pr.addr = cl.c.nodes[0].addr;
    pr.t0 = xcalloc(CU_PROBE_MAX, sizeof *pr.t0);
    pr.lat = xcalloc(CU_PROBE_MAX, sizeof *pr.lat);
    pthread_mutex_init(&pr.mu, NULL);
    if (pthread_create(&pr.thread, NULL, cu_probe_thread, &pr) != 0) {
        rc = result_fail(r, "cannot start the probe thread");
        goto out;
    }
    started = 1;
    base0 = now_ns();
    chaos_sleep_ms(CU_BASELINE_MS);
    base1 = now_ns();

    /* The restart, as an operator makes it. */
    if (cfg->progress)
        fprintf(stderr, "%s: catchup: stopping %s in order\n", prog,
                cl.c.nodes[victim].id);
    stop_t = now_ns();
    if (kill(cl.c.nodes[victim].pid, SIGTERM) != 0 ||
        !chaos_node_wait_exit(&cl.c, victim, CU_LEAVE_S * 1000)) {
        rc = result_fail(r, "%s did not stop in order within %d s",
                         cl.c.nodes[victim].id, CU_LEAVE_S);
        goto out;
    }
    (void)chaos_node_reap(&cl.c, victim);
    add_extra(r, "leave_ms", "stop ms", 0,
              (double)(now_ns() - stop_t) / 1e6);
    cl_stats_get(&route, &s0); /* n2, down, counts 0 */
    start_t = now_ns();
    if (chaos_node_start(&cl.c, victim, err, sizeof err) != 0) {
        rc = result_fail(r, "%s", err);
        goto out;
    }
    if (cl_wait_ready(&cl, 3, NULL) != 0) {
        rc = result_fail(r, "%s did not come back in sync",
                         cl.c.nodes[victim].id);
        goto out;
    }
    ready_t = now_ns();
    cl_stats_get(&route, &s1);
out:
    if (started) {
        pthread_mutex_lock(&pr.mu);
        pr.stop = 1;
        pthread_mutex_unlock(&pr.mu);
        pthread_join(pr.thread, NULL);
        pthread_mutex_destroy(&pr.mu);
        if (rc == 0 && pr.error[0] != '\0')
            rc = result_fail(r, "%s", pr.error);
    }
    if (rc == 0) {
        nbefore = cu_window(&pr, base0, base1, &before);
        nduring = cu_window(&pr, start_t, ready_t, &during);
        r->ops = 1;
        r->ops_per_s = (double)(ready_t - start_t) / 1e6;
        r->lat = during;
        add_extra(r, "snapshot_mb", "MiB in snapshots", 1,
                  (s1.snap_bytes - s0.snap_bytes) / (1 << 20));
        add_extra(r, "snapshots", "snapshots", 0, s1.snaps - s0.snaps);
        add_extra(r, "stream_mb", "MiB in streams", 1,
                  (s1.stream_bytes - s0.stream_bytes) / (1 << 20));
        add_extra(r, "drop_requests", "drops asked", 0, s1.drops - s0.drops);
        add_extra(r, "probe_calls", "probe calls", 0, (double)nduring);
        add_extra(r, "probe_p50_before_us", "probe p50 before us", 0,
                  before.p50);
        add_extra(r, "probe_p99_before_us", "probe p99 before us", 0,
                  before.p99);
        add_extra(r, "probe_failed", "probe failed", 0, (double)pr.failed);
        if (pr.failed > 0)
            fprintf(stderr, "%s: catchup: %" PRIu64 " probe calls failed, "
                            "the first with %s\n",
                    prog, pr.failed, pr.first_fail);
        if (nbefore == 0)
            rc = result_fail(r, "the probe made no call before the stop");
    }
    if (rc == 0)
        rc = cu_verify(&cl, nvals, r);
    if (rc == 0 && pr.failed == 0) {
        char want[32];
        snprintf(want, sizeof want, "%" PRId64, pr.value);
        rc = call_one(&e, r, "counter", pr.id, "get", want);
    }
    if (connected)
        env_close(&e);
    if (rc != 0)
        cl.failed = 1;
    cl_close(&cl);
    free(pr.t0);
    free(pr.lat);
    return rc;
}

/* --------------------------------------------------------------- outbox */

/* Actor to actor messages across two nodes, durable: OB_SENDERS "obsend"
 * actors whose units node 0 owns each queue OB_FANOUT messages per call
 * (keel_turn_send, committed with the turn) to "obrecv" actors whose
 * units node 1 owns; R=1, --durability as given (fsync by default). The
 * rate is what the receivers handled over the time from the first call
 * to the last message handled, read from the receivers' own counts; the
 * latency is each message's, from the turn that queued it to the turn
 * that handled it, from the receivers' histograms (quarter-octave
 * buckets: about 19 % wide). Under that load it is mostly the wait
 * behind the sender's earlier messages (one at a time per sender); a
 * second result has OB_SINGLE messages sent one after the other, each
 * alone. Types: tools/keel-bench-outbox.c. */
#define OB_NODES 2
#define OB_SENDERS 200
#define OB_RECEIVERS 50
#define OB_FANOUT 10
#define OB_CALLS 2000
#define OB_WAIT_S 120
#define OB_SINGLE 200
#define OB_BUCKETS 112

static char ob_snd[OB_SENDERS][16], ob_rcv[OB_RECEIVERS][16];
static uint64_t ob_count, ob_sum_us, ob_hist[OB_BUCKETS];

/* Finds want ids "<prefix><k>" of type whose shard node `node` owns. */
static int ob_pick(const struct route *route, const char *type,
                   const char *prefix, int node, char ids[][16], int want)
{
    int k, got = 0;

    for (k = 0; k < 100000 && got < want; k++) {
        char id[16];
        int n = snprintf(id, sizeof id, "%s%d", prefix, k);
        uint32_t sh = keel_shard_of(type, id, (size_t)n, route->shards);
        if (route->owner[sh] == node)
            memcpy(ids[got++], id, (size_t)n + 1);
    }
    return got == want ? 0 : -1;
}

/* Call i: sender i % OB_SENDERS sends to OB_FANOUT receivers in turn. */
static void gen_obsend(const struct phase *ph, uint64_t i, struct op *op)
{
    size_t off = 4;
    int j;

    (void)ph;
    op->type = "obsend";
    op->idlen = strlen(ob_snd[i % OB_SENDERS]);
    memcpy(op->id, ob_snd[i % OB_SENDERS], op->idlen);
    memcpy(op->msgbuf, "send", 4);
    for (j = 0; j < OB_FANOUT; j++) {
        const char *r = ob_rcv[(i * OB_FANOUT + (uint64_t)j) % OB_RECEIVERS];
        size_t rl = strlen(r);
        if (off + 1 + rl >= sizeof op->msgbuf)
            break;
        op->msgbuf[off++] = ' ';
        memcpy(op->msgbuf + off, r, rl);
        off += rl;
    }
    op->msg = op->msgbuf;
    op->len = off;
}

/* Call i of the single phase: one message from sender i to receiver i. */
static void gen_obsingle(const struct phase *ph, uint64_t i, struct op *op)
{
    const char *rcv = ob_rcv[i % OB_RECEIVERS];

    (void)ph;
    op->type = "obsend";
    op->idlen = strlen(ob_snd[i % OB_SENDERS]);
    memcpy(op->id, ob_snd[i % OB_SENDERS], op->idlen);
    op->len = (size_t)snprintf(op->msgbuf, sizeof op->msgbuf, "send %s", rcv);
    op->msg = op->msgbuf;
}

static void gen_obget(const struct phase *ph, uint64_t i, struct op *op)
{
    (void)ph;
    op->type = "obrecv";
    op->idlen = strlen(ob_rcv[i % OB_RECEIVERS]);
    memcpy(op->id, ob_rcv[i % OB_RECEIVERS], op->idlen);
    op->msg = "get";
    op->len = 3;
}

/* Adds a receiver's "count sum_us b0 ..." to the totals. */
static int check_obget(const struct phase *ph, uint64_t i, const void *reply,
                       size_t len, char *why, size_t whylen)
{
    char *text = xcalloc(1, len + 1), *p, *end;
    unsigned long long v;
    int k;

    (void)ph;
    memcpy(text, reply, len);
    v = strtoull(text, &end, 10);
    ob_count += v;
    p = end;
    ob_sum_us += strtoull(p, &end, 10);
    for (k = 0; k < OB_BUCKETS && end != p; k++) {
        p = end;
        v = strtoull(p, &end, 10);
        if (end != p)
            ob_hist[k] += v;
    }
    free(text);
    if (k == OB_BUCKETS)
        return 0;
    snprintf(why, whylen, "obrecv %s: reply '%.40s...' is not a count and "
                          "%d buckets",
             ob_rcv[i % OB_RECEIVERS], (const char *)reply, OB_BUCKETS);
    return -1;
}

/* The delay (us) at rank q of histogram h of n delays: the geometric
 * middle of its bucket. */
static double ob_rank(const uint64_t *h, uint64_t n, double q)
{
    uint64_t want = (uint64_t)ceil(q * (double)n), seen = 0;
    int k;

    if (want == 0)
        want = 1;
    for (k = 0; k < OB_BUCKETS; k++) {
        seen += h[k];
        if (seen >= want)
            return k == 0 ? 1.0 : pow(2.0, (k + 0.5) / 4.0);
    }
    return 0;
}

/* r's latency figures from histogram h of n delays summing sum_us. */
static void ob_lat(struct result *r, const uint64_t *h, uint64_t n,
                   uint64_t sum_us)
{
    int k;

    r->lat.avg = n > 0 ? (double)sum_us / (double)n : 0;
    r->lat.p50 = ob_rank(h, n, 0.50);
    r->lat.p95 = ob_rank(h, n, 0.95);
    r->lat.p99 = ob_rank(h, n, 0.99);
    for (k = OB_BUCKETS - 1; k > 0 && h[k] == 0; k--)
        ;
    r->lat.max = pow(2.0, (k + 1) / 4.0); /* its bucket's upper end */
}

/* Reads every receiver's figures into ob_*. */
static int ob_read(struct env *e, struct result *r)
{
    struct phase g;
    int rc;

    ob_count = ob_sum_us = 0;
    memset(ob_hist, 0, sizeof ob_hist);
    phase_init(&g, "read receivers", OB_RECEIVERS, OB_RECEIVERS);
    g.gen = gen_obget;
    g.check = check_obget;
    rc = step(e, &g, r);
    phase_fini(&g);
    return rc;
}

static int wl_outbox(struct env *e0, struct result *res, int *nres)
{
    static struct route route;
    const struct config *cfg = e0->cfg;
    struct result *r = &res[0];
    const uint64_t want = (uint64_t)OB_CALLS * OB_FANOUT;
    struct cl_stats sa, sb;
    struct phase p;
    struct env e;
    struct cl cl;
    char name[48];
    int64_t t0, t1 = 0, deadline;
    int rc = 0, k;

    *nres = 2;
    result_init(r, "outbox", e0, "msgs/s",
                "obsend to obrecv on another node, R=1, 10 per turn");
    r->transport = "tcp";
    result_init(&res[1], "outbox", e0, "msgs/s",
                "one message at a time, each alone: delivery latency");
    res[1].transport = "tcp";
    if (access(cfg->outbox_plugin, R_OK) != 0)
        return result_fail(r, "no %s (--outbox-plugin PATH)",
                           cfg->outbox_plugin);
    if (cl_open(&cl, cfg, OB_NODES) != 0) {
        cl_close(&cl);
        return result_fail(r, "cannot start ZooKeeper");
    }
    cl.count = OB_NODES;
    cl.args[2] = "--load";
    cl.args[3] = cfg->outbox_plugin;
    cl.args[4] = NULL;
    snprintf(name, sizeof name, "bench%d-ob", (int)getpid());
    if (cl_start(&cl, 0, name, 1, &route) != 0) {
        cl.failed = 1;
        cl_close(&cl);
        return result_fail(r, "the cluster did not start or settle");
    }
    /* The map may settle with the first node owning every unit before
     * the second has joined: wait for the units to spread. */
    deadline = chaos_mono_ns() + CL_SETTLE_S * 1000000000LL;
    while (ob_pick(&route, "obsend", "s", 0, ob_snd, OB_SENDERS) != 0 ||
           ob_pick(&route, "obrecv", "r", 1, ob_rcv, OB_RECEIVERS) != 0) {
        if (chaos_mono_ns() > deadline) {
            cl.failed = 1;
            cl_close(&cl);
            return result_fail(r, "node %s or %s owns no units",
                               cl.c.nodes[0].id, cl.c.nodes[1].id);
        }
        chaos_sleep_ms(200);
        if (cl_wait_ready(&cl, 1, &route) != 0) {
            cl_close(&cl);
            return result_fail(r, "the cluster did not settle again");
        }
    }
    if (cl_connect(&e, cfg, &cl, &route) != 0) {
        cl.failed = 1;
        cl_close(&cl);
        return result_fail(r, "cannot connect to the cluster");
    }
    cl_stats_get(&route, &sa);
    phase_init(&p, "send", OB_CALLS, 200);
    p.gen = gen_obsend;
    t0 = chaos_mono_ns();
    rc = step(&e, &p, r);
    phase_fini(&p);
    /* Delivered once every receiver counts what was sent: read a few
     * times a second, so the end is known to within a read. */
    deadline = chaos_mono_ns() + OB_WAIT_S * 1000000000LL;
    while (rc == 0 && (rc = ob_read(&e, r)) == 0 && ob_count < want) {
        if (chaos_mono_ns() > deadline) {
            rc = result_fail(r, "%" PRIu64 " of %" PRIu64 " messages "
                                "handled after %d s",
                             ob_count, want, OB_WAIT_S);
            break;
        }
        chaos_sleep_ms(50);
    }
    t1 = chaos_mono_ns();
    if (rc == 0 && ob_count != want)
        rc = result_fail(r, "the receivers handled %" PRIu64 " messages, "
                            "%" PRIu64 " were sent",
                         ob_count, want);
    cl_stats_get(&route, &sb);
    if (rc == 0) {
        r->ops = want;
        r->ops_per_s = (double)want / ((double)(t1 - t0) / 1e9);
        ob_lat(r, ob_hist, ob_count, ob_sum_us);
        add_extra(r, "outbox_frames", "frames between the nodes", 0,
                  sb.outbox_frames - sa.outbox_frames);
        add_extra(r, "msgs_per_frame", "msgs/frame", 1,
                  sb.outbox_frames > sa.outbox_frames
                      ? (sb.outbox_sent - sa.outbox_sent) /
                            (sb.outbox_frames - sa.outbox_frames)
                      : 0);
        add_extra(r, "fsyncs", "fsyncs", 0, sb.fsyncs - sa.fsyncs);
    }
    /* Each message alone: one call at a time, each answered before the
     * next. Its latencies are what the receivers' histograms gained. */
    if (rc == 0) {
        static uint64_t before[OB_BUCKETS];
        uint64_t n0 = ob_count, s0 = ob_sum_us;
        struct result *r2 = &res[1];
        memcpy(before, ob_hist, sizeof before);
        phase_init(&p, "single", OB_SINGLE, 1);
        p.gen = gen_obsingle;
        t0 = chaos_mono_ns();
        rc = step(&e, &p, r2);
        phase_fini(&p);
        deadline = chaos_mono_ns() + OB_WAIT_S * 1000000000LL;
        while (rc == 0 && (rc = ob_read(&e, r2)) == 0 &&
               ob_count < want + OB_SINGLE) {
            if (chaos_mono_ns() > deadline) {
                rc = result_fail(r2, "%" PRIu64 " of %d messages handled "
                                     "after %d s",
                                 ob_count - n0, OB_SINGLE, OB_WAIT_S);
                break;
            }
            chaos_sleep_ms(20);
        }
        t1 = chaos_mono_ns();
        if (rc == 0 && ob_count != want + OB_SINGLE)
            rc = result_fail(r2, "the receivers handled %" PRIu64
                                 " messages, %d were sent",
                             ob_count - n0, OB_SINGLE);
        if (rc == 0) {
            for (k = 0; k < OB_BUCKETS; k++)
                ob_hist[k] -= before[k];
            r2->ops = OB_SINGLE;
            r2->ops_per_s = OB_SINGLE / ((double)(t1 - t0) / 1e9);
            ob_lat(r2, ob_hist, ob_count - n0, ob_sum_us - s0);
        }
    }
    env_close(&e);
    for (k = 0; k < OB_NODES; k++)
        chaos_node_kill(&cl.c, k);
    if (rc != 0)
        cl.failed = 1;
    cl_close(&cl);
    return rc;
}

/* ------------------------------------------------------------- flushes */

#define FL_ROUNDS 1000u
#define FL_AT_ONCE 3u

/* The disk under --data, without keel: 128-byte appends flushed one at a
 * time, from one file, then from three files at once (as three nodes on
 * one machine flush their logs for one replicated write). */
static int wl_flushes(struct env *e, struct result *res, int *nres)
{
    const char *parent = e->cfg->data ? e->cfg->data : getenv("TMPDIR");
    static const unsigned files[2] = {1, FL_AT_ONCE};
    static const char *const what[2] = {
        "log flushes of one file (128-byte appends)",
        "log flushes of 3 files at once, one thread each"};
    struct flush_figures f[2];
    char err[300];
    int k;

    if (parent == NULL || parent[0] == '\0')
        parent = "/tmp";
    *nres = 2;
    for (k = 0; k < 2; k++) {
        struct result *r = &res[k];

        result_init(r, "flushes", e, "flushes/s", what[k]);
        r->transport = "disk";
        if (bench_flushes(parent, files[k], FL_ROUNDS, &f[k], err,
                          sizeof err) != 0)
            return result_fail(r, "%s", err);
        r->ops = f[k].flushes;
        r->ops_per_s = f[k].secs > 0 ? f[k].flushes / f[k].secs : 0;
        r->lat.p50 = f[k].p50_us;
        r->lat.p99 = f[k].p99_us;
        r->lat.max = f[k].max_us;
        add_extra(r, "files", "files", 0, files[k]);
    }
    /* How much longer a flush takes when three run at once: 1 when the
     * disk serves them side by side, 3 when one after the other. */
    add_extra(&res[1], "p50_ratio", "p50 vs one file", 2,
              f[0].p50_us > 0 ? f[1].p50_us / f[0].p50_us : 0);
    return 0;
}

/* ------------------------------------------------------------- workloads */

struct workload {
    const char *name;
    int (*run)(struct env *e, struct result *res, int *nres);
    int force_tcp;           /* runs over TCP whatever --transport says;
                              * 2: over HTTP (the node gets an HTTP
                              * listener); 3: no node in this process
                              * (a cluster of keeld processes it starts
                              * itself, or the disk alone); runs only
                              * when named */
    uint32_t idle_timeout_ms; /* 0: the node's default */
    const char *help;
};

static const struct workload workloads[] = {
    {"create", wl_create, 0, 0,
     "50,000 new counters, one `incr` each, window 500"},
    {"hot", wl_hot, 0, 0,
     "10,000 `incr` to one resident counter, window 200"},
    {"capabilities", wl_capabilities, 0, 0,
     "30,000 new actors: counter incr, kv put, register write; window 500"},
    {"mixed", wl_mixed, 0, 0,
     "5,000 new counters, then 20,000 `incr` round-robin; window 300"},
    {"latency", wl_latency, 0, 0,
     "1,000 sequential `incr` (and `get`) to existing counters"},
    {"memory", wl_memory, 0, 3600000,
     "1,000,000 counters activated; RSS growth per resident actor"},
    {"single-actor-put", wl_single_put, 0, 0,
     "1,000,000 casts of `kv put <i> test` to one actor, window 10,000"},
    {"redis-peer", wl_redis_peer, 1, 0,
     "one counter from 50 TCP clients vs redis-benchmark INCR, -P 1 and 16"},
    {"http", wl_http, 2, 0,
     "POST `incr` to one counter through the HTTP face, wrk -c50 for 5 s"},
    {"replication", wl_replication, 3, 0,
     "hot, create, latency on 3 keeld nodes with R=1, then R=3: ratios"},
    {"failover", wl_failover, 3, 0,
     "kill -9 a loaded unit's primary --rounds times: client outage"},
    {"catchup", wl_catchup, 3, 0,
     "R=3: a node restarted in order catches up on --catchup-mb MiB"},
    {"outbox", wl_outbox, 3, 0,
     "20,000 durable actor-to-actor messages to another node"},
    {"reminders", wl_reminders, 0, 0,
     "100,000 pending one-shot reminders due within 10 s: lateness"},
    {"flushes", wl_flushes, 3, 0,
     "the disk alone: log flushes of one file, then of 3 files at once"},
};
#define NWORKLOADS (sizeof workloads / sizeof workloads[0])

/* Median of each figure over the runs; the runs' headline rates are kept
 * for the JSON. */
static void median_of(struct result runs[][MAX_RESULTS], int nruns, int k,
                      struct result *out)
{
    double v[MAX_RUNS];
    int i, x;

#define MEDIAN(field)                                                        \
    do {                                                                     \
        for (i = 0; i < nruns; i++)                                          \
            v[i] = runs[i][k].field;                                         \
        qsort(v, (size_t)nruns, sizeof v[0], cmp_double);                    \
        out->field = nruns % 2 ? v[nruns / 2]                                \
                               : (v[nruns / 2 - 1] + v[nruns / 2]) / 2;      \
    } while (0)

    *out = runs[0][k];
    MEDIAN(ops_per_s);
    MEDIAN(lat.avg);
    MEDIAN(lat.p50);
    MEDIAN(lat.p95);
    MEDIAN(lat.p99);
    MEDIAN(lat.max);
    for (x = 0; x < out->nextra; x++)
        MEDIAN(extra[x].v);
#undef MEDIAN
}

/* ---------------------------------------------------------------- output */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void print_json(const struct config *cfg, const struct result *r,
                       struct result runs[][MAX_RESULTS], int nruns, int k)
{
    int i;

    printf("{\"workload\":");
    json_str(stdout, r->workload);
    printf(",\"durability\":\"%s\",\"transport\":\"%s\",\"runs\":%d",
           durability_name(cfg->durability), r->transport, nruns);
    if (r->skipped != NULL) {
        printf(",\"skipped\":");
        json_str(stdout, r->skipped);
        printf("}\n");
        return;
    }
    if (r->error[0] != '\0') {
        printf(",\"error\":");
        json_str(stdout, r->error);
        printf("}\n");
        return;
    }
    printf(",\"message\":");
    json_str(stdout, r->what);
    printf(",\"unit\":\"%s\",\"ops\":%" PRIu64 ",\"ops_per_s\":%.0f", r->unit,
           r->ops, r->ops_per_s);
    printf(",\"avg_us\":%.1f,\"p50_us\":%.1f,\"p95_us\":%.1f,\"p99_us\":%.1f,"
           "\"max_us\":%.1f",
           r->lat.avg, r->lat.p50, r->lat.p95, r->lat.p99, r->lat.max);
    for (i = 0; i < r->nextra; i++)
        printf(",\"%s\":%.*f", r->extra[i].key, r->extra[i].decimals,
               r->extra[i].v);
    printf(",\"ops_per_s_runs\":[");
    for (i = 0; i < nruns; i++)
        printf("%s%.0f", i ? "," : "", runs[i][k].ops_per_s);
    printf("]}\n");
}

static void print_header(const struct config *cfg)
{
    printf("keel-bench %s: durability %s, transport %s, %ld CPUs, ",
           keel_version_string(), durability_name(cfg->durability),
           transport_name(cfg->transport), sysconf(_SC_NPROCESSORS_ONLN));
    if (cfg->runs > 1)
        printf("medians of %d runs\n", cfg->runs);
    else
        printf("1 run\n");
    printf("%-17s %-9s %-6s %9s %12s %-14s %9s %9s  %s\n", "workload",
           "transport", "mode", "ops", "rate", "unit", "p50 us", "p99 us",
           "notes");
}

static void print_row(const struct config *cfg, const struct result *r)
{
    int i;

    printf("%-17s %-9s %-6s ", r->workload, r->transport,
           durability_name(cfg->durability));
    if (r->skipped != NULL) {
        printf("skipped: %s\n", r->skipped);
        return;
    }
    if (r->error[0] != '\0') {
        printf("FAILED: %s\n", r->error);
        return;
    }
    printf("%9" PRIu64 " %12.0f %-14s %9.1f %9.1f  %s", r->ops, r->ops_per_s,
           r->unit, r->lat.p50, r->lat.p99, r->what);
    for (i = 0; i < r->nextra; i++)
        if (r->extra[i].label != NULL)
            printf("; %s %.*f", r->extra[i].label, r->extra[i].decimals,
                   r->extra[i].v);
    printf("\n");
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f)
{
    size_t i;

    fprintf(f,
            "usage: keel-bench [OPTIONS] [WORKLOAD...]\n"
            "\n"
            "Runs each workload (all but replication, failover, catchup,\n"
            "outbox and flushes when none is named) on its own node and\n"
            "data directory, in this process, and prints a table (or JSON\n"
            "lines); replication, failover, catchup and outbox start\n"
            "ZooKeeper and keeld processes of their own, and flushes\n"
            "measures the disk under --data alone. Exits 1 if any call\n"
            "failed or any result was wrong.\n"
            "\n"
            "options:\n"
            "  --durability fsync|none  reply after the commit is fsynced\n"
            "                           (default) or after the commit only\n"
            "  --transport inproc|tcp|tls|tcp+tls\n"
            "                           drive the node through the C API on\n"
            "                           its loop thread (default), or over\n"
            "                           the wire protocol on 127.0.0.1, in\n"
            "                           plaintext, over TLS 1.3, or both one\n"
            "                           after the other (tcp+tls)\n"
            "  --tls-ca FILE            tls: the CA the connections trust\n"
            "  --tls-cert FILE          tls: the node's certificate, also\n"
            "                           presented by the connections\n"
            "  --tls-key FILE           tls: its key\n"
            "  --json                   one JSON object per line and result\n"
            "  --data DIR               make the data directories under DIR\n"
            "                           (default $TMPDIR, else /tmp); each\n"
            "                           is removed afterwards\n"
            "  --runs N                 run each workload N times and report\n"
            "                           medians (default 1, at most %d)\n"
            "  --connections N          TCP connections for pipelined\n"
            "                           workloads (default 1)\n"
            "  --perf-ctl CTL[,ACK]     perf's control fifos (perf record\n"
            "                           --control fifo:CTL,ACK -D -1):\n"
            "                           profile only the measured phases\n"
            "  --token TOKEN            the node requires this token (16\n"
            "                           to 256 characters, role admin) and\n"
            "                           every TCP and HTTP connection\n"
            "                           presents it: the cost of the\n"
            "                           access checks\n"
            "  --keeld PATH             cluster workloads: the\n"
            "                           node program (default: keeld\n"
            "                           beside keel-bench)\n"
            "  --zk-conf DIR            their zk-conf directory (zk.sh)\n"
            "  --shards N               their cluster's shards (default 64)\n"
            "  --zk-session-timeout MS  their nodes' ZooKeeper session\n"
            "                           timeout (default 4000)\n"
            "  --rounds N               failover: kills (default 10)\n"
            "  --catchup-mb N           catchup: MiB of entries before\n"
            "                           the restart (default 256)\n"
            "  --catchup-mib-s N        catchup: the nodes' catch-up rate\n"
            "                           (keeld --catchup-mib-s; default 0,\n"
            "                           no limit)\n"
            "  --repl-loads LIST        replication: which of hot, create,\n"
            "                           latency to run (default all three)\n"
            "  --outbox-plugin PATH     outbox: the actor types its nodes\n"
            "                           load (default: keel-bench-outbox.so\n"
            "                           beside keel-bench, else installed)\n"
            "  -h, --help               show this help\n"
            "\n"
            "workloads:\n",
            MAX_RUNS);
    for (i = 0; i < NWORKLOADS; i++)
        fprintf(f, "  %-17s %s\n", workloads[i].name, workloads[i].help);
}

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'keel-bench --help'.\n");
    return EXIT_USAGE;
}

/* Runs one workload cfg->runs times and prints the medians, or the run
 * that failed. Returns 0, or -1 if a run failed. */
static int run_workload_over(const struct config *cfg,
                             const struct workload *w, int transport);

static int run_workload(const struct config *cfg, const struct workload *w)
{
    int failed = 0;

    if (cfg->transport != T_TCP_TLS || w->force_tcp)
        return run_workload_over(cfg, w, w->force_tcp ? T_TCP
                                                      : cfg->transport);
    /* Both, plaintext first, for rows side by side. */
    if (run_workload_over(cfg, w, T_TCP) != 0)
        failed = -1;
    if (run_workload_over(cfg, w, T_TLS) != 0)
        failed = -1;
    return failed;
}

static int run_workload_over(const struct config *cfg,
                             const struct workload *w, int transport)
{
    static struct result runs[MAX_RUNS][MAX_RESULTS];
    int nres = 0, nruns = 0, k, failed = 0;

    while (nruns < cfg->runs) {
        struct result *res = runs[nruns++];
        struct env e;
        int rc;

        if (cfg->progress)
            fprintf(stderr, "%s: %s (%s, %s) run %d of %d\n", prog, w->name,
                    durability_name(cfg->durability),
                    transport_name(transport), nruns, cfg->runs);
        memset(res, 0, sizeof runs[0]);
        nres = 1;
        if (w->force_tcp == 3) {
            /* The workload starts its cluster; e only carries cfg. */
            memset(&e, 0, sizeof e);
            e.cfg = cfg;
            e.transport = T_TCP;
        } else if (env_open(&e, cfg, transport, w->idle_timeout_ms,
                            w->force_tcp == 2) != 0) {
            result_init(&res[0], w->name, &e, "", "");
            res[0].transport = transport_name(transport);
            result_fail(&res[0], "cannot start a node");
            failed = 1;
            break;
        }
        rc = w->run(&e, res, &nres);
        if (rc == 0 && res[0].skipped == NULL)
            rc = check_node(&e, &res[0]);
        env_close(&e);
        for (k = 0; k < nres; k++)
            if (res[k].error[0] != '\0')
                failed = 1;
        if (rc != 0 && !failed) /* every failure path writes an error */
            failed = result_fail(&res[0], "failed") != 0;
        for (k = 0; k < nres && res[k].skipped != NULL; k++)
            ;
        if (failed || k == nres) /* failed, or nothing to run again */
            break;
    }
    for (k = 0; k < nres; k++) {
        struct result m;

        if (failed) {
            m = runs[nruns - 1][k];
            if (m.error[0] == '\0')
                continue;
            fprintf(stderr, "%s: %s: FAILED: %s\n", prog, w->name, m.error);
        } else {
            median_of(runs, nruns, k, &m);
        }
        if (cfg->json)
            print_json(cfg, &m, runs, nruns, k);
        else
            print_row(cfg, &m);
        fflush(stdout);
    }
    return failed ? -1 : 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"durability", required_argument, NULL, 'd'},
        {"transport", required_argument, NULL, 't'},
        {"tls-ca", required_argument, NULL, 'A'},
        {"tls-cert", required_argument, NULL, 'C'},
        {"tls-key", required_argument, NULL, 'K'},
        {"json", no_argument, NULL, 'j'},
        {"data", required_argument, NULL, 'D'},
        {"runs", required_argument, NULL, 'r'},
        {"connections", required_argument, NULL, 'c'},
        {"perf-ctl", required_argument, NULL, 'P'},
        {"token", required_argument, NULL, 'T'},
        {"keeld", required_argument, NULL, 'k'},
        {"zk-conf", required_argument, NULL, 'z'},
        {"shards", required_argument, NULL, 's'},
        {"zk-session-timeout", required_argument, NULL, 'S'},
        {"rounds", required_argument, NULL, 'R'},
        {"catchup-mb", required_argument, NULL, 'M'},
        {"catchup-mib-s", required_argument, NULL, 'G'},
        {"repl-loads", required_argument, NULL, 'L'},
        {"outbox-plugin", required_argument, NULL, 'O'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct config cfg;
    int selected[NWORKLOADS], nsel = 0, opt, failed = 0;
    size_t i, k;
    char *end;
    long v;

    memset(&cfg, 0, sizeof cfg);
    cfg.durability = KEEL_DURABILITY_FSYNC;
    cfg.transport = T_INPROC;
    cfg.runs = 1;
    cfg.connections = 1;
    cfg.shards = 64;
    cfg.session_ms = 4000;
    cfg.rounds = 10;
    cfg.catchup_mb = 256;
    cfg.repl_loads = 7;
    {
        /* keeld beside this program; zk-conf beside a build directory in
         * the source tree, else the copy installed with this program,
         * else in the tree it was built from. */
        static char keeld[PATH_MAX + 16], zkconf[PATH_MAX + 32];
        static char obplug[PATH_MAX + 64];
        char exe[PATH_MAX], probe[PATH_MAX + 48], *slash;
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);

        exe[n > 0 ? n : 0] = '\0';
        slash = strrchr(exe, '/');
        if (slash != NULL)
            *slash = '\0';
        snprintf(keeld, sizeof keeld, "%s/keeld", exe);
        snprintf(zkconf, sizeof zkconf, "%s/../zk-conf", exe);
        snprintf(probe, sizeof probe, "%s/zk.sh", zkconf);
#ifdef KEEL_ZK_CONF_FROM_BIN
        if (access(probe, R_OK) != 0) {
            snprintf(zkconf, sizeof zkconf, "%s/%s", exe,
                     KEEL_ZK_CONF_FROM_BIN);
            snprintf(probe, sizeof probe, "%s/zk.sh", zkconf);
        }
#endif
        if (access(probe, R_OK) != 0)
            snprintf(zkconf, sizeof zkconf, "%s", KEEL_BENCH_ZK_CONF);
        cfg.keeld = keeld;
        cfg.zk_conf = zkconf;
        /* The outbox workload's actor types: beside this program in a
         * build, else where they are installed with it. */
        snprintf(obplug, sizeof obplug, "%s/keel-bench-outbox.so", exe);
#ifdef KEEL_BENCH_OUTBOX_FROM_BIN
        if (access(obplug, R_OK) != 0)
            snprintf(obplug, sizeof obplug, "%s/%s/keel-bench-outbox.so",
                     exe, KEEL_BENCH_OUTBOX_FROM_BIN);
#endif
        cfg.outbox_plugin = obplug;
    }
    opterr = 0; /* reported below, once, by name */
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            if (strcmp(optarg, "fsync") == 0)
                cfg.durability = KEEL_DURABILITY_FSYNC;
            else if (strcmp(optarg, "none") == 0)
                cfg.durability = KEEL_DURABILITY_NONE;
            else
                return usage_error("durability must be fsync or none, not "
                                   "'%s'",
                                   optarg);
            break;
        case 'T':
            cfg.token = optarg;
            break;
        case 'k':
            cfg.keeld = optarg;
            break;
        case 'O':
            cfg.outbox_plugin = optarg;
            break;
        case 'L': {
            static const char *const names[3] = {"hot", "create", "latency"};
            char *dup = strdup(optarg), *tok, *save = NULL;
            cfg.repl_loads = 0;
            for (tok = dup ? strtok_r(dup, ",", &save) : NULL; tok != NULL;
                 tok = strtok_r(NULL, ",", &save)) {
                int l;
                for (l = 0; l < 3 && strcmp(tok, names[l]) != 0; l++)
                    ;
                if (l == 3) {
                    free(dup);
                    return usage_error("--repl-loads takes hot, create and "
                                       "latency, not '%s'",
                                       tok);
                }
                cfg.repl_loads |= 1u << l;
            }
            free(dup);
            if (cfg.repl_loads == 0)
                return usage_error("--repl-loads: no load named");
            break;
        }
        case 'z':
            cfg.zk_conf = optarg;
            break;
        case 'M':
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || v < 1 || v > 65536)
                return usage_error("bad --catchup-mb value '%s' (1 to "
                                   "65536)",
                                   optarg);
            cfg.catchup_mb = (int)v;
            break;
        case 'G':
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || v < 0 || v > 100000)
                return usage_error("bad --catchup-mib-s value '%s' (0 to "
                                   "100000)",
                                   optarg);
            cfg.catchup_rate = optarg;
            break;
        case 's':
        case 'S':
        case 'R':
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' ||
                v < (opt == 'S' ? 1000 : 1) ||
                v > (opt == 's' ? 65536 : opt == 'S' ? 60000 : 1000))
                return usage_error("bad --%s value '%s'",
                                   opt == 's'   ? "shards"
                                   : opt == 'S' ? "zk-session-timeout"
                                                : "rounds",
                                   optarg);
            if (opt == 's')
                cfg.shards = (int)v;
            else if (opt == 'S')
                cfg.session_ms = (int)v;
            else
                cfg.rounds = (int)v;
            break;
        case 't':
            if (strcmp(optarg, "inproc") == 0)
                cfg.transport = T_INPROC;
            else if (strcmp(optarg, "tcp") == 0)
                cfg.transport = T_TCP;
            else if (strcmp(optarg, "tls") == 0)
                cfg.transport = T_TLS;
            else if (strcmp(optarg, "tcp+tls") == 0)
                cfg.transport = T_TCP_TLS;
            else
                return usage_error("transport must be inproc, tcp, tls or "
                                   "tcp+tls, not '%s'",
                                   optarg);
            break;
        case 'A':
            cfg.tls_ca = optarg;
            break;
        case 'C':
            cfg.tls_cert = optarg;
            break;
        case 'K':
            cfg.tls_key = optarg;
            break;
        case 'j':
            cfg.json = 1;
            break;
        case 'D':
            cfg.data = optarg;
            break;
        case 'r':
        case 'c':
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || v < 1 ||
                v > (opt == 'r' ? MAX_RUNS : 1000))
                return usage_error("bad --%s value '%s'",
                                   opt == 'r' ? "runs" : "connections",
                                   optarg);
            if (opt == 'r')
                cfg.runs = (int)v;
            else
                cfg.connections = (unsigned)v;
            break;
        case 'P':
            if (perf_ctl_open(optarg) != 0)
                return usage_error("--perf-ctl %s: %s", optarg,
                                   strerror(errno ? errno : EINVAL));
            break;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            return usage_error("option '%s' needs a value",
                               argv[optind - 1]);
        default:
            if (optopt != 0 && optopt != '?')
                return usage_error("unknown option '-%c'", optopt);
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    for (; optind < argc; optind++) {
        for (i = 0; i < NWORKLOADS; i++)
            if (strcmp(argv[optind], workloads[i].name) == 0)
                break;
        if (i == NWORKLOADS)
            return usage_error("unknown workload '%s'", argv[optind]);
        for (k = 0; k < (size_t)nsel; k++)
            if (selected[k] == (int)i)
                break;
        if (k == (size_t)nsel)
            selected[nsel++] = (int)i;
    }
    /* The cluster workloads (ZooKeeper, keeld processes, a minute or
     * more) run only when named. */
    if (nsel == 0)
        for (i = 0; i < NWORKLOADS; i++)
            if (workloads[i].force_tcp != 3)
                selected[nsel++] = (int)i;
    if ((cfg.transport == T_TLS || cfg.transport == T_TCP_TLS) &&
        (cfg.tls_ca == NULL || cfg.tls_cert == NULL || cfg.tls_key == NULL))
        return usage_error("--transport %s needs --tls-ca, --tls-cert and "
                           "--tls-key",
                           transport_name(cfg.transport));
    if (cfg.transport != T_TLS && cfg.transport != T_TCP_TLS &&
        cfg.tls_ca != NULL)
        return usage_error("--tls-ca goes with --transport tls or tcp+tls");
    cfg.progress = isatty(STDERR_FILENO);
    signal(SIGPIPE, SIG_IGN);
    /* glibc raises its mmap threshold each time a large block is freed, so
     * a later run would allocate differently from the first one (and the
     * memory workload would find freed pages already resident). Pin the
     * default. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);

    if (!cfg.json)
        print_header(&cfg);
    for (k = 0; k < (size_t)nsel; k++)
        if (run_workload(&cfg, &workloads[selected[k]]) != 0)
            failed = 1;
    return failed ? EXIT_FAILED : 0;
}
