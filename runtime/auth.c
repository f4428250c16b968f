/* Tokens, roles and identities: see runtime/auth.h and docs/security.md. */
#include "runtime/auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/shardmap.h"
#include "runtime/node.h"

#define TOKEN_FILE_MAX (4u << 20) /* bytes of a token file, at most */

/* Failed token attempts by source address: an open-addressed table of
 * ADDR_SLOTS, probed ADDR_PROBE slots from an address's hash. A slot
 * whose window has ended is free; when none of the probed ones is, the
 * one whose window began first is taken over. */
#define ADDR_SLOTS 1024
#define ADDR_PROBE 16

struct auth_entry {
    uint8_t tok[KEEL_AUTH_TOKEN_MAX];
    size_t len;
    int role;
    char *types; /* "a,b,c" (malloc'd), or NULL: every type */
    unsigned line;
};

/* One reading of the token file; never changed once published. */
struct auth_table {
    struct auth_entry *e;
    size_t n;
    uint64_t gen;
};

/* Where failed attempts come from: an IPv4 address, or the /64 of an
 * IPv6 one (a host usually holds a whole /64). */
struct addr_key {
    uint8_t fam; /* 4 or 6 */
    uint8_t b[8];
};

/* The failures of one address in the window that began at since_ns. */
struct addr_slot {
    struct addr_key key;
    uint8_t used;
    uint32_t fails;
    uint64_t since_ns;
};

struct keel_auth {
    keel_node *n;
    char *path;  /* the token file, or NULL */
    /* TLS is on: certificates give identities, so access control is on
     * even without a token file (a connection with neither a certificate
     * identity nor a token is anonymous, as with tokens). */
    int certs;
    pthread_mutex_t mu; /* guards table (swapped by reload, read by HTTP) */
    struct auth_table *table;
    uint64_t next_gen;

    /* Cluster mode: node identities count while their node is one of
     * members (the latest view, set by the membership hook). members_gen
     * grows with every new list (1: none came yet); a connection
     * remembers the generation it looked itself up in. mmu guards the
     * list. */
    int cluster;
    pthread_mutex_t mmu;
    char (*members)[KEEL_AUTH_NAME_MAX + 1];
    size_t nmembers;
    uint64_t members_gen;

    /* Limits on failed token attempts (keel_node_options), and the
     * failures by address, under lmu (wire and HTTP threads). */
    uint32_t conn_fails_max;
    uint32_t addr_fails_max;
    uint64_t window_ns;
    pthread_mutex_t lmu;
    struct addr_slot *slots;
};

/* ----------------------------------------------------------- the table */

static void table_free(struct auth_table *t)
{
    size_t i;

    if (t == NULL)
        return;
    for (i = 0; i < t->n; i++) {
        free(t->e[i].types);
        /* The secrets do not outlive the table in freed memory. */
        memset(t->e[i].tok, 0, sizeof t->e[i].tok);
    }
    free(t->e);
    free(t);
}

static int valid_type_name(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > KEEL_MAX_TYPE_LEN)
        return 0;
    for (i = 0; i < len; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f ||
            s[i] == ',')
            return 0;
    return 1;
}

/* Compares a presented token with a stored one in time that depends on
 * the stored token's length only, never on where the bytes differ. */
static int ct_equal(const uint8_t *stored, size_t slen, const uint8_t *p,
                    size_t plen)
{
    volatile uint8_t acc = (uint8_t)(slen != plen);
    size_t i;

    for (i = 0; i < slen; i++)
        acc |= (uint8_t)(stored[i] ^ (i < plen ? p[i] : (uint8_t)~stored[i]));
    return acc == 0;
}

/* The entry holding token tok, or -1. Every entry is compared, whatever
 * matched, so the time does not say which one did. */
static long table_find(const struct auth_table *t, const uint8_t *tok,
                       size_t len)
{
    long found = -1;
    size_t i;

    for (i = 0; t != NULL && i < t->n; i++) {
        int eq = ct_equal(t->e[i].tok, t->e[i].len, tok, len);
        found = eq ? (long)i : found;
    }
    return found;
}

static const char *role_name(int role)
{
    return role == KEEL_ROLE_ADMIN ? "admin"
           : role == KEEL_ROLE_CLIENT ? "client"
                                      : "none";
}

/* Parses one line (NUL-terminated, no newline) into e. Returns 0, 1 for a
 * blank or comment line, -1 with the reason in why. */
