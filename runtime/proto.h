/* The wire protocol: length-prefixed binary frames over TCP, pipelined and
 * correlated by request id. docs/protocol.md is the reference for other
 * languages; this is the codec.
 *
 *   hello   = "KEEL" | version u8 | flags u8 (0) | "\r\n", once each way
 *             before any frame: the connecting side's first, the
 *             server's in answer (see keel_hello_parse below)
 *   frame   = length be32 | kind u8 | flags u8 | reserved be16 (0)
 *             | request_id be64 | body
 *   length  = bytes after the length field (12 + body length); a frame whose
 *             total size (4 + length) exceeds the receiver's max frame size
 *             is refused with KEEL_ETOOBIG.
 *
 *   CALL/CAST body = len(type) u8 | type | len(id) be16 | id | message
 *   REPLY body     = reply bytes (a CAST's ack has an empty body)
 *   ERROR body     = code be16 (the absolute value of a KEEL_E* code)
 *                    | message text (UTF-8, not NUL-terminated)
 *   STAT body      = empty; answered by REPLY with "name value\n" lines
 *   PING body      = any bytes; answered by PONG echoing them
 *   XFER body      = node to node only, see runtime/cluster_rt.c and
 *                    docs/protocol.md
 *   INFO body      = query words separated by NUL bytes ("nodes",
 *                    "shards" [NODE], "where" TYPE ID, "capabilities");
 *                    answered by REPLY with text lines (runtime/info.h)
 *   REPL body      = node to node only: committed writes of units, from
 *                    their primary to a backup (runtime/repl.h), see
 *                    below and docs/protocol.md
 *   SUBSCRIBE body = len(type) u8 | type | len(id) be16 | id | since be64;
 *                    answered by REPLY (empty, or the state-read layout),
 *                    then EVENT frames with the same request id
 *   UNSUBSCRIBE    = empty body, the subscription's request id
 *   EVENT body     = server to client: kind u8 | version be64 | rest (see
 *                    keel_event below and runtime/follow.h)
 *   OBATCH body    = node to node only: outbox messages bound for one
 *                    node, see keel_obatch_* below and docs/protocol.md
 *
 * flags on CALL/CAST:
 *   bits 0-3  how many times the request was forwarded between nodes (0
 *             from clients);
 *   bit 4     KEEL_FLAG_DEADLINE (between nodes): the body starts with the
 *             call's remaining time budget, be32 milliseconds;
 *   bit 5     KEEL_FLAG_READ (CALL only, empty message, not keyed): not
 *             a message but a read of the actor's state, answered by a
 *             REPLY in the state-read layout below;
 *   bit 6     KEEL_FLAG_KEYED: then a 16-byte request key
 *             (runtime/dedup.h);
 *   bit 7     KEEL_FLAG_FROM (between nodes): a message from an actor's
 *             outbox (runtime/outbox.h); then the sender prefix
 *             seq be64 | len(type) u8 | type | len(id) be16 | id;
 *   then the CALL/CAST body proper.
 *
 * flags on SUBSCRIBE and EVENT:
 *   bit 0     KEEL_FLAG_PAYLOAD. On a SUBSCRIBE: the subscriber takes
 *             event payloads (keel_turn_event); without it, it gets
 *             states only, as before payloads existed. On an EVENT
 *             CHANGE: rest is the payload a handler chose for that
 *             version, not the state blob.
 */
#ifndef KEEL_RUNTIME_PROTO_H
#define KEEL_RUNTIME_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "keel.h"

#define KEEL_FRAME_HEADER 16
#define KEEL_FRAME_MIN_MAX 64 /* smallest max-frame setting accepted */

