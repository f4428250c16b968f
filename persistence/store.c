/* The LMDB store. See store.h for the layout and the threading rules.
 *
 * LMDB codes and errno values are converted to KEEL_E* here, once; nothing
 * above this file sees an MDB_* value.
 *
 * Map growth. LMDB fails a write transaction with MDB_MAP_FULL when the
 * memory map is full; mdb_env_set_mapsize() then grows it, but only while
 * no transaction is active in the process, since it unmaps and remaps the
 * file under every reader's pointers. Reads therefore hold map_lock shared
 * from keel_store_read_begin to keel_store_read_end, and the commit path
 * takes it exclusive, with its own write transaction aborted, just around
 * the resize; then it replays the whole batch.
 *
 * Durability (store.h). LMDB on its own needs two ordered flushes to make
 * a commit durable: its data pages, then the meta page that points at
 * them. The store instead runs LMDB with MDB_NOSYNC and appends every
 * commit's batch to its log (wal.h) before committing it; one flush of
 * the log makes the commit durable. last_lsn is the newest commit that
 * wrote, synced_lsn the newest whose record is on the device.
 *
 * Checkpoints. Without its flushes LMDB's file may, after a machine
 * crash, hold a meta page that points at pages that never reached the
 * disk. So the store keeps one state of LMDB's file known good: a
 * checkpoint flushes the file (mdb_env_sync), copies its two meta pages
 * to keel.ckpt (flushed), and starts the log again. A read transaction
 * (pin) stays open on the checkpointed snapshot until the next checkpoint
 * is safely written: LMDB never reuses a page that an open snapshot can
 * still see, so every page of the checkpointed state stays as it was on
 * disk. On open, the saved meta pages are written back over the file's
 * (a no-op after a clean close), which brings LMDB back to exactly the
 * checkpointed state, and the log's records after it are committed again,
 * in order. A checkpoint is made when the log or the file has grown past
 * a bound, after an interval, before the map grows, and on close.
 *
 * Writes through the map. With durability none there is no log, and an
 * ordinary LMDB commit costs a pwrite() per page and one for the meta
 * page: most of a small commit's time. With MDB_WRITEMAP LMDB writes its
 * pages into the shared map instead, which is the page cache itself, so a
 * commit makes no system call and a crash of the process loses nothing,
 * exactly as before. The catch: LMDB extends the file to the map's size
 * without allocating it, and a page written through the map where the
 * disk has no block for it kills the process with SIGBUS. So the store
 * allocates every block of the map first (fallocate), at open and before
 * each growth, and a full disk is an ordinary error at that point; growth
 * then tries smaller steps (store_grow). Where the blocks cannot be
 * reserved at open (no fallocate, a copy-on-write file system, no
 * space), the store writes through the file as before. The
 * durability fsync mode keeps ordinary writes: there a commit costs its
 * flush, not its copies, and checkpoints were built on those writes.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/log.h"
#include "persistence/batch_internal.h"
#include "persistence/datadir.h"
#include "persistence/store.h"
#include "persistence/typetab.h"
#include "persistence/unitrecs.h"
#include "persistence/wal.h"

#define STORE_DEFAULT_MAP_SIZE (64ull << 20)
/* The smallest step the map grows by when the disk has no room for more
 * (writes through the map only, see store_grow). */
#define STORE_GROW_MIN (1ull << 20)
/* Held with flock() for as long as the store is open: two nodes on one data
 * directory would both activate its actors. A file of its own, because
 * closing any descriptor of LMDB's files would drop LMDB's fcntl locks. */
#define STORE_LOCK_NAME "keel.lock"
/* Checkpoint bounds (see "Checkpoints"): log bytes, pages the data file
 * has grown by (nothing freed since the checkpoint is reused before the
 * next one), and time. */
#define CKPT_LOG_BYTES (16ull << 20)
#define CKPT_PAGES 4096u
#define CKPT_INTERVAL_MS 1000u

struct keel_store_read {
    keel_store *store;
    MDB_txn *txn; /* reset while the handle is idle in the pool */
    keel_store_read *next;
};

/* A small open-addressing table of fence keys. Keys longer than
 * FENCE_CACHE_KEY (long capability names) are simply not cached. */
#define FENCE_CACHE_KEY 40

struct fence_entry {
    uint64_t hash;
    uint64_t epoch;   /* as committed */
    uint64_t pending; /* raised by the open transaction, if dirty */
    uint8_t used;
    uint8_t dirty;
    uint8_t klen;
    uint8_t key[FENCE_CACHE_KEY];
};

struct fence_cache {
    struct fence_entry *slots;
    size_t mask;
    size_t count;
    size_t ndirty; /* entries raised by the open transaction */
    /* The open transaction raised a fence it could not cache (no memory
     * for the table): a later read of that fence in it sees the raise,
     * which is no committed value, so nothing more is cached until it
     * ends. */
    int uncached;
};

struct keel_store {
    MDB_env *env;
    uint32_t shards; /* the count its meta records */
    MDB_dbi state;
    MDB_dbi fence;
    MDB_dbi meta;
    /* The (type, capability) pair the commit in progress verified last
     * against the type table; points into its batch. */
    keel_unit_seen tt_seen;
    MDB_dbi types;
    char *path;
    uint8_t store_id[KEEL_STORE_ID_LEN];
    /* Times the store was opened for writing, this open included (meta
     * "run"); raised once per keel_store_open, whatever the count of
     * environments it opens. */
    uint64_t run;
    int run_raised;
    /* Meta "stale" as the open found it (keel_store_stale), 0: none. */
    uint64_t stale;
    /* The open found keel.wal cut shorter than its header beside a
     * checkpoint: its size plus one (keel_wal_cut), else 0. */
    uint64_t wal_cut;
    int lock_fd;
    int durability;
    uint64_t max_map_size;

    /* Shared by open reads, exclusive around mdb_env_set_mapsize(). */
    pthread_rwlock_t map_lock;
    /* Serialises keel_store_commit() callers, so that one committer at a
     * time decides on growth and updates the map size. */
    pthread_mutex_t commit_lock;
    /* Guards pool: idle read handles whose transactions are reset, kept
     * to be renewed instead of begun again. */
    pthread_mutex_t pool_lock;
    keel_store_read *pool;

    /* Set when a remap failed: LMDB has then lost its map, and every later
     * read or commit fails with KEEL_ESTORE. Atomic. */
    int broken;

    /* Fences as committed, by fence key: only this process writes the
     * environment (keel.lock), so once read, a fence changes only through
     * our own commits. Guarded by commit_lock. */
    struct fence_cache fc;
    /* The type table, whole (typetab.h). Guarded by commit_lock. */
    keel_typetab tt;

    /* Log sequence numbers of the newest commit that wrote, and of the
     * newest that is durable. last_lsn is written under commit_lock; both
     * are read by anyone. Atomic. */
    uint64_t last_lsn;
    uint64_t synced_lsn;

    /* The log and the checkpoint (see "Checkpoints"). Guarded by
     * commit_lock, except that wal.fd is flushed by keel_store_sync
     * without it. */
    keel_wal wal;
    keel_ckpt ckpt;
    MDB_txn *pin;      /* read transaction on the checkpointed snapshot */
    uint32_t psize;    /* LMDB's page size */
    uint64_t lsn;      /* the last record appended (or replayed) */
    uint64_t ckpt_ms;  /* monotonic time of the last checkpoint */
    uint64_t ckpt_interval_ms;
    uint64_t ckpt_pgno; /* the file's last page then */
    int replaying;     /* committing the log's records again on open */
    int wb_fd;         /* data.mdb again, for keel_store_writeback */
    /* LMDB writes through its map (MDB_WRITEMAP); durability none only,
     * see "Writes through the map". writemap_off: the blocks could not be
     * reserved at open, so this run writes through the file. */
    int writemap;
    int writemap_off;
    /* Commits go through the log and checkpoints: durability fsync, and
     * any store while it opens. With durability none the store runs LMDB
     * as it is, with MDB_NOSYNC and nothing else (see "Durability"). */
    int logged;
    int wrote;         /* the open write transaction changed something */
    int log_full;      /* the last append found no room */
    uint64_t replay_off; /* offset of the record being replayed */

    keel_store_hooks hooks;

    /* Written under commit_lock (syncs, and the fsyncs of syncs, by the
     * syncing thread), read by anyone: relaxed atomics. */
    uint64_t commits;
    uint64_t fsyncs;
    uint64_t syncs;
    uint64_t commit_failures;
    uint64_t fence_refusals;
    uint64_t map_grows;
    uint64_t map_size;
    uint64_t checkpoints;

    /* A full disk fails every commit until room comes back, and the
     * writers try again at once, many times a second: the first failure
     * of a run is logged, then at most one line a second, with how many
     * failed unlogged since; the first commit that succeeds says the run
     * is over. Guarded by commit_lock. */
    uint64_t fail_run;       /* failed commits since the last success */
    uint64_t fail_unlogged;  /* of those, failed since the last line */
    uint64_t fail_logged_ms; /* monotonic time of the last line */
    int fail_logged_rc;      /* the error it was about */
};

#define STAT_ADD(s, field, n)                                                \
    __atomic_fetch_add(&(s)->field, (n), __ATOMIC_RELAXED)
#define STAT_GET(s, field) __atomic_load_n(&(s)->field, __ATOMIC_RELAXED)

/* The one conversion of LMDB and errno codes. */
static int store_err(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_NOTFOUND:
        return KEEL_ENOTFOUND;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID: /* the data file is not an LMDB file */
        return KEEL_ECORRUPT;
    case ENOSPC:
    case EFBIG:
    case EDQUOT:
        return KEEL_ENOSPC;
    case ENOMEM:
        return KEEL_ENOMEM;
    case EINVAL: /* LMDB's answer to misuse: a storage error, not the
                  * caller's argument */
        return KEEL_ESTORE;
    default:
        return rc < 0 ? KEEL_ESTORE : KEEL_EIO;
    }
}

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static int record_parse(const MDB_val *v, keel_record *out)
{
    return keel_record_parse(v->mv_data, v->mv_size, out);
}

/* len(cap) u8 | cap | shard be16 into buf (KEEL_FENCE_KEY_MAX bytes). */
static size_t fence_key(uint8_t *buf, const void *cap, size_t clen,
                        uint16_t shard)
{
    buf[0] = (uint8_t)clen;
    if (clen > 0) /* cap may be NULL for the default group */
        memcpy(buf + 1, cap, clen);
    put_be16(buf + 1 + clen, shard);
    return 1 + clen + 2;
}

/* Handover records live in the meta table under "handoff" and the unit's
 * fence key, apart from the table's named settings. */
#define HANDOFF_KEY_MAX (7 + KEEL_FENCE_KEY_MAX)

static size_t handoff_key(uint8_t *buf, const void *cap, size_t clen,
                          uint16_t shard)
{
    memcpy(buf, "handoff", 7);
    return 7 + fence_key(buf + 7, cap, clen, shard);
}

static void seterr(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errbuf == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- open */

/* The process holding the flock on fd's file, from /proc/locks; 0 when
 * it cannot be told. */
static long lock_holder(int fd)
{
    struct stat st;
    char line[256];
    long pid = 0;
    FILE *f;

    if (fstat(fd, &st) != 0 || (f = fopen("/proc/locks", "re")) == NULL)
        return 0;
    while (pid == 0 && fgets(line, sizeof line, f) != NULL) {
        unsigned maj, min;
        unsigned long long ino;
        long p;
        char kind[16];
        /* "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" */
        if (sscanf(line, "%*[^:]: %15s %*s %*s %ld %x:%x:%llu", kind, &p,
                   &maj, &min, &ino) == 5 &&
            strcmp(kind, "FLOCK") == 0 &&
            ino == (unsigned long long)st.st_ino &&
            maj == major(st.st_dev) && min == minor(st.st_dev))
            pid = p;
    }
    fclose(f);
    return pid;
}

static int store_lock_dir(keel_store *s, char *errbuf, size_t errlen)
{
    char *lpath;
    int fd;

    if (asprintf(&lpath, "%s/%s", s->path, STORE_LOCK_NAME) < 0)
        return KEEL_ENOMEM;
    fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int err = errno;

        seterr(errbuf, errlen, "%s: %s", lpath, strerror(err));
        free(lpath);
        return err == ENOMEM ? KEEL_ENOMEM : KEEL_EIO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int err = errno;
        long pid = err == EWOULDBLOCK ? lock_holder(fd) : 0;

        if (pid > 0 && pid != (long)getpid())
            seterr(errbuf, errlen,
                   "%s: data directory already in use by process %ld (a "
                   "keeld running on it?): one node per data directory",
                   s->path, pid);
        else if (err == EWOULDBLOCK)
            seterr(errbuf, errlen,
                   "%s: data directory already in use (%s is locked by "
                   "another open store%s)",
                   s->path, lpath,
                   pid > 0 ? " of this process" : "");
        else
            seterr(errbuf, errlen, "%s: %s", lpath, strerror(err));
        close(fd);
        free(lpath);
        return err == EWOULDBLOCK ? KEEL_EEXIST : KEEL_EIO;
    }
    free(lpath);
    s->lock_fd = fd;
    return 0;
}

static int meta_get_u32(MDB_txn *txn, MDB_dbi dbi, const char *name,
                        uint32_t *out)
{
    MDB_val k = {strlen(name), (void *)name};
    MDB_val v;
    int rc = mdb_get(txn, dbi, &k, &v);

    if (rc != 0)
        return rc;
    if (v.mv_size != 4)
        return MDB_CORRUPTED;
    *out = get_be32(v.mv_data);
    return 0;
}

