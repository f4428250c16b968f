/* A forwarded call whose frame the network holds up past its deadline
 * never runs later, with a real ZooKeeper and real keeld processes: a
 * counter owned by n1 is incremented through n0 while the network drops
 * every packet bound for n1's port (an nftables rule), so the frame waits
 * in n0's socket, unacknowledged, with TCP retransmitting it. n0 answers
 * the caller at the call's deadline (ETIMEDOUT: it may have run) and,
 * since the frame was not acknowledged, resets the link; when the
 * network heals, nothing of it reaches n1, and the counter keeps the
 * value the acknowledged increments gave it. Without the reset, the
 * retransmitted frame would reach n1 after the heal, get the budget it
 * left with from then, and run: the read after the heal, sent on the
 * same connection behind it, would see it. The same over TLS links
 * (tcase "tls"), where the link's stream positions count plaintext and
 * the socket's count records; and with a hold bound (100 ms) below the
 * grace n0 gives an acknowledgement that may be delayed (tcase "short"),
 * so that n0 resets the link when it looks again after that grace.
 *
 * Dropping packets needs a network of the test's own: the whole test
 * process (and ZooKeeper and the nodes it starts) runs in a new network
 * namespace, with its own loopback, where the rule touches nothing
 * else. That needs root and the ip and nft commands (iproute2,
 * nftables); without them the test is skipped (exit 77), and says why.
 * Every wait is bounded. On a failure the nodes' logs are printed. */
#include <check.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "certs.h"
#include "cltls.h"
#include "cluster.h"
#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"
#include "zk.h"

/* The hold bound: the budget of every call that enters at n0. */
static const char *hold_ms;
/* The caller waits this long for n0's answer: above the hold bound. */
#define CALLER_TIMEOUT_MS 5000
/* The cut lasts this long from the call: past its deadline, with TCP
 * retransmitting the frame (200 ms, then 400, 800, ...: the retransmission
 * after the heal comes by 6.2 s from the call). */
#define CUT_MS 3000
/* The last read comes this long after the call: past that retransmission
 * and the budget it would get. */
#define SETTLE_MS 9000
#define TABLE "keelpeerreset"

static tu_cluster fx;
static char ip_cmd[64], nft_cmd[64];
/* The tcase "tls": nodes and clients with certificates of ca. */
static int tls;
static char ca[512], oca[512];

static int find_tool(const char *name, char *out, size_t cap)
{
    static const char *const dirs[] = {"/usr/sbin", "/sbin", "/usr/bin",
                                       "/bin"};
    size_t k;

    for (k = 0; k < sizeof dirs / sizeof *dirs; k++) {
        snprintf(out, cap, "%s/%s", dirs[k], name);
        if (access(out, X_OK) == 0)
            return 0;
    }
    return -1;
}

/* Moves this process into a network namespace of its own with its
 * loopback up. 0, or -1 with why. */
static int net_private(char *why, size_t cap)
{
    const char *up[] = {ip_cmd, "link", "set", "lo", "up", NULL};
    char *err = NULL;

    if (geteuid() != 0) {
        snprintf(why, cap, "not root (a network namespace and nftables "
                           "rules need CAP_NET_ADMIN)");
        return -1;
    }
    if (find_tool("ip", ip_cmd, sizeof ip_cmd) != 0) {
        snprintf(why, cap, "no ip command (apt-get install iproute2)");
        return -1;
    }
    if (find_tool("nft", nft_cmd, sizeof nft_cmd) != 0) {
        snprintf(why, cap, "no nft command (apt-get install nftables)");
        return -1;
    }
    if (unshare(CLONE_NEWNET) != 0) {
        snprintf(why, cap, "cannot make a network namespace (unshare: no "
                           "rights in this container?)");
        return -1;
    }
    if (tu_run(up, NULL, &err) != 0) {
        snprintf(why, cap, "ip link set lo up failed: %s",
                 err != NULL ? err : "");
        free(err);
        return -1;
    }
    free(err);
    return 0;
}

/* Drops every packet that arrives for port (what the node there would
 * receive, acknowledgements of what it sent included). */
static int cut_port(int port)
{
    char path[512], *err = NULL;
    const char *argv[] = {nft_cmd, "-f", path, NULL};
    FILE *f;
    int rc;

    snprintf(path, sizeof path, "%s/cut.nft", fx.dir);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f,
            "table inet " TABLE " {\n"
            "  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            "    tcp dport %d drop\n"
            "  }\n"
            "}\n",
            port);
    if (fclose(f) != 0)
        return -1;
    rc = tu_run(argv, NULL, &err);
    if (rc != 0)
        fprintf(stderr, "nft -f %s: %s\n", path, err != NULL ? err : "");
    free(err);
    return rc;
}

static int heal(void)
{
    const char *argv[] = {nft_cmd, "delete", "table", "inet", TABLE, NULL};

    return tu_run(argv, NULL, NULL);
}

static void setup(void)
{
    tls = 0;
    hold_ms = "1500";
    tu_cluster_setup(&fx, "clpreset", "cr");
    fx.session_ms = 4000;
}

