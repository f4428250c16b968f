/* Who may ask a node for what: bearer tokens with roles (keeld
 * --auth-tokens FILE), the identity of each wire connection, the role
 * rules shared by the wire protocol and the HTTP face, and the check that
 * a node exposed beyond loopback, or in a cluster, has credentials.
 * docs/security.md is the reference.
 *
 * Identities. A connection starts anonymous. It becomes
 *  - a client with a role (client or admin, and for a client token maybe
 *    a list of actor types) by presenting a token (INFO "auth" TOKEN), or
 *    from its TLS certificate (keel__auth_conn_from_cert);
 *  - a node, from a certificate CN=node:ID or, without TLS, by saying so
 *    (INFO "peer" NUL ID), which nothing proves. A node may do nothing an
 *    admin-only request needs (drain, forget), only what forwarding and
 *    handoffs need, and in cluster mode only while ID is a member of the
 *    cluster in this node's latest view (keel__auth_set_members): a node
 *    that leaves, or is forgotten, loses those rights on every connection
 *    it still has.
 *
 * Failed token attempts are limited: a connection is closed after a few
 * (keel__auth_conn_spent), and an address from which too many failed
 * lately has its attempts refused without a look at the token, on the
 * wire and over HTTP alike.
 *
 * Threads. The token table, the member list and the failure counts by
 * address are read by the loop thread (wire connections) and by the HTTP
 * thread (each request's bearer token); the loop thread replaces the
 * first two (keel__auth_reload, keel__auth_set_members). Mutexes guard
 * them. A keel_auth_conn belongs to its connection's thread. */
#ifndef KEEL_RUNTIME_AUTH_H
#define KEEL_RUNTIME_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "keel.h"
#include "runtime/proto.h"

typedef struct keel_auth keel_auth;

#define KEEL_AUTH_TOKEN_MIN 16  /* bytes of a token, at least */
#define KEEL_AUTH_TOKEN_MAX 256 /* and at most */
#define KEEL_AUTH_NAME_MAX 64   /* bytes of an identity's name (a node's:
                                 * a member's name, KEEL_NAME_MAX) */

/* Defaults of the limits on failed token attempts (keel_node_options). */
#define KEEL_AUTH_CONN_FAILS 3   /* on one connection, then it is closed */
#define KEEL_AUTH_ADDR_FAILS 10  /* from one address in a window... */
#define KEEL_AUTH_FAIL_WINDOW_S 10 /* ...of this many seconds */

enum keel_auth_kind {
    KEEL_AUTH_ANON = 0,   /* nothing presented */
    KEEL_AUTH_CLIENT = 1, /* a token or a client certificate */
    KEEL_AUTH_NODE = 2    /* another node of the cluster */
};

enum keel_auth_role {
    KEEL_ROLE_NONE = 0,
    KEEL_ROLE_CLIENT = 1, /* calls and casts (maybe of listed types only),
                           * read-only queries */
    KEEL_ROLE_ADMIN = 2   /* all a client may, and requests that change the
                           * cluster (drain, forget) */
};

enum keel_auth_source {
    KEEL_AUTH_SRC_NONE = 0,
    KEEL_AUTH_SRC_TOKEN = 1, /* a token of the table; role and types are
                              * looked up again after a reload */
    KEEL_AUTH_SRC_CERT = 2,  /* a verified TLS certificate */
    KEEL_AUTH_SRC_CLAIM = 3  /* INFO "peer" NUL ID, unproven */
};

/* What a request needs. */
enum keel_auth_op {
    KEEL_AUTH_OP_OPEN = 0, /* PING, INFO auth, INFO peer, /healthz, /readyz */
    KEEL_AUTH_OP_READ,     /* STAT, nodes, shards, where, capabilities,
                            * /metrics, /v1/cluster: any identity */
    KEEL_AUTH_OP_CALL,     /* CALL, CAST, actor endpoints: a client whose
                            * token allows the type, or a node */
    KEEL_AUTH_OP_ADMIN,    /* drain, forget: an admin */
    KEEL_AUTH_OP_NODE      /* XFER: a node */
};

/* A connection's identity; all zero is anonymous. Kept in the connection
 * (no allocation), so that closing it needs no call here. */
typedef struct keel_auth_conn {
    uint8_t kind;   /* enum keel_auth_kind */
    uint8_t role;   /* enum keel_auth_role, for clients */
    uint8_t source; /* enum keel_auth_source */
    uint8_t fails;  /* failed token attempts on the connection; outlives
                     * every change of identity */
    uint16_t token_len;
    uint8_t member;      /* a node: its name was a member in the member */
    uint64_t member_gen; /* list of this generation (0: not looked up) */
    uint32_t idx;   /* its entry in the table of generation gen */
    uint64_t gen;
    /* A node's: its node id. A client's: what logs call it. */
    char name[KEEL_AUTH_NAME_MAX + 1];
    /* The token presented, kept to find it again in a reloaded table. */
    uint8_t token[KEEL_AUTH_TOKEN_MAX];
} keel_auth_conn;

