/* The counter: a signed 64-bit integer, 0 at first. incr n adds n (a
 * negative n subtracts) and returns the new value when the client learnt
 * it (keel's counter replies with it; a cast does not); get returns the
 * value. An increment that would overflow cannot take effect, as keel's
 * counter refuses it. The state is the value. */
#include "chaos/json.h"
#include "chaos/model.h"
#include "keel.h"

static int ctr_compile(const chaos_history *h, chaos_cop *cops, size_t n,
                       size_t *words, void **data)
{
    size_t k;

    for (k = 0; k < n; k++) {
        chaos_cop *c = &cops[k];
        const chaos_op *op = &h->ops[c->op];
        c->fn = op->fn;
        c->known = op->outcome == CHAOS_OK &&
                   op->result.type == CHAOS_V_INT;
        c->a = op->fn == CHAOS_INCR ? op->args.i : 0;
        c->r = c->known ? op->result.i : 0;
        c->inert = op->fn == CHAOS_INCR && c->a == 0;
    }
    *words = 1;
    *data = NULL;
    return 0;
}

static void ctr_init(const void *data, uint64_t *state)
{
    (void)data;
    state[0] = 0;
}

static int ctr_step(const void *data, const uint64_t *state,
                    const chaos_cop *op, uint64_t *next)
{
    int64_t v = (int64_t)state[0], nv;

    (void)data;
    switch (op->fn) {
    case CHAOS_GET:
        next[0] = state[0];
        return !op->known || v == op->r;
    case CHAOS_INCR:
        if (__builtin_add_overflow(v, op->a, &nv))
            return 0;
        next[0] = (uint64_t)nv;
        return !op->known || nv == op->r;
    default:
        return 0;
    }
}

static void ctr_describe(const void *data, const uint64_t *state,
                         chaos_buf *out)
{
    (void)data;
    chaos_buf_printf(out, "value %lld", (long long)(int64_t)state[0]);
}

static void ctr_free(void *data)
{
    (void)data;
}

const chaos_model chaos_model_counter = {
    .name = "counter",
    .compile = ctr_compile,
    .init = ctr_init,
    .step = ctr_step,
    .describe = ctr_describe,
    .free = ctr_free,
};
