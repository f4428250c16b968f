/* The outbox in a cluster (keel_turn_send, runtime/outbox.c): three keeld
 * nodes, every unit on three replicas, outbox_plugin_bank.so loaded. Token
 * chains pass around a ring of "tok" actors spread over the nodes, each
 * hop a message from one actor's outbox to the next (forwarded between
 * nodes); one node is killed with SIGKILL while they run and started
 * again on its data; then another node leaves gracefully (its units,
 * outboxes included, are handed off) and comes back. Once quiet, every
 * hop was handled exactly once (the sum of what the actors handled is
 * exactly what the chains make) and in order per pair (each actor counts
 * duplicates and gaps of the per-pair sequence). Chains on a node fenced
 * for over a minute with its session alive go on once it serves again.
 * A message waits for the node that delivers it to register the
 * receiver's type; one of the largest size reaches another node.
 * Every wait is bounded; the checks are about outcomes, not
 * durations. On a failure the nodes' logs are printed. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clmap.h"
#include "cluster.h"
#include "clplug.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define RING 9
#define CHAINS 3
#define HOPS 120

static tu_cluster fx;
static char *plugin;

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

static void setup(void)
{
    plugin = tu_clplug_setup(&fx, "clobox", "ob", "outbox_plugin_bank.so");
}

static void teardown(void)
{
    tu_clplug_teardown(&fx, plugin);
}

/* Sums the ring's "get" answers read through node i. */
static int ring_sums(int i, long *handled, long *dups, long *gaps)
{
    char id[8], out[64];
    long h, d, g;
    int k;

    *handled = *dups = *gaps = 0;
    for (k = 0; k < RING; k++) {
        snprintf(id, sizeof id, "%d", k);
        if (tu_clplug_call_keyed(&fx, i, NULL, "tok", id, "get", out,
                                 sizeof out) != 0 ||
            sscanf(out, "%ld %ld %ld", &h, &d, &g) != 3)
            return -1;
        *handled += h;
        *dups += d;
        *gaps += g;
    }
    return 0;
}

START_TEST(token_chains_survive_a_killed_node)
{
    const char *common[] = {"--load", plugin, "--repl-lag-ms", "1000",
                            NULL};
    const long want = (long)CHAINS * (HOPS + 1);
    long handled = 0, dups = 0, gaps = 0, prev = -1;
    char msg[64], id[8];
    int k, port, tries, victim = 1, quiet = 0;
    long handed;

    tu_cluster_start_together(&fx, 3, 3, common, NULL);
    /* The ring's actors land on more than one node: hops are forwarded. */
    {
        char o0[64], o1[64];
        int spread = 0;
        tu_cluster_owner_of(&fx, 0, "tok", "0", o0, sizeof o0);
        for (k = 1; k < RING && !spread; k++) {
            snprintf(id, sizeof id, "%d", k);
            tu_cluster_owner_of(&fx, 0, "tok", id, o1, sizeof o1);
            spread = o1[0] != '\0' && strcmp(o0, o1) != 0;
        }
        CHECK(spread, "the ring's actors all live on %s", o0);
    }
    for (k = 0; k < CHAINS; k++) {
        snprintf(id, sizeof id, "%d", k * (RING / CHAINS));
        snprintf(msg, sizeof msg, "tok %d %d - 0", RING, HOPS);
        CHECK(tu_clplug_call_keyed(&fx, 0, NULL, "tok", id, msg, NULL,
                                   0) == 0,
              "starting chain %d failed", k);
    }
    tu_sleep_ms(300);
    port = fx.nodes[victim].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[victim], SIGKILL),
                     128 + SIGKILL);
    tu_keeld_free(&fx.nodes[victim]);
    tu_sleep_ms(500);
    CHECK(tu_cluster_start_nodev(&fx, victim, port, common) == 0,
          "n%d did not start again", victim);
    /* Quiet: the count reached what the chains make and stayed there over
     * a few looks (a duplicate would push it past). */
    for (tries = 0; tries < 240 && quiet < 3; tries++) {
        CHECK(ring_sums(0, &handled, &dups, &gaps) == 0,
              "reading the ring failed");
        quiet = handled >= want && handled == prev ? quiet + 1 : 0;
        prev = handled;
        if (quiet < 3)
            tu_sleep_ms(250);
    }
    CHECK(handled == want, "the ring handled %ld hops, the chains make %ld",
          handled, want);
    CHECK(dups == 0, "%ld hops were handled twice", dups);
    CHECK(gaps == 0, "%ld hops came out of order (or after a lost one)",
          gaps);
    /* Through another node the same. */
    CHECK(ring_sums(2, &handled, &dups, &gaps) == 0 && handled == want &&
              dups == 0 && gaps == 0,
          "through n2: %ld handled, %ld twice, %ld out of order", handled,
          dups, gaps);
    /* More chains while n2 leaves gracefully (its units are handed off,
     * outboxes and indexes with them) and comes back (they are handed
     * back): again every hop once, in order. */
    for (k = 0; k < CHAINS; k++) {
        snprintf(id, sizeof id, "%d", k * (RING / CHAINS) + 1);
        snprintf(msg, sizeof msg, "tok %d %d - 0", RING, HOPS);
        CHECK(tu_clplug_call_keyed(&fx, 0, NULL, "tok", id, msg, NULL,
                                   0) == 0,
              "starting chain %d failed", k);
    }
    tu_sleep_ms(300);
    port = fx.nodes[2].port;
    handed = -tu_keel_stat(fx.nodes[0].addr, "units_acquired") -
             tu_keel_stat(fx.nodes[1].addr, "units_acquired");
    CHECK(tu_keeld_stop(&fx.nodes[2], SIGTERM) == 0, "n2 did not leave");
    handed += tu_keel_stat(fx.nodes[0].addr, "units_acquired") +
              tu_keel_stat(fx.nodes[1].addr, "units_acquired");
    tu_keeld_free(&fx.nodes[2]);
    CHECK(tu_cluster_start_nodev(&fx, 2, port, common) == 0,
          "n2 did not start again");
    prev = -1;
    quiet = 0;
    for (tries = 0; tries < 240 && quiet < 3; tries++) {
        CHECK(ring_sums(0, &handled, &dups, &gaps) == 0,
              "reading the ring failed");
        quiet = handled >= 2 * want && handled == prev ? quiet + 1 : 0;
        prev = handled;
        if (quiet < 3)
            tu_sleep_ms(250);
    }
    CHECK(handled == 2 * want && dups == 0 && gaps == 0,
          "after n2 left and came back: %ld handled of %ld, %ld twice, %ld "
          "out of order",
          handled, 2 * want, dups, gaps);
    CHECK(handed > 0, "n2's leave handed no unit to n0 or n1");
    fprintf(stderr, "cluster outbox: %ld hops, outbox_sent n0 %ld n1 %ld "
                    "n2 %ld, dropped n0 %ld n1 %ld n2 %ld\n",
            handled, tu_keel_stat(fx.nodes[0].addr, "outbox_sent"),
            tu_keel_stat(fx.nodes[1].addr, "outbox_sent"),
            tu_keel_stat(fx.nodes[2].addr, "outbox_sent"),
            tu_keel_stat(fx.nodes[0].addr, "outbox_dropped"),
            tu_keel_stat(fx.nodes[1].addr, "outbox_dropped"),
            tu_keel_stat(fx.nodes[2].addr, "outbox_dropped"));
}
END_TEST

