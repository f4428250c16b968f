/* The node: actor lifecycle, turns and the run of turns.
 *
 * A message's path: keel_call / a connection -> keel__submit (the actor's
 * mailbox, the run queue) -> run_cb runs turns, one per actor at a time
 * -> a turn that writes marks its actor dirty (what a handler sees of its
 * turn, and how its writes become the actor's, is turn.c's) -> after each run of turns
 * the dirty actors are serialized (each one's latest state and entries,
 * coalescing all its turns since the last flush) and handed to the writer
 * thread, joining the batch that waits there if the writer has not taken
 * it yet -> the writer commits it; once it is durable (with fsync, after
 * the next commit's flush or a sync) the writer wakes the loop -> the
 * replies that waited for that batch are released. Everything after the
 * run of turns, group commit and reply release, is node_commit.c's; a
 * keyed request's record and its retry are node_keys.c's (node_int.h).
 *
 * A reply waits for the newest batch holding a write of its actor, even
 * when its own turn wrote nothing: what it read may not be durable yet,
 * and the outside world must never see a state that a crash could undo.
 */
#include "runtime/node.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/error.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "runtime/auth.h"
#include "runtime/cluster_rt.h"
#include "runtime/deadletters.h"
#include "runtime/dedup.h"
#include "runtime/follow.h"
#include "runtime/http.h"
#include "runtime/node_int.h"
#include "runtime/outbox.h"
#include "runtime/reminders.h"
#include "runtime/statever.h"
#include "runtime/proto.h"
#include "runtime/repl.h"
#include "runtime/tls.h"

#define RUN_BUDGET 512 /* turns per run_cb call before I/O gets a go */
#define RUN_PER_ACTOR 64    /* turns of one actor before others get a go */
#define RUN_POLL_WRITER 64  /* turns between looks at the writer */
/* Dirty actors that make a mid-run flush worth it when the writer is
 * idle (see run_cb). */
#define FLUSH_EARLY_ACTORS 64
#define REQ_FREE_MAX 4096

static const char stale_msg[] =
    "not served: this node's cluster session ended after the call was "
    "accepted; it did not run";
static const char late_msg[] =
    "the call's deadline passed before its turn; it did not run";
static void maybe_finish_stop(keel_node *n);

#ifdef KEEL_FAILPOINTS
/* KEEL_FAILPOINT_STORE_EIO_FILE (common/failpoint.h): once the file
 * exists, the next flush fails, once per process. Any thread. */
static char fp_eio_file[512];
static atomic_int fp_eio_fired;

static int fp_store_eio(void *data)
{
    (void)data;
    if (atomic_load(&fp_eio_fired) || access(fp_eio_file, F_OK) != 0 ||
        atomic_exchange(&fp_eio_fired, 1))
        return 0;
    keel_warn("failpoint: this flush of the store fails with EIO");
    return EIO;
}
#endif

/* ------------------------------------------------------------ options */

void keel_node_options_init(keel_node_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->shard_count = 0; /* the data directory's, or the default */
    opts->idle_timeout_ms = 60000;
    opts->durability = KEEL_DURABILITY_FSYNC;
    opts->max_frame = KEEL_DEFAULT_MAX_FRAME;
    opts->log_level = KEEL_LOG_INFO;
    opts->conn_idle_timeout_s = 300;
}

/* ----------------------------------------------------------- requests */

keel_req *keel__req_alloc(keel_node *n, size_t msglen)
{
    keel_req *req = n->req_free;

    if (req != NULL) {
        n->req_free = req->next;
        n->req_free_count--;
    } else {
        req = malloc(sizeof *req);
        if (req == NULL)
            return NULL;
    }
    memset(req, 0, offsetof(keel_req, inl));
    req->buf = req->inl;
    req->cap = KEEL_REQ_INLINE;
    if (msglen > req->cap && keel__req_set(req, NULL, msglen) != 0) {
        keel__req_free(n, req);
        return NULL;
    }
    return req;
}

/* A refusal kept for the turn that records it (run_turn) stands only on
 * the state it was decided on, which that turn, next in the actor's
 * mailbox, still sees. A request that leaves the mailbox before then (the
 * cluster runtime's sweep holds it, and submits it again later, here or
 * on another node), or whose actor is reset to the store meanwhile (a
 * commit failed under the write the refusal saw), runs its handler again
 * instead: the state it was refused on may have been lost. */
static void refusal_forget(keel_req *req)
{
    free(req->refusal);
    req->refusal = NULL;
    req->refused = 0;
}

void keel__req_free(keel_node *n, keel_req *req)
{
    if (req->fev != NULL)
        keel__follow_req_free(req);
    if (req->buf != req->inl)
        free(req->buf);
    free(req->from);
    req->from = NULL;
    refusal_forget(req);
    if (n->req_free_count >= REQ_FREE_MAX) {
        free(req);
        return;
    }
    req->next = n->req_free;
    n->req_free = req;
    n->req_free_count++;
}

int keel__req_set(keel_req *req, const void *data, size_t len)
{
    if (len > UINT32_MAX)
        return KEEL_ETOOBIG;
    if (len > req->cap) {
        uint8_t *p = malloc(len);
        if (p == NULL)
            return KEEL_ENOMEM;
        if (req->buf != req->inl)
            free(req->buf);
        req->buf = p;
        req->cap = (uint32_t)len;
    }
    if (data != NULL && len > 0)
        memmove(req->buf, data, len);
    req->len = (uint32_t)len;
    return 0;
}

/* ---------------------------------------------------------------- types */

struct keel_type_entry *keel__type_find(keel_node *n, const void *name,
                                        size_t len)
{
    unsigned i;

    for (i = 0; i < n->ntypes; i++) {
        struct keel_type_entry *te = n->types[i];
        if (strlen(te->name) == len && memcmp(te->name, name, len) == 0)
            return te;
    }
    return NULL;
}

int keel_node_register_type(keel_node *n, const keel_actor_type *type)
{
    struct keel_type_entry *te;
    size_t len;

    if (n == NULL || type == NULL || type->name == NULL ||
        type->on_message == NULL)
        return KEEL_EINVAL;
    /* Once keel_node_start returned, the loop thread may be reading the
     * types already, before it marks the node running. */
    if (n->running || n->thread_started)
        return KEEL_EINVAL;
    len = strlen(type->name);
    if (len == 0 || type->name[0] == '\x01')
        return KEEL_EINVAL; /* 0x01 begins the runtime's own (outbox.h) */
    if (len > KEEL_MAX_TYPE_LEN)
        return KEEL_ELIMIT;
    if (type->capability != NULL && strlen(type->capability) > 255)
        return KEEL_ELIMIT;
    if (keel__type_find(n, type->name, len) != NULL)
        return KEEL_EEXIST;
    if (n->ntypes >= 256)
        return KEEL_ELIMIT;
    te = calloc(1, sizeof *te);
    if (te == NULL)
        return KEEL_ENOMEM;
    te->capability = strdup(type->capability ? type->capability : "");
    if (te->capability == NULL) {
        free(te);
        return KEEL_ENOMEM;
    }
    te->t = *type;
    memcpy(te->name, type->name, len + 1);
    te->t.name = te->name;
    te->t.capability = te->capability;
    te->index = (uint8_t)n->ntypes;
    n->types[n->ntypes++] = te;
    return 0;
}

void keel_node_log(keel_node *n, int level, const char *fmt, ...)
{
    va_list ap;

    if (fmt == NULL || !KEEL_LOG_ENABLED(level))
        return;
    va_start(ap, fmt);
    keel_log_v(n != NULL ? n->log_node : NULL, level, fmt, ap);
    va_end(ap);
}

/* --------------------------------------------------------------- actors */

struct actor_key {
    struct keel_type_entry *type;
    const void *id;
    size_t idlen;
};

static int actor_eq(const void *item, const void *key)
{
    const keel_actor *a = item;
    const struct actor_key *k = key;

    return a->type == k->type && a->idlen == k->idlen &&
           memcmp(a->id, k->id, k->idlen) == 0;
}

static uint64_t actor_hash(const struct keel_type_entry *te, const void *id,
                           size_t idlen)
{
    return XXH3_64bits_withSeed(id, idlen, te->index + 1);
}

static void lru_unlink(keel_node *n, keel_actor *a)
{
    if (a->lru_prev)
        a->lru_prev->lru_next = a->lru_next;
    else
        n->lru_head = a->lru_next;
    if (a->lru_next)
        a->lru_next->lru_prev = a->lru_prev;
    else
        n->lru_tail = a->lru_prev;
    a->lru_prev = a->lru_next = NULL;
}

static void lru_push_head(keel_node *n, keel_actor *a)
{
    a->lru_prev = NULL;
    a->lru_next = n->lru_head;
    if (n->lru_head)
        n->lru_head->lru_prev = a;
    else
        n->lru_tail = a;
    n->lru_head = a;
}

static void lru_touch(keel_node *n, keel_actor *a)
{
    a->last_used = ev_now(n->loop);
    if (n->lru_head == a)
        return;
    lru_unlink(n, a);
    lru_push_head(n, a);
}

static keel_actor *actor_get(keel_node *n, struct keel_type_entry *te,
                             const void *id, size_t idlen, int create)
{
    struct actor_key k = {te, id, idlen};
    uint64_t h = actor_hash(te, id, idlen);
    keel_actor *a = keel_hmap_get(&n->actors, h, &k, actor_eq);

    if (a != NULL || !create)
        return a;
    a = calloc(1, sizeof *a + idlen);
    if (a == NULL)
        return NULL;
    a->hash = h;
    a->type = te;
    a->idlen = (uint8_t)idlen;
    if (idlen > 0)
        memcpy(a->id, id, idlen);
    a->shard = keel_shard_of(te->name, id, idlen, n->opts.shard_count);
    if (n->cluster != NULL && keel__cluster_actor_in(n, te, a->shard) != 0) {
        free(a);
        return NULL;
    }
    if (keel_hmap_put(&n->actors, h, a) != 0) {
        if (n->cluster != NULL)
            keel__cluster_actor_out(n, te, a->shard);
        free(a);
        return NULL;
    }
    lru_push_head(n, a);
    a->last_used = ev_now(n->loop);
    n->resident++;
    STAT_SET(n, resident_actors, n->resident);
    return a;
}

static void dirty_remove(keel_node *n, keel_actor *a)
{
    keel_actor **pp;

    if (!(a->flags & ACTOR_IN_DIRTY))
        return;
    for (pp = &n->dirty_head; *pp != NULL; pp = &(*pp)->dirty_next) {
        if (*pp == a) {
            *pp = a->dirty_next;
            break;
        }
    }
    a->dirty_next = NULL;
    a->flags &= (uint8_t)~(ACTOR_IN_DIRTY | ACTOR_STATE_DIRTY);
    n->ndirty--;
}

