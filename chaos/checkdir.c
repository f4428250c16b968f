#include "chaos/checkdir.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chaos/actlog.h"
#include "chaos/history.h"
#include "chaos/lin.h"
#include "chaos/lostwrite.h"
#include "chaos/replicas.h"
#include "keel.h"

void chaos_check_opts_init(chaos_check_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_detail = 3;
}

struct verdicts {
    int violation, bad, undecided, unfinished;
};

static int exists_in(const char *dir, const char *name)
{
    struct stat st;
    char *path = NULL;
    int rc;

    if (asprintf(&path, "%s/%s", dir, name) < 0)
        return 0;
    rc = stat(path, &st) == 0;
    free(path);
    return rc;
}

int chaos_run_unfinished(const char *dir)
{
    return exists_in(dir, "run.log") && !exists_in(dir, "run.json");
}

static void bad_input(struct verdicts *v, FILE *out, FILE *err,
                      const char *check, const char *msg)
{
    fprintf(out, "%s: BAD INPUT: %s\n", check, msg);
    if (err != NULL && err != out)
        fprintf(err, "keel-chaos: %s\n", msg);
    v->bad = 1;
}

static void history_summary(FILE *out, const char *path,
                            const chaos_history *h)
{
    size_t k, n[4] = {0, 0, 0, 0}, open = 0, finals = 0;

    for (k = 0; k < h->nops; k++) {
        if (!h->ops[k].completed)
            open++;
        else
            n[h->ops[k].outcome]++;
        finals += (size_t)h->ops[k].final;
    }
    fprintf(out, "history: %s: %zu operations (%zu ok, %zu fail, %zu info, "
                 "%zu without completion; %zu final reads) by %zu clients "
                 "on %zu actors\n",
            path, h->nops, n[CHAOS_OK], n[CHAOS_FAIL], n[CHAOS_INFO], open,
            finals, h->nclients, h->nactors);
}

static void check_history(const char *dir, const chaos_check_opts *o,
                          FILE *out, FILE *err, struct verdicts *v,
                          chaos_check_kept *kept)
{
    char *path = NULL, msg[1024];
    chaos_history h;
    chaos_lin_opts lo;
    chaos_lin_result lr;
    chaos_lost_result wr;
    int rc;

    chaos_history_init(&h);
    if (asprintf(&path, "%s/history.jsonl", dir) < 0) {
        path = NULL;
        rc = KEEL_ENOMEM;
    } else {
        rc = chaos_history_read(&h, path, msg, sizeof msg);
    }
    if (rc != 0) {
        if (rc == KEEL_ENOMEM)
            snprintf(msg, sizeof msg, "out of memory reading the history");
        bad_input(v, out, err, "history", msg);
        fprintf(out, "linearizability: not checked\n"
                     "lost-writes: not checked\n");
        goto done;
    }
    history_summary(out, path, &h);

    memset(&lo, 0, sizeof lo);
    lo.max_states = o->max_states;
    if (chaos_lin_check(&h, &lo, &lr) != 0) {
        bad_input(v, out, err, "linearizability", "out of memory");
    } else {
        chaos_lin_print(out, &h, &lr, o->max_detail);
        v->violation |= lr.violations > 0;
        v->undecided |= lr.undecided > 0;
        if (kept != NULL) {
            kept->lin = lr;
            kept->have_lin = 1;
        } else {
            chaos_lin_result_free(&lr);
        }
    }

    rc = chaos_lost_check(&h, &wr, msg, sizeof msg);
    if (rc != 0) {
        if (rc == KEEL_ENOMEM)
            snprintf(msg, sizeof msg, "out of memory");
        bad_input(v, out, err, "lost-writes", msg);
    } else {
        chaos_lost_print(out, &h, &wr, o->max_detail);
        v->violation |= wr.nfound > 0;
        if (kept != NULL) {
            kept->lost = wr;
            kept->have_lost = 1;
        } else {
            chaos_lost_result_free(&wr);
        }
    }
done:
    chaos_history_free(&h);
    free(path);
}

