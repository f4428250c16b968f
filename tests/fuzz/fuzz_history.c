/* Fuzz target: the files keel-chaos check reads (docs/chaos.md): a
 * history.jsonl (chaos/history.c, chaos/json.c), then the checks over
 * it (chaos/lin.c, chaos/lostwrite.c); or an activation log
 * (chaos/actlog.c).
 *
 * Input: a selector byte, then the file. With bit 0 clear the file is a
 * history, with it set an activation log.
 *
 * Properties, besides "no crash, no sanitizer report, no leak":
 *  - a history is read or refused with KEEL_EINVAL;
 *  - the writer accepts every event of a history that was read, and what
 *    it writes reads back to the same operations: the writer and the
 *    reader refuse the same things;
 *  - the linearizability check of a history that was read (its search
 *    bounded) gives each actor a verdict, and a violation's report names
 *    operations of that actor; the lost-write check answers or refuses
 *    with KEEL_EINVAL;
 *  - an activation log is read or refused with KEEL_EINVAL, and a refused
 *    one leaves nothing behind; read as the log of two nodes, every
 *    finding names intervals that exist, an overlap two intervals of one
 *    actor on two nodes that share an instant (ends included), an epoch
 *    going back two of one actor. */
#include <string.h>

#include "chaos/actlog.h"
#include "chaos/history.h"
#include "chaos/hwriter.h"
#include "chaos/json.h"
#include "chaos/lin.h"
#include "chaos/lostwrite.h"
#include "fuzz.h"
#include "keel.h"

static int read_text(chaos_history *h, const char *text, size_t len)
{
    char err[512];
    FILE *f;
    int rc;

    if (len == 0)
        return 0; /* fmemopen refuses an empty buffer; nothing to read */
    f = fmemopen((void *)text, len, "r");
    FUZZ_CHECK(f != NULL);
    rc = chaos_history_read_stream(h, f, "fuzz", err, sizeof err);
    fclose(f);
    FUZZ_CHECK(rc == 0 || rc == KEEL_EINVAL);
    return rc;
}

/* The events of h, in file order, through the writer. */
static char *write_back(const chaos_history *h, size_t *len)
{
    char *buf = NULL, err[512];
    FILE *f = open_memstream(&buf, len);
    chaos_hwriter w;
    size_t k, next = 0;
    uint64_t idx;

    FUZZ_CHECK(f != NULL);
    chaos_hwriter_init(&w, f);
    for (idx = 0; idx < h->nevents; idx++) {
        const chaos_op *op = NULL;
        chaos_event e;
        int inv;
        /* ops are in invocation order; completions come later. */
        if (next < h->nops && h->ops[next].invoke == idx) {
            op = &h->ops[next++];
            inv = 1;
        } else {
            for (k = 0; k < next; k++)
                if (h->ops[k].complete == idx)
                    op = &h->ops[k];
            inv = 0;
        }
        FUZZ_CHECK(op != NULL);
        memset(&e, 0, sizeof e);
        e.t = inv ? CHAOS_INVOKE : op->outcome;
        e.time_ns = inv ? op->invoke_ns : op->complete_ns;
        e.client = op->client;
        e.actor = h->actors[op->actor].name;
        e.op = op->fn;
        e.args = op->args;
        e.final = op->final;
        if (inv) {
            e.node = op->node;
        } else {
            e.result = op->result;
            e.error = op->error;
        }
        FUZZ_CHECK(chaos_hwriter_write(&w, &e, err, sizeof err) == 0);
    }
    chaos_hwriter_close(&w);
    fclose(f);
    return buf;
}

static int value_eq(const chaos_value *a, const chaos_value *b)
{
    size_t k;

    if (a->type != b->type || !a->b != !b->b || a->i != b->i || a->n != b->n)
        return 0;
    if (a->type == CHAOS_V_STR)
        return strcmp(a->s, b->s) == 0;
    for (k = 0; k < a->n; k++)
        if (strcmp(a->strs[k], b->strs[k]) != 0)
            return 0;
    return 1;
}