/* Chains running on one node when it fences for longer than the outbox
 * looks at a unit not served before forgetting its sender (40 looks, about
 * 68 s with the retry's back-off), its session alive: its ZooKeeper
 * server is stopped for 75 s and started again on its data, so the
 * sessions come back and the node keeps its units. With 4 s sessions the
 * node fences about 2 s into the stop, so it is fenced for over 72 s.
 * Once it serves again the chains must go on, every hop once and in
 * order. Before, the senders were forgotten while the node was fenced and
 * nothing found them again (the units were never taken anew): the chains
 * stopped for good. */
START_TEST(token_chains_go_on_after_a_long_fence)
{
    const char *common[] = {"--load", plugin, NULL};
    long handled = 0, dups = 0, gaps = 0, h0, h1, acquired, fenced;
    char msg[64], id[8];
    tu_zk suite;
    const char *why;
    int k, tries;

    CHECK(tu_cluster_own_zk(&fx, &suite, 4000) == 0,
          "ZooKeeper (tickTime 2 s) did not start");
    tu_cluster_start_together(&fx, 1, 1, common, NULL);
    for (k = 0; k < CHAINS; k++) {
        snprintf(id, sizeof id, "%d", k * (RING / CHAINS));
        snprintf(msg, sizeof msg, "tok %d 100000000 - 0", RING);
        CHECK(tu_clplug_call_keyed(&fx, 0, NULL, "tok", id, msg, NULL,
                                   0) == 0,
              "starting chain %d failed", k);
    }
    tu_sleep_ms(1000);
    CHECK(ring_sums(0, &h0, &dups, &gaps) == 0 && h0 > 0,
          "the chains do not run: %ld hops", h0);
    CHECK(tu_cluster_zk_outage(&fx, 0, 75000, &acquired, &fenced) == 0,
          "the ZooKeeper outage failed");

    CHECK(ring_sums(0, &h1, &dups, &gaps) == 0,
          "reading the ring failed after the fence");
    why = tu_cluster_outage_fenced(&fx, 0, acquired, fenced);
    CHECK(why == NULL, "%s: the test proves nothing", why);
    for (tries = 0; tries < 100; tries++) {
        tu_sleep_ms(200);
        CHECK(ring_sums(0, &handled, &dups, &gaps) == 0,
              "reading the ring failed");
        if (handled >= h1 + 100)
            break;
    }
    CHECK(handled >= h1 + 100,
          "the chains made %ld hops in 20 s after the fence (%ld before it)",
          handled - h1, h0);
    CHECK(dups == 0 && gaps == 0, "%ld hops handled twice, %ld out of order",
          dups, gaps);
    tu_cluster_own_zk_end(&fx, &suite);
}
END_TEST

