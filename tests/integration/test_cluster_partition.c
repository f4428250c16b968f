/* A node whose ZooKeeper server is cut off from the ZooKeeper leader, with
 * real processes: a 3-server ensemble on loopback in which server 3
 * reaches servers 1 and 2 only through relays of this test (tcpproxy.h),
 * and three keeld: n0 connected to server 3 alone, n1 and n2 to servers 1
 * and 2. Under calls to n0's counters, through n0 itself and through n1,
 * the relays are blackholed: server 3 goes on answering n0's reads for a
 * while (it notices the loss of the leader only after syncLimit ticks),
 * while the leader expires n0's session T after the cut. Once n1 sees n0's
 * member znode gone, n0 is forgotten through n1 and its units restart
 * from nothing elsewhere. Checked:
 *  - from the moment the new owners serve n0's units, nothing is
 *    acknowledged from n0's old state any more, and n0 acknowledges
 *    nothing later than T after the cut (it fenced itself before its
 *    session could expire);
 *  - merged activation logs: no actor active on two nodes at once.
 * held_calls_do_not_outlive_the_session: the same cut with a 60 s hold
 * bound and pipelined calls through n0, healed once n0's units restarted
 * and were served elsewhere: n0 learns its session expired and rejoins
 * while it still holds calls; none is answered from its old state, and
 * no actor queued at the fence stays activated on it.
 * Every wait is bounded. Skipped (exit 77) without the ZooKeeper server
 * package. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "actlog.h"
#include "cluster.h"
#include "clmap.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "tcpproxy.h"
#include "testutil.h"
#include "zk.h"

#define NODES 3
#define SHARDS 64
#define PICK 8            /* counters of n0's units under calls */
#define BIG 1000000L      /* what n0's counters hold before the cut */
#define TICK_MS 2000      /* zk-conf's default tickTime: syncLimit 10 s */
#define SESSION_MS 4000   /* T: 2 ticks, the least margin for the lease */
#define CLIENT_TIMEOUT_MS 8000
#define MAXRECS 100000

static tu_proxy *relays[6];
static int relay_base;
static tu_cluster fx; /* fx.zk: the split ensemble, started per test */

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

/* ------------------------------------------------------------ relays */

static void relays_stop(void)
{
    int i;

    for (i = 0; i < 6; i++) {
        tu_proxy_stop(relays[i]);
        relays[i] = NULL;
    }
}

/* relay_base + k forwards to the quorum (k even) or election (k odd)
 * port of server k/2 + 1 (zk.h, tu_zk_start_split). */
static int relays_start(int base, void *arg)
{
    static const int target[6] = {3, 6, 4, 7, 5, 8};
    int i;

    (void)arg;
    relays_stop();
    for (i = 0; i < 6; i++)
        if ((relays[i] = tu_proxy_start(relay_base + i, base + target[i])) ==
            NULL)
            return -1;
    return 0;
}

static void blackhole(int on)
{
    int i;

    for (i = 0; i < 6; i++)
        tu_proxy_blackhole(relays[i], on);
}

/* ------------------------------------------------------------- nodes */

static void actlog_path(int i, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/n%d.act", fx.dir, i);
}

static void start_node_held(int i, const char *hosts, const char *hold_ms)
{
    char act[512];

    actlog_path(i, act, sizeof act);
    fx.zk_hosts = hosts;
    ck_assert_int_eq(tu_cluster_start_node(&fx, i, 0, "--hold-timeout",
                                           hold_ms, "--activation-log", act,
                                           NULL),
                     0);
}

static void start_node(int i, const char *hosts)
{
    start_node_held(i, hosts, "1000");
}

static const char *cname(int c)
{
    static char names[4096][16];

    snprintf(names[c], sizeof names[c], "c%d", c);
    return names[c];
}

/* One call on counter c over cl: 0 with the counter's new value, the
 * server's KEEL_E* code, or a transport error. */
static int call(keel_client *cl, int c, const char *op, long *value)
{
    char *reply = NULL;
    size_t len = 0;
    int rc = keel_client_call(cl, KEEL_FRAME_CALL, "counter", cname(c),
                              strlen(cname(c)), op, strlen(op), &reply,
                              &len);

    *value = rc == 0 && reply != NULL ? strtol(reply, NULL, 10) : -1;
    free(reply);
    return rc;
}

