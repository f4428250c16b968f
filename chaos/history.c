#include "chaos/history.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "chaos/json.h"
#include "keel.h"

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

/* ------------------------------------------------------- the history */

struct actor_ent {
    const char *name;
    size_t idx;
};

struct client_ent {
    int64_t client;
    size_t op; /* outstanding operation, or SIZE_MAX */
};

static uint64_t hash_str(const char *s)
{
    return XXH3_64bits(s, strlen(s));
}

static uint64_t hash_client(int64_t c)
{
    return XXH3_64bits(&c, sizeof c);
}

static int actor_eq(const void *item, const void *key)
{
    return strcmp(((const struct actor_ent *)item)->name, key) == 0;
}

static int client_eq(const void *item, const void *key)
{
    return ((const struct client_ent *)item)->client == *(const int64_t *)key;
}

void chaos_history_init(chaos_history *h)
{
    memset(h, 0, sizeof *h);
    chaos_arena_init(&h->arena);
    keel_hmap_init(&h->actor_index);
    keel_hmap_init(&h->clients);
}

void chaos_history_free(chaos_history *h)
{
    size_t k;

    for (k = 0; k < h->nactors; k++)
        free(h->actors[k].ops);
    free(h->actors);
    free(h->ops);
    keel_hmap_free(&h->actor_index);
    keel_hmap_free(&h->clients);
    chaos_arena_free(&h->arena);
    memset(h, 0, sizeof *h);
}

static int copy_value(chaos_arena *a, chaos_value *dst, const chaos_value *src)
{
    size_t k;

    *dst = *src;
    if (src->type == CHAOS_V_STR) {
        dst->s = chaos_arena_strndup(a, src->s, strlen(src->s));
        if (dst->s == NULL)
            return KEEL_ENOMEM;
    } else if (src->type == CHAOS_V_STRS) {
        const char **v = chaos_arena_alloc(a, (src->n + 1) * sizeof *v);
        if (v == NULL)
            return KEEL_ENOMEM;
        for (k = 0; k < src->n; k++) {
            v[k] = chaos_arena_strndup(a, src->strs[k], strlen(src->strs[k]));
            if (v[k] == NULL)
                return KEEL_ENOMEM;
        }
        dst->strs = v;
    } else {
        dst->s = NULL;
        dst->strs = NULL;
        dst->n = 0;
    }
    return 0;
}

static const char *copy_opt_str(chaos_arena *a, const char *s, int *rc)
{
    const char *c;

    if (s == NULL)
        return NULL;
    c = chaos_arena_strndup(a, s, strlen(s));
    if (c == NULL)
        *rc = KEEL_ENOMEM;
    return c;
}

/* The invocation of op, as an event, to compare a completion with. */
static void op_as_invocation(const chaos_history *h, const chaos_op *op,
                             chaos_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->t = CHAOS_INVOKE;
    ev->client = op->client;
    ev->actor = h->actors[op->actor].name;
    ev->op = op->fn;
    ev->args = op->args;
    ev->final = op->final;
}