/* A sender of type ftype n0 owns and a receiver (acct) n1 owns (ids of
 * 16 bytes), once both are placed. */
static void sender_of_and_receiver(const char *ftype, char *from, char *to)
{
    char owner[64];
    int k, tries;

    from[0] = to[0] = '\0';
    for (tries = 0; tries < 300 && (from[0] == '\0' || to[0] == '\0');
         tries++) {
        for (k = 0; k < 64 && (from[0] == '\0' || to[0] == '\0'); k++) {
            char id[16];
            snprintf(id, sizeof id, "a%d", k);
            if (from[0] == '\0') {
                tu_cluster_owner_of(&fx, 0, ftype, id, owner, sizeof owner);
                if (strcmp(owner, "n0") == 0)
                    snprintf(from, 16, "%s", id);
            }
            if (to[0] == '\0') {
                tu_cluster_owner_of(&fx, 0, "acct", id, owner, sizeof owner);
                if (strcmp(owner, "n1") == 0)
                    snprintf(to, 16, "%s", id);
            }
        }
        if (from[0] == '\0' || to[0] == '\0')
            tu_sleep_ms(100);
    }
    CHECK(from[0] != '\0' && to[0] != '\0',
          "no %s actor owned by n0 and acct owned by n1 ('%s', '%s')", ftype,
          from, to);
}

static void sender_and_receiver(char *from, char *to)
{
    sender_of_and_receiver("acct", from, to);
}

/* Waits (at most 10 s) for node i's log to say what. */
static int log_says(int i, const char *what)
{
    char *log;
    int tries, said = 0;

    for (tries = 0; tries < 100 && !said; tries++) {
        log = tu_keeld_log(&fx.nodes[i]);
        said = log != NULL && strstr(log, what) != NULL;
        free(log);
        if (!said)
            tu_sleep_ms(100);
    }
    return said;
}

/* A sender of type ftype that n0 owns sends a credit of 5 (its command
 * verb) to an acct n1 owns (its id in to), which n1, without the plugin,
 * refuses: n0 says so and keeps the credit. */
static void credit_waits_for_n1(const char *ftype, const char *verb,
                                char *to)
{
    char from[16], out[128], msg[64];

    sender_of_and_receiver(ftype, from, to);
    snprintf(msg, sizeof msg, "%s %s 5", verb, to);
    CHECK(tu_clplug_call_keyed(&fx, 0, NULL, ftype, from, msg, out,
                               sizeof out) == 0,
          "%s through n0 failed: %s", verb, out);
    CHECK(log_says(0, "does not register its type"),
          "n0 did not say that n1 refused the credit for its type");
}

/* n1, which did not load the plugin, starts again with `with`: the one
 * credit of 5 waiting for acct `to` lands, once. */
static void credit_lands_once_n1_has_the_type(const char *const *with,
                                              const char *to)
{
    long bal = -1, sent = -1, credits = -1, dups = -1, gaps = -1;
    char out[128] = "";
    int port = fx.nodes[1].port, tries;

    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[1], SIGTERM), 0);
    tu_keeld_free(&fx.nodes[1]);
    CHECK(tu_cluster_start_nodev(&fx, 1, port, with) == 0,
          "n1 did not start again");
    for (tries = 0; tries < 300 && credits != 1; tries++) {
        if (tu_clplug_call_keyed(&fx, 0, NULL, "acct", to, "get", out,
                                 sizeof out) != 0 ||
            sscanf(out, "%ld %ld %ld %ld %ld", &bal, &sent, &credits, &dups,
                   &gaps) != 5)
            credits = -1;
        if (credits != 1)
            tu_sleep_ms(100);
    }
    CHECK(credits == 1 && bal == 5 && dups == 0 && gaps == 0,
          "acct %s: '%s' (balance, sent, credits, dups, gaps), not the one "
          "credit of 5",
          to, out);
}

/* A node started without the plugin (a deploy under way) owns units of
 * the default group, and answers a message to an actor of the plugin's
 * type there ENOTYPE. The sender's outbox sends it again until that node
 * has the type, instead of making it a dead letter at once: once n1 runs
 * with the plugin (or has handed its units to n0 on the way), the credit
 * lands, once. */
