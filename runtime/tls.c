/* TLS contexts and connections over OpenSSL (see tls.h). Every OpenSSL
 * call is preceded by an empty error queue (ERR_clear_error, or
 * errors_clear on the paths taken for every record) so that an error
 * found after it is its own; errors become KEEL_E* codes and a line of
 * text in tls_error. */
#include "runtime/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "keel.h"

struct keel_tls_ctx {
    SSL_CTX *ssl_ctx;
    STACK_OF(X509_CRL) *crls; /* also in the SSL_CTX's store; NULL: none */
    int refs; /* the owner's and each connection's; loop thread (or the
               * client's thread) only */
};

struct keel_tls {
    SSL *ssl;
    keel_tls_ctx *ctx;
    int client;        /* the connecting side */
    int hs_done;       /* SSL_do_handshake finished */
    int ticket;        /* connecting side: the server sent a ticket */
    int ident_set;
    /* The last read from the socket returned less than it asked for (or
     * nothing, for now): the socket was empty then. */
    int sock_short;
    /* The last read wanted more from the socket: what the TLS state holds
     * (read ahead) is not a whole record yet. */
    int starved;
    /* The first byte the other side sent, once it came: a TLS peer's is
     * a record's content type. */
    int got_first;
    unsigned char first;
    keel_tls_identity ident;
    char expect[KEEL_TLS_NAME_MAX + 1]; /* node id the server must be */
};

static int tls_ex_index = -1;

/* Empties the thread's error queue. ERR_clear_error costs about 130 ns
 * with OpenSSL 3.0, a look at the queue a fifth of that, and the queue
 * is empty nearly always: this is for the calls made for every record. */
static void errors_clear(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

/* The OpenSSL error queue as one line ("what: reason; reason"), emptied. */
static void tls_error(char *buf, size_t len, const char *what)
{
    size_t off;
    unsigned long e;
    int n;

    if (buf == NULL || len == 0) {
        ERR_clear_error();
        return;
    }
    n = snprintf(buf, len, "%s", what);
    off = n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
    while ((e = ERR_get_error()) != 0) {
        char r[256];
        ERR_error_string_n(e, r, sizeof r);
        if (off + 3 < len) {
            n = snprintf(buf + off, len - off, "%s%s",
                         off == strlen(what) ? ": " : "; ", r);
            if (n > 0)
                off += (size_t)n < len - off ? (size_t)n : len - off - 1;
        }
    }
}

/* Watches the reads OpenSSL makes from the socket (keel_tls_drained).
 * With read-ahead each one asks for as much as the record buffer holds,
 * so a short one found the socket empty. */
static long sock_read_cb(BIO *b, int oper, const char *argp, size_t len,
                         int argi, long argl, int ret, size_t *processed)
{
    keel_tls *t;

    (void)argi;
    (void)argl;
    if (oper != (BIO_CB_READ | BIO_CB_RETURN))
        return ret; /* before a read, or a write: the same BIO */
    t = (keel_tls *)BIO_get_callback_arg(b);
    if (t == NULL)
        return ret;
    t->sock_short = ret > 0 ? processed != NULL && *processed < len
                            : BIO_should_retry(b);
    if (!t->got_first && ret > 0 && processed != NULL && *processed > 0) {
        t->got_first = 1;
        t->first = (unsigned char)argp[0];
    }
    return ret;
}

/* The connecting side learns that the server is satisfied with it from
 * the server's first session ticket (tls.h). The session is not kept. */
/* A ticket a client offers back (to resume) is not used: a full
 * handshake follows, with a new ticket (the acceptance signal). */
static SSL_TICKET_RETURN ignore_ticket_cb(SSL *ssl, SSL_SESSION *ss,
                                          const unsigned char *keyname,
                                          size_t keyname_len,
                                          SSL_TICKET_STATUS status, void *arg)
{
    (void)ssl;
    (void)ss;
    (void)keyname;
    (void)keyname_len;
    (void)status;
    (void)arg;
    return SSL_TICKET_RETURN_IGNORE_RENEW;
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    keel_tls *t = SSL_get_ex_data(ssl, tls_ex_index);

    (void)sess;
    if (t != NULL)
        t->ticket = 1;
    return 0; /* not taken: OpenSSL frees it */
}

/* The certificates of PEM file path, or NULL with errbuf set. */
static STACK_OF(X509) *read_certs(const char *path, char *errbuf,
                                  size_t errlen)
{
    STACK_OF(X509) *certs = sk_X509_new_null();
    BIO *b = BIO_new_file(path, "r");
    X509 *x;

    if (certs == NULL || b == NULL) {
        tls_error(errbuf, errlen, path);
        sk_X509_free(certs);
        BIO_free(b);
        return NULL;
    }
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (sk_X509_push(certs, x) <= 0) {
            X509_free(x);
            break;
        }
    }
    ERR_clear_error(); /* the end of the file reads as an error */
    BIO_free(b);
    return certs;
}

