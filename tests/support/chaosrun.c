#include "chaosrun.h"

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "proc.h"

/* The clocks of the run: monotonic times from START, and the wall clock
 * RT ahead of it (run.json's realtime_minus_monotonic_ns). */
#define START 1000000000LL
#define RT 1700000000000000000LL
#define MS 1000000LL

static void put(const char *dir, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void put(const char *dir, const char *name, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    ck_assert_int_eq(fclose(f), 0);
}

void tu_chaos_fake_run(const char *dir, int violating)
{
    char sub[512];
    /* Violating: a read of a value nobody wrote, and a final count that
     * misses one of the two acknowledged increments (the third may or
     * may not have happened: its client timed out). */
    const char *read_v = violating ? "2" : "1";
    int final_c = violating ? 1 : 2;

#define EV(i, t, c, actor, op, args, rest)                                   \
    "{\"t\":\"" t "\",\"index\":" #i ",\"time_ns\":%lld,\"client\":" #c     \
    ",\"actor\":\"" actor "\",\"op\":\"" op "\",\"args\":" args rest         \
    ",\"node\":\"n1\"}\n"
    put(dir, "history.jsonl",
        EV(0, "invoke", 1, "register/r1", "write", "\"1\"", "")
        EV(1, "ok", 1, "register/r1", "write", "\"1\"", ",\"result\":null")
        EV(2, "invoke", 2, "register/r1", "read", "null", "")
        EV(3, "ok", 2, "register/r1", "read", "null", ",\"result\":\"%s\"")
        EV(4, "invoke", 1, "counter/c1", "incr", "1", "")
        EV(5, "ok", 1, "counter/c1", "incr", "1", ",\"result\":1")
        EV(6, "invoke", 2, "counter/c1", "incr", "1", "")
        EV(7, "info", 2, "counter/c1", "incr", "1",
           ",\"error\":\"ETIMEDOUT\"")
        EV(8, "invoke", 1, "counter/c1", "incr", "1", "")
        EV(9, "fail", 1, "counter/c1", "incr", "1", ",\"error\":\"EUNAVAIL\"")
        EV(10, "invoke", 1, "counter/c1", "incr", "1", "")
        EV(11, "ok", 1, "counter/c1", "incr", "1", ",\"result\":%d")
        EV(12, "invoke", 3, "register/r1", "read", "null", ",\"final\":true")
        EV(13, "ok", 3, "register/r1", "read", "null",
           ",\"result\":\"1\",\"final\":true")
        EV(14, "invoke", 3, "counter/c1", "get", "null", ",\"final\":true")
        EV(15, "ok", 3, "counter/c1", "get", "null",
           ",\"result\":%d,\"final\":true"),
        START + 100 * MS, START + 150 * MS, START + 200 * MS,
        START + 260 * MS, read_v, START + 300 * MS, START + 320 * MS,
        START + 340 * MS, START + 360 * MS, START + 380 * MS,
        START + 400 * MS, START + 1100 * MS, START + 1150 * MS, 2,
        START + 1900 * MS, START + 1950 * MS, START + 2000 * MS,
        START + 2050 * MS, final_c);
#undef EV
    put(dir, "run.json",
        "{\"seed\":7,\"nodes\":2,\"replicas\":1,\"clients\":3,\"actors\":2,"
        "\"seconds\":2,\"workload\":\"mixed\",\"faults\":\"kill\","
        "\"rate\":10,\"shards\":64,\"session_ms\":2000,\"start_ns\":%lld,"
        "\"end_ns\":%lld,\"realtime_minus_monotonic_ns\":%lld,"
        "\"faults_planned\":1,\"settled\":true,\"final_reads_ok\":2,"
        "\"unreadable_replies\":0,\"stray_exits\":0,\"cluster\":\"fake\","
        "\"node_names\":[\"n1\",\"n2\"]}\n",
        START, START + 2100 * MS, RT);
    put(dir, "faults.jsonl",
        "{\"index\":0,\"fault\":\"kill\",\"node\":\"n1\","
        "\"planned_at_ms\":500,\"planned_ms\":700,\"start_ns\":%lld,"
        "\"end_ns\":%lld,\"status\":\"done\",\"note\":\"\"}\n",
        START + 500 * MS, START + 1200 * MS);
    put(dir, "events.jsonl",
        "{\"time_ns\":%lld,\"node\":\"zk\",\"event\":\"start\"}\n"
        "{\"time_ns\":%lld,\"node\":\"n1\",\"event\":\"start\"}\n"
        "{\"time_ns\":%lld,\"node\":\"n2\",\"event\":\"start\"}\n"
        "{\"time_ns\":%lld,\"node\":\"n1\",\"event\":\"kill\"}\n"
        "{\"time_ns\":%lld,\"node\":\"n1\",\"event\":\"start\"}\n"
        "{\"time_ns\":%lld,\"node\":\"n2\",\"event\":\"sigstop\"}\n"
        "{\"time_ns\":%lld,\"node\":\"n2\",\"event\":\"sigcont\"}\n",
        START - 900 * MS, START - 800 * MS, START - 700 * MS,
        START + 500 * MS, START + 1200 * MS, START + 1400 * MS,
        START + 1600 * MS);
    snprintf(sub, sizeof sub, "%s/actlogs", dir);
    mkdir(sub, 0755);
    /* counter/c1 is 63 31 in hex. Violating: n1 never says it let go
     * before n2 activates it. */
    put(dir, "actlogs/n1.log",
        "%lld activate counter 6331 shard 5 epoch 1\n"
        "%lld %s\n",
        RT + START + 250 * MS, RT + START + (violating ? 500 : 300) * MS,
        violating ? "end" : "deactivate counter 6331 shard 5 epoch 1");
    put(dir, "actlogs/n2.log",
        "%lld activate counter 6331 shard 5 epoch 2\n",
        RT + START + 400 * MS);
}

/* Lines of RUN/faults.jsonl for a fault of this kind with this status and,
 * unless note is NULL, this text in the same line. */
static int fault_lines(const char *run, const char *kind, const char *status,
                       const char *note)
{
    char path[512], pat[64], st_pat[64], *text, *p;
    int n = 0;

    snprintf(path, sizeof path, "%s/faults.jsonl", run);
    text = tu_read_file(path);
    ck_assert_msg(text != NULL, "cannot read %s", path);
    snprintf(pat, sizeof pat, "\"fault\":\"%s\"", kind);
    snprintf(st_pat, sizeof st_pat, "\"status\":\"%s\"", status);
    for (p = text; (p = strstr(p, pat)) != NULL; p++) {
        const char *eol = strchr(p, '\n');
        const char *st = strstr(p, st_pat);
        const char *nt = note != NULL ? strstr(p, note) : p;
        if (st != NULL && nt != NULL &&
            (eol == NULL || (st < eol && nt < eol)))
            n++;
    }
    free(text);
    return n;
}

int tu_chaos_faults(const char *run, const char *kind, const char *status)
{
    return fault_lines(run, kind, status, NULL);
}

int tu_chaos_faults_dealt(const char *run, const char *kind)
{
    int done = fault_lines(run, kind, "done", NULL);
    int late = fault_lines(run, kind, "skipped", "no time left");

    if (late > 0)
        fprintf(stderr, "%s: %d %s fault%s left out, no time left\n", run,
                late, kind, late == 1 ? "" : "s");
    ck_assert_msg(done > 0, "no %s fault was done", kind);
    return done + late;
}
