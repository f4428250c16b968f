/* Fuzz target: the wire protocol as a node reads it off a connection
 * (runtime/proto.c, and the record parser of XFER streams).
 *
 * Input: one byte choosing the receiver's max frame size (bits 0-1) and
 * whether the connection begins with the protocol hello (bit 2: then it
 * goes to keel_hello_parse first, and frames follow a valid one, as in
 * net.c; without it the bytes are frames from the start, so inputs that
 * predate the hello still reach the frame parser), then the bytes of a
 * connection. The stream is cut into frames the way net.c does it
 * (keel_frame_parse, with the exemptions of frame_limit: XFER and REPL
 * frames up to 64 MiB + 64 KiB, calls with a budget 4 bytes more), and
 * each frame's body goes to the parser of its kind, with the prefixes its
 * flags announce: CALL/CAST (budget if bit 4, request key if bit 6,
 * sender prefix if bit 7, then the call body, whose message a state read
 * (bit 5) checks against the requests a node knows), ERROR (code, message),
 * XFER (unit head, then records),
 * REPL (head, units, ops), REPLY (also read as a REPL's answer, per-unit
 * acks, which is what a primary does with it, as the answer to a state
 * read, as a list of reminders, and as a page of dead letters, which is
 * what keel dead-letters does with it), SUBSCRIBE (call
 * body with an 8-byte version), EVENT (change or end, as a client reads
 * it), OBATCH (budget, count, items; a REPLY is also read as its
 * answer) and INFO (the login query and its token).
 *
 * Properties, besides "no crash, no sanitizer report":
 *  - a frame is taken only whole: its size is 4 + its length field, within
 *    the buffer and the limit, and any shorter buffer asks for more bytes;
 *    its header is what keel_frame_header writes (plus the flags byte);
 *  - parsed parts lie inside the body, in order, and cover it exactly;
 *  - what parses re-encodes to the same bytes (call body, error body,
 *    XFER records, REPL units and ops, acks, state-read heads, reminder
 *    and dead-letter entries, OBATCH items, SUBSCRIBE bodies, event
 *    ends): one message, one encoding;
 *  - a hello is taken only whole, re-encodes with its flags to the same
 *    bytes, and anything that does not begin like one is refused;
 *  - the message of a state read (flags bit 5) is let through exactly
 *    when it is one of the requests docs/protocol.md lists;
 *  - error codes are the documented ones. */
#include <string.h>

#include "fuzz.h"
#include "persistence/store.h"
#include "runtime/auth.h"
#include "runtime/cluster_rt_int.h"
#include "runtime/proto.h"

static const size_t max_frames[4] = {KEEL_FRAME_MIN_MAX, 300, 4096,
                                     1u << 20};

/* net.c's frame_limit, for a node whose max frame is m. */
static size_t frame_limit(size_t m, const uint8_t *p, size_t avail)
{
    const size_t xfer_max = (size_t)KEEL_MAX_VALUE_LEN + (64u << 10);

    if (avail >= 5 &&
        (p[4] == KEEL_FRAME_XFER || p[4] == KEEL_FRAME_REPL) &&
        m < xfer_max)
        return xfer_max;
    if (avail >= 6 && (p[4] == KEEL_FRAME_CALL || p[4] == KEEL_FRAME_CAST) &&
        (p[5] & KEEL_FLAG_DEADLINE))
        return m + KEEL_DEADLINE_LEN;
    return m;
}

/* The message of a state read, which net.c lets through only when it is
 * a request the node knows: empty, "reminders", or a dead-letter request
 * (those of waiting outbox messages included) with its 8-byte number.
 * Said here again from docs/protocol.md, in its words, so that the two
 * must agree. */
static void check_read_msg(const uint8_t *msg, size_t len)
{
    static const struct {
        const char *word;
        size_t extra;
    } known[] = {{"reminders", 0},
                 {"dead-letters list", 8},
                 {"dead-letters retry", 8},
                 {"dead-letters drop", 8},
                 {"dead-letters waiting", 8},
                 {"dead-letters give-up", 8}};
    int want = len == 0;
    size_t i;

    for (i = 0; i < sizeof known / sizeof known[0]; i++) {
        size_t wl = strlen(known[i].word);
        if (len == wl + known[i].extra && memcmp(msg, known[i].word, wl) == 0)
            want = 1;
    }
    FUZZ_CHECK(!keel_read_msg_known(msg, len) == !want);
}

