#include "actlog.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proc.h"

void tu_actlog_init(tu_actlog *a)
{
    memset(a, 0, sizeof *a);
}

void tu_actlog_free(tu_actlog *a)
{
    free(a->iv);
    memset(a, 0, sizeof *a);
}

unsigned long long tu_realtime_ns(void)
{
    struct timespec t;

    clock_gettime(CLOCK_REALTIME, &t);
    return (unsigned long long)t.tv_sec * 1000000000ull +
           (unsigned long long)t.tv_nsec;
}

static tu_interval *push(tu_actlog *a)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 4096;
        a->iv = realloc(a->iv, a->cap * sizeof *a->iv);
        ck_assert_ptr_nonnull(a->iv);
    }
    memset(&a->iv[a->n], 0, sizeof a->iv[a->n]);
    return &a->iv[a->n++];
}

void tu_actlog_parse(tu_actlog *a, const char *path, int node, size_t from,
                     size_t to, unsigned long long close_ns)
{
    char *text, *line, *save = NULL;
    size_t first = a->n, k;

    text = tu_read_file(path);
    ck_assert_msg(text != NULL, "cannot read %s", path);
    if (to != 0)
        text[to] = '\0';
    for (line = strtok_r(text + from, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        unsigned long long ns, epoch, since;
        char what[16], type[40], id[80], key[128];
        unsigned shard;
        int end = 0;

        /* The node's fence ("fenced since T", "serving"): these checks
         * read activations from activate to deactivate alone, which is
         * stricter than ending them at the fence. */
        if ((sscanf(line, "%llu fenced since %llu%n", &ns, &since, &end) ==
                 2 &&
             line[end] == '\0') ||
            (sscanf(line, "%llu serving%n", &ns, &end) == 1 &&
             line[end] == '\0'))
            continue;
        ck_assert_msg(sscanf(line, "%llu %15s %39s %79s shard %u epoch %llu",
                             &ns, what, type, id, &shard, &epoch) == 6,
                      "n%d: bad activation log line '%s'", node, line);
        snprintf(key, sizeof key, "%s/%s", type, id);
        if (strcmp(what, "activate") == 0) {
            tu_interval *iv;
            for (k = first; k < a->n; k++)
                ck_assert_msg(!(a->iv[k].end == 0 &&
                                strcmp(a->iv[k].key, key) == 0),
                              "n%d activated %s twice", node, key);
            iv = push(a);
            snprintf(iv->key, sizeof iv->key, "%s", key);
            iv->node = node;
            iv->start = ns;
            iv->epoch = epoch;
        } else {
            int found = 0;
            ck_assert_str_eq(what, "deactivate");
            for (k = first; k < a->n; k++)
                if (a->iv[k].end == 0 && strcmp(a->iv[k].key, key) == 0) {
                    a->iv[k].end = ns;
                    found = 1;
                    break;
                }
            ck_assert_msg(found, "n%d deactivated %s, never activated", node,
                          key);
        }
    }
    for (k = first; k < a->n; k++)
        if (a->iv[k].end == 0 && close_ns != 0)
            a->iv[k].end = close_ns;
    free(text);
}

static int cmp(const void *x, const void *y)
{
    const tu_interval *p = x, *q = y;
    int c = strcmp(p->key, q->key);

    if (c != 0)
        return c;
    return p->start < q->start ? -1 : p->start > q->start;
}

size_t tu_actlog_check(tu_actlog *a)
{
    size_t k, moved = 0;

    qsort(a->iv, a->n, sizeof *a->iv, cmp);
    for (k = 1; k < a->n; k++) {
        const tu_interval *p = &a->iv[k - 1], *q = &a->iv[k];
        if (strcmp(p->key, q->key) != 0)
            continue;
        ck_assert_msg(p->end != 0 && p->end <= q->start,
                      "%s active on n%d from %llu to %llu%s and on n%d from "
                      "%llu: overlapping activations (for %.3f s%s)",
                      p->key, p->node, p->start, p->end,
                      p->end ? "" : " (still active)", q->node, q->start,
                      ((double)(p->end ? p->end : tu_realtime_ns()) -
                       (double)q->start) / 1e9,
                      p->end ? "" : " so far");
        ck_assert_msg(q->epoch >= p->epoch,
                      "%s: epoch went back from %llu (n%d) to %llu (n%d)",
                      p->key, p->epoch, p->node, q->epoch, q->node);
        if (p->node != q->node)
            moved++;
    }
    return moved;
}
