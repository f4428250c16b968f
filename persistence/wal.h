/* The store's log and checkpoint file: what makes a commit durable with
 * one flush.
 *
 * LMDB needs two ordered flushes to make a commit durable on its own (its
 * data pages, then the meta page that points at them). The store instead
 * commits to LMDB without flushing and appends each commit's batch to
 * this log; one flush of the log makes the commit durable. Now and then
 * the store checkpoints: it flushes LMDB, saves LMDB's two meta pages
 * here, and starts the log again from its beginning. See store.c,
 * "Durability", for why the checkpointed state stays intact on disk.
 *
 *   keel.wal   a header of 4 KiB: magic u32 ("KWLI") | version u32 |
 *              seed u64 | hash u64 (XXH3-64 of the 16 bytes before it) |
 *              zeros; then records, back to back from offset 4096:
 *              hash u64 | magic u32 ("KWL3") | ngroups u32 | lsn u64 |
 *              len u64 | gen u64 | synced u64 | hhash u64 |
 *              len bytes of groups, each
 *                cap_len u32 | shard u32 | epoch u64 | ops_len u64 |
 *                cap, zero-padded to 8 | ops_len bytes of ops as a
 *                batch arena holds them (batch_internal.h)
 *              hash is XXH3-64, seeded with the header's seed, of
 *              everything after it; hhash, of the 40 bytes from magic to
 *              synced, seeded with the seed xor KEEL_WAL_HHASH_SALT. The
 *              seed is random per log file and never leaves the data
 *              directory, so a stored value that holds bytes shaped like
 *              a record (a client can send any) is never taken for one
 *              when replay looks through the file for records past
 *              damage, and hhash lets that look refuse such bytes before
 *              it reads the body they claim (a value tiled with headers
 *              each claiming the rest of the file would otherwise cost
 *              every open a read of the file per header). A log of file
 *              version 1 (an older keel's: file magic "KWLH") holds
 *              records of "KWL2", without hhash (48-byte headers); they
 *              are read, and the first restart of such a log gives it a
 *              new header of version 2 ("KWLI", which such a keel takes
 *              for a damaged header: it refuses the store rather than
 *              miss its records). A log holds records of its own format
 *              only.
 *              Sequence numbers
 *              (lsn) rise by one from record to record. synced is the
 *              newest record known durable (flushed) when this one was
 *              written: a record vouches for every record up to it, which
 *              is how replay tells damage to acknowledged records from a
 *              tail that was never flushed (keel_wal_replay). Records of
 *              the previous format (magic "KWAL", no synced field) are
 *              still read (unseeded, from offset 0 of a log without a header),
 *              vouching for nothing, and only in a log without a
 *              header; the first restart of such a log writes it a
 *              header. The records to
 *              replay are exactly the run that starts at the checkpoint's
 *              wal_off with the checkpoint's lsn + 1 and its wal_gen; a
 *              checkpoint made in normal running starts the log again
 *              (wal_off 0) as a new generation (gen = its seq), so that
 *              records left from an earlier generation never match, even
 *              where a later one reused their offsets and lsns.
 *              After the last record: zeros (written up to 1 MiB ahead
 *              of the records, keel_wal_rec_append), records of older
 *              generations, or the file's end; replay reads all three
 *              as the end of the run.
 *   keel.ckpt  two slots, at 0 and 256 KiB; a checkpoint writes the
 *              older one:
 *              hash u64 | magic u32 | psize u32 | seq u64 | lsn u64 |
 *              wal_off u64 | wal_gen u64 | the two meta pages,
 *              2 * psize bytes
 *
 * Integers are in host order: the files never leave the machine (the data
 * file LMDB writes is host-order too). Every function here returns 0 or
 * an errno value; store.c converts. Not thread-safe: the store calls these
 * with its commit lock held (keel_wal_sync excepted, see store.c). */
