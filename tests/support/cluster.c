#include "cluster.h"

#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keel.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define MAX_EXTRA 16

/* The cluster whose logs were printed for a failed check: its directory
 * (nodes' data and logs) outlives the teardown, for reading afterwards.
 * In check's fork mode a failed test never reaches its teardown anyway;
 * this also keeps it under CK_FORK=no. */
static const tu_cluster *failed_cluster;

int tu_cluster_zk_start(tu_cluster *c)
{
    if (!tu_zk_available()) {
        fprintf(stderr,
                "ZooKeeper is not installed (sh scripts/install-deps)\n");
        exit(1);
    }
    return tu_zk_start(&c->zk, 1, 200);
}

int tu_cluster_own_zk(tu_cluster *c, tu_zk *suite, int session_ms)
{
    tu_zk zk = {0};

    if (tu_zk_start(&zk, 1, 2000) != 0)
        return -1;
    *suite = c->zk;
    c->zk = zk;
    c->session_ms = session_ms;
    return 0;
}

void tu_cluster_own_zk_end(tu_cluster *c, tu_zk *suite)
{
    tu_cluster_teardown(c, SIGKILL);
    tu_zk_stop(&c->zk);
    c->zk = *suite;
}

int tu_cluster_zk_outage(tu_cluster *c, int i, int ms, long *acquired,
                         long *fenced)
{
    double t0;

    *acquired = tu_keel_stat(c->nodes[i].addr, "units_acquired");
    *fenced = tu_keel_stat(c->nodes[i].addr, "fenced");
    if (*acquired <= 0 || *fenced < 0) {
        fprintf(stderr, "n%d: units_acquired %ld, fenced %ld\n", i,
                *acquired, *fenced);
        return -1;
    }
    if (tu_zk_halt(&c->zk) != 0)
        return -1;
    t0 = tu_now_s();
    tu_sleep_ms(ms);
    if (tu_zk_restart(&c->zk) != 0)
        return -1;
    fprintf(stderr, "ZooKeeper back %.1f s after it stopped\n",
            tu_now_s() - t0);
    return 0;
}

const char *tu_cluster_outage_fenced(const tu_cluster *c, int i,
                                     long acquired, long fenced)
{
    if (tu_keel_stat(c->nodes[i].addr, "fenced") <= fenced)
        return "the node never fenced";
    if (tu_keel_stat(c->nodes[i].addr, "units_acquired") != acquired)
        return "the node took its units again (its session ended?)";
    return NULL;
}

