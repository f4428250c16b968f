/* history.jsonl (chaos/history.c): what the writer writes reads back the
 * same; the writer refuses what the reader would; the reader refuses
 * malformed lines and impossible sequences, naming the line. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos/history.h"
#include "chaos/hwriter.h"
#include "chaos/json.h"
#include "chaos_hist.h"
#include "keel.h"
#include "testutil.h"

static chaos_event event(chaos_type t, int64_t client, const char *actor,
                         chaos_fn op, int64_t ns)
{
    chaos_event e;

    memset(&e, 0, sizeof e);
    e.t = t;
    e.client = client;
    e.actor = actor;
    e.op = op;
    e.time_ns = ns;
    return e;
}

static chaos_value vstr(const char *s)
{
    chaos_value v;

    memset(&v, 0, sizeof v);
    v.type = CHAOS_V_STR;
    v.s = s;
    return v;
}

static chaos_value vint(int64_t i)
{
    chaos_value v;

    memset(&v, 0, sizeof v);
    v.type = CHAOS_V_INT;
    v.i = i;
    return v;
}

static chaos_value vstrs(const char *const *s, size_t n)
{
    chaos_value v;

    memset(&v, 0, sizeof v);
    v.type = CHAOS_V_STRS;
    v.strs = s;
    v.n = n;
    return v;
}

static void must_write(chaos_hwriter *w, const chaos_event *e)
{
    char err[256];
    int rc = chaos_hwriter_write(w, e, err, sizeof err);

    ck_assert_msg(rc == 0, "write: %s", err);
}

/* Every kind of event and value, strings that need escapes, read back. */
START_TEST(written_history_reads_back)
{
    static const char *const cas[] = {"a \"quoted\" \\ one", "new\nline"};
    static const char *const elems[] = {"é", "\xf0\x9f\x90\x98", "tab\there"};
    char *dir = tu_tmpdir("chaos-hist"), path[512], err[256];
    chaos_hwriter w;
    chaos_history h;
    chaos_event e;
    FILE *f;
    int rc;

    snprintf(path, sizeof path, "%s/history.jsonl", dir);
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    chaos_hwriter_init(&w, f);

    e = event(CHAOS_INVOKE, 0, "register/r 1", CHAOS_CAS, 10);
    e.args = vstrs(cas, 2);
    e.node = "n1";
    must_write(&w, &e);
    e = event(CHAOS_INVOKE, 7, "counter/c", CHAOS_INCR, 11);
    e.args = vint(-3);
    must_write(&w, &e);
    e = event(CHAOS_OK, 0, "register/r 1", CHAOS_CAS, 12);
    e.args = vstrs(cas, 2);
    e.result.type = CHAOS_V_BOOL;
    e.result.b = 1;
    must_write(&w, &e);
    e = event(CHAOS_INFO, 7, "counter/c", CHAOS_INCR, 12);
    e.args = vint(-3);
    e.error = "ETIMEDOUT";
    must_write(&w, &e);
    e = event(CHAOS_INVOKE, 0, "kv/s", CHAOS_READ_SET, 20);
    e.final = 1;
    must_write(&w, &e);
    e = event(CHAOS_OK, 0, "kv/s", CHAOS_READ_SET, 21);
    e.final = 1;
    e.result = vstrs(elems, 3);
    must_write(&w, &e);
    e = event(CHAOS_INVOKE, 7, "counter/c", CHAOS_GET, 30);
    must_write(&w, &e);
    chaos_hwriter_close(&w);
    fclose(f);

    chaos_history_init(&h);
    rc = chaos_history_read(&h, path, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_uint_eq(h.nevents, 7);
    ck_assert_uint_eq(h.nops, 4);
    ck_assert_uint_eq(h.nactors, 3);
    ck_assert_uint_eq(h.nclients, 2);
    ck_assert_str_eq(h.actors[0].name, "register/r 1");
    ck_assert_int_eq(h.actors[0].family, CHAOS_REGISTER);
    ck_assert_int_eq(h.actors[1].family, CHAOS_COUNTER);
    ck_assert_int_eq(h.actors[2].family, CHAOS_SET);

    ck_assert_int_eq(h.ops[0].fn, CHAOS_CAS);
    ck_assert_int_eq(h.ops[0].outcome, CHAOS_OK);
    ck_assert_str_eq(h.ops[0].args.strs[0], cas[0]);
    ck_assert_str_eq(h.ops[0].args.strs[1], cas[1]);
    ck_assert_int_eq(h.ops[0].result.b, 1);
    ck_assert_str_eq(h.ops[0].node, "n1");
    ck_assert_uint_eq(h.ops[0].invoke_line, 1);
    ck_assert_uint_eq(h.ops[0].complete_line, 3);
    ck_assert_int_eq(h.ops[0].invoke_ns, 10);
    ck_assert_int_eq(h.ops[0].complete_ns, 12);

    ck_assert_int_eq(h.ops[1].outcome, CHAOS_INFO);
    ck_assert_int_eq(h.ops[1].args.i, -3);
    ck_assert_str_eq(h.ops[1].error, "ETIMEDOUT");

    ck_assert_int_eq(h.ops[2].final, 1);
    ck_assert_uint_eq(h.ops[2].result.n, 3);
    ck_assert_str_eq(h.ops[2].result.strs[0], elems[0]);
    ck_assert_str_eq(h.ops[2].result.strs[1], elems[1]);
    ck_assert_str_eq(h.ops[2].result.strs[2], elems[2]);

    /* Invoked, never completed: counts as info. */
    ck_assert_int_eq(h.ops[3].outcome, CHAOS_INFO);
    ck_assert_int_eq(h.ops[3].completed, 0);
    ck_assert_uint_eq(h.ops[3].complete, UINT64_MAX);
    ck_assert_uint_eq(h.actors[1].nops, 2);
    chaos_history_free(&h);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The writer refuses an event the reader would refuse, writes nothing,
 * and goes on from where it was. */
START_TEST(writer_refuses_what_reader_would)
{
    static const char *const three[] = {"a", "b", "c"};
    char *buf = NULL, err[256];
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    chaos_hwriter w;
    chaos_event e;

    ck_assert_ptr_nonnull(f);
    chaos_hwriter_init(&w, f);
    e = event(CHAOS_OK, 1, "register/r", CHAOS_WRITE, 5);
    e.args = vstr("1");
    ck_assert_int_eq(chaos_hwriter_write(&w, &e, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "no operation outstanding"));

    e = event(CHAOS_INVOKE, 1, "register/r", CHAOS_WRITE, 5);
    e.args = vint(1);
    ck_assert_int_eq(chaos_hwriter_write(&w, &e, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "args must be the value written"));
    e.args = vstr("\xff");
    ck_assert_int_eq(chaos_hwriter_write(&w, &e, err, sizeof err),
                     KEEL_EINVAL);
    e.args = vstr("1");
    e.actor = "no-slash";
    ck_assert_int_eq(chaos_hwriter_write(&w, &e, err, sizeof err),
                     KEEL_EINVAL);
    e.actor = "register/r";
    e.final = 1;
    ck_assert_int_eq(chaos_hwriter_write(&w, &e, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "final marks reads only"));
    e.final = 0;
    must_write(&w, &e);

    e.time_ns = 6;
    e.op = CHAOS_READ;
    e.args.type = CHAOS_V_NULL;
    ck_assert_int_eq(chaos_hwriter_write(&w, &e, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "outstanding"));

    e = event(CHAOS_OK, 1, "register/r", CHAOS_WRITE, 4);
    e.args = vstr("1");
    ck_assert_int_eq(chaos_hwriter_write(&w, &e, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "earlier"));
    e.time_ns = 7;
    e.args = vstr("2");
    ck_assert_int_eq(chaos_hwriter_write(&w, &e, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "does not repeat its invocation's args"));
    e.args = vstr("1");
    e.result = vstr("x");
    ck_assert_int_eq(chaos_hwriter_write(&w, &e, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "result must be null"));
    e.result.type = CHAOS_V_NULL;
    must_write(&w, &e);

    e = event(CHAOS_INVOKE, 2, "register/r", CHAOS_CAS, 8);
    e.args = vstrs(three, 3);
    ck_assert_int_eq(chaos_hwriter_write(&w, &e, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "[old, new]"));
    e = event(CHAOS_INVOKE, 2, "register/r", CHAOS_INCR, 8);
    e.args = vint(1);
    ck_assert_int_eq(chaos_hwriter_write(&w, &e, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_str_eq(err, "incr on register/r, whose operations so far are "
                          "register operations: one actor, one model");
    chaos_hwriter_close(&w);
    fclose(f);
    ck_assert_str_eq(buf, "{\"t\":\"invoke\",\"index\":0,\"time_ns\":5,"
                          "\"client\":1,\"actor\":\"register/r\",\"op\":"
                          "\"write\",\"args\":\"1\"}\n"
                          "{\"t\":\"ok\",\"index\":1,\"time_ns\":7,"
                          "\"client\":1,\"actor\":\"register/r\",\"op\":"
                          "\"write\",\"args\":\"1\",\"result\":null}\n");
    free(buf);
}
END_TEST

/* Reads text as a history file; returns the reader's code, err set. */
static int read_text(const char *text, char *err, size_t errlen)
{
    FILE *f = fmemopen((void *)text, strlen(text), "r");
    chaos_history h;
    int rc;

    ck_assert_ptr_nonnull(f);
    chaos_history_init(&h);
    rc = chaos_history_read_stream(&h, f, "h.jsonl", err, errlen);
    chaos_history_free(&h);
    fclose(f);
    return rc;
}

#define INV_W(i, c, v)                                                       \
    "{\"t\":\"invoke\",\"index\":" #i ",\"time_ns\":" #i ",\"client\":" #c  \
    ",\"actor\":\"register/r\",\"op\":\"write\",\"args\":\"" v "\"}\n"
#define OK_W(i, c, v)                                                        \
    "{\"t\":\"ok\",\"index\":" #i ",\"time_ns\":" #i ",\"client\":" #c      \
    ",\"actor\":\"register/r\",\"op\":\"write\",\"args\":\"" v "\","         \
    "\"result\":null}\n"

/* Malformed input: each case is refused with a message that names the
 * line and says what is wrong. */
START_TEST(malformed_lines_refused)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"{\"t\":\"invoke\",", "h.jsonl:1: column 15: expected a member"},
        {"[1,2]\n", "h.jsonl:1: a line holds one JSON object"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"read\",\"args\":null,\"colour\":1}\n",
         "h.jsonl:1: unknown member \"colour\""},
        {"{\"t\":\"invoke\",\"t\":\"ok\"}\n", "member \"t\" appears twice"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":1.5,\"client\":1,"
         "\"actor\":\"register/r\",\"op\":\"read\",\"args\":null}\n",
         "h.jsonl:1: column 35: numbers must be integers"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":99999999999999999999}\n",
         "out of the signed 64-bit range"},
        {"{\"t\":\"begin\"}\n", "t must be invoke, ok, fail or info"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"delete\",\"args\":null}\n",
         "op must be read, write"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"read\"}\n",
         "\"args\" missing (null for read)"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":-1,"
         "\"actor\":\"register/r\",\"op\":\"read\",\"args\":null}\n",
         "client must be 0 or more"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register\",\"op\":\"read\",\"args\":null}\n",
         "actor must be \"type/id\""},
        {INV_W(0, 1, "1") INV_W(5, 2, "1"),
         "h.jsonl:2: index 5 where 1 was due"},
        {INV_W(3, 1, "1") INV_W(1, 2, "1"), "h.jsonl:1: index 3 where 0"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":5,\"client\":1,"
         "\"actor\":\"register/r\",\"op\":\"write\",\"args\":\"1\"}\n"
         "{\"t\":\"invoke\",\"index\":1,\"time_ns\":4,\"client\":2,"
         "\"actor\":\"register/r\",\"op\":\"write\",\"args\":\"1\"}\n",
         "h.jsonl:2: time_ns 4 is earlier than the line before's 5"},
        {OK_W(0, 1, "1"),
         "h.jsonl:1: ok of client 1, which has no operation outstanding"},
        {INV_W(0, 1, "1") INV_W(1, 1, "2"),
         "h.jsonl:2: client 1 invokes write while its write on register/r "
         "(line 1) is outstanding"},
        {INV_W(0, 1, "1") OK_W(1, 1, "2"),
         "h.jsonl:2: ok of client 1 does not repeat its invocation's args"},
        {INV_W(0, 1, "1")
         "{\"t\":\"ok\",\"index\":1,\"time_ns\":1,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"write\",\"args\":\"1\"}\n",
         "h.jsonl:2: an ok completion needs \"result\""},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"read\",\"args\":null,\"result\":\"1\"}\n",
         "an invocation has no result"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"read\",\"args\":null}\n"
         "{\"t\":\"ok\",\"index\":1,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"read\",\"args\":null,\"result\":7}\n",
         "h.jsonl:2: ok read: result must be the value read, not an integer"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"cas\",\"args\":[\"1\",\"2\",\"3\"]}\n",
         "cas: args must be [old, new]"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"cas\",\"args\":[\"1\",2]}\n",
         "args: an array holds strings only"},
        {INV_W(0, 1, "1")
         "{\"t\":\"fail\",\"index\":1,\"time_ns\":1,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"write\",\"args\":\"1\",\"result\":\"x\"}\n",
         "a fail completion has no result"},
        {INV_W(0, 1, "1")
         "{\"t\":\"invoke\",\"index\":1,\"time_ns\":1,\"client\":2,\"actor\":"
         "\"register/r\",\"op\":\"incr\",\"args\":1}\n",
         "h.jsonl:2: incr on register/r, whose operations so far are register"},
        {INV_W(0, 1, "1") "\n", "h.jsonl:2: empty line"},
        {"{\"t\":\"invoke\"}\r\n", "line ends with \\r\\n"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"write\",\"args\":\"a\\u0000b\"}\n",
         "\\u0000 is not allowed"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"write\",\"args\":\"\xc3\x28\"}\n",
         "invalid UTF-8"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"write\",\"args\":\"\\ud800\"}\n",
         "lone UTF-16 surrogate"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"write\",\"args\":{\"a\":1}}\n",
         "args: an object is not a value here"},
        {"{\"t\":\"invoke\",\"index\":0,\"time_ns\":0,\"client\":1,\"actor\":"
         "\"register/r\",\"op\":\"write\",\"args\":\"x\"} x\n",
         "text after the value"},
        {INV_W(0, 1, "1") "{\"t\":\"ok\",\"index\":1,\"time_n",
         "h.jsonl:2: column 21: string not closed (the last line has no "
         "newline: was the file cut short?)"},
        {"[[[[[[[[[[1]]]]]]]]]]\n", "nested deeper than 8"},
    };
    char err[512];
    size_t k;

    for (k = 0; k < sizeof cases / sizeof *cases; k++) {
        int rc = read_text(cases[k].text, err, sizeof err);
        ck_assert_msg(rc == KEEL_EINVAL, "case %zu: rc %d", k, rc);
        ck_assert_msg(strstr(err, cases[k].want) != NULL,
                      "case %zu: got \"%s\", want \"%s\"", k, err,
                      cases[k].want);
    }
    /* The good lines of those texts do read. */
    ck_assert_int_eq(read_text(INV_W(0, 1, "1") OK_W(1, 1, "1"), err,
                               sizeof err),
                     0);
    /* A last line without its newline is fine when it is whole. */
    ck_assert_int_eq(read_text(INV_W(0, 1, "1") "{\"t\":\"ok\",\"index\":1,"
                                                "\"time_ns\":1,\"client\":1,"
                                                "\"actor\":\"register/r\","
                                                "\"op\":\"write\",\"args\":"
                                                "\"1\",\"result\":null}",
                               err, sizeof err),
                     0);
}
END_TEST

