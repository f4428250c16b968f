#include "chaos/lostwrite.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chaos/json.h"
#include "keel.h"

#define NEVER UINT64_MAX /* the completion of an op that may land late */

static int say(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int say(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return KEEL_EINVAL;
}

void chaos_lost_result_free(chaos_lost_result *r)
{
    size_t k;

    for (k = 0; k < r->nfound; k++)
        free(r->found[k].msg);
    free(r->found);
    memset(r, 0, sizeof *r);
}

static int add_finding(chaos_lost_result *r, size_t actor, size_t final_op,
                       size_t write_op, chaos_buf *msg)
{
    chaos_lost_finding *f;

    if (msg->oom) {
        chaos_buf_free(msg);
        return KEEL_ENOMEM;
    }
    f = realloc(r->found, (r->nfound + 1) * sizeof *f);
    if (f == NULL) {
        chaos_buf_free(msg);
        return KEEL_ENOMEM;
    }
    r->found = f;
    f = &r->found[r->nfound++];
    f->actor = actor;
    f->final_op = final_op;
    f->write_op = write_op;
    f->msg = msg->p; /* the finding owns the text now */
    chaos_buf_init(msg);
    return 0;
}

static void put_op(chaos_buf *b, const chaos_history *h, size_t op)
{
    chaos_op_describe(h, &h->ops[op], b);
}

/* An op that may have taken effect: ok, info, or never completed. */
static int may_have_happened(const chaos_op *op)
{
    return op->outcome != CHAOS_FAIL;
}

static uint64_t completion(const chaos_op *op)
{
    return op->outcome == CHAOS_OK ? op->complete : NEVER;
}

/* ------------------------------------------------------------- counter */

/* Increments of one sign and outcome: how many, and their sum. */
struct incr_sum {
    size_t n;
    __int128 sum;
};

/* Decimal text of x in nb, which keeps the texts of one message: the
 * sums of 2^62-sized increments overflow a long long. */
struct nums {
    char text[12][48];
    int used;
};

static const char *num(struct nums *nb, __int128 x)
{
    char *t = nb->text[nb->used++ % 12], digits[48];
    unsigned __int128 u = x < 0 ? -(unsigned __int128)x : (unsigned __int128)x;
    size_t n = 0, i = 0;

    do {
        digits[n++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u != 0);
    if (x < 0)
        t[i++] = '-';
    while (n > 0)
        t[i++] = digits[--n];
    t[i] = '\0';
    return t;
}

/* The final value v against the increments: it must lie within
 * [acked + the info ones that subtract, acked + the info ones that add].
 * A failed increment never counts, whatever its sign: keel said it did
 * not run, and one that ran all the same is what the check is there to
 * report (docs/chaos.md, "Lost writes"). Outside the range the causes
 * depend on the signs: too low, an acknowledged increment lost or a
 * failed decrement that took effect; too high, an increment counted
 * twice, an acknowledged decrement lost, or a failed increment that took
 * effect. The finding names those the history allows. */
static int check_counter(const chaos_history *h, const chaos_actor *act,
                         size_t actor, size_t fin, chaos_lost_result *r)
{
    __int128 acked = 0, v = h->ops[fin].result.i, lo, hi, d;
    struct incr_sum up = {0, 0}, down = {0, 0}, ok_down = {0, 0},
                    fail_up = {0, 0}, fail_down = {0, 0}, *s;
    size_t k, nacked = 0;
    chaos_buf b;
    struct nums nb = {0};

    for (k = 0; k < act->nops; k++) {
        const chaos_op *op = &h->ops[act->ops[k]];
        if (op->fn != CHAOS_INCR)
            continue;
        if (op->outcome == CHAOS_OK) {
            acked += op->args.i;
            nacked++;
            s = op->args.i < 0 ? &ok_down : NULL;
        } else if (may_have_happened(op)) {
            s = op->args.i > 0 ? &up : op->args.i < 0 ? &down : NULL;
        } else {
            s = op->args.i > 0 ? &fail_up : op->args.i < 0 ? &fail_down
                                                            : NULL;
        }
        if (s != NULL) {
            s->n++;
            s->sum += op->args.i;
        }
    }
    lo = acked + down.sum;
    hi = acked + up.sum;
    if (v >= lo && v <= hi)
        return 0;
    chaos_buf_init(&b);
    chaos_buf_puts(&b, "final read ");
    put_op(&b, h, fin);
    if (v < lo) {
        d = lo - v;
        chaos_buf_printf(&b, "\n    is below what the acknowledged "
                             "increments (%zu) add up to, %s",
                         nacked, num(&nb, acked));
        if (down.n > 0)
            chaos_buf_printf(&b, ", or %s if the unknown negative ones "
                                 "(%zu) all took effect",
                             num(&nb, lo), down.n);
        if (fail_down.n == 0)
            chaos_buf_printf(&b, ": at least %s of the acknowledged "
                                 "amount is lost",
                             num(&nb, d));
        else if (-fail_down.sum < d)
            chaos_buf_printf(&b, ": at least %s of the acknowledged "
                                 "amount is lost even if the failed "
                                 "decrements (%zu, %s in all) took "
                                 "effect",
                             num(&nb, d + fail_down.sum), fail_down.n,
                             num(&nb, fail_down.sum));
        else
            chaos_buf_printf(&b, ", by %s: an acknowledged increment is "
                                 "lost, or failed decrements (%zu, %s in "
                                 "all) took effect though keel said they "
                                 "did not run",
                             num(&nb, d), fail_down.n,
                             num(&nb, fail_down.sum));
    } else {
        d = v - hi;
        chaos_buf_printf(&b, "\n    is above what the acknowledged "
                             "increments (%zu) and the unknown positive ones "
                             "(%zu) can add up to, %s, by %s: an "
                             "increment counted twice",
                         nacked, up.n, num(&nb, hi), num(&nb, d));
        if (ok_down.n > 0)
            chaos_buf_printf(&b, "%s an acknowledged decrement is lost (%zu "
                                 "of them, %s in all)",
                             fail_up.n > 0 ? "," : ", or", ok_down.n,
                             num(&nb, ok_down.sum));
        if (fail_up.n > 0)
            chaos_buf_printf(&b, ", or a failed one took effect (%zu "
                                 "failed increments, %s in all)",
                             fail_up.n, num(&nb, fail_up.sum));
    }
    return add_finding(r, actor, fin, SIZE_MAX, &b);
}

/* ----------------------------------------------------------------- set */

static int in_read(const chaos_op *fin, const char *e)
{
    size_t k;

    for (k = 0; k < fin->result.n; k++)
        if (strcmp(fin->result.strs[k], e) == 0)
            return 1;
    return 0;
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static int check_set(const chaos_history *h, const chaos_actor *act,
                     size_t actor, size_t fin, chaos_lost_result *r)
{
    const chaos_op *f = &h->ops[fin];
    const char **added = calloc(act->nops + 1, sizeof *added),
               **failed = calloc(act->nops + 1, sizeof *failed);
    size_t k, nadded = 0, nfailed = 0, missing = 0, first = SIZE_MAX;
    chaos_buf b;
    int rc = 0;

    if (added == NULL || failed == NULL) {
        free(added);
        free(failed);
        return KEEL_ENOMEM;
    }
    chaos_buf_init(&b);
    for (k = 0; k < act->nops; k++) {
        const chaos_op *op = &h->ops[act->ops[k]];
        if (op->fn != CHAOS_ADD)
            continue;
        if (!may_have_happened(op)) {
            failed[nfailed++] = op->args.s;
            continue;
        }
        added[nadded++] = op->args.s;
        if (op->outcome != CHAOS_OK || in_read(f, op->args.s))
            continue;
        if (missing++ == 0) {
            first = act->ops[k];
            chaos_buf_puts(&b, "final read ");
            put_op(&b, h, fin);
            chaos_buf_puts(&b, "\n    lacks acknowledged elements:");
        }
        if (missing <= 8) {
            chaos_buf_puts(&b, " ");
            chaos_json_put_str(&b, op->args.s);
        }
    }
    if (missing > 0) {
        if (missing > 8)
            chaos_buf_printf(&b, " ... %zu in all", missing);
        chaos_buf_puts(&b, "\n    the first one added by ");
        put_op(&b, h, first);
        rc = add_finding(r, actor, fin, first, &b);
    }
    /* Elements nobody may have added. */
    qsort(added, nadded, sizeof *added, cmp_str);
    qsort(failed, nfailed, sizeof *failed, cmp_str);
    for (k = 0; k < f->result.n && rc == 0; k++) {
        const char *e = f->result.strs[k];
        if (bsearch(&e, added, nadded, sizeof *added, cmp_str) != NULL)
            continue;
        chaos_buf_puts(&b, "final read ");
        put_op(&b, h, fin);
        chaos_buf_puts(&b, "\n    holds ");
        chaos_json_put_str(&b, e);
        chaos_buf_puts(&b, bsearch(&e, failed, nfailed, sizeof *failed,
                                   cmp_str) != NULL
                               ? ", which only a failed add wrote"
                               : ", which no add wrote");
        rc = add_finding(r, actor, fin, SIZE_MAX, &b);
        break; /* one such finding per read is enough */
    }
    chaos_buf_free(&b);
    free(added);
    free(failed);
    return rc;
}

/* ------------------------------------------------------------ register */

/* The value op writes (if it may have), or NULL. */
static const char *written(const chaos_op *op)
{
    if (!may_have_happened(op))
        return NULL;
    if (op->fn == CHAOS_WRITE)
        return op->args.s;
    if (op->fn == CHAOS_CAS && (op->outcome != CHAOS_OK || op->result.b))
        return op->args.strs[1];
    return NULL;
}

static int check_register(const chaos_history *h, const chaos_actor *act,
                          size_t actor, size_t fin, chaos_lost_result *r)
{
    const char *v = h->ops[fin].result.s;
    uint64_t last = 0; /* the latest completion of a write of v */
    size_t k, lost = SIZE_MAX, last_op = SIZE_MAX, failed_op = SIZE_MAX;
    int any = 0;
    chaos_buf b;

    for (k = 0; k < act->nops; k++) {
        const chaos_op *op = &h->ops[act->ops[k]];
        const char *w = written(op);
        if (w == NULL) {
            if (op->fn == CHAOS_WRITE && strcmp(op->args.s, v) == 0)
                failed_op = act->ops[k];
            continue;
        }
        if (strcmp(w, v) != 0)
            continue;
        if (!any || completion(op) >= last) {
            last = completion(op);
            last_op = act->ops[k];
        }
        any = 1;
    }
    /* The acknowledged write of another value that began last after
     * every write of v had completed. */
    for (k = 0; k < act->nops; k++) {
        const chaos_op *op = &h->ops[act->ops[k]];
        const char *w = written(op);
        if (w == NULL || op->outcome != CHAOS_OK || strcmp(w, v) == 0)
            continue;
        if (!any || op->invoke > last)
            lost = act->ops[k];
    }
    chaos_buf_init(&b);
    if (!any && v[0] != '\0') {
        chaos_buf_puts(&b, "final read ");
        put_op(&b, h, fin);
        chaos_buf_puts(&b, failed_op != SIZE_MAX
                               ? "\n    returned a value only a failed write "
                                 "wrote: "
                               : "\n    returned a value no write wrote");
        if (failed_op != SIZE_MAX)
            put_op(&b, h, failed_op);
        return add_finding(r, actor, fin, SIZE_MAX, &b);
    }
    if (lost == SIZE_MAX)
        return 0;
    chaos_buf_puts(&b, "final read ");
    put_op(&b, h, fin);
    chaos_buf_puts(&b, "\n    lost the acknowledged ");
    put_op(&b, h, lost);
    if (!any)
        chaos_buf_puts(&b, "\n    (the register reads as never written)");
    else {
        chaos_buf_puts(&b, "\n    which began after every write of that "
                           "value had completed, the last one ");
        put_op(&b, h, last_op);
    }
    return add_finding(r, actor, fin, lost, &b);
}

/* ------------------------------------------------------------- the check */

static int acked_write(const chaos_op *op)
{
    if (op->outcome != CHAOS_OK)
        return 0;
    return op->fn == CHAOS_WRITE || op->fn == CHAOS_INCR ||
           op->fn == CHAOS_ADD || (op->fn == CHAOS_CAS && op->result.b);
}

/* Final reads come after the workload: each is invoked once every other
 * op on its actor completed, and no other op is invoked after it. */
static int check_order(const chaos_history *h, const chaos_actor *act,
                       char *err, size_t errlen)
{
    size_t k, first = SIZE_MAX;

    for (k = 0; k < act->nops; k++)
        if (h->ops[act->ops[k]].final) {
            first = act->ops[k];
            break;
        }
    if (first == SIZE_MAX)
        return 0;
    for (k = 0; k < act->nops; k++) {
        const chaos_op *op = &h->ops[act->ops[k]];
        if (op->final)
            continue;
        if (op->invoke > h->ops[first].invoke)
            return say(err, errlen, "line %zu: %s on %s invoked after the "
                                    "final read of line %zu: final reads "
                                    "come after the workload",
                       op->invoke_line, chaos_fn_name(op->fn), act->name,
                       h->ops[first].invoke_line);
        if (op->completed && op->complete > h->ops[first].invoke)
            return say(err, errlen, "line %zu: final read of %s invoked "
                                    "before its %s of line %zu completed "
                                    "(line %zu)",
                       h->ops[first].invoke_line, act->name,
                       chaos_fn_name(op->fn), op->invoke_line,
                       op->complete_line);
    }
    return 0;
}

int chaos_lost_check(const chaos_history *h, chaos_lost_result *r, char *err,
                     size_t errlen)
{
    size_t a, k;
    int rc = 0;

    memset(r, 0, sizeof *r);
    for (a = 0; a < h->nactors && rc == 0; a++)
        rc = check_order(h, &h->actors[a], err, errlen);
    for (a = 0; a < h->nactors && rc == 0; a++) {
        const chaos_actor *act = &h->actors[a];
        size_t acked = 0, finals = 0;
        for (k = 0; k < act->nops; k++) {
            const chaos_op *op = &h->ops[act->ops[k]];
            acked += (size_t)acked_write(op);
            finals += op->final && op->outcome == CHAOS_OK;
        }
        if (finals == 0) {
            r->actors_unread += acked > 0;
            continue;
        }
        r->actors_read++;
        r->acked += acked;
        for (k = 0; k < act->nops && rc == 0; k++) {
            size_t fin = act->ops[k];
            if (!h->ops[fin].final || h->ops[fin].outcome != CHAOS_OK)
                continue;
            r->finals++;
            switch (act->family) {
            case CHAOS_COUNTER:
                rc = check_counter(h, act, a, fin, r);
                break;
            case CHAOS_SET:
                rc = check_set(h, act, a, fin, r);
                break;
            default:
                rc = check_register(h, act, a, fin, r);
            }
        }
    }
    if (rc != 0)
        chaos_lost_result_free(r);
    return rc;
}

void chaos_lost_print(FILE *f, const chaos_history *h,
                      const chaos_lost_result *r, size_t max)
{
    size_t k, shown = 0;

    if (r->finals == 0) {
        fprintf(f, "lost-writes: SKIPPED (no successful final read in the "
                   "history: the reads made after healing carry "
                   "\"final\": true)\n");
        return;
    }
    fprintf(f, "lost-writes: %s (%zu actors read at the end, %zu final "
               "reads; %zu acknowledged writes)\n",
            r->nfound > 0 ? "FAIL" : "PASS", r->actors_read, r->finals,
            r->acked);
    for (k = 0; k < r->nfound && k < max; k++)
        fprintf(f, "  %s: %s\n", h->actors[r->found[k].actor].name,
                r->found[k].msg);
    if (r->nfound > max)
        fprintf(f, "  ... and %zu more\n", r->nfound - max);
    if (r->actors_unread == 0)
        return;
    fprintf(f, "  not checked: %zu actors with acknowledged writes and no "
               "successful final read:",
            r->actors_unread);
    for (k = 0; k < h->nactors && shown < 10; k++) {
        const chaos_actor *act = &h->actors[k];
        size_t j, acked = 0, finals = 0;
        for (j = 0; j < act->nops; j++) {
            acked += (size_t)acked_write(&h->ops[act->ops[j]]);
            finals += h->ops[act->ops[j]].final &&
                      h->ops[act->ops[j]].outcome == CHAOS_OK;
        }
        if (acked > 0 && finals == 0) {
            fprintf(f, " %s", act->name);
            shown++;
        }
    }
    fprintf(f, "%s\n", r->actors_unread > shown ? " ..." : "");
}
