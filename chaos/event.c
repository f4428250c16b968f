#include "chaos/event.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

int chaos_value_eq(const chaos_value *a, const chaos_value *b)
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

int chaos_event_same_call(const chaos_event *inv, size_t inv_line,
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
    else if (!chaos_value_eq(&inv->args, &ev->args))
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


/* ------------------------------------------------------------ writing */

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