static void check_call(const keel_frame *f)
{
    const uint8_t *body;
    size_t len;
    uint32_t budget;
    keel_call_body cb;
    int rc;

    rc = keel_call_deadline_split(f, &budget, &body, &len);
    if (!(f->flags & KEEL_FLAG_DEADLINE)) {
        FUZZ_CHECK(rc == 0 && budget == UINT32_MAX && body == f->body &&
                   len == f->body_len);
    } else if (f->body_len < KEEL_DEADLINE_LEN) {
        FUZZ_CHECK(rc == KEEL_EMALFORMED);
        return;
    } else {
        FUZZ_CHECK(rc == 0 && body == f->body + KEEL_DEADLINE_LEN &&
                   len == f->body_len - KEEL_DEADLINE_LEN);
        FUZZ_CHECK(budget == ((uint32_t)f->body[0] << 24 |
                              (uint32_t)f->body[1] << 16 |
                              (uint32_t)f->body[2] << 8 | f->body[3]));
    }
    /* The request key, as net.c's handle_call takes it off. */
    if (f->flags & KEEL_FLAG_KEYED) {
        if (len < KEEL_REQUEST_KEY_LEN)
            return; /* answered EMALFORMED there */
        body += KEEL_REQUEST_KEY_LEN;
        len -= KEEL_REQUEST_KEY_LEN;
    }
    /* The sender of an outbox message, as handle_call takes it off. */
    if (f->flags & KEEL_FLAG_FROM) {
        keel_from from;
        long fl = keel_from_parse(body, len, &from);
        FUZZ_CHECK(fl > 0 || fl == KEEL_EMALFORMED || fl == KEEL_ELIMIT);
        if (fl < 0)
            return;
        FUZZ_CHECK((size_t)fl <= len && from.seq != 0 && from.tlen > 0);
        FUZZ_CHECK(from.type == body + 9 && from.id == from.type +
                                                      from.tlen + 2);
        FUZZ_CHECK(from.id + from.idlen == body + fl);
        {
            uint8_t *buf = malloc((size_t)fl);
            FUZZ_CHECK(buf != NULL);
            FUZZ_CHECK(keel_from_encode(buf, from.seq, from.type, from.tlen,
                                        from.id, from.idlen) == (size_t)fl);
            FUZZ_CHECK(memcmp(buf, body, (size_t)fl) == 0);
            free(buf);
        }
        body += fl;
        len -= (size_t)fl;
    }
    rc = keel_call_body_parse(body, len, &cb);
    FUZZ_CHECK(rc == 0 || rc == KEEL_EMALFORMED || rc == KEEL_ELIMIT);
    if (rc == KEEL_EMALFORMED)
        return;
    /* Well formed (over a limit or not): the parts tile the body. */
    FUZZ_CHECK(cb.tlen == body[0] && cb.tlen > 0 && cb.type == body + 1);
    FUZZ_CHECK(cb.id == cb.type + cb.tlen + 2);
    FUZZ_CHECK(cb.idlen == ((size_t)cb.type[cb.tlen] << 8 |
                            cb.type[cb.tlen + 1]));
    FUZZ_CHECK(cb.msg == cb.id + cb.idlen);
    FUZZ_CHECK(cb.msg + cb.msglen == body + len);
    FUZZ_CHECK((rc == KEEL_ELIMIT) == (cb.tlen > KEEL_MAX_TYPE_LEN ||
                                      cb.idlen > KEEL_MAX_ID_LEN));
    if (rc == 0 && (f->flags & KEEL_FLAG_READ))
        check_read_msg(cb.msg, cb.msglen);
    if (rc == 0) {
        size_t n = keel_call_body_size(cb.tlen, cb.idlen, cb.msglen);
        uint8_t *buf = malloc(n + 1);
        FUZZ_CHECK(buf != NULL && n == len);
        FUZZ_CHECK(keel_call_body_encode(buf, cb.type, cb.tlen, cb.id,
                                         cb.idlen, cb.msg, cb.msglen) == n);
        FUZZ_CHECK(memcmp(buf, body, n) == 0);
        free(buf);
    }
}