#ifndef KEEL_PERSISTENCE_WAL_H
#define KEEL_PERSISTENCE_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "persistence/store.h"

#define KEEL_WAL_NAME "keel.wal"
/* Bytes of the log's header, where records begin. */
#define KEEL_WAL_HEADER_BYTES 4096u
/* A record's header in a log of file version 2, and the seed of its own
 * hash: the log's seed xor this (see the format above). */
#define KEEL_WAL_REC_HDR 56u
#define KEEL_WAL_HHASH_SALT 0x6b65656c68647232ull
#define KEEL_CKPT_NAME "keel.ckpt"

typedef struct keel_wal {
    int fd;
    uint64_t seed;  /* of the records' hashes */
    uint32_t version; /* of the file's header: 2 for records of "KWL3" */
    /* Bytes of record bodies read to check their hash since the open: a
     * look for records past damage should read those of records only. */
    uint64_t body_bytes;
    uint64_t start; /* where records begin: after the header */
    int legacy;     /* a log of the previous format: no header, seed 0 */
    int bad_header; /* the header is damaged and records may follow it:
                     * none can be checked */
    uint64_t pos;  /* where the next record goes */
    uint64_t end;  /* bytes the file holds (records, or zeros written
                    * ahead of them) */
    int no_ahead;  /* writing ahead failed: not again until a restart */
    uint8_t *rec;  /* the record being built */
    size_t len;    /* its bytes so far */
    size_t cap;
    uint32_t ngroups;
    uint64_t gen;  /* generation of the records appended now */
} keel_wal;

typedef struct keel_ckpt {
    int fd;
    int have;       /* a valid slot was found (or written) */
    uint64_t seq;   /* of the newest valid slot */
    uint64_t lsn;   /* the last record the checkpoint holds */
    uint64_t wal_off; /* where the record after it starts */
    uint64_t wal_gen; /* and that record's generation */
    uint32_t psize; /* LMDB's page size */
    uint8_t *pages; /* 2 * psize: the meta pages of the newest slot */
    /* The other slot was written once but holds no valid checkpoint now:
     * it may have held a newer one than the slot in force (store.c
     * decides). damaged_seq is its sequence number when its header still
     * says (0: unknown). */
    int damaged;
    uint64_t damaged_seq;
    uint64_t damaged_off;
    /* Neither slot valid, and at least one written: no checkpoint can be
     * trusted. */
    int unusable;
} keel_ckpt;

/* Opens (creating, with a header and a new seed) dir/keel.wal. Its
 * generation is set by the caller. A damaged header is not an error here:
 * bad_header says so. */
int keel_wal_open(keel_wal *w, const char *dir);
void keel_wal_close(keel_wal *w);

/* Building a record: begin, one call per applied group, then append. */
void keel_wal_rec_begin(keel_wal *w);
int keel_wal_rec_group(keel_wal *w, const keel_batch *b, size_t group);
/* Writes the record at pos with sequence number lsn, vouching that every
 * record up to synced is durable; pos does not move until
 * keel_wal_rec_done(). A failed write may leave part of the record in the
 * file: harmless, since its hash does not match and pos stays. */
int keel_wal_rec_append(keel_wal *w, uint64_t lsn, uint64_t synced);
void keel_wal_rec_done(keel_wal *w);
/* Unwrites the record just appended (its commit failed after all): its
 * header is zeroed and flushed, so a replay cannot find it. */
int keel_wal_rec_cancel(keel_wal *w);

/* Flushes what was appended. Safe to call from another thread than the
 * appender (it touches only fd). */
int keel_wal_sync(keel_wal *w);
/* Starts the log again at its beginning (after a checkpoint); a log of an
 * older format gets its new header here. An error (the header's write or
 * flush failed) leaves the log unfit for more records: the store stops. */
