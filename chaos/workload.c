#include "chaos/workload.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos/json.h"
#include "keel.h"

static const char *const wl_names[] = {"register", "counter", "set",
                                       "mixed"};

const char *chaos_workload_name(chaos_workload w)
{
    return (unsigned)w <= CHAOS_W_MIXED ? wl_names[w] : "?";
}

int chaos_workload_parse(const char *s, chaos_workload *w)
{
    int k;

    for (k = 0; k <= CHAOS_W_MIXED; k++)
        if (strcmp(s, wl_names[k]) == 0) {
            *w = (chaos_workload)k;
            return 0;
        }
    return KEEL_EINVAL;
}

chaos_family chaos_wl_family(const chaos_wl *w, int k)
{
    switch (w->kind) {
    case CHAOS_W_REGISTER:
        return CHAOS_REGISTER;
    case CHAOS_W_COUNTER:
        return CHAOS_COUNTER;
    case CHAOS_W_SET:
        return CHAOS_SET;
    case CHAOS_W_MIXED:
    default:
        return (chaos_family)(k % 3);
    }
}

static const char *type_of(const chaos_wl *w, chaos_family f)
{
    static const char *const types[] = {"register", "counter", "kv"};

    return w->type != NULL ? w->type : types[f];
}

void chaos_wl_actor_name(const chaos_wl *w, int k, int gen, char *buf,
                         size_t cap)
{
    static const char prefix[] = {'r', 'c', 's'};
    chaos_family f = chaos_wl_family(w, k);

    if (f == CHAOS_SET && gen > 0)
        snprintf(buf, cap, "%s/%c%d.g%d", type_of(w, f), prefix[f], k, gen);
    else
        snprintf(buf, cap, "%s/%c%d", type_of(w, f), prefix[f], k);
}

/* The history's name in actor; the id is what follows its '/'. */
static void set_actor(chaos_wop *op, const chaos_wl *w, int k, int gen)
{
    chaos_wl_actor_name(w, k, gen, op->actor, sizeof op->actor);
    op->type = type_of(w, chaos_wl_family(w, k));
    op->id = strchr(op->actor, '/') + 1;
}

static void set_msg(chaos_wop *op, const char *fmt, const char *a,
                    const char *b)
{
    int n = snprintf(op->msg, sizeof op->msg, fmt, a, b);

    op->msg_len = n > 0 ? (size_t)n : 0;
}

static void arg_str(chaos_wop *op, const char *s)
{
    snprintf(op->arg1, sizeof op->arg1, "%s", s);
    op->args.type = CHAOS_V_STR;
    op->args.s = op->arg1;
}

void chaos_wl_next(const chaos_wl *w, int gen, chaos_rng *r, int client,
                   uint64_t seq, chaos_wop *op)
{
    int k = (int)chaos_rng_range(r, 0, w->actors > 0 ? w->actors - 1 : 0);
    int64_t roll = chaos_rng_range(r, 0, 99);
    char v[32];

    memset(op, 0, sizeof *op);
    set_actor(op, w, k, gen);
    switch (chaos_wl_family(w, k)) {
    case CHAOS_REGISTER:
        /* Values from a small set, as Jepsen does: a read then says
         * little about which write it saw, which is what makes the
         * search work. */
        if (roll < 40) {
            op->fn = CHAOS_READ;
            set_msg(op, "read", NULL, NULL);
        } else if (roll < 75) {
            op->fn = CHAOS_WRITE;
            snprintf(v, sizeof v, "%d", (int)chaos_rng_range(r, 0, 4));
            arg_str(op, v);
            set_msg(op, "write %s", op->arg1, NULL);
        } else {
            op->fn = CHAOS_CAS;
            snprintf(op->arg1, sizeof op->arg1, "%d",
                     (int)chaos_rng_range(r, 0, 4));
            snprintf(op->arg2, sizeof op->arg2, "%d",
                     (int)chaos_rng_range(r, 0, 4));
            op->pair[0] = op->arg1;
            op->pair[1] = op->arg2;
            op->args.type = CHAOS_V_STRS;
            op->args.strs = op->pair;
            op->args.n = 2;
            set_msg(op, "cas %s %s", op->arg1, op->arg2);
        }
        break;
    case CHAOS_COUNTER:
        if (roll < 25) {
            op->fn = CHAOS_GET;
            set_msg(op, "get", NULL, NULL);
        } else {
            int64_t n = chaos_rng_range(r, 1, 5);
            if (roll >= 90)
                n = -n;
            if (w->refusals > 0 && chaos_rng_range(r, 0, 99) < w->refusals)
                n = n > 0 ? CHAOS_WL_BIG : -CHAOS_WL_BIG;
            op->fn = CHAOS_INCR;
            op->args.type = CHAOS_V_INT;
            op->args.i = n;
            snprintf(v, sizeof v, "%lld", (long long)n);
            set_msg(op, "incr %s", v, NULL);
        }
        break;
    case CHAOS_SET:
    default:
        /* Adds mostly: a read returns the whole set. */
        if (roll < 10) {
            op->fn = CHAOS_READ_SET;
            set_msg(op, "keys", NULL, NULL);
        } else {
            op->fn = CHAOS_ADD;
            snprintf(v, sizeof v, "e%d.%llu", client,
                     (unsigned long long)seq);
            arg_str(op, v);
            set_msg(op, "put %s 1", op->arg1, NULL);
        }
        break;
    }
}

