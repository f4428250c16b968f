/* keel-chaos check DIR: every check of a recorded run, with a verdict per
 * check for people and an exit status for scripts.
 *
 *   DIR/history.jsonl     the operations (chaos/history.h); required
 *   DIR/actlogs/NODE.log  each node's activation log (chaos/actlog.h);
 *                         without the directory that check is skipped
 *   DIR/digests.txt       the units' in-sync sets and every node's digest
 *                         of each unit (chaos/replicas.h); without it the
 *                         replicas-agree check is skipped
 *
 * A check that cannot run for lack of input (no activation logs, no
 * final reads) says SKIPPED and does not fail the run; one whose input is
 * malformed says BAD INPUT. A directory keel-chaos run left unfinished
 * (DIR/run.log without DIR/run.json: interrupted, or the run could not be
 * made) is checked as far as it goes, and its verdict is INCOMPLETE unless
 * a check found a violation (also when some input is bad). */
#ifndef KEEL_CHAOS_CHECKDIR_H
#define KEEL_CHAOS_CHECKDIR_H

#include <stdint.h>
#include <stdio.h>

#include "chaos/lin.h"
#include "chaos/lostwrite.h"

#define CHAOS_EXIT_PASS 0      /* every check passed or was skipped */
#define CHAOS_EXIT_VIOLATION 1 /* some check found a violation */
#define CHAOS_EXIT_BAD_INPUT 2 /* no violation, some input did not read,
                                * or the run did not finish */
#define CHAOS_EXIT_UNDECIDED 3 /* none of those; linearizability undecided */

typedef struct chaos_check_opts {
    uint64_t max_states; /* per actor; 0: no bound (chaos/lin.h) */
    size_t max_detail;   /* violations described per check */
} chaos_check_opts;

void chaos_check_opts_init(chaos_check_opts *o);

/* Runs the checks on dir, printing verdicts to out and input errors to
 * err as well. Returns one of the CHAOS_EXIT_ codes. */
int chaos_check_dir(const char *dir, const chaos_check_opts *o, FILE *out,
                    FILE *err);

/* What the history's checks found, kept for a caller that draws them
 * (report.c) instead of searching again: have_lin and have_lost say which
 * ran. The results' indices are those of the history as read from the
 * run's file. Free with chaos_check_kept_free. */
typedef struct chaos_check_kept {
    int have_lin, have_lost;
    chaos_lin_result lin;
    chaos_lost_result lost;
} chaos_check_kept;

/* chaos_check_dir, keeping the history's results in *kept (zeroed first;
 * NULL: not kept). */
int chaos_check_dir_kept(const char *dir, const chaos_check_opts *o,
                         FILE *out, FILE *err, chaos_check_kept *kept);
void chaos_check_kept_free(chaos_check_kept *k);

/* Whether dir holds a run keel-chaos run began but did not finish:
 * run.log, which it writes first, without run.json, which it writes
 * last. */
int chaos_run_unfinished(const char *dir);

#endif
