/* Internals of replication shared by runtime/repl.c (the stream, the
 * commit rule, the backup side) and runtime/catchup.c (bringing a backup
 * out of sync back into the in-sync set). Loop thread unless noted. */
#ifndef KEEL_RUNTIME_REPL_INT_H
#define KEEL_RUNTIME_REPL_INT_H

#include <pthread.h>
#include <stdint.h>

#include "coordinator/cluster.h"
#include "coordinator/shardmap.h"
#include "runtime/cluster_rt_int.h"
#include "runtime/hmap.h"
#include "runtime/peer.h"
#include "runtime/repl.h"

#include <string.h>
#include <xxhash.h>

#define REPL_LAG_MS_DEFAULT 1000
#define REPL_TICK_S 0.02
/* Two ticks further apart than this: the loop itself was held up (a long
 * turn, an inline commit whose flush stalled, a starved process), and
 * time it was held does not count against the backups (tick_cb). */
#define REPL_STALL_S 0.1
/* A refused piece or a failed link: everything unacknowledged goes again
 * after this pause (the refusal is typically a backup that has not read
 * the map yet). */
#define REPL_RETRY_S 0.05
#define REPL_PIECE_MAX (256u << 10)
#define REPL_FRAME_MAX (1u << 20)
/* What one frame may carry: a peer link's limit. A single group larger
 * than that is never sent: the backup sees the gap in seqs and refuses
 * what follows, and it is dropped from the in-sync set after the lag. */
#define REPL_SEND_MAX (KEEL_PEER_MAX_FRAME - KEEL_FRAME_HEADER)
#define REPL_MAX_BACKUPS 4
/* The largest frame a backup commits on its loop thread (keel__repl_frame):
 * as node_commit.c's inline commits with fsync. */
#define REPL_INLINE_GROUPS 16
#define REPL_INLINE_BYTES (64u << 10)

typedef struct repl_link repl_link;
typedef struct repl_frame repl_frame;
typedef struct repl_unit repl_unit;
typedef struct repl_wait repl_wait;

/* A backup of a unit that is not in its in-sync set being brought into
 * it (runtime/catchup.c): sent a snapshot of the unit at snap_seq, then
 * every later piece; once the snapshot is durable there, replies of the
 * unit wait for it as for an in-sync backup (it is "counted"), and once
 * it also acknowledged every piece numbered before that (their replies
 * may have left without it) the controller is asked to add it; it stays
 * counted until the coordinator says the request is settled
 * (keel_cluster_add_pending). */
enum repl_cu_phase {
    CU_SNAP = 1,  /* snapshot sent, not acknowledged yet */
    CU_TAIL,      /* snapshot durable there; not counted yet */
    CU_ASKED,     /* counted; the add asked once `need` is acknowledged */
    CU_WITHDRAWN  /* add withdrawn: counted until the withdrawal settles */
};

typedef struct repl_catchup {
    repl_link *l; /* NULL: free slot */
    uint64_t epoch;
    /* The seq of the snapshot's last part (UINT64_MAX while parts are
     * still to be read), and of the part sent last. */
    uint64_t snap_seq;
    uint64_t part_seq;
    /* A snapshot larger than CU_PART_BYTES goes in parts: the key the
     * next one starts after (malloc'd; NULL once the last is sent). */
    uint8_t *resume;
    size_t rlen;
    uint64_t acked; /* the highest seq it acknowledged at epoch */
    /* CU_ASKED: the last piece numbered before it was counted, and
     * whether the add was asked (published) yet. */
    uint64_t need;
    int published;
    int phase;
    int part_out; /* a part sent, not durable there yet (l->snap_parts) */
    /* The first piece was a check (the unit's digest, no records) whose
     * answer has not come: the same, the snapshot is durable there; other,
     * the records follow in parts (repl_catchup_differs). */
    int checking;
    int first_part; /* the next part is the first after a check */
    ev_tstamp since; /* when the phase began */
    char store[KEEL_MAP_STORE_HEX + 1];
} repl_catchup;

/* Replies of a unit's actors from one settle on, released when every
 * backup listed has acknowledged seq at epoch (or left the unit's in-sync
 * set), or failed in doubt. */
