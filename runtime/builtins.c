/* Built-in actor types, so a node is useful without writing C. They speak
 * text commands: the first word is the command, the rest its arguments.
 *
 *   counter   incr [n] | decr [n] | get        state: int64, 8 bytes be
 *   kv        put K V | get K | del K | keys   one named entry per key
 *   register  read | write V | cas OLD NEW     state: the value's bytes
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/node.h"

/* A message is parsed strictly (docs/protocol.md, "The built-in actor
 * types"): the command is everything before the first space; each
 * argument follows exactly one space. A word argument runs to the next
 * space and may be empty; the last argument of put, write and cas is the
 * rest of the message, spaces included. "cas OLD" and "cas OLD " differ:
 * the first lacks NEW, the second sets the empty value. */
typedef struct msg_args {
    const char *p;   /* at the end, or at the space before the next argument */
    const char *end;
} msg_args;

static void args_init(msg_args *a, const void *msg, size_t len,
                      const char **cmd, size_t *cl)
{
    /* An empty message may come as NULL: no arithmetic on that. */
    const char *s = len > 0 ? (const char *)msg : "";
    const char *end = s + len, *sp = memchr(s, ' ', len);

    *cmd = s;
    *cl = (size_t)((sp ? sp : end) - s);
    a->p = sp ? sp : end;
    a->end = end;
}

/* The next word argument: 0 when the message ends before it. */
static int arg_word(msg_args *a, const char **w, size_t *wl)
{
    const char *s, *sp;

    if (a->p == a->end)
        return 0;
    s = a->p + 1;
    sp = memchr(s, ' ', (size_t)(a->end - s));
    *w = s;
    *wl = (size_t)((sp ? sp : a->end) - s);
    a->p = sp ? sp : a->end;
    return 1;
}

/* The last argument, the rest of the message: 0 when it ends before it. */
static int arg_rest(msg_args *a, const char **r, size_t *rl)
{
    if (a->p == a->end)
        return 0;
    *r = a->p + 1;
    *rl = (size_t)(a->end - *r);
    a->p = a->end;
    return 1;
}

static int word_is(const char *w, size_t wl, const char *lit)
{
    return strlen(lit) == wl && memcmp(w, lit, wl) == 0;
}

/* Refuses anything after the arguments a command takes. */
static int no_more(keel_turn *t, const msg_args *a, const char *cmd,
                   size_t cl)
{
    if (a->p == a->end)
        return 0;
    keel_turn_error(t, "unexpected argument after %.*s: '%.*s'", (int)cl, cmd,
                    (int)(a->end - a->p - 1 > 32 ? 32 : a->end - a->p - 1),
                    a->p + 1);
    return KEEL_EBADMSG;
}

/* A decimal integer in the int64 range: an optional sign and 1 to 19
 * digits' worth of value, nothing else (no spaces, no NUL, no base
 * prefix, no trailing bytes). 0, -1 (not an integer) or -2 (out of
 * range). */
