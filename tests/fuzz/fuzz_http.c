/* Fuzz target: the HTTP face's own parsing and encoding, behind
 * libmicrohttpd: routing (runtime/http_route.c: paths, the absolute
 * form, methods, percent-decoding of type and id, Idempotency-Key,
 * Last-Event-ID, ?payloads=), the bearer token of an Authorization header
 * (keel__auth_bearer, runtime/auth.c) and the text encoders that put an
 * actor's bytes into answers (runtime/http_text.c).
 *
 * Input: a selector byte, then the rest. The selector's low two bits
 * pick the mode:
 *  - 0 or 1, a request. Bits 2-4 pick the method: GET, HEAD, POST, PUT,
 *    DELETE, OPTIONS, "get", or (7) the first field of the rest. The rest
 *    is NUL-separated fields: [method,] path, Idempotency-Key,
 *    Last-Event-ID, payloads; a field the input does not reach is absent
 *    (NULL), as a header the request does not have. Bit 5 picks the form
 *    of the path the round trip below sends (origin or absolute), bit 6
 *    upper- or lower-case hex digits in it.
 *  - 2, text: the rest is the bytes given to the encoders.
 *  - 3, an Authorization header value: the rest, up to a NUL.
 *
 * Properties, besides "no crash, no sanitizer report, no leak":
 *  - routing: route and method are in their enums, the method is GET for
 *    GET and HEAD, POST for POST, other otherwise. An unknown path is
 *    KEEL_ENOTFOUND and only that; any error has a KEEL_E* code and a
 *    non-empty message; a 405 (not_allowed) is exactly a method other
 *    than GET/HEAD, or a POST to anything but an actor. A routed actor
 *    has a type of 1 to KEEL_MAX_TYPE_LEN bytes without NUL and an id of
 *    at most KEEL_MAX_ID_LEN bytes, both the percent-decoding (done here
 *    independently) of the path's segments; sent again percent-encoded
 *    (every byte, other than unreserved ones, as %XX), it routes to the
 *    same actor with the same key, since and payloads. Other endpoints
 *    route only from their exact path. A request key is taken only on a
 *    POST to an actor, from 32 hex digits, and always when they are
 *    there; since is nonzero only from a Last-Event-ID of decimal digits
 *    that spell it, and a Last-Event-ID that is not decimal digits is
 *    refused; payloads is set only by "1" (or its percent-encoding
 *    "%31"), refused unless it spells "0" or "1";
 *  - text: keel__utf8_seq and keel__is_text agree with a decoder written
 *    here by code points; keel__sb_json_str writes a JSON string (quotes,
 *    only the escapes JSON has, no raw control character or quote, valid
 *    UTF-8) that decodes to the input with each byte that begins no UTF-8
 *    sequence replaced by U+FFFD, hence to the input itself when it is
 *    UTF-8; keel__sb_base64 writes padded base64 that decodes to the
 *    input; a buffer written piece by piece holds their concatenation;
 *  - bearer: a token is found exactly when the value begins with "Bearer "
 *    in any case; it lies inside the value, after the spaces that follow
 *    the scheme, and what is cut off its end is spaces and tabs only. */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "runtime/auth.h"
#include "runtime/dedup.h"
#include "runtime/http_route.h"
#include "runtime/http_text.h"

/* ---------------------------------------------------------------- text */

/* Length of the UTF-8 sequence at s by its code point, or 0: decoded
 * first, then judged (overlong, surrogate, beyond U+10FFFF), unlike
 * keel__utf8_seq, which checks byte ranges. */
static size_t ref_seq(const uint8_t *s, size_t n, uint32_t *cpo)
{
    uint32_t cp;
    size_t len, i;

    if (s[0] < 0x80) {
        *cpo = s[0];
        return 1;
    }
    if ((s[0] & 0xe0) == 0xc0) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
        (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    *cpo = cp;
    return len;
}

static int ref_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0, k;
    uint32_t cp;

    while (i < n) {
        if ((k = ref_seq(s + i, n - i, &cp)) == 0)
            return 0;
        i += k;
    }
    return 1;
}

