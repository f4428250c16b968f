/* Request keys: a retried request is answered with its first outcome.
 *
 * A client may tag a CALL or CAST with a 16-byte request key of its
 * choosing (docs/protocol.md). When the turn it starts succeeds and
 * changes the actor's state, the actor records the key and the reply in
 * a reserved entry of its own storage, written in the same transaction as
 * the change. A later request with the same key, to the same actor, finds
 * the record and is answered with the recorded reply without running the
 * handler again. Because the record lives with the actor's state, it is
 * exactly as durable, follows the actor through handoffs, and survives
 * restarts; a write refused or lost takes its record with it.
 *
 * The window is bounded per actor: the newest KEEL_DEDUP_MAX records, and
 * at most KEEL_DEDUP_TABLE_MAX bytes; replies longer than
 * KEEL_DEDUP_REPLY_MAX are not kept (a retry learns that the request ran,
 * not its reply). Turns that change nothing are not recorded: running them
 * again is harmless.
 *
 * This file is the record table's codec; runtime/node_keys.c applies it. */
#ifndef KEEL_RUNTIME_DEDUP_H
#define KEEL_RUNTIME_DEDUP_H

#include <stddef.h>
#include <stdint.h>

#include "keel.h"

#define KEEL_DEDUP_KEY_LEN KEEL_REQUEST_KEY_LEN
#define KEEL_DEDUP_MAX 32
#define KEEL_DEDUP_REPLY_MAX 1024
#define KEEL_DEDUP_TABLE_MAX 16384

/* The entry that holds an actor's records. Entry keys that begin with a
 * NUL byte are reserved for the runtime (keel_turn_get/put/del refuse
 * them with KEEL_EINVAL; keel_turn_entries does not list them). */
#define KEEL_DEDUP_ENTRY "\0keel.requests"
#define KEEL_DEDUP_ENTRY_LEN (sizeof KEEL_DEDUP_ENTRY - 1)

/* A request key written as 2 * KEEL_DEDUP_KEY_LEN hex digits (either
 * case), as the CLI's --key and HTTP's Idempotency-Key take it: 0, or -1
 * when hex is anything else (key then undefined). */
int keel_dedup_key_parse(const char *hex, uint8_t *key);

/* Looks key up in the table tab[0, len) (len 0: no table yet).
 * Returns 1 when found, with *hash (the recorded request's hash: a retry
 * must carry the same request), *kept (0: the reply was too long to keep)
 * and *reply / *rlen pointing into tab; 0 when absent; KEEL_ECORRUPT when
 * the table does not parse. */
int keel_dedup_find(const uint8_t *tab, size_t len, const uint8_t *key,
                    uint64_t *hash, int *kept, const uint8_t **reply,
                    size_t *rlen);

/* A new table: tab[0, len) with a record of key, the request's hash and
 * its reply appended, the oldest records dropped to stay within the
 * bounds. *out is malloc'd (caller frees). Returns 0, KEEL_ENOMEM, or
 * KEEL_ECORRUPT (tab does not parse; nothing allocated). */
int keel_dedup_add(const uint8_t *tab, size_t len, const uint8_t *key,
                   uint64_t hash, const void *reply, size_t rlen,
                   uint8_t **out, size_t *outlen);

#endif
