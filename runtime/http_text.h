/* Text for the HTTP face's answers: a growing buffer, and the encoders
 * that put an actor's arbitrary bytes into JSON and text (runtime/http.c).
 *
 * Nothing here knows HTTP: the functions are pure, so that the fuzz
 * target tests/fuzz/fuzz_http.c reaches them as the face does. */
#ifndef KEEL_RUNTIME_HTTP_TEXT_H
#define KEEL_RUNTIME_HTTP_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* A growing text buffer; zero-initialise it ({0}). Out of memory sets oom
 * and drops later writes: the caller checks once at the end. p is
 * malloc'd and owned by whoever holds the buffer (free(b.p)); it is not
 * NUL-terminated. */
struct keel_sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

void keel__sb_add(struct keel_sbuf *b, const void *s, size_t n);
void keel__sb_puts(struct keel_sbuf *b, const char *s);
/* For short formats only: the text is cut at 511 bytes. Longer text goes
 * through keel__sb_add. */
void keel__sb_printf(struct keel_sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Length of the well-formed UTF-8 sequence at s (1 to 4 bytes; n >= 1
 * bytes readable), or 0: not an overlong form, a surrogate, above
 * U+10FFFF, or cut short by n. */
size_t keel__utf8_seq(const uint8_t *s, size_t n);

/* Valid UTF-8 without NUL: can be shown as text. */
int keel__is_text(const uint8_t *s, size_t n);

/* Appends s as a JSON string, quotes included. Bytes that are not UTF-8
 * become U+FFFD (as the escape \ufffd), one per byte: callers that need
 * the exact bytes send base64 beside it. */
void keel__sb_json_str(struct keel_sbuf *b, const uint8_t *s, size_t n);

/* Appends s in base64 (RFC 4648, padded) between quotes: a JSON string. */
void keel__sb_base64(struct keel_sbuf *b, const uint8_t *s, size_t n);

#endif
