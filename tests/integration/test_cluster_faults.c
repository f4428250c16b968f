/* Cluster mode under faults, end to end: a real ZooKeeper (zk-conf/zk.sh)
 * and keeld processes joined with --zk.
 *
 *  - A node stopped (SIGSTOP) past its session timeout: requests that
 *    waited for it in its socket while it was stopped are not served from
 *    the units it lost meanwhile (`keel node forget` gave them to others),
 *    because its lease lapsed before it read them; its stale copy never
 *    comes back, even when the units move back to it.
 *  - ZooKeeper stopped for longer than 2/3 of the session timeout and
 *    restarted on the same data, under a counter load: the nodes fence and
 *    stall; calls succeed late or fail with EUNAVAIL, never with a wrong
 *    value; the cluster serves again and every counter equals its
 *    acknowledged increments.
 *
 * Every wait is bounded in count and time; no assertion depends on how
 * fast the machine is. On a failure the nodes' logs are printed. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"
#include "zk.h"

#define NODES 3
#define MAXC 24
/* Long enough for a call held by two nodes in turn (5 s each) and a
 * forward; a receive that times out fails the test (outcome unknown). */
#define CLIENT_TIMEOUT_MS 60000

static tu_cluster fx; /* fx.zk: the suite's ZooKeeper */

static void setup(void)
{
    tu_cluster_setup(&fx, "clfaults", "cf");
}

static void teardown(void)
{
    /* SIGCONT first, in case a test left a node stopped. */
    ck_assert_int_eq(tu_cluster_teardown(&fx, SIGTERM), 0);
}

static void start_node(int i, const char *zk_hosts)
{
    fx.zk_hosts = zk_hosts;
    ck_assert_int_eq(tu_cluster_start_node(&fx, i, 0, NULL), 0);
}

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static const char *cname(int c)
{
    static char names[MAXC][16];

    snprintf(names[c], sizeof names[c], "c%d", c);
    return names[c];
}

/* ------------------------------------------------------- pipelined calls */

/* The answer to one call: status 0 with the counter's value, or the
 * server's KEEL_E* code with its message; or a transport error. */
typedef struct answer {
    int status;
    long value;
    char msg[160];
} answer;

static void decode(const keel_frame *f, answer *a)
{
    size_t n;

    memset(a, 0, sizeof *a);
    if (f->kind == KEEL_FRAME_REPLY) {
        char buf[32];
        n = f->body_len < sizeof buf - 1 ? f->body_len : sizeof buf - 1;
        memcpy(buf, f->body, n);
        buf[n] = '\0';
        a->value = strtol(buf, NULL, 10);
        snprintf(a->msg, sizeof a->msg, "%s", buf);
    } else if (f->kind == KEEL_FRAME_ERROR && f->body_len >= 2) {
        a->status = -(int)(((unsigned)f->body[0] << 8) | f->body[1]);
        n = f->body_len - 2 < sizeof a->msg - 1 ? f->body_len - 2
                                                : sizeof a->msg - 1;
        memcpy(a->msg, f->body + 2, n);
        a->msg[n] = '\0';
    } else {
        a->status = KEEL_EPROTO;
        snprintf(a->msg, sizeof a->msg, "unexpected frame kind %d", f->kind);
    }
}

/* Queues `op` for counters idx[0..k) on cl (request id = counter index +
 * 1: the protocol keeps id 0 for answers that belong to no request),
 * without sending. */
