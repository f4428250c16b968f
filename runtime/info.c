/* Introspection of placement: see runtime/info.h and docs/cluster.md. */
#include "runtime/info.h"

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/cluster.h"
#include "coordinator/coord.h"
#include "coordinator/layout.h"
#include "coordinator/shardmap.h"
#include "keel.h"
#include "persistence/store.h"
#include "runtime/repl.h"

/* Printed for the default group (capability ""), which no capability name
 * can spell: names are [A-Za-z0-9._-]. */
#define DEFAULT_CAP "(default)"
#define NONE "(none)"
#define STANDALONE_NAME "local"

typedef struct tbuf {
    char *p;
    size_t len, cap;
    int oom;
} tbuf;

static void tb_printf(tbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void tb_printf(tbuf *b, const char *fmt, ...)
{
    va_list ap;
    int w;

    if (b->oom)
        return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        w = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (w < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)w < room) {
            b->len += (size_t)w;
            return;
        }
        {
            size_t ncap = b->cap ? b->cap * 2 : 1024;
            char *np;
            while (ncap < b->len + (size_t)w + 1)
                ncap *= 2;
            np = realloc(b->p, ncap);
            if (np == NULL) {
                b->oom = 1;
                return;
            }
            b->p = np;
            b->cap = ncap;
        }
    }
}

static int tb_finish(tbuf *b, char **out, size_t *len)
{
    if (b->p == NULL && !b->oom)
        tb_printf(b, "%s", "");
    if (b->oom) {
        free(b->p);
        return KEEL_ENOMEM;
    }
    *out = b->p;
    *len = b->len;
    return 0;
}

static const char *cap_name(const char *cap)
{
    return cap[0] == '\0' ? DEFAULT_CAP : cap;
}

/* ------------------------------------------------------- facts, both modes */

static keel_cluster *cluster_of(keel_node *n)
{
    return n->cluster != NULL ? keel_coord_to_cluster(n->coord) : NULL;
}

static const char *self_name(keel_node *n)
{
    return n->opts.node_id != NULL && n->opts.node_id[0] != '\0'
               ? n->opts.node_id
               : STANDALONE_NAME;
}

/* The listen address with the bound port (the configured one may be 0). */
static void self_addr(keel_node *n, char *buf, size_t cap)
{
    const char *colon;

    if (n->listen_addr == NULL) {
        snprintf(buf, cap, "%s", NONE);
        return;
    }
    colon = strrchr(n->listen_addr, ':');
    snprintf(buf, cap, "%.*s:%d",
             (int)(colon ? colon - n->listen_addr : 0), n->listen_addr,
             n->port);
}

/* The capabilities of the types registered here, "" first, unique. */
static size_t local_caps(keel_node *n, const char **out, size_t cap)
{
    size_t k = 0, j;
    unsigned i;

    out[k++] = "";
    for (i = 0; i < n->ntypes && k < cap; i++) {
        const char *c = n->types[i]->capability;
        for (j = 0; j < k; j++)
            if (strcmp(out[j], c) == 0)
                break;
        if (j == k)
            out[k++] = c;
    }
    return k;
}

static const keel_member *member_find(keel_cluster *c, const char *name)
{
    size_t nv, i;
    const keel_member *v = keel_cluster_view(c, &nv);

    for (i = 0; i < nv; i++)
        if (strcmp(v[i].name, name) == 0)
            return &v[i];
    return NULL;
}

/* Whether a member of the view runs without credentials: this node
 * knows it of itself, and the others say so in their member znodes. */
static int member_insecure(keel_node *n, keel_cluster *c,
                           const keel_member *m)
{
    return m->insecure ||
           (n->opts.insecure && strcmp(m->name, keel_cluster_node_name(c)) == 0);
}

/* "insecure NODE,...": the nodes among this one and the members it sees
 * that run without credentials (--insecure), first in every answer so
 * that nobody reads a cluster's layout without being told. Nothing when
 * there are none. */
static void insecure_line(keel_node *n, tbuf *b)
{
    keel_cluster *c = cluster_of(n);
    const keel_member *v;
    size_t nv = 0, i;
    int any = 0, self_seen = 0;

    if (c == NULL) {
        if (n->opts.insecure)
            tb_printf(b, "insecure %s (running without credentials: "
                         "--insecure)\n",
                      self_name(n));
        return;
    }
    v = keel_cluster_view(c, &nv);
    for (i = 0; i < nv; i++) {
        if (strcmp(v[i].name, keel_cluster_node_name(c)) == 0)
            self_seen = 1;
        if (!member_insecure(n, c, &v[i]))
            continue;
        tb_printf(b, "%s%s", any ? "," : "insecure ", v[i].name);
        any = 1;
    }
    if (n->opts.insecure && !self_seen) {
        /* Not in its own view yet (joining): it still says so. */
        tb_printf(b, "%s%s", any ? "," : "insecure ",
                  keel_cluster_node_name(c));
        any = 1;
    }
    if (any)
        tb_printf(b, " (running without credentials: --insecure)\n");
}

/* ------------------------------------------------------------- queries */

/* Why a node does not take part, when it does not: "refused ENAME: why".
 * Nothing while it does. */
static void refused_line(keel_cluster *c, tbuf *b)
{
    int err = keel_cluster_error(c);

    if (err == KEEL_EMISMATCH)
        tb_printf(b, "refused %s: this node's data directory is not the one "
                     "the cluster recorded for it (another directory, an "
                     "older copy, or another node runs with this node id); "
                     "it does not join (its log says why and how to "
                     "proceed)\n",
                  keel_err_name(err));
    else if (err != 0)
        tb_printf(b, "refused %s: %s\n", keel_err_name(err),
                  keel_strerror(err));
}

/* Why a node that takes part serves nothing now: "state WHAT: why", its
 * view below possibly old. Nothing while it serves, or once it failed
 * (refused_line says why: a failed node has its error set). */
