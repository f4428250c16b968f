#include "chaos/report.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chaos/actlog.h"
#include "chaos/history.h"
#include "chaos/json.h"
#include "chaos/lin.h"
#include "chaos/lostwrite.h"
#include "keel.h"

/* What run.json, faults.jsonl and events.jsonl say, as far as the page
 * needs it. Strings live in the arena. */
typedef struct rfault {
    const char *kind, *shape, *node, *status, *note;
    int64_t start, end;
} rfault;

typedef struct revent {
    int64_t t;
    const char *node, *what;
} revent;

typedef struct rdata {
    chaos_arena arena;
    /* run.json */
    int have_meta;
    const chaos_json *meta;
    int64_t start_ns, end_ns, rt_off;
    const char **node_names;
    size_t nnode_names;
    int zk_lanes; /* 1 ("zk"), or 3 for an ensemble ("zk1".."zk3") */
    /* faults.jsonl, events.jsonl */
    rfault *faults;
    size_t nfaults;
    revent *events;
    size_t nevents;
    /* the history and the checks */
    chaos_history h;
    int have_lin, have_lost, have_act;
    chaos_lin_result lin;
    chaos_lost_result lost;
    chaos_actlog act;
    char *check_text;
    int check_rc;
    unsigned char *bad; /* per op: named by a violation */
    /* the time axis */
    int64_t t0, t1;
} rdata;

