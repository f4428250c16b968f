/* The pure pieces of coordination: the handoff state machine of one move
 * (coordinator/handoff.c), with events in the expected order, reordered,
 * stale and duplicated; and self-fencing: the disconnection timer and the
 * lease (coordinator/selffence.c). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/handoff.h"
#include "coordinator/lease.h"
#include "coordinator/selffence.h"
#include "keel.h"
#include "testutil.h"

enum { A = 1, B = 2, C = 3 };

START_TEST(test_happy_path)
{
    keel_handoff h;

    ck_assert_int_eq(keel_handoff_begin(&h, A, B, 5, 0, 1000),
                     KEEL_HANDOFF_WRITE_TARGET);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_TARGET_PENDING);
    ck_assert_int_eq(keel_handoff_target_written(&h, 0, 10), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_AWAIT_RELEASE);
    /* stale and foreign reports change nothing */
    ck_assert_int_eq(keel_handoff_released(&h, A, 4, B, 11), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(keel_handoff_released(&h, C, 5, B, 11), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(keel_handoff_fenced(&h, B, 5), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(keel_handoff_fenced(&h, C, 6), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_AWAIT_RELEASE);
    ck_assert_int_eq(keel_handoff_released(&h, A, 5, B, 12),
                     KEEL_HANDOFF_WRITE_PRIMARY);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_PRIMARY_PENDING);
    /* a duplicate report does not ask for a second write */
    ck_assert_int_eq(keel_handoff_released(&h, A, 5, B, 13), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(keel_handoff_primary_written(&h, 0), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_AWAIT_FENCE);
    ck_assert_int_eq(keel_handoff_fenced(&h, B, 6), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_DONE);
}
END_TEST

START_TEST(test_reordered_events)
{
    keel_handoff h;

    /* A's release arrives before the target write is acknowledged. */
    keel_handoff_begin(&h, A, B, 1, 0, 0);
    ck_assert_int_eq(keel_handoff_released(&h, A, 1, B, 5), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_TARGET_PENDING);
    ck_assert_int_eq(keel_handoff_target_written(&h, 0, 6),
                     KEEL_HANDOFF_WRITE_PRIMARY);
    /* B's fence arrives before the primary write is acknowledged. */
    ck_assert_int_eq(keel_handoff_fenced(&h, B, 2), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_PRIMARY_PENDING);
    ck_assert_int_eq(keel_handoff_primary_written(&h, 0), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_DONE);
}
END_TEST

START_TEST(test_release_to_other_node_wins)
{
    keel_handoff h;

    /* Retargeted to C, but A had already streamed to B: finish to B. */
    keel_handoff_begin(&h, A, B, 3, 0, 0);
    keel_handoff_target_written(&h, 0, 1);
    ck_assert_int_eq(keel_handoff_retarget(&h, C), KEEL_HANDOFF_WRITE_TARGET);
    ck_assert_int_eq(keel_handoff_released(&h, A, 3, B, 2), KEEL_HANDOFF_NONE);
    ck_assert_uint_eq(h.to, B);
    ck_assert_int_eq(keel_handoff_target_written(&h, 0, 3),
                     KEEL_HANDOFF_WRITE_PRIMARY);
    ck_assert_uint_eq(h.to, B);
    /* once released, no retarget */
    ck_assert_int_eq(keel_handoff_retarget(&h, C), KEEL_HANDOFF_NONE);
}
END_TEST

START_TEST(test_owner_death)
{
    keel_handoff h, w;

    /* Loss accepted: wait out the grace after A's znode is gone. */
    keel_handoff_begin(&h, A, B, 7, 1, 500);
    keel_handoff_target_written(&h, 0, 100);
    ck_assert_int_eq(keel_handoff_member(&h, A, 0, 200), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_AWAIT_DEATH);
    ck_assert_uint_eq(keel_handoff_deadline(&h), 700);
    ck_assert_int_eq(keel_handoff_tick(&h, 699), KEEL_HANDOFF_NONE);
    /* a second "gone" report does not restart the clock */
    keel_handoff_member(&h, A, 0, 650);
    ck_assert_int_eq(keel_handoff_tick(&h, 700), KEEL_HANDOFF_WRITE_PRIMARY);

    /* A comes back in time: the clock stops, it will release itself. */
    keel_handoff_begin(&h, A, B, 7, 1, 500);
    keel_handoff_target_written(&h, 0, 100);
    keel_handoff_member(&h, A, 0, 200);
    keel_handoff_member(&h, A, 1, 300);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_AWAIT_RELEASE);
    ck_assert_int_eq(keel_handoff_tick(&h, 10000), KEEL_HANDOFF_NONE);
    ck_assert_uint_eq(keel_handoff_deadline(&h), 0);

    /* Loss not accepted: a dead owner's unit waits for it forever. */
    keel_handoff_begin(&w, A, B, 7, 0, 500);
    keel_handoff_target_written(&w, 0, 100);
    keel_handoff_member(&w, A, 0, 200);
    ck_assert_int_eq(w.state, KEEL_HANDOFF_AWAIT_RELEASE);
    ck_assert_int_eq(keel_handoff_tick(&w, 1000000), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(keel_handoff_released(&w, A, 7, B, 1000001),
                     KEEL_HANDOFF_WRITE_PRIMARY);
}
END_TEST

START_TEST(test_deposed_mid_move)
{
    keel_handoff h;

    keel_handoff_begin(&h, A, B, 2, 0, 0);
    keel_handoff_target_written(&h, 0, 1);
    ck_assert_int_eq(keel_handoff_released(&h, A, 2, B, 2),
                     KEEL_HANDOFF_WRITE_PRIMARY);
    ck_assert_int_eq(keel_handoff_primary_written(&h, KEEL_EDEPOSED),
                     KEEL_HANDOFF_NONE);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_ABORTED);
    /* nothing moves an aborted machine */
    ck_assert_int_eq(keel_handoff_released(&h, A, 2, B, 3), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(keel_handoff_tick(&h, 100), KEEL_HANDOFF_NONE);
    ck_assert_int_eq(keel_handoff_retarget(&h, C), KEEL_HANDOFF_NONE);

    /* a target write whose outcome is unknown is asked for again */
    keel_handoff_begin(&h, A, B, 2, 0, 0);
    ck_assert_int_eq(keel_handoff_target_written(&h, KEEL_ECONNLOSS, 1),
                     KEEL_HANDOFF_WRITE_TARGET);
    ck_assert_int_eq(keel_handoff_target_written(&h, KEEL_EDEPOSED, 1),
                     KEEL_HANDOFF_NONE);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_ABORTED);
}
END_TEST

START_TEST(test_resume_from_map)
{
    keel_handoff h;

    /* A new controller finds a target in the map. */
    memset(&h, 0, sizeof h);
    keel_handoff_resume(&h, A, B, 9, 0, 0, 0);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_AWAIT_RELEASE);
    ck_assert_int_eq(keel_handoff_released(&h, A, 9, B, 1),
                     KEEL_HANDOFF_WRITE_PRIMARY);
    /* the write's outcome is unknown; re-reading finds it applied */
    keel_handoff_resume(&h, A, B, 9, 1, 0, 0);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_AWAIT_FENCE);
    keel_handoff_fenced(&h, B, 10);
    ck_assert_int_eq(h.state, KEEL_HANDOFF_DONE);
    /* ... or not applied: the release seen before is remembered */
    memset(&h, 0, sizeof h);
    keel_handoff_resume(&h, A, B, 9, 0, 0, 0);
    keel_handoff_released(&h, A, 9, B, 1);
    keel_handoff_resume(&h, A, B, 9, 0, 0, 0);
    ck_assert_int_eq(keel_handoff_tick(&h, 2), KEEL_HANDOFF_WRITE_PRIMARY);
}
END_TEST

