/* Text for the HTTP face's answers (http_text.h). */
#include "runtime/http_text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void keel__sb_add(struct keel_sbuf *b, const void *s, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;
        while (cap < b->len + n)
            cap *= 2;
        p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

void keel__sb_puts(struct keel_sbuf *b, const char *s)
{
    keel__sb_add(b, s, strlen(s));
}

void keel__sb_printf(struct keel_sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    /* Every format here is short; longer text goes through keel__sb_add. */
    keel__sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

size_t keel__utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0], lo = 0x80, hi = 0xbf;
    size_t len, i;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

int keel__is_text(const uint8_t *s, size_t n)
{
    size_t i = 0, k;

    while (i < n) {
        if (s[i] == 0 || (k = keel__utf8_seq(s + i, n - i)) == 0)
            return 0;
        i += k;
    }
    return 1;
}

/* A JSON string of s. Bytes that are not UTF-8 become U+FFFD: callers
 * that need the exact bytes send base64 beside it. */
void keel__sb_json_str(struct keel_sbuf *b, const uint8_t *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0, k;

    keel__sb_add(b, "\"", 1);
    while (i < n) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            keel__sb_add(b, e, 2);
            i++;
        } else if (c == '\n') {
            keel__sb_add(b, "\\n", 2);
            i++;
        } else if (c == '\r') {
            keel__sb_add(b, "\\r", 2);
            i++;
        } else if (c == '\t') {
            keel__sb_add(b, "\\t", 2);
            i++;
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            keel__sb_add(b, e, 6);
            i++;
        } else if ((k = keel__utf8_seq(s + i, n - i)) == 0) {
            keel__sb_add(b, "\\ufffd", 6);
            i++;
        } else {
            keel__sb_add(b, s + i, k);
            i += k;
        }
    }
    keel__sb_add(b, "\"", 1);
}

void keel__sb_base64(struct keel_sbuf *b, const uint8_t *s, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i;

    keel__sb_add(b, "\"", 1);
    for (i = 0; i + 2 < n; i += 3) {
        char q[4] = {tab[s[i] >> 2], tab[((s[i] & 3) << 4) | (s[i + 1] >> 4)],
                     tab[((s[i + 1] & 15) << 2) | (s[i + 2] >> 6)],
                     tab[s[i + 2] & 63]};
        keel__sb_add(b, q, 4);
    }
    if (n - i == 1) {
        char q[4] = {tab[s[i] >> 2], tab[(s[i] & 3) << 4], '=', '='};
        keel__sb_add(b, q, 4);
    } else if (n - i == 2) {
        char q[4] = {tab[s[i] >> 2], tab[((s[i] & 3) << 4) | (s[i + 1] >> 4)],
                     tab[(s[i + 1] & 15) << 2], '='};
        keel__sb_add(b, q, 4);
    }
    keel__sb_add(b, "\"", 1);
}
