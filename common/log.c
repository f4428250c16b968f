#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Set before any node runs (keel_node_create, keeld's start); read by
 * every thread that logs. */
static int log_level = KEEL_LOG_INFO;
static int log_format = KEEL_LOG_FORMAT_TEXT;
static char log_node[256];

/* The descriptor lines go to. A reopened file is dup3()'d onto the same
 * number, so a thread writing a line meanwhile writes it whole to the old
 * file or the new one, never to a closed descriptor. */
static atomic_int log_fd = STDERR_FILENO;
static char *log_path; /* owned; NULL: no file */
static pthread_mutex_t file_mu = PTHREAD_MUTEX_INITIALIZER;

/* The embedder's callback. Calls are made under cb_mu, so they never
 * overlap, and once keel_log_set_callback returns the previous callback
 * is neither running nor called again. cb_set spares the lock on every
 * line when there is no callback. */
static pthread_mutex_t cb_mu = PTHREAD_MUTEX_INITIALIZER;
static keel_log_fn cb_fn;
static void *cb_data;
static atomic_int cb_set;
/* Set on a thread while it runs the callback: a line the callback logs
 * through keel itself goes to the descriptor rather than deadlocking. */
static _Thread_local int in_cb;

void keel_log_set_level(int level)
{
    log_level = level;
}

int keel_log_level(void)
{
    return log_level;
}

void keel_log_set_format(int format)
{
    log_format = format == KEEL_LOG_FORMAT_JSON ? KEEL_LOG_FORMAT_JSON
                                                : KEEL_LOG_FORMAT_TEXT;
}

void keel_log_set_node(const char *node)
{
    snprintf(log_node, sizeof log_node, "%s", node ? node : "");
}

void keel_log_set_callback(keel_log_fn fn, void *data)
{
    if (in_cb) {
        /* From inside the callback: cb_mu is already this thread's. */
        cb_fn = fn;
        cb_data = data;
        atomic_store(&cb_set, fn != NULL);
        return;
    }
    pthread_mutex_lock(&cb_mu);
    cb_fn = fn;
    cb_data = data;
    atomic_store(&cb_set, fn != NULL);
    pthread_mutex_unlock(&cb_mu);
}

static int open_log(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY,
                0640);
}

int keel_log_open_file(const char *path, char *errbuf, size_t errlen)
{
    char *copy;
    int fd, old;

    if (path == NULL || *path == '\0') {
        snprintf(errbuf, errlen, "no log file named");
        return KEEL_EINVAL;
    }
    copy = strdup(path);
    if (copy == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return KEEL_ENOMEM;
    }
    fd = open_log(path);
    if (fd < 0) {
        snprintf(errbuf, errlen, "cannot open %s: %s", path, strerror(errno));
        free(copy);
        return KEEL_EIO;
    }
    pthread_mutex_lock(&file_mu);
    free(log_path);
    log_path = copy;
    old = atomic_exchange(&log_fd, fd);
    pthread_mutex_unlock(&file_mu);
    if (old != STDERR_FILENO)
        close(old);
    return 0;
}

void keel_log_reopen(void)
{
    int fd, err = 0;
    char path[512];

    pthread_mutex_lock(&file_mu);
    if (log_path == NULL) {
        pthread_mutex_unlock(&file_mu);
        return;
    }
    snprintf(path, sizeof path, "%s", log_path);
    fd = open_log(log_path);
    if (fd < 0)
        err = errno;
    else if (dup3(fd, atomic_load(&log_fd), O_CLOEXEC) < 0)
        err = errno;
    if (fd >= 0)
        close(fd);
    pthread_mutex_unlock(&file_mu);
    if (err != 0)
        keel_log(KEEL_LOG_ERROR,
                 "cannot reopen the log file %s: %s; still writing to the "
                 "file open before",
                 path, strerror(err));
    else
        keel_log(KEEL_LOG_INFO, "log file %s opened again", path);
}

/* Bytes of the well-formed UTF-8 sequence at s (1 to 4), or 0 when s does
 * not start one: a stray continuation byte, an overlong form, a
 * surrogate, a code point over U+10FFFF or a sequence cut short (by the
 * NUL, which no continuation byte equals). */