struct repl_wait {
    repl_wait *next;
    uint64_t epoch, seq;
    /* The flush (keel__repl_flushed) that made it: the replies of a batch
     * wait on the last entry made by a flush the batch holds, or earlier. */
    uint64_t no;
    ev_tstamp born;
    ev_tstamp forgiven; /* how much stall_forgive moved born, in all */
    int doubt; /* fail the replies: the writes cannot be confirmed */
    /* Its replies were answered in doubt while this node was fenced: it
     * stays only so that later reads wait behind it (tick_cb), and keeps
     * neither actors resident nor a stopping node waiting. */
    int answered;
    /* A confirm round (the read rule): its replies wrote nothing; it is
     * complete once each backup answered the round's empty piece `cid`
     * (sent after the replies' turns ran) at epoch without refusing it,
     * seq is not used. */
    int confirm;
    uint64_t cid;
    unsigned nb;
    struct {
        repl_link *l;
        int done;
        /* A suspect backup (repl_unit.suspect): its acks do not count,
         * only the map showing it out of the in-sync set. */
        int drop_only;
    } b[REPL_MAX_BACKUPS];
    keel_req_queue reqs;
    size_t nreqs;
};

struct repl_unit {
    uint64_t hash;
    uint32_t shard;
    uint64_t epoch;  /* of seq */
    uint64_t seq;    /* the last piece numbered at epoch */
    uint64_t stale;  /* a backup holds a newer epoch than this one */
    /* Its pieces with writes listed on links and not answered for good
     * (at any epoch): a release scans the frames only when there are. */
    uint32_t unacked;
    repl_wait *head, *tail;
    /* The confirm round of reads not sent yet (on r->cpend), or NULL;
     * and the last round's number. */
    repl_wait *conf;
    uint64_t cid;
    repl_unit *cnext;
    repl_unit *bnext, *bprev; /* on r->busy while it has entries */
    int busy;
    /* Flushes of the unit's writes: the last whose pieces were sent at
     * the flush, before the local commit (early), and the first and last
     * of the run of flushes since whose pieces wait for their batch to
     * settle (late: while a backup catches up, see keel__repl_flushed). */
    uint64_t early_no, late_from, late_to;
    /* A catch-up waits for the early pieces to settle (catchup.c): the
     * unit's flushes go late meanwhile. */
    ev_tstamp cu_want_at;
    int smode; /* this settle: SM_SKIP, SM_SEND */
    /* In-sync backups that may hold writes this node does not (a commit
     * of its own that failed after its pieces left), or lack some it
     * holds (a restart): they get no more pieces at that epoch, and every
     * reply of the unit, a read's too, waits until the map shows them out
     * of the in-sync set (they then catch up from a snapshot like any
     * backup out of sync). `since`: when it was found suspect. */
    struct {
        repl_link *l;
        uint64_t epoch;
        ev_tstamp since;
    } suspect[REPL_MAX_BACKUPS];
    unsigned nsuspect;
    /* A commit here failed after the unit's writes left, and the unit was
     * not this node's any more: its failures are in doubt. */
    int fail_doubt;
    uint64_t resumed_epoch; /* keel__repl_resumed ran at this epoch */
    /* Backups whose counted catch-up of the unit ended with its pieces
     * forgotten while its add request might still be honoured: asked,
     * then no longer pending because this node's session ended (the
     * state that asks it is still published) or because it was settled
     * (repl_forgot_note). A map that has one in sync at that epoch got it
     * there without those pieces: it is made suspect (repl_forgot_check).
     * Kept until the unit's epoch moves on, or a new catch-up of the
     * backup asks its add (it holds everything then). */
    struct {
        repl_link *l;
        uint64_t epoch;
    } forgot[REPL_MAX_BACKUPS];
    unsigned nforgot;
    /* Drops asked for (keel_cluster_request_drop), by backup and epoch. */
    struct {
        repl_link *l;
        uint64_t epoch;
    } asked[REPL_MAX_BACKUPS];
    /* The highest seq each backup acknowledged of a piece at an epoch
     * (this node's stream): a gap refusal of the very next piece means
     * the backup forgot the stream (suspect_restarted). */
    struct {
        repl_link *l;
        uint64_t epoch, seq;
    } acked[REPL_MAX_BACKUPS];
    /* Scratch of one settle: its backups, decided once per settle, and
     * whether its replies wait on each (a backup catching up is sent the
     * pieces before its acknowledgements count). */
    uint64_t settle;
    uint64_t settle_epoch;
    unsigned snb;
    int sdoubt;
    uint64_t sfail; /* the settle whose replies it could not hold */
    repl_link *sl[REPL_MAX_BACKUPS];
    uint8_t sw[REPL_MAX_BACKUPS];
    unsigned sns; /* the suspect backups of this settle: waited on only */
    repl_link *ss[REPL_MAX_BACKUPS];
    /* Backups catching up (runtime/catchup.c); on r->cuhead while any. */
    repl_catchup cu[REPL_MAX_BACKUPS];
    unsigned ncu;
    repl_unit *cunext, *cuprev;
    int culisted;
    ev_tstamp cu_retry_at; /* no new catch-up of the unit before */
    char cap[];
};