static int meta_put_u32(MDB_txn *txn, MDB_dbi dbi, const char *name,
                        uint32_t val)
{
    uint8_t buf[4];
    MDB_val k = {strlen(name), (void *)name};
    MDB_val v = {sizeof buf, buf};

    put_be32(buf, val);
    return mdb_put(txn, dbi, &k, &v, 0);
}

static int meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *name,
                        uint64_t *out)
{
    MDB_val k = {strlen(name), (void *)name};
    MDB_val v;
    int rc = mdb_get(txn, dbi, &k, &v);

    if (rc != 0)
        return rc;
    if (v.mv_size != 8)
        return MDB_CORRUPTED;
    *out = get_be64(v.mv_data);
    return 0;
}

static int meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *name,
                        uint64_t val)
{
    uint8_t buf[8];
    MDB_val k = {strlen(name), (void *)name};
    MDB_val v = {sizeof buf, buf};

    put_be64(buf, val);
    return mdb_put(txn, dbi, &k, &v, 0);
}

/* Lists, as unknown, every type with records in a store written before
 * the type table existed: which capability they have is for a node that
 * knows them to say (keel_store_type_learn). One pass over the records,
 * once, when the store is upgraded. */
static int store_list_old_types(keel_store *s, MDB_txn *txn)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc;

    rc = mdb_cursor_open(txn, s->state, &cur);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (rc == 0) {
        keel_key_parts kp;
        const char *cap;
        size_t clen;

        if (keel_key_decode(k.mv_data, k.mv_size, &kp) != 0) {
            rc = MDB_CORRUPTED;
            break;
        }
        if (keel_typetab_get(&s->tt, kp.type, kp.tlen, &cap, &clen) ==
            TT_ABSENT) {
            rc = keel_typetab_set(&s->tt, txn, s->types, kp.type, kp.tlen,
                                  NULL, 0);
            if (rc != 0)
                break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* A text field of meta: 0 (copied into buf, NUL-ended), MDB_NOTFOUND, or
 * MDB_CORRUPTED when it does not fit. */
static int meta_get_str(MDB_txn *txn, MDB_dbi dbi, const char *name,
                        char *buf, size_t cap)
{
    MDB_val k = {strlen(name), (void *)name};
    MDB_val v;
    int rc = mdb_get(txn, dbi, &k, &v);

    if (rc != 0)
        return rc;
    if (v.mv_size == 0 || v.mv_size >= cap)
        return MDB_CORRUPTED;
    memcpy(buf, v.mv_data, v.mv_size);
    buf[v.mv_size] = '\0';
    return 0;
}

static int meta_put_bytes(MDB_txn *txn, MDB_dbi dbi, const char *name,
                          const void *val, size_t len)
{
    MDB_val k = {strlen(name), (void *)name};
    MDB_val v = {len, (void *)val};

    return mdb_put(txn, dbi, &k, &v, 0);
}

/* The run counter (store.h, keel_store_run): read, and raised by one on
 * the first environment a keel_store_open opens; a store without one
 * (new, or from before the counter) starts at 1. */
static int store_run_raise(keel_store *s, MDB_txn *txn)
{
    uint64_t run = 0;
    int rc = meta_get_u64(txn, s->meta, "run", &run);

    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    if (s->run_raised) {
        s->run = run;
        return 0;
    }
    if (run == UINT64_MAX)
        return MDB_CORRUPTED;
    s->run = run + 1;
    return meta_put_u64(txn, s->meta, "run", s->run);
}

/* The stale mark (keel_store_mark_stale): read, or dropped by the first
 * environment of an open that gives the store a new identity. */
static int store_stale_read(keel_store *s, MDB_txn *txn, int new_id)
{
    MDB_val k = {sizeof "stale" - 1, (void *)"stale"};
    uint64_t at = 0;
    int rc = meta_get_u64(txn, s->meta, "stale", &at);

    s->stale = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    if (new_id && !s->run_raised)
        return mdb_del(txn, s->meta, &k, NULL);
    s->stale = at;
    if (s->stale == 0)
        s->stale = 1;
    return 0;
}

/* The store's identity (store.h): its random id, made once, and the
 * cluster and node it serves, recorded the first time they are given and
 * checked every time after. MDB_KEYEXIST (errbuf set) when the store was
 * made for another cluster or node. */
static int store_identity(keel_store *s, MDB_txn *txn,
                          const keel_store_options *o, char *errbuf,
                          size_t errlen)
{
    static const char *const names[2] = {"cluster", "node"};
    const char *want[2];
    char have[2][256];
    MDB_val k = {sizeof "store_id" - 1, (void *)"store_id"};
    MDB_val v;
    int rc, i, got[2];

    rc = mdb_get(txn, s->meta, &k, &v);
    if (rc == 0 && o->new_store_id && !s->run_raised) {
        /* Asked for: this directory takes a new identity (a restored copy
         * made into a new store, docs/operations.md "Backups"). */
        rc = MDB_NOTFOUND;
        keel_info("store %s: taking a new store id, as asked", s->path);
    }
    if (rc == 0) {
        if (v.mv_size != KEEL_STORE_ID_LEN)
            return MDB_CORRUPTED;
        memcpy(s->store_id, v.mv_data, KEEL_STORE_ID_LEN);
    } else if (rc == MDB_NOTFOUND) {
        if (getrandom(s->store_id, sizeof s->store_id, 0) !=
            (ssize_t)sizeof s->store_id)
            return errno != 0 ? errno : EIO;
        rc = meta_put_bytes(txn, s->meta, "store_id", s->store_id,
                            sizeof s->store_id);
        if (rc != 0)
            return rc;
    } else {
        return rc;
    }
    rc = store_run_raise(s, txn);
    if (rc != 0)
        return rc;
    rc = store_stale_read(s, txn, o->new_store_id);
    if (rc != 0)
        return rc;
    want[0] = o->cluster;
    want[1] = o->node;
    for (i = 0; i < 2; i++) {
        got[i] = meta_get_str(txn, s->meta, names[i], have[i],
                              sizeof have[i]);
        if (got[i] != 0 && got[i] != MDB_NOTFOUND)
            return got[i];
    }
    for (i = 0; i < 2; i++) {
        if (want[i] == NULL || got[i] != 0 || strcmp(want[i], have[i]) == 0)
            continue;
        seterr(errbuf, errlen,
               "%s: data directory belongs to node %s of cluster %s, not "
               "to node %s of cluster %s",
               s->path, got[1] == 0 ? have[1] : "(any)",
               got[0] == 0 ? have[0] : "(any)",
               o->node ? o->node : "(any)",
               o->cluster ? o->cluster : "(any)");
        return MDB_KEYEXIST;
    }
    for (i = 0; i < 2; i++) {
        if (want[i] == NULL || got[i] == 0)
            continue;
        if (strlen(want[i]) == 0 || strlen(want[i]) > 255)
            return EINVAL;
        rc = meta_put_bytes(txn, s->meta, names[i], want[i],
                            strlen(want[i]));
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Opens the named databases and checks (or, on a fresh store, writes) the
 * metadata, in one write transaction; loads the type table. */
static int store_init_dbs(keel_store *s, const keel_store_options *o,
                          char *errbuf, size_t errlen)
{
    uint32_t format = 0, shards = 0, shard_count = o->shard_count;
    MDB_txn *txn;
    MDB_stat st;
    int rc, rf, rs, upgrade = 0;

    keel_typetab_free(&s->tt);
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        goto err;
    if ((rc = mdb_dbi_open(txn, "state", MDB_CREATE, &s->state)) != 0 ||
        (rc = mdb_dbi_open(txn, "fence", MDB_CREATE, &s->fence)) != 0 ||
        (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta)) != 0 ||
        (rc = mdb_dbi_open(txn, "types", MDB_CREATE, &s->types)) != 0)
        goto err_abort;

    rf = meta_get_u32(txn, s->meta, "format", &format);
    rs = meta_get_u32(txn, s->meta, "shards", &shards);
    if (shard_count == 0)
        shard_count = rs == 0 ? shards : KEEL_DEFAULT_SHARDS;
    if (rf == MDB_NOTFOUND && rs == MDB_NOTFOUND) {
        /* A fresh store, unless records exist without metadata. */
        rc = mdb_stat(txn, s->state, &st);
        if (rc != 0)
            goto err_abort;
        if (st.ms_entries > 0) {
            rc = MDB_CORRUPTED;
            goto err_abort;
        }
        if ((rc = meta_put_u32(txn, s->meta, "format",
                               KEEL_STORE_FORMAT)) != 0 ||
            (rc = meta_put_u32(txn, s->meta, "shards", shard_count)) != 0)
            goto err_abort;
    } else if (rf != 0 || rs != 0) {
        rc = rf != 0 && rf != MDB_NOTFOUND   ? rf
             : rs != 0 && rs != MDB_NOTFOUND ? rs
                                             : MDB_CORRUPTED;
        goto err_abort;
    } else if ((format == 1 || format == 2) && shards == shard_count) {
        /* Format 1 had no log: its file was flushed at every commit, so
         * it is consistent as it is. From now on it needs the log.
         * Formats 1 and 2 had no type table: the types of their records
         * are listed as unknown. */
        upgrade = 1;
        rc = meta_put_u32(txn, s->meta, "format", KEEL_STORE_FORMAT);
        if (rc != 0)
            goto err_abort;
    } else if (format != KEEL_STORE_FORMAT) {
        mdb_txn_abort(txn);
        seterr(errbuf, errlen,
               "%s: store format %u, this build reads format %u", s->path,
               format, KEEL_STORE_FORMAT);
        return KEEL_EMISMATCH;
    } else if (shards != shard_count) {
        mdb_txn_abort(txn);
        seterr(errbuf, errlen,
               "%s: data directory was created with %u shards, "
               "configured shard count is %u (fixed when a directory is "
               "made: configure %u, or, if this directory holds nothing "
               "you need, such as one a refused first start left, remove "
               "it)",
               s->path, shards, shard_count, shards);
        return KEEL_EMISMATCH;
    }
    s->shards = shard_count;
    rc = keel_typetab_load(&s->tt, txn, s->types);
    if (rc == 0 && upgrade)
        rc = store_list_old_types(s, txn);
    if (rc != 0)
        goto err_abort;
    keel_typetab_settle(&s->tt, 1);
    rc = store_identity(s, txn, o, errbuf, errlen);
    if (rc == MDB_KEYEXIST) {
        mdb_txn_abort(txn);
        keel_typetab_free(&s->tt);
        return KEEL_EMISMATCH;
    }
    if (rc != 0)
        goto err_abort;
    rc = mdb_txn_commit(txn);
    if (rc != 0)
        goto err;
    s->run_raised = 1;
    if (upgrade)
        keel_info("store %s: upgraded from format %u to %u", s->path, format,
                  KEEL_STORE_FORMAT);
    return 0;

err_abort:
    mdb_txn_abort(txn);
err:
    keel_typetab_free(&s->tt);
    if (rc == MDB_MAP_FULL)
        return rc; /* store_env_open grows the map and comes back */
    seterr(errbuf, errlen, "%s: %s", s->path,
           rc == MDB_CORRUPTED ? "store metadata missing or malformed"
           : rc > 0 && rc < 4096 ? strerror(rc)
                                 : mdb_strerror(rc));
    return store_err(rc);
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int store_checkpoint(keel_store *s, uint64_t wal_off);
static int store_grow(keel_store *s);

/* After a write transaction outside the log found the map full: room as
 * a commit makes it (keel_store_commit_deferred), a checkpoint first,
 * once, which releases the pages the pin held, then growth. 0: try
 * again. Under commit_lock. */
static int store_room(keel_store *s, int *freed)
{
    if (!*freed && s->logged && s->lsn != s->ckpt.lsn) {
        *freed = 1;
        return store_checkpoint(s, 0);
    }
    return store_grow(s);
}

/* A write transaction outside the log, for what changes no record and no
 * fence (the stale mark, a type's capability): put makes its writes in
 * txn, after (may be NULL) learns after each try whether it committed. A
 * full map makes room (store_room) and the transaction is tried again.
 * Made durable here: a checkpoint (with the log), which the next open's
 * restore goes back to, or LMDB's own flush (without). Under
 * commit_lock; 0 or a code. */
static int store_commit_outside_log(keel_store *s,
                                    int (*put)(keel_store *s, MDB_txn *txn,
                                               void *arg),
                                    void (*after)(keel_store *s, int ok,
                                                  void *arg),
                                    void *arg)
{
    MDB_txn *txn;
    int rc, krc, freed = 0;

    for (;;) {
        rc = mdb_txn_begin(s->env, NULL, 0, &txn);
        if (rc == 0) {
            rc = put(s, txn, arg);
            if (rc == 0)
                rc = mdb_txn_commit(txn);
            else
                mdb_txn_abort(txn);
        }
        if (after != NULL)
            after(s, rc == 0, arg);
        if (rc != MDB_MAP_FULL)
            break;
        if ((krc = store_room(s, &freed)) != 0)
            return krc > 0 ? KEEL_EIO : krc;
    }
    if ((krc = store_err(rc)) != 0)
        return krc;
    if (s->logged) {
        krc = store_checkpoint(s, 0);
        return krc > 0 ? KEEL_EIO : krc;
    }
    return store_err(mdb_env_sync(s->env, 1));
}

/* Between two lines on failed commits of one run (struct keel_store). */
#define COMMIT_WARN_MS 1000

/* Logs a commit that failed with rc for the reason fmt says, as struct
 * keel_store's fail_* fields describe: a new error is logged at once.
 * Under commit_lock. */
static void commit_warn(keel_store *s, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void commit_warn(keel_store *s, int rc, const char *fmt, ...)
{
    uint64_t now = now_ms();
    char msg[512];
    va_list ap;

    s->fail_run++;
    if (s->fail_run > 1 && rc == s->fail_logged_rc &&
        now - s->fail_logged_ms < COMMIT_WARN_MS) {
        s->fail_unlogged++;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s->fail_unlogged > 0)
        keel_warn("store %s: commit failed: %s (and %llu more since the "
                  "last such line)",
                  s->path, msg, (unsigned long long)s->fail_unlogged);
    else
        keel_warn("store %s: commit failed: %s", s->path, msg);
    s->fail_unlogged = 0;
    s->fail_logged_ms = now;
    s->fail_logged_rc = rc;
}

/* Before LMDB opens the file: writes the checkpoint's meta pages back over
 * the file's, which takes LMDB back to the checkpointed state (see
 * "Checkpoints"). After a clean close they are the same and nothing is
 * written. */
static int store_restore(keel_store *s, char *errbuf, size_t errlen)
{
    size_t n = 2u * (size_t)s->ckpt.psize;
    uint8_t *cur = NULL;
    char *dpath = NULL, *lpath = NULL;
    ssize_t got;
    int fd = -1, rc = 0;

    if (asprintf(&dpath, "%s/data.mdb", s->path) < 0 ||
        asprintf(&lpath, "%s/lock.mdb", s->path) < 0 ||
        (cur = malloc(n)) == NULL) {
        seterr(errbuf, errlen, "%s: out of memory", s->path);
        rc = KEEL_ENOMEM;
        goto out;
    }
    fd = open(dpath, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;

        seterr(errbuf, errlen,
               "%s: a checkpoint exists but the data file cannot be "
               "opened: %s",
               dpath, strerror(err));
        rc = err == ENOENT ? KEEL_ECORRUPT : KEEL_EIO;
        goto out;
    }
    got = pread(fd, cur, n, 0);
    if (got == (ssize_t)n && memcmp(cur, s->ckpt.pages, n) == 0)
        goto out;
    if (pwrite(fd, s->ckpt.pages, n, 0) != (ssize_t)n || fdatasync(fd) < 0) {
        seterr(errbuf, errlen, "%s: cannot restore the checkpoint: %s",
               dpath, strerror(errno));
        rc = KEEL_EIO;
        goto out;
    }
    /* LMDB's lock file may remember a newer transaction than the one
     * restored; nobody else has the store open (keel.lock), so it is
     * simply made again. */
    if (unlink(lpath) < 0 && errno != ENOENT) {
        seterr(errbuf, errlen, "%s: %s", lpath, strerror(errno));
        rc = KEEL_EIO;
        goto out;
    }
    keel_info("store %s: back at its checkpoint (log record %llu); "
              "replaying the log",
              s->path, (unsigned long long)s->ckpt.lsn);
out:
    if (fd >= 0)
        close(fd);
    free(cur);
    free(dpath);
    free(lpath);
    return rc;
}

/* Commits one record of the log again (on open). It was committed once
 * on this very state, so every group must pass its fence again. */
static int replay_cb(keel_batch *b, uint64_t lsn, uint64_t off, void *data)
{
    keel_store *s = data;
    uint64_t id;
    int rc;

    s->replay_off = off;
    rc = keel_store_commit_deferred(s, b, &id);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < b->ngroups; i++)
        if (b->groups[i].status != 0)
            return KEEL_ECORRUPT;
    s->lsn = lsn;
    return 0;
}

/* Everything open() may have set up, in reverse. */
static void store_free(keel_store *s, int locks)
{
    keel_store_read *r, *next;

    for (r = s->pool; r != NULL; r = next) {
        next = r->next;
        mdb_txn_abort(r->txn);
        free(r);
    }
    if (s->pin != NULL)
        mdb_txn_abort(s->pin);
    if (s->env != NULL)
        mdb_env_close(s->env);
    free(s->fc.slots);
    keel_typetab_free(&s->tt);
    keel_wal_close(&s->wal);
    keel_ckpt_close(&s->ckpt);
    if (s->wb_fd >= 0)
        close(s->wb_fd);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    if (locks) {
        pthread_mutex_destroy(&s->pool_lock);
        pthread_mutex_destroy(&s->commit_lock);
        pthread_rwlock_destroy(&s->map_lock);
    }
    free(s->path);
    free(s);
}

/* Makes sure every block of data.mdb below to exists, for writes through
 * the map (see "Writes through the map"); from is where the blocks in use
 * end. KEEP_SIZE: a fresh file must stay empty for LMDB to take it as new;
 * LMDB extends the file to the map's size itself, over the blocks
 * allocated here. A file system that runs out of room part way keeps what
 * it allocated: that is handed back (nothing past from is in use), or the
 * space would be lost to every later attempt. Returns 0 or an errno. */
static int store_reserve(int fd, uint64_t from, uint64_t to)
{
    struct rlimit rl;
    struct stat st;
    int err;

    /* LMDB's own ftruncate() would fail past the limit, and when growing
     * only after it has unmapped the file. */
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        to > (uint64_t)rl.rlim_cur)
        return EFBIG;
    if (to > (uint64_t)INT64_MAX)
        return EFBIG;
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)to) == 0)
        return 0;
    err = errno;
    /* Inside the file, a hole; past its end (where ext4 punches nothing),
     * a truncation to the size it has, which frees what lies beyond. */
    if (to > from)
        (void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        (off_t)from, (off_t)(to - from));
    if (fstat(fd, &st) == 0)
        (void)ftruncate(fd, st.st_size);
    return err;
}

