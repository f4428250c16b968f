/* The register: one value, a string; "" before the first write (a keel
 * register that was never written reads as empty). read returns it,
 * write replaces it, cas [old, new] replaces it with new when it is old
 * (result true) and leaves it when it is not (result false). The state
 * is the value's interned number. */
#include <stdlib.h>

#include "chaos/json.h"
#include "chaos/model.h"
#include "keel.h"

static int reg_compile(const chaos_history *h, chaos_cop *cops, size_t n,
                       size_t *words, void **data)
{
    chaos_intern *t = malloc(sizeof *t);
    size_t k;

    if (t == NULL)
        return KEEL_ENOMEM;
    chaos_intern_init(t);
    if (chaos_intern_str(t, "") != 0)
        goto oom;
    for (k = 0; k < n; k++) {
        chaos_cop *c = &cops[k];
        const chaos_op *op = &h->ops[c->op];
        c->fn = op->fn;
        c->known = op->outcome == CHAOS_OK;
        switch (op->fn) {
        case CHAOS_READ:
            if (c->known && (c->r = chaos_intern_str(t, op->result.s)) < 0)
                goto oom;
            break;
        case CHAOS_WRITE:
            if ((c->a = chaos_intern_str(t, op->args.s)) < 0)
                goto oom;
            break;
        case CHAOS_CAS:
            if ((c->a = chaos_intern_str(t, op->args.strs[0])) < 0 ||
                (c->b = chaos_intern_str(t, op->args.strs[1])) < 0)
                goto oom;
            c->r = c->known && op->result.b;
            break;
        default:
            break;
        }
    }
    *words = 1;
    *data = t;
    return 0;
oom:
    chaos_intern_free(t);
    free(t);
    return KEEL_ENOMEM;
}

static void reg_init(const void *data, uint64_t *state)
{
    (void)data;
    state[0] = 0; /* "" */
}

static int reg_step(const void *data, const uint64_t *state,
                    const chaos_cop *op, uint64_t *next)
{
    uint64_t v = state[0];

    (void)data;
    switch (op->fn) {
    case CHAOS_READ:
        next[0] = v;
        return !op->known || v == (uint64_t)op->r;
    case CHAOS_WRITE:
        next[0] = (uint64_t)op->a;
        return 1;
    case CHAOS_CAS:
        if (v == (uint64_t)op->a) {
            next[0] = (uint64_t)op->b;
            return !op->known || op->r;
        }
        next[0] = v;
        return !op->known || !op->r;
    default:
        return 0;
    }
}

static void reg_describe(const void *data, const uint64_t *state,
                         chaos_buf *out)
{
    const chaos_intern *t = data;

    chaos_buf_puts(out, "value ");
    if (state[0] < t->n)
        chaos_json_put_str(out, t->strs[state[0]]);
    else
        chaos_buf_puts(out, "?");
}

static void reg_free(void *data)
{
    chaos_intern_free(data);
    free(data);
}

const chaos_model chaos_model_register = {
    .name = "register",
    .compile = reg_compile,
    .init = reg_init,
    .step = reg_step,
    .describe = reg_describe,
    .free = reg_free,
};
