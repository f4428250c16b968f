/* Membership: join with our ephemeral znode, keep a view of the others. */
#include "coordinator/membership.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "keel.h"

enum { J_IDLE = 0, J_CREATING, J_CHECKING, J_WAITING, J_JOINED };
enum { L_IDLE = 0, L_CHILDREN, L_GETTING };

static int join_create(keel_membership *m);
static int list_start(keel_membership *m);

static void fail(keel_membership *m, int rc)
{
    m->error = rc;
    m->cb(m, KEEL_MEMBERSHIP_FAILED, m->arg);
}

/* ----------------------------------------------------------------- join */

static void old_member_watch(keel_zk *zk, int event, const char *path,
                             void *arg)
{
    keel_membership *m = arg;
    int rc;

    (void)zk;
    (void)path;
    if (m->join_state != J_WAITING || event != KEEL_ZK_NODE_DELETED)
        return;
    keel_info("cluster: previous incarnation of %s is gone; joining",
              m->node);
    if ((rc = join_create(m)) != 0 && rc != KEEL_ECONNLOSS)
        fail(m, rc);
}

static void old_member_checked(keel_zk *zk, int rc, const keel_zk_stat *st,
                               void *arg)
{
    keel_membership *m = arg;

    m->join_busy = 0;
    if (rc == KEEL_ENOTFOUND) {
        /* gone in between: try again */
        if ((rc = join_create(m)) != 0)
            fail(m, rc);
        return;
    }
    if (rc == KEEL_ECONNLOSS) {
        m->join_stalled = 1;
        return;
    }
    if (rc != 0) {
        fail(m, rc);
        return;
    }
    if (st->ephemeral_owner == keel_zk_session_id(zk)) {
        /* Ours: created by a request whose answer was lost. */
        m->incarnation = st->czxid;
        m->join_state = J_JOINED;
        m->cb(m, KEEL_MEMBERSHIP_JOINED, m->arg);
        return;
    }
    keel_warn("cluster: %s is still held by a previous session (%llx); "
              "waiting for it to expire",
              m->node, (unsigned long long)st->ephemeral_owner);
    m->join_state = J_WAITING;
}

static void member_created(keel_zk *zk, int rc, const char *path,
                           const keel_zk_stat *st, void *arg)
{
    keel_membership *m = arg;
    char p[KEEL_ZK_PATH_MAX];

    (void)path;
    m->join_busy = 0;
    if (rc == 0) {
        m->incarnation = st->czxid;
        m->join_state = J_JOINED;
        m->cb(m, KEEL_MEMBERSHIP_JOINED, m->arg);
        return;
    }
    if (rc == KEEL_ECONNLOSS) {
        m->join_stalled = 1;
        return;
    }
    if (rc != KEEL_EEXIST) {
        fail(m, rc);
        return;
    }
    m->join_state = J_CHECKING;
    keel_layout_path(m->layout, p, "members", m->node, NULL);
    rc = keel_zk_exists(zk, p, old_member_watch, m, old_member_checked, m);
    if (rc != 0)
        fail(m, rc);
    else
        m->join_busy = 1;
}

static int join_create(keel_membership *m)
{
    char p[KEEL_ZK_PATH_MAX];
    int rc;

    m->join_state = J_CREATING;
    keel_layout_path(m->layout, p, "members", m->node, NULL);
    rc = keel_zk_create(m->zk, p, m->data, m->len, KEEL_ZK_EPHEMERAL,
                        member_created, m);
    if (rc == 0)
        m->join_busy = 1;
    return rc;
}

void keel_membership_set_store(keel_membership *m, const char *store)
{
    snprintf(m->store, sizeof m->store, "%s", store ? store : "");
}

void keel_membership_set_insecure(keel_membership *m, int insecure)
{
    m->insecure = insecure != 0;
}

