/* keel_batch: the unit of group commit.
 *
 * A batch is built for every commit, so it must not cost an allocation per
 * write. Every byte a caller hands in is copied into one arena that grows
 * geometrically; groups are offsets into it. keel_batch_reset() forgets
 * the contents and keeps the memory, so a reused batch stops allocating
 * once it has seen its largest commit. */
#include <stdlib.h>
#include <string.h>

#include "persistence/batch_internal.h"
#include "persistence/store.h"

#define BATCH_MIN_ARENA 4096u
#define BATCH_MIN_GROUPS 16u

keel_batch *keel_batch_create(void)
{
    return calloc(1, sizeof(keel_batch));
}

void keel_batch_destroy(keel_batch *b)
{
    if (b == NULL)
        return;
    free(b->buf);
    free(b->groups);
    free(b);
}

void keel_batch_reset(keel_batch *b)
{
    b->len = 0;
    b->ngroups = 0;
    b->nops = 0;
    b->next = NULL;
    b->wgen = 0;
    b->mergeable = 0;
    b->sync = 0;
}

/* Makes room for need more arena bytes. The arena exists once anything
 * is reserved, even 0 bytes: a group's offsets (cap_off, ops_off) point
 * into it whether or not it holds bytes, and offsetting a NULL arena is
 * undefined. */
static int batch_reserve(keel_batch *b, size_t need)
{
    size_t ncap;
    uint8_t *nbuf;

    if (need <= b->cap - b->len && b->buf != NULL)
        return 0;
    if (need > SIZE_MAX / 2 - b->len)
        return KEEL_ENOMEM;
    ncap = b->cap > 0 ? b->cap : BATCH_MIN_ARENA;
    while (ncap - b->len < need)
        ncap *= 2;
    nbuf = realloc(b->buf, ncap);
    if (nbuf == NULL)
        return KEEL_ENOMEM;
    b->buf = nbuf;
    b->cap = ncap;
    return 0;
}

int keel_batch_begin_group(keel_batch *b, const char *cap, uint16_t shard,
                           uint64_t epoch, void *tag)
{
    struct batch_group *g;
    size_t clen, pad;
    int rc;

    if (b == NULL)
        return KEEL_EINVAL;
    if (cap == NULL)
        cap = "";
    clen = strlen(cap);
    if (clen > 255)
        return KEEL_EINVAL;
    if (b->ngroups == b->gcap) {
        size_t ncap = b->gcap > 0 ? b->gcap * 2 : BATCH_MIN_GROUPS;
        struct batch_group *ng = realloc(b->groups, ncap * sizeof *ng);

        if (ng == NULL)
            return KEEL_ENOMEM;
        b->groups = ng;
        b->gcap = ncap;
    }
    /* The capability goes into the arena with a NUL after it (so that
     * keel_batch_group_unit can hand out a C string), padded so that the
     * ops after it stay aligned. */
    pad = (BATCH_ALIGN - (clen + 1) % BATCH_ALIGN) % BATCH_ALIGN;
    rc = batch_reserve(b, clen + 1 + pad);
    if (rc < 0)
        return rc;
    g = &b->groups[b->ngroups];
    g->cap_off = b->len;
    g->cap_len = clen;
    memcpy(b->buf + b->len, cap, clen);
    memset(b->buf + b->len + clen, 0, 1 + pad);
    b->len += clen + 1 + pad;
    g->ops_off = b->len;
    g->ops_end = b->len;
    g->nops = 0;
    g->epoch = epoch;
    g->tag = tag;
    g->shard = shard;
    g->status = 0;
    g->differs = 0;
    g->pre_status = 0;
    b->ngroups++;
    return 0;
}

/* Every key of a group must lie in the group's shard: the fence that
 * guards a write is the one of the shard it belongs to, so a write
 * slipping into another shard's range would escape fencing. */
static int batch_check_key(const keel_batch *b, const void *key, size_t klen)
{
    const struct batch_group *g;
    const uint8_t *k = key;

    if (b == NULL || b->ngroups == 0 || key == NULL || klen < 2)
        return KEEL_EINVAL;
    if (klen > KEEL_KEY_MAX)
        return KEEL_ELIMIT;
    g = &b->groups[b->ngroups - 1];
    if ((((unsigned)k[0] << 8) | k[1]) != g->shard)
        return KEEL_EINVAL;
    return 0;
}

