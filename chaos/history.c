#include "chaos/history.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "chaos/json.h"
#include "keel.h"

static const char *const type_names[] = {"invoke", "ok", "fail", "info"};
static const char *const fn_names[] = {"read", "write",    "cas", "incr",
                                       "get",  "add", "read_set"};
static const char *const family_names[] = {"register", "counter", "set"};

const char *chaos_type_name(chaos_type t)
{
    return (unsigned)t < 4 ? type_names[t] : "?";
}

const char *chaos_fn_name(chaos_fn f)
{
    return (unsigned)f < CHAOS_FN_COUNT ? fn_names[f] : "?";
}

const char *chaos_family_name(chaos_family f)
{
    return (unsigned)f < 3 ? family_names[f] : "?";
}

chaos_family chaos_fn_family(chaos_fn f)
{
    switch (f) {
    case CHAOS_INCR:
    case CHAOS_GET:
        return CHAOS_COUNTER;
    case CHAOS_ADD:
    case CHAOS_READ_SET:
        return CHAOS_SET;
    default:
        return CHAOS_REGISTER;
    }
}

int chaos_fn_is_read(chaos_fn f)
{
    return f == CHAOS_READ || f == CHAOS_GET || f == CHAOS_READ_SET;
}

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

static const char *vtype_name(chaos_vtype t)
{
    switch (t) {
    case CHAOS_V_NULL: return "null";
    case CHAOS_V_BOOL: return "a boolean";
    case CHAOS_V_INT: return "an integer";
    case CHAOS_V_STR: return "a string";
    default: return "an array of strings";
    }
}

/* ------------------------------------------------------------ the schema */

/* What args must be for each operation, and what an ok result must be
 * (CHAOS_V_NULL in ok_alt means "or null"). */
static const struct shape {
    chaos_vtype args;
    chaos_vtype ok;
    int ok_or_null;
    const char *args_text, *ok_text;
} shapes[CHAOS_FN_COUNT] = {
    [CHAOS_READ] = {CHAOS_V_NULL, CHAOS_V_STR, 0, "null", "the value read"},
    [CHAOS_WRITE] = {CHAOS_V_STR, CHAOS_V_NULL, 0, "the value written",
                     "null"},
    [CHAOS_CAS] = {CHAOS_V_STRS, CHAOS_V_BOOL, 0, "[old, new]",
                   "true (swapped) or false (the value was not old)"},
    [CHAOS_INCR] = {CHAOS_V_INT, CHAOS_V_INT, 1, "the amount",
                    "the new value, or null if not known"},
    [CHAOS_GET] = {CHAOS_V_NULL, CHAOS_V_INT, 0, "null", "the value"},
    [CHAOS_ADD] = {CHAOS_V_STR, CHAOS_V_NULL, 0, "the element", "null"},
    [CHAOS_READ_SET] = {CHAOS_V_NULL, CHAOS_V_STRS, 0, "null",
                        "the elements read"},
};

int chaos_event_check(const chaos_event *ev, char *err, size_t errlen)
{
    const struct shape *sh;
    const char *slash;
    size_t k;

    if ((unsigned)ev->t > CHAOS_INFO)
        return say(err, errlen, "unknown event type %d", (int)ev->t);
    if ((unsigned)ev->op >= CHAOS_FN_COUNT)
        return say(err, errlen, "unknown op %d", (int)ev->op);
    if (ev->client < 0)
        return say(err, errlen, "client must be 0 or more");
    if (ev->time_ns < 0)
        return say(err, errlen, "time_ns must be 0 or more");
    if (ev->actor == NULL || (slash = strchr(ev->actor, '/')) == NULL ||
        slash == ev->actor)
        return say(err, errlen, "actor must be \"type/id\" with a type");
    if (!chaos_utf8_valid(ev->actor, strlen(ev->actor)))
        return say(err, errlen, "actor is not UTF-8");
    sh = &shapes[ev->op];
    if (ev->args.type != sh->args ||
        (sh->args == CHAOS_V_STRS && ev->args.n != 2))
        return say(err, errlen, "%s: args must be %s", chaos_fn_name(ev->op),
                   sh->args_text);
    if (ev->final && !chaos_fn_is_read(ev->op))
        return say(err, errlen, "final marks reads only, not %s",
                   chaos_fn_name(ev->op));
    if (ev->t == CHAOS_INVOKE) {
        if (ev->result.type != CHAOS_V_NULL)
            return say(err, errlen, "an invocation has no result");
        if (ev->error != NULL)
            return say(err, errlen, "an invocation has no error");
    } else if (ev->t == CHAOS_OK) {
        if (ev->result.type != sh->ok &&
            !(sh->ok_or_null && ev->result.type == CHAOS_V_NULL))
            return say(err, errlen, "ok %s: result must be %s, not %s",
                       chaos_fn_name(ev->op), sh->ok_text,
                       vtype_name(ev->result.type));
        if (ev->error != NULL)
            return say(err, errlen, "an ok completion has no error");
    } else if (ev->result.type != CHAOS_V_NULL) {
        return say(err, errlen, "a %s completion has no result (it is "
                                "null or absent)",
                   chaos_type_name(ev->t));
    }
    if (ev->args.type == CHAOS_V_STR && ev->args.s == NULL)
        return say(err, errlen, "args: string missing");
    if (ev->result.type == CHAOS_V_STR && ev->result.s == NULL)
        return say(err, errlen, "result: string missing");
    for (k = 0; k < ev->args.n && ev->args.type == CHAOS_V_STRS; k++)
        if (ev->args.strs == NULL || ev->args.strs[k] == NULL)
            return say(err, errlen, "args: string missing");
    for (k = 0; k < ev->result.n && ev->result.type == CHAOS_V_STRS; k++)
        if (ev->result.strs == NULL || ev->result.strs[k] == NULL)
            return say(err, errlen, "result: string missing");
    return 0;
}

