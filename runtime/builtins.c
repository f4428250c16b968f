/* Built-in actor types, so a node is useful without writing C. They speak
 * text commands: the first word is the command, the rest its arguments.
 *
 *   counter   incr [n] | decr [n] | get        state: int64, 8 bytes be
 *   kv        put K V | get K | del K | keys   one named entry per key
 *   register  read | write V | cas OLD NEW     state: the value's bytes
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/node.h"

/* Splits off the next space-separated word of [*p, end). */
static int next_word(const char **p, const char *end, const char **w,
                     size_t *wl)
{
    const char *s = *p;

    while (s < end && *s == ' ')
        s++;
    if (s == end)
        return 0;
    *w = s;
    while (s < end && *s != ' ')
        s++;
    *wl = (size_t)(s - *w);
    *p = s;
    return 1;
}

static int word_is(const char *w, size_t wl, const char *lit)
{
    return strlen(lit) == wl && memcmp(w, lit, wl) == 0;
}

/* What follows the single separating space: may hold spaces itself. */
static void rest_of(const char *p, const char *end, const char **r,
                    size_t *rl)
{
    if (p < end && *p == ' ')
        p++;
    *r = p;
    *rl = (size_t)(end - p);
}

static int parse_i64(const char *w, size_t wl, int64_t *out)
{
    char buf[32];
    char *endp;
    long long v;

    if (wl == 0 || wl >= sizeof buf)
        return -1;
    memcpy(buf, w, wl);
    buf[wl] = '\0';
    errno = 0;
    v = strtoll(buf, &endp, 10);
    if (errno != 0 || *endp != '\0')
        return -1;
    *out = v;
    return 0;
}

/* Decimal text of v into buf (at least 20 bytes); returns the length.
 * The counter's replies are its hottest path: no printf machinery. */
static size_t fmt_i64(char *buf, int64_t v)
{
    char tmp[20];
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t n = 0, len = 0;

    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        buf[len++] = '-';
    while (n > 0)
        buf[len++] = tmp[--n];
    return len;
}

static int reply_i64(keel_turn *t, int64_t v)
{
    char buf[24];

    return keel_turn_reply(t, buf, fmt_i64(buf, v));
}

static int no_more(keel_turn *t, const char *p, const char *end)
{
    const char *w;
    size_t wl;

    if (next_word(&p, end, &w, &wl)) {
        keel_turn_error(t, "unexpected argument '%.*s'", (int)wl, w);
        return KEEL_EBADMSG;
    }
    return 0;
}

/* --------------------------------------------------------------- counter */

static int counter_on_message(keel_turn *t, const void *msg, size_t len)
{
    const char *p = msg, *end = p + len, *w;
    size_t wl, sl;
    const void *sd;
    int64_t v = 0, by = 1;
    uint8_t b[8];
    int i, rc;

    keel_turn_state(t, &sd, &sl);
    if (sl == 8) {
        uint64_t u = 0;
        for (i = 0; i < 8; i++)
            u = (u << 8) | ((const uint8_t *)sd)[i];
        v = (int64_t)u;
    } else if (sl != 0) {
        keel_turn_error(t, "counter state has %zu bytes, not 8", sl);
        return KEEL_ECORRUPT;
    }
    if (!next_word(&p, end, &w, &wl)) {
        keel_turn_error(t, "empty message; try incr [n], decr [n] or get");
        return KEEL_EBADMSG;
    }
    if (word_is(w, wl, "get")) {
        rc = no_more(t, p, end);
        if (rc != 0)
            return rc;
        return reply_i64(t, v);
    }
    if (!word_is(w, wl, "incr") && !word_is(w, wl, "decr")) {
        keel_turn_error(t, "unknown counter command '%.*s'", (int)wl, w);
        return KEEL_EBADMSG;
    }
    {
        int decr = w[0] == 'd';
        const char *nw;
        size_t nl;
        if (next_word(&p, end, &nw, &nl) && parse_i64(nw, nl, &by) != 0) {
            keel_turn_error(t, "'%.*s' is not an integer", (int)nl, nw);
            return KEEL_EBADMSG;
        }
        rc = no_more(t, p, end);
        if (rc != 0)
            return rc;
        if (decr) {
            if (by == INT64_MIN) {
                keel_turn_error(t, "decrement out of range");
                return KEEL_EBADMSG;
            }
            by = -by;
        }
        if (__builtin_add_overflow(v, by, &v)) {
            keel_turn_error(t, "counter would overflow");
            return KEEL_EBADMSG;
        }
    }
    for (i = 7; i >= 0; i--)
        b[i] = (uint8_t)((uint64_t)v >> (8 * (7 - i)));
    rc = keel_turn_set_state(t, b, 8);
    return rc != 0 ? rc : reply_i64(t, v);
}

/* -------------------------------------------------------------------- kv */

struct keys_buf {
    keel_turn *t;
    char *buf;
    size_t len, cap;
    int err;
};