/* name as one line into buf. */
static const char *name_line(const X509_NAME *name, char *buf, int len)
{
    if (X509_NAME_oneline(name, buf, len) == NULL)
        snprintf(buf, (size_t)len, "?");
    return buf;
}

/* Loads the CRLs of file crl into sc's store and c->crls, and has the
 * store check every peer certificate against its issuer's CRL
 * (X509_V_FLAG_CRL_CHECK: the leaf; intermediates are trusted as the CA
 * file says). Each CRL must be signed by a certificate of the CA file,
 * be current (a CRL past its next update makes OpenSSL refuse every
 * certificate of its issuer: better to say so now), and not revoke this
 * side's own certificate. Returns 0, or -1 with errbuf set. */
static int load_crls(keel_tls_ctx *c, const char *crl, const char *ca,
                     char *errbuf, size_t errlen)
{
    X509_STORE *st = SSL_CTX_get_cert_store(c->ssl_ctx);
    X509 *own = SSL_CTX_get0_certificate(c->ssl_ctx);
    STACK_OF(X509) *cas;
    X509_CRL *x;
    BIO *b;
    char name[256];
    int i, rc = -1;

    cas = read_certs(ca, errbuf, errlen);
    if (cas == NULL)
        return -1;
    c->crls = sk_X509_CRL_new_null();
    b = BIO_new_file(crl, "r");
    if (c->crls == NULL || b == NULL) {
        char what[600];
        snprintf(what, sizeof what, "CRL file %s", crl);
        tls_error(errbuf, errlen, what);
        goto out;
    }
    while ((x = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)) != NULL) {
        const ASN1_TIME *next = X509_CRL_get0_nextUpdate(x);
        X509_REVOKED *rev;
        X509 *issuer = NULL;

        for (i = 0; i < sk_X509_num(cas) && issuer == NULL; i++) {
            X509 *cand = sk_X509_value(cas, i);
            if (X509_NAME_cmp(X509_get_subject_name(cand),
                              X509_CRL_get_issuer(x)) == 0 &&
                X509_CRL_verify(x, X509_get0_pubkey(cand)) == 1)
                issuer = cand;
        }
        ERR_clear_error();
        if (issuer == NULL) {
            snprintf(errbuf, errlen,
                     "CRL file %s: the CRL of %s is not signed by a CA of "
                     "%s",
                     crl, name_line(X509_CRL_get_issuer(x), name,
                                    sizeof name),
                     ca);
            X509_CRL_free(x);
            goto out;
        }
        if (next != NULL && X509_cmp_current_time(next) <= 0) {
            snprintf(errbuf, errlen,
                     "CRL file %s: the CRL of %s has expired (its next "
                     "update was due): issue a new one",
                     crl, name_line(X509_CRL_get_issuer(x), name,
                                    sizeof name));
            X509_CRL_free(x);
            goto out;
        }
        if (own != NULL &&
            X509_NAME_cmp(X509_get_issuer_name(own),
                          X509_CRL_get_issuer(x)) == 0 &&
            X509_CRL_get0_by_cert(x, &rev, own) == 1) {
            snprintf(errbuf, errlen,
                     "CRL file %s revokes this side's own certificate (%s)",
                     crl, name_line(X509_get_subject_name(own), name,
                                    sizeof name));
            X509_CRL_free(x);
            goto out;
        }
        if (X509_STORE_add_crl(st, x) != 1 ||
            sk_X509_CRL_push(c->crls, x) <= 0) {
            X509_CRL_free(x);
            tls_error(errbuf, errlen, "CRL");
            goto out;
        }
    }
    /* The end of the file reads as "no start line"; anything else is a
     * CRL that does not parse. */
    if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE) {
        char what[600];
        snprintf(what, sizeof what, "CRL file %s", crl);
        tls_error(errbuf, errlen, what);
        goto out;
    }
    ERR_clear_error();
    if (sk_X509_CRL_num(c->crls) == 0) {
        snprintf(errbuf, errlen, "CRL file %s: no CRL in it", crl);
        goto out;
    }
    X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK);
    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(c->ssl_ctx),
                                X509_V_FLAG_CRL_CHECK);
    rc = 0;
