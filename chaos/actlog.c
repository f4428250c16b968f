#include "chaos/actlog.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "chaos/textfile.h"
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

void chaos_actlog_init(chaos_actlog *a)
{
    memset(a, 0, sizeof *a);
    a->t0 = UINT64_MAX;
    chaos_arena_init(&a->arena);
}

void chaos_actlog_free(chaos_actlog *a)
{
    free(a->iv);
    free(a->nodes);
    free(a->found);
    chaos_arena_free(&a->arena);
    memset(a, 0, sizeof *a);
}

static int add_finding(chaos_actlog *a, chaos_act_kind kind, size_t x,
                       size_t y)
{
    if (chaos_grow((void **)&a->found, &a->found_cap, a->nfound + 1,
             sizeof *a->found))
        return KEEL_ENOMEM;
    a->found[a->nfound].kind = kind;
    a->found[a->nfound].a = x;
    a->found[a->nfound].b = y;
    a->nfound++;
    return 0;
}

/* A decimal number that fills [s, e); 0 or -1. */
static int dec(const char *s, const char *e, uint64_t *out)
{
    uint64_t v = 0;

    if (s == e || (*s == '0' && e - s > 1))
        return -1;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

/* The next space-separated word of [*p, e): exactly one space between
 * words, none at either end. */
static int next_word(const char **p, const char *e, const char **ws,
                     const char **we)
{
    const char *s = *p, *q;

    if (s >= e || *s == ' ')
        return -1;
    for (q = s; q < e && *q != ' '; q++)
        ;
    *ws = s;
    *we = q;
    *p = q < e ? q + 1 : q;
    if (q < e && q + 1 == e)
        return -1; /* a trailing space */
    return 0;
}

static int is_hexid(const char *s, const char *e)
{
    if (e - s == 1 && *s == '-')
        return 1;
    if ((e - s) % 2 != 0)
        return 0;
    for (; s < e; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

/* The open activations of the node being parsed, by actor. */
struct open_ent {
    const char *actor;
    size_t iv;   /* SIZE_MAX: none open */
    size_t last; /* its latest activation on this node */
    int held;    /* resident through a fence: active again at "serving" */
};

static int open_eq(const void *item, const void *key)
{
    return strcmp(((const struct open_ent *)item)->actor, key) == 0;
}

int chaos_actlog_parse(chaos_actlog *a, const char *node, const char *name,
                       const char *text, size_t len, char *err,
                       size_t errlen)
{
    const char *p = text, *end = text + len;
    keel_hmap open;
    size_t lineno = 0, k, first = a->n, first_found = a->nfound,
           ends = a->process_ends, fences = a->fences;
    uint64_t last_ns = 0;
    const char *nodename;
    int rc = 0;

    for (k = 0; k < a->nnodes; k++)
        if (strcmp(a->nodes[k], node) == 0)
            return say(err, errlen, "%s: node %s given twice", name, node);
    if (chaos_grow((void **)&a->nodes, &a->nodes_cap, a->nnodes + 1,
             sizeof *a->nodes))
        return KEEL_ENOMEM;
    nodename = chaos_arena_strndup(&a->arena, node, strlen(node));
    name = chaos_arena_strndup(&a->arena, name, strlen(name));
    if (nodename == NULL || name == NULL)
        return KEEL_ENOMEM;
    keel_hmap_init(&open);

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *le, *q;
        const char *ws, *we, *ts, *te, *is, *ie;
        uint64_t ns, shard, epoch, h;
        struct open_ent *oe;
        char actor[400];
        int act;

        lineno++;
        if (nl == NULL) {
            rc = say(err, errlen, "%s:%zu: the last line has no newline "
                                  "(cut short?)",
                     name, lineno);
            break;
        }
        le = nl;
        q = p;
        p = nl + 1;
        if (next_word(&q, le, &ws, &we) != 0 || dec(ws, we, &ns) != 0) {
            rc = say(err, errlen, "%s:%zu: expected the time in ns first",
                     name, lineno);
            break;
        }
        if (ns < last_ns) {
            rc = say(err, errlen, "%s:%zu: time %llu is earlier than the "
                                  "line before's %llu (the check compares "
                                  "wall-clock times: did the clock go back?)",
                     name, lineno, (unsigned long long)ns,
                     (unsigned long long)last_ns);
            break;
        }
        last_ns = ns;
        if (ns < a->t0)
            a->t0 = ns;
        if (next_word(&q, le, &ws, &we) != 0) {
            rc = say(err, errlen, "%s:%zu: expected activate, deactivate, "
                                  "fenced, serving or end after the time",
                     name, lineno);
            break;
        }
        if ((size_t)(we - ws) == 3 && memcmp(ws, "end", 3) == 0 && q == le) {
            /* The process ended: whatever it held ends with it. */
            for (k = first; k < a->n; k++)
                if (a->iv[k].end == CHAOS_ACT_OPEN) {
                    a->iv[k].end = ns;
                    a->iv[k].how = CHAOS_ACT_PROCESS_END;
                    a->iv[k].end_line = lineno;
                }
            {
                size_t pos = 0;
                void *item;
                while (keel_hmap_next(&open, &pos, &item)) {
                    ((struct open_ent *)item)->iv = SIZE_MAX;
                    ((struct open_ent *)item)->held = 0;
                }
            }
            a->process_ends++;
            continue;
        }
        if ((size_t)(we - ws) == 6 && memcmp(ws, "fenced", 6) == 0) {
            /* "fenced since T": the node started no turn from T on, even
             * if it noticed later (T may lie before the lines above). Its
             * activations, open or closed since T, end at T; those still
             * resident resume at the next "serving". */
            uint64_t since;
            size_t pos = 0;
            void *item;

            if (next_word(&q, le, &ws, &we) != 0 || (we - ws) != 5 ||
                memcmp(ws, "since", 5) != 0 ||
                next_word(&q, le, &ws, &we) != 0 ||
                dec(ws, we, &since) != 0 || q != le) {
                rc = say(err, errlen, "%s:%zu: expected \"<ns> fenced "
                                      "since <ns>\"",
                         name, lineno);
                break;
            }
            if (since > ns) {
                rc = say(err, errlen, "%s:%zu: fenced since %llu, after the "
                                      "line's own time",
                         name, lineno, (unsigned long long)since);
                break;
            }
            if (since < a->t0)
                a->t0 = since;
            for (k = first; k < a->n; k++) {
                chaos_act_iv *iv = &a->iv[k];
                if (iv->end <= since)
                    continue;
                iv->end = iv->start > since ? iv->start : since;
                iv->how = CHAOS_ACT_FENCED;
                iv->end_line = lineno;
            }
            while (keel_hmap_next(&open, &pos, &item)) {
                struct open_ent *o = item;
                if (o->iv != SIZE_MAX) {
                    o->held = 1;
                    o->iv = SIZE_MAX;
                }
            }
            a->fences++;
            continue;
        }
        if ((size_t)(we - ws) == 7 && memcmp(ws, "serving", 7) == 0 &&
            q == le) {
            /* The fence lifted: what stayed resident runs turns again. */
            size_t pos = 0;
            void *item;

            while (keel_hmap_next(&open, &pos, &item)) {
                struct open_ent *o = item;
                chaos_act_iv *iv;
                if (!o->held)
                    continue;
                o->held = 0;
                if (chaos_grow((void **)&a->iv, &a->cap, a->n + 1, sizeof *a->iv)) {
                    rc = KEEL_ENOMEM;
                    break;
                }
                iv = &a->iv[a->n];
                *iv = a->iv[o->last];
                iv->start = ns;
                iv->end = CHAOS_ACT_OPEN;
                iv->how = CHAOS_ACT_STILL_OPEN;
                iv->start_line = lineno;
                iv->end_line = 0;
                o->iv = o->last = a->n++;
            }
            if (rc != 0)
                break;
            continue;
        }
        if ((size_t)(we - ws) == 8 && memcmp(ws, "activate", 8) == 0) {
            act = 1;
        } else if ((size_t)(we - ws) == 10 &&
                   memcmp(ws, "deactivate", 10) == 0) {
            act = 0;
        } else {
            rc = say(err, errlen, "%s:%zu: expected activate, deactivate, "
                                  "fenced, serving or end after the time, "
                                  "not \"%.*s\"",
                     name, lineno, (int)(we - ws), ws);
            break;
        }
        if (next_word(&q, le, &ts, &te) != 0 ||
            next_word(&q, le, &is, &ie) != 0 || !is_hexid(is, ie) ||
            next_word(&q, le, &ws, &we) != 0 || (we - ws) != 5 ||
            memcmp(ws, "shard", 5) != 0 || next_word(&q, le, &ws, &we) != 0 ||
            dec(ws, we, &shard) != 0 || shard > UINT32_MAX ||
            next_word(&q, le, &ws, &we) != 0 || (we - ws) != 5 ||
            memcmp(ws, "epoch", 5) != 0 || next_word(&q, le, &ws, &we) != 0 ||
            dec(ws, we, &epoch) != 0 || q != le) {
            rc = say(err, errlen, "%s:%zu: expected \"<ns> %s <type> <hex "
                                  "id> shard <n> epoch <n>\"",
                     name, lineno, act ? "activate" : "deactivate");
            break;
        }
        if ((size_t)(te - ts) + (size_t)(ie - is) + 2 > sizeof actor) {
            rc = say(err, errlen, "%s:%zu: type and id too long", name,
                     lineno);
            break;
        }
        snprintf(actor, sizeof actor, "%.*s/%.*s", (int)(te - ts), ts,
                 (int)(ie - is), is);
        h = XXH3_64bits(actor, strlen(actor));
        oe = keel_hmap_get(&open, h, actor, open_eq);
        if (!act && oe != NULL && oe->held) {
            /* Resident through a fence, deactivated now: its activation
             * ended at the fence. */
            oe->held = 0;
            continue;
        }
        if (!act) {
            if (oe == NULL || oe->iv == SIZE_MAX) {
                rc = say(err, errlen, "%s:%zu: deactivate of %s, which this "
                                      "node had not activated",
                         name, lineno, actor);
                break;
            }
            a->iv[oe->iv].end = ns;
            a->iv[oe->iv].how = CHAOS_ACT_DEACTIVATED;
            a->iv[oe->iv].end_line = lineno;
            oe->iv = SIZE_MAX;
            continue;
        }
        if (chaos_grow((void **)&a->iv, &a->cap, a->n + 1, sizeof *a->iv) ||
            keel_hmap_reserve(&open, 1) != 0) {
            rc = KEEL_ENOMEM;
            break;
        }
        if (oe == NULL) {
            oe = chaos_arena_alloc(&a->arena, sizeof *oe);
            if (oe == NULL ||
                (oe->actor = chaos_arena_strndup(&a->arena, actor,
                                                 strlen(actor))) == NULL) {
                rc = KEEL_ENOMEM;
                break;
            }
            oe->iv = SIZE_MAX;
            oe->held = 0;
            keel_hmap_put(&open, h, oe);
        }
        oe->held = 0;
        if (oe->iv != SIZE_MAX) {
            /* Active here already: a finding; the old activation is cut
             * at the new one, so that it is reported once. */
            chaos_act_iv *old = &a->iv[oe->iv];
            old->end = ns;
            old->how = CHAOS_ACT_REACTIVATED;
            old->end_line = lineno;
            if (add_finding(a, CHAOS_ACT_TWICE, oe->iv, a->n) != 0) {
                rc = KEEL_ENOMEM;
                break;
            }
        }
        {
            chaos_act_iv *iv = &a->iv[a->n];
            memset(iv, 0, sizeof *iv);
            iv->node = nodename;
            iv->actor = oe->actor;
            iv->start = ns;
            iv->end = CHAOS_ACT_OPEN;
            iv->how = CHAOS_ACT_STILL_OPEN;
            iv->shard = (unsigned)shard;
            iv->epoch = epoch;
            iv->file = name;
            iv->start_line = lineno;
            oe->iv = oe->last = a->n++;
        }
    }
    keel_hmap_free(&open);
    if (rc == 0)
        a->nodes[a->nnodes++] = nodename;
    else {
        /* Nothing of a log that does not read is kept. */
        a->n = first;
        a->nfound = first_found;
        a->process_ends = ends;
        a->fences = fences;
    }
    return rc;
}

int chaos_actlog_read(chaos_actlog *a, const char *node, const char *path,
                      char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc = chaos_read_text(path, &text, &len, err, errlen);

    if (rc != 0)
        return rc;
    rc = chaos_actlog_parse(a, node, path, text, len, err, errlen);
    free(text);
    return rc;
}

static int cmp_name(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

int chaos_actlog_read_dir(chaos_actlog *a, const char *dir, char *err,
                          size_t errlen)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0, k;
    int rc = 0;

    if (d == NULL) {
        if (errlen > 0)
            snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return KEEL_EIO;
    }
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l <= 4 || strcmp(de->d_name + l - 4, ".log") != 0)
            continue;
        if (chaos_grow((void **)&names, &cap, n + 1, sizeof *names) != 0 ||
            (names[n] = strdup(de->d_name)) == NULL) {
            rc = KEEL_ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc == 0 && n > 1)
        qsort(names, n, sizeof *names, cmp_name);
    for (k = 0; k < n && rc == 0; k++) {
        char *path, *node = names[k];
        if (asprintf(&path, "%s/%s", dir, names[k]) < 0) {
            rc = KEEL_ENOMEM;
            break;
        }
        node[strlen(node) - 4] = '\0';
        rc = chaos_actlog_read(a, node, path, err, errlen);
        free(path);
    }
    for (k = 0; k < n; k++)
        free(names[k]);
    free(names);
    return rc;
}

static int cmp_iv(const void *x, const void *y, void *arg)
{
    const chaos_act_iv *iv = arg;
    const chaos_act_iv *p = &iv[*(const size_t *)x], *q = &iv[*(const size_t *)y];
    int c = strcmp(p->actor, q->actor);

    if (c != 0)
        return c;
    if (p->start != q->start)
        return p->start < q->start ? -1 : 1;
    return *(const size_t *)x < *(const size_t *)y ? -1 : 1;
}

int chaos_actlog_check(chaos_actlog *a)
{
    size_t *idx = calloc(a->n + 1, sizeof *idx), k, cur = 0;

    if (idx == NULL)
        return KEEL_ENOMEM;
    for (k = 0; k < a->n; k++)
        idx[k] = k;
    /* Indexes, not the intervals, are sorted: findings already name
     * intervals by position. */
    qsort_r(idx, a->n, sizeof *idx, cmp_iv, a->iv);
    a->actors = 0;
    a->moves = 0;
    for (k = 0; k < a->n; k++) {
        const chaos_act_iv *q = &a->iv[idx[k]], *prev;
        if (k == 0 || strcmp(a->iv[idx[k - 1]].actor, q->actor) != 0) {
            a->actors++;
            cur = idx[k]; /* the activation that ends last so far */
            continue;
        }
        prev = &a->iv[idx[k - 1]];
        if (strcmp(prev->node, q->node) != 0)
            a->moves++;
        if (q->epoch < prev->epoch &&
            add_finding(a, CHAOS_ACT_EPOCH_BACK, idx[k - 1], idx[k]) != 0)
            goto oom;
        /* Closed intervals: sharing an instant, an end included, is an
         * overlap. A handoff's deactivate and activate lie milliseconds
         * apart, and an activation that ends as it begins still held the
         * actor at that instant. */
        if (q->start <= a->iv[cur].end &&
            strcmp(a->iv[cur].node, q->node) != 0 &&
            add_finding(a, CHAOS_ACT_OVERLAP, cur, idx[k]) != 0)
            goto oom;
        if (q->end > a->iv[cur].end)
            cur = idx[k];
    }
    free(idx);
    return 0;
oom:
    free(idx);
    return KEEL_ENOMEM;
}

/* ------------------------------------------------------------- reports */

static void put_time(FILE *f, const chaos_actlog *a, uint64_t ns)
{
    uint64_t d = ns - a->t0;

    fprintf(f, "+%llu.%06llu s", (unsigned long long)(d / 1000000000u),
            (unsigned long long)(d % 1000000000u / 1000u));
}

/* "counter/6331" and, when the id is printable text, ("c1"). */
static void put_actor(FILE *f, const char *actor)
{
    const char *id = strchr(actor, '/') + 1;
    size_t n = strlen(id), k;
    char text[128];

    fputs(actor, f);
    if (n == 1 || n / 2 >= sizeof text)
        return;
    for (k = 0; k < n / 2; k++) {
        unsigned v;
        if (sscanf(id + 2 * k, "%2x", &v) != 1 || v < 0x20 || v > 0x7e ||
            v == '"' || v == '\\')
            return;
        text[k] = (char)v;
    }
    text[k] = '\0';
    fprintf(f, " (\"%s\")", text);
}

static void put_iv(FILE *f, const chaos_actlog *a, const chaos_act_iv *iv)
{
    fprintf(f, "on %s from ", iv->node);
    put_time(f, a, iv->start);
    fprintf(f, " (%s:%zu, epoch %llu) ", iv->file, iv->start_line,
            (unsigned long long)iv->epoch);
    switch (iv->how) {
    case CHAOS_ACT_STILL_OPEN:
        fprintf(f, "to the end of its log, never deactivated");
        return;
    case CHAOS_ACT_DEACTIVATED:
        fprintf(f, "to ");
        put_time(f, a, iv->end);
        fprintf(f, " (deactivate, line %zu)", iv->end_line);
        return;
    case CHAOS_ACT_PROCESS_END:
        fprintf(f, "to ");
        put_time(f, a, iv->end);
        fprintf(f, " (process end, line %zu)", iv->end_line);
        return;
    case CHAOS_ACT_FENCED:
        fprintf(f, "to ");
        put_time(f, a, iv->end);
        fprintf(f, " (fenced since, line %zu)", iv->end_line);
        return;
    default:
        fprintf(f, "to ");
        put_time(f, a, iv->end);
        fprintf(f, " (activated again, line %zu)", iv->end_line);
    }
}

void chaos_actlog_print(FILE *f, const chaos_actlog *a, size_t max)
{
    size_t k;

    fprintf(f, "at-most-one-activation: %s (%zu nodes, %zu activations of "
               "%zu actors, %zu moves between nodes, %zu process ends",
            a->nfound > 0 ? "FAIL" : "PASS", a->nnodes, a->n, a->actors,
            a->moves, a->process_ends);
    if (a->fences > 0)
        fprintf(f, ", %zu fences", a->fences);
    fprintf(f, ")\n");
    for (k = 0; k < a->nfound && k < max; k++) {
        const chaos_act_finding *fd = &a->found[k];
        const chaos_act_iv *p = &a->iv[fd->a], *q = &a->iv[fd->b];
        fputs("  ", f);
        put_actor(f, p->actor);
        switch (fd->kind) {
        case CHAOS_ACT_OVERLAP:
            fprintf(f, " active on two nodes at once\n    ");
            put_iv(f, a, p);
            fprintf(f, "\n    ");
            put_iv(f, a, q);
            fprintf(f, "\n    overlap: ");
            if (p->end == CHAOS_ACT_OPEN && q->end == CHAOS_ACT_OPEN)
                fprintf(f, "from ");
            put_time(f, a, q->start);
            if (p->end == CHAOS_ACT_OPEN && q->end == CHAOS_ACT_OPEN) {
                fprintf(f, " on, both never deactivated\n");
            } else {
                uint64_t e = p->end < q->end ? p->end : q->end;
                fprintf(f, " to ");
                put_time(f, a, e);
                fprintf(f, " (%.9f s)\n", (double)(e - q->start) / 1e9);
            }
            break;
        case CHAOS_ACT_TWICE:
            fprintf(f, " activated again on %s at ", q->node);
            put_time(f, a, q->start);
            fprintf(f, " (%s:%zu) while its activation from ", q->file,
                    q->start_line);
            put_time(f, a, p->start);
            fprintf(f, " (line %zu) had not ended: no deactivate, no end "
                       "line (a restart the harness did not mark?)\n",
                    p->start_line);
            break;
        default:
            fprintf(f, ": shard epoch went back from %llu to %llu\n    ",
                    (unsigned long long)p->epoch,
                    (unsigned long long)q->epoch);
            put_iv(f, a, p);
            fprintf(f, "\n    ");
            put_iv(f, a, q);
            fprintf(f, "\n");
        }
    }
    if (a->nfound > max)
        fprintf(f, "  ... and %zu more\n", a->nfound - max);
}
