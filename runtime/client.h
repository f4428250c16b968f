/* A small blocking client of the wire protocol, used by the `keel` CLI,
 * keel-bench's TCP transport and the integration tests. One connection,
 * any number of requests in flight (send several, then receive). Not
 * thread-safe: one thread per client. */
#ifndef KEEL_RUNTIME_CLIENT_H
#define KEEL_RUNTIME_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

typedef struct keel_client keel_client;

/* Connects to "HOST:PORT" (IPv4 literal or name). timeout_ms bounds the
 * connect and every later blocking receive (0: no limit).
 * Errors: KEEL_EADDR (cannot parse or resolve), KEEL_ENOTSENT (refused,
 * unreachable or timed out: nothing was sent), KEEL_ENOMEM. */
int keel_client_connect(const char *addr, int timeout_ms, keel_client **out);
/* keel_client_connect that also says why a connect failed ("connection
 * refused", "connect timed out", ...) in why (whylen bytes, NUL-ended;
 * empty when there is nothing to add). */
int keel_client_connect_why(const char *addr, int timeout_ms,
                            keel_client **out, char *why, size_t whylen);

/* TLS for a connection (docs/security.md, "TLS"). The server's
 * certificate must chain to ca; its name is not a host name (nodes are
 * named CN=node:<id>), so no host name is checked: with node set, the
 * certificate must name that node, otherwise any certificate the CA
 * signed will do. */
typedef struct keel_client_tls {
    const char *ca;   /* PEM file of the CA; required */
    const char *cert; /* this client's certificate chain (PEM), or NULL */
    const char *key;  /* its key (PEM), with cert */
    const char *node; /* the node id the server must prove, or NULL */
    const char *crl;  /* PEM file of CRLs of ca (docs/security.md,
                       * "Revocation"), or NULL */
} keel_client_tls;

/* keel_client_connect_why over TLS 1.3 when tls is not NULL. The timeout
 * bounds the handshake too. More errors: KEEL_EINVAL / KEEL_EIO (the
 * files: why says which), KEEL_ENOTSENT also when the handshake fails
 * (the server's certificate does not verify or is revoked by tls->crl,
 * the server refuses ours, a plaintext server: why says "the server does
 * not speak TLS"): nothing was sent. */
int keel_client_connect_tls(const char *addr, int timeout_ms,
                            const keel_client_tls *tls, keel_client **out,
                            char *why, size_t whylen);
void keel_client_close(keel_client *c);

/* Every connection begins with the protocol hello (docs/protocol.md,
 * "Hello"): the client's is queued at connect and leaves with the first
 * request; the server's is read before the first answer. A server that
 * answers something else makes that receive fail with KEEL_EPROTO (not a
 * keel node, or another protocol version) or KEEL_ECONN (closed without
 * a hello); keel_client_why says which, in words.
 *
 * keel_client_hello exchanges the hellos now, before any request is
 * queued, so that a tool learns at once what it reached (one round trip,
 * bounded by the connect timeout). Returns 0; KEEL_EPROTO with why
 * saying what the server is instead; KEEL_ENOTSENT when it closed or
 * said nothing in time (nothing but the hello was sent); the node's own
 * refusal (KEEL_EOVERLOAD, KEEL_EUNAUTH, ...) with its message in why;
 * KEEL_EINVAL when requests were queued already. */
int keel_client_hello(keel_client *c, char *why, size_t whylen);
/* What the last hello failure on c means ("the server at ADDR is not a
 * keel node: ..."), or "". */
const char *keel_client_why(const keel_client *c);

/* The largest frame the client accepts from the server (default 1 MiB +
 * header slack). A larger one ends the connection: a call whose REPLY it
 * is fails KEEL_ETOOBIG, or KEEL_EALREADY when keyed (it ran; its reply
 * is lost); a call waiting when another frame is too large, KEEL_ECONN
 * (its outcome is unknown). */
void keel_client_set_max_frame(keel_client *c, size_t max_frame);

/* Queues a request in the client's send buffer (not yet sent). kind is
 * KEEL_FRAME_CALL or KEEL_FRAME_CAST for type/id/msg; for STAT and PING,
 * type and id are ignored (PING echoes msg). */
int keel_client_queue(keel_client *c, uint8_t kind, uint64_t request_id,
                      const char *type, const void *id, size_t idlen,
                      const void *msg, size_t len);
/* keel_client_queue for a CALL or CAST with a request key
 * (KEEL_REQUEST_KEY_LEN bytes): the actor answers a request whose key it
 * recorded with the first outcome instead of running it again
 * (docs/protocol.md, "Request keys"). Reuse a key only to retry the same
 * request to the same actor. */
int keel_client_queue_keyed(keel_client *c, uint8_t kind,
                            uint64_t request_id, const uint8_t *key,
                            const char *type, const void *id, size_t idlen,
                            const void *msg, size_t len);