static void check_error(const keel_frame *f)
{
    const char *msg = NULL;
    size_t msglen = 0, n;
    int rc = keel_error_body_parse(f->body, f->body_len, &msg, &msglen);
    unsigned code;
    uint8_t *buf;

    FUZZ_CHECK(rc < 0);
    if (f->body_len < 2) {
        FUZZ_CHECK(rc == KEEL_EPROTO && msglen == 0);
        return;
    }
    FUZZ_CHECK(msg == (const char *)f->body + 2 && msglen == f->body_len - 2);
    code = (unsigned)f->body[0] << 8 | f->body[1];
    FUZZ_CHECK(code == 0 ? rc == KEEL_EPROTO : rc == -(int)code);
    if (code == 0)
        return;
    buf = malloc(f->body_len);
    FUZZ_CHECK(buf != NULL);
    n = keel_error_body_encode(buf, rc, msg, msglen);
    FUZZ_CHECK(n == f->body_len && memcmp(buf, f->body, n) == 0);
    free(buf);
}

static void check_xfer(const keel_frame *f)
{
    keel_xfer_head h;
    size_t off = 0, out_len = 0;
    uint8_t *out;
    int rc = keel_xfer_head_parse(f->body, f->body_len, &h);

    if (f->body_len < 16 || f->body_len < 16u + f->body[0]) {
        FUZZ_CHECK(rc == KEEL_EMALFORMED);
        return;
    }
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(h.clen == f->body[0] && h.cap == f->body + 1);
    FUZZ_CHECK(h.recs == f->body + 16 + h.clen &&
               h.recs + h.recs_len == f->body + f->body_len);
    FUZZ_CHECK(h.shard <= 0xFFFF && (h.last == 0 || h.last == 1) &&
               h.keep == ((f->body[15 + h.clen] >> 1) & 1));
    /* The records, as the receiver validates them before keeping any,
     * written out again as the sender writes them. */
    out = malloc(h.recs_len + 1);
    FUZZ_CHECK(out != NULL);
    while (off < h.recs_len) {
        const uint8_t *key, *val;
        size_t klen, vlen, prev = off;
        uint64_t version;
        keel_key_parts parts;

        if (rt_rec_next(h.recs, h.recs_len, &off, &key, &klen, &version,
                        &val, &vlen) != 0) {
            FUZZ_CHECK(off == prev);
            break;
        }
        FUZZ_CHECK(off > prev && off <= h.recs_len);
        FUZZ_CHECK(klen > 0 && klen <= KEEL_KEY_MAX);
        FUZZ_CHECK(key == h.recs + prev + 2 && val == key + klen + 12 &&
                   val + vlen == h.recs + off);
        /* Keys are state keys: their decoder must cope with any. */
        (void)keel_key_decode(key, klen, &parts);
        rt_put_be(out + out_len, klen, 2);
        memcpy(out + out_len + 2, key, klen);
        rt_put_be(out + out_len + 2 + klen, version, 8);
        rt_put_be(out + out_len + 10 + klen, vlen, 4);
        if (vlen > 0)
            memcpy(out + out_len + 14 + klen, val, vlen);
        out_len += 14 + klen + vlen;
    }
    FUZZ_CHECK(out_len == off && memcmp(out, h.recs, out_len) == 0);
    free(out);
}

/* A REPL body as a backup reads it, written out again as the primary
 * writes it. */
