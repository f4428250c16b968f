/* An open-addressing hash table of pointers. Items are the caller's
 * structs; the table stores only pointers and each item's 64-bit hash, and
 * asks the caller's eq() to compare keys. Linear probing with backward-shift
 * deletion, so there are no tombstones and lookups stay short. The table
 * never owns its items. */
#ifndef KEEL_RUNTIME_HMAP_H
#define KEEL_RUNTIME_HMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct keel_hmap_slot {
    uint64_t hash;
    void *item; /* NULL: empty */
} keel_hmap_slot;

typedef struct keel_hmap {
    keel_hmap_slot *slots;
    size_t mask; /* capacity - 1; capacity is a power of two */
    size_t count;
} keel_hmap;

/* eq(item, key) returns nonzero when item has the key. */
typedef int (*keel_hmap_eq_fn)(const void *item, const void *key);

void keel_hmap_init(keel_hmap *m);
void keel_hmap_free(keel_hmap *m);
void *keel_hmap_get(const keel_hmap *m, uint64_t hash, const void *key,
                    keel_hmap_eq_fn eq);
/* Inserts an item whose key is not present. KEEL_ENOMEM on growth failure
 * (the table is unchanged). */
int keel_hmap_put(keel_hmap *m, uint64_t hash, void *item);
/* Makes room for `more` insertions that will not need to grow the table
 * (so they cannot fail). KEEL_ENOMEM, the table unchanged. */
int keel_hmap_reserve(keel_hmap *m, size_t more);
/* Removes this very item (compared by pointer). Returns 1 if found. */
int keel_hmap_remove(keel_hmap *m, uint64_t hash, const void *item);

/* Iteration: for (i = 0; keel_hmap_next(m, &i, &item);) — not stable
 * across insertions or removals. */
int keel_hmap_next(const keel_hmap *m, size_t *pos, void **item);

#endif
