/* The LMDB store: one environment per node, three named databases.
 *
 *   state  key  shard be16 | len(type) u8 | type | len(id) be16 | id | entry
 *          val  version be64 | epoch be64 | bytes
 *          The empty entry is the actor's state blob; a named entry is one
 *          record of the actor's own key-value storage. One actor is one
 *          contiguous key range, and so is one shard.
 *   fence  key  len(cap) u8 | cap | shard be16     (cap "" = default group)
 *          val  epoch be64 — the highest shard_epoch ever written for the
 *          placement unit (capability, shard)
 *   types  key  type            val  capability (TT_UNKNOWN_MARK: unknown)
 *          The capability whose unit a type's records belong to, recorded
 *          in the transaction that writes the type's first record (see
 *          persistence/typetab.h). Which unit a record belongs to is
 *          therefore the store's to say, not the loaded types'.
 *   meta   "format" -> be32 KEEL_STORE_FORMAT, "shards" -> be32 shard count,
 *          "store_id" -> 16 random bytes written when the store is made,
 *          "cluster", "node" -> the cluster and node it was made for (only
 *          when opened with them),
 *          "run" -> be64 the times the store was opened (keel_store_run),
 *          "stale" -> be64 the run at which its owner found the directory
 *          to be an older copy of itself (keel_store_mark_stale)
 *
 * This module knows nothing of the network or of ZooKeeper.
 *
 * Threads: reads (keel_store_read_*) happen on one thread at a time per
 * keel_store_read handle (the loop thread); commits happen on the writer
 * thread (keel_writer) or, without a writer, on the caller's thread. The
 * map may grow during a commit: growth waits until no read is open, so
 * reads must be short (begin, look up, copy, end) and never span an event
 * loop iteration.
 */
#ifndef KEEL_PERSISTENCE_STORE_H
#define KEEL_PERSISTENCE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "keel.h"

/* 2: the log (keel.wal) and checkpoint (keel.ckpt) beside LMDB.
 * 3: the type table and the store's identity. */
#define KEEL_STORE_FORMAT 3u
#define KEEL_STORE_ID_LEN 16
/* Largest encoded state key: 2 + 1 + 64 + 2 + 255 + 180 = 504 <= 511. */
#define KEEL_KEY_MAX                                                         \
    (2 + 1 + KEEL_MAX_TYPE_LEN + 2 + KEEL_MAX_ID_LEN + KEEL_MAX_ENTRY_KEY_LEN)
#define KEEL_FENCE_KEY_MAX (1 + 255 + 2)
#define KEEL_RECORD_HEADER 16 /* version be64 | epoch be64 */

typedef struct keel_store keel_store;
typedef struct keel_store_read keel_store_read;
typedef struct keel_batch keel_batch;

typedef struct keel_store_options {
    const char *path;          /* directory; created (mode 0700) if missing */
    uint32_t shard_count;      /* recorded on creation; must match after.
                                * 0: the count the directory records, or
                                * KEEL_DEFAULT_SHARDS for a new one */
    int durability;            /* enum keel_durability */
    uint64_t initial_map_size; /* 0: 64 MiB */
    uint64_t max_map_size;     /* 0: no limit but the disk's */
    /* The cluster and node the store serves. A store records them the
     * first time it is opened with them, and refuses (KEEL_EMISMATCH) to
     * open for another cluster or node: its fences and records mean
     * nothing there. NULL: not checked (standalone, tools). */
    const char *cluster;
    const char *node;
    /* What the store does when recovery finds damage it cannot repair
     * without losing acknowledged writes (a damaged record in the middle
     * of the log, a damaged newest checkpoint whose predecessor's pages
     * may have been reused): 0 refuses to open (KEEL_ECORRUPT, with the
     * file and offset in errbuf); nonzero opens at the last good state it
     * can reach and logs what it dropped. See docs/operations.md. */
    int recover_to_last_good;
    /* Nonzero: the store takes a new random identity at this open (in
     * the open's transaction; its run counter goes on). Whoever knew the
     * directory by its old identity sees another store from then on. */
    int new_store_id;
    /* Longest time between checkpoints while commits come; 0: 1000 ms. */
    uint32_t checkpoint_interval_ms;
} keel_store_options;

/* --------------------------------------------------------------- keys */