START_TEST(missing_file)
{
    chaos_history h;
    char err[256];

    chaos_history_init(&h);
    ck_assert_int_eq(chaos_history_read(&h, "/nonexistent/history.jsonl",
                                        err, sizeof err),
                     KEEL_EIO);
    ck_assert_str_eq(err, "/nonexistent/history.jsonl: No such file or "
                          "directory");
    chaos_history_free(&h);
}
END_TEST

/* Every JSON string escape decodes; the writer's escapes read back. */
START_TEST(json_strings)
{
    const char *text = "[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\",\"\\u00e9\\u20ac"
                       "\\ud83d\\ude00\", \"\x7f\", true, false, null, 0, "
                       "-9223372036854775808]";
    chaos_arena a;
    chaos_json j;
    chaos_buf b;
    char err[128];

    chaos_arena_init(&a);
    ck_assert_int_eq(chaos_json_parse(text, strlen(text), &a, &j, err,
                                      sizeof err),
                     0);
    ck_assert_int_eq(j.type, CHAOS_JSON_ARRAY);
    ck_assert_uint_eq(j.n, 8);
    ck_assert_str_eq(j.items[0].s, "\"\\/\b\f\n\r\t");
    ck_assert_str_eq(j.items[1].s, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    ck_assert_int_eq(j.items[7].i, INT64_MIN);
    ck_assert_int_eq(j.items[3].b, 1);
    ck_assert_int_eq(j.items[5].type, CHAOS_JSON_NULL);

    chaos_buf_init(&b);
    ck_assert_int_eq(chaos_json_put_str(&b, j.items[0].s), 0);
    ck_assert_int_eq(chaos_json_put_str(&b, "\x01\x7f"), 0);
    ck_assert_str_eq(b.p, "\"\\\"\\\\/\\u0008\\u000c\\n\\r\\t\""
                          "\"\\u0001\\u007f\"");
    ck_assert_int_eq(chaos_json_put_str(&b, "\xe0\x80\x80"), KEEL_EINVAL);
    chaos_buf_free(&b);

    ck_assert_int_eq(chaos_json_parse("01", 2, &a, &j, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_int_eq(chaos_json_parse("tru", 3, &a, &j, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_int_eq(chaos_json_parse("\"\\x\"", 4, &a, &j, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_int_eq(chaos_json_parse("\"a\tb\"", 5, &a, &j, err, sizeof err),
                     KEEL_EINVAL);
    ck_assert_int_eq(chaos_json_parse("", 0, &a, &j, err, sizeof err),
                     KEEL_EINVAL);
    chaos_arena_free(&a);
}
END_TEST

/* The helper the other chaos tests build histories with. */
START_TEST(builder_and_describe)
{
    chaos_history h;
    chaos_buf b;

    chaos_history_init(&h);
    hb_actor("register/r");
    hb_inv(&h, 1, "cas", "[\"a\",\"b\"]");
    hb_ret(&h, "ok", 1, "true");
    hb_final();
    hb_op(&h, 2, "read", "null", "ok", "\"b\"");
    hb_op(&h, 3, "write", "\"c\"", "info", NULL);
    ck_assert_uint_eq(h.nops, 3);
    chaos_buf_init(&b);
    chaos_op_describe(&h, &h.ops[0], &b);
    chaos_buf_puts(&b, "|");
    chaos_op_describe(&h, &h.ops[1], &b);
    chaos_buf_puts(&b, "|");
    chaos_op_describe(&h, &h.ops[2], &b);
    ck_assert_str_eq(b.p, "client 1 cas(\"a\", \"b\") -> true  [ok, lines 1-2]|"
                          "client 2 read() -> \"b\"  [ok, final, lines 3-4]|"
                          "client 3 write(\"c\") -> ?  [info, lines 5-6]");
    chaos_buf_free(&b);
    chaos_history_free(&h);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("chaos_history");
    TCase *tc = tcase_create("history");

    tcase_add_test(tc, written_history_reads_back);
    tcase_add_test(tc, writer_refuses_what_reader_would);
    tcase_add_test(tc, malformed_lines_refused);
    tcase_add_test(tc, missing_file);
    tcase_add_test(tc, json_strings);
    tcase_add_test(tc, builder_and_describe);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
