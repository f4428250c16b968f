#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_level = KEEL_LOG_INFO;

void keel_log_set_level(int level)
{
    log_level = level;
}

int keel_log_level(void)
{
    return log_level;
}

void keel_log(int level, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    char line[1024];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;
    int w;

    if (level > log_level)
        return;
    if (level < 0)
        level = 0;
    if (level > KEEL_LOG_DEBUG)
        level = KEEL_LOG_DEBUG;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    w = snprintf(line + n, sizeof line - n, ".%03ldZ %s ",
                 ts.tv_nsec / 1000000L, names[level]);
    if (w > 0)
        n += (size_t)w;
    va_start(ap, fmt);
    w = vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    if (w > 0)
        n += (size_t)w;
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    /* One write per line keeps lines whole across threads and processes. */
    if (write(STDERR_FILENO, line, n) < 0)
        return;
}

int keel_errno_to_keel(int err)
{
    switch (err) {
    case 0:
        return 0;
    case ENOMEM:
        return KEEL_ENOMEM;
    case ENOSPC:
    case EFBIG:
    case EDQUOT:
        return KEEL_ENOSPC;
    case EINVAL:
        return KEEL_EINVAL;
    case ETIMEDOUT:
        return KEEL_ETIMEDOUT;
    case ENOENT:
        return KEEL_ENOTFOUND;
    case EEXIST:
        return KEEL_EEXIST;
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case ENOTCONN:
        return KEEL_ECONN;
    case EADDRINUSE:
    case EADDRNOTAVAIL:
        return KEEL_EADDR;
    default:
        return KEEL_EIO;
    }
}