/* ---------------------------------------------------------- self-fence */

START_TEST(test_selffence)
{
    keel_selffence f;

    keel_selffence_init(&f, 3000);
    ck_assert(f.fenced); /* not serving before the first connection */
    /* a connection alone does not serve: the lease comes with the first
     * answered heartbeat */
    ck_assert_int_eq(keel_selffence_connected(&f, 0, 3000), 0);
    ck_assert(f.fenced);
    ck_assert_uint_eq(keel_selffence_deadline(&f), 0);
    ck_assert_int_eq(keel_selffence_renewed(&f, 1000, 1010), 1);
    ck_assert(!f.fenced);
    ck_assert_uint_eq(keel_selffence_deadline(&f), 2500); /* 1000 + T/2 */
    /* disconnected: half the timeout, never after the lease */
    ck_assert_int_eq(keel_selffence_disconnected(&f, 1000), 0);
    ck_assert_uint_eq(keel_selffence_deadline(&f), 2500);
    ck_assert_int_eq(keel_selffence_tick(&f, 2499), 0);
    ck_assert(!f.fenced);
    ck_assert_int_eq(keel_selffence_tick(&f, 2500), 1);
    ck_assert(f.fenced);
    ck_assert_uint_eq(keel_selffence_deadline(&f), 0);
    /* back within the session: serving again once a heartbeat sent on the
     * new connection is answered */
    ck_assert_int_eq(keel_selffence_connected(&f, 3500, 3000), 0);
    ck_assert(f.fenced);
    ck_assert_int_eq(keel_selffence_renewed(&f, 3500, 3510), 1);
    ck_assert(!f.fenced);
    /* a reconnection before the deadline never fenced */
    keel_selffence_disconnected(&f, 4000);
    ck_assert_uint_eq(keel_selffence_deadline(&f), 5000); /* the lease */
    ck_assert_int_eq(keel_selffence_connected(&f, 4800, 3000), 0);
    ck_assert(!f.fenced);
    /* expired: fenced until rejoined, even when connected again */
    ck_assert_int_eq(keel_selffence_expired(&f), 1);
    ck_assert_int_eq(keel_selffence_connected(&f, 6000, 3000), 0);
    ck_assert(f.fenced);
    ck_assert_int_eq(keel_selffence_renewed(&f, 6000, 6010), 0);
    ck_assert_int_eq(keel_selffence_rejoined(&f, 6100, 6000), 1);
    ck_assert(!f.fenced);
    /* the negotiated timeout counts */
    ck_assert_int_eq(keel_selffence_renewed(&f, 10000, 10000), 0);
    ck_assert_uint_eq(f.lease_until, 13000);
    keel_selffence_disconnected(&f, 10000);
    ck_assert_uint_eq(keel_selffence_deadline(&f), 13000);
}
END_TEST