static int add_invocation(chaos_history *h, const chaos_event *ev,
                          size_t line, struct client_ent *ce, char *err,
                          size_t errlen)
{
    uint64_t ah = hash_str(ev->actor);
    struct actor_ent *ae = keel_hmap_get(&h->actor_index, ah, ev->actor,
                                         actor_eq);
    chaos_family fam = chaos_fn_family(ev->op);
    chaos_actor *act;
    chaos_op *op;
    int rc = 0, new_client;

    if (ae != NULL && h->actors[ae->idx].family != fam)
        return say(err, errlen, "%s on %s, whose operations so far are %s "
                                "operations: one actor, one model",
                   chaos_fn_name(ev->op), ev->actor,
                   chaos_family_name(h->actors[ae->idx].family));
    if (chaos_grow((void **)&h->ops, &h->ops_cap, h->nops + 1, sizeof *h->ops) ||
        chaos_grow((void **)&h->actors, &h->actors_cap, h->nactors + 1,
             sizeof *h->actors) ||
        keel_hmap_reserve(&h->actor_index, 1) != 0 ||
        keel_hmap_reserve(&h->clients, 1) != 0)
        return KEEL_ENOMEM;
    if (ae == NULL) {
        ae = chaos_arena_alloc(&h->arena, sizeof *ae);
        if (ae == NULL)
            return KEEL_ENOMEM;
        ae->name = chaos_arena_strndup(&h->arena, ev->actor,
                                       strlen(ev->actor));
        if (ae->name == NULL)
            return KEEL_ENOMEM;
        ae->idx = h->nactors;
        act = &h->actors[h->nactors];
        memset(act, 0, sizeof *act);
        act->name = ae->name;
        act->family = fam;
    } else {
        act = &h->actors[ae->idx];
    }
    if (chaos_grow((void **)&act->ops, &act->cap, act->nops + 1, sizeof *act->ops))
        return KEEL_ENOMEM;
    new_client = ce == NULL;
    if (new_client) {
        ce = chaos_arena_alloc(&h->arena, sizeof *ce);
        if (ce == NULL) {
            if (ae->idx == h->nactors) {
                free(act->ops);
                act->ops = NULL;
            }
            return KEEL_ENOMEM;
        }
        ce->client = ev->client;
        ce->op = SIZE_MAX;
    }

    op = &h->ops[h->nops];
    memset(op, 0, sizeof *op);
    op->actor = ae->idx;
    op->client = ev->client;
    op->fn = ev->op;
    op->outcome = CHAOS_INFO;
    op->final = ev->final != 0;
    op->invoke = ev->index;
    op->invoke_ns = ev->time_ns;
    op->invoke_line = line;
    op->complete = UINT64_MAX;
    op->complete_ns = -1;
    rc = copy_value(&h->arena, &op->args, &ev->args);
    if (rc == 0)
        op->node = copy_opt_str(&h->arena, ev->node, &rc);
    if (rc != 0) {
        if (ae->idx == h->nactors) {
            free(act->ops); /* the new actor is not kept */
            act->ops = NULL;
        }
        return rc;
    }
    /* Nothing below can fail. */
    if (ae->idx == h->nactors) {
        keel_hmap_put(&h->actor_index, ah, ae);
        h->nactors++;
    }
    if (new_client) {
        keel_hmap_put(&h->clients, hash_client(ev->client), ce);
        h->nclients++;
    }
    ce->op = h->nops;
    act->ops[act->nops++] = h->nops;
    h->nops++;
    return 0;
}

int chaos_history_add(chaos_history *h, const chaos_event *ev, size_t line,
                      char *err, size_t errlen)
{
    struct client_ent *ce;
    int rc;

    rc = chaos_event_check(ev, err, errlen);
    if (rc != 0)
        return rc;
    if (ev->index != h->nevents)
        return say(err, errlen, "index %llu where %llu was due (one per "
                                "line, from 0)",
                   (unsigned long long)ev->index,
                   (unsigned long long)h->nevents);
    if (ev->time_ns < h->last_ns)
        return say(err, errlen, "time_ns %lld is earlier than the line "
                                "before's %lld",
                   (long long)ev->time_ns, (long long)h->last_ns);
    ce = keel_hmap_get(&h->clients, hash_client(ev->client), &ev->client,
                       client_eq);
    if (ev->t == CHAOS_INVOKE) {
        if (ce != NULL && ce->op != SIZE_MAX) {
            const chaos_op *p = &h->ops[ce->op];
            return say(err, errlen, "client %lld invokes %s while its %s "
                                    "on %s (line %zu) is outstanding",
                       (long long)ev->client, chaos_fn_name(ev->op),
                       chaos_fn_name(p->fn), h->actors[p->actor].name,
                       p->invoke_line);
        }
        rc = add_invocation(h, ev, line, ce, err, errlen);
    } else {
        chaos_event inv;
        chaos_op *op;
        if (ce == NULL || ce->op == SIZE_MAX)
            return say(err, errlen, "%s of client %lld, which has no "
                                    "operation outstanding",
                       chaos_type_name(ev->t), (long long)ev->client);
        op = &h->ops[ce->op];
        op_as_invocation(h, op, &inv);
        rc = chaos_event_same_call(&inv, op->invoke_line, ev, err, errlen);
        if (rc != 0)
            return rc;
        rc = copy_value(&h->arena, &op->result, &ev->result);
        if (rc == 0)
            op->error = copy_opt_str(&h->arena, ev->error, &rc);
        if (rc != 0)
            return rc;
        op->outcome = ev->t;
        op->completed = 1;
        op->complete = ev->index;
        op->complete_ns = ev->time_ns;
        op->complete_line = line;
        if (op->node == NULL && ev->node != NULL)
            op->node = copy_opt_str(&h->arena, ev->node, &rc);
        if (rc != 0)
            return rc;
        ce->op = SIZE_MAX;
    }
    if (rc != 0)
        return rc;
    h->nevents++;
    h->last_ns = ev->time_ns;
    return 0;
}


/* ------------------------------------------------------------- reading */