static int is_member(int via, const char *name)
{
    char *out = NULL, key[32];
    int rc = tu_keel(fx.nodes[via].addr, &out, NULL, "nodes", NULL), found;

    snprintf(key, sizeof key, "\nnode %s ", name);
    found = rc != 0 || out == NULL || strstr(out, key) != NULL;
    free(out);
    return found;
}

/* ---------------------------------------------------------- callers */

typedef struct rec {
    unsigned long long sent, recv; /* realtime ns */
    long value;
    int status;
    int counter; /* index into the caller's counters */
} rec;

typedef struct caller {
    size_t max; /* recs[] has room for this many; 0: MAXRECS */
    int node;
    const int *counters;
    int n;
    pthread_t thread;
    rec *recs;
    atomic_size_t nrecs; /* recs[0..nrecs) are complete */
    int transport_errors;
} caller;

static atomic_int stop_calls;

/* Increments the counters in turn through one node until told to stop
 * (at most MAXRECS calls, 120 s), reconnecting after a transport error. */
static void *caller_main(void *arg)
{
    caller *k = arg;
    keel_client *cl = NULL;
    double deadline = tu_now_s() + 120;
    int i = 0;

    while (!atomic_load(&stop_calls) && atomic_load(&k->nrecs) < MAXRECS &&
           tu_now_s() < deadline) {
        rec *r = &k->recs[atomic_load(&k->nrecs)];
        if (cl == NULL &&
            keel_client_connect(fx.nodes[k->node].addr, CLIENT_TIMEOUT_MS,
                                &cl) != 0) {
            cl = NULL;
            tu_sleep_ms(50);
            continue;
        }
        r->counter = i;
        r->sent = tu_realtime_ns();
        r->status = call(cl, k->counters[i], "incr", &r->value);
        r->recv = tu_realtime_ns();
        atomic_fetch_add(&k->nrecs, 1);
        if (r->status == KEEL_ECONN || r->status == KEEL_ETIMEDOUT ||
            r->status == KEEL_EPROTO) {
            k->transport_errors++;
            keel_client_close(cl);
            cl = NULL;
        }
        i = (i + 1) % k->n;
    }
    keel_client_close(cl);
    return NULL;
}

/* ------------------------------------------------------------ fixture */

static void setup(void)
{
    tu_cluster_setup(&fx, "partition", "cp");
    fx.session_ms = SESSION_MS;
    relay_base = tu_zk_free_ports(6);
    ck_assert_int_gt(relay_base, 0);
    ck_assert_int_eq(tu_zk_start_split(&fx.zk, TICK_MS, relay_base,
                                       relays_start, NULL),
                     0);
}

static void teardown(void)
{
    tu_cluster_teardown(&fx, SIGKILL);
    relays_stop();
    tu_zk_stop(&fx.zk);
}

/* Waits (bounded) until every node serves and n0 owns units enough to
 * pick `want` counters of them into picked. */
static void settle_and_pick(int *picked, int want)
{
    static char owned[SHARDS];
    char *out = NULL, *line, *save = NULL;
    double deadline = tu_now_s() + 60;
    int npicked = 0, c, i;

    for (;;) {
        int ok = 1;
        for (i = 0; i < NODES && ok; i++) {
            out = NULL;
            ok = tu_keel(fx.nodes[i].addr, &out, NULL, "call", "counter",
                         "probe", "get", NULL) == 0;
            free(out);
        }
        out = NULL;
        /* Only from a settled map (and n1's view of it): a unit n0 is
         * still handing off would reach its new owner with n0's counts,
         * legitimately. */
        if (ok && !tu_map_wait_settled(&fx, 1))
            ok = 0;
        else if (ok)
            tu_sleep_ms(500);
        memset(owned, 0, sizeof owned);
        if (ok && tu_keel(fx.nodes[1].addr, &out, NULL, "shards", "--node",
                          "n0", NULL) == 0 && out != NULL) {
            for (line = strtok_r(out, "\n", &save); line != NULL;
                 line = strtok_r(NULL, "\n", &save)) {
                unsigned sh;
                if (sscanf(line, "unit (default) %u", &sh) == 1 &&
                    sh < SHARDS)
                    owned[sh] = 1;
            }
        }
        free(out);
        out = NULL;
        npicked = 0;
        for (c = 0; c < 4096 && npicked < want; c++)
            if (owned[keel_shard_of("counter", cname(c), strlen(cname(c)),
                                    SHARDS)])
                picked[npicked++] = c;
        if (ok && npicked == want)
            return;
        CHECK(tu_now_s() < deadline, "the cluster did not settle in 60 s");
        tu_sleep_ms(200);
    }
}

