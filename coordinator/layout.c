/* ZooKeeper paths of a cluster and the text formats of its small znodes. */
#include "coordinator/layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/addr.h"
#include "keel.h"

int keel_layout_init(keel_layout *l, const char *cluster)
{
    if (!keel_name_valid(cluster, 0))
        return KEEL_EINVAL;
    snprintf(l->root, sizeof l->root, "/keel/%s", cluster);
    return 0;
}

char *keel_layout_path(const keel_layout *l, char *buf, const char *a,
                       const char *b, const char *c)
{
    snprintf(buf, KEEL_ZK_PATH_MAX, "%s/%s%s%s%s%s", l->root, a,
             b ? "/" : "", b ? b : "", c ? "/" : "", c ? c : "");
    return buf;
}

/* The line at *p (up to '\n') must start with key and a space; returns
 * the value's start and length, and advances *p past the line. */
static const char *field(const char **p, const char *end, const char *key,
                         size_t *vlen)
{
    size_t kl = strlen(key);
    const char *nl, *v;

    if ((size_t)(end - *p) < kl + 1 || memcmp(*p, key, kl) != 0 ||
        (*p)[kl] != ' ')
        return NULL;
    v = *p + kl + 1;
    nl = memchr(v, '\n', (size_t)(end - v));
    if (nl == NULL)
        return NULL;
    *vlen = (size_t)(nl - v);
    *p = nl + 1;
    return v;
}

