/* Replicas agree: after a run has healed and settled, the content digest
 * of every unit is the same on each replica of the unit's in-sync set
 * (docs/chaos.md, "Replicas agree"; docs/cluster.md, "Digest").
 *
 * The input is DIR/digests.txt, which keel-chaos run writes at the end of
 * a run (after the final reads, before the nodes are killed):
 *
 *   # comment
 *   unit CAP SHARD owner NODE epoch E [target NODE] [backups N,...
 *        [out_of_sync N,...]]
 *   digest NODE CAP SHARD HEX16 RECORDS
 *
 * The unit lines are INFO shards' lines as one node saw the map (the
 * in-sync set is the owner and the backups not out of sync); a digest
 * line is INFO digest CAP SHARD's answer on NODE ("digest HEX records
 * N"). The check compares, per unit, the digest and record count of each
 * replica in its in-sync set. A unit whose in-sync replica has no digest
 * line is bad input (the record is incomplete), as are malformed lines,
 * a unit or a node's digest given twice and a digest of a unit with no
 * unit line. */
#ifndef KEEL_CHAOS_REPLICAS_H
#define KEEL_CHAOS_REPLICAS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "chaos/arena.h"

#define CHAOS_REPL_MAX 8 /* replicas of a unit (keeld takes up to 5) */

/* One replica's digest of a unit. */
typedef struct chaos_repl_digest {
    const char *node;
    uint64_t digest, records;
    size_t line;
} chaos_repl_digest;

/* One unit as the map showed it, with the digests of its replicas. */
typedef struct chaos_repl_unit {
    const char *cap; /* as INFO writes it: "(default)" for the default group */
    unsigned shard;
    uint64_t epoch;
    const char *insync[CHAOS_REPL_MAX]; /* owner first */
    size_t ninsync, nout;               /* nout: replicas out of sync */
    chaos_repl_digest *dg;              /* every node's, in file order */
    size_t ndg, dg_cap;
    size_t line;
    int disagree; /* after chaos_replicas_check: a finding */
} chaos_repl_unit;

typedef struct chaos_replicas {
    const char *file;
    chaos_repl_unit *units;
    size_t nunits, cap;
    /* After chaos_replicas_check: */
    size_t compared;     /* units with two replicas or more in sync */
    size_t insync;       /* in-sync replicas over all units */
    size_t out_of_sync;  /* replicas listed out of sync */
    size_t no_owner;     /* units without an owner (not compared) */
    size_t ndisagree;    /* units whose in-sync replicas differ */
    /* private */
    chaos_arena arena;
} chaos_replicas;

void chaos_replicas_init(chaos_replicas *r);
void chaos_replicas_free(chaos_replicas *r);

/* Reads digests.txt from text[0..len); name (the file) is for messages.
 * Returns 0, KEEL_ENOMEM, or KEEL_EINVAL with err naming the file and
 * line. Call once per chaos_replicas. */
int chaos_replicas_parse(chaos_replicas *r, const char *name,
                         const char *text, size_t len, char *err,
                         size_t errlen);
/* The same from a file; KEEL_EIO when it cannot be read. */
int chaos_replicas_read(chaos_replicas *r, const char *path, char *err,
                        size_t errlen);

/* Compares the digests of each unit's in-sync replicas. Returns 0, or
 * KEEL_EINVAL with err naming the unit's line when an in-sync replica has
 * no digest line. */
int chaos_replicas_check(chaos_replicas *r, char *err, size_t errlen);

/* The verdict for people ("replicas-agree: PASS (...)"), then at most
 * max units that disagree, each replica's digest with its line. */
void chaos_replicas_print(FILE *f, const chaos_replicas *r, size_t max);

#endif