/* Encodes a state key into buf (KEEL_KEY_MAX bytes). entry may be NULL
 * with elen 0 (the state blob). Returns the length, or KEEL_ELIMIT when a
 * part is over its limit, KEEL_EINVAL for an empty type. */
int keel_key_encode(uint8_t *buf, uint16_t shard, const void *type,
                    size_t tlen, const void *id, size_t idlen,
                    const void *entry, size_t elen);
/* Length of the actor prefix (everything before entry) of an encoded key,
 * or KEEL_EMALFORMED. */
int keel_key_prefix_len(const uint8_t *key, size_t klen);
/* Splits an encoded key; pointers point into key. KEEL_EMALFORMED. */
typedef struct keel_key_parts {
    uint16_t shard;
    const uint8_t *type;
    size_t tlen;
    const uint8_t *id;
    size_t idlen;
    const uint8_t *entry;
    size_t elen;
} keel_key_parts;
int keel_key_decode(const uint8_t *key, size_t klen, keel_key_parts *out);
/* Just the actor type of a state key (*type points into key): 0, or -1
 * when the key does not parse that far. For hot loops that need nothing
 * else of the key. */
int keel_key_type(const uint8_t *key, size_t klen, const uint8_t **type,
                  size_t *tlen);

/* --------------------------------------------------------------- store */

/* Opens or creates the store. Errors: KEEL_EINVAL, KEEL_ENOMEM, KEEL_EIO
 * (directory cannot be made or opened, permission), KEEL_EMISMATCH (other
 * shard count or format), KEEL_ECORRUPT, KEEL_ESTORE. errbuf gets a
 * message naming the path and the cause. */
int keel_store_open(const keel_store_options *opts, keel_store **out,
                    char *errbuf, size_t errlen);
/* Closes; no read or commit may be running. */
void keel_store_close(keel_store *s);
/* The store's identity: 16 random bytes written when its directory was
 * made (or when a store of an older format was first opened), as 32
 * lowercase hex digits and a NUL into hex. A node back on an empty or
 * replaced disk has another one. */
void keel_store_id(const keel_store *s, char hex[2 * KEEL_STORE_ID_LEN + 1]);
/* The store's run: how many times it was opened, this open included
 * (1 for a new store, or the first open of a store from before the
 * counter). Raised by one in the open's first write transaction, the one
 * that checks the identity, and durable before keel_store_open returns.
 * A copy of the directory goes on from the run it was copied at, so a
 * copy opened again has a lower run than the directory it was copied
 * from has had since (the cluster compares them: coordinator/storecheck.h). */
uint64_t keel_store_run(const keel_store *s);
/* Records, durably, that this directory is an older copy of itself (its
 * owner found out: in a cluster, one that saw the store at a later run),
 * so that it never serves under this identity again, however often it is
 * opened and its run raised: every later open reports it
 * (keel_store_stale) until an open with new_store_id, which drops it with
 * the old identity. 0, KEEL_ESTORE, KEEL_EIO. Any thread; not while a
 * read is open on the calling thread. */
int keel_store_mark_stale(keel_store *s);
/* Nonzero (the run it was marked at) when the store is marked stale. */
uint64_t keel_store_stale(const keel_store *s);
/* The shard count the store was created with. */
uint32_t keel_store_shards(const keel_store *s);
/* Records the capability of an actor type whose records predate the type
 * table (the store listed it as unknown when it was upgraded). 0 when
 * recorded or already recorded with that capability; KEEL_ENOTFOUND when
 * the store holds no record of the type (nothing to do: its first write
 * records it); KEEL_ETYPECAP when it is recorded with another capability
 * (nothing changes); KEEL_ESTORE, KEEL_EIO, KEEL_ENOSPC. Not while a read
 * is open on the calling thread. */
int keel_store_type_learn(keel_store *s, const char *type, const char *cap);

typedef struct keel_store_stats {
    uint64_t commits;
    uint64_t fsyncs;          /* device flushes: syncs, and two per
                               * checkpoint */
    uint64_t syncs;           /* keel_store_sync calls that had to flush */
    uint64_t unsynced;        /* 1 while the last commit is not durable */
    uint64_t commit_failures;
    uint64_t fence_refusals;
    uint64_t map_grows;
    uint64_t map_size;
    uint64_t checkpoints;
} keel_store_stats;
void keel_store_stats_get(keel_store *s, keel_store_stats *out);

