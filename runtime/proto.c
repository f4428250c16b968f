/* The wire codec: frame headers, the CALL/CAST, ERROR and XFER bodies,
 * and the REPL body and its answer.
 *
 * Everything here is pure byte shuffling on caller-owned buffers: nothing
 * is allocated, and parsed results point into the buffer they came from,
 * so they live exactly as long as the caller keeps that buffer. Input is
 * untrusted (it comes straight off a socket): every read is checked
 * against the length given, and lengths are widened to 64 bits before any
 * arithmetic so that a length field near 2^32 cannot wrap. */
#include "runtime/proto.h"

#include <limits.h>
#include <string.h>

static uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | (unsigned)p[1]);
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

/* memcpy with a NULL source is undefined even for zero bytes, and callers
 * legitimately pass (NULL, 0) for an empty id or message. */
static uint8_t *copy_bytes(uint8_t *dst, const void *src, size_t n)
{
    if (n > 0)
        memcpy(dst, src, n);
    return dst + n;
}

void keel_hello_encode_flags(uint8_t *p, unsigned version, unsigned flags)
{
    memcpy(p, KEEL_HELLO_MAGIC, 4);
    p[4] = (uint8_t)version;
    p[5] = (uint8_t)flags;
    p[6] = '\r';
    p[7] = '\n';
}

void keel_hello_encode(uint8_t *p, unsigned version)
{
    keel_hello_encode_flags(p, version, 0);
}

unsigned keel_hello_flags(const uint8_t *buf)
{
    return buf[5];
}

long keel_hello_parse(const uint8_t *buf, size_t len, unsigned *version)
{
    static const uint8_t end[2] = {'\r', '\n'};

    *version = 0;
    if (memcmp(buf, KEEL_HELLO_MAGIC, len < 4 ? len : 4) != 0)
        return KEEL_EPROTO;
    if (len > 6 && memcmp(buf + 6, end, len < 8 ? len - 6 : 2) != 0)
        return KEEL_EPROTO;
    if (len < KEEL_HELLO_LEN)
        return 0;
    *version = buf[4];
    return KEEL_HELLO_LEN;
}

long keel_frame_parse(const uint8_t *buf, size_t len, size_t max_frame,
                      keel_frame *out)
{
    uint64_t total;
    uint32_t length;

    memset(out, 0, sizeof *out);
    if (len < 4)
        return 0;
    length = get_be32(buf);
    total = 4 + (uint64_t)length;

    /* The header fields are filled as soon as they are in the buffer, so
     * the caller can quote the request id in the ERROR it sends back even
     * when the frame itself is refused below. */
    if (len >= KEEL_FRAME_HEADER) {
        out->kind = buf[4];
        out->flags = buf[5];
        out->request_id = get_be64(buf + 8);
    }

    /* Refuse oversized frames as soon as the length is known: the receiver
     * must not buffer up to 4 GiB only to throw it away. The LONG_MAX test
     * matters only where long is 32 bits. */
    if (total > max_frame || total > (uint64_t)LONG_MAX)
        return KEEL_ETOOBIG;
    if (length < KEEL_FRAME_HEADER - 4)
        return KEEL_EMALFORMED;
    if (len < KEEL_FRAME_HEADER)
        return 0;
    if (get_be16(buf + 6) != 0)
        return KEEL_EMALFORMED;
    if (out->kind < KEEL_FRAME_CALL || out->kind > KEEL_FRAME_KIND_MAX)
        return KEEL_EMALFORMED;
    if ((uint64_t)len < total)
        return 0;
    out->body = buf + KEEL_FRAME_HEADER;
    out->body_len = (size_t)(total - KEEL_FRAME_HEADER);
    return (long)total;
}

void keel_frame_header(uint8_t *hdr, uint8_t kind, uint64_t request_id,
                       size_t body_len)
{
    /* Callers keep body_len within the 32-bit length field (the client and
     * the server both cap frames far below 4 GiB). */
    put_be32(hdr, (uint32_t)(body_len + (KEEL_FRAME_HEADER - 4)));
    hdr[4] = kind;
    hdr[5] = 0; /* flags: set by the caller where it needs them */
    put_be16(hdr + 6, 0);
    put_be64(hdr + 8, request_id);
}

