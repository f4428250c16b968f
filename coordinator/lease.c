/* The lease's heartbeats (lease.h). */
#include "coordinator/lease.h"

#include <stdio.h>
#include <string.h>

#include "keel.h"

/* A heartbeat every T/6 keeps the lease (2T/3 from the send time) about
 * T/2 ahead, so a few slow or lost answers stall nothing. */
uint64_t keel_lease_interval(uint32_t timeout_ms)
{
    uint64_t t = timeout_ms / 6;

    return t > 0 ? t : 1;
}

static void send_heartbeat(keel_lease *l, uint64_t now);

static void heartbeat_done(keel_zk *zk, int rc, const keel_zk_stat *st,
                           void *arg)
{
    keel_lease *l = arg;
    uint64_t now;
    int flipped = 0;

    (void)zk;
    (void)st;
    if (!l->busy)
        return; /* of a session that ended: nothing to match */
    l->busy = 0;
    now = l->clock(l->arg);
    /* Any answer of the servers proves the session alive when the request
     * left (the root is missing only before the first bootstrap). */
    if (rc == 0 || rc == KEEL_ENOTFOUND)
        flipped = keel_selffence_renewed(&l->fence, l->sent, now);
    send_heartbeat(l, now);
    if (l->answered != NULL)
        l->answered(l, flipped, l->arg);
}

/* Sends a heartbeat when one is due, the client is connected and none is
 * in flight. */
static void send_heartbeat(keel_lease *l, uint64_t now)
{
    if (!l->fence.connected || l->busy || now < l->next)
        return;
    l->next = now + keel_lease_interval(l->fence.timeout_ms);
    if (keel_zk_exists(l->zk, l->path, NULL, NULL, heartbeat_done, l) != 0)
        return; /* the connection is going: the next one sends again */
    l->busy = 1;
    l->sent = now;
}

void keel_lease_init(keel_lease *l, keel_zk *zk, const char *path,
                     uint32_t timeout_ms, keel_lease_clock_fn clock,
                     keel_lease_answered_cb answered, void *arg)
{
    memset(l, 0, sizeof *l);
    l->zk = zk;
    snprintf(l->path, sizeof l->path, "%s", path);
    l->clock = clock;
    l->answered = answered;
    l->arg = arg;
    keel_selffence_init(&l->fence, timeout_ms);
    /* Fenced until joined: a node serves nothing before. */
    keel_selffence_expired(&l->fence);
}

int keel_lease_connected(keel_lease *l, uint64_t now)
{
    int flipped = keel_selffence_connected(
        &l->fence, now, (uint32_t)keel_zk_session_timeout(l->zk));

    /* The lease is renewed by what is sent from now on. A heartbeat still
     * in flight is answered first (a connection loss): see lease.h. */
    l->next = 0;
    send_heartbeat(l, now);
    return flipped;
}

int keel_lease_disconnected(keel_lease *l, uint64_t now)
{
    return keel_selffence_disconnected(&l->fence, now);
}

int keel_lease_expired(keel_lease *l)
{
    l->busy = 0;
    return keel_selffence_expired(&l->fence);
}

int keel_lease_rejoined(keel_lease *l, uint64_t now)
{
    return keel_selffence_rejoined(&l->fence, now,
                                   (uint32_t)keel_zk_session_timeout(l->zk));
}

int keel_lease_tick(keel_lease *l, uint64_t now)
{
    int flipped = keel_selffence_tick(&l->fence, now);

    send_heartbeat(l, now);
    return flipped;
}

int keel_lease_check(keel_lease *l, uint64_t now, int *flipped)
{
    *flipped = 0;
    if (l->fence.fenced)
        return 1;
    if (!keel_selffence_lapsed(&l->fence, now))
        return 0;
    *flipped = keel_selffence_tick(&l->fence, now);
    return l->fence.fenced;
}

uint64_t keel_lease_deadline(const keel_lease *l)
{
    uint64_t d = keel_selffence_deadline(&l->fence);

    if (l->fence.connected && !l->busy) {
        uint64_t hb = l->next > 0 ? l->next : 1;
        if (d == 0 || hb < d)
            d = hb;
    }
    return d;
}
