#include "chaos/lin.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chaos/json.h"
#include "chaos/memo.h"
#include "chaos/model.h"
#include "keel.h"

#define INF UINT64_MAX

/* A call or a return in the doubly linked list the search walks. The
 * list starts as every event of the searched operations in history
 * order (returns at +infinity last); linearizing an operation lifts its
 * two entries out, backtracking puts them back (dancing links). */
struct entry {
    size_t op; /* in the search: index in s->ops */
    int is_call;
    uint64_t pos; /* event index; INF for returns that never come */
    struct entry *match, *prev, *next;
};

/* One operation of the search. */
struct sop {
    chaos_cop cop;
    int must;   /* an ok completion inside the prefix: must be linearized */
    size_t twin; /* ops with a twin share the number of the first; others
                  * SIZE_MAX */
};

struct event {
    uint64_t index;
    size_t op; /* index in ops */
};

/* Everything about one actor that does not change from one prefix to the
 * next: its operations compiled once, its events in order. */
struct actor_ctx {
    const chaos_history *h;
    const chaos_actor *act;
    const chaos_model *m;
    void *mdata;
    size_t words;     /* of a state */
    chaos_cop *cops;  /* every op of the actor, compiled (a failed op */
    size_t ncops;     /* is searched while its failure is past a cut) */
    struct event *events; /* the actor's events, in history order */
    size_t nevents;
    uint64_t max_states;
};

/* What one search found. */
struct outcome {
    chaos_lin_verdict verdict;
    uint64_t states;
    /* the deepest point of a failed search */
    size_t *best;  /* indexes in the search's ops, in linearization order */
    size_t nbest;
};

struct search {
    const struct actor_ctx *ac;
    struct sop *ops;
    size_t n, nmust;
    struct entry *entries; /* 2n, sorted */
    struct entry head;
    size_t bwords; /* of the linearized bitset */
};

static int cmp_entry(const void *x, const void *y)
{
    const struct entry *a = x, *b = y;

    if (a->pos != b->pos)
        return a->pos < b->pos ? -1 : 1;
    return a->op < b->op ? -1 : a->op > b->op; /* among returns at INF */
}

static int same_effect(const chaos_cop *a, const chaos_cop *b)
{
    return a->fn == b->fn && a->a == b->a && a->b == b->b;
}

/* Operations that need not be linearized, with the same op and args, are
 * twins: once both are invoked, linearizing one or the other leads to
 * configurations that are the same but for their names, since neither
 * ever has to end. The search tries only the first twin it meets in the
 * list. Found by sorting the ops that may be left out by effect. */
static int cmp_effect(const void *x, const void *y, void *arg)
{
    const struct search *s = arg;
    const chaos_cop *a = &s->ops[*(const size_t *)x].cop,
                    *b = &s->ops[*(const size_t *)y].cop;

    if (a->fn != b->fn)
        return a->fn < b->fn ? -1 : 1;
    if (a->a != b->a)
        return a->a < b->a ? -1 : 1;
    if (a->b != b->b)
        return a->b < b->b ? -1 : 1;
    return *(const size_t *)x < *(const size_t *)y ? -1 : 1;
}

static int find_twins(struct search *s)
{
    size_t *idx = calloc(s->n + 1, sizeof *idx), n = 0, k, j;

    if (idx == NULL)
        return KEEL_ENOMEM;
    for (k = 0; k < s->n; k++) {
        s->ops[k].twin = SIZE_MAX;
        if (!s->ops[k].must)
            idx[n++] = k;
    }
    qsort_r(idx, n, sizeof *idx, cmp_effect, s);
    for (k = 0; k < n; k = j) {
        for (j = k + 1; j < n && same_effect(&s->ops[idx[k]].cop,
                                             &s->ops[idx[j]].cop);
             j++)
            ;
        if (j - k > 1) {
            size_t i;
            for (i = k; i < j; i++)
                s->ops[idx[i]].twin = idx[k];
        }
    }
    free(idx);
    return 0;
}

/* Whether a twin of the op at call entry en lies before it in the list,
 * not yet linearized: then that twin stands for both. */
