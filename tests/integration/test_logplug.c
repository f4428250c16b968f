/* keeld's log options and plugins, on real processes: --log-format json
 * lines parse and carry their fields with the message escaped;
 * --log-file survives a rename and SIGHUP (log rotation) with the node
 * serving throughout; a plugin gets its --load ARGS and logs through the
 * node; plugins of another ABI, or none, are refused with a message
 * naming the versions; a plugin whose init fails is named with its
 * error; --load of a name without '/' is a file of the working
 * directory. */
#include <check.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keel.h"
#include "proc.h"
#include "testutil.h"

static char *dir, *data;
static tu_keeld node;

static void setup(void)
{
    dir = tu_tmpdir("logplug");
    if (asprintf(&data, "%s/data", dir) < 0)
        abort();
    memset(&node, 0, sizeof node);
}

static void teardown(void)
{
    tu_keeld_free(&node);
    tu_rmrf(dir);
    free(dir);
    free(data);
}

/* ------------------------------------------------------- a JSON reader */

/* One line's object: string keys to string values (every field keeld
 * writes is a string), values decoded. */
#define JMAX 8
struct jobj {
    int n;
    char key[JMAX][32];
    char val[JMAX][4096];
};

static void put_utf8(char **o, unsigned cp)
{
    if (cp < 0x80) {
        *(*o)++ = (char)cp;
    } else if (cp < 0x800) {
        *(*o)++ = (char)(0xC0 | cp >> 6);
        *(*o)++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *(*o)++ = (char)(0xE0 | cp >> 12);
        *(*o)++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *(*o)++ = (char)(0x80 | (cp & 0x3F));
    }
}

/* Parses a JSON string at *p (at its opening quote) into out (room for
 * cap bytes); strict: raw control bytes and unknown escapes fail.
 * Returns 0 or -1. */
static int jstring(const char **p, char *out, size_t cap)
{
    const char *s = *p;
    char *o = out, *end = out + cap - 4;

    if (*s++ != '"')
        return -1;
    while (*s != '"') {
        unsigned char c = (unsigned char)*s;
        if (c == '\0' || c < 0x20 || o >= end)
            return -1;
        if (c != '\\') {
            *o++ = (char)c;
            s++;
            continue;
        }
        s++;
        switch (*s) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp;
            char hex[5] = {0};
            memcpy(hex, s + 1, 4);
            if (strlen(hex) != 4 || strspn(hex, "0123456789abcdefABCDEF") != 4)
                return -1;
            cp = (unsigned)strtoul(hex, NULL, 16);
            if (cp >= 0xD800 && cp <= 0xDFFF)
                return -1; /* keeld never writes surrogates */
            put_utf8(&o, cp);
            s += 4;
            break;
        }
        default:
            return -1;
        }
        s++;
    }
    *o = '\0';
    *p = s + 1;
    return 0;
}

/* Parses a whole line as one flat object of strings. 0 or -1. */
static int jparse(const char *line, struct jobj *j)
{
    const char *p = line;

    j->n = 0;
    if (*p++ != '{')
        return -1;
    for (;;) {
        if (j->n == JMAX || jstring(&p, j->key[j->n], sizeof j->key[0]) != 0)
            return -1;
        if (*p++ != ':' || jstring(&p, j->val[j->n], sizeof j->val[0]) != 0)
            return -1;
        j->n++;
        if (*p == ',') {
            p++;
            continue;
        }
        break;
    }
    return *p == '}' && p[1] == '\0' ? 0 : -1;
}

static const char *jget(const struct jobj *j, const char *key)
{
    int i;

    for (i = 0; i < j->n; i++)
        if (strcmp(j->key[i], key) == 0)
            return j->val[i];
    return NULL;
}