out:
    BIO_free(b);
    sk_X509_pop_free(cas, X509_free);
    return rc;
}

int keel_tls_ctx_create(const char *cert, const char *key, const char *ca,
                        const char *crl, keel_tls_ctx **out, char *errbuf,
                        size_t errlen)
{
    keel_tls_ctx *c;
    SSL_CTX *sc;
    STACK_OF(X509_NAME) *names;
    char what[600];

    if (errbuf != NULL && errlen > 0)
        errbuf[0] = '\0';
    if (ca == NULL || (cert == NULL) != (key == NULL)) {
        snprintf(errbuf, errlen, "%s",
                 ca == NULL ? "TLS needs the CA file"
                            : "a TLS certificate needs its key, and a key "
                              "its certificate");
        return KEEL_EINVAL;
    }
    if (tls_ex_index < 0) {
        /* OpenSSL initialises itself on first use (1.1.0 and later). */
        tls_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        if (tls_ex_index < 0)
            return KEEL_ENOMEM;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL)
        return KEEL_ENOMEM;
    ERR_clear_error();
    sc = SSL_CTX_new(TLS_method());
    if (sc == NULL) {
        tls_error(errbuf, errlen, "cannot make a TLS context");
        free(c);
        return KEEL_ENOMEM;
    }
    if (SSL_CTX_set_min_proto_version(sc, TLS1_3_VERSION) != 1)
        goto err_openssl;
    SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
                                | SSL_OP_IGNORE_UNEXPECTED_EOF
#endif
    );
    /* Buffers may move and grow between a write that wants to wait and
     * its retry (net.c's write buffer is realloc'd). */
    SSL_CTX_set_mode(sc, SSL_MODE_ENABLE_PARTIAL_WRITE |
                             SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Read as much as the record buffer takes in one read(2), not a
     * record's header and then its body in two: a burst of pipelined
     * frames costs one system call, as in plaintext. The bytes read
     * ahead wait inside the TLS state (keel_tls_pending). */
    SSL_CTX_set_read_ahead(sc, 1);
    if (cert != NULL) {
        snprintf(what, sizeof what, "certificate %s", cert);
        if (SSL_CTX_use_certificate_chain_file(sc, cert) != 1)
            goto err_file;
        snprintf(what, sizeof what, "key %s", key);
        if (SSL_CTX_use_PrivateKey_file(sc, key, SSL_FILETYPE_PEM) != 1) {
            /* OpenSSL 3 finds a key of another certificate here. */
            unsigned long e = ERR_peek_last_error();
            if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
                ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
                snprintf(what, sizeof what,
                         "key %s does not match certificate %s", key, cert);
            goto err_file;
        }
        snprintf(what, sizeof what, "key %s does not match certificate %s",
                 key, cert);
        if (SSL_CTX_check_private_key(sc) != 1)
            goto err_file;
    }
    snprintf(what, sizeof what, "CA file %s", ca);
    if (SSL_CTX_load_verify_locations(sc, ca, NULL) != 1)
        goto err_file;
    /* The CA's name goes in the certificate request, so a client with
     * several certificates can pick the right one. */
    names = SSL_load_client_CA_file(ca);
    if (names == NULL)
        goto err_file;
    SSL_CTX_set_client_CA_list(sc, names);
    /* Servers ask for a certificate and check it when one comes; one
     * without is let in (a client that authenticates otherwise).
     * Clients require the server's to verify. */
    SSL_CTX_set_verify(sc, SSL_VERIFY_PEER, NULL);
    /* One ticket, the acceptance signal of tls.h; no resumption: a ticket
     * offered back gets a full handshake (every connection is verified
     * against the CA and CRL of now), not an internal error. */
    SSL_CTX_set_num_tickets(sc, 1);
    SSL_CTX_set_session_ticket_cb(sc, NULL, ignore_ticket_cb, NULL);
    SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_BOTH |
                                           SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(sc, new_session_cb);
    c->ssl_ctx = sc;
    c->refs = 1;
    if (crl != NULL && load_crls(c, crl, ca, errbuf, errlen) != 0) {
        keel_tls_ctx_unref(c);
        return KEEL_EINVAL;
    }
    *out = c;
    return 0;

err_file:
    /* A file that cannot be read or used is a configuration error, not
     * a failure of storage. */
    tls_error(errbuf, errlen, what);
    SSL_CTX_free(sc);
    free(c);
    return KEEL_EINVAL;
err_openssl:
    tls_error(errbuf, errlen, "TLS context");
    SSL_CTX_free(sc);
    free(c);
    return KEEL_ENOMEM;
}