int tu_cluster_run_suite(tu_cluster *c, Suite *s)
{
    SRunner *sr;
    int failed;

    if (tu_cluster_zk_start(c) != 0)
        exit(1);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    tu_zk_stop(&c->zk);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

void tu_cluster_setup(tu_cluster *c, const char *tag, const char *prefix)
{
    static int round;

    c->dir = tu_tmpdir(tag);
    memset(c->nodes, 0, sizeof c->nodes);
    c->zk_hosts = NULL;
    c->shards = 64;
    c->session_ms = 2000;
    c->quiet = 0;
    snprintf(c->name, sizeof c->name, "%s%d-%d", prefix, (int)getpid(),
             round++);
}

int tu_cluster_start_node(tu_cluster *c, int i, int port, ...)
{
    const char *extra[MAX_EXTRA + 1];
    const char *a;
    int n = 0;
    va_list ap;

    va_start(ap, port);
    while ((a = va_arg(ap, const char *)) != NULL && n < MAX_EXTRA)
        extra[n++] = a;
    va_end(ap);
    extra[n] = NULL;
    return tu_cluster_start_nodev(c, i, port, extra);
}

int tu_cluster_start_nodev(tu_cluster *c, int i, int port,
                           const char *const *extra)
{
    char data[512], id[16], shards[16], session[16];
    const char *args[13 + MAX_EXTRA + 1];
    int n = 0, k;

    snprintf(data, sizeof data, "%s/n%d", c->dir, i);
    snprintf(id, sizeof id, "n%d", i);
    snprintf(shards, sizeof shards, "%d", c->shards);
    snprintf(session, sizeof session, "%d", c->session_ms);
    args[n++] = "--shards";
    args[n++] = shards;
    args[n++] = "--zk";
    args[n++] = c->zk_hosts != NULL ? c->zk_hosts : c->zk.hosts;
    args[n++] = "--cluster";
    args[n++] = c->name;
    args[n++] = "--node-id";
    args[n++] = id;
    args[n++] = "--zk-session-timeout";
    args[n++] = session;
    /* The cluster tests run without credentials (test_auth gives its
     * nodes tokens instead, as extra arguments: those come after this
     * and make it moot). */
    args[n++] = "--insecure";
    /* One replica unless the test asks for more (a later --replicas
     * wins): the cluster tests of handoff, drain, dead owners and the
     * rest are about units with one copy; replication has tests of its
     * own. */
    args[n++] = "--replicas";
    args[n++] = "1";
    for (k = 0; extra != NULL && extra[k] != NULL && n < 13 + MAX_EXTRA; k++)
        args[n++] = extra[k];
    args[n] = NULL;
    return tu_keeld_start(&c->nodes[i], data, port, args);
}

int tu_cluster_teardown(tu_cluster *c, int sig)
{
    int i, bad = 0;

    for (i = 0; i < TU_CLUSTER_MAX; i++) {
        if (c->nodes[i].pid > 0) {
            kill(c->nodes[i].pid, SIGCONT);
            if (tu_keeld_stop(&c->nodes[i], sig) != 0)
                bad++;
        }
        tu_keeld_free(&c->nodes[i]);
    }
    if (c->dir != NULL) {
        if (c == failed_cluster) {
            fprintf(stderr, "kept %s\n", c->dir);
            failed_cluster = NULL;
        } else {
            tu_rmrf(c->dir);
        }
        free(c->dir);
        c->dir = NULL;
    }
    return bad;
}

void tu_cluster_dump_logs(const tu_cluster *c)
{
    tu_keeld_dump_logs(c->nodes, TU_CLUSTER_MAX);
    if (c->dir != NULL)
        fprintf(stderr, "---- the nodes' directories are kept in %s ----\n",
                c->dir);
    failed_cluster = c;
}

long tu_cluster_counter(const tu_cluster *c, int i, const char *name,
                        const char *op)
{
    char *out = NULL, *err = NULL;
    long v = -1;
    int rc = tu_keel(c->nodes[i].addr, &out, &err, "call", "counter", name,
                     op, NULL);

    if (rc == 0 && out != NULL)
        v = strtol(out, NULL, 10);
    else if (!c->quiet)
        fprintf(stderr, "keel call counter %s %s via n%d: exit %d: %s\n",
                name, op, i, rc, err ? err : "");
    free(out);
    free(err);
    return v;
}

void tu_cluster_owner_of(const tu_cluster *c, int i, const char *type,
                         const char *id, char *owner, size_t cap)
{
    char *out = NULL, *err = NULL;
    const char *p;
    size_t n = 0;

    owner[0] = '\0';
    if (tu_keel(c->nodes[i].addr, &out, &err, "where", type, id, NULL) == 0 &&
        out != NULL && (p = strstr(out, "\nowner ")) != NULL) {
        p += strlen("\nowner ");
        while (*p == ' ' || *p == '\t')
            p++;
        while (p[n] != '\0' && p[n] != '\n' && p[n] != ' ' &&
               p[n] != '\t' && n + 1 < cap)
            n++;
        memcpy(owner, p, n);
        owner[n] = '\0';
    }
    free(out);
    free(err);
}

void tu_cluster_counter_owned_by(const tu_cluster *c, int i,
                                 const char *prefix, const char *owner,
                                 char *id, size_t cap)
{
    char cand[64], who[64];
    int tries, k;

    id[0] = '\0';
    for (tries = 0; tries < 300; tries++) {
        for (k = 0; k < 64; k++) {
            snprintf(cand, sizeof cand, "%s%d", prefix, k);
            tu_cluster_owner_of(c, i, "counter", cand, who, sizeof who);
            if (who[0] == '\0')
                break;
            if (strcmp(who, owner) == 0) {
                snprintf(id, cap, "%s", cand);
                return;
            }
        }
        tu_sleep_ms(100);
    }
}

long tu_cluster_counter_over(struct keel_client *cl, const char *id,
                             int tries)
{
    char *reply = NULL;
    long value = -1;
    int rc;

    while (tries-- > 0) {
        rc = keel_client_call(cl, KEEL_FRAME_CALL, "counter", id, strlen(id),
                              "get", 3, &reply, NULL);
        if (rc == 0)
            value = atol(reply);
        free(reply);
        reply = NULL;
        if (rc == 0)
            break;
        tu_sleep_ms(100);
    }
    return value;
}

int tu_cluster_incr_from_one(struct keel_client *cl, const char *id, int n)
{
    char *reply = NULL;
    int tries, rc, acked = 0;

    for (tries = 0; tries < 100 && acked < n; tries++) {
        rc = keel_client_call(cl, KEEL_FRAME_CALL, "counter", id, strlen(id),
                              "incr", 4, &reply, NULL);
        if (rc == 0 && atol(reply) != acked + 1) {
            free(reply);
            return -1;
        }
        if (rc == 0)
            acked++;
        else
            tu_sleep_ms(100);
        free(reply);
        reply = NULL;
    }
    return acked;
}

int tu_cluster_forget(const tu_cluster *c, int via, const char *node,
                      int retries, int pause_ms, char **out)
{
    char *err = NULL;
    int tries, rc;

    for (tries = 0;; tries++) {
        *out = err = NULL;
        rc = tu_keel(c->nodes[via].addr, out, &err, "node", "forget", node,
                     NULL);
        if (rc == 0) {
            free(err);
            return 0;
        }
        if (rc != 1 || err == NULL || strstr(err, "EEXIST") == NULL) {
            fprintf(stderr, "forget %s via n%d: exit %d: %s\n", node, via, rc,
                    err ? err : "");
            free(*out);
            *out = NULL;
            free(err);
            return -1;
        }
        free(*out);
        *out = NULL;
        free(err);
        if (tries >= retries)
            return 1;
        tu_sleep_ms(pause_ms);
    }
}

double tu_now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

void tu_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

void tu_cluster_digest(const tu_cluster *c, int i, unsigned shard, char *out,
                       size_t cap)
{
    char num[16], *o = NULL, *e = NULL;

    snprintf(num, sizeof num, "%u", shard);
    out[0] = '\0';
    if (tu_keel(c->nodes[i].addr, &o, &e, "digest", "(default)", num,
                NULL) == 0 &&
        o != NULL)
        snprintf(out, cap, "%.*s", (int)strcspn(o, "\n"), o);
    free(o);
    free(e);
}

int tu_cluster_teardown_zk_paused(tu_cluster *c, int sig)
{
    char path[512], *text;

    snprintf(path, sizeof path, "%s/zk.pid", c->zk.dir);
    if ((text = tu_read_file(path)) != NULL && atol(text) > 0)
        kill((pid_t)atol(text), SIGCONT);
    free(text);
    return tu_cluster_teardown(c, sig);
}

void tu_cluster_counter_in(const char *prefix, uint32_t s, uint32_t shards,
                           char *id, size_t cap)
{
    int k;

    for (k = 0; k < 100000; k++) {
        snprintf(id, cap, "%s%d", prefix, k);
        if (keel_shard_of("counter", id, strlen(id), shards) == s)
            return;
    }
    ck_abort_msg("no counter id falls in shard %u", s);
}

long tu_cluster_keyed_counter(const tu_cluster *c, keel_client **cl, int i,
                              const char *id, const char *op)
{
    uint8_t key[KEEL_REQUEST_KEY_LEN];
    double deadline = tu_now_s() + 40;
    long v = -1;

    ck_assert_int_eq(keel_client_new_key(key), 0);
    while (v < 0 && tu_now_s() < deadline) {
        char *reply = NULL;
        int rc;
        if (*cl == NULL &&
            keel_client_connect(c->nodes[i].addr, 20000, cl) != 0) {
            *cl = NULL;
            tu_sleep_ms(100);
            continue;
        }
        rc = keel_client_call_keyed(*cl, KEEL_FRAME_CALL, key, "counter", id,
                                    strlen(id), op, strlen(op), &reply,
                                    NULL);
        if (rc == 0) {
            v = atol(reply);
        } else {
            if (rc == KEEL_ECONN || rc == KEEL_ENOTSENT ||
                rc == KEEL_ETIMEDOUT) {
                keel_client_close(*cl);
                *cl = NULL;
            }
            tu_sleep_ms(100);
        }
        free(reply);
    }
    return v;
}