/* RFC 3339 in UTC with milliseconds: 2026-01-02T03:04:05.678Z. */
static int is_stamp(const char *t)
{
    static const char pat[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    size_t i;

    if (strlen(t) != sizeof pat - 1)
        return 0;
    for (i = 0; i < sizeof pat - 1; i++)
        if (pat[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != pat[i])
            return 0;
    return 1;
}

/* ----------------------------------------------------------------- tests */

START_TEST(json_lines)
{
    /* Quotes, a backslash, a newline, a tab, a control byte and a byte
     * that is not UTF-8, through --load ARGS into the greeter's log line. */
    static const char greeting[] = "say \"hi\" \\ back\nnew\tline\x01\xff end";
    static const char want[] = "greeter: greeting \"say \"hi\" \\ back\nnew"
                               "\tline\x01\xef\xbf\xbd end\"";
    char *plugin = tu_bin("plugin_greeter.so"), *load, *log, *out = NULL;
    char *line, *save = NULL;
    const char *args[] = {"--log-format", "json", "--load", NULL, NULL};
    int lines = 0, greeter = 0, ready = 0, stopped = 0;
    struct jobj *j = malloc(sizeof *j);

    ck_assert_ptr_nonnull(j);
    if (asprintf(&load, "%s:%s", plugin, greeting) < 0)
        abort();
    args[3] = load;
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, args), 0);
    ck_assert_int_eq(tu_keel(node.addr, &out, NULL, "call", "greeter", "ann",
                             "hello", NULL),
                     0);
    ck_assert_msg(strncmp(out, "say \"hi\" \\ back\n", 16) == 0 &&
                      strstr(out, ", ann (1)\n") != NULL,
                  "%s", out);
    free(out);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);

    log = tu_keeld_log(&node);
    ck_assert_ptr_nonnull(log);
    ck_assert_msg(strchr(log, '\xff') == NULL, "a raw non-UTF-8 byte: %s",
                  log);
    for (line = strtok_r(log, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        const char *lv, *msg;
        lines++;
        ck_assert_msg(jparse(line, j) == 0, "not a JSON object: %s", line);
        ck_assert_msg(jget(j, "time") && is_stamp(jget(j, "time")), "%s",
                      line);
        lv = jget(j, "level");
        ck_assert_msg(lv && (strcmp(lv, "error") == 0 ||
                             strcmp(lv, "warn") == 0 ||
                             strcmp(lv, "info") == 0 ||
                             strcmp(lv, "debug") == 0),
                      "%s", line);
        /* A standalone node has no name. */
        ck_assert_ptr_null(jget(j, "node"));
        msg = jget(j, "msg");
        ck_assert_ptr_nonnull(msg);
        if (strcmp(msg, want) == 0) {
            greeter++;
            ck_assert_str_eq(lv, "info");
        }
        if (strncmp(msg, "keeld: ready on port ", 21) == 0 &&
            atoi(msg + 21) == node.port)
            ready++;
        if (strcmp(msg, "node stopped") == 0)
            stopped++;
    }
    ck_assert_int_ge(lines, 4);
    ck_assert_int_eq(greeter, 1);
    ck_assert_int_eq(ready, 1);
    ck_assert_int_eq(stopped, 1);
    free(log);
    free(load);
    free(plugin);
    free(j);
}
END_TEST

/* The ready line is written whatever the level, JSON or not: scripts
 * wait for it. */
START_TEST(json_ready_at_error_level)
{
    const char *args[] = {"--log-format", "json", "--log-level", "error",
                          NULL};
    char *log;

    ck_assert_int_eq(tu_keeld_start(&node, data, 0, args), 0);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    log = tu_keeld_log(&node);
    ck_assert_msg(strncmp(log, "{\"time\":\"", 9) == 0 &&
                      strstr(log, "\"level\":\"info\",\"msg\":\"keeld: "
                                  "ready on port ") != NULL,
                  "%s", log);
    /* Info lines of the node itself are below the level. */
    ck_assert_ptr_null(strstr(log, "node running"));
    free(log);
}
END_TEST

static int file_has(const char *path, const char *what)
{
    char *s = tu_read_file(path);
    int has = s != NULL && strstr(s, what) != NULL;

    free(s);
    return has;
}