static int queue_calls(keel_client *cl, const int *idx, int k, const char *op)
{
    int j, rc;

    for (j = 0; j < k; j++) {
        const char *id = cname(idx[j]);
        rc = keel_client_queue(cl, KEEL_FRAME_CALL, (uint64_t)idx[j] + 1,
                               "counter", id, strlen(id), op, strlen(op));
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Receives k answers on cl into out[request id]. Returns 0 or the
 * transport error (KEEL_ETIMEDOUT: some outcome is unknown). */
static int recv_answers(keel_client *cl, int k, answer *out, int nout)
{
    keel_frame f;
    int j, rc;

    for (j = 0; j < k; j++) {
        if ((rc = keel_client_recv(cl, &f)) != 0)
            return rc;
        if (f.request_id == 0 || f.request_id > (uint64_t)nout)
            return KEEL_EPROTO;
        decode(&f, &out[f.request_id - 1]);
    }
    return 0;
}

/* One call of `op` per counter 0..nc-1, counter c sent to node
 * (c + rot) % 3: pipelined on one connection per node. */
static int call_round(keel_client **cl, int nc, int rot, const char *op,
                      answer *out)
{
    int idx[NODES][MAXC], k[NODES] = {0}, c, i, rc;

    for (c = 0; c < nc; c++) {
        i = (c + rot) % NODES;
        idx[i][k[i]++] = c;
    }
    for (i = 0; i < NODES; i++)
        if (k[i] > 0 && ((rc = queue_calls(cl[i], idx[i], k[i], op)) != 0 ||
                         (rc = keel_client_flush(cl[i])) != 0))
            return rc;
    for (i = 0; i < NODES; i++)
        if (k[i] > 0 && (rc = recv_answers(cl[i], k[i], out, MAXC)) != 0)
            return rc;
    return 0;
}

static void connect_all(keel_client **cl)
{
    int i;

    for (i = 0; i < NODES; i++)
        ck_assert_int_eq(keel_client_connect(fx.nodes[i].addr,
                                             CLIENT_TIMEOUT_MS, &cl[i]),
                         0);
}

static void close_all(keel_client **cl)
{
    int i;

    for (i = 0; i < NODES; i++)
        keel_client_close(cl[i]);
}

/* Waits (at most 90 s) until every node answers a read of each of the nc
 * counters (a controller, a map, every unit acquired): three good rounds
 * in a row, each counter through another node in each. */
static void converge(keel_client **cl, int nc)
{
    answer a[MAXC];
    double t0 = tu_now_s();
    int r = 0, good = 0, c;

    while (good < NODES && tu_now_s() - t0 < 90) {
        int rc = call_round(cl, nc, r, "get", a), ok = 1;
        CHECK(rc == 0, "reads while converging: %s", keel_strerror(rc));
        r++;
        for (c = 0; c < nc; c++)
            if (a[c].status != 0)
                ok = 0;
        good = ok ? good + 1 : 0;
        if (!ok)
            tu_sleep_ms(100);
    }
    CHECK(good == NODES, "the cluster did not converge in 90 s");
}

/* One call of `op` on counter c over cl. */
static answer one_call(keel_client *cl, int c, const char *op)
{
    answer a[MAXC];
    int rc;

    if ((rc = queue_calls(cl, &c, 1, op)) != 0 ||
        (rc = keel_client_flush(cl)) != 0 ||
        (rc = recv_answers(cl, 1, a, MAXC)) != 0) {
        memset(&a[c], 0, sizeof a[c]);
        a[c].status = rc;
        snprintf(a[c].msg, sizeof a[c].msg, "transport: %s",
                 keel_strerror(rc));
    }
    return a[c];
}

/* Reads counter c over cl, retrying a read that fails with EUNAVAIL (its
 * unit is moving) a bounded number of times. */
static answer read_counter(keel_client *cl, int c)
{
    answer a;
    int tries = 0;

    do
        a = one_call(cl, c, "get");
    while (a.status == KEEL_EUNAVAIL && ++tries < 10);
    return a;
}

/* The owner `where` reports through node i for counter c ("" if none). */
static void owner_of(int i, int c, char owner[64])
{
    char *out = NULL, *err = NULL, *p;
    int rc = tu_keel(fx.nodes[i].addr, &out, &err, "where", "counter", cname(c),
                     NULL);

    owner[0] = '\0';
    if (rc == 0 && out != NULL && (p = strstr(out, "\nowner ")) != NULL)
        sscanf(p + 7, "%63s", owner);
    free(out);
    free(err);
}

static int count_of(const char *log, const char *what)
{
    int n = 0;
    const char *p = log;

    while (p != NULL && (p = strstr(p, what)) != NULL) {
        n++;
        p++;
    }
    return n;
}

/* ------------------------------------------------------------- SIGSTOP */

enum { OLD = 10, POST = 2, QUEUED = 2 };

/* n2 is stopped longer than its session timeout. Requests for units it
 * owned wait in its socket meanwhile; n2 is forgotten (`keel node forget`,
 * its units restart from nothing on n0 and n1) and those counters are
 * incremented again through n0. When n2 resumes, its lease has lapsed: it
 * fences itself before it reads anything, so each queued request either
 * fails with EUNAVAIL or is served by the new owner (a value that follows
 * the new count, never OLD + 1). n2 learns that its session expired,
 * rejoins, purges what it held, and gets its units back through handoffs:
 * every node, n2 included, then reads the new counts. */
START_TEST(sigstop_past_session_timeout)
{
    keel_client *cl[NODES], *q;
    answer a[MAXC];
    int mine[MAXC] = {0}, nmine = 0, c, r, i, tries, rc, succ[MAXC] = {0};
    long last[MAXC];
    char owner[64], *out = NULL, *log;
    double t0;

    for (i = 0; i < NODES; i++)
        start_node(i, fx.zk.hosts);
    connect_all(cl);
    converge(cl, MAXC);

    /* OLD increments of every counter, through every node in turn. */
    for (r = 0; r < OLD; r++) {
        rc = call_round(cl, MAXC, r, "incr", a);
        CHECK(rc == 0, "round %d: %s", r, keel_strerror(rc));
        for (c = 0; c < MAXC; c++)
            CHECK(a[c].status == 0 && a[c].value == r + 1,
                  "incr %s (round %d): %d %s", cname(c), r, a[c].status,
                  a[c].msg);
    }
    for (c = 0; c < MAXC; c++) {
        owner_of(0, c, owner);
        CHECK(owner[0] != '\0', "where %s: no owner", cname(c));
        if (strcmp(owner, "n2") == 0) {
            mine[c] = 1;
            nmine++;
        }
    }
    CHECK(nmine > 0 && nmine < MAXC, "n2 owns %d of %d counters", nmine,
          MAXC);

    /* Stop n2; queue QUEUED increments of each of its counters in its
     * socket (the kernel accepts the connection and buffers them). */
    ck_assert_int_eq(kill(fx.nodes[2].pid, SIGSTOP), 0);
    ck_assert_int_eq(
        keel_client_connect(fx.nodes[2].addr, CLIENT_TIMEOUT_MS, &q), 0);
    for (c = 0; c < MAXC; c++)
        for (i = 0; mine[c] && i < QUEUED; i++) {
            uint64_t rid = (uint64_t)(c * QUEUED + i);
            ck_assert_int_eq(keel_client_queue(q, KEEL_FRAME_CALL, rid,
                                               "counter", cname(c),
                                               strlen(cname(c)), "incr", 4),
                             0);
        }
    ck_assert_int_eq(keel_client_flush(q), 0);

    /* Its session expires (2 s): until then forgetting it is refused. */
    rc = tu_cluster_forget(&fx, 0, "n2", 200, 100, &out);
    CHECK(rc == 0, "forget n2: %s",
          rc > 0 ? "n2's session did not expire" : "failed");
    CHECK(strstr(out, "node n2 forgotten") != NULL, "forget: %s", out);
    free(out);

    /* Its counters restart from 0 on their new owners. A call that finds
     * its unit still moving fails with EUNAVAIL (not applied): retried. */
    for (c = 0; c < MAXC; c++) {
        int done = 0;
        if (!mine[c])
            continue;
        for (tries = 0; done < POST && tries < 20; tries++) {
            answer x = one_call(cl[0], c, "incr");
            if (x.status == KEEL_EUNAVAIL)
                continue;
            CHECK(x.status == 0 && x.value == done + 1,
                  "incr %s via n0 after the forget: %d %s (want %d)",
                  cname(c), x.status, x.msg, done + 1);
            done++;
        }
        CHECK(done == POST, "%s unavailable after the forget", cname(c));
    }

    /* n2 resumes: every queued call fails with EUNAVAIL, or with EDENIED
     * when n2 forwards it while it is no member (the others refuse a
     * departed node's forwards: it did not run), or follows the new count;
     * OLD + 1 would be n2 serving a unit it lost. */
    ck_assert_int_eq(kill(fx.nodes[2].pid, SIGCONT), 0);
    for (c = 0; c < MAXC; c++)
        last[c] = POST;
    for (i = 0; i < nmine * QUEUED; i++) {
        keel_frame f;
        answer x;
        rc = keel_client_recv(q, &f);
        CHECK(rc == 0, "answer %d of %d from n2: %s", i, nmine * QUEUED,
              keel_strerror(rc));
        decode(&f, &x);
        c = (int)(f.request_id / QUEUED);
        CHECK(c < MAXC && mine[c], "answer for request %llu",
              (unsigned long long)f.request_id);
        if (x.status == KEEL_EUNAVAIL)
            continue;
        if (x.status == KEEL_EDENIED) {
            CHECK(strstr(x.msg, "no member") != NULL,
                  "queued incr %s refused: %s", cname(c), x.msg);
            continue;
        }
        CHECK(x.status == 0, "queued incr %s: %d %s", cname(c), x.status,
              x.msg);
        CHECK(x.value > last[c] && x.value <= POST + QUEUED,
              "queued incr %s answered %ld (new count %ld, old %d): served "
              "from a stale copy",
              cname(c), x.value, last[c], OLD);
        last[c] = x.value;
        succ[c]++;
    }
    keel_client_close(q);
    {
        int served = 0;
        for (c = 0; c < MAXC; c++)
            served += succ[c];
        fprintf(stderr,
                "sigstop: n2 owned %d counters; of its %d queued calls, %d "
                "were served by the new owners, %d failed (EUNAVAIL, or "
                "EDENIED: n2 was no member)\n",
                nmine, nmine * QUEUED, served, nmine * QUEUED - served);
    }

    /* n2 was fenced by its lease before anything else, learnt that its
     * session had expired, and joined again, purging its stale units. */
    log = NULL;
    for (tries = 0; tries < 300; tries++) {
        free(log);
        log = tu_keeld_log(&fx.nodes[2]);
        if (log != NULL && count_of(log, " joined as incarnation ") >= 2 &&
            strstr(log, "stale local units purged") != NULL)
            break;
        tu_sleep_ms(100);
    }
    CHECK(log != NULL, "no log for n2");
    CHECK(strstr(log, "fenced: stops serving (lease lapsed") != NULL,
          "n2 did not fence itself by its lease");
    CHECK(strstr(log, "session of n2 expired") != NULL,
          "n2 did not see its session expire");
    CHECK(count_of(log, " joined as incarnation ") >= 2, "n2 did not rejoin");
    CHECK(strstr(log, "stale local units purged") != NULL,
          "n2 did not purge its stale units");
    free(log);
    CHECK(tu_keel_stat(fx.nodes[2].addr, "fenced") >= 1,
          "n2's statistics count no fencing");
    CHECK(tu_keel_stat(fx.nodes[2].addr, "session_expirations") >= 1,
          "n2's statistics count no session expiry");

    /* Its units come back to it (the same members, the same placement)
     * through handoffs that stream the new records. */
    t0 = tu_now_s();
    for (c = 0; c < MAXC; c++) {
        if (!mine[c])
            continue;
        do {
            owner_of(0, c, owner);
            if (strcmp(owner, "n2") == 0)
                break;
            tu_sleep_ms(100);
        } while (tu_now_s() - t0 < 60);
        CHECK(strcmp(owner, "n2") == 0, "%s is owned by '%s', not n2 again",
              cname(c), owner);
    }

    /* Every node, n2 included, reads the new counts. */
    for (c = 0; c < MAXC; c++) {
        long want = mine[c] ? POST + succ[c] : OLD;
        for (i = 0; i < NODES; i++) {
            answer x = read_counter(cl[i], c);
            CHECK(x.status == 0 && x.value == want,
                  "%s through n%d: %d %s (want %ld)", cname(c), i, x.status,
                  x.msg, want);
        }
    }
    close_all(cl);
}
END_TEST

/* ---------------------------------------------------- ZooKeeper restart */

#define LOADC 12

typedef struct load {
    keel_client *cl[NODES];
    long acked[LOADC];
    long doubt[LOADC]; /* EINDOUBT answers since the last success */
    atomic_int stop;
    atomic_long rounds, ok_calls, unavailable, refused, in_doubt;
    char violation[512]; /* set once, read after the join */
    pthread_t th;
} load;

/* One increment of each counter per round, each through node
 * (round + counter) % 3, until told to stop. Each counter has one call in
 * flight at a time, so a successful answer must be exactly its
 * acknowledged count + 1 (a failed call was not applied: no node
 * crashed). Any other answer, or none within the client's timeout, is a
 * violation. */
static void *load_main(void *arg)
{
    load *l = arg;
    answer a[MAXC];
    int r, c;

    for (r = 0; !atomic_load(&l->stop); r++) {
        int rc = call_round(l->cl, LOADC, r, "incr", a);
        if (rc != 0) {
            snprintf(l->violation, sizeof l->violation,
                     "round %d: transport error %s", r, keel_strerror(rc));
            return NULL;
        }
        for (c = 0; c < LOADC; c++) {
            /* Not applied: held past its bound (EUNAVAIL), or, should a
             * session expire before a commit, a write the store refused
             * for an epoch the node no longer held (EFENCED). */
            if (a[c].status == KEEL_EUNAVAIL) {
                atomic_fetch_add(&l->unavailable, 1);
                continue;
            }
            if (a[c].status == KEEL_EFENCED ||
                a[c].status == KEEL_EDEADLINE) {
                atomic_fetch_add(&l->refused, 1);
                continue;
            }
            /* The node lost its lease between the turn and the reply, or
             * the node the call went through had no answer from the
             * owner by the call's deadline: the increment may or may not
             * count. The next answer says which. */
            if (a[c].status == KEEL_EINDOUBT ||
                a[c].status == KEEL_ETIMEDOUT) {
                l->doubt[c]++;
                atomic_fetch_add(&l->in_doubt, 1);
                continue;
            }
            if (a[c].status == 0 && a[c].value > l->acked[c] + 1 &&
                a[c].value <= l->acked[c] + 1 + l->doubt[c])
                l->acked[c] = a[c].value - 1; /* those in doubt counted */
            if (a[c].status == 0)
                l->doubt[c] = 0;
            if (a[c].status != 0 || a[c].value != l->acked[c] + 1) {
                snprintf(l->violation, sizeof l->violation,
                         "round %d, %s via n%d: status %d '%s' (acked %ld)",
                         r, cname(c), (c + r) % NODES, a[c].status, a[c].msg,
                         l->acked[c]);
                return NULL;
            }
            l->acked[c] = a[c].value;
            atomic_fetch_add(&l->ok_calls, 1);
        }
        atomic_fetch_add(&l->rounds, 1);
    }
    return NULL;
}

static int alive(tu_keeld *k)
{
    int st;

    if (k->pid <= 0)
        return 0;
    if (waitpid(k->pid, &st, WNOHANG) == 0)
        return 1;
    k->pid = -1; /* reaped: it died */
    return 0;
}

/* ZooKeeper stops under a counter load for ~3 s, longer than 2/3 of the
 * 2000 ms session timeout, and restarts on the same data and port. The
 * nodes fence themselves and stall; calls meanwhile succeed late or fail
 * with EUNAVAIL (or EINDOUBT / ETIMEDOUT: a node lost its lease between a
 * turn and its reply, or a forwarded call's owner did not answer by the
 * call's deadline, so that increment may or may not count); once ZooKeeper is
 * back the load goes through again; no node died; every counter equals
 * its acknowledged increments (plus at most those in doubt), read through
 * every node. */
START_TEST(zookeeper_restart_under_load)
{
    tu_zk zk;
    load *l = calloc(1, sizeof *l);
    long ok_before, rounds_mark;
    double t0;
    int i, c;

    ck_assert_ptr_nonnull(l);
    /* A server of this test's own: it is stopped and started again. */
    ck_assert_int_eq(tu_zk_start(&zk, 1, 200), 0);
    for (i = 0; i < NODES; i++)
        start_node(i, zk.hosts);
    connect_all(l->cl);
    converge(l->cl, LOADC);
    ck_assert_int_eq(pthread_create(&l->th, NULL, load_main, l), 0);

    /* Some load first. */
    t0 = tu_now_s();
    while (atomic_load(&l->rounds) < 5 && tu_now_s() - t0 < 60 &&
           l->violation[0] == '\0')
        tu_sleep_ms(50);
    CHECK(atomic_load(&l->rounds) >= 5, "no load before the outage");

    ck_assert_int_eq(tu_zk_halt(&zk), 0);
    tu_sleep_ms(3000);
    ok_before = atomic_load(&l->ok_calls);
    CHECK(tu_zk_restart(&zk) == 0, "ZooKeeper did not restart");

    /* Back: the load goes through again, a few full rounds after the
     * restart (bounded). */
    rounds_mark = atomic_load(&l->rounds);
    t0 = tu_now_s();
    while (tu_now_s() - t0 < 90 && l->violation[0] == '\0' &&
           (atomic_load(&l->rounds) < rounds_mark + 10 ||
            atomic_load(&l->ok_calls) < ok_before + 3 * LOADC))
        tu_sleep_ms(100);
    atomic_store(&l->stop, 1);
    pthread_join(l->th, NULL);
    CHECK(l->violation[0] == '\0', "%s", l->violation);
    CHECK(atomic_load(&l->ok_calls) >= ok_before + 3 * LOADC,
          "the cluster did not serve again after ZooKeeper came back "
          "(%ld calls acknowledged after the restart)",
          atomic_load(&l->ok_calls) - ok_before);
    for (i = 0; i < NODES; i++)
        CHECK(alive(&fx.nodes[i]), "n%d died", i);
    /* The outage was long enough to fence every node. */
    for (i = 0; i < NODES; i++) {
        char *log = tu_keeld_log(&fx.nodes[i]);
        CHECK(log != NULL && strstr(log, "fenced: stops serving") != NULL,
              "n%d never fenced itself", i);
        free(log);
    }
    fprintf(stderr,
            "zookeeper restart: %ld calls acknowledged, %ld EUNAVAIL, %ld "
            "EFENCED or EDEADLINE, %ld EINDOUBT or ETIMEDOUT\n",
            atomic_load(&l->ok_calls), atomic_load(&l->unavailable),
            atomic_load(&l->refused), atomic_load(&l->in_doubt));

    /* Exactly the acknowledged increments, plus at most those whose
     * outcome was left unknown since the last success. */
    for (c = 0; c < LOADC; c++)
        for (i = 0; i < NODES; i++) {
            answer x = read_counter(l->cl[i], c);
            CHECK(x.status == 0 && x.value >= l->acked[c] &&
                      x.value <= l->acked[c] + l->doubt[c],
                  "%s through n%d: %d %s (acknowledged %ld, in doubt %ld)",
                  cname(c), i, x.status, x.msg, l->acked[c], l->doubt[c]);
        }
    close_all(l->cl);
    for (i = 0; i < NODES; i++)
        ck_assert_int_eq(tu_keeld_stop(&fx.nodes[i], SIGTERM), 0);
    tu_zk_stop(&zk);
    free(l);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_faults");
    TCase *tc = tcase_create("cluster_faults");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, sigstop_past_session_timeout);
    tcase_add_test(tc, zookeeper_restart_under_load);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
