/* Following an actor in a cluster (docs/protocol.md, "Following an
 * actor", cluster mode): a real ZooKeeper and three keeld processes.
 * A SUBSCRIBE that reaches a node other than the owner is refused
 * EUNAVAIL naming the owner's address; at the owner, changes sent
 * through another node (forwarded) arrive in order; draining the owner
 * ends the subscription with END EUNAVAIL (naming the new owner, or
 * saying the unit has none yet when caught in the move), and
 * subscribing again through another node, with the last version seen,
 * goes on from the current state. Every wait is bounded. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"
#include "zk.h"

#define NODES 3

static tu_cluster fx;

static void setup(void)
{
    tu_cluster_setup(&fx, "cfollow", "cf");
}

static void teardown(void)
{
    tu_cluster_teardown(&fx, SIGTERM);
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static keel_client *connect_to(int i)
{
    keel_client *c = NULL;

    ck_assert_int_eq(keel_client_connect(fx.nodes[i].addr, 20000, &c), 0);
    return c;
}

/* The index of node "n<i>" named in owner, or -1. */
static int node_index(const char *owner)
{
    if (owner[0] != 'n' || owner[1] < '0' || owner[1] >= '0' + NODES ||
        owner[2] != '\0')
        return -1;
    return owner[1] - '0';
}

/* Subscribes to counter `id` through node i, retried (at most 100 times,
 * 100 ms apart) while the node answers that the unit has no serving owner
 * now or that the owner is elsewhere; the latter once it names `want`'s
 * address, when want >= 0. Returns the client, subscribed, with *u the
 * first answer. */
static keel_client *subscribe_at(int i, const char *id, uint64_t since,
                                 uint64_t *sub, keel_follow_update *u)
{
    int tries, rc = 0;

    for (tries = 0; tries < 100; tries++) {
        keel_client *c = connect_to(i);
        rc = keel_client_subscribe(c, "counter", id, strlen(id), since, sub,
                                   u);
        if (rc == 0)
            return c;
        keel_client_close(c);
        TU_CLUSTER_CHECK(&fx, rc == KEEL_EUNAVAIL,
                         "subscribe through n%d: %s", i, keel_strerror(rc));
        tu_sleep_ms(100);
    }
    TU_CLUSTER_CHECK(&fx, 0, "no subscription through n%d after 100 tries",
                     i);
    return NULL;
}