enum keel_frame_kind {
    KEEL_FRAME_CALL = 1,
    KEEL_FRAME_CAST = 2,
    KEEL_FRAME_REPLY = 3,
    KEEL_FRAME_ERROR = 4,
    KEEL_FRAME_STAT = 5,
    KEEL_FRAME_PING = 6,
    KEEL_FRAME_PONG = 7,
    /* Node to node (cluster mode): the records of a placement unit that
     * moves here; answered by an empty REPLY once stored. */
    KEEL_FRAME_XFER = 8,
    /* Introspection of placement (runtime/info.h): the body names the
     * query; answered by REPLY with text lines. */
    KEEL_FRAME_INFO = 9,
    /* Node to node (cluster mode): committed writes of units from their
     * primary to a backup; answered by REPLY with per-unit acks. */
    KEEL_FRAME_REPL = 10,
    /* Following an actor (runtime/follow.h, docs/protocol.md "Following
     * an actor"): a client subscribes to an actor's committed changes,
     * and stops; the node sends EVENTs on the subscription's request
     * id. */
    KEEL_FRAME_SUBSCRIBE = 11,
    KEEL_FRAME_UNSUBSCRIBE = 12,
    KEEL_FRAME_EVENT = 13,
    /* Node to node (cluster mode): many outbox messages bound for one
     * node in one frame (runtime/obatch.h, docs/protocol.md "OBATCH
     * body"); answered by one REPLY with each message's outcome. */
    KEEL_FRAME_OBATCH = 14
};
#define KEEL_FRAME_KIND_MAX KEEL_FRAME_OBATCH

typedef struct keel_frame {
    uint8_t kind;
    uint8_t flags;
    uint64_t request_id;
    const uint8_t *body; /* points into the parsed buffer */
    size_t body_len;
} keel_frame;

#define KEEL_FLAG_HOPS 0x0Fu
#define KEEL_FLAG_DEADLINE 0x10u
#define KEEL_FLAG_READ 0x20u
#define KEEL_FLAG_KEYED 0x40u
#define KEEL_FLAG_FROM 0x80u
#define KEEL_FLAG_PAYLOAD 0x01u /* SUBSCRIBE and EVENT only */
#define KEEL_DEADLINE_LEN 4

/* The hello (docs/protocol.md "Hello"): the first 8 bytes each side sends
 * on a connection, inside TLS where there is TLS:
 *   "KEEL" | version u8 | flags u8 (0) | "\r\n"
 * The connecting side sends its hello first and may send frames right
 * behind it without waiting; the server answers with its own hello (the
 * version the connection uses) before its first frame. The magic can
 * never begin a frame from an older peer: read as a length it is over
 * 1 GiB. The line end makes a line-based server that is not keel (HTTP,
 * Redis) answer at once, so that a client learns so without waiting. */
#define KEEL_HELLO_MAGIC "KEEL"
#define KEEL_HELLO_LEN 8
/* The protocol version this code speaks. 1: the first with a hello. */
#define KEEL_PROTO_VERSION 1

/* Hello flags: what the side that sends them takes beyond its version's
 * frames, so that a newer node speaks to an older one only what it
 * knows (older nodes send 0 and ignore them).
 *   bit 0  KEEL_HELLO_OBATCH: OBATCH frames (a node's answer to a node).
 *   bit 1  KEEL_HELLO_UNITCHECK: REPL pieces of op KEEL_REPL_CHECK_UNIT. */
#define KEEL_HELLO_OBATCH 0x01u
#define KEEL_HELLO_UNITCHECK 0x02u

/* Writes a hello (KEEL_HELLO_LEN bytes) for version, flags 0. */
void keel_hello_encode(uint8_t *p, unsigned version);
/* The same with flags. */
void keel_hello_encode_flags(uint8_t *p, unsigned version, unsigned flags);
/* The flags of a hello keel_hello_parse took from buf. */
unsigned keel_hello_flags(const uint8_t *buf);
/* Reads a hello from the front of buf: KEEL_HELLO_LEN with *version set
 * when buf holds one, 0 when the len bytes so far begin one but are fewer
 * than KEEL_HELLO_LEN, KEEL_EPROTO when buf does not begin with a hello.
 * Flag bits are for later versions and ignored here. */
long keel_hello_parse(const uint8_t *buf, size_t len, unsigned *version);

/* Parses one frame from the front of buf.
 * Returns the frame's total size (> 0) when buf holds a whole frame,
 * 0 when more bytes are needed, or:
 *   KEEL_ETOOBIG    the length field announces more than max_frame bytes
 *                   in total (known after 4 bytes);
 *   KEEL_EMALFORMED length below 12, nonzero reserved field, or a kind
 *                   outside enum keel_frame_kind (known after the header).
 * out->request_id is filled whenever the header was read, even on error,
 * so the error can be correlated. */
long keel_frame_parse(const uint8_t *buf, size_t len, size_t max_frame,
                      keel_frame *out);

