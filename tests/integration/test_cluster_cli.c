/* Introspection of a real cluster (ZooKeeper through zk-conf/zk.sh, three
 * keeld joined with --zk) through the CLI and the HTTP face: `keel nodes`
 * names three members and one controller, `keel where` names the node that
 * actually runs the actor's turns, `keel shards` covers every unit once,
 * `keel capabilities` lists who declares what, /v1/cluster reports the
 * same. Every wait is bounded. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "proc.h"
#include "testutil.h"
#include "zk.h"

#define N 3
#define SHARDS 16

static tu_cluster fx;
static const char *const caps[N] = {"gpu", "gpu,ssd", NULL};

static void setup(void)
{
    int i;

    tu_cluster_setup(&fx, "cluster-cli", "cc");
    fx.shards = SHARDS;
    for (i = 0; i < N; i++)
        ck_assert_int_eq(tu_cluster_start_node(
                             &fx, i, 0, "--http", "127.0.0.1:0",
                             caps[i] ? "--capabilities" : NULL, caps[i],
                             NULL),
                         0);
}

static void teardown(void)
{
    ck_assert_int_eq(tu_cluster_teardown(&fx, SIGTERM), 0);
}

static size_t count_lines(const char *s, const char *prefix)
{
    size_t n = 0, plen = strlen(prefix);
    const char *p = s;

    while (p != NULL && *p) {
        if (strncmp(p, prefix, plen) == 0)
            n++;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return n;
}

/* The output of `keel -a node[i] ARGS...` (exit 0 required). Not
 * inlined: inlined, gcc 12 at -O3 (a Release build) takes the string
 * tu_keel leaves in `out` through &out for one that may point at `out`
 * itself, and warns of a dangling pointer (-Wdangling-pointer) wherever
 * a caller reads it. */
__attribute__((noinline))
static char *cli(int i, const char *a, const char *b, const char *c,
                 const char *d)
{
    char *out = NULL, *err = NULL;
    int rc = tu_keel(fx.nodes[i].addr, &out, &err, a, b, c, d, NULL);

    ck_assert_msg(rc == 0, "keel %s via n%d: exit %d: %s", a, i, rc,
                  err ? err : "");
    free(err);
    return out;
}

/* Waits (bounded) until every node sees all members and a controller, and
 * every unit has a settled owner (no "(none)", no move in progress). */
static void await_settled(void)
{
    int i, tries;

    for (tries = 0; tries < 200; tries++) {
        int ok = 1;
        for (i = 0; i < N && ok; i++) {
            char *nd = cli(i, "nodes", NULL, NULL, NULL);
            char *sh = cli(i, "shards", NULL, NULL, NULL);
            ok = count_lines(nd, "node ") == N &&
                 strstr(nd, "controller (none)") == NULL &&
                 count_lines(sh, "unit ") > 0 &&
                 strstr(sh, "(none)") == NULL && strstr(sh, "target") == NULL;
            free(nd);
            free(sh);
        }
        if (ok)
            return;
        usleep(100 * 1000);
    }
    tu_cluster_dump_logs(&fx);
    ck_abort_msg("the cluster did not settle");
}

static long stat_messages(int i)
{
    char *out = cli(i, "stat", NULL, NULL, NULL);
    const char *p = strstr(out, "\nmessages ");
    long v;

    ck_assert_ptr_nonnull(p);
    v = strtol(p + strlen("\nmessages "), NULL, 10);
    free(out);
    return v;
}

