/* Routing for the HTTP face: from a request's method, raw path and the
 * few header and argument values that routing reads, to what the request
 * asks for (runtime/http.c answers it; docs/http.md lists the paths).
 *
 * Pure: no libmicrohttpd, no node, no clock; every input is a C string
 * the caller keeps alive for the call. So the fuzz target
 * tests/fuzz/fuzz_http.c can route any request as the face does. */
#ifndef KEEL_RUNTIME_HTTP_ROUTE_H
#define KEEL_RUNTIME_HTTP_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "keel.h"

enum keel_http_route_kind {
    KEEL_HTTP_R_NONE = 0, /* unknown path */
    KEEL_HTTP_R_ACTOR,    /* /v1/actors/{type}/{id} */
    KEEL_HTTP_R_EVENTS,   /* /v1/actors/{type}/{id}/events: Server-Sent
                           * Events */
    KEEL_HTTP_R_HEALTHZ,
    KEEL_HTTP_R_READYZ,
    KEEL_HTTP_R_METRICS,
    KEEL_HTTP_R_CLUSTER
};

/* HEAD is a GET whose answer has no body (libmicrohttpd leaves it out). */
enum keel_http_method {
    KEEL_HTTP_M_GET = 0,
    KEEL_HTTP_M_POST,
    KEEL_HTTP_M_OTHER
};

/* What routing reads of a request. method and path are required; path
 * is the request target as sent (origin form "/v1/..." or absolute form
 * "http://host/v1/..."), not unescaped, without the query string. The
 * others are NULL when the request has none: the Idempotency-Key and
 * Last-Event-ID header values and the raw value of the ?payloads=
 * argument. */
struct keel_http_request {
    const char *method;
    const char *path;
    const char *idempotency_key;
    const char *last_event_id;
    const char *payloads;
};

/* The outcome. On an error, err is a KEEL_E* code and errmsg its text
 * (never empty); the fields after it hold what was decoded before the
 * error was found, and route and method stay set. */
struct keel_http_route {
    int route;       /* enum keel_http_route_kind */
    int method;      /* enum keel_http_method */
    int err;         /* 0 or KEEL_E*: answered once the body is in */
    char errmsg[320];
    int not_allowed; /* wrong method for the path: a 405 (err is
                      * KEEL_EINVAL) */
    /* R_ACTOR, R_EVENTS: the percent-decoded type (1 to
     * KEEL_MAX_TYPE_LEN bytes, no NUL) and id (up to KEEL_MAX_ID_LEN
     * bytes, any bytes; malloc'd, freed by keel__http_route_clear). */
    char type[KEEL_MAX_TYPE_LEN + 1];
    uint8_t *id;
    size_t idlen;
    /* R_ACTOR with POST: the Idempotency-Key, when given. */
    int keyed;
    uint8_t rkey[KEEL_REQUEST_KEY_LEN];
    /* R_EVENTS: the version in Last-Event-ID (0: none), and whether the
     * stream takes event payloads (?payloads=1). */
    uint64_t since;
    int payloads;
};

/* Routes req into rt, which must be zeroed (or cleared) before. Every
 * problem is reported in rt->err; the only error that is not the
 * client's is KEEL_ENOMEM. */
void keel__http_route(struct keel_http_route *rt,
                      const struct keel_http_request *req);

/* Frees what rt holds and zeroes it. */
void keel__http_route_clear(struct keel_http_route *rt);

/* The HTTP status answering a KEEL_E* code (0: 200). A request that did
 * not run, or whose outcome is unknown, gets 503 (with Retry-After), never
 * a 500, which a client may read as "failed, did nothing": sent again with
 * its Idempotency-Key, it is answered with its outcome. docs/http.md,
 * "Errors". */
unsigned keel__http_status(int code);

#endif
