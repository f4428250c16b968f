/* The lease's heartbeats (lease.h). */
#include "coordinator/lease.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "keel.h"

uint64_t keel_lease_interval(uint32_t timeout_ms)
{
    uint64_t t = timeout_ms / 8;

    return t > 0 ? t : 1;
}

uint64_t keel_lease_hold_max(uint32_t timeout_ms)
{
    uint64_t half = timeout_ms / 2, interval = keel_lease_interval(timeout_ms);

    return half > interval ? half - interval : 0;
}

int keel_lease_timeout_ok(uint32_t negotiated, uint32_t requested,
                          int *warn, char *why, size_t why_cap)
{
    *warn = 0;
    if (why_cap > 0)
        why[0] = '\0';
    if (negotiated < KEEL_LEASE_MIN_TIMEOUT_MS) {
        snprintf(why, why_cap,
                 "the ZooKeeper session timeout is %u ms (asked for %u): "
                 "below %u ms the lease (half of it) leaves no safe margin "
                 "before the session can expire; ask for more",
                 negotiated, requested, KEEL_LEASE_MIN_TIMEOUT_MS);
        return KEEL_ECONFIG;
    }
    if (negotiated > requested) {
        /* Raised: it is the servers' minimum, 2 ticks, the case where a
         * follower's relayed touches lag the most behind (selffence.h). */
        *warn = 1;
        snprintf(why, why_cap,
                 "ZooKeeper raised the session timeout from %u to %u ms, its "
                 "minimum (2 ticks): the lease ends only T/8 before the "
                 "session could expire; 4 ticks or more leave T/4",
                 requested, negotiated);
    }
    return 0;
}

static void send_heartbeat(keel_lease *l, uint64_t now);

static void heartbeat_done(keel_zk *zk, int rc, void *arg)
{
    keel_lease *l = arg;
    uint64_t now, sent;
    int flipped = 0;

    (void)zk;
    if (l->inflight == 0)
        return; /* of a session that ended: nothing to match */
    sent = l->sent[l->head];
    l->head = (l->head + 1) % KEEL_LEASE_INFLIGHT;
    l->inflight--;
    now = l->clock(l->arg);
    if (rc == 0)
        flipped = keel_selffence_renewed(&l->fence, sent, now);
    send_heartbeat(l, now);
    if (l->answered != NULL)
        l->answered(l, flipped, l->arg);
}

/* Sends a heartbeat when one is due, the client is connected and fewer
 * than KEEL_LEASE_INFLIGHT are unanswered. */
static void send_heartbeat(keel_lease *l, uint64_t now)
{
    if (!l->fence.connected || l->inflight == KEEL_LEASE_INFLIGHT ||
        now < l->next)
        return;
    l->next = now + keel_lease_interval(l->fence.timeout_ms);
    if (keel_zk_sync(l->zk, l->path, heartbeat_done, l) != 0)
        return; /* the connection is going: the next one sends again */
    l->sent[(l->head + l->inflight) % KEEL_LEASE_INFLIGHT] = now;
    l->inflight++;
}

static uint64_t stall_ms(const keel_lease *l)
{
    uint64_t t = l->fence.timeout_ms / KEEL_LEASE_STALL;

    return t > 0 ? t : 1;
}

/* Gives the server up when its oldest unanswered heartbeat has waited
 * stall_ms (KEEL_LEASE_STALL); once per connection. */
static void check_stall(keel_lease *l, uint64_t now)
{
    uint64_t oldest;

    if (!l->fence.connected || l->inflight == 0 || l->dropped)
        return;
    oldest = l->sent[l->head];
    if (now < oldest + stall_ms(l))
        return;
    l->dropped = 1;
    if (keel_zk_drop_server(l->zk) == 0)
        keel_warn("zookeeper: no answer from the server for %llu ms (session "
                  "timeout %u ms): trying the next server",
                  (unsigned long long)(now - oldest), l->fence.timeout_ms);
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

    /* The lease is renewed by what is sent from now on. Heartbeats still
     * in flight are answered first (connection losses): see lease.h. */
    l->next = 0;
    l->dropped = 0;
    send_heartbeat(l, now);
    return flipped;
}

int keel_lease_disconnected(keel_lease *l, uint64_t now)
{
    return keel_selffence_disconnected(&l->fence, now);
}

int keel_lease_expired(keel_lease *l)
{
    l->head = 0;
    l->inflight = 0;
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

    check_stall(l, now);
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

    if (l->fence.connected && l->inflight < KEEL_LEASE_INFLIGHT) {
        uint64_t hb = l->next > 0 ? l->next : 1;
        if (d == 0 || hb < d)
            d = hb;
    }
    if (l->fence.connected && l->inflight > 0 && !l->dropped) {
        uint64_t st = l->sent[l->head] + stall_ms(l);
        if (d == 0 || st < d)
            d = st;
    }
    return d;
}