static void put_utf8(struct keel_sbuf *b, uint32_t cp)
{
    uint8_t u[4];

    if (cp < 0x80) {
        u[0] = (uint8_t)cp;
        keel__sb_add(b, u, 1);
    } else if (cp < 0x800) {
        u[0] = (uint8_t)(0xc0 | cp >> 6);
        u[1] = (uint8_t)(0x80 | (cp & 0x3f));
        keel__sb_add(b, u, 2);
    } else {
        u[0] = (uint8_t)(0xe0 | cp >> 12);
        u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (uint8_t)(0x80 | (cp & 0x3f));
        keel__sb_add(b, u, 3);
    }
}

static int hexdig(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Checks that [p, p+n) is one JSON string (RFC 8259) and decodes it into
 * out. keel writes no surrogate escapes, so none is accepted. */
static void json_decode(const char *p, size_t n, struct keel_sbuf *out)
{
    const uint8_t *s = (const uint8_t *)p;
    size_t i;

    FUZZ_CHECK(n >= 2 && s[0] == '"' && s[n - 1] == '"');
    FUZZ_CHECK(ref_utf8(s, n));
    for (i = 1; i < n - 1;) {
        FUZZ_CHECK(s[i] >= 0x20 && s[i] != '"');
        if (s[i] != '\\') {
            keel__sb_add(out, s + i, 1);
            i++;
            continue;
        }
        FUZZ_CHECK(i + 1 < n - 1);
        switch (s[i + 1]) {
        case '"':
        case '\\':
        case '/':
            keel__sb_add(out, s + i + 1, 1);
            i += 2;
            break;
        case 'n':
            keel__sb_add(out, "\n", 1);
            i += 2;
            break;
        case 'r':
            keel__sb_add(out, "\r", 1);
            i += 2;
            break;
        case 't':
            keel__sb_add(out, "\t", 1);
            i += 2;
            break;
        case 'b':
            keel__sb_add(out, "\b", 1);
            i += 2;
            break;
        case 'f':
            keel__sb_add(out, "\f", 1);
            i += 2;
            break;
        case 'u': {
            uint32_t cp = 0;
            size_t j;
            FUZZ_CHECK(i + 6 <= n - 1);
            for (j = 2; j < 6; j++) {
                FUZZ_CHECK(hexdig(s[i + j]) >= 0);
                cp = cp << 4 | (uint32_t)hexdig(s[i + j]);
            }
            FUZZ_CHECK(cp < 0xd800 || cp > 0xdfff);
            put_utf8(out, cp);
            i += 6;
            break;
        }
        default:
            FUZZ_CHECK(!"an escape JSON does not have");
        }
    }
    FUZZ_CHECK(!out->oom);
}

static void check_json(const uint8_t *s, size_t n)
{
    static const uint8_t fffd[] = {0xef, 0xbf, 0xbd};
    struct keel_sbuf b = {0}, dec = {0}, want = {0};
    size_t i = 0, k;
    uint32_t cp;

    keel__sb_json_str(&b, s, n);
    FUZZ_CHECK(!b.oom);
    json_decode(b.p, b.len, &dec);
    while (i < n) {
        k = ref_seq(s + i, n - i, &cp);
        if (k == 0) {
            keel__sb_add(&want, fffd, sizeof fffd);
            i++;
        } else {
            keel__sb_add(&want, s + i, k);
            i += k;
        }
    }
    FUZZ_CHECK(!want.oom);
    FUZZ_CHECK(dec.len == want.len &&
               (want.len == 0 || memcmp(dec.p, want.p, want.len) == 0));
    if (ref_utf8(s, n))
        FUZZ_CHECK(dec.len == n && (n == 0 || memcmp(dec.p, s, n) == 0));
    free(b.p);
    free(dec.p);
    free(want.p);
}

static int b64val(int c)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c != 0 ? strchr(tab, c) : NULL;
    return p != NULL ? (int)(p - tab) : -1;
}