START_TEST(nodes_one_controller)
{
    int i;

    await_settled();
    for (i = 0; i < N; i++) {
        char *out = cli(i, "nodes", NULL, NULL, NULL), want[32];
        const char *ctl = strstr(out, "\ncontroller "), *row;
        char ctl_name[16] = "";

        ck_assert_ptr_nonnull(strstr(out, "mode cluster\n"));
        ck_assert_int_eq(count_lines(out, "node "), 3);
        ck_assert_ptr_nonnull(strstr(out, "node n0 addr "));
        ck_assert_ptr_nonnull(strstr(out, "node n1 addr "));
        ck_assert_ptr_nonnull(strstr(out, "node n2 addr "));
        ck_assert_ptr_nonnull(strstr(out, fx.nodes[i].addr));
        ck_assert_ptr_nonnull(strstr(out, " caps gpu,ssd role "));
        ck_assert_ptr_nonnull(strstr(out, " caps (none) role "));
        /* Exactly one member is the controller, the one named above. */
        ck_assert_ptr_nonnull(ctl);
        ck_assert_int_eq(sscanf(ctl, "\ncontroller %15s", ctl_name), 1);
        {
            size_t n = 0;
            const char *p = out;
            while ((p = strstr(p, " role controller")) != NULL) {
                n++;
                p++;
            }
            ck_assert_int_eq(n, 1);
        }
        snprintf(want, sizeof want, "node %s addr ", ctl_name);
        row = strstr(out, want);
        ck_assert_ptr_nonnull(row);
        ck_assert_ptr_nonnull(strstr(row, " role controller"));
        /* The nodes run without credentials (the fixture's --insecure):
         * each says so in its member znode, and every answer says it. */
        ck_assert_ptr_nonnull(strstr(out, " self insecure\n"));
        ck_assert_ptr_nonnull(strstr(out, "\ninsecure n0,n1,n2 (running "
                                          "without credentials: "
                                          "--insecure)\n"));
        {
            size_t n = 0;
            const char *p = out;
            while ((p = strstr(p, " insecure\n")) != NULL) {
                n++;
                p++;
            }
            ck_assert_int_eq(n, 3);
        }
        {
            /* The node's log names its incarnation as `nodes` does (the
             * last join: a node that lost its session joins again). */
            char *log = tu_keeld_log(&fx.nodes[i]), me[40];
            const char *p, *last = NULL;
            unsigned long long logged = 0, shown = 0;

            snprintf(me, sizeof me, "n%d joined as incarnation ", i);
            for (p = log; p != NULL && (p = strstr(p, me)) != NULL; p++)
                last = p;
            ck_assert_msg(last != NULL, "no '%s' in the log", me);
            ck_assert_int_eq(sscanf(last + strlen(me), "%llu", &logged), 1);
            snprintf(want, sizeof want, "node n%d addr ", i);
            row = strstr(out, want);
            ck_assert_ptr_nonnull(row);
            row = strstr(row, " incarnation ");
            ck_assert_ptr_nonnull(row);
            ck_assert_int_eq(sscanf(row, " incarnation %llu", &shown), 1);
            ck_assert_msg(logged == shown, "log %llu, nodes %llu", logged,
                          shown);
            /* Joining is no lifted fence: that warning follows only a
             * fence the log reported. */
            if (strstr(log, "cluster: fenced: not serving") == NULL)
                ck_assert_msg(strstr(log, "fence lifted") == NULL,
                              "n%d: a lift without a fence:\n%s", i, log);
            free(log);
        }
        free(out);
    }
}
END_TEST

