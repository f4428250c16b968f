/* Logging: the embedder's callback (keel_log_set_callback) receiving a
 * node's lines in process, one call at a time from several threads, and
 * the JSON string escaping of keel_log_json_escape. keeld's --log-format
 * and --log-file are tested on real processes in test_logplug. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "keel.h"
#include "proc.h"
#include "testutil.h"

static char *dir;

/* What the callback saw; only the callback writes it (keel makes the
 * calls one at a time) until the test reads it with no node running. */
struct seen {
    char text[16384];
    size_t len;
    int levels[4];
    int calls;
    atomic_int inside; /* calls running now: never more than one */
    int overlapped;
};

static void record_cb(void *data, int level, const char *msg)
{
    struct seen *s = data;
    int n;

    if (atomic_fetch_add(&s->inside, 1) != 0)
        s->overlapped = 1;
    s->calls++;
    if (level >= 0 && level <= KEEL_LOG_DEBUG)
        s->levels[level]++;
    n = snprintf(s->text + s->len, sizeof s->text - s->len, "%d %s\n", level,
                 msg);
    if (n > 0 && (size_t)n < sizeof s->text - s->len)
        s->len += (size_t)n;
    atomic_fetch_sub(&s->inside, 1);
}

static void setup(void)
{
    dir = tu_tmpdir("log");
}

static void teardown(void)
{
    keel_log_set_callback(NULL, NULL);
    tu_rmrf(dir);
    free(dir);
}

START_TEST(callback_gets_node_lines)
{
    static struct seen s;
    keel_node_options o;
    keel_node *n;
    char err[256];
    void *reply = NULL;
    size_t len;

    memset(&s, 0, sizeof s);
    keel_log_set_callback(record_cb, &s);
    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_INFO;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    /* The node's own line, from its loop thread. */
    ck_assert_int_eq(keel_call_sync(n, "counter", "c", 1, "incr 1", 6,
                                    &reply, &len),
                     0);
    keel_free(reply);
    keel_node_log(n, KEEL_LOG_WARN, "plugin says \"%d\"\nand more", 42);
    keel_node_log(n, KEEL_LOG_DEBUG, "below the level: not logged");
    keel_node_stop(n);
    keel_node_join(n);
    keel_node_destroy(n);
    /* Gone back to stderr: no more calls. */
    keel_log_set_callback(NULL, NULL);
    keel_node_log(NULL, KEEL_LOG_ERROR, "after the callback was removed");

    ck_assert_msg(strstr(s.text, "2 node running: data ") != NULL, "%s",
                  s.text);
    ck_assert_ptr_nonnull(strstr(s.text, "2 node stopped\n"));
    /* The message alone, as formatted: no time, level or escaping. */
    ck_assert_ptr_nonnull(
        strstr(s.text, "\n1 plugin says \"42\"\nand more\n"));
    ck_assert_ptr_null(strstr(s.text, "below the level"));
    ck_assert_ptr_null(strstr(s.text, "after the callback"));
    ck_assert_int_eq(s.levels[KEEL_LOG_DEBUG], 0);
    ck_assert_int_eq(s.levels[KEEL_LOG_WARN], 1);
    ck_assert_int_eq(s.overlapped, 0);
}
END_TEST

#define LOGGERS 4
#define LINES 300

static void *logger_main(void *arg)
{
    int i;

    for (i = 0; i < LINES; i++)
        keel_node_log(NULL, KEEL_LOG_INFO, "thread %d line %d",
                      (int)(intptr_t)arg, i);
    return NULL;
}

START_TEST(callback_calls_never_overlap)
{
    static struct seen s;
    pthread_t t[LOGGERS];
    int i;

    memset(&s, 0, sizeof s);
    keel_log_set_level(KEEL_LOG_INFO);
    keel_log_set_callback(record_cb, &s);
    for (i = 0; i < LOGGERS; i++)
        ck_assert_int_eq(
            pthread_create(&t[i], NULL, logger_main, (void *)(intptr_t)i), 0);
    for (i = 0; i < LOGGERS; i++)
        pthread_join(t[i], NULL);
    keel_log_set_callback(NULL, NULL);
    ck_assert_int_eq(s.calls, LOGGERS * LINES);
    ck_assert_int_eq(s.overlapped, 0);
}
END_TEST

/* A callback that logs through keel: that line goes to stderr instead of
 * deadlocking or recursing. */
static int nested_calls;

static void nested_cb(void *data, int level, const char *msg)
{
    (void)data;
    (void)level;
    (void)msg;
    nested_calls++;
    keel_node_log(NULL, KEEL_LOG_ERROR, "from inside the callback");
}