/* One activation-log line, written with a single write(2) so that lines
 * from several nodes appending to files stay whole and a crash loses at
 * most the line being written:
 *   <realtime ns> activate|deactivate <type> <id as hex> shard <S> epoch <E>
 * The epoch is the unit's shard epoch as this node holds it. */
static void actlog(keel_node *n, keel_actor *a, const char *what)
{
    char line[64 + KEEL_MAX_TYPE_LEN + 2 * KEEL_MAX_ID_LEN + 64];
    static const char hex[] = "0123456789abcdef";
    keel_placement pl;
    struct timespec ts;
    size_t len;
    int w;
    unsigned i;

    if (n->actlog_fd < 0)
        return;
    keel_coord_placement(n->coord, a->type->capability, a->shard, &pl);
    clock_gettime(CLOCK_REALTIME, &ts);
    w = snprintf(line, sizeof line, "%llu %s %s ",
                 (unsigned long long)ts.tv_sec * 1000000000ull +
                     (unsigned long long)ts.tv_nsec,
                 what, a->type->name);
    if (w < 0)
        return;
    len = (size_t)w;
    for (i = 0; i < a->idlen; i++) {
        line[len++] = hex[a->id[i] >> 4];
        line[len++] = hex[a->id[i] & 15];
    }
    if (a->idlen == 0)
        line[len++] = '-';
    w = snprintf(line + len, sizeof line - len, " shard %u epoch %llu\n",
                 a->shard, (unsigned long long)pl.epoch);
    if (w > 0)
        len += (size_t)w;
    if (write(n->actlog_fd, line, len) < 0)
        return; /* a log that cannot be written must not stop the node */
}

/* The node's fence, in the activation log (cluster mode):
 *   <realtime ns> fenced since <realtime ns>
 *   <realtime ns> serving
 * "fenced since T": from T on (the moment its lease ran out, which for a
 * node that noticed late, resumed after a pause, lies before the line's
 * own time) this node started no turn, and it starts none until a
 * "serving" line; its actors stay resident meanwhile and may be
 * deactivated later. T is the agent's clock's ago_ns before now, put on
 * the wall clock. */
void keel__actlog_fence(keel_node *n, int fenced, int64_t ago_ns)
{
    char line[96];
    struct timespec ts;
    unsigned long long now;
    int w;

    if (n->actlog_fd < 0)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    now = (unsigned long long)ts.tv_sec * 1000000000ull +
          (unsigned long long)ts.tv_nsec;
    if (ago_ns < 0 || (unsigned long long)ago_ns > now)
        ago_ns = 0;
    if (fenced)
        w = snprintf(line, sizeof line, "%llu fenced since %llu\n", now,
                     now - (unsigned long long)ago_ns);
    else
        w = snprintf(line, sizeof line, "%llu serving\n", now);
    if (w > 0 && (size_t)w < sizeof line &&
        write(n->actlog_fd, line, (size_t)w) < 0)
        return; /* a log that cannot be written must not stop the node */
}

static void call_passivate(keel_node *n, keel_actor *a)
{
    if ((a->flags & ACTOR_ACTIVE) && a->type->t.on_passivate != NULL) {
        struct keel_turn t;
        memset(&t, 0, sizeof t);
        t.n = n;
        t.a = a;
        t.no_writes = 1;
        a->flags |= ACTOR_RUNNING;
        a->type->t.on_passivate(&t);
        a->flags &= (uint8_t)~ACTOR_RUNNING;
        keel__turn_free_tmp(&t);
    }
}

/* Forgets the activation: state, uncommitted entries, user data. The actor
 * struct stays (requests may point at it); the next message reloads it
 * from the store. */
void keel__actor_deactivate(keel_node *n, keel_actor *a)
{
    if (a->mb_head != NULL)
        refusal_forget(a->mb_head); /* only the head can hold one */
    if (a->flags & ACTOR_ACTIVE) {
        call_passivate(n, a);
        STAT_ADD(n, passivations, 1);
        actlog(n, a, "deactivate");
    }
    dirty_remove(n, a);
    keel__ovl_free(a->ovl);
    a->ovl = NULL;
    actor_state_free(a);
    a->version = 0;
    a->user = NULL;
    a->last_write_seq = 0;
    a->ob_index = 0; /* its open writes, the outbox's among them, are gone */
    keel__reminders_forget(a);
    a->flags &= (uint8_t)~(ACTOR_ACTIVE | ACTOR_HAS_BLOB);
}

static int actor_idle(const keel_node *n, const keel_actor *a)
{
    /* Replies of its unit that wait on backups keep it: a unit released
     * to another node goes with everything its backups acknowledged. */
    return a->mb_head == NULL &&
           !(a->flags & (ACTOR_IN_RUNQ | ACTOR_RUNNING | ACTOR_IN_DIRTY)) &&
           a->last_write_seq <= n->durable_seq &&
           (n->repl_busy == 0 ||
            !keel__repl_unit_busy((keel_node *)n, a->type->capability,
                                  a->shard));
}

/* Passivates and frees an idle actor. Everything it wrote is durable. */
static void actor_passivate(keel_node *n, keel_actor *a)
{
    keel__actor_deactivate(n, a);
    if (a->mb_head != NULL) {
        /* on_passivate sent this actor a message: it stays, inactive,
         * and the message reactivates it. */
        keel__run_schedule(n, a);
        return;
    }
    if (a->flags & ACTOR_PARKED) {
        keel_actor **pp = &n->parked;

        while (*pp != a)
            pp = &(*pp)->dirty_next;
        *pp = a->dirty_next;
    }
    keel_hmap_remove(&n->actors, a->hash, a);
    if (n->cluster != NULL)
        keel__cluster_actor_out(n, a->type, a->shard);
    lru_unlink(n, a);
    n->resident--;
    STAT_SET(n, resident_actors, n->resident);
    keel__reminders_forget(a);
    free(a);
}

int keel__actor_idle(const keel_node *n, const keel_actor *a)
{
    return actor_idle(n, a);
}

void keel__actor_passivate(keel_node *n, keel_actor *a)
{
    actor_passivate(n, a);
}

/* Passivates least recently used idle actors until at most `keep` stay.
 * Busy ones are skipped; scanning is bounded so one call stays short. */
static void evict_lru(keel_node *n, uint64_t keep, ev_tstamp older_than)
{
    keel_actor *a = n->lru_tail, *prev;
    int scanned = 0;

    while (a != NULL && n->resident > keep && scanned++ < 100000) {
        prev = a->lru_prev;
        if (older_than > 0 && a->last_used > older_than)
            break; /* the rest were used more recently */
        if (actor_idle(n, a))
            actor_passivate(n, a);
        a = prev;
    }
}

static void idle_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    keel_node *n = w->data;
    ev_tstamp cutoff = ev_now(loop) - n->opts.idle_timeout_ms / 1000.0;

    (void)revents;
    evict_lru(n, 0, cutoff);
}

void keel__each_unit(keel_node *n,
                     void (*fn)(keel_node *n, const char *cap,
                                uint32_t shard))
{
    unsigned i, j;
    uint32_t shard;

    for (i = 0; i < n->ntypes; i++) {
        const char *cap = n->types[i]->capability;
        for (j = 0; j < i; j++)
            if (strcmp(n->types[j]->capability, cap) == 0)
                break;
        if (j < i)
            continue; /* that capability's units are done */
        for (shard = 0; shard < n->opts.shard_count; shard++)
            fn(n, cap, shard);
    }
}

/* The first of an actor's records, if any: its state blob when the key
 * is the actor's prefix itself (it sorts before every entry), else an
 * entry. rec points into the store's map: valid until the read ends. */
struct first_rec {
    size_t plen;
    int found, blob;
    keel_record rec;
};

static int first_record(const uint8_t *key, size_t klen,
                        const keel_record *rec, void *data)
{
    struct first_rec *f = data;

    f->found = 1;
    if (klen == f->plen) {
        f->blob = 1;
        f->rec = *rec;
    }
    return 1; /* one is enough */
}

/* Loads the actor's state blob after checking that this node may serve its
 * placement unit and that the store has not seen a newer owner. The
 * actor's version is its blob's; one without a blob that holds entries
 * (its own or the runtime's) is at 1, as keel__turn_apply left it when it
 * wrote them: the version does not depend on whether the actor stayed
 * resident, nor on which replica of its unit loads it. */
static int actor_load(keel_node *n, keel_actor *a, char *err, size_t errlen)
{
    struct keel_type_entry *te = a->type;
    keel_placement pl;
    keel_store_read *r;
    struct first_rec first;
    uint8_t kbuf[KEEL_KEY_MAX];
    uint64_t fence = 0;
    int rc, klen;

    keel_coord_placement(n->coord, a->type->capability, a->shard, &pl);
    if (pl.state != KEEL_PLACEMENT_LOCAL) {
        snprintf(err, errlen, "shard %u is not served here", a->shard);
        return KEEL_EUNAVAIL;
    }
    klen = encode_key(a, NULL, 0, kbuf);
    if (klen < 0)
        return klen;
    memset(&first, 0, sizeof first);
    first.plen = (size_t)klen;
    rc = keel_store_read_begin(n->store, &r);
    if (rc != 0)
        return rc;
    if (te->fence_ok == NULL)
        te->fence_ok = calloc(n->opts.shard_count, sizeof *te->fence_ok);
    if (te->fence_ok == NULL || te->fence_ok[a->shard] != pl.epoch) {
        rc = keel_store_fence_get(r, te->capability, (uint16_t)a->shard,
                                  &fence);
        if (rc == 0 && fence <= pl.epoch && te->fence_ok != NULL)
            te->fence_ok[a->shard] = pl.epoch;
    }
    if (rc == 0 && fence > pl.epoch) {
        snprintf(err, errlen,
                 "shard %u: store has epoch %llu, this node holds %llu",
                 a->shard, (unsigned long long)fence,
                 (unsigned long long)pl.epoch);
        rc = KEEL_EFENCED;
    }
    if (rc == 0) {
        /* One lookup tells a blob, entries only, and nothing apart. */
        rc = keel_store_scan(r, kbuf, (size_t)klen, first_record, &first);
        if (rc > 0)
            rc = 0;
    }
    if (rc == 0 && first.blob) {
        rc = actor_state_set(a, first.rec.data, first.rec.len);
        if (rc == 0) {
            a->version = first.rec.version;
            a->flags |= ACTOR_HAS_BLOB;
        }
    } else if (rc == 0 && first.found) {
        a->version = 1; /* entries only */
    }
    /* else a fresh actor: empty state, version 0 */
    keel_store_read_end(r);
    return rc;
}

