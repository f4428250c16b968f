/* Strict JSON for one line of a history: a parser that builds a small tree
 * and a writer of the few things a history line holds. Not a general JSON
 * library: numbers are 64-bit integers only (a fraction or an exponent is
 * refused), strings must be UTF-8 and may not hold U+0000 (they become C
 * strings), an object may not repeat a name, and nesting stops at
 * CHAOS_JSON_MAX_DEPTH. The history's fixed schema needs no more, and
 * refusing the rest keeps a writer's mistakes from passing unnoticed. */
#ifndef KEEL_CHAOS_JSON_H
#define KEEL_CHAOS_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "chaos/arena.h"

#define CHAOS_JSON_MAX_DEPTH 8

typedef enum chaos_json_type {
    CHAOS_JSON_NULL,
    CHAOS_JSON_BOOL,
    CHAOS_JSON_INT,
    CHAOS_JSON_STR,
    CHAOS_JSON_ARRAY,
    CHAOS_JSON_OBJECT
} chaos_json_type;

typedef struct chaos_json chaos_json;
struct chaos_json {
    chaos_json_type type;
    int b;             /* BOOL */
    int64_t i;         /* INT */
    const char *s;     /* STR: decoded, NUL-terminated */
    size_t len;        /* STR: bytes before the NUL */
    chaos_json *items; /* ARRAY: elements; OBJECT: members, in text order */
    size_t n;
    const char *key;   /* a member of an object: its name */
};

/* Parses text[0..len), one JSON value and nothing after it but spaces or
 * tabs. The tree and its strings are allocated in a and live as long as
 * it. Returns 0, KEEL_ENOMEM, or KEEL_EINVAL with err saying what is
 * wrong and at which column (from 1, in bytes). */
int chaos_json_parse(const char *text, size_t len, chaos_arena *a,
                     chaos_json *out, char *err, size_t errlen);

/* The member called key of an object, or NULL. */
const chaos_json *chaos_json_get(const chaos_json *obj, const char *key);

/* A growing text buffer. A failed allocation sets oom and later appends
 * do nothing, so a caller checks once at the end. p is NUL-terminated
 * while not oom. */
typedef struct chaos_buf {
    char *p;
    size_t len, cap;
    int oom;
} chaos_buf;

void chaos_buf_init(chaos_buf *b);
void chaos_buf_free(chaos_buf *b);
void chaos_buf_add(chaos_buf *b, const char *s, size_t n);
void chaos_buf_puts(chaos_buf *b, const char *s);
void chaos_buf_printf(chaos_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* s as a JSON string, quoted and escaped. Returns KEEL_EINVAL (nothing
 * appended) when s is not valid UTF-8. */
int chaos_json_put_str(chaos_buf *b, const char *s);

/* 1 when s[0..n) is valid UTF-8 (no overlong forms, no surrogates). */
int chaos_utf8_valid(const char *s, size_t n);

#endif
