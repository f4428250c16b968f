/* Fuzz target: the access decisions (runtime/auth.c) against a model of
 * the rules docs/security.md states, written here independently: the
 * token file's parser (table_load through keel__auth_create and
 * keel__auth_reload), token lookup, roles and per-type rights, the HTTP
 * face's check (keel__auth_http, with a bearer header or a certificate
 * identity from keel__auth_conn_from_cert, which needs no handshake), the
 * wire's login, peer claim and check (keel__auth_login,
 * keel__auth_peer_claim, keel__auth_check, keel__auth_frame), and node
 * identities judged against the member list (keel__auth_set_members).
 * No client address is given, so the limit on failed attempts by
 * address, which reads the clock, stays out: every decision is a
 * function of the input.
 *
 * Input: a flags byte, then text in three sections separated by lines
 * "%%": token file A, token file B, requests. Flags bit 0: the node is a
 * cluster node (node identities are judged by membership). File A is
 * what the node starts with; a file that the model refuses must be
 * refused, and then nothing else runs. Requests are lines
 * "S O TYPE ARG" without the first space: S the kind of request, O the
 * operation ('0' open, '1' read, '2' call, '3' admin, '4' node; any
 * other byte modulo 5), then a space, the actor type up to the next
 * space, a space, and the rest of the line:
 *   n  HTTP without an Authorization header;
 *   b  HTTP, ARG the Authorization header (up to a NUL);
 *   c  HTTP with a certificate whose CN is ARG up to a tab; the header,
 *      if any, is what follows the tab;
 *   w  a new wire connection: INFO auth with ARG as the token, then the
 *      request;
 *   v  a new wire connection with a certificate (CN, tab, token as for
 *      c), then the request;
 *   p  a new wire connection: INFO peer NUL ARG (ARG empty: "peer"
 *      alone), then the request;
 *   l  INFO auth with ARG as the token again on the newest wire
 *      connection, then the request on it;
 *   q  INFO peer as for p again on the newest wire connection, then the
 *      request on it;
 *   m  the member list becomes the space-separated words after "m";
 *   r  the node reloads its token file, which is now B (then A, then
 *      B...). Every wire connection kept (the last 8) is asked its
 *      request again.
 *
 * Properties, besides "no crash, no sanitizer report, no leak":
 *  - a token file loads exactly when the model's reading of the
 *    documented format accepts it (one token a line, blank and '#' lines
 *    skipped, 16 to 256 printable ASCII bytes, role client or admin, a
 *    type list only on client lines, of 1 to 64 byte names without
 *    commas, at most three fields, no token twice, no NUL), and a
 *    refusal is KEEL_EINVAL naming the line the model finds first; a
 *    reload of a refused file keeps the table before;
 *  - every decision (0, KEEL_EUNAUTH, KEEL_EDENIED, KEEL_ENOTMEMBER) is
 *    the model's: open requests always pass; no identity (no header, a
 *    header of another scheme, an unknown token) gets KEEL_EUNAUTH on
 *    anything else, so an unknown token never writes; a client token
 *    reads, calls only the types of its list (every type without one),
 *    and never gets an admin or node request; an admin token everything
 *    but node requests; a node everything but admin requests, and in a
 *    cluster that has a view only while it is a member; a certificate
 *    identity counts whatever header is beside it, and a CN of no known
 *    kind counts for nothing;
 *  - a refusal has a message and is counted once in the node's
 *    statistics (KEEL_ENOTMEMBER with the EDENIED ones), a pass leaves
 *    them alone;
 *  - a wire connection's request asked as a frame (PING, STAT or a
 *    read-only INFO query, a CALL or CAST of the type with or without a
 *    budget and a request key, a SUBSCRIBE, INFO drain, forget or an
 *    unknown query, XFER or REPL) gets the same answer from keel__auth_frame as
 *    from keel__auth_check; an OBATCH is refused only without identity;
 *  - a failed login leaves a token identity anonymous, and a
 *    certificate's identity or a node's claim as it was; a claim on a
 *    connection with a node's certificate changes nothing, one with a
 *    client's is refused, and a refused claim leaves the identity it
 *    had; the third failed login on a connection, successes between or
 *    not, makes keel__auth_conn_spent say so;
 *  - decisions depend on nothing but the table, the identity, the
 *    operation and the type: each HTTP request is asked twice, the second
 *    time after every other request of the input, with the same answer,
 *    and a wire connection asked again after a reload answers as the
 *    model does for the new table (its token dropped: no identity). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "fuzz.h"
#include "runtime/auth.h"
#include "runtime/node.h"

#define MAX_REQS 64   /* requests of an input that are looked at */
#define MAX_CONNS 8   /* wire connections kept for the reload check */
#define MAX_MEMBERS 16
#define MAX_ENTRIES 512 /* tokens the model keeps: what 4 KiB can hold */

