#include "chaos/json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"

struct parser {
    const char *p, *start, *end;
    chaos_arena *a;
    char *err;
    size_t errlen;
    int rc; /* the first error; later ones are not reported */
};

static int fail(struct parser *ps, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct parser *ps, const char *at, const char *fmt, ...)
{
    va_list ap;
    int w;

    if (ps->rc != 0)
        return ps->rc;
    ps->rc = KEEL_EINVAL;
    if (ps->errlen == 0)
        return ps->rc;
    w = snprintf(ps->err, ps->errlen, "column %zu: ",
                 (size_t)(at - ps->start) + 1);
    if (w < 0 || (size_t)w >= ps->errlen)
        return ps->rc;
    va_start(ap, fmt);
    vsnprintf(ps->err + w, ps->errlen - (size_t)w, fmt, ap);
    va_end(ap);
    return ps->rc;
}

static int oom(struct parser *ps)
{
    if (ps->rc == 0) {
        ps->rc = KEEL_ENOMEM;
        if (ps->errlen > 0)
            snprintf(ps->err, ps->errlen, "out of memory");
    }
    return ps->rc;
}

static void skip_space(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
        ps->p++;
}

/* Length of the UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len, k;
    unsigned cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[k] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

int chaos_utf8_valid(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t k = utf8_seq((const unsigned char *)s + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    int k;

    for (k = 0; k < 4; k++) {
        char c = p[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* At the opening quote. The decoded string is never longer than the
 * text, so one allocation of the text's length is enough. */
static int parse_string(struct parser *ps, const char **out, size_t *outlen)
{
    const char *q = ps->p + 1, *open = ps->p;
    char *buf, *o;

    /* Find the closing quote to size the buffer. */
    while (q < ps->end && *q != '"') {
        if (*q == '\\' && q + 1 < ps->end)
            q++;
        q++;
    }
    if (q >= ps->end)
        return fail(ps, open, "string not closed");
    buf = chaos_arena_alloc(ps->a, (size_t)(q - open));
    if (buf == NULL)
        return oom(ps);
    o = buf;
    ps->p++;
    while (*ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20)
            return fail(ps, ps->p, "control character 0x%02x in a string "
                                   "(write it as \\u%04x)", c, c);
        if (c == '\\') {
            const char *esc = ps->p;
            unsigned cp;
            ps->p++;
            switch (*ps->p) {
            case '"': *o++ = '"'; ps->p++; continue;
            case '\\': *o++ = '\\'; ps->p++; continue;
            case '/': *o++ = '/'; ps->p++; continue;
            case 'b': *o++ = '\b'; ps->p++; continue;
            case 'f': *o++ = '\f'; ps->p++; continue;
            case 'n': *o++ = '\n'; ps->p++; continue;
            case 'r': *o++ = '\r'; ps->p++; continue;
            case 't': *o++ = '\t'; ps->p++; continue;
            case 'u': break;
            default:
                return fail(ps, esc, "unknown escape \\%c", *ps->p);
            }
            if (ps->end - ps->p < 5 || hex4(ps->p + 1, &cp) != 0)
                return fail(ps, esc, "\\u needs four hex digits");
            ps->p += 5;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned lo;
                if (ps->end - ps->p < 6 || ps->p[0] != '\\' ||
                    ps->p[1] != 'u' || hex4(ps->p + 2, &lo) != 0 ||
                    lo < 0xdc00 || lo > 0xdfff)
                    return fail(ps, esc, "lone UTF-16 surrogate \\u%04x", cp);
                ps->p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                return fail(ps, esc, "lone UTF-16 surrogate \\u%04x", cp);
            }
            if (cp == 0)
                return fail(ps, esc, "\\u0000 is not allowed in strings");
            o += put_utf8(o, cp);
            continue;
        }
        {
            size_t k = utf8_seq((const unsigned char *)ps->p,
                                (size_t)(ps->end - ps->p));
            if (k == 0)
                return fail(ps, ps->p, "invalid UTF-8 in a string");
            memcpy(o, ps->p, k);
            o += k;
            ps->p += k;
        }
    }
    ps->p++;
    *o = '\0';
    *out = buf;
    *outlen = (size_t)(o - buf);
    return 0;
}

