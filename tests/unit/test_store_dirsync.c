/* A store's names are on the disk before anything in it counts: opening a
 * store in a directory that does not exist yet syncs every directory it
 * makes in its parent, and syncs the data directory once the data file
 * (made by LMDB during the open) is in it. Without that, a machine crash
 * soon after the first acknowledged writes could take the data file's
 * name, or the whole directory, away with them.
 *
 * Linked with -Wl,--wrap=fsync (CMakeLists.txt): every fsync of a
 * directory made while `armed` is recorded with whether data.mdb was in
 * it at that moment. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel.h"
#include "persistence/store.h"
#include "testutil.h"

int __real_fsync(int fd);
int __wrap_fsync(int fd);

#define MAX_SYNCS 64

static struct dsync {
    char path[PATH_MAX];
    int had_data; /* data.mdb existed in it when it was synced */
} syncs[MAX_SYNCS];
static int nsyncs, armed;

int __wrap_fsync(int fd)
{
    struct stat st;

    if (armed && nsyncs < MAX_SYNCS && fstat(fd, &st) == 0 &&
        S_ISDIR(st.st_mode)) {
        char link[64], data[PATH_MAX + 16];
        struct dsync *d = &syncs[nsyncs];
        ssize_t n;

        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        n = readlink(link, d->path, sizeof d->path - 1);
        if (n > 0) {
            d->path[n] = '\0';
            snprintf(data, sizeof data, "%s/data.mdb", d->path);
            d->had_data = access(data, F_OK) == 0;
            nsyncs++;
        }
    }
    return __real_fsync(fd);
}

static char *dir;

static void setup(void)
{
    dir = tu_tmpdir("store_dirsync");
    nsyncs = 0;
}

static void teardown(void)
{
    armed = 0;
    tu_rmrf(dir);
    free(dir);
}

/* Whether path was synced (with data.mdb in it when want_data). */
static int synced(const char *path, int want_data)
{
    char real[PATH_MAX];

    ck_assert_ptr_nonnull(realpath(path, real));
    for (int i = 0; i < nsyncs; i++)
        if (strcmp(syncs[i].path, real) == 0 &&
            (!want_data || syncs[i].had_data))
            return 1;
    return 0;
}

static keel_store *open_at(const char *path, int durability)
{
    keel_store_options o = {0};
    keel_store *s = NULL;
    char err[256] = "";
    int rc;

    o.path = path;
    o.shard_count = 64;
    o.durability = durability;
    rc = keel_store_open(&o, &s, err, sizeof err);
    ck_assert_msg(rc == 0, "open %s: %s (%s)", path, keel_err_name(rc), err);
    return s;
}

static void fresh_open_syncs_names(int durability)
{
    char top[PATH_MAX], mid[PATH_MAX], leaf[PATH_MAX];
    keel_store *s;

    snprintf(top, sizeof top, "%s/a", dir);
    snprintf(mid, sizeof mid, "%s/a/b", dir);
    snprintf(leaf, sizeof leaf, "%s/a/b/store", dir);
    armed = 1;
    s = open_at(leaf, durability);
    armed = 0;
    ck_assert_msg(synced(leaf, 1),
                  "the data directory was not synced with data.mdb in it");
    ck_assert_msg(synced(mid, 0), "the store's directory was not synced in "
                                  "its parent");
    ck_assert_msg(synced(top, 0), "a directory made was not synced in its "
                                  "parent");
    ck_assert_msg(synced(dir, 0), "the first directory made was not synced "
                                  "in its parent");
    keel_store_close(s);

    /* Opened again, nothing is made: the names are synced already, and an
     * open need not pay for it again. */
    nsyncs = 0;
    armed = 1;
    s = open_at(leaf, durability);
    armed = 0;
    ck_assert_msg(!synced(mid, 0) && !synced(top, 0),
                  "an open that made no directory synced a parent");
    keel_store_close(s);
}

START_TEST(fresh_store_syncs_its_names)
{
    fresh_open_syncs_names(KEEL_DURABILITY_FSYNC);
}
END_TEST

START_TEST(fresh_store_syncs_its_names_without_fsync_durability)
{
    /* Durability none writes through the map: the data file is made by
     * the store itself before LMDB opens it. */
    fresh_open_syncs_names(KEEL_DURABILITY_NONE);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("store_dirsync");
    TCase *tc = tcase_create("names");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, fresh_store_syncs_its_names);
    tcase_add_test(tc, fresh_store_syncs_its_names_without_fsync_durability);
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
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
