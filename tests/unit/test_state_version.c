/* State versions (keel_actor_type.state_version and upgrade), in process
 * on a real LMDB store: a node is stopped and started again on the same
 * directory with another version of a type, as a deploy does.
 *  - state of an unversioned type is upgraded once, from version 0,
 *    before the first message sees it, with its entries; later
 *    activations and restarts do not upgrade it again;
 *  - an actor first written by a versioned type records its version, and
 *    the next version upgrades it from there;
 *  - state of a newer version than the node's type is refused
 *    (KEEL_ESTATEVER) and left as it was; so is an old state when the type
 *    has no upgrade function;
 *  - a failing upgrade fails the message with its code and keeps nothing;
 *    the next activation upgrades again;
 *  - an actor never written is not upgraded. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"
#include "testutil.h"

static char *dir;
static int upgrades;           /* upgrade calls */
static uint32_t upgraded_from; /* the last one's from_version */
static int upgrade_fails;      /* 1: the upgrade answers KEEL_EBADMSG */

/* "set X": the state becomes X, and entry "note" is X too; "get": the
 * state, then '|' and entry "note" (or "-"). */
static int doc_message(keel_turn *t, const void *msg, size_t len)
{
    const char *m = msg;

    if (len >= 4 && memcmp(m, "set ", 4) == 0) {
        int rc = keel_turn_set_state(t, m + 4, len - 4);
        if (rc == 0)
            rc = keel_turn_put(t, "note", 4, m + 4, len - 4);
        return rc;
    }
    if (len == 3 && memcmp(m, "get", 3) == 0) {
        const void *st, *note;
        size_t sl, nl;
        int rc = keel_turn_get(t, "note", 4, &note, &nl);
        keel_turn_state(t, &st, &sl);
        if (rc == KEEL_ENOTFOUND) {
            note = "-";
            nl = 1;
        } else if (rc != 0) {
            return rc;
        }
        return keel_turn_replyf(t, "%.*s|%.*s", (int)sl, (const char *)st,
                                (int)nl, (const char *)note);
    }
    return KEEL_EBADMSG;
}

/* The state gains a prefix "vN:" (N the new version) and entry "note" an
 * "upgraded " before it. */
static int doc_upgrade(keel_turn *t, uint32_t from)
{
    const void *st, *note;
    size_t sl, nl;
    char buf[256];
    int n, rc;

    upgrades++;
    upgraded_from = from;
    if (upgrade_fails) {
        keel_turn_error(t, "cannot upgrade this document");
        return KEEL_EBADMSG;
    }
    keel_turn_state(t, &st, &sl);
    n = snprintf(buf, sizeof buf, "v%u:%.*s",
                 (unsigned)*(const uint32_t *)keel_turn_type_data(t), (int)sl,
                 (const char *)st);
    rc = keel_turn_set_state(t, buf, (size_t)n);
    if (rc == 0 && keel_turn_get(t, "note", 4, &note, &nl) == 0) {
        n = snprintf(buf, sizeof buf, "upgraded %.*s", (int)nl,
                     (const char *)note);
        rc = keel_turn_put(t, "note", 4, buf, (size_t)n);
    }
    return rc;
}

static uint32_t version_data;