START_TEST(log_file_rotation)
{
    char *path, *rotated, *out = NULL, *err_log;
    const char *args[] = {"--log-file", NULL, NULL};
    struct stat st;
    struct timespec pause = {0, 20 * 1000 * 1000};
    int i;

    if (asprintf(&path, "%s/keeld.log", dir) < 0 ||
        asprintf(&rotated, "%s/keeld.log.1", dir) < 0)
        abort();
    args[1] = path;
    umask(022); /* the file's own mode shows whole */
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, args), 0);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0640);
    ck_assert(file_has(path, "info node running: data "));
    ck_assert(file_has(path, "info keeld: ready on port "));
    /* stderr keeps only keeld's own lines, for whoever waits on them. */
    err_log = tu_keeld_log(&node);
    ck_assert_ptr_nonnull(strstr(err_log, "keeld: ready on port "));
    ck_assert_ptr_null(strstr(err_log, "node running"));
    free(err_log);

    /* What logrotate does: rename, then SIGHUP. */
    ck_assert_int_eq(rename(path, rotated), 0);
    ck_assert_int_eq(kill(node.pid, SIGHUP), 0);
    for (i = 0; i < 500 && !file_has(path, "opened again"); i++)
        nanosleep(&pause, NULL);
    ck_assert_msg(file_has(path, "info log file "), "no new log file");
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0640);

    /* Still serving. */
    ck_assert_int_eq(tu_keel(node.addr, &out, NULL, "call", "counter", "c",
                             "incr 5", NULL),
                     0);
    ck_assert_str_eq(out, "5\n");
    free(out);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    ck_assert(file_has(path, "info node stopped"));
    ck_assert(!file_has(rotated, "node stopped"));
    ck_assert(file_has(rotated, "node running"));
    free(path);
    free(rotated);
}
END_TEST

START_TEST(plugin_args_and_log)
{
    char *plugin = tu_bin("plugin_greeter.so"), *load, *out = NULL, *log;
    const char *args[] = {"--load", NULL, NULL};

    if (asprintf(&load, "%s:good day", plugin) < 0)
        abort();
    args[1] = load;
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, args), 0);
    ck_assert_int_eq(tu_keel(node.addr, &out, NULL, "call", "greeter", "ann",
                             "hello", NULL),
                     0);
    ck_assert_str_eq(out, "good day, ann (1)\n");
    free(out);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    log = tu_keeld_log(&node);
    ck_assert_msg(strstr(log, " info greeter: greeting \"good day\"\n") !=
                      NULL,
                  "%s", log);
    free(log);

    /* Without ARGS the plugin keeps its own greeting. */
    args[1] = plugin;
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, args), 0);
    ck_assert_int_eq(tu_keel(node.addr, &out, NULL, "call", "greeter", "ann",
                             "hello", NULL),
                     0);
    ck_assert_str_eq(out, "hello, ann (2)\n");
    free(out);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    free(load);
    free(plugin);
}
END_TEST

START_TEST(plugin_abi_refused)
{
    char *bin = tu_bin("keeld"), *wrong = tu_bin("plugin_wrongabi.so");
    char *none = tu_bin("plugin_noabi.so"), *err = NULL, want[160];
    const char *argv[] = {bin, "--data", data, "--listen", "127.0.0.1:0",
                          "--load", wrong, NULL};

    ck_assert_int_eq(tu_run(argv, NULL, &err), 1);
    snprintf(want, sizeof want,
             "was built for plugin ABI %d.0, this keel has plugin ABI %d.%d",
             KEEL_PLUGIN_ABI_MAJOR + 1, KEEL_PLUGIN_ABI_MAJOR,
             KEEL_PLUGIN_ABI_MINOR);
    ck_assert_msg(strstr(err, want) != NULL, "%s", err);
    ck_assert_ptr_nonnull(strstr(err, "plugin_wrongabi.so"));
    ck_assert_ptr_null(strstr(err, "fixture init ran"));
    free(err);
    err = NULL;

    argv[6] = none;
    ck_assert_int_eq(tu_run(argv, NULL, &err), 1);
    ck_assert_msg(strstr(err, "declares no plugin ABI") != NULL &&
                      strstr(err, "rebuild it against this keel.h") != NULL,
                  "%s", err);
    ck_assert_ptr_null(strstr(err, "fixture init ran"));
    free(err);
    free(bin);
    free(wrong);
    free(none);
}
END_TEST

/* An init that fails is reported with its error's name; EEXIST, which
 * keel_node_register_type gives a name already taken, says so. A value
 * that is not a KEEL_E* code is named as it is. */