/* The lease, measured from the send time of the heartbeats the servers
 * answered: T = 3000, so each answer gives T/2 = 1500 ms from its
 * request's departure. */
START_TEST(test_lease)
{
    keel_selffence f;

    keel_selffence_init(&f, 3000);
    keel_selffence_expired(&f); /* as the agent starts: until joined */
    keel_selffence_connected(&f, 0, 3000);
    ck_assert_int_eq(keel_selffence_renewed(&f, 0, 5), 0);
    ck_assert(f.fenced); /* not joined yet */
    ck_assert_int_eq(keel_selffence_rejoined(&f, 10, 3000), 1);
    ck_assert(!f.fenced);

    /* No answer comes (a stopped process, a stalled server): the lease
     * lapses while the client still believes it is connected. */
    ck_assert_uint_eq(keel_selffence_deadline(&f), 1500);
    ck_assert(!keel_selffence_lapsed(&f, 1499));
    ck_assert_int_eq(keel_selffence_tick(&f, 1499), 0);
    ck_assert(keel_selffence_lapsed(&f, 1500));
    ck_assert_int_eq(keel_selffence_tick(&f, 1500), 1);
    ck_assert(f.fenced);
    ck_assert(f.connected);
    ck_assert_uint_eq(keel_selffence_deadline(&f), 0);

    /* An answer that waited (in a socket buffer, during a pause) renews
     * only up to its request's send time + T/2: sent at 500, read at
     * 9000, the lease ends at 2000 and the node stays fenced. */
    ck_assert_int_eq(keel_selffence_renewed(&f, 500, 9000), 0);
    ck_assert_uint_eq(f.lease_until, 2000);
    ck_assert(f.fenced);
    /* A renewal never shortens the lease. */
    ck_assert_int_eq(keel_selffence_renewed(&f, 100, 9000), 0);
    ck_assert_uint_eq(f.lease_until, 2000);

    /* A heartbeat sent after the pause and answered lifts a fence that
     * only the lease had raised: a stall, not an error. */
    ck_assert_int_eq(keel_selffence_renewed(&f, 9000, 9020), 1);
    ck_assert(!f.fenced);
    ck_assert_uint_eq(f.lease_until, 10500);
    ck_assert_uint_eq(keel_selffence_deadline(&f), 10500);
    /* ... but not one answered too late to matter */
    ck_assert_int_eq(keel_selffence_tick(&f, 10500), 1);
    ck_assert_int_eq(keel_selffence_renewed(&f, 9500, 11600), 0);
    ck_assert(f.fenced);
    ck_assert_int_eq(keel_selffence_renewed(&f, 11600, 11610), 1);

    /* Expiry wins over a valid lease, and takes the lease with it: the
     * new session's own heartbeats and the rejoin are needed. */
    ck_assert(!keel_selffence_lapsed(&f, 12000));
    ck_assert_int_eq(keel_selffence_expired(&f), 1);
    ck_assert(f.fenced);
    ck_assert(keel_selffence_lapsed(&f, 12000));
    ck_assert_int_eq(keel_selffence_connected(&f, 12000, 3000), 0);
    ck_assert_int_eq(keel_selffence_rejoined(&f, 12100, 3000), 0);
    ck_assert(f.fenced); /* rejoined, but no answer yet in this session */
    ck_assert_int_eq(keel_selffence_renewed(&f, 12050, 12150), 1);
    ck_assert(!f.fenced);

    /* Disconnected: the lease (from a request sent before the
     * disconnection) ends no later than half the timeout after it. */
    keel_selffence_renewed(&f, 13000, 13000); /* lease 14500 */
    keel_selffence_disconnected(&f, 13100);   /* would be 14600 */
    ck_assert_uint_eq(keel_selffence_deadline(&f), 14500);
    ck_assert_int_eq(keel_selffence_tick(&f, 14499), 0);
    ck_assert_int_eq(keel_selffence_tick(&f, 14500), 1);
}
END_TEST