/* Reads the token file at path (NULL: no tokens; requests are then
 * checked only against certificate identities, when there are any) and
 * creates the checker for node n, whose options (n->opts) give the
 * limits on failed attempts and whether it is a cluster node. Errors:
 * KEEL_EINVAL when the file cannot be opened, is unsafe (readable or
 * writable by others, not a regular file) or has a malformed line,
 * KEEL_EIO when a read of it fails, KEEL_ENOMEM; the message in errbuf
 * names the file and the line.
 * *out is untouched on error. */
int keel__auth_create(keel_node *n, const char *path, keel_auth **out,
                      char *errbuf, size_t errlen);
void keel__auth_destroy(keel_auth *a);

/* Nonzero when requests are checked (a token file is loaded). Without it
 * every request is allowed, as before tokens existed. */
int keel__auth_enabled(const keel_auth *a);

/* Reads the token file again (SIGHUP, keel_node_reload). A file that is
 * unsafe or malformed is logged and the table loaded before is kept.
 * Connections authenticated with a token that the new table no longer
 * holds are anonymous from their next request; a token whose role or
 * types changed takes the new ones. Returns 0 or the error logged. Loop
 * thread. */
int keel__auth_reload(keel_auth *a);
/* Whether the token tok/tlen is in the table now (an HTTP event stream
 * opened with it, after a reload: runtime/http.c). Any thread. */
int keel__auth_token_held(keel_auth *a, const uint8_t *tok, size_t tlen);
/* After a reload: whether connection ac was authenticated with a token
 * the table no longer holds (it is anonymous from now on). Loop
 * thread. */
int keel__auth_token_withdrawn(keel_auth *a, keel_auth_conn *ac);

/* May connection ac make a request that needs op (for KEEL_AUTH_OP_CALL,
 * of actor type type/tlen)? 0, or KEEL_EUNAUTH (no identity: it must
 * authenticate first) or KEEL_EDENIED (its identity may not; a node's,
 * also when that node is not a member: keel__auth_peer), with what was
 * needed in errbuf. Refusals are counted in the node's statistics.
 * Loop thread. */
int keel__auth_check(keel_auth *a, keel_auth_conn *ac, int op,
                     const void *type, size_t tlen, char *errbuf,
                     size_t errlen);

/* keel__auth_check for a whole wire frame: finds what it needs from its
 * kind (and a call's type, an INFO query's name). A frame whose body
 * cannot be read is let through: the handler refuses it as malformed. */
int keel__auth_frame(keel_auth *a, keel_auth_conn *ac, const keel_frame *f,
                     char *errbuf, size_t errlen);

/* Nonzero when f is the INFO query "auth"; *tok and *tlen are then the
 * token it carries (the rest of the body after "auth\0"). */
int keel__auth_is_login(const keel_frame *f, const uint8_t **tok,
                        size_t *tlen);

/* Authenticates ac with a token. fd is the connection's socket: its
 * peer's address is what the limit by address counts (-1, or a socket
 * without an IP address: no such limit). On success the connection
 * takes the token's role and reply holds "auth ROLE[ types A,B]\n"
 * (*rlen bytes). A node without tokens answers "auth none\n" and changes
 * nothing. Errors: KEEL_EUNAUTH, with a message in errbuf, for an unknown
 * token, or any token at all while the address has failed too often
 * lately (it is not looked at); the connection has no token identity
 * afterwards: one it had from a token is dropped (anonymous), one from a
 * certificate or a node's claim is kept. Either
 * counts as a failure of the connection: once keel__auth_conn_spent()
 * says so, the caller closes it (counted here). Loop thread. */
int keel__auth_login(keel_auth *a, keel_auth_conn *ac, int fd,
                     const uint8_t *tok, size_t tlen, char *reply,
                     size_t cap, size_t *rlen, char *errbuf, size_t errlen);

/* Nonzero when connection ac has failed as many token attempts as a
 * connection may: it must be closed (after the refusal is sent). */
int keel__auth_conn_spent(const keel_auth *a, const keel_auth_conn *ac);

/* INFO "peer" on a connection without TLS: the connection says it comes
 * from another node. body/len is the whole INFO body: "peer", then NUL
 * and the node's id. The identity becomes that node (unproven), a peer
 * while the node is a member (keel__auth_peer). KEEL_EDENIED, with the
 * reason in errbuf and ac unchanged, when the connection holds a client
 * certificate, or when a cluster node's claim names no node (or a name
 * that cannot be one); a standalone node takes a claim without a name.
 * Loop thread. */