static void check_base64(const uint8_t *s, size_t n)
{
    struct keel_sbuf b = {0};
    const char *q;
    size_t groups = (n + 2) / 3, i, o = 0, pad;
    uint8_t *dec;

    keel__sb_base64(&b, s, n);
    FUZZ_CHECK(!b.oom);
    FUZZ_CHECK(b.len == 2 + 4 * groups && b.p[0] == '"' &&
               b.p[b.len - 1] == '"');
    q = b.p + 1;
    pad = n % 3 == 0 ? 0 : 3 - n % 3;
    dec = malloc(3 * groups + 1);
    FUZZ_CHECK(dec != NULL);
    for (i = 0; i < 4 * groups; i += 4) {
        int v[4], j;
        int last = i + 4 == 4 * groups;
        for (j = 0; j < 4; j++) {
            if (last && j >= 4 - (int)pad) {
                FUZZ_CHECK(q[i + j] == '=');
                v[j] = 0;
            } else {
                v[j] = b64val(q[i + j]);
                FUZZ_CHECK(v[j] >= 0);
            }
        }
        dec[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
        dec[o++] = (uint8_t)((v[1] & 15) << 4 | v[2] >> 2);
        dec[o++] = (uint8_t)((v[2] & 3) << 6 | v[3]);
        if (last && pad > 0) /* the unused bits are zero */
            FUZZ_CHECK((pad == 1 && (v[2] & 3) == 0) ||
                       (pad == 2 && (v[1] & 15) == 0));
    }
    FUZZ_CHECK(o - pad == n && (n == 0 || memcmp(dec, s, n) == 0));
    free(dec);
    free(b.p);
}

static void check_text(const uint8_t *s, size_t n)
{
    struct keel_sbuf b = {0};
    size_t i, k, off;
    uint32_t cp;
    int nul = memchr(s, 0, n) != NULL;
    char *cstr;

    for (i = 0; i < n; i++) {
        k = ref_seq(s + i, n - i, &cp);
        FUZZ_CHECK(keel__utf8_seq(s + i, n - i) == k);
    }
    FUZZ_CHECK(keel__is_text(s, n) == (ref_utf8(s, n) && !nul));
    check_json(s, n);
    check_base64(s, n);

    /* Pieces of every size up to 255 bytes, told by the input itself. */
    for (off = 0; off < n; off += k) {
        k = (size_t)s[off] + 1;
        if (k > n - off)
            k = n - off;
        keel__sb_add(&b, s + off, k);
    }
    FUZZ_CHECK(!b.oom && b.len == n && (n == 0 || memcmp(b.p, s, n) == 0));
    /* printf-formatted text is cut at 511 bytes, never overflows. */
    cstr = malloc(n + 1);
    FUZZ_CHECK(cstr != NULL);
    if (n > 0)
        memcpy(cstr, s, n);
    cstr[n] = '\0';
    k = strlen(cstr);
    keel__sb_printf(&b, "%s", cstr);
    FUZZ_CHECK(!b.oom && b.len == n + (k < 511 ? k : 511) &&
               (b.len == n || memcmp(b.p + n, cstr, b.len - n) == 0));
    keel__sb_puts(&b, cstr);
    FUZZ_CHECK(b.len == n + (k < 511 ? k : 511) + k);
    free(cstr);
    free(b.p);
}

/* -------------------------------------------------------------- bearer */

static void check_bearer(const uint8_t *data, size_t size)
{
    char *v = malloc(size + 1);
    const char *tok;
    size_t len = (size_t)-1, vl, i;

    FUZZ_CHECK(v != NULL);
    if (size > 0)
        memcpy(v, data, size);
    v[size] = '\0';
    vl = strlen(v);
    FUZZ_CHECK(keel__auth_bearer(NULL, &len) == NULL);
    tok = keel__auth_bearer(v, &len);
    FUZZ_CHECK((tok != NULL) == (vl >= 7 && strncasecmp(v, "bearer ", 7) == 0));
    if (tok != NULL) {
        FUZZ_CHECK(tok >= v + 7 && tok + len <= v + vl);
        for (i = 7; v + i < tok; i++)
            FUZZ_CHECK(v[i] == ' ');
        FUZZ_CHECK(len == 0 || tok[0] != ' ');
        FUZZ_CHECK(len == 0 || (tok[len - 1] != ' ' && tok[len - 1] != '\t'));
        for (i = (size_t)(tok - v) + len; i < vl; i++)
            FUZZ_CHECK(v[i] == ' ' || v[i] == '\t');
    }
    free(v);
}

/* ------------------------------------------------------------- routing */

/* Percent-decodes as RFC 3986 says, or -1 for a bad escape. */
static long ref_pct(const char *s, size_t n, uint8_t *out)
{
    size_t i = 0, o = 0;

    while (i < n) {
        if (s[i] == '%') {
            if (n - i < 3 || hexdig(s[i + 1]) < 0 || hexdig(s[i + 2]) < 0)
                return -1;
            out[o++] = (uint8_t)(hexdig(s[i + 1]) << 4 | hexdig(s[i + 2]));
            i += 3;
        } else {
            out[o++] = (uint8_t)s[i++];
        }
    }
    return (long)o;
}

static void pct_encode(struct keel_sbuf *b, const uint8_t *s, size_t n,
                       int upper)
{
    const char *hex = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        if (isalnum(s[i]) || s[i] == '-' || s[i] == '.' || s[i] == '_' ||
            s[i] == '~') {
            keel__sb_add(b, s + i, 1);
        } else {
            char e[3] = {'%', hex[s[i] >> 4], hex[s[i] & 15]};
            keel__sb_add(b, e, 3);
        }
    }
}

