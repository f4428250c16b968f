/* A call that has used up its forwarding hops is routed again from fresh
 * placement, not parked until its deadline (real ZooKeeper, two keeld).
 *
 * Nodes whose maps disagree (during a join, a drain) can bounce a call
 * between them; after 3 forwards a node stops forwarding it. Such a call
 * must still reach the unit's live owner once the maps agree: it waits for
 * a map change or a short pause, then goes where this node's placement
 * says. The test sends, to the node that does not own an actor, a call
 * whose hop count is already at the limit (as a node on the path would
 * have, on a connection that says it comes from a node), then two
 * ordinary ones for the same actor, with a hold bound of
 * 30 s: all three must be answered by the owner, each increment counted
 * once, well before the bound. A node that parked it would answer
 * EUNAVAIL at the bound, with the later calls of the unit stuck behind
 * it. The latency n0 reports covers the calls it forwarded, from their
 * arrival. Every wait is bounded. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel.h"
#include "cluster.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

static tu_cluster cl;

static void setup(void)
{
    tu_cluster_setup(&cl, "clhops", "hops");
    cl.shards = 16;
}

static void teardown(void)
{
    tu_cluster_teardown(&cl, SIGTERM);
}

static void start_node(int i)
{
    ck_assert_int_eq(tu_cluster_start_node(&cl, i, 0, "--hold-timeout",
                                           "30000", NULL),
                     0);
}

/* Queues a CALL counter/id msg whose flags say it was forwarded `hops`
 * times already. */
static void queue_hopped(keel_client *c, uint64_t rid, const char *id,
                         const char *msg, uint8_t hops)
{
    size_t blen = keel_call_body_size(7, strlen(id), strlen(msg));
    uint8_t *frame = malloc(KEEL_FRAME_HEADER + blen);

    ck_assert_ptr_nonnull(frame);
    keel_frame_header(frame, KEEL_FRAME_CALL, rid, blen);
    frame[5] = hops;
    keel_call_body_encode(frame + KEEL_FRAME_HEADER, "counter", 7, id,
                          strlen(id), msg, strlen(msg));
    ck_assert_int_eq(
        keel_client_queue_raw(c, frame, KEEL_FRAME_HEADER + blen), 0);
    free(frame);
}

START_TEST(hops_used_up_reroutes)
{
    char owner[64] = "", id[32] = "", *out = NULL;
    keel_client *c;
    keel_frame f;
    int i, tries, got = 0, seen[4] = {0};

    start_node(0);
    start_node(1);
    /* An actor n1 owns, once the map has settled (at most 30 s). */
    for (tries = 0; tries < 300 && strcmp(owner, "n1") != 0; tries++) {
        snprintf(id, sizeof id, "h%d", tries % 32);
        if (tu_keel(cl.nodes[0].addr, &out, NULL, "call", "counter", id,
                    "get", NULL) == 0)
            tu_cluster_owner_of(&cl, 0, "counter", id, owner, sizeof owner);
        free(out);
        out = NULL;
        if (strcmp(owner, "n1") != 0)
            usleep(100 * 1000);
    }
    ck_assert_str_eq(owner, "n1");

    /* To n0: one call with its hops used up, then two ordinary ones for
     * the same actor. */
    ck_assert_int_eq(keel_client_connect(cl.nodes[0].addr, 20000, &c), 0);
    /* As a node does (here member n1): only a connection from a member
     * may carry hops. */
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_INFO, NULL, NULL, 0,
                                      "peer\0n1", 7, NULL, NULL),
                     0);
    queue_hopped(c, 1, id, "incr", 3);
    ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_CALL, 2, "counter", id,
                                       strlen(id), "incr", 4),
                     0);
    ck_assert_int_eq(keel_client_queue(c, KEEL_FRAME_CALL, 3, "counter", id,
                                       strlen(id), "incr", 4),
                     0);
    ck_assert_int_eq(keel_client_flush(c), 0);
    /* All three answered well within the 30 s hold bound (the client's
     * 20 s receive timeout), each with the count it made. */
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(keel_client_recv(c, &f), 0);
        got++;
        ck_assert_msg(f.kind == KEEL_FRAME_REPLY,
                      "call %llu: kind %d (a parked call fails with "
                      "EUNAVAIL at the hold bound)",
                      (unsigned long long)f.request_id, f.kind);
        ck_assert_uint_eq(f.body_len, 1);
        ck_assert(f.body[0] >= '1' && f.body[0] <= '3');
        seen[f.body[0] - '0']++;
    }
    ck_assert_int_eq(got, 3);
    ck_assert_int_eq(seen[1] + seen[2] + seen[3], 3);
    ck_assert(seen[1] == 1 && seen[2] == 1 && seen[3] == 1);
    keel_client_close(c);
    ck_assert_int_eq(tu_keel(cl.nodes[1].addr, &out, NULL, "call", "counter",
                             id, "get", NULL),
                     0);
    ck_assert_str_eq(out, "3\n");
    free(out);
    /* n0 forwarded every call of the test: its call latency counts them
     * from their arrival there, each answered within the test's seconds
     * (not from the monotonic clock's start, as when a forwarded call's
     * arrival was never noted). */
    {
        long avg_us = tu_keel_stat(cl.nodes[0].addr, "latency_avg_us");
        ck_assert_msg(avg_us >= 0 && avg_us < 5000000,
                      "n0's mean call latency over the calls it forwarded "
                      "is %ld us",
                      avg_us);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_hops");
    TCase *tc = tcase_create("hops");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, hops_used_up_reroutes);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&cl, s);
}