START_TEST(plugin_init_fails)
{
    char *bin = tu_bin("keeld"), *dup = tu_bin("plugin_dupname.so");
    char *err = NULL;
    const char *argv[] = {bin, "--data", data, "--listen", "127.0.0.1:0",
                          "--load", dup, NULL};

    ck_assert_int_eq(tu_run(argv, NULL, &err), 1);
    ck_assert_msg(strstr(err, "plugin_dupname.so: keel_plugin_init returned "
                              "EEXIST (already exists): a type it registers "
                              "has the name of one already registered") !=
                      NULL,
                  "%s", err);
    ck_assert_ptr_nonnull(strstr(err, "fixture init ran"));
    free(err);
    err = NULL;

    {
        char *arg = malloc(strlen(dup) + 16);
        sprintf(arg, "%s:return 3", dup);
        argv[6] = arg;
        ck_assert_int_eq(tu_run(argv, NULL, &err), 1);
        ck_assert_msg(strstr(err, "plugin_dupname.so: keel_plugin_init "
                                  "returned 3, which is not 0 or a KEEL_E* "
                                  "code") != NULL,
                      "%s", err);
        free(err);
        free(arg);
    }
    free(bin);
    free(dup);
}
END_TEST

/* `--load plugin.so` beside the file loads it, as --check-config reads
 * it, rather than looking for it among the system's libraries. */
START_TEST(plugin_bare_name)
{
    char *plugin = tu_bin("plugin_greeter.so"), *out = NULL, *err = NULL;
    char *bin = tu_bin("keeld"), *pdir = strdup(plugin);
    const char *args[] = {"--load", "plugin_greeter.so:hi", NULL};
    const char *check[] = {bin, "--check-config", "--data", data, "--load",
                           "plugin_greeter.so", NULL};
    char fresh[600];
    const char *missing[] = {bin, "--data", fresh, "--listen", "127.0.0.1:0",
                             "--load", "nosuch_plugin.so", NULL};
    struct stat st;

    snprintf(fresh, sizeof fresh, "%s-fresh", data);

    ck_assert_ptr_nonnull(pdir);
    ck_assert_int_eq(chdir(dirname(pdir)), 0);
    ck_assert_int_eq(tu_run(check, &out, &err), 0);
    ck_assert_ptr_nonnull(strstr(out, "configuration ok"));
    free(out);
    free(err);
    ck_assert_int_eq(tu_keeld_start(&node, data, 0, args), 0);
    ck_assert_int_eq(tu_keel(node.addr, &out, NULL, "call", "greeter", "ann",
                             "hello", NULL),
                     0);
    ck_assert_str_eq(out, "hi, ann (1)\n");
    free(out);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
    /* One that is not there is named as a file of this directory, and
     * the start fails before it makes the data directory. */
    err = NULL;
    ck_assert_int_eq(tu_run(missing, NULL, &err), 1);
    ck_assert_msg(strstr(err, "--load nosuch_plugin.so: cannot read "
                              "./nosuch_plugin.so: No such file") != NULL,
                  "%s", err);
    ck_assert_msg(stat(fresh, &st) != 0,
                  "a start refused for a missing plugin left %s behind",
                  fresh);
    free(err);
    free(pdir);
    free(bin);
    free(plugin);
}
END_TEST

START_TEST(bad_log_options)
{
    char *bin = tu_bin("keeld"), *err = NULL;
    const char *fmt[] = {bin, "--data", data, "--log-format", "xml", NULL};
    const char *file[] = {bin, "--data", data, "--log-file",
                          "/nonexistent/dir/keeld.log", NULL};
    const char *load[] = {bin, "--data", data, "--load", ":args", NULL};

    ck_assert_int_eq(tu_run(fmt, NULL, &err), 2);
    ck_assert_ptr_nonnull(strstr(err, "--log-format is text or json"));
    free(err);
    err = NULL;
    ck_assert_int_eq(tu_run(file, NULL, &err), 2);
    ck_assert_msg(strstr(err, "--log-file: cannot open "
                              "/nonexistent/dir/keeld.log") != NULL,
                  "%s", err);
    free(err);
    err = NULL;
    ck_assert_int_eq(tu_run(load, NULL, &err), 2);
    ck_assert_ptr_nonnull(strstr(err, "--load takes PATH.so[:ARGS]"));
    free(err);
    free(bin);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("logplug");
    TCase *tc = tcase_create("logplug");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, json_lines);
    tcase_add_test(tc, json_ready_at_error_level);
    tcase_add_test(tc, log_file_rotation);
    tcase_add_test(tc, plugin_args_and_log);
    tcase_add_test(tc, plugin_abi_refused);
    tcase_add_test(tc, plugin_init_fails);
    tcase_add_test(tc, plugin_bare_name);
    tcase_add_test(tc, bad_log_options);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
