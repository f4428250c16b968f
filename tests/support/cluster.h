/* The fixture of the cluster integration tests: a suite's ZooKeeper, and
 * per test a temporary directory, a cluster name of its own and keeld
 * nodes n0..n<TU_CLUSTER_MAX-1> joined to it with --zk. Node i keeps its
 * data in dir/n<i>. Every wait here is bounded (tu_keeld_start waits at
 * most 20 s, tu_keeld_stop 30 s, tu_run 30 s a CLI run; the retry loops
 * take a count and a pause). */
#ifndef KEEL_TEST_CLUSTER_H
#define KEEL_TEST_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "proc.h"
#include "runtime/client.h"
#include "zk.h"

#define TU_CLUSTER_MAX 4

typedef struct tu_cluster {
    tu_zk zk;             /* the suite's ZooKeeper (tu_cluster_zk_start) */
    const char *zk_hosts; /* --zk of the nodes; NULL: zk.hosts */
    char *dir;            /* owned: the test's directory */
    char name[32];        /* --cluster: "<prefix><pid>-<round>" */
    int shards;           /* --shards: 64 unless set after setup */
    int session_ms;       /* --zk-session-timeout: 2000 unless set */
    int quiet;            /* 1: tu_cluster_counter reports no failure */
    tu_keeld nodes[TU_CLUSTER_MAX];
} tu_cluster;

struct Suite;

/* Starts the suite's ZooKeeper (one server, tickTime 200 ms) into c->zk.
 * Exits the process with status 1 (and a word on stderr) if ZooKeeper is
 * not installed. Returns 0, or -1 with the script's output on stderr. */
int tu_cluster_zk_start(tu_cluster *c);

/* Starts the suite's ZooKeeper (exit status 1 if it does not start), runs
 * the suite (check's default fork mode), stops ZooKeeper and returns the
 * exit status for main. */
int tu_cluster_run_suite(tu_cluster *c, struct Suite *s);

/* For a test that stops its server (tu_cluster_zk_outage), or whose
 * sessions outlast what the suite's server allows (its tickTime of 200 ms
 * caps them at 4 s): starts a server of the test's own with a tickTime of
 * 2 s (sessions of 4 to 40 s) into c->zk (the suite's kept in *suite) and
 * sets c->session_ms. Returns 0, or -1 with the script's output on
 * stderr. tu_cluster_own_zk_end() stops the nodes (SIGKILL) and that
 * server, and puts the suite's back. */
int tu_cluster_own_zk(tu_cluster *c, tu_zk *suite, int session_ms);
void tu_cluster_own_zk_end(tu_cluster *c, tu_zk *suite);

/* Stops the server of tu_cluster_own_zk() for ms and starts it again on
 * its data, so that the sessions come back: every node fences (T/2 after
 * it lost the connection) and, once it has reconnected, serves again with
 * its session and units. Before the stop, node i's `units_acquired` and
 * `fenced` figures go to *acquired and *fenced. Returns 0, or -1 with a
 * word on stderr. */
int tu_cluster_zk_outage(tu_cluster *c, int i, int ms, long *acquired,
                         long *fenced);
/* After tu_cluster_zk_outage(), once node i serves again: NULL when it
 * fenced and took no unit anew (its session lived through), else what
 * went otherwise (then the test proves nothing). */
const char *tu_cluster_outage_fenced(const tu_cluster *c, int i,
                                     long acquired, long fenced);

/* Per-test setup: a fresh directory tu_tmpdir(tag), no nodes, the default
 * options above and a cluster name "<prefix><pid>-<round>" no other test
 * uses. Keeps c->zk. */
void tu_cluster_setup(tu_cluster *c, const char *tag, const char *prefix);

/* Starts node i ("n<i>", data in dir/n<i>) on port `port` (0: any) with
 * --shards, --zk, --cluster, --node-id, --zk-session-timeout, --insecure
 * (no credentials; extra --auth-tokens make it moot) and then the
 * extra arguments, NULL-terminated (at most 16). Returns tu_keeld_start's
 * result: 0, or -1 with the log on stderr. */
int tu_cluster_start_node(tu_cluster *c, int i, int port, ...);

