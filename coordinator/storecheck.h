/* Before a node joins: is its data directory the one it served from?
 *
 * Every store has an identity (a random id written when its directory is
 * created). The cluster records, in the data of the persistent znode
 * `nodes/<node>` ("store <32 hex digits>\n"), the store a node name last
 * ran on. A node that comes back under the same name on another store (a
 * replaced disk, a wiped or foreign directory) does not hold the data of
 * the units the cluster still gives it: serving them would answer from
 * empty or stale state as if nothing were lost. So before joining:
 *
 *   - no record yet, or an empty one (a node from before the record):
 *     record this store and join;
 *   - the same store: join;
 *   - another store, and the node was forgotten (`forgotten/<node>`) and
 *     has published no state since: the operator gave its data up
 *     already; record this store and join (the rejoin purges what was
 *     forgotten). A mark left over from an earlier rejoin whose purge is
 *     not done does not count: units the node got back since came with
 *     their data;
 *   - another store, and neither the map (as primary, or as the target
 *     of a move) nor the node's last published state gives the node any
 *     unit: nothing is lost; record and join. Units the map makes it the
 *     primary of do not count when the map's node table names this very
 *     store for the node: their data is here (the controller keeps a
 *     primary's store in the table while it runs on another, and a node
 *     acts only on the store the table names), and they wait for it;
 *   - another store, and the node is responsible for units: refuse
 *     (KEEL_EMISMATCH). The units stay unavailable until the node runs on
 *     its own store again, or the operator accepts the loss with
 *     `keel node forget` (possible because the node is not a member).
 *
 * A store the steps above accept may still be an older copy of the very
 * directory the node served from (a backup restored: the same store id,
 * older content). Every open of a store raises its run counter
 * (keel_store_run), and the persistent znode `runs/<node>` ("store <32
 * hex digits> run <N>\n", apart from nodes/<node> so that nodes of the
 * previous release, which read that one strictly, are not disturbed)
 * holds the store and run the cluster last saw the node on. So, once
 * accepted (and when the store has a run, keel_storecheck_set_run):
 *
 *   - no run record: create it with this store and run; join;
 *   - another store's record: set it to ours (version-checked); join;
 *   - this store's, at a run lower than ours: set it to ours
 *     (version-checked; a change meanwhile reads it again); join;
 *   - this store's, at our very run, written by this process (a check
 *     of an earlier session; a write whose answer was lost): join;
 *   - this store's, at our run or a later one otherwise: the directory is a copy
 *     from before a run the cluster has seen, and may lack writes the
 *     cluster acknowledged (as a backup counted in sync, or as the
 *     primary of units it gets back at their epoch, it would serve and
 *     spread the older copy): refuse (KEEL_EMISMATCH with sc->stale).
 *     That does not change by waiting: the node is to be started on the
 *     newest directory, or with a new store id (keeld --new-store-id),
 *     which the rules above then treat as a replaced disk. The node
 *     marks its store stale (keel_store_mark_stale) before it stops, and
 *     a store so marked is refused the same way at every later start
 *     (until it takes a new id): each open raises the run, so without
 *     the mark a copy opened often enough would pass the record.
 *
 * Asynchronous, one request in flight; a step that lost its connection is
 * redone by keel_storecheck_resume(). */
#ifndef KEEL_COORDINATOR_STORECHECK_H
#define KEEL_COORDINATOR_STORECHECK_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/layout.h"
#include "coordinator/zk.h"

#define KEEL_STORE_ID_HEX 32

typedef struct keel_storecheck keel_storecheck;

/* rc: 0 (this store may serve the node's units), KEEL_EMISMATCH (another
 * store: sc->found names it, sc->units counts the units the node is
 * responsible for; or, with sc->stale, an older copy of this store:
 * sc->found_run is the run the cluster saw), KEEL_ECORRUPT (an unreadable
 * record), or a ZooKeeper
 * error not worth retrying. Connection losses are not reported: the check
 * waits for resume(). */
typedef void (*keel_storecheck_cb)(keel_storecheck *sc, int rc, void *arg);