static int kv_keys_cb(const void *key, size_t klen, const void *val,
                      size_t vlen, void *data)
{
    struct keys_buf *kb = data;

    (void)val;
    (void)vlen;
    if (kb->len + klen + 1 > kb->cap) {
        size_t cap = kb->cap ? kb->cap * 2 : 1024;
        char *p;
        while (cap < kb->len + klen + 1)
            cap *= 2;
        p = realloc(kb->buf, cap);
        if (p == NULL) {
            kb->err = KEEL_ENOMEM;
            return 1;
        }
        kb->buf = p;
        kb->cap = cap;
    }
    memcpy(kb->buf + kb->len, key, klen);
    kb->len += klen;
    kb->buf[kb->len++] = '\n';
    return 0;
}

static int kv_on_message(keel_turn *t, const void *msg, size_t len)
{
    const char *p = msg, *end = p + len, *w, *k, *v;
    size_t wl, kl, vl;
    const void *cur;
    size_t curl;
    int rc;

    if (!next_word(&p, end, &w, &wl)) {
        keel_turn_error(t, "empty message; try put K V, get K, del K, keys");
        return KEEL_EBADMSG;
    }
    if (word_is(w, wl, "keys")) {
        struct keys_buf kb = {t, NULL, 0, 0, 0};
        rc = no_more(t, p, end);
        if (rc != 0)
            return rc;
        rc = keel_turn_entries(t, kv_keys_cb, &kb);
        if (rc == 0)
            rc = kb.err;
        if (rc == 0)
            rc = keel_turn_reply(t, kb.buf, kb.len ? kb.len - 1 : 0);
        free(kb.buf);
        return rc;
    }
    if (!word_is(w, wl, "put") && !word_is(w, wl, "get") &&
        !word_is(w, wl, "del")) {
        keel_turn_error(t, "unknown kv command '%.*s'", (int)wl, w);
        return KEEL_EBADMSG;
    }
    if (!next_word(&p, end, &k, &kl)) {
        keel_turn_error(t, "%.*s needs a key", (int)wl, w);
        return KEEL_EBADMSG;
    }
    if (kl > KEEL_MAX_ENTRY_KEY_LEN) {
        keel_turn_error(t, "key of %zu bytes over the %d-byte limit", kl,
                        KEEL_MAX_ENTRY_KEY_LEN);
        return KEEL_ELIMIT;
    }
    if (w[0] == 'p') {
        rest_of(p, end, &v, &vl);
        rc = keel_turn_put(t, k, kl, v, vl);
        return rc != 0 ? rc : keel_turn_reply(t, "OK", 2);
    }
    rc = no_more(t, p, end);
    if (rc != 0)
        return rc;
    rc = keel_turn_get(t, k, kl, &cur, &curl);
    if (w[0] == 'g') {
        if (rc == KEEL_ENOTFOUND)
            keel_turn_error(t, "no key '%.*s'", (int)kl, k);
        return rc != 0 ? rc : keel_turn_reply(t, cur, curl);
    }
    /* del: replies how many entries it removed, 0 or 1. */
    if (rc == KEEL_ENOTFOUND)
        return keel_turn_reply(t, "0", 1);
    if (rc != 0)
        return rc;
    rc = keel_turn_del(t, k, kl);
    return rc != 0 ? rc : keel_turn_reply(t, "1", 1);
}

/* -------------------------------------------------------------- register */

static int register_on_message(keel_turn *t, const void *msg, size_t len)
{
    const char *p = msg, *end = p + len, *w, *o, *v;
    size_t wl, ol, vl, sl;
    const void *sd;
    int rc;

    if (!next_word(&p, end, &w, &wl)) {
        keel_turn_error(t, "empty message; try read, write V, cas OLD NEW");
        return KEEL_EBADMSG;
    }
    keel_turn_state(t, &sd, &sl);
    if (word_is(w, wl, "read")) {
        rc = no_more(t, p, end);
        return rc != 0 ? rc : keel_turn_reply(t, sd, sl);
    }
    if (word_is(w, wl, "write")) {
        rest_of(p, end, &v, &vl);
        rc = keel_turn_set_state(t, v, vl);
        return rc != 0 ? rc : keel_turn_reply(t, "OK", 2);
    }
    if (word_is(w, wl, "cas")) {
        if (!next_word(&p, end, &o, &ol)) {
            keel_turn_error(t, "cas needs OLD and NEW");
            return KEEL_EBADMSG;
        }
        rest_of(p, end, &v, &vl);
        if (ol != sl || memcmp(o, sd, ol) != 0)
            return keel_turn_reply(t, "FAILED", 6); /* unchanged */
        rc = keel_turn_set_state(t, v, vl);
        return rc != 0 ? rc : keel_turn_reply(t, "OK", 2);
    }
    keel_turn_error(t, "unknown register command '%.*s'", (int)wl, w);
    return KEEL_EBADMSG;
}

int keel__register_builtins(keel_node *n)
{
    static const keel_actor_type types[] = {
        {.name = "counter", .on_message = counter_on_message},
        {.name = "kv", .on_message = kv_on_message},
        {.name = "register", .on_message = register_on_message},
    };
    size_t i;

    for (i = 0; i < sizeof types / sizeof types[0]; i++) {
        int rc = keel_node_register_type(n, &types[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}