/* A node on dir with type "doc" at `version` (upgrade given or not). */
static keel_node *node_with(uint32_t version, int with_upgrade)
{
    keel_node_options o;
    keel_actor_type ty;
    keel_node *n;
    char err[256];
    int rc;

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_ERROR;
    rc = keel_node_create(&o, &n, err, sizeof err);
    ck_assert_msg(rc == 0, "create: %s %s", keel_strerror(rc), err);
    memset(&ty, 0, sizeof ty);
    ty.name = "doc";
    ty.on_message = doc_message;
    ty.state_version = version;
    ty.upgrade = with_upgrade ? doc_upgrade : NULL;
    version_data = version;
    ty.data = &version_data;
    ck_assert_int_eq(keel_node_register_type(n, &ty), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    return n;
}

static void finish(keel_node *n)
{
    keel_node_stop(n);
    ck_assert_int_eq(keel_node_join(n), 0);
    keel_node_destroy(n);
}

/* A call's status, and its reply (or error text) in out. */
static int call(keel_node *n, const char *id, const char *msg, char *out,
                size_t cap)
{
    void *reply = NULL;
    size_t len = 0;
    int rc = keel_call_sync(n, "doc", id, strlen(id), msg, strlen(msg),
                            &reply, &len);
    size_t m = len < cap - 1 ? len : cap - 1;

    memcpy(out, reply ? reply : "", m);
    out[m] = '\0';
    keel_free(reply);
    return rc;
}

static void expect(keel_node *n, const char *id, const char *want)
{
    char out[512];
    int rc = call(n, id, "get", out, sizeof out);

    ck_assert_msg(rc == 0, "get %s: %s %s", id, keel_strerror(rc), out);
    ck_assert_str_eq(out, want);
}

static void setup(void)
{
    dir = tu_tmpdir("statever");
    upgrades = 0;
    upgraded_from = 99;
    upgrade_fails = 0;
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

START_TEST(unversioned_state_is_upgraded_once)
{
    keel_node *n = node_with(0, 0);
    char out[512];

    ck_assert_int_eq(call(n, "a", "set hello", out, sizeof out), 0);
    finish(n);

    n = node_with(2, 1);
    expect(n, "a", "v2:hello|upgraded hello");
    ck_assert_int_eq(upgrades, 1);
    ck_assert_uint_eq(upgraded_from, 0);
    expect(n, "a", "v2:hello|upgraded hello");
    ck_assert_int_eq(upgrades, 1); /* same activation */
    finish(n);

    n = node_with(2, 1);
    expect(n, "a", "v2:hello|upgraded hello");
    ck_assert_int_eq(upgrades, 1); /* recorded: not upgraded again */
    finish(n);
}
END_TEST

START_TEST(versioned_writes_record_their_version)
{
    keel_node *n = node_with(3, 1);
    char out[512];

    /* Never written: not upgraded, and its first write records 3. */
    expect(n, "b", "|-");
    ck_assert_int_eq(call(n, "b", "set x", out, sizeof out), 0);
    ck_assert_int_eq(upgrades, 0);
    finish(n);

    n = node_with(3, 1);
    expect(n, "b", "x|x");
    ck_assert_int_eq(upgrades, 0);
    finish(n);

    n = node_with(4, 1);
    expect(n, "b", "v4:x|upgraded x");
    ck_assert_int_eq(upgrades, 1);
    ck_assert_uint_eq(upgraded_from, 3);
    finish(n);
}
END_TEST

START_TEST(newer_or_unupgradable_state_is_refused)
{
    keel_node *n = node_with(5, 1);
    char out[512];

    ck_assert_int_eq(call(n, "c", "set new", out, sizeof out), 0);
    finish(n);

    /* An older node (a rollback): refused, nothing changed. */
    n = node_with(4, 1);
    ck_assert_int_eq(call(n, "c", "get", out, sizeof out), KEEL_ESTATEVER);
    ck_assert_msg(strstr(out, "version 5") != NULL &&
                      strstr(out, "version 4") != NULL,
                  "%s", out);
    ck_assert_int_eq(call(n, "c", "set other", out, sizeof out),
                     KEEL_ESTATEVER);
    ck_assert_int_eq(upgrades, 0);
    finish(n);

    /* A newer version without an upgrade function: refused too. */
    n = node_with(6, 0);
    ck_assert_int_eq(call(n, "c", "get", out, sizeof out), KEEL_ESTATEVER);
    ck_assert_msg(strstr(out, "no upgrade function") != NULL, "%s", out);
    finish(n);

    n = node_with(5, 1);
    expect(n, "c", "new|new");
    finish(n);
}
END_TEST

/* A rollback to the release before the type declared a version (an
 * unversioned type, version 0) is a rollback too: the state a versioned
 * release wrote is refused, not read as the old layout and overwritten. */
START_TEST(rollback_to_unversioned_type_is_refused)
{
    keel_node *n = node_with(2, 1);
    char out[512];

    ck_assert_int_eq(call(n, "r", "set new", out, sizeof out), 0);
    finish(n);

    n = node_with(0, 0);
    ck_assert_int_eq(call(n, "r", "get", out, sizeof out), KEEL_ESTATEVER);
    ck_assert_int_eq(call(n, "r", "set old-layout", out, sizeof out),
                     KEEL_ESTATEVER);
    finish(n);

    n = node_with(2, 1);
    expect(n, "r", "new|new");
    finish(n);
}
END_TEST

START_TEST(failed_upgrade_keeps_nothing)
{
    keel_node *n = node_with(1, 1);
    char out[512];

    ck_assert_int_eq(call(n, "d", "set old", out, sizeof out), 0);
    finish(n);

    upgrade_fails = 1;
    n = node_with(2, 1);
    ck_assert_int_eq(call(n, "d", "get", out, sizeof out), KEEL_EBADMSG);
    ck_assert_str_eq(out, "cannot upgrade this document");
    ck_assert_int_eq(upgrades, 1);
    /* The next message activates it again, and upgrades again. */
    upgrade_fails = 0;
    expect(n, "d", "v2:old|upgraded old");
    ck_assert_int_eq(upgrades, 2);
    ck_assert_uint_eq(upgraded_from, 1);
    finish(n);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("state_version");
    TCase *tc = tcase_create("state_version");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, unversioned_state_is_upgraded_once);
    tcase_add_test(tc, versioned_writes_record_their_version);
    tcase_add_test(tc, newer_or_unupgradable_state_is_refused);
    tcase_add_test(tc, failed_upgrade_keeps_nothing);
    tcase_add_test(tc, rollback_to_unversioned_type_is_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
