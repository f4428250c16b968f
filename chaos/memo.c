#include "chaos/memo.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "keel.h"

void chaos_memo_init(chaos_memo *m, size_t words)
{
    memset(m, 0, sizeof *m);
    m->words = words;
}

void chaos_memo_free(chaos_memo *m)
{
    free(m->tuples);
    free(m->hashes);
    free(m->slots);
    chaos_memo_init(m, 0);
}

static int grow_slots(chaos_memo *m)
{
    size_t cap = m->slots ? (m->mask + 1) * 2 : 1024, k;
    uint32_t *s = calloc(cap, sizeof *s);

    if (s == NULL)
        return KEEL_ENOMEM;
    for (k = 0; k < m->count; k++) {
        size_t i = m->hashes[k] & (cap - 1);
        while (s[i] != 0)
            i = (i + 1) & (cap - 1);
        s[i] = (uint32_t)(k + 1);
    }
    free(m->slots);
    m->slots = s;
    m->mask = cap - 1;
    return 0;
}

int chaos_memo_add(chaos_memo *m, const uint64_t *tuple)
{
    size_t bytes = m->words * sizeof *tuple, i;
    uint64_t h = XXH3_64bits(tuple, bytes);

    if (m->count >= UINT32_MAX - 1)
        return KEEL_ELIMIT;
    /* Load at most 1/2: probes stay short even for near misses. */
    if (m->slots == NULL || (m->count + 1) * 2 > m->mask + 1) {
        if (grow_slots(m) != 0)
            return KEEL_ENOMEM;
    }
    for (i = h & m->mask; m->slots[i] != 0; i = (i + 1) & m->mask) {
        size_t k = m->slots[i] - 1;
        if (m->hashes[k] == h &&
            memcmp(m->tuples + k * m->words, tuple, bytes) == 0)
            return 0;
    }
    if (m->count == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        uint64_t *t = realloc(m->tuples, cap * bytes);
        if (t == NULL)
            return KEEL_ENOMEM;
        m->tuples = t;
        t = realloc(m->hashes, cap * sizeof *t);
        if (t == NULL)
            return KEEL_ENOMEM;
        m->hashes = t;
        m->cap = cap;
    }
    memcpy(m->tuples + m->count * m->words, tuple, bytes);
    m->hashes[m->count] = h;
    m->slots[i] = (uint32_t)(m->count + 1);
    m->count++;
    return 1;
}