/* Whether blocks allocated ahead stay the blocks a later write lands in.
 * A copy-on-write file system (btrfs) allocates anew on every write, so a
 * reservation there keeps nothing from failing later. */
static int store_fs_overwrites(int fd)
{
    struct statfs sf;

    return fstatfs(fd, &sf) != 0 || sf.f_type != BTRFS_SUPER_MAGIC;
}

static void store_writemap_off(keel_store *s, uint64_t size, const char *why)
{
    keel_warn("store %s: cannot reserve %llu bytes for data.mdb (%s); "
              "writing through the file instead",
              s->path, (unsigned long long)size, why);
    s->writemap = 0;
    s->writemap_off = 1;
}

/* The size the map doubles to from cur, bounded by max_map_size, into
 * *next; KEEL_ENOSPC when it is at the bound already, or past what can be
 * mapped. */
static int map_next(const keel_store *s, uint64_t cur, uint64_t *next)
{
    uint64_t n;

    if (s->max_map_size != 0 && cur >= s->max_map_size)
        return KEEL_ENOSPC;
    n = cur > UINT64_MAX / 2 ? UINT64_MAX : cur * 2;
    if (s->max_map_size != 0 && n > s->max_map_size)
        n = s->max_map_size;
    if (n > SIZE_MAX)
        return KEEL_ENOSPC;
    *next = n;
    return 0;
}

/* Doubles the map of an environment just opened, bounded by max_map_size,
 * for the writes of the open itself (store_grow's counterpart: nothing is
 * pinned or open yet, so the map may move at once). */
static int store_open_grow(keel_store *s, char *errbuf, size_t errlen)
{
    MDB_envinfo info;
    uint64_t cur, next;
    int rc, fd, err;

    rc = mdb_env_info(s->env, &info);
    if (rc != 0) {
        seterr(errbuf, errlen, "%s: %s", s->path, mdb_strerror(rc));
        return store_err(rc);
    }
    cur = info.me_mapsize;
    if (map_next(s, cur, &next) != 0) {
        if (s->max_map_size != 0 && cur >= s->max_map_size)
            seterr(errbuf, errlen,
                   "%s: the map is full at its largest allowed size (%llu "
                   "bytes) and opening the store needs to write to it: "
                   "start with a larger maximum map size",
                   s->path, (unsigned long long)s->max_map_size);
        else
            seterr(errbuf, errlen, "%s: the map cannot grow past %llu bytes",
                   s->path, (unsigned long long)cur);
        return KEEL_ENOSPC;
    }
    if (s->writemap) {
        /* The blocks first, as store_grow does (see "Writes through the
         * map"). Where they cannot be had, this run writes through the
         * file, as when the map's blocks cannot be reserved at open: the
         * open itself needs a few pages, not the doubled map. 1: the
         * caller opens the environment again that way. */
        err = mdb_env_get_fd(s->env, &fd) != 0 ? EBADF
                                                : store_reserve(fd, cur, next);
        if (err != 0) {
            store_writemap_off(s, next, strerror(err));
            return 1;
        }
    }
    rc = mdb_env_set_mapsize(s->env, (size_t)next);
    if (rc != 0) {
        seterr(errbuf, errlen, "%s: growing the map to %llu bytes: %s",
               s->path, (unsigned long long)next, mdb_strerror(rc));
        return store_err(rc);
    }
    keel_info("store %s: map grown to %llu bytes while opening", s->path,
              (unsigned long long)next);
    return 0;
}

/* Opens LMDB's environment on s->path with a map of at least map_size
 * bytes and its databases, and reads its page and map sizes. With
 * s->writemap set it first reserves the file's blocks, and if that cannot
 * be done, opens it for ordinary writes instead (s->writemap cleared,
 * s->writemap_off set). */
static int store_env_open(keel_store *s, uint64_t map_size,
                          const keel_store_options *o, char *errbuf,
                          size_t errlen)
{
    MDB_envinfo info;
    MDB_stat st;
    int rc;

    if (s->writemap) {
        char *dpath;
        struct stat dst;
        int fd, err = 0;

        if (asprintf(&dpath, "%s/data.mdb", s->path) < 0) {
            seterr(errbuf, errlen, "%s: out of memory", s->path);
            return KEEL_ENOMEM;
        }
        fd = open(dpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        free(dpath);
        if (fd < 0 || fstat(fd, &dst) < 0)
            err = errno;
        /* A file larger than the map (an earlier run grew it) is mapped
         * whole: LMDB would otherwise cut it down to the map's size. */
        if (err == 0 && (uint64_t)dst.st_size > map_size)
            map_size = (uint64_t)dst.st_size;
        if (err == 0 && !store_fs_overwrites(fd))
            err = EOPNOTSUPP;
        if (err == 0)
            err = store_reserve(fd, (uint64_t)dst.st_size, map_size);
        if (fd >= 0)
            close(fd);
        if (err != 0)
            store_writemap_off(s, map_size,
                               err == EOPNOTSUPP
                                   ? "a copy-on-write file system, or no "
                                     "fallocate"
                                   : strerror(err));
    }

again:
    rc = mdb_env_create(&s->env);
    if (rc != 0) {
        s->env = NULL;
        seterr(errbuf, errlen, "%s: %s", s->path, mdb_strerror(rc));
        return store_err(rc);
    }
    if ((rc = mdb_env_set_maxdbs(s->env, 4)) != 0 ||
        (rc = mdb_env_set_mapsize(s->env, (size_t)map_size)) != 0) {
        seterr(errbuf, errlen, "%s: %s", s->path, mdb_strerror(rc));
        return store_err(rc);
    }
    /* NOTLS: read transactions are tied to their handle, not the thread,
     * so one can be reset and renewed, and writes run on another thread.
     * LMDB syncs its own commits until the metadata is in place (a fresh
     * or upgraded store has no checkpoint to fall back on yet); then
     * MDB_NOSYNC: the log makes commits durable (see "Durability"). */
    rc = mdb_env_open(s->env, s->path,
                      MDB_NOTLS | (s->writemap ? MDB_WRITEMAP : 0), 0600);
    if (rc != 0) {
        seterr(errbuf, errlen, "%s: cannot open store: %s", s->path,
               mdb_strerror(rc));
        return store_err(rc);
    }
    if (s->writemap) {
        /* LMDB maps at least the pages its meta page counts, and a file
         * last written without the map can end before the last of them
         * (pages freed in the transaction that took them were never
         * written). Nothing has been written since the open. */
        int fd, err = 0;

        rc = mdb_env_info(s->env, &info);
        if (rc == 0 && info.me_mapsize > map_size) {
            err = mdb_env_get_fd(s->env, &fd) != 0
                      ? EBADF
                      : store_reserve(fd, map_size, info.me_mapsize);
            if (err != 0) {
                mdb_env_close(s->env);
                s->env = NULL;
                store_writemap_off(s, info.me_mapsize, strerror(err));
                goto again;
            }
        }
    } else {
        /* The same file end, read through a map of the file as it is: a
         * page past the file's end kills the reader (SIGBUS). Past the
         * pages never written above, a machine crash can leave a file
         * whose meta page reached the disk and whose new size did not:
         * a data file taken as it stands must then read as damaged, not
         * kill the open. Zeros there read as no page at all. Nothing has
         * been read yet but the meta pages. */
        struct stat fst;
        MDB_stat ms;
        int fd;

        if (mdb_env_info(s->env, &info) == 0 &&
            mdb_env_stat(s->env, &ms) == 0 &&
            mdb_env_get_fd(s->env, &fd) == 0 && fstat(fd, &fst) == 0) {
            uint64_t need = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;

            if ((uint64_t)fst.st_size < need &&
                ftruncate(fd, (off_t)need) < 0)
                keel_warn("store %s: data.mdb ends before its last page "
                          "and cannot be extended: %s",
                          s->path, strerror(errno));
        }
    }
    /* The open writes too (the run counter at least), and a store left
     * with its map full has no page for it: the map grows as a commit
     * would make it. */
    while ((rc = store_init_dbs(s, o, errbuf, errlen)) == MDB_MAP_FULL) {
        rc = store_open_grow(s, errbuf, errlen);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            /* No blocks for a larger map: through the file instead. */
            mdb_env_close(s->env);
            s->env = NULL;
            goto again;
        }
    }
    if (rc < 0)
        return rc;
    rc = mdb_env_set_flags(s->env, MDB_NOSYNC, 1);
    /* An existing file may hold more than map_size: LMDB then maps it
     * whole. */
    if (rc == 0)
        rc = mdb_env_info(s->env, &info);
    if (rc == 0)
        rc = mdb_env_stat(s->env, &st);
    if (rc != 0) {
        seterr(errbuf, errlen, "%s: %s", s->path, mdb_strerror(rc));
        return store_err(rc);
    }
    s->map_size = info.me_mapsize;
    s->psize = st.ms_psize;
    s->ckpt_pgno = info.me_last_pgno;
    return 0;
}

