/* TLS 1.3 for the wire protocol (docs/security.md, "TLS"): contexts made
 * from PEM files, and a per-connection wrapper over a non-blocking socket
 * for the node's loop (net.c, peer.c) and the blocking client (client.c).
 * OpenSSL stays behind this header: its errors are turned into KEEL_E*
 * codes and text here, once.
 *
 * Identities. A certificate that verified against the CA names its holder
 * in its subject CN:
 *     node:<node id>      a node of the cluster (may forward calls,
 *                         stream units: a peer)
 *     client:<name>       a client
 * Any other CN is an authenticated certificate of no known kind
 * (KEEL_TLS_OTHER). A connection without a verified certificate is
 * KEEL_TLS_ANON. */
#ifndef KEEL_RUNTIME_TLS_H
#define KEEL_RUNTIME_TLS_H

#include <stddef.h>
#include <sys/types.h>

/* A context: this side's certificate and key (optional for a client) and
 * the CA its peers' certificates must chain to. Reference-counted: every
 * connection made from it holds it, so a reload can swap the node's
 * context while older connections keep theirs. */
typedef struct keel_tls_ctx keel_tls_ctx;
/* One connection's TLS state. Owns neither the socket nor the context's
 * last reference. */
typedef struct keel_tls keel_tls;

#define KEEL_TLS_NAME_MAX 128

enum keel_tls_kind {
    KEEL_TLS_ANON = 0,   /* no verified certificate */
    KEEL_TLS_NODE = 1,   /* CN=node:<id> */
    KEEL_TLS_CLIENT = 2, /* CN=client:<name> */
    KEEL_TLS_OTHER = 3   /* verified, another CN (name: the whole CN) */
};

typedef struct keel_tls_identity {
    int kind;                          /* enum keel_tls_kind */
    char name[KEEL_TLS_NAME_MAX + 1];  /* without the "node:"/"client:" */
} keel_tls_identity;

/* Results of the non-blocking calls besides bytes and KEEL_E* codes: wait
 * until the socket is readable (writable), then call again. */
#define KEEL_TLS_WANT_READ (-1001)
#define KEEL_TLS_WANT_WRITE (-1002)

/* Makes a context from PEM files: cert (a chain, leaf first) and key may
 * both be NULL (a client that presents no certificate); ca is required.
 * TLS 1.3 only; peers' certificates are requested and, when presented,
 * must verify against ca. crl, when not NULL, holds certificate
 * revocation lists (PEM, one or more), each signed by a CA of ca: a
 * peer's certificate then also needs a CRL of its issuer that does not
 * list it (docs/security.md, "Revocation"). Errors: KEEL_EINVAL (missing
 * ca, a cert without its key, a file that cannot be read or parsed or
 * holds nothing of its kind, the key does not match the certificate, a
 * CRL is not signed by a CA of ca or has expired, or revokes cert: the
 * configuration is wrong), KEEL_ENOMEM; errbuf says which. */
int keel_tls_ctx_create(const char *cert, const char *key, const char *ca,
                        const char *crl, keel_tls_ctx **out, char *errbuf,
                        size_t errlen);
/* A node's context (its start, its reload, keeld --check-config):
 * keel_tls_ctx_create, and the certificate must name a node, with a
 * single subject CN node:<id>, which clients expect of the port; for a
 * cluster node (node_id not NULL) that id must be node_id, which the
 * other nodes expect of its links (docs/security.md, "Certificate
 * names"). Errors: those of keel_tls_ctx_create, and KEEL_EINVAL for a
 * certificate naming another node, a client or nothing known, errbuf
 * naming the certificate's CN (and node_id). */
int keel_tls_node_ctx_create(const char *cert, const char *key,
                             const char *ca, const char *crl,
                             const char *node_id, keel_tls_ctx **out,
                             char *errbuf, size_t errlen);