static void check_repl(const keel_frame *f)
{
    keel_repl_head h;
    const uint8_t *p;
    size_t rest, out_len;
    uint8_t *out;
    unsigned i;
    int rc = keel_repl_head_parse(f->body, f->body_len, &h);

    if (rc != 0) {
        FUZZ_CHECK(rc == KEEL_EMALFORMED || rc == KEEL_EPROTO);
        FUZZ_CHECK((rc == KEEL_EPROTO) ==
                   (f->body_len >= 2 && f->body[0] != KEEL_REPL_VERSION));
        return;
    }
    FUZZ_CHECK(h.flen > 0 && h.from == f->body + 2 &&
               h.units + h.units_len == f->body + f->body_len);
    out = malloc(f->body_len + 1);
    FUZZ_CHECK(out != NULL);
    out_len = keel_repl_head_encode(out, h.from, h.flen, h.stream,
                                    h.nunits);
    FUZZ_CHECK(out_len == (size_t)(h.units - f->body));
    p = h.units;
    rest = h.units_len;
    for (i = 0; i < h.nunits; i++) {
        keel_repl_unit u;
        const uint8_t *ops, *prev = p;
        size_t olen;
        uint32_t k;

        if (keel_repl_unit_next(&p, &rest, &u) != 0)
            break;
        FUZZ_CHECK(u.cap == prev + 1 && u.ops + u.ops_len == p &&
                   p + rest == f->body + f->body_len);
        out_len += keel_repl_unit_encode(out + out_len, u.cap, u.clen,
                                         u.shard, u.epoch, u.seq, u.nops);
        ops = u.ops;
        olen = u.ops_len;
        for (k = 0; k < u.nops; k++) {
            keel_repl_op op;
            FUZZ_CHECK(keel_repl_op_next(&ops, &olen, &op) == 0);
            /* A key of two bytes at least, but for the unit's deletion
             * and check, which have none. */
            FUZZ_CHECK(op.kind >= KEEL_REPL_PUT &&
                       op.kind <= KEEL_REPL_CHECK_UNIT &&
                       (op.kind == KEEL_REPL_DEL_UNIT ||
                                op.kind == KEEL_REPL_CHECK_UNIT
                            ? op.klen == 0
                            : op.klen >= 2));
            FUZZ_CHECK(keel_repl_op_size(op.kind, op.klen, op.dlen) ==
                       (size_t)(ops - op.key) + 3);
            out_len += keel_repl_op_encode(out + out_len, op.kind, op.key,
                                           op.klen, op.version, op.data,
                                           op.dlen);
        }
        FUZZ_CHECK(olen == 0 && ops == p);
    }
    FUZZ_CHECK(out_len == (size_t)(p - f->body) &&
               memcmp(out, f->body, out_len) == 0);
    free(out);
}

/* A REPLY read as a REPL's answer, written out again. */
static void check_acks(const keel_frame *f)
{
    const uint8_t *p = f->body;
    size_t rest = f->body_len, out_len = 2;
    uint16_t n = 0;
    uint8_t *out;
    unsigned i;

    if (keel_repl_acks_parse(&p, &rest, &n) != 0) {
        FUZZ_CHECK(f->body_len < 2);
        return;
    }
    out = malloc(f->body_len + 1);
    FUZZ_CHECK(out != NULL);
    keel_repl_acks_count(out, n);
    for (i = 0; i < n; i++) {
        keel_repl_ack a;
        if (keel_repl_ack_next(&p, &rest, &a) != 0)
            break;
        FUZZ_CHECK(a.status <= 0 && a.status >= -0xFFFF);
        out_len += keel_repl_ack_encode(out + out_len, a.cap, a.clen, a.shard,
                                        a.status, a.seq);
    }
    FUZZ_CHECK(out_len == (size_t)(p - f->body) &&
               memcmp(out, f->body, out_len) == 0);
    free(out);
}

/* A REPLY read as the answer to a state read, as keel-cli, the HTTP
 * gateway and a follower read it: refused exactly when shorter than the
 * head or with unknown flags, and otherwise the head written out again
 * and the blob make up the body. */
static void check_state_read(const keel_frame *f)
{
    keel_state_read sr;
    uint8_t head[KEEL_STATE_READ_HDR];
    int rc = keel_state_read_parse(f->body, f->body_len, &sr);

    FUZZ_CHECK(rc == 0 || rc == KEEL_EMALFORMED);
    FUZZ_CHECK((rc != 0) ==
               (f->body_len < KEEL_STATE_READ_HDR ||
                (f->body[0] & ~KEEL_STATE_READ_BLOB) != 0));
    if (rc != 0)
        return;
    FUZZ_CHECK(sr.blob == f->body + KEEL_STATE_READ_HDR &&
               sr.blob + sr.blob_len == f->body + f->body_len);
    keel_state_read_head(head, sr.has_blob, sr.version, sr.entries);
    FUZZ_CHECK(memcmp(head, f->body, KEEL_STATE_READ_HDR) == 0);
}

