/* A bump allocator for what a history or a log keeps: strings, value
 * lists, map entries. Everything is freed at once by chaos_arena_free;
 * nothing is freed alone. Blocks are never moved, so pointers into the
 * arena stay valid until then. */
#ifndef KEEL_CHAOS_ARENA_H
#define KEEL_CHAOS_ARENA_H

#include <stddef.h>

typedef struct chaos_arena_block chaos_arena_block;

typedef struct chaos_arena {
    chaos_arena_block *head; /* the block being filled; older ones behind */
} chaos_arena;

void chaos_arena_init(chaos_arena *a);
void chaos_arena_free(chaos_arena *a);
/* Frees everything but one block, which is kept for reuse: for scratch
 * space that lives as long as one line. */
void chaos_arena_reset(chaos_arena *a);
/* n bytes aligned for any object, or NULL when out of memory. */
void *chaos_arena_alloc(chaos_arena *a, size_t n);
/* A NUL-terminated copy of s[0..n), or NULL when out of memory. */
char *chaos_arena_strndup(chaos_arena *a, const char *s, size_t n);

/* Grows the heap array *p of `size`-byte elements, *cap of them now, to
 * hold at least `need` (doubling): 0, or KEEL_ENOMEM with *p untouched.
 * For the arrays of a checker that outgrow arenas (they move). */
int chaos_grow(void **p, size_t *cap, size_t need, size_t size);

#endif