static void state_line(keel_cluster *c, tbuf *b)
{
    if (keel_cluster_error(c) != 0)
        return;
    switch (keel_cluster_phase(c)) {
    case KEEL_CLUSTER_RUNNING:
        if (keel_cluster_fenced(c))
            tb_printf(b, "state fenced: ZooKeeper has not answered within "
                         "this node's lease; it serves nothing until it "
                         "does, and what follows may be old\n");
        return;
    case KEEL_CLUSTER_CONNECTING:
        tb_printf(b, "state connecting: this node has not reached "
                     "ZooKeeper (--zk); it serves nothing yet\n");
        return;
    default:
        tb_printf(b, "state joining: this node is joining its cluster; it "
                     "serves nothing yet\n");
        return;
    }
}

static void q_nodes(keel_node *n, tbuf *b)
{
    keel_cluster *c = cluster_of(n);
    const keel_shard_map *m;
    const keel_member *v;
    const char *ctl;
    size_t nv, i, j;
    char addr[KEEL_ADDR_MAX + 1];

    if (c == NULL) {
        const char *caps[KEEL_MAP_MAX_CAPS];
        size_t nc = local_caps(n, caps, KEEL_MAP_MAX_CAPS);

        self_addr(n, addr, sizeof addr);
        tb_printf(b, "mode standalone\nself %s\ncontroller %s\nmap_epoch 1\n",
                  self_name(n), self_name(n));
        insecure_line(n, b);
        tb_printf(b, "node %s addr %s incarnation 1 caps ", self_name(n),
                  addr);
        if (nc == 1)
            tb_printf(b, "%s", NONE);
        for (i = 1; i < nc; i++)
            tb_printf(b, "%s%s", i > 1 ? "," : "", caps[i]);
        tb_printf(b, " role controller self%s\n",
                  n->opts.insecure ? " insecure" : "");
        return;
    }
    m = keel_cluster_map(c);
    ctl = keel_cluster_controller_name(c);
    tb_printf(b, "mode cluster\ncluster %s\nself %s\ncontroller %s\n"
                 "map_epoch %" PRIu64 "\n",
              keel_cluster_name(c), keel_cluster_node_name(c),
              ctl ? ctl : NONE, m ? m->map_epoch : 0);
    refused_line(c, b);
    state_line(c, b);
    insecure_line(n, b);
    v = keel_cluster_view(c, &nv);
    for (i = 0; i < nv; i++) {
        tb_printf(b, "node %s addr %s incarnation %" PRId64 " caps ",
                  v[i].name, v[i].addr, v[i].incarnation);
        if (v[i].ncaps == 0)
            tb_printf(b, "%s", NONE);
        for (j = 0; j < v[i].ncaps; j++)
            tb_printf(b, "%s%s", j ? "," : "", v[i].caps[j]);
        /* leaving: drained or stopping, handing its units off; last, so
         * that a reader can tell it at the end of the line. */
        tb_printf(b, " role %s%s%s%s\n",
                  ctl && strcmp(ctl, v[i].name) == 0 ? "controller"
                                                     : "member",
                  strcmp(v[i].name, keel_cluster_node_name(c)) == 0 ? " self"
                                                                     : "",
                  member_insecure(n, c, &v[i]) ? " insecure" : "",
                  v[i].leaving ? " leaving" : "");
    }
}

/* The backups of u (m's replicas after the primary) as "n2,n3" into b
 * after `lead` (`lead`-separated fields), and those out of sync after
 * `outlead`; nothing when u has none (resp. all in sync). */
static void backups_fields(tbuf *b, const keel_shard_map *m,
                           const keel_map_unit *u, const char *lead,
                           const char *outlead, const char *end)
{
    unsigned i, out = 0;

    if (u->nreplicas < 2)
        return;
    tb_printf(b, "%s", lead);
    for (i = 1; i < u->nreplicas; i++) {
        tb_printf(b, "%s%s", i > 1 ? "," : "", m->nodes[u->replicas[i]]);
        if (!(u->insync & (1u << i)))
            out++;
    }
    tb_printf(b, "%s", end);
    if (out == 0)
        return;
    tb_printf(b, "%s", outlead);
    for (i = 1, out = 0; i < u->nreplicas; i++)
        if (!(u->insync & (1u << i)))
            tb_printf(b, "%s%s", out++ ? "," : "", m->nodes[u->replicas[i]]);
    tb_printf(b, "%s", end);
}

/* `where`'s "down NODE,..." line: u's backups that are not live members
 * of c's view (a dead backup stays in the in-sync set until a write
 * misses it or it is replaced, so the backups lines alone would show it
 * there); nothing when all are live. */
static void down_line(tbuf *b, keel_cluster *c, const keel_shard_map *m,
                      const keel_map_unit *u)
{
    unsigned i, down = 0;

    for (i = 1; i < u->nreplicas; i++)
        if (member_find(c, m->nodes[u->replicas[i]]) == NULL)
            tb_printf(b, "%s%s", down++ ? "," : "down ",
                      m->nodes[u->replicas[i]]);
    if (down > 0)
        tb_printf(b, "\n");
}

/* One unit line: "unit CAP SHARD owner NODE epoch E [target NODE]
 * [backups NODE,... [out_of_sync NODE,...]]". */
static void unit_line(tbuf *b, const char *cap, uint32_t shard,
                      const char *owner, uint64_t epoch, const char *target,
                      const keel_shard_map *m, const keel_map_unit *u)
{
    tb_printf(b, "unit %s %" PRIu32 " owner %s epoch %" PRIu64, cap_name(cap),
              shard, owner ? owner : NONE, epoch);
    if (target != NULL)
        tb_printf(b, " target %s", target);
    if (m != NULL)
        backups_fields(b, m, u, " backups ", " out_of_sync ", "");
    tb_printf(b, "\n");
}

/* Whether `shards NODE` names a node there is: a standalone node's own
 * name, or in a cluster one of the applied map's nodes or a live member.
 * A typo must not read as a node that owns nothing. */