int keel_call_body_parse(const uint8_t *body, size_t len, keel_call_body *out)
{
    size_t tlen, idlen, off;

    memset(out, 0, sizeof *out);
    /* The whole structure is checked before the limits: a body whose
     * lengths do not add up is malformed (the stream can no longer be
     * trusted), whereas a well-formed body with an over-long name is only
     * a bad request. */
    if (len < 1)
        return KEEL_EMALFORMED;
    tlen = body[0];
    off = 1;
    if (len - off < tlen + 2)
        return KEEL_EMALFORMED;
    out->type = body + off;
    out->tlen = tlen;
    off += tlen;
    idlen = get_be16(body + off);
    off += 2;
    if (len - off < idlen)
        return KEEL_EMALFORMED;
    out->id = body + off;
    out->idlen = idlen;
    off += idlen;
    out->msg = body + off;
    out->msglen = len - off;

    if (tlen == 0)
        return KEEL_EMALFORMED;
    if (tlen > KEEL_MAX_TYPE_LEN || idlen > KEEL_MAX_ID_LEN)
        return KEEL_ELIMIT;
    return 0;
}

size_t keel_call_body_size(size_t tlen, size_t idlen, size_t msglen)
{
    return 1 + tlen + 2 + idlen + msglen;
}

size_t keel_call_body_encode(uint8_t *buf, const void *type, size_t tlen,
                             const void *id, size_t idlen, const void *msg,
                             size_t msglen)
{
    uint8_t *p = buf;

    /* The length prefixes are 8 and 16 bits wide; callers check the
     * KEEL_MAX_TYPE_LEN / KEEL_MAX_ID_LEN limits, which fit, beforehand. */
    *p++ = (uint8_t)tlen;
    p = copy_bytes(p, type, tlen);
    put_be16(p, (uint16_t)idlen);
    p += 2;
    p = copy_bytes(p, id, idlen);
    p = copy_bytes(p, msg, msglen);
    return (size_t)(p - buf);
}

long keel_from_parse(const uint8_t *p, size_t len, keel_from *out)
{
    size_t tlen, idlen;

    if (len < 8 + 1)
        return KEEL_EMALFORMED;
    out->seq = get_be64(p);
    tlen = p[8];
    if (out->seq == 0 || tlen == 0 || len < 8 + 1 + tlen + 2)
        return KEEL_EMALFORMED;
    idlen = get_be16(p + 9 + tlen);
    if (len - (8 + 1 + tlen + 2) < idlen)
        return KEEL_EMALFORMED;
    out->type = p + 9;
    out->tlen = tlen;
    out->id = p + 9 + tlen + 2;
    out->idlen = idlen;
    if (tlen > KEEL_MAX_TYPE_LEN || idlen > KEEL_MAX_ID_LEN)
        return KEEL_ELIMIT;
    return (long)(8 + 1 + tlen + 2 + idlen);
}

size_t keel_from_size(size_t tlen, size_t idlen)
{
    return 8 + 1 + tlen + 2 + idlen;
}

size_t keel_from_encode(uint8_t *p, uint64_t seq, const void *type,
                        size_t tlen, const void *id, size_t idlen)
{
    put_be64(p, seq);
    p[8] = (uint8_t)tlen;
    memcpy(p + 9, type, tlen);
    put_be16(p + 9 + tlen, (uint16_t)idlen);
    if (idlen > 0)
        memcpy(p + 11 + tlen, id, idlen);
    return keel_from_size(tlen, idlen);
}

size_t keel_obatch_item_size(size_t ftlen, size_t fidlen, size_t tlen,
                             size_t idlen, size_t msglen)
{
    return KEEL_OBATCH_ITEM_HDR + keel_from_size(ftlen, fidlen) +
           keel_call_body_size(tlen, idlen, msglen);
}

size_t keel_obatch_item_encode(uint8_t *p, unsigned hops, uint64_t seq,
                               const void *ftype, size_t ftlen,
                               const void *fid, size_t fidlen,
                               const void *type, size_t tlen, const void *id,
                               size_t idlen, const void *msg, size_t msglen)
{
    size_t len = keel_obatch_item_size(ftlen, fidlen, tlen, idlen, msglen);
    uint8_t *q = p + KEEL_OBATCH_ITEM_HDR;

    p[0] = (uint8_t)(hops & KEEL_FLAG_HOPS);
    put_be32(p + 1, (uint32_t)(len - KEEL_OBATCH_ITEM_HDR));
    q += keel_from_encode(q, seq, ftype, ftlen, fid, fidlen);
    keel_call_body_encode(q, type, tlen, id, idlen, msg, msglen);
    return len;
}

