/* Named entries holding decimal numbers, as the tests' actor types keep
 * their counters (keel_turn_get / keel_turn_put). */
#ifndef KEEL_TEST_ENTRIES_H
#define KEEL_TEST_ENTRIES_H

#include "keel.h"

/* The number entry `key` holds, or 0 when it is absent or too long. */
long tu_entry_num(keel_turn *t, const char *key);
/* Sets entry `key` to v, in decimal: keel_turn_put's result. */
int tu_entry_set(keel_turn *t, const char *key, long v);

#endif