/* The batch with the writer that holds sequence seq (durable_seq < seq <
 * open_seq). */
static struct keel_wbatch *wb_holding(keel_node *n, uint64_t seq)
{
    uint64_t i;

    for (i = n->wb_first; i + 1 < n->wb_next; i++)
        if (n->wb[i % KEEL_WBATCH_MAX].hi_seq >= seq)
            break;
    return &n->wb[i % KEEL_WBATCH_MAX];
}

/* ------------------------------------------------------- running a turn */

static int count_entry(const void *key, size_t klen, const void *val,
                       size_t vlen, void *data)
{
    (*(uint64_t *)data)++;
    return 0;
}

static int rt_entry_found(const void *key, size_t klen, const void *val,
                          size_t vlen, void *data)
{
    *(int *)data = 1;
    return 1; /* one is enough */
}

/* The reply of a state read (keel__read_state): what the actor holds as
 * of this turn, every earlier turn's writes included (and on_activate's,
 * applied by keel__turn_apply before this runs), in the layout proto.h gives.
 * Its release waits, as any turn's reply, for the commit that holds
 * those writes and for the read rule, so it never shows a write that
 * could still be lost. */
static int state_reply(keel_turn *t, const keel_req *req)
{
    keel_actor *a = t->a;
    int blob = (a->flags & ACTOR_HAS_BLOB) != 0;
    uint64_t entries = 0, version;
    uint8_t *p;
    int rc, held = 0;

    if (req->len == KEEL_READ_REMINDERS_LEN &&
        memcmp(req->buf, KEEL_READ_REMINDERS, req->len) == 0) {
        size_t len;
        rc = keel__reminders_list(t, &p, &len);
        if (rc != 0)
            return rc;
        rc = keel_turn_reply(t, p, len);
        free(p);
        return rc;
    }
    if (req->len != 0) {
        keel_turn_error(t, "a state read's message is empty, or "
                           "\"reminders\"");
        return KEEL_EINVAL;
    }

    rc = keel_turn_entries(t, count_entry, &entries);
    /* The runtime's entries (reminders, dead letters, outbox records)
     * are not counted, but an actor that holds only those was written:
     * it is at version 1 as one with named entries only is. */
    if (rc == 0 && !blob && entries == 0)
        rc = keel__turn_rt_entries(t, NULL, 0, rt_entry_found, &held);
    if (rc != 0)
        return rc;
    if (!blob && entries == 0 && !held) {
        keel_turn_error(t, "the actor holds no state: never written, or all "
                           "of it deleted");
        return KEEL_ENOTFOUND;
    }
    version = a->version;
    p = keel__turn_reply_room(t, KEEL_STATE_READ_HDR + a->state_len);
    if (p == NULL)
        return KEEL_ENOMEM;
    keel_state_read_head(p, blob, version, entries);
    if (a->state_len > 0)
        memcpy(p + KEEL_STATE_READ_HDR, actor_state(a), a->state_len);
    return 0;
}

/* The reply of a dead-letter request (deadletters.h), made before the
 * turn's writes were applied. */
static int dl_reply_set(keel_turn *t, const uint8_t *p, size_t len)
{
    uint8_t *r = keel__turn_reply_room(t, len);

    if (r == NULL) {
        t->reply_len = 0;
        return KEEL_ENOMEM;
    }
    if (len > 0)
        memcpy(r, p, len);
    return 0;
}

/* Puts req back at the head of a's mailbox, to be taken first. */
static void mailbox_push_front(keel_actor *a, keel_req *req)
{
    req->next = a->mb_head;
    a->mb_head = req;
    if (a->mb_tail == NULL)
        a->mb_tail = req;
    a->mb_len++;
}

/* Keeps a refusal on its request for the turn that records it: 1, or 0
 * when there is no memory for it (then the request fails with
 * KEEL_ENOMEM, as on any failure of the node: a refusal that is not
 * recorded must not reach the client as an answer). */
static int refusal_keep(keel_req *req, int err, const char *text)
{
    char *s = strdup(text);

    if (s == NULL)
        return 0;
    free(req->refusal);
    req->refusal = s;
    req->refused = err;
    return 1;
}

/* A turn that held the loop thread this long (its handler, or its
 * on_activate) is logged: every other actor of the node waited for it. */
#define SLOW_TURN_MS 250
/* Between two lines on slow turns. */
#define SLOW_WARN_S 10.0

static void slow_turn_warn(keel_node *n, const keel_actor *a, uint64_t ms)
{
    ev_tstamp now = ev_now(n->loop);
    char lease[160] = "";

    if (n->slow_warned_at != 0 && now - n->slow_warned_at < SLOW_WARN_S) {
        n->slow_unlogged++;
        return;
    }
    if (n->cluster != NULL)
        snprintf(lease, sizeof lease,
                 "; a turn of more than about %u ms costs the node its "
                 "cluster lease (it fences itself, and its replies are "
                 "EUNAVAIL or EINDOUBT)",
                 (unsigned)keel__cluster_rt_turn_max_ms(n));
    keel_warn("a turn of %s '%.*s' held the node's loop thread for %llu ms: "
              "every other actor of the node waited%s; handlers must not "
              "block or compute for long (docs/design.md, \"Threads\")"
              "%s",
              a->type->name, (int)a->idlen, (const char *)a->id,
              (unsigned long long)ms, lease,
              n->slow_unlogged > 0 ? " (and more such turns since the last "
                                     "such line)"
                                   : "");
    n->slow_unlogged = 0;
    n->slow_warned_at = now;
}

/* Runs one message through its actor and routes the reply. late: req is
 * keyed and its deadline passed before its turn; it does not run, but the
 * outcome its key recorded, if any, is its answer (else KEEL_EDEADLINE). */