START_TEST(a_message_waits_for_a_node_without_its_type)
{
    const char *with[] = {"--load", plugin, NULL};
    char to[16];

    CHECK(tu_cluster_start_nodev(&fx, 0, 0, with) == 0, "n0 did not start");
    CHECK(tu_cluster_start_node(&fx, 1, 0, NULL) == 0, "n1 did not start");
    /* A sender n0 owns and a receiver n1 owns: n1 refuses the credit,
     * n0 says so and keeps it. */
    credit_waits_for_n1("acct", "xfer", to);
    CHECK(tu_keel_stat(fx.nodes[0].addr, "outbox_dead") == 0,
          "the credit n1 refused for its type became a dead letter");
    /* n1 again, with the plugin: the credit lands. */
    credit_lands_once_n1_has_the_type(with, to);
    CHECK(tu_keel_stat(fx.nodes[0].addr, "outbox_dead") == 0,
          "n0 made a dead letter");
}
END_TEST

/* The node that serves a sender's unit does not register the receiver's
 * type, though the node that queued the message did (it was rolled back
 * to older code, as here, or the unit moved to a node not yet upgraded).
 * The message waits there, as it does for a receiver's node without the
 * type, instead of becoming a dead letter at once; once the types agree
 * it lands, once. One replica per unit, so that n0's units wait for it
 * across its restarts. */
START_TEST(a_message_waits_for_the_senders_node_to_have_its_type)
{
    char noacct[600];
    const char *with[] = {"--load", plugin, "--replicas", "1", NULL};
    const char *older[] = {"--load", noacct, "--replicas", "1", NULL};
    const char *bare[] = {"--replicas", "1", NULL};
    char to[16];
    int port;

    snprintf(noacct, sizeof noacct, "%s:noacct", plugin);
    CHECK(tu_cluster_start_nodev(&fx, 0, 0, with) == 0, "n0 did not start");
    CHECK(tu_cluster_start_nodev(&fx, 1, 0, bare) == 0, "n1 did not start");
    /* n1 has no acct: the credit waits in n0's outbox. */
    credit_waits_for_n1("payer", "pay", to);
    /* n0 rolled back to code without acct, on its data. */
    port = fx.nodes[0].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[0]);
    CHECK(tu_cluster_start_nodev(&fx, 0, port, older) == 0,
          "n0 did not start again");
    CHECK(log_says(0, "this node does not register the receiver's type"),
          "n0, without acct, did not say that the credit waits for it");
    tu_sleep_ms(1000);
    CHECK(tu_keel_stat(fx.nodes[0].addr, "outbox_dead") == 0,
          "n0, without the receiver's type, made the credit a dead letter");
    /* n0 with acct again, then n1: the credit lands, once. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[0]);
    CHECK(tu_cluster_start_nodev(&fx, 0, port, with) == 0,
          "n0 did not start again");
    credit_lands_once_n1_has_the_type(with, to);
    CHECK(tu_keel_stat(fx.nodes[0].addr, "outbox_dead") == 0,
          "n0 made a dead letter");
}
END_TEST

/* Polls acct id through node i until its "get" says credits, at most
 * 20 s; its answer in out. */
static int acct_credits(int i, const char *id, long credits, char *out,
                        size_t outlen)
{
    long bal, sent, got = -1, dups, gaps;
    int tries;

    for (tries = 0; tries < 200 && got != credits; tries++) {
        if (tu_clplug_call_keyed(&fx, i, NULL, "acct", id, "get", out,
                                 outlen) != 0 ||
            sscanf(out, "%ld %ld %ld %ld %ld", &bal, &sent, &got, &dups,
                   &gaps) != 5)
            got = -1;
        if (got != credits)
            tu_sleep_ms(100);
    }
    return got == credits;
}

/* An acct n0 owns: its id in near (16 bytes). */
static void acct_of_n0(char *near)
{
    char owner[64];
    int k;

    near[0] = '\0';
    for (k = 0; k < 64 && near[0] == '\0'; k++) {
        char id[16];
        snprintf(id, sizeof id, "b%d", k);
        tu_cluster_owner_of(&fx, 0, "acct", id, owner, sizeof owner);
        if (strcmp(owner, "n0") == 0)
            snprintf(near, 16, "%s", id);
    }
    CHECK(near[0] != '\0', "no acct owned by n0");
}

/* A message that waits for a deploy longer than --deploy-wait-ms becomes
 * a dead letter of its sender, which lets the sender's next message go
 * (delivery per sender is in order: before, a type that never came held
 * every later message of its sender for ever); once the deploy is done,
 * `keel dead-letters retry` delivers it, once. */