#define RECOVER_HEAD                                                         \
    "Recovering to the last good state (--recover-to-last-good) takes "     \
    "the data file as it stands once it reads through whole: "
#define RECOVER_TAIL                                                         \
    RECOVER_HEAD "it holds every acknowledged write unless the machine "    \
                 "itself went down"

static void wal_cut_why(const keel_store *s, char *why, size_t len)
{
    snprintf(why, len,
             "the log %s/%s is %s%llu bytes, shorter than its own header "
             "(%u bytes), beside a checkpoint: the file was cut, and the "
             "records written since the checkpoint (log record %llu), "
             "acknowledged ones among them, may be lost",
             s->path, KEEL_WAL_NAME, s->wal_cut == 1 ? "missing or " : "",
             (unsigned long long)(s->wal_cut - 1),
             (unsigned)KEEL_WAL_HEADER_BYTES, (unsigned long long)s->ckpt.lsn);
}

/* Whether the data file is older than the checkpoint: a checkpoint is
 * written only once the data file is flushed (store_checkpoint), so the
 * file's own meta pages are never behind it, whatever crashed. Behind it,
 * the file comes from another time than keel.ckpt and keel.wal (a data
 * file restored over a newer directory): restoring the checkpoint's meta
 * pages onto it would point them at pages it never held, and the store
 * would read as empty, or worse. 1 with the two transactions set, 0, or
 * an errno (negated). */
static int data_behind_ckpt(keel_store *s, uint64_t *data_txn,
                            uint64_t *ckpt_txn)
{
    int err = keel_data_file_txnid(s->path, s->ckpt.psize, data_txn);

    *ckpt_txn = keel_lmdb_meta_txnid(s->ckpt.pages, s->ckpt.psize);
    if (err == ENOENT)
        return 0; /* store_restore says so */
    if (err == ENODATA) {
        *data_txn = 0;
        return 1; /* shorter than its two meta pages */
    }
    if (err != 0)
        return -err;
    /* A file without meta pages at all is not this store's: the restored
     * pages then fail LMDB's own checks, as before. */
    return *data_txn != 0 && *data_txn < *ckpt_txn;
}

/* Whether the checkpoint in force can be trusted (see "Checkpoints").
 * Generations only grow, and a checkpoint's generation is its sequence
 * number, so the log can hold records of a newer generation than the
 * checkpoint in force (or the mark of a newer checkpoint made during a
 * replay) only if a newer checkpoint was completed and is now lost: its
 * slot damaged, or the file cut. Going back to the older checkpoint would
 * then lose what the newer one holds, and worse, its pages may have been
 * reused since, so restoring it would serve a store stitched together
 * from two times. Without such evidence a damaged slot is one whose write
 * never finished (nothing was committed after it) and the older one is
 * safe. Returns 0 to recover from the checkpoint in force, 1 to take the
 * data file as it stands (recover_to_last_good), or KEEL_ECORRUPT /
 * KEEL_EIO with errbuf set. */
static int store_check_ckpt(keel_store *s, const keel_store_options *o,
                            uint64_t wal_size, char *errbuf, size_t errlen)
{
    uint64_t seq = s->ckpt.have ? s->ckpt.seq : 0, off = 0;
    uint64_t data_txn = 0, ckpt_txn = 0;
    char why[768];
    int r = 0, rc;

    if (s->wal.bad_header) {
        snprintf(why, sizeof why,
                 "the header of the log %s/%s is damaged: none of its "
                 "records can be checked",
                 s->path, KEEL_WAL_NAME);
        goto refuse;
    }
    if (wal_size > s->wal.start &&
        (r = keel_wal_newer_gen(&s->wal, seq, &off)) < 0) {
        seterr(errbuf, errlen, "%s/%s: %s", s->path, KEEL_WAL_NAME,
               strerror(-r));
        return KEEL_EIO;
    }
    if (s->ckpt.unusable && r == 0) {
        /* No valid slot, and no record in the log was ever written after
         * a checkpoint: the first one (of a new directory, or after the
         * log and checkpoints were started afresh) never finished, and
         * the data file is as LMDB flushed it itself. */
        keel_warn("store %s: the first checkpoint in %s was never "
                  "completed (slot at offset %llu); starting from the "
                  "data file",
                  s->path, KEEL_CKPT_NAME,
                  (unsigned long long)s->ckpt.damaged_off);
        rc = keel_ckpt_reset(&s->ckpt);
        if (rc != 0) {
            seterr(errbuf, errlen, "%s/%s: %s", s->path, KEEL_CKPT_NAME,
                   strerror(rc));
            return KEEL_EIO;
        }
        return 0;
    }
    if (s->ckpt.unusable) {
        snprintf(why, sizeof why,
                 "no checkpoint in %s/%s is valid (the slot at offset %llu "
                 "is damaged)",
                 s->path, KEEL_CKPT_NAME,
                 (unsigned long long)s->ckpt.damaged_off);
    } else if (r == 1) {
        snprintf(why, sizeof why,
                 "the log holds records (at offset %llu of %s) of a "
                 "checkpoint newer than any valid one in %s/%s%s: the "
                 "newest checkpoint was lost, and going back to an older "
                 "one would lose its writes and may meet pages reused "
                 "since",
                 (unsigned long long)off, KEEL_WAL_NAME, s->path,
                 KEEL_CKPT_NAME,
                 s->ckpt.damaged ? " (a slot is damaged)" : "");
    } else if (s->ckpt.damaged) {
        keel_warn("store %s: the checkpoint slot at offset %llu of %s "
                  "is damaged, but the log shows no checkpoint newer than "
                  "the one in force (number %llu) was completed: "
                  "recovering from that one",
                  s->path, (unsigned long long)s->ckpt.damaged_off,
                  KEEL_CKPT_NAME, (unsigned long long)s->ckpt.seq);
        return 0;
    } else if (!s->ckpt.have && wal_size > s->wal.start) {
        /* Records with nothing to replay them onto: keel.ckpt was lost. */
        snprintf(why, sizeof why,
                 "the log (%s) has records but there is no checkpoint (%s)",
                 KEEL_WAL_NAME, KEEL_CKPT_NAME);
    } else if (s->wal_cut != 0) {
        wal_cut_why(s, why, sizeof why);
    } else if (s->ckpt.have && s->ckpt.psize >= 512 &&
               (r = data_behind_ckpt(s, &data_txn, &ckpt_txn)) != 0) {
        if (r < 0) {
            seterr(errbuf, errlen, "%s/data.mdb: %s", s->path,
                   strerror(-r));
            return r == -ENOMEM ? KEEL_ENOMEM : KEEL_EIO;
        }
        if (data_txn == 0)
            snprintf(why, sizeof why,
                     "the data file (data.mdb) is shorter than its two meta "
                     "pages, beside a checkpoint in %s (LMDB transaction "
                     "%llu): it was cut, or is not this directory's",
                     KEEL_CKPT_NAME, (unsigned long long)ckpt_txn);
        else
            snprintf(why, sizeof why,
                     "the data file (data.mdb, at LMDB transaction %llu) is "
                     "older than the checkpoint in %s (transaction %llu), "
                     "which is written only after the data file is "
                     "flushed: the files come from different times (a "
                     "data file copied over a newer directory?), and the "
                     "checkpoint and log cannot be applied to it. Copy a "
                     "data directory back whole, or into an empty "
                     "directory",
                     (unsigned long long)data_txn, KEEL_CKPT_NAME,
                     (unsigned long long)ckpt_txn);
    } else {
        return 0;
    }
refuse:
    if (!o->recover_to_last_good) {
        seterr(errbuf, errlen, "%s: %s. Refusing to open. %s", s->path, why,
               data_txn != 0 ? RECOVER_HEAD "it then holds what it held "
                                            "when it was copied, without "
                                            "the writes made since"
                             : RECOVER_TAIL);
        return KEEL_ECORRUPT;
    }
    keel_warn("store %s: %s; recovering to the last good state: the data "
              "file as it stands",
              s->path, why);
    return 1;
}

/* Reads every record of every database: a data file taken as it stands
 * must at least read through whole. 0 or a KEEL_E* code. */
static int store_walk(keel_store *s, uint64_t *records)
{
    MDB_dbi dbis[4] = {s->state, s->fence, s->meta, s->types};
    MDB_txn *txn;
    int rc;

    *records = 0;
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return store_err(rc);
    for (size_t i = 0; i < 4 && rc == 0; i++) {
        MDB_cursor *cur;
        MDB_val k, v;

        rc = mdb_cursor_open(txn, dbis[i], &cur);
        if (rc != 0)
            break;
        while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0)
            (*records)++;
        mdb_cursor_close(cur);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    mdb_txn_abort(txn);
    return rc == 0 ? 0 : KEEL_ECORRUPT;
}

/* How the replayed run of the log ended (keel_wal_replay): a torn tail
 * is said; damage in the middle refuses the open, or with
 * recover_to_last_good, says what the replay left out. 0 or
 * KEEL_ECORRUPT with errbuf set. */
static int store_check_end(keel_store *s, const keel_store_options *o,
                           const keel_wal_end *e, char *errbuf,
                           size_t errlen)
{
    unsigned long long off = e->off, lsn = e->lsn, hi = e->later_hi;

    switch (e->kind) {
    case KEEL_WAL_END_TORN:
        if (e->later > 0)
            keel_warn("store %s: the log %s/%s stops at offset %llu "
                      "(record %llu); %llu later records of the run follow "
                      "but none says the missing one was flushed: writes "
                      "never acknowledged, left out (up to record %llu)",
                      s->path, s->path, KEEL_WAL_NAME, off, lsn,
                      (unsigned long long)e->later, hi);
        else
            keel_warn("store %s: the log %s/%s ends with record %llu cut "
                      "short or damaged at offset %llu: a write that was "
                      "never flushed, so never acknowledged, unless "
                      "something below the file system cut the log",
                      s->path, s->path, KEEL_WAL_NAME, lsn, off);
        return 0;
    case KEEL_WAL_END_DAMAGED:
        if (!o->recover_to_last_good) {
            seterr(errbuf, errlen,
                   "%s: the log %s/%s is damaged at offset %llu (record "
                   "%llu): %llu intact records follow it (up to record "
                   "%llu), and they say records up to %llu were flushed, "
                   "so acknowledged writes would be lost. Refusing to "
                   "open. Recovering to the last good record "
                   "(--recover-to-last-good) keeps records up to %llu and "
                   "drops %llu to %llu",
                   s->path, s->path, KEEL_WAL_NAME, off, lsn,
                   (unsigned long long)e->later, hi,
                   (unsigned long long)e->vouched, lsn - 1, lsn, hi);
            return KEEL_ECORRUPT;
        }
        keel_warn("store %s: recovering to the last good record of the "
                  "damaged log %s/%s: kept records up to %llu; dropped "
                  "records %llu to %llu (%llu bytes from offset %llu), of "
                  "which records up to %llu had been acknowledged",
                  s->path, s->path, KEEL_WAL_NAME, lsn - 1, lsn, hi,
                  (unsigned long long)(e->later_end > e->off
                                           ? e->later_end - e->off
                                           : e->bytes),
                  off,
                  (unsigned long long)e->vouched);
        return 0;
    default:
        return 0;
    }
}

