/* The set: elements (strings), empty at first. add e puts e in it;
 * read_set returns all its elements, in any order. (keel has no set type:
 * a runner can add e with the kv type's `put e 1` and read with `keys`.)
 * The state is a bitset over every element the actor's operations name,
 * so a read compares a few words. */
#include <stdlib.h>
#include <string.h>

#include "chaos/json.h"
#include "chaos/model.h"
#include "keel.h"

struct set_data {
    chaos_intern elems;
    size_t words;
    uint64_t *reads; /* the bitsets of the reads, words each */
};

static void set_free(void *data)
{
    struct set_data *d = data;

    if (d == NULL)
        return;
    chaos_intern_free(&d->elems);
    free(d->reads);
    free(d);
}

static int set_compile(const chaos_history *h, chaos_cop *cops, size_t n,
                       size_t *words, void **data)
{
    struct set_data *d = calloc(1, sizeof *d);
    size_t k, j, nreads = 0, r = 0;

    if (d == NULL)
        return KEEL_ENOMEM;
    chaos_intern_init(&d->elems);
    for (k = 0; k < n; k++) {
        const chaos_op *op = &h->ops[cops[k].op];
        cops[k].fn = op->fn;
        cops[k].known = op->outcome == CHAOS_OK;
        if (op->fn == CHAOS_ADD) {
            if ((cops[k].a = chaos_intern_str(&d->elems, op->args.s)) < 0)
                goto oom;
        } else if (cops[k].known) {
            nreads++;
            for (j = 0; j < op->result.n; j++)
                if (chaos_intern_str(&d->elems, op->result.strs[j]) < 0)
                    goto oom;
        }
    }
    d->words = d->elems.n / 64 + 1;
    if (nreads > 0) {
        d->reads = calloc(nreads * d->words, sizeof *d->reads);
        if (d->reads == NULL)
            goto oom;
    }
    for (k = 0; k < n; k++) {
        const chaos_op *op = &h->ops[cops[k].op];
        uint64_t *bits;
        if (op->fn != CHAOS_READ_SET || !cops[k].known)
            continue;
        bits = d->reads + r++ * d->words;
        for (j = 0; j < op->result.n; j++) {
            int64_t e = chaos_intern_str(&d->elems, op->result.strs[j]);
            uint64_t bit = 1ull << (e % 64);
            if (bits[e / 64] & bit)
                cops[k].impossible = 1; /* read the same element twice */
            bits[e / 64] |= bit;
        }
        cops[k].bits = bits;
    }
    /* An add whose element no read returns can only come after every
     * read: the same as never. */
    for (k = 0; k < n; k++) {
        int64_t e = cops[k].a;
        if (cops[k].fn != CHAOS_ADD)
            continue;
        cops[k].inert = 1;
        for (j = 0; j < r && cops[k].inert; j++)
            if (d->reads[j * d->words + (size_t)e / 64] & (1ull << (e % 64)))
                cops[k].inert = 0;
    }
    *words = d->words;
    *data = d;
    return 0;
oom:
    set_free(d);
    return KEEL_ENOMEM;
}

static void set_init(const void *data, uint64_t *state)
{
    const struct set_data *d = data;

    memset(state, 0, d->words * sizeof *state);
}

static int set_step(const void *data, const uint64_t *state,
                    const chaos_cop *op, uint64_t *next)
{
    const struct set_data *d = data;

    memcpy(next, state, d->words * sizeof *state);
    switch (op->fn) {
    case CHAOS_ADD:
        next[op->a / 64] |= 1ull << (op->a % 64);
        return 1;
    case CHAOS_READ_SET:
        if (!op->known)
            return 1;
        return !op->impossible &&
               memcmp(state, op->bits, d->words * sizeof *state) == 0;
    default:
        return 0;
    }
}

static void set_describe(const void *data, const uint64_t *state,
                         chaos_buf *out)
{
    const struct set_data *d = data;
    size_t e, shown = 0, count = 0;

    chaos_buf_puts(out, "{");
    for (e = 0; e < d->elems.n; e++) {
        if (!(state[e / 64] & (1ull << (e % 64))))
            continue;
        count++;
        if (shown == 16)
            continue;
        if (shown++ > 0)
            chaos_buf_puts(out, ", ");
        chaos_json_put_str(out, d->elems.strs[e]);
    }
    if (count > shown)
        chaos_buf_printf(out, ", ... %zu in all", count);
    chaos_buf_puts(out, "}");
}

/* At most this many elements named per side of a refusal. */
#define REFUSAL_NAMES 8

/* The elements of a that b lacks, as " \"e\" \"f\"" (at most
 * REFUSAL_NAMES, then how many in all); how many there are. */
static size_t put_missing(const struct set_data *d, const uint64_t *a,
                          const uint64_t *b, chaos_buf *out)
{
    size_t e, n = 0;

    for (e = 0; e < d->elems.n; e++) {
        uint64_t bit = 1ull << (e % 64);
        if (!(a[e / 64] & bit) || (b[e / 64] & bit))
            continue;
        if (n++ < REFUSAL_NAMES) {
            chaos_buf_puts(out, " ");
            chaos_json_put_str(out, d->elems.strs[e]);
        }
    }
    if (n > REFUSAL_NAMES)
        chaos_buf_printf(out, " ... %zu in all", n);
    return n;
}

/* A read refused: the elements the set holds that it lacks, and those it
 * returns that the set does not hold, named as lost-writes names them,
 * so that a read of a few hundred elements that differs in one shows
 * which. */
static void set_refusal(const void *data, const uint64_t *state,
                        const chaos_cop *op, chaos_buf *out)
{
    const struct set_data *d = data;
    chaos_buf b;
    size_t lack, extra;

    if (op->fn != CHAOS_READ_SET || !op->known || op->bits == NULL)
        return;
    if (op->impossible) {
        chaos_buf_puts(out, "it returns an element twice");
        return;
    }
    chaos_buf_init(&b);
    chaos_buf_puts(&b, "it lacks elements the set holds:");
    lack = put_missing(d, state, op->bits, &b);
    if (lack > 0)
        chaos_buf_puts(out, b.oom ? "" : b.p);
    chaos_buf_free(&b);
    chaos_buf_init(&b);
    chaos_buf_printf(&b, "%sit returns elements the set does not hold:",
                     lack > 0 ? "; " : "");
    extra = put_missing(d, op->bits, state, &b);
    if (extra > 0)
        chaos_buf_puts(out, b.oom ? "" : b.p);
    chaos_buf_free(&b);
}

const chaos_model chaos_model_set = {
    .name = "set",
    .compile = set_compile,
    .init = set_init,
    .step = set_step,
    .describe = set_describe,
    .refusal = set_refusal,
    .free = set_free,
};
