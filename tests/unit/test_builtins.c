/* The built-in actor types (counter, kv, register) refuse malformed
 * arguments with EBADMSG and leave the actor's state as it was
 * (docs/protocol.md, "The built-in actor types"). Messages are sent as
 * bytes, so that NULs and other stray bytes can be part of them. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"
#include "testutil.h"

static char *dir;
static keel_node *node;

static void setup(void)
{
    keel_node_options o;
    char err[256];
    int rc;

    dir = tu_tmpdir("builtins");
    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_WARN;
    rc = keel_node_create(&o, &node, err, sizeof err);
    ck_assert_msg(rc == 0, "create: %s %s", keel_strerror(rc), err);
    ck_assert_int_eq(keel_node_start(node), 0);
}

static void teardown(void)
{
    keel_node_stop(node);
    keel_node_join(node);
    keel_node_destroy(node);
    tu_rmrf(dir);
    free(dir);
}

/* Sends msg (mlen bytes) to (type, id); the reply as a string in out. */
static int send_msg(const char *type, const char *id, const void *msg,
                    size_t mlen, char *out, size_t outlen)
{
    void *reply = NULL;
    size_t len = 0, m;
    int rc = keel_call_sync(node, type, id, strlen(id), msg, mlen, &reply,
                            &len);

    m = len < outlen - 1 ? len : outlen - 1;
    memcpy(out, reply ? reply : "", m);
    out[m] = '\0';
    keel_free(reply);
    return rc;
}

static void expect(const char *type, const char *id, const char *msg,
                   const char *want)
{
    char buf[256];
    int rc = send_msg(type, id, msg, strlen(msg), buf, sizeof buf);

    ck_assert_msg(rc == 0, "%s %s '%s': %s", type, id, msg,
                  keel_strerror(rc));
    ck_assert_msg(strcmp(buf, want) == 0, "%s %s '%s': got '%s', want '%s'",
                  type, id, msg, buf, want);
}

/* Refused with code, whatever bytes msg holds (mlen of them). */
static void refused(const char *type, const char *id, const void *msg,
                    size_t mlen, int code)
{
    char buf[256];
    int rc = send_msg(type, id, msg, mlen, buf, sizeof buf);

    ck_assert_msg(rc == code, "%s %s '%.*s' (%zu bytes): %s (%s), want %s",
                  type, id, (int)mlen, (const char *)msg, mlen,
                  keel_err_name(rc), buf, keel_err_name(code));
}

#define BAD(type, id, lit) refused(type, id, lit, sizeof lit - 1, KEEL_EBADMSG)

START_TEST(counter_integers_are_strict)
{
    expect("counter", "c", "incr 5", "5");
    /* A NUL inside the number, junk after it, blanks, other bases,
     * a bare sign, nothing at all after the separating space. */
    BAD("counter", "c", "incr \0009");
    BAD("counter", "c", "incr 2\0junk");
    BAD("counter", "c", "incr 9\0");
    BAD("counter", "c", "incr \0");
    BAD("counter", "c", "incr 2x");
    BAD("counter", "c", "incr \t5");
    BAD("counter", "c", "incr 5\n");
    BAD("counter", "c", "incr 0x10");
    BAD("counter", "c", "incr 1e3");
    BAD("counter", "c", "incr -");
    BAD("counter", "c", "incr +");
    BAD("counter", "c", "incr --1");
    BAD("counter", "c", "incr ");
    BAD("counter", "c", "incr  5");
    BAD("counter", "c", "incr 5 ");
    BAD("counter", "c", "incr 5 6");
    BAD("counter", "c", "decr \0001");
    /* Out of the signed 64-bit range. */
    BAD("counter", "c", "incr 9223372036854775808");
    BAD("counter", "c", "incr -9223372036854775809");
    BAD("counter", "c", "incr 99999999999999999999999");
    BAD("counter", "c", "decr 18446744073709551621");
    /* The command itself. */
    BAD("counter", "c", "");
    BAD("counter", "c", " incr");
    BAD("counter", "c", "incr\0");
    BAD("counter", "c", "get ");
    BAD("counter", "c", "get x");
    /* None of it changed the value. */
    expect("counter", "c", "get", "5");
    /* A sign and leading zeros are fine. */
    expect("counter", "c", "incr -3", "2");
    expect("counter", "c", "incr +4", "6");
    expect("counter", "c", "decr 006", "0");
    expect("counter", "d", "incr -9223372036854775808",
           "-9223372036854775808");
    expect("counter", "e", "incr 9223372036854775807", "9223372036854775807");
    expect("counter", "c", "incr", "1");
    expect("counter", "c", "decr", "0");
}
END_TEST