/* --------------------------------------------------------------- test */

START_TEST(cut_off_follower_does_not_serve_twice)
{
    char near[128], far[64], mode[32], *out = NULL, act[512];
    static rec recs[2][MAXRECS];
    caller callers[2];
    int picked[PICK], i, rc;
    unsigned long long cut, gone = 0, forgot = 0, first_new = 0,
                                  last_old = 0;
    size_t old_after_cut = 0, new_served = 0, k;
    double deadline;
    tu_actlog acts;

    /* Server 3 follows: the node on it reads from a follower. */
    ck_assert_int_eq(tu_zk_mode(fx.zk.port + 2, mode, sizeof mode), 0);
    ck_assert_msg(strcmp(mode, "follower") == 0, "server 3 is %s", mode);
    snprintf(far, sizeof far, "127.0.0.1:%d", fx.zk.port + 2);
    snprintf(near, sizeof near, "127.0.0.1:%d,127.0.0.1:%d", fx.zk.port,
             fx.zk.port + 1);
    start_node(0, far);
    start_node(1, near);
    start_node(2, near);

    /* Every node serves; n0's units as n1 sees them, from a settled
     * map. */
    settle_and_pick(picked, PICK);

    /* n0's counters hold BIG, so that a reply tells n0's state (BIG and
     * more) from a new owner's (counting from 0 after the forget). */
    {
        keel_client *cl;
        long v;
        ck_assert_int_eq(
            keel_client_connect(fx.nodes[0].addr, CLIENT_TIMEOUT_MS, &cl), 0);
        for (i = 0; i < PICK; i++) {
            char op[32];
            snprintf(op, sizeof op, "incr %ld", BIG);
            rc = call(cl, picked[i], op, &v);
            CHECK(rc == 0 && v == BIG, "preload %s: %d, %ld",
                  cname(picked[i]), rc, v);
        }
        keel_client_close(cl);
    }

    /* Calls on them through n0 and through n1, all along. */
    atomic_store(&stop_calls, 0);
    for (i = 0; i < 2; i++) {
        memset(&callers[i], 0, sizeof callers[i]);
        atomic_init(&callers[i].nrecs, 0);
        callers[i].node = i;
        callers[i].counters = picked;
        callers[i].n = PICK;
        callers[i].recs = recs[i];
        ck_assert_int_eq(pthread_create(&callers[i].thread, NULL,
                                        caller_main, &callers[i]),
                         0);
    }
    tu_sleep_ms(1500);

    /* The cut: server 3 hears nothing more from servers 1 and 2. */
    cut = tu_realtime_ns();
    blackhole(1);

    /* The leader expires n0's session; n1 sees its member znode go. */
    deadline = tu_now_s() + 40;
    while (is_member(1, "n0")) {
        CHECK(tu_now_s() < deadline, "n0 still a member 40 s after the cut");
        tu_sleep_ms(100);
    }
    gone = tu_realtime_ns();

    /* The operator forgets n0 through n1 (refused while still a member). */
    rc = tu_cluster_forget(&fx, 1, "n0", 150, 200, &out);
    CHECK(rc == 0, "forget n0: %s",
          rc > 0 ? "refused for 30 s" : "failed");
    forgot = tu_realtime_ns();
    CHECK(strstr(out, "node n0 forgotten") != NULL, "forget: %s", out);
    free(out);

    /* Wait (bounded) until the new owners served every counter through
     * n1, then a little longer. */
    deadline = tu_now_s() + 40;
    for (;;) {
        int served[PICK] = {0}, all = 1;
        size_t n = atomic_load(&callers[1].nrecs);
        for (k = 0; k < n; k++)
            if (recs[1][k].status == 0 && recs[1][k].value < BIG)
                served[recs[1][k].counter] = 1;
        for (i = 0; i < PICK; i++)
            all &= served[i];
        if (all)
            break;
        CHECK(tu_now_s() < deadline,
              "n0's units not served again 40 s after the forget");
        tu_sleep_ms(200);
    }
    tu_sleep_ms(3000);
    atomic_store(&stop_calls, 1);
    for (i = 0; i < 2; i++)
        pthread_join(callers[i].thread, NULL);

    /* When the new owners began to serve n0's units: their first
     * activation of one of its counters after the cut (an actor serves
     * only once activated; a call's send time says nothing, it may have
     * been held until then). */
    tu_actlog_init(&acts);
    for (i = 0; i < NODES; i++) {
        actlog_path(i, act, sizeof act);
        tu_actlog_parse(&acts, act, i, 0, 0, 0);
    }
    for (k = 0; k < acts.n; k++) {
        const tu_interval *iv = &acts.iv[k];
        if (iv->node == 0 || iv->start <= cut)
            continue;
        for (i = 0; i < PICK; i++) {
            /* the logs name an actor by its type and hex id */
            char key[64];
            const char *id = cname(picked[i]);
            size_t j, len = (size_t)snprintf(key, sizeof key, "counter/");
            for (j = 0; id[j] != '\0' && len + 2 < sizeof key; j++)
                len += (size_t)snprintf(key + len, sizeof key - len, "%02x",
                                        (unsigned char)id[j]);
            if (strcmp(iv->key, key) == 0 &&
                (first_new == 0 || iv->start < first_new))
                first_new = iv->start;
        }
    }
    /* When n0's state was last acknowledged, through n0 or forwarded. */
    for (i = 0; i < 2; i++) {
        size_t n = atomic_load(&callers[i].nrecs);
        for (k = 0; k < n; k++) {
            const rec *r = &recs[i][k];
            if (r->status != 0)
                continue;
            if (r->value < BIG) {
                new_served++;
            } else {
                if (r->recv > last_old)
                    last_old = r->recv;
                if (r->recv > cut)
                    old_after_cut++;
            }
        }
    }
    fprintf(stderr,
            "partition: calls via n0 %zu, via n1 %zu; n0 gone for n1 at "
            "+%.2f s, forgotten at +%.2f s; n0's state last acknowledged at "
            "+%.2f s (%zu acks after the cut); the new owners activated its "
            "counters from +%.2f s (%zu acks)\n",
            atomic_load(&callers[0].nrecs), atomic_load(&callers[1].nrecs),
            (double)(gone - cut) / 1e9, (double)(forgot - cut) / 1e9,
            ((double)last_old - (double)cut) / 1e9, old_after_cut,
            ((double)first_new - (double)cut) / 1e9, new_served);
    CHECK(new_served > 0 && first_new != 0,
          "the new owners never served n0's counters");
    CHECK(last_old < cut + (unsigned long long)SESSION_MS * 1000000ull,
          "n0 acknowledged a call %.2f s after the cut, past its session "
          "timeout (%d ms)",
          ((double)last_old - (double)cut) / 1e9, SESSION_MS);
    CHECK(last_old < first_new,
          "n0's state acknowledged %.2f s after the new owners began to "
          "serve its units",
          ((double)last_old - (double)first_new) / 1e9);

    /* No actor active on two nodes at once (n0 still runs: an interval
     * of its that is still open lasts until now). */
    fprintf(stderr, "partition: %zu activations, %zu moves between nodes\n",
            acts.n, tu_actlog_check(&acts));
    tu_actlog_free(&acts);
}
END_TEST