/* A REPLY read as a list of reminders, as keel-cli reads it: each entry
 * that parses lies inside the body, has a name, and writes out again to
 * the same bytes. */
static void check_reminders(const keel_frame *f)
{
    const uint8_t *p = f->body;
    size_t rest = f->body_len;

    while (rest > 0) {
        keel_reminder_entry e;
        uint8_t out[KEEL_REMINDERS_ENTRY_HDR + 255];
        long k = keel_reminders_entry_parse(p, rest, &e);
        if (k < 0) {
            FUZZ_CHECK(k == KEEL_EMALFORMED);
            return;
        }
        FUZZ_CHECK((size_t)k <= rest && e.name_len > 0 &&
                   (size_t)k == KEEL_REMINDERS_ENTRY_HDR + e.name_len);
        FUZZ_CHECK(e.name == (const char *)p + KEEL_REMINDERS_ENTRY_HDR);
        keel_reminders_entry_put(out, e.in_ms, e.period_ms, e.msg_len, e.name,
                                 e.name_len);
        FUZZ_CHECK(memcmp(out, p, (size_t)k) == 0);
        p += k;
        rest -= (size_t)k;
    }
}

/* A REPLY read as a page of dead letters (held, then entries), as keel
 * dead-letters reads it: each entry that parses lies inside the body and
 * writes out again to the same bytes. */
static void check_dead_list(const keel_frame *f)
{
    const uint8_t *p = f->body + 8;
    size_t rest = f->body_len - 8;

    if (f->body_len < 8)
        return;
    while (rest > 0) {
        keel_dead_entry e;
        uint8_t *out;
        long k = keel_dead_entry_parse(p, rest, &e);
        if (k < 0) {
            FUZZ_CHECK(k == KEEL_EMALFORMED);
            return;
        }
        FUZZ_CHECK((size_t)k <= rest && (size_t)k >= KEEL_DEAD_ENTRY_HDR);
        FUZZ_CHECK(keel_dead_entry_size(&e) == (size_t)k);
        FUZZ_CHECK(e.shown_len <= e.msg_len);
        out = malloc((size_t)k);
        FUZZ_CHECK(out != NULL);
        keel_dead_entry_put(out, &e);
        FUZZ_CHECK(memcmp(out, p, (size_t)k) == 0);
        free(out);
        p += k;
        rest -= (size_t)k;
    }
}

/* SUBSCRIBE: a call body whose message is the 8-byte version. */
static void check_subscribe(const keel_frame *f)
{
    keel_call_body cb;
    uint64_t since;
    int rc = keel_subscribe_parse(f->body, f->body_len, &cb, &since);

    FUZZ_CHECK(rc == 0 || rc == KEEL_EMALFORMED || rc == KEEL_ELIMIT);
    if (rc == KEEL_EMALFORMED)
        return;
    FUZZ_CHECK(cb.msglen == KEEL_SUBSCRIBE_SINCE_LEN &&
               cb.msg + cb.msglen == f->body + f->body_len);
    {
        size_t n = keel_subscribe_size(cb.tlen, cb.idlen);
        uint8_t *buf = malloc(n);
        FUZZ_CHECK(buf != NULL && n == f->body_len);
        FUZZ_CHECK(keel_subscribe_encode(buf, cb.type, cb.tlen, cb.id,
                                         cb.idlen, since) == n);
        FUZZ_CHECK(memcmp(buf, f->body, n) == 0);
        free(buf);
    }
}

