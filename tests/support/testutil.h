/* Shared helpers for keel's check suites. */
#ifndef KEEL_TESTUTIL_H
#define KEEL_TESTUTIL_H

#include <stddef.h>

/* Makes a fresh temporary directory (under $TMPDIR or /tmp) and returns its
 * path in a static-per-call malloc'd string the caller frees. Aborts the
 * test on failure. */
char *tu_tmpdir(const char *tag);
/* rm -rf path; with KEEL_TEST_KEEP set (and not "0") the directory is
 * kept instead and its path printed on stderr. */
void tu_rmrf(const char *path);
/* Path of a built program: KEEL_BIN_DIR "/" name (static buffer per call
 * site is not needed: returns malloc'd string). */
char *tu_bin(const char *name);
/* Runs the suite in check's fork mode and returns the exit status for main. */
struct Suite;
int tu_run_suite(struct Suite *s);

#endif
