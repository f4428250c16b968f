/* The HTTP status each keel error is answered with (runtime/http_route.c,
 * docs/http.md "Errors"). What matters most: no error after which the
 * request did not run, or may have run, is a 500, which clients and
 * proxies read as a definite failure and do not send again with the same
 * Idempotency-Key. Before: ECONN, ETIMEDOUT, ENOTSENT, EOVERLOAD,
 * ECONNLOSS and ESESSION were 500. */
#include <check.h>
#include <stdio.h>

#include "keel.h"
#include "runtime/http_route.h"
#include "testutil.h"

START_TEST(not_run_or_unknown_is_503)
{
    static const int codes[] = {
        KEEL_EUNAVAIL, KEEL_ESTOPPING, KEEL_EFENCED,   KEEL_EDEADLINE,
        KEEL_ENOTSENT, KEEL_EOVERLOAD, KEEL_EINDOUBT,  KEEL_ECONN,
        KEEL_ETIMEDOUT, KEEL_ECONNLOSS, KEEL_ESESSION};
    size_t i;

    for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
        ck_assert_msg(keel__http_status(codes[i]) == 503, "%s: %u",
                      keel_err_name(codes[i]),
                      keel__http_status(codes[i]));
}
END_TEST

/* Every answer about the request or the actor (keel_err_is_answer) is a
 * 4xx: the client's to fix, and the same whenever it is sent again. */
START_TEST(answers_are_4xx)
{
    int code;

    ck_assert_uint_eq(keel__http_status(0), 200);
    for (code = -1; code >= -64; code--) {
        unsigned st = keel__http_status(code);
        if (!keel_err_is_answer(code) || code == KEEL_EHANDLER)
            continue; /* a handler's failure: 500 */
        ck_assert_msg(st >= 400 && st < 500, "%s: %u", keel_err_name(code),
                      st);
    }
    ck_assert_uint_eq(keel__http_status(KEEL_EHANDLER), 500);
    ck_assert_uint_eq(keel__http_status(KEEL_EIO), 500);
    ck_assert_uint_eq(keel__http_status(KEEL_ENOSPC), 507);
    ck_assert_uint_eq(keel__http_status(KEEL_ETOOBIG), 413);
    ck_assert_uint_eq(keel__http_status(KEEL_ENOTFOUND), 404);
    ck_assert_uint_eq(keel__http_status(KEEL_EUNAUTH), 401);
    ck_assert_uint_eq(keel__http_status(KEEL_EDENIED), 403);
    ck_assert_uint_eq(keel__http_status(KEEL_EALREADY), 409);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("http_status");
    TCase *tc = tcase_create("http_status");

    tcase_add_test(tc, not_run_or_unknown_is_503);
    tcase_add_test(tc, answers_are_4xx);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