struct keel_storecheck {
    keel_zk *zk;
    const keel_layout *layout;
    const char *node;
    char store[KEEL_STORE_ID_HEX + 1]; /* this node's store */
    char found[KEEL_STORE_ID_HEX + 1]; /* the store the cluster records */
    size_t units;                       /* with KEEL_EMISMATCH */
    keel_storecheck_cb cb;
    void *arg;
    uint64_t retry_at; /* after a refusal: when to check again, 0: no */
    int32_t version; /* of nodes/<node>, then of runs/<node>, when read */
    uint64_t run;    /* this store's run (keel_store_run), 0: none */
    const char *dir; /* its data directory, for messages; NULL: unknown */
    uint64_t marked; /* the store says it was refused so before, at
                      * this run (keel_store_stale); 0: no */
    /* This process wrote (or may have written: an answer lost) this
     * store's run into runs/<node>: finding it there again, in a later
     * check (a new session), or after a lost answer, is not the mark of
     * an older copy. Kept across starts. */
    int mine;
    int lost; /* an answer to such a write was lost: mine stays set */
    int stale;       /* with KEEL_EMISMATCH: refused as an older copy */
    uint64_t found_run; /* ... at the run runs/<node> records */
    int64_t forgotten_at; /* czxid of forgotten/<node>, 0: none */
    /* Its last published state, between S_STATE and S_MAP (owned). */
    struct keel_node_state *state;
    int step;
    int busy, stalled, done;
};

/* store: the node's store id (KEEL_STORE_ID_HEX hex digits), or NULL or ""
 * when it has none (the check then always passes). */
void keel_storecheck_init(keel_storecheck *sc, keel_zk *zk,
                          const keel_layout *layout, const char *node,
                          const char *store, keel_storecheck_cb cb,
                          void *arg);
/* The store's run (keel_store_run; 0: none, the run record is then
 * neither read nor written), its data directory (for messages; NULL:
 * unknown, else it must outlive the check), and whether it was refused
 * as an older copy before (keel_store_stale: the run it was marked at, 0:
 * no), in which case it is refused again once accepted otherwise,
 * whatever runs/<node> says: its run rose with every open since, so the
 * record alone would let it in sooner or later. Before start. */
void keel_storecheck_set_run(keel_storecheck *sc, uint64_t run,
                             const char *dir, uint64_t marked);
/* Starts from the first step (also after a new session). 0 or the submit
 * error. */
int keel_storecheck_start(keel_storecheck *sc);
/* Frees what a check under way holds (the owner's destroy). */
void keel_storecheck_free(keel_storecheck *sc);
/* Redoes a step that lost its connection; no-op otherwise. */
void keel_storecheck_resume(keel_storecheck *sc);

/* A refused node checks again every KEEL_STORECHECK_RETRY_MS, so that it
 * joins once the operator gave its old data up (keel node forget). The
 * agent drives it with its clock: retry_later() after a refusal,
 * deadline() for its timer (0: nothing due), tick() when the timer fires
 * (may_start: connected and not joined; if not, or a check is under way,
 * the retry is put off by the interval rather than left in the past), and
 * cancel() when a new session starts a check of its own. tick() returns 0
 * or the submit error of the check it started. */
#define KEEL_STORECHECK_RETRY_MS 5000
void keel_storecheck_retry_later(keel_storecheck *sc, uint64_t now);
uint64_t keel_storecheck_deadline(const keel_storecheck *sc);
int keel_storecheck_tick(keel_storecheck *sc, uint64_t now, int may_start);
void keel_storecheck_cancel(keel_storecheck *sc);

/* The record's text for a store id, and its parser: 0, or KEEL_ECORRUPT
 * for anything but "store <32 hex>\n" (an empty record is id ""). */
size_t keel_storecheck_format(char *buf, size_t len, const char *store);
int keel_storecheck_parse(const void *data, size_t len, char *store);
/* The run record's text ("store <32 hex> run <N>\n", N decimal without
 * leading zeros) and its parser: 0, or KEEL_ECORRUPT for anything else. */
size_t keel_storecheck_run_format(char *buf, size_t len, const char *store,
                                  uint64_t run);
int keel_storecheck_run_parse(const void *data, size_t len, char *store,
                              uint64_t *run);

#endif
