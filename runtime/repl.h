/* Replication (docs/cluster.md, "Replication stream"): a unit's primary
 * sends every committed write of the unit to the unit's in-sync backups,
 * and a reply leaves only once the primary's commit is durable and every
 * in-sync backup of the unit (per the map this node applied) has
 * acknowledged the write, or has left the in-sync set in a map this node
 * applied.
 *
 * Primary side: when the group commit flushes a batch to its writer
 * (flush_open in node_commit.c), keel__repl_flushed() sends the writes of
 * each unit with in-sync backups at once, in REPL frames (one per backup
 * node per flush, many units), so that the backups' flushes run beside
 * this node's own; once the batch is durable here (batch_settled),
 * keel__repl_settled() takes note, and the batch's replies are handed to
 * keel__repl_hold(): they wait for the acks. While a backup of a unit
 * catches up, that unit's writes leave only once durable here (its
 * snapshot is read from this store). A write that left but did not commit
 * here, and a restart, make the unit's in-sync backups suspect: they may
 * hold what this node does not, so they are dropped from the in-sync set
 * (and catch up) before any reply of the unit leaves, failures included.
 * A backup that does not answer within the lag bound
 * (keel_node_options.repl_lag_ms) is asked to be dropped from the unit's
 * in-sync set (keel_cluster_request_drop); what waited on it goes once a
 * map this node applied shows it out.
 *
 * Backup side: keel__repl_frame() applies the units of a REPL frame the
 * cluster lets it take, in order and once each, in one transaction
 * through a writer thread of its own (frames that queue behind the writer
 * share one), and answers once that is durable as the node's durability
 * mode says.
 *
 * A node without backups (standalone, one replica, no unit with in-sync
 * backups) pays one check per settled batch and nothing per reply.
 * Loop thread only. */
#ifndef KEEL_RUNTIME_REPL_H
#define KEEL_RUNTIME_REPL_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/shardmap.h"
#include "runtime/node.h"
#include "runtime/proto.h"

typedef struct keel_repl keel_repl;

/* Cluster mode, once n->cluster exists: n->repl. KEEL_ENOMEM. */
int keel__repl_create(keel_node *n);
/* Starts its watchers (keel_node_run, before the loop runs). */
void keel__repl_start(keel_node *n);
/* After the loop returned and the peer links were closed: commits what
 * backups sent and answers it, fails the replies still waiting (there are
 * none after an orderly stop), stops the watchers. */
void keel__repl_stop(keel_node *n);
void keel__repl_destroy(keel_node *n);

/* The group commit hands b to its writer: sends the writes of b's units
 * that have in-sync backups and may leave before the commit. Returns the
 * flush's number (0: none needed, one replica). */
uint64_t keel__repl_flushed(keel_node *n, keel_batch *b);
/* Flush `no` of b never reached the writer: its units' backups become
 * suspect. */
void keel__repl_flush_lost(keel_node *n, keel_batch *b, uint64_t no);
/* A batch of the group commit, holding flushes lo..hi (0: none
 * numbered), settled with status (0: durable here). Sends the writes of
 * its units that had to wait for it; a group that did not commit here
 * but left early makes its unit's backups suspect. Returns nonzero when
 * the batch's replies must be offered to keel__repl_hold() (and its
 * failures to keel__repl_hold_failed()), 0 when they go as they always
 * did. */
int keel__repl_settled(keel_node *n, keel_batch *b, int status, uint64_t lo,
                       uint64_t hi);
/* Takes req (a settled reply of a batch holding flushes lo..hi, or one of
 * a turn that wrote nothing: UINT64_MAX) when its actor's unit has
 * replies waiting on backups: it leaves after them, under the lease rules
 * of keel__req_settle(). 1 when taken, else 0. */
int keel__repl_hold(keel_node *n, keel_req *req, uint64_t lo, uint64_t hi);
/* Takes req, a failed reply (status and text set) whose write may have
 * reached backups of its unit that are suspect: it leaves as it is once
 * the map shows them out, or in doubt if that cannot be had. 1 when
 * taken. */
int keel__repl_hold_failed(keel_node *n, keel_req *req);
/* The unit is acquired at an epoch this node's store already served: it
 * may have lost, in a crash, writes that had left for its in-sync
 * backups, which become suspect. */
void keel__repl_resumed(keel_node *n, const char *cap, uint32_t shard,
                        uint64_t epoch);
