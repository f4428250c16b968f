/* The in-memory ZooKeeper of zk_fake.h. Small and linear on purpose: test
 * trees hold tens of nodes, and obvious code is what a fake needs to be
 * trusted. Writes (single or multi) run as one transaction: the tree is
 * copied first and put back if an op fails, and watch triggers are only
 * fired when the transaction commits. */
#include "coordinator/zk_fake.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"

enum { W_DATA = 1, W_CHILD = 2 };

enum {
    C_IDLE = 0,     /* no session */
    C_CONNECTED,
    C_DISCONNECTED,
    C_EXPIRED       /* the client knows its session is gone */
};

enum {
    D_SESSION = 1,
    D_WATCH,
    D_CREATE,
    D_VOID,
    D_DATA,
    D_STAT,
    D_CHILDREN,
    D_MULTI
};

typedef struct fnode {
    char *path;
    unsigned char *data;
    size_t len;
    keel_zk_stat st; /* num_children is computed when read */
} fnode;

typedef struct fclient fclient;

typedef struct fwatch {
    struct fwatch *next;
    fclient *c;
    int kind;
    keel_zk_watch_cb cb;
    void *arg;
    char *path;
} fwatch;

typedef struct fdeliv {
    struct fdeliv *next;
    fclient *c;
    int kind;
    int rc;
    int event;  /* D_SESSION, D_WATCH */
    char *path; /* D_WATCH, D_CREATE */
    unsigned char *data;
    size_t len;
    keel_zk_stat st;
    int has_st;
    char **names; /* D_CHILDREN */
    size_t nnames;
    keel_zk_op_result *results; /* D_MULTI, paths owned via rpaths */
    char **rpaths;
    size_t n, failed;
    union {
        keel_zk_watch_cb watch;
        keel_zk_create_cb create;
        keel_zk_void_cb v;
        keel_zk_data_cb data;
        keel_zk_stat_cb stat;
        keel_zk_children_cb children;
        keel_zk_multi_cb multi;
    } cb;
    void *arg;
} fdeliv;

struct fclient {
    keel_zk base;
    keel_zk_fake *f;
    fclient *next;
    int state;
    int64_t session;  /* server-side session, 0 if none */
    int server_dead;  /* expired on the server; the client learns later */
    int timeout_ms;
    uint64_t disconnected_at;
    keel_zk_session_cb cb;
    void *arg;
    int held;
    int fail_rc, fail_applied;
    char *swallow; /* the answer to a create of this path is not delivered */
    uint64_t requests;
    fdeliv *parked; /* watch events awaiting reconnection, in order */
    int zombie;     /* destroyed during its own callback */
    /* Cut off from the leader (keel_zk_fake_cut_off): since cut_at, and
     * once a request the leader must see came, every answer waits in
     * `stalled`, in order, until the disconnection. */
    int cut_off, stalling;
    uint64_t cut_at;
    fdeliv *stalled;
};

typedef struct trigger {
    struct trigger *next;
    char *path;
    int kinds;
    int event;
} trigger;

struct keel_zk_fake {
    fnode **nodes;
    size_t nnodes, cap;
    int64_t zxid;
    uint64_t now;
    int64_t next_session;
    fwatch *watches;
    fdeliv *head, *tail;
    size_t queued;
    uint64_t rng;
    fclient *clients;
    fclient *delivering;
    trigger *triggers; /* of the transaction being applied */
    int min_timeout, max_timeout; /* what connect() negotiates; 0: any */
};

/* ------------------------------------------------------------- nodes */

static fnode *node_find(keel_zk_fake *f, const char *path)
{
    size_t i;

    for (i = 0; i < f->nnodes; i++)
        if (strcmp(f->nodes[i]->path, path) == 0)
            return f->nodes[i];
    return NULL;
}

static void node_free(fnode *n)
{
    if (n == NULL)
        return;
    free(n->path);
    free(n->data);
    free(n);
}

/* The parent of "/a/b" is "/a"; of "/a" it is "/". Writes into buf. */
static void parent_of(const char *path, char *buf, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t len = (size_t)(slash - path);

    if (len == 0)
        len = 1;
    if (len >= cap)
        len = cap - 1;
    memcpy(buf, path, len);
    buf[len] = '\0';
}

static int is_child_of(const char *path, const char *parent)
{
    size_t pl = strlen(parent);

    if (strcmp(path, "/") == 0)
        return 0;
    if (strcmp(parent, "/") == 0)
        return path[0] == '/' && strchr(path + 1, '/') == NULL;
    return strncmp(path, parent, pl) == 0 && path[pl] == '/' &&
           strchr(path + pl + 1, '/') == NULL;
}

static int count_children(keel_zk_fake *f, const char *path)
{
    size_t i;
    int n = 0;

    for (i = 0; i < f->nnodes; i++)
        if (is_child_of(f->nodes[i]->path, path))
            n++;
    return n;
}

static void stat_of(keel_zk_fake *f, const fnode *n, keel_zk_stat *out)
{
    *out = n->st;
    out->data_length = (int32_t)n->len;
    out->num_children = count_children(f, n->path);
}

static int valid_path(const char *path, int sequential)
{
    size_t len, i;

    if (path == NULL || path[0] != '/')
        return 0;
    len = strlen(path);
    if (len >= KEEL_ZK_PATH_MAX - 12)
        return 0;
    if (len == 1)
        return 1;
    if (path[len - 1] == '/' && !sequential)
        return 0;
    for (i = 1; i < len; i++)
        if ((path[i] == '/' && path[i - 1] == '/') ||
            (unsigned char)path[i] < 0x20)
            return 0;
    return 1;
}

