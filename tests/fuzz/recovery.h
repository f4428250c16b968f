/* The recovery harness shared by the fuzz_recovery_wal and
 * fuzz_recovery_ckpt targets, and by the seed generator.
 *
 * The template: a store that made RH_COMMITS commits after its last
 * checkpoint, copied while it was open, as a crash would leave it (every
 * commit durable: the log was flushed after each). It is built afresh by
 * each process (rh_template_get()), together with the store's state after
 * each of its commits, read through the store's own read API: these are
 * the legitimate states a recovery may end in. See recovery.c for the
 * commits and the properties checked. */
#ifndef KEEL_TESTS_FUZZ_RECOVERY_H
#define KEEL_TESTS_FUZZ_RECOVERY_H

#include <stddef.h>
#include <stdint.h>

#define RH_SHARDS 4
#define RH_COMMITS 8
/* Where keel.ckpt's second slot starts (persistence/wal.c). */
#define RH_CKPT_STRIDE (256u << 10)

typedef struct rh_bytes {
    uint8_t *p;
    size_t len;
} rh_bytes;

typedef struct rh_template {
    rh_bytes data_mdb; /* LMDB's file as the crash left it */
    rh_bytes wal;      /* keel.wal: the commits' records, then stale bytes */
    rh_bytes ckpt;     /* keel.ckpt: slot 0 (older) and slot 1 (newest) */
    /* Record k (0-based) of the log is wal[rec_off[k], rec_off[k + 1]). */
    size_t rec_off[RH_COMMITS + 1];
    /* The bytes of each checkpoint slot (header and meta pages). */
    rh_bytes slot[2];
    /* state[k]: the store's content after the first k commits. */
    rh_bytes state[RH_COMMITS + 1];
} rh_template;

/* Builds the template the first time (in a fresh temporary directory,
 * removed at exit); aborts when it cannot. */
const rh_template *rh_template_get(void);

/* Whether the recovery of this log (keel.wal) would meet a record that
 * passes the log's integrity check without being the template's own: a
 * forgery (the fuzzer's comparison tracing can compute a hash). */
/* The seed of a log's header, or 0 when it has no valid header. */
uint64_t rh_wal_seed(const uint8_t *wal, size_t len);
int rh_wal_forged(const uint8_t *wal, size_t len);
/* The version in the log's header (2: records with a hash of their own
 * header, wal.h), or 0 without a valid header. */
uint32_t rh_wal_version(const uint8_t *wal, size_t len);
/* The same for keel.ckpt: a slot that passes its check but holds bytes
 * the store never wrote. */
int rh_ckpt_forged(const uint8_t *ckpt, size_t len);

/* Recovers a copy of the template with keel.wal and keel.ckpt replaced
 * by the given bytes, and checks the properties (recovery.c). strict:
 * the opened state must be one of the template's states; otherwise only
 * that recovery is consistent with itself. */
void rh_recover(const uint8_t *wal, size_t wal_len, const uint8_t *ckpt,
                size_t ckpt_len, int strict);

#endif
