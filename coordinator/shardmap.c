/* Shard map: tables, rendezvous placement, and the `map` znode codec. */
#include "coordinator/shardmap.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "coordinator/codec.h"
#include "keel.h"

static const uint8_t map_magic[4] = {'K', 'M', 'A', 'P'};
/* Written: 3 (store ids, in-sync flags, promotions). Read: 1 to 3. */
#define MAP_FORMAT_V4 4
#define MAP_FORMAT 3
#define MAP_FORMAT_V2 2
#define MAP_FORMAT_V1 1
#define STORE_BYTES (KEEL_MAP_STORE_HEX / 2)

int keel_name_valid(const char *s, int allow_empty)
{
    size_t i, n;

    if (s == NULL)
        return 0;
    n = strlen(s);
    if (n == 0)
        return allow_empty;
    if (n > KEEL_NAME_MAX || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static void unit_clear(keel_map_unit *u)
{
    memset(u, 0, sizeof *u);
    u->target = KEEL_MAP_NO_NODE;
}

int keel_map_init(keel_shard_map *m, uint32_t shard_count)
{
    memset(m, 0, sizeof *m);
    if (shard_count == 0 || shard_count > KEEL_MAP_MAX_SHARDS)
        return KEEL_EINVAL;
    m->shard_count = shard_count;
    return 0;
}

void keel_map_free(keel_shard_map *m)
{
    if (m == NULL)
        return;
    keel_names_free(m->caps, m->ncaps);
    keel_names_free(m->nodes, m->nnodes);
    free(m->store_ids);
    free(m->units);
    memset(m, 0, sizeof *m);
}

static char **dup_names(char *const *v, uint32_t n)
{
    char **out = calloc(n ? n : 1, sizeof *out);
    uint32_t i;

    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++)
        if ((out[i] = strdup(v[i])) == NULL) {
            keel_names_free(out, i);
            return NULL;
        }
    return out;
}

int keel_map_copy(keel_shard_map *dst, const keel_shard_map *src)
{
    size_t nunits = (size_t)src->ncaps * src->shard_count;

    memset(dst, 0, sizeof *dst);
    dst->map_epoch = src->map_epoch;
    dst->shard_count = src->shard_count;
    dst->caps = dup_names(src->caps, src->ncaps);
    dst->nodes = dup_names(src->nodes, src->nnodes);
    dst->store_ids = calloc(src->nnodes ? src->nnodes : 1,
                            sizeof *dst->store_ids);
    dst->units = malloc(nunits ? nunits * sizeof *dst->units : 1);
    if (dst->caps == NULL || dst->nodes == NULL || dst->store_ids == NULL ||
        dst->units == NULL) {
        keel_names_free(dst->caps, dst->caps ? src->ncaps : 0);
        keel_names_free(dst->nodes, dst->nodes ? src->nnodes : 0);
        free(dst->store_ids);
        free(dst->units);
        memset(dst, 0, sizeof *dst);
        return KEEL_ENOMEM;
    }
    dst->ncaps = src->ncaps;
    dst->nnodes = src->nnodes;
    if (nunits > 0)
        memcpy(dst->units, src->units, nunits * sizeof *dst->units);
    if (src->nnodes > 0 && src->store_ids != NULL)
        memcpy(dst->store_ids, src->store_ids,
               src->nnodes * sizeof *dst->store_ids);
    return 0;
}

int keel_map_cap_index(const keel_shard_map *m, const char *cap)
{
    int i = keel_names_find(m->caps, m->ncaps, cap);

    return i >= 0 ? i : -1;
}

int keel_map_node_index(const keel_shard_map *m, const char *name)
{
    int i = keel_names_find(m->nodes, m->nnodes, name);

    return i >= 0 ? i : -1;
}

int keel_map_add_cap(keel_shard_map *m, const char *cap)
{
    int pos = keel_names_find(m->caps, m->ncaps, cap);
    size_t sc = m->shard_count, tail;
    keel_map_unit *units;
    char **caps, *copy;
    uint32_t s;

    if (pos >= 0)
        return pos;
    if (!keel_name_valid(cap, 1) || m->ncaps >= KEEL_MAP_MAX_CAPS)
        return KEEL_EINVAL;
    pos = -pos - 1;
    copy = strdup(cap);
    caps = realloc(m->caps, (m->ncaps + 1) * sizeof *caps);
    if (copy == NULL || caps == NULL) {
        free(copy);
        if (caps != NULL)
            m->caps = caps;
        return KEEL_ENOMEM;
    }
    m->caps = caps;
    units = realloc(m->units, (m->ncaps + 1) * sc * sizeof *units);
    if (units == NULL) {
        free(copy);
        return KEEL_ENOMEM;
    }
    m->units = units;
    tail = (m->ncaps - (uint32_t)pos) * sc;
    memmove(&units[((size_t)pos + 1) * sc], &units[(size_t)pos * sc],
            tail * sizeof *units);
    for (s = 0; s < sc; s++)
        unit_clear(&units[(size_t)pos * sc + s]);
    memmove(&caps[pos + 1], &caps[pos],
            (m->ncaps - (uint32_t)pos) * sizeof *caps);
    caps[pos] = copy;
    m->ncaps++;
    return pos;
}

static void renumber(keel_shard_map *m, const uint16_t *remap)
{
    size_t i, n = (size_t)m->ncaps * m->shard_count;
    int r;

    for (i = 0; i < n; i++) {
        keel_map_unit *u = &m->units[i];
        for (r = 0; r < u->nreplicas; r++)
            u->replicas[r] = remap[u->replicas[r]];
        if (u->target != KEEL_MAP_NO_NODE)
            u->target = remap[u->target];
    }
}

int keel_map_add_node(keel_shard_map *m, const char *name)
{
    int pos = keel_names_find(m->nodes, m->nnodes, name);
    char **nodes, *copy;
    char (*sids)[KEEL_MAP_STORE_HEX + 1];
    uint16_t *remap;
    uint32_t i;

    if (pos >= 0)
        return pos;
    if (!keel_name_valid(name, 0) || m->nnodes >= KEEL_MAP_MAX_NODES)
        return KEEL_EINVAL;
    pos = -pos - 1;
    copy = strdup(name);
    remap = malloc((m->nnodes + 1) * sizeof *remap);
    nodes = realloc(m->nodes, (m->nnodes + 1) * sizeof *nodes);
    if (nodes != NULL)
        m->nodes = nodes;
    sids = realloc(m->store_ids, (m->nnodes + 1) * sizeof *sids);
    if (sids != NULL)
        m->store_ids = sids;
    if (copy == NULL || remap == NULL || nodes == NULL || sids == NULL) {
        free(copy);
        free(remap);
        return KEEL_ENOMEM;
    }
    for (i = 0; i < m->nnodes; i++)
        remap[i] = (uint16_t)(i < (uint32_t)pos ? i : i + 1);
    renumber(m, remap);
    free(remap);
    memmove(&nodes[pos + 1], &nodes[pos],
            (m->nnodes - (uint32_t)pos) * sizeof *nodes);
    memmove(&sids[pos + 1], &sids[pos],
            (m->nnodes - (uint32_t)pos) * sizeof *sids);
    nodes[pos] = copy;
    sids[pos][0] = '\0';
    m->nnodes++;
    return pos;
}

void keel_map_compact_nodes(keel_shard_map *m)
{
    size_t i, n = (size_t)m->ncaps * m->shard_count;
    uint16_t remap[KEEL_MAP_MAX_NODES];
    uint8_t used[KEEL_MAP_MAX_NODES];
    uint32_t j, k = 0;
    int r;

    memset(used, 0, sizeof used);
    for (i = 0; i < n; i++) {
        const keel_map_unit *u = &m->units[i];
        for (r = 0; r < u->nreplicas; r++)
            used[u->replicas[r]] = 1;
        if (u->target != KEEL_MAP_NO_NODE)
            used[u->target] = 1;
    }
    for (j = 0; j < m->nnodes; j++) {
        if (used[j]) {
            remap[j] = (uint16_t)k;
            if (k != j)
                memcpy(m->store_ids[k], m->store_ids[j],
                       sizeof m->store_ids[0]);
            m->nodes[k++] = m->nodes[j];
        } else {
            remap[j] = KEEL_MAP_NO_NODE;
            free(m->nodes[j]);
        }
    }
    m->nnodes = k;
    renumber(m, remap);
}

int keel_map_store_valid(const char *s)
{
    size_t i;

    if (s == NULL || strlen(s) != KEEL_MAP_STORE_HEX)
        return 0;
    for (i = 0; i < KEEL_MAP_STORE_HEX; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

int keel_map_set_store(keel_shard_map *m, uint32_t idx, const char *store)
{
    if (idx >= m->nnodes)
        return KEEL_EINVAL;
    if (store == NULL || store[0] == '\0' ||
        strspn(store, "0") == KEEL_MAP_STORE_HEX) {
        m->store_ids[idx][0] = '\0';
        return 0;
    }
    if (!keel_map_store_valid(store))
        return KEEL_EINVAL;
    memcpy(m->store_ids[idx], store, KEEL_MAP_STORE_HEX + 1);
    return 0;
}

int keel_map_replica_pos(const keel_map_unit *u, uint16_t idx)
{
    int r;

    for (r = 0; r < u->nreplicas; r++)
        if (u->replicas[r] == idx)
            return r;
    return -1;
}

const char *keel_map_primary(const keel_shard_map *m, uint32_t cap,
                             uint32_t shard)
{
    const keel_map_unit *u;

    if (cap >= m->ncaps || shard >= m->shard_count)
        return NULL;
    u = keel_map_unit_at(m, cap, shard);
    return u->nreplicas > 0 ? m->nodes[u->replicas[0]] : NULL;
}

size_t keel_map_units_led(const keel_shard_map *m, uint32_t idx)
{
    size_t i, n = 0, nunits = (size_t)m->ncaps * m->shard_count;

    for (i = 0; i < nunits; i++)
        if (m->units[i].nreplicas > 0 && m->units[i].replicas[0] == idx)
            n++;
    return n;
}

/* ------------------------------------------------------------ placement */

uint64_t keel_rendezvous_score(const char *node, const char *cap,
                               uint32_t shard)
{
    uint8_t buf[2 + 2 * 255 + 4];
    size_t nl = strlen(node), cl = strlen(cap), off = 0;

    if (nl > 255)
        nl = 255;
    if (cl > 255)
        cl = 255;
    buf[off++] = (uint8_t)nl;
    memcpy(buf + off, node, nl);
    off += nl;
    buf[off++] = (uint8_t)cl;
    memcpy(buf + off, cap, cl);
    off += cl;
    buf[off++] = (uint8_t)(shard >> 24);
    buf[off++] = (uint8_t)(shard >> 16);
    buf[off++] = (uint8_t)(shard >> 8);
    buf[off++] = (uint8_t)shard;
    return XXH3_64bits(buf, off);
}

static int member_has_cap(const keel_map_member *mb, const char *cap)
{
    size_t i;

    if (cap[0] == '\0')
        return 1;
    for (i = 0; i < mb->ncaps; i++)
        if (strcmp(mb->caps[i], cap) == 0)
            return 1;
    return 0;
}

/* Does (sa, na) beat (sb, nb)? */
static int better(uint64_t sa, const char *na, uint64_t sb, const char *nb)
{
    if (sa != sb)
        return sa > sb;
    return strcmp(na, nb) < 0;
}

size_t keel_rendezvous_top(const keel_map_member *members, size_t n,
                           const char *cap, uint32_t shard, size_t k,
                           size_t *out)
{
    uint64_t best[KEEL_MAP_MAX_REPLICAS];
    size_t got = 0, i, j;

    if (k > KEEL_MAP_MAX_REPLICAS)
        k = KEEL_MAP_MAX_REPLICAS;
    for (i = 0; i < n; i++) {
        uint64_t s;
        if (!member_has_cap(&members[i], cap))
            continue;
        s = keel_rendezvous_score(members[i].name, cap, shard);
        /* insertion into the sorted top-k */
        for (j = got; j > 0; j--) {
            if (!better(s, members[i].name, best[j - 1],
                        members[out[j - 1]].name))
                break;
            if (j < k) {
                best[j] = best[j - 1];
                out[j] = out[j - 1];
            }
        }
        if (j < k) {
            best[j] = s;
            out[j] = i;
            if (got < k)
                got++;
        }
    }
    return got;
}

int keel_map_compute(const keel_map_member *members, size_t n,
                     const char *const *caps, size_t ncaps,
                     uint32_t shard_count, size_t k, keel_shard_map *out)
{
    keel_shard_map m;
    size_t i, j, top[KEEL_MAP_MAX_REPLICAS];
    int *node_of = NULL; /* member index -> node index */
    uint32_t c, s;
    int rc;

    if (k == 0 || k > KEEL_MAP_MAX_REPLICAS || n > KEEL_MAP_MAX_NODES ||
        (n > 0 && members == NULL))
        return KEEL_EINVAL;
    if ((rc = keel_map_init(&m, shard_count)) != 0)
        return rc;
    for (i = 0; i < n; i++) {
        for (j = 0; j < members[i].ncaps; j++)
            if (!keel_name_valid(members[i].caps[j], 0)) {
                rc = KEEL_EINVAL;
                goto fail;
            }
        rc = keel_map_add_node(&m, members[i].name);
        if (rc < 0)
            goto fail;
    }
    if (m.nnodes != n) { /* a duplicate name */
        rc = KEEL_EINVAL;
        goto fail;
    }
    if ((rc = keel_map_add_cap(&m, "")) < 0)
        goto fail;
    for (i = 0; i < ncaps; i++)
        if ((rc = keel_map_add_cap(&m, caps[i])) < 0)
            goto fail;
    node_of = malloc((n ? n : 1) * sizeof *node_of);
    if (node_of == NULL) {
        rc = KEEL_ENOMEM;
        goto fail;
    }
    for (i = 0; i < n; i++)
        node_of[i] = keel_map_node_index(&m, members[i].name);
    for (c = 0; c < m.ncaps; c++)
        for (s = 0; s < shard_count; s++) {
            keel_map_unit *u = keel_map_unit_at(&m, c, s);
            size_t got =
                keel_rendezvous_top(members, n, m.caps[c], s, k, top);
            for (j = 0; j < got; j++)
                u->replicas[j] = (uint16_t)node_of[top[j]];
            u->nreplicas = (uint8_t)got;
        }
    free(node_of);
    *out = m;
    return 0;
fail:
    free(node_of);
    keel_map_free(&m);
    return rc;
}

/* --------------------------------------------------------------- codec */

/* Whether the unit has a primary, which is then always in sync. */
static int has_primary(const keel_map_unit *u)
{
    return u->shard_epoch > 0 && u->nreplicas > 0;
}

/* The in-sync flags of replicas[1..nreplicas-1] (the primary's is
 * implied), as the header's high bits carry them. */
static unsigned backup_flags(const keel_map_unit *u)
{
    if (!has_primary(u) || u->nreplicas < 2)
        return 0;
    return (unsigned)(u->insync >> 1) & ((1u << (u->nreplicas - 1)) - 1);
}

/* A promoted unit's fallback flags as the encoding carries them: replicas
 * listed after the primary only. */
static unsigned fallback_of(const keel_map_unit *u)
{
    if (!has_primary(u) || !u->promoted || u->fallback_since == 0)
        return 0;
    return u->fallback & ((1u << u->nreplicas) - 1) & ~1u;
}

int keel_map_encode(const keel_shard_map *m, uint8_t **out, size_t *len)
{
    keel_wbuf w = {0};
    size_t i, n = (size_t)m->ncaps * m->shard_count;
    uint32_t j;
    int r, format = MAP_FORMAT;

    /* Format 4 only while a unit needs it: nodes of the release before
     * read format 3 (and keep the last map they could read otherwise). */
    for (i = 0; i < n && format == MAP_FORMAT; i++)
        if (fallback_of(&m->units[i]) != 0)
            format = MAP_FORMAT_V4;
    keel_wbuf_put(&w, map_magic, 4);
    keel_wbuf_u8(&w, (unsigned)format);
    keel_wbuf_u8(&w, 0);
    keel_wbuf_be(&w, m->map_epoch, 8);
    keel_wbuf_be(&w, m->shard_count, 4);
    keel_wbuf_be(&w, m->ncaps, 2);
    keel_wbuf_be(&w, m->nnodes, 2);
    for (j = 0; j < m->ncaps; j++)
        keel_wbuf_str8(&w, m->caps[j]);
    for (j = 0; j < m->nnodes; j++) {
        keel_wbuf_str8(&w, m->nodes[j]);
        keel_wbuf_store(&w, m->store_ids != NULL ? m->store_ids[j] : "");
    }
    for (i = 0; i < n; i++) {
        const keel_map_unit *u = &m->units[i];
        int has_target = u->target != KEEL_MAP_NO_NODE;
        keel_wbuf_u8(&w, (unsigned)(u->nreplicas | (has_target ? 8 : 0) |
                                    backup_flags(u) << 4));
        for (r = 0; r < u->nreplicas; r++)
            keel_wbuf_varint(&w, u->replicas[r]);
        if (has_target)
            keel_wbuf_varint(&w, u->target);
        keel_wbuf_varint(&w, u->shard_epoch);
    }
    {
        size_t np = 0, last = 0;
        for (i = 0; i < n; i++)
            np += m->units[i].promoted && has_primary(&m->units[i]);
        keel_wbuf_varint(&w, np);
        for (i = 0, np = 0; i < n; i++) {
            if (!m->units[i].promoted || !has_primary(&m->units[i]))
                continue;
            keel_wbuf_varint(&w, np++ == 0 ? i : i - last);
            last = i;
            if (format == MAP_FORMAT_V4) {
                unsigned f = fallback_of(&m->units[i]);
                keel_wbuf_u8(&w, f);
                if (f != 0)
                    keel_wbuf_varint(&w, m->units[i].fallback_since);
            }
        }
    }
    return keel_wbuf_seal(&w, out, len);
}

/* Format 2's node table: n x (u8 len, name, 16 bytes store id), names
 * sorted, unique and valid. Sets m->nodes and m->store_ids on success
 * only. KEEL_ECORRUPT or KEEL_ENOMEM. */
static int names_with_stores(keel_rbuf *r, uint32_t n, keel_shard_map *m)
{
    char **v;
    char (*sids)[KEEL_MAP_STORE_HEX + 1];
    uint32_t i;
    int oom = 0;

    /* Each entry takes at least 2 + STORE_BYTES bytes: refuse counts the
     * input cannot hold before allocating for them. */
    if ((size_t)n * (2 + STORE_BYTES) > r->len - r->off)
        return KEEL_ECORRUPT;
    v = calloc(n ? n : 1, sizeof *v);
    sids = calloc(n ? n : 1, sizeof *sids);
    if (v == NULL || sids == NULL) {
        free(v);
        free(sids);
        return KEEL_ENOMEM;
    }
    for (i = 0; i < n; i++) {
        v[i] = keel_rbuf_str8(r, &oom);
        if (v[i] == NULL || !keel_name_valid(v[i], 0) ||
            (i > 0 && strcmp(v[i - 1], v[i]) >= 0)) {
            keel_names_free(v, v[i] != NULL ? i + 1 : i);
            free(sids);
            return oom ? KEEL_ENOMEM : KEEL_ECORRUPT;
        }
        keel_rbuf_store(r, sids[i]);
    }
    if (r->bad) {
        keel_names_free(v, n);
        free(sids);
        return KEEL_ECORRUPT;
    }
    m->nodes = v;
    m->store_ids = sids;
    return 0;
}

int keel_map_decode(const void *buf, size_t len, keel_shard_map *out)
{
    keel_rbuf r = {buf, len, 0, 0};
    keel_shard_map m;
    const uint8_t *magic;
    size_t i, n;
    uint64_t sum;
    unsigned format;
    int rc;

    memset(&m, 0, sizeof m);
    if (buf == NULL || len < 4 + 2 + 8 + 4 + 2 + 2 + 8)
        return KEEL_ECORRUPT;
    /* The checksum first: anything else may be garbage. */
    {
        keel_rbuf t = {(const uint8_t *)buf + len - 8, 8, 0, 0};
        sum = keel_rbuf_be(&t, 8);
    }
    if (sum != XXH3_64bits(buf, len - 8))
        return KEEL_ECORRUPT;
    r.len = len - 8;
    magic = keel_rbuf_take(&r, 4);
    if (magic == NULL || memcmp(magic, map_magic, 4) != 0)
        return KEEL_ECORRUPT;
    format = keel_rbuf_u8(&r);
    if ((format != MAP_FORMAT_V4 && format != MAP_FORMAT &&
         format != MAP_FORMAT_V2 && format != MAP_FORMAT_V1) ||
        keel_rbuf_u8(&r) != 0)
        return KEEL_ECORRUPT;
    m.map_epoch = keel_rbuf_be(&r, 8);
    m.shard_count = (uint32_t)keel_rbuf_be(&r, 4);
    m.ncaps = (uint32_t)keel_rbuf_be(&r, 2);
    m.nnodes = (uint32_t)keel_rbuf_be(&r, 2);
    if (r.bad || m.shard_count == 0 || m.shard_count > KEEL_MAP_MAX_SHARDS ||
        m.ncaps > KEEL_MAP_MAX_CAPS || m.nnodes > KEEL_MAP_MAX_NODES)
        return KEEL_ECORRUPT;
    {
        uint32_t ncaps = m.ncaps, nnodes = m.nnodes;
        m.ncaps = m.nnodes = 0;
        if ((rc = keel_rbuf_names(&r, ncaps, 1, &m.caps)) != 0)
            return rc;
        m.ncaps = ncaps;
        if (format == MAP_FORMAT_V1) {
            rc = keel_rbuf_names(&r, nnodes, 0, &m.nodes);
        } else {
            /* Each name is followed by its store id: read them in turn,
             * then check the names as keel_rbuf_names would. */
            rc = names_with_stores(&r, nnodes, &m);
        }
        if (rc != 0)
            goto fail;
        m.nnodes = nnodes;
        if (m.store_ids == NULL &&
            (m.store_ids = calloc(nnodes ? nnodes : 1,
                                  sizeof *m.store_ids)) == NULL) {
            rc = KEEL_ENOMEM;
            goto fail;
        }
    }
    n = (size_t)m.ncaps * m.shard_count;
    /* Each unit takes at least 2 bytes: refuse sizes the input cannot
     * hold before allocating for them. */
    if (n * 2 > r.len - r.off) {
        rc = KEEL_ECORRUPT;
        goto fail;
    }
    m.units = malloc(n ? n * sizeof *m.units : 1);
    if (m.units == NULL) {
        rc = KEEL_ENOMEM;
        goto fail;
    }
    for (i = 0; i < n; i++) {
        keel_map_unit *u = &m.units[i];
        unsigned h = keel_rbuf_u8(&r);
        int k, j;
        unit_clear(u);
        if ((format == MAP_FORMAT_V1 && (h & ~0x0Fu) != 0) ||
            (h & 7) > KEEL_MAP_MAX_REPLICAS ||
            /* an in-sync flag for a replica beyond the count */
            ((h >> 4) >> ((h & 7) > 1 ? (h & 7) - 1 : 0)) != 0) {
            rc = KEEL_ECORRUPT;
            goto fail;
        }
        u->nreplicas = (uint8_t)(h & 7);
        for (k = 0; k < u->nreplicas; k++) {
            uint64_t v = keel_rbuf_varint(&r);
            if (v >= m.nnodes) {
                rc = KEEL_ECORRUPT;
                goto fail;
            }
            u->replicas[k] = (uint16_t)v;
            for (j = 0; j < k; j++)
                if (u->replicas[j] == u->replicas[k]) {
                    rc = KEEL_ECORRUPT;
                    goto fail;
                }
        }
        if (h & 8) {
            uint64_t v = keel_rbuf_varint(&r);
            if (v >= m.nnodes) {
                rc = KEEL_ECORRUPT;
                goto fail;
            }
            u->target = (uint16_t)v;
        }
        u->shard_epoch = keel_rbuf_varint(&r);
        if (r.bad) {
            rc = KEEL_ECORRUPT;
            goto fail;
        }
        if (has_primary(u)) {
            u->insync = (uint8_t)(1u | (h >> 4) << 1);
        } else if ((h >> 4) != 0) {
            /* in sync with no primary: nobody ever wrote it */
            rc = KEEL_ECORRUPT;
            goto fail;
        }
    }
    if (format >= MAP_FORMAT) {
        /* The promoted units, ascending: each must have a primary. */
        uint64_t np = keel_rbuf_varint(&r), k, at = 0;
        if (np > n) {
            rc = KEEL_ECORRUPT;
            goto fail;
        }
        for (k = 0; k < np; k++) {
            uint64_t d = keel_rbuf_varint(&r);
            if (r.bad || (k > 0 && d == 0) || d >= n || at + d >= n ||
                !has_primary(&m.units[at + d])) {
                rc = KEEL_ECORRUPT;
                goto fail;
            }
            at += d;
            m.units[at].promoted = 1;
            if (format == MAP_FORMAT_V4) {
                keel_map_unit *u = &m.units[at];
                unsigned f = keel_rbuf_u8(&r);
                /* only replicas after the primary, only listed ones */
                if ((f & 1) != 0 || (f >> u->nreplicas) != 0) {
                    rc = KEEL_ECORRUPT;
                    goto fail;
                }
                if (f != 0) {
                    u->fallback = (uint8_t)f;
                    u->fallback_since = keel_rbuf_varint(&r);
                    if (u->fallback_since == 0) {
                        rc = KEEL_ECORRUPT;
                        goto fail;
                    }
                }
            }
        }
    }
    if (r.bad || r.off != r.len) {
        rc = KEEL_ECORRUPT;
        goto fail;
    }
    if (format == MAP_FORMAT_V4) {
        /* written only for a unit with fallbacks: one with none is not a
         * map the encoder makes (it would be format 3) */
        for (i = 0; i < n && m.units[i].fallback == 0; i++)
            ;
        if (i == n) {
            rc = KEEL_ECORRUPT;
            goto fail;
        }
    }
    *out = m;
    return 0;
fail:
    keel_map_free(&m);
    return rc;
}

/* The in-sync set as the encoding carries it. */
static unsigned insync_of(const keel_map_unit *u)
{
    return has_primary(u) ? 1u | backup_flags(u) << 1 : 0;
}

static const char *store_of(const keel_shard_map *m, uint16_t idx)
{
    return m->store_ids != NULL ? m->store_ids[idx] : "";
}

int keel_map_same_placement(const keel_shard_map *a, const keel_shard_map *b)
{
    uint32_t c, s;
    int r;

    if (a->shard_count != b->shard_count || a->ncaps != b->ncaps)
        return 0;
    for (c = 0; c < a->ncaps; c++)
        if (strcmp(a->caps[c], b->caps[c]) != 0)
            return 0;
    for (c = 0; c < a->ncaps; c++)
        for (s = 0; s < a->shard_count; s++) {
            const keel_map_unit *ua = keel_map_unit_at(a, c, s);
            const keel_map_unit *ub = keel_map_unit_at(b, c, s);
            if (ua->shard_epoch != ub->shard_epoch ||
                ua->nreplicas != ub->nreplicas ||
                insync_of(ua) != insync_of(ub) ||
                (ua->promoted && has_primary(ua)) !=
                    (ub->promoted && has_primary(ub)) ||
                fallback_of(ua) != fallback_of(ub) ||
                (fallback_of(ua) != 0 &&
                 ua->fallback_since != ub->fallback_since) ||
                (ua->target == KEEL_MAP_NO_NODE) !=
                    (ub->target == KEEL_MAP_NO_NODE))
                return 0;
            if (ua->target != KEEL_MAP_NO_NODE &&
                (strcmp(a->nodes[ua->target], b->nodes[ub->target]) != 0 ||
                 strcmp(store_of(a, ua->target), store_of(b, ub->target))))
                return 0;
            for (r = 0; r < ua->nreplicas; r++)
                if (strcmp(a->nodes[ua->replicas[r]],
                           b->nodes[ub->replicas[r]]) != 0 ||
                    strcmp(store_of(a, ua->replicas[r]),
                           store_of(b, ub->replicas[r])) != 0)
                    return 0;
        }
    return 1;
}