static int node_known(keel_node *n, const char *name, char *errbuf,
                      size_t errlen)
{
    keel_cluster *c = cluster_of(n);
    const keel_shard_map *m;

    if (c == NULL) {
        if (strcmp(name, self_name(n)) == 0)
            return 0;
        snprintf(errbuf, errlen,
                 "no node '%s': this standalone node is '%s' and owns "
                 "every unit",
                 name, self_name(n));
        return KEEL_ENOTFOUND;
    }
    m = keel_cluster_map(c);
    if ((m != NULL && keel_map_node_index(m, name) >= 0) ||
        keel_cluster_member_addr(c, name, NULL, 0) != KEEL_ENOTFOUND)
        return 0;
    snprintf(errbuf, errlen,
             "no node '%s' in the cluster's map or among its members "
             "(`keel nodes` lists them)",
             name);
    return KEEL_ENOTFOUND;
}

/* A line per node the map lists as a backup that is not a live member:
 * "down backup NODE: listed for N units (in sync in M), not a live
 * member". A dead backup stays in the in-sync set of a unit until a
 * write misses it (its primary then asks it out after the lag) or it is
 * replaced after the dead time: the unit lines alone would show it in
 * sync. Lines of their own, after the unit lines, as the unavailable
 * ones. */
static void down_lines(keel_cluster *c, const keel_shard_map *m,
                       const char *only, tbuf *b)
{
    uint32_t *listed, *insync, ci, s, i;

    if (m->nnodes == 0)
        return;
    listed = calloc(2 * (size_t)m->nnodes, sizeof *listed);
    if (listed == NULL)
        return;
    insync = listed + m->nnodes;
    for (ci = 0; ci < m->ncaps; ci++)
        for (s = 0; s < m->shard_count; s++) {
            const keel_map_unit *u = keel_map_unit_at(m, ci, s);
            const char *owner = keel_map_primary(m, ci, s);
            if (only != NULL && (owner == NULL || strcmp(owner, only) != 0))
                continue;
            for (i = 1; i < u->nreplicas; i++) {
                listed[u->replicas[i]]++;
                insync[u->replicas[i]] += (u->insync >> i) & 1u;
            }
        }
    for (i = 0; i < m->nnodes; i++)
        if (listed[i] > 0 && member_find(c, m->nodes[i]) == NULL)
            tb_printf(b,
                      "down backup %s: listed for %" PRIu32 " units (in "
                      "sync in %" PRIu32 "), not a live member\n",
                      m->nodes[i], listed[i], insync[i]);
    free(listed);
}

static void q_shards(keel_node *n, const char *only, tbuf *b)
{
    keel_cluster *c = cluster_of(n);
    const keel_shard_map *m;
    uint32_t ci, s;

    if (c == NULL) {
        const char *caps[KEEL_MAP_MAX_CAPS];
        size_t nc = local_caps(n, caps, KEEL_MAP_MAX_CAPS), i;

        insecure_line(n, b);
        if (only != NULL && strcmp(only, self_name(n)) != 0)
            return;
        for (i = 0; i < nc; i++)
            for (s = 0; s < n->opts.shard_count; s++)
                unit_line(b, caps[i], s, self_name(n), 1, NULL, NULL, NULL);
        return;
    }
    refused_line(c, b);
    insecure_line(n, b);
    if ((m = keel_cluster_map(c)) == NULL)
        return;
    for (ci = 0; ci < m->ncaps; ci++)
        for (s = 0; s < m->shard_count; s++) {
            const keel_map_unit *u = keel_map_unit_at(m, ci, s);
            const char *owner = keel_map_primary(m, ci, s);
            const char *target = u->target != KEEL_MAP_NO_NODE
                                     ? m->nodes[u->target]
                                     : NULL;
            if (only != NULL && (owner == NULL || strcmp(owner, only) != 0))
                continue;
            unit_line(b, m->caps[ci], s, owner, u->shard_epoch, target, m, u);
        }
    /* Then the units whose owner is not a live member: they answer
     * nothing until it returns, a backup is promoted, or it is
     * forgotten. Their own lines start otherwise, so readers of unit
     * lines are not disturbed. */
    for (ci = 0; ci < m->ncaps; ci++)
        for (s = 0; s < m->shard_count; s++) {
            const char *owner = keel_map_primary(m, ci, s);
            char addr[KEEL_ADDR_MAX + 1];
            if (only != NULL && (owner == NULL || strcmp(owner, only) != 0))
                continue;
            if (owner == NULL)
                tb_printf(b, "unavailable unit %s %" PRIu32 ": no owner\n",
                          cap_name(m->caps[ci]), s);
            else if (keel_cluster_member_addr(c, owner, addr, sizeof addr) ==
                     KEEL_ENOTFOUND)
                tb_printf(b,
                          "unavailable unit %s %" PRIu32 ": owner %s is not "
                          "a live member\n",
                          cap_name(m->caps[ci]), s, owner);
        }
    down_lines(c, m, only, b);
}

static const char *placement_name(int state)
{
    switch (state) {
    case KEEL_PLACEMENT_LOCAL:
        return "local";
    case KEEL_PLACEMENT_REMOTE:
        return "remote";
    default:
        return "unavailable";
    }
}