static void run_turn(keel_node *n, keel_actor *a, keel_req *req, int late)
{
    uint64_t t0 = keel__now_ns(), ms;
    keel_turn t;
    const keel_actor_type *ty = &a->type->t;
    int rc = 0, activating = !(a->flags & ACTOR_ACTIVE), hooked = 0;
    int loaded = 0, dup = DUP_NONE, ran = 0, ob_dup = 0, dup_err = 0;
    int hrc = 0; /* the handler's own error, if it ran and failed */
    int recording = 0; /* the turn records req's refusal (req->refused) */
    int too_late = 0;  /* late, and its key recorded nothing: not run */
    const void *reply;
    const uint8_t *dup_reply = NULL;
    size_t reply_len, dup_len = 0, dl_len = 0;
    uint8_t *dl_reply = NULL;
    int dl = 0;

    memset(&t, 0, offsetof(struct keel_turn, err));
    t.err[0] = '\0';
    t.n = n;
    t.a = a;
    n->stage_len = 0;
    a->flags |= ACTOR_RUNNING;
    if (activating) {
        rc = actor_load(n, a, t.err, sizeof t.err);
        if (rc != 0 && t.err[0] != '\0')
            t.err_set = 1;
        if (rc == 0) {
            STAT_ADD(n, activations, 1);
            actlog(n, a, "activate"); /* before any handler runs */
            loaded = 1;
            rc = keel__statever_check(&t, &t.ver_staged);
            if (rc == 0 && ty->on_activate != NULL) {
                rc = keel__turn_hook_rc(&t, "on_activate",
                                        ty->on_activate(&t));
                hooked = rc == 0;
            }
        }
        /* A keyed request whose activation failed (on_activate or the
         * state's upgrade refused) was not looked up under its key, and
         * its outcome is not recorded: the request may have run already,
         * or a copy of it may still run. An error that
         * keel_err_is_answer() would settle as its recorded refusal must
         * not reach its client; it hears of a failure of the moment and
         * retries with the key. So for an outbox message: the actor has
         * not looked up what it applied from the sender, so the refusal
         * does not say it never applied this one (an earlier copy, its
         * answer lost, may have). Counted as a refusal, the message would
         * become a dead letter, sent again from there under a new number
         * and applied twice; it goes again later, until the actor
         * activates. (ESTATEVER is no such answer: the sender waits for a
         * deploy on it, knowing what it knows.) */
        if (rc != 0 && (req->keyed || req->from != NULL) &&
            keel_err_is_answer(rc)) {
            char why[sizeof t.err];
            snprintf(why, sizeof why, "%s", t.err_set ? t.err : "");
            keel_turn_error(&t,
                            req->keyed ? "the actor's activation failed "
                                         "(%s%s%s); not recorded under the "
                                         "request key, so not its answer: "
                                         "send it again with the key"
                                       : "the receiver's activation failed "
                                         "(%s%s%s), before it looked up what "
                                         "it applied from this sender: not "
                                         "its answer; sent again later",
                            keel_err_name(rc), why[0] ? ": " : "", why);
            rc = KEEL_EUNAVAIL;
        }
    }
    if (rc == 0 && req->keyed)
        rc = keel__dedup_lookup(&t, req, &dup, &dup_reply, &dup_len,
                                &dup_err);
    if (rc == 0 && req->from != NULL)
        rc = keel__outbox_check(&t, req, &ob_dup);
    if (rc == 0 && dup == DUP_NOT_KEPT) {
        rc = KEEL_EALREADY;
        keel_turn_error(&t, "this request key ran already; its reply was "
                            "longer than the %d bytes kept",
                        KEEL_DEDUP_REPLY_MAX);
    } else if (rc == 0 && late && dup == DUP_NONE) {
        too_late = 1; /* answered below, once the activation is kept */
    } else if (rc == 0 && req->read_state && keel__dl_is_request(req)) {
        dl = 1; /* the runtime's, through the handler only to retry */
        rc = keel__dl_request(&t, req, &dl_reply, &dl_len, &ran);
    } else if (rc == 0 && req->read_state) {
        /* No handler: its reply is made once the turn's writes (those of
         * on_activate, if any) are the actor's, below. */
    } else if (rc == 0 && req->ob_op != KEEL_OB_OP_NONE) {
        rc = keel__outbox_op(&t, req); /* the runtime's, no handler */
    } else if (rc == 0 && req->rm != NULL) {
        int fire = 0;
        rc = keel__reminders_fire(&t, req, &fire);
        if (rc == 0 && fire) {
            ran = 1;
            rc = keel__turn_hook_rc(&t, "handler",
                                    ty->on_message(&t, req->buf, req->len));
        }
    } else if (rc == 0 && ob_dup) {
        /* An outbox message this actor applied already: answered as
         * applied, without running it again. */
        STAT_ADD(n, outbox_dropped, 1);
    } else if (rc == 0 && dup == DUP_NONE && req->refused != 0) {
        /* Its handler refused it in the turn before, which kept nothing:
         * now the refusal is recorded, alone, and answered once that is
         * durable. */
        recording = 1;
        rc = keel__dedup_record(&t, req, req->refused, req->refusal,
                                strlen(req->refusal));
    } else if (rc == 0 && dup == DUP_NONE) {
        ran = 1;
        rc = hrc = keel__turn_hook_rc(&t, "handler",
                                      ty->on_message(&t, req->buf, req->len));
        if (rc == 0 && req->from != NULL)
            rc = keel__outbox_applied(&t, req);
        /* Recorded also when it changed nothing: a copy of the request
         * that comes later (the original of a retry that ran first,
         * delivered late) must not decide again on the state it finds
         * then (a compare-and-set that failed here may succeed there). */
        if (rc == 0 && req->keyed)
            rc = keel__dedup_record(&t, req, 0, n->scratch_reply,
                                    req->is_cast ? 0 : t.reply_len);
    }
    if (dup != DUP_NONE)
        STAT_ADD(n, retries_answered, 1);
    else if (ran)
        STAT_ADD(n, messages, 1);
    /* Whether this reply stands for a write: if the lease lapses before
     * it leaves, its outcome is unknown rather than "not served". */
    req->wrote = rc == 0 && (t.state_set || n->stage_len > 0);
    if (rc == 0 && ty->state_version != 0 &&
        a->state_ver != ty->state_version && !t.ver_staged &&
        (t.state_set || n->stage_len > 0))
        rc = keel__statever_stage(&t, &t.ver_staged); /* its first write */
    if (rc == 0) {
        if (activating)
            a->flags |= ACTOR_ACTIVE;
        rc = keel__turn_apply(n, a, &t);
        if (rc == 0 && t.ver_staged)
            a->state_ver = ty->state_version;
        if (rc == 0 && t.ob.index != KEEL_OB_INDEX_NONE)
            a->ob_index = t.ob.index;
        if (rc == 0)
            req->ob_hi = t.ob.hi;
        /* Its change or event for followers, kept until its release. */
        if (rc == 0 && (t.state_set || t.fl.set))
            keel__follow_turn(n, a, req, t.state_set, &t.fl);
        if (rc == 0 && dl)
            rc = dl_reply_set(&t, dl_reply, dl_len);
        else if (rc == 0 && req->read_state)
            rc = state_reply(&t, req);
    } else {
        if (ran)
            STAT_ADD(n, handler_errors, 1);
        if (activating) {
            /* Nothing of a failed activation is kept; what on_activate
             * set up is handed to on_passivate to undo. */
            if (hooked && ty->on_passivate != NULL) {
                t.no_writes = 1;
                ty->on_passivate(&t);
            }
            a->user = NULL;
            actor_state_free(a);
            a->version = 0;
            a->flags &= (uint8_t)~ACTOR_HAS_BLOB;
            if (loaded)
                actlog(n, a, "deactivate");
        }
    }
    a->flags &= (uint8_t)~ACTOR_RUNNING;
    free(dl_reply);
    keel__reminders_turn_end(&t, a, req, rc == 0);

    /* Refused by its handler with an answer: the answer is recorded
     * under the key before it leaves, or a copy of the request that comes
     * later (the original of a retry, held up on the wire) would run on
     * the state it finds then, and might succeed where its client was
     * told it failed. The failed turn kept nothing; the record is the
     * write of a turn of its own, next in the actor's mailbox. Without
     * memory to keep the refusal it is not recorded, so not an answer:
     * the client hears of the node's failure and retries with the key. */
    if (hrc != 0 && req->keyed && keel_err_is_answer(hrc)) {
        if (refusal_keep(req, hrc, t.err_set ? t.err : keel_strerror(hrc))) {
            keel__turn_end(&t);
            mailbox_push_front(a, req);
            return;
        }
        rc = KEEL_ENOMEM;
        keel_turn_error(&t, "out of memory to record the handler's refusal "
                            "under the request key; it did not take "
                            "effect");
    }
    if (rc == 0 && too_late) {
        rc = KEEL_EDEADLINE;
        keel_turn_error(&t, "%s", late_msg);
    } else if (rc == 0 && recording) {
        rc = req->refused; /* recorded: now its answer */
        keel_turn_error(&t, "%s", req->refusal);
        req->refusal_applied = 1;
    } else if (rc == 0 && dup == DUP_REFUSED) {
        rc = dup_err; /* the first outcome: a refusal */
        keel_turn_error(&t, "%.*s", (int)dup_len, (const char *)dup_reply);
        req->refusal_applied = 1; /* what on_activate did, if it ran */
    }
    if (rc == KEEL_ENOTYPE && req->from != NULL && n->cluster != NULL) {
        /* An outbox message this node took for a type it registers: the
         * code is its handler's (or a hook's), a refusal. Left as it is,
         * the sender could not tell it from a node without the type,
         * which in a cluster it waits for (outbox.c), and would send it
         * for ever. */
        char why[sizeof t.err];
        snprintf(why, sizeof why, "%s", t.err_set ? t.err : "");
        keel_turn_error(&t, "the receiver refused it with ENOTYPE%s%s",
                        why[0] ? ": " : "", why);
        rc = KEEL_EHANDLER;
    }
    req->status = rc;
    if (rc == 0 && dup == DUP_KEPT) {
        reply = dup_reply; /* the first outcome, as recorded */
        reply_len = req->is_cast ? 0 : dup_len;
    } else if (rc == 0) {
        reply = n->scratch_reply;
        reply_len = req->is_cast ? 0 : t.reply_len;
    } else {
        reply = t.err_set ? t.err : keel_strerror(rc);
        reply_len = strlen(reply);
    }
    if (keel__req_set(req, reply, reply_len) != 0) {
        req->status = KEEL_ENOMEM;
        req->refusal_applied = 0; /* as a success's reply would be */
        req->len = 0;
    }
    keel__turn_end(&t);
    ms = (keel__now_ns() - t0) / 1000000u;
    if (ms >= SLOW_TURN_MS)
        slow_turn_warn(n, a, ms);
    req->actor = a;
    if (a->last_write_seq > n->durable_seq) {
        if (a->last_write_seq == n->open_seq)
            queue_push(&n->wait_open, req);
        else
            queue_push(&wb_holding(n, a->last_write_seq)->wait, req);
    } else if (n->repl != NULL && keel__repl_read(n, req)) {
        /* It read the unit's state: it leaves once the unit's in-sync
         * backups confirmed that no newer primary can have served, and
         * after the unit's earlier replies (the read rule, repl.h). */
    } else if (req_stale(n, req)) {
        /* Nothing of this turn waits for a commit, so it wrote nothing;
         * but what it read belongs to a session that ended. */
        keel__reply_fail(n, req, KEEL_EUNAVAIL, keel__stale_read_msg);
    } else if (keel__lease_lapsed(n)) {
        /* Nothing of this turn waits for a commit, so it wrote nothing;
         * but what it answered (a value, or an error such as a missing
         * key) came from state another node may have changed by now. */
        keel__reply_fail(n, req, KEEL_EUNAVAIL, keel__not_served_msg);
    } else {
        keel__reply_release(n, req);
    }
}

/* ------------------------------------------------------------ run queue */

void keel__run_schedule(keel_node *n, keel_actor *a)
{
    if (a->flags & ACTOR_IN_RUNQ)
        return;
    a->flags |= ACTOR_IN_RUNQ;
    a->run_next = NULL;
    if (n->runq_tail)
        n->runq_tail->run_next = a;
    else
        n->runq_head = a;
    n->runq_tail = a;
    if (!ev_is_active(&n->run_watcher))
        ev_idle_start(n->loop, &n->run_watcher);
}

/* The node is fenced (cluster mode): no turn runs. Queued actors keep
 * their place and their mailboxes; the cluster runtime's sweep takes the
 * messages back into its hold list (it routes them once the units are
 * served again, here or elsewhere), and keel__run_resume() restarts the
 * run when the fence lifts. A stopping node does not wait for that: what
 * is queued fails. */
static void run_fenced(keel_node *n)
{
    static const char msg[] = "not served: this node is fenced and stopping";
    keel_actor *a;
    keel_req *req;

    ev_idle_stop(n->loop, &n->run_watcher);
    if (!n->stopping)
        return;
    while ((a = n->runq_head) != NULL) {
        n->runq_head = a->run_next;
        if (n->runq_head == NULL)
            n->runq_tail = NULL;
        a->flags &= (uint8_t)~ACTOR_IN_RUNQ;
        while ((req = a->mb_head) != NULL) {
            a->mb_head = req->next;
            req->next = NULL;
            keel__reply_fail(n, req, KEEL_ESTOPPING, msg);
        }
        a->mb_tail = NULL;
        a->mb_len = 0;
    }
}

void keel__run_resume(keel_node *n)
{
    if (n->runq_head != NULL && !ev_is_active(&n->run_watcher))
        ev_idle_start(n->loop, &n->run_watcher);
}

/* An actor queued with an empty mailbox has nothing to run: the run would
 * only take it off the queue. The cluster runtime's sweep empties the
 * mailboxes of actors whose unit is not served here; left queued, they
 * would stay activated (with the state they read) for as long as the
 * node stays fenced, overlapping the activation of the unit's new owner,
 * and would reach a later session still holding that state. */
void keel__run_prune(keel_node *n)
{
    keel_actor **pp = &n->runq_head, *a, *last = NULL;

    while ((a = *pp) != NULL) {
        if (a->mb_head == NULL && !(a->flags & ACTOR_RUNNING)) {
            *pp = a->run_next;
            a->run_next = NULL;
            a->flags &= (uint8_t)~ACTOR_IN_RUNQ;
        } else {
            last = a;
            pp = &a->run_next;
        }
    }
    n->runq_tail = last;
    if (n->runq_head == NULL && ev_is_active(&n->run_watcher))
        ev_idle_stop(n->loop, &n->run_watcher);
}

/* An inactive actor whose stale writes may still be with the writer (its
 * batch failed, see batch_settled in node_commit.c) waits on the parked
 * list: loading it now could read a store those writes have not reached
 * yet. */
static void park(keel_node *n, keel_actor *a)
{
    if (a->flags & ACTOR_PARKED)
        return;
    a->flags |= ACTOR_PARKED;
    a->dirty_next = n->parked; /* free: an inactive actor is not dirty */
    n->parked = a;
}

