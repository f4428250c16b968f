#include "chaos/run.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chaos/checkdir.h"
#include "chaos/cluster.h"
#include "chaos/hwriter.h"
#include "chaos/diskfull.h"
#include "chaos/json.h"
#include "chaos/netns.h"
#include "chaos/relay.h"
#include "chaos/report.h"
#include "chaos/schedule.h"
#include "keel.h"
#include "runtime/client.h"
#include "runtime/proto.h"

#define SETTLE_MS 90000     /* after healing, for the cluster to settle */
#define LEAVE_WAIT_MS 40000 /* for a drained node to exit (its leave
                             * timeout is 30 s) */
#define FINAL_TRIES 20      /* final reads of one actor */
#define FINAL_MS 60000      /* all final reads together */
#define INSYNC_MS 60000     /* after the final reads, for every replica to
                             * be back in its unit's in-sync set */
#define DIGEST_TRIES 5      /* digest rounds, until the map held still */

void chaos_run_opts_init(chaos_run_opts *o)
{
    memset(o, 0, sizeof *o);
    o->nodes = 3;
    o->replicas = 1;
    o->clients = 8;
    o->actors = 12;
    o->seconds = 60;
    o->workload = CHAOS_W_MIXED;
    o->faults = (1u << CHAOS_F_KILL) | (1u << CHAOS_F_STOP) |
                (1u << CHAOS_F_ZK);
    o->seed = 1;
    o->rate = 200;
    o->shards = 64;
    o->session_ms = 2000;
    o->client_timeout_ms = 10000;
    o->zk_servers = 1;
}

static int zk_servers(const chaos_run_opts *o)
{
    return o->zk_servers == CHAOS_ZK_MAX ? CHAOS_ZK_MAX : 1;
}

/* The copies a unit has: keeld places min(R, members) (docs/cluster.md,
 * "Replicas and the in-sync set"), so --replicas above --nodes is taken,
 * as keeld takes it, and counts as the nodes there are. */
static int replicas_effective(const chaos_run_opts *o)
{
    return o->replicas < o->nodes ? o->replicas : o->nodes;
}

typedef struct run run;

typedef struct client {
    run *r;
    int id;
    pthread_t th;
    int started;
} client;

/* One executed fault, as faults.jsonl records it. */
typedef struct fault_rec {
    const chaos_fault *f;
    int64_t start_ns, end_ns; /* CLOCK_MONOTONIC, as the history */
    char node[16];            /* the node it hit, "" for none */
    const char *status;       /* "done", "skipped", "failed" */
    char note[256];
} fault_rec;

struct run {
    const chaos_run_opts *o;
    FILE *out, *err;
    chaos_cluster cl;
    /* The history: one lock around the clock and the writer, so that
     * times never go back down the file. */
    pthread_mutex_t mu;
    chaos_hwriter hw;
    FILE *hf;
    char hist_err[256]; /* the first event the writer refused (under mu) */
    atomic_int refused; /* set once the writer refused an event */
    uint64_t nops, nok, nfail, ninfo, nbad;
    atomic_int stop;
    /* Set when a node answered ENOTYPE: the nodes do not have the
     * workload's actor type (a --workload-type without the --load that
     * registers it), so every operation would fail and the checks would
     * pass on nothing. The run ends there; notype_msg says who answered. */
    atomic_int notype;
    char notype_msg[256]; /* under mu */
    FILE *events, *faults, *log;
    int64_t t0; /* the workload's start, CLOCK_MONOTONIC */
    int64_t real0; /* CLOCK_REALTIME at t0 */
    chaos_wl wl;     /* what the clients do */
    int stray_exits; /* nodes that exited when nothing made them */
    int zk_exits;    /* the same, of ZooKeeper servers */
    char unsettled[256]; /* why the cluster did not settle, if it did not */
    /* Partitions: the nodes in network namespaces, each ZooKeeper server
     * through a relay; or why not. */
    chaos_net net;
    chaos_relay relay[CHAOS_ZK_MAX];
    int net_up;
    char no_net[256];
    /* disk-full: each node's data on a tmpfs of its own; or why not. */
    int disk_up;
    int mounted[CHAOS_NODES_MAX];
    char no_disk[256];
    int data_removed; /* remove_data ran */
    /* wipe: only with replicas; or why not. */
    int wipe_up;
    char no_wipe[256];
    /* More keeld arguments of every node (chaos_cluster.args): the dead
     * time's, then --node-arg's. */
    char dead_ms[16];
    const char *node_args[2 + CHAOS_NODE_ARGS_MAX + 1];
};