/* fenced_at: when the node stopped being allowed to serve, the lease's
 * end for a node that notices late (resumed after a pause), which the
 * activation log reports as "fenced since". T = 3000, lease T/2. */
START_TEST(test_fenced_at)
{
    keel_selffence f;

    keel_selffence_init(&f, 3000);
    keel_selffence_expired(&f);
    keel_selffence_connected(&f, 0, 3000);
    keel_selffence_rejoined(&f, 10, 3000);
    ck_assert_int_eq(keel_selffence_renewed(&f, 1000, 1010), 1);
    ck_assert(!f.fenced);
    /* stopped from 1100 to 9000: the first tick after it fences, and the
     * fence dates from the lease's end (2500), not from 9000 */
    ck_assert_int_eq(keel_selffence_tick(&f, 9000), 1);
    ck_assert(f.fenced);
    ck_assert_uint_eq(f.fenced_at, 2500);
    /* a later tick while fenced keeps it */
    ck_assert_int_eq(keel_selffence_tick(&f, 9500), 0);
    ck_assert_uint_eq(f.fenced_at, 2500);
    /* serving again, then disconnected at 10100 with the lease to 11500:
     * fenced from 11500, noticed at 12000 */
    ck_assert_int_eq(keel_selffence_renewed(&f, 10000, 10005), 1);
    keel_selffence_disconnected(&f, 10100);
    ck_assert_int_eq(keel_selffence_tick(&f, 12000), 1);
    ck_assert_uint_eq(f.fenced_at, 11500);
    /* an expiry learned of while serving dates from the lease's end */
    keel_selffence_connected(&f, 12100, 3000);
    ck_assert_int_eq(keel_selffence_renewed(&f, 12100, 12110), 1);
    ck_assert_int_eq(keel_selffence_expired(&f), 1);
    ck_assert_uint_eq(f.fenced_at, 13600);
    /* a node fenced noticing in time: fenced_at is the tick's time */
    keel_selffence_connected(&f, 20000, 3000);
    keel_selffence_rejoined(&f, 20000, 3000);
    ck_assert_int_eq(keel_selffence_renewed(&f, 20000, 20001), 1);
    ck_assert_int_eq(keel_selffence_tick(&f, 21500), 1);
    ck_assert_uint_eq(f.fenced_at, 21500);
}
END_TEST