/* ------------------------------------------------------------ the model */

struct m_entry {
    const uint8_t *tok;
    size_t len;
    int admin;
    const uint8_t *types; /* "a,b" inside the file text, or NULL: all */
    size_t typeslen;
};

struct m_table {
    struct m_entry e[MAX_ENTRIES];
    size_t n;
    unsigned bad_line; /* 0: accepted */
    int too_many;      /* more tokens than the model keeps: not judged */
};

static int m_sep(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Is s/len a list of names NAME[,NAME...], each 1 to 64 bytes of 0x21 to
 * 0x7e other than ','? */
static int m_types_ok(const uint8_t *s, size_t len)
{
    size_t i, run = 0;

    if (len == 0)
        return 0;
    for (i = 0; i < len; i++) {
        if (s[i] == ',') {
            if (run == 0)
                return 0;
            run = 0;
        } else if (s[i] < 0x21 || s[i] > 0x7e || ++run > KEEL_MAX_TYPE_LEN) {
            return 0;
        }
    }
    return run > 0;
}

/* One line: 0 blank or comment, 1 an entry in *e, -1 malformed. */
static int m_line(const uint8_t *l, size_t len, struct m_entry *e)
{
    const uint8_t *f[4];
    size_t fl[4], i = 0, nf = 0;

    while (i < len) {
        size_t s;
        while (i < len && m_sep(l[i]))
            i++;
        if (i == len)
            break;
        if (nf == 0 && l[i] == '#')
            return 0; /* a comment */
        if (nf == 3)
            return -1; /* a fourth field */
        s = i;
        while (i < len && !m_sep(l[i]))
            i++;
        f[nf] = l + s;
        fl[nf++] = i - s;
    }
    if (nf == 0)
        return 0;
    if (nf < 2 || fl[0] < KEEL_AUTH_TOKEN_MIN || fl[0] > KEEL_AUTH_TOKEN_MAX)
        return -1;
    for (i = 0; i < fl[0]; i++)
        if (f[0][i] < 0x21 || f[0][i] > 0x7e)
            return -1;
    memset(e, 0, sizeof *e);
    e->tok = f[0];
    e->len = fl[0];
    if (fl[1] == 5 && memcmp(f[1], "admin", 5) == 0)
        e->admin = 1;
    else if (!(fl[1] == 6 && memcmp(f[1], "client", 6) == 0))
        return -1;
    if (nf == 3) {
        if (e->admin || !m_types_ok(f[2], fl[2]))
            return -1;
        e->types = f[2];
        e->typeslen = fl[2];
    }
    return 1;
}

static void m_load(const uint8_t *s, size_t len, struct m_table *t)
{
    size_t pos = 0;
    unsigned lineno = 0;

    memset(t, 0, sizeof *t);
    if (memchr(s, '\0', len) != NULL) {
        t->bad_line = (unsigned)-1; /* refused, naming no line */
        return;
    }
    while (pos < len) {
        const uint8_t *nl = memchr(s + pos, '\n', len - pos);
        size_t ll = nl != NULL ? (size_t)(nl - (s + pos)) : len - pos;
        struct m_entry e;
        int r = m_line(s + pos, ll, &e);
        size_t i;

        lineno++;
        pos += ll + 1;
        if (r == 0)
            continue;
        if (r < 0) {
            t->bad_line = lineno;
            return;
        }
        for (i = 0; i < t->n; i++)
            if (t->e[i].len == e.len && memcmp(t->e[i].tok, e.tok, e.len) == 0)
                break;
        if (i < t->n) {
            t->bad_line = lineno;
            return;
        }
        if (t->n == MAX_ENTRIES) {
            t->too_many = 1;
            continue;
        }
        t->e[t->n++] = e;
    }
}

static const struct m_entry *m_find(const struct m_table *t,
                                    const uint8_t *tok, size_t len)
{
    size_t i;

    for (i = 0; i < t->n; i++)
        if (t->e[i].len == len && memcmp(t->e[i].tok, tok, len) == 0)
            return &t->e[i];
    return NULL;
}

static int m_listed(const struct m_entry *e, const uint8_t *type, size_t tl)
{
    size_t i = 0;

    while (i <= e->typeslen) {
        size_t j = i;
        while (j < e->typeslen && e->types[j] != ',')
            j++;
        if (j - i == tl && memcmp(e->types + i, type, tl) == 0)
            return 1;
        i = j + 1;
    }
    return 0;
}

/* An identity as the documentation describes it. */
enum { M_ANON, M_CLIENT, M_ADMIN, M_NODE };

struct m_ident {
    int kind;
    const struct m_entry *e; /* a token's entry (types), or NULL: all */
    char name[KEEL_AUTH_NAME_MAX + 1];
};

struct m_node {
    int cluster;
    int view; /* a member list came */
    char members[MAX_MEMBERS][KEEL_AUTH_NAME_MAX + 1];
    size_t nmembers;
};

static int m_member(const struct m_node *mn, const char *name)
{
    size_t i;

    if (!mn->cluster || !mn->view)
        return 1;
    for (i = 0; i < mn->nmembers; i++)
        if (strcmp(mn->members[i], name) == 0)
            return 1;
    return 0;
}

/* "What needs what" of docs/security.md. */
static int m_decide(const struct m_node *mn, const struct m_ident *id,
                    int op, const uint8_t *type, size_t tl)
{
    if (op == KEEL_AUTH_OP_OPEN)
        return 0;
    switch (id->kind) {
    case M_ANON:
        return KEEL_EUNAUTH;
    case M_NODE:
        if (!m_member(mn, id->name))
            return KEEL_ENOTMEMBER;
        return op == KEEL_AUTH_OP_ADMIN ? KEEL_EDENIED : 0;
    case M_ADMIN:
        return op == KEEL_AUTH_OP_NODE ? KEEL_EDENIED : 0;
    default: /* a client */
        if (op == KEEL_AUTH_OP_READ)
            return 0;
        if (op == KEEL_AUTH_OP_CALL)
            return id->e == NULL || id->e->types == NULL ||
                           m_listed(id->e, type, tl)
                       ? 0
                       : KEEL_EDENIED;
        return KEEL_EDENIED;
    }
}

/* The identity a token gives, by the current table. */
static void m_by_token(const struct m_table *t, const uint8_t *tok,
                       size_t len, struct m_ident *id)
{
    const struct m_entry *e = m_find(t, tok, len);

    memset(id, 0, sizeof *id);
    if (e != NULL) {
        id->kind = e->admin ? M_ADMIN : M_CLIENT;
        id->e = e;
    }
}

/* "Bearer" in any case, a space, spaces, the token, trailing spaces and
 * tabs cut; NULL for no header or another scheme. */
static const char *m_bearer(const char *h, size_t *len)
{
    const char *t;
    size_t n;

    if (h == NULL || strlen(h) < 7 || strncasecmp(h, "bearer ", 7) != 0)
        return NULL;
    t = h + 7;
    while (*t == ' ')
        t++;
    n = strlen(t);
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    *len = n;
    return t;
}

/* A certificate's CN: node:, client:, admin: and a name of 1 to 64
 * bytes; 0 when it names no known kind. */
static int m_cert(const char *cn, struct m_ident *id)
{
    static const struct {
        const char *p;
        int kind;
    } k[] = {{"node:", M_NODE}, {"client:", M_CLIENT}, {"admin:", M_ADMIN}};
    size_t i;

    memset(id, 0, sizeof *id);
    for (i = 0; i < 3; i++) {
        size_t pl = strlen(k[i].p), nl;
        if (strncmp(cn, k[i].p, pl) != 0)
            continue;
        nl = strlen(cn + pl);
        if (nl == 0 || nl > KEEL_AUTH_NAME_MAX)
            return 0;
        id->kind = k[i].kind;
        memcpy(id->name, cn + pl, nl + 1);
        return 1;
    }
    return 0;
}

/* A node id a claim may give: 1 to 64 bytes of [A-Za-z0-9._-], not "."
 * or "..". */
static int m_node_id(const uint8_t *s, size_t n)
{
    size_t i;

    if (n == 0 || n > KEEL_AUTH_NAME_MAX || (n == 1 && s[0] == '.') ||
        (n == 2 && s[0] == '.' && s[1] == '.'))
        return 0;
    for (i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' ||
              s[i] == '-'))
            return 0;
    return 1;
}