START_TEST(where_names_the_serving_node)
{
    long before[N], after[N];
    char *out, owner[16] = "", *p;
    int i, o = -1, via, c;

    await_settled();
    for (c = 0; c < 4; c++) {
        char name[8];
        snprintf(name, sizeof name, "c%d", c + 1);
        out = cli(c % N, "where", "counter", name, NULL);
        ck_assert_int_eq(strncmp(out, "insecure n0,n1,n2 (running without "
                                      "credentials: --insecure)\ntype "
                                      "counter\n",
                                 73),
                         0);
        ck_assert_ptr_nonnull(strstr(out, "capability (default)\n"));
        p = strstr(out, "\nowner ");
        ck_assert_ptr_nonnull(p);
        ck_assert_int_eq(sscanf(p, "\nowner n%d", &o), 1);
        ck_assert(o >= 0 && o < N);
        ck_assert_ptr_nonnull(strstr(out, fx.nodes[o].addr));
        p = strstr(out, "\nepoch ");
        ck_assert_ptr_nonnull(p);
        ck_assert_int_ge(strtol(p + strlen("\nepoch "), NULL, 10), 1);
        /* The same answer from every node. */
        for (i = 0; i < N; i++) {
            char *again = cli(i, "where", "counter", name, NULL);
            snprintf(owner, sizeof owner, "\nowner n%d\n", o);
            ck_assert_ptr_nonnull(strstr(again, owner));
            ck_assert_ptr_nonnull(strstr(again, i == o ? "placement local"
                                                       : "placement remote"));
            free(again);
        }
        free(out);
        /* A call through another node runs its turn on the owner only. */
        for (i = 0; i < N; i++)
            before[i] = stat_messages(i);
        via = (o + 1) % N;
        out = cli(via, "call", "counter", name, "incr");
        ck_assert_str_eq(out, "1\n");
        free(out);
        for (i = 0; i < N; i++) {
            after[i] = stat_messages(i);
            if (i == o)
                ck_assert_int_eq(after[i], before[i] + 1);
            else
                ck_assert_int_eq(after[i], before[i]);
        }
    }
}
END_TEST

