/* At most one activation: the nodes' activation logs, merged.
 *
 * keeld --activation-log FILE appends one line when an actor is
 * activated (before its first handler runs) and one when it is
 * deactivated (after its last), docs/operations.md:
 *
 *   <wall-clock ns> activate|deactivate <type> <id in hex> shard <S> epoch <E>
 *
 * The id is "-" when empty. A node killed with -9 writes nothing more:
 * its open activations end when the process died, which its log cannot
 * say. So the harness that killed it appends one line of its own, once
 * the process is gone (keeld never writes it):
 *
 *   <wall-clock ns> end
 *
 * and every activation of that node still open ends there. An activation
 * with neither a deactivate nor an end after it lasts to +infinity: the
 * node was still running when the log was collected (or the harness did
 * not mark its death, and the check then errs on the side of an
 * overlap, never of missing one).
 *
 * keeld writes two more lines in cluster mode, when the node's fence
 * comes and goes:
 *
 *   <wall-clock ns> fenced since <wall-clock ns>
 *   <wall-clock ns> serving
 *
 * From the `since` time on (the moment its lease ran out, which for a node
 * that noticed late, resumed after SIGSTOP, lies before the line's own
 * time and maybe before lines above it) the node starts no turn until the
 * next "serving" line. So every activation of that node ends at
 * min(its deactivation, since): those ended after `since` are cut back to
 * it, those still open end there, and the actors still resident when the
 * node serves again (no deactivate between) start a new activation at
 * the "serving" line.
 *
 * One file per node (the lines do not name their node). An actor active
 * on two nodes over intervals that share an instant (ends included) is a
 * violation; so is a node
 * that activates an actor it holds active already, and a shard epoch that
 * goes back from one activation of an actor to the next. */
#ifndef KEEL_CHAOS_ACTLOG_H
#define KEEL_CHAOS_ACTLOG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "chaos/arena.h"
#include "runtime/hmap.h"

#define CHAOS_ACT_OPEN UINT64_MAX /* an end that never came */

typedef enum chaos_act_end {
    CHAOS_ACT_DEACTIVATED,
    CHAOS_ACT_PROCESS_END, /* an "end" line */
    CHAOS_ACT_STILL_OPEN,  /* nothing ended it before the log's end */
    CHAOS_ACT_REACTIVATED, /* cut short by another activate (a finding) */
    CHAOS_ACT_FENCED       /* its node fenced itself ("fenced since") */
} chaos_act_end;

/* One activation of one actor on one node. */
typedef struct chaos_act_iv {
    const char *node;  /* the log's node name */
    const char *actor; /* "type/hexid", as the log writes it */
    uint64_t start, end; /* wall-clock ns; end CHAOS_ACT_OPEN: open */
    unsigned shard;
    uint64_t epoch;
    chaos_act_end how;
    const char *file;
    size_t start_line, end_line; /* end_line 0: none */
} chaos_act_iv;

typedef enum chaos_act_kind {
    CHAOS_ACT_OVERLAP,    /* a and b on two nodes at once */
    CHAOS_ACT_TWICE,      /* a's node activated the actor again (b) */
    CHAOS_ACT_EPOCH_BACK  /* b's epoch is lower than a's, b after a */
} chaos_act_kind;

typedef struct chaos_act_finding {
    chaos_act_kind kind;
    size_t a, b; /* intervals */
} chaos_act_finding;

typedef struct chaos_actlog {
    chaos_act_iv *iv;
    size_t n, cap;
    const char **nodes;
    size_t nnodes, nodes_cap;
    chaos_act_finding *found;
    size_t nfound, found_cap;
    size_t process_ends; /* "end" lines */
    size_t fences;       /* "fenced since" lines */
    size_t actors, moves; /* after chaos_actlog_check: distinct actors,
                           * and how often one moved between nodes */
    uint64_t t0;          /* the earliest time read: reports count from it */
    /* private */
    chaos_arena arena;
} chaos_actlog;

void chaos_actlog_init(chaos_actlog *a);
void chaos_actlog_free(chaos_actlog *a);

/* Adds node's log, text[0..len); name (the file) is for messages. A node
 * may be given only once. Returns 0, KEEL_ENOMEM, or KEEL_EINVAL with
 * err naming the file and line (a malformed line, a deactivation of an
 * actor the node did not hold, time going back down the file, a node
 * given twice). Findings (an actor activated twice) are kept in a. */
int chaos_actlog_parse(chaos_actlog *a, const char *node, const char *name,
                       const char *text, size_t len, char *err,
                       size_t errlen);
/* The same from a file; KEEL_EIO when it cannot be read. */
int chaos_actlog_read(chaos_actlog *a, const char *node, const char *path,
                      char *err, size_t errlen);
/* Every DIR/NODE.log, in name order. Other files are ignored. */
int chaos_actlog_read_dir(chaos_actlog *a, const char *dir, char *err,
                          size_t errlen);

/* Merges the logs read: overlapping activations of one actor on two
 * nodes, and epochs that go back, become findings. Returns 0 or
 * KEEL_ENOMEM. Call once, after the last parse. */
int chaos_actlog_check(chaos_actlog *a);

/* The verdict for people, then at most max findings. */
void chaos_actlog_print(FILE *f, const chaos_actlog *a, size_t max);

#endif