void keel_tls_ctx_ref(keel_tls_ctx *ctx)
{
    ctx->refs++;
}

void keel_tls_ctx_unref(keel_tls_ctx *ctx)
{
    if (ctx == NULL || --ctx->refs > 0)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    sk_X509_CRL_pop_free(ctx->crls, X509_CRL_free);
    free(ctx);
}

static int tls_new(keel_tls_ctx *ctx, int fd, int client,
                   const char *expect_node, keel_tls **out)
{
    keel_tls *t = calloc(1, sizeof *t);

    if (t == NULL)
        return KEEL_ENOMEM;
    ERR_clear_error();
    t->ssl = SSL_new(ctx->ssl_ctx);
    if (t->ssl == NULL || SSL_set_fd(t->ssl, fd) != 1 ||
        SSL_set_ex_data(t->ssl, tls_ex_index, t) != 1) {
        ERR_clear_error();
        SSL_free(t->ssl);
        free(t);
        return KEEL_ENOMEM;
    }
    BIO_set_callback_arg(SSL_get_rbio(t->ssl), (char *)t);
    BIO_set_callback_ex(SSL_get_rbio(t->ssl), sock_read_cb);
    t->client = client;
    if (expect_node != NULL)
        snprintf(t->expect, sizeof t->expect, "%s", expect_node);
    if (client)
        SSL_set_connect_state(t->ssl);
    else
        SSL_set_accept_state(t->ssl);
    t->ctx = ctx;
    keel_tls_ctx_ref(ctx);
    *out = t;
    return 0;
}

int keel_tls_accept(keel_tls_ctx *ctx, int fd, keel_tls **out)
{
    return tls_new(ctx, fd, 0, NULL, out);
}

int keel_tls_connect(keel_tls_ctx *ctx, int fd, const char *expect_node,
                     keel_tls **out)
{
    return tls_new(ctx, fd, 1, expect_node, out);
}

void keel_tls_free(keel_tls *t)
{
    if (t == NULL)
        return;
    SSL_free(t->ssl);
    keel_tls_ctx_unref(t->ctx);
    free(t);
}

void keel_tls_shutdown(keel_tls *t)
{
    if (t == NULL || !t->hs_done)
        return;
    ERR_clear_error();
    (void)SSL_shutdown(t->ssl);
    ERR_clear_error();
}