static int node_insert(keel_zk_fake *f, fnode *n)
{
    if (f->nnodes == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        fnode **nn = realloc(f->nodes, cap * sizeof *nn);
        if (nn == NULL)
            return KEEL_ENOMEM;
        f->nodes = nn;
        f->cap = cap;
    }
    f->nodes[f->nnodes++] = n;
    return 0;
}

static void node_remove(keel_zk_fake *f, fnode *n)
{
    size_t i;

    for (i = 0; i < f->nnodes; i++)
        if (f->nodes[i] == n) {
            f->nodes[i] = f->nodes[--f->nnodes];
            break;
        }
    node_free(n);
}

static fnode *node_dup(const fnode *n)
{
    fnode *d = calloc(1, sizeof *d);

    if (d == NULL)
        return NULL;
    *d = *n;
    d->path = strdup(n->path);
    d->data = NULL;
    if (n->len > 0) {
        d->data = malloc(n->len);
        if (d->data != NULL)
            memcpy(d->data, n->data, n->len);
    }
    if (d->path == NULL || (n->len > 0 && d->data == NULL)) {
        node_free(d);
        return NULL;
    }
    return d;
}

/* ---------------------------------------------------------- delivery */

static void deliv_free(fdeliv *d)
{
    size_t i;

    free(d->path);
    free(d->data);
    for (i = 0; i < d->nnames; i++)
        free(d->names[i]);
    free(d->names);
    if (d->rpaths != NULL)
        for (i = 0; i < d->n; i++)
            free(d->rpaths[i]);
    free(d->rpaths);
    free(d->results);
    free(d);
}

static void enqueue(keel_zk_fake *f, fdeliv *d)
{
    d->next = NULL;
    if (f->tail != NULL)
        f->tail->next = d;
    else
        f->head = d;
    f->tail = d;
    f->queued++;
}

/* Takes every queued delivery of c out of the queue, in order. */
static fdeliv *extract(keel_zk_fake *f, fclient *c)
{
    fdeliv **pp = &f->head, *out = NULL, **tail = &out;

    f->tail = NULL;
    while (*pp != NULL) {
        fdeliv *d = *pp;
        if (d->c == c) {
            *pp = d->next;
            d->next = NULL;
            *tail = d;
            tail = &d->next;
            f->queued--;
        } else {
            f->tail = d;
            pp = &d->next;
        }
    }
    return out;
}

static void free_list(fdeliv *d)
{
    while (d != NULL) {
        fdeliv *next = d->next;
        deliv_free(d);
        d = next;
    }
}

static fdeliv *deliv_new(fclient *c, int kind)
{
    fdeliv *d = calloc(1, sizeof *d);

    if (d == NULL) {
        /* A test helper may abort: there is no way to report this. */
        fprintf(stderr, "zk_fake: out of memory\n");
        abort();
    }
    d->c = c;
    d->kind = kind;
    return d;
}

static void session_event(fclient *c, int event)
{
    fdeliv *d = deliv_new(c, D_SESSION);

    d->event = event;
    enqueue(c->f, d);
}

static void deliver(keel_zk_fake *f, fdeliv *d)
{
    fclient *c = d->c;
    keel_zk *zk = &c->base;

    f->delivering = c;
    switch (d->kind) {
    case D_SESSION:
        if (c->cb != NULL)
            c->cb(zk, d->event, c->arg);
        break;
    case D_WATCH:
        d->cb.watch(zk, d->event, d->path, d->arg);
        break;
    case D_CREATE:
        d->cb.create(zk, d->rc, d->rc == 0 ? d->path : NULL,
                     d->rc == 0 ? &d->st : NULL, d->arg);
        break;
    case D_VOID:
        d->cb.v(zk, d->rc, d->arg);
        break;
    case D_DATA:
        d->cb.data(zk, d->rc, d->rc == 0 ? (d->data ? (void *)d->data : "")
                                          : NULL,
                   d->len, d->has_st ? &d->st : NULL, d->arg);
        break;
    case D_STAT:
        d->cb.stat(zk, d->rc, d->has_st ? &d->st : NULL, d->arg);
        break;
    case D_CHILDREN:
        d->cb.children(zk, d->rc, d->nnames, (const char *const *)d->names,
                       d->arg);
        break;
    case D_MULTI:
        d->cb.multi(zk, d->rc, d->failed, d->rc == 0 ? d->results : NULL,
                    d->n, d->arg);
        break;
    }
    f->delivering = NULL;
    deliv_free(d);
    if (c->zombie) {
        free(c->swallow);
        free(c);
    }
}