static int earlier_twin(const struct search *s, const struct entry *en)
{
    size_t tw = s->ops[en->op].twin;
    const struct entry *p;

    if (tw == SIZE_MAX)
        return 0;
    for (p = en->prev; p != &s->head; p = p->prev)
        if (p->is_call && s->ops[p->op].twin == tw)
            return 1;
    return 0;
}

/* The operations of the prefix that ends with event index cut. */
static int search_build(struct search *s, const struct actor_ctx *ac,
                        uint64_t cut)
{
    size_t k, n = 0, e = 0;

    memset(s, 0, sizeof *s);
    s->ac = ac;
    s->ops = calloc(ac->ncops + 1, sizeof *s->ops);
    s->entries = calloc(2 * ac->ncops + 1, sizeof *s->entries);
    if (s->ops == NULL || s->entries == NULL)
        return KEEL_ENOMEM;
    for (k = 0; k < ac->ncops; k++) {
        const chaos_cop *c = &ac->cops[k];
        const chaos_op *op = &ac->h->ops[c->op];
        struct sop *so;
        if (op->invoke > cut)
            break; /* ops are in invocation order */
        so = &s->ops[n];
        so->cop = *c;
        so->must = op->outcome == CHAOS_OK && op->complete <= cut;
        if (!so->must) {
            if (op->outcome == CHAOS_FAIL && op->complete <= cut)
                continue;
            if (chaos_fn_is_read(op->fn))
                continue; /* a read with no result tells nothing */
            if (c->inert)
                continue;
            so->cop.known = 0;
        }
        s->nmust += (size_t)so->must;
        s->entries[e].op = n;
        s->entries[e].is_call = 1;
        s->entries[e].pos = op->invoke;
        e++;
        s->entries[e].op = n;
        s->entries[e].is_call = 0;
        s->entries[e].pos = so->must ? op->complete : INF;
        e++;
        n++;
    }
    s->n = n;
    if (find_twins(s) != 0)
        return KEEL_ENOMEM;
    qsort(s->entries, e, sizeof *s->entries, cmp_entry);
    {
        /* Link calls and returns, then the list. */
        struct entry **call_of = calloc(n + 1, sizeof *call_of);
        if (call_of == NULL)
            return KEEL_ENOMEM;
        for (k = 0; k < e; k++) {
            struct entry *en = &s->entries[k];
            if (en->is_call) {
                call_of[en->op] = en;
            } else {
                en->match = call_of[en->op];
                call_of[en->op]->match = en;
            }
            en->prev = k == 0 ? &s->head : &s->entries[k - 1];
            en->next = k + 1 < e ? &s->entries[k + 1] : NULL;
        }
        free(call_of);
    }
    s->head.next = e > 0 ? &s->entries[0] : NULL;
    s->bwords = n / 64 + 1;
    return 0;
}

static void search_free(struct search *s)
{
    free(s->ops);
    free(s->entries);
}

static void lift(struct entry *en)
{
    struct entry *m = en->match;

    en->prev->next = en->next;
    en->next->prev = en->prev; /* a call is never last: its return follows */
    m->prev->next = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
}

static void unlift(struct entry *en)
{
    struct entry *m = en->match;

    m->prev->next = m;
    if (m->next != NULL)
        m->next->prev = m;
    en->prev->next = en;
    en->next->prev = en;
}

/* The search proper. On a violation, out->best holds the deepest
 * linearization it reached. */
