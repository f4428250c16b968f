/* A deterministic in-memory ZooKeeper for unit tests: one "server" (a tree
 * of znodes with versions, czxid/mzxid, ephemeral owners, sequential
 * counters and one-shot watches) and any number of clients implementing
 * the vtable of zk.h. Built only into the test support library.
 *
 * Nothing happens behind the test's back. A request is applied by the
 * server when it is submitted; its completion, and every watch or session
 * event, waits in a delivery queue until the test runs the queue
 * (keel_zk_fake_run or _step). Per client the queue is FIFO, as on a real
 * connection; across clients the test chooses the interleaving (hold a
 * client, or let a seeded shuffle pick). Time moves only when the test
 * advances it; a disconnected client's session expires on the server once
 * its timeout has passed.
 *
 * Failure model, close to the real client's:
 *  - disconnect: completions not yet delivered turn into KEEL_ECONNLOSS
 *    (the server did apply them: exactly the ambiguity real clients face);
 *    new requests fail with KEEL_ECONNLOSS; watch events wait for the
 *    reconnection. The client gets KEEL_ZK_DISCONNECTED first.
 *  - expire: the server drops the session, its ephemeral nodes (firing
 *    other sessions' watches) and its watches. A connected client hears
 *    KEEL_ZK_EXPIRED at once, a disconnected one when it reconnects.
 *    Undelivered completions turn into KEEL_ESESSION.
 *  - close (the vtable's): like expire, but the client hears nothing more.
 *  - cut off: the client's server loses the ZooKeeper leader without
 *    noticing yet (keel_zk_fake_cut_off).
 *
 * ACLs are not modelled: every client may do everything, KEEL_ZK_SHARED
 * is accepted and ignored, and no request fails with KEEL_EDENIED.
 * Credentials and ACLs are tested against the real server
 * (tests/integration/test_cluster_zkacl.c). */
#ifndef KEEL_COORDINATOR_ZK_FAKE_H
#define KEEL_COORDINATOR_ZK_FAKE_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/zk.h"

typedef struct keel_zk_fake keel_zk_fake;

keel_zk_fake *keel_zk_fake_create(void);
/* Frees the server; every client must have been destroyed first. */
void keel_zk_fake_destroy(keel_zk_fake *f);

/* A new client of this server (not connected until connect()). */
int keel_zk_fake_client(keel_zk_fake *f, keel_zk **out);

/* Delivers queued events until none is deliverable, at most `max` (0: no
 * limit); returns how many were delivered. Callbacks may queue more. */
size_t keel_zk_fake_run(keel_zk_fake *f, size_t max);
/* Delivers one event; returns 0 when none is deliverable. */
int keel_zk_fake_step(keel_zk_fake *f);
/* Events waiting (deliverable or held). */
size_t keel_zk_fake_pending(const keel_zk_fake *f);
/* With a nonzero seed, run/step pick the next client to deliver to at
 * random (reproducibly); with 0 (the default), in global FIFO order. */
void keel_zk_fake_shuffle(keel_zk_fake *f, uint64_t seed);

/* The session timeouts the server grants from now on: a request below
 * min_ms gets min_ms, above max_ms gets max_ms (0: no bound), as a real
 * server clamps to 2 and 20 ticks. */
void keel_zk_fake_timeout_bounds(keel_zk_fake *f, int min_ms, int max_ms);

/* Time, in ms since creation. */
uint64_t keel_zk_fake_now(const keel_zk_fake *f);
/* Moves time on; sessions disconnected for longer than their timeout
 * expire on the server. */
void keel_zk_fake_advance(keel_zk_fake *f, uint64_t ms);

/* Session controls on a client handle made by keel_zk_fake_client. */
void keel_zk_fake_disconnect(keel_zk *c);
void keel_zk_fake_reconnect(keel_zk *c);
void keel_zk_fake_expire(keel_zk *c);
/* The server c talks to is cut off from the ZooKeeper leader and has not
 * noticed (a follower on the wrong side of a partition). Reads are still
 * answered, from the tree as it is now (a real follower's copy would
 * stop changing; no test here needs that). Requests the leader must see
 * (writes, multis, syncs) are neither applied nor answered, and every
 * request of c after the first of them waits behind it, as a server
 * answers one session in order. Watch events for c wait. The leader hears
 * nothing more of the session, so it expires on the server once its
 * timeout has passed since the cut, and c is not told. The cut ends as it
 * does for a real client: the server gives up and drops its clients
 * (keel_zk_fake_disconnect); what waited then fails with KEEL_ECONNLOSS,
 * unapplied, and a reconnection finds the session alive or expired. */
void keel_zk_fake_cut_off(keel_zk *c);
/* While held, nothing is delivered to this client (its events stay
 * queued, in order); releasing lets them through. */
void keel_zk_fake_hold(keel_zk *c, int held);
/* The next request submitted on c fails with rc. With applied != 0 the
 * server applies it anyway and only the answer is lost (use
 * KEEL_ECONNLOSS for that). */
void keel_zk_fake_fail_next(keel_zk *c, int rc, int applied);
/* Requests submitted on c so far (successful or not). */
uint64_t keel_zk_fake_requests(keel_zk *c);
/* The server forgets c's watches on prefix and below without telling c,
 * as when a watch is lost with a connection: what c believes armed no
 * longer fires. */
void keel_zk_fake_lose_watches(keel_zk *c, const char *prefix);
/* c's next create of path is applied, but its answer is never delivered
 * (an answer lost for good: what keel must survive without staying
 * stuck). */
void keel_zk_fake_swallow_create(keel_zk *c, const char *path);

/* Direct access to the tree, for setting up and checking (no watches
 * are left; writes do fire watches). get copies at most *len bytes into
 * buf and sets *len to the node's size; it returns 0 or KEEL_ENOTFOUND. */
int keel_zk_fake_get(keel_zk_fake *f, const char *path, void *buf,
                     size_t *len, keel_zk_stat *st);
int keel_zk_fake_set(keel_zk_fake *f, const char *path, const void *data,
                     size_t len);
/* Creates the node and missing parents (persistent). */
int keel_zk_fake_mkdirs(keel_zk_fake *f, const char *path, const void *data,
                        size_t len);
/* Number of children of path, or -1. */
int keel_zk_fake_num_children(keel_zk_fake *f, const char *path);
/* Watches armed on the server, over every client: a client that leaves
 * a watch where one is armed already makes this grow. */
size_t keel_zk_fake_num_watches(keel_zk_fake *f);

#endif