int keel_obatch_head_parse(const uint8_t *body, size_t len, unsigned *count,
                           const uint8_t **items, size_t *items_len)
{
    unsigned c;

    if (len < KEEL_OBATCH_HEAD)
        return KEEL_EMALFORMED;
    c = get_be16(body);
    if (c == 0 || c > KEEL_OBATCH_MAX)
        return KEEL_EMALFORMED;
    *count = c;
    *items = body + KEEL_OBATCH_HEAD;
    *items_len = len - KEEL_OBATCH_HEAD;
    return 0;
}

int keel_obatch_item_next(const uint8_t **p, size_t *len,
                          keel_obatch_item *out)
{
    const uint8_t *b = *p;
    size_t ilen;
    long fl;

    if (*len < KEEL_OBATCH_ITEM_HDR)
        return KEEL_EMALFORMED;
    if (b[0] & ~KEEL_FLAG_HOPS)
        return KEEL_EMALFORMED;
    ilen = get_be32(b + 1);
    /* Compared without adding to ilen, which may be anything. */
    if (ilen > *len - KEEL_OBATCH_ITEM_HDR)
        return KEEL_EMALFORMED;
    b += KEEL_OBATCH_ITEM_HDR;
    fl = keel_from_parse(b, ilen, &out->from);
    if (fl < 0)
        return KEEL_EMALFORMED;
    if (keel_call_body_parse(b + fl, ilen - (size_t)fl, &out->call) != 0)
        return KEEL_EMALFORMED;
    out->hops = (*p)[0] & KEEL_FLAG_HOPS;
    *p = b + ilen;
    *len -= KEEL_OBATCH_ITEM_HDR + ilen;
    return 0;
}

int keel_obatch_check(const uint8_t *body, size_t len, unsigned *count)
{
    const uint8_t *p;
    size_t left;
    unsigned c, i;
    keel_obatch_item it;

    if (keel_obatch_head_parse(body, len, &c, &p, &left) != 0)
        return KEEL_EMALFORMED;
    for (i = 0; i < c; i++)
        if (keel_obatch_item_next(&p, &left, &it) != 0)
            return KEEL_EMALFORMED;
    if (left != 0)
        return KEEL_EMALFORMED;
    *count = c;
    return 0;
}

void keel_obatch_results_count(uint8_t *p, unsigned count)
{
    put_be16(p, (uint16_t)count);
}

size_t keel_obatch_result_encode(uint8_t *p, int status, const void *data,
                                 size_t len)
{
    put_be16(p, (uint16_t)(status < 0 ? -status : status));
    put_be32(p + 2, (uint32_t)len);
    if (len > 0)
        memcpy(p + KEEL_OBATCH_RESULT_HDR, data, len);
    return KEEL_OBATCH_RESULT_HDR + len;
}

int keel_obatch_results_parse(const uint8_t **p, size_t *len,
                              unsigned *count)
{
    if (*len < 2)
        return KEEL_EMALFORMED;
    *count = get_be16(*p);
    *p += 2;
    *len -= 2;
    return 0;
}

int keel_obatch_result_next(const uint8_t **p, size_t *len, int *status,
                            const uint8_t **data, size_t *dlen)
{
    size_t dl;

    if (*len < KEEL_OBATCH_RESULT_HDR)
        return KEEL_EMALFORMED;
    dl = get_be32(*p + 2);
    if (dl > *len - KEEL_OBATCH_RESULT_HDR)
        return KEEL_EMALFORMED;
    *status = -(int)get_be16(*p);
    *data = *p + KEEL_OBATCH_RESULT_HDR;
    *dlen = dl;
    *p += KEEL_OBATCH_RESULT_HDR + dl;
    *len -= KEEL_OBATCH_RESULT_HDR + dl;
    return 0;
}

void keel_deadline_put(uint8_t *p, uint32_t budget_ms)
{
    put_be32(p, budget_ms);
}

int keel_call_deadline_split(const keel_frame *f, uint32_t *budget_ms,
                             const uint8_t **body, size_t *len)
{
    if (!(f->flags & KEEL_FLAG_DEADLINE)) {
        *budget_ms = UINT32_MAX;
        *body = f->body;
        *len = f->body_len;
        return 0;
    }
    if (f->body_len < KEEL_DEADLINE_LEN)
        return KEEL_EMALFORMED;
    *budget_ms = get_be32(f->body);
    *body = f->body + KEEL_DEADLINE_LEN;
    *len = f->body_len - KEEL_DEADLINE_LEN;
    return 0;
}