/* ---------------------------------------------------------------- reads */

/* A record as stored. data points into the LMDB map: valid until the read
 * ends. Copy it to keep it. */
typedef struct keel_record {
    uint64_t version;
    uint64_t epoch;
    const void *data;
    size_t len;
} keel_record;
/* A stored value: its header (version, epoch) and data (pointing into
 * val). KEEL_ECORRUPT when shorter than KEEL_RECORD_HEADER. */
int keel_record_parse(const void *val, size_t len, keel_record *out);

/* Opens a read snapshot. Cheap (a reused read transaction). */
int keel_store_read_begin(keel_store *s, keel_store_read **out);
void keel_store_read_end(keel_store_read *r);

/* Errors: KEEL_ENOTFOUND, KEEL_ECORRUPT (value shorter than its header),
 * KEEL_ESTORE. */
int keel_store_get(keel_store_read *r, const void *key, size_t klen,
                   keel_record *out);

/* Calls fn for every state record whose key starts with prefix, in key
 * order; fn returns nonzero to stop (that value is returned). */
typedef int (*keel_scan_fn)(const uint8_t *key, size_t klen,
                            const keel_record *rec, void *data);
int keel_store_scan(keel_store_read *r, const void *prefix, size_t plen,
                    keel_scan_fn fn, void *data);
/* The same, from the first key after `after` (alen > 0) on: the records
 * before it, however many, are not visited. */
int keel_store_scan_after(keel_store_read *r, const void *prefix,
                          size_t plen, const void *after, size_t alen,
                          keel_scan_fn fn, void *data);

/* Calls fn, in key order, for every state record of the placement unit
 * (cap, shard): the shard's records whose type the type table gives
 * capability cap. KEEL_ECAPUNKNOWN (and no call for the rest) when the
 * shard holds a record whose type's capability the store does not know:
 * then nobody can tell which unit it belongs to. */
int keel_store_unit_scan(keel_store_read *r, const char *cap, uint16_t shard,
                         keel_scan_fn fn, void *data);
/* The same from the first record after the key `after` (one of the
 * shard's keys, alen bytes; alen 0: from the start): a long scan done in
 * pieces, each in a read of its own. KEEL_EINVAL when `after` is not a
 * key of the shard. */
int keel_store_unit_scan_from(keel_store_read *r, const char *cap,
                              uint16_t shard, const void *after, size_t alen,
                              keel_scan_fn fn, void *data);
/* The content digest of the placement unit (cap, shard): XXH3_64 over
 * its records in key order (keel_store_unit_scan), each as
 *   klen be16 | key | version be64 | dlen be32 | data
 * The record's epoch is left out, so the replicas of a unit and a unit
 * that moved agree whatever epoch wrote each record. *nrecords (may be
 * NULL) gets the number of records. Errors as keel_store_unit_scan. */
int keel_store_unit_digest(keel_store_read *r, const char *cap,
                           uint16_t shard, uint64_t *digest,
                           uint64_t *nrecords);
/* The last handover recorded for (cap, shard) by keel_batch_handoff: the
 * shard_epoch it happened at (*epoch, 0 when none) and the recipient's
 * name (copied into to, NUL-terminated; KEEL_ELIMIT when to_cap is too
 * small). */
int keel_store_handoff_get(keel_store_read *r, const char *cap,
                           uint16_t shard, uint64_t *epoch, char *to,
                           size_t to_cap);

/* Highest shard_epoch recorded for (cap, shard); 0 when none. */
int keel_store_fence_get(keel_store_read *r, const char *cap, uint16_t shard,
                         uint64_t *epoch);

/* -------------------------------------------------------------- batches */

/* A batch is the unit of group commit: groups of writes, each group the
 * coalesced writes of one actor, all committed in one transaction.
 * Every group names its placement unit (cap, shard) and the shard_epoch
 * its writer holds. At commit, per group and in the same transaction:
 * if the fence holds a higher epoch, the group is refused (status
 * KEEL_EFENCED, none of its writes applied, the other groups go on);
 * otherwise the fence is raised to the group's epoch if lower, and the
 * writes are applied in order.
 *
 * A group is also refused, as a whole, with KEEL_ETYPECAP when it puts a
 * record of a type that the store's type table gives another capability
 * than the group's, and with KEEL_ECAPUNKNOWN when it deletes its unit
 * (keel_batch_del_unit) from a shard holding records of a type whose
 * capability is unknown. A put of a type the table lacks records the
 * type with the group's capability.
 *
 * A batch is built by one thread, then handed to the writer; it owns
 * copies of every byte given to it. Reuse it with keel_batch_reset(). */