int keel_membership_join(keel_membership *m, const char *addr,
                         const char *const *caps, size_t ncaps)
{
    int rc;

    free(m->data);
    m->data = NULL;
    /* The negotiated timeout goes with it: how long the controller must
     * wait, once this znode is gone, before it may give our units away
     * (controller.h). */
    rc = keel_member_format(addr, caps, ncaps,
                            (uint32_t)keel_zk_session_timeout(m->zk),
                            &m->data, &m->len);
    if (rc != 0)
        return rc;
    if (m->store[0] != '\0') {
        size_t sl = strlen(m->store);
        char *d = realloc(m->data, m->len + 6 + sl + 1);
        if (d == NULL)
            return KEEL_ENOMEM;
        memcpy(d + m->len, "store ", 6);
        memcpy(d + m->len + 6, m->store, sl);
        d[m->len + 6 + sl] = '\n';
        m->data = d;
        m->len += 6 + sl + 1;
    }
    if (m->insecure) {
        /* Only such nodes write the line: the others' znodes read as
         * they did before it existed. */
        char *d = realloc(m->data, m->len + 11);
        if (d == NULL)
            return KEEL_ENOMEM;
        memcpy(d + m->len, "insecure 1\n", 11);
        m->data = d;
        m->len += 11;
    }
    m->incarnation = 0;
    m->join_stalled = 0;
    return join_create(m);
}

/* ----------------------------------------------------------------- view */

static void free_names(keel_membership *m)
{
    size_t i;

    for (i = 0; i < m->nnames; i++)
        free(m->names[i]);
    free(m->names);
    m->names = NULL;
    m->nnames = 0;
    m->next = 0;
}

static void free_members(keel_member *v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        keel_member_clear(&v[i]);
    free(v);
}

static int cmp_member(const void *a, const void *b)
{
    return strcmp(((const keel_member *)a)->name,
                  ((const keel_member *)b)->name);
}

static int same_view(const keel_member *a, size_t na, const keel_member *b,
                     size_t nb)
{
    size_t i;

    if (na != nb)
        return 0;
    for (i = 0; i < na; i++)
        if (strcmp(a[i].name, b[i].name) != 0 ||
            a[i].incarnation != b[i].incarnation ||
            a[i].leaving != b[i].leaving)
            return 0;
    return 1;
}

static void list_done(keel_membership *m)
{
    int changed, report;

    qsort(m->building, m->nbuilding, sizeof *m->building, cmp_member);
    changed = !same_view(m->view, m->nview, m->building, m->nbuilding);
    free_members(m->view, m->nview);
    m->view = m->building;
    m->nview = m->nbuilding;
    m->building = NULL;
    m->nbuilding = 0;
    free_names(m);
    m->list_state = L_IDLE;
    m->listings++;
    m->list_done = m->list_cur;
    report = changed;
    if (m->notify_at != 0 && m->list_done >= m->notify_at) {
        m->notify_at = 0;
        report = 1; /* asked for by keel_membership_refresh */
    }
    if (changed)
        m->view_version++;
    if (m->list_dirty) {
        int rc;
        m->list_dirty = 0;
        if ((rc = list_start(m)) == KEEL_ECONNLOSS) {
            m->list_stalled = 1; /* started again on resume */
        } else if (rc != 0) {
            fail(m, rc);
            return;
        }
    }
    if (report)
        m->cb(m, KEEL_MEMBERSHIP_CHANGED, m->arg);
}

static void get_next(keel_membership *m);
static void members_watch(keel_zk *zk, int event, const char *path,
                          void *arg);

static long dwatched_find(const keel_membership *m, const char *name)
{
    size_t i;

    for (i = 0; i < m->ndwatched; i++)
        if (strcmp(m->dwatched[i], name) == 0)
            return (long)i;
    return -1;
}

/* Remembers that a data watch is armed on member `name`. Out of memory
 * only means the next listing leaves another watch: no event is lost. */
static void dwatched_add(keel_membership *m, const char *name)
{
    if (dwatched_find(m, name) >= 0)
        return;
    if (m->ndwatched == m->dwatched_cap) {
        size_t cap = m->dwatched_cap ? m->dwatched_cap * 2 : 8;
        char(*v)[KEEL_NAME_MAX + 1] = realloc(m->dwatched, cap * sizeof *v);
        if (v == NULL)
            return;
        m->dwatched = v;
        m->dwatched_cap = cap;
    }
    snprintf(m->dwatched[m->ndwatched++], sizeof m->dwatched[0], "%s", name);
}

static void dwatched_remove(keel_membership *m, const char *name)
{
    long i = dwatched_find(m, name);

    if (i < 0)
        return;
    m->ndwatched--;
    if ((size_t)i != m->ndwatched)
        memcpy(m->dwatched[i], m->dwatched[m->ndwatched],
               sizeof m->dwatched[0]);
}

/* A member whose address is not HOST:PORT stays in the view (it is live)
 * but nobody can connect to it: it is placed nothing, and calls for units
 * it still owns wait as for any unreachable owner. Said once per
 * incarnation: not again while the view already holds it so. */