/* v is the one character c, as sent or percent-encoded ("%31"). */
static int spells(const char *v, char c)
{
    static const char hex[] = "0123456789abcdef0123456789ABCDEF";

    if (v[0] == c && v[1] == '\0')
        return 1;
    for (int up = 0; up < 2; up++)
        if (v[0] == '%' && v[1] == hex[16 * up + ((unsigned char)c >> 4)] &&
            v[2] == hex[16 * up + (c & 15)] && v[3] == '\0')
            return 1;
    return 0;
}

static int all_digits(const char *v)
{
    size_t i;

    for (i = 0; v[i] != '\0'; i++)
        if (v[i] < '0' || v[i] > '9')
            return 0;
    return i > 0;
}

static int known_code(int err)
{
    return err == KEEL_EINVAL || err == KEEL_ELIMIT ||
           err == KEEL_ENOTYPE || err == KEEL_ENOTFOUND ||
           err == KEEL_ENOMEM;
}

/* The path routing sees: the absolute form's path, "/" when it has
 * none. */
static const char *origin_path(const char *p)
{
    const char *s;

    if (strncasecmp(p, "http://", 7) == 0)
        s = strchr(p + 7, '/');
    else if (strncasecmp(p, "https://", 8) == 0)
        s = strchr(p + 8, '/');
    else
        return p;
    return s != NULL ? s : "/";
}