/* The identity a certificate names, from its one subject CN, taken as
 * verified: KEEL_TLS_OTHER at least. */
static void identity_of_cert(X509 *x, keel_tls_identity *id)
{
    X509_NAME *subj;
    ASN1_STRING *data;
    unsigned char *cn = NULL;
    int i, len;

    memset(id, 0, sizeof *id);
    /* Verified: authenticated, if only as a certificate of no known
     * kind, whatever its CN turns out to be. */
    id->kind = KEEL_TLS_OTHER;
    subj = X509_get_subject_name(x);
    i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    /* Exactly one CN: with two, which one names the holder is a guess. */
    if (i < 0 || X509_NAME_get_index_by_NID(subj, NID_commonName, i) >= 0)
        return;
    data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
    len = ASN1_STRING_to_UTF8(&cn, data);
    if (len < 0)
        return;
    if ((size_t)len == strlen((const char *)cn)) { /* no NUL inside */
        const char *s = (const char *)cn;
        if (strncmp(s, "node:", 5) == 0 && s[5] != '\0') {
            id->kind = KEEL_TLS_NODE;
            s += 5;
        } else if (strncmp(s, "client:", 7) == 0 && s[7] != '\0') {
            id->kind = KEEL_TLS_CLIENT;
            s += 7;
        }
        if (strlen(s) > KEEL_TLS_NAME_MAX)
            id->kind = KEEL_TLS_OTHER; /* no node or client has that name */
        else
            snprintf(id->name, sizeof id->name, "%s", s);
    }
    OPENSSL_free(cn);
}

