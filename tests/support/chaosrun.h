/* Recorded chaos runs in tests: a small one written by hand, for the
 * tests of keel-chaos report (test_chaos_report, test_chaos_browser): a
 * history.jsonl, run.json, faults.jsonl, events.jsonl and two activation
 * logs, as keel-chaos run leaves them; and what real runs recorded. */
#ifndef KEEL_TEST_CHAOSRUN_H
#define KEEL_TEST_CHAOSRUN_H

/* Writes the run into dir (which exists). With violating, a register
 * read returns a value nobody wrote (linearizability), the final read of
 * a counter misses an acknowledged increment (lost writes) and counter
 * c1 is active on n1 and n2 at once (at most one activation); without,
 * every check passes. Aborts the test on a write error. */
void tu_chaos_fake_run(const char *dir, int violating);

/* How many lines of RUN/faults.jsonl (a keel-chaos run's directory) say
 * a fault of this kind ended with this status ("done", "skipped"...).
 * Aborts the test when the file cannot be read. */
int tu_chaos_faults(const char *run, const char *kind, const char *status);
/* The faults of that kind that were dealt: done, or left out because the
 * faults before them ran long on a loaded machine ("no time left"). Fails
 * the test unless at least one was done. */
int tu_chaos_faults_dealt(const char *run, const char *kind);

#endif