/* Writes a 16-byte header for a frame whose body is body_len bytes. */
void keel_frame_header(uint8_t *hdr, uint8_t kind, uint64_t request_id,
                       size_t body_len);

typedef struct keel_call_body {
    const uint8_t *type;
    size_t tlen;
    const uint8_t *id;
    size_t idlen;
    const uint8_t *msg;
    size_t msglen;
} keel_call_body;

/* Splits a CALL/CAST body. KEEL_EMALFORMED when truncated or the type is
 * empty; KEEL_ELIMIT when the type or id exceeds KEEL_MAX_TYPE_LEN /
 * KEEL_MAX_ID_LEN. */
int keel_call_body_parse(const uint8_t *body, size_t len, keel_call_body *out);
/* Bytes a CALL/CAST body needs, and the encoder (buf must hold that many).
 * Returns the length written. */
size_t keel_call_body_size(size_t tlen, size_t idlen, size_t msglen);
size_t keel_call_body_encode(uint8_t *buf, const void *type, size_t tlen,
                             const void *id, size_t idlen, const void *msg,
                             size_t msglen);

/* The budget prefix of a CALL/CAST body with KEEL_FLAG_DEADLINE. */
void keel_deadline_put(uint8_t *p, uint32_t budget_ms);
/* Takes the budget prefix off a CALL/CAST frame's body when its flags say
 * there is one: *budget_ms (UINT32_MAX when the frame has none), and
 * *body / *len the CALL/CAST body after it (pointing into f's buffer).
 * KEEL_EMALFORMED when the body is shorter than the prefix. */
int keel_call_deadline_split(const keel_frame *f, uint32_t *budget_ms,
                             const uint8_t **body, size_t *len);

/* The sender prefix of a CALL/CAST with KEEL_FLAG_FROM: which actor's
 * outbox the message comes from and its sequence number there (1 and
 * up). type and id point into the parsed buffer. */
typedef struct keel_from {
    uint64_t seq;
    const uint8_t *type;
    size_t tlen;
    const uint8_t *id;
    size_t idlen;
} keel_from;

/* Reads a sender prefix from the front of p. Returns its length (> 0),
 * KEEL_EMALFORMED when p is shorter than the prefix, the type is empty
 * or seq is 0, KEEL_ELIMIT when type or id is over its limit. */
long keel_from_parse(const uint8_t *p, size_t len, keel_from *out);
/* Bytes a sender prefix needs, and the encoder (p must hold that many).
 * Returns the length written. */
size_t keel_from_size(size_t tlen, size_t idlen);
size_t keel_from_encode(uint8_t *p, uint64_t seq, const void *type,
                        size_t tlen, const void *id, size_t idlen);

/* OBATCH body (node to node, docs/protocol.md "OBATCH body"), integers
 * big-endian:
 *   [budget be32, with KEEL_FLAG_DEADLINE] | count be16
 *   | count items: flags u8 | len be32 | sender prefix | CALL/CAST body
 * An item is one outbox message, delivered as a CAST with KEEL_FLAG_FROM
 * would be: flags bits 0-3 its hop count (other bits 0), len the bytes
 * of the sender prefix and call body that follow. Every message of the
 * frame is held to the frame's budget. The answer, a REPLY:
 *   count be16 | count results: status be16 (0, or the magnitude of a
 *   KEEL_E* code) | len be32 | the reply (status 0) or the error text
 * in the order of the items. Parsed parts point into the body. */
#define KEEL_OBATCH_MAX 1024 /* items in one frame at most */
#define KEEL_OBATCH_HEAD 2
#define KEEL_OBATCH_ITEM_HDR 5
#define KEEL_OBATCH_RESULT_HDR 6

typedef struct keel_obatch_item {
    unsigned hops;
    keel_from from;
    keel_call_body call;
} keel_obatch_item;

/* Bytes an item needs (its header included), and its encoder (p holds
 * that many). Returns the length written. */
size_t keel_obatch_item_size(size_t ftlen, size_t fidlen, size_t tlen,
                             size_t idlen, size_t msglen);
size_t keel_obatch_item_encode(uint8_t *p, unsigned hops, uint64_t seq,
                               const void *ftype, size_t ftlen,
                               const void *fid, size_t fidlen,
                               const void *type, size_t tlen, const void *id,
                               size_t idlen, const void *msg, size_t msglen);