START_TEST(callback_may_log)
{
    nested_calls = 0;
    keel_log_set_callback(nested_cb, NULL);
    keel_node_log(NULL, KEEL_LOG_ERROR, "outer");
    keel_log_set_callback(NULL, NULL);
    ck_assert_int_eq(nested_calls, 1);
}
END_TEST

static const char *esc(const char *s, size_t outlen)
{
    static char out[256];

    ck_assert_uint_le(outlen, sizeof out);
    keel_log_json_escape(s, out, outlen);
    return out;
}

START_TEST(json_escape)
{
    ck_assert_str_eq(esc("plain text", 256), "plain text");
    ck_assert_str_eq(esc("say \"hi\" \\ now", 256),
                     "say \\\"hi\\\" \\\\ now");
    ck_assert_str_eq(esc("a\nb\rc\td\be\ff", 256),
                     "a\\nb\\rc\\td\\be\\ff");
    ck_assert_str_eq(esc("\x01\x1f\x7f", 256), "\\u0001\\u001f\\u007f");
    /* Valid UTF-8 passes as it is. */
    ck_assert_str_eq(esc("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 256),
                     "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    /* Not UTF-8: a stray byte, a stray continuation, an overlong form, a
     * surrogate, past U+10FFFF, a sequence cut short by the end. */
    ck_assert_str_eq(esc("x\xffy", 256), "x\\ufffdy");
    ck_assert_str_eq(esc("\x80", 256), "\\ufffd");
    ck_assert_str_eq(esc("\xc0\xaf", 256), "\\ufffd\\ufffd");
    ck_assert_str_eq(esc("\xed\xa0\x80", 256), "\\ufffd\\ufffd\\ufffd");
    ck_assert_str_eq(esc("\xf4\x90\x80\x80", 256),
                     "\\ufffd\\ufffd\\ufffd\\ufffd");
    ck_assert_str_eq(esc("ok\xe2\x82", 256), "ok\\ufffd\\ufffd");
    /* Cut to fit, never inside an escape or a character. */
    ck_assert_str_eq(esc("ab\"cd", 4), "ab");
    ck_assert_str_eq(esc("ab\"cd", 5), "ab\\\"");
    ck_assert_str_eq(esc("a\xc3\xa9", 3), "a");
    ck_assert_str_eq(esc("a\n", 1), "");
}
END_TEST

/* JSON lines to a file, with the process's node name; then the file
 * renamed and opened again, as for log rotation. */
START_TEST(json_file_and_reopen)
{
    char *path, *rotated, *text;
    char err[256];

    if (asprintf(&path, "%s/keel.log", dir) < 0 ||
        asprintf(&rotated, "%s/keel.log.1", dir) < 0)
        abort();
    keel_log_set_level(KEEL_LOG_INFO);
    keel_log_set_format(KEEL_LOG_FORMAT_JSON);
    keel_log_set_node("n1");
    ck_assert_int_eq(keel_log_open_file(path, err, sizeof err), 0);
    keel_log(KEEL_LOG_WARN, "first \"quoted\"\tline");
    ck_assert_int_eq(rename(path, rotated), 0);
    keel_log_reopen();
    keel_log(KEEL_LOG_ERROR, "second");

    text = tu_read_file(rotated);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strncmp(text, "{\"time\":\"", 9) == 0, "%s", text);
    ck_assert_msg(strstr(text, "Z\",\"level\":\"warn\",\"node\":\"n1\","
                               "\"msg\":\"first \\\"quoted\\\"\\tline\"}\n") !=
                      NULL,
                  "%s", text);
    ck_assert_ptr_null(strstr(text, "second"));
    free(text);
    text = tu_read_file(path);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "opened again"));
    ck_assert_ptr_nonnull(
        strstr(text, "\"level\":\"error\",\"node\":\"n1\",\"msg\":\"second\"}\n"));
    free(text);
    ck_assert_int_eq(keel_log_open_file("/nonexistent/dir/x.log", err,
                                        sizeof err),
                     KEEL_EIO);
    ck_assert_ptr_nonnull(strstr(err, "cannot open /nonexistent/dir/x.log"));
    free(path);
    free(rotated);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, callback_gets_node_lines);
    tcase_add_test(tc, callback_calls_never_overlap);
    tcase_add_test(tc, callback_may_log);
    tcase_add_test(tc, json_escape);
    tcase_add_test(tc, json_file_and_reopen);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
