/* Routing for the HTTP face (http_route.h). */
#include "runtime/http_route.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/dedup.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [s, s+n) into out (room for n bytes). Returns the
 * decoded length, or -1 for a '%' not followed by two hex digits. '+' is
 * a plus: this is a path, not a form. */
static long pct_decode(const char *s, size_t n, uint8_t *out)
{
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = (uint8_t)s[i];
            continue;
        }
        if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
            return -1;
        out[o++] = (uint8_t)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
        i += 2;
    }
    return (long)o;
}

static void route_error(struct keel_http_route *r, int code,
                        const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void route_error(struct keel_http_route *r, int code,
                        const char *fmt, ...)
{
    va_list ap;

    r->err = code;
    va_start(ap, fmt);
    vsnprintf(r->errmsg, sizeof r->errmsg, fmt, ap);
    va_end(ap);
}

/* Splits /v1/actors/{type}/{id} and decodes both segments. */
static void route_actor(struct keel_http_route *r, const char *rest)
{
    const char *slash = strchr(rest, '/');
    size_t tl, il;
    uint8_t tbuf[256];
    long dl;

    tl = (size_t)(slash - rest);
    il = strlen(slash + 1);
    if (tl >= sizeof tbuf) {
        route_error(r, KEEL_ELIMIT, "type name over %d bytes",
                    KEEL_MAX_TYPE_LEN);
        return;
    }
    dl = pct_decode(rest, tl, tbuf);
    if (dl < 0) {
        route_error(r, KEEL_EINVAL, "bad percent-encoding in the type");
        return;
    }
    if (dl > KEEL_MAX_TYPE_LEN) {
        route_error(r, KEEL_ELIMIT, "type name of %ld bytes over %d", dl,
                    KEEL_MAX_TYPE_LEN);
        return;
    }
    if (memchr(tbuf, 0, (size_t)dl) != NULL) {
        route_error(r, KEEL_ENOTYPE, "%s", keel_strerror(KEEL_ENOTYPE));
        return;
    }
    memcpy(r->type, tbuf, (size_t)dl);
    r->type[dl] = '\0';
    r->id = malloc(il ? il : 1);
    if (r->id == NULL) {
        route_error(r, KEEL_ENOMEM, "%s", keel_strerror(KEEL_ENOMEM));
        return;
    }
    dl = pct_decode(slash + 1, il, r->id);
    if (dl < 0) {
        route_error(r, KEEL_EINVAL, "bad percent-encoding in the id");
        return;
    }
    r->idlen = (size_t)dl;
    if (r->idlen > KEEL_MAX_ID_LEN)
        route_error(r, KEEL_ELIMIT, "id of %zu bytes over %d", r->idlen,
                    KEEL_MAX_ID_LEN);
}

/* A POST may carry a request key (docs/protocol.md, "Request keys") as
 * `Idempotency-Key: <32 hex digits>`. */
static void route_key(struct keel_http_route *r, const char *v)
{
    if (v == NULL)
        return;
    if (keel_dedup_key_parse(v, r->rkey) != 0) {
        route_error(r, KEEL_EINVAL, "Idempotency-Key must be %d hex digits",
                    2 * KEEL_REQUEST_KEY_LEN);
        return;
    }
    r->keyed = 1;
}

/* /v1/actors/{type}/{id}/events: the actor as route_actor finds it,
 * Last-Event-ID, the version a resuming browser saw last, and ?payloads=
 * (1: event payloads instead of states, where a handler chose one). */
static void route_events(struct keel_http_route *r, const char *rest,
                         const struct keel_http_request *req)
{
    size_t n = strlen(rest) - (sizeof "/events" - 1);
    char *copy = malloc(n + 1);
    const char *v;

    if (copy == NULL) {
        route_error(r, KEEL_ENOMEM, "%s", keel_strerror(KEEL_ENOMEM));
        return;
    }
    memcpy(copy, rest, n);
    copy[n] = '\0';
    route_actor(r, copy);
    free(copy);
    v = req->last_event_id;
    if (v != NULL && r->err == 0) {
        unsigned long long x;
        errno = 0;
        /* Digits only: strtoull alone would take leading white space,
         * a '+', and a '-' after white space (" -1" is 2^64 - 1). */
        x = strtoull(v, NULL, 10);
        if (errno != 0 || v[0] < '0' || v[0] > '9' ||
            strspn(v, "0123456789") != strlen(v))
            route_error(r, KEEL_EINVAL, "Last-Event-ID must be a version "
                                        "(a decimal number)");
        else
            r->since = x;
    }
    v = req->payloads;
    if (v != NULL && r->err == 0) {
        /* Query values come as sent (the unescape callback leaves the
         * whole target alone): "%31" is a 1. */
        uint8_t d[4];
        size_t vl = strlen(v);
        long dl = vl < sizeof d ? pct_decode(v, vl, d) : -1;

        if (dl == 1 && d[0] == '1')
            r->payloads = 1;
        else if (dl != 1 || d[0] != '0')
            route_error(r, KEEL_EINVAL, "payloads must be 0 or 1");
    }
}

void keel__http_route(struct keel_http_route *r,
                      const struct keel_http_request *req)
{
    static const char actors[] = "/v1/actors/";
    const char *url = req->path, *method = req->method;
    const char *allow = "GET, HEAD";

    /* An absolute-form target (RFC 9112, 3.2.2: "http://host:port/path",
     * which a server must accept) names the same resource as its path. */
    if (strncasecmp(url, "http://", 7) == 0 ||
        strncasecmp(url, "https://", 8) == 0) {
        const char *path = strchr(url + (url[4] == ':' ? 7 : 8), '/');
        url = path != NULL ? path : "/";
    }
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
        r->method = KEEL_HTTP_M_GET;
    else if (strcmp(method, "POST") == 0)
        r->method = KEEL_HTTP_M_POST;
    else
        r->method = KEEL_HTTP_M_OTHER;

    if (strcmp(url, "/healthz") == 0)
        r->route = KEEL_HTTP_R_HEALTHZ;
    else if (strcmp(url, "/readyz") == 0)
        r->route = KEEL_HTTP_R_READYZ;
    else if (strcmp(url, "/metrics") == 0)
        r->route = KEEL_HTTP_R_METRICS;
    else if (strcmp(url, "/v1/cluster") == 0)
        r->route = KEEL_HTTP_R_CLUSTER;
    else if (strncmp(url, actors, sizeof actors - 1) == 0) {
        const char *rest = url + sizeof actors - 1;
        const char *slash = strchr(rest, '/');
        /* A non-empty type and an id without a raw '/'; the id may be
         * empty, as keel allows. */
        const char *ev = slash != NULL ? strchr(slash + 1, '/') : NULL;
        if (slash != NULL && slash != rest && ev == NULL)
            r->route = KEEL_HTTP_R_ACTOR;
        else if (slash != NULL && slash != rest && ev != NULL &&
                 strcmp(ev, "/events") == 0)
            r->route = KEEL_HTTP_R_EVENTS;
    }
    if (r->route == KEEL_HTTP_R_NONE) {
        route_error(r, KEEL_ENOTFOUND, "no such endpoint");
        return;
    }
    if (r->route == KEEL_HTTP_R_ACTOR)
        allow = "GET, HEAD, POST";
    if (r->method == KEEL_HTTP_M_OTHER ||
        (r->method == KEEL_HTTP_M_POST && r->route != KEEL_HTTP_R_ACTOR)) {
        /* A 405 rather than the usual mapping of the code. */
        route_error(r, KEEL_EINVAL, "method %.32s not allowed here; use %s",
                    method, allow);
        r->not_allowed = 1;
        return;
    }
    if (r->route == KEEL_HTTP_R_ACTOR)
        route_actor(r, url + sizeof actors - 1);
    if (r->route == KEEL_HTTP_R_EVENTS)
        route_events(r, url + sizeof actors - 1, req);
    if (r->route == KEEL_HTTP_R_ACTOR && r->method == KEEL_HTTP_M_POST &&
        r->err == 0)
        route_key(r, req->idempotency_key);
}

void keel__http_route_clear(struct keel_http_route *r)
{
    free(r->id);
    memset(r, 0, sizeof *r);
}

unsigned keel__http_status(int code)
{
    switch (code) {
    case 0:
        return 200;
    case KEEL_EBADMSG:
    case KEEL_EMALFORMED:
    case KEEL_ELIMIT:
    case KEEL_EINVAL:
        return 400;
    case KEEL_ENOTYPE:
    case KEEL_ENOTFOUND:
        return 404;
    case KEEL_ETOOBIG:
        return 413;
    case KEEL_EUNAVAIL:  /* not run: */
    case KEEL_ESTOPPING:
    case KEEL_EFENCED:
    case KEEL_EDEADLINE:
    case KEEL_ENOTSENT:
    case KEEL_EOVERLOAD:
    case KEEL_EINDOUBT:  /* may have run: */
    case KEEL_ECONN:     /* the owner a call was forwarded to went silent */
    case KEEL_ETIMEDOUT:
    case KEEL_ECONNLOSS:
    case KEEL_ESESSION:  /* the node's cluster session ended meanwhile */
        return 503;
    case KEEL_EALREADY:
    case KEEL_EEXIST:
        return 409;
    case KEEL_EUNAUTH:
        return 401;
    case KEEL_EDENIED:
    case KEEL_ENOTMEMBER: /* a node: certificate of a node that left */
        return 403;
    case KEEL_ENOSPC:
        return 507;
    default:
        return 500;
    }
}
