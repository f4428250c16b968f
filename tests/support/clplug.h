/* For the cluster tests whose nodes load a test plugin (the outbox, its
 * batches, reminders): the per-test fixture and a call that is sent again
 * with its request key until it succeeds. Every wait is bounded. */
#ifndef KEEL_TEST_CLPLUG_H
#define KEEL_TEST_CLPLUG_H

#include <stddef.h>
#include <stdint.h>

#include "cluster.h"

/* Per-test setup: tu_cluster_setup(c, tag, prefix) with 16 shards and a
 * 4 s ZooKeeper session. Returns the path of the built plugin `so`
 * (tu_bin: malloc'd) for the nodes' --load; tu_clplug_teardown frees it. */
char *tu_clplug_setup(tu_cluster *c, const char *tag, const char *prefix,
                      const char *so);

/* Per-test teardown: tu_cluster_teardown(c, SIGKILL), and the plugin's
 * path freed. */
void tu_clplug_teardown(tu_cluster *c, char *plugin);

/* A call of actor type/id with msg through node i, keyed with key (16
 * bytes; NULL: a new key, so that the call runs at most once), sent again
 * with the same key on a new connection after any failure, for at most
 * 30 s. Returns 0 with the reply in out (cap bytes, NUL-terminated,
 * truncated to fit; out may be NULL), or the last error. */
int tu_clplug_call_keyed(const tu_cluster *c, int i, const uint8_t *key,
                         const char *type, const char *id, const char *msg,
                         char *out, size_t cap);

/* `keel a0 a1 ...` (up to five words, the rest NULL) through node i,
 * run again every 200 ms for at most 30 s while it fails (a unit changing
 * hands answers EUNAVAIL meanwhile). Returns the last exit code; *out
 * (malloc'd) is the last output, or the last error when it failed. */
int tu_clplug_keel(const tu_cluster *c, int i, char **out, const char *a0,
                   const char *a1, const char *a2, const char *a3,
                   const char *a4);

#endif