START_TEST(refused_elsewhere_moved_on_drain)
{
    keel_client *f, *c;
    keel_follow_update u;
    uint64_t sub = 0, last;
    char owner[64], *out = NULL, *err = NULL, want[96];
    int i, k = -1, other, tries, rc;

    for (i = 0; i < NODES; i++)
        ck_assert_int_eq(tu_cluster_start_node(&fx, i, 0, NULL), 0);
    /* Every node sees an owner for the actor. */
    for (tries = 0; tries < 200 && k < 0; tries++) {
        int ok = 1;
        for (i = 0; i < NODES && ok; i++)
            ok = tu_cluster_counter(&fx, i, "fol", "get") >= 0;
        if (ok) {
            tu_cluster_owner_of(&fx, 0, "counter", "fol", owner,
                                sizeof owner);
            k = node_index(owner);
        }
        if (k < 0)
            tu_sleep_ms(100);
    }
    TU_CLUSTER_CHECK(&fx, k >= 0, "no owner for counter/fol");
    other = (k + 1) % NODES;

    /* Through another node: refused, naming the owner's address. */
    c = connect_to(other);
    for (tries = 0; tries < 100; tries++) {
        rc = keel_client_subscribe(c, "counter", "fol", 3, 0, &sub, &u);
        TU_CLUSTER_CHECK(&fx, rc == KEEL_EUNAVAIL,
                         "subscribe at a non-owner: %s", keel_strerror(rc));
        snprintf(want, sizeof want, "owner %s", fx.nodes[k].addr);
        if (u.reason_len >= strlen(want) &&
            memcmp(u.reason, want, strlen(want)) == 0)
            break;
        tu_sleep_ms(100);
    }
    TU_CLUSTER_CHECK(&fx, tries < 100, "the refusal names no owner: %.*s",
                     (int)u.reason_len, u.reason);
    keel_client_close(c);

    /* At the owner: the current state, then the changes made through
     * another node, in order. */
    f = subscribe_at(k, "fol", 0, &sub, &u);
    ck_assert_int_eq(u.kind, KEEL_EVENT_CHANGE);
    last = u.version;
    for (i = 1; i <= 5; i++) {
        TU_CLUSTER_CHECK(&fx, tu_cluster_counter(&fx, other, "fol", "incr") ==
                                  (long)(last + (uint64_t)i),
                         "incr through n%d", other);
    }
    for (i = 1; i <= 5; i++) {
        ck_assert_int_eq(keel_client_next_event(f, sub, &u), 0);
        ck_assert_int_eq(u.kind, KEEL_EVENT_CHANGE);
        ck_assert_uint_eq(u.version, last + (uint64_t)i);
        ck_assert_uint_eq(be64(u.state), last + (uint64_t)i);
    }
    last += 5;

    /* Drain the owner: its units move, and the subscription ends with
     * EUNAVAIL naming where the actor went. */
    snprintf(want, sizeof want, "n%d", k);
    rc = tu_keel(fx.nodes[other].addr, &out, &err, "node", "drain", want,
                 NULL);
    TU_CLUSTER_CHECK(&fx, rc == 0, "node drain: %s", err);
    free(out);
    free(err);
    ck_assert_int_eq(keel_client_next_event(f, sub, &u), 0);
    TU_CLUSTER_CHECK(&fx, u.kind == KEEL_EVENT_END && u.code == KEEL_EUNAVAIL,
                     "after the drain: kind %d code %s: %.*s", u.kind,
                     keel_strerror(u.code), (int)u.reason_len, u.reason);
    ck_assert_uint_eq(u.version, last);
    /* Where it went, or (caught while the unit was between owners) that
     * it has none yet. */
    TU_CLUSTER_CHECK(&fx,
                     memmem(u.reason, u.reason_len, "owner 127.0.0.1:",
                            16) != NULL ||
                         memmem(u.reason, u.reason_len, "no serving owner",
                                16) != NULL,
                     "END reason: %.*s", (int)u.reason_len, u.reason);
    keel_client_close(f);
    TU_CLUSTER_CHECK(&fx, tu_keeld_stop(&fx.nodes[k], SIGTERM) == 0,
                     "the drained node did not exit cleanly");

    /* The new owner, through the node that is left. */
    for (tries = 0, owner[0] = '\0'; tries < 200; tries++) {
        tu_cluster_owner_of(&fx, other, "counter", "fol", owner,
                            sizeof owner);
        i = node_index(owner);
        if (i >= 0 && i != k)
            break;
        tu_sleep_ms(100);
    }
    TU_CLUSTER_CHECK(&fx, i >= 0 && i != k, "no new owner: '%s'", owner);
    /* Resubscribing with the last version seen: nothing changed since,
     * so an empty answer; then a change arrives there. */
    f = subscribe_at(i, "fol", last, &sub, &u);
    ck_assert_int_eq(u.kind, 0);
    TU_CLUSTER_CHECK(&fx,
                     tu_cluster_counter(&fx, i, "fol", "incr") ==
                         (long)(last + 1),
                     "incr at the new owner");
    ck_assert_int_eq(keel_client_next_event(f, sub, &u), 0);
    ck_assert_int_eq(u.kind, KEEL_EVENT_CHANGE);
    ck_assert_uint_eq(u.version, last + 1);
    ck_assert_uint_eq(be64(u.state), last + 1);
    keel_client_close(f);
}
END_TEST

static Suite *cluster_follow_suite(void)
{
    Suite *s = suite_create("cluster_follow");
    TCase *tc = tcase_create("follow");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, refused_elsewhere_moved_on_drain);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_cluster_run_suite(&fx, cluster_follow_suite());
}