START_TEST(shards_cover_every_unit_once)
{
    /* Capabilities: "", gpu, ssd, each SHARDS units. */
    static const char *const cnames[] = {"(default)", "gpu", "ssd"};
    int seen[3][SHARDS];
    size_t total = 0, per_node = 0;
    char *out, *line;
    int i;

    await_settled();
    memset(seen, 0, sizeof seen);
    out = cli(1, "shards", NULL, NULL, NULL);
    /* First, that the members run without credentials (--insecure). */
    line = strtok(out, "\n");
    ck_assert_ptr_nonnull(line);
    ck_assert_str_eq(line, "insecure n0,n1,n2 (running without credentials: "
                           "--insecure)");
    for (line = strtok(NULL, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char cap[32], own[16];
        unsigned shard;
        unsigned long long epoch;
        int ci = -1, k;

        ck_assert_int_eq(sscanf(line, "unit %31s %u owner %15s epoch %llu",
                                cap, &shard, own, &epoch),
                         4);
        for (k = 0; k < 3; k++)
            if (strcmp(cap, cnames[k]) == 0)
                ci = k;
        ck_assert_msg(ci >= 0, "unexpected capability in '%s'", line);
        ck_assert_uint_lt(shard, SHARDS);
        ck_assert_uint_ge(epoch, 1);
        /* Owners declare the capability. */
        if (ci == 1)
            ck_assert(strcmp(own, "n0") == 0 || strcmp(own, "n1") == 0);
        if (ci == 2)
            ck_assert_str_eq(own, "n1");
        seen[ci][shard]++;
        total++;
    }
    free(out);
    ck_assert_uint_eq(total, 3 * SHARDS);
    for (i = 0; i < 3 * SHARDS; i++)
        ck_assert_int_eq(seen[i / SHARDS][i % SHARDS], 1);
    /* --node splits the same units among the members. */
    for (i = 0; i < N; i++) {
        char id[8], want[16];
        snprintf(id, sizeof id, "n%d", i);
        snprintf(want, sizeof want, " owner n%d ", i);
        out = cli(0, "shards", "--node", id, NULL);
        per_node += count_lines(out, "unit ");
        line = strtok(out, "\n");
        ck_assert_ptr_nonnull(line);
        ck_assert_int_eq(strncmp(line, "insecure n0,n1,n2 ", 18), 0);
        for (line = strtok(NULL, "\n"); line; line = strtok(NULL, "\n"))
            ck_assert_ptr_nonnull(strstr(line, want));
        free(out);
    }
    ck_assert_uint_eq(per_node, total);
    /* A node the cluster does not know (a typo) is an error, not a node
     * that owns nothing. */
    {
        char *err = NULL;
        out = NULL;
        ck_assert_int_eq(tu_keel(fx.nodes[0].addr, &out, &err, "shards",
                                 "--node", "n9", NULL),
                         1);
        ck_assert_msg(err != NULL && strstr(err, "ENOTFOUND") != NULL &&
                          strstr(err, "no node 'n9'") != NULL,
                      "stderr: %s", err != NULL ? err : "");
        free(out);
        free(err);
    }
}
END_TEST

START_TEST(capabilities_and_http)
{
    char *out, url[64], *body = NULL;
    const char *p;
    int i, port;

    await_settled();
    for (i = 0; i < N; i++) {
        out = cli(i, "capabilities", NULL, NULL, NULL);
        ck_assert_str_eq(out, "insecure n0,n1,n2 (running without "
                              "credentials: --insecure)\n"
                              "capability (default) nodes n0,n1,n2\n"
                              "capability gpu nodes n0,n1\n"
                              "capability ssd nodes n1\n");
        free(out);
    }
    /* /v1/cluster on n2: the same facts as JSON. */
    port = tu_keeld_http_port(&fx.nodes[2]);
    ck_assert_int_gt(port, 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/cluster", port);
    {
        const char *argv[] = {"/usr/bin/curl", "-sf", url, NULL};
        ck_assert_int_eq(tu_run(argv, &body, NULL), 0);
    }
    ck_assert_ptr_nonnull(strstr(body, "\"mode\": \"cluster\", "
                                       "\"insecure\": true, "));
    {
        size_t n = 0;
        const char *m = body;
        while ((m = strstr(m, ", \"insecure\": true, \"listen\": ")) !=
               NULL) {
            n++;
            m++;
        }
        ck_assert_int_eq(n, 3); /* each member */
    }
    ck_assert_ptr_nonnull(strstr(body, "\"self\": \"n2\""));
    ck_assert_ptr_nonnull(strstr(body, "\"name\": \"n0\""));
    ck_assert_ptr_nonnull(strstr(body, "\"name\": \"n1\""));
    ck_assert_ptr_nonnull(strstr(body, "\"gpu\": [\"n0\", \"n1\"]"));
    ck_assert_ptr_nonnull(strstr(body, "\"ssd\": [\"n1\"]"));
    ck_assert_ptr_nonnull(strstr(body, "\"shard_count\": 16"));
    ck_assert_ptr_nonnull(strstr(body, "\"owners\": [\""));
    ck_assert_ptr_null(strstr(body, "\"controller\": null"));
    free(body);
    /* /metrics on n2 says cluster mode and counts the units the map gives
     * it, as `keel shards --node n2` lists them. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    {
        const char *argv[] = {"/usr/bin/curl", "-sf", url, NULL};
        char want[96];
        ck_assert_int_eq(tu_run(argv, &body, NULL), 0);
        ck_assert_ptr_nonnull(strstr(body, ",mode=\"cluster\"} 1\n"));
        out = cli(0, "shards", "--node", "n2", NULL);
        snprintf(want, sizeof want, "keel_shards_owned{mode=\"cluster\"} %zu\n",
                 count_lines(out, "unit "));
        ck_assert_msg(strstr(body, want) != NULL, "want '%s' in\n%s", want,
                      body);
        /* It serves, and began to serve at least the units it has. */
        ck_assert_ptr_nonnull(strstr(body, "\nkeel_cluster_serving 1\n"));
        p = strstr(body, "\nkeel_units_acquired_total ");
        ck_assert_ptr_nonnull(p);
        ck_assert_int_ge(strtol(p + strlen("\nkeel_units_acquired_total "),
                                NULL, 10),
                         (long)count_lines(out, "unit "));
        ck_assert_ptr_nonnull(strstr(body, "\nkeel_fenced_total "));
        free(out);
        free(body);
    }
}
END_TEST

/* GET of path through node i's HTTP port: the status, and the body in
 * *body (malloc'd). */
static int http_get(int i, const char *path, char **body)
{
    char url[256], *out = NULL;
    int port = tu_keeld_http_port(&fx.nodes[i]), code;
    const char *argv[] = {"/usr/bin/curl", "-s", "--max-time", "20", "-w",
                          "\n%{http_code}", url, NULL};
    char *nl;

    ck_assert_int_gt(port, 0);
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    ck_assert_int_eq(tu_run(argv, &out, NULL), 0);
    nl = strrchr(out, '\n');
    ck_assert_ptr_nonnull(nl);
    code = atoi(nl + 1);
    *nl = '\0';
    *body = out;
    return code;
}

/* An actor's state read over HTTP through any node is answered by the
 * owner of its unit (forwarded like a POST), as one answer: the same
 * through every node, and what the acknowledged calls left. An actor
 * never written is 404 through every node. */
START_TEST(state_reads_are_forwarded_to_the_owner)
{
    char *body, owner[64];
    int i, code, others = 0;

    await_settled();
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(tu_cluster_counter(&fx, i, "fwd", "incr"), i + 1);
    tu_cluster_owner_of(&fx, 0, "counter", "fwd", owner, sizeof owner);
    for (i = 0; i < N; i++) {
        char name[8];
        snprintf(name, sizeof name, "n%d", i);
        others += strcmp(name, owner) != 0;
        code = http_get(i, "/v1/actors/counter/fwd", &body);
        ck_assert_msg(code == 200, "GET through n%d (owner %s): %d %s", i,
                      owner, code, body);
        /* The counter's state: its value, 8 bytes big-endian (3). */
        ck_assert_msg(strstr(body, "\"state_base64\": \"AAAAAAAAAAM=\"") !=
                          NULL &&
                          strstr(body, "\"version\": 3,") != NULL &&
                          strstr(body, "\"shard\": ") != NULL,
                      "GET through n%d: %s", i, body);
        free(body);
        /* The same read over the wire (keel state). */
        body = cli(i, "state", "counter", "fwd", NULL);
        {
            static const char head[] =
                "version 3\nentries 0\nstate 8 bytes\n";
            ck_assert_msg(strncmp(body, head, sizeof head - 1) == 0,
                          "keel state through n%d: %s", i, body);
        }
        free(body);
        /* keel follow: through a node that does not own the actor, at
         * the owner that node names (the state now, version 3, within
         * the 3 s it runs), as through the owner itself. */
        {
            char *bin = tu_bin("keel"), *fout = NULL, *ferr = NULL;
            const char *argv[] = {bin,      "-a",      fx.nodes[i].addr,
                                  "follow", "counter", "fwd",
                                  NULL};

            (void)tu_run_for(argv, 3, &fout, &ferr); /* until killed */
            ck_assert_msg(fout != NULL && strncmp(fout, "3 ", 2) == 0,
                          "keel follow through n%d (owner %s) printed '%s' "
                          "(stderr '%s')",
                          i, owner, fout ? fout : "", ferr ? ferr : "");
            free(fout);
            free(ferr);
            free(bin);
        }
        code = http_get(i, "/v1/actors/counter/never-fwd", &body);
        ck_assert_msg(code == 404 && strstr(body, "ENOTFOUND") != NULL,
                      "GET of an unwritten actor through n%d: %d %s", i,
                      code, body);
        free(body);
    }
    ck_assert_int_eq(others, N - 1);
}
END_TEST

/* A node that stops (SIGTERM) leaves gracefully even when it is the only
 * one with a capability: it hands off the units others can take and
 * keeps, until it goes, only those nobody else can (an operator's drain
 * of it is refused, below; a stop is not). */
START_TEST(stopping_the_only_node_with_a_capability_hands_off_the_rest)
{
    char *log, *out;
    int tries, left = 1;

    await_settled();
    out = cli(0, "shards", "--node", "n1", NULL);
    ck_assert_msg(strstr(out, "unit (default) ") != NULL, "%s", out);
    free(out);
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[1], SIGTERM), 0);
    log = tu_keeld_log(&fx.nodes[1]);
    ck_assert_msg(strstr(log, "cannot mark this node leaving") == NULL &&
                      strstr(log, "cluster: leaving: handing every unit "
                                  "off") != NULL &&
                      strstr(log, "leaving with ") != NULL,
                  "n1's log:\n%s", log);
    {
        /* Each handoff names the epoch the unit leaves, as the receiver's
         * "moving here from epoch" does. */
        const char *h = strstr(log, ") handed to n");
        ck_assert_msg(h != NULL, "no handoff in n1's log:\n%s", log);
        h += strlen(") handed to n");
        ck_assert_msg((h[0] == '0' || h[0] == '2') &&
                          strncmp(h + 1, " from epoch ", 12) == 0,
                      "n1's log:\n%s", log);
    }
    free(log);
    /* The default and gpu units it led are the others' now. */
    for (tries = 0; tries < 100 && left; tries++) {
        out = cli(0, "shards", "--node", "n1", NULL);
        left = strstr(out, "unit (default) ") != NULL ||
               strstr(out, "unit gpu ") != NULL;
        free(out);
        if (left)
            usleep(100 * 1000);
    }
    ck_assert_msg(!left, "n1 still leads default or gpu units");
}
END_TEST

