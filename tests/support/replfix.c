#include "replfix.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clmap.h"
#include "coordinator/shardmap.h"
#include "keel.h"
#include "runtime/proto.h"
#include "proc.h"
#include "testutil.h"

#define CLIENT_MS 20000

void tu_repl_setup(tu_cluster *c, const char *tag, const char *prefix)
{
    tu_cluster_setup(c, tag, prefix);
    c->shards = TU_REPL_SHARDS;
    c->session_ms = 4000;
}

void tu_repl_teardown(tu_cluster *c)
{
    char path[512], *text;

    /* A test that failed while ZooKeeper was paused (in
     * tu_cluster_start_together) must not leave it paused for the next
     * one. */
    snprintf(path, sizeof path, "%s/zk.pid", c->zk.dir);
    if ((text = tu_read_file(path)) != NULL && atol(text) > 0)
        kill((pid_t)atol(text), SIGCONT);
    free(text);
    tu_cluster_teardown(c, SIGKILL);
}

void tu_repl_start(tu_cluster *c, int nodes, int replicas,
                   const char *lag_ms)
{
    const char *common[] = {"--repl-lag-ms", lag_ms, "--http", "127.0.0.1:0",
                            NULL};

    tu_cluster_start_together(c, nodes, replicas, common, NULL);
}

keel_client *tu_repl_connect(const tu_cluster *c, int i)
{
    keel_client *cl = NULL;

    TU_CLUSTER_CHECK(c, keel_client_connect(c->nodes[i].addr, CLIENT_MS,
                                            &cl) == 0,
                     "cannot connect to n%d", i);
    return cl;
}

long tu_repl_incr(const tu_cluster *c, keel_client **cl, int i,
                  const char *id)
{
    return tu_cluster_keyed_counter(c, cl, i, id, "incr");
}

long tu_repl_get(const tu_cluster *c, int i, const char *id)
{
    keel_client *cl = tu_repl_connect(c, i);
    char *reply = NULL;
    long v = -1;
    int tries;

    for (tries = 0; tries < 100 && v < 0; tries++) {
        int rc = keel_client_call(cl, KEEL_FRAME_CALL, "counter", id,
                                  strlen(id), "get", 3, &reply, NULL);
        if (rc == 0)
            v = atol(reply);
        else
            tu_sleep_ms(100);
        free(reply);
        reply = NULL;
    }
    keel_client_close(cl);
    return v;
}

void tu_repl_counter_id(int j, char *id, size_t cap)
{
    snprintf(id, cap, "r%d", j);
}

uint32_t tu_repl_shard_of(const char *id)
{
    return keel_shard_of("counter", id, strlen(id), TU_REPL_SHARDS);
}

void tu_repl_load_round(const tu_cluster *c, keel_client **cl, long *acked,
                        const int *nodes, int nn, int round,
                        const char *when)
{
    char id[16];
    int j;

    for (j = 0; j < TU_REPL_COUNTERS; j++) {
        int i = nodes[(j + round) % nn];
        long v;
        tu_repl_counter_id(j, id, sizeof id);
        v = tu_repl_incr(c, &cl[i], i, id);
        TU_CLUSTER_CHECK(c, v == acked[j] + 1,
                         "%s answered %ld after %ld increments (%s)", id, v,
                         acked[j], when);
        acked[j] = v;
    }
}

void tu_repl_wait_all_in_sync(const tu_cluster *c, const char *what)
{
    int ok = tu_map_wait_settled(c, 3) || tu_map_wait_settled(c, 3);

    TU_CLUSTER_CHECK(c, ok,
                     "%s: the units did not get 3 replicas in sync again",
                     what);
}

