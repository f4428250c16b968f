/* keel_node_info(), the C API of introspection, on an embedded standalone
 * node (no listener): the standalone facts, and typed errors. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "keel.h"
#include "testutil.h"

static char *dir;
static keel_node *node;

static void setup(void)
{
    keel_node_options o;
    char err[256];
    int rc;

    dir = tu_tmpdir("info");
    keel_node_options_init(&o);
    o.data_dir = dir;
    o.shard_count = 2;
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

static char *info(int argc, const char *a, const char *b, const char *c)
{
    const char *argv[] = {a, b, c};
    char *text = NULL;
    size_t len = 0;

    ck_assert_int_eq(keel_node_info(node, argc, argv, &text, &len), 0);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(strlen(text), len);
    return text;
}

START_TEST(standalone_facts)
{
    char *t, want[256];

    t = info(1, "nodes", NULL, NULL);
    ck_assert_str_eq(t, "mode standalone\nself local\ncontroller local\n"
                        "map_epoch 1\nnode local addr (none) incarnation 1 "
                        "caps (none) role controller self\n");
    free(t);
    t = info(1, "shards", NULL, NULL);
    ck_assert_str_eq(t, "unit (default) 0 owner local epoch 1\n"
                        "unit (default) 1 owner local epoch 1\n");
    free(t);
    t = info(2, "shards", "local", NULL);
    ck_assert_str_eq(t, "unit (default) 0 owner local epoch 1\n"
                        "unit (default) 1 owner local epoch 1\n");
    free(t);
    {
        /* A node there is not: an error, not a node that owns nothing. */
        const char *argv[] = {"shards", "other"};
        char *text = NULL;
        size_t len = 0;
        ck_assert_int_eq(keel_node_info(node, 2, argv, &text, &len),
                         KEEL_ENOTFOUND);
        ck_assert_ptr_null(text);
    }
    t = info(1, "capabilities", NULL, NULL);
    ck_assert_str_eq(t, "capability (default) nodes local\n");
    free(t);
    t = info(3, "where", "kv", "some id");
    snprintf(want, sizeof want,
             "type kv\nid some id\ncapability (default)\nshard %u\n"
             "owner local\naddress (none)\nepoch 1\nplacement local\n",
             keel_shard_of("kv", "some id", 7, 2));
    ck_assert_str_eq(t, want);
    free(t);
}
END_TEST

/* digest CAP SHARD: the unit's records as the store holds them; the
 * same content gives the same answer, an empty unit the digest of
 * nothing. */
START_TEST(digest)
{
    unsigned sh = keel_shard_of("counter", "c1", 2, 2);
    char *t, *t2, num[8], want[64];
    void *reply = NULL;
    size_t rlen = 0;

    snprintf(num, sizeof num, "%u", sh);
    t = info(3, "digest", "(default)", num);
    snprintf(want, sizeof want, "digest %016llx records 0\n",
             (unsigned long long)XXH3_64bits(NULL, 0));
    ck_assert_str_eq(t, want);
    free(t);
    ck_assert_int_eq(keel_call_sync(node, "counter", "c1", 2, "incr 5", 6,
                                    &reply, &rlen),
                     0);
    keel_free(reply);
    t = info(3, "digest", "(default)", num);
    ck_assert_int_eq(strncmp(t, "digest ", 7), 0);
    ck_assert_ptr_nonnull(strstr(t, " records 1\n"));
    ck_assert_str_ne(t, want);
    t2 = info(3, "digest", "(default)", num);
    ck_assert_str_eq(t, t2); /* nothing changed, nor does the answer */
    free(t2);
    free(t);
    {
        /* A capability no type here (and no map) has: an error, not the
         * digest of nothing. */
        const char *gpu[] = {"digest", "gpu", num};
        char *text = NULL;
        ck_assert_int_eq(keel_node_info(node, 3, gpu, &text, NULL),
                         KEEL_ENOTFOUND);
        free(text);
    }
}
END_TEST

START_TEST(errors)
{
    const char *unknown[] = {"stats"}, *notype[] = {"where", "nosuch", "x"},
               *extra[] = {"nodes", "x"}, *noid[] = {"where"};
    char *text = (char *)"untouched";

    ck_assert_int_eq(keel_node_info(node, 1, unknown, &text, NULL),
                     KEEL_EINVAL);
    ck_assert_ptr_null(text);
    ck_assert_int_eq(keel_node_info(node, 3, notype, &text, NULL),
                     KEEL_ENOTYPE);
    ck_assert_int_eq(keel_node_info(node, 2, extra, &text, NULL),
                     KEEL_EINVAL);
    ck_assert_int_eq(keel_node_info(node, 1, noid, &text, NULL),
                     KEEL_EINVAL);
    ck_assert_int_eq(keel_node_info(node, 0, unknown, &text, NULL),
                     KEEL_EINVAL);
    {
        const char *bad[][3] = {{"digest", "(default)", "2"},
                                {"digest", "(default)", "x"},
                                {"digest", "(default)", "-1"},
                                {"digest", "no space", "0"},
                                {"digest", "(default)", NULL}};
        ck_assert_int_eq(keel_node_info(node, 3, bad[0], &text, NULL),
                         KEEL_EINVAL); /* 2 shards: 0 and 1 */
        ck_assert_int_eq(keel_node_info(node, 3, bad[1], &text, NULL),
                         KEEL_EINVAL);
        ck_assert_int_eq(keel_node_info(node, 3, bad[2], &text, NULL),
                         KEEL_EINVAL);
        ck_assert_int_eq(keel_node_info(node, 3, bad[3], &text, NULL),
                         KEEL_EINVAL);
        ck_assert_int_eq(keel_node_info(node, 2, bad[4], &text, NULL),
                         KEEL_EINVAL);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("info");
    TCase *tc = tcase_create("info");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, standalone_facts);
    tcase_add_test(tc, digest);
    tcase_add_test(tc, errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