START_TEST(a_message_past_the_deploy_wait_is_a_dead_letter)
{
    const char *with[] = {"--load", plugin, "--deploy-wait-ms", "1500",
                          NULL};
    char from[16], to[16], near[16], msg[64], out[160];
    char *lst = NULL;
    int k, tries;

    CHECK(tu_cluster_start_nodev(&fx, 0, 0, with) == 0, "n0 did not start");
    CHECK(tu_cluster_start_node(&fx, 1, 0, NULL) == 0, "n1 did not start");
    sender_of_and_receiver("acct", from, to);
    acct_of_n0(near);
    /* The first waits for n1 to have acct, the second (to an acct n0
     * serves) behind it. */
    snprintf(msg, sizeof msg, "xfer %s 5", to);
    CHECK(tu_clplug_call_keyed(&fx, 0, NULL, "acct", from, msg, out,
                               sizeof out) == 0,
          "xfer to n1's acct: %s", out);
    snprintf(msg, sizeof msg, "xfer %s 3", near);
    CHECK(tu_clplug_call_keyed(&fx, 0, NULL, "acct", from, msg, out,
                               sizeof out) == 0,
          "xfer to n0's acct: %s", out);
    for (tries = 0; tries < 200; tries++) {
        if (tu_keel_stat(fx.nodes[0].addr, "outbox_dead") == 1)
            break;
        tu_sleep_ms(100);
    }
    CHECK(tu_keel_stat(fx.nodes[0].addr, "outbox_dead") == 1,
          "the credit waiting for n1's deploy never became a dead letter");
    CHECK(acct_credits(0, near, 1, out, sizeof out),
          "the sender's next message never arrived: acct %s '%s'", near,
          out);
    CHECK(tu_clplug_keel(&fx, 0, &lst, "dead-letters", "acct", from, NULL,
                         NULL) == 0 &&
              strstr(lst, "dead-letters 1\n") != NULL &&
              strstr(lst, "error ENOTYPE") != NULL &&
              strstr(lst, "deploy wait") != NULL,
          "dead letters of acct %s: %s", from, lst);
    free(lst);
    lst = NULL;
    /* The deploy done, the operator sends it again: it lands, once. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[1], SIGTERM), 0);
    k = fx.nodes[1].port;
    tu_keeld_free(&fx.nodes[1]);
    CHECK(tu_cluster_start_nodev(&fx, 1, k, with) == 0,
          "n1 did not start again");
    CHECK(tu_clplug_keel(&fx, 0, &lst, "dead-letters", "retry", "acct", from,
                         "1") == 0 &&
              strcmp(lst, "retried 1\n") == 0,
          "retry: %s", lst);
    free(lst);
    CHECK(acct_credits(0, to, 1, out, sizeof out) &&
              strncmp(out, "5 0 1 0 0", 9) == 0,
          "acct %s after the retry: '%s', not the one credit of 5", to, out);
}
END_TEST

/* n0 (started with `with`) and n1 (without the plugin): an acct of n0
 * (its id in from) sends a credit of 5 to an acct of n1 (in to), which
 * waits for n1 to have the type; n0 crashes and comes back, and finds the
 * credit in its store: its receiver may have applied it. Returns whether
 * n0 said, within 30 s, that it keeps it past the deploy wait; *dead is
 * n0's outbox_dead when it stopped looking. */
static int credit_found_in_the_store(const char *const *with, char *from,
                                     char *to, long *dead)
{
    char msg[64], out[160], *log = NULL;
    int k, tries, told = 0;

    CHECK(tu_cluster_start_nodev(&fx, 0, 0, with) == 0, "n0 did not start");
    CHECK(tu_cluster_start_node(&fx, 1, 0, NULL) == 0, "n1 did not start");
    sender_of_and_receiver("acct", from, to);
    snprintf(msg, sizeof msg, "xfer %s 5", to);
    CHECK(tu_clplug_call_keyed(&fx, 0, NULL, "acct", from, msg, out,
                               sizeof out) == 0,
          "xfer to n1's acct: %s", out);
    /* Long before the deploy wait ends: n0 crashes and comes back. */
    k = fx.nodes[0].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[0]);
    CHECK(tu_cluster_start_nodev(&fx, 0, k, with) == 0,
          "n0 did not start again");
    *dead = 0;
    for (tries = 0; tries < 300 && !told && *dead == 0; tries++) {
        free(log);
        log = tu_keeld_log(&fx.nodes[0]);
        told = log != NULL && strstr(log, "not kept as a dead letter") != NULL;
        *dead = tu_keel_stat(fx.nodes[0].addr, "outbox_dead");
        if (!told && *dead == 0)
            tu_sleep_ms(100);
    }
    free(log);
    return told;
}

/* A message its sender's node found in the store (started again while
 * it waited: an earlier process may have sent it, and its receiver may
 * have applied it, the answer lost) is not given up by the deploy wait:
 * its receiver's ENOTYPE does not say whether it applied it, and a dead
 * letter retried goes under a new number, so it would be applied twice.
 * It waits for the deploy, says so once, and lands once the receiver's
 * node has the type. */