static int parse_i64(const char *w, size_t wl, int64_t *out)
{
    uint64_t u = 0, lim = INT64_MAX;
    size_t i = 0;
    int neg = 0;

    if (wl > 0 && (w[0] == '-' || w[0] == '+')) {
        neg = w[0] == '-';
        lim = (uint64_t)INT64_MAX + 1;
        i = 1;
    }
    if (i == wl)
        return -1;
    for (; i < wl; i++) {
        unsigned d;
        if (w[i] < '0' || w[i] > '9')
            return -1;
        d = (unsigned)(w[i] - '0');
        if (u > (lim - d) / 10) {
            /* Still a syntax error if a non-digit follows. */
            for (i++; i < wl; i++)
                if (w[i] < '0' || w[i] > '9')
                    return -1;
            return -2;
        }
        u = u * 10 + d;
    }
    if (!neg)
        *out = (int64_t)u;
    else
        *out = u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u;
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

/* --------------------------------------------------------------- counter */

static int counter_on_message(keel_turn *t, const void *msg, size_t len)
{
    const char *w, *nw;
    size_t wl, nl, sl;
    const void *sd;
    msg_args a;
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
    args_init(&a, msg, len, &w, &wl);
    if (wl == 0) {
        keel_turn_error(t, "no command; try incr [n], decr [n] or get");
        return KEEL_EBADMSG;
    }
    if (word_is(w, wl, "get")) {
        rc = no_more(t, &a, w, wl);
        if (rc != 0)
            return rc;
        return reply_i64(t, v);
    }
    if (!word_is(w, wl, "incr") && !word_is(w, wl, "decr")) {
        keel_turn_error(t, "unknown counter command '%.*s'; try incr [n], "
                        "decr [n] or get", (int)wl, w);
        return KEEL_EBADMSG;
    }
    {
        int decr = w[0] == 'd';
        if (arg_word(&a, &nw, &nl)) {
            rc = parse_i64(nw, nl, &by);
            if (rc == -2) {
                keel_turn_error(t, "'%.*s' is out of the signed 64-bit range",
                                (int)nl, nw);
                return KEEL_EBADMSG;
            }
            if (rc != 0) {
                keel_turn_error(t, "%.*s takes a decimal integer: an "
                                   "optional sign and digits only",
                                (int)wl, w);
                return KEEL_EBADMSG;
            }
        }
        rc = no_more(t, &a, w, wl);
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

/* An entry key of the kv type: one word of 1 to KEEL_MAX_ENTRY_KEY_LEN
 * bytes without NUL or newline (`keys` lists them one per line, and a
 * leading NUL is reserved for the node's own records). */
static int kv_key_check(keel_turn *t, const char *cmd, size_t cl,
                        const char *k, size_t kl)
{
    if (kl == 0) {
        keel_turn_error(t, "%.*s needs a key", (int)cl, cmd);
        return KEEL_EBADMSG;
    }
    if (kl > KEEL_MAX_ENTRY_KEY_LEN) {
        keel_turn_error(t, "key of %zu bytes over the %d-byte limit", kl,
                        KEEL_MAX_ENTRY_KEY_LEN);
        return KEEL_ELIMIT;
    }
    if (memchr(k, '\0', kl) != NULL || memchr(k, '\n', kl) != NULL) {
        keel_turn_error(t, "a key may not hold a NUL or newline byte");
        return KEEL_EBADMSG;
    }
    return 0;
}

static int kv_on_message(keel_turn *t, const void *msg, size_t len)
{
    const char *w, *k = NULL, *v;
    size_t wl, kl, vl;
    const void *cur;
    size_t curl;
    msg_args a;
    int rc;

    args_init(&a, msg, len, &w, &wl);
    if (wl == 0) {
        keel_turn_error(t, "no command; try put K V, get K, del K, keys");
        return KEEL_EBADMSG;
    }
    if (word_is(w, wl, "keys")) {
        struct keys_buf kb = {t, NULL, 0, 0, 0};
        rc = no_more(t, &a, w, wl);
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
        keel_turn_error(t, "unknown kv command '%.*s'; try put K V, get K, "
                        "del K, keys", (int)wl, w);
        return KEEL_EBADMSG;
    }
    if (!arg_word(&a, &k, &kl))
        kl = 0;
    rc = kv_key_check(t, w, wl, k, kl);
    if (rc != 0)
        return rc;
    if (w[0] == 'p') {
        /* V may be empty ("put K "), but not missing ("put K"). */
        if (!arg_rest(&a, &v, &vl)) {
            keel_turn_error(t, "put needs K and V");
            return KEEL_EBADMSG;
        }
        rc = keel_turn_put(t, k, kl, v, vl);
        return rc != 0 ? rc : keel_turn_reply(t, "OK", 2);
    }
    rc = no_more(t, &a, w, wl);
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
    const char *w, *o, *v;
    size_t wl, ol, vl, sl;
    const void *sd;
    msg_args a;
    int rc;

    args_init(&a, msg, len, &w, &wl);
    if (wl == 0) {
        keel_turn_error(t, "no command; try read, write V, cas OLD NEW");
        return KEEL_EBADMSG;
    }
    keel_turn_state(t, &sd, &sl);
    if (word_is(w, wl, "read")) {
        rc = no_more(t, &a, w, wl);
        return rc != 0 ? rc : keel_turn_reply(t, sd, sl);
    }
    if (word_is(w, wl, "write")) {
        /* V may be empty ("write "), but not missing ("write"). */
        if (!arg_rest(&a, &v, &vl)) {
            keel_turn_error(t, "write needs V");
            return KEEL_EBADMSG;
        }
        rc = keel_turn_set_state(t, v, vl);
        return rc != 0 ? rc : keel_turn_reply(t, "OK", 2);
    }
    if (word_is(w, wl, "cas")) {
        /* OLD, then NEW; either may be empty, neither missing. */
        if (!arg_word(&a, &o, &ol) || !arg_rest(&a, &v, &vl)) {
            keel_turn_error(t, "cas needs OLD and NEW");
            return KEEL_EBADMSG;
        }
        if (ol != sl || (ol > 0 && memcmp(o, sd, ol) != 0))
            return keel_turn_reply(t, "FAILED", 6); /* unchanged */
        rc = keel_turn_set_state(t, v, vl);
        return rc != 0 ? rc : keel_turn_reply(t, "OK", 2);
    }
    keel_turn_error(t, "unknown register command '%.*s'; try read, "
                    "write V, cas OLD NEW", (int)wl, w);
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
