/* Replicas agree: digests of each unit's in-sync replicas (replicas.h). */
#include "chaos/replicas.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

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

void chaos_replicas_init(chaos_replicas *r)
{
    memset(r, 0, sizeof *r);
    chaos_arena_init(&r->arena);
}

void chaos_replicas_free(chaos_replicas *r)
{
    size_t k;

    for (k = 0; k < r->nunits; k++)
        free(r->units[k].dg);
    free(r->units);
    chaos_arena_free(&r->arena);
    memset(r, 0, sizeof *r);
}

/* The words of one line: [w[i], we[i]), single spaces between them. */
#define MAX_WORDS 16

static int split(const char *s, const char *e, const char **w,
                 const char **we)
{
    int n = 0;

    while (s < e) {
        const char *q = s;
        if (*s == ' ' || n == MAX_WORDS)
            return -1;
        while (q < e && *q != ' ')
            q++;
        w[n] = s;
        we[n] = q;
        n++;
        if (q < e && q + 1 == e)
            return -1; /* a trailing space */
        s = q < e ? q + 1 : q;
    }
    return n;
}

static int word_is(const char *s, const char *e, const char *lit)
{
    return (size_t)(e - s) == strlen(lit) && memcmp(s, lit, (size_t)(e - s)) == 0;
}