/* Which negotiated timeouts a node accepts (the lease needs room), and
 * the heartbeat interval. */
START_TEST(test_lease_timeouts)
{
    char why[256];
    int warn;

    ck_assert_int_eq(keel_lease_timeout_ok(3000, 3000, &warn, why,
                                           sizeof why),
                     0);
    ck_assert_int_eq(warn, 0);
    /* capped at the servers' maximum: fine, and what counts */
    ck_assert_int_eq(keel_lease_timeout_ok(40000, 90000, &warn, why,
                                           sizeof why),
                     0);
    ck_assert_int_eq(warn, 0);
    /* raised to the servers' minimum, 2 ticks: the least margin */
    ck_assert_int_eq(keel_lease_timeout_ok(4000, 3000, &warn, why,
                                           sizeof why),
                     0);
    ck_assert_int_eq(warn, 1);
    ck_assert_ptr_nonnull(strstr(why, "raised"));
    ck_assert_int_eq(keel_lease_timeout_ok(KEEL_LEASE_MIN_TIMEOUT_MS - 1,
                                           5000, &warn, why, sizeof why),
                     KEEL_ECONFIG);
    ck_assert_ptr_nonnull(strstr(why, "999 ms"));
    ck_assert_int_eq(keel_lease_timeout_ok(KEEL_LEASE_MIN_TIMEOUT_MS,
                                           KEEL_LEASE_MIN_TIMEOUT_MS, &warn,
                                           why, sizeof why),
                     0);
    ck_assert_uint_eq(keel_lease_interval(4000), 500);
    ck_assert_uint_eq(keel_selffence_lease_ms(4000), 2000);
    /* the loop may be held T/2 - T/8; never below 0, however short T */
    ck_assert_uint_eq(keel_lease_hold_max(4000), 1500);
    ck_assert_uint_eq(keel_lease_hold_max(2), 0);
    ck_assert_uint_eq(keel_lease_hold_max(1), 0);
    ck_assert_uint_eq(keel_lease_hold_max(0), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("coord_handoff");
    TCase *tc = tcase_create("pure");

    tcase_add_test(tc, test_happy_path);
    tcase_add_test(tc, test_reordered_events);
    tcase_add_test(tc, test_release_to_other_node_wins);
    tcase_add_test(tc, test_owner_death);
    tcase_add_test(tc, test_deposed_mid_move);
    tcase_add_test(tc, test_resume_from_map);
    tcase_add_test(tc, test_selffence);
    tcase_add_test(tc, test_lease);
    tcase_add_test(tc, test_fenced_at);
    tcase_add_test(tc, test_lease_timeouts);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