static void check_route(const struct keel_http_request *req, int sel)
{
    static const char actors[] = "/v1/actors/";
    struct keel_http_route rt = {0}, again = {0};
    const char *path = origin_path(req->path);
    int is_get, is_post, actorish;

    keel__http_route(&rt, req);
    is_get = strcmp(req->method, "GET") == 0 ||
             strcmp(req->method, "HEAD") == 0;
    is_post = strcmp(req->method, "POST") == 0;
    FUZZ_CHECK(rt.method == (is_get    ? KEEL_HTTP_M_GET
                             : is_post ? KEEL_HTTP_M_POST
                                       : KEEL_HTTP_M_OTHER));
    FUZZ_CHECK(rt.route >= KEEL_HTTP_R_NONE &&
               rt.route <= KEEL_HTTP_R_CLUSTER);
    FUZZ_CHECK(memchr(rt.errmsg, 0, sizeof rt.errmsg) != NULL);
    if (rt.err == 0) {
        FUZZ_CHECK(rt.errmsg[0] == '\0');
    } else {
        FUZZ_CHECK(known_code(rt.err) && rt.errmsg[0] != '\0');
        FUZZ_CHECK(strcmp(keel_err_name(rt.err), "EUNKNOWN") != 0);
        check_json((const uint8_t *)rt.errmsg, strlen(rt.errmsg));
    }
    FUZZ_CHECK((rt.route == KEEL_HTTP_R_NONE) == (rt.err == KEEL_ENOTFOUND));
    if (rt.route != KEEL_HTTP_R_NONE)
        FUZZ_CHECK(rt.not_allowed ==
                   (rt.method == KEEL_HTTP_M_OTHER ||
                    (rt.method == KEEL_HTTP_M_POST &&
                     rt.route != KEEL_HTTP_R_ACTOR)));
    if (rt.not_allowed)
        FUZZ_CHECK(rt.err == KEEL_EINVAL);
    switch (rt.route) {
    case KEEL_HTTP_R_HEALTHZ:
        FUZZ_CHECK(strcmp(path, "/healthz") == 0);
        break;
    case KEEL_HTTP_R_READYZ:
        FUZZ_CHECK(strcmp(path, "/readyz") == 0);
        break;
    case KEEL_HTTP_R_METRICS:
        FUZZ_CHECK(strcmp(path, "/metrics") == 0);
        break;
    case KEEL_HTTP_R_CLUSTER:
        FUZZ_CHECK(strcmp(path, "/v1/cluster") == 0);
        break;
    case KEEL_HTTP_R_NONE:
        FUZZ_CHECK(strcmp(path, "/healthz") != 0 &&
                   strcmp(path, "/v1/cluster") != 0);
        break;
    default:
        FUZZ_CHECK(strncmp(path, actors, sizeof actors - 1) == 0);
    }
    actorish = rt.route == KEEL_HTTP_R_ACTOR ||
               rt.route == KEEL_HTTP_R_EVENTS;

    /* Keys, since and payloads: only where they belong, only from the
     * values that spell them. */
    if (rt.keyed) {
        uint8_t k[KEEL_REQUEST_KEY_LEN];
        FUZZ_CHECK(rt.err == 0 && rt.route == KEEL_HTTP_R_ACTOR &&
                   rt.method == KEEL_HTTP_M_POST &&
                   req->idempotency_key != NULL &&
                   keel_dedup_key_parse(req->idempotency_key, k) == 0 &&
                   memcmp(k, rt.rkey, sizeof k) == 0);
    }
    if (rt.err == 0 && rt.route == KEEL_HTTP_R_ACTOR &&
        rt.method == KEEL_HTTP_M_POST && req->idempotency_key != NULL) {
        uint8_t k[KEEL_REQUEST_KEY_LEN];
        FUZZ_CHECK(rt.keyed ==
                   (keel_dedup_key_parse(req->idempotency_key, k) == 0));
    }
    if (rt.since != 0) {
        FUZZ_CHECK(rt.route == KEEL_HTTP_R_EVENTS &&
                   req->last_event_id != NULL &&
                   all_digits(req->last_event_id) &&
                   strtoull(req->last_event_id, NULL, 10) == rt.since);
    }
    if (rt.err == 0 && rt.route == KEEL_HTTP_R_EVENTS &&
        req->last_event_id != NULL)
        FUZZ_CHECK(all_digits(req->last_event_id));
    if (rt.payloads)
        FUZZ_CHECK(rt.route == KEEL_HTTP_R_EVENTS && req->payloads != NULL &&
                   spells(req->payloads, '1'));
    if (rt.err == 0 && rt.route == KEEL_HTTP_R_EVENTS &&
        req->payloads != NULL)
        FUZZ_CHECK(spells(req->payloads, '0') ||
                   spells(req->payloads, '1'));

    if (rt.err == 0 && actorish) {
        /* The actor is the decoding of the path's two segments. */
        const char *seg = path + sizeof actors - 1;
        const char *slash = strchr(seg, '/');
        size_t il;
        uint8_t *buf;
        long tl, dl;
        struct keel_sbuf p = {0};
        struct keel_http_request req2 = *req;

        FUZZ_CHECK(slash != NULL && slash > seg);
        il = strlen(slash + 1);
        if (rt.route == KEEL_HTTP_R_EVENTS) {
            FUZZ_CHECK(il >= 7 && strcmp(slash + 1 + il - 7, "/events") == 0);
            il -= 7;
        }
        FUZZ_CHECK(memchr(slash + 1, '/', il) == NULL);
        buf = malloc((size_t)(slash - seg) + il + 1);
        FUZZ_CHECK(buf != NULL);
        tl = ref_pct(seg, (size_t)(slash - seg), buf);
        FUZZ_CHECK(tl >= 1 && tl <= KEEL_MAX_TYPE_LEN &&
                   strlen(rt.type) == (size_t)tl &&
                   memcmp(rt.type, buf, (size_t)tl) == 0);
        dl = ref_pct(slash + 1, il, buf);
        FUZZ_CHECK(dl >= 0 && (size_t)dl == rt.idlen &&
                   rt.idlen <= KEEL_MAX_ID_LEN && rt.id != NULL &&
                   (dl == 0 || memcmp(rt.id, buf, (size_t)dl) == 0));
        free(buf);

        /* Sent again, encoded here, it routes to the same. */
        if (sel & 0x20)
            keel__sb_puts(&p, "HTTP://node.example:8080");
        keel__sb_puts(&p, actors);
        pct_encode(&p, (const uint8_t *)rt.type, strlen(rt.type),
                   sel & 0x40);
        keel__sb_add(&p, "/", 1);
        pct_encode(&p, rt.id, rt.idlen, sel & 0x40);
        if (rt.route == KEEL_HTTP_R_EVENTS)
            keel__sb_puts(&p, "/events");
        keel__sb_add(&p, "", 1);
        FUZZ_CHECK(!p.oom);
        req2.path = p.p;
        keel__http_route(&again, &req2);
        FUZZ_CHECK(again.err == 0 && again.route == rt.route &&
                   again.method == rt.method &&
                   strcmp(again.type, rt.type) == 0 &&
                   again.idlen == rt.idlen &&
                   (rt.idlen == 0 ||
                    memcmp(again.id, rt.id, rt.idlen) == 0) &&
                   again.keyed == rt.keyed &&
                   memcmp(again.rkey, rt.rkey, sizeof rt.rkey) == 0 &&
                   again.since == rt.since &&
                   again.payloads == rt.payloads);
        keel__http_route_clear(&again);
        free(p.p);
    }
    keel__http_route_clear(&rt);
    FUZZ_CHECK(rt.id == NULL && rt.err == 0);
}

