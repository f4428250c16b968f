/* Replication (docs/cluster.md, "Replication stream"): a unit's primary
 * sends every committed write of the unit to the unit's in-sync backups,
 * and a reply leaves only once the primary's commit is durable and every
 * in-sync backup of the unit (per the map this node applied) has
 * acknowledged the write, or has left the in-sync set in a map this node
 * applied.
 *
 * Primary side: once a batch of the group commit is durable here
 * (batch_settled in node.c), keel__repl_settled() sends the writes of
 * each unit with in-sync backups, in REPL frames (one per backup node per
 * settled batch, many units), and the batch's replies are handed to
 * keel__repl_hold(): they wait for the acks. A backup that does not
 * answer within the lag bound (keel_node_options.repl_lag_ms) is asked to
 * be dropped from the unit's in-sync set (keel_cluster_request_drop);
 * what waited on it goes once a map this node applied shows it out.
 *
 * Backup side: keel__repl_frame() applies the units of a REPL frame the
 * cluster lets it take, in order and once each, in one transaction per
 * frame through a writer thread of its own, and answers once that is
 * durable as the node's durability mode says.
 *
 * A node without backups (standalone, one replica, no unit with in-sync
 * backups) pays one check per settled batch and nothing per reply.
 * Loop thread only. */
#ifndef KEEL_RUNTIME_REPL_H
#define KEEL_RUNTIME_REPL_H

#include <stddef.h>
#include <stdint.h>

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

/* A batch of the group commit settled with status (0: durable here).
 * Sends the writes of its units that have in-sync backups. Returns
 * nonzero when the batch's replies must be offered to keel__repl_hold()
 * (something of this batch, or before it, waits on backups), 0 when they
 * go as they always did. */
int keel__repl_settled(keel_node *n, keel_batch *b, int status);
/* Takes req (a settled reply, or one of a turn that wrote nothing) when
 * its actor's unit has replies waiting on backups: it leaves after them,
 * under the lease rules of keel__req_settle(). 1 when taken, else 0. */
int keel__repl_hold(keel_node *n, keel_req *req);
/* The read rule: takes req, the reply of a turn that wrote nothing, when
 * its unit has in-sync backups: it leaves once each has confirmed, in a
 * round sent after the turn ran, that it holds no newer epoch of the unit
 * (else it fails EUNAVAIL: not served), and after the unit's earlier
 * replies; or when it must wait behind them (keel__repl_hold). 1 when
 * taken, else 0: no backup can have been promoted over this node. */
int keel__repl_read(keel_node *n, keel_req *req);
/* Whether replies of the unit wait on backups (its actors then stay
 * resident, and a release of the unit waits). */
int keel__repl_unit_busy(keel_node *n, const char *cap, uint32_t shard);
/* Whether anything waits: replies on backups, or writes sent here by a
 * primary not answered yet. A stopping node waits for it. */
int keel__repl_busy(keel_node *n);
/* The coordinator applied a map: backups it shows out of sync release
 * what waited on them. */
void keel__repl_map_applied(keel_node *n);

/* A REPL frame from a peer: 0 when req (REQ_NET, for the answer) was
 * taken and is answered once the frame's writes are durable, or a KEEL_E*
 * code for the whole frame (nothing taken, nothing applied). */
int keel__repl_frame(keel_node *n, const keel_frame *f, keel_req *req);

#endif