static void warn_bad_addr(const keel_membership *m, const keel_member *b)
{
    const keel_member *was = keel_membership_find(m, b->name);

    if (was != NULL && was->incarnation == b->incarnation && was->addr_bad)
        return;
    keel_warn("cluster: member %s publishes the address '%s', which is not "
              "HOST:PORT: no node can reach it; it is placed nothing and "
              "its units are unavailable until it rejoins with a valid "
              "--advertise",
              b->name, b->addr);
}

/* Starts a listing now; one that cannot be sent is left to resume. */
static void list_now(keel_membership *m)
{
    int rc = list_start(m);

    if (rc == KEEL_ECONNLOSS)
        m->list_stalled = 1;
    else if (rc != 0)
        fail(m, rc);
}

/* A listing request was lost with its connection. If a reconnection
 * came since it was sent (its answer arrived late), nothing will resume
 * it: start over now; otherwise the next resume does. */
static void list_lost(keel_membership *m)
{
    if (m->list_gen == m->resume_gen)
        m->list_stalled = 1;
    else
        list_now(m);
}

static void member_read(keel_zk *zk, int rc, const void *data, size_t len,
                        const keel_zk_stat *st, void *arg)
{
    keel_membership *m = arg;
    const char *name;

    (void)zk;
    m->list_busy = 0;
    if (rc == KEEL_ECONNLOSS) {
        list_lost(m);
        return;
    }
    if (rc != 0 && rc != KEEL_ENOTFOUND) {
        fail(m, rc);
        return;
    }
    name = m->names[m->next];
    if (rc == 0 && m->data_arming)
        dwatched_add(m, name);
    if (rc == 0) {
        keel_member *b = &m->building[m->nbuilding];
        memset(b, 0, sizeof *b);
        if (keel_member_parse(data, len, b) != 0) {
            keel_warn("cluster: member %s has unreadable data; ignored",
                      name);
        } else {
            strcpy(b->name, name);
            b->incarnation = st->czxid;
            b->session = st->ephemeral_owner;
            if (b->addr_bad)
                warn_bad_addr(m, b);
            m->nbuilding++;
        }
    }
    m->next++;
    get_next(m);
}

static void get_next(keel_membership *m)
{
    char p[KEEL_ZK_PATH_MAX];
    int rc;

    while (m->next < m->nnames && !keel_name_valid(m->names[m->next], 0))
        m->next++; /* not a member znode of ours */
    if (m->next == m->nnames) {
        list_done(m);
        return;
    }
    keel_layout_path(m->layout, p, "members", m->names[m->next], NULL);
    /* A data watch too (a member marked leaving changes the view), unless
     * one is armed already. */
    m->data_arming = dwatched_find(m, m->names[m->next]) < 0;
    rc = keel_zk_get(m->zk, p, m->data_arming ? members_watch : NULL, m,
                     member_read, m);
    m->list_gen = m->resume_gen;
    if (rc != 0) {
        fail(m, rc);
        return;
    }
    m->list_busy = 1;
}

static void members_watch(keel_zk *zk, int event, const char *path, void *arg)
{
    keel_membership *m = arg;
    char dir[KEEL_ZK_PATH_MAX];
    size_t dlen;
    int rc;

    (void)zk;
    (void)event;
    /* One-shot: the watch that fired is armed no more. */
    keel_layout_path(m->layout, dir, "members", NULL, NULL);
    dlen = strlen(dir);
    if (strcmp(path, dir) == 0)
        m->child_watched = 0;
    else if (strncmp(path, dir, dlen) == 0 && path[dlen] == '/')
        dwatched_remove(m, path + dlen + 1);
    if (!m->view_started)
        return;
    if (m->list_state != L_IDLE || m->list_stalled) {
        m->list_dirty = 1;
        return;
    }
    if ((rc = list_start(m)) != 0)
        fail(m, rc);
}

