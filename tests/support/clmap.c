#include "clmap.h"

#include <check.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zookeeper/zookeeper.h>

#include "testutil.h"

typedef struct zget {
    int done, rc;
    char *data;
    int len;
} zget;

static void zget_cb(int rc, const char *v, int len, const struct Stat *st,
                    const void *arg)
{
    zget *z = (zget *)arg;

    (void)st;
    z->rc = rc;
    if (rc == ZOK && v != NULL && len > 0 &&
        (z->data = malloc((size_t)len)) != NULL) {
        memcpy(z->data, v, (size_t)len);
        z->len = len;
    }
    z->done = 1;
}

/* Drives the client until *flag is set (flag NULL: until connected); at
 * most 15 s. 0 or -1. */
static int zdrive(zhandle_t *zh, const int *flag)
{
    double deadline = tu_now_s() + 15;

    while (tu_now_s() < deadline) {
        struct timeval tv;
        struct pollfd p;
        int fd = -1, interest = 0, events = 0, ms;

        if (flag != NULL ? *flag : zoo_state(zh) == ZOO_CONNECTED_STATE)
            return 0;
        if (zookeeper_interest(zh, &fd, &interest, &tv) != ZOK)
            return -1;
        ms = (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
        if (ms > 100 || ms < 0)
            ms = 100;
        p.fd = fd;
        p.events = (short)(((interest & ZOOKEEPER_READ) ? POLLIN : 0) |
                           ((interest & ZOOKEEPER_WRITE) ? POLLOUT : 0));
        p.revents = 0;
        if (fd >= 0 && poll(&p, 1, ms) > 0) {
            if (p.revents & (POLLIN | POLLHUP | POLLERR))
                events |= ZOOKEEPER_READ;
            if (p.revents & POLLOUT)
                events |= ZOOKEEPER_WRITE;
        } else if (fd < 0) {
            poll(NULL, 0, ms);
        }
        zookeeper_process(zh, events);
    }
    return -1;
}

int tu_map_read(const tu_cluster *c, keel_shard_map *m)
{
    zhandle_t *zh;
    char path[128];
    zget z = {0};
    int rc;

    zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
    zh = zookeeper_init(c->zk_hosts != NULL ? c->zk_hosts : c->zk.hosts, NULL,
                        10000, NULL, NULL, 0);
    if (zh == NULL)
        return -1;
    snprintf(path, sizeof path, "/keel/%s/map", c->name);
    rc = zdrive(zh, NULL) != 0 ||
                 zoo_aget(zh, path, 0, zget_cb, &z) != ZOK ||
                 zdrive(zh, &z.done) != 0 || z.rc != ZOK || z.data == NULL
             ? -1
             : 0;
    zookeeper_close(zh);
    if (rc == 0)
        rc = keel_map_decode(z.data, (size_t)z.len, m) == 0 ? 0 : -1;
    free(z.data);
    return rc;
}

int tu_cluster_member_exists(const tu_cluster *c, const char *node)
{
    zhandle_t *zh;
    char path[160];
    zget z = {0};
    int rc;

    zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
    zh = zookeeper_init(c->zk_hosts != NULL ? c->zk_hosts : c->zk.hosts, NULL,
                        10000, NULL, NULL, 0);
    if (zh == NULL)
        return -1;
    snprintf(path, sizeof path, "/keel/%s/members/%s", c->name, node);
    rc = zdrive(zh, NULL) != 0 ||
                 zoo_aget(zh, path, 0, zget_cb, &z) != ZOK ||
                 zdrive(zh, &z.done) != 0
             ? -1
         : z.rc == ZOK     ? 1
         : z.rc == ZNONODE ? 0
                           : -1;
    zookeeper_close(zh);
    free(z.data);
    return rc;
}

const keel_map_unit *tu_map_unit(const keel_shard_map *m, const char *cap,
                                 uint32_t shard)
{
    int ci = keel_map_cap_index(m, cap);

    return ci < 0 || shard >= m->shard_count
               ? NULL
               : keel_map_unit_at(m, (uint32_t)ci, shard);
}

int tu_map_in_sync(const keel_shard_map *m, const keel_map_unit *u,
                   const char *name)
{
    int ni = keel_map_node_index(m, name);
    int pos = ni < 0 ? -1 : keel_map_replica_pos(u, (uint16_t)ni);

    return keel_map_insync(u, pos);
}

int tu_map_wait_settled(const tu_cluster *c, int want)
{
    keel_shard_map m;
    int tries, ok = 0;
    uint32_t s;

    for (tries = 0; tries < 200 && !ok; tries++) {
        if (tu_map_read(c, &m) == 0) {
            ok = keel_map_cap_index(&m, "") >= 0;
            for (s = 0; ok && s < m.shard_count; s++) {
                const keel_map_unit *u = tu_map_unit(&m, "", s);
                ok = u->shard_epoch > 0 && u->nreplicas == want &&
                     u->insync == (uint8_t)((1u << want) - 1) &&
                     u->target == KEEL_MAP_NO_NODE;
            }
            keel_map_free(&m);
        }
        if (!ok)
            tu_sleep_ms(100);
    }
    if (!ok && tu_map_read(c, &m) == 0) {
        for (s = 0; keel_map_cap_index(&m, "") >= 0 && s < m.shard_count;
             s++) {
            const keel_map_unit *u = tu_map_unit(&m, "", s);
            fprintf(stderr, "map %llu shard %u: epoch %llu, %u replicas, "
                            "in sync 0x%x, target %u\n",
                    (unsigned long long)m.map_epoch, s,
                    (unsigned long long)u->shard_epoch, u->nreplicas,
                    u->insync, u->target);
        }
        keel_map_free(&m);
    }
    return ok;
}

int tu_cluster_zk_pid(const tu_cluster *c)
{
    char path[512], *text;
    int pid;

    snprintf(path, sizeof path, "%s/zk.pid", c->zk.dir);
    text = tu_read_file(path);
    ck_assert_msg(text != NULL, "no %s", path);
    pid = atoi(text);
    free(text);
    ck_assert_int_gt(pid, 0);
    return pid;
}

struct starter {
    pthread_t t;
    tu_cluster *c;
    int i, rc;
    const char *args[40];
};

static void *start_main(void *arg)
{
    struct starter *s = arg;

    s->rc = tu_cluster_start_nodev(s->c, s->i, 0, s->args);
    return NULL;
}

void tu_cluster_start_together(tu_cluster *c, int nodes, int replicas,
                               const char *const *common,
                               const char *const *const *extra)
{
    pid_t zk = (pid_t)tu_cluster_zk_pid(c);
    char base[32], rs[8];
    int attempt, i, k;

    snprintf(base, sizeof base, "%s", c->name);
    snprintf(rs, sizeof rs, "%d", replicas);
    for (attempt = 0; attempt < 4; attempt++) {
        struct starter s[TU_CLUSTER_MAX];
        if (attempt > 0)
            snprintf(c->name, sizeof c->name, "%.24s-r%d", base, attempt);
        ck_assert_int_eq(kill(zk, SIGSTOP), 0);
        for (i = 0; i < nodes; i++) {
            int n = 0;
            s[i].c = c;
            s[i].i = i;
            s[i].args[n++] = "--replicas";
            s[i].args[n++] = rs;
            for (k = 0; common != NULL && common[k] != NULL && n < 30; k++)
                s[i].args[n++] = common[k];
            for (k = 0; extra != NULL && extra[i] != NULL &&
                        extra[i][k] != NULL && n < 38;
                 k++)
                s[i].args[n++] = extra[i][k];
            s[i].args[n] = NULL;
            ck_assert_int_eq(pthread_create(&s[i].t, NULL, start_main, &s[i]),
                             0);
        }
        for (i = 0; i < nodes; i++)
            pthread_join(s[i].t, NULL);
        tu_sleep_ms(300); /* their connects wait in ZooKeeper's backlog */
        ck_assert_int_eq(kill(zk, SIGCONT), 0);
        for (i = 0; i < nodes; i++)
            if (s[i].rc != 0) {
                tu_cluster_dump_logs(c);
                ck_abort_msg("n%d did not start", i);
            }
        if (tu_map_wait_settled(c, nodes < replicas ? nodes : replicas))
            return;
        fprintf(stderr, "the cluster came up without every node in the "
                        "first placement; starting another\n");
        for (i = 0; i < nodes; i++) {
            char dir[600];
            tu_keeld_stop(&c->nodes[i], SIGKILL);
            tu_keeld_free(&c->nodes[i]);
            snprintf(dir, sizeof dir, "%s/n%d", c->dir, i);
            tu_rmrf(dir);
        }
    }
    tu_cluster_dump_logs(c);
    ck_abort_msg("no cluster with every unit on %d replicas in sync",
                 replicas);
}