static int search_run(struct search *s, struct outcome *out)
{
    const struct actor_ctx *ac = s->ac;
    const size_t sw = ac->words, bw = s->bwords;
    struct entry **stack = NULL, *en;
    uint64_t *saved = NULL, *tuple = NULL, *state, *next;
    size_t depth = 0, done = 0, best_done = 0;
    chaos_memo memo;
    int rc = 0;

    memset(out, 0, sizeof *out);
    chaos_memo_init(&memo, bw + sw);
    stack = calloc(s->n + 1, sizeof *stack);
    saved = calloc((s->n + 1) * sw, sizeof *saved);
    tuple = calloc(bw + 2 * sw, sizeof *tuple);
    out->best = calloc(s->n + 1, sizeof *out->best);
    if (stack == NULL || saved == NULL || tuple == NULL || out->best == NULL) {
        rc = KEEL_ENOMEM;
        goto done;
    }
    /* tuple = linearized bits | state after; next is scratch behind it */
    state = tuple + bw + sw;
    next = tuple + bw;
    ac->m->init(ac->mdata, state);
    en = s->head.next;
    for (;;) {
        if (done == s->nmust) {
            out->verdict = CHAOS_LIN_OK;
            break;
        }
        if (en == NULL) {
            /* Cannot happen: an unlinearized ok op leaves its return in
             * the list. Treat as a dead end all the same. */
            out->verdict = CHAOS_LIN_VIOLATION;
            break;
        }
        if (en->is_call) {
            const struct sop *so = &s->ops[en->op];
            uint64_t bit = 1ull << (en->op % 64);
            if (!earlier_twin(s, en) &&
                ac->m->step(ac->mdata, state, &so->cop, next)) {
                int added;
                tuple[en->op / 64] |= bit;
                added = chaos_memo_add(&memo, tuple);
                if (added < 0) {
                    rc = added == KEEL_ELIMIT ? 0 : added;
                    out->verdict = CHAOS_LIN_UNDECIDED;
                    break;
                }
                if (added) {
                    /* A new configuration past the bound is not counted:
                     * an undecided search reports max_states, the number
                     * it was allowed. */
                    if (ac->max_states > 0 &&
                        out->states >= ac->max_states) {
                        out->verdict = CHAOS_LIN_UNDECIDED;
                        break;
                    }
                    out->states++;
                    memcpy(saved + depth * sw, state, sw * sizeof *state);
                    stack[depth++] = en;
                    memcpy(state, next, sw * sizeof *state);
                    done += (size_t)so->must;
                    lift(en);
                    if (done > best_done) {
                        /* The deepest point, counted in ok operations:
                         * info ones may always be added, they tell
                         * nothing about how far the search got. */
                        size_t k;
                        for (k = 0; k < depth; k++)
                            out->best[k] = stack[k]->op;
                        out->nbest = depth;
                        best_done = done;
                    }
                    en = s->head.next;
                    continue;
                }
                tuple[en->op / 64] &= ~bit;
            }
            en = en->next;
        } else {
            /* An operation ended before it could be linearized: undo the
             * last choice and try the next one. */
            struct entry *top;
            if (depth == 0) {
                out->verdict = CHAOS_LIN_VIOLATION;
                break;
            }
            top = stack[--depth];
            memcpy(state, saved + depth * sw, sw * sizeof *state);
            tuple[top->op / 64] &= ~(1ull << (top->op % 64));
            done -= (size_t)s->ops[top->op].must;
            unlift(top);
            en = top->next;
        }
    }
done:
    free(stack);
    free(saved);
    free(tuple);
    chaos_memo_free(&memo);
    if (rc != 0 || out->verdict != CHAOS_LIN_VIOLATION) {
        free(out->best);
        out->best = NULL;
        out->nbest = 0;
    }
    return rc;
}

/* Searches the prefix ending at cut. */
static int check_prefix(const struct actor_ctx *ac, uint64_t cut,
                        struct search *s, struct outcome *out)
{
    int rc;

    memset(out, 0, sizeof *out);
    rc = search_build(s, ac, cut);
    if (rc == 0)
        rc = search_run(s, out);
    return rc;
}

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp_event(const void *x, const void *y)
{
    uint64_t a = ((const struct event *)x)->index,
             b = ((const struct event *)y)->index;

    return a < b ? -1 : a > b;
}

static void ctx_free(struct actor_ctx *ac)
{
    if (ac->m != NULL && ac->mdata != NULL)
        ac->m->free(ac->mdata);
    free(ac->cops);
    free(ac->events);
}

