/* Process-wide logging: one line per event, with a level and a UTC
 * timestamp, to stderr, to a file (keel_log_open_file), or to the
 * embedder's callback (keel_log_set_callback in keel.h). Lines are text
 * (the default) or JSON objects. The level, format, node name and file
 * are set once at start, before any node runs; logging is thread-safe
 * (one write(2) per line, so lines stay whole across threads and
 * processes). */
#ifndef KEEL_COMMON_LOG_H
#define KEEL_COMMON_LOG_H

#include <stdarg.h>
#include <stddef.h>

#include "keel.h"

enum keel_log_format {
    KEEL_LOG_FORMAT_TEXT = 0, /* "TIME LEVEL MESSAGE" */
    KEEL_LOG_FORMAT_JSON = 1  /* {"time":..,"level":..,"node":..,"msg":..} */
};

void keel_log_set_level(int level);
int keel_log_level(void);
void keel_log_set_format(int format);
/* The name JSON lines carry as "node" when the line has none of its own;
 * copied; NULL or "" for none. */
void keel_log_set_node(const char *node);

/* Appends lines to path (created 0640, less the umask) instead of
 * stderr. Returns 0 or KEEL_EIO (errbuf says why); on error the log goes
 * where it went before. */
int keel_log_open_file(const char *path, char *errbuf, size_t errlen);
/* Opens the file of keel_log_open_file again under its name, for log
 * rotation: lines written from then on go to the new file. Does nothing
 * without a file. A file that cannot be opened is logged and the old one
 * kept. Any thread. */
void keel_log_reopen(void);

void keel_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* keel_log for a line of one node: node is its name for JSON lines (NULL:
 * the process's, keel_log_set_node). */
void keel_log_v(const char *node, int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* keel_log whatever the level set: for lines others wait for, such as
 * keeld's "ready on port N". */
void keel_log_always(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Writes s as the body of a JSON string (no quotes) into out: quote,
 * backslash and control characters escaped, bytes that are not valid
 * UTF-8 replaced by U+FFFD. Stops before a character that would not fit
 * whole; always NUL-terminates (outlen > 0). Returns the bytes written. */
size_t keel_log_json_escape(const char *s, char *out, size_t outlen);

#define KEEL_LOG_ENABLED(lvl) ((lvl) <= keel_log_level())
/* A capability as logs name it: the default one (the empty name) as
 * "(default)", as the CLI and the docs call it. */
static inline const char *keel_cap_name(const char *cap)
{
    return cap != NULL && cap[0] != '\0' ? cap : "(default)";
}
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
