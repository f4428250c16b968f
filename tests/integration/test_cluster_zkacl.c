/* ZooKeeper credentials and ACLs, end to end (real ZooKeeper with a
 * superDigest, real keeld processes; docs/security.md, "ZooKeeper"):
 *  - a cluster whose nodes run with --zk-auth works, and an anonymous
 *    ZooKeeper client may read its znodes but not change, delete or add
 *    any; their ACLs are exactly [digest:<identity> all, world read];
 *  - a node with other credentials, or none, refuses to start (exit code,
 *    a message naming the cluster's path and --zk-auth), and the cluster
 *    goes on;
 *  - a credentials file readable by others, or malformed, is refused at
 *    start, naming the file;
 *  - a cluster made without credentials moves to ACLs as the docs say
 *    (setAcl on every znode), after which its nodes run with --zk-auth.
 * The test's own ZooKeeper client is the single-threaded C library, made
 * synchronous here by driving each request to its answer (bounded). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include "cluster.h"
#include "proc.h"
#include "testutil.h"
#include "zk.h"

/* The cluster's identity and another one. The digest ZooKeeper keeps is
 * base64(SHA-1("user:password")), e.g.
 * printf 'alice:s3cret' | openssl sha1 -binary | base64 */
#define ALICE "alice:s3cret"
#define ALICE_ID "alice:uLxpHc/uhT86OXPoSjJTp1M8CJY="
#define BOB "bob:other"
/* The servers' superDigest (zk.sh, ZK_SUPER_DIGEST): super:adminpw. */
#define SUPER "super:adminpw"
#define SUPER_DIGEST "super:YW0smZw1fP8Plz4LetS54OLjO/8="

static tu_cluster fx;

static void setup(void)
{
    tu_cluster_setup(&fx, "czkacl", "za");
}

static void teardown(void)
{
    tu_cluster_teardown(&fx, SIGKILL);
}

/* ------------------------------------------- a synchronous ZK client */

typedef struct zsync {
    int done, rc;
    struct ACL_vector acl;
    struct Stat st;
} zsync;

static void zs_void(int rc, const void *data)
{
    zsync *z = (zsync *)data;
    z->rc = rc;
    z->done = 1;
}

static void zs_stat(int rc, const struct Stat *st, const void *data)
{
    zsync *z = (zsync *)data;
    if (st != NULL)
        z->st = *st;
    zs_void(rc, data);
}

static void zs_data(int rc, const char *v, int len, const struct Stat *st,
                    const void *data)
{
    (void)v;
    (void)len;
    zs_stat(rc, st, data);
}

static void zs_string(int rc, const char *v, const void *data)
{
    (void)v;
    zs_void(rc, data);
}

static void zs_acl(int rc, struct ACL_vector *acl, struct Stat *st,
                   const void *data)
{
    zsync *z = (zsync *)data;
    if (rc == ZOK && acl != NULL) {
        /* The library frees its copy after the completion: keep ours. */
        int32_t i;
        z->acl.count = acl->count;
        z->acl.data = calloc((size_t)acl->count + 1, sizeof *z->acl.data);
        for (i = 0; i < acl->count; i++) {
            z->acl.data[i].perms = acl->data[i].perms;
            z->acl.data[i].id.scheme = strdup(acl->data[i].id.scheme);
            z->acl.data[i].id.id = strdup(acl->data[i].id.id);
        }
    }
    zs_stat(rc, st, data);
}

