/* Failpoints: faults that a test build injects into a node, to make an
 * interleaving a test needs happen every time (docs/design.md,
 * "Failpoints").
 *
 * They exist only in a build that defines KEEL_FAILPOINTS: CMake defines
 * it for the library when KEEL_TESTS is ON (the test build), never for a
 * release build (Makefile.dev builds those with KEEL_TESTS=OFF). Without
 * it keel_failpoint() is the constant 0, nothing reads the environment,
 * and the code a failpoint guards compiles away.
 *
 * Each failpoint is a number read from the environment variable
 * KEEL_FAILPOINT_<NAME> when a node starts (keel_failpoints_load, from
 * keel_node_run; the first call reads, later ones keep what it read, so
 * every node of a process sees the same values). A decimal number from 0
 * to INT_MAX; unset, empty or anything else reads 0, off. The failpoints:
 *
 *   REPL_APPLY_DELAY_MS   a backup's replication writer (the thread that
 *                         commits what primaries send it, REPL frames and
 *                         the deletion of copies, runtime/repl_backup.c)
 *                         sleeps that many milliseconds before each
 *                         commit, and no such commit is made on the loop
 *                         thread: what primaries sent the node stays
 *                         queued that long, while the rest of the node
 *                         (its own writes, streams it takes) goes on.
 *   ACQUIRE_DELAY_MS      a unit the map gives this node (on_acquire,
 *                         runtime/cluster_rt.c) has its new shard_epoch
 *                         recorded in the store's fence that many
 *                         milliseconds late, so it is served that much
 *                         later, and writes the fence would refuse (a
 *                         replicated piece of the epoch before) still
 *                         land meanwhile.
 *   SUSPECT_DROP_DELAY_MS a primary asks the controller to drop a suspect
 *                         backup (runtime/repl.c, suspect_tick) only that
 *                         many milliseconds after it found it suspect, so
 *                         that what must wait for the drop visibly waits
 *                         that long.
 *   REPL_COMMIT_STALL_MS  a primary's commit made on its loop thread
 *                         (inline) whose writes left for backups holds the
 *                         loop that many milliseconds after they left, as
 *                         a flush that stalls on a slow disk would.
 *
 * KEEL_FAILPOINT_ARM_FILE, a path, holds them all back: while it is set
 * and no file exists there, every failpoint reads 0; from the first call
 * that finds the file on, they read their values. A test that needs a
 * failpoint only after its cluster has settled sets it and creates the
 * file then.
 *
 * One more takes a path rather than a number (runtime/node.c reads it):
 *
 *   KEEL_FAILPOINT_STORE_EIO_FILE  once that file exists, the next flush
 *                         of the node's store fails with EIO, as a failing
 *                         disk's would (which breaks the store: it refuses
 *                         every commit after it); once per process. */
#ifndef KEEL_COMMON_FAILPOINT_H
#define KEEL_COMMON_FAILPOINT_H

typedef enum keel_failpoint_id {
    KEEL_FP_REPL_APPLY_DELAY_MS,
    KEEL_FP_ACQUIRE_DELAY_MS,
    KEEL_FP_SUSPECT_DROP_DELAY_MS,
    KEEL_FP_REPL_COMMIT_STALL_MS,
    KEEL_FP_COUNT
} keel_failpoint_id;

#ifdef KEEL_FAILPOINTS
/* Reads every failpoint from the environment, once per process; any
 * thread. */
void keel_failpoints_load(void);
/* The failpoint's value, 0 when off (or not loaded yet). Any thread. */
int keel_failpoint(keel_failpoint_id fp);
#else
static inline void keel_failpoints_load(void)
{
}
static inline int keel_failpoint(keel_failpoint_id fp)
{
    (void)fp;
    return 0;
}
#endif

#endif
