/* Node-to-node connections for cluster mode: one persistent, pipelined
 * wire-protocol client connection per peer address, driven by the node's
 * libev loop. A frame is queued with a completion callback; the peer's
 * REPLY or ERROR with the same request id completes it. Loop thread only. */
#ifndef KEEL_RUNTIME_PEER_H
#define KEEL_RUNTIME_PEER_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/node.h"

/* The largest frame nodes send each other (REPL, XFER, forwarded calls
 * and their replies), and read on such a link whatever --max-frame says:
 * the largest value an actor may store, with room for its key and the
 * framing around it (unit and piece heads, a snapshot part's). */
#define KEEL_PEER_MAX_FRAME ((size_t)KEEL_MAX_VALUE_LEN + (64u << 10))

/* What nodes add around a message they send each other, at most: the
 * frame's header, a budget, a request key, an outbox sender prefix, the
 * receiver's type and id. A node reads CALL and CAST frames from another
 * node up to --max-frame plus this, so that a message that fit the limit
 * where it entered (a client's frame, keel_call, keel_turn_send, whose
 * message alone may be --max-frame bytes) is taken wherever its actor
 * lives. */
#define KEEL_PEER_CALL_ENVELOPE 1024u

typedef struct keel_peers keel_peers;

#define KEEL_PEER_UNSENT 1

/* status: 0 with the REPLY body, a KEEL_E* code with the ERROR text,
 * KEEL_PEER_UNSENT when the frame never left this node (the connection
 * could not be made or failed before the frame was written: safe to
 * retry), or KEEL_ECONN when the connection failed after the frame was written (the
 * peer may or may not have acted on it). */
typedef void (*keel_peer_cb)(keel_node *n, int status, const uint8_t *body,
                             size_t len, void *arg);

keel_peers *keel__peers_create(keel_node *n);
/* Closes every connection; pending frames complete with KEEL_ESTOPPING. */
void keel__peers_destroy(keel_peers *p);

/* Queues a frame of body_len bytes for addr ("host:port") and returns
 * where its body goes (valid until the next call into this module), or
 * NULL (out of memory, bad address, or the peer failed less than 0.2 s
 * ago: nothing queued). cb may be NULL. */
uint8_t *keel__peer_frame(keel_peers *p, const char *addr, uint8_t kind,
                          uint8_t flags, size_t body_len, keel_peer_cb cb,
                          void *arg);

/* The same for a frame that answers to a deadline (deadline_ns,
 * monotonic; 0: none). With KEEL_FLAG_DEADLINE in flags the body's first
 * KEEL_DEADLINE_LEN bytes are the budget, which this module writes as the
 * frame leaves. At the deadline cb gets KEEL_EDEADLINE if no byte of the
 * frame had left (it never will run: its budget reads 0), KEEL_ETIMEDOUT
 * otherwise (it may have run); a later answer is dropped (and logged).
 * When bytes of the frame may not have reached the peer by then (not
 * acknowledged by its kernel), the connection is reset so that they never
 * do, and its other frames complete as at any failure of the connection
 * (the statistic peer_resets counts these). */
uint8_t *keel__peer_frame_by(keel_peers *p, const char *addr, uint8_t kind,
                             uint8_t flags, size_t body_len,
                             uint64_t deadline_ns, keel_peer_cb cb,
                             void *arg);

/* Whether the node at addr said, in the hello of the connection open to
 * it now, that it takes what flag (a KEEL_HELLO_* bit) names. 0 while no
 * connection has its hello yet: until then, send it only what every
 * node of this protocol version takes. */
int keel__peer_takes(keel_peers *p, const char *addr, unsigned flag);
/* 1 with the flags of the hello of the connection open to addr now, once
 * it was read; else 0 (*flags 0), having started to open one if there is
 * none (unless the last attempt failed less than 0.2 s ago). */
int keel__peer_hello(keel_peers *p, const char *addr, unsigned *flags);

/* Whether this node's last connection to addr failed (refused, reset,
 * closed by the other side, gone silent) and none was made since: a
 * hint, no more, that the node there is down. 0 for an address it never
 * connected to. */
int keel__peer_down(const keel_peers *p, const char *addr);

/* Frames queued and not answered yet, over all peers. */
/* Writes the frames queued on plain links now rather than on the loop's
 * next round (a commit is about to block the loop). Never fails a link. */
void keel__peers_push(keel_peers *p);
size_t keel__peers_pending(const keel_peers *p);

#endif