static int ctx_init(struct actor_ctx *ac, const chaos_history *h,
                    size_t actor, const chaos_lin_opts *o)
{
    const chaos_actor *act = &h->actors[actor];
    size_t k;
    int rc;

    memset(ac, 0, sizeof *ac);
    ac->h = h;
    ac->act = act;
    ac->m = chaos_model_for(act->family);
    ac->max_states = o != NULL ? o->max_states : 0;
    ac->cops = calloc(act->nops + 1, sizeof *ac->cops);
    ac->events = calloc(2 * act->nops + 1, sizeof *ac->events);
    if (ac->cops == NULL || ac->events == NULL)
        return KEEL_ENOMEM;
    for (k = 0; k < act->nops; k++) {
        const chaos_op *op = &h->ops[act->ops[k]];
        ac->events[ac->nevents].index = op->invoke;
        ac->events[ac->nevents++].op = act->ops[k];
        if (op->completed) {
            ac->events[ac->nevents].index = op->complete;
            ac->events[ac->nevents++].op = act->ops[k];
        }
        /* A failed op is needed only while its failure lies past a cut. */
        ac->cops[ac->ncops++].op = act->ops[k];
    }
    qsort(ac->events, ac->nevents, sizeof *ac->events, cmp_event);
    rc = ac->m->compile(h, ac->cops, ac->ncops, &ac->words, &ac->mdata);
    if (rc != 0)
        ac->mdata = NULL;
    return rc;
}

/* Fills the report of a violation from the failed search of the
 * shortest failing prefix. */
static int explain(const struct actor_ctx *ac, const struct search *s,
                   const struct outcome *out, chaos_lin_actor *res)
{
    const size_t sw = ac->words;
    uint64_t *state = calloc(2 * sw, sizeof *state), *next = state + sw;
    char *in = calloc(s->n + 1, 1);
    size_t k;
    chaos_buf b;

    res->order = calloc(out->nbest + 1, sizeof *res->order);
    res->pending = calloc(s->n + 1, sizeof *res->pending);
    res->refused = calloc(s->n + 1, sizeof *res->refused);
    res->why = calloc(s->n + 1, sizeof *res->why);
    if (state == NULL || in == NULL || res->order == NULL ||
        res->pending == NULL || res->refused == NULL || res->why == NULL) {
        free(state);
        free(in);
        return KEEL_ENOMEM;
    }
    ac->m->init(ac->mdata, state);
    for (k = 0; k < out->nbest; k++) {
        const struct sop *so = &s->ops[out->best[k]];
        ac->m->step(ac->mdata, state, &so->cop, next);
        memcpy(state, next, sw * sizeof *state);
        in[out->best[k]] = 1;
        res->order[res->norder++] = so->cop.op;
    }
    /* Where the walk from that point stops: the first return of an op
     * that is not linearized. Calls before it were the candidates. */
    res->stuck = SIZE_MAX;
    for (k = 0; k < 2 * s->n; k++) {
        const struct entry *en = &s->entries[k];
        const struct sop *so = &s->ops[en->op];
        if (in[en->op])
            continue;
        if (!en->is_call) {
            res->stuck = so->cop.op;
            break;
        }
        res->pending[res->npending] = so->cop.op;
        res->refused[res->npending] =
            !ac->m->step(ac->mdata, state, &so->cop, next);
        if (res->refused[res->npending] && ac->m->refusal != NULL) {
            chaos_buf_init(&b);
            ac->m->refusal(ac->mdata, state, &so->cop, &b);
            if (!b.oom && b.len > 0)
                res->why[res->npending] = b.p; /* owned now */
            else
                chaos_buf_free(&b);
        }
        res->npending++;
    }
    chaos_buf_init(&b);
    ac->m->describe(ac->mdata, state, &b);
    res->state = b.oom ? NULL : b.p;
    if (res->state == NULL)
        chaos_buf_free(&b);
    free(state);
    free(in);
    return res->state == NULL ? KEEL_ENOMEM : 0;
}