int keel_xfer_head_parse(const uint8_t *body, size_t len,
                         keel_xfer_head *out)
{
    size_t clen;

    memset(out, 0, sizeof *out);
    if (len < 1)
        return KEEL_EMALFORMED;
    clen = body[0];
    if (len - 1 < clen + 15)
        return KEEL_EMALFORMED;
    out->cap = body + 1;
    out->clen = clen;
    out->shard = get_be16(body + 1 + clen);
    out->epoch = get_be64(body + 3 + clen);
    out->seq = get_be32(body + 11 + clen);
    out->last = body[15 + clen] & 1;
    out->keep = (body[15 + clen] >> 1) & 1;
    out->recs = body + 16 + clen;
    out->recs_len = len - 16 - clen;
    return 0;
}

/* ------------------------------------------------------------- REPL */

size_t keel_repl_head_encode(uint8_t *p, const void *from, size_t flen,
                             uint64_t stream, uint16_t nunits)
{
    p[0] = KEEL_REPL_VERSION;
    p[1] = (uint8_t)flen; /* node names are at most 64 bytes */
    copy_bytes(p + 2, from, flen);
    put_be64(p + 2 + flen, stream);
    put_be16(p + 10 + flen, nunits);
    return KEEL_REPL_HEAD_SIZE(flen);
}

size_t keel_repl_unit_encode(uint8_t *p, const void *cap, size_t clen,
                             uint32_t shard, uint64_t epoch, uint64_t seq,
                             uint32_t nops)
{
    p[0] = (uint8_t)clen;
    copy_bytes(p + 1, cap, clen);
    p += 1 + clen;
    put_be16(p, (uint16_t)shard);
    put_be64(p + 2, epoch);
    put_be64(p + 10, seq);
    put_be32(p + 18, nops);
    return KEEL_REPL_UNIT_SIZE(clen);
}

size_t keel_repl_op_size(int kind, size_t klen, size_t dlen)
{
    return 1 + 2 + klen +
           (kind == KEEL_REPL_PUT ? 8 + 4 + dlen
                                  : kind == KEEL_REPL_CHECK_UNIT ? 8 : 0);
}

size_t keel_repl_op_encode(uint8_t *p, int kind, const void *key,
                           size_t klen, uint64_t version, const void *data,
                           size_t dlen)
{
    uint8_t *q = p;

    *q++ = (uint8_t)kind;
    put_be16(q, (uint16_t)klen);
    q = copy_bytes(q + 2, key, klen);
    if (kind == KEEL_REPL_PUT) {
        put_be64(q, version);
        put_be32(q + 8, (uint32_t)dlen);
        q = copy_bytes(q + 12, data, dlen);
    } else if (kind == KEEL_REPL_CHECK_UNIT) {
        put_be64(q, version);
        q += 8;
    }
    return (size_t)(q - p);
}

int keel_repl_head_parse(const uint8_t *body, size_t len,
                         keel_repl_head *out)
{
    size_t flen;

    memset(out, 0, sizeof *out);
    if (len < 2)
        return KEEL_EMALFORMED;
    if (body[0] != KEEL_REPL_VERSION)
        return KEEL_EPROTO;
    flen = body[1];
    if (flen == 0 || len - 2 < flen + 10)
        return KEEL_EMALFORMED;
    out->from = body + 2;
    out->flen = flen;
    out->stream = get_be64(body + 2 + flen);
    out->nunits = get_be16(body + 10 + flen);
    out->units = body + 12 + flen;
    out->units_len = len - 12 - flen;
    return 0;
}

