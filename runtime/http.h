/* The HTTP/JSON face of a node (keeld --http HOST:PORT), served by
 * libmicrohttpd on a thread of its own. docs/http.md is the reference.
 *
 * Threads: libmicrohttpd's polling thread parses requests and builds
 * responses; it never touches the node's internals. Work that needs the
 * node (calls, store reads, readiness) is handed to the loop thread with
 * keel_node_post(), while the HTTP connection is suspended; the loop
 * thread records the outcome and resumes the connection. The loop thread
 * never waits for libmicrohttpd.
 *
 * Lifecycle, driven by node.c: create (binds the socket, so address errors
 * surface from keel_node_create) -> start (the daemon thread, from
 * keel_node_run before the loop runs) -> stop (after the loop has ended
 * and no more posts are taken: stop accepting, let answers go out for a
 * bounded time, join the thread) -> destroy. */
#ifndef KEEL_RUNTIME_HTTP_H
#define KEEL_RUNTIME_HTTP_H

#include <stddef.h>

#include "keel.h"

typedef struct keel_http keel_http;

/* Binds the listen socket for addr ("HOST:PORT"; port 0 picks one) and
 * sets n->http. Nothing is served until keel__http_start. Errors:
 * KEEL_EADDR (with a message in errbuf), KEEL_ENOMEM; n->http stays NULL
 * on error. */
int keel__http_create(keel_node *n, const char *addr, char *errbuf,
                      size_t errlen);

/* Starts the daemon thread, serving HTTPS when the node has TLS files
 * (n->tls_cert, tls_key, tls_ca). Called once, before the loop runs.
 * Errors: KEEL_EIO (a TLS file cannot be read or used), KEEL_ENOMEM
 * (libmicrohttpd could not start); the reason is logged. */
int keel__http_start(keel_node *n);

/* SIGHUP (keel_node_reload), after the wire's TLS files reloaded: an
 * HTTPS face starts a new daemon with the files read again on the same
 * listening socket and quiesces the old one, which finishes its open
 * connections and is then stopped (by the watchdog thread). If the files
 * cannot be used the failure is logged and the old daemon serves on.
 * Returns 0 (also for a plain HTTP face, or none) or KEEL_EIO /
 * KEEL_ENOMEM. Loop thread, while the face runs. */
int keel__http_tls_reload(keel_node *n);

/* After the token file was read again (keel_node_reload): event streams
 * opened with a bearer token the file no longer holds end at once, with
 * "event: end" and EUNAUTH, as wire subscriptions under such a token are
 * closed (keel__net_tokens_reloaded). Loop thread. */
void keel__http_tokens_reloaded(keel_node *n);

/* Stops serving: no new connections; requests that arrive now get 503;
 * answers already queued go out (for at most a couple of seconds); then
 * the daemon thread is joined. Call only once the loop has ended and
 * keel_node_post() refuses new work. No-op if not started. */
void keel__http_stop(keel_node *n);

/* Stops if needed, closes the socket and frees n->http (may be NULL). */
void keel__http_destroy(keel_node *n);

#endif