static int batch_append(keel_batch *b, uint32_t kind, const void *key,
                        size_t klen, uint64_t version, const void *data,
                        size_t dlen)
{
    struct batch_group *g = &b->groups[b->ngroups - 1];
    struct batch_op op;
    size_t size;
    int rc;

    op.kind = kind;
    op.klen = (uint32_t)klen;
    op.version = version;
    op.dlen = dlen;
    if (dlen > SIZE_MAX / 2)
        return KEEL_ENOMEM;
    size = batch_op_size(&op);
    rc = batch_reserve(b, size);
    if (rc < 0)
        return rc;
    memcpy(b->buf + b->len, &op, sizeof op);
    memcpy(b->buf + b->len + sizeof op, key, klen);
    if (dlen > 0)
        memcpy(b->buf + b->len + sizeof op + klen, data, dlen);
    memset(b->buf + b->len + sizeof op + klen + dlen, 0,
           size - sizeof op - klen - dlen);
    b->len += size;
    g->ops_end = b->len;
    g->nops++;
    b->nops++;
    return 0;
}

int keel_batch_put(keel_batch *b, const void *key, size_t klen,
                   uint64_t version, const void *data, size_t len)
{
    int rc = batch_check_key(b, key, klen);

    if (rc < 0)
        return rc;
    if (len > 0 && data == NULL)
        return KEEL_EINVAL;
    /* LMDB keeps a value's size in 32 bits. */
    if (len > UINT32_MAX - KEEL_RECORD_HEADER)
        return KEEL_ETOOBIG;
    return batch_append(b, BATCH_OP_PUT, key, klen, version, data, len);
}

int keel_batch_del(keel_batch *b, const void *key, size_t klen)
{
    int rc = batch_check_key(b, key, klen);

    if (rc < 0)
        return rc;
    return batch_append(b, BATCH_OP_DEL, key, klen, 0, NULL, 0);
}

int keel_batch_del_prefix(keel_batch *b, const void *prefix, size_t plen)
{
    int rc = batch_check_key(b, prefix, plen);

    if (rc < 0)
        return rc;
    return batch_append(b, BATCH_OP_DEL_PREFIX, prefix, plen, 0, NULL, 0);
}

int keel_batch_del_unit(keel_batch *b, uint64_t below)
{
    uint8_t key[2];

    if (b == NULL || b->ngroups == 0)
        return KEEL_EINVAL;
    key[0] = (uint8_t)(b->groups[b->ngroups - 1].shard >> 8);
    key[1] = (uint8_t)b->groups[b->ngroups - 1].shard;
    return batch_append(b, BATCH_OP_DEL_UNIT, key, sizeof key, below, NULL,
                        0);
}

int keel_batch_check_unit(keel_batch *b, uint64_t digest)
{
    struct batch_group *g;
    uint8_t key[2];

    if (b == NULL || b->ngroups == 0)
        return KEEL_EINVAL;
    g = &b->groups[b->ngroups - 1];
    if (g->nops != 0)
        return KEEL_EINVAL; /* the group's only op */
    key[0] = (uint8_t)(g->shard >> 8);
    key[1] = (uint8_t)g->shard;
    return batch_append(b, BATCH_OP_CHECK_UNIT, key, sizeof key, digest, NULL,
                        0);
}

int keel_batch_group_differs(const keel_batch *b, size_t i)
{
    return i < b->ngroups && b->groups[i].differs;
}

void keel_batch_require_sync(keel_batch *b)
{
    b->sync = 1;
}

int keel_batch_handoff(keel_batch *b, uint64_t epoch, const char *to)
{
    size_t len;

    if (b == NULL || b->ngroups == 0 || to == NULL || epoch == 0)
        return KEEL_EINVAL;
    len = strlen(to);
    if (len == 0 || len > KEEL_HANDOFF_NAME_MAX)
        return KEEL_EINVAL;
    return batch_append(b, BATCH_OP_HANDOFF, to, len, epoch, NULL, 0);
}

/* Every group that is not refused raises its fence, so a group without
 * ops is exactly a fence raise: nothing to record beyond the group. */
int keel_batch_fence_only(keel_batch *b)
{
    if (b == NULL || b->ngroups == 0)
        return KEEL_EINVAL;
    return 0;
}