static char *path_in(const char *dir, const char *name)
{
    char *p;

    return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0, r;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (cap - n < 65536) {
            char *nb;
            cap = cap ? cap * 2 : 131072;
            nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
}

static const char *jstr(const chaos_json *o, const char *key)
{
    const chaos_json *v = o != NULL ? chaos_json_get(o, key) : NULL;

    return v != NULL && v->type == CHAOS_JSON_STR ? v->s : NULL;
}

static int64_t jint(const chaos_json *o, const char *key, int64_t dflt)
{
    const chaos_json *v = o != NULL ? chaos_json_get(o, key) : NULL;

    return v != NULL && v->type == CHAOS_JSON_INT ? v->i : dflt;
}

/* Calls fn for each line of dir/name that parses as a JSON object. */
static void each_line(rdata *d, const char *dir, const char *name,
                      void (*fn)(rdata *, const chaos_json *))
{
    char *p = path_in(dir, name), *text, *line, err[128];
    size_t len;

    if (p == NULL)
        return;
    text = slurp(p, &len);
    free(p);
    if (text == NULL)
        return;
    for (line = text; *line != '\0';) {
        char *nl = strchr(line, '\n');
        size_t n = nl != NULL ? (size_t)(nl - line) : strlen(line);
        chaos_json j;

        if (n > 0 && chaos_json_parse(line, n, &d->arena, &j, err,
                                      sizeof err) == 0 &&
            j.type == CHAOS_JSON_OBJECT) {
            chaos_json *keep = chaos_arena_alloc(&d->arena, sizeof *keep);
            if (keep != NULL) {
                *keep = j;
                fn(d, keep);
            }
        }
        line = nl != NULL ? nl + 1 : line + n;
    }
    free(text);
}

static void on_meta(rdata *d, const chaos_json *j)
{
    const chaos_json *names = chaos_json_get(j, "node_names");
    size_t k;

    d->have_meta = 1;
    d->meta = j;
    d->start_ns = jint(j, "start_ns", 0);
    d->end_ns = jint(j, "end_ns", 0);
    d->rt_off = jint(j, "realtime_minus_monotonic_ns", 0);
    d->zk_lanes = jint(j, "zk_servers", 1) == 3 ? 3 : 1;
    if (names != NULL && names->type == CHAOS_JSON_ARRAY) {
        d->node_names =
            chaos_arena_alloc(&d->arena, (names->n + 1) * sizeof(char *));
        if (d->node_names == NULL)
            return;
        for (k = 0; k < names->n; k++)
            if (names->items[k].type == CHAOS_JSON_STR)
                d->node_names[d->nnode_names++] = names->items[k].s;
    }
}

static void on_fault(rdata *d, const chaos_json *j)
{
    rfault *v = realloc(d->faults, (d->nfaults + 1) * sizeof *v), *f;

    if (v == NULL)
        return;
    d->faults = v;
    f = &v[d->nfaults++];
    f->kind = jstr(j, "fault");
    f->shape = jstr(j, "shape");
    f->node = jstr(j, "node");
    f->status = jstr(j, "status");
    f->note = jstr(j, "note");
    f->start = jint(j, "start_ns", 0);
    f->end = jint(j, "end_ns", 0);
    if (f->kind == NULL)
        f->kind = "?";
    if (f->status == NULL)
        f->status = "?";
}

static void on_event(rdata *d, const chaos_json *j)
{
    revent *v = realloc(d->events, (d->nevents + 1) * sizeof *v), *e;

    if (v == NULL)
        return;
    d->events = v;
    e = &v[d->nevents++];
    e->t = jint(j, "time_ns", 0);
    e->node = jstr(j, "node");
    e->what = jstr(j, "event");
    if (e->node == NULL)
        e->node = "?";
    if (e->what == NULL)
        e->what = "?";
}

/* ------------------------------------------------------------- output */

static void esc(FILE *f, const char *s)
{
    for (; s != NULL && *s != '\0'; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        case '\'':
            fputs("&#39;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

static void escn(FILE *f, const char *s, size_t n)
{
    char buf[512];

    while (n > 0) {
        size_t k = n < sizeof buf - 1 ? n : sizeof buf - 1;
        memcpy(buf, s, k);
        buf[k] = '\0';
        esc(f, buf);
        s += k;
        n -= k;
    }
}

static const char *css =
    "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}"
    "h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:28px 0 8px}"
    ".v{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;"
    "font-weight:600}"
    ".PASS{background:#2e8b3e}.FAIL{background:#c62828}"
    ".SKIPPED,.UNDECIDED,.BAD,.INCOMPLETE,.NOT{background:#8a6d00}"
    "table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left;"
    "border-bottom:1px solid #eee;vertical-align:top}"
    ".scroll{overflow-x:auto;border:1px solid #ddd;background:#fcfcfc}"
    "svg text{font:10px system-ui,sans-serif;fill:#444}"
    ".ok{fill:#3a9b4a}.fail{fill:#e07b39}.info{fill:#d4b400}"
    ".open{fill:#b0b0b0}.final{stroke:#222;stroke-width:.8}"
    ".bad{stroke:#c00;stroke-width:2.5;fill:#c00}"
    ".flash{animation:fl 1s 3}@keyframes fl{50%{opacity:.1}}"
    ".up{fill:#9fd3a7}.stopped{fill:#9b7fd1}.down{fill:#eee}"
    ".fw{fill:#e53935;fill-opacity:.09}.ov{fill:#c00}"
    ".legend span{display:inline-block;width:12px;height:10px;"
    "margin:0 4px 0 12px;vertical-align:middle}"
    "pre{background:#f6f6f6;padding:10px;overflow-x:auto;font-size:12px}"
    "li{margin:2px 0}a.op{cursor:pointer;color:#1565c0}"
    "details{margin:6px 0}.sum{color:#555}";

static const char *script =
    "document.querySelectorAll('a.op').forEach(function(a){"
    "a.addEventListener('click',function(ev){ev.preventDefault();"
    "var e=document.getElementById(a.dataset.op);if(!e)return;"
    "e.scrollIntoView({behavior:'smooth',block:'center',inline:'center'});"
    "e.classList.remove('flash');void e.getBBox();"
    "e.classList.add('flash');});});"
    "document.body.dataset.ready='1';";

/* The verdict of a check line ("linearizability: PASS (...)", "lost-writes:
 * BAD INPUT: ...", "lost-writes: not checked"): the words in capitals
 * after the colon, into word; the class for its colour into cls. */
static void verdict_word(const char *line, size_t n, char *word, size_t cap,
                         char *cls, size_t ccap)
{
    const char *p = memchr(line, ':', n), *end = line + n;
    size_t k = 0;

    snprintf(word, cap, "NOT CHECKED");
    snprintf(cls, ccap, "NOT");
    if (p == NULL || p + 2 > end)
        return;
    p += 2;
    if (end - p >= 9 && strncmp(p, "BAD INPUT", 9) == 0) {
        snprintf(word, cap, "BAD INPUT");
        snprintf(cls, ccap, "BAD");
        return;
    }
    while (p + k < end && k + 1 < cap && p[k] >= 'A' && p[k] <= 'Z')
        k++;
    if (k == 0)
        return;
    snprintf(word, cap, "%.*s", (int)k, p);
    snprintf(cls, ccap, "%.*s", (int)k, p);
}

static void verdicts(FILE *f, const rdata *d)
{
    static const char *const names[] = {"linearizability", "lost-writes",
                                        "at-most-one-activation",
                                        "replicas-agree"};
    const char *t = d->check_text != NULL ? d->check_text : "";
    size_t k;

    fputs("<table class=checks>", f);
    for (k = 0; k < sizeof names / sizeof *names; k++) {
        size_t nl = strlen(names[k]);
        const char *p = t;
        while (p != NULL && *p != '\0') {
            const char *e = strchr(p, '\n');
            size_t n = e != NULL ? (size_t)(e - p) : strlen(p);
            if (n > nl + 2 && strncmp(p, names[k], nl) == 0 && p[nl] == ':') {
                char w[32], cls[16];
                verdict_word(p, n, w, sizeof w, cls, sizeof cls);
                fprintf(f, "<tr><th>%s</th><td><span class='v %s'>", names[k],
                        cls);
                esc(f, w);
                fputs("</span></td><td>", f);
                escn(f, p + nl + 2, n - nl - 2);
                fputs("</td></tr>", f);
                break;
            }
            p = e != NULL ? e + 1 : NULL;
        }
    }
    fputs("</table>", f);
}

static double X(const rdata *d, double width, int64_t t)
{
    double span = (double)(d->t1 - d->t0);

    if (t < d->t0)
        t = d->t0;
    if (t > d->t1)
        t = d->t1;
    return 100.0 + (double)(t - d->t0) * width / (span > 0 ? span : 1);
}

/* A step for ticks: 1, 2, 5 times a power of ten seconds, about n of
 * them across span. */
static double nice_step(double span_s, int n)
{
    double raw = span_s / n, p = 1e-3;

    while (p * 10 <= raw)
        p *= 10;
    if (raw <= p)
        return p;
    if (raw <= 2 * p)
        return 2 * p;
    if (raw <= 5 * p)
        return 5 * p;
    return 10 * p;
}

static void axis(FILE *f, const rdata *d, double width, double y, double h)
{
    double span = (double)(d->t1 - d->t0) / 1e9, step = nice_step(span, 12);
    double s;

    for (s = 0; s <= span + 1e-9; s += step) {
        double x = 100.0 + s * width / (span > 0 ? span : 1);
        fprintf(f,
                "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' "
                "stroke='#ddd'/><text x='%.1f' y='%.1f' "
                "text-anchor='middle'>%g s</text>",
                x, y, x, y + h, x, y + h + 11, s);
    }
}

/* The name of ZooKeeper lane k (after the nodes' lanes). */
static const char *zk_lane_name(const rdata *d, size_t k)
{
    static const char *const names[3] = {"zk1", "zk2", "zk3"};

    return d->zk_lanes == 3 && k < 3 ? names[k] : "zk";
}

/* The lane of a node name, or -1. */
static int node_lane(const rdata *d, const char *name)
{
    size_t k;

    for (k = 0; k < d->nnode_names; k++)
        if (strcmp(d->node_names[k], name) == 0)
            return (int)k;
    for (k = 0; k < (size_t)d->zk_lanes; k++)
        if (strcmp(name, zk_lane_name(d, k)) == 0)
            return (int)(d->nnode_names + k);
    return -1;
}

static void state_bar(FILE *f, const rdata *d, double width, double y,
                      double lh, int state, int64_t from, int64_t to)
{
    double x1, x2;

    if (state == 0 || to <= from || to <= d->t0)
        return;
    x1 = X(d, width, from);
    x2 = X(d, width, to);
    fprintf(f, "<rect class='%s' x='%.1f' y='%.1f' width='%.1f' height='%.1f'/>",
            state == 1 ? "up" : "stopped", x1, y + 2,
            x2 - x1 > 0.5 ? x2 - x1 : 0.5, lh - 4);
}

/* A lane per node and one per ZooKeeper server: up (green) or stopped
 * (purple) from events.jsonl, a triangle at each thing done to it. */
static void node_lanes(FILE *f, const rdata *d, double width, double y0,
                       double lh)
{
    size_t lanes = d->nnode_names + (size_t)d->zk_lanes, k, e;

    for (k = 0; k < lanes; k++) {
        const char *name = k < d->nnode_names
                               ? d->node_names[k]
                               : zk_lane_name(d, k - d->nnode_names);
        double y = y0 + (double)k * lh;
        int state = 0; /* 0 down, 1 up, 2 stopped */
        int64_t since = d->t0;

        fprintf(f, "<text x='4' y='%.1f'>", y + lh - 3);
        esc(f, name);
        fputs("</text>", f);
        for (e = 0; e < d->nevents; e++) {
            const revent *ev = &d->events[e];
            int next = state;

            if (strcmp(ev->node, name) != 0)
                continue;
            if (strcmp(ev->what, "start") == 0 ||
                strcmp(ev->what, "sigcont") == 0)
                next = 1;
            else if (strcmp(ev->what, "sigstop") == 0)
                next = 2;
            else if (strcmp(ev->what, "kill") == 0 ||
                     strcmp(ev->what, "exit") == 0)
                next = 0;
            state_bar(f, d, width, y, lh, state, since, ev->t);
            if (ev->t > since)
                since = ev->t;
            state = next;
            if (ev->t >= d->t0 && ev->t <= d->t1 &&
                strcmp(ev->what, "start") != 0) {
                double x = X(d, width, ev->t);
                fprintf(f, "<path d='M%.1f %.1fl-3.5 -6h7z' fill='#333'><title>",
                        x, y + 7);
                esc(f, name);
                fputc(' ', f);
                esc(f, ev->what);
                fprintf(f, " at %+.3f s</title></path>",
                        (double)(ev->t - d->t0) / 1e9);
            }
        }
        state_bar(f, d, width, y, lh, state, since, d->t1);
    }
}

/* The activation findings on the node lanes: a red bar over the time two
 * nodes both held an actor. */
static void overlaps(FILE *f, const rdata *d, double width, double y0,
                     double lh)
{
    size_t k;

    if (!d->have_act || !d->have_meta)
        return;
    for (k = 0; k < d->act.nfound; k++) {
        const chaos_act_finding *fd = &d->act.found[k];
        const chaos_act_iv *a = &d->act.iv[fd->a], *b = &d->act.iv[fd->b];
        int64_t s = (int64_t)b->start - d->rt_off;
        uint64_t e_rt = a->end < b->end ? a->end : b->end;
        int64_t e = e_rt == CHAOS_ACT_OPEN ? d->t1 : (int64_t)e_rt - d->rt_off;
        const chaos_act_iv *ivs[2] = {a, b};
        int j;

        if (fd->kind != CHAOS_ACT_OVERLAP)
            s = (int64_t)b->start - d->rt_off, e = s;
        for (j = 0; j < 2; j++) {
            int lane = node_lane(d, ivs[j]->node);
            double x1 = X(d, width, s), x2 = X(d, width, e);
            if (lane < 0)
                continue;
            /* A band under the lane's state bar, which stays visible. */
            fprintf(f,
                    "<rect class='ov' id='act%zu%c' x='%.1f' y='%.1f' "
                    "width='%.1f' height='4'><title>",
                    k, 'a' + j, x1, y0 + lane * lh + lh - 4,
                    x2 - x1 > 3 ? x2 - x1 : 3);
            esc(f, a->actor);
            fprintf(f, " %s (%s and %s)</title></rect>",
                    fd->kind == CHAOS_ACT_OVERLAP
                        ? "active on two nodes at once"
                        : fd->kind == CHAOS_ACT_TWICE ? "activated twice"
                                                      : "epoch went back",
                    a->node, b->node);
        }
    }
}

static void op_title(FILE *f, const rdata *d, const chaos_op *op)
{
    chaos_buf b;

    chaos_buf_init(&b);
    chaos_buf_puts(&b, d->h.actors[op->actor].name);
    chaos_buf_puts(&b, ": ");
    chaos_op_describe(&d->h, op, &b);
    if (op->node != NULL)
        chaos_buf_printf(&b, " via %s", op->node);
    if (op->completed)
        chaos_buf_printf(&b, ", %.1f ms",
                         (double)(op->complete_ns - op->invoke_ns) / 1e6);
    if (!b.oom)
        esc(f, b.p);
    chaos_buf_free(&b);
}

static void timeline(FILE *f, rdata *d)
{
    size_t nlanes_nodes =
        d->have_meta ? d->nnode_names + (size_t)d->zk_lanes : 0, k;
    int64_t maxc = -1, *lane_of;
    size_t nclients = 0;
    double span_s = (double)(d->t1 - d->t0) / 1e9;
    double width = span_s * 25 < 1200 ? 1200 : span_s * 25;
    double nlh = 14, clh, y_nodes = 18, y_clients, height;

    if (width > 30000)
        width = 30000;
    for (k = 0; k < d->h.nops; k++)
        if (d->h.ops[k].client > maxc)
            maxc = d->h.ops[k].client;
    /* Client ids may be sparse: a lane per id used, in order. */
    lane_of = calloc((size_t)(maxc + 1 > 0 ? maxc + 1 : 1), sizeof *lane_of);
    if (lane_of == NULL)
        return;
    for (k = 0; k < d->h.nops; k++)
        lane_of[d->h.ops[k].client] = 1;
    for (k = 0; k < (size_t)(maxc + 1); k++)
        lane_of[k] = lane_of[k] ? (int64_t)nclients++ : -1;
    clh = nclients > 64 ? 6 : 11;
    y_clients = y_nodes + (double)nlanes_nodes * nlh + 10;
    height = y_clients + (double)nclients * clh + 20;

    fprintf(f, "<div class=scroll><svg xmlns='http://www.w3.org/2000/svg' "
               "width='%.0f' height='%.0f'>",
            width + 120, height);
    axis(f, d, width, 12, height - 30);
    /* Fault windows, across every lane. */
    for (k = 0; k < d->nfaults; k++) {
        const rfault *fl = &d->faults[k];
        double x1, x2;
        if (strcmp(fl->status, "skipped") == 0 || fl->end <= fl->start)
            continue;
        x1 = X(d, width, fl->start);
        x2 = X(d, width, fl->end);
        fprintf(f,
                "<rect class='fw' x='%.1f' y='14' width='%.1f' "
                "height='%.1f'><title>",
                x1, x2 - x1 > 1 ? x2 - x1 : 1, height - 34);
        esc(f, fl->kind);
        if (fl->shape != NULL) {
            fputc(' ', f);
            esc(f, fl->shape);
        }
        if (fl->node != NULL && fl->node[0] != '\0') {
            fputc(' ', f);
            esc(f, fl->node);
        }
        fprintf(f, " from %+.3f s to %+.3f s", (double)(fl->start - d->t0) / 1e9,
                (double)(fl->end - d->t0) / 1e9);
        if (fl->note != NULL && fl->note[0] != '\0') {
            fputs(": ", f);
            esc(f, fl->note);
        }
        fprintf(f, "</title></rect><text x='%.1f' y='%.1f'>", x1 + 2,
                height - 22);
        esc(f, fl->kind);
        if (fl->node != NULL && fl->node[0] != '\0' &&
            strcmp(fl->node, "zk") != 0) {
            fputc(' ', f);
            esc(f, fl->node);
        }
        fputs("</text>", f);
    }
    if (nlanes_nodes > 0) {
        node_lanes(f, d, width, y_nodes, nlh);
        overlaps(f, d, width, y_nodes, nlh);
    }
    for (k = 0; k < (size_t)(maxc + 1); k++)
        if (lane_of[k] >= 0 && (clh >= 10 || k % 4 == 0))
            fprintf(f, "<text x='4' y='%.1f'>client %zu</text>",
                    y_clients + (double)lane_of[k] * clh + clh - 2, k);
    /* The operations: the ones a violation names last, on top. */
    {
        int pass;
        for (pass = 0; pass < 2; pass++)
            for (k = 0; k < d->h.nops; k++) {
                const chaos_op *op = &d->h.ops[k];
                int bad = d->bad != NULL && d->bad[k];
                double x1, x2, y;
                const char *cls;
                if (bad != pass)
                    continue;
                x1 = X(d, width, op->invoke_ns);
                x2 = X(d, width, op->completed ? op->complete_ns : d->t1);
                y = y_clients + (double)lane_of[op->client] * clh + 1;
                cls = !op->completed ? "open"
                      : op->outcome == CHAOS_OK   ? "ok"
                      : op->outcome == CHAOS_FAIL ? "fail"
                                                  : "info";
                fprintf(f,
                        "<rect id='op%zu' class='%s%s%s' x='%.2f' y='%.1f' "
                        "width='%.2f' height='%.1f'><title>",
                        k, cls, op->final ? " final" : "", bad ? " bad" : "",
                        x1, y, x2 - x1 > 1 ? x2 - x1 : 1, clh - 2);
                op_title(f, d, op);
                fputs("</title></rect>", f);
            }
    }
    fputs("</svg></div>", f);
    fputs("<p class=legend><span style='background:#3a9b4a'></span>ok"
          "<span style='background:#e07b39'></span>fail (did not happen)"
          "<span style='background:#d4b400'></span>info (unknown)"
          "<span style='background:#b0b0b0'></span>no completion"
          "<span style='background:#fff;border:1px solid #222'></span>final "
          "read<span style='background:#c00'></span>named by a violation"
          "<span style='background:#fbe3e3'></span>fault window"
          "<span style='background:#9fd3a7'></span>node up"
          "<span style='background:#9b7fd1'></span>stopped"
          "<span style='background:#c00;height:4px'></span>two activations "
          "at once</p>",
          f);
    fputs("<p>Hover over a bar for the operation, its lines in "
          "history.jsonl, its node and its latency; over a triangle for what "
          "was done to a node.</p>",
          f);
    free(lane_of);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

static void charts(FILE *f, const rdata *d)
{
    double span_s = (double)(d->t1 - d->t0) / 1e9;
    double step = nice_step(span_s, 60), width = 900, h = 150;
    size_t nb = (size_t)(span_s / step) + 1, k, b;
    size_t (*cnt)[3] = calloc(nb, sizeof *cnt);
    int64_t **lat = calloc(nb, sizeof *lat);
    size_t *nlat = calloc(nb, sizeof *nlat), *caplat = calloc(nb, sizeof *caplat);
    double *med = calloc(nb, sizeof *med), *mx = calloc(nb, sizeof *mx);
    size_t maxc = 1;
    double maxl = 1;

    if (cnt == NULL || lat == NULL || nlat == NULL || caplat == NULL ||
        med == NULL || mx == NULL)
        goto out;
    for (k = 0; k < d->h.nops; k++) {
        const chaos_op *op = &d->h.ops[k];
        size_t i;
        if (!op->completed || op->complete_ns < d->t0)
            continue;
        b = (size_t)((double)(op->complete_ns - d->t0) / 1e9 / step);
        if (b >= nb)
            b = nb - 1;
        i = op->outcome == CHAOS_OK ? 0 : op->outcome == CHAOS_FAIL ? 1 : 2;
        cnt[b][i]++;
        if (op->outcome == CHAOS_OK) {
            if (nlat[b] == caplat[b]) {
                size_t c = caplat[b] ? caplat[b] * 2 : 16;
                int64_t *v = realloc(lat[b], c * sizeof *v);
                if (v == NULL)
                    continue;
                lat[b] = v;
                caplat[b] = c;
            }
            lat[b][nlat[b]++] = op->complete_ns - op->invoke_ns;
        }
    }
    for (b = 0; b < nb; b++) {
        size_t t = cnt[b][0] + cnt[b][1] + cnt[b][2];
        if (t > maxc)
            maxc = t;
        if (nlat[b] > 0) {
            qsort(lat[b], nlat[b], sizeof *lat[b], cmp_i64);
            med[b] = (double)lat[b][nlat[b] / 2] / 1e6;
            mx[b] = (double)lat[b][nlat[b] - 1] / 1e6;
            if (mx[b] > maxl)
                maxl = mx[b];
        }
    }

    /* Throughput: stacked bars per interval. */
    fprintf(f, "<p>Completions per %g s, by outcome (ok, fail, info); fault "
               "windows shaded.</p>",
            step);
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' "
               "height='%.0f'>",
            width + 120, h + 30);
    for (k = 0; k < d->nfaults; k++) {
        const rfault *fl = &d->faults[k];
        double x1 = 60 + (double)(fl->start - d->t0) / 1e9 / span_s * width;
        double x2 = 60 + (double)(fl->end - d->t0) / 1e9 / span_s * width;
        if (strcmp(fl->status, "skipped") != 0 && fl->end > fl->start)
            fprintf(f,
                    "<rect class='fw' x='%.1f' y='0' width='%.1f' "
                    "height='%.0f'/>",
                    x1, x2 - x1, h);
    }
    for (b = 0; b < nb; b++) {
        double x = 60 + (double)b * step / span_s * width;
        double bw = step / span_s * width, y = h;
        int i;
        for (i = 0; i < 3; i++) {
            double bh = (double)cnt[b][i] / (double)maxc * (h - 10);
            static const char *const cls[] = {"ok", "fail", "info"};
            if (cnt[b][i] == 0)
                continue;
            y -= bh;
            fprintf(f,
                    "<rect class='%s' x='%.1f' y='%.1f' width='%.1f' "
                    "height='%.1f'><title>%+g s: %zu %s</title></rect>",
                    cls[i], x, y, bw > 1.5 ? bw - 0.5 : bw, bh,
                    (double)b * step, cnt[b][i], cls[i]);
        }
    }
    fprintf(f,
            "<text x='2' y='12'>%zu</text><text x='2' y='%.0f'>0</text>"
            "<text x='60' y='%.0f'>0 s</text><text x='%.0f' y='%.0f' "
            "text-anchor='end'>%.0f s</text></svg>",
            maxc, h, h + 14, 60 + width, h + 14, span_s);

    /* Latency: median and maximum of the ok operations. */
    fprintf(f, "<p>Latency of the ok operations completed in each %g s: "
               "median (dark) and maximum (light), in ms.</p>",
            step);
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' "
               "height='%.0f'>",
            width + 120, h + 30);
    for (k = 0; k < d->nfaults; k++) {
        const rfault *fl = &d->faults[k];
        double x1 = 60 + (double)(fl->start - d->t0) / 1e9 / span_s * width;
        double x2 = 60 + (double)(fl->end - d->t0) / 1e9 / span_s * width;
        if (strcmp(fl->status, "skipped") != 0 && fl->end > fl->start)
            fprintf(f,
                    "<rect class='fw' x='%.1f' y='0' width='%.1f' "
                    "height='%.0f'/>",
                    x1, x2 - x1, h);
    }
    {
        int i;
        for (i = 0; i < 2; i++) {
            double *v = i == 0 ? mx : med;
            fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='1.5' "
                       "points='",
                    i == 0 ? "#90caf9" : "#1565c0");
            for (b = 0; b < nb; b++)
                if (nlat[b] > 0)
                    fprintf(f, "%.1f,%.1f ",
                            60 + ((double)b + 0.5) * step / span_s * width,
                            h - v[b] / maxl * (h - 10));
            fputs("'/>", f);
        }
    }
    fprintf(f,
            "<text x='2' y='12'>%.0f ms</text><text x='2' y='%.0f'>0</text>"
            "<text x='60' y='%.0f'>0 s</text><text x='%.0f' y='%.0f' "
            "text-anchor='end'>%.0f s</text></svg>",
            maxl, h, h + 14, 60 + width, h + 14, span_s);
out:
    if (lat != NULL)
        for (b = 0; b < nb; b++)
            free(lat[b]);
    free(lat);
    free(nlat);
    free(caplat);
    free(cnt);
    free(med);
    free(mx);
}

/* An operation as a link to it on the timeline, and a note after it
 * (NULL: none). */
static void op_link_note(FILE *f, const rdata *d, size_t k, const char *note)
{
    fprintf(f, "<li><a class=op data-op='op%zu'>", k);
    op_title(f, d, &d->h.ops[k]);
    fputs("</a>", f);
    if (note != NULL) {
        fputs(": ", f);
        esc(f, note);
    }
    fputs("</li>", f);
}

static void op_link(FILE *f, const rdata *d, size_t k)
{
    op_link_note(f, d, k, NULL);
}

static void mark(rdata *d, size_t op)
{
    if (d->bad != NULL && op < d->h.nops)
        d->bad[op] = 1;
}

static void mark_violations(rdata *d)
{
    size_t k, j;

    if (d->h.nops == 0 || (d->bad = calloc(d->h.nops, 1)) == NULL)
        return;
    if (d->have_lin)
        for (k = 0; k < d->lin.nactors; k++) {
            const chaos_lin_actor *a = &d->lin.actors[k];
            if (a->verdict != CHAOS_LIN_VIOLATION)
                continue;
            mark(d, a->stuck);
            mark(d, a->prefix_end);
            for (j = 0; j < a->npending; j++)
                mark(d, a->pending[j]);
        }
    if (d->have_lost)
        for (k = 0; k < d->lost.nfound; k++) {
            mark(d, d->lost.found[k].final_op);
            if (d->lost.found[k].write_op != SIZE_MAX)
                mark(d, d->lost.found[k].write_op);
        }
}

static void violations(FILE *f, const rdata *d)
{
    size_t k, j, shown = 0;
    int any = (d->have_lin && d->lin.violations > 0) ||
              (d->have_lost && d->lost.nfound > 0) ||
              (d->have_act && d->act.nfound > 0);

    if (!any)
        return;
    fputs("<h2>Violations</h2><p>Each operation below is outlined in red on "
          "the timeline; click one to find it there.</p>",
          f);
    if (d->have_lin)
        for (k = 0; k < d->lin.nactors && shown < 20; k++) {
            const chaos_lin_actor *a = &d->lin.actors[k];
            if (a->verdict != CHAOS_LIN_VIOLATION)
                continue;
            fprintf(f, "<details%s><summary><b>", shown < 3 ? " open" : "");
            shown++;
            esc(f, d->h.actors[a->actor].name);
            fputs(": not linearizable</b></summary><p>The search of its "
                  "shortest failing prefix got stuck at the completion of"
                  "</p><ul>",
                  f);
            op_link(f, d, a->stuck);
            fputs("</ul>", f);
            if (a->state != NULL) {
                fputs("<p>after its longest linearization (", f);
                fprintf(f, "%zu operations) the state is ", a->norder);
                esc(f, a->state);
                fputs("; none of these could come next:</p><ul>", f);
                for (j = 0; j < a->npending && j < 30; j++)
                    op_link_note(f, d, a->pending[j],
                                 a->why != NULL ? a->why[j] : NULL);
                fputs("</ul>", f);
            }
            fputs("</details>", f);
        }
    if (d->have_lost)
        for (k = 0; k < d->lost.nfound && k < 20; k++) {
            const chaos_lost_finding *lf = &d->lost.found[k];
            fprintf(f, "<details%s><summary><b>", k < 3 ? " open" : "");
            esc(f, d->h.actors[lf->actor].name);
            fputs(": the final read does not hold what was acknowledged</b>"
                  "</summary><pre>",
                  f);
            esc(f, lf->msg);
            fputs("</pre><ul>", f);
            op_link(f, d, lf->final_op);
            if (lf->write_op != SIZE_MAX)
                op_link(f, d, lf->write_op);
            fputs("</ul></details>", f);
        }
    if (d->have_act && d->act.nfound > 0) {
        fputs("<details open><summary><b>At most one activation</b>"
              "</summary><ul>",
              f);
        for (k = 0; k < d->act.nfound && k < 20; k++) {
            const chaos_act_finding *fd = &d->act.found[k];
            const chaos_act_iv *a = &d->act.iv[fd->a], *b = &d->act.iv[fd->b];
            fprintf(f, "<li><a class=op data-op='act%zua'>", k);
            esc(f, a->actor);
            fprintf(f, ": %s, on %s (%s:%zu) and %s (%s:%zu)</a></li>",
                    fd->kind == CHAOS_ACT_OVERLAP
                        ? "active on two nodes at once"
                        : fd->kind == CHAOS_ACT_TWICE ? "activated twice"
                                                      : "shard epoch went back",
                    a->node, a->file, a->start_line, b->node, b->file,
                    b->start_line);
        }
        fputs("</ul></details>", f);
    }
}

static void meta_table(FILE *f, const rdata *d, const char *dir)
{
    static const char *const keys[] = {
        "seed", "nodes", "replicas", "zk_servers", "clients", "actors",
        "workload", "workload_type", "load", "faults", "seconds", "rate",
        "shards", "session_ms",
        "replica_dead_ms", "cluster", "settled",
        "final_reads_ok", "unreadable_replies", "stray_exits"};
    size_t k;

    fputs("<table>", f);
    fputs("<tr><th>directory</th><td>", f);
    esc(f, dir);
    fputs("</td></tr>", f);
    if (d->have_meta)
        for (k = 0; k < sizeof keys / sizeof *keys; k++) {
            const chaos_json *v = chaos_json_get(d->meta, keys[k]);
            if (v == NULL)
                continue;
            fprintf(f, "<tr><th>%s</th><td>", keys[k]);
            if (v->type == CHAOS_JSON_STR)
                esc(f, v->s);
            else if (v->type == CHAOS_JSON_INT)
                fprintf(f, "%lld", (long long)v->i);
            else if (v->type == CHAOS_JSON_BOOL)
                fputs(v->b ? "yes" : "no", f);
            fputs("</td></tr>", f);
        }
    {
        size_t ok = 0, fl = 0, in = 0, op = 0;
        for (k = 0; k < d->h.nops; k++) {
            const chaos_op *o = &d->h.ops[k];
            if (!o->completed)
                op++;
            else if (o->outcome == CHAOS_OK)
                ok++;
            else if (o->outcome == CHAOS_FAIL)
                fl++;
            else
                in++;
        }
        fprintf(f,
                "<tr><th>operations</th><td>%zu: %zu ok, %zu fail, %zu info, "
                "%zu without completion, on %zu actors</td></tr>",
                d->h.nops, ok, fl, in, op, d->h.nactors);
    }
    {
        size_t done = 0;
        for (k = 0; k < d->nfaults; k++)
            done += strcmp(d->faults[k].status, "skipped") != 0;
        fprintf(f, "<tr><th>faults</th><td>%zu made, %zu skipped</td></tr>",
                done, d->nfaults - done);
    }
    fputs("</table>", f);
}

/* One line under the verdicts: what ran, how many operations, faults. */
static void summary(FILE *f, const rdata *d, const char *dir)
{
    size_t k, ok = 0, fl = 0, in = 0, done = 0;

    for (k = 0; k < d->h.nops; k++) {
        const chaos_op *o = &d->h.ops[k];
        if (o->completed && o->outcome == CHAOS_OK)
            ok++;
        else if (o->completed && o->outcome == CHAOS_FAIL)
            fl++;
        else
            in++;
    }
    for (k = 0; k < d->nfaults; k++)
        done += strcmp(d->faults[k].status, "skipped") != 0;
    fputs("<p class=sum>", f);
    esc(f, dir);
    if (d->have_meta)
        fprintf(f, ": seed %lld, %lld nodes, %lld clients, %lld %s actors, "
                   "faults %s",
                (long long)jint(d->meta, "seed", 0),
                (long long)jint(d->meta, "nodes", 0),
                (long long)jint(d->meta, "clients", 0),
                (long long)jint(d->meta, "actors", 0),
                jstr(d->meta, "workload") ? jstr(d->meta, "workload") : "?",
                jstr(d->meta, "faults") ? jstr(d->meta, "faults") : "?");
    fprintf(f, ". %zu operations: %zu ok, %zu fail, %zu info or unfinished. "
               "%zu faults made",
            d->h.nops, ok, fl, in, done);
    if (d->nfaults > done)
        fprintf(f, ", %zu skipped", d->nfaults - done);
    fputs(".</p>", f);
}

static void faults_table(FILE *f, const rdata *d)
{
    size_t k;

    if (d->nfaults == 0)
        return;
    fputs("<h2>Faults</h2><table><tr><th>fault</th><th>node</th>"
          "<th>from</th><th>to</th><th>status</th><th>note</th></tr>",
          f);
    for (k = 0; k < d->nfaults; k++) {
        const rfault *fl = &d->faults[k];
        fputs("<tr><td>", f);
        esc(f, fl->kind);
        if (fl->shape != NULL) {
            fputc(' ', f);
            esc(f, fl->shape);
        }
        fputs("</td><td>", f);
        esc(f, fl->node);
        fprintf(f, "</td><td>%+.1f s</td><td>%+.1f s</td><td>",
                (double)(fl->start - d->t0) / 1e9,
                (double)(fl->end - d->t0) / 1e9);
        esc(f, fl->status);
        fputs("</td><td>", f);
        esc(f, fl->note);
        fputs("</td></tr>", f);
    }
    fputs("</table>", f);
}

/* ---------------------------------------------------------------- page */

static void rdata_free(rdata *d)
{
    if (d->have_lin)
        chaos_lin_result_free(&d->lin);
    if (d->have_lost)
        chaos_lost_result_free(&d->lost);
    chaos_actlog_free(&d->act);
    chaos_history_free(&d->h);
    chaos_arena_free(&d->arena);
    free(d->faults);
    free(d->events);
    free(d->check_text);
    free(d->bad);
}

/* The checks' text and results: done's (a run that checked already), or
 * from checking dir once here. */
static void load_checks(rdata *d, const char *dir, const chaos_check_opts *o,
                        chaos_report_checks *done)
{
    chaos_check_kept kept;
    char *p, msg[256];
    size_t len = 0;

    memset(&kept, 0, sizeof kept);
    if (done != NULL) {
        d->check_text = strdup(done->text != NULL ? done->text : "");
        d->check_rc = done->rc;
        if (done->kept != NULL) {
            kept = *done->kept;
            memset(done->kept, 0, sizeof *done->kept);
        }
    } else {
        FILE *mem = open_memstream(&d->check_text, &len);
        if (mem != NULL) {
            d->check_rc = chaos_check_dir_kept(dir, o, mem, NULL, &kept);
            fclose(mem);
        }
    }
    d->have_lin = kept.have_lin;
    if (d->have_lin)
        d->lin = kept.lin;
    d->have_lost = kept.have_lost;
    if (d->have_lost)
        d->lost = kept.lost;
    p = path_in(dir, "actlogs");
    if (p != NULL && access(p, R_OK) == 0 &&
        chaos_actlog_read_dir(&d->act, p, msg, sizeof msg) == 0 &&
        chaos_actlog_check(&d->act) == 0)
        d->have_act = 1;
    free(p);
}

static int report_html(const char *dir, const chaos_check_opts *o, FILE *f,
                       FILE *err, chaos_report_checks *done)
{
    rdata d;
    chaos_check_opts def;
    char *p, msg[512];
    const char *verdict = "?";
    int rc;
    size_t k;

    if (o == NULL) {
        chaos_check_opts_init(&def);
        o = &def;
    }
    memset(&d, 0, sizeof d);
    chaos_arena_init(&d.arena);
    chaos_history_init(&d.h);
    chaos_actlog_init(&d.act); /* load_checks reads into it */
    p = path_in(dir, "history.jsonl");
    rc = p != NULL ? chaos_history_read(&d.h, p, msg, sizeof msg)
                   : KEEL_ENOMEM;
    free(p);
    if (rc != 0) {
        if (err != NULL)
            fprintf(err, "keel-chaos: report: %s\n",
                    rc == KEEL_ENOMEM ? "out of memory" : msg);
        rdata_free(&d);
        return rc;
    }
    each_line(&d, dir, "run.json", on_meta);
    each_line(&d, dir, "faults.jsonl", on_fault);
    each_line(&d, dir, "events.jsonl", on_event);
    load_checks(&d, dir, o, done);
    mark_violations(&d);

    /* The time axis: from the clients' start (or the first operation)
     * to the last thing recorded. */
    d.t0 = d.have_meta && d.start_ns > 0 ? d.start_ns
           : d.h.nops > 0                 ? d.h.ops[0].invoke_ns
                                          : 0;
    d.t1 = d.h.last_ns;
    if (d.end_ns > d.t1)
        d.t1 = d.end_ns;
    for (k = 0; k < d.nfaults; k++)
        if (d.faults[k].end > d.t1)
            d.t1 = d.faults[k].end;
    for (k = 0; k < d.nevents; k++)
        if (d.events[k].t > d.t1 && strcmp(d.events[k].what, "kill") != 0)
            d.t1 = d.events[k].t;
    if (d.t1 <= d.t0)
        d.t1 = d.t0 + 1000000000;

    switch (d.check_rc) {
    case CHAOS_EXIT_PASS:
        verdict = "PASS";
        break;
    case CHAOS_EXIT_VIOLATION:
        verdict = "FAIL";
        break;
    case CHAOS_EXIT_UNDECIDED:
        verdict = "UNDECIDED";
        break;
    default:
        verdict = chaos_run_unfinished(dir) ? "INCOMPLETE" : "BAD";
        break;
    }

    fputs("<!doctype html><html lang=en><head><meta charset='utf-8'>"
          "<title>keel-chaos: ",
          f);
    esc(f, verdict);
    fputs(" — ", f);
    esc(f, dir);
    fprintf(f, "</title><style>%s</style></head><body>", css);
    fprintf(f, "<h1>keel-chaos run <span class='v %s' id=verdict>%s</span>"
               "</h1>",
            verdict, verdict);
    verdicts(f, &d);
    summary(f, &d, dir);
    fputs("<h2>Timeline</h2>", f);
    timeline(f, &d);
    fputs("<h2>Throughput and latency</h2>", f);
    charts(f, &d);
    violations(f, &d);
    faults_table(f, &d);
    fputs("<h2>The run</h2>", f);
    meta_table(f, &d, dir);
    fputs("<h2>keel-chaos check</h2><pre>", f);
    esc(f, d.check_text);
    fputs("</pre>", f);
    fprintf(f, "<script>%s</script></body></html>\n", script);
    rdata_free(&d);
    return ferror(f) ? KEEL_EIO : 0;
}

int chaos_report_html(const char *dir, const chaos_check_opts *o, FILE *f,
                      FILE *err)
{
    return report_html(dir, o, f, err, NULL);
}

int chaos_report_write(const char *dir, const chaos_check_opts *o,
                       FILE *err)
{
    return chaos_report_write_checked(dir, o, err, NULL);
}

int chaos_report_write_checked(const char *dir, const chaos_check_opts *o,
                               FILE *err, chaos_report_checks *done)
{
    char *tmp = path_in(dir, ".report.html.tmp");
    char *dst = path_in(dir, "report.html");
    FILE *f;
    int rc;

    if (tmp == NULL || dst == NULL) {
        free(tmp);
        free(dst);
        return KEEL_ENOMEM;
    }
    f = fopen(tmp, "we");
    if (f == NULL) {
        if (err != NULL)
            fprintf(err, "keel-chaos: report: cannot write %s: %s\n", tmp,
                    strerror(errno));
        free(tmp);
        free(dst);
        return KEEL_EIO;
    }
    rc = report_html(dir, o, f, err, done);
    if (fclose(f) != 0 && rc == 0)
        rc = KEEL_EIO;
    if (rc == 0 && rename(tmp, dst) != 0) {
        if (err != NULL)
            fprintf(err, "keel-chaos: report: cannot write %s: %s\n", dst,
                    strerror(errno));
        rc = KEEL_EIO;
    }
    if (rc != 0)
        unlink(tmp);
    free(tmp);
    free(dst);
    return rc;
}