int chaos_history_read_stream(chaos_history *h, FILE *f, const char *name,
                              char *err, size_t errlen)
{
    chaos_arena scratch;
    char *line = NULL, msg[400];
    size_t cap = 0, lineno = 0;
    ssize_t got;
    int rc = 0;

    chaos_arena_init(&scratch);
    while ((got = getline(&line, &cap, f)) >= 0) {
        size_t len = (size_t)got;
        int last = len == 0 || line[len - 1] != '\n';
        chaos_event ev;

        lineno++;
        if (!last)
            len--;
        if (len > 0 && line[len - 1] == '\r') {
            rc = say(err, errlen, "%s:%zu: line ends with \\r\\n; lines end "
                                  "with \\n alone", name, lineno);
            break;
        }
        if (len == 0) {
            rc = say(err, errlen, "%s:%zu: empty line", name, lineno);
            break;
        }
        if (memchr(line, '\0', len) != NULL) {
            rc = say(err, errlen, "%s:%zu: NUL byte in the line", name,
                     lineno);
            break;
        }
        chaos_arena_reset(&scratch);
        rc = chaos_event_parse(line, len, &scratch, &ev, msg, sizeof msg);
        if (rc == 0)
            rc = chaos_history_add(h, &ev, lineno, msg, sizeof msg);
        if (rc != 0) {
            if (rc == KEEL_ENOMEM)
                snprintf(msg, sizeof msg, "out of memory");
            say(err, errlen, "%s:%zu: %s%s", name, lineno, msg,
                last ? " (the last line has no newline: was the file cut "
                       "short?)"
                     : "");
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        rc = KEEL_EIO;
        if (errlen > 0)
            snprintf(err, errlen, "%s: read error after line %zu", name,
                     lineno);
    }
    free(line);
    chaos_arena_free(&scratch);
    return rc;
}

int chaos_history_read(chaos_history *h, const char *path, char *err,
                       size_t errlen)
{
    FILE *f = fopen(path, "r");
    int rc;

    if (f == NULL) {
        if (errlen > 0)
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return KEEL_EIO;
    }
    rc = chaos_history_read_stream(h, f, path, err, errlen);
    fclose(f);
    return rc;
}


/* ------------------------------------------------------------- reports */

static void put_short(chaos_buf *b, const char *s)
{
    size_t n = strlen(s), cut = 40;
    chaos_buf tmp;

    if (n <= cut) {
        chaos_json_put_str(b, s);
        return;
    }
    while (cut > 0 && ((unsigned char)s[cut] & 0xc0) == 0x80)
        cut--;
    chaos_buf_init(&tmp);
    chaos_buf_add(&tmp, s, cut);
    chaos_json_put_str(b, tmp.oom ? "" : tmp.p);
    chaos_buf_free(&tmp);
    chaos_buf_printf(b, "...(%zu bytes)", n);
}

static void describe_value(chaos_buf *b, const chaos_value *v, int list)
{
    size_t k;

    switch (v->type) {
    case CHAOS_V_NULL:
        chaos_buf_puts(b, list ? "" : "null");
        break;
    case CHAOS_V_BOOL:
        chaos_buf_puts(b, v->b ? "true" : "false");
        break;
    case CHAOS_V_INT:
        chaos_buf_printf(b, "%lld", (long long)v->i);
        break;
    case CHAOS_V_STR:
        put_short(b, v->s);
        break;
    default:
        if (!list)
            chaos_buf_puts(b, "{");
        for (k = 0; k < v->n && k < 16; k++) {
            if (k > 0)
                chaos_buf_puts(b, ", ");
            put_short(b, v->strs[k]);
        }
        if (v->n > 16)
            chaos_buf_printf(b, ", ... %zu in all", v->n);
        if (!list)
            chaos_buf_puts(b, "}");
    }
}

void chaos_op_describe(const chaos_history *h, const chaos_op *op,
                       chaos_buf *out)
{
    chaos_buf_printf(out, "client %lld %s(", (long long)op->client,
                     chaos_fn_name(op->fn));
    describe_value(out, &op->args, 1);
    chaos_buf_puts(out, ") -> ");
    if (op->outcome == CHAOS_OK && !(op->fn == CHAOS_INCR &&
                                     op->result.type == CHAOS_V_NULL))
        describe_value(out, &op->result, 0);
    else if (op->outcome == CHAOS_OK)
        chaos_buf_puts(out, "ok");
    else
        chaos_buf_puts(out, "?");
    chaos_buf_printf(out, "  [%s", op->completed ? chaos_type_name(op->outcome)
                                                 : "no completion");
    if (op->error != NULL)
        chaos_buf_printf(out, " %s", op->error);
    if (op->final)
        chaos_buf_puts(out, ", final");
    if (op->invoke_line > 0 && op->complete_line > 0)
        chaos_buf_printf(out, ", lines %zu-%zu", op->invoke_line,
                         op->complete_line);
    else if (op->invoke_line > 0)
        chaos_buf_printf(out, ", line %zu", op->invoke_line);
    chaos_buf_puts(out, "]");
    (void)h;
}

