/* Controller election: create, list, watch the predecessor. */
#include "coordinator/election.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "keel.h"

enum { E_IDLE = 0, E_CREATING, E_LISTING, E_WATCHING, E_LEADER, E_FAILED };

static int list(keel_election *e);

int64_t keel_election_seq(const char *name)
{
    size_t len = strlen(name), i;
    int64_t v = 0;

    /* n_ + 16 hex + _ + 10 digits */
    if (len != 2 + 16 + 1 + 10 || strncmp(name, "n_", 2) != 0 ||
        name[18] != '_')
        return -1;
    for (i = 2; i < 18; i++)
        if (!((name[i] >= '0' && name[i] <= '9') ||
              (name[i] >= 'a' && name[i] <= 'f')))
            return -1;
    for (i = 19; i < len; i++) {
        if (name[i] < '0' || name[i] > '9')
            return -1;
        v = v * 10 + (name[i] - '0');
    }
    return v;
}

static void fail(keel_election *e, int rc)
{
    if (rc == KEEL_ECONNLOSS) {
        e->stalled = 1;
        return;
    }
    e->state = E_FAILED;
    e->cb(e, rc, e->arg);
}

static void created(keel_zk *zk, int rc, const char *path,
                    const keel_zk_stat *st, void *arg)
{
    keel_election *e = arg;

    (void)zk;
    (void)st;
    e->busy = 0;
    if (rc != 0) {
        /* On connection loss the node may exist: resume() lists first. */
        fail(e, rc);
        return;
    }
    snprintf(e->path, sizeof e->path, "%s", path);
    e->seq = keel_election_seq(strrchr(path, '/') + 1);
    if ((rc = list(e)) != 0)
        fail(e, rc);
}

static int create(keel_election *e)
{
    char p[KEEL_ZK_PATH_MAX];
    int rc;

    keel_layout_path(e->layout, p, "election", e->prefix, NULL);
    e->state = E_CREATING;
    rc = keel_zk_create(e->zk, p, e->node, strlen(e->node),
                        KEEL_ZK_EPHEMERAL | KEEL_ZK_SEQUENTIAL, created, e);
    if (rc == 0)
        e->busy = 1;
    return rc;
}

static void predecessor_watch(keel_zk *zk, int event, const char *path,
                              void *arg)
{
    keel_election *e = arg;
    int rc;

    (void)zk;
    (void)event;
    if (e->state != E_WATCHING || strcmp(path, e->watching) != 0 || e->busy)
        return;
    if ((rc = list(e)) != 0)
        fail(e, rc);
}

static void predecessor_checked(keel_zk *zk, int rc, const keel_zk_stat *st,
                                void *arg)
{
    keel_election *e = arg;

    (void)zk;
    (void)st;
    e->busy = 0;
    if (rc == KEEL_ENOTFOUND) {
        /* Gone before the watch was set: look again. */
        if ((rc = list(e)) != 0)
            fail(e, rc);
        return;
    }
    if (rc != 0)
        fail(e, rc);
}

static void listed(keel_zk *zk, int rc, size_t count,
                   const char *const *names, void *arg)
{
    keel_election *e = arg;
    const char *pred = NULL, *mine = NULL;
    int64_t pred_seq = -1;
    size_t i;

    e->busy = 0;
    if (rc != 0) {
        fail(e, rc);
        return;
    }
    for (i = 0; i < count; i++) {
        int64_t s = keel_election_seq(names[i]);
        if (s < 0)
            continue;
        if (e->path[0] == '\0' &&
            strncmp(names[i], e->prefix, strlen(e->prefix)) == 0) {
            /* our node from a create that lost its answer */
            keel_layout_path(e->layout, e->path, "election", names[i], NULL);
            e->seq = s;
        }
    }
    if (e->path[0] == '\0') {
        if ((rc = create(e)) != 0)
            fail(e, rc);
        return;
    }
    mine = strrchr(e->path, '/') + 1;
    for (i = 0; i < count; i++) {
        int64_t s = keel_election_seq(names[i]);
        if (s >= 0 && s < e->seq && s > pred_seq) {
            pred_seq = s;
            pred = names[i];
        }
    }
    {
        int present = 0;
        for (i = 0; i < count; i++)
            if (strcmp(names[i], mine) == 0)
                present = 1;
        if (!present) {
            /* Our candidate is gone while the session lives: only an
             * operator deletes it. Stand again. */
            keel_warn("cluster: election node %s vanished; standing again",
                      e->path);
            e->path[0] = '\0';
            if ((rc = create(e)) != 0)
                fail(e, rc);
            return;
        }
    }
    if (pred == NULL) {
        e->state = E_LEADER;
        keel_info("cluster: %s elected controller (%s)", e->node, mine);
        e->cb(e, 0, e->arg);
        return;
    }
    e->state = E_WATCHING;
    keel_layout_path(e->layout, e->watching, "election", pred, NULL);
    rc = keel_zk_exists(zk, e->watching, predecessor_watch, e,
                        predecessor_checked, e);
    if (rc != 0)
        fail(e, rc);
    else
        e->busy = 1;
}

static int list(keel_election *e)
{
    char p[KEEL_ZK_PATH_MAX];
    int rc;

    e->state = E_LISTING;
    keel_layout_path(e->layout, p, "election", NULL, NULL);
    rc = keel_zk_children(e->zk, p, NULL, NULL, listed, e);
    if (rc == 0)
        e->busy = 1;
    return rc;
}

void keel_election_init(keel_election *e, keel_zk *zk,
                        const keel_layout *layout, const char *node,
                        keel_election_cb cb, void *arg)
{
    memset(e, 0, sizeof *e);
    e->zk = zk;
    e->layout = layout;
    strncpy(e->node, node, KEEL_NAME_MAX);
    e->cb = cb;
    e->arg = arg;
}

int keel_election_start(keel_election *e)
{
    int64_t sid = keel_zk_session_id(e->zk);

    if (sid == 0)
        return KEEL_ESESSION;
    keel_election_reset(e);
    snprintf(e->prefix, sizeof e->prefix, "n_%016llx_",
             (unsigned long long)sid);
    return create(e);
}

void keel_election_resume(keel_election *e)
{
    int rc;

    if (!e->stalled || e->busy)
        return;
    e->stalled = 0;
    /* Listing first finds a node a lost create may have made. */
    if ((rc = list(e)) != 0)
        fail(e, rc);
}

void keel_election_reset(keel_election *e)
{
    e->state = E_IDLE;
    e->busy = e->stalled = 0;
    e->path[0] = '\0';
    e->watching[0] = '\0';
    e->seq = -1;
}

int keel_election_is_leader(const keel_election *e)
{
    return e->state == E_LEADER;
}
