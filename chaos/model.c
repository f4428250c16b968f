#include "chaos/model.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "keel.h"

const chaos_model *chaos_model_for(chaos_family f)
{
    switch (f) {
    case CHAOS_COUNTER:
        return &chaos_model_counter;
    case CHAOS_SET:
        return &chaos_model_set;
    default:
        return &chaos_model_register;
    }
}

struct intern_ent {
    const char *s;
    int64_t id;
};

static int intern_eq(const void *item, const void *key)
{
    return strcmp(((const struct intern_ent *)item)->s, key) == 0;
}

void chaos_intern_init(chaos_intern *t)
{
    memset(t, 0, sizeof *t);
    keel_hmap_init(&t->map);
    chaos_arena_init(&t->arena);
}

void chaos_intern_free(chaos_intern *t)
{
    keel_hmap_free(&t->map);
    chaos_arena_free(&t->arena);
    free(t->strs);
    memset(t, 0, sizeof *t);
}

int64_t chaos_intern_str(chaos_intern *t, const char *s)
{
    uint64_t h = XXH3_64bits(s, strlen(s));
    struct intern_ent *e = keel_hmap_get(&t->map, h, s, intern_eq);

    if (e != NULL)
        return e->id;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        const char **p = realloc(t->strs, cap * sizeof *p);
        if (p == NULL)
            return -1;
        t->strs = p;
        t->cap = cap;
    }
    e = chaos_arena_alloc(&t->arena, sizeof *e);
    if (e == NULL || keel_hmap_put(&t->map, h, e) != 0)
        return -1;
    e->s = s;
    e->id = (int64_t)t->n;
    t->strs[t->n++] = s;
    return e->id;
}