/* EVENT: a change (version, state) or an end (version, code, reason). */
static void check_event(const keel_frame *f)
{
    keel_event ev;
    int rc = keel_event_parse(f->body, f->body_len, &ev);

    FUZZ_CHECK(rc == 0 || rc == KEEL_EMALFORMED);
    if (rc != 0)
        return;
    FUZZ_CHECK(ev.kind == KEEL_EVENT_CHANGE || ev.kind == KEEL_EVENT_END);
    FUZZ_CHECK(ev.data + ev.data_len == f->body + f->body_len);
    if (ev.kind == KEEL_EVENT_END) {
        uint8_t *buf = malloc(f->body_len);
        FUZZ_CHECK(ev.code < 0 && ev.code >= -0xFFFF);
        FUZZ_CHECK(buf != NULL);
        FUZZ_CHECK(keel_event_end_encode(buf, ev.version, ev.code,
                                         (const char *)ev.data,
                                         ev.data_len) == f->body_len);
        FUZZ_CHECK(memcmp(buf, f->body, f->body_len) == 0);
        free(buf);
    } else {
        uint8_t head[KEEL_EVENT_HDR];
        keel_event_head(head, KEEL_EVENT_CHANGE, ev.version);
        FUZZ_CHECK(memcmp(head, f->body, KEEL_EVENT_HDR) == 0);
    }
}

/* OBATCH: the budget its flags announce, then the count and items; each
 * item re-encodes to its bytes, and the items cover the body. */
static void check_obatch(const keel_frame *f)
{
    const uint8_t *body, *p;
    size_t len, left;
    uint32_t budget;
    unsigned count, i;
    int rc;

    if (keel_call_deadline_split(f, &budget, &body, &len) != 0)
        return;
    rc = keel_obatch_check(body, len, &count);
    FUZZ_CHECK(rc == 0 || rc == KEEL_EMALFORMED);
    if (rc != 0)
        return;
    FUZZ_CHECK(count >= 1 && count <= KEEL_OBATCH_MAX);
    FUZZ_CHECK(keel_obatch_head_parse(body, len, &count, &p, &left) == 0);
    for (i = 0; i < count; i++) {
        const uint8_t *at = p;
        keel_obatch_item it;
        size_t n;
        uint8_t *buf;
        FUZZ_CHECK(keel_obatch_item_next(&p, &left, &it) == 0);
        n = keel_obatch_item_size(it.from.tlen, it.from.idlen, it.call.tlen,
                                  it.call.idlen, it.call.msglen);
        FUZZ_CHECK(n == (size_t)(p - at));
        buf = malloc(n);
        FUZZ_CHECK(buf != NULL);
        FUZZ_CHECK(keel_obatch_item_encode(
                       buf, it.hops, it.from.seq, it.from.type, it.from.tlen,
                       it.from.id, it.from.idlen, it.call.type, it.call.tlen,
                       it.call.id, it.call.idlen, it.call.msg,
                       it.call.msglen) == n);
        FUZZ_CHECK(memcmp(buf, at, n) == 0);
        free(buf);
    }
    FUZZ_CHECK(left == 0 && p == body + len);
}

/* A REPLY read as an OBATCH's answer, as a sender reads it: results stay
 * inside the body. */
static void check_obatch_results(const keel_frame *f)
{
    const uint8_t *p = f->body, *d;
    size_t left = f->body_len, dl;
    unsigned count, i;
    int st;

    if (keel_obatch_results_parse(&p, &left, &count) != 0)
        return;
    for (i = 0; i < count; i++) {
        if (keel_obatch_result_next(&p, &left, &st, &d, &dl) != 0)
            return;
        FUZZ_CHECK(st <= 0 && st >= -0xFFFF);
        FUZZ_CHECK(d >= f->body && d + dl <= f->body + f->body_len);
    }
}

/* INFO: whether it is the login query "auth" (net.c asks before the
 * token check), and the token it carries, the rest of the body. The
 * other queries need a running node (runtime/info.c). */