static void check_history(const char *text, size_t len)
{
    chaos_history h, h2;
    chaos_lin_opts o = {.max_states = 2000};
    chaos_lin_result lr;
    chaos_lost_result wr;
    char *again, err[512];
    size_t alen, k;

    chaos_history_init(&h);
    if (read_text(&h, text, len) != 0) {
        chaos_history_free(&h);
        return;
    }
    again = write_back(&h, &alen);
    chaos_history_init(&h2);
    FUZZ_CHECK(read_text(&h2, again, alen) == 0);
    FUZZ_CHECK(h2.nops == h.nops && h2.nevents == h.nevents &&
               h2.nactors == h.nactors && h2.nclients == h.nclients);
    for (k = 0; k < h.nops; k++) {
        const chaos_op *a = &h.ops[k], *b = &h2.ops[k];
        FUZZ_CHECK(a->fn == b->fn && a->client == b->client &&
                   a->outcome == b->outcome && a->completed == b->completed &&
                   a->final == b->final && a->invoke == b->invoke &&
                   a->complete == b->complete &&
                   a->invoke_ns == b->invoke_ns &&
                   a->complete_ns == b->complete_ns &&
                   strcmp(h.actors[a->actor].name,
                          h2.actors[b->actor].name) == 0 &&
                   value_eq(&a->args, &b->args) &&
                   value_eq(&a->result, &b->result));
    }
    chaos_history_free(&h2);
    free(again);

    FUZZ_CHECK(chaos_lin_check(&h, &o, &lr) == 0);
    FUZZ_CHECK(lr.nactors == h.nactors);
    for (k = 0; k < lr.nactors; k++) {
        const chaos_lin_actor *a = &lr.actors[k];
        size_t j;
        if (a->verdict != CHAOS_LIN_VIOLATION)
            continue;
        FUZZ_CHECK(a->prefix_events >= 1 && a->prefix_events <= a->events);
        FUZZ_CHECK(a->stuck < h.nops && h.ops[a->stuck].actor == k);
        FUZZ_CHECK(h.ops[a->prefix_end].actor == k);
        for (j = 0; j < a->norder; j++)
            FUZZ_CHECK(h.ops[a->order[j]].actor == k);
        for (j = 0; j < a->npending; j++)
            FUZZ_CHECK(h.ops[a->pending[j]].actor == k);
    }
    chaos_lin_result_free(&lr);
    k = (size_t)chaos_lost_check(&h, &wr, err, sizeof err);
    FUZZ_CHECK(k == 0 || (int)k == KEEL_EINVAL);
    if (k == 0)
        chaos_lost_result_free(&wr);
    chaos_history_free(&h);
}

static void check_actlog(const char *text, size_t len)
{
    chaos_actlog a;
    char err[512];
    size_t k;
    int rc;

    chaos_actlog_init(&a);
    rc = chaos_actlog_parse(&a, "n1", "n1.log", text, len, err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == KEEL_EINVAL);
    if (rc != 0) {
        FUZZ_CHECK(a.n == 0 && a.nnodes == 0 && a.nfound == 0);
        chaos_actlog_free(&a);
        return;
    }
    FUZZ_CHECK(chaos_actlog_parse(&a, "n2", "n2.log", text, len, err,
                                  sizeof err) == 0);
    FUZZ_CHECK(chaos_actlog_check(&a) == 0);
    for (k = 0; k < a.n; k++)
        FUZZ_CHECK(a.iv[k].end == CHAOS_ACT_OPEN ||
                   a.iv[k].end >= a.iv[k].start);
    for (k = 0; k < a.nfound; k++) {
        const chaos_act_finding *f = &a.found[k];
        const chaos_act_iv *p, *q;
        FUZZ_CHECK(f->a < a.n && f->b < a.n);
        p = &a.iv[f->a];
        q = &a.iv[f->b];
        FUZZ_CHECK(strcmp(p->actor, q->actor) == 0);
        if (f->kind == CHAOS_ACT_OVERLAP)
            FUZZ_CHECK(strcmp(p->node, q->node) != 0 &&
                       q->start <= p->end && p->start <= q->end);
        else if (f->kind == CHAOS_ACT_EPOCH_BACK)
            FUZZ_CHECK(q->epoch < p->epoch);
        else
            FUZZ_CHECK(strcmp(p->node, q->node) == 0);
    }
    chaos_actlog_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] & 1)
        check_actlog((const char *)data + 1, size - 1);
    else
        check_history((const char *)data + 1, size - 1);
    return 0;
}