/* ------------------------------------------------------- the real thing */

static keel_node *node;
/* The token file: a file in memory with no name in any directory, so
 * that nothing is left behind by a run, a crash or a minimisation (which
 * crashes thousands of times), reached by its /proc/self/fd path as a
 * node reaches its --auth-tokens FILE. */
static int tokfd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    keel_log_set_level(-1); /* reload failures are expected, not news */
    tokfd = memfd_create("keel-fuzz-auth-tokens", MFD_CLOEXEC);
    if (tokfd < 0) {
        perror("fuzz_auth: memfd_create");
        abort();
    }
    /* Owner-only, as auth.c insists (a memfd starts 0777). */
    FUZZ_CHECK(fchmod(tokfd, 0600) == 0);
    snprintf(path, sizeof path, "/proc/self/fd/%d", tokfd);
    node = calloc(1, sizeof *node);
    FUZZ_CHECK(node != NULL);
    return 0;
}

static void write_file(const uint8_t *s, size_t len)
{
    size_t off = 0;

    FUZZ_CHECK(ftruncate(tokfd, 0) == 0);
    while (off < len) {
        ssize_t w = pwrite(tokfd, s + off, len - off, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        FUZZ_CHECK(w > 0);
        off += (size_t)w;
    }
}

/* Checks rc against the model's want and the statistics against the
 * counts before (a refusal counted once, in its kind). */
static void check_rc(int rc, int want, const char *err, uint64_t un0,
                     uint64_t de0)
{
    uint64_t un = node->stats.auth_refused_unauth;
    uint64_t de = node->stats.auth_refused_denied;

    if (rc != want)
        fprintf(stderr, "fuzz_auth: decided %d, the rules say %d (%s)\n", rc,
                want, err);
    FUZZ_CHECK(rc == want);
    FUZZ_CHECK(rc == 0 || err[0] != '\0');
    FUZZ_CHECK(un == un0 + (rc == KEEL_EUNAUTH));
    FUZZ_CHECK(de == de0 + (rc == KEEL_EDENIED || rc == KEEL_ENOTMEMBER));
}

struct req {
    char kind;
    int op;
    const uint8_t *type;
    size_t tl;
    char cn[KEEL_AUTH_NAME_MAX + 16];
    int has_cn;
    char hdr[512];
    int has_hdr;
    int first;      /* the answer the first time */
    unsigned epoch; /* s->changes then */
};

struct conn {
    int used;
    keel_auth_conn ac;
    struct m_ident id; /* the model's identity */
    const uint8_t *tok; /* its token (in the input), for a reload */
    size_t toklen;
    int by_token; /* the identity came from tok */
    unsigned fails; /* failed logins */
    int cert;       /* the identity came from a certificate */
    int op;
    const uint8_t *type;
    size_t tl;
};

struct state {
    keel_auth *a;
    struct m_node mn;
    struct m_table tab[2]; /* A and B */
    int cur;               /* the one in force */
    int next;              /* the file a reload reads */
    struct conn conns[MAX_CONNS];
    size_t nconns;
    struct req reqs[MAX_REQS];
    size_t nreqs;
    unsigned changes; /* reloads that took, member lists */
    int lost; /* a table beyond the model's size: nothing is judged */
};

/* An HTTP request: the answer the model gives. */
static int m_http(const struct state *s, const struct req *r)
{
    struct m_ident id;
    const char *tok;
    size_t len;

    if (r->op == KEEL_AUTH_OP_OPEN)
        return 0;
    if (r->has_cn && m_cert(r->cn, &id))
        return m_decide(&s->mn, &id, r->op, r->type, r->tl);
    tok = m_bearer(r->has_hdr ? r->hdr : NULL, &len);
    if (tok == NULL)
        return KEEL_EUNAUTH;
    m_by_token(&s->tab[s->cur], (const uint8_t *)tok, len, &id);
    return m_decide(&s->mn, &id, r->op, r->type, r->tl);
}

static int ask_http(struct state *s, const struct req *r)
{
    keel_auth_conn cert;
    char err[512] = "";
    uint64_t un0 = node->stats.auth_refused_unauth;
    uint64_t de0 = node->stats.auth_refused_denied;
    int rc;

    memset(&cert, 0, sizeof cert);
    if (r->has_cn) {
        struct m_ident id;
        int ok = keel__auth_conn_from_cert(&cert, r->cn) == 0;
        FUZZ_CHECK(ok == m_cert(r->cn, &id));
        if (!ok) /* left as it was: anonymous */
            FUZZ_CHECK(cert.kind == KEEL_AUTH_ANON &&
                       cert.source == KEEL_AUTH_SRC_NONE);
    }
    rc = keel__auth_http(s->a, r->has_cn ? &cert : NULL,
                         r->has_hdr ? r->hdr : NULL, NULL, r->op, r->type,
                         r->tl, err, sizeof err);
    check_rc(rc, m_http(s, r), err, un0, de0);
    return rc;
}

static void ask_conn(struct state *s, struct conn *c)
{
    char err[512] = "";
    uint64_t un0 = node->stats.auth_refused_unauth;
    uint64_t de0 = node->stats.auth_refused_denied;
    int rc = keel__auth_check(s->a, &c->ac, c->op, c->type, c->tl, err,
                              sizeof err);

    int want = m_decide(&s->mn, &c->id, c->op, c->type, c->tl);
    uint8_t body[64 + KEEL_MAX_TYPE_LEN];
    keel_frame f;

    check_rc(rc, want, err, un0, de0);
    /* The same request as a frame: keel__auth_frame must find the same
     * operation and type in it (docs/security.md, "What needs what"). */
    memset(&f, 0, sizeof f);
    f.body = body;
    switch (c->op) {
    case KEEL_AUTH_OP_OPEN:
        f.kind = KEEL_FRAME_PING;
        break;
    case KEEL_AUTH_OP_READ: {
        static const char *const q[] = {"nodes", "shards", "where",
                                        "capabilities"};
        size_t k = c->tl % 5;
        f.kind = k == 4 ? KEEL_FRAME_STAT : KEEL_FRAME_INFO;
        if (k < 4) {
            f.body_len = strlen(q[k]);
            memcpy(body, q[k], f.body_len);
        }
        break;
    }
    case KEEL_AUTH_OP_CALL:
        /* Only a body that parses: one that does not is the handler's
         * to refuse as malformed. */
        if (c->tl == 0 || c->tl > KEEL_MAX_TYPE_LEN)
            return;
        /* The type byte picks the form: CALL or CAST, with a budget
         * and a request key in front, or none; a SUBSCRIBE (the right
         * to follow an actor is the right to call it); an OBATCH, whose
         * messages are judged one by one elsewhere: here only a
         * connection with no identity is refused. */
        switch (c->type[0] % 4) {
        case 0:
        case 1: {
            size_t off = 0;
            f.kind = c->type[0] % 4 ? KEEL_FRAME_CALL : KEEL_FRAME_CAST;
            if (c->type[0] & 4) {
                f.flags |= KEEL_FLAG_DEADLINE;
                keel_deadline_put(body, 1000);
                off += KEEL_DEADLINE_LEN;
            }
            if (c->type[0] & 8) {
                f.flags |= KEEL_FLAG_KEYED;
                memset(body + off, 0xab, KEEL_REQUEST_KEY_LEN);
                off += KEEL_REQUEST_KEY_LEN;
            }
            f.body_len = off + keel_call_body_encode(body + off, c->type,
                                                     c->tl, "i", 1, NULL, 0);
            break;
        }
        case 2:
            f.kind = KEEL_FRAME_SUBSCRIBE;
            f.body_len = keel_subscribe_encode(body, c->type, c->tl, "i", 1,
                                               7);
            break;
        default:
            f.kind = KEEL_FRAME_OBATCH;
            if (c->id.kind != M_ANON)
                want = 0;
            break;
        }
        break;
    case KEEL_AUTH_OP_ADMIN: {
        /* An INFO query nobody knows needs an admin too. */
        static const char *const q[] = {"drain\0n1", "forget\0n1",
                                        "no-such-query"};
        static const size_t ql[] = {8, 9, 13};
        size_t k = c->tl % 3;
        f.kind = KEEL_FRAME_INFO;
        f.body_len = ql[k];
        memcpy(body, q[k], ql[k]);
        break;
    }
    default:
        /* The node-to-node frames: a unit stream or replicated writes. */
        f.kind = c->tl % 2 ? KEEL_FRAME_XFER : KEEL_FRAME_REPL;
        break;
    }
    un0 = node->stats.auth_refused_unauth;
    de0 = node->stats.auth_refused_denied;
    err[0] = '\0';
    rc = keel__auth_frame(s->a, &c->ac, &f, err, sizeof err);
    check_rc(rc, want, err, un0, de0);
}

/* INFO auth with tok on c: the model's identity follows. */
static void login(struct state *s, struct conn *c, const uint8_t *tok,
                  size_t len)
{
    char reply[512], err[512] = "";
    size_t rlen = 0;
    uint64_t un0 = node->stats.auth_refused_unauth;
    uint64_t de0 = node->stats.auth_refused_denied;
    struct m_ident id;
    int rc = keel__auth_login(s->a, &c->ac, -1, tok, len, reply, sizeof reply,
                              &rlen, err, sizeof err);

    m_by_token(&s->tab[s->cur], tok, len, &id);
    check_rc(rc, id.kind == M_ANON ? KEEL_EUNAUTH : 0, err, un0, de0);
    c->fails += rc != 0;
    if (rc == 0)
        FUZZ_CHECK(rlen > 5 && memcmp(reply, "auth ", 5) == 0 &&
                   reply[rlen - 1] == '\n');
    if (c->cert) {
        /* A certificate's identity stays, and the answer names it. */
        char want[256];
        int wl = snprintf(want, sizeof want, "auth %s certificate %s\n",
                          c->id.kind == M_NODE    ? "node"
                          : c->id.kind == M_ADMIN ? "admin"
                                                  : "client",
                          c->id.name);
        FUZZ_CHECK(rc != 0 || ((size_t)wl == rlen &&
                               memcmp(reply, want, rlen) == 0));
        return;
    }
    if (id.kind == M_ANON && !c->by_token)
        return; /* "no token identity afterwards": a node's claim stays */
    c->id = id;
    c->by_token = id.kind != M_ANON;
    c->tok = tok;
    c->toklen = len;
}

/* INFO peer NUL id (id empty: "peer" alone) on c. 0 when id is longer
 * than a claim the model looks at. */
static int claim(struct state *s, struct conn *c, const uint8_t *id,
                 size_t len)
{
    uint8_t body[5 + 256];
    char err[512] = "";
    uint64_t un0 = node->stats.auth_refused_unauth;
    uint64_t de0 = node->stats.auth_refused_denied;
    size_t bl = 4;
    int ok, rc;

    if (len > 256)
        return 0;
    memcpy(body, "peer", 4);
    if (len > 0) {
        body[4] = '\0';
        memcpy(body + 5, id, len);
        bl = 5 + len;
    }
    rc = keel__auth_peer_claim(s->a, &c->ac, body, bl, err, sizeof err);
    if (c->cert) {
        /* A node's certificate makes the claim moot; a client's may not
         * claim. Either way the certificate's identity stays. */
        check_rc(rc, c->id.kind == M_NODE ? 0 : KEEL_EDENIED, err, un0, de0);
        return 1;
    }
    /* A cluster node takes a claim of a valid id; a standalone one, with
     * access control on (a token file is always loaded here), none: it
     * has no peers. A refused claim changes nothing. */
    ok = s->mn.cluster && len > 0 && m_node_id(id, len);
    check_rc(rc, ok ? 0 : KEEL_EDENIED, err, un0, de0);
    if (ok) {
        memset(&c->id, 0, sizeof c->id);
        c->id.kind = M_NODE;
        memcpy(c->id.name, id, len);
        c->id.name[len] = '\0';
        c->by_token = 0;
    }
    return 1;
}

static void wire(struct state *s, char kind, const uint8_t *arg, size_t alen,
                 int op, const uint8_t *type, size_t tl)
{
    struct conn *c = &s->conns[s->nconns++ % MAX_CONNS];

    memset(c, 0, sizeof *c);
    c->used = 1;
    c->op = op;
    c->type = type;
    c->tl = tl;
    if (kind == 'w') {
        login(s, c, arg, alen);
    } else if (kind == 'v') {
        const uint8_t *tab = memchr(arg, '\t', alen);
        size_t cl = tab != NULL ? (size_t)(tab - arg) : alen;
        char cn[KEEL_AUTH_NAME_MAX + 16];
        int ok;

        if (cl >= sizeof cn || memchr(arg, '\0', cl) != NULL) {
            c->used = 0;
            return;
        }
        memcpy(cn, arg, cl);
        cn[cl] = '\0';
        ok = keel__auth_conn_from_cert(&c->ac, cn) == 0;
        FUZZ_CHECK(ok == m_cert(cn, &c->id));
        c->cert = ok;
        if (tab != NULL)
            login(s, c, tab + 1, alen - cl - 1);
    } else { /* 'p' */
        if (!claim(s, c, arg, alen)) {
            c->used = 0;
            return;
        }
    }
    ask_conn(s, c);
}

/* INFO auth ('l') or INFO peer ('q') again on the newest wire
 * connection, then its request (now op on type). A failed login drops a
 * token identity; the connection is spent at the third failure,
 * whatever came between. */
static void relogin(struct state *s, char again, const uint8_t *tok,
                    size_t len, int op, const uint8_t *type, size_t tl)
{
    struct conn *c;

    if (s->nconns == 0)
        return;
    c = &s->conns[(s->nconns - 1) % MAX_CONNS];
    if (!c->used)
        return;
    if (again == 'q') {
        if (!claim(s, c, tok, len))
            return;
    } else {
        login(s, c, tok, len);
    }
    FUZZ_CHECK(keel__auth_conn_spent(s->a, &c->ac) ==
               (c->fails >= KEEL_AUTH_CONN_FAILS));
    if (c->fails >= KEEL_AUTH_CONN_FAILS) {
        c->used = 0; /* closed by its caller */
        return;
    }
    c->op = op;
    c->type = type;
    c->tl = tl;
    ask_conn(s, c);
}

static void reload(struct state *s, const uint8_t *const file[2],
                   const size_t flen[2])
{
    int f = s->next, rc;
    size_t i;

    s->next ^= 1;
    write_file(file[f], flen[f]);
    rc = keel__auth_reload(s->a);
    if (s->tab[f].too_many) {
        s->lost = 1; /* beyond the model: the entries are not all known */
        return;
    }
    FUZZ_CHECK((rc == 0) == (s->tab[f].bad_line == 0));
    FUZZ_CHECK(rc == 0 || rc == KEEL_EINVAL);
    if (rc == 0) {
        s->cur = f;
        s->changes++;
    }
    /* The connections of a dropped token are anonymous, the others take
     * their token's new role and types. */
    for (i = 0; i < MAX_CONNS && i < s->nconns; i++) {
        struct conn *c = &s->conns[i];
        if (!c->used)
            continue;
        if (c->by_token) {
            m_by_token(&s->tab[s->cur], c->tok, c->toklen, &c->id);
            c->by_token = c->id.kind != M_ANON;
        }
        ask_conn(s, c);
    }
}

static void set_members(struct state *s, const uint8_t *l, size_t len)
{
    const char *names[MAX_MEMBERS];
    size_t i = 0, n = 0;

    while (i < len && n < MAX_MEMBERS) {
        size_t st;
        while (i < len && l[i] == ' ')
            i++;
        if (i == len)
            break;
        st = i;
        while (i < len && l[i] != ' ')
            i++;
        if (i - st > KEEL_AUTH_NAME_MAX || memchr(l + st, '\0', i - st))
            continue; /* not a name the membership gives */
        memcpy(s->mn.members[n], l + st, i - st);
        s->mn.members[n][i - st] = '\0';
        names[n] = s->mn.members[n];
        n++;
    }
    s->mn.nmembers = n;
    s->mn.view = 1;
    s->changes++;
    keel__auth_set_members(s->a, names, n);
}

/* The next section of [*p, end): up to a line "%%" or the end. */
static void section(const uint8_t **p, const uint8_t *end,
                    const uint8_t **s, size_t *len)
{
    const uint8_t *q = *p;

    *s = q;
    while (q < end) {
        if (end - q >= 3 && q[0] == '%' && q[1] == '%' && q[2] == '\n' &&
            (q == *s || q[-1] == '\n')) {
            *len = (size_t)(q - *s);
            *p = q + 3;
            return;
        }
        q++;
    }
    *len = (size_t)(end - *s);
    *p = end;
}

static void request(struct state *s, const uint8_t *l, size_t len,
                    const uint8_t *const file[2], const size_t flen[2])
{
    const uint8_t *type, *arg, *sp;
    size_t tl, alen;
    struct req *r;
    int op;

    if (len < 1 || s->lost)
        return;
    if (l[0] == 'm') {
        set_members(s, l + 1, len - 1);
        return;
    }
    if (l[0] == 'r') {
        reload(s, file, flen);
        return;
    }
    if (len < 2)
        return;
    op = (int)((uint8_t)(l[1] - '0') % 5);
    type = len > 2 ? l + 3 : l + len;
    sp = memchr(type, ' ', (size_t)(l + len - type));
    tl = sp != NULL ? (size_t)(sp - type) : (size_t)(l + len - type);
    arg = sp != NULL ? sp + 1 : l + len;
    alen = (size_t)(l + len - arg);
    if (l[0] == 'l' || l[0] == 'q') {
        relogin(s, (char)l[0], arg, alen, op, type, tl);
        return;
    }
    if (l[0] == 'w' || l[0] == 'v' || l[0] == 'p') {
        wire(s, (char)l[0], arg, alen, op, type, tl);
        return;
    }
    if ((l[0] != 'n' && l[0] != 'b' && l[0] != 'c') || s->nreqs == MAX_REQS)
        return;
    r = &s->reqs[s->nreqs];
    memset(r, 0, sizeof *r);
    r->kind = (char)l[0];
    r->op = op;
    r->type = type;
    r->tl = tl;
    r->has_hdr = l[0] == 'b';
    if (l[0] == 'c') {
        const uint8_t *tab = memchr(arg, '\t', alen);
        size_t cl = tab != NULL ? (size_t)(tab - arg) : alen;
        if (cl >= sizeof r->cn || memchr(arg, '\0', cl) != NULL)
            return;
        memcpy(r->cn, arg, cl);
        r->has_cn = 1;
        r->has_hdr = tab != NULL;
        alen = tab != NULL ? alen - cl - 1 : 0;
        arg = tab != NULL ? tab + 1 : arg;
    }
    if (r->has_hdr) {
        const uint8_t *z = memchr(arg, '\0', alen);
        size_t hl = z != NULL ? (size_t)(z - arg) : alen;
        if (hl >= sizeof r->hdr)
            return;
        memcpy(r->hdr, arg, hl);
    }
    r->first = ask_http(s, r);
    r->epoch = s->changes;
    s->nreqs++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct state *s;
    const uint8_t *p, *end, *file[2], *reqs;
    size_t flen[2], rlen, i;
    char err[512] = "";
    int rc;

    if (size < 1)
        return 0;
    s = calloc(1, sizeof *s);
    FUZZ_CHECK(s != NULL);
    memset(node, 0, sizeof *node);
    s->mn.cluster = data[0] & 1;
    node->opts.zk_hosts = s->mn.cluster ? "127.0.0.1:1" : NULL;
    p = data + 1;
    end = data + size;
    section(&p, end, &file[0], &flen[0]);
    section(&p, end, &file[1], &flen[1]);
    section(&p, end, &reqs, &rlen);
    m_load(file[0], flen[0], &s->tab[0]);
    m_load(file[1], flen[1], &s->tab[1]);
    s->next = 1;

    write_file(file[0], flen[0]);
    rc = keel__auth_create(node, path, &s->a, err, sizeof err);
    if (s->tab[0].too_many) {
        keel__auth_destroy(rc == 0 ? s->a : NULL);
        free(s);
        return 0;
    }
    if ((rc == 0) != (s->tab[0].bad_line == 0))
        fprintf(stderr, "fuzz_auth: loaded %d (%s), the rules say line %u\n",
                rc, err, s->tab[0].bad_line);
    FUZZ_CHECK((rc == 0) == (s->tab[0].bad_line == 0));
    if (rc != 0) {
        char want[32];
        FUZZ_CHECK(rc == KEEL_EINVAL);
        if (s->tab[0].bad_line != (unsigned)-1) {
            snprintf(want, sizeof want, " line %u: ", s->tab[0].bad_line);
            if (strstr(err, want) == NULL)
                fprintf(stderr, "fuzz_auth: '%s' does not name%s\n", err,
                        want);
            FUZZ_CHECK(strstr(err, want) != NULL);
        }
        free(s);
        return 0;
    }
    FUZZ_CHECK(keel__auth_enabled(s->a));

    for (p = reqs; p < reqs + rlen;) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(reqs + rlen - p));
        size_t ll = nl != NULL ? (size_t)(nl - p) : (size_t)(reqs + rlen - p);
        request(s, p, ll, file, flen);
        p += ll + 1;
    }
    /* Asked again after everything else, in the reverse order: the same
     * answers, unless a reload or a member list changed what they rest
     * on since (then the model's answer for now, as always). */
    for (i = s->nreqs; i-- > 0 && !s->lost;) {
        int again = ask_http(s, &s->reqs[i]);
        if (s->reqs[i].epoch == s->changes)
            FUZZ_CHECK(again == s->reqs[i].first);
    }
    keel__auth_destroy(s->a);
    free(s);
    return 0;
}