static size_t utf8_len(const unsigned char *s)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 &&
                       (s[3] & 0xC0) == 0x80
                   ? 4
                   : 0;
    }
    return 0;
}

size_t keel_log_json_escape(const char *s, char *out, size_t outlen)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;

    if (outlen == 0)
        return 0;
    while (*p != '\0') {
        char esc[8];
        const char *piece = esc;
        size_t len, adv;

        adv = utf8_len(p);
        if (adv == 0) {
            piece = "\\ufffd";
            len = 6;
            adv = 1;
        } else if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            len = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            const char *sh = *p == '\n' ? "\\n"
                             : *p == '\r' ? "\\r"
                             : *p == '\t' ? "\\t"
                             : *p == '\b' ? "\\b"
                             : *p == '\f' ? "\\f"
                                          : NULL;
            if (sh != NULL) {
                piece = sh;
                len = 2;
            } else {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                len = 6;
            }
        } else {
            piece = (const char *)p;
            len = adv;
        }
        if (n + len >= outlen)
            break; /* whole characters only: the string stays valid */
        memcpy(out + n, piece, len);
        n += len;
        p += adv;
    }
    out[n] = '\0';
    return n;
}

static void write_line(const char *line, size_t n)
{
    /* One write per line keeps lines whole across threads and processes. */
    if (write(atomic_load_explicit(&log_fd, memory_order_relaxed), line, n) <
        0)
        return;
}

/* Formats and writes one line, whatever the level set. */
static void emit(const char *node, int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void emit(const char *node, int level, const char *fmt, va_list ap)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    char msg[1024], stamp[40], line[8192];
    struct timespec ts;
    struct tm tm;
    size_t n, k;
    int w;

    if (level < 0)
        level = 0;
    if (level > KEEL_LOG_DEBUG)
        level = KEEL_LOG_DEBUG;
    w = vsnprintf(msg, sizeof msg, fmt, ap);
    if (w < 0)
        msg[0] = '\0';
    if (atomic_load_explicit(&cb_set, memory_order_relaxed) && !in_cb) {
        int done = 0;
        pthread_mutex_lock(&cb_mu);
        if (cb_fn != NULL) {
            in_cb = 1;
            cb_fn(cb_data, level, msg);
            in_cb = 0;
            done = 1;
        }
        pthread_mutex_unlock(&cb_mu);
        if (done)
            return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    k = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + k, sizeof stamp - k, ".%03ldZ", ts.tv_nsec / 1000000L);
    if (log_format == KEEL_LOG_FORMAT_TEXT) {
        /* As it always was: the line, cut at 1022 bytes, and a newline. */
        w = snprintf(line, 1024, "%s %s %s", stamp, names[level], msg);
        n = w < 0 ? 0 : (size_t)w;
        if (n > 1022)
            n = 1022;
        line[n++] = '\n';
        write_line(line, n);
        return;
    }
    if (node == NULL || *node == '\0')
        node = log_node;
    n = (size_t)snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\"",
                         stamp, names[level]);
    if (*node != '\0') {
        /* Node names are letters, digits, '.', '_' and '-'; escaped all
         * the same, as the embedder may name a node anything. */
        memcpy(line + n, ",\"node\":\"", 9);
        n += 9;
        n += keel_log_json_escape(node, line + n, 512);
        line[n++] = '"';
    }
    memcpy(line + n, ",\"msg\":\"", 8);
    n += 8;
    /* Room is kept for the closing "}\n. */
    n += keel_log_json_escape(msg, line + n, sizeof line - n - 3);
    memcpy(line + n, "\"}\n", 3);
    n += 3;
    write_line(line, n);
}

void keel_log_v(const char *node, int level, const char *fmt, va_list ap)
{
    if (level > log_level)
        return;
    emit(node, level, fmt, ap);
}

void keel_log_always(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    emit(NULL, level, fmt, ap);
    va_end(ap);
}

void keel_log(int level, const char *fmt, ...)
{
    va_list ap;

    if (level > log_level)
        return;
    va_start(ap, fmt);
    keel_log_v(NULL, level, fmt, ap);
    va_end(ap);
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