static void children_read(keel_zk *zk, int rc, size_t count,
                          const char *const *names, void *arg)
{
    keel_membership *m = arg;
    size_t i;

    (void)zk;
    m->list_busy = 0;
    if (rc == KEEL_ECONNLOSS) {
        list_lost(m);
        return;
    }
    if (rc != 0) {
        fail(m, rc);
        return;
    }
    /* Only a listing that left a watch arms one: a listing that left none
     * may be answered after the armed watch fired. */
    if (m->child_arming)
        m->child_watched = 1;
    free_names(m);
    free_members(m->building, m->nbuilding);
    m->building = calloc(count ? count : 1, sizeof *m->building);
    m->nbuilding = 0;
    m->names = calloc(count ? count : 1, sizeof *m->names);
    if (m->names == NULL || m->building == NULL) {
        fail(m, KEEL_ENOMEM);
        return;
    }
    for (i = 0; i < count; i++) {
        if ((m->names[i] = strdup(names[i])) == NULL) {
            m->nnames = i;
            fail(m, KEEL_ENOMEM);
            return;
        }
    }
    m->nnames = count;
    m->next = 0;
    m->list_state = L_GETTING;
    get_next(m);
}

static int list_start(keel_membership *m)
{
    char p[KEEL_ZK_PATH_MAX];
    int rc;

    m->list_state = L_CHILDREN;
    m->list_dirty = 0;
    m->list_cur = ++m->list_seq;
    keel_layout_path(m->layout, p, "members", NULL, NULL);
    m->child_arming = !m->child_watched;
    rc = keel_zk_children(m->zk, p, m->child_arming ? members_watch : NULL,
                          m, children_read, m);
    m->list_gen = m->resume_gen;
    if (rc == 0)
        m->list_busy = 1;
    else
        m->list_state = L_IDLE;
    return rc;
}

int keel_membership_watch(keel_membership *m)
{
    m->view_started = 1;
    m->list_stalled = 0;
    return list_start(m);
}

void keel_membership_refresh(keel_membership *m)
{
    if (!m->view_started)
        return;
    /* Whatever this session armed may be gone: the next listing leaves
     * every watch again. (The servers keep one watch per path and
     * session, and the client registry one entry per watch callback, so
     * arming again where one is armed costs nothing.) */
    m->child_watched = 0;
    m->ndwatched = 0;
    /* The listing that answers this one: the next to start. */
    m->notify_at = m->list_seq + 1;
    if (m->list_state != L_IDLE || m->list_stalled || m->list_busy) {
        /* The listing under way may predate the change: one more after
         * it (a stalled one starts again on resume). */
        m->list_dirty = 1;
        return;
    }
    list_now(m);
}

void keel_membership_resume(keel_membership *m)
{
    int rc;

    if (m->join_stalled && !m->join_busy) {
        m->join_stalled = 0;
        /* Create again: the EEXIST path adopts a node our lost request
         * made. A stalled exists() is redone the same way. */
        if ((rc = join_create(m)) != 0)
            fail(m, rc);
    }
    m->resume_gen++;
    if (m->list_stalled && !m->list_busy) {
        m->list_stalled = 0;
        m->list_state = L_IDLE;
    }
    /* Back on a connection, possibly to a server that restarted: list
     * again and leave every watch again rather than trust that the ones
     * armed before were carried over, so that a member that came or went
     * meanwhile is never missed for good. */
    keel_membership_refresh(m);
}

void keel_membership_reset(keel_membership *m)
{
    m->join_state = J_IDLE;
    m->join_busy = m->join_stalled = 0;
    m->incarnation = 0;
    m->list_state = L_IDLE;
    m->list_busy = m->list_stalled = m->list_dirty = 0;
    m->view_started = 0;
    /* The session's watches went with it. */
    m->child_watched = 0;
    m->ndwatched = 0;
    free_names(m);
    free_members(m->building, m->nbuilding);
    m->building = NULL;
    m->nbuilding = 0;
}

void keel_membership_init(keel_membership *m, keel_zk *zk,
                          const keel_layout *layout, const char *node,
                          keel_membership_cb cb, void *arg)
{
    memset(m, 0, sizeof *m);
    m->zk = zk;
    m->layout = layout;
    strncpy(m->node, node, KEEL_NAME_MAX);
    m->cb = cb;
    m->arg = arg;
}

void keel_membership_free(keel_membership *m)
{
    keel_membership_reset(m);
    free_members(m->view, m->nview);
    m->view = NULL;
    m->nview = 0;
    free(m->data);
    m->data = NULL;
    free(m->dwatched);
    m->dwatched = NULL;
    m->dwatched_cap = 0;
}

const keel_member *keel_membership_find(const keel_membership *m,
                                        const char *name)
{
    size_t lo = 0, hi = m->nview;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->view[mid].name, name);
        if (c == 0)
            return &m->view[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
