/* The error table: one X-macro in keel.h, names and texts here. */
#include "keel.h"

#include "common/error.h"

int keel__err_known(int code)
{
    switch (code) {
    case 0:
#define KEEL__ERR_CASE(name, val, msg) case (val):
        KEEL_ERRNO_MAP(KEEL__ERR_CASE)
#undef KEEL__ERR_CASE
        return 1;
    default:
        return 0;
    }
}

int keel_err_is_answer(int code)
{
    switch (code) {
    case KEEL_EINVAL:
    case KEEL_ETOOBIG:
    case KEEL_ELIMIT:
    case KEEL_EHANDLER:
    case KEEL_EBADMSG:
    case KEEL_ENOTFOUND:
    case KEEL_EEXIST:
    case KEEL_EALREADY:
    case KEEL_EDENIED:
        return 1;
    default:
        return 0;
    }
}

const char *keel_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
#define KEEL__ERR_STR(name, val, msg)                                        \
    case (val):                                                              \
        return msg;
        KEEL_ERRNO_MAP(KEEL__ERR_STR)
#undef KEEL__ERR_STR
    default:
        return "unknown error";
    }
}

const char *keel_err_name(int code)
{
    switch (code) {
    case 0:
        return "OK";
#define KEEL__ERR_NAME(name, val, msg)                                       \
    case (val):                                                              \
        return #name;
        KEEL_ERRNO_MAP(KEEL__ERR_NAME)
#undef KEEL__ERR_NAME
    default:
        return "EUNKNOWN";
    }
}

unsigned keel_version(void)
{
    return KEEL_VERSION_NUM;
}

const char *keel_version_string(void)
{
    return KEEL_VERSION_STRING;
}
