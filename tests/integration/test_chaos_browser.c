/* The report in a browser: headless Chromium loads report.html of a run
 * written by hand (tests/support/chaosrun.c), and
 *  - the DOM it built holds the verdicts, the bars, and the script ran
 *    without an error (it marks the page when it has wired its links);
 *  - its screenshot is a PNG of the window's size with something drawn
 *    on it: a blank page compresses to a few kilobytes, this one does
 *    not.
 * Skipped (exit 77, with one line saying why) where no Chromium is
 * installed or it cannot start; $CHROMIUM names another binary. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chaosrun.h"
#include "proc.h"
#include "testutil.h"

static const char *chromium;
static char *dir;

static void setup(void)
{
    dir = tu_tmpdir("chaos-browser");
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

/* chromium --headless ... ARG URL; the profile in a directory of its
 * own, no sandbox (tests may run as root), no GPU. */
static int browse(const char *arg, const char *url, char **out, char **err)
{
    char profile[640];
    const char *argv[] = {chromium,
                          "--headless",
                          "--no-sandbox",
                          "--disable-gpu",
                          "--disable-dev-shm-usage",
                          "--no-first-run",
                          "--hide-scrollbars",
                          "--window-size=1400,1000",
                          profile,
                          arg,
                          url,
                          NULL};

    snprintf(profile, sizeof profile, "--user-data-dir=%s/profile",
             dir != NULL ? dir : "/tmp");
    return tu_run_for(argv, 90, out, err);
}

static char *report(void)
{
    char *bin = tu_bin("keel-chaos"), *out = NULL, *err = NULL, *url;
    const char *argv[] = {bin, "report", dir, NULL};

    tu_chaos_fake_run(dir, 1);
    ck_assert_int_eq(tu_run(argv, &out, &err), 0);
    free(bin);
    free(out);
    free(err);
    if (asprintf(&url, "file://%s/report.html", dir) < 0)
        abort();
    return url;
}

START_TEST(dom)
{
    char *url = report(), *out = NULL, *err = NULL;
    int rc = browse("--dump-dom", url, &out, &err);

    ck_assert_msg(rc == 0, "chromium exit %d: %s", rc, err ? err : "");
    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(strstr(out, "id=\"verdict\">FAIL</span>"));
    ck_assert_ptr_nonnull(strstr(out, "<svg"));
    ck_assert_ptr_nonnull(strstr(out, "id=\"op1\" class=\"ok bad\""));
    /* The script ran to its end. */
    ck_assert_ptr_nonnull(strstr(out, "data-ready=\"1\""));
    free(out);
    free(err);
    free(url);
}
END_TEST

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

START_TEST(screenshot)
{
    char *url = report(), *out = NULL, *err = NULL, arg[640], png[600];
    unsigned char head[24];
    struct stat st;
    FILE *f;
    int rc;

    snprintf(png, sizeof png, "%s/page.png", dir);
    snprintf(arg, sizeof arg, "--screenshot=%s", png);
    rc = browse(arg, url, &out, &err);
    ck_assert_msg(rc == 0, "chromium exit %d: %s", rc, err ? err : "");
    ck_assert_int_eq(stat(png, &st), 0);
    f = fopen(png, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fread(head, 1, sizeof head, f), sizeof head);
    fclose(f);
    ck_assert_int_eq(memcmp(head, "\x89PNG\r\n\x1a\n", 8), 0);
    ck_assert_int_eq(memcmp(head + 12, "IHDR", 4), 0);
    ck_assert_uint_eq(be32(head + 16), 1400);
    ck_assert_uint_eq(be32(head + 20), 1000);
    /* A white 1400x1000 page is about 5 KB as PNG; text, bars and
     * charts make tens of kilobytes. */
    ck_assert_msg(st.st_size > 30000, "screenshot of %lld bytes: blank?",
                  (long long)st.st_size);
    free(out);
    free(err);
    free(url);
}
END_TEST

/* Chromium, if one is installed and starts: its path, or NULL after one
 * line on stderr saying why not. */
static const char *find_chromium(void)
{
    static const char *const cands[] = {"/usr/bin/chromium",
                                        "/usr/bin/chromium-browser"};
    const char *env = getenv("CHROMIUM");
    char *out = NULL, *err = NULL;
    size_t k;
    int rc;

    if (env != NULL && env[0] != '\0')
        chromium = env;
    for (k = 0; chromium == NULL && k < 2; k++)
        if (access(cands[k], X_OK) == 0)
            chromium = cands[k];
    if (chromium == NULL) {
        fprintf(stderr, "test_chaos_browser: skipped: no chromium installed "
                        "(apt-get install chromium, or set $CHROMIUM)\n");
        return NULL;
    }
    rc = browse("--dump-dom", "about:blank", &out, &err);
    if (rc != 0 || out == NULL || strstr(out, "<html") == NULL) {
        const char *e = err != NULL ? err : "";
        fprintf(stderr, "test_chaos_browser: skipped: %s does not start "
                        "(exit %d): %.*s\n",
                chromium, rc, (int)strcspn(e, "\n"), e);
        chromium = NULL;
    }
    free(out);
    free(err);
    return chromium;
}

int main(void)
{
    Suite *s;
    TCase *tc;

    if (find_chromium() == NULL)
        return 77;
    s = suite_create("chaos_browser");
    tc = tcase_create("browser");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 200);
    tcase_add_test(tc, dom);
    tcase_add_test(tc, screenshot);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
