/* Cluster mode in the runtime (docs/cluster.md): the coordinator's hooks
 * (fence on acquire, drain and stream on release, stop serving when
 * fenced), routing of every message to its unit's owner, holding messages
 * while their unit moves, and receiving units streamed from other nodes.
 * Loop thread only, except where noted. */
#ifndef KEEL_RUNTIME_CLUSTER_RT_H
#define KEEL_RUNTIME_CLUSTER_RT_H

#include <stddef.h>

#include "runtime/node.h"
#include "runtime/proto.h"

typedef struct keel_cluster_rt keel_cluster_rt;

/* Creates the cluster coordinator (n->coord) and the runtime part
 * (n->cluster) from n->opts; called once the listener is bound. */
int keel__cluster_rt_create(keel_node *n, char *errbuf, size_t errlen);
/* Starts the writer and timers (keel_node_run, before the loop runs). */
int keel__cluster_rt_start(keel_node *n);
/* After the loop returned: fails what is still held or forwarded with
 * KEEL_ESTOPPING, stops the writer. */
void keel__cluster_rt_stop(keel_node *n);
/* Leaves the cluster and frees everything (n->coord too). */
void keel__cluster_rt_destroy(keel_node *n);
/* 0, or the KEEL_E* code for which the node stopped itself because it
 * cannot take part in its cluster (another shard count, credentials of
 * another identity...; logged when it happened). Standalone: 0. */
int keel__cluster_rt_failure(const keel_node *n);
/* In cluster mode, a node whose store a failed flush broke stops, without
 * handing its units off, so that their in-sync backups take them
 * (keel__cluster_rt_failure then says KEEL_ESTORE). Loop thread. */
void keel__cluster_rt_store_check(keel_node *n);
/* The text of a KEEL_ESTOPPING answer: with that failure, what it was
 * (the caller learns why the node stops, not only that it does). */
const char *keel__cluster_rt_stop_text(const keel_node *n, char *buf,
                                       size_t cap);

/* Graceful leave, from the stop sequence on the loop thread: 1 while the
 * node hands its units off (the stop must wait: keel_node_stop() is called
 * again when it is done), 0 when the stop may go on (standalone, handed
 * off, timed out, or handing off impossible). */
int keel__cluster_rt_leave(keel_node *n);

/* While the node stops: 1 as long as it still owes answers to calls it
 * forwarded or holds, or other nodes are still forwarding calls to it
 * (they get KEEL_ESTOPPING, which tells them the call was not run and
 * may go elsewhere). Bounded in time. */
int keel__cluster_rt_busy(keel_node *n);

/* From keel__submit: 1 when the message is to run here, 0 when it was
 * taken (forwarded or held; the reply comes later), or a KEEL_E* code
 * (nothing taken). */
int keel__cluster_route(keel_node *n, struct keel_type_entry *te,
                        const void *id, size_t idlen, keel_req *req);

/* An actor of the unit (te's capability, shard) became resident here, or
 * left: per-unit counts, so that "is anything of this unit resident" costs
 * one lookup. in: KEEL_ENOMEM (nothing counted). */
int keel__cluster_actor_in(keel_node *n, struct keel_type_entry *te,
                           uint32_t shard);
void keel__cluster_actor_out(keel_node *n, struct keel_type_entry *te,
                             uint32_t shard);

/* Whether this node may run turns now: checks the lease against a fresh
 * clock reading (keel_cluster_check_lease), fencing the node if it has
 * lapsed. Cluster mode only (n->cluster set). */
int keel__cluster_rt_serving(keel_node *n);

/* Whether req was accepted to run here in a ZooKeeper session that has
 * ended since (keel_cluster_session): its turn must not run, and its
 * reply must not leave as a success, since the unit may have been served
 * elsewhere meanwhile. Cluster mode only (n->cluster set). */
int keel__cluster_req_stale(keel_node *n, const keel_req *req);

/* The shard_epoch the writes of a unit's actors carry: the epoch at which
 * this node holds the unit, 0 when it holds it at none (the store then
 * refuses them once any fence is recorded). Cluster mode only. */
uint64_t keel__cluster_write_epoch(keel_node *n, const char *cap,
                                   uint32_t shard);

/* Cluster mode: how long a turn may hold the loop thread before the
 * node's lease can lapse (the longest the heartbeats can wait), by the
 * session timeout ZooKeeper granted (before the session: the one asked
 * for). */
uint32_t keel__cluster_rt_turn_max_ms(const keel_node *n);

/* The hold bound of a node with these options (cluster_rt_int.h,
 * rt_hold_ms): how long after a call enters the cluster it may still
 * start. */
uint32_t keel__hold_ms(const keel_node_options *o);

/* KEEL_EINVAL, with the reason in why, when a cluster node's hold bound
 * outlasts its request-key retention (keel_node_create refuses it); 0
 * otherwise. */
int keel__hold_check(const keel_node_options *o, char *why, size_t len);

/* Whether this node holds the unit at some epoch (serving it, or handing
 * it over), whatever its placement says now: true while the node is
 * fenced with its session alive, or while a release is under way. The
 * reminders and the outbox keep such a unit's work waiting here rather
 * than leave it to an owner that is not coming. Standalone: 1, the node
 * holds every unit. */
int keel__cluster_rt_holds(keel_node *n, const char *cap, uint32_t shard);

/* An XFER frame from a peer. Returns 1 when the frame is answered at once
 * with an empty REPLY, 0 when req (a REQ_NET request for the frame's
 * reply) was taken and will be released later, or a KEEL_E* code. */
int keel__cluster_xfer_frame(keel_node *n, const keel_frame *f,
                             keel_req *req);
/* The connection closed: the unit streams it had not finished are
 * dropped (their senders start them over). */
void keel__cluster_conn_closed(keel_node *n, const keel_conn *c);

/* Whether a member of the cluster named `name` is in this node's view
 * (TLS: a node certificate's holder, net.c). */
int keel__cluster_is_member(keel_node *n, const char *name);
/* The name of the member this node's view shows at addr ("host:port"),
 * into name (cap bytes). KEEL_ENOTFOUND when none (peer.c: whom a link
 * must reach). */
int keel__cluster_member_at(keel_node *n, const char *addr, char *name,
                            size_t cap);

#endif