int keel_store_open(const keel_store_options *opts, keel_store **out,
                    char *errbuf, size_t errlen)
{
    uint64_t map_size, last = 0;
    keel_batch *scratch;
    keel_store *s;
    struct stat wst;
    int rc, err, locks = 0, as_is;

    if (opts == NULL || out == NULL || opts->path == NULL ||
        opts->path[0] == '\0') {
        seterr(errbuf, errlen, "store: no path given");
        return KEEL_EINVAL;
    }
    if (opts->shard_count > 65536) {
        seterr(errbuf, errlen, "%s: shard count %u out of range 1..65536",
               opts->path, opts->shard_count);
        return KEEL_EINVAL;
    }
    if (opts->durability != KEEL_DURABILITY_FSYNC &&
        opts->durability != KEEL_DURABILITY_NONE) {
        seterr(errbuf, errlen, "%s: unknown durability mode %d", opts->path,
               opts->durability);
        return KEEL_EINVAL;
    }
    map_size = opts->initial_map_size ? opts->initial_map_size
                                      : STORE_DEFAULT_MAP_SIZE;
    if (opts->max_map_size != 0 && map_size > opts->max_map_size) {
        seterr(errbuf, errlen,
               "%s: initial map size %llu over the maximum %llu", opts->path,
               (unsigned long long)map_size,
               (unsigned long long)opts->max_map_size);
        return KEEL_EINVAL;
    }
    if (map_size > SIZE_MAX) {
        seterr(errbuf, errlen, "%s: map size too large", opts->path);
        return KEEL_EINVAL;
    }

    s = calloc(1, sizeof *s);
    if (s == NULL) {
        seterr(errbuf, errlen, "%s: out of memory", opts->path);
        return KEEL_ENOMEM;
    }
    s->lock_fd = -1;
    s->wb_fd = -1;
    s->wal.fd = -1;
    s->ckpt.fd = -1;
    s->durability = opts->durability;
    s->max_map_size = opts->max_map_size;
    s->ckpt_interval_ms = opts->checkpoint_interval_ms
                              ? opts->checkpoint_interval_ms
                              : CKPT_INTERVAL_MS;
    s->path = strdup(opts->path);
    if (s->path == NULL) {
        seterr(errbuf, errlen, "%s: out of memory", opts->path);
        rc = KEEL_ENOMEM;
        goto err;
    }

    err = keel_dir_make(s->path);
    if (err != 0) {
        seterr(errbuf, errlen, "%s: cannot create directory: %s", s->path,
               strerror(err));
        rc = err == ENOMEM ? KEEL_ENOMEM : KEEL_EIO;
        goto err;
    }
    rc = store_lock_dir(s, errbuf, errlen);
    if (rc < 0)
        goto err;

    err = keel_ckpt_open(&s->ckpt, s->path);
    if (err == 0 && s->ckpt.have) {
        /* Before the log is opened, which writes a header over a file
         * too short for one. */
        s->wal_cut = keel_wal_cut(s->path);
        if (s->wal_cut != 0 && !opts->recover_to_last_good) {
            char why[512];
            wal_cut_why(s, why, sizeof why);
            seterr(errbuf, errlen, "%s: %s. Refusing to open. %s", s->path,
                   why, RECOVER_TAIL);
            rc = KEEL_ECORRUPT;
            goto err;
        }
    }
    if (err == 0)
        err = keel_wal_open(&s->wal, s->path);
    if (err == 0 && fstat(s->wal.fd, &wst) < 0)
        err = errno;
    if (err == 0)
        /* The two files may have just been made: their names must be on
         * the disk before anything in them counts. */
        err = keel_dir_sync(s->path);
    if (err != 0) {
        seterr(errbuf, errlen, "%s: cannot open the log or checkpoint: %s",
               s->path, strerror(err));
        rc = err == ENOMEM ? KEEL_ENOMEM : KEEL_EIO;
        goto err;
    }
    as_is = store_check_ckpt(s, opts, (uint64_t)wst.st_size, errbuf,
                             errlen);
    if (as_is < 0) {
        rc = as_is;
        goto err;
    }
    if (s->ckpt.have && !as_is) {
        rc = store_restore(s, errbuf, errlen);
        if (rc < 0)
            goto err;
    }

    /* With durability none and no log to replay, LMDB can write through
     * its map straight away (see "Writes through the map"). */
    s->writemap = s->durability == KEEL_DURABILITY_NONE && !s->ckpt.have &&
                  (uint64_t)wst.st_size <= s->wal.start && !as_is;
    {
        char *dpath;
        int made;

        if (asprintf(&dpath, "%s/data.mdb", s->path) < 0)
            goto err_nomem;
        made = access(dpath, F_OK) != 0;
        rc = store_env_open(s, map_size, opts, errbuf, errlen);
        if (rc < 0) {
            free(dpath);
            goto err;
        }
        s->wb_fd = open(dpath, O_RDONLY | O_CLOEXEC);
        err = errno;
        free(dpath);
        /* LMDB (or the reservation before it) made the data file: its
         * name too must be on the disk before anything in it counts. */
        if (s->wb_fd >= 0 && made && (err = keel_dir_sync(s->path)) != 0) {
            close(s->wb_fd);
            s->wb_fd = -1;
        }
        if (s->wb_fd < 0) {
            seterr(errbuf, errlen, "%s/data.mdb: %s", s->path,
                   strerror(err));
            rc = KEEL_EIO;
            goto err;
        }
    }
    if (s->ckpt.have && s->ckpt.psize != s->psize) {
        seterr(errbuf, errlen,
               "%s: checkpoint page size %u, data file page size %u",
               s->path, s->ckpt.psize, s->psize);
        rc = KEEL_ECORRUPT;
        goto err;
    }

    if (pthread_rwlock_init(&s->map_lock, NULL) != 0)
        goto err_nomem;
    if (pthread_mutex_init(&s->commit_lock, NULL) != 0) {
        pthread_rwlock_destroy(&s->map_lock);
        goto err_nomem;
    }
    if (pthread_mutex_init(&s->pool_lock, NULL) != 0) {
        pthread_mutex_destroy(&s->commit_lock);
        pthread_rwlock_destroy(&s->map_lock);
        goto err_nomem;
    }
    locks = 1;

    /* The restored state is the checkpointed one: pin it before anything
     * is written over it. */
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->pin);
    if (rc != 0) {
        s->pin = NULL;
        seterr(errbuf, errlen, "%s: %s", s->path, mdb_strerror(rc));
        rc = store_err(rc);
        goto err;
    }
    s->logged = 1;
    s->lsn = s->ckpt.have ? s->ckpt.lsn : 0;
    s->wal.gen = s->ckpt.have ? s->ckpt.wal_gen : 0;
    scratch = keel_batch_create();
    if (scratch == NULL)
        goto err_nomem;
    if (as_is) {
        /* Nothing of the log or the checkpoints counts any more: the
         * state is the data file's. Both go before anything is written,
         * so that no record of theirs can ever be replayed over it. */
        uint64_t records;
        MDB_envinfo info;

        keel_batch_destroy(scratch);
        rc = store_walk(s, &records);
        if (rc != 0) {
            seterr(errbuf, errlen,
                   "%s: the data file does not read through whole either "
                   "(%s): no good state is left to recover to; restore "
                   "the node from a backup, or (in a cluster) make it "
                   "forget its units",
                   s->path, keel_strerror(rc));
            goto err;
        }
        /* The file on the disk first: a machine crash from here on must
         * find it whole, since the log and checkpoints are going. */
        /* Then the checkpoints before the log: with the log still there
         * and no checkpoint, an open interrupted here refuses again
         * instead of trusting a slot the log had shown to be stale. */
        err = mdb_env_sync(s->env, 1);
        if (err == 0)
            err = keel_ckpt_reset(&s->ckpt);
        if (err == 0)
            err = keel_wal_clear(&s->wal);
        if (err != 0) {
            seterr(errbuf, errlen, "%s: clearing the log and checkpoints: %s",
                   s->path, strerror(err));
            rc = KEEL_EIO;
            goto err;
        }
        s->lsn = 0;
        s->wal.gen = 0;
        if (mdb_env_info(s->env, &info) != 0)
            info.me_last_txnid = 0;
        keel_warn("store %s: recovered to the data file as it stands: LMDB "
                  "transaction %llu, %llu records read through",
                  s->path, (unsigned long long)info.me_last_txnid,
                  (unsigned long long)records);
    } else {
        keel_wal_end end;

        s->replaying = 1;
        rc = keel_wal_replay(&s->wal, s->lsn,
                             s->ckpt.have ? s->ckpt.wal_off : 0, s->wal.gen,
                             scratch, replay_cb, s, &last, &end);
        s->replaying = 0;
        keel_batch_destroy(scratch);
        if (rc != 0) {
            if (rc > 0) /* an errno from the log */
                rc = rc == EILSEQ ? KEEL_ECORRUPT : store_err(rc);
            seterr(errbuf, errlen,
                   "%s: replaying the log after record %llu: %s", s->path,
                   (unsigned long long)s->lsn, keel_strerror(rc));
            goto err;
        }
        rc = store_check_end(s, opts, &end, errbuf, errlen);
        if (rc != 0)
            goto err;
        if (last > (s->ckpt.have ? s->ckpt.lsn : 0))
            keel_info("store %s: replayed the log up to record %llu",
                      s->path, (unsigned long long)last);
    }
    if (s->durability == KEEL_DURABILITY_NONE) {
        /* The file flushed is consistent as it is. A checkpoint of it
         * comes first, so that whichever of the steps below a crash
         * interrupts, the next open finds the same state; then the log
         * and the checkpoint go: nothing will be restored over the file
         * later, so nothing needs pinning. */
        if (s->ckpt.have || (uint64_t)wst.st_size > s->wal.start) {
            rc = store_checkpoint(s, 0);
            if (rc == 0)
                rc = keel_wal_clear(&s->wal);
            if (rc == 0)
                rc = keel_ckpt_reset(&s->ckpt);
            rc = rc > 0 ? KEEL_EIO : rc;
        } else {
            rc = mdb_env_sync(s->env, 1) == 0 ? 0 : KEEL_EIO;
        }
        if (rc != 0) {
            seterr(errbuf, errlen, "%s: leaving the log: %s", s->path,
                   keel_strerror(rc));
            goto err;
        }
        mdb_txn_abort(s->pin);
        s->pin = NULL;
        s->logged = 0;
        if (!s->writemap && !s->writemap_off) {
            /* The log is gone: open LMDB again to write through its
             * map. Nothing reads yet; the read pool is empty. */
            mdb_env_close(s->env);
            s->env = NULL;
            s->writemap = 1;
            rc = store_env_open(s, s->map_size, opts, errbuf, errlen);
            if (rc < 0)
                goto err;
        }
    } else {
        /* Always a new generation: records past the end of the replayed
         * run (never flushed, or cut short) must never be taken for the
         * records written from now on. */
        rc = store_checkpoint(s, 0);
        if (rc != 0) {
            seterr(errbuf, errlen, "%s: first checkpoint: %s", s->path,
                   keel_strerror(rc));
            goto err;
        }
    }
    s->last_lsn = s->synced_lsn = s->lsn;
    s->ckpt_ms = now_ms();
    /* Statistics count from here: the replay is not the caller's work. */
    s->commits = s->fsyncs = s->syncs = s->checkpoints = 0;
    s->commit_failures = s->fence_refusals = s->map_grows = 0;
    *out = s;
    return 0;

err_nomem:
    seterr(errbuf, errlen, "%s: out of memory", s->path);
    rc = KEEL_ENOMEM;
err:
    store_free(s, locks);
    return rc;
}

void keel_store_close(keel_store *s)
{
    if (s == NULL)
        return;
    /* A clean close leaves a checkpoint of everything: the next open has
     * nothing to replay. With durability none it leaves the file flushed. */
    if (!s->logged && !__atomic_load_n(&s->broken, __ATOMIC_RELAXED)) {
        int rc = mdb_env_sync(s->env, 1);

        if (rc != 0)
            keel_warn("store %s: sync on close failed: %s", s->path,
                      mdb_strerror(rc));
    } else if (!__atomic_load_n(&s->broken, __ATOMIC_RELAXED) &&
               (s->lsn != s->ckpt.lsn || s->wal.pos != s->wal.start)) {
        int rc;

        pthread_mutex_lock(&s->commit_lock);
        rc = store_checkpoint(s, 0);
        pthread_mutex_unlock(&s->commit_lock);
        if (rc != 0)
            keel_warn("store %s: checkpoint on close failed: %s", s->path,
                      keel_strerror(rc));
    }
    store_free(s, 1);
}

void keel_store_stats_get(keel_store *s, keel_store_stats *out)
{
    out->commits = STAT_GET(s, commits);
    out->fsyncs = STAT_GET(s, fsyncs);
    out->syncs = STAT_GET(s, syncs);
    out->unsynced = __atomic_load_n(&s->synced_lsn, __ATOMIC_ACQUIRE) <
                    __atomic_load_n(&s->last_lsn, __ATOMIC_ACQUIRE);
    out->commit_failures = STAT_GET(s, commit_failures);
    out->fence_refusals = STAT_GET(s, fence_refusals);
    out->map_grows = STAT_GET(s, map_grows);
    out->map_size = STAT_GET(s, map_size);
    out->checkpoints = STAT_GET(s, checkpoints);
}

/* --------------------------------------------------------------- reads */

/* Begin and end must run on the same thread: the shared hold on map_lock
 * belongs to it. */
int keel_store_read_begin(keel_store *s, keel_store_read **out)
{
    keel_store_read *r;
    int rc;

    if (s == NULL || out == NULL)
        return KEEL_EINVAL;
    if (__atomic_load_n(&s->broken, __ATOMIC_RELAXED))
        return KEEL_ESTORE;
    pthread_rwlock_rdlock(&s->map_lock);
    pthread_mutex_lock(&s->pool_lock);
    r = s->pool;
    if (r != NULL)
        s->pool = r->next;
    pthread_mutex_unlock(&s->pool_lock);

    if (r != NULL) {
        rc = mdb_txn_renew(r->txn);
        if (rc != 0)
            goto err_free;
    } else {
        r = calloc(1, sizeof *r);
        if (r == NULL) {
            pthread_rwlock_unlock(&s->map_lock);
            return KEEL_ENOMEM;
        }
        r->store = s;
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &r->txn);
        if (rc != 0) {
            r->txn = NULL;
            goto err_free;
        }
    }
    r->next = NULL;
    *out = r;
    return 0;

err_free:
    if (r->txn != NULL)
        mdb_txn_abort(r->txn);
    free(r);
    pthread_rwlock_unlock(&s->map_lock);
    return store_err(rc);
}

void keel_store_read_end(keel_store_read *r)
{
    keel_store *s;

    if (r == NULL)
        return;
    s = r->store;
    mdb_txn_reset(r->txn);
    pthread_mutex_lock(&s->pool_lock);
    r->next = s->pool;
    s->pool = r;
    pthread_mutex_unlock(&s->pool_lock);
    pthread_rwlock_unlock(&s->map_lock);
}

int keel_store_get(keel_store_read *r, const void *key, size_t klen,
                   keel_record *out)
{
    MDB_val k = {klen, (void *)key};
    MDB_val v;
    int rc;

    if (r == NULL || key == NULL || out == NULL || klen == 0 ||
        klen > KEEL_KEY_MAX)
        return KEEL_EINVAL;
    rc = mdb_get(r->txn, r->store->state, &k, &v);
    if (rc != 0)
        return store_err(rc);
    return record_parse(&v, out);
}

/* keel_store_scan, from the first key after `after` (alen 0: from the
 * prefix's first key). */
