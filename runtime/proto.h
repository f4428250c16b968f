/* The wire protocol: length-prefixed binary frames over TCP, pipelined and
 * correlated by request id. docs/protocol.md is the reference for other
 * languages; this is the codec.
 *
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
 *
 * flags on CALL/CAST:
 *   bits 0-3  how many times the request was forwarded between nodes (0
 *             from clients);
 *   bit 4     KEEL_FLAG_DEADLINE (between nodes): the body starts with the
 *             call's remaining time budget, be32 milliseconds;
 *   bit 6     KEEL_FLAG_KEYED: then a 16-byte request key
 *             (runtime/dedup.h);
 *   then the CALL/CAST body proper. Other bits: 0.
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
    KEEL_FRAME_INFO = 9
};
#define KEEL_FRAME_KIND_MAX KEEL_FRAME_INFO

typedef struct keel_frame {
    uint8_t kind;
    uint8_t flags;
    uint64_t request_id;
    const uint8_t *body; /* points into the parsed buffer */
    size_t body_len;
} keel_frame;

#define KEEL_FLAG_HOPS 0x0Fu
#define KEEL_FLAG_DEADLINE 0x10u
#define KEEL_FLAG_KEYED 0x40u
#define KEEL_DEADLINE_LEN 4

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
    const uint8_t *recs; /* klen be16 | key | version be64 | vlen be32 | value */
    size_t recs_len;
} keel_xfer_head;
/* Splits the head off an XFER body: 0, or KEEL_EMALFORMED when the body
 * is shorter than its head. The records are not looked at. */
int keel_xfer_head_parse(const uint8_t *body, size_t len,
                         keel_xfer_head *out);

/* ERROR body: code is a negative KEEL_E* value. Returns bytes written
 * (at most 2 + msglen). */
size_t keel_error_body_encode(uint8_t *buf, int code, const char *msg,
                              size_t msglen);
/* Returns the negative KEEL_E* code (KEEL_EPROTO if the body is shorter
 * than 2 bytes); *msg / *msglen point into body. */
int keel_error_body_parse(const uint8_t *body, size_t len, const char **msg,
                          size_t *msglen);

#endif