/* The same with the extra arguments in a NULL-terminated array. */
int tu_cluster_start_nodev(tu_cluster *c, int i, int port,
                           const char *const *extra);

/* Per-test teardown: every started node gets SIGCONT (in case a test left
 * it stopped), then `sig` and tu_keeld_stop's bounded wait, and is freed;
 * the directory is removed (kept, and named, after tu_cluster_dump_logs
 * or with KEEL_TEST_KEEP set). Returns how many stops did not return 0 (exit
 * code 0 of a SIGTERM stop), for callers that require clean exits. */
int tu_cluster_teardown(tu_cluster *c, int sig);

/* Prints the started nodes' logs to stderr, and the directory that holds
 * them, which the teardown then keeps. */
void tu_cluster_dump_logs(const tu_cluster *c);

/* In a check test: unless cond holds, prints the nodes' logs and fails the
 * test with the message (printf-style). */
#define TU_CLUSTER_CHECK(c, cond, ...)                                      \
    do {                                                                    \
        if (!(cond)) {                                                      \
            tu_cluster_dump_logs(c);                                        \
            ck_abort_msg(__VA_ARGS__);                                      \
        }                                                                   \
    } while (0)

/* `keel digest (default) SHARD` through node i: the answer's line into
 * out ("digest HEX records N", no newline), or "" when the run failed. */
void tu_cluster_digest(const tu_cluster *c, int i, unsigned shard, char *out,
                       size_t cap);

/* `keel call counter NAME OP` through node i: the number printed, or -1
 * (reported on stderr unless c->quiet). */
long tu_cluster_counter(const tu_cluster *c, int i, const char *name,
                        const char *op);

/* The owner `keel where TYPE ID` names through node i ("n3"), into owner
 * (at most cap-1 characters); "" when the call fails or names none. */
void tu_cluster_owner_of(const tu_cluster *c, int i, const char *type,
                         const char *id, char *owner, size_t cap);

/* The first of counter/<prefix>0 .. <prefix>63 that `keel where`
 * through node i names as owned by `owner`, into id (cap bytes), asked
 * again every 100 ms for at most 30 s while none is (the map may not
 * place units yet); "" then. */
void tu_cluster_counter_owned_by(const tu_cluster *c, int i,
                                 const char *prefix, const char *owner,
                                 char *id, size_t cap);

/* `incr` of counter/id over cl until n were acknowledged, each answering
 * one more than the one before from 1 (a failed call is sent again after
 * 100 ms, at most 100 calls in all): the count acknowledged, or -1 when a
 * reply was another value. */
struct keel_client;
int tu_cluster_incr_from_one(struct keel_client *cl, const char *id, int n);

/* counter/id's value (`get`) over cl, asked at most `tries` times 100 ms
 * apart while the call fails: -1 when it never answered. */
long tu_cluster_counter_over(struct keel_client *cl, const char *id,
                             int tries);

/* `keel node forget NODE` through node `via` until it is accepted, retried
 * at most `retries` times `pause_ms` apart while refused as a live
 * member's is (exit 1, EEXIST). Returns 0 with the CLI's stdout in *out
 * (malloc'd); 1 when still refused after the retries; -1 (the failure on
 * stderr) when a run fails otherwise. */
int tu_cluster_forget(const tu_cluster *c, int via, const char *node,
                      int retries, int pause_ms, char **out);

/* CLOCK_MONOTONIC in seconds. */
double tu_now_s(void);

/* Sleeps ms milliseconds. */
void tu_sleep_ms(int ms);

/* Teardown after tests that pause ZooKeeper (tu_cluster_start_together
 * does, for a moment): ZooKeeper gets SIGCONT first, then
 * tu_cluster_teardown(c, sig). */
int tu_cluster_teardown_zk_paused(tu_cluster *c, int sig);

/* The first counter id "<prefix><k>" of unit s among `shards`, into id. */
void tu_cluster_counter_in(const char *prefix, uint32_t s, uint32_t shards,
                           char *id, size_t cap);

/* `op` ("incr", "get") of counter/id through node i with one request key,
 * sent again (same key) after any failure for at most 40 s; *cl is
 * reconnected as needed. The value answered, or -1. */
long tu_cluster_keyed_counter(const tu_cluster *c, keel_client **cl, int i,
                              const char *id, const char *op);

#endif