/* Fills key with KEEL_REQUEST_KEY_LEN random bytes. 0 or KEEL_EIO. */
int keel_client_new_key(uint8_t *key);
/* Queues raw bytes, sent as they are (tests use it for malformed input). */
int keel_client_queue_raw(keel_client *c, const void *bytes, size_t len);
/* Sends everything queued. Errors: KEEL_ENOTSENT when no byte of it left
 * (the connection was already closed by the server, or failed before
 * taking a byte): none of the queued requests can have run; KEEL_ECONN
 * when the connection failed after some bytes left: those requests may
 * have run. Either way the connection is unusable afterwards. */
int keel_client_flush(keel_client *c);

/* Receives the next frame. The frame's body points into the client's
 * buffer: valid until the next receive. An ERROR frame with request id 0
 * is the server's last word on the connection: with KEEL_ESTOPPING it
 * promises that no request it has not answered ran. Errors: KEEL_ECONN
 * (closed), KEEL_ETIMEDOUT, KEEL_EMALFORMED / KEEL_ETOOBIG (bad frame from
 * server), KEEL_EPROTO (the server's first bytes were not a keel hello of
 * this version: keel_client_why). */
int keel_client_recv(keel_client *c, keel_frame *out);

/* One request, one reply. Returns 0 with *reply (malloc'd, NUL-terminated
 * for convenience, caller frees) or the server's negative error code with
 * *reply holding its message; or a transport error (then *reply is NULL):
 * KEEL_ENOTSENT (the request did not leave), KEEL_ECONN (the connection
 * failed after it left: it may have run), KEEL_ETIMEDOUT, KEEL_EPROTO (not
 * a keel node, or another protocol version: nothing ran there;
 * keel_client_why says which). */
int keel_client_call(keel_client *c, uint8_t kind, const char *type,
                     const void *id, size_t idlen, const void *msg, size_t len,
                     char **reply, size_t *reply_len);

/* keel_client_call with a request key (see keel_client_queue_keyed). */
int keel_client_call_keyed(keel_client *c, uint8_t kind, const uint8_t *key,
                           const char *type, const void *id, size_t idlen,
                           const void *msg, size_t len, char **reply,
                           size_t *reply_len);
/* Reads actor TYPE/ID's state (a CALL with flag bit 5, docs/protocol.md
 * "State reads"): 0 with *reply in the state-read layout (runtime/proto.h,
 * keel_state_read_parse), or the node's error (KEEL_ENOTFOUND for an
 * actor never written) as keel_client_call returns it. */
int keel_client_read_state(keel_client *c, const char *type, const void *id,
                           size_t idlen, char **reply, size_t *reply_len);
/* Lists actor TYPE/ID's reminders (a state read whose message is
 * "reminders"): 0 with *reply a run of entries (runtime/proto.h,
 * keel_reminders_entry_parse), or the node's error. */
int keel_client_read_reminders(keel_client *c, const char *type,
                               const void *id, size_t idlen, char **reply,
                               size_t *reply_len);
/* Lists actor TYPE/ID's dead letters numbered above after (a state read,
 * runtime/proto.h "Dead letters"): 0 with *reply = held be64 then a run
 * of entries (keel_dead_entry_parse), or the node's error. */
int keel_client_dead_letters(keel_client *c, const char *type,
                             const void *id, size_t idlen, uint64_t after,
                             char **reply, size_t *reply_len);
/* Retries (retry nonzero) or drops dead letter number of actor TYPE/ID:
 * 0, or the node's error with its text in *reply. */
int keel_client_dead_letter_act(keel_client *c, const char *type,
                                const void *id, size_t idlen, int retry,
                                uint64_t number, char **reply,
                                size_t *reply_len);

/* Lists actor TYPE/ID's outbox messages still waiting, numbered above
 * after: as keel_client_dead_letters, each entry what it waits for. */
int keel_client_outbox_waiting(keel_client *c, const char *type,
                               const void *id, size_t idlen, uint64_t after,
                               char **reply, size_t *reply_len);
/* Gives up waiting outbox message seq of actor TYPE/ID (its next to go):
 * 0 with *reply a text saying what happens, or the node's error. */
int keel_client_outbox_give_up(keel_client *c, const char *type,
                               const void *id, size_t idlen, uint64_t seq,
                               char **reply, size_t *reply_len);

/* Following an actor (docs/protocol.md, "Following an actor"). An
 * update is the first answer to a subscription or an event after it:
 *   kind KEEL_EVENT_CHANGE: the actor's state is state (state_len bytes;
 *        has_state 0 and version 0 for an actor never written) at
 *        version;
 *   kind KEEL_FOLLOW_PAYLOAD (events only, on a subscription made with
 *        KEEL_SUBSCRIBE_PAYLOADS): a committed turn left the actor at
 *        version and chose payload (payload_len bytes) as its event
 *        payload (keel_turn_event); state is not given. version is the
 *        one before when the turn did not change the state, so several
 *        payloads may share a version;
 *   kind 0: first answer only, the actor is still at the version given;
 *   kind KEEL_EVENT_END: the subscription is over, code (a KEEL_E* code)
 *        and reason say why; version is the last one the node sent on
 *        it. Subscribe again (through any node in a cluster) with the
 *        last version seen.
 * Parts point into the client's buffer: valid until the next receive.
 * Only the current state is ever shown, never the versions missed. */