static int parse_line(char *line, struct auth_entry *e, char *why,
                      size_t wlen)
{
    char *f[4], *p = line;
    int nf = 0;
    size_t tl;

    while (nf < 4) {
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (*p == '\0')
            break;
        if (nf == 0 && *p == '#')
            return 1;
        f[nf++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\r')
            p++;
        if (*p != '\0')
            *p++ = '\0';
    }
    if (nf == 0)
        return 1;
    if (nf == 4) {
        snprintf(why, wlen, "more than three fields (TOKEN ROLE [TYPES])");
        return -1;
    }
    if (nf < 2) {
        snprintf(why, wlen, "no role (expected TOKEN ROLE [TYPES])");
        return -1;
    }
    tl = strlen(f[0]);
    if (tl < KEEL_AUTH_TOKEN_MIN || tl > KEEL_AUTH_TOKEN_MAX) {
        snprintf(why, wlen, "a token is %d to %d characters, this one %zu",
                 KEEL_AUTH_TOKEN_MIN, KEEL_AUTH_TOKEN_MAX, tl);
        return -1;
    }
    {
        size_t i;
        for (i = 0; i < tl; i++)
            if ((unsigned char)f[0][i] < 0x21 ||
                (unsigned char)f[0][i] > 0x7e) {
                snprintf(why, wlen, "a token is printable ASCII");
                return -1;
            }
    }
    memset(e, 0, sizeof *e);
    memcpy(e->tok, f[0], tl);
    e->len = tl;
    if (strcmp(f[1], "client") == 0)
        e->role = KEEL_ROLE_CLIENT;
    else if (strcmp(f[1], "admin") == 0)
        e->role = KEEL_ROLE_ADMIN;
    else if (strlen(f[1]) >= KEEL_AUTH_TOKEN_MIN) {
        /* Not echoed: so long a word is more likely a token of the next
         * line, its newline lost, than a mistyped role. */
        snprintf(why, wlen,
                 "unknown role (a word of %zu characters where client or "
                 "admin goes: a token whose line break is missing?)",
                 strlen(f[1]));
        return -1;
    } else {
        snprintf(why, wlen, "unknown role '%s' (client or admin)", f[1]);
        return -1;
    }
    if (nf == 3) {
        const char *s = f[2];
        if (e->role == KEEL_ROLE_ADMIN) {
            snprintf(why, wlen,
                     "an admin token may call every type: a type list is "
                     "for client tokens");
            return -1;
        }
        while (*s != '\0') {
            const char *c = strchr(s, ',');
            size_t l = c ? (size_t)(c - s) : strlen(s);
            if (!valid_type_name(s, l) || (c != NULL && c[1] == '\0')) {
                snprintf(why, wlen,
                         "bad actor type list '%.64s' (NAME[,NAME...])",
                         f[2]);
                return -1;
            }
            s += l + (c != NULL);
        }
        e->types = strdup(f[2]);
        if (e->types == NULL) {
            snprintf(why, wlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* Reads and checks the token file. On error *out is NULL and errbuf says
 * why, naming the file (and the line). */
static int table_load(const char *path, struct auth_table **out,
                      char *errbuf, size_t errlen)
{
    struct auth_table *t;
    struct stat st;
    char *buf = NULL, *line, *next;
    size_t cap = 0, got = 0;
    unsigned lineno = 0;
    int fd, rc = 0;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        /* A path that names no file keeld may read: the configuration's
         * error, not the storage's. */
        snprintf(errbuf, errlen, "auth tokens file %s: %s", path,
                 strerror(errno));
        return KEEL_EINVAL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(errbuf, errlen, "auth tokens file %s: not a regular file",
                 path);
        close(fd);
        return KEEL_EINVAL;
    }
    /* Like ssh with a private key: a secret others can read (or change)
     * is refused, not used. */
    if (st.st_mode & (S_IRWXO | S_IWGRP)) {
        snprintf(errbuf, errlen,
                 "auth tokens file %s: permissions %04o are too open (it "
                 "must not be readable or writable by others, nor writable "
                 "by its group): chmod 600 %s",
                 path, (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return KEEL_EINVAL;
    }
    if ((uint64_t)st.st_size > TOKEN_FILE_MAX) {
        snprintf(errbuf, errlen, "auth tokens file %s: larger than %u bytes",
                 path, TOKEN_FILE_MAX);
        close(fd);
        return KEEL_EINVAL;
    }
    cap = (size_t)st.st_size + 1;
    buf = malloc(cap);
    if (buf == NULL) {
        close(fd);
        return KEEL_ENOMEM;
    }
    for (;;) {
        ssize_t r = read(fd, buf + got, cap - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(errbuf, errlen, "auth tokens file %s: %s", path,
                     strerror(errno));
            close(fd);
            free(buf);
            return KEEL_EIO;
        }
        if (r == 0)
            break;
        got += (size_t)r;
        if (got == cap - 1)
            break; /* grew since fstat: what fstat saw is what counts */
    }
    close(fd);
    buf[got] = '\0';
    if (memchr(buf, '\0', got) != NULL) {
        snprintf(errbuf, errlen, "auth tokens file %s: holds a NUL byte",
                 path);
        free(buf);
        return KEEL_EINVAL;
    }
    t = calloc(1, sizeof *t);
    if (t == NULL) {
        free(buf);
        return KEEL_ENOMEM;
    }
    for (line = buf; line != NULL && *line != '\0'; line = next) {
        struct auth_entry e, *ne;
        char why[160];
        int pr;
        size_t i;

        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        lineno++;
        pr = parse_line(line, &e, why, sizeof why);
        if (pr == 1)
            continue;
        if (pr < 0) {
            snprintf(errbuf, errlen, "auth tokens file %s line %u: %s", path,
                     lineno, why);
            rc = KEEL_EINVAL;
            break;
        }
        e.line = lineno;
        for (i = 0; i < t->n; i++)
            if (t->e[i].len == e.len && memcmp(t->e[i].tok, e.tok, e.len) == 0)
                break;
        if (i < t->n) {
            snprintf(errbuf, errlen,
                     "auth tokens file %s line %u: the same token as line %u",
                     path, lineno, t->e[i].line);
            free(e.types);
            rc = KEEL_EINVAL;
            break;
        }
        ne = realloc(t->e, (t->n + 1) * sizeof *t->e);
        if (ne == NULL) {
            free(e.types);
            rc = KEEL_ENOMEM;
            snprintf(errbuf, errlen, "out of memory");
            break;
        }
        t->e = ne;
        t->e[t->n++] = e;
        memset(e.tok, 0, sizeof e.tok);
    }
    memset(buf, 0, got);
    free(buf);
    if (rc != 0) {
        table_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int keel__auth_tokens_check(const char *path, char *errbuf, size_t errlen)
{
    struct auth_table *t;
    int rc = table_load(path, &t, errbuf, errlen);

    if (rc == 0)
        table_free(t);
    return rc;
}

/* ------------------------------------------------------------ lifecycle */

int keel__auth_create(keel_node *n, const char *path, keel_auth **out,
                      char *errbuf, size_t errlen)
{
    keel_auth *a = calloc(1, sizeof *a);
    int rc;

    if (a == NULL)
        return KEEL_ENOMEM;
    a->n = n;
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->mmu, NULL);
    pthread_mutex_init(&a->lmu, NULL);
    a->next_gen = 1;
    a->cluster = n->opts.zk_hosts != NULL;
    a->certs = n->opts.tls_cert != NULL;
    a->members_gen = 1;
    a->conn_fails_max = n->opts.auth_conn_fails != 0
                            ? n->opts.auth_conn_fails
                            : KEEL_AUTH_CONN_FAILS;
    if (a->conn_fails_max > UINT8_MAX)
        a->conn_fails_max = UINT8_MAX; /* keel_auth_conn.fails */
    a->addr_fails_max = n->opts.auth_addr_fails != 0
                            ? n->opts.auth_addr_fails
                            : KEEL_AUTH_ADDR_FAILS;
    a->window_ns = (uint64_t)(n->opts.auth_fail_window_s != 0
                                  ? n->opts.auth_fail_window_s
                                  : KEEL_AUTH_FAIL_WINDOW_S) *
                   1000000000ull;
    a->slots = calloc(ADDR_SLOTS, sizeof *a->slots);
    if (a->slots == NULL) {
        rc = KEEL_ENOMEM;
        goto err_after_alloc;
    }
    if (path != NULL) {
        a->path = strdup(path);
        if (a->path == NULL) {
            rc = KEEL_ENOMEM;
            goto err_after_alloc;
        }
        rc = table_load(path, &a->table, errbuf, errlen);
        if (rc != 0)
            goto err_after_alloc;
        a->table->gen = a->next_gen++;
        if (a->table->n == 0)
            keel_warn("auth tokens file %s holds no token: only PING and "
                      "node connections are served",
                      path);
        else
            keel_info("auth tokens: %zu loaded from %s", a->table->n, path);
    }
    *out = a;
    return 0;

err_after_alloc:
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->mmu);
    pthread_mutex_destroy(&a->lmu);
    free(a->slots);
    free(a->path);
    free(a);
    return rc;
}

void keel__auth_destroy(keel_auth *a)
{
    if (a == NULL)
        return;
    table_free(a->table);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->mmu);
    pthread_mutex_destroy(&a->lmu);
    free(a->members);
    free(a->slots);
    free(a->path);
    free(a);
}

int keel__auth_enabled(const keel_auth *a)
{
    return a != NULL && (a->path != NULL || a->certs);
}

int keel__auth_reload(keel_auth *a)
{
    struct auth_table *t, *old;
    char err[512];
    int rc;

    if (a == NULL || a->path == NULL)
        return 0;
    rc = table_load(a->path, &t, err, sizeof err);
    if (rc != 0) {
        keel_error("auth tokens: reload failed, keeping the %zu tokens "
                   "loaded before: %s",
                   a->table->n, err);
        return rc;
    }
    pthread_mutex_lock(&a->mu);
    old = a->table;
    t->gen = a->next_gen++;
    a->table = t;
    pthread_mutex_unlock(&a->mu);
    table_free(old);
    keel_info("auth tokens: reloaded %zu from %s", t->n, a->path);
    return 0;
}

/* ---------------------------------------------------------------- rules */

static void count_refusal(keel_auth *a, int code)
{
    if (code == KEEL_EUNAUTH)
        __atomic_fetch_add(&a->n->stats.auth_refused_unauth, 1,
                           __ATOMIC_RELAXED);
    else if (code == KEEL_EDENIED)
        __atomic_fetch_add(&a->n->stats.auth_refused_denied, 1,
                           __ATOMIC_RELAXED);
}

/* Anonymous again, but what the connection failed stays counted. */
static void conn_clear(keel_auth_conn *ac)
{
    uint8_t fails = ac->fails;

    memset(ac, 0, sizeof *ac);
    ac->fails = fails;
}

/* --------------------------------------------------- members (cluster) */

static int members_has(const keel_auth *a, const char *name)
{
    size_t i;

    for (i = 0; i < a->nmembers; i++)
        if (strcmp(a->members[i], name) == 0)
            return 1;
    return 0;
}

void keel__auth_set_members(keel_auth *a, const char *const *names,
                            size_t n)
{
    char (*list)[KEEL_AUTH_NAME_MAX + 1] = NULL;
    size_t i, k = 0;

    if (n > 0 && (list = calloc(n, sizeof *list)) == NULL) {
        /* The old list stays: better a member that left for a while
         * longer than every member refused. */
        keel_error("auth: out of memory for the member list; the previous "
                   "one stays");
        return;
    }
    for (i = 0; i < n; i++)
        if (names[i] != NULL && strlen(names[i]) <= KEEL_AUTH_NAME_MAX)
            strcpy(list[k++], names[i]);
    pthread_mutex_lock(&a->mmu);
    free(a->members);
    a->members = list;
    a->nmembers = k;
    __atomic_store_n(&a->members_gen, a->members_gen + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&a->mmu);
}

int keel__auth_peer(keel_auth *a, keel_auth_conn *ac)
{
    uint64_t gen;

    if (ac->kind != KEEL_AUTH_NODE)
        return 0;
    if (!a->cluster)
        return 1; /* standalone: no membership to be part of */
    gen = __atomic_load_n(&a->members_gen, __ATOMIC_ACQUIRE);
    if (gen == 1)
        /* No view yet (this node has not joined): it cannot tell members
         * from others, and its peers must be able to hand it what it will
         * own (it holds forwarded calls until then). Judged from the
         * first view on. */
        return 1;
    if (ac->member_gen != gen) {
        pthread_mutex_lock(&a->mmu);
        ac->member = (uint8_t)members_has(a, ac->name);
        ac->member_gen = a->members_gen;
        pthread_mutex_unlock(&a->mmu);
    }
    return ac->member;
}

/* A node identity's membership, for a caller that may not cache it
 * (HTTP: const, other thread). */
static int node_is_member(keel_auth *a, const keel_auth_conn *ac)
{
    int m;

    if (!a->cluster ||
        __atomic_load_n(&a->members_gen, __ATOMIC_ACQUIRE) == 1)
        return 1; /* no view yet: as keel__auth_peer */
    pthread_mutex_lock(&a->mmu);
    m = members_has(a, ac->name);
    pthread_mutex_unlock(&a->mmu);
    return m;
}

static int not_member(keel_auth *a, const keel_auth_conn *ac, char *errbuf,
                      size_t errlen)
{
    snprintf(errbuf, errlen,
             "not permitted: this connection's node %s is not a member of "
             "the cluster in this node's view (it left or was forgotten, "
             "or has not been seen yet); it did not run",
             ac->name[0] != '\0' ? ac->name : "(unnamed)");
    /* Counted with the refusals, but answered with a code of its own: a
     * node that joined a moment ago, or left, forwards calls that did
     * not run, and its route.c holds them and routes them again rather
     * than failing its clients' calls as if they were not permitted. */
    count_refusal(a, KEEL_EDENIED);
    return KEEL_ENOTMEMBER;
}

/* ------------------------------------------- failed attempts by address */

/* The key of a peer address; -1 for one that is not IP (a Unix socket:
 * no limit by address). */
static int addr_key_of(const struct sockaddr *sa, struct addr_key *k)
{
    memset(k, 0, sizeof *k);
    if (sa == NULL)
        return -1;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)sa;
        k->fam = 4;
        memcpy(k->b, &s4->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            k->fam = 4;
            memcpy(k->b, s6->sin6_addr.s6_addr + 12, 4);
        } else {
            k->fam = 6;
            memcpy(k->b, s6->sin6_addr.s6_addr, 8);
        }
        return 0;
    }
    return -1;
}

static int addr_key_of_fd(int fd, struct addr_key *k)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;

    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        return -1;
    return addr_key_of((const struct sockaddr *)&ss, k);
}

static void addr_key_str(const struct addr_key *k, char *buf, size_t cap)
{
    uint8_t b[16] = {0};
    char tmp[INET6_ADDRSTRLEN];

    if (k->fam == 4) {
        if (inet_ntop(AF_INET, k->b, buf, (socklen_t)cap) == NULL)
            snprintf(buf, cap, "?");
        return;
    }
    memcpy(b, k->b, 8);
    if (inet_ntop(AF_INET6, b, tmp, sizeof tmp) == NULL)
        snprintf(tmp, sizeof tmp, "?");
    snprintf(buf, cap, "%s/64", tmp);
}

/* The slot of k: its live one, or with create a fresh one (failures 0,
 * window from now) in place of a free or the oldest probed one; NULL
 * when k has none and create is 0. Under lmu. */
static struct addr_slot *addr_slot(keel_auth *a, const struct addr_key *k,
                                   uint64_t now, int create)
{
    struct addr_slot *free_slot = NULL, *oldest = NULL, *victim;
    uint32_t h = 2166136261u; /* FNV-1a */
    size_t i;

    h = (h ^ k->fam) * 16777619u;
    for (i = 0; i < sizeof k->b; i++)
        h = (h ^ k->b[i]) * 16777619u;
    for (i = 0; i < ADDR_PROBE; i++) {
        struct addr_slot *s = &a->slots[(h + i) % ADDR_SLOTS];
        int live = s->used && now - s->since_ns < a->window_ns;
        if (live && memcmp(&s->key, k, sizeof *k) == 0)
            return s;
        if (!live) {
            if (free_slot == NULL)
                free_slot = s;
        } else if (oldest == NULL || s->since_ns < oldest->since_ns) {
            oldest = s;
        }
    }
    if (!create)
        return NULL;
    victim = free_slot != NULL ? free_slot : oldest;
    memset(victim, 0, sizeof *victim);
    victim->key = *k;
    victim->used = 1;
    victim->since_ns = now;
    return victim;
}

/* Whether k has failed addr_fails_max times in its window; *left_s is
 * then how long the window still runs (whole seconds, rounded up). */
static int addr_blocked(keel_auth *a, const struct addr_key *k, uint64_t now,
                        unsigned *left_s)
{
    struct addr_slot *s;
    int blocked = 0;

    pthread_mutex_lock(&a->lmu);
    s = addr_slot(a, k, now, 0);
    if (s != NULL && s->fails >= a->addr_fails_max) {
        uint64_t left = a->window_ns - (now - s->since_ns);
        *left_s = (unsigned)((left + 999999999ull) / 1000000000ull);
        blocked = 1;
    }
    pthread_mutex_unlock(&a->lmu);
    return blocked;
}

static void addr_failed(keel_auth *a, const struct addr_key *k, uint64_t now)
{
    struct addr_slot *s;
    uint32_t fails;

    pthread_mutex_lock(&a->lmu);
    s = addr_slot(a, k, now, 1);
    fails = ++s->fails;
    pthread_mutex_unlock(&a->lmu);
    if (fails == a->addr_fails_max) {
        char addr[INET6_ADDRSTRLEN + 4];
        addr_key_str(k, addr, sizeof addr);
        keel_warn("auth: %u failed token attempts from %s within %llu s: its "
                  "token attempts are refused without being looked at until "
                  "that window ends",
                  fails, addr,
                  (unsigned long long)(a->window_ns / 1000000000ull));
    }
}

/* A token attempt refused unlooked-at: the message, counted. */
static int refuse_throttled(keel_auth *a, const struct addr_key *k,
                            unsigned left_s, const char *more, char *errbuf,
                            size_t errlen)
{
    char addr[INET6_ADDRSTRLEN + 4];

    addr_key_str(k, addr, sizeof addr);
    snprintf(errbuf, errlen,
             "not authenticated: too many failed token attempts from %s "
             "lately: its tokens are refused without being looked at for "
             "%u s more%s",
             addr, left_s, more);
    count_refusal(a, KEEL_EUNAUTH);
    __atomic_fetch_add(&a->n->stats.auth_throttled, 1, __ATOMIC_RELAXED);
    return KEEL_EUNAUTH;
}

/* A failed attempt on connection ac: a token identity is dropped, the
 * failure counted; the connection is closed at the limit. Returns the
 * words that say so, for the refusal's message. */
static const char *conn_failed(keel_auth *a, keel_auth_conn *ac)
{
    if (ac->source == KEEL_AUTH_SRC_TOKEN)
        conn_clear(ac);
    if (ac->fails < UINT8_MAX)
        ac->fails++;
    if (ac->fails != a->conn_fails_max)
        return "";
    __atomic_fetch_add(&a->n->stats.auth_conns_closed, 1, __ATOMIC_RELAXED);
    return "; too many failed attempts on this connection: it is closed";
}

int keel__auth_conn_spent(const keel_auth *a, const keel_auth_conn *ac)
{
    return keel__auth_enabled(a) && ac->fails >= a->conn_fails_max;
}

static int type_listed(const char *types, const void *type, size_t tlen)
{
    const char *s = types;

    while (*s != '\0') {
        const char *c = strchr(s, ',');
        size_t l = c ? (size_t)(c - s) : strlen(s);
        if (l == tlen && memcmp(s, type, tlen) == 0)
            return 1;
        if (c == NULL)
            break;
        s = c + 1;
    }
    return 0;
}

static const char *op_need(int op)
{
    switch (op) {
    case KEEL_AUTH_OP_READ:
        return "a token or a client certificate (any role)";
    case KEEL_AUTH_OP_CALL:
        return "a client or admin token or certificate";
    case KEEL_AUTH_OP_ADMIN:
        return "an admin token or an admin certificate";
    default:
        return "a node's connection";
    }
}

/* The rule itself, for an identity of kind/role with a type list (NULL:
 * all). 0, KEEL_EUNAUTH or KEEL_EDENIED with the reason. */
static int decide(int kind, int role, const char *types, int op,
                  const void *type, size_t tlen, char *errbuf, size_t errlen)
{
    if (op == KEEL_AUTH_OP_OPEN)
        return 0;
    if (kind == KEEL_AUTH_ANON) {
        snprintf(errbuf, errlen,
                 "not authenticated: this request needs %s; present one "
                 "first (keel --token-file or KEEL_TOKEN; over TLS, a "
                 "client certificate: keel --tls-cert, --tls-key); it did "
                 "not run",
                 op_need(op));
        return KEEL_EUNAUTH;
    }
    if (kind == KEEL_AUTH_NODE) {
        if (op == KEEL_AUTH_OP_ADMIN) {
            snprintf(errbuf, errlen,
                     "not permitted: a node's connection may not make admin "
                     "requests; use an admin token or certificate; it did not "
                     "run");
            return KEEL_EDENIED;
        }
        return 0;
    }
    switch (op) {
    case KEEL_AUTH_OP_READ:
        return 0;
    case KEEL_AUTH_OP_CALL:
        if (types != NULL && !type_listed(types, type, tlen)) {
            snprintf(errbuf, errlen,
                     "not permitted: this token may call actor types %.200s "
                     "only, not '%.*s'; it did not run",
                     types, (int)(tlen > 64 ? 64 : tlen),
                     (const char *)type);
            return KEEL_EDENIED;
        }
        return 0;
    case KEEL_AUTH_OP_ADMIN:
        if (role == KEEL_ROLE_ADMIN)
            return 0;
        snprintf(errbuf, errlen,
                 "not permitted: this request needs an admin token or an admin "
                 "certificate, and "
                 "this connection's role is %s; it did not run",
                 role_name(role));
        return KEEL_EDENIED;
    default:
        snprintf(errbuf, errlen,
                 "not permitted: only another node of the cluster may send "
                 "this; it did not run");
        return KEEL_EDENIED;
    }
}

/* Brings a token identity up to the current table: a reload may have
 * dropped its token (anonymous again) or changed its role. Under a->mu.
 * Returns its entry, or NULL. */
static const struct auth_entry *refresh(keel_auth *a, keel_auth_conn *ac)
{
    const struct auth_table *t = a->table;
    long i;

    if (ac->source != KEEL_AUTH_SRC_TOKEN || t == NULL)
        return NULL;
    if (ac->gen != t->gen) {
        i = table_find(t, ac->token, ac->token_len);
        if (i < 0) {
            conn_clear(ac);
            return NULL;
        }
        ac->gen = t->gen;
        ac->idx = (uint32_t)i;
        ac->role = (uint8_t)t->e[i].role;
    }
    return &t->e[ac->idx];
}

int keel__auth_token_held(keel_auth *a, const uint8_t *tok, size_t tlen)
{
    int held;

    if (a == NULL)
        return 0;
    pthread_mutex_lock(&a->mu);
    held = a->table != NULL && table_find(a->table, tok, tlen) >= 0;
    pthread_mutex_unlock(&a->mu);
    return held;
}

int keel__auth_token_withdrawn(keel_auth *a, keel_auth_conn *ac)
{
    int gone;

    if (!keel__auth_enabled(a) || ac->source != KEEL_AUTH_SRC_TOKEN)
        return 0;
    pthread_mutex_lock(&a->mu);
    gone = refresh(a, ac) == NULL;
    pthread_mutex_unlock(&a->mu);
    return gone;
}

int keel__auth_check(keel_auth *a, keel_auth_conn *ac, int op,
                     const void *type, size_t tlen, char *errbuf,
                     size_t errlen)
{
    const struct auth_entry *e;
    int rc;

    if (!keel__auth_enabled(a) || op == KEEL_AUTH_OP_OPEN)
        return 0;
    if (ac->kind == KEEL_AUTH_NODE && !keel__auth_peer(a, ac))
        return not_member(a, ac, errbuf, errlen);
    pthread_mutex_lock(&a->mu);
    e = refresh(a, ac);
    rc = decide(ac->kind, ac->role, e != NULL ? e->types : NULL, op, type,
                tlen, errbuf, errlen);
    pthread_mutex_unlock(&a->mu);
    if (rc != 0)
        count_refusal(a, rc);
    return rc;
}

/* The query an INFO body names: its first word. */
static int info_op(const uint8_t *body, size_t len)
{
    static const struct {
        const char *q;
        int op;
    } ops[] = {
        {"auth", KEEL_AUTH_OP_OPEN},    {"peer", KEEL_AUTH_OP_OPEN},
        {"nodes", KEEL_AUTH_OP_READ},   {"shards", KEEL_AUTH_OP_READ},
        {"where", KEEL_AUTH_OP_READ},   {"capabilities", KEEL_AUTH_OP_READ},
        {"drain", KEEL_AUTH_OP_ADMIN},  {"forget", KEEL_AUTH_OP_ADMIN},
    };
    const uint8_t *z = memchr(body, '\0', len);
    size_t wl = z ? (size_t)(z - body) : len, i;

    for (i = 0; i < sizeof ops / sizeof *ops; i++)
        if (strlen(ops[i].q) == wl && memcmp(ops[i].q, body, wl) == 0)
            return ops[i].op;
    /* An unknown query is answered EINVAL by the handler; asking needs an
     * identity all the same, so that a query added later is never open
     * by mistake: admin. */
    return KEEL_AUTH_OP_ADMIN;
}

int keel__auth_frame(keel_auth *a, keel_auth_conn *ac, const keel_frame *f,
                     char *errbuf, size_t errlen)
{
    if (!keel__auth_enabled(a))
        return 0;
    switch (f->kind) {
    case KEEL_FRAME_CALL:
    case KEEL_FRAME_CAST: {
        const uint8_t *body;
        size_t blen;
        uint32_t budget;
        keel_call_body cb;

        if (ac->kind == KEEL_AUTH_ANON)
            return keel__auth_check(a, ac, KEEL_AUTH_OP_CALL, NULL, 0,
                                    errbuf, errlen);
        if (keel_call_deadline_split(f, &budget, &body, &blen) != 0)
            return 0;
        if (f->flags & KEEL_FLAG_KEYED) {
            if (blen < KEEL_REQUEST_KEY_LEN)
                return 0;
            body += KEEL_REQUEST_KEY_LEN;
            blen -= KEEL_REQUEST_KEY_LEN;
        }
        if (f->flags & KEEL_FLAG_FROM) {
            keel_from from;
            long fl = keel_from_parse(body, blen, &from);
            if (fl < 0)
                return 0; /* answered EMALFORMED or EDENIED there */
            body += fl;
            blen -= (size_t)fl;
        }
        if (keel_call_body_parse(body, blen, &cb) != 0)
            return 0;
        return keel__auth_check(a, ac, KEEL_AUTH_OP_CALL, cb.type, cb.tlen,
                                errbuf, errlen);
    }
    case KEEL_FRAME_SUBSCRIBE: {
        /* Following an actor shows what a state read of it shows: the
         * same right, a call on its type. */
        keel_call_body cb;
        uint64_t since;

        if (ac->kind == KEEL_AUTH_ANON)
            return keel__auth_check(a, ac, KEEL_AUTH_OP_CALL, NULL, 0,
                                    errbuf, errlen);
        if (keel_subscribe_parse(f->body, f->body_len, &cb, &since) != 0)
            return 0; /* answered EMALFORMED or ELIMIT there */
        return keel__auth_check(a, ac, KEEL_AUTH_OP_CALL, cb.type, cb.tlen,
                                errbuf, errlen);
    }
    case KEEL_FRAME_UNSUBSCRIBE:
        /* A connection with no identity has nothing to end: refused as
         * its SUBSCRIBE would have been, not "no such subscription". */
        if (ac->kind == KEEL_AUTH_ANON)
            return keel__auth_check(a, ac, KEEL_AUTH_OP_CALL, NULL, 0,
                                    errbuf, errlen);
        return 0;
    case KEEL_FRAME_OBATCH:
        /* Calls on the types its messages name: a connection with no
         * identity is refused here, the others message by message
         * (net.c), each as the CAST it stands for. */
        if (ac->kind == KEEL_AUTH_ANON)
            return keel__auth_check(a, ac, KEEL_AUTH_OP_CALL, NULL, 0,
                                    errbuf, errlen);
        return 0;
    case KEEL_FRAME_STAT:
        return keel__auth_check(a, ac, KEEL_AUTH_OP_READ, NULL, 0, errbuf,
                                errlen);
    case KEEL_FRAME_INFO:
        return keel__auth_check(a, ac, info_op(f->body, f->body_len), NULL,
                                0, errbuf, errlen);
    case KEEL_FRAME_XFER:
    case KEEL_FRAME_REPL:
        return keel__auth_check(a, ac, KEEL_AUTH_OP_NODE, NULL, 0, errbuf,
                                errlen);
    default:
        return 0; /* PING; the kinds a server refuses anyway */
    }
}

int keel__auth_is_login(const keel_frame *f, const uint8_t **tok,
                        size_t *tlen)
{
    if (f->kind != KEEL_FRAME_INFO || f->body_len < 4 ||
        memcmp(f->body, "auth", 4) != 0 ||
        (f->body_len > 4 && f->body[4] != '\0'))
        return 0;
    *tok = f->body_len > 5 ? f->body + 5 : f->body + f->body_len;
    *tlen = f->body_len > 5 ? f->body_len - 5 : 0;
    return 1;
}

int keel__auth_login(keel_auth *a, keel_auth_conn *ac, int fd,
                     const uint8_t *tok, size_t tlen, char *reply,
                     size_t cap, size_t *rlen, char *errbuf, size_t errlen)
{
    const struct auth_entry *e;
    struct addr_key k;
    uint64_t now = 0;
    unsigned left_s;
    int have_addr;
    long i = -1;
    int w;

    if (!keel__auth_enabled(a)) {
        w = snprintf(reply, cap, "auth none\n");
        *rlen = w < 0 ? 0 : (size_t)w < cap ? (size_t)w : cap - 1;
        return 0;
    }
    have_addr = addr_key_of_fd(fd, &k) == 0;
    if (have_addr) {
        now = keel__now_ns();
        if (addr_blocked(a, &k, now, &left_s))
            return refuse_throttled(a, &k, left_s, conn_failed(a, ac),
                                    errbuf, errlen);
    }
    pthread_mutex_lock(&a->mu);
    if (tlen >= KEEL_AUTH_TOKEN_MIN && tlen <= KEEL_AUTH_TOKEN_MAX)
        i = table_find(a->table, tok, tlen);
    if (i < 0) {
        pthread_mutex_unlock(&a->mu);
        if (have_addr)
            addr_failed(a, &k, now);
        snprintf(errbuf, errlen,
                 "not authenticated: unknown token; the connection has no "
                 "token identity%s",
                 conn_failed(a, ac));
        count_refusal(a, KEEL_EUNAUTH);
        return KEEL_EUNAUTH;
    }
    e = &a->table->e[i];
    if (ac->source != KEEL_AUTH_SRC_CERT) {
        conn_clear(ac);
        ac->kind = KEEL_AUTH_CLIENT;
        ac->role = (uint8_t)e->role;
        ac->source = KEEL_AUTH_SRC_TOKEN;
        ac->gen = a->table->gen;
        ac->idx = (uint32_t)i;
        ac->token_len = (uint16_t)tlen;
        memcpy(ac->token, tok, tlen);
        snprintf(ac->name, sizeof ac->name, "token of line %u", e->line);
    }
    /* The reply names the identity the connection's requests run with:
     * a certificate's stays (docs/security.md), so a valid token on such
     * a connection is answered with the certificate's role and name,
     * not the token's, which would promise rights the connection does
     * not have. */
    if (ac->source == KEEL_AUTH_SRC_CERT)
        w = snprintf(reply, cap, "auth %s certificate %s\n",
                     ac->kind == KEEL_AUTH_NODE ? "node" : role_name(ac->role),
                     ac->name);
    else if (e->types != NULL)
        w = snprintf(reply, cap, "auth %s types %s\n", role_name(e->role),
                     e->types);
    else
        w = snprintf(reply, cap, "auth %s\n", role_name(e->role));
    pthread_mutex_unlock(&a->mu);
    *rlen = w < 0 ? 0 : (size_t)w < cap ? (size_t)w : cap - 1;
    return 0;
}

int keel__auth_peer_claim(keel_auth *a, keel_auth_conn *ac,
                          const uint8_t *body, size_t len, char *errbuf,
                          size_t errlen)
{
    char id[KEEL_AUTH_NAME_MAX + 1];
    size_t idl = len > 5 ? len - 5 : 0;

    if (ac->source == KEEL_AUTH_SRC_CERT) {
        if (ac->kind == KEEL_AUTH_NODE)
            return 0;
        snprintf(errbuf, errlen,
                 "not permitted: a client's certificate does not make a "
                 "node");
        count_refusal(a, KEEL_EDENIED);
        return KEEL_EDENIED;
    }
    /* body is "peer", or "peer" NUL ID. */
    if (idl > KEEL_AUTH_NAME_MAX ||
        (idl > 0 && memchr(body + 5, '\0', idl) != NULL)) {
        snprintf(errbuf, errlen,
                 "not permitted: a node's id is 1 to %d bytes of "
                 "[A-Za-z0-9._-]",
                 KEEL_AUTH_NAME_MAX);
        count_refusal(a, KEEL_EDENIED);
        return KEEL_EDENIED;
    }
    if (idl > 0)
        memcpy(id, body + 5, idl);
    id[idl] = '\0';
    if ((idl > 0 && !keel_name_valid(id, 0)) || (idl == 0 && a->cluster)) {
        snprintf(errbuf, errlen,
                 idl == 0 ? "not permitted: a node says which one it is: "
                            "INFO peer NUL NODE-ID"
                          : "not permitted: a node's id is 1 to %d bytes "
                            "of [A-Za-z0-9._-]",
                 KEEL_AUTH_NAME_MAX);
        count_refusal(a, KEEL_EDENIED);
        return KEEL_EDENIED;
    }
    if (!a->cluster && keel__auth_enabled(a)) {
        /* A standalone node has no peers: with access control on, the
         * claim would be a way around it (a node's connection may call
         * any actor and is never idle). */
        snprintf(errbuf, errlen,
                 "not permitted: a standalone node takes no node "
                 "connections");
        count_refusal(a, KEEL_EDENIED);
        return KEEL_EDENIED;
    }
    conn_clear(ac);
    ac->kind = KEEL_AUTH_NODE;
    ac->source = KEEL_AUTH_SRC_CLAIM;
    memcpy(ac->name, id, idl + 1);
    return 0;
}

int keel__auth_conn_set(keel_auth_conn *ac, int kind, int role,
                        const char *name)
{
    /* A longer name is refused rather than cut: cut, it could match
     * another node's id. */
    if (ac == NULL || name == NULL || name[0] == '\0' ||
        strlen(name) > KEEL_AUTH_NAME_MAX ||
        (kind != KEEL_AUTH_NODE && kind != KEEL_AUTH_CLIENT) ||
        (kind == KEEL_AUTH_CLIENT && role != KEEL_ROLE_CLIENT &&
         role != KEEL_ROLE_ADMIN))
        return KEEL_EINVAL;
    conn_clear(ac);
    ac->kind = (uint8_t)kind;
    ac->role = kind == KEEL_AUTH_CLIENT ? (uint8_t)role : KEEL_ROLE_NONE;
    ac->source = KEEL_AUTH_SRC_CERT;
    snprintf(ac->name, sizeof ac->name, "%s", name);
    return 0;
}

int keel__auth_conn_from_cert(keel_auth_conn *ac, const char *cn)
{
    static const struct {
        const char *prefix;
        int kind, role;
    } map[] = {
        {"node:", KEEL_AUTH_NODE, KEEL_ROLE_NONE},
        {"client:", KEEL_AUTH_CLIENT, KEEL_ROLE_CLIENT},
        {"admin:", KEEL_AUTH_CLIENT, KEEL_ROLE_ADMIN},
    };
    size_t i;

    if (cn == NULL)
        return KEEL_EDENIED;
    for (i = 0; i < sizeof map / sizeof *map; i++) {
        size_t pl = strlen(map[i].prefix);
        if (strncmp(cn, map[i].prefix, pl) == 0 && cn[pl] != '\0')
            return keel__auth_conn_set(ac, map[i].kind, map[i].role,
                                       cn + pl) == 0
                       ? 0
                       : KEEL_EDENIED;
    }
    return KEEL_EDENIED;
}

/* ----------------------------------------------------------------- HTTP */

const char *keel__auth_bearer(const char *authorization, size_t *len)
{
    const char *tok;
    size_t n;

    if (authorization == NULL ||
        strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    tok = authorization + 7;
    while (*tok == ' ')
        tok++;
    n = strlen(tok);
    while (n > 0 && (tok[n - 1] == ' ' || tok[n - 1] == '\t'))
        n--;
    *len = n;
    return tok;
}

int keel__auth_http(keel_auth *a, const keel_auth_conn *cert,
                    const char *authorization, const struct sockaddr *from,
                    int op, const void *type, size_t tlen, char *errbuf,
                    size_t errlen)
{
    const char *tok;
    struct addr_key k;
    uint64_t now = 0;
    unsigned left_s;
    int have_addr;
    size_t len;
    long i = -1;
    int rc;

    if (!keel__auth_enabled(a) || op == KEEL_AUTH_OP_OPEN)
        return 0;
    /* As on the wire, a certificate's identity is the one that counts: a
     * token beside it changes nothing. */
    if (cert != NULL && cert->source == KEEL_AUTH_SRC_CERT) {
        if (cert->kind == KEEL_AUTH_NODE && !node_is_member(a, cert))
            return not_member(a, cert, errbuf, errlen);
        rc = decide(cert->kind, cert->role, NULL, op, type, tlen, errbuf,
                    errlen);
        if (rc != 0)
            count_refusal(a, rc);
        return rc;
    }
    tok = keel__auth_bearer(authorization, &len);
    if (tok == NULL) {
        snprintf(errbuf, errlen,
                 "not authenticated: this request needs %s in an "
                 "'Authorization: Bearer TOKEN' header",
                 op_need(op));
        count_refusal(a, KEEL_EUNAUTH);
        return KEEL_EUNAUTH;
    }
    have_addr = addr_key_of(from, &k) == 0;
    if (have_addr) {
        now = keel__now_ns();
        if (addr_blocked(a, &k, now, &left_s))
            return refuse_throttled(a, &k, left_s, "", errbuf, errlen);
    }
    pthread_mutex_lock(&a->mu);
    if (len >= KEEL_AUTH_TOKEN_MIN && len <= KEEL_AUTH_TOKEN_MAX)
        i = table_find(a->table, (const uint8_t *)tok, len);
    if (i < 0) {
        pthread_mutex_unlock(&a->mu);
        if (have_addr)
            addr_failed(a, &k, now);
        snprintf(errbuf, errlen, "not authenticated: unknown token");
        count_refusal(a, KEEL_EUNAUTH);
        return KEEL_EUNAUTH;
    }
    rc = decide(KEEL_AUTH_CLIENT, a->table->e[i].role, a->table->e[i].types,
                op, type, tlen, errbuf, errlen);
    pthread_mutex_unlock(&a->mu);
    if (rc != 0)
        count_refusal(a, rc);
    return rc;
}

/* ------------------------------------------------------ secure by default */

int keel__auth_addr_is_loopback(const char *hostport)
{
    char host[256];
    const char *colon = hostport ? strrchr(hostport, ':') : NULL;
    struct addrinfo hints, *res = NULL, *ai;
    size_t hl;
    int all = 1;

    if (colon == NULL)
        return -1;
    hl = (size_t)(colon - hostport);
    if (hl >= 2 && hostport[0] == '[' && hostport[hl - 1] == ']') {
        hostport++;
        hl -= 2;
    }
    if (hl == 0)
        return 0; /* no host: every address */
    if (hl >= sizeof host)
        return -1;
    memcpy(host, hostport, hl);
    host[hl] = '\0';
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
        return -1; /* the listener will say what is wrong with it */
    for (ai = res; ai != NULL && all; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            const struct sockaddr_in *s = (const void *)ai->ai_addr;
            all = (ntohl(s->sin_addr.s_addr) >> 24) == 127;
        } else if (ai->ai_family == AF_INET6) {
            const struct sockaddr_in6 *s = (const void *)ai->ai_addr;
            all = IN6_IS_ADDR_LOOPBACK(&s->sin6_addr);
        } else {
            all = 0;
        }
    }
    freeaddrinfo(res);
    return all;
}

int keel__auth_exposure_check(const keel_node_options *o, int *insecure,
                              char *errbuf, size_t errlen)
{
    const char *why = NULL;
    char wbuf[320];

    *insecure = 0;
    if (o->zk_hosts != NULL)
        why = "it is a cluster node (--zk)";
    else if (o->listen != NULL &&
             keel__auth_addr_is_loopback(o->listen) == 0) {
        snprintf(wbuf, sizeof wbuf, "it listens on %s, beyond loopback",
                 o->listen);
        why = wbuf;
    } else if (o->http_listen != NULL &&
               keel__auth_addr_is_loopback(o->http_listen) == 0) {
        snprintf(wbuf, sizeof wbuf, "its HTTP face listens on %s, beyond "
                                    "loopback",
                 o->http_listen);
        why = wbuf;
    }
    if (why == NULL || o->auth_tokens != NULL || o->tls_cert != NULL)
        return 0;
    if (o->insecure) {
        *insecure = 1;
        keel_warn("INSECURE: %s and runs without credentials (--insecure): "
                  "anyone who can reach it may call any actor and drain or "
                  "forget nodes; give it --auth-tokens (docs/security.md)",
                  why);
        return 0;
    }
    snprintf(errbuf, errlen,
             "%s, so it needs credentials: --auth-tokens FILE "
             "(docs/security.md), or --insecure to run without them",
             why);
    return KEEL_EINVAL;
}