static uint64_t rng_next(keel_zk_fake *f)
{
    /* splitmix64: reproducible from the seed */
    uint64_t z = (f->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Unlinks and returns the next delivery, or NULL. Per client FIFO: a
 * client's later events never overtake its first one. */
static fdeliv *next_delivery(keel_zk_fake *f)
{
    fdeliv **pp, *d, **cands[64];
    fclient *seen[64];
    size_t nc = 0, nseen = 0, i, pick;

    for (pp = &f->head; *pp != NULL; pp = &(*pp)->next) {
        int dup = 0;
        d = *pp;
        for (i = 0; i < nseen; i++)
            if (seen[i] == d->c)
                dup = 1;
        if (dup)
            continue;
        if (nseen < 64)
            seen[nseen++] = d->c;
        if (d->c->held)
            continue;
        if (f->rng == 0) {
            nc = 1;
            cands[0] = pp;
            break;
        }
        if (nc < 64)
            cands[nc++] = pp;
    }
    if (nc == 0)
        return NULL;
    pick = f->rng == 0 ? 0 : (size_t)(rng_next(f) % nc);
    pp = cands[pick];
    d = *pp;
    *pp = d->next;
    if (f->tail == d) {
        fdeliv *t = f->head;
        while (t != NULL && t->next != NULL)
            t = t->next;
        f->tail = t;
    }
    f->queued--;
    d->next = NULL;
    return d;
}

int keel_zk_fake_step(keel_zk_fake *f)
{
    fdeliv *d = next_delivery(f);

    if (d == NULL)
        return 0;
    deliver(f, d);
    return 1;
}

size_t keel_zk_fake_run(keel_zk_fake *f, size_t max)
{
    size_t n = 0;

    while ((max == 0 || n < max) && keel_zk_fake_step(f))
        n++;
    return n;
}

size_t keel_zk_fake_pending(const keel_zk_fake *f)
{
    const fclient *c;
    const fdeliv *d;
    size_t n = f->queued;

    for (c = f->clients; c != NULL; c = c->next) {
        for (d = c->parked; d != NULL; d = d->next)
            n++;
        for (d = c->stalled; d != NULL; d = d->next)
            n++;
    }
    return n;
}

void keel_zk_fake_shuffle(keel_zk_fake *f, uint64_t seed)
{
    f->rng = seed;
}

/* ----------------------------------------------------------- watches */

static void watch_add(keel_zk_fake *f, fclient *c, int kind, const char *path,
                      keel_zk_watch_cb cb, void *arg)
{
    fwatch *w = calloc(1, sizeof *w);

    if (w == NULL || (w->path = strdup(path)) == NULL) {
        fprintf(stderr, "zk_fake: out of memory\n");
        abort();
    }
    w->c = c;
    w->kind = kind;
    w->cb = cb;
    w->arg = arg;
    w->next = f->watches;
    f->watches = w;
}

static void watch_event_to(fclient *c, int event, const char *path,
                           keel_zk_watch_cb cb, void *arg)
{
    fdeliv *d = deliv_new(c, D_WATCH);

    d->event = event;
    d->path = strdup(path);
    d->cb.watch = cb;
    d->arg = arg;
    if (d->path == NULL) {
        fprintf(stderr, "zk_fake: out of memory\n");
        abort();
    }
    if (c->state == C_DISCONNECTED || c->cut_off) {
        fdeliv **pp = &c->parked;
        while (*pp != NULL)
            pp = &(*pp)->next;
        *pp = d;
    } else {
        enqueue(c->f, d);
    }
}

/* Fires and removes every watch of `kinds` on path. Watches are kept
 * newest first; fire them oldest first. */
static void fire(keel_zk_fake *f, const char *path, int kinds, int event)
{
    fwatch **pp = &f->watches, *hit = NULL;

    while (*pp != NULL) {
        fwatch *w = *pp;
        if ((w->kind & kinds) && strcmp(w->path, path) == 0) {
            *pp = w->next;
            w->next = hit;
            hit = w;
        } else {
            pp = &w->next;
        }
    }
    while (hit != NULL) {
        fwatch *w = hit;
        hit = w->next;
        watch_event_to(w->c, event, path, w->cb, w->arg);
        free(w->path);
        free(w);
    }
}

static void trigger_add(keel_zk_fake *f, const char *path, int kinds,
                        int event)
{
    trigger *t = calloc(1, sizeof *t), **pp = &f->triggers;

    if (t == NULL || (t->path = strdup(path)) == NULL) {
        fprintf(stderr, "zk_fake: out of memory\n");
        abort();
    }
    t->kinds = kinds;
    t->event = event;
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = t;
}

static void triggers_finish(keel_zk_fake *f, int commit)
{
    while (f->triggers != NULL) {
        trigger *t = f->triggers;
        f->triggers = t->next;
        if (commit)
            fire(f, t->path, t->kinds, t->event);
        free(t->path);
        free(t);
    }
}

static void watches_drop_client(keel_zk_fake *f, fclient *c)
{
    fwatch **pp = &f->watches;

    while (*pp != NULL) {
        fwatch *w = *pp;
        if (w->c == c) {
            *pp = w->next;
            free(w->path);
            free(w);
        } else {
            pp = &w->next;
        }
    }
}

/* -------------------------------------------------------- operations */

static int op_create(keel_zk_fake *f, fclient *c, const keel_zk_op *op,
                     char **created, keel_zk_stat *st)
{
    char parent[KEEL_ZK_PATH_MAX], path[KEEL_ZK_PATH_MAX];
    fnode *p, *n;
    int rc;

    if (!valid_path(op->path, op->flags & KEEL_ZK_SEQUENTIAL) ||
        strcmp(op->path, "/") == 0)
        return KEEL_EINVAL;
    if (op->len > KEEL_ZK_MAX_DATA)
        return KEEL_ETOOBIG;
    parent_of(op->path, parent, sizeof parent);
    p = node_find(f, parent);
    if (p == NULL)
        return KEEL_ENOTFOUND;
    if (p->st.ephemeral_owner != 0)
        return KEEL_EINVAL;
    if (op->flags & KEEL_ZK_SEQUENTIAL)
        snprintf(path, sizeof path, "%s%010d", op->path, p->st.cversion);
    else
        snprintf(path, sizeof path, "%s", op->path);
    if (node_find(f, path) != NULL)
        return KEEL_EEXIST;
    n = calloc(1, sizeof *n);
    if (n == NULL || (n->path = strdup(path)) == NULL) {
        node_free(n);
        return KEEL_ENOMEM;
    }
    if (op->len > 0) {
        n->data = malloc(op->len);
        if (n->data == NULL) {
            node_free(n);
            return KEEL_ENOMEM;
        }
        memcpy(n->data, op->data, op->len);
        n->len = op->len;
    }
    n->st.czxid = n->st.mzxid = f->zxid;
    n->st.ephemeral_owner =
        (op->flags & KEEL_ZK_EPHEMERAL) && c != NULL ? c->session : 0;
    if ((rc = node_insert(f, n)) != 0) {
        node_free(n);
        return rc;
    }
    p->st.cversion++;
    trigger_add(f, path, W_DATA, KEEL_ZK_NODE_CREATED);
    trigger_add(f, parent, W_CHILD, KEEL_ZK_CHILDREN_CHANGED);
    if (created != NULL && (*created = strdup(path)) == NULL)
        return KEEL_ENOMEM;
    if (st != NULL)
        stat_of(f, n, st);
    return 0;
}

static int op_delete(keel_zk_fake *f, const keel_zk_op *op)
{
    char parent[KEEL_ZK_PATH_MAX];
    fnode *n = valid_path(op->path, 0) ? node_find(f, op->path) : NULL;
    fnode *p;

    if (!valid_path(op->path, 0) || strcmp(op->path, "/") == 0)
        return KEEL_EINVAL;
    if (n == NULL)
        return KEEL_ENOTFOUND;
    if (op->version != KEEL_ZK_ANY_VERSION && op->version != n->st.version)
        return KEEL_EBADVERSION;
    if (count_children(f, op->path) > 0)
        return KEEL_EEXIST;
    parent_of(op->path, parent, sizeof parent);
    p = node_find(f, parent);
    if (p != NULL)
        p->st.cversion++;
    trigger_add(f, op->path, W_DATA | W_CHILD, KEEL_ZK_NODE_DELETED);
    trigger_add(f, parent, W_CHILD, KEEL_ZK_CHILDREN_CHANGED);
    node_remove(f, n);
    return 0;
}

static int op_set(keel_zk_fake *f, const keel_zk_op *op, keel_zk_stat *st)
{
    fnode *n = valid_path(op->path, 0) ? node_find(f, op->path) : NULL;
    unsigned char *data = NULL;

    if (!valid_path(op->path, 0))
        return KEEL_EINVAL;
    if (op->len > KEEL_ZK_MAX_DATA)
        return KEEL_ETOOBIG;
    if (n == NULL)
        return KEEL_ENOTFOUND;
    if (op->version != KEEL_ZK_ANY_VERSION && op->version != n->st.version)
        return KEEL_EBADVERSION;
    if (op->len > 0) {
        data = malloc(op->len);
        if (data == NULL)
            return KEEL_ENOMEM;
        memcpy(data, op->data, op->len);
    }
    free(n->data);
    n->data = data;
    n->len = op->len;
    n->st.version++;
    n->st.mzxid = f->zxid;
    trigger_add(f, op->path, W_DATA, KEEL_ZK_NODE_CHANGED);
    if (st != NULL)
        stat_of(f, n, st);
    return 0;
}

static int op_check(keel_zk_fake *f, const keel_zk_op *op)
{
    fnode *n = valid_path(op->path, 0) ? node_find(f, op->path) : NULL;

    if (n == NULL)
        return KEEL_ENOTFOUND;
    if (op->version != KEEL_ZK_ANY_VERSION && op->version != n->st.version)
        return KEEL_EBADVERSION;
    return 0;
}

/* Applies ops as one transaction (one zxid). On failure the tree is put
 * back as it was and *failed is the failing op's index. */
static int apply(keel_zk_fake *f, fclient *c, const keel_zk_op *ops, size_t n,
                 keel_zk_op_result *res, char **paths, size_t *failed)
{
    fnode **saved;
    size_t i, nsaved = f->nnodes;
    int64_t zxid = f->zxid;
    int rc = 0;

    saved = calloc(nsaved ? nsaved : 1, sizeof *saved);
    if (saved == NULL)
        return KEEL_ENOMEM;
    for (i = 0; i < nsaved; i++)
        if ((saved[i] = node_dup(f->nodes[i])) == NULL) {
            while (i > 0)
                node_free(saved[--i]);
            free(saved);
            return KEEL_ENOMEM;
        }
    f->zxid++;
    *failed = n;
    for (i = 0; i < n && rc == 0; i++) {
        keel_zk_stat *st = res != NULL ? &res[i].stat : NULL;
        switch (ops[i].type) {
        case KEEL_ZK_OP_CREATE:
            rc = op_create(f, c, &ops[i], paths ? &paths[i] : NULL, st);
            break;
        case KEEL_ZK_OP_DELETE:
            rc = op_delete(f, &ops[i]);
            break;
        case KEEL_ZK_OP_SET:
            rc = op_set(f, &ops[i], st);
            break;
        case KEEL_ZK_OP_CHECK:
            rc = op_check(f, &ops[i]);
            break;
        default:
            rc = KEEL_EINVAL;
        }
        if (rc != 0)
            *failed = i;
    }
    if (rc != 0) {
        for (i = 0; i < f->nnodes; i++)
            node_free(f->nodes[i]);
        memcpy(f->nodes, saved, nsaved * sizeof *saved);
        f->nnodes = nsaved;
        f->zxid = zxid;
        free(saved);
        triggers_finish(f, 0);
        return rc;
    }
    for (i = 0; i < nsaved; i++)
        node_free(saved[i]);
    free(saved);
    triggers_finish(f, 1);
    return 0;
}

/* Deletes the session's ephemeral nodes, firing watches, as the server
 * does when a session ends. */
static void session_end(keel_zk_fake *f, fclient *c)
{
    int64_t session = c->session;
    size_t i;

    if (session == 0)
        return;
    watches_drop_client(f, c);
    for (;;) {
        fnode *eph = NULL;
        for (i = 0; i < f->nnodes; i++)
            if (f->nodes[i]->st.ephemeral_owner == session)
                eph = f->nodes[i];
        if (eph == NULL)
            break;
        {
            keel_zk_op op = {KEEL_ZK_OP_DELETE, eph->path, NULL, 0,
                             KEEL_ZK_ANY_VERSION, 0};
            size_t failed;
            char *path = strdup(eph->path);
            op.path = path;
            if (path == NULL || apply(f, c, &op, 1, NULL, NULL, &failed) != 0) {
                fprintf(stderr, "zk_fake: cannot delete an ephemeral node\n");
                abort();
            }
            free(path);
        }
    }
    c->session = 0;
}

/* --------------------------------------------------------- the client */

/* Checks the client's state before a request. Returns 0 to go on, a code
 * to return at once, or 1 with *async_rc set when the request must fail
 * through its callback (disconnected, an injected failure, or cut off:
 * then it is not applied and its answer waits, see submit()). validated:
 * the ZooKeeper leader must see the request (a write or a sync). */
static int admit(fclient *c, int validated, int *async_rc, int *apply_anyway)
{
    c->requests++;
    *apply_anyway = 0;
    if (c->state == C_IDLE || c->state == C_EXPIRED)
        return KEEL_ESESSION;
    if (c->state == C_DISCONNECTED) {
        *async_rc = KEEL_ECONNLOSS;
        return 1;
    }
    if (c->cut_off && (validated || c->stalling)) {
        /* Never answered while cut off; what the disconnection says. */
        c->stalling = 1;
        *async_rc = KEEL_ECONNLOSS;
        return 1;
    }
    if (c->fail_rc != 0) {
        *async_rc = c->fail_rc;
        *apply_anyway = c->fail_applied;
        c->fail_rc = 0;
        c->fail_applied = 0;
        return 1;
    }
    return 0;
}

/* Queues the answer to a request, or keeps it back while the client waits
 * for an answer the leader will never give (a server answers one session
 * in order). */
static void submit(fclient *c, fdeliv *d)
{
    fdeliv **pp;

    if (c->swallow != NULL && d->kind == D_CREATE && d->path != NULL &&
        strcmp(d->path, c->swallow) == 0) {
        free(c->swallow);
        c->swallow = NULL;
        deliv_free(d);
        return;
    }
    if (!c->stalling) {
        enqueue(c->f, d);
        return;
    }
    for (pp = &c->stalled; *pp != NULL; pp = &(*pp)->next)
        ;
    d->next = NULL;
    *pp = d;
}

static int fake_create(keel_zk *zk, const char *path, const void *data,
                       size_t len, int flags, keel_zk_create_cb cb, void *arg)
{
    fclient *c = (fclient *)zk;
    keel_zk_op op = {KEEL_ZK_OP_CREATE, path, data, len, 0, flags};
    keel_zk_op_result res;
    char *created = NULL;
    size_t failed;
    int arc = 0, anyway, rc;
    fdeliv *d;

    if (path == NULL || cb == NULL)
        return KEEL_EINVAL;
    if ((rc = admit(c, 1, &arc, &anyway)) < 0)
        return rc;
    memset(&res, 0, sizeof res);
    if (rc == 0 || anyway)
        rc = apply(c->f, c, &op, 1, &res, &created, &failed);
    d = deliv_new(c, D_CREATE);
    d->rc = arc != 0 ? arc : rc;
    d->path = created;
    d->st = res.stat;
    d->cb.create = cb;
    d->arg = arg;
    submit(c, d);
    return 0;
}

static int fake_remove(keel_zk *zk, const char *path, int32_t version,
                       keel_zk_void_cb cb, void *arg)
{
    fclient *c = (fclient *)zk;
    keel_zk_op op = {KEEL_ZK_OP_DELETE, path, NULL, 0, version, 0};
    size_t failed;
    int arc = 0, anyway, rc;
    fdeliv *d;

    if (path == NULL || cb == NULL)
        return KEEL_EINVAL;
    if ((rc = admit(c, 1, &arc, &anyway)) < 0)
        return rc;
    if (rc == 0 || anyway)
        rc = apply(c->f, c, &op, 1, NULL, NULL, &failed);
    d = deliv_new(c, D_VOID);
    d->rc = arc != 0 ? arc : rc;
    d->cb.v = cb;
    d->arg = arg;
    submit(c, d);
    return 0;
}

static int fake_set(keel_zk *zk, const char *path, const void *data,
                    size_t len, int32_t version, keel_zk_stat_cb cb, void *arg)
{
    fclient *c = (fclient *)zk;
    keel_zk_op op = {KEEL_ZK_OP_SET, path, data, len, version, 0};
    keel_zk_op_result res;
    size_t failed;
    int arc = 0, anyway, rc;
    fdeliv *d;

    if (path == NULL || cb == NULL)
        return KEEL_EINVAL;
    if ((rc = admit(c, 1, &arc, &anyway)) < 0)
        return rc;
    memset(&res, 0, sizeof res);
    if (rc == 0 || anyway)
        rc = apply(c->f, c, &op, 1, &res, NULL, &failed);
    d = deliv_new(c, D_STAT);
    d->rc = arc != 0 ? arc : rc;
    d->st = res.stat;
    d->has_st = d->rc == 0;
    d->cb.stat = cb;
    d->arg = arg;
    submit(c, d);
    return 0;
}

static int fake_get(keel_zk *zk, const char *path, keel_zk_watch_cb watch,
                    void *watch_arg, keel_zk_data_cb cb, void *arg)
{
    fclient *c = (fclient *)zk;
    int arc = 0, anyway, rc;
    fdeliv *d;

    if (path == NULL || cb == NULL)
        return KEEL_EINVAL;
    if ((rc = admit(c, 0, &arc, &anyway)) < 0)
        return rc;
    d = deliv_new(c, D_DATA);
    d->cb.data = cb;
    d->arg = arg;
    if (rc == 0) {
        fnode *n = valid_path(path, 0) ? node_find(c->f, path) : NULL;
        if (!valid_path(path, 0)) {
            d->rc = KEEL_EINVAL;
        } else if (n == NULL) {
            d->rc = KEEL_ENOTFOUND;
        } else {
            if (n->len > 0) {
                d->data = malloc(n->len);
                if (d->data == NULL) {
                    deliv_free(d);
                    return KEEL_ENOMEM;
                }
                memcpy(d->data, n->data, n->len);
            }
            d->len = n->len;
            stat_of(c->f, n, &d->st);
            d->has_st = 1;
            if (watch != NULL)
                watch_add(c->f, c, W_DATA, path, watch, watch_arg);
        }
    } else {
        d->rc = arc;
    }
    submit(c, d);
    return 0;
}

static int fake_exists(keel_zk *zk, const char *path, keel_zk_watch_cb watch,
                       void *watch_arg, keel_zk_stat_cb cb, void *arg)
{
    fclient *c = (fclient *)zk;
    int arc = 0, anyway, rc;
    fdeliv *d;

    if (path == NULL || cb == NULL)
        return KEEL_EINVAL;
    if ((rc = admit(c, 0, &arc, &anyway)) < 0)
        return rc;
    d = deliv_new(c, D_STAT);
    d->cb.stat = cb;
    d->arg = arg;
    if (rc == 0) {
        fnode *n = valid_path(path, 0) ? node_find(c->f, path) : NULL;
        if (!valid_path(path, 0)) {
            d->rc = KEEL_EINVAL;
        } else {
            if (n == NULL) {
                d->rc = KEEL_ENOTFOUND;
            } else {
                stat_of(c->f, n, &d->st);
                d->has_st = 1;
            }
            if (watch != NULL)
                watch_add(c->f, c, W_DATA, path, watch, watch_arg);
        }
    } else {
        d->rc = arc;
    }
    submit(c, d);
    return 0;
}

static int fake_children(keel_zk *zk, const char *path, keel_zk_watch_cb watch,
                         void *watch_arg, keel_zk_children_cb cb, void *arg)
{
    fclient *c = (fclient *)zk;
    keel_zk_fake *f = c->f;
    int arc = 0, anyway, rc;
    fdeliv *d;

    if (path == NULL || cb == NULL)
        return KEEL_EINVAL;
    if ((rc = admit(c, 0, &arc, &anyway)) < 0)
        return rc;
    d = deliv_new(c, D_CHILDREN);
    d->cb.children = cb;
    d->arg = arg;
    if (rc == 0) {
        fnode *n = valid_path(path, 0) ? node_find(f, path) : NULL;
        if (!valid_path(path, 0)) {
            d->rc = KEEL_EINVAL;
        } else if (n == NULL) {
            d->rc = KEEL_ENOTFOUND;
        } else {
            size_t i, k = 0, cnt = (size_t)count_children(f, path);
            d->names = calloc(cnt ? cnt : 1, sizeof *d->names);
            if (d->names == NULL) {
                deliv_free(d);
                return KEEL_ENOMEM;
            }
            for (i = 0; i < f->nnodes; i++) {
                const char *p = f->nodes[i]->path;
                if (!is_child_of(p, path))
                    continue;
                d->names[k] = strdup(strrchr(p, '/') + 1);
                if (d->names[k] == NULL) {
                    d->nnames = k;
                    deliv_free(d);
                    return KEEL_ENOMEM;
                }
                k++;
            }
            d->nnames = k;
            if (watch != NULL)
                watch_add(f, c, W_CHILD, path, watch, watch_arg);
        }
    } else {
        d->rc = arc;
    }
    submit(c, d);
    return 0;
}

static int fake_multi(keel_zk *zk, const keel_zk_op *ops, size_t n,
                      keel_zk_multi_cb cb, void *arg)
{
    fclient *c = (fclient *)zk;
    int arc = 0, anyway, rc;
    size_t i, failed = n;
    fdeliv *d;

    if ((ops == NULL && n > 0) || n == 0 || cb == NULL)
        return KEEL_EINVAL;
    for (i = 0; i < n; i++)
        if (ops[i].path == NULL)
            return KEEL_EINVAL;
    if ((rc = admit(c, 1, &arc, &anyway)) < 0)
        return rc;
    d = deliv_new(c, D_MULTI);
    d->cb.multi = cb;
    d->arg = arg;
    d->n = n;
    d->results = calloc(n, sizeof *d->results);
    d->rpaths = calloc(n, sizeof *d->rpaths);
    if (d->results == NULL || d->rpaths == NULL) {
        deliv_free(d);
        return KEEL_ENOMEM;
    }
    if (rc == 0 || anyway)
        rc = apply(c->f, c, ops, n, d->results, d->rpaths, &failed);
    if (arc != 0) {
        rc = arc;
        failed = n;
    }
    d->rc = rc;
    d->failed = rc == 0 ? n : failed;
    for (i = 0; i < n; i++)
        d->results[i].path = d->rpaths[i];
    submit(c, d);
    return 0;
}

static int fake_sync(keel_zk *zk, const char *path, keel_zk_void_cb cb,
                     void *arg)
{
    fclient *c = (fclient *)zk;
    int arc = 0, anyway, rc;
    fdeliv *d;

    if (path == NULL || cb == NULL || !valid_path(path, 0))
        return KEEL_EINVAL;
    if ((rc = admit(c, 1, &arc, &anyway)) < 0)
        return rc;
    d = deliv_new(c, D_VOID);
    d->rc = rc == 0 ? 0 : arc;
    d->cb.v = cb;
    d->arg = arg;
    submit(c, d);
    return 0;
}

static void drop_client_state(fclient *c)
{
    keel_zk_fake *f = c->f;

    free_list(extract(f, c));
    free_list(c->parked);
    c->parked = NULL;
    free_list(c->stalled);
    c->stalled = NULL;
    c->cut_off = c->stalling = 0;
    session_end(f, c);
    c->server_dead = 0;
    c->state = C_IDLE;
}

static int fake_connect(keel_zk *zk, int timeout_ms, keel_zk_session_cb cb,
                        void *arg)
{
    fclient *c = (fclient *)zk;
    keel_zk_fake *f = c->f;

    if (timeout_ms <= 0)
        return KEEL_EINVAL;
    drop_client_state(c);
    c->session = f->next_session++;
    /* As a server does: the request, within the server's bounds. */
    if (f->min_timeout > 0 && timeout_ms < f->min_timeout)
        timeout_ms = f->min_timeout;
    if (f->max_timeout > 0 && timeout_ms > f->max_timeout)
        timeout_ms = f->max_timeout;
    c->timeout_ms = timeout_ms;
    c->cb = cb;
    c->arg = arg;
    c->state = C_CONNECTED;
    session_event(c, KEEL_ZK_CONNECTED);
    return 0;
}

static void fake_close(keel_zk *zk)
{
    drop_client_state((fclient *)zk);
}

static void fake_destroy(keel_zk *zk)
{
    fclient *c = (fclient *)zk;
    keel_zk_fake *f = c->f;
    fclient **pp;

    drop_client_state(c);
    for (pp = &f->clients; *pp != NULL; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    if (f->delivering == c) {
        c->zombie = 1; /* freed when its callback returns */
    } else {
        free(c->swallow);
        free(c);
    }
}

static int64_t fake_session_id(keel_zk *zk)
{
    fclient *c = (fclient *)zk;

    return c->state == C_CONNECTED || c->state == C_DISCONNECTED ? c->session
                                                                 : 0;
}

static int fake_session_timeout(keel_zk *zk)
{
    return ((fclient *)zk)->timeout_ms;
}

/* The fake is one server: there is no other to go to. */
static int fake_drop_server(keel_zk *zk)
{
    (void)zk;
    return KEEL_ENOTFOUND;
}

static const struct keel_zk_ops fake_ops = {
    3,           fake_connect,  fake_close, fake_destroy,    fake_create,
    fake_remove, fake_get,      fake_set,   fake_exists,     fake_children,
    fake_multi,  fake_session_id, fake_session_timeout, fake_sync,
    fake_drop_server};

/* ---------------------------------------------------------- controls */

keel_zk_fake *keel_zk_fake_create(void)
{
    keel_zk_fake *f = calloc(1, sizeof *f);
    fnode *root;

    if (f == NULL)
        return NULL;
    root = calloc(1, sizeof *root);
    if (root == NULL || (root->path = strdup("/")) == NULL ||
        node_insert(f, root) != 0) {
        node_free(root);
        free(f->nodes);
        free(f);
        return NULL;
    }
    f->zxid = 1;
    f->next_session = 0x1000;
    return f;
}

void keel_zk_fake_destroy(keel_zk_fake *f)
{
    size_t i;

    if (f == NULL)
        return;
    while (f->clients != NULL)
        fake_destroy(&f->clients->base);
    free_list(f->head);
    while (f->watches != NULL) {
        fwatch *w = f->watches;
        f->watches = w->next;
        free(w->path);
        free(w);
    }
    for (i = 0; i < f->nnodes; i++)
        node_free(f->nodes[i]);
    free(f->nodes);
    free(f);
}

int keel_zk_fake_client(keel_zk_fake *f, keel_zk **out)
{
    fclient *c = calloc(1, sizeof *c);

    if (c == NULL)
        return KEEL_ENOMEM;
    c->base.ops = &fake_ops;
    c->f = f;
    c->next = f->clients;
    f->clients = c;
    *out = &c->base;
    return 0;
}

void keel_zk_fake_timeout_bounds(keel_zk_fake *f, int min_ms, int max_ms)
{
    f->min_timeout = min_ms;
    f->max_timeout = max_ms;
}

uint64_t keel_zk_fake_now(const keel_zk_fake *f)
{
    return f->now;
}

/* Server-side expiry; the client hears of it now if connected, else when
 * it reconnects. */
static void expire(fclient *c)
{
    keel_zk_fake *f = c->f;

    if (c->session == 0 || c->server_dead)
        return;
    session_end(f, c);
    if (c->state == C_CONNECTED && !c->cut_off) {
        fdeliv *pending = extract(f, c), *d;
        session_event(c, KEEL_ZK_EXPIRED);
        while (pending != NULL) {
            d = pending;
            pending = d->next;
            if (d->kind == D_WATCH || d->kind == D_SESSION) {
                deliv_free(d);
            } else {
                d->rc = KEEL_ESESSION;
                d->has_st = 0;
                enqueue(f, d);
            }
        }
        c->state = C_EXPIRED;
    } else {
        c->server_dead = 1;
        free_list(c->parked);
        c->parked = NULL;
    }
}

void keel_zk_fake_advance(keel_zk_fake *f, uint64_t ms)
{
    fclient *c;

    f->now += ms;
    for (c = f->clients; c != NULL; c = c->next)
        if (!c->server_dead &&
            ((c->state == C_DISCONNECTED &&
              f->now - c->disconnected_at >= (uint64_t)c->timeout_ms) ||
             (c->state == C_CONNECTED && c->cut_off &&
              f->now - c->cut_at >= (uint64_t)c->timeout_ms)))
            expire(c);
}

void keel_zk_fake_disconnect(keel_zk *zk)
{
    fclient *c = (fclient *)zk;
    keel_zk_fake *f = c->f;
    fdeliv *pending, *d, **park;

    if (c->state != C_CONNECTED)
        return;
    pending = extract(f, c);
    if (c->cut_off) {
        /* The server gave up on the leader: what waited fails like the
         * rest, after the answers already queued. */
        fdeliv **tail = &pending;
        while (*tail != NULL)
            tail = &(*tail)->next;
        *tail = c->stalled;
        c->stalled = NULL;
        c->cut_off = c->stalling = 0;
    }
    c->state = C_DISCONNECTED;
    c->disconnected_at = f->now;
    session_event(c, KEEL_ZK_DISCONNECTED);
    park = &c->parked;
    while (*park != NULL)
        park = &(*park)->next;
    while (pending != NULL) {
        d = pending;
        pending = d->next;
        d->next = NULL;
        if (d->kind == D_WATCH) {
            *park = d;
            park = &d->next;
        } else if (d->kind == D_SESSION) {
            enqueue(f, d);
        } else {
            /* The server applied it; the answer is lost. */
            d->rc = KEEL_ECONNLOSS;
            d->has_st = 0;
            if (d->kind == D_MULTI)
                d->failed = d->n;
            enqueue(f, d);
        }
    }
}

void keel_zk_fake_reconnect(keel_zk *zk)
{
    fclient *c = (fclient *)zk;
    keel_zk_fake *f = c->f;

    if (c->state != C_DISCONNECTED)
        return;
    if (c->server_dead) {
        c->server_dead = 0;
        c->state = C_EXPIRED;
        session_event(c, KEEL_ZK_EXPIRED);
        return;
    }
    c->state = C_CONNECTED;
    session_event(c, KEEL_ZK_CONNECTED);
    while (c->parked != NULL) {
        fdeliv *d = c->parked;
        c->parked = d->next;
        enqueue(f, d);
    }
}

void keel_zk_fake_expire(keel_zk *zk)
{
    expire((fclient *)zk);
}

void keel_zk_fake_cut_off(keel_zk *zk)
{
    fclient *c = (fclient *)zk;

    if (c->state != C_CONNECTED || c->cut_off)
        return;
    c->cut_off = 1;
    c->cut_at = c->f->now;
}

void keel_zk_fake_hold(keel_zk *zk, int held)
{
    ((fclient *)zk)->held = held;
}

void keel_zk_fake_fail_next(keel_zk *zk, int rc, int applied)
{
    fclient *c = (fclient *)zk;

    c->fail_rc = rc;
    c->fail_applied = applied;
}

uint64_t keel_zk_fake_requests(keel_zk *zk)
{
    return ((fclient *)zk)->requests;
}

void keel_zk_fake_swallow_create(keel_zk *zk, const char *path)
{
    fclient *c = (fclient *)zk;

    free(c->swallow);
    c->swallow = strdup(path);
}

void keel_zk_fake_lose_watches(keel_zk *zk, const char *prefix)
{
    fclient *c = (fclient *)zk;
    size_t pl = strlen(prefix);
    fwatch **pp = &c->f->watches;

    while (*pp != NULL) {
        fwatch *w = *pp;
        if (w->c == c && strncmp(w->path, prefix, pl) == 0 &&
            (w->path[pl] == '\0' || w->path[pl] == '/')) {
            *pp = w->next;
            free(w->path);
            free(w);
        } else {
            pp = &w->next;
        }
    }
}

int keel_zk_fake_get(keel_zk_fake *f, const char *path, void *buf,
                     size_t *len, keel_zk_stat *st)
{
    fnode *n = node_find(f, path);

    if (n == NULL)
        return KEEL_ENOTFOUND;
    if (buf != NULL && len != NULL && n->len > 0)
        memcpy(buf, n->data, n->len < *len ? n->len : *len);
    if (len != NULL)
        *len = n->len;
    if (st != NULL)
        stat_of(f, n, st);
    return 0;
}

int keel_zk_fake_set(keel_zk_fake *f, const char *path, const void *data,
                     size_t len)
{
    keel_zk_op op = {KEEL_ZK_OP_SET, path, data, len, KEEL_ZK_ANY_VERSION, 0};
    size_t failed;

    return apply(f, NULL, &op, 1, NULL, NULL, &failed);
}

int keel_zk_fake_mkdirs(keel_zk_fake *f, const char *path, const void *data,
                        size_t len)
{
    char buf[KEEL_ZK_PATH_MAX];
    size_t i, plen = strlen(path);
    size_t failed;

    if (!valid_path(path, 0) || plen >= sizeof buf)
        return KEEL_EINVAL;
    for (i = 1; i <= plen; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        memcpy(buf, path, i);
        buf[i] = '\0';
        if (node_find(f, buf) == NULL) {
            keel_zk_op op = {KEEL_ZK_OP_CREATE, buf, NULL, 0, 0, 0};
            int rc;
            if (i == plen) {
                op.data = data;
                op.len = len;
            }
            rc = apply(f, NULL, &op, 1, NULL, NULL, &failed);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

int keel_zk_fake_num_children(keel_zk_fake *f, const char *path)
{
    return node_find(f, path) != NULL ? count_children(f, path) : -1;
}

size_t keel_zk_fake_num_watches(keel_zk_fake *f)
{
    const fwatch *w;
    size_t n = 0;

    for (w = f->watches; w != NULL; w = w->next)
        n++;
    return n;
}