/* The identity of the other side's certificate, if it verified. */
static void identity_of(SSL *ssl, keel_tls_identity *id)
{
    X509 *x = SSL_get0_peer_certificate(ssl);

    memset(id, 0, sizeof *id);
    if (x == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
        return;
    identity_of_cert(x, id);
}

int keel_tls_node_ctx_create(const char *cert, const char *key,
                             const char *ca, const char *crl,
                             const char *node_id, keel_tls_ctx **out,
                             char *errbuf, size_t errlen)
{
    keel_tls_identity id;
    keel_tls_ctx *c;
    X509 *own;
    int rc;

    rc = keel_tls_ctx_create(cert, key, ca, crl, &c, errbuf, errlen);
    if (rc != 0)
        return rc;
    /* Other nodes connect expecting CN=node:<this node's id>, clients
     * CN=node:<any id> (keel_tls_handshake): a certificate naming
     * anything else would have every connection to this node refused,
     * and in a cluster while it takes part in placement. A standalone
     * node has no id to match. */
    own = SSL_CTX_get0_certificate(c->ssl_ctx);
    memset(&id, 0, sizeof id);
    if (own != NULL)
        identity_of_cert(own, &id);
    if (id.kind == KEEL_TLS_NODE &&
        (node_id == NULL || strcmp(id.name, node_id) == 0)) {
        *out = c;
        return 0;
    }
    if (id.kind == KEEL_TLS_NODE)
        snprintf(errbuf, errlen,
                 "certificate %s names node:%s, but this node is %s: a "
                 "cluster node's certificate must name its own node id "
                 "(CN=node:%s), or the other nodes refuse its links",
                 cert, id.name, node_id, node_id);
    else if (node_id == NULL)
        snprintf(errbuf, errlen,
                 "certificate %s %s%s%s, not a node: a node's certificate "
                 "must name a node (CN=node:<id>), or clients refuse it",
                 cert, id.name[0] != '\0' ? "names " : "has no single "
                                             "subject CN naming a node",
                 id.kind == KEEL_TLS_CLIENT ? "client:" : "", id.name);
    else if (id.name[0] != '\0')
        snprintf(errbuf, errlen,
                 "certificate %s names %s%s, not a node: a cluster node's "
                 "certificate must name its own node id (CN=node:%s), or "
                 "the other nodes refuse its links",
                 cert, id.kind == KEEL_TLS_CLIENT ? "client:" : "", id.name,
                 node_id);
    else
        snprintf(errbuf, errlen,
                 "certificate %s has no single subject CN naming a node: a "
                 "cluster node's certificate must name its own node id "
                 "(CN=node:%s), or the other nodes refuse its links",
                 cert, node_id);
    keel_tls_ctx_unref(c);
    return KEEL_EINVAL;
}

/* Verification of a client's certificate on a connection that must not
 * be a node's (keel_tls_refuse_nodes): a leaf that verified and names a
 * node fails, and the handshake with it. */
static int refuse_node_verify_cb(int ok, X509_STORE_CTX *xs)
{
    keel_tls_identity id;

    if (!ok || X509_STORE_CTX_get_error_depth(xs) != 0)
        return ok;
    identity_of_cert(X509_STORE_CTX_get_current_cert(xs), &id);
    if (id.kind != KEEL_TLS_NODE)
        return 1;
    X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

void keel_tls_refuse_nodes(keel_tls *t)
{
    SSL_set_verify(t->ssl, SSL_VERIFY_PEER, refuse_node_verify_cb);
}

/* What an SSL call that returned r <= 0 means. */
static int tls_result(keel_tls *t, int r, char *errbuf, size_t errlen,
                      const char *what)
{
    int e = SSL_get_error(t->ssl, r);

    switch (e) {
    case SSL_ERROR_WANT_READ:
        errors_clear();
        return KEEL_TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        errors_clear();
        return KEEL_TLS_WANT_WRITE;
    case SSL_ERROR_SYSCALL:
        if (errbuf != NULL && errlen > 0)
            snprintf(errbuf, errlen, "%s: %s", what,
                     errno != 0 ? strerror(errno) : "connection closed");
        ERR_clear_error();
        return KEEL_ECONN;
    default:
        tls_error(errbuf, errlen, what);
        if (e == SSL_ERROR_SSL && SSL_get_verify_result(t->ssl) != X509_V_OK &&
            errbuf != NULL && errlen > 0) {
            size_t off = strlen(errbuf);
            snprintf(errbuf + off, errlen - off, " (%s)",
                     X509_verify_cert_error_string(
                         SSL_get_verify_result(t->ssl)));
        }
        return KEEL_ECONN;
    }
}

/* TLS record content types: change_cipher_spec 20 to heartbeat 24. */
#define TLS_TYPE_FIRST 20
#define TLS_TYPE_LAST 24

/* Says in plain words why the connecting side's handshake failed when
 * the server does not speak TLS at all: OpenSSL's "wrong version
 * number" or "packet length too long" would be all the caller sees. */
static void handshake_failure(const keel_tls *t, char *errbuf, size_t errlen)
{
    if (errbuf == NULL || errlen == 0)
        return;
    if (t->got_first && (t->first < TLS_TYPE_FIRST || t->first > TLS_TYPE_LAST))
        snprintf(errbuf, errlen,
                 "TLS: the server does not speak TLS (it answered in "
                 "plaintext): is this port's node without TLS?");
    else if (!t->got_first)
        snprintf(errbuf, errlen,
                 "TLS: the server closed the connection without answering "
                 "the handshake (stopping, or at its connection limit?)");
}

int keel_tls_handshake(keel_tls *t, char *errbuf, size_t errlen)
{
    int r;

    if (errbuf != NULL && errlen > 0)
        errbuf[0] = '\0';
    if (!t->hs_done) {
        ERR_clear_error();
        errno = 0;
        r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            r = tls_result(t, r, errbuf, errlen, "TLS handshake");
            if (r == KEEL_ECONN && t->client)
                handshake_failure(t, errbuf, errlen);
            return r;
        }
        t->hs_done = 1;
        identity_of(t->ssl, &t->ident);
        t->ident_set = 1;
        if (t->client && (t->ident.kind == KEEL_TLS_ANON)) {
            snprintf(errbuf, errlen, "TLS: the server's certificate did not "
                                     "verify");
            return KEEL_ECONN;
        }
        /* Only a node serves the port: a client's certificate from the
         * same CA must not pass for one, or its holder could pose as a
         * node and be handed the tokens clients present. */
        if (t->client && t->expect[0] == '\0' &&
            t->ident.kind != KEEL_TLS_NODE) {
            snprintf(errbuf, errlen,
                     "TLS: the server's certificate names %s%s, not a node "
                     "(CN=node:<id>): it is not a node of this cluster",
                     t->ident.kind == KEEL_TLS_CLIENT ? "client:" : "",
                     t->ident.name);
            return KEEL_ECONN;
        }
        if (t->client && t->expect[0] != '\0' &&
            (t->ident.kind != KEEL_TLS_NODE ||
             strcmp(t->ident.name, t->expect) != 0)) {
            snprintf(errbuf, errlen,
                     "TLS: the server's certificate names %s%s, not "
                     "node:%s",
                     t->ident.kind == KEEL_TLS_NODE ? "node:" :
                     t->ident.kind == KEEL_TLS_CLIENT ? "client:" : "",
                     t->ident.name, t->expect);
            return KEEL_ECONN;
        }
    }
    if (!t->client)
        return 0;
    /* Wait for the ticket: peeking processes the records after the
     * handshake (the ticket, or the server's alert) and keeps any
     * application data for the caller. */
    while (!t->ticket) {
        unsigned char b;
        ERR_clear_error();
        errno = 0;
        r = SSL_peek(t->ssl, &b, 1);
        if (r > 0)
            break; /* data before a ticket: a server without tickets */
        if (t->ticket)
            break;
        r = tls_result(t, r, errbuf, errlen, "TLS: the server refused us");
        if (r == KEEL_ECONN && errbuf != NULL && errbuf[0] == '\0')
            snprintf(errbuf, errlen, "TLS: the server closed the "
                                     "connection after the handshake");
        return r;
    }
    return 0;
}

int keel_tls_awaiting_ticket(const keel_tls *t)
{
    return t->client && t->hs_done && !t->ticket;
}

ssize_t keel_tls_read(keel_tls *t, void *buf, size_t len)
{
    int r, n = len > INT32_MAX ? INT32_MAX : (int)len;

    errors_clear();
    errno = 0;
    r = SSL_read(t->ssl, buf, n);
    t->starved = 0;
    if (r > 0)
        return r;
    if (SSL_get_error(t->ssl, r) == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        return 0;
    }
    r = tls_result(t, r, NULL, 0, "TLS read");
    t->starved = r == KEEL_TLS_WANT_READ;
    return r;
}

ssize_t keel_tls_write(keel_tls *t, const void *buf, size_t len)
{
    int r, n = len > INT32_MAX ? INT32_MAX : (int)len;

    if (len == 0)
        return 0;
    errors_clear();
    errno = 0;
    r = SSL_write(t->ssl, buf, n);
    if (r > 0)
        return r;
    return tls_result(t, r, NULL, 0, "TLS write");
}

int keel_tls_pending(const keel_tls *t)
{
    /* Bytes read ahead that did not make a record a moment ago do not
     * make one now: only the socket can bring the rest. */
    return !t->starved && SSL_has_pending(t->ssl);
}

int keel_tls_drained(const keel_tls *t)
{
    return t->sock_short && !SSL_has_pending(t->ssl);
}

int keel_tls_revoked(const keel_tls_ctx *ctx, const keel_tls *t)
{
    X509 *x = SSL_get0_peer_certificate(t->ssl);
    X509_REVOKED *rev;
    int i;

    if (x == NULL || ctx->crls == NULL)
        return 0;
    for (i = 0; i < sk_X509_CRL_num(ctx->crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(ctx->crls, i);
        if (X509_NAME_cmp(X509_get_issuer_name(x),
                          X509_CRL_get_issuer(crl)) == 0 &&
            X509_CRL_get0_by_cert(crl, &rev, x) == 1)
            return 1;
    }
    return 0;
}

void keel_tls_peer_identity(const keel_tls *t, keel_tls_identity *out)
{
    if (t->ident_set)
        *out = t->ident;
    else
        memset(out, 0, sizeof *out);
}