/* Reads the count off the front of an OBATCH body (after its budget):
 * *count, and [*items, *items + *items_len) the items. KEEL_EMALFORMED
 * when shorter than the count, or the count is 0 or over
 * KEEL_OBATCH_MAX. */
int keel_obatch_head_parse(const uint8_t *body, size_t len, unsigned *count,
                           const uint8_t **items, size_t *items_len);
/* Takes the next item off [*p, *p + *len): 0 (*p, *len advanced), or
 * KEEL_EMALFORMED (truncated, its length runs past the body, unknown flag
 * bits, a bad sender prefix or call body, or a type or id over its
 * limit). Nothing is advanced on error. */
int keel_obatch_item_next(const uint8_t **p, size_t *len,
                          keel_obatch_item *out);
/* Checks a whole OBATCH body (after its budget): every item well formed
 * and nothing after the last. 0 with *count set, or KEEL_EMALFORMED. */
int keel_obatch_check(const uint8_t *body, size_t len, unsigned *count);

/* The REPLY to an OBATCH: the count, then per item a result of
 * KEEL_OBATCH_RESULT_HDR + len bytes (status: 0 or a negative KEEL_E*
 * code). */
void keel_obatch_results_count(uint8_t *p, unsigned count);
size_t keel_obatch_result_encode(uint8_t *p, int status, const void *data,
                                 size_t len);
/* The count off the front of an answer: 0 or KEEL_EMALFORMED. */
int keel_obatch_results_parse(const uint8_t **p, size_t *len,
                              unsigned *count);
/* The next result: 0 with *status (0 or a negative KEEL_E* code) and
 * *data / *dlen pointing into the answer, or KEEL_EMALFORMED. */
int keel_obatch_result_next(const uint8_t **p, size_t *len, int *status,
                            const uint8_t **data, size_t *dlen);

/* The reply to a state read (KEEL_FLAG_READ; keel__read_state):
 *   flags u8 (bit 0: the actor has a state blob) | version be64
 *   | entries be64 | the state blob (the rest) */
#define KEEL_STATE_READ_HDR 17
#define KEEL_STATE_READ_BLOB 0x01u

typedef struct keel_state_read {
    int has_blob;
    uint64_t version;
    uint64_t entries;    /* named entries the actor has */
    const uint8_t *blob; /* points into the parsed reply */
    size_t blob_len;
} keel_state_read;

void keel_state_read_head(uint8_t *p, int has_blob, uint64_t version,
                          uint64_t entries);
/* KEEL_EMALFORMED when shorter than the head or with unknown flags. */
int keel_state_read_parse(const uint8_t *p, size_t len, keel_state_read *out);

/* SUBSCRIBE body: a CALL/CAST body whose message is exactly the last
 * version the subscriber saw (be64; 0: none). type and id point into
 * body. KEEL_EMALFORMED when the body is not so, KEEL_ELIMIT as for a
 * call body. */
#define KEEL_SUBSCRIBE_SINCE_LEN 8
int keel_subscribe_parse(const uint8_t *body, size_t len,
                         keel_call_body *out, uint64_t *since);
/* Bytes a SUBSCRIBE body needs, and the encoder (buf holds that many). */
size_t keel_subscribe_size(size_t tlen, size_t idlen);
size_t keel_subscribe_encode(uint8_t *buf, const void *type, size_t tlen,
                             const void *id, size_t idlen, uint64_t since);

/* EVENT body:
 *   kind u8 | version be64 | rest
 * kind 1 (CHANGE): a committed turn changed the actor's state to version;
 *        rest is the state blob. With KEEL_FLAG_PAYLOAD on the frame: a
 *        committed turn chose an event payload (keel_turn_event), rest;
 *        version is the actor's after that turn (unchanged when the turn
 *        did not change the state).
 * kind 2 (END): the subscription is over; version is the last one the
 *        node sent on it (0: none), rest is code be16 (the magnitude of a
 *        KEEL_E* code) | reason text. */
#define KEEL_EVENT_CHANGE 1
#define KEEL_EVENT_END 2
#define KEEL_EVENT_HDR 9

typedef struct keel_event {
    int kind;
    uint64_t version;
    const uint8_t *data; /* CHANGE: the state; END: the reason text */
    size_t data_len;
    int code;            /* END: a negative KEEL_E* code */
} keel_event;

