#include "chaos/hwriter.h"

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

static uint64_t hash_str(const char *s)
{
    return XXH3_64bits(s, strlen(s));
}

static uint64_t hash_client(int64_t c)
{
    return XXH3_64bits(&c, sizeof c);
}

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
        rc = chaos_event_same_call(&p->ev, p->line, &e, err, errlen);
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

