/* The handoff state machine of one unit's move. */
#include "coordinator/handoff.h"

#include <string.h>

#include "keel.h"

static void setup(keel_handoff *h, uint32_t from, uint32_t to, uint64_t epoch,
                  int loss_ok, uint32_t grace_ms)
{
    memset(h, 0, sizeof *h);
    h->from = from;
    h->to = to;
    h->epoch = epoch;
    h->grace_ms = grace_ms;
    if (loss_ok)
        h->flags |= KEEL_HANDOFF_F_LOSS_OK;
}

/* In AWAIT_RELEASE or AWAIT_DEATH: can the primary be written now? */
static int decide(keel_handoff *h, uint64_t now)
{
    if (h->flags & KEEL_HANDOFF_F_RELEASED) {
        h->state = KEEL_HANDOFF_PRIMARY_PENDING;
        h->flags &= (uint8_t)~KEEL_HANDOFF_F_ACKED;
        h->next_epoch = h->epoch + 1;
        return KEEL_HANDOFF_WRITE_PRIMARY;
    }
    if ((h->flags & KEEL_HANDOFF_F_GONE) &&
        (h->flags & KEEL_HANDOFF_F_LOSS_OK)) {
        if (now >= h->gone_at + h->grace_ms) {
            h->state = KEEL_HANDOFF_PRIMARY_PENDING;
            h->flags &= (uint8_t)~KEEL_HANDOFF_F_ACKED;
            h->next_epoch = h->epoch + 2; /* without A's data */
            return KEEL_HANDOFF_WRITE_PRIMARY;
        }
        h->state = KEEL_HANDOFF_AWAIT_DEATH;
        return KEEL_HANDOFF_NONE;
    }
    h->state = KEEL_HANDOFF_AWAIT_RELEASE;
    return KEEL_HANDOFF_NONE;
}

uint64_t keel_handoff_next_epoch(const keel_handoff *h)
{
    return h->next_epoch != 0 ? h->next_epoch : h->epoch + 1;
}

int keel_handoff_begin(keel_handoff *h, uint32_t from, uint32_t to,
                       uint64_t epoch, int loss_ok, uint32_t grace_ms)
{
    setup(h, from, to, epoch, loss_ok, grace_ms);
    h->state = KEEL_HANDOFF_TARGET_PENDING;
    return KEEL_HANDOFF_WRITE_TARGET;
}

int keel_handoff_resume(keel_handoff *h, uint32_t from, uint32_t to,
                        uint64_t epoch, int primary_is_to, int loss_ok,
                        uint32_t grace_ms)
{
    uint8_t keep = 0;
    int keep_next = 0;

    /* What was learnt about this very move survives a re-read. */
    if (h->state != KEEL_HANDOFF_IDLE && h->from == from && h->to == to &&
        h->epoch == epoch) {
        keep = h->flags & (KEEL_HANDOFF_F_RELEASED | KEEL_HANDOFF_F_FENCED |
                           KEEL_HANDOFF_F_GONE);
        keep_next = 1;
    }
    {
        uint64_t gone_at = h->gone_at;
        uint64_t next = keep_next ? h->next_epoch : 0;
        setup(h, from, to, epoch, loss_ok, grace_ms);
        h->flags |= keep;
        h->next_epoch = next;
        if (keep & KEEL_HANDOFF_F_GONE)
            h->gone_at = gone_at;
    }
    if (primary_is_to) {
        h->state = (h->flags & KEEL_HANDOFF_F_FENCED) ? KEEL_HANDOFF_DONE
                                                      : KEEL_HANDOFF_AWAIT_FENCE;
        return KEEL_HANDOFF_NONE;
    }
    h->state = KEEL_HANDOFF_AWAIT_RELEASE;
    return KEEL_HANDOFF_NONE;
}

