/* keel shards --digest: a sweep over the map, asking each replica of each
 * unit for the unit's content digest (INFO digest, docs/cluster.md), so
 * that an operator can see at once whether the replicas in sync agree.
 *
 * The map comes from the node the command line names; every other node
 * is reached at the address the member list gives, with the same TLS and
 * token. One connection per node, opened when first needed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keel.h"
#include "runtime/proto.h"
#include "tools/keel-cli-digests.h"

#define MAX_NODES 256
#define MAX_REPLICAS 8
#define NAME_CAP 128
#define LOOKS 3          /* looks at a unit whose replicas differ */
#define LOOK_PAUSE_MS 200

struct peer {
    char name[NAME_CAP];
    char addr[NAME_CAP];
    keel_client *c;
    int failed; /* could not connect: reported once, not tried again */
    unsigned long errors; /* digests it refused: the first is printed */
};

struct sweep {
    struct peer peers[MAX_NODES];
    size_t npeers;
    cli_connect_fn connect;
    /* The credentials presented may not ask for digests (EDENIED: a
     * client token, the digest wants an administrator; EUNAUTH): the
     * sweep stops there, since every other request would be refused
     * alike. */
    int refused;
};

struct answer {
    int ok;
    char hex[17];
    unsigned long long records;
};

static void print_failure(const char *what, int rc, const char *text,
                          size_t len)
{
    fprintf(stderr, "keel: %s: %s", keel_err_name(rc), what);
    if (text != NULL && len > 0)
        fprintf(stderr, ": %.*s", (int)(len > 400 ? 400 : len), text);
    if (len == 0 || text[len - 1] != '\n')
        fputc('\n', stderr);
}

/* "node NAME addr ADDR ..." lines of INFO nodes into s->peers. */
static void read_members(struct sweep *s, const char *text)
{
    const char *p = text;

    while (*p != '\0' && s->npeers < MAX_NODES) {
        const char *eol = strchr(p, '\n');
        size_t len = eol != NULL ? (size_t)(eol - p) : strlen(p);
        char line[1024];
        struct peer *pe = &s->peers[s->npeers];

        if (len < sizeof line) {
            memcpy(line, p, len);
            line[len] = '\0';
            if (sscanf(line, "node %127s addr %127s", pe->name, pe->addr) ==
                2)
                s->npeers++;
        }
        p += len + (eol != NULL);
    }
}

static struct peer *peer_named(struct sweep *s, const char *name)
{
    size_t i;

    for (i = 0; i < s->npeers; i++)
        if (strcmp(s->peers[i].name, name) == 0)
            return &s->peers[i];
    return NULL;
}

/* The digest of (cap, shard) on node name, into *a (a->ok 0 when it could
 * not be had: not a member, unreachable, or an error). */
static void ask(struct sweep *s, const char *name, const char *cap,
                const char *shard, struct answer *a)
{
    struct peer *pe = peer_named(s, name);
    const char *words[3] = {"digest", cap, shard};
    char *reply = NULL, why[512] = "";
    size_t rlen = 0;
    int rc;

    a->ok = 0;
    if (pe == NULL || pe->failed)
        return;
    if (pe->c == NULL) {
        rc = s->connect(pe->addr, &pe->c, why, sizeof why);
        if (rc != 0) {
            char what[300];
            snprintf(what, sizeof what, "cannot ask %s at %s for digests",
                     pe->name, pe->addr);
            print_failure(what, rc, why, strlen(why));
            pe->failed = 1;
            pe->c = NULL;
            return;
        }
    }
    rc = keel_client_info(pe->c, words, 3, &reply, &rlen);
    if (rc == 0 && sscanf(reply, "digest %16s records %llu", a->hex,
                          &a->records) == 2) {
        a->ok = 1;
    } else if (rc != 0) {
        char what[300];
        snprintf(what, sizeof what, "digest of (%s, %s) on %s", cap, shard,
                 name);
        if (pe->errors++ == 0 || reply == NULL)
            print_failure(what, rc, reply, reply != NULL ? rlen : 0);
        if (rc == KEEL_EDENIED || rc == KEEL_EUNAUTH)
            s->refused = rc;
        if (reply == NULL) { /* the connection is gone: once is enough */
            keel_client_close(pe->c);
            pe->c = NULL;
            pe->failed = 1;
        }
    }
    free(reply);
}

/* Splits "a,b,c" in place into names (at most max). */
static size_t split_names(char *list, char **names, size_t max)
{
    size_t n = 0;
    char *save = NULL, *t;

    for (t = strtok_r(list, ",", &save); t != NULL && n < max;
         t = strtok_r(NULL, ",", &save))
        names[n++] = t;
    return n;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One "unit CAP SHARD owner NODE epoch E [target NODE] [backups A,B
 * [out_of_sync B]]" line: its digests and verdict appended. */
static void sweep_unit(struct sweep *s, const char *line, FILE *out,
                       struct cli_digest_counts *k)
{
    char copy[2048], backups[1024] = "", outsync[1024] = "";
    char *tok[16], *save = NULL, *t, *names[MAX_REPLICAS];
    char *outs[MAX_REPLICAS];
    int insync[MAX_REPLICAS];
    struct answer ans[MAX_REPLICAS];
    size_t ntok = 0, nrep = 0, nout = 0, i, j;
    int look, differ = 0, missing = 0;

