/* The outbox across crashes (keel_turn_send, runtime/outbox.c): keeld
 * (fsync durability) with outbox_plugin_bank.so runs transfers between
 * accounts, each a debit of the sender and a credit sent from its outbox,
 * and is killed with SIGKILL while they run, then restarted on the same
 * data directory; twice. Once quiet, every transfer the senders committed
 * (at least every acknowledged one) has been credited exactly once, in
 * order per pair (the receivers count duplicates and gaps of the per-pair
 * sequence), and no money was made or lost. A transfer whose turn fails
 * sends nothing. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define ROUNDS 2
#define SENDERS 6
#define RECEIVERS 3
#define LOAD_MS 700
#define CLIENT_TIMEOUT_MS 10000
#define THREAD_MAX_S 30

static char *dir, *data, *plugin;
static tu_keeld node;
static atomic_long acked[SENDERS];
static atomic_int stop_load;

struct loader {
    pthread_t thread;
    const char *addr;
    int idx;
    long k;
};

static void setup(void)
{
    dir = tu_tmpdir("obcrash");
    if (asprintf(&data, "%s/data", dir) < 0)
        abort();
    plugin = tu_bin("outbox_plugin_bank.so");
    memset(&node, 0, sizeof node);
    for (int i = 0; i < SENDERS; i++)
        atomic_store(&acked[i], 0);
}

static void teardown(void)
{
    tu_keeld_free(&node);
    tu_rmrf(dir);
    free(dir);
    free(data);
    free(plugin);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Transfers from a<idx> to the receivers in turn, one at a time, until
 * told to stop or the node goes away. */
static void *load(void *arg)
{
    struct loader *l = arg;
    keel_client *c = NULL;
    char id[16], msg[64];
    double t0 = now_s();

    snprintf(id, sizeof id, "a%d", l->idx);
    if (keel_client_connect(l->addr, CLIENT_TIMEOUT_MS, &c) != 0)
        return NULL;
    while (!atomic_load(&stop_load) && now_s() - t0 < THREAD_MAX_S) {
        char *reply = NULL;
        size_t rl = 0;
        int n = snprintf(msg, sizeof msg, "xfer b%ld 1",
                         l->k++ % RECEIVERS);
        int rc = keel_client_call(c, KEEL_FRAME_CALL, "acct", id, strlen(id),
                                  msg, (size_t)n, &reply, &rl);
        free(reply);
        if (rc != 0)
            break; /* the node was killed (or refused: counted below) */
        atomic_fetch_add(&acked[l->idx], 1);
    }
    keel_client_close(c);
    return NULL;
}

static void start_node(int port)
{
    const char *extra[] = {"--load", plugin, NULL};

    ck_assert_int_eq(tu_keeld_start(&node, data, port, extra), 0);
}

/* acct ID's "get" answer, parsed into v[0..5). */
static int get(keel_client *c, const char *id, long v[5])
{
    char *reply = NULL;
    size_t rl = 0;
    int rc = keel_client_call(c, KEEL_FRAME_CALL, "acct", id, strlen(id),
                              "get", 3, &reply, &rl);

    if (rc == 0 && sscanf(reply, "%ld %ld %ld %ld %ld", &v[0], &v[1], &v[2],
                          &v[3], &v[4]) != 5)
        rc = KEEL_EMALFORMED;
    free(reply);
    return rc;
}