/* The loop returned from an orderly stop and the writer is stopped:
 * leaves the clean-stop marker in the data directory when every write
 * this node sent to backups is durable here, none is suspect and no
 * write was answered in doubt (it may be here and on no backup); the
 * next start takes it (keel__repl_start) and then suspects nothing. */
void keel__repl_stopped_clean(keel_node *n);
/* The read rule: takes req, the reply of a turn that wrote nothing, when
 * its unit has in-sync backups: it leaves once each has confirmed, in a
 * round sent after the turn ran, that it holds no newer epoch of the unit
 * (else it fails EUNAVAIL: not served), and after the unit's earlier
 * replies; or when it must wait behind them (keel__repl_hold). 1 when
 * taken, else 0: no backup can have been promoted over this node. */
int keel__repl_read(keel_node *n, keel_req *req);
/* Whether replies of the unit wait on backups (its actors then stay
 * resident, and a release of the unit waits). Writes whose replies were
 * answered in doubt while this node was fenced do not count: a fenced
 * node keeps no actor resident. */
int keel__repl_unit_busy(keel_node *n, const char *cap, uint32_t shard);
/* Whether anything of the unit waits on backups, those writes included. */
int keel__repl_unit_pending(keel_node *n, const char *cap, uint32_t shard);
/* Whether a backup has not acknowledged a piece of the unit's writes at
 * epoch yet. A release of the unit waits for that too: a write answered
 * in doubt (this node fenced while it waited) released its replies, not
 * its pieces, and the in-sync backups the map carries over to the new
 * primary must hold what the stream gives it. */
int keel__repl_unit_unacked(keel_node *n, const char *cap, uint32_t shard,
                            uint64_t epoch);
/* Whether anything waits: replies on backups, or writes sent here by a
 * primary not answered yet. A stopping node waits for it. */
int keel__repl_busy(keel_node *n);
/* Whether a stopping node still waits for its backups: keel__repl_busy,
 * except that a fenced node does not wait for writes whose replies were
 * answered in doubt. */
int keel__repl_stop_busy(keel_node *n);
/* Whether writes of unit (cap, shard) that this node took as a backup
 * (REPL frames, a copy's deletion) are still queued or committing on the
 * replication writer. A unit streamed here (XFER) is stored only after
 * them: the two go through different writers, and a piece taken before
 * the stream (a primary's catch-up of this node, ended when it released
 * the unit to it) must not land on the streamed copy. Loop thread. */
int keel__repl_unit_applying(keel_node *n, const char *cap, uint32_t shard);
/* Loop thread, once the round's answers are written: hands the write-back
 * of the data file an inline commit of a frame left to the replication
 * writer (keel_writer_writeback). */
void keel__repl_writeback(keel_node *n);

/* Replication lag as this node sees it as a primary, per backup node it
 * streams to (docs/cluster.md, "Replication lag"). */
typedef struct keel_repl_lag {
    char backup[KEEL_NAME_MAX + 1];
    double lag_s;    /* age of its oldest write not acknowledged; 0: none */
    uint64_t frames; /* frames sent to it (or to send) not acknowledged */
} keel_repl_lag;
/* Any thread: a copy (malloc'd, *count entries) of the figures the loop
 * published last (on every tick of the stream, every 20 ms while writes
 * wait, and zeros once none does). NULL with *count 0 on a node without
 * replication, before any backup, or out of memory. */
keel_repl_lag *keel__repl_lag(keel_node *n, size_t *count);
/* The coordinator applied a map: backups it shows out of sync release
 * what waited on them. */
void keel__repl_map_applied(keel_node *n);

/* A REPL frame from a peer: 0 when req (REQ_NET, for the answer) was
 * taken and is answered once the frame's writes are durable, or a KEEL_E*
 * code for the whole frame (nothing taken, nothing applied). */
int keel__repl_frame(keel_node *n, const keel_frame *f, keel_req *req);
/* Deletes this node's copy of unit (cap, shard), which the applied map no
 * longer lists it for (runtime/unit_sweep.c), through the writer that
 * applies REPL frames: after every piece of it taken before, and before
 * any taken after, so that a catch-up that lists it again finds it gone.
 * What it took of the unit is forgotten: a piece of it is taken again
 * only at the start of a stream or as a snapshot. 0 (queued), or a
 * KEEL_E* code (nothing queued). */
int keel__repl_drop_copy(keel_node *n, const char *cap, uint32_t shard,
                         uint64_t epoch);

#endif