int keel__auth_peer_claim(keel_auth *a, keel_auth_conn *ac,
                          const uint8_t *body, size_t len, char *errbuf,
                          size_t errlen);

/* Whether connection ac is a peer now: its identity is a node's (from a
 * certificate or a claim) and, on a cluster node, that node is a member
 * of the cluster in this node's latest view. A node that has just joined
 * may be missing from that view for a moment: the answer follows the
 * view, never a past one. Before this node has any view (it has not
 * joined yet, e.g. it is restarting), every node identity is taken, as
 * the other members hand it calls for units it is about to own; from
 * its first view on they are judged. Cheap while the view does not
 * change. Loop thread. */
int keel__auth_peer(keel_auth *a, keel_auth_conn *ac);

/* The membership hook: names (n of them) are the cluster's members in
 * this node's view from now on; node identities are judged against them
 * (keel__auth_peer, keel__auth_http). Copied. Until the first call a
 * cluster node judges no node identity (keel__auth_peer). Loop thread. */
void keel__auth_set_members(keel_auth *a, const char *const *names,
                            size_t n);

/* The hook for TLS: sets ac's identity from a verified certificate.
 * kind is KEEL_AUTH_NODE or KEEL_AUTH_CLIENT; a client's role is
 * KEEL_ROLE_CLIENT or KEEL_ROLE_ADMIN (a certificate allows every actor
 * type). name is a node's id, a client's name for logs: 1 to
 * KEEL_AUTH_NAME_MAX bytes. Returns 0 or KEEL_EINVAL (ac unchanged). */
int keel__auth_conn_set(keel_auth_conn *ac, int kind, int role,
                        const char *name);

/* keel__auth_conn_set from a certificate's subject common name:
 * "node:NAME" is a node, "client:NAME" a client with role client,
 * "admin:NAME" a client with role admin. Any other CN: KEEL_EDENIED and
 * ac stays as it was. */
int keel__auth_conn_from_cert(keel_auth_conn *ac, const char *cn);

/* The token in an Authorization header value: "Bearer" in any case, a
 * space, any further spaces, the token, and trailing spaces or tabs,
 * which are not part of it. Returns a pointer into authorization and the
 * token's length in *len (0 for none), or NULL when authorization is
 * NULL or not of that scheme. Pure. */
const char *keel__auth_bearer(const char *authorization, size_t *len);

/* The HTTP face: checks a request that needs op (of type for
 * KEEL_AUTH_OP_CALL). cert, when not NULL, is the identity its HTTPS
 * connection's verified client certificate gave (keel__auth_conn_from_cert):
 * the request is then decided by that identity alone (a node's only
 * while it is a member). Otherwise by the Authorization header value
 * ("Bearer TOKEN"; NULL when absent); from, when not NULL, is the
 * client's address, whose failed tokens are limited as on the wire: once
 * it has failed too often lately its tokens are refused unlooked-at. 0,
 * KEEL_EUNAUTH (missing or unknown token, or refused unlooked-at: 401)
 * or KEEL_EDENIED (403), with a message in errbuf; refusals are counted.
 * Any thread. */
int keel__auth_http(keel_auth *a, const keel_auth_conn *cert,
                    const char *authorization, const struct sockaddr *from,
                    int op, const void *type, size_t tlen, char *errbuf,
                    size_t errlen);

/* Reads and checks the token file at path as keel__auth_create does at
 * start (and a reload), keeping nothing: keeld --check-config. 0, or
 * KEEL_EINVAL (the file cannot be opened, is too open, a line is
 * malformed, ...), KEEL_EIO (a read failed) or KEEL_ENOMEM, with the
 * message the start gives in errbuf. */
int keel__auth_tokens_check(const char *path, char *errbuf, size_t errlen);

/* Secure by default: a node that listens beyond loopback (wire or HTTP)
 * or is a cluster node (zk_hosts) needs credentials (auth_tokens, or
 * tls_cert). Returns 0 when it has them or needs none, with *insecure
 * set when it runs without them because opts->insecure says so; else
 * KEEL_EINVAL with the reason in errbuf. */
int keel__auth_exposure_check(const keel_node_options *opts, int *insecure,
                              char *errbuf, size_t errlen);

/* 1 when every address HOST (of "HOST:PORT", "[V6]:PORT") resolves to
 * is a loopback address (127.0.0.0/8, ::1); 0 when one is not, or HOST is
 * empty (every address); -1 when it cannot be told (no port separator,
 * HOST does not resolve): the listener then refuses the address itself. */
int keel__auth_addr_is_loopback(const char *hostport);

#endif