static void check_actlogs(const char *dir, const chaos_check_opts *o,
                          FILE *out, FILE *err, struct verdicts *v)
{
    char *path = NULL, msg[1024];
    chaos_actlog al;
    struct stat st;
    int rc;

    if (asprintf(&path, "%s/actlogs", dir) < 0) {
        bad_input(v, out, err, "at-most-one-activation", "out of memory");
        return;
    }
    if (stat(path, &st) != 0 && errno == ENOENT) {
        fprintf(out, "at-most-one-activation: SKIPPED (no %s: the nodes' "
                     "activation logs go there as NODE.log)\n",
                path);
        free(path);
        return;
    }
    chaos_actlog_init(&al);
    rc = chaos_actlog_read_dir(&al, path, msg, sizeof msg);
    if (rc == 0 && al.nnodes == 0) {
        fprintf(out, "at-most-one-activation: SKIPPED (no NODE.log in %s)\n",
                path);
    } else if (rc == 0 && (rc = chaos_actlog_check(&al)) == 0) {
        chaos_actlog_print(out, &al, o->max_detail);
        v->violation |= al.nfound > 0;
    }
    if (rc != 0) {
        if (rc == KEEL_ENOMEM)
            snprintf(msg, sizeof msg, "out of memory");
        bad_input(v, out, err, "at-most-one-activation", msg);
    }
    chaos_actlog_free(&al);
    free(path);
}

static void check_replicas(const char *dir, const chaos_check_opts *o,
                           FILE *out, FILE *err, struct verdicts *v)
{
    char *path = NULL, msg[1024];
    chaos_replicas rp;
    struct stat st;
    int rc;

    if (asprintf(&path, "%s/digests.txt", dir) < 0) {
        bad_input(v, out, err, "replicas-agree", "out of memory");
        return;
    }
    if (stat(path, &st) != 0 && errno == ENOENT) {
        fprintf(out, "replicas-agree: SKIPPED (no %s: the units' in-sync "
                     "sets and the nodes' digests go there)\n",
                path);
        free(path);
        return;
    }
    chaos_replicas_init(&rp);
    rc = chaos_replicas_read(&rp, path, msg, sizeof msg);
    if (rc == 0)
        rc = chaos_replicas_check(&rp, msg, sizeof msg);
    if (rc == 0) {
        chaos_replicas_print(out, &rp, o->max_detail);
        v->violation |= rp.ndisagree > 0;
    } else {
        if (rc == KEEL_ENOMEM)
            snprintf(msg, sizeof msg, "out of memory");
        bad_input(v, out, err, "replicas-agree", msg);
    }
    chaos_replicas_free(&rp);
    free(path);
}

void chaos_check_kept_free(chaos_check_kept *k)
{
    if (k->have_lin)
        chaos_lin_result_free(&k->lin);
    if (k->have_lost)
        chaos_lost_result_free(&k->lost);
    memset(k, 0, sizeof *k);
}

int chaos_check_dir(const char *dir, const chaos_check_opts *o, FILE *out,
                    FILE *err)
{
    return chaos_check_dir_kept(dir, o, out, err, NULL);
}

int chaos_check_dir_kept(const char *dir, const chaos_check_opts *o,
                         FILE *out, FILE *err, chaos_check_kept *kept)
{
    struct verdicts v = {0, 0, 0, 0};
    chaos_check_opts def;

    if (kept != NULL)
        memset(kept, 0, sizeof *kept);
    if (o == NULL) {
        chaos_check_opts_init(&def);
        o = &def;
    }
    check_history(dir, o, out, err, &v, kept);
    check_actlogs(dir, o, out, err, &v);
    check_replicas(dir, o, out, err, &v);
    if (chaos_run_unfinished(dir)) {
        fprintf(out, "run: not finished: %s has run.log but no run.json, "
                     "which keel-chaos run writes last (it was "
                     "interrupted, or the run could not be made: run.log "
                     "says which); the checks above cover what it "
                     "recorded until then\n",
                dir);
        v.unfinished = 1;
    }
    if (v.violation) {
        fprintf(out, "verdict: FAIL\n");
        return CHAOS_EXIT_VIOLATION;
    }
    if (v.unfinished) {
        /* A history cut short reads as bad input too: the run's end is
         * the first thing to say. */
        fprintf(out, "verdict: INCOMPLETE\n");
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (v.bad) {
        fprintf(out, "verdict: BAD INPUT\n");
        return CHAOS_EXIT_BAD_INPUT;
    }
    if (v.undecided) {
        fprintf(out, "verdict: UNDECIDED\n");
        return CHAOS_EXIT_UNDECIDED;
    }
    fprintf(out, "verdict: PASS\n");
    return CHAOS_EXIT_PASS;
}