/* Writes the head of an EVENT body (KEEL_EVENT_HDR bytes); a CHANGE's
 * state follows it. */
void keel_event_head(uint8_t *p, int kind, uint64_t version);
/* A whole END body into p (at least KEEL_EVENT_HDR + 2 + msglen bytes).
 * Returns the length written. */
size_t keel_event_end_encode(uint8_t *p, uint64_t version, int code,
                             const char *msg, size_t msglen);
/* KEEL_EMALFORMED for an unknown kind, a short body or an END whose code
 * is 0. Parts point into p. */
int keel_event_parse(const uint8_t *p, size_t len, keel_event *out);
/* A state read whose message is "reminders" (no NUL) lists the actor's
 * reminders instead (keel_turn_remind), in name order, each:
 *   in_ms be64 (signed: due in ms from the owner's now; negative when
 *   overdue) | period_ms be64 | msg_len be32 | len(name) u8 | name */
#define KEEL_READ_REMINDERS "reminders"
#define KEEL_READ_REMINDERS_LEN 9
#define KEEL_REMINDERS_ENTRY_HDR 21

typedef struct keel_reminder_entry {
    int64_t in_ms;
    uint64_t period_ms;
    uint32_t msg_len;
    const char *name; /* points into the reply; not NUL-terminated */
    size_t name_len;
} keel_reminder_entry;

/* p holds KEEL_REMINDERS_ENTRY_HDR + nlen bytes. */
void keel_reminders_entry_put(uint8_t *p, int64_t in_ms, uint64_t period_ms,
                              uint32_t msg_len, const void *name, size_t nlen);
/* Parses the entry at p: its length, or KEEL_EMALFORMED. */
long keel_reminders_entry_parse(const uint8_t *p, size_t len,
                                keel_reminder_entry *out);

/* Dead letters (runtime/deadletters.h), through state reads whose
 * message is one of:
 *   "dead-letters list" after be64  the actor's dead letters numbered
 *                                 above after, as many as fit one frame
 *                                 and at most
 *                                 KEEL_DEAD_LIST_MAX of them: a REPLY of
 *                                 held be64 (how many the actor holds)
 *                                 then one entry each, by number;
 *   "dead-letters retry" n be64   retries dead letter n: an empty REPLY,
 *                                 or the handler's error when a
 *                                 reminder's message fails again;
 *   "dead-letters drop" n be64    drops dead letter n: an empty REPLY;
 *   "dead-letters waiting" after be64  the actor's outbox messages still
 *                                 waiting, numbered above after: a page
 *                                 as for "list" (held: how many wait),
 *                                 each entry of kind 1 with code and
 *                                 attempts those of its failed attempts
 *                                 (0: none), at_ms the first of them,
 *                                 why what it waits for;
 *   "dead-letters give-up" n be64  gives up waiting message n, the next
 *                                 to go: it becomes a dead letter (once
 *                                 an attempt out now has failed); a
 *                                 REPLY of text saying which.
 * Retry and drop answer ENOTFOUND when the actor has no dead letter n,
 * give-up when it has no waiting message n.
 * An entry:
 *   number be64 | kind u8 (1 outbox, 2 reminder) | code be16 (magnitude
 *   of a KEEL_E* code) | attempts be16 | at_ms be64 (wall clock) | len(why)
 *   be16 | len(a) u8 | len(b) be16 | msg_len be32 | len(shown) be16
 *   | why | a | b | shown
 * where, for kind 1, a and b are the receiver's type and id, and for
 * kind 2, a is empty and b is the reminder's name; shown is the start of
 * the message (at most KEEL_DEAD_SHOWN_MAX of its msg_len bytes). */
#define KEEL_READ_DEAD "dead-letters"
#define KEEL_READ_DEAD_LEN 12
#define KEEL_DEAD_LIST "dead-letters list"
#define KEEL_DEAD_LIST_LEN 17
#define KEEL_DEAD_RETRY "dead-letters retry"
#define KEEL_DEAD_RETRY_LEN 18
#define KEEL_DEAD_DROP "dead-letters drop"
#define KEEL_DEAD_DROP_LEN 17
#define KEEL_OB_WAITING "dead-letters waiting"
#define KEEL_OB_WAITING_LEN 20
#define KEEL_OB_GIVE_UP "dead-letters give-up"
#define KEEL_OB_GIVE_UP_LEN 20
#define KEEL_DEAD_LIST_MAX 100
#define KEEL_DEAD_SHOWN_MAX 64
#define KEEL_DEAD_ENTRY_HDR 32