struct rf_unit {
    repl_unit *u;
    uint64_t epoch, seq; /* seq 0: the confirm round cid */
    uint64_t cid;
    int done;
};

struct repl_frame {
    repl_frame *next;
    repl_link *l;
    int refs;   /* listed on its link, and its send while unanswered */
    int listed;
    ev_tstamp born;
    ev_tstamp forgiven; /* how much stall_forgive moved born, in all */
    uint8_t *body;
    size_t len, cap;
    uint16_t nunits, nleft;
    struct rf_unit *units;
    size_t ucap;
};

/* A backup node. Links live as long as the module. */
struct repl_link {
    repl_link *next;
    char name[KEEL_NAME_MAX + 1];
    char addr[300];
    repl_frame *head, *tail; /* sent or to send, not acknowledged */
    size_t nframes;
    uint32_t inflight;       /* sends not answered yet */
    int retry;               /* listed frames go again at retry_at */
    ev_tstamp retry_at;
    ev_tstamp warned_at;
    repl_frame *build;       /* the frame of the settle under way */
    unsigned snap_parts;     /* snapshot parts sent, not durable yet */
    /* Since when a catch-up waits for the hello of the connection to it
     * (whether it takes check pieces); 0: not waiting. */
    ev_tstamp hello_wait;
};

/* Backup side: what this node took of a unit. */
typedef struct repl_bunit {
    uint64_t hash;
    uint32_t shard;
    uint64_t epoch;
    uint64_t stream;
    uint64_t accepted; /* the last seq queued for the writer */
    uint64_t durable;  /* the last seq committed (durable as the mode says) */
    /* The seq of the last check piece at this epoch and stream that found
     * another digest: a resend of it is answered EDIFFERS again, not as
     * a snapshot taken (the primary would take the backup for the same). */
    uint64_t differed;
    char cap[];
} repl_bunit;

struct bj_unit {
    repl_bunit *bu;
    int status;  /* refused before the writer, or 0 */
    int confirm; /* an empty piece of seq 0: a confirm round */
    int grouped; /* a group of the batch (else a duplicate or refused) */
    /* A snapshot piece older than the pieces taken: a resend, answered
     * EDIFFERS when, by its answer, bu->differed names it (a check whose
     * first copy found another digest). */
    int resent;
    int snap; /* a snapshot piece (or a check): taken whatever came before */
    /* A check taken while this node's rejoin purge runs: applied as the
     * unit's deletion and answered as differing, without a digest (the
     * purge could delete the older records of a copy found the same). */
    int forced;
    size_t gidx;
    uint64_t epoch, stream, seq;
    /* What bu was before this unit was taken: restored when the frame
     * cannot be queued at all. */
    uint64_t old_epoch, old_stream, old_accepted, old_durable, old_differed;
    uint32_t shard;
    uint8_t clen;
    char cap[256];
};

/* A batch of the backup's writer: the groups of one REPL frame, and of
 * the frames that arrived while it still waited for the writer, appended
 * to it (keel_writer_submit_merge): one transaction and one commit for
 * them all. Committed or failed as a whole; freed with its last frame. */
typedef struct bbatch {
    keel_batch *b;
    unsigned refs;  /* the frames whose groups it holds, not answered */
    unsigned nframes; /* the frames whose groups it holds */
    size_t ngroups; /* its groups so far (the writer's copy is not read) */
} bbatch;

