#include "runtime/hmap.h"

#include <stdlib.h>

#include "keel.h"

#define HMAP_MIN_CAP 16

void keel_hmap_init(keel_hmap *m)
{
    m->slots = NULL;
    m->mask = 0;
    m->count = 0;
}

void keel_hmap_free(keel_hmap *m)
{
    free(m->slots);
    keel_hmap_init(m);
}

void *keel_hmap_get(const keel_hmap *m, uint64_t hash, const void *key,
                    keel_hmap_eq_fn eq)
{
    size_t i;

    if (m->slots == NULL)
        return NULL;
    for (i = hash & m->mask;; i = (i + 1) & m->mask) {
        keel_hmap_slot *s = &m->slots[i];
        if (s->item == NULL)
            return NULL;
        if (s->hash == hash && eq(s->item, key))
            return s->item;
    }
}

static void hmap_place(keel_hmap_slot *slots, size_t mask, uint64_t hash,
                       void *item)
{
    size_t i = hash & mask;

    while (slots[i].item != NULL)
        i = (i + 1) & mask;
    slots[i].hash = hash;
    slots[i].item = item;
}

static int hmap_grow(keel_hmap *m)
{
    size_t cap = m->slots ? (m->mask + 1) * 2 : HMAP_MIN_CAP;
    keel_hmap_slot *slots = calloc(cap, sizeof *slots);
    size_t i;

    if (slots == NULL)
        return KEEL_ENOMEM;
    if (m->slots != NULL) {
        for (i = 0; i <= m->mask; i++)
            if (m->slots[i].item != NULL)
                hmap_place(slots, cap - 1, m->slots[i].hash,
                           m->slots[i].item);
        free(m->slots);
    }
    m->slots = slots;
    m->mask = cap - 1;
    return 0;
}

int keel_hmap_reserve(keel_hmap *m, size_t more)
{
    while (m->slots == NULL || (m->count + more) * 4 > (m->mask + 1) * 3) {
        int rc = hmap_grow(m);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int keel_hmap_put(keel_hmap *m, uint64_t hash, void *item)
{
    /* Keep the load at or below 3/4: probes stay short. */
    if (m->slots == NULL || (m->count + 1) * 4 > (m->mask + 1) * 3) {
        int rc = hmap_grow(m);
        if (rc != 0)
            return rc;
    }
    hmap_place(m->slots, m->mask, hash, item);
    m->count++;
    return 0;
}

int keel_hmap_remove(keel_hmap *m, uint64_t hash, const void *item)
{
    size_t i, j;

    if (m->slots == NULL)
        return 0;
    for (i = hash & m->mask;; i = (i + 1) & m->mask) {
        if (m->slots[i].item == NULL)
            return 0;
        if (m->slots[i].item == item)
            break;
    }
    /* Backward shift: pull later members of the probe run into the hole
     * when their home slot does not lie cyclically in (hole, j]. */
    for (j = (i + 1) & m->mask; m->slots[j].item != NULL;
         j = (j + 1) & m->mask) {
        size_t home = m->slots[j].hash & m->mask;
        int movable = (i <= j) ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].item = NULL;
    m->slots[i].hash = 0;
    m->count--;
    return 1;
}

int keel_hmap_next(const keel_hmap *m, size_t *pos, void **item)
{
    if (m->slots == NULL)
        return 0;
    while (*pos <= m->mask) {
        keel_hmap_slot *s = &m->slots[(*pos)++];
        if (s->item != NULL) {
            *item = s->item;
            return 1;
        }
    }
    return 0;
}