int chaos_lin_check_actor(const chaos_history *h, size_t actor,
                          const chaos_lin_opts *o, chaos_lin_actor *res)
{
    struct actor_ctx ac;
    struct search s;
    struct outcome out;
    double t0 = now_s();
    size_t lo, hi;
    int rc;

    memset(res, 0, sizeof *res);
    res->actor = actor;
    res->stuck = SIZE_MAX;
    rc = ctx_init(&ac, h, actor, o);
    if (rc != 0)
        goto done;
    res->events = ac.nevents;
    rc = check_prefix(&ac, INF, &s, &out);
    res->searched = s.n;
    res->states = out.states;
    res->verdict = out.verdict;
    search_free(&s);
    free(out.best);
    if (rc != 0 || out.verdict != CHAOS_LIN_VIOLATION)
        goto done;

    /* The shortest failing prefix: prefixes of lo events pass (or are
     * undecided), of hi events fail. */
    lo = 0;
    hi = ac.nevents;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        rc = check_prefix(&ac, ac.events[mid - 1].index, &s, &out);
        res->states += out.states;
        search_free(&s);
        free(out.best);
        if (rc != 0)
            goto done;
        if (out.verdict == CHAOS_LIN_VIOLATION)
            hi = mid;
        else
            lo = mid;
    }
    res->prefix_events = hi;
    res->prefix_end = ac.events[hi - 1].op;
    rc = check_prefix(&ac, ac.events[hi - 1].index, &s, &out);
    res->states += out.states;
    if (rc == 0)
        rc = explain(&ac, &s, &out, res);
    search_free(&s);
    free(out.best);
done:
    ctx_free(&ac);
    res->seconds = now_s() - t0;
    return rc;
}

void chaos_lin_actor_free(chaos_lin_actor *a)
{
    size_t k;

    if (a->why != NULL)
        for (k = 0; k < a->npending; k++)
            free(a->why[k]);
    free(a->why);
    a->why = NULL;
    free(a->order);
    free(a->pending);
    free(a->refused);
    free(a->state);
    a->order = a->pending = NULL;
    a->refused = NULL;
    a->state = NULL;
}

void chaos_lin_result_free(chaos_lin_result *res)
{
    size_t k;

    for (k = 0; k < res->nactors; k++)
        chaos_lin_actor_free(&res->actors[k]);
    free(res->actors);
    memset(res, 0, sizeof *res);
}

int chaos_lin_check(const chaos_history *h, const chaos_lin_opts *o,
                    chaos_lin_result *res)
{
    double t0 = now_s();
    size_t k;

    memset(res, 0, sizeof *res);
    res->actors = calloc(h->nactors + 1, sizeof *res->actors);
    if (res->actors == NULL)
        return KEEL_ENOMEM;
    for (k = 0; k < h->nactors; k++) {
        chaos_lin_actor *a = &res->actors[k];
        int rc = chaos_lin_check_actor(h, k, o, a);
        res->nactors++;
        if (rc != 0) {
            chaos_lin_result_free(res);
            return rc;
        }
        res->states += a->states;
        res->violations += a->verdict == CHAOS_LIN_VIOLATION;
        res->undecided += a->verdict == CHAOS_LIN_UNDECIDED;
    }
    res->seconds = now_s() - t0;
    return 0;
}

/* ------------------------------------------------------------- reports */

static void print_op(FILE *f, const chaos_history *h, size_t op,
                     const char *lead)
{
    chaos_buf b;

    chaos_buf_init(&b);
    chaos_op_describe(h, &h->ops[op], &b);
    fprintf(f, "%s%s\n", lead, b.oom ? "(out of memory)" : b.p);
    chaos_buf_free(&b);
}

#define SHOW_ORDER 12
#define SHOW_PENDING 20

