/* keel-chaos report DIR: DIR/report.html, one page a person opens in a
 * browser to see a run (docs/chaos.md, "The report"). Self-contained:
 * inline CSS, SVG and a few lines of script, nothing fetched.
 *
 * From top to bottom: the verdict of each check; the run's options; a
 * timeline with a lane per node (up, stopped, down, from events.jsonl),
 * the fault windows (faults.jsonl) shaded across every lane, and a lane
 * per client with each operation a bar from its invocation to its
 * completion, coloured ok / fail / info; the operations a violation names
 * outlined and listed, each list entry a link to its bar; the activation
 * overlaps on the node lanes; throughput (completions per interval, by
 * outcome) and latency (median and maximum of the ok operations) over
 * time; and the check's full text.
 *
 * What the report shows comes from the files of DIR alone: the checks
 * run on them (they are deterministic), once, so the page says what
 * keel-chaos check DIR says; a run that checked already hands its
 * results over (chaos_report_write_checked) rather than search again,
 * which on a history of a million operations takes minutes. A file that
 * is missing leaves its part out; only history.jsonl is required. */
#ifndef KEEL_CHAOS_REPORT_H
#define KEEL_CHAOS_REPORT_H

#include <stdio.h>

#include "chaos/checkdir.h"

/* Writes the page for dir to f. Problems reading dir go to err (may be
 * NULL) and into the page. Returns 0, or KEEL_EINVAL / KEEL_EIO /
 * KEEL_ENOMEM when no page could be made (no readable history). */
int chaos_report_html(const char *dir, const chaos_check_opts *o, FILE *f,
                      FILE *err);

/* chaos_report_html into dir/report.html (written whole, then renamed
 * into place). Returns 0 or a KEEL_E* code, with a word on err. */
int chaos_report_write(const char *dir, const chaos_check_opts *o,
                       FILE *err);

/* The checks of dir as made already: what they printed, their exit
 * code, and what they kept (moved into the report, which frees it). */
typedef struct chaos_report_checks {
    const char *text;
    int rc;
    chaos_check_kept *kept;
} chaos_report_checks;

/* chaos_report_write with the checks done already. */
int chaos_report_write_checked(const char *dir, const chaos_check_opts *o,
                               FILE *err, chaos_report_checks *done);

#endif