    snprintf(copy, sizeof copy, "%s", line);
    for (t = strtok_r(copy, " ", &save); t != NULL && ntok < 16;
         t = strtok_r(NULL, " ", &save))
        tok[ntok++] = t;
    if (ntok < 7 || strcmp(tok[3], "owner") != 0) {
        fprintf(out, "%s\n", line); /* not a line this sweep knows */
        return;
    }
    for (i = 7; i + 1 < ntok; i += 2) {
        if (strcmp(tok[i], "backups") == 0)
            snprintf(backups, sizeof backups, "%s", tok[i + 1]);
        else if (strcmp(tok[i], "out_of_sync") == 0)
            snprintf(outsync, sizeof outsync, "%s", tok[i + 1]);
    }
    if (strcmp(tok[4], "(none)") != 0)
        names[nrep++] = tok[4];
    nrep += split_names(backups, names + nrep, MAX_REPLICAS - nrep);
    nout = split_names(outsync, outs, MAX_REPLICAS);
    for (i = 0; i < nrep; i++) {
        insync[i] = 1;
        for (j = 0; j < nout; j++)
            if (strcmp(names[i], outs[j]) == 0)
                insync[i] = 0;
    }
    /* A write may reach one replica's store before another's: replicas
     * that differ are looked at again before they count as differing. */
    for (look = 0; look < LOOKS; look++) {
        const struct answer *first = NULL;

        if (look > 0)
            pause_ms(LOOK_PAUSE_MS);
        differ = missing = 0;
        for (i = 0; i < nrep; i++) {
            ask(s, names[i], tok[1], tok[2], &ans[i]);
            if (s->refused)
                return;
            if (!insync[i])
                continue;
            if (!ans[i].ok)
                missing = 1;
            else if (first == NULL)
                first = &ans[i];
            else if (strcmp(first->hex, ans[i].hex) != 0 ||
                     first->records != ans[i].records)
                differ = 1;
        }
        if (!differ)
            break;
    }
    fprintf(out, "%s digests ", line);
    for (i = 0; i < nrep; i++) {
        if (ans[i].ok)
            fprintf(out, "%s%s=%s:%llu", i ? "," : "", names[i], ans[i].hex,
                    ans[i].records);
        else
            fprintf(out, "%s%s=?", i ? "," : "", names[i]);
    }
    k->units++;
    if (nrep == 0)
        missing = 1;
    if (differ) {
        k->differ++;
        fprintf(out, " DIFFER\n");
    } else if (missing) {
        k->incomplete++;
        fprintf(out, " incomplete\n");
    } else {
        k->agree++;
        fprintf(out, " agree\n");
    }
}

int cli_shards_digest(keel_client *contact, const char *only,
                      cli_connect_fn connect, FILE *out,
                      struct cli_digest_counts *counts)
{
    static const char *const nodes_q[] = {"nodes"};
    const char *shards_q[2] = {"shards", only};
    struct sweep *s = calloc(1, sizeof *s);
    char *reply = NULL, *p;
    size_t rlen = 0, i;
    int rc;

    memset(counts, 0, sizeof *counts);
    if (s == NULL)
        return KEEL_ENOMEM;
    s->connect = connect;
    keel_client_set_max_frame(contact, (size_t)64 << 20);
    if ((rc = keel_client_info(contact, nodes_q, 1, &reply, &rlen)) != 0) {
        print_failure("members", rc, reply, reply != NULL ? rlen : 0);
        goto done;
    }
    read_members(s, reply);
    free(reply);
    reply = NULL;
    if ((rc = keel_client_info(contact, shards_q, only != NULL ? 2 : 1,
                               &reply, &rlen)) != 0) {
        print_failure("the map", rc, reply, reply != NULL ? rlen : 0);
        goto done;
    }
    for (p = reply; *p != '\0';) {
        char *eol = strchr(p, '\n');

        if (eol != NULL)
            *eol = '\0';
        if (strncmp(p, "unit ", 5) == 0)
            sweep_unit(s, p, out, counts);
        else if (*p != '\0')
            fprintf(out, "%s\n", p);
        if (s->refused) {
            rc = s->refused;
            goto done;
        }
        if (eol == NULL)
            break;
        p = eol + 1;
    }
    fprintf(out, "digests: %u units, %u agree, %u differ, %u incomplete\n",
            counts->units, counts->agree, counts->differ,
            counts->incomplete);
    for (i = 0; i < s->npeers; i++)
        if (s->peers[i].errors > 1)
            fprintf(stderr, "keel: %lu more digest requests refused by %s "
                            "(the first is above)\n",
                    s->peers[i].errors - 1, s->peers[i].name);
done:
    free(reply);
    for (i = 0; i < s->npeers; i++)
        if (s->peers[i].c != NULL)
            keel_client_close(s->peers[i].c);
    free(s);
    return rc;
}
