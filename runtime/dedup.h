/* Request keys: a retried request is answered with its first outcome.
 *
 * A client may tag a CALL or CAST with a 16-byte request key of its
 * choosing (docs/protocol.md). When the turn it starts succeeds, the
 * actor records the key and the reply in reserved entries of its own
 * storage, written in the same transaction as the turn's change (the
 * turn's only write when it changed nothing). A later request with the
 * same key, to the same actor, finds the record and is answered with the
 * recorded reply without running the handler again. Because the record
 * lives with the actor's state, it is exactly as durable, follows the
 * actor through handoffs, and survives restarts; a write refused or lost
 * takes its record with it.
 *
 * The window is a time: a record is kept for the node's retention
 * (keel_node_options.request_key_retention_ms) from the wall-clock time
 * of the write it came with, however many keyed writes the actor takes
 * meanwhile. Replies longer than KEEL_DEDUP_REPLY_MAX are not kept (a
 * retry learns that the request ran, not its reply). Turns that changed
 * nothing are recorded too: a copy that arrives after the client has its
 * answer (the original of a retry that ran first, held up by a
 * partition) would otherwise run on the state it finds then, and a
 * compare-and-set that failed could succeed. So are turns whose handler
 * refused the request with an answer (an error about the request or the
 * actor's state, keel_err_is_answer), with the error's code and text,
 * by a turn of their own that follows; errors about the node at the time
 * (ENOMEM, ENOSPC...) are not, and a retry runs again.
 *
 * An actor's records, each a reserved entry (entry keys that begin with a
 * NUL byte are the runtime's: keel_turn_get/put/del refuse them with
 * KEEL_EINVAL, keel_turn_entries does not list them):
 *
 *   "\0keel.rk/" key[16]   the record of a key (keel_dedup_rec)
 *   "\0keel.rq/" seq be64  the queue of records in the order they were
 *                          written: time be64 | key[16]
 *   "\0keel.rq"            first be64 | next be64: the queue's entries
 *                          are those from first up to next (excluded)
 *
 * A keyed write appends to the queue and forgets, from its front, the
 * records whose retention is over, a few per write: a lookup is one read
 * of the record's entry, and a write does a bounded amount of work.
 * The queue is only what to forget: a header missing or unreadable is
 * made again from the queue's entries, an unreadable entry dropped.
 *
 * Before the retention was a time, an actor kept its newest 32 records in
 * one entry, KEEL_DEDUP_ENTRY (the "table", format 1). Such a table is
 * still read, its records valid, until the actor's next keyed write moves
 * them to entries of their own.
 *
 * This file is the records' codec; runtime/node_keys.c applies it. */
#ifndef KEEL_RUNTIME_DEDUP_H
#define KEEL_RUNTIME_DEDUP_H

#include <stddef.h>
#include <stdint.h>

#include "keel.h"

#define KEEL_DEDUP_KEY_LEN KEEL_REQUEST_KEY_LEN
#define KEEL_DEDUP_REPLY_MAX 1024
/* A refusal's text is kept up to this many bytes (a turn's error text is
 * shorter). */
#define KEEL_DEDUP_ERR_TEXT_MAX (KEEL_DEDUP_REPLY_MAX - 4)
/* The default of keel_node_options.request_key_retention_ms: 10 minutes
 * (docs/protocol.md, "Request keys", says why). */
#define KEEL_DEDUP_RETENTION_MS 600000u
/* Records forgotten at most per keyed write. Above 1, so that forgetting
 * keeps up with any rate of keyed writes and catches up after a pause. */
#define KEEL_DEDUP_PRUNE_MAX 8

/* Entry keys (not NUL-terminated strings: sizeof - 1 is the length). */
#define KEEL_DEDUP_REC_PREFIX "\0keel.rk/"
#define KEEL_DEDUP_REC_PREFIX_LEN (sizeof KEEL_DEDUP_REC_PREFIX - 1)
#define KEEL_DEDUP_Q_PREFIX "\0keel.rq/"
#define KEEL_DEDUP_Q_PREFIX_LEN (sizeof KEEL_DEDUP_Q_PREFIX - 1)
#define KEEL_DEDUP_Q_HDR "\0keel.rq"
#define KEEL_DEDUP_Q_HDR_LEN (sizeof KEEL_DEDUP_Q_HDR - 1)
/* The table of the count window (read, then migrated and deleted). */
#define KEEL_DEDUP_ENTRY "\0keel.requests"
#define KEEL_DEDUP_ENTRY_LEN (sizeof KEEL_DEDUP_ENTRY - 1)