static void note(fault_rec *fr, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note(fault_rec *fr, const char *fmt, ...)
{
    size_t n = strlen(fr->note);
    va_list ap;

    if (n > 0 && n + 2 < sizeof fr->note) {
        fr->note[n++] = ';';
        fr->note[n++] = ' ';
        fr->note[n] = '\0';
    }
    va_start(ap, fmt);
    vsnprintf(fr->note + n, sizeof fr->note - n, fmt, ap);
    va_end(ap);
}

static void progress(run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A line for the person running it, with the time since the workload
 * began (or "setup" before). */
static void progress(run *r, const char *fmt, ...)
{
    va_list ap;

    if (r->t0 > 0)
        fprintf(r->out, "  %+7.1f s  ",
                (double)(chaos_mono_ns() - r->t0) / 1e9);
    else
        fprintf(r->out, "  %9s  ", "");
    va_start(ap, fmt);
    vfprintf(r->out, fmt, ap);
    va_end(ap);
    fputc('\n', r->out);
    fflush(r->out);
    if (r->log != NULL) {
        va_start(ap, fmt);
        fprintf(r->log, "progress: ");
        vfprintf(r->log, fmt, ap);
        fputc('\n', r->log);
        fflush(r->log);
        va_end(ap);
    }
}

/* events.jsonl: called by the cluster, on the main thread. */
static void on_event(void *data, const char *node, const char *what)
{
    run *r = data;
    chaos_buf b;

    if (r->events == NULL)
        return;
    chaos_buf_init(&b);
    chaos_buf_printf(&b, "{\"time_ns\":%lld,\"node\":",
                     (long long)chaos_mono_ns());
    chaos_json_put_str(&b, node);
    chaos_buf_puts(&b, ",\"event\":");
    chaos_json_put_str(&b, what);
    chaos_buf_puts(&b, "}\n");
    if (!b.oom)
        fputs(b.p, r->events);
    fflush(r->events);
    chaos_buf_free(&b);
}

/* ------------------------------------------------------------ history */

/* Writes e with the current time. 0, or -1 when the writer refused it (a
 * mistake of this runner: the clients stop). */
static int record(run *r, chaos_event *e)
{
    char err[256];
    int rc;

    pthread_mutex_lock(&r->mu);
    e->time_ns = chaos_mono_ns();
    rc = chaos_hwriter_write(&r->hw, e, err, sizeof err);
    if (rc != 0 && r->hist_err[0] == '\0') {
        snprintf(r->hist_err, sizeof r->hist_err, "%s", err);
        atomic_store(&r->refused, 1);
    }
    if (rc == 0) {
        if (e->t == CHAOS_INVOKE)
            r->nops++;
        else if (e->t == CHAOS_OK)
            r->nok++;
        else if (e->t == CHAOS_FAIL)
            r->nfail++;
        else
            r->ninfo++;
    }
    pthread_mutex_unlock(&r->mu);
    if (rc != 0) {
        atomic_store(&r->stop, 1);
        return -1;
    }
    return 0;
}

static void client_wait(run *r, int64_t at);

/* The call of op over *kp: with a request key (key not NULL, --keyed),
 * sent again with the same key while its outcome allows (at most
 * o->keyed more times), each time on a fresh connection to the next node
 * (*kp and *node follow). *maybe_ran tells whether an attempt before the
 * last may have run. Returns the last attempt's status, its reply in
 * *reply (*len bytes). */
static int call_op(run *r, keel_client **kp, int *node, const chaos_wop *op,
                   const uint8_t *key, char **reply, size_t *len,
                   int *maybe_ran)
{
    int attempt, rc;

    *maybe_ran = 0;
    for (attempt = 0;; attempt++) {
        *reply = NULL;
        *len = 0;
        if (*kp == NULL)
            rc = KEEL_ENOTSENT; /* the reconnection failed */
        else if (key != NULL)
            rc = keel_client_call_keyed(*kp, KEEL_FRAME_CALL, key, op->type,
                                        op->id, strlen(op->id), op->msg,
                                        op->msg_len, reply, len);
        else
            rc = keel_client_call(*kp, KEEL_FRAME_CALL, op->type, op->id,
                                  strlen(op->id), op->msg, op->msg_len, reply,
                                  len);
        if (rc == 0 || key == NULL || !chaos_wl_retryable(rc) ||
            attempt >= r->o->keyed || atomic_load(&r->stop))
            return rc;
        if (chaos_wl_outcome(rc) == CHAOS_INFO)
            *maybe_ran = 1;
        free(*reply);
        if (*kp != NULL)
            keel_client_close(*kp);
        *kp = NULL;
        *node = (*node + 1) % r->cl.base;
        client_wait(r, chaos_mono_ns() + 100000000);
        if (keel_client_connect(r->cl.nodes[*node].addr,
                                r->o->client_timeout_ms, kp) != 0)
            *kp = NULL;
    }
}

/* One operation of client cid through connection *kp to node *node: the
 * invocation, the call (call_op: with key, retried), the completion.
 * Returns the last call's status (0, a KEEL_E* code), or KEEL_EINVAL
 * when the history refused an event; *outcome says how it was
 * recorded. */
static int do_op(run *r, keel_client **kp, int cid, int *node,
                 chaos_wop *op, const uint8_t *key, chaos_type *outcome)
{
    chaos_event e;
    char *reply = NULL;
    const char **strs = NULL;
    const chaos_node *nd = &r->cl.nodes[*node];
    size_t len = 0;
    int rc, maybe_ran;

    memset(&e, 0, sizeof e);
    e.t = CHAOS_INVOKE;
    e.client = cid;
    e.actor = op->actor;
    e.op = op->fn;
    e.args = op->args;
    e.final = op->final;
    e.node = nd->id;
    if (record(r, &e) != 0)
        return KEEL_EINVAL;
    rc = call_op(r, kp, node, op, key, &reply, &len, &maybe_ran);
    memset(&e.result, 0, sizeof e.result);
    if (rc == 0) {
        if (chaos_wl_result(op, reply, len, &e.result, &strs) == 0) {
            e.t = CHAOS_OK;
        } else {
            /* keel answered, so it ran; what it said is not known to the
             * model. Recorded as unknown, and counted: a run with such
             * answers says so. */
            e.t = CHAOS_INFO;
            e.error = "unreadable reply";
            memset(&e.result, 0, sizeof e.result);
            pthread_mutex_lock(&r->mu);
            if (r->nbad++ < 5 && r->log != NULL)
                fprintf(r->log, "unreadable reply from %s to %s %s: %.*s\n",
                        nd->id, op->actor, op->msg, (int)(len < 80 ? len : 80),
                        reply != NULL ? reply : "");
            pthread_mutex_unlock(&r->mu);
        }
    } else {
        e.t = chaos_wl_keyed_outcome(rc, maybe_ran);
        e.error = keel_err_name(rc);
        if (rc == KEEL_ENOTYPE) {
            pthread_mutex_lock(&r->mu);
            if (!atomic_load(&r->notype))
                snprintf(r->notype_msg, sizeof r->notype_msg,
                         "%s answered %s %s with ENOTYPE: %s", nd->id,
                         op->actor, op->msg, reply != NULL ? reply : "");
            atomic_store(&r->notype, 1);
            atomic_store(&r->stop, 1);
            pthread_mutex_unlock(&r->mu);
        }
    }
    *outcome = e.t;
    if (record(r, &e) != 0)
        rc = KEEL_EINVAL;
    free(strs);
    free(reply);
    return rc;
}

/* After these the connection is of no more use: a transport failure, or
 * the node is leaving (send to another). */
static int drop_connection(int rc)
{
    switch (rc) {
    case KEEL_ECONN:
    case KEEL_ETIMEDOUT:
    case KEEL_ENOTSENT:
    case KEEL_ESTOPPING:
    case KEEL_EPROTO:
    case KEEL_EMALFORMED:
    case KEEL_ETOOBIG:
    case KEEL_EOVERLOAD:
        return 1;
    default:
        return 0;
    }
}

/* Sleeps until at (CLOCK_MONOTONIC ns) or until the clients are told to
 * stop, in slices short enough to notice. */
static void client_wait(run *r, int64_t at)
{
    for (;;) {
        int64_t left = at - chaos_mono_ns();
        if (left <= 0 || atomic_load(&r->stop))
            return;
        chaos_sleep_ms(left > 100000000 ? 100 : (left + 999999) / 1000000);
    }
}

/* The generation of set actors at this moment of the run
 * (chaos/workload.h). */
static int set_gen(const run *r)
{
    return (int)((chaos_mono_ns() - r->t0) /
                 (CHAOS_WL_SET_GEN_S * 1000000000LL));
}

static void *client_main(void *arg)
{
    client *c = arg;
    run *r = c->r;
    const chaos_run_opts *o = r->o;
    keel_client *k = NULL;
    chaos_rng rng, pace, keys;
    uint64_t seq = 0;
    int node = c->id % r->cl.base;
    int64_t gap = o->rate > 0 ? 1000000000LL * o->clients / o->rate : 0;
    int64_t next = chaos_mono_ns();

    /* Each client's operations depend on the seed and its number alone;
     * its pauses come from a generator of their own, so that a connect
     * that failed does not shift the operations that follow. */
    chaos_rng_seed(&rng, o->seed * 0x100000001b3ull + (uint64_t)c->id + 1);
    (void)chaos_rng_next(&rng);
    chaos_rng_seed(&pace, ~chaos_rng_next(&rng));
    chaos_rng_seed(&keys, (o->seed ^ 0x6b657973ull) * 0x100000001b3ull +
                              (uint64_t)c->id + 1);
    while (!atomic_load(&r->stop)) {
        chaos_wop op;
        chaos_type outcome;
        uint8_t key[KEEL_REQUEST_KEY_LEN];
        uint64_t k0, k1;
        int rc;

        if (gap > 0) {
            int64_t now = chaos_mono_ns();
            client_wait(r, next);
            if (next < now)
                next = now;
            next += gap / 2 + chaos_rng_range(&pace, 0, gap);
            if (atomic_load(&r->stop))
                break;
        }
        if (k == NULL &&
            keel_client_connect(r->cl.nodes[node].addr, o->client_timeout_ms,
                                &k) != 0) {
            k = NULL;
            node = (node + 1) % r->cl.base;
            client_wait(r, chaos_mono_ns() + 100000000);
            continue;
        }
        chaos_wl_next(&r->wl, set_gen(r), &rng, c->id, seq++, &op);
        k0 = chaos_rng_next(&keys);
        k1 = chaos_rng_next(&keys);
        memcpy(key, &k0, 8);
        memcpy(key + 8, &k1, 8);
        rc = do_op(r, &k, c->id, &node, &op, o->keyed > 0 ? key : NULL,
                   &outcome);
        if (rc == KEEL_EINVAL && atomic_load(&r->refused))
            break;
        if (k != NULL && drop_connection(rc)) {
            keel_client_close(k);
            k = NULL;
            node = (node + 1) % r->cl.base;
        }
    }
    if (k != NULL)
        keel_client_close(k);
    return NULL;
}

/* ------------------------------------------------------------- faults */

/* Notices nodes that exited on their own. A node the harness did not ask
 * to leave that exits is worth a line: keeld should not. */
static void reap_all(run *r, int expected)
{
    int i, gone = chaos_zk_reap(&r->cl);

    for (i = 0; i < CHAOS_ZK_MAX; i++)
        if ((gone >> i) & 1) {
            char where[32];
            if (zk_servers(r->o) > 1)
                snprintf(where, sizeof where, "zk/%d/zk.log", i + 1);
            else
                snprintf(where, sizeof where, "zk/zk.log");
            r->zk_exits++;
            progress(r, "ZooKeeper %s exited by itself (see %s)",
                     chaos_zk_name(&r->cl, i), where);
        }

    for (i = 0; i < r->cl.nnodes; i++) {
        if (r->cl.nodes[i].pid > 0 && chaos_node_reap(&r->cl, i) &&
            i != expected) {
            r->stray_exits++;
            progress(r, "%s exited by itself (see nodes/%s.log)",
                     r->cl.nodes[i].id, r->cl.nodes[i].id);
        }
    }
}

/* The signal (SIGINT, SIGTERM or SIGHUP) that interrupted the run, or 0.
 * The run then stops waiting, injecting, restarting and reading, and
 * leaves through its usual end: clients joined, nodes killed, ZooKeeper
 * stopped, the namespaces and mounts removed. A second signal of the
 * three ends the program at once. Only the run's own thread reads it. */
static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    if (interrupted) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    interrupted = sig;
}

static const int caught[] = {SIGINT, SIGTERM, SIGHUP};

struct saved_signals {
    int set;
    struct sigaction old[3];
};

static void catch_signals(struct saved_signals *s)
{
    struct sigaction sa;
    int k;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    interrupted = 0;
    for (k = 0; k < 3; k++) {
        /* One ignored already (nohup, a background job of a script)
         * stays ignored. */
        sigaction(caught[k], NULL, &s->old[k]);
        if (s->old[k].sa_handler != SIG_IGN)
            sigaction(caught[k], &sa, NULL);
    }
    s->set = 1;
}

static void restore_signals(struct saved_signals *s)
{
    int k;

    if (!s->set)
        return;
    for (k = 0; k < 3; k++)
        sigaction(caught[k], &s->old[k], NULL);
    s->set = 0;
}

/* Waits until at, noticing exits (node `expected` may exit: a drain),
 * or until the run has been given up (r->notype) or interrupted. */
static void wait_until(run *r, int64_t at, int expected)
{
    for (;;) {
        int64_t left = at - chaos_mono_ns();
        reap_all(r, expected);
        if (left <= 0 || atomic_load(&r->notype) || interrupted)
            return;
        chaos_sleep_ms(left > 50000000 ? 50 : (left + 999999) / 1000000);
    }
}

/* A node other than i that runs, to send it an INFO query; i if none. */
static int other_up(const run *r, int i)
{
    int j;

    for (j = 1; j <= r->cl.base; j++) {
        int k = (i + j) % r->cl.base;
        if (k != i && chaos_node_up(&r->cl, k))
            return k;
    }
    return i;
}

static void rm_rf(const char *path);
static int mkdir_p(const char *path);

/* Empties node i's data directory (the node is down): keeld creates a
 * store there with a new identity when it starts. On a tmpfs of the
 * harness's (disk-full) the mount point stays. */
static int wipe_data(run *r, int i)
{
    const char *d = r->cl.nodes[i].data;

    rm_rf(d);
    return mkdir_p(d);
}

static void start_node(run *r, fault_rec *fr, int i)
{
    char err[256];

    if (interrupted) {
        note(fr, "not restarted: the run was interrupted");
        return;
    }
    if (chaos_node_start(&r->cl, i, err, sizeof err) != 0) {
        note(fr, "restart failed: %s", err);
        fr->status = "failed";
        progress(r, "%s", err);
    }
}

/* keel node drain NODE through another node. The answer says the node
 * was marked leaving, but the mark is a ZooKeeper write that may still
 * fail (ZooKeeper just restarted): callers send it again while the node
 * stays. Returns 0 or the KEEL_E* code of the answer. */
static int send_drain(run *r, int i)
{
    char words[32], *out = NULL;
    int via = other_up(r, i), rc;

    snprintf(words, sizeof words, "drain %s", r->cl.nodes[i].id);
    rc = chaos_node_info(&r->cl, via, words, 5000, &out);
    free(out);
    if (r->log != NULL)
        fprintf(r->log, "drain %s through %s: %s\n", r->cl.nodes[i].id,
                r->cl.nodes[via].id, rc == 0 ? "accepted" : keel_err_name(rc));
    return rc;
}

/* Waits until `until` for node i to leave after a drain, sending the
 * drain again every 5 s while it runs. 1 when it has left. */
static int await_leave(run *r, int i, int64_t until)
{
    int64_t again = chaos_mono_ns() + 5000000000LL;

    for (;;) {
        if (chaos_node_wait_exit(&r->cl, i, 100))
            return 1;
        reap_all(r, i);
        if (chaos_mono_ns() > until || interrupted)
            return 0;
        if (chaos_mono_ns() > again) {
            send_drain(r, i);
            again = chaos_mono_ns() + 5000000000LL;
        }
    }
}

/* Drains node i; with wait, waits for it to exit (it hands its units off
 * first) and kills it if it does not within LEAVE_WAIT_MS. */
static void drain_and_wait(run *r, fault_rec *fr, int i, int wait)
{
    int rc = send_drain(r, i);

    if (rc != 0)
        note(fr, "drain of %s refused: %s", r->cl.nodes[i].id,
             keel_err_name(rc));
    on_event(r, r->cl.nodes[i].id, "drain");
    if (!wait)
        return;
    if (!await_leave(r, i, chaos_mono_ns() + LEAVE_WAIT_MS * 1000000LL)) {
        note(fr, "%s did not leave within %d s: killed", r->cl.nodes[i].id,
             LEAVE_WAIT_MS / 1000);
        chaos_node_kill(&r->cl, i);
    }
}

/* The ZooKeeper server fault fr hits: the one it names, or the leader of
 * the moment (f->zk -1; the first server when none says it leads). -1
 * when that server is not running (fr is then skipped). With one server,
 * 0. */
static int pick_zk(run *r, fault_rec *fr)
{
    int s = fr->f->zk;

    if (zk_servers(r->o) == 1)
        return 0;
    if (s < 0) {
        s = chaos_zk_leader(&r->cl);
        if (s < 0) {
            note(fr, "no server says it leads: %s taken",
                 chaos_zk_name(&r->cl, 0));
            s = 0;
        }
    }
    if (!r->cl.zk[s].up || r->cl.zk[s].stopped) {
        fr->status = "skipped";
        note(fr, "ZooKeeper %s is not running", chaos_zk_name(&r->cl, s));
        return -1;
    }
    return s;
}

/* A partition of shape f->variant around node f->node until end, then
 * healed. The clients (the harness's own address) reach every node
 * throughout: what is cut is node to node and node to ZooKeeper. */
static void partition(run *r, fault_rec *fr, int64_t end)
{
    const chaos_fault *f = fr->f;
    unsigned cut[CHAOS_NODES_MAX] = {0}, minority = 0;
    int zk[CHAOS_NODES_MAX] = {0}, n = r->cl.nnodes, i, j, size;
    int all_zk = (1 << zk_servers(r->o)) - 1, s = -1;

    if (!r->net_up) {
        fr->status = "skipped";
        note(fr, "%s", r->no_net);
        return;
    }
    snprintf(fr->node, sizeof fr->node, "%s", r->cl.nodes[f->node].id);
    switch ((chaos_part_shape)f->variant) {
    case CHAOS_P_WITH_ZK:
        s = pick_zk(r, fr);
        if (s < 0)
            return;
        /* The node keeps server s alone: cut from the other nodes and
         * servers; every other node is cut from s; s from the other
         * servers (chaos_zk_cut below), so it loses its quorum. */
        cut[f->node] = ~0u;
        zk[f->node] = all_zk & ~(1 << s);
        for (i = 0; i < n; i++)
            if (i != f->node)
                zk[i] = 1 << s;
        progress(r, "partition: %s and ZooKeeper %s%s cut from the other "
                    "nodes and servers for %.1f s",
                 fr->node, chaos_zk_name(&r->cl, s),
                 f->zk < 0 ? " (the leader)" : "", (double)f->dur_ms / 1000);
        note(fr, "with ZooKeeper %s%s", chaos_zk_name(&r->cl, s),
             f->zk < 0 ? " (the leader)" : "");
        break;
    case CHAOS_P_FROM_PEERS:
        cut[f->node] = ~0u;
        progress(r, "partition: %s cut from the other nodes, not from "
                    "ZooKeeper, for %.1f s",
                 fr->node, (double)f->dur_ms / 1000);
        break;
    case CHAOS_P_FROM_ZK:
        zk[f->node] = all_zk;
        progress(r, "partition: %s cut from ZooKeeper, not from the other "
                    "nodes, for %.1f s",
                 fr->node, (double)f->dur_ms / 1000);
        break;
    case CHAOS_P_MAJORITY:
    default:
        /* The minority: (nodes - 1) / 2 of the cluster's nodes from this
         * one on, cut from the rest and from ZooKeeper. */
        size = (r->cl.base - 1) / 2 > 0 ? (r->cl.base - 1) / 2 : 1;
        for (i = 0; i < size; i++)
            minority |= 1u << ((f->node + i) % r->cl.base);
        for (i = 0; i < n; i++)
            if ((minority >> i) & 1u) {
                zk[i] = all_zk;
                for (j = 0; j < n; j++)
                    if (!((minority >> j) & 1u))
                        cut[i] |= 1u << j;
            }
        progress(r, "partition: a minority of %d from %s cut from the "
                    "majority and ZooKeeper for %.1f s",
                 size, fr->node, (double)f->dur_ms / 1000);
        break;
    }
    on_event(r, fr->node, "partition");
    if (chaos_net_apply(&r->net, cut, zk) != 0) {
        fr->status = "failed";
        note(fr, "an nft command failed (see run.log)");
    }
    if (s >= 0)
        chaos_zk_cut(&r->cl, s, 1);
    wait_until(r, end, -1);
    if (s >= 0)
        chaos_zk_cut(&r->cl, s, 0);
    if (chaos_net_heal(&r->net) != 0) {
        fr->status = "failed";
        note(fr, "healing failed (see run.log)");
    }
    on_event(r, fr->node, "heal");
}

/* Executes fault fr->f from now (fr->start_ns) for its duration, heals
 * it, and says what it did in fr. */
static void fault_run(run *r, fault_rec *fr)
{
    const chaos_fault *f = fr->f;
    int64_t end = fr->start_ns + f->dur_ms * 1000000LL;
    int i = f->node;
    char name[32];

    fr->status = "done";
    switch (f->kind) {
    case CHAOS_F_KILL:
    case CHAOS_F_CONTROLLER:
        if (f->kind == CHAOS_F_CONTROLLER) {
            int j;
            i = -1;
            for (j = 0; j < r->cl.nnodes && i < 0; j++)
                if (chaos_node_up(&r->cl, j))
                    i = chaos_cluster_controller(&r->cl, j, name,
                                                 sizeof name);
            if (i < 0 || !chaos_node_up(&r->cl, i)) {
                fr->status = "skipped";
                note(fr, "no node names a running controller");
                break;
            }
        }
        if (r->cl.nodes[i].pid <= 0) {
            fr->status = "skipped";
            note(fr, "%s is not running", r->cl.nodes[i].id);
            break;
        }
        snprintf(fr->node, sizeof fr->node, "%s", r->cl.nodes[i].id);
        progress(r, "%s: SIGKILL %s, restart in %.1f s",
                 chaos_fault_name(f->kind), fr->node,
                 (double)f->dur_ms / 1000);
        chaos_node_kill(&r->cl, i);
        wait_until(r, end, -1);
        start_node(r, fr, i);
        break;
    case CHAOS_F_STOP:
        if (!chaos_node_up(&r->cl, i)) {
            fr->status = "skipped";
            note(fr, "%s is not running", r->cl.nodes[i].id);
            break;
        }
        snprintf(fr->node, sizeof fr->node, "%s", r->cl.nodes[i].id);
        progress(r, "stop: SIGSTOP %s for %.1f s (session timeout %.1f s)",
                 fr->node, (double)f->dur_ms / 1000,
                 (double)r->o->session_ms / 1000);
        chaos_node_sigstop(&r->cl, i);
        wait_until(r, end, -1);
        chaos_node_sigcont(&r->cl, i);
        break;
    case CHAOS_F_ZK: {
        char err[256];
        int s = pick_zk(r, fr);
        if (s < 0)
            break;
        snprintf(fr->node, sizeof fr->node, "%s", chaos_zk_name(&r->cl, s));
        if (zk_servers(r->o) > 1) {
            /* One server of three: the other two keep the quorum. */
            note(fr, "SIGKILL %s%s", fr->node,
                 f->zk < 0 ? " (the leader)" : "");
            progress(r, "zk: SIGKILL ZooKeeper %s%s, restart in %.1f s",
                     fr->node, f->zk < 0 ? " (the leader)" : "",
                     (double)f->dur_ms / 1000);
        } else {
            progress(r, "zk: SIGKILL ZooKeeper, restart in %.1f s",
                     (double)f->dur_ms / 1000);
        }
        if (chaos_zk_kill(&r->cl, s) != 0)
            note(fr, "ZooKeeper did not die within 10 s");
        wait_until(r, end, -1);
        if (!interrupted &&
            chaos_zk_restart(&r->cl, s, err, sizeof err) != 0) {
            note(fr, "restart failed: %s", err);
            fr->status = "failed";
        }
        break;
    }
    case CHAOS_F_ZKSTOP: {
        int s = pick_zk(r, fr);
        if (s < 0)
            break;
        snprintf(fr->node, sizeof fr->node, "%s", chaos_zk_name(&r->cl, s));
        if (zk_servers(r->o) > 1)
            note(fr, "SIGSTOP %s%s", fr->node,
                 f->zk < 0 ? " (the leader)" : "");
        progress(r, "zk-stop: SIGSTOP ZooKeeper%s%s%s for %.1f s (session "
                 "timeout %.1f s)",
                 zk_servers(r->o) > 1 ? " " : "",
                 zk_servers(r->o) > 1 ? fr->node : "",
                 f->zk < 0 && zk_servers(r->o) > 1 ? " (the leader)" : "",
                 (double)f->dur_ms / 1000, (double)r->o->session_ms / 1000);
        if (chaos_zk_sigstop(&r->cl, s) != 0) {
            fr->status = "skipped";
            note(fr, "ZooKeeper is not running");
            break;
        }
        wait_until(r, end, -1);
        if (chaos_zk_sigcont(&r->cl, s) != 0) {
            note(fr, "SIGCONT failed");
            fr->status = "failed";
        }
        break;
    }
    case CHAOS_F_PAIR: {
        /* The second loss comes while the first node's session still
         * runs: the controller may promote the stopped node for the
         * first one's units (docs/cluster.md, "A promoted primary lost
         * before it served"). */
        int j = f->node2;
        if (j < 0 || r->cl.nodes[i].pid <= 0 || !chaos_node_up(&r->cl, j)) {
            fr->status = "skipped";
            note(fr, "needs two running nodes (%s%s%s)",
                 r->cl.nodes[i].id, j >= 0 ? " and " : "",
                 j >= 0 ? r->cl.nodes[j].id : "");
            break;
        }
        snprintf(fr->node, sizeof fr->node, "%s", r->cl.nodes[i].id);
        note(fr, "SIGKILL %s, SIGSTOP %s %.1f s later", r->cl.nodes[i].id,
             r->cl.nodes[j].id, (double)f->gap_ms / 1000);
        progress(r, "pair: SIGKILL %s, SIGSTOP %s %.1f s later; both back "
                 "in %.1f s (session timeout %.1f s)",
                 r->cl.nodes[i].id, r->cl.nodes[j].id,
                 (double)f->gap_ms / 1000, (double)f->dur_ms / 1000,
                 (double)r->o->session_ms / 1000);
        chaos_node_kill(&r->cl, i);
        wait_until(r, fr->start_ns + f->gap_ms * 1000000LL, -1);
        chaos_node_sigstop(&r->cl, j);
        wait_until(r, end, -1);
        chaos_node_sigcont(&r->cl, j);
        start_node(r, fr, i);
        break;
    }
    case CHAOS_F_DRAIN:
        if (!chaos_node_up(&r->cl, i)) {
            fr->status = "skipped";
            note(fr, "%s is not running", r->cl.nodes[i].id);
            break;
        }
        snprintf(fr->node, sizeof fr->node, "%s", r->cl.nodes[i].id);
        progress(r, "drain: keel node drain %s, restart in %.1f s",
                 fr->node, (double)f->dur_ms / 1000);
        drain_and_wait(r, fr, i, 0);
        /* It leaves within the window, or late: the restart waits. */
        if (!await_leave(r, i, end) &&
            !await_leave(r, i, chaos_mono_ns() + LEAVE_WAIT_MS * 1000000LL)) {
            note(fr, "%s did not leave within %d s: killed", fr->node,
                 LEAVE_WAIT_MS / 1000);
            chaos_node_kill(&r->cl, i);
        }
        wait_until(r, end, -1);
        start_node(r, fr, i);
        break;
    case CHAOS_F_JOIN:
        for (i = r->cl.base; i < r->cl.nnodes; i++)
            if (r->cl.nodes[i].pid <= 0)
                break;
        if (i >= r->cl.nnodes) {
            fr->status = "skipped";
            note(fr, "no spare node left");
            break;
        }
        snprintf(fr->node, sizeof fr->node, "%s", r->cl.nodes[i].id);
        progress(r, "join: %s joins, drained in %.1f s", fr->node,
                 (double)f->dur_ms / 1000);
        start_node(r, fr, i);
        wait_until(r, end, -1);
        if (r->cl.nodes[i].pid > 0)
            drain_and_wait(r, fr, i, 1);
        break;
    case CHAOS_F_WIPE:
        if (!r->wipe_up) {
            /* The reason was said once, at the start. */
            fr->status = "skipped";
            note(fr, "no wipe with %s",
                 r->o->replicas == 1 ? "--replicas 1" : "one node");
            break;
        }
        if (r->cl.nodes[i].pid <= 0) {
            fr->status = "skipped";
            note(fr, "%s is not running", r->cl.nodes[i].id);
            break;
        }
        snprintf(fr->node, sizeof fr->node, "%s", r->cl.nodes[i].id);
        progress(r, "wipe: SIGKILL %s, restart on an empty data directory "
                    "in %.1f s",
                 fr->node, (double)f->dur_ms / 1000);
        chaos_node_kill(&r->cl, i);
        if (wipe_data(r, i) != 0) {
            fr->status = "failed";
            note(fr, "cannot empty %s", r->cl.nodes[i].data);
        }
        on_event(r, fr->node, "wipe");
        wait_until(r, end, -1);
        start_node(r, fr, i);
        break;
    case CHAOS_F_PARTITION:
        partition(r, fr, end);
        break;
    case CHAOS_F_DISKFULL: {
        size_t filled = 0;
        if (!r->disk_up) {
            fr->status = "skipped";
            note(fr, "%s", r->no_disk);
            break;
        }
        snprintf(fr->node, sizeof fr->node, "%s", r->cl.nodes[i].id);
        progress(r, "disk-full: %s's file system filled for %.1f s",
                 fr->node, (double)f->dur_ms / 1000);
        on_event(r, fr->node, "disk-full");
        if (chaos_disk_fill(r->cl.nodes[i].data, &filled) != 0) {
            fr->status = "failed";
            note(fr, "cannot write in %s", r->cl.nodes[i].data);
        } else {
            note(fr, "%zu bytes written to fill it", filled);
        }
        wait_until(r, end, -1);
        chaos_disk_free(r->cl.nodes[i].data);
        on_event(r, fr->node, "disk-freed");
        break;
    }
    default:
        break;
    }
    if (strcmp(fr->status, "skipped") == 0)
        progress(r, "%s skipped: %s", chaos_fault_name(f->kind), fr->note);
}

static void write_fault(run *r, size_t idx, const fault_rec *fr)
{
    chaos_buf b;

    chaos_buf_init(&b);
    chaos_buf_printf(&b, "{\"index\":%zu,\"fault\":\"%s\"", idx,
                     chaos_fault_name(fr->f->kind));
    if (fr->f->kind == CHAOS_F_PARTITION)
        chaos_buf_printf(&b, ",\"shape\":\"%s\"",
                         chaos_part_name((chaos_part_shape)fr->f->variant));
    if (zk_servers(r->o) > 1 &&
        (fr->f->kind == CHAOS_F_ZK || fr->f->kind == CHAOS_F_ZKSTOP ||
         (fr->f->kind == CHAOS_F_PARTITION &&
          fr->f->variant == CHAOS_P_WITH_ZK)))
        chaos_buf_printf(&b, ",\"zk_planned\":\"%s\"",
                         fr->f->zk < 0 ? "leader"
                                       : chaos_zk_name(&r->cl, fr->f->zk));
    chaos_buf_puts(&b, ",\"node\":");
    chaos_json_put_str(&b, fr->node);
    chaos_buf_printf(&b,
                     ",\"planned_at_ms\":%lld,\"planned_ms\":%lld,"
                     "\"start_ns\":%lld,\"end_ns\":%lld,\"status\":\"%s\"",
                     (long long)fr->f->at_ms, (long long)fr->f->dur_ms,
                     (long long)fr->start_ns, (long long)fr->end_ns,
                     fr->status);
    chaos_buf_puts(&b, ",\"note\":");
    chaos_json_put_str(&b, fr->note);
    chaos_buf_puts(&b, "}\n");
    if (!b.oom)
        fputs(b.p, r->faults);
    fflush(r->faults);
    chaos_buf_free(&b);
}

/* ------------------------------------------------------- heal, settle */

static void heal_all(run *r)
{
    fault_rec fr;
    int i;

    memset(&fr, 0, sizeof fr);
    fr.status = "done";
    if (r->net_up)
        chaos_net_heal(&r->net);
    for (i = 0; i < r->cl.nnodes; i++)
        if (r->mounted[i])
            chaos_disk_free(r->cl.nodes[i].data);
    for (i = 0; i < zk_servers(r->o); i++) {
        char err[256];
        if (r->cl.zk[i].cut)
            chaos_zk_cut(&r->cl, i, 0);
        if (r->cl.zk[i].stopped)
            chaos_zk_sigcont(&r->cl, i);
        if (!r->cl.zk[i].up && !interrupted &&
            chaos_zk_restart(&r->cl, i, err, sizeof err) != 0)
            progress(r, "heal: ZooKeeper %s does not start: %s",
                     chaos_zk_name(&r->cl, i), err);
    }
    for (i = 0; i < r->cl.nnodes; i++)
        if (r->cl.nodes[i].stopped)
            chaos_node_sigcont(&r->cl, i);
    reap_all(r, -1);
    for (i = 0; i < r->cl.base; i++)
        if (r->cl.nodes[i].pid <= 0)
            start_node(r, &fr, i);
    for (i = r->cl.base; i < r->cl.nnodes; i++)
        if (r->cl.nodes[i].pid > 0)
            drain_and_wait(r, &fr, i, 1);
    if (fr.note[0] != '\0')
        progress(r, "heal: %s", fr.note);
}

/* Waits (at most ms) for the cluster to settle. Returns 1 when it did. */
static int settle(run *r, int ms, const char *what)
{
    int64_t t = chaos_mono_ns(), deadline = t + (int64_t)ms * 1000000;
    char why[256] = "";

    for (;;) {
        if (chaos_cluster_settled(&r->cl, why, sizeof why)) {
            progress(r, "%s: settled in %.1f s", what,
                     (double)(chaos_mono_ns() - t) / 1e9);
            return 1;
        }
        if (chaos_mono_ns() > deadline || interrupted)
            break;
        reap_all(r, -1);
        chaos_sleep_ms(250);
    }
    progress(r, "%s: not settled after %d s: %s", what, ms / 1000, why);
    snprintf(r->unsettled, sizeof r->unsettled, "%s", why);
    return 0;
}

/* Every actor read once more, "final": true, through any node that
 * answers, until one read of it is ok: each set actor in each generation
 * the clients used (max_gen the last). Returns how many were read, and
 * how many there are in *total. */
static int final_reads(run *r, int max_gen, int *total)
{
    const chaos_run_opts *o = r->o;
    int64_t deadline = chaos_mono_ns() + FINAL_MS * 1000000LL;
    int k, read = 0, gen;

    *total = 0;
    for (k = 0; k < o->actors; k++)
        for (gen = 0; gen <= (chaos_wl_family(&r->wl, k) == CHAOS_SET
                                  ? max_gen
                                  : 0);
             gen++) {
        int attempt;

        (*total)++;

        for (attempt = 0; attempt < FINAL_TRIES; attempt++) {
            int i = (k + attempt) % r->cl.base;
            keel_client *c;
            chaos_wop op;
            chaos_type outcome = CHAOS_FAIL;
            int rc;

            if (chaos_mono_ns() > deadline || interrupted)
                break;
            if (!chaos_node_up(&r->cl, i))
                continue;
            if (keel_client_connect(r->cl.nodes[i].addr,
                                    o->client_timeout_ms, &c) != 0) {
                chaos_sleep_ms(200);
                continue;
            }
            chaos_wl_final(&r->wl, k, gen, &op);
            rc = do_op(r, &c, o->clients, &i, &op, NULL, &outcome);
            keel_client_close(c);
            if (outcome == CHAOS_OK) {
                read++;
                break;
            }
            if (rc == KEEL_EINVAL && atomic_load(&r->refused))
                return read;
            chaos_sleep_ms(500);
        }
    }
    return read;
}

/* ------------------------------------------------------------- files */

static FILE *open_in(const char *dir, const char *name, const char *mode)
{
    char *p;
    FILE *f;

    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return NULL;
    f = fopen(p, mode); /* mode with 'e': not inherited by the nodes */
    free(p);
    return f;
}

static int mkdir_p(const char *path)
{
    char *p = strdup(path), *s;
    int rc = 0;

    if (p == NULL)
        return -1;
    for (s = p + 1; *s != '\0'; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                rc = -1;
            *s = '/';
        }
    if (mkdir(p, 0755) != 0 && errno != EEXIST)
        rc = -1;
    free(p);
    return rc;
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

static void rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void faults_list(unsigned kinds, char *buf, size_t cap)
{
    size_t n = 0;
    int k;

    buf[0] = '\0';
    for (k = 0; k < CHAOS_F_COUNT; k++)
        if (kinds & (1u << k))
            n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s",
                                  n ? "," : "",
                                  chaos_fault_name((chaos_fault_kind)k));
    if (n == 0)
        snprintf(buf, cap, "none");
}

/* Kinds asked for that the schedule has no room for: said, with the
 * --seconds that would fit one of each (every kind comes once before any
 * comes twice; a fault and its pause take 9 s or so, within the middle
 * eight tenths of the run). */
static void unscheduled_say(FILE *out, const chaos_run_opts *o,
                            const chaos_fault *sched, size_t nsched)
{
    unsigned asked = o->faults & chaos_faults_possible(o->nodes), got = 0;
    unsigned kinds = 0;
    char names[128];
    size_t i;
    int k;

    for (i = 0; i < nsched; i++)
        got |= 1u << sched[i].kind;
    if ((asked & ~got) == 0)
        return;
    for (k = 0; k < CHAOS_F_COUNT; k++)
        kinds += (asked >> k) & 1u;
    faults_list(asked & ~got, names, sizeof names);
    fprintf(out, "  not scheduled: %s (%zu faults fit in %lld s; give "
                 "--seconds %u or more for one of each kind asked for)\n",
            names, nsched, (long long)o->seconds, kinds * 12u);
}

static void write_run_json(run *r, int64_t end_ns, size_t nfaults,
                           int settled, int finals)
{
    const chaos_run_opts *o = r->o;
    FILE *f = open_in(o->out, "run.json", "we");
    char faults[128];
    chaos_buf b;
    int i;

    if (f == NULL)
        return;
    faults_list(o->faults, faults, sizeof faults);
    chaos_buf_init(&b);
    chaos_buf_printf(&b,
                     "{\"seed\":%llu,\"nodes\":%d,\"replicas\":%d,"
                     "\"clients\":%d,\"actors\":%d,\"seconds\":%lld,"
                     "\"workload\":\"%s\",\"faults\":\"%s\",\"rate\":%d,"
                     "\"shards\":%d,\"session_ms\":%d,"
                     "\"replica_dead_ms\":%d,\"zk_servers\":%d,"
                     "\"keyed\":%d,\"refusals\":%d,"
                     "\"start_ns\":%lld,\"end_ns\":%lld,"
                     "\"realtime_minus_monotonic_ns\":%lld,"
                     "\"faults_planned\":%zu,\"settled\":%s,"
                     "\"final_reads_ok\":%d,\"unreadable_replies\":%llu,"
                     "\"stray_exits\":%d,\"cluster\":",
                     (unsigned long long)o->seed, o->nodes, o->replicas,
                     o->clients, o->actors, (long long)o->seconds,
                     chaos_workload_name(o->workload), faults, o->rate,
                     o->shards, o->session_ms, o->replica_dead_ms,
                     zk_servers(o), o->keyed, o->refusals, (long long)r->t0,
                     (long long)end_ns, (long long)(r->real0 - r->t0),
                     nfaults, settled ? "true" : "false", finals,
                     (unsigned long long)r->nbad, r->stray_exits);
    chaos_json_put_str(&b, r->cl.name);
    if (o->workload_type != NULL) {
        chaos_buf_puts(&b, ",\"workload_type\":");
        chaos_json_put_str(&b, o->workload_type);
    }
    if (o->load != NULL) {
        chaos_buf_puts(&b, ",\"load\":");
        chaos_json_put_str(&b, o->load);
    }
    if (o->nnode_args > 0) {
        chaos_buf_puts(&b, ",\"node_args\":[");
        for (i = 0; i < o->nnode_args; i++) {
            if (i > 0)
                chaos_buf_puts(&b, ",");
            chaos_json_put_str(&b, o->node_args[i]);
        }
        chaos_buf_puts(&b, "]");
    }
    chaos_buf_puts(&b, ",\"node_names\":[");
    for (i = 0; i < r->cl.nnodes; i++) {
        if (i > 0)
            chaos_buf_puts(&b, ",");
        chaos_json_put_str(&b, r->cl.nodes[i].id);
    }
    chaos_buf_puts(&b, "]}\n");
    if (!b.oom)
        fputs(b.p, f);
    chaos_buf_free(&b);
    fclose(f);
}

/* The value of the line "name VALUE" of a STAT answer; 0 when absent. */
static unsigned long long stat_of(const char *text, const char *name)
{
    char v[32];

    return chaos_line_value(text, name, v, sizeof v) == 0
               ? strtoull(v, NULL, 10)
               : 0;
}

/* The replication figures of the nodes up at the end, summed: what the
 * faults made the cluster do (each node counts since its last start). */
static const char *const repl_stats[] = {
    "failovers", "isr_shrinks", "isr_expansions", "repl_catchups",
    "repl_catchup_same", "repl_copies_deleted", "units_promoted_on_move"};
#define NREPL_STATS (sizeof repl_stats / sizeof *repl_stats)

static void save_cluster(run *r)
{
    FILE *f = open_in(r->o->out, "cluster.txt", "we");
    unsigned long long sum[NREPL_STATS] = {0};
    int i, asked = 0, told = 0;
    size_t k;

    if (f == NULL)
        return;
    for (i = 0; i < r->cl.nnodes; i++) {
        char *out = NULL;
        if (!chaos_node_up(&r->cl, i) || asked)
            continue;
        asked = 1;
        fprintf(f, "# INFO nodes, through %s\n", r->cl.nodes[i].id);
        if (chaos_node_info(&r->cl, i, "nodes", 5000, &out) == 0)
            fputs(out, f);
        free(out);
        out = NULL;
        fprintf(f, "# INFO shards, through %s\n", r->cl.nodes[i].id);
        if (chaos_node_info(&r->cl, i, "shards", 5000, &out) == 0)
            fputs(out, f);
        free(out);
    }
    for (i = 0; i < r->cl.nnodes; i++) {
        char *out = NULL;
        if (!chaos_node_up(&r->cl, i))
            continue;
        fprintf(f, "# STAT %s (since its last start)\n", r->cl.nodes[i].id);
        if (chaos_node_stats(&r->cl, i, 5000, &out) == 0) {
            fputs(out, f);
            for (k = 0; k < NREPL_STATS; k++)
                sum[k] += stat_of(out, repl_stats[k]);
            told++;
        }
        free(out);
    }
    fclose(f);
    if (r->o->replicas > 1 && told > 0)
        progress(r, "replication, as %d node(s) up at the end counted it "
                    "since their last start: %llu failovers, %llu in-sync "
                    "shrinks and %llu expansions, %llu catch-ups (%llu found "
                    "the copy the same), %llu copies deleted, %llu units "
                    "promoted on a move (%s/cluster.txt)",
                 told, sum[0], sum[1], sum[2], sum[3], sum[4], sum[5], sum[6],
                 r->o->out);
}

/* The unit lines of an INFO shards answer (the answer may begin with
 * other lines), malloc'd; NULL when the node does not answer. */
static char *unit_lines(run *r, int via)
{
    char *out = NULL, *keep, *p, *q;

    if (chaos_node_info(&r->cl, via, "shards", 5000, &out) != 0)
        return NULL;
    keep = q = out;
    for (p = out; *p != '\0';) {
        char *nl = strchr(p, '\n');
        size_t n = nl != NULL ? (size_t)(nl - p) + 1 : strlen(p);
        if (strncmp(p, "unit ", 5) == 0) {
            memmove(q, p, n);
            q += n;
        }
        p += n;
    }
    *q = '\0';
    return keep;
}

/* How many units of a unit_lines() text are moving or have a backup out
 * of sync. */
static int units_behind(const char *units)
{
    const char *p;
    int n = 0;

    for (p = units; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
        if (memmem(p, len, " target ", 8) != NULL ||
            memmem(p, len, " out_of_sync ", 13) != NULL)
            n++;
        p += len + (nl != NULL);
    }
    return n;
}

/* DIR/digests.txt for the replicas-agree check (chaos/replicas.h): the
 * unit lines of INFO shards as one node sees the map, then INFO digest of
 * every unit on every node that runs. First waits (at most INSYNC_MS) for
 * every backup to be in sync again, so that the wiped and restarted ones
 * are compared too; then takes the digests between two readings of the
 * map, again until both readings agree (at most DIGEST_TRIES times). The
 * clients have stopped: nothing writes any more. */
static void save_digests(run *r)
{
    int64_t t = chaos_mono_ns(), until = t + INSYNC_MS * 1000000LL;
    char *units = NULL, *again = NULL;
    int via = -1, i, tries, behind = 0, ndg = 0, nunits = 0;
    chaos_buf b;
    FILE *f;

    for (i = 0; i < r->cl.base && via < 0; i++)
        if (chaos_node_up(&r->cl, i))
            via = i;
    if (via < 0) {
        progress(r, "digests: no node runs");
        return;
    }
    for (;;) {
        free(units);
        units = unit_lines(r, via);
        behind = units != NULL ? units_behind(units) : -1;
        if (behind == 0 || chaos_mono_ns() > until || interrupted)
            break;
        chaos_sleep_ms(500);
    }
    if (interrupted) {
        free(units);
        return;
    }
    if (behind != 0)
        fprintf(r->out, "warning: %d units still moving or with replicas "
                        "out of sync %d s after the final reads: "
                        "replicas-agree compares only the in-sync ones\n",
                behind, INSYNC_MS / 1000);
    chaos_buf_init(&b);
    for (tries = 0; tries < DIGEST_TRIES && units != NULL; tries++) {
        const char *p;

        chaos_buf_free(&b);
        chaos_buf_init(&b);
        chaos_buf_printf(&b, "# keel-chaos digests: INFO shards through %s, "
                             "then INFO digest of each unit on each node "
                             "that runs\n",
                         r->cl.nodes[via].id);
        chaos_buf_puts(&b, units);
        ndg = nunits = 0;
        for (p = units; *p != '\0';) {
            const char *nl = strchr(p, '\n');
            size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
            char cap[80], words[128];
            unsigned shard;

            nunits++;
            if (sscanf(p, "unit %79s %u", cap, &shard) == 2)
                for (i = 0; i < r->cl.nnodes; i++) {
                    char *out = NULL, hex[32];
                    unsigned long long recs;
                    if (!chaos_node_up(&r->cl, i))
                        continue;
                    snprintf(words, sizeof words, "digest %s %u", cap, shard);
                    if (chaos_node_info(&r->cl, i, words, 5000, &out) == 0 &&
                        sscanf(out, "digest %31s records %llu", hex,
                               &recs) == 2) {
                        chaos_buf_printf(&b, "digest %s %s %u %s %llu\n",
                                         r->cl.nodes[i].id, cap, shard, hex,
                                         recs);
                        ndg++;
                    } else if (r->log != NULL) {
                        fprintf(r->log, "digest %s %u on %s: no answer\n",
                                cap, shard, r->cl.nodes[i].id);
                    }
                    free(out);
                }
            p += len + (nl != NULL);
        }
        again = unit_lines(r, via);
        if (again != NULL && strcmp(again, units) == 0)
            break;
        free(units);
        units = again;
        again = NULL;
    }
    if (units != NULL && b.p != NULL && !b.oom &&
        (f = open_in(r->o->out, "digests.txt", "we")) != NULL) {
        fputs(b.p, f);
        fclose(f);
        progress(r, "digests: %d digests of %d units from the nodes that "
                    "run, in %.1f s%s",
                 ndg, nunits, (double)(chaos_mono_ns() - t) / 1e9,
                 tries == DIGEST_TRIES ? " (the map kept changing)" : "");
    } else {
        progress(r, "digests: not recorded (%s does not answer INFO "
                    "shards)",
                 r->cl.nodes[via].id);
    }
    chaos_buf_free(&b);
    free(units);
    free(again);
}

/* ---------------------------------------------------------------- run */

/* Stops what the run started and removes what it made on the system:
 * nodes, ZooKeeper, the relays, the network namespaces, the tmpfs mounts
 * (the nodes' data on them goes too). Again, it does nothing. */
static void undo_harness(run *r)
{
    char *p;
    int i;

    chaos_cluster_free(&r->cl);
    for (i = 0; i < CHAOS_ZK_MAX; i++)
        chaos_relay_stop(&r->relay[i]);
    chaos_net_teardown(&r->net);
    for (i = 0; i < CHAOS_NODES_MAX; i++)
        if (r->mounted[i] &&
            asprintf(&p, "%s/nodes/n%d", r->o->out, i) >= 0) {
            chaos_disk_umount(p);
            free(p);
            r->mounted[i] = 0;
        }
}

/* Without --keep-data, the nodes' and ZooKeeper's data (the checks do
 * not read them). */
static void remove_data(run *r)
{
    char *p;
    int i;

    if (r->o->keep_data || r->data_removed)
        return;
    r->data_removed = 1;
    for (i = 0; i < r->cl.nnodes; i++)
        if (asprintf(&p, "%s/nodes/n%d", r->o->out, i) >= 0) {
            rm_rf(p);
            free(p);
        }
    if (asprintf(&p, "%s/zk/data", r->o->out) >= 0) {
        rm_rf(p);
        free(p);
    }
}

static int check_and_report(run *r, FILE *out, FILE *err)
{
    const chaos_run_opts *o = r->o;
    chaos_check_opts co;
    chaos_check_kept kept;
    chaos_report_checks done;
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    FILE *f;
    int rc;

    chaos_check_opts_init(&co);
    co.max_states = o->max_states;
    if (mem == NULL)
        return chaos_check_dir(o->out, &co, out, err);
    rc = chaos_check_dir_kept(o->out, &co, mem, err, &kept);
    fclose(mem);
    fputs(text, out);
    fflush(out); /* the verdicts before the report is drawn */
    if ((f = open_in(o->out, "check.txt", "we")) != NULL) {
        fputs(text, f);
        fclose(f);
    }
    done.text = text;
    done.rc = rc;
    done.kept = &kept;
    if (chaos_report_write_checked(o->out, &co, err, &done) == 0)
        fprintf(out, "report: %s/report.html\n", o->out);
    chaos_check_kept_free(&kept); /* what the report did not take */
    free(text);
    fflush(out);
    return rc;
}

int chaos_run(const chaos_run_opts *o, FILE *out, FILE *err)
{
    run r;
    client *cls = NULL;
    chaos_fault *sched = NULL;
    size_t nsched = 0, k;
    int64_t slip_ms = 0, last_end;
    chaos_sched_opts so;
    char msg[256], faults[128], *p;
    int i, rc = CHAOS_EXIT_NO_RUN, settled = 0, finals = 0, spares;
    int ndone = 0, nfailed = 0, nskipped = 0; /* faults, by status */
    int max_gen = 0, nactors = 0;
    struct stat st;
    struct saved_signals saved;

    memset(&r, 0, sizeof r);
    memset(&saved, 0, sizeof saved);
    for (i = 0; i < CHAOS_ZK_MAX; i++)
        r.relay[i].lfd = r.relay[i].stop_pipe[0] = r.relay[i].stop_pipe[1] =
            -1;
    r.o = o;
    r.out = out;
    r.err = err;
    pthread_mutex_init(&r.mu, NULL);
    chaos_hwriter_init(&r.hw, NULL);
    atomic_init(&r.stop, 0);
    atomic_init(&r.refused, 0);
    atomic_init(&r.notype, 0);
    signal(SIGPIPE, SIG_IGN);

    if (o->nodes < 1 || o->clients < 1 || o->actors < 1 || o->seconds < 1 ||
        o->nodes + 1 > CHAOS_NODES_MAX) {
        fprintf(err, "keel-chaos: run needs at least one node, client, "
                     "actor and second (and at most %d nodes)\n",
                CHAOS_NODES_MAX - 1);
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (o->zk_servers != 1 && o->zk_servers != CHAOS_ZK_MAX) {
        fprintf(err, "keel-chaos: --zk-servers takes 1 or %d\n",
                CHAOS_ZK_MAX);
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (o->shapes != 0 && !(o->faults & (1u << CHAOS_F_PARTITION))) {
        fprintf(err, "keel-chaos: --partitions needs partition among the "
                     "--faults\n");
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (o->shapes != 0 && o->zk_servers == 1 &&
        (o->shapes & ~(1u << CHAOS_P_WITH_ZK)) == 0) {
        fprintf(err, "keel-chaos: --partitions with-zk-server needs an "
                     "ensemble (--zk-servers %d)\n",
                CHAOS_ZK_MAX);
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (o->replicas < 1 || o->replicas > 5) {
        fprintf(err, "keel-chaos: --replicas takes 1 to 5 (keeld "
                     "--replicas)\n");
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (o->refusals > 0 && o->workload != CHAOS_W_COUNTER &&
        o->workload != CHAOS_W_MIXED) {
        fprintf(err, "keel-chaos: --refusals needs counters: --workload "
                     "counter or mixed\n");
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (o->workload_type != NULL && o->workload == CHAOS_W_MIXED) {
        fprintf(err, "keel-chaos: --workload-type needs one workload "
                     "(register, counter or set): the type answers that "
                     "family's messages\n");
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (o->workload_type != NULL &&
        (o->workload_type[0] == '\0' || strlen(o->workload_type) > 64 ||
         strchr(o->workload_type, '/') != NULL)) {
        fprintf(err, "keel-chaos: --workload-type: 1 to 64 bytes, no '/'\n");
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (o->load != NULL) {
        /* PATH.so[:ARGS], as keeld takes it: the file is the part before
         * the first ':'. */
        size_t plen = strcspn(o->load, ":");
        char *path = strndup(o->load, plen);
        int bad = path == NULL || plen == 0 || access(path, R_OK) != 0;
        if (bad)
            fprintf(err, "keel-chaos: --load %s: %s\n", o->load,
                    path == NULL ? "out of memory"
                    : plen == 0  ? "no file before the ':'"
                                 : strerror(errno));
        free(path);
        if (bad)
            return CHAOS_EXIT_BAD_INPUT;
    }
    if (access(o->keeld, X_OK) != 0) {
        fprintf(err, "keel-chaos: no keeld at %s (--keeld PATH)\n",
                o->keeld);
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (asprintf(&p, "%s/zk.sh", o->zk_conf) >= 0) {
        int bad = access(p, R_OK) != 0;
        if (bad)
            fprintf(err, "keel-chaos: no zk.sh in %s (--zk-conf DIR: the "
                         "zk-conf directory of keel's source or install)\n",
                    o->zk_conf);
        free(p);
        if (bad)
            return CHAOS_EXIT_BAD_INPUT;
    }
    if (mkdir_p(o->out) != 0) {
        fprintf(err, "keel-chaos: cannot create %s: %s\n", o->out,
                strerror(errno));
        return CHAOS_EXIT_NO_RUN;
    }
    if (asprintf(&p, "%s/history.jsonl", o->out) >= 0) {
        int exists = stat(p, &st) == 0;
        free(p);
        if (exists) {
            fprintf(err, "keel-chaos: %s holds a run already%s; give another "
                         "--out\n",
                    o->out,
                    chaos_run_unfinished(o->out)
                        ? " (one that did not finish: remove it to use the "
                          "name again)"
                        : "");
            return CHAOS_EXIT_BAD_INPUT;
        }
    }

    r.wl.kind = o->workload;
    r.wl.actors = o->actors;
    r.wl.type = o->workload_type;
    r.wl.refusals = o->refusals;
    memset(&so, 0, sizeof so);
    so.seed = o->seed;
    so.seconds = o->seconds;
    so.nodes = o->nodes;
    so.session_ms = o->session_ms;
    so.kinds = o->faults;
    so.zk_servers = zk_servers(o);
    so.shapes = o->shapes;
    if (chaos_schedule_make(&so, &sched, &nsched) != 0) {
        fprintf(err, "keel-chaos: out of memory\n");
        return CHAOS_EXIT_NO_RUN;
    }

    /* From here on the run makes things to undo: an interrupt leaves
     * through the end that undoes them. */
    catch_signals(&saved);
    r.log = open_in(o->out, "run.log", "we");
    r.hf = open_in(o->out, "history.jsonl", "we");
    r.events = open_in(o->out, "events.jsonl", "we");
    r.faults = open_in(o->out, "faults.jsonl", "we");
    if (r.log == NULL || r.hf == NULL || r.events == NULL ||
        r.faults == NULL) {
        fprintf(err, "keel-chaos: cannot write in %s: %s\n", o->out,
                strerror(errno));
        goto out;
    }
    r.hw.f = r.hf;

    faults_list(o->faults, faults, sizeof faults);
    if (o->rate > 0)
        snprintf(msg, sizeof msg, "%d ops/s", o->rate);
    else
        snprintf(msg, sizeof msg, "ops as fast as they go");
    fprintf(out,
            "keel-chaos run: seed %llu, %d nodes, %d clients, %d %s actors, "
            "%lld s, %s, faults %s: %zu scheduled\n",
            (unsigned long long)o->seed, o->nodes, o->clients, o->actors,
            chaos_workload_name(o->workload), (long long)o->seconds, msg,
            faults, nsched);
    /* Kinds this cluster cannot take are left out of the schedule, and
     * said so here, as partition, disk-full and wipe say why they will
     * be skipped. */
    if (o->faults & ~chaos_faults_possible(o->nodes) &
        (1u << CHAOS_F_PAIR))
        fprintf(out, "keel-chaos: pair faults skipped: with %d node%s a "
                     "pair (a node killed, another stopped) leaves none to "
                     "serve: it needs --nodes 3 or more; none is planned\n",
                o->nodes, o->nodes == 1 ? "" : "s");
    /* keeld takes an R above the members and places min(R, members). */
    if (o->replicas > o->nodes) {
        int with_spare = o->replicas < o->nodes + 1 ? o->replicas
                                                    : o->nodes + 1;
        fprintf(out, "  --replicas %d with %d node%s: a unit has min(R, "
                     "members) replicas, as keeld places them: %d here%s\n",
                o->replicas, o->nodes, o->nodes == 1 ? "" : "s",
                replicas_effective(o),
                (o->faults & (1u << CHAOS_F_JOIN)) &&
                        with_spare > replicas_effective(o)
                    ? ", one more while a join fault's spare node is in"
                    : "");
    }
    /* Faults come from a tenth of the run until a tenth before its end,
     * each with its pauses: a short run may have room for none, which
     * would otherwise pass unremarked. */
    if (o->faults != 0 &&
        (o->faults & chaos_faults_possible(o->nodes)) == 0)
        fprintf(out, "warning: no fault of --faults %s can be made with %d "
                     "node%s: this run injects none\n",
                faults, o->nodes, o->nodes == 1 ? "" : "s");
    else if (nsched == 0 && o->faults != 0)
        fprintf(out, "  no fault fits in %lld s (faults begin after a tenth "
                     "of the run, at least 2 s, and are healed a tenth "
                     "before its end, at least 3 s): give a longer "
                     "--seconds\n",
                (long long)o->seconds);
    else if (o->faults != 0)
        unscheduled_say(out, o, sched, nsched);
    if (o->workload_type != NULL)
        fprintf(out, "  actor type %s%s%s, answering as the built-in %s "
                     "type\n",
                o->workload_type, o->load != NULL ? " from " : "",
                o->load != NULL ? o->load : "",
                o->workload == CHAOS_W_SET ? "kv"
                                           : chaos_workload_name(o->workload));
    if (o->keyed > 0)
        fprintf(out, "  every operation with a request key, sent again up "
                     "to %d times while its outcome allows\n",
                o->keyed);
    if (o->refusals > 0 && o->workload_type != NULL)
        fprintf(out, "  %d%% of counter increments by 2^62 or -2^62: %s "
                     "must refuse those that would overflow, as the "
                     "built-in counter does\n",
                o->refusals, o->workload_type);
    else if (o->refusals > 0)
        fprintf(out, "  %d%% of counter increments by 2^62 or -2^62: the "
                     "counter refuses those that would overflow\n",
                o->refusals);
    if (zk_servers(o) > 1)
        fprintf(out, "  ZooKeeper: an ensemble of %d servers (zk1..zk%d); "
                     "zk and zk-stop hit one server at a time, so two keep "
                     "the quorum\n",
                zk_servers(o), zk_servers(o));
    for (k = 0; k < nsched; k++) {
        char zk[48] = "";
        if (zk_servers(o) > 1 &&
            (sched[k].kind == CHAOS_F_ZK || sched[k].kind == CHAOS_F_ZKSTOP ||
             (sched[k].kind == CHAOS_F_PARTITION &&
              sched[k].variant == CHAOS_P_WITH_ZK))) {
            if (sched[k].zk < 0)
                snprintf(zk, sizeof zk, " (the ZooKeeper leader)");
            else
                snprintf(zk, sizeof zk, " (ZooKeeper zk%d)", sched[k].zk + 1);
        }
        if (sched[k].node >= 0)
            fprintf(out, "  planned: +%5.1f s %s n%d for %.1f s%s%s%s\n",
                    (double)sched[k].at_ms / 1000,
                    chaos_fault_name(sched[k].kind), sched[k].node,
                    (double)sched[k].dur_ms / 1000,
                    sched[k].kind == CHAOS_F_PARTITION ? ", " : "",
                    sched[k].kind == CHAOS_F_PARTITION
                        ? chaos_part_name((chaos_part_shape)sched[k].variant)
                        : "",
                    zk);
        else
            fprintf(out, "  planned: +%5.1f s %s%s for %.1f s\n",
                    (double)sched[k].at_ms / 1000,
                    chaos_fault_name(sched[k].kind), zk,
                    (double)sched[k].dur_ms / 1000);
    }
    fflush(out);

    /* The cluster: a name of its own, one spare node for join faults. */
    r.cl.dir = o->out;
    r.cl.keeld = o->keeld;
    r.cl.zk_conf = o->zk_conf;
    snprintf(r.cl.name, sizeof r.cl.name, "chaos%d-%llu", (int)getpid(),
             (unsigned long long)o->seed);
    r.cl.shards = o->shards;
    r.cl.load = o->load;
    r.cl.replicas = o->replicas;
    r.cl.session_ms = o->session_ms;
    {
        int na = 0;
        if (o->replica_dead_ms > 0) {
            snprintf(r.dead_ms, sizeof r.dead_ms, "%d", o->replica_dead_ms);
            r.node_args[na++] = "--replica-dead-ms";
            r.node_args[na++] = r.dead_ms;
        }
        for (i = 0; i < o->nnode_args && i < CHAOS_NODE_ARGS_MAX; i++)
            r.node_args[na++] = o->node_args[i];
        r.node_args[na] = NULL;
        r.cl.args = na > 0 ? r.node_args : NULL;
    }
    r.cl.zk_servers = zk_servers(o);
    /* Session timeouts must lie within 2 to 20 ticks: 10. */
    r.cl.zk_tick_ms = o->session_ms / 10 > 100 ? o->session_ms / 10 : 100;
    r.cl.log = r.log;
    r.cl.on_event = on_event;
    r.cl.event_data = &r;
    r.cl.cancel = &interrupted;
    spares = (o->faults & (1u << CHAOS_F_JOIN)) ? 1 : 0;
    if (chaos_cluster_init(&r.cl, o->nodes + spares, o->nodes, NULL) != 0) {
        fprintf(err, "keel-chaos: cannot lay out the cluster (no free "
                     "port?)\n");
        goto out;
    }
    if (o->faults & (1u << CHAOS_F_PARTITION)) {
        /* Each node in a network namespace of its own; where that cannot
         * be done, the partitions are skipped, and said so once. */
        if (chaos_net_check(r.no_net, sizeof r.no_net) == 0 &&
            chaos_net_setup(&r.net, o->out, r.cl.nnodes, r.log, r.no_net,
                            sizeof r.no_net) == 0) {
            r.net_up = 1;
            for (i = 0; i < r.cl.nnodes; i++)
                chaos_cluster_place(&r.cl, i, r.net.addr[i], 7420,
                                    r.net.ns[i]);
            progress(&r, "network: nodes in namespaces %s-n0.. on a bridge "
                         "with the harness at %s",
                     r.net.tag, r.net.host_addr);
        } else {
            fprintf(out, "keel-chaos: partition faults skipped: %s\n",
                    r.no_net);
        }
    }
    if (o->faults & (1u << CHAOS_F_DISKFULL)) {
        /* Each node's data on a small file system of its own, which the
         * fault fills. */
        if (chaos_disk_check(r.no_disk, sizeof r.no_disk) == 0) {
            r.disk_up = 1;
            for (i = 0; i < r.cl.nnodes && r.disk_up; i++) {
                if (chaos_disk_mount(r.cl.nodes[i].data, CHAOS_DISK_BYTES,
                                     r.no_disk, sizeof r.no_disk) != 0)
                    r.disk_up = 0;
                else
                    r.mounted[i] = 1;
            }
        }
        if (r.disk_up)
            progress(&r, "disks: each node's data on a tmpfs of %u MiB",
                     CHAOS_DISK_BYTES >> 20);
        else
            fprintf(out, "keel-chaos: disk-full faults skipped: %s\n",
                    r.no_disk);
    }
    if (o->faults & (1u << CHAOS_F_WIPE)) {
        /* With one replica a wiped node's units have no other copy: the
         * loss is by design, and taking it is an operator's decision
         * (keel node forget), not a fault keel could survive. */
        if (replicas_effective(o) > 1) {
            r.wipe_up = 1;
        } else {
            snprintf(r.no_wipe, sizeof r.no_wipe,
                     "with %s a node's units have no other copy: a wipe "
                     "loses them by design (keel node forget accepts that "
                     "loss)",
                     o->replicas == 1 ? "--replicas 1" : "one node");
            fprintf(out, "keel-chaos: wipe faults skipped: %s\n", r.no_wipe);
        }
    }
    progress(&r, "starting ZooKeeper (%s/zk.sh)", o->zk_conf);
    if (chaos_zk_start(&r.cl, msg, sizeof msg) != 0) {
        if (interrupted)
            goto interrupt;
        fprintf(err, "keel-chaos: ZooKeeper: %s\n", msg);
        goto out;
    }
    if (r.net_up) {
        /* ZooKeeper listens on loopback: the nodes reach each server
         * through a relay on an address of the bridge of its own. */
        size_t len = 0;
        for (i = 0; i < zk_servers(o); i++) {
            if (chaos_relay_start(&r.relay[i], r.net.zk_addr[i], 0,
                                  "127.0.0.1", r.cl.zk[i].port) != 0) {
                fprintf(err, "keel-chaos: cannot relay ZooKeeper to %s: "
                             "%s\n",
                        r.net.zk_addr[i], strerror(errno));
                goto out;
            }
            len += (size_t)snprintf(r.cl.zk_via + len,
                                    sizeof r.cl.zk_via - len, "%s%s:%d",
                                    i ? "," : "", r.net.zk_addr[i],
                                    r.relay[i].port);
        }
    }
    if (interrupted)
        goto interrupt;
    if (zk_servers(o) > 1)
        progress(&r, "ZooKeeper: zk1..zk%d on %s; the nodes' --zk %s",
                 zk_servers(o), r.cl.zk_hosts,
                 r.cl.zk_via[0] != '\0' ? r.cl.zk_via : r.cl.zk_hosts);
    for (i = 0; i < o->nodes && !interrupted; i++)
        if (chaos_node_start(&r.cl, i, msg, sizeof msg) != 0) {
            if (interrupted)
                goto interrupt;
            fprintf(err, "keel-chaos: %s\n", msg);
            goto out;
        }
    if (interrupted)
        goto interrupt;
    progress(&r, "%d nodes up (cluster %s, %d shards)", o->nodes, r.cl.name,
             o->shards);
    if (!settle(&r, SETTLE_MS, "start")) {
        if (interrupted)
            goto interrupt;
        fprintf(err, "keel-chaos: the cluster did not form\n");
        goto out;
    }

    /* The workload. */
    cls = calloc((size_t)o->clients, sizeof *cls);
    if (cls == NULL)
        goto out;
    r.t0 = chaos_mono_ns();
    r.real0 = chaos_real_ns();
    last_end = r.t0 + (o->seconds * 1000 - (o->seconds * 100 > 3000
                                                ? o->seconds * 100
                                                : 3000)) *
                          1000000LL;
    on_event(&r, "clients", "start");
    for (i = 0; i < o->clients; i++) {
        cls[i].r = &r;
        cls[i].id = i;
        cls[i].started =
            pthread_create(&cls[i].th, NULL, client_main, &cls[i]) == 0;
    }
    progress(&r, "%d clients running for %lld s", o->clients,
             (long long)o->seconds);
    /* A fault that ran long (a slow restart, a drain) pushes the later
     * ones back, keeping the pauses between them; one that would then not
     * be healed before the last tenth of the run is left out. */
    for (k = 0; k < nsched && !atomic_load(&r.refused) &&
                !atomic_load(&r.notype) && !interrupted;
         k++) {
        int64_t at = r.t0 + (sched[k].at_ms + slip_ms) * 1000000LL;
        fault_rec fr;

        memset(&fr, 0, sizeof fr);
        fr.f = &sched[k];
        wait_until(&r, at, -1);
        if (interrupted)
            break;
        fr.start_ns = chaos_mono_ns();
        if (fr.start_ns > at + 100000000LL)
            slip_ms += (fr.start_ns - at) / 1000000;
        if (fr.start_ns + sched[k].dur_ms * 1000000LL > last_end) {
            fr.status = "skipped";
            note(&fr, "no time left: the faults before ran %.1f s over",
                 (double)slip_ms / 1000);
            progress(&r, "%s skipped: %s", chaos_fault_name(sched[k].kind),
                     fr.note);
        } else {
            fault_run(&r, &fr);
        }
        fr.end_ns = chaos_mono_ns();
        write_fault(&r, k, &fr);
        if (strcmp(fr.status, "done") == 0)
            ndone++;
        else if (strcmp(fr.status, "failed") == 0)
            nfailed++;
        else
            nskipped++;
    }
    wait_until(&r, r.t0 + o->seconds * 1000000000LL, -1);
    atomic_store(&r.stop, 1);
    for (i = 0; i < o->clients; i++)
        if (cls[i].started)
            pthread_join(cls[i].th, NULL);
    on_event(&r, "clients", "stop");
    progress(&r, "clients stopped: %llu operations (%llu ok, %llu fail, "
                 "%llu info)",
             (unsigned long long)r.nops, (unsigned long long)r.nok,
             (unsigned long long)r.nfail, (unsigned long long)r.ninfo);
    if (interrupted)
        goto interrupt;
    if (r.hist_err[0] != '\0') {
        fprintf(err, "keel-chaos: the history writer refused an event (a "
                     "bug of the runner): %s\n",
                r.hist_err);
        goto out;
    }
    if (atomic_load(&r.notype)) {
        if (o->load != NULL)
            fprintf(err, "keel-chaos: the nodes do not have actor type "
                         "'%s' (%s): %s (--load) does not register it\n",
                    o->workload_type != NULL ? o->workload_type : "?",
                    r.notype_msg, o->load);
        else
            fprintf(err, "keel-chaos: the nodes do not have actor type "
                         "'%s' (%s); give the plugin that registers it "
                         "with --load PLUGIN.so\n",
                    o->workload_type != NULL ? o->workload_type : "?",
                    r.notype_msg);
        goto out;
    }

    max_gen = set_gen(&r);
    heal_all(&r);
    settled = settle(&r, SETTLE_MS, "healed");
    finals = final_reads(&r, max_gen, &nactors);
    if (interrupted)
        goto interrupt;
    progress(&r, "final reads: %d of %d actors read", finals, nactors);
    save_digests(&r);
    save_cluster(&r);
    if (interrupted)
        goto interrupt;
    write_run_json(&r, chaos_mono_ns(), nsched, settled, finals);
    for (i = 0; i < r.cl.nnodes; i++)
        if (r.cl.nodes[i].pid > 0) {
            if (r.cl.nodes[i].stopped)
                chaos_node_sigcont(&r.cl, i);
            chaos_node_kill(&r.cl, i);
        }
    chaos_zk_stop(&r.cl);
    /* What the faults came to: a run whose faults were all skipped
     * checked the workload alone, which its verdict would not say. */
    fprintf(out, "faults: %d injected of %zu planned (%d done, %d failed, "
                 "%d skipped; %s/faults.jsonl)\n",
            ndone + nfailed, nsched, ndone, nfailed, nskipped, o->out);
    if (o->faults != 0 && ndone + nfailed == 0)
        fprintf(out, "warning: no fault was injected (--faults %s: %s): "
                     "the checks below saw the workload without faults\n",
                faults,
                nsched == 0 ? "none planned" : "every planned one skipped");
    if (r.nbad > 0)
        fprintf(out, "warning: %llu replies could not be read (recorded as "
                     "info; see run.log)\n",
                (unsigned long long)r.nbad);
    if (!settled)
        fprintf(out, "warning: the cluster did not settle within %d s of "
                     "healing: %s\n",
                SETTLE_MS / 1000, r.unsettled);
    if (finals < nactors)
        fprintf(out, "warning: %d of %d actors have no successful final "
                     "read: lost-writes cannot check them\n",
                nactors - finals, nactors);
    if (r.zk_exits > 0)
        fprintf(out, "warning: %d ZooKeeper server exits nobody caused (see "
                     "%s/zk and %s/run.log)\n",
                r.zk_exits, o->out, o->out);
    if (r.stray_exits > 0)
        fprintf(out, "warning: %d node exits nobody caused (see the nodes' "
                     "logs)\n",
                r.stray_exits);
    fclose(r.hf);
    r.hf = NULL;
    fclose(r.events);
    r.events = NULL;
    fclose(r.faults);
    r.faults = NULL;
    /* Nothing runs any more: what the harness made on the system goes
     * before the checks, which a signal may then simply end. */
    undo_harness(&r);
    remove_data(&r);
    restore_signals(&saved);
    if (interrupted) {
        fprintf(err, "keel-chaos: interrupted (%s) as the run ended: it "
                     "finished, and is not checked (keel-chaos check %s "
                     "checks it)\n",
                strsignal(interrupted), o->out);
        rc = 128 + interrupted;
        goto out;
    }
    rc = check_and_report(&r, out, err);
    goto out;

interrupt:
    /* Everything started is stopped below; what was recorded stays, and
     * without run.json check calls it a run that did not finish. */
    fprintf(err, "keel-chaos: interrupted (%s): stopping the clients, "
                 "nodes and ZooKeeper; the run did not finish and is not "
                 "checked (%s keeps what it recorded)\n",
            strsignal(interrupted), o->out);
    rc = 128 + interrupted;

out:
    /* Each set to NULL once closed: stopping the nodes below still
     * reports to on_event, which then writes nothing. */
    if (r.hf != NULL)
        fclose(r.hf);
    r.hf = NULL;
    if (r.events != NULL)
        fclose(r.events);
    r.events = NULL;
    if (r.faults != NULL)
        fclose(r.faults);
    r.faults = NULL;
    if (r.cl.dir != NULL) {
        undo_harness(&r);
        remove_data(&r);
    }
    chaos_hwriter_close(&r.hw);
    if (r.log != NULL)
        fclose(r.log);
    free(cls);
    free(sched);
    pthread_mutex_destroy(&r.mu);
    restore_signals(&saved);
    return rc;
}