int keel_repl_op_next(const uint8_t **p, size_t *len, keel_repl_op *out)
{
    const uint8_t *q = *p;
    size_t n = *len, klen, used;

    memset(out, 0, sizeof *out);
    if (n < 3)
        return KEEL_EMALFORMED;
    out->kind = q[0];
    klen = get_be16(q + 1);
    if (out->kind < KEEL_REPL_PUT || out->kind > KEEL_REPL_CHECK_UNIT ||
        (out->kind == KEEL_REPL_DEL_UNIT || out->kind == KEEL_REPL_CHECK_UNIT
             ? klen != 0
             : klen < 2) ||
        n - 3 < klen)
        return KEEL_EMALFORMED;
    out->key = q + 3;
    out->klen = klen;
    used = 3 + klen;
    if (out->kind == KEEL_REPL_PUT) {
        uint64_t dlen;
        if (n - used < 12)
            return KEEL_EMALFORMED;
        out->version = get_be64(q + used);
        dlen = get_be32(q + used + 8);
        used += 12;
        if ((uint64_t)(n - used) < dlen)
            return KEEL_EMALFORMED;
        out->data = q + used;
        out->dlen = (size_t)dlen;
        used += (size_t)dlen;
    } else if (out->kind == KEEL_REPL_CHECK_UNIT) {
        if (n - used < 8)
            return KEEL_EMALFORMED;
        out->version = get_be64(q + used);
        used += 8;
    }
    *p = q + used;
    *len = n - used;
    return 0;
}

int keel_repl_unit_next(const uint8_t **p, size_t *len, keel_repl_unit *out)
{
    const uint8_t *q = *p, *ops;
    size_t n = *len, clen, rest;
    uint32_t i;

    memset(out, 0, sizeof *out);
    if (n < 1)
        return KEEL_EMALFORMED;
    clen = q[0];
    if (n - 1 < clen + 22)
        return KEEL_EMALFORMED;
    out->cap = q + 1;
    out->clen = clen;
    q += 1 + clen;
    out->shard = get_be16(q);
    out->epoch = get_be64(q + 2);
    out->seq = get_be64(q + 10);
    out->nops = get_be32(q + 18);
    ops = q + 22;
    rest = n - 1 - clen - 22;
    out->ops = ops;
    for (i = 0; i < out->nops; i++) {
        keel_repl_op op;
        if (keel_repl_op_next(&ops, &rest, &op) != 0)
            return KEEL_EMALFORMED;
    }
    out->ops_len = (size_t)(ops - out->ops);
    *p = ops;
    *len = rest;
    return 0;
}

void keel_repl_acks_count(uint8_t *p, uint16_t nunits)
{
    put_be16(p, nunits);
}

size_t keel_repl_ack_encode(uint8_t *p, const void *cap, size_t clen,
                            uint32_t shard, int status, uint64_t seq)
{
    long long mag = status < 0 ? -(long long)status : (long long)status;

    if (mag > 0xFFFF)
        mag = -(long long)KEEL_EPROTO;
    p[0] = (uint8_t)clen;
    copy_bytes(p + 1, cap, clen);
    p += 1 + clen;
    put_be16(p, (uint16_t)shard);
    put_be16(p + 2, (uint16_t)mag);
    put_be64(p + 4, seq);
    return KEEL_REPL_ACK_SIZE(clen);
}

int keel_repl_acks_parse(const uint8_t **p, size_t *len, uint16_t *nunits)
{
    if (*len < 2)
        return KEEL_EMALFORMED;
    *nunits = get_be16(*p);
    *p += 2;
    *len -= 2;
    return 0;
}

int keel_repl_ack_next(const uint8_t **p, size_t *len, keel_repl_ack *out)
{
    const uint8_t *q = *p;
    size_t n = *len, clen;

    memset(out, 0, sizeof *out);
    if (n < 1)
        return KEEL_EMALFORMED;
    clen = q[0];
    if (n - 1 < clen + 12)
        return KEEL_EMALFORMED;
    out->cap = q + 1;
    out->clen = clen;
    q += 1 + clen;
    out->shard = get_be16(q);
    out->status = -(int)get_be16(q + 2);
    out->seq = get_be64(q + 4);
    *p = q + 12;
    *len = n - 1 - clen - 12;
    return 0;
}

size_t keel_error_body_encode(uint8_t *buf, int code, const char *msg,
                              size_t msglen)
{
    /* The wire carries the magnitude; a positive code given by mistake
     * still goes out as the same error. */
    long long mag = code < 0 ? -(long long)code : (long long)code;

    if (mag > 0xFFFF)
        mag = -(long long)KEEL_EPROTO;
    put_be16(buf, (uint16_t)mag);
    return 2 + (size_t)(copy_bytes(buf + 2, msg, msglen) - (buf + 2));
}