/* The next NUL-terminated field of [*p, end), or NULL when the input is
 * used up. The input is copied with a NUL after it, so the last field
 * ends too. */
static const char *field(const char **p, const char *end)
{
    const char *f = *p;

    if (f >= end)
        return NULL;
    *p += strlen(f) + 1;
    return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET",    "HEAD",    "POST",
                                          "PUT",    "DELETE",  "OPTIONS",
                                          "get"};
    struct keel_http_request req = {0};
    const char *p, *end;
    char *copy;
    int sel;

    if (size == 0)
        return 0;
    sel = data[0];
    data++;
    size--;
    switch (sel & 3) {
    case 2:
        check_text(data, size);
        return 0;
    case 3:
        check_bearer(data, size);
        return 0;
    default:
        break;
    }
    copy = malloc(size + 1);
    FUZZ_CHECK(copy != NULL);
    if (size > 0)
        memcpy(copy, data, size);
    copy[size] = '\0';
    p = copy;
    end = copy + size;
    if (((sel >> 2) & 7) == 7) {
        req.method = field(&p, end);
        if (req.method == NULL)
            req.method = "";
    } else {
        req.method = methods[(sel >> 2) & 7];
    }
    req.path = field(&p, end);
    if (req.path == NULL)
        req.path = "";
    req.idempotency_key = field(&p, end);
    req.last_event_id = field(&p, end);
    req.payloads = field(&p, end);
    check_route(&req, sel);
    free(copy);
    return 0;
}