void keel__run_unpark(keel_node *n)
{
    keel_actor **pp = &n->parked, *a;

    while ((a = *pp) != NULL) {
        if (a->last_write_seq > n->durable_seq) {
            pp = &a->dirty_next;
            continue;
        }
        *pp = a->dirty_next;
        a->dirty_next = NULL;
        a->flags &= (uint8_t)~ACTOR_PARKED;
        if (a->mb_head != NULL)
            keel__run_schedule(n, a);
    }
}

static void run_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    keel_node *n = w->data;
    int budget = RUN_BUDGET, since_poll = 0, fenced = 0, drained;
    int early = n->opts.durability == KEEL_DURABILITY_NONE;

    keel__clock_refresh(n);

    (void)loop;
    (void)revents;
    /* Cluster mode: the lease is checked with a fresh clock before every
     * turn (one clock read and one comparison while it holds). Checking
     * only every few turns let a node stopped (SIGSTOP, a starved
     * process) between two turns of a run run the next ones on resuming,
     * its lease lapsed and its units perhaps served elsewhere by then.
     * Standalone mode reads no clock here. */
    n->lease_lost = 0;
    if (n->cluster != NULL && !keel__cluster_rt_serving(n))
        fenced = 1;
again:
    while (!fenced && n->runq_head != NULL && budget > 0) {
        keel_actor *a = n->runq_head;
        int k;

        n->runq_head = a->run_next;
        if (n->runq_head == NULL)
            n->runq_tail = NULL;
        a->flags &= (uint8_t)~ACTOR_IN_RUNQ;
        if (!(a->flags & ACTOR_ACTIVE) && a->last_write_seq > n->durable_seq) {
            park(n, a);
            continue;
        }
        for (k = 0; k < RUN_PER_ACTOR && a->mb_head != NULL; k++) {
            keel_req *req = a->mb_head;
            int late;
            a->mb_head = req->next;
            if (a->mb_head == NULL)
                a->mb_tail = NULL;
            a->mb_len--;
            if (req_stale(n, req)) {
                /* Queued in a session that ended: the unit it was
                 * accepted for may be someone else's by now. The sweep
                 * takes such messages back into the hold list when the
                 * session ends; one that slipped past it is not run. */
                keel__reply_fail(n, req, KEEL_EUNAVAIL, stale_msg);
                continue;
            }
            late = req->wire_deadline && keel__now_ns() >= req->deadline_ns;
            if (late && !req->keyed) {
                /* Its sender has answered its caller by now: running it
                 * would run a call that may be sent again. */
                keel__reply_fail(n, req, KEEL_EDEADLINE, late_msg);
                continue;
            }
            /* A late keyed copy does not run either, but the first
             * outcome its key recorded is its answer: a retry must not
             * hear "did not run" of a write an earlier copy made. */
            if (n->cluster != NULL && !keel__cluster_rt_serving(n)) {
                /* The message keeps its place at the head of the mailbox;
                 * run_fenced() leaves it to the sweep. */
                mailbox_push_front(a, req);
                fenced = 1;
                break;
            }
            run_turn(n, a, req, late);
            budget--;
            since_poll++;
            if (n->lease_lost) {
                /* A reply found the lease lapsed: no more turns. */
                fenced = 1;
                break;
            }
        }
        lru_touch(n, a);
        if (a->mb_head != NULL)
            keel__run_schedule(n, a);
        if (since_poll >= RUN_POLL_WRITER) {
            since_poll = 0;
            keel__poll_writer(n, 0);
            /* Without syncs, an idle writer and many actors to write: hand
             * them over now, so the commit runs beside the rest of the run
             * instead of after it. Counting actors, not turns: a commit
             * costs per record, so a run of one hot actor gains nothing.
             * With fsync a commit costs mostly its flushes, and more,
             * smaller commits lost more than the overlap won
             * (docs/benchmarks.md). */
            if (early && n->wb_first == n->wb_next &&
                n->ndirty >= FLUSH_EARLY_ACTORS)
                keel__flush_open(n);
            if (n->cluster != NULL && !keel__cluster_rt_serving(n))
                fenced = 1;
        }
    }
    drained = !fenced && n->runq_head == NULL;
    if (fenced)
        run_fenced(n);
    else if (drained)
        ev_idle_stop(n->loop, &n->run_watcher);
    keel__flush_open(n);
    /* A commit made right here, after the last turn, released its
     * replies, and callers on this thread may have sent more from their
     * callbacks: with durability none their turns run now, within the
     * budget, rather than one loop iteration (and one poll for I/O)
     * later. Not with fsync: each pass would hold the loop for a flush,
     * and the loop must see its I/O and timers between flushes. The clock
     * and the lease are read again, as at the start of a run. */
    if (drained && early && n->runq_head != NULL && budget > 0) {
        keel__clock_refresh(n);
        if (n->cluster != NULL && !keel__cluster_rt_serving(n))
            fenced = 1;
        goto again;
    }
    if (n->opts.max_resident > 0 && n->resident > n->opts.max_resident)
        evict_lru(n, n->opts.max_resident, 0);
    maybe_finish_stop(n);
}

int keel__submit(keel_node *n, struct keel_type_entry *te, const void *id,
                 size_t idlen, keel_req *req)
{
    keel_actor *a;

    if (n->stopping)
        return KEEL_ESTOPPING;
    if (idlen > KEEL_MAX_ID_LEN)
        return KEEL_ELIMIT;
    refusal_forget(req); /* decided in a mailbox it left */
    /* Its latency counts from its first arrival: a call forwarded from
     * here, or held and submitted again, keeps it. */
    if (req->t_submit_ns == 0)
        req->t_submit_ns = keel__now_ns();
    if (n->cluster != NULL) {
        /* Cluster mode: forwarded or held unless the unit is LOCAL. */
        int r = keel__cluster_route(n, te, id, idlen, req);
        if (r <= 0)
            return r;
    }
    a = actor_get(n, te, id, idlen, 1);
    if (a == NULL)
        return KEEL_ENOMEM;
    req->actor = a;
    req->next = NULL;
    if (a->mb_tail)
        a->mb_tail->next = req;
    else
        a->mb_head = req;
    a->mb_tail = req;
    a->mb_len++;
    if (!(a->flags & ACTOR_RUNNING))
        keel__run_schedule(n, a);
    return 0;
}

/* --------------------------------------------------------- loop wakeups */

static void begin_stop(keel_node *n)
{
    if (n->stopping)
        return;
    n->stopping = 1;
    keel_info("node stopping: finishing queued turns and flushing");
    keel__follow_end_all(n, KEEL_ESTOPPING,
                         "the node is stopping; subscribe again through "
                         "another node");
    /* The listener stays open until the end (keel__net_close_all): a
     * client that connects meanwhile is answered ESTOPPING, which it can
     * tell from a request lost in flight, rather than refused. */
    keel__run_resume(n); /* a run stopped by a fence ends what is queued */
}

static void maybe_finish_stop(keel_node *n)
{
    keel_actor *a;

    if (!n->stopping || n->runq_head != NULL || n->wb_first != n->wb_next ||
        n->dirty_head != NULL || n->wait_open.head != NULL)
        return;
    if (n->cluster != NULL && keel__cluster_rt_busy(n))
        return; /* its tick calls keel__node_stop_check again */
    if (keel__repl_stop_busy(n))
        return; /* replies wait on backups: acks, drops or the lease end it */
    /* Everything is durable and answered: passivate and leave. An actor
     * that still has messages stays (scheduled): they run first, and the
     * run comes back here. */
    while ((a = n->lru_tail) != NULL) {
        actor_passivate(n, a);
        if (n->lru_tail == a)
            return;
    }
    keel__net_flush_all(n);
    keel__net_close_all(n);
    ev_idle_stop(n->loop, &n->run_watcher);
    ev_timer_stop(n->loop, &n->idle_timer);
    ev_prepare_stop(n->loop, &n->flush_watcher);
    ev_async_stop(n->loop, &n->async);
    ev_break(n->loop, EVBREAK_ALL);
}

void keel__node_set_inline_commits(keel_node *n, int on)
{
    n->inline_commits = on;
}

void keel__node_stop_check(keel_node *n)
{
    maybe_finish_stop(n);
}

static void run_posts(keel_node *n)
{
    struct keel_post *p;

    pthread_mutex_lock(&n->post_mu);
    p = n->post_head;
    n->post_head = n->post_tail = NULL;
    pthread_mutex_unlock(&n->post_mu);
    while (p != NULL) {
        struct keel_post *next = p->next;
        p->fn(n, p->data);
        free(p);
        p = next;
    }
}

static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    keel_node *n = w->data;

    (void)loop;
    (void)revents;
    keel__poll_writer(n, 1);
    run_posts(n);
    if (atomic_exchange(&n->reload_requested, 0)) {
        /* Each logs what went wrong and keeps what it had. */
        /* The HTTPS face follows the wire's certificate: it reloads only
         * when the wire's did, so that both present the same one. */
        if (keel__net_tls_reload(n) == 0)
            (void)keel__http_tls_reload(n);
        if (keel__auth_reload(n->auth) == 0) {
            keel__net_tokens_reloaded(n);
            keel__http_tokens_reloaded(n);
        }
        /* keeld's --log-file, for log rotation; nothing without one. */
        keel_log_reopen();
    }
    /* In cluster mode the units are handed off first (graceful leave). */
    if (atomic_load(&n->stop_requested) && !keel__cluster_rt_leave(n))
        begin_stop(n);
    maybe_finish_stop(n);
}

static void flush_watcher_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    keel_node *n = w->data;

    (void)loop;
    (void)revents;
    keel__net_flush_all(n);
    /* After the answers, and to the writers' threads: an inline commit's
     * write-back of the data file is not part of its durability, and on
     * this thread it would only have delayed them. */
    (void)keel_writer_writeback(n->writer);
    keel__repl_writeback(n);
}

/* ------------------------------------------------------------ lifecycle */

