/* The cluster under a steady load while its membership changes, with a
 * real ZooKeeper and real keeld processes: three nodes serve thousands of
 * counters through pipelined connections to every node; a fourth node
 * joins, one node leaves gracefully (SIGTERM), the controller is killed
 * with -9 (another node takes over as controller) and is later restarted
 * on its data. Afterwards:
 *  - every counter is at least its number of acknowledged increments and
 *    at most its number of attempted ones, and exactly its acknowledged
 *    number where its owner never crashed;
 *  - the nodes' activation logs show no actor active on two nodes at
 *    overlapping times, and its shard epoch never going back.
 * Every wait is bounded; nothing here depends on how fast the machine is
 * (a slow machine makes fewer calls, not a failure). */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "actlog.h"
#include "cluster.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "testutil.h"
#include "zk.h"

#define NNODES 4
#define SHARDS 64
#define NCOUNTERS 2000
#define WINDOW 16          /* calls in flight per connection */
#define CLIENT_TIMEOUT_MS 20000 /* well above the 5 s hold bound */

static tu_cluster fx;

/* ------------------------------------------------------------ helpers */

static void counter_name(int c, char *buf, size_t cap)
{
    snprintf(buf, cap, "k%d", c);
}

static void dump_logs(void)
{
    tu_cluster_dump_logs(&fx);
}

static void actlog_path(int i, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/n%d.act", fx.dir, i);
}

static void start_node(int i)
{
    char act[512];

    actlog_path(i, act, sizeof act);
    ck_assert_int_eq(tu_cluster_start_node(&fx, i, fx.nodes[i].port,
                                           "--activation-log", act, NULL),
                     0);
}