void tu_repl_check_agree(const tu_cluster *c, const long *acked,
                         const int *live, int nl, const char *when)
{
    keel_shard_map m;
    char id[16];
    int j, k;

    for (j = 0; j < TU_REPL_COUNTERS; j++)
        for (k = 0; k < nl; k++) {
            long v;
            tu_repl_counter_id(j, id, sizeof id);
            v = tu_repl_get(c, live[k], id);
            TU_CLUSTER_CHECK(c, v == acked[j],
                             "%s is %ld through n%d, %ld acknowledged (%s)",
                             id, v, live[k], acked[j], when);
        }
    TU_CLUSTER_CHECK(c, tu_map_read(c, &m) == 0, "no map");
    for (j = 0; j < TU_REPL_SHARDS; j++) {
        const keel_map_unit *u = tu_map_unit(&m, "", (uint32_t)j);
        char d[TU_CLUSTER_MAX][128];
        for (k = 0; k < nl; k++) {
            char name[8];
            snprintf(name, sizeof name, "n%d", live[k]);
            TU_CLUSTER_CHECK(c, tu_map_in_sync(&m, u, name),
                             "shard %d: %s is not in sync (%s)", j, name,
                             when);
            tu_cluster_digest(c, live[k], (uint32_t)j, d[k], sizeof d[k]);
            TU_CLUSTER_CHECK(c, strncmp(d[k], "digest ", 7) == 0 &&
                                    strcmp(d[k], d[0]) == 0,
                             "shard %d differs between n%d '%s' and n%d "
                             "'%s' (%s)",
                             j, live[0], d[0], live[k], d[k], when);
        }
    }
    keel_map_free(&m);
}

static void *bg_incr_main(void *arg)
{
    tu_repl_bg_incr *b = arg;
    keel_client *c = NULL;
    char *reply = NULL;

    b->rc = keel_client_connect(b->addr, 20000, &c);
    if (b->rc == 0)
        b->rc = keel_client_call(c, KEEL_FRAME_CALL, "counter", b->id,
                                 strlen(b->id), "incr", 4, &reply, NULL);
    free(reply);
    keel_client_close(c);
    return NULL;
}

void tu_repl_bg_incr_start(tu_repl_bg_incr *b, const char *addr,
                           const char *id)
{
    b->addr = addr;
    snprintf(b->id, sizeof b->id, "%s", id);
    b->rc = -1;
    ck_assert_int_eq(pthread_create(&b->t, NULL, bg_incr_main, b), 0);
}

int tu_repl_bg_incr_join(tu_repl_bg_incr *b)
{
    pthread_join(b->t, NULL);
    return b->rc;
}

int tu_repl_leads(const tu_cluster *c, const char *node, int every)
{
    keel_shard_map m;
    uint32_t s;
    int ok, ci;

    if (tu_map_read(c, &m) != 0)
        return 0;
    ci = keel_map_cap_index(&m, "");
    ok = ci >= 0;
    for (s = 0; ok && s < m.shard_count; s++) {
        const char *p = keel_map_primary(&m, (uint32_t)ci, s);
        ok = p != NULL && (strcmp(p, node) == 0) == every;
    }
    keel_map_free(&m);
    return ok;
}

int tu_repl_controller(const tu_cluster *c, int via, int nodes)
{
    char *o = NULL, *e = NULL, name[32];
    const char *p;
    int idx = -1;

    if (tu_keel(c->nodes[via].addr, &o, &e, "nodes", NULL) == 0 &&
        o != NULL && (p = strstr(o, "\ncontroller ")) != NULL &&
        sscanf(p, "\ncontroller %31s", name) == 1 && name[0] == 'n' &&
        name[1] >= '0' && name[1] < '0' + nodes && name[2] == '\0')
        idx = name[1] - '0';
    free(o);
    free(e);
    return idx;
}

void tu_repl_counter_led_by(const tu_cluster *c, int via, const char *node,
                            char *id, size_t cap)
{
    char owner[64];
    int j;

    id[0] = '\0';
    for (j = 0; j < 64 && id[0] == '\0'; j++) {
        char cand[16];
        tu_repl_counter_id(j, cand, sizeof cand);
        tu_cluster_owner_of(c, via, "counter", cand, owner, sizeof owner);
        if (strcmp(owner, node) == 0)
            snprintf(id, cap, "%s", cand);
    }
}