void chaos_wl_final(const chaos_wl *w, int k, int gen, chaos_wop *op)
{
    memset(op, 0, sizeof *op);
    set_actor(op, w, k, gen);
    op->final = 1;
    switch (chaos_wl_family(w, k)) {
    case CHAOS_REGISTER:
        op->fn = CHAOS_READ;
        set_msg(op, "read", NULL, NULL);
        break;
    case CHAOS_COUNTER:
        op->fn = CHAOS_GET;
        set_msg(op, "get", NULL, NULL);
        break;
    case CHAOS_SET:
    default:
        op->fn = CHAOS_READ_SET;
        set_msg(op, "keys", NULL, NULL);
        break;
    }
}

static int parse_i64(const char *s, size_t len, int64_t *out)
{
    char buf[32], *end;
    long long v;

    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (!(buf[0] == '-' || (buf[0] >= '0' && buf[0] <= '9')))
        return -1;
    errno = 0;
    v = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

int chaos_wl_result(const chaos_wop *op, char *reply, size_t len,
                    chaos_value *out, const char ***strs)
{
    memset(out, 0, sizeof *out);
    *strs = NULL;
    switch (op->fn) {
    case CHAOS_READ:
        /* A register's value: the history needs UTF-8 without NUL. */
        if (memchr(reply, '\0', len) != NULL ||
            !chaos_utf8_valid(reply, len))
            return KEEL_EPROTO;
        out->type = CHAOS_V_STR;
        out->s = reply;
        return 0;
    case CHAOS_WRITE:
    case CHAOS_ADD:
        if (len != 2 || memcmp(reply, "OK", 2) != 0)
            return KEEL_EPROTO;
        out->type = CHAOS_V_NULL;
        return 0;
    case CHAOS_CAS:
        out->type = CHAOS_V_BOOL;
        if (len == 2 && memcmp(reply, "OK", 2) == 0)
            out->b = 1;
        else if (len == 6 && memcmp(reply, "FAILED", 6) == 0)
            out->b = 0;
        else
            return KEEL_EPROTO;
        return 0;
    case CHAOS_INCR:
    case CHAOS_GET:
        out->type = CHAOS_V_INT;
        return parse_i64(reply, len, &out->i) == 0 ? 0 : KEEL_EPROTO;
    case CHAOS_READ_SET: {
        size_t n = 0, i, k = 0;
        const char **v;

        if (memchr(reply, '\0', len) != NULL ||
            !chaos_utf8_valid(reply, len))
            return KEEL_EPROTO;
        for (i = 0; i < len; i++)
            n += reply[i] == '\n';
        if (len > 0)
            n++; /* "a\nb": two keys, no newline after the last */
        v = malloc((n ? n : 1) * sizeof *v);
        if (v == NULL)
            return KEEL_ENOMEM;
        if (len > 0) {
            v[k++] = reply;
            for (i = 0; i < len; i++)
                if (reply[i] == '\n') {
                    reply[i] = '\0';
                    v[k++] = reply + i + 1;
                }
        }
        out->type = CHAOS_V_STRS;
        out->strs = v;
        out->n = k;
        *strs = v;
        return 0;
    }
    default:
        return KEEL_EPROTO;
    }
}

int chaos_wl_retryable(int rc)
{
    switch (rc) {
    case KEEL_ENOTSENT:
    case KEEL_ECONN:
    case KEEL_ETIMEDOUT:
    case KEEL_EINDOUBT:
    case KEEL_ESTOPPING:
    case KEEL_EUNAVAIL:
    case KEEL_EDEADLINE:
    case KEEL_EOVERLOAD:
        return 1;
    default:
        return 0;
    }
}

chaos_type chaos_wl_keyed_outcome(int rc, int maybe_ran)
{
    chaos_type t = chaos_wl_outcome(rc);

    /* An answer (a refusal of the handler's, EBADMSG...) is recorded
     * under the key: every copy gets it, so it stays a failure. */
    return t == CHAOS_FAIL && maybe_ran && !keel_err_is_answer(rc)
               ? CHAOS_INFO
               : t;
}

chaos_type chaos_wl_outcome(int rc)
{
    switch (rc) {
    case 0:
        return CHAOS_OK;
    /* Nobody knows whether it ran. */
    case KEEL_ECONN:     /* the connection failed after the request left */
    case KEEL_ETIMEDOUT: /* no answer in time, or a forward timed out */
    case KEEL_EINDOUBT:  /* a write whose node lost its lease */
    case KEEL_EALREADY:  /* it ran (a keyed retry); its reply is gone */
    case KEEL_EPROTO:    /* an answer the client could not make sense of */
    case KEEL_ENOMEM:    /* the client could not keep the answer */
        return CHAOS_INFO;
    default:
        /* ENOTSENT, ESTOPPING (the farewell too), EUNAVAIL, EDEADLINE,
         * EOVERLOAD: keel says it did not run; and errors of the turn
         * itself, storage errors included (ENOSPC, EIO: the commit failed
         * and the actor is reloaded), which keel promises leave the state
         * as it was. Recording them as fail puts that promise to the
         * test: a write that failed and still took effect is reported. */
        return CHAOS_FAIL;
    }
}