static void acl_free(struct ACL_vector *v)
{
    int32_t i;

    for (i = 0; i < v->count; i++) {
        free(v->data[i].id.scheme);
        free(v->data[i].id.id);
    }
    free(v->data);
    v->data = NULL;
    v->count = 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Drives the client until *flag is set (or, with flag NULL, until it is
 * connected); at most 15 s. 0 or -1. */
static int drive(zhandle_t *zh, const int *flag)
{
    double deadline = now_s() + 15;

    while (now_s() < deadline) {
        struct timeval tv;
        struct pollfd p;
        int fd = -1, interest = 0, events = 0, ms;

        if (flag != NULL ? *flag : zoo_state(zh) == ZOO_CONNECTED_STATE)
            return 0;
        if (zookeeper_interest(zh, &fd, &interest, &tv) != ZOK)
            return -1;
        ms = (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000);
        if (ms > 100 || ms < 0)
            ms = 100;
        p.fd = fd;
        p.events = (short)(((interest & ZOOKEEPER_READ) ? POLLIN : 0) |
                           ((interest & ZOOKEEPER_WRITE) ? POLLOUT : 0));
        p.revents = 0;
        if (fd >= 0 && poll(&p, 1, ms) > 0) {
            if (p.revents & (POLLIN | POLLHUP | POLLERR))
                events |= ZOOKEEPER_READ;
            if (p.revents & POLLOUT)
                events |= ZOOKEEPER_WRITE;
        } else if (fd < 0) {
            poll(NULL, 0, ms);
        }
        zookeeper_process(zh, events);
    }
    return -1;
}

/* A connected session, authenticated with `cred` ("user:password") when
 * it is not NULL. */
static zhandle_t *zc_open(const char *cred)
{
    zhandle_t *zh;

    zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
    zh = zookeeper_init(fx.zk.hosts, NULL, 10000, NULL, NULL, 0);
    ck_assert_ptr_nonnull(zh);
    ck_assert_msg(drive(zh, NULL) == 0, "test client did not connect");
    if (cred != NULL) {
        zsync z = {0};
        ck_assert_int_eq(zoo_add_auth(zh, "digest", cred, (int)strlen(cred),
                                      zs_void, &z),
                         ZOK);
        ck_assert_int_eq(drive(zh, &z.done), 0);
        ck_assert_int_eq(z.rc, ZOK);
    }
    return zh;
}

#define ZC_END(zh, z, call)                                                 \
    do {                                                                    \
        int rc_ = (call);                                                   \
        if (rc_ != ZOK)                                                     \
            return rc_;                                                     \
        ck_assert_msg(drive(zh, &(z)->done) == 0, "no answer in 15 s");     \
        return (z)->rc;                                                     \
    } while (0)

static int zc_set(zhandle_t *zh, const char *path)
{
    zsync z = {0};
    ZC_END(zh, &z, zoo_aset(zh, path, "x", 1, -1, zs_stat, &z));
}

static int zc_delete(zhandle_t *zh, const char *path)
{
    zsync z = {0};
    ZC_END(zh, &z, zoo_adelete(zh, path, -1, zs_void, &z));
}

static int zc_create(zhandle_t *zh, const char *path)
{
    zsync z = {0};
    ZC_END(zh, &z, zoo_acreate(zh, path, "x", 1, &ZOO_OPEN_ACL_UNSAFE, 0,
                               zs_string, &z));
}

static int zc_get(zhandle_t *zh, const char *path)
{
    zsync z = {0};
    ZC_END(zh, &z, zoo_aget(zh, path, 0, zs_data, &z));
}

static int zc_get_acl(zhandle_t *zh, const char *path, struct ACL_vector *out,
                      int32_t *aversion)
{
    zsync z = {0};
    int rc = zoo_aget_acl(zh, path, zs_acl, &z);

    if (rc != ZOK)
        return rc;
    ck_assert_msg(drive(zh, &z.done) == 0, "no answer in 15 s");
    *out = z.acl;
    if (aversion != NULL)
        *aversion = z.st.aversion;
    return z.rc;
}

static int zc_set_acl(zhandle_t *zh, const char *path, int version,
                      struct ACL_vector *acl)
{
    zsync z = {0};
    ZC_END(zh, &z, zoo_aset_acl(zh, path, version, acl, zs_void, &z));
}

/* Every child path of `path` (depth first, children before their parent)
 * into paths[*n...]; at most cap in all. */
static void zc_tree(zhandle_t *zh, const char *path, char **paths, int *n,
                    int cap);

typedef struct zkids {
    int done, rc;
    int count;
    char **names;
} zkids;

static void zs_kids(int rc, const struct String_vector *v, const void *data)
{
    zkids *k = (zkids *)data;
    int32_t i;

    k->rc = rc;
    if (rc == ZOK && v != NULL) {
        k->count = v->count;
        k->names = calloc((size_t)v->count + 1, sizeof *k->names);
        for (i = 0; i < v->count; i++)
            k->names[i] = strdup(v->data[i]);
    }
    k->done = 1;
}

static void zc_tree(zhandle_t *zh, const char *path, char **paths, int *n,
                    int cap)
{
    zkids k = {0};
    int i;

    ck_assert_int_eq(zoo_aget_children(zh, path, 0, zs_kids, &k), ZOK);
    ck_assert_int_eq(drive(zh, &k.done), 0);
    ck_assert_int_eq(k.rc, ZOK);
    for (i = 0; i < k.count; i++) {
        char child[512];
        snprintf(child, sizeof child, "%s/%s", path, k.names[i]);
        zc_tree(zh, child, paths, n, cap);
        free(k.names[i]);
    }
    free(k.names);
    ck_assert_int_lt(*n, cap);
    paths[(*n)++] = strdup(path);
}

/* The ACL of path is exactly [digest:<own_id> all, world:anyone
 * `world_perms`]. The server shows a digest's hash only to sessions with
 * the ADMIN permission on the znode: others see "alice:x". */
static void check_acl(zhandle_t *zh, const char *path, const char *own_id,
                      int world_perms)
{
    struct ACL_vector v = {0, NULL};
    int rc = zc_get_acl(zh, path, &v, NULL), i, own = 0, world = 0;

    ck_assert_msg(rc == ZOK, "getAcl %s: %s", path, zerror(rc));
    TU_CLUSTER_CHECK(&fx, v.count == 2, "%s has %d ACL entries, not 2", path,
                     v.count);
    for (i = 0; i < v.count; i++) {
        const struct ACL *a = &v.data[i];
        if (strcmp(a->id.scheme, "digest") == 0 &&
            strcmp(a->id.id, own_id) == 0 && a->perms == ZOO_PERM_ALL)
            own++;
        else if (strcmp(a->id.scheme, "world") == 0 &&
                 strcmp(a->id.id, "anyone") == 0 && a->perms == world_perms)
            world++;
        else
            ck_abort_msg("%s: unexpected ACL entry %s:%s perms %d", path,
                         a->id.scheme, a->id.id, a->perms);
    }
    ck_assert_msg(own == 1 && world == 1, "%s: ACL is not [own, world]",
                  path);
    acl_free(&v);
}

/* ------------------------------------------------------------ helpers */

/* A credentials file in the test's directory, with `mode`. */
static char *cred_file(const char *name, const char *text, mode_t mode)
{
    char *path;
    FILE *f;

    if (asprintf(&path, "%s/%s", fx.dir, name) < 0)
        abort();
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    ck_assert_int_eq(chmod(path, mode), 0);
    return path;
}

static void start_node(int i, const char *auth_file)
{
    int rc = auth_file != NULL
                 ? tu_cluster_start_node(&fx, i, 0, "--zk-auth", auth_file,
                                         NULL)
                 : tu_cluster_start_node(&fx, i, 0, NULL);
    ck_assert_int_eq(rc, 0);
}

/* Counter `name` answers `incr` through node i within 30 s; returns the
 * value. */
static long incr_until(int i, const char *name)
{
    long v = -1;
    int tries;

    fx.quiet = 1;
    for (tries = 0; tries < 300 && v < 0; tries++)
        if ((v = tu_cluster_counter(&fx, i, name, "incr")) < 0)
            tu_sleep_ms(100);
    fx.quiet = 0;
    TU_CLUSTER_CHECK(&fx, v > 0, "incr %s through n%d never succeeded",
                     name, i);
    return v;
}

/* Runs keeld (cluster mode, node `node`) to its exit, at most 40 s;
 * returns the exit code (128+signal) and its output in *log. */
static int run_keeld(const char *node, char **log, ...)
{
    char data[512], logpath[512], *bin = tu_bin("keeld");
    const char *argv[32];
    int argc = 0, status = 0;
    double deadline;
    const char *a;
    va_list ap;
    pid_t pid;

    snprintf(data, sizeof data, "%s/%s", fx.dir, node);
    snprintf(logpath, sizeof logpath, "%s/%s.out", fx.dir, node);
    argv[argc++] = bin;
    argv[argc++] = "--data";
    argv[argc++] = data;
    argv[argc++] = "--listen";
    argv[argc++] = "127.0.0.1:0";
    argv[argc++] = "--shards";
    argv[argc++] = "64";
    argv[argc++] = "--zk";
    argv[argc++] = fx.zk.hosts;
    argv[argc++] = "--cluster";
    argv[argc++] = fx.name;
    argv[argc++] = "--node-id";
    argv[argc++] = node;
    argv[argc++] = "--zk-session-timeout";
    argv[argc++] = "2000";
    /* A cluster node needs client credentials or this (docs/security.md,
     * "Secure by default"); what is tested here is ZooKeeper's side. */
    argv[argc++] = "--insecure";
    va_start(ap, log);
    while ((a = va_arg(ap, const char *)) != NULL && argc < 31)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    free(bin);
    deadline = now_s() + 40;
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (now_s() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        tu_sleep_ms(50);
    }
    *log = tu_read_file(logpath);
    if (*log == NULL)
        *log = strdup("");
    return WIFEXITED(status) ? WEXITSTATUS(status)
                             : 128 + WTERMSIG(status);
}

/* -------------------------------------------------------------- tests */

/* Runs first in the suite, so that /keel is made here, with credentials. */
START_TEST(acl_cluster_works_and_outsiders_only_read)
{
    char *auth = cred_file("alice.auth", ALICE "\n", 0600);
    char root[128], path[256];
    const char *guarded[] = {"members/n0", "map", "controller_epoch",
                             "config", "nodes/n1/state"};
    zhandle_t *anon, *su, *own;
    size_t i;
    int rc;

    start_node(0, auth);
    start_node(1, auth);
    start_node(2, auth);
    for (i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "k%zu", i);
        incr_until((int)i, name);
    }
    ck_assert_int_eq(tu_cluster_counter(&fx, 1, "k0", "get"), 1);

    snprintf(root, sizeof root, "/keel/%s", fx.name);
    anon = zc_open(NULL);
    for (i = 0; i < sizeof guarded / sizeof guarded[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", root, guarded[i]);
        rc = zc_get(anon, path);
        ck_assert_msg(rc == ZOK, "anonymous get %s: %s", path, zerror(rc));
        rc = zc_set(anon, path);
        ck_assert_msg(rc == ZNOAUTH, "anonymous set %s: %s", path,
                      zerror(rc));
        rc = zc_delete(anon, path);
        ck_assert_msg(rc == ZNOAUTH, "anonymous delete %s: %s", path,
                      zerror(rc));
    }
    snprintf(path, sizeof path, "%s/intruder", root);
    rc = zc_create(anon, path);
    ck_assert_msg(rc == ZNOAUTH, "anonymous create %s: %s", path,
                  zerror(rc));
    snprintf(path, sizeof path, "%s/members/intruder", root);
    rc = zc_create(anon, path);
    ck_assert_msg(rc == ZNOAUTH, "anonymous create %s: %s", path,
                  zerror(rc));
    /* A cluster root of its own under /keel is allowed to anyone. */
    snprintf(path, sizeof path, "/keel/other%d", (int)getpid());
    rc = zc_create(anon, path);
    ck_assert_msg(rc == ZOK, "anonymous create %s: %s", path, zerror(rc));
    rc = zc_delete(anon, root); /* not empty, but refused before that */
    ck_assert_msg(rc == ZNOAUTH, "anonymous delete %s: %s", root,
                  zerror(rc));

    own = zc_open(ALICE);
    check_acl(anon, root, "alice:x", ZOO_PERM_READ);
    check_acl(own, root, ALICE_ID, ZOO_PERM_READ);
    for (i = 0; i < sizeof guarded / sizeof guarded[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", root, guarded[i]);
        check_acl(anon, path, "alice:x", ZOO_PERM_READ);
        check_acl(own, path, ALICE_ID, ZOO_PERM_READ);
    }
    check_acl(own, "/keel", ALICE_ID, ZOO_PERM_READ | ZOO_PERM_CREATE);
    zookeeper_close(own);

    /* The operator's own identity (superDigest) passes every ACL. */
    su = zc_open(SUPER);
    {
        struct ACL_vector v = {0, NULL};
        int32_t aversion = -1;
        snprintf(path, sizeof path, "%s/config", root);
        ck_assert_int_eq(zc_get_acl(su, path, &v, &aversion), ZOK);
        ck_assert_int_eq(zc_set_acl(anon, path, aversion, &v), ZNOAUTH);
        ck_assert_int_eq(zc_set_acl(su, path, aversion, &v), ZOK);
        acl_free(&v);
    }
    snprintf(path, sizeof path, "/keel/other%d", (int)getpid());
    ck_assert_int_eq(zc_delete(su, path), ZOK);
    zookeeper_close(su);
    zookeeper_close(anon);

    /* Still serving after all that. */
    ck_assert_int_eq(tu_cluster_counter(&fx, 2, "k0", "incr"), 2);
    free(auth);
}
END_TEST

START_TEST(other_credentials_refuse_to_start)
{
    char *auth = cred_file("alice.auth", ALICE "\n", 0600);
    char *other = cred_file("bob.auth", BOB "\n", 0600);
    char root[128], *log = NULL, *out = NULL;
    int code;

    start_node(0, auth);
    start_node(1, auth);
    ck_assert_int_eq(incr_until(0, "c"), 1);
    snprintf(root, sizeof root, "/keel/%s", fx.name);

    code = run_keeld("n2", &log, "--zk-auth", other, NULL);
    TU_CLUSTER_CHECK(&fx, code != 0 && code < 128,
                     "n2 with other credentials exited %d:\n%s", code, log);
    ck_assert_msg(strstr(log, root) != NULL && strstr(log, "--zk-auth") &&
                      strstr(log, "ZooKeeper refused this node's "
                                  "credentials"),
                  "n2's message does not name %s and --zk-auth:\n%s", root,
                  log);
    free(log);
    /* No credentials at all: refused alike. */
    code = run_keeld("n3", &log, NULL);
    TU_CLUSTER_CHECK(&fx, code != 0 && code < 128,
                     "n3 without credentials exited %d:\n%s", code, log);
    ck_assert_msg(strstr(log, root) != NULL && strstr(log, "--zk-auth"),
                  "n3's message does not name %s and --zk-auth:\n%s", root,
                  log);
    free(log);

    /* The cluster is unaffected: the same two members, calls answered. */
    ck_assert_int_eq(tu_cluster_counter(&fx, 1, "c", "incr"), 2);
    ck_assert_int_eq(tu_cluster_counter(&fx, 0, "c", "incr"), 3);
    ck_assert_int_eq(tu_keel(fx.nodes[0].addr, &out, NULL, "nodes", NULL), 0);
    ck_assert_msg(out != NULL && strstr(out, "n0") && strstr(out, "n1") &&
                      strstr(out, "n2") == NULL && strstr(out, "n3") == NULL,
                  "keel nodes:\n%s", out ? out : "");
    free(out);
    free(auth);
    free(other);
}
END_TEST

/* A session that expired is replaced by a new one, which must
 * authenticate again: n1 paused past its session timeout comes back as a
 * new incarnation, whose member znode has the cluster's ACL, and serves
 * (its writes under the root would be refused otherwise). */
START_TEST(expired_session_authenticates_again)
{
    char *auth = cred_file("alice.auth", ALICE "\n", 0600);
    char root[128], path[256];
    zhandle_t *anon;
    zsync z = {0};
    int64_t owner;
    long v = -1;
    int tries;

    start_node(0, auth);
    start_node(1, auth);
    ck_assert_int_eq(incr_until(1, "e"), 1);
    snprintf(root, sizeof root, "/keel/%s", fx.name);
    snprintf(path, sizeof path, "%s/members/n1", root);
    anon = zc_open(NULL);
    ck_assert_int_eq(zoo_aget(anon, path, 0, zs_data, &z), ZOK);
    ck_assert_int_eq(drive(anon, &z.done), 0);
    ck_assert_int_eq(z.rc, ZOK);
    owner = z.st.ephemeralOwner;
    /* The test's own session would expire too while nobody drives it. */
    zookeeper_close(anon);

    /* Paused for twice its 2 s session timeout: the servers expire it. */
    ck_assert_int_eq(kill(fx.nodes[1].pid, SIGSTOP), 0);
    tu_sleep_ms(4500);
    ck_assert_int_eq(kill(fx.nodes[1].pid, SIGCONT), 0);
    anon = zc_open(NULL);
    for (tries = 0; tries < 300; tries++) {
        memset(&z, 0, sizeof z);
        ck_assert_int_eq(zoo_aget(anon, path, 0, zs_data, &z), ZOK);
        ck_assert_int_eq(drive(anon, &z.done), 0);
        if (z.rc == ZOK && z.st.ephemeralOwner != owner &&
            tu_keel_stat(fx.nodes[1].addr, "session_expirations") >= 1)
            break;
        tu_sleep_ms(100);
    }
    TU_CLUSTER_CHECK(&fx, tries < 300,
                     "n1 did not rejoin with a new session after expiry");
    check_acl(anon, path, "alice:x", ZOO_PERM_READ);
    zookeeper_close(anon);
    fx.quiet = 1;
    for (tries = 0; tries < 300 && v < 0; tries++)
        if ((v = tu_cluster_counter(&fx, 1, "e", "incr")) < 0)
            tu_sleep_ms(100);
    fx.quiet = 0;
    TU_CLUSTER_CHECK(&fx, v == 2, "incr through n1 after its expiry: %ld",
                     v);
    free(auth);
}
END_TEST

/* The same mechanism for any reason a node cannot take part: another
 * shard count (KEEL_ECONFIG) stops keeld with a non-zero exit too. */
START_TEST(other_shard_count_stops_the_node)
{
    char *auth = cred_file("alice.auth", ALICE "\n", 0600);
    char *log = NULL;
    int code;

    start_node(0, auth);
    ck_assert_int_eq(incr_until(0, "s"), 1);
    /* The last --shards wins over run_keeld's 64. */
    code = run_keeld("n1", &log, "--zk-auth", auth, "--shards", "32", NULL);
    TU_CLUSTER_CHECK(&fx, code != 0 && code < 128,
                     "n1 with 32 shards exited %d:\n%s", code, log);
    ck_assert_msg(strstr(log, "refusing to join") != NULL &&
                      strstr(log, "ECONFIG") != NULL,
                  "n1's log does not say why:\n%s", log);
    free(log);
    ck_assert_int_eq(tu_cluster_counter(&fx, 0, "s", "incr"), 2);
    free(auth);
}
END_TEST

START_TEST(bad_credentials_file_is_refused)
{
    static const struct {
        const char *name, *text;
        mode_t mode;
        const char *why;
    } bad[] = {
        {"world.auth", ALICE "\n", 0644, "readable by every user"},
        {"worldw.auth", ALICE "\n", 0602, "by every user"},
        {"nocolon.auth", "alice\n", 0600, "malformed"},
        {"nouser.auth", ":s3cret\n", 0600, "malformed"},
        {"nopass.auth", "alice:\n", 0600, "malformed"},
        {"empty.auth", "", 0600, "malformed"},
        {"twolines.auth", ALICE "\n" BOB "\n", 0600, "malformed"},
    };
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *path = cred_file(bad[i].name, bad[i].text, bad[i].mode);
        char *log = NULL;
        int code = run_keeld("n0", &log, "--zk-auth", path, NULL);
        ck_assert_msg(code != 0 && code < 128, "%s: keeld exited %d:\n%s",
                      bad[i].name, code, log);
        ck_assert_msg(strstr(log, path) != NULL &&
                          strstr(log, bad[i].why) != NULL &&
                          strstr(log, "ready on port") == NULL,
                      "%s: keeld's message does not name the file or "
                      "say '%s':\n%s",
                      bad[i].name, bad[i].why, log);
        ck_assert_msg(strstr(log, "s3cret") == NULL,
                      "%s: the password is in the log:\n%s", bad[i].name,
                      log);
        free(log);
        free(path);
    }
    {
        char *log = NULL;
        int code = run_keeld("n0", &log, "--zk-auth", "/nonexistent/zk.auth",
                             NULL);
        ck_assert_msg(code != 0 && strstr(log, "/nonexistent/zk.auth"),
                      "missing file: exit %d:\n%s", code, log);
        free(log);
    }
}
END_TEST

/* docs/security.md, "Moving a cluster to ACLs": a cluster made without
 * credentials gets the ACL on every znode by setAcl (open znodes let
 * anyone do that), then its nodes restart with --zk-auth. */
START_TEST(open_cluster_moves_to_acls)
{
    char *auth = cred_file("alice.auth", ALICE "\n", 0600);
    char root[128], path[256], *paths[256];
    struct ACL entries[2];
    struct ACL_vector acl = {2, entries};
    zhandle_t *zh;
    int n = 0, i, rc;

    start_node(0, NULL);
    ck_assert_int_eq(incr_until(0, "m"), 1);
    ck_assert_int_eq(tu_keeld_stop(&fx.nodes[0], SIGTERM), 0);

    snprintf(root, sizeof root, "/keel/%s", fx.name);
    entries[0].perms = ZOO_PERM_ALL;
    entries[0].id.scheme = "digest";
    entries[0].id.id = ALICE_ID;
    entries[1].perms = ZOO_PERM_READ;
    entries[1].id.scheme = "world";
    entries[1].id.id = "anyone";
    zh = zc_open(NULL);
    zc_tree(zh, root, paths, &n, 256);
    for (i = 0; i < n; i++) {
        rc = zc_set_acl(zh, paths[i], -1, &acl);
        ck_assert_msg(rc == ZOK, "setAcl %s: %s", paths[i], zerror(rc));
        free(paths[i]);
    }

    start_node(0, auth);
    start_node(1, auth);
    ck_assert_int_eq(incr_until(1, "m"), 2);
    snprintf(path, sizeof path, "%s/map", root);
    ck_assert_int_eq(zc_set(zh, path), ZNOAUTH);
    snprintf(path, sizeof path, "%s/members/n1", root);
    check_acl(zh, path, "alice:x", ZOO_PERM_READ);
    snprintf(path, sizeof path, "%s/nodes/n0/state", root);
    check_acl(zh, path, "alice:x", ZOO_PERM_READ);
    zookeeper_close(zh);
    free(auth);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster_zkacl");
    TCase *tc = tcase_create("cluster_zkacl");

    /* The suite's ZooKeeper gets a superDigest: the operator's identity
     * of docs/security.md. */
    setenv("ZK_SUPER_DIGEST", SUPER_DIGEST, 1);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, acl_cluster_works_and_outsiders_only_read);
    tcase_add_test(tc, other_credentials_refuse_to_start);
    tcase_add_test(tc, expired_session_authenticates_again);
    tcase_add_test(tc, other_shard_count_stops_the_node);
    tcase_add_test(tc, bad_credentials_file_is_refused);
    tcase_add_test(tc, open_cluster_moves_to_acls);
    suite_add_tcase(s, tc);
    return tu_cluster_run_suite(&fx, s);
}