/* ----------------------------------------- a session lost, calls held */

#define HELD_PICK 32      /* n0's counters under pipelined calls */
#define HELD_WINDOW 4096  /* calls in flight on the pipelined connection:
                           * a backlog, so that actors are queued to run at
                           * any instant, the one n0 fences at included */
#define HELD_HOLD "60000" /* held calls outlive n0's session and its return */
#define HELD_CLIENT_MS 75000
#define HELD_MAXRECS 1000000 /* pipelined calls at most */


/* Increments the counters through one node over one connection with
 * HELD_WINDOW calls in flight, until told to stop (at most k->max calls,
 * 120 s). recs[id - 1] is the call with request id `id`; those
 * still unanswered when the connection fails keep status 1 (unknown). A
 * new connection after a transport error. nrecs: ids handed out. */
static void *pipeline_main(void *arg)
{
    caller *k = arg;
    keel_client *cl = NULL;
    double deadline = tu_now_s() + 120;
    int inflight = 0, i = 0;

    while (!atomic_load(&stop_calls) && tu_now_s() < deadline) {
        keel_frame f;

        if (cl == NULL) {
            inflight = 0;
            if (keel_client_connect(fx.nodes[k->node].addr, HELD_CLIENT_MS,
                                    &cl) != 0) {
                cl = NULL;
                tu_sleep_ms(50);
                continue;
            }
        }
        while (inflight < HELD_WINDOW && atomic_load(&k->nrecs) < k->max) {
            size_t at = atomic_load(&k->nrecs);
            rec *r = &k->recs[at];
            r->counter = i;
            r->status = 1;
            r->value = -1;
            r->sent = tu_realtime_ns();
            r->recv = 0;
            if (keel_client_queue(cl, KEEL_FRAME_CALL, (uint64_t)at + 1,
                                  "counter", cname(k->counters[i]),
                                  strlen(cname(k->counters[i])), "incr",
                                  4) != 0)
                break;
            atomic_fetch_add(&k->nrecs, 1);
            inflight++;
            i = (i + 1) % k->n;
        }
        if (inflight == 0)
            break; /* MAXRECS calls made */
        if (keel_client_flush(cl) != 0 || keel_client_recv(cl, &f) != 0) {
            k->transport_errors++;
            keel_client_close(cl);
            cl = NULL;
            continue;
        }
        if (f.request_id == 0 || f.request_id > atomic_load(&k->nrecs))
            continue; /* the server's last word: the next recv fails */
        {
            rec *r = &k->recs[f.request_id - 1];
            r->recv = tu_realtime_ns();
            if (f.kind == KEEL_FRAME_REPLY) {
                char buf[32];
                size_t n = f.body_len < sizeof buf - 1 ? f.body_len
                                                       : sizeof buf - 1;
                memcpy(buf, f.body, n);
                buf[n] = '\0';
                r->value = strtol(buf, NULL, 10);
                r->status = 0;
            } else {
                const char *msg;
                size_t ml;
                r->status = keel_error_body_parse(f.body, f.body_len, &msg,
                                                  &ml);
            }
        }
        inflight--;
    }
    keel_client_close(cl);
    return NULL;
}