int keel_wal_restart(keel_wal *w);
/* Before the log in dir is opened (keel_wal_open writes a header over a
 * file too short for one): its size plus one when it is missing (1) or
 * shorter than a header and not a log of the previous format (which has
 * none); else 0. Beside a checkpoint such a file was cut by something
 * else: the log is made, its header written whole, before any checkpoint,
 * and keel_wal_clear never leaves it shorter. */
uint64_t keel_wal_cut(const char *dir);
/* Empties the log file, durably, leaving a new header (never a file
 * shorter than a header, even after a crash in the middle). */
int keel_wal_clear(keel_wal *w);

/* How a replayed run ended. */
enum keel_wal_end_kind {
    /* At the file's end, or at bytes that are no record of the run (zeros,
     * records of an earlier generation): nothing is missing. */
    KEEL_WAL_END_CLEAN = 0,
    /* At a record of the run cut short or failing its check, or at bytes
     * with records of the run after them, where no later record vouches
     * for the lost one: a write that was never flushed (a process or
     * machine crash), so never acknowledged, unless something below the
     * file system cut the log. */
    KEEL_WAL_END_TORN = 1,
    /* As TORN, but a later record of the run vouches (synced) that the
     * lost record was durable: acknowledged writes are missing. */
    KEEL_WAL_END_DAMAGED = 2
};

typedef struct keel_wal_end {
    int kind;            /* enum keel_wal_end_kind */
    uint64_t off;        /* where the run stopped */
    uint64_t lsn;        /* the record that was expected there */
    uint64_t bytes;      /* from off to the file's end */
    uint64_t later;      /* intact records of the run found after off */
    uint64_t later_first; /* their offset, lowest lsn and highest lsn */
    uint64_t later_lo;
    uint64_t later_hi;
    uint64_t later_end;  /* where the last of them ends */
    uint64_t vouched;    /* the newest record a later one says was durable */
} keel_wal_end;

/* Calls fn, in order, for each record that follows lsn `after`: the run
 * of records at offset off (0: the log's beginning) whose first lsn is
 * after + 1. fn gets the
 * record rebuilt as a batch (in scratch) and its offset, and returns 0
 * to go on. pos is left after the last record replayed. *last gets the
 * last lsn replayed (after, when none); *end says how the run ended (it
 * looks through the rest of the file for records of the run when the run
 * stops early). A record that passes its hash but does not parse is
 * EILSEQ. */
typedef int (*keel_wal_replay_fn)(keel_batch *b, uint64_t lsn, uint64_t off,
                                  void *data);
int keel_wal_replay(keel_wal *w, uint64_t after, uint64_t off, uint64_t gen,
                    keel_batch *scratch, keel_wal_replay_fn fn, void *data,
                    uint64_t *last, keel_wal_end *end);

/* Whether the log holds an intact record (or mark) of a generation newer
 * than gen: then a checkpoint newer than the one numbered gen was
 * completed (store.c, store_check_ckpt). 1 with *off set, 0, or an errno
 * (negated). */
int keel_wal_newer_gen(keel_wal *w, uint64_t gen, uint64_t *off);

/* Appends, past the end of the file, an empty record of generation gen
 * and flushes it: the mark of a checkpoint made while the log was being
 * replayed, which starts no generation of its own (store.c). */
int keel_wal_mark(keel_wal *w, uint64_t gen);

/* Opens (creating, with room for both slots reserved: a full disk must
 * not stop the first checkpoints) dir/keel.ckpt and reads its newest
 * valid slot. */
int keel_ckpt_open(keel_ckpt *c, const char *dir);
void keel_ckpt_close(keel_ckpt *c);
/* Forgets both slots (their headers zeroed, flushed), keeping the room
 * reserved: the state in the data file is taken as it is. */
int keel_ckpt_reset(keel_ckpt *c);
/* Writes a checkpoint into the older slot and flushes it. */
int keel_ckpt_write(keel_ckpt *c, uint64_t lsn, uint64_t wal_off,
                    uint64_t wal_gen, uint32_t psize, const uint8_t *pages);

#endif
