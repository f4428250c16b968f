#include "chaos/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"

#define BLOCK_MIN (64 * 1024)

struct chaos_arena_block {
    chaos_arena_block *next;
    size_t used, cap;
    alignas(max_align_t) unsigned char data[];
};

void chaos_arena_init(chaos_arena *a)
{
    a->head = NULL;
}

void chaos_arena_free(chaos_arena *a)
{
    while (a->head != NULL) {
        chaos_arena_block *b = a->head;
        a->head = b->next;
        free(b);
    }
}

void *chaos_arena_alloc(chaos_arena *a, size_t n)
{
    const size_t al = alignof(max_align_t);
    chaos_arena_block *b = a->head;
    size_t at;

    if (n == 0)
        n = 1;
    if (n > SIZE_MAX / 2)
        return NULL;
    at = b != NULL ? (b->used + al - 1) / al * al : 0;
    if (n > BLOCK_MIN / 4) {
        /* A block of its own, behind the one being filled, so that the
         * rest of that one is not wasted. */
        chaos_arena_block *big = malloc(sizeof *big + n);
        if (big == NULL)
            return NULL;
        big->cap = big->used = n;
        if (b != NULL) {
            big->next = b->next;
            b->next = big;
        } else {
            big->next = NULL;
            a->head = big;
            big->used = n;
        }
        return big->data;
    }
    if (b == NULL || at + n > b->cap) {
        b = malloc(sizeof *b + BLOCK_MIN);
        if (b == NULL)
            return NULL;
        b->cap = BLOCK_MIN;
        b->used = 0;
        b->next = a->head;
        a->head = b;
        at = 0;
    }
    b->used = at + n;
    return b->data + at;
}

void chaos_arena_reset(chaos_arena *a)
{
    chaos_arena_block *keep = a->head;

    if (keep == NULL)
        return;
    a->head = keep->next;
    chaos_arena_free(a);
    keep->next = NULL;
    keep->used = 0;
    a->head = keep;
}

char *chaos_arena_strndup(chaos_arena *a, const char *s, size_t n)
{
    char *p = chaos_arena_alloc(a, n + 1);

    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

int chaos_grow(void **p, size_t *cap, size_t need, size_t size)
{
    size_t c;
    void *q;

    if (need <= *cap)
        return 0;
    c = *cap ? *cap * 2 : 64;
    while (c < need)
        c *= 2;
    q = realloc(*p, c * size);
    if (q == NULL)
        return KEEL_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}