/* The same cut, but with a long hold bound, and the cut heals once n0's
 * units have new owners that served every counter: n0 is fenced with calls held (and, under
 * pipelined load, actors queued to run), its session expires on the
 * leader, the operator forgets it, and when its server rejoins it learns
 * of the expiry and joins as a new incarnation while those calls are
 * still held. Checked:
 *  - nothing is acknowledged from n0's old state (BIG and more) later
 *    than T after the cut, through n0 or n1: not the held calls either,
 *    answered in n0's new session;
 *  - calls held at n0 over its session's end are answered after the heal
 *    from the new owners' counts (or fail), so the case was exercised;
 *  - merged activation logs: no actor active on two nodes at once (n0's
 *    actors queued at the fence are passivated, not kept activated with
 *    what they read until n0 serves again). */
START_TEST(held_calls_do_not_outlive_the_session)
{
    char near[128], far[64], mode[32], *out = NULL, act[512];
    static rec recs1[MAXRECS];
    rec *recs[2];
    caller callers[2];
    int picked[HELD_PICK], i, rc;
    unsigned long long cut, healed = 0, last_old = 0;
    size_t held_new = 0, held_failed = 0, old_late = 0, k;
    double deadline;
    tu_actlog acts;

    ck_assert_int_eq(tu_zk_mode(fx.zk.port + 2, mode, sizeof mode), 0);
    ck_assert_msg(strcmp(mode, "follower") == 0, "server 3 is %s", mode);
    snprintf(far, sizeof far, "127.0.0.1:%d", fx.zk.port + 2);
    snprintf(near, sizeof near, "127.0.0.1:%d,127.0.0.1:%d", fx.zk.port,
             fx.zk.port + 1);
    start_node_held(0, far, HELD_HOLD);
    start_node_held(1, near, HELD_HOLD);
    start_node_held(2, near, HELD_HOLD);
    settle_and_pick(picked, HELD_PICK);

    {
        keel_client *cl;
        long v;
        ck_assert_int_eq(
            keel_client_connect(fx.nodes[0].addr, CLIENT_TIMEOUT_MS, &cl), 0);
        for (i = 0; i < HELD_PICK; i++) {
            char op[32];
            snprintf(op, sizeof op, "incr %ld", BIG);
            rc = call(cl, picked[i], op, &v);
            CHECK(rc == 0 && v == BIG, "preload %s: %d, %ld",
                  cname(picked[i]), rc, v);
        }
        keel_client_close(cl);
    }

    /* Pipelined calls through n0, one at a time through n1. */
    recs[0] = calloc(HELD_MAXRECS, sizeof *recs[0]);
    ck_assert_ptr_nonnull(recs[0]);
    recs[1] = recs1;
    atomic_store(&stop_calls, 0);
    for (i = 0; i < 2; i++) {
        memset(&callers[i], 0, sizeof callers[i]);
        atomic_init(&callers[i].nrecs, 0);
        callers[i].max = i == 0 ? HELD_MAXRECS : MAXRECS;
        callers[i].node = i;
        callers[i].counters = picked;
        callers[i].n = HELD_PICK;
        callers[i].recs = recs[i];
        ck_assert_int_eq(pthread_create(&callers[i].thread, NULL,
                                        i == 0 ? pipeline_main : caller_main,
                                        &callers[i]),
                         0);
    }
    tu_sleep_ms(1500);

    cut = tu_realtime_ns();
    blackhole(1);

    deadline = tu_now_s() + 40;
    while (is_member(1, "n0")) {
        CHECK(tu_now_s() < deadline, "n0 still a member 40 s after the cut");
        tu_sleep_ms(100);
    }
    rc = tu_cluster_forget(&fx, 1, "n0", 150, 200, &out);
    CHECK(rc == 0, "forget n0: %s", rc > 0 ? "refused for 30 s" : "failed");
    free(out);
    out = NULL;

    /* The map gives n0 nothing any more (its units restart from nothing
     * on n1 and n2); then the cut heals, while n0 still holds the calls
     * it took after the cut. */
    deadline = tu_now_s() + 40;
    for (;;) {
        int none = 0;
        char *err = NULL;
        out = NULL;
        /* Owning nothing, n0 may be gone from the map too: then the
         * query names no node. */
        if (tu_keel(fx.nodes[1].addr, &out, &err, "shards", "--node", "n0",
                    NULL) == 0 && out != NULL)
            none = strstr(out, "unit ") == NULL;
        else
            none = err != NULL && strstr(err, "no node 'n0'") != NULL;
        free(out);
        free(err);
        out = NULL;
        if (none)
            break;
        CHECK(tu_now_s() < deadline,
              "n0 still owns units 40 s after the forget");
        tu_sleep_ms(200);
    }
    /* Every counter served (activated) by its new owner while n0 is
     * still cut off: an actor n0 kept activated from before the fence
     * would overlap it. Asked through n2, which no caller uses: at n1 a
     * new call of a unit waits behind the older ones n1 forwarded to n0,
     * which n0 holds until the heal. */
    {
        keel_client *cl = NULL;
        for (i = 0; i < HELD_PICK; i++) {
            long v = -1;
            rc = -1;
            deadline = tu_now_s() + 20;
            while (rc != 0 || v >= BIG) {
                CHECK(tu_now_s() < deadline,
                      "%s not served by its new owner through n2 (%d, %ld)",
                      cname(picked[i]), rc, v);
                if (cl == NULL && keel_client_connect(fx.nodes[2].addr,
                                                      CLIENT_TIMEOUT_MS,
                                                      &cl) != 0) {
                    cl = NULL;
                    tu_sleep_ms(100);
                    continue;
                }
                rc = call(cl, picked[i], "get", &v);
                if (rc == KEEL_ECONN || rc == KEEL_ETIMEDOUT) {
                    keel_client_close(cl);
                    cl = NULL;
                }
                if (rc != 0 || v >= BIG)
                    tu_sleep_ms(100);
            }
        }
        keel_client_close(cl);
    }
    healed = tu_realtime_ns();
    blackhole(0);

    /* n0 comes back as a new incarnation. */
    deadline = tu_now_s() + 40;
    while (!is_member(1, "n0")) {
        CHECK(tu_now_s() < deadline, "n0 not back 40 s after the heal");
        tu_sleep_ms(200);
    }
    tu_sleep_ms(8000);
    atomic_store(&stop_calls, 1);
    for (i = 0; i < 2; i++)
        pthread_join(callers[i].thread, NULL);

    for (i = 0; i < 2; i++) {
        size_t n = atomic_load(&callers[i].nrecs);
        for (k = 0; k < n; k++) {
            const rec *r = &recs[i][k];
            if (r->status == 0 && r->value >= BIG) {
                if (r->recv > last_old)
                    last_old = r->recv;
                if (r->recv > cut +
                                  (unsigned long long)SESSION_MS * 1000000ull) {
                    if (old_late++ == 0)
                        fprintf(stderr,
                                "held: first late ack of n0's state: %s = "
                                "%ld via n%d, sent at +%.3f s, answered at "
                                "+%.3f s\n",
                                cname(picked[r->counter]), r->value, i,
                                ((double)r->sent - (double)cut) / 1e9,
                                ((double)r->recv - (double)cut) / 1e9);
                }
            }
            /* Sent to n0 before the heal, answered after it: held over
             * n0's session's end (n0 answers nothing in between). */
            if (i == 0 && r->sent < healed && r->recv > healed) {
                if (r->status == 0)
                    held_new++;
                else if (r->status < 0)
                    held_failed++;
            }
        }
    }
    {
        /* Through n0: answered before the cut, between the cut and the
         * heal, after the heal. */
        size_t ph[3] = {0, 0, 0}, n = atomic_load(&callers[0].nrecs);
        for (k = 0; k < n; k++)
            if (recs[0][k].recv != 0)
                ph[recs[0][k].recv < cut ? 0 : recs[0][k].recv < healed ? 1
                                                                         : 2]++;
        fprintf(stderr,
                "held: through n0, answered before the cut %zu, until the "
                "heal %zu, after it %zu\n",
                ph[0], ph[1], ph[2]);
    }
    fprintf(stderr,
            "held: calls via n0 %zu (transport errors %d), via n1 %zu; the "
            "cut healed at +%.2f s; n0's state last acknowledged at +%.2f s "
            "(%zu acks past T); held over n0's session's end: %zu answered, "
            "%zu failed\n",
            atomic_load(&callers[0].nrecs), callers[0].transport_errors,
            atomic_load(&callers[1].nrecs), (double)(healed - cut) / 1e9,
            ((double)last_old - (double)cut) / 1e9, old_late, held_new,
            held_failed);
    free(recs[0]);
    if (old_late > 0) {
        /* Where the actors were active, for the diagnosis. */
        tu_actlog_init(&acts);
        for (i = 0; i < NODES; i++) {
            actlog_path(i, act, sizeof act);
            tu_actlog_parse(&acts, act, i, 0, 0, 0);
        }
        for (k = 0; k < acts.n; k++)
            fprintf(stderr, "held: %s on n%d from %+.3f s to %+.3f s, epoch %llu\n",
                    acts.iv[k].key, acts.iv[k].node,
                    ((double)acts.iv[k].start - (double)cut) / 1e9,
                    acts.iv[k].end != 0
                        ? ((double)acts.iv[k].end - (double)cut) / 1e9
                        : 0.0,
                    acts.iv[k].epoch);
        tu_actlog_free(&acts);
    }
    CHECK(old_late == 0,
          "n0's old state acknowledged %zu times past its session timeout "
          "(%d ms after the cut), the last %.2f s after the cut",
          old_late, SESSION_MS, ((double)last_old - (double)cut) / 1e9);
    CHECK(held_new + held_failed > 0,
          "no call held at n0 over its session's end was answered after the "
          "heal");

    tu_actlog_init(&acts);
    for (i = 0; i < NODES; i++) {
        actlog_path(i, act, sizeof act);
        tu_actlog_parse(&acts, act, i, 0, 0, 0);
    }
    fprintf(stderr, "held: %zu activations, %zu moves between nodes\n",
            acts.n, tu_actlog_check(&acts));
    tu_actlog_free(&acts);
}
END_TEST

int main(void)
{
    Suite *s;
    TCase *tc;

    if (!tu_zk_available()) {
        fprintf(stderr, "test_cluster_partition: skipped: the ZooKeeper "
                        "server package is not installed "
                        "(scripts/install-deps)\n");
        return 77;
    }
    s = suite_create("cluster_partition");
    tc = tcase_create("partition");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 150);
    tcase_add_test(tc, cut_off_follower_does_not_serve_twice);
    suite_add_tcase(s, tc);
    /* A case of its own: CK_RUN_CASE=held runs it alone. */
    tc = tcase_create("held");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, held_calls_do_not_outlive_the_session);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