typedef struct keel_dead_entry {
    uint64_t number;
    int kind;
    int code; /* negative KEEL_E* code */
    unsigned attempts;
    uint64_t at_ms;
    const char *why; /* these point into the reply, not NUL-terminated */
    size_t why_len;
    const char *a;
    size_t a_len;
    const char *b;
    size_t b_len;
    uint32_t msg_len;
    const uint8_t *shown;
    size_t shown_len;
} keel_dead_entry;

/* Bytes an entry takes, and its encoder (p holds that many). */
size_t keel_dead_entry_size(const keel_dead_entry *e);
void keel_dead_entry_put(uint8_t *p, const keel_dead_entry *e);
/* Parses the entry at p: its length, or KEEL_EMALFORMED. */
long keel_dead_entry_parse(const uint8_t *p, size_t len,
                           keel_dead_entry *out);
/* Whether a state read's message (len bytes) is a runtime request this
 * node knows: empty, "reminders", or one of the dead-letter requests
 * (those of waiting outbox messages included). */
int keel_read_msg_known(const uint8_t *msg, size_t len);

/* The head of an XFER body (node to node, docs/protocol.md "XFER body"):
 *   len(cap) u8 | cap | shard be16 | shard_epoch be64 | seq be32
 *   | flags u8 (bit 0: last frame of the unit) | records
 * cap and recs point into the body; cap is not NUL-terminated. */
typedef struct keel_xfer_head {
    const uint8_t *cap;
    size_t clen;
    uint32_t shard;
    uint64_t epoch;
    uint32_t seq;
    int last;
    /* flags bit 1: the recipient is an in-sync backup and keeps what it
     * holds; the record area is the sender's content digest (be64), no
     * records (docs/cluster.md, "A move onto an in-sync backup"). */
    int keep;
    const uint8_t *recs; /* klen be16 | key | version be64 | vlen be32 | value */
    size_t recs_len;
} keel_xfer_head;
/* Splits the head off an XFER body: 0, or KEEL_EMALFORMED when the body
 * is shorter than its head. The records are not looked at. */
int keel_xfer_head_parse(const uint8_t *body, size_t len,
                         keel_xfer_head *out);

/* REPL body (node to node, docs/protocol.md "REPL body"), integers
 * big-endian:
 *   version u8 (1) | len(from) u8 | from | stream be64 | nunits be16
 *   | per unit: len(cap) u8 | cap | shard be16 | shard_epoch be64
 *               | seq be64 | nops be32 | ops
 *   op = kind u8 | klen be16 | key | (put: version be64 | dlen be32 | data)
 * from is the sending primary's node name; stream names the run of seqs
 * the sender numbers (a new one each time it starts counting from 1 at an
 * epoch, larger than the one before). Its answer, a REPLY:
 *   nunits be16 | per unit: len(cap) u8 | cap | shard be16
 *               | status be16 (0, or the magnitude of a KEEL_E* code)
 *               | seq be64 (the highest seq of the unit durable there at
 *                 that shard_epoch)
 * Parsed parts point into the body they came from. */
#define KEEL_REPL_VERSION 1
enum keel_repl_op_kind {
    KEEL_REPL_PUT = 1,
    KEEL_REPL_DEL = 2,
    KEEL_REPL_DEL_PREFIX = 3,
    /* Every record of the unit, key empty: only as a piece's first op,
     * which makes the piece a snapshot (docs/protocol.md). */
    KEEL_REPL_DEL_UNIT = 4,
    /* Key empty, then the unit's content digest be64 (in the op's
     * version): the piece's only op, sent only to a node whose hello
     * carries KEEL_HELLO_UNITCHECK. The backup compares the digest of what
     * it holds of the unit, in order with the pieces before; the same,
     * the piece is a snapshot that changes nothing; another, the backup
     * deletes the unit's records and answers KEEL_EDIFFERS with the
     * piece's seq (it took it), and the primary sends the records
     * (docs/protocol.md, "REPL body"). */
    KEEL_REPL_CHECK_UNIT = 5
};
#define KEEL_REPL_HEAD_SIZE(flen) (1 + 1 + (size_t)(flen) + 8 + 2)
#define KEEL_REPL_UNIT_SIZE(clen) (1 + (size_t)(clen) + 2 + 8 + 8 + 4)
#define KEEL_REPL_ACK_SIZE(clen) (1 + (size_t)(clen) + 2 + 2 + 8)

