#include "chaos/schedule.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"

static const char *const fault_names[CHAOS_F_COUNT] = {
    "kill", "stop", "zk", "controller", "drain", "join", "partition",
    "disk-full", "wipe", "zk-stop", "pair"};

static const char *const part_names[CHAOS_P_COUNT] = {
    "from-peers", "from-zk", "majority", "with-zk-server"};

const char *chaos_fault_name(chaos_fault_kind k)
{
    return (unsigned)k < CHAOS_F_COUNT ? fault_names[k] : "?";
}

const char *chaos_part_name(chaos_part_shape s)
{
    return (unsigned)s < CHAOS_P_COUNT ? part_names[s] : "?";
}

/* Sets bit k of *bits for each name of the comma-separated list that is
 * names[k]; an unknown one is refused naming what it is (what) and the
 * names taken (known). */
static int names_parse(const char *list, const char *const *names,
                       size_t count, unsigned *bits, const char *what,
                       const char *known, char *err, size_t errlen)
{
    const char *p = list;

    while (*p != '\0') {
        size_t n = strcspn(p, ","), k;

        for (k = 0; k < count; k++)
            if (strlen(names[k]) == n && memcmp(names[k], p, n) == 0)
                break;
        if (k == count) {
            if (errlen > 0)
                snprintf(err, errlen, "unknown %s '%.*s' (%s)", what, (int)n,
                         p, known);
            return KEEL_EINVAL;
        }
        *bits |= 1u << k;
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

int chaos_faults_parse(const char *list, unsigned *kinds, char *err,
                       size_t errlen)
{
    *kinds = 0;
    if (list != NULL && *list == '\0') {
        /* An unset variable in a script would otherwise make a run
         * without faults that passes. */
        snprintf(err, errlen, "--faults is empty: give fault kinds, all, "
                              "or none for a run without faults");
        return -1;
    }
    if (list == NULL || strcmp(list, "none") == 0)
        return 0;
    if (strcmp(list, "all") == 0) {
        *kinds = (1u << CHAOS_F_COUNT) - 1;
        return 0;
    }
    return names_parse(list, fault_names, CHAOS_F_COUNT, kinds, "fault",
                       "kill, stop, zk, controller, drain, join, partition, "
                       "disk-full, wipe, zk-stop, pair, all, none",
                       err, errlen);
}

int chaos_shapes_parse(const char *list, unsigned *shapes, char *err,
                       size_t errlen)
{
    *shapes = 0;
    if (list == NULL || *list == '\0' || strcmp(list, "all") == 0)
        return 0;
    return names_parse(list, part_names, CHAOS_P_COUNT, shapes,
                       "partition shape",
                       "from-peers, from-zk, majority, with-zk-server, all",
                       err, errlen);
}

void chaos_rng_seed(chaos_rng *r, uint64_t seed)
{
    r->s = seed;
}

uint64_t chaos_rng_next(chaos_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int64_t chaos_rng_range(chaos_rng *r, int64_t lo, int64_t hi)
{
    uint64_t span = (uint64_t)(hi - lo) + 1;

    if (span == 0) /* the whole range */
        return (int64_t)chaos_rng_next(r);
    return lo + (int64_t)(chaos_rng_next(r) % span);
}

/* How long a fault lasts, in ms. A stopped node stays stopped past its
 * session timeout, so that its session expires while it cannot know. */
static int64_t duration(chaos_rng *r, chaos_fault_kind k, int session_ms)
{
    switch (k) {
    case CHAOS_F_KILL:
    case CHAOS_F_CONTROLLER:
    case CHAOS_F_WIPE:
        return chaos_rng_range(r, 1000, 4000);
    case CHAOS_F_STOP:
        return session_ms * 3 / 2 + chaos_rng_range(r, 0, session_ms);
    case CHAOS_F_ZK:
        return chaos_rng_range(r, 1000, 6000);
    case CHAOS_F_ZKSTOP:
        /* From half a session timeout (the sessions live on) to two and
         * a half (every session has expired on the server's clock once
         * it runs again, and the nodes fenced themselves long before). */
        return chaos_rng_range(r, session_ms / 2, session_ms * 5 / 2);
    case CHAOS_F_DRAIN:
        return chaos_rng_range(r, 4000, 8000);
    case CHAOS_F_JOIN:
        return chaos_rng_range(r, 5000, 10000);
    case CHAOS_F_PARTITION:
    case CHAOS_F_DISKFULL:
    default:
        return chaos_rng_range(r, 3000, 8000);
    }
}

unsigned chaos_faults_possible(int nodes)
{
    unsigned all = (1u << CHAOS_F_COUNT) - 1;

    /* A pair needs a third node to serve while two are gone. */
    return nodes >= 3 ? all : all & ~(1u << CHAOS_F_PAIR);
}

int chaos_schedule_make(const chaos_sched_opts *o, chaos_fault **out,
                        size_t *n)
{
    chaos_fault *v = NULL;
    size_t cnt = 0, cap = 0;
    int kinds[CHAOS_F_COUNT], nkinds = 0, dealt, k;
    int shapes[CHAOS_P_COUNT], nshapes = 0;
    int ensemble = o->zk_servers == 3;
    int64_t t, end, margin;
    chaos_rng r;

    *out = NULL;
    *n = 0;
    if (o->nodes < 1 || o->seconds < 1)
        return KEEL_EINVAL;
    for (k = 0; k < CHAOS_F_COUNT; k++)
        if (o->kinds & chaos_faults_possible(o->nodes) & (1u << k))
            kinds[nkinds++] = k;
    /* with-zk-server needs an ensemble; the others come in the order of
     * their numbers, so that a schedule with one server is what it was
     * before that shape existed. */
    for (k = 0; k < CHAOS_P_COUNT; k++)
        if ((o->shapes == 0 || (o->shapes & (1u << k))) &&
            (k != CHAOS_P_WITH_ZK || ensemble))
            shapes[nshapes++] = k;
    if (nshapes == 0)
        return KEEL_EINVAL;
    if (nkinds == 0)
        return 0;
    /* The seed is mixed once, so that seeds 1, 2, 3 start far apart. */
    chaos_rng_seed(&r, o->seed ^ 0x6b65656c63686173ull);
    (void)chaos_rng_next(&r);
    dealt = nkinds;
    /* From a tenth of the run (at least 2 s: the clients get going) to
     * a tenth before its end (at least 3 s: the cluster settles). */
    t = o->seconds * 100 > 2000 ? o->seconds * 100 : 2000;
    margin = o->seconds * 100 > 3000 ? o->seconds * 100 : 3000;
    end = o->seconds * 1000 - margin;
    for (;;) {
        chaos_fault f;

        /* The kinds are dealt like cards from a deck shuffled anew each
         * round: every kind asked for comes once before any comes
         * twice, so a run long enough for a round has them all. */
        if (dealt == nkinds) {
            int j;
            for (j = nkinds - 1; j > 0; j--) {
                int x = (int)chaos_rng_range(&r, 0, j), tmp = kinds[j];
                kinds[j] = kinds[x];
                kinds[x] = tmp;
            }
            dealt = 0;
        }
        memset(&f, 0, sizeof f);
        f.kind = (chaos_fault_kind)kinds[dealt++];
        f.at_ms = t;
        f.dur_ms = duration(&r, f.kind, o->session_ms);
        f.node = (int)chaos_rng_range(&r, 0, o->nodes - 1);
        f.variant = shapes[chaos_rng_range(&r, 0, nshapes - 1)];
        if (f.kind == CHAOS_F_ZK || f.kind == CHAOS_F_CONTROLLER ||
            f.kind == CHAOS_F_JOIN || f.kind == CHAOS_F_ZKSTOP)
            f.node = -1;
        if (f.kind != CHAOS_F_PARTITION)
            f.variant = 0;
        /* In an ensemble, which server: one of them, or (one time in
         * four) whichever leads when the fault comes. */
        if (ensemble && (f.kind == CHAOS_F_ZK || f.kind == CHAOS_F_ZKSTOP ||
                         (f.kind == CHAOS_F_PARTITION &&
                          f.variant == CHAOS_P_WITH_ZK)))
            f.zk = (int)chaos_rng_range(&r, -1, 2);
        f.node2 = -1;
        if (f.kind == CHAOS_F_PAIR) {
            /* The second node goes while the first one's session still
             * runs, and stays stopped past its own session timeout: the
             * controller may promote it for the first one's units while
             * it cannot serve them. */
            f.node2 = (f.node + 1 +
                       (int)chaos_rng_range(&r, 0, o->nodes - 2)) %
                      o->nodes;
            f.gap_ms = chaos_rng_range(&r, 300, o->session_ms * 3 / 4);
            f.dur_ms = f.gap_ms + o->session_ms * 3 / 2 +
                       chaos_rng_range(&r, 0, o->session_ms / 2);
        }
        if (t + f.dur_ms > end)
            break;
        if (cnt == cap) {
            chaos_fault *nv;
            cap = cap ? cap * 2 : 16;
            nv = realloc(v, cap * sizeof *v);
            if (nv == NULL) {
                free(v);
                return KEEL_ENOMEM;
            }
            v = nv;
        }
        v[cnt++] = f;
        /* Time to recover before the next one. */
        t += f.dur_ms + chaos_rng_range(&r, 2000, 5000);
    }
    *out = v;
    *n = cnt;
    return 0;
}
