/* The controller's state machine for one move of a placement unit from
 * node A to node B (DESIGN.md, "Handoff"), as pure logic: events in,
 * actions out, time as an input. The controller feeds it what it reads
 * from ZooKeeper and performs the actions as map writes.
 *
 *   begin ──> TARGET_PENDING ──(target map written)──> AWAIT_RELEASE
 *   adopt (A released to B with no move recorded) ──> PRIMARY_PENDING
 *   AWAIT_RELEASE ──(A's state: released at epoch e to B)──> PRIMARY_PENDING
 *   AWAIT_RELEASE ──(A's member znode gone, owner loss allowed)──> AWAIT_DEATH
 *   AWAIT_DEATH ──(grace elapsed: A's session certainly dead)──> PRIMARY_PENDING
 *   AWAIT_DEATH ──(A back: a new incarnation)──> AWAIT_RELEASE
 *   promote (A gone, B an in-sync backup) ──> PRIMARY_PENDING
 *   PRIMARY_PENDING, promoting ──(A back before the write)──> IDLE
 *   PRIMARY_PENDING ──(map with primary B, epoch e+1 written)──> AWAIT_FENCE
 *   AWAIT_FENCE ──(B's state: primary at e+1, fence recorded)──> DONE
 *   any ──(a write failed with KEEL_EDEPOSED)──> ABORTED
 *
 * Events may arrive in any order: a release seen before the target write
 * is acknowledged, or B's fence before the primary write is, are kept and
 * acted on when the acknowledgement comes. Stale reports (another epoch,
 * another target) are ignored. A failed write that is not a deposition
 * (connection loss: unknown outcome) asks for the write again; the
 * controller re-reads the map first and may instead resume() from it.
 *
 * Node names are opaque ids chosen by the controller (stable for its
 * lifetime), so a machine is small and one can exist per unit. */
#ifndef KEEL_COORDINATOR_HANDOFF_H
#define KEEL_COORDINATOR_HANDOFF_H

#include <stdint.h>

enum keel_handoff_state {
    KEEL_HANDOFF_IDLE = 0,
    KEEL_HANDOFF_TARGET_PENDING,
    KEEL_HANDOFF_AWAIT_RELEASE,
    KEEL_HANDOFF_AWAIT_DEATH,
    KEEL_HANDOFF_PRIMARY_PENDING,
    KEEL_HANDOFF_AWAIT_FENCE,
    KEEL_HANDOFF_DONE,
    KEEL_HANDOFF_ABORTED
};

enum keel_handoff_action {
    KEEL_HANDOFF_NONE = 0,
    KEEL_HANDOFF_WRITE_TARGET = 1,  /* map: unit's target = to */
    KEEL_HANDOFF_WRITE_PRIMARY = 2  /* map: primary = to at next_epoch,
                                     * no target */
};

#define KEEL_HANDOFF_F_RELEASED 1  /* A's release seen */
#define KEEL_HANDOFF_F_FENCED 2    /* B's fence seen */
#define KEEL_HANDOFF_F_GONE 4      /* A's member znode gone */
#define KEEL_HANDOFF_F_LOSS_OK 8   /* may proceed without A's release */
#define KEEL_HANDOFF_F_ACKED 16    /* the pending write is acknowledged */
#define KEEL_HANDOFF_F_PROMOTE 32  /* failover: B was an in-sync backup */

typedef struct keel_handoff {
    uint8_t state;
    uint8_t flags;
    uint32_t from, to;  /* node ids */
    uint64_t epoch;     /* A's shard_epoch */
    /* B's shard_epoch, decided with the primary write: epoch + 1 when B
     * has A's data (A released it to B), epoch + 2 when A's data was
     * given up. The gap tells B's store that whatever it holds of the
     * unit from earlier (a stream whose answer was lost, an older
     * ownership) is not the unit's data: it is dropped before B serves
     * (docs/cluster.md, "A unit that arrives without its data"). */
    uint64_t next_epoch;
    uint64_t gone_at;   /* when A's member znode was seen gone */
    uint32_t grace_ms;  /* wait after that before acting without A */
} keel_handoff;

/* B's shard_epoch for the primary write (see next_epoch). */
uint64_t keel_handoff_next_epoch(const keel_handoff *h);

/* Starts a move; returns KEEL_HANDOFF_WRITE_TARGET. With loss_ok, the move
 * may complete without A's release once A is certainly dead (the operator
 * accepted losing what only A had); otherwise it waits for A forever. */
int keel_handoff_begin(keel_handoff *h, uint32_t from, uint32_t to,
                       uint64_t epoch, int loss_ok, uint32_t grace_ms);
/* Rebuilds a machine from a map read back from ZooKeeper (a new
 * controller, or after an unknown write outcome): the unit's primary is
 * `from` at `epoch` with target `to` (state AWAIT_RELEASE), or, when
 * primary_is_to, the move's primary write is already in (AWAIT_FENCE).
 * Returns KEEL_HANDOFF_NONE. */
int keel_handoff_resume(keel_handoff *h, uint32_t from, uint32_t to,
                        uint64_t epoch, int primary_is_to, int loss_ok,
                        uint32_t grace_ms);
/* Points a move that A has not released yet at another node; returns
 * KEEL_HANDOFF_WRITE_TARGET, or KEEL_HANDOFF_NONE when A already released
 * to the old target (the data went there: the move must finish). */
int keel_handoff_retarget(keel_handoff *h, uint32_t to);

/* The owner `from` released the unit at `epoch` to `to` outside any
 * move this machine records (the move was called off or pointed
 * elsewhere after `to` had stored the unit, or its release reached a new
 * controller that saw no target): the data is with `to` only, so the move
 * finishes there. Returns KEEL_HANDOFF_WRITE_PRIMARY. */
int keel_handoff_adopt(keel_handoff *h, uint32_t from, uint32_t to,
                       uint64_t epoch, int loss_ok, uint32_t grace_ms);

/* Failover (coordinator/failover.h): A is gone and B, one of the unit's
 * in-sync backups, holds every write A acknowledged: B becomes primary at
 * epoch + 1 without a release (flag KEEL_HANDOFF_F_PROMOTE). Whatever
 * move was under way is replaced. Returns KEEL_HANDOFF_WRITE_PRIMARY. */
int keel_handoff_promote(keel_handoff *h, uint32_t from, uint32_t to,
                         uint64_t epoch);

int keel_handoff_target_written(keel_handoff *h, int rc, uint64_t now);
int keel_handoff_primary_written(keel_handoff *h, int rc);
/* A's report: released (role RELEASED) at `epoch` to `to`. A release to
 * another node than the current target still counts, and makes that node
 * the target: A streamed the unit there, so only there can it go on. */
int keel_handoff_released(keel_handoff *h, uint32_t node, uint64_t epoch,
                          uint32_t to, uint64_t now);
/* B's report: primary at `epoch` (fence recorded). */
int keel_handoff_fenced(keel_handoff *h, uint32_t node, uint64_t epoch);
/* A node's member znode appeared (present) or vanished. */
int keel_handoff_member(keel_handoff *h, uint32_t node, int present,
                        uint64_t now);
/* Re-evaluates the waiting states (grace elapsed, a release seen before a
 * re-read): returns the action due now, if any. */
int keel_handoff_tick(keel_handoff *h, uint64_t now);
/* When tick() must next run, or 0. */
uint64_t keel_handoff_deadline(const keel_handoff *h);

const char *keel_handoff_state_name(int state);

#endif
