/* The request-key table of the count window (runtime/dedup.h, format 1),
 * as nodes wrote it before records were kept for a time: for tests of
 * actors that still hold one. */
#ifndef KEEL_TESTS_RKTABLE_H
#define KEEL_TESTS_RKTABLE_H

#include <stddef.h>
#include <stdint.h>

/* Appends a record of key to the table tab[0, len) (len 0: a new table)
 * and returns the table's new length. tab must have room for 1 + 29 +
 * rlen more bytes. kept 0: the reply was not kept (rlen ignored). */
size_t tu_rktable_add(uint8_t *tab, size_t len, const uint8_t *key,
                      uint64_t hash, int kept, const void *reply,
                      size_t rlen);

#endif