static int scan_from(keel_store_read *r, const void *prefix, size_t plen,
                     const void *after, size_t alen, keel_scan_fn fn,
                     void *data)
{
    MDB_cursor *cur;
    MDB_val k = {plen, (void *)prefix};
    MDB_val v;
    keel_record rec;
    int rc, ret = 0;

    if (r == NULL || fn == NULL || (plen > 0 && prefix == NULL) ||
        plen > KEEL_KEY_MAX || alen > KEEL_KEY_MAX ||
        (alen > 0 && after == NULL))
        return KEEL_EINVAL;
    rc = mdb_cursor_open(r->txn, r->store->state, &cur);
    if (rc != 0)
        return store_err(rc);
    if (alen > 0) {
        k.mv_size = alen;
        k.mv_data = (void *)after;
    }
    /* LMDB refuses an empty key to MDB_SET_RANGE; the empty prefix is the
     * whole database. */
    rc = mdb_cursor_get(cur, &k, &v, k.mv_size > 0 ? MDB_SET_RANGE : MDB_FIRST);
    if (rc == 0 && alen > 0 && k.mv_size == alen &&
        memcmp(k.mv_data, after, alen) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT); /* after it, not it */
    while (rc == 0) {
        /* plen 0 may come with a NULL prefix, which memcmp must not be
         * given even for zero bytes. */
        if (k.mv_size < plen ||
            (plen > 0 && memcmp(k.mv_data, prefix, plen) != 0))
            break;
        ret = record_parse(&v, &rec);
        if (ret != 0)
            break;
        ret = fn(k.mv_data, k.mv_size, &rec, data);
        if (ret != 0)
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        ret = store_err(rc);
    mdb_cursor_close(cur);
    return ret;
}

int keel_store_scan(keel_store_read *r, const void *prefix, size_t plen,
                    keel_scan_fn fn, void *data)
{
    return scan_from(r, prefix, plen, NULL, 0, fn, data);
}

int keel_store_scan_after(keel_store_read *r, const void *prefix,
                          size_t plen, const void *after, size_t alen,
                          keel_scan_fn fn, void *data)
{
    if (alen == 0)
        return KEEL_EINVAL;
    return scan_from(r, prefix, plen, after, alen, fn, data);
}

struct unit_scan {
    keel_store_read *r;
    const uint8_t *cap;
    size_t clen;
    keel_scan_fn fn;
    void *data;
    /* The last type looked up: records of one actor follow each other. */
    uint8_t type[KEEL_MAX_TYPE_LEN];
    size_t tlen;
    int in;
};

/* Reads go to the types database in the read's own snapshot, not to the
 * cache, which belongs to the committing thread. */
static int unit_scan_cb(const uint8_t *key, size_t klen,
                        const keel_record *rec, void *data)
{
    struct unit_scan *u = data;
    const uint8_t *type;
    size_t tlen;

    if (keel_key_type(key, klen, &type, &tlen) != 0)
        return KEEL_ECAPUNKNOWN;
    if (tlen != u->tlen || memcmp(type, u->type, tlen) != 0) {
        MDB_val k = {tlen, (void *)type}, v;
        int rc = mdb_get(u->r->txn, u->r->store->types, &k, &v);

        if (rc == MDB_NOTFOUND ||
            (rc == 0 && v.mv_size == 1 &&
             ((const uint8_t *)v.mv_data)[0] == TT_UNKNOWN_MARK))
            return KEEL_ECAPUNKNOWN;
        if (rc != 0)
            return store_err(rc);
        memcpy(u->type, type, tlen);
        u->tlen = tlen;
        u->in = v.mv_size == u->clen && memcmp(v.mv_data, u->cap, u->clen) == 0;
    }
    return u->in ? u->fn(key, klen, rec, u->data) : 0;
}

int keel_store_unit_scan(keel_store_read *r, const char *cap, uint16_t shard,
                         keel_scan_fn fn, void *data)
{
    return keel_store_unit_scan_from(r, cap, shard, NULL, 0, fn, data);
}

int keel_store_unit_scan_from(keel_store_read *r, const char *cap,
                              uint16_t shard, const void *after, size_t alen,
                              keel_scan_fn fn, void *data)
{
    struct unit_scan u;
    uint8_t prefix[2];

    if (r == NULL || fn == NULL)
        return KEEL_EINVAL;
    if (cap == NULL)
        cap = "";
    memset(&u, 0, sizeof u);
    u.r = r;
    u.cap = (const uint8_t *)cap;
    u.clen = strlen(cap);
    u.fn = fn;
    u.data = data;
    if (u.clen > 255)
        return KEEL_EINVAL;
    put_be16(prefix, shard);
    if (alen > 0 && (alen < sizeof prefix || after == NULL ||
                     memcmp(after, prefix, sizeof prefix) != 0))
        return KEEL_EINVAL; /* not a key of the shard */
    return scan_from(r, prefix, sizeof prefix, after, alen, unit_scan_cb,
                     &u);
}

struct unit_digest {
    XXH3_state_t *st;
    uint64_t n;
};

static int unit_digest_cb(const uint8_t *key, size_t klen,
                          const keel_record *rec, void *data)
{
    struct unit_digest *d = data;
    uint8_t hdr[8];

    /* klen fits 16 bits (KEEL_KEY_MAX) and a value 32 (LMDB's size). */
    put_be16(hdr, (uint16_t)klen);
    if (XXH3_64bits_update(d->st, hdr, 2) != XXH_OK ||
        XXH3_64bits_update(d->st, key, klen) != XXH_OK)
        return KEEL_ENOMEM;
    put_be64(hdr, rec->version);
    if (XXH3_64bits_update(d->st, hdr, 8) != XXH_OK)
        return KEEL_ENOMEM;
    put_be32(hdr, (uint32_t)rec->len);
    if (XXH3_64bits_update(d->st, hdr, 4) != XXH_OK ||
        (rec->len > 0 &&
         XXH3_64bits_update(d->st, rec->data, rec->len) != XXH_OK))
        return KEEL_ENOMEM;
    d->n++;
    return 0;
}

int keel_store_unit_digest(keel_store_read *r, const char *cap,
                           uint16_t shard, uint64_t *digest,
                           uint64_t *nrecords)
{
    struct unit_digest d;
    int rc;

    if (r == NULL || digest == NULL)
        return KEEL_EINVAL;
    d.st = XXH3_createState();
    if (d.st == NULL)
        return KEEL_ENOMEM;
    d.n = 0;
    if (XXH3_64bits_reset(d.st) != XXH_OK) {
        XXH3_freeState(d.st);
        return KEEL_ENOMEM;
    }
    rc = keel_store_unit_scan(r, cap, shard, unit_digest_cb, &d);
    if (rc == 0) {
        *digest = XXH3_64bits_digest(d.st);
        if (nrecords != NULL)
            *nrecords = d.n;
    }
    XXH3_freeState(d.st);
    return rc;
}

uint64_t keel_store_run(const keel_store *s)
{
    return s->run;
}

uint64_t keel_store_stale(const keel_store *s)
{
    return s->stale;
}

static int stale_put(keel_store *s, MDB_txn *txn, void *arg)
{
    (void)arg;
    return meta_put_u64(txn, s->meta, "stale", s->run != 0 ? s->run : 1);
}

int keel_store_mark_stale(keel_store *s)
{
    int rc;

    if (s == NULL)
        return KEEL_EINVAL;
    pthread_mutex_lock(&s->commit_lock);
    if (__atomic_load_n(&s->broken, __ATOMIC_RELAXED)) {
        pthread_mutex_unlock(&s->commit_lock);
        return KEEL_ESTORE;
    }
    /* Rare (once, before the node stops). A full map makes room, as for a
     * commit: without the mark, a copy opened often enough would pass the
     * cluster's run record. */
    rc = store_commit_outside_log(s, stale_put, NULL, NULL);
    if (rc == 0)
        s->stale = s->run != 0 ? s->run : 1;
    pthread_mutex_unlock(&s->commit_lock);
    if (rc != 0)
        keel_warn("store %s: recording that it is stale failed: %s", s->path,
                  keel_strerror(rc));
    return rc;
}

uint32_t keel_store_shards(const keel_store *s)
{
    return s->shards;
}

void keel_store_id(const keel_store *s, char hex[2 * KEEL_STORE_ID_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < KEEL_STORE_ID_LEN; i++) {
        hex[2 * i] = digits[s->store_id[i] >> 4];
        hex[2 * i + 1] = digits[s->store_id[i] & 15];
    }
    hex[2 * KEEL_STORE_ID_LEN] = '\0';
}

struct type_learn {
    const char *type, *cap;
    size_t tlen, clen;
};

static int type_put(keel_store *s, MDB_txn *txn, void *arg)
{
    const struct type_learn *t = arg;

    return keel_typetab_set(&s->tt, txn, s->types, (const uint8_t *)t->type,
                            t->tlen, t->cap, t->clen);
}

static void type_settle(keel_store *s, int ok, void *arg)
{
    (void)arg;
    keel_typetab_settle(&s->tt, ok);
}

int keel_store_type_learn(keel_store *s, const char *type, const char *cap)
{
    struct type_learn t;
    size_t tlen, clen;
    const char *have;
    size_t hlen;
    int st, krc;

    if (s == NULL || type == NULL)
        return KEEL_EINVAL;
    if (cap == NULL)
        cap = "";
    tlen = strlen(type);
    clen = strlen(cap);
    if (tlen == 0 || tlen > KEEL_MAX_TYPE_LEN || clen > 255)
        return KEEL_EINVAL;
    pthread_mutex_lock(&s->commit_lock);
    st = keel_typetab_get(&s->tt, (const uint8_t *)type, tlen, &have, &hlen);
    if (st != TT_UNKNOWN) {
        pthread_mutex_unlock(&s->commit_lock);
        if (st == TT_ABSENT)
            return KEEL_ENOTFOUND;
        return hlen == clen && memcmp(have, cap, clen) == 0 ? 0
                                                            : KEEL_ETYPECAP;
    }
    if (__atomic_load_n(&s->broken, __ATOMIC_RELAXED)) {
        pthread_mutex_unlock(&s->commit_lock);
        return KEEL_ESTORE;
    }
    /* Rare (once per type, after an upgrade): an LMDB commit outside the
     * log. It changes no record and no fence, but the commits logged
     * after it were made on a state that has it (a unit's deletion needs
     * the capability of every type in its shard), so a replay must start
     * from a state that has it too (store_commit_outside_log). */
    t.type = type;
    t.cap = cap;
    t.tlen = tlen;
    t.clen = clen;
    krc = store_commit_outside_log(s, type_put, type_settle, &t);
    pthread_mutex_unlock(&s->commit_lock);
    if (krc != 0)
        keel_warn("store %s: recording the capability of type %s failed: %s",
                  s->path, type, keel_strerror(krc));
    return krc;
}

int keel_store_fence_get(keel_store_read *r, const char *cap, uint16_t shard,
                         uint64_t *epoch)
{
    uint8_t kbuf[KEEL_FENCE_KEY_MAX];
    MDB_val k, v;
    size_t clen;
    int rc;

    if (r == NULL || epoch == NULL)
        return KEEL_EINVAL;
    if (cap == NULL)
        cap = "";
    clen = strlen(cap);
    if (clen > 255)
        return KEEL_EINVAL;
    k.mv_size = fence_key(kbuf, cap, clen, shard);
    k.mv_data = kbuf;
    rc = mdb_get(r->txn, r->store->fence, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *epoch = 0;
        return 0;
    }
    if (rc != 0)
        return store_err(rc);
    if (v.mv_size != 8)
        return KEEL_ECORRUPT;
    *epoch = get_be64(v.mv_data);
    return 0;
}

int keel_store_handoff_get(keel_store_read *r, const char *cap,
                           uint16_t shard, uint64_t *epoch, char *to,
                           size_t to_cap)
{
    uint8_t kbuf[HANDOFF_KEY_MAX];
    MDB_val k, v;
    size_t clen;
    int rc;

    if (r == NULL || epoch == NULL || to == NULL || to_cap == 0)
        return KEEL_EINVAL;
    if (cap == NULL)
        cap = "";
    clen = strlen(cap);
    if (clen > 255)
        return KEEL_EINVAL;
    k.mv_size = handoff_key(kbuf, cap, clen, shard);
    k.mv_data = kbuf;
    *epoch = 0;
    to[0] = '\0';
    rc = mdb_get(r->txn, r->store->meta, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return store_err(rc);
    if (v.mv_size <= 8 || v.mv_size > 8 + KEEL_HANDOFF_NAME_MAX)
        return KEEL_ECORRUPT;
    if (v.mv_size - 8 >= to_cap)
        return KEEL_ELIMIT;
    *epoch = get_be64(v.mv_data);
    memcpy(to, (const uint8_t *)v.mv_data + 8, v.mv_size - 8);
    to[v.mv_size - 8] = '\0';
    return 0;
}

/* ------------------------------------------------------------- commits */

/* The helpers below return raw LMDB/errno codes: the commit converts once,
 * after it knows whether MDB_MAP_FULL calls for growth. */

static int apply_del_prefix(keel_store *s, MDB_txn *txn, MDB_cursor **curp,
                            const uint8_t *prefix, size_t plen)
{
    MDB_val k, v;
    int rc;

    if (*curp == NULL) {
        rc = mdb_cursor_open(txn, s->state, curp);
        if (rc != 0) {
            *curp = NULL;
            return rc;
        }
    }
    /* Seeking again after every delete keeps the loop independent of
     * where mdb_cursor_del leaves the cursor when pages merge. */
    for (;;) {
        k.mv_size = plen;
        k.mv_data = (void *)prefix;
        rc = mdb_cursor_get(*curp, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_NOTFOUND)
            return 0;
        if (rc != 0)
            return rc;
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            return 0;
        rc = mdb_cursor_del(*curp, 0);
        if (rc != 0)
            return rc;
        s->wrote = 1;
    }
}

static int apply_op(keel_store *s, MDB_txn *txn, MDB_cursor **curp,
                    const keel_batch *b, const struct batch_group *g,
                    const struct batch_op *op)
{
    MDB_val k = {op->klen, (void *)batch_op_key(op)};
    MDB_val v;
    int rc;

    switch (op->kind) {
    case BATCH_OP_PUT:
        /* Reserve the value in the map and write the header and the data
         * straight into it: no staging copy. */
        v.mv_size = KEEL_RECORD_HEADER + op->dlen;
        v.mv_data = NULL;
        rc = mdb_put(txn, s->state, &k, &v, MDB_RESERVE);
        if (rc != 0)
            return rc;
        s->wrote = 1;
        put_be64(v.mv_data, op->version);
        put_be64((uint8_t *)v.mv_data + 8, g->epoch);
        if (op->dlen > 0)
            memcpy((uint8_t *)v.mv_data + KEEL_RECORD_HEADER,
                   batch_op_data(op), op->dlen);
        return 0;
    case BATCH_OP_DEL:
        rc = mdb_del(txn, s->state, &k, NULL);
        if (rc == 0)
            s->wrote = 1;
        return rc == MDB_NOTFOUND ? 0 : rc;
    case BATCH_OP_DEL_PREFIX:
        return apply_del_prefix(s, txn, curp, batch_op_key(op), op->klen);
    case BATCH_OP_DEL_UNIT:
        return keel_unit_delete(&s->tt, txn, s->state, curp, b, g, op,
                                op->version, &s->wrote);
    default:
        return MDB_CORRUPTED;
    }
}

static struct fence_entry *fence_cache_find(struct fence_cache *fc,
                                            const uint8_t *key, size_t klen,
                                            uint64_t h)
{
    size_t i;

    if (fc->slots == NULL)
        return NULL;
    for (i = h & fc->mask; fc->slots[i].used; i = (i + 1) & fc->mask) {
        struct fence_entry *e = &fc->slots[i];
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    }
    return NULL;
}

/* Adds a key known to be absent. NULL when memory is short: the caller
 * then simply goes without the cache. */
static struct fence_entry *fence_cache_add(struct fence_cache *fc,
                                           const uint8_t *key, size_t klen,
                                           uint64_t h, uint64_t epoch)
{
    struct fence_entry *e;
    size_t i;

    if (klen > FENCE_CACHE_KEY)
        return NULL;
    if (fc->slots == NULL || (fc->count + 1) * 4 > (fc->mask + 1) * 3) {
        size_t cap = fc->slots ? (fc->mask + 1) * 2 : 1024, j;
        struct fence_entry *ns = calloc(cap, sizeof *ns);
        if (ns == NULL)
            return NULL;
        for (j = 0; fc->slots != NULL && j <= fc->mask; j++) {
            if (!fc->slots[j].used)
                continue;
            for (i = fc->slots[j].hash & (cap - 1); ns[i].used;
                 i = (i + 1) & (cap - 1))
                ;
            ns[i] = fc->slots[j];
        }
        free(fc->slots);
        fc->slots = ns;
        fc->mask = cap - 1;
    }
    for (i = h & fc->mask; fc->slots[i].used; i = (i + 1) & fc->mask)
        ;
    e = &fc->slots[i];
    e->used = 1;
    e->hash = h;
    e->epoch = epoch;
    e->dirty = 0;
    e->klen = (uint8_t)klen;
    memcpy(e->key, key, klen);
    fc->count++;
    return e;
}

/* After a commit: raised fences become the committed ones (ok), or are
 * forgotten (the transaction was abandoned). */
static void fence_cache_settle(struct fence_cache *fc, int ok)
{
    size_t i;

    /* Fences are raised rarely (a unit's first write at a new epoch), so
     * most commits have nothing to settle. */
    fc->uncached = 0;
    if (fc->ndirty == 0)
        return;
    fc->ndirty = 0;
    for (i = 0; fc->slots != NULL && i <= fc->mask; i++) {
        struct fence_entry *e = &fc->slots[i];
        if (e->used && e->dirty) {
            if (ok)
                e->epoch = e->pending;
            e->dirty = 0;
        }
    }
}

static int apply_handoff(keel_store *s, MDB_txn *txn, const uint8_t *cap,
                         size_t clen, uint16_t shard,
                         const struct batch_op *op)
{
    uint8_t kbuf[HANDOFF_KEY_MAX], vbuf[8 + KEEL_HANDOFF_NAME_MAX];
    MDB_val k, v;
    int rc;

    if (op->klen == 0 || op->klen > KEEL_HANDOFF_NAME_MAX)
        return MDB_CORRUPTED;
    k.mv_size = handoff_key(kbuf, cap, clen, shard);
    k.mv_data = kbuf;
    put_be64(vbuf, op->version);
    memcpy(vbuf + 8, batch_op_key(op), op->klen);
    v.mv_size = 8 + op->klen;
    v.mv_data = vbuf;
    rc = mdb_put(txn, s->meta, &k, &v, 0);
    if (rc == 0)
        s->wrote = 1;
    return rc;
}

/* BATCH_OP_CHECK_UNIT: the unit's digest as this transaction sees it
 * (the batch's earlier groups applied); on another than op->version,
 * every record of the unit goes and the group says so. */
static int apply_check(keel_store *s, MDB_txn *txn, MDB_cursor **curp,
                       const keel_batch *b, struct batch_group *g,
                       const struct batch_op *op)
{
    keel_store_read rd = {s, txn, NULL};
    uint64_t digest = 0;
    int rc;

    /* The arena keeps a NUL after the capability (keel_batch_begin_group). */
    rc = keel_store_unit_digest(&rd, (const char *)b->buf + g->cap_off,
                                g->shard, &digest, NULL);
    if (rc != 0)
        return rc == KEEL_ENOMEM ? ENOMEM : MDB_CORRUPTED;
    if (digest == op->version)
        return 0;
    g->differs = 1;
    return keel_unit_delete(&s->tt, txn, s->state, curp, b, g, op, 0,
                            &s->wrote);
}

/* Checks the group's fence in txn; refuses the group or raises the fence
 * and applies its ops. */
static int apply_group(keel_store *s, MDB_txn *txn, MDB_cursor **curp,
                       const keel_batch *b, struct batch_group *g,
                       uint64_t *refusals)
{
    uint8_t kbuf[KEEL_FENCE_KEY_MAX], vbuf[8];
    struct fence_entry *fe;
    MDB_val k, v;
    uint64_t stored = 0, h;
    int rc, learn;

    k.mv_size = fence_key(kbuf, b->buf + g->cap_off, g->cap_len, g->shard);
    k.mv_data = kbuf;
    h = XXH3_64bits(kbuf, k.mv_size);
    fe = fence_cache_find(&s->fc, kbuf, k.mv_size, h);
    if (fe != NULL) {
        stored = fe->dirty ? fe->pending : fe->epoch;
    } else {
        rc = mdb_get(txn, s->fence, &k, &v);
        if (rc == 0) {
            if (v.mv_size != 8)
                return MDB_CORRUPTED;
            stored = get_be64(v.mv_data);
        } else if (rc != MDB_NOTFOUND) {
            return rc;
        }
        /* Nothing earlier in this transaction touched this fence (it
         * would be cached), so what was read is the committed value;
         * unless a raise could not be cached (fc.uncached). */
        if (!s->fc.uncached)
            fe = fence_cache_add(&s->fc, kbuf, k.mv_size, h, stored);
    }
    if (stored > g->epoch) {
        g->status = KEEL_EFENCED;
        (*refusals)++;
        return 0;
    }
    rc = keel_unit_group_check(&s->tt, txn, s->state, b, g, &s->tt_seen,
                               &g->status, &learn);
    if (rc != 0 || g->status != 0)
        return rc;
    if (learn && (rc = keel_unit_learn_types(&s->tt, txn, s->types, b, g,
                                             &s->wrote)) != 0)
        return rc;
    if (stored < g->epoch) {
        put_be64(vbuf, g->epoch);
        v.mv_size = sizeof vbuf;
        v.mv_data = vbuf;
        rc = mdb_put(txn, s->fence, &k, &v, 0);
        if (rc != 0)
            return rc;
        s->wrote = 1;
        if (fe != NULL) {
            if (!fe->dirty)
                s->fc.ndirty++;
            fe->pending = g->epoch;
            fe->dirty = 1;
        } else {
            s->fc.uncached = 1;
        }
    }
    for (size_t off = g->ops_off; off < g->ops_end;) {
        const struct batch_op *op = batch_op_at(b, off);

        if (op->kind == BATCH_OP_CHECK_UNIT)
            rc = apply_check(s, txn, curp, b, g, op);
        else if (op->kind == BATCH_OP_HANDOFF)
            rc = apply_handoff(s, txn, b->buf + g->cap_off, g->cap_len,
                               g->shard, op);
        else
            rc = apply_op(s, txn, curp, b, g, op);
        if (rc != 0)
            return rc;
        off += batch_op_size(op);
    }
    return 0;
}

/* One attempt: the whole batch in one write transaction, logged before it
 * commits (except while replaying the log). On failure the transaction is
 * aborted and nothing is written; *lsn is 0 when the batch changed
 * nothing (then nothing is logged either). */
static int commit_once(keel_store *s, keel_batch *b, uint64_t *refusals,
                       uint64_t *lsn)
{
    MDB_cursor *cur = NULL;
    MDB_txn *txn;
    int rc;

    *refusals = 0;
    *lsn = 0;
    s->wrote = 0;
    s->log_full = 0;
    s->tt_seen.type = NULL;
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < b->ngroups; i++) {
        struct batch_group *g = &b->groups[i];

        g->status = g->pre_status;
        g->differs = 0;
        if (g->status != 0)
            continue; /* refused by the writer: writes nothing */
        rc = apply_group(s, txn, &cur, b, g, refusals);
        if (rc != 0)
            goto err_abort;
    }
    if (cur != NULL)
        mdb_cursor_close(cur);
    cur = NULL;
    if (!s->wrote) {
        mdb_txn_abort(txn);
        return 0;
    }
    if (!s->replaying && s->logged) {
        /* The record holds the groups that were applied, so a replay on
         * the same state applies exactly them. */
        keel_wal_rec_begin(&s->wal);
        for (size_t i = 0; i < b->ngroups && rc == 0; i++)
            if (b->groups[i].status == 0)
                rc = keel_wal_rec_group(&s->wal, b, i);
        if (rc == 0)
            rc = keel_wal_rec_append(
                &s->wal, s->lsn + 1,
                __atomic_load_n(&s->synced_lsn, __ATOMIC_ACQUIRE));
        if (rc == ENOSPC || rc == EFBIG || rc == EDQUOT)
            s->log_full = 1;
        if (rc != 0)
            goto err_abort;
    }
    /* mdb_txn_commit frees the transaction whether or not it succeeds. */
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        if (!s->replaying && s->logged &&
            keel_wal_rec_cancel(&s->wal) != 0) {
            /* The record may stay and be replayed: the store cannot
             * answer for a failure it reports. */
            __atomic_store_n(&s->broken, 1, __ATOMIC_RELAXED);
            keel_error("store %s: cannot withdraw the log record of a "
                       "failed commit; the store refuses further work",
                       s->path);
        }
        return rc;
    }
    if (!s->replaying && s->logged)
        keel_wal_rec_done(&s->wal);
    *lsn = ++s->lsn;
    return 0;

err_abort:
    if (cur != NULL)
        mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

/* Doubles the map, bounded by max_map_size. Called with commit_lock held
 * and no write transaction open; waits for open reads to end. */
static int store_grow(keel_store *s)
{
    uint64_t cur = s->map_size, next;
    MDB_envinfo info;
    int rc;

    if (map_next(s, cur, &next) != 0)
        return KEEL_ENOSPC;

    /* The map may not move under an open transaction, the pin included.
     * Checkpointing first makes the pin's snapshot the newest one, so
     * pinning again after the resize (no commit can come between) pins
     * the same snapshot. While replaying, the checkpoint points at the
     * record being replayed instead of starting the log again. */
    if (s->logged) {
        if (s->lsn != s->ckpt.lsn) {
            rc = store_checkpoint(s, s->replaying ? s->replay_off : 0);
            if (rc != 0)
                return rc;
        }
        mdb_txn_abort(s->pin);
        s->pin = NULL;
    }
    if (s->writemap) {
        /* LMDB extends the file when it maps it again, after unmapping
         * it: the blocks must be there before (see "Writes through the
         * map"). Short of room for the doubled map, a smaller step may
         * still fit: halved down to STORE_GROW_MIN, so that the disk
         * fills up to about that much, as it does writing through the
         * file. */
        uint64_t step = next - cur;
        int fd, err;

        if (mdb_env_get_fd(s->env, &fd) != 0)
            return KEEL_EIO;
        for (;;) {
            err = store_reserve(fd, cur, cur + step);
            if (err == 0 || (err != ENOSPC && err != EDQUOT && err != EFBIG) ||
                step / 2 < STORE_GROW_MIN)
                break;
            step = (step / 2) & ~(uint64_t)(s->psize - 1);
        }
        if (err != 0) {
            keel_warn("store %s: cannot reserve %llu bytes to grow the "
                      "map: %s",
                      s->path, (unsigned long long)(cur + step),
                      strerror(err));
            return err == ENOSPC || err == EFBIG || err == EDQUOT
                       ? KEEL_ENOSPC
                       : KEEL_EIO;
        }
        next = cur + step;
    }
    pthread_rwlock_wrlock(&s->map_lock);
    rc = mdb_env_set_mapsize(s->env, (size_t)next);
    if (rc == 0)
        rc = mdb_env_info(s->env, &info);
    pthread_rwlock_unlock(&s->map_lock);
    /* Pinned again whether or not the map grew (EINVAL leaves it as it
     * was): unpinned, a commit could write over the checkpoint. */
    if ((rc == 0 || rc == EINVAL) && s->logged) {
        int prc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->pin);

        if (prc != 0) {
            s->pin = NULL;
            __atomic_store_n(&s->broken, 1, __ATOMIC_RELAXED);
            keel_error("store %s: cannot pin the checkpoint after growing "
                       "the map: %s; the store refuses further work",
                       s->path, mdb_strerror(prc));
            return store_err(prc);
        }
    }
    if (rc != 0) {
        /* EINVAL is refused before anything changes; any other failure
         * comes after LMDB has unmapped the file. */
        if (rc != EINVAL)
            __atomic_store_n(&s->broken, 1, __ATOMIC_RELAXED);
        keel_error("store %s: growing the map to %llu bytes failed: %s",
                   s->path, (unsigned long long)next, mdb_strerror(rc));
        return store_err(rc);
    }
    __atomic_store_n(&s->map_size, (uint64_t)info.me_mapsize,
                     __ATOMIC_RELAXED);
    STAT_ADD(s, map_grows, 1);
    keel_info("store %s: map grown to %llu bytes", s->path,
              (unsigned long long)info.me_mapsize);
    return 0;
}