/* Admin requests that would go wrong are refused with the reason: a
 * drain of n1, the only node with capability ssd (its ssd units would
 * stay unavailable), and a forget of a node the cluster never had. The
 * refused drain leaves n1 a member that is not leaving. */
START_TEST(drain_and_forget_refuse_what_would_go_wrong)
{
    char *out = NULL, *err = NULL;
    int rc;

    await_settled();
    rc = tu_keel(fx.nodes[0].addr, &out, &err, "node", "drain", "n1", NULL);
    ck_assert_msg(rc != 0 && err != NULL &&
                      strstr(err, "EUNAVAIL") != NULL &&
                      strstr(err, "no other live member has capability "
                                  "'ssd'") != NULL,
                  "drain n1: exit %d: %s", rc, err ? err : "");
    free(out);
    free(err);
    out = err = NULL;
    rc = tu_keel(fx.nodes[0].addr, &out, &err, "node", "forget", "nobody",
                 NULL);
    ck_assert_msg(rc != 0 && err != NULL &&
                      strstr(err, "ENOTFOUND") != NULL &&
                      strstr(err, "lists no such node") != NULL,
                  "forget nobody: exit %d: %s", rc, err ? err : "");
    free(out);
    free(err);
    out = cli(2, "nodes", NULL, NULL, NULL);
    ck_assert_msg(count_lines(out, "node ") == N && strstr(out, "leaving") ==
                                                      NULL,
                  "%s", out);
    free(out);
}
END_TEST