static int q_where(keel_node *n, const char *type, const uint8_t *id,
                   size_t idlen, tbuf *b, char *errbuf, size_t errlen)
{
    keel_cluster *c = cluster_of(n);
    struct keel_type_entry *te;
    const char *owner = NULL, *target = NULL;
    const keel_shard_map *bm = NULL;
    const keel_map_unit *bu = NULL;
    char addr[KEEL_ADDR_MAX + 1];
    uint64_t epoch = 0;
    keel_placement pl;
    uint32_t shard;

    if (strlen(type) > KEEL_MAX_TYPE_LEN || idlen > KEEL_MAX_ID_LEN) {
        snprintf(errbuf, errlen, "type name or id over its limit");
        return KEEL_ELIMIT;
    }
    te = keel__type_find(n, type, strlen(type));
    if (te == NULL) {
        snprintf(errbuf, errlen, "unknown actor type '%s'", type);
        return KEEL_ENOTYPE;
    }
    shard = keel_shard_of(te->name, id, idlen, n->opts.shard_count);
    keel_coord_placement(n->coord, te->capability, shard, &pl);
    snprintf(addr, sizeof addr, "%s", NONE);
    if (c == NULL) {
        owner = self_name(n);
        epoch = 1;
        self_addr(n, addr, sizeof addr);
    } else {
        const keel_shard_map *m = keel_cluster_map(c);
        int ci = m ? keel_map_cap_index(m, te->capability) : -1;

        if (ci >= 0) {
            const keel_map_unit *u = keel_map_unit_at(m, (uint32_t)ci, shard);
            const keel_member *mem;

            owner = keel_map_primary(m, (uint32_t)ci, shard);
            epoch = u->shard_epoch;
            bm = m;
            bu = u;
            if (u->target != KEEL_MAP_NO_NODE)
                target = m->nodes[u->target];
            if (owner != NULL && (mem = member_find(c, owner)) != NULL)
                snprintf(addr, sizeof addr, "%s", mem->addr);
        }
    }
    insecure_line(n, b);
    tb_printf(b, "type %s\nid %.*s\ncapability %s\nshard %" PRIu32 "\n"
                 "owner %s\naddress %s\nepoch %" PRIu64 "\n",
              te->name, (int)idlen, (const char *)id,
              cap_name(te->capability), shard, owner ? owner : NONE, addr,
              epoch);
    if (target != NULL)
        tb_printf(b, "target %s\n", target);
    if (bm != NULL) {
        backups_fields(b, bm, bu, "backups ", "out_of_sync ", "\n");
        down_line(b, c, bm, bu);
    }
    tb_printf(b, "placement %s\n", placement_name(pl.state));
    return 0;
}

/* Every capability: those members declare, those the map has, and "".
 * Sorted (strcmp), unique. */
static int cap_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void q_capabilities(keel_node *n, tbuf *b)
{
    keel_cluster *c = cluster_of(n);
    const char *all[KEEL_MAP_MAX_CAPS * 2 + 1];
    const keel_shard_map *m;
    const keel_member *v;
    size_t nall = 0, nv, i, j, k;

    insecure_line(n, b);
    if (c == NULL) {
        const char *caps[KEEL_MAP_MAX_CAPS];
        size_t nc = local_caps(n, caps, KEEL_MAP_MAX_CAPS);

        qsort(caps, nc, sizeof *caps, cap_cmp);
        for (i = 0; i < nc; i++)
            tb_printf(b, "capability %s nodes %s\n", cap_name(caps[i]),
                      self_name(n));
        return;
    }
    v = keel_cluster_view(c, &nv);
    m = keel_cluster_map(c);
    all[nall++] = "";
    for (i = 0; i < nv; i++)
        for (j = 0; j < v[i].ncaps && nall < KEEL_MAP_MAX_CAPS * 2; j++)
            all[nall++] = v[i].caps[j];
    for (i = 0; m != NULL && i < m->ncaps && nall < KEEL_MAP_MAX_CAPS * 2 + 1;
         i++)
        all[nall++] = m->caps[i];
    qsort(all, nall, sizeof *all, cap_cmp);
    for (i = 0; i < nall; i++) {
        int any = 0;

        if (i > 0 && strcmp(all[i], all[i - 1]) == 0)
            continue;
        tb_printf(b, "capability %s nodes ", cap_name(all[i]));
        for (j = 0; j < nv; j++) {
            int has = all[i][0] == '\0';
            for (k = 0; k < v[j].ncaps && !has; k++)
                has = strcmp(v[j].caps[k], all[i]) == 0;
            if (has) {
                tb_printf(b, "%s%s", any ? "," : "", v[j].name);
                any = 1;
            }
        }
        tb_printf(b, "%s\n", any ? "" : NONE);
    }
}

static int next_word(const uint8_t **p, const uint8_t *end, char *buf,
                     size_t cap);

/* digest CAP SHARD (keel digest): the content digest of unit (CAP, SHARD)
 * as this node's store holds it, whether it is the unit's primary, a
 * backup or neither (docs/protocol.md, "INFO body"). CAP (default) names
 * the default group, as the other answers print it. */
/* Whether a type registered here, or a unit of the applied map, has
 * capability cap. */
static int cap_known(keel_node *n, const char *cap)
{
    keel_cluster *c = cluster_of(n);
    const char *caps[KEEL_MAP_MAX_CAPS];
    size_t nc = local_caps(n, caps, KEEL_MAP_MAX_CAPS), i;
    const keel_shard_map *m;

    for (i = 0; i < nc; i++)
        if (strcmp(caps[i], cap) == 0)
            return 1;
    m = c != NULL ? keel_cluster_map(c) : NULL;
    return m != NULL && keel_map_cap_index(m, cap) >= 0;
}