int keel_error_body_parse(const uint8_t *body, size_t len, const char **msg,
                          size_t *msglen)
{
    unsigned mag;

    if (len < 2) {
        if (msg != NULL)
            *msg = "";
        if (msglen != NULL)
            *msglen = 0;
        return KEEL_EPROTO;
    }
    if (msg != NULL)
        *msg = (const char *)(body + 2);
    if (msglen != NULL)
        *msglen = len - 2;
    mag = get_be16(body);
    /* Code 0 would read as success to the caller, which an ERROR frame can
     * never mean. */
    if (mag == 0)
        return KEEL_EPROTO;
    return -(int)mag;
}

void keel_state_read_head(uint8_t *p, int has_blob, uint64_t version,
                          uint64_t entries)
{
    p[0] = has_blob ? KEEL_STATE_READ_BLOB : 0;
    put_be64(p + 1, version);
    put_be64(p + 9, entries);
}

void keel_reminders_entry_put(uint8_t *p, int64_t in_ms, uint64_t period_ms,
                              uint32_t msg_len, const void *name, size_t nlen)
{
    put_be64(p, (uint64_t)in_ms);
    put_be64(p + 8, period_ms);
    p[16] = (uint8_t)(msg_len >> 24);
    p[17] = (uint8_t)(msg_len >> 16);
    p[18] = (uint8_t)(msg_len >> 8);
    p[19] = (uint8_t)msg_len;
    p[20] = (uint8_t)nlen;
    memcpy(p + KEEL_REMINDERS_ENTRY_HDR, name, nlen);
}

long keel_reminders_entry_parse(const uint8_t *p, size_t len,
                                keel_reminder_entry *out)
{
    if (len < KEEL_REMINDERS_ENTRY_HDR || p[20] == 0 ||
        len - KEEL_REMINDERS_ENTRY_HDR < p[20])
        return KEEL_EMALFORMED;
    out->in_ms = (int64_t)get_be64(p);
    out->period_ms = get_be64(p + 8);
    out->msg_len = (uint32_t)p[16] << 24 | (uint32_t)p[17] << 16 |
                   (uint32_t)p[18] << 8 | p[19];
    out->name = (const char *)p + KEEL_REMINDERS_ENTRY_HDR;
    out->name_len = p[20];
    return KEEL_REMINDERS_ENTRY_HDR + (long)p[20];
}

size_t keel_dead_entry_size(const keel_dead_entry *e)
{
    return KEEL_DEAD_ENTRY_HDR + e->why_len + e->a_len + e->b_len +
           e->shown_len;
}

void keel_dead_entry_put(uint8_t *p, const keel_dead_entry *e)
{
    put_be64(p, e->number);
    p[8] = (uint8_t)e->kind;
    put_be16(p + 9, (uint16_t)-e->code);
    put_be16(p + 11, (uint16_t)e->attempts);
    put_be64(p + 13, e->at_ms);
    put_be16(p + 21, (uint16_t)e->why_len);
    p[23] = (uint8_t)e->a_len;
    put_be16(p + 24, (uint16_t)e->b_len);
    put_be32(p + 26, e->msg_len);
    put_be16(p + 30, (uint16_t)e->shown_len);
    p = copy_bytes(p + KEEL_DEAD_ENTRY_HDR, e->why, e->why_len);
    p = copy_bytes(p, e->a, e->a_len);
    p = copy_bytes(p, e->b, e->b_len);
    copy_bytes(p, e->shown, e->shown_len);
}

long keel_dead_entry_parse(const uint8_t *p, size_t len,
                           keel_dead_entry *out)
{
    size_t need;

    if (len < KEEL_DEAD_ENTRY_HDR)
        return KEEL_EMALFORMED;
    out->number = get_be64(p);
    out->kind = p[8];
    out->code = -(int)get_be16(p + 9);
    out->attempts = get_be16(p + 11);
    out->at_ms = get_be64(p + 13);
    out->why_len = get_be16(p + 21);
    out->a_len = p[23];
    out->b_len = get_be16(p + 24);
    out->msg_len = get_be32(p + 26);
    out->shown_len = get_be16(p + 30);
    need = KEEL_DEAD_ENTRY_HDR + out->why_len + out->a_len + out->b_len +
           out->shown_len;
    if (need > len || out->shown_len > out->msg_len ||
        (out->kind != 1 && out->kind != 2))
        return KEEL_EMALFORMED;
    out->why = (const char *)p + KEEL_DEAD_ENTRY_HDR;
    out->a = out->why + out->why_len;
    out->b = out->a + out->a_len;
    out->shown = (const uint8_t *)out->b + out->b_len;
    return (long)need;
}