START_TEST(a_message_found_in_the_store_waits_past_the_deploy_wait)
{
    const char *with[] = {"--load", plugin, "--deploy-wait-ms", "8000",
                          NULL};
    char from[16], to[16], out[160];
    int k, told;
    long dead = 0;

    told = credit_found_in_the_store(with, from, to, &dead);
    CHECK(dead == 0, "the message found in the store became a dead letter "
                     "past the deploy wait");
    CHECK(told, "n0 never said the message waits past the deploy wait");
    /* The deploy done: it lands, once. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[1], SIGTERM), 0);
    k = fx.nodes[1].port;
    tu_keeld_free(&fx.nodes[1]);
    CHECK(tu_cluster_start_nodev(&fx, 1, k, with) == 0,
          "n1 did not start again");
    CHECK(acct_credits(0, to, 1, out, sizeof out) &&
              strncmp(out, "5 0 1 0 0", 9) == 0,
          "acct %s after the deploy: '%s', not the one credit of 5", to, out);
    CHECK(tu_keel_stat(fx.nodes[0].addr, "outbox_dead") == 0,
          "a dead letter after the deploy");
}
END_TEST

/* A message its receiver may have applied waits for the deploy however
 * long (above), and holds every later message of its sender. When the
 * receiver's type is retired for good, the operator sees why with `keel
 * outbox` and gives the message up with `keel outbox give-up`: it
 * becomes a dead letter that says its receiver may have applied it, and
 * the sender's next message goes. */
START_TEST(an_operator_gives_up_a_message_that_would_wait_for_ever)
{
    const char *with[] = {"--load", plugin, "--deploy-wait-ms", "1500",
                          NULL};
    char from[16], to[16], near[16], msg[64], out[160], *lst = NULL;
    char *err = NULL, first[32] = "", second[32] = "";
    int k, tries;
    long dead = 0;

    CHECK(credit_found_in_the_store(with, from, to, &dead),
          "n0 never said the message waits past the deploy wait");
    CHECK(dead == 0, "the message found in the store became a dead letter");
    acct_of_n0(near);
    /* The sender's next message, to an acct n0 serves, waits behind it. */
    snprintf(msg, sizeof msg, "xfer %s 3", near);
    CHECK(tu_clplug_call_keyed(&fx, 0, NULL, "acct", from, msg, out,
                               sizeof out) == 0,
          "xfer to n0's acct: %s", out);
    CHECK(tu_clplug_keel(&fx, 0, &lst, "outbox", "acct", from, NULL,
                         NULL) == 0 &&
              sscanf(lst, "%31s to acct/", first) == 1 &&
              strstr(lst, "error ENOTYPE since") != NULL &&
              strstr(lst, "waits for a deploy") != NULL &&
              strstr(lst, "its receiver may have applied it") != NULL &&
              strstr(lst, "waits for the messages before it") != NULL &&
              strstr(lst, "msg \"credit 5 ") != NULL &&
              strstr(lst, "\noutbox 2\n") != NULL,
          "outbox of acct %s: %s", from, lst);
    {
        const char *l2 = strchr(lst, '\n');
        CHECK(l2 != NULL && sscanf(l2 + 1, "%31s to acct/", second) == 1,
              "no second line: %s", lst);
    }
    free(lst);
    lst = NULL;
    /* Only the next to go may be given up. */
    k = tu_keel(fx.nodes[0].addr, &lst, &err, "outbox", "give-up", "acct",
                from, second, NULL);
    CHECK(k == 1 && err != NULL && strstr(err, "EINVAL") != NULL &&
              strstr(err, "not the next to go") != NULL,
          "give-up of the second message: exit %d: %s", k,
          err != NULL ? err : "");
    free(lst);
    free(err);
    lst = NULL;
    CHECK(tu_clplug_keel(&fx, 0, &lst, "outbox", "give-up", "acct", from,
                         first) == 0 &&
              strstr(lst, "given up") != NULL,
          "give-up: %s", lst);
    free(lst);
    lst = NULL;
    /* The next message goes; the first is a dead letter that says what
     * the operator gave up. */
    CHECK(acct_credits(0, near, 1, out, sizeof out),
          "the sender's next message never arrived: acct %s '%s'", near,
          out);
    for (tries = 0; tries < 100; tries++) {
        free(lst);
        lst = NULL;
        if (tu_clplug_keel(&fx, 0, &lst, "dead-letters", "acct", from, NULL,
                           NULL) == 0 &&
            strstr(lst, "dead-letters 1\n") != NULL)
            break;
        tu_sleep_ms(100);
    }
    CHECK(lst != NULL && strstr(lst, "dead-letters 1\n") != NULL &&
              strstr(lst, "error ENOTYPE") != NULL &&
              strstr(lst, "given up by an operator") != NULL &&
              strstr(lst, "may have applied it") != NULL,
          "dead letters of acct %s: %s", from, lst);
    free(lst);
    lst = NULL;
    CHECK(tu_clplug_keel(&fx, 0, &lst, "outbox", "acct", from, NULL,
                         NULL) == 0 &&
              strcmp(lst, "outbox 0\n") == 0,
          "outbox of acct %s after: %s", from, lst);
    free(lst);
}
END_TEST

/* A message of keel_turn_send as large as the max frame size (which
 * keel_turn_send accepts) reaches a receiver on another node: what the
 * nodes add around it (the sender, the receiver's name, the budget) does
 * not make the other node refuse the frame, which made it a dead letter
 * (and closed the link between the nodes, failing other calls on it). */
START_TEST(a_message_of_the_largest_size_reaches_another_node)
{
    const char *with[] = {"--load", plugin, NULL};
    char from[16], to[16], out[128], msg[64];
    int tries;

    CHECK(tu_cluster_start_nodev(&fx, 0, 0, with) == 0, "n0 did not start");
    CHECK(tu_cluster_start_nodev(&fx, 1, 0, with) == 0, "n1 did not start");
    sender_and_receiver(from, to);
    snprintf(msg, sizeof msg, "bigxfer %s 1048576", to);
    CHECK(tu_clplug_call_keyed(&fx, 0, NULL, "acct", from, msg, out,
                               sizeof out) == 0,
          "bigxfer through n0 failed: %s", out);
    for (tries = 0; tries < 300; tries++) {
        if (tu_clplug_call_keyed(&fx, 0, NULL, "acct", to, "pads", out,
                                 sizeof out) == 0 &&
            strcmp(out, "1 1048576") == 0)
            break;
        tu_sleep_ms(100);
    }
    CHECK(strcmp(out, "1 1048576") == 0,
          "acct %s received '%s' (count, bytes), not the message of 1 MiB "
          "(n0 made %ld dead letters)",
          to, out, tu_keel_stat(fx.nodes[0].addr, "outbox_dead"));
    CHECK(tu_keel_stat(fx.nodes[0].addr, "outbox_dead") == 0,
          "n0 made a dead letter");
}
END_TEST

/* A sender's primary killed and restarted on its data, within its
 * session: it takes its units back at their epoch, and its backups are
 * suspect (it may hold writes they lack). Messages it finds in its store
 * then go only once a write of the sender has settled, which waits for
 * the map to show the suspects out: delivered before, a message of a
 * turn that a failover to a suspect takes back could be applied (and the
 * sender's next real message, of the same number, dropped as applied).
 * The drop is asked 3 s late (failpoint SUSPECT_DROP_DELAY_MS). The
 * receiver's node (n1) does not load the plugin, so the message waits in
 * n0's store, sent again and again (ENOTYPE), until n1 has it. */
START_TEST(a_restarted_sender_delivers_once_its_suspects_are_out)
{
    const char *with[] = {"--load", plugin, "--replicas", "3", NULL};
    const char *without[] = {"--replicas", "3", NULL};
    char from[16], to[16], out[128], msg[64];
    long obsent = 0, drops, suspects;
    int k, port, tries;

    CHECK(tu_cluster_start_nodev(&fx, 0, 0, with) == 0, "n0 did not start");
    CHECK(tu_cluster_start_nodev(&fx, 1, 0, without) == 0,
          "n1 did not start");
    CHECK(tu_cluster_start_nodev(&fx, 2, 0, with) == 0, "n2 did not start");
    sender_and_receiver(from, to);
    snprintf(msg, sizeof msg, "xfer %s 5", to);
    CHECK(tu_clplug_call_keyed(&fx, 0, NULL, "acct", from, msg, out,
                               sizeof out) == 0,
          "xfer through n0 failed");
    port = fx.nodes[0].port;
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGKILL), 128 + SIGKILL);
    tu_keeld_free(&fx.nodes[0]);
    ck_assert_int_eq(setenv("KEEL_FAILPOINT_SUSPECT_DROP_DELAY_MS", "3000",
                            1),
                     0);
    k = tu_cluster_start_nodev(&fx, 0, port, with);
    unsetenv("KEEL_FAILPOINT_SUSPECT_DROP_DELAY_MS");
    CHECK(k == 0, "n0 did not start again");
    /* The first send of the credit since the restart. */
    for (tries = 0; tries < 200 && obsent <= 0; tries++) {
        obsent = tu_keel_stat(fx.nodes[0].addr, "outbox_sent");
        if (obsent <= 0)
            tu_sleep_ms(50);
    }
    drops = tu_keel_stat(fx.nodes[0].addr, "repl_drop_requests");
    suspects = tu_keel_stat(fx.nodes[0].addr, "repl_suspects");
    fprintf(stderr,
            "outbox: n0 restarted: sent %ld, %ld backups suspect, %ld "
            "drops asked by then\n",
            obsent, suspects, drops);
    /* Failed over instead (n0 came back after its session ended): the
     * promoted backup delivers, nothing is suspect on n0. */
    if (suspects > 0) {
        CHECK(obsent > 0, "n0 never sent the credit again");
        CHECK(drops > 0,
              "n0 sent the credit it found in its store before it asked "
              "the drop of any of its %ld suspect backups",
              suspects);
    }
    /* n1 with the plugin: the credit lands, once. */
    credit_lands_once_n1_has_the_type(with, to);
}
END_TEST