keel_batch *keel_batch_create(void);
void keel_batch_destroy(keel_batch *b);
void keel_batch_reset(keel_batch *b);

/* Starts a group; tag is the caller's, returned by keel_batch_group().
 * Errors: KEEL_ENOMEM, KEEL_EINVAL (cap over 255 bytes). */
int keel_batch_begin_group(keel_batch *b, const char *cap, uint16_t shard,
                           uint64_t epoch, void *tag);
/* Adds a put to the current group: the stored value is
 * version be64 | group epoch be64 | data. */
int keel_batch_put(keel_batch *b, const void *key, size_t klen,
                   uint64_t version, const void *data, size_t len);
int keel_batch_del(keel_batch *b, const void *key, size_t klen);
/* Deletes every state record whose key starts with prefix. */
int keel_batch_del_prefix(keel_batch *b, const void *prefix, size_t plen);
/* Deletes the records of the current group's placement unit (its
 * capability and shard, as the type table says) written at an epoch below
 * `below` (0: every record). The records are chosen inside the commit's
 * transaction, after the batch's earlier writes: a unit streamed in by an
 * earlier group of the same batch at `below` or later stays. */
int keel_batch_del_unit(keel_batch *b, uint64_t below);
/* Checks, in the transaction, that the current group's placement unit
 * has the content digest `digest` (keel_store_unit_digest) after the
 * batch's earlier writes; when it has another, deletes every record of
 * the unit, as keel_batch_del_unit(b, 0) would, and the commit reports it
 * (keel_batch_group_differs). The group's only op: KEEL_EINVAL after
 * another. The group raises the unit's fence like any other. Refused as a
 * deletion of the unit is (KEEL_ECAPUNKNOWN). */
int keel_batch_check_unit(keel_batch *b, uint64_t digest);
/* Raises the fence of the current group's unit without writing state. */
int keel_batch_fence_only(keel_batch *b);
/* The batch must be on the disk before it counts as committed, whatever
 * the store's durability mode: with KEEL_DURABILITY_NONE its commit
 * flushes the data file before it returns (the store then counts one
 * fsync). For writes that others act upon, such as a unit received in a
 * handoff, after whose acknowledgement the sender deletes its copy. */
void keel_batch_require_sync(keel_batch *b);
/* Records, in the current group's transaction, that its unit was handed
 * over at shard_epoch `epoch` to node `to` (1..KEEL_HANDOFF_NAME_MAX
 * bytes), replacing an earlier record: the purge after a unit was
 * streamed out writes it, so that a node restarting before it could
 * report the handover still knows where the unit went. */
#define KEEL_HANDOFF_NAME_MAX 255
int keel_batch_handoff(keel_batch *b, uint64_t epoch, const char *to);

/* Appends a copy of src's groups, in order, to dst (src is unchanged).
 * KEEL_ENOMEM leaves dst as it was. */
int keel_batch_append(keel_batch *dst, const keel_batch *src);

size_t keel_batch_group_count(const keel_batch *b);
size_t keel_batch_op_count(const keel_batch *b);
/* Bytes the batch holds (keys, values, capabilities). */
size_t keel_batch_bytes(const keel_batch *b);
/* What a group holds, to re-create it elsewhere (replication sends the
 * groups of a committed batch to other nodes' stores).
 * keel_batch_group_unit: the group's placement unit and shard_epoch; *cap
 * is NUL-terminated and points into the batch (valid until the batch is
 * reset, appended to or destroyed). KEEL_EINVAL when there is no group i.
 *
 * keel_batch_group_ops calls fn for each op of group i, in order, with
 * what the keel_batch call that made it took:
 *   KEEL_BATCH_OP_PUT         key, version, data (keel_batch_put)
 *   KEEL_BATCH_OP_DEL         key (keel_batch_del)
 *   KEEL_BATCH_OP_DEL_PREFIX  key: the prefix (keel_batch_del_prefix)
 *   KEEL_BATCH_OP_DEL_UNIT    version: `below` (keel_batch_del_unit)
 *   KEEL_BATCH_OP_HANDOFF     key: the recipient's name (not
 *                             NUL-terminated), version: the epoch
 *                             (keel_batch_handoff)
 *   KEEL_BATCH_OP_FENCE_ONLY  nothing; a group without ops is a fence
 *                             raise (keel_batch_fence_only), visited once
 *   KEEL_BATCH_OP_CHECK_UNIT  version: the digest (keel_batch_check_unit)
 * Pointers point into the batch. fn returns nonzero to stop; that value
 * is returned. KEEL_EINVAL when there is no group i. */