/* A REPL frame with the backup's writer. */
typedef struct bjob {
    struct bjob *next;
    keel_req *req;
    bbatch *bb;   /* where its groups are: from gbase on */
    size_t gbase;
    int wstatus;  /* the writer's report */
    int done;     /* reported, or refused at the door (under r->mu) */
    int reported; /* by the writer: a failure there is acknowledged */
    uint16_t nunits;
    struct bj_unit *units;
    /* A copy's deletion (keel__repl_drop_copy, nunits 0): its unit. */
    char *drop_cap;
    uint32_t drop_shard;
} bjob;

struct keel_repl {
    keel_node *n;
    keel_cluster_rt *rt;
    uint64_t stream; /* this process's stream: its start, in ns */
    int clean_start; /* the last run stopped in order (clean-stop marker) */
    double lag_s;
    /* The loop's time at the last tick, or, when the tick was started,
     * REPL_TICK_S before the time it was set to fire: a gap longer than
     * REPL_STALL_S to the next is the loop held up. */
    ev_tstamp tick_seen;
    /* The catch-up rate (catchup.c): bytes a second (0: no limit), and
     * the budget of bytes left as of cu_budget_at. */
    double cu_rate;
    double cu_budget;
    double cu_budget_at;
    keel_hmap units;   /* repl_unit by (cap, shard) */
    repl_unit *busy;   /* units with entries */
    repl_link *links;
    size_t nframes;    /* listed, over every link */
    uint64_t settle_no;
    /* Flushes numbered (keel__repl_flushed), and the last one settled. */
    uint64_t flush_no, settled_no;
    /* A commit here failed (a full disk, most often): writes leave for
     * the backups only once committed here, until a commit succeeds.
     * Sent early, each refused write would be held by backups and not
     * here, and cost them their place in the in-sync set and a snapshot
     * to come back. */
    int commits_failing;
    /* Units with suspect backups. */
    unsigned nsuspect;
    /* A restart after a crash makes suspect the backups of every unit
     * this node resumes, thousands at once with many shards: one line a
     * second names a backup, the tick then says how many more (and why
     * the last of them) in one line. */
    ev_tstamp suspect_warned_at;
    uint64_t suspect_unlogged;
    const char *suspect_why; /* a static string */
    /* A flush that ran out of memory: its replies of units marked (or of
     * every unit, sfail_all) fail in doubt rather than go unconfirmed. */
    uint64_t sfail, sfail_all;
    /* Out of memory lost writes of units this node cannot name: every
     * unit starts its seqs at 2 from then on, so backups that never saw
     * seq 1 refuse what follows and are dropped. */
    int lossy;
    /* A write of this run was answered in doubt (its entry failed: this
     * node fenced, a backup holding a newer epoch, the unit gone): it is
     * in this store and perhaps on no backup in sync, so the stop leaves
     * no clean-stop marker and the units this node gets back at the same
     * epoch suspect their backups. */
    int doubted;
    size_t nforgot; /* the units' forgot entries, in all */
    struct gref {
        repl_unit *u;
        size_t g;
    } *gv;
    size_t gcap;
    keel_replica_ref refs[REPL_MAX_BACKUPS];
    uint8_t *piece; /* the ops of the piece being made */
    size_t plen, pcap;
    uint32_t pops;
    ev_timer tick;
    int started;
    /* The read rule: units with a confirm round to send, sent when the
     * loop has run what this iteration had (flush, an ev_prepare). */
    repl_unit *cpend;
    ev_prepare flush;

    /* Catch-up (runtime/catchup.c): units with backups catching up, how
     * many snapshots are unacknowledged, and the scan for backups that
     * need one (every CU_SCAN_S, soon after a map is applied, and on the
     * next tick while a scan stopped short). */
    repl_unit *cuhead;
    unsigned nsnap;
    /* The key a snapshot part read last (catchup.c snap_record). */
    uint8_t snap_key[KEEL_KEY_MAX];
    size_t snap_klen;
    int rescan;
    ev_timer scan;

    /* Backup side. */
    keel_hmap bunits; /* repl_bunit by (cap, shard) */
    keel_writer *writer;
    int fp_delay_set; /* REPL_APPLY_DELAY_MS given to it (test builds) */
    pthread_mutex_t mu;
    bjob *jobs, *jobs_tail; /* with the writer, in order */
    bjob *wnext;            /* the next one it reports (under mu) */
    /* The batch the last frame went into (NULL once freed): the only one
     * the next frame's groups can join, while the writer has not taken
     * it yet. Loop thread. */
    bbatch *wtail;
    ev_tstamp merge_warned; /* the last failed commit of merged frames */