typedef struct keel_follow_update {
    int kind;
    uint64_t version;
    int has_state;
    const uint8_t *state;
    size_t state_len;
    int code;
    const char *reason;
    size_t reason_len;
    const uint8_t *payload;
    size_t payload_len;
} keel_follow_update;

/* The kind of an update that carries an event payload; on the wire a
 * CHANGE with KEEL_FLAG_PAYLOAD. */
#define KEEL_FOLLOW_PAYLOAD 3
/* keel_client_subscribe_flags: take event payloads. */
#define KEEL_SUBSCRIBE_PAYLOADS 0x01u

/* Subscribes to actor TYPE/ID, having seen version since (0: none), and
 * waits for the first answer. Returns 0 with *out and *sub_id (the
 * subscription's request id), the node's refusal with out->reason saying
 * why (KEEL_EUNAVAIL "owner HOST:PORT ..." in a cluster when another node
 * serves the actor, KEEL_ENOTYPE, ...), or a transport error as
 * keel_client_call returns it. */
int keel_client_subscribe(keel_client *c, const char *type, const void *id,
                          size_t idlen, uint64_t since, uint64_t *sub_id,
                          keel_follow_update *out);
/* keel_client_subscribe with flags: KEEL_SUBSCRIBE_PAYLOADS to get a
 * handler's event payloads (kind KEEL_FOLLOW_PAYLOAD) instead of the
 * states they go with. A node of an earlier version refuses the flag
 * (EMALFORMED); the subscription is then made again without it, and
 * only states come. */
int keel_client_subscribe_flags(keel_client *c, const char *type,
                                const void *id, size_t idlen, uint64_t since,
                                unsigned flags, uint64_t *sub_id,
                                keel_follow_update *out);
/* Waits, up to the client's timeout, for the next event of subscription
 * sub_id (frames for other request ids are dropped). 0 with *out (an ERROR
 * from the node, such as a stopping node's last word, comes as an END
 * with its code); KEEL_ETIMEDOUT when nothing came (the connection stays
 * usable); a transport error (KEEL_ECONN, ...). */
int keel_client_next_event(keel_client *c, uint64_t sub_id,
                           keel_follow_update *out);
/* Ends subscription sub_id and waits for the node's answer (events that
 * were on their way are dropped). 0, KEEL_ENOTFOUND, or a transport
 * error. */
int keel_client_unsubscribe(keel_client *c, uint64_t sub_id);

/* Presents a bearer token (INFO "auth" TOKEN, docs/protocol.md) so that
 * later requests on the connection run with its role; send it first,
 * right after connecting. Returns 0 with *reply ("auth ROLE...", malloc'd;
 * reply may be NULL) or what keel_client_call returns: KEEL_EUNAUTH for
 * a token the node does not know, a transport error. KEEL_EINVAL for an
 * empty token or one over 256 bytes. */
int keel_client_auth(keel_client *c, const char *token, char **reply,
                     size_t *reply_len);

/* An INFO request (docs/protocol.md, "Introspection"): the n words joined
 * by NUL bytes. Returns what keel_client_call returns, the reply text in
 * *reply (malloc'd). KEEL_ENOMEM when the body cannot be made. */
int keel_client_info(keel_client *c, const char *const *words, size_t n,
                     char **reply, size_t *reply_len);

/* Reads a token from the first line of the file at path into buf (cap
 * bytes, NUL-terminated; trailing blanks and the newline dropped).
 * Errors: KEEL_EIO (cannot open), KEEL_EINVAL (empty). */
int keel_client_token_from_file(const char *path, char *buf, size_t cap);

/* The socket, for poll() by callers that multiplex. With TLS the socket
 * may be quiet while bytes wait inside the client: see
 * keel_client_pending. Until the server's hello has been read, the
 * socket may turn readable for the hello alone: a caller that takes
 * readability to mean that an answer came calls keel_client_hello after
 * connecting. */
int keel_client_fd(const keel_client *c);
/* For callers that parse frames themselves: reads what has arrived into
 * buf without waiting. Returns bytes (> 0), 0 when the server closed,
 * KEEL_ETIMEDOUT when nothing is there now, KEEL_ECONN on failure. Not to
 * be mixed with keel_client_recv on one connection. */
long keel_client_read_some(keel_client *c, void *buf, size_t len);
/* 1 when a read would find bytes without the socket being readable. */
int keel_client_pending(const keel_client *c);

#endif