enum keel_batch_op_kind {
    KEEL_BATCH_OP_PUT = 1,
    KEEL_BATCH_OP_DEL = 2,
    KEEL_BATCH_OP_DEL_PREFIX = 3,
    KEEL_BATCH_OP_DEL_UNIT = 4,
    KEEL_BATCH_OP_HANDOFF = 5,
    KEEL_BATCH_OP_FENCE_ONLY = 6,
    KEEL_BATCH_OP_CHECK_UNIT = 7
};
typedef int (*keel_batch_op_fn)(int kind, const uint8_t *key, size_t klen,
                                uint64_t version, const void *data,
                                size_t dlen, void *arg);
int keel_batch_group_unit(const keel_batch *b, size_t i, const char **cap,
                          uint16_t *shard, uint64_t *epoch);
int keel_batch_group_ops(const keel_batch *b, size_t i, keel_batch_op_fn fn,
                         void *data);

/* After a commit: the tag and status of group i: 0, KEEL_EFENCED, or,
 * for a group the writer refused because it depended on a failed group
 * (see keel_writer), that failure's status. */
void *keel_batch_group(const keel_batch *b, size_t i, int *status);
/* After a commit: whether group i's keel_batch_check_unit found another
 * digest (and the unit's records were deleted). */
int keel_batch_group_differs(const keel_batch *b, size_t i);

/* Durability. A commit flushes nothing: it appends the batch's record to
 * the store's log and commits to LMDB, visible at once. With
 * KEEL_DURABILITY_FSYNC it is durable after the next keel_store_sync (one
 * flush of the log, for every commit before it) or the next checkpoint;
 * a crash of the process or the machine before that may undo it, never
 * an earlier durable one, and never leaves the store inconsistent. With
 * KEEL_DURABILITY_NONE every commit counts as durable once committed.
 *
 * keel_store_commit_deferred commits the batch in one write transaction.
 * When the map is full it grows the map (waiting for open reads to end)
 * and retries. Returns 0 (groups may still be refused: see
 * keel_batch_group) or, with nothing written: KEEL_ENOSPC (disk or map
 * limit full: ENOSPC, EFBIG, EDQUOT), KEEL_EIO, KEEL_ESTORE. On success
 * *txn identifies the commit for keel_store_durable (0: it wrote nothing,
 * so there is nothing to wait for). A batch that must be durable at its
 * commit (keel_batch_require_sync) on a store without a log
 * (KEEL_DURABILITY_NONE) is flushed there; if that flush fails the
 * commit is made but its fate is unknown: KEEL_EINDOUBT, *txn set, and
 * the store is broken as after a failed keel_store_sync. */
int keel_store_commit_deferred(keel_store *s, keel_batch *b, uint64_t *txn);
/* Whether commit txn is durable. Any thread. */
int keel_store_durable(keel_store *s, uint64_t txn);
/* Makes every commit made so far durable (one flush, none if nothing is
 * pending). Any thread, concurrently with commits. A failed flush leaves
 * the fate of those commits unknown: the store is then marked broken
 * (every later read or commit fails with KEEL_ESTORE) and KEEL_EIO is
 * returned. */
int keel_store_sync(keel_store *s);
/* Nonzero once a failed flush (or checkpoint) has broken the store: it
 * refuses every commit from then on, until it is opened again. Any
 * thread. */
int keel_store_broken(const keel_store *s);
/* Sends the data pages committed since the last call to the disk, after
 * waiting for those sent then (no device flush). The writer calls it
 * after each round of reports; it keeps checkpoints short. Any thread. */
void keel_store_writeback(keel_store *s);
/* keel_store_commit_deferred, then keel_store_sync if needed: durable on
 * return. For callers without a writer thread. */
int keel_store_commit(keel_store *s, keel_batch *b);