static void check_info(const keel_frame *f)
{
    const uint8_t *tok = NULL;
    size_t tlen = 0;
    int login = keel__auth_is_login(f, &tok, &tlen);
    int want = f->body_len >= 4 && memcmp(f->body, "auth", 4) == 0 &&
               (f->body_len == 4 || f->body[4] == '\0');

    FUZZ_CHECK(!login == !want);
    if (login)
        FUZZ_CHECK(tok + tlen == f->body + f->body_len &&
                   tlen == (f->body_len > 5 ? f->body_len - 5 : 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t max_frame, off = 0;

    if (size < 1)
        return 0;
    max_frame = max_frames[data[0] & 3];
    if (data[0] & 4) {
        unsigned version;
        long h = keel_hello_parse(data + 1, size - 1, &version);
        uint8_t again[KEEL_HELLO_LEN];

        FUZZ_CHECK(h == 0 || h == KEEL_HELLO_LEN || h == KEEL_EPROTO);
        if (h == 0)
            FUZZ_CHECK(size - 1 < KEEL_HELLO_LEN);
        if (h != KEEL_HELLO_LEN)
            return 0; /* refused, or more bytes needed */
        FUZZ_CHECK(version == data[5]);
        /* Flags a node does not know are kept, not refused: the hello
         * with the flags it read is the one it was sent. */
        keel_hello_encode_flags(again, version, keel_hello_flags(data + 1));
        FUZZ_CHECK(memcmp(again, data + 1, KEEL_HELLO_LEN) == 0);
        if (data[6] == 0) {
            keel_hello_encode(again, version);
            FUZZ_CHECK(memcmp(again, data + 1, KEEL_HELLO_LEN) == 0);
        }
        off = KEEL_HELLO_LEN;
    }
    data++;
    size--;
    while (off < size) {
        const uint8_t *p = data + off;
        size_t avail = size - off, limit = frame_limit(max_frame, p, avail);
        keel_frame f;
        long r = keel_frame_parse(p, avail, limit, &f);
        uint64_t total;
        uint8_t hdr[KEEL_FRAME_HEADER];

        if (avail >= KEEL_FRAME_HEADER) {
            FUZZ_CHECK(f.kind == p[4] && f.flags == p[5]);
        }
        if (r == 0) {
            /* Only ever for want of bytes. */
            total = avail >= 4 ? 4 + ((uint64_t)p[0] << 24 |
                                      (uint64_t)p[1] << 16 |
                                      (uint64_t)p[2] << 8 | p[3])
                               : 0;
            FUZZ_CHECK(avail < KEEL_FRAME_HEADER || avail < total);
            break;
        }
        if (r < 0) {
            /* The connection closes here. */
            FUZZ_CHECK(r == KEEL_ETOOBIG || r == KEEL_EMALFORMED);
            break;
        }
        total = 4 + ((uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 |
                     (uint64_t)p[2] << 8 | p[3]);
        FUZZ_CHECK((uint64_t)r == total && (size_t)r <= avail &&
                   (size_t)r <= limit && r >= KEEL_FRAME_HEADER);
        FUZZ_CHECK(f.kind >= KEEL_FRAME_CALL &&
                   f.kind <= KEEL_FRAME_KIND_MAX);
        FUZZ_CHECK(f.body == p + KEEL_FRAME_HEADER &&
                   f.body_len == (size_t)r - KEEL_FRAME_HEADER);
        keel_frame_header(hdr, f.kind, f.request_id, f.body_len);
        hdr[5] = f.flags;
        FUZZ_CHECK(memcmp(hdr, p, KEEL_FRAME_HEADER) == 0);
        {
            /* A frame is never complete before its last byte. */
            keel_frame g;
            FUZZ_CHECK(keel_frame_parse(p, (size_t)r - 1, limit, &g) == 0);
        }
        switch (f.kind) {
        case KEEL_FRAME_CALL:
        case KEEL_FRAME_CAST:
            check_call(&f);
            break;
        case KEEL_FRAME_ERROR:
            check_error(&f);
            break;
        case KEEL_FRAME_XFER:
            check_xfer(&f);
            break;
        case KEEL_FRAME_REPL:
            check_repl(&f);
            break;
        case KEEL_FRAME_REPLY:
            check_acks(&f);
            check_state_read(&f);
            check_reminders(&f);
            check_dead_list(&f);
            check_obatch_results(&f);
            break;
        case KEEL_FRAME_OBATCH:
            check_obatch(&f);
            break;
        case KEEL_FRAME_SUBSCRIBE:
            check_subscribe(&f);
            break;
        case KEEL_FRAME_EVENT:
            check_event(&f);
            break;
        case KEEL_FRAME_INFO:
            check_info(&f);
            break;
        default:
            /* PONG: bytes for the caller; STAT: ignored; PING:
             * echoed. */
            break;
        }
        off += (size_t)r;
    }
    return 0;
}