int keel_batch_append(keel_batch *dst, const keel_batch *src)
{
    size_t base = dst->len, i;
    int rc;

    if (src->ngroups == 0)
        return 0;
    if (dst->gcap - dst->ngroups < src->ngroups) {
        size_t ncap = dst->gcap > 0 ? dst->gcap : BATCH_MIN_GROUPS;
        struct batch_group *ng;

        while (ncap - dst->ngroups < src->ngroups)
            ncap *= 2;
        ng = realloc(dst->groups, ncap * sizeof *ng);
        if (ng == NULL)
            return KEEL_ENOMEM;
        dst->groups = ng;
        dst->gcap = ncap;
    }
    rc = batch_reserve(dst, src->len);
    if (rc < 0)
        return rc;
    /* Both arenas keep every part aligned to BATCH_ALIGN, so src's bytes
     * land aligned at the end of dst's; only the offsets move. */
    if (src->len > 0)
        memcpy(dst->buf + base, src->buf, src->len);
    dst->len += src->len;
    for (i = 0; i < src->ngroups; i++) {
        struct batch_group *g = &dst->groups[dst->ngroups + i];

        *g = src->groups[i];
        g->cap_off += base;
        g->ops_off += base;
        g->ops_end += base;
    }
    dst->ngroups += src->ngroups;
    dst->nops += src->nops;
    dst->sync |= src->sync;
    return 0;
}

size_t keel_batch_group_count(const keel_batch *b)
{
    return b->ngroups;
}

size_t keel_batch_bytes(const keel_batch *b)
{
    return b->len;
}

size_t keel_batch_op_count(const keel_batch *b)
{
    return b->nops;
}

int keel_batch_group_unit(const keel_batch *b, size_t i, const char **cap,
                          uint16_t *shard, uint64_t *epoch)
{
    const struct batch_group *g;

    if (b == NULL || i >= b->ngroups)
        return KEEL_EINVAL;
    g = &b->groups[i];
    if (cap != NULL)
        *cap = (const char *)b->buf + g->cap_off;
    if (shard != NULL)
        *shard = g->shard;
    if (epoch != NULL)
        *epoch = g->epoch;
    return 0;
}

int keel_batch_group_ops(const keel_batch *b, size_t i, keel_batch_op_fn fn,
                         void *data)
{
    const struct batch_group *g;
    size_t off;
    int rc;

    if (b == NULL || fn == NULL || i >= b->ngroups)
        return KEEL_EINVAL;
    g = &b->groups[i];
    if (g->nops == 0)
        return fn(KEEL_BATCH_OP_FENCE_ONLY, NULL, 0, 0, NULL, 0, data);
    for (off = g->ops_off; off < g->ops_end;) {
        const struct batch_op *op = batch_op_at(b, off);
        const uint8_t *key = batch_op_key(op);
        uint64_t version = op->version;

        switch (op->kind) {
        case BATCH_OP_PUT:
            rc = fn(KEEL_BATCH_OP_PUT, key, op->klen, version,
                    batch_op_data(op), (size_t)op->dlen, data);
            break;
        case BATCH_OP_DEL:
            rc = fn(KEEL_BATCH_OP_DEL, key, op->klen, 0, NULL, 0, data);
            break;
        case BATCH_OP_DEL_PREFIX:
            rc = fn(KEEL_BATCH_OP_DEL_PREFIX, key, op->klen, 0, NULL, 0, data);
            break;
        case BATCH_OP_DEL_UNIT:
            /* The key is only the group's shard: nothing to hand out. */
            rc = fn(KEEL_BATCH_OP_DEL_UNIT, NULL, 0, version, NULL, 0, data);
            break;
        case BATCH_OP_HANDOFF:
            rc = fn(KEEL_BATCH_OP_HANDOFF, key, op->klen, version, NULL, 0,
                    data);
            break;
        case BATCH_OP_CHECK_UNIT:
            rc = fn(KEEL_BATCH_OP_CHECK_UNIT, NULL, 0, version, NULL, 0, data);
            break;
        default:
            return KEEL_ECORRUPT;
        }
        if (rc != 0)
            return rc;
        off += batch_op_size(op);
    }
    return 0;
}

void *keel_batch_group(const keel_batch *b, size_t i, int *status)
{
    if (i >= b->ngroups) {
        if (status != NULL)
            *status = KEEL_EINVAL;
        return NULL;
    }
    if (status != NULL)
        *status = b->groups[i].status;
    return b->groups[i].tag;
}