/* LMDB turns a short write into EIO ("filesystem full?"): a write that
 * runs into a full disk or the file size limit writes what fits and
 * returns a short count. Ask the file system whether the data file can
 * take one more page at its end: if that fails for lack of space, so did
 * the commit. Bytes past LMDB's last page belong to no database, so the
 * probe page, when it is written, is harmless. */
static int store_classify_eio(keel_store *s)
{
    static const uint8_t zeros[4096];
    struct stat st;
    ssize_t n;
    int fd;

    if (mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &st) < 0)
        return KEEL_EIO;
    n = pwrite(fd, zeros, sizeof zeros, st.st_size);
    if (n >= 0 && (size_t)n < sizeof zeros)
        return KEEL_ENOSPC;
    if (n < 0 && (errno == ENOSPC || errno == EFBIG || errno == EDQUOT))
        return KEEL_ENOSPC;
    return KEEL_EIO;
}

/* synced_lsn only grows: committers and syncers race to raise it. */
static void raise_synced(keel_store *s, uint64_t lsn)
{
    uint64_t cur = __atomic_load_n(&s->synced_lsn, __ATOMIC_ACQUIRE);

    while (cur < lsn &&
           !__atomic_compare_exchange_n(&s->synced_lsn, &cur, lsn, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        ;
}

int keel_store_broken(const keel_store *s)
{
    return __atomic_load_n(&s->broken, __ATOMIC_RELAXED);
}

static void store_fail(keel_store *s, const char *what, int err)
{
    __atomic_store_n(&s->broken, 1, __ATOMIC_RELAXED);
    keel_error("store %s: %s failed: %s; the store refuses further work",
               s->path, what, strerror(err));
}

/* See "Checkpoints". commit_lock held (or the store not yet shared), no
 * write transaction open. Records after s->lsn start at wal_off; 0 starts
 * the log again. A failed flush or checkpoint write breaks the store (the
 * kernel may have dropped what it could not write); a failure to pin
 * leaves the previous checkpoint in force and is returned. */
static int store_checkpoint(keel_store *s, uint64_t wal_off)
{
    size_t n = 2u * (size_t)s->psize;
    MDB_envinfo info;
    MDB_txn *pin;
    uint8_t *pages;
    int fd, rc;

    if (__atomic_load_n(&s->broken, __ATOMIC_RELAXED))
        return KEEL_ESTORE;
    pages = malloc(n);
    if (pages == NULL)
        return KEEL_ENOMEM;
    rc = mdb_env_sync(s->env, 1);
    if (rc != 0) {
        free(pages);
        store_fail(s, "flushing the data file", rc);
        return KEEL_EIO;
    }
    rc = mdb_env_get_fd(s->env, &fd);
    if (rc == 0) {
        ssize_t got = pread(fd, pages, n, 0);

        if (got != (ssize_t)n)
            rc = got < 0 ? errno : EIO;
    }
    if (rc != 0) {
        free(pages);
        store_fail(s, "reading the meta pages", rc);
        return KEEL_EIO;
    }
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &pin);
    if (rc != 0) {
        free(pages);
        keel_warn("store %s: cannot pin a checkpoint: %s", s->path,
                  mdb_strerror(rc));
        return store_err(rc);
    }
    /* Starting the log again starts a new generation (wal.h). */
    rc = keel_ckpt_write(&s->ckpt, s->lsn, wal_off,
                         wal_off == 0 ? s->ckpt.seq + 1 : s->wal.gen,
                         s->psize, pages);
    free(pages);
    if (rc != 0) {
        mdb_txn_abort(pin);
        store_fail(s, "writing the checkpoint", rc);
        return KEEL_EIO;
    }
    /* A checkpoint made while replaying starts no generation, so nothing
     * in the log would show it was made once its slot is damaged; yet
     * the replay goes on to reuse the pages of the one before. Its mark
     * says so (see store_check_ckpt). */
    if (wal_off != 0 && (rc = keel_wal_mark(&s->wal, s->ckpt.seq)) != 0)
        keel_warn("store %s: cannot mark the checkpoint in the log: %s",
                  s->path, strerror(rc));
    if (s->pin != NULL)
        mdb_txn_abort(s->pin);
    s->pin = pin;
    if (wal_off == 0) {
        rc = keel_wal_restart(&s->wal);
        s->wal.gen = s->ckpt.wal_gen;
        if (rc != 0) {
            store_fail(s, "writing the log's new header", rc);
            return KEEL_EIO;
        }
    }
    if (mdb_env_info(s->env, &info) == 0)
        s->ckpt_pgno = info.me_last_pgno;
    s->ckpt_ms = now_ms();
    STAT_ADD(s, checkpoints, 1);
    STAT_ADD(s, fsyncs, 2);
    /* Everything committed is in the flushed file now. */
    raise_synced(s, s->lsn);
    return 0;
}

/* After a commit, with commit_lock held: a checkpoint when one is due. */
static void store_after_commit(keel_store *s)
{
    MDB_envinfo info;

    if (s->replaying || !s->logged || mdb_env_info(s->env, &info) != 0)
        return;
    if (s->wal.pos >= CKPT_LOG_BYTES ||
        info.me_last_pgno >= s->ckpt_pgno + CKPT_PAGES ||
        now_ms() - s->ckpt_ms >= s->ckpt_interval_ms) {
        int rc = store_checkpoint(s, 0);

        if (rc != 0 && rc != KEEL_EIO && rc != KEEL_ESTORE)
            keel_warn("store %s: checkpoint deferred: %s", s->path,
                      keel_strerror(rc));
        return;
    }
}

/* Waits for the data pages sent to the disk last time, then sends the
 * ones committed since. Called by the writer once a round of commits is
 * durable and reported (so the log's flush never queues behind these
 * writes), or, after an inline commit, once the loop has written the
 * round's answers (keel_writer_writeback): the disk's bandwidth
 * paces the writer, as it did when every
 * commit flushed its own pages, and a checkpoint, which holds up every
 * commit while it flushes the file, finds little left to write. */
void keel_store_writeback(keel_store *s)
{
    /* (Sending only once many pages have piled up was tried: the waits
     * it saves per round come back as stalls of a millisecond or more.)
     * A write-back error is reported once per open file: wb_fd is a
     * descriptor of its own, so the checkpoint's flush through LMDB's
     * still sees it, and the store stops here as well. */
    if (!s->logged || s->wb_fd < 0 ||
        __atomic_load_n(&s->broken, __ATOMIC_RELAXED))
        return;
    if (sync_file_range(s->wb_fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE) < 0 ||
        sync_file_range(s->wb_fd, 0, 0, SYNC_FILE_RANGE_WRITE) < 0)
        store_fail(s, "writing back the data file", errno);
}

/* Not with a read open on the calling thread: growth would wait for it. */
int keel_store_commit_deferred(keel_store *s, keel_batch *b, uint64_t *txn)
{
    uint64_t refusals = 0, id = 0;
    int rc, freed = 0;

    if (s == NULL || b == NULL || txn == NULL)
        return KEEL_EINVAL;
    *txn = 0;
    if (b->ngroups == 0)
        return 0;
    pthread_mutex_lock(&s->commit_lock);
    rc = s->hooks.before_commit ? s->hooks.before_commit(s->hooks.data) : 0;
    for (; rc == 0;) {
        if (__atomic_load_n(&s->broken, __ATOMIC_RELAXED)) {
            rc = KEEL_ESTORE;
            break;
        }
        rc = commit_once(s, b, &refusals, &id);
        fence_cache_settle(&s->fc, rc == 0);
        keel_typetab_settle(&s->tt, rc == 0);
        /* Out of room in the map, or in the log: a checkpoint may be all
         * it takes, once per commit. It releases the pages the pin held
         * and starts the log again in the room it already has. (While
         * replaying, the log is not appended to, and the checkpoint
         * points at the record being replayed.) */
        if (!freed && s->logged && s->lsn != s->ckpt.lsn &&
            (rc == MDB_MAP_FULL ||
             (s->log_full && s->wal.pos > s->wal.start))) {
            freed = 1;
            rc = store_checkpoint(s, s->replaying ? s->replay_off : 0);
            if (rc != 0)
                break;
            continue;
        }
        if (rc != MDB_MAP_FULL) {
            int raw = rc;

            rc = raw == EIO ? store_classify_eio(s) : store_err(raw);
            if (rc != 0)
                commit_warn(s, rc, "%s (%s)", keel_strerror(rc),
                            raw > 0 && raw < 4096 ? strerror(raw)
                                                  : mdb_strerror(raw));
            break;
        }
        rc = store_grow(s);
        if (rc < 0) {
            if (rc == KEEL_ENOSPC)
                commit_warn(s, rc, "map full at %s%llu bytes",
                            s->max_map_size != 0 &&
                                    s->map_size >= s->max_map_size
                                ? "its maximum of "
                                : "",
                            (unsigned long long)s->map_size);
            break;
        }
    }
    if (rc == 0) {
        if (s->fail_run > 0) {
            keel_info("store %s: commits succeed again, after %llu failed",
                      s->path, (unsigned long long)s->fail_run);
            s->fail_run = s->fail_unlogged = 0;
        }
        STAT_ADD(s, commits, 1);
        STAT_ADD(s, fence_refusals, refusals);
        if (id != 0 && b->sync && !s->logged) {
            /* Nothing else would make it durable (no log): flush the
             * file now. A failed flush leaves the fate of every unflushed
             * commit unknown, as in keel_store_sync: this one committed,
             * so it is in doubt, never "not written". */
            rc = s->hooks.before_sync != NULL
                     ? s->hooks.before_sync(s->hooks.data)
                     : 0;
            if (rc == 0)
                rc = mdb_env_sync(s->env, 1);
            if (rc != 0) {
                store_fail(s, "flushing the data file", rc);
                rc = KEEL_EINDOUBT;
            } else {
                STAT_ADD(s, fsyncs, 1);
                STAT_ADD(s, syncs, 1);
            }
        }
        if (id != 0) {
            *txn = id;
            __atomic_store_n(&s->last_lsn, id, __ATOMIC_RELEASE);
            if (s->durability == KEEL_DURABILITY_NONE && rc == 0)
                raise_synced(s, id);
            store_after_commit(s);
        }
    } else {
        STAT_ADD(s, commit_failures, 1);
        /* Group statuses say only whether a group was refused (store.h);
         * nothing was written and the return value says why, so no group
         * reports a refusal from an abandoned attempt. */
        for (size_t i = 0; i < b->ngroups; i++)
            b->groups[i].status = 0;
    }
    pthread_mutex_unlock(&s->commit_lock);
    return rc;
}

int keel_store_durable(keel_store *s, uint64_t txn)
{
    return txn <= __atomic_load_n(&s->synced_lsn, __ATOMIC_ACQUIRE);
}

int keel_store_sync(keel_store *s)
{
    uint64_t last;
    int rc;

    if (s == NULL)
        return KEEL_EINVAL;
    if (__atomic_load_n(&s->broken, __ATOMIC_RELAXED))
        return KEEL_ESTORE;
    /* Every record appended before the flush begins is durable after it;
     * a commit racing with it is counted on its own. */
    last = __atomic_load_n(&s->last_lsn, __ATOMIC_ACQUIRE);
    if (__atomic_load_n(&s->synced_lsn, __ATOMIC_ACQUIRE) >= last)
        return 0;
    rc = s->hooks.before_sync != NULL ? s->hooks.before_sync(s->hooks.data)
                                      : 0;
    if (rc == 0)
        rc = keel_wal_sync(&s->wal);
    if (rc != 0) {
        /* The kernel may have dropped the pages it could not write, and a
         * second flush would then report success: what was appended since
         * the last good flush may be gone, so stop here. */
        store_fail(s, "flushing the log", rc);
        return KEEL_EIO;
    }
    STAT_ADD(s, fsyncs, 1);
    STAT_ADD(s, syncs, 1);
    raise_synced(s, last);
    return 0;
}

int keel_store_commit(keel_store *s, keel_batch *b)
{
    uint64_t txn;
    int rc = keel_store_commit_deferred(s, b, &txn);

    if (rc == 0 && txn != 0 && !keel_store_durable(s, txn))
        rc = keel_store_sync(s);
    return rc;
}

void keel_store_set_hooks(keel_store *s, const keel_store_hooks *hooks)
{
    if (hooks != NULL)
        s->hooks = *hooks;
    else
        memset(&s->hooks, 0, sizeof s->hooks);
}