int keel_handoff_adopt(keel_handoff *h, uint32_t from, uint32_t to,
                       uint64_t epoch, int loss_ok, uint32_t grace_ms)
{
    setup(h, from, to, epoch, loss_ok, grace_ms);
    h->flags |= KEEL_HANDOFF_F_RELEASED;
    h->state = KEEL_HANDOFF_PRIMARY_PENDING;
    return KEEL_HANDOFF_WRITE_PRIMARY;
}

int keel_handoff_promote(keel_handoff *h, uint32_t from, uint32_t to,
                         uint64_t epoch)
{
    setup(h, from, to, epoch, 0, 0);
    h->flags |= KEEL_HANDOFF_F_PROMOTE | KEEL_HANDOFF_F_GONE;
    h->state = KEEL_HANDOFF_PRIMARY_PENDING;
    h->next_epoch = epoch + 1;
    return KEEL_HANDOFF_WRITE_PRIMARY;
}

int keel_handoff_retarget(keel_handoff *h, uint32_t to)
{
    if (h->state == KEEL_HANDOFF_ABORTED || h->state == KEEL_HANDOFF_DONE ||
        h->state == KEEL_HANDOFF_IDLE)
        return KEEL_HANDOFF_NONE;
    if ((h->flags & KEEL_HANDOFF_F_RELEASED) ||
        h->state == KEEL_HANDOFF_PRIMARY_PENDING ||
        h->state == KEEL_HANDOFF_AWAIT_FENCE)
        return KEEL_HANDOFF_NONE;
    if (to == h->to)
        return KEEL_HANDOFF_NONE;
    h->to = to;
    h->flags &= (uint8_t)~(KEEL_HANDOFF_F_FENCED | KEEL_HANDOFF_F_ACKED);
    h->state = KEEL_HANDOFF_TARGET_PENDING;
    return KEEL_HANDOFF_WRITE_TARGET;
}

int keel_handoff_target_written(keel_handoff *h, int rc, uint64_t now)
{
    if (h->state != KEEL_HANDOFF_TARGET_PENDING)
        return KEEL_HANDOFF_NONE;
    if (rc == KEEL_EDEPOSED || rc == KEEL_ESESSION) {
        h->state = KEEL_HANDOFF_ABORTED;
        return KEEL_HANDOFF_NONE;
    }
    if (rc != 0)
        return KEEL_HANDOFF_WRITE_TARGET;
    return decide(h, now);
}

int keel_handoff_primary_written(keel_handoff *h, int rc)
{
    if (h->state != KEEL_HANDOFF_PRIMARY_PENDING)
        return KEEL_HANDOFF_NONE;
    if (rc == KEEL_EDEPOSED || rc == KEEL_ESESSION) {
        h->state = KEEL_HANDOFF_ABORTED;
        return KEEL_HANDOFF_NONE;
    }
    if (rc != 0)
        return KEEL_HANDOFF_WRITE_PRIMARY;
    h->flags |= KEEL_HANDOFF_F_ACKED;
    h->state = (h->flags & KEEL_HANDOFF_F_FENCED) ? KEEL_HANDOFF_DONE
                                                  : KEEL_HANDOFF_AWAIT_FENCE;
    return KEEL_HANDOFF_NONE;
}

int keel_handoff_released(keel_handoff *h, uint32_t node, uint64_t epoch,
                          uint32_t to, uint64_t now)
{
    if (node != h->from || epoch != h->epoch)
        return KEEL_HANDOFF_NONE; /* another move's, or stale */
    if (h->state == KEEL_HANDOFF_IDLE || h->state == KEEL_HANDOFF_ABORTED ||
        h->state == KEEL_HANDOFF_DONE)
        return KEEL_HANDOFF_NONE;
    if (to != h->to) {
        if (h->flags & KEEL_HANDOFF_F_RELEASED)
            return KEEL_HANDOFF_NONE; /* the first release counts */
        if (h->state == KEEL_HANDOFF_PRIMARY_PENDING ||
            h->state == KEEL_HANDOFF_AWAIT_FENCE)
            return KEEL_HANDOFF_NONE; /* decided without A already */
        h->to = to;
    }
    h->flags |= KEEL_HANDOFF_F_RELEASED;
    if (h->state == KEEL_HANDOFF_AWAIT_RELEASE ||
        h->state == KEEL_HANDOFF_AWAIT_DEATH)
        return decide(h, now);
    return KEEL_HANDOFF_NONE; /* kept for when the target write is in */
}