static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
        return KEEL_ECORRUPT;
    for (i = 0; i < len; i++) {
        unsigned d;
        if (s[i] < '0' || s[i] > '9')
            return KEEL_ECORRUPT;
        d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return KEEL_ECORRUPT;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

size_t keel_config_format(char *buf, size_t cap, uint32_t shards,
                          int replicas)
{
    int n;

    if (replicas > 1)
        n = snprintf(buf, cap, "keel-cluster 1\nshards %u\nreplicas %d\n",
                     shards, replicas);
    else
        n = snprintf(buf, cap, "keel-cluster 1\nshards %u\n", shards);
    return n < 0 ? 0 : (size_t)n;
}

int keel_config_parse(const void *data, size_t len, uint32_t *shards,
                      int *replicas)
{
    const char *p = data, *end = p + len, *v;
    uint64_t x;
    size_t vl;

    if (data == NULL)
        return KEEL_ECORRUPT;
    v = field(&p, end, "keel-cluster", &vl);
    if (v == NULL || vl != 1 || v[0] != '1')
        return KEEL_ECORRUPT;
    v = field(&p, end, "shards", &vl);
    if (v == NULL || parse_u64(v, vl, &x) != 0 || x == 0 ||
        x > KEEL_MAP_MAX_SHARDS)
        return KEEL_ECORRUPT;
    *shards = (uint32_t)x;
    x = 1;
    if (p != end) {
        /* Optional, canonical: present only for more than one replica. */
        uint64_t r;
        v = field(&p, end, "replicas", &vl);
        if (v == NULL || parse_u64(v, vl, &r) != 0 || r < 2 ||
            r > KEEL_MAP_MAX_REPLICAS)
            return KEEL_ECORRUPT;
        x = r;
    }
    if (p != end)
        return KEEL_ECORRUPT;
    if (replicas != NULL)
        *replicas = (int)x;
    return 0;
}

size_t keel_epoch_format(char *buf, size_t cap, uint64_t epoch)
{
    int n = snprintf(buf, cap, "%llu", (unsigned long long)epoch);

    return n < 0 ? 0 : (size_t)n;
}

int keel_epoch_parse(const void *data, size_t len, uint64_t *epoch)
{
    if (data == NULL)
        return KEEL_ECORRUPT;
    return parse_u64(data, len, epoch);
}

void keel_member_clear(keel_member *m)
{
    size_t i;

    for (i = 0; i < m->ncaps; i++)
        free(m->caps[i]);
    m->ncaps = 0;
}

/* The addr field's bytes: printable, no blank. Whether they are also
 * HOST:PORT is a separate question (keel_addr_valid). */
static int addr_field_ok(const char *a, size_t len)
{
    size_t i;

    if (len == 0 || len > KEEL_ADDR_MAX)
        return 0;
    for (i = 0; i < len; i++)
        if (a[i] <= ' ' || a[i] > '~')
            return 0;
    return 1;
}

int keel_member_format(const char *addr, const char *const *caps,
                       size_t ncaps, uint32_t session_timeout_ms, char **out,
                       size_t *len)
{
    size_t i, n;
    char *buf, *p;

    if (addr == NULL || strlen(addr) > KEEL_ADDR_MAX ||
        !keel_addr_valid(addr, strlen(addr), 0) ||
        ncaps > KEEL_MAP_MAX_CAPS)
        return KEEL_EINVAL;
    n = strlen(addr) + 64;
    for (i = 0; i < ncaps; i++) {
        if (!keel_name_valid(caps[i], 0))
            return KEEL_EINVAL;
        n += strlen(caps[i]) + 1;
    }
    buf = malloc(n);
    if (buf == NULL)
        return KEEL_ENOMEM;
    p = buf + sprintf(buf, "addr %s\ncaps ", addr);
    for (i = 0; i < ncaps; i++)
        p += sprintf(p, "%s%s", i ? "," : "", caps[i]);
    *p++ = '\n';
    if (session_timeout_ms > 0)
        p += sprintf(p, "session_timeout %u\n", session_timeout_ms);
    *out = buf;
    *len = (size_t)(p - buf);
    return 0;
}

int keel_caps_declare(char *const *caps, size_t n, const char *cap)
{
    size_t i;

    if (cap == NULL || cap[0] == '\0')
        return 1;
    for (i = 0; i < n; i++)
        if (strcmp(caps[i], cap) == 0)
            return 1;
    return 0;
}

int keel_member_parse(const void *data, size_t len, keel_member *m)
{
    const char *p = data, *end = p + len, *v, *c, *caps;
    keel_member tmp;
    size_t vl, capslen;

    if (data == NULL)
        return KEEL_ECORRUPT;
    memset(&tmp, 0, sizeof tmp);
    v = field(&p, end, "addr", &vl);
    if (v == NULL || !addr_field_ok(v, vl))
        return KEEL_ECORRUPT;
    memcpy(tmp.addr, v, vl);
    tmp.addr[vl] = '\0';
    tmp.addr_bad = !keel_addr_valid(v, vl, 0);
    v = field(&p, end, "caps", &vl);
    if (v == NULL)
        return KEEL_ECORRUPT;
    caps = v;
    capslen = vl;
    if (p != end && (size_t)(end - p) > 16 &&
        memcmp(p, "session_timeout ", 16) == 0) {
        /* Optional: written by nodes that publish their session's
         * negotiated timeout (older ones do not). */
        const char *t;
        size_t tl;
        uint64_t ms;
        t = field(&p, end, "session_timeout", &tl);
        if (t == NULL || parse_u64(t, tl, &ms) != 0 || ms == 0 ||
            ms > UINT32_MAX)
            return KEEL_ECORRUPT;
        tmp.session_timeout_ms = (uint32_t)ms;
    }
    if (p != end && (size_t)(end - p) > 6 && memcmp(p, "store ", 6) == 0) {
        /* Optional: the identity of the node's store (members of older
         * versions have none). Exactly 32 lowercase hex digits. */
        size_t i;
        v = field(&p, end, "store", &vl);
        if (v == NULL || vl != sizeof tmp.store - 1)
            return KEEL_ECORRUPT;
        for (i = 0; i < vl; i++)
            if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f')))
                return KEEL_ECORRUPT;
        memcpy(tmp.store, v, vl);
        tmp.store[vl] = '\0';
    }
    if (p != end && (size_t)(end - p) >= 11 &&
        memcmp(p, "insecure 1\n", 11) == 0) {
        /* Optional: the node runs without credentials (--insecure);
         * written only by such nodes. */
        p += 11;
        tmp.insecure = 1;
    }
    if (p != end) {
        /* Optional last line: the node is leaving (graceful leave). */
        const char *l;
        size_t ll;
        const char *after = p;
        l = field(&after, end, "leaving", &ll);
        if (l == NULL || after != end || ll != 1 || l[0] != '1')
            return KEEL_ECORRUPT;
        tmp.leaving = 1;
    }
    v = caps;
    vl = capslen;
    c = v;
    while (c < v + vl) {
        const char *comma = memchr(c, ',', (size_t)(v + vl - c));
        size_t cl = comma ? (size_t)(comma - c) : (size_t)(v + vl - c);
        char *cap;
        /* A NUL inside would pass keel_name_valid(), which sees only the
         * C string before it, and the bytes after it would be dropped. */
        if (cl == 0 || cl > KEEL_NAME_MAX || tmp.ncaps == KEEL_MAP_MAX_CAPS ||
            memchr(c, '\0', cl) != NULL) {
            keel_member_clear(&tmp);
            return KEEL_ECORRUPT;
        }
        cap = malloc(cl + 1);
        if (cap == NULL) {
            keel_member_clear(&tmp);
            return KEEL_ENOMEM;
        }
        memcpy(cap, c, cl);
        cap[cl] = '\0';
        tmp.caps[tmp.ncaps++] = cap;
        if (!keel_name_valid(cap, 0)) {
            keel_member_clear(&tmp);
            return KEEL_ECORRUPT;
        }
        c += cl + (comma ? 1 : 0);
        if (comma != NULL && c == v + vl) { /* trailing comma */
            keel_member_clear(&tmp);
            return KEEL_ECORRUPT;
        }
    }
    keel_member_clear(m);
    memcpy(m->addr, tmp.addr, sizeof m->addr);
    m->addr_bad = tmp.addr_bad;
    memcpy(m->caps, tmp.caps, sizeof tmp.caps[0] * tmp.ncaps);
    m->ncaps = tmp.ncaps;
    m->leaving = tmp.leaving;
    m->insecure = tmp.insecure;
    memcpy(m->store, tmp.store, sizeof m->store);
    m->session_timeout_ms = tmp.session_timeout_ms;
    return 0;
}

int keel_member_mark_leaving(const void *data, size_t len, char **out,
                             size_t *out_len)
{
    keel_member m;
    char *buf;
    int rc;

    memset(&m, 0, sizeof m);
    if ((rc = keel_member_parse(data, len, &m)) != 0)
        return rc;
    keel_member_clear(&m);
    if (m.leaving) {
        *out = NULL;
        *out_len = 0;
        return KEEL_EEXIST;
    }
    if ((buf = malloc(len + sizeof "leaving 1\n")) == NULL)
        return KEEL_ENOMEM;
    memcpy(buf, data, len);
    memcpy(buf + len, "leaving 1\n", sizeof "leaving 1\n" - 1);
    *out = buf;
    *out_len = len + sizeof "leaving 1\n" - 1;
    return 0;
}