/* Nodes started with different --max-frame values (a rolling change of
 * it): a message n0 takes is larger than n1 accepts. n1 answers ETOOBIG
 * and keeps the link (it used to close it, failing every other call on
 * it, and the message, its outcome then unknown, went again and closed
 * the link again, for ever). The receiver's refusal makes the message a
 * dead letter once it has been refused as often as any other, and the
 * sender's next message goes. */
START_TEST(a_message_larger_than_the_receivers_node_takes_is_refused)
{
    const char *big[] = {"--load", plugin, "--max-frame", "2097152", NULL};
    const char *with[] = {"--load", plugin, NULL};
    char from[16], to[16], out[160], msg[64], *lst = NULL;
    int tries;
    long dead = 0;

    CHECK(tu_cluster_start_nodev(&fx, 0, 0, big) == 0, "n0 did not start");
    CHECK(tu_cluster_start_nodev(&fx, 1, 0, with) == 0, "n1 did not start");
    sender_and_receiver(from, to);
    snprintf(msg, sizeof msg, "bigxfer %s 1500000", to);
    CHECK(tu_clplug_call_keyed(&fx, 0, NULL, "acct", from, msg, out,
                               sizeof out) == 0,
          "bigxfer through n0 failed: %s", out);
    snprintf(msg, sizeof msg, "xfer %s 5", to);
    CHECK(tu_clplug_call_keyed(&fx, 0, NULL, "acct", from, msg, out,
                               sizeof out) == 0,
          "xfer through n0 failed: %s", out);
    for (tries = 0; tries < 300 && dead == 0; tries++) {
        dead = tu_keel_stat(fx.nodes[0].addr, "outbox_dead");
        if (dead == 0)
            tu_sleep_ms(100);
    }
    CHECK(dead == 1, "the message n1 cannot take is no dead letter after "
                     "30 s (%ld)",
          dead);
    CHECK(acct_credits(0, to, 1, out, sizeof out) &&
              strncmp(out, "5 0 1 0 0", 9) == 0,
          "the sender's next message: acct %s '%s', not one credit of 5", to,
          out);
    CHECK(tu_clplug_keel(&fx, 0, &lst, "dead-letters", "acct", from, NULL,
                         NULL) == 0 &&
              strstr(lst, "error ETOOBIG") != NULL &&
              strstr(lst, "maximum frame size") != NULL,
          "dead letters of acct %s: %s", from, lst);
    free(lst);
    CHECK(tu_clplug_call_keyed(&fx, 0, NULL, "acct", to, "pads", out,
                               sizeof out) == 0 &&
              strcmp(out, "0 0") == 0,
          "acct %s took pads: '%s'", to, out);
    /* n1 never closed the link (n0 logs it when a peer does). */
    lst = tu_keeld_log(&fx.nodes[0]);
    CHECK(lst != NULL && strstr(lst, ": connection closed") == NULL,
          "n1 closed its link with n0 over the message it refused");
    free(lst);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_outbox");
    TCase *tc = tcase_create("cluster_outbox");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, token_chains_survive_a_killed_node);
    tcase_add_test(tc, token_chains_go_on_after_a_long_fence);
    tcase_add_test(tc, a_message_waits_for_a_node_without_its_type);
    suite_add_tcase(s, tc);
    /* Cases of their own, so that CK_RUN_CASE runs one alone; ctest runs
     * those tagged "split" as a second test (CMakeLists.txt). */
    tc = tcase_create("suspects");
    tcase_set_tags(tc, "split");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_restarted_sender_delivers_once_its_suspects_are_out);
    suite_add_tcase(s, tc);
    tc = tcase_create("types");
    tcase_set_tags(tc, "split");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_message_waits_for_the_senders_node_to_have_its_type);
    suite_add_tcase(s, tc);
    tc = tcase_create("deploy_wait");
    tcase_set_tags(tc, "split");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_message_past_the_deploy_wait_is_a_dead_letter);
    tcase_add_test(tc, a_message_found_in_the_store_waits_past_the_deploy_wait);
    suite_add_tcase(s, tc);
    tc = tcase_create("give_up");
    tcase_set_tags(tc, "split");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, an_operator_gives_up_a_message_that_would_wait_for_ever);
    suite_add_tcase(s, tc);
    tc = tcase_create("largest");
    tcase_set_tags(tc, "split");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, a_message_of_the_largest_size_reaches_another_node);
    tcase_add_test(tc, a_message_larger_than_the_receivers_node_takes_is_refused);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