typedef struct keel_repl_head {
    const uint8_t *from;
    size_t flen;
    uint64_t stream;
    uint16_t nunits;
    const uint8_t *units; /* the units, nunits of them, to the end */
    size_t units_len;
} keel_repl_head;

typedef struct keel_repl_unit {
    const uint8_t *cap;
    size_t clen;
    uint32_t shard;
    uint64_t epoch;
    uint64_t seq;
    uint32_t nops;
    const uint8_t *ops; /* nops ops, checked by keel_repl_unit_next */
    size_t ops_len;
} keel_repl_unit;

typedef struct keel_repl_op {
    int kind; /* enum keel_repl_op_kind */
    const uint8_t *key;
    size_t klen;
    uint64_t version; /* puts */
    const uint8_t *data;
    size_t dlen;
} keel_repl_op;

typedef struct keel_repl_ack {
    const uint8_t *cap;
    size_t clen;
    uint32_t shard;
    int status; /* 0 or a negative KEEL_E* code */
    uint64_t seq;
} keel_repl_ack;

/* Writes the head of a REPL body (KEEL_REPL_HEAD_SIZE(flen) bytes).
 * nunits may be written again later, once known: the head's size does
 * not depend on it. Returns the bytes written. */
size_t keel_repl_head_encode(uint8_t *p, const void *from, size_t flen,
                             uint64_t stream, uint16_t nunits);
/* Writes a unit's head (KEEL_REPL_UNIT_SIZE(clen) bytes); its ops
 * follow. Returns the bytes written. */
size_t keel_repl_unit_encode(uint8_t *p, const void *cap, size_t clen,
                             uint32_t shard, uint64_t epoch, uint64_t seq,
                             uint32_t nops);
/* Bytes an op takes, and its encoder (data only for puts). */
size_t keel_repl_op_size(int kind, size_t klen, size_t dlen);
size_t keel_repl_op_encode(uint8_t *p, int kind, const void *key,
                           size_t klen, uint64_t version, const void *data,
                           size_t dlen);

/* Splits the head off a REPL body. KEEL_EMALFORMED when it is shorter
 * than its head or from is empty; KEEL_EPROTO for a version other than
 * KEEL_REPL_VERSION. */
int keel_repl_head_parse(const uint8_t *body, size_t len,
                         keel_repl_head *out);
/* Takes the next unit off [*p, *p + *len), checking that its nops ops
 * are all there and well formed (kind 1-3 with a key of at least 2
 * bytes, kind 4 with none).
 * 0 (*p, *len advanced), or KEEL_EMALFORMED. */
int keel_repl_unit_next(const uint8_t **p, size_t *len, keel_repl_unit *out);
/* Takes the next op off [*p, *p + *len) (a unit's ops). 0 or
 * KEEL_EMALFORMED. */
int keel_repl_op_next(const uint8_t **p, size_t *len, keel_repl_op *out);

/* REPLY to a REPL: the count (2 bytes), then per unit an ack of
 * KEEL_REPL_ACK_SIZE(clen) bytes. */
void keel_repl_acks_count(uint8_t *p, uint16_t nunits);
size_t keel_repl_ack_encode(uint8_t *p, const void *cap, size_t clen,
                            uint32_t shard, int status, uint64_t seq);
/* The count off the front of an answer: 0 or KEEL_EMALFORMED. */
int keel_repl_acks_parse(const uint8_t **p, size_t *len, uint16_t *nunits);
int keel_repl_ack_next(const uint8_t **p, size_t *len, keel_repl_ack *out);

/* ERROR body: code is a negative KEEL_E* value. Returns bytes written
 * (at most 2 + msglen). */
size_t keel_error_body_encode(uint8_t *buf, int code, const char *msg,
                              size_t msglen);
/* Returns the negative KEEL_E* code (KEEL_EPROTO if the body is shorter
 * than 2 bytes); *msg / *msglen point into body. */
int keel_error_body_parse(const uint8_t *body, size_t len, const char **msg,
                          size_t *msglen);

#endif