void chaos_lin_print_actor(FILE *f, const chaos_history *h,
                           const chaos_lin_actor *a)
{
    const chaos_actor *act = &h->actors[a->actor];
    size_t k, from;

    if (a->verdict != CHAOS_LIN_VIOLATION || a->stuck == SIZE_MAX) {
        fprintf(f, "  %s (%s): %s\n", act->name,
                chaos_family_name(act->family),
                a->verdict == CHAOS_LIN_UNDECIDED ? "undecided" : "ok");
        return;
    }
    fprintf(f, "  %s (%s model): not linearizable\n", act->name,
            chaos_family_name(act->family));
    fprintf(f, "    shortest failing prefix: its first %zu of %zu events, "
               "up to line %zu, the completion of\n",
            a->prefix_events, a->events,
            h->ops[a->prefix_end].complete_line);
    print_op(f, h, a->prefix_end, "      ");
    fprintf(f, "    the search of that prefix got stuck at the completion "
               "of\n");
    print_op(f, h, a->stuck, "      ");
    fprintf(f, "    the longest linearization found has %zu operations",
            a->norder);
    from = a->norder > SHOW_ORDER ? a->norder - SHOW_ORDER : 0;
    if (from > 0)
        fprintf(f, "; the last %d:\n", SHOW_ORDER);
    else
        fprintf(f, "%s\n", a->norder > 0 ? ":" : "");
    for (k = from; k < a->norder; k++)
        print_op(f, h, a->order[k], "      ");
    fprintf(f, "    after it the %s holds %s; none of these could come "
               "next:\n",
            chaos_family_name(act->family), a->state ? a->state : "?");
    for (k = 0; k < a->npending && k < SHOW_PENDING; k++) {
        chaos_buf b;
        chaos_buf_init(&b);
        chaos_op_describe(h, &h->ops[a->pending[k]], &b);
        fprintf(f, "      %s\n        %s%s%s\n",
                b.oom ? "(out of memory)" : b.p,
                a->refused[k] ? "the model refuses it in this state"
                              : "the model allows it, but no linearization "
                                "goes on from there",
                a->refused[k] && a->why != NULL && a->why[k] != NULL ? ": "
                                                                     : "",
                a->refused[k] && a->why != NULL && a->why[k] != NULL
                    ? a->why[k]
                    : "");
        chaos_buf_free(&b);
    }
    if (a->npending > SHOW_PENDING)
        fprintf(f, "      ... and %zu more\n", a->npending - SHOW_PENDING);
}

static int cmp_prefix(const void *x, const void *y)
{
    const chaos_lin_actor *a = *(const chaos_lin_actor *const *)x,
                          *b = *(const chaos_lin_actor *const *)y;

    if (a->prefix_events != b->prefix_events)
        return a->prefix_events < b->prefix_events ? -1 : 1;
    return a->actor < b->actor ? -1 : a->actor > b->actor;
}

void chaos_lin_print(FILE *f, const chaos_history *h,
                     const chaos_lin_result *res, size_t max_detail)
{
    size_t fam[3] = {0, 0, 0}, k, n = 0;
    const chaos_lin_actor **bad;

    for (k = 0; k < h->nactors; k++)
        fam[h->actors[k].family]++;
    fprintf(f, "linearizability: %s (%zu actors: %zu register, %zu counter, "
               "%zu set; %llu configurations, %.2f s)\n",
            res->violations > 0   ? "FAIL"
            : res->undecided > 0 ? "UNDECIDED"
                                  : "PASS",
            h->nactors, fam[CHAOS_REGISTER], fam[CHAOS_COUNTER],
            fam[CHAOS_SET], (unsigned long long)res->states, res->seconds);
    if (res->violations > 0)
        fprintf(f, "  %zu of them not linearizable\n", res->violations);
    for (k = 0; k < res->nactors; k++)
        if (res->actors[k].verdict == CHAOS_LIN_UNDECIDED)
            fprintf(f, "  %s: undecided after %llu configurations (raise "
                       "--max-states)\n",
                    h->actors[res->actors[k].actor].name,
                    (unsigned long long)res->actors[k].states);
    bad = calloc(res->violations + 1, sizeof *bad);
    if (bad == NULL)
        return;
    for (k = 0; k < res->nactors; k++)
        if (res->actors[k].verdict == CHAOS_LIN_VIOLATION)
            bad[n++] = &res->actors[k];
    qsort(bad, n, sizeof *bad, cmp_prefix);
    for (k = 0; k < n && k < max_detail; k++)
        chaos_lin_print_actor(f, h, bad[k]);
    if (n > max_detail) {
        fprintf(f, "  also not linearizable:");
        for (k = max_detail; k < n; k++)
            fprintf(f, " %s", h->actors[bad[k]->actor].name);
        fprintf(f, "\n");
    }
    free(bad);
}