/* `keel ARGS...` through node i; stdout (malloc'd) or NULL. */
static char *cli(int i, const char *a, const char *b, const char *c,
                 const char *d)
{
    char *out = NULL, *err = NULL;
    int rc = tu_keel(fx.nodes[i].addr, &out, &err, a, b, c, d, NULL);

    free(err);
    if (rc != 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* The controller named by node i's `keel nodes`, into name; 0 or -1. */
static int controller_of(int i, char *name, size_t cap)
{
    char *out = cli(i, "nodes", NULL, NULL, NULL);
    const char *p = out ? strstr(out, "\ncontroller ") : NULL;
    char tmp[32];
    int rc = -1;

    if (p != NULL && sscanf(p, "\ncontroller %31s", tmp) == 1 &&
        strcmp(tmp, "(none)") != 0) {
        snprintf(name, cap, "%s", tmp);
        rc = 0;
    }
    free(out);
    return rc;
}

/* Reads every counter through node i with a pipelined connection,
 * retrying those that answer an error (bounded). Returns 0 when all were
 * read into v[]. */
static int read_all(int i, long *v)
{
    static char done[NCOUNTERS];
    keel_client *cl = NULL;
    double deadline = tu_now_s() + 90;
    int left = NCOUNTERS, c;

    memset(done, 0, sizeof done);
    while (left > 0 && tu_now_s() < deadline) {
        int sent = 0;
        if (cl == NULL && keel_client_connect(fx.nodes[i].addr,
                                              CLIENT_TIMEOUT_MS, &cl) != 0) {
            cl = NULL;
            usleep(100 * 1000);
            continue;
        }
        for (c = 0; c < NCOUNTERS; c++) {
            char name[16];
            if (done[c])
                continue;
            counter_name(c, name, sizeof name);
            if (keel_client_queue(cl, KEEL_FRAME_CALL, (uint64_t)c + 1,
                                  "counter", name, strlen(name), "get",
                                  3) != 0)
                break;
            sent++;
        }
        if (keel_client_flush(cl) != 0)
            sent = 0;
        while (sent-- > 0) {
            keel_frame f;
            if (keel_client_recv(cl, &f) != 0) {
                keel_client_close(cl);
                cl = NULL;
                break;
            }
            c = (int)f.request_id - 1;
            if (c < 0 || c >= NCOUNTERS || done[c])
                continue;
            if (f.kind == KEEL_FRAME_REPLY) {
                char num[32];
                size_t n = f.body_len < sizeof num - 1 ? f.body_len
                                                       : sizeof num - 1;
                memcpy(num, f.body, n);
                num[n] = '\0';
                v[c] = strtol(num, NULL, 10);
                done[c] = 1;
                left--;
            }
        }
        if (left > 0)
            usleep(200 * 1000);
    }
    if (cl != NULL)
        keel_client_close(cl);
    return left == 0 ? 0 : -1;
}

/* --------------------------------------------------------------- load */

/* Per counter: calls sent, acknowledged, refused with EUNAVAIL or
 * EDEADLINE (never applied: held past the bound, or never reached an
 * owner), and calls whose fate is unknown (the connection failed, or
 * another error). */
static pthread_mutex_t tally_lock = PTHREAD_MUTEX_INITIALIZER;
static long sent_n[NCOUNTERS], acked_n[NCOUNTERS], unavail_n[NCOUNTERS],
    unknown_n[NCOUNTERS];
static char last_err[256];
/* What the test is doing, for the report of calls of unknown fate. */
static atomic_int phase;

typedef struct loader {
    pthread_t th;
    int node;
    atomic_int run;     /* 0: stop the thread */
    atomic_int quiesce; /* 1: stop sending, settle what is in flight */
    atomic_int idle;    /* set by the thread: nothing in flight, quiesced */
    unsigned seed;
    int started;
} loader;

static loader loaders[NNODES];

static void tally(int c, long *arr)
{
    pthread_mutex_lock(&tally_lock);
    arr[c]++;
    pthread_mutex_unlock(&tally_lock);
}

static void *load_main(void *arg)
{
    loader *l = arg;
    keel_client *cl = NULL;
    int inflight[WINDOW + 1], ninflight = 0;
    uint64_t rid = 0;
    /* request id -> counter: ids are (slot << 32 | seq). */
    int slot_counter[WINDOW];
    int free_slots[WINDOW], nfree = WINDOW, k;

    for (k = 0; k < WINDOW; k++)
        free_slots[k] = k;
    (void)inflight;
    while (atomic_load(&l->run)) {
        keel_frame f;
        int slot;

        if (atomic_load(&l->quiesce) && ninflight == 0) {
            if (cl != NULL) {
                keel_client_close(cl);
                cl = NULL;
            }
            atomic_store(&l->idle, 1);
            usleep(20 * 1000);
            continue;
        }
        atomic_store(&l->idle, 0);
        if (cl == NULL) {
            if (keel_client_connect(fx.nodes[l->node].addr, CLIENT_TIMEOUT_MS,
                                    &cl) != 0) {
                cl = NULL;
                usleep(100 * 1000);
                continue;
            }
        }
        while (!atomic_load(&l->quiesce) && nfree > 0) {
            char name[16];
            int c = (int)(rand_r(&l->seed) % NCOUNTERS);
            slot = free_slots[--nfree];
            slot_counter[slot] = c;
            counter_name(c, name, sizeof name);
            rid++;
            if (keel_client_queue(cl, KEEL_FRAME_CALL,
                                  ((uint64_t)slot << 32) | (rid & 0xffffffffu),
                                  "counter", name, strlen(name), "incr",
                                  4) != 0) {
                free_slots[nfree++] = slot;
                break;
            }
            tally(c, sent_n);
            ninflight++;
        }
        if (keel_client_flush(cl) != 0 || keel_client_recv(cl, &f) != 0) {
            /* Whatever was in flight on this connection may or may not
             * have been applied. */
            for (k = 0; k < WINDOW; k++) {
                int used = 1, j;
                for (j = 0; j < nfree; j++)
                    if (free_slots[j] == k)
                        used = 0;
                if (used)
                    tally(slot_counter[k], unknown_n);
            }
            nfree = WINDOW;
            for (k = 0; k < WINDOW; k++)
                free_slots[k] = k;
            ninflight = 0;
            keel_client_close(cl);
            cl = NULL;
            continue;
        }
        slot = (int)(f.request_id >> 32);
        if (slot < 0 || slot >= WINDOW)
            continue;
        if (f.kind == KEEL_FRAME_REPLY) {
            tally(slot_counter[slot], acked_n);
        } else {
            const char *msg = "";
            size_t mlen = 0;
            int code = f.kind == KEEL_FRAME_ERROR
                           ? keel_error_body_parse(f.body, f.body_len, &msg,
                                                   &mlen)
                           : KEEL_EPROTO;
            /* Not run: no owner served the unit in time (EUNAVAIL),
             * or the call's deadline passed before it was sent
             * (EDEADLINE). */
            if (code == KEEL_EUNAVAIL || code == KEEL_EDEADLINE) {
                tally(slot_counter[slot], unavail_n);
            } else {
                tally(slot_counter[slot], unknown_n);
                pthread_mutex_lock(&tally_lock);
                snprintf(last_err, sizeof last_err, "n%d: %s: %.*s", l->node,
                         keel_strerror(code), (int)mlen, msg);
                fprintf(stderr, "chaos: phase %d: k%d through n%d: %s\n",
                        atomic_load(&phase), slot_counter[slot], l->node,
                        last_err);
                pthread_mutex_unlock(&tally_lock);
            }
        }
        free_slots[nfree++] = slot;
        ninflight--;
    }
    if (cl != NULL)
        keel_client_close(cl);
    return NULL;
}

static void load_start(int i)
{
    loader *l = &loaders[i];

    l->node = i;
    l->seed = 7919u * (unsigned)(i + 1);
    atomic_store(&l->run, 1);
    atomic_store(&l->quiesce, 0);
    atomic_store(&l->idle, 0);
    ck_assert_int_eq(pthread_create(&l->th, NULL, load_main, l), 0);
    l->started = 1;
}

/* Stops sending through node i and waits (bounded) until every call in
 * flight on its connection has been answered. */
static void load_quiesce(int i)
{
    double deadline = tu_now_s() + 60;

    atomic_store(&loaders[i].quiesce, 1);
    while (!atomic_load(&loaders[i].idle) && tu_now_s() < deadline)
        usleep(20 * 1000);
    ck_assert_msg(atomic_load(&loaders[i].idle),
                  "calls through n%d did not settle in 60 s", i);
}

static void load_resume(int i)
{
    atomic_store(&loaders[i].quiesce, 0);
}

static void load_stop_all(void)
{
    int i;

    for (i = 0; i < NNODES; i++)
        if (loaders[i].started)
            atomic_store(&loaders[i].quiesce, 1);
    for (i = 0; i < NNODES; i++)
        if (loaders[i].started)
            load_quiesce(i);
    for (i = 0; i < NNODES; i++)
        if (loaders[i].started) {
            atomic_store(&loaders[i].run, 0);
            pthread_join(loaders[i].th, NULL);
            loaders[i].started = 0;
        }
}

static long total(const long *arr)
{
    long t = 0;
    int c;
    for (c = 0; c < NCOUNTERS; c++)
        t += arr[c];
    return t;
}

/* -------------------------------------------------- activation intervals */

static tu_actlog acts;

static void parse_actlog(int i, size_t from, size_t to,
                         unsigned long long close_ns)
{
    char path[512];

    actlog_path(i, path, sizeof path);
    tu_actlog_parse(&acts, path, i, from, to, close_ns);
}

/* ------------------------------------------------------------ fixture */

static void setup(void)
{
    ck_assert_int_eq(tu_cluster_zk_start(&fx), 0);
    tu_cluster_setup(&fx, "chaos", "cc");
    /* keeld's default session: with the tests' 2 s one, the lease is 1 s,
     * and a node starved of CPU that long fences itself, answering a
     * counter whose owner never crashed in doubt. */
    fx.session_ms = 4000;
    memset(loaders, 0, sizeof loaders);
    tu_actlog_init(&acts);
}

static void teardown(void)
{
    load_stop_all();
    tu_cluster_teardown(&fx, SIGKILL);
    tu_zk_stop(&fx.zk);
    tu_actlog_free(&acts);
}

/* Waits (bounded) until node i answers a read of counter k0. */
static void await_serving(int i, double secs)
{
    double deadline = tu_now_s() + secs;
    char *out = NULL;

    while (tu_now_s() < deadline) {
        out = cli(i, "call", "counter", "k0", "get");
        if (out == NULL) {
            usleep(200 * 1000);
            continue;
        }
        free(out);
        return;
    }
    dump_logs();
    ck_abort_msg("n%d did not serve in %.0f s", i, secs);
}

/* Node i is a member that holds units (bounded wait). */
static void await_owns_units(int i, double secs)
{
    double deadline = tu_now_s() + secs;
    char id[8];

    snprintf(id, sizeof id, "n%d", i);
    while (tu_now_s() < deadline) {
        char *out = cli((i + 1) % 3, "shards", "--node", id, NULL);
        int owns = out != NULL && strstr(out, "unit ") != NULL;
        free(out);
        if (owns)
            return;
        usleep(200 * 1000);
    }
    dump_logs();
    ck_abort_msg("n%d holds no unit after %.0f s", i, secs);
}

START_TEST(membership_changes_under_load)
{
    static long value[NCOUNTERS];
    static char crashed_shard[SHARDS];
    char ctl[32], other[32], id[8], *out, *line, *save = NULL;
    int i, c, leaver = -1, victim = -1, survivor = -1;
    size_t victim_log_size, moved, exact = 0, bounded = 0;
    unsigned long long kill_ns;
    struct stat st;
    char act[512];
    double deadline;

    for (i = 0; i < 3; i++)
        start_node(i);
    for (i = 0; i < 3; i++)
        await_serving(i, 90);
    for (i = 0; i < 3; i++)
        load_start(i);
    usleep(1500 * 1000);

    /* A fourth node joins under the load and takes over some units. */
    start_node(3);
    await_owns_units(3, 60);
    load_start(3);
    usleep(1000 * 1000);

    /* One node that is not the controller leaves gracefully. Callers of
     * that node stop using it first (a node that exits closes its
     * connections); calls forwarded to it are handed on. */
    ck_assert_int_eq(controller_of(3, ctl, sizeof ctl), 0);
    for (i = 0; i < 3 && leaver < 0; i++) {
        snprintf(id, sizeof id, "n%d", i);
        if (strcmp(id, ctl) != 0)
            leaver = i;
    }
    load_quiesce(leaver);
    atomic_store(&phase, 1);
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[leaver], SIGTERM), 0);
    atomic_store(&phase, 2);
    usleep(1000 * 1000);

    /* The controller is killed with -9. Its units were noted first: their
     * state exists only there, so they stay unavailable until it is back. */
    for (i = 0; i < NNODES; i++) {
        snprintf(id, sizeof id, "n%d", i);
        if (i != leaver && strcmp(id, ctl) == 0)
            victim = i;
    }
    ck_assert_int_ge(victim, 0);
    for (i = 0; i < NNODES; i++)
        if (i != leaver && i != victim)
            survivor = i;
    out = cli(survivor, "shards", "--node", ctl, NULL);
    ck_assert_ptr_nonnull(out);
    for (line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        unsigned shard;
        if (strncmp(line, "insecure ", 9) == 0)
            continue; /* the nodes run --insecure: the answer says so */
        ck_assert_int_eq(sscanf(line, "unit (default) %u", &shard), 1);
        ck_assert_uint_lt(shard, SHARDS);
        crashed_shard[shard] = 1;
    }
    free(out);
    load_quiesce(victim);
    actlog_path(victim, act, sizeof act);
    atomic_store(&phase, 3);
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[victim], SIGKILL), 128 + SIGKILL);
    kill_ns = tu_realtime_ns();
    ck_assert_int_eq(stat(act, &st), 0);
    victim_log_size = (size_t)st.st_size;

    /* Another node takes over as controller. */
    deadline = tu_now_s() + 60;
    while (tu_now_s() < deadline) {
        if (controller_of(survivor, other, sizeof other) == 0 &&
            strcmp(other, ctl) != 0)
            break;
        usleep(200 * 1000);
    }
    ck_assert_msg(strcmp(other, ctl) != 0,
                  "no new controller 60 s after %s was killed", ctl);
    usleep(1500 * 1000);

    /* The old controller comes back on its data and serves its units
     * again; the load goes on through it too. */
    start_node(victim);
    await_serving(victim, 90);
    atomic_store(&phase, 4);
    load_resume(victim);
    usleep(2000 * 1000);
    load_stop_all();

    fprintf(stderr,
            "chaos: %ld calls sent, %ld acknowledged, %ld EUNAVAIL, %ld "
            "unknown%s%s\n",
            total(sent_n), total(acked_n), total(unavail_n),
            total(unknown_n), last_err[0] ? "; last error " : "", last_err);
    ck_assert_int_gt(total(acked_n), NCOUNTERS);

    /* Every counter through one node. */
    if (read_all(survivor, value) != 0) {
        dump_logs();
        ck_abort_msg("could not read every counter through n%d", survivor);
    }
    for (c = 0; c < NCOUNTERS; c++) {
        char name[16];
        uint32_t shard;
        counter_name(c, name, sizeof name);
        shard = keel_shard_of("counter", name, strlen(name), SHARDS);
        ck_assert_msg(value[c] >= acked_n[c] && value[c] <= sent_n[c],
                      "counter %s = %ld: acknowledged %ld, sent %ld", name,
                      value[c], acked_n[c], sent_n[c]);
        if (!crashed_shard[shard]) {
            /* Its owner never crashed: nothing was lost in transit, and
             * no refused call was applied. */
            ck_assert_msg(unknown_n[c] == 0,
                          "counter %s: %ld calls of unknown fate (%s)", name,
                          unknown_n[c], last_err);
            ck_assert_msg(value[c] == acked_n[c],
                          "counter %s = %ld, acknowledged %ld", name,
                          value[c], acked_n[c]);
            exact++;
        } else {
            bounded++;
        }
    }
    ck_assert_uint_gt(exact, 0);
    ck_assert_uint_gt(bounded, 0);

    /* Activation intervals across every node's log. */
    for (i = 0; i < NNODES; i++) {
        if (i == victim) {
            parse_actlog(i, 0, victim_log_size, kill_ns);
            parse_actlog(i, victim_log_size, 0, 0);
        } else {
            parse_actlog(i, 0, 0, 0);
        }
    }
    moved = tu_actlog_check(&acts);
    fprintf(stderr, "chaos: %zu activations, %zu actors moved between nodes\n",
            acts.n, moved);
    ck_assert_uint_gt(moved, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_chaos");
    TCase *tc = tcase_create("chaos");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 280);
    tcase_add_test(tc, membership_changes_under_load);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
