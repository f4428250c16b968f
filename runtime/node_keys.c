/* Request keys inside the node (dedup.h holds the record table's codec):
 * a keyed request that changed its actor records its key and reply with
 * the change, in the actor's runtime entry KEEL_DEDUP_ENTRY; a retry with
 * the key is answered with the first outcome without running again. The
 * turn (node.c) looks the key up before its handler runs and stages the
 * record with the handler's writes. */
#include <stdlib.h>
#include <xxhash.h>

#include "runtime/dedup.h"
#include "runtime/node.h"
#include "runtime/node_int.h"

/* What a retry must repeat: the kind and the message. */
static uint64_t request_hash(const keel_req *req)
{
    return XXH3_64bits_withSeed(req->buf, req->len, req->is_cast ? 2 : 1);
}

int keel__dedup_lookup(keel_turn *t, const keel_req *req, int *dup,
                       const uint8_t **reply, size_t *rlen)
{
    const void *tab;
    size_t len;
    uint64_t hash;
    int kept, rc;

    rc = keel__turn_rt_get(t, KEEL_DEDUP_ENTRY, KEEL_DEDUP_ENTRY_LEN, &tab,
                           &len);
    if (rc == KEEL_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    rc = keel_dedup_find(tab, len, req->rkey, &hash, &kept, reply, rlen);
    if (rc < 0)
        return rc;
    if (rc == 1 && hash != request_hash(req)) {
        keel_turn_error(t, "request key reused for another request: a key "
                           "may only be sent again with the same message");
        return KEEL_EINVAL;
    }
    if (rc == 1)
        *dup = kept ? DUP_KEPT : DUP_NOT_KEPT;
    return 0;
}

int keel__dedup_record(keel_turn *t, const keel_req *req, const void *reply,
                       size_t rlen)
{
    const void *tab = NULL;
    size_t len = 0, olen;
    uint8_t *out;
    int rc;

    rc = keel__turn_rt_get(t, KEEL_DEDUP_ENTRY, KEEL_DEDUP_ENTRY_LEN, &tab,
                           &len);
    if (rc == KEEL_ENOTFOUND) {
        tab = NULL;
        len = 0;
    } else if (rc != 0) {
        return rc;
    }
    rc = keel_dedup_add(tab, len, req->rkey, request_hash(req), reply, rlen,
                        &out, &olen);
    if (rc != 0)
        return rc;
    rc = keel__turn_rt_put(t, KEEL_DEDUP_ENTRY, KEEL_DEDUP_ENTRY_LEN, out,
                           olen);
    free(out);
    return rc;
}