START_TEST(transfers_survive_kill)
{
    struct loader l[SENDERS];
    keel_client *c;
    long v[5], sent = 0, credits = 0, bal = 0, dups = 0, gaps = 0;
    long total_acked = 0, resent;
    char id[16];
    int round, i, port = 0, settled = 0;

    memset(l, 0, sizeof l);
    start_node(0);
    port = node.port;
    for (round = 0; round < ROUNDS; round++) {
        atomic_store(&stop_load, 0);
        for (i = 0; i < SENDERS; i++) {
            l[i].addr = node.addr;
            l[i].idx = i;
            ck_assert_int_eq(
                pthread_create(&l[i].thread, NULL, load, &l[i]), 0);
        }
        usleep(LOAD_MS * 1000);
        /* Killed mid-stream: replies just sent, credits on their way. */
        ck_assert_int_eq(tu_keeld_stop(&node, SIGKILL), 128 + SIGKILL);
        atomic_store(&stop_load, 1);
        for (i = 0; i < SENDERS; i++)
            pthread_join(l[i].thread, NULL);
        tu_keeld_free(&node);
        start_node(port);
    }
    for (i = 0; i < SENDERS; i++)
        total_acked += atomic_load(&acked[i]);
    ck_assert_msg(total_acked > 0, "no transfer was acknowledged");

    ck_assert_int_eq(keel_client_connect(node.addr, CLIENT_TIMEOUT_MS, &c),
                     0);
    /* Quiet once every transfer committed has been credited (bounded). */
    for (int tries = 0; tries < 400 && !settled; tries++) {
        sent = credits = bal = dups = gaps = 0;
        for (i = 0; i < SENDERS; i++) {
            snprintf(id, sizeof id, "a%d", i);
            ck_assert_int_eq(get(c, id, v), 0);
            sent += v[1];
            bal += v[0];
        }
        for (i = 0; i < RECEIVERS; i++) {
            snprintf(id, sizeof id, "b%d", i);
            ck_assert_int_eq(get(c, id, v), 0);
            credits += v[2];
            bal += v[0];
            dups += v[3];
            gaps += v[4];
        }
        settled = credits >= sent;
        if (!settled)
            usleep(50000);
    }
    ck_assert_msg(settled, "credited %ld of %ld committed transfers", credits,
                  sent);
    ck_assert_int_eq(credits, sent);
    ck_assert_int_eq(dups, 0);
    ck_assert_int_eq(gaps, 0);
    ck_assert_int_eq(bal, 0);
    for (i = 0; i < SENDERS; i++) {
        snprintf(id, sizeof id, "a%d", i);
        ck_assert_int_eq(get(c, id, v), 0);
        ck_assert_msg(v[1] >= atomic_load(&acked[i]),
                      "%s committed %ld transfers, %ld were acknowledged", id,
                      v[1], atomic_load(&acked[i]));
    }
    /* Every transfer delivered once across the kills is what the
     * accounts show (credits, dups and gaps above). The node's counters
     * are the last process's alone: what it had to send at its start
     * depends on where the last kill fell, and is nothing when every
     * transfer had been delivered and retired before it. */
    resent = tu_keel_stat(node.addr, "outbox_sent");
    ck_assert_int_ge(resent, 0);
    ck_assert_int_eq(tu_keel_stat(node.addr, "outbox_dead"), 0);
    fprintf(stderr, "outbox crash: %ld transfers committed (%ld "
                    "acknowledged), each credited once; the last process "
                    "sent %ld that the last kill left in outboxes\n",
            sent, total_acked, resent);

    /* A transfer whose turn fails leaves nothing and sends nothing: the
     * next one from the same sender is credited alone. */
    {
        char *reply = NULL;
        size_t rl;
        long before[5], after[5];
        ck_assert_int_eq(get(c, "b9", before), 0);
        ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "acct", "f", 1,
                                          "xfer b9 100 fail", 16, &reply,
                                          &rl),
                         KEEL_EHANDLER);
        free(reply);
        reply = NULL;
        ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "acct", "f", 1,
                                          "xfer b9 1", 9, &reply, &rl),
                         0);
        ck_assert_str_eq(reply, "1"); /* the failed one took no sequence */
        free(reply);
        for (int tries = 0; tries < 200; tries++) {
            ck_assert_int_eq(get(c, "b9", after), 0);
            if (after[2] > before[2])
                break;
            usleep(20000);
        }
        ck_assert_int_eq(after[2], before[2] + 1);
        ck_assert_int_eq(after[0], before[0] + 1);
        ck_assert_int_eq(after[4], 0);
        /* That credit went from this process's outbox. */
        ck_assert_int_gt(tu_keel_stat(node.addr, "outbox_sent"), resent);
    }
    keel_client_close(c);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("outbox_crash");
    TCase *tc = tcase_create("kill");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, transfers_survive_kill);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