/* A decimal number that fills [s, e). */
static int dec(const char *s, const char *e, uint64_t *out)
{
    uint64_t v = 0;

    if (s == e || (*s == '0' && e - s > 1))
        return -1;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9' ||
            v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

/* Exactly 16 lower-case hex digits. */
static int hex16(const char *s, const char *e, uint64_t *out)
{
    uint64_t v = 0;

    if (e - s != 16)
        return -1;
    for (; s < e; s++) {
        int d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (*s >= 'a' && *s <= 'f')
            d = *s - 'a' + 10;
        else
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

static int name_ok(const char *s, const char *e)
{
    if (s == e || e - s > 64)
        return 0;
    for (; s < e; s++)
        if (*s == ',' || (unsigned char)*s <= ' ')
            return 0;
    return 1;
}

static chaos_repl_unit *find_unit(chaos_replicas *r, const char *cap,
                                  size_t caplen, unsigned shard)
{
    size_t k;

    /* Units come in map order and digests after them: a linear search
     * from the end finds the recent ones first. Runs have few units. */
    for (k = r->nunits; k-- > 0;) {
        chaos_repl_unit *u = &r->units[k];
        if (u->shard == shard && strlen(u->cap) == caplen &&
            memcmp(u->cap, cap, caplen) == 0)
            return u;
    }
    return NULL;
}

/* "n1,n2" into the in-sync list (add) or counted as out of sync. */
static int node_list(const char *s, const char *e, const char **names,
                     size_t *n, chaos_arena *a)
{
    while (s < e) {
        const char *q = memchr(s, ',', (size_t)(e - s));
        if (q == NULL)
            q = e;
        if (!name_ok(s, q) || *n >= CHAOS_REPL_MAX)
            return -1;
        if (names != NULL &&
            (names[*n] = chaos_arena_strndup(a, s, (size_t)(q - s))) == NULL)
            return -2;
        (*n)++;
        if (q < e && q + 1 == e)
            return -1;
        s = q < e ? q + 1 : q;
    }
    return 0;
}

static int parse_unit(chaos_replicas *r, const char **w, const char **we,
                      int nw, size_t lineno, char *err, size_t errlen)
{
    const char *backups[CHAOS_REPL_MAX], *out[CHAOS_REPL_MAX];
    size_t nb = 0, no = 0, k, j;
    uint64_t shard, epoch;
    chaos_repl_unit *u;
    int i = 7, rc;

    if (nw < 7 || !name_ok(w[1], we[1]) || dec(w[2], we[2], &shard) != 0 ||
        shard > UINT32_MAX || !word_is(w[3], we[3], "owner") ||
        !name_ok(w[4], we[4]) || !word_is(w[5], we[5], "epoch") ||
        dec(w[6], we[6], &epoch) != 0)
        goto bad;
    if (i + 1 < nw && word_is(w[i], we[i], "target")) {
        if (!name_ok(w[i + 1], we[i + 1]))
            goto bad;
        i += 2;
    }
    if (i + 1 < nw && word_is(w[i], we[i], "backups")) {
        rc = node_list(w[i + 1], we[i + 1], backups, &nb, &r->arena);
        if (rc == -2)
            return KEEL_ENOMEM;
        if (rc != 0)
            goto bad;
        i += 2;
        if (i + 1 < nw && word_is(w[i], we[i], "out_of_sync")) {
            rc = node_list(w[i + 1], we[i + 1], out, &no, &r->arena);
            if (rc == -2)
                return KEEL_ENOMEM;
            if (rc != 0)
                goto bad;
            i += 2;
        }
    }
    if (i != nw)
        goto bad;
    if (find_unit(r, w[1], (size_t)(we[1] - w[1]), (unsigned)shard) != NULL)
        return say(err, errlen, "%s:%zu: unit %.*s %llu given twice",
                   r->file, lineno, (int)(we[1] - w[1]), w[1],
                   (unsigned long long)shard);
    for (k = 0; k < no; k++) {
        for (j = 0; j < nb && strcmp(out[k], backups[j]) != 0; j++)
            ;
        if (j == nb)
            return say(err, errlen, "%s:%zu: %s is out of sync but not "
                                    "among the backups",
                       r->file, lineno, out[k]);
    }
    if (chaos_grow((void **)&r->units, &r->cap, r->nunits + 1, sizeof *r->units))
        return KEEL_ENOMEM;
    u = &r->units[r->nunits];
    memset(u, 0, sizeof *u);
    u->cap = chaos_arena_strndup(&r->arena, w[1], (size_t)(we[1] - w[1]));
    if (u->cap == NULL)
        return KEEL_ENOMEM;
    u->shard = (unsigned)shard;
    u->epoch = epoch;
    u->line = lineno;
    u->nout = no;
    if (!word_is(w[4], we[4], "(none)")) {
        u->insync[u->ninsync] =
            chaos_arena_strndup(&r->arena, w[4], (size_t)(we[4] - w[4]));
        if (u->insync[u->ninsync++] == NULL)
            return KEEL_ENOMEM;
        for (k = 0; k < nb; k++) {
            for (j = 0; j < no && strcmp(backups[k], out[j]) != 0; j++)
                ;
            if (j == no && u->ninsync < CHAOS_REPL_MAX)
                u->insync[u->ninsync++] = backups[k];
        }
    }
    r->nunits++;
    return 0;
bad:
    return say(err, errlen, "%s:%zu: expected \"unit CAP SHARD owner NODE "
                            "epoch E [target NODE] [backups NODE,... "
                            "[out_of_sync NODE,...]]\"",
               r->file, lineno);
}

static int parse_digest(chaos_replicas *r, const char **w, const char **we,
                        int nw, size_t lineno, char *err, size_t errlen)
{
    uint64_t shard, digest, records;
    chaos_repl_unit *u;
    chaos_repl_digest *d;
    size_t k;

    if (nw != 6 || !name_ok(w[1], we[1]) || !name_ok(w[2], we[2]) ||
        dec(w[3], we[3], &shard) != 0 || shard > UINT32_MAX ||
        hex16(w[4], we[4], &digest) != 0 ||
        dec(w[5], we[5], &records) != 0)
        return say(err, errlen, "%s:%zu: expected \"digest NODE CAP SHARD "
                                "<16 hex digits> RECORDS\"",
                   r->file, lineno);
    u = find_unit(r, w[2], (size_t)(we[2] - w[2]), (unsigned)shard);
    if (u == NULL)
        return say(err, errlen, "%s:%zu: a digest of unit %.*s %llu, which "
                                "no unit line above names",
                   r->file, lineno, (int)(we[2] - w[2]), w[2],
                   (unsigned long long)shard);
    for (k = 0; k < u->ndg; k++)
        if (word_is(w[1], we[1], u->dg[k].node))
            return say(err, errlen, "%s:%zu: %.*s's digest of unit %s %u "
                                    "given twice (line %zu)",
                       r->file, lineno, (int)(we[1] - w[1]), w[1], u->cap,
                       u->shard, u->dg[k].line);
    if (chaos_grow((void **)&u->dg, &u->dg_cap, u->ndg + 1, sizeof *u->dg))
        return KEEL_ENOMEM;
    d = &u->dg[u->ndg];
    d->node = chaos_arena_strndup(&r->arena, w[1], (size_t)(we[1] - w[1]));
    if (d->node == NULL)
        return KEEL_ENOMEM;
    d->digest = digest;
    d->records = records;
    d->line = lineno;
    u->ndg++;
    return 0;
}

int chaos_replicas_parse(chaos_replicas *r, const char *name,
                         const char *text, size_t len, char *err,
                         size_t errlen)
{
    const char *p = text, *end = text + len;
    size_t lineno = 0;
    int rc = 0;

    r->file = chaos_arena_strndup(&r->arena, name, strlen(name));
    if (r->file == NULL)
        return KEEL_ENOMEM;
    while (p < end && rc == 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *w[MAX_WORDS], *we[MAX_WORDS];
        int nw;

        lineno++;
        if (nl == NULL)
            return say(err, errlen, "%s:%zu: the last line has no newline "
                                    "(cut short?)",
                       r->file, lineno);
        if (*p == '#') {
            p = nl + 1;
            continue;
        }
        nw = split(p, nl, w, we);
        if (nw <= 0)
            return say(err, errlen, "%s:%zu: expected a unit or a digest "
                                    "line",
                       r->file, lineno);
        if (word_is(w[0], we[0], "unit"))
            rc = parse_unit(r, w, we, nw, lineno, err, errlen);
        else if (word_is(w[0], we[0], "digest"))
            rc = parse_digest(r, w, we, nw, lineno, err, errlen);
        else
            rc = say(err, errlen, "%s:%zu: expected a unit or a digest "
                                  "line, not \"%.*s\"",
                     r->file, lineno, (int)(we[0] - w[0]), w[0]);
        p = nl + 1;
    }
    return rc;
}

int chaos_replicas_read(chaos_replicas *r, const char *path, char *err,
                        size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc = chaos_read_text(path, &text, &len, err, errlen);

    if (rc != 0)
        return rc;
    rc = chaos_replicas_parse(r, path, text, len, err, errlen);
    free(text);
    return rc;
}

static const chaos_repl_digest *digest_of(const chaos_repl_unit *u,
                                          const char *node)
{
    size_t k;

    for (k = 0; k < u->ndg; k++)
        if (strcmp(u->dg[k].node, node) == 0)
            return &u->dg[k];
    return NULL;
}

int chaos_replicas_check(chaos_replicas *r, char *err, size_t errlen)
{
    size_t k, j;

    r->compared = r->insync = r->out_of_sync = r->no_owner = 0;
    r->ndisagree = 0;
    for (k = 0; k < r->nunits; k++) {
        chaos_repl_unit *u = &r->units[k];
        const chaos_repl_digest *first = NULL;

        u->disagree = 0;
        r->out_of_sync += u->nout;
        if (u->ninsync == 0) {
            r->no_owner++;
            continue;
        }
        r->insync += u->ninsync;
        for (j = 0; j < u->ninsync; j++) {
            const chaos_repl_digest *d = digest_of(u, u->insync[j]);
            if (d == NULL)
                return say(err, errlen, "%s:%zu: no digest of unit %s %u "
                                        "from %s, which is in its in-sync "
                                        "set",
                           r->file, u->line, u->cap, u->shard,
                           u->insync[j]);
            if (first == NULL)
                first = d;
            else if (d->digest != first->digest ||
                     d->records != first->records)
                u->disagree = 1;
        }
        if (u->ninsync > 1)
            r->compared++;
        r->ndisagree += (size_t)u->disagree;
    }
    return 0;
}

void chaos_replicas_print(FILE *f, const chaos_replicas *r, size_t max)
{
    size_t k, j, shown = 0;

    fprintf(f, "replicas-agree: %s (%zu units, %zu compared across %zu "
               "in-sync replicas, %zu replicas out of sync",
            r->ndisagree > 0 ? "FAIL" : "PASS", r->nunits, r->compared,
            r->insync, r->out_of_sync);
    if (r->no_owner > 0)
        fprintf(f, ", %zu units without an owner", r->no_owner);
    if (r->compared == 0 && r->nunits > 0 && r->insync == r->nunits)
        fprintf(f, "; one replica per unit: nothing to compare");
    fprintf(f, ")\n");
    if (r->ndisagree > 0)
        fprintf(f, "  %zu of them differ across their in-sync replicas\n",
                r->ndisagree);
    for (k = 0; k < r->nunits && shown < max; k++) {
        const chaos_repl_unit *u = &r->units[k];
        if (!u->disagree)
            continue;
        shown++;
        fprintf(f, "  unit %s %u (epoch %llu, %s:%zu): in-sync replicas "
                   "differ\n",
                u->cap, u->shard, (unsigned long long)u->epoch, r->file,
                u->line);
        for (j = 0; j < u->ninsync; j++) {
            const chaos_repl_digest *d = digest_of(u, u->insync[j]);
            fprintf(f, "    %s%s: digest %016llx records %llu (line %zu)\n",
                    u->insync[j], j == 0 ? " (owner)" : "",
                    (unsigned long long)d->digest,
                    (unsigned long long)d->records, d->line);
        }
    }
    if (r->ndisagree > shown)
        fprintf(f, "  ... and %zu more\n", r->ndisagree - shown);
}