static int q_digest(keel_node *n, const uint8_t *p, const uint8_t *end,
                    tbuf *b, char *errbuf, size_t errlen)
{
    char cap[KEEL_NAME_MAX + 1], num[16], *e;
    keel_store_read *r;
    unsigned long shard;
    uint64_t digest = 0, nrec = 0;
    int rc;

    if (next_word(&p, end, cap, sizeof cap) != 0 ||
        next_word(&p, end, num, sizeof num) != 0 || p != end) {
        snprintf(errbuf, errlen, "digest needs CAP SHARD");
        return KEEL_EINVAL;
    }
    if (strcmp(cap, DEFAULT_CAP) == 0)
        cap[0] = '\0';
    else if (!keel_name_valid(cap, 0)) {
        snprintf(errbuf, errlen, "digest: '%s' is not a capability (%s for "
                 "the default group)", cap, DEFAULT_CAP);
        return KEEL_EINVAL;
    }
    shard = num[0] >= '0' && num[0] <= '9' ? strtoul(num, &e, 10) : ULONG_MAX;
    if (shard == ULONG_MAX || *e != '\0' || shard >= n->opts.shard_count) {
        snprintf(errbuf, errlen, "digest: shard '%s' is not a number below "
                 "%u", num, n->opts.shard_count);
        return KEEL_EINVAL;
    }
    if (!cap_known(n, cap)) {
        /* It would answer the digest of nothing: say why instead. */
        snprintf(errbuf, errlen, "digest: no unit of capability '%s' (no "
                 "type here and no unit of the map has it; `keel "
                 "capabilities` lists them, %s is the default group)",
                 cap, DEFAULT_CAP);
        return KEEL_ENOTFOUND;
    }
    rc = keel_store_read_begin(n->store, &r);
    if (rc == 0) {
        rc = keel_store_unit_digest(r, cap, (uint16_t)shard, &digest, &nrec);
        keel_store_read_end(r);
    }
    if (rc != 0) {
        snprintf(errbuf, errlen, "digest of (%s, %lu): %s", cap_name(cap),
                 shard, keel_strerror(rc));
        return rc;
    }
    tb_printf(b, "digest %016llx records %llu\n", (unsigned long long)digest,
              (unsigned long long)nrec);
    return 0;
}

/* Splits off the next NUL-terminated word of [*p, end) into buf. 0, or -1
 * when there is none or it does not fit. */
static int next_word(const uint8_t **p, const uint8_t *end, char *buf,
                     size_t cap)
{
    const uint8_t *s = *p, *z;
    size_t len;

    if (s >= end)
        return -1;
    z = memchr(s, '\0', (size_t)(end - s));
    len = (size_t)((z ? z : end) - s);
    if (len == 0 || len >= cap || memchr(s, '\n', len) != NULL)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    *p = z ? z + 1 : end;
    return 0;
}

/* drain and forget act through this node's membership of the cluster, so
 * they need a cluster node that has joined. Otherwise: KEEL_EINVAL on a
 * standalone node (there is no cluster), the reason it was refused when
 * the cluster refused it (KEEL_ECONFIG, KEEL_EMISMATCH, ...), and
 * KEEL_ESESSION while it has no session in which it is a member yet
 * (connecting, joining). Nothing was done in any of these cases. */
static int admin_cluster(keel_node *n, const char *q, keel_cluster **out,
                         char *errbuf, size_t errlen)
{
    keel_cluster *c = cluster_of(n);
    const char *why;
    int err;

    *out = c;
    if (c == NULL) {
        snprintf(errbuf, errlen,
                 "not a cluster node: this node runs standalone (no --zk), "
                 "so there is no member to %s",
                 q);
        return KEEL_EINVAL;
    }
    switch (keel_cluster_phase(c)) {
    case KEEL_CLUSTER_RUNNING:
        return 0;
    case KEEL_CLUSTER_FAILED:
        err = keel_cluster_error(c);
        if (err == 0)
            err = KEEL_ESESSION;
        snprintf(errbuf, errlen,
                 "this node was refused by cluster %s (%s): ask a member",
                 keel_cluster_name(c), keel_strerror(err));
        return err;
    case KEEL_CLUSTER_CONNECTING:
        why = "it is connecting to ZooKeeper";
        break;
    case KEEL_CLUSTER_BOOTSTRAP:
    case KEEL_CLUSTER_JOINING:
        why = "it is joining";
        break;
    default:
        why = "its cluster agent has not started";
        break;
    }
    snprintf(errbuf, errlen,
             "this node has not joined cluster %s yet (%s): ask a member, "
             "or try again once it has",
             keel_cluster_name(c), why);
    return KEEL_ESESSION;
}