/* Whether the line of `keel nodes` output out that starts with prefix
 * ends with the word leaving; -1 when there is no such line. */
static int listed_leaving(const char *out, const char *prefix)
{
    const char *line = strstr(out, prefix), *end;
    size_t wl = strlen(" leaving");

    if (line == NULL)
        return -1;
    end = strchrnul(line, '\n');
    return (size_t)(end - line) >= wl && strncmp(end - wl, " leaving", wl) == 0;
}

/* `keel nodes` marks a node that is leaving (drained, or stopping) until
 * it has gone. n2 is paused for the drain so that it cannot leave before
 * it is looked at, for at most 1 s: its lease (T/2 of its 2 s session)
 * may lapse, which only fences it for a moment, and its session outlives
 * the pause; resumed, it hands off and exits by itself. Before, it was
 * listed as any member. */
START_TEST(a_draining_node_is_marked_leaving)
{
    char *out, *seen = NULL;
    int tries, marked = 0;
    double t0;

    await_settled();
    ck_assert_int_eq(kill(fx.nodes[2].pid, SIGSTOP), 0);
    t0 = tu_now_s();
    out = cli(0, "node", "drain", "n2", NULL);
    ck_assert_msg(strstr(out, "node n2 leaving") != NULL, "%s", out);
    free(out);
    while (marked != 1 && tu_now_s() - t0 < 1.0) {
        free(seen);
        seen = cli(0, "nodes", NULL, NULL, NULL);
        marked = listed_leaving(seen, "node n2 ");
        if (marked != 1)
            usleep(20 * 1000);
    }
    ck_assert_int_eq(kill(fx.nodes[2].pid, SIGCONT), 0);
    ck_assert_msg(marked == 1, "n2 is not marked leaving:\n%s",
                  seen ? seen : "");
    ck_assert_msg(listed_leaving(seen, "node n0 ") == 0 &&
                      listed_leaving(seen, "node n1 ") == 0,
                  "another node is marked leaving:\n%s", seen);
    free(seen);
    /* It leaves by itself (signal 0: only wait), and is listed no more. */
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[2], 0), 0);
    for (tries = 0; tries < 100; tries++) {
        out = cli(0, "nodes", NULL, NULL, NULL);
        marked = listed_leaving(out, "node n2 ");
        free(out);
        if (marked == -1)
            break;
        usleep(100 * 1000);
    }
    ck_assert_msg(marked == -1, "n2 is still listed after it left");
}
END_TEST