void keel_tls_ctx_ref(keel_tls_ctx *ctx);
void keel_tls_ctx_unref(keel_tls_ctx *ctx);

/* A connection over fd (non-blocking for the loop; the client polls),
 * as the accepting side, or as the connecting side. The server's
 * certificate must name a node (CN=node:<id>); expect_node, when not
 * NULL, is the id it must name. Errors: KEEL_ENOMEM. */
int keel_tls_accept(keel_tls_ctx *ctx, int fd, keel_tls **out);
int keel_tls_connect(keel_tls_ctx *ctx, int fd, const char *expect_node,
                     keel_tls **out);
/* On an accepted connection, before its handshake: a client certificate
 * that names a node (CN=node:<id>) fails the handshake, which the node on
 * the other side then reports as refused before it has sent anything.
 * For connections that will not be served: a link between nodes must
 * learn that nothing it sends will run before it sends. */
void keel_tls_refuse_nodes(keel_tls *t);
/* Frees the state; the socket is the caller's. No close_notify: see
 * keel_tls_shutdown. */
void keel_tls_free(keel_tls *t);
/* Sends close_notify if the socket takes it now; never waits. */
void keel_tls_shutdown(keel_tls *t);

/* Drives the handshake. Returns 0 once it is done, KEEL_TLS_WANT_READ or
 * KEEL_TLS_WANT_WRITE, or KEEL_ECONN with the reason in errbuf (the
 * peer's certificate did not verify, is not the expected node's, a
 * plaintext peer, a reset). On the connecting side "done" also means the
 * server accepted us: in TLS 1.3 a server refuses a client's certificate
 * only after the client's side of the handshake has finished, so the
 * connecting side waits for the server's first session ticket (sent once
 * the server is satisfied) before it reports 0; nothing of the caller's
 * has been sent before then. */
int keel_tls_handshake(keel_tls *t, char *errbuf, size_t errlen);

/* 1 once the TLS handshake proper has completed (certificates checked)
 * on a connecting side that still waits for the server's ticket: a
 * timeout then means the server said nothing more, not that the
 * handshake stalled. */
int keel_tls_awaiting_ticket(const keel_tls *t);

/* Reads decrypted bytes: > 0, 0 when the peer closed (close_notify or
 * EOF), KEEL_TLS_WANT_READ / KEEL_TLS_WANT_WRITE, or KEEL_ECONN. */
ssize_t keel_tls_read(keel_tls *t, void *buf, size_t len);
/* Writes: bytes taken (> 0, maybe fewer than len), KEEL_TLS_WANT_WRITE /
 * KEEL_TLS_WANT_READ, or KEEL_ECONN. After a WANT, call again with the
 * same bytes at the start of buf (buf may have moved, len may be
 * larger). */
ssize_t keel_tls_write(keel_tls *t, const void *buf, size_t len);
/* 1 when bytes wait inside the TLS state that a read may return without
 * the socket being readable: read ahead, and not found short of a whole
 * record by the last read (which then wanted the socket). */
int keel_tls_pending(const keel_tls *t);
/* 1 when the last read from the socket found it empty and nothing waits
 * inside the TLS state: another read would only find nothing, so a
 * caller woken by a level-triggered watcher may wait for the next wakeup
 * instead. 0 when more may be there. */
int keel_tls_drained(const keel_tls *t);

/* The verified identity of the other side (after the handshake). */
void keel_tls_peer_identity(const keel_tls *t, keel_tls_identity *out);
/* 1 when a CRL of ctx lists the certificate t's other side presented:
 * for connections made before ctx was loaded. 0 otherwise (no
 * certificate, no CRL of its issuer in ctx). */
int keel_tls_revoked(const keel_tls_ctx *ctx, const keel_tls *t);

/* For the rest of the node (net.c): the identity a wire connection's
 * certificate proved; NULL for a connection without TLS. */
struct keel_conn;
const keel_tls_identity *keel__conn_identity(const struct keel_conn *c);

#endif