int keel_node_create(const keel_node_options *opts_in, keel_node **out,
                     char *errbuf, size_t errlen)
{
    keel_node_options opts;
    keel_store_options so;
    keel_node *n;
    char dummy[8];
    int rc;

    if (errbuf == NULL) {
        errbuf = dummy;
        errlen = sizeof dummy;
    }
    errbuf[0] = '\0';
    if (opts_in == NULL || out == NULL) {
        snprintf(errbuf, errlen, "%s",
                 opts_in == NULL ? "no options given (NULL): "
                                   "keel_node_options_init fills a "
                                   "keel_node_options"
                                 : "no place for the node given (out is "
                                   "NULL)");
        return KEEL_EINVAL;
    }
    if (opts_in->data_dir == NULL) {
        snprintf(errbuf, errlen, "a data directory is required");
        return KEEL_EINVAL;
    }
    opts = *opts_in;
    if (opts.shard_count > 65536) {
        snprintf(errbuf, errlen, "shard count %u over 65536",
                 opts.shard_count);
        return KEEL_EINVAL;
    }
    if (opts.idle_timeout_ms == 0)
        opts.idle_timeout_ms = 60000;
    if (opts.max_frame == 0)
        opts.max_frame = KEEL_DEFAULT_MAX_FRAME;
    if (opts.max_frame < KEEL_FRAME_MIN_MAX) {
        snprintf(errbuf, errlen, "max frame %u below %u", opts.max_frame,
                 KEEL_FRAME_MIN_MAX);
        return KEEL_EINVAL;
    }
    if (opts.max_connections == 0)
        opts.max_connections = 16384;
    if (opts.max_unit_stream == 0)
        opts.max_unit_stream = 1ull << 30;
    if (opts.http_header_timeout_s == 0)
        opts.http_header_timeout_s = 10;
    if (opts.http_max_per_ip == 0)
        opts.http_max_per_ip = 1024;
    if (opts.durability != KEEL_DURABILITY_FSYNC &&
        opts.durability != KEEL_DURABILITY_NONE) {
        snprintf(errbuf, errlen, "unknown durability mode %d",
                 opts.durability);
        return KEEL_EINVAL;
    }
    if (opts.log_level < KEEL_LOG_ERROR || opts.log_level > KEEL_LOG_DEBUG) {
        snprintf(errbuf, errlen, "unknown log level %d (0 error to 3 debug)",
                 opts.log_level);
        return KEEL_EINVAL;
    }
    if (opts.replicas < 0 || opts.replicas > KEEL_REPLICAS_MAX) {
        snprintf(errbuf, errlen, "replicas %d: 1 to %d, or 0 for the default",
                 opts.replicas, KEEL_REPLICAS_MAX);
        return KEEL_EINVAL;
    }
    if (opts.zk_hosts == NULL && opts.cluster != NULL) {
        snprintf(errbuf, errlen, "a cluster name (%s) without zk_hosts: "
                 "cluster mode needs its ZooKeeper servers",
                 opts.cluster);
        return KEEL_EINVAL;
    }
    if ((rc = keel__hold_check(&opts, errbuf, errlen)) != 0)
        return rc;
    keel_log_set_level(opts.log_level);
    {
        /* Secure by default: refused before anything is created. */
        int insecure;
        rc = keel__auth_exposure_check(&opts, &insecure, errbuf, errlen);
        if (rc != 0)
            return rc;
        opts.insecure = insecure;
    }

    n = calloc(1, sizeof *n);
    if (n == NULL)
        return KEEL_ENOMEM;
    n->listen_fd = -1;
    n->reserve_fd = -1;
    n->actlog_fd = -1;
    n->inline_commits = 1;
    n->opts = opts;
    n->data_dir = strdup(opts.data_dir);
    n->listen_addr = opts.listen ? strdup(opts.listen) : NULL;
    n->log_node = opts.node_id ? strdup(opts.node_id) : NULL;
    if (n->data_dir == NULL || (opts.listen && n->listen_addr == NULL) ||
        (opts.node_id && n->log_node == NULL)) {
        rc = KEEL_ENOMEM;
        goto err_after_alloc;
    }
    n->opts.data_dir = n->data_dir;
    n->opts.listen = n->listen_addr;
    keel_hmap_init(&n->actors);
    pthread_mutex_init(&n->done_mu, NULL);
    pthread_mutex_init(&n->post_mu, NULL);
    pthread_cond_init(&n->claim_cv, NULL);
    atomic_init(&n->stop_requested, 0);
    atomic_init(&n->reload_requested, 0);
    STAT_SET(n, insecure, (uint64_t)opts.insecure);
    n->open_seq = 1;
    n->durable_seq = 0;
    if (opts.tls_crl != NULL && opts.tls_ca == NULL) {
        snprintf(errbuf, errlen, "a CRL file (tls_crl) goes with TLS: the "
                                 "certificate, its key and the CA file");
        rc = KEEL_EINVAL;
        goto err_after_alloc;
    }
    if (opts.tls_cert != NULL || opts.tls_key != NULL ||
        opts.tls_ca != NULL) {
        /* A node's certificate serves both its listener and its links to
         * other nodes: all three files are needed. */
        if (opts.tls_cert == NULL || opts.tls_key == NULL ||
            opts.tls_ca == NULL) {
            snprintf(errbuf, errlen, "TLS needs a certificate, its key and "
                                     "the CA file");
            rc = KEEL_EINVAL;
            goto err_after_alloc;
        }
        n->tls_cert = strdup(opts.tls_cert);
        n->tls_key = strdup(opts.tls_key);
        n->tls_ca = strdup(opts.tls_ca);
        n->tls_crl = opts.tls_crl != NULL ? strdup(opts.tls_crl) : NULL;
        if (n->tls_cert == NULL || n->tls_key == NULL || n->tls_ca == NULL ||
            (opts.tls_crl != NULL && n->tls_crl == NULL)) {
            rc = KEEL_ENOMEM;
            goto err_after_alloc;
        }
        n->opts.tls_cert = n->tls_cert;
        n->opts.tls_key = n->tls_key;
        n->opts.tls_ca = n->tls_ca;
        n->opts.tls_crl = n->tls_crl;
        rc = keel_tls_node_ctx_create(n->tls_cert, n->tls_key, n->tls_ca,
                                      n->tls_crl,
                                      opts.zk_hosts != NULL ? n->log_node
                                                            : NULL,
                                      &n->tls, errbuf, errlen);
        if (rc != 0)
            goto err_after_alloc;
    }

    if (opts.activation_log != NULL) {
        n->actlog_fd = open(opts.activation_log,
                            O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (n->actlog_fd < 0) {
            snprintf(errbuf, errlen, "activation log %s: %s",
                     opts.activation_log, strerror(errno));
            rc = KEEL_EIO;
            goto err_after_alloc;
        }
    }
    n->loop = ev_loop_new(EVFLAG_AUTO);
    if (n->loop == NULL) {
        rc = KEEL_ENOMEM;
        goto err_after_alloc;
    }
    rc = keel__auth_create(n, opts.auth_tokens, &n->auth, errbuf, errlen);
    if (rc != 0)
        goto err_after_loop;
    /* The ports first: a node that cannot listen must not have created a
     * data directory on its way out (a new one, with the default shard
     * count, would then refuse the count its next start gives). */
    if (opts.http_listen != NULL) {
        rc = keel__http_create(n, opts.http_listen, errbuf, errlen);
        if (rc != 0)
            goto err_after_loop;
    }
    if (n->listen_addr != NULL) {
        rc = keel__net_listen(n, n->listen_addr, errbuf, errlen);
        if (rc != 0)
            goto err_after_loop;
    }
    memset(&so, 0, sizeof so);
    so.path = n->data_dir;
    so.shard_count = opts.shard_count;
    so.durability = opts.durability;
    so.initial_map_size = opts.initial_map_size;
    so.recover_to_last_good = opts.recover_to_last_good;
    so.new_store_id = opts.new_store_id != 0;
    if (opts.zk_hosts != NULL) {
        /* A store serves one node of one cluster (store.h). */
        so.cluster = opts.cluster;
        so.node = opts.node_id;
    }
    rc = keel_store_open(&so, &n->store, errbuf, errlen);
    if (rc != 0)
        goto err_after_loop;
    /* Without a count given, the directory's own (or the default, for a
     * new one). */
    opts.shard_count = n->opts.shard_count = keel_store_shards(n->store);
    rc = keel_coord_standalone_create(opts.shard_count, &n->coord);
    if (rc != 0)
        goto err_after_store;
    n->spare = keel_batch_create();
    if (n->spare == NULL) {
        rc = KEEL_ENOMEM;
        goto err_after_coord;
    }
    if (!opts.no_builtins) {
        rc = keel__register_builtins(n);
        if (rc != 0)
            goto err_after_coord;
    }
    if (opts.zk_hosts != NULL) {
        rc = keel__cluster_rt_create(n, errbuf, errlen);
        if (rc != 0)
            goto err_after_coord;
        rc = keel__repl_create(n);
        if (rc != 0) {
            snprintf(errbuf, errlen, "out of memory");
            keel__cluster_rt_destroy(n);
            goto err_after_coord;
        }
    }
    ev_async_init(&n->async, async_cb);
    n->async.data = n;
    ev_idle_init(&n->run_watcher, run_cb);
    n->run_watcher.data = n;
    {
        double iv = opts.idle_timeout_ms / 4000.0;
        if (iv > 1.0)
            iv = 1.0;
        if (iv < 0.01)
            iv = 0.01;
        ev_timer_init(&n->idle_timer, idle_timer_cb, iv, iv);
        n->idle_timer.data = n;
    }
    ev_prepare_init(&n->flush_watcher, flush_watcher_cb);
    n->flush_watcher.data = n;
    *out = n;
    return 0;

err_after_coord:
    keel__http_destroy(n);
    keel_batch_destroy(n->spare);
    keel_coord_destroy(n->coord);
    {
        unsigned i;
        for (i = 0; i < n->ntypes; i++) {
            free(n->types[i]->fence_ok);
            free(n->types[i]->capability);
            free(n->types[i]);
        }
    }
err_after_store:
    keel_store_close(n->store);
err_after_loop:
    keel__http_destroy(n);
    if (n->listen_fd >= 0)
        close(n->listen_fd);
    keel__auth_destroy(n->auth);
    ev_loop_destroy(n->loop);
err_after_alloc:
    if (n->actlog_fd >= 0)
        close(n->actlog_fd);
    pthread_mutex_destroy(&n->done_mu);
    pthread_mutex_destroy(&n->post_mu);
    pthread_cond_destroy(&n->claim_cv);
    keel_tls_ctx_unref(n->tls);
    free(n->tls_cert);
    free(n->tls_key);
    free(n->tls_ca);
    free(n->tls_crl);
    free(n->data_dir);
    free(n->listen_addr);
    free(n->log_node);
    free(n);
    return rc;
}

/* The loop will not run: the posts queued for it (a keel_call_sync
 * waiting among them) are run now, and see ESTOPPING, and later posts are
 * refused, as after a stop. Returns rc. */
static int run_failed(keel_node *n, int rc)
{
    pthread_mutex_lock(&n->post_mu);
    n->stopping = 2;
    pthread_mutex_unlock(&n->post_mu);
    run_posts(n);
    atomic_store(&n->loop_tid_set, 0);
    return rc;
}

/* A thread has taken the loop (loop_tid says which), or keel_node_start's
 * thread returned without it. */
static void loop_claimed(keel_node *n)
{
    pthread_mutex_lock(&n->post_mu);
    n->loop_claimed = 1;
    pthread_cond_broadcast(&n->claim_cv);
    pthread_mutex_unlock(&n->post_mu);
}

int keel_node_run(keel_node *n)
{
    int rc;

    if (n == NULL || n->running || atomic_exchange(&n->ran, 1))
        return KEEL_EINVAL;
    /* The loop is this thread's from the first step, not from ev_run on:
     * calls and readiness checks from other threads are refused while
     * the runtime is set up too (they would race with it). */
    n->loop_tid = pthread_self();
    atomic_store(&n->loop_tid_set, 1);
    loop_claimed(n);
    keel_failpoints_load(); /* a test build's (common/failpoint.h) */
#ifdef KEEL_FAILPOINTS
    {
        const char *f = getenv("KEEL_FAILPOINT_STORE_EIO_FILE");
        if (f != NULL && *f != '\0' && strlen(f) < sizeof fp_eio_file) {
            static const keel_store_hooks h = {.before_sync = fp_store_eio};
            snprintf(fp_eio_file, sizeof fp_eio_file, "%s", f);
            keel_store_set_hooks(n->store, &h);
        }
    }
#endif
    if (n->outbox == NULL && (rc = keel__outbox_init(n)) != 0)
        return run_failed(n, rc);
    if (n->follow == NULL && (rc = keel__follow_create(n)) != 0)
        return run_failed(n, rc);
    if (n->reminders == NULL && (rc = keel__reminders_init(n)) != 0)
        return run_failed(n, rc);
    rc = keel_writer_start(n->store, keel__writer_done_cb, n, &n->writer);
    if (rc != 0)
        return run_failed(n, rc);
    rc = keel__cluster_rt_start(n);
    if (rc != 0) {
        keel_writer_stop(n->writer);
        n->writer = NULL;
        return run_failed(n, rc);
    }
    keel__repl_start(n);
    n->running = 1;
    ev_async_start(n->loop, &n->async);
    /* After the async watcher: the HTTP thread posts to the loop. */
    rc = keel__http_start(n);
    if (rc != 0) {
        ev_async_stop(n->loop, &n->async);
        n->running = 0;
        keel_writer_stop(n->writer);
        n->writer = NULL;
        return run_failed(n, rc);
    }
    ev_timer_start(n->loop, &n->idle_timer);
    ev_prepare_start(n->loop, &n->flush_watcher);
    keel__net_start(n);
    keel__outbox_start(n); /* standalone: messages waiting since the last run */
    keel__reminders_start(n); /* standalone: the units' earliest reminders */
    if (atomic_load(&n->stop_requested))
        begin_stop(n);
    ev_async_send(n->loop, &n->async); /* pick up posts queued before run */
    if (n->listen_addr != NULL) {
        /* The port bound, not the one asked for (0: any free one). */
        const char *colon = strrchr(n->listen_addr, ':');
        keel_info("node running: data %s, %u shards, durability %s, "
                  "listening on %.*s:%d",
                  n->data_dir, n->opts.shard_count,
                  n->opts.durability == KEEL_DURABILITY_FSYNC ? "fsync"
                                                              : "none",
                  (int)(colon - n->listen_addr), n->listen_addr, n->port);
    } else {
        keel_info("node running: data %s, %u shards, durability %s",
                  n->data_dir, n->opts.shard_count,
                  n->opts.durability == KEEL_DURABILITY_FSYNC ? "fsync"
                                                              : "none");
    }
    ev_run(n->loop, 0);
    /* Posts that raced with the stop run now: they see ESTOPPING. */
    pthread_mutex_lock(&n->post_mu);
    n->stopping = 2; /* no more posts are taken */
    pthread_mutex_unlock(&n->post_mu);
    run_posts(n);
    keel__cluster_rt_stop(n); /* fails what is still held or forwarded */
    keel__repl_stop(n); /* after the peer links: their answers came */
    keel__http_stop(n); /* posts are refused now: see http.h */
    keel_writer_stop(n->writer);
    n->writer = NULL;
    rc = keel__cluster_rt_failure(n);
    if (rc == 0)
        keel__repl_stopped_clean(n);
    keel_info("node stopped");
    /* Only now: keel_node_destroy from another thread refuses while the
     * runtime above is being taken down. */
    atomic_store(&n->loop_tid_set, 0);
    return rc;
}

static void *node_thread(void *arg)
{
    keel_node *n = arg;

    n->thread_rc = keel_node_run(n); /* read after pthread_join */
    loop_claimed(n); /* if it returned before taking the loop */
    return NULL;
}

int keel_node_start(keel_node *n)
{
    int took;

    if (n == NULL || n->thread_started || atomic_load(&n->ran))
        return KEEL_EINVAL;
    if (pthread_create(&n->thread, NULL, node_thread, n) != 0)
        return KEEL_ENOMEM;
    n->thread_started = 1;
    /* Once this returns, the loop is that thread's: a keel_call from the
     * caller's thread is refused, never run beside the loop. */
    pthread_mutex_lock(&n->post_mu);
    while (!n->loop_claimed)
        pthread_cond_wait(&n->claim_cv, &n->post_mu);
    took = pthread_equal(n->loop_tid, n->thread);
    pthread_mutex_unlock(&n->post_mu);
    if (!took) {
        /* A keel_node_run on another thread had the node: that thread
         * owns it, not this start (keel_node_destroy must not take it
         * for a started node it may stop and join). */
        pthread_join(n->thread, NULL);
        n->thread_started = 0;
        return KEEL_EINVAL;
    }
    return 0;
}

void keel_node_reload(keel_node *n)
{
    /* Async-signal-safe, as keel_node_stop. */
    atomic_store(&n->reload_requested, 1);
    ev_async_send(n->loop, &n->async);
}

void keel_node_stop(keel_node *n)
{
    /* Async-signal-safe: an atomic store and ev_async_send. */
    atomic_store(&n->stop_requested, 1);
    ev_async_send(n->loop, &n->async);
}

int keel_node_join(keel_node *n)
{
    if (n == NULL || !n->thread_started)
        return KEEL_EINVAL;
    pthread_join(n->thread, NULL);
    n->thread_started = 0;
    return n->thread_rc;
}

void keel_node_destroy(keel_node *n)
{
    keel_actor *a;
    unsigned i;

    if (n == NULL)
        return;
    if (keel__on_loop_thread(n) ||
        (atomic_load(&n->loop_tid_set) && !n->thread_started)) {
        /* Freeing the node under its running loop would crash later,
         * somewhere else. */
        keel_error("keel_node_destroy: the node's loop is running (%s); "
                   "stop it and let keel_node_run return first, from "
                   "another thread",
                   keel__on_loop_thread(n) ? "called from its own loop "
                                             "thread"
                                           : "keel_node_run has not "
                                             "returned");
        abort();
    }
    if (n->thread_started) {
        /* Not stopped first, the join would wait for ever. */
        keel_node_stop(n);
        keel_node_join(n);
    }
    /* Stopping, so that on_passivate below may not queue new messages.
     * A node that never ran has its posts run (a keel_call_sync waiting
     * among them is answered ESTOPPING, not dropped). */
    (void)run_failed(n, 0);
    while ((a = n->lru_tail) != NULL) {
        /* Only when the loop never ran: nothing is in flight. */
        keel_req *req;
        while ((req = a->mb_head) != NULL) {
            a->mb_head = req->next;
            keel__reply_fail(n, req, KEEL_ESTOPPING,
                             keel_strerror(KEEL_ESTOPPING));
        }
        a->last_write_seq = 0;
        a->flags = 0;
        actor_passivate(n, a);
    }
    keel__cluster_rt_destroy(n); /* leaves the cluster */
    keel__repl_destroy(n);
    keel__net_close_all(n);
    if (n->listen_fd >= 0)
        keel__net_stop_accepting(n);
    keel__http_destroy(n);
    keel_hmap_free(&n->actors);
    keel_batch_destroy(n->spare);
    while (n->nbpool > 0)
        keel_batch_destroy(n->bpool[--n->nbpool]);
    keel_coord_destroy(n->coord);
    keel_store_close(n->store);
    for (i = 0; i < n->ntypes; i++) {
        free(n->types[i]->fence_ok);
        free(n->types[i]->capability);
        free(n->types[i]);
    }
    keel__plugins_close(n);
    while (n->req_free != NULL) {
        keel_req *r = n->req_free;
        n->req_free = r->next;
        free(r);
    }
    while (n->post_head != NULL) {
        struct keel_post *p = n->post_head;
        n->post_head = p->next;
        free(p);
    }
    free(n->scratch_state);
    free(n->scratch_reply);
    free(n->stage);
    keel__outbox_free(n);
    keel__follow_destroy(n);
    keel__reminders_free(n);
    keel__auth_destroy(n->auth);
    ev_loop_destroy(n->loop);
    if (n->actlog_fd >= 0)
        close(n->actlog_fd);
    pthread_mutex_destroy(&n->done_mu);
    pthread_mutex_destroy(&n->post_mu);
    pthread_cond_destroy(&n->claim_cv);
    keel_tls_ctx_unref(n->tls);
    free(n->tls_cert);
    free(n->tls_key);
    free(n->tls_ca);
    free(n->tls_crl);
    free(n->data_dir);
    free(n->listen_addr);
    free(n->log_node);
    free(n);
}

int keel_node_post(keel_node *n, keel_post_fn fn, void *data)
{
    struct keel_post *p;

    if (n == NULL || fn == NULL)
        return KEEL_EINVAL;
    p = malloc(sizeof *p);
    if (p == NULL)
        return KEEL_ENOMEM;
    p->fn = fn;
    p->data = data;
    p->next = NULL;
    pthread_mutex_lock(&n->post_mu);
    if (n->stopping == 2) {
        pthread_mutex_unlock(&n->post_mu);
        free(p);
        return KEEL_ESTOPPING;
    }
    if (n->post_tail)
        n->post_tail->next = p;
    else
        n->post_head = p;
    n->post_tail = p;
    pthread_mutex_unlock(&n->post_mu);
    ev_async_send(n->loop, &n->async);
    return 0;
}

int keel_node_port(const keel_node *n)
{
    return n ? n->port : 0;
}

void keel_node_stats(keel_node *n, keel_stats *out)
{
    keel_store_stats ss;

    _Static_assert(sizeof(keel_stats) % sizeof(uint64_t) == 0,
                   "keel_stats holds only uint64_t");
    /* keel_stats is all uint64_t: copy it word by word, each word read
     * atomically (see STAT_SET). */
    const uint64_t *src = (const uint64_t *)&n->stats;
    uint64_t *dst = (uint64_t *)out;
    size_t i;

    for (i = 0; i < sizeof *out / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    /* The store's own counters are atomic: exact from any thread. */
    keel_store_stats_get(n->store, &ss);
    out->map_size = ss.map_size;
    out->fsyncs = ss.fsyncs;
    out->checkpoints = ss.checkpoints;
}

size_t keel_stats_format(const keel_stats *st, char *buf, size_t len)
{
    int w = snprintf(
        buf, len,
        "resident_actors %llu\nactivations %llu\npassivations %llu\n"
        "messages %llu\nhandler_errors %llu\ncommits %llu\nfsyncs %llu\n"
        "commit_failures %llu\nbatch_turns_max %llu\n"
        "batch_turns_avg %.1f\nbatch_actors_avg %.1f\nfence_refusals %llu\n"
        "map_size %llu\nconnections %llu\nframes_in %llu\nframes_bad %llu\n"
        "calls_completed %llu\nlatency_avg_us %.1f\nforwarded %llu\n"
        "held_expired %llu\ncheckpoints %llu\nunits_acquired %llu\n"
        "units_handed_off %llu\nunits_dropped %llu\n"
        "handoff_bytes_in %llu\nhandoff_bytes_out %llu\nfenced %llu\n"
        "session_expirations %llu\nreplies_in_doubt %llu\n"
        "retries_answered %llu\nauth_refused_unauth %llu\n"
        "auth_refused_denied %llu\ninsecure %llu\nauth_throttled %llu\n"
        "auth_conns_closed %llu\n"
        "repl_frames_sent %llu\nrepl_bytes_sent %llu\nrepl_acks %llu\n"
        "repl_drop_requests %llu\nrepl_waiting %llu\n"
        "repl_applied_frames %llu\nrepl_refused %llu\n"
        "repl_confirms %llu\nrepl_catchups %llu\n"
        "repl_catchup_bytes %llu\nisr_expansions %llu\n"
        "isr_shrinks %llu\nfailovers %llu\nunits_promoted_on_move %llu\n"
        "outbox_sent %llu\noutbox_dropped %llu\noutbox_dead %llu\n"
        "repl_suspects %llu\n"
        "subscribers %llu\nevents_sent %llu\n"
        "reminders_fired %llu\nreminders_dead %llu\n"
        "outbox_frames %llu\nrepl_merged_frames %llu\n"
        "repl_lag_ms %llu\nrepl_catchup_waits %llu\n"
        "repl_catchup_same %llu\nrepl_copies_deleted %llu\n"
        "peer_resets %llu\noutbox_senders %llu\nconn_unsent_peak %llu\n",
        (unsigned long long)st->resident_actors,
        (unsigned long long)st->activations,
        (unsigned long long)st->passivations,
        (unsigned long long)st->messages,
        (unsigned long long)st->handler_errors,
        (unsigned long long)st->commits, (unsigned long long)st->fsyncs,
        (unsigned long long)st->commit_failures,
        (unsigned long long)st->batch_turns_max,
        st->commits ? (double)st->batch_turns_total / (double)st->commits
                    : 0.0,
        st->commits ? (double)st->batch_actors_total / (double)st->commits
                    : 0.0,
        (unsigned long long)st->fence_refusals,
        (unsigned long long)st->map_size,
        (unsigned long long)st->connections,
        (unsigned long long)st->frames_in,
        (unsigned long long)st->frames_bad,
        (unsigned long long)st->calls_completed,
        st->calls_completed
            ? (double)st->latency_sum_us / (double)st->calls_completed
            : 0.0,
        (unsigned long long)st->forwarded,
        (unsigned long long)st->held_expired,
        (unsigned long long)st->checkpoints,
        (unsigned long long)st->units_acquired,
        (unsigned long long)st->units_handed_off,
        (unsigned long long)st->units_dropped,
        (unsigned long long)st->handoff_bytes_in,
        (unsigned long long)st->handoff_bytes_out,
        (unsigned long long)st->fenced,
        (unsigned long long)st->session_expirations,
        (unsigned long long)st->replies_in_doubt,
        (unsigned long long)st->retries_answered,
        (unsigned long long)st->auth_refused_unauth,
        (unsigned long long)st->auth_refused_denied,
        (unsigned long long)st->insecure,
        (unsigned long long)st->auth_throttled,
        (unsigned long long)st->auth_conns_closed,
        (unsigned long long)st->repl_frames_sent,
        (unsigned long long)st->repl_bytes_sent,
        (unsigned long long)st->repl_acks,
        (unsigned long long)st->repl_drop_requests,
        (unsigned long long)st->repl_waiting,
        (unsigned long long)st->repl_applied_frames,
        (unsigned long long)st->repl_refused,
        (unsigned long long)st->repl_confirms,
        (unsigned long long)st->repl_catchups,
        (unsigned long long)st->repl_catchup_bytes,
        (unsigned long long)st->isr_expansions,
        (unsigned long long)st->isr_shrinks,
        (unsigned long long)st->failovers,
        (unsigned long long)st->units_promoted_on_move,
        (unsigned long long)st->outbox_sent,
        (unsigned long long)st->outbox_dropped,
        (unsigned long long)st->outbox_dead,
        (unsigned long long)st->repl_suspects,
        (unsigned long long)st->subscribers,
        (unsigned long long)st->events_sent,
        (unsigned long long)st->reminders_fired,
        (unsigned long long)st->reminders_dead,
        (unsigned long long)st->outbox_frames,
        (unsigned long long)st->repl_merged_frames,
        (unsigned long long)st->repl_lag_ms,
        (unsigned long long)st->repl_catchup_waits,
        (unsigned long long)st->repl_catchup_same,
        (unsigned long long)st->repl_copies_deleted,
        (unsigned long long)st->peer_resets,
        (unsigned long long)st->outbox_senders,
        (unsigned long long)st->conn_unsent_peak);
    return w < 0 ? 0 : (size_t)w;
}

/* ---------------------------------------------------------------- calls */

enum { AS_CALL, AS_CAST, AS_READ };

static int call_common(keel_node *n, const uint8_t *key, const char *type,
                       const void *id, size_t idlen, const void *msg,
                       size_t len, keel_call_cb cb, void *data, int how,
                       uint32_t timeout_ms)
{
    struct keel_type_entry *te;
    keel_req *req;
    int rc;

    if (n == NULL || type == NULL || (id == NULL && idlen > 0) ||
        (msg == NULL && len > 0))
        return KEEL_EINVAL;
    if (id == NULL)
        id = ""; /* the empty id: nothing is read from it, NULL or not */
    /* From another thread while the loop runs, the call would race with
     * the loop over the actor table and the run queue. */
    if (atomic_load(&n->loop_tid_set) && !keel__on_loop_thread(n))
        return KEEL_EINVAL;
    if (idlen > KEEL_MAX_ID_LEN || strlen(type) > KEEL_MAX_TYPE_LEN)
        return KEEL_ELIMIT;
    if (len > n->opts.max_frame)
        return KEEL_ETOOBIG;
    if (n->stopping)
        return KEEL_ESTOPPING;
    te = keel__type_find(n, type, strlen(type));
    if (te == NULL)
        return KEEL_ENOTYPE;
    req = keel__req_alloc(n, len);
    if (req == NULL)
        return KEEL_ENOMEM;
    keel__req_set(req, msg, len);
    req->origin = REQ_LOCAL;
    req->is_cast = how == AS_CAST;
    req->read_state = how == AS_READ;
    req->u.local.cb = cb;
    req->u.local.data = data;
    if (key != NULL) {
        req->keyed = 1;
        memcpy(req->rkey, key, KEEL_REQUEST_KEY_LEN);
    }
    if (timeout_ms != 0) {
        /* As a call that came with a budget: a turn that has not started
         * by then never does, and holds and forwards end there. */
        req->deadline_ns = keel__now_ns() + (uint64_t)timeout_ms * 1000000u;
        req->wire_deadline = 1;
    }
    rc = keel__submit(n, te, id, idlen, req);
    if (rc != 0)
        keel__req_free(n, req);
    return rc;
}

int keel_call(keel_node *n, const char *type, const void *id, size_t idlen,
              const void *msg, size_t len, keel_call_cb cb, void *data)
{
    return call_common(n, NULL, type, id, idlen, msg, len, cb, data, AS_CALL,
                       0);
}

int keel__read_state(keel_node *n, const char *type, const void *id,
                     size_t idlen, keel_call_cb cb, void *data)
{
    return call_common(n, NULL, type, id, idlen, NULL, 0, cb, data, AS_READ,
                       0);
}

int keel_call_keyed(keel_node *n, const uint8_t *key, const char *type,
                    const void *id, size_t idlen, const void *msg, size_t len,
                    keel_call_cb cb, void *data)
{
    if (key == NULL)
        return KEEL_EINVAL;
    return call_common(n, key, type, id, idlen, msg, len, cb, data, AS_CALL,
                       0);
}

int keel_cast_keyed(keel_node *n, const uint8_t *key, const char *type,
                    const void *id, size_t idlen, const void *msg, size_t len,
                    keel_call_cb cb, void *data)
{
    if (key == NULL)
        return KEEL_EINVAL;
    return call_common(n, key, type, id, idlen, msg, len, cb, data, AS_CAST,
                       0);
}

int keel_cast(keel_node *n, const char *type, const void *id, size_t idlen,
              const void *msg, size_t len, keel_call_cb cb, void *data)
{
    return call_common(n, NULL, type, id, idlen, msg, len, cb, data, AS_CAST,
                       0);
}

int keel_call_timed(keel_node *n, const uint8_t *key, uint32_t timeout_ms,
                    const char *type, const void *id, size_t idlen,
                    const void *msg, size_t len, keel_call_cb cb, void *data)
{
    return call_common(n, key, type, id, idlen, msg, len, cb, data, AS_CALL,
                       timeout_ms);
}

int keel_cast_timed(keel_node *n, const uint8_t *key, uint32_t timeout_ms,
                    const char *type, const void *id, size_t idlen,
                    const void *msg, size_t len, keel_call_cb cb, void *data)
{
    return call_common(n, key, type, id, idlen, msg, len, cb, data, AS_CAST,
                       timeout_ms);
}

int keel__on_loop_thread(keel_node *n)
{
    return atomic_load(&n->loop_tid_set) &&
           pthread_equal(n->loop_tid, pthread_self());
}

void keel_free(void *p)
{
    free(p);
}