START_TEST(register_arguments_are_strict)
{
    expect("register", "r", "write v1", "OK");
    /* cas without NEW, or without anything. */
    BAD("register", "r", "cas v1");
    BAD("register", "r", "cas");
    BAD("register", "r", "write");
    BAD("register", "r", "read ");
    BAD("register", "r", "read x");
    BAD("register", "r", "");
    BAD("register", "r", "writ v");
    expect("register", "r", "read", "v1");
    /* Each argument follows exactly one space: OLD may be empty (the
     * value of a new register), and so may NEW. */
    expect("register", "n", "cas  first", "OK");
    expect("register", "n", "read", "first");
    expect("register", "n", "cas  again", "FAILED");
    expect("register", "n", "cas first second value", "OK");
    expect("register", "n", "read", "second value");
    expect("register", "r", "cas v1 ", "OK");
    expect("register", "r", "read", "");
    expect("register", "r", "write  two spaces", "OK");
    expect("register", "r", "read", " two spaces");
    expect("register", "r", "write ", "OK");
    expect("register", "r", "read", "");
}
END_TEST

START_TEST(kv_arguments_are_strict)
{
    char buf[64];

    expect("kv", "m", "put k v", "OK");
    BAD("kv", "m", "put k");      /* V missing */
    BAD("kv", "m", "put");        /* K and V missing */
    BAD("kv", "m", "put  v");     /* empty K */
    BAD("kv", "m", "put a\nb v"); /* `keys` could not list it */
    BAD("kv", "m", "put a\0b v");
    BAD("kv", "m", "put \0k v");
    BAD("kv", "m", "get");
    BAD("kv", "m", "get ");
    BAD("kv", "m", "get k ");
    BAD("kv", "m", "get k x");
    BAD("kv", "m", "del");
    BAD("kv", "m", "del k x");
    BAD("kv", "m", "keys ");
    BAD("kv", "m", "keys x");
    BAD("kv", "m", "");
    expect("kv", "m", "keys", "k");
    expect("kv", "m", "get k", "v");
    /* An empty value is written with the separating space. */
    expect("kv", "m", "put e ", "OK");
    expect("kv", "m", "get e", "");
    expect("kv", "m", "put s  two", "OK");
    expect("kv", "m", "get s", " two");
    expect("kv", "m", "keys", "e\nk\ns");
    ck_assert_int_eq(send_msg("kv", "m", "get nope", 8, buf, sizeof buf),
                     KEEL_ENOTFOUND);
}
END_TEST

/* An empty message, also one given as NULL, is a missing command. */
START_TEST(empty_message_refused)
{
    static const char *const types[] = {"counter", "kv", "register"};
    void *reply = NULL;
    size_t len = 0, i;

    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(keel_call_sync(node, types[i], "z", 1, NULL, 0,
                                        &reply, &len),
                         KEEL_EBADMSG);
        keel_free(reply);
        reply = NULL;
        ck_assert_int_eq(keel_call_sync(node, types[i], "z", 1, "", 0, &reply,
                                        &len),
                         KEEL_EBADMSG);
        keel_free(reply);
        reply = NULL;
    }
}
END_TEST

static Suite *builtins_suite(void)
{
    Suite *s = suite_create("builtins");
    TCase *tc = tcase_create("strict");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, counter_integers_are_strict);
    tcase_add_test(tc, register_arguments_are_strict);
    tcase_add_test(tc, kv_arguments_are_strict);
    tcase_add_test(tc, empty_message_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(builtins_suite());
}
