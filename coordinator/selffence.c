/* Self-fencing: the lease and the disconnection timer (selffence.h). */
#include "coordinator/selffence.h"

#include <string.h>

static uint64_t lease_ms(const keel_selffence *f)
{
    return keel_selffence_lease_ms(f->timeout_ms);
}

void keel_selffence_init(keel_selffence *f, uint32_t timeout_ms)
{
    memset(f, 0, sizeof *f);
    f->timeout_ms = timeout_ms;
    f->fenced = 1;
}

/* When the node stopped being allowed to serve, seen at `now` when it
 * notices: the earliest end among the rules that hold, never after now. */
static uint64_t fenced_since(const keel_selffence *f, uint64_t now)
{
    uint64_t t = now;

#ifdef KEEL_TEST_NO_FENCE
    /* keeld-nofence served through its lease: its fence is the flip. */
    (void)f;
    return t;
#endif
    if (f->lease_until != 0 && f->lease_until < t)
        t = f->lease_until;
    if (!f->connected && f->disconnected_at + lease_ms(f) < t)
        t = f->disconnected_at + lease_ms(f);
    return t;
}

/* Recomputes `fenced` at `now`; 1 when it changed. */
static int update(keel_selffence *f, uint64_t now)
{
#ifdef KEEL_TEST_NO_FENCE
    /* Test builds only (keeld-nofence): neither the lease nor a lost
     * connection fences; only an expiry the node has been told of. */
    int fenced = f->expired;
    (void)now;
#else
    int fenced = f->expired || keel_selffence_lapsed(f, now) ||
                 (!f->connected && now >= f->disconnected_at + lease_ms(f));
#endif
    int changed = f->fenced != fenced;

    if (changed && fenced)
        f->fenced_at = fenced_since(f, now);
    f->fenced = fenced;
    return changed;
}

int keel_selffence_connected(keel_selffence *f, uint64_t now,
                             uint32_t timeout_ms)
{
    if (timeout_ms > 0)
        f->timeout_ms = timeout_ms;
    f->connected = 1;
    /* A connection alone proves nothing about now (the answer to the
     * connect request may have waited out a pause): serving resumes with
     * the lease, renewed by a request sent from here on. */
    return update(f, now);
}

int keel_selffence_disconnected(keel_selffence *f, uint64_t now)
{
    if (!f->connected)
        return 0;
    f->connected = 0;
    f->disconnected_at = now;
    return update(f, now);
}

int keel_selffence_expired(keel_selffence *f)
{
    int changed = !f->fenced;

    /* The lease, if it had not ended yet, ends now: the owner's clock is
     * not at hand here, so the lease's end stands for now (the caller
     * bounds fenced_at by its clock, keel_cluster_fenced_ago_ns). */
#ifdef KEEL_TEST_NO_FENCE
    if (changed)
        f->fenced_at = UINT64_MAX; /* served to this moment */
#else
    if (changed)
        f->fenced_at = f->lease_until != 0 ? f->lease_until : UINT64_MAX;
#endif

    f->expired = 1;
    f->connected = 0;
    f->lease_until = 0;
    f->fenced = 1;
    return changed;
}

int keel_selffence_rejoined(keel_selffence *f, uint64_t now,
                            uint32_t timeout_ms)
{
    f->expired = 0;
    return keel_selffence_connected(f, now, timeout_ms);
}

int keel_selffence_renewed(keel_selffence *f, uint64_t sent_at, uint64_t now)
{
    uint64_t until = sent_at + lease_ms(f);

    if (until > f->lease_until)
        f->lease_until = until;
    return update(f, now);
}

uint64_t keel_selffence_deadline(const keel_selffence *f)
{
    uint64_t d;

    if (f->fenced)
        return 0;
    d = f->lease_until;
    if (!f->connected && f->disconnected_at + lease_ms(f) < d)
        d = f->disconnected_at + lease_ms(f);
    return d;
}

int keel_selffence_tick(keel_selffence *f, uint64_t now)
{
    return update(f, now);
}