static void setup_short(void)
{
    setup();
    hold_ms = "100";
}

static void setup_tls(void)
{
    tls = 1;
    hold_ms = "1500";
    tu_cltls_setup(&fx, "clpreset", ca, oca);
    fx.session_ms = 4000;
}

static void teardown(void)
{
    (void)heal();
    tu_cluster_teardown(&fx, SIGTERM);
}

#define CHECK(cond, ...) TU_CLUSTER_CHECK(&fx, cond, __VA_ARGS__)

/* Node i with the hold bound hold_ms (and its certificate, with TLS). */
static void start_node(int i)
{
    if (tls)
        tu_cltls_start(&fx, i, i == 0 ? "n0" : "n1", ca, NULL, hold_ms);
    else
        ck_assert_int_eq(tu_cluster_start_node(&fx, i, 0, "--hold-timeout",
                                               hold_ms, NULL),
                         0);
}

/* A client connection to n0 (as alice, with TLS). */
static keel_client *connect_n0(void)
{
    keel_client *c = NULL;
    char why[256] = "";
    int rc = tls ? tu_cltls_connect(&fx, 0, "alice", ca, &c, why,
                                    sizeof why)
                 : keel_client_connect(fx.nodes[0].addr, CALLER_TIMEOUT_MS,
                                       &c);

    CHECK(rc == 0, "cannot connect to n0: %s %s", keel_err_name(rc), why);
    return c;
}

START_TEST(held_frame_never_runs_late)
{
    keel_client *cl, *q;
    char id[32] = "";
    char *reply = NULL;
    int rc, acked;
    double sent;
    long value, resets;

    start_node(0);
    start_node(1);
    tu_cluster_counter_owned_by(&fx, 0, "r", "n1", id, sizeof id);
    CHECK(id[0] != '\0', "no counter owned by n1");
    cl = connect_n0();
    acked = tu_cluster_incr_from_one(cl, id, 5);
    CHECK(acked == 5, "the counter is not served through n0 (%d)", acked);
    CHECK(tu_keel_stat(fx.nodes[0].addr, "peer_resets") == 0,
          "n0 reset a link before the cut");

    /* The cut: n0's link to n1 stays open, its frames go unacknowledged. */
    CHECK(cut_port(fx.nodes[1].port) == 0, "cannot cut n1's port");
    q = connect_n0();
    sent = tu_now_s();
    rc = keel_client_call(q, KEEL_FRAME_CALL, "counter", id, strlen(id),
                          "incr", 4, &reply, NULL);
    free(reply);
    reply = NULL;
    keel_client_close(q);
    CHECK(rc == KEEL_ETIMEDOUT || rc == KEEL_EDEADLINE,
          "an increment cut off from its owner was answered %s",
          rc == 0 ? "ok" : keel_err_name(rc));
    CHECK(tu_now_s() - sent < 4.0,
          "the increment was answered after %.1f s (the hold bound is "
          "%s ms)",
          tu_now_s() - sent, hold_ms);
    while (tu_now_s() - sent < CUT_MS / 1000.0)
        tu_sleep_ms(50);
    CHECK(heal() == 0, "cannot heal the cut");

    /* Through n0 again: on the link the increment was written to, if it
     * still stood, this read would follow it to n1. */
    value = tu_cluster_counter_over(cl, id, 150);
    CHECK(value >= 0, "the counter is not served after the heal");
    CHECK(value == acked,
          "the counter is %ld after the heal, but %d increments were "
          "acknowledged: the increment held up in the network ran after its "
          "caller was answered",
          value, acked);
    while (tu_now_s() - sent < SETTLE_MS / 1000.0)
        tu_sleep_ms(100);
    value = tu_cluster_counter_over(cl, id, 50);
    CHECK(value == acked,
          "the counter is %ld %d s after the increment, but %d increments "
          "were acknowledged: the increment held up in the network ran late",
          value, SETTLE_MS / 1000, acked);
    resets = tu_keel_stat(fx.nodes[0].addr, "peer_resets");
    CHECK(resets >= 1, "n0 counts %ld link resets", resets);
    keel_client_close(cl);
}
END_TEST

int main(void)
{
    Suite *s;
    TCase *tc, *tt, *ts;
    char why[256];

    if (net_private(why, sizeof why) != 0) {
        fprintf(stderr, "test_cluster_peer_reset: skipped: %s\n", why);
        return 77;
    }
    s = suite_create("cluster_peer_reset");
    tc = tcase_create("cluster_peer_reset");
    tt = tcase_create("tls");
    ts = tcase_create("short");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, held_frame_never_runs_late);
    suite_add_tcase(s, tc);
    tcase_add_checked_fixture(tt, setup_tls, teardown);
    tcase_set_timeout(tt, 240);
    tcase_add_test(tt, held_frame_never_runs_late);
    suite_add_tcase(s, tt);
    tcase_add_checked_fixture(ts, setup_short, teardown);
    tcase_set_timeout(ts, 240);
    tcase_add_test(ts, held_frame_never_runs_late);
    suite_add_tcase(s, ts);
    return tu_cluster_run_suite(&fx, s);
}
