/* State versions: see runtime/statever.h. */
#include "runtime/statever.h"

#include "keel.h"

/* The version of the type's state layout an actor's state was written
 * by: a runtime entry of 4 bytes, big-endian (keel_actor_type's
 * state_version), absent for version 0. */
#define STATE_VER_ENTRY "\0keel.state-version"
#define STATE_VER_ENTRY_LEN (sizeof STATE_VER_ENTRY - 1)

int keel__statever_stage(keel_turn *t, int *staged)
{
    uint32_t v = keel__turn_actor(t)->type->t.state_version;
    uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8),
                     (uint8_t)v};
    int rc = keel__turn_rt_put(t, STATE_VER_ENTRY, STATE_VER_ENTRY_LEN, be,
                               sizeof be);

    if (rc == 0)
        *staged = 1;
    return rc;
}

static int any_entry(const void *key, size_t klen, const void *val,
                     size_t vlen, void *data)
{
    *(int *)data = 1;
    return 1; /* one is enough */
}

int keel__statever_check(keel_turn *t, int *staged)
{
    keel_actor *a = keel__turn_actor(t);
    const keel_actor_type *ty = &a->type->t;
    const void *v;
    size_t vl;
    uint32_t stored = 0;
    int rc, any = 0;

    a->state_ver = 0;
    /* Read for an unversioned type too: a rollback to the release before
     * its type declared a version must not read the newer layout as its
     * own and overwrite it. */
    rc = keel__turn_rt_get(t, STATE_VER_ENTRY, STATE_VER_ENTRY_LEN, &v, &vl);
    if (rc == 0 && vl != 4) {
        keel_turn_error(t, "the actor's state version record is %zu bytes, "
                           "not 4",
                        vl);
        return KEEL_ECORRUPT;
    }
    if (rc == 0) {
        const uint8_t *b = v;
        stored = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
                 (uint32_t)b[2] << 8 | b[3];
    } else if (rc != KEEL_ENOTFOUND) {
        return rc;
    }
    a->state_ver = stored;
    if (stored == ty->state_version)
        return 0;
    if (ty->state_version == 0) {
        keel_turn_error(t, "the state of this %s was written by version %u "
                           "of its type, and this node's declares no "
                           "version: it cannot read it (run version %u or "
                           "later)",
                        ty->name, stored, stored);
        return KEEL_ESTATEVER;
    }
    if (stored > ty->state_version) {
        keel_turn_error(t, "the state of this %s was written by version %u "
                           "of its type, and this node's is version %u: "
                           "it cannot read it (run version %u or later)",
                        ty->name, stored, ty->state_version, stored);
        return KEEL_ESTATEVER;
    }
    if (!(a->flags & ACTOR_HAS_BLOB)) {
        rc = keel_turn_entries(t, any_entry, &any);
        if (rc != 0)
            return rc;
        if (!any)
            return 0; /* never written: its first write records it */
    }
    if (ty->upgrade == NULL) {
        keel_turn_error(t, "the state of this %s was written by version %u "
                           "of its type; this one is version %u and has no "
                           "upgrade function",
                        ty->name, stored, ty->state_version);
        return KEEL_ESTATEVER;
    }
    rc = keel__turn_hook_rc(t, "upgrade", ty->upgrade(t, stored));
    if (rc != 0) {
        if (!keel__turn_has_error(t))
            keel_turn_error(t, "upgrading the state of this %s from version "
                               "%u to %u failed: %s",
                            ty->name, stored, ty->state_version,
                            keel_strerror(rc));
        return rc;
    }
    return keel__statever_stage(t, staged);
}