int keel_handoff_fenced(keel_handoff *h, uint32_t node, uint64_t epoch)
{
    if (node != h->to || epoch != keel_handoff_next_epoch(h))
        return KEEL_HANDOFF_NONE;
    h->flags |= KEEL_HANDOFF_F_FENCED;
    if (h->state == KEEL_HANDOFF_AWAIT_FENCE)
        h->state = KEEL_HANDOFF_DONE;
    return KEEL_HANDOFF_NONE;
}

int keel_handoff_member(keel_handoff *h, uint32_t node, int present,
                        uint64_t now)
{
    if (node != h->from)
        return KEEL_HANDOFF_NONE;
    if (!present) {
        if (!(h->flags & KEEL_HANDOFF_F_GONE)) {
            h->flags |= KEEL_HANDOFF_F_GONE;
            h->gone_at = now;
        }
    } else {
        /* A new incarnation of A: it holds nothing and will release on
         * its own, so the clock restarts if it goes again. */
        h->flags &= (uint8_t)~KEEL_HANDOFF_F_GONE;
        if (h->state == KEEL_HANDOFF_PRIMARY_PENDING &&
            (h->flags & KEEL_HANDOFF_F_PROMOTE)) {
            /* A failover not written yet: A serves its unit again, with
             * its backups as they were. */
            memset(h, 0, sizeof *h);
            return KEEL_HANDOFF_NONE;
        }
        if (h->state == KEEL_HANDOFF_PRIMARY_PENDING &&
            !(h->flags & KEEL_HANDOFF_F_RELEASED)) {
            /* Promoting without A, and A is back before the write went
             * out (or after it failed): A would read a map that still
             * gives it the unit. It releases instead. */
            h->state = KEEL_HANDOFF_AWAIT_RELEASE;
            return KEEL_HANDOFF_WRITE_TARGET;
        }
    }
    if (h->state == KEEL_HANDOFF_AWAIT_RELEASE ||
        h->state == KEEL_HANDOFF_AWAIT_DEATH)
        return decide(h, now);
    return KEEL_HANDOFF_NONE;
}

int keel_handoff_tick(keel_handoff *h, uint64_t now)
{
    if (h->state == KEEL_HANDOFF_AWAIT_DEATH ||
        h->state == KEEL_HANDOFF_AWAIT_RELEASE)
        return decide(h, now);
    return KEEL_HANDOFF_NONE;
}

uint64_t keel_handoff_deadline(const keel_handoff *h)
{
    if (h->state == KEEL_HANDOFF_AWAIT_DEATH)
        return h->gone_at + h->grace_ms;
    return 0;
}

const char *keel_handoff_state_name(int state)
{
    switch (state) {
    case KEEL_HANDOFF_IDLE:
        return "idle";
    case KEEL_HANDOFF_TARGET_PENDING:
        return "target-pending";
    case KEEL_HANDOFF_AWAIT_RELEASE:
        return "await-release";
    case KEEL_HANDOFF_AWAIT_DEATH:
        return "await-death";
    case KEEL_HANDOFF_PRIMARY_PENDING:
        return "primary-pending";
    case KEEL_HANDOFF_AWAIT_FENCE:
        return "await-fence";
    case KEEL_HANDOFF_DONE:
        return "done";
    case KEEL_HANDOFF_ABORTED:
        return "aborted";
    default:
        return "unknown";
    }
}