/* Sizes of the encoded values. */
#define KEEL_DEDUP_REC_HDR (1 + 8 + 8 + 8 + 1)
#define KEEL_DEDUP_REC_MAX (KEEL_DEDUP_REC_HDR + KEEL_DEDUP_REPLY_MAX)
#define KEEL_DEDUP_Q_LEN (8 + KEEL_DEDUP_KEY_LEN)
#define KEEL_DEDUP_Q_HDR_SIZE 16

/* A key's record:
 *   format u8 (2) | seq be64 | time be64 | request hash be64
 *   | flags u8 (bit 0: reply kept, bit 1: refused) | outcome
 * seq is its place in the queue, time the wall-clock ms of its write,
 * hash the request's (a retry must carry the same request). The outcome
 * of a request that succeeded is its reply (empty when not kept); of one
 * its handler refused (bit 1, with bit 0), the error: code be32 (a
 * negative KEEL_E* code) | its text. */
typedef struct keel_dedup_rec {
    uint64_t seq;
    uint64_t time_ms;
    uint64_t hash;
    int kept;             /* 0: the reply was too long to keep */
    int err;              /* 0, or the KEEL_E* code the request was refused
                           * with (kept then, reply its text) */
    const uint8_t *reply; /* points into the decoded value */
    size_t rlen;
} keel_dedup_rec;

/* A request key written as 2 * KEEL_DEDUP_KEY_LEN hex digits (either
 * case), as the CLI's --key and HTTP's Idempotency-Key take it: 0, or -1
 * when hex is anything else (key then undefined). */
int keel_dedup_key_parse(const char *hex, uint8_t *key);

/* Encodes rec into out (room for KEEL_DEDUP_REC_MAX bytes): its reply
 * only when kept, and then rec->rlen must be at most
 * KEEL_DEDUP_REPLY_MAX (KEEL_DEDUP_ERR_TEXT_MAX for a refusal's text,
 * rec->err < 0, kept set). Returns the length written. */
size_t keel_dedup_rec_encode(uint8_t *out, const keel_dedup_rec *rec);
/* Decodes v[0, len): 0, with rec's reply pointing into v, or
 * KEEL_ECORRUPT (rec then undefined). */
int keel_dedup_rec_decode(const uint8_t *v, size_t len, keel_dedup_rec *rec);

/* A queue entry's value, and the queue's header: encoders write exactly
 * KEEL_DEDUP_Q_LEN or KEEL_DEDUP_Q_HDR_SIZE bytes; decoders return 0 or
 * KEEL_ECORRUPT (a header's first above its next is corrupt too). */
void keel_dedup_q_encode(uint8_t *out, uint64_t time_ms, const uint8_t *key);
int keel_dedup_q_decode(const uint8_t *v, size_t len, uint64_t *time_ms,
                        const uint8_t **key);
void keel_dedup_hdr_encode(uint8_t *out, uint64_t first, uint64_t next);
int keel_dedup_hdr_decode(const uint8_t *v, size_t len, uint64_t *first,
                          uint64_t *next);

/* The table of the count window (format 1), oldest record first:
 *   format u8 (1) | record*
 *   record = key[16] | request hash be64 | flags u8 (bit 0: reply kept)
 *            | len be32 | reply
 * Looks key up in tab[0, len): 1 when found (the newest record of the
 * key), with rec's hash, kept and reply (pointing into tab; seq and
 * time_ms 0); 0 when absent; KEEL_ECORRUPT when the table does not
 * parse. */
int keel_dedup_table_find(const uint8_t *tab, size_t len, const uint8_t *key,
                          keel_dedup_rec *rec);
/* Calls fn for each record of the table, oldest first, with its key
 * (pointing into tab); stops at fn's first nonzero return, returned.
 * KEEL_ECORRUPT, and no call, when the table does not parse. */
typedef int (*keel_dedup_table_fn)(const uint8_t *key,
                                   const keel_dedup_rec *rec, void *data);
int keel_dedup_table_each(const uint8_t *tab, size_t len,
                          keel_dedup_table_fn fn, void *data);

#endif