/* Fault injection for tests; NULL members do nothing. Set before any
 * commit. before_commit runs at the start of every commit, on the
 * committing thread; a nonzero return fails the commit with that status,
 * with nothing written. before_sync runs before every flush that
 * keel_store_sync makes; a nonzero return (an errno value) fails that
 * flush as the device would, without flushing. */
typedef struct keel_store_hooks {
    int (*before_commit)(void *data);
    int (*before_sync)(void *data);
    void *data;
} keel_store_hooks;
void keel_store_set_hooks(keel_store *s, const keel_store_hooks *hooks);

/* --------------------------------------------------------------- writer */

/* The group-commit thread. Batches submitted are committed in order, one
 * transaction each. done_cb runs on the writer thread, once per batch and
 * in submission order, when the batch is durable or has failed, with the
 * commit's status; from then on the batch belongs to the submitter
 * again.
 *
 * Committed batches wait on the writer until its queue runs dry (or a
 * few of them wait, or one has failed); then one keel_store_sync makes
 * them all durable and they are reported in order. Under load one flush
 * thus serves many batches. When that flush fails, the batches it was
 * for are reported KEEL_EINDOUBT: committed, and perhaps on the disk.
 *
 * Failures and what depends on them. A batch submitted while an earlier
 * one is still with the writer may carry writes that were computed from
 * the earlier one's (an actor's second turn after its first). When a
 * group fails (refused by its fence, or the whole commit failed), the
 * writer refuses every group with the same tag in batches submitted
 * before the submitter acknowledged that batch's failure with
 * keel_writer_ack_failure, giving them the failure's status. A batch
 * counts as failed when its status or any group's status is not 0; the
 * submitter must acknowledge each such batch once, from done_cb's
 * hand-off, before it submits anything built with that knowledge. */
typedef struct keel_writer keel_writer;
typedef void (*keel_writer_done_cb)(keel_batch *b, int status, void *data);

int keel_writer_start(keel_store *s, keel_writer_done_cb done_cb, void *data,
                      keel_writer **out);
/* Any thread. KEEL_ESTOPPING after keel_writer_stop began. */
int keel_writer_submit(keel_writer *w, keel_batch *b);
/* Like keel_writer_submit, except that when the last batch submitted this
 * way is still waiting for the writer, and no failure was acknowledged
 * since it was submitted, b's groups are appended to it instead: *into is
 * set to that batch and b stays the caller's (unchanged). Otherwise b is
 * queued and *into = b. Appending is how the batch that waits keeps
 * collecting turns until the writer is ready for it. KEEL_ENOMEM (when
 * the append fails, nothing was submitted), KEEL_ESTOPPING. */
int keel_writer_submit_merge(keel_writer *w, keel_batch *b,
                             keel_batch **into);
/* Commits b on the calling thread, when the writer is idle (nothing
 * queued, nothing waiting for a flush, not at work): the same commit,
 * flush and failure rules, and done_cb runs on the calling thread before
 * this returns. 1 when it ran; 0 when the writer was busy (then submit b
 * as usual). Saves two thread hand-offs for a small batch that finds the
 * writer idle, at the price of blocking the caller for the commit.
 * The data file's write-back that follows a flush (keel_store_writeback)
 * is left owed: the caller calls keel_writer_writeback once its answers
 * have left. It is not part of durability, and on the caller's thread it
 * would only delay them. */
int keel_writer_try_inline(keel_writer *w, keel_batch *b);
/* Asks the writer thread for the write-back an inline commit left: 1
 * when one was owed and not asked for yet, 0 otherwise. Any thread. The
 * thread sends it once nothing is queued, without counting as busy: an
 * inline commit may run beside it. */
int keel_writer_writeback(keel_writer *w);
/* The submitter has seen one failed batch (see above). Any thread. */
void keel_writer_ack_failure(keel_writer *w);
#ifdef KEEL_FAILPOINTS
/* Test builds only (common/failpoint.h): from now on the writer thread
 * sleeps ms milliseconds before each commit, and keel_writer_try_inline
 * declines (the thread takes every batch). 0 turns it off. Call it before
 * the first submit. */
void keel_writer_delay_commits(keel_writer *w, int ms);
#endif
/* Commits what was submitted, makes it durable, then joins the thread and
 * frees w. */
void keel_writer_stop(keel_writer *w);

#endif