static int value_eq(const chaos_value *a, const chaos_value *b)
{
    size_t k;

    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case CHAOS_V_NULL: return 1;
    case CHAOS_V_BOOL: return !a->b == !b->b;
    case CHAOS_V_INT: return a->i == b->i;
    case CHAOS_V_STR: return strcmp(a->s, b->s) == 0;
    default:
        if (a->n != b->n)
            return 0;
        for (k = 0; k < a->n; k++)
            if (strcmp(a->strs[k], b->strs[k]) != 0)
                return 0;
        return 1;
    }
}

/* A completion must repeat what its client invoked. */
static int same_call(const chaos_event *inv, size_t inv_line,
                     const chaos_event *ev, char *err, size_t errlen)
{
    const char *what = NULL;
    char at[48] = "";

    if (inv_line > 0)
        snprintf(at, sizeof at, " (line %zu)", inv_line);
    if (strcmp(inv->actor, ev->actor) != 0)
        what = "actor";
    else if (inv->op != ev->op)
        what = "op";
    else if (!value_eq(&inv->args, &ev->args))
        what = "args";
    else if (!inv->final != !ev->final)
        what = "final";
    if (what == NULL)
        return 0;
    return say(err, errlen, "%s of client %lld does not repeat its "
                            "invocation's %s: %s %s%s",
               chaos_type_name(ev->t), (long long)ev->client, what,
               chaos_fn_name(inv->op), inv->actor, at);
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

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    size_t c;
    void *q;

    if (need <= *cap)
        return 0;
    c = *cap ? *cap * 2 : 64;
    while (c < need)
        c *= 2;
    q = realloc(*p, c * size);
    if (q == NULL)
        return KEEL_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
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
    if (grow((void **)&h->ops, &h->ops_cap, h->nops + 1, sizeof *h->ops) ||
        grow((void **)&h->actors, &h->actors_cap, h->nactors + 1,
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
    if (grow((void **)&act->ops, &act->cap, act->nops + 1, sizeof *act->ops))
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
        rc = same_call(&inv, op->invoke_line, ev, err, errlen);
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

/* ------------------------------------------------------------- parsing */

static int find_name(const char *s, const char *const *names, int n)
{
    int k;

    for (k = 0; k < n; k++)
        if (strcmp(s, names[k]) == 0)
            return k;
    return -1;
}

static int json_to_value(const chaos_json *j, const char *name,
                         chaos_arena *a, chaos_value *v, char *err,
                         size_t errlen)
{
    size_t k;

    memset(v, 0, sizeof *v);
    switch (j->type) {
    case CHAOS_JSON_NULL:
        v->type = CHAOS_V_NULL;
        return 0;
    case CHAOS_JSON_BOOL:
        v->type = CHAOS_V_BOOL;
        v->b = j->b;
        return 0;
    case CHAOS_JSON_INT:
        v->type = CHAOS_V_INT;
        v->i = j->i;
        return 0;
    case CHAOS_JSON_STR:
        v->type = CHAOS_V_STR;
        v->s = j->s;
        return 0;
    case CHAOS_JSON_ARRAY: {
        const char **strs = chaos_arena_alloc(a, (j->n + 1) * sizeof *strs);
        if (strs == NULL)
            return KEEL_ENOMEM;
        for (k = 0; k < j->n; k++) {
            if (j->items[k].type != CHAOS_JSON_STR)
                return say(err, errlen, "%s: an array holds strings only",
                           name);
            strs[k] = j->items[k].s;
        }
        v->type = CHAOS_V_STRS;
        v->strs = strs;
        v->n = j->n;
        return 0;
    }
    default:
        return say(err, errlen, "%s: an object is not a value here", name);
    }
}

static int want_int(const chaos_json *j, const char *name, int64_t *out,
                    char *err, size_t errlen)
{
    if (j == NULL)
        return say(err, errlen, "\"%s\" missing", name);
    if (j->type != CHAOS_JSON_INT)
        return say(err, errlen, "%s must be an integer", name);
    if (j->i < 0)
        return say(err, errlen, "%s must be 0 or more", name);
    *out = j->i;
    return 0;
}

static int want_str(const chaos_json *j, const char *name, int required,
                    const char **out, char *err, size_t errlen)
{
    *out = NULL;
    if (j == NULL)
        return required ? say(err, errlen, "\"%s\" missing", name) : 0;
    if (j->type != CHAOS_JSON_STR)
        return say(err, errlen, "%s must be a string", name);
    *out = j->s;
    return 0;
}

int chaos_event_parse(const char *line, size_t len, chaos_arena *scratch,
                      chaos_event *ev, char *err, size_t errlen)
{
    static const char *const members[] = {
        "t", "index", "time_ns", "client", "actor", "op", "args", "result",
        "final", "node", "error"};
    chaos_json root;
    const chaos_json *j;
    const char *s;
    int64_t i = 0;
    size_t k;
    int rc, n;

    memset(ev, 0, sizeof *ev);
    rc = chaos_json_parse(line, len, scratch, &root, err, errlen);
    if (rc != 0)
        return rc;
    if (root.type != CHAOS_JSON_OBJECT)
        return say(err, errlen, "a line holds one JSON object");
    for (k = 0; k < root.n; k++)
        if (find_name(root.items[k].key, members,
                      (int)(sizeof members / sizeof *members)) < 0)
            return say(err, errlen, "unknown member \"%s\"", root.items[k].key);

    if ((rc = want_str(chaos_json_get(&root, "t"), "t", 1, &s, err,
                       errlen)) != 0)
        return rc;
    n = find_name(s, type_names, 4);
    if (n < 0)
        return say(err, errlen, "t must be invoke, ok, fail or info, not "
                                "\"%s\"", s);
    ev->t = (chaos_type)n;
    if ((rc = want_int(chaos_json_get(&root, "index"), "index", &i, err,
                       errlen)) != 0)
        return rc;
    ev->index = (uint64_t)i;
    if ((rc = want_int(chaos_json_get(&root, "time_ns"), "time_ns",
                       &ev->time_ns, err, errlen)) != 0 ||
        (rc = want_int(chaos_json_get(&root, "client"), "client",
                       &ev->client, err, errlen)) != 0 ||
        (rc = want_str(chaos_json_get(&root, "actor"), "actor", 1,
                       &ev->actor, err, errlen)) != 0 ||
        (rc = want_str(chaos_json_get(&root, "op"), "op", 1, &s, err,
                       errlen)) != 0)
        return rc;
    n = find_name(s, fn_names, CHAOS_FN_COUNT);
    if (n < 0)
        return say(err, errlen, "op must be read, write, cas, incr, get, "
                                "add or read_set, not \"%s\"", s);
    ev->op = (chaos_fn)n;
    j = chaos_json_get(&root, "args");
    if (j == NULL)
        return say(err, errlen, "\"args\" missing (null for %s)",
                   chaos_fn_name(ev->op));
    if ((rc = json_to_value(j, "args", scratch, &ev->args, err, errlen)) != 0)
        return rc;
    j = chaos_json_get(&root, "result");
    if (j != NULL && ev->t == CHAOS_INVOKE)
        return say(err, errlen, "an invocation has no result");
    if (j == NULL && ev->t == CHAOS_OK)
        return say(err, errlen, "an ok completion needs \"result\"");
    if (j != NULL &&
        (rc = json_to_value(j, "result", scratch, &ev->result, err,
                            errlen)) != 0)
        return rc;
    j = chaos_json_get(&root, "final");
    if (j != NULL) {
        if (j->type != CHAOS_JSON_BOOL)
            return say(err, errlen, "final must be true or false");
        ev->final = j->b;
    }
    if ((rc = want_str(chaos_json_get(&root, "node"), "node", 0, &ev->node,
                       err, errlen)) != 0 ||
        (rc = want_str(chaos_json_get(&root, "error"), "error", 0,
                       &ev->error, err, errlen)) != 0)
        return rc;
    return chaos_event_check(ev, err, errlen);
}

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

/* -------------------------------------------------------------- writing */

static int put_value(chaos_buf *b, const chaos_value *v)
{
    size_t k;

    switch (v->type) {
    case CHAOS_V_NULL:
        chaos_buf_puts(b, "null");
        return 0;
    case CHAOS_V_BOOL:
        chaos_buf_puts(b, v->b ? "true" : "false");
        return 0;
    case CHAOS_V_INT:
        chaos_buf_printf(b, "%lld", (long long)v->i);
        return 0;
    case CHAOS_V_STR:
        return chaos_json_put_str(b, v->s);
    default:
        chaos_buf_puts(b, "[");
        for (k = 0; k < v->n; k++) {
            if (k > 0)
                chaos_buf_puts(b, ",");
            if (chaos_json_put_str(b, v->strs[k]) != 0)
                return KEEL_EINVAL;
        }
        chaos_buf_puts(b, "]");
        return 0;
    }
}

int chaos_event_format(const chaos_event *ev, chaos_buf *out, char *err,
                       size_t errlen)
{
    size_t start = out->len;
    int rc;

    rc = chaos_event_check(ev, err, errlen);
    if (rc != 0)
        return rc;
    chaos_buf_printf(out, "{\"t\":\"%s\",\"index\":%llu,\"time_ns\":%lld,"
                          "\"client\":%lld,\"actor\":",
                     chaos_type_name(ev->t), (unsigned long long)ev->index,
                     (long long)ev->time_ns, (long long)ev->client);
    rc = chaos_json_put_str(out, ev->actor);
    chaos_buf_printf(out, ",\"op\":\"%s\",\"args\":", chaos_fn_name(ev->op));
    if (rc == 0)
        rc = put_value(out, &ev->args);
    if (ev->t != CHAOS_INVOKE) {
        chaos_buf_puts(out, ",\"result\":");
        if (rc == 0)
            rc = put_value(out, &ev->result);
    }
    if (ev->final)
        chaos_buf_puts(out, ",\"final\":true");
    if (ev->node != NULL) {
        chaos_buf_puts(out, ",\"node\":");
        if (rc == 0)
            rc = chaos_json_put_str(out, ev->node);
    }
    if (ev->error != NULL) {
        chaos_buf_puts(out, ",\"error\":");
        if (rc == 0)
            rc = chaos_json_put_str(out, ev->error);
    }
    chaos_buf_puts(out, "}\n");
    if (rc != 0) {
        out->len = start;
        if (out->p != NULL)
            out->p[start] = '\0';
        return say(err, errlen, "a string of the event is not UTF-8");
    }
    return out->oom ? KEEL_ENOMEM : 0;
}

/* A copy of an invocation in one allocation, for the writer. */
struct pending_inv {
    int64_t client;
    chaos_event ev;
    size_t line;
};

static size_t value_size(const chaos_value *v)
{
    size_t n = 0, k;

    if (v->type == CHAOS_V_STR)
        n += strlen(v->s) + 1;
    if (v->type == CHAOS_V_STRS) {
        n += v->n * sizeof(char *);
        for (k = 0; k < v->n; k++)
            n += strlen(v->strs[k]) + 1;
    }
    return n;
}

static char *put_copy(char **at, const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = *at;

    memcpy(c, s, n);
    *at += n;
    return c;
}

static struct pending_inv *pending_copy(const chaos_event *ev, size_t line)
{
    size_t size = sizeof(struct pending_inv) + strlen(ev->actor) + 1 +
                  value_size(&ev->args);
    struct pending_inv *p = malloc(size);
    char *at;
    size_t k;

    if (p == NULL)
        return NULL;
    p->client = ev->client;
    p->ev = *ev;
    p->line = line;
    p->ev.node = NULL;
    p->ev.error = NULL;
    at = (char *)(p + 1);
    if (ev->args.type == CHAOS_V_STRS) {
        const char **v = (const char **)(void *)at;
        at += ev->args.n * sizeof(char *);
        for (k = 0; k < ev->args.n; k++)
            v[k] = put_copy(&at, ev->args.strs[k]);
        p->ev.args.strs = v;
    }
    p->ev.actor = put_copy(&at, ev->actor);
    if (ev->args.type == CHAOS_V_STR)
        p->ev.args.s = put_copy(&at, ev->args.s);
    return p;
}

static int pending_eq(const void *item, const void *key)
{
    return ((const struct pending_inv *)item)->client == *(const int64_t *)key;
}

/* An actor the writer has seen, with the family of its operations. */
struct family_ent {
    chaos_family family;
    char name[]; /* the actor */
};

static int family_eq(const void *item, const void *key)
{
    return strcmp(((const struct family_ent *)item)->name, key) == 0;
}

void chaos_hwriter_init(chaos_hwriter *w, FILE *f)
{
    memset(w, 0, sizeof *w);
    w->f = f;
    keel_hmap_init(&w->pending);
    keel_hmap_init(&w->families);
}

void chaos_hwriter_close(chaos_hwriter *w)
{
    size_t pos = 0;
    void *item;

    while (keel_hmap_next(&w->pending, &pos, &item))
        free(item);
    keel_hmap_free(&w->pending);
    pos = 0;
    while (keel_hmap_next(&w->families, &pos, &item))
        free(item);
    keel_hmap_free(&w->families);
}

int chaos_hwriter_write(chaos_hwriter *w, const chaos_event *ev, char *err,
                        size_t errlen)
{
    uint64_t hc = hash_client(ev->client), ha = 0;
    struct pending_inv *p = keel_hmap_get(&w->pending, hc, &ev->client,
                                          pending_eq),
                       *np = NULL;
    struct family_ent *fe = NULL, *nfe = NULL;
    chaos_event e = *ev;
    chaos_buf b;
    int rc;

    e.index = w->next_index;
    rc = chaos_event_check(&e, err, errlen);
    if (rc != 0)
        return rc;
    if (e.time_ns < w->last_ns)
        return say(err, errlen, "time_ns %lld is earlier than the last "
                                "event's %lld",
                   (long long)e.time_ns, (long long)w->last_ns);
    if (e.t == CHAOS_INVOKE) {
        if (p != NULL)
            return say(err, errlen, "client %lld invokes %s while its %s on "
                                    "%s is outstanding",
                       (long long)e.client, chaos_fn_name(e.op),
                       chaos_fn_name(p->ev.op), p->ev.actor);
        ha = hash_str(e.actor);
        fe = keel_hmap_get(&w->families, ha, e.actor, family_eq);
        if (fe != NULL && fe->family != chaos_fn_family(e.op))
            return say(err, errlen, "%s on %s, whose operations so far are "
                                    "%s operations: one actor, one model",
                       chaos_fn_name(e.op), e.actor,
                       chaos_family_name(fe->family));
        if (fe == NULL) {
            nfe = malloc(sizeof *nfe + strlen(e.actor) + 1);
            if (nfe == NULL || keel_hmap_reserve(&w->families, 1) != 0) {
                free(nfe);
                return KEEL_ENOMEM;
            }
            nfe->family = chaos_fn_family(e.op);
            memcpy(nfe->name, e.actor, strlen(e.actor) + 1);
        }
        np = pending_copy(&e, (size_t)e.index + 1);
        if (np == NULL || keel_hmap_reserve(&w->pending, 1) != 0) {
            free(np);
            free(nfe);
            return KEEL_ENOMEM;
        }
    } else {
        if (p == NULL)
            return say(err, errlen, "%s of client %lld, which has no "
                                    "operation outstanding",
                       chaos_type_name(e.t), (long long)e.client);
        rc = same_call(&p->ev, p->line, &e, err, errlen);
        if (rc != 0)
            return rc;
    }
    chaos_buf_init(&b);
    rc = chaos_event_format(&e, &b, err, errlen);
    if (rc == 0 && (fwrite(b.p, 1, b.len, w->f) != b.len ||
                    fflush(w->f) != 0)) {
        rc = KEEL_EIO;
        if (errlen > 0)
            snprintf(err, errlen, "writing the history: %s", strerror(errno));
    }
    chaos_buf_free(&b);
    if (rc != 0) {
        free(np);
        free(nfe);
        return rc;
    }
    if (nfe != NULL)
        keel_hmap_put(&w->families, ha, nfe);
    if (np != NULL) {
        keel_hmap_put(&w->pending, hc, np);
    } else {
        keel_hmap_remove(&w->pending, hc, p);
        free(p);
    }
    w->next_index++;
    w->last_ns = e.time_ns;
    return 0;
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