int keel__info(keel_node *n, const uint8_t *body, size_t blen, char **text,
               size_t *len, char *errbuf, size_t errlen)
{
    const uint8_t *p = body, *end = body + blen;
    char q[32], arg[KEEL_MAX_TYPE_LEN + KEEL_NAME_MAX + 2];
    tbuf b = {0};
    int rc = 0;

    if (next_word(&p, end, q, sizeof q) != 0) {
        snprintf(errbuf, errlen, "empty or malformed query");
        return KEEL_EINVAL;
    }
    if (strcmp(q, "nodes") == 0 || strcmp(q, "capabilities") == 0) {
        if (p != end) {
            snprintf(errbuf, errlen, "%s takes no arguments", q);
            return KEEL_EINVAL;
        }
        if (q[0] == 'n')
            q_nodes(n, &b);
        else
            q_capabilities(n, &b);
    } else if (strcmp(q, "shards") == 0) {
        const char *only = NULL;
        if (p != end) {
            if (next_word(&p, end, arg, sizeof arg) != 0 || p != end) {
                snprintf(errbuf, errlen, "shards takes at most a node name");
                return KEEL_EINVAL;
            }
            only = arg;
            if ((rc = node_known(n, only, errbuf, errlen)) != 0)
                return rc;
        }
        q_shards(n, only, &b);
    } else if (strcmp(q, "where") == 0) {
        if (next_word(&p, end, arg, sizeof arg) != 0 || p > end) {
            snprintf(errbuf, errlen, "where needs TYPE ID");
            return KEEL_EINVAL;
        }
        /* The id is the rest of the body, whatever its bytes. */
        rc = q_where(n, arg, p, (size_t)(end - p), &b, errbuf, errlen);
        if (rc != 0) {
            free(b.p);
            return rc;
        }
    } else if (strcmp(q, "digest") == 0) {
        if ((rc = q_digest(n, p, end, &b, errbuf, errlen)) != 0) {
            free(b.p);
            return rc;
        }
    } else if (strcmp(q, "drain") == 0) {
        /* Graceful leave of a node (keel node drain): the one admin
         * request; it marks the node leaving and returns at once. */
        keel_cluster *c;
        if (next_word(&p, end, arg, sizeof arg) != 0 || p != end) {
            snprintf(errbuf, errlen, "drain needs a node name");
            return KEEL_EINVAL;
        }
        if ((rc = admin_cluster(n, "drain", &c, errbuf, errlen)) != 0)
            return rc;
        /* A drain would leave the units of a capability nobody else has
         * unavailable: refused (a node that stops leaves anyway). */
        if (keel_cluster_drain_stranded(c, arg) != NULL &&
            !keel_cluster_member_leaving(c, arg)) {
            const char *cap = keel_cluster_drain_stranded(c, arg);
            rc = KEEL_EUNAVAIL;
            snprintf(errbuf, errlen,
                     "cannot drain %s: no other live member has capability "
                     "%s%s%s, so its units would stay unavailable; start a "
                     "node with it first",
                     arg, cap != NULL && cap[0] != '\0' ? "'" : "",
                     cap != NULL && cap[0] != '\0' ? cap : "(default)",
                     cap != NULL && cap[0] != '\0' ? "'" : "");
            return rc;
        }
        rc = keel_cluster_drain(c, arg);
        if (rc != 0) {
            snprintf(errbuf, errlen, "cannot drain %s: %s", arg,
                     rc == KEEL_ENOTFOUND ? "not a live member"
                                          : keel_strerror(rc));
            return rc;
        }
        tb_printf(&b,
                  "node %s leaving\nIt hands every unit off to the other "
                  "members, then stops (at most 30 s);\n`keel nodes` lists "
                  "it until it has left.\n",
                  arg);
    } else if (strcmp(q, "forget") == 0) {
        /* keel node forget: give up a dead node's data so that its units
         * move to live members (from empty). Never a live member. */
        keel_cluster *c;
        size_t units = 0;
        if (next_word(&p, end, arg, sizeof arg) != 0 || p != end) {
            snprintf(errbuf, errlen, "forget needs a node name");
            return KEEL_EINVAL;
        }
        if ((rc = admin_cluster(n, "forget", &c, errbuf, errlen)) != 0)
            return rc;
        rc = keel_cluster_forget(c, arg, &units);
        if (rc != 0) {
            snprintf(errbuf, errlen, "cannot forget %s: %s", arg,
                     rc == KEEL_EEXIST
                         ? "it is a member (a running node: drain it "
                           "instead; a killed one: wait until its session "
                           "has expired, the session timeout)"
                     : rc == KEEL_ENOTFOUND
                         ? "the map lists no such node (`keel nodes` and "
                           "`keel shards` show the cluster's nodes)"
                         : keel_strerror(rc));
            return rc;
        }
        if (units == 0)
            tb_printf(&b,
                      "node %s forgotten: it led no unit, so no state is "
                      "lost\nCopies it kept as a backup are deleted if it "
                      "comes back; it then catches up.\n",
                      arg);
        else
            tb_printf(&b,
                      "node %s forgotten: its %zu units are reassigned; the "
                      "state they held is lost\nThey answer again, "
                      "starting from empty state, once live members own "
                      "them.\n",
                      arg, units);
    } else {
        snprintf(errbuf, errlen,
                 "unknown query '%s' (nodes, shards, where, digest, "
                 "capabilities, drain, forget; and auth, peer on their "
                 "own)",
                 q);
        return KEEL_EINVAL;
    }
    rc = tb_finish(&b, text, len);
    if (rc != 0)
        snprintf(errbuf, errlen, "out of memory");
    return rc;
}

/* ------------------------------------------------------------- JSON */

/* Names and addresses are JSON-safe by construction except for quotes and
 * backslashes an address could hold in theory; escape what JSON needs. */
static void tb_json_str(tbuf *b, const char *s)
{
    tb_printf(b, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            tb_printf(b, "\\%c", ch);
        else if (ch < 0x20)
            tb_printf(b, "\\u%04x", ch);
        else
            tb_printf(b, "%c", ch);
    }
    tb_printf(b, "\"");
}

/* The members array of a standalone node: itself, the controller. */
static void json_standalone_member(keel_node *n, tbuf *b)
{
    const char *caps[KEEL_MAP_MAX_CAPS];
    size_t nc = local_caps(n, caps, KEEL_MAP_MAX_CAPS), j;
    char addr[KEEL_ADDR_MAX + 1];

    tb_printf(b, "{\"name\": ");
    tb_json_str(b, self_name(n));
    tb_printf(b, ", \"self\": true, \"insecure\": %s, \"listen\": ",
              n->opts.insecure ? "true" : "false");
    if (n->listen_addr != NULL) {
        self_addr(n, addr, sizeof addr);
        tb_json_str(b, addr);
    } else {
        tb_printf(b, "null");
    }
    tb_printf(b, ", \"incarnation\": 1, \"capabilities\": [");
    for (j = 1; j < nc; j++) {
        tb_printf(b, "%s", j > 1 ? ", " : "");
        tb_json_str(b, caps[j]);
    }
    tb_printf(b, "], \"controller\": true}");
}

/* One unit array entry of a standalone node: every shard its own at
 * epoch 1, no move, no backups. */
static void json_standalone_unit(keel_node *n, tbuf *b, const char *cap)
{
    uint32_t s;

    tb_printf(b, "{\"capability\": ");
    tb_json_str(b, cap);
    tb_printf(b, ", \"owners\": [");
    for (s = 0; s < n->opts.shard_count; s++) {
        tb_printf(b, "%s", s ? ", " : "");
        tb_json_str(b, self_name(n));
    }
    tb_printf(b, "], \"shard_epochs\": [");
    for (s = 0; s < n->opts.shard_count; s++)
        tb_printf(b, "%s1", s ? ", " : "");
    tb_printf(b, "], \"targets\": {}, \"backups\": {}, "
                 "\"out_of_sync\": {}}");
}

/* The replication figures of this node (the same as /metrics): its lag
 * per backup as a primary, and the counters of the stream, catch-up and
 * its controller's in-sync set changes. Zeros and no backup standalone. */