    /* The lag figures for other threads (keel__repl_lag), one per link
     * in link order, republished by every tick. */
    pthread_mutex_t lag_mu;
    keel_repl_lag *lagv;
    size_t nlag, lagcap;
    ev_async wake;
};

enum { LAG_WAIT = 0, LAG_OUT, LAG_GIVE_UP };

/* Units of both sides are found by (cap, shard). */
struct repl_ukey {
    const char *cap;
    uint32_t shard;
};

static inline uint64_t repl_unit_hash(const char *cap, uint32_t shard)
{
    return XXH3_64bits_withSeed(cap, strlen(cap), shard);
}

static inline keel_cluster *repl_cl(keel_repl *r)
{
    return r->rt->c;
}
enum { SM_SKIP = 0, SM_SEND };

/* runtime/repl.c */
repl_unit *repl_unit_find(keel_repl *r, const char *cap, uint32_t shard);
repl_unit *repl_unit_get(keel_repl *r, const char *cap, uint32_t shard);
void repl_busy_update(keel_repl *r, repl_unit *u);
void repl_arm(keel_repl *r, double after);
int repl_unit_ours(keel_repl *r, const char *cap, uint32_t shard,
                   uint64_t epoch);
repl_link *repl_link_get(keel_repl *r, const keel_replica_ref *ref);
int repl_reserve(uint8_t **buf, size_t *cap, size_t len, size_t more);
int repl_frame_add_piece(keel_repl *r, repl_link *l, repl_unit *u,
                         uint64_t epoch, uint64_t seq);
void repl_frame_finish(keel_repl *r, repl_link *l);
void repl_forget_link(keel_repl *r, repl_unit *u, uint64_t epoch,
                      repl_link *l, int doubt);
void repl_unit_progress(keel_repl *r, repl_unit *u);
/* Backup l's counted catch-up of u at epoch ended with its pieces
 * forgotten after its add was asked (repl_unit.forgot). */
void repl_forgot_note(keel_repl *r, repl_unit *u, repl_link *l,
                      uint64_t epoch);
/* A catch-up of l asks its add at epoch: it holds everything now. */
void repl_forgot_clear(keel_repl *r, repl_unit *u, const repl_link *l,
                       uint64_t epoch);

/* runtime/repl_backup.c */
void repl_backup_wake_cb(struct ev_loop *loop, ev_async *w, int revents);
void repl_bjobs_reap(keel_repl *r);
void repl_bjob_finish(keel_repl *r, bjob *j, int status);

/* runtime/catchup.c */
void repl_catchup_init(keel_repl *r);
/* Sets the catch-up rate: mib_s MiB a second of snapshots, 0: none. */
void repl_catchup_rate(keel_repl *r, uint32_t mib_s);
void repl_catchup_start(keel_repl *r);
void repl_catchup_stop(keel_repl *r);
/* A settle decided u's in-sync backups (u->sl[0..snb)): appends the
 * backups catching up at epoch, marking in u->sw those replies wait on. */
void repl_catchup_decide(keel_repl *r, repl_unit *u, uint64_t epoch);
/* Appends to r->refs[0..n) the backups of u counted at epoch (add asked
 * or withdrawn, not settled) that are not there yet; the new count. */
size_t repl_catchup_counted(keel_repl *r, repl_unit *u, uint64_t epoch,
                            size_t n);
/* Whether l is catching up on u at epoch (its frames of u stay). */
int repl_catchup_has(const repl_unit *u, uint64_t epoch, const repl_link *l);
/* l acknowledged u up to seq at epoch. */
void repl_catchup_acked(keel_repl *r, repl_unit *u, uint64_t epoch,
                        repl_link *l, uint64_t seq);
/* l took u's piece seq at epoch, a check, and held another copy of the
 * unit (it answered EDIFFERS): called before repl_catchup_acked. */
void repl_catchup_differs(keel_repl *r, repl_unit *u, uint64_t epoch,
                          repl_link *l, uint64_t seq);
/* l left (u, epoch) unacknowledged past the lag: -1 when l is not
 * catching up there (the in-sync rules apply), else LAG_*. */
int repl_catchup_lag(keel_repl *r, repl_unit *u, uint64_t epoch,
                     repl_link *l);
void repl_catchup_tick(keel_repl *r);
void repl_catchup_map_applied(keel_repl *r);

#endif