static int parse_int(struct parser *ps, int64_t *out)
{
    const char *s = ps->p;
    int neg = 0;
    uint64_t v = 0, lim;

    if (*ps->p == '-') {
        neg = 1;
        ps->p++;
    }
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
        return fail(ps, s, "a number needs digits");
    if (*ps->p == '0' && ps->p + 1 < ps->end && ps->p[1] >= '0' &&
        ps->p[1] <= '9')
        return fail(ps, s, "a number may not start with 0");
    lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        unsigned d = (unsigned)(*ps->p - '0');
        if (v > (lim - d) / 10)
            return fail(ps, s, "number out of the signed 64-bit range");
        v = v * 10 + d;
        ps->p++;
    }
    if (ps->p < ps->end &&
        (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E'))
        return fail(ps, s, "numbers must be integers (no fraction, no "
                           "exponent)");
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static int parse_value(struct parser *ps, chaos_json *v, int depth);

/* Items of an array or members of an object: gathered in a growing
 * vector, then copied into the arena. */
static int parse_list(struct parser *ps, chaos_json *v, int depth, int obj)
{
    chaos_json *vec = NULL, *tmp;
    size_t n = 0, cap = 0, k;
    char close = obj ? '}' : ']';
    const char *open = ps->p;

    if (depth >= CHAOS_JSON_MAX_DEPTH)
        return fail(ps, ps->p, "nested deeper than %d", CHAOS_JSON_MAX_DEPTH);
    ps->p++;
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        goto done;
    }
    for (;;) {
        chaos_json item;
        memset(&item, 0, sizeof item);
        skip_space(ps);
        if (obj) {
            const char *name = ps->p;
            size_t klen;
            if (ps->p >= ps->end || *ps->p != '"') {
                fail(ps, ps->p, "expected a member name in quotes");
                goto err;
            }
            if (parse_string(ps, &item.key, &klen) != 0)
                goto err;
            for (k = 0; k < n; k++)
                if (strcmp(vec[k].key, item.key) == 0) {
                    fail(ps, name, "member \"%s\" appears twice", item.key);
                    goto err;
                }
            skip_space(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                fail(ps, ps->p, "expected ':' after \"%s\"", item.key);
                goto err;
            }
            ps->p++;
            skip_space(ps);
        }
        {
            const char *key = item.key;
            if (parse_value(ps, &item, depth + 1) != 0)
                goto err;
            item.key = key;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            tmp = realloc(vec, cap * sizeof *vec);
            if (tmp == NULL) {
                oom(ps);
                goto err;
            }
            vec = tmp;
        }
        vec[n++] = item;
        skip_space(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            break;
        }
        if (ps->p >= ps->end)
            fail(ps, open, "%s not closed", obj ? "object" : "array");
        else
            fail(ps, ps->p, "expected ',' or '%c'", close);
        goto err;
    }
done:
    v->type = obj ? CHAOS_JSON_OBJECT : CHAOS_JSON_ARRAY;
    v->n = n;
    v->items = NULL;
    if (n > 0) {
        v->items = chaos_arena_alloc(ps->a, n * sizeof *vec);
        if (v->items == NULL) {
            oom(ps);
            goto err;
        }
        memcpy(v->items, vec, n * sizeof *vec);
    }
    free(vec);
    return 0;
err:
    free(vec);
    return ps->rc;
}

static int word(struct parser *ps, const char *w)
{
    size_t n = strlen(w);

    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, w, n) != 0)
        return 0;
    ps->p += n;
    return 1;
}

static int parse_value(struct parser *ps, chaos_json *v, int depth)
{
    memset(v, 0, sizeof *v);
    skip_space(ps);
    if (ps->p >= ps->end)
        return fail(ps, ps->p, "expected a value");
    switch (*ps->p) {
    case '{':
        return parse_list(ps, v, depth, 1);
    case '[':
        return parse_list(ps, v, depth, 0);
    case '"':
        v->type = CHAOS_JSON_STR;
        return parse_string(ps, &v->s, &v->len);
    case 't':
    case 'f':
    case 'n':
        if (word(ps, "true")) {
            v->type = CHAOS_JSON_BOOL;
            v->b = 1;
        } else if (word(ps, "false")) {
            v->type = CHAOS_JSON_BOOL;
        } else if (word(ps, "null")) {
            v->type = CHAOS_JSON_NULL;
        } else {
            return fail(ps, ps->p, "unknown word (true, false or null?)");
        }
        return 0;
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) {
            v->type = CHAOS_JSON_INT;
            return parse_int(ps, &v->i);
        }
        return fail(ps, ps->p, "unexpected character '%c'", *ps->p);
    }
}

int chaos_json_parse(const char *text, size_t len, chaos_arena *a,
                     chaos_json *out, char *err, size_t errlen)
{
    struct parser ps;

    ps.p = ps.start = text;
    ps.end = text + len;
    ps.a = a;
    ps.err = err;
    ps.errlen = errlen;
    ps.rc = 0;
    if (errlen > 0)
        err[0] = '\0';
    if (parse_value(&ps, out, 0) != 0)
        return ps.rc;
    skip_space(&ps);
    if (ps.p < ps.end)
        return fail(&ps, ps.p, "text after the value");
    return 0;
}

const chaos_json *chaos_json_get(const chaos_json *obj, const char *key)
{
    size_t k;

    if (obj->type != CHAOS_JSON_OBJECT)
        return NULL;
    for (k = 0; k < obj->n; k++)
        if (strcmp(obj->items[k].key, key) == 0)
            return &obj->items[k];
    return NULL;
}

/* ----------------------------------------------------------------- output */

void chaos_buf_init(chaos_buf *b)
{
    memset(b, 0, sizeof *b);
}

void chaos_buf_free(chaos_buf *b)
{
    free(b->p);
    chaos_buf_init(b);
}

static int reserve(chaos_buf *b, size_t more)
{
    size_t cap;
    char *p;

    if (b->oom)
        return -1;
    if (b->len + more + 1 <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void chaos_buf_add(chaos_buf *b, const char *s, size_t n)
{
    if (reserve(b, n) != 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void chaos_buf_puts(chaos_buf *b, const char *s)
{
    chaos_buf_add(b, s, strlen(s));
}

void chaos_buf_printf(chaos_buf *b, const char *fmt, ...)
{
    va_list ap;
    int w;

    va_start(ap, fmt);
    w = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (w < 0 || reserve(b, (size_t)w) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)w + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)w;
}

int chaos_json_put_str(chaos_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(s), i;

    if (!chaos_utf8_valid(s, n))
        return KEEL_EINVAL;
    chaos_buf_add(b, "\"", 1);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[6];
        if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            chaos_buf_add(b, e, 2);
        } else if (c == '\n') {
            chaos_buf_add(b, "\\n", 2);
        } else if (c == '\t') {
            chaos_buf_add(b, "\\t", 2);
        } else if (c == '\r') {
            chaos_buf_add(b, "\\r", 2);
        } else if (c < 0x20 || c == 0x7f) {
            e[0] = '\\';
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            chaos_buf_add(b, e, 6);
        } else {
            chaos_buf_add(b, (const char *)&s[i], 1);
        }
    }
    chaos_buf_add(b, "\"", 1);
    return 0;
}
