/* Process-wide logging to stderr: one line per event, with a level and a
 * UTC timestamp. The level is set once at start; logging is thread-safe
 * (one write(2) per line). */
#ifndef KEEL_COMMON_LOG_H
#define KEEL_COMMON_LOG_H

#include "keel.h"

void keel_log_set_level(int level);
int keel_log_level(void);
void keel_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define KEEL_LOG_ENABLED(lvl) ((lvl) <= keel_log_level())
#define keel_error(...) keel_log(KEEL_LOG_ERROR, __VA_ARGS__)
#define keel_warn(...) keel_log(KEEL_LOG_WARN, __VA_ARGS__)
#define keel_info(...) keel_log(KEEL_LOG_INFO, __VA_ARGS__)
#define keel_debug(...)                                                      \
    do {                                                                     \
        if (KEEL_LOG_ENABLED(KEEL_LOG_DEBUG))                                \
            keel_log(KEEL_LOG_DEBUG, __VA_ARGS__);                           \
    } while (0)

/* Converts an errno value met at a system boundary to a KEEL_E* code. */
int keel_errno_to_keel(int err);

#endif
