/* Self-fencing timer logic. */
#include "coordinator/selffence.h"

#include <string.h>

void keel_selffence_init(keel_selffence *f, uint32_t timeout_ms)
{
    memset(f, 0, sizeof *f);
    f->timeout_ms = timeout_ms;
    f->fenced = 1;
}

static int set_fenced(keel_selffence *f, int fenced)
{
    int changed = f->fenced != fenced;

    f->fenced = fenced;
    return changed;
}

int keel_selffence_connected(keel_selffence *f, uint64_t now,
                             uint32_t timeout_ms)
{
    (void)now;
    if (timeout_ms > 0)
        f->timeout_ms = timeout_ms;
    f->connected = 1;
    if (f->expired)
        return 0; /* a connection of a dead session serves nothing */
    return set_fenced(f, 0);
}

int keel_selffence_disconnected(keel_selffence *f, uint64_t now)
{
    if (!f->connected)
        return 0;
    f->connected = 0;
    f->disconnected_at = now;
    return keel_selffence_tick(f, now);
}

int keel_selffence_expired(keel_selffence *f)
{
    f->expired = 1;
    f->connected = 0;
    return set_fenced(f, 1);
}

int keel_selffence_rejoined(keel_selffence *f, uint64_t now,
                            uint32_t timeout_ms)
{
    f->expired = 0;
    return keel_selffence_connected(f, now, timeout_ms);
}

uint64_t keel_selffence_deadline(const keel_selffence *f)
{
    if (f->connected || f->fenced)
        return 0;
    /* 2/3 of the timeout, rounded down: never later than that. */
    return f->disconnected_at + (uint64_t)f->timeout_ms * 2 / 3;
}

int keel_selffence_tick(keel_selffence *f, uint64_t now)
{
    uint64_t d = keel_selffence_deadline(f);

    if (d != 0 && now >= d)
        return set_fenced(f, 1);
    return 0;
}