/* `keel --direct call` asks where the actor lives and sends the call to
 * its owner: the contact node forwards nothing, the owner runs the turn.
 * Without --direct the contact node forwards it (its `forwarded` count
 * grows by one). */
static long stat_value(int i, const char *name)
{
    long v = tu_keel_stat(fx.nodes[i].addr, name);

    ck_assert_msg(v >= 0, "no %s in n%d's stat output", name, i);
    return v;
}

START_TEST(direct_call_goes_to_the_owner)
{
    char *out, *err = NULL, *p;
    long fwd0, fwd1, msgs0;
    int o = -1, via;

    await_settled();
    out = cli(0, "where", "counter", "direct", NULL);
    p = strstr(out, "\nowner ");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(sscanf(p, "\nowner n%d", &o), 1);
    free(out);
    via = (o + 1) % N;
    fwd0 = stat_value(via, "forwarded");
    msgs0 = stat_value(o, "messages");
    out = NULL;
    ck_assert_int_eq(tu_keel(fx.nodes[via].addr, &out, &err, "--direct", "call",
                             "counter", "direct", "incr", NULL),
                     0);
    ck_assert_str_eq(out, "1\n");
    free(out);
    free(err);
    fwd1 = stat_value(via, "forwarded");
    ck_assert_int_eq(fwd1, fwd0);
    ck_assert_int_eq(stat_value(o, "messages"), msgs0 + 1);
    /* The same call without --direct goes through the contact node. */
    out = cli(via, "call", "counter", "direct", "incr");
    ck_assert_str_eq(out, "2\n");
    free(out);
    ck_assert_int_eq(stat_value(via, "forwarded"), fwd1 + 1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_cli");
    TCase *tc = tcase_create("cluster_cli");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, nodes_one_controller);
    tcase_add_test(tc, where_names_the_serving_node);
    tcase_add_test(tc, direct_call_goes_to_the_owner);
    tcase_add_test(tc, shards_cover_every_unit_once);
    tcase_add_test(tc, capabilities_and_http);
    tcase_add_test(tc, state_reads_are_forwarded_to_the_owner);
    tcase_add_test(tc, stopping_the_only_node_with_a_capability_hands_off_the_rest);
    tcase_add_test(tc, drain_and_forget_refuse_what_would_go_wrong);
    tcase_add_test(tc, a_draining_node_is_marked_leaving);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