static void json_replication(keel_node *n, tbuf *b)
{
    size_t nl, k;
    keel_repl_lag *lag = keel__repl_lag(n, &nl);
    keel_stats st;

    keel_node_stats(n, &st);
    tb_printf(b, "{\"lag_max_ms\": %" PRIu64 ", \"backups\": [",
              st.repl_lag_ms);
    for (k = 0; k < nl; k++) {
        tb_printf(b, "%s{\"name\": ", k ? ", " : "");
        tb_json_str(b, lag[k].backup);
        tb_printf(b, ", \"lag_ms\": %.3f, \"unacked_frames\": %" PRIu64 "}",
                  lag[k].lag_s * 1000, lag[k].frames);
    }
    tb_printf(b, "], \"frames_sent\": %" PRIu64 ", \"acks\": %" PRIu64
                 ", \"waiting\": %" PRIu64 ", \"drop_requests\": %" PRIu64
                 ", \"suspects\": %" PRIu64 ", \"catchups\": %" PRIu64
                 ", \"catchup_bytes\": %" PRIu64
                 ", \"catchup_waits\": %" PRIu64
                 ", \"catchup_same\": %" PRIu64
                 ", \"copies_deleted\": %" PRIu64 ", \"isr_shrinks\": %" PRIu64
                 ", \"isr_expansions\": %" PRIu64 ", \"failovers\": %" PRIu64
                 "}",
              st.repl_frames_sent, st.repl_acks, st.repl_waiting,
              st.repl_drop_requests, st.repl_suspects, st.repl_catchups,
              st.repl_catchup_bytes, st.repl_catchup_waits,
              st.repl_catchup_same, st.repl_copies_deleted, st.isr_shrinks,
              st.isr_expansions,
              st.failovers);
    free(lag);
}

/* One schema in both modes: a standalone node answers as the only member
 * of a cluster of its own (no name), its controller, owning every unit at
 * epoch 1, as the text answers do. */
int keel__info_json(keel_node *n, const char *http_addr, char **json,
                    size_t *len)
{
    keel_cluster *c = cluster_of(n);
    const keel_shard_map *m = NULL;
    const keel_member *v = NULL;
    const char *ctl, *self;
    size_t nv = 0, i, j;
    uint32_t ci, s, k;
    tbuf b = {0};
    char *text = NULL, *line, *nl = NULL;
    size_t tlen = 0;
    char err[64];

    if (c != NULL) {
        m = keel_cluster_map(c);
        ctl = keel_cluster_controller_name(c);
        self = keel_cluster_node_name(c);
        v = keel_cluster_view(c, &nv);
    } else {
        ctl = self = self_name(n);
    }
    tb_printf(&b, "{\"mode\": \"%s\", \"insecure\": %s, \"cluster\": ",
              c ? "cluster" : "standalone",
              n->opts.insecure ? "true" : "false");
    if (c != NULL)
        tb_json_str(&b, keel_cluster_name(c));
    else
        tb_printf(&b, "null");
    tb_printf(&b, ", \"self\": ");
    tb_json_str(&b, self);
    tb_printf(&b, ", \"http\": ");
    tb_json_str(&b, http_addr);
    tb_printf(&b, ", \"members\": [");
    if (c == NULL)
        json_standalone_member(n, &b);
    for (i = 0; i < nv; i++) {
        tb_printf(&b, "%s{\"name\": ", i ? ", " : "");
        tb_json_str(&b, v[i].name);
        tb_printf(&b, ", \"self\": %s, \"insecure\": %s, \"listen\": ",
                  strcmp(v[i].name, self) == 0 ? "true" : "false",
                  member_insecure(n, c, &v[i]) ? "true" : "false");
        tb_json_str(&b, v[i].addr);
        tb_printf(&b, ", \"incarnation\": %" PRId64 ", \"capabilities\": [",
                  v[i].incarnation);
        for (j = 0; j < v[i].ncaps; j++) {
            tb_printf(&b, "%s", j ? ", " : "");
            tb_json_str(&b, v[i].caps[j]);
        }
        tb_printf(&b, "], \"controller\": %s}",
                  ctl && strcmp(ctl, v[i].name) == 0 ? "true" : "false");
    }
    tb_printf(&b, "], \"controller\": ");
    if (ctl)
        tb_json_str(&b, ctl);
    else
        tb_printf(&b, "null");
    /* capabilities: reuse the text answer's computation. */
    tb_printf(&b, ", \"capabilities\": {");
    {
        static const uint8_t q[] = "capabilities";
        if (keel__info(n, q, sizeof q - 1, &text, &tlen, err, sizeof err) !=
            0)
            b.oom = 1;
    }
    for (line = text, i = 0; line != NULL && *line; line = nl + 1) {
        /* "capability NAME nodes A,B\n"; the insecure line is the JSON's
         * own fields. */
        char *name, *nodes, *comma;
        nl = strchr(line, '\n');
        *nl = '\0';
        if (strncmp(line, "capability ", sizeof "capability " - 1) != 0)
            continue;
        name = line + sizeof "capability " - 1;
        nodes = strstr(name, " nodes ");
        *nodes = '\0';
        nodes += sizeof " nodes " - 1;
        tb_printf(&b, "%s", i++ ? ", " : "");
        tb_json_str(&b, strcmp(name, DEFAULT_CAP) == 0 ? "" : name);
        tb_printf(&b, ": [");
        if (strcmp(nodes, NONE) != 0) {
            for (j = 0; nodes != NULL; j++) {
                comma = strchr(nodes, ',');
                if (comma)
                    *comma = '\0';
                tb_printf(&b, "%s", j ? ", " : "");
                tb_json_str(&b, nodes);
                nodes = comma ? comma + 1 : NULL;
            }
        }
        tb_printf(&b, "]");
    }
    free(text);
    tb_printf(&b, "}, \"map_epoch\": %" PRIu64 ", \"shard_count\": %" PRIu32
                  ", \"units\": [",
              c == NULL ? 1 : m ? m->map_epoch : 0, n->opts.shard_count);
    if (c == NULL) {
        const char *caps[KEEL_MAP_MAX_CAPS];
        size_t nc = local_caps(n, caps, KEEL_MAP_MAX_CAPS);
        for (i = 0; i < nc; i++) {
            tb_printf(&b, "%s", i ? ", " : "");
            json_standalone_unit(n, &b, caps[i]);
        }
    }
    for (ci = 0; m != NULL && ci < m->ncaps; ci++) {
        tb_printf(&b, "%s{\"capability\": ", ci ? ", " : "");
        tb_json_str(&b, m->caps[ci]);
        tb_printf(&b, ", \"owners\": [");
        for (s = 0; s < m->shard_count; s++) {
            const char *o = keel_map_primary(m, ci, s);
            tb_printf(&b, "%s", s ? ", " : "");
            if (o)
                tb_json_str(&b, o);
            else
                tb_printf(&b, "null");
        }
        tb_printf(&b, "], \"shard_epochs\": [");
        for (s = 0; s < m->shard_count; s++)
            tb_printf(&b, "%s%" PRIu64, s ? ", " : "",
                      keel_map_unit_at(m, ci, s)->shard_epoch);
        tb_printf(&b, "], \"targets\": {");
        for (s = 0, j = 0; s < m->shard_count; s++) {
            const keel_map_unit *u = keel_map_unit_at(m, ci, s);
            if (u->target == KEEL_MAP_NO_NODE)
                continue;
            tb_printf(&b, "%s\"%" PRIu32 "\": ", j++ ? ", " : "", s);
            tb_json_str(&b, m->nodes[u->target]);
        }
        /* Replicas: per shard with backups, the backups in map order, and
         * those of them out of the in-sync set. */
        for (k = 0; k < 2; k++) {
            tb_printf(&b, k ? "}, \"out_of_sync\": {" : "}, \"backups\": {");
            for (s = 0, j = 0; s < m->shard_count; s++) {
                const keel_map_unit *u = keel_map_unit_at(m, ci, s);
                unsigned r, o = 0;
                for (r = 1; r < u->nreplicas; r++)
                    if (!k || !(u->insync & (1u << r)))
                        o++;
                if (o == 0)
                    continue;
                tb_printf(&b, "%s\"%" PRIu32 "\": [", j++ ? ", " : "", s);
                for (r = 1, o = 0; r < u->nreplicas; r++) {
                    if (k && (u->insync & (1u << r)))
                        continue;
                    tb_printf(&b, "%s", o++ ? ", " : "");
                    tb_json_str(&b, m->nodes[u->replicas[r]]);
                }
                tb_printf(&b, "]");
            }
        }
        tb_printf(&b, "}}");
    }
    tb_printf(&b, "], \"replication\": ");
    json_replication(n, &b);
    tb_printf(&b, "}\n");
    return tb_finish(&b, json, len);
}