static int msg_is(const uint8_t *msg, size_t len, const char *word,
                  size_t wlen, size_t extra)
{
    return len == wlen + extra && memcmp(msg, word, wlen) == 0;
}

int keel_read_msg_known(const uint8_t *msg, size_t len)
{
    return len == 0 ||
           msg_is(msg, len, KEEL_READ_REMINDERS, KEEL_READ_REMINDERS_LEN, 0) ||
           msg_is(msg, len, KEEL_DEAD_LIST, KEEL_DEAD_LIST_LEN, 8) ||
           msg_is(msg, len, KEEL_DEAD_RETRY, KEEL_DEAD_RETRY_LEN, 8) ||
           msg_is(msg, len, KEEL_DEAD_DROP, KEEL_DEAD_DROP_LEN, 8) ||
           msg_is(msg, len, KEEL_OB_WAITING, KEEL_OB_WAITING_LEN, 8) ||
           msg_is(msg, len, KEEL_OB_GIVE_UP, KEEL_OB_GIVE_UP_LEN, 8);
}

int keel_state_read_parse(const uint8_t *p, size_t len, keel_state_read *out)
{
    if (len < KEEL_STATE_READ_HDR || (p[0] & ~KEEL_STATE_READ_BLOB) != 0)
        return KEEL_EMALFORMED;
    out->has_blob = (p[0] & KEEL_STATE_READ_BLOB) != 0;
    out->version = get_be64(p + 1);
    out->entries = get_be64(p + 9);
    out->blob = p + KEEL_STATE_READ_HDR;
    out->blob_len = len - KEEL_STATE_READ_HDR;
    return 0;
}

/* ------------------------------------------------------------ follow */

int keel_subscribe_parse(const uint8_t *body, size_t len,
                         keel_call_body *out, uint64_t *since)
{
    int rc = keel_call_body_parse(body, len, out);

    *since = 0;
    if (rc == KEEL_EMALFORMED)
        return rc;
    if (out->msglen != KEEL_SUBSCRIBE_SINCE_LEN)
        return KEEL_EMALFORMED;
    *since = get_be64(out->msg);
    return rc; /* 0 or KEEL_ELIMIT */
}

size_t keel_subscribe_size(size_t tlen, size_t idlen)
{
    return keel_call_body_size(tlen, idlen, KEEL_SUBSCRIBE_SINCE_LEN);
}

size_t keel_subscribe_encode(uint8_t *buf, const void *type, size_t tlen,
                             const void *id, size_t idlen, uint64_t since)
{
    uint8_t v[KEEL_SUBSCRIBE_SINCE_LEN];

    put_be64(v, since);
    return keel_call_body_encode(buf, type, tlen, id, idlen, v, sizeof v);
}

void keel_event_head(uint8_t *p, int kind, uint64_t version)
{
    p[0] = (uint8_t)kind;
    put_be64(p + 1, version);
}

size_t keel_event_end_encode(uint8_t *p, uint64_t version, int code,
                             const char *msg, size_t msglen)
{
    keel_event_head(p, KEEL_EVENT_END, version);
    return KEEL_EVENT_HDR +
           keel_error_body_encode(p + KEEL_EVENT_HDR, code, msg, msglen);
}

int keel_event_parse(const uint8_t *p, size_t len, keel_event *out)
{
    memset(out, 0, sizeof *out);
    if (len < KEEL_EVENT_HDR)
        return KEEL_EMALFORMED;
    out->kind = p[0];
    out->version = get_be64(p + 1);
    if (out->kind == KEEL_EVENT_CHANGE) {
        out->data = p + KEEL_EVENT_HDR;
        out->data_len = len - KEEL_EVENT_HDR;
        return 0;
    }
    if (out->kind != KEEL_EVENT_END || len < KEEL_EVENT_HDR + 2)
        return KEEL_EMALFORMED;
    out->code = -(int)get_be16(p + KEEL_EVENT_HDR);
    if (out->code == 0)
        return KEEL_EMALFORMED;
    out->data = p + KEEL_EVENT_HDR + 2;
    out->data_len = len - KEEL_EVENT_HDR - 2;
    return 0;
}