/* ----------------------------------------------------------- the C API */

struct info_sync {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const uint8_t *body;
    size_t blen;
    char *text;
    size_t len;
    int status, done;
};

static void info_post_fn(keel_node *n, void *data)
{
    struct info_sync *s = data;
    char err[160];
    char *text = NULL;
    size_t len = 0;
    int rc = n->stopping ? KEEL_ESTOPPING
                         : keel__info(n, s->body, s->blen, &text, &len, err,
                                      sizeof err);

    pthread_mutex_lock(&s->mu);
    s->status = rc;
    s->text = text;
    s->len = len;
    s->done = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int keel_node_info(keel_node *node, int argc, const char *const *argv,
                   char **text, size_t *len)
{
    struct info_sync s;
    size_t blen = 0, off = 0;
    uint8_t *body;
    int i, rc;

    if (node == NULL || argc < 1 || argv == NULL || text == NULL ||
        keel__on_loop_thread(node)) /* it would wait for itself */
        return KEEL_EINVAL;
    *text = NULL;
    if (len != NULL)
        *len = 0;
    for (i = 0; i < argc; i++) {
        if (argv[i] == NULL)
            return KEEL_EINVAL;
        blen += strlen(argv[i]) + (i > 0);
    }
    if ((body = malloc(blen ? blen : 1)) == NULL)
        return KEEL_ENOMEM;
    for (i = 0; i < argc; i++) {
        size_t l = strlen(argv[i]);
        if (i > 0)
            body[off++] = '\0';
        memcpy(body + off, argv[i], l);
        off += l;
    }
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    s.body = body;
    s.blen = blen;
    rc = keel_node_post(node, info_post_fn, &s);
    if (rc == 0) {
        pthread_mutex_lock(&s.mu);
        while (!s.done)
            pthread_cond_wait(&s.cv, &s.mu);
        pthread_mutex_unlock(&s.mu);
        rc = s.status;
    }
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    free(body);
    if (rc == 0) {
        *text = s.text;
        if (len != NULL)
            *len = s.len;
    }
    return rc;
}

void keel__info_health(keel_node *n, struct keel_info_health *h)
{
    keel_cluster *c = cluster_of(n);
    const keel_shard_map *m;
    uint32_t ci, s;
    size_t nv;
    unsigned i;

    memset(h, 0, sizeof *h);
    if (c == NULL) {
        h->members = 1;
        return;
    }
    (void)keel_cluster_view(c, &nv);
    h->members = nv;
    if ((m = keel_cluster_map(c)) == NULL)
        return;
    for (ci = 0; ci < m->ncaps; ci++)
        for (s = 0; s < m->shard_count; s++) {
            const keel_map_unit *u = keel_map_unit_at(m, ci, s);
            const char *owner = keel_map_primary(m, ci, s);

            if (owner == NULL || keel_cluster_member_addr(c, owner, NULL, 0) ==
                                     KEEL_ENOTFOUND)
                h->units_unavailable++;
            if (u->target != KEEL_MAP_NO_NODE)
                h->units_moving++;
            for (i = 1; i < u->nreplicas; i++)
                if (!(u->insync & (1u << i)))
                    h->replicas_out_of_sync++;
        }
}
